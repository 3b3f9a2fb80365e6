//! `os`: the distribution, from `os-release`.
//!
//! Keys: `family` (`debian`, `redhat`, `suse`, `arch`, `alpine`, `gentoo`, else the
//! ID), `name` (the ID: `debian`, `ubuntu`, `rocky`…), `pretty_name`, `version`
//! (VERSION_ID, a string), `version_major` (a number), `codename`, `id_like` (a
//! list). Missing values are `null`. `/etc/os-release` wins over
//! `/usr/lib/os-release`, as the os-release(5) specification requires.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{CollectError, Collector, Host, MalformedLines};

pub struct Os;

const SOURCES: &[&str] = &["etc/os-release", "usr/lib/os-release"];

/// Families by distribution ID. Derivatives not listed here are still placed by
/// their `ID_LIKE`, so the table only needs the ancestors and common IDs.
const FAMILIES: &[(&str, &[&str])] = &[
    ("alpine", &["alpine", "postmarketos"]),
    ("arch", &["arch", "archarm", "artix", "endeavouros", "manjaro"]),
    ("debian", &["debian", "devuan", "kali", "linuxmint", "pop", "raspbian", "ubuntu"]),
    ("gentoo", &["funtoo", "gentoo"]),
    ("redhat", &["almalinux", "amzn", "centos", "fedora", "ol", "rhel", "rocky", "scientific"]),
    ("suse", &["sled", "sles", "suse"]),
];

impl Collector for Os {
    fn name(&self) -> &'static str {
        "os"
    }

    fn summary(&self) -> &'static str {
        "distribution family, name, version and codename from os-release"
    }

    fn collect(&self, host: &Host) -> Result<Value, CollectError> {
        let (source, text) = host.read_first(SOURCES)?;
        let (fields, malformed) = parse_os_release(&text);
        let mut traits = describe(&fields);
        let mut skipped = MalformedLines::default();
        skipped.add(source, malformed);
        skipped.insert_into(&mut traits);
        Ok(traits)
    }
}

fn describe(fields: &BTreeMap<String, String>) -> Value {
    let get = |key: &str| fields.get(key).map(String::as_str).filter(|v| !v.is_empty());
    // os-release(5) gives these defaults for a file that omits them.
    let id = get("ID").unwrap_or("linux");
    let id_like: Vec<&str> = get("ID_LIKE").map(|v| v.split_whitespace().collect()).unwrap_or_default();
    let version = get("VERSION_ID");
    let codename = get("VERSION_CODENAME")
        .or_else(|| get("UBUNTU_CODENAME"))
        .map(str::to_string)
        .or_else(|| get("VERSION").and_then(codename_from_version));

    json!({
        "family": family(id, &id_like),
        "name": id,
        "pretty_name": get("PRETTY_NAME").unwrap_or("Linux"),
        "version": version,
        "version_major": version.and_then(leading_number),
        "codename": codename,
        "id_like": id_like,
    })
}

/// The first of the ID and then the ID_LIKE entries that names a known family.
fn family(id: &str, id_like: &[&str]) -> String {
    std::iter::once(id).chain(id_like.iter().copied()).find_map(known_family).unwrap_or(id).to_string()
}

fn known_family(id: &str) -> Option<&'static str> {
    // openSUSE flavours keep multiplying (leap, tumbleweed, microos, slowroll…).
    if id.starts_with("opensuse") {
        return Some("suse");
    }
    FAMILIES.iter().find(|(_, ids)| ids.contains(&id)).map(|(family, _)| *family)
}

