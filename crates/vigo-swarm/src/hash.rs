//! SHA-256 of files, computed once per file version.
//!
//! A file version is its identity on disk (device, inode) plus size, mtime and
//! ctime: writing through any name, truncating, or even resetting the mtime
//! changes the ctime, which no user can set. The cache is shared between the
//! scanner (every check-in) and the peer server (every fetch), so a file is
//! hashed once after it changes, not once per use, and it survives restarts as
//! a JSON file (`vigo run --once` processes benefit as well).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::stat::{FileStat, fstat};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigo_executors::safe_fs::{self, Attrs, SafeFsError};

/// Read size while hashing: large enough that the hash, not the system calls, dominates.
const READ_BUFFER: usize = 1024 * 1024;
/// The largest cache file [`HashCache::load`] reads.
const MAX_CACHE_FILE: u64 = 64 * 1024 * 1024;
/// Version of the cache file's layout; another version is ignored.
const CACHE_FORMAT: u32 = 1;
/// File timestamps come from a clock that ticks every few milliseconds, so a write
/// right after a hash can leave every field of the key unchanged. A version changed
/// this recently before its hash began is hashed again next time instead of cached.
const RACY_WINDOW_NS: i64 = 100_000_000;

/// Why hashing or the cache file failed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {errno}")]
    Sys { path: PathBuf, errno: nix::errno::Errno },
    #[error(transparent)]
    Fs(#[from] SafeFsError),
    #[error("{path}: not a hash cache: {detail}")]
    BadCache { path: PathBuf, detail: String },
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    vigo_pki::hex_lower(bytes)
}

