//! `host`: one entry of `/etc/hosts`, with the semantics of Puppet's `host` type.
//!
//! An entry is identified by its canonical hostname (the second field of a line,
//! compared case-insensitively as DNS does). Every other line, comment and blank line
//! is left exactly as it was, and a matching line whose fields already agree is kept
//! byte for byte, so hand-formatted files are not rewritten for whitespace.

use std::net::IpAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use vigo_model::catalog::{Common, Lint, Target};

use crate::executor::{Applied, Change, Check, Ctx, Drift, ExecError, Executor};
use crate::safe_fs::Attrs;
use crate::textfile;

pub struct Host;

/// Whether the entry should exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    #[default]
    Present,
    Absent,
}

/// One line of a hosts file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The canonical hostname (RFC 1123); it identifies the entry.
    pub hostname: String,
    /// The IPv4 or IPv6 address the names resolve to. Required when `ensure` is `present`.
    #[serde(default)]
    pub ip: Option<String>,
    /// Further names for the same address. When left out, an existing entry keeps its
    /// aliases; `[]` removes them.
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    /// `present` (default) keeps one line `ip<TAB>hostname aliases…` (rewriting a line
    /// with that hostname in place, keeping its `# comment`, or appending one);
    /// `absent` removes every line whose canonical hostname matches.
    #[serde(default)]
    pub ensure: Ensure,
    /// The hosts file to edit (default `/etc/hosts`).
    #[serde(default = "default_target")]
    pub target: PathBuf,
}

fn default_target() -> PathBuf {
    PathBuf::from("/etc/hosts")
}

impl Executor for Host {
    type Spec = HostSpec;

    const NAME: &'static str = "host";
    const SUMMARY: &'static str = "An /etc/hosts entry: address, canonical hostname and aliases (Puppet's host)";
    const EXAMPLE: &'static str = r#"- name: database address
  type: host
  ip: 10.0.0.5
  hostname: db1.example.com
  aliases: [db1, postgres]
- name: old build host gone
  type: host
  hostname: build.example.com
  ensure: absent
"#;

    fn targets(spec: &HostSpec) -> Vec<Target> {
        vec![Target::Path(spec.target.clone())]
    }

    fn lint(spec: &HostSpec, _common: Common<'_>) -> Vec<Lint> {
        problems(spec)
            .into_iter()
            .map(|(field, message)| Lint { field: Some(field.to_string()), message, hint: None })
            .collect()
    }

    fn check(spec: &HostSpec, _ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        validate(spec)?;
        let current = textfile::read(&spec.target)?;
        let (new, changes) = plan(current.as_deref(), &Want::of(spec));
        let diff = match &new {
            Some(text) if current.as_deref() != Some(text.as_str()) => {
                Some(textfile::diff(&spec.target, current.as_deref().unwrap_or(""), text))
            }
            _ => None,
        };
        Ok(Check::from_changes(changes, diff))
    }

    fn apply(spec: &HostSpec, _drift: &Drift, _ctx: &Ctx<'_>) -> Result<Applied, ExecError> {
        validate(spec)?;
        let want = Want::of(spec);
        textfile::apply_edit(&spec.target, Attrs::default(), |current| {
            Ok(plan(current, &want).0.or_else(|| current.map(str::to_string)))
        })?;
        Ok(Applied::default())
    }
}

/// Everything wrong with a spec, each with the field at fault.
fn problems(spec: &HostSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !spec.target.is_absolute() {
        out.push(("target", format!("target `{}` is not absolute", spec.target.display())));
    }
    if !valid_hostname(&spec.hostname) {
        out.push(("hostname", bad_name("hostname", &spec.hostname)));
    }
    match (&spec.ip, spec.ensure) {
        (None, Ensure::Present) => out.push(("ip", "ip is required when ensure is present".to_string())),
        (Some(ip), _) if ip.parse::<IpAddr>().is_err() => {
            out.push(("ip", format!("ip `{ip}` is not an IPv4 or IPv6 address")));
        }
        _ => {}
    }
    for alias in spec.aliases.iter().flatten() {
        if !valid_hostname(alias) {
            out.push(("aliases", bad_name("alias", alias)));
        }
    }
    out
}

fn bad_name(what: &str, name: &str) -> String {
    format!(
        "{what} `{name}` is not a valid host name (RFC 1123: dot-separated labels of 1-63 letters, digits and hyphens, not starting or ending with a hyphen, 253 characters at most)"
    )
}

