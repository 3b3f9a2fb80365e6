//! `file_line`: one line in an existing text file, with the semantics of Puppet
//! stdlib's `file_line` — replace the line a regex matches, insert after another
//! line, or append; remove it again with `ensure: absent`.
//!
//! The edit is a pure function of the current text ([`edit`]); `textfile` turns it
//! into check and apply. The small spec helpers the other in-place text editors
//! (`blockinfile`, `replace`, `ini`) share live here too: [`Pattern`],
//! [`absolute_path`], [`Presence`] and line splitting.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use regex::{Regex, RegexBuilder};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use vigo_model::catalog::Lint;

use crate::executor::{ExecError, Executor};

/// A regular expression from a spec. It is compiled when the spec is parsed, so a
/// bad one is reported against its field before anything runs. `^` and `$` match at
/// line boundaries (Ruby's default, and Python's `re.MULTILINE` that Ansible uses).
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    pub(crate) fn new(source: &str) -> Result<Self, String> {
        let regex = RegexBuilder::new(source).multi_line(true).build().map_err(|e| regex_error(source, &e))?;
        Ok(Self { source: source.to_string(), regex })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn regex(&self) -> &Regex {
        &self.regex
    }

    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Pattern {
    fn schema_name() -> Cow<'static, str> {
        "Pattern".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        let mut schema = serde_json::Map::new();
        schema.insert("type".into(), "string".into());
        schema.insert("format".into(), "regex".into());
        Schema::from(schema)
    }
}

/// One line out of the regex crate's multi-line error report: the reason, with the pattern.
pub(crate) fn regex_error(source: &str, err: &regex::Error) -> String {
    let reason = match err {
        regex::Error::Syntax(report) => report
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.trim_start_matches("error: ").to_string())
            .unwrap_or_else(|| report.clone()),
        other => other.to_string(),
    };
    format!("invalid regular expression `{source}`: {reason}")
}

/// Deserializes a path that must be absolute and free of `.`/`..` components, so a
/// spec cannot depend on the agent's working directory.
pub(crate) fn absolute_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    let normal = !path.components().any(|c| matches!(c, Component::CurDir | Component::ParentDir));
    if path.is_absolute() && normal && path.file_name().is_some() {
        Ok(path)
    } else {
        Err(serde::de::Error::custom(format!("`{}` is not an absolute path to a file", path.display())))
    }
}

/// Whether the managed thing should exist (`ensure:` in Puppet, `state:` in Ansible).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(inline)]
pub(crate) enum Presence {
    #[default]
    Present,
    Absent,
}

/// Serde default for flags that are on unless switched off.
pub(crate) fn yes() -> bool {
    true
}

/// `text` cut into lines that keep their terminators, so untouched lines are written
/// back byte for byte.
pub(crate) fn split_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// A line without its terminator (`\n` or `\r\n`).
pub(crate) fn strip_eol(line: &str) -> &str {
    match line.strip_suffix('\n') {
        Some(l) => l.strip_suffix('\r').unwrap_or(l),
        None => line,
    }
}

/// The terminator a line inserted next to `neighbour` should get: the file's own style.
pub(crate) fn eol_like(neighbour: &str) -> &'static str {
    if neighbour.ends_with("\r\n") { "\r\n" } else { "\n" }
}

/// The error for an editor that needs an existing file.
pub(crate) fn does_not_exist(path: &Path, why: &str) -> ExecError {
    ExecError::failed(format!("{}: does not exist ({why})", path.display()))
}

/// Turns the first spec problem into an error naming the path and field, so a spec
/// that skipped validation still cannot run.
pub(crate) fn refuse(path: &Path, problems: Vec<Lint>) -> Result<(), ExecError> {
    match problems.into_iter().next() {
        None => Ok(()),
        Some(lint) => {
            let field = lint.field.map(|f| format!("`{f}` ")).unwrap_or_default();
            Err(ExecError::failed(format!("{}: {field}{}", path.display(), lint.message)))
        }
    }
}

