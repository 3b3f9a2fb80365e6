//! The durable results queue: every run's report waits on disk until the server
//! acknowledges it.
//!
//! One file per report under `<state>/queue/`, named by its zero-padded sequence
//! number and written with [`write_atomic`] (temp file, fsync, rename, fsync the
//! directory), so a file is either absent or whole whatever moment the process dies.
//! A file that does not parse anyway (a disk that lied about fsync) is discarded with
//! a warning, never fatal.
//!
//! Sequence numbers never repeat, even across crashes: a number is taken when its
//! file appears, and `floor` records the highest number ever removed (acknowledged,
//! dropped or discarded) before the removal happens. The next number is one above both
//! the floor and the newest file. A number whose file never appeared was never sent,
//! so it may be taken again.
//!
//! The queue is bounded: the newest [`MAX_DETAILED`] entries keep their full report,
//! and the whole queue stays under [`MAX_BYTES`]; past either limit the oldest entries
//! are cut down to their summary counts. Past [`MAX_ENTRIES`] the oldest summaries are
//! dropped. At a one-minute interval that is about a week offline before anything is
//! lost entirely.
//!
//! The queue holds an exclusive lock on `<state>/queue/.lock` while open, so a daemon
//! and a `vigo run --once` never take the same number; the kernel drops the lock when
//! the process dies.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::paths::AgentPaths;

/// Entries that keep their full report (resources, changes, diffs).
pub const MAX_DETAILED: usize = 1000;
/// Total size the queue aims to stay under, by cutting old entries to their summary.
pub const MAX_BYTES: u64 = 50 * 1024 * 1024;
/// Entries kept at all; beyond this the oldest are dropped.
pub const MAX_ENTRIES: usize = 10_000;
/// Reports sent in one check-in (the server refuses more).
pub const BATCH: usize = 50;

/// An entry no bigger than this is not worth cutting down.
const SMALL_ENTRY: u64 = 2048;
const ENTRY_SUFFIX: &str = ".json";
const FLOOR: &str = "floor";

/// One queued report, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub report: serde_json::Value,
}

/// The queue directory, locked for this process.
pub struct Queue {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Queue {
    /// Opens (creating) the queue, waiting for any other agent process to close it, and
    /// removes temp files a killed writer left behind.
    pub fn open(paths: &AgentPaths) -> anyhow::Result<Self> {
        let dir = paths.state.join("queue");
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        let lock_path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", lock_path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("{}: cannot lock: {e}", lock_path.display()))?;
        let queue = Self { dir, _lock: lock };
        for name in queue.names()? {
            if name.starts_with('.') && name.contains(".tmp") {
                let _ = std::fs::remove_file(queue.dir.join(&name));
            }
        }
        Ok(queue)
    }

    /// The highest number ever removed from the queue.
    fn floor(&self) -> u64 {
        std::fs::read_to_string(self.dir.join(FLOOR)).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
    }

    /// Raises the floor to `seq` (never lowers it); durable before it returns.
    fn raise_floor(&self, seq: u64) -> anyhow::Result<()> {
        if seq <= self.floor() {
            return Ok(());
        }
        write_atomic(&self.dir.join(FLOOR), format!("{seq}\n").as_bytes(), 0o600)
    }

