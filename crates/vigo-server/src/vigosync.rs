//! vigosync on the server: which envoy gets which version of a user's file, from whom.
//!
//! [`Planner`] is pure: from each envoy's `vigosync` trait, its human accounts, its
//! address and what it has seen, it decides deliveries. [`Vigosync`] keeps a planner
//! in memory for the server, feeds it from check-ins, tracks pending deliveries for
//! the status view and signs transfer orders. The content never passes through the
//! server: a receiving envoy fetches it from the source named in its order.
//!
//! Rules, for each (user, file name):
//! - participants are the envoys, not revoked, where the user is a human account
//!   (`users.human`) and has opted in (the user is a key of the `vigosync` trait,
//!   which the agent reports only when `~/vigosync/` exists);
//! - the winner is the newest version a participant holds ([`sync::newer`]: mtime,
//!   then hash);
//! - a participant receives the winner when it holds another (so older) version, or
//!   holds none and the winner is newer than any version it has seen (held, or
//!   received). So a file deleted on one envoy is not sent back until it changes
//!   elsewhere, and an older copy, wherever it turns up, is replaced, never spread;
//! - the source is a participant holding the winner's hash whose address is known:
//!   the most recently checked in first, then by name.
//!
//! An envoy's report is its own word, so it is bounded before it counts: a version's
//! mtime is clamped to no later than when the server first saw that version plus
//! [`MTIME_SKEW_SECS`] (a far-future stamp cannot beat a later real edit elsewhere),
//! and one envoy's report of one user counts for at most
//! [`sync::MAX_FILES_PER_USER`] files and [`sync::MAX_BYTES_PER_USER`] bytes; the rest
//! is ignored, logged and shown in the status view ([`SyncStatus::overflow`]), as is
//! what the envoy itself says it left out ([`sync::OVERFLOW_TRAIT`]).
//!
//! Every order names the certificate the server issued to its source and to its
//! target ([`Certificates`]), so only those two certificates can use it; an order is
//! not issued while either is unknown (revoked), and is signed again when either
//! changes (re-enrolment).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use vigo_pki::SigningKey;
use vigo_store::SeenRow;
use vigo_swarm::order::{SignedOrder, TransferOrder};
use vigo_swarm::sync::{self, FileEntry};

/// How long a transfer order is honoured.
pub const ORDER_TTL_SECS: i64 = 600;

/// An order is signed again once less than this much of its life is left, so an envoy
/// never receives one about to expire.
const RESIGN_BEFORE_SECS: i64 = ORDER_TTL_SECS / 2;

/// The `kind` of vigosync transfer orders.
pub const ORDER_KIND: &str = "vigosync";

/// A source silent for longer than this is probably gone: a target's deliveries that
/// wait on it are planned again, so a holder that still checks in takes over.
const STALE_SOURCE_SECS: i64 = 90;

/// Most orders one check-in response carries; the rest follow at the next check-ins.
pub const MAX_ORDERS_PER_CHECKIN: usize = 1024;

/// How far a version's mtime may be ahead of the moment the server first saw it
/// (clock skew between envoys and the server): later stamps are clamped to this.
pub const MTIME_SKEW_SECS: i64 = 300;

/// The first-seen records are pruned to the versions still held once they outgrow this.
const FIRST_SEEN_PRUNE_MIN: usize = 100_000;

/// One user's files on one envoy, by name.
pub type Files = BTreeMap<String, FileEntry>;

/// Where orders get the certificates they name: the SHA-256 (hex) of the
/// certificate the server issued to an envoy, `None` for an envoy unknown or revoked.
pub trait Certificates: Send + Sync {
    fn certificate(&self, envoy: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String> + Send + Sync> Certificates for F {
    fn certificate(&self, envoy: &str) -> Option<String> {
        self(envoy)
    }
}

/// What the planner knows about one envoy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvoySync {
    pub revoked: bool,
    /// Names of its human accounts (`users.human`).
    pub humans: BTreeSet<String>,
    /// Its `vigosync` trait, cleaned: each opted-in user with the valid files held.
    pub users: BTreeMap<String, Files>,
    /// Where its last check-in came from; its peer server listens there on the swarm port.
    pub addr: Option<IpAddr>,
    /// Unix seconds of its last check-in.
    pub last_checkin: Option<i64>,
    /// When it was enrolled: a different value means a new incarnation of the name,
    /// which has seen nothing.
    pub enrolled_at: i64,
    /// Per user, what did not make it into `users`: left out by the envoy, or refused here.
    pub overflow: BTreeMap<String, UserOverflow>,
}

/// What of one user's files on one envoy does not take part in sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserOverflow {
    /// Left out by the envoy (over its per-user or per-check-in limits).
    #[schema(value_type = Object)]
    pub left_out: sync::Overflow,
    /// Reported but ignored by the server (over the per-user limits one envoy may announce).
    #[schema(value_type = Object)]
    pub refused: sync::Overflow,
}

/// An envoy's report as read: its humans, its opted-in users' files, and the overflow.
pub type Reported = (BTreeSet<String>, BTreeMap<String, Files>, BTreeMap<String, UserOverflow>);

impl EnvoySync {
    /// Reads the human accounts and the `vigosync` trait from an envoy's traits.
    /// Whatever does not fit the expected shape is left out and logged: a peer's
    /// report is never trusted to be well formed.
    pub fn from_traits(envoy: &str, traits: &Value) -> Reported {
        let humans = traits
            .pointer("/users/human")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let mut overflow: BTreeMap<String, UserOverflow> = BTreeMap::new();
        let users = match traits.get(sync::TRAIT) {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(raw) => match sync::SyncTrait::deserialize(raw) {
                Ok(reported) => clean(envoy, reported, &mut overflow),
                Err(e) => {
                    tracing::warn!(envoy, error = %e, "vigosync trait ignored: unexpected shape");
                    BTreeMap::new()
                }
            },
        };
        if let Some(raw) = traits.get(sync::OVERFLOW_TRAIT).filter(|v| !v.is_null()) {
            match sync::OverflowTrait::deserialize(raw) {
                Ok(left) => {
                    for (user, o) in left.into_iter().filter(|(u, o)| users.contains_key(u) && !o.is_empty()) {
                        overflow.entry(user).or_default().left_out = o;
                    }
                }
                Err(e) => tracing::warn!(envoy, error = %e, "vigosync overflow trait ignored: unexpected shape"),
            }
        }
        for (user, o) in &overflow {
            if !o.left_out.is_empty() {
                tracing::warn!(
                    envoy,
                    user,
                    files = o.left_out.files,
                    bytes = o.left_out.bytes,
                    "vigosync: envoy left files out of its report (over its limits)"
                );
            }
        }
        (humans, users, overflow)
    }

    /// Whether `user` takes part on this envoy.
    fn participates(&self, user: &str) -> bool {
        !self.revoked && self.humans.contains(user) && self.users.contains_key(user)
    }

    fn is_opted_in(&self) -> bool {
        !self.revoked && !self.users.is_empty()
    }
}

/// Keeps the valid users and files of a reported trait; of two entries with one name,
/// the newer. What is dropped is logged once per report, with the first example, so a
/// misbehaving envoy cannot flood the log.
fn clean(
    envoy: &str,
    reported: sync::SyncTrait,
    overflow: &mut BTreeMap<String, UserOverflow>,
) -> BTreeMap<String, Files> {
    let mut users = BTreeMap::new();
    let mut dropped = 0usize;
    let mut example = None;
    for (user, entries) in reported {
        if !sync::valid_name(&user) {
            dropped += 1 + entries.len();
            example.get_or_insert_with(|| format!("user {:?}", user));
            continue;
        }
        let mut files = Files::new();
        for e in entries {
            if !sync::valid_name(&e.name) || !valid_sha256(&e.sha256) || e.size > sync::MAX_FILE_SIZE {
                dropped += 1;
                example.get_or_insert_with(|| format!("{user}'s {:?}", e.name));
                continue;
            }
            match files.get(&e.name) {
                Some(kept) if !sync::newer(&e, kept) => {}
                _ => {
                    files.insert(e.name.clone(), e);
                }
            }
        }
        let refused = limit(&mut files);
        if !refused.is_empty() {
            tracing::warn!(
                envoy,
                user,
                files = refused.files,
                bytes = refused.bytes,
                "vigosync: files over the per-user limits one envoy may announce ignored"
            );
            overflow.entry(user.clone()).or_default().refused = refused;
        }
        users.insert(user, files);
    }
    if let Some(example) = example {
        tracing::warn!(envoy, dropped, example, "vigosync entries ignored: invalid user, name, hash or size");
    }
    users
}

