//! Test-only host trees: a temporary root with the files a collector reads.

use tempfile::TempDir;

use crate::Host;

/// A temporary host root, removed when dropped.
pub(crate) struct Fixture {
    dir: TempDir,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("create fixture root") }
    }

    /// Writes `rel` (relative or absolute, always under the root), creating its parents.
    pub(crate) fn file(self, rel: &str, text: &str) -> Self {
        self.bytes(rel, text.as_bytes())
    }

    pub(crate) fn bytes(self, rel: &str, content: &[u8]) -> Self {
        let path = self.host().path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create fixture parent");
        }
        std::fs::write(&path, content).expect("write fixture file");
        self
    }

    pub(crate) fn dir(self, rel: &str) -> Self {
        std::fs::create_dir_all(self.host().path(rel)).expect("create fixture dir");
        self
    }

    pub(crate) fn host(&self) -> Host {
        Host::new(self.dir.path())
    }
}
