//! Sealing secrets to one envoy: age encryption to the X25519 recipient the envoy
//! registered at enrollment.
//!
//! The envoy keeps its [`AgeIdentity`] in a 0600 file and sends only the recipient
//! (`age1…`); the server seals each resolved secret to that recipient, so the value
//! travels and rests (gRPC payloads, stored bundles, the agent's bundle cache) as
//! ciphertext only one envoy can open.

use std::fmt;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret as _;

use crate::files::{self, PRIVATE_MODE};

/// The most ciphertext [`open`] accepts: secrets are small, so anything larger is refused
/// before any work is done.
pub const MAX_SEALED_BYTES: usize = 1024 * 1024;

/// Why sealing, opening or loading an identity failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("`{recipient}` is not an age X25519 recipient (age1…): {reason}")]
    Recipient { recipient: String, reason: &'static str },
    #[error("cannot seal to {recipient}: {reason}")]
    Seal { recipient: String, reason: String },
    #[error("sealed value is {len} bytes, more than {MAX_SEALED_BYTES}")]
    TooLarge { len: usize },
    #[error("cannot open sealed value: {0}")]
    Open(String),
    #[error("{path}: no age identity (AGE-SECRET-KEY-…) in the file")]
    NoIdentity { path: PathBuf },
    #[error("{path}: not a valid age identity: {reason}")]
    BadIdentity { path: PathBuf, reason: &'static str },
    #[error(transparent)]
    File(#[from] files::FileError),
}

/// An envoy's private X25519 age identity.
pub struct AgeIdentity(age::x25519::Identity);

impl fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgeIdentity({}, <redacted>)", self.recipient())
    }
}

impl AgeIdentity {
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// The public half, as registered with the server: `age1…`.
    pub fn recipient(&self) -> String {
        self.0.to_public().to_string()
    }

    /// Writes the identity in age's identity-file format, mode 0600, atomically.
    pub fn save(&self, path: &Path) -> Result<(), SealError> {
        let text = format!("# public key: {}\n{}\n", self.recipient(), self.0.to_string().expose_secret());
        files::write_atomic(path, text.as_bytes(), PRIVATE_MODE)?;
        Ok(())
    }

    /// Loads an identity written by [`AgeIdentity::save`] (or by `age-keygen`), refusing a
    /// file that group or others can access.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let text = files::read_private(path)?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| SealError::NoIdentity { path: path.to_path_buf() })?;
        line.parse().map(Self).map_err(|reason| SealError::BadIdentity { path: path.to_path_buf(), reason })
    }
}

fn recipient_of(text: &str) -> Result<age::x25519::Recipient, SealError> {
    text.trim().parse().map_err(|reason| SealError::Recipient { recipient: shorten(text), reason })
}

/// Checks that `text` is an age X25519 recipient; returns its canonical form.
pub fn check_recipient(text: &str) -> Result<String, SealError> {
    recipient_of(text).map(|r| r.to_string())
}

/// Encrypts `plaintext` so that only the holder of `recipient`'s identity can read it.
pub fn seal(recipient: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let to = recipient_of(recipient)?;
    age::encrypt(&to, plaintext).map_err(|e| SealError::Seal { recipient: to.to_string(), reason: e.to_string() })
}

/// Decrypts a value sealed to `identity`.
pub fn open(identity: &AgeIdentity, sealed: &[u8]) -> Result<Opened, SealError> {
    if sealed.len() > MAX_SEALED_BYTES {
        return Err(SealError::TooLarge { len: sealed.len() });
    }
    age::decrypt(&identity.0, sealed).map(Opened).map_err(|e| SealError::Open(e.to_string()))
}

/// A value [`open`] returned. Its `Debug` never shows the bytes.
pub struct Opened(Vec<u8>);

impl Opened {
    /// The clear bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opened({} bytes, <redacted>)", self.0.len())
    }
}

/// A hostile "recipient" could be huge; errors quote at most its start.
fn shorten(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn sealed_values_open_only_with_the_right_identity() {
        let envoy = AgeIdentity::generate();
        let other = AgeIdentity::generate();
        let sealed = seal(&envoy.recipient(), b"hunter2").expect("seal");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "ciphertext holds the clear value");
        assert_eq!(open(&envoy, &sealed).expect("open").expose(), b"hunter2");
        let err = open(&other, &sealed).expect_err("another envoy's key").to_string();
        assert!(err.starts_with("cannot open sealed value"), "{err}");
        // Sealing is randomised: the same value never gives the same bytes twice.
        assert_ne!(seal(&envoy.recipient(), b"hunter2").expect("seal"), sealed);
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(open(&envoy, &flipped).is_err(), "tampering is detected");
        assert!(matches!(open(&envoy, &vec![0u8; MAX_SEALED_BYTES + 1]), Err(SealError::TooLarge { .. })));
    }

    #[test]
    fn recipients_are_checked() {
        let good = AgeIdentity::generate().recipient();
        assert!(good.starts_with("age1"), "{good}");
        assert_eq!(check_recipient(&format!(" {good}\n")).expect("valid"), good);
        for bad in ["", "age1", "not a key", "AGE-SECRET-KEY-1QQQ", &good[..good.len() - 1], &"x".repeat(500)] {
            let err = check_recipient(bad).expect_err(bad).to_string();
            assert!(err.contains("is not an age X25519 recipient"), "{bad}: {err}");
            assert!(err.len() < 200, "long input is shortened: {err}");
        }
        assert!(seal("age1nope", b"x").is_err());
    }

    #[test]
    fn identities_round_trip_through_private_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("age.key");
        let id = AgeIdentity::generate();
        id.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let loaded = AgeIdentity::load(&path).expect("load");
        assert_eq!(loaded.recipient(), id.recipient());
        assert!(!format!("{loaded:?}").contains("AGE-SECRET-KEY"), "{loaded:?}");
        let sealed = seal(&id.recipient(), b"v").expect("seal");
        assert_eq!(open(&loaded, &sealed).expect("open").into_bytes(), b"v");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(AgeIdentity::load(&path), Err(SealError::File(files::FileError::TooOpen { .. }))));
        std::fs::write(dir.path().join("empty.key"), "# nothing\n").expect("write");
        std::fs::set_permissions(dir.path().join("empty.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = AgeIdentity::load(&dir.path().join("empty.key")).expect_err("no identity").to_string();
        assert!(err.contains("no age identity"), "{err}");
    }
}
