//! ED25519 request signing with replay protection.
//!
//! Each envoy registers an ED25519 public key at enrollment and signs every
//! request it makes. The signed message is the canonical text
//!
//! ```text
//! vigo-req-v1\n{method}\n{hex sha256(body)}\n{timestamp}\n{nonce}
//! ```
//!
//! A [`Verifier`] accepts a signature once: the timestamp must lie within its
//! window of the server's clock and the nonce must not have been seen inside
//! that window. Keys are stored as standard PKCS#8 PEM, so `openssl pkey` can
//! read them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _};
use rand_core::OsRng;

use crate::files::{self, FileError, PRIVATE_MODE};

/// Domain separator and version of the canonical request message.
const REQUEST_CONTEXT: &str = "vigo-req-v1";
/// Default tolerance between the signer's clock and the verifier's.
pub const DEFAULT_WINDOW_SECS: u64 = 300;
/// Default bound on signers remembered at once (about a hundred bytes each);
/// past it the verifier refuses rather than forget state that could still
/// stop a replay.
pub const DEFAULT_NONCE_CAPACITY: usize = 1_000_000;
/// Recent requests remembered per signer. Past it the oldest is forgotten and
/// nothing at or before its timestamp is accepted from that signer any more.
const PER_SIGNER: usize = 64;
const NONCE_BYTES: usize = 16;
const PEM_LABEL: &str = "PRIVATE KEY";
/// DER prefix of a PKCS#8 v1 ED25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: not a PKCS#8 ED25519 private key in PEM")]
    KeyPem { path: PathBuf },
    #[error("public key is not 32 bytes of base64: {0:?}")]
    PublicKey(String),
}

/// An ED25519 signing key (an envoy's request key or the server's bundle key).
/// Its `Debug` output never shows the key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(public {})", self.public_key_b64())
    }
}

impl SigningKey {
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The public key as standard base64 of its 32 raw bytes, the form
    /// registered with the server.
    pub fn public_key_b64(&self) -> String {
        self.public_key().to_b64()
    }

    /// Writes the key as PKCS#8 PEM, atomically, with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), SigningError> {
        files::write_atomic(path, self.to_pkcs8_pem().as_bytes(), PRIVATE_MODE)?;
        Ok(())
    }

    /// Loads a key written by [`SigningKey::save`] (or by
    /// `openssl genpkey -algorithm ed25519`), refusing a file that group or
    /// others can access.
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let text = files::read_private(path)?;
        Self::from_pkcs8_pem(&text).ok_or_else(|| SigningError::KeyPem { path: path.to_path_buf() })
    }

    fn to_pkcs8_pem(&self) -> String {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(self.0.as_bytes());
        let unix_lines = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        pem::encode_config(&pem::Pem::new(PEM_LABEL, der), unix_lines)
    }

    fn from_pkcs8_pem(text: &str) -> Option<Self> {
        let block = pem::parse(text).ok()?;
        if block.tag() != PEM_LABEL {
            return None;
        }
        let seed = block.contents().strip_prefix(&PKCS8_ED25519_PREFIX)?;
        let seed: [u8; 32] = seed.try_into().ok()?;
        Some(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    pub(crate) fn sign_raw(&self, message: &[u8]) -> Signature {
        self.0.sign(message)
    }
}

/// An ED25519 public key as registered by an envoy or pinned for bundles.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_b64())
    }
}

impl PublicKey {
    /// Parses standard base64 of the 32 raw key bytes; refuses weak keys.
    pub fn from_b64(text: &str) -> Result<Self, SigningError> {
        let bad = || SigningError::PublicKey(text.chars().take(64).collect());
        let bytes: [u8; 32] = B64.decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        if key.is_weak() {
            return Err(bad());
        }
        Ok(Self(key))
    }

