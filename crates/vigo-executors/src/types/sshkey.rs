//! `sshkey`: one public key in a user's `authorized_keys`, like Puppet's
//! `ssh_authorized_key` and Ansible's `authorized_key`.
//!
//! A key is identified by its type and base64 blob; its options and comment are
//! attributes, so changing them rewrites that one line. The file lives in a directory
//! the user controls, so every step goes through [`safe_fs`]: the home is opened and
//! checked, `.ssh` is opened without following a symlink (and created 0700 for the
//! user when missing), a symlinked or hard-linked `authorized_keys` is refused, and so
//! is one owned by anybody but the user (root's own file only in a directory only root
//! can change: in the user's `.ssh` it may be a root file she moved there), and
//! the new content is written to a temp file that is chowned, chmodded 0600 and
//! renamed into place.
//!
//! The account (uid, gid, home) comes from `/etc/passwd`, parsed by
//! [`crate::accounts`] rather than through NSS, so the lookup is testable with a
//! fixture: the executor's work is done by functions that take the passwd path.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use vigo_model::catalog::{Common, Lint, Target};

use crate::accounts::{self, User};
use crate::executor::{Applied, Change, Check, Ctx, Drift, ExecError, Executor};
use crate::safe_fs::{self, Attrs, Meta, SafeFsError};
use crate::textfile;

/// The mode sshd's `StrictModes` is happy with and nobody else can read.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

pub struct SshKey;

/// Whether the key should be authorized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    #[default]
    Present,
    Absent,
}

/// One key in a user's `authorized_keys`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeySpec {
    /// The account whose keys are managed, as named in `/etc/passwd` (or its numeric uid).
    /// The file is owned by its uid and primary gid.
    pub user: String,
    /// The public key exactly as a `.pub` file holds it: `type base64 [comment]`, e.g.
    /// `ssh-ed25519 AAAAC3Nz… alice@laptop`. Type and base64 identify the key; the
    /// comment is part of the desired line (leaving it out removes an existing one).
    /// Options do not belong here: use `options`.
    pub key: String,
    /// `authorized_keys` options, one per item, in order (e.g. `from="10.0.0.0/8"`,
    /// `no-pty`, `command="/usr/bin/backup"`). Quote values that contain commas or spaces.
    #[serde(default)]
    pub options: Vec<String>,
    /// `present` (default) authorizes the key; `absent` removes every line with this key.
    #[serde(default)]
    pub ensure: Ensure,
    /// Remove every other key from the file (default false), leaving comments and blank
    /// lines. With several `sshkey` resources for one file, at most one can be exclusive.
    #[serde(default)]
    pub exclusive: bool,
    /// Another location for the file (default `<home>/.ssh/authorized_keys`), e.g. for an
    /// `AuthorizedKeysFile` under `/etc/ssh`. Below the home it is reached and its missing
    /// directories created like `.ssh`; elsewhere its directory must exist, be owned by
    /// the user or root, and not be writable by group or others.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl Executor for SshKey {
    type Spec = SshKeySpec;

    const NAME: &'static str = "sshkey";
    const SUMMARY: &'static str =
        "A public key in a user's authorized_keys, with its options (Puppet's ssh_authorized_key)";
    const EXAMPLE: &'static str = r#"- name: alice may log in from the office
  type: sshkey
  user: alice
  key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g alice@laptop
  options: ['from="10.0.0.0/8"', no-agent-forwarding]
- name: the backup key is the only one
  type: sshkey
  user: backup
  key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGRlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKD backup@vault
  options: ['command="/usr/local/bin/backup-receive"', restrict]
  exclusive: true
"#;

    /// The default location depends on the user's home, which is only known on the host;
    /// an explicit `path` is reported.
    fn targets(spec: &SshKeySpec) -> Vec<Target> {
        spec.path.iter().map(|p| Target::Path(p.clone())).collect()
    }

    fn lint(spec: &SshKeySpec, _common: Common<'_>) -> Vec<Lint> {
        problems(spec)
            .into_iter()
            .map(|(field, message)| Lint { field: Some(field.to_string()), message, hint: None })
            .collect()
    }

    fn check(spec: &SshKeySpec, _ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        check_with(spec, Path::new(accounts::PASSWD))
    }

    fn apply(spec: &SshKeySpec, _drift: &Drift, _ctx: &Ctx<'_>) -> Result<Applied, ExecError> {
        apply_with(spec, Path::new(accounts::PASSWD))
    }
}

/// `check`, with the account looked up in the passwd-format file `passwd`.
fn check_with(spec: &SshKeySpec, passwd: &Path) -> Result<Check, ExecError> {
    let want = validate(spec)?;
    let user = account(spec, passwd)?;
    let loc = locate(spec, &user)?;
    let shown = loc.file();
    match open_parent(&loc, &user, false)? {
        Parent::Open(dir) => {
            let current = read_keys(&dir, &loc.name, &shown, &user)?;
            let outcome = assess(spec, &want, &user, current.as_ref().map(|(t, m)| (t.as_str(), m)), &shown);
            Ok(Check::from_changes(outcome.changes, outcome.diff))
        }
        Parent::Missing { .. } if spec.ensure == Ensure::Absent => Ok(Check::InSync),
        Parent::Missing { dir, creatable: false } => Err(no_dir(&dir)),
        Parent::Missing { dir, creatable: true } => {
            let outcome = assess(spec, &want, &user, None, &shown);
            let mut changes = vec![Change::new("directory", None, Some(dir.display().to_string()))];
            changes.extend(outcome.changes);
            Ok(Check::from_changes(changes, outcome.diff))
        }
    }
}

