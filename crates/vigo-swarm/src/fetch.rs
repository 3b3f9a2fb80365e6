//! The receiving side of vigosync: fetch what a signed order grants from its
//! source and write it into the user's `~/vigosync/` without ever being
//! redirected.
//!
//! The order is checked first (signature, expiry, this envoy as its target);
//! the user must exist in this host's own account database, which alone
//! decides uid, gid and home. The directory is opened once as a handle (never
//! created, never through a symlink, only when the user owns it); everything
//! after that is relative to the handle. Bytes go into
//! `.vigosync-<16 hex>.part` (created `O_EXCL|O_NOFOLLOW`, mode 0600, owned by
//! the user) as they arrive, each chunk checked against its SHA-256 and the
//! whole file against the order's; a damaged chunk is fetched again and a cut
//! stream resumes where it stopped, in this call or (from the `.part`) a later
//! one. The file takes the name by `renameat2` in the same directory, which
//! swaps directory entries: a symlink, FIFO or hard link placed at the name
//! is replaced, never written through. A newer local version wins, also when
//! it is saved while the transfer finishes: the name is taken with
//! `RENAME_NOREPLACE` when it was empty, else with `RENAME_EXCHANGE`, and the
//! entry swapped out is compared with the one the decision was made on; if the
//! user saved in between, the exchange is undone and her version stays
//! ([`FetchOutcome::Conflict`]).
//!
//! A receiver never fills its disk: a transfer starts only while the file system
//! keeps [`MIN_FREE_BYTES`] or [`MIN_FREE_PERCENT`] free (the larger) after every
//! running transfer completes, and at most [`MAX_CONCURRENT_FETCHES`] transfers run
//! at once, at most [`MAX_FETCHES_PER_USER`] of them for one user; the others wait
//! their turn (so a user with thousands of files to receive never holds back another
//! user's one).

use std::collections::HashSet;
use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, RenameFlags, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use vigo_executors::safe_fs::{self, SafeFsError};
use vigo_pki::PublicKey;
use vigo_proto::swarm_client::SwarmClient;
use vigo_proto::{Chunk, FetchRequest};

use crate::accounts::{Account, Accounts, AccountsError};
use crate::hash::{FileKey, HashCache, HashError, hash_range, hex, is_sha256_hex};
use crate::order::{OrderError, SignedOrder, TransferOrder};
use crate::peer::{CONNECTION_WINDOW, STREAM_WINDOW};
use crate::scan::{PART_PREFIX, PART_SUFFIX, list_names};
use crate::sync::{FileEntry, MAX_FILE_SIZE, TRAIT, newer, valid_name};
use crate::syncdir::{SyncDirError, open_sync_dir, sync_path};
use crate::tls::ClientTls;

/// Attempts per fetch (connections, cut streams and damaged chunks all count).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream that delivers nothing for this long is treated as cut.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest message accepted from a source: a chunk with room to spare.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Verified chunks queued for the disk writer.
const WRITE_QUEUE_CHUNKS: usize = 4;
/// Mode of a received file that does not replace one of the user's own.
const NEW_FILE_MODE: u32 = 0o600;
/// Free space a receive always leaves on the user's file system, in bytes…
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// …or as a share of its size, whichever is larger.
pub const MIN_FREE_PERCENT: u64 = 5;
/// Transfers one receiver runs at once; more orders wait for a slot.
pub const MAX_CONCURRENT_FETCHES: usize = 4;
/// Of those, transfers for one user: the rest stay free for the others.
pub const MAX_FETCHES_PER_USER: usize = 2;
/// Attempts to take the name when it keeps changing under the receiver.
const REPLACE_ATTEMPTS: u32 = 3;

/// The free space a receiver keeps: the larger of `min_bytes` and `percent` of the
/// file system's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub min_bytes: u64,
    pub percent: u64,
}

impl Default for Headroom {
    fn default() -> Self {
        Self { min_bytes: MIN_FREE_BYTES, percent: MIN_FREE_PERCENT }
    }
}

/// Called between the receiver's last look at the name and the rename that takes it.
pub type ReplaceHook = Arc<dyn Fn() + Send + Sync>;