    pub fn to_b64(&self) -> String {
        B64.encode(self.0.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Strict verification: rejects non-canonical and malleable signatures.
    pub(crate) fn verify_raw(&self, message: &[u8], signature: &Signature) -> bool {
        self.0.verify_strict(message, signature).is_ok()
    }
}

/// What travels with a signed request (as headers or gRPC metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSignature {
    /// Unix seconds when the request was signed.
    pub timestamp: i64,
    /// 16 random bytes as lowercase hex.
    pub nonce: String,
    /// Standard base64 of the 64-byte ED25519 signature.
    pub signature: String,
}

fn canonical_message(method: &str, body: &[u8], timestamp: i64, nonce: &str) -> String {
    let body_hash = crate::sha256_hex(body);
    format!("{REQUEST_CONTEXT}\n{method}\n{body_hash}\n{timestamp}\n{nonce}")
}

/// Signs a request with a fresh nonce.
pub fn sign_request(key: &SigningKey, method: &str, body: &[u8], now_unix: i64) -> RequestSignature {
    let nonce = crate::hex_lower(&crate::random_bytes::<NONCE_BYTES>());
    let message = canonical_message(method, body, now_unix, &nonce);
    let signature = B64.encode(key.sign_raw(message.as_bytes()).to_bytes());
    RequestSignature { timestamp: now_unix, nonce, signature }
}

/// A request that passed [`Verifier::prepare`]: its signature is still to be checked.
pub struct PendingRequest {
    key: PublicKey,
    message: String,
    signature: Signature,
    nonce: [u8; NONCE_BYTES],
    timestamp: i64,
}

impl std::fmt::Debug for PendingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRequest").field("key", &self.key).field("timestamp", &self.timestamp).finish()
    }
}

impl PendingRequest {
    /// Checks this request's signature alone, strictly.
    pub fn signature_valid(&self) -> bool {
        self.key.verify_raw(self.message.as_bytes(), &self.signature)
    }
}

/// Checks the signatures of many requests; the outcome for each, in order.
///
/// Several are checked as one batch (one multi-scalar multiplication, about half
/// the work per signature). A batch with any bad signature fails as a whole, and
/// then each is checked alone, so one bad request never refuses another. The batch
/// equation accepts what individual verification accepts except for signatures
/// built on purpose from small-order points, which only the holder of the signing
/// key can make: a batch never admits a request its key did not sign. (Replays are
/// refused by their nonce, whatever the signature bytes.)
pub fn check_signatures(pending: &[&PendingRequest]) -> Vec<bool> {
    if pending.len() < 2 {
        return pending.iter().map(|p| p.signature_valid()).collect();
    }
    let messages: Vec<&[u8]> = pending.iter().map(|p| p.message.as_bytes()).collect();
    let signatures: Vec<Signature> = pending.iter().map(|p| p.signature).collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = pending.iter().map(|p| p.key.0).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        vec![true; pending.len()]
    } else {
        pending.iter().map(|p| p.signature_valid()).collect()
    }
}

/// Why a signed request was refused. Each reason is distinct so the server
/// can count and log them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("request signature does not verify")]
    BadSignature,
    #[error("request timestamp {timestamp} is more than {window_secs}s away from server time {now}")]
    StaleTimestamp { timestamp: i64, now: i64, window_secs: u64 },
    #[error("request nonce was already used")]
    ReplayedNonce,
    #[error("malformed request signature: {0}")]
    Malformed(&'static str),
    #[error("too many signers to track; retry later")]
    NonceCacheFull,
}

/// Per signer: its recent requests (timestamp, nonce) still inside the window, at
/// most [`PER_SIGNER`], and a floor: the timestamp of the newest request forgotten
/// to make room. A replay is either found among the recent requests or is at or
/// below the floor (or outside the window), so it is refused; memory grows with
/// signers, not with traffic. An agent's concurrent calls (a check-in and its event
/// stream) may arrive in any order.
struct SignerState {
    newest: i64,
    floor: i64,
    recent: std::collections::VecDeque<(i64, [u8; NONCE_BYTES])>,
}

#[derive(Default)]
struct NonceCache {
    by_signer: HashMap<[u8; 32], SignerState>,
}

impl NonceCache {
    /// Forgets signers whose newest request has left the window: the timestamp
    /// check alone refuses any replay of theirs from now on.
    fn prune(&mut self, now: i64, window: i64) {
        self.by_signer.retain(|_, s| s.newest.saturating_add(window) >= now);
    }
}

