//! `when:` conditions, written in CEL, evaluated over the envoy's traits.
//!
//! A condition sees two names: `traits` (the whole trait tree) and `changed`
//! (a resource notifying this one changed in this run). On top of CEL's own
//! functions it offers a few helpers that read the traits for the admin:
//!
//! | helper | true when |
//! |---|---|
//! | `os_family('debian')` | `traits.os.family` is `debian` |
//! | `os('ubuntu')` | `traits.os.name` is `ubuntu` |
//! | `hostname_matches('web-*')` | `traits.identity.hostname` matches the glob (`*`, `?`, `[abc]`, any case) |
//! | `version_gte(a, b)` (and `_gt`, `_lt`, `_lte`) | `a >= b` in Debian version order |
//!
//! The helpers answer false when the trait they read is missing, so
//! `os_family('debian')` is safe on any host; reading `traits.os.family`
//! directly fails there instead, with a hint to test it with `has(…)` first.
//!
//! Conditions are checked when compiled: syntax, the names they read and the
//! functions they call, so a typo is reported by validation rather than on
//! the envoy. CEL has no I/O and no loops beyond its bounded macros, and the
//! parser caps nesting depth, which keeps evaluation sandboxed and bounded.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::value::Val;
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, ParseErrors, Program};
use serde_json::Value;

use crate::diag::did_you_mean;

/// Conditions longer than this are refused: a `when:` is a one-liner, and the
/// cap keeps a pasted blob from costing the parser anything.
const MAX_SOURCE_LEN: usize = 4096;

/// The names a condition may read, besides variables bound by its own macros.
const VARIABLES: &[&str] = &["traits", "changed"];

/// CEL's type names, which a condition may mention as in `type(x) == string`.
const TYPE_NAMES: &[&str] = &["bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"];

/// Vigo's helpers: name and number of arguments. They are called as
/// functions, never as methods.
const HELPERS: &[(&str, usize)] = &[
    ("hostname_matches", 1),
    ("os", 1),
    ("os_family", 1),
    ("version_gt", 2),
    ("version_gte", 2),
    ("version_lt", 2),
    ("version_lte", 2),
];

/// The CEL standard functions a condition may call. Others (timestamps,
/// optionals, …) are left out on purpose: conditions are about traits.
const CEL_FUNCTIONS: &[&str] = &[
    "bool",
    "contains",
    "double",
    "dyn",
    "endsWith",
    "int",
    "matches",
    "size",
    "startsWith",
    "string",
    "type",
    "uint",
];

/// A compiled `when:` condition.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

/// What a condition sees when it is evaluated.
#[derive(Debug, Clone, Copy)]
pub struct WhenEnv<'a> {
    /// The whole trait tree (`traits.os.family`, …).
    pub traits: &'a Value,
    /// True when a resource that notifies this one changed in this run.
    pub changed: bool,
}

impl Condition {
    /// Compiles a condition; the error explains what is wrong with it.
    pub fn compile(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("the condition is empty".into());
        }
        if source.len() > MAX_SOURCE_LEN {
            return Err(format!(
                "the condition is {} bytes long, more than the {MAX_SOURCE_LEN} allowed",
                source.len()
            ));
        }
        let program = env().compile(source).map_err(|e| format!("`{source}`: {}", describe_parse_errors(&e)))?;
        let mut checker = Checker::default();
        checker.walk(program.expression());
        if !checker.problems.is_empty() {
            return Err(format!("`{source}`: {}", checker.problems.join("; ")));
        }
        Ok(Self { source: source.to_string(), program: Arc::new(program) })
    }

    /// The condition as the admin wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition; a non-boolean result is an error.
    pub fn eval(&self, env: WhenEnv<'_>) -> Result<bool, String> {
        let context = self.context(env)?;
        let value = self
            .program
            .execute(&context)
            .map_err(|e| format!("condition `{}` failed: {}", self.source, describe_execution_error(&e)))?;
        match value {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!("condition `{}` evaluated to {}, not a boolean", self.source, other.type_of())),
        }
    }

    fn context(&self, env: WhenEnv<'_>) -> Result<Context<'static, 'static>, String> {
        let failed = |e: String| format!("condition `{}` failed: {e}", self.source);
        let mut context = Context::with_env(Arc::clone(self::env()));
        let traits: Box<dyn Val> =
            json_to_cel(env.traits).try_into().map_err(|e: ExecutionError| failed(e.to_string()))?;
        context.add_variable_as_val("traits", traits);
        context.add_variable_as_val("changed", Box::new(cel::common::types::CelBool::from(env.changed)));
        add_helpers(&mut context, env.traits).map_err(|e| failed(e.to_string()))?;
        Ok(context)
    }
}

