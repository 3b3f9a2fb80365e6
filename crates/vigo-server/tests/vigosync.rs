//! End-to-end vigosync: real `vigo` daemons in namespace hosts with real users whose
//! uids differ per host, syncing through the real swarm transport, coordinated by a
//! real `vigosrv`.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::time::Duration;

mod common;

use common::{World, bin, stderr};
use vigo_testkit::{Host, Process, wait_for};

/// How long a file may take to reach another envoy here (a check-in cycle is 15 s;
/// the watch and the server's push make it much faster, but tests never time it).
const LANDS: Duration = Duration::from_secs(30);
/// The same while another user's flood keeps both daemons busy: early check-ins are
/// spaced out (each still checks in once an interval) and the receiver works through
/// a thousand other orders, taking turns between users.
const FLOODED_LANDS: Duration = Duration::from_secs(300);

struct Sync {
    w: World,
    hosts: Vec<(Host, Process)>,
}

/// (user, uid) per host: the same user has a different uid (and group) on each.
const USERS: &[(&str, &[(&str, u32)])] = &[
    ("h1", &[("alice", 2001), ("bob", 3001)]),
    ("h2", &[("alice", 2102), ("carol", 4002)]),
    ("h3", &[("alice", 2203), ("bob", 3203)]),
    // alice exists on h4 but has not opted in.
    ("h4", &[("alice", 2304)]),
];

impl Sync {
    fn new(label: &str) -> Self {
        let w = World::new(label);
        let mut hosts = Vec::new();
        for (name, users) in USERS {
            let host = w.enrolled_agent(name);
            for (user, uid) in *users {
                host.add_user(user, *uid, *uid).expect("add user");
                if *name != "h4" {
                    let dir = host.path(format!("/home/{user}/vigosync"));
                    std::fs::create_dir(&dir).expect("vigosync dir");
                    std::os::unix::fs::chown(&dir, Some(*uid), Some(*uid)).expect("chown vigosync");
                }
            }
            let daemon = host.spawn(bin("vigo"), ["run"]).expect("start vigo run");
            hosts.push((host, daemon));
        }
        for (host, _) in &hosts {
            host.wait_tcp(vigo_swarm::SWARM_PORT, Duration::from_secs(30)).expect("peer server up");
        }
        Sync { w, hosts }
    }

    fn host(&self, name: &str) -> &Host {
        &self.hosts.iter().find(|(h, _)| h.name() == name).expect("host").0
    }

    fn uid(host: &str, user: &str) -> u32 {
        let (_, users) = USERS.iter().find(|(h, _)| *h == host).expect("host");
        users.iter().find(|(u, _)| *u == user).expect("user").1
    }

    fn path(&self, host: &str, user: &str, name: &str) -> PathBuf {
        self.host(host).path(format!("/home/{user}/vigosync/{name}"))
    }

    /// Writes a file as the user would: hidden temp name, owned by the user, mtime
    /// set, then renamed into place (so it appears whole).
    fn put(&self, host: &str, user: &str, name: &str, content: &[u8], mtime: i64) {
        let uid = Self::uid(host, user);
        let dest = self.path(host, user, name);
        let tmp = dest.with_file_name(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write");
        std::os::unix::fs::chown(&tmp, Some(uid), Some(uid)).expect("chown");
        set_mtime(&tmp, mtime);
        std::fs::rename(&tmp, &dest).expect("rename into place");
    }

    fn read(&self, host: &str, user: &str, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(host, user, name)).ok()
    }

    fn wait_content(&self, host: &str, user: &str, name: &str, content: &[u8]) {
        let what = format!("{user}/{name} on {host}");
        let r = wait_for(&what, LANDS, || self.read(host, user, name).as_deref() == Some(content));
        if r.is_err() {
            panic!("{what} never arrived\n{}", self.logs());
        }
    }

    fn logs(&self) -> String {
        let mut out = format!("--- server\n{}", self.w.server_log());
        for (h, p) in &self.hosts {
            out.push_str(&format!("\n--- {}\n{}", h.name(), p.log()));
        }
        out
    }

