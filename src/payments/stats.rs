//! The payment flow's own statistics: Stripe requests by kind, and the daemon's own
//! latencies (job taken from the reader's queue → `process_payment_intent` sent; reader
//! outcome seen → status recorded). Read by `readerd bench`, and always on, so bounded: the
//! latencies go to fixed-size [`LatencyHistogram`]s, and the marks kept for payments on
//! their way are at most [`MAX_MARKS`] (when full, the least recently marked half goes, so a
//! payment that never settles cannot hold its mark for ever).

use crate::metrics::LatencyHistogram;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Payments on their way whose marks are kept. Far above the payments in flight at once (one
/// per reader); a mark dropped early only costs that payment's latency sample.
pub const MAX_MARKS: usize = 16_384;

#[derive(Clone, Debug)]
struct Marks {
    /// The last time this payment was marked.
    touched: Instant,
    accepted: Option<Instant>,
    reader_done: Option<Instant>,
}

/// Counters and latency distributions.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Stripe requests sent by the flow, by kind (`create_payment_intent`, …).
    pub requests: BTreeMap<&'static str, u64>,
    /// Accepted → `process_payment_intent` sent.
    pub to_dispatch: LatencyHistogram,
    /// Reader action seen finished → status recorded.
    pub to_outcome: LatencyHistogram,
    /// Payments that reached an outcome (final, declined or authorised).
    pub settled: u64,
    marks: HashMap<String, Marks>,
}

impl Stats {
    pub fn request(&mut self, kind: &'static str) {
        *self.requests.entry(kind).or_default() += 1;
    }
    pub fn accepted(&mut self, id: &str, at: Instant) {
        if !self.marks.contains_key(id) && self.marks.len() >= MAX_MARKS {
            self.make_room();
        }
        let m = self.marks.entry(id.to_string()).or_insert(Marks {
            touched: at,
            accepted: None,
            reader_done: None,
        });
        m.touched = at;
        m.accepted = Some(at);
    }
    pub fn dispatching(&mut self, id: &str, at: Instant) {
        if let Some(m) = self.marks.get_mut(id) {
            m.touched = at;
            if let Some(a) = m.accepted.take() {
                self.to_dispatch.record(at.saturating_duration_since(a));
            }
        }
    }
    pub fn reader_done(&mut self, id: &str, at: Instant) {
        if let Some(m) = self.marks.get_mut(id) {
            m.touched = at;
            m.reader_done.get_or_insert(at);
        }
    }
    pub fn outcome(&mut self, id: &str, at: Instant) {
        self.settled += 1;
        if let Some(m) = self.marks.remove(id) {
            if let Some(r) = m.reader_done {
                self.to_outcome.record(at.saturating_duration_since(r));
            }
        }
    }

    /// Drops the least recently marked half of the marks.
    fn make_room(&mut self) {
        let mut times: Vec<Instant> = self.marks.values().map(|m| m.touched).collect();
        let mid = times.len() / 2;
        let (_, cutoff, _) = times.select_nth_unstable(mid);
        let cutoff = *cutoff;
        self.marks.retain(|_, m| m.touched > cutoff);
    }
}

/// The `q` quantile (0..=1) of a latency distribution, `None` when empty.
pub fn quantile(samples: &LatencyHistogram, q: f64) -> Option<Duration> {
    samples.quantile(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(d: Option<Duration>, want: Duration) {
        let (got, want) = (d.unwrap().as_secs_f64(), want.as_secs_f64());
        assert!((got - want).abs() <= want * 0.02, "{got} s, want {want} s");
    }

    #[test]
    fn latencies_are_measured_between_marks() {
        let t0 = Instant::now();
        let mut s = Stats::default();
        s.accepted("p", t0);
        s.dispatching("p", t0 + Duration::from_millis(3));
        s.dispatching("p", t0 + Duration::from_millis(9));
        s.reader_done("p", t0 + Duration::from_millis(10));
        s.outcome("p", t0 + Duration::from_millis(12));
        assert_eq!(s.to_dispatch.count(), 1);
        assert_eq!(
            quantile(&s.to_dispatch, 0.5),
            Some(Duration::from_millis(3))
        );
        assert_eq!(s.to_outcome.count(), 1);
        assert_eq!(quantile(&s.to_outcome, 0.5), Some(Duration::from_millis(2)));
        assert!(s.marks.is_empty());
        let mut h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        near(quantile(&h, 0.5), Duration::from_millis(51));
        near(quantile(&h, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&LatencyHistogram::default(), 0.5), None);
    }

    /// What the structure holds on the heap: room in the marks' table (entries plus what
    /// it can still take before it must grow) and the histograms' buckets.
    fn footprint(s: &Stats) -> (usize, usize, usize) {
        (
            s.marks.capacity(),
            s.to_dispatch.bucket_count(),
            s.to_outcome.bucket_count(),
        )
    }

    #[test]
    fn memory_stays_bounded_however_many_payments_pass() {
        const N: u32 = 200_000;
        let t0 = Instant::now();
        let mut s = Stats::default();
        // The largest footprint seen while the first 3 × MAX_MARKS payments pass.
        let mut first_lot = (0, 0, 0);
        for i in 0..N {
            let at = t0 + Duration::from_micros(u64::from(i) * 10);
            let id = format!("pay_{i}");
            s.accepted(&id, at);
            // Every third payment never settles (its daemon moved on, its outcome went
            // unseen): its mark must not stay for ever.
            if i % 3 != 0 {
                s.dispatching(&id, at + Duration::from_millis(2));
                s.reader_done(&id, at + Duration::from_millis(500));
                s.outcome(&id, at + Duration::from_millis(501));
            }
            assert!(s.marks.len() <= MAX_MARKS);
            if i < 3 * MAX_MARKS as u32 {
                first_lot = first_lot.max(footprint(&s));
            } else {
                // Nothing grows after that, however many more payments pass.
                let now = footprint(&s);
                assert!(now.0 <= first_lot.0 && now.1 == first_lot.1 && now.2 == first_lot.2);
            }
        }
        assert_eq!((first_lot.1, first_lot.2), (1024, 1024));
        let settled = u64::from(N) - u64::from(N).div_ceil(3);
        assert_eq!(s.settled, settled);
        assert_eq!(s.to_dispatch.count(), settled);
        assert_eq!(s.to_outcome.count(), settled);
        near(quantile(&s.to_dispatch, 0.99), Duration::from_millis(2));
        near(quantile(&s.to_outcome, 0.5), Duration::from_millis(1));
        // The most recent payment that did not settle still has its mark.
        assert!(s.marks.contains_key(&format!("pay_{}", N - 2)));
    }
}
