//! The filesystem watch on users' `~/vigosync/` directories.
//!
//! A file that appears, changes, is renamed into place or removed there wakes the
//! daemon for an early check-in, so the server learns of it (and tells the other
//! envoys) within moments instead of at the next interval. The periodic scan stays
//! the safety net: inotify watches can run out and events can be lost.
//!
//! Only directories the scanner accepted (real directories owned by their user) are
//! watched, and the set is re-armed after every scan. Events only wake the daemon;
//! what to send is always decided by a fresh scan, so a spurious event costs one
//! check-in and nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;

/// The watch over every opted-in user's directory.
pub struct SyncWatch {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl SyncWatch {
    /// A watch that calls `wake.notify_one()` on every relevant event.
    pub fn new(wake: Arc<Notify>) -> notify::Result<Self> {
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) if relevant(&event) => wake.notify_one(),
            Ok(_) => {}
            // A queue overflow loses events: wake anyway, the scan finds what changed.
            Err(e) => {
                tracing::warn!(error = %e, "vigosync watch error; checking in to rescan");
                wake.notify_one();
            }
        })?;
        Ok(Self { watcher, watched: BTreeSet::new() })
    }

    /// Watches exactly `dirs` from now on: new ones are added, gone ones dropped.
    pub fn rearm(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        let wanted: BTreeSet<PathBuf> = dirs.into_iter().collect();
        for gone in self.watched.difference(&wanted).cloned().collect::<Vec<_>>() {
            // The directory may already be gone, which drops its watch too.
            let _ = self.watcher.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for dir in wanted {
            if self.watched.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; relying on the periodic scan")
                }
            }
        }
    }

    /// The directories watched now.
    pub fn watched(&self) -> impl Iterator<Item = &Path> {
        self.watched.iter().map(PathBuf::as_path)
    }
}

/// Events that can change what a scan reports: a file written and closed, created
/// (a link, a FIFO), renamed, or removed. Plain data writes wait for the close, so
/// a large copy wakes the daemon once, not once per write. Hidden names (the
/// receiver's own `.part` files, editors' swap files) never count by themselves; a
/// rename from one into a visible name does.
fn relevant(event: &notify::Event) -> bool {
    let kind = matches!(
        event.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(notify::event::ModifyKind::Name(_))
    );
    kind && event.paths.iter().any(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn woken(wake: &Notify) -> bool {
        tokio::time::timeout(Duration::from_secs(5), wake.notified()).await.is_ok()
    }

    async fn quiet(wake: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(300), wake.notified()).await.is_err()
    }

    #[tokio::test]
    async fn visible_changes_wake_and_hidden_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wake = Arc::new(Notify::new());
        let mut watch = SyncWatch::new(wake.clone()).expect("watch");
        watch.rearm([dir.path().to_path_buf()]);
        assert_eq!(watch.watched().count(), 1);

        std::fs::write(dir.path().join(".part"), b"partial").expect("write hidden");
        assert!(quiet(&wake).await, "a hidden file alone wakes nothing");
        std::fs::rename(dir.path().join(".part"), dir.path().join("notes.txt")).expect("rename");
        assert!(woken(&wake).await, "a rename into a visible name wakes");
        std::fs::write(dir.path().join("b.txt"), b"b").expect("write");
        assert!(woken(&wake).await, "a new file wakes");
        std::fs::remove_file(dir.path().join("b.txt")).expect("remove");
        assert!(woken(&wake).await, "a removal wakes");

        watch.rearm(Vec::<PathBuf>::new());
        assert_eq!(watch.watched().count(), 0);
        // Let any event still in flight from the removal arrive before asserting quiet.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
        std::fs::write(dir.path().join("c.txt"), b"c").expect("write");
        assert!(quiet(&wake).await, "an unwatched directory wakes nothing");
    }
}
