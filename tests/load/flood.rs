//! A login flood: many clients, a bounded number in flight, each logging in with SCRAM, running
//! `SELECT 1` and leaving. Every client must succeed or get a proper error; none may hang.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sluice::auth::SaltCache;

use super::wire::{RawConn, WireError};
use super::{ms, percentile, Target};

/// How one flood client ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// Logged in and ran its query; the login took this long.
    Ok(Duration),
    /// Got an error (a proper ErrorResponse or a socket error).
    Error(WireError),
    /// Nothing within the per-client timeout.
    Hung,
}

/// The flood's outcome.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    /// Clients started.
    pub clients: usize,
    /// Clients that logged in and got their answer.
    pub ok: usize,
    /// Errors by SQLSTATE (or `io`, `protocol`).
    pub errors: BTreeMap<String, usize>,
    /// One example message per error key.
    pub examples: BTreeMap<String, String>,
    /// Clients that got nothing within the per-client timeout.
    pub hung: usize,
    /// From the first connect to the last client's end.
    pub elapsed: Duration,
    /// Login latency (connect to ReadyForQuery) of the successful clients.
    pub logins: Vec<Duration>,
}

impl FloodReport {
    /// Clients that got an error.
    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// Successful logins (each with its query) per second over the whole flood.
    pub fn logins_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// One line for a report.
    pub fn summary(&self) -> String {
        format!(
            "login flood: {} clients: {} ok, {} errors {:?}, {} hung in {:.2} s = {:.0} SCRAM logins/s; \
             login p50 {}, p99 {}",
            self.clients,
            self.ok,
            self.error_count(),
            self.errors,
            self.hung,
            self.elapsed.as_secs_f64(),
            self.logins_per_second(),
            ms(percentile(&self.logins, 50.0)),
            ms(percentile(&self.logins, 99.0)),
        )
    }
}

/// Run `clients` clients, at most `in_flight` at a time; a client that has not finished within
/// `per_client` (from its connect) counts as hung.
pub async fn flood(t: &Target, clients: usize, in_flight: usize, per_client: Duration) -> FloodReport {
    let salts = SaltCache::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let started = Instant::now();
    let tasks = (0..clients).map(|_| {
        let (t, salts, gate) = (t.clone(), salts.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            let _turn = gate.acquire().await.expect("the gate is never closed");
            match tokio::time::timeout(per_client, one_client(&t, &salts)).await {
                Ok(Ok(login)) => End::Ok(login),
                Ok(Err(e)) => End::Error(e),
                Err(_) => End::Hung,
            }
        })
    });
    let ends = join_all(tasks).await;
    let mut report = FloodReport { clients, elapsed: started.elapsed(), ..FloodReport::default() };
    for end in ends {
        match end.expect("a flood client panicked") {
            End::Ok(login) => {
                report.ok += 1;
                report.logins.push(login);
            }
            End::Error(e) => {
                *report.errors.entry(e.key()).or_default() += 1;
                report.examples.entry(e.key()).or_insert_with(|| e.to_string());
            }
            End::Hung => report.hung += 1,
        }
    }
    report
}

async fn one_client(t: &Target, salts: &SaltCache) -> Result<Duration, WireError> {
    let started = Instant::now();
    let mut conn = RawConn::connect(t.port).await?;
    conn.login(t, salts).await?;
    let login = started.elapsed();
    conn.query("SELECT 1").await?;
    conn.terminate().await;
    Ok(login)
}