    fn status(&self, host: &str) -> serde_json::Value {
        let out = self.host(host).run(bin("vigo"), ["status", "--json"]).expect("vigo status");
        assert!(out.status.success(), "vigo status: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// Gives a delivery that should not happen time to happen (early check-ins take
    /// well under a second here) before asserting its absence.
    fn settle(&self) {
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn set_mtime(path: &std::path::Path, mtime_ns: i64) {
    let f = std::fs::File::options().write(true).open(path).expect("open for times");
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(mtime_ns).expect("positive"));
    f.set_times(std::fs::FileTimes::new().set_modified(t)).expect("set mtime");
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

const T0: i64 = 1_750_000_000_123_456_789;

#[test]
fn files_reach_the_same_user_everywhere_with_local_ownership_and_the_senders_mtime() {
    let s = Sync::new("vsync-basic");
    s.put("h1", "alice", "notes.txt", b"alice v1\n", T0);
    s.put("h1", "bob", "bob.txt", b"bob's\n", T0);
    for host in ["h2", "h3"] {
        s.wait_content(host, "alice", "notes.txt", b"alice v1\n");
        let meta = std::fs::symlink_metadata(s.path(host, "alice", "notes.txt")).expect("meta");
        let uid = Sync::uid(host, "alice");
        assert_eq!((meta.uid(), meta.gid()), (uid, uid), "{host}: owned by alice as {host} defines her");
        assert_eq!(mtime_ns(&meta), T0, "{host}: the sender's mtime, to the nanosecond");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o022, 0, "{host}: not group/world writable");
    }
    s.wait_content("h3", "bob", "bob.txt", b"bob's\n");
    s.settle();
    // bob does not exist on h2; alice on h4 has not opted in; carol has nothing.
    assert!(!s.host("h2").path("/home/bob").exists(), "nothing written for bob on h2");
    assert!(!s.host("h4").path("/home/alice/vigosync").exists(), "h4's opt-in dir is never created");
    assert_eq!(std::fs::read_dir(s.host("h2").path("/home/carol/vigosync")).expect("carol").count(), 0);

    // The fleet-wide view names every holder.
    let view: serde_json::Value =
        serde_json::from_str(&s.w.cli_ok(&["swarm", "sync", "status", "--user", "alice", "--json"])).expect("json");
    let text = view.to_string();
    for host in ["h1", "h2", "h3"] {
        assert!(text.contains(host), "{host} in the sync view: {text}");
    }
    assert!(!text.contains("h4"), "h4 holds nothing: {text}");

    // A newer version on h2 wins everywhere.
    s.put("h2", "alice", "notes.txt", b"alice v2 from h2\n", T0 + 10_000_000_000);
    for host in ["h1", "h3"] {
        s.wait_content(host, "alice", "notes.txt", b"alice v2 from h2\n");
    }
    // An older copy written late on h3 is replaced by the newer one, never spread.
    s.put("h3", "alice", "notes.txt", b"stale\n", T0 + 5_000_000_000);
    s.wait_content("h3", "alice", "notes.txt", b"alice v2 from h2\n");
    for host in ["h1", "h2"] {
        assert_eq!(s.read(host, "alice", "notes.txt").as_deref(), Some(&b"alice v2 from h2\n"[..]), "{host}");
    }

    // A delete stays local and is not undone.
    std::fs::remove_file(s.path("h1", "alice", "notes.txt")).expect("delete on h1");
    s.put("h1", "alice", "other.txt", b"wakes everyone\n", T0);
    s.wait_content("h2", "alice", "other.txt", b"wakes everyone\n");
    s.wait_content("h3", "alice", "other.txt", b"wakes everyone\n");
    s.settle();
    assert!(s.read("h1", "alice", "notes.txt").is_none(), "h1 does not get its deleted file back\n{}", s.logs());
    for host in ["h2", "h3"] {
        assert!(s.read(host, "alice", "notes.txt").is_some(), "{host} keeps its copy");
    }
    // …until someone changes it elsewhere.
    s.put("h3", "alice", "notes.txt", b"alice v3 from h3\n", T0 + 20_000_000_000);
    s.wait_content("h1", "alice", "notes.txt", b"alice v3 from h3\n");
    s.wait_content("h2", "alice", "notes.txt", b"alice v3 from h3\n");
}

#[test]
fn unsyncable_entries_are_skipped_and_reported_with_their_reason() {
    let s = Sync::new("vsync-skip");
    let dir = s.host("h1").path("/home/alice/vigosync");
    let uid = Sync::uid("h1", "alice");
    std::fs::write(dir.join(".hidden"), b"dot").expect("dotfile");
    std::fs::create_dir(dir.join("subdir")).expect("subdir");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).expect("symlink");
    let big = std::fs::File::create(dir.join("big.bin")).expect("big");
    big.set_len(vigo_swarm::sync::MAX_FILE_SIZE + 1).expect("sparse 100 MB + 1");
    for name in [".hidden", "subdir", "big.bin"] {
        std::os::unix::fs::chown(dir.join(name), Some(uid), Some(uid)).expect("chown");
    }
    s.put("h1", "alice", "ok.txt", b"fine\n", T0);
    s.wait_content("h2", "alice", "ok.txt", b"fine\n");
    let status = s.status("h1");
    let skipped = &status["vigosync"]["users"]["alice"]["skipped"];
    let reasons: Vec<(String, String)> = skipped
        .as_array()
        .expect("skipped list")
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or("").to_string(), e["reason"].as_str().unwrap_or("").to_string()))
        .collect();
    for (name, reason) in [(".hidden", "dotfile"), ("subdir", "directory"), ("link", "symlink"), ("big.bin", "too_big")]
    {
        assert!(reasons.contains(&(name.to_string(), reason.to_string())), "{name}: {reason} in {reasons:?}");
    }
    assert_eq!(status["vigosync"]["users"]["alice"]["files"], 1);
    for name in [".hidden", "subdir", "link", "big.bin"] {
        assert!(std::fs::symlink_metadata(s.path("h2", "alice", name)).is_err(), "{name} never leaves h1");
    }
    // People see it too.
    let out = s.host("h1").run(bin("vigo"), ["status"]).expect("vigo status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("skipped big.bin (too_big)"), "{text}");
}

#[test]
fn a_local_user_cannot_redirect_a_delivery_outside_their_directory() {
    let s = Sync::new("vsync-attack");
    // On h2, alice replaces her vigosync dir with a symlink to /etc.
    let h2 = s.host("h2");
    let real = h2.path("/home/alice/vigosync");
    std::fs::remove_dir(&real).expect("remove dir");
    std::os::unix::fs::symlink("/etc", &real).expect("symlink to /etc");
    // On h3, she pre-creates the target name as a symlink to a root-owned file and
    // as a hard link to another.
    let h3 = s.host("h3");
    let victim = h3.path("/etc/vigo-victim");
    std::fs::write(&victim, b"root's\n").expect("victim");
    std::os::unix::fs::symlink("/etc/vigo-victim", s.path("h3", "alice", "passwd")).expect("symlink name");
    std::fs::hard_link(&victim, s.path("h3", "alice", "hosts")).expect("hard link name");
    // …and as a FIFO (a write through it would block the receiver or feed a reader).
    nix::unistd::mkfifo(&s.path("h3", "alice", "pipe"), nix::sys::stat::Mode::from_bits_truncate(0o666))
        .expect("fifo name");
    let etc_passwd = std::fs::read(h2.path("/etc/passwd")).expect("h2 passwd");

    s.put("h1", "alice", "passwd", b"owned\n", T0);
    s.put("h1", "alice", "hosts", b"owned too\n", T0);
    s.put("h1", "alice", "pipe", b"not into the pipe\n", T0);
    s.wait_content("h3", "alice", "passwd", b"owned\n");
    s.wait_content("h3", "alice", "hosts", b"owned too\n");
    s.wait_content("h3", "alice", "pipe", b"not into the pipe\n");
    s.settle();
    assert_eq!(std::fs::read(&victim).expect("victim"), b"root's\n", "never written through a link");
    for name in ["passwd", "hosts", "pipe"] {
        let meta = std::fs::symlink_metadata(s.path("h3", "alice", name)).expect("meta");
        assert!(meta.file_type().is_file(), "{name} is now a regular file");
        assert_eq!(meta.uid(), Sync::uid("h3", "alice"), "{name} is alice's");
    }
    assert_eq!(std::fs::read(h2.path("/etc/passwd")).expect("h2 passwd"), etc_passwd, "h2's /etc untouched");
    assert!(!h2.path("/etc/hosts.vigosync").exists());
    let status = s.status("h2");
    assert!(status["vigosync"]["users"]["alice"]["problem"].is_string(), "the symlinked dir is reported: {status}");
}

#[test]
fn swapping_the_directory_for_a_symlink_mid_transfer_redirects_nothing() {
    let s = Sync::new("vsync-swap");
    let h2 = s.host("h2");
    let dir = h2.path("/home/alice/vigosync");
    let moved = h2.path("/home/alice/vigosync.old");
    let etc_before: std::collections::BTreeSet<_> =
        std::fs::read_dir(h2.path("/etc")).expect("etc").map(|e| e.expect("entry").file_name()).collect();
    let big: Vec<u8> = (0..48 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    s.put("h1", "alice", "big.bin", &big, T0);
    // As soon as the receiver's partial file shows up, alice swaps her directory for
    // a symlink to /etc.
    wait_for("the transfer to start on h2", LANDS, || {
        std::fs::read_dir(&dir)
            .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".part"))))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.logs()));
    std::fs::rename(&dir, &moved).expect("move the directory away");
    std::os::unix::fs::symlink("/etc", &dir).expect("symlink to /etc");
    // The transfer finishes in the directory it started in (still alice's), or stops.
    let _ = wait_for("the file in the moved directory", LANDS, || moved.join("big.bin").exists());
    s.settle();
    let etc_after: std::collections::BTreeSet<_> =
        std::fs::read_dir(h2.path("/etc")).expect("etc").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(etc_before, etc_after, "nothing appeared in h2's /etc");
    if let Ok(got) = std::fs::read(moved.join("big.bin")) {
        assert_eq!(got, big, "whatever landed is complete and verified");
        let meta = std::fs::symlink_metadata(moved.join("big.bin")).expect("meta");
        assert_eq!(meta.uid(), Sync::uid("h2", "alice"));
    }
    let status = s.status("h2");
    assert!(status["vigosync"]["users"]["alice"]["problem"].is_string(), "the symlinked dir is reported: {status}");
}

