//! Attacks on the swarm peer port by envoys holding fleet certificates: revoked,
//! replaced or someone else's certificates used with genuine orders, and peers that
//! try to hold every transfer slot. Real fleet CA, real envoy certificates, mutual
//! TLS on 127.0.0.1, real files owned by an unused uid (needs root, like the
//! transfer tests).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::Channel;
use vigo_pki::{EnvoyTlsKey, FleetCa, RevocationList, SigningKey};
use vigo_proto::swarm_client::SwarmClient;
use vigo_swarm::accounts::PasswdFile;
use vigo_swarm::fetch::{FetchError, FetchOutcome, Fetcher, connect_peer};
use vigo_swarm::hash::{HashCache, hex};
use vigo_swarm::order::{SignedOrder, TransferOrder};
use vigo_swarm::peer::{PeerServer, PeerState};
use vigo_swarm::source::VigosyncSource;
use vigo_swarm::tls::{client_tls, server_tls};

/// alice's uid on the serving host and on the receiving host: unused on the test machine.
const ALICE_SOURCE: u32 = 47_101;
const ALICE_TARGET: u32 = 47_102;
const MIB: usize = 1024 * 1024;

/// A certificate and its key, as an envoy holds them.
#[derive(Clone)]
struct Identity {
    cert: String,
    key: String,
}

impl Identity {
    fn issue(ca: &FleetCa, name: &str) -> Self {
        let key = EnvoyTlsKey::generate().expect("key");
        let cert = ca.sign_envoy_csr(&key.csr(name).expect("csr"), name, 30).expect("cert");
        Self { cert, key: key.private_key_pem() }
    }

    fn fingerprint(&self) -> String {
        vigo_pki::tls::pem_fingerprint(&self.cert).expect("fingerprint")
    }
}

/// alice's account and `~/vigosync/` on one host.
struct Host {
    passwd: PathBuf,
    sync: PathBuf,
    uid: u32,
}

impl Host {
    fn new(base: &Path, name: &str, uid: u32) -> Self {
        let home = base.join(name).join("home/alice");
        let sync = home.join("vigosync");
        fs::create_dir_all(&sync).expect("vigosync");
        for dir in [&home, &sync] {
            std::os::unix::fs::lchown(dir, Some(uid), Some(uid)).expect("chown");
        }
        let passwd = base.join(name).join("passwd");
        fs::write(&passwd, format!("root:x:0:0:root:/root:/bin/sh\nalice:x:{uid}:{uid}::{}:/bin/sh\n", home.display()))
            .expect("passwd");
        Self { passwd, sync, uid }
    }
}

/// h1 serves alice's files; h2 and h3 are other envoys of the fleet.
struct Fleet {
    _tmp: tempfile::TempDir,
    ca: FleetCa,
    server_key: SigningKey,
    h1: Identity,
    h2: Identity,
    h3: Identity,
    source: Host,
    target: Host,
    /// The source's revocation list, as its check-ins keep it.
    revoked: RevocationList,
    state: Arc<PeerState>,
    server: Option<PeerServer>,
    addr: SocketAddr,
}

