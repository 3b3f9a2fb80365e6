//! `blockinfile`: a block of lines between two marker lines — Ansible's
//! `blockinfile`. An existing block is replaced where it stands; a new one goes after
//! the last line matching `insertafter` (default: the end of the file) or before the
//! last line matching `insertbefore`; an empty block or `state: absent` removes it.
//!
//! Deliberate differences: the regexes always match single lines (Ansible searches
//! the whole text when a pattern carries the `(?m)` flag), a marker line is found even
//! when it lacks its final newline, a file is never touched when there is no block to
//! remove, a missing parent directory is not created, and a `marker` that could not
//! tell the first marker line from the last is refused instead of growing the file on
//! every run.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use vigo_model::catalog::Lint;

use crate::executor::{ExecError, Executor};
use crate::types::file_line::{
    Pattern, Presence, absolute_path, does_not_exist, problem, refuse, split_lines, strip_eol,
};

/// A managed block of lines in a text file (Ansible `blockinfile`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockInFileSpec {
    /// Absolute path of the file to edit.
    #[serde(deserialize_with = "absolute_path")]
    #[schemars(with = "String")]
    path: PathBuf,
    /// The lines between the markers (a final newline is added when missing). Empty
    /// with `state: present` removes the block, as in Ansible.
    #[serde(default)]
    block: String,
    /// The marker line template; `{mark}` becomes `marker_begin` or `marker_end`.
    #[serde(default = "default_marker")]
    marker: String,
    /// What `{mark}` becomes in the first marker line (default `BEGIN`).
    #[serde(default = "default_begin")]
    marker_begin: String,
    /// What `{mark}` becomes in the last marker line (default `END`).
    #[serde(default = "default_end")]
    marker_end: String,
    /// Where a new block goes: after the last line matching this regular expression, or
    /// `EOF` (the default) for the end of the file. No matching line also means the end.
    #[serde(default)]
    insertafter: Option<Pattern>,
    /// Where a new block goes: before the last line matching this regular expression,
    /// or `BOF` for the start of the file. No matching line means the end of the file.
    #[serde(default)]
    insertbefore: Option<Pattern>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    state: Presence,
    /// Create the file when it is missing (mode 0644); otherwise that is an error.
    #[serde(default)]
    create: bool,
    /// Add a blank line after the block unless one is already there (or it ends the file).
    #[serde(default)]
    append_newline: bool,
    /// Add a blank line before the block unless one is already there (or it starts the file).
    #[serde(default)]
    prepend_newline: bool,
}

fn default_marker() -> String {
    "# {mark} VIGO MANAGED BLOCK".into()
}

fn default_begin() -> String {
    "BEGIN".into()
}

fn default_end() -> String {
    "END".into()
}

impl BlockInFileSpec {
    fn marker_line(&self, mark: &str) -> String {
        self.marker.replace("{mark}", mark)
    }
}

/// Ansible's argument checks, plus markers that could not find the block again (the
/// block would then be inserted anew on every run).
fn problems(spec: &BlockInFileSpec) -> Vec<Lint> {
    let mut found = Vec::new();
    if spec.insertafter.is_some() && spec.insertbefore.is_some() {
        found.push(problem("insertbefore", "cannot be combined with `insertafter`"));
    }
    if !spec.marker.contains("{mark}") {
        found.push(problem("marker", "must contain `{mark}`, or the first and last marker lines are the same"));
    }
    if spec.marker_begin == spec.marker_end {
        found.push(problem("marker_end", "must differ from `marker_begin`"));
    }
    for (field, text) in
        [("marker", &spec.marker), ("marker_begin", &spec.marker_begin), ("marker_end", &spec.marker_end)]
    {
        if text.contains(['\n', '\r']) {
            found.push(problem(field, "must not contain a newline"));
        }
    }
    found
}

/// The file's text with the block enforced (`None` = the file is or stays absent).
pub(crate) fn edit(current: Option<&str>, spec: &BlockInFileSpec) -> Result<Option<String>, ExecError> {
    refuse(&spec.path, problems(spec))?;
    let present = spec.state == Presence::Present;
    let text = match current {
        Some(text) => text,
        None if !present => return Ok(None),
        None if !spec.create => return Err(does_not_exist(&spec.path, "set `create: true` to create it")),
        None => "",
    };
    let begin = spec.marker_line(&spec.marker_begin);
    let end = spec.marker_line(&spec.marker_end);
    let mut lines: Vec<String> = split_lines(text).into_iter().map(str::to_string).collect();
    let block = block_lines(spec, &begin, &end);

    // The last marker of each kind wins, as in Ansible.
    let first = lines.iter().rposition(|l| strip_eol(l) == begin);
    let last = lines.iter().rposition(|l| strip_eol(l) == end);
    let mut at = match (first, last) {
        (Some(b), Some(e)) => {
            let (from, to) = (b.min(e), b.max(e));
            lines.drain(from..=to);
            from
        }
        _ if block.is_empty() => return Ok(Some(text.to_string())),
        _ => insertion_point(&lines, spec),
    };
    if !block.is_empty() {
        if at > 0 && !lines[at - 1].ends_with('\n') {
            lines[at - 1].push('\n');
        }
        if spec.prepend_newline && at > 0 && !is_blank(&lines[at - 1]) {
            lines.insert(at, "\n".to_string());
            at += 1;
        }
        let after = at + block.len();
        lines.splice(at..at, block);
        if spec.append_newline && after < lines.len() && !is_blank(&lines[after]) {
            lines.insert(after, "\n".to_string());
        }
    }
    Ok(Some(lines.concat()))
}