/// A user who floods her `~/vigosync` (45,000 empty files with 250-byte names) only
/// shortens her own report: the machine keeps checking in, another user's file on it
/// still syncs, and the overflow shows on the envoy and on the server. Revoking an
/// envoy reaches the others: each learns the revoked certificate at its next
/// check-in and keeps it, for its swarm port to refuse.
#[test]
fn a_flooded_directory_cuts_nobody_off_and_revocations_reach_every_envoy() {
    let s = Sync::new("vsync-flood");
    let dir = s.host("h1").path("/home/alice/vigosync");
    let uid = Sync::uid("h1", "alice");
    for i in 0..45_000 {
        let path = dir.join(format!("{i:05}{}", "x".repeat(245)));
        std::fs::File::create(&path).expect("flood file");
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown");
    }
    s.put("h1", "bob", "plan.txt", b"bob's plan\n", T0);
    // The flood keeps both daemons busy; bob's one file still gets its turn.
    if wait_for("bob's file on h3 despite the flood", FLOODED_LANDS, || {
        s.read("h3", "bob", "plan.txt").as_deref() == Some(&b"bob's plan\n"[..])
    })
    .is_err()
    {
        let st = s.status("h3");
        let bob: Vec<String> = st["vigosync"]["incoming"]
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.starts_with("bob")).map(|(k, v)| format!("{k} {v}")).collect())
            .unwrap_or_default();
        panic!(
            "bob/plan.txt never reached h3 (last check-in {}, {} incoming, bob's: {bob:?})\n{}",
            st["last_checkin"],
            st["vigosync"]["incoming"].as_object().map_or(0, |m| m.len()),
            s.logs()
        );
    }
    let overflow = || s.status("h1")["vigosync"]["users"]["alice"]["overflow"]["files"].as_u64().unwrap_or(0);
    if wait_for("alice's overflow on h1", LANDS, || overflow() > 0).is_err() {
        panic!("no overflow reported: {}\n{}", s.status("h1"), s.logs());
    }
    let on_server = || -> serde_json::Value {
        serde_json::from_str(&s.w.cli_ok(&["swarm", "sync", "status", "--json"])).expect("json")
    };
    let listed = |v: &serde_json::Value| {
        v["overflow"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["envoy"] == "h1" && o["user"] == "alice" && o["left_out"]["files"].as_u64().unwrap_or(0) > 0)
    };
    if wait_for("alice's overflow on the server", LANDS, || listed(&on_server())).is_err() {
        panic!("the server shows no overflow: {}", on_server());
    }

    let show: serde_json::Value = serde_json::from_str(&s.w.cli_ok(&["envoys", "show", "h3", "--json"])).expect("json");
    let fingerprint = show["cert_fingerprint"].as_str().expect("fingerprint").to_string();
    s.w.cli_ok(&["envoys", "revoke", "h3"]);
    for host in ["h1", "h2"] {
        let kept = s.host(host).path("/var/lib/vigo/revoked.json");
        let knows = || std::fs::read_to_string(&kept).is_ok_and(|t| t.contains(&fingerprint));
        if wait_for(&format!("{host} learns h3's revocation"), LANDS, knows).is_err() {
            panic!("{host} never learned the revocation\n{}", s.logs());
        }
    }
}

