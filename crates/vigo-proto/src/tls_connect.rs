//! Dialling gRPC over mutual TLS: the connector shared by every client (the agent
//! towards the server, an envoy towards a peer).
//!
//! The peer's certificate must name `server_name` (the server's host, or the envoy
//! an order names as source); the address dialled is separate, so an envoy is
//! reached by IP and still verified by name.

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::Uri;

/// A tower connector for [`tonic::transport::Endpoint::connect_with_connector`]:
/// TCP to `addr` (no Nagle delay), then TLS verifying `server_name`.
pub fn connector(
    tls: Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
    addr: String,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send,
> + Clone
+ Send
+ 'static {
    let connector = TlsConnector::from(tls);
    tower::service_fn(move |_: Uri| {
        let (connector, server_name, addr) = (connector.clone(), server_name.clone(), addr.clone());
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        }
    })
}