/// Why a fetch did not leave the file in place.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error("transfer order {id}: {reason}")]
    BadOrder { id: String, reason: String },
    #[error("transfer order {id}: user {user} does not exist on this host")]
    NoUser { id: String, user: String },
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error("{path}: does not exist; user {user} has not opted in to vigosync")]
    NotOptedIn { user: String, path: PathBuf },
    #[error(transparent)]
    SyncDir(#[from] SyncDirError),
    #[error("{path}: is a directory; not replaced")]
    TargetIsDirectory { path: PathBuf },
    #[error("{path}: another transfer of the same content is running")]
    Busy { path: PathBuf },
    #[error("cannot connect to peer {peer} at {addr}: {detail}")]
    Connect { peer: String, addr: SocketAddr, detail: String },
    #[error("source {source_envoy} refused order {id}: {code:?}: {message}")]
    Refused { id: String, source_envoy: String, code: Code, message: String },
    #[error("order {id}: source {source_envoy} sent more than the order's {size} bytes")]
    Oversized { id: String, source_envoy: String, size: u64 },
    #[error(
        "order {id}: transfer from {source_envoy} interrupted at byte {offset} after {attempts} attempts: {detail}"
    )]
    Interrupted { id: String, source_envoy: String, offset: u64, attempts: u32, detail: String },
    #[error("{path}: received content has sha256 {actual}, the order is for {expected}")]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("{path}: replaced by something else during the transfer")]
    Raced { path: PathBuf },
    #[error(
        "{path}: not received: {needed} more bytes would leave {available} bytes free, under the {headroom}-byte headroom kept on this file system"
    )]
    NoSpace { path: PathBuf, needed: u64, available: u64, headroom: u64 },
    #[error("{path}: {errno}")]
    Sys { path: PathBuf, errno: Errno },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Fs(#[from] SafeFsError),
    #[error("fetch task failed: {0}")]
    Task(String),
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The file is in place with the order's content and mtime.
    Written {
        path: PathBuf,
        /// Bytes received over the network in this call.
        fetched: u64,
        /// Bytes already present in a `.part` from an earlier, cut transfer.
        resumed_from: u64,
        /// Requests made to the source (0 when nothing was left to fetch).
        attempts: u32,
    },
    /// The name already holds this content (its mtime is brought forward to the
    /// order's when it was older).
    AlreadyPresent { path: PathBuf },
    /// The name holds a newer version ([`crate::sync::newer`]); nothing was replaced.
    Superseded { path: PathBuf, local_mtime: i64 },
    /// The name changed (the user saved) while the received file was being put in
    /// place: the user's version was kept and the received one dropped.
    Conflict { path: PathBuf },
}

/// Fetches vigosync files for this envoy.
pub struct Fetcher {
    me: String,
    server_key: PublicKey,
    tls: ClientTls,
    accounts: Arc<dyn Accounts>,
    cache: HashCache,
    max_attempts: u32,
    /// Partial files being written, by (uid, part name): one writer per `.part`.
    in_flight: Arc<Mutex<HashSet<(u32, String)>>>,
    /// One permit per running transfer.
    slots: Arc<tokio::sync::Semaphore>,
    /// One permit per running or starting transfer of each user (taken before `slots`).
    user_slots: Arc<Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>>,
    headroom: Headroom,
    /// Bytes the running transfers have yet to write, counted against the free space.
    reserved: Arc<Mutex<u64>>,
    replace_hook: Option<ReplaceHook>,
}

