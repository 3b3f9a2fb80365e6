//! End-to-end vigosync transfers between two envoys on 127.0.0.1: a real fleet CA,
//! real envoy certificates, mutual TLS, real files owned by an unused uid. Needs root
//! (files are chowned to the user, as the agent does).
//!
//! Each "host" is a directory with its own passwd file and `home/alice`, so the two
//! ends resolve alice to different uids, as separate machines would.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tonic::Code;
use vigo_pki::{EnvoyTlsKey, FleetCa, RevocationList, SigningKey};
use vigo_swarm::accounts::PasswdFile;
use vigo_swarm::fetch::{FetchError, FetchOutcome, Fetcher, connect_peer};
use vigo_swarm::hash::{HashCache, hex};
use vigo_swarm::order::{SignedOrder, TransferOrder};
use vigo_swarm::peer::{PeerServer, PeerState};
use vigo_swarm::source::VigosyncSource;
use vigo_swarm::tls::{ClientTls, client_tls, server_tls};

/// alice's uid on the source and on the receiver: unused on the test machine.
const ALICE_H1: u32 = 47_001;
const ALICE_H2: u32 = 47_002;
const MTIME: i64 = 1_700_000_000_123_456_789;
const MIB: usize = 1024 * 1024;

struct Host {
    passwd: PathBuf,
    home: PathBuf,
    sync: PathBuf,
    uid: u32,
}

impl Host {
    fn new(base: &Path, name: &str, uid: u32) -> Self {
        let root = base.join(name);
        let home = root.join("home/alice");
        fs::create_dir_all(&home).expect("home");
        chown(&home, uid);
        let sync = home.join("vigosync");
        fs::create_dir(&sync).expect("vigosync");
        chown(&sync, uid);
        let passwd = root.join("passwd");
        fs::write(&passwd, format!("root:x:0:0:root:/root:/bin/sh\nalice:x:{uid}:{uid}::{}:/bin/sh\n", home.display()))
            .expect("passwd");
        Self { passwd, home, sync, uid }
    }
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

struct Certs {
    ca: FleetCa,
    envoys: BTreeMap<String, (String, String)>,
}

impl Certs {
    fn new() -> Self {
        let ca = FleetCa::generate("swarm test fleet").expect("ca");
        let mut envoys = BTreeMap::new();
        for name in ["h1", "h2", "h3"] {
            let key = EnvoyTlsKey::generate().expect("key");
            let cert = ca.sign_envoy_csr(&key.csr(name).expect("csr"), name, 30).expect("cert");
            envoys.insert(name.to_string(), (cert, key.private_key_pem()));
        }
        Self { ca, envoys }
    }

    /// Envoy `name`'s TLS towards peers.
    fn tls(&self, name: &str) -> ClientTls {
        let (cert, key) = &self.envoys[name];
        client_tls(self.ca.cert_pem(), cert, key, RevocationList::new()).expect("client tls")
    }

    /// Envoy `name`'s TLS towards h1, the source.
    fn client(&self, name: &str) -> rustls::ClientConfig {
        self.tls(name).for_peer(&self.fingerprint("h1")).expect("pinned tls")
    }

    fn fingerprint(&self, name: &str) -> String {
        vigo_pki::tls::pem_fingerprint(&self.envoys[name].0).expect("fingerprint")
    }
}

/// h1 serves, h2 fetches; `rootdir` stands for a directory like `/etc`.
struct Fleet {
    _tmp: tempfile::TempDir,
    certs: Certs,
    server_key: SigningKey,
    h1: Host,
    h2: Host,
    rootdir: PathBuf,
    state: Arc<PeerState>,
    server: Option<PeerServer>,
    addr: SocketAddr,
}

impl Fleet {
    async fn start() -> Self {
        Self::start_with(|state| state).await
    }

    async fn start_with(configure: impl FnOnce(PeerState) -> PeerState) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let h1 = Host::new(tmp.path(), "h1", ALICE_H1);
        let h2 = Host::new(tmp.path(), "h2", ALICE_H2);
        let rootdir = tmp.path().join("rootdir");
        fs::create_dir(&rootdir).expect("rootdir");
        fs::write(rootdir.join("secret"), "root's data\n").expect("secret");
        fs::set_permissions(rootdir.join("secret"), fs::Permissions::from_mode(0o644)).expect("chmod");

