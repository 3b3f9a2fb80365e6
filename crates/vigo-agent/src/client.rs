//! The gRPC client: one TLS connection per check-in (so a revoked certificate is
//! refused at the very next handshake), verified against the fleet CA.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
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
    let connector = TlsConnector::from(Arc::new(tls));
    let addr = format!("{host}:{port}");
    let shown = addr.clone();
    let service = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let addr = addr.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
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

/// An error with its sources, on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
