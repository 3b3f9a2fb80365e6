//! `symlink`: a symbolic link and what it points to, or its absence.
//!
//! A wrong link is replaced atomically (new link under a temp name, renamed over
//! the old one). A regular file at the path is replaced only with `force: true`;
//! a directory never is. `owner`/`group` apply to the link itself (`lchown`),
//! never to what it points to.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use serde::Deserialize;
use vigo_model::catalog::{Common, Lint, Target};

use crate::executor::{Applied, Change, Check, Ctx, Drift, ExecError, Executor};
use crate::safe_fs::{self, Kind, Meta};
use crate::types::file::{AbsPath, Ensure, WantAttrs, kind_name, open_parent, open_parent_if_exists};

/// Manages one symbolic link.
pub struct Symlink;

/// Fields of a `symlink` resource.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    /// Absolute path of the link.
    pub path: AbsPath,
    /// What the link points to, stored as written: absolute, or relative to the link's
    /// directory. Required with `ensure: present`.
    pub target: Option<String>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub ensure: Ensure,
    /// Replace (or, with `ensure: absent`, remove) a regular file at `path`. A directory is never replaced.
    #[serde(default)]
    pub force: bool,
    /// Owning user of the link itself, as a name or a numeric uid.
    pub owner: Option<String>,
    /// Owning group of the link itself, as a name or a numeric gid.
    pub group: Option<String>,
}

impl Executor for Symlink {
    type Spec = SymlinkSpec;

    const NAME: &'static str = "symlink";
    const SUMMARY: &'static str = "A symbolic link and what it points to";
    const EXAMPLE: &'static str = r#"- name: Enable the site
  type: symlink
  path: /etc/nginx/sites-enabled/app.conf
  target: ../sites-available/app.conf
- name: Current release
  type: symlink
  path: /srv/app/current
  target: /srv/app/releases/2024-06-01
  owner: deploy
  force: true
- name: Default site disabled
  type: symlink
  path: /etc/nginx/sites-enabled/default
  ensure: absent
"#;

    fn targets(spec: &SymlinkSpec) -> Vec<Target> {
        vec![Target::Path(spec.path.to_path_buf())]
    }

    fn lint(spec: &SymlinkSpec, _common: Common<'_>) -> Vec<Lint> {
        let problem = match (&spec.ensure, spec.target.as_deref()) {
            (Ensure::Present, None) => "a symlink with `ensure: present` needs `target`",
            (Ensure::Present, Some("")) => "`target` is empty",
            (Ensure::Present, Some(t)) if t.contains('\0') => "`target` contains a NUL byte",
            _ => return Vec::new(),
        };
        vec![Lint {
            field: Some("target".into()),
            message: problem.into(),
            hint: Some("set `target:` to the path the link should point to".into()),
        }]
    }

    fn check(spec: &SymlinkSpec, _ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        let (changes, _) = plan(spec)?;
        Ok(Check::from_changes(changes, None))
    }

    fn apply(spec: &SymlinkSpec, _drift: &Drift, _ctx: &Ctx<'_>) -> Result<Applied, ExecError> {
        // Re-plan against the host as it is now, so apply does exactly what a check reports.
        let (_, action) = plan(spec)?;
        let path = spec.path.as_path();
        match action {
            Action::Nothing => {}
            Action::Link { dir, name, target, want } => {
                let owner = want.ids(path)?;
                safe_fs::symlink_at(&dir, &name, &target, owner, path)?;
            }
            Action::Chown { dir, name, want, current } => {
                let (uid, gid) = want.ids(path)?;
                let uid = uid.filter(|u| *u != current.uid);
                let gid = gid.filter(|g| *g != current.gid);
                safe_fs::lchown_at(&dir, &name, uid, gid, path)?;
            }
            Action::Remove { dir, name } => safe_fs::remove_at(&dir, &name, path)?,
        }
        Ok(Applied::default())
    }
}

enum Action {
    Nothing,
    /// Create the link, atomically replacing a link or file at its name.
    Link {
        dir: OwnedFd,
        name: String,
        target: PathBuf,
        want: WantAttrs,
    },
    /// The link is right; only its owner differs.
    Chown {
        dir: OwnedFd,
        name: String,
        want: WantAttrs,
        current: Meta,
    },
    Remove {
        dir: OwnedFd,
        name: String,
    },
}