impl Fleet {
    async fn start(configure: impl FnOnce(PeerState) -> PeerState) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = Host::new(tmp.path(), "h1", ALICE_SOURCE);
        let target = Host::new(tmp.path(), "h2", ALICE_TARGET);
        let ca = FleetCa::generate("peer trust test fleet").expect("ca");
        let (h1, h2, h3) = (Identity::issue(&ca, "h1"), Identity::issue(&ca, "h2"), Identity::issue(&ca, "h3"));
        let server_key = SigningKey::generate();
        let revoked = RevocationList::new();
        let content = VigosyncSource::new(Arc::new(PasswdFile::new(&source.passwd)), HashCache::new());
        let state = Arc::new(configure(
            PeerState::new("h1", server_key.public_key(), revoked.clone()).with_source("vigosync", Arc::new(content)),
        ));
        let tls = server_tls(ca.cert_pem(), &h1.cert, &h1.key, revoked.clone()).expect("server tls");
        let server =
            PeerServer::bind("127.0.0.1:0".parse().expect("addr"), tls, Arc::clone(&state)).await.expect("bind");
        let addr = server.local_addr();
        Self { _tmp: tmp, ca, server_key, h1, h2, h3, source, target, revoked, state, server: Some(server), addr }
    }

    /// Puts `bytes` into alice's `~/vigosync/<name>` on h1; returns the server's order
    /// for `target` (holding the certificate `target_id`) to fetch it.
    fn publish(&self, name: &str, bytes: &[u8], target: &str, target_id: &Identity) -> TransferOrder {
        let path = self.source.sync.join(name);
        fs::write(&path, bytes).expect("publish");
        std::os::unix::fs::lchown(&path, Some(self.source.uid), Some(self.source.uid)).expect("chown");
        TransferOrder {
            id: format!("order-{name}-{target}"),
            kind: "vigosync".into(),
            user: "alice".into(),
            name: name.into(),
            sha256: hex(&Sha256::digest(bytes)),
            size: bytes.len() as u64,
            mtime: 1_700_000_000_000_000_000,
            source: "h1".into(),
            source_addr: self.addr.to_string(),
            target: target.into(),
            source_cert: self.h1.fingerprint(),
            target_cert: target_id.fingerprint(),
            expires_at: now() + 300,
        }
    }

    fn sign(&self, order: &TransferOrder) -> SignedOrder {
        SignedOrder::sign(order, &self.server_key)
    }

    /// A connection to h1 presenting `id`; `None` when the handshake is refused.
    async fn connect(&self, id: &Identity) -> Option<SwarmClient<Channel>> {
        let tls = client_tls(self.ca.cert_pem(), &id.cert, &id.key, RevocationList::new())
            .expect("client tls")
            .for_peer(&self.h1.fingerprint())
            .expect("pinned");
        connect_peer(Arc::new(tls), "h1", self.addr).await.ok()
    }

    /// The receiving envoy h2 with `revoked` as its revocation list.
    fn fetcher(&self, revoked: RevocationList) -> Fetcher {
        let tls = client_tls(self.ca.cert_pem(), &self.h2.cert, &self.h2.key, revoked).expect("client tls");
        Fetcher::new(
            "h2",
            self.server_key.public_key(),
            tls,
            Arc::new(PasswdFile::new(&self.target.passwd)),
            HashCache::new(),
        )
        .with_max_attempts(1)
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("shutdown");
        }
    }
}

fn request(signed: &SignedOrder) -> vigo_proto::FetchRequest {
    vigo_proto::FetchRequest {
        order_payload: signed.payload.clone(),
        order_signature: signed.signature.clone(),
        offset: 0,
    }
}

