//! TLS for the peer port: both ends present their envoy certificate and trust
//! only the fleet CA.
//!
//! Envoy certificates carry clientAuth and serverAuth and a DNS name equal to
//! the envoy's name, so the same certificate identifies an envoy when it serves
//! (the fetching peer checks the name against the order's source) and when it
//! fetches (the serving peer reads its identity from it).

use vigo_pki::{RevocationList, TlsError};

/// Only HTTP/2: the peer port speaks gRPC and nothing else.
const ALPN_H2: &[u8] = b"h2";

/// The peer server's config: presents the envoy certificate, requires a client
/// certificate from the fleet CA (no anonymous peers) and refuses `revoked` ones.
pub fn server_tls(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    revoked: RevocationList,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = vigo_pki::server_config(ca_pem, cert_pem, key_pem, revoked, false)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The fetching side's config: presents the envoy certificate and trusts only the fleet CA.
pub fn client_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = vigo_pki::client_config(ca_pem, Some((cert_pem, key_pem)))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}
