//! [`Latency`]: a Prometheus histogram that can also be read back (count, mean, p99) for the
//! admin console's `SHOW STATS` and the status page; `prometheus-client` histograms cannot.
//!
//! It is a [`DurationHistogram`] (relaxed atomic adds) read back through its snapshot: every
//! session of a node observes it once per unit, so it must not take a lock (the write lock of
//! `prometheus-client`'s `Histogram`, which this used to feed besides its own counters).

use std::time::Duration;

use super::histogram::DurationHistogram;

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

/// A histogram of unit durations with a readable summary. Clones share everything.
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: DurationHistogram,
}

impl Latency {
    /// A latency over `histogram` (the exported series, built with [`UNIT_BUCKETS_SECONDS`]).
    #[must_use]
    pub fn new(histogram: DurationHistogram) -> Self {
        Self { histogram }
    }

    /// A histogram with the unit buckets, for [`Latency::new`].
    #[must_use]
    pub fn unit_histogram() -> DurationHistogram {
        DurationHistogram::new(&UNIT_BUCKETS_SECONDS)
    }

    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        self.histogram.observe(d);
    }

    /// Count, mean and p99 so far.
    #[must_use]
    pub fn summary(&self) -> Summary {
        let (sum, count, buckets) = self.histogram.snapshot();
        if count == 0 {
            return Summary::default();
        }
        // The smallest bucket whose cumulative count reaches 99% of all.
        let target = count - count / 100;
        let mut seen = 0;
        let slot = buckets.iter().position(|(_, c)| {
            seen += c;
            seen >= target
        });
        // The last bucket (+Inf) has no bound to report.
        let p99_seconds = slot.filter(|&i| i + 1 < buckets.len()).map(|i| buckets[i].0);
        #[allow(clippy::cast_precision_loss)]
        let mean_seconds = sum / count as f64;
        Summary { count, mean_seconds, p99_seconds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_count_mean_and_p99_bucket() {
        let l = Latency::new(Latency::unit_histogram());
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
