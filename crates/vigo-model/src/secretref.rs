//! Secret references: a string field value written `secret:<path>` names a value
//! the server resolves at publish time through its secret provider.
//!
//! The configuration only ever holds the reference. A path is 1–8 components of
//! `[A-Za-z0-9._-]` separated by `/`, none of them `.` or `..` and none starting
//! with `-` (a provider command would read it as an option), so a provider can map
//! it onto files or a vault without any further escaping. A single-line string
//! that starts with `secret:` is always taken as a reference (and refused when it is
//! malformed), so a typo can never turn into a literal written to a host.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// What a reference starts with.
pub const PREFIX: &str = "secret:";
/// The most components a path may have.
pub const MAX_COMPONENTS: usize = 8;
/// The longest path accepted, in bytes.
pub const MAX_LEN: usize = 255;

/// A well-formed secret path, e.g. `db/pw`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretPath(String);

/// Why a `secret:` value is not a valid reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("the path after `secret:` is empty")]
    Empty,
    #[error("the path is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("the path has {count} components, at most {MAX_COMPONENTS} are allowed")]
    TooManyComponents { count: usize },
    #[error("the path has an empty component (a leading, trailing or doubled `/`)")]
    EmptyComponent,
    #[error("the path has a `{0}` component")]
    DotComponent(String),
    #[error("component `{component}` has the character {ch:?}; only letters, digits, `.`, `_` and `-` are allowed")]
    BadChar { component: String, ch: char },
    #[error("component `{0}` starts with `-`, which a provider command would take for an option")]
    LeadingDash(String),
}

