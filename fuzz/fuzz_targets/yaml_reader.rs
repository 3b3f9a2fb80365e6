//! The configuration reader: module YAML and templates, validated against the
//! built-in resource types exactly as `vigo apply` and a bundle's run do.
//!
//! The input is up to three NUL-separated texts: a module, a second module and
//! a template (`templates/t.tmpl`). Whatever they hold, compiling gives a plan
//! or diagnostics, never a panic; a plan orders every resource exactly once, and
//! each resource's fields reach its type's parser.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vigo_executors::Registry;
use vigo_model::source::Sources;
use vigo_model::validate::compile;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\0');
    let mut modules = vec![("modules/a.yaml", parts.next().unwrap_or_default())];
    if let Some(second) = parts.next() {
        modules.push(("modules/b.yaml", second));
    }
    let templates: Vec<(&str, &str)> = parts.next().map(|t| ("templates/t.tmpl", t)).into_iter().collect();
    let sources = Sources::from_strings(&modules, &templates);
    match compile(&sources, registry()) {
        Ok((config, plan)) => {
            let n = config.resources().count();
            let mut seen = vec![false; n];
            for &i in &plan.order {
                assert!(i < n && !seen[i], "plan order {:?} is not a permutation of {n} resources", plan.order);
                seen[i] = true;
            }
            assert_eq!(plan.order.len(), n, "plan leaves resources out");
            for r in config.resources() {
                let kind = registry().get(&r.type_name).expect("a validated resource has a known type");
                let _ = kind.prepare(&Value::Object(r.fields.clone()));
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "refused with no diagnostic");
            let _ = diags.to_string();
        }
    }
});