/// Everything one fetch on `client` delivers.
async fn read_all(client: &mut SwarmClient<Channel>, signed: &SignedOrder) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = client.fetch(request(signed)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await? {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// Fetches with a fresh connection presenting `id`: the content, or why not
/// (`Unavailable` when the handshake itself was refused).
async fn fetch_as(fleet: &Fleet, id: &Identity, signed: &SignedOrder) -> Result<Vec<u8>, tonic::Status> {
    match fleet.connect(id).await {
        Some(mut client) => read_all(&mut client, signed).await,
        None => Err(tonic::Status::unavailable("handshake refused")),
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn content(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256::digest(b"peer trust test content").to_vec();
    while out.len() < len {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_at_the_handshake_on_open_connections_and_mid_transfer() {
    let fleet = Fleet::start(|state| state).await;
    let small = content(4096);
    let big = content(24 * MIB);
    let order = fleet.sign(&fleet.publish("notes.txt", &small, "h2", &fleet.h2));
    let big_order = fleet.sign(&fleet.publish("big.bin", &big, "h2", &fleet.h2));

    // Before the revocation, h2 is served, and keeps its connection open.
    let mut open = fleet.connect(&fleet.h2).await.expect("h2 connects");
    assert_eq!(read_all(&mut open, &order).await.expect("served before revocation"), small);
    let mut running = open.fetch(request(&big_order)).await.expect("big transfer").into_inner();
    let first = running.message().await.expect("first chunk").expect("a chunk");

    // The server revokes h2; the source learns it at its next check-in.
    fleet.revoked.revoke(&fleet.h2.fingerprint()).expect("revoke");

    // The transfer under way stops, before the end of the content.
    let mut received = first.data.len();
    let stopped = loop {
        match running.message().await {
            Ok(Some(chunk)) => received += chunk.data.len(),
            Ok(None) => panic!("the revoked peer received the whole file"),
            Err(status) => break status,
        }
    };
    assert_eq!(stopped.code(), Code::PermissionDenied, "{stopped:?}");
    assert!(stopped.message().contains("revoked"), "{stopped:?}");
    assert!(received < big.len(), "stopped after {received} bytes");
    // The connection opened before the revocation gets nothing more, even with a valid order.
    let status = read_all(&mut open, &order).await.expect_err("open connection after revocation");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    // A new connection does not get past the handshake.
    // (The request handler would answer PERMISSION_DENIED; the handshake fails first.)
    let status = fetch_as(&fleet, &fleet.h2, &order).await.expect_err("new connection after revocation");
    assert_ne!(status.code(), Code::PermissionDenied, "refused at the handshake, not by the handler: {status:?}");
    assert_eq!(fleet.state.hooks.served_offsets.lock().expect("offsets").len(), 2, "nothing served after revocation");
    eventually("the stopped transfer released its slot", || fleet.state.active_transfers() == 0).await;

    // Other envoys are not affected.
    let for_h3 = fleet.sign(&fleet.publish("notes.txt", &small, "h3", &fleet.h3));
    assert_eq!(fetch_as(&fleet, &fleet.h3, &for_h3).await.expect("h3 served"), small);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_refuses_a_revoked_source() {
    let fleet = Fleet::start(|state| state).await;
    let bytes = content(4096);
    let order = fleet.sign(&fleet.publish("notes.txt", &bytes, "h2", &fleet.h2));
    // The receiver's list holds the source's certificate: it does not talk to it.
    let revoked = RevocationList::new();
    revoked.revoke(&fleet.h1.fingerprint()).expect("revoke");
    let err = fleet.fetcher(revoked).fetch(&order).await.expect_err("revoked source");
    assert!(matches!(err, FetchError::Interrupted { .. }), "{err}");
    assert!(err.to_string().contains("Revoked"), "{err}");
    assert!(fleet.state.hooks.served_offsets.lock().expect("offsets").is_empty(), "nothing was asked for");
    assert_eq!(fs::read_dir(&fleet.target.sync).expect("ls").count(), 0, "nothing was written");
    // With the source in good standing the same order is carried out.
    let outcome = fleet.fetcher(RevocationList::new()).fetch(&order).await.expect("fetch");
    assert!(matches!(outcome, FetchOutcome::Written { .. }), "{outcome:?}");
    assert_eq!(fs::read(fleet.target.sync.join("notes.txt")).expect("received"), bytes);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificates_old_key_is_refused() {
    let fleet = Fleet::start(|state| state).await;
    let bytes = content(4096);
    // h2 was re-enrolled: the server issued it a new certificate for a new key, and
    // its orders name that one. The old certificate is still a valid fleet certificate
    // for "h2" (and not on the source's list: the server may have lost it, or the
    // source has not checked in since).
    let old = fleet.h2.clone();
    let new = Identity::issue(&fleet.ca, "h2");
    let order = fleet.sign(&fleet.publish("notes.txt", &bytes, "h2", &new));
    let status = fetch_as(&fleet, &old, &order).await.expect_err("old certificate");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(&new.fingerprint()), "{status:?}");
    assert!(fleet.state.hooks.served_offsets.lock().expect("offsets").is_empty());
    assert_eq!(fetch_as(&fleet, &new, &order).await.expect("new certificate"), bytes);

    // The other way round: the receiver's order names the source's new certificate,
    // and whoever answers at the source's address with its old one is not talked to.
    let h1_new = Identity::issue(&fleet.ca, "h1");
    let mut to_new_source = fleet.publish("notes.txt", &bytes, "h2", &fleet.h2);
    to_new_source.source_cert = h1_new.fingerprint();
    let err = fleet.fetcher(RevocationList::new()).fetch(&fleet.sign(&to_new_source)).await.expect_err("old source");
    assert!(err.to_string().contains("is not the one the server issued"), "{err}");
    assert_eq!(fs::read_dir(&fleet.target.sync).expect("ls").count(), 0, "nothing was written");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_order_with_another_certificate_for_the_same_name_is_refused() {
    let fleet = Fleet::start(|state| state).await;
    let bytes = content(4096);
    let order = fleet.sign(&fleet.publish("notes.txt", &bytes, "h2", &fleet.h2));
    // Another certificate for "h2" under the same CA (another key), presenting h2's
    // genuine order: refused, though the name matches.
    let impostor = Identity::issue(&fleet.ca, "h2");
    let status = fetch_as(&fleet, &impostor, &order).await.expect_err("impostor");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("certificate"), "{status:?}");
    // Another envoy's own certificate with h2's order: refused by name.
    let status = fetch_as(&fleet, &fleet.h3, &order).await.expect_err("h3 with h2's order");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(fleet.state.hooks.served_offsets.lock().expect("offsets").is_empty(), "nothing was served");
    assert_eq!(fetch_as(&fleet, &fleet.h2, &order).await.expect("h2 itself"), bytes);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holding_streams_it_never_reads_cannot_starve_another() {
    const PER_PEER: usize = 2;
    let timeout = Duration::from_secs(2);
    let fleet =
        Fleet::start(|state| state.with_max_transfers(4).with_max_per_peer(PER_PEER).with_write_timeout(timeout)).await;
    // Larger than every buffer on the way, so an unread stream stalls its sender.
    let big = content(24 * MIB);
    let hog_order = fleet.sign(&fleet.publish("big.bin", &big, "h2", &fleet.h2));
    let small = content(64 * 1024);
    let fair_order = fleet.sign(&fleet.publish("notes.txt", &small, "h3", &fleet.h3));

    // h2 opens eight streams on two connections, reads one chunk of each it gets, then
    // stops reading and keeps them all open.
    let mut held = Vec::new();
    let mut refused = 0;
    let mut clients = [fleet.connect(&fleet.h2).await.expect("h2"), fleet.connect(&fleet.h2).await.expect("h2")];
    for n in 0..8 {
        match clients[n % 2].fetch(request(&hog_order)).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                stream.message().await.expect("first chunk").expect("a chunk");
                held.push(stream);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("h2"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (PER_PEER, 8 - PER_PEER), "h2 gets its share and no more");
    assert_eq!(fleet.state.active_transfers_of("h2"), PER_PEER);

    // Meanwhile h3 is served in full.
    assert_eq!(fetch_as(&fleet, &fleet.h3, &fair_order).await.expect("h3 served"), small);

    // h2's stalled streams lose their slots after the write timeout, though it keeps
    // them open, and end with an error once it reads again.
    eventually("the stalled streams released their slots", || fleet.state.active_transfers_of("h2") == 0).await;
    assert_eq!(fleet.state.active_transfers(), 0);
    for mut stream in held {
        let mut received = 0;
        let status = loop {
            match stream.message().await {
                Ok(Some(chunk)) => received += chunk.data.len(),
                Ok(None) => panic!("a stalled stream delivered everything"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(received < big.len());
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_outlives_its_order_is_stopped() {
    let fleet = Fleet::start(|state| state).await;
    let big = content(24 * MIB);
    let mut order = fleet.publish("big.bin", &big, "h2", &fleet.h2);
    order.expires_at = now() + 2;
    let signed = fleet.sign(&order);
    let mut client = fleet.connect(&fleet.h2).await.expect("h2");
    let mut stream = client.fetch(request(&signed)).await.expect("served while valid").into_inner();
    let mut received = stream.message().await.expect("first chunk").expect("a chunk").data.len();
    // The receiver dawdles past the order's expiry: the source stops the transfer and
    // frees its slot without waiting for it (the write timeout is 30 s).
    eventually("the expired transfer released its slot", || fleet.state.active_transfers() == 0).await;
    let status = loop {
        match stream.message().await {
            Ok(Some(chunk)) => received += chunk.data.len(),
            Ok(None) => panic!("the whole file went out under an expired order"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
    assert!(received < big.len(), "stopped after {received} bytes");
    // And the same order is no good for a new request.
    let status = read_all(&mut client, &signed).await.expect_err("expired order");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    fleet.stop().await;
}
