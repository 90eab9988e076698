//! Prometheus metrics: the series readerd exports on `GET /metrics`, on the Prometheus
//! project's own client (`prometheus-client`): its registry, metric types and text
//! exposition format (version 0.0.4, the format every Prometheus server scrapes).
//!
//! One [`Metrics`] per daemon, with a registry of its own (tests run several daemons in one
//! process), shared as `Arc<Metrics>` (it sits in the API state and is handed to the Stripe
//! client, the payment workers, the fleet and the webhook intake). Events are recorded where
//! they happen through the typed methods below (`stripe_request`, `payment_status`,
//! `webhook_rejected`, …), so label names and values stay consistent. State that is better
//! read than tracked (readers' live state, authorisations and the time left before
//! `capture_before`) is filled in right before each scrape by collectors that the owning
//! module registers with [`Metrics::add_collector`].
//!
//! [`LatencyHistogram`] is the bounded distribution of durations with quantiles that the
//! payment flow's own statistics (`payments::stats`, read by `readerd bench`) are built on.
//!
//! Labels carry ids the operator already knows (merchant ids, reader ids, payment ids of
//! open authorisations); never amounts, tokens, keys or card data. Stripe paths are reduced
//! to templates (`/v1/payment_intents/{id}/capture`) to keep the number of series bounded.
//!
//! Longer than 600 lines on purpose: every series readerd exports is declared here with its
//! typed recorder, in the order `/metrics` writes them, so the scrape and the pinned list
//! of families read top to bottom; the generic parts are in `family.rs` and `latency.rs`.

mod family;
mod latency;

