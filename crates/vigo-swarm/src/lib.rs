//! The swarm: the peer-to-peer layer between envoys, and vigosync on top of it.
//!
//! Envoys serve and fetch content directly over mutual TLS under the fleet CA
//! (TCP 1531); the server only coordinates. It hands a receiving envoy a signed
//! [`order::TransferOrder`]; the source serves bytes only to the target named in
//! a valid order.
//!
//! - [`order`]: transfer orders, signed with the server's key;
//! - [`sync`]: the `vigosync` trait as envoys report it;
//! - [`scan`]: the scanner that builds that trait from users' `~/vigosync/`;
//! - [`hash`]: SHA-256 per file version, cached across scans and fetches;
//! - [`peer`]: the peer server, serving [`source`]s to the envoys orders name;
//! - [`fetch`]: the receiving side, writing into `~/vigosync/` safely;
//! - [`accounts`], [`syncdir`]: whose directory it is, and opening it safely;
//! - [`tls`]: the peer port's mutual-TLS configurations.
//!
//! Wiring in an agent: one [`hash::HashCache`] shared by a [`scan::Scanner`]
//! (each check-in), a [`source::VigosyncSource`] in the [`peer::PeerState`] of a
//! [`peer::PeerServer`] on [`SWARM_PORT`], and a [`fetch::Fetcher`] for the
//! orders a check-in returns.

#![deny(unsafe_code)]

pub mod accounts;
pub mod fetch;
pub mod hash;
pub mod order;
pub mod peer;
pub mod scan;
pub mod source;
pub mod sync;
pub mod syncdir;
pub mod tls;

/// The swarm peer port.
pub const SWARM_PORT: u16 = 1531;
