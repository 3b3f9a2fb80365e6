//! `users`: local accounts and groups, and which accounts belong to people.
//!
//! Keys: `accounts` (every `/etc/passwd` entry as `{name, uid, gid, home, shell,
//! gecos}`), `groups` (every `/etc/group` entry as `{name, gid, members}`), `human`
//! (the names of human accounts, in passwd order; vigosync relies on this list) and
//! `human_accounts` (the same accounts in full).
//!
//! An account is human when its uid is within `UID_MIN..=UID_MAX` of
//! `/etc/login.defs` (1000 and 60000 by default), its home is a real directory
//! that exists, and its shell is a login shell: not nologin/false/sync/halt/shutdown,
//! and listed in `/etc/shells` when that file exists. NIS `+`/`-` lines are not
//! accounts of this host and are skipped silently; other unparsable lines are
//! skipped and counted under `malformed_lines`.

use serde_json::{Value, json};

use crate::{CollectError, Collector, Host, MalformedLines};

pub struct Users;

const PASSWD: &str = "etc/passwd";
const GROUP: &str = "etc/group";
const LOGIN_DEFS: &str = "etc/login.defs";
const SHELLS: &str = "etc/shells";

const DEFAULT_UID_MIN: u32 = 1000;
const DEFAULT_UID_MAX: u32 = 60000;

/// Shells that exist to refuse a login (or to run one command and exit).
const NON_LOGIN_SHELLS: &[&str] = &["false", "halt", "nologin", "shutdown", "sync"];

/// Homes that mean "no home": a system account's placeholder.
const NO_HOME: &[&str] = &["/", "/dev/null", "/nonexistent"];

impl Collector for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn summary(&self) -> &'static str {
        "local accounts and groups, and the names of human accounts"
    }

    fn collect(&self, host: &Host) -> Result<Value, CollectError> {
        let mut skipped = MalformedLines::default();
        let (accounts, bad) = parse_passwd(&host.read(PASSWD)?);
        skipped.add(PASSWD, bad);
        let (groups, bad) = match host.read_optional(GROUP)? {
            Some(text) => parse_group(&text),
            None => (Vec::new(), 0),
        };
        skipped.add(GROUP, bad);
        let (range, bad) = match host.read_optional(LOGIN_DEFS)? {
            Some(text) => uid_range(&text),
            None => (DEFAULT_UID_MIN..=DEFAULT_UID_MAX, 0),
        };
        skipped.add(LOGIN_DEFS, bad);
        let shells = host.read_optional(SHELLS)?.map(|text| listed_shells(&text));

        let humans: Vec<&Account> = accounts
            .iter()
            .filter(|a| {
                range.contains(&a.uid) && has_real_home(host, &a.home) && is_login_shell(&a.shell, shells.as_deref())
            })
            .collect();
        let mut traits = json!({
            "accounts": accounts.iter().map(Account::to_json).collect::<Vec<_>>(),
            "groups": groups.iter().map(Group::to_json).collect::<Vec<_>>(),
            "human": humans.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            "human_accounts": humans.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
        });
        skipped.insert_into(&mut traits);
        Ok(traits)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    gecos: String,
    home: String,
    shell: String,
}

impl Account {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "uid": self.uid,
            "gid": self.gid,
            "home": self.home,
            "shell": self.shell,
            "gecos": self.gecos,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

impl Group {
    fn to_json(&self) -> Value {
        json!({"name": self.name, "gid": self.gid, "members": self.members})
    }
}

/// Lines that are not entries of this file: blank, comments, NIS compat markers.
fn is_ignorable(line: &str) -> bool {
    line.trim().is_empty() || line.starts_with('#') || line.starts_with('+') || line.starts_with('-')
}

/// passwd(5): `name:password:uid:gid:gecos:home:shell`.
fn parse_passwd(text: &str) -> (Vec<Account>, u64) {
    let mut malformed = 0;
    let accounts = text
        .lines()
        .filter(|line| !is_ignorable(line))
        .filter_map(|line| {
            let account = parse_account(line);
            malformed += u64::from(account.is_none());
            account
        })
        .collect();
    (accounts, malformed)
}

fn parse_account(line: &str) -> Option<Account> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _password, uid, gid, gecos, home, shell] = fields.as_slice() else {
        return None;
    };
    if name.is_empty() {
        return None;
    }
    Some(Account {
        name: name.to_string(),
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
        gecos: gecos.to_string(),
        home: home.to_string(),
        shell: shell.to_string(),
    })
}

