//! TLS for the peer port: both ends present their envoy certificate, trust only
//! the fleet CA and refuse the certificates the server revoked.
//!
//! Envoy certificates carry clientAuth and serverAuth and a DNS name equal to
//! the envoy's name, so the same certificate identifies an envoy when it serves
//! (the fetching peer checks the name against the order's source) and when it
//! fetches (the serving peer reads its identity from it). A name alone is not
//! enough: every order carries the fingerprint of the certificate the server
//! issued to each end, the serving side checks the client's against it
//! ([`crate::order::TransferOrder::check_parties`]) and the fetching side pins the
//! source's ([`ClientTls::for_peer`]).

use vigo_pki::{PeerClient, RevocationList, TlsError};

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

/// The fetching side: presents the envoy certificate, trusts only the fleet CA,
/// refuses `revoked` certificates and, per transfer, accepts only the source's
/// certificate the order names.
#[derive(Debug, Clone)]
pub struct ClientTls(PeerClient);

impl ClientTls {
    /// A config for dialling the peer whose certificate has SHA-256 `fingerprint`.
    pub fn for_peer(&self, fingerprint: &str) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = self.0.pinned(fingerprint)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(config)
    }

    /// The revocation list refused at every handshake.
    pub fn revocations(&self) -> &RevocationList {
        self.0.revocations()
    }
}

/// The fetching side's TLS (see [`ClientTls`]).
pub fn client_tls(ca_pem: &str, cert_pem: &str, key_pem: &str, revoked: RevocationList) -> Result<ClientTls, TlsError> {
    Ok(ClientTls(PeerClient::new(ca_pem, cert_pem, key_pem, revoked)?))
}
