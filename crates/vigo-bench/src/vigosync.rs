//! `vigo-bench vigosync`: how long a file takes from appearing in `~/vigosync/` on
//! one envoy until it is in place on another.
//!
//! A real `vigosrv` and two real `vigo` daemons run in namespace hosts (so the real
//! ports and the real swarm transport are used); user `alice` exists on both with
//! different uids. Each run renames a fresh file into place on h1 (so it appears
//! whole) and polls h2 every millisecond for the final name; the receiver renames
//! only after verifying the content, so appearance means complete. The content is
//! checked after the clock stops.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use vigo_testkit::{Fleet, Host, Process};

const STATE_DIR: &str = "/var/lib/vigo/server";
const DEADLINE: Duration = Duration::from_secs(60);

pub struct Options {
    pub runs: usize,
    pub sizes: Vec<u64>,
    pub bin_dir: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct SizeResult {
    pub bytes: u64,
    pub runs: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

struct Bench {
    _fleet: Fleet,
    _server: Host,
    _srv: Process,
    h1: Host,
    h2: Host,
    _daemons: Vec<Process>,
}

fn bin(o: &Options, name: &str) -> PathBuf {
    o.bin_dir.join(name)
}

fn ok(out: std::process::Output, what: &str) -> anyhow::Result<String> {
    if !out.status.success() {
        anyhow::bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup(o: &Options) -> anyhow::Result<Bench> {
    vigo_testkit::cleanup_stale()?;
    let fleet = Fleet::new("bench-vsync")?;
    let server = fleet.add_host("server")?;
    let config = server.path("/etc/vigo/config");
    std::fs::create_dir_all(config.join("modules"))?;
    std::fs::write(config.join("server.yaml"), "interval_secs: 15\n")?;
    let ip = server.ip().to_string();
    let init = server.run_ok(bin(o, "vigosrv"), ["init", "--state-dir", STATE_DIR, "--san", &ip])?;
    let fingerprint = init
        .lines()
        .find_map(|l| l.strip_prefix("CA fingerprint (SHA-256): "))
        .context("vigosrv init printed no fingerprint")?
        .to_string();
    let srv = server.spawn(bin(o, "vigosrv"), ["--state-dir", STATE_DIR, "--config-dir", "/etc/vigo/config"])?;
    server.wait_tcp(8443, Duration::from_secs(30))?;
    server.wait_tcp(1530, Duration::from_secs(30))?;
    let state = server.path(STATE_DIR);
    let cli = |args: &[&str]| {
        std::process::Command::new(bin(o, "vigocli"))
            .arg("--server")
            .arg(format!("https://{ip}:8443"))
            .arg("--ca")
            .arg(state.join("ca/ca.pem"))
            .arg("--token-file")
            .arg(state.join("admin.token"))
            .args(args)
            .output()
    };
    let mut hosts = Vec::new();
    let mut daemons = Vec::new();
    for (name, uid) in [("h1", 2001), ("h2", 2102)] {
        let host = fleet.add_host(name)?;
        let token: serde_json::Value =
            serde_json::from_str(&ok(cli(&["token", "create", "--hosts", name, "--json"])?, "token create")?)?;
        let token = token["token"].as_str().context("token")?.to_string();
        host.run_ok(bin(o, "vigo"), ["enroll", "--server", &ip, "--token", &token, "--ca-fingerprint", &fingerprint])?;
        host.add_user("alice", uid, uid)?;
        let dir = host.path("/home/alice/vigosync");
        std::fs::create_dir(&dir)?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid))?;
        daemons.push(host.spawn(bin(o, "vigo"), ["run"])?);
        host.wait_tcp(vigo_swarm::SWARM_PORT, Duration::from_secs(30))?;
        hosts.push(host);
    }
    let h2 = hosts.pop().context("h2")?;
    let h1 = hosts.pop().context("h1")?;
    // Let both daemons open their event streams and report their (empty) dirs.
    std::thread::sleep(Duration::from_secs(2));
    Ok(Bench { _fleet: fleet, _server: server, _srv: srv, h1, h2, _daemons: daemons })
}

/// Content of `size` bytes that differs per run (so no file is ever a no-op).
fn content(size: u64, run: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut block = Sha256::digest(format!("vigo-bench {size} {run}").as_bytes()).to_vec();
    while (out.len() as u64) < size {
        out.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(usize::try_from(size).unwrap_or(0));
    out
}

fn one_run(b: &Bench, size: u64, run: usize) -> anyhow::Result<Duration> {
    let name = format!("bench-{size}-{run}.bin");
    let dir = b.h1.path("/home/alice/vigosync");
    let tmp = dir.join(format!(".{name}"));
    let bytes = content(size, run);
    std::fs::write(&tmp, &bytes)?;
    std::os::unix::fs::chown(&tmp, Some(2001), Some(2001))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    let target = b.h2.path(Path::new("/home/alice/vigosync").join(&name));
    let start = Instant::now();
    std::fs::rename(&tmp, dir.join(&name))?;
    loop {
        if std::fs::symlink_metadata(&target).is_ok() {
            break;
        }
        if start.elapsed() > DEADLINE {
            anyhow::bail!("{name} did not reach h2 within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = start.elapsed();
    let got = std::fs::read(&target)?;
    if Sha256::digest(&got) != Sha256::digest(&bytes) {
        anyhow::bail!("{name} arrived with other content");
    }
    // Keep the directories small: later runs should not rescan old files.
    std::fs::remove_file(dir.join(&name))?;
    std::fs::remove_file(&target)?;
    Ok(took)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

pub fn run(o: &Options) -> anyhow::Result<Vec<SizeResult>> {
    let b = setup(o)?;
    let mut results = Vec::new();
    for &size in &o.sizes {
        let mut times = Vec::with_capacity(o.runs);
        for run in 0..o.runs {
            times.push(one_run(&b, size, run)?);
        }
        times.sort_unstable();
        results.push(SizeResult {
            bytes: size,
            runs: times.len(),
            p50_ms: percentile(&times, 0.50),
            p95_ms: percentile(&times, 0.95),
            min_ms: percentile(&times, 0.0),
            max_ms: percentile(&times, 1.0),
        });
    }
    Ok(results)
}
