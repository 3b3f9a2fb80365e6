//! rustls configurations for mutual TLS under the fleet CA.
//!
//! The server verifies client certificates against the fleet CA and, on top,
//! against a shared [`RevocationList`] consulted at every handshake, so a
//! revoked envoy is cut off at its next connection without a restart. Session
//! resumption would skip that check (a resumed TLS session never presents its
//! certificate again), so the server's session cache is tied to the list:
//! every revocation invalidates all cached sessions and each envoy does one
//! full handshake again.
//!
//! Between envoys ([`PeerClient`]) the dialling side refuses revoked peer
//! certificates too, and pins the one certificate the server issued to the
//! peer it dials; envoys learn the revocation list from their check-ins
//! ([`RevocationList::digest`], [`RevocationList::replace`]).
//!
//! Every config is built with the `ring` provider explicitly, so nothing here
//! depends on which provider a binary installed as the process default.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use x509_parser::extensions::GeneralName;

/// ALPN protocols offered on both sides, HTTP/2 (gRPC) first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// Cached server-side sessions for resumption; about a kilobyte each.
const SESSION_CACHE_ENTRIES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: invalid PEM: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("{what}: no usable PEM private key: {detail}")]
    Key { what: &'static str, detail: String },
    #[error("fleet CA certificate is not a usable trust anchor: {0}")]
    TrustAnchor(rustls::Error),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
    #[error("cannot build the {side} TLS configuration: {source}")]
    Config { side: &'static str, source: rustls::Error },
    #[error("{0:?} is not a SHA-256 certificate fingerprint (64 hex digits)")]
    BadFingerprint(String),
}

/// The `ring` crypto provider every config in this crate uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs `ring` as the process-wide default provider, for libraries that
/// build their own rustls configs. Safe to call any number of times.
pub fn install_provider() {
    // An error only means a default is already installed (by an earlier call
    // or by the binary itself); the configs built here do not depend on it.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// SHA-256 of a certificate's DER as lowercase hex.
pub fn cert_fingerprint(der: &[u8]) -> String {
    crate::sha256_hex(der)
}

/// Fingerprint of the first certificate in a PEM text.
pub fn pem_fingerprint(cert_pem: &str) -> Result<String, TlsError> {
    let der = parse_certs(cert_pem, "certificate")?;
    Ok(cert_fingerprint(&der[0]))
}

/// Fingerprints of revoked certificates, shared between the server's TLS
/// config and whatever revokes envoys. Clones share one list.
#[derive(Debug, Clone, Default)]
pub struct RevocationList(Arc<RevocationInner>);

#[derive(Debug, Default)]
struct RevocationInner {
    fingerprints: RwLock<HashSet<String>>,
    /// Bumped by every revocation; sessions cached under an older value are
    /// not resumed.
    generation: AtomicU64,
}

impl RevocationList {
    pub fn new() -> Self {
        Self::default()
    }

    /// A list pre-filled from storage at start-up.
    pub fn with_fingerprints<I, S>(fingerprints: I) -> Result<Self, TlsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list = Self::new();
        for fingerprint in fingerprints {
            list.revoke(fingerprint.as_ref())?;
        }
        Ok(list)
    }

    /// Revokes the certificate with this fingerprint (hex, either case,
    /// colons allowed). Returns whether it was not revoked before. Takes
    /// effect at the next handshake.
    pub fn revoke(&self, fingerprint: &str) -> Result<bool, TlsError> {
        let normalized =
            normalize_fingerprint(fingerprint).ok_or_else(|| TlsError::BadFingerprint(fingerprint.to_string()))?;
        let inserted = self.write().insert(normalized);
        // Bump after inserting: a session resumed against the new generation
        // was necessarily created when the certificate was already refused.
        self.0.generation.fetch_add(1, Ordering::SeqCst);
        Ok(inserted)
    }

    pub fn is_revoked(&self, fingerprint: &str) -> bool {
        normalize_fingerprint(fingerprint).is_some_and(|fp| self.read().contains(&fp))
    }

    /// Whether this certificate (DER) is revoked. Servers also call this on
    /// the peer certificate of established connections they keep open.
    pub fn is_revoked_cert(&self, der: &[u8]) -> bool {
        self.read().contains(&cert_fingerprint(der))
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Every revoked fingerprint, sorted: the list as the server hands it to envoys.
    pub fn fingerprints(&self) -> Vec<String> {
        let mut all: Vec<String> = self.read().iter().cloned().collect();
        all.sort_unstable();
        all
    }

    /// SHA-256 (hex) of the sorted fingerprints, one per line: two lists with the
    /// same digest hold the same certificates, so an envoy reports the digest of
    /// the list it holds and the server sends the list only when it differs.
    pub fn digest(&self) -> String {
        crate::sha256_hex(self.fingerprints().join("\n").as_bytes())
    }

    /// Makes the list exactly `fingerprints` (the server's list, as an envoy
    /// receives it). Nothing changes unless every fingerprint is valid. Returns
    /// whether the list changed; a change takes effect at the next handshake.
    pub fn replace<I, S>(&self, fingerprints: I) -> Result<bool, TlsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut next = HashSet::new();
        for fingerprint in fingerprints {
            let text = fingerprint.as_ref();
            next.insert(normalize_fingerprint(text).ok_or_else(|| TlsError::BadFingerprint(text.to_string()))?);
        }
        let mut current = self.write();
        if *current == next {
            return Ok(false);
        }
        *current = next;
        drop(current);
        self.0.generation.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::SeqCst)
    }

    // A HashSet insert or lookup cannot leave the set half-updated, so data
    // behind a poisoned lock is still consistent.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<String>> {
        self.0.fingerprints.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.0.fingerprints.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text.trim().chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Refuses revoked certificates, then defers to the fleet-CA verifier.
#[derive(Debug)]
struct RevocationCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevocationList,
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.revoked.is_revoked_cert(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        self.inner.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// Server session cache whose entries die with each revocation: values are
/// stored with the revocation generation they were created under.
#[derive(Debug)]
struct RevocationAwareSessions {
    inner: Arc<ServerSessionMemoryCache>,
    revoked: RevocationList,
}

impl RevocationAwareSessions {
    fn current(&self, stored: Vec<u8>) -> Option<Vec<u8>> {
        let (generation, value) = stored.split_first_chunk::<8>()?;
        (u64::from_be_bytes(*generation) == self.revoked.generation()).then(|| value.to_vec())
    }
}

impl StoresServerSessions for RevocationAwareSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut tagged = self.revoked.generation().to_be_bytes().to_vec();
        tagged.extend_from_slice(&value);
        self.inner.put(key, tagged)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key).and_then(|stored| self.current(stored))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key).and_then(|stored| self.current(stored))
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// Server config for the agent-facing ports: presents `cert_pem`/`key_pem`,
/// verifies client certificates against the fleet CA and `revoked`.
///
/// With `allow_anonymous`, a client without a certificate (an agent that is
/// enrolling) may connect; the application must then check per call whether
/// [`peer_identity`] is required. A client that does present a certificate
/// must still present a valid, unrevoked one.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    revoked: RevocationList,
    allow_anonymous: bool,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let roots = Arc::new(root_store(ca_pem)?);
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let builder = if allow_anonymous { builder.allow_unauthenticated() } else { builder };
    let inner = builder.build().map_err(TlsError::Verifier)?;
    let verifier = Arc::new(RevocationCheckingVerifier { inner, revoked: revoked.clone() });

    let config_err = |source| TlsError::Config { side: "server", source };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(parse_certs(cert_pem, "server certificate")?, parse_key(key_pem, "server key")?)
        .map_err(config_err)?;
    config.session_storage =
        Arc::new(RevocationAwareSessions { inner: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES), revoked });
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The ALPN protocols every config offers.
pub(crate) fn alpn() -> Vec<Vec<u8>> {
    ALPN.iter().map(|p| p.to_vec()).collect()
}

