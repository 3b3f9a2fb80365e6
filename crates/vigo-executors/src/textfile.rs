//! Shared machinery for executors that edit a text file in place
//! (`file_line`, `blockinfile`, `replace`, `ini`, `json_file`, `host`).
//!
//! An editor is a pure function from the current content (or `None` when the
//! file is absent) to the desired content; this module turns that into
//! check/apply with a unified diff and an atomic write that keeps the file's
//! owner and mode.

use std::path::Path;

use crate::executor::{Change, Check, Drift, ExecError};
use crate::safe_fs::{self, Attrs, Kind};

/// Largest text file the editors will load.
pub const MAX_TEXT: u64 = 64 * 1024 * 1024;

/// The current content of `path`: `None` when absent. Refuses symlinks and non-regular files.
pub fn read(path: &Path) -> Result<Option<String>, ExecError> {
    let (parent, name) = safe_fs::split(path)?;
    let dir = match safe_fs::open_dir(&parent) {
        Ok(d) => d,
        Err(safe_fs::SafeFsError::Sys { errno: nix::errno::Errno::ENOENT, .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(bytes) = safe_fs::read_at(&dir, &name, path, MAX_TEXT)? else { return Ok(None) };
    String::from_utf8(bytes).map(Some).map_err(|_| ExecError::failed(format!("{}: not UTF-8 text", path.display())))
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

/// Writes `content` to `path` atomically, keeping an existing file's owner and mode
/// (new files: root-owned unless `attrs` says otherwise, mode 0644).
pub fn write(path: &Path, content: &str, attrs: Attrs) -> Result<(), ExecError> {
    let (parent, name) = safe_fs::split(path)?;
    let dir = safe_fs::open_dir(&parent)?;
    let mut attrs = attrs;
    if let Some(meta) = safe_fs::stat_at(&dir, &name, path)?
        && meta.kind == Kind::File
    {
        attrs.uid = attrs.uid.or(Some(meta.uid));
        attrs.gid = attrs.gid.or(Some(meta.gid));
        attrs.mode = attrs.mode.or(Some(meta.mode));
    }
    safe_fs::write_at(&dir, &name, content.as_bytes(), attrs, path)?;
    Ok(())
}

/// Removes `path` (not following a symlink).
pub fn remove(path: &Path) -> Result<(), ExecError> {
    let (parent, name) = safe_fs::split(path)?;
    let dir = safe_fs::open_dir(&parent)?;
    safe_fs::remove_at(&dir, &name, path)?;
    Ok(())
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
    let current = read(path)?;
    match edit(current.as_deref())? {
        Some(new) if current.as_deref() != Some(new.as_str()) => write(path, &new, attrs),
        Some(_) => Ok(()),
        None if current.is_some() => remove(path),
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
