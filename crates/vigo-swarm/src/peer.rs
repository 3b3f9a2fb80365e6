//! The peer server every envoy runs on TCP 1531: gRPC over mutual TLS, serving
//! content to the envoy a signed order names, as a stream of hashed chunks.
//!
//! A fetch is answered only when every check passes: the client presented a
//! fleet certificate (enforced at the handshake), the order carries the
//! server's signature and has not expired, this envoy is its source, the
//! client's certificate names its target, and the content source still holds
//! the version the order names. Every refusal is logged with the peer's
//! identity and the reason. Transfers are bounded by a semaphore; a fetch
//! beyond it is told to come back later (`RESOURCE_EXHAUSTED`).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use vigo_pki::PublicKey;
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

/// What the peer server needs: who it is, whose orders it trusts, what it serves.
pub struct PeerState {
    /// This envoy's name (the identity in its certificate).
    pub me: String,
    /// The server's order-signing (bundle) key.
    pub server_key: PublicKey,
    sources: BTreeMap<String, Arc<dyn ContentSource>>,
    permits: Arc<Semaphore>,
    max_transfers: usize,
    #[doc(hidden)]
    pub hooks: TestHooks,
}

impl PeerState {
    pub fn new(me: impl Into<String>, server_key: PublicKey) -> Self {
        Self {
            me: me.into(),
            server_key,
            sources: BTreeMap::new(),
            permits: Arc::new(Semaphore::new(DEFAULT_MAX_TRANSFERS)),
            max_transfers: DEFAULT_MAX_TRANSFERS,
            hooks: TestHooks::default(),
        }
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
    type FetchStream = ReceiverStream<Result<Chunk, Status>>;

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        let peer = request.extensions().get::<Peer>().cloned();
        let asker = Asker {
            identity: peer.as_ref().and_then(|p| p.identity.clone()),
            addr: peer.and_then(|p| p.addr).or_else(|| request.remote_addr()),
        };
        let Some(identity) = asker.identity.clone() else {
            return Err(asker.refuse(None, &"no client certificate", Code::Unauthenticated));
        };
        let state = &self.state;
        let permit = state
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| asker.refuse(None, &"too many transfers running", Code::ResourceExhausted))?;

        let req = request.into_inner();
        let signed = SignedOrder { payload: req.order_payload, signature: req.order_signature };
        let order =
            signed.verify(&state.server_key, now_unix()).map_err(|e| asker.refuse(None, &e, Code::PermissionDenied))?;
        order
            .check_parties(&state.me, &identity)
            .map_err(|e| asker.refuse(Some(&order), &e, Code::PermissionDenied))?;
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
        let state = Arc::clone(state);
        let offset = req.offset;
        tokio::task::spawn_blocking(move || {
            stream_content(&state, &content, offset, &tx, &order, &identity);
            drop(permit);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Reads `content` from `offset` to its end into hashed chunks, blocking on the
/// channel whenever the network is behind (the stream's backpressure).
fn stream_content(
    state: &PeerState,
    content: &Content,
    mut offset: u64,
    tx: &mpsc::Sender<Result<Chunk, Status>>,
    order: &TransferOrder,
    peer: &str,
) {
    let hooks = &state.hooks;
    let mut sent = 0u64;
    while offset < content.len {
        if hooks.take_cut(sent) {
            let _ = tx.blocking_send(Err(Status::unavailable("transfer cut")));
            return;
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
            let _ = tx.blocking_send(Err(status));
            return;
        }
        let sha256 = Sha256::digest(&data).to_vec();
        if hooks.take_corrupt(offset) {
            data[0] ^= 0x01;
        }
        if tx.blocking_send(Ok(Chunk { offset, data, sha256 })).is_err() {
            tracing::info!(%peer, order = %order.id, offset, "swarm fetch ended by the peer");
            return;
        }
        offset += len as u64;
        if sent == 0 {
            hooks.run_after_first_chunk();
        }
        sent += len as u64;
    }
    tracing::info!(%peer, order = %order.id, bytes = sent, "swarm fetch served");
}