/// Whether a condition refers to the word `changed` (a handler that runs only when notified).
pub fn mentions_changed(source: &str) -> bool {
    source.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w == "changed")
}

/// Compares two versions the way dpkg does: epoch (`1:`), then upstream
/// version, then revision (after the last `-`). Runs of digits compare as
/// numbers (`12.4 < 12.10`), letters sort before other characters, and `~`
/// sorts before everything, even the end of the string (`1.0~rc1 < 1.0`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a, b) = (DebVersion::parse(a), DebVersion::parse(b));
    compare_digits(a.epoch, b.epoch)
        .then_with(|| compare_fragment(a.upstream, b.upstream))
        .then_with(|| compare_fragment(a.revision, b.revision))
}

/// The process-wide CEL environment: the standard library without the
/// optional-value syntax, which conditions have no use for.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib().with_optional_support(false)))
}

/// Walks a parsed condition and records every name or call it cannot serve.
#[derive(Default)]
struct Checker<'e> {
    /// Variables bound by the macros (`exists(p, …)`) around the current node.
    bound: Vec<&'e str>,
    problems: Vec<String>,
}

impl<'e> Checker<'e> {
    fn walk(&mut self, e: &'e IdedExpr) {
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => self.walk(&select.operand),
            Expr::Call(call) => {
                self.call(&call.func_name, call.target.is_some(), &call.args);
                if let Some(target) = &call.target {
                    self.walk(target);
                }
                call.args.iter().for_each(|a| self.walk(a));
            }
            Expr::List(list) => list.elements.iter().for_each(|a| self.walk(a)),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        self.walk(&m.key);
                        self.walk(&m.value);
                    }
                }
            }
            Expr::Struct(s) => {
                self.problem(format!("`{}{{…}}` builds a typed object, which conditions cannot do", s.type_name))
            }
            Expr::Comprehension(c) => {
                self.walk(&c.iter_range);
                self.walk(&c.accu_init);
                let depth = self.bound.len();
                self.bound.push(&c.iter_var);
                if let Some(second) = &c.iter_var2 {
                    self.bound.push(second);
                }
                self.bound.push(&c.accu_var);
                self.walk(&c.loop_cond);
                self.walk(&c.loop_step);
                self.walk(&c.result);
                self.bound.truncate(depth);
            }
        }
    }

    fn ident(&mut self, name: &str) {
        // Names starting with `@` are the macros' own accumulators.
        if name.starts_with('@')
            || VARIABLES.contains(&name)
            || TYPE_NAMES.contains(&name)
            || self.bound.contains(&name)
        {
            return;
        }
        let hint = match did_you_mean(name, VARIABLES.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None => "a condition reads `traits` and `changed`".to_string(),
        };
        self.problem(format!("unknown name `{name}` ({hint})"));
    }

    fn call(&mut self, name: &str, is_method: bool, args: &[IdedExpr]) {
        // Operators (`_==_`, `!_`, `@in`, …) never start with a letter.
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return;
        }
        if let Some((_, arity)) = HELPERS.iter().find(|(helper, _)| *helper == name) {
            if is_method {
                self.problem(format!("`{name}` is called as `{name}(…)`, not as a method"));
            } else if args.len() != *arity {
                self.problem(format!("`{name}` takes {arity} argument(s), not {}", args.len()));
            } else if name == "hostname_matches" {
                self.glob_literal(&args[0]);
            }
            return;
        }
        if CEL_FUNCTIONS.contains(&name) {
            return;
        }
        let known = HELPERS.iter().map(|(helper, _)| *helper).chain(CEL_FUNCTIONS.iter().copied());
        let hint = match did_you_mean(name, known) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!("available: {}", known_functions().join(", ")),
        };
        self.problem(format!("unknown function `{name}` ({hint})"));
    }

    /// A literal glob is checked now rather than on every envoy.
    fn glob_literal(&mut self, arg: &IdedExpr) {
        if let Expr::Literal(LiteralValue::String(pattern)) = &arg.expr
            && let Err(e) = glob::Pattern::new(pattern.inner())
        {
            self.problem(format!("invalid hostname pattern `{}`: {e}", pattern.inner()));
        }
    }

    fn problem(&mut self, message: String) {
        if !self.problems.contains(&message) {
            self.problems.push(message);
        }
    }
}

