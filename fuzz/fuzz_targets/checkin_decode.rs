//! A check-in as the server receives it: the `Signed` envelope decoded from the
//! wire, the body decoded before any signature is checked (it names the envoy
//! whose key checks it), then the request-signature checks of `vigo-pki`.
//!
//! The input is the encoded envelope. Whatever it holds, decoding and checking
//! never panic; its own signature is never accepted (the key is made in this
//! process); the stale-timestamp verdict follows the window exactly. The nonce
//! field's bytes also drive a sequence of genuinely signed requests from three
//! envoys through one small verifier: a request already accepted is never
//! accepted again, and what the verifier remembers stays bounded.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use vigo_pki::{PendingRequest, Refusal, RequestSignature, SigningKey, Verifier, check_signatures, sign_request};
use vigo_proto::{CheckInBody, EventsRequest, Signed};

const NOW: i64 = 1_800_000_000;
const WINDOW: u64 = 300;
/// Signers a verifier tracks here: fewer than the envoys, so a full table is reached.
const CAPACITY: usize = 2;
/// Requests remembered per signer (`vigo-pki`'s bound).
const PER_SIGNER: usize = 64;
/// Enough steps for one signer to pass its per-signer bound.
const MAX_STEPS: usize = 160;

fn keys() -> &'static [SigningKey; 3] {
    static KEYS: OnceLock<[SigningKey; 3]> = OnceLock::new();
    KEYS.get_or_init(|| [SigningKey::generate(), SigningKey::generate(), SigningKey::generate()])
}

fuzz_target!(|data: &[u8]| {
    let Ok(signed) = Signed::decode(data) else { return };
    decode_body(&signed.body);
    let sig = RequestSignature {
        timestamp: signed.timestamp,
        nonce: signed.nonce.clone(),
        signature: String::from_utf8(signed.signature.clone()).unwrap_or_default(),
    };
    check_envelope(&signed.body, &sig);
    replay_sequence(signed.nonce.as_bytes(), &signed.body);
});

/// What the server reads from a body before it knows who signed it.
fn decode_body(body: &[u8]) {
    if let Ok(b) = CheckInBody::decode(body) {
        if let Some(traits) = &b.traits_json {
            let _ = serde_json::from_slice::<serde_json::Value>(traits);
        }
        for r in &b.reports {
            if let Ok(json) = std::str::from_utf8(&r.json) {
                let _ = serde_json::from_str::<serde_json::Value>(json);
            }
        }
    }
    let _ = EventsRequest::decode(body);
}

/// The envelope's own signature, checked at several server times.
fn check_envelope(body: &[u8], sig: &RequestSignature) {
    let key = keys()[0].public_key();
    let verifier = Verifier::new(WINDOW, CAPACITY);
    let times = [
        NOW,
        sig.timestamp,
        sig.timestamp.saturating_add(WINDOW as i64),
        sig.timestamp.saturating_add(WINDOW as i64 + 1),
        sig.timestamp.saturating_sub(WINDOW as i64 + 1),
    ];
    for now in times {
        assert!(verifier.verify(&key, "CheckIn", body, sig, now).is_err(), "a signature not made by the key passed");
        match verifier.prepare(&key, "CheckIn", body, sig, now) {
            Ok(pending) => {
                assert!(now.abs_diff(sig.timestamp) <= WINDOW, "stale timestamp {} at {now} prepared", sig.timestamp);
                assert!(!pending.signature_valid());
                let genuine = genuine(&verifier, body, now);
                assert_eq!(check_signatures(&[&pending, &genuine]), [false, true]);
                assert_eq!(check_signatures(&[&genuine, &pending, &genuine]), [true, false, true]);
                assert_eq!(verifier.admit(&pending, false, now), Err(Refusal::BadSignature));
            }
            Err(Refusal::StaleTimestamp { .. }) => {
                assert!(now.abs_diff(sig.timestamp) > WINDOW, "timestamp {} at {now} called stale", sig.timestamp);
            }
            Err(Refusal::Malformed(_)) => {}
            Err(other) => panic!("prepare refused with {other:?}, which needs a valid signature"),
        }
    }
    assert_eq!(verifier.cached_nonces(), 0, "refused requests left nonces behind");
}

fn genuine(verifier: &Verifier, body: &[u8], now: i64) -> PendingRequest {
    let key = &keys()[1];
    let sig = sign_request(key, "CheckIn", body, now);
    verifier.prepare(&key.public_key(), "CheckIn", body, &sig, now).expect("a fresh genuine request is well formed")
}

/// Genuine requests from three envoys, at times and in an order the input picks,
/// with replays of accepted ones in between.
fn replay_sequence(steps: &[u8], body: &[u8]) {
    let verifier = Verifier::new(WINDOW, CAPACITY);
    let mut now = NOW;
    let mut accepted: Vec<(usize, RequestSignature)> = Vec::new();
    for step in steps.chunks_exact(2).take(MAX_STEPS) {
        let (op, arg) = (step[0], step[1]);
        let signer = usize::from(op & 0x03) % 3;
        match op >> 6 {
            // The server's clock moves on.
            0 => now = now.saturating_add(i64::from(arg) * 4),
            // A replay of a request accepted earlier, possibly by another key.
            1 if !accepted.is_empty() => {
                let (who, sig) = &accepted[usize::from(arg) % accepted.len()];
                for key in [*who, signer] {
                    let got = verifier.verify(&keys()[key].public_key(), "CheckIn", body, sig, now);
                    assert!(got.is_err(), "request replayed at {now} was accepted again (signed at {})", sig.timestamp);
                }
            }
            // A fresh request signed `arg - 128` seconds (times 3) from the server's clock.
            _ => {
                let at = now + (i64::from(arg) - 128) * 3;
                let key = &keys()[signer];
                let sig = sign_request(key, "CheckIn", body, at);
                match verifier.verify(&key.public_key(), "CheckIn", body, &sig, now) {
                    Ok(()) => {
                        assert!(now.abs_diff(at) <= WINDOW);
                        accepted.push((signer, sig));
                    }
                    Err(Refusal::StaleTimestamp { .. }) => assert!(now.abs_diff(at) > WINDOW),
                    // Older than a request this signer had to forget, or no room for a new signer.
                    Err(Refusal::ReplayedNonce | Refusal::NonceCacheFull) => {}
                    Err(other) => panic!("genuine request refused: {other}"),
                }
            }
        }
        assert!(verifier.signers() <= CAPACITY, "{} signers tracked", verifier.signers());
        assert!(verifier.cached_nonces() <= PER_SIGNER * verifier.signers(), "nonces unbounded");
    }
}
