//! The gRPC APIs, generated from `proto/` at build time: agent ↔ server
//! (`agent.proto`) and envoy ↔ envoy (`swarm.proto`).
//!
//! Only this crate knows protobuf; everything else uses the generated types.
//! [`tls_serve`] is the mutual-TLS accept loop both kinds of listener share.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("vigo.v1");
}

pub use v1::*;

pub mod tls_connect;
pub mod tls_serve;

/// An error with its sources, on one line (transport errors nest several deep).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(source) = cur {
        out.push_str(": ");
        out.push_str(&source.to_string());
        cur = source.source();
    }
    out
}
