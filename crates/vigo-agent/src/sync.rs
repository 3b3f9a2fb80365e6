//! vigosync on the envoy: the scan that feeds the `vigosync` trait, the transfers
//! the server orders, and the record `vigo status` shows.
//!
//! The scan covers the human accounts the `users` collector reports (the same list
//! the server matches users by), resolved in this host's own passwd. Its hash cache
//! is shared with the peer server (so serving a file does not re-hash it) and saved
//! in the state dir (so `vigo run --once` does not re-hash either).
//!
//! Incoming transfers are keyed by (user, name, sha256): the server repeats an order
//! at every check-in until the file shows up in this envoy's trait, and a key already
//! in flight is not fetched twice.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use vigo_swarm::accounts::{Account, PasswdFile};
use vigo_swarm::fetch::{FetchOutcome, Fetcher};
use vigo_swarm::hash::HashCache;
use vigo_swarm::order::{SignedOrder, TransferOrder};
use vigo_swarm::peer::{PeerServer, PeerState};
use vigo_swarm::scan::{ScanResult, Scanner};
use vigo_swarm::source::VigosyncSource;

use crate::client::Credentials;
use crate::files::write_atomic;
use crate::paths::AgentPaths;

/// How long a partial download may sit untouched before it is removed (orders live
/// ten minutes; a transfer that has not resumed within the hour will not).
const STALE_PART: std::time::Duration = std::time::Duration::from_secs(3600);

fn cache_path(paths: &AgentPaths) -> PathBuf {
    paths.state.join("vigosync-cache.json")
}

fn status_path(paths: &AgentPaths) -> PathBuf {
    paths.state.join("vigosync.json")
}

/// The hash cache saved by the last scan (empty when missing or unreadable).
pub fn load_cache(paths: &AgentPaths) -> HashCache {
    match HashCache::load(&cache_path(paths)) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "vigosync hash cache not loaded; files will be hashed");
            HashCache::new()
        }
    }
}

/// The accounts to scan: the human accounts in `traits.users.human`, as this host's
/// passwd defines them.
pub fn accounts(traits: &Value) -> Vec<Account> {
    let Some(human) = traits.pointer("/users/human").and_then(Value::as_array) else { return Vec::new() };
    let names: Vec<&str> = human.iter().filter_map(Value::as_str).collect();
    match PasswdFile::system().all() {
        Ok(all) => all.into_iter().filter(|a| names.contains(&a.name.as_str())).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read accounts; vigosync scan skipped");
            Vec::new()
        }
    }
}

/// What one scan found, and the opted-in directories (to watch).
#[derive(Debug, Default)]
pub struct Scan {
    pub result: ScanResult,
    pub dirs: Vec<PathBuf>,
    /// The opted-in accounts (whose directories `dirs` are).
    pub accounts: Vec<Account>,
}

/// Scans every human account's `~/vigosync/`, saves the hash cache and the status
/// record, and returns what was found.
pub fn scan(paths: &AgentPaths, scanner: &mut Scanner, traits: &Value) -> Scan {
    let accounts = accounts(traits);
    let result = scanner.scan(&accounts);
    let opted_in: Vec<Account> = accounts.iter().filter(|a| result.trait_.contains_key(&a.name)).cloned().collect();
    let dirs = opted_in.iter().map(vigo_swarm::syncdir::sync_path).collect();
    if let Err(e) = scanner.cache().save(&cache_path(paths)) {
        tracing::warn!(error = %e, "cannot save the vigosync hash cache");
    }
    let homes = accounts.iter().map(|a| (a.name.clone(), vigo_swarm::syncdir::sync_path(a))).collect();
    update_status(paths, |s| {
        s.scanned_at = Some(crate::checkin::now());
        s.users = users_of(&result, &homes);
    });
    Scan { result, dirs, accounts: opted_in }
}

