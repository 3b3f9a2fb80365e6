//! The vigosync scanner against real directories: skip reasons, opt-in and unsafe
//! layouts, and the hash cache (a file is hashed once per version). Needs root.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use vigo_swarm::accounts::Account;
use vigo_swarm::hash::{HashCache, hex};
use vigo_swarm::scan::{ScanResult, Scanner, SkipReason, Skipped};
use vigo_swarm::sync::{FileEntry, MAX_FILE_SIZE};

const FIRST_UID: u32 = 47_010;

/// Waits out the window in which a just-written file is not cached yet.
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
}

fn account(base: &Path, name: &str, uid: u32) -> Account {
    Account { name: name.into(), uid, gid: uid, home: base.join("home").join(name) }
}

/// Creates the home (and, when `opt_in`, `~/vigosync`) owned by the account.
fn opt_in(account: &Account) -> PathBuf {
    fs::create_dir_all(&account.home).expect("home");
    chown(&account.home, account.uid);
    let dir = account.home.join("vigosync");
    fs::create_dir(&dir).expect("vigosync");
    chown(&dir, account.uid);
    dir
}

fn put(dir: &Path, name: impl AsRef<OsStr>, bytes: &[u8], uid: u32) -> PathBuf {
    let path = dir.join(name.as_ref());
    fs::write(&path, bytes).expect("write");
    chown(&path, uid);
    path
}

fn entry(path: &Path, bytes: &[u8]) -> FileEntry {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).expect("meta");
    FileEntry {
        name: path.file_name().expect("name").to_string_lossy().into_owned(),
        sha256: hex(&Sha256::digest(bytes)),
        size: bytes.len() as u64,
        mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    }
}

#[test]
fn only_the_users_regular_files_are_carried() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice = account(tmp.path(), "alice", FIRST_UID);
    let dir = opt_in(&alice);
    let ok = put(&dir, "notes.txt", b"hello", alice.uid);
    let spaced = put(&dir, "a b", b"", alice.uid);
    put(&dir, ".hidden", b"x", alice.uid);
    put(&dir, ".vigosync-0123456789abcdef.part", b"partial", alice.uid);
    fs::create_dir(dir.join("sub")).expect("sub");
    symlink("/etc/passwd", dir.join("link")).expect("symlink");
    nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
    let big = put(&dir, "big", b"", alice.uid);
    fs::File::options().write(true).open(&big).expect("open").set_len(MAX_FILE_SIZE + 1).expect("sparse");
    put(&dir, "roots", b"secret", 0);
    put(&dir, OsStr::from_bytes(b"bad\xffname"), b"x", alice.uid);

    let result = Scanner::default().scan(std::slice::from_ref(&alice));
    assert_eq!(result.trait_["alice"], [entry(&spaced, b""), entry(&ok, b"hello")]);
    let skip = |name: &str, reason| Skipped { name: name.into(), reason };
    let mut expected = vec![
        skip(".hidden", SkipReason::Dotfile),
        skip("sub", SkipReason::Directory),
        skip("link", SkipReason::Symlink),
        skip("fifo", SkipReason::NotRegular),
        skip("big", SkipReason::TooBig),
        skip("roots", SkipReason::NotOwned),
        skip("bad\u{fffd}name", SkipReason::BadName),
    ];
    let mut got = result.skipped["alice"].clone();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    got.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got, expected, "partial downloads are not reported");
    assert!(result.problems.is_empty());
    let json = serde_json::to_value(&result).expect("json");
    assert_eq!(json["skipped"]["alice"][0], serde_json::json!({"name": ".hidden", "reason": "dotfile"}));
    assert_eq!(json["trait"]["alice"][1]["name"], "notes.txt");
}

#[test]
fn users_are_present_exactly_when_they_opted_in_safely() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path();
    let bob = account(base, "bob", FIRST_UID + 1); // no home at all
    let carol = account(base, "carol", FIRST_UID + 2); // home, no vigosync
    fs::create_dir_all(&carol.home).expect("home");
    let dave = account(base, "dave", FIRST_UID + 3); // vigosync is a symlink
    fs::create_dir_all(&dave.home).expect("home");
    fs::create_dir(base.join("elsewhere")).expect("elsewhere");
    symlink(base.join("elsewhere"), dave.home.join("vigosync")).expect("symlink");
    let erin = account(base, "erin", FIRST_UID + 4); // vigosync owned by root
    let dir = opt_in(&erin);
    chown(&dir, 0);
    let frank = account(base, "frank", FIRST_UID + 5); // opted in, empty
    opt_in(&frank);

    let result = Scanner::default().scan(&[bob, carol, dave, erin, frank]);
    assert_eq!(result.trait_.keys().collect::<Vec<_>>(), ["frank"]);
    assert!(result.trait_["frank"].is_empty());
    assert_eq!(result.problems.keys().collect::<Vec<_>>(), ["dave", "erin"]);
    assert!(result.problems["dave"].contains("symlink"), "{}", result.problems["dave"]);
    assert!(result.problems["erin"].contains("owned by uid 0"), "{}", result.problems["erin"]);
    assert!(result.skipped.is_empty());
}

