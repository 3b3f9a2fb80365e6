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

pub mod tls_serve;
