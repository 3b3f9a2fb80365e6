//! End-to-end: a `secret:` value travels from the server's provider to the file it
//! configures, sealed to the envoy's key, and shows up nowhere else — not in the
//! database or its WAL, the stored bundles, the server or agent logs (at debug
//! level), any `vigocli` read verb or `vigo status`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;

mod common;

use common::{STATE_DIR, World, bin, stderr};
use vigo_testkit::Host;

/// The file the secret configures, in the agent host's private `/home`.
const TARGET: &str = "/home/db.pw";

const MODULE: &str = "name: app
resources:
  - name: db password
    type: file
    target_path: /home/db.pw
    content: \"secret:app/db\"
    mode: \"0600\"
";

fn config_dir(server_yaml: &str) -> tempfile::TempDir {
    let config = tempfile::tempdir().expect("config dir");
    std::fs::create_dir_all(config.path().join("modules")).expect("modules");
    std::fs::write(config.path().join("modules/app.yaml"), MODULE).expect("module");
    std::fs::write(config.path().join("assignments.yaml"), "assignments:\n  - hosts: \"web-*\"\n    modules: [app]\n")
        .expect("assignments");
    std::fs::write(config.path().join("server.yaml"), server_yaml).expect("server.yaml");
    config
}

/// A fresh random value, so nothing but this run can hold it.
fn random_value() -> String {
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").expect("urandom"), &mut bytes).expect("read");
    format!("pw-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The forms a leak could take: the value, and its base64 (standard and URL-safe,
/// with and without padding).
fn forms(value: &str) -> Vec<(&'static str, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![("clear", value.to_string())];
    for (name, engine) in [
        ("base64", &STANDARD),
        ("base64 unpadded", &STANDARD_NO_PAD),
        ("base64url", &URL_SAFE),
        ("base64url unpadded", &URL_SAFE_NO_PAD),
    ] {
        out.push((name, engine.encode(value)));
    }
    out
}

/// Which forms of `value` occur in `haystack`.
fn found(haystack: &[u8], value: &str) -> Vec<&'static str> {
    forms(value)
        .into_iter()
        .filter(|(_, f)| haystack.windows(f.len()).any(|w| w == f.as_bytes()))
        .map(|(name, _)| name)
        .collect()
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            out.extend(files_under(&e.path()));
        } else if kind.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// Writes `value` to `<state>/secrets/<rel>` with the modes the file provider requires.
fn put_secret(w: &World, rel: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let secrets = w.server.path(STATE_DIR).join("secrets");
    let file = secrets.join(rel);
    let dir = file.parent().expect("parent");
    std::fs::create_dir_all(dir).expect("secret dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod dir");
    std::fs::write(&file, format!("{value}\n")).expect("secret file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod file");
    file
}

/// Restarts the server with debug logging, so its log is searched at its most talkative.
fn restart_with_debug_logs(w: &mut World) {
    w.stop();
    let config = w.config.path().display().to_string();
    let mut cmd = w.server.command(bin("vigosrv"), ["--state-dir", STATE_DIR, "--config-dir", &config]);
    cmd.env("RUST_LOG", "debug");
    w.srv = Some(w.server.spawn_command("vigosrv", cmd).expect("start vigosrv"));
    w.server.wait_tcp(8443, Duration::from_secs(30)).expect("API up");
    w.server.wait_tcp(1530, Duration::from_secs(30)).expect("gRPC up");
}

/// `vigo ARGS` on `host` with debug logging; stdout and stderr together.
fn vigo(host: &Host, args: &[&str]) -> (Output, String) {
    let mut cmd = host.command(bin("vigo"), args);
    cmd.env("VIGO_LOG", "debug");
    let out = host.output(cmd, Duration::from_secs(60)).expect("run vigo");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

fn run_once(host: &Host) -> String {
    let (out, text) = vigo(host, &["run", "--once"]);
    assert!(out.status.success(), "vigo run --once:\n{text}");
    text
}

fn policy_version(host: &Host) -> String {
    let (out, text) = vigo(host, &["status", "--json"]);
    assert!(out.status.success(), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    v["policy"]["version"].as_str().expect("a policy version").to_string()
}

/// Every place the value must never be, as (what, bytes).
fn everywhere(w: &World, agent: &Host, agent_log: &str) -> Vec<(String, Vec<u8>)> {
    let mut places = Vec::new();
    let db = w.server.path(STATE_DIR).join("vigo.db");
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(bytes) = std::fs::read(&p) {
            places.push((p.display().to_string(), bytes));
        }
    }
    for b in stored_bundles(&db) {
        places.push((format!("stored bundle {}/{:?}", b.number, b.set_key), [b.payload, b.signature].concat()));
    }
    places.push(("server log".into(), w.server_log().into_bytes()));
    places.push(("agent log".into(), agent_log.as_bytes().to_vec()));
    let reads: &[&[&str]] = &[
        &["envoys", "list", "--json"],
        &["envoys", "list"],
        &["envoys", "show", "web-1", "--json"],
        &["envoys", "show", "web-1"],
        &["status", "--json"],
        &["status"],
        &["versions", "list", "--json"],
        &["versions", "list"],
        &["audit", "list", "--json"],
        &["audit", "list"],
    ];
    for args in reads {
        let out = w.cli(args);
        assert!(out.status.success(), "vigocli {args:?}: {}", stderr(&out));
        places.push((format!("vigocli {}", args.join(" ")), [out.stdout, out.stderr].concat()));
    }
    for args in [&["status", "--json"][..], &["status"]] {
        let (out, text) = vigo(agent, args);
        assert!(out.status.success(), "vigo {args:?}: {text}");
        places.push((format!("vigo {}", args.join(" ")), text.into_bytes()));
    }
    // The agent's own state: cached bundle (ciphertext only), run state, results queue.
    for f in files_under(&agent.path("/var/lib/vigo")) {
        let bytes = std::fs::read(&f).expect("agent state file");
        places.push((f.display().to_string(), bytes));
    }
    places
}

/// Every stored bundle of every version, read back through the store.
fn stored_bundles(db: &Path) -> Vec<vigo_store::BundleRow> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = vigo_store::Store::open(&format!("sqlite://{}", db.display())).await.expect("open store");
        let mut out = Vec::new();
        for v in store.versions().await.expect("versions") {
            out.extend(store.bundles(v.number).await.expect("bundles"));
        }
        store.close().await;
        out
    })
}

