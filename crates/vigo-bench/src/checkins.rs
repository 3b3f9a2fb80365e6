//! `vigo-bench checkins`: simulated envoys check in at a fixed interval against a
//! real `vigosrv`.
//!
//! Each envoy is a task holding what a real agent holds after enrollment (TLS
//! key and certificate, ED25519 request key, the server's bundle key) and sends
//! what the agent sends: a signed `CheckInBody` with its traits on the first
//! check-in, the bundle version it holds, and its queue of run reports (the report
//! of its last pass, plus any the server has not acknowledged yet). The server
//! acknowledges a report only once it is stored: under load, at the next check-in.
//! After the run, the server's database must hold every report queued, each once.
//! The first answer carries the bundle, whose signature is verified; after that the
//! server answers `NotModified`, the steady state of a fleet.
//!
//! Start times are spread evenly over one interval. Only answers that arrive
//! inside the measured window count; the warm-up lets connections, caches and
//! the server's batching writer settle first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use vigo_proto::agent_client::AgentClient;
use vigo_proto::{CheckInBody, QueuedReport, Signed, check_in_response};

use crate::harness::{self, Envoy, Server};
use crate::procfs;
use crate::report::{Latency, ProcessUse, Report, TARGET_P99_MS, TARGET_PER_SEC};
use crate::whole_body::WholeBody;

/// The rate the default interval aims at: a little above the target.
const DEFAULT_OFFERED_PER_SEC: u64 = 8000;
/// Time for every load task to be spawned before the first one is due.
const LEAD_IN: Duration = Duration::from_millis(300);

pub struct Options {
    pub envoys: usize,
    pub interval: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    pub vigosrv: PathBuf,
    pub reconnect: bool,
    pub tls_resume: bool,
    pub enroll_concurrency: usize,
    /// Send the last pass's report with every check-in, as the agent does.
    pub reports: bool,
    /// Every pass's outcome differs from the one before, not only its timings.
    pub reports_differ: bool,
    /// Print progress lines to stderr.
    pub progress: bool,
}

/// The interval at which `envoys` envoys offer about 8,000 check-ins per second.
pub fn default_interval(envoys: usize) -> Duration {
    let envoys = u64::try_from(envoys).unwrap_or(u64::MAX);
    Duration::from_micros((envoys.saturating_mul(1_000_000) / DEFAULT_OFFERED_PER_SEC).max(1000))
}

/// Starts a server, enrolls the envoys, runs the load and stops the server.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let server = Arc::new(Server::start(&options.vigosrv).await?);
    let measured = measure(&server, options).await;
    let measured = measured.map_err(|e| anyhow::anyhow!("{e:#}\nlast server log lines:\n{}", server.log_tail()));
    // Every task holding the server has finished by now; if one had not, dropping
    // the last handle kills the process instead.
    let stopping = Instant::now();
    let stopped = match Arc::try_unwrap(server) {
        Ok(server) => server.stop().await.map(Some),
        Err(_) => Ok(None),
    };
    if options.progress {
        eprintln!("vigo-bench: vigosrv stopped in {:.1} s", stopping.elapsed().as_secs_f64());
    }
    let (mut report, sent_by_envoy) = measured?;
    if let Some(dir) = stopped? {
        let (runs, rows) = count_stored(&dir.path().join("state/vigo.db"), &sent_by_envoy).await?;
        report.reports_stored = Some(runs);
        report.report_rows = Some(rows);
    }
    Ok(report)
}

