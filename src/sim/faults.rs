//! Injected trouble: added latency, 5xx answers (before the work, or stored under the
//! idempotency key once execution began), dropped connections, reader timeouts
//! that are false negatives, readers that vanish mid-action, and a request-rate limit.
//!
//! Everything random is drawn from the emulator's seeded generator, one draw per request,
//! so a run with the same seed and the same request sequence fails the same way. Rules
//! target a method and a path pattern and can be one-shot (`times`), which is what tests
//! use to be fully deterministic.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The fault settings, as set by flags, [`super::SimHandle::set_faults`] or
/// `POST /_sim/faults` (a JSON object with these keys; absent keys take their default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every `/v1` request before it is handled.
    pub latency_ms: u64,
    /// Share (0..=1) of `/v1` requests answered `500 api_error` before any work is done
    /// (not stored under the idempotency key, `Stripe-Should-Retry: true`).
    pub error_rate: f64,
    /// Share of `/v1` requests whose connection is dropped before the work is done.
    pub drop_before_rate: f64,
    /// Share of `/v1` requests whose connection is dropped after the work was done (and its
    /// result stored under the idempotency key).
    pub drop_after_rate: f64,
    /// Share of `process_payment_intent` / `set_reader_display` calls that take the action
    /// but answer `terminal_reader_timeout` (a false negative).
    pub reader_timeout_rate: f64,
    /// Share of `process_payment_intent` calls after which the reader goes offline, leaving
    /// the action `in_progress` until it is brought back and the action cancelled.
    pub offline_mid_action_rate: f64,
    /// Share of webhook events delivered twice.
    pub webhook_duplicate_rate: f64,
    /// Delay before each webhook delivery.
    pub webhook_delay_ms: u64,
    /// Deliver the webhook events queued during the delay in a shuffled order.
    pub webhook_reorder: bool,
    /// Targeted and one-shot faults, checked in order before the shares above.
    pub rules: Vec<FaultRule>,
}

/// What a rule does to a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with a 5xx (`status`, default 500) before doing the work.
    Error,
    /// Execution began (the work was done when `executed`, the default, is true; not when
    /// false), then a 5xx (`status`, default 500) that is stored under the idempotency key
    /// and replayed for it, with `Stripe-Should-Retry: false`, as Stripe does.
    ErrorStored,
    /// Drop the connection before doing the work.
    DropBefore,
    /// Do the work, then drop the connection.
    DropAfter,
    /// Reader commands only: take the action, answer `terminal_reader_timeout`.
    ReaderTimeout,
    /// `process_payment_intent` only: take the action, then the reader goes offline.
    OfflineMidAction,
    /// Add `latency_ms` (does not count as the request's outcome fault).
    Latency,
    /// Answer 429 as a rate limiter does.
    RateLimit,
    /// Answer 429 `lock_timeout` (an object locked by another request; no limiter header),
    /// which Stripe's SDKs do retry.
    LockTimeout,
}

/// A targeted fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub kind: FaultKind,
    /// `GET`, `POST`, `DELETE`; any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// A path pattern: `*` matches any run of characters, e.g. `/v1/terminal/readers/*/process_payment_intent`.
    /// Any path when absent.
    #[serde(default)]
    pub path: Option<String>,
    /// Fire for the next `times` matching requests, then retire. Every match when absent.
    #[serde(default)]
    pub times: Option<u32>,
    /// Share of matching requests it fires for (1 when absent).
    #[serde(default)]
    pub rate: Option<f64>,
    /// The status of an `error` fault (500 when absent).
    #[serde(default)]
    pub status: Option<u16>,
    /// The delay of a `latency` fault.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Whether an `error_stored` fault did the work before failing (true when absent).
    #[serde(default)]
    pub executed: Option<bool>,
}

impl FaultRule {
    /// A rule of `kind` for `method` and `path` (pattern), firing on every match.
    pub fn new(kind: FaultKind, method: &str, path: &str) -> Self {
        FaultRule {
            kind,
            method: Some(method.to_string()),
            path: Some(path.to_string()),
            times: None,
            rate: None,
            status: None,
            latency_ms: None,
            executed: None,
        }
    }
    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    /// For `error_stored`: whether the work was done before the stored 5xx.
    pub fn executed(mut self, done: bool) -> Self {
        self.executed = Some(done);
        self
    }
}

/// The outcome fault chosen for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    None,
    Error(u16),
    /// A 5xx stored under the key; the work was done when `executed`.
    ErrorStored {
        status: u16,
        executed: bool,
    },
    DropBefore,
    DropAfter,
    ReaderTimeout,
    OfflineMidAction,
    RateLimit,
    LockTimeout,
}

impl Outcome {
    /// The name recorded in the request log.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            Outcome::None => None,
            Outcome::Error(_) => Some("error"),
            Outcome::ErrorStored { .. } => Some("error_stored"),
            Outcome::DropBefore => Some("drop_before"),
            Outcome::DropAfter => Some("drop_after"),
            Outcome::ReaderTimeout => Some("reader_timeout"),
            Outcome::OfflineMidAction => Some("offline_mid_action"),
            Outcome::RateLimit => Some("rate_limit"),
            Outcome::LockTimeout => Some("lock_timeout"),
        }
    }
}

/// The faults chosen for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub latency: Duration,
    pub outcome: Outcome,
}

/// `*` matches any run of characters (including `/`).
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

fn reader_command(path: &str) -> bool {
    path.starts_with("/v1/terminal/readers/")
        && (path.ends_with("/process_payment_intent") || path.ends_with("/set_reader_display"))
}

fn applies(kind: FaultKind, path: &str) -> bool {
    match kind {
        FaultKind::ReaderTimeout => reader_command(path),
        FaultKind::OfflineMidAction => {
            path.starts_with("/v1/terminal/readers/") && path.ends_with("/process_payment_intent")
        }
        _ => true,
    }
}

