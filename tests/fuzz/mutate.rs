//! Input generation for the fuzz run: plain random bytes, or a valid seed message changed by a
//! few random edits that aim at what parsers trip on (length fields, terminators, separators).

use rand::rngs::StdRng;
use rand::Rng;

/// Bytes that delimit things in the protocol and in SCRAM.
const SPECIAL_BYTES: &[u8] = &[0, 0xff, 0x7f, 0x80, b'=', b',', b'n', b'r', b'p', b'c', b'y', b'S', b'Q'];
/// Integers that sit on the boundaries length checks compare against.
const SPECIAL_I32: &[i32] = &[0, 1, 3, 4, 5, 7, 8, 9, -1, -4, i32::MAX, i32::MIN, 10_000, 10_001, 1 << 20, 1 << 30];

/// Up to `max` random bytes.
pub fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max);
    (0..len).map(|_| rng.gen()).collect()
}

/// Random bytes (a fifth of the time) or a mutation of one of `seeds`.
pub fn input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.gen_bool(0.2) {
        return random_bytes(rng, 256);
    }
    let seed = &seeds[rng.gen_range(0..seeds.len())];
    mutate(rng, seed)
}

/// `seed` after one to four random edits.
pub fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        edit(rng, &mut v);
    }
    v
}

fn edit(rng: &mut StdRng, v: &mut Vec<u8>) {
    if v.is_empty() {
        v.push(rng.gen());
        return;
    }
    let at = rng.gen_range(0..v.len());
    match rng.gen_range(0..8) {
        0 => v[at] ^= 1 << rng.gen_range(0..8),
        1 => v[at] = SPECIAL_BYTES[rng.gen_range(0..SPECIAL_BYTES.len())],
        2 => v[at] = rng.gen(),
        3 => {
            let extra = random_bytes(rng, 16);
            v.splice(at..at, extra);
        }
        4 => {
            let end = (at + rng.gen_range(1..=16)).min(v.len());
            v.drain(at..end);
        }
        5 => v.truncate(at),
        6 => {
            let end = (at + rng.gen_range(1..=32)).min(v.len());
            let copy = v[at..end].to_vec();
            let to = rng.gen_range(0..=v.len());
            v.splice(to..to, copy);
        }
        _ => {
            // An integer where length fields live: the start, or after a one-byte tag.
            let field = rng.gen_range(0..=1);
            let value = SPECIAL_I32[rng.gen_range(0..SPECIAL_I32.len())];
            let value = if rng.gen_bool(0.3) { value.wrapping_add(v.len() as i32) } else { value };
            if v.len() >= field + 4 {
                v[field..field + 4].copy_from_slice(&value.to_be_bytes());
            }
        }
    }
}