        let certs = Certs::new();
        let server_key = SigningKey::generate();
        let source = VigosyncSource::new(Arc::new(PasswdFile::new(&h1.passwd)), HashCache::new());
        let state = Arc::new(configure(
            PeerState::new("h1", server_key.public_key(), RevocationList::new())
                .with_source("vigosync", Arc::new(source)),
        ));
        let (cert, key) = &certs.envoys["h1"];
        let tls = server_tls(certs.ca.cert_pem(), cert, key, RevocationList::new()).expect("server tls");
        let server =
            PeerServer::bind("127.0.0.1:0".parse().expect("addr"), tls, Arc::clone(&state)).await.expect("bind");
        let addr = server.local_addr();
        Self { _tmp: tmp, certs, server_key, h1, h2, rootdir, state, server: Some(server), addr }
    }

    fn fetcher(&self) -> Fetcher {
        Fetcher::new(
            "h2",
            self.server_key.public_key(),
            self.certs.tls("h2"),
            Arc::new(PasswdFile::new(&self.h2.passwd)),
            HashCache::new(),
        )
    }

    /// Puts `bytes` into alice's `~/vigosync/<name>` on h1 and returns the order for it.
    fn publish(&self, name: &str, bytes: &[u8]) -> TransferOrder {
        let path = self.h1.sync.join(name);
        fs::write(&path, bytes).expect("publish");
        chown(&path, self.h1.uid);
        let file = fs::File::options().write(true).open(&path).expect("open");
        file.set_modified(UNIX_EPOCH + Duration::from_nanos(MTIME as u64)).expect("mtime");
        self.order(name, bytes)
    }

    fn order(&self, name: &str, bytes: &[u8]) -> TransferOrder {
        TransferOrder {
            id: format!("order-{name}"),
            kind: "vigosync".into(),
            user: "alice".into(),
            name: name.into(),
            sha256: hex(&Sha256::digest(bytes)),
            size: bytes.len() as u64,
            mtime: MTIME,
            source: "h1".into(),
            source_addr: self.addr.to_string(),
            target: "h2".into(),
            source_cert: self.certs.fingerprint("h1"),
            target_cert: self.certs.fingerprint("h2"),
            expires_at: now() + 300,
        }
    }

    fn sign(&self, order: &TransferOrder) -> SignedOrder {
        SignedOrder::sign(order, &self.server_key)
    }

