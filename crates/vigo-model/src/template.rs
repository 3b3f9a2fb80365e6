//! Templates in Go text/template syntax, rendered with traits and module variables.
//!
//! The data is `{"traits": …, "vars": …}`, so a template reads
//! `{{ .traits.os.family }}` and `{{ .vars.port }}`. A key that is not there
//! is an error naming it, never a silent `<no value>` in a config file; to
//! test for an optional key use `index`, which yields nothing for a missing
//! key: `{{ with index .vars "tls" }}…{{ end }}`.
//!
//! Only gotmpl's built-in functions are available (`printf`, `len`, `index`,
//! `eq`, …); none of them touch the host, and `range` is capped so a template
//! cannot spin forever.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{MissingKey, Template, TemplateError};
use serde_json::Value;

use crate::diag::did_you_mean;

/// The most `range` iterations one rendering may run, across all loops.
const MAX_RANGE_ITERATIONS: u64 = 1_000_000;

/// Checks a template's syntax without rendering it.
pub fn check(name: &str, source: &str) -> Result<(), String> {
    parse(name, source).map(|_| ())
}

/// Renders `source` with `data` (an object with `traits` and `vars`); a missing key is an error.
pub fn render(name: &str, source: &str, data: &Value) -> Result<String, String> {
    parse(name, source)?.execute_to_string(&json_to_template(data)).map_err(|e| describe(name, &e))
}

fn parse(name: &str, source: &str) -> Result<Template, String> {
    Template::new(name)
        .missing_key(MissingKey::Error)
        .max_range_iters(MAX_RANGE_ITERATIONS)
        .parse(source)
        .map_err(|e| describe(name, &e))
        .and_then(|template| check_structure(source).map(|()| template).map_err(|e| format!("template `{name}`, {e}")))
}

/// The functions gotmpl provides; a template may call nothing else.
const FUNCTIONS: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or", "print", "printf",
    "println", "slice", "urlquery",
];

/// What gotmpl's parser lets through but Go's rejects: blocks left open, a
/// stray `end`, calls to unknown functions and templates. Checked here so
/// the mistake surfaces at validation, not as a half-written file.
fn check_structure(source: &str) -> Result<(), String> {
    check_blocks(source)?;
    let (tree, defines) =
        gotmpl::parse::Parser::new(source, "{{", "}}").and_then(|p| p.parse()).map_err(|e| e.to_string())?;
    let defined: Vec<&str> = defines.iter().map(|d| d.name.as_str()).collect();
    let mut names = Names { source, defined: &defined, problems: Vec::new() };
    names.list(&tree);
    defines.iter().for_each(|d| names.list(&d.body));
    if names.problems.is_empty() { Ok(()) } else { Err(names.problems.join("; ")) }
}

/// Walks a parsed template and records calls to functions or templates that do not exist.
struct Names<'a> {
    source: &'a str,
    defined: &'a [&'a str],
    problems: Vec<String>,
}

impl Names<'_> {
    fn list(&mut self, list: &gotmpl::parse::ListNode) {
        list.nodes.iter().for_each(|n| self.node(n));
    }

    fn node(&mut self, node: &gotmpl::parse::Node) {
        use gotmpl::parse::Node;
        match node {
            Node::List(list) => self.list(list),
            Node::Action(action) => self.pipe(&action.pipe),
            Node::If(branch) | Node::Range(branch) | Node::With(branch) => {
                self.pipe(&branch.pipe);
                self.list(&branch.body);
                if let Some(other) = &branch.else_body {
                    self.list(other);
                }
            }
            Node::Template(call) => {
                if !self.defined.contains(&call.name.as_str()) {
                    let at = position(self.source, call.pos.offset);
                    self.problems.push(format!("{at}: no template named `{}` is defined here", call.name));
                }
                if let Some(pipe) = &call.pipe {
                    self.pipe(pipe);
                }
            }
            Node::Define(define) => self.list(&define.body),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }

    fn pipe(&mut self, pipe: &gotmpl::parse::PipeNode) {
        for command in &pipe.commands {
            command.args.iter().for_each(|e| self.expr(e));
        }
    }

    fn expr(&mut self, expr: &gotmpl::parse::Expr) {
        use gotmpl::parse::Expr;
        match expr {
            Expr::Identifier(pos, name) if !FUNCTIONS.contains(&name.as_str()) => {
                let at = position(self.source, pos.offset);
                let hint = match did_you_mean(name, FUNCTIONS.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("available: {}", FUNCTIONS.join(", ")),
                };
                self.problems.push(format!("{at}: unknown function `{name}` ({hint})"));
            }
            Expr::Pipe(_, pipe) => self.pipe(pipe),
            Expr::Chain(_, inner, _) => self.expr(inner),
            _ => {}
        }
    }
}

