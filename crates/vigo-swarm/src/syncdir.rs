//! Opening a user's `~/vigosync/` the only safe way: as a directory handle,
//! one component at a time, never through a symlink, and only when the user
//! owns it.
//!
//! Everything vigosync reads or writes in that directory goes through the
//! handle returned here, so renaming the directory away or putting a symlink in
//! its place afterwards cannot redirect anything: the handle keeps pointing at
//! the directory the user owns.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use vigo_executors::safe_fs::{self, Kind, SafeFsError};

use crate::accounts::Account;
use crate::sync::DIR_NAME;

/// Why a user's sync directory is not usable (it exists, but vigosync keeps away from it).
#[derive(Debug, thiserror::Error)]
pub enum SyncDirError {
    #[error("{path}: home directory is not an absolute, normal path")]
    BadHome { path: PathBuf },
    #[error("{path}: is a symlink; vigosync never follows it")]
    Symlink { path: PathBuf },
    #[error("{path}: not a directory")]
    NotDirectory { path: PathBuf },
    #[error("{path}: owned by uid {uid}, not by {user} (uid {expected})")]
    NotOwned { path: PathBuf, user: String, uid: u32, expected: u32 },
    #[error("{path}: {errno}")]
    Sys { path: PathBuf, errno: Errno },
    #[error(transparent)]
    Fs(SafeFsError),
}

/// `~/vigosync` of `account`, for messages.
pub fn sync_path(account: &Account) -> PathBuf {
    account.home.join(DIR_NAME)
}

/// Opens `account`'s `~/vigosync/`. `Ok(None)` when the home or the directory does
/// not exist (the user has not opted in); an error when it exists but is unsafe:
/// a symlink, not a directory, or not owned by the user. The home itself must not
/// be a symlink and must belong to the user or root; the path above the home is
/// the administrator's and is followed as laid out.
pub fn open_sync_dir(account: &Account) -> Result<Option<OwnedFd>, SyncDirError> {
    let home = &account.home;
    let (parent, home_name) = safe_fs::split(home).map_err(|_| SyncDirError::BadHome { path: home.clone() })?;
    let parent_fd = match safe_fs::open_dir(&parent) {
        Ok(fd) => fd,
        Err(SafeFsError::Sys { errno: Errno::ENOENT, .. }) => return Ok(None),
        Err(e) => return Err(SyncDirError::Fs(e)),
    };
    let Some(home_fd) = open_owned_dir(&parent_fd, &home_name, home, account, true)? else {
        return Ok(None);
    };
    open_owned_dir(&home_fd, DIR_NAME, &sync_path(account), account, false)
}

/// Opens directory `name` in `dir` without following a symlink and checks its owner
/// (the account's uid, or root when `root_ok`).
fn open_owned_dir(
    dir: &OwnedFd,
    name: &str,
    shown: &Path,
    account: &Account,
    root_ok: bool,
) -> Result<Option<OwnedFd>, SyncDirError> {
    let fd = match safe_fs::open_subdir(dir, name, shown) {
        Ok(fd) => fd,
        Err(SafeFsError::Sys { errno: Errno::ENOENT, .. }) => return Ok(None),
        Err(SafeFsError::Symlink { .. }) => return Err(SyncDirError::Symlink { path: shown.to_path_buf() }),
        Err(SafeFsError::WrongKind { .. }) => return Err(SyncDirError::NotDirectory { path: shown.to_path_buf() }),
        Err(SafeFsError::Sys { errno, .. }) => return Err(SyncDirError::Sys { path: shown.to_path_buf(), errno }),
        Err(e) => return Err(SyncDirError::Fs(e)),
    };
    let meta = safe_fs::meta_of(&fd, shown).map_err(SyncDirError::Fs)?;
    if meta.kind != Kind::Dir {
        return Err(SyncDirError::NotDirectory { path: shown.to_path_buf() });
    }
    if meta.uid != account.uid && !(root_ok && meta.uid == 0) {
        return Err(SyncDirError::NotOwned {
            path: shown.to_path_buf(),
            user: account.name.clone(),
            uid: meta.uid,
            expected: account.uid,
        });
    }
    Ok(Some(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn account(home: &Path, uid: u32) -> Account {
        Account { name: "alice".into(), uid, gid: uid, home: home.to_path_buf() }
    }

    #[test]
    fn opt_in_and_unsafe_layouts_table() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let me = nix::unistd::geteuid().as_raw();
        let other = me.wrapping_add(4242);
        let root = tmp.path();
        type Prepare = Box<dyn Fn(&Path)>;
        let setup: Vec<(&str, Prepare, &str)> = vec![
            ("no-home", Box::new(|_: &Path| {}), "absent"),
            ("no-dir", Box::new(|h: &Path| std::fs::create_dir(h).expect("home")), "absent"),
            ("ok", Box::new(|h: &Path| std::fs::create_dir_all(h.join(DIR_NAME)).expect("dir")), "open"),
            (
                "link",
                Box::new(|h: &Path| {
                    std::fs::create_dir(h).expect("home");
                    symlink("/etc", h.join(DIR_NAME)).expect("symlink");
                }),
                "symlink",
            ),
            (
                "file",
                Box::new(|h: &Path| {
                    std::fs::create_dir(h).expect("home");
                    std::fs::write(h.join(DIR_NAME), "x").expect("file");
                }),
                "not a directory",
            ),
            (
                "foreign",
                Box::new(move |h: &Path| {
                    std::fs::create_dir_all(h.join(DIR_NAME)).expect("dir");
                    std::os::unix::fs::chown(h.join(DIR_NAME), Some(other), None).expect("chown");
                }),
                "owned by uid",
            ),
        ];
        for (name, prepare, expected) in setup {
            let home = root.join(name);
            prepare(&home);
            let got = match open_sync_dir(&account(&home, me)) {
                Ok(Some(_)) => "open".to_string(),
                Ok(None) => "absent".to_string(),
                Err(e) => e.to_string(),
            };
            assert!(got.contains(expected), "{name}: {got}");
        }
        // A home that is itself a symlink is refused, even to a good directory.
        symlink(root.join("ok"), root.join("home-link")).expect("symlink");
        let err = open_sync_dir(&account(&root.join("home-link"), me)).expect_err("symlinked home");
        assert!(matches!(err, SyncDirError::Symlink { .. }), "{err}");
        let err = open_sync_dir(&account(Path::new("relative"), me)).expect_err("relative home");
        assert!(matches!(err, SyncDirError::BadHome { .. }), "{err}");
    }
}
