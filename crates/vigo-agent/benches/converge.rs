//! Benchmark: 1,000 `file` resources (small content, mode 0600), converged once,
//! then the no-change pass timed — as a whole `vigo apply` process (wall time and
//! peak RSS, what an operator sees) and as the runner alone, in process.
//!
//! Run with `cargo bench -p vigo-agent --bench converge`.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use vigo_agent::runner::Runner;
use vigo_executors::{Mode, Registry};

const RESOURCES: usize = 1_000;
const PASSES: usize = 30;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    let work = dir.path().join("work");
    std::fs::create_dir_all(config.join("modules")).expect("modules");
    std::fs::create_dir_all(&work).expect("work");
    let mut module = String::from("name: bench\nresources:\n");
    for i in 0..RESOURCES {
        let _ = write!(
            module,
            "  - name: file {i}\n    type: file\n    target_path: {}/f{i}\n    content: \"line {i}\\n\"\n    mode: \"0600\"\n",
            work.display()
        );
    }
    std::fs::write(config.join("modules/bench.yaml"), module).expect("module");

    let registry = Registry::builtin();
    let (cfg, plan) = vigo_agent::load::load(&config, &registry).expect("valid bench config");
    let traits = vigo_agent::cli::traits::collect_all();
    let first = Runner { registry: &registry, traits: &traits, mode: Mode::Enforce }.run(&cfg, &plan);
    assert_eq!(first.summary.changed, RESOURCES, "first pass creates every file");

    let mut inproc = Vec::new();
    for _ in 0..PASSES {
        let t = Instant::now();
        let r = Runner { registry: &registry, traits: &traits, mode: Mode::Enforce }.run(&cfg, &plan);
        inproc.push(t.elapsed());
        assert_eq!(r.summary.unchanged, RESOURCES, "no-change pass changed something");
    }

    let vigo = env!("CARGO_BIN_EXE_vigo");
    let mut procs = Vec::new();
    for _ in 0..PASSES {
        let t = Instant::now();
        let out = Command::new(vigo).args(["apply", "--detailed-exitcodes"]).arg(&config).output().expect("run vigo");
        procs.push(t.elapsed());
        assert_eq!(out.status.code(), Some(0), "no-change pass: {}", String::from_utf8_lossy(&out.stdout));
    }
    let rss_kib = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage").max_rss();

    println!("converge bench: {RESOURCES} file resources, no-change pass, {PASSES} runs each");
    println!("  runner in process : {}", stats(&mut inproc));
    println!("  vigo apply process: {}", stats(&mut procs));
    println!("  vigo apply peak RSS: {:.1} MiB", rss_kib as f64 / 1024.0);
}

fn stats(samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!("min {:.1} ms, p50 {:.1} ms, p95 {:.1} ms", ms(samples[0]), ms(p(0.5)), ms(p(0.95)))
}