/// The runs the server's database accounts for and the rows holding them, after
/// checking that each envoy's are exactly the ones it queued (sequence numbers 1 up to
/// its last), each once: a row's own run and those counted as its repeats.
async fn count_stored(db: &std::path::Path, sent_by_envoy: &[(String, u64)]) -> anyhow::Result<(u64, u64)> {
    let store = vigo_store::Store::open(&format!("sqlite://{}", db.display()))
        .await
        .with_context(|| format!("{}: cannot open the server's database", db.display()))?;
    let (mut runs, mut rows) = (0, 0);
    for (envoy, sent) in sent_by_envoy {
        let stored = store.reports(envoy).await?;
        let mut seqs: Vec<i64> = Vec::new();
        for r in &stored {
            // Every run of a simulated envoy is reported, so repeats leave no gap.
            let Some(runs) = r.runs() else {
                anyhow::bail!("{envoy}: row {} has repeats {:?} that leave a gap", r.seq, r.repeats);
            };
            seqs.extend(runs);
        }
        if !seqs.iter().map(|&s| u64::try_from(s).unwrap_or(0)).eq(1..=*sent) {
            let shown: Vec<i64> = seqs.iter().copied().take(20).collect();
            anyhow::bail!(
                "{envoy} queued reports 1..={sent}, the server accounts for {} (first: {shown:?})",
                seqs.len()
            );
        }
        runs += seqs.len() as u64;
        rows += stored.len() as u64;
    }
    store.close().await;
    Ok((runs, rows))
}

/// When each phase starts and ends.
#[derive(Clone, Copy)]
struct Plan {
    start: Instant,
    interval: Duration,
    window_start: Instant,
    window_end: Instant,
    envoys: usize,
    reconnect: bool,
}

/// Runs the load; returns the report and, per envoy, how many reports it queued.
async fn measure(server: &Arc<Server>, options: &Options) -> anyhow::Result<(Report, Vec<(String, u64)>)> {
    let note = |text: String| {
        if options.progress {
            eprintln!("vigo-bench: {text}");
        }
    };
    server.publish().await.context("publishing the benchmark configuration")?;
    note(format!("enrolling {} envoys, {} at a time", options.envoys, options.enroll_concurrency));
    let began = Instant::now();
    let envoys = harness::enroll_all(server, options.envoys, options.enroll_concurrency).await?;
    let enrollment = began.elapsed();
    note(format!(
        "enrolled in {:.1} s; load for {:.0} s",
        enrollment.as_secs_f64(),
        (options.warmup + options.duration).as_secs_f64()
    ));

    let traits = Arc::new(Traits::collect()?);
    let pass = if options.reports { Some(Arc::new(PassReport::new(options.reports_differ)?)) } else { None };
    let start = Instant::now() + LEAD_IN;
    let window_start = start + options.warmup;
    let plan = Plan {
        start,
        interval: options.interval,
        window_start,
        window_end: window_start + options.duration,
        envoys: envoys.len(),
        reconnect: options.reconnect,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mut envoy) in envoys.into_iter().enumerate() {
        if options.reconnect && !options.tls_resume {
            // The agent builds a new TLS config for every check-in, so it never resumes.
            envoy.tls.resumption = rustls::client::Resumption::disabled();
        }
        let simulated = Simulated { envoy, port: server.grpc_port, traits: traits.clone(), pass: pass.clone() };
        tasks.spawn(simulated.drive(index, plan));
    }

    tokio::time::sleep_until(window_start).await;
    let before = Sample::take(server.pid)?;
    tokio::time::sleep_until(plan.window_end).await;
    let after = Sample::take(server.pid)?;
    let mut tally = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        tally.merge(joined.context("a simulated envoy panicked")?);
    }
    let peak_rss_kib = procfs::peak_rss_kib(server.pid)?;

    let window = options.duration.as_secs_f64();
    // CPU counters are divided by the time between their own samples, which may
    // start a little late when the generator is saturated.
    let sampled = (after.at - before.at).as_secs_f64().max(f64::MIN_POSITIVE);
    let use_of = |cpu_secs: f64, peak_rss_mib| ProcessUse { cpu_secs, cores: cpu_secs / sampled, peak_rss_mib };
    let checkins = u64::try_from(tally.latencies_us.len()).unwrap_or(u64::MAX);
    let latency = Latency::from_micros(&mut tally.latencies_us);
    let checkins_per_sec = checkins as f64 / window;
    let cpus = procfs::cpus();
    let errors: u64 = tally.errors.values().sum();
    let report = Report {
        envoys: options.envoys,
        interval_ms: options.interval.as_secs_f64() * 1000.0,
        offered_per_sec: options.envoys as f64 / options.interval.as_secs_f64(),
        connections: if options.reconnect { "reconnect" } else { "persistent" },
        tls_resume: options.tls_resume,
        reports: options.reports,
        reports_differ: options.reports && options.reports_differ,
        enrollment_secs: enrollment.as_secs_f64(),
        warmup_secs: options.warmup.as_secs_f64(),
        window_secs: window,
        checkins,
        checkins_per_sec,
        meets_target: checkins_per_sec >= TARGET_PER_SEC && latency.p99 < TARGET_P99_MS && errors == 0,
        latency_ms: latency,
        errors: tally.errors,
        error_samples: tally.error_samples,
        missed_ticks: tally.missed_ticks,
        bundles_received: tally.bundles,
        not_modified: tally.not_modified,
        reports_sent: tally.reports_sent,
        reports_acked: tally.reports_acked,
        reports_stored: None,
        report_rows: None,
        server: use_of(after.server_cpu - before.server_cpu, Some(peak_rss_kib as f64 / 1024.0)),
        generator: use_of(after.own_cpu - before.own_cpu, None),
        machine_busy: (after.machine.busy - before.machine.busy)
            / (after.machine.total - before.machine.total).max(f64::MIN_POSITIVE),
        machine_steal: (after.machine.steal - before.machine.steal)
            / (after.machine.total - before.machine.total).max(f64::MIN_POSITIVE),
        cpus,
    };
    Ok((report, tally.sent_by_envoy))
}

