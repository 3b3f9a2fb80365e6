//! Helpers shared by the end-to-end test files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// A workspace binary next to this test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built (run the workspace tests)", path.display());
    path
}

/// A module that manages one file in the host's private `/home`.
pub const MODULE: &str = "name: web
resources:
  - name: motd
    type: file
    target_path: /home/motd
    content: \"managed by vigo\\n\"
    mode: \"0644\"
";

pub const MOTD: &str = "/home/motd";

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A configuration directory: the `web` module, assigned to `web-*`, 15 s interval.
pub fn config_dir() -> tempfile::TempDir {
    let config = tempfile::tempdir().expect("config dir");
    std::fs::create_dir_all(config.path().join("modules")).expect("modules");
    std::fs::write(config.path().join("modules/web.yaml"), MODULE).expect("module");
    std::fs::write(config.path().join("assignments.yaml"), "assignments:\n  - hosts: \"web-*\"\n    modules: [web]\n")
        .expect("assignments");
    std::fs::write(config.path().join("server.yaml"), "interval_secs: 15\n").expect("server.yaml");
    config
}