/// `12 (bookworm)` → `bookworm`; `14.04.6 LTS, Trusty Tahr` → `Trusty Tahr`.
fn codename_from_version(version: &str) -> Option<String> {
    let inner = match (version.find('('), version.rfind(')')) {
        (Some(open), Some(close)) if open < close => &version[open + 1..close],
        _ => version.split_once(',').map(|(_, rest)| rest)?,
    };
    let inner = inner.trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

/// `22.04` → 22; `rolling` → none.
fn leading_number(version: &str) -> Option<u64> {
    let digits: &str = &version[..version.find(|c: char| !c.is_ascii_digit()).unwrap_or(version.len())];
    digits.parse().ok()
}

/// Parses os-release(5): `KEY=value` lines, shell-style quoting and backslash
/// escapes, `#` comments and blank lines ignored. Returns the fields (a later
/// assignment wins, as in a shell) and the number of lines that could not be parsed.
pub(crate) fn parse_os_release(text: &str) -> (BTreeMap<String, String>, u64) {
    let mut fields = BTreeMap::new();
    let mut malformed = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_assignment(line) {
            Some((key, value)) => {
                fields.insert(key.to_string(), value);
            }
            None => malformed += 1,
        }
    }
    (fields, malformed)
}

fn parse_assignment(line: &str) -> Option<(&str, String)> {
    let (key, raw) = line.split_once('=')?;
    let mut chars = key.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((key, unquote(raw)?))
}

/// Shell word rules, restricted to what os-release allows: single quotes are
/// literal, double quotes honour `\$ \" \\ \``, an unquoted backslash escapes the
/// next character, and unquoted whitespace ends the value (only a comment may follow).
fn unquote(raw: &str) -> Option<String> {
    let mut value = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => value.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        c @ ('$' | '"' | '\\' | '`') => value.push(c),
                        c => {
                            value.push('\\');
                            value.push(c);
                        }
                    },
                    c => value.push(c),
                }
            },
            '\\' => value.push(chars.next()?),
            c if c.is_whitespace() => {
                let rest = chars.as_str().trim_start();
                return (rest.is_empty() || rest.starts_with('#')).then_some(value);
            }
            c => value.push(c),
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    const DEBIAN_12: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;

    const UBUNTU_2204: &str = r#"PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=jammy
"#;

    const ROCKY_9: &str = r#"NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"
