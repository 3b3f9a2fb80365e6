//! Shared machinery for executors that edit a text file in place
//! (`file_line`, `blockinfile`, `replace`, `ini`, `json_file`, `host`).
//!
//! An editor is a pure function from the current content (or `None` when the
//! file is absent) to the desired content; this module turns that into
//! check/apply with a unified diff and an atomic write that keeps the file's
//! owner and mode.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;

use crate::executor::{Change, Check, Drift, ExecError};
use crate::safe_fs::{self, Attrs, Kind};

/// Largest text file the editors will load.
pub const MAX_TEXT: u64 = 64 * 1024 * 1024;

/// Refuses a location that really lies in Vigo's own files, whatever path led there.
fn guard_resolved(resolved: &Path, path: &Path) -> Result<(), ExecError> {
    match vigo_model::guard::refuse(&vigo_model::catalog::Target::Path(resolved.to_path_buf())) {
        Some(why) => Err(ExecError::failed(format!("{}: resolves to {}: {why}", path.display(), resolved.display()))),
        None => Ok(()),
    }
}

/// Opens the directory that holds `path` through the path walker ([`safe_fs::walk_dir`]:
/// symlinks followed only where root alone could have placed them); a missing one is an
/// error naming it. The guardrail is checked on where the path really leads.
pub(crate) fn open_parent(parent: &Path, path: &Path) -> Result<OwnedFd, ExecError> {
    match open_parent_if_exists(parent, path)? {
        Some(dir) => Ok(dir),
        None => Err(ExecError::failed(format!(
            "{}: parent directory {} does not exist or is not a directory",
            path.display(),
            parent.display()
        ))),
    }
}

