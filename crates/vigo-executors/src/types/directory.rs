//! `directory`: a directory's existence, owner, group and mode, optionally
//! applied to everything below it (`recurse`).
//!
//! With `recurse`, `owner`/`group` apply to every directory and regular file
//! below, `mode` to the directories and `file_mode` to the regular files (one mode
//! for both would make files executable or directories unreadable). Symlinks,
//! devices, FIFOs and sockets below are skipped and never followed. A regular file
//! with more than one hard link is never changed by the walk (its other name may be
//! outside the tree, say `/etc/shadow`): it is named in the resource's warnings. Removing a
//! non-empty directory, or replacing a file or symlink with a directory, needs
//! `force: true`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vigo_model::catalog::{Common, Lint, Target};

use crate::executor::{Applied, Change, Check, Ctx, Drift, ExecError, Executor};
use crate::safe_fs::{self, Kind, Meta};
use crate::types::file::{
    AbsPath, Account, Ensure, FileMode, WantAttrs, kind_name, open_parent, open_parent_if_exists, show_mode,
};

/// Manages one directory.
pub struct Directory;

/// Mode of directories created without `mode:`.
const DEFAULT_MODE: u32 = 0o755;

/// Fields of a `directory` resource.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    /// Absolute path of the directory.
    pub path: AbsPath,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub ensure: Ensure,
    /// Owning user, as a name or a numeric uid.
    pub owner: Option<String>,
    /// Owning group, as a name or a numeric gid.
    pub group: Option<String>,
    /// Permission bits as a quoted octal string, e.g. `"0755"` (the default for new directories).
    /// With `recurse`, also applied to every directory below.
    pub mode: Option<FileMode>,
    /// Apply `owner` and `group` to every directory and regular file below, `mode` to the
    /// directories below and `file_mode` to the regular files below. Symlinks are never followed,
    /// and a regular file with more than one hard link is left alone and named in the warnings.
    #[serde(default)]
    pub recurse: bool,
    /// With `recurse`: permission bits for the regular files below, e.g. `"0644"`. Unset leaves them alone.
    pub file_mode: Option<FileMode>,
    /// Allow destructive changes: remove a non-empty directory with everything below it on
    /// `ensure: absent`, and replace a file or symlink at `path`.
    #[serde(default)]
    pub force: bool,
}

impl Executor for Directory {
    type Spec = DirectorySpec;

    const NAME: &'static str = "directory";
    const SUMMARY: &'static str = "A directory: existence, owner, group, mode, optionally applied recursively";
    const EXAMPLE: &'static str = r#"- name: Application data
  type: directory
  path: /srv/app/data
  owner: www-data
  group: www-data
  mode: "0750"
- name: Shared web root
  type: directory
  path: /srv/www
  owner: root
  group: www-data
  mode: "2775"
  recurse: true
  file_mode: "0664"
- name: Old cache
  type: directory
  path: /var/cache/legacy-app
  ensure: absent
  force: true
"#;

    fn targets(spec: &DirectorySpec) -> Vec<Target> {
        vec![Target::Path(spec.path.to_path_buf())]
    }

    fn lint(spec: &DirectorySpec, _common: Common<'_>) -> Vec<Lint> {
        let mut lints = Vec::new();
        if spec.file_mode.is_some() && !spec.recurse {
            lints.push(Lint {
                field: Some("file_mode".into()),
                message: "`file_mode` only applies with `recurse: true`".into(),
                hint: Some("add `recurse: true`, or remove `file_mode:`".into()),
            });
        }
        if spec.ensure == Ensure::Absent && spec.recurse {
            lints.push(Lint {
                field: Some("recurse".into()),
                message: "`recurse` has no effect with `ensure: absent`".into(),
                hint: Some("to remove a directory with everything below it, use `force: true`".into()),
            });
        }
        lints
    }

    fn check(spec: &DirectorySpec, ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        let (changes, _, linked) = plan(spec)?;
        warn_linked(ctx, spec.path.as_path(), &linked);
        Ok(Check::from_changes(changes, None))
    }

