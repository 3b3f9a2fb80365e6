//! Executors: one file per resource type, each answering "in sync, or these
//! changes" before it acts, then acting only on drift.
//!
//! `types/` holds one file per resource type; [`registry`] lists them all,
//! alphabetically, in one place. [`safe_fs`] is the only way an executor writes
//! into a directory it does not fully trust.

pub mod accounts;
#[cfg(test)]
pub mod conformance;
pub mod executor;
#[cfg(test)]
mod hostile_paths;
pub mod registry;
pub mod safe_fs;
pub mod textfile;
pub mod types;

pub use executor::{Applied, Change, Check, Ctx, Drift, ExecError, Executor, Mode, Prepared, Warnings};
pub use registry::{Registry, ResourceType};