/// Checks that every `if`, `range`, `with`, `define` and `block` is closed by
/// its `end`, and that no `end` or `else` stands alone.
///
/// gotmpl accepts a block left open at the end of the text, and stops at a
/// stray `{{ end }}` dropping everything after it; Go reports both, and so do
/// we, before a half-rendered file reaches a host.
fn check_blocks(source: &str) -> Result<(), String> {
    let mut open: Vec<(&str, Position)> = Vec::new();
    for (keyword, at) in actions(source).filter_map(|(body, at)| first_word(body).map(|w| (w, at))) {
        match keyword {
            "if" | "range" | "with" | "define" | "block" => open.push((keyword, at)),
            "end" => {
                open.pop().ok_or_else(|| format!("{at}: `{{{{ end }}}}` closes nothing"))?;
            }
            "else" if !open.last().is_some_and(|(k, _)| matches!(*k, "if" | "range" | "with")) => {
                return Err(format!("{at}: `{{{{ else }}}}` outside `if`, `range` or `with`"));
            }
            _ => {}
        }
    }
    match open.pop() {
        Some((keyword, at)) => Err(format!("{at}: `{{{{ {keyword} }}}}` is never closed by `{{{{ end }}}}`")),
        None => Ok(()),
    }
}

/// A 1-based line and column in a template's text.
#[derive(Debug, Clone, Copy)]
struct Position {
    line: usize,
    col: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.col)
    }
}

fn position(source: &str, offset: usize) -> Position {
    let before = source.get(..offset).unwrap_or(source);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position { line: before.matches('\n').count() + 1, col: before[line_start..].chars().count() + 1 }
}

/// The body of every action (`{{ … }}`, trim markers removed), comments
/// skipped, with where the action starts. Quoted strings may hold `}}`.
fn actions(source: &str) -> impl Iterator<Item = (&str, Position)> {
    let mut rest_from = 0;
    std::iter::from_fn(move || {
        loop {
            let start = rest_from + source.get(rest_from..)?.find("{{")?;
            let body_start = start + 2;
            let body = &source[body_start..];
            let trimmed = strip_trim_marker(body);
            if trimmed.starts_with("/*") {
                let comment_end = body_start + (body.len() - trimmed.len()) + trimmed.find("*/")?;
                rest_from = comment_end + source[comment_end..].find("}}")? + 2;
                continue;
            }
            let len = action_len(body)?;
            rest_from = body_start + len + 2;
            let inner =
                body[..len].strip_suffix('-').filter(|b| b.ends_with(char::is_whitespace)).unwrap_or(&body[..len]);
            return Some((strip_trim_marker(inner).trim(), position(source, start)));
        }
    })
}

/// `{{- ` trims the text before the action; the `-` must be followed by a space.
fn strip_trim_marker(body: &str) -> &str {
    match body.strip_prefix('-') {
        Some(after) if after.starts_with(char::is_whitespace) => after.trim_start(),
        _ => body.trim_start(),
    }
}