/// Keeps the first files by name within [`sync::MAX_FILES_PER_USER`] and
/// [`sync::MAX_BYTES_PER_USER`]; returns what was dropped.
fn limit(files: &mut Files) -> sync::Overflow {
    let mut refused = sync::Overflow::default();
    let (mut count, mut bytes) = (0usize, 0u64);
    files.retain(|_, e| {
        let fits = count < sync::MAX_FILES_PER_USER && bytes.saturating_add(e.size) <= sync::MAX_BYTES_PER_USER;
        if fits {
            count += 1;
            bytes += e.size;
        } else {
            refused.add(1, e.size);
        }
        fits
    });
    refused
}

fn valid_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The newest version of a file an envoy has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Seen {
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub sha256: String,
}

impl Seen {
    fn of(e: &FileEntry) -> Self {
        Self { mtime: e.mtime, sha256: e.sha256.clone() }
    }

    /// Whether `e` is newer than this: the order of [`sync::newer`] (mtime, then hash).
    fn is_older_than(&self, e: &FileEntry) -> bool {
        (e.mtime, e.sha256.as_str()) > (self.mtime, self.sha256.as_str())
    }
}

/// One file to carry from `source` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub user: String,
    pub target: String,
    pub source: String,
    pub source_addr: SocketAddr,
    /// The winning version (its name is the file's).
    pub version: FileEntry,
}

/// user → file name → envoy → the newest version seen there.
type SeenMap = BTreeMap<String, BTreeMap<String, BTreeMap<String, Seen>>>;

/// The pure decision: envoys and what they have seen in, deliveries out.
#[derive(Debug, Default, Clone)]
pub struct Planner {
    envoys: BTreeMap<String, EnvoySync>,
    seen: SeenMap,
    /// (user, name, sha256) → the latest mtime (ns) that version may carry: when the
    /// server first saw it, plus the skew allowance.
    first_seen: BTreeMap<(String, String, String), i64>,
    /// Size of `first_seen` at which it is next pruned.
    prune_at: usize,
}

impl Planner {
    pub fn envoy(&self, name: &str) -> Option<&EnvoySync> {
        self.envoys.get(name)
    }

    /// Clamps every reported version's mtime to no later than when this planner first
    /// saw that version (`now`, unix seconds, for versions new to it) plus
    /// [`MTIME_SKEW_SECS`]. Returns how many were clamped.
    pub fn clamp_mtimes(&mut self, users: &mut BTreeMap<String, Files>, now: i64) -> usize {
        let latest = now.saturating_add(MTIME_SKEW_SECS).saturating_mul(1_000_000_000);
        let mut clamped = 0;
        for (user, files) in users.iter_mut() {
            for e in files.values_mut() {
                let key = (user.clone(), e.name.clone(), e.sha256.clone());
                let bound = *self.first_seen.entry(key).or_insert(latest);
                if e.mtime > bound {
                    e.mtime = bound;
                    clamped += 1;
                }
            }
        }
        self.prune_first_seen();
        clamped
    }

    /// Takes a stored seen version as the latest mtime its version may carry (it was
    /// clamped when it was recorded).
    fn bound_from_seen(&mut self, row: &SeenRow) {
        let key = (row.user.clone(), row.name.clone(), row.sha256.clone());
        let bound = self.first_seen.entry(key).or_insert(row.mtime);
        *bound = (*bound).min(row.mtime);
    }

    /// Drops first-seen records of versions no envoy holds, once there are many.
    fn prune_first_seen(&mut self) {
        if self.first_seen.len() < self.prune_at.max(FIRST_SEEN_PRUNE_MIN) {
            return;
        }
        let held: BTreeSet<(&str, &str, &str)> = self
            .envoys
            .values()
            .flat_map(|e| {
                e.users.iter().flat_map(|(u, files)| {
                    files.values().map(move |f| (u.as_str(), f.name.as_str(), f.sha256.as_str()))
                })
            })
            .collect();
        let keep: BTreeSet<(String, String, String)> =
            held.into_iter().map(|(u, n, h)| (u.to_string(), n.to_string(), h.to_string())).collect();
        self.first_seen.retain(|k, _| keep.contains(k));
        self.prune_at = self.first_seen.len().saturating_mul(2);
    }

    /// Sets what is known about an envoy, and records as seen every version it holds
    /// that is newer than what it had seen; those records are returned for storage.
    pub fn set_envoy(&mut self, name: &str, envoy: EnvoySync) -> Vec<SeenRow> {
        let mut rows = Vec::new();
        for (user, files) in &envoy.users {
            for e in files.values() {
                if self.remember_named(name, user, e.name.clone(), Seen::of(e)) {
                    rows.push(SeenRow {
                        envoy: name.to_string(),
                        user: user.clone(),
                        name: e.name.clone(),
                        mtime: e.mtime,
                        sha256: e.sha256.clone(),
                    });
                }
            }
        }
        self.envoys.insert(name.to_string(), envoy);
        rows
    }

    /// Records that `envoy` has seen `version` of `user`'s file `name`, unless it has
    /// seen a newer one; true when the record changed.
    pub fn remember_row(&mut self, row: SeenRow) -> bool {
        self.remember_named(&row.envoy, &row.user, row.name, Seen { mtime: row.mtime, sha256: row.sha256 })
    }

    fn remember_named(&mut self, envoy: &str, user: &str, name: String, seen: Seen) -> bool {
        let slot = self.seen.entry(user.to_string()).or_default().entry(name).or_default();
        match slot.get(envoy) {
            Some(old) if (seen.mtime, seen.sha256.as_str()) <= (old.mtime, old.sha256.as_str()) => false,
            _ => {
                slot.insert(envoy.to_string(), seen);
                true
            }
        }
    }

    /// What `envoy` has seen of `user`'s `name`.
    pub fn seen(&self, envoy: &str, user: &str, name: &str) -> Option<&Seen> {
        self.seen.get(user)?.get(name)?.get(envoy)
    }

    /// Forgets what `envoy` has seen: a new incarnation of the name starts afresh.
    pub fn forget_seen(&mut self, envoy: &str) {
        for files in self.seen.values_mut() {
            for by_envoy in files.values_mut() {
                by_envoy.remove(envoy);
            }
        }
    }

    /// Every user some envoy reports.
    pub fn users(&self) -> BTreeSet<String> {
        self.envoys.values().flat_map(|e| e.users.keys().cloned()).collect()
    }

    /// Whether any envoy takes part at all.
    pub fn is_active(&self) -> bool {
        self.envoys.values().any(EnvoySync::is_opted_in)
    }

    /// Every delivery, by user, file name and target.
    pub fn plan(&self) -> Vec<Delivery> {
        self.users().iter().flat_map(|u| self.plan_user(u)).collect()
    }

    /// The deliveries of one user's files, by file name and target.
    pub fn plan_user(&self, user: &str) -> Vec<Delivery> {
        let participants = self.participants(user);
        let names: BTreeSet<&str> =
            participants.iter().flat_map(|(_, _, files)| files.keys().map(String::as_str)).collect();
        let mut out = Vec::new();
        for name in names {
            let Some(winner) = winner(&participants, name) else { continue };
            let Some((source, addr)) = source(&participants, name, winner) else {
                tracing::debug!(user, name, "vigosync: no holder of the newest version has a known address");
                continue;
            };
            for (target, _, files) in &participants {
                match files.get(name) {
                    Some(held) if held.sha256 == winner.sha256 => continue,
                    // Any other copy is older than the winner: last write wins.
                    Some(_) => {}
                    // Nothing held: deleted there, unless the winner is newer than what it saw.
                    None if self.seen(target, user, name).is_some_and(|s| !s.is_older_than(winner)) => continue,
                    None => {}
                }
                out.push(Delivery {
                    user: user.to_string(),
                    target: (*target).to_string(),
                    source: source.to_string(),
                    source_addr: SocketAddr::new(addr, vigo_swarm::SWARM_PORT),
                    version: winner.clone(),
                });
            }
        }
        out
    }

