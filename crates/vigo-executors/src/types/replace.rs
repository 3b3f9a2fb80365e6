//! `replace`: every match of a regular expression in an existing file, replaced —
//! Ansible's `replace` module. The expression runs over the whole text with `^`/`$`
//! matching at line boundaries, optionally limited to the text after `after` and/or
//! before `before`; the replacement uses Python's `re.sub` syntax (`\1`, `\g<name>`),
//! translated to the regex crate's.

use std::ops::Range;
use std::path::PathBuf;

use regex::{Regex, RegexBuilder};
use schemars::JsonSchema;
use serde::Deserialize;
use vigo_model::catalog::Lint;

use crate::executor::{ExecError, Executor};
use crate::types::file_line::{Pattern, absolute_path, does_not_exist, problem, regex_error};

/// Replace every match of a regular expression in an existing text file (Ansible `replace`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceSpec {
    /// Absolute path of the file to edit. It must exist; `replace` never creates it.
    #[serde(deserialize_with = "absolute_path")]
    #[schemars(with = "String")]
    path: PathBuf,
    /// Regular expression searched in the whole text; `^` and `$` match at every line.
    /// Python syntax as far as the regex crate supports it (no look-around or backreferences).
    regexp: Pattern,
    /// Replacement for each match (default: empty, which deletes the matches). `\1`,
    /// `\g<1>` and `\g<name>` insert capture groups; `\n`, `\t` and `\\` are escapes.
    #[serde(default)]
    replace: String,
    /// Only text after the first match of this regular expression is changed
    /// (`.` matches newlines here, `^` only the start of the file, as in Ansible).
    #[serde(default)]
    after: Option<Pattern>,
    /// Only text before this match is changed: the last match when alone, the first one
    /// following `after` when both are given (as in Ansible).
    #[serde(default)]
    before: Option<Pattern>,
}

fn problems(spec: &ReplaceSpec) -> Vec<Lint> {
    match rust_template(&spec.replace, spec.regexp.regex()) {
        Ok(_) => Vec::new(),
        Err(message) => vec![problem("replace", message)],
    }
}

/// The file's text after replacing (`current` is `None` when the file is absent).
pub(crate) fn edit(current: Option<&str>, spec: &ReplaceSpec) -> Result<Option<String>, ExecError> {
    let template = rust_template(&spec.replace, spec.regexp.regex())
        .map_err(|e| ExecError::failed(format!("{}: `replace` {e}", spec.path.display())))?;
    let Some(text) = current else {
        return Err(does_not_exist(&spec.path, "replace edits existing files only"));
    };
    let Some(range) = section(text, spec)? else { return Ok(Some(text.to_string())) };
    let part = &text[range.clone()];
    let replaced = spec.regexp.regex().replace_all(part, template.as_str());
    if replaced == part {
        return Ok(Some(text.to_string()));
    }
    Ok(Some(format!("{}{replaced}{}", &text[..range.start], &text[range.end..])))
}

/// The part of `text` that may change: Ansible builds `after(.*?)before`,
/// `after(.*)` or `(.*)before` with DOTALL and takes the group. `None` when the
/// delimiters do not match, which leaves the file alone.
fn section(text: &str, spec: &ReplaceSpec) -> Result<Option<Range<usize>>, ExecError> {
    let (source, group) = match (&spec.after, &spec.before) {
        (None, None) => return Ok(Some(0..text.len())),
        (Some(a), Some(b)) => (format!("(?:{})(.*?)(?:{})", a.source(), b.source()), a.regex().captures_len()),
        (Some(a), None) => (format!("(?:{})(.*)", a.source()), a.regex().captures_len()),
        (None, Some(b)) => (format!("(.*)(?:{})", b.source()), 1),
    };
    let regex = RegexBuilder::new(&source).dot_matches_new_line(true).build().map_err(|e| {
        ExecError::failed(format!("{}: `after`/`before`: {}", spec.path.display(), regex_error(&source, &e)))
    })?;
    Ok(regex.captures(text).and_then(|c| c.get(group)).map(|m| m.range()))
}

