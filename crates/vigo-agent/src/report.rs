//! Run reports: what happened to each resource, as data, and the [`Scrubber`] that
//! keeps secret values out of them.

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use vigo_executors::{Change, Mode};
use vigo_model::secret::REDACTED;

/// What happened to one resource in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In sync, nothing to do.
    Unchanged,
    /// Drift found and repaired (in no-op mode: drift found that would be repaired).
    Changed,
    /// Could not check, apply or verify.
    Failed,
    /// Not run: its condition is false, or something it depends on failed.
    Skipped,
}

/// One resource's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    pub module: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub status: Status,
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why a skipped resource did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Output tail of a command the resource ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// What the executor left alone on purpose and the operator should know (e.g. a
    /// hard-linked file a recursive `directory` did not change); any status.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub duration_ms: u64,
}

impl ResourceReport {
    pub fn id(&self) -> String {
        format!("{}::{}", self.module, self.name)
    }
}

/// Counts over a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub total: usize,
    pub unchanged: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub duration_ms: u64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// Why the run as a whole failed (e.g. the policy does not validate on this envoy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resources: Vec<ResourceReport>,
    pub summary: Summary,
}

impl Report {
    pub fn new(mode: Mode, resources: Vec<ResourceReport>, duration_ms: u64) -> Self {
        let count = |s: Status| resources.iter().filter(|r| r.status == s).count();
        let summary = Summary {
            total: resources.len(),
            unchanged: count(Status::Unchanged),
            changed: count(Status::Changed),
            failed: count(Status::Failed),
            skipped: count(Status::Skipped),
            duration_ms,
        };
        Self { mode, error: None, resources, summary }
    }

    /// A run that could not start: no resource ran.
    pub fn failed(mode: Mode, error: String) -> Self {
        Self { error: Some(error), ..Self::new(mode, Vec::new(), 0) }
    }

    /// Puppet's `--detailed-exitcodes`: 0 nothing changed, 2 changes, 4 failures, 6 both.
    pub fn detailed_exit_code(&self) -> i32 {
        let changes = if self.summary.changed > 0 { 2 } else { 0 };
        let failures = if self.summary.failed > 0 || self.error.is_some() { 4 } else { 0 };
        changes | failures
    }
}

impl ResourceReport {
    /// Hides everything a resource that used secrets could reveal: change values,
    /// the diff and command output (its error is left to the [`Scrubber`]).
    pub fn redact(&mut self) {
        for c in &mut self.changes {
            for v in [&mut c.from, &mut c.to].into_iter().flatten() {
                *v = REDACTED.to_string();
            }
        }
        for text in [&mut self.diff, &mut self.output].into_iter().flatten().chain(&mut self.warnings) {
            *text = REDACTED.to_string();
        }
    }
}

impl Report {
    /// Replaces every secret value (and its base64 forms) in the report's text.
    pub fn scrub(&mut self, scrubber: &Scrubber) {
        if scrubber.is_empty() {
            return;
        }
        let clean = |t: &mut String| *t = scrubber.scrub(t);
        if let Some(e) = &mut self.error {
            clean(e);
        }
        for r in &mut self.resources {
            for c in &mut r.changes {
                for v in [&mut c.from, &mut c.to].into_iter().flatten() {
                    clean(v);
                }
            }
            for t in [&mut r.diff, &mut r.error, &mut r.reason, &mut r.output].into_iter().flatten() {
                clean(t);
            }
            r.warnings.iter_mut().for_each(clean);
        }
    }
}

/// Belt and braces for everything the agent reports or prints: every secret value of a
/// run, as text and as base64 (standard and URL-safe, with and without padding),
/// becomes `[redacted]`.
///
/// A multi-line value is also hidden line by line, since a diff shows it that way
/// (`+line`, `-line`, ` line`, never the whole value at once): each of its lines of
/// [`MIN_LINE_NEEDLE`] bytes or more is replaced wherever it occurs, and a text line
/// that is nothing but one of its shorter lines (after a diff marker) is replaced whole.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Every secret value, its base64 forms and the longer lines of multi-line values;
    /// `None` when there are none.
    matcher: Option<aho_corasick::AhoCorasick>,
    /// The short lines of multi-line values, matched only as a whole text line.
    short_lines: std::collections::BTreeSet<String>,
}

