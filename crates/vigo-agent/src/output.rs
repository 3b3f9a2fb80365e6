//! Human output: short, one line per resource that changed, failed or was
//! skipped because of a failure, one per warning of any resource, and a summary;
//! colour only on a terminal.

use std::fmt::Write as _;

use crate::report::{Report, Status};

/// ANSI styling that is switched off when output is not a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
}

/// Renders a run report for people. `diffs` adds content diffs under changed resources.
pub fn render(report: &Report, style: Style, diffs: bool) -> String {
    let noop = report.mode == vigo_executors::Mode::NoOp;
    let mut out = String::new();
    for r in &report.resources {
        let (label, code) = match r.status {
            Status::Changed if noop => ("would change", "33"),
            Status::Changed => ("changed", "32"),
            Status::Failed => ("failed", "31"),
            Status::Skipped if r.reason.as_deref().is_some_and(|w| w.starts_with("dependency")) => ("skipped", "35"),
            Status::Skipped | Status::Unchanged => {
                warnings(&mut out, r, style);
                continue;
            }
        };
        let detail = match (&r.error, &r.reason) {
            (Some(e), _) => e.clone(),
            (None, Some(why)) => why.clone(),
            (None, None) => r
                .changes
                .iter()
                .map(|c| match (&c.from, &c.to) {
                    (Some(f), Some(t)) => format!("{} {f} -> {t}", c.attribute),
                    (None, Some(t)) => format!("{} -> {t}", c.attribute),
                    _ => c.attribute.clone(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        let _ = writeln!(out, "{} {} ({}): {detail}", style.paint(code, label), r.id(), r.type_name);
        if diffs && let Some(d) = &r.diff {
            for line in d.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        warnings(&mut out, r, style);
    }
    let s = &report.summary;
    let verb = if noop { "would change" } else { "changed" };
    let _ = write!(
        out,
        "{} resources: {} {verb}, {} failed, {} skipped, {} unchanged in {} ms",
        s.total, s.changed, s.failed, s.skipped, s.unchanged, s.duration_ms
    );
    out
}

/// One line per warning of `r`.
fn warnings(out: &mut String, r: &crate::report::ResourceReport, style: Style) {
    for w in &r.warnings {
        let _ = writeln!(out, "{} {} ({}): {w}", style.paint("33", "warning"), r.id(), r.type_name);
    }
}