/// A lint naming `field`.
pub(crate) fn problem(field: &str, message: impl Into<String>) -> Lint {
    Lint { field: Some(field.to_string()), message: message.into(), hint: None }
}

/// The desired state of one line in an existing text file (Puppet stdlib `file_line`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLineSpec {
    /// Absolute path of the file to edit. It must exist; `file_line` never creates it.
    #[serde(deserialize_with = "absolute_path")]
    #[schemars(with = "String")]
    path: PathBuf,
    /// The exact line, without its newline, that should be present (or absent).
    #[serde(default)]
    line: Option<String>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    ensure: Presence,
    /// Regular expression for the existing line(s) to replace with `line`; with
    /// `match_for_absence`, the lines to remove.
    #[serde(default, rename = "match")]
    match_: Option<Pattern>,
    /// Regular expression for the line after which `line` is inserted when nothing is
    /// replaced (appended at the end when nothing matches).
    #[serde(default)]
    after: Option<Pattern>,
    /// Allow `match` (or `after`) to select more than one line; otherwise that is an error.
    #[serde(default)]
    multiple: Option<bool>,
    /// With `ensure: absent`, remove the lines `match` selects instead of lines equal to `line`.
    #[serde(default)]
    match_for_absence: bool,
    /// Replace a line `match` selects (default true). When false, a matching line counts as in sync.
    #[serde(default = "yes")]
    replace: bool,
    /// Replace every line `match` selects that differs from `line`, even when `line`
    /// is already present (needs `multiple` to change more than one).
    #[serde(default)]
    replace_all_matches_not_matching_line: bool,
    /// Add `line` when `match` selects nothing (default true). When false, no match counts as in sync.
    #[serde(default = "yes")]
    append_on_no_match: bool,
}

impl FileLineSpec {
    fn multiple(&self) -> bool {
        self.multiple == Some(true)
    }
}

/// Contradictions Puppet's `file_line` refuses too, plus lines that could never match.
fn problems(spec: &FileLineSpec) -> Vec<Lint> {
    let mut found = Vec::new();
    let removes_by_match = spec.ensure == Presence::Absent && spec.match_for_absence && spec.match_.is_some();
    match &spec.line {
        None if !removes_by_match => {
            found.push(problem(
                "line",
                "is required unless `ensure: absent` with `match` and `match_for_absence: true`",
            ));
        }
        Some(line) if line.contains(['\n', '\r']) => {
            found.push(problem("line", "must be a single line without a newline"));
        }
        _ => {}
    }
    if spec.replace_all_matches_not_matching_line {
        if spec.multiple == Some(false) {
            found.push(problem("multiple", "must be true when `replace_all_matches_not_matching_line` is true"));
        }
        if !spec.replace {
            found.push(problem("replace", "must be true when `replace_all_matches_not_matching_line` is true"));
        }
        if spec.match_.is_none() {
            found.push(problem("match", "is required when `replace_all_matches_not_matching_line` is true"));
        }
    }
    found
}

/// The file's text after enforcing `spec` on `current` (`None` = the file is absent).
pub(crate) fn edit(current: Option<&str>, spec: &FileLineSpec) -> Result<Option<String>, ExecError> {
    refuse(&spec.path, problems(spec))?;
    let Some(text) = current else {
        return match spec.ensure {
            Presence::Absent => Ok(None),
            Presence::Present => Err(does_not_exist(&spec.path, "file_line edits existing files only")),
        };
    };
    let lines = split_lines(text);
    let edited = match spec.ensure {
        Presence::Present => present(&lines, spec)?,
        Presence::Absent => absent(&lines, spec)?,
    };
    Ok(Some(edited.unwrap_or_else(|| text.to_string())))
}