fn validate(spec: &HostSpec) -> Result<(), ExecError> {
    let problems = problems(spec);
    if problems.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
    Err(ExecError::failed(format!("{}: {}", spec.target.display(), all.join("; "))))
}

/// RFC 1123 host name: labels of letters, digits and hyphens, no hyphen at either end.
fn valid_hostname(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// The desired entry, borrowed from the spec.
struct Want<'a> {
    hostname: &'a str,
    /// `None` for `ensure: absent`.
    ip: Option<&'a str>,
    aliases: Option<&'a [String]>,
}

impl<'a> Want<'a> {
    fn of(spec: &'a HostSpec) -> Self {
        Want {
            hostname: &spec.hostname,
            ip: match spec.ensure {
                Ensure::Present => spec.ip.as_deref(),
                Ensure::Absent => None,
            },
            aliases: spec.aliases.as_deref(),
        }
    }
}

/// The fields of one hosts line; `comment` starts at its `#`.
#[derive(Debug, PartialEq, Eq)]
struct Entry<'a> {
    ip: &'a str,
    hostname: &'a str,
    aliases: Vec<&'a str>,
    comment: Option<&'a str>,
}

/// Parses a line (without its newline); `None` for blank lines, comments and lines with
/// fewer than two fields.
fn parse_line(line: &str) -> Option<Entry<'_>> {
    let (fields, comment) = match line.find('#') {
        Some(at) => (&line[..at], Some(line[at..].trim_end())),
        None => (line, None),
    };
    let mut words = fields.split_whitespace();
    let ip = words.next()?;
    let hostname = words.next()?;
    Some(Entry { ip, hostname, aliases: words.collect(), comment })
}

fn render(ip: &str, hostname: &str, aliases: &[&str], comment: Option<&str>) -> String {
    let mut line = format!("{ip}\t{hostname}");
    for alias in aliases {
        line.push(' ');
        line.push_str(alias);
    }
    if let Some(comment) = comment {
        line.push('\t');
        line.push_str(comment);
    }
    line
}

/// Addresses compare as addresses (`::1` equals `0:0:0:0:0:0:0:1`).
fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The pure transform: current text (`None` when the file is absent) to the desired text
/// (`None` when nothing is to be written) and the changes that makes.
fn plan(current: Option<&str>, want: &Want<'_>) -> (Option<String>, Vec<Change>) {
    let text = current.unwrap_or("");
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    let mut found = false;
    let mut removed = 0usize;
    for raw in text.split_inclusive('\n') {
        let (line, eol) = match raw.strip_suffix('\n') {
            Some(line) => (line, "\n"),
            None => (raw, ""),
        };
        let entry = parse_line(line).filter(|e| e.hostname.eq_ignore_ascii_case(want.hostname));
        let (Some(entry), Some(ip)) = (entry.as_ref(), want.ip) else {
            if entry.is_some() {
                removed += 1;
            } else {
                out.push_str(raw);
            }
            continue;
        };
        if found {
            removed += 1;
            continue;
        }
        found = true;
        let aliases: Vec<&str> = match want.aliases {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => entry.aliases.clone(),
        };
        let line_changes = entry_changes(entry, ip, want.hostname, &aliases);
        if line_changes.is_empty() {
            out.push_str(raw);
        } else {
            out.push_str(&render(ip, want.hostname, &aliases, entry.comment));
            out.push_str(eol);
        }
        changes.extend(line_changes);
    }
    match want.ip {
        Some(ip) if !found => {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            let aliases: Vec<&str> = want.aliases.unwrap_or_default().iter().map(String::as_str).collect();
            out.push_str(&render(ip, want.hostname, &aliases, None));
            out.push('\n');
            changes.push(Change::set("ensure", "absent", "present"));
        }
        Some(_) if removed > 0 => changes.push(Change::set("duplicates", removed.to_string(), "0")),
        None if removed > 0 => changes.push(Change::set("ensure", "present", "absent")),
        _ => {}
    }
    if changes.is_empty() {
        return (None, changes);
    }
    (Some(out), changes)
}

