//! `json_file`: one value at a path inside a JSON document, set or removed while the
//! rest of the document (including key order) stays as it was.
//!
//! The comparison is semantic: a document that already holds the value is in sync
//! however it is formatted, so hand-formatted files are only rewritten when a value
//! really changes.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use vigo_model::catalog::{Common, Lint, Target};

use crate::executor::{Applied, Change, Check, Ctx, Drift, ExecError, Executor, json_text};
use crate::safe_fs::Attrs;
use crate::textfile;

/// Longest JSON text shown in a change record; the diff carries the rest.
const SHOWN_MAX: usize = 80;

pub struct JsonFile;

/// Whether the key should hold the value or not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    #[default]
    Present,
    Absent,
}

/// One value inside a JSON document.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonFileSpec {
    /// Absolute path of the JSON document.
    pub path: PathBuf,
    /// Where the value lives. Either a dotted path (`server.ports.0`; a numeric segment
    /// indexes an array when the parent is an array, and is a member name otherwise) or,
    /// with a leading `/`, an RFC 6901 JSON Pointer (`/server/ports/0`, `~1` for `/`,
    /// `~0` for `~`). Use the pointer form for member names that contain dots or are empty.
    /// An array index equal to the array's length appends.
    pub key: String,
    /// The value to set: any YAML value (string, number, boolean, null, list, map).
    /// Required when `ensure` is `present`.
    #[serde(default, deserialize_with = "given")]
    pub value: Option<Value>,
    /// `present` (default) sets the value; `absent` removes the member. Removing an array
    /// element by index is refused: it would shift the others and remove one more on every run.
    #[serde(default)]
    pub ensure: Ensure,
    /// When true (default), a missing file starts as `{}` and missing intermediate objects
    /// are created. When false, both are errors. An empty file always counts as `{}`.
    #[serde(default = "default_create")]
    pub create: bool,
    /// Spaces per indentation level when the document is rewritten (default 2; 0 writes
    /// it on one line). The output always ends with a newline.
    #[serde(default = "default_indent")]
    pub indent: u8,
}

fn default_create() -> bool {
    true
}

fn default_indent() -> u8 {
    2
}

/// Keeps an explicit `value: null` apart from a missing `value`.
fn given<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Executor for JsonFile {
    type Spec = JsonFileSpec;

    const NAME: &'static str = "json_file";
    const SUMMARY: &'static str = "One value at a path in a JSON document, set or removed, keeping the rest";
    const EXAMPLE: &'static str = r#"- name: app listens on 8443
  type: json_file
  path: /etc/app/config.json
  key: server.ports.0
  value: 8443
- name: no debug flag
  type: json_file
  path: /etc/app/config.json
  key: /features/debug~1verbose
  ensure: absent
"#;

    fn targets(spec: &JsonFileSpec) -> Vec<Target> {
        vec![Target::Path(spec.path.clone())]
    }

    fn lint(spec: &JsonFileSpec, _common: Common<'_>) -> Vec<Lint> {
        let mut lints: Vec<Lint> = problems(spec)
            .into_iter()
            .map(|(field, message)| Lint { field: Some(field.to_string()), message, hint: None })
            .collect();
        if spec.ensure == Ensure::Absent && spec.value.is_some() {
            lints.push(Lint {
                field: Some("value".into()),
                message: "value is ignored when ensure is absent".into(),
                hint: Some("remove `value` or set `ensure: present`".into()),
            });
        }
        lints
    }

    fn check(spec: &JsonFileSpec, _ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        let segments = validate(spec)?;
        let current = textfile::read(&spec.path)?;
        let plan = plan(spec, &segments, current.as_deref()).map_err(|m| at(&spec.path, m))?;
        let Some(new) = plan.content else { return Ok(Check::InSync) };
        let mut changes = Vec::new();
        if current.is_none() {
            changes.push(Change::set("file", "absent", "present"));
        }
        changes.push(Change::new("value", plan.before.as_ref().map(short), plan.after.as_ref().map(short)));
        let diff = textfile::diff(&spec.path, current.as_deref().unwrap_or(""), &new);
        Ok(Check::Drift(Drift { changes, diff: Some(diff) }))
    }

    fn apply(spec: &JsonFileSpec, _drift: &Drift, _ctx: &Ctx<'_>) -> Result<Applied, ExecError> {
        let segments = validate(spec)?;
        textfile::apply_edit(&spec.path, Attrs::default(), |current| {
            let plan = plan(spec, &segments, current).map_err(|m| at(&spec.path, m))?;
            Ok(plan.content.or_else(|| current.map(str::to_string)))
        })?;
        Ok(Applied::default())
    }
}