/// Client config trusting only the fleet CA, presenting `identity`
/// (`(cert_pem, key_pem)`) when given.
pub fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<ClientConfig, TlsError> {
    let config_err = |source| TlsError::Config { side: "client", source };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_root_certificates(root_store(ca_pem)?);
    let mut config = match identity {
        Some((cert_pem, key_pem)) => builder
            .with_client_auth_cert(parse_certs(cert_pem, "client certificate")?, parse_key(key_pem, "client key")?)
            .map_err(config_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The client side of mutual TLS between envoys (the swarm): presents the
/// envoy's own certificate, trusts only the fleet CA, refuses revoked
/// certificates, and accepts as the peer only the one certificate the server
/// issued to it (its SHA-256 fingerprint, as a transfer order carries it), so
/// neither a revoked nor a replaced certificate of the right name passes.
#[derive(Clone)]
pub struct PeerClient {
    roots: Arc<WebPkiServerVerifier>,
    revoked: RevocationList,
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient").field("revoked", &self.revoked.len()).finish_non_exhaustive()
    }
}

impl PeerClient {
    /// `cert_pem`/`key_pem` are the envoy's own; `revoked` is shared with whatever
    /// keeps it up to date (the envoy's check-ins).
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str, revoked: RevocationList) -> Result<Self, TlsError> {
        let roots = WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(ca_pem)?), provider())
            .build()
            .map_err(TlsError::Verifier)?;
        let certs = parse_certs(cert_pem, "client certificate")?;
        let key = Arc::new(parse_key(key_pem, "client key")?);
        Ok(Self { roots, revoked, certs, key })
    }

    /// The revocation list this client refuses.
    pub fn revocations(&self) -> &RevocationList {
        &self.revoked
    }

    /// A client config that completes a handshake only with a peer presenting the
    /// unrevoked fleet certificate whose SHA-256 is `fingerprint` (and naming the
    /// server name dialled, as any fleet connection must).
    pub fn pinned(&self, fingerprint: &str) -> Result<ClientConfig, TlsError> {
        let expected =
            normalize_fingerprint(fingerprint).ok_or_else(|| TlsError::BadFingerprint(fingerprint.to_string()))?;
        let revoked = self.revoked.clone();
        let verifier = CheckedVerifier::new(self.roots.clone(), "pinned peer certificate", move |end_entity| {
            if revoked.is_revoked_cert(end_entity) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
            }
            let actual = cert_fingerprint(end_entity);
            if actual != expected {
                return Err(refusal(NotThePinnedCertificate { actual, expected: expected.clone() }));
            }
            Ok(())
        });
        let config_err = |source| TlsError::Config { side: "client", source };
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())
            .map_err(config_err)?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// A peer certificate that chains to the fleet CA but is not the one expected.