pub use family::{CounterVec, GaugeVec, HistogramVec};
pub use latency::LatencyHistogram;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The content type of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Latency buckets for Stripe requests (seconds); reader commands may take up to 80 s.
const STRIPE_LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 80.0];
/// Buckets for the client-side rate limiter's waits (seconds).
const RATE_LIMIT_WAIT_BUCKETS: &[f64] = &[0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

type Collector = Box<dyn Fn(&Metrics) + Send + Sync>;

/// The daemon's metrics. See the module docs and `docs/OPERATIONS.md` for what each means.
pub struct Metrics {
    /// `readerd_payments_total{merchant,status}`: payments that entered each status.
    pub payments: CounterVec,
    /// `readerd_payments_current{merchant,status}`: payments now in each non-final status.
    pub payments_current: GaugeVec,
    /// `readerd_stripe_requests_total{endpoint,method,status}`: every attempt, with Stripe's
    /// HTTP status or `error` (no response: connection failure, timeout).
    pub stripe_requests: CounterVec,
    /// `readerd_stripe_request_duration_seconds{endpoint}`.
    pub stripe_request_duration: HistogramVec,
    /// `readerd_stripe_retries_total{endpoint}`: attempts after the first.
    pub stripe_retries: CounterVec,
    /// `readerd_stripe_rate_limiter_wait_seconds`: waits for a permit of the client-side
    /// limiter (its `_count` is the number of requests that had to wait).
    pub rate_limiter_wait: HistogramVec,
    /// `readerd_stripe_degraded`: 1 while Stripe is failing or slow for many requests.
    pub stripe_degraded: GaugeVec,
    /// `readerd_reader_online{reader}`.
    pub reader_online: GaugeVec,
    /// `readerd_reader_busy{reader}`: 1 while the reader holds an action.
    pub reader_busy: GaugeVec,
    /// `readerd_reader_queue_depth{reader}`: commands waiting for the reader.
    pub reader_queue_depth: GaugeVec,
    /// `readerd_reader_last_seen_age_seconds{reader}`.
    pub reader_last_seen_age: GaugeVec,
    /// `readerd_authorizations_awaiting_capture{merchant}`.
    pub authorizations_awaiting_capture: GaugeVec,
    /// `readerd_authorization_capture_seconds_left{merchant,payment}`: time left before
    /// `capture_before`, after which the authorisation lapses.
    pub capture_seconds_left: GaugeVec,
    /// `readerd_webhook_events_accepted_total{type}`.
    pub webhooks_accepted: CounterVec,
    /// `readerd_webhooks_tracking`: 1 while webhook events track payments (polls are a
    /// safety net), 0 while readerd polls by itself.
    pub webhooks_tracking: GaugeVec,
    /// `readerd_webhook_events_rejected_total{reason}`.
    pub webhooks_rejected: CounterVec,
    /// `readerd_api_requests_rejected_total{reason}`: e.g. `shutting_down`, `queue_full`.
    pub api_rejections: CounterVec,
    /// `readerd_config_reloads_total{result}`.
    pub config_reloads: CounterVec,
    /// `readerd_stripe_objects_refused_total{reason}`.
    pub stripe_objects_refused: CounterVec,
    /// `readerd_transfers_total{merchant,result}`: separate charges' transfers and their
    /// reversals by outcome (`succeeded`, `refused`, `failed` = left for the operator,
    /// `reversed`, `reversal_refused`).
    pub transfers: CounterVec,
    /// `readerd_leases_held`: readers whose worker runs on this instance (a cluster on
    /// PostgreSQL; unset on one machine).
    pub leases_held: GaugeVec,
    /// `readerd_lease_losses_total`: reader leases this instance lost without giving them up
    /// (a renewal refused, or a fenced write refused).
    pub lease_losses: CounterVec,
    /// `readerd_lease_handovers_total`: readers this instance took over from another tenure.
    pub lease_handovers: CounterVec,
    /// `readerd_operations_forwarded_total{op}`: captures, cancels, refunds and retries
    /// (and cancels of input collections, refunds on a reader and their cancels, cancels
    /// of setups) asked here about a reader another instance works, handed to that
    /// instance.
    pub operations_forwarded: CounterVec,
    build_info: GaugeVec,
    start_time: GaugeVec,
    collectors: Mutex<Vec<Collector>>,
    /// Every family above, in the order they are written.
    registry: Registry,
    /// One scrape at a time: collectors replace whole gauges before the registry is encoded.
    scrape: Mutex<()>,
    degradation: Mutex<Degradation>,
    /// Non-final payments by id, for the state gauges.
    open_payments: Mutex<BTreeMap<String, OpenPayment>>,
}

/// What the gauges need of a payment that is not final yet.
#[derive(Clone, Debug)]
struct OpenPayment {
    merchant: String,
    status: String,
    /// Unix seconds.
    capture_before: Option<i64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // Families are written in the order they are registered here.
        let mut registry = Registry::default();
        let r = &mut registry;
        let m = Metrics {
            build_info: GaugeVec::new(
                r,
                "readerd_build_info",
                "Always 1; the version label says which readerd runs.",
                &["version"],
            ),
            start_time: GaugeVec::new(
                r,
                "readerd_start_time_seconds",
                "Start time of the daemon, seconds since the Unix epoch.",
                &[],
            ),
            payments: CounterVec::new(
                r,
                "readerd_payments_total",
                "Payments that entered each status.",
                &["merchant", "status"],
            ),
            payments_current: GaugeVec::new(
                r,
                "readerd_payments_current",
                "Payments currently in each non-final status.",
                &["merchant", "status"],
            ),
            stripe_requests: CounterVec::new(
                r,
                "readerd_stripe_requests_total",
                "Stripe API request attempts by endpoint and HTTP status (error = no response).",
                &["endpoint", "method", "status"],
            ),
            stripe_retries: CounterVec::new(
                r,
                "readerd_stripe_retries_total",
                "Stripe API request attempts after the first (retries), by endpoint.",
                &["endpoint"],
            ),
            stripe_degraded: GaugeVec::new(
                r,
                "readerd_stripe_degraded",
                "1 while Stripe is failing or slow for many requests.",
                &[],
            ),
            reader_online: GaugeVec::new(
                r,
                "readerd_reader_online",
                "1 if the reader is online and seen recently.",
                &["reader"],
            ),
            reader_busy: GaugeVec::new(
                r,
                "readerd_reader_busy",
                "1 while the reader holds an action.",
                &["reader"],
            ),
            reader_queue_depth: GaugeVec::new(
                r,
                "readerd_reader_queue_depth",
                "Commands waiting for the reader.",
                &["reader"],
            ),
            reader_last_seen_age: GaugeVec::new(
                r,
                "readerd_reader_last_seen_age_seconds",
                "Seconds since Stripe last heard from the reader.",
                &["reader"],
            ),
            authorizations_awaiting_capture: GaugeVec::new(
                r,
                "readerd_authorizations_awaiting_capture",
                "Authorised payments waiting for a manual capture.",
                &["merchant"],
            ),
            capture_seconds_left: GaugeVec::new(
                r,
                "readerd_authorization_capture_seconds_left",
                "Seconds left before the authorisation's capture_before (negative: lapsed).",
                &["merchant", "payment"],
            ),
            webhooks_accepted: CounterVec::new(
                r,
                "readerd_webhook_events_accepted_total",
                "Stripe webhook events accepted, by event type.",
                &["type"],
            ),
            webhooks_tracking: GaugeVec::new(
                r,
                "readerd_webhooks_tracking",
                "1 while webhook events track payments and polls are a safety net, 0 while readerd polls by itself.",
                &[],
            ),
            webhooks_rejected: CounterVec::new(
                r,
                "readerd_webhook_events_rejected_total",
                "Stripe webhook events rejected, by reason.",
                &["reason"],
            ),
            api_rejections: CounterVec::new(
                r,
                "readerd_api_requests_rejected_total",
                "API requests refused by the daemon's own state, by reason.",
                &["reason"],
            ),
            config_reloads: CounterVec::new(
                r,
                "readerd_config_reloads_total",
                "Configuration reloads (SIGHUP), by result.",
                &["result"],
            ),
            stripe_objects_refused: CounterVec::new(
                r,
                "readerd_stripe_objects_refused_total",
                "Stripe answers refused for what they held, by reason.",
                &["reason"],
            ),
            transfers: CounterVec::new(
                r,
                "readerd_transfers_total",
                "Separate charges' transfers and reversals, by merchant and outcome.",
                &["merchant", "result"],
            ),
            leases_held: GaugeVec::new(
                r,
                "readerd_leases_held",
                "Readers whose worker runs on this instance.",
                &[],
            ),
            lease_losses: CounterVec::new(
                r,
                "readerd_lease_losses_total",
                "Reader leases lost without being given up.",
                &[],
            ),
            lease_handovers: CounterVec::new(
                r,
                "readerd_lease_handovers_total",
                "Readers taken over from another tenure.",
                &[],
            ),
            operations_forwarded: CounterVec::new(
                r,
                "readerd_operations_forwarded_total",
                "Payment operations handed to the instance working the reader.",
                &["op"],
            ),
            stripe_request_duration: HistogramVec::new(
                r,
                "readerd_stripe_request_duration_seconds",
                "Latency of Stripe API request attempts.",
                &["endpoint"],
                || Histogram::new(STRIPE_LATENCY_BUCKETS.iter().copied()),
            ),
            rate_limiter_wait: HistogramVec::new(
                r,
                "readerd_stripe_rate_limiter_wait_seconds",
                "Time requests waited for the client-side Stripe rate limiter.",
                &[],
                || Histogram::new(RATE_LIMIT_WAIT_BUCKETS.iter().copied()),
            ),
            collectors: Mutex::new(Vec::new()),
            scrape: Mutex::new(()),
            degradation: Mutex::new(Degradation::default()),
            open_payments: Mutex::new(BTreeMap::new()),
            registry,
        };
        m.build_info.set(&[env!("CARGO_PKG_VERSION")], 1.0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        m.start_time.set(&[], now.as_secs_f64());
        m.stripe_degraded.set(&[], 0.0);
        m
    }

    // Recording ------------------------------------------------------------------------

    /// A payment entered `status`.
    pub fn payment_status(&self, merchant: &str, status: &str) {
        self.payments.inc(&[merchant, status]);
    }

    /// A payment record was written: counts the status it entered (when `before`, its
    /// status before the write, differs; `None` for a new payment) and keeps the gauges of
    /// open payments and pending captures. `capture_before` is in Unix seconds.
    pub fn payment_written(
        &self,
        id: &str,
        merchant: &str,
        before: Option<&str>,
        status: &str,
        is_final: bool,
        capture_before: Option<i64>,
    ) {
        if before != Some(status) {
            self.payment_status(merchant, status);
        }
        self.payment_open(id, merchant, status, is_final, capture_before);
    }

    /// A payment found open at start-up (or written without a status change): gauges only.
    pub fn payment_open(
        &self,
        id: &str,
        merchant: &str,
        status: &str,
        is_final: bool,
        capture_before: Option<i64>,
    ) {
        let mut open = self.open_payments.lock().unwrap_or_else(|p| p.into_inner());
        if is_final {
            open.remove(id);
        } else {
            open.insert(
                id.to_string(),
                OpenPayment {
                    merchant: merchant.to_string(),
                    status: status.to_string(),
                    capture_before,
                },
            );
        }
    }

    /// How many payments are not final.
    pub fn open_payment_count(&self) -> usize {
        self.open_payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Recomputes the gauges of open payments.
    fn refresh_payment_gauges(&self) {
        let open = self
            .open_payments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut current: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        let mut awaiting: BTreeMap<&str, f64> = BTreeMap::new();
        let mut left = Vec::new();
        for (id, p) in &open {
            *current.entry((&p.merchant, &p.status)).or_default() += 1.0;
            if p.status == "requires_capture" {
                *awaiting.entry(&p.merchant).or_default() += 1.0;
                if let Some(cb) = p.capture_before {
                    left.push((vec![p.merchant.as_str(), id.as_str()], (cb - now) as f64));
                }
            }
        }
        self.payments_current
            .replace_all(current.into_iter().map(|((m, st), n)| (vec![m, st], n)));
        self.authorizations_awaiting_capture
            .replace_all(awaiting.into_iter().map(|(m, n)| (vec![m], n)));
        self.capture_seconds_left.replace_all(left);
    }

    /// Attempt number `attempt` (1 = the first) of a Stripe request finished: `path` is the
    /// requested path or its template, `status` Stripe's HTTP status, or `None` when no
    /// response arrived.
    pub fn stripe_request(
        &self,
        method: &str,
        path: &str,
        attempt: u32,
        status: Option<u16>,
        elapsed: Duration,
    ) {
        let endpoint = endpoint_template(path);
        let status_label = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.stripe_requests
            .inc(&[&endpoint, method, &status_label]);
        self.stripe_request_duration
            .observe(&[&endpoint], elapsed.as_secs_f64());
        if attempt > 1 {
            self.stripe_retries.inc(&[&endpoint]);
        }
        // No answer, a 5xx, a 429 or a very slow answer: Stripe is not serving us well.
        let bad = match status {
            None => true,
            Some(s) => s >= 500 || s == 429,
        } || elapsed >= DEGRADED_SLOW;
        let change = self
            .degradation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(tokio::time::Instant::now(), bad);
        match change {
            Some(true) => {
                tracing::warn!("Stripe degraded: most recent requests failed or stalled");
                self.set_stripe_degraded(true);
            }
            Some(false) => {
                tracing::info!("Stripe recovered");
                self.set_stripe_degraded(false);
            }
            None => {}
        }
    }

    /// Whether Stripe is currently considered degraded (see [`Degradation`]).
    pub fn stripe_is_degraded(&self) -> bool {
        self.degradation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .degraded
    }

    /// A request waited `waited` for the client-side rate limiter.
    pub fn rate_limiter_waited(&self, waited: Duration) {
        self.rate_limiter_wait.observe(&[], waited.as_secs_f64());
    }

    /// Webhooks started or stopped tracking payments.
    pub fn set_webhooks_tracking(&self, tracking: bool) {
        self.webhooks_tracking
            .set(&[], if tracking { 1.0 } else { 0.0 });
    }

    /// Stripe entered or left the degraded state.
    pub fn set_stripe_degraded(&self, degraded: bool) {
        self.stripe_degraded
            .set(&[], if degraded { 1.0 } else { 0.0 });
    }

    /// A reader's live state.
    pub fn set_reader(&self, reader: &str, online: bool, busy: bool, queue_depth: usize) {
        self.reader_online
            .set(&[reader], if online { 1.0 } else { 0.0 });
        self.reader_busy
            .set(&[reader], if busy { 1.0 } else { 0.0 });
        self.reader_queue_depth.set(&[reader], queue_depth as f64);
    }

    /// A reader left the registry.
    pub fn remove_reader(&self, reader: &str) {
        for g in [
            &self.reader_online,
            &self.reader_busy,
            &self.reader_queue_depth,
            &self.reader_last_seen_age,
        ] {
            g.remove(&[reader]);
        }
    }

    pub fn webhook_accepted(&self, event_type: &str) {
        self.webhooks_accepted.inc(&[event_type]);
    }

    /// `reason`: e.g. `bad_signature`, `stale_timestamp`, `malformed`, `duplicate`,
    /// `livemode_mismatch` (an event of the other mode than the store's).
    pub fn webhook_rejected(&self, reason: &str) {
        self.webhooks_rejected.inc(&[reason]);
    }

    pub fn api_rejected(&self, reason: &str) {
        self.api_rejections.inc(&[reason]);
    }

    /// A transfer or reversal of `merchant` ended with `result`.
    pub fn transfer(&self, merchant: &str, result: &str) {
        self.transfers.inc(&[merchant, result]);
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads.inc(&[if ok { "ok" } else { "error" }]);
    }

    /// Registers a function that refreshes state-derived gauges right before each scrape.
    /// It must be quick and must not block on the network.
    pub fn add_collector(&self, f: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    // Rendering ------------------------------------------------------------------------

    /// Runs the collectors, then renders every series in the Prometheus text format.
    pub fn render(&self) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_payment_gauges();
        {
            let collectors = self.collectors.lock().unwrap_or_else(|p| p.into_inner());
            for c in collectors.iter() {
                c(self);
            }
        }
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// An answer slower than this counts against Stripe's health.
const DEGRADED_SLOW: Duration = Duration::from_secs(10);
/// The window over which Stripe's health is judged.
const DEGRADED_WINDOW: Duration = Duration::from_secs(60);
/// At least this many bad attempts in the window, and at least half of all attempts in it,
/// make Stripe degraded; a few scattered failures (a reader timeout, one 500) do not.
const DEGRADED_MIN_BAD: usize = 5;

/// A Stripe stall that hits the whole fleet must be visible on its own, not only as many
/// failed payments. Tracks the outcomes of recent
/// Stripe attempts and flips between healthy and degraded.
#[derive(Debug, Default)]
struct Degradation {
    recent: VecDeque<(tokio::time::Instant, bool)>,
    degraded: bool,
}

impl Degradation {
    /// Records one attempt; returns the new state when it changed.
    fn record(&mut self, now: tokio::time::Instant, bad: bool) -> Option<bool> {
        self.recent.push_back((now, bad));
        while let Some((at, _)) = self.recent.front() {
            if now.saturating_duration_since(*at) > DEGRADED_WINDOW || self.recent.len() > 1000 {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let bad_count = self.recent.iter().filter(|(_, b)| *b).count();
        let degraded = bad_count >= DEGRADED_MIN_BAD && bad_count * 2 >= self.recent.len();
        if degraded != self.degraded {
            self.degraded = degraded;
            Some(degraded)
        } else {
            None
        }
    }
}

/// The Stripe client reports every attempt and every rate-limiter wait here.
impl crate::stripe::client::RequestObserver for Metrics {
    fn on_attempt(&self, r: &crate::stripe::client::AttemptRecord<'_>) {
        self.stripe_request(r.method, r.endpoint, r.attempt, r.status, r.latency);
        if r.wrong_mode {
            self.stripe_objects_refused.inc(&["livemode_mismatch"]);
        }
    }
    fn on_rate_limit_wait(&self, waited: Duration) {
        self.rate_limiter_waited(waited);
    }
}

/// A Stripe request path reduced to its endpoint: query dropped, object ids replaced by
/// `{id}` (`/v1/terminal/readers/tmr_X/process_payment_intent` →
/// `/v1/terminal/readers/{id}/process_payment_intent`). Stripe's collection names are
/// lowercase words; its ids carry a known prefix or digits.
pub fn endpoint_template(path: &str) -> String {
    const PREFIXES: &[&str] = &[
        "acct_", "tml_", "tmr_", "pi_", "re_", "ch_", "pm_", "evt_", "cus_", "py_", "txn_",
    ];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> = path
        .split('/')
        .map(|seg| {
            let is_id = seg
                .chars()
                .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                || PREFIXES
                    .iter()
                    .any(|p| seg.starts_with(p) && seg.len() > p.len());
            if is_id && seg != "v1" {
                "{id}"
            } else {
                seg
            }
        })
        .collect();
    segments.join("/")
}

#[cfg(test)]
mod tests;