fn at(path: &Path, message: String) -> ExecError {
    ExecError::failed(format!("{}: {message}", path.display()))
}

/// Everything wrong with a spec that can be told without reading the file.
fn problems(spec: &JsonFileSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !spec.path.is_absolute() {
        out.push(("path", format!("path `{}` is not absolute", spec.path.display())));
    }
    if let Err(message) = parse_key(&spec.key) {
        out.push(("key", message));
    }
    if spec.ensure == Ensure::Present && spec.value.is_none() {
        out.push(("value", "value is required when ensure is present".to_string()));
    }
    out
}

fn validate(spec: &JsonFileSpec) -> Result<Vec<String>, ExecError> {
    let problems = problems(spec);
    if !problems.is_empty() {
        let all: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
        return Err(ExecError::failed(all.join("; ")));
    }
    parse_key(&spec.key).map_err(ExecError::failed)
}

/// Splits `key` into its segments (dotted form or JSON Pointer).
fn parse_key(key: &str) -> Result<Vec<String>, String> {
    if key.is_empty() {
        return Err("key is empty; name a member (`a.b` or `/a/b`)".into());
    }
    if let Some(pointer) = key.strip_prefix('/') {
        return pointer.split('/').map(|token| unescape_pointer(key, token)).collect();
    }
    key.split('.')
        .map(|segment| {
            if segment.is_empty() {
                Err(format!(
                    "key `{key}` has an empty segment; use a JSON Pointer (`/a/b`) for member names that are empty or contain dots"
                ))
            } else {
                Ok(segment.to_string())
            }
        })
        .collect()
}

fn unescape_pointer(key: &str, token: &str) -> Result<String, String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return Err(format!("key `{key}`: `~` must be followed by `0` or `1` in a JSON Pointer")),
        }
    }
    Ok(out)
}

