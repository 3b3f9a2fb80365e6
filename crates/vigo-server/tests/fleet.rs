//! End-to-end: a real `vigosrv` and real `vigo` agents in separate namespace hosts,
//! driven with the real `vigocli`, over real mutual TLS.

use std::process::Output;
use std::time::Duration;

mod common;

use common::{MODULE, MOTD, World, bin, stderr};
use vigo_testkit::Host;

fn run_once(host: &Host) -> Output {
    host.run(bin("vigo"), ["run", "--once"]).expect("vigo run --once")
}

#[test]
fn enrollment_honours_globs_single_use_and_expiry() {
    let w = World::new("enroll");
    let (web1, web2, db1) = (w.agent("web-1"), w.agent("web-2"), w.agent("db-1"));
    let t1 = w.token("web-*", None);
    assert!(w.enroll(&web1, &t1).status.success(), "web-1: {}", stderr(&w.enroll(&web1, &t1)));
    // A used token is refused.
    let again = w.enroll(&web2, &t1);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already used"), "{}", stderr(&again));
    let t2 = w.token("web-*", None);
    assert!(w.enroll(&web2, &t2).status.success());
    // A glob that does not match is refused, and the token stays usable.
    let t3 = w.token("web-*", None);
    let db = w.enroll(&db1, &t3);
    assert!(!db.status.success());
    assert!(stderr(&db).contains("does not match"), "{}", stderr(&db));
    // An expired token is refused.
    let t4 = w.token("db-*", Some("1s"));
    std::thread::sleep(Duration::from_secs(2));
    let expired = w.enroll(&db1, &t4);
    assert!(!expired.status.success());
    assert!(stderr(&expired).contains("expired"), "{}", stderr(&expired));
    let envoys: serde_json::Value = serde_json::from_str(&w.cli_ok(&["envoys", "list", "--json"])).expect("json");
    let names: Vec<&str> = envoys.as_array().expect("list").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["web-1", "web-2"]);
    // No envoy enrolls under a name the server's certificate carries: its certificate
    // would then pass for the server's wherever only the name is checked.
    let any = w.token("*", None);
    let ip = w.server.ip().to_string();
    for name in ["localhost", ip.as_str()] {
        let out = db1
            .run(
                bin("vigo"),
                ["enroll", "--server", &ip, "--token", &any, "--ca-fingerprint", &w.fingerprint, "--name", name],
            )
            .expect("run vigo enroll");
        assert!(!out.status.success(), "enrolled as the server's name {name}");
        assert!(stderr(&out).contains("is a name of the server itself"), "{name}: {}", stderr(&out));
    }
    let envoys: serde_json::Value = serde_json::from_str(&w.cli_ok(&["envoys", "list", "--json"])).expect("json");
    assert_eq!(envoys.as_array().map(Vec::len), Some(2), "{envoys}");
    let log = w.server_log();
    assert!(log.contains("token already used") && log.contains("token expired"), "refusals are logged:\n{log}");
}