/// Verifies request signatures and remembers, per signer, enough to refuse a
/// replay. Share one per server (it is `Sync`); it tracks at most `capacity` signers.
pub struct Verifier {
    window_secs: u64,
    capacity: usize,
    cache: Mutex<NonceCache>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW_SECS, DEFAULT_NONCE_CAPACITY)
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("window_secs", &self.window_secs)
            .field("capacity", &self.capacity)
            .field("cached_nonces", &self.cached_nonces())
            .finish()
    }
}

impl Verifier {
    pub fn new(window_secs: u64, capacity: usize) -> Self {
        Self { window_secs, capacity, cache: Mutex::new(NonceCache::default()) }
    }

    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// Nonces currently remembered (a metric, and a handle for tests).
    pub fn cached_nonces(&self) -> usize {
        self.lock().by_signer.values().map(|s| s.recent.len()).sum()
    }

    /// Signers currently remembered.
    pub fn signers(&self) -> usize {
        self.lock().by_signer.len()
    }

    /// Checks a request signature made by `public_key`. The nonce is recorded
    /// only once the signature verifies, so forged requests cannot fill the
    /// cache or block a genuine nonce.
    pub fn verify(
        &self,
        public_key: &PublicKey,
        method: &str,
        body: &[u8],
        sig: &RequestSignature,
        now: i64,
    ) -> Result<(), Refusal> {
        let pending = self.prepare(public_key, method, body, sig, now)?;
        let valid = pending.signature_valid();
        self.admit(&pending, valid, now)
    }

