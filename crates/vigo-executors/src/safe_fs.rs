//! Safe filesystem access for a root process writing where others may have a say.
//!
//! Everything here works relative to open directory handles: `openat` with
//! `O_NOFOLLOW`, `fstatat` without following links, `fchown`/`fchmod` on the open
//! file, a temp file created with `O_EXCL` and `renameat` in the same directory.
//! A symlink or a swapped directory can therefore never redirect a write.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fsync, unlinkat};

/// Why a safe filesystem operation refused or failed. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error("{path}: {errno}")]
    Sys { path: PathBuf, errno: Errno },
    #[error("{path}: is a symlink; refusing to follow it")]
    Symlink { path: PathBuf },
    #[error("{path}: not a {expected}")]
    WrongKind { path: PathBuf, expected: &'static str },
    #[error("{path}: owned by uid {uid}, expected uid {expected} or root")]
    Owner { path: PathBuf, uid: u32, expected: u32 },
    #[error("{path}: is writable by group or others")]
    Writable { path: PathBuf },
    #[error("{path}: not an absolute, normal path")]
    BadPath { path: PathBuf },
    #[error("{name:?}: not a plain file name")]
    BadName { name: String },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: more than {limit} directory levels deep")]
    TooDeep { path: PathBuf, limit: usize },
    #[error("{path}: entry name is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{link}: is a symlink owned by uid {link_uid} in a directory owned by uid {dir_uid} that others can change; refusing to follow it"
    )]
    UntrustedLink { link: PathBuf, link_uid: u32, dir_uid: u32 },
    #[error("{path}: more than {limit} symlinks to follow")]
    LinkLoop { path: PathBuf, limit: usize },
}

type Result<T> = std::result::Result<T, SafeFsError>;

fn sys(path: &Path) -> impl FnOnce(Errno) -> SafeFsError + '_ {
    move |errno| SafeFsError::Sys { path: path.to_path_buf(), errno }
}

/// What kind of object a name is, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of a name in a directory, read without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub size: u64,
    pub nlink: u64,
    pub ino: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

/// Whether a directory with this owner and mode is one only root can change: owned
/// by root, writable by neither group nor others (a sticky shared directory such as
/// `/tmp` does not qualify). Only there are root's links and entries root's doing.
pub fn root_only(uid: u32, mode: u32) -> bool {
    uid == 0 && mode & 0o022 == 0
}

impl Meta {
    /// [`root_only`] for this directory.
    pub fn is_root_only(&self) -> bool {
        root_only(self.uid, self.mode)
    }
}

impl Meta {
    fn from_stat(st: &FileStat) -> Self {
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let kind = if fmt == SFlag::S_IFREG {
            Kind::File
        } else if fmt == SFlag::S_IFDIR {
            Kind::Dir
        } else if fmt == SFlag::S_IFLNK {
            Kind::Symlink
        } else {
            Kind::Other
        };
        Meta {
            kind,
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            size: u64::try_from(st.st_size).unwrap_or(0),
            nlink: st.st_nlink,
            ino: st.st_ino,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
        }
    }
}

/// Checks that `name` is one plain path component: not empty, no `/`, no NUL, not `.`/`..`, ≤ 255 bytes.
pub fn check_name(name: &str) -> Result<()> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') || name.len() > 255;
    if bad { Err(SafeFsError::BadName { name: name.to_string() }) } else { Ok(()) }
}

/// Splits an absolute path into its parent directory and final name.
pub fn split(path: &Path) -> Result<(PathBuf, String)> {
    let bad = || SafeFsError::BadPath { path: path.to_path_buf() };
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return Err(bad());
    }
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
    let parent = path.parent().ok_or_else(bad)?;
    Ok((parent.to_path_buf(), name.to_string()))
}

/// Most symlinks [`walk_dir`] follows for one path (as the kernel's `ELOOP` limit).
pub const MAX_LINKS: usize = 40;