fn plan(spec: &SymlinkSpec) -> Result<(Vec<Change>, Action), ExecError> {
    match spec.ensure {
        Ensure::Present => plan_present(spec),
        Ensure::Absent => plan_absent(spec),
    }
}

fn plan_present(spec: &SymlinkSpec) -> Result<(Vec<Change>, Action), ExecError> {
    let path = spec.path.as_path();
    let target = match spec.target.as_deref() {
        Some(t) if !t.is_empty() && !t.contains('\0') => PathBuf::from(t),
        _ => return Err(ExecError::failed(format!("{}: `target` must be a non-empty path", path.display()))),
    };
    let (parent, name) = safe_fs::split(path)?;
    let dir = open_parent(&parent, path)?;
    let want = WantAttrs::resolve(spec.owner.as_deref(), spec.group.as_deref(), None)?;
    let link = |dir, name| Action::Link { dir, name, target: target.clone(), want: want.clone() };
    match safe_fs::stat_at(&dir, &name, path)? {
        None => Ok((vec![Change::set("ensure", "absent", "present")], link(dir, name))),
        Some(current) if current.kind == Kind::Symlink => {
            let old = safe_fs::read_link_at(&dir, &name, path)?.unwrap_or_default();
            if old != target {
                let change = Change::set("target", old.display().to_string(), target.display().to_string());
                // The new link gets the wanted owner, or root's: report what differs from now.
                let mut changes = vec![change];
                changes.extend(want.changes(&current));
                return Ok((changes, link(dir, name)));
            }
            let changes = want.changes(&current);
            let action = if changes.is_empty() { Action::Nothing } else { Action::Chown { dir, name, want, current } };
            Ok((changes, action))
        }
        Some(Meta { kind: Kind::Dir, .. }) => Err(ExecError::failed(format!(
            "{}: is a directory; refusing to replace it with a symlink (remove it with a `directory` resource first)",
            path.display()
        ))),
        Some(other) => {
            let kind = kind_name(other.kind);
            if !spec.force {
                return Err(ExecError::failed(format!(
                    "{}: is a {kind}, not a symlink; set `force: true` to replace it",
                    path.display()
                )));
            }
            Ok((vec![Change::set("type", kind, "symlink")], link(dir, name)))
        }
    }
}