/// The value sealed in web-1's newest stored bundle, opened with web-1's key: proof that
/// the bundles searched do carry the secret, only never in clear.
fn sealed_in_stored_bundle(w: &World, agent: &Host) -> String {
    let db = w.server.path(STATE_DIR).join("vigo.db");
    let newest =
        stored_bundles(&db).into_iter().filter(|b| b.set_key.contains("\u{1e}web-1\u{1e}")).max_by_key(|b| b.number);
    let bundle = newest.expect("a per-envoy bundle for web-1 is stored");
    let payload: serde_json::Value = serde_json::from_slice(&bundle.payload).expect("json payload");
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(payload["secrets"]["app/db"].as_str().expect("app/db sealed"))
        .expect("base64");
    let id = vigo_pki::AgeIdentity::load(&agent.path("/var/lib/vigo/age.key")).expect("web-1 age key");
    String::from_utf8(vigo_pki::seal::open(&id, &sealed).expect("web-1 opens it").into_bytes()).expect("utf8")
}

fn assert_nowhere(places: &[(String, Vec<u8>)], value: &str) {
    let leaks: Vec<String> = places
        .iter()
        .filter_map(|(what, bytes)| {
            let f = found(bytes, value);
            (!f.is_empty()).then(|| format!("{what}: {}", f.join(", ")))
        })
        .collect();
    assert!(leaks.is_empty(), "the secret leaked into:\n{}", leaks.join("\n"));
}