    /// Every check of [`Verifier::verify`] before the signature's: the form of the
    /// nonce and signature, and the timestamp. The signature is then checked, alone
    /// or in a batch ([`check_signatures`]), and the outcome given to
    /// [`Verifier::admit`].
    pub fn prepare(
        &self,
        public_key: &PublicKey,
        method: &str,
        body: &[u8],
        sig: &RequestSignature,
        now: i64,
    ) -> Result<PendingRequest, Refusal> {
        if method.is_empty() || method.contains('\n') {
            return Err(Refusal::Malformed("method is empty or contains a newline"));
        }
        let nonce: [u8; NONCE_BYTES] = (sig.nonce.len() == NONCE_BYTES * 2)
            .then(|| crate::hex_decode(&sig.nonce))
            .flatten()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(Refusal::Malformed("nonce is not 16 bytes of hex"))?;
        let signature = B64
            .decode(&sig.signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(Refusal::Malformed("signature is not 64 bytes of base64"))?;
        if now.abs_diff(sig.timestamp) > self.window_secs {
            return Err(Refusal::StaleTimestamp { timestamp: sig.timestamp, now, window_secs: self.window_secs });
        }
        let message = canonical_message(method, body, sig.timestamp, &sig.nonce);
        Ok(PendingRequest { key: *public_key, message, signature, nonce, timestamp: sig.timestamp })
    }

    /// Admits a prepared request whose signature was found `valid` (or not): a
    /// valid one is refused still if its nonce was seen, and otherwise recorded.
    pub fn admit(&self, pending: &PendingRequest, valid: bool, now: i64) -> Result<(), Refusal> {
        if !valid {
            return Err(Refusal::BadSignature);
        }
        self.record(*pending.key.as_bytes(), pending.nonce, pending.timestamp, now)
    }

    fn record(&self, signer: [u8; 32], nonce: [u8; NONCE_BYTES], timestamp: i64, now: i64) -> Result<(), Refusal> {
        let window = i64::try_from(self.window_secs).unwrap_or(i64::MAX);
        let mut cache = self.lock();
        if let Some(state) = cache.by_signer.get_mut(&signer) {
            // Requests that left the window are refused by the timestamp check alone.
            state.recent.retain(|(t, _)| t.saturating_add(window) >= now);
            if timestamp <= state.floor || state.recent.iter().any(|(_, n)| *n == nonce) {
                return Err(Refusal::ReplayedNonce);
            }
            if state.recent.len() >= PER_SIGNER
                && let Some((oldest, _)) = state.recent.pop_front()
            {
                state.floor = state.floor.max(oldest);
            }
            state.recent.push_back((timestamp, nonce));
            state.newest = state.newest.max(timestamp);
            return Ok(());
        }
        if cache.by_signer.len() >= self.capacity {
            cache.prune(now, window);
            if cache.by_signer.len() >= self.capacity {
                return Err(Refusal::NonceCacheFull);
            }
        }
        let recent = std::collections::VecDeque::from([(timestamp, nonce)]);
        cache.by_signer.insert(signer, SignerState { newest: timestamp, floor: i64::MIN, recent });
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NonceCache> {
        // The cache's two maps are updated together with no panicking call in
        // between, so a poisoned lock still guards consistent data.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn verification_table() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let body = b"{\"envoy\":\"web-01\"}";

        type Tamper = fn(&mut RequestSignature, &mut Vec<u8>, &mut PublicKey, &mut i64, &PublicKey);
        let cases: Vec<(&str, Tamper, Result<(), Refusal>)> = vec![
            ("good", |_, _, _, _, _| {}, Ok(())),
            ("flipped body byte", |_, b, _, _, _| b[3] ^= 0x20, Err(Refusal::BadSignature)),
            ("other key", |_, _, pk, _, other| *pk = *other, Err(Refusal::BadSignature)),
            ("other nonce", |s, _, _, _, _| s.nonce = "00".repeat(16), Err(Refusal::BadSignature)),
            ("shifted timestamp", |s, _, _, _, _| s.timestamp += 1, Err(Refusal::BadSignature)),
            ("signed too long ago", |_, _, _, now, _| *now += 301, Err(stale(NOW, NOW + 301))),
            ("signed in the future", |_, _, _, now, _| *now -= 301, Err(stale(NOW, NOW - 301))),
            ("edge of window", |_, _, _, now, _| *now += 300, Ok(())),
            ("signature not base64", |s, _, _, _, _| s.signature = "@@@".into(), malformed()),
            ("signature too short", |s, _, _, _, _| s.signature = B64.encode([1u8; 63]), malformed()),
            ("nonce not hex", |s, _, _, _, _| s.nonce = "zz".repeat(16), malformed()),
            ("nonce too short", |s, _, _, _, _| s.nonce = "ab".into(), malformed()),
        ];
        for (name, tamper, expected) in cases {
            let verifier = Verifier::default();
            let mut sig = sign_request(&key, "CheckIn", body, NOW);
            let mut body = body.to_vec();
            let mut public = key.public_key();
            let mut now = NOW;
            tamper(&mut sig, &mut body, &mut public, &mut now, &other.public_key());
            let got = verifier.verify(&public, "CheckIn", &body, &sig, now);
            let got_kind = got.as_ref().map_err(std::mem::discriminant);
            let want_kind = expected.as_ref().map_err(std::mem::discriminant);
            assert_eq!(got_kind, want_kind, "{name}: got {got:?}");
            if let (Err(Refusal::StaleTimestamp { .. }), Err(want)) = (&got, &expected) {
                assert_eq!(got.as_ref().expect_err("stale"), want, "{name}");
            }
        }
    }

    fn stale(timestamp: i64, now: i64) -> Refusal {
        Refusal::StaleTimestamp { timestamp, now, window_secs: DEFAULT_WINDOW_SECS }
    }

    fn malformed() -> Result<(), Refusal> {
        Err(Refusal::Malformed(""))
    }

    /// In a batch each request gets the outcome it gets alone, whatever its
    /// batchmates; a prepared request is admitted once, like a verified one.
    #[test]
    fn batched_signatures_match_single_verification() {
        let verifier = Verifier::default();
        let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate()).collect();
        let prepare = |key: &SigningKey, signed_body: &[u8], checked_body: &[u8]| {
            let sig = sign_request(key, "CheckIn", signed_body, NOW);
            verifier.prepare(&key.public_key(), "CheckIn", checked_body, &sig, NOW).expect("well formed")
        };
        let good: Vec<PendingRequest> = keys.iter().map(|k| prepare(k, b"body", b"body")).collect();
        let tampered = prepare(&keys[0], b"body", b"bodY");
        let other_key = {
            let sig = sign_request(&keys[1], "CheckIn", b"body", NOW);
            verifier.prepare(&keys[2].public_key(), "CheckIn", b"body", &sig, NOW).expect("well formed")
        };
        assert!(check_signatures(&[]).is_empty());
        assert_eq!(check_signatures(&[&good[0]]), [true]);
        assert_eq!(check_signatures(&[&tampered]), [false]);
        assert_eq!(check_signatures(&good.iter().collect::<Vec<_>>()), [true; 4]);
        let mixed = [&good[0], &tampered, &good[1], &other_key, &good[2]];
        let outcomes = check_signatures(&mixed);
        assert_eq!(outcomes, [true, false, true, false, true]);
        for (pending, alone) in mixed.iter().zip(&outcomes) {
            assert_eq!(pending.signature_valid(), *alone);
        }
        assert_eq!(check_signatures(&[&tampered, &other_key]), [false, false]);
        assert_eq!(verifier.admit(&tampered, false, NOW), Err(Refusal::BadSignature));
        assert_eq!(verifier.admit(&good[3], true, NOW), Ok(()));
        assert_eq!(verifier.admit(&good[3], true, NOW), Err(Refusal::ReplayedNonce));
    }

    #[test]
    fn method_is_bound_and_checked() {
        let key = SigningKey::generate();
        let verifier = Verifier::default();
        let sig = sign_request(&key, "CheckIn", b"", NOW);
        assert_eq!(verifier.verify(&key.public_key(), "Enroll", b"", &sig, NOW), Err(Refusal::BadSignature));
        let sig = sign_request(&key, "a\nb", b"", NOW);
        assert!(matches!(verifier.verify(&key.public_key(), "a\nb", b"", &sig, NOW), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn replayed_nonce_is_refused_inside_the_window() {
        let key = SigningKey::generate();
        let verifier = Verifier::default();
        let sig = sign_request(&key, "CheckIn", b"x", NOW);
        assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"x", &sig, NOW), Ok(()));
        assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"x", &sig, NOW + 10), Err(Refusal::ReplayedNonce));
        // Upper-case hex names the same nonce bytes: still a replay, if it verifies at all.
        let mut upper = sig.clone();
        upper.nonce = sig.nonce.to_uppercase();
        assert_ne!(verifier.verify(&key.public_key(), "CheckIn", b"x", &upper, NOW), Ok(()));
        // Past the window the timestamp check takes over.
        assert!(matches!(
            verifier.verify(&key.public_key(), "CheckIn", b"x", &sig, NOW + 301),
            Err(Refusal::StaleTimestamp { .. })
        ));
    }

