//! The peer server every envoy runs on TCP 1531: gRPC over mutual TLS, serving
//! content to the envoy a signed order names, as a stream of hashed chunks.
//!
//! A fetch is answered only when every check passes: the client presented a
//! fleet certificate that is not revoked (enforced at the handshake, and again
//! at every request, since a connection outlives a revocation), the order
//! carries the server's signature and has not expired, this envoy is its
//! source, the client's certificate is the very one the server issued to its
//! target (name and SHA-256 fingerprint), and the content source still holds
//! the version the order names. Every refusal is logged with the peer's
//! identity and the reason.
//!
//! No peer can hold the transfer slots: transfers are bounded in total and per
//! client identity (a fetch beyond either bound is told to come back later,
//! `RESOURCE_EXHAUSTED`); a stream the client stops reading is ended once a
//! chunk has waited [`DEFAULT_WRITE_TIMEOUT`] to go out; a stream is stopped
//! when its order expires or the client's certificate is revoked mid-transfer.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tonic::{Code, Request, Response, Status};
use vigo_pki::{PublicKey, RevocationList};
use vigo_proto::swarm_server::{Swarm, SwarmServer};
use vigo_proto::tls_serve::{Peer, tls_incoming};
use vigo_proto::{Chunk, FetchRequest};

use crate::order::{SignedOrder, TransferOrder};
use crate::source::{Content, ContentSource};

/// Bytes per chunk: large enough that per-message overhead vanishes, small enough
/// that a corrupted chunk costs little to fetch again.
pub const CHUNK_SIZE: usize = 256 * 1024;
/// Transfers served at once unless configured otherwise.
pub const DEFAULT_MAX_TRANSFERS: usize = 16;
/// Transfers served at once to one client identity unless configured otherwise:
/// well under [`DEFAULT_MAX_TRANSFERS`], so one peer never holds every slot.
pub const DEFAULT_MAX_PER_PEER: usize = 4;
/// How long a chunk may wait for the client to take it before the stream is ended.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// Chunks read ahead of the network per transfer (memory per transfer: this × [`CHUNK_SIZE`]).
const READ_AHEAD_CHUNKS: usize = 4;
/// A fetch request is an order and an offset; anything bigger is not one.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// HTTP/2 flow-control windows: a whole chunk in flight several times over, so a
/// transfer is never waiting for window updates on a fast link.
pub(crate) const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub(crate) const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// How long [`PeerServer::shutdown`] lets running transfers finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the peer server could not run.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("swarm peer port {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("swarm peer server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("swarm peer server task: {0}")]
    Task(String),
}

/// What the peer server needs: who it is, whose orders it trusts, whom it
/// refuses, what it serves.
pub struct PeerState {
    /// This envoy's name (the identity in its certificate).
    pub me: String,
    /// The server's order-signing (bundle) key.
    pub server_key: PublicKey,
    /// The certificates the server revoked (the same list the TLS config refuses).
    revoked: RevocationList,
    sources: BTreeMap<String, Arc<dyn ContentSource>>,
    permits: Arc<Semaphore>,
    max_transfers: usize,
    /// Transfers running per client identity.
    per_peer: Arc<Mutex<HashMap<String, usize>>>,
    max_per_peer: usize,
    write_timeout: Duration,
    #[doc(hidden)]
    pub hooks: TestHooks,
}

impl PeerState {
    /// `revoked` must be the list given to [`crate::tls::server_tls`] (the agent keeps
    /// it up to date from its check-ins): it is consulted again at every request.
    pub fn new(me: impl Into<String>, server_key: PublicKey, revoked: RevocationList) -> Self {
        Self {
            me: me.into(),
            server_key,
            revoked,
            sources: BTreeMap::new(),
            permits: Arc::new(Semaphore::new(DEFAULT_MAX_TRANSFERS)),
            max_transfers: DEFAULT_MAX_TRANSFERS,
            per_peer: Arc::default(),
            max_per_peer: DEFAULT_MAX_PER_PEER,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            hooks: TestHooks::default(),
        }
    }

    /// At most `max` transfers at once to one client identity (at least one).
    #[must_use]
    pub fn with_max_per_peer(mut self, max: usize) -> Self {
        self.max_per_peer = max.max(1);
        self
    }

    /// Ends a stream once a chunk has waited `timeout` for the client to take it.
    #[must_use]
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Serves orders of `kind` (e.g. `"vigosync"`) from `source`.
    #[must_use]
    pub fn with_source(mut self, kind: impl Into<String>, source: Arc<dyn ContentSource>) -> Self {
        self.sources.insert(kind.into(), source);
        self
    }

