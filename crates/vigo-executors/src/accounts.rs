//! User and group lookups from `/etc/passwd` and `/etc/group`.
//!
//! Executors take `owner:`/`group:` as a name or a number and need ids to compare
//! with `stat` and to pass to `fchown`; reports want names back. The files are
//! parsed here directly (they are small and their format is fixed) so that every
//! lookup is testable against a fixture. Accounts that only exist in a network
//! directory (NSS modules such as LDAP) are not seen; a numeric id still works.

use std::path::{Path, PathBuf};

/// The local user database.
pub const PASSWD: &str = "/etc/passwd";
/// The local group database.
pub const GROUP: &str = "/etc/group";

/// Why an account database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

type Result<T> = std::result::Result<T, AccountsError>;

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Looks `name` up in `/etc/passwd`: by name first, then as a numeric uid.
pub fn lookup_user(name: &str) -> Result<Option<User>> {
    lookup_user_in(Path::new(PASSWD), name)
}

/// Looks `name` up in `/etc/group`: by name first, then as a numeric gid.
pub fn lookup_group(name: &str) -> Result<Option<Group>> {
    lookup_group_in(Path::new(GROUP), name)
}

/// Like [`lookup_user`], in the passwd-format file at `path`.
pub fn lookup_user_in(path: &Path, name: &str) -> Result<Option<User>> {
    let users = users_in(path)?;
    let numeric = parse_id(name);
    let by_name = users.iter().find(|u| u.name == name);
    Ok(by_name.or_else(|| users.iter().find(|u| Some(u.uid) == numeric)).cloned())
}

/// Like [`lookup_group`], in the group-format file at `path`.
pub fn lookup_group_in(path: &Path, name: &str) -> Result<Option<Group>> {
    let groups = groups_in(path)?;
    let numeric = parse_id(name);
    let by_name = groups.iter().find(|g| g.name == name);
    Ok(by_name.or_else(|| groups.iter().find(|g| Some(g.gid) == numeric)).cloned())
}

/// The uid for an `owner:` value: a user name, or else a number (which needs no entry,
/// as a file may belong to a uid without an account). Like `chown`, a name wins.
pub fn resolve_uid(name: &str) -> Result<Option<u32>> {
    resolve_uid_in(Path::new(PASSWD), name)
}

/// The gid for a `group:` value: a group name, or a number.
pub fn resolve_gid(name: &str) -> Result<Option<u32>> {
    resolve_gid_in(Path::new(GROUP), name)
}

/// Like [`resolve_uid`], in the passwd-format file at `path`.
pub fn resolve_uid_in(path: &Path, name: &str) -> Result<Option<u32>> {
    let by_name = users_in(path)?.into_iter().find(|u| u.name == name);
    Ok(by_name.map(|u| u.uid).or_else(|| parse_id(name)))
}

/// Like [`resolve_gid`], in the group-format file at `path`.
pub fn resolve_gid_in(path: &Path, name: &str) -> Result<Option<u32>> {
    let by_name = groups_in(path)?.into_iter().find(|g| g.name == name);
    Ok(by_name.map(|g| g.gid).or_else(|| parse_id(name)))
}

/// The name of `uid` for display, or the number when it has no entry or the file is unreadable.
pub fn user_name(uid: u32) -> String {
    user_name_in(Path::new(PASSWD), uid)
}

/// The name of `gid` for display, or the number.
pub fn group_name(gid: u32) -> String {
    group_name_in(Path::new(GROUP), gid)
}

/// Like [`user_name`], in the passwd-format file at `path`.
pub fn user_name_in(path: &Path, uid: u32) -> String {
    let found = users_in(path).ok().and_then(|users| users.into_iter().find(|u| u.uid == uid));
    found.map_or_else(|| uid.to_string(), |u| u.name)
}

/// Like [`group_name`], in the group-format file at `path`.
pub fn group_name_in(path: &Path, gid: u32) -> String {
    let found = groups_in(path).ok().and_then(|groups| groups.into_iter().find(|g| g.gid == gid));
    found.map_or_else(|| gid.to_string(), |g| g.name)
}

/// Every well-formed entry of a passwd-format file; malformed lines are skipped.
pub fn users_in(path: &Path) -> Result<Vec<User>> {
    Ok(records(path)?.iter().filter_map(|line| parse_user(line)).collect())
}

/// Every well-formed entry of a group-format file; malformed lines are skipped.
pub fn groups_in(path: &Path) -> Result<Vec<Group>> {
    Ok(records(path)?.iter().filter_map(|line| parse_group(line)).collect())
}

/// The data lines of an account file: no blanks, comments or NIS `+`/`-` include lines.
fn records(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|source| AccountsError::Io { path: path.to_path_buf(), source })?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .map(str::to_string)
        .collect())
}