/// CPU counters at one instant.
struct Sample {
    at: Instant,
    server_cpu: f64,
    own_cpu: f64,
    machine: procfs::MachineCpu,
}

impl Sample {
    fn take(server_pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            machine: procfs::machine_cpu_secs()?,
            at: Instant::now(),
            server_cpu: procfs::process_cpu_secs(server_pid)?,
            own_cpu: procfs::self_cpu_secs()?,
        })
    }
}

/// This machine's traits, sent by every envoy on its first check-in.
struct Traits {
    json: Vec<u8>,
    digest: String,
}

impl Traits {
    fn collect() -> anyhow::Result<Self> {
        let json = serde_json::to_vec(&vigo_agent::cli::traits::collect_all())?;
        let digest = Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { json, digest })
    }
}

/// The report an agent sends after a pass in which nothing drifted. Its timings vary
/// from pass to pass; with `differ`, so does its outcome (a resource's output names the
/// pass).
struct PassReport {
    template: String,
    differ: bool,
}

/// Stand-ins in the template for a pass's timings and its sequence number.
const DURATION_MARK: &str = "987654321";
const PASS_MARK: &str = "123454321";

impl PassReport {
    fn new(differ: bool) -> anyhow::Result<Self> {
        use vigo_agent::report::{Report, ResourceReport, Status};
        let motd = ResourceReport {
            module: "bench".into(),
            name: "motd".into(),
            type_name: "file".into(),
            status: Status::Unchanged,
            changes: Vec::new(),
            diff: None,
            error: None,
            reason: None,
            output: differ.then(|| format!("pass {PASS_MARK}")),
            warnings: Vec::new(),
            duration_ms: DURATION_MARK.parse()?,
        };
        let report = Report::new(vigo_executors::Mode::Enforce, vec![motd], DURATION_MARK.parse()?);
        Ok(Self { template: serde_json::to_string(&report)?, differ })
    }

    /// The report of pass `seq`.
    fn json(&self, seq: u64) -> Vec<u8> {
        let ms = 2 + seq % 5;
        let mut json = self.template.replace(DURATION_MARK, &ms.to_string());
        if self.differ {
            json = json.replace(PASS_MARK, &seq.to_string());
        }
        json.into_bytes()
    }
}

/// What one envoy (or the whole run) observed.
#[derive(Default)]
struct Tally {
    /// Microseconds, for answers inside the window.
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    error_samples: BTreeMap<String, String>,
    missed_ticks: u64,
    bundles: u64,
    not_modified: u64,
    /// Reports sent (each once, however often resent) and acknowledged as stored.
    reports_sent: u64,
    reports_acked: u64,
    /// Each envoy's name and the number of reports it queued.
    sent_by_envoy: Vec<(String, u64)>,
}