fn users_of(result: &ScanResult, homes: &BTreeMap<String, PathBuf>) -> BTreeMap<String, UserStatus> {
    let mut users = BTreeMap::new();
    for (user, files) in &result.trait_ {
        users.insert(
            user.clone(),
            UserStatus {
                dir: homes.get(user).map(|p| p.display().to_string()),
                files: files.len(),
                bytes: files.iter().map(|f| f.size).sum(),
                skipped: result
                    .skipped
                    .get(user)
                    .map(|s| {
                        s.iter().map(|x| SkippedEntry { name: x.name.clone(), reason: x.reason.to_string() }).collect()
                    })
                    .unwrap_or_default(),
                skipped_more: result.skipped_more.get(user).copied().unwrap_or(0),
                overflow: result.overflow.get(user).copied(),
                problem: None,
            },
        );
    }
    for (user, problem) in &result.problems {
        users.entry(user.clone()).or_insert_with(UserStatus::default).problem = Some(problem.clone());
    }
    users
}

/// What `vigo status` shows about vigosync (kept in the state dir as JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncStatus {
    pub scanned_at: Option<i64>,
    pub users: BTreeMap<String, UserStatus>,
    /// Transfers ordered to this envoy that have not landed yet, by "user/name@sha".
    pub incoming: BTreeMap<String, Incoming>,
    /// Transfers this envoy's peer server was serving at its last check-in.
    #[serde(default)]
    pub outgoing: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserStatus {
    pub dir: Option<String>,
    pub files: usize,
    pub bytes: u64,
    pub skipped: Vec<SkippedEntry>,
    /// Skipped entries beyond those listed.
    #[serde(default)]
    pub skipped_more: u64,
    /// Files left out of the report by the per-user and per-check-in limits.
    #[serde(default)]
    pub overflow: Option<vigo_swarm::sync::Overflow>,
    /// Why the directory is not used (a symlink, not the user's, …).
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SkippedEntry {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incoming {
    pub user: String,
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub source: String,
    /// "fetching" or "failed".
    pub state: String,
    pub error: Option<String>,
    pub attempts: u32,
    pub updated_at: i64,
}

/// The status record (default when missing).
pub fn load_status(paths: &AgentPaths) -> SyncStatus {
    std::fs::read(status_path(paths)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

static STATUS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Read-modify-write of the status record; one writer at a time within the agent.
pub fn update_status(paths: &AgentPaths, f: impl FnOnce(&mut SyncStatus)) {
    let _guard = STATUS_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut status = load_status(paths);
    f(&mut status);
    let written = serde_json::to_vec(&status)
        .map_err(anyhow::Error::from)
        .and_then(|b| write_atomic(&status_path(paths), &b, 0o600));
    if let Err(e) = written {
        tracing::warn!(error = %format!("{e:#}"), "cannot save the vigosync status");
    }
}

/// How long changes to the incoming transfers may wait before they are written.
const STATUS_FLUSH: std::time::Duration = std::time::Duration::from_millis(200);

/// The incoming transfers `vigo status` shows, kept in memory and written to the
/// status file by one flusher at most every [`STATUS_FLUSH`]: a thousand orders or
/// finished transfers cost a few writes, not a thousand rewrites of a growing file
/// (which would stall the daemon behind the status lock).
#[derive(Clone, Default)]
struct IncomingBook {
    map: Arc<Mutex<BTreeMap<String, Incoming>>>,
    dirty: Arc<Notify>,
    flusher: Arc<std::sync::OnceLock<()>>,
}

impl IncomingBook {
    fn load(paths: &AgentPaths) -> Self {
        let book = Self::default();
        *book.lock() = load_status(paths).incoming;
        book
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Incoming>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the book; the flusher writes it soon after.
    fn edit(&self, f: impl FnOnce(&mut BTreeMap<String, Incoming>)) {
        f(&mut self.lock());
        self.dirty.notify_one();
    }

    /// Writes the book into the status record now.
    fn flush(&self, paths: &AgentPaths) {
        let snapshot = self.lock().clone();
        update_status(paths, |s| s.incoming = snapshot);
    }

    /// Starts the flusher (once, on the running runtime).
    fn start_flusher(&self, paths: &AgentPaths) {
        self.flusher.get_or_init(|| {
            let (book, paths) = (self.clone(), paths.clone());
            tokio::spawn(async move {
                loop {
                    book.dirty.notified().await;
                    tokio::time::sleep(STATUS_FLUSH).await;
                    let (book, paths) = (book.clone(), paths.clone());
                    let _ = tokio::task::spawn_blocking(move || book.flush(&paths)).await;
                }
            });
        });
    }
}

/// The envoy's side of the swarm: its peer server (serving what the server orders
/// it to serve) and the fetcher for what it is ordered to receive.
pub struct Swarm {
    incoming: IncomingBook,
    paths: AgentPaths,
    /// The server's certificate revocation list, refused by the peer server (at the
    /// handshake and at every request) and by the fetcher.
    revoked: vigo_pki::RevocationList,
    fetcher: Arc<Fetcher>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    wake: Arc<Notify>,
    peer: Option<(PeerServer, Arc<PeerState>)>,
}

impl Swarm {
    /// The fetcher only (`vigo run --once`): nothing is served.
    pub fn fetcher(paths: &AgentPaths, cache: HashCache, wake: Arc<Notify>) -> anyhow::Result<Self> {
        Self::with_fetcher(paths, &Credentials::load(paths)?, cache, wake)
    }

    fn with_fetcher(
        paths: &AgentPaths,
        creds: &Credentials,
        cache: HashCache,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let revoked = crate::revoked::load(paths);
        let tls = vigo_swarm::tls::client_tls(&creds.ca, &creds.cert, &creds.key, revoked.clone())?;
        let accounts: Arc<dyn vigo_swarm::accounts::Accounts> = Arc::new(PasswdFile::system());
        let fetcher = Fetcher::new(creds.name.clone(), creds.server_key, tls, accounts, cache);
        Ok(Self {
            incoming: IncomingBook::load(paths),
            paths: paths.clone(),
            revoked,
            fetcher: Arc::new(fetcher),
            in_flight: Arc::default(),
            wake,
            peer: None,
        })
    }

    /// The fetcher plus the peer server on `listen` (the daemon). A port that cannot be
    /// bound is logged and the envoy carries on without serving.
    pub async fn start(
        paths: &AgentPaths,
        cache: HashCache,
        wake: Arc<Notify>,
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        let creds = Credentials::load(paths)?;
        let mut swarm = Self::with_fetcher(paths, &creds, cache.clone(), wake)?;
        let tls = vigo_swarm::tls::server_tls(&creds.ca, &creds.cert, &creds.key, swarm.revoked.clone())?;
        let accounts: Arc<dyn vigo_swarm::accounts::Accounts> = Arc::new(PasswdFile::system());
        let state = Arc::new(
            PeerState::new(creds.name, creds.server_key, swarm.revoked.clone())
                .with_source("vigosync", Arc::new(VigosyncSource::new(accounts, cache))),
        );
        match PeerServer::bind(listen, tls, state.clone()).await {
            Ok(peer) => swarm.peer = Some((peer, state)),
            Err(e) => tracing::error!(error = %e, "swarm peer server not started; this envoy serves no files"),
        }
        Ok(swarm)
    }

    /// Replaces the revocation list with the server's (as a check-in delivered it):
    /// refused from the next handshake and request on.
    pub fn set_revoked(&self, fingerprints: &[String]) {
        match self.revoked.replace(fingerprints) {
            Ok(true) => tracing::info!(revoked = fingerprints.len(), "certificate revocation list updated"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "the server's certificate revocation list was not applied"),
        }
    }

    /// Starts a fetch for every order not already in flight; each finished fetch
    /// wakes the daemon so the next check-in reports the file.
    pub fn dispatch(&self, orders: Vec<SignedOrder>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles = Vec::new();
        self.incoming.start_flusher(&self.paths);
        for signed in orders {
            // Read unverified only to de-duplicate and to show; the fetcher verifies.
            let Ok(order) = serde_json::from_slice::<TransferOrder>(&signed.payload) else {
                tracing::warn!("transfer order is not valid JSON; ignored");
                continue;
            };
            let key = format!("{}/{}@{}", order.user, order.name, order.sha256);
            if !self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.clone()) {
                continue;
            }
            self.incoming.edit(|incoming| {
                let attempts = incoming.get(&key).map_or(0, |i| i.attempts) + 1;
                incoming.insert(key.clone(), Incoming::fetching(&order, attempts));
            });
            let (fetcher, in_flight, wake, book) =
                (self.fetcher.clone(), self.in_flight.clone(), self.wake.clone(), self.incoming.clone());
            handles.push(tokio::spawn(async move {
                let result = fetcher.fetch(&signed).await;
                in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
                match result {
                    Ok(outcome) => {
                        log_outcome(&order, &outcome);
                        book.edit(|incoming| {
                            incoming.remove(&key);
                        });
                        wake.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!(order = %order.id, user = %order.user, name = %order.name, source = %order.source, error = %e, "vigosync transfer failed");
                        book.edit(|incoming| {
                            if let Some(i) = incoming.get_mut(&key) {
                                i.state = "failed".into();
                                i.error = Some(e.to_string());
                                i.updated_at = crate::checkin::now();
                            }
                        });
                    }
                }
            }));
        }
        handles
    }

    /// Removes partial downloads untouched for [`STALE_PART`] in `accounts`' directories
    /// (transfers that will not resume), in the background.
    pub fn sweep_parts(&self, accounts: Vec<Account>) {
        let fetcher = self.fetcher.clone();
        tokio::task::spawn_blocking(move || {
            for account in &accounts {
                match fetcher.remove_stale_parts(account, STALE_PART) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(user = %account.name, removed = n, "stale vigosync partial files removed"),
                    Err(e) => tracing::warn!(user = %account.name, error = %e, "cannot sweep vigosync partial files"),
                }
            }
        });
    }

    /// Records how many transfers the peer server is serving (for `vigo status`).
    pub fn record_outgoing(&self) {
        let active = self.peer.as_ref().map_or(0, |(_, state)| state.active_transfers());
        update_status(&self.paths, |s| s.outgoing = active);
    }

    /// Stops the peer server (running transfers get a grace period) and writes the
    /// incoming transfers as they stand.
    pub async fn shutdown(self) {
        self.incoming.flush(&self.paths);
        if let Some((peer, _)) = self.peer
            && let Err(e) = peer.shutdown().await
        {
            tracing::warn!(error = %e, "swarm peer server shutdown");
        }
    }
}

fn log_outcome(order: &TransferOrder, outcome: &FetchOutcome) {
    let (user, name, source) = (&order.user, &order.name, &order.source);
    match outcome {
        FetchOutcome::Written { fetched, resumed_from, .. } => {
            tracing::info!(%user, %name, %source, fetched, resumed_from, "vigosync file received");
        }
        FetchOutcome::AlreadyPresent { .. } => tracing::debug!(%user, %name, "vigosync file already present"),
        FetchOutcome::Superseded { local_mtime, .. } => {
            tracing::info!(%user, %name, local_mtime, offered_mtime = order.mtime, "kept the newer local vigosync file");
        }
        FetchOutcome::Conflict { .. } => {
            tracing::warn!(%user, %name, %source, "vigosync file saved locally while being received; kept the local save");
        }
    }
}

impl Incoming {
    fn fetching(order: &TransferOrder, attempts: u32) -> Self {
        Self {
            user: order.user.clone(),
            name: order.name.clone(),
            sha256: order.sha256.clone(),
            size: order.size,
            source: order.source.clone(),
            state: "fetching".into(),
            error: None,
            attempts,
            updated_at: crate::checkin::now(),
        }
    }
}
