//! Trait collectors: read-only probes that describe the host as a JSON tree.
//!
//! The product calls host facts "traits" (`traits.os.family`, `traits.users.human`);
//! the crate is named for the collectors so nobody confuses them with Rust traits.
//! Each collector lives in its own file under `collectors/` and is listed once in
//! [`registry::all`]. Collectors only read: files under a [`Host`] root (`/` in
//! production, a fixture directory in tests) and a few compile-time constants.
//! They never change the host.

mod collector;
pub mod collectors;
pub mod registry;

#[cfg(test)]
mod fixture;

pub use collector::{CollectError, Collector, Host, MalformedLines};
pub use registry::{all, collect};