/// `apply`, with the account looked up in the passwd-format file `passwd`.
fn apply_with(spec: &SshKeySpec, passwd: &Path) -> Result<Applied, ExecError> {
    let want = validate(spec)?;
    let user = account(spec, passwd)?;
    let loc = locate(spec, &user)?;
    let shown = loc.file();
    let present = spec.ensure == Ensure::Present;
    let dir = match open_parent(&loc, &user, present)? {
        Parent::Open(dir) => dir,
        Parent::Missing { .. } if !present => return Ok(Applied::default()),
        Parent::Missing { dir, .. } => return Err(no_dir(&dir)),
    };
    let current = read_keys(&dir, &loc.name, &shown, &user)?;
    let outcome = assess(spec, &want, &user, current.as_ref().map(|(t, m)| (t.as_str(), m)), &shown);
    if let Some(text) = outcome.write {
        let attrs = Attrs { uid: Some(user.uid), gid: Some(user.gid), mode: Some(FILE_MODE) };
        safe_fs::write_at(&dir, &loc.name, text.as_bytes(), attrs, &shown)?;
    }
    Ok(Applied::default())
}

fn no_dir(dir: &Path) -> ExecError {
    ExecError::failed(format!("{}: directory does not exist", dir.display()))
}

fn account(spec: &SshKeySpec, passwd: &Path) -> Result<User, ExecError> {
    let user = accounts::lookup_user_in(passwd, &spec.user)
        .map_err(|e| ExecError::failed(e.to_string()))?
        .ok_or_else(|| ExecError::failed(format!("user {}: not found in {}", spec.user, passwd.display())))?;
    if !user.home.is_absolute() {
        return Err(ExecError::failed(format!(
            "user {}: home `{}` in {} is not absolute",
            user.name,
            user.home.display(),
            passwd.display()
        )));
    }
    Ok(user)
}

/// Where the file is: a base directory opened as a whole, directories below it walked
/// one at a time without following links, and the file name.
#[derive(Debug, PartialEq, Eq)]
struct Location {
    base: PathBuf,
    dirs: Vec<String>,
    name: String,
    /// Missing `dirs` are created for the user (only below the home).
    create_dirs: bool,
}

impl Location {
    fn file(&self) -> PathBuf {
        let mut path = self.base.clone();
        path.extend(&self.dirs);
        path.push(&self.name);
        path
    }
}

fn locate(spec: &SshKeySpec, user: &User) -> Result<Location, ExecError> {
    let Some(path) = &spec.path else {
        return Ok(Location {
            base: user.home.clone(),
            dirs: vec![".ssh".into()],
            name: "authorized_keys".into(),
            create_dirs: true,
        });
    };
    let (parent, name) = safe_fs::split(path)?;
    // Below the home every component is the user's to swap, so walk it; elsewhere the
    // directories belong to the administrator's layout.
    let Ok(rel) = path.strip_prefix(&user.home) else {
        return Ok(Location { base: parent, dirs: Vec::new(), name, create_dirs: false });
    };
    let mut parts = rel
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str().map(str::to_string),
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| ExecError::failed(format!("path `{}` is not a plain UTF-8 path", path.display())))?;
    if parts.pop().is_none() {
        return Err(ExecError::failed(format!("path `{}` is the home of user {}", path.display(), user.name)));
    }
    Ok(Location { base: user.home.clone(), dirs: parts, name, create_dirs: true })
}

/// The directory holding the file, or the first directory on the way that is missing.
enum Parent {
    Open(OwnedFd),
    Missing { dir: PathBuf, creatable: bool },
}

/// Opens the directory that holds the file; with `create`, makes missing directories
/// below the home (mode 0700, owned by the user).
fn open_parent(loc: &Location, user: &User, create: bool) -> Result<Parent, ExecError> {
    let mut fd = match safe_fs::open_tree(&loc.base, &[], user.uid) {
        Ok(fd) => fd,
        Err(SafeFsError::Sys { errno: nix::errno::Errno::ENOENT, .. }) => {
            return Ok(Parent::Missing { dir: loc.base.clone(), creatable: false });
        }
        Err(e) => return Err(e.into()),
    };
    let mut shown = loc.base.clone();
    for name in &loc.dirs {
        shown.push(name);
        let exists = safe_fs::stat_at(&fd, name, &shown)?.is_some();
        match (exists, create && loc.create_dirs) {
            (false, false) => return Ok(Parent::Missing { dir: shown, creatable: loc.create_dirs }),
            (false, true) => safe_fs::mkdir_at(&fd, name, DIR_MODE, &shown)?,
            (true, _) => {}
        }
        // O_NOFOLLOW: a symlink planted here (before or after the mkdir) is refused.
        let sub = safe_fs::open_subdir(&fd, name, &shown)?;
        check_dir(&sub, &shown, user)?;
        if !exists {
            safe_fs::set_attrs(&sub, Some(user.uid), Some(user.gid), Some(DIR_MODE), &shown)?;
        }
        fd = sub;
    }
    Ok(Parent::Open(fd))
}

/// A directory on the way must belong to the user or root and be closed to others, as
/// sshd's `StrictModes` demands.
fn check_dir(fd: &OwnedFd, shown: &Path, user: &User) -> Result<(), ExecError> {
    let meta = safe_fs::meta_of(fd, shown)?;
    if meta.uid != user.uid && meta.uid != 0 {
        return Err(ExecError::failed(format!(
            "{}: owned by uid {}, not by {} ({}) or root",
            shown.display(),
            meta.uid,
            user.name,
            user.uid
        )));
    }
    if meta.mode & 0o022 != 0 {
        return Err(ExecError::failed(format!("{}: writable by group or others", shown.display())));
    }
    Ok(())
}

