//! The convergence runner: walks the plan, and for each resource evaluates its
//! condition, checks, applies on drift and verifies.
//!
//! A resource whose dependency failed (or was skipped because of a failure) is
//! skipped with the reason. A `when: "changed"` handler sees `changed` true when
//! any resource notifying it changed earlier in this run; the plan puts handlers
//! after all their notifiers, so a handler runs at most once per run. In no-op
//! mode "changed" means "would change", so a dry run predicts handlers too.
//!
//! A resource that uses `secret:` references gets their values filled into a copy
//! of its fields just before its executor parses them, is marked sensitive, has its
//! guardrails checked again with the values in place, and has its changes, diff
//! and output redacted in the report.

use std::time::Instant;

use serde_json::{Map, Value};
use vigo_executors::{Check, Ctx, Mode, Registry, Warnings};
use vigo_model::catalog::{Catalog as _, Common};
use vigo_model::when::{Condition, WhenEnv};
use vigo_model::{Config, Plan, Resource, guard, secretref};

use crate::load::RunSecrets;
use crate::report::{Report, ResourceReport, Status};

/// Everything a run needs besides the configuration.
pub struct Runner<'a> {
    pub registry: &'a Registry,
    pub traits: &'a Value,
    pub mode: Mode,
}

impl Runner<'_> {
    /// Converges a local `config` in `plan` order and reports every resource. A resource
    /// that uses a secret fails: only the server resolves them.
    pub fn run(&self, config: &Config, plan: &Plan) -> Report {
        self.run_with_secrets(config, plan, &RunSecrets::local())
    }

    /// Converges `config` with the secret values of its bundle. The report is not yet
    /// scrubbed: pass it through `secrets.scrubber()` before it is kept or shown.
    pub fn run_with_secrets(&self, config: &Config, plan: &Plan, secrets: &RunSecrets) -> Report {
        let started = Instant::now();
        // Each resource with its module's `vars:`.
        let resources: Vec<(&Resource, &Value)> =
            config.modules.iter().flat_map(|m| m.resources.iter().map(move |r| (r, &m.vars))).collect();
        let mut reports: Vec<Option<ResourceReport>> = vec![None; resources.len()];
        for &i in &plan.order {
            let mut report = self.one(config, plan, &resources, i, &reports, secrets);
            if !secretref::refs(&resources[i].0.fields).is_empty() {
                report.redact();
            }
            reports[i] = Some(report);
        }
        let ordered: Vec<ResourceReport> = plan.order.iter().filter_map(|&i| reports[i].take()).collect();
        Report::new(self.mode, ordered, millis(started))
    }

    fn one(
        &self,
        config: &Config,
        plan: &Plan,
        resources: &[(&Resource, &Value)],
        i: usize,
        done: &[Option<ResourceReport>],
        secrets: &RunSecrets,
    ) -> ResourceReport {
        let started = Instant::now();
        let (res, vars) = resources[i];
        let mut report = ResourceReport {
            module: res.module.clone(),
            name: res.name.clone(),
            type_name: res.type_name.clone(),
            status: Status::Unchanged,
            changes: Vec::new(),
            diff: None,
            error: None,
            reason: None,
            output: None,
            warnings: Vec::new(),
            duration_ms: 0,
        };
        let finish = |mut r: ResourceReport| {
            r.duration_ms = millis(started);
            r
        };
        if let Some(dep) = plan.depends[i].iter().find(|&&d| blocked(done[d].as_ref())) {
            report.status = Status::Skipped;
            report.reason = Some(format!("dependency `{}` failed", resources[*dep].0.id()));
            return finish(report);
        }
        if let Some(src) = &res.when {
            let changed =
                plan.notified_by[i].iter().any(|&n| done[n].as_ref().is_some_and(|r| r.status == Status::Changed));
            match Condition::compile(src).and_then(|c| c.eval(WhenEnv { traits: self.traits, changed })) {
                Ok(true) => {}
                Ok(false) => {
                    report.status = Status::Skipped;
                    report.reason = Some(if src.trim() == "changed" {
                        "not notified: nothing that notifies it changed".to_string()
                    } else {
                        format!("condition `{src}` is false")
                    });
                    return finish(report);
                }
                Err(e) => return finish(fail(report, format!("when: {e}"))),
            }
        }
        let Some(kind) = self.registry.get(&res.type_name) else {
            return finish(fail(report, format!("unknown resource type `{}`", res.type_name)));
        };
        let fields = match self.with_secrets(res, secrets) {
            Ok(f) => f,
            Err(e) => return finish(fail(report, e)),
        };
        let prepared = match kind.prepare(&Value::Object(fields)) {
            Ok(p) => p,
            Err(e) => return finish(fail(report, e.message)),
        };
        let warnings = Warnings::default();
        let ctx = Ctx { mode: self.mode, traits: self.traits, vars, templates: &config.templates, warnings: &warnings };
        let mut report = converge(report, prepared.as_ref(), &ctx, self.mode);
        report.warnings = warnings.take();
        finish(report)
    }
}