    fn apply(spec: &DirectorySpec, _drift: &Drift, ctx: &Ctx<'_>) -> Result<Applied, ExecError> {
        // Re-plan against the host as it is now, so apply does exactly what a check reports.
        let (_, action, linked) = plan(spec)?;
        let path = spec.path.as_path();
        warn_linked(ctx, path, &linked);
        match action {
            Action::Nothing => {}
            Action::Create { dir, name, replace, want } => {
                if replace {
                    safe_fs::remove_at(&dir, &name, path)?;
                }
                let (uid, gid) = want.ids(path)?;
                // Created private, then opened without following links and given its final
                // owner and mode: there is never a moment with wider permissions than asked.
                safe_fs::mkdir_at(&dir, &name, 0o700, path)?;
                let created = safe_fs::open_subdir(&dir, &name, path)?;
                safe_fs::set_attrs(&created, uid, gid, Some(want.mode.unwrap_or(DEFAULT_MODE)), path)?;
            }
            Action::Remove { dir, name, tree } => {
                if tree {
                    safe_fs::remove_tree_at(&dir, &name, path)?;
                } else {
                    safe_fs::rmdir_at(&dir, &name, path)?;
                }
            }
            Action::Update { dir, name, current, want, below } => {
                want.apply_to(&dir, &name, &current, Kind::Dir, path)?;
                if let Some(below) = below {
                    let top = safe_fs::open_subdir(&dir, &name, path)?;
                    let mut tally = Tally::default();
                    walk(&top, path, &below, Walk::Fix, &mut tally, 0)?;
                    // Links made since the plan looked: left alone just the same.
                    warn_linked(ctx, path, &tally.linked);
                }
            }
        }
        Ok(Applied::default())
    }
}

enum Action {
    Nothing,
    /// Make the directory; `replace` first removes the file or symlink at its name.
    Create {
        dir: OwnedFd,
        name: String,
        replace: bool,
        want: WantAttrs,
    },
    /// Remove the directory; `tree` removes everything below it too.
    Remove {
        dir: OwnedFd,
        name: String,
        tree: bool,
    },
    /// Fix the existing directory's attributes, and those below it when recursing.
    Update {
        dir: OwnedFd,
        name: String,
        current: Meta,
        want: WantAttrs,
        below: Option<Below>,
    },
}

/// What `recurse` applies below the directory.
struct Below {
    dirs: WantAttrs,
    files: WantAttrs,
}

/// The changes, the action, and the files below with several links whose attributes
/// differ (left alone; see [`warn_linked`]).
fn plan(spec: &DirectorySpec) -> Result<(Vec<Change>, Action, Vec<Linked>), ExecError> {
    match spec.ensure {
        Ensure::Present => plan_present(spec),
        Ensure::Absent => plan_absent(spec).map(|(changes, action)| (changes, action, Vec::new())),
    }
}

/// A regular file below the directory with more than one link: its path relative to the
/// directory and its link count.
type Linked = (PathBuf, u64);

/// Most hard-linked files named one by one in a resource's warnings; the rest are counted.
const SHOWN_LINKED: usize = 20;

/// One warning per hard-linked file left alone (the first [`SHOWN_LINKED`]), then a count.
fn warn_linked(ctx: &Ctx<'_>, top: &Path, linked: &[Linked]) {
    for (rel, links) in linked.iter().take(SHOWN_LINKED) {
        ctx.warn(format!(
            "{}: has {links} hard links; owner, group and mode left alone (a recursive walk never changes a file that may also live outside the tree)",
            top.join(rel).display()
        ));
    }
    if linked.len() > SHOWN_LINKED {
        ctx.warn(format!(
            "{}: {} more files with several hard links left alone",
            top.display(),
            linked.len() - SHOWN_LINKED
        ));
    }
}

