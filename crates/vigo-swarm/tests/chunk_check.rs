//! The receiver's per-chunk checks ([`check_chunk`]): offset, size, then hash.

use sha2::{Digest, Sha256};
use vigo_proto::Chunk;
use vigo_swarm::fetch::{ChunkFit, check_chunk};

fn chunk(offset: u64, data: &[u8]) -> Chunk {
    Chunk { offset, data: data.to_vec(), sha256: Sha256::digest(data).to_vec() }
}

#[test]
fn chunk_checks_table() {
    let mut damaged = chunk(4, b"abcd");
    damaged.data[0] ^= 1;
    let cases: Vec<(&str, u64, u64, Chunk, ChunkFit)> = vec![
        ("in place", 8, 4, chunk(4, b"abcd"), ChunkFit::Next),
        ("empty chunk", 8, 4, chunk(4, b""), ChunkFit::Next),
        ("empty at the end", 8, 8, chunk(8, b""), ChunkFit::Next),
        ("behind", 8, 4, chunk(0, b"abcd"), ChunkFit::Misplaced),
        ("ahead", 8, 4, chunk(5, b"abc"), ChunkFit::Misplaced),
        ("one byte too many", 8, 4, chunk(4, b"abcde"), ChunkFit::Oversized),
        ("past the end already", 8, 9, chunk(9, b"a"), ChunkFit::Oversized),
        ("damaged", 8, 4, damaged, ChunkFit::Damaged),
        ("no hash", 8, 4, Chunk { offset: 4, data: b"ab".to_vec(), sha256: Vec::new() }, ChunkFit::Damaged),
    ];
    for (name, size, next, c, want) in cases {
        assert_eq!(check_chunk(size, next, &c), want, "{name}");
    }
}
