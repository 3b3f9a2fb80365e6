//! The vigosync scanner: what every opted-in user's `~/vigosync/` holds, as the
//! `vigosync` trait reports it.
//!
//! Only regular files the user owns are carried: subdirectories, symlinks,
//! FIFOs and devices, hidden names, names that are not UTF-8 or hold unprintable
//! characters, and files over 100 MB are skipped and listed locally with the reason (`vigo status`). A file
//! the user does not own (a hard link to someone else's file) is never read,
//! so nothing the user cannot read leaves the host. Unchanged files are not
//! hashed again (see [`crate::hash`]). Scanning blocks on the filesystem; run it
//! on a blocking thread.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use serde::Serialize;

use crate::accounts::Account;
use crate::hash::{FileKey, HashCache, HashError};
use crate::sync::{FileEntry, MAX_FILE_SIZE, SyncTrait, printable_name, valid_name};
use crate::syncdir::{open_sync_dir, sync_path};

/// Prefix of the receiver's partial downloads; such files are not reported at all.
pub const PART_PREFIX: &str = ".vigosync-";
/// Suffix of the receiver's partial downloads.
pub const PART_SUFFIX: &str = ".part";

/// Why a directory entry is not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The name starts with `.`.
    Dotfile,
    Directory,
    Symlink,
    /// Larger than [`MAX_FILE_SIZE`].
    TooBig,
    /// A FIFO, socket or device.
    NotRegular,
    /// Not UTF-8 (or otherwise not a name vigosync can carry).
    BadName,
    /// Holds a control character or an invisible formatting character (an escape
    /// sequence, a newline, a bidirectional override…): such a name would act on the
    /// terminals it is printed on, so it never leaves the host.
    Unprintable,
    /// Owned by another user (typically a hard link to a file that is not the user's).
    NotOwned,
    /// Being written during the scan; it is picked up by a later scan.
    Changing,
    /// Could not be read.
    Unreadable,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dotfile => "dotfile",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::TooBig => "too_big",
            Self::NotRegular => "not_regular",
            Self::BadName => "bad_name",
            Self::Unprintable => "unprintable_name",
            Self::NotOwned => "not_owned",
            Self::Changing => "changing",
            Self::Unreadable => "unreadable",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry left out of the trait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The name as found (lossily decoded when it is not UTF-8).
    pub name: String,
    pub reason: SkipReason,
}

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScanResult {
    /// The `vigosync` trait: every opted-in user with their files.
    #[serde(rename = "trait")]
    pub trait_: SyncTrait,
    /// Per user, the entries left out and why.
    pub skipped: BTreeMap<String, Vec<Skipped>>,
    /// Users whose `~/vigosync` exists but is not used (a symlink, not a directory,
    /// not theirs, unreadable), with the reason. They are absent from the trait.
    pub problems: BTreeMap<String, String>,
}

/// Scans users' sync directories, hashing only what changed since the last scan.
#[derive(Debug, Clone, Default)]
pub struct Scanner {
    cache: HashCache,
}

impl Scanner {
    /// A scanner using (and filling) `cache`, shared with the peer server.
    pub fn new(cache: HashCache) -> Self {
        Self { cache }
    }

    pub fn cache(&self) -> &HashCache {
        &self.cache
    }