fn known_functions() -> Vec<&'static str> {
    let mut names: Vec<&str> = HELPERS.iter().map(|(name, _)| *name).chain(CEL_FUNCTIONS.iter().copied()).collect();
    names.sort_unstable();
    names
}

fn describe_parse_errors(errors: &ParseErrors) -> String {
    let described: Vec<String> = errors
        .errors
        .iter()
        .map(|e| {
            let (line, col) = e.pos;
            let at = if line > 1 { format!("line {line}, column {col}") } else { format!("column {col}") };
            let msg = e.msg.strip_prefix("Syntax error: ").unwrap_or(&e.msg);
            format!("syntax error at {at}: {msg}")
        })
        .collect();
    if described.is_empty() {
        return "syntax error".into();
    }
    described.join("; ")
}

fn describe_execution_error(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(key) => {
            format!("the traits have no key `{key}` (test for it first, e.g. `has(traits.os) && …`)")
        }
        ExecutionError::UndeclaredReference(name) => format!("unknown name `{name}`"),
        ExecutionError::FunctionError { function, message } => format!("{function}: {message}"),
        ExecutionError::NoSuchOverload(overload) => overload.to_string(),
        other => lowercase_first(&other.to_string()),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Converts JSON traits into CEL values: integers stay integers (`i64`, or
/// `u64` past its range), other numbers become doubles.
fn json_to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        Value::Object(fields) => {
            let map: HashMap<Key, cel::Value> =
                fields.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v))).collect();
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// The string at `path` in the traits, if every step exists and it is a string.
fn trait_str(traits: &Value, path: &[&str]) -> Option<String> {
    path.iter().try_fold(traits, |v, key| v.get(key))?.as_str().map(str::to_string)
}

fn add_helpers(context: &mut Context<'static, 'static>, traits: &Value) -> Result<(), cel::DeclarationError> {
    let family = trait_str(traits, &["os", "family"]);
    context.add_function("os_family", move |wanted: Arc<String>| family.as_deref() == Some(wanted.as_str()))?;
    let name = trait_str(traits, &["os", "name"]);
    context.add_function("os", move |wanted: Arc<String>| name.as_deref() == Some(wanted.as_str()))?;
    let hostname = trait_str(traits, &["identity", "hostname"]);
    context.add_function("hostname_matches", move |pattern: Arc<String>| {
        hostname_matches(hostname.as_deref(), &pattern)
    })?;
    context
        .add_function("version_gt", |a: cel::Value, b: cel::Value| version_is("version_gt", &a, &b, Ordering::is_gt))?;
    context.add_function("version_gte", |a: cel::Value, b: cel::Value| {
        version_is("version_gte", &a, &b, Ordering::is_ge)
    })?;
    context
        .add_function("version_lt", |a: cel::Value, b: cel::Value| version_is("version_lt", &a, &b, Ordering::is_lt))?;
    context.add_function("version_lte", |a: cel::Value, b: cel::Value| {
        version_is("version_lte", &a, &b, Ordering::is_le)
    })?;
    Ok(())
}

fn hostname_matches(hostname: Option<&str>, pattern: &str) -> Result<bool, ExecutionError> {
    let pattern = glob::Pattern::new(pattern)
        .map_err(|e| ExecutionError::function_error("hostname_matches", format!("invalid pattern `{pattern}`: {e}")))?;
    // Host names are case-insensitive, so the glob is too.
    let options = glob::MatchOptions { case_sensitive: false, ..glob::MatchOptions::new() };
    Ok(hostname.is_some_and(|h| pattern.matches_with(h, options)))
}

fn version_is(
    function: &str,
    a: &cel::Value,
    b: &cel::Value,
    test: fn(Ordering) -> bool,
) -> Result<bool, ExecutionError> {
    let a = version_text(function, a)?;
    let b = version_text(function, b)?;
    Ok(test(compare_versions(&a, &b)))
}

/// Versions are strings, but a trait may hold `12` as a number: accept that too.
fn version_text(function: &str, v: &cel::Value) -> Result<String, ExecutionError> {
    match v {
        cel::Value::String(s) => Ok(s.to_string()),
        cel::Value::Int(i) => Ok(i.to_string()),
        cel::Value::UInt(u) => Ok(u.to_string()),
        cel::Value::Float(f) => Ok(f.to_string()),
        other => Err(ExecutionError::function_error(
            function,
            format!("expects versions as strings, got a {}", other.type_of()),
        )),
    }
}

/// A Debian version split into its parts; missing parts are empty (epoch `0`).
struct DebVersion<'a> {
    epoch: &'a str,
    upstream: &'a str,
    revision: &'a str,
}