/// The current file and the metadata of what was read; `None` when absent.
///
/// Its content is used only when the file is the user's to begin with: it becomes the
/// user's file (and shows in the diff), so a file of someone else's must not be read into it.
fn read_keys(dir: &OwnedFd, name: &str, shown: &Path, user: &User) -> Result<Option<(String, Meta)>, ExecError> {
    let Some((bytes, meta)) = safe_fs::read_with_meta(dir, name, shown, textfile::MAX_TEXT)? else {
        return Ok(None);
    };
    // Judged on the very file that was read; refused before its content is looked at.
    check_file_owner(dir, &meta, shown, user)?;
    // A hard link would make us copy some other file's content into a file the user owns.
    if meta.nlink > 1 {
        return Err(ExecError::failed(format!(
            "{}: has {} hard links; refusing to rewrite a file that also lives elsewhere",
            shown.display(),
            meta.nlink
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| ExecError::failed(format!("{}: not UTF-8 text", shown.display())))?;
    Ok(Some((text, meta)))
}

/// An existing file must be the user's. Root's own file is accepted only in a directory
/// owned by root that nobody else can write: anywhere the user can rename entries, a
/// root file may be one she moved there (a root-owned 0600 file renamed to
/// `~/.ssh/authorized_keys` would otherwise be rewritten as hers, its content with it).
fn check_file_owner(dir: &OwnedFd, meta: &Meta, shown: &Path, user: &User) -> Result<(), ExecError> {
    if meta.uid == user.uid {
        return Ok(());
    }
    let holder = safe_fs::meta_of(dir, shown)?;
    let roots_dir = holder.is_root_only();
    if meta.uid == 0 && roots_dir {
        return Ok(());
    }
    let name = accounts::user_name(meta.uid);
    let whose =
        if name == meta.uid.to_string() { format!("uid {}", meta.uid) } else { format!("{name} (uid {})", meta.uid) };
    let note = if meta.uid == 0 { " (a file of root's only counts in a directory only root can change)" } else { "" };
    Err(ExecError::failed(format!(
        "{}: owned by {whose}, not by {} (uid {}){note}; refusing to rewrite it as {}'s, since it may be another file moved here (chown it to {} if it is theirs, or remove it)",
        shown.display(),
        user.name,
        user.uid,
        user.name,
        user.name
    )))
}

/// What check reports and apply writes, from the same inputs.
struct Outcome {
    /// The content to write (with the user's owner and mode 0600), if anything is to be done.
    write: Option<String>,
    changes: Vec<Change>,
    diff: Option<String>,
}

fn assess(spec: &SshKeySpec, want: &KeyLine, user: &User, current: Option<(&str, &Meta)>, shown: &Path) -> Outcome {
    let present = spec.ensure == Ensure::Present;
    let old = current.map_or("", |(text, _)| text);
    if current.is_none() && !present {
        return Outcome { write: None, changes: Vec::new(), diff: None };
    }
    let (new, mut changes) = plan(old, want, spec.ensure, spec.exclusive);
    let content_changed = new != old;
    // Owner and mode are managed when the key should be there, and whenever the file is
    // rewritten anyway (the write sets them).
    if let Some((_, meta)) = current.filter(|_| present || content_changed) {
        if (meta.uid, meta.gid) != (user.uid, user.gid) {
            let owner = format!("{}:{}", user.uid, user.gid);
            changes.push(Change::set("owner", format!("{}:{}", meta.uid, meta.gid), owner));
        }
        if meta.mode != FILE_MODE {
            changes.push(Change::set("mode", format!("{:04o}", meta.mode), format!("{FILE_MODE:04o}")));
        }
    }
    let diff = content_changed.then(|| textfile::diff(shown, old, &new));
    let write = (!changes.is_empty()).then_some(new);
    Outcome { write, changes, diff }
}

/// Everything wrong with a spec that can be told without the host, with the field at fault.
fn problems(spec: &SshKeySpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if spec.user.is_empty() || spec.user.contains([':', '\n', '\0']) {
        out.push(("user", format!("user `{}` is not a user name", spec.user)));
    }
    if let Err(message) = desired_key(&spec.key) {
        out.push(("key", message));
    }
    for option in &spec.options {
        if !valid_option(option) {
            out.push((
                "options",
                format!(
                    "option `{option}` is not one authorized_keys option (quote values that contain commas or spaces)"
                ),
            ));
        }
    }
    if spec.exclusive && spec.ensure == Ensure::Absent {
        out.push(("exclusive", "exclusive only applies with ensure: present".to_string()));
    }
    if let Some(path) = &spec.path
        && safe_fs::split(path).is_err()
    {
        out.push(("path", format!("path `{}` is not an absolute, normal file path", path.display())));
    }
    out
}

/// The desired key line, or every problem of the spec at once.
fn validate(spec: &SshKeySpec) -> Result<KeyLine, ExecError> {
    let problems = problems(spec);
    if !problems.is_empty() {
        let all: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
        return Err(ExecError::failed(format!("user {}: {}", spec.user, all.join("; "))));
    }
    let mut line = desired_key(&spec.key).map_err(ExecError::failed)?;
    line.options = spec.options.clone();
    Ok(line)
}

/// Parses and checks the `key` field: a key type, a base64 blob that decodes to a key of
/// that type, and an optional comment.
fn desired_key(key: &str) -> Result<KeyLine, String> {
    if key.contains(['\n', '\r', '\0']) {
        return Err("key must be a single line".into());
    }
    let first = key.split_whitespace().next().unwrap_or("");
    if !looks_like_type(first) {
        return Err(format!(
            "key must start with the key type (e.g. `ssh-ed25519 AAAA…`), not `{first}`; put options such as `from=` in `options`"
        ));
    }
    let line = parse_line(key).ok_or_else(|| format!("key `{first} …` has no base64 blob"))?;
    let blob = decode_base64(&line.blob).ok_or_else(|| format!("key `{first} …`: the blob is not valid base64"))?;
    match embedded_type(&blob) {
        Some(inner) if inner == line.kind.as_bytes() => Ok(line),
        Some(inner) => {
            Err(format!("key: the blob holds a `{}` key but the line says `{first}`", String::from_utf8_lossy(inner)))
        }
        None => Err(format!("key `{first} …`: the blob is not an SSH public key")),
    }
}

fn valid_option(option: &str) -> bool {
    if option.contains(['\n', '\r', '\0']) {
        return false;
    }
    let probe = format!("{option} ssh-ed25519");
    matches!(split_options(&probe), Some((options, _)) if options == [option])
}

/// One `authorized_keys` line: options, key type, base64 blob, comment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyLine {
    options: Vec<String>,
    kind: String,
    blob: String,
    comment: Option<String>,
}

impl KeyLine {
    fn same_key(&self, other: &KeyLine) -> bool {
        self.kind == other.kind && self.blob == other.blob
    }

    fn render(&self) -> String {
        let mut line = String::new();
        if !self.options.is_empty() {
            line.push_str(&self.options.join(","));
            line.push(' ');
        }
        line.push_str(&self.kind);
        line.push(' ');
        line.push_str(&self.blob);
        if let Some(comment) = &self.comment {
            line.push(' ');
            line.push_str(comment);
        }
        line
    }
}

/// Key types as sshd names them (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `sk-ssh-ed25519@openssh.com`,
/// certificate variants); an options field never starts like this.
fn looks_like_type(word: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"].iter().any(|p| word.starts_with(p))
        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-@.".contains(&b))
}

/// Parses a key line; `None` for blank lines, comments and lines that are not a key.
fn parse_line(line: &str) -> Option<KeyLine> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let first = line.split_whitespace().next()?;
    let (options, rest) = if looks_like_type(first) { (Vec::new(), line) } else { split_options(line)? };
    let (kind, rest) = rest.trim_start().split_once(char::is_whitespace)?;
    if !looks_like_type(kind) {
        return None;
    }
    let rest = rest.trim_start();
    let (blob, comment) = match rest.split_once(char::is_whitespace) {
        Some((blob, comment)) => (blob, comment.trim()),
        None => (rest, ""),
    };
    Some(KeyLine {
        options,
        kind: kind.to_string(),
        blob: blob.to_string(),
        comment: (!comment.is_empty()).then(|| comment.to_string()),
    })
}

/// Splits the leading options field (commas and whitespace inside double quotes do not
/// count, `\"` does not end a quote) from the rest of the line.
fn split_options(line: &str) -> Option<(Vec<String>, &str)> {
    let mut options = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                options.push(line[start..i].to_string());
                start = i + 1;
            }
            c if c.is_whitespace() && !quoted => {
                options.push(line[start..i].to_string());
                if options.iter().any(String::is_empty) {
                    return None;
                }
                return Some((options, &line[i..]));
            }
            _ => {}
        }
    }
    None
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.is_empty() || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in body.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).expect("masked to 8 bits"));
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The key type an SSH public key blob starts with (a length-prefixed string).
fn embedded_type(blob: &[u8]) -> Option<&[u8]> {
    let len: [u8; 4] = blob.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
    blob.get(4..4usize.checked_add(len)?)
}

