//! What a check-in benchmark measured, for people and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// The rate the issue sets as the target: 100,000 envoys every 15 s.
pub const TARGET_PER_SEC: f64 = 100_000.0 / 15.0;
/// The p99 latency the issue sets as the target, in milliseconds.
pub const TARGET_P99_MS: f64 = 50.0;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub envoys: usize,
    pub interval_ms: f64,
    /// Check-ins per second the envoys would make if every one were answered at once.
    pub offered_per_sec: f64,
    /// `persistent` (one HTTP/2 channel per envoy) or `reconnect` (a TLS connection per check-in).
    pub connections: &'static str,
    pub tls_resume: bool,
    /// Whether every check-in carried a run report, as the agent's do.
    pub reports: bool,
    /// Whether every run's outcome differed from the one before (`--reports-differ`).
    pub reports_differ: bool,
    pub enrollment_secs: f64,
    pub warmup_secs: f64,
    pub window_secs: f64,
    /// Check-ins answered inside the measured window.
    pub checkins: u64,
    pub checkins_per_sec: f64,
    pub latency_ms: Latency,
    /// Failed check-ins in the window, by gRPC status code (or `connect`, `bad_bundle`).
    pub errors: BTreeMap<String, u64>,
    /// One message per error kind, to tell what went wrong.
    pub error_samples: BTreeMap<String, String>,
    /// Ticks an envoy skipped because its previous check-in had not returned yet.
    pub missed_ticks: u64,
    /// Over the whole run, warm-up included.
    pub bundles_received: u64,
    pub not_modified: u64,
    /// Over the whole run: reports queued, and those the server acknowledged as stored.
    pub reports_sent: u64,
    pub reports_acked: u64,
    /// Runs the server's database accounts for after it stopped, as rows or as repeats
    /// of a row (each envoy's checked to be exactly the ones it queued, each once), and
    /// the rows among them; `None` when the server could not be stopped.
    pub reports_stored: Option<u64>,
    pub report_rows: Option<u64>,
    pub server: ProcessUse,
    pub generator: ProcessUse,
    /// Share of all CPUs the machine was busy during the window.
    pub machine_busy: f64,
    /// Share of all CPUs the hypervisor gave to other guests during the window (part
    /// of `machine_busy`): time this machine wanted to run but could not.
    pub machine_steal: f64,
    pub cpus: usize,
    pub meets_target: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// Percentiles (nearest rank) of latencies given in microseconds; sorts them.
    pub fn from_micros(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = (q * samples.len() as f64).ceil() as usize;
            f64::from(samples[rank.clamp(1, samples.len()) - 1]) / 1000.0
        };
        Self { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0) }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessUse {
    /// CPU seconds (user + system) inside the measured window.
    pub cpu_secs: f64,
    /// `cpu_secs` divided by the window: how many cores it kept busy.
    pub cores: f64,
    /// Peak resident memory over the whole run, in MiB (the server only).
    pub peak_rss_mib: Option<f64>,
}

impl Report {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let how = match (self.connections, self.tls_resume) {
            ("reconnect", true) => "a new mutual-TLS connection per check-in (sessions resumed)",
            ("reconnect", false) => "a new mutual-TLS connection per check-in, full handshake (like the agent)",
            _ => {
                "one persistent HTTP/2 channel per envoy (like the agent daemon; `vigo run --once` reconnects: see --reconnect)"
            }
        };
        let _ = writeln!(
            out,
            "vigo-bench checkins: {} envoys every {} ms, offering {:.0}/s\n  connections: {how}\n  reports:     {}",
            self.envoys,
            self.interval_ms,
            self.offered_per_sec,
            match (self.reports, self.reports_differ) {
                (false, _) => "none (--no-reports)",
                (true, false) =>
                    "the agent's queue: one new run report per check-in, acknowledged once stored (under load: at the next check-in); runs differ in timings only",
                (true, true) =>
                    "the agent's queue: one new run report per check-in, acknowledged once stored (under load: at the next check-in); every run a new outcome (--reports-differ)",
            }
        );
        let _ = writeln!(
            out,
            "enrollment:   {} envoys in {:.1} s (bcrypt cost 10 per token, twice)",
            self.envoys, self.enrollment_secs
        );
        let _ = writeln!(out, "window:       {:.1} s after {:.1} s of warm-up", self.window_secs, self.warmup_secs);
        let errors: u64 = self.errors.values().sum();
        let _ = writeln!(
            out,
            "check-ins:    {} answered = {:.0}/s sustained; {errors} failed; {} ticks missed (envoy still waiting)",
            self.checkins, self.checkins_per_sec, self.missed_ticks
        );
        for (code, n) in &self.errors {
            let sample = self.error_samples.get(code).map(String::as_str).unwrap_or("");
            let _ = writeln!(out, "  {n:>10} × {code}: {sample}");
        }
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "latency:      p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            l.p50, l.p90, l.p99, l.max
        );
        let _ = writeln!(
            out,
            "responses:    {} bundles, {} not modified (whole run)",
            self.bundles_received, self.not_modified
        );
        if self.reports {
            let stored = match (self.reports_stored, self.report_rows) {
                (Some(n), Some(rows)) => format!("{n} stored, each once, in {rows} rows (the rest as repeats)"),
                _ => "not counted".into(),
            };
            let _ = writeln!(
                out,
                "reports:      {} queued, {} acknowledged as stored, {stored} (whole run)",
                self.reports_sent, self.reports_acked
            );
        }
        let rss = self.server.peak_rss_mib.map_or_else(String::new, |m| format!(", peak RSS {m:.1} MiB"));
        let _ = writeln!(out, "vigosrv:      {:.1} CPU s = {:.2} cores{rss}", self.server.cpu_secs, self.server.cores);
        let _ = writeln!(
            out,
            "generator:    {:.1} CPU s = {:.2} cores ({:.0}% of the machine's {} CPUs)",
            self.generator.cpu_secs,
            self.generator.cores,
            100.0 * self.generator.cores / self.cpus as f64,
            self.cpus
        );
        let _ = writeln!(
            out,
            "machine:      {:.0}% of {} CPUs busy ({:.1}% stolen by the hypervisor)",
            100.0 * self.machine_busy,
            self.cpus,
            100.0 * self.machine_steal
        );
        let verdict = if self.meets_target { "met" } else { "not met" };
        let _ = writeln!(out, "target (≥ {TARGET_PER_SEC:.0}/s with p99 < {TARGET_P99_MS} ms, no errors): {verdict}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let l = Latency::from_micros(&mut samples);
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        let mut one = vec![1500];
        let l = Latency::from_micros(&mut one);
        assert_eq!((l.p50, l.max), (1.5, 1.5));
        assert_eq!(Latency::from_micros(&mut []).p99, 0.0);
    }
}