    /// At most `max` transfers at once (at least one).
    #[must_use]
    pub fn with_max_transfers(mut self, max: usize) -> Self {
        self.permits = Arc::new(Semaphore::new(max.max(1)));
        self.max_transfers = max.max(1);
        self
    }
}

impl PeerState {
    /// Transfers being served right now.
    pub fn active_transfers(&self) -> usize {
        self.max_transfers.saturating_sub(self.permits.available_permits())
    }

    /// Transfers being served right now to client identity `peer`.
    pub fn active_transfers_of(&self, peer: &str) -> usize {
        self.per_peer.lock().unwrap_or_else(PoisonError::into_inner).get(peer).copied().unwrap_or(0)
    }

    /// Claims one of `peer`'s transfer slots, or `None` when it has them all.
    fn claim_peer_slot(&self, peer: &str) -> Option<PeerSlot> {
        let mut running = self.per_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let count = running.entry(peer.to_string()).or_insert(0);
        if *count >= self.max_per_peer {
            return None;
        }
        *count += 1;
        Some(PeerSlot { running: Arc::clone(&self.per_peer), peer: peer.to_string() })
    }
}

/// One of a client identity's transfer slots, released when the transfer ends.
struct PeerSlot {
    running: Arc<Mutex<HashMap<String, usize>>>,
    peer: String,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = running.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.peer);
            }
        }
    }
}

/// Fault injection for tests: each hook fires once and then disarms.
#[doc(hidden)]
#[derive(Default)]
pub struct TestHooks {
    /// Damage the first chunk starting at or after this offset, after its hash was computed.
    pub corrupt_at: Mutex<Option<u64>>,
    /// End the next stream with an error once it has sent at least this many bytes.
    pub cut_after: Mutex<Option<u64>>,
    /// Run once the first chunk of a stream has gone out.
    pub after_first_chunk: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The offset of every fetch that got content.
    pub served_offsets: Mutex<Vec<u64>>,
}

impl TestHooks {
    fn take_corrupt(&self, offset: u64) -> bool {
        let mut at = self.corrupt_at.lock().unwrap_or_else(PoisonError::into_inner);
        if at.is_some_and(|from| offset >= from) {
            *at = None;
            return true;
        }
        false
    }

    fn take_cut(&self, sent: u64) -> bool {
        let mut cut = self.cut_after.lock().unwrap_or_else(PoisonError::into_inner);
        if cut.is_some_and(|limit| sent >= limit) {
            *cut = None;
            return true;
        }
        false
    }

    fn run_after_first_chunk(&self) {
        let hook = self.after_first_chunk.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(hook) = hook {
            hook();
        }
    }

    fn record_offset(&self, offset: u64) {
        self.served_offsets.lock().unwrap_or_else(PoisonError::into_inner).push(offset);
    }
}

/// A running peer server.
pub struct PeerServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), PeerError>>,
}

