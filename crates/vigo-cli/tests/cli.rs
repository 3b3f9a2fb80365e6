//! `vigocli` black-box: a real vigosrv in this process on loopback ports, the real
//! binary talking to it over TLS with the fleet CA from the state directory.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigo_server::server::Server;
use vigo_server::settings::Settings;
use vigo_server::state_dir::{self, StateDir};

const GOOD_MODULE: &str = "\
name: base
resources:
  - name: Message of the day
    type: file
    target_path: /tmp/vigo-cli-test/motd
    content: \"managed\\n\"
";

/// Line 4 names a type that does not exist.
const BAD_MODULE: &str = "\
name: broken
resources:
  - name: Mystery
    type: no_such_type
    path: /tmp/x
";

/// A running server and the files a client needs to reach it.
struct TestServer {
    runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
    url: String,
    server: Server,
}

impl TestServer {
    fn start() -> Self {
        vigo_pki::install_provider();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().join("state"));
        let out = runtime.block_on(state_dir::init(&state, &[], None)).expect("init state dir");
        let token = out.admin_token.expect("the first init creates the admin token");
        std::fs::write(dir.path().join("admin.token"), format!("{token}\n")).expect("token file");
        std::fs::copy(state.ca_dir().join("ca.pem"), dir.path().join("ca.pem")).expect("CA copy");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        let config = dir.path().join("config");
        std::fs::create_dir_all(config.join("modules")).expect("modules dir");
        std::fs::write(config.join("modules/base.yaml"), GOOD_MODULE).expect("module");

        let mut settings = Settings::default();
        settings.listen.grpc = free_addr();
        settings.listen.api = free_addr();
        let api = settings.listen.api;
        let store = runtime.block_on(vigo_store::Store::open(&state.sqlite_url())).expect("store");
        let (server, writer) = runtime.block_on(Server::open(state, config, settings, store)).expect("open server");
        let serving = runtime.spawn(vigo_server::serve::serve(server.clone(), writer));
        wait_for(api, &serving);
        Self { runtime: Some(runtime), dir, url: format!("https://127.0.0.1:{}", api.port()), server }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `vigocli` with a clean environment: no credentials but those a test gives.
    fn bare(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("vigocli").expect("vigocli binary");
        for var in ["VIGO_SERVER", "VIGO_TOKEN", "VIGO_CA", "XDG_CONFIG_HOME"] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.path("home")).timeout(Duration::from_secs(60));
        cmd
    }

    /// `vigocli` with every credential given as a flag.
    fn cli(&self) -> assert_cmd::Command {
        self.cli_with(&self.url, &self.path("ca.pem"), &self.path("admin.token"))
    }

    fn cli_with(&self, server: &str, ca: &Path, token_file: &Path) -> assert_cmd::Command {
        let mut cmd = self.bare();
        cmd.arg("--server").arg(server).arg("--ca").arg(ca).arg("--token-file").arg(token_file);
        cmd
    }

    /// Runs `vigocli` with flags and `args`, expecting success, and parses its JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli().args(args).assert().success().get_output().stdout.clone();
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out)))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A loopback address nothing listens on right now.
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn wait_for(addr: SocketAddr, serving: &tokio::task::JoinHandle<anyhow::Result<()>>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(!serving.is_finished(), "the server stopped before listening on {addr}");
        assert!(Instant::now() < deadline, "the server did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn token_create_list_revoke() {
    let s = TestServer::start();
    let created = s.json(&["token", "create", "--hosts", "web-*", "--ttl", "1h", "--json"]);
    let id = created["id"].as_str().expect("id").to_string();
    let secret = created["token"].as_str().expect("secret shown once").to_string();
    assert_eq!(created["hosts"], "web-*");
    let ttl = created["expires_at"].as_i64().expect("expires") - vigo_server::now();
    assert!((3590..=3600).contains(&ttl), "--ttl 1h gave {ttl}s");

    // Without --json the secret alone goes to stdout, ready for `$(...)`.
    let out = s.cli().args(["token", "create", "--hosts", "db-*", "--ttl", "never"]).assert().success();
    let plain = stdout(out.get_output());
    assert_eq!(plain.lines().count(), 1, "{plain}");
    assert!(stderr(out.get_output()).contains("expires never"));

    let list = s.json(&["token", "list", "--json"]);
    let tokens = list.as_array().expect("array");
    assert_eq!(tokens.len(), 2);
    let mine = tokens.iter().find(|t| t["id"] == id.as_str()).expect("listed");
    assert_eq!(mine["revoked"], false);
    let text = list.to_string();
    assert!(!text.contains(&secret) && !text.contains(plain.trim()), "a listing never shows a secret");

    let out = s.cli().args(["token", "revoke", &id]).assert().success();
    assert!(stdout(out.get_output()).contains(&format!("revoked token {id}")));
    let list = s.json(&["token", "list", "--json"]);
    let mine = list.as_array().expect("array").iter().find(|t| t["id"] == id.as_str()).cloned().expect("listed");
    assert_eq!(mine["revoked"], true);

    let table = stdout(s.cli().args(["token", "list"]).assert().success().get_output());
    let row = table.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("web-*") && row.contains("revoked"), "{row}");
    assert!(table.lines().next().is_some_and(|h| h.contains("ID") && h.contains("HOSTS")), "{table}");

    let out = s.cli().args(["token", "revoke", "nosuchid"]).assert().code(1);
    assert!(stderr(out.get_output()).contains("no token `nosuchid`"), "{}", stderr(out.get_output()));
    let out = s.cli().args(["token", "create", "--hosts", "x", "--ttl", "5w"]).assert().code(2);
    assert!(stderr(out.get_output()).contains("unknown unit"));
}

