//! [`KeyedState`]: the hash of the maps read on every execution of a prepared statement (the
//! statements a server connection has, by text and types; a session's statements, by the
//! client's name) and at every login (credentials by user, pools by node, database and user,
//! classifiers by database).
//!
//! Their keys come from clients, so the hash is keyed with random seeds of its own per map:
//! colliding keys cannot be computed offline, and a map's entries are bounded anyway
//! (`pool.max_prepared_statements` per connection; a session only slows its own map).
//!
//! Where the seeds come from: each thread draws two secret words once (from std's
//! `RandomState`, whose keys come from the operating system's random source) and gives each
//! new map the fold of their product with a counter it steps ([`KeyedState::new`]), as std's
//! `RandomState` steps its own per-thread keys. What keeps collisions from being computed is
//! unchanged: a map's seeds depend on 128 secret bits nobody outside the process sees, and two
//! maps' seeds differ. Drawing them per map (two SipHash-1-3 runs) cost ~290 instructions,
//! and sessions make a map as they run their first unit. Each `write` mixes 16-byte blocks in by one 64 x 64 -> 128-bit
//! multiply of its two words (each xored with a seed, the first also with the state so far)
//! folded to 64 bits, its length seeding the block chain; `finish` folds once more so that all
//! bits depend on every block (hashbrown takes buckets from the low bits, tags from the high
//! ones). The block primitives ([`fold_mul`], [`word`], [`tail`]) are shared with the
//! classification cache's hash (`router::key_hash`). SipHash-1-3 (std's `RandomState`) spent ~460 instructions on a pgbench statement's
//! key and ~170 on a 3-byte name; this is a few multiplies. The seeds take 16 bytes, as
//! `RandomState`'s keys do. Nothing here knows what a key means.

use std::hash::{BuildHasher, Hasher, RandomState};

/// Builds [`KeyedHasher`]s with this map's seeds.
#[derive(Clone, Copy)]
pub struct KeyedState {
    seeds: [u64; 2],
}

impl KeyedState {
    /// Seeds of their own: this thread's secret words mixed with the thread's next count (see
    /// the module map). Each seed is the folded product of the two words, each xored with the
    /// count or a constant, so the count's bits spread over the whole seed and no seed shows a
    /// secret word plainly.
    #[must_use]
    pub fn new() -> Self {
        thread_local! {
            /// This thread's two secret words and the count of states made from them.
            static SECRET: std::cell::Cell<[u64; 3]> = std::cell::Cell::new({
                let random = RandomState::new();
                [random.hash_one(0_u64), random.hash_one(1_u64), 0]
            });
        }
        SECRET.with(|secret| {
            let [k0, k1, count] = secret.get();
            secret.set([k0, k1, count.wrapping_add(1)]);
            let seeds = [
                fold_mul(k0 ^ count, k1 ^ 0x243f_6a88_85a3_08d3),
                fold_mul(k1 ^ count.rotate_left(32), k0 ^ 0x1319_8a2e_0370_7344),
            ];
            Self { seeds }
        })
    }
}

impl Default for KeyedState {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for KeyedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seeds are what keeps collisions from being computed: not printed.
        f.write_str("KeyedState")
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher { state: self.seeds[0].rotate_left(17), seeds: self.seeds }
    }
}

/// One key's hash in progress (see the module map).
pub struct KeyedHasher {
    state: u64,
    seeds: [u64; 2],
}

impl KeyedHasher {
    #[inline]
    fn mix(&mut self, a: u64, b: u64) {
        let [s0, s1] = self.seeds;
        self.state = fold_mul(a ^ s0 ^ self.state, b ^ s1);
    }
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length first: the overlapping reads of the last block are then unambiguous.
        self.state ^= (bytes.len() as u64).rotate_left(32);
        let mut blocks = bytes.chunks_exact(16);
        for block in &mut blocks {
            self.mix(word(block, 0), word(block, 8));
        }
        if !blocks.remainder().is_empty() {
            let (a, b) = tail(bytes);
            self.mix(a, b);
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n), 1);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n, 8);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64, 8);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let [s0, s1] = self.seeds;
        fold_mul(self.state ^ s1, s0.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15)
    }
}

