//! End-to-end agent durability: offline convergence from the signed cache, the on-disk
//! results queue surviving outages and `kill -9`, and exactly-once report storage, with
//! a real `vigosrv` and real `vigo` agents in namespace hosts.

use std::process::Output;
use std::time::Duration;

mod common;

use common::{MOTD, bin, stderr};
use vigo_testkit::Host;

const MANAGED: &str = "managed by vigo\n";
use common::STATE_DIR;

/// A running server with one enrolled agent that has converged once.
struct World {
    w: common::World,
    agent: Host,
}

impl std::ops::Deref for World {
    type Target = common::World;
    fn deref(&self) -> &common::World {
        &self.w
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut common::World {
        &mut self.w
    }
}

impl World {
    fn new(label: &str) -> Self {
        let w = common::World::new(label);
        let agent = w.enrolled_agent("web-1");
        let w = World { w, agent };
        w.cli_ok(&["publish", "-m", "test"]);
        let first = w.run_once();
        assert!(first.status.success(), "first run: {}", stderr(&first));
        assert_eq!(w.motd(), MANAGED);
        w
    }

    fn run_once(&self) -> Output {
        self.agent.run(bin("vigo"), ["run", "--once"]).expect("vigo run --once")
    }

    fn status(&self) -> serde_json::Value {
        let out = self.agent.run(bin("vigo"), ["status", "--json"]).expect("vigo status");
        assert!(out.status.success(), "vigo status: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    fn motd(&self) -> String {
        std::fs::read_to_string(self.agent.path(MOTD)).unwrap_or_default()
    }

    /// Sequence numbers of the reports waiting in the agent's queue, after checking
    /// every entry parses and names its own number.
    fn queued(&self) -> Vec<u64> {
        let dir = self.agent.path("/var/lib/vigo/queue");
        let mut seqs = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("queue dir") {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json").filter(|_| !name.starts_with('.')) else { continue };
            let seq: u64 = stem.parse().expect("numbered entry");
            let text = std::fs::read_to_string(dir.join(&name)).expect("read entry");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is torn: {e}"));
            assert_eq!(v["seq"], seq, "{name}");
            assert!(v["report"]["summary"].is_object(), "{name}: {v}");
            seqs.push(seq);
        }
        seqs.sort_unstable();
        seqs
    }

    /// The runs of web-1 the server's database accounts for, read from it: each row's
    /// own sequence number and those of the runs counted as its repeats (which follow
    /// it without a gap: the agent drops no report).
    fn stored(&self) -> Vec<i64> {
        let url = format!("sqlite://{}", self.server.path(STATE_DIR).join("vigo.db").display());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let store = vigo_store::Store::open(&url).await.expect("open server database");
            let rows = store.reports("web-1").await.expect("reports");
            store.close().await;
            for r in &rows {
                let v: serde_json::Value = serde_json::from_str(&r.report_json).expect("stored report is JSON");
                assert!(v["summary"].is_object(), "seq {}: {v}", r.seq);
            }
            let mut runs = Vec::new();
            for r in &rows {
                let covered = r.runs().unwrap_or_else(|| panic!("seq {}: repeats {:?} leave a gap", r.seq, r.repeats));
                runs.extend(covered);
            }
            runs
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn offline_runs_repair_drift_from_the_cache_and_queue_results_until_the_server_is_back() {
    let mut w = World::new("offline");
    // The first run checked in before it converged, so its own report still waits.
    assert_eq!(w.queued(), [1]);
    w.stop();
    for run in 1..=3 {
        std::fs::write(w.agent.path(MOTD), "hand edit\n").expect("edit");
        let out = w.run_once();
        assert!(!out.status.success(), "a failed check-in is reported in the exit code");
        assert!(stderr(&out).contains("check-in failed"), "{}", stderr(&out));
        assert_eq!(w.motd(), MANAGED, "offline run {run} repaired the hand edit");
    }
    assert_eq!(w.queued(), [1, 2, 3, 4], "every offline result is queued");
    let status = w.status();
    assert_eq!(status["policy"]["source"], "offline cache", "{status}");
    assert!(status["policy"]["version"].is_string(), "{status}");
    assert_eq!(status["pending_results"], 4, "{status}");
    assert!(status["last_checkin_error"].is_string(), "{status}");
    assert_eq!(status["last_run"]["summary"]["changed"], 1, "{status}");
    assert!(status["traits"]["os"].is_object(), "{status}");
    w.start();
    let out = w.run_once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.stored(), [1, 2, 3, 4], "the backlog arrives once, in order");
    assert_eq!(w.queued(), [5], "delivered reports leave the queue; this run's waits");
    let status = w.status();
    assert_eq!(status["policy"]["source"], "server", "{status}");
    assert_eq!(status["pending_results"], 1, "{status}");
    assert!(status["last_checkin_error"].is_null(), "{status}");
    let show: serde_json::Value =
        serde_json::from_str(&w.cli_ok(&["envoys", "show", "web-1", "--json"])).expect("json");
    // Runs 2 to 4 repaired the same hand edit: one outcome, stored once and counted.
    let newest = if show["repeats"].is_null() { &show["report_seq"] } else { &show["repeats"]["last_seq"] };
    assert_eq!(newest, 4, "the newest delivered run is the last report's: {show}");
    assert_eq!(show["last_report"]["summary"]["changed"], 1, "{show}");
}

/// A small pseudo-random sequence; the seed is printed so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill_9_at_any_point_never_tears_the_queue_or_duplicates_a_report() {
    let w = World::new("kill9");
    let seed = std::env::var("VIGO_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos())
    });
    eprintln!("kill seed: {seed} (set VIGO_KILL_SEED to replay)");
    let mut rng = Lcg(seed);
    // Kills spread over one run's duration land in every phase: check-in, apply, queue write.
    let started = std::time::Instant::now();
    assert!(w.run_once().status.success());
    let span = u64::try_from(started.elapsed().as_millis()).expect("fits") * 11 / 10 + 1;
    let mut finished = 0;
    for _ in 0..50 {
        // Some runs find drift to repair, so killing also lands inside applies.
        if rng.below(2) == 0 {
            std::fs::write(w.agent.path(MOTD), "hand edit\n").expect("edit");
        }
        let p = w.agent.spawn(bin("vigo"), ["run", "--once"]).expect("spawn vigo");
        std::thread::sleep(Duration::from_millis(rng.below(span)));
        if p.kill().is_ok_and(|status| status.success()) {
            finished += 1;
        }
    }
    let clean = w.run_once();
    assert!(clean.status.success(), "a clean run after the kills: {}", stderr(&clean));
    assert_eq!(w.motd(), MANAGED);
    let queued = w.queued();
    let stored = w.stored();
    let expected: Vec<i64> = (1..=i64::try_from(stored.len()).expect("fits")).collect();
    assert_eq!(stored, expected, "the server holds contiguous sequence numbers from 1, each once");
    // Everything before the clean run's own report was delivered, and nothing queued
    // was stored already.
    eprintln!("{finished} of 50 runs finished before the kill; {} reports stored", stored.len());
    let next = u64::try_from(stored.len()).expect("fits") + 1;
    assert_eq!(queued, [next], "the queue holds only the clean run's report");
}
