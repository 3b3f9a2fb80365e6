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
//!
//! What one user contributes is bounded, so no directory can make the check-in
//! exceed the server's message limit or crowd out other users: at most
//! [`MAX_FILES_PER_USER`] files, [`MAX_BYTES_PER_USER`] bytes of content and
//! [`MAX_TRAIT_BYTES_PER_USER`] bytes of trait per user (files in name order), and
//! [`MAX_TRAIT_BYTES`] for the whole trait, shared fairly (a user who needs less
//! leaves the rest to the others). Files beyond are not hashed; they are counted in
//! [`ScanResult::overflow`], which `vigo status` shows and the server receives as
//! the `vigosync_overflow` trait. At most [`MAX_SKIPPED_LISTED`] skipped entries are
//! listed per user; the rest are counted.

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
use crate::sync::{
    FileEntry, MAX_BYTES_PER_USER, MAX_FILE_SIZE, MAX_FILES_PER_USER, MAX_TRAIT_BYTES, MAX_TRAIT_BYTES_PER_USER,
    Overflow, OverflowTrait, SyncTrait, printable_name, valid_name,
};
use crate::syncdir::{open_sync_dir, sync_path};

/// Prefix of the receiver's partial downloads; such files are not reported at all.
pub const PART_PREFIX: &str = ".vigosync-";
/// Suffix of the receiver's partial downloads.
pub const PART_SUFFIX: &str = ".part";
/// Skipped entries listed per user; more are only counted.
pub const MAX_SKIPPED_LISTED: usize = 100;

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
    /// Per user, the files left out of the trait by the limits (the `vigosync_overflow`
    /// trait).
    pub overflow: OverflowTrait,
    /// Per user, skipped entries beyond the [`MAX_SKIPPED_LISTED`] listed.
    pub skipped_more: BTreeMap<String, u64>,
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
                Ok(Listing { files, mut skipped, overflow }) => {
                    result.trait_.insert(account.name.clone(), files);
                    if skipped.len() > MAX_SKIPPED_LISTED {
                        let more = skipped.len() - MAX_SKIPPED_LISTED;
                        skipped.truncate(MAX_SKIPPED_LISTED);
                        result.skipped_more.insert(account.name.clone(), more as u64);
                    }
                    if !skipped.is_empty() {
                        result.skipped.insert(account.name.clone(), skipped);
                    }
                    if !overflow.is_empty() {
                        result.overflow.insert(account.name.clone(), overflow);
                    }
                }
                Err(e) => {
                    tracing::warn!(user = %account.name, error = %e, "vigosync directory unreadable");
                    result.problems.insert(account.name.clone(), e.to_string());
                }
            }
        }
        share_trait_budget(&mut result);
        for (user, o) in &result.overflow {
            tracing::warn!(%user, files = o.files, bytes = o.bytes, "vigosync files left out of the report: over the limits");
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
    ) -> Result<Listing, HashError> {
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        let mut overflow = Overflow::default();
        let (mut bytes, mut encoded) = (0u64, 0usize);
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
            if overflow.files > 0 {
                // Over a limit already: only counted, never hashed.
                match precheck(dir, &name, account) {
                    Ok(size) => overflow.add(1, size),
                    Err(reason) => skipped.push(Skipped { name, reason }),
                }
                continue;
            }
            match self.scan_entry(dir, &name, account, &shown.join(&name), live) {
                Ok(entry) => {
                    let size = encoded_len(&entry);
                    if files.len() >= MAX_FILES_PER_USER
                        || bytes.saturating_add(entry.size) > MAX_BYTES_PER_USER
                        || encoded + size > MAX_TRAIT_BYTES_PER_USER
                    {
                        overflow.add(1, entry.size);
                        continue;
                    }
                    bytes += entry.size;
                    encoded += size;
                    files.push(entry);
                }
                Err(reason) => skipped.push(Skipped { name, reason }),
            }
        }
        Ok(Listing { files, skipped, overflow })
    }

    fn scan_entry(
        &self,
        dir: &OwnedFd,
        name: &str,
        account: &Account,
        shown: &Path,
        live: &mut HashSet<(u64, u64)>,
    ) -> Result<FileEntry, SkipReason> {
        let st = check_entry(dir, name, account)?;
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

/// One directory's scan: the files carried, the entries skipped, the files left out.
struct Listing {
    files: Vec<FileEntry>,
    skipped: Vec<Skipped>,
    overflow: Overflow,
}

/// The checks on an entry before it is read: its name, then its metadata.
fn check_entry(dir: &OwnedFd, name: &str, account: &Account) -> Result<FileStat, SkipReason> {
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
    Ok(st)
}

/// The size of a file that would be carried but is over a limit.
fn precheck(dir: &OwnedFd, name: &str, account: &Account) -> Result<u64, SkipReason> {
    check_entry(dir, name, account).map(|st| u64::try_from(st.st_size).unwrap_or(0))
}

/// Bytes one entry takes in the encoded trait (with its separator).
fn encoded_len(entry: &FileEntry) -> usize {
    serde_json::to_vec(entry).map_or(usize::MAX / 4, |v| v.len() + 1)
}

/// Cuts the trait to [`MAX_TRAIT_BYTES`], fairly: users are served from the smallest
/// need up, each getting at most an equal share of what is left, so a user who needs
/// little is never cut and a huge directory only shortens its own list. What is cut
/// (from the end of a user's list) is added to that user's overflow.
fn share_trait_budget(result: &mut ScanResult) {
    let mut needs: Vec<(usize, String)> = result
        .trait_
        .iter()
        .map(|(user, files)| (user.len() + 4 + files.iter().map(encoded_len).sum::<usize>(), user.clone()))
        .collect();
    needs.sort();
    let mut left = MAX_TRAIT_BYTES;
    let mut users_left = needs.len();
    for (need, user) in needs {
        let share = left / users_left.max(1);
        users_left -= 1;
        if need <= share {
            left -= need;
            continue;
        }
        let Some(files) = result.trait_.get_mut(&user) else { continue };
        let mut used = user.len() + 4;
        let keep = files
            .iter()
            .take_while(|f| {
                used += encoded_len(f);
                used <= share
            })
            .count();
        let cut = files.split_off(keep);
        left = left.saturating_sub(files.iter().map(encoded_len).sum::<usize>() + user.len() + 4);
        let o = result.overflow.entry(user).or_default();
        o.add(cut.len() as u64, cut.iter().map(|f| f.size).sum());
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