/// The pure transform of the file's text: the desired text and the changes it makes.
fn plan(current: &str, want: &KeyLine, ensure: Ensure, exclusive: bool) -> (String, Vec<Change>) {
    let present = ensure == Ensure::Present;
    let mut out = String::with_capacity(current.len() + want.blob.len() + 64);
    let mut changes = Vec::new();
    let (mut found, mut removed, mut duplicates, mut others) = (false, 0usize, 0usize, 0usize);
    for raw in current.split_inclusive('\n') {
        let eol = if raw.ends_with('\n') { "\n" } else { "" };
        let trimmed = raw.trim();
        let key = parse_line(raw);
        match key {
            Some(key) if key.same_key(want) => {
                if !present {
                    removed += 1;
                } else if found {
                    duplicates += 1;
                } else {
                    found = true;
                    let line_changes = key_changes(&key, want);
                    if line_changes.is_empty() {
                        out.push_str(raw);
                    } else {
                        out.push_str(&want.render());
                        out.push_str(eol);
                    }
                    changes.extend(line_changes);
                }
            }
            // Anything sshd might read as a key counts as another key, even one we cannot parse.
            _ if exclusive && present && !trimmed.is_empty() && !trimmed.starts_with('#') => others += 1,
            _ => out.push_str(raw),
        }
    }
    if present && !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&want.render());
        out.push('\n');
        changes.insert(0, Change::set("ensure", "absent", "present"));
    }
    if removed > 0 {
        changes.push(Change::set("ensure", "present", "absent"));
    }
    if duplicates > 0 {
        changes.push(Change::set("duplicates", duplicates.to_string(), "0"));
    }
    if others > 0 {
        changes.push(Change::set("other_keys", others.to_string(), "0"));
    }
    (out, changes)
}

