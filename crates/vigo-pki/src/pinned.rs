//! Trust on a pinned fingerprint: how an agent that was given only the fleet
//! CA's SHA-256 fingerprint connects for enrollment.
//!
//! The server sends its certificate chain with the fleet CA in it. The chain is
//! accepted only if one of its certificates has the pinned fingerprint; the
//! server certificate is then verified against that certificate as the sole
//! root, exactly as a normal connection to the server would verify it (fleet
//! server purpose included). The matching CA is
//! kept so the agent can store it for every later connection.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::tls::{TlsError, cert_fingerprint, provider};

/// A verifier that trusts the chain certificate whose fingerprint is pinned.
#[derive(Debug)]
pub struct PinnedCa {
    fingerprint: String,
    found: Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedCa {
    pub fn new(fingerprint: &str) -> Arc<Self> {
        let fingerprint = fingerprint.trim().to_ascii_lowercase().replace(':', "");
        Arc::new(Self { fingerprint, found: Mutex::new(None) })
    }

    /// The pinned CA certificate as PEM, once a handshake has found it.
    pub fn ca_pem(&self) -> Option<String> {
        let found = self.found.lock().unwrap_or_else(PoisonError::into_inner);
        found.as_ref().map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())))
    }

    /// A client config (no client certificate) that uses this verifier.
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config { side: "client", source })?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|c| cert_fingerprint(c) == self.fingerprint)
            .ok_or(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))?;
        let mut roots = RootCertStore::empty();
        roots.add(pinned.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let others: Vec<CertificateDer<'_>> = intermediates.iter().filter(|c| *c != pinned).cloned().collect();
        let verified = crate::fleet_server::verifier(inner).verify_server_cert(
            end_entity,
            &others,
            server_name,
            ocsp_response,
            now,
        )?;
        *self.found.lock().unwrap_or_else(PoisonError::into_inner) = Some(pinned.clone().into_owned());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}