#[test]
fn publish_converges_repairs_drift_and_invalid_publish_changes_nothing() {
    let w = World::new("publish");
    let (web1, web2) = (w.agent("web-1"), w.agent("web-2"));
    for h in [&web1, &web2] {
        let t = w.token(h.name(), None);
        assert!(w.enroll(h, &t).status.success());
    }
    // The daemon is running and has checked in before anything is published.
    let d1 = web1.spawn(bin("vigo"), ["run"]).expect("daemon");
    vigo_testkit::wait_for("web-1 checks in", Duration::from_secs(20), || {
        let show: serde_json::Value =
            serde_json::from_str(&w.cli_ok(&["envoys", "show", "web-1", "--json"])).expect("json");
        !show["last_checkin"].is_null()
    })
    .expect("first check-in");
    assert!(!web1.path(MOTD).exists());
    let published = w.publish();
    assert!(published.status.success(), "{}", stderr(&published));
    // It converges within one interval (15 s, plus at most 10% splay).
    vigo_testkit::wait_for("web-1 converges", Duration::from_secs(17), || web1.path(MOTD).exists()).expect("converged");
    drop(d1);
    assert!(run_once(&web2).status.success());
    for h in [&web1, &web2] {
        assert_eq!(std::fs::read_to_string(h.path(MOTD)).expect("motd"), "managed by vigo\n");
    }
    // A hand edit is repaired at the next check-in.
    std::fs::write(web2.path(MOTD), "hand edit\n").expect("edit");
    assert!(run_once(&web2).status.success());
    assert_eq!(std::fs::read_to_string(web2.path(MOTD)).expect("motd"), "managed by vigo\n");
    // An invalid publish is refused with every problem, and envoys keep the old version.
    let before = w.cli_ok(&["versions", "list", "--json"]);
    std::fs::write(w.config.path().join("modules/web.yaml"), MODULE.replace("content:", "contnet:")).expect("break");
    let bad = w.publish();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("web.yaml:6:") && stderr(&bad).contains("contnet"), "{}", stderr(&bad));
    assert_eq!(w.cli_ok(&["versions", "list", "--json"]), before);
    assert!(run_once(&web2).status.success());
    assert_eq!(std::fs::read_to_string(web2.path(MOTD)).expect("motd"), "managed by vigo\n");
    // Results reach the server (a report travels with the next check-in) and set the state:
    // the repaired hand edit made web-2 `relapsed`, a clean run makes it `converged`.
    let state = |name: &str| {
        let show: serde_json::Value =
            serde_json::from_str(&w.cli_ok(&["envoys", "show", name, "--json"])).expect("json");
        assert!(show["last_report"]["summary"].is_object(), "{show}");
        show["state"].as_str().expect("state").to_string()
    };
    std::fs::write(web2.path(MOTD), "hand edit\n").expect("edit");
    assert!(run_once(&web2).status.success());
    assert!(run_once(&web2).status.success());
    assert_eq!(state("web-2"), "relapsed");
    assert!(run_once(&web2).status.success());
    assert_eq!(state("web-2"), "converged");
    let status: serde_json::Value = serde_json::from_str(&w.cli_ok(&["status", "--json"])).expect("json");
    assert_eq!(status["states"]["converged"], 1, "{status}");
}

#[test]
fn revocation_cuts_an_envoy_off_at_the_handshake_and_restart_keeps_state() {
    let mut w = World::new("revoke");
    let (web1, web2) = (w.agent("web-1"), w.agent("web-2"));
    for h in [&web1, &web2] {
        let t = w.token(h.name(), None);
        assert!(w.enroll(h, &t).status.success());
    }
    assert!(w.publish().status.success());
    assert!(run_once(&web1).status.success());
    assert!(run_once(&web2).status.success());
    w.cli_ok(&["envoys", "revoke", "web-2"]);
    let refused = run_once(&web2);
    assert!(!refused.status.success());
    assert!(w.server_log().contains("TLS handshake refused"), "{}", w.server_log());
    assert!(run_once(&web1).status.success(), "web-1 carries on: {}", stderr(&run_once(&web1)));
    // Restart: envoys, versions and tokens survive; agents reconnect on their own.
    let spare = w.token("spare-*", None);
    let versions = w.cli_ok(&["versions", "list", "--json"]);
    w.stop();
    w.start();
    assert_eq!(w.cli_ok(&["versions", "list", "--json"]), versions);
    let tokens = w.cli_ok(&["token", "list", "--json"]);
    assert!(tokens.contains(vigo_pki::token::token_id(&spare).expect("id")), "{tokens}");
    let envoys = w.cli_ok(&["envoys", "list", "--json"]);
    assert!(envoys.contains("web-1") && envoys.contains("web-2"), "{envoys}");
    assert!(run_once(&web1).status.success(), "{}", stderr(&run_once(&web1)));
    assert!(!run_once(&web2).status.success(), "revocation survives a restart");
}