/// group(5): `name:password:gid:member,member`.
fn parse_group(text: &str) -> (Vec<Group>, u64) {
    let mut malformed = 0;
    let groups = text
        .lines()
        .filter(|line| !is_ignorable(line))
        .filter_map(|line| {
            let group = parse_group_line(line);
            malformed += u64::from(group.is_none());
            group
        })
        .collect();
    (groups, malformed)
}

fn parse_group_line(line: &str) -> Option<Group> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, _password, gid, members] = fields.as_slice() else {
        return None;
    };
    if name.is_empty() {
        return None;
    }
    Some(Group {
        name: name.to_string(),
        gid: gid.parse().ok()?,
        members: members.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect(),
    })
}

/// `UID_MIN` and `UID_MAX` from login.defs(5), with shadow-utils' defaults for
/// keys that are absent; a key with an unparsable value keeps its default and
/// counts as malformed.
fn uid_range(text: &str) -> (std::ops::RangeInclusive<u32>, u64) {
    let (mut min, mut max, mut malformed) = (DEFAULT_UID_MIN, DEFAULT_UID_MAX, 0);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let target = match words.next() {
            Some("UID_MIN") => &mut min,
            Some("UID_MAX") => &mut max,
            _ => continue,
        };
        match words.next().and_then(|v| v.parse().ok()) {
            Some(value) => *target = value,
            None => malformed += 1,
        }
    }
    (min..=max, malformed)
}

fn listed_shells(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).map(str::to_string).collect()
}

/// A home that is a placeholder, relative, or absent under the root belongs to
/// nobody who logs in.
fn has_real_home(host: &Host, home: &str) -> bool {
    let home = home.trim_end_matches('/');
    if home.is_empty() || !home.starts_with('/') || NO_HOME.contains(&home) {
        return false;
    }
    host.path(home).is_dir()
}

