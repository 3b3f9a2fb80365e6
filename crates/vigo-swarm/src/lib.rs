//! The swarm: the peer-to-peer layer between envoys, and vigosync on top of it.
//!
//! Envoys serve and fetch content directly over mutual TLS under the fleet CA
//! (TCP 1531); the server only coordinates. It hands a receiving envoy a signed
//! [`order::TransferOrder`]; the source serves bytes only to the target named in
//! a valid order.
//!
//! - [`order`]: transfer orders, signed with the server's key;
//! - [`sync`]: the `vigosync` trait as envoys report it.

#![deny(unsafe_code)]

pub mod order;
pub mod sync;

/// The swarm peer port.
pub const SWARM_PORT: u16 = 1531;