impl PeerServer {
    /// Binds `addr` (the swarm port, [`crate::SWARM_PORT`], in production) and starts serving.
    pub async fn bind(addr: SocketAddr, tls: rustls::ServerConfig, state: Arc<PeerState>) -> Result<Self, PeerError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| PeerError::Bind { addr, source })?;
        Self::start(listener, tls, state)
    }

    /// Starts serving on a bound listener.
    pub fn start(listener: TcpListener, tls: rustls::ServerConfig, state: Arc<PeerState>) -> Result<Self, PeerError> {
        let addr = listener.local_addr().map_err(|source| PeerError::Bind { addr: unspecified(), source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, tls, state, async move {
            let _ = stopped.await;
        }));
        tracing::info!(%addr, "swarm peer server listening");
        Ok(Self { addr, stop: Some(stop), task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets running transfers finish for a while, then ends them.
    pub async fn shutdown(mut self) -> Result<(), PeerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(joined) => joined.map_err(|e| PeerError::Task(e.to_string()))?,
            Err(_) => {
                tracing::warn!(addr = %self.addr, "swarm transfers still running at shutdown; ending them");
                self.task.abort();
                Ok(())
            }
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Serves the swarm API on `listener` until `shutdown` resolves, then lets running
/// transfers finish. `tls` must require client certificates (see [`crate::tls::server_tls`]).
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    state: Arc<PeerState>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), PeerError> {
    let incoming = tls_incoming(listener, TlsAcceptor::from(Arc::new(tls)));
    let service = SwarmServer::new(SwarmService { state }).max_decoding_message_size(MAX_REQUEST_BYTES);
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

struct SwarmService {
    state: Arc<PeerState>,
}

/// Who asked, for logs.
struct Asker {
    identity: Option<String>,
    addr: Option<SocketAddr>,
}

impl Asker {
    fn refuse(&self, order: Option<&TransferOrder>, reason: &dyn std::fmt::Display, code: Code) -> Status {
        tracing::warn!(
            peer = self.identity.as_deref().unwrap_or("-"),
            addr = ?self.addr,
            order = order.map_or("-", |o| o.id.as_str()),
            %reason,
            "swarm fetch refused"
        );
        Status::new(code, reason.to_string())
    }
}

fn now_unix() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl Swarm for SwarmService {
    type FetchStream = Transfer;

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        let peer = request.extensions().get::<Peer>().cloned();
        let fingerprint = peer.as_ref().and_then(|p| p.fingerprint.clone()).unwrap_or_default();
        let asker = Asker {
            identity: peer.as_ref().and_then(|p| p.identity.clone()),
            addr: peer.and_then(|p| p.addr).or_else(|| request.remote_addr()),
        };
        let Some(identity) = asker.identity.clone() else {
            return Err(asker.refuse(None, &"no client certificate", Code::Unauthenticated));
        };
        let state = &self.state;
        // The handshake refused it if it was revoked then; the connection may be older.
        if state.revoked.is_revoked(&fingerprint) {
            return Err(asker.refuse(None, &"client certificate is revoked", Code::PermissionDenied));
        }

        let req = request.into_inner();
        let signed = SignedOrder { payload: req.order_payload, signature: req.order_signature };
        let order =
            signed.verify(&state.server_key, now_unix()).map_err(|e| asker.refuse(None, &e, Code::PermissionDenied))?;
        order
            .check_parties(&state.me, &identity, &fingerprint)
            .map_err(|e| asker.refuse(Some(&order), &e, Code::PermissionDenied))?;
        let slot = state.claim_peer_slot(&identity).ok_or_else(|| {
            let reason = format!("{identity} already has {} transfers running", state.max_per_peer);
            asker.refuse(Some(&order), &reason, Code::ResourceExhausted)
        })?;
        let permit = state
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| asker.refuse(Some(&order), &"too many transfers running", Code::ResourceExhausted))?;
        let Some(source) = state.sources.get(&order.kind).cloned() else {
            let reason = format!("no content of kind {:?} is served here", order.kind);
            return Err(asker.refuse(Some(&order), &reason, Code::FailedPrecondition));
        };
        if req.offset > order.size {
            let reason = format!("offset {} is past the end ({} bytes)", req.offset, order.size);
            return Err(asker.refuse(Some(&order), &reason, Code::OutOfRange));
        }

        let opened = {
            let order = order.clone();
            tokio::task::spawn_blocking(move || source.open(&order)).await
        };
        let content = match opened {
            Ok(Ok(content)) => content,
            Ok(Err(e)) => return Err(asker.refuse(Some(&order), &e, e.code())),
            Err(e) => return Err(asker.refuse(Some(&order), &e, Code::Internal)),
        };
        if content.len != order.size {
            let reason = format!("content has {} bytes, the order is for {}", content.len, order.size);
            return Err(asker.refuse(Some(&order), &reason, Code::FailedPrecondition));
        }

        tracing::info!(peer = %identity, order = %order.id, kind = %order.kind, offset = req.offset, size = order.size, "swarm fetch serving");
        state.hooks.record_offset(req.offset);
        let (tx, rx) = mpsc::channel(READ_AHEAD_CHUNKS);
        let (end_tx, end_rx) = oneshot::channel();
        let serving = Serving {
            state: Arc::clone(state),
            runtime: tokio::runtime::Handle::current(),
            tx,
            order,
            peer: identity,
            fingerprint,
        };
        let offset = req.offset;
        tokio::task::spawn_blocking(move || {
            if let Some(status) = serving.run(&content, offset) {
                let _ = end_tx.send(status);
            }
            drop((permit, slot));
        });
        Ok(Response::new(Transfer { chunks: rx, end: Some(end_rx) }))
    }
}

/// The response stream of one transfer: the chunks, then, when the transfer was
/// stopped without room to say so in the chunk queue (a client that stopped
/// reading), the status it was stopped with.
pub struct Transfer {
    chunks: mpsc::Receiver<Result<Chunk, Status>>,
    end: Option<oneshot::Receiver<Status>>,
}

impl tokio_stream::Stream for Transfer {
    type Item = Result<Chunk, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(item) = std::task::ready!(self.chunks.poll_recv(cx)) {
            return Poll::Ready(Some(item));
        }
        let Some(end) = self.end.as_mut() else { return Poll::Ready(None) };
        let ended = std::task::ready!(Pin::new(end).poll(cx));
        self.end = None;
        Poll::Ready(ended.ok().map(Err))
    }
}

