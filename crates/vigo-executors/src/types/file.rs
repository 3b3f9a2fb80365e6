//! `file`: a regular file's content, owner, group and mode, or its absence.
//!
//! Content comes inline (`content:`) or from a template (`source:`); without
//! either only the attributes are managed and a missing file is created empty.
//! Writes are atomic (temp file with its final owner and mode, then rename), and
//! a symlink at the target is replaced, never written through, unless
//! `follow: true`. The field types shared by the path-managing executors
//! (absolute paths, octal modes, `ensure`, owner/group/mode drift) live here too.

use std::borrow::Cow;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use vigo_model::catalog::{Common, Lint, Target};
use vigo_model::secret::REDACTED;

use crate::accounts;
use crate::executor::{Applied, Change, Check, Ctx, Drift, ExecError, Executor};
use crate::safe_fs::{self, Attrs, Kind, Meta, SafeFsError};
use crate::textfile;

/// Manages one regular file.
pub struct File;

/// Mode of a `sensitive` file whose spec has no `mode:`.
pub const SENSITIVE_MODE: u32 = 0o600;

/// Fields of a `file` resource.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path of the file.
    pub target_path: AbsPath,
    /// `present` (default) or `absent`. `absent` removes a file or a symlink, never a directory.
    #[serde(default)]
    pub ensure: Ensure,
    /// The exact content. Mutually exclusive with `source`.
    pub content: Option<String>,
    /// A template to render as the content, e.g. `templates/nginx.conf.tmpl`. Mutually exclusive with `content`.
    pub source: Option<String>,
    /// Owning user, as a name or a numeric uid.
    pub owner: Option<String>,
    /// Owning group, as a name or a numeric gid.
    pub group: Option<String>,
    /// Permission bits as a quoted octal string, e.g. `"0644"`. When unset, new files get
    /// 0644 and existing ones keep theirs, but a `sensitive` file (as any holding a secret)
    /// is made 0600.
    pub mode: Option<FileMode>,
    /// Manage the file a symlink at `target_path` points to, instead of replacing the link
    /// with a regular file (default false). `ensure: absent` always removes the link itself.
    #[serde(default)]
    pub follow: bool,
    /// Hide the content in reports and diffs (shown as `[redacted]`), e.g. for keys and passwords.
    /// Without `mode`, the file is also kept private to its owner (0600). Set automatically
    /// when a field holds a `secret:` reference.
    #[serde(default)]
    pub sensitive: bool,
}

impl Executor for File {
    type Spec = FileSpec;

    const NAME: &'static str = "file";
    const SUMMARY: &'static str = "A regular file: content (inline or from a template), owner, group, mode";
    const EXAMPLE: &'static str = r#"- name: Nginx config
  type: file
  target_path: /etc/nginx/nginx.conf
  source: templates/nginx.conf.tmpl
  owner: root
  group: root
  mode: "0644"
- name: Message of the day
  type: file
  target_path: /etc/motd
  content: |
    This host is managed by Vigo.
- name: Old cron job
  type: file
  target_path: /etc/cron.d/legacy
  ensure: absent
"#;

    fn targets(spec: &FileSpec) -> Vec<Target> {
        vec![Target::Path(spec.target_path.to_path_buf())]
    }

    fn lint(spec: &FileSpec, _common: Common<'_>) -> Vec<Lint> {
        let mut lints = Vec::new();
        if spec.content.is_some() && spec.source.is_some() {
            lints.push(Lint {
                field: Some("source".into()),
                message: "`content` and `source` are mutually exclusive".into(),
                hint: Some("keep `content:` for inline text or `source:` for a template, not both".into()),
            });
        }
        if spec.ensure == Ensure::Absent && (spec.content.is_some() || spec.source.is_some()) {
            lints.push(Lint {
                field: Some("ensure".into()),
                message: "a file with `ensure: absent` cannot have `content` or `source`".into(),
                hint: Some("remove `content:`/`source:`, or set `ensure: present`".into()),
            });
        }
        lints
    }

    fn templates(spec: &FileSpec) -> Vec<String> {
        spec.source.iter().cloned().collect()
    }

    fn check(spec: &FileSpec, ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        let plan = plan(spec, ctx)?;
        Ok(Check::from_changes(plan.changes, plan.diff))
    }