impl Tally {
    fn fail(&mut self, kind: String, message: String) {
        *self.errors.entry(kind.clone()).or_default() += 1;
        self.error_samples.entry(kind).or_insert(message);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, message) in other.error_samples {
            self.error_samples.entry(kind).or_insert(message);
        }
        self.missed_ticks += other.missed_ticks;
        self.bundles += other.bundles;
        self.not_modified += other.not_modified;
        self.reports_sent += other.reports_sent;
        self.reports_acked += other.reports_acked;
        self.sent_by_envoy.extend(other.sent_by_envoy);
    }
}

enum Answer {
    Bundle,
    NotModified,
}

/// A failed check-in: its kind (a gRPC code name, `connect` or `bad_bundle`) and message.
struct Failure {
    kind: String,
    message: String,
}

/// One simulated envoy and its agent-side state.
struct Simulated {
    envoy: Envoy,
    port: u16,
    traits: Arc<Traits>,
    pass: Option<Arc<PassReport>>,
}

/// What the agent remembers between check-ins.
#[derive(Default)]
struct AgentState {
    policy_version: String,
    traits_sent: bool,
    report_seq: u64,
    /// Reports not acknowledged yet, oldest first.
    unacked: Vec<(u64, Vec<u8>)>,
    client: Option<AgentClient<WholeBody>>,
}