#[test]
fn publish_ok_then_invalid() {
    let s = TestServer::start();
    let out = s.cli().args(["publish", "-m", "first"]).assert().success();
    assert!(stdout(out.get_output()).contains("published version 1: 1 module(s)"), "{}", stdout(out.get_output()));

    let versions = s.json(&["versions", "list", "--json"]);
    assert_eq!(
        versions,
        serde_json::json!([{"version": 1, "message": "first", "created_at": versions[0]["created_at"], "active": true}])
    );
    let table = stdout(s.cli().args(["versions", "list"]).assert().success().get_output());
    assert!(table.lines().any(|l| l.contains('1') && l.contains('*') && l.contains("first")), "{table}");

    std::fs::write(s.path("config/modules/broken.yaml"), BAD_MODULE).expect("bad module");
    let out = s.cli().args(["publish", "-m", "broken"]).assert().code(1);
    let err = stderr(out.get_output());
    assert!(err.contains("modules/broken.yaml:4:"), "{err}");
    assert!(err.contains("no_such_type"), "{err}");
    assert!(err.contains("nothing was published"), "{err}");

    // The JSON refusal lists the same problems, and every one is printed with its hint.
    let out = s.cli().args(["publish", "--json"]).assert().code(1);
    let refusal: Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON refusal");
    assert_eq!(refusal["code"], "invalid_config");
    for p in refusal["problems"].as_array().expect("problems") {
        let line = format!(
            "{}:{}:{}: {}",
            p["file"].as_str().expect("file"),
            p["line"],
            p["col"],
            p["message"].as_str().expect("message")
        );
        assert!(err.contains(&line), "missing `{line}` in:\n{err}");
        if let Some(h) = p["hint"].as_str() {
            assert!(err.contains(&format!("  hint: {h}")), "missing hint `{h}` in:\n{err}");
        }
    }
    assert_eq!(s.json(&["versions", "list", "--json"]).as_array().map(Vec::len), Some(1), "nothing published");
}

#[test]
fn status_and_empty_envoys() {
    let s = TestServer::start();
    let status = s.json(&["status", "--json"]);
    assert_eq!((status["envoys"].as_u64(), status["active_version"].is_null()), (Some(0), true), "{status}");
    let text = stdout(s.cli().arg("status").assert().success().get_output());
    assert!(text.contains("envoys:            0") && text.contains("nothing published yet"), "{text}");

    assert_eq!(s.json(&["envoys", "list", "--json"]), serde_json::json!([]));
    let text = stdout(s.cli().args(["envoys", "list"]).assert().success().get_output());
    assert!(text.contains("no envoys enrolled"), "{text}");
    let out = s.cli().args(["envoys", "show", "ghost"]).assert().code(1);
    assert!(stderr(out.get_output()).contains("no envoy `ghost`"), "{}", stderr(out.get_output()));
    let out = s.cli().args(["envoys", "revoke", "ghost"]).assert().code(1);
    assert!(stderr(out.get_output()).contains("not_found"));
}