    fn apply(spec: &FileSpec, _drift: &Drift, ctx: &Ctx<'_>) -> Result<Applied, ExecError> {
        // Re-plan against the host as it is now: apply does exactly what a check would report.
        let plan = plan(spec, ctx)?;
        match plan.action {
            Action::Nothing => {}
            Action::Remove { dir, name } => safe_fs::remove_at(&dir, &name, &plan.path)?,
            Action::Write { dir, name, content, keep } => {
                let (uid, gid) = plan.want.ids(&plan.path)?;
                let attrs = Attrs {
                    uid: uid.or(keep.map(|m| m.uid)),
                    gid: gid.or(keep.map(|m| m.gid)),
                    mode: plan.want.mode.or(keep.map(|m| m.mode)),
                };
                safe_fs::write_at(&dir, &name, content.as_bytes(), attrs, &plan.path)?;
            }
            Action::Attrs { dir, name, current } => {
                plan.want.apply_to(&dir, &name, &current, Kind::File, &plan.path)?
            }
        }
        Ok(Applied::default())
    }
}

/// What `apply` will do, and what `check` reports for it.
struct Plan {
    /// The path acted on (the link's destination when following).
    path: PathBuf,
    changes: Vec<Change>,
    diff: Option<String>,
    want: WantAttrs,
    action: Action,
}

enum Action {
    Nothing,
    Remove {
        dir: OwnedFd,
        name: String,
    },
    /// Write `content`; `keep` is the replaced regular file, whose owner and mode stay unless set.
    Write {
        dir: OwnedFd,
        name: String,
        content: String,
        keep: Option<Meta>,
    },
    Attrs {
        dir: OwnedFd,
        name: String,
        current: Meta,
    },
}

fn plan(spec: &FileSpec, ctx: &Ctx<'_>) -> Result<Plan, ExecError> {
    if spec.content.is_some() && spec.source.is_some() {
        return Err(ExecError::failed(format!("{}: `content` and `source` are mutually exclusive", spec.target_path)));
    }
    match spec.ensure {
        Ensure::Absent => plan_absent(spec),
        Ensure::Present => plan_present(spec, ctx),
    }
}

fn plan_absent(spec: &FileSpec) -> Result<Plan, ExecError> {
    let path = spec.target_path.to_path_buf();
    let mut plan = Plan { path, changes: Vec::new(), diff: None, want: WantAttrs::default(), action: Action::Nothing };
    let (parent, name) = safe_fs::split(&plan.path)?;
    let Some(dir) = open_parent_if_exists(&parent, &plan.path)? else { return Ok(plan) };
    let from = match safe_fs::stat_at(&dir, &name, &plan.path)? {
        None => return Ok(plan),
        Some(Meta { kind: Kind::Dir, .. }) => {
            return Err(ExecError::failed(format!(
                "{}: is a directory; a file resource never removes directories (use `type: directory`)",
                plan.path.display()
            )));
        }
        Some(Meta { kind: Kind::Symlink, .. }) => "symlink",
        Some(_) => "present",
    };
    plan.changes.push(Change::set("ensure", from, "absent"));
    plan.action = Action::Remove { dir, name };
    Ok(plan)
}

/// A regular file with more than one link, in a directory someone other than root
/// can write, may be another file (`/etc/shadow`) linked in by that someone: its
/// content would show in the diff and a chown or chmod would land on the other name.
/// Such a file is refused; in a directory only root can change, links are root's own.
fn refuse_foreign_hard_link(dir: &OwnedFd, meta: &Meta, path: &Path) -> Result<(), ExecError> {
    if meta.nlink <= 1 {
        return Ok(());
    }
    let holder = safe_fs::meta_of(dir, path)?;
    if holder.is_root_only() {
        return Ok(());
    }
    Err(ExecError::failed(format!(
        "{}: has {} hard links in a directory {} can change; refusing to read or change it, since its other \
         name may be a file outside (remove the extra links, or the file, and Vigo writes it anew)",
        path.display(),
        meta.nlink,
        crate::accounts::user_name(holder.uid)
    )))
}