#[derive(thiserror::Error)]
#[error("peer certificate {actual} is not the one the server issued to this peer ({expected})")]
struct NotThePinnedCertificate {
    actual: String,
    expected: String,
}

// rustls shows the cause with `Debug`: make that the readable message.
impl std::fmt::Debug for NotThePinnedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A server-certificate verifier that accepts what `inner` accepts and then only an
/// end-entity certificate that `check` passes (the fleet server purpose, a pinned
/// fingerprint, not revoked).
pub(crate) struct CheckedVerifier<F> {
    inner: Arc<dyn ServerCertVerifier>,
    what: &'static str,
    check: F,
}

impl<F> CheckedVerifier<F>
where
    F: Fn(&CertificateDer<'_>) -> Result<(), rustls::Error> + Send + Sync,
{
    pub(crate) fn new(inner: Arc<dyn ServerCertVerifier>, what: &'static str, check: F) -> Arc<Self> {
        Arc::new(Self { inner, what, check })
    }
}

impl<F> std::fmt::Debug for CheckedVerifier<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedVerifier").field("inner", &self.inner).field("check", &self.what).finish()
    }
}

/// A certificate refusal with an error of Vigo's own as its cause.
pub(crate) fn refusal(cause: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(cause))))
}

impl<F> ServerCertVerifier for CheckedVerifier<F>
where
    F: Fn(&CertificateDer<'_>) -> Result<(), rustls::Error> + Send + Sync,
{
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        (self.check)(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The envoy name of a verified peer: the CN of its end-entity certificate,
/// or its first DNS SAN when it has no CN. `None` without a certificate.
pub fn peer_identity(certs: &[CertificateDer<'_>]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
    if let Some(cn) = cert.subject().iter_common_name().next() {
        return cn.as_str().ok().map(str::to_string);
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) => Some((*dns).to_string()),
        _ => None,
    })
}

pub(crate) fn root_store(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "fleet CA certificate")? {
        roots.add(cert).map_err(TlsError::TrustAnchor)?;
    }
    Ok(roots)
}

pub(crate) fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

pub(crate) fn parse_key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Key { what, detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_normalize_and_refuse_garbage() {
        let list = RevocationList::new();
        let fp = "AB".repeat(32);
        assert!(list.revoke(&fp).expect("valid"));
        assert!(!list.revoke(&"ab".repeat(32)).expect("valid"), "same fingerprint twice");
        let colons: Vec<_> = std::iter::repeat_n("ab", 32).collect();
        assert!(list.is_revoked(&colons.join(":")));
        assert_eq!(list.len(), 1);
        assert!(matches!(list.revoke("abcd"), Err(TlsError::BadFingerprint(_))));
        assert!(matches!(list.revoke(&"zz".repeat(32)), Err(TlsError::BadFingerprint(_))));
        assert!(!list.is_revoked("abcd"));
    }

    #[test]
    fn a_replaced_list_is_exactly_the_servers_and_digests_agree() {
        let (a, b, c) = ("aa".repeat(32), "bb".repeat(32), "cc".repeat(32));
        let server = RevocationList::with_fingerprints([&a, &b]).expect("valid");
        let envoy = RevocationList::with_fingerprints([&c]).expect("valid");
        assert_ne!(envoy.digest(), server.digest());
        let generation = envoy.generation();
        assert!(envoy.replace(server.fingerprints()).expect("valid"));
        assert!(envoy.generation() > generation, "cached sessions die with the change");
        assert_eq!(envoy.fingerprints(), [a.clone(), b.clone()]);
        assert!(!envoy.is_revoked(&c), "what the server no longer lists is dropped");
        assert_eq!(envoy.digest(), server.digest());
        assert!(!envoy.replace([b.to_uppercase(), a.clone()]).expect("valid"), "same list, any order or case");
        // One bad fingerprint and nothing changes.
        assert!(matches!(envoy.replace([c.as_str(), "nope"]), Err(TlsError::BadFingerprint(_))));
        assert_eq!(envoy.fingerprints(), [a, b]);
        assert_eq!(RevocationList::new().digest(), RevocationList::new().digest());
    }

    #[test]
    fn clones_share_the_list() {
        let list = RevocationList::new();
        let handle = list.clone();
        handle.revoke(&cert_fingerprint(b"cert")).expect("valid");
        assert!(list.is_revoked_cert(b"cert"));
        assert!(!list.is_revoked_cert(b"other"));
    }

    #[test]
    fn sessions_die_with_each_revocation() {
        let revoked = RevocationList::new();
        let store = RevocationAwareSessions { inner: ServerSessionMemoryCache::new(8), revoked: revoked.clone() };
        assert!(store.put(b"k1".to_vec(), b"v1".to_vec()));
        assert_eq!(store.get(b"k1"), Some(b"v1".to_vec()));
        revoked.revoke(&"00".repeat(32)).expect("valid");
        assert_eq!(store.get(b"k1"), None);
        assert!(store.put(b"k2".to_vec(), b"v2".to_vec()));
        assert_eq!(store.take(b"k2"), Some(b"v2".to_vec()));
        assert_eq!(store.take(b"k2"), None);
    }

    #[test]
    fn peer_identity_needs_a_certificate() {
        assert_eq!(peer_identity(&[]), None);
        assert_eq!(peer_identity(&[CertificateDer::from(vec![1, 2, 3])]), None);
    }

    #[test]
    fn bad_pem_inputs_are_named() {
        let ca = crate::FleetCa::generate("fleet").expect("ca");
        let err = client_config("nothing here", None).expect_err("no ca");
        assert!(err.to_string().contains("fleet CA certificate"), "{err}");
        let (cert, _) = ca.issue_server_cert(&["localhost".into()]).expect("issue");
        let err = server_config(ca.cert_pem(), &cert, "no key", RevocationList::new(), false).expect_err("no key");
        assert!(err.to_string().contains("server key"), "{err}");
        assert_eq!(pem_fingerprint(ca.cert_pem()).expect("pem"), ca.fingerprint());
    }
}