#[test]
fn a_secret_reaches_its_file_and_nowhere_else_and_rotates() {
    let mut w = World::with_config("secrets", config_dir("interval_secs: 15\n"));
    restart_with_debug_logs(&mut w);
    let value = random_value();
    let secret_file = put_secret(&w, "app/db", &value);
    // The searches can find it: the secret file itself holds it, in clear and as base64.
    assert_eq!(found(&std::fs::read(&secret_file).expect("read"), &value), ["clear"]);
    for (name, form) in forms(&value) {
        assert!(found(format!("x{form}y").as_bytes(), &value).contains(&name), "{name} is searched for");
    }
    let web1 = w.enrolled_agent("web-1");
    let published = w.publish();
    assert!(published.status.success(), "{}", stderr(&published));
    let mut agent_log = run_once(&web1);
    assert_eq!(std::fs::read_to_string(web1.path(TARGET)).expect("target"), value);
    // A second run finds it in sync and reports again.
    agent_log.push_str(&run_once(&web1));
    assert!(agent_log.contains("DEBUG"), "the agent logged at debug level:\n{agent_log}");
    assert!(w.server_log().contains("DEBUG"), "the server logged at debug level");
    assert_eq!(sealed_in_stored_bundle(&w, &web1), value, "the stored bundle carries it, sealed to web-1");
    let places = everywhere(&w, &web1, &agent_log);
    // The raw database search sees bundle payloads: the snapshot's reference is there.
    let db_text = places
        .iter()
        .filter(|(what, _)| what.contains("vigo.db"))
        .any(|(_, b)| b.windows(b"secret:app/db".len()).any(|w| w == b"secret:app/db"));
    assert!(db_text, "the database files hold the published snapshot");
    assert_nowhere(&places, &value);
    // Results did reach the server, with the resource shown redacted.
    let show = w.cli_ok(&["envoys", "show", "web-1", "--json"]);
    assert!(show.contains("[redacted]"), "{show}");

    // Rotation: a changed secret and a new publish give a new bundle and a new file.
    let before = policy_version(&web1);
    let rotated = random_value();
    put_secret(&w, "app/db", &rotated);
    let published = w.publish();
    assert!(published.status.success(), "{}", stderr(&published));
    agent_log.push_str(&run_once(&web1));
    assert_ne!(policy_version(&web1), before, "the bundle version changed");
    assert_eq!(std::fs::read_to_string(web1.path(TARGET)).expect("target"), rotated);
    assert_eq!(sealed_in_stored_bundle(&w, &web1), rotated);
    // A stopped server folds its WAL into the database file: search it once more.
    w.stop();
    let places = everywhere_offline(&w, &web1, &agent_log);
    assert_nowhere(&places, &value);
    assert_nowhere(&places, &rotated);
    // After a restart the stored bundle is served again: same version, same file.
    let version = policy_version(&web1);
    w.start();
    run_once(&web1);
    assert_eq!(policy_version(&web1), version, "the stored bundle was reloaded, not rebuilt");
    assert_eq!(std::fs::read_to_string(web1.path(TARGET)).expect("target"), rotated);

    // A secret file others may read fails the publish, naming file and mode; nothing changes.
    let versions = w.cli_ok(&["versions", "list", "--json"]);
    let file = put_secret(&w, "app/db", &rotated);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let refused = w.publish();
    assert!(!refused.status.success(), "a world-readable secret was published");
    let why = stderr(&refused);
    assert!(why.contains("modules/app.yaml:3:") && why.contains("secret:app/db cannot be resolved"), "{why}");
    // The server names the file as it sees it, inside its host.
    assert!(why.contains(&format!("{STATE_DIR}/secrets/app/db: mode 0644")), "{why}");
    assert!(found(why.as_bytes(), &rotated).is_empty(), "{why}");
    assert_eq!(w.cli_ok(&["versions", "list", "--json"]), versions, "nothing was published");
}

/// The places that can be searched while the server is stopped.
fn everywhere_offline(w: &World, agent: &Host, agent_log: &str) -> Vec<(String, Vec<u8>)> {
    let mut places = Vec::new();
    let db = w.server.path(STATE_DIR).join("vigo.db");
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
            places.push((format!("vigo.db{suffix}"), bytes));
        }
    }
    for b in stored_bundles(&db) {
        places.push((format!("stored bundle {}/{:?}", b.number, b.set_key), [b.payload, b.signature].concat()));
    }
    places.push(("server log".into(), w.server_log().into_bytes()));
    places.push(("agent log".into(), agent_log.as_bytes().to_vec()));
    for f in files_under(&agent.path("/var/lib/vigo")) {
        places.push((f.display().to_string(), std::fs::read(&f).expect("agent state file")));
    }
    places
}