/// Puppet's `exists?` + `create`; `None` when the file is already right.
fn present(lines: &[&str], spec: &FileLineSpec) -> Result<Option<String>, ExecError> {
    let Some(line) = spec.line.as_deref() else { return Ok(None) };
    let has_line = lines.iter().any(|l| strip_eol(l) == line);
    let Some(pattern) = &spec.match_ else {
        if has_line {
            return Ok(None);
        }
        return match &spec.after {
            Some(after) => insert_after_each(lines, after, line, spec).map(Some),
            None => Ok(Some(insert_after(lines, None, line))),
        };
    };
    let skip_equal = spec.replace_all_matches_not_matching_line;
    let matches = lines
        .iter()
        .filter(|l| {
            let body = strip_eol(l);
            pattern.is_match(body) && !(skip_equal && body == line)
        })
        .count();
    if matches == 0 {
        if has_line || !spec.append_on_no_match {
            return Ok(None);
        }
        // With `match`, Puppet inserts after the first `after` line only.
        let anchor = spec.after.as_ref().and_then(|a| lines.iter().position(|l| a.is_match(strip_eol(l))));
        return Ok(Some(insert_after(lines, anchor, line)));
    }
    if !spec.replace_all_matches_not_matching_line && (has_line || !spec.replace) {
        return Ok(None);
    }
    if matches > 1 && !spec.multiple() {
        return Err(ExecError::failed(format!(
            "{}: {matches} lines match `match` pattern `{}`; set `multiple: true` to replace them all",
            spec.path.display(),
            pattern.source()
        )));
    }
    let mut out = String::new();
    for l in lines {
        if pattern.is_match(strip_eol(l)) {
            out.push_str(line);
            out.push_str(eol_like(l));
        } else {
            puts(&mut out, l);
        }
    }
    Ok(Some(out))
}

/// `after` without `match`: the line goes after every `after` line (one unless `multiple`).
fn insert_after_each(lines: &[&str], after: &Pattern, line: &str, spec: &FileLineSpec) -> Result<String, ExecError> {
    let anchors: Vec<usize> = (0..lines.len()).filter(|&i| after.is_match(strip_eol(lines[i]))).collect();
    if anchors.len() > 1 && !spec.multiple() {
        return Err(ExecError::failed(format!(
            "{}: {} lines match `after` pattern `{}`; one or no line must match, or set `multiple: true`",
            spec.path.display(),
            anchors.len(),
            after.source()
        )));
    }
    if anchors.is_empty() {
        return Ok(insert_after(lines, None, line));
    }
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        puts(&mut out, l);
        if anchors.contains(&i) {
            out.push_str(line);
            out.push_str(eol_like(l));
        }
    }
    Ok(out)
}

/// Inserts `line` after `lines[anchor]`, or appends it when there is no anchor.
fn insert_after(lines: &[&str], anchor: Option<usize>, line: &str) -> String {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        puts(&mut out, l);
        if anchor == Some(i) {
            out.push_str(line);
            out.push_str(eol_like(l));
        }
    }
    if anchor.is_none() {
        out.push_str(line);
        out.push_str(lines.last().map_or("\n", |l| eol_like(l)));
    }
    out
}

/// Writes a line as Ruby's `puts` does: a missing final newline is added, so text
/// appended after an unterminated last line starts on a line of its own.
fn puts(out: &mut String, line: &str) {
    out.push_str(line);
    if !line.ends_with('\n') {
        out.push('\n');
    }
}

/// Puppet's `destroy`; `None` when nothing is removed.
fn absent(lines: &[&str], spec: &FileLineSpec) -> Result<Option<String>, ExecError> {
    let kept: Vec<&str> = match (&spec.match_, spec.match_for_absence) {
        (Some(pattern), true) => {
            let matches = lines.iter().filter(|l| pattern.is_match(strip_eol(l))).count();
            if matches > 1 && !spec.multiple() {
                return Err(ExecError::failed(format!(
                    "{}: {matches} lines match `match` pattern `{}`; set `multiple: true` to remove them all",
                    spec.path.display(),
                    pattern.source()
                )));
            }
            lines.iter().copied().filter(|l| !pattern.is_match(strip_eol(l))).collect()
        }
        _ => {
            let Some(line) = spec.line.as_deref() else { return Ok(None) };
            lines.iter().copied().filter(|l| strip_eol(l) != line).collect()
        }
    };
    Ok((kept.len() != lines.len()).then(|| kept.concat()))
}

