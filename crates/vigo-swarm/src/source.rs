//! What a peer server serves: content sources, one per order kind.
//!
//! The peer server checks who asks and whether the order is genuine; a source
//! then opens exactly the content the order names and proves it is still the
//! version the order was made for. Later features (lockbox, admin file
//! distribution) add their own source under their own kind.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::accounts::Accounts;
use crate::hash::HashCache;
use crate::order::TransferOrder;
use crate::scan::{OpenError, open_regular};
use crate::sync::valid_name;
use crate::syncdir::{open_sync_dir, sync_path};

/// Content ready to be served: an open file and how many bytes of it the order covers.
#[derive(Debug)]
pub struct Content {
    pub file: File,
    pub len: u64,
}

/// Why a source does not serve an order. Each variant says which gRPC status the
/// fetching peer sees ([`SourceError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The content does not exist here (no such user, directory or file).
    #[error("{what}: not found")]
    NotFound { what: String },
    /// The content exists but is not a version this order covers.
    #[error("{path}: {detail}")]
    Changed { path: PathBuf, detail: String },
    /// The content's place is not safe to read from (a symlink, someone else's file…).
    #[error("{path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    /// The order names something this source never serves.
    #[error("order {id}: {reason}")]
    BadOrder { id: String, reason: String },
    /// Reading failed.
    #[error("{what}: {detail}")]
    Io { what: String, detail: String },
}

impl SourceError {
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::NotFound { .. } => tonic::Code::NotFound,
            Self::Changed { .. } | Self::Unsafe { .. } => tonic::Code::FailedPrecondition,
            Self::BadOrder { .. } => tonic::Code::InvalidArgument,
            Self::Io { .. } => tonic::Code::Unavailable,
        }
    }
}

/// Opens the content of verified orders of one kind. Called on a blocking thread.
pub trait ContentSource: Send + Sync {
    /// The content `order` names, checked to still be the version it names.
    fn open(&self, order: &TransferOrder) -> Result<Content, SourceError>;
}

/// Serves `~user/vigosync/name` while the file still has the order's hash and size.
pub struct VigosyncSource {
    accounts: Arc<dyn Accounts>,
    cache: HashCache,
}

impl VigosyncSource {
    /// A source resolving users through `accounts` and sharing the scanner's `cache`
    /// (so serving an unchanged file does not hash it again).
    pub fn new(accounts: Arc<dyn Accounts>, cache: HashCache) -> Self {
        Self { accounts, cache }
    }
}

impl ContentSource for VigosyncSource {
    fn open(&self, order: &TransferOrder) -> Result<Content, SourceError> {
        if !valid_name(&order.name) {
            let reason = format!("{:?} is not a vigosync file name", order.name);
            return Err(SourceError::BadOrder { id: order.id.clone(), reason });
        }
        let account = self
            .accounts
            .lookup(&order.user)
            .map_err(|e| SourceError::Io { what: format!("user {}", order.user), detail: e.to_string() })?
            .ok_or_else(|| SourceError::NotFound { what: format!("user {}", order.user) })?;
        if account.uid == 0 {
            let reason = format!("user {} is root; vigosync never serves root's files", account.name);
            return Err(SourceError::BadOrder { id: order.id.clone(), reason });
        }
        let dir_path = sync_path(&account);
        let dir = match open_sync_dir(&account) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Err(SourceError::NotFound { what: dir_path.display().to_string() }),
            Err(e) => return Err(SourceError::Unsafe { path: dir_path, reason: e.to_string() }),
        };
        let path = dir_path.join(&order.name);
        let file = match open_regular(&dir, &order.name, account.uid) {
            Ok(file) => file,
            Err(OpenError::Sys(nix::errno::Errno::ENOENT)) => {
                return Err(SourceError::NotFound { what: path.display().to_string() });
            }
            Err(OpenError::Skip(reason)) => return Err(SourceError::Unsafe { path, reason: reason.to_string() }),
            Err(OpenError::Sys(errno)) => {
                return Err(SourceError::Io { what: path.display().to_string(), detail: errno.to_string() });
            }
        };
        let (key, sha256) = match self.cache.sha256_of(&file, &path) {
            Ok(Some(hashed)) => hashed,
            Ok(None) => return Err(SourceError::Changed { path, detail: "being written".into() }),
            Err(e) => return Err(SourceError::Io { what: path.display().to_string(), detail: e.to_string() }),
        };
        if sha256 != order.sha256 || key.size != order.size {
            let detail = format!(
                "now has sha256 {sha256} ({} bytes), the order is for {} ({} bytes)",
                key.size, order.sha256, order.size
            );
            return Err(SourceError::Changed { path, detail });
        }
        Ok(Content { file, len: key.size })
    }
}
