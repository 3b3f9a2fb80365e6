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
    loop {
        let trigger = tokio::select! {
            () = tokio::time::sleep_until(next_full) => Trigger::Interval,
            () = wake.notified() => Trigger::Early,
            () = terminate() => break,
        };
        if trigger == Trigger::Early {
            tokio::time::sleep(DEBOUNCE).await;
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
