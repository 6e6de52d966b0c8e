//! [`Latency`]: a Prometheus histogram that can also be read back (count, mean, p99) for the
//! admin console's `SHOW STATS` and the status page; `prometheus-client` histograms cannot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds, 500 µs to 30 s (a unit is a statement or, in a transaction, the transaction).
pub const UNIT_BUCKETS_SECONDS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

/// What [`Latency::summary`] reads back.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Observations.
    pub count: u64,
    /// Mean, in seconds (0 without observations).
    pub mean_seconds: f64,
    /// The upper bound of the bucket holding the 99th percentile (`None`: beyond the last
    /// bound, or no observations).
    pub p99_seconds: Option<f64>,
}

#[derive(Debug, Default)]
struct Readback {
    /// One more than the bounds: the last counts everything beyond them.
    buckets: [AtomicU64; UNIT_BUCKETS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
}

/// A histogram with a readable copy of its buckets. Clones share everything.
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram,
    readback: Arc<Readback>,
}

impl Latency {
    /// A latency whose exported half is `histogram` (built with [`UNIT_BUCKETS_SECONDS`]).
    #[must_use]
    pub fn new(histogram: Histogram) -> Self {
        Self { histogram, readback: Arc::default() }
    }

    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        self.histogram.observe(seconds);
        let slot = UNIT_BUCKETS_SECONDS.iter().position(|b| seconds <= *b).unwrap_or(UNIT_BUCKETS_SECONDS.len());
        self.readback.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.readback.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Count, mean and p99 so far.
    #[must_use]
    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self.readback.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return Summary::default();
        }
        let sum = self.readback.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        // The smallest bucket whose cumulative count reaches 99% of all.
        let target = count - count / 100;
        let mut seen = 0;
        let slot = counts.iter().position(|c| {
            seen += c;
            seen >= target
        });
        let p99_seconds = slot.and_then(|i| UNIT_BUCKETS_SECONDS.get(i).copied());
        Summary { count, mean_seconds: sum / count as f64, p99_seconds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_count_mean_and_p99_bucket() {
        let l = Latency::new(Histogram::new(UNIT_BUCKETS_SECONDS));
        assert_eq!(l.summary(), Summary::default());
        for _ in 0..99 {
            l.observe(Duration::from_micros(300));
        }
        l.observe(Duration::from_millis(200));
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((s.mean_seconds - (99.0 * 0.0003 + 0.2) / 100.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.p99_seconds, Some(0.0005));
        l.observe(Duration::from_secs(40));
        l.observe(Duration::from_secs(40));
        assert_eq!(l.summary().p99_seconds, None, "beyond the last bound");
    }
}