/// The marker lines around the block's own lines; empty when the block should go.
fn block_lines(spec: &BlockInFileSpec, begin: &str, end: &str) -> Vec<String> {
    if spec.state == Presence::Absent || spec.block.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!("{begin}\n")];
    lines.extend(split_lines(&spec.block).into_iter().map(str::to_string));
    if let Some(last) = lines.last_mut()
        && !last.ends_with('\n')
    {
        last.push('\n');
    }
    lines.push(format!("{end}\n"));
    lines
}

/// Where a new block goes: Ansible uses the last line a regex matches, and the end of
/// the file when none does (for `insertbefore` too).
fn insertion_point(lines: &[String], spec: &BlockInFileSpec) -> usize {
    let last_match = |pattern: &Pattern| lines.iter().rposition(|l| pattern.is_match(strip_eol(l)));
    match (&spec.insertafter, &spec.insertbefore) {
        (Some(after), _) if after.source() != "EOF" => last_match(after).map_or(lines.len(), |i| i + 1),
        (None, Some(before)) if before.source() == "BOF" => 0,
        (None, Some(before)) => last_match(before).unwrap_or(lines.len()),
        _ => lines.len(),
    }
}

fn is_blank(line: &str) -> bool {
    strip_eol(line).is_empty()
}

/// Ansible's `blockinfile` module.
pub struct BlockInFile;

impl Executor for BlockInFile {
    type Spec = BlockInFileSpec;

    const NAME: &'static str = "blockinfile";
    const SUMMARY: &'static str = "A block of lines between marker lines in a text file (Ansible's blockinfile)";
    const EXAMPLE: &'static str = r#"
- name: sshd-match-sftp
  type: blockinfile
  path: /etc/ssh/sshd_config
  insertbefore: '^Match '
  block: |
    Match Group sftp
      ChrootDirectory /srv/sftp
      ForceCommand internal-sftp
