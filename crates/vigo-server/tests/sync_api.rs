//! vigosync over the real agent API: a server on loopback with real mutual TLS, envoys
//! enrolled through real enrollment, signed check-ins and the signed `Events` stream.
//! A check-in answer carries a transfer order signed by the server's key, and the
//! target is told over its stream to check in as soon as the order exists.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use prost::Message as _;
use serde_json::{Value, json};
use tonic::Streaming;
use tonic::transport::Channel;
use vigo_agent::enroll::{CaTrust, EnrollArgs};
use vigo_agent::paths::AgentPaths;
use vigo_pki::{PublicKey, SigningKey};
use vigo_proto::agent_client::AgentClient;
use vigo_proto::{CheckInBody, CheckInResponse, Event, EventsRequest, QueuedReport, Signed, event};
use vigo_server::server::Server;
use vigo_server::settings::Settings;
use vigo_server::state_dir::{self, StateDir};
use vigo_swarm::order::SignedOrder;

/// How long a push may take before the test calls it lost; pushes take milliseconds.
const PUSH_WAIT: Duration = Duration::from_secs(10);

const MODULE: &str = "\
name: base
resources:
  - name: motd
    type: file
    target_path: /tmp/vigo-sync-api-test/motd
    content: \"managed\\n\"
";

struct World {
    _dir: tempfile::TempDir,
    server: Server,
    grpc_port: u16,
    ca_pem: String,
    envoys_dir: PathBuf,
}

/// An enrolled envoy as the agent holds it.
struct TestEnvoy {
    name: String,
    client: AgentClient<Channel>,
    signing: SigningKey,
    bundle_key: PublicKey,
    /// SHA-256 of the certificate enrollment issued.
    cert_fingerprint: String,
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

impl World {
    async fn start() -> Self {
        vigo_pki::install_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().join("state"));
        state_dir::init(&state, &[], None).await.expect("init state dir");
        let ca_pem = std::fs::read_to_string(state.ca_dir().join("ca.pem")).expect("CA");
        let config = dir.path().join("config");
        std::fs::create_dir_all(config.join("modules")).expect("modules dir");
        std::fs::write(config.join("modules/base.yaml"), MODULE).expect("module");
        let mut settings = Settings::default();
        settings.listen.grpc = free_addr();
        settings.listen.api = free_addr();
        let grpc = settings.listen.grpc;
        let store = vigo_store::Store::open(&state.sqlite_url()).await.expect("store");
        let (server, writer) = Server::open(state, config, settings, store).await.expect("open server");
        tokio::spawn(vigo_server::serve::serve(server.clone(), writer));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(grpc).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the server did not listen on {grpc}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let envoys_dir = dir.path().join("envoys");
        World { _dir: dir, server, grpc_port: grpc.port(), ca_pem, envoys_dir }
    }

    async fn enroll(&self, name: &str) -> TestEnvoy {
        let token = self.server.create_token(name, Some(600)).await.expect("token");
        let home = self.envoys_dir.join(name);
        let paths = AgentPaths { etc: home.clone(), state: home };
        let args = EnrollArgs {
            server: "127.0.0.1".into(),
            grpc_port: self.grpc_port,
            token: token.token,
            name: name.into(),
            trust: CaTrust::Pem(self.ca_pem.clone()),
        };
        vigo_agent::enroll::enroll(&paths, args).await.expect("enroll");
        let read = |p: PathBuf| std::fs::read_to_string(&p).expect("enrollment file");
        let key = vigo_pki::EnvoyTlsKey::load(&paths.tls_key()).expect("TLS key").private_key_pem();
        let tls = vigo_pki::client_config(&read(paths.ca()), Some((&read(paths.tls_cert()), &key))).expect("tls");
        let client = vigo_agent::client::connect("127.0.0.1", self.grpc_port, tls).await.expect("connect");
        TestEnvoy {
            name: name.into(),
            cert_fingerprint: vigo_pki::tls::pem_fingerprint(&read(paths.tls_cert())).expect("fingerprint"),
            client,
            signing: SigningKey::load(&paths.signing_key()).expect("signing key"),
            bundle_key: PublicKey::from_b64(read(paths.bundle_pub()).trim()).expect("bundle key"),
        }
    }
}

fn signed(key: &SigningKey, method: &str, body: Vec<u8>) -> Signed {
    let sig = vigo_pki::sign_request(key, method, &body, vigo_server::now());
    Signed { body, timestamp: sig.timestamp, nonce: sig.nonce, signature: sig.signature.into_bytes() }
}