    fn names(&self) -> anyhow::Result<Vec<String>> {
        let read = std::fs::read_dir(&self.dir).map_err(|e| anyhow::anyhow!("{}: {e}", self.dir.display()))?;
        Ok(read.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
    }

    /// Sequence numbers of the entry files, oldest first.
    fn seqs(&self) -> anyhow::Result<Vec<u64>> {
        let mut seqs: Vec<u64> = self
            .names()?
            .iter()
            .filter_map(|n| n.strip_suffix(ENTRY_SUFFIX))
            .filter(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|stem| stem.parse().ok())
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{ENTRY_SUFFIX}"))
    }

    /// How many reports wait.
    pub fn len(&self) -> anyhow::Result<usize> {
        Ok(self.seqs()?.len())
    }

    pub fn is_empty(&self) -> anyhow::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The number the next report gets.
    fn next_seq(&self) -> anyhow::Result<u64> {
        let newest = self.seqs()?.last().copied().unwrap_or(0);
        Ok(self.floor().max(newest) + 1)
    }

    /// Appends a report; returns its sequence number once it is durably on disk.
    pub fn push(&self, report: serde_json::Value) -> anyhow::Result<u64> {
        let seq = self.next_seq()?;
        self.write(&Entry { seq, report })?;
        if let Err(e) = self.enforce_limits() {
            tracing::warn!(error = %format!("{e:#}"), "could not shrink the results queue");
        }
        Ok(seq)
    }

    fn write(&self, entry: &Entry) -> anyhow::Result<()> {
        write_atomic(&self.path(entry.seq), &serde_json::to_vec(entry)?, 0o600)
    }

    /// Takes over the single pending report older agents kept in their run state, so
    /// an upgrade neither loses it nor reuses its number.
    pub fn adopt_legacy(&self, last_seq: u64, pending: Option<(u64, String)>) -> anyhow::Result<()> {
        match pending {
            Some((seq, json)) if seq > self.floor() && !self.path(seq).exists() => {
                match serde_json::from_str(&json) {
                    Ok(report) => self.write(&Entry { seq, report })?,
                    Err(e) => tracing::warn!(seq, error = %e, "legacy pending report is not JSON; dropped"),
                }
                self.raise_floor(seq.saturating_sub(1))
            }
            Some(_) | None => self.raise_floor(last_seq),
        }
    }

    /// Up to `max` of the oldest entries, in order. Unreadable ones are discarded.
    pub fn oldest(&self, max: usize) -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for seq in self.seqs()? {
            if out.len() == max {
                break;
            }
            if let Some(entry) = self.read(seq)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Reads one entry; a torn or foreign file is removed (after raising the floor past
    /// it, so its number is not taken again) and yields `None`.
    fn read(&self, seq: u64) -> anyhow::Result<Option<Entry>> {
        let path = self.path(seq);
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(entry) if entry.seq == seq => Ok(Some(entry)),
            Ok(entry) => {
                self.discard(seq, &path, &format!("it claims sequence number {}", entry.seq))?;
                Ok(None)
            }
            Err(e) => {
                self.discard(seq, &path, &e)?;
                Ok(None)
            }
        }
    }

    fn discard(&self, seq: u64, path: &Path, why: &str) -> anyhow::Result<()> {
        tracing::warn!(path = %path.display(), reason = why, "discarding an unreadable queued report");
        self.raise_floor(seq)?;
        remove(path)
    }

    /// Forgets every entry up to `seq`: the server has stored them.
    pub fn ack(&self, seq: u64) -> anyhow::Result<()> {
        if seq == 0 {
            return Ok(());
        }
        self.raise_floor(seq)?;
        for s in self.seqs()?.into_iter().take_while(|s| *s <= seq) {
            remove(&self.path(s))?;
        }
        Ok(())
    }

    /// Applies the documented bounds, oldest entries first.
    fn enforce_limits(&self) -> anyhow::Result<()> {
        let mut seqs = self.seqs()?;
        if seqs.len() > MAX_ENTRIES {
            let drop: Vec<u64> = seqs.drain(..seqs.len() - MAX_ENTRIES).collect();
            if let Some(last) = drop.last() {
                tracing::warn!(dropped = drop.len(), up_to = last, "results queue full; oldest reports dropped");
                self.raise_floor(*last)?;
            }
            for s in drop {
                remove(&self.path(s))?;
            }
        }
        let sizes: Vec<(u64, u64)> =
            seqs.iter().map(|s| (*s, std::fs::metadata(self.path(*s)).map(|m| m.len()).unwrap_or(0))).collect();
        let mut total: u64 = sizes.iter().map(|(_, n)| n).sum();
        let detailed_from = sizes.len().saturating_sub(MAX_DETAILED);
        for (i, (seq, size)) in sizes.iter().enumerate() {
            if i >= detailed_from && total <= MAX_BYTES {
                break;
            }
            if *size <= SMALL_ENTRY {
                continue;
            }
            let Some(entry) = self.read(*seq)? else { continue };
            let report = summary_only(entry.report);
            self.write(&Entry { seq: *seq, report })?;
            let new_size = std::fs::metadata(self.path(*seq)).map(|m| m.len()).unwrap_or(0);
            total = total.saturating_sub(size.saturating_sub(new_size));
        }
        Ok(())
    }
}

/// A report cut down to its counts: resources (with their diffs and output) go.
/// How many reports wait in the queue, counted without taking the cycle lock
/// (for `vigo status` while the daemon runs).
pub fn pending(paths: &AgentPaths) -> usize {
    let Ok(dir) = std::fs::read_dir(paths.state.join("queue")) else { return 0 };
    dir.filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_suffix(ENTRY_SUFFIX).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count()
}

pub fn summary_only(report: serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let serde_json::Value::Object(mut m) = report {
        for key in ["mode", "summary"] {
            if let Some(v) = m.remove(key) {
                out.insert(key.to_string(), v);
            }
        }
    }
    out.insert("resources".to_string(), serde_json::Value::Array(Vec::new()));
    out.insert("trimmed".to_string(), serde_json::Value::Bool(true));
    serde_json::Value::Object(out)
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(dir: &tempfile::TempDir) -> AgentPaths {
        AgentPaths { etc: dir.path().join("etc"), state: dir.path().join("state") }
    }

    fn report(n: u64, diff_len: usize) -> serde_json::Value {
        json!({
            "mode": "enforce",
            "resources": [{"name": format!("r{n}"), "status": "changed", "diff": "x".repeat(diff_len)}],
            "summary": {"total": 1, "changed": 1, "failed": 0},
        })
    }

    fn seqs(q: &Queue) -> Vec<u64> {
        q.oldest(usize::MAX).expect("read").iter().map(|e| e.seq).collect()
    }

    #[test]
    fn reports_come_back_in_order_and_go_only_when_acknowledged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&paths(&dir)).expect("open");
        for n in 1..=5 {
            assert_eq!(q.push(report(n, 10)).expect("push"), n);
        }
        let batch = q.oldest(3).expect("oldest");
        assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(batch[1].report, report(2, 10));
        q.ack(3).expect("ack");
        assert_eq!(seqs(&q), [4, 5]);
        q.ack(5).expect("ack");
        assert!(q.is_empty().expect("len"));
        // Acknowledged numbers are never handed out again, even with the queue empty.
        assert_eq!(q.push(report(6, 10)).expect("push"), 6);
    }