    fn served(&self) -> Vec<u64> {
        self.state.hooks.served_offsets.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Fetches as envoy `as_envoy` with a raw client, skipping the receiver's own checks.
    async fn raw_fetch(&self, as_envoy: &str, signed: &SignedOrder) -> Result<Vec<u8>, tonic::Status> {
        let mut client = connect_peer(Arc::new(self.certs.client(as_envoy)), "h1", self.addr).await.expect("connect");
        let request = vigo_proto::FetchRequest {
            order_payload: signed.payload.clone(),
            order_signature: signed.signature.clone(),
            offset: 0,
        };
        let mut stream = client.fetch(request).await?.into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("shutdown");
        }
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Deterministic, non-repeating content.
fn content(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256::digest(b"vigosync test content").to_vec();
    while out.len() < len {
        block = Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

/// Every entry below `dir` with its kind, owner, mode and content: what must never change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let meta = fs::symlink_metadata(&path).expect("meta");
        let body = if meta.is_file() { fs::read(&path).expect("read") } else { Vec::new() };
        out.push((path, meta.uid(), meta.mode(), body));
    }
    out.sort();
    out
}

fn assert_received(fleet: &Fleet, name: &str, bytes: &[u8]) {
    let path = fleet.h2.sync.join(name);
    let meta = fs::symlink_metadata(&path).expect("received file");
    assert!(meta.file_type().is_file(), "{name} is a regular file");
    assert_eq!(fs::read(&path).expect("read"), bytes, "{name} content");
    assert_eq!((meta.uid(), meta.gid()), (ALICE_H2, ALICE_H2), "{name} owned by alice as h2 knows her");
    assert_eq!(meta.mode() & 0o7777, 0o600, "{name} mode");
    assert_eq!(meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), MTIME, "{name} has the sender's mtime");
    let parts: Vec<_> = fs::read_dir(&fleet.h2.sync)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "no partial files left: {parts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_of_every_size_arrive_intact_owned_and_stamped() {
    let fleet = Fleet::start().await;
    let fetcher = fleet.fetcher();
    for (name, len) in [("empty", 0), ("small.txt", 4096), ("big.bin", 5 * MIB + 123)] {
        let bytes = content(len);
        let order = fleet.publish(name, &bytes);
        let outcome = fetcher.fetch(&fleet.sign(&order)).await.expect(name);
        let FetchOutcome::Written { fetched, resumed_from, .. } = outcome else { panic!("{name}: {outcome:?}") };
        assert_eq!((fetched, resumed_from), (len as u64, 0), "{name}");
        assert_received(&fleet, name, &bytes);
    }
    // The empty file needs no bytes, so only two transfers were served.
    assert_eq!(fleet.served(), [0, 0]);
    // Fetching the same order again finds the content in place.
    let order = fleet.order("small.txt", &content(4096));
    let again = fetcher.fetch(&fleet.sign(&order)).await.expect("again");
    assert!(matches!(again, FetchOutcome::AlreadyPresent { .. }), "{again:?}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_serves_only_valid_orders_to_their_target() {
    let fleet = Fleet::start().await;
    let bytes = content(4096);
    let good = fleet.publish("notes.txt", &bytes);
    assert_eq!(fleet.raw_fetch("h2", &fleet.sign(&good)).await.expect("valid order"), bytes);

    let other_key = SigningKey::generate();
    let with = |change: &dyn Fn(&mut TransferOrder)| {
        let mut order = good.clone();
        change(&mut order);
        fleet.sign(&order)
    };
    // alice links a root-owned file into her directory and gets an order for it.
    fs::hard_link(fleet.rootdir.join("secret"), fleet.h1.sync.join("stolen")).expect("hard link");
    let stolen = fleet.sign(&TransferOrder { name: "stolen".into(), ..fleet.order("stolen", b"root's data\n") });
    let mut tampered = fleet.sign(&good);
    tampered.payload = String::from_utf8(tampered.payload).expect("utf8").replace("\"h2\"", "\"h3\"").into_bytes();
    let cases: Vec<(&str, &str, SignedOrder, Code)> = vec![
        ("signed by another key", "h2", SignedOrder::sign(&good, &other_key), Code::PermissionDenied),
        ("tampered after signing", "h3", tampered, Code::PermissionDenied),
        ("for another target", "h2", with(&|o| o.target = "h3".into()), Code::PermissionDenied),
        ("expired", "h2", with(&|o| o.expires_at = now() - 1), Code::PermissionDenied),
        ("for another source", "h2", with(&|o| o.source = "h9".into()), Code::PermissionDenied),
        ("asked by another envoy", "h3", fleet.sign(&good), Code::PermissionDenied),
        ("unknown kind", "h2", with(&|o| o.kind = "lockbox".into()), Code::FailedPrecondition),
        ("hash of another version", "h2", with(&|o| o.sha256 = "ab".repeat(32)), Code::FailedPrecondition),
        ("no such file", "h2", with(&|o| o.name = "absent".into()), Code::NotFound),
        ("no such user", "h2", with(&|o| o.user = "mallory".into()), Code::NotFound),
        ("root's files", "h2", with(&|o| o.user = "root".into()), Code::InvalidArgument),
        ("path in the name", "h2", with(&|o| o.name = "../../passwd".into()), Code::InvalidArgument),
        ("someone else's file", "h2", stolen, Code::FailedPrecondition),
    ];
    for (case, envoy, signed, code) in cases {
        let status = fleet.raw_fetch(envoy, &signed).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
    }
    assert_eq!(fleet.served(), [0], "nothing but the valid order was served");

    // A client without a fleet certificate does not get past the handshake.
    let stranger_ca = FleetCa::generate("another fleet").expect("ca");
    let key = EnvoyTlsKey::generate().expect("key");
    let cert = stranger_ca.sign_envoy_csr(&key.csr("h2").expect("csr"), "h2", 30).expect("cert");
    let foreign = client_tls(fleet.certs.ca.cert_pem(), &cert, &key.private_key_pem(), RevocationList::new())
        .expect("tls")
        .for_peer(&fleet.certs.fingerprint("h1"))
        .expect("pinned");
    let refused = match connect_peer(Arc::new(foreign), "h1", fleet.addr).await {
        Err(_) => true,
        Ok(mut client) => {
            let request = vigo_proto::FetchRequest {
                order_payload: fleet.sign(&good).payload,
                order_signature: fleet.sign(&good).signature,
                offset: 0,
            };
            client.fetch(request).await.is_err()
        }
    };
    assert!(refused, "a certificate from another CA is refused");
    let anonymous = vigo_pki::client_config(fleet.certs.ca.cert_pem(), None).expect("tls");
    let refused = match connect_peer(Arc::new(anonymous), "h1", fleet.addr).await {
        Err(_) => true,
        Ok(mut client) => client
            .fetch(vigo_proto::FetchRequest {
                order_payload: fleet.sign(&good).payload,
                order_signature: fleet.sign(&good).signature,
                offset: 0,
            })
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
    // The receiver must be talking to the order's source: h1's certificate is not h3's.
    let err = connect_peer(Arc::new(fleet.certs.client("h2")), "h3", fleet.addr).await.expect_err("wrong name");
    assert!(err.to_string().contains("h3"), "{err}");
    assert_eq!(fleet.served(), [0]);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_checks_orders_before_asking() {
    let fleet = Fleet::start().await;
    let fetcher = fleet.fetcher();
    let good = fleet.publish("notes.txt", b"hello");
    let with = |change: &dyn Fn(&mut TransferOrder)| {
        let mut order = good.clone();
        change(&mut order);
        fleet.sign(&order)
    };
    let other_key = SigningKey::generate();
    let cases: Vec<(&str, SignedOrder, &str)> = vec![
        ("bad signature", SignedOrder::sign(&good, &other_key), "signature"),
        ("expired", with(&|o| o.expires_at = now() - 1), "expired"),
        ("for h3", with(&|o| o.target = "h3".into()), "names target h3"),
        ("slash", with(&|o| o.name = "a/b".into()), "not a vigosync file name"),
        ("dotdot", with(&|o| o.name = "..".into()), "not a vigosync file name"),
        ("nul", with(&|o| o.name = "a\0b".into()), "not a vigosync file name"),
        ("256 bytes", with(&|o| o.name = "x".repeat(256)), "not a vigosync file name"),
        ("hidden", with(&|o| o.name = ".bashrc".into()), "not a vigosync file name"),
        ("too big", with(&|o| o.size = 100 * 1024 * 1024 + 1), "limit"),
        ("bad hash", with(&|o| o.sha256 = "AB".repeat(32)), "SHA-256"),
        ("other kind", with(&|o| o.kind = "lockbox".into()), "kind"),
        ("unknown user", with(&|o| o.user = "mallory".into()), "does not exist"),
        ("root", with(&|o| o.user = "root".into()), "root"),
    ];
    for (case, signed, needle) in cases {
        let err = fetcher.fetch(&signed).await.expect_err(case);
        assert!(err.to_string().contains(needle), "{case}: {err}");
    }
    assert!(fleet.served().is_empty(), "nothing was asked for");
    assert_eq!(fs::read_dir(&fleet.h2.sync).expect("ls").count(), 0, "nothing was written");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_at_the_source_is_not_served() {
    let fleet = Fleet::start().await;
    let order = fleet.publish("notes.txt", b"version one");
    fs::write(fleet.h1.sync.join("notes.txt"), b"version two").expect("edit");
    let err = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect_err("changed");
    assert!(matches!(err, FetchError::Refused { code: Code::FailedPrecondition, .. }), "{err}");
    assert_eq!(fs::read_dir(&fleet.h2.sync).expect("ls").count(), 0, "nothing written, no part left");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_chunk_is_detected_and_fetched_again() {
    let fleet = Fleet::start().await;
    let bytes = content(2 * MIB);
    let order = fleet.publish("data.bin", &bytes);
    *fleet.state.hooks.corrupt_at.lock().expect("hook") = Some(MIB as u64);
    let outcome = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect("fetch");
    let FetchOutcome::Written { fetched, attempts, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!((fetched, attempts), (bytes.len() as u64, 2));
    assert_eq!(fleet.served(), [0, MIB as u64], "the second request starts at the damaged chunk");
    assert_received(&fleet, "data.bin", &bytes);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_transfer_resumes_in_the_same_call() {
    let fleet = Fleet::start().await;
    let bytes = content(3 * MIB);
    let order = fleet.publish("data.bin", &bytes);
    *fleet.state.hooks.cut_after.lock().expect("hook") = Some(MIB as u64);
    let outcome = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect("fetch");
    assert!(matches!(outcome, FetchOutcome::Written { attempts: 2, .. }), "{outcome:?}");
    assert_eq!(fleet.served(), [0, MIB as u64]);
    assert_received(&fleet, "data.bin", &bytes);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_transfer_resumes_from_its_part_file_later() {
    let fleet = Fleet::start().await;
    let bytes = content(3 * MIB);
    let order = fleet.publish("data.bin", &bytes);
    let signed = fleet.sign(&order);
    *fleet.state.hooks.cut_after.lock().expect("hook") = Some(MIB as u64);
    let err = fleet.fetcher().with_max_attempts(1).fetch(&signed).await.expect_err("cut");
    assert!(matches!(err, FetchError::Interrupted { offset, .. } if offset == MIB as u64), "{err}");
    let part = fleet.h2.sync.join(format!(".vigosync-{}.part", &order.sha256[..16]));
    let meta = fs::symlink_metadata(&part).expect("part kept");
    assert_eq!((meta.len(), meta.uid(), meta.mode() & 0o777), (MIB as u64, ALICE_H2, 0o600));
    assert!(!fleet.h2.sync.join("data.bin").exists(), "nothing at the name until verified");

    let outcome = fleet.fetcher().fetch(&signed).await.expect("resume");
    let FetchOutcome::Written { fetched, resumed_from, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!((resumed_from, fetched), (MIB as u64, 2 * MIB as u64));
    assert_eq!(fleet.served(), [0, MIB as u64]);
    assert_received(&fleet, "data.bin", &bytes);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_part_file_is_caught_by_the_whole_file_hash() {
    let fleet = Fleet::start().await;
    let bytes = content(MIB);
    let order = fleet.publish("data.bin", &bytes);
    let part = fleet.h2.sync.join(format!(".vigosync-{}.part", &order.sha256[..16]));
    fs::write(&part, vec![0u8; 1000]).expect("garbage part");
    chown(&part, ALICE_H2);
    let err = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect_err("mismatch");
    assert!(matches!(err, FetchError::HashMismatch { .. }), "{err}");
    assert!(!part.exists(), "the bad part is dropped");
    let outcome = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect("clean retry");
    assert!(matches!(outcome, FetchOutcome::Written { resumed_from: 0, .. }), "{outcome:?}");
    assert_received(&fleet, "data.bin", &bytes);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_and_equal_local_versions_win() {
    let fleet = Fleet::start().await;
    let fetcher = fleet.fetcher();
    let order = fleet.publish("notes.txt", b"older, arriving late");
    let local = fleet.h2.sync.join("notes.txt");
    fs::write(&local, b"newer local edit").expect("local");
    chown(&local, ALICE_H2);
    let newer = UNIX_EPOCH + Duration::from_nanos(MTIME as u64 + 1_000_000_000);
    fs::File::options().write(true).open(&local).expect("open").set_modified(newer).expect("mtime");
    let outcome = fetcher.fetch(&fleet.sign(&order)).await.expect("fetch");
    assert!(matches!(outcome, FetchOutcome::Superseded { .. }), "{outcome:?}");
    assert_eq!(fs::read(&local).expect("read"), b"newer local edit");
    assert!(fleet.served().is_empty(), "a superseded order transfers nothing");

    // Same content with an older stamp: nothing transferred, the stamp moves forward.
    fs::write(&local, b"older, arriving late").expect("same content");
    let older = UNIX_EPOCH + Duration::from_nanos(MTIME as u64 - 1_000_000_000);
    fs::File::options().write(true).open(&local).expect("open").set_modified(older).expect("mtime");
    let outcome = fetcher.fetch(&fleet.sign(&order)).await.expect("fetch");
    assert!(matches!(outcome, FetchOutcome::AlreadyPresent { .. }), "{outcome:?}");
    let meta = fs::metadata(&local).expect("meta");
    assert_eq!(meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), MTIME);
    assert!(fleet.served().is_empty());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_version_arriving_during_the_transfer_wins() {
    let fleet = Fleet::start().await;
    let bytes = content(2 * MIB);
    let order = fleet.publish("data.bin", &bytes);
    let local = fleet.h2.sync.join("data.bin");
    let writer = local.clone();
    *fleet.state.hooks.after_first_chunk.lock().expect("hook") = Some(Box::new(move || {
        fs::write(&writer, b"saved by the user meanwhile").expect("local edit");
        chown(&writer, ALICE_H2);
    }));
    let outcome = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect("fetch");
    assert!(matches!(outcome, FetchOutcome::Superseded { .. }), "{outcome:?}");
    assert_eq!(fs::read(&local).expect("read"), b"saved by the user meanwhile");
    assert_eq!(fs::read_dir(&fleet.h2.sync).expect("ls").count(), 1, "the part is dropped");
    fleet.stop().await;
}

/// A local user's attempts to turn the receiver against the system: the root-owned
/// directory and everything in it stay exactly as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_attacks_never_write_outside_the_users_directory() {
    type Attack = Box<dyn Fn(&Fleet, &TransferOrder)>;
    let part_of = |order: &TransferOrder| format!(".vigosync-{}.part", &order.sha256[..16]);
    let cases: Vec<(&str, Attack, &str)> = vec![
        (
            "vigosync is a symlink to a root directory",
            Box::new(|f, _| {
                fs::remove_dir(&f.h2.sync).expect("rm");
                symlink(&f.rootdir, &f.h2.sync).expect("symlink");
            }),
            "refused: symlink",
        ),
        ("vigosync belongs to someone else", Box::new(|f, _| chown(&f.h2.sync, 0)), "refused: owned by uid 0"),
        ("vigosync missing", Box::new(|f, _| fs::remove_dir(&f.h2.sync).expect("rm")), "refused: has not opted in"),
        (
            "target is a symlink to a root-owned file",
            Box::new(|f, o| symlink(f.rootdir.join("secret"), f.h2.sync.join(&o.name)).expect("symlink")),
            "written",
        ),
        (
            "target is a FIFO",
            Box::new(|f, o| {
                nix::unistd::mkfifo(&f.h2.sync.join(&o.name), nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .expect("fifo")
            }),
            "written",
        ),
        (
            "target is a hard link to a root-owned file",
            Box::new(|f, o| fs::hard_link(f.rootdir.join("secret"), f.h2.sync.join(&o.name)).expect("link")),
            "written",
        ),
        (
            "target is a directory",
            Box::new(|f, o| fs::create_dir(f.h2.sync.join(&o.name)).expect("dir")),
            "refused: is a directory",
        ),
        (
            "part file is a symlink to a root-owned file",
            Box::new(move |f, o| symlink(f.rootdir.join("secret"), f.h2.sync.join(part_of(o))).expect("symlink")),
            "written",
        ),
        (
            "part file is a hard link to a root-owned file",
            Box::new(move |f, o| fs::hard_link(f.rootdir.join("secret"), f.h2.sync.join(part_of(o))).expect("link")),
            "written",
        ),
        (
            "part file is a FIFO",
            Box::new(move |f, o| {
                nix::unistd::mkfifo(&f.h2.sync.join(part_of(o)), nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .expect("fifo")
            }),
            "written",
        ),
    ];
    let bytes = content(300 * 1024);
    for (case, attack, expected) in cases {
        let fleet = Fleet::start().await;
        let order = fleet.publish("notes.txt", &bytes);
        let before = snapshot(&fleet.rootdir);
        attack(&fleet, &order);
        let got = match fleet.fetcher().fetch(&fleet.sign(&order)).await {
            Ok(FetchOutcome::Written { .. }) => "written".to_string(),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("refused: {e}"),
        };
        assert!(got.starts_with("refused") == expected.starts_with("refused"), "{case}: {got}");
        assert!(got.contains(expected.trim_start_matches("refused: ")), "{case}: {got}");
        assert_eq!(snapshot(&fleet.rootdir), before, "{case}: the root-owned directory is untouched");
        if expected == "written" {
            assert_received(&fleet, "notes.txt", &bytes);
        }
        fleet.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_vigosync_for_a_symlink_mid_transfer_redirects_nothing() {
    let fleet = Fleet::start().await;
    let bytes = content(2 * MIB);
    let order = fleet.publish("data.bin", &bytes);
    let before = snapshot(&fleet.rootdir);
    let (sync, moved, rootdir) = (fleet.h2.sync.clone(), fleet.h2.home.join("moved"), fleet.rootdir.clone());
    *fleet.state.hooks.after_first_chunk.lock().expect("hook") = Some(Box::new(move || {
        fs::rename(&sync, &moved).expect("move away");
        symlink(&rootdir, &sync).expect("symlink");
    }));
    let outcome = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect("fetch");
    assert!(matches!(outcome, FetchOutcome::Written { .. }), "{outcome:?}");
    assert_eq!(snapshot(&fleet.rootdir), before, "nothing reached the symlink's target");
    // The file landed in the directory that was opened: the user's own, wherever it moved.
    let landed = fleet.h2.home.join("moved/data.bin");
    assert_eq!(fs::read(&landed).expect("landed"), bytes);
    assert_eq!(fs::metadata(&landed).expect("meta").uid(), ALICE_H2);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_beyond_the_limit_are_told_to_wait() {
    let fleet = Fleet::start_with(|state| state.with_max_transfers(1)).await;
    // Large enough that an unread stream fills every buffer and holds its slot.
    let bytes = content(24 * MIB);
    let order = fleet.publish("big.bin", &bytes);
    let signed = fleet.sign(&order);
    let mut client = connect_peer(Arc::new(fleet.certs.client("h2")), "h1", fleet.addr).await.expect("connect");
    let request = || vigo_proto::FetchRequest {
        order_payload: signed.payload.clone(),
        order_signature: signed.signature.clone(),
        offset: 0,
    };
    let mut held = client.fetch(request()).await.expect("first transfer").into_inner();
    held.message().await.expect("first chunk").expect("a chunk");
    assert_eq!(fleet.state.active_transfers(), 1, "the held transfer is counted");
    let status = fleet.raw_fetch("h2", &signed).await.expect_err("second transfer");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    drop(held);
    // Once the first transfer is gone, its slot frees up.
    let mut served = Err(tonic::Status::unknown("not tried"));
    for _ in 0..50 {
        served = fleet.raw_fetch("h2", &signed).await;
        if served.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.expect("slot freed").len(), bytes.len());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting() {
    let fleet = Fleet::start().await;
    let addr = fleet.addr;
    let tls = Arc::new(fleet.certs.client("h2"));
    fleet.stop().await;
    // The accept loop closes its listener as soon as it notices the server is gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = connect_peer(tls, "h1", addr).await.expect_err("closed");
    assert!(matches!(err, FetchError::Connect { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_partial_files_are_swept() {
    use vigo_swarm::accounts::Accounts as _;
    let fleet = Fleet::start().await;
    let alice = PasswdFile::new(&fleet.h2.passwd).lookup("alice").expect("passwd").expect("alice");
    let fresh = put_part(&fleet, "0000000000000000", Duration::ZERO);
    let stale = put_part(&fleet, "1111111111111111", Duration::from_secs(7200));
    let other = fleet.h2.sync.join("keep.txt");
    fs::write(&other, "x").expect("keep");
    let fetcher = fleet.fetcher();
    assert_eq!(fetcher.remove_stale_parts(&alice, Duration::from_secs(3600)).expect("sweep"), 1);
    assert!(fresh.exists() && other.exists() && !stale.exists());
    fleet.stop().await;
}

fn put_part(fleet: &Fleet, hex16: &str, age: Duration) -> PathBuf {
    let path = fleet.h2.sync.join(format!(".vigosync-{hex16}.part"));
    fs::write(&path, "partial").expect("part");
    let file = fs::File::options().write(true).open(&path).expect("open");
    file.set_modified(SystemTime::now() - age).expect("mtime");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_file_over_the_limit_is_still_a_version() {
    let fleet = Fleet::start().await;
    let order = fleet.publish("video.mkv", b"small older copy");
    let local = fleet.h2.sync.join("video.mkv");
    let file = fs::File::create(&local).expect("local");
    file.set_len(100 * 1024 * 1024 + 1).expect("sparse");
    chown(&local, ALICE_H2);
    let newer = UNIX_EPOCH + Duration::from_nanos(MTIME as u64 + 1_000_000_000);
    file.set_modified(newer).expect("mtime");
    let outcome = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect("fetch");
    assert!(matches!(outcome, FetchOutcome::Superseded { .. }), "{outcome:?}");
    assert_eq!(fs::metadata(&local).expect("meta").len(), 100 * 1024 * 1024 + 1, "the big file stays");

    let older = UNIX_EPOCH + Duration::from_nanos(MTIME as u64 - 1_000_000_000);
    file.set_modified(older).expect("mtime");
    let outcome = fleet.fetcher().fetch(&fleet.sign(&order)).await.expect("fetch");
    assert!(matches!(outcome, FetchOutcome::Written { .. }), "{outcome:?}");
    assert_eq!(fs::read(&local).expect("read"), b"small older copy");
    fleet.stop().await;
}

/// A hook that runs `f` the first time the receiver is about to take the name.
fn once(f: impl Fn() + Send + Sync + 'static) -> vigo_swarm::fetch::ReplaceHook {
    let fired = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move || {
        if !fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            f();
        }
    })
}

fn part_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

/// The user saves between the receiver's last look at the name and its rename (made
/// deterministic by the replace hook): in place, editor-style (temp + rename), or as
/// a new file where there was none. Her save survives every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_between_the_last_check_and_the_rename_survives() {
    let fleet = Fleet::start().await;
    let older = UNIX_EPOCH + Duration::from_nanos(MTIME as u64 - 5_000_000_000);
    type Save = fn(&Path);
    let in_place: Save = |path| {
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("open")
            .write_all_at(b"user's save", 0)
            .expect("save");
    };
    let editor: Save = |path| {
        let tmp = path.with_file_name(".notes.swp");
        fs::write(&tmp, b"user's save").expect("temp");
        chown(&tmp, ALICE_H2);
        fs::rename(&tmp, path).expect("editor rename");
    };
    let create: Save = |path| {
        fs::write(path, b"user's save").expect("new file");
        chown(path, ALICE_H2);
    };
    for (what, existed, save, conflict) in [
        ("in place", true, in_place, true),
        ("editor rename", true, editor, true),
        ("new file where there was none", false, create, false),
    ] {
        let name = format!("notes-{}.txt", what.len());
        let order = fleet.publish(&name, b"incoming, older than the user's save");
        let local = fleet.h2.sync.join(&name);
        if existed {
            fs::write(&local, b"old local").expect("local");
            chown(&local, ALICE_H2);
            fs::File::options().write(true).open(&local).expect("open").set_modified(older).expect("mtime");
        }
        let target = local.clone();
        let fetcher = fleet.fetcher().with_replace_hook(once(move || save(&target)));
        let outcome = fetcher.fetch(&fleet.sign(&order)).await.expect(what);
        if conflict {
            assert!(matches!(outcome, FetchOutcome::Conflict { .. }), "{what}: {outcome:?}");
        } else {
            // The name filled before the rename: decided again, and her file is newer.
            assert!(matches!(outcome, FetchOutcome::Superseded { .. }), "{what}: {outcome:?}");
        }
        assert_eq!(fs::read(&local).expect("read"), b"user's save", "{what}: the user's save is kept");
        assert_eq!(fs::symlink_metadata(&local).expect("meta").uid(), ALICE_H2, "{what}");
        assert!(part_files(&fleet.h2.sync).is_empty(), "{what}: the received copy is dropped");
    }
    // The same hook with no save in the window: the older local file is replaced.
    let order = fleet.publish("plain.txt", b"incoming");
    let local = fleet.h2.sync.join("plain.txt");
    fs::write(&local, b"old local").expect("local");
    chown(&local, ALICE_H2);
    fs::File::options().write(true).open(&local).expect("open").set_modified(older).expect("mtime");
    let fetcher = fleet.fetcher().with_replace_hook(once(|| {}));
    let outcome = fetcher.fetch(&fleet.sign(&order)).await.expect("plain");
    assert!(matches!(outcome, FetchOutcome::Written { .. }), "{outcome:?}");
    assert_eq!(fs::read(&local).expect("read"), b"incoming");
    assert!(part_files(&fleet.h2.sync).is_empty());
    fleet.stop().await;
}

/// A receive that would eat into the free-space headroom is refused before a byte is
/// fetched; with room left it goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_would_leave_too_little_free_space_is_refused() {
    use vigo_swarm::fetch::Headroom;
    let fleet = Fleet::start().await;
    let bytes = content(MIB);
    let order = fleet.publish("big.bin", &bytes);
    let vfs = nix::sys::statvfs::statvfs(&fleet.h2.sync).expect("statvfs");
    let available = vfs.blocks_available() * vfs.fragment_size();
    for headroom in [Headroom { min_bytes: available, percent: 0 }, Headroom { min_bytes: 0, percent: 100 }] {
        let err = fleet.fetcher().with_headroom(headroom).fetch(&fleet.sign(&order)).await.expect_err("refused");
        let FetchError::NoSpace { needed, .. } = &err else { panic!("{headroom:?}: {err}") };
        assert_eq!(*needed, bytes.len() as u64);
        assert!(err.to_string().contains("headroom") && err.to_string().contains("big.bin"), "{err}");
        assert!(!fleet.h2.sync.join("big.bin").exists());
        assert!(part_files(&fleet.h2.sync).is_empty(), "no partial file is left");
    }
    assert!(fleet.served().is_empty(), "nothing was fetched");
    let room = Headroom { min_bytes: 0, percent: 0 };
    let outcome = fleet.fetcher().with_headroom(room).fetch(&fleet.sign(&order)).await.expect("room enough");
    assert!(matches!(outcome, FetchOutcome::Written { .. }), "{outcome:?}");
    assert_received(&fleet, "big.bin", &bytes);
    // The default keeps at least a GiB free.
    assert_eq!(Headroom::default(), Headroom { min_bytes: 1 << 30, percent: 5 });
    fleet.stop().await;
}

/// Many orders at once: the receiver runs only its bounded number of transfers, the
/// rest wait, and all of them land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_runs_a_bounded_number_of_transfers_at_once() {
    let fleet = Arc::new(Fleet::start().await);
    let fetcher = Arc::new(fleet.fetcher().with_max_concurrent(2));
    let mut tasks = Vec::new();
    let mut files = Vec::new();
    for i in 0..6 {
        let name = format!("f{i}.bin");
        let bytes = content(6 * MIB + i);
        let signed = fleet.sign(&fleet.publish(&name, &bytes));
        files.push((name, bytes));
        let fetcher = Arc::clone(&fetcher);
        tasks.push(tokio::spawn(async move { fetcher.fetch(&signed).await }));
    }
    let mut most = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        most = most.max(fleet.state.active_transfers());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        let outcome = t.await.expect("task").expect("fetch");
        assert!(matches!(outcome, FetchOutcome::Written { .. }), "{outcome:?}");
    }
    assert!(most <= 2, "{most} transfers ran at once");
    assert!(most >= 1, "transfers were observed");
    for (name, bytes) in &files {
        assert_received(&fleet, name, bytes);
    }
    Arc::try_unwrap(fleet).ok().expect("sole owner").stop().await;
}
