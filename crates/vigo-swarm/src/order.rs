//! Transfer orders: the server's signed permission for one envoy to fetch one
//! file version from another.
//!
//! The order is JSON signed with the server's ED25519 key under its own context
//! ([`vigo_pki::ORDER_CONTEXT`]), so no bundle signature is ever a valid order.
//! Both ends check it: the target before it asks, the source before it serves.
//! It names both ends by envoy name *and* by the SHA-256 fingerprint of the
//! certificate the server issued to each, so a revoked or replaced certificate
//! of the right name is of no use with it: the source serves only the client
//! presenting `target_cert`, the target talks only to the peer presenting
//! `source_cert`.

use serde::{Deserialize, Serialize};
use vigo_pki::{PublicKey, SigningKey};

/// What the server allows: `target` may fetch `sha256` of `user`'s `name` from `source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferOrder {
    /// Unique per order (random), for logs and de-duplication.
    pub id: String,
    /// The feature the order belongs to ("vigosync").
    pub kind: String,
    pub user: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
    pub size: u64,
    /// Modification time at the source, nanoseconds since the Unix epoch.
    pub mtime: i64,
    /// Source envoy name (the identity in its certificate).
    pub source: String,
    /// Where the source's peer server listens ("ip:port").
    pub source_addr: String,
    /// Target envoy name: the only peer the source serves under this order.
    pub target: String,
    /// Lowercase hex SHA-256 of the certificate the server issued to the source.
    pub source_cert: String,
    /// Lowercase hex SHA-256 of the certificate the server issued to the target:
    /// the only client certificate the source serves under this order.
    pub target_cert: String,
    /// Unix seconds after which neither end honours the order.
    pub expires_at: i64,
}

/// An order with its signature, as carried in a check-in response and a fetch request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOrder {
    /// The order's JSON, exactly as signed.
    pub payload: Vec<u8>,
    /// Base64 ED25519 signature (see [`vigo_pki::sign_detached`]).
    pub signature: String,
}

/// Why an order is not honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("transfer order signature: {0}")]
    Signature(#[from] vigo_pki::BundleError),
    #[error("transfer order is not valid JSON: {0}")]
    Malformed(String),
    #[error("transfer order {id} expired at {expires_at}")]
    Expired { id: String, expires_at: i64 },
    #[error("transfer order {id} names target {target}, not {peer}")]
    WrongTarget { id: String, target: String, peer: String },
    #[error("transfer order {id} names source {source_envoy}, not this envoy ({me})")]
    WrongSource { id: String, source_envoy: String, me: String },
    #[error(
        "transfer order {id} is for {target}'s certificate {expected}; the client presented {presented} (revoked, replaced or not the server's)"
    )]
    WrongCertificate { id: String, target: String, expected: String, presented: String },
}

impl SignedOrder {
    /// Signs an order with the server's key.
    pub fn sign(order: &TransferOrder, key: &SigningKey) -> Self {
        let payload = serde_json::to_vec(order).expect("an order of strings and numbers always serializes");
        let signature = vigo_pki::sign_detached(key, vigo_pki::ORDER_CONTEXT, &payload);
        Self { payload, signature }
    }

    /// Checks the signature and expiry; the caller then checks source/target against
    /// the peer (see [`TransferOrder::check_parties`]).
    pub fn verify(&self, server_key: &PublicKey, now_unix: i64) -> Result<TransferOrder, OrderError> {
        vigo_pki::verify_detached(server_key, vigo_pki::ORDER_CONTEXT, &self.payload, &self.signature)?;
        let order: TransferOrder =
            serde_json::from_slice(&self.payload).map_err(|e| OrderError::Malformed(e.to_string()))?;
        if now_unix > order.expires_at {
            return Err(OrderError::Expired { id: order.id, expires_at: order.expires_at });
        }
        Ok(order)
    }
}

impl TransferOrder {
    /// The source's check: this envoy is the order's source, `peer` (the identity in
    /// the client certificate) is its target and `peer_cert` (that certificate's
    /// SHA-256) is the one the server issued to the target.
    pub fn check_parties(&self, me: &str, peer: &str, peer_cert: &str) -> Result<(), OrderError> {
        if self.source != me {
            return Err(OrderError::WrongSource {
                id: self.id.clone(),
                source_envoy: self.source.clone(),
                me: me.into(),
            });
        }
        if self.target != peer {
            return Err(OrderError::WrongTarget {
                id: self.id.clone(),
                target: self.target.clone(),
                peer: peer.into(),
            });
        }
        if !peer_cert.eq_ignore_ascii_case(&self.target_cert) {
            return Err(OrderError::WrongCertificate {
                id: self.id.clone(),
                target: self.target.clone(),
                expected: self.target_cert.clone(),
                presented: peer_cert.into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> TransferOrder {
        TransferOrder {
            id: "o1".into(),
            kind: "vigosync".into(),
            user: "alice".into(),
            name: "notes.txt".into(),
            sha256: "ab".repeat(32),
            size: 4,
            mtime: 1_700_000_000_000_000_000,
            source: "h1".into(),
            source_addr: "198.18.0.2:1531".into(),
            target: "h2".into(),
            source_cert: "11".repeat(32),
            target_cert: "22".repeat(32),
            expires_at: 2_000,
        }
    }

    #[test]
    fn verify_table() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let signed = SignedOrder::sign(&order(), &key);
        assert_eq!(signed.verify(&key.public_key(), 1_000), Ok(order()));
        assert!(matches!(signed.verify(&key.public_key(), 2_001), Err(OrderError::Expired { .. })));
        assert!(matches!(signed.verify(&other.public_key(), 1_000), Err(OrderError::Signature(_))));
        let mut tampered = signed.clone();
        tampered.payload = String::from_utf8(tampered.payload).expect("JSON is UTF-8").replace("h2", "h3").into_bytes();
        assert!(matches!(tampered.verify(&key.public_key(), 1_000), Err(OrderError::Signature(_))));
        // A bundle signature over the same bytes is not an order signature.
        let bundle_sig =
            SignedOrder { payload: signed.payload.clone(), signature: vigo_pki::sign_bundle(&key, &signed.payload) };
        assert!(matches!(bundle_sig.verify(&key.public_key(), 1_000), Err(OrderError::Signature(_))));
    }

    #[test]
    fn parties_table() {
        let o = order();
        let (cert, other) = ("22".repeat(32), "33".repeat(32));
        assert_eq!(o.check_parties("h1", "h2", &cert), Ok(()));
        assert!(matches!(o.check_parties("h1", "h3", &cert), Err(OrderError::WrongTarget { .. })));
        assert!(matches!(o.check_parties("h3", "h2", &cert), Err(OrderError::WrongSource { .. })));
        // The right name with another certificate (revoked, replaced, re-issued) is refused.
        assert!(matches!(o.check_parties("h1", "h2", &other), Err(OrderError::WrongCertificate { .. })));
        assert!(matches!(o.check_parties("h1", "h2", ""), Err(OrderError::WrongCertificate { .. })));
    }
}