/// Translates a Python `re.sub` replacement into a template for `Regex::replace_all`,
/// checking group references against `regex` as Python does (the regex crate would
/// silently insert nothing for a group that does not exist).
pub(crate) fn rust_template(python: &str, regex: &Regex) -> Result<String, String> {
    let mut out = String::with_capacity(python.len());
    let mut chars = python.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => {
                let Some(escaped) = chars.next() else { return Err("ends with a lone backslash".into()) };
                match escaped {
                    'g' => {
                        if chars.next() != Some('<') {
                            return Err("has `\\g` without `<name>` or `<number>`".into());
                        }
                        let mut name = String::new();
                        loop {
                            match chars.next() {
                                Some('>') => break,
                                Some(ch) => name.push(ch),
                                None => return Err(format!("has `\\g<{name}` without a closing `>`")),
                            }
                        }
                        out.push_str(&group_ref(&name, regex)?);
                    }
                    '0' => {
                        let mut digits = String::from('0');
                        while digits.len() < 3
                            && let Some(&d) = chars.peek()
                            && d.is_digit(8)
                        {
                            digits.push(d);
                            chars.next();
                        }
                        out.push(octal(&digits)?);
                    }
                    '1'..='9' => {
                        let mut digits = String::from(escaped);
                        if let Some(&second) = chars.peek()
                            && second.is_ascii_digit()
                        {
                            digits.push(second);
                            chars.next();
                            // Three octal digits are a character, as in Python (`\101` is `A`).
                            if escaped.is_digit(8)
                                && second.is_digit(8)
                                && let Some(&third) = chars.peek()
                                && third.is_digit(8)
                            {
                                digits.push(third);
                                chars.next();
                                out.push(octal(&digits)?);
                                continue;
                            }
                        }
                        out.push_str(&group_ref(&digits, regex)?);
                    }
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    '\\' => out.push('\\'),
                    letter if letter.is_ascii_alphabetic() => return Err(format!("has a bad escape `\\{letter}`")),
                    // Python keeps unknown escapes of punctuation as written.
                    other => {
                        out.push('\\');
                        if other == '$' {
                            out.push_str("$$");
                        } else {
                            out.push(other);
                        }
                    }
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn octal(digits: &str) -> Result<char, String> {
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|&v| v <= 0o377)
        .and_then(char::from_u32)
        .ok_or_else(|| format!("has octal escape `\\{digits}` outside 0-0o377"))
}

/// A group by number or name, as the index the regex crate's `${n}` understands
/// (indexes also work for names that `${name}` could not spell).
fn group_ref(name: &str, regex: &Regex) -> Result<String, String> {
    let index = if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
        name.parse::<usize>()
            .ok()
            .filter(|&n| n < regex.captures_len())
            .ok_or_else(|| format!("refers to group {name}, but `regexp` has {} group(s)", regex.captures_len() - 1))?
    } else {
        regex
            .capture_names()
            .position(|n| n == Some(name))
            .ok_or_else(|| format!("refers to group `{name}`, which `regexp` does not define"))?
    };
    Ok(format!("${{{index}}}"))
}

/// Ansible's `replace` module.
pub struct Replace;

impl Executor for Replace {
    type Spec = ReplaceSpec;

    const NAME: &'static str = "replace";
    const SUMMARY: &'static str =
        "Every match of a regular expression in an existing text file, replaced (Ansible's replace)";
    const EXAMPLE: &'static str = r#"
- name: hosts-new-name
  type: replace
  path: /etc/hosts
  regexp: '(\s+)old\.example\.com(\s+.*)?$'
  replace: '\1new.example.com\2'
- name: vhost-listen-8080
  type: replace
  path: /etc/apache2/sites-available/site.conf
  after: '<VirtualHost [*]>'
  before: '</VirtualHost>'
  regexp: '^(\s*)Listen\s+80\s*$'
  replace: '\g<1>Listen 8080'
"#;

    crate::text_editor_methods!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::World;
    use crate::executor::{Mode, parse_spec};
    use crate::types::file_line::testing::{Case, Row, converge_table, edit_table};

    fn row(
        name: &'static str,
        input: Option<&'static str>,
        spec: &'static str,
        want: Result<Option<&'static str>, &'static str>,
    ) -> Row {
        Row { name, input, spec, want }
    }

    const HOSTS: &str = "127.0.0.1 localhost\n10.0.0.5   old.host.name  old\n10.0.0.6 other\n";
    const VHOSTS: &str = "Listen 80\n<VirtualHost *>\n  Listen 80\n</VirtualHost>\nListen 80\n";

    #[test]
    fn edits_like_ansible_replace() {
        let rows = [
            row(
                "numbered backrefs (the module's /etc/hosts example)",
                Some(HOSTS),
                r"regexp: '(\s+)old\.host\.name(\s+.*)?$'
replace: '\1new.host.name\2'",
                Ok(Some("127.0.0.1 localhost\n10.0.0.5   new.host.name  old\n10.0.0.6 other\n")),
            ),
            row(
                "\\g<n> and \\g<name> backrefs",
                Some("a = old\nb = old\n"),
                r"regexp: '^(?P<key>\w+) = old$'
replace: '\g<key> = \g<1>-new'",
                Ok(Some("a = a-new\nb = b-new\n")),
            ),
            row(
                "\\g<0> is the whole match",
                Some("foo\nfoo bar\n"),
                r"regexp: '^foo$'
replace: '\g<0>d'",
                Ok(Some("food\nfoo bar\n")),
            ),
            row(
                "$ in the replacement is literal",
                Some("price\n"),
                "regexp: '^price$'\nreplace: 'price $1'",
                Ok(Some("price $1\n")),
            ),
            row(
                "\\n escape",
                Some("a, b\n"),
                r"regexp: ', '
replace: '\n'",
                Ok(Some("a\nb\n")),
            ),
            row(
                "octal escape",
                Some("x\n"),
                r"regexp: '^x$'
replace: '\101'",
                Ok(Some("A\n")),
            ),
            row("default replace deletes", Some("# c\na\n# d\n"), r"regexp: '^#.*\n'", Ok(Some("a\n"))),
            row("no match", Some("a\n"), "regexp: '^b'\nreplace: c", Ok(Some("a\n"))),
            row(
                "after and before limit the section",
                Some(VHOSTS),
                "after: '<VirtualHost [*]>'\nbefore: '</VirtualHost>'\nregexp: '^(\\s*)Listen 80$'\nreplace: '\\1Listen 8080'",
                Ok(Some("Listen 80\n<VirtualHost *>\n  Listen 8080\n</VirtualHost>\nListen 80\n")),
            ),
            row(
                "after alone: everything after its first match",
                Some("a=1\nSTART\na=1\nSTART\na=1\n"),
                "after: START\nregexp: '^a=1$'\nreplace: a=2",
                Ok(Some("a=1\nSTART\na=2\nSTART\na=2\n")),
            ),
            row(
                "before alone: everything before its last match",
                Some("a=1\nEND\na=1\nEND\na=1\n"),
                "before: END\nregexp: '^a=1$'\nreplace: a=2",
                Ok(Some("a=2\nEND\na=2\nEND\na=1\n")),
            ),
            row(
                "after and before: the first before following after",
                Some("a=1\n[\na=1\n]\na=1\n]\n"),
                "after: '\\['\nbefore: '\\]'\nregexp: '^a=1$'\nreplace: a=2",
                Ok(Some("a=1\n[\na=2\n]\na=1\n]\n")),
            ),
            row(
                "after that does not match leaves the file alone",
                Some("a=1\n"),
                "after: NOPE\nregexp: '^a=1$'\nreplace: a=2",
                Ok(Some("a=1\n")),
            ),
            row(
                "alternation in after stays inside its group",
                Some("a=1\nX\na=1\n"),
                "after: 'Y|X'\nregexp: '^a=1$'\nreplace: a=2",
                Ok(Some("a=1\nX\na=2\n")),
            ),
            row("missing file", None, "regexp: a", Err("/srv/vigo-test/file: does not exist")),
            row(
                "group out of range",
                Some("a\n"),
                r"regexp: '(a)'
replace: '\2'",
                Err("`replace` refers to group 2, but `regexp` has 1 group(s)"),
            ),
            row(
                "two-digit group reference",
                Some("a\n"),
                r"regexp: '(a)'
replace: '\10'",
                Err("refers to group 10"),
            ),
            row(
                "unknown group name",
                Some("a\n"),
                r"regexp: '(a)'
replace: '\g<nope>'",
                Err("refers to group `nope`"),
            ),
            row(
                "bad escape",
                Some("a\n"),
                r"regexp: 'a'
replace: '\x41'",
                Err("bad escape `\\x`"),
            ),
            row("lone backslash", Some("a\n"), "regexp: 'a'\nreplace: 'b\\'", Err("lone backslash")),
        ];
        edit_table::<Replace>(&rows, edit);
    }

    #[test]
    fn converges_real_files() {
        converge_table::<Replace>(&[
            Case {
                name: "replace",
                initial: Some(VHOSTS),
                spec: "regexp: '^Listen 80$'\nreplace: Listen 8080",
                changes: &["content"],
                after: Some("Listen 8080\n<VirtualHost *>\n  Listen 80\n</VirtualHost>\nListen 8080\n"),
            },
            Case {
                name: "already correct",
                initial: Some("Listen 8080\n"),
                spec: "regexp: '^Listen 80$'\nreplace: Listen 8080",
                changes: &[],
                after: Some("Listen 8080\n"),
            },
            Case {
                name: "section only",
                initial: Some(VHOSTS),
                spec: "after: '<VirtualHost'\nbefore: '</VirtualHost>'\nregexp: 'Listen 80$'\nreplace: Listen 81",
                changes: &["content"],
                after: Some("Listen 80\n<VirtualHost *>\n  Listen 81\n</VirtualHost>\nListen 80\n"),
            },
        ]);
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nope");
        let spec = crate::conformance::spec::<Replace>(&format!("path: {}\nregexp: a", path.display()));
        let err = Replace::check(&spec, &World::default().ctx(Mode::NoOp)).expect_err("must fail");
        assert!(err.to_string().starts_with(&format!("{}: does not exist", path.display())), "{err}");
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xc3, 0x28]).expect("write");
        let spec = crate::conformance::spec::<Replace>(&format!("path: {}\nregexp: a", path.display()));
        let err = Replace::check(&spec, &World::default().ctx(Mode::NoOp)).expect_err("must fail");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn bad_regexes_name_their_field() {
        for field in ["regexp", "after", "before"] {
            let mut fields = serde_json::json!({"path": "/etc/x", "regexp": "a"});
            fields[field] = serde_json::json!("(?<=look)behind");
            let err = parse_spec::<ReplaceSpec>(&fields).expect_err("look-behind is not supported");
            assert_eq!(err.field.as_deref(), Some(field));
            assert!(err.message.contains("invalid regular expression `(?<=look)behind`"), "{}", err.message);
        }
    }

    #[test]
    fn lint_checks_the_replacement_against_the_groups() {
        let spec = crate::conformance::spec::<Replace>("path: /etc/x\nregexp: '(a)(b)'\nreplace: '\\3'");
        let lints = Replace::lint(&spec, vigo_model::catalog::Common { name: "t", when: None });
        assert_eq!(lints.len(), 1);
        assert_eq!(lints[0].field.as_deref(), Some("replace"));
        assert!(lints[0].message.contains("group 3"), "{}", lints[0].message);
    }
}
