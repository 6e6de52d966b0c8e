//! Hostile load against a running sluice: the scenarios of "hold up under hostile load and
//! faults", sized by the caller.
//!
//! Two users: `tests/hostile.rs` runs each scenario scaled down and asserts the targets;
//! `examples/stress.rs` runs them full size and prints one figure per scenario.
//!
//! - [`canary`]: a real client (tokio-postgres) connecting and running `SELECT 1` every 200 ms,
//!   recording failures and latencies.
//! - [`wire`]: a raw-socket client: SCRAM login with a cached salted password (so a login costs the
//!   client a few HMACs, not PBKDF2), simple queries, and classifying what sluice answers.
//! - [`sockets`]: silent and half-sent startups held open until sluice closes them.
//! - [`malformed`]: a corpus of malformed inputs for every phase of a connection, and its run.
//! - [`flood`]: many clients logging in concurrently, each running one query.
//! - [`kill`]: `pg_terminate_backend()` rounds on the servers while clients run queries.
//! - [`ext`]: extended-protocol message builders for the raw client.
//! - [`chaos`]: good clients checking their answers while others vanish mid-protocol.
//!
//! Talks only to 127.0.0.1; every loop and every wait is bounded. Must not touch sluice's
//! internals: it sees the proxy only through its port, and the servers only through `psql`.

// The test and the stress tool each use most, but not all, of this module.
#![allow(dead_code)]

pub mod canary;
pub mod chaos;
mod corpus;
pub mod ext;
pub mod flood;
pub mod kill;
pub mod malformed;
pub mod sockets;
pub mod wire;

use std::time::Duration;

use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};

/// Where and as whom the scenarios connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// sluice's port on 127.0.0.1.
    pub port: u16,
    /// Login name (a SCRAM user of the proxy).
    pub user: String,
    /// Its password.
    pub password: String,
    /// Database to ask for.
    pub database: String,
}

impl Target {
    /// The local cluster's test user on `app`, through sluice on `port`.
    pub fn test_user(port: u16) -> Target {
        Target { port, user: TEST_USER.into(), password: TEST_PASSWORD.into(), database: TEST_DATABASE.into() }
    }
}

/// The `p`-th percentile (0..=100) of `samples` by the nearest-rank method; zero when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with one decimal, for printing.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples[..3], 99.0), Duration::from_millis(3));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }
}
