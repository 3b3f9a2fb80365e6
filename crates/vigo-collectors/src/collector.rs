//! The collector contract: a name, a summary, and `collect(host) -> JSON`.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// A trait collector: one read-only probe that produces one subtree of the traits.
pub trait Collector: Send + Sync {
    /// The key the result is stored under (`os` → `traits.os`).
    fn name(&self) -> &'static str;
    /// One line for `vigo traits --list`.
    fn summary(&self) -> &'static str;
    /// Reads the host and returns this collector's subtree; never changes the host.
    fn collect(&self, host: &Host) -> Result<Value, CollectError>;
}

/// Where collectors read from: `/` in production, a fixture directory in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The machine the agent runs on.
    pub fn local() -> Self {
        Self::new("/")
    }

    /// `rel` under the root; a leading `/` is ignored so paths from host files
    /// (home directories, shells) resolve inside a fixture root too.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        self.root.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// The text of `rel`; invalid UTF-8 is replaced rather than rejected, because one
    /// Latin-1 GECOS field must not hide every account.
    pub fn read(&self, rel: &str) -> Result<String, CollectError> {
        let path = self.path(rel);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(source) => Err(CollectError::Read { path, source }),
        }
    }

    /// Like [`Host::read`], but a missing file is `None` instead of an error.
    pub fn read_optional(&self, rel: &str) -> Result<Option<String>, CollectError> {
        match self.read(rel) {
            Ok(text) => Ok(Some(text)),
            Err(CollectError::Read { source, .. }) if is_absent(&source) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The first of `candidates` that exists, with the candidate it came from.
    pub fn read_first(&self, candidates: &[&'static str]) -> Result<(&'static str, String), CollectError> {
        for rel in candidates {
            if let Some(text) = self.read_optional(rel)? {
                return Ok((rel, text));
            }
        }
        Err(CollectError::NotFound { paths: candidates.iter().map(|rel| self.path(rel)).collect() })
    }

    /// The first line of a one-value file (`/proc/sys/kernel/*`), trimmed; empty is an error.
    pub fn read_value(&self, rel: &str) -> Result<String, CollectError> {
        let text = self.read(rel)?;
        let value = text.lines().next().unwrap_or("").trim();
        if value.is_empty() {
            return Err(CollectError::Invalid { path: self.path(rel), reason: "file is empty".into() });
        }
        Ok(value.to_string())
    }
}

/// `ENOTDIR` counts as absent: a fixture or chroot may have a file where a directory
/// is expected, which means the same to a collector as no file at all.
fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// Why a collector produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("none of {} exists", display_paths(paths))]
    NotFound { paths: Vec<PathBuf> },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("unknown trait collector `{name}` (known: {known})")]
    UnknownCollector { name: String, known: String },
}

fn display_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// Lines skipped because they could not be parsed, counted per file.
///
/// Collectors skip a bad line rather than fail, and report the count under
/// `malformed_lines` (`{"etc/passwd": 2}`) so the problem stays visible on the server.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MalformedLines {
    counts: Vec<(String, u64)>,
}

impl MalformedLines {
    pub fn add(&mut self, file: &str, count: u64) {
        if count == 0 {
            return;
        }
        match self.counts.iter_mut().find(|(f, _)| f == file) {
            Some((_, n)) => *n += count,
            None => self.counts.push((file.to_string(), count)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Adds `malformed_lines` to `traits` when any line was skipped; a clean host
    /// carries no such key.
    pub fn insert_into(&self, traits: &mut Value) {
        let Some(traits) = traits.as_object_mut() else {
            return;
        };
        if self.is_empty() {
            return;
        }
        let counts: Map<String, Value> = self.counts.iter().map(|(f, n)| (f.clone(), Value::from(*n))).collect();
        traits.insert("malformed_lines".into(), Value::Object(counts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    #[test]
    fn path_keeps_absolute_paths_inside_the_root() {
        let host = Host::new("/srv/fixture");
        assert_eq!(host.path("/home/alice"), PathBuf::from("/srv/fixture/home/alice"));
        assert_eq!(host.path("etc/passwd"), PathBuf::from("/srv/fixture/etc/passwd"));
        assert_eq!(Host::local().path("/etc/passwd"), PathBuf::from("/etc/passwd"));
    }

    #[test]
    fn read_optional_distinguishes_missing_from_present() {
        let fx = Fixture::new().file("etc/present", "x\n").file("etc/file", "not a dir");
        let host = fx.host();
        assert_eq!(host.read_optional("etc/present").expect("readable").as_deref(), Some("x\n"));
        assert!(host.read_optional("etc/absent").expect("missing is not an error").is_none());
        assert!(host.read_optional("etc/file/below").expect("ENOTDIR is absent").is_none());
    }

    #[test]
    fn read_first_names_every_candidate_when_none_exists() {
        let fx = Fixture::new();
        let err = fx.host().read_first(&["etc/a", "usr/lib/b"]).expect_err("nothing exists");
        let message = err.to_string();
        assert!(message.starts_with("none of "), "{message}");
        assert!(message.contains("etc/a") && message.contains("usr/lib/b"), "{message}");
    }

    #[test]
    fn read_value_rejects_an_empty_file_naming_it() {
        let fx = Fixture::new().file("proc/sys/kernel/ostype", "\n");
        let err = fx.host().read_value("proc/sys/kernel/ostype").expect_err("empty");
        assert!(err.to_string().ends_with("proc/sys/kernel/ostype: file is empty"), "{err}");
    }

    #[test]
    fn read_replaces_invalid_utf8() {
        let fx = Fixture::new().bytes("etc/latin1", b"caf\xe9\n");
        assert_eq!(fx.host().read("etc/latin1").expect("readable"), "caf\u{fffd}\n");
    }

    #[test]
    fn malformed_lines_appear_only_when_something_was_skipped() {
        let mut traits = serde_json::json!({});
        let mut skipped = MalformedLines::default();
        skipped.add("etc/passwd", 0);
        skipped.insert_into(&mut traits);
        assert_eq!(traits, serde_json::json!({}));

        skipped.add("etc/passwd", 2);
        skipped.add("etc/group", 1);
        skipped.add("etc/passwd", 1);
        skipped.insert_into(&mut traits);
        assert_eq!(traits, serde_json::json!({"malformed_lines": {"etc/passwd": 3, "etc/group": 1}}));
    }
}