impl Fetcher {
    /// A fetcher for envoy `me`, trusting orders signed with `server_key`,
    /// connecting with `tls` (see [`crate::tls::client_tls`]: each transfer talks only
    /// to the source certificate its order names), resolving users
    /// through `accounts` and sharing the scanner's hash `cache`.
    pub fn new(
        me: impl Into<String>,
        server_key: PublicKey,
        tls: ClientTls,
        accounts: Arc<dyn Accounts>,
        cache: HashCache,
    ) -> Self {
        Self {
            me: me.into(),
            server_key,
            tls,
            accounts,
            cache,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            in_flight: Arc::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES)),
            user_slots: Arc::default(),
            headroom: Headroom::default(),
            reserved: Arc::default(),
            replace_hook: None,
        }
    }

    /// At most `n` transfers at once (at least one).
    #[must_use]
    pub fn with_max_concurrent(mut self, n: usize) -> Self {
        self.slots = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// Keeps `headroom` free instead of the default.
    #[must_use]
    pub fn with_headroom(mut self, headroom: Headroom) -> Self {
        self.headroom = headroom;
        self
    }

    /// Runs `hook` after the receiver last looked at the name and before it takes it:
    /// lets tests put a user's save exactly in that window.
    #[doc(hidden)]
    #[must_use]
    pub fn with_replace_hook(mut self, hook: ReplaceHook) -> Self {
        self.replace_hook = Some(hook);
        self
    }

    /// At most `attempts` requests per fetch (at least one).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Carries out one signed order. A cut transfer leaves its `.part` behind, so the
    /// same order (or another for the same content) resumes where it stopped.
    pub async fn fetch(&self, signed: &SignedOrder) -> Result<FetchOutcome, FetchError> {
        let order = signed.verify(&self.server_key, now_unix())?;
        let source_addr = Self::check_order(&self.me, &order)?;
        let user_slots = {
            let mut users = self.user_slots.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget users with nothing running or waiting (only the map holds theirs).
            users.retain(|_, slots| Arc::strong_count(slots) > 1);
            Arc::clone(
                users
                    .entry(order.user.clone())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_FETCHES_PER_USER))),
            )
        };
        let _user_slot = user_slots.acquire().await.map_err(|e| FetchError::Task(e.to_string()))?;
        let _slot = self.slots.acquire().await.map_err(|e| FetchError::Task(e.to_string()))?;

        let accounts = Arc::clone(&self.accounts);
        let user = order.user.clone();
        let account = blocking(move || accounts.lookup(&user)).await??;
        let account = account.ok_or_else(|| FetchError::NoUser { id: order.id.clone(), user: order.user.clone() })?;
        if account.uid == 0 {
            let reason = format!("user {} is root; vigosync never writes for root", account.name);
            return Err(FetchError::BadOrder { id: order.id.clone(), reason });
        }

        let part_name = part_name(&order.sha256);
        let _claim = self.claim(&account, &part_name)?;
        let prepared = {
            let (account, order, cache, part_name) =
                (account.clone(), order.clone(), self.cache.clone(), part_name.clone());
            blocking(move || prepare(&account, &order, &cache, part_name)).await??
        };
        let part = match prepared {
            Prepared::Done(outcome) => return Ok(outcome),
            Prepared::Part(part) => part,
        };
        let resumed_from = part.len;
        let target = sync_path(&account).join(&order.name);
        let _reservation = match self.reserve(&part, order.size - part.len, &target) {
            Ok(r) => r,
            Err(e) => {
                if part.len == 0 {
                    part.discard();
                }
                tracing::warn!(order = %order.id, error = %e, "vigosync transfer refused: disk space");
                return Err(e);
            }
        };
        let (part, attempts) =
            if part.len < order.size { self.download(signed, &order, source_addr, part).await? } else { (part, 0) };
        let fetched = part.len - resumed_from;
        let cache = self.cache.clone();
        let hook = self.replace_hook.clone();
        blocking(move || finalize(part, &account, &order, &cache, (fetched, resumed_from, attempts), hook)).await?
    }

    /// Counts `needed` bytes against the free space of the part's file system, or
    /// refuses when writing them (on top of what running transfers still write) would
    /// eat into the headroom.
    fn reserve(&self, part: &Part, needed: u64, target: &Path) -> Result<Reservation, FetchError> {
        let vfs = nix::sys::statvfs::fstatvfs(&part.dir)
            .map_err(|errno| FetchError::Sys { path: part.path.clone(), errno })?;
        let unit = vfs.fragment_size();
        let available = vfs.blocks_available().saturating_mul(unit);
        let total = vfs.blocks().saturating_mul(unit);
        let headroom = self.headroom.min_bytes.max(total / 100 * self.headroom.percent.min(100));
        let mut reserved = self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
        let after = available.saturating_sub(*reserved).saturating_sub(needed);
        if available.saturating_sub(*reserved) < needed || after < headroom {
            return Err(FetchError::NoSpace {
                path: target.to_path_buf(),
                needed,
                available: available.saturating_sub(*reserved),
                headroom,
            });
        }
        *reserved += needed;
        Ok(Reservation { reserved: Arc::clone(&self.reserved), bytes: needed })
    }

    /// The receiver's checks, on envoy `me`, of a genuine order (one that passed
    /// [`SignedOrder::verify`]); returns the source's address.
    pub fn check_order(me: &str, order: &TransferOrder) -> Result<SocketAddr, FetchError> {
        let bad = |reason: String| FetchError::BadOrder { id: order.id.clone(), reason };
        if order.target != me {
            return Err(OrderError::WrongTarget {
                id: order.id.clone(),
                target: order.target.clone(),
                peer: me.to_string(),
            }
            .into());
        }
        if order.kind != TRAIT {
            return Err(bad(format!("kind {:?} is not vigosync", order.kind)));
        }
        if !valid_name(&order.name) {
            return Err(bad(format!("{:?} is not a vigosync file name", order.name)));
        }
        if order.size > MAX_FILE_SIZE {
            return Err(bad(format!("{} bytes is over the {MAX_FILE_SIZE}-byte limit", order.size)));
        }
        if !is_sha256_hex(&order.sha256) {
            return Err(bad(format!("{:?} is not a lowercase hex SHA-256", order.sha256)));
        }
        if rustls::pki_types::ServerName::try_from(order.source.as_str()).is_err() {
            return Err(bad(format!("source {:?} is not a valid envoy name", order.source)));
        }
        if !is_sha256_hex(&order.source_cert) {
            return Err(bad(format!("source certificate {:?} is not a lowercase hex SHA-256", order.source_cert)));
        }
        order.source_addr.parse().map_err(|_| bad(format!("source address {:?} is not ip:port", order.source_addr)))
    }

    /// Removes `account`'s partial downloads left untouched for `older_than`: transfers
    /// that will not resume (the source lost that version, or no new order came).
    /// Files of transfers running in this process are kept. Blocks on the filesystem.
    pub fn remove_stale_parts(&self, account: &Account, older_than: Duration) -> Result<usize, FetchError> {
        let Some(dir) = open_sync_dir(account)? else { return Ok(0) };
        let dir_path = sync_path(account);
        let cutoff = std::time::SystemTime::now().checked_sub(older_than).unwrap_or(std::time::UNIX_EPOCH);
        let cutoff = i64::try_from(cutoff.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs())
            .unwrap_or(i64::MAX);
        let mut removed = 0;
        for raw in list_names(&dir, &dir_path)? {
            let Some(name) = raw.to_str() else { continue };
            if !(name.starts_with(PART_PREFIX) && name.ends_with(PART_SUFFIX)) {
                continue;
            }
            // Held through the unlink, so no fetch claims this part in between.
            let running = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            if running.contains(&(account.uid, name.to_string())) {
                continue;
            }
            let path = dir_path.join(name);
            let st = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(errno) => return Err(FetchError::Sys { path, errno }),
            };
            if st.st_mtime < cutoff {
                match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => removed += 1,
                    Err(Errno::ENOENT | Errno::EISDIR) => {}
                    Err(errno) => return Err(FetchError::Sys { path, errno }),
                }
            }
        }
        Ok(removed)
    }

    fn claim(&self, account: &Account, part_name: &str) -> Result<Claim, FetchError> {
        let key = (account.uid, part_name.to_string());
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if !in_flight.insert(key.clone()) {
            return Err(FetchError::Busy { path: sync_path(account).join(part_name) });
        }
        Ok(Claim { set: Arc::clone(&self.in_flight), key })
    }

    /// Streams the missing bytes into the part file; returns it with every byte of the
    /// order written and hashed, and the number of requests made.
    async fn download(
        &self,
        signed: &SignedOrder,
        order: &TransferOrder,
        addr: SocketAddr,
        part: Part,
    ) -> Result<(Part, u32), FetchError> {
        // Only the certificate the server issued to the source will do.
        let tls = self
            .tls
            .for_peer(&order.source_cert)
            .map_err(|e| FetchError::BadOrder { id: order.id.clone(), reason: e.to_string() })?;
        let tls = Arc::new(tls);
        let mut next = part.len;
        let part_path = part.path.clone();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE_CHUNKS);
        let writer = tokio::task::spawn_blocking(move || write_chunks(part, rx));

        let mut client = None;
        let mut attempts = 0u32;
        let mut detail = String::new();
        let mut fatal = None;
        while next < order.size && attempts < self.max_attempts && !tx.is_closed() {
            if attempts > 0 {
                tokio::time::sleep(backoff(attempts)).await;
            }
            attempts += 1;
            let client = match &mut client {
                Some(client) => client,
                None => match connect_peer(Arc::clone(&tls), &order.source, addr).await {
                    Ok(connected) => client.insert(connected),
                    Err(e) => {
                        tracing::warn!(order = %order.id, error = %e, "swarm source unreachable");
                        detail = e.to_string();
                        continue;
                    }
                },
            };
            match stream_once(client, signed, order, &mut next, &tx).await {
                Ok(()) if next < order.size => detail = format!("stream ended at byte {next}"),
                Ok(()) => {}
                Err(Attempt::Retry(why)) => {
                    tracing::warn!(order = %order.id, source = %order.source, offset = next, reason = %why, "swarm transfer retried");
                    detail = why;
                }
                Err(Attempt::Fatal(e)) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        // The writer finishes every chunk it was given, so the `.part` holds all
        // verified bytes even when this call gives up.
        let written = writer.await.map_err(|e| FetchError::Task(e.to_string()))?;
        let part = written?;
        if let Some(e) = fatal {
            // Keep a partial file only while it can still be resumed: the source may
            // serve this content again later, unless it no longer has it.
            let gone = matches!(
                &e,
                FetchError::Refused { code: Code::FailedPrecondition | Code::NotFound, .. }
                    | FetchError::Oversized { .. }
            );
            if gone || part.len == 0 {
                part.discard();
            }
            return Err(e);
        }
        if part.len < order.size {
            if part.len == 0 {
                part.discard();
            }
            tracing::info!(order = %order.id, path = %part_path.display(), offset = part.len, "swarm transfer left for resumption");
            return Err(FetchError::Interrupted {
                id: order.id.clone(),
                source_envoy: order.source.clone(),
                offset: part.len,
                attempts,
                detail,
            });
        }
        Ok((part, attempts))
    }
}