    #[test]
    fn numbers_survive_reopening_and_a_write_that_never_landed_is_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = paths(&dir);
        {
            let q = Queue::open(&p).expect("open");
            q.push(report(1, 1)).expect("push");
            q.push(report(2, 1)).expect("push");
            q.ack(2).expect("ack");
        }
        // A writer killed before its rename leaves only a temp file behind.
        std::fs::write(p.state.join("queue/.00000000000000000003.json.tmp99"), b"{\"seq\":3,").expect("tmp");
        let q = Queue::open(&p).expect("reopen");
        assert!(!p.state.join("queue/.00000000000000000003.json.tmp99").exists(), "temp file cleaned up");
        assert_eq!(q.push(report(3, 1)).expect("push"), 3);
    }

    #[test]
    fn torn_and_foreign_entries_are_discarded_and_their_numbers_retired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = paths(&dir);
        let q = Queue::open(&p).expect("open");
        for n in 1..=3 {
            q.push(report(n, 1)).expect("push");
        }
        let entry = |n: u64| p.state.join(format!("queue/{n:020}.json"));
        let whole = std::fs::read(entry(3)).expect("read");
        std::fs::write(entry(3), &whole[..whole.len() / 2]).expect("tear");
        std::fs::write(entry(2), serde_json::to_vec(&Entry { seq: 7, report: json!({}) }).expect("json"))
            .expect("forge");
        assert_eq!(seqs(&q), [1], "only the whole entry is read");
        assert!(!entry(3).exists() && !entry(2).exists());
        assert_eq!(q.push(report(4, 1)).expect("push"), 4, "a discarded number is not taken again");
    }

    #[test]
    fn old_entries_lose_their_details_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&paths(&dir)).expect("open");
        for n in 1..=(MAX_DETAILED as u64 + 2) {
            q.push(report(n, 3000)).expect("push");
        }
        let all = q.oldest(usize::MAX).expect("read");
        assert_eq!(all.len(), MAX_DETAILED + 2, "nothing dropped");
        for e in &all[..2] {
            assert_eq!(e.report["trimmed"], json!(true), "seq {}", e.seq);
            assert_eq!(e.report["summary"], report(e.seq, 0)["summary"], "counts kept");
            assert_eq!(e.report["resources"], json!([]));
        }
        assert_eq!(all[2].report, report(3, 3000), "newer entries keep their details");
    }

    #[test]
    fn size_limit_trims_even_recent_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&paths(&dir)).expect("open");
        let big = usize::try_from(MAX_BYTES / 4).expect("fits");
        for n in 1..=5 {
            q.push(report(n, big)).expect("push");
        }
        let all = q.oldest(usize::MAX).expect("read");
        let trimmed: Vec<u64> = all.iter().filter(|e| e.report["trimmed"] == json!(true)).map(|e| e.seq).collect();
        assert_eq!(trimmed, [1, 2], "the oldest go first, just enough to fit");
        assert_eq!(all.len(), 5);
    }

    #[test]
    fn legacy_pending_report_is_adopted_with_its_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&paths(&dir)).expect("open");
        q.adopt_legacy(7, Some((7, report(7, 1).to_string()))).expect("adopt");
        assert_eq!(seqs(&q), [7]);
        assert_eq!(q.push(report(8, 1)).expect("push"), 8);
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&paths(&dir)).expect("open");
        q.adopt_legacy(12, None).expect("adopt");
        assert_eq!(q.push(report(13, 1)).expect("push"), 13, "delivered numbers are not reused");
    }
}