/// Traits with `humans` as human accounts and the `vigosync` trait `sync`.
fn traits(humans: &[&str], sync: Value) -> Value {
    json!({"users": {"human": humans}, "vigosync": sync})
}

fn file(name: &str, sha: &str, mtime: i64) -> Value {
    json!({"name": name, "sha256": sha, "size": 5, "mtime": mtime})
}

impl TestEnvoy {
    /// A signed check-in; `traits` are sent when given, as the agent does when they changed.
    async fn check_in(&mut self, traits: Option<&Value>) -> CheckInResponse {
        let json = traits.map(|t| serde_json::to_vec(t).expect("traits"));
        let digest = json.as_deref().map(|j| vigo_server::digest_hex(&String::from_utf8_lossy(j))).unwrap_or_default();
        let body =
            CheckInBody { envoy: self.name.clone(), traits_digest: digest, traits_json: json, ..Default::default() };
        let req = signed(&self.signing, "CheckIn", body.encode_to_vec());
        self.client.check_in(req).await.expect("check-in accepted").into_inner()
    }

    /// A signed check-in from an envoy holding a revocation list with this digest.
    async fn check_in_holding(&mut self, revocations_digest: String) -> CheckInResponse {
        let body = CheckInBody { envoy: self.name.clone(), revocations_digest, ..Default::default() };
        let req = signed(&self.signing, "CheckIn", body.encode_to_vec());
        self.client.check_in(req).await.expect("check-in accepted").into_inner()
    }

    /// A signed check-in carrying queued reports `(seq, JSON)`.
    async fn check_in_reports(&mut self, reports: &[(u64, &str)]) -> CheckInResponse {
        let reports =
            reports.iter().map(|(seq, json)| QueuedReport { seq: *seq, json: json.as_bytes().to_vec() }).collect();
        let body = CheckInBody { envoy: self.name.clone(), reports, ..Default::default() };
        let req = signed(&self.signing, "CheckIn", body.encode_to_vec());
        self.client.check_in(req).await.expect("check-in accepted").into_inner()
    }

    async fn events_as(&mut self, claimed: &str) -> Result<Streaming<Event>, tonic::Status> {
        let body = EventsRequest { envoy: claimed.into() }.encode_to_vec();
        let req = signed(&self.signing, "Events", body);
        self.client.events(req).await.map(tonic::Response::into_inner)
    }

    fn orders(&self, resp: &CheckInResponse) -> Vec<vigo_swarm::order::TransferOrder> {
        resp.transfer_orders
            .iter()
            .map(|o| {
                let signed = SignedOrder { payload: o.payload.clone(), signature: o.signature.clone() };
                signed.verify(&self.bundle_key, vigo_server::now()).expect("order signed by the server's key")
            })
            .collect()
    }
}

