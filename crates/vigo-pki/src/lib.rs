//! The fleet's public-key infrastructure.
//!
//! Everything the server (`vigosrv`) and the agent (`vigo`) need to trust each
//! other lives here, and nothing else does:
//!
//! - [`ca`]: the fleet CA that issues the server certificate and signs envoy CSRs;
//! - [`envoy`]: the agent's TLS key and its certificate signing request;
//! - [`signing`]: ED25519 request signatures and their replay-proof verification;
//! - [`token`]: one-time enrollment tokens, stored bcrypt-hashed;
//! - [`bundle`]: policy bundle signatures made with the server's ED25519 key;
//! - [`seal`]: secrets sealed (age, X25519) to the key an envoy registered at enrollment;
//! - [`tls`]: rustls configurations for mutual TLS under the fleet CA, with
//!   revocation that takes effect at the next handshake;
//! - [`fleet_server`]: the mark only the server's certificate carries, checked by
//!   every client of the server, and the CA's endorsement of the bundle key.
//!
//! This crate only reads and writes the files it is given; it never touches the
//! rest of the host. The only cryptographic provider is `ring`.

#![deny(unsafe_code)]

pub mod bundle;
pub mod ca;
pub mod envoy;
mod files;
pub mod fleet_server;
pub mod pinned;
pub mod seal;
pub mod signing;
pub mod tls;
pub mod token;

pub use bundle::{BundleError, ORDER_CONTEXT, sign_bundle, sign_detached, verify_bundle, verify_detached};
pub use ca::{CaError, FleetCa};
pub use envoy::{EnvoyError, EnvoyTlsKey};
pub use files::FileError;
pub use fleet_server::{
    EndorsementError, cert_names, is_fleet_server_cert, is_fleet_server_pem, is_not_the_server, server_client_config,
    verify_bundle_key_endorsement,
};
pub use seal::{AgeIdentity, SealError};
pub use signing::{
    PendingRequest, PublicKey, Refusal, RequestSignature, SigningError, SigningKey, Verifier, check_signatures,
    sign_request,
};
pub use tls::{
    PeerClient, RevocationList, TlsError, cert_fingerprint, client_config, install_provider, peer_identity,
    server_config,
};
pub use token::{NewToken, TokenError};

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// Lowercase hex, the form every fingerprint and digest takes in Vigo.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes hex of either case; `None` for odd lengths or non-hex characters.
pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

/// Bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x1a];
        let text = hex_lower(&bytes);
        assert_eq!(text, "007f80ff1a");
        assert_eq!(hex_decode(&text).as_deref(), Some(&bytes[..]));
        assert_eq!(hex_decode("007F80FF1A").as_deref(), Some(&bytes[..]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(hex_decode("+1"), None);
    }

    #[test]
    fn sha256_hex_matches_known_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