fn entry_changes(entry: &Entry<'_>, ip: &str, hostname: &str, aliases: &[&str]) -> Vec<Change> {
    let mut changes = Vec::new();
    if !same_ip(entry.ip, ip) {
        changes.push(Change::set("ip", entry.ip, ip));
    }
    if entry.hostname != hostname {
        changes.push(Change::set("hostname", entry.hostname, hostname));
    }
    if entry.aliases != aliases {
        let shown = |list: &[&str]| if list.is_empty() { None } else { Some(list.join(" ")) };
        changes.push(Change::new("aliases", shown(&entry.aliases), shown(aliases)));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, World, attributes};

    fn spec(yaml: &str) -> HostSpec {
        conformance::spec::<Host>(yaml)
    }

    #[test]
    fn hostnames_follow_rfc_1123() {
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63)].join(".");
        for good in ["db1", "db1.example.com", "1host", "a-b.c", "x"] {
            assert!(valid_hostname(good), "{good} rejected");
        }
        for bad in ["", "-a", "a-", "a..b", "a.", "a_b", "a b", "ä.de", long_label.as_str(), long_name.as_str()] {
            assert!(!valid_hostname(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn lines_parse_with_comments() {
        assert_eq!(
            parse_line("10.0.0.1  db1 db  # primary "),
            Some(Entry { ip: "10.0.0.1", hostname: "db1", aliases: vec!["db"], comment: Some("# primary") })
        );
        assert_eq!(parse_line("::1\tlocalhost#x").map(|e| e.comment), Some(Some("#x")));
        assert_eq!(parse_line("# 10.0.0.1 db1"), None);
        assert_eq!(parse_line("10.0.0.1"), None);
        assert_eq!(parse_line("   "), None);
    }

    /// (current, spec fields, ensure, expected text or `None` when untouched, attributes)
    #[test]
    fn transform_table() {
        type Case<'a> = (Option<&'a str>, &'a str, &'a str, Option<&'a str>, &'a [&'a str]);
        const BASE: &str = "# static\n127.0.0.1 localhost\n\n10.0.0.1 db1 db # primary\n";
        let cases: &[Case<'_>] = &[
            // append, other lines untouched
            (
                Some(BASE),
                "ip: 10.0.0.9, hostname: web1, aliases: [web]",
                "present",
                Some("# static\n127.0.0.1 localhost\n\n10.0.0.1 db1 db # primary\n10.0.0.9\tweb1 web\n"),
                &["ensure"],
            ),
            // append to a file without a final newline, and to no file at all
            (
                Some("127.0.0.1 localhost"),
                "ip: 10.0.0.9, hostname: web1",
                "present",
                Some("127.0.0.1 localhost\n10.0.0.9\tweb1\n"),
                &["ensure"],
            ),
            (None, "ip: '::1', hostname: web1", "present", Some("::1\tweb1\n"), &["ensure"]),
            // rewrite in place, keeping the comment
            (
                Some(BASE),
                "ip: 10.0.0.2, hostname: db1, aliases: [db, pg]",
                "present",
                Some("# static\n127.0.0.1 localhost\n\n10.0.0.2\tdb1 db pg\t# primary\n"),
                &["ip", "aliases"],
            ),
            // aliases left out: the existing ones stay
            (
                Some(BASE),
                "ip: 10.0.0.2, hostname: db1",
                "present",
                Some("# static\n127.0.0.1 localhost\n\n10.0.0.2\tdb1 db\t# primary\n"),
                &["ip"],
            ),
            // aliases: [] removes them
            (
                Some(BASE),
                "ip: 10.0.0.1, hostname: db1, aliases: []",
                "present",
                Some("# static\n127.0.0.1 localhost\n\n10.0.0.1\tdb1\t# primary\n"),
                &["aliases"],
            ),
            // same fields, other whitespace: untouched
            (Some(BASE), "ip: 10.0.0.1, hostname: db1, aliases: [db]", "present", None, &[]),
            (Some("0:0:0:0:0:0:0:1 v6\n"), "ip: '::1', hostname: v6", "present", None, &[]),
            // case differs: same entry, rewritten to the spec's spelling
            (Some("10.0.0.1 DB1\n"), "ip: 10.0.0.1, hostname: db1", "present", Some("10.0.0.1\tdb1\n"), &["hostname"]),
            // one line per hostname: later duplicates go
            (
                Some("10.0.0.1 db1\n10.0.0.3 db1 x\n"),
                "ip: 10.0.0.1, hostname: db1",
                "present",
                Some("10.0.0.1 db1\n"),
                &["duplicates"],
            ),
            // a hostname that is only an alias elsewhere does not match
            (
                Some("10.0.0.1 db1 web1\n"),
                "ip: 10.0.0.9, hostname: web1",
                "present",
                Some("10.0.0.1 db1 web1\n10.0.0.9\tweb1\n"),
                &["ensure"],
            ),
            // absent removes every line with that canonical name, nothing else
            (
                Some("10.0.0.1 db1\n# db1\n10.0.0.3 db1\n10.0.0.4 web db1\n"),
                "hostname: db1",
                "absent",
                Some("# db1\n10.0.0.4 web db1\n"),
                &["ensure"],
            ),
            (Some(BASE), "hostname: web1", "absent", None, &[]),
            (None, "hostname: web1", "absent", None, &[]),
        ];
        for (current, fields, ensure, want_text, want_attrs) in cases {
            let spec = spec(&format!("{{{fields}, ensure: {ensure}}}"));
            let (text, changes) = plan(*current, &Want::of(&spec));
            assert_eq!(text.as_deref(), *want_text, "{fields} {ensure} on {current:?}");
            let attrs: Vec<&str> = changes.iter().map(|c| c.attribute.as_str()).collect();
            assert_eq!(attrs, *want_attrs, "{fields} {ensure} on {current:?}");
        }
    }

    #[test]
    fn lint_and_check_validate_ip_and_names() {
        let bad = spec("{hostname: 'bad_name', ip: 10.0.0.300, aliases: [ok, -no], target: etc/hosts}");
        let lints = Host::lint(&bad, Common { name: "t", when: None });
        let fields: Vec<_> = lints.iter().filter_map(|l| l.field.as_deref()).collect();
        assert_eq!(fields, ["target", "hostname", "ip", "aliases"]);
        assert!(lints[2].message.contains("`10.0.0.300` is not an IPv4 or IPv6 address"));
        assert!(lints[3].message.contains("alias `-no`"));
        assert_eq!(
            Host::lint(&spec("{hostname: a}"), Common { name: "t", when: None })[0].message,
            "ip is required when ensure is present"
        );
        assert!(Host::lint(&spec("{hostname: a, ensure: absent}"), Common { name: "t", when: None }).is_empty());

        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("hosts");
        let yaml = format!("{{hostname: db1, ip: 'not-an-ip', target: '{}'}}", path.display());
        let err = Host::check(&spec(&yaml), &World::default().ctx(crate::Mode::NoOp)).expect_err("bad ip");
        assert!(err.to_string().contains("ip `not-an-ip` is not an IPv4 or IPv6 address"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn conformance() {
        const OTHERS: &str = "127.0.0.1\tlocalhost\n# keep me\n\n";
        const WRONG: &str = "127.0.0.1\tlocalhost\n# keep me\n\n192.168.1.1 db1.example.com old # pinned\n";
        const RIGHT: &str = "127.0.0.1\tlocalhost\n# keep me\n\n10.0.0.5   db1.example.com db1   # pinned\n";
        // (initial, ensure, expected attributes, expected content after)
        type Case<'a> = (Option<&'a str>, &'a str, &'a [&'a str], Option<&'a str>);
        let cases: &[Case<'_>] = &[
            (None, "present", &["ensure"], Some("10.0.0.5\tdb1.example.com db1\n")),
            (
                Some(OTHERS),
                "present",
                &["ensure"],
                Some("127.0.0.1\tlocalhost\n# keep me\n\n10.0.0.5\tdb1.example.com db1\n"),
            ),
            (
                Some(WRONG),
                "present",
                &["ip", "aliases"],
                Some("127.0.0.1\tlocalhost\n# keep me\n\n10.0.0.5\tdb1.example.com db1\t# pinned\n"),
            ),
            (Some(RIGHT), "present", &[], Some(RIGHT)),
            (None, "absent", &[], None),
            (Some(WRONG), "absent", &["ensure"], Some(OTHERS)),
            (Some(OTHERS), "absent", &[], Some(OTHERS)),
        ];
        for (initial, ensure, attrs, after) in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            let path = tmp.path().join("hosts");
            if let Some(text) = initial {
                std::fs::write(&path, text).expect("seed");
            }
            let spec = spec(&format!(
                "{{ip: 10.0.0.5, hostname: db1.example.com, aliases: [db1], ensure: {ensure}, target: '{}'}}",
                path.display()
            ));
            let snapshot = || std::fs::read_to_string(&path).unwrap_or_else(|_| "<absent>".into());
            let drift = conformance::converge::<Host>(&World::default(), &spec, snapshot);
            assert_eq!(attributes(&drift), *attrs, "{initial:?} × {ensure}");
            assert_eq!(std::fs::read_to_string(&path).ok().as_deref(), *after, "{initial:?} × {ensure}");
            if let Some(drift) = drift {
                assert!(drift.diff.is_some(), "a content change carries a diff");
            }
        }
    }
}