- name: hosts-lab
  type: blockinfile
  path: /etc/hosts
  marker: '# {mark} lab hosts'
  append_newline: true
  prepend_newline: true
  block: |
    10.1.0.10 lab1
    10.1.0.11 lab2
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

    const WITH_BLOCK: &str = "a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n";

    #[test]
    fn edits_like_ansible_blockinfile() {
        let rows = [
            row(
                "insert at EOF by default",
                Some("a\nb\n"),
                "block: x",
                Ok(Some("a\nb\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n")),
            ),
            row(
                "unterminated last line gets a newline first",
                Some("a"),
                "block: x",
                Ok(Some("a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n")),
            ),
            row(
                "insertafter EOF explicitly",
                Some("a\n"),
                "block: x\ninsertafter: EOF",
                Ok(Some("a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n")),
            ),
            row(
                "insertbefore BOF",
                Some("a\nb\n"),
                "block: \"x\\ny\\n\"\ninsertbefore: BOF",
                Ok(Some("# BEGIN VIGO MANAGED BLOCK\nx\ny\n# END VIGO MANAGED BLOCK\na\nb\n")),
            ),
            row(
                "insertafter uses the last match",
                Some("s\na\ns\nb\n"),
                "block: x\ninsertafter: '^s$'",
                Ok(Some("s\na\ns\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\nb\n")),
            ),
            row(
                "insertbefore uses the last match",
                Some("Match a\nz\nMatch b\n"),
                "block: x\ninsertbefore: '^Match '",
                Ok(Some("Match a\nz\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\nMatch b\n")),
            ),
            row(
                "insertbefore without a match goes to EOF",
                Some("a\n"),
                "block: x\ninsertbefore: '^nomatch'",
                Ok(Some("a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n")),
            ),
            row(
                "existing block is replaced in place, anchors ignored",
                Some("a\n# BEGIN VIGO MANAGED BLOCK\nold\nold2\n# END VIGO MANAGED BLOCK\nb\n"),
                "block: new\ninsertbefore: BOF",
                Ok(Some("a\n# BEGIN VIGO MANAGED BLOCK\nnew\n# END VIGO MANAGED BLOCK\nb\n")),
            ),
            row(
                "block already right",
                Some("a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n"),
                "block: x",
                Ok(Some("a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n")),
            ),
            row(
                "markers in reverse order are still one block",
                Some("a\n# END VIGO MANAGED BLOCK\nold\n# BEGIN VIGO MANAGED BLOCK\nb\n"),
                "block: x",
                Ok(Some("a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\nb\n")),
            ),
            row(
                "a lone begin marker is not a block",
                Some("# BEGIN VIGO MANAGED BLOCK\na\n"),
                "block: x",
                Ok(Some("# BEGIN VIGO MANAGED BLOCK\na\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n")),
            ),
            row(
                "state absent removes the block",
                Some("a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\nb\n"),
                "state: absent",
                Ok(Some("a\nb\n")),
            ),
            row(
                "empty block removes the block",
                Some("a\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n"),
                "block: ''",
                Ok(Some("a\n")),
            ),
            row("absent without a block", Some("a"), "state: absent", Ok(Some("a"))),
            row("absent on a missing file", None, "state: absent", Ok(None)),
            row("missing file without create", None, "block: x", Err("does not exist (set `create: true`")),
            row(
                "missing file with create",
                None,
                "block: x\ncreate: true",
                Ok(Some("# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n")),
            ),
            row("create with an empty block makes an empty file", None, "create: true", Ok(Some(""))),
            row(
                "custom marker",
                Some("a\n"),
                "block: x\nmarker: '<!-- {mark} -->'\nmarker_begin: start\nmarker_end: stop",
                Ok(Some("a\n<!-- start -->\nx\n<!-- stop -->\n")),
            ),
            row(
                "prepend and append blank lines",
                Some("a\nb\n"),
                "block: x\ninsertafter: '^a$'\nprepend_newline: true\nappend_newline: true",
                Ok(Some("a\n\n# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n\nb\n")),
            ),
            row(
                "no blank lines at the file's edges",
                Some(""),
                "block: x\nprepend_newline: true\nappend_newline: true",
                Ok(Some("# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n")),
            ),
            row(
                "marker without {mark}",
                Some("a\n"),
                "block: x\nmarker: '# managed'",
                Err("`marker` must contain `{mark}`"),
            ),
            row(
                "insertafter and insertbefore together",
                Some("a\n"),
                "block: x\ninsertafter: a\ninsertbefore: b",
                Err("`insertbefore` cannot be combined"),
            ),
        ];
        edit_table::<BlockInFile>(&rows, edit);
    }

    #[test]
    fn converges_real_files() {
        converge_table::<BlockInFile>(&[
            Case {
                name: "insert",
                initial: Some("a\n"),
                spec: "block: x",
                changes: &["content"],
                after: Some(WITH_BLOCK),
            },
            Case {
                name: "already correct",
                initial: Some(WITH_BLOCK),
                spec: "block: x",
                changes: &[],
                after: Some(WITH_BLOCK),
            },
            Case {
                name: "replace block",
                initial: Some(WITH_BLOCK),
                spec: "block: new",
                changes: &["content"],
                after: Some("a\n# BEGIN VIGO MANAGED BLOCK\nnew\n# END VIGO MANAGED BLOCK\n"),
            },
            Case {
                name: "remove",
                initial: Some(WITH_BLOCK),
                spec: "state: absent",
                changes: &["content"],
                after: Some("a\n"),
            },
            Case {
                name: "create",
                initial: None,
                spec: "block: x\ncreate: true",
                changes: &["ensure"],
                after: Some("# BEGIN VIGO MANAGED BLOCK\nx\n# END VIGO MANAGED BLOCK\n"),
            },
            Case { name: "absent file stays absent", initial: None, spec: "state: absent", changes: &[], after: None },
        ]);
    }

    #[test]
    fn missing_file_without_create_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nope");
        let spec = crate::conformance::spec::<BlockInFile>(&format!("path: {}\nblock: x", path.display()));
        let err = BlockInFile::check(&spec, &World::default().ctx(Mode::NoOp)).expect_err("must fail");
        assert!(err.to_string().starts_with(&format!("{}: does not exist", path.display())), "{err}");
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bin");
        std::fs::write(&path, [0x80]).expect("write");
        let spec = crate::conformance::spec::<BlockInFile>(&format!("path: {}\nblock: x", path.display()));
        let err = BlockInFile::check(&spec, &World::default().ctx(Mode::NoOp)).expect_err("must fail");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn bad_regex_names_its_field() {
        let err = parse_spec::<BlockInFileSpec>(&serde_json::json!({"path": "/etc/x", "insertafter": "[a-"}))
            .expect_err("bad regex");
        assert_eq!(err.field.as_deref(), Some("insertafter"));
        assert!(err.message.contains("invalid regular expression `[a-`"), "{}", err.message);
    }

    #[test]
    fn lint_names_marker_problems() {
        let spec = crate::conformance::spec::<BlockInFile>("path: /etc/x\nmarker_begin: X\nmarker_end: X");
        let lints = BlockInFile::lint(&spec, vigo_model::catalog::Common { name: "t", when: None });
        let fields: Vec<_> = lints.iter().filter_map(|l| l.field.as_deref()).collect();
        assert_eq!(fields, ["marker_end"]);
    }
}
