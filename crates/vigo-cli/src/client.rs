//! HTTPS to the REST API, trusting only the fleet CA, with failures turned into
//! messages that say what to check.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::credentials::Credentials;

/// A publish compiles the whole configuration; give it time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    http: reqwest::Client,
    creds: Credentials,
}

/// A response the server gave: its status and JSON body (`null` when empty).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Client {
    pub fn new(creds: Credentials) -> anyhow::Result<Self> {
        let tls = vigo_pki::server_client_config(&creds.ca_pem, None)
            .with_context(|| format!("the CA certificate from {} is not usable", creds.ca_source))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("vigocli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { http, creds })
    }

    pub fn server(&self) -> &str {
        &self.creds.server
    }

    /// Sends one request; any answer from the server is a `Reply`, whatever its status.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.creds.server);
        let mut req = self.http.request(method, &url).bearer_auth(&self.creds.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Reply { status, body })
    }

    /// Sends one request and returns the body of a successful answer; any other
    /// answer becomes an error carrying the server's message.
    pub async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let reply = self.call(method, path, body).await?;
        if reply.status.is_success() {
            return Ok(reply.body);
        }
        Err(self.refusal(&reply))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.ok(Method::GET, path, None).await
    }

    /// The error for a non-success answer.
    pub fn refusal(&self, reply: &Reply) -> anyhow::Error {
        if reply.status == StatusCode::UNAUTHORIZED {
            return anyhow::anyhow!(
                "the server refused the admin token (check --token-file, VIGO_TOKEN or `vigocli login`)"
            );
        }
        let message = reply.body.get("message").and_then(Value::as_str);
        let code = reply.body.get("code").and_then(Value::as_str);
        match (message, code) {
            (Some(m), Some(c)) => anyhow::anyhow!("{m} ({c})"),
            _ => anyhow::anyhow!("{} answered HTTP {}: {}", self.creds.server, reply.status, reply.body),
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let server = &self.creds.server;
        let detail = root_cause(e);
        if let Some(tls) = tls_cause(e).filter(|tls| vigo_pki::is_not_the_server(tls)) {
            return anyhow::anyhow!(
                "TLS with {server} failed: {tls}; the peer holds a certificate of the fleet CA but is not the \
                 fleet server (an envoy answering under the server's address?); nothing was sent to it"
            );
        }
        if let Some(tls) = tls_cause(e) {
            return anyhow::anyhow!(
                "TLS with {server} failed: {tls}; is the CA from {} the fleet CA of this server? \
                 pass --ca <state dir>/ca/ca.pem",
                self.creds.ca_source
            );
        }
        if e.is_timeout() {
            return anyhow::anyhow!("{server} did not answer in time: {detail}");
        }
        if e.is_connect() {
            return anyhow::anyhow!("cannot reach {server}: {detail}");
        }
        anyhow::anyhow!("request to {server} failed: {detail}")
    }
}

/// The rustls error somewhere under a reqwest error. It travels inside `io::Error`s,
/// sometimes nested, whose `source()` skips the wrapped error: look inside those too.
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        let mut inner: &(dyn std::error::Error + 'static) = err;
        loop {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match inner.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        current = err.source();
    }
    None
}

/// The innermost cause's message: reqwest's own text ("error sending request")
/// says less than the cause under it.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