impl Simulated {
    async fn drive(self, index: usize, plan: Plan) -> Tally {
        let mut tally = Tally::default();
        let mut state = AgentState::default();
        let offset = plan.interval.mul_f64(index as f64 / plan.envoys as f64);
        let mut next = plan.start + offset;
        if !plan.reconnect {
            // A persistent channel is opened before the load, not inside a measured check-in.
            state.client = self.connect().await.ok();
        }
        while next < plan.window_end {
            tokio::time::sleep_until(next).await;
            let sent = Instant::now();
            let outcome = self.check_in(&mut state, plan.reconnect, &mut tally).await;
            let done = Instant::now();
            let in_window = done >= plan.window_start && done < plan.window_end;
            match outcome {
                Ok(answer) => {
                    match answer {
                        Answer::Bundle => tally.bundles += 1,
                        Answer::NotModified => tally.not_modified += 1,
                    }
                    if in_window {
                        let micros = (done - sent).as_micros();
                        tally.latencies_us.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                }
                Err(f) if in_window => tally.fail(f.kind, f.message),
                Err(_) => {}
            }
            next += plan.interval;
            while next < done {
                if next >= plan.window_start && next < plan.window_end {
                    tally.missed_ticks += 1;
                }
                next += plan.interval;
            }
        }
        tally.sent_by_envoy.push((self.envoy.name.clone(), state.report_seq));
        tally
    }

    /// Connects as the agent does (mutual TLS, the same deadlines), through
    /// [`WholeBody`], the generator's lean channel.
    async fn connect(&self) -> Result<AgentClient<WholeBody>, Failure> {
        let addr = format!("127.0.0.1:{}", self.port);
        let channel =
            WholeBody::connect("127.0.0.1", addr.clone(), self.envoy.tls.clone()).await.map_err(|e| Failure {
                kind: "connect".into(),
                message: format!("cannot connect to {addr}: {}", vigo_proto::error_chain(&*e)),
            })?;
        Ok(AgentClient::new(channel))
    }

    async fn check_in(&self, state: &mut AgentState, reconnect: bool, tally: &mut Tally) -> Result<Answer, Failure> {
        let mut client = match state.client.take() {
            Some(c) if !reconnect => c,
            _ => self.connect().await?,
        };
        // The last pass's report joins the queue; the agent sends at most 50 at a time.
        if let Some(pass) = &self.pass {
            state.report_seq += 1;
            state.unacked.push((state.report_seq, pass.json(state.report_seq)));
            tally.reports_sent += 1;
        }
        let reports = state
            .unacked
            .iter()
            .take(vigo_agent::queue::BATCH)
            .map(|(seq, json)| QueuedReport { seq: *seq, json: json.clone() })
            .collect();
        let body = CheckInBody {
            envoy: self.envoy.name.clone(),
            traits_digest: self.traits.digest.clone(),
            traits_json: (!state.traits_sent).then(|| self.traits.json.clone()),
            policy_version: state.policy_version.clone(),
            reports,
            revocations_digest: String::new(),
        };
        let bytes = body.encode_to_vec();
        let sig = vigo_pki::sign_request(&self.envoy.signing, "CheckIn", &bytes, vigo_agent::checkin::now());
        let signed =
            Signed { body: bytes, timestamp: sig.timestamp, nonce: sig.nonce, signature: sig.signature.into_bytes() };
        let reply = client
            .check_in(signed)
            .await
            .map_err(|s| Failure { kind: format!("{:?}", s.code()), message: s.message().to_string() })?
            .into_inner();
        if !reconnect {
            // Kept only after a success, so a broken channel is replaced at the next tick.
            state.client = Some(client);
        }
        state.traits_sent = !reply.send_traits;
        let before = state.unacked.len();
        state.unacked.retain(|(seq, _)| *seq > reply.acked_seq);
        tally.reports_acked += (before - state.unacked.len()) as u64;
        match reply.policy {
            Some(check_in_response::Policy::Bundle(b)) => {
                let signature = String::from_utf8_lossy(&b.signature);
                vigo_pki::verify_bundle(&self.envoy.bundle_key, &b.payload, &signature)
                    .map_err(|e| Failure { kind: "bad_bundle".into(), message: e.to_string() })?;
                state.policy_version = b.version;
                Ok(Answer::Bundle)
            }
            Some(check_in_response::Policy::NotModified(_)) => Ok(Answer::NotModified),
            None => Err(Failure {
                kind: "no_policy".into(),
                message: "the answer carries neither bundle nor not-modified".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_interval_offers_about_8000_per_second() {
        assert_eq!(default_interval(200), Duration::from_millis(25));
        assert_eq!(default_interval(100_000), Duration::from_micros(12_500_000));
        assert_eq!(default_interval(1), Duration::from_millis(1));
    }

    /// A run against a real vigosrv (debug build, from the workspace's target directory):
    /// three envoys, two seconds.
    async fn three_envoys(reports_differ: bool) -> Report {
        vigo_pki::install_provider();
        let vigosrv = harness::sibling_binary("vigosrv").expect("vigosrv is built (cargo build -p vigo-server)");
        let options = Options {
            envoys: 3,
            interval: Duration::from_millis(100),
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(2),
            vigosrv,
            reconnect: false,
            tls_resume: false,
            enroll_concurrency: 3,
            reports: true,
            reports_differ,
            progress: false,
        };
        run(&options).await.expect("benchmark runs")
    }

    /// Every check-in succeeds and the steady state is NotModified; every run is
    /// accounted for once, and runs that differ only in timings take one row per envoy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_envoys_check_in_against_a_real_server() {
        let report = three_envoys(false).await;
        assert!(report.errors.is_empty(), "failed check-ins: {:?} {:?}", report.errors, report.error_samples);
        assert_eq!(report.bundles_received, 3, "each envoy gets the bundle once");
        // 3 envoys × 10/s × 2 s; allow for scheduling slack on a busy machine.
        assert!(report.checkins >= 40, "only {} check-ins in the window", report.checkins);
        assert!(report.not_modified >= report.checkins, "not modified: {}", report.not_modified);
        // Every report queued is stored, each once; the answers acknowledge them once
        // stored (the last ones may still wait for the next check-in).
        assert_eq!(report.reports_stored, Some(report.reports_sent));
        assert_eq!(report.report_rows, Some(3), "one outcome per envoy, one row each");
        assert!(report.reports_acked <= report.reports_sent);
        assert!(
            report.reports_acked + 2 * 3 >= report.reports_sent,
            "{} of {}",
            report.reports_acked,
            report.reports_sent
        );
        assert!(report.reports_acked >= report.checkins);
        assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
        assert!(report.server.cpu_secs > 0.0, "server CPU was not measured");
        assert!(report.server.peak_rss_mib.is_some_and(|m| m > 1.0));
    }

    /// Runs whose outcomes all differ are each stored as a row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_that_differ_are_each_a_row() {
        let report = three_envoys(true).await;
        assert!(report.errors.is_empty(), "failed check-ins: {:?} {:?}", report.errors, report.error_samples);
        assert!(report.reports_sent >= 40, "only {} reports", report.reports_sent);
        assert_eq!(report.reports_stored, Some(report.reports_sent));
        assert_eq!(report.report_rows, Some(report.reports_sent));
    }
}
