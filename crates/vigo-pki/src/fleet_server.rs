//! The fleet server's own identity: what tells `vigosrv` apart from an envoy.
//!
//! Envoy certificates are valid TLS server certificates under the fleet CA (they
//! serve the swarm peer port), so a chain to the CA and a matching name are not
//! enough to know a peer is the server. The CA therefore puts one more purpose in
//! the server certificate's extended key usage, the *fleet server* purpose
//! ([`FLEET_SERVER_PURPOSE`], an OID under the UUID arc `2.25`), and never in an
//! envoy's: an envoy's CSR contributes only its public key. Clients of the server
//! (`vigocli`, the agent) verify the chain as usual and then require that purpose
//! ([`verifier`]).
//!
//! The bundle-signing key an enrolling agent is handed is endorsed by the CA key
//! ([`FleetCa::endorse_bundle_key`]); the agent checks the endorsement against the
//! CA it pinned ([`verify_bundle_key_endorsement`]) before it trusts a bundle.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::{CertificateError, ClientConfig, SignatureScheme};

use crate::ca::FleetCa;
use crate::signing::PublicKey;
use crate::tls::{CheckedVerifier, TlsError, parse_certs, provider, refusal, root_store};

/// The fleet server purpose, `2.25.87019918930938252042313810376505483477`.
pub const FLEET_SERVER_PURPOSE: &str = "2.25.87019918930938252042313810376505483477";

/// DER content octets of [`FLEET_SERVER_PURPOSE`] (the arc does not fit the
/// 64-bit OID arcs certificate builders take, so it is encoded here).
const FLEET_SERVER_OID_CONTENT: [u8; 20] = [
    0x69, 0x81, 0x82, 0xf7, 0xb6, 0xd0, 0x8a, 0xa6, 0xc2, 0xbf, 0xff, 0x81, 0xa3, 0xa6, 0xe8, 0xac, 0xc2, 0xe3, 0xc1,
    0x55,
];
/// DER content octets of id-kp-serverAuth, 1.3.6.1.5.5.7.3.1.
const SERVER_AUTH_OID_CONTENT: [u8; 8] = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// id-ce-extKeyUsage, 2.5.29.37.
pub(crate) const EXT_KEY_USAGE_OID: [u64; 4] = [2, 5, 29, 37];
/// Domain separator of the CA's endorsement of a bundle-signing key.
const ENDORSEMENT_CONTEXT: &[u8] = b"vigo-bundle-key-v1\n";

#[derive(Debug, thiserror::Error)]
pub enum EndorsementError {
    #[error("the fleet CA certificate cannot be read: {0}")]
    Ca(String),
    #[error("the bundle-signing key {key} is not endorsed by the pinned fleet CA")]
    NotEndorsed { key: String },
    #[error("the fleet CA cannot endorse the bundle key: {0}")]
    Sign(rcgen::Error),
}

/// The DER content of the server certificate's extended key usage extension:
/// `SEQUENCE { serverAuth, fleet server }`.
pub(crate) fn server_ext_key_usage() -> Vec<u8> {
    let mut oids = Vec::new();
    for content in [&SERVER_AUTH_OID_CONTENT[..], &FLEET_SERVER_OID_CONTENT[..]] {
        oids.push(0x06);
        oids.push(u8::try_from(content.len()).expect("short OID"));
        oids.extend_from_slice(content);
    }
    let mut der = vec![0x30, u8::try_from(oids.len()).expect("short sequence")];
    der.extend(oids);
    der
}

/// Whether a certificate (DER) carries the fleet server purpose. Only meaningful
/// for a certificate already verified against the fleet CA.
pub fn is_fleet_server_cert(der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return false;
    };
    eku.value.other.iter().any(|oid| oid.as_bytes() == FLEET_SERVER_OID_CONTENT)
}

/// Whether the first certificate of a PEM text carries the fleet server purpose.
pub fn is_fleet_server_pem(cert_pem: &str) -> bool {
    parse_certs(cert_pem, "certificate").is_ok_and(|der| is_fleet_server_cert(&der[0]))
}

/// Every name a certificate (PEM) answers to: its CN and its DNS and IP SANs, in
/// lowercase. The server refuses to enroll an envoy under any of its own.
pub fn cert_names(cert_pem: &str) -> Result<Vec<String>, TlsError> {
    let der = parse_certs(cert_pem, "certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der[0])
        .map_err(|e| TlsError::Pem { what: "certificate", detail: e.to_string() })?;
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    names.extend(ip);
                }
                _ => {}
            }
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The refusal of a certificate that chains to the CA but is not the server's.
/// rustls shows this error through `Debug`, so both print the message.
struct NotTheServer;

impl std::fmt::Display for NotTheServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the certificate is not the fleet server's (it lacks the fleet server purpose; an envoy's?)")
    }
}

impl std::fmt::Debug for NotTheServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NotTheServer {}

/// Whether a TLS error is [`verifier`]'s refusal of a certificate that
/// chains to the fleet CA but is not the server's.
pub fn is_not_the_server(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(CertificateError::Other(other)) if other.0.downcast_ref::<NotTheServer>().is_some())
}

/// A server-certificate verifier that accepts what `inner` accepts and only a
/// certificate carrying the fleet server purpose.
pub fn verifier(inner: Arc<dyn ServerCertVerifier>) -> Arc<dyn ServerCertVerifier> {
    CheckedVerifier::new(inner, "fleet server purpose", |end_entity| {
        if is_fleet_server_cert(end_entity) { Ok(()) } else { Err(refusal(NotTheServer)) }
    })
}