    /// Scans each account's `~/vigosync/`. Users without a home or without the
    /// directory are absent (not opted in). Cache entries of files not seen in this
    /// scan are dropped, so pass every account at once.
    pub fn scan(&mut self, accounts: &[Account]) -> ScanResult {
        let mut result = ScanResult::default();
        let mut live = HashSet::new();
        for account in accounts {
            let dir = match open_sync_dir(account) {
                Ok(Some(dir)) => dir,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(user = %account.name, error = %e, "vigosync directory not used");
                    result.problems.insert(account.name.clone(), e.to_string());
                    continue;
                }
            };
            let shown = sync_path(account);
            match self.scan_dir(&dir, account, &shown, &mut live) {
                Ok((files, skipped)) => {
                    result.trait_.insert(account.name.clone(), files);
                    if !skipped.is_empty() {
                        result.skipped.insert(account.name.clone(), skipped);
                    }
                }
                Err(e) => {
                    tracing::warn!(user = %account.name, error = %e, "vigosync directory unreadable");
                    result.problems.insert(account.name.clone(), e.to_string());
                }
            }
        }
        self.cache.retain(&live);
        result
    }

    fn scan_dir(
        &self,
        dir: &OwnedFd,
        account: &Account,
        shown: &Path,
        live: &mut HashSet<(u64, u64)>,
    ) -> Result<(Vec<FileEntry>, Vec<Skipped>), HashError> {
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for raw in list_names(dir, shown)? {
            let name = match raw.into_string() {
                Ok(name) => name,
                Err(raw) => {
                    let name = String::from_utf8_lossy(&raw.into_vec()).into_owned();
                    skipped.push(Skipped { name, reason: SkipReason::BadName });
                    continue;
                }
            };
            if name.starts_with(PART_PREFIX) && name.ends_with(PART_SUFFIX) {
                continue;
            }
            match self.scan_entry(dir, &name, account, &shown.join(&name), live) {
                Ok(entry) => files.push(entry),
                Err(reason) => skipped.push(Skipped { name, reason }),
            }
        }
        Ok((files, skipped))
    }

    fn scan_entry(
        &self,
        dir: &OwnedFd,
        name: &str,
        account: &Account,
        shown: &Path,
        live: &mut HashSet<(u64, u64)>,
    ) -> Result<FileEntry, SkipReason> {
        if name.starts_with('.') {
            return Err(SkipReason::Dotfile);
        }
        if !printable_name(name) {
            return Err(SkipReason::Unprintable);
        }
        if !valid_name(name) {
            return Err(SkipReason::BadName);
        }
        let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|_| SkipReason::Unreadable)?;
        check_candidate(&st, account.uid)?;
        let key = FileKey::of(&st);
        let (key, sha256) = match self.cache.get(&key) {
            Some(sha) => (key, sha),
            None => self.hash_entry(dir, name, account, shown)?,
        };
        live.insert((key.dev, key.ino));
        Ok(FileEntry { name: name.to_string(), sha256, size: key.size, mtime: key.mtime_ns })
    }

    fn hash_entry(
        &self,
        dir: &OwnedFd,
        name: &str,
        account: &Account,
        shown: &Path,
    ) -> Result<(FileKey, String), SkipReason> {
        let file = open_regular(dir, name, account.uid).map_err(|e| match e {
            OpenError::Skip(reason) => reason,
            OpenError::Sys(errno) => {
                tracing::warn!(path = %shown.display(), %errno, "vigosync file unreadable");
                SkipReason::Unreadable
            }
        })?;
        match self.cache.sha256_of(&file, shown) {
            Ok(Some(hashed)) => Ok(hashed),
            Ok(None) => Err(SkipReason::Changing),
            Err(e) => {
                tracing::warn!(error = %e, "vigosync file unreadable");
                Err(SkipReason::Unreadable)
            }
        }
    }
}

/// Why [`open_regular`] did not give a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// The entry is not something vigosync carries.
    Skip(SkipReason),
    /// The system refused (absent, I/O error…).
    Sys(nix::errno::Errno),
}

/// Whether an entry's metadata makes it a file vigosync carries for `uid`.
pub(crate) fn check_candidate(st: &FileStat, uid: u32) -> Result<(), SkipReason> {
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if fmt == SFlag::S_IFDIR {
        return Err(SkipReason::Directory);
    }
    if fmt == SFlag::S_IFLNK {
        return Err(SkipReason::Symlink);
    }
    if fmt != SFlag::S_IFREG {
        return Err(SkipReason::NotRegular);
    }
    if st.st_uid != uid {
        return Err(SkipReason::NotOwned);
    }
    if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_FILE_SIZE {
        return Err(SkipReason::TooBig);
    }
    Ok(())
}

/// Opens `name` in `dir` for reading: never through a symlink, never blocking on a
/// FIFO, and only when the opened object is a regular file owned by `uid` and not
/// over the size limit (checked on the handle, so a swap after a `stat` cannot
/// slip another file in).
pub(crate) fn open_regular(dir: &OwnedFd, name: &str, uid: u32) -> Result<File, OpenError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ELOOP) => return Err(OpenError::Skip(SkipReason::Symlink)),
        Err(errno) => return Err(OpenError::Sys(errno)),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(OpenError::Sys)?;
    check_candidate(&st, uid).map_err(OpenError::Skip)?;
    Ok(File::from(fd))
}

/// Every name in the open directory, as raw bytes (a name that is not UTF-8 must
/// not hide the rest of the listing), sorted.
pub(crate) fn list_names(dir: &OwnedFd, shown: &Path) -> Result<Vec<OsString>, HashError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    // A handle of its own, so reading does not move the caller's offset.
    let mut listing = nix::dir::Dir::openat(dir.as_fd(), ".", flags, Mode::empty())
        .map_err(|errno| HashError::Sys { path: shown.to_path_buf(), errno })?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|errno| HashError::Sys { path: shown.to_path_buf(), errno })?;
        let bytes = entry.file_name().to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(OsString::from_vec(bytes.to_vec()));
        }
    }
    names.sort_unstable();
    Ok(names)
}