ANSI_COLOR="0;32"
"#;

    const ALPINE_319: &str = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n\
        PRETTY_NAME=\"Alpine Linux v3.19\"\nHOME_URL=\"https://alpinelinux.org/\"\n";

    fn collect(files: &[(&str, &str)]) -> Value {
        let fx = files.iter().fold(Fixture::new(), |fx, (rel, text)| fx.file(rel, text));
        Os.collect(&fx.host()).expect("os traits")
    }

    #[test]
    fn distributions_are_described() {
        let cases = [
            (
                DEBIAN_12,
                json!({"family": "debian", "name": "debian", "pretty_name": "Debian GNU/Linux 12 (bookworm)",
                       "version": "12", "version_major": 12, "codename": "bookworm", "id_like": []}),
            ),
            (
                UBUNTU_2204,
                json!({"family": "debian", "name": "ubuntu", "pretty_name": "Ubuntu 22.04.4 LTS",
                       "version": "22.04", "version_major": 22, "codename": "jammy", "id_like": ["debian"]}),
            ),
            (
                ROCKY_9,
                json!({"family": "redhat", "name": "rocky", "pretty_name": "Rocky Linux 9.3 (Blue Onyx)",
                       "version": "9.3", "version_major": 9, "codename": "Blue Onyx",
                       "id_like": ["rhel", "centos", "fedora"]}),
            ),
            (
                ALPINE_319,
                json!({"family": "alpine", "name": "alpine", "pretty_name": "Alpine Linux v3.19",
                       "version": "3.19.1", "version_major": 3, "codename": null, "id_like": []}),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(collect(&[("etc/os-release", text)]), expected, "for:\n{text}");
        }
    }

    #[test]
    fn family_comes_from_id_then_id_like_then_falls_back_to_the_id() {
        let cases: [(&str, &[&str], &str); 7] = [
            ("raspbian", &["debian"], "debian"),
            ("zorin", &["ubuntu", "debian"], "debian"),
            ("almalinux", &["rhel", "centos", "fedora"], "redhat"),
            ("opensuse-microos", &["suse", "opensuse"], "suse"),
            ("opensuse-slowroll", &[], "suse"),
            ("cachyos", &["arch"], "arch"),
            ("nixos", &[], "nixos"),
        ];
        for (id, like, expected) in cases {
            assert_eq!(family(id, like), expected, "ID={id} ID_LIKE={like:?}");
        }
    }

    #[test]
    fn usr_lib_os_release_is_the_fallback_and_etc_wins() {
        let only_usr = collect(&[("usr/lib/os-release", ALPINE_319)]);
        assert_eq!(only_usr["name"], "alpine");
        let both = collect(&[("usr/lib/os-release", ALPINE_319), ("etc/os-release", DEBIAN_12)]);
        assert_eq!(both["name"], "debian");
    }

    #[test]
    fn missing_os_release_names_both_files() {
        let fx = Fixture::new();
        let err = Os.collect(&fx.host()).expect_err("no os-release");
        let message = err.to_string();
        assert!(message.contains("etc/os-release") && message.contains("usr/lib/os-release"), "{message}");
    }

    #[test]
    fn an_empty_file_gets_the_specified_defaults() {
        let traits = collect(&[("etc/os-release", "# nothing here\n")]);
        assert_eq!(
            traits,
            json!({"family": "linux", "name": "linux", "pretty_name": "Linux", "version": null,
                   "version_major": null, "codename": null, "id_like": []})
        );
    }

    #[test]
    fn codename_falls_back_to_the_version_text() {
        let cases = [
            ("ID=debian\nVERSION=\"12 (bookworm)\"\n", json!("bookworm")),
            ("ID=ubuntu\nVERSION=\"14.04.6 LTS, Trusty Tahr\"\n", json!("Trusty Tahr")),
            ("ID=ubuntu\nVERSION=\"20.04 LTS\"\nUBUNTU_CODENAME=focal\n", json!("focal")),
            ("ID=arch\nBUILD_ID=rolling\n", json!(null)),
            ("ID=x\nVERSION=\"1 ()\"\n", json!(null)),
        ];
        for (text, expected) in cases {
            assert_eq!(collect(&[("etc/os-release", text)])["codename"], expected, "for:\n{text}");
        }
    }

    #[test]
    fn values_follow_shell_quoting() {
        let cases = [
            ("A=plain", Some("plain")),
            ("A=\"two words\"", Some("two words")),
            ("A='single $quoted \\n'", Some("single $quoted \\n")),
            (r#"A="esc \" \$ \\ \` \n""#, Some("esc \" $ \\ ` \\n")),
            (r"A=un\ quoted", Some("un quoted")),
            ("A=", Some("")),
            ("A=\"\"", Some("")),
            ("A=value # trailing comment", Some("value")),
            ("A=\"unterminated", None),
            ("A='unterminated", None),
            ("A=two words", None),
            ("A=trailing\\", None),
            ("no equals sign", None),
            ("1A=x", None),
            ("A-B=x", None),
            ("=x", None),
        ];
        for (line, expected) in cases {
            let (fields, malformed) = parse_os_release(line);
            assert_eq!(fields.get("A").map(String::as_str), expected, "line {line:?}");
            assert_eq!(malformed, u64::from(expected.is_none()), "line {line:?}");
        }
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let text = "ID=debian\nthis is garbage\nVERSION_ID=\"12\nPRETTY_NAME='Debian'\n";
        let traits = collect(&[("etc/os-release", text)]);
        assert_eq!(traits["name"], "debian");
        assert_eq!(traits["pretty_name"], "Debian");
        assert_eq!(traits["version"], Value::Null);
        assert_eq!(traits["malformed_lines"], json!({"etc/os-release": 2}));
    }

    #[test]
    fn a_later_assignment_wins_and_blank_lines_are_ignored() {
        let (fields, malformed) = parse_os_release("\n  ID=first\n\n\t# comment\nID=second\n");
        assert_eq!(fields.get("ID").map(String::as_str), Some("second"));
        assert_eq!(malformed, 0);
    }

    #[test]
    fn version_major_is_the_leading_number() {
        assert_eq!(leading_number("22.04"), Some(22));
        assert_eq!(leading_number("9"), Some(9));
        assert_eq!(leading_number("rolling"), None);
        assert_eq!(leading_number(""), None);
    }
}
