//! Adding users and groups to a host by editing its own copies of `passwd`,
//! `group`, `shadow` and `gshadow`: deterministic, independent of the
//! installed `useradd`, and it can only ever touch that host's files.
//! (`useradd` itself also works inside a host, since each host has its own `/etc`.)

/// The four account databases of one host, as text.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AccountFiles {
    pub passwd: String,
    pub group: String,
    /// `None` when the host has no such file.
    pub shadow: Option<String>,
    pub gshadow: Option<String>,
}

/// Accepts the names Debian's `useradd` accepts by default (lowercase, digits,
/// `_`, `-`, an optional trailing `$` for machine accounts), at most 32 bytes.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let mut chars = body.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !first_ok || !rest_ok || name.len() > 32 {
        return Err(
            "names start with a lowercase letter or `_` and hold only lowercase letters, digits, `_` and `-` (at most 32)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Fields of each non-empty, non-comment line of a colon-separated database.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().filter(|line| !line.trim().is_empty() && !line.starts_with('#')).map(|line| line.split(':').collect())
}

fn by_name<'a>(text: &'a str, name: &str) -> Option<Vec<&'a str>> {
    records(text).find(|fields| fields.first() == Some(&name))
}

fn by_id(text: &str, id: u32) -> Option<Vec<&str>> {
    let id = id.to_string();
    records(text).find(|fields| fields.get(2) == Some(&id.as_str()))
}

fn append(text: &mut String, line: &str) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
}

/// Adds group `name` with `gid`; both must be unused.
pub(crate) fn add_group(files: &mut AccountFiles, name: &str, gid: u32) -> Result<(), String> {
    validate_name(name)?;
    if let Some(existing) = by_name(&files.group, name) {
        return Err(format!("group already exists with gid {}", existing.get(2).unwrap_or(&"?")));
    }
    if let Some(owner) = by_id(&files.group, gid) {
        return Err(format!("gid {gid} already belongs to group `{}`", owner[0]));
    }
    append(&mut files.group, &format!("{name}:x:{gid}:"));
    if let Some(gshadow) = files.gshadow.as_mut() {
        append(gshadow, &format!("{name}:!::"));
    }
    Ok(())
}

/// Adds user `name` with `uid`, home `/home/<name>` and shell `/bin/bash`, and
/// a locked password. The primary group is the existing group with `gid`, or a
/// new group named like the user (as `useradd -U` does).
pub(crate) fn add_user(
    files: &mut AccountFiles,
    name: &str,
    uid: u32,
    gid: u32,
    days_since_epoch: u64,
) -> Result<(), String> {
    validate_name(name)?;
    if by_name(&files.passwd, name).is_some() {
        return Err("user already exists".to_owned());
    }
    if let Some(owner) = by_id(&files.passwd, uid) {
        return Err(format!("uid {uid} already belongs to user `{}`", owner[0]));
    }
    if by_id(&files.group, gid).is_none() {
        add_group(files, name, gid).map_err(|reason| format!("cannot create its primary group: {reason}"))?;
    }
    append(&mut files.passwd, &format!("{name}:x:{uid}:{gid}::/home/{name}:/bin/bash"));
    if let Some(shadow) = files.shadow.as_mut() {
        append(shadow, &format!("{name}:!:{days_since_epoch}:0:99999:7:::"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> AccountFiles {
        AccountFiles {
            passwd: "root:x:0:0:root:/root:/bin/bash\nbin:x:2:2:bin:/bin:/usr/sbin/nologin".to_owned(),
            group: "root:x:0:\nusers:x:100:\n".to_owned(),
            shadow: Some("root:*:19000:0:99999:7:::\n".to_owned()),
            gshadow: None,
        }
    }

    #[test]
    fn user_with_new_group_lands_in_every_database() {
        let mut files = base();
        add_user(&mut files, "alice", 2001, 2001, 20_000).expect("added");
        assert!(files.passwd.ends_with("\nalice:x:2001:2001::/home/alice:/bin/bash\n"));
        assert!(files.group.ends_with("users:x:100:\nalice:x:2001:\n"));
        assert!(files.shadow.as_deref().is_some_and(|s| s.ends_with("alice:!:20000:0:99999:7:::\n")));
        assert_eq!(files.gshadow, None, "absent files stay absent");
    }

    #[test]
    fn user_joins_an_existing_group_by_gid() {
        let mut files = base();
        add_user(&mut files, "bob", 2002, 100, 1).expect("added");
        assert_eq!(files.group, base().group, "no group created");
        assert!(files.passwd.contains("bob:x:2002:100:"));
    }

    #[test]
    fn conflicts_are_refused_and_leave_files_alone() {
        let cases: &[(&str, u32, u32, &str)] = &[
            ("root", 3000, 3000, "user already exists"),
            ("carol", 2, 3000, "uid 2 already belongs to user `bin`"),
            ("users", 3000, 3000, "group already exists with gid 100"),
            ("Bad", 3000, 3000, "names start with"),
            ("a:b", 3000, 3000, "names start with"),
        ];
        for &(name, uid, gid, want) in cases {
            let mut files = base();
            let err = add_user(&mut files, name, uid, gid, 1).expect_err(name);
            assert!(err.contains(want), "{name}: {err}");
            assert_eq!(files, base(), "{name} left files unchanged");
        }
    }

    #[test]
    fn groups_refuse_duplicate_names_and_ids() {
        let mut files = base();
        files.gshadow = Some(String::new());
        add_group(&mut files, "ops", 4000).expect("added");
        assert_eq!(files.gshadow.as_deref(), Some("ops:!::\n"));
        assert!(add_group(&mut files, "ops", 4001).is_err());
        let err = add_group(&mut files, "dev", 4000).expect_err("gid taken");
        assert_eq!(err, "gid 4000 already belongs to group `ops`");
    }

    #[test]
    fn machine_account_names_are_valid() {
        assert!(validate_name("host1$").is_ok());
        assert!(validate_name("_apt").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"a".repeat(33)).is_err());
    }
}
