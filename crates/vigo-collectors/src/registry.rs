//! The one list of collectors. Adding one = one file in `collectors/` + one line here.

use serde_json::{Map, Value};

use crate::collectors::{identity, kernel, os, users};
use crate::{CollectError, Collector, Host};

/// Every collector, alphabetical.
pub fn all() -> Vec<Box<dyn Collector>> {
    vec![
        // Keep this list alphabetical: one line per file in `collectors/`.
        Box::new(identity::Identity),
        Box::new(kernel::Kernel),
        Box::new(os::Os),
        Box::new(users::Users),
    ]
}

/// The names of every collector, alphabetical.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|c| c.name()).collect()
}

/// Runs every collector (or only those in `names`) against `host` and files each
/// result under the collector's name.
///
/// One failure never costs the others: a collector that fails is left out of the
/// tree and its error is returned alongside, as is every unknown name. The tree
/// keeps the registry's order whatever the order of `names`.
pub fn collect(host: &Host, names: &[&str]) -> (Value, Vec<(String, CollectError)>) {
    let collectors = all();
    let mut errors = Vec::new();
    for name in names {
        if !collectors.iter().any(|c| c.name() == *name) && !errors.iter().any(|(n, _)| n == name) {
            let known: Vec<&str> = collectors.iter().map(|c| c.name()).collect();
            let error = CollectError::UnknownCollector { name: name.to_string(), known: known.join(", ") };
            errors.push((name.to_string(), error));
        }
    }
    let mut traits = Map::new();
    for collector in collectors.iter().filter(|c| names.is_empty() || names.contains(&c.name())) {
        match collector.collect(host) {
            Ok(value) => {
                traits.insert(collector.name().to_string(), value);
            }
            Err(error) => errors.push((collector.name().to_string(), error)),
        }
    }
    (Value::Object(traits), errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;

    #[test]
    fn names_are_unique_and_alphabetical() {
        let names = names();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "registry must be alphabetical without duplicates");
    }

    #[test]
    fn every_collector_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/collectors");
        let names = names();
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).expect("collectors dir") {
            let file = entry.expect("dir entry").file_name().to_string_lossy().to_string();
            let Some(stem) = file.strip_suffix(".rs") else {
                continue;
            };
            if stem == "mod" {
                continue;
            }
            files += 1;
            assert!(names.contains(&stem), "collectors/{file} is not in registry::all()");
        }
        assert_eq!(files, names.len(), "every registered collector has its own file");
    }

    #[test]
    fn every_collector_has_a_summary() {
        for collector in all() {
            let summary = collector.summary();
            assert!(!summary.is_empty() && !summary.ends_with('.'), "summary of {}: {summary:?}", collector.name());
        }
    }

    /// Enough of a host for every collector to succeed.
    fn full_host() -> Fixture {
        Fixture::new()
            .file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n")
            .file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
            .file("proc/sys/kernel/hostname", "web01\n")
            .file("proc/sys/kernel/ostype", "Linux\n")
            .file("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
            .file("proc/sys/kernel/version", "#1 SMP\n")
    }

    #[test]
    fn all_collectors_file_results_under_their_names() {
        let fx = full_host();
        let (traits, errors) = collect(&fx.host(), &[]);
        assert!(errors.is_empty(), "{errors:?}");
        let keys: Vec<&str> = traits.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, names());
        assert_eq!(traits["os"]["family"], "debian");
        assert_eq!(traits["identity"]["hostname"], "web01");
    }

    #[test]
    fn a_failing_collector_is_omitted_and_the_rest_still_run() {
        let fx = full_host();
        std::fs::remove_file(fx.host().path("etc/os-release")).expect("remove os-release");
        let (traits, errors) = collect(&fx.host(), &[]);
        assert!(traits.get("os").is_none(), "{traits}");
        assert_eq!(traits["kernel"]["name"], "Linux");
        assert_eq!(traits["users"]["accounts"][0]["name"], "root");
        let failed: Vec<&str> = errors.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(failed, ["os"]);
        assert!(errors[0].1.to_string().contains("etc/os-release"), "{}", errors[0].1);
    }

    #[test]
    fn named_collectors_run_alone_and_unknown_names_list_the_known_ones() {
        let fx = full_host();
        let (traits, errors) = collect(&fx.host(), &["os", "bogus", "kernel", "bogus"]);
        let keys: Vec<&str> = traits.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, ["kernel", "os"]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "bogus");
        assert_eq!(errors[0].1.to_string(), "unknown trait collector `bogus` (known: identity, kernel, os, users)");
    }

    #[test]
    fn the_real_host_has_an_os_and_a_hostname() {
        let (traits, errors) = collect(&Host::local(), &["identity", "os"]);
        assert!(errors.is_empty(), "{errors:?}");
        let os_name = traits["os"]["name"].as_str().expect("os.name is a string");
        assert!(!os_name.is_empty());
        let hostname = traits["identity"]["hostname"].as_str().expect("identity.hostname is a string");
        assert!(!hostname.is_empty());
    }

    #[test]
    fn every_collector_works_on_the_real_host() {
        let (traits, errors) = collect(&Host::local(), &[]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(traits.as_object().expect("object").len(), names().len());
        assert!(traits["users"]["accounts"].as_array().is_some_and(|a| !a.is_empty()), "root at least");
    }
}