/// Opens the directory at the absolute `path`, with the location it really is.
///
/// The one path walker every write by root goes through: the path is opened one
/// component at a time from `/`, each with `O_NOFOLLOW|O_DIRECTORY` relative to the
/// handle before it. A symlink on the way is followed only when the directory holding
/// it is owned by root and writable by nobody else — the system's own layout (such as
/// `/lib -> usr/lib` or `/etc/alternatives`); only root can have placed such a link.
/// A link in a directory a user owns or can write (a sticky `/tmp` included) is never
/// followed: [`SafeFsError::UntrustedLink`] names it and its owner. The path returned
/// holds no symlink, so guardrails can judge where a write really lands.
pub fn walk_dir(path: &Path) -> Result<(OwnedFd, PathBuf)> {
    if !path.is_absolute() {
        return Err(SafeFsError::BadPath { path: path.to_path_buf() });
    }
    let root = || nix::fcntl::open("/", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty());
    let mut fd = root().map_err(sys(path))?;
    let mut resolved = PathBuf::from("/");
    // Components still to walk, the next one last.
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut hops = 0;
    while let Some(comp) = pending.pop() {
        let Some(name) = comp.to_str() else { return Err(SafeFsError::NotUtf8 { path: path.to_path_buf() }) };
        if name == ".." {
            // The real parent of a directory that holds no link: never a redirection.
            fd = openat(
                &fd,
                "..",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(sys(&resolved))?;
            resolved.pop();
            continue;
        }
        let here = resolved.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(&fd, name, flags, Mode::empty()) {
            Ok(sub) => {
                fd = sub;
                resolved = here;
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let Some(meta) = stat_at(&fd, name, &here)? else {
                    return Err(SafeFsError::Sys { path: here, errno: Errno::ENOENT });
                };
                if meta.kind != Kind::Symlink {
                    return Err(SafeFsError::Sys { path: here, errno: Errno::ENOTDIR });
                }
                let holder = fstat(&fd).map_err(sys(&resolved))?;
                if !root_only(holder.st_uid, holder.st_mode) {
                    return Err(SafeFsError::UntrustedLink { link: here, link_uid: meta.uid, dir_uid: holder.st_uid });
                }
                hops += 1;
                if hops > MAX_LINKS {
                    return Err(SafeFsError::LinkLoop { path: path.to_path_buf(), limit: MAX_LINKS });
                }
                let target = PathBuf::from(nix::fcntl::readlinkat(&fd, name).map_err(sys(&here))?);
                push_components(&mut pending, &target);
                if target.is_absolute() {
                    fd = root().map_err(sys(path))?;
                    resolved = PathBuf::from("/");
                }
            }
            Err(errno) => return Err(SafeFsError::Sys { path: here, errno }),
        }
    }
    Ok((fd, resolved))
}

/// Pushes the components of `path` onto the stack of names still to walk (first on top).
fn push_components(pending: &mut Vec<std::ffi::OsString>, path: &Path) {
    let parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    pending.extend(parts.into_iter().rev());
}

/// Opens the directory at `path` through [`walk_dir`].
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    walk_dir(path).map(|(fd, _)| fd)
}

/// Opens `name` inside `dir` as a directory, refusing a symlink.
pub fn open_subdir(dir: impl AsFd, name: &str, shown: &Path) -> Result<OwnedFd> {
    check_name(name)?;
    let dir = dir.as_fd();
    match openat(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
    {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP) => Err(SafeFsError::Symlink { path: shown.to_path_buf() }),
        Err(Errno::ENOTDIR) => match stat_at(dir, name, shown)? {
            Some(Meta { kind: Kind::Symlink, .. }) => Err(SafeFsError::Symlink { path: shown.to_path_buf() }),
            _ => Err(SafeFsError::WrongKind { path: shown.to_path_buf(), expected: "directory" }),
        },
        Err(e) => Err(SafeFsError::Sys { path: shown.to_path_buf(), errno: e }),
    }
}

/// Opens a directory below `base` (e.g. a home directory) one component at a time,
/// refusing symlinks and any directory not owned by `owner` or root, or writable by others.
pub fn open_tree(base: &Path, rel: &[&str], owner: u32) -> Result<OwnedFd> {
    let mut fd = open_dir(base)?;
    check_owned(&fd, base, owner)?;
    let mut shown = base.to_path_buf();
    for comp in rel {
        shown.push(comp);
        fd = open_subdir(&fd, comp, &shown)?;
        check_owned(&fd, &shown, owner)?;
    }
    Ok(fd)
}