/// Connects to the peer server of envoy `name` at `addr` over mutual TLS with
/// `tls` (from [`crate::tls::ClientTls::for_peer`]); the server's certificate must name
/// `name`. One HTTP/2 connection, reconnected on demand, for any number of calls.
pub async fn connect_peer(
    tls: Arc<rustls::ClientConfig>,
    name: &str,
    addr: SocketAddr,
) -> Result<SwarmClient<Channel>, FetchError> {
    let fail = |detail: String| FetchError::Connect { peer: name.to_string(), addr, detail };
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| fail(format!("not an envoy name: {e}")))?;
    let service = vigo_proto::tls_connect::connector(tls, server_name, addr.to_string());
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| fail(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect_with_connector(service)
        .await
        .map_err(|e| fail(vigo_proto::error_chain(&e)))?;
    Ok(SwarmClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// Gives back a transfer's share of the free space when it ends, however it ends.
struct Reservation {
    reserved: Arc<Mutex<u64>>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut reserved = self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
        *reserved = reserved.saturating_sub(self.bytes);
    }
}

/// Releases a part file's claim when the fetch ends, however it ends.
struct Claim {
    set: Arc<Mutex<HashSet<(u32, String)>>>,
    key: (u32, String),
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

/// How one request ended when it did not deliver everything.
enum Attempt {
    /// Worth another request from where the transfer stands.
    Retry(String),
    /// The source refused, or misbehaved in a way another request will not fix.
    Fatal(FetchError),
}

/// One request: receives chunks from `next` on, verifies each, queues it for the
/// writer and advances `next`. Returns when the stream ends.
async fn stream_once(
    client: &mut SwarmClient<Channel>,
    signed: &SignedOrder,
    order: &TransferOrder,
    next: &mut u64,
    tx: &mpsc::Sender<Vec<u8>>,
) -> Result<(), Attempt> {
    let request = FetchRequest {
        order_payload: signed.payload.clone(),
        order_signature: signed.signature.clone(),
        offset: *next,
    };
    let response = tokio::time::timeout(IDLE_TIMEOUT, client.fetch(request))
        .await
        .map_err(|_| Attempt::Retry("no answer from the source".into()))?
        .map_err(|status| classify(order, status))?;
    let mut stream = response.into_inner();
    loop {
        let message = tokio::time::timeout(IDLE_TIMEOUT, stream.message())
            .await
            .map_err(|_| Attempt::Retry(format!("stalled at byte {next}")))?
            .map_err(|status| classify(order, status))?;
        let Some(chunk) = message else { return Ok(()) };
        match check_chunk(order.size, *next, &chunk) {
            ChunkFit::Next => {}
            ChunkFit::Misplaced => {
                return Err(Attempt::Retry(format!("chunk at byte {} where {next} was expected", chunk.offset)));
            }
            ChunkFit::Oversized => {
                return Err(Attempt::Fatal(FetchError::Oversized {
                    id: order.id.clone(),
                    source_envoy: order.source.clone(),
                    size: order.size,
                }));
            }
            // Dropping the stream cancels it; the next request starts at this chunk.
            ChunkFit::Damaged => return Err(Attempt::Retry(format!("chunk at byte {next} failed its SHA-256 check"))),
        }
        let len = chunk.data.len() as u64;
        if len == 0 {
            continue;
        }
        if tx.send(chunk.data).await.is_err() {
            // The writer stopped on an error, which the caller collects from it.
            return Ok(());
        }
        *next += len;
    }
}

/// How a chunk received when byte `next` of `size` is expected fits the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFit {
    /// At `next`, within `size` and intact: its bytes (none, for an empty chunk) come next.
    Next,
    /// At another offset than `next`.
    Misplaced,
    /// Would carry the content past `size`.
    Oversized,
    /// Its bytes do not match its SHA-256.
    Damaged,
}

/// The receiver's checks on one chunk of a stream, in order: offset, size, hash.
pub fn check_chunk(size: u64, next: u64, chunk: &Chunk) -> ChunkFit {
    if chunk.offset != next {
        return ChunkFit::Misplaced;
    }
    if chunk.data.len() as u64 > size.saturating_sub(next) {
        return ChunkFit::Oversized;
    }
    if Sha256::digest(&chunk.data).as_slice() != chunk.sha256.as_slice() {
        return ChunkFit::Damaged;
    }
    ChunkFit::Next
}

/// Refusals end the fetch; anything else (cut connections, a busy source) is retried.
fn classify(order: &TransferOrder, status: tonic::Status) -> Attempt {
    match status.code() {
        Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::InvalidArgument
        | Code::OutOfRange
        | Code::Unauthenticated
        | Code::Unimplemented => Attempt::Fatal(FetchError::Refused {
            id: order.id.clone(),
            source_envoy: order.source.clone(),
            code: status.code(),
            message: status.message().to_string(),
        }),
        code => Attempt::Retry(format!("{code:?}: {}", status.message())),
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(2))
}

/// The partial file of a transfer and the state of its content so far.
struct Part {
    dir: OwnedFd,
    /// The part file's path, for messages.
    path: PathBuf,
    name: String,
    file: File,
    /// SHA-256 of bytes `[0, len)`.
    hasher: Sha256,
    len: u64,
}

impl Part {
    /// Removes the partial file (by name in the directory handle; a symlink put there
    /// meanwhile is removed itself).
    fn discard(&self) {
        let _ = unlinkat(self.dir.as_fd(), self.name.as_str(), UnlinkatFlags::NoRemoveDir);
    }
}

enum Prepared {
    /// Nothing to transfer.
    Done(FetchOutcome),
    /// Transfer into this part file.
    Part(Part),
}

/// `.vigosync-<first 16 hex digits of the content hash>.part`: content-addressed, so any
/// order for the same content resumes the same partial file.
fn part_name(sha256: &str) -> String {
    format!("{PART_PREFIX}{}{PART_SUFFIX}", &sha256[..16])
}

/// Opens the user's directory, settles the cases that need no transfer, and opens
/// (or resumes) the part file.
fn prepare(
    account: &Account,
    order: &TransferOrder,
    cache: &HashCache,
    part_name: String,
) -> Result<Prepared, FetchError> {
    let dir_path = sync_path(account);
    let dir = open_sync_dir(account)?
        .ok_or_else(|| FetchError::NotOptedIn { user: account.name.clone(), path: dir_path.clone() })?;
    let target = dir_path.join(&order.name);
    if let Some(done) = settled(&dir, account, order, cache, &target)? {
        return Ok(Prepared::Done(done));
    }
    let path = dir_path.join(&part_name);
    let (file, on_disk) = open_part(&dir, &part_name, account, &path)?;
    let mut hasher = Sha256::new();
    let mut len = 0;
    if on_disk > order.size {
        file.set_len(0).map_err(|source| FetchError::Io { path: path.clone(), source })?;
    } else if on_disk > 0 {
        // The bytes kept from a cut transfer count only once hashed again: the
        // whole-file check at the end covers them too.
        len = hash_range(&file, 0, on_disk, &mut hasher, &path)?;
        if len < on_disk {
            file.set_len(len).map_err(|source| FetchError::Io { path: path.clone(), source })?;
        }
        tracing::info!(order = %order.id, path = %path.display(), offset = len, "swarm transfer resumes");
    }
    Ok(Prepared::Part(Part { dir, path, name: part_name, file, hasher, len }))
}

/// The directory entry a decision was made on: the same object, unchanged, has the
/// same identity (type, device, inode, size and modification time).
type Identity = (u32, u64, u64, i64, i64, i64);

fn identity(st: &FileStat) -> Identity {
    (st.st_mode & SFlag::S_IFMT.bits(), st.st_dev, st.st_ino, st.st_size, st.st_mtime, st.st_mtime_nsec)
}

/// What is at the order's name now.
enum Local {
    /// Nothing (`None`), or something that is not the user's file (a symlink, FIFO,
    /// someone else's file): the rename replaces the entry.
    Replaceable(Option<Identity>),
    Directory,
    /// The user's regular file.
    File {
        file: File,
        key: FileKey,
        mode: u32,
        sha256: Option<String>,
        id: Identity,
    },
}

fn local_version(
    dir: &OwnedFd,
    account: &Account,
    order: &TransferOrder,
    cache: &HashCache,
    target: &Path,
) -> Result<Local, FetchError> {
    let st = match fstatat(dir.as_fd(), order.name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(Local::Replaceable(None)),
        Err(errno) => return Err(FetchError::Sys { path: target.to_path_buf(), errno }),
    };
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if fmt == SFlag::S_IFDIR {
        return Ok(Local::Directory);
    }
    if fmt != SFlag::S_IFREG || st.st_uid != account.uid {
        return Ok(Local::Replaceable(Some(identity(&st))));
    }
    // Checked again on the handle: a swap after the stat yields `Replaceable`. No size
    // limit here: a big local file is still the user's, and may be the newer version.
    let Ok(Some((file, st))) = safe_fs::open_regular_at(dir, order.name.as_str(), false, target) else {
        return Ok(Local::Replaceable(Some(identity(&st))));
    };
    if st.st_uid != account.uid {
        return Ok(Local::Replaceable(Some(identity(&st))));
    }
    let key = FileKey::of(&st);
    let mode = st.st_mode & 0o777;
    // The hash decides only when the content could be the same or the mtimes tie, and
    // a file over the limit cannot hold an order's content.
    let sha256 = match cache.get(&key) {
        Some(sha) => Some(sha),
        None if key.size <= MAX_FILE_SIZE && (key.size == order.size || key.mtime_ns == order.mtime) => {
            cache.sha256_of(&file, target)?.map(|(_, sha)| sha)
        }
        None => None,
    };
    Ok(Local::File { file, key, mode, sha256, id: identity(&st) })
}

/// The outcome when the name needs no transfer (or must not be replaced); `None`
/// when the order's version should be written.
fn settled(
    dir: &OwnedFd,
    account: &Account,
    order: &TransferOrder,
    cache: &HashCache,
    target: &Path,
) -> Result<Option<FetchOutcome>, FetchError> {
    match local_version(dir, account, order, cache, target)? {
        Local::Replaceable(_) => Ok(None),
        Local::Directory => Err(FetchError::TargetIsDirectory { path: target.to_path_buf() }),
        Local::File { file, key, sha256, .. } => Ok(settle_file(&file, &key, sha256.as_deref(), order, target)?),
    }
}

fn settle_file(
    file: &File,
    key: &FileKey,
    sha256: Option<&str>,
    order: &TransferOrder,
    target: &Path,
) -> Result<Option<FetchOutcome>, FetchError> {
    if sha256 == Some(order.sha256.as_str()) {
        if key.mtime_ns < order.mtime {
            // Same content, older stamp: adopt the newer stamp so both ends agree.
            set_mtime(file, order.mtime, target)?;
        }
        return Ok(Some(FetchOutcome::AlreadyPresent { path: target.to_path_buf() }));
    }
    let local = FileEntry {
        name: order.name.clone(),
        // Unknown only when sizes and mtimes both differ, where mtime alone decides.
        sha256: sha256.unwrap_or_default().to_string(),
        size: key.size,
        mtime: key.mtime_ns,
    };
    let incoming =
        FileEntry { name: order.name.clone(), sha256: order.sha256.clone(), size: order.size, mtime: order.mtime };
    if newer(&local, &incoming) {
        return Ok(Some(FetchOutcome::Superseded { path: target.to_path_buf(), local_mtime: key.mtime_ns }));
    }
    Ok(None)
}

/// Opens the part file for writing: an existing one only when it is the user's own
/// regular file with a single link (anything else at that name is removed, never
/// opened), else a new one made with `O_EXCL`. Returns it with its current length.
fn open_part(dir: &OwnedFd, name: &str, account: &Account, path: &Path) -> Result<(File, u64), FetchError> {
    let sys = |errno| FetchError::Sys { path: path.to_path_buf(), errno };
    let usable = |st: &FileStat| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
            && st.st_uid == account.uid
            && st.st_nlink == 1
    };
    match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if usable(&st) => {
            if let Ok(Some((file, now))) = safe_fs::open_regular_at(dir, name, true, path)
                && usable(&now)
                && (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)
            {
                return Ok((file, u64::try_from(now.st_size).unwrap_or(0)));
            }
        }
        Ok(_) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(sys(errno)),
    }
    // Whatever is there is not ours to write into: remove the entry (a symlink is
    // removed itself) and start afresh.
    for _ in 0..3 {
        match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => return Err(sys(errno)),
        }
        let attrs = safe_fs::Attrs { uid: Some(account.uid), gid: Some(account.gid), mode: Some(0o600) };
        match safe_fs::create_new_at(dir, name, attrs, path) {
            Ok(file) => return Ok((file, 0)),
            // Someone put something there again between the unlink and the create.
            Err(SafeFsError::Sys { errno: Errno::EEXIST, .. }) => continue,
            Err(e) => return Err(FetchError::Fs(e)),
        }
    }
    Err(FetchError::Raced { path: path.to_path_buf() })
}

