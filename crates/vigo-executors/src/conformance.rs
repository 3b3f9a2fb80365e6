//! The conformance harness every executor's tests run through.
//!
//! One case = an initial host state and a spec. The harness checks in no-op mode
//! (nothing may change), checks again in enforce mode (the same changes must be
//! predicted), applies, verifies, and checks a third time (a second run must find
//! nothing to do).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::executor::{Check, Ctx, Drift, Executor, Mode, Warnings};

/// Templates, traits and vars for a test run.
#[derive(Default)]
pub struct World {
    pub traits: Value,
    pub vars: Value,
    pub templates: BTreeMap<String, String>,
    /// The warnings of every run through [`World::ctx`] so far (`take` them to look).
    pub warnings: Warnings,
}

impl World {
    pub fn ctx(&self, mode: Mode) -> Ctx<'_> {
        Ctx { mode, traits: &self.traits, vars: &self.vars, templates: &self.templates, warnings: &self.warnings }
    }
}

/// Parses a spec from YAML (type-specific fields only).
pub fn spec<E: Executor>(yaml: &str) -> E::Spec {
    let value: Value = serde_saphyr::from_str_with_options(yaml, vigo_model::raw::options())
        .unwrap_or_else(|e| panic!("{}: bad test YAML: {e}", E::NAME));
    crate::executor::parse_spec(&value).unwrap_or_else(|e| panic!("{}: spec rejected: {e:?}", E::NAME))
}

/// Runs one conformance case and returns the drift that was predicted and repaired
/// (`None` when the host was already in sync). `snapshot` describes the host state
/// the executor may touch; it must not change in no-op mode.
/// The warnings of the checks are left in `world.warnings`.
pub fn converge<E: Executor>(world: &World, spec: &E::Spec, snapshot: impl Fn() -> String) -> Option<Drift> {
    let before = snapshot();
    let earlier = world.warnings.take();
    let predicted = E::check(spec, &world.ctx(Mode::NoOp)).unwrap_or_else(|e| panic!("{}: noop check: {e}", E::NAME));
    assert_eq!(snapshot(), before, "{}: a no-op check changed the host", E::NAME);
    let warned = world.warnings.take();
    let enforce = world.ctx(Mode::Enforce);
    let check = E::check(spec, &enforce).unwrap_or_else(|e| panic!("{}: check: {e}", E::NAME));
    assert_eq!(check, predicted, "{}: noop and enforce predicted different changes", E::NAME);
    assert_eq!(world.warnings.take(), warned, "{}: noop and enforce gave different warnings", E::NAME);
    let restore = || {
        for w in earlier.iter().chain(&warned) {
            world.warnings.push(w.clone());
        }
    };
    let Check::Drift(drift) = check else {
        restore();
        return None;
    };
    let applied = E::apply(spec, &drift, &enforce).unwrap_or_else(|e| panic!("{}: apply: {e}", E::NAME));
    let surprise: Vec<String> = world.warnings.take().into_iter().filter(|w| !warned.contains(w)).collect();
    assert!(surprise.is_empty(), "{}: apply warned of what no check did: {surprise:?}", E::NAME);
    restore();
    let verified = E::verify(spec, &applied, &enforce).unwrap_or_else(|e| panic!("{}: verify: {e}", E::NAME));
    assert_eq!(verified, Check::InSync, "{}: still drifting after apply", E::NAME);
    let again = E::check(spec, &enforce).unwrap_or_else(|e| panic!("{}: second check: {e}", E::NAME));
    assert_eq!(again, Check::InSync, "{}: a second run would change something", E::NAME);
    Some(drift)
}

/// The attributes a drift changes, for compact assertions (`["content", "mode"]`).
pub fn attributes(drift: &Option<Drift>) -> Vec<String> {
    drift.iter().flat_map(|d| d.changes.iter().map(|c| c.attribute.clone())).collect()
}
