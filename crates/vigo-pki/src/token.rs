//! One-time enrollment tokens.
//!
//! A token reads `vgt_<id>_<secret>`: `id` is 12 random hex digits that the
//! server stores in clear, so admins can list and revoke tokens and the server
//! can find the one stored hash to check, instead of running bcrypt against
//! every outstanding token; `secret` is 32 random bytes in unpadded base64url.
//! Only the bcrypt hash of the whole token is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

/// Prefix that makes tokens recognisable (for humans and secret scanners).
pub const TOKEN_PREFIX: &str = "vgt_";
/// bcrypt cost for stored token hashes.
pub const DEFAULT_COST: u32 = 10;
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
/// Length of the id part in hex digits.
const ID_LEN: usize = ID_BYTES * 2;
/// Length of the base64url secret part (32 bytes, unpadded).
const SECRET_LEN: usize = 43;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot hash enrollment token {id}: {source}")]
    Hash { id: String, source: bcrypt::BcryptError },
}

/// A freshly made token. `secret` is shown to the admin once and never
/// stored; `Debug` leaves it out.
pub struct NewToken {
    pub id: String,
    pub secret: String,
    pub hash: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("hash", &self.hash)
            .finish()
    }
}

impl NewToken {
    /// Makes a token and its bcrypt hash (`cost` 4..=31; use [`DEFAULT_COST`]).
    pub fn generate(cost: u32) -> Result<Self, TokenError> {
        let secret = generate();
        let id = token_id(&secret).expect("a generated token has the documented shape").to_string();
        let hash = hash(&secret, cost)?;
        Ok(Self { id, secret, hash })
    }
}

/// A new random token `vgt_<id>_<secret>`.
pub fn generate() -> String {
    let id = crate::hex_lower(&crate::random_bytes::<ID_BYTES>());
    let secret = B64URL.encode(crate::random_bytes::<SECRET_BYTES>());
    format!("{TOKEN_PREFIX}{id}_{secret}")
}

/// The public id of a well-formed token, `None` for anything else.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_at_checked(ID_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let id_ok = id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok =
        secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// bcrypt hash of `token`. Tokens never exceed bcrypt's 72-byte limit, and
/// the non-truncating variant turns any future mistake there into an error.
pub fn hash(token: &str, cost: u32) -> Result<String, TokenError> {
    bcrypt::non_truncating_hash(token, cost)
        .map_err(|source| TokenError::Hash { id: token_id(token).unwrap_or("<malformed>").to_string(), source })
}

/// Whether `token` matches `stored_hash`. Malformed tokens and hashes are
/// simply no match; bcrypt compares in constant time.
pub fn verify(token: &str, stored_hash: &str) -> bool {
    token_id(token).is_some() && bcrypt::non_truncating_verify(token, stored_hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_COST: u32 = 4;

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let token = generate();
        assert!(token.starts_with("vgt_"), "{token}");
        assert_eq!(token.len(), 4 + ID_LEN + 1 + SECRET_LEN);
        let id = token_id(&token).expect("well formed");
        assert_eq!(&token[4..16], id);
        assert_ne!(generate(), token);
    }

    #[test]
    fn verify_table() {
        let new = NewToken::generate(TEST_COST).expect("generate");
        let other = NewToken::generate(TEST_COST).expect("generate");
        assert_eq!(token_id(&new.secret), Some(new.id.as_str()));
        assert!(new.hash.starts_with("$2b$04$"), "{}", new.hash);

        // Change one character of the digest part (after `$2b$04$` and the
        // 22-character salt); middle characters carry no padding bits.
        let mut tampered_hash = new.hash.clone().into_bytes();
        tampered_hash[45] = if tampered_hash[45] == b'A' { b'B' } else { b'A' };
        let tampered_hash = String::from_utf8(tampered_hash).expect("ascii");
        let mut flipped = new.secret.clone().into_bytes();
        let at = flipped.len() - 1;
        flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ascii");

        let with_suffix = format!("{}x", new.secret);
        let cases: Vec<(&str, &str, &str, bool)> = vec![
            ("right token", &new.secret, &new.hash, true),
            ("other token", &other.secret, &new.hash, false),
            ("one character off", &flipped, &new.hash, false),
            ("tampered hash", &new.secret, &tampered_hash, false),
            ("garbage hash", &new.secret, "not a hash", false),
            ("empty token", "", &new.hash, false),
            ("extra suffix", &with_suffix, &new.hash, false),
        ];
        for (name, token, hash, expected) in cases {
            assert_eq!(verify(token, hash), expected, "{name}");
        }
    }

    #[test]
    fn token_id_rejects_malformed_tokens() {
        let good = generate();
        let bad = [
            "",
            "vgt_",
            "vgt_0123456789ab",
            "vgx_0123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "vgt_0123456789AB_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "vgt_0123456789ab-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "vgt_0123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
            "vgt_é123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ];
        for token in bad {
            assert_eq!(token_id(token), None, "{token:?}");
        }
        assert!(token_id("vgt_0123456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_some());
        assert!(token_id(&good).is_some());
    }

    #[test]
    fn debug_hides_the_secret() {
        let new = NewToken::generate(TEST_COST).expect("generate");
        let shown = format!("{new:?}");
        assert!(!shown.contains(&new.secret[16..]), "{shown}");
        assert!(shown.contains(&new.id));
    }

    #[test]
    fn bad_cost_is_an_error_naming_the_token() {
        let token = generate();
        let err = hash(&token, 99).expect_err("cost 99");
        assert!(err.to_string().contains(token_id(&token).expect("id")), "{err}");
    }
}