/// An array index as RFC 6901 writes it: decimal digits, no leading zero.
fn index(segment: &str) -> Option<usize> {
    let digits = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
    if !digits || (segment.len() > 1 && segment.starts_with('0')) {
        return None;
    }
    segment.parse().ok()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Names the container a segment is looked up in, for error messages.
fn holder(segments: &[String], depth: usize) -> String {
    match depth {
        0 => "the document".to_string(),
        _ => format!("`{}`", segments[..depth].join(".")),
    }
}

/// The value at `segments`, if the document has one there.
fn get<'a>(doc: &'a Value, segments: &[String]) -> Option<&'a Value> {
    segments.iter().try_fold(doc, |current, segment| match current {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => index(segment).and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Sets the value at `segments`, creating intermediate objects when `create` allows.
fn set(doc: &mut Value, segments: &[String], value: Value, create: bool) -> Result<(), String> {
    let (last, parents) = segments.split_last().expect("parse_key never returns an empty path");
    let mut current = doc;
    for (depth, segment) in parents.iter().enumerate() {
        let here = holder(segments, depth);
        current = match current {
            Value::Object(map) => {
                if !map.contains_key(segment) {
                    if !create {
                        return Err(format!("{here} has no member `{segment}` and create is false"));
                    }
                    map.insert(segment.clone(), Value::Object(Map::new()));
                }
                map.get_mut(segment).expect("the member exists or was just inserted")
            }
            Value::Array(items) => {
                let i = array_index(&here, segment, items.len())?;
                if i == items.len() {
                    if !create {
                        return Err(format!("{here} has no element {i} and create is false"));
                    }
                    items.push(Value::Object(Map::new()));
                }
                &mut items[i]
            }
            other => return Err(not_container(&here, other, segment)),
        };
    }
    let here = holder(segments, parents.len());
    match current {
        Value::Object(map) => {
            // `insert` keeps an existing member in its place, so key order survives.
            map.insert(last.clone(), value);
        }
        Value::Array(items) => {
            let i = array_index(&here, last, items.len())?;
            if i == items.len() {
                items.push(value);
            } else {
                items[i] = value;
            }
        }
        other => return Err(not_container(&here, other, last)),
    }
    Ok(())
}

/// Removes the member at `segments`; `Ok(None)` when there is nothing to remove.
fn remove(doc: &mut Value, segments: &[String]) -> Result<Option<Value>, String> {
    let (last, parents) = segments.split_last().expect("parse_key never returns an empty path");
    let mut current = doc;
    for segment in parents {
        let next = match current {
            Value::Object(map) => map.get_mut(segment),
            Value::Array(items) => index(segment).and_then(|i| items.get_mut(i)),
            // The path cannot exist below a scalar, so the member is already absent.
            _ => None,
        };
        let Some(next) = next else { return Ok(None) };
        current = next;
    }
    match current {
        Value::Object(map) => Ok(map.shift_remove(last)),
        Value::Array(_) => Err(format!(
            "{} is an array; removing element `{last}` by index would shift the others and remove another one on every run; set the whole array instead",
            holder(segments, parents.len())
        )),
        _ => Ok(None),
    }
}

fn array_index(here: &str, segment: &str, len: usize) -> Result<usize, String> {
    let Some(i) = index(segment) else {
        return Err(format!("{here} is an array, and segment `{segment}` is not an index"));
    };
    if i > len {
        return Err(format!("{here} has {len} elements; index {i} would leave a gap (use {len} to append)"));
    }
    Ok(i)
}

fn not_container(here: &str, value: &Value, segment: &str) -> String {
    format!("{here} is {}, not an object or array, so segment `{segment}` cannot be reached", kind(value))
}

/// The outcome of applying the spec to a document: the value before and after, and the
/// new text when the document must be rewritten.
#[derive(Debug, PartialEq)]
struct Plan {
    before: Option<Value>,
    after: Option<Value>,
    content: Option<String>,
}

/// The pure transform: the current text (`None` when the file is absent) to the plan.
fn plan(spec: &JsonFileSpec, segments: &[String], current: Option<&str>) -> Result<Plan, String> {
    let unchanged = |before: Option<Value>| Plan { after: before.clone(), before, content: None };
    let mut doc = match current {
        None if spec.ensure == Ensure::Absent => return Ok(unchanged(None)),
        None if !spec.create => return Err("does not exist and create is false".into()),
        None => Value::Object(Map::new()),
        Some(text) if text.trim().is_empty() => Value::Object(Map::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?,
    };
    let before = get(&doc, segments).cloned();
    match spec.ensure {
        Ensure::Absent => {
            if remove(&mut doc, segments)?.is_none() {
                return Ok(unchanged(before));
            }
            Ok(Plan { before, after: None, content: Some(render(&doc, spec.indent)) })
        }
        Ensure::Present => {
            let value = spec.value.clone().ok_or("value is required when ensure is present")?;
            if before.as_ref() == Some(&value) {
                return Ok(unchanged(before));
            }
            set(&mut doc, segments, value.clone(), spec.create)?;
            Ok(Plan { before, after: Some(value), content: Some(render(&doc, spec.indent)) })
        }
    }
}

/// Pretty-prints with `indent` spaces (0: one line) and a trailing newline.
fn render(doc: &Value, indent: u8) -> String {
    let mut out = Vec::new();
    let written = if indent == 0 {
        serde_json::to_writer(&mut out, doc)
    } else {
        let pad = vec![b' '; usize::from(indent)];
        let mut ser =
            serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(&pad));
        doc.serialize(&mut ser)
    };
    written.expect("a Value has string keys and finite numbers, and a Vec cannot fail to grow");
    let mut text = String::from_utf8(out).expect("serde_json writes UTF-8");
    text.push('\n');
    text
}

/// A value as short JSON text for a change record.
fn short(value: &Value) -> String {
    let text = json_text(value);
    if text.chars().count() <= SHOWN_MAX {
        return text;
    }
    let cut: String = text.chars().take(SHOWN_MAX).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{self, World, attributes};
    use serde_json::json;

    fn spec(yaml: &str) -> JsonFileSpec {
        conformance::spec::<JsonFile>(yaml)
    }

    #[test]
    fn keys_parse_in_both_forms() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("server.ports.0", Ok(&["server", "ports", "0"])),
            ("a", Ok(&["a"])),
            ("/server/ports/0", Ok(&["server", "ports", "0"])),
            ("/a~1b/c~0d", Ok(&["a/b", "c~d"])),
            ("/a.b", Ok(&["a.b"])),
            ("/", Ok(&[""])),
            ("", Err("key is empty")),
            ("a..b", Err("empty segment")),
            ("a.", Err("empty segment")),
            ("/a~2", Err("`~` must be followed")),
            ("/a~", Err("`~` must be followed")),
        ];
        for (key, want) in cases {
            let got = parse_key(key);
            match want {
                Ok(segments) => assert_eq!(
                    got.as_deref(),
                    Ok(segments.iter().map(|s| s.to_string()).collect::<Vec<_>>().as_slice()),
                    "{key}"
                ),
                Err(part) => assert!(got.as_ref().is_err_and(|e| e.contains(part)), "{key}: {got:?}"),
            }
        }
    }

    #[test]
    fn indexes_follow_rfc_6901() {
        assert_eq!(index("0"), Some(0));
        assert_eq!(index("12"), Some(12));
        assert_eq!(index("01"), None);
        assert_eq!(index("-"), None);
        assert_eq!(index("1a"), None);
        assert_eq!(index(""), None);
    }

    /// (current text, spec yaml, expected new text or `None` when untouched)
    #[test]
    fn transform_table() {
        let cases: &[(Option<&str>, &str, Option<&str>)] = &[
            // sets a nested member, creating intermediate objects, keeping key order
            (
                Some(r#"{"z": 1, "a": 2}"#),
                "{path: /x, key: b.c, value: 3}",
                Some("{\n  \"z\": 1,\n  \"a\": 2,\n  \"b\": {\n    \"c\": 3\n  }\n}\n"),
            ),
            // replaces in place: the member keeps its position
            (
                Some(r#"{"z": 1, "a": 2, "m": 3}"#),
                "{path: /x, key: a, value: [1, 2]}",
                Some("{\n  \"z\": 1,\n  \"a\": [\n    1,\n    2\n  ],\n  \"m\": 3\n}\n"),
            ),
            // array index through a dotted path, and through a pointer
            (
                Some(r#"{"s": {"ports": [80, 81]}}"#),
                "{path: /x, key: s.ports.1, value: 8443, indent: 0}",
                Some("{\"s\":{\"ports\":[80,8443]}}\n"),
            ),
            (
                Some(r#"{"s": {"ports": [80]}}"#),
                "{path: /x, key: /s/ports/1, value: 443, indent: 0}",
                Some("{\"s\":{\"ports\":[80,443]}}\n"),
            ),
            // a numeric segment below an object is a member name
            (Some(r#"{"s": {}}"#), "{path: /x, key: s.0, value: true, indent: 0}", Some("{\"s\":{\"0\":true}}\n")),
            // already holds the value, formatted differently: untouched
            (Some("{\"s\":{\"ports\":[80,8443]},\"x\":null}"), "{path: /x, key: s.ports.1, value: 8443}", None),
            (Some("{\"a\":null}"), "{path: /x, key: a, value: null}", None),
            // null is a value of its own, not a missing member
            (Some("{}"), "{path: /x, key: a, value: null, indent: 0}", Some("{\"a\":null}\n")),
            // 4-space indent
            (Some("{}"), "{path: /x, key: a, value: 1, indent: 4}", Some("{\n    \"a\": 1\n}\n")),
            // absent file and empty file start as {}
            (None, "{path: /x, key: a.b, value: x, indent: 0}", Some("{\"a\":{\"b\":\"x\"}}\n")),
            (Some("  \n"), "{path: /x, key: a, value: 1, indent: 0}", Some("{\"a\":1}\n")),
            // absent removes and keeps the order of the rest
            (
                Some(r#"{"z": 1, "a": 2, "m": 3}"#),
                "{path: /x, key: a, ensure: absent, indent: 0}",
                Some("{\"z\":1,\"m\":3}\n"),
            ),
            (
                Some(r#"{"a": {"b": 1, "c": 2}}"#),
                "{path: /x, key: /a/b, ensure: absent, indent: 0}",
                Some("{\"a\":{\"c\":2}}\n"),
            ),
            // absent: nothing there, or the path cannot exist below a scalar
            (Some(r#"{"a": 1}"#), "{path: /x, key: b, ensure: absent}", None),
            (Some(r#"{"a": 1}"#), "{path: /x, key: a.b, ensure: absent}", None),
            (None, "{path: /x, key: a, ensure: absent}", None),
        ];
        for (current, yaml, want) in cases {
            let spec = spec(yaml);
            let segments = parse_key(&spec.key).expect("key");
            let got = plan(&spec, &segments, *current).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(got.content.as_deref(), *want, "{yaml} on {current:?}");
        }
    }

    #[test]
    fn transform_errors_name_the_segment() {
        let cases: &[(Option<&str>, &str, &str)] = &[
            (
                Some(r#"{"server": "x"}"#),
                "{path: /x, key: server.ports.0, value: 1}",
                "`server` is a string, not an object or array, so segment `ports` cannot be reached",
            ),
            (Some("[1]"), "{path: /x, key: a, value: 1}", "the document is an array, and segment `a` is not an index"),
            (
                Some("7"),
                "{path: /x, key: a, value: 1}",
                "the document is a number, not an object or array, so segment `a` cannot be reached",
            ),
            (Some(r#"{"p": [1]}"#), "{path: /x, key: p.3, value: 1}", "`p` has 1 elements; index 3 would leave a gap"),
            (Some(r#"{"p": [1]}"#), "{path: /x, key: p.0, ensure: absent}", "`p` is an array; removing element `0`"),
            (
                Some(r#"{"a": {}}"#),
                "{path: /x, key: a.b.c, value: 1, create: false}",
                "`a` has no member `b` and create is false",
            ),
            (None, "{path: /x, key: a, value: 1, create: false}", "does not exist and create is false"),
            (
                Some("{\"a\": 1,\n  oops}"),
                "{path: /x, key: a, value: 1}",
                "not valid JSON: key must be a string at line 2 column 3",
            ),
        ];
        for (current, yaml, want) in cases {
            let spec = spec(yaml);
            let segments = parse_key(&spec.key).expect("key");
            let err = plan(&spec, &segments, *current).expect_err(yaml);
            assert!(err.contains(want), "{yaml}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn lint_reports_every_problem() {
        let spec = spec("{path: rel/x.json, key: 'a..b'}");
        let lints = JsonFile::lint(&spec, Common { name: "t", when: None });
        let fields: Vec<_> = lints.iter().filter_map(|l| l.field.as_deref()).collect();
        assert_eq!(fields, ["path", "key", "value"]);
        let absent = self::spec("{path: /x, key: a, ensure: absent, value: 1}");
        let lints = JsonFile::lint(&absent, Common { name: "t", when: None });
        assert_eq!(lints.len(), 1);
        assert!(lints[0].message.contains("ignored"));
    }

    #[test]
    fn check_refuses_relative_paths_and_bad_json() {
        let world = World::default();
        let err = JsonFile::check(&spec("{path: x.json, key: a, value: 1}"), &world.ctx(crate::Mode::NoOp))
            .expect_err("relative");
        assert!(err.to_string().contains("path `x.json` is not absolute"), "{err}");
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("c.json");
        std::fs::write(&path, "{\"a\": }").expect("write");
        let yaml = format!("{{path: '{}', key: a, value: 1}}", path.display());
        let err = JsonFile::check(&spec(&yaml), &world.ctx(crate::Mode::NoOp)).expect_err("bad json");
        let msg = err.to_string();
        assert!(msg.starts_with(&path.display().to_string()) && msg.contains("line 1 column"), "{msg}");
    }

    #[test]
    fn conformance() {
        const WRONG: &str = "{\n    \"keep\": [1, 2],\n    \"server\": {\"port\": 80, \"host\": \"a\"}\n}\n";
        const RIGHT: &str = "{\"keep\":[1,2],\"server\":{\"port\":8443,\"host\":\"a\"}}";
        // (initial content, ensure, expected attributes, expected content after)
        type Case<'a> = (Option<&'a str>, &'a str, &'a [&'a str], Option<&'a str>);
        let cases: &[Case<'_>] = &[
            (None, "present", &["file", "value"], Some("{\n  \"server\": {\n    \"port\": 8443\n  }\n}\n")),
            (
                Some(WRONG),
                "present",
                &["value"],
                Some(
                    "{\n  \"keep\": [\n    1,\n    2\n  ],\n  \"server\": {\n    \"port\": 8443,\n    \"host\": \"a\"\n  }\n}\n",
                ),
            ),
            (Some(RIGHT), "present", &[], Some(RIGHT)),
            (None, "absent", &[], None),
            (
                Some(WRONG),
                "absent",
                &["value"],
                Some("{\n  \"keep\": [\n    1,\n    2\n  ],\n  \"server\": {\n    \"host\": \"a\"\n  }\n}\n"),
            ),
            (Some("{\"server\": {}}"), "absent", &[], Some("{\"server\": {}}")),
        ];
        for (initial, ensure, attrs, after) in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            let path = tmp.path().join("app.json");
            if let Some(text) = initial {
                std::fs::write(&path, text).expect("seed");
            }
            let value = if *ensure == "present" { ", value: 8443" } else { "" };
            let spec = spec(&format!("{{path: '{}', key: server.port, ensure: {ensure}{value}}}", path.display()));
            let snapshot = || std::fs::read_to_string(&path).unwrap_or_else(|_| "<absent>".into());
            let drift = conformance::converge::<JsonFile>(&World::default(), &spec, snapshot);
            assert_eq!(attributes(&drift), *attrs, "{initial:?} × {ensure}");
            assert_eq!(std::fs::read_to_string(&path).ok().as_deref(), *after, "{initial:?} × {ensure}");
        }
    }

    #[test]
    fn changes_show_old_and_new_values() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("c.json");
        std::fs::write(&path, "{\"a\": {\"b\": \"old\"}}").expect("seed");
        let spec = spec(&format!("{{path: '{}', key: a.b, value: {{x: 1}}}}", path.display()));
        let Check::Drift(drift) = JsonFile::check(&spec, &World::default().ctx(crate::Mode::NoOp)).expect("check")
        else {
            panic!("expected drift");
        };
        assert_eq!(drift.changes, [Change::set("value", "\"old\"", "{\"x\":1}")]);
        assert!(drift.diff.as_deref().is_some_and(|d| d.contains("+    \"b\": {")), "{:?}", drift.diff);
        assert_eq!(short(&json!("x".repeat(200))).chars().count(), SHOWN_MAX + 1);
    }
}