async fn next_reason(stream: &mut Streaming<Event>) -> String {
    let event = tokio::time::timeout(PUSH_WAIT, stream.message())
        .await
        .expect("an event arrives")
        .expect("stream healthy")
        .expect("stream open");
    match event.kind {
        Some(event::Kind::CheckInNow(c)) => c.reason,
        None => panic!("event without a kind"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_in_carries_signed_orders_and_events_push_the_target() {
    let w = World::start().await;
    let (mut h1, mut h2, mut h3) = (w.enroll("h1").await, w.enroll("h2").await, w.enroll("h3").await);

    // h2 listens for events; alice has opted in there. h3 has alice but no ~/vigosync.
    let mut h2_events = h2.events_as("h2").await.expect("events stream");
    assert!(h2.check_in(Some(&traits(&["alice"], json!({"alice": []})))).await.transfer_orders.is_empty());
    assert!(h3.check_in(Some(&traits(&["alice"], json!({})))).await.transfer_orders.is_empty());

    // A new file on h1: its own answer carries nothing, and h2 is told at once.
    let sha = "5e".repeat(32);
    let mtime = 1_767_225_600_123_456_789;
    let answer = h1.check_in(Some(&traits(&["alice"], json!({"alice": [file("notes.txt", &sha, mtime)]})))).await;
    assert!(answer.transfer_orders.is_empty());
    assert_eq!(next_reason(&mut h2_events).await, "transfer orders");

    // h2's next check-in (traits unchanged) carries the order, signed by the server.
    let answer = h2.check_in(None).await;
    let orders = h2.orders(&answer);
    assert_eq!(orders.len(), 1, "{orders:?}");
    let o = &orders[0];
    assert_eq!((o.kind.as_str(), o.user.as_str(), o.name.as_str()), ("vigosync", "alice", "notes.txt"));
    assert_eq!((o.sha256.as_str(), o.size, o.mtime), (sha.as_str(), 5, mtime));
    assert_eq!((o.source.as_str(), o.source_addr.as_str(), o.target.as_str()), ("h1", "127.0.0.1:1531", "h2"));
    let ttl = o.expires_at - vigo_server::now();
    assert!((590..=600).contains(&ttl), "expires in {ttl}s");
    // Only the certificates enrollment issued to h1 and h2 can use it.
    assert_eq!(
        (o.source_cert.as_str(), o.target_cert.as_str()),
        (h1.cert_fingerprint.as_str(), h2.cert_fingerprint.as_str())
    );
    assert_eq!(o.check_parties("h1", "h2", &h2.cert_fingerprint), Ok(()));
    assert!(o.check_parties("h1", "h2", &h3.cert_fingerprint).is_err());
    // h3 (no ~/vigosync for alice) and h1 (the source) get nothing.
    assert!(h3.check_in(None).await.transfer_orders.is_empty());
    assert!(h1.check_in(None).await.transfer_orders.is_empty());

    // A publish asks every listening envoy to check in.
    w.server.publish("vigosync test").await.expect("publish");
    assert_eq!(next_reason(&mut h2_events).await, "publish");

    // Once h2 reports the file, nothing is pending.
    h2.check_in(Some(&traits(&["alice"], json!({"alice": [file("notes.txt", &sha, mtime)]})))).await;
    assert!(h2.check_in(None).await.transfer_orders.is_empty());
    let status = w.server.vigosync.status(Some("alice"));
    assert!(status.users[0].files[0].pending.is_empty(), "{status:?}");

    // Dropping the stream unsubscribes.
    assert_eq!(w.server.events.streams(), 1);
    drop(h2_events);
    let deadline = tokio::time::Instant::now() + PUSH_WAIT;
    while w.server.events.streams() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the closed stream was not forgotten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_authenticated_like_check_ins() {
    let w = World::start().await;
    let (mut h1, mut h2) = (w.enroll("h1").await, w.enroll("h2").await);

    // h1's certificate and key, claiming to be h2.
    let err = h1.events_as("h2").await.expect_err("claiming another envoy");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    // A check-in signature is not an events signature.
    let body = EventsRequest { envoy: "h2".into() }.encode_to_vec();
    let err = h2.client.events(signed(&h2.signing, "CheckIn", body.clone())).await.expect_err("wrong method");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // A replayed request is refused.
    let req = signed(&h2.signing, "Events", body);
    let stream = h2.client.events(req.clone()).await.expect("first use");
    let err = h2.client.events(req).await.expect_err("replay");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("nonce"), "{err:?}");
    drop(stream);

    // A revoked envoy's stream ends, and it cannot open another.
    let mut stream = h2.events_as("h2").await.expect("events stream");
    w.server.revoke_envoy("h2").await.expect("revoke");
    let ended = tokio::time::timeout(PUSH_WAIT, stream.message()).await.expect("the stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    assert!(h2.events_as("h2").await.is_err(), "a revoked envoy is refused");
}

/// Queued reports are acknowledged only once stored. A backlog, or a report while
/// the server is not busy, waits for the commit; a single new report on a busy server
/// is acknowledged at a later check-in, once stored, and never written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_reports_are_acknowledged_once_stored() {
    let w = World::start().await;
    let mut web1 = w.enroll("web-1").await;
    let stored =
        |rows: Vec<vigo_store::ReportRow>| rows.into_iter().map(|r| (r.seq, r.report_json)).collect::<Vec<_>>();
    let seqs = |rows: &[(i64, String)]| rows.iter().map(|(s, _)| *s).collect::<Vec<_>>();

    let resp = web1.check_in_reports(&[(1, r#"{"run":1}"#), (2, r#"{"run":2}"#)]).await;
    assert_eq!(resp.acked_seq, 2);
    // Acknowledged means stored: readable at once, without waiting for the writer.
    let rows = stored(w.server.store.reports("web-1").await.expect("reports"));
    assert_eq!(rows, [(1, r#"{"run":1}"#.to_owned()), (2, r#"{"run":2}"#.to_owned())]);

    // A resend (the answer was lost) is acknowledged again and stored once.
    let resp = web1.check_in_reports(&[(2, r#"{"run":"again"}"#), (3, r#"{"run":3}"#)]).await;
    assert_eq!(resp.acked_seq, 3);
    let rows = stored(w.server.store.reports("web-1").await.expect("reports"));
    assert_eq!(seqs(&rows), [1, 2, 3]);
    assert_eq!(rows[1].1, r#"{"run":2}"#, "the first copy stays");

    // Not JSON (or sequence number 0): dropped, the rest stored, all acknowledged.
    let resp = web1.check_in_reports(&[(4, "{cut"), (0, "{}"), (5, r#"{"run":5}"#)]).await;
    assert_eq!(resp.acked_seq, 5);
    let rows = stored(w.server.store.reports("web-1").await.expect("reports"));
    assert_eq!(seqs(&rows), [1, 2, 3, 5]);

    // The newest stored report is the envoy's last report, in memory and after a reload.
    let entry = w.server.fleet.get("web-1").expect("web-1");
    assert_eq!((entry.report_seq(), entry.last_report.as_deref().map(String::as_str)), (5, Some(r#"{"run":5}"#)));
    let row = w.server.store.envoys().await.expect("envoys").into_iter().find(|e| e.name == "web-1").expect("row");
    assert_eq!((row.report_seq, row.last_report_json.as_deref()), (5, Some(r#"{"run":5}"#)));

    // A check-in without reports acknowledges nothing new.
    assert_eq!(web1.check_in(None).await.acked_seq, 0);

    // A busy server: many updates a second, and another connection holds the
    // database's write lock so that none of them is committed meanwhile.
    let url = w.server.state.sqlite_url();
    let mut holder = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.expect("second connection");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.expect("take the write lock");
    // Twice the rate, so that one second holds enough even if the count straddles two.
    for _ in 0..2 * vigo_server::writer::BUSY_RATE {
        let at = vigo_server::now();
        w.server
            .writer
            .send(vigo_store::WriteOp::CheckIn {
                envoy: "web-1".into(),
                at,
                traits_json: None,
                policy_version: String::new(),
            })
            .await;
    }
    assert!(w.server.writer.busy());
    let resp = web1.check_in_reports(&[(6, r#"{"run":6}"#)]).await;
    assert_eq!(resp.acked_seq, 5, "report 6 is not stored yet, so not acknowledged");
    let resp = web1.check_in_reports(&[(6, r#"{"run":6}"#)]).await;
    assert_eq!(resp.acked_seq, 5, "the resend is already on its way and still not stored");
    assert_eq!(w.server.fleet.get("web-1").expect("web-1").report_seq(), 5, "the last report is a stored one");
    sqlx::query("ROLLBACK").execute(&mut holder).await.expect("release the write lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while web1.check_in_reports(&[(6, r#"{"run":6}"#)]).await.acked_seq != 6 {
        assert!(std::time::Instant::now() < deadline, "report 6 was never acknowledged");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let rows = stored(w.server.store.reports("web-1").await.expect("reports"));
    assert_eq!(seqs(&rows), [1, 2, 3, 5, 6], "report 6 stored once");
    assert_eq!(w.server.fleet.get("web-1").expect("web-1").report_seq(), 6);
}

/// A run whose report differs from the one before only in timings is counted on the
/// earlier row, not stored as a row of its own; a new outcome closes the count. The
/// count survives a reload and goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_outcomes_are_counted_not_stored() {
    let w = World::start().await;
    let mut web1 = w.enroll("web-1").await;
    let converged = |ms: u32| {
        format!(
            r#"{{"mode":"enforce","resources":[{{"module":"base","name":"motd","type":"file","status":"unchanged","changes":[],"duration_ms":{ms}}}],"summary":{{"total":1,"unchanged":1,"changed":0,"failed":0,"skipped":0,"duration_ms":{ms}}}}}"#
        )
    };
    let failed = r#"{"mode":"enforce","error":"policy does not validate","resources":[],"summary":{"total":0,"unchanged":0,"changed":0,"failed":0,"skipped":0,"duration_ms":0}}"#;
    let rows = || async {
        let rows = w.server.store.reports("web-1").await.expect("reports");
        rows.into_iter().map(|r| (r.seq, r.repeats.map(|x| (x.count, x.last_seq)))).collect::<Vec<_>>()
    };

    assert_eq!(web1.check_in_reports(&[(1, &converged(3))]).await.acked_seq, 1);
    assert_eq!(web1.check_in_reports(&[(2, &converged(7))]).await.acked_seq, 2);
    assert_eq!(web1.check_in_reports(&[(3, &converged(5))]).await.acked_seq, 3);
    assert_eq!(rows().await, [(1, Some((2, 3)))], "runs 2 and 3 repeat run 1");
    let entry = w.server.fleet.get("web-1").expect("web-1");
    assert_eq!(entry.report_seq(), 1);
    assert_eq!(entry.repeats().map(|r| (r.count, r.last_seq)), Some((2, 3)));
    assert_eq!(entry.last_report.as_deref(), Some(&converged(3)), "the row's own report");

    // A backlog: a failed run, another like it, then converged again.
    let resp = web1.check_in_reports(&[(4, failed), (5, failed), (6, &converged(4))]).await;
    assert_eq!(resp.acked_seq, 6);
    assert_eq!(rows().await, [(1, Some((2, 3))), (4, Some((1, 5))), (6, None)]);

    // What the server loads at start agrees with what it holds.
    let row = w.server.store.envoys().await.expect("envoys").into_iter().find(|e| e.name == "web-1").expect("row");
    let loaded = vigo_server::server::envoy_from_row(row).expect("load");
    let held = w.server.fleet.get("web-1").expect("web-1");
    assert_eq!((loaded.reports.stored, loaded.reports.stored_run), (6, held.reports.stored_run));
    assert_eq!(loaded.last_report, held.last_report);

    assert_eq!(web1.check_in_reports(&[(7, &converged(9))]).await.acked_seq, 7);
    assert_eq!(rows().await, [(1, Some((2, 3))), (4, Some((1, 5))), (6, Some((1, 7)))]);

    // The REST view shows the count.
    let show = vigo_server::rest::envoys::show_envoy(
        axum::extract::State(w.server.clone()),
        axum::extract::Path("web-1".into()),
    );
    let axum::Json(detail) = show.await.expect("show web-1");
    assert_eq!(detail.report_seq, 6);
    let repeats = detail.repeats.expect("repeats");
    assert_eq!((repeats.count, repeats.last_seq), (1, 7));

    // So does the run history, newest rows first cut, in run order.
    use vigo_server::rest::envoys::{ListReports, list_reports};
    let history = |limit| {
        list_reports(
            axum::extract::State(w.server.clone()),
            axum::extract::Path("web-1".into()),
            axum::extract::Query(ListReports { limit }),
        )
    };
    let axum::Json(entries) = history(Some(2)).await.expect("history");
    let got: Vec<_> = entries.iter().map(|e| (e.seq, e.repeats.map(|r| (r.count, r.last_seq)))).collect();
    assert_eq!(got, [(4, Some((1, 5))), (6, Some((1, 7)))]);
    assert_eq!(entries[0].report["error"], "policy does not validate");
    let axum::Json(all) = history(None).await.expect("history");
    assert_eq!(all.len(), 3);
    assert!(history(Some(0)).await.is_err(), "a limit of 0 is refused");
}

/// Envoys learn the server's revocation list from their check-ins, for their swarm
/// peer port: sent when the list they hold differs, not otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_deliver_the_revocation_list_when_it_differs() {
    let w = World::start().await;
    let (mut h1, h2) = (w.enroll("h1").await, w.enroll("h2").await);
    let held = vigo_pki::RevocationList::new();
    assert!(h1.check_in_holding(held.digest()).await.revoked_certificates.is_none(), "both lists are empty");
    // An envoy that never got the list (an empty digest) is sent it, even empty.
    let sent = h1.check_in_holding(String::new()).await.revoked_certificates.expect("the list");
    assert!(sent.sha256.is_empty(), "{sent:?}");

    w.server.revoke_envoy("h2").await.expect("revoke");
    let sent = h1.check_in_holding(held.digest()).await.revoked_certificates.expect("the new list");
    assert_eq!(sent.sha256, std::slice::from_ref(&h2.cert_fingerprint));
    assert!(held.replace(&sent.sha256).expect("fingerprints"));
    assert!(h1.check_in_holding(held.digest()).await.revoked_certificates.is_none(), "up to date");
}