fn parse_user(line: &str) -> Option<User> {
    // name:password:uid:gid:gecos:home:shell
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 7 || fields[0].is_empty() {
        return None;
    }
    Some(User {
        name: fields[0].to_string(),
        uid: parse_id(fields[2])?,
        gid: parse_id(fields[3])?,
        home: PathBuf::from(fields[5]),
        shell: fields[6].to_string(),
    })
}

fn parse_group(line: &str) -> Option<Group> {
    // name:password:gid:member,member
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() != 4 || fields[0].is_empty() {
        return None;
    }
    Some(Group {
        name: fields[0].to_string(),
        gid: parse_id(fields[2])?,
        members: fields[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
    })
}

/// A decimal id: digits only (no sign, no blanks), fitting in 32 bits.
fn parse_id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_FIXTURE: &str = "\
# a comment
root:x:0:0:root:/root:/bin/bash

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line without colons
short:x:5
badid:x:abc:1::/:/bin/sh
+nisuser::::::
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
1000:x:2000:2000:numeric name:/home/n:/bin/sh
alice:x:1000:1000:Alice,,,:/home/alice:/bin/zsh
";

    const GROUP_FIXTURE: &str = "\
root:x:0:
adm:x:4:syslog,alice
broken
nogroup:x:65534:
staff:x:50:alice,,bob
";

    fn fixtures() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        std::fs::write(&passwd, PASSWD_FIXTURE).expect("passwd");
        std::fs::write(&group, GROUP_FIXTURE).expect("group");
        (dir, passwd, group)
    }

    #[test]
    fn users_by_name_and_number() {
        let (_dir, passwd, _) = fixtures();
        let alice = lookup_user_in(&passwd, "alice").expect("read").expect("alice");
        assert_eq!(
            alice,
            User { name: "alice".into(), uid: 1000, gid: 1000, home: "/home/alice".into(), shell: "/bin/zsh".into() }
        );
        assert_eq!(lookup_user_in(&passwd, "65534").expect("read").map(|u| u.name), Some("nobody".into()));
        // A name made of digits wins over the uid of the same number.
        assert_eq!(lookup_user_in(&passwd, "1000").expect("read").map(|u| u.uid), Some(2000));
        assert_eq!(lookup_user_in(&passwd, "mallory").expect("read"), None);
        assert_eq!(lookup_user_in(&passwd, "").expect("read"), None);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let (_dir, passwd, group) = fixtures();
        let names: Vec<String> = users_in(&passwd).expect("read").into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["root", "daemon", "nobody", "1000", "alice"]);
        let groups: Vec<String> = groups_in(&group).expect("read").into_iter().map(|g| g.name).collect();
        assert_eq!(groups, ["root", "adm", "nogroup", "staff"]);
    }

    #[test]
    fn groups_by_name_and_number_with_members() {
        let (_dir, _, group) = fixtures();
        let staff = lookup_group_in(&group, "staff").expect("read").expect("staff");
        assert_eq!(staff.gid, 50);
        assert_eq!(staff.members, ["alice", "bob"]);
        assert_eq!(lookup_group_in(&group, "4").expect("read").map(|g| g.name), Some("adm".into()));
        assert_eq!(lookup_group_in(&group, "wheel").expect("read"), None);
    }

    #[test]
    fn resolve_accepts_numbers_without_entries() {
        let (_dir, passwd, group) = fixtures();
        assert_eq!(resolve_uid_in(&passwd, "alice").expect("read"), Some(1000));
        assert_eq!(resolve_uid_in(&passwd, "4242").expect("read"), Some(4242));
        assert_eq!(resolve_uid_in(&passwd, "1000").expect("read"), Some(2000), "a name wins over a number");
        assert_eq!(resolve_uid_in(&passwd, "-1").expect("read"), None);
        assert_eq!(resolve_uid_in(&passwd, "99999999999").expect("read"), None);
        assert_eq!(resolve_gid_in(&group, "nogroup").expect("read"), Some(65534));
        assert_eq!(resolve_gid_in(&group, "7").expect("read"), Some(7));
        assert_eq!(resolve_gid_in(&group, "nope").expect("read"), None);
    }

    #[test]
    fn reverse_lookup_falls_back_to_the_number() {
        let (_dir, passwd, group) = fixtures();
        assert_eq!(user_name_in(&passwd, 65534), "nobody");
        assert_eq!(user_name_in(&passwd, 4242), "4242");
        assert_eq!(group_name_in(&group, 50), "staff");
        assert_eq!(group_name_in(&group, 51), "51");
        assert_eq!(user_name_in(Path::new("/nonexistent/passwd"), 0), "0");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = lookup_user_in(Path::new("/nonexistent/passwd"), "root").expect_err("missing file");
        assert!(err.to_string().starts_with("/nonexistent/passwd: "), "{err}");
    }

    #[test]
    fn the_system_database_knows_root() {
        assert_eq!(resolve_uid("root").expect("read /etc/passwd"), Some(0));
        assert_eq!(user_name(0), "root");
    }
}