fn plan_present(spec: &FileSpec, ctx: &Ctx<'_>) -> Result<Plan, ExecError> {
    let desired = match (&spec.content, &spec.source) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(template)) => Some(ctx.render(template)?),
        (None, None) => None,
    };
    let path = if spec.follow { follow_links(spec.target_path.as_path())? } else { spec.target_path.to_path_buf() };
    // Secret content is never left readable by others because nobody thought of `mode:`.
    let mode = spec.mode.or(spec.sensitive.then_some(FileMode(SENSITIVE_MODE)));
    let want = WantAttrs::resolve(spec.owner.as_deref(), spec.group.as_deref(), mode)?;
    let (parent, name) = safe_fs::split(&path)?;
    let dir = open_parent(&parent, &path)?;
    let current = safe_fs::stat_at(&dir, &name, &path)?;
    let mut plan = Plan { path, changes: Vec::new(), diff: None, want, action: Action::Nothing };
    match current {
        Some(Meta { kind: Kind::Dir, .. }) => {
            Err(ExecError::failed(format!("{}: is a directory, not a file", plan.path.display())))
        }
        Some(Meta { kind: Kind::Other, .. }) => Err(ExecError::failed(format!(
            "{}: is a device, FIFO or socket; refusing to replace it with a file",
            plan.path.display()
        ))),
        None | Some(Meta { kind: Kind::Symlink, .. }) => {
            // A link here means `follow` is off (following resolved every link): the link
            // itself is replaced by the file, and whatever it points to is left alone.
            plan.changes.push(match current {
                Some(_) => Change::set("type", "symlink", "file"),
                None => Change::set("ensure", "absent", "present"),
            });
            let content = desired.unwrap_or_default();
            if spec.content.is_some() || spec.source.is_some() {
                plan.diff =
                    Some(if spec.sensitive { REDACTED.to_string() } else { textfile::diff(&plan.path, "", &content) });
            }
            plan.action = Action::Write { dir, name, content, keep: None };
            Ok(plan)
        }
        Some(meta) => {
            refuse_foreign_hard_link(&dir, &meta, &plan.path)?;
            let content_drift = match &desired {
                Some(new) => content_change(&dir, &name, &plan.path, &meta, new, spec.sensitive)?,
                None => None,
            };
            plan.changes.extend(content_drift.iter().map(|(change, _)| change.clone()));
            plan.changes.extend(plan.want.changes(&meta));
            plan.action = match (content_drift, desired) {
                (Some((_, diff)), Some(content)) => {
                    plan.diff = Some(diff);
                    Action::Write { dir, name, content, keep: Some(meta) }
                }
                _ if !plan.changes.is_empty() => Action::Attrs { dir, name, current: meta },
                _ => Action::Nothing,
            };
            Ok(plan)
        }
    }
}

/// The `content` change and its diff when the regular file `name` differs from `new`.
fn content_change(
    dir: &OwnedFd,
    name: &str,
    path: &Path,
    meta: &Meta,
    new: &str,
    sensitive: bool,
) -> Result<Option<(Change, String)>, ExecError> {
    let redacted = || (Change::set("content", REDACTED, REDACTED), REDACTED.to_string());
    if meta.size > textfile::MAX_TEXT {
        // Too large to load, and certainly not the desired text (which is smaller).
        if sensitive {
            return Ok(Some(redacted()));
        }
        let note = format!(
            "--- {}\n+++ {}\n(current content of {} bytes not shown)\n",
            path.display(),
            path.display(),
            meta.size
        );
        return Ok(Some((Change::new("content", None, Some(textfile::digest(new))), note)));
    }
    let old = safe_fs::read_at(dir, name, path, textfile::MAX_TEXT)?.unwrap_or_default();
    if old == new.as_bytes() {
        return Ok(None);
    }
    if sensitive {
        return Ok(Some(redacted()));
    }
    let old_text = String::from_utf8_lossy(&old);
    let from = if matches!(old_text, Cow::Borrowed(_)) { textfile::digest(&old_text) } else { "binary".to_string() };
    let change = Change::new("content", Some(from), Some(textfile::digest(new)));
    Ok(Some((change, textfile::diff(path, &old_text, new))))
}

/// The path a chain of symlinks at `path` ends at; the end itself may not exist yet.
/// Each link is followed under the walker's rule ([`safe_fs::walk_dir`]): only when the
/// directory holding it is root's and writable by nobody else.
fn follow_links(path: &Path) -> Result<PathBuf, ExecError> {
    let mut current = path.to_path_buf();
    for _ in 0..safe_fs::MAX_LINKS {
        let (parent, name) = split_followed(&current)?;
        let (dir, resolved) = match safe_fs::walk_dir(&parent) {
            Ok(found) => found,
            // A missing directory is reported by the plan that opens it.
            Err(SafeFsError::Sys { errno: Errno::ENOENT | Errno::ENOTDIR, .. }) => return Ok(current),
            Err(e) => return Err(e.into()),
        };
        let here = resolved.join(&name);
        match safe_fs::stat_at(&dir, &name, &here)? {
            Some(meta) if meta.kind == Kind::Symlink => {
                let holder = safe_fs::meta_of(&dir, &resolved)?;
                if !holder.is_root_only() {
                    return Err(
                        SafeFsError::UntrustedLink { link: here, link_uid: meta.uid, dir_uid: holder.uid }.into()
                    );
                }
                let target = safe_fs::read_link_at(&dir, &name, &here)?.unwrap_or_default();
                current = resolved.join(target);
            }
            _ => return Ok(here),
        }
    }
    Err(ExecError::failed(format!("{}: more than {} symlinks to follow", path.display(), safe_fs::MAX_LINKS)))
}