/// Like [`open_parent`]; `None` when the directory does not exist (then nothing below it
/// exists either).
pub(crate) fn open_parent_if_exists(parent: &Path, path: &Path) -> Result<Option<OwnedFd>, ExecError> {
    match safe_fs::walk_dir(parent) {
        Ok((dir, resolved)) => {
            guard_resolved(&resolved.join(path.file_name().unwrap_or_default()), path)?;
            Ok(Some(dir))
        }
        Err(safe_fs::SafeFsError::Sys { errno: Errno::ENOENT | Errno::ENOTDIR, .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A text file's directory, opened once: the editors read and write through this one
/// handle, so the path is resolved a single time per check or apply.
pub struct Opened {
    dir: Option<OwnedFd>,
    name: String,
}

impl Opened {
    /// Opens the directory holding `path` (absent directory: the file is absent too).
    pub fn new(path: &Path) -> Result<Self, ExecError> {
        let (parent, name) = safe_fs::split(path)?;
        Ok(Opened { dir: open_parent_if_exists(&parent, path)?, name })
    }

    /// The current content: `None` when absent. Refuses symlinks and non-regular files.
    pub fn read(&self, path: &Path) -> Result<Option<String>, ExecError> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let Some(bytes) = safe_fs::read_at(dir, &self.name, path, MAX_TEXT)? else { return Ok(None) };
        String::from_utf8(bytes).map(Some).map_err(|_| ExecError::failed(format!("{}: not UTF-8 text", path.display())))
    }

    fn dir(&self, path: &Path) -> Result<&OwnedFd, ExecError> {
        self.dir
            .as_ref()
            .ok_or_else(|| ExecError::failed(format!("{}: parent directory does not exist", path.display())))
    }

    /// Writes `content` atomically in the opened directory, keeping an existing file's
    /// owner and mode (new files: root-owned unless `attrs` says otherwise, mode 0644).
    pub fn write(&self, path: &Path, content: &str, attrs: Attrs) -> Result<(), ExecError> {
        let dir = self.dir(path)?;
        let mut attrs = attrs;
        if let Some(meta) = safe_fs::stat_at(dir, &self.name, path)?
            && meta.kind == Kind::File
        {
            attrs.uid = attrs.uid.or(Some(meta.uid));
            attrs.gid = attrs.gid.or(Some(meta.gid));
            attrs.mode = attrs.mode.or(Some(meta.mode));
        }
        safe_fs::write_at(dir, &self.name, content.as_bytes(), attrs, path)?;
        Ok(())
    }

    /// Removes the file (not following a symlink).
    pub fn remove(&self, path: &Path) -> Result<(), ExecError> {
        safe_fs::remove_at(self.dir(path)?, &self.name, path)?;
        Ok(())
    }
}

/// The current content of `path`: `None` when absent. Refuses symlinks and non-regular files.
pub fn read(path: &Path) -> Result<Option<String>, ExecError> {
    Opened::new(path)?.read(path)
}

/// A unified diff between two texts, labelled with the path.
pub fn diff(path: &Path, old: &str, new: &str) -> String {
    let shown = path.display().to_string();
    similar::TextDiff::from_lines(old, new).unified_diff().context_radius(3).header(&shown, &shown).to_string()
}

/// Compares current and desired content; the drift carries a `content` change and a diff.
/// `desired == None` means the file should not exist.
pub fn compare(path: &Path, current: Option<&str>, desired: Option<&str>) -> Check {
    match (current, desired) {
        (a, b) if a == b => Check::InSync,
        (None, Some(new)) => Check::Drift(Drift {
            changes: vec![Change::set("ensure", "absent", "present")],
            diff: Some(diff(path, "", new)),
        }),
        (Some(_), None) => Check::Drift(Drift::one(Change::set("ensure", "present", "absent"))),
        (Some(old), Some(new)) => Check::Drift(Drift {
            changes: vec![Change::new("content", Some(digest(old)), Some(digest(new)))],
            diff: Some(diff(path, old, new)),
        }),
        (None, None) => Check::InSync,
    }
}

/// A short content fingerprint for change records (the diff carries the detail).
pub fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(text.as_bytes());
    format!("sha256:{}", hex(&hash[..8]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `content` to `path` atomically, keeping an existing file's owner and mode.
pub fn write(path: &Path, content: &str, attrs: Attrs) -> Result<(), ExecError> {
    Opened::new(path)?.write(path, content, attrs)
}

/// The whole check of an in-place editor: read, transform, compare.
pub fn check_edit(
    path: &Path,
    edit: impl FnOnce(Option<&str>) -> Result<Option<String>, ExecError>,
) -> Result<Check, ExecError> {
    let current = read(path)?;
    let desired = edit(current.as_deref())?;
    Ok(compare(path, current.as_deref(), desired.as_deref()))
}

/// The whole apply of an in-place editor: read, transform, write (or remove).
pub fn apply_edit(
    path: &Path,
    attrs: Attrs,
    edit: impl FnOnce(Option<&str>) -> Result<Option<String>, ExecError>,
) -> Result<(), ExecError> {
    let opened = Opened::new(path)?;
    let current = opened.read(path)?;
    match edit(current.as_deref())? {
        Some(new) if current.as_deref() != Some(new.as_str()) => opened.write(path, &new, attrs),
        Some(_) => Ok(()),
        None if current.is_some() => opened.remove(path),
        None => Ok(()),
    }
}

/// The `targets`, `lint`, `check` and `apply` of an in-place text editor, for use
/// inside its `impl Executor`. The type's module provides `edit(current, spec)`
/// (the pure transform) and `problems(spec)` (its lints), and its spec a `path`.
#[macro_export]
macro_rules! text_editor_methods {
    () => {
        fn targets(spec: &Self::Spec) -> Vec<vigo_model::catalog::Target> {
            vec![vigo_model::catalog::Target::Path(spec.path.clone())]
        }

        fn lint(spec: &Self::Spec, _common: vigo_model::catalog::Common<'_>) -> Vec<vigo_model::catalog::Lint> {
            problems(spec)
        }

        fn check(spec: &Self::Spec, _ctx: &$crate::Ctx<'_>) -> Result<$crate::Check, $crate::ExecError> {
            $crate::textfile::check_edit(&spec.path, |current| edit(current, spec))
        }

        fn apply(
            spec: &Self::Spec,
            _drift: &$crate::Drift,
            _ctx: &$crate::Ctx<'_>,
        ) -> Result<$crate::Applied, $crate::ExecError> {
            $crate::textfile::apply_edit(&spec.path, $crate::safe_fs::Attrs::default(), |current| edit(current, spec))?;
            Ok($crate::Applied::default())
        }
    };
}