fn is_login_shell(shell: &str, listed: Option<&[String]>) -> bool {
    // passwd(5): an empty shell field means /bin/sh.
    let shell = if shell.is_empty() { "/bin/sh" } else { shell };
    let program = shell.rsplit('/').next().unwrap_or(shell);
    if NON_LOGIN_SHELLS.contains(&program) {
        return false;
    }
    listed.is_none_or(|shells| shells.iter().any(|s| s == shell))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    const PASSWD_DEBIAN: &str = "\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
alice:x:1000:1000:Alice Liddell,,,:/home/alice:/bin/bash
bob:x:1001:1001::/home/bob:/usr/bin/zsh
svc:x:1002:1002:service account:/srv/svc:/usr/sbin/nologin
ghost:x:1003:1003::/home/ghost:/bin/bash
";

    const SHELLS_DEBIAN: &str = "# /etc/shells: valid login shells\n/bin/sh\n/bin/bash\n/usr/bin/bash\n/usr/bin/zsh\n";

    fn debian() -> Fixture {
        Fixture::new()
            .file(PASSWD, PASSWD_DEBIAN)
            .file(SHELLS, SHELLS_DEBIAN)
            .dir("root")
            .dir("home/alice")
            .dir("home/bob")
            .dir("srv/svc")
    }

    fn human(fx: &Fixture) -> Value {
        Users.collect(&fx.host()).expect("users traits")["human"].clone()
    }

    #[test]
    fn accounts_are_reported_in_full() {
        let traits = Users.collect(&debian().host()).expect("users traits");
        let accounts = traits["accounts"].as_array().expect("accounts list");
        assert_eq!(accounts.len(), 7);
        assert_eq!(
            accounts[3],
            json!({"name": "alice", "uid": 1000, "gid": 1000, "home": "/home/alice", "shell": "/bin/bash",
                   "gecos": "Alice Liddell,,,"})
        );
        assert_eq!(traits["human"], json!(["alice", "bob"]));
        assert_eq!(traits["human_accounts"][1]["name"], "bob");
        assert_eq!(traits["groups"], json!([]), "no etc/group in this fixture");
        assert!(traits.get("malformed_lines").is_none(), "{traits}");
    }

    #[test]
    fn human_accounts_follow_login_defs_shells_and_homes() {
        let cases: [(&str, Fixture, Value); 7] = [
            ("defaults: 1000..=60000, existing home, listed shell", debian(), json!(["alice", "bob"])),
            (
                "custom UID_MIN and UID_MAX",
                debian().file(LOGIN_DEFS, "# shadow config\nUID_MIN\t\t 1001\nUID_MAX 1001\nGID_MIN 1000\n"),
                json!(["bob"]),
            ),
            (
                "a low UID_MIN admits root",
                debian().file(LOGIN_DEFS, "UID_MIN 0\n"),
                json!(["root", "alice", "bob"]),
            ),
            ("a home that appears qualifies", debian().dir("home/ghost"), json!(["alice", "bob", "ghost"])),
            (
                "a shell not in /etc/shells disqualifies",
                debian().file(SHELLS, "/bin/sh\n/bin/bash\n"),
                json!(["alice"]),
            ),
            ("without /etc/shells any real shell counts", Fixture::new().file(PASSWD, PASSWD_DEBIAN).dir("home/alice").dir("home/bob"), json!(["alice", "bob"])),
            (
                "placeholder homes and refusing shells",
                Fixture::new()
                    .file(
                        PASSWD,
                        "a:x:1000:1000::/:/bin/sh\nb:x:1001:1001::/nonexistent:/bin/sh\nc:x:1002:1002::/home/c:/bin/false\n\
                         d:x:1003:1003::/home/d:/bin/sync\ne:x:1004:1004::/home/e:/sbin/halt\nf:x:1005:1005::/home/f:/sbin/shutdown\n\
                         g:x:1006:1006::relative:/bin/sh\nh:x:1007:1007::/home/h:\ni:x:1008:1008::/home/i/:/bin/sh\n",
                    )
                    .dir("nonexistent")
                    .dir("home/c")
                    .dir("home/d")
                    .dir("home/e")
                    .dir("home/f")
                    .dir("relative")
                    .dir("home/h")
                    .dir("home/i"),
                json!(["h", "i"]),
            ),
        ];
        for (case, fx, expected) in cases {
            assert_eq!(human(&fx), expected, "{case}");
        }
    }

    #[test]
    fn a_home_that_is_a_file_is_not_a_home() {
        let fx = debian().file("home/ghost", "not a directory");
        assert_eq!(human(&fx), json!(["alice", "bob"]));
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      too:few:fields\n\
                      baduid:x:abc:1000::/home/x:/bin/sh\n\
                      :x:1000:1000::/home/noname:/bin/sh\n\
                      +@netgroup::::::\n\
                      -nisuser::::::\n\
                      \n\
                      alice:x:1000:1000::/home/alice:/bin/bash\n";
        let group = "root:x:0:\nsudo:x:27:alice, bob\nbroken:x:notanumber:\nshort\n";
        let fx =
            Fixture::new().file(PASSWD, passwd).file(GROUP, group).file(LOGIN_DEFS, "UID_MIN lots\n").dir("home/alice");
        let traits = Users.collect(&fx.host()).expect("users traits");
        let names: Vec<&str> =
            traits["accounts"].as_array().expect("list").iter().filter_map(|a| a["name"].as_str()).collect();
        assert_eq!(names, ["root", "alice"]);
        assert_eq!(traits["human"], json!(["alice"]), "an unparsable UID_MIN keeps the default");
        assert_eq!(
            traits["groups"],
            json!([{"name": "root", "gid": 0, "members": []}, {"name": "sudo", "gid": 27, "members": ["alice", "bob"]}])
        );
        assert_eq!(traits["malformed_lines"], json!({"etc/passwd": 3, "etc/group": 2, "etc/login.defs": 1}));
    }

    #[test]
    fn missing_passwd_is_an_error_naming_it() {
        let err = Users.collect(&Fixture::new().host()).expect_err("no passwd");
        assert!(err.to_string().contains("etc/passwd"), "{err}");
    }
}