/// The 128-bit product of `a` and `b`, its halves xored.
#[inline]
pub(crate) fn fold_mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// The little-endian word at `at` (`bytes` holds at least `at + 8` bytes).
#[inline]
pub(crate) fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The last block of `bytes` (1 to 15 bytes not in a whole block, `bytes` not empty) as two
/// words: the last 16 bytes if there are that many (overlapping the blocks before), else the
/// bytes read in overlapping pieces with zeros above them. Loads only: a zero-padded copy cost
/// a `memset` and a `memcpy` call per write. (The classification cache's hash in
/// `router::key_hash` reads its tail the same way; the router may not depend on the backend.)
#[inline]
pub(crate) fn tail(bytes: &[u8]) -> (u64, u64) {
    let n = bytes.len();
    if n >= 16 {
        (word(bytes, n - 16), word(bytes, n - 8))
    } else if n >= 8 {
        (word(bytes, 0), word(bytes, n - 8))
    } else if n >= 4 {
        let half = |at: usize| u64::from(u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]));
        (half(0), half(n - 4))
    } else {
        let (a, b, c) = (bytes[0], bytes[n / 2], bytes[n - 1]);
        (u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hash(state: &KeyedState, bytes: &[u8]) -> u64 {
        state.hash_one(bytes)
    }

    #[test]
    fn every_byte_and_the_length_count() {
        let state = KeyedState::new();
        for len in 0..=80 {
            let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let base = hash(&state, &text);
            assert_eq!(base, hash(&state, &text.clone()), "the same bytes, {len}");
            assert_ne!(base, hash(&state, &[text.as_slice(), b"\0"].concat()), "a zero byte more, {len}");
            for at in 0..len {
                let mut changed = text.clone();
                changed[at] ^= 0x20;
                assert_ne!(base, hash(&state, &changed), "byte {at} of {len}");
            }
        }
    }

    #[test]
    fn split_between_fields_counts() {
        // A key of two byte strings (a statement's text and types): where one ends matters.
        let state = KeyedState::new();
        let two = |a: &[u8], b: &[u8]| state.hash_one((a, b));
        assert_ne!(two(b"SELECT 1", b"\0\0"), two(b"SELECT 1\0", b"\0"));
        assert_ne!(two(b"", b"ab"), two(b"ab", b""));
    }

    #[test]
    fn seeds_change_the_hash() {
        let (a, b) = (KeyedState::new(), KeyedState::new());
        let text = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        assert_ne!(hash(&a, text), hash(&b, text));
    }

    #[test]
    fn every_state_has_seeds_of_its_own() {
        // Made in a row on one thread (the count steps) and on other threads (other words).
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let seeds = KeyedState::new().seeds;
            assert!(seen.insert(seeds[0]) && seen.insert(seeds[1]), "a seed came twice");
        }
        let others: Vec<_> = (0..4).map(|_| std::thread::spawn(|| KeyedState::new().seeds)).collect();
        for seeds in others.into_iter().map(|t| t.join().unwrap()) {
            assert!(seen.insert(seeds[0]) && seen.insert(seeds[1]), "another thread's seed came twice");
        }
        // Consecutive states' seeds differ in about half their bits, not in the count's few.
        let (a, b) = (KeyedState::new().seeds, KeyedState::new().seeds);
        for (x, y) in a.iter().zip(&b) {
            assert!((8..=56).contains(&(x ^ y).count_ones()), "{x:#x} {y:#x}");
        }
    }

    #[test]
    fn low_and_high_bits_spread() {
        // hashbrown picks the bucket from the low bits and the tag from the top 7.
        let state = KeyedState::new();
        let (mut low, mut high) = ([0_u32; 16], [0_u32; 16]);
        for i in 0..16_000 {
            let h = state.hash_one(format!("P_{i}"));
            low[(h & 15) as usize] += 1;
            high[(h >> 60) as usize] += 1;
        }
        for counts in [low, high] {
            assert!(counts.iter().all(|&c| (700..1300).contains(&c)), "{counts:?}");
        }
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map: HashMap<String, usize, KeyedState> = HashMap::default();
        for i in 0..1000 {
            map.insert(format!("stmt_{i}"), i);
        }
        assert!((0..1000).all(|i| map.get(&format!("stmt_{i}")) == Some(&i)));
        assert_eq!(map.get("stmt_1000"), None);
    }
}