fn check_owned(fd: &OwnedFd, path: &Path, owner: u32) -> Result<()> {
    let st = fstat(fd).map_err(sys(path))?;
    if st.st_uid != owner && st.st_uid != 0 {
        return Err(SafeFsError::Owner { path: path.to_path_buf(), uid: st.st_uid, expected: owner });
    }
    if st.st_mode & 0o022 != 0 && st.st_mode & 0o1000 == 0 {
        return Err(SafeFsError::Writable { path: path.to_path_buf() });
    }
    Ok(())
}

/// Metadata of `name` in `dir`, without following a symlink; `None` when absent.
pub fn stat_at(dir: impl AsFd, name: &str, shown: &Path) -> Result<Option<Meta>> {
    check_name(name)?;
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Meta::from_stat(&st))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(SafeFsError::Sys { path: shown.to_path_buf(), errno: e }),
    }
}

/// Reads a regular file `name` in `dir` without following a symlink; `None` when absent.
/// Refuses FIFOs, devices and directories (they could block or mislead), and files over `limit`.
pub fn read_at(dir: impl AsFd, name: &str, shown: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
    Ok(read_with_meta(dir, name, shown, limit)?.map(|(bytes, _)| bytes))
}

/// Like [`read_at`], with the metadata of the very file that was read (taken from the open
/// handle, so a swap between a `stat` and the read cannot mislead the caller, e.g. about
/// `nlink` when refusing hard links into a user's directory).
pub fn read_with_meta(dir: impl AsFd, name: &str, shown: &Path, limit: u64) -> Result<Option<(Vec<u8>, Meta)>> {
    check_name(name)?;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(SafeFsError::Symlink { path: shown.to_path_buf() }),
        Err(e) => return Err(SafeFsError::Sys { path: shown.to_path_buf(), errno: e }),
    };
    let st = fstat(&fd).map_err(sys(shown))?;
    let meta = Meta::from_stat(&st);
    if meta.kind != Kind::File {
        return Err(SafeFsError::WrongKind { path: shown.to_path_buf(), expected: "regular file" });
    }
    if u64::try_from(st.st_size).unwrap_or(u64::MAX) > limit {
        return Err(SafeFsError::TooLarge { path: shown.to_path_buf(), limit });
    }
    let mut buf = Vec::new();
    File::from(fd)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| SafeFsError::Io { path: shown.to_path_buf(), source })?;
    if buf.len() as u64 > limit {
        return Err(SafeFsError::TooLarge { path: shown.to_path_buf(), limit });
    }
    Ok(Some((buf, meta)))
}

/// Ownership and permissions for a file written by [`write_at`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attrs {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Permission bits; `None` keeps 0644 for new files.
    pub mode: Option<u32>,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Atomically replaces (or creates) `name` in `dir` with `bytes`: a temp file made with
/// `O_EXCL|O_NOFOLLOW` in the same directory, owner and mode set on the open file,
/// fsync'd, then `renameat` over the name and the directory fsync'd.
pub fn write_at(dir: impl AsFd, name: &str, bytes: &[u8], attrs: Attrs, shown: &Path) -> Result<()> {
    write_with(dir, name, attrs, shown, |f| f.write_all(bytes))
}