/// Root on h1 (standing in for a compromised envoy) announces alice's file with a
/// modification time in the year 2100, an empty file meant to wipe her copies. The
/// server counts that version as no later than when it first saw it (plus the skew
/// allowance): the receivers get that time, not 2100, and alice's next edit on h2
/// (stamped past the allowance, as an edit made after it would be) wins on every
/// honest envoy. (h1 itself keeps comparing with its own file's raw time.)
#[test]
fn a_far_future_mtime_from_one_envoy_does_not_outlive_a_later_edit() {
    const YEAR_2100_NS: i64 = 4_102_444_800_000_000_000;
    let s = Sync::new("vsync-future");
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let skew = vigo_server::vigosync::MTIME_SKEW_SECS;
    s.put("h2", "alice", "plan.txt", b"alice's real plan\n", T0);
    s.wait_content("h1", "alice", "plan.txt", b"alice's real plan\n");
    s.put("h1", "alice", "plan.txt", b"", YEAR_2100_NS);
    s.wait_content("h2", "alice", "plan.txt", b"");
    let landed = mtime_ns(&std::fs::symlink_metadata(s.path("h2", "alice", "plan.txt")).expect("meta"));
    assert!(landed <= (now() + skew + 5) * 1_000_000_000, "the year 2100 reached h2: {landed}");
    // Seconds later (the server keeps first-seen times in seconds), alice edits on h2.
    std::thread::sleep(Duration::from_secs(2));
    s.put("h2", "alice", "plan.txt", b"alice's plan, again\n", (now() + skew + 60) * 1_000_000_000);
    s.wait_content("h3", "alice", "plan.txt", b"alice's plan, again\n");
    let view = s.w.cli_ok(&["swarm", "sync", "status", "--user", "alice", "--json"]);
    assert!(!view.contains(&YEAR_2100_NS.to_string()), "the forged time is nowhere in the server's view: {view}");
}

