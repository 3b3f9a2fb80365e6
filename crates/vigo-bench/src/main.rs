//! `vigo-bench`: load benchmarks that drive a real `vigosrv` the way a fleet would.
//!
//! Every benchmark starts its own server in a temporary state directory, enrolls
//! simulated envoys with real keys and certificates, and measures from outside:
//! the server is a separate process, so its CPU time and memory are its own.

/// The generator runs thousands of simulated agents in one process; mimalloc keeps
/// its share of the machine, which the server's numbers compete with, small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod checkins;
mod harness;
mod procfs;
mod report;
mod vigosync;
mod whole_body;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Load benchmarks against a real vigosrv.
#[derive(Debug, Parser)]
#[command(name = "vigo-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulated envoys check in at a fixed interval; prints throughput, latency and CPU.
    Checkins(CheckinsArgs),
    /// Time from a file appearing in ~/vigosync on one envoy until it is in place on
    /// another (namespace hosts, real daemons); prints p50/p95 per size.
    Vigosync(VigosyncArgs),
}

#[derive(Debug, clap::Args)]
struct VigosyncArgs {
    /// Runs per size.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// File sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [4096u64, 100 * 1024 * 1024])]
    sizes: Vec<u64>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CheckinsArgs {
    /// Number of simulated envoys (each enrolls with its own token, keys and certificate).
    #[arg(long, default_value_t = 200)]
    envoys: usize,
    /// Milliseconds between two check-ins of one envoy; by default the fleet offers about 8,000/s.
    #[arg(long)]
    interval_ms: Option<u64>,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds of load before the measured window starts.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// The vigosrv binary; by default the one next to this executable.
    #[arg(long)]
    vigosrv: Option<PathBuf>,
    /// Open a new mutual-TLS connection for every check-in, as `vigo run --once` does,
    /// instead of one persistent HTTP/2 channel per envoy.
    #[arg(long)]
    reconnect: bool,
    /// With --reconnect: let the client resume TLS sessions (the agent currently does not).
    #[arg(long, requires = "reconnect")]
    tls_resume: bool,
    /// Enrollments in flight at once (each costs two bcrypt operations on the server).
    #[arg(long, default_value_t = 8)]
    enroll_concurrency: usize,
    /// Leave the last pass's report out of every check-in (the agent sends one each time).
    #[arg(long)]
    no_reports: bool,
    /// Make every run's outcome differ from the one before (as if every run repaired new
    /// drift), so that the server stores each report as a row instead of counting a
    /// repeat. By default runs differ only in their timings, as a converged fleet's do.
    #[arg(long, conflicts_with = "no_reports")]
    reports_differ: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    vigo_pki::install_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigo-bench: cannot start runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let outcome = match cli.command {
        Command::Checkins(args) => runtime.block_on(checkins_command(args)),
        Command::Vigosync(args) => vigosync_command(&args),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigo-bench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn checkins_command(args: CheckinsArgs) -> anyhow::Result<()> {
    if args.envoys == 0 {
        anyhow::bail!("--envoys must be at least 1");
    }
    let seconds = |name: &str, v: f64| {
        Duration::try_from_secs_f64(v).map_err(|_| anyhow::anyhow!("--{name} {v} is not a number of seconds"))
    };
    let vigosrv = match args.vigosrv {
        Some(p) => p,
        None => harness::sibling_binary("vigosrv")?,
    };
    let options = checkins::Options {
        envoys: args.envoys,
        interval: args.interval_ms.map_or_else(|| checkins::default_interval(args.envoys), Duration::from_millis),
        warmup: seconds("warmup", args.warmup)?,
        duration: seconds("duration", args.duration)?,
        vigosrv,
        reconnect: args.reconnect,
        tls_resume: args.tls_resume,
        enroll_concurrency: args.enroll_concurrency.max(1),
        reports: !args.no_reports,
        reports_differ: args.reports_differ,
        progress: !args.json,
    };
    if options.interval.is_zero() {
        anyhow::bail!("--interval-ms must be at least 1");
    }
    if options.duration.is_zero() {
        anyhow::bail!("--duration must be more than 0 seconds");
    }
    let report = checkins::run(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

fn vigosync_command(args: &VigosyncArgs) -> anyhow::Result<()> {
    let vigosrv = harness::sibling_binary("vigosrv")?;
    let bin_dir = vigosrv.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    for name in ["vigo", "vigocli"] {
        harness::sibling_binary(name)?;
    }
    let options = vigosync::Options { runs: args.runs.max(1), sizes: args.sizes.clone(), bin_dir };
    let results = vigosync::run(&options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    println!("vigosync delivery h1 -> h2 ({} runs per size)", options.runs);
    for r in &results {
        println!(
            "  {:>10} bytes: p50 {:8.1} ms  p95 {:8.1} ms  (min {:.1}, max {:.1})",
            r.bytes, r.p50_ms, r.p95_ms, r.min_ms, r.max_ms
        );
    }
    Ok(())
}