    #[test]
    fn forged_requests_do_not_burn_nonces() {
        let key = SigningKey::generate();
        let verifier = Verifier::default();
        let sig = sign_request(&key, "CheckIn", b"x", NOW);
        assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"forged", &sig, NOW), Err(Refusal::BadSignature));
        assert_eq!(verifier.cached_nonces(), 0);
        assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"x", &sig, NOW), Ok(()));
    }

    #[test]
    fn memory_follows_signers_not_traffic() {
        let key = SigningKey::generate();
        let verifier = Verifier::new(300, 2);
        for offset in 0..1000 {
            let sig = sign_request(&key, "CheckIn", b"", NOW + offset);
            verifier.verify(&key.public_key(), "CheckIn", b"", &sig, NOW + offset).expect("fresh");
        }
        assert_eq!((verifier.signers(), verifier.cached_nonces()), (1, PER_SIGNER), "bounded per signer");
        // Several requests in the same second are fine; each nonce only once.
        let a = sign_request(&key, "CheckIn", b"a", NOW + 1000);
        let b = sign_request(&key, "CheckIn", b"b", NOW + 1000);
        assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"a", &a, NOW + 1000), Ok(()));
        assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"b", &b, NOW + 1000), Ok(()));
        assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"a", &a, NOW + 1000), Err(Refusal::ReplayedNonce));
        // Concurrent calls may arrive out of order: a fresh nonce a second older is fine…
        let late = sign_request(&key, "Events", b"", NOW + 999);
        assert_eq!(verifier.verify(&key.public_key(), "Events", b"", &late, NOW + 1000), Ok(()));
        assert_eq!(verifier.verify(&key.public_key(), "Events", b"", &late, NOW + 1000), Err(Refusal::ReplayedNonce));
        // …but anything at or before the newest forgotten request is refused, even
        // inside the window, since its nonce can no longer be checked.
        let old = sign_request(&key, "CheckIn", b"", NOW + 900);
        assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"", &old, NOW + 1000), Err(Refusal::ReplayedNonce));
    }

    #[test]
    fn a_full_table_refuses_new_signers_until_old_ones_leave_the_window() {
        let verifier = Verifier::new(300, 2);
        let keys: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate()).collect();
        for k in &keys[..2] {
            let sig = sign_request(k, "CheckIn", b"", NOW);
            verifier.verify(&k.public_key(), "CheckIn", b"", &sig, NOW).expect("fresh");
        }
        let sig = sign_request(&keys[2], "CheckIn", b"", NOW + 10);
        assert_eq!(
            verifier.verify(&keys[2].public_key(), "CheckIn", b"", &sig, NOW + 10),
            Err(Refusal::NonceCacheFull),
            "a full table refuses rather than forgets"
        );
        let later = NOW + 301;
        let sig = sign_request(&keys[2], "CheckIn", b"", later);
        assert_eq!(verifier.verify(&keys[2].public_key(), "CheckIn", b"", &sig, later), Ok(()));
        assert_eq!(verifier.signers(), 1, "signers silent for a whole window are forgotten");
    }

    #[test]
    fn same_nonce_from_two_signers_is_not_a_replay() {
        let verifier = Verifier::default();
        let nonce = "11".repeat(16);
        for key in [SigningKey::generate(), SigningKey::generate()] {
            let message = canonical_message("CheckIn", b"", NOW, &nonce);
            let sig = RequestSignature {
                timestamp: NOW,
                nonce: nonce.clone(),
                signature: B64.encode(key.sign_raw(message.as_bytes()).to_bytes()),
            };
            assert_eq!(verifier.verify(&key.public_key(), "CheckIn", b"", &sig, NOW), Ok(()));
        }
    }

    #[test]
    fn verifier_is_shareable_across_threads() {
        let key = SigningKey::generate();
        let verifier = std::sync::Arc::new(Verifier::default());
        let sig = sign_request(&key, "CheckIn", b"", NOW);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (verifier, sig, public) = (verifier.clone(), sig.clone(), key.public_key());
                std::thread::spawn(move || verifier.verify(&public, "CheckIn", b"", &sig, NOW))
            })
            .collect();
        let accepted = handles.into_iter().map(|h| h.join().expect("thread")).filter(Result::is_ok).count();
        assert_eq!(accepted, 1, "exactly one of eight concurrent replays gets through");
    }

    #[test]
    fn key_files_round_trip_as_pkcs8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("envoy.ed25519");
        let key = SigningKey::generate();
        key.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        let loaded = SigningKey::load(&path).expect("load");
        assert_eq!(loaded.public_key_b64(), key.public_key_b64());
        assert!(!format!("{loaded:?}").contains(&B64.encode(key.0.as_bytes())));

        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").expect("write");
        let err = SigningKey::load(&path).expect_err("garbage key");
        assert!(err.to_string().contains("envoy.ed25519"), "{err}");
    }

    #[test]
    fn rfc8032_key_matches_openssl_encoding() {
        // RFC 8032 test 1 seed, PKCS#8-wrapped as `openssl genpkey` writes it.
        let pem_text = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pkcs8_pem(pem_text).expect("parse");
        assert_eq!(key.public_key_b64(), "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
        assert_eq!(key.to_pkcs8_pem(), pem_text);
    }

    #[test]
    fn public_key_parsing() {
        let key = SigningKey::generate();
        assert_eq!(PublicKey::from_b64(&key.public_key_b64()).expect("parse"), key.public_key());
        for bad in ["", "AAAA", "not base64!", &B64.encode([0u8; 32])] {
            assert!(PublicKey::from_b64(bad).is_err(), "{bad:?} accepted");
        }
    }
}