/// Environment variable that makes [`revoked_envoy_attacker`] act: the signed order
/// (JSON) a compromised h3 holds.
const ATTACK_ORDER: &str = "VIGO_TEST_ATTACK_ORDER";

/// The compromised envoy's side, run inside h3 (re-executing this test binary there):
/// with h3's own key and certificate and an order it already holds, it fetches from
/// the source as the agent's fetcher would, ignoring any revocation itself, and prints
/// the outcome. In a normal test run (no order given) it does nothing.
#[test]
fn revoked_envoy_attacker() {
    let Ok(order) = std::env::var(ATTACK_ORDER) else { return };
    let signed: vigo_swarm::order::SignedOrder = serde_json::from_str(&order).expect("order");
    let paths = vigo_agent::paths::AgentPaths::from_env();
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let key = vigo_pki::EnvoyTlsKey::load(&paths.tls_key()).expect("key").private_key_pem();
    let tls =
        vigo_swarm::tls::client_tls(&read(paths.ca()), &read(paths.tls_cert()), &key, vigo_pki::RevocationList::new())
            .expect("tls");
    let server_key = vigo_pki::PublicKey::from_b64(read(paths.bundle_pub()).trim()).expect("bundle key");
    let accounts = std::sync::Arc::new(vigo_swarm::accounts::PasswdFile::system());
    let fetcher = vigo_swarm::fetch::Fetcher::new("h3", server_key, tls, accounts, vigo_swarm::hash::HashCache::new());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match runtime.block_on(fetcher.fetch(&signed)) {
        Ok(outcome) => println!("ATTACK-RESULT fetched {outcome:?}"),
        Err(e) => println!("ATTACK-RESULT refused {e}"),
    }
}