/// One transfer being served, on a blocking thread.
struct Serving {
    state: Arc<PeerState>,
    runtime: tokio::runtime::Handle,
    tx: mpsc::Sender<Result<Chunk, Status>>,
    order: TransferOrder,
    peer: String,
    fingerprint: String,
}

/// How handing one message to the client went.
enum Sent {
    Taken,
    /// The client ended the stream.
    Gone,
    /// The client did not take it in time, or the order expired meanwhile.
    Stopped(Status),
}

impl Serving {
    /// Reads `content` from `offset` to its end into hashed chunks, waiting whenever
    /// the network is behind (the stream's backpressure), but never past the write
    /// timeout or the order's expiry. Returns the status to end the stream with when
    /// it was stopped and the chunk queue had no room for it.
    fn run(&self, content: &Content, mut offset: u64) -> Option<Status> {
        let (hooks, order, peer) = (&self.state.hooks, &self.order, self.peer.as_str());
        let mut sent = 0u64;
        while offset < content.len {
            if let Some(status) = self.stop_reason() {
                return self.end(status);
            }
            if hooks.take_cut(sent) {
                return self.end(Status::unavailable("transfer cut"));
            }
            let len = usize::try_from((content.len - offset).min(CHUNK_SIZE as u64)).expect("at most one chunk");
            let mut data = vec![0u8; len];
            if let Err(e) = content.file.read_exact_at(&mut data, offset) {
                tracing::warn!(%peer, order = %order.id, offset, error = %e, "swarm content unreadable mid-transfer");
                let status = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Status::failed_precondition("content changed while being served")
                } else {
                    Status::unavailable(format!("reading the content failed: {e}"))
                };
                return self.end(status);
            }
            let sha256 = Sha256::digest(&data).to_vec();
            if hooks.take_corrupt(offset) {
                data[0] ^= 0x01;
            }
            match self.send(Ok(Chunk { offset, data, sha256 })) {
                Sent::Taken => {}
                Sent::Gone => {
                    tracing::info!(%peer, order = %order.id, offset, "swarm fetch ended by the peer");
                    return None;
                }
                Sent::Stopped(status) => {
                    tracing::warn!(%peer, order = %order.id, offset, reason = %status.message(), "swarm fetch stopped");
                    return Some(status);
                }
            }
            offset += len as u64;
            if sent == 0 {
                hooks.run_after_first_chunk();
            }
            sent += len as u64;
        }
        tracing::info!(%peer, order = %order.id, bytes = sent, "swarm fetch served");
        None
    }

    /// Why the transfer must not go on: its order expired or the client's
    /// certificate was revoked since it started.
    fn stop_reason(&self) -> Option<Status> {
        if now_unix() > self.order.expires_at {
            let why = format!("transfer order {} expired at {}", self.order.id, self.order.expires_at);
            return Some(Status::deadline_exceeded(why));
        }
        if self.state.revoked.is_revoked(&self.fingerprint) {
            return Some(Status::permission_denied("client certificate was revoked"));
        }
        None
    }

    /// Ends the stream with `status`: in the chunk queue when the client takes it,
    /// else returned for [`Transfer`] to deliver after the queue.
    fn end(&self, status: Status) -> Option<Status> {
        tracing::warn!(peer = %self.peer, order = %self.order.id, reason = %status.message(), "swarm fetch stopped");
        match self.send(Err(status)) {
            Sent::Taken | Sent::Gone => None,
            Sent::Stopped(status) => Some(status),
        }
    }

    /// Hands one message to the client, waiting at most the write timeout and never
    /// past the order's expiry.
    fn send(&self, message: Result<Chunk, Status>) -> Sent {
        let left = u64::try_from(self.order.expires_at.saturating_sub(now_unix()).max(0)).unwrap_or(0);
        // Expiry counts from the start of the second after `expires_at`.
        let until_expiry = Duration::from_secs(left + 1);
        let wait = self.state.write_timeout.min(until_expiry);
        let started = Instant::now();
        let sent = self.runtime.block_on(tokio::time::timeout(wait, self.tx.send(message)));
        match sent {
            Ok(Ok(())) => Sent::Taken,
            Ok(Err(_)) => Sent::Gone,
            Err(_) if wait < self.state.write_timeout => {
                let why = format!("transfer order {} expired at {}", self.order.id, self.order.expires_at);
                Sent::Stopped(Status::deadline_exceeded(why))
            }
            Err(_) => Sent::Stopped(Status::deadline_exceeded(format!(
                "the client took nothing for {:?}; transfer ended",
                started.elapsed()
            ))),
        }
    }
}
