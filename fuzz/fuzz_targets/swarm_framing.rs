//! Swarm transfer framing: transfer orders as both ends check them, and the
//! receiver's per-chunk checks over a stream of chunks.
//!
//! Input: a little-endian `u16` length, that many bytes of order JSON, then
//! length-delimited protobuf messages: one `FetchRequest`, then `Chunk`s.
//!
//! - The `FetchRequest` as received (its own signature) is never honoured.
//! - The order JSON, genuinely signed with the server key made in this process,
//!   goes through the checks both ends make: expiry exactly at `expires_at`, the
//!   parties, the receiver's field checks (an accepted order's hash can name the
//!   part file) and the source's offset bound.
//! - The chunks go through [`check_chunk`] as a stream would: bytes are appended
//!   only at the expected offset, never past the order's size, each matching its
//!   SHA-256. A chunk whose `sha256` is the single byte 0 gets its true digest, so
//!   that honest chunks at arbitrary offsets and sizes are covered as well.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sha2::{Digest, Sha256};
use vigo_pki::SigningKey;
use vigo_proto::{Chunk, FetchRequest};
use vigo_swarm::fetch::{ChunkFit, Fetcher, check_chunk};
use vigo_swarm::order::{OrderError, SignedOrder, TransferOrder};

const NOW: i64 = 1_800_000_000;
const MAX_CHUNKS: usize = 64;

fn server_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate)
}

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (payload, mut framed) = rest.split_at(len);
    let request = FetchRequest::decode_length_delimited(&mut framed).unwrap_or_default();

    let as_received =
        SignedOrder { payload: request.order_payload.clone(), signature: request.order_signature.clone() };
    assert!(
        matches!(as_received.verify(&server_key().public_key(), NOW), Err(OrderError::Signature(_))),
        "an order not signed by the server key passed"
    );

    let order = check_order(payload, request.offset);
    let size = order.as_ref().map_or(request.offset % (1 << 20), |o| o.size);
    let start = request.offset.min(size);
    chunk_stream(size, start, &mut framed);
});

/// Both ends' checks on a genuinely signed order; the order, when the receiver
/// would fetch it.
fn check_order(payload: &[u8], offset: u64) -> Option<TransferOrder> {
    let key = server_key();
    let signed = SignedOrder {
        payload: payload.to_vec(),
        signature: vigo_pki::sign_detached(key, vigo_pki::ORDER_CONTEXT, payload),
    };
    let order = match signed.verify(&key.public_key(), NOW) {
        Ok(order) => order,
        Err(OrderError::Malformed(_)) => {
            assert!(serde_json::from_slice::<TransferOrder>(payload).is_err());
            return None;
        }
        Err(OrderError::Expired { expires_at, .. }) => {
            assert!(expires_at < NOW);
            assert!(signed.verify(&key.public_key(), expires_at).is_ok(), "valid until {expires_at} inclusive");
            return None;
        }
        Err(e) => panic!("a genuinely signed order was refused: {e}"),
    };
    assert!(order.expires_at >= NOW);
    if order.expires_at < i64::MAX {
        assert!(matches!(signed.verify(&key.public_key(), order.expires_at + 1), Err(OrderError::Expired { .. })));
    }
    // The source serves exactly the target the order names, with the certificate
    // the order names, and nobody else.
    assert!(order.check_parties(&order.source, &order.target, &order.target_cert).is_ok());
    if order.source != order.target {
        assert!(order.check_parties(&order.target, &order.source, &order.target_cert).is_err());
    }
    let other_cert = format!("{}0", order.target_cert);
    assert!(order.check_parties(&order.source, &order.target, &other_cert).is_err(), "another certificate served");
    // What the order says is what was signed: it serializes back to an equal order.
    let again: TransferOrder =
        serde_json::from_slice(&serde_json::to_vec(&order).expect("serializes")).expect("parses");
    assert_eq!(again, order);

    let checked = Fetcher::check_order(&order.target, &order);
    assert!(Fetcher::check_order(&format!("{}x", order.target), &order).is_err(), "another envoy's order accepted");
    let addr = checked.ok()?;
    assert_eq!(addr.to_string().parse::<std::net::SocketAddr>().ok(), Some(addr));
    // The receiver names its part file by the hash's first 16 characters.
    assert!(order.sha256.is_char_boundary(16) && order.sha256.len() == 64);
    // The source serves from `offset` only when it lies within the content.
    let _serves = offset <= order.size;
    Some(order)
}

/// Chunks as a stream delivers them, from byte `start` of `size`.
fn chunk_stream(size: u64, start: u64, framed: &mut &[u8]) {
    let mut next = start;
    let mut hasher = Sha256::new();
    for _ in 0..MAX_CHUNKS {
        let Ok(mut chunk) = Chunk::decode_length_delimited(&mut *framed) else { break };
        if chunk.sha256 == [0] {
            chunk.sha256 = Sha256::digest(&chunk.data).to_vec();
        }
        let len = chunk.data.len() as u64;
        match check_chunk(size, next, &chunk) {
            ChunkFit::Next => {
                assert_eq!(chunk.offset, next);
                assert!(len <= size - next, "chunk of {len} at {next} passes the end {size}");
                assert_eq!(Sha256::digest(&chunk.data).as_slice(), chunk.sha256.as_slice());
                hasher.update(&chunk.data);
                next += len;
            }
            // The next request resumes at `next`.
            ChunkFit::Misplaced => assert_ne!(chunk.offset, next),
            ChunkFit::Damaged => {
                assert_ne!(Sha256::digest(&chunk.data).as_slice(), chunk.sha256.as_slice());
            }
            // The transfer ends.
            ChunkFit::Oversized => {
                assert_eq!(chunk.offset, next);
                assert!(len > size - next);
                break;
            }
        }
        assert!(next <= size, "stream reached byte {next} of {size}");
    }
    let _ = hasher.finalize();
}
