//! The Vigo server (`vigosrv`): enrollment, signed check-ins from an in-memory
//! FleetIndex, publish, and the REST API.
//!
//! `server` holds the shared state and every operation; `grpc` and `rest` are
//! thin front ends over it. `policy` builds signed bundles; `writer` batches
//! persistence; `state_dir` creates and names the server's files; `secrets`
//! resolves `secret:` references at publish. `vigosync` plans
//! peer-to-peer file deliveries and `events` tells connected envoys to check in now.

pub mod audit;
pub mod convergence;
pub mod events;
pub mod fleet;
pub mod grpc;
pub mod policy;
pub mod rest;
pub mod runs;
pub mod secrets;
pub mod serve;
pub mod server;
pub mod settings;
pub mod signatures;
pub mod state_dir;
pub mod vigosync;
pub mod writer;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// SHA-256 of text, hex.
pub fn digest_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
