//! The agent daemon (`vigo run`): check in and converge every interval, and check in
//! early when something changes.
//!
//! Three things wake the loop before its interval: a change in a user's
//! `~/vigosync/` (the filesystem watch), a push from the server over the Events
//! stream (transfer orders waiting, a new publish), and a finished transfer (so the
//! server learns at once that the file landed). Early check-ins converge only when
//! they bring a new policy; the full pass keeps its interval. The daemon also runs
//! the swarm peer server, which serves files to the envoys the server names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::Notify;
use tokio::time::Instant;
use vigo_proto::{EventsRequest, Signed};
use vigo_swarm::scan::Scanner;

use crate::checkin::{Trigger, cycle, now};
use crate::paths::{AgentPaths, AgentSettings};
use crate::sync::Swarm;
use crate::watch::SyncWatch;

/// How long an early check-in waits for more events to arrive (a burst of file
/// changes becomes one check-in).
const DEBOUNCE: Duration = Duration::from_millis(25);

/// The gap enforced after an early check-in that followed another closely; it doubles
/// with each further one, up to [`EARLY_GAP_MAX`], and resets after a quiet spell.
const EARLY_GAP_MIN: Duration = Duration::from_millis(500);
/// The longest gap between early check-ins while they keep coming: a write loop costs
/// one check-in in this time, and a change elsewhere in the meantime waits no longer.
const EARLY_GAP_MAX: Duration = Duration::from_secs(5);

/// Spaces out early check-ins: the first after a quiet spell goes at once (after the
/// debounce); while wake-ups keep coming (a program rewriting a file in `~/vigosync`
/// in a loop) the gaps double, so a write loop costs a bounded number of check-ins.
#[derive(Debug)]
struct EarlyBackoff {
    gap: Duration,
    last: Option<Instant>,
}

impl EarlyBackoff {
    fn new() -> Self {
        Self { gap: EARLY_GAP_MIN, last: None }
    }

    /// How long to wait before the early check-in woken at `now`.
    fn delay(&mut self, now: Instant) -> Duration {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.gap * 2 => {
                let wait = (last + self.gap).saturating_duration_since(now).max(DEBOUNCE);
                self.gap = (self.gap * 2).min(EARLY_GAP_MAX);
                wait
            }
            _ => {
                self.gap = EARLY_GAP_MIN;
                DEBOUNCE
            }
        }
    }

    /// Notes that an early check-in ran at `at`.
    fn ran(&mut self, at: Instant) {
        self.last = Some(at);
    }
}

/// The longest wait between attempts to re-open the server's event stream.
const MAX_EVENTS_BACKOFF: Duration = Duration::from_secs(30);

/// Runs until SIGTERM or Ctrl-C.
pub async fn run_forever(paths: &AgentPaths) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let mut scanner = Scanner::new(crate::sync::load_cache(paths));
    let listen = SocketAddr::from(([0, 0, 0, 0], vigo_swarm::SWARM_PORT));
    let swarm = match Swarm::start(paths, scanner.cache().clone(), wake.clone(), listen).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "swarm not started; vigosync is off on this envoy");
            None
        }
    };
    let mut watch = match SyncWatch::new(wake.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no filesystem watch; vigosync changes wait for the next interval");
            None
        }
    };
    let events = tokio::spawn(subscribe(paths.clone(), wake.clone()));
    let mut conn = crate::client::Connection::default();
    let mut next_full = Instant::now();
    let mut early = EarlyBackoff::new();
    loop {
        let mut trigger = tokio::select! {
            () = tokio::time::sleep_until(next_full) => Trigger::Interval,
            () = wake.notified() => Trigger::Early,
            () = terminate() => break,
        };
        if trigger == Trigger::Early {
            let now = Instant::now();
            let wait = early.delay(now);
            if wait > DEBOUNCE {
                tracing::debug!(wait_ms = wait.as_millis() as u64, "early check-ins keep coming; spacing them out");
            }
            // Spacing out early check-ins never delays the interval's: a machine
            // flooded with wake-ups still checks in at least once an interval.
            let until_full = next_full.saturating_duration_since(now);
            if wait >= until_full {
                tokio::time::sleep(until_full).await;
                trigger = Trigger::Interval;
            } else {
                tokio::time::sleep(wait).await;
                early.ran(Instant::now());
            }
        }
        let interval = match cycle(paths, &mut conn, &mut scanner, trigger).await {
            Ok(c) => {
                if let Some(r) = &c.report {
                    tracing::info!(changed = r.summary.changed, failed = r.summary.failed, "convergence pass done");
                }
                if let Some(w) = &mut watch {
                    w.rearm(c.scan.dirs);
                }
                if let Some(s) = &swarm {
                    if let Some(revoked) = &c.revoked {
                        s.set_revoked(revoked);
                    }
                    s.dispatch(c.orders);
                    s.record_outgoing();
                    if trigger == Trigger::Interval {
                        s.sweep_parts(c.scan.accounts);
                    }
                }
                c.interval_secs
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cycle failed");
                AgentSettings::load(paths).map(|s| s.interval_secs).unwrap_or(60)
            }
        };
        if trigger == Trigger::Interval {
            next_full = Instant::now() + Duration::from_secs(u64::from(interval)) + splay(interval);
        }
    }
    events.abort();
    if let Some(s) = swarm {
        s.shutdown().await;
    }
    Ok(())
}

