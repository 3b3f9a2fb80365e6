//! Policy bundle signatures.
//!
//! The server signs each published bundle with its ED25519 key; agents verify
//! it before applying anything, also when the bundle comes from their offline
//! cache or from a peer. The signed message is
//! `vigo-bundle-v1\n{hex sha256(bundle)}`: the prefix keeps a bundle signature
//! from ever being valid as a request signature (and the other way round), and
//! signing the digest lets a large bundle be hashed while it streams.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signature;

use crate::signing::{PublicKey, SigningKey};

const BUNDLE_CONTEXT: &str = "vigo-bundle-v1\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("signature is not 64 bytes of base64")]
    Malformed,
    #[error("signature does not verify against server key {key}")]
    BadSignature { key: String },
}

/// The context of a transfer order (vigo-swarm): same construction, another prefix,
/// so an order signature is never valid as a bundle signature or the other way round.
pub const ORDER_CONTEXT: &str = "vigo-order-v1\n";

fn message(context: &str, bytes: &[u8]) -> String {
    format!("{context}{}", crate::sha256_hex(bytes))
}

/// Signs `bytes`, returning the signature as standard base64.
pub fn sign_bundle(key: &SigningKey, bytes: &[u8]) -> String {
    sign_detached(key, BUNDLE_CONTEXT, bytes)
}

/// Checks a signature made by [`sign_bundle`].
pub fn verify_bundle(public_key: &PublicKey, bytes: &[u8], signature_b64: &str) -> Result<(), BundleError> {
    verify_detached(public_key, BUNDLE_CONTEXT, bytes, signature_b64)
}

/// Signs `bytes` under a context prefix (one per kind of document), base64 out.
pub fn sign_detached(key: &SigningKey, context: &str, bytes: &[u8]) -> String {
    B64.encode(key.sign_raw(message(context, bytes).as_bytes()).to_bytes())
}

/// Checks a signature made by [`sign_detached`] with the same context.
pub fn verify_detached(
    public_key: &PublicKey,
    context: &str,
    bytes: &[u8],
    signature_b64: &str,
) -> Result<(), BundleError> {
    let signature = B64
        .decode(signature_b64.trim())
        .ok()
        .and_then(|raw| Signature::from_slice(&raw).ok())
        .ok_or(BundleError::Malformed)?;
    if public_key.verify_raw(message(context, bytes).as_bytes(), &signature) {
        Ok(())
    } else {
        Err(BundleError::BadSignature { key: public_key.to_b64() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, key, bundle, signature, expected)
    type Case<'a> = (&'a str, &'a PublicKey, &'a [u8], &'a str, Result<(), BundleError>);

    #[test]
    fn verify_table() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let bundle = b"modules:\n  - name: base\n".to_vec();
        let signature = sign_bundle(&key, &bundle);
        let mut flipped = bundle.clone();
        flipped[5] ^= 0x01;
        let mut longer = bundle.clone();
        longer.push(b'\n');

        let (public, other_public) = (key.public_key(), other.public_key());
        let bad_sig = |k: &SigningKey| Err(BundleError::BadSignature { key: k.public_key_b64() });
        let cases: Vec<Case> = vec![
            ("good", &public, &bundle, &signature, Ok(())),
            ("flipped byte", &public, &flipped, &signature, bad_sig(&key)),
            ("appended byte", &public, &longer, &signature, bad_sig(&key)),
            ("other key", &other_public, &bundle, &signature, bad_sig(&other)),
            ("not base64", &public, &bundle, "%%%", Err(BundleError::Malformed)),
            ("empty", &public, &bundle, "", Err(BundleError::Malformed)),
        ];
        for (name, public, bytes, sig, expected) in cases {
            assert_eq!(verify_bundle(public, bytes, sig), expected, "{name}");
        }
    }

    #[test]
    fn request_signatures_are_not_bundle_signatures() {
        let key = SigningKey::generate();
        let body = b"anything";
        let request = crate::sign_request(&key, "Publish", body, 1_800_000_000);
        assert!(verify_bundle(&key.public_key(), body, &request.signature).is_err());
    }
}
