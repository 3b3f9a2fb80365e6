//! Serving gRPC over mutual TLS: the accept loop shared by every listener that
//! needs to know who is on the other end (the server's agent port, the swarm
//! peer port).
//!
//! Handshakes complete concurrently, each bounded in time, so one slow or
//! hostile client cannot hold up the others; every connection that makes it
//! carries the peer's identity from its verified certificate into tonic's
//! request extensions ([`Peer`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections that finished their handshake but wait for the gRPC server to pick them up.
const ACCEPTED_BACKLOG: usize = 1024;

/// Who is on the other end of a connection, as established by the TLS handshake.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The envoy name from a verified client certificate.
    pub identity: Option<String>,
    pub fingerprint: Option<String>,
}

/// A TLS connection that tells tonic who the peer is.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    peer: Peer,
}

impl TlsConn {
    /// The peer as established by the handshake.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Connected for TlsConn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently; yields the
/// connections that made it. A failed handshake (bad or revoked certificate) is logged.
///
/// The accept loop ends when the returned stream is dropped (the server stopped).
pub fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        // Out of file descriptors and similar: give the host a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let certs = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
                        let identity = vigo_pki::peer_identity(&certs);
                        let fingerprint = certs.first().map(|c| vigo_pki::cert_fingerprint(c));
                        let peer = Peer { addr: Some(addr), identity, fingerprint };
                        let _ = tx.send(Ok(TlsConn { inner: tls, peer })).await;
                    }
                    Ok(Err(e)) => tracing::warn!(peer = %addr, reason = %e, "TLS handshake refused"),
                    Err(_) => tracing::warn!(peer = %addr, reason = "timeout", "TLS handshake refused"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