/// Splits a path reached by following a link (its parent may hold `..`) into parent and name.
fn split_followed(path: &Path) -> Result<(PathBuf, String), ExecError> {
    let bad = || ExecError::failed(format!("{}: a followed symlink does not end at a file name", path.display()));
    match path.components().next_back() {
        Some(Component::Normal(name)) => {
            let name = name.to_str().ok_or_else(bad)?.to_string();
            Ok((path.parent().ok_or_else(bad)?.to_path_buf(), name))
        }
        _ => Err(bad()),
    }
}

pub(crate) use crate::textfile::{open_parent, open_parent_if_exists};

/// `present` or `absent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub enum Ensure {
    #[default]
    Present,
    Absent,
}

/// An absolute path without `.` or `..` components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsPath(PathBuf);

impl AbsPath {
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    pub fn to_path_buf(&self) -> PathBuf {
        self.0.clone()
    }

    /// Checks that `text` is absolute and normal; the error says how to fix it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let path = Path::new(text);
        if !path.is_absolute() {
            return Err(format!("`{text}` is not an absolute path; start it with `/`"));
        }
        if path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
            return Err(format!("`{text}` contains `.` or `..`; write the path without them"));
        }
        Ok(Self(path.to_path_buf()))
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        AbsPath::parse(&text).map_err(de::Error::custom)
    }
}

impl JsonSchema for AbsPath {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "AbsPath".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^/" })
    }
}

/// Permission bits, written as a quoted octal string (`"0644"`, `"755"`, `"2775"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    /// Parses 3 or 4 octal digits; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let octal = (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        if !octal {
            return Err(format!("mode `{text}` is not 3 or 4 octal digits like \"0644\""));
        }
        u32::from_str_radix(digits, 8).map(FileMode).map_err(|e| format!("mode `{text}`: {e}"))
    }
}

/// What a kind of filesystem object is called in messages.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "directory",
        Kind::Symlink => "symlink",
        Kind::Other => "special file",
    }
}

/// Shows permission bits the way they are written in a spec (`0644`).
pub fn show_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ModeVisitor;
        impl Visitor<'_> for ModeVisitor {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted octal mode like \"0644\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileMode, E> {
                FileMode::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FileMode, E> {
                Err(E::custom(format!(
                    "mode {v} is a number; quote it so it stays octal, e.g. mode: \"0644\" (an unquoted 0644 is read as a decimal number)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FileMode, E> {
                Err(E::custom(format!("mode {v} is a number; quote it as octal, e.g. mode: \"0644\"")))
            }
        }
        d.deserialize_any(ModeVisitor)
    }
}

impl JsonSchema for FileMode {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "FileMode".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^(0o)?[0-7]{3,4}$" })
    }
}

/// An `owner:`/`group:` value resolved against the account files. A name without an
/// account is kept: `check` reports the change (the account may be created earlier in
/// the same run) and `apply` fails naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    Id(u32),
    Missing(String),
}

/// The owner, group and mode a spec asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WantAttrs {
    pub owner: Option<Account>,
    pub group: Option<Account>,
    pub mode: Option<u32>,
}

impl WantAttrs {
    pub fn resolve(owner: Option<&str>, group: Option<&str>, mode: Option<FileMode>) -> Result<Self, ExecError> {
        let account_error = |e: accounts::AccountsError| ExecError::failed(e.to_string());
        let owner = match owner {
            Some(name) => Some(
                accounts::resolve_uid(name)
                    .map_err(account_error)?
                    .map_or_else(|| Account::Missing(name.to_string()), Account::Id),
            ),
            None => None,
        };
        let group = match group {
            Some(name) => Some(
                accounts::resolve_gid(name)
                    .map_err(account_error)?
                    .map_or_else(|| Account::Missing(name.to_string()), Account::Id),
            ),
            None => None,
        };
        Ok(Self { owner, group, mode: mode.map(|m| m.0) })
    }

    /// The `owner`/`group`/`mode` changes from `meta` to what is wanted.
    pub fn changes(&self, meta: &Meta) -> Vec<Change> {
        let mut changes = Vec::new();
        match &self.owner {
            Some(Account::Id(uid)) if *uid != meta.uid => {
                changes.push(Change::set("owner", accounts::user_name(meta.uid), accounts::user_name(*uid)));
            }
            Some(Account::Missing(name)) => {
                changes.push(Change::set("owner", accounts::user_name(meta.uid), name.clone()))
            }
            _ => {}
        }
        match &self.group {
            Some(Account::Id(gid)) if *gid != meta.gid => {
                changes.push(Change::set("group", accounts::group_name(meta.gid), accounts::group_name(*gid)));
            }
            Some(Account::Missing(name)) => {
                changes.push(Change::set("group", accounts::group_name(meta.gid), name.clone()))
            }
            _ => {}
        }
        if let Some(mode) = self.mode.filter(|m| *m != meta.mode) {
            changes.push(Change::set("mode", show_mode(meta.mode), show_mode(mode)));
        }
        changes
    }