#[test]
fn clear_errors_for_bad_token_unreachable_server_and_wrong_ca() {
    let s = TestServer::start();
    let (ca, token) = (s.path("ca.pem"), s.path("admin.token"));
    std::fs::write(s.path("wrong.token"), "vga_00000000_wrong\n").expect("write");
    let out = s.cli_with(&s.url, &ca, &s.path("wrong.token")).arg("status").assert().code(1);
    assert!(stderr(out.get_output()).contains("the server refused the admin token"), "{}", stderr(out.get_output()));

    let closed = format!("https://127.0.0.1:{}", free_addr().port());
    let out = s.cli_with(&closed, &ca, &token).arg("status").assert().code(1);
    let err = stderr(out.get_output());
    assert!(err.contains(&format!("cannot reach {closed}")), "{err}");

    let other = vigo_pki::FleetCa::generate("another fleet").expect("CA");
    std::fs::write(s.path("other-ca.pem"), other.cert_pem()).expect("write");
    let out = s.cli_with(&s.url, &s.path("other-ca.pem"), &token).arg("status").assert().code(1);
    let err = stderr(out.get_output());
    assert!(err.contains("TLS") && err.contains("--ca"), "{err}");

    let out = s.bare().arg("status").assert().code(1);
    assert!(stderr(out.get_output()).contains("no server given"), "{}", stderr(out.get_output()));
}

