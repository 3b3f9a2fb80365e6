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

/// The server's state directory inside its host.
pub const STATE_DIR: &str = "/var/lib/vigo/server";

/// A server host with an initialised state dir and a config dir; agents join it.
pub struct World {
    pub fleet: vigo_testkit::Fleet,
    pub server: vigo_testkit::Host,
    pub srv: Option<vigo_testkit::Process>,
    pub config: tempfile::TempDir,
    pub fingerprint: String,
}

impl World {
    /// Initialises and starts a server with [`config_dir`].
    pub fn new(label: &str) -> Self {
        Self::with_config(label, config_dir())
    }

    /// Initialises and starts a server with the given configuration directory.
    pub fn with_config(label: &str, config: tempfile::TempDir) -> Self {
        let fleet = vigo_testkit::Fleet::new(label).expect("fleet");
        let server = fleet.add_host("server").expect("server host");
        let ip = server.ip().to_string();
        let out =
            server.run_ok(bin("vigosrv"), ["init", "--state-dir", STATE_DIR, "--san", &ip]).expect("vigosrv init");
        let fingerprint = out
            .lines()
            .find_map(|l| l.strip_prefix("CA fingerprint (SHA-256): "))
            .expect("fingerprint printed")
            .to_string();
        let mut w = World { fleet, server, srv: None, config, fingerprint };
        w.start();
        w
    }

    pub fn start(&mut self) {
        let config = self.config.path().display().to_string();
        let p = self
            .server
            .spawn(bin("vigosrv"), ["--state-dir", STATE_DIR, "--config-dir", &config])
            .expect("start vigosrv");
        self.srv = Some(p);
        self.server.wait_tcp(8443, std::time::Duration::from_secs(30)).expect("API up");
        self.server.wait_tcp(1530, std::time::Duration::from_secs(30)).expect("gRPC up");
    }

    pub fn stop(&mut self) {
        if let Some(p) = self.srv.take() {
            p.stop().expect("stop vigosrv");
        }
    }

    pub fn server_log(&self) -> String {
        self.srv.as_ref().map(vigo_testkit::Process::log).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        let state = self.server.path(STATE_DIR);
        std::process::Command::new(bin("vigocli"))
            .arg("--server")
            .arg(format!("https://{}:8443", self.server.ip()))
            .arg("--ca")
            .arg(state.join("ca/ca.pem"))
            .arg("--token-file")
            .arg(state.join("admin.token"))
            .args(args)
            .output()
            .expect("run vigocli")
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "vigocli {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).expect("utf8")
    }

    pub fn token(&self, hosts: &str, ttl: Option<&str>) -> String {
        let mut args = vec!["token", "create", "--hosts", hosts, "--json"];
        if let Some(t) = ttl {
            args.extend(["--ttl", t]);
        }
        let v: serde_json::Value = serde_json::from_str(&self.cli_ok(&args)).expect("token json");
        v["token"].as_str().expect("token").to_string()
    }

    pub fn agent(&self, name: &str) -> vigo_testkit::Host {
        self.fleet.add_host(name).expect("agent host")
    }

    pub fn enroll(&self, host: &vigo_testkit::Host, token: &str) -> Output {
        let ip = self.server.ip().to_string();
        host.run(bin("vigo"), ["enroll", "--server", &ip, "--token", token, "--ca-fingerprint", &self.fingerprint])
            .expect("run vigo enroll")
    }

    /// A new host enrolled with a token bound to its own name.
    pub fn enrolled_agent(&self, name: &str) -> vigo_testkit::Host {
        let host = self.agent(name);
        let token = self.token(name, None);
        let out = self.enroll(&host, &token);
        assert!(out.status.success(), "enroll {name}: {}", stderr(&out));
        host
    }

    pub fn publish(&self) -> Output {
        self.cli(&["publish", "-m", "test"])
    }
}