/// Check, and on drift apply and verify (only check in no-op mode).
fn converge(
    mut report: ResourceReport,
    prepared: &dyn vigo_executors::Prepared,
    ctx: &Ctx<'_>,
    mode: Mode,
) -> ResourceReport {
    let drift = match prepared.check(ctx) {
        Ok(Check::InSync) => return report,
        Ok(Check::Drift(d)) => d,
        Err(e) => return fail(report, format!("check: {e}")),
    };
    report.changes = drift.changes.clone();
    report.diff = drift.diff.clone();
    report.status = Status::Changed;
    if mode == Mode::NoOp {
        return report;
    }
    let applied = match prepared.apply(&drift, ctx) {
        Ok(a) => a,
        Err(e) => return fail(report, e.to_string()),
    };
    report.output = applied.output.clone();
    match prepared.verify(&applied, ctx) {
        Ok(Check::InSync) => report,
        Ok(Check::Drift(left)) => {
            let what: Vec<&str> = left.changes.iter().map(|c| c.attribute.as_str()).collect();
            fail(report, format!("still drifting after apply: {}", what.join(", ")))
        }
        Err(e) => fail(report, format!("verify: {e}")),
    }
}

impl Runner<'_> {
    /// The resource's fields with its secrets filled in (unchanged without secrets).
    fn with_secrets(&self, res: &Resource, secrets: &RunSecrets) -> Result<Map<String, Value>, String> {
        let mut fields = res.fields.clone();
        if secretref::refs(&fields).is_empty() {
            return Ok(fields);
        }
        secretref::substitute(&mut fields, &mut |path| secrets.value(path).map(|s| s.expose().to_string()))?;
        let has_sensitive =
            self.registry.fields(&res.type_name).is_some_and(|f| f.iter().any(|f| f.name == "sensitive"));
        if has_sensitive {
            fields.insert("sensitive".into(), Value::Bool(true));
        }
        // Validation saw only the references; the values must pass the guardrails too.
        // Neither message quotes a field: it would show the value.
        let common = Common { name: &res.name, when: res.when.as_deref() };
        match self.registry.inspect(&res.type_name, &Value::Object(fields.clone()), common) {
            Ok(facts) if facts.targets.iter().any(|t| guard::refuse(t).is_some()) => Err(
                "refused: with its secrets filled in it would manage Vigo itself (this guardrail cannot be switched off)"
                    .into(),
            ),
            Ok(_) => Ok(fields),
            Err(errors) => {
                let named: Vec<String> = errors.iter().filter_map(|e| e.field.clone()).map(|f| format!("`{f}`")).collect();
                Err(if named.is_empty() {
                    "its fields are not valid once its secrets are filled in".to_string()
                } else {
                    format!("{} not valid once its secrets are filled in", named.join(", "))
                })
            }
        }
    }
}

fn fail(mut report: ResourceReport, error: String) -> ResourceReport {
    report.status = Status::Failed;
    report.error = Some(error);
    report
}

/// A dependency blocks its dependents when it failed, or was itself skipped because of a failure.
fn blocked(dep: Option<&ResourceReport>) -> bool {
    dep.is_some_and(|r| {
        r.status == Status::Failed
            || (r.status == Status::Skipped && r.reason.as_deref().is_some_and(|w| w.starts_with("dependency")))
    })
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