fn plan_absent(spec: &SymlinkSpec) -> Result<(Vec<Change>, Action), ExecError> {
    let path = spec.path.as_path();
    let (parent, name) = safe_fs::split(path)?;
    let Some(dir) = open_parent_if_exists(&parent, path)? else { return Ok((Vec::new(), Action::Nothing)) };
    let from = match safe_fs::stat_at(&dir, &name, path)? {
        None => return Ok((Vec::new(), Action::Nothing)),
        Some(Meta { kind: Kind::Symlink, .. }) => "present",
        Some(Meta { kind: Kind::Dir, .. }) => {
            return Err(ExecError::failed(format!(
                "{}: is a directory, not a symlink; a symlink resource never removes directories",
                path.display()
            )));
        }
        Some(other) if spec.force => kind_name(other.kind),
        Some(other) => {
            return Err(ExecError::failed(format!(
                "{}: is a {}, not a symlink; set `force: true` to remove it",
                path.display(),
                kind_name(other.kind)
            )));
        }
    };
    Ok((vec![Change::set("ensure", from, "absent")], Action::Remove { dir, name }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{World, attributes, converge, spec};
    use crate::executor::Mode;
    use crate::types::file::tests::snapshot;
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::path::Path;

    fn read_target(path: &Path) -> PathBuf {
        std::fs::read_link(path).expect("readlink")
    }

    #[derive(Clone, Copy, Debug)]
    enum Initial {
        Absent,
        Correct,
        WrongTarget,
        WrongOwner,
        RegularFile,
    }

    fn set_up(initial: Initial, path: &Path, want: &Path, victim: &Path) {
        match initial {
            Initial::Absent => {}
            Initial::Correct => symlink(want, path).expect("symlink"),
            Initial::WrongTarget => symlink(victim, path).expect("symlink"),
            Initial::WrongOwner => {
                symlink(want, path).expect("symlink");
                std::os::unix::fs::lchown(path, Some(65534), None).expect("lchown");
            }
            Initial::RegularFile => std::fs::write(path, "file").expect("file"),
        }
    }

    fn victim_intact(victim: &Path, case: &str) {
        assert_eq!(std::fs::read_to_string(victim).expect("victim"), "victim", "{case}");
        assert_eq!(std::fs::symlink_metadata(victim).expect("lstat").uid(), 0, "{case}: victim chowned");
    }

    #[test]
    fn conformance() {
        use Initial::*;
        let table: &[(Initial, &str, &str, &[&str])] = &[
            (Absent, "present", "", &["ensure"]),
            (Correct, "present", "", &[]),
            (WrongTarget, "present", "", &["target"]),
            (WrongOwner, "present", "", &["owner"]),
            (RegularFile, "present", "force: true", &["type"]),
            (Absent, "absent", "", &[]),
            (Correct, "absent", "", &["ensure"]),
            (WrongTarget, "absent", "", &["ensure"]),
            (RegularFile, "absent", "force: true", &["ensure"]),
        ];
        for (initial, ensure, extra, expected) in table {
            let case = format!("{initial:?}/{ensure}");
            let tmp = tempfile::tempdir().expect("tempdir");
            let victim = tmp.path().join("victim");
            std::fs::write(&victim, "victim").expect("victim");
            let want = tmp.path().join("wanted");
            let path = tmp.path().join("link");
            set_up(*initial, &path, &want, &victim);
            let yaml =
                format!("path: {}\ntarget: {}\nensure: {ensure}\nowner: root\n{extra}", path.display(), want.display());
            let drift = converge::<Symlink>(&World::default(), &spec::<Symlink>(&yaml), || snapshot(tmp.path()));
            assert_eq!(attributes(&drift), *expected, "{case}");
            if *ensure == "present" {
                assert_eq!(read_target(&path), want, "{case}");
                assert_eq!(std::fs::symlink_metadata(&path).expect("lstat").uid(), 0, "{case}");
            } else {
                assert!(std::fs::symlink_metadata(&path).is_err(), "{case}: still there");
            }
            victim_intact(&victim, &case);
        }
    }

    #[test]
    fn owner_applies_to_the_link_not_its_destination() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "victim").expect("victim");
        let path = tmp.path().join("link");
        symlink("victim", &path).expect("symlink");
        let yaml = format!("path: {}\ntarget: victim\nowner: \"65534\"\ngroup: \"65534\"", path.display());
        let drift = converge::<Symlink>(&World::default(), &spec::<Symlink>(&yaml), || snapshot(tmp.path()));
        assert_eq!(attributes(&drift), ["owner", "group"]);
        let link = std::fs::symlink_metadata(&path).expect("lstat");
        assert_eq!((link.uid(), link.gid()), (65534, 65534));
        victim_intact(&victim, "lchown");
        assert_eq!(read_target(&path), Path::new("victim"), "relative target kept as written");
    }

    #[test]
    fn refusals() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let world = World::default();
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).expect("dir");
        let file = tmp.path().join("file");
        std::fs::write(&file, "data").expect("file");
        let cases = [
            (format!("path: {}\ntarget: /x\nforce: true", dir.display()), "is a directory"),
            (format!("path: {}\nensure: absent\nforce: true", dir.display()), "is a directory"),
            (format!("path: {}\ntarget: /x", file.display()), "set `force: true` to replace it"),
            (format!("path: {}\nensure: absent", file.display()), "set `force: true` to remove it"),
            (format!("path: {}/missing/link\ntarget: /x", tmp.path().display()), "does not exist"),
            (format!("path: {}/new", tmp.path().display()), "`target` must be a non-empty path"),
        ];
        for (yaml, message) in cases {
            let before = snapshot(tmp.path());
            let err = Symlink::check(&spec::<Symlink>(&yaml), &world.ctx(Mode::Enforce)).expect_err(&yaml);
            assert!(err.to_string().contains(message), "{yaml}: {err}");
            assert_eq!(snapshot(tmp.path()), before);
        }
        assert_eq!(std::fs::read_to_string(&file).expect("file"), "data");
    }

    #[test]
    fn lints_and_targets() {
        let common = Common { name: "l", when: None };
        let missing = spec::<Symlink>("path: /etc/x");
        assert_eq!(Symlink::lint(&missing, common).first().and_then(|l| l.field.as_deref()), Some("target"));
        assert!(Symlink::lint(&spec::<Symlink>("path: /etc/x\nensure: absent"), common).is_empty());
        assert!(Symlink::lint(&spec::<Symlink>("path: /etc/x\ntarget: other"), common).is_empty());
        assert_eq!(Symlink::targets(&missing), [Target::Path("/etc/x".into())]);
    }
}