    fn participants(&self, user: &str) -> Vec<(&str, &EnvoySync, &Files)> {
        self.envoys
            .iter()
            .filter(|(_, e)| e.participates(user))
            .filter_map(|(n, e)| e.users.get(user).map(|files| (n.as_str(), e, files)))
            .collect()
    }
}

type Participant<'a> = (&'a str, &'a EnvoySync, &'a Files);

fn winner<'a>(participants: &[Participant<'a>], name: &str) -> Option<&'a FileEntry> {
    participants.iter().filter_map(|(_, _, files)| files.get(name)).fold(None, |best, e| match best {
        Some(b) if !sync::newer(e, b) => Some(b),
        _ => Some(e),
    })
}

/// The holder of the winner's content to fetch from: most recent check-in, then name.
fn source<'a>(participants: &[Participant<'a>], name: &str, winner: &FileEntry) -> Option<(&'a str, IpAddr)> {
    participants
        .iter()
        .filter(|(_, _, files)| files.get(name).is_some_and(|e| e.sha256 == winner.sha256))
        .filter_map(|(n, e, _)| e.addr.map(|a| (*n, e.last_checkin, a)))
        .min_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)))
        .map(|(n, _, a)| (n, a))
}

/// A delivery the server has ordered and not yet seen completed.
#[derive(Debug, Clone)]
struct Pending {
    delivery: Delivery,
    /// Unix seconds since the delivery has been wanted (of this version, from this source).
    since: i64,
    /// The order last handed out, re-sent until it nears expiry or either end's
    /// certificate changes; with its expiry and the (source, target) certificates.
    signed: Option<(SignedOrder, i64, (String, String))>,
}

/// target → (user, file name) → the pending delivery.
type PendingMap = BTreeMap<String, BTreeMap<(String, String), Pending>>;

#[derive(Default)]
struct State {
    planner: Planner,
    pending: PendingMap,
}

/// What a check-in changed and what it gets.
#[derive(Debug, Default)]
pub struct CheckInSync {
    /// Signed orders for the envoy that checked in.
    pub orders: Vec<SignedOrder>,
    /// Seen versions to store.
    pub seen: Vec<SeenRow>,
    /// Other envoys with new orders waiting: tell them to check in now.
    pub poke: Vec<String>,
}

/// An envoy as the server restores it at start.
#[derive(Debug, Clone, Copy)]
pub struct Restored<'a> {
    pub name: &'a str,
    pub traits: &'a Value,
    pub revoked: bool,
    pub enrolled_at: i64,
    pub last_checkin: Option<i64>,
}

/// vigosync's state in the server: the planner, pending deliveries, order signing.
pub struct Vigosync {
    key: Arc<SigningKey>,
    /// The certificates orders name (none until [`Vigosync::with_certificates`]).
    certs: Arc<dyn Certificates>,
    /// Whether any envoy takes part; while none does, check-ins skip the lock.
    active: AtomicBool,
    state: Mutex<State>,
}

impl Vigosync {
    /// Builds the state from the fleet as loaded at start (traits, revocations) and the
    /// stored seen versions. Addresses are learnt from the next check-ins.
    pub fn new<'a>(key: Arc<SigningKey>, envoys: impl IntoIterator<Item = Restored<'a>>, seen: Vec<SeenRow>) -> Self {
        let mut planner = Planner::default();
        for row in seen {
            planner.bound_from_seen(&row);
            planner.remember_row(row);
        }
        let now = crate::now();
        for e in envoys {
            let (humans, mut users, overflow) = EnvoySync::from_traits(e.name, e.traits);
            if users.is_empty() {
                continue;
            }
            planner.clamp_mtimes(&mut users, now);
            let view = EnvoySync {
                revoked: e.revoked,
                humans,
                users,
                addr: None,
                last_checkin: e.last_checkin,
                enrolled_at: e.enrolled_at,
                overflow,
            };
            // Holdings restored from stored traits were recorded when they arrived.
            planner.set_envoy(e.name, view);
        }
        let active = planner.is_active();
        let mut state = State { planner, pending: PendingMap::new() };
        let users = state.planner.users();
        replan(&mut state, &users, crate::now());
        let certs: Arc<dyn Certificates> = Arc::new(|_: &str| None);
        Self { key, certs, active: AtomicBool::new(active), state: Mutex::new(state) }
    }

    /// Orders name the certificates `certs` gives for their source and target; without
    /// it (or while it knows neither) no order is issued.
    #[must_use]
    pub fn with_certificates(mut self, certs: Arc<dyn Certificates>) -> Self {
        self.certs = certs;
        self
    }

    /// Whether any envoy takes part.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Takes a check-in into account: `traits` when the envoy sent them (they changed),
    /// the address it came from. Returns its orders, seen versions to store, and the
    /// other envoys that now have orders waiting.
    pub fn check_in(
        &self,
        name: &str,
        traits: Option<&Value>,
        addr: Option<IpAddr>,
        enrolled_at: i64,
        now: i64,
    ) -> CheckInSync {
        let mut reported = traits.map(|t| EnvoySync::from_traits(name, t));
        let opts_in = reported.as_ref().is_some_and(|(_, users, _)| !users.is_empty());
        if !opts_in && !self.is_active() {
            return CheckInSync::default();
        }
        let mut state = self.lock();
        if let Some((_, users, _)) = &mut reported {
            let clamped = state.planner.clamp_mtimes(users, now);
            if clamped > 0 {
                tracing::warn!(envoy = name, clamped, "vigosync: mtimes later than first seen (plus skew) clamped");
            }
        }
        // The steady state (same traits, address and incarnation) only notes the time;
        // the envoy's files are compared or copied only when something was reported.
        let changed = match state.planner.envoys.get_mut(name) {
            None if !opts_in => return CheckInSync::default(),
            None => true,
            Some(k) => {
                k.last_checkin = Some(now);
                k.enrolled_at != enrolled_at
                    || k.revoked
                    || addr.is_some_and(|a| k.addr != Some(a))
                    || reported.as_ref().is_some_and(|(humans, users, overflow)| {
                        (&k.humans, &k.users, &k.overflow) != (humans, users, overflow)
                    })
            }
        };
        let mut out = CheckInSync::default();
        if changed {
            let known = state.planner.envoy(name).cloned();
            let mut next = known.clone().unwrap_or_default();
            if next.enrolled_at != enrolled_at {
                // A new incarnation: it has seen nothing, and is not revoked (it checked in).
                state.planner.forget_seen(name);
                next.enrolled_at = enrolled_at;
            }
            next.revoked = false;
            next.last_checkin = Some(now);
            next.addr = addr.or(next.addr);
            if let Some((humans, users, overflow)) = reported {
                next.humans = humans;
                next.users = users;
                next.overflow = overflow;
            }
            let mut users: BTreeSet<String> = next.users.keys().cloned().collect();
            users.extend(known.iter().flat_map(|k| k.users.keys().cloned()));
            out.seen = state.planner.set_envoy(name, next);
            out.poke = replan(&mut state, &users, now);
            out.poke.retain(|target| target != name);
            self.active.store(state.planner.is_active(), Ordering::Release);
        }
        let stale = stale_sources(&state, name, now);
        if !stale.is_empty() {
            for target in replan(&mut state, &stale, now) {
                if target != name && !out.poke.contains(&target) {
                    out.poke.push(target);
                }
            }
        }
        out.orders = self.orders_for(&mut state, name, now);
        out
    }

    /// Takes a revoked envoy out: it neither sends nor receives from now on. Returns
    /// the envoys that now have new orders waiting (another source or winner).
    pub fn revoke(&self, name: &str) -> Vec<String> {
        let mut state = self.lock();
        let Some(e) = state.planner.envoys.get_mut(name) else { return Vec::new() };
        e.revoked = true;
        let users: BTreeSet<String> = e.users.keys().cloned().collect();
        let poke = replan(&mut state, &users, crate::now());
        self.active.store(state.planner.is_active(), Ordering::Release);
        poke
    }

    /// Whether `envoy` has orders waiting.
    pub fn has_orders(&self, envoy: &str) -> bool {
        self.is_active() && self.lock().pending.get(envoy).is_some_and(|p| !p.is_empty())
    }

    /// The fleet-wide view: per user and file, the winner, what each envoy holds, and
    /// the pending orders. `user` limits it to one user.
    pub fn status(&self, user: Option<&str>) -> SyncStatus {
        let state = self.lock();
        let users: Vec<String> = match user {
            Some(u) => state.planner.users().into_iter().filter(|x| x == u).collect(),
            None => state.planner.users().into_iter().collect(),
        };
        let overflow = state
            .planner
            .envoys
            .iter()
            .filter(|(_, e)| !e.revoked)
            .flat_map(|(envoy, e)| {
                e.overflow.iter().filter(|(u, _)| user.is_none_or(|want| want == u.as_str())).map(|(u, o)| {
                    OverflowStatus { envoy: envoy.clone(), user: u.clone(), left_out: o.left_out, refused: o.refused }
                })
            })
            .collect();
        SyncStatus { users: users.iter().map(|u| user_status(&state, u)).collect(), overflow }
    }

    /// Signs (or re-uses) the orders for `target`.
    fn orders_for(&self, state: &mut State, target: &str, now: i64) -> Vec<SignedOrder> {
        let Some(pending) = state.pending.get_mut(target) else { return Vec::new() };
        let mut orders = Vec::new();
        for key in fair_share(pending.keys(), MAX_ORDERS_PER_CHECKIN) {
            let Some(p) = pending.get_mut(&key) else { continue };
            let source = &p.delivery.source;
            let (Some(source_cert), Some(target_cert)) =
                (self.certs.certificate(source), self.certs.certificate(target))
            else {
                tracing::warn!(%source, %target, "no certificate on record for an end of a transfer; no order issued");
                p.signed = None;
                continue;
            };
            let certs = (source_cert, target_cert);
            let fresh = p
                .signed
                .as_ref()
                .is_some_and(|(_, expires, named)| expires - now > RESIGN_BEFORE_SECS && *named == certs);
            if !fresh {
                let expires_at = now + ORDER_TTL_SECS;
                let order = order_of(&p.delivery, expires_at, &certs);
                p.signed = Some((SignedOrder::sign(&order, &self.key), expires_at, certs));
            }
            if let Some((signed, _, _)) = &p.signed {
                orders.push(signed.clone());
            }
        }
        orders
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves planner and pending map consistent before anything that
        // could panic, so a poisoned lock still guards usable data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// At most `limit` of the (user, name) keys, taken from each user in turn, so one
/// user with thousands of pending files never holds back another user's one file:
/// every check-in's orders cover every user with something pending.
fn fair_share<'a>(keys: impl Iterator<Item = &'a (String, String)>, limit: usize) -> Vec<(String, String)> {
    let mut by_user: BTreeMap<&str, Vec<&(String, String)>> = BTreeMap::new();
    for key in keys {
        by_user.entry(key.0.as_str()).or_default().push(key);
    }
    let mut queues: Vec<std::vec::IntoIter<&(String, String)>> = by_user.into_values().map(Vec::into_iter).collect();
    let mut chosen = Vec::new();
    while chosen.len() < limit && !queues.is_empty() {
        queues.retain_mut(|queue| match queue.next() {
            Some(key) if chosen.len() < limit => {
                chosen.push(key.clone());
                true
            }
            _ => false,
        });
    }
    chosen
}

