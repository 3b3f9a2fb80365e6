//! One file per collector; each is listed once in [`crate::registry::all`].

pub mod identity;
pub mod kernel;
pub mod os;
pub mod users;