/// The length of an action's body up to its `}}`, stepping over quoted strings.
fn action_len(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => i += 1 + body[i + 1..].find('`')?,
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The keyword an action starts with (`if`, `end`, …), if it starts with a word.
fn first_word(body: &str) -> Option<&str> {
    let end = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(body.len());
    (end > 0).then(|| &body[..end])
}

fn describe(name: &str, e: &TemplateError) -> String {
    match e {
        TemplateError::Parse { line, col, message, .. } | TemplateError::Lex { line, col, message, .. } => {
            format!("template `{name}`, line {line}, column {col}: {message}")
        }
        TemplateError::MissingKey { key } => {
            format!("template `{name}`: no key `{key}` in the data (templates read `.traits.…` and `.vars.…`)")
        }
        TemplateError::RangeIterLimit => {
            format!("template `{name}`: `range` ran more than {MAX_RANGE_ITERATIONS} times")
        }
        other => format!("template `{name}`: {other}"),
    }
}

/// Converts JSON into template values: integers stay integers, so a port
/// renders as `80`, not `80.0`.
fn json_to_template(value: &Value) -> gotmpl::Value {
    match value {
        Value::Null => gotmpl::Value::Nil,
        Value::Bool(b) => gotmpl::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                gotmpl::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                gotmpl::Value::Uint(u)
            } else {
                gotmpl::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => gotmpl::Value::String(Arc::from(s.as_str())),
        Value::Array(items) => gotmpl::Value::List(items.iter().map(json_to_template).collect()),
        Value::Object(fields) => {
            let map: BTreeMap<Arc<str>, gotmpl::Value> =
                fields.iter().map(|(k, v)| (Arc::from(k.as_str()), json_to_template(v))).collect();
            gotmpl::Value::Map(Arc::new(map))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Value {
        json!({
            "traits": {
                "os": {"family": "debian", "name": "debian", "version": "12"},
                "identity": {"hostname": "web-01"},
                "cpu": {"count": 4, "load": 0.25},
            },
            "vars": {
                "port": 80,
                "ratio": 1.5,
                "whole": 2.0,
                "big": 18446744073709551615u64,
                "tls": true,
                "users": ["alice", "bob"],
                "upstreams": {"api": {"host": "10.0.0.2", "port": 8080}},
                "empty": [],
            },
        })
    }

    #[test]
    fn renders_templates() {
        let ok = |s: &'static str| Ok::<&'static str, &'static str>(s);
        let cases: Vec<(&str, Result<&str, &str>)> = vec![
            ("family={{ .traits.os.family }}", ok("family=debian")),
            ("listen {{ .vars.port }};", ok("listen 80;")),
            (
                "{{ .vars.ratio }} {{ .vars.whole }} {{ .traits.cpu.count }} {{ .vars.big }}",
                ok("1.5 2 4 18446744073709551615"),
            ),
            ("{{ range .vars.users }}user {{ . }}\n{{ end }}", ok("user alice\nuser bob\n")),
            ("{{ range $i, $u := .vars.users }}{{ $i }}={{ $u }} {{ end }}", ok("0=alice 1=bob ")),
            ("{{ range .vars.empty }}x{{ else }}none{{ end }}", ok("none")),
            ("{{ if .vars.tls }}ssl on{{ else }}ssl off{{ end }}", ok("ssl on")),
            (
                "{{ if eq .traits.os.family \"redhat\" }}rh{{ else if eq .traits.os.family \"debian\" }}deb{{ end }}",
                ok("deb"),
            ),
            ("{{ .vars.upstreams.api.host }}:{{ .vars.upstreams.api.port }}", ok("10.0.0.2:8080")),
            ("{{ range $name, $u := .vars.upstreams }}{{ $name }} {{ $u.port }}{{ end }}", ok("api 8080")),
            ("{{ with index .vars \"missing\" }}yes{{ else }}no{{ end }}", ok("no")),
            ("{{ printf \"%05d\" .vars.port }} {{ len .vars.users }}", ok("00080 2")),
            ("{{- /* comment */ -}}\n  {{ .traits.identity.hostname -}}  \n", ok("web-01")),
            ("{{ .vars.nope }}", Err("template `t.tmpl`: no key `nope` in the data")),
            ("{{ .traits.os.nope.deeper }}", Err("no key `nope`")),
            ("{{ .Port }}", Err("no key `Port`")),
            ("{{ if .vars.nope }}x{{ end }}", Err("no key `nope`")),
            ("{{ index .vars.users 5 }}", Err("template `t.tmpl`: index out of range: 5")),
            ("{{ range 2000000 }}{{ end }}", Err("`range` ran more than 1000000 times")),
            ("{{ template \"other\" }}", Err("line 1, column 4: no template named `other`")),
        ];
        for (source, want) in cases {
            let got = render("t.tmpl", source, &data());
            match (want, got) {
                (Ok(expected), Ok(output)) => assert_eq!(output, expected, "{source}"),
                (Err(text), Err(message)) => assert!(message.contains(text), "{source}: {message}"),
                (Ok(expected), Err(message)) => panic!("{source}: expected {expected:?}, got error {message}"),
                (Err(text), Ok(output)) => panic!("{source}: expected error `{text}`, got {output:?}"),
            }
        }
    }

    #[test]
    fn every_allowed_function_exists() {
        for name in FUNCTIONS {
            // Called without arguments, a known function complains about them, an unknown one about its name.
            let source = format!("{{{{ {name} }}}}");
            let parsed = Template::new("t").parse(&source).expect("a bare call parses");
            if let Err(e) = parsed.execute_to_string(&json_to_template(&data())) {
                assert!(!matches!(e, TemplateError::UndefinedFunction(_)), "{name}: {e}");
            }
        }
        assert!(matches!(
            Template::new("t").parse("{{ nosuch }}").and_then(|t| t.execute_to_string(&gotmpl::Value::Nil)),
            Err(TemplateError::UndefinedFunction(_))
        ));
    }

    #[test]
    fn checks_syntax_without_data() {
        let cases = [
            ("plain text", None),
            ("{{ .vars.anything.at.all }}", None),
            ("{{ define \"x\" }}x{{ end }}{{ template \"x\" }}", None),
            ("{{ .vars.port", Some("template `nginx.conf.tmpl`, line 1, column")),
            ("a\nb\n{{ if .x }}", Some("template `nginx.conf.tmpl`, line 3, column")),
            ("{{ end }}", Some("`{{ end }}` closes nothing")),
            ("{{ nosuchfunc 1 }}", Some("line 1, column 4: unknown function `nosuchfunc` (available: and, call")),
            (
                "a\n{{ .x | prinft \"%d\" }}",
                Some("line 2, column 9: unknown function `prinft` (did you mean `printf`?)"),
            ),
            (
                "{{ if (uper .x) }}{{ end }}{{ lenn . }}",
                Some("urlquery); line 1, column 31: unknown function `lenn` (did you mean `len`?)"),
            ),
            ("{{ template \"missing\" . }}", Some("no template named `missing` is defined here")),
            ("{{ block \"b\" . }}x{{ end }}{{ template \"b\" }}", None),
            ("{{ if .x }}yes", Some("line 1, column 1: `{{ if }}` is never closed by `{{ end }}`")),
            ("a\n  {{- range .l }}{{ if . }}{{ end }}", Some("line 2, column 3: `{{ range }}` is never closed")),
            ("{{ define \"a\" }}x", Some("`{{ define }}` is never closed")),
            ("{{ with .x }}{{ else }}", Some("`{{ with }}` is never closed")),
            ("a\n\n{{ end }}b", Some("template `nginx.conf.tmpl`, line 3, column 1: `{{ end }}` closes nothing")),
            ("{{ if .x }}a{{ end }}{{- end -}}b", Some("column 22: `{{ end }}` closes nothing")),
            ("a{{ else }}b", Some("`{{ else }}` outside `if`, `range` or `with`")),
            ("{{ if .x }}{{ else if .y }}{{ else }}{{ end }}", None),
            ("{{/* {{ if }} */}}{{- /* {{ end }} */ -}}", None),
            ("{{ \"{{ if }}\" }}{{ `{{ end }}` }}{{ '}' }}{{ \"\\\"}}\" }}", None),
            ("{{-3}} {{ .end }} {{ $if := 1 }}{{ $if }}", None),
        ];
        for (source, want) in cases {
            match (want, check("nginx.conf.tmpl", source)) {
                (None, Ok(())) => {}
                (Some(text), Err(message)) => assert!(message.contains(text), "{source:?}: {message}"),
                (None, Err(message)) => panic!("{source:?}: unexpected error {message}"),
                (Some(text), Ok(())) => panic!("{source:?}: expected error `{text}`"),
            }
        }
    }
}
