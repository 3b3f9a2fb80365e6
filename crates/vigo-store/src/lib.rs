//! Server persistence for Vigo: enrollment and admin tokens, envoys, published versions
//! and their bundles, behind one [`Store`] with two backends.
//!
//! SQLite (one file, WAL) is the default; PostgreSQL holds the same schema for larger
//! fleets. This is the only crate that knows SQL. Each backend has its own typed sqlx
//! pool rather than sqlx's `Any` driver, which cannot decode SQLite's integer booleans;
//! the statements themselves are shared text (`$1` placeholders and `TRUE`/`FALSE`
//! literals mean the same in both dialects) and only the migrations differ per dialect.

mod columns;
mod error;
mod migrations;
mod rows;
mod store;

pub use error::{Result, StoreError};
pub use rows::{
    AdminTokenRow, BundleRow, EnvoyRow, NewReport, Repeats, ReportRow, SeenRow, TokenRow, VersionRow, WriteOp,
};
pub use store::{AuditEvent, AuditRow, Backend, GENESIS_HASH, Store, is_json};
