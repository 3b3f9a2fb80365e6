//! The gRPC client: one TLS connection per check-in (so a revoked certificate is
//! refused at the very next handshake), verified against the fleet CA.

use std::sync::Arc;

use tonic::transport::{Channel, Endpoint};
use vigo_proto::agent_client::AgentClient;

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