/// Client config for talking to the fleet server: trusts only the fleet CA,
/// requires the fleet server purpose, presents `identity` when given.
pub fn server_client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<ClientConfig, TlsError> {
    let config_err = |source| TlsError::Config { side: "client", source };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(ca_pem)?), provider())
        .build()
        .map_err(|e| TlsError::Config { side: "client", source: rustls::Error::General(e.to_string()) })?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier(webpki));
    let mut config = match identity {
        Some((cert_pem, key_pem)) => builder
            .with_client_auth_cert(
                parse_certs(cert_pem, "client certificate")?,
                crate::tls::parse_key(key_pem, "client key")?,
            )
            .map_err(config_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = crate::tls::alpn();
    Ok(config)
}

fn endorsement_message(key: &PublicKey) -> Vec<u8> {
    let mut message = ENDORSEMENT_CONTEXT.to_vec();
    message.extend_from_slice(key.as_bytes());
    message
}

impl FleetCa {
    /// The CA's signature (ECDSA P-256, DER) over a bundle-signing public key.
    pub fn endorse_bundle_key(&self, key: &PublicKey) -> Result<Vec<u8>, EndorsementError> {
        use rcgen::SigningKey as _;
        self.issuer().key().sign(&endorsement_message(key)).map_err(EndorsementError::Sign)
    }
}

/// Checks that `endorsement` is the fleet CA's (`ca_pem`) signature over `key`.
pub fn verify_bundle_key_endorsement(
    ca_pem: &str,
    key: &PublicKey,
    endorsement: &[u8],
) -> Result<(), EndorsementError> {
    let certs = parse_certs(ca_pem, "fleet CA certificate").map_err(|e| EndorsementError::Ca(e.to_string()))?;
    let (_, ca) = x509_parser::parse_x509_certificate(&certs[0]).map_err(|e| EndorsementError::Ca(e.to_string()))?;
    let public = ca.public_key().subject_public_key.data.to_vec();
    let algorithms = provider().signature_verification_algorithms;
    let valid = algorithms
        .mapping
        .iter()
        .filter(|(scheme, _)| *scheme == SignatureScheme::ECDSA_NISTP256_SHA256)
        .flat_map(|(_, algs)| algs.iter())
        .any(|alg| alg.verify_signature(&public, &endorsement_message(key), endorsement).is_ok());
    if valid { Ok(()) } else { Err(EndorsementError::NotEndorsed { key: key.to_b64() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes DER OID content octets into dotted form, arcs up to 128 bits.
    fn dotted(content: &[u8]) -> String {
        let mut arcs: Vec<u128> = Vec::new();
        let mut value: u128 = 0;
        for byte in content {
            value = (value << 7) | u128::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.extend([first, value - first * 40]);
                } else {
                    arcs.push(value);
                }
                value = 0;
            }
        }
        arcs.iter().map(u128::to_string).collect::<Vec<_>>().join(".")
    }

    #[test]
    fn the_purpose_encoding_matches_its_dotted_form() {
        assert_eq!(dotted(&FLEET_SERVER_OID_CONTENT), FLEET_SERVER_PURPOSE);
        assert_eq!(dotted(&SERVER_AUTH_OID_CONTENT), "1.3.6.1.5.5.7.3.1");
        let der = server_ext_key_usage();
        assert_eq!(der[0], 0x30);
        assert_eq!(usize::from(der[1]), der.len() - 2);
    }

    /// Only the server certificate carries the purpose: an envoy's never does, even
    /// when its CSR asks for every extension there is.
    #[test]
    fn only_the_server_certificate_is_the_fleet_server() {
        let ca = FleetCa::generate("fleet").expect("ca");
        let (server, _) = ca.issue_server_cert(&["srv.example".into(), "127.0.0.1".into()]).expect("server");
        let server_der = parse_certs(&server, "server").expect("pem");
        assert!(is_fleet_server_cert(&server_der[0]));
        let (_, parsed) = x509_parser::parse_x509_certificate(&server_der[0]).expect("parse");
        let eku = parsed.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.server_auth && !eku.value.client_auth, "{:?}", eku.value);

        let envoy_key = crate::EnvoyTlsKey::generate().expect("key");
        let envoy = ca.sign_envoy_csr(&envoy_key.csr("web-1").expect("csr"), "web-1", 30).expect("envoy");
        assert!(!is_fleet_server_cert(&parse_certs(&envoy, "envoy").expect("pem")[0]));
        assert!(!is_fleet_server_cert(ca.cert_der()));
        assert!(!is_fleet_server_cert(b"not a certificate"));
        assert_eq!(cert_names(&server).expect("names"), ["127.0.0.1", "srv.example"]);
    }

    #[test]
    fn an_endorsed_bundle_key_verifies_and_nothing_else_does() {
        let ca = FleetCa::generate("fleet").expect("ca");
        let key = crate::SigningKey::generate().public_key();
        let endorsement = ca.endorse_bundle_key(&key).expect("endorse");
        verify_bundle_key_endorsement(ca.cert_pem(), &key, &endorsement).expect("endorsed");

        let other_key = crate::SigningKey::generate().public_key();
        let err = verify_bundle_key_endorsement(ca.cert_pem(), &other_key, &endorsement).expect_err("other key");
        assert!(err.to_string().contains(&other_key.to_b64()), "{err}");
        let other_ca = FleetCa::generate("other").expect("ca");
        assert!(verify_bundle_key_endorsement(other_ca.cert_pem(), &key, &endorsement).is_err());
        assert!(verify_bundle_key_endorsement(ca.cert_pem(), &key, b"").is_err());
        assert!(verify_bundle_key_endorsement(ca.cert_pem(), &key, &[0x30; 70]).is_err());
    }
}