impl SecretPath {
    /// Parses the part after `secret:`.
    pub fn parse(path: &str) -> Result<Self, RefError> {
        if path.is_empty() {
            return Err(RefError::Empty);
        }
        if path.len() > MAX_LEN {
            return Err(RefError::TooLong);
        }
        let count = path.split('/').count();
        if count > MAX_COMPONENTS {
            return Err(RefError::TooManyComponents { count });
        }
        for component in path.split('/') {
            if component.is_empty() {
                return Err(RefError::EmptyComponent);
            }
            if component == "." || component == ".." {
                return Err(RefError::DotComponent(component.to_string()));
            }
            if component.starts_with('-') {
                return Err(RefError::LeadingDash(component.to_string()));
            }
            if let Some(ch) = component.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
                return Err(RefError::BadChar { component: component.to_string(), ch });
            }
        }
        Ok(Self(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last (each a plain file name).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for SecretPath {
    /// Shows the reference as written in the configuration: `secret:db/pw`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.0)
    }
}

/// The path part of `value` when it is meant as a reference: a single-line string
/// starting with `secret:`. Multi-line text (file contents, scripts) never is.
pub fn candidate(value: &str) -> Option<&str> {
    let rest = value.strip_prefix(PREFIX)?;
    (!value.contains(['\n', '\r'])).then_some(rest)
}

/// `Some` when `value` is a reference, well-formed or not; `None` for any other text.
pub fn parse_value(value: &str) -> Option<Result<SecretPath, RefError>> {
    candidate(value).map(SecretPath::parse)
}

/// One reference found in a resource's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where it is: the field name, with `[i]` and `.key` for nested values (`env[0]`).
    pub field: String,
    /// The reference as written.
    pub text: String,
    pub reference: Result<SecretPath, RefError>,
}

/// Every reference in `value` (any depth), `field` naming where `value` itself is.
pub fn find_in(value: &Value, field: &str) -> Vec<Found> {
    let mut out = Vec::new();
    walk(value, field.to_string(), &mut out);
    out
}

/// Every reference in a resource's type-specific fields, in field order.
pub fn find(fields: &Map<String, Value>) -> Vec<Found> {
    let mut out = Vec::new();
    for (key, value) in fields {
        walk(value, key.clone(), &mut out);
    }
    out
}

fn walk(value: &Value, at: String, out: &mut Vec<Found>) {
    match value {
        Value::String(s) => {
            if let Some(reference) = parse_value(s) {
                out.push(Found { field: at, text: s.clone(), reference });
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{at}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                walk(v, format!("{at}.{k}"), out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The well-formed references in a resource's fields (validation refuses the others).
pub fn refs(fields: &Map<String, Value>) -> BTreeSet<SecretPath> {
    find(fields).into_iter().filter_map(|f| f.reference.ok()).collect()
}

/// Replaces every reference in `fields` with the value `lookup` gives for it.
///
/// This puts the clear value into the fields: call it only on a copy that goes
/// straight to the executor that writes it, never on anything that is shown or kept.
/// Stops at the first reference `lookup` cannot fill, with its error.
pub fn substitute<E>(
    fields: &mut Map<String, Value>,
    lookup: &mut impl FnMut(&SecretPath) -> Result<String, E>,
) -> Result<(), E> {
    for value in fields.values_mut() {
        fill(value, lookup)?;
    }
    Ok(())
}

fn fill<E>(value: &mut Value, lookup: &mut impl FnMut(&SecretPath) -> Result<String, E>) -> Result<(), E> {
    match value {
        Value::String(s) => {
            if let Some(Ok(path)) = parse_value(s) {
                *s = lookup(&path)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                fill(item, lookup)?;
            }
        }
        Value::Object(map) => {
            for v in map.values_mut() {
                fill(v, lookup)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_checked() {
        let cases: &[(&str, Result<&str, RefError>)] = &[
            ("db/pw", Ok("db/pw")),
            ("a", Ok("a")),
            ("app.v2/db_main/pass-word", Ok("app.v2/db_main/pass-word")),
            ("a/b/c/d/e/f/g/h", Ok("a/b/c/d/e/f/g/h")),
            ("", Err(RefError::Empty)),
            ("a/b/c/d/e/f/g/h/i", Err(RefError::TooManyComponents { count: 9 })),
            ("/db", Err(RefError::EmptyComponent)),
            ("db/", Err(RefError::EmptyComponent)),
            ("db//pw", Err(RefError::EmptyComponent)),
            ("../etc/shadow", Err(RefError::DotComponent("..".into()))),
            ("db/./pw", Err(RefError::DotComponent(".".into()))),
            ("db pw", Err(RefError::BadChar { component: "db pw".into(), ch: ' ' })),
            ("db\\pw", Err(RefError::BadChar { component: "db\\pw".into(), ch: '\\' })),
            ("dé", Err(RefError::BadChar { component: "dé".into(), ch: 'é' })),
            ("--help", Err(RefError::LeadingDash("--help".into()))),
            ("db/-rf", Err(RefError::LeadingDash("-rf".into()))),
            ("db/pw-", Ok("db/pw-")),
        ];
        for (input, want) in cases {
            let got = SecretPath::parse(input);
            assert_eq!(got.as_ref().map(SecretPath::as_str), want.as_ref().map(|s| *s), "{input:?}");
        }
        assert_eq!(SecretPath::parse(&"a".repeat(300)), Err(RefError::TooLong));
    }

    #[test]
    fn only_single_line_secret_values_are_references() {
        assert_eq!(candidate("secret:db/pw"), Some("db/pw"));
        assert_eq!(candidate("secret: db/pw"), Some(" db/pw"), "a malformed reference, refused later");
        assert_eq!(candidate("secret:db\nmore"), None, "multi-line text is content");
        assert_eq!(candidate("my secret:db"), None);
        assert_eq!(candidate("Secret:db"), None);
        assert!(matches!(parse_value("secret:db/pw"), Some(Ok(_))));
        assert!(matches!(parse_value("secret:"), Some(Err(RefError::Empty))));
    }

    #[test]
    fn finds_references_at_any_depth_with_their_field() {
        let fields = json!({
            "content": "secret:app/db",
            "mode": "0600",
            "env": ["A=1", "secret:app/token"],
            "data": {"user": "admin", "pass": "secret:bad path"},
            "n": 3,
        });
        let found = find(fields.as_object().expect("object"));
        let seen: Vec<(&str, bool)> = found.iter().map(|f| (f.field.as_str(), f.reference.is_ok())).collect();
        assert_eq!(seen, [("content", true), ("env[1]", true), ("data.pass", false)]);
        let paths: Vec<String> = refs(fields.as_object().expect("object")).iter().map(ToString::to_string).collect();
        assert_eq!(paths, ["secret:app/db", "secret:app/token"]);
    }

    #[test]
    fn substitute_fills_every_reference_or_stops_at_the_first_missing() {
        let mut fields = json!({"content": "secret:a", "list": ["x", "secret:b"], "other": "plain"})
            .as_object()
            .expect("object")
            .clone();
        let mut copy = fields.clone();
        substitute(&mut fields, &mut |p: &SecretPath| Ok::<_, ()>(format!("value-of-{}", p.as_str())))
            .expect("all known");
        assert_eq!(
            Value::Object(fields),
            json!({"content": "value-of-a", "list": ["x", "value-of-b"], "other": "plain"})
        );
        let err = substitute(&mut copy, &mut |p: &SecretPath| {
            if p.as_str() == "a" { Ok("v".to_string()) } else { Err(p.to_string()) }
        })
        .expect_err("b is missing");
        assert_eq!(err, "secret:b");
    }
}