/// Like [`write_at`], with the content produced by `fill` writing into the temp file.
pub fn write_with(
    dir: impl AsFd,
    name: &str,
    attrs: Attrs,
    shown: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    check_name(name)?;
    let dir = dir.as_fd();
    let tmp =
        format!(".{}.vigo-{}-{}", truncate(name, 200), std::process::id(), TEMP_SEQ.fetch_add(1, Ordering::Relaxed));
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, tmp.as_str(), flags, Mode::from_bits_truncate(0o600)).map_err(sys(shown))?;
    let result = (|| {
        let mut file = File::from(fd);
        fill(&mut file).map_err(|source| SafeFsError::Io { path: shown.to_path_buf(), source })?;
        if attrs.uid.is_some() || attrs.gid.is_some() {
            fchown(&file, attrs.uid.map(Uid::from_raw), attrs.gid.map(Gid::from_raw)).map_err(sys(shown))?;
        }
        fchmod(&file, Mode::from_bits_truncate(attrs.mode.unwrap_or(0o644))).map_err(sys(shown))?;
        fsync(&file).map_err(sys(shown))?;
        renameat(dir, tmp.as_str(), dir, name).map_err(sys(shown))?;
        fsync(dir).map_err(sys(shown))
    })();
    if result.is_err() {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Creates `name` in `dir` as a new, empty file for writing in place (a resumable
/// download): `O_EXCL|O_NOFOLLOW`, so any existing entry, a symlink included, is an
/// `EEXIST` error and nothing is opened through it; owner and mode (default 0600) are
/// set on the open handle.
pub fn create_new_at(dir: impl AsFd, name: &str, attrs: Attrs, shown: &Path) -> Result<File> {
    check_name(name)?;
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = File::from(openat(dir, name, flags, Mode::from_bits_truncate(0o600)).map_err(sys(shown))?);
    if attrs.uid.is_some() || attrs.gid.is_some() {
        fchown(&file, attrs.uid.map(Uid::from_raw), attrs.gid.map(Gid::from_raw)).map_err(sys(shown))?;
    }
    fchmod(&file, Mode::from_bits_truncate(attrs.mode.unwrap_or(0o600))).map_err(sys(shown))?;
    Ok(file)
}

/// Opens `name` in `dir` when it is a regular file, with its metadata read from the
/// handle itself (so a swap after the open is seen): never through a symlink, never
/// blocking on a FIFO. `None` when the name is missing or is anything else.
pub fn open_regular_at(dir: impl AsFd, name: &str, writable: bool, shown: &Path) -> Result<Option<(File, FileStat)>> {
    check_name(name)?;
    let access = if writable { OFlag::O_RDWR } else { OFlag::O_RDONLY };
    let flags = access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENXIO | Errno::EISDIR) => return Ok(None),
        Err(errno) => return Err(SafeFsError::Sys { path: shown.to_path_buf(), errno }),
    };
    let st = fstat(&fd).map_err(sys(shown))?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Ok(None);
    }
    Ok(Some((File::from(fd), st)))
}

/// Renames `from` over `to` within `dir` (the entry at `to` is replaced, never written
/// through) and fsyncs the directory so the new name survives a crash.
pub fn rename_durably_at(dir: impl AsFd, from: &str, to: &str, shown: &Path) -> Result<()> {
    check_name(from)?;
    check_name(to)?;
    let dir = dir.as_fd();
    renameat(dir, from, dir, to).map_err(sys(shown))?;
    fsync(dir).map_err(sys(shown))
}

/// Removes the non-directory `name` from `dir` (a symlink is removed, never followed).
pub fn remove_at(dir: impl AsFd, name: &str, shown: &Path) -> Result<()> {
    check_name(name)?;
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(SafeFsError::Sys { path: shown.to_path_buf(), errno: e }),
    }
}

/// Creates directory `name` in `dir` with `mode` (not following a symlink at the name).
pub fn mkdir_at(dir: impl AsFd, name: &str, mode: u32, shown: &Path) -> Result<()> {
    check_name(name)?;
    mkdirat(dir, name, Mode::from_bits_truncate(mode)).map_err(sys(shown))
}

/// Opens `name` in `dir` for metadata changes, refusing a symlink; the handle is then
/// used with `fchown`/`fchmod`, so a swap after the open cannot redirect the change.
pub fn open_for_attrs(dir: impl AsFd, name: &str, shown: &Path) -> Result<OwnedFd> {
    check_name(name)?;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    match openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP) => Err(SafeFsError::Symlink { path: shown.to_path_buf() }),
        Err(e) => Err(SafeFsError::Sys { path: shown.to_path_buf(), errno: e }),
    }
}

/// Metadata of an open handle.
pub fn meta_of(fd: impl AsFd, shown: &Path) -> Result<Meta> {
    fstat(fd).map(|st| Meta::from_stat(&st)).map_err(sys(shown))
}

