//! A lean gRPC channel for the load generator: one mutual-TLS HTTP/2 connection
//! driven by hyper directly, each unary request sent as one whole body.
//!
//! The generator shares the machine with the server it measures, so every cycle it
//! spends is taken from the server. tonic's `Channel` puts a buffer task (and a
//! reconnect layer) between the caller and the connection, and hands HTTP/2 a
//! request body that is a stream which only learns that it has ended after its one
//! message: each call then crosses two extra tasks and costs three writes on the wire
//! (HEADERS, DATA, an empty DATA frame ending the stream). Here the encoded message is
//! gathered first and given to hyper as a sized body, so it leaves as one DATA frame
//! carrying END_STREAM: two writes a call. The bytes are the same gRPC message, signed
//! the same way, over the same kind of connection the agent opens.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioExecutor;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::codegen::http::{Request, Response, Uri};
use tower::ServiceExt as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest a call may take, as for the agent.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct WholeBody {
    send: SendRequest<Full<Bytes>>,
    origin: Uri,
}

impl WholeBody {
    /// Opens a mutual-TLS connection to `addr` (whose certificate must name `host`) and
    /// starts its HTTP/2 connection task.
    pub async fn connect(host: &'static str, addr: String, tls: rustls::ClientConfig) -> Result<Self, BoxError> {
        let server_name = rustls::pki_types::ServerName::try_from(host)?;
        let origin = Uri::try_from(format!("http://{addr}"))?;
        let connector = vigo_proto::tls_connect::connector(Arc::new(tls), server_name, addr);
        let io = tokio::time::timeout(CONNECT_TIMEOUT, connector.oneshot(origin.clone())).await??;
        let (send, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake::<_, Full<Bytes>>(io).await?;
        // Ends when the connection closes; a broken one fails the next call, which
        // makes the caller open a new one.
        tokio::spawn(connection);
        Ok(Self { send, origin })
    }
}

impl tower::Service<Request<Body>> for WholeBody {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let sending = self.send.clone();
        let mut send = std::mem::replace(&mut self.send, sending);
        let origin = self.origin.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            // tonic gives a path-only URI; HTTP/2 needs the scheme and authority too.
            let mut uri = origin.into_parts();
            uri.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = Uri::from_parts(uri)?;
            let whole = body.collect().await?.to_bytes();
            let call = send.send_request(Request::from_parts(parts, Full::new(whole)));
            let response = tokio::time::timeout(CALL_TIMEOUT, call).await??;
            Ok(response.map(Body::new))
        })
    }
}
