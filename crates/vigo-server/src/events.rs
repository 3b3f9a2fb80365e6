//! The events hub: envoys hold a server-streaming `Events` call open, and the server
//! uses it to tell one envoy (transfer orders waiting) or all of them (a new publish)
//! to check in at once instead of at the next interval.
//!
//! A nudge carries no data: the envoy learns what changed from its next signed
//! check-in, so a lost or duplicated nudge costs at most one check-in. Each
//! subscription has a one-slot queue; a nudge that finds it full is already covered
//! by the one waiting. Streams carry no keepalives; a dropped stream removes its
//! subscription, and [`Hub::close`] ends every stream when the server stops.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use vigo_proto::{CheckInNow, Event, event};

/// Streams one envoy may hold open at once; a newer one ends the oldest, so an envoy
/// that reconnects without closing its old stream cannot pile them up.
pub const MAX_STREAMS_PER_ENVOY: usize = 4;

/// Why the server wants a check-in now.
pub const REASON_ORDERS: &str = "transfer orders";
pub const REASON_PUBLISH: &str = "publish";

/// Every open `Events` stream, by envoy.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    next_id: u64,
    closed: bool,
    streams: HashMap<String, Vec<(u64, mpsc::Sender<&'static str>)>>,
}

impl Hub {
    /// Opens a stream for `envoy`; `None` once the hub is closed (the server is stopping).
    pub fn subscribe(self: &Arc<Self>, envoy: &str) -> Option<EventStream> {
        let (tx, rx) = mpsc::channel(1);
        let id = {
            let mut inner = self.lock();
            if inner.closed {
                return None;
            }
            inner.next_id += 1;
            let id = inner.next_id;
            let streams = inner.streams.entry(envoy.to_string()).or_default();
            streams.retain(|(_, s)| !s.is_closed());
            if streams.len() >= MAX_STREAMS_PER_ENVOY {
                // Dropping the sender ends that stream on its next poll.
                streams.remove(0);
            }
            streams.push((id, tx));
            id
        };
        tracing::debug!(envoy, stream = id, "events stream opened");
        Some(EventStream { rx, hub: self.clone(), envoy: envoy.to_string(), id })
    }

    /// Asks `envoy` to check in now; false when it has no open stream.
    pub fn poke(&self, envoy: &str, reason: &'static str) -> bool {
        let inner = self.lock();
        let Some(streams) = inner.streams.get(envoy) else { return false };
        let mut reached = false;
        for (_, tx) in streams {
            // Full means a nudge is already waiting: the same check-in covers both.
            match tx.try_send(reason) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => reached = true,
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if reached {
            tracing::debug!(envoy, reason, "check-in requested");
        }
        reached
    }

    /// Asks every connected envoy to check in now.
    pub fn poke_all(&self, reason: &'static str) -> usize {
        let names: Vec<String> = self.lock().streams.keys().cloned().collect();
        names.iter().filter(|name| self.poke(name, reason)).count()
    }

    /// Ends the streams of one envoy (it was revoked).
    pub fn disconnect(&self, envoy: &str) {
        self.lock().streams.remove(envoy);
    }

    /// Ends every stream and refuses new ones, so a graceful shutdown is not held
    /// open by envoys waiting for events.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.streams.clear();
    }

    /// Open streams, all envoys together.
    pub fn streams(&self) -> usize {
        self.lock().streams.values().map(Vec::len).sum()
    }

    fn forget(&self, envoy: &str, id: u64) {
        let mut inner = self.lock();
        if let Some(streams) = inner.streams.get_mut(envoy) {
            streams.retain(|(i, _)| *i != id);
            if streams.is_empty() {
                inner.streams.remove(envoy);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        // Every update leaves the map consistent before any call that could panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One envoy's `Events` stream; dropping it (the envoy disconnected) unsubscribes.
pub struct EventStream {
    rx: mpsc::Receiver<&'static str>,
    hub: Arc<Hub>,
    envoy: String,
    id: u64,
}

impl tokio_stream::Stream for EventStream {
    type Item = Result<Event, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|reason| {
            reason.map(|r| Ok(Event { kind: Some(event::Kind::CheckInNow(CheckInNow { reason: r.to_string() })) }))
        })
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.hub.forget(&self.envoy, self.id);
        tracing::debug!(envoy = %self.envoy, stream = self.id, "events stream closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    fn reason(item: Option<Result<Event, tonic::Status>>) -> Option<String> {
        match item?.ok()?.kind? {
            event::Kind::CheckInNow(c) => Some(c.reason),
        }
    }

    #[tokio::test]
    async fn pokes_reach_only_their_envoy_and_coalesce() {
        let hub = Arc::new(Hub::default());
        let mut h1 = hub.subscribe("h1").expect("open");
        let mut h2 = hub.subscribe("h2").expect("open");
        assert!(hub.poke("h1", REASON_ORDERS));
        assert!(hub.poke("h1", REASON_PUBLISH), "a full queue still counts as reached");
        assert!(!hub.poke("h3", REASON_ORDERS), "no stream");
        assert_eq!(reason(h1.next().await).as_deref(), Some(REASON_ORDERS));
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), h2.next()).await;
        assert!(nothing.is_err(), "h2 was not poked");
        assert_eq!(hub.poke_all(REASON_PUBLISH), 2);
        assert_eq!(reason(h1.next().await).as_deref(), Some(REASON_PUBLISH));
        assert_eq!(reason(h2.next().await).as_deref(), Some(REASON_PUBLISH));
    }

    #[tokio::test]
    async fn dropped_streams_unsubscribe_and_close_ends_all() {
        let hub = Arc::new(Hub::default());
        let a = hub.subscribe("h1").expect("open");
        let mut b = hub.subscribe("h1").expect("open");
        assert_eq!(hub.streams(), 2);
        drop(a);
        assert_eq!(hub.streams(), 1);
        hub.close();
        assert_eq!(b.next().await.map(|r| r.is_ok()), None, "the stream ended");
        assert!(hub.subscribe("h1").is_none(), "closed hubs refuse new streams");
        drop(b);
        assert_eq!(hub.streams(), 0);
    }

    #[tokio::test]
    async fn an_envoy_holds_a_bounded_number_of_streams() {
        let hub = Arc::new(Hub::default());
        let mut first = hub.subscribe("h1").expect("open");
        let _rest: Vec<EventStream> = (0..MAX_STREAMS_PER_ENVOY).map(|_| hub.subscribe("h1").expect("open")).collect();
        assert_eq!(hub.streams(), MAX_STREAMS_PER_ENVOY);
        assert!(first.next().await.is_none(), "the oldest stream was ended");
        hub.disconnect("h1");
        assert_eq!(hub.streams(), 0);
    }
}