impl<'a> DebVersion<'a> {
    fn parse(v: &'a str) -> Self {
        let v = v.trim();
        let (epoch, rest) = match v.split_once(':') {
            Some((epoch, rest)) if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) => (epoch, rest),
            _ => ("0", v),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        Self { epoch, upstream, revision }
    }
}

/// Compares two runs of ASCII digits as numbers of any size.
fn compare_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// dpkg's weight of a character in a non-digit run; `None` is the end of the run.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternate non-digit runs (by weight) and digit runs (as numbers).
fn compare_fragment(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        loop {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            if ca.is_none() && cb.is_none() {
                break;
            }
            let order = weight(ca).cmp(&weight(cb));
            if order.is_ne() {
                return order;
            }
            // Equal weights off the end and off a digit are both 0, so both sides hold a character here.
            i += 1;
            j += 1;
        }
        let start_a = i;
        while a.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let start_b = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        // Both slices hold only ASCII digits, so they are valid UTF-8.
        let run_a = std::str::from_utf8(&a[start_a..i]).unwrap_or("");
        let run_b = std::str::from_utf8(&b[start_b..j]).unwrap_or("");
        let order = compare_digits(run_a, run_b);
        if order.is_ne() {
            return order;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What a case expects: a result, or an error containing the text.
    enum Want {
        Is(bool),
        Fails(&'static str),
    }
    use Want::{Fails, Is};

    fn debian() -> Value {
        json!({
            "os": {"family": "debian", "name": "debian", "version": "12.4", "release": 12},
            "identity": {"hostname": "web-01.example.org"},
            "packages": ["nginx", "openssh-server"],
            "mem": {"total_mb": 2048, "load": 0.5},
        })
    }

    #[test]
    fn evaluates_conditions_over_traits() {
        let bare = json!({"identity": {"hostname": "db1"}});
        let cases: Vec<(&str, Value, bool, Want)> = vec![
            ("traits.os.family == 'debian'", debian(), false, Is(true)),
            ("traits.os.family == 'redhat'", debian(), false, Is(false)),
            ("os_family('debian') && !changed", debian(), false, Is(true)),
            ("os_family('debian') && !changed", debian(), true, Is(false)),
            ("changed", debian(), true, Is(true)),
            ("os('debian')", debian(), false, Is(true)),
            ("os('ubuntu')", debian(), false, Is(false)),
            ("os_family('debian')", bare.clone(), false, Is(false)),
            ("!os('ubuntu')", bare.clone(), false, Is(true)),
            ("version_gte(traits.os.version, '12')", debian(), false, Is(true)),
            ("version_gte(traits.os.version, '12.10')", debian(), false, Is(false)),
            ("version_lt(traits.os.version, '13')", debian(), false, Is(true)),
            ("version_gt(traits.os.release, '11')", debian(), false, Is(true)),
            ("version_lte('12', traits.os.release)", debian(), false, Is(true)),
            ("version_gt('1:2.0-1', '2.1')", json!({}), false, Is(true)),
            ("version_lt('1.0~rc1', '1.0')", json!({}), false, Is(true)),
            ("version_gt('2.30-1+deb12u1', '2.30-1')", json!({}), false, Is(true)),
            ("version_gte(1, 2)", json!({}), false, Is(false)),
            ("version_gte(traits.packages, '1')", debian(), false, Fails("expects versions as strings, got a list")),
            ("hostname_matches('web-*')", debian(), false, Is(true)),
            ("hostname_matches('WEB-0?.example.org')", debian(), false, Is(true)),
            ("hostname_matches('web-0[23]*')", debian(), false, Is(false)),
            ("hostname_matches('db*')", debian(), false, Is(false)),
            ("hostname_matches('*')", json!({}), false, Is(false)),
            ("hostname_matches(traits.os.name + '[')", debian(), false, Fails("invalid pattern `debian[`")),
            ("'nginx' in traits.packages", debian(), false, Is(true)),
            ("traits.packages.exists(p, p.startsWith('openssh'))", debian(), false, Is(true)),
            ("traits.mem.total_mb >= 1024 && traits.mem.load < 1.0", debian(), false, Is(true)),
            ("has(traits.os) && traits.os.family == 'debian'", bare.clone(), false, Is(false)),
            ("size(traits.packages) == 2", debian(), false, Is(true)),
            ("traits.nope.x == 1", debian(), false, Fails("the traits have no key `nope`")),
            ("traits.os.family == 'debian'", bare, false, Fails("condition `traits.os.family == 'debian'` failed")),
            (
                "traits.os.family",
                debian(),
                false,
                Fails("condition `traits.os.family` evaluated to string, not a boolean"),
            ),
            ("traits.mem.total_mb", debian(), false, Fails("evaluated to int, not a boolean")),
            ("traits.mem.total_mb > 'a'", debian(), false, Fails("no matching overload")),
        ];
        for (source, traits, changed, want) in cases {
            let condition = Condition::compile(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            let got = condition.eval(WhenEnv { traits: &traits, changed });
            match (want, got) {
                (Is(expected), Ok(value)) => assert_eq!(value, expected, "{source}"),
                (Fails(text), Err(message)) => assert!(message.contains(text), "{source}: {message}"),
                (Is(_), Err(message)) => panic!("{source}: unexpected error {message}"),
                (Fails(text), Ok(value)) => panic!("{source}: expected error `{text}`, got {value}"),
            }
        }
    }

    #[test]
    fn rejects_bad_conditions_at_compile_time() {
        let cases = [
            ("traits.os.family ==", "syntax error at column"),
            ("os_family('debian'", "syntax error"),
            ("traits.a &&\n(", "line 2"),
            ("", "empty"),
            ("os_famly('debian')", "unknown function `os_famly` (did you mean `os_family`?)"),
            ("exec('rm -rf /')", "unknown function `exec` (available: bool, contains"),
            ("timestamp('2024-01-01T00:00:00Z') > traits.x", "unknown function `timestamp`"),
            ("trait.os.family == 'debian'", "unknown name `trait` (did you mean `traits`?)"),
            ("xyz", "unknown name `xyz` (a condition reads `traits` and `changed`)"),
            ("os_family('a', 'b')", "`os_family` takes 1 argument(s), not 2"),
            ("version_gte('1')", "`version_gte` takes 2 argument(s), not 1"),
            ("'debian'.os_family()", "not as a method"),
            ("hostname_matches('web-[')", "invalid hostname pattern `web-[`"),
            ("traits.packages.exists(p, q)", "unknown name `q`"),
        ];
        for (source, text) in cases {
            match Condition::compile(source) {
                Ok(_) => panic!("{source:?} compiled"),
                Err(message) => assert!(message.contains(text), "{source:?}: {message}"),
            }
        }
        let long = "changed || ".repeat(500) + "changed";
        assert!(Condition::compile(&long).is_err_and(|e| e.contains("more than the 4096 allowed")));
    }

    #[test]
    fn every_allowed_cel_function_exists() {
        // A condition that calls each function once, so a missing one would fail as undeclared.
        let source = "size('ab') == 2 && 'ab'.contains('a') && 'ab'.startsWith('a') && 'ab'.endsWith('b') \
            && 'ab'.matches('^a') && int('1') == 1 && uint(1) == 1u && double(1) == 1.0 && string(1) == '1' \
            && bool('true') && type(1) == int && dyn(1) == 1";
        for name in CEL_FUNCTIONS {
            assert!(source.contains(&format!("{name}(")), "{name} is not exercised");
        }
        let condition = Condition::compile(source).expect("every function is allowed");
        assert_eq!(condition.eval(WhenEnv { traits: &json!({}), changed: false }), Ok(true));
    }

    #[test]
    fn conditions_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Condition>();
        let condition = Condition::compile("os_family('debian')").expect("valid");
        let traits = debian();
        std::thread::scope(|s| {
            let handle = s.spawn(|| condition.eval(WhenEnv { traits: &traits, changed: false }));
            assert_eq!(handle.join().expect("no panic"), Ok(true));
        });
        assert_eq!(condition.source(), "os_family('debian')");
    }

    #[test]
    fn orders_versions_like_dpkg() {
        use Ordering::{Equal, Greater, Less};
        let cases = [
            ("12.4", "12.10", Less),
            ("12", "12.0", Less),
            ("1.0", "1.0", Equal),
            ("01.002", "1.2", Equal),
            ("1:2.0-1", "2.1", Greater),
            ("0:1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("2.30-1+deb12u1", "2.30-1", Greater),
            ("2.30-1", "2.30-2", Less),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1.0-1", "1.0", Greater),
            ("1.2.3-4-5", "1.2.3-4-4", Greater),
            ("99999999999999999999999", "100000000000000000000000", Less),
            ("", "0", Equal),
            ("é1", "é2", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn finds_the_word_changed() {
        assert!(mentions_changed("changed"));
        assert!(mentions_changed("os_family('debian') && changed"));
        assert!(!mentions_changed("traits.unchanged"));
        assert!(!mentions_changed("traits.changed_at > 1"));
    }
}
