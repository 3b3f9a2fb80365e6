//! Helpers shared by the agent's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::json;
use vigo_agent::report::{Report, ResourceReport};
use vigo_agent::runner::Runner;
use vigo_executors::{Mode, Registry};

/// A configuration directory in a temp dir; `{root}` in module text becomes a scratch dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("config/modules")).expect("modules dir");
        std::fs::create_dir_all(dir.path().join("work")).expect("work dir");
        Self { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn module(&self, file: &str, text: &str) -> &Self {
        let text = text.replace("{root}", &self.work().display().to_string());
        std::fs::write(self.config().join("modules").join(file), text).expect("write module");
        self
    }

    pub fn template(&self, name: &str, text: &str) -> &Self {
        let path = self.config().join("templates").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("templates dir");
        std::fs::write(path, text).expect("write template");
        self
    }

    pub fn run(&self, mode: Mode) -> Report {
        let registry = Registry::builtin();
        let (config, plan) =
            vigo_agent::load::load(&self.config(), &registry).unwrap_or_else(|d| panic!("invalid config:\n{d}"));
        let traits = traits();
        Runner { registry: &registry, traits: &traits, mode }.run(&config, &plan)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.work().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
}

/// Fixed traits, so tests do not depend on the machine running them.
pub fn traits() -> serde_json::Value {
    json!({
        "os": {"family": "debian", "name": "debian", "version": "12", "codename": "bookworm"},
        "identity": {"hostname": "web-1", "fqdn": "web-1.example.net"},
        "kernel": {"name": "Linux", "release": "6.1.0"}
    })
}

pub fn find<'a>(report: &'a Report, name: &str) -> &'a ResourceReport {
    report.resources.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no resource `{name}` in report"))
}

pub fn vigo() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("vigo").expect("vigo binary")
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}