fn plan_present(spec: &DirectorySpec) -> Result<(Vec<Change>, Action, Vec<Linked>), ExecError> {
    let path = spec.path.as_path();
    let (parent, name) = safe_fs::split(path)?;
    let dir = open_parent(&parent, path)?;
    let want = WantAttrs::resolve(spec.owner.as_deref(), spec.group.as_deref(), spec.mode)?;
    match safe_fs::stat_at(&dir, &name, path)? {
        None => {
            let change = Change::set("ensure", "absent", "present");
            Ok((vec![change], Action::Create { dir, name, replace: false, want }, Vec::new()))
        }
        Some(current) if current.kind == Kind::Dir => {
            let mut changes = want.changes(&current);
            let mut linked = Vec::new();
            let below = if spec.recurse {
                let files = WantAttrs::resolve(spec.owner.as_deref(), spec.group.as_deref(), spec.file_mode)?;
                let below = Below { dirs: want.clone(), files };
                let top = safe_fs::open_subdir(&dir, &name, path)?;
                let mut tally = Tally::default();
                walk(&top, path, &below, Walk::Look, &mut tally, 0)?;
                changes.extend(tally.changes(&below));
                linked = tally.linked;
                Some(below)
            } else {
                None
            };
            Ok((changes, Action::Update { dir, name, current, want, below }, linked))
        }
        Some(other) => {
            let kind = kind_name(other.kind);
            if !spec.force {
                return Err(ExecError::failed(format!(
                    "{}: is a {kind}, not a directory; set `force: true` to replace it",
                    path.display()
                )));
            }
            let change = Change::set("type", kind, "directory");
            Ok((vec![change], Action::Create { dir, name, replace: true, want }, Vec::new()))
        }
    }
}