#[test]
fn credentials_come_from_flags_then_env_then_login() {
    let s = TestServer::start();
    let token = std::fs::read_to_string(s.path("admin.token")).expect("token");
    let token = token.trim();
    let ca = s.path("ca.pem");
    std::fs::write(s.path("wrong.token"), "vga_00000000_wrong\n").expect("write");
    let with_env = |cmd: &mut assert_cmd::Command, token: &str| {
        cmd.env("VIGO_SERVER", &s.url).env("VIGO_TOKEN", token).env("VIGO_CA", &ca);
    };

    // Environment alone is enough.
    let mut cmd = s.bare();
    with_env(&mut cmd, token);
    cmd.args(["status", "--json"]).assert().success();
    // A flag beats the environment, both ways.
    let mut cmd = s.bare();
    with_env(&mut cmd, "vga_00000000_wrong");
    cmd.arg("--token-file").arg(s.path("admin.token")).arg("status").assert().success();
    let mut cmd = s.bare();
    with_env(&mut cmd, token);
    cmd.arg("--token-file").arg(s.path("wrong.token")).arg("status").assert().code(1);

    // A refused login saves nothing.
    let saved = s.path("home/.config/vigo/cli.yaml");
    s.bare()
        .args(["login", "--server", &s.url, "--ca"])
        .arg(&ca)
        .arg("--token-file")
        .arg(s.path("wrong.token"))
        .assert()
        .code(1);
    assert!(!saved.exists());
    let out = s.cli().arg("login").assert().success();
    assert!(stdout(out.get_output()).contains(&s.url));
    assert_eq!(mode(&saved), 0o600);

    // The saved login serves later commands, and the environment still beats it.
    assert_eq!(s.bare().args(["envoys", "list", "--json"]).assert().success().get_output().stdout, b"[]\n");
    let out = s.bare().env("VIGO_TOKEN", "vga_00000000_wrong").arg("status").assert().code(1);
    assert!(stderr(out.get_output()).contains("refused the admin token"));
    std::fs::remove_file(s.path("ca.pem")).expect("remove");
    s.bare().arg("status").assert().success();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// Every admin action lands in the audit trail; editing, deleting or reordering rows
/// straight in the SQLite file makes `audit verify` exit 1 naming the event.
#[test]
fn audit_list_and_verify_catch_tampering() {
    let s = TestServer::start();
    let token = std::fs::read_to_string(s.path("admin.token")).expect("token");
    let admin_id = token.split('_').nth(1).expect("vga_<id>_<secret>").to_string();
    s.cli().arg("login").assert().success();
    let created = s.json(&["token", "create", "--hosts", "web-*", "--json"]);
    let id = created["id"].as_str().expect("id").to_string();
    s.cli().args(["token", "revoke", &id]).assert().success();
    s.cli().args(["publish", "-m", "first"]).assert().success();
    std::fs::write(s.path("config/modules/broken.yaml"), BAD_MODULE).expect("bad module");
    s.cli().args(["publish", "-m", "broken"]).assert().code(1);

    let events = s.json(&["audit", "list", "--json"]);
    let actions: Vec<(&str, &str)> = events
        .as_array()
        .expect("array")
        .iter()
        .map(|e| (e["actor"].as_str().expect("actor"), e["action"].as_str().expect("action")))
        .collect();
    let admin = admin_id.as_str();
    assert_eq!(
        actions,
        [
            ("system", "admin_token.create"),
            (admin, "login"),
            (admin, "token.create"),
            (admin, "token.revoke"),
            (admin, "publish"),
            (admin, "publish.failed"),
        ]
    );
    let text = events.to_string();
    assert!(!text.contains(created["token"].as_str().expect("secret")) && !text.contains(token.trim()));
    let table = stdout(s.cli().args(["audit", "list", "--limit", "2"]).assert().success().get_output());
    assert!(table.lines().any(|l| l.contains("publish.failed") && l.contains("problems=1")), "{table}");
    assert!(!table.contains("token.revoke"), "--limit 2 shows the last two only:\n{table}");

    let out = s.cli().args(["audit", "verify"]).assert().success();
    assert_eq!(stdout(out.get_output()), "audit chain intact: 6 events\n");

    let tamper = |sql: &str| {
        let url = format!("sqlite://{}", s.path("state/vigo.db").display());
        s.runtime.as_ref().expect("runtime").block_on(async {
            let pool = sqlx::sqlite::SqlitePool::connect(&url).await.expect("open the database directly");
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).execute(&pool).await.expect(sql);
            pool.close().await;
        });
    };
    let broken = |s: &TestServer| {
        let out = s.cli().args(["audit", "verify"]).assert().code(1);
        stderr(out.get_output())
    };
    tamper(r#"UPDATE audit_events SET detail = '{"hosts":"*"}' WHERE seq = 3"#);
    assert_eq!(broken(&s), "audit chain broken at event 3: hash mismatch (row edited)\n");
    let json = s.cli().args(["audit", "verify", "--json"]).assert().code(1).get_output().stdout.clone();
    let json: Value = serde_json::from_slice(&json).expect("JSON verification");
    assert_eq!((json["intact"].as_bool(), json["broken"]["seq"].as_i64()), (Some(false), Some(3)), "{json}");

    tamper("DELETE FROM audit_events WHERE seq <= 3");
    assert_eq!(broken(&s), "audit chain broken at event 1: event 1 missing (row deleted)\n");
}

#[test]
fn swarm_sync_status_table_and_json() {
    let s = TestServer::start();
    let out = s.cli().args(["swarm", "sync", "status"]).assert().success().get_output().clone();
    assert!(stdout(&out).contains("no vigosync files reported"), "{}", stdout(&out));

    // Three envoys report alice's notes.txt: h1 the newest, h2 an older copy, h3 deleted its copy.
    const NEW_YEAR_NS: i64 = 1_767_225_600_000_000_000;
    let entry = |mtime: i64, sha: &str| serde_json::json!({"name": "notes.txt", "sha256": sha.repeat(32), "size": 5, "mtime": mtime});
    let traits = |user: &str, files: Value| serde_json::json!({"users": {"human": [user]}, "vigosync": {user: files}});
    let ip = |n: u8| Some(std::net::IpAddr::from([198, 18, 0, n]));
    let sync = &s.server.vigosync;
    // The server sees the versions a minute after they were written (it counts no
    // version as newer than when it first saw it).
    let seen = NEW_YEAR_NS / 1_000_000_000 + 60;
    sync.check_in("h1", Some(&traits("alice", serde_json::json!([entry(NEW_YEAR_NS, "bb")]))), ip(1), 1, seen);
    sync.check_in("h2", Some(&traits("alice", serde_json::json!([entry(NEW_YEAR_NS - 10, "aa")]))), ip(2), 1, seen);
    sync.check_in("h3", Some(&traits("alice", serde_json::json!([entry(NEW_YEAR_NS, "bb")]))), ip(3), 1, seen);
    sync.check_in("h3", Some(&traits("alice", serde_json::json!([]))), ip(3), 1, seen + 1);
    sync.check_in("h4", Some(&traits("bob", serde_json::json!([entry(NEW_YEAR_NS, "cc")]))), ip(4), 1, seen);

    let all = s.json(&["swarm", "sync", "status", "--json"]);
    let users: Vec<&str> = all["users"].as_array().expect("users").iter().filter_map(|u| u["user"].as_str()).collect();
    assert_eq!(users, ["alice", "bob"]);
    let alice = s.json(&["swarm", "sync", "status", "--user", "alice", "--json"]);
    assert_eq!(alice["users"].as_array().map(Vec::len), Some(1), "{alice}");
    assert_eq!(alice["users"][0]["files"][0]["pending"][0]["target"], "h2");

    let out = s.cli().args(["swarm", "sync", "status", "--user", "alice"]).assert().success().get_output().clone();
    let table = stdout(&out);
    let lines: Vec<Vec<&str>> =
        table.lines().map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect();
    assert_eq!(lines[0], ["USER", "FILE", "ENVOY", "STATE", "SHA256", "MTIME"], "{table}");
    let when = "2026-01-01 00:00:00 UTC";
    assert_eq!(lines[1], ["alice", "notes.txt", "h1", "current", "bbbbbbbbbbbb", when], "{table}");
    assert_eq!(lines[2][2..4], ["h2", "outdated, fetching from h1"], "{table}");
    assert_eq!(lines[3][2..5], ["h3", "deleted", "bbbbbbbbbbbb"], "{table}");
    assert_eq!(lines.len(), 4, "bob is not shown: {table}");

    let out = s.cli().args(["swarm", "sync", "status", "--user", "nobody"]).assert().success().get_output().clone();
    assert!(stdout(&out).contains("no vigosync files for nobody"), "{}", stdout(&out));
}

#[test]
fn envoys_reports_show_the_run_history() {
    use vigo_store::{EnvoyRow, NewReport, Repeats, WriteOp};
    let s = TestServer::start();
    let rt = s.runtime.as_ref().expect("runtime");
    let key = vigo_pki::SigningKey::generate().public_key().as_bytes().to_vec();
    let row = EnvoyRow::enrolled("web-1", key, "sha256:web-1", 1);
    rt.block_on(s.server.store.insert_envoy(&row)).expect("enroll");
    s.server.fleet.insert(vigo_server::server::envoy_from_row(row).expect("envoy"));
    let out = s.cli().args(["envoys", "reports", "web-1"]).assert().success().get_output().clone();
    assert!(stdout(&out).contains("web-1 has not reported a run yet"), "{}", stdout(&out));

    // Runs 1-3 repaired one drift each time, alike; runs 4-5 could not start.
    let repaired = r#"{"mode":"enforce","resources":[],"summary":{"total":2,"unchanged":1,"changed":1,"failed":0,"skipped":0,"duration_ms":5}}"#;
    let failed = r#"{"mode":"enforce","error":"policy does not validate\nsecond line","resources":[],"summary":{"total":0,"unchanged":0,"changed":0,"failed":0,"skipped":0,"duration_ms":0}}"#;
    const JAN_1: i64 = 1_767_225_600;
    let delivery = WriteOp::Reports {
        envoy: "web-1".into(),
        at: JAN_1,
        reports: vec![
            NewReport {
                seq: 1,
                json: repaired.into(),
                repeats: Some(Repeats { count: 2, last_seq: 3, last_at: JAN_1 + 60 }),
            },
            NewReport { seq: 4, json: failed.into(), repeats: None },
        ],
        closes: None,
        open: (4, Some(Repeats { count: 1, last_seq: 5, last_at: JAN_1 + 120 })),
        through: (0, 5),
    };
    rt.block_on(s.server.store.apply_batch(&[delivery])).expect("reports");

    let out = s.cli().args(["envoys", "reports", "web-1"]).assert().success().get_output().clone();
    let table = stdout(&out);
    let lines: Vec<Vec<&str>> =
        table.lines().map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect();
    assert_eq!(lines[0], ["RUNS", "FIRST", "LAST", "OUTCOME"], "{table}");
    assert_eq!(
        lines[1],
        ["#1-#3 (3)", "2026-01-01 00:00:00 UTC", "2026-01-01 00:01:00 UTC", "2 resources, 1 changed"],
        "{table}"
    );
    assert_eq!(lines[2][0], "#4-#5 (2)", "{table}");
    assert_eq!(lines[2][3], "run failed: policy does not validate", "{table}");
    assert_eq!(lines.len(), 3, "{table}");

    let all = s.json(&["envoys", "reports", "web-1", "--json"]);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    assert_eq!(all[1]["repeats"], serde_json::json!({"count": 1, "last_seq": 5, "last_at": JAN_1 + 120}));
    let newest = s.json(&["envoys", "reports", "web-1", "--limit", "1", "--json"]);
    assert_eq!(newest.as_array().map(|a| a.iter().map(|e| e["seq"].clone()).collect::<Vec<_>>()), Some(vec![4.into()]));
    let out = s.cli().args(["envoys", "reports", "ghost"]).assert().code(1);
    assert!(stderr(out.get_output()).contains("ghost"), "{}", stderr(out.get_output()));
    s.cli().args(["envoys", "reports", "web-1", "--limit", "0"]).assert().code(1);

    // `envoys show` names the repeats of the last report (as loaded at start).
    let rows = rt.block_on(s.server.store.envoys()).expect("envoys");
    let row = rows.into_iter().find(|e| e.name == "web-1").expect("web-1 row");
    s.server.fleet.insert(vigo_server::server::envoy_from_row(row).expect("envoy"));
    let out = s.cli().args(["envoys", "show", "web-1"]).assert().success().get_output().clone();
    let expected = "last report (#4, the same outcome again in 1 later run, the newest #5 2026-01-01 00:02:00 UTC):";
    assert!(stdout(&out).contains(expected), "{}", stdout(&out));
}

/// An envoy serving its own certificate (valid under the fleet CA, even carrying the
/// name the admin connects to) does not pass for the server: `vigocli` stops at the
/// handshake, and the admin token never reaches the impostor.
#[test]
fn an_envoy_certificate_never_receives_the_admin_token() {
    use std::io::Read as _;
    use std::sync::Arc;

    let s = TestServer::start();
    let ca = vigo_pki::FleetCa::load(&s.path("state/ca")).expect("fleet CA");
    let key = vigo_pki::EnvoyTlsKey::generate().expect("key");
    let cert = ca.sign_envoy_csr(&key.csr("localhost").expect("csr"), "localhost", 30).expect("envoy cert");
    let config =
        vigo_pki::server_config(ca.cert_pem(), &cert, &key.private_key_pem(), vigo_pki::RevocationList::new(), true)
            .expect("impostor config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The impostor: accepts TLS with the envoy's certificate and records every
    // plaintext byte a client sends it.
    let impostor = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let Ok((tcp, _)) = listener.accept() else { break };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let conn = rustls::ServerConnection::new(config.clone()).expect("connection");
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            while let Ok(n) = tls.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
        seen
    });

    // The setup is a working impostor: a client that checks only the chain and the
    // name completes the handshake and sends its request.
    let plain = Arc::new(vigo_pki::client_config(ca.cert_pem(), None).expect("plain client"));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut conn = rustls::ClientConnection::new(plain, name).expect("client");
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    std::io::Write::write_all(&mut tls, b"GET / HTTP/1.1\r\nauthorization: Bearer plain-client\r\n\r\n")
        .expect("a name-and-chain client talks to the impostor");

    let out = s
        .cli_with(&format!("https://localhost:{port}"), &s.path("ca.pem"), &s.path("admin.token"))
        .arg("status")
        .assert()
        .code(1);
    let err = stderr(out.get_output());
    assert!(err.contains("not the fleet server"), "{err}");
    let seen = String::from_utf8_lossy(&impostor.join().expect("impostor")).into_owned();
    assert!(seen.contains("Bearer plain-client"), "the control request did not arrive: {seen:?}");
    let token = std::fs::read_to_string(s.path("admin.token")).expect("token");
    assert!(!seen.contains(token.trim()) && seen.matches("authorization").count() == 1, "{seen:?}");
}