/// Sends one check-in from the test process with the given TLS identity and signature.
fn forge(
    w: &World,
    tls_from: Option<&Host>,
    claim: &str,
    key: &vigo_pki::SigningKey,
    timestamp: i64,
    replay: Option<vigo_proto::Signed>,
) -> (Result<(), tonic::Status>, vigo_proto::Signed) {
    use prost::Message as _;
    let ca = std::fs::read_to_string(w.server.path("/var/lib/vigo/server/ca/ca.pem")).expect("ca");
    let identity = tls_from.map(|h| {
        let cert = std::fs::read_to_string(h.path("/var/lib/vigo/tls.crt")).expect("cert");
        let key = vigo_pki::EnvoyTlsKey::load(&h.path("/var/lib/vigo/tls.key")).expect("key").private_key_pem();
        (cert, key)
    });
    let tls = vigo_pki::client_config(&ca, identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str()))).expect("tls");
    let signed = replay.unwrap_or_else(|| {
        let body =
            vigo_proto::CheckInBody { envoy: claim.to_string(), traits_digest: "x".into(), ..Default::default() }
                .encode_to_vec();
        let sig = vigo_pki::sign_request(key, "CheckIn", &body, timestamp);
        vigo_proto::Signed { body, timestamp: sig.timestamp, nonce: sig.nonce, signature: sig.signature.into_bytes() }
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let ip = w.server.ip().to_string();
    let sent = signed.clone();
    let result = rt.block_on(async move {
        let mut client =
            vigo_agent::client::connect(&ip, 1530, tls).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        client.check_in(sent).await.map(|_| ())
    });
    (result, signed)
}

fn now() -> i64 {
    vigo_server::now()
}

/// What is wrong with a forged request, the TLS identity, the claimed envoy, the key,
/// the timestamp, and the reason the server must log.
type ForgeCase<'a> = (&'a str, Option<&'a Host>, &'a str, &'a vigo_pki::SigningKey, i64, &'a str);

#[test]
fn forged_replayed_stale_and_misattributed_requests_are_refused_and_logged() {
    vigo_pki::install_provider();
    let w = World::new("forge");
    let (web1, web2) = (w.agent("web-1"), w.agent("web-2"));
    for h in [&web1, &web2] {
        let t = w.token(h.name(), None);
        assert!(w.enroll(h, &t).status.success());
    }
    let key1 = vigo_pki::SigningKey::load(&web1.path("/var/lib/vigo/signing.key")).expect("web-1 key");
    let key2 = vigo_pki::SigningKey::load(&web2.path("/var/lib/vigo/signing.key")).expect("web-2 key");
    let stranger = vigo_pki::SigningKey::generate();
    let cases: Vec<ForgeCase<'_>> = vec![
        ("bad signature", Some(&web1), "web-1", &stranger, now(), "signature does not verify"),
        ("stale timestamp", Some(&web1), "web-1", &key1, now() - 3600, "away from server time"),
        ("future timestamp", Some(&web1), "web-1", &key1, now() + 3600, "away from server time"),
        ("another envoy's certificate", Some(&web2), "web-1", &key1, now(), "certificate is for `web-2`"),
        ("another envoy's certificate and key", Some(&web2), "web-1", &key2, now(), "certificate is for `web-2`"),
        ("no certificate", None, "web-1", &key1, now(), "no client certificate"),
    ];
    for (what, tls, claim, key, ts, reason) in cases {
        let (result, _) = forge(&w, tls, claim, key, ts, None);
        assert!(result.is_err(), "{what} was accepted");
        assert!(w.server_log().contains(reason), "{what}: reason `{reason}` not logged:\n{}", w.server_log());
    }
    let show: serde_json::Value =
        serde_json::from_str(&w.cli_ok(&["envoys", "show", "web-1", "--json"])).expect("json");
    assert!(show["last_checkin"].is_null(), "a refused request changed state: {show}");
    // A valid request goes through once; the same bytes again are a replay.
    let (ok, signed) = forge(&w, Some(&web1), "web-1", &key1, now(), None);
    assert!(ok.is_ok(), "{ok:?}");
    let (replayed, _) = forge(&w, Some(&web1), "web-1", &key1, now(), Some(signed));
    assert!(replayed.is_err(), "replay accepted");
    assert!(w.server_log().contains("nonce was already used"), "{}", w.server_log());
}