/// Sets owner and mode on an open handle (only the parts given).
pub fn set_attrs(fd: impl AsFd, uid: Option<u32>, gid: Option<u32>, mode: Option<u32>, shown: &Path) -> Result<()> {
    let fd = fd.as_fd();
    if uid.is_some() || gid.is_some() {
        fchown(fd, uid.map(Uid::from_raw), gid.map(Gid::from_raw)).map_err(sys(shown))?;
    }
    if let Some(mode) = mode {
        fchmod(fd, Mode::from_bits_truncate(mode)).map_err(sys(shown))?;
    }
    Ok(())
}

/// The names in the open directory `dir`, sorted, without `.` and `..`.
pub fn list_at(dir: impl AsFd, shown: &Path) -> Result<Vec<String>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    // A fresh handle of its own, so reading does not move the caller's offset.
    let mut listing = nix::dir::Dir::openat(dir, ".", flags, Mode::empty()).map_err(sys(shown))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(sys(shown))?;
        let name = entry.file_name().to_str().map_err(|_| SafeFsError::NotUtf8 { path: shown.to_path_buf() })?;
        if name != "." && name != ".." {
            names.push(name.to_string());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Removes the empty directory `name` from `dir`.
pub fn rmdir_at(dir: impl AsFd, name: &str, shown: &Path) -> Result<()> {
    check_name(name)?;
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(SafeFsError::Sys { path: shown.to_path_buf(), errno: e }),
    }
}

/// Deepest tree [`remove_tree_at`] descends into (each level holds a directory handle).
pub const MAX_TREE_DEPTH: usize = 256;

/// Removes `name` from `dir` and, when it is a directory, everything below it.
/// A symlink anywhere in the tree is removed itself, never followed.
pub fn remove_tree_at(dir: impl AsFd, name: &str, shown: &Path) -> Result<()> {
    remove_tree_below(dir.as_fd(), name, shown, 0)
}

fn remove_tree_below(dir: std::os::fd::BorrowedFd<'_>, name: &str, shown: &Path, depth: usize) -> Result<()> {
    match stat_at(dir, name, shown)? {
        None => return Ok(()),
        Some(meta) if meta.kind != Kind::Dir => return remove_at(dir, name, shown),
        Some(_) => {}
    }
    if depth >= MAX_TREE_DEPTH {
        return Err(SafeFsError::TooDeep { path: shown.to_path_buf(), limit: MAX_TREE_DEPTH });
    }
    let sub = open_subdir(dir, name, shown)?;
    for child in list_at(&sub, shown)? {
        remove_tree_below(sub.as_fd(), &child, &shown.join(&child), depth + 1)?;
    }
    rmdir_at(dir, name, shown)
}

/// The target of the symlink `name` in `dir`; `None` when absent.
pub fn read_link_at(dir: impl AsFd, name: &str, shown: &Path) -> Result<Option<PathBuf>> {
    check_name(name)?;
    match nix::fcntl::readlinkat(dir, name) {
        Ok(target) => Ok(Some(PathBuf::from(target))),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::EINVAL) => Err(SafeFsError::WrongKind { path: shown.to_path_buf(), expected: "symlink" }),
        Err(e) => Err(SafeFsError::Sys { path: shown.to_path_buf(), errno: e }),
    }
}