/// Shortest line of a multi-line secret that is replaced wherever it occurs (a shorter
/// one, like `}`, would take common text with it; it is matched as a whole line instead).
pub const MIN_LINE_NEEDLE: usize = 6;

/// Shows how many patterns, never the patterns (they are secret values).
impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let patterns = self.matcher.as_ref().map_or(0, aho_corasick::AhoCorasick::patterns_len);
        f.debug_struct("Scrubber").field("patterns", &patterns).field("short_lines", &self.short_lines.len()).finish()
    }
}

impl Scrubber {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let mut needles = Vec::new();
        let mut short_lines = std::collections::BTreeSet::new();
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            needles.push(v.to_string());
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                needles.push(engine.encode(v));
            }
            if v.contains(['\n', '\r']) {
                for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    if line.len() >= MIN_LINE_NEEDLE {
                        needles.push(line.to_string());
                    } else {
                        short_lines.insert(line.to_string());
                    }
                }
            }
        }
        needles.sort();
        needles.dedup();
        if needles.is_empty() {
            return Self::default();
        }
        // Leftmost-longest: a value wins over a shorter one inside it, and a
        // replacement is never matched again.
        let matcher = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&needles)
            .expect("plain string patterns of bounded size always build");
        Self { matcher: Some(matcher), short_lines }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every occurrence replaced by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        let Some(m) = &self.matcher else { return text.to_string() };
        let mut out = String::with_capacity(text.len());
        m.replace_all_with(text, &mut out, |_, _, dst| {
            dst.push_str(REDACTED);
            true
        });
        if self.short_lines.is_empty() {
            return out;
        }
        out.split_inclusive('\n').map(|line| self.scrub_short_line(line)).collect()
    }

    /// `line` (with its line ending) hidden when it is one of the short secret lines,
    /// alone or after a diff marker (`+`, `-`, space).
    fn scrub_short_line<'l>(&self, line: &'l str) -> std::borrow::Cow<'l, str> {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let (marker, rest) = match body.chars().next() {
            Some(c @ ('+' | '-' | ' ')) => (&body[..c.len_utf8()], &body[c.len_utf8()..]),
            _ => ("", body),
        };
        if !marker.is_empty() && self.short_lines.contains(rest.trim()) {
            std::borrow::Cow::Owned(format!("{marker}{REDACTED}{ending}"))
        } else if self.short_lines.contains(body.trim()) {
            std::borrow::Cow::Owned(format!("{REDACTED}{ending}"))
        } else {
            std::borrow::Cow::Borrowed(line)
        }
    }

    /// Scrubs every string in a JSON value (object keys included).
    pub fn scrub_json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.scrub(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let taken = std::mem::take(map);
                for (k, mut v) in taken {
                    self.scrub_json(&mut v);
                    map.insert(self.scrub(&k), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

    #[test]
    fn scrubs_values_and_their_base64_forms() {
        // Bytes that make standard and URL-safe base64 differ, and need padding.
        let secret = "s3??>";
        let s = Scrubber::new([secret, ""]);
        let std_b64 = STANDARD.encode(secret);
        let url_b64 = URL_SAFE.encode(secret);
        assert!(std_b64.ends_with('=') && std_b64.contains('/'), "{std_b64}");
        assert_ne!(std_b64, url_b64, "the case covers both alphabets");
        let shown = format!("{s:?}");
        assert!(!shown.contains(secret) && !shown.contains(&std_b64), "Debug never shows a pattern: {shown}");
        let cases = [
            (format!("password is {secret}."), "password is [redacted]."),
            (format!("b64 {std_b64} end"), "b64 [redacted] end"),
            (format!("b64 {} end", std_b64.trim_end_matches('=')), "b64 [redacted] end"),
            (format!("url {url_b64} end"), "url [redacted] end"),
            (format!("url {} end", URL_SAFE_NO_PAD.encode(secret)), "url [redacted] end"),
            (format!("{secret}{secret}"), "[redacted][redacted]"),
            ("nothing here".to_string(), "nothing here"),
        ];
        for (input, want) in cases {
            assert_eq!(s.scrub(&input), want, "{input}");
        }
        assert!(Scrubber::new([""]).is_empty());
    }

    #[test]
    fn a_multi_line_secret_is_hidden_on_every_line_of_a_diff() {
        // Three lines: two long ones and a short one.
        let secret = "Zm9vYmFyLWtleS1vbmU\nc2Vjb25kLWxpbmUtdHdv\nq7\n";
        let s = Scrubber::new([secret]);
        // How diffs show the value: line by line (removed, added, context), never whole.
        let diff = "--- a\n+++ b\n@@ -1,3 +1,4 @@\n-Zm9vYmFyLWtleS1vbmU\n+  Zm9vYmFyLWtleS1vbmU \n c2Vjb25kLWxpbmUtdHdv\n q7\n+q7\r\nq7\n+other = q7 x\n";
        let scrubbed = s.scrub(diff);
        assert_eq!(
            scrubbed,
            "--- a\n+++ b\n@@ -1,3 +1,4 @@\n-[redacted]\n+  [redacted] \n [redacted]\n [redacted]\n+[redacted]\r\n[redacted]\n+other = q7 x\n",
            "every line hidden; the diff's shape and other text kept"
        );
        for line in secret.lines() {
            let whole_lines = scrubbed.lines().filter(|l| l.trim_start_matches(['+', '-', ' ']).trim() == line).count();
            assert_eq!(whole_lines, 0, "{line:?} still shown in {scrubbed}");
            if line.len() >= MIN_LINE_NEEDLE {
                assert!(!scrubbed.contains(line), "{line:?} still shown in {scrubbed}");
            }
        }
        assert!(!format!("{s:?}").contains("q7"), "Debug never shows a line");
        assert_eq!(Scrubber::new(["q7"]).scrub("q7\n"), "[redacted]\n", "a one-line value is matched anywhere");
    }

    #[test]
    fn a_replacement_is_never_matched_again() {
        let s = Scrubber::new(["act", "red"]);
        assert_eq!(s.scrub("redact"), "[redacted][redacted]");
        assert_eq!(s.scrub("[redacted]"), "[[redacted][redacted]ed]", "one pass over the input only");
    }

    #[test]
    fn scrubs_reports_and_json() {
        let s = Scrubber::new(["hunter2"]);
        let mut report = Report::new(
            Mode::Enforce,
            vec![ResourceReport {
                module: "m".into(),
                name: "r".into(),
                type_name: "exec".into(),
                status: Status::Failed,
                changes: vec![Change::set("line", "old", "pw=hunter2")],
                diff: Some("+pw=hunter2".into()),
                error: Some("cannot write hunter2".into()),
                reason: None,
                output: Some(STANDARD.encode("hunter2")),
                warnings: vec!["/srv/hunter2: has 2 hard links".into()],
                duration_ms: 1,
            }],
            1,
        );
        report.error = Some("run: hunter2".into());
        report.scrub(&s);
        let json = serde_json::to_string(&report).expect("json");
        assert!(!json.contains("hunter2") && !json.contains(&STANDARD.encode("hunter2")), "{json}");
        assert_eq!(json.matches("[redacted]").count(), 6, "{json}");
        let mut v = serde_json::json!({"a": ["x hunter2"], "hunter2": {"b": 1}});
        s.scrub_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["x [redacted]"], "[redacted]": {"b": 1}}));
    }

    #[test]
    fn redact_hides_values_diffs_and_output() {
        let mut r = ResourceReport {
            module: "m".into(),
            name: "r".into(),
            type_name: "file".into(),
            status: Status::Changed,
            changes: vec![Change::set("mode", "0644", "0600"), Change::new("ensure", None, Some("present".into()))],
            diff: Some("+x".into()),
            error: None,
            reason: None,
            output: Some("out".into()),
            warnings: vec!["w".into()],
            duration_ms: 0,
        };
        r.redact();
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["changes"][0]["from"], "[redacted]");
        assert_eq!(json["changes"][1]["to"], "[redacted]");
        assert!(json["changes"][1].get("from").is_none(), "absent values stay absent");
        assert_eq!(json["diff"], "[redacted]");
        assert_eq!(json["output"], "[redacted]");
        assert_eq!(json["warnings"][0], "[redacted]");
        assert_eq!(json["changes"][0]["attribute"], "mode", "attributes stay visible");
    }
}
