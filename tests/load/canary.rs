//! The canary: a well-behaved application that opens a new connection every 200 ms, logs in
//! with SCRAM and runs `SELECT 1`. Every attempt that fails or takes longer than
//! [`ATTEMPT_TIMEOUT`] is a failure; the latency of each attempt (connect + login + query) is
//! recorded.
//!
//! It speaks through [`RawConn`] with its own salt cache, not tokio-postgres: a debug-built
//! client computes PBKDF2 in tens of milliseconds of CPU per login, which on a loaded 2-core
//! machine would be the canary measuring itself. tokio-postgres is exercised by `kill`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use sluice::auth::SaltCache;

use super::wire::{RawConn, WireError};
use super::{ms, percentile, Target};

/// Time between the starts of two attempts.
pub const EVERY: Duration = Duration::from_millis(200);
/// An attempt that takes longer than this counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many of the slowest attempts a report names.
const SLOWEST_KEPT: usize = 3;

/// What the canary saw.
#[derive(Clone, Debug, Default)]
pub struct CanaryReport {
    /// Attempts made.
    pub attempts: usize,
    /// One line per failed attempt: when (since start) and why.
    pub failures: Vec<String>,
    /// Latency of each successful attempt.
    pub latencies: Vec<Duration>,
    /// When the canary started.
    pub started: Option<Instant>,
    /// The slowest successful attempts: (start since the canary started, latency), slowest first.
    pub slowest: Vec<(Duration, Duration)>,
}

impl CanaryReport {
    /// 99th percentile of successful attempts' latency.
    pub fn p99(&self) -> Duration {
        percentile(&self.latencies, 99.0)
    }

    /// The slowest successful attempt.
    pub fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    /// One line for a report.
    pub fn summary(&self) -> String {
        let slowest: Vec<String> = self.slowest.iter().map(|(at, took)| format!("{} at {at:.1?}", ms(*took))).collect();
        format!(
            "canary: {} attempts, {} failures, p50 {}, p99 {}, max {}; slowest: {}",
            self.attempts,
            self.failures.len(),
            ms(percentile(&self.latencies, 50.0)),
            ms(self.p99()),
            ms(self.max()),
            slowest.join(", ")
        )
    }

    fn note_success(&mut self, at: Duration, took: Duration) {
        self.latencies.push(took);
        self.slowest.push((at, took));
        self.slowest.sort_by_key(|s| std::cmp::Reverse(s.1));
        self.slowest.truncate(SLOWEST_KEPT);
    }
}

/// A running canary; [`Canary::stop`] ends it and returns its report.
pub struct Canary {
    stop: watch::Sender<bool>,
    task: JoinHandle<CanaryReport>,
    attempts: Arc<AtomicUsize>,
}

impl Canary {
    /// Start attempting every [`EVERY`] against `target`.
    pub fn start(target: Target) -> Canary {
        let (stop, rx) = watch::channel(false);
        let attempts = Arc::new(AtomicUsize::new(0));
        Canary { stop, task: tokio::spawn(run(target, rx, Arc::clone(&attempts))), attempts }
    }

    /// Recorded attempts so far (finished or not).
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Stop after the attempt in progress and return what was seen.
    pub async fn stop(self) -> CanaryReport {
        let _ = self.stop.send(true);
        self.task.await.expect("the canary task panicked")
    }
}

async fn run(target: Target, mut stop: watch::Receiver<bool>, attempts: Arc<AtomicUsize>) -> CanaryReport {
    let started = Instant::now();
    let mut report = CanaryReport { started: Some(started), ..CanaryReport::default() };
    let salts = SaltCache::new();
    // The first login computes the salted password (PBKDF2) on this side: not sluice's time.
    let _ = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(&target, &salts)).await;
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return report,
        }
        report.attempts += 1;
        attempts.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(&target, &salts)).await {
            Ok(Ok(())) => report.note_success(t0 - started, t0.elapsed()),
            Ok(Err(e)) => report.failures.push(format!("at {:?}: {e}", t0 - started)),
            Err(_) => report.failures.push(format!("at {:?}: no answer within {ATTEMPT_TIMEOUT:?}", t0 - started)),
        }
    }
}

async fn attempt(t: &Target, salts: &SaltCache) -> Result<(), WireError> {
    let mut conn = RawConn::connect(t.port).await?;
    conn.login(t, salts).await?;
    conn.query("SELECT 1").await?;
    conn.terminate().await;
    Ok(())
}