/// Atomically makes `name` in `dir` a symlink to `target`: the link is created under a
/// temp name and renamed over `name`, replacing a file or link; a directory is refused
/// by the kernel (`EISDIR`). Owner is set on the new link when given.
pub fn symlink_at(
    dir: impl AsFd,
    name: &str,
    target: &Path,
    owner: (Option<u32>, Option<u32>),
    shown: &Path,
) -> Result<()> {
    check_name(name)?;
    let dir = dir.as_fd();
    let tmp =
        format!(".{}.vigo-{}-{}", truncate(name, 200), std::process::id(), TEMP_SEQ.fetch_add(1, Ordering::Relaxed));
    nix::unistd::symlinkat(target, dir, tmp.as_str()).map_err(sys(shown))?;
    let result = (|| {
        if owner.0.is_some() || owner.1.is_some() {
            lchown_at(dir, &tmp, owner.0, owner.1, shown)?;
        }
        renameat(dir, tmp.as_str(), dir, name).map_err(sys(shown))?;
        fsync(dir).map_err(sys(shown))
    })();
    if result.is_err() {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Changes the owner of `name` itself; a symlink is changed, not followed.
pub fn lchown_at(dir: impl AsFd, name: &str, uid: Option<u32>, gid: Option<u32>, shown: &Path) -> Result<()> {
    check_name(name)?;
    nix::unistd::fchownat(dir, name, uid.map(Uid::from_raw), gid.map(Gid::from_raw), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(sys(shown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn write_replaces_atomically_with_attrs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = open_dir(tmp.path()).expect("open");
        let shown = tmp.path().join("f");
        write_at(&dir, "f", b"one", Attrs { mode: Some(0o600), ..Attrs::default() }, &shown).expect("write");
        assert_eq!(std::fs::read(&shown).expect("read"), b"one");
        assert_eq!(std::fs::metadata(&shown).expect("meta").mode() & 0o7777, 0o600);
        write_at(&dir, "f", b"two", Attrs::default(), &shown).expect("rewrite");
        assert_eq!(std::fs::read(&shown).expect("read"), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn write_over_symlink_replaces_the_link_not_its_target() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        symlink(&victim, tmp.path().join("f")).expect("symlink");
        let dir = open_dir(tmp.path()).expect("open");
        write_at(&dir, "f", b"new", Attrs::default(), &tmp.path().join("f")).expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep");
        assert!(!std::fs::symlink_metadata(tmp.path().join("f")).expect("meta").file_type().is_symlink());
    }

    #[test]
    fn read_refuses_symlinks_and_fifos() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("real"), "x").expect("real");
        symlink(tmp.path().join("real"), tmp.path().join("link")).expect("symlink");
        nix::unistd::mkfifo(&tmp.path().join("fifo"), Mode::from_bits_truncate(0o600)).expect("fifo");
        let dir = open_dir(tmp.path()).expect("open");
        assert!(matches!(read_at(&dir, "link", Path::new("link"), 10), Err(SafeFsError::Symlink { .. })));
        assert!(matches!(read_at(&dir, "fifo", Path::new("fifo"), 10), Err(SafeFsError::WrongKind { .. })));
        assert_eq!(read_at(&dir, "real", Path::new("real"), 10).expect("read"), Some(b"x".to_vec()));
        assert_eq!(read_at(&dir, "absent", Path::new("absent"), 10).expect("read"), None);
        assert!(matches!(read_at(&dir, "real", Path::new("real"), 0), Err(SafeFsError::TooLarge { .. })));
    }

    #[test]
    fn in_place_writes_never_go_through_links_fifos_or_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        symlink(&victim, tmp.path().join("link")).expect("symlink");
        nix::unistd::mkfifo(&tmp.path().join("fifo"), Mode::from_bits_truncate(0o600)).expect("fifo");
        std::fs::create_dir(tmp.path().join("sub")).expect("dir");
        std::fs::write(tmp.path().join("real"), "x").expect("real");
        let dir = open_dir(tmp.path()).expect("open");
        let shown = Path::new("t");
        for name in ["link", "fifo", "sub", "absent"] {
            assert!(open_regular_at(&dir, name, true, shown).expect(name).is_none(), "{name}");
        }
        let (_, st) = open_regular_at(&dir, "real", false, shown).expect("real").expect("a regular file");
        assert_eq!(st.st_size, 1);
        for name in ["link", "fifo", "sub", "real"] {
            let err = create_new_at(&dir, name, Attrs::default(), shown).expect_err(name);
            assert!(matches!(err, SafeFsError::Sys { errno: Errno::EEXIST, .. }), "{name}: {err}");
        }
        let mut new = create_new_at(&dir, "new", Attrs { mode: Some(0o640), ..Attrs::default() }, shown).expect("new");
        new.write_all(b"fresh").expect("write");
        assert_eq!(std::fs::metadata(tmp.path().join("new")).expect("meta").mode() & 0o7777, 0o640);
        rename_durably_at(&dir, "new", "link", shown).expect("rename over the link");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep", "the link's target is untouched");
        assert_eq!(std::fs::read_to_string(tmp.path().join("link")).expect("replaced"), "fresh");
    }

    #[test]
    fn open_tree_refuses_symlinked_components() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("real")).expect("dir");
        symlink(tmp.path().join("real"), tmp.path().join("link")).expect("symlink");
        let me = nix::unistd::geteuid().as_raw();
        assert!(open_tree(tmp.path(), &["real"], me).is_ok());
        assert!(matches!(open_tree(tmp.path(), &["link"], me), Err(SafeFsError::Symlink { .. })));
    }

    #[test]
    fn list_and_remove_tree_never_follow_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        std::fs::write(outside.join("keep"), "keep").expect("keep");
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).expect("tree");
        std::fs::write(tree.join("a/b/f"), "x").expect("f");
        symlink(&outside, tree.join("a/link")).expect("link");
        let dir = open_dir(tmp.path()).expect("open");
        let sub = open_subdir(&dir, "tree", &tree).expect("sub");
        assert_eq!(list_at(&sub, &tree).expect("list"), ["a"]);
        let a = open_subdir(&sub, "a", &tree.join("a")).expect("a");
        assert_eq!(list_at(&a, &tree.join("a")).expect("list"), ["b", "link"]);
        assert!(matches!(rmdir_at(&dir, "tree", &tree), Err(SafeFsError::Sys { errno: Errno::ENOTEMPTY, .. })));
        remove_tree_at(&dir, "tree", &tree).expect("remove");
        assert!(!tree.exists());
        assert_eq!(std::fs::read_to_string(outside.join("keep")).expect("kept"), "keep");
        remove_tree_at(&dir, "tree", &tree).expect("removing an absent tree is fine");
    }

    #[test]
    fn symlink_at_replaces_files_and_links_but_not_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = open_dir(tmp.path()).expect("open");
        let link = tmp.path().join("l");
        std::fs::write(&link, "file").expect("file");
        symlink_at(&dir, "l", Path::new("/one"), (None, Some(65534)), &link).expect("over a file");
        assert_eq!(read_link_at(&dir, "l", &link).expect("read"), Some(PathBuf::from("/one")));
        assert_eq!(std::fs::symlink_metadata(&link).expect("meta").gid(), 65534);
        symlink_at(&dir, "l", Path::new("two"), (None, None), &link).expect("over a link");
        assert_eq!(read_link_at(&dir, "l", &link).expect("read"), Some(PathBuf::from("two")));
        lchown_at(&dir, "l", Some(65534), None, &link).expect("lchown");
        assert_eq!(std::fs::symlink_metadata(&link).expect("meta").uid(), 65534);
        std::fs::create_dir(tmp.path().join("d")).expect("dir");
        let fd = open_for_attrs(&dir, "d", Path::new("d")).expect("open dir");
        assert_eq!(meta_of(&fd, Path::new("d")).expect("fstat").kind, Kind::Dir);
        assert!(symlink_at(&dir, "d", Path::new("/x"), (None, None), &tmp.path().join("d")).is_err());
        assert!(tmp.path().join("d").is_dir());
        assert_eq!(read_link_at(&dir, "absent", Path::new("absent")).expect("read"), None);
        assert!(matches!(read_link_at(&dir, "d", Path::new("d")), Err(SafeFsError::WrongKind { .. })));
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 2, "no temp links left behind");
    }

    #[test]
    fn read_with_meta_describes_the_file_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("f"), "abc").expect("f");
        std::fs::hard_link(tmp.path().join("f"), tmp.path().join("g")).expect("link");
        let dir = open_dir(tmp.path()).expect("open");
        let (bytes, meta) = read_with_meta(&dir, "f", Path::new("f"), 10).expect("read").expect("present");
        assert_eq!(bytes, b"abc");
        assert_eq!((meta.kind, meta.size, meta.nlink), (Kind::File, 3, 2));
        assert_eq!(read_with_meta(&dir, "absent", Path::new("absent"), 10).expect("read"), None);
    }

    #[test]
    fn names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name("ok.txt").is_ok());
    }
}
