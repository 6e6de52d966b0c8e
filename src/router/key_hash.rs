//! [`KeyHasher`]: the classification cache's hash of a key text, keyed per process.
//!
//! Key texts come from clients, so the hash is keyed with random seeds drawn once per
//! [`KeyHasher`] (one per classifier): texts that collide cannot be computed offline. What a
//! collision can cost is bounded anyway: the cache compares the stored key text on every hit
//! (an equal hash with another text is a miss, never a wrong class), and a shard holds at most
//! its share of the cache's entries, so a flood of colliding texts can only slow lookups in one
//! shard and evict its entries.
//!
//! The hash runs over 16-byte blocks, each mixed in by one 64 x 64 -> 128-bit multiply of its
//! two words (each xored with a seed, the first also with the state so far) folded to 64 bits
//! (high half xor low half); the length and the first byte seed the state, and a last fold
//! spreads the state over all bits (the shard index and the map's buckets use the low bits, its
//! tags the high ones). For the 60-100 byte keys of an OLTP statement this is ~5 multiplies
//! where SipHash-1-3 (std's `RandomState`) spent ~200 instructions. This module owns no state
//! beyond the seeds and does not know what a key means.

use std::hash::{BuildHasher, RandomState};

use crate::keyed_hash::{fold_mul, tail, word};

/// Hashes `first` followed by `rest` (see the module map).
#[derive(Clone, Copy)]
pub(crate) struct KeyHasher {
    seeds: [u64; 4],
}

impl KeyHasher {
    /// A hasher with fresh random seeds (from the standard library's per-process random keys).
    pub(crate) fn new() -> Self {
        let random = RandomState::new();
        Self::with_seeds([0, 1, 2, 3].map(|i: u64| random.hash_one(i)))
    }

    /// A hasher with the given seeds (tests).
    pub(crate) const fn with_seeds(seeds: [u64; 4]) -> Self {
        Self { seeds }
    }

    /// The hash of the bytes `first`, then `rest`. Taking the first byte apart lets a caller
    /// hash a marked text (`=` + a statement) without building it.
    #[inline]
    pub(crate) fn hash(&self, first: u8, rest: &[u8]) -> u64 {
        let [s0, s1, s2, s3] = self.seeds;
        let mix = |state: u64, block: (u64, u64)| fold_mul(block.0 ^ s1 ^ state, block.1 ^ s2);
        // The length makes the overlapping and zero-padded tail reads below unambiguous.
        let mut state = s0 ^ ((rest.len() as u64) << 8) ^ u64::from(first);
        let mut blocks = rest.chunks_exact(16);
        for block in &mut blocks {
            state = mix(state, (word(block, 0), word(block, 8)));
        }
        if !blocks.remainder().is_empty() {
            state = mix(state, tail(rest));
        }
        fold_mul(state ^ s3, s0.rotate_left(32) ^ s1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed seeds, so the tests are deterministic (real seeds are random).
    const SEEDS: [[u64; 4]; 2] = [
        [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89],
        [0x4528_21e6_38d0_1377, 0xbe54_66cf_34e9_0c6c, 0xc0ac_29b7_c97c_50dd, 0x3f84_d5b5_b547_0917],
    ];

    #[test]
    fn every_byte_and_the_length_count() {
        for seeds in SEEDS {
            let h = KeyHasher::with_seeds(seeds);
            for len in 0..=80 {
                let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let base = h.hash(b'-', &text);
                assert_ne!(base, h.hash(b'=', &text), "first byte, {len}");
                assert_ne!(base, h.hash(b'-', &[text.as_slice(), b"\0"].concat()), "a zero byte more, {len}");
                for at in 0..len {
                    let mut changed = text.clone();
                    changed[at] ^= 0x20;
                    assert_ne!(base, h.hash(b'-', &changed), "byte {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn the_first_byte_apart_is_the_same_hash_for_the_same_text() {
        let h = KeyHasher::with_seeds(SEEDS[0]);
        assert_eq!(h.hash(b'=', b"SELECT 1"), h.hash(b'=', b"SELECT 1"));
        assert_ne!(h.hash(b'=', b"SELECT 1"), h.hash(b'S', b"=ELECT 1"));
    }

    #[test]
    fn seeds_change_the_hash() {
        let (a, b) = (KeyHasher::new(), KeyHasher::new());
        let text = b"SELECT abalance FROM pgbench_accounts WHERE aid = \x01;";
        assert_ne!(a.hash(b'-', text), b.hash(b'-', text));
    }

    #[test]
    fn low_bits_spread_over_shards() {
        // The cache's shard is the hash's low 4 bits: texts that differ in one place fill them
        // all about evenly.
        let h = KeyHasher::new();
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            let text = format!("SELECT * FROM t{i} WHERE id = \x01");
            counts[(h.hash(b'-', text.as_bytes()) % 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (700..1300).contains(&c)), "{counts:?}");
    }
}