/// Users whose deliveries to `target` wait on a source that stopped checking in.
fn stale_sources(state: &State, target: &str, now: i64) -> BTreeSet<String> {
    let Some(pending) = state.pending.get(target) else { return BTreeSet::new() };
    pending
        .values()
        .filter(|p| {
            let last = state.planner.envoy(&p.delivery.source).and_then(|e| e.last_checkin);
            last.is_none_or(|t| now - t > STALE_SOURCE_SECS)
        })
        .map(|p| p.delivery.user.clone())
        .collect()
}

fn order_of(d: &Delivery, expires_at: i64, (source_cert, target_cert): &(String, String)) -> TransferOrder {
    use rand_core::RngCore as _;
    let mut id = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut id);
    TransferOrder {
        id: id.iter().map(|b| format!("{b:02x}")).collect(),
        kind: ORDER_KIND.to_string(),
        user: d.user.clone(),
        name: d.version.name.clone(),
        sha256: d.version.sha256.clone(),
        size: d.version.size,
        mtime: d.version.mtime,
        source: d.source.clone(),
        source_addr: d.source_addr.to_string(),
        target: d.target.clone(),
        source_cert: source_cert.clone(),
        target_cert: target_cert.clone(),
        expires_at,
    }
}

/// Plans `users` again and replaces their pending deliveries. A delivery that stays the
/// same keeps its start time and order; the targets of new ones are returned.
fn replan(state: &mut State, users: &BTreeSet<String>, now: i64) -> Vec<String> {
    let mut poke = BTreeSet::new();
    for user in users {
        let mut old: BTreeMap<(String, String), Pending> = BTreeMap::new();
        for (target, by_file) in &mut state.pending {
            let keys: Vec<(String, String)> = by_file.keys().filter(|(u, _)| u == user).cloned().collect();
            for key in keys {
                if let Some(p) = by_file.remove(&key) {
                    old.insert((target.clone(), key.1), p);
                }
            }
        }
        for d in state.planner.plan_user(user) {
            let key = (d.target.clone(), d.version.name.clone());
            let pending = match old.remove(&key) {
                Some(p) if p.delivery == d => p,
                Some(p) if p.delivery.version.sha256 == d.version.sha256 => {
                    // Same content from another source: a new order, no need to hurry.
                    Pending { delivery: d, since: p.since, signed: None }
                }
                _ => {
                    poke.insert(d.target.clone());
                    Pending { delivery: d, since: now, signed: None }
                }
            };
            let (target, name) = key;
            state.pending.entry(target).or_default().insert((user.clone(), name), pending);
        }
    }
    state.pending.retain(|_, by_file| !by_file.is_empty());
    poke.into_iter().collect()
}

// ---- the status view ----

/// vigosync across the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SyncStatus {
    /// Every user some envoy reports, by name.
    pub users: Vec<UserStatus>,
    /// Files that do not take part: left out by an envoy or refused by the server
    /// (over the per-user limits), by envoy and user.
    #[serde(default)]
    pub overflow: Vec<OverflowStatus>,
}

/// One user's files on one envoy that do not take part in sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverflowStatus {
    pub envoy: String,
    pub user: String,
    /// Left out by the envoy (its per-user and per-check-in limits).
    #[schema(value_type = Object)]
    pub left_out: sync::Overflow,
    /// Ignored by the server (the per-user limits of one envoy's report).
    #[schema(value_type = Object)]
    pub refused: sync::Overflow,
}

/// One user's synced files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserStatus {
    pub user: String,
    /// By file name.
    pub files: Vec<FileStatus>,
}

/// One file across the envoys where its user takes part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileStatus {
    pub name: String,
    /// The newest version any envoy holds; `null` when every copy was deleted.
    pub winner: Option<Version>,
    /// Each envoy where the user takes part, by name.
    pub envoys: Vec<EnvoyFile>,
    /// Transfers ordered and not yet seen completed.
    pub pending: Vec<PendingOrder>,
}

/// A file version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Version {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime: i64,
}

impl Version {
    fn of(e: &FileEntry) -> Self {
        Self { sha256: e.sha256.clone(), size: e.size, mtime: e.mtime }
    }
}

/// Where one envoy stands with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Holds the winning version.
    Current,
    /// Holds an older version.
    Outdated,
    /// Holds nothing but has seen a version: deleted there, and left deleted until the
    /// file changes elsewhere.
    Deleted,
    /// Holds nothing and has not seen the winner.
    Missing,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Outdated => "outdated",
            Self::Deleted => "deleted",
            Self::Missing => "missing",
        }
    }
}

