//! A long random run over every parser a client can reach before and after login: the startup
//! parser, the framer, the message decoders, and the server side of the SCRAM exchange. Each
//! must return (an error is fine) on any input, never panic, and keep its invariants (frames
//! cover the input exactly, parsed parameters hold no NUL...).
//!
//! Inputs are a mix of plain random bytes and mutations (bit flips, boundary integers over
//! length fields, insertions, deletions, truncations, duplications) of valid messages, so most
//! of them get past the first length check and into the layouts behind it.
//!
//! The full run is ignored by default (about a minute in release):
//!
//! ```sh
//! cargo test --release --test fuzz_long -- --ignored --nocapture
//! FUZZ_INPUTS=5000000 FUZZ_SEED=42 cargo test --release --test fuzz_long -- --ignored --nocapture
//! ```
//!
//! `FUZZ_INPUTS` is the number of inputs per target (default 10,000,000, four targets);
//! `FUZZ_SEED` makes a run repeatable (the seed is printed). A panic names the target, the
//! seed and the input in hex. A short smoke run of the same code is part of the normal tests.

#[path = "fuzz/mutate.rs"]
mod mutate;
#[path = "fuzz/targets.rs"]
mod targets;

use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use targets::Target;

/// Inputs per target in the long run, unless `FUZZ_INPUTS` says otherwise.
const LONG_INPUTS: u64 = 10_000_000;
/// Inputs per target in the smoke run that CI runs.
const SMOKE_INPUTS: u64 = 20_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Run every target `per_target` times from `seed`; returns the inputs run.
fn run_all(per_target: u64, seed: u64) -> u64 {
    let mut total = 0;
    for (i, target) in Target::ALL.iter().enumerate() {
        let started = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
        let mut state = targets::State::new();
        for n in 0..per_target {
            let fed = target.run_one(&mut rng, &mut state);
            if let Err(failure) = fed {
                panic!("{target:?} failed on input {n} (seed {seed}):\n{failure}");
            }
        }
        total += per_target;
        println!("{target:?}: {per_target} inputs in {:.1?}; {:?}", started.elapsed(), state.depth);
    }
    total
}

#[test]
fn every_parser_survives_a_short_random_run() {
    let seed = env_u64("FUZZ_SEED").unwrap_or(5);
    let ran = run_all(SMOKE_INPUTS, seed);
    assert_eq!(ran, SMOKE_INPUTS * Target::ALL.len() as u64);
}

#[test]
#[ignore = "long: run with `cargo test --release --test fuzz_long -- --ignored --nocapture`"]
fn every_parser_survives_ten_million_random_inputs_each() {
    let per_target = env_u64("FUZZ_INPUTS").unwrap_or(LONG_INPUTS);
    let seed = env_u64("FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    println!("fuzz_long: seed {seed}, {per_target} inputs per target");
    let started = Instant::now();
    let ran = run_all(per_target, seed);
    println!("fuzz_long: {ran} inputs, no panic, in {:.1?}", started.elapsed());
    assert!(ran >= per_target);
}
