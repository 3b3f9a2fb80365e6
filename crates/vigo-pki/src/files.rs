//! The few file operations this crate performs: atomic writes with an exact
//! mode, and reads of secret files that refuse loose permissions.
//!
//! Keys are written to a temporary file in the same directory, fsynced, renamed
//! over the target and the directory fsynced, so a crash leaves either the old
//! key or the new one, never a torn file.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of files holding private keys.
pub(crate) const PRIVATE_MODE: u32 = 0o600;
/// Mode of files holding certificates, which are public.
pub(crate) const PUBLIC_MODE: u32 = 0o644;
/// Mode of directories created to hold key material.
const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("refusing to load {path}: mode {mode:04o} lets group or others access a private key (run chmod 600)")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("refusing to load {path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is not valid UTF-8 text")]
    NotText { path: PathBuf },
}

/// Creates `dir` (and parents) if missing; new directories get mode 0700.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), FileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| FileError::CreateDir { path: dir.to_path_buf(), source })
}

/// Replaces `path` with `bytes` atomically; the file ends with exactly `mode`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let write_err = |source| FileError::Write { path: path.to_path_buf(), source };
    let name = path
        .file_name()
        .ok_or_else(|| write_err(io::Error::new(io::ErrorKind::InvalidInput, "path has no file name")))?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let suffix = crate::hex_lower(&crate::random_bytes::<6>());
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{suffix}"));
    let temp = dir.join(temp_name);

    let result = write_temp(&temp, bytes, mode)
        .and_then(|()| fs::rename(&temp, path))
        .and_then(|()| File::open(dir)?.sync_all());
    if result.is_err() {
        // The temp file is ours and never reachable under the real name; a
        // failure to remove it only leaves litter behind.
        let _ = fs::remove_file(&temp);
    }
    result.map_err(write_err)
}

fn write_temp(temp: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    // create_new refuses an existing file or symlink at the temp name; the
    // initial mode is private so the content is never exposed before fchmod.
    let mut file = OpenOptions::new().write(true).create_new(true).mode(PRIVATE_MODE).open(temp)?;
    // fchmod on the open handle: the umask must not decide the final mode.
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads a file holding a private key, refusing one that group or others can
/// access. The mode is taken from the open handle, so it is the mode of the
/// very file whose content is returned.
pub(crate) fn read_private(path: &Path) -> Result<String, FileError> {
    let read_err = |source| FileError::Read { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(FileError::NotAFile { path: path.to_path_buf() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileError::TooOpen { path: path.to_path_buf(), mode });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_err)?;
    String::from_utf8(bytes).map_err(|_| FileError::NotText { path: path.to_path_buf() })
}

/// Reads a file holding public material such as a certificate.
pub(crate) fn read_public(path: &Path) -> Result<String, FileError> {
    let bytes = fs::read(path).map_err(|source| FileError::Read { path: path.to_path_buf(), source })?;
    String::from_utf8(bytes).map_err(|_| FileError::NotText { path: path.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("file exists").permissions().mode() & 0o7777
    }

    #[test]
    fn write_atomic_sets_exact_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"one", PRIVATE_MODE).expect("first write");
        assert_eq!(mode_of(&path), 0o600);
        write_atomic(&path, b"two", PUBLIC_MODE).expect("second write");
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")], "no temp file left");
    }

    #[test]
    fn read_private_refuses_group_or_world_access() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"secret", PRIVATE_MODE).expect("write");
        assert_eq!(read_private(&path).expect("0600 is fine"), "secret");
        for mode in [0o640, 0o604, 0o620, 0o660] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).expect("chmod");
            match read_private(&path) {
                Err(FileError::TooOpen { mode: seen, path: p }) => {
                    assert_eq!(seen, mode);
                    assert_eq!(p, path);
                }
                other => panic!("mode {mode:o} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn read_private_refuses_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("d");
        ensure_dir(&sub).expect("mkdir");
        assert_eq!(mode_of(&sub), 0o700);
        assert!(matches!(read_private(&sub), Err(FileError::NotAFile { .. })));
    }
}
