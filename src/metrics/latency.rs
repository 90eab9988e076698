//! A bounded distribution of durations with quantiles: what the payment flow's own
//! statistics (`payments::stats`, read by `readerd bench`) are built on.

use std::time::Duration;

/// Sub-buckets per power of two of microseconds: each bucket is at most 1/32 of its lower
/// bound wide, so a quantile read at a bucket's middle is within about 1.6 % of the truth.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets up to 2^36 µs (about 19 hours); longer durations count in the last one.
const LATENCY_BUCKETS: usize = ((36 - SUB_BITS as usize) << SUB_BITS) + SUB as usize;

/// A distribution of durations in a fixed set of log-linear buckets (exact below 32 µs,
/// then 32 per power of two), with quantiles: its size never depends on how many durations
/// it counted. Prometheus' fixed buckets are too coarse for a p99, and a sketch would be a
/// second crate for what 1,024 counters do.
#[derive(Clone)]
pub struct LatencyHistogram {
    buckets: Box<[u64]>,
    count: u64,
    min: Duration,
    max: Duration,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: vec![0; LATENCY_BUCKETS].into_boxed_slice(),
            count: 0,
            min: Duration::MAX,
            max: Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max)
            .finish()
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[latency_bucket(us)] += 1;
        self.count += 1;
        self.min = self.min.min(d);
        self.max = self.max.max(d);
    }

    /// The number of buckets: the same from the first duration to the last.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `q` quantile (0..=1), nearest rank, read at the middle of its bucket and kept
    /// between the shortest and the longest duration recorded (the longest answers for the
    /// last, open-ended bucket); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen > rank && i < LATENCY_BUCKETS - 1 {
                let (low, width) = latency_bucket_bounds(i);
                let mid = Duration::from_micros(low + width / 2);
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// The bucket of a duration of `us` microseconds.
fn latency_bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    let shift = exp - SUB_BITS;
    let i = ((shift as usize) << SUB_BITS) + (us >> shift) as usize;
    i.min(LATENCY_BUCKETS - 1)
}

/// A bucket's lower bound and width, microseconds.
fn latency_bucket_bounds(i: usize) -> (u64, u64) {
    if (i as u64) < SUB {
        return (i as u64, 1);
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let mantissa = (i as u64 & (SUB - 1)) + SUB;
    (mantissa << shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_tile_the_range() {
        let mut next = 0;
        for i in 0..LATENCY_BUCKETS {
            let (low, width) = latency_bucket_bounds(i);
            assert_eq!(low, next, "bucket {i}");
            assert_eq!(latency_bucket(low), i);
            assert_eq!(latency_bucket(low + width - 1), i);
            // Never wider than 1/32 of its lower bound (above the exact buckets).
            assert!(low < SUB || width * SUB <= low, "bucket {i}");
            next = low + width;
        }
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn latency_quantiles_stay_within_their_bucket() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        h.record(Duration::from_micros(3001));
        assert_eq!(h.quantile(0.5), Some(Duration::from_micros(3001)));
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let near = |d: Option<Duration>, want_ms: f64| {
            let got = d.unwrap().as_secs_f64() * 1000.0;
            assert!(
                (got - want_ms).abs() <= want_ms * 0.02,
                "{got} ms, want {want_ms}"
            );
        };
        near(h.quantile(0.5), 51.0);
        near(h.quantile(0.99), 99.0);
        near(h.quantile(1.0), 100.0);
        near(h.quantile(0.0), 1.0);
        assert_eq!(h.count(), 100);
        assert!(h.quantile(1.0).unwrap() <= Duration::from_millis(100));
        // A duration beyond the last bucket still counts, and the maximum caps the answer.
        h.record(Duration::from_secs(200_000));
        assert_eq!(h.quantile(1.0), Some(Duration::from_secs(200_000)));
        near(h.quantile(0.5), 51.0);
    }
}