/// Puppet stdlib's `file_line`.
pub struct FileLine;

impl Executor for FileLine {
    type Spec = FileLineSpec;

    const NAME: &'static str = "file_line";
    const SUMMARY: &'static str = "One line in an existing text file (Puppet's file_line): replace a match, insert after a line, append, or remove";
    const EXAMPLE: &'static str = r#"
- name: sshd-no-root-login
  type: file_line
  path: /etc/ssh/sshd_config
  line: PermitRootLogin no
  match: '^#?\s*PermitRootLogin\s'
- name: no-legacy-mirror
  type: file_line
  path: /etc/hosts
  ensure: absent
  match: '\slegacy-mirror\.example\.com(\s|$)'
  match_for_absence: true
  multiple: true
"#;

    crate::text_editor_methods!();
}

/// Table-driven test helpers shared by the text editors' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::os::unix::fs::PermissionsExt;

    use crate::conformance::{World, attributes, converge, spec};
    use crate::executor::{ExecError, Executor};

    /// Where the pure-edit tables pretend the file lives.
    pub(crate) const TABLE_PATH: &str = "/srv/vigo-test/file";

    /// One pure-edit case: the file's text (`None` = absent), the spec without `path`,
    /// and the text wanted (`Ok(None)` = no file) or a fragment of the error.
    pub(crate) struct Row {
        pub name: &'static str,
        pub input: Option<&'static str>,
        pub spec: &'static str,
        pub want: Result<Option<&'static str>, &'static str>,
    }

    /// Runs every row through `edit`, checks that editing the result again changes
    /// nothing (idempotence), and reports all failing rows at once.
    pub(crate) fn edit_table<E: Executor>(
        rows: &[Row],
        edit: impl Fn(Option<&str>, &E::Spec) -> Result<Option<String>, ExecError>,
    ) {
        let mut failures = Vec::new();
        for row in rows {
            let parsed = spec::<E>(&format!("path: {TABLE_PATH}\n{}", row.spec));
            let got = edit(row.input, &parsed).map_err(|e| e.to_string());
            match (&row.want, &got) {
                (Ok(want), Ok(got)) if want.as_deref() == got.as_deref() => {
                    let again = edit(got.as_deref(), &parsed).map_err(|e| e.to_string());
                    if again.as_ref().ok() != Some(got) {
                        failures.push(format!("{}: not idempotent: first {got:?}, then {again:?}", row.name));
                    }
                }
                (Err(fragment), Err(message)) if message.contains(fragment) => {}
                _ => failures.push(format!("{}:\n  want {:?}\n  got  {got:?}", row.name, row.want)),
            }
        }
        assert!(failures.is_empty(), "{} failing rows:\n{}", failures.len(), failures.join("\n"));
    }

    /// One conformance case on a real file: initial content (`None` = absent), the spec
    /// without `path`, the attributes the drift must name, and the content afterwards.
    pub(crate) struct Case {
        pub name: &'static str,
        pub initial: Option<&'static str>,
        pub spec: &'static str,
        pub changes: &'static [&'static str],
        pub after: Option<&'static str>,
    }

    /// Runs every case through `conformance::converge` in a fresh directory. Existing
    /// files start with mode 0600, which an edit must keep; created files get 0644.
    pub(crate) fn converge_table<E: Executor>(cases: &[Case]) {
        for case in cases {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("file.conf");
            if let Some(initial) = case.initial {
                std::fs::write(&path, initial).expect("write initial file");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            }
            let parsed = spec::<E>(&format!("path: {}\n{}", path.display(), case.spec));
            let snapshot = || match std::fs::read(&path) {
                Ok(bytes) => {
                    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
                    format!("{mode:o} {}", String::from_utf8_lossy(&bytes))
                }
                Err(_) => "absent".to_string(),
            };
            let drift = converge::<E>(&World::default(), &parsed, snapshot);
            assert_eq!(attributes(&drift), case.changes, "{}: changed attributes", case.name);
            if let Some(drift) = &drift {
                let has_diff = case.changes.iter().any(|c| *c != "ensure" || case.initial.is_none());
                assert_eq!(drift.diff.is_some(), has_diff, "{}: diff presence", case.name);
            }
            let content = std::fs::read_to_string(&path).ok();
            assert_eq!(content.as_deref(), case.after, "{}: content after converging", case.name);
            if content.is_some() {
                let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
                let want = if case.initial.is_some() { 0o600 } else { 0o644 };
                assert_eq!(mode, want, "{}: file mode", case.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Case, Row, converge_table, edit_table};
    use super::*;
    use crate::conformance::World;
    use crate::executor::{Mode, parse_spec};

    fn row(
        name: &'static str,
        input: Option<&'static str>,
        spec: &'static str,
        want: Result<Option<&'static str>, &'static str>,
    ) -> Row {
        Row { name, input, spec, want }
    }

    #[test]
    fn edits_like_puppet_file_line() {
        let rows = [
            // Plain line: present means nothing to do, missing means append.
            row("present already", Some("a\nfoo\nb\n"), "line: foo", Ok(Some("a\nfoo\nb\n"))),
            row("append", Some("a\nb\n"), "line: foo", Ok(Some("a\nb\nfoo\n"))),
            row("append to empty file", Some(""), "line: foo", Ok(Some("foo\n"))),
            row("append after unterminated last line", Some("a\nb"), "line: foo", Ok(Some("a\nb\nfoo\n"))),
            row("whole-line comparison", Some("foo bar\n"), "line: foo", Ok(Some("foo bar\nfoo\n"))),
            row("keeps crlf style", Some("a\r\nb\r\n"), "line: foo", Ok(Some("a\r\nb\r\nfoo\r\n"))),
            row("missing file", None, "line: foo", Err("does not exist")),
            // match: replace the matching line in place.
            row(
                "match replaces",
                Some("a\n#PermitRootLogin yes\nb\n"),
                "line: PermitRootLogin no\nmatch: '^#?PermitRootLogin'",
                Ok(Some("a\nPermitRootLogin no\nb\n")),
            ),
            row(
                "match with line present elsewhere is in sync",
                Some("x = 1\nx = 2\n"),
                "line: x = 2\nmatch: '^x ='",
                Ok(Some("x = 1\nx = 2\n")),
            ),
            row("match nothing appends", Some("a\n"), "line: x = 1\nmatch: '^x ='", Ok(Some("a\nx = 1\n"))),
            row(
                "match nothing and append_on_no_match false",
                Some("a\n"),
                "line: x = 1\nmatch: '^x ='\nappend_on_no_match: false",
                Ok(Some("a\n")),
            ),
            row(
                "several matches without multiple",
                Some("x = 1\nx = 2\n"),
                "line: x = 3\nmatch: '^x ='",
                Err("2 lines match `match` pattern `^x =`"),
            ),
            row(
                "several matches with multiple",
                Some("x = 1\ny\nx = 2\n"),
                "line: x = 3\nmatch: '^x ='\nmultiple: true",
                Ok(Some("x = 3\ny\nx = 3\n")),
            ),
            row(
                "replace false leaves a match alone",
                Some("x = 1\n"),
                "line: x = 3\nmatch: '^x ='\nreplace: false",
                Ok(Some("x = 1\n")),
            ),
            row(
                "replace false still appends without a match",
                Some("a\n"),
                "line: x = 3\nmatch: '^x ='\nreplace: false",
                Ok(Some("a\nx = 3\n")),
            ),
            row(
                "replace_all_matches_not_matching_line",
                Some("x = 3\nx = 1\nx = 2\n"),
                "line: x = 3\nmatch: '^x ='\nmultiple: true\nreplace_all_matches_not_matching_line: true",
                Ok(Some("x = 3\nx = 3\nx = 3\n")),
            ),
            row(
                "replace_all without multiple but a single mismatch",
                Some("x = 3\nx = 1\n"),
                "line: x = 3\nmatch: '^x ='\nreplace_all_matches_not_matching_line: true",
                Ok(Some("x = 3\nx = 3\n")),
            ),
            row(
                "replace_all with multiple false is refused",
                Some("x = 1\n"),
                "line: x = 3\nmatch: '^x ='\nmultiple: false\nreplace_all_matches_not_matching_line: true",
                Err("`multiple` must be true"),
            ),
            row(
                "replaced unterminated last line gets a newline",
                Some("a\nx = 1"),
                "line: x = 2\nmatch: '^x ='",
                Ok(Some("a\nx = 2\n")),
            ),
            // after: where a new line goes when nothing is replaced.
            row(
                "after inserts",
                Some("[main]\nb = 1\n[other]\n"),
                "line: a = 1\nafter: '^\\[main\\]'",
                Ok(Some("[main]\na = 1\nb = 1\n[other]\n")),
            ),
            row("after without a match appends", Some("a\n"), "line: z\nafter: '^nomatch'", Ok(Some("a\nz\n"))),
            row(
                "after with several matches is refused",
                Some("[s]\n[s]\n"),
                "line: z\nafter: '^\\[s\\]'",
                Err("2 lines match `after` pattern"),
            ),
            row(
                "after with several matches and multiple",
                Some("[s]\nq\n[s]\n"),
                "line: z\nafter: '^\\[s\\]'\nmultiple: true",
                Ok(Some("[s]\nz\nq\n[s]\nz\n")),
            ),
            row(
                "match first, after as fallback uses the first after line",
                Some("[s]\n[s]\n"),
                "line: z = 1\nmatch: '^z ='\nafter: '^\\[s\\]'",
                Ok(Some("[s]\nz = 1\n[s]\n")),
            ),
            row(
                "match wins over after",
                Some("[s]\nz = 0\n"),
                "line: z = 1\nmatch: '^z ='\nafter: '^\\[s\\]'",
                Ok(Some("[s]\nz = 1\n")),
            ),
            // ensure: absent.
            row(
                "absent removes every equal line",
                Some("a\nfoo\nb\nfoo\n"),
                "line: foo\nensure: absent",
                Ok(Some("a\nb\n")),
            ),
            row("absent keeps similar lines", Some("foo bar\n"), "line: foo\nensure: absent", Ok(Some("foo bar\n"))),
            row("absent keeps a missing final newline", Some("foo\nb"), "line: foo\nensure: absent", Ok(Some("b"))),
            row("absent on missing file", None, "line: foo\nensure: absent", Ok(None)),
            row(
                "absent ignores match without match_for_absence",
                Some("foo = 1\nfoo = 2\n"),
                "line: foo = 2\nmatch: '^foo'\nensure: absent",
                Ok(Some("foo = 1\n")),
            ),
            row(
                "match_for_absence removes the match",
                Some("a\nfoo = 1\nb\n"),
                "match: '^foo'\nmatch_for_absence: true\nensure: absent",
                Ok(Some("a\nb\n")),
            ),
            row(
                "match_for_absence with several matches",
                Some("foo = 1\nfoo = 2\n"),
                "match: '^foo'\nmatch_for_absence: true\nensure: absent",
                Err("2 lines match `match` pattern"),
            ),
            row(
                "match_for_absence with multiple",
                Some("foo = 1\nb\nfoo = 2\n"),
                "match: '^foo'\nmatch_for_absence: true\nmultiple: true\nensure: absent",
                Ok(Some("b\n")),
            ),
            // Specs Puppet refuses.
            row("line is required", Some("a\n"), "match: '^a'", Err("`line` is required")),
            row("line must be one line", Some("a\n"), "line: \"a\\nb\"", Err("single line")),
        ];
        edit_table::<FileLine>(&rows, edit);
    }

    #[test]
    fn converges_real_files() {
        converge_table::<FileLine>(&[
            Case {
                name: "append",
                initial: Some("a\n"),
                spec: "line: b",
                changes: &["content"],
                after: Some("a\nb\n"),
            },
            Case {
                name: "already correct",
                initial: Some("a\nb\n"),
                spec: "line: b",
                changes: &[],
                after: Some("a\nb\n"),
            },
            Case {
                name: "replace",
                initial: Some("PermitRootLogin yes\n"),
                spec: "line: PermitRootLogin no\nmatch: '^PermitRootLogin'",
                changes: &["content"],
                after: Some("PermitRootLogin no\n"),
            },
            Case {
                name: "remove",
                initial: Some("a\nb\n"),
                spec: "line: a\nensure: absent",
                changes: &["content"],
                after: Some("b\n"),
            },
            Case {
                name: "absent file, ensure absent",
                initial: None,
                spec: "line: a\nensure: absent",
                changes: &[],
                after: None,
            },
        ]);
    }

    #[test]
    fn missing_file_is_an_error_for_present() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nope");
        let spec = crate::conformance::spec::<FileLine>(&format!("path: {}\nline: a", path.display()));
        let world = World::default();
        let err = FileLine::check(&spec, &world.ctx(Mode::NoOp)).expect_err("must fail");
        assert!(err.to_string().contains(&format!("{}: does not exist", path.display())), "{err}");
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bin");
        std::fs::write(&path, [0x66, 0xff, 0xfe, 0x0a]).expect("write");
        let spec = crate::conformance::spec::<FileLine>(&format!("path: {}\nline: a", path.display()));
        let world = World::default();
        let err = FileLine::check(&spec, &world.ctx(Mode::NoOp)).expect_err("must fail");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn bad_regex_and_relative_path_name_their_field() {
        let bad = parse_spec::<FileLineSpec>(&serde_json::json!({"path": "/etc/x", "line": "a", "match": "(unclosed"}))
            .expect_err("bad regex");
        assert_eq!(bad.field.as_deref(), Some("match"));
        assert!(bad.message.contains("invalid regular expression `(unclosed`"), "{}", bad.message);
        let bad = parse_spec::<FileLineSpec>(&serde_json::json!({"path": "/etc/x", "line": "a", "after": "a{2"}))
            .expect_err("bad regex");
        assert_eq!(bad.field.as_deref(), Some("after"));
        let relative =
            parse_spec::<FileLineSpec>(&serde_json::json!({"path": "etc/x", "line": "a"})).expect_err("relative");
        assert_eq!(relative.field.as_deref(), Some("path"));
        assert!(relative.message.contains("not an absolute path"), "{}", relative.message);
        let dotdot =
            parse_spec::<FileLineSpec>(&serde_json::json!({"path": "/etc/../x", "line": "a"})).expect_err("dotdot");
        assert_eq!(dotdot.field.as_deref(), Some("path"));
    }

    #[test]
    fn lint_reports_contradictions_by_field() {
        let spec = crate::conformance::spec::<FileLine>(
            "path: /etc/x\nline: a\nmatch: a\nreplace: false\nreplace_all_matches_not_matching_line: true",
        );
        let lints = FileLine::lint(&spec, vigo_model::catalog::Common { name: "t", when: None });
        let fields: Vec<_> = lints.iter().filter_map(|l| l.field.as_deref()).collect();
        assert_eq!(fields, ["replace"]);
    }
}