/// One envoy's copy of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvoyFile {
    pub envoy: String,
    pub state: FileState,
    /// The version it holds.
    pub held: Option<Version>,
    /// The newest version it has seen (held or received).
    pub seen: Option<Seen>,
}

/// A transfer the server has ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PendingOrder {
    pub target: String,
    pub source: String,
    /// Where the target fetches from ("ip:port").
    pub source_addr: String,
    pub version: Version,
    /// Unix seconds since the transfer has been wanted.
    pub since: i64,
}

fn user_status(state: &State, user: &str) -> UserStatus {
    let participants = state.planner.participants(user);
    let mut names: BTreeSet<&str> =
        participants.iter().flat_map(|(_, _, files)| files.keys().map(String::as_str)).collect();
    if let Some(seen) = state.planner.seen.get(user) {
        // A file deleted everywhere is still listed where a participant has seen it.
        names.extend(
            seen.iter()
                .filter(|(_, by_envoy)| participants.iter().any(|(n, _, _)| by_envoy.contains_key(*n)))
                .map(|(name, _)| name.as_str()),
        );
    }
    let files = names
        .into_iter()
        .map(|name| {
            let win = winner(&participants, name);
            let envoys = participants
                .iter()
                .map(|(envoy, _, files)| {
                    let held = files.get(name);
                    let seen = state.planner.seen(envoy, user, name).cloned();
                    let state = match (held, win) {
                        (Some(h), Some(w)) if h.sha256 == w.sha256 => FileState::Current,
                        (Some(_), _) => FileState::Outdated,
                        (None, Some(w)) if seen.as_ref().is_none_or(|s| s.is_older_than(w)) => FileState::Missing,
                        (None, _) => FileState::Deleted,
                    };
                    EnvoyFile { envoy: (*envoy).to_string(), state, held: held.map(Version::of), seen }
                })
                .filter(|f| f.held.is_some() || f.seen.is_some() || f.state == FileState::Missing)
                .collect();
            let pending = state
                .pending
                .iter()
                .filter_map(|(target, by_file)| {
                    let p = by_file.get(&(user.to_string(), name.to_string()))?;
                    Some(PendingOrder {
                        target: target.clone(),
                        source: p.delivery.source.clone(),
                        source_addr: p.delivery.source_addr.to_string(),
                        version: Version::of(&p.delivery.version),
                        since: p.since,
                    })
                })
                .collect();
            FileStatus { name: name.to_string(), winner: win.map(Version::of), envoys, pending }
        })
        .collect();
    UserStatus { user: user.to_string(), files }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A file version; `sha` is one hex digit pair repeated to 64 characters.
    fn v(name: &str, mtime: i64, sha: &str) -> FileEntry {
        FileEntry { name: name.into(), sha256: sha.repeat(32), size: 3, mtime }
    }

    /// An envoy at 10.0.0.`n` that checked in at `n`: `humans`, and per opted-in user its files.
    fn envoy(n: u8, humans: &[&str], users: &[(&str, Vec<FileEntry>)]) -> EnvoySync {
        EnvoySync {
            revoked: false,
            humans: humans.iter().map(|h| h.to_string()).collect(),
            users: users
                .iter()
                .map(|(u, files)| (u.to_string(), files.iter().map(|f| (f.name.clone(), f.clone())).collect()))
                .collect(),
            addr: Some(IpAddr::from([10, 0, 0, n])),
            last_checkin: Some(i64::from(n)),
            enrolled_at: 1,
            overflow: BTreeMap::new(),
        }
    }

    fn planner(envoys: Vec<(&str, EnvoySync)>) -> Planner {
        let mut p = Planner::default();
        for (name, e) in envoys {
            p.set_envoy(name, e);
        }
        p
    }

    /// Deliveries as `user/name sha@mtime source->target`, sha shortened to 2 characters.
    fn shown(p: &Planner) -> Vec<String> {
        p.plan()
            .iter()
            .map(|d| {
                format!(
                    "{}/{} {}@{} {}->{}",
                    d.user,
                    d.version.name,
                    &d.version.sha256[..2],
                    d.version.mtime,
                    d.source,
                    d.target
                )
            })
            .collect()
    }

    #[test]
    fn deliveries_table() {
        let all = |files: Vec<FileEntry>| vec![("alice", files)];
        // (what the case shows, the envoys, the deliveries expected)
        type Case<'a> = (&'a str, Vec<(&'a str, EnvoySync)>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "alice everywhere, bob on h1 and h3, carol on h2: each file goes only where its user lives",
                vec![
                    (
                        "h1",
                        envoy(
                            1,
                            &["alice", "bob"],
                            &[("alice", vec![v("a.txt", 10, "aa")]), ("bob", vec![v("b.txt", 10, "bb")])],
                        ),
                    ),
                    // A `bob` directory on h2 without a human bob account does not make h2 a target.
                    ("h2", envoy(2, &["alice", "carol"], &[("alice", vec![]), ("carol", vec![]), ("bob", vec![])])),
                    ("h3", envoy(3, &["alice", "bob"], &[("alice", vec![]), ("bob", vec![])])),
                ],
                vec!["alice/a.txt aa@10 h1->h2", "alice/a.txt aa@10 h1->h3", "bob/b.txt bb@10 h1->h3"],
            ),
            (
                "a host where alice has no ~/vigosync receives nothing",
                vec![
                    ("h1", envoy(1, &["alice"], &all(vec![v("a.txt", 10, "aa")]))),
                    ("h2", envoy(2, &["alice"], &[])),
                    ("h3", envoy(3, &["alice"], &all(vec![]))),
                ],
                vec!["alice/a.txt aa@10 h1->h3"],
            ),
            (
                "the newer copy on h2 wins everywhere",
                vec![
                    ("h1", envoy(1, &["alice"], &all(vec![v("a.txt", 10, "aa")]))),
                    ("h2", envoy(2, &["alice"], &all(vec![v("a.txt", 20, "bb")]))),
                    ("h3", envoy(3, &["alice"], &all(vec![]))),
                ],
                vec!["alice/a.txt bb@20 h2->h1", "alice/a.txt bb@20 h2->h3"],
            ),
            (
                "an older copy is never ordered over a newer one",
                vec![
                    ("h1", envoy(1, &["alice"], &all(vec![v("a.txt", 30, "cc")]))),
                    ("h2", envoy(2, &["alice"], &all(vec![v("a.txt", 10, "aa")]))),
                ],
                vec!["alice/a.txt cc@30 h1->h2"],
            ),
            (
                "an older copy written where the newer one was seen is replaced, not spread",
                vec![
                    ("h1", envoy(1, &["alice"], &all(vec![v("a.txt", 20, "bb")]))),
                    ("h2", envoy(2, &["alice"], &all(vec![v("a.txt", 20, "bb")]))),
                    ("h3", envoy(3, &["alice"], &all(vec![v("a.txt", 20, "bb")]))),
                    ("h3", envoy(3, &["alice"], &all(vec![v("a.txt", 15, "aa")]))),
                ],
                vec!["alice/a.txt bb@20 h2->h3"],
            ),
            (
                "the same hash is not sent again, whatever the mtimes",
                vec![
                    ("h1", envoy(1, &["alice"], &all(vec![v("a.txt", 10, "aa")]))),
                    ("h2", envoy(2, &["alice"], &all(vec![v("a.txt", 99, "aa")]))),
                ],
                vec![],
            ),
            (
                "an mtime tie is broken by the larger hash",
                vec![
                    ("h1", envoy(1, &["alice"], &all(vec![v("a.txt", 10, "bb")]))),
                    ("h2", envoy(2, &["alice"], &all(vec![v("a.txt", 10, "aa")]))),
                    ("h3", envoy(3, &["alice"], &all(vec![v("a.txt", 10, "ab")]))),
                ],
                vec!["alice/a.txt bb@10 h1->h2", "alice/a.txt bb@10 h1->h3"],
            ),
            (
                "the source is the holder that checked in last, then the first by name",
                vec![
                    ("h1", envoy(1, &["alice"], &all(vec![v("a.txt", 10, "aa")]))),
                    ("h2", envoy(5, &["alice"], &all(vec![v("a.txt", 10, "aa")]))),
                    ("h3", envoy(5, &["alice"], &all(vec![v("a.txt", 10, "aa")]))),
                    ("h4", envoy(4, &["alice"], &all(vec![]))),
                ],
                vec!["alice/a.txt aa@10 h2->h4"],
            ),
            (
                "a holder whose address is unknown cannot be a source",
                vec![
                    ("h1", EnvoySync { addr: None, ..envoy(1, &["alice"], &all(vec![v("a.txt", 10, "aa")])) }),
                    ("h2", envoy(2, &["alice"], &all(vec![]))),
                ],
                vec![],
            ),
        ];
        for (what, envoys, want) in cases {
            assert_eq!(shown(&planner(envoys)), want, "{what}");
        }
    }

    #[test]
    fn a_revoked_envoy_neither_sends_nor_receives() {
        let mut p = planner(vec![
            ("h1", envoy(1, &["alice"], &[("alice", vec![v("a.txt", 50, "ee")])])),
            ("h2", envoy(2, &["alice"], &[("alice", vec![v("a.txt", 10, "aa")])])),
            ("h3", envoy(3, &["alice"], &[("alice", vec![])])),
        ]);
        assert_eq!(shown(&p), ["alice/a.txt ee@50 h1->h2", "alice/a.txt ee@50 h1->h3"]);
        let revoked = EnvoySync { revoked: true, ..p.envoy("h1").cloned().expect("h1") };
        p.set_envoy("h1", revoked);
        // h1's newer copy no longer counts, and h1 is not sent h2's.
        assert_eq!(shown(&p), ["alice/a.txt aa@10 h2->h3"]);
    }

    #[test]
    fn a_local_delete_stays_until_the_file_changes_elsewhere() {
        let alice = |files: Vec<FileEntry>| vec![("alice", files)];
        let mut p = planner(vec![
            ("h1", envoy(1, &["alice"], &alice(vec![v("a.txt", 10, "aa")]))),
            ("h2", envoy(2, &["alice"], &alice(vec![]))),
        ]);
        assert_eq!(shown(&p), ["alice/a.txt aa@10 h1->h2"]);
        // h2 received it (and reports it), then deletes it.
        p.set_envoy("h2", envoy(2, &["alice"], &alice(vec![v("a.txt", 10, "aa")])));
        assert!(shown(&p).is_empty());
        p.set_envoy("h2", envoy(2, &["alice"], &alice(vec![])));
        assert!(shown(&p).is_empty(), "the delete on h2 is not undone");
        assert_eq!(p.seen("h2", "alice", "a.txt"), Some(&Seen { mtime: 10, sha256: "aa".repeat(32) }));
        // The file changes on h1: h2 gets the new version.
        p.set_envoy("h1", envoy(1, &["alice"], &alice(vec![v("a.txt", 20, "bb")])));
        assert_eq!(shown(&p), ["alice/a.txt bb@20 h1->h2"]);
        // An older copy turning up late (h3) is not sent to h2, which has seen newer.
        p.set_envoy("h1", envoy(1, &["alice"], &alice(vec![])));
        p.set_envoy("h3", envoy(3, &["alice"], &alice(vec![v("a.txt", 5, "ff")])));
        assert!(shown(&p).iter().all(|d| !d.ends_with("->h2") && !d.ends_with("->h1")), "{:?}", shown(&p));
        // A new incarnation of h2 has seen nothing and gets the file again.
        p.forget_seen("h2");
        assert_eq!(shown(&p), ["alice/a.txt ff@5 h3->h2"]);
    }

    #[test]
    fn seen_only_moves_forward() {
        let mut p = Planner::default();
        let row = |mtime, sha: &str| SeenRow {
            envoy: "h1".into(),
            user: "alice".into(),
            name: "a.txt".into(),
            mtime,
            sha256: sha.repeat(32),
        };
        for (r, changed, kept) in [
            (row(10, "bb"), true, (10, "bb")),
            (row(9, "ff"), false, (10, "bb")),
            (row(10, "aa"), false, (10, "bb")),
            (row(10, "cc"), true, (10, "cc")),
            (row(11, "00"), true, (11, "00")),
        ] {
            assert_eq!(p.remember_row(r.clone()), changed, "{r:?}");
            assert_eq!(p.seen("h1", "alice", "a.txt"), Some(&Seen { mtime: kept.0, sha256: kept.1.repeat(32) }));
        }
        // The same order as `sync::newer`.
        for (a, b) in
            [(v("f", 2, "aa"), v("f", 1, "bb")), (v("f", 1, "bb"), v("f", 1, "aa")), (v("f", 1, "aa"), v("f", 1, "aa"))]
        {
            assert_eq!(Seen::of(&b).is_older_than(&a), sync::newer(&a, &b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn traits_are_read_defensively() {
        let good = "ab".repeat(32);
        let traits = json!({
            "users": {"human": ["alice", "bob", 7]},
            "vigosync": {
                "alice": [
                    {"name": "ok.txt", "sha256": good, "size": 3, "mtime": 1},
                    {"name": "ok.txt", "sha256": good, "size": 3, "mtime": 9},
                    {"name": "../etc/passwd", "sha256": good, "size": 3, "mtime": 1},
                    {"name": ".hidden", "sha256": good, "size": 3, "mtime": 1},
                    {"name": "upper.txt", "sha256": good.to_uppercase(), "size": 3, "mtime": 1},
                    {"name": "short.txt", "sha256": "abc", "size": 3, "mtime": 1},
                    {"name": "huge.bin", "sha256": good, "size": sync::MAX_FILE_SIZE + 1, "mtime": 1}
                ],
                "../root": [],
                "bob": []
            }
        });
        let (humans, users, _) = EnvoySync::from_traits("h1", &traits);
        assert_eq!(humans, BTreeSet::from(["alice".to_string(), "bob".to_string()]));
        assert_eq!(users.keys().collect::<Vec<_>>(), ["alice", "bob"]);
        let alice: Vec<(&String, i64)> = users["alice"].iter().map(|(n, e)| (n, e.mtime)).collect();
        assert_eq!(alice, [(&"ok.txt".to_string(), 9)], "the newer duplicate is kept");
        for bad in [json!({"vigosync": "nope"}), json!({"vigosync": {"alice": [{"name": 1}]}}), json!({})] {
            assert!(EnvoySync::from_traits("h1", &bad).1.is_empty(), "{bad}");
        }
    }

    // ---- the stateful wrapper ----

    fn traits(humans: &[&str], users: &[(&str, Vec<FileEntry>)]) -> Value {
        let sync: serde_json::Map<String, Value> = users
            .iter()
            .map(|(u, files)| (u.to_string(), serde_json::to_value(files).expect("entries serialize")))
            .collect();
        json!({"users": {"human": humans}, "vigosync": sync})
    }

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([198, 18, 0, n]))
    }

    /// Every envoy's certificate, as the fleet index would give it.
    fn issued() -> Arc<dyn Certificates> {
        Arc::new(|envoy: &str| Some(format!("{envoy}-cert")))
    }

    #[test]
    fn orders_name_the_certificates_issued_to_both_ends() {
        let key = Arc::new(SigningKey::generate());
        let book = Arc::new(Mutex::new(BTreeMap::from([("h1", "c1"), ("h2", "c2")])));
        let lookup = Arc::clone(&book);
        let certs = move |envoy: &str| lookup.lock().expect("book").get(envoy).map(|c| (*c).to_string());
        let sync = Vigosync::new(key.clone(), [], Vec::new()).with_certificates(Arc::new(certs));
        let file = v("a.txt", 10, "aa");
        sync.check_in("h2", Some(&traits(&["alice"], &[("alice", vec![])])), ip(2), 1, 100);
        sync.check_in("h1", Some(&traits(&["alice"], &[("alice", vec![file])])), ip(1), 1, 101);
        let out = sync.check_in("h2", None, ip(2), 1, 102);
        let order = out.orders[0].verify(&key.public_key(), 102).expect("valid order");
        assert_eq!((order.source_cert.as_str(), order.target_cert.as_str()), ("c1", "c2"));
        // h2 was re-enrolled: the next order names its new certificate, at once.
        book.lock().expect("book").insert("h2", "c2-new");
        let out = sync.check_in("h2", None, ip(2), 1, 103);
        let order = out.orders[0].verify(&key.public_key(), 103).expect("valid order");
        assert_eq!(order.target_cert, "c2-new");
        // No certificate on record for the source (revoked): no order at all.
        book.lock().expect("book").remove("h1");
        assert!(sync.check_in("h2", None, ip(2), 1, 104).orders.is_empty());
        assert!(sync.has_orders("h2"), "the delivery is still wanted");
        // Without a certificate book, nothing is ever ordered.
        let blind = Vigosync::new(key, [], Vec::new());
        blind.check_in("h2", Some(&traits(&["alice"], &[("alice", vec![])])), ip(2), 1, 100);
        blind.check_in("h1", Some(&traits(&["alice"], &[("alice", vec![v("a.txt", 10, "aa")])])), ip(1), 1, 101);
        assert!(blind.check_in("h2", None, ip(2), 1, 102).orders.is_empty());
    }

    #[test]
    fn check_ins_issue_signed_orders_and_poke_targets() {
        let key = Arc::new(SigningKey::generate());
        let sync = Vigosync::new(key.clone(), [], Vec::new()).with_certificates(issued());
        assert!(!sync.is_active());
        // Envoys without a vigosync trait cost nothing.
        let none = sync.check_in("h9", Some(&json!({"users": {"human": ["alice"]}})), ip(9), 1, 100);
        assert!(none.orders.is_empty() && none.seen.is_empty() && none.poke.is_empty());
        assert!(!sync.is_active());

        let empty = traits(&["alice"], &[("alice", vec![])]);
        let first = sync.check_in("h2", Some(&empty), ip(2), 1, 100);
        assert!(first.orders.is_empty() && first.poke.is_empty());
        assert!(sync.is_active());

        // h1 reports a new file: its seen row is stored and h2 is poked.
        let file = v("a.txt", 10, "aa");
        let h1 = sync.check_in("h1", Some(&traits(&["alice"], &[("alice", vec![file.clone()])])), ip(1), 1, 101);
        assert_eq!(h1.poke, ["h2"]);
        assert!(h1.orders.is_empty());
        assert_eq!(h1.seen.len(), 1);
        assert!(sync.has_orders("h2"));

        // h2's next check-in (no trait change) carries the order.
        let h2 = sync.check_in("h2", None, ip(2), 1, 102);
        assert_eq!(h2.orders.len(), 1);
        let order = h2.orders[0].verify(&key.public_key(), 102).expect("valid order");
        assert_eq!((order.source.as_str(), order.target.as_str()), ("h1", "h2"));
        assert_eq!(order.source_addr, "198.18.0.1:1531");
        assert_eq!((order.user.as_str(), order.name.as_str()), ("alice", "a.txt"));
        assert_eq!((order.sha256.as_str(), order.size, order.mtime), (file.sha256.as_str(), 3, 10));
        assert_eq!((order.kind.as_str(), order.expires_at), (ORDER_KIND, 102 + ORDER_TTL_SECS));
        assert_eq!((order.source_cert.as_str(), order.target_cert.as_str()), ("h1-cert", "h2-cert"));
        // Re-sent unchanged while pending, and signed afresh when it nears expiry.
        let again = sync.check_in("h2", None, ip(2), 1, 103);
        assert_eq!(again.orders, h2.orders);
        let later = sync.check_in("h2", None, ip(2), 1, 102 + ORDER_TTL_SECS - RESIGN_BEFORE_SECS);
        assert_ne!(later.orders, h2.orders);
        assert!(later.orders[0].verify(&key.public_key(), 102 + ORDER_TTL_SECS + 1).is_ok());
        // The source moves: the order names its new address, without a new nudge.
        let moved = sync.check_in("h1", None, ip(7), 1, 104);
        assert!(moved.poke.is_empty() && moved.seen.is_empty());
        let readdressed = sync.check_in("h2", None, ip(2), 1, 105);
        let order = readdressed.orders[0].verify(&key.public_key(), 105).expect("valid order");
        assert_eq!(order.source_addr, "198.18.0.7:1531");

        // h2 reports the file: nothing pending any more.
        let done = sync.check_in("h2", Some(&traits(&["alice"], &[("alice", vec![file])])), ip(2), 1, 110);
        assert!(done.orders.is_empty());
        assert!(!sync.has_orders("h2"));

        // h1 is revoked and changes nothing; h2 stays without orders.
        assert!(sync.revoke("h1").is_empty());
        let status = sync.status(None);
        assert_eq!(status.users.len(), 1);
        let envoys: Vec<&str> = status.users[0].files[0].envoys.iter().map(|e| e.envoy.as_str()).collect();
        assert_eq!(envoys, ["h2"], "revoked envoys are left out");
    }

    #[test]
    fn a_silent_source_is_replaced_by_a_holder_that_still_checks_in() {
        let key = Arc::new(SigningKey::generate());
        let sync = Vigosync::new(key.clone(), [], Vec::new()).with_certificates(issued());
        let file = v("a.txt", 10, "aa");
        let holds = traits(&["alice"], &[("alice", vec![file.clone()])]);
        sync.check_in("h2", Some(&holds), ip(2), 1, 100);
        sync.check_in("h1", Some(&holds), ip(1), 1, 101);
        sync.check_in("h3", Some(&traits(&["alice"], &[("alice", vec![])])), ip(3), 1, 102);
        let source = |at: i64| {
            let out = sync.check_in("h3", None, ip(3), 1, at);
            out.orders[0].verify(&key.public_key(), at).expect("valid order").source
        };
        assert_eq!(source(103), "h1", "the most recent holder");
        // h1 falls silent while h2 keeps checking in: h3's order moves to h2.
        sync.check_in("h2", None, ip(2), 1, 150);
        assert_eq!(source(150), "h1", "not yet stale");
        sync.check_in("h2", None, ip(2), 1, 101 + STALE_SOURCE_SECS + 1);
        assert_eq!(source(101 + STALE_SOURCE_SECS + 1), "h2");
        // With every holder silent, the most recent one stays the source.
        assert_eq!(source(101 + 10 * STALE_SOURCE_SECS), "h2");
    }

    #[test]
    fn status_shows_each_envoys_copy_and_pending_orders() {
        let sync = Vigosync::new(Arc::new(SigningKey::generate()), [], Vec::new());
        let old = v("a.txt", 10, "aa");
        let new = v("a.txt", 20, "bb");
        sync.check_in("h1", Some(&traits(&["alice"], &[("alice", vec![new.clone()])])), ip(1), 1, 100);
        sync.check_in("h2", Some(&traits(&["alice"], &[("alice", vec![old.clone()])])), ip(2), 1, 100);
        sync.check_in("h3", Some(&traits(&["alice"], &[("alice", vec![new.clone()])])), ip(3), 1, 100);
        sync.check_in("h3", Some(&traits(&["alice"], &[("alice", vec![])])), ip(3), 1, 101);
        sync.check_in("h4", Some(&traits(&["alice"], &[("alice", vec![])])), ip(4), 1, 102);
        sync.check_in("h5", Some(&traits(&["bob"], &[("bob", vec![v("b.txt", 1, "cc")])])), ip(5), 1, 102);

        let status = sync.status(Some("alice"));
        assert_eq!(status.users.len(), 1, "only alice");
        let file = &status.users[0].files[0];
        assert_eq!(file.name, "a.txt");
        assert_eq!(file.winner, Some(Version::of(&new)));
        let states: Vec<(&str, FileState)> = file.envoys.iter().map(|e| (e.envoy.as_str(), e.state)).collect();
        assert_eq!(
            states,
            [
                ("h1", FileState::Current),
                ("h2", FileState::Outdated),
                ("h3", FileState::Deleted),
                ("h4", FileState::Missing)
            ]
        );
        let pending: Vec<(&str, &str)> = file.pending.iter().map(|p| (p.target.as_str(), p.source.as_str())).collect();
        assert_eq!(pending, [("h2", "h1"), ("h4", "h1")]);
        assert_eq!(file.pending[0].version, Version::of(&new));
        assert_eq!(sync.status(None).users.len(), 2);
        assert!(sync.status(Some("nobody")).users.is_empty());
    }

    #[test]
    fn restart_restores_seen_and_traits() {
        let key = Arc::new(SigningKey::generate());
        let (h1, h2) =
            (traits(&["alice"], &[("alice", vec![v("a.txt", 10, "aa")])]), traits(&["alice"], &[("alice", vec![])]));
        let restored = |name, traits| Restored { name, traits, revoked: false, enrolled_at: 1, last_checkin: Some(5) };
        // h2 had seen the file and deleted it before the restart.
        let seen = vec![SeenRow {
            envoy: "h2".into(),
            user: "alice".into(),
            name: "a.txt".into(),
            mtime: 10,
            sha256: "aa".repeat(32),
        }];
        let sync = Vigosync::new(key, [restored("h1", &h1), restored("h2", &h2)], seen).with_certificates(issued());
        assert!(sync.is_active());
        // Addresses come with check-ins; still nothing for h2, which deleted the file.
        sync.check_in("h1", None, ip(1), 1, 100);
        assert!(sync.check_in("h2", None, ip(2), 1, 100).orders.is_empty());
        // A new incarnation of h2 gets it.
        assert_eq!(sync.check_in("h2", None, ip(2), 2, 101).orders.len(), 1);
    }

    /// Each check-in's orders take files from every user in turn.
    #[test]
    fn orders_are_shared_fairly_between_users() {
        let keys: Vec<(String, String)> = (0..10)
            .map(|i| ("alice".to_string(), format!("a{i}")))
            .chain([("bob".to_string(), "plan".to_string())])
            .chain((0..3).map(|i| ("carol".to_string(), format!("c{i}"))))
            .collect();
        let chosen = fair_share(keys.iter(), 5);
        let names: Vec<&str> = chosen.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["a0", "plan", "c0", "a1", "c1"]);
        assert_eq!(fair_share(keys.iter(), 100).len(), keys.len());
        assert!(fair_share(keys.iter(), 0).is_empty());
    }

    // ---- what one envoy's report can do ----

    const NS: i64 = 1_000_000_000;

    #[test]
    fn a_far_future_mtime_is_clamped_and_a_later_real_edit_elsewhere_wins() {
        let key = Arc::new(SigningKey::generate());
        let sync = Vigosync::new(key.clone(), [], Vec::new()).with_certificates(issued());
        let t0 = 1_000_000;
        // A compromised h1 announces an empty file stamped in the year 2100.
        let forged = FileEntry { size: 0, ..v("a.txt", 4_102_444_800 * NS, "ee") };
        sync.check_in("h1", Some(&traits(&["alice"], &[("alice", vec![forged])])), ip(1), 1, t0);
        sync.check_in("h2", Some(&traits(&["alice"], &[("alice", vec![])])), ip(2), 1, t0);
        let order = sync.check_in("h2", None, ip(2), 1, t0).orders[0].verify(&key.public_key(), t0).expect("order");
        assert_eq!(order.mtime, (t0 + MTIME_SKEW_SECS) * NS, "clamped to first seen plus skew");
        // h2 received it, then alice really edits the file there, after the skew window.
        let later = t0 + MTIME_SKEW_SECS + 60;
        let received = FileEntry { size: 0, ..v("a.txt", (t0 + MTIME_SKEW_SECS) * NS, "ee") };
        sync.check_in("h2", Some(&traits(&["alice"], &[("alice", vec![received])])), ip(2), 1, later - 10);
        let edit = v("a.txt", (later - 5) * NS, "bb");
        sync.check_in("h2", Some(&traits(&["alice"], &[("alice", vec![edit.clone()])])), ip(2), 1, later);
        let status = sync.status(Some("alice"));
        assert_eq!(status.users[0].files[0].winner, Some(Version::of(&edit)), "the real edit wins");
        let h1 = sync.check_in("h1", None, ip(1), 1, later + 1);
        let order = h1.orders[0].verify(&key.public_key(), later + 1).expect("order for h1");
        assert_eq!((order.sha256.as_str(), order.source.as_str()), (edit.sha256.as_str(), "h2"));
        // h1 repeating its forged stamp changes nothing, and neither does a restart
        // from the stored traits and seen versions.
        let forged_again = FileEntry { size: 0, ..v("a.txt", 4_102_444_800 * NS, "ee") };
        let h1_traits = traits(&["alice"], &[("alice", vec![forged_again])]);
        sync.check_in("h1", Some(&h1_traits), ip(1), 1, later + 2);
        assert_eq!(sync.status(Some("alice")).users[0].files[0].winner, Some(Version::of(&edit)));
        let seen = vec![SeenRow {
            envoy: "h1".into(),
            user: "alice".into(),
            name: "a.txt".into(),
            mtime: (t0 + MTIME_SKEW_SECS) * NS,
            sha256: "ee".repeat(32),
        }];
        let h2_traits = traits(&["alice"], &[("alice", vec![edit.clone()])]);
        let restored =
            |name, traits| Restored { name, traits, revoked: false, enrolled_at: 1, last_checkin: Some(later) };
        let again = Vigosync::new(key, [restored("h1", &h1_traits), restored("h2", &h2_traits)], seen)
            .with_certificates(issued());
        assert_eq!(again.status(Some("alice")).users[0].files[0].winner, Some(Version::of(&edit)), "after a restart");
    }

    #[test]
    fn one_envoy_announces_at_most_the_per_user_limits() {
        let many: Vec<FileEntry> = (0..sync::MAX_FILES_PER_USER + 7)
            .map(|i| FileEntry { size: 1, ..v(&format!("f{i:06}"), 1, "aa") })
            .collect();
        let (_, users, overflow) = EnvoySync::from_traits("h1", &traits(&["alice"], &[("alice", many)]));
        assert_eq!(users["alice"].len(), sync::MAX_FILES_PER_USER);
        assert!(
            users["alice"].contains_key("f000000")
                && !users["alice"].contains_key(&format!("f{:06}", sync::MAX_FILES_PER_USER))
        );
        assert_eq!(overflow["alice"].refused, sync::Overflow { files: 7, bytes: 7 });

        // Thousands of 100 MB files: only MAX_BYTES_PER_USER worth count.
        let huge: Vec<FileEntry> =
            (0..300).map(|i| FileEntry { size: sync::MAX_FILE_SIZE, ..v(&format!("h{i:03}"), 1, "bb") }).collect();
        let (_, users, overflow) = EnvoySync::from_traits("h1", &traits(&["alice"], &[("alice", huge)]));
        let kept: u64 = users["alice"].values().map(|f| f.size).sum();
        assert!(kept <= sync::MAX_BYTES_PER_USER && kept + sync::MAX_FILE_SIZE > sync::MAX_BYTES_PER_USER, "{kept}");
        assert_eq!(overflow["alice"].refused.files, 300 - users["alice"].len() as u64);

        // What an envoy says it left out and what the server refused both show in the status.
        let sync = Vigosync::new(Arc::new(SigningKey::generate()), [], Vec::new());
        let mut t =
            traits(&["alice", "bob"], &[("alice", vec![FileEntry { size: 1, ..v("x", 1, "aa") }; 1]), ("bob", vec![])]);
        t["vigosync_overflow"] = json!({"alice": {"files": 40000, "bytes": 0}, "nobody": {"files": 1, "bytes": 1}});
        sync.check_in("h1", Some(&t), ip(1), 1, 100);
        let status = sync.status(None);
        assert_eq!(status.overflow.len(), 1, "{:?}", status.overflow);
        assert_eq!((status.overflow[0].envoy.as_str(), status.overflow[0].user.as_str()), ("h1", "alice"));
        assert_eq!(status.overflow[0].left_out, sync::Overflow { files: 40000, bytes: 0 });
        assert!(sync.status(Some("bob")).overflow.is_empty());
    }
}