#[test]
fn the_command_provider_resolves_and_its_failure_fails_the_publish() {
    use std::os::unix::fs::PermissionsExt as _;
    let value = random_value();
    let tools = tempfile::tempdir().expect("tools dir");
    let script = tools.path().join("vault-get");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$3\" = app/db ] && [ \"$VIGO_SECRET_PATH\" = app/db ] && [ \"$1\" = --field ] && [ \"$2\" = -- ]; then\n  echo '{value}'\n  exit 0\nfi\necho \"vault: no secret at $3\" >&2\nexit 3\n"
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let server_yaml = format!(
        "interval_secs: 15\nsecrets:\n  provider: command\n  command: [\"{}\", \"--field\"]\n  timeout_secs: 10\n",
        script.display()
    );
    let w = World::with_config("secretcmd", config_dir(&server_yaml));
    let web1 = w.enrolled_agent("web-1");
    let published = w.publish();
    assert!(published.status.success(), "{}", stderr(&published));
    let log = run_once(&web1);
    assert_eq!(std::fs::read_to_string(web1.path(TARGET)).expect("target"), value);
    assert!(found(log.as_bytes(), &value).is_empty(), "{log}");

    let versions = w.cli_ok(&["versions", "list", "--json"]);
    std::fs::write(w.config.path().join("modules/app.yaml"), MODULE.replace("app/db", "app/missing")).expect("edit");
    let refused = w.publish();
    assert!(!refused.status.success());
    let why = stderr(&refused);
    assert!(why.contains("secret:app/missing cannot be resolved"), "{why}");
    assert!(why.contains("exit status: 3") && why.contains("vault: no secret at app/missing"), "{why}");
    assert_eq!(w.cli_ok(&["versions", "list", "--json"]), versions, "nothing was published");
    assert!(found(w.server_log().as_bytes(), &value).is_empty());
}

/// Enrolls `name` directly over gRPC with the given age recipient.
fn enroll_with_recipient(w: &World, token: &str, name: &str, recipient: &str) -> Result<(), tonic::Status> {
    vigo_pki::install_provider();
    let ca = std::fs::read_to_string(w.server.path(STATE_DIR).join("ca/ca.pem")).expect("ca");
    let tls = vigo_pki::client_config(&ca, None).expect("tls");
    let key = vigo_pki::EnvoyTlsKey::generate().expect("tls key");
    let request = vigo_proto::EnrollRequest {
        token: token.to_string(),
        hostname: name.to_string(),
        csr_pem: key.csr(name).expect("csr"),
        signing_public_key: vigo_pki::SigningKey::generate().public_key().as_bytes().to_vec(),
        age_recipient: recipient.to_string(),
    };
    let ip = w.server.ip().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let mut client =
            vigo_agent::client::connect(&ip, 1530, tls).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        client.enroll(request).await.map(drop)
    })
}

#[test]
fn enrollment_needs_an_age_recipient_and_an_envoy_without_its_key_is_told_to_re_enroll() {
    let w = World::with_config("secretkey", config_dir("interval_secs: 15\n"));
    let value = random_value();
    put_secret(&w, "app/db", &value);
    // A missing or malformed recipient is refused before the token is spent.
    let token = w.token("web-*", None);
    for (recipient, want) in [
        ("", "no age recipient sent"),
        ("age1notakey", "is not an age X25519 recipient"),
        ("AGE-SECRET-KEY-1QQQQ", "is not an age X25519 recipient"),
    ] {
        let err = enroll_with_recipient(&w, &token, "web-9", recipient).expect_err(recipient);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{recipient:?}: {err:?}");
        assert!(err.message().contains(want), "{recipient:?}: {}", err.message());
    }
    let good = vigo_pki::AgeIdentity::generate().recipient();
    enroll_with_recipient(&w, &token, "web-9", &good).expect("the token is still unused");

    // An envoy that lost its age key gets the bundle but cannot open the secret: the
    // resource fails and says how to recover; nothing is written.
    let web1 = w.enrolled_agent("web-1");
    let published = w.publish();
    assert!(published.status.success(), "{}", stderr(&published));
    std::fs::remove_file(web1.path("/var/lib/vigo/age.key")).expect("remove age.key");
    let (out, text) = vigo(&web1, &["run", "--once"]);
    assert!(!out.status.success(), "the run fails:\n{text}");
    assert!(text.contains("secret:app/db cannot be opened") && text.contains("re-enroll"), "{text}");
    assert!(!web1.path(TARGET).exists());
    assert!(found(text.as_bytes(), &value).is_empty(), "{text}");
}
