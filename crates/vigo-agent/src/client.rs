//! The gRPC client, verified against the fleet CA. `vigo run --once` opens one TLS
//! connection per check-in; the daemon keeps one ([`Connection`]) between check-ins
//! and opens a new one after any failure. A revoked envoy is refused on a kept
//! connection too: the server checks every signed request against its FleetIndex.
//! [`Credentials`] reads the envoy's identity and trust from the state dir, once per
//! connection.

use std::sync::Arc;

use tonic::transport::{Channel, Endpoint};
use vigo_proto::agent_client::AgentClient;

use crate::paths::{AgentPaths, AgentSettings};

/// Connects to `host:port` with `tls`; the server certificate must name `host`.
/// Each call must complete within a minute.
pub async fn connect(host: &str, port: u16, tls: rustls::ClientConfig) -> anyhow::Result<AgentClient<Channel>> {
    open(host, port, tls, Some(std::time::Duration::from_secs(60))).await
}

/// Like [`connect`], without a per-call deadline: for the long-lived event stream.
pub async fn connect_streaming(
    host: &str,
    port: u16,
    tls: rustls::ClientConfig,
) -> anyhow::Result<AgentClient<Channel>> {
    open(host, port, tls, None).await
}

async fn open(
    host: &str,
    port: u16,
    tls: rustls::ClientConfig,
    deadline: Option<std::time::Duration>,
) -> anyhow::Result<AgentClient<Channel>> {
    let server_name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| anyhow::anyhow!("server name `{host}`: {e}"))?;
    let addr = format!("{host}:{port}");
    let shown = addr.clone();
    let service = vigo_proto::tls_connect::connector(Arc::new(tls), server_name, addr);
    let mut endpoint =
        Endpoint::from_shared(format!("http://{shown}"))?.connect_timeout(std::time::Duration::from_secs(10));
    if let Some(d) = deadline {
        endpoint = endpoint.timeout(d);
    }
    let channel = endpoint
        .connect_with_connector(service)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {shown}: {}", error_chain(&e)))?;
    Ok(AgentClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

pub use vigo_proto::error_chain;

/// A connection kept between check-ins (HTTP/2: one TLS handshake, many calls).
#[derive(Default)]
pub struct Connection {
    client: Option<AgentClient<Channel>>,
}

impl Connection {
    /// The kept client, or a new connection to `host:port` with `tls`.
    pub async fn get(
        &mut self,
        host: &str,
        port: u16,
        tls: impl FnOnce() -> anyhow::Result<rustls::ClientConfig>,
    ) -> anyhow::Result<AgentClient<Channel>> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let client = connect(host, port, tls()?).await?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Forgets the connection: the next call opens a new one (after an error, so a
    /// broken or refused connection is never reused).
    pub fn reset(&mut self) {
        self.client = None;
    }
}

/// The envoy's identity and trust, as files in the state dir.
pub struct Credentials {
    pub name: String,
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub server_key: vigo_pki::PublicKey,
}

impl Credentials {
    pub fn load(paths: &AgentPaths) -> anyhow::Result<Self> {
        let read =
            |p: std::path::PathBuf| std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
        let name = AgentSettings::load(paths)?.name;
        let server_key = vigo_pki::PublicKey::from_b64(read(paths.bundle_pub())?.trim())?;
        let key = vigo_pki::EnvoyTlsKey::load(&paths.tls_key())?.private_key_pem();
        Ok(Self { name, ca: read(paths.ca())?, cert: read(paths.tls_cert())?, key, server_key })
    }

    /// The TLS client config towards the server: trusts only the fleet CA, presents
    /// the envoy certificate.
    pub fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        Ok(vigo_pki::server_client_config(&self.ca, Some((&self.cert, &self.key)))?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt as _;

    use super::{Credentials, connect};

    /// An envoy presenting its own certificate (valid under the fleet CA, named like
    /// the server) on the server's address gets no check-in: the agent's connection
    /// to the server requires the fleet server purpose, and no request byte is sent.
    #[tokio::test]
    async fn the_agent_does_not_take_an_envoy_for_the_server() {
        let ca = vigo_pki::FleetCa::generate("fleet").expect("ca");
        let issue = |name: &str| {
            let key = vigo_pki::EnvoyTlsKey::generate().expect("key");
            let cert = ca.sign_envoy_csr(&key.csr(name).expect("csr"), name, 30).expect("sign");
            (cert, key.private_key_pem())
        };
        let (cert, key) = issue("web-1");
        let creds = Credentials {
            name: "web-1".into(),
            ca: ca.cert_pem().to_string(),
            cert,
            key,
            server_key: vigo_pki::SigningKey::generate().public_key(),
        };
        let (impostor_cert, impostor_key) = issue("localhost");
        let chain = format!("{}\n{}", impostor_cert.trim_end(), ca.cert_pem());
        let config =
            vigo_pki::server_config(ca.cert_pem(), &chain, &impostor_key, vigo_pki::RevocationList::new(), true)
                .expect("impostor config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let impostor = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_to_end(&mut seen)).await;
            }
            seen
        });
        let err = connect("localhost", port, creds.client_config().expect("config"))
            .await
            .expect_err("the impostor was taken for the server");
        assert!(format!("{err:#}").contains("not the fleet server"), "{err:#}");
        assert!(impostor.await.expect("impostor").is_empty(), "bytes reached the impostor");
    }
}