impl Faults {
    /// Chooses the faults for one `/v1` request, consuming one-shot rules.
    pub fn decide(&mut self, method: &str, path: &str, rng: &mut impl Rng) -> Decision {
        let mut latency = Duration::from_millis(self.latency_ms);
        let mut outcome = Outcome::None;
        let draw: f64 = rng.gen();
        for rule in self.rules.iter_mut() {
            if rule.times == Some(0) || !applies(rule.kind, path) {
                continue;
            }
            if let Some(m) = &rule.method {
                if !m.eq_ignore_ascii_case(method) {
                    continue;
                }
            }
            if let Some(p) = &rule.path {
                if !glob(p, path) {
                    continue;
                }
            }
            if let Some(rate) = rule.rate {
                if draw >= rate {
                    continue;
                }
            }
            if rule.kind != FaultKind::Latency && outcome != Outcome::None {
                continue;
            }
            if let Some(n) = rule.times.as_mut() {
                *n -= 1;
            }
            outcome = match rule.kind {
                FaultKind::Latency => {
                    latency += Duration::from_millis(rule.latency_ms.unwrap_or(0));
                    outcome
                }
                FaultKind::Error => Outcome::Error(rule.status.unwrap_or(500)),
                FaultKind::ErrorStored => Outcome::ErrorStored {
                    status: rule.status.unwrap_or(500),
                    executed: rule.executed.unwrap_or(true),
                },
                FaultKind::DropBefore => Outcome::DropBefore,
                FaultKind::DropAfter => Outcome::DropAfter,
                FaultKind::ReaderTimeout => Outcome::ReaderTimeout,
                FaultKind::OfflineMidAction => Outcome::OfflineMidAction,
                FaultKind::RateLimit => Outcome::RateLimit,
                FaultKind::LockTimeout => Outcome::LockTimeout,
            };
        }
        self.rules.retain(|r| r.times != Some(0));
        if outcome == Outcome::None {
            let mut edge = 0.0;
            let shares = [
                (self.error_rate, Outcome::Error(500), true),
                (self.drop_before_rate, Outcome::DropBefore, true),
                (self.drop_after_rate, Outcome::DropAfter, true),
                (
                    self.reader_timeout_rate,
                    Outcome::ReaderTimeout,
                    applies(FaultKind::ReaderTimeout, path),
                ),
                (
                    self.offline_mid_action_rate,
                    Outcome::OfflineMidAction,
                    applies(FaultKind::OfflineMidAction, path),
                ),
            ];
            for (share, o, applicable) in shares {
                if !applicable || share <= 0.0 {
                    continue;
                }
                edge += share;
                if draw < edge {
                    outcome = o;
                    break;
                }
            }
        }
        Decision { latency, outcome }
    }
}

/// A fixed one-second window counter: the emulator's request-rate limiter.
#[derive(Debug)]
pub struct RateWindow {
    start: tokio::time::Instant,
    count: u32,
}

impl RateWindow {
    pub fn new() -> Self {
        RateWindow {
            start: tokio::time::Instant::now(),
            count: 0,
        }
    }
    /// Counts a request; false when it exceeds `limit` in the current second.
    pub fn admit(&mut self, limit: u32) -> bool {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.start) >= Duration::from_secs(1) {
            self.start = now;
            self.count = 0;
        }
        if self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

impl Default for RateWindow {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn glob_matches_segments_and_runs() {
        assert!(glob("/v1/payment_intents", "/v1/payment_intents"));
        assert!(!glob("/v1/payment_intents", "/v1/payment_intents/pi_1"));
        assert!(glob(
            "/v1/terminal/readers/*/process_payment_intent",
            "/v1/terminal/readers/tmr_1/process_payment_intent"
        ));
        assert!(glob("/v1/*", "/v1/refunds"));
        assert!(!glob("/v1/*/cancel", "/v1/payment_intents/pi_1/capture"));
    }

    #[test]
    fn one_shot_rules_fire_exactly_n_times_on_matching_requests() {
        let mut f = Faults {
            rules: vec![
                FaultRule::new(FaultKind::DropAfter, "POST", "/v1/payment_intents").times(2),
            ],
            ..Faults::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let get = f.decide("GET", "/v1/payment_intents", &mut rng);
        assert_eq!(get.outcome, Outcome::None);
        for _ in 0..2 {
            let d = f.decide("POST", "/v1/payment_intents", &mut rng);
            assert_eq!(d.outcome, Outcome::DropAfter);
        }
        assert_eq!(
            f.decide("POST", "/v1/payment_intents", &mut rng).outcome,
            Outcome::None
        );
        assert!(f.rules.is_empty());
    }

    #[test]
    fn reader_faults_only_hit_reader_commands_and_shares_are_seeded() {
        let f = Faults {
            reader_timeout_rate: 0.5,
            ..Faults::default()
        };
        let run = |seed| {
            let mut f = f.clone();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..64)
                .map(|_| {
                    f.decide(
                        "POST",
                        "/v1/terminal/readers/tmr_1/process_payment_intent",
                        &mut rng,
                    )
                    .outcome
                })
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert!(a.contains(&Outcome::ReaderTimeout) && a.contains(&Outcome::None));
        let mut f2 = f.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..64 {
            assert_eq!(
                f2.decide("POST", "/v1/payment_intents", &mut rng).outcome,
                Outcome::None
            );
        }
    }

    #[test]
    fn rate_window_admits_limit_per_second() {
        let mut w = RateWindow::new();
        assert!(w.admit(2));
        assert!(w.admit(2));
        assert!(!w.admit(2));
    }
}