#[test]
fn unchanged_files_are_hashed_once_and_changes_are_seen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice = account(tmp.path(), "alice", FIRST_UID);
    let dir = opt_in(&alice);
    let one = put(&dir, "one", b"first", alice.uid);
    put(&dir, "two", b"second", alice.uid);
    settle();

    let cache = HashCache::new();
    let mut scanner = Scanner::new(cache.clone());
    let first = scanner.scan(std::slice::from_ref(&alice));
    assert_eq!(cache.files_hashed(), 2);
    let again = scanner.scan(std::slice::from_ref(&alice));
    assert_eq!(cache.files_hashed(), 2, "nothing changed, nothing hashed");
    assert_eq!(again, first);

    // Same size, new content: the scanner notices.
    fs::write(&one, b"FIRST").expect("edit");
    settle();
    let changed: ScanResult = scanner.scan(std::slice::from_ref(&alice));
    assert_eq!(cache.files_hashed(), 3, "only the edited file is hashed again");
    assert_eq!(changed.trait_["alice"][0], entry(&one, b"FIRST"));
    assert_eq!(changed.trait_["alice"][1], first.trait_["alice"][1]);

    // A later process starts from the saved cache and hashes nothing.
    let saved = tmp.path().join("hashes.json");
    cache.save(&saved).expect("save");
    let loaded = HashCache::load(&saved).expect("load");
    let mut later = Scanner::new(loaded.clone());
    assert_eq!(later.scan(std::slice::from_ref(&alice)), changed);
    assert_eq!(loaded.files_hashed(), 0);

    // Deleted files leave the cache.
    fs::remove_file(&one).expect("rm");
    later.scan(std::slice::from_ref(&alice));
    assert_eq!(loaded.len(), 1);
}

#[test]
fn names_that_would_act_on_a_terminal_are_not_offered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice = account(tmp.path(), "alice", FIRST_UID);
    let dir = opt_in(&alice);
    let ok = put(&dir, "fine.txt", b"ok", alice.uid);
    let hostile = ["\x1b[2J\x1b[Hclear", "two\nlines", "bell\x07", "csi\u{9b}31m", "rtl\u{202e}gpj.exe"];
    for name in hostile {
        put(&dir, name, b"payload", alice.uid);
    }
    let result = Scanner::default().scan(std::slice::from_ref(&alice));
    assert_eq!(result.trait_["alice"], [entry(&ok, b"ok")], "only the printable name is offered");
    let mut skipped = result.skipped["alice"].clone();
    skipped.sort_by(|a, b| a.name.cmp(&b.name));
    let mut expected: Vec<Skipped> =
        hostile.iter().map(|n| Skipped { name: n.to_string(), reason: SkipReason::Unprintable }).collect();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(skipped, expected);
    assert_eq!(SkipReason::Unprintable.as_str(), "unprintable_name");
}

/// About 45,000 empty files with 250-byte names in one user's directory (the attack
/// that once made every check-in exceed the server's message limit): the trait stays
/// bounded, the overflow is counted, and another user's file is still offered.
#[test]
fn a_huge_directory_yields_a_bounded_trait_and_never_crowds_out_another_user() {
    use vigo_swarm::sync::{MAX_FILES_PER_USER, MAX_TRAIT_BYTES, MAX_TRAIT_BYTES_PER_USER};
    const FLOOD: usize = 45_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice = account(tmp.path(), "alice", FIRST_UID);
    let bob = account(tmp.path(), "bob", FIRST_UID + 1);
    let dir = opt_in(&alice);
    for i in 0..FLOOD {
        let name = format!("{i:06}{}", "n".repeat(244));
        assert_eq!(name.len(), 250);
        put(&dir, &name, b"", alice.uid);
    }
    let bobs = put(&opt_in(&bob), "zzz-bob.txt", b"bob's file", bob.uid);

    let result = Scanner::default().scan(&[alice.clone(), bob.clone()]);
    let encoded = serde_json::to_vec(&result.trait_).expect("json").len();
    assert!(encoded <= MAX_TRAIT_BYTES, "the trait is {encoded} bytes");
    let alices = serde_json::to_vec(&result.trait_["alice"]).expect("json").len();
    assert!(alices <= MAX_TRAIT_BYTES_PER_USER, "alice's part is {alices} bytes");
    assert!(!result.trait_["alice"].is_empty() && result.trait_["alice"].len() <= MAX_FILES_PER_USER);
    assert_eq!(result.trait_["bob"], [entry(&bobs, b"bob's file")], "bob's file is still offered");
    let left_out = result.overflow["alice"];
    assert_eq!(left_out.files as usize + result.trait_["alice"].len(), FLOOD, "every file is carried or counted");
    assert!(!result.overflow.contains_key("bob"));
    // The first files by name are the ones carried.
    assert!(result.trait_["alice"][0].name.starts_with("000000"));
    // The local record stays small too: nothing was skipped, so nothing is listed.
    assert!(result.skipped.is_empty() && result.skipped_more.is_empty());
}

/// Thousands of entries that are skipped (hidden names) are counted, not all listed.
#[test]
fn skipped_entries_are_listed_up_to_a_bound() {
    use vigo_swarm::scan::MAX_SKIPPED_LISTED;
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice = account(tmp.path(), "alice", FIRST_UID);
    let dir = opt_in(&alice);
    for i in 0..MAX_SKIPPED_LISTED + 250 {
        put(&dir, format!(".hidden-{i}"), b"", alice.uid);
    }
    let result = Scanner::default().scan(std::slice::from_ref(&alice));
    assert_eq!(result.skipped["alice"].len(), MAX_SKIPPED_LISTED);
    assert_eq!(result.skipped_more["alice"], 250);
}
