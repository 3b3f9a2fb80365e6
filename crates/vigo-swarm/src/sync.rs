//! The `vigosync` trait: what each user's `~/vigosync/` holds, as an envoy reports it.
//!
//! Shape (JSON): `{"alice": [{"name", "sha256", "size", "mtime"}], "bob": []}`. A user
//! is present exactly when `~/vigosync/` exists as a directory (the opt-in); an empty
//! list means "opted in, no files". Skipped entries stay local (`vigo status`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest file vigosync carries.
pub const MAX_FILE_SIZE: u64 = 100 * 1024 * 1024;

/// The directory under a home that opts a user in.
pub const DIR_NAME: &str = "vigosync";

/// The trait's name.
pub const TRAIT: &str = "vigosync";

/// One synced file version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
}

/// The whole trait: user → files, sorted by name.
pub type SyncTrait = BTreeMap<String, Vec<FileEntry>>;

/// Which of two versions wins: newer mtime, ties broken by the larger hash, so every
/// envoy and the server agree without talking.
pub fn newer(a: &FileEntry, b: &FileEntry) -> bool {
    (a.mtime, &a.sha256) > (b.mtime, &b.sha256)
}

/// A file name vigosync accepts: one path component, not hidden, at most 255 bytes,
/// no NUL, no `/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.starts_with('.') && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        for (name, ok) in [
            ("notes.txt", true),
            ("a b", true),
            ("", false),
            (".hidden", false),
            ("..", false),
            ("a/b", false),
            ("a\0b", false),
            (&"x".repeat(255), true),
            (&"x".repeat(256), false),
        ] {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn newest_wins_ties_by_hash() {
        let e = |mtime, sha: &str| FileEntry { name: "f".into(), sha256: sha.into(), size: 1, mtime };
        assert!(newer(&e(2, "aa"), &e(1, "bb")));
        assert!(newer(&e(1, "bb"), &e(1, "aa")));
        assert!(!newer(&e(1, "aa"), &e(1, "aa")));
    }
}