    /// The ids to set; fails naming a user or group that has no account.
    pub fn ids(&self, path: &Path) -> Result<(Option<u32>, Option<u32>), ExecError> {
        let id = |account: &Option<Account>, what: &str, file: &str| match account {
            None => Ok(None),
            Some(Account::Id(id)) => Ok(Some(*id)),
            Some(Account::Missing(name)) => {
                Err(ExecError::failed(format!("{}: {what} `{name}` does not exist in {file}", path.display())))
            }
        };
        Ok((id(&self.owner, "user", accounts::PASSWD)?, id(&self.group, "group", accounts::GROUP)?))
    }

    /// Sets what differs on `name` in `dir`, through a handle that refuses a symlink;
    /// `kind` guards against the name being swapped for another kind of object since `current` was read.
    pub fn apply_to(
        &self,
        dir: &OwnedFd,
        name: &str,
        current: &Meta,
        kind: Kind,
        path: &Path,
    ) -> Result<(), ExecError> {
        self.apply_checked(dir, name, current, kind, path, false).map(|_| ())
    }

    /// Like [`WantAttrs::apply_to`] for a regular file met by a recursive walk, which must
    /// not reach outside the tree: a file with more than one link (judged on the open
    /// handle, so a link made after the walk looked is caught too) is left alone, and its
    /// link count returned.
    pub fn apply_to_sole_link(
        &self,
        dir: &OwnedFd,
        name: &str,
        current: &Meta,
        path: &Path,
    ) -> Result<Option<u64>, ExecError> {
        self.apply_checked(dir, name, current, Kind::File, path, true)
    }