/// Item: a revoked envoy keeps fetching with the orders it already holds. h3's
/// daemon is stopped (so only the attacker fetches there); an order for alice's file,
/// signed with the server's key and naming h3's certificate, works while h3 is
/// enrolled. Once h3 is revoked and h1 has learned it, the same order, with the same
/// key and certificate, gets nothing.
#[test]
fn a_revoked_envoy_cannot_fetch_with_an_order_it_holds() {
    let mut s = Sync::new("vsync-revoked");
    let at = s.hosts.iter().position(|(h, _)| h.name() == "h3").expect("h3");
    let (h3, daemon) = s.hosts.remove(at);
    daemon.kill().expect("stop h3's daemon");
    s.put("h1", "alice", "plan.txt", b"alice's plan\n", T0);
    s.wait_content("h2", "alice", "plan.txt", b"alice's plan\n");

    let fingerprint = |envoy: &str| -> String {
        let show: serde_json::Value =
            serde_json::from_str(&s.w.cli_ok(&["envoys", "show", envoy, "--json"])).expect("json");
        show["cert_fingerprint"].as_str().expect("fingerprint").to_string()
    };
    let state = vigo_server::state_dir::StateDir::new(s.w.server.path(common::STATE_DIR));
    let key = vigo_pki::SigningKey::load(&state.bundle_key()).expect("the server's bundle key");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let content = b"alice's plan\n";
    let order = vigo_swarm::order::TransferOrder {
        id: "held-by-h3".into(),
        kind: "vigosync".into(),
        user: "alice".into(),
        name: "plan.txt".into(),
        sha256: vigo_pki::hex_lower(&<sha2::Sha256 as sha2::Digest>::digest(content)),
        size: content.len() as u64,
        mtime: T0,
        source: "h1".into(),
        source_addr: s.host("h1").addr(vigo_swarm::SWARM_PORT).to_string(),
        target: "h3".into(),
        source_cert: fingerprint("h1"),
        target_cert: fingerprint("h3"),
        expires_at: now + 600,
    };
    let signed = serde_json::to_string(&vigo_swarm::order::SignedOrder::sign(&order, &key)).expect("json");
    let attack = || -> String {
        let exe = std::env::current_exe().expect("test exe");
        let mut cmd = h3.command(exe, ["revoked_envoy_attacker", "--exact", "--nocapture"]);
        cmd.env(ATTACK_ORDER, &signed);
        let out = h3.output(cmd, Duration::from_secs(60)).expect("attacker");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("ATTACK-RESULT "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no result from the attacker: {text}\n{}", String::from_utf8_lossy(&out.stderr)))
    };
    let landed = h3.path("/home/alice/vigosync/plan.txt");

    // Control: while h3 is enrolled, the order works.
    let result = attack();
    assert!(result.starts_with("fetched"), "{result}");
    assert_eq!(std::fs::read(&landed).expect("fetched"), content);
    std::fs::remove_file(&landed).expect("remove the control copy");

    let h3_fingerprint = fingerprint("h3");
    s.w.cli_ok(&["envoys", "revoke", "h3"]);
    let kept = s.host("h1").path("/var/lib/vigo/revoked.json");
    let knows = || std::fs::read_to_string(&kept).is_ok_and(|t| t.contains(&h3_fingerprint));
    if wait_for("h1 learns h3's revocation", LANDS, knows).is_err() {
        panic!("h1 never learned the revocation\n{}", s.logs());
    }
    let result = attack();
    assert!(result.starts_with("refused"), "a revoked envoy fetched with its held order: {result}");
    // …because h1 refused h3's certificate as revoked, at the handshake.
    let logs = s.logs();
    let peer = format!("peer={}:", h3.ip());
    assert!(
        logs.lines().any(|l| l.contains(&peer) && l.contains("invalid peer certificate: Revoked")),
        "h1 did not refuse h3 as revoked: {result}\n{logs}"
    );
    assert!(std::fs::symlink_metadata(&landed).is_err(), "nothing landed on the revoked envoy");
}