/// The disk writer: appends verified chunks in order and hashes them.
fn write_chunks(mut part: Part, mut rx: mpsc::Receiver<Vec<u8>>) -> Result<Part, FetchError> {
    while let Some(data) = rx.blocking_recv() {
        part.file.write_all_at(&data, part.len).map_err(|source| FetchError::Io { path: part.path.clone(), source })?;
        part.hasher.update(&data);
        part.len += data.len() as u64;
    }
    Ok(part)
}

/// Verifies the whole content, stamps it, and puts it at the name, unless the name
/// meanwhile got a newer version, the same content, or a directory. The name is
/// taken race-free: a user's save between the last look and the rename is kept.
fn finalize(
    part: Part,
    account: &Account,
    order: &TransferOrder,
    cache: &HashCache,
    (fetched, resumed_from, attempts): (u64, u64, u32),
    hook: Option<ReplaceHook>,
) -> Result<FetchOutcome, FetchError> {
    let Part { dir, path, name: part_name, file, hasher, len } = part;
    let discard = || {
        let _ = unlinkat(dir.as_fd(), part_name.as_str(), UnlinkatFlags::NoRemoveDir);
    };
    let actual = hex(&hasher.finalize());
    let on_disk = fstat(&file).map_err(|errno| FetchError::Sys { path: path.clone(), errno })?;
    let on_disk_len = u64::try_from(on_disk.st_size).unwrap_or(u64::MAX);
    if actual != order.sha256 || len != order.size || on_disk_len != order.size {
        discard();
        return Err(FetchError::HashMismatch { path, expected: order.sha256.clone(), actual });
    }
    let target = sync_path(account).join(&order.name);
    let sys = |errno| FetchError::Sys { path: path.clone(), errno };
    set_mtime(&file, order.mtime, &path)?;
    let ours = (on_disk.st_dev, on_disk.st_ino);
    for _ in 0..REPLACE_ATTEMPTS {
        // The name may have changed while the bytes were in flight: decide against it now.
        let (mode, checked) = match local_version(&dir, account, order, cache, &target) {
            Ok(Local::Replaceable(checked)) => (NEW_FILE_MODE, checked),
            Ok(Local::Directory) => {
                discard();
                return Err(FetchError::TargetIsDirectory { path: target });
            }
            Ok(Local::File { file: local, key, mode, sha256, id }) => {
                match settle_file(&local, &key, sha256.as_deref(), order, &target) {
                    Ok(None) => (mode, Some(id)),
                    Ok(Some(done)) => {
                        discard();
                        return Ok(done);
                    }
                    Err(e) => {
                        discard();
                        return Err(e);
                    }
                }
            }
            Err(e) => return Err(e),
        };
        fchmod(&file, Mode::from_bits_truncate(mode)).map_err(sys)?;
        fsync(&file).map_err(sys)?;
        if let Some(hook) = &hook {
            hook();
        }
        match take_name(&dir, &part_name, &order.name, checked, ours, &target)? {
            Taken::Placed => {
                fsync(&dir).map_err(|errno| FetchError::Sys { path: target.clone(), errno })?;
                tracing::info!(order = %order.id, path = %target.display(), fetched, resumed_from, "vigosync file received");
                return Ok(FetchOutcome::Written { path: target, fetched, resumed_from, attempts });
            }
            Taken::Changed => {
                // The user's version is back at the name, ours at the part name.
                if entry_is(&dir, &part_name, ours) {
                    discard();
                }
                tracing::warn!(order = %order.id, path = %target.display(), "vigosync: the file changed while being received; kept the local version");
                return Ok(FetchOutcome::Conflict { path: target });
            }
            Taken::Again => {}
            Taken::Raced => return Err(FetchError::Raced { path: target }),
        }
    }
    Err(FetchError::Raced { path: target })
}