/// Keeps the server's event stream open, waking the loop on every event.
async fn subscribe(paths: AgentPaths, wake: Arc<Notify>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match listen_events(&paths, &wake).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "server event stream closed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_EVENTS_BACKOFF);
    }
}

async fn listen_events(paths: &AgentPaths, wake: &Notify) -> anyhow::Result<()> {
    let settings = AgentSettings::load(paths)?;
    let tls = crate::client::Credentials::load(paths)?.client_config()?;
    let signing = vigo_pki::SigningKey::load(&paths.signing_key())?;
    let body = EventsRequest { envoy: settings.name.clone() }.encode_to_vec();
    let sig = vigo_pki::sign_request(&signing, "Events", &body, now());
    let signed = Signed { body, timestamp: sig.timestamp, nonce: sig.nonce, signature: sig.signature.into_bytes() };
    let mut client = crate::client::connect_streaming(&settings.server, settings.grpc_port, tls).await?;
    let mut stream =
        client.events(signed).await.map_err(|s| anyhow::anyhow!("events refused: {}", s.message()))?.into_inner();
    tracing::debug!("server event stream open");
    while let Some(event) = stream.message().await? {
        tracing::debug!(?event, "server asks for a check-in");
        wake.notify_one();
    }
    Ok(())
}

/// Up to 10% of the interval, so a fleet started together spreads out.
fn splay(interval: u32) -> Duration {
    let max_ms = u64::from(interval) * 100;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    Duration::from_millis(u64::from(nanos) % max_ms.max(1))
}

async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            tokio::select! { _ = s.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        }
        Err(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write loop waking the daemon every 10 ms for ten minutes (simulated time):
    /// the early check-ins stay few, and after a quiet spell the next one is prompt.
    #[test]
    fn a_write_loop_costs_a_bounded_number_of_early_check_ins() {
        let start = Instant::now();
        let mut backoff = EarlyBackoff::new();
        let mut now = start;
        let mut check_ins = 0;
        let end = start + Duration::from_secs(600);
        while now < end {
            // Woken (events came meanwhile), wait as told, check in, get woken again.
            now += backoff.delay(now);
            check_ins += 1;
            backoff.ran(now);
            now += Duration::from_millis(10);
        }
        // 600 s at the 5 s cap is 120, plus the ramp-up; unbounded would be ~24,000.
        assert!(check_ins <= 130, "{check_ins} early check-ins in ten minutes");
        assert!(check_ins >= 115, "still checks in while changes keep coming: {check_ins}");
        // A quiet minute later, a change is reported at once again.
        now += Duration::from_secs(61);
        assert_eq!(backoff.delay(now), DEBOUNCE);
        backoff.ran(now);
        // A single follow-up soon after waits only the shortest gap.
        assert_eq!(backoff.delay(now + Duration::from_millis(100)), EARLY_GAP_MIN - Duration::from_millis(100));
    }
}
