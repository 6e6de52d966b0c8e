//! [`DurationHistogram`]: a Prometheus histogram of durations whose `observe` is two relaxed
//! atomic adds.
//!
//! `prometheus_client`'s own `Histogram` takes a write lock on every observation; the checkout
//! histogram is observed once per unit by every session of a node, so that lock was shared by
//! all of them. Here each bucket is its own counter and the sum is kept in nanoseconds; a scrape
//! reads them without stopping writers (the count is the sum of the buckets, so the two always
//! agree; the sum may be one observation ahead or behind, which Prometheus tolerates).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A histogram of durations with fixed upper bounds in seconds; clones share the series.
#[derive(Clone, Debug)]
pub struct DurationHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds in seconds, ascending; one more bucket (+Inf) follows them.
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// A histogram with these ascending upper bounds (seconds) plus +Inf.
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self { inner: Arc::new(Inner { bounds, buckets, sum_nanos: AtomicU64::new(0) }) }
    }

    /// Record one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // The first bucket whose bound is >= the value (the last one, +Inf, otherwise).
        let i = self.inner.bounds.partition_point(|&b| b < secs);
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// [`DurationHistogram::observe`] of `Duration::ZERO`: the same bucket (the first whose
    /// bound is >= 0) and the same sum, with one atomic add instead of two and no conversion.
    pub fn observe_zero(&self) {
        let i = self.inner.bounds.iter().take_while(|&&b| b < 0.0).count();
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// (sum in seconds, count, (upper bound, count in that bucket) per bucket, +Inf last).
    #[must_use]
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let bounds = self.inner.bounds.iter().copied().chain(std::iter::once(f64::MAX));
        let buckets: Vec<(f64, u64)> =
            bounds.zip(self.inner.buckets.iter()).map(|(b, n)| (b, n.load(Ordering::Relaxed))).collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        // Nanoseconds to seconds: precision loss only past 2^53 ns (104 days of total wait).
        #[allow(clippy::cast_precision_loss)]
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let h = DurationHistogram::new(BOUNDS);
        // (observed, bucket index)
        let cases = [(0, 0), (1_000_000, 0), (1_000_001, 1), (10_000_000, 1), (50_000_000, 2), (2_000_000_000, 3)];
        for (nanos, _) in cases {
            h.observe(Duration::from_nanos(nanos));
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, cases.len() as u64);
        let mut want = [0u64; 4];
        for (_, i) in cases {
            want[i] += 1;
        }
        assert_eq!(buckets.iter().map(|b| b.1).collect::<Vec<_>>(), want);
        assert_eq!(buckets[3].0, f64::MAX);
        let total: u64 = cases.iter().map(|c| c.0).sum();
        assert!((sum - total as f64 / 1e9).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn a_zero_observed_as_such_is_a_zero_observed() {
        for bounds in [BOUNDS, &[0.0, 0.5][..], &[][..]] {
            let (a, b) = (DurationHistogram::new(bounds), DurationHistogram::new(bounds));
            a.observe(Duration::ZERO);
            a.observe(Duration::from_millis(3));
            b.observe_zero();
            b.observe(Duration::from_millis(3));
            assert_eq!(a.snapshot(), b.snapshot(), "{bounds:?}");
        }
    }

    #[test]
    fn clones_share_the_series_across_threads() {
        let h = DurationHistogram::new(BOUNDS);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| h.observe(Duration::from_micros(5))))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(h.snapshot().1, 4000);
    }
}