/// How taking the name went.
enum Taken {
    /// Our file is at the name; what was there before (as checked) is gone.
    Placed,
    /// What was at the name is no longer what was checked: the exchange was undone.
    Changed,
    /// The name filled or emptied before the rename: decide again.
    Again,
    /// The part file itself was swapped for something else: nothing was replaced.
    Raced,
}

/// Puts the part file at `name`. An empty name is taken with `RENAME_NOREPLACE`, so
/// an entry created meanwhile is never overwritten; an occupied one with
/// `RENAME_EXCHANGE`, after which the entry swapped out must be the one `checked`,
/// else the swap is undone.
fn take_name(
    dir: &OwnedFd,
    part_name: &str,
    name: &str,
    checked: Option<Identity>,
    ours: (u64, u64),
    target: &Path,
) -> Result<Taken, FetchError> {
    let sys = |errno| FetchError::Sys { path: target.to_path_buf(), errno };
    let Some(checked) = checked else {
        return match renameat2(dir, part_name, dir, name, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) if entry_is(dir, name, ours) => Ok(Taken::Placed),
            // Our part name held someone else's file: put it back, replace nothing.
            Ok(()) => match renameat2(dir, name, dir, part_name, RenameFlags::RENAME_NOREPLACE) {
                Ok(()) | Err(_) => Ok(Taken::Raced),
            },
            Err(Errno::EEXIST) => Ok(Taken::Again),
            Err(errno) => Err(sys(errno)),
        };
    };
    match renameat2(dir, part_name, dir, name, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => {}
        Err(Errno::ENOENT) => {
            // The name was emptied meanwhile (or the part removed): look again.
            return if entry_is(dir, part_name, ours) { Ok(Taken::Again) } else { Ok(Taken::Raced) };
        }
        Err(errno) => return Err(sys(errno)),
    }
    let placed_ours = entry_is(dir, name, ours);
    let swapped_out = fstatat(dir.as_fd(), part_name, AtFlags::AT_SYMLINK_NOFOLLOW).ok();
    if placed_ours && swapped_out.as_ref().is_some_and(|st| identity(st) == checked) {
        // What was checked is what left the name: remove it (a symlink is removed
        // itself, never followed).
        match unlinkat(dir.as_fd(), part_name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(Taken::Placed),
            Err(errno) => return Err(sys(errno)),
        }
    }
    // Swap back: whatever left the name returns to it.
    renameat2(dir, part_name, dir, name, RenameFlags::RENAME_EXCHANGE).map_err(sys)?;
    Ok(if placed_ours { Taken::Changed } else { Taken::Raced })
}

/// Whether `name` in `dir` is the object `(dev, ino)` (never following a symlink).
fn entry_is(dir: &OwnedFd, name: &str, (dev, ino): (u64, u64)) -> bool {
    fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| (st.st_dev, st.st_ino) == (dev, ino))
}

fn set_mtime(file: &File, mtime_ns: i64, path: &Path) -> Result<(), FetchError> {
    let mtime = TimeSpec::new(mtime_ns.div_euclid(1_000_000_000), mtime_ns.rem_euclid(1_000_000_000));
    futimens(file, &TimeSpec::UTIME_OMIT, &mtime).map_err(|errno| FetchError::Sys { path: path.to_path_buf(), errno })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| FetchError::Task(e.to_string()))
}

fn now_unix() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}
