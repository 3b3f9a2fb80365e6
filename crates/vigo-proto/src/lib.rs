//! The agent ↔ server gRPC API, generated from `proto/` at build time.
//!
//! Only this crate knows protobuf; everything else uses the generated types.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("vigo.v1");
}

pub use v1::*;