fn plan_absent(spec: &DirectorySpec) -> Result<(Vec<Change>, Action), ExecError> {
    let path = spec.path.as_path();
    let (parent, name) = safe_fs::split(path)?;
    let Some(dir) = open_parent_if_exists(&parent, path)? else { return Ok((Vec::new(), Action::Nothing)) };
    let Some(current) = safe_fs::stat_at(&dir, &name, path)? else { return Ok((Vec::new(), Action::Nothing)) };
    if current.kind != Kind::Dir {
        let kind = kind_name(current.kind);
        if !spec.force {
            return Err(ExecError::failed(format!(
                "{}: is a {kind}, not a directory; set `force: true` to remove it",
                path.display()
            )));
        }
        // A single name (a symlink is removed itself): the tree removal handles it.
        let change = Change::set("ensure", kind, "absent");
        return Ok((vec![change], Action::Remove { dir, name, tree: true }));
    }
    let entries = safe_fs::list_at(safe_fs::open_subdir(&dir, &name, path)?, path)?.len();
    if entries == 0 {
        return Ok((vec![Change::set("ensure", "present", "absent")], Action::Remove { dir, name, tree: false }));
    }
    if !spec.force {
        return Err(ExecError::failed(format!(
            "{}: directory is not empty ({}); set `force: true` to remove it with everything below",
            path.display(),
            count(entries)
        )));
    }
    let change = Change::set("ensure", format!("present ({})", count(entries)), "absent");
    Ok((vec![change], Action::Remove { dir, name, tree: true }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Only record what differs.
    Look,
    /// Record and fix.
    Fix,
}

/// Entries below the directory whose attributes differ, by attribute.
#[derive(Default)]
struct Tally {
    owner: Vec<PathBuf>,
    group: Vec<PathBuf>,
    mode: Vec<PathBuf>,
    file_mode: Vec<PathBuf>,
    /// Regular files with several links whose attributes differ: left alone.
    linked: Vec<Linked>,
}

/// Entries named in a change before the rest are only counted.
const SHOWN_ENTRIES: usize = 3;

impl Tally {
    fn record(&mut self, rel: &Path, changes: &[Change], is_dir: bool) {
        for change in changes {
            let list = match (change.attribute.as_str(), is_dir) {
                ("owner", _) => &mut self.owner,
                ("group", _) => &mut self.group,
                ("mode", true) => &mut self.mode,
                ("mode", false) => &mut self.file_mode,
                _ => continue,
            };
            list.push(rel.to_path_buf());
        }
    }

    /// One change per attribute: which entries (the first few, and how many) and the value they get.
    fn changes(&self, below: &Below) -> Vec<Change> {
        let owner = || match &below.dirs.owner {
            Some(Account::Id(uid)) => crate::accounts::user_name(*uid),
            Some(Account::Missing(name)) => name.clone(),
            None => String::new(),
        };
        let group = || match &below.dirs.group {
            Some(Account::Id(gid)) => crate::accounts::group_name(*gid),
            Some(Account::Missing(name)) => name.clone(),
            None => String::new(),
        };
        let mode = |m: Option<u32>| m.map(show_mode).unwrap_or_default();
        [
            ("recurse.owner", &self.owner, owner()),
            ("recurse.group", &self.group, group()),
            ("recurse.mode", &self.mode, mode(below.dirs.mode)),
            ("recurse.file_mode", &self.file_mode, mode(below.files.mode)),
        ]
        .into_iter()
        .filter(|(_, entries, _)| !entries.is_empty())
        .map(|(attribute, entries, to)| Change::set(attribute, summarize(entries), to))
        .collect()
    }
}

fn summarize(entries: &[PathBuf]) -> String {
    let shown: Vec<String> = entries.iter().take(SHOWN_ENTRIES).map(|p| p.display().to_string()).collect();
    let more = if entries.len() > SHOWN_ENTRIES { ", …" } else { "" };
    format!("{}: {}{more}", count(entries.len()), shown.join(", "))
}

fn count(entries: usize) -> String {
    if entries == 1 { "1 entry".into() } else { format!("{entries} entries") }
}

/// Visits everything below the open directory `top` (shown as `shown`), one handle per
/// level, never following a symlink; records what differs and, with `Walk::Fix`, fixes it.
fn walk(
    top: &OwnedFd,
    shown: &Path,
    below: &Below,
    mode: Walk,
    tally: &mut Tally,
    depth: usize,
) -> Result<(), ExecError> {
    if depth >= safe_fs::MAX_TREE_DEPTH {
        return Err(ExecError::failed(format!(
            "{}: more than {} directory levels deep; not recursing further",
            shown.display(),
            safe_fs::MAX_TREE_DEPTH
        )));
    }
    for name in safe_fs::list_at(top, shown)? {
        let path = shown.join(&name);
        let Some(meta) = safe_fs::stat_at(top, &name, &path)? else { continue };
        let want = match meta.kind {
            Kind::Dir => &below.dirs,
            Kind::File => &below.files,
            Kind::Symlink | Kind::Other => continue,
        };
        let changes = want.changes(&meta);
        let rel = PathBuf::from(&name);
        if changes.is_empty() {
            // Nothing to change here.
        } else if meta.kind == Kind::File && meta.nlink > 1 {
            // Its other name may be outside the tree: a chown here would be a chown there.
            tally.linked.push((rel, meta.nlink));
        } else {
            tally.record(&rel, &changes, meta.kind == Kind::Dir);
            if mode == Walk::Fix {
                let left = match meta.kind {
                    Kind::File => want.apply_to_sole_link(top, &name, &meta, &path)?,
                    _ => want.apply_to(top, &name, &meta, meta.kind, &path).map(|()| None)?,
                };
                if let Some(links) = left {
                    tally.linked.push((rel, links));
                }
            }
        }
        if meta.kind == Kind::Dir {
            let sub = safe_fs::open_subdir(top, &name, &path)?;
            let mut sub_tally = Tally::default();
            walk(&sub, &path, below, mode, &mut sub_tally, depth + 1)?;
            tally.absorb(&name, sub_tally);
        }
    }
    Ok(())
}

impl Tally {
    /// Adds a subdirectory's tally, with its entries made relative to this level.
    fn absorb(&mut self, name: &str, sub: Tally) {
        let prefix = |list: Vec<PathBuf>| list.into_iter().map(|p| Path::new(name).join(p));
        self.owner.extend(prefix(sub.owner));
        self.group.extend(prefix(sub.group));
        self.mode.extend(prefix(sub.mode));
        self.file_mode.extend(prefix(sub.file_mode));
        self.linked.extend(sub.linked.into_iter().map(|(p, n)| (Path::new(name).join(p), n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{World, attributes, converge, spec};
    use crate::executor::Mode;
    use crate::types::file::tests::snapshot;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn yaml(path: &Path, rest: &str) -> String {
        format!("path: {}\n{rest}", path.display())
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn lmeta(path: &Path) -> std::fs::Metadata {
        std::fs::symlink_metadata(path).expect("lstat")
    }

    #[derive(Clone, Copy, Debug)]
    enum Initial {
        Absent,
        WrongMode,
        WrongOwner,
        Correct,
        NonEmpty,
        FileAtPath,
        SymlinkToVictim,
    }

    /// Sets up `path` (in a tempdir that also holds `victim/keep`, a directory outside the managed path).
    fn set_up(initial: Initial, path: &Path, victim: &Path) {
        match initial {
            Initial::Absent => {}
            Initial::WrongMode => {
                std::fs::create_dir(path).expect("mkdir");
                chmod(path, 0o777);
            }
            Initial::WrongOwner => {
                std::fs::create_dir(path).expect("mkdir");
                chmod(path, 0o750);
                std::os::unix::fs::chown(path, Some(65534), None).expect("chown");
            }
            Initial::Correct => {
                std::fs::create_dir(path).expect("mkdir");
                chmod(path, 0o750);
            }
            Initial::NonEmpty => {
                std::fs::create_dir_all(path.join("sub")).expect("mkdir");
                chmod(path, 0o750);
                std::fs::write(path.join("sub/f"), "x").expect("file");
                symlink(victim, path.join("sub/escape")).expect("symlink");
            }
            Initial::FileAtPath => std::fs::write(path, "file").expect("file"),
            Initial::SymlinkToVictim => symlink(victim, path).expect("symlink"),
        }
    }

    fn victim(tmp: &Path) -> PathBuf {
        let victim = tmp.join("victim");
        std::fs::create_dir(&victim).expect("victim");
        std::fs::write(victim.join("keep"), "keep").expect("keep");
        chmod(&victim, 0o711);
        victim
    }

    fn victim_intact(victim: &Path, case: &str) {
        assert_eq!(std::fs::read_to_string(victim.join("keep")).expect("victim file"), "keep", "{case}");
        let meta = lmeta(victim);
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o711), "{case}: victim attributes changed");
    }

    #[test]
    fn conformance_present() {
        use Initial::*;
        let table: &[(Initial, &str, &[&str])] = &[
            (Absent, "", &["ensure"]),
            (WrongMode, "", &["mode"]),
            (WrongOwner, "", &["owner"]),
            (Correct, "", &[]),
            (NonEmpty, "", &[]),
            (FileAtPath, "force: true", &["type"]),
            (SymlinkToVictim, "force: true", &["type"]),
        ];
        for (initial, extra, expected) in table {
            let tmp = tempfile::tempdir().expect("tempdir");
            let victim = victim(tmp.path());
            let path = tmp.path().join("managed");
            set_up(*initial, &path, &victim);
            let spec = spec::<Directory>(&yaml(&path, &format!("owner: root\nmode: \"0750\"\n{extra}")));
            let drift = converge::<Directory>(&World::default(), &spec, || snapshot(tmp.path()));
            assert_eq!(attributes(&drift), *expected, "{initial:?}");
            let meta = lmeta(&path);
            assert!(meta.is_dir(), "{initial:?}");
            assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o750), "{initial:?}");
            victim_intact(&victim, &format!("{initial:?}"));
        }
    }

    #[test]
    fn conformance_absent() {
        use Initial::*;
        let table: &[(Initial, &str, &[&str])] = &[
            (Absent, "", &[]),
            (WrongMode, "", &["ensure"]),
            (Correct, "", &["ensure"]),
            (NonEmpty, "force: true", &["ensure"]),
            (FileAtPath, "force: true", &["ensure"]),
            (SymlinkToVictim, "force: true", &["ensure"]),
        ];
        for (initial, extra, expected) in table {
            let tmp = tempfile::tempdir().expect("tempdir");
            let victim = victim(tmp.path());
            let path = tmp.path().join("managed");
            set_up(*initial, &path, &victim);
            let spec = spec::<Directory>(&yaml(&path, &format!("ensure: absent\n{extra}")));
            let drift = converge::<Directory>(&World::default(), &spec, || snapshot(tmp.path()));
            assert_eq!(attributes(&drift), *expected, "{initial:?}");
            assert!(std::fs::symlink_metadata(&path).is_err(), "{initial:?}: still there");
            victim_intact(&victim, &format!("{initial:?}"));
        }
    }

    #[test]
    fn destructive_changes_need_force() {
        use Initial::*;
        for (initial, ensure, message) in [
            (NonEmpty, "absent", "not empty (1 entry); set `force: true`"),
            (FileAtPath, "absent", "is a file, not a directory; set `force: true`"),
            (FileAtPath, "present", "is a file, not a directory; set `force: true`"),
            (SymlinkToVictim, "present", "is a symlink, not a directory; set `force: true`"),
        ] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let victim = victim(tmp.path());
            let path = tmp.path().join("managed");
            set_up(initial, &path, &victim);
            let before = snapshot(tmp.path());
            let spec = spec::<Directory>(&yaml(&path, &format!("ensure: {ensure}")));
            let err = Directory::check(&spec, &World::default().ctx(Mode::Enforce)).expect_err("needs force");
            assert!(err.to_string().contains(message), "{initial:?}/{ensure}: {err}");
            assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
            assert_eq!(snapshot(tmp.path()), before);
        }
    }

    #[test]
    fn recurse_applies_owner_group_and_modes_below_without_following_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = victim(tmp.path());
        let top = tmp.path().join("tree");
        std::fs::create_dir_all(top.join("a/b")).expect("dirs");
        std::fs::write(top.join("a/f1"), "1").expect("f1");
        std::fs::write(top.join("a/b/f2"), "2").expect("f2");
        symlink(&victim, top.join("a/escape")).expect("dir link");
        symlink(victim.join("keep"), top.join("a/b/file-escape")).expect("file link");
        let spec = spec::<Directory>(&yaml(
            &top,
            "owner: \"65534\"\ngroup: \"65534\"\nmode: \"0750\"\nrecurse: true\nfile_mode: \"0640\"",
        ));
        let drift = converge::<Directory>(&World::default(), &spec, || snapshot(tmp.path())).expect("drift");
        let names: Vec<&str> = drift.changes.iter().map(|c| c.attribute.as_str()).collect();
        assert_eq!(
            names,
            ["owner", "group", "mode", "recurse.owner", "recurse.group", "recurse.mode", "recurse.file_mode"]
        );
        let owner_below = &drift.changes[3];
        assert_eq!(owner_below.from.as_deref(), Some("4 entries: a, a/b, a/b/f2, …"));
        assert_eq!(drift.changes[6].from.as_deref(), Some("2 entries: a/b/f2, a/f1"));
        for (rel, mode) in [("", 0o750), ("a", 0o750), ("a/b", 0o750), ("a/f1", 0o640), ("a/b/f2", 0o640)] {
            let meta = lmeta(&top.join(rel));
            assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (65534, 65534, mode), "{rel}");
        }
        for link in ["a/escape", "a/b/file-escape"] {
            assert_eq!(lmeta(&top.join(link)).uid(), 0, "{link}: link itself touched");
        }
        victim_intact(&victim, "recurse");
        assert_eq!(lmeta(&victim.join("keep")).uid(), 0);
    }

    #[test]
    fn recurse_without_file_mode_leaves_file_modes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().join("tree");
        std::fs::create_dir(&top).expect("dir");
        std::fs::write(top.join("script"), "#!/bin/sh\n").expect("file");
        chmod(&top.join("script"), 0o755);
        let spec = spec::<Directory>(&yaml(&top, "mode: \"0700\"\nrecurse: true"));
        let drift = converge::<Directory>(&World::default(), &spec, || snapshot(tmp.path()));
        assert_eq!(attributes(&drift), ["mode"]);
        assert_eq!(lmeta(&top.join("script")).mode() & 0o7777, 0o755);
    }

    #[test]
    fn new_directories_get_the_default_mode_despite_umask() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("new");
        let created = spec::<Directory>(&yaml(&path, "group: \"65534\""));
        converge::<Directory>(&World::default(), &created, || snapshot(tmp.path())).expect("drift");
        let meta = lmeta(&path);
        assert_eq!((meta.gid(), meta.mode() & 0o7777), (65534, DEFAULT_MODE));
        let orphan = tmp.path().join("missing/new");
        let err = Directory::check(&spec::<Directory>(&yaml(&orphan, "")), &World::default().ctx(Mode::NoOp))
            .expect_err("parent");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn lints_and_targets() {
        let common = Common { name: "d", when: None };
        let loose = spec::<Directory>("path: /srv/x\nfile_mode: \"0644\"");
        assert_eq!(Directory::lint(&loose, common).first().and_then(|l| l.field.as_deref()), Some("file_mode"));
        assert!(
            Directory::lint(&spec::<Directory>("path: /srv/x\nrecurse: true\nfile_mode: \"0644\""), common).is_empty()
        );
        assert_eq!(Directory::targets(&loose), [Target::Path("/srv/x".into())]);
    }
}
