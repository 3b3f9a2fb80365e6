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

/// The trait that says, per user, what the envoy left out of [`TRAIT`] (limits below).
pub const OVERFLOW_TRAIT: &str = "vigosync_overflow";

/// Most files one user's directory contributes to an envoy's report; the server
/// ignores any beyond this from one envoy.
pub const MAX_FILES_PER_USER: usize = 5_000;

/// Most content bytes one user's reported files may total on one envoy; the server
/// ignores the files beyond this from one envoy.
pub const MAX_BYTES_PER_USER: u64 = 20 * 1024 * 1024 * 1024;

/// Most bytes one user's entries take in the encoded trait.
pub const MAX_TRAIT_BYTES_PER_USER: usize = 2 * 1024 * 1024;

/// Most bytes the whole encoded trait takes in one check-in, shared fairly between
/// users: far under the server's 16 MiB message limit, with the other traits and the
/// queued reports.
pub const MAX_TRAIT_BYTES: usize = 6 * 1024 * 1024;

/// What was left out of one user's report: files (in name order, after the last one
/// carried) and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overflow {
    pub files: u64,
    pub bytes: u64,
}

impl Overflow {
    pub fn is_empty(&self) -> bool {
        self.files == 0
    }

    pub fn add(&mut self, files: u64, bytes: u64) {
        self.files = self.files.saturating_add(files);
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// The overflow trait: user → what was left out.
pub type OverflowTrait = BTreeMap<String, Overflow>;

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
/// no `/`, and printable throughout ([`printable_name`]): a name travels to other
/// envoys and ends up on terminals (`vigo status`, `vigocli swarm sync status`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.starts_with('.') && !name.contains('/') && printable_name(name)
}

/// Whether every character of `name` prints as itself: no control characters (C0,
/// DEL, C1: escape sequences, newlines, NUL) and no invisible formatting characters
/// that reorder or hide text (bidirectional overrides, zero-width characters, line
/// and paragraph separators, the byte-order mark).
pub fn printable_name(name: &str) -> bool {
    name.chars().all(|c| !unprintable(c))
}

fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// `text` made safe for a terminal: every character [`printable_name`] refuses, and
/// the backslash itself, is written as a Rust-style escape (`\u{1b}`, `\n`, `\\`),
/// so a name received from elsewhere can never move the cursor, clear the screen or
/// fake a line of output.
pub fn escape_unprintable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
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
            ("\x1b[2J", false),
            ("two\nlines", false),
            ("tab\there", false),
            ("del\x7f", false),
            ("c1\u{9b}31m", false),
            ("evil\u{202e}txt.exe", false),
            ("zero\u{200b}width", false),
            ("café ünïcode 日本", true),
            (&"x".repeat(255), true),
            (&"x".repeat(256), false),
        ] {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
    }

    #[test]
    fn escaping_leaves_nothing_a_terminal_acts_on() {
        assert_eq!(escape_unprintable("plain name.txt"), "plain name.txt");
        assert_eq!(escape_unprintable("日本"), "日本");
        assert_eq!(escape_unprintable("\x1b[2J\nx"), "\\u{1b}[2J\\nx");
        assert_eq!(escape_unprintable("a\\u{1b}"), "a\\\\u{1b}", "a backslash cannot fake an escape");
        assert_eq!(escape_unprintable("r\u{202e}l\u{9b}"), "r\\u{202e}l\\u{9b}");
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let shown = escape_unprintable(&c.to_string());
            assert!(printable_name(&shown), "{c:?} escapes to printable text");
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
