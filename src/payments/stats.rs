//! In-process counters of the payment flow: Stripe requests by kind and the daemon's own
//! latencies (request to dispatch; reader outcome to recorded status). Read by the benchmark
//! and cheap enough to keep on always.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default)]
struct Marks {
    accepted: Option<Instant>,
    reader_done: Option<Instant>,
}

/// Counters and latency samples.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Stripe requests sent by the flow, by kind (`create_payment_intent`, …).
    pub requests: BTreeMap<&'static str, u64>,
    /// Accepted → `process_payment_intent` sent.
    pub to_dispatch: Vec<Duration>,
    /// Reader action seen finished → status recorded.
    pub to_outcome: Vec<Duration>,
    /// Payments that reached an outcome (final, declined or authorised).
    pub settled: u64,
    marks: HashMap<String, Marks>,
}

impl Stats {
    pub fn request(&mut self, kind: &'static str) {
        *self.requests.entry(kind).or_default() += 1;
    }
    pub fn accepted(&mut self, id: &str, at: Instant) {
        self.marks.entry(id.to_string()).or_default().accepted = Some(at);
    }
    pub fn dispatching(&mut self, id: &str, at: Instant) {
        if let Some(a) = self.marks.get_mut(id).and_then(|m| m.accepted.take()) {
            self.to_dispatch.push(at.saturating_duration_since(a));
        }
    }
    pub fn reader_done(&mut self, id: &str, at: Instant) {
        if let Some(m) = self.marks.get_mut(id) {
            m.reader_done.get_or_insert(at);
        }
    }
    pub fn outcome(&mut self, id: &str, at: Instant) {
        self.settled += 1;
        if let Some(m) = self.marks.remove(id) {
            if let Some(r) = m.reader_done {
                self.to_outcome.push(at.saturating_duration_since(r));
            }
        }
    }
}

/// The `q` quantile (0..=1) of samples, `None` when empty.
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort();
    let i = ((s.len() - 1) as f64 * q).round() as usize;
    Some(s[i.min(s.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_measured_between_marks() {
        let t0 = Instant::now();
        let mut s = Stats::default();
        s.accepted("p", t0);
        s.dispatching("p", t0 + Duration::from_millis(3));
        s.dispatching("p", t0 + Duration::from_millis(9));
        s.reader_done("p", t0 + Duration::from_millis(10));
        s.outcome("p", t0 + Duration::from_millis(12));
        assert_eq!(s.to_dispatch, [Duration::from_millis(3)]);
        assert_eq!(s.to_outcome, [Duration::from_millis(2)]);
        let samples: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&samples, 0.5), Some(Duration::from_millis(51)));
        assert_eq!(quantile(&samples, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