    fn apply_checked(
        &self,
        dir: &OwnedFd,
        name: &str,
        current: &Meta,
        kind: Kind,
        path: &Path,
        sole_link: bool,
    ) -> Result<Option<u64>, ExecError> {
        let (uid, gid) = self.ids(path)?;
        let uid = uid.filter(|u| *u != current.uid);
        let gid = gid.filter(|g| *g != current.gid);
        let mut mode = self.mode.filter(|m| *m != current.mode);
        if (uid.is_some() || gid.is_some()) && mode.is_none() && current.mode & 0o6000 != 0 {
            // chown clears setuid/setgid; restore the bits the spec leaves alone.
            mode = Some(current.mode);
        }
        if uid.is_none() && gid.is_none() && mode.is_none() {
            return Ok(None);
        }
        let fd = match kind {
            Kind::Dir => safe_fs::open_subdir(dir, name, path)?,
            _ => safe_fs::open_for_attrs(dir, name, path)?,
        };
        let opened = safe_fs::meta_of(&fd, path)?;
        if opened.kind != kind {
            return Err(ExecError::failed(format!("{}: changed while being updated; not touching it", path.display())));
        }
        if sole_link && opened.nlink > 1 {
            return Ok(Some(opened.nlink));
        }
        safe_fs::set_attrs(&fd, uid, gid, mode, path)?;
        Ok(None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::conformance::{World, attributes, converge, spec};
    use crate::executor::Mode;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    /// Everything below `dir` that an executor may touch: kind, owner, mode, content or link target.
    pub(crate) fn snapshot(dir: &Path) -> String {
        let mut out = String::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(dir).expect("below dir").display().to_string();
            let head = format!("{rel} {}:{} {:o}", meta.uid(), meta.gid(), meta.mode());
            if meta.file_type().is_symlink() {
                out += &format!("{head} -> {}\n", std::fs::read_link(&path).expect("readlink").display());
            } else if meta.is_dir() {
                out += &format!("{head} dir\n");
                let mut entries: Vec<PathBuf> =
                    std::fs::read_dir(&path).expect("ls").map(|e| e.expect("entry").path()).collect();
                entries.sort();
                stack.extend(entries.into_iter().rev());
            } else {
                out += &format!("{head} {:?}\n", std::fs::read(&path).expect("read"));
            }
        }
        out
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("lstat").permissions().mode() & 0o7777
    }

    fn yaml(path: &Path, rest: &str) -> String {
        format!("target_path: {}\n{rest}", path.display())
    }

    #[derive(Clone, Copy, Debug)]
    enum Initial {
        Absent,
        WrongContent,
        WrongMode,
        WrongOwner,
        SymlinkToVictim,
        Correct,
    }

    fn set_up(initial: Initial, path: &Path, victim: &Path) {
        let write = |content: &str, mode: u32| {
            std::fs::write(path, content).expect("write");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        match initial {
            Initial::Absent => {}
            Initial::WrongContent => write("old\n", 0o640),
            Initial::WrongMode => write("hello\n", 0o666),
            Initial::WrongOwner => {
                write("hello\n", 0o640);
                std::os::unix::fs::chown(path, Some(65534), None).expect("chown");
            }
            Initial::SymlinkToVictim => symlink(victim, path).expect("symlink"),
            Initial::Correct => write("hello\n", 0o640),
        }
    }

    #[test]
    fn conformance_present() {
        use Initial::*;
        let table: &[(Initial, &[&str])] = &[
            (Absent, &["ensure"]),
            (WrongContent, &["content"]),
            (WrongMode, &["mode"]),
            (WrongOwner, &["owner"]),
            (SymlinkToVictim, &["type"]),
            (Correct, &[]),
        ];
        for (initial, expected) in table {
            let tmp = tempfile::tempdir().expect("tempdir");
            let victim = tmp.path().join("victim");
            std::fs::write(&victim, "victim\n").expect("victim");
            let path = tmp.path().join("managed.conf");
            set_up(*initial, &path, &victim);
            let spec = spec::<File>(&yaml(&path, "content: \"hello\\n\"\nowner: root\nmode: \"0640\""));
            let drift = converge::<File>(&World::default(), &spec, || snapshot(tmp.path()));
            assert_eq!(attributes(&drift), *expected, "{initial:?}");
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            assert!(meta.is_file(), "{initial:?}: not a regular file");
            assert_eq!(std::fs::read_to_string(&path).expect("read"), "hello\n", "{initial:?}");
            assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o640), "{initial:?}");
            assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "victim\n", "{initial:?}: victim touched");
        }
    }

    #[test]
    fn conformance_absent() {
        use Initial::*;
        let table: &[(Initial, &[&str])] = &[
            (Absent, &[]),
            (WrongContent, &["ensure"]),
            (WrongMode, &["ensure"]),
            (WrongOwner, &["ensure"]),
            (SymlinkToVictim, &["ensure"]),
            (Correct, &["ensure"]),
        ];
        for (initial, expected) in table {
            let tmp = tempfile::tempdir().expect("tempdir");
            let victim = tmp.path().join("victim");
            std::fs::write(&victim, "victim\n").expect("victim");
            let path = tmp.path().join("managed.conf");
            set_up(*initial, &path, &victim);
            let spec = spec::<File>(&yaml(&path, "ensure: absent"));
            let drift = converge::<File>(&World::default(), &spec, || snapshot(tmp.path()));
            assert_eq!(attributes(&drift), *expected, "{initial:?}");
            assert!(std::fs::symlink_metadata(&path).is_err(), "{initial:?}: still there");
            assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "victim\n", "{initial:?}: victim touched");
        }
    }

    #[test]
    fn content_drift_carries_a_diff_and_digests() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        std::fs::write(&path, "one\ntwo\n").expect("write");
        let spec = spec::<File>(&yaml(&path, "content: \"one\\nthree\\n\""));
        let drift = converge::<File>(&World::default(), &spec, || snapshot(tmp.path())).expect("drift");
        let diff = drift.diff.expect("diff");
        assert!(diff.contains("-two") && diff.contains("+three"), "{diff}");
        assert_eq!(drift.changes[0].from, Some(textfile::digest("one\ntwo\n")));
        assert_eq!(drift.changes[0].to, Some(textfile::digest("one\nthree\n")));
    }

    #[test]
    fn sensitive_content_never_shows() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("secret.key");
        for initial in ["", "old-secret-value\n"] {
            if !initial.is_empty() {
                std::fs::write(&path, initial).expect("write");
            }
            let spec = spec::<File>(&yaml(&path, "content: \"hunter2-new\\n\"\nsensitive: true\nmode: \"0600\""));
            let drift = converge::<File>(&World::default(), &spec, || snapshot(tmp.path())).expect("drift");
            let shown = format!("{drift:?}");
            assert!(!shown.contains("hunter2") && !shown.contains("old-secret"), "{shown}");
            assert_eq!(drift.diff.as_deref(), Some(REDACTED));
            assert_eq!(std::fs::read_to_string(&path).expect("read"), "hunter2-new\n");
            assert_eq!(mode_of(&path), 0o600);
        }
        std::fs::write(&path, "changed-secret\n").expect("write");
        let spec = spec::<File>(&yaml(&path, "content: \"hunter2-new\\n\"\nsensitive: true"));
        let drift = converge::<File>(&World::default(), &spec, || snapshot(tmp.path())).expect("drift");
        assert_eq!(drift.changes, vec![Change::set("content", REDACTED, REDACTED)]);
    }

    #[test]
    fn sensitive_files_without_a_mode_are_private_to_their_owner() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let new = tmp.path().join("new.key");
        let old = tmp.path().join("old.key");
        std::fs::write(&old, "public before\n").expect("write");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        for (path, expected) in [(&new, &["ensure"][..]), (&old, &["content", "mode"][..])] {
            let spec = spec::<File>(&yaml(path, "content: \"k3y\\n\"\nsensitive: true"));
            let drift = converge::<File>(&World::default(), &spec, || snapshot(tmp.path()));
            assert_eq!(attributes(&drift), expected, "{}", path.display());
            assert_eq!(mode_of(path), SENSITIVE_MODE, "{}: readable by others", path.display());
        }
        // An explicit mode still wins (e.g. a key a service group must read).
        let spec = spec::<File>(&yaml(&old, "content: \"k3y\\n\"\nsensitive: true\nmode: \"0640\""));
        converge::<File>(&World::default(), &spec, || snapshot(tmp.path()));
        assert_eq!(mode_of(&old), 0o640);
    }

    #[test]
    fn attributes_only_keeps_content_and_creates_missing_files_empty() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        std::fs::write(&path, "keep me\n").expect("write");
        let attrs_only = spec::<File>(&yaml(&path, "group: \"65534\"\nmode: \"0604\""));
        let drift = converge::<File>(&World::default(), &attrs_only, || snapshot(tmp.path()));
        assert_eq!(attributes(&drift), ["group", "mode"]);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "keep me\n");
        assert_eq!(std::fs::metadata(&path).expect("meta").gid(), 65534);
        let missing = tmp.path().join("new");
        let spec = spec::<File>(&yaml(&missing, "mode: \"0600\""));
        let drift = converge::<File>(&World::default(), &spec, || snapshot(tmp.path())).expect("drift");
        assert_eq!(drift.diff, None, "no content managed, no diff");
        assert_eq!(std::fs::read(&missing).expect("read"), b"");
        assert_eq!(mode_of(&missing), 0o600);
    }

    #[test]
    fn rewriting_content_keeps_unmanaged_owner_and_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        std::fs::write(&path, "old\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
        let spec = spec::<File>(&yaml(&path, "content: new"));
        converge::<File>(&World::default(), &spec, || snapshot(tmp.path())).expect("drift");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (65534, 65534, 0o600));
    }

    #[test]
    fn follow_manages_the_link_destination() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("real")).expect("dir");
        let dest = tmp.path().join("real/conf");
        std::fs::write(&dest, "old\n").expect("dest");
        let link = tmp.path().join("link");
        symlink("real/conf", &link).expect("symlink");
        let through = spec::<File>(&yaml(&link, "content: \"new\\n\"\nfollow: true\nmode: \"0640\""));
        let drift = converge::<File>(&World::default(), &through, || snapshot(tmp.path()));
        assert_eq!(attributes(&drift), ["content", "mode"]);
        assert!(std::fs::symlink_metadata(&link).expect("lstat").file_type().is_symlink(), "link kept");
        assert_eq!(std::fs::read_to_string(&dest).expect("dest"), "new\n");
        assert_eq!(mode_of(&dest), 0o640);
        // A dangling link: the file is created where it points.
        let dangling = tmp.path().join("dangling");
        symlink(tmp.path().join("real/created"), &dangling).expect("symlink");
        let spec = spec::<File>(&yaml(&dangling, "content: x\nfollow: true"));
        assert_eq!(attributes(&converge::<File>(&World::default(), &spec, || snapshot(tmp.path()))), ["ensure"]);
        assert_eq!(std::fs::read_to_string(tmp.path().join("real/created")).expect("created"), "x");
    }

    #[test]
    fn template_source_is_rendered() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("motd");
        let mut world = World { vars: serde_json::json!({ "greeting": "hello" }), ..World::default() };
        world.templates.insert("templates/motd.tmpl".into(), "{{ .vars.greeting }} world\n".into());
        let spec = spec::<File>(&yaml(&path, "source: templates/motd.tmpl"));
        assert_eq!(File::templates(&spec), ["templates/motd.tmpl"]);
        let drift = converge::<File>(&world, &spec, || snapshot(tmp.path()));
        assert_eq!(attributes(&drift), ["ensure"]);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "hello world\n");
    }

    #[test]
    fn missing_template_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spec = spec::<File>(&yaml(&tmp.path().join("f"), "source: templates/none.tmpl"));
        let err = File::check(&spec, &World::default().ctx(Mode::NoOp)).expect_err("no template");
        assert!(err.to_string().contains("templates/none.tmpl"), "{err}");
    }

    #[test]
    fn refusals_name_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let world = World::default();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).expect("dir");
        for ensure in ["present", "absent"] {
            let spec = spec::<File>(&yaml(&dir, &format!("ensure: {ensure}")));
            let err = File::check(&spec, &world.ctx(Mode::NoOp)).expect_err("directory");
            assert!(err.to_string().contains("is a directory"), "{err}");
        }
        let orphan = tmp.path().join("missing/f");
        let err = File::check(&spec::<File>(&yaml(&orphan, "content: x")), &world.ctx(Mode::NoOp)).expect_err("parent");
        assert!(
            err.to_string()
                .contains(&format!("parent directory {} does not exist", tmp.path().join("missing").display())),
            "{err}"
        );
        let absent = spec::<File>(&yaml(&orphan, "ensure: absent"));
        assert_eq!(File::check(&absent, &world.ctx(Mode::NoOp)).expect("absent parent"), Check::InSync);
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        assert!(File::check(&spec::<File>(&yaml(&fifo, "content: x")), &world.ctx(Mode::NoOp)).is_err());
    }

    #[test]
    fn unknown_owner_is_reported_then_fails_on_apply() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        std::fs::write(&path, "x").expect("write");
        let spec = spec::<File>(&yaml(&path, "owner: no-such-user-vigo"));
        let ctx = World::default();
        let Check::Drift(drift) = File::check(&spec, &ctx.ctx(Mode::NoOp)).expect("check") else { panic!("no drift") };
        assert_eq!(drift.changes, vec![Change::set("owner", "root", "no-such-user-vigo")]);
        let err = File::apply(&spec, &drift, &ctx.ctx(Mode::Enforce)).expect_err("unknown user");
        assert!(err.to_string().contains("user `no-such-user-vigo` does not exist"), "{err}");
    }

    #[test]
    fn spec_parsing_explains_mistakes() {
        let parse = |yaml: &str| -> Result<FileSpec, String> {
            let value: serde_json::Value = serde_saphyr::from_str(yaml).expect("yaml");
            crate::executor::parse_spec(&value).map_err(|e| e.message)
        };
        let err = parse("target_path: /etc/x\nmode: 644").expect_err("number");
        assert!(err.contains("quote"), "{err}");
        let err = parse("target_path: etc/x").expect_err("relative");
        assert!(err.contains("not an absolute path"), "{err}");
        let err = parse("target_path: /etc/../x").expect_err("dotdot");
        assert!(err.contains(".."), "{err}");
        assert!(parse("target_path: /etc/x\nmode: \"0999\"").is_err());
        assert!(parse("target_path: /etc/x\nmode: \"12345\"").is_err());
        assert!(parse("target_path: /etc/x\ncolour: blue").is_err());
        assert_eq!(parse("target_path: /etc/x\nmode: \"2775\"").expect("ok").mode, Some(FileMode(0o2775)));
        assert_eq!(parse("target_path: /etc/x\nmode: \"644\"").expect("ok").mode, Some(FileMode(0o644)));
    }

    #[test]
    fn schema_fields_have_kinds_and_docs() {
        let fields = crate::registry::fields_of(&schemars::schema_for!(FileSpec).to_value());
        let kind = |name: &str| fields.iter().find(|f| f.name == name).map(|f| (f.kind.as_str(), f.required));
        assert_eq!(kind("target_path"), Some(("string", true)));
        assert_eq!(kind("mode"), Some(("string", false)));
        assert_eq!(kind("ensure"), Some(("string", false)));
        assert_eq!(kind("follow"), Some(("boolean", false)));
        assert!(fields.iter().all(|f| !f.doc.is_empty()), "{fields:?}");
    }

    #[test]
    fn lints_and_targets() {
        let common = Common { name: "f", when: None };
        let both = spec::<File>("target_path: /etc/x\ncontent: a\nsource: templates/a.tmpl");
        assert_eq!(File::lint(&both, common).first().and_then(|l| l.field.as_deref()), Some("source"));
        let absent = spec::<File>("target_path: /etc/x\nensure: absent\ncontent: a");
        assert_eq!(File::lint(&absent, common).first().and_then(|l| l.field.as_deref()), Some("ensure"));
        assert!(File::lint(&spec::<File>("target_path: /etc/x\ncontent: a"), common).is_empty());
        assert_eq!(File::targets(&absent), [Target::Path("/etc/x".into())]);
        assert!(File::check(&both, &World::default().ctx(Mode::NoOp)).is_err());
    }
}