/// Whether `text` is a SHA-256 as vigosync writes it: 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One version of one file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileKey {
    pub fn of(st: &FileStat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: nanos(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: nanos(st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// Seconds and nanoseconds as nanoseconds since the epoch (saturating far outside 1678..2262).
pub fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    entries: Vec<CacheEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    #[serde(flatten)]
    key: FileKey,
    sha256: String,
}

/// Inode (device, inode number) → the version last hashed and its SHA-256.
type Entries = HashMap<(u64, u64), (FileKey, String)>;

/// File versions → SHA-256, shared by clones (one cache per agent).
#[derive(Debug, Clone, Default)]
pub struct HashCache {
    entries: Arc<Mutex<Entries>>,
    hashed: Arc<AtomicU64>,
}

impl HashCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached hash of exactly this file version.
    pub fn get(&self, key: &FileKey) -> Option<String> {
        let entries = self.lock();
        entries.get(&(key.dev, key.ino)).filter(|(k, _)| k == key).map(|(_, sha)| sha.clone())
    }

    /// Records the hash of a file version (replacing older versions of the same inode).
    pub fn insert(&self, key: FileKey, sha256: String) {
        self.lock().insert((key.dev, key.ino), (key, sha256));
    }

    /// Forgets every inode not in `live` (files that are gone).
    pub fn retain(&self, live: &HashSet<(u64, u64)>) {
        self.lock().retain(|inode, _| live.contains(inode));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many files were actually read and hashed through this cache (cache misses).
    pub fn files_hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// The SHA-256 of the open regular file `file`, from the cache when its version is
    /// known, else by reading it. `Ok(None)` when the file changed while it was read
    /// (someone is writing it): there is no hash to trust yet.
    pub fn sha256_of(&self, file: &File, shown: &Path) -> Result<Option<(FileKey, String)>, HashError> {
        let before = FileKey::of(&fstat(file).map_err(|errno| HashError::Sys { path: shown.to_path_buf(), errno })?);
        if let Some(sha) = self.get(&before) {
            return Ok(Some((before, sha)));
        }
        let started = now_ns();
        let sha = hash_file(file, shown)?;
        self.hashed.fetch_add(1, Ordering::Relaxed);
        let after = FileKey::of(&fstat(file).map_err(|errno| HashError::Sys { path: shown.to_path_buf(), errno })?);
        if after != before {
            return Ok(None);
        }
        if before.ctime_ns < started.saturating_sub(RACY_WINDOW_NS) {
            self.insert(before, sha.clone());
        }
        Ok(Some((before, sha)))
    }

    /// Loads a cache saved by [`HashCache::save`]; an absent file is an empty cache.
    /// A damaged file is an error: the caller may log it and start empty.
    pub fn load(path: &Path) -> Result<Self, HashError> {
        let (parent, name) = safe_fs::split(path)?;
        let dir = match safe_fs::open_dir(&parent) {
            Ok(dir) => dir,
            Err(SafeFsError::Sys { errno: nix::errno::Errno::ENOENT, .. }) => return Ok(Self::new()),
            Err(e) => return Err(e.into()),
        };
        let Some(bytes) = safe_fs::read_at(&dir, &name, path, MAX_CACHE_FILE)? else {
            return Ok(Self::new());
        };
        let bad = |detail: String| HashError::BadCache { path: path.to_path_buf(), detail };
        let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if file.format != CACHE_FORMAT {
            return Err(bad(format!("format {} (expected {CACHE_FORMAT})", file.format)));
        }
        let cache = Self::new();
        for entry in file.entries {
            if !is_sha256_hex(&entry.sha256) {
                return Err(bad(format!("inode {}: {:?} is not a SHA-256", entry.key.ino, entry.sha256)));
            }
            cache.insert(entry.key, entry.sha256);
        }
        Ok(cache)
    }

    /// Writes the cache to `path` atomically (temp file + rename, mode 0600). The
    /// directory must exist; it is the agent's own state directory.
    pub fn save(&self, path: &Path) -> Result<(), HashError> {
        let entries: Vec<CacheEntry> =
            self.lock().values().map(|(key, sha)| CacheEntry { key: *key, sha256: sha.clone() }).collect();
        let json = serde_json::to_vec(&CacheFile { format: CACHE_FORMAT, entries })
            .expect("numbers and strings always serialize");
        let (parent, name) = safe_fs::split(path)?;
        let dir = safe_fs::open_dir(&parent)?;
        safe_fs::write_at(&dir, &name, &json, Attrs { mode: Some(0o600), ..Attrs::default() }, path)?;
        Ok(())
    }

    // Every update is a single map operation, so the data behind a poisoned lock is whole.
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn now_ns() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

/// SHA-256 of a whole open file, read from offset 0 without moving its position.
pub fn hash_file(file: &File, shown: &Path) -> Result<String, HashError> {
    let mut hasher = Sha256::new();
    hash_range(file, 0, u64::MAX, &mut hasher, shown)?;
    Ok(hex(&hasher.finalize()))
}

/// Feeds bytes `[from, from + len)` of `file` into `hasher` (fewer when the file is
/// shorter); returns how many were read.
pub fn hash_range(file: &File, from: u64, len: u64, hasher: &mut Sha256, shown: &Path) -> Result<u64, HashError> {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(READ_BUFFER as u64)).expect("at most the buffer size");
        let n = match file.read_at(&mut buf[..want], from + done) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(HashError::Io { path: shown.to_path_buf(), source }),
        };
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_sha_shape() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert!(is_sha256_hex(&"0a".repeat(32)));
        for bad in ["", "0A".repeat(32).as_str(), &"0a".repeat(31), &"zz".repeat(32)] {
            assert!(!is_sha256_hex(bad), "{bad}");
        }
    }

    #[test]
    fn cache_hits_until_the_file_changes_and_survives_save_load() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        std::fs::write(&path, "abc").expect("write");
        let cache = HashCache::new();
        let fresh = File::open(&path).expect("open");
        cache.sha256_of(&fresh, &path).expect("hash").expect("stable");
        assert!(cache.is_empty(), "a version changed a moment ago is not cached yet");
        std::thread::sleep(std::time::Duration::from_millis(150));
        let file = File::open(&path).expect("open");
        let (key, sha) = cache.sha256_of(&file, &path).expect("hash").expect("stable");
        assert_eq!(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(key.size, 3);
        cache.sha256_of(&file, &path).expect("hash").expect("stable");
        assert_eq!(cache.files_hashed(), 2, "the third lookup is a hit");

        let saved = tmp.path().join("cache.json");
        cache.save(&saved).expect("save");
        let loaded = HashCache::load(&saved).expect("load");
        assert_eq!(loaded.get(&key), Some(sha.clone()));
        assert_eq!(loaded.files_hashed(), 0);

        std::fs::write(&path, "abd").expect("rewrite");
        std::thread::sleep(std::time::Duration::from_millis(150));
        let file = File::open(&path).expect("open");
        let (_, changed) = loaded.sha256_of(&file, &path).expect("hash").expect("stable");
        assert_ne!(changed, sha);
        assert_eq!(loaded.files_hashed(), 1);

        loaded.retain(&HashSet::new());
        assert!(loaded.is_empty());
        assert!(HashCache::load(&tmp.path().join("absent.json")).expect("absent").is_empty());
        std::fs::write(&saved, "{").expect("damage");
        assert!(matches!(HashCache::load(&saved), Err(HashError::BadCache { .. })));
    }
}