fn key_changes(have: &KeyLine, want: &KeyLine) -> Vec<Change> {
    let mut changes = Vec::new();
    if have.options != want.options {
        let shown = |o: &[String]| (!o.is_empty()).then(|| o.join(","));
        changes.push(Change::new("options", shown(&have.options), shown(&want.options)));
    }
    if have.comment != want.comment {
        changes.push(Change::new("comment", have.comment.clone(), want.comment.clone()));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, World, attributes};
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::os::unix::process::CommandExt as _;

    const ED1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g";
    const ED2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGRlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgYKD";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAAgMjM0NTY3ODk6Ozw9Pj9AQUJDREVGR0hJSktMTU5PUFE=";
    const NOBODY: u32 = 65534;

    /// The executor with accounts from a fixture passwd file instead of `/etc/passwd`.
    struct Fixture;

    #[derive(Deserialize, JsonSchema)]
    struct FixtureSpec {
        spec: SshKeySpec,
        passwd: PathBuf,
    }

    impl Executor for Fixture {
        type Spec = FixtureSpec;
        const NAME: &'static str = "sshkey";
        const SUMMARY: &'static str = SshKey::SUMMARY;
        const EXAMPLE: &'static str = SshKey::EXAMPLE;
        fn targets(_: &FixtureSpec) -> Vec<Target> {
            Vec::new()
        }
        fn check(s: &FixtureSpec, _: &Ctx<'_>) -> Result<Check, ExecError> {
            check_with(&s.spec, &s.passwd)
        }
        fn apply(s: &FixtureSpec, _: &Drift, _: &Ctx<'_>) -> Result<Applied, ExecError> {
            apply_with(&s.spec, &s.passwd)
        }
    }

    /// A fake home for `nobody` (65534) and a passwd file pointing at it.
    struct Home {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        passwd: PathBuf,
    }

    impl Home {
        fn new() -> Self {
            let tmp = tempfile::tempdir().expect("tempdir");
            let home = tmp.path().join("home");
            std::fs::create_dir(&home).expect("home");
            let passwd = tmp.path().join("passwd");
            let entry =
                format!("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:{}:/bin/false\n", home.display());
            std::fs::write(&passwd, entry).expect("passwd");
            Home { _tmp: tmp, home, passwd }
        }

        fn spec(&self, yaml: &str) -> FixtureSpec {
            FixtureSpec { spec: conformance::spec::<SshKey>(yaml), passwd: self.passwd.clone() }
        }

        fn keys(&self) -> PathBuf {
            self.home.join(".ssh/authorized_keys")
        }

        /// Every entry below the home: path, kind, owner, mode and file content.
        fn snapshot(&self) -> String {
            fn walk(dir: &Path, out: &mut String) {
                let mut entries: Vec<_> =
                    std::fs::read_dir(dir).expect("ls").map(|e| e.expect("entry").path()).collect();
                entries.sort();
                for path in entries {
                    let meta = std::fs::symlink_metadata(&path).expect("meta");
                    out.push_str(&format!("{} {}:{} {:o}\n", path.display(), meta.uid(), meta.gid(), meta.mode()));
                    if meta.is_dir() {
                        walk(&path, out);
                    } else if meta.is_file() {
                        out.push_str(&std::fs::read_to_string(&path).expect("read"));
                    }
                }
            }
            let mut out = String::new();
            walk(&self.home, &mut out);
            out
        }
    }

    fn noop() -> World {
        World::default()
    }

    #[test]
    fn key_lines_parse() {
        let parsed = parse_line(&format!("{ED1} alice@laptop  work ")).expect("plain");
        assert_eq!(
            (parsed.options.len(), parsed.kind.as_str(), parsed.comment.as_deref()),
            (0, "ssh-ed25519", Some("alice@laptop  work"))
        );
        let parsed = parse_line(&format!(r#"from="10.0.0.0/8,192.168.0.0/16",command="echo \"a b\"",no-pty {ED2}"#))
            .expect("options");
        assert_eq!(parsed.options, [r#"from="10.0.0.0/8,192.168.0.0/16""#, r#"command="echo \"a b\"""#, "no-pty"]);
        assert_eq!(parsed.comment, None);
        assert!(parsed.same_key(&parse_line(ED2).expect("bare")));
        for not_a_key in [
            "",
            "  ",
            "# ssh-ed25519 AAAA",
            "no-pty",
            "no-pty,,x ssh-ed25519 AAAA",
            "ssh-ed25519",
            r#"from="x ssh-ed25519 AAAA"#,
            "garbage here",
        ] {
            assert_eq!(parse_line(not_a_key), None, "{not_a_key:?}");
        }
    }

    #[test]
    fn base64_and_embedded_types() {
        assert_eq!(decode_base64("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("a"), None);
        assert_eq!(decode_base64("a$bc"), None);
        assert_eq!(decode_base64("aGk==="), None);
        assert_eq!(embedded_type(&[0, 0, 0, 2, b'h', b'i', 9]), Some(&b"hi"[..]));
        assert_eq!(embedded_type(&[0, 0, 0, 9, b'h']), None);
        assert_eq!(embedded_type(&[0, 0]), None);
    }

    #[test]
    fn spec_keys_are_checked() {
        assert_eq!(desired_key(&format!("{ED1} a b")).expect("ok").comment.as_deref(), Some("a b"));
        assert!(desired_key(RSA).is_ok());
        let blob = ED1.split_once(' ').expect("space").1;
        let cases = [
            (format!("no-pty {ED1}"), "must start with the key type"),
            (format!("{ED1}\nssh-rsa x"), "single line"),
            ("ssh-ed25519".to_string(), "no base64 blob"),
            ("ssh-ed25519 !!!!".to_string(), "not valid base64"),
            (format!("ssh-rsa {blob}"), "holds a `ssh-ed25519` key but the line says `ssh-rsa`"),
            ("ssh-ed25519 aGVsbG8=".to_string(), "not an SSH public key"),
        ];
        for (key, want) in cases {
            let err = desired_key(&key).expect_err(&key);
            assert!(err.contains(want), "{key}: {err}");
        }
    }

    #[test]
    fn options_are_single_items() {
        for good in ["no-pty", r#"from="10.0.0.0/8""#, r#"command="echo a, b""#, r#"environment="A=\"x y\"""#] {
            assert!(valid_option(good), "{good} rejected");
        }
        for bad in ["", "a,b", "a b", r#"from="x"#, "a\nb"] {
            assert!(!valid_option(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn lint_names_fields() {
        let spec = conformance::spec::<SshKey>(&format!(
            "{{user: 'a:b', key: 'from=x {ED1}', options: ['a b'], ensure: absent, exclusive: true, path: rel/keys}}"
        ));
        let lints = SshKey::lint(&spec, Common { name: "t", when: None });
        let fields: Vec<_> = lints.iter().filter_map(|l| l.field.as_deref()).collect();
        assert_eq!(fields, ["user", "key", "options", "exclusive", "path"]);
        let ok = conformance::spec::<SshKey>(&format!("{{user: alice, key: '{ED1}'}}"));
        assert!(SshKey::lint(&ok, Common { name: "t", when: None }).is_empty());
    }

    /// (current text, spec options, ensure, exclusive, expected text, attributes)
    #[test]
    fn transform_table() {
        let want = |options: &[&str]| {
            let mut line = desired_key(&format!("{ED1} alice")).expect("key");
            line.options = options.iter().map(|s| s.to_string()).collect();
            line
        };
        let rsa_line = format!("{RSA} bob\n");
        type Case<'a> = (String, &'a [&'a str], Ensure, bool, String, &'a [&'a str]);
        let cases: Vec<Case<'_>> = vec![
            (String::new(), &[], Ensure::Present, false, format!("{ED1} alice\n"), &["ensure"]),
            (
                format!("# keys\n{RSA} bob"),
                &["no-pty"],
                Ensure::Present,
                false,
                format!("# keys\n{RSA} bob\nno-pty {ED1} alice\n"),
                &["ensure"],
            ),
            // options and comment changes replace the line in place
            (
                format!("{rsa_line}from=\"x\" {ED1} old\n{ED2}\n"),
                &["no-pty"],
                Ensure::Present,
                false,
                format!("{rsa_line}no-pty {ED1} alice\n{ED2}\n"),
                &["options", "comment"],
            ),
            // already there with other whitespace: untouched
            (
                format!("no-pty   {ED1}   alice\n"),
                &["no-pty"],
                Ensure::Present,
                false,
                format!("no-pty   {ED1}   alice\n"),
                &[],
            ),
            // duplicates go
            (
                format!("{ED1} alice\n{rsa_line}{ED1} alice\n"),
                &[],
                Ensure::Present,
                false,
                format!("{ED1} alice\n{rsa_line}"),
                &["duplicates"],
            ),
            // exclusive: other keys and junk go, comments and blank lines stay
            (
                format!("# mine\n{rsa_line}\n{ED1} alice\nnot a key\n{ED2}\n"),
                &[],
                Ensure::Present,
                true,
                format!("# mine\n\n{ED1} alice\n"),
                &["other_keys"],
            ),
            (format!("{ED1} alice\n"), &[], Ensure::Present, true, format!("{ED1} alice\n"), &[]),
            // absent removes every line with the key, whatever its options or comment
            (
                format!("{ED1} alice\n{rsa_line}no-pty {ED1} x"),
                &[],
                Ensure::Absent,
                false,
                rsa_line.clone(),
                &["ensure"],
            ),
            (rsa_line.clone(), &[], Ensure::Absent, false, rsa_line.clone(), &[]),
        ];
        for (current, options, ensure, exclusive, text, attrs) in cases {
            let (got, changes) = plan(&current, &want(options), ensure, exclusive);
            assert_eq!(got, text, "{current:?} {options:?} {ensure:?}");
            let got_attrs: Vec<&str> = changes.iter().map(|c| c.attribute.as_str()).collect();
            assert_eq!(got_attrs, attrs, "{current:?} {options:?} {ensure:?}");
        }
    }

    #[test]
    fn conformance() {
        const WANT: &str = "from=\"10.0.0.0/8\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g alice\n";
        let other = format!("{RSA} bob\n");
        let wrong = format!("{other}no-pty {ED1} alice\n");
        let right = format!("{other}{WANT}");
        // (initial file or None for no .ssh at all, seeded as nobody:nobody 0600 (else root 0644),
        //  ensure, exclusive, attributes, expected content)
        type Case<'a> = (Option<&'a str>, bool, &'a str, bool, &'a [&'a str], Option<String>);
        let cases: Vec<Case<'_>> = vec![
            (None, false, "present", false, &["directory", "ensure"], Some(WANT.to_string())),
            (Some(""), false, "present", false, &["ensure", "owner", "mode"], Some(WANT.to_string())),
            (Some(&wrong), true, "present", false, &["options"], Some(right.clone())),
            (Some(&wrong), true, "present", true, &["options", "other_keys"], Some(WANT.to_string())),
            (Some(&right), true, "present", false, &[], Some(right.clone())),
            (Some(&right), false, "present", false, &["owner", "mode"], Some(right.clone())),
            (None, false, "absent", false, &[], None),
            (Some(&wrong), true, "absent", false, &["ensure"], Some(other.clone())),
            (Some(&wrong), false, "absent", false, &["ensure", "owner", "mode"], Some(other.clone())),
            (Some(&other), false, "absent", false, &[], Some(other.clone())),
        ];
        for (initial, owned, ensure, exclusive, attrs, after) in cases {
            let home = Home::new();
            if let Some(text) = initial {
                std::fs::create_dir(home.home.join(".ssh")).expect(".ssh");
                std::fs::write(home.keys(), text).expect("seed");
                let (owner, mode) = if owned { (NOBODY, 0o600) } else { (0, 0o644) };
                nix::unistd::chown(
                    &home.keys(),
                    Some(nix::unistd::Uid::from_raw(owner)),
                    Some(nix::unistd::Gid::from_raw(owner)),
                )
                .expect("chown");
                std::fs::set_permissions(home.keys(), std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .expect("chmod");
            }
            let spec = home.spec(&format!(
                "{{user: nobody, key: '{ED1} alice', options: ['from=\"10.0.0.0/8\"'], ensure: {ensure}, exclusive: {exclusive}}}"
            ));
            let drift = conformance::converge::<Fixture>(&noop(), &spec, || home.snapshot());
            let case = format!("{initial:?} owned={owned} × {ensure} exclusive={exclusive}");
            assert_eq!(attributes(&drift), attrs, "{case}");
            assert_eq!(std::fs::read_to_string(home.keys()).ok(), after, "{case}");
            if drift.is_some() {
                let file = std::fs::metadata(home.keys()).expect("written");
                assert_eq!((file.uid(), file.gid(), file.mode() & 0o7777), (NOBODY, NOBODY, 0o600), "{case}");
            }
            if initial.is_none() && ensure == "present" {
                let dir = std::fs::metadata(home.home.join(".ssh")).expect(".ssh");
                assert_eq!((dir.uid(), dir.gid(), dir.mode() & 0o7777), (NOBODY, NOBODY, 0o700), "{case}");
            }
            if initial.is_none() && ensure == "absent" {
                assert!(!home.home.join(".ssh").exists(), "absent must not create .ssh");
            }
        }
    }

    #[test]
    fn already_correct_file_is_left_alone() {
        let home = Home::new();
        std::fs::create_dir(home.home.join(".ssh")).expect(".ssh");
        std::fs::write(home.keys(), format!("{ED1}   alice\n")).expect("seed");
        nix::unistd::chown(
            &home.keys(),
            Some(nix::unistd::Uid::from_raw(NOBODY)),
            Some(nix::unistd::Gid::from_raw(NOBODY)),
        )
        .expect("chown");
        std::fs::set_permissions(home.keys(), std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        let spec = home.spec(&format!("{{user: nobody, key: '{ED1} alice'}}"));
        assert_eq!(conformance::converge::<Fixture>(&noop(), &spec, || home.snapshot()), None);
    }

    #[test]
    fn symlinked_ssh_dir_is_refused() {
        let home = Home::new();
        let elsewhere = home.home.parent().expect("parent").join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("elsewhere");
        std::fs::write(elsewhere.join("authorized_keys"), "keep\n").expect("seed");
        symlink(&elsewhere, home.home.join(".ssh")).expect("symlink");
        let spec = home.spec(&format!("{{user: nobody, key: '{ED1}'}}"));
        let err = Fixture::check(&spec, &noop().ctx(crate::Mode::NoOp)).expect_err("symlinked .ssh");
        assert!(err.to_string().contains("is a symlink"), "{err}");
        let err =
            Fixture::apply(&spec, &Drift::default(), &noop().ctx(crate::Mode::Enforce)).expect_err("symlinked .ssh");
        assert!(err.to_string().contains(".ssh: is a symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(elsewhere.join("authorized_keys")).expect("kept"), "keep\n");
        assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 1, "nothing written through the link");
    }

    #[test]
    fn planted_symlink_or_hard_link_at_the_file_is_refused() {
        let home = Home::new();
        std::fs::create_dir(home.home.join(".ssh")).expect(".ssh");
        let victim = home.home.parent().expect("parent").join("shadow");
        std::fs::write(&victim, "root:secret\n").expect("victim");
        let spec = home.spec(&format!("{{user: nobody, key: '{ED1}'}}"));
        for (how, plant) in [("symlink", true), ("hard link", false)] {
            let _ = std::fs::remove_file(home.keys());
            if plant {
                symlink(&victim, home.keys()).expect("symlink");
            } else {
                std::fs::hard_link(&victim, home.keys()).expect("hard link");
            }
            let want = if plant { "is a symlink" } else { "has 2 hard links" };
            let err = Fixture::check(&spec, &noop().ctx(crate::Mode::NoOp)).expect_err(how);
            assert!(err.to_string().contains(want), "{how}: {err}");
            let err = Fixture::apply(&spec, &Drift::default(), &noop().ctx(crate::Mode::Enforce)).expect_err(how);
            assert!(err.to_string().contains(want), "{how}: {err}");
            assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "root:secret\n", "{how}");
            assert_eq!(std::fs::metadata(&victim).expect("victim").uid(), 0, "{how}");
        }
    }

    #[test]
    fn a_root_file_the_user_moved_into_her_ssh_dir_is_refused_and_left_alone() {
        let home = Home::new();
        let ssh = home.home.join(".ssh");
        std::fs::create_dir(&ssh).expect(".ssh");
        std::fs::set_permissions(home.home.parent().expect("parent"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        for dir in [&home.home, &ssh] {
            std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).expect("chown");
        }
        // A private file of root's in her home (left there by a `sudo` run, say)…
        const ROOTS: &str = "root:$6$not-for-her$hash:19000:0:99999:7:::\n";
        let roots = home.home.join(".root-notes");
        std::fs::write(&roots, ROOTS).expect("root's file");
        std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // …which she, as herself, renames to her authorized_keys.
        let moved = std::process::Command::new("mv")
            .arg(&roots)
            .arg(home.keys())
            .uid(NOBODY)
            .gid(NOBODY)
            .status()
            .expect("mv as the user");
        assert!(moved.success(), "the user can move root's file in her own directories");
        let state = || {
            let m = std::fs::symlink_metadata(home.keys()).expect("still there");
            (m.ino(), m.uid(), m.gid(), m.mode() & 0o7777, std::fs::read_to_string(home.keys()).expect("read"))
        };
        let before = state();
        assert_eq!((before.1, before.3), (0, 0o600));
        let world = noop();
        for ensure in ["present", "absent"] {
            let spec = home.spec(&format!("{{user: nobody, key: '{ED1} alice', ensure: {ensure}, exclusive: false}}"));
            let check = Fixture::check(&spec, &world.ctx(crate::Mode::NoOp)).expect_err("check refuses");
            let apply =
                Fixture::apply(&spec, &Drift::default(), &world.ctx(crate::Mode::Enforce)).expect_err("apply refuses");
            for err in [check.to_string(), apply.to_string()] {
                let want = format!(
                    "{}: owned by root (uid 0), not by nobody (uid {NOBODY}) (a file of root's only counts in a directory only root can change)",
                    home.keys().display()
                );
                assert!(err.starts_with(&want), "{ensure}: {err}");
                assert!(!err.contains("not-for-her"), "{ensure}: the refused file's content is shown: {err}");
            }
            assert_eq!(state(), before, "{ensure}: the file was changed");
        }
        // Another user's file is refused the same way.
        std::os::unix::fs::chown(home.keys(), Some(1234), Some(1234)).expect("chown");
        let spec = home.spec(&format!("{{user: nobody, key: '{ED1}'}}"));
        let err = Fixture::check(&spec, &world.ctx(crate::Mode::NoOp)).expect_err("foreign file").to_string();
        assert!(err.contains("authorized_keys: owned by uid 1234, not by nobody"), "{err}");
        assert_eq!(std::fs::read_to_string(home.keys()).expect("read"), ROOTS);
    }

    #[test]
    fn foreign_or_open_directories_are_refused() {
        let home = Home::new();
        std::fs::create_dir(home.home.join(".ssh")).expect(".ssh");
        let spec = home.spec(&format!("{{user: nobody, key: '{ED1}'}}"));
        nix::unistd::chown(&home.home.join(".ssh"), Some(nix::unistd::Uid::from_raw(1234)), None).expect("chown");
        let err = Fixture::check(&spec, &noop().ctx(crate::Mode::NoOp)).expect_err("foreign .ssh");
        assert!(err.to_string().contains("owned by uid 1234, not by nobody (65534) or root"), "{err}");
        nix::unistd::chown(&home.home.join(".ssh"), Some(nix::unistd::Uid::from_raw(0)), None).expect("chown");
        std::fs::set_permissions(home.home.join(".ssh"), std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        let err = Fixture::check(&spec, &noop().ctx(crate::Mode::NoOp)).expect_err("open .ssh");
        assert!(err.to_string().contains("writable by group or others"), "{err}");
    }

    #[test]
    fn path_override_inside_and_outside_the_home() {
        let home = Home::new();
        let inside = home.home.join(".ssh/keys.d/extra");
        let spec = home.spec(&format!("{{user: nobody, key: '{ED1}', path: '{}'}}", inside.display()));
        let drift = conformance::converge::<Fixture>(&noop(), &spec, || home.snapshot());
        assert_eq!(attributes(&drift), ["directory", "ensure"]);
        assert_eq!(std::fs::read_to_string(&inside).expect("written"), format!("{ED1}\n"));
        assert_eq!(std::fs::metadata(home.home.join(".ssh/keys.d")).expect("dir").uid(), NOBODY);

        let outside_dir = home.home.parent().expect("parent").join("keys");
        let outside = outside_dir.join("nobody");
        let spec = home.spec(&format!("{{user: nobody, key: '{ED1}', path: '{}'}}", outside.display()));
        let err = Fixture::check(&spec, &noop().ctx(crate::Mode::NoOp)).expect_err("missing dir");
        assert!(err.to_string().contains("keys: directory does not exist"), "{err}");
        std::fs::create_dir(&outside_dir).expect("keys dir");
        let drift =
            conformance::converge::<Fixture>(&noop(), &spec, || std::fs::read_to_string(&outside).unwrap_or_default());
        assert_eq!(attributes(&drift), ["ensure"]);
        assert_eq!(std::fs::metadata(&outside).expect("written").uid(), NOBODY);
    }

    #[test]
    fn unknown_user_is_named() {
        let home = Home::new();
        let spec = home.spec(&format!("{{user: mallory, key: '{ED1}'}}"));
        let err = Fixture::check(&spec, &noop().ctx(crate::Mode::NoOp)).expect_err("unknown user");
        assert_eq!(err.to_string(), format!("user mallory: not found in {}", home.passwd.display()));
    }

    #[test]
    fn locations_below_the_home_are_walked() {
        let user = User { name: "a".into(), uid: 1, gid: 1, home: "/home/a".into(), shell: String::new() };
        let at = |path: Option<&str>| {
            let spec = conformance::spec::<SshKey>(&format!("{{user: a, key: '{ED1}'}}"));
            locate(&SshKeySpec { path: path.map(PathBuf::from), ..spec }, &user)
        };
        let loc = at(None).expect("default");
        assert_eq!(
            (loc.base.as_path(), loc.dirs.as_slice(), loc.name.as_str(), loc.create_dirs),
            (Path::new("/home/a"), &[".ssh".to_string()][..], "authorized_keys", true)
        );
        let loc = at(Some("/home/a/x/y/keys")).expect("inside");
        assert_eq!((loc.dirs, loc.create_dirs), (vec!["x".to_string(), "y".to_string()], true));
        let loc = at(Some("/etc/ssh/keys/a")).expect("outside");
        assert_eq!((loc.base, loc.dirs.len(), loc.create_dirs), (PathBuf::from("/etc/ssh/keys"), 0, false));
        assert!(at(Some("/home/a/../b/keys")).is_err());
        assert_eq!(at(Some("/home/a/keys")).expect("top").file(), PathBuf::from("/home/a/keys"));
    }
}
