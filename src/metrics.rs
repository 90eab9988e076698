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

use prometheus_client::encoding::{prometheus_text, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The content type of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Latency buckets for Stripe requests (seconds); reader commands may take up to 80 s.
const STRIPE_LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 80.0];
/// Buckets for the client-side rate limiter's waits (seconds).
const RATE_LIMIT_WAIT_BUCKETS: &[f64] = &[0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

// Series ------------------------------------------------------------------------------------

/// One series' labels: the family's label names, each with this series' value.
type Labels = Vec<(&'static str, String)>;

/// A family's name, HELP text and label names, and its label set for `values`.
#[derive(Clone, Copy, Debug)]
struct Desc {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

impl Desc {
    fn key(&self, values: &[&str]) -> Option<Labels> {
        if values.len() != self.labels.len() {
            debug_assert!(false, "{}: wrong number of labels", self.name);
            return None;
        }
        Some(
            self.labels
                .iter()
                .zip(values)
                .map(|(n, v)| (*n, v.to_string()))
                .collect(),
        )
    }

    /// Registers `metric` under the exact name and HELP operators scrape: the client adds
    /// `_total` to counters and a full stop to HELP texts, so both are left out here.
    fn register(&self, registry: &mut Registry, metric: impl Metric) {
        let mut name = self.name;
        if metric.metric_type() == MetricType::Counter {
            name = name.strip_suffix("_total").unwrap_or(name);
        }
        registry.register(
            name,
            self.help.strip_suffix('.').unwrap_or(self.help),
            metric,
        );
    }
}

/// A monotonically increasing count per label set.
#[derive(Clone, Debug)]
pub struct CounterVec {
    desc: Desc,
    family: Family<Labels, Counter>,
}

impl CounterVec {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        CounterVec {
            desc: Desc { name, help, labels },
            family: Family::default(),
        }
    }
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }
    pub fn add(&self, labels: &[&str], n: u64) {
        if let Some(key) = self.desc.key(labels) {
            self.family.get_or_create(&key).inc_by(n);
        }
    }
    pub fn get(&self, labels: &[&str]) -> u64 {
        self.desc
            .key(labels)
            .and_then(|key| self.family.get(&key).map(|c| c.get()))
            .unwrap_or(0)
    }
}

/// A value per label set that goes up and down.
#[derive(Clone, Debug)]
pub struct GaugeVec {
    desc: Desc,
    family: Family<Labels, Value>,
}

impl GaugeVec {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        GaugeVec {
            desc: Desc { name, help, labels },
            family: Family::default(),
        }
    }
    pub fn set(&self, labels: &[&str], v: f64) {
        if let Some(key) = self.desc.key(labels) {
            self.family.get_or_create(&key).0.set(v);
        }
    }
    pub fn add(&self, labels: &[&str], v: f64) {
        if let Some(key) = self.desc.key(labels) {
            self.family.get_or_create(&key).0.inc_by(v);
        }
    }
    pub fn get(&self, labels: &[&str]) -> Option<f64> {
        let key = self.desc.key(labels)?;
        self.family.get(&key).map(|g| g.0.get())
    }
    /// Drops one label set (a reader that was removed, a capture that happened).
    pub fn remove(&self, labels: &[&str]) {
        if let Some(key) = self.desc.key(labels) {
            self.family.remove(&key);
        }
    }
    /// Replaces every label set at once: for collectors that recompute a gauge from state
    /// (they run one scrape at a time, so no scrape sees the gauge half filled).
    pub fn replace_all<'a>(&self, entries: impl IntoIterator<Item = (Vec<&'a str>, f64)>) {
        self.family.clear();
        for (labels, v) in entries {
            self.set(&labels, v);
        }
    }
}

/// A gauge's value, written as an integer when it is one (`1`, not `1.0`), as readerd
/// always has.
#[derive(Debug, Default)]
struct Value(Gauge<f64, AtomicU64>);

impl TypedMetric for Value {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Value {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let v = self.0.get();
        // Integers up to 2^53 are exact in an f64.
        if v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0 {
            encoder.encode_gauge(&(v as i64))
        } else {
            encoder.encode_gauge(&v)
        }
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// A distribution per label set, in fixed buckets.
#[derive(Clone, Debug)]
pub struct HistogramVec {
    desc: Desc,
    family: Family<Labels, Histogram, fn() -> Histogram>,
}

impl HistogramVec {
    fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: fn() -> Histogram,
    ) -> Self {
        HistogramVec {
            desc: Desc { name, help, labels },
            family: Family::new_with_constructor(buckets),
        }
    }
    pub fn observe(&self, labels: &[&str], v: f64) {
        if let Some(key) = self.desc.key(labels) {
            self.family.get_or_create(&key).observe(v);
        }
    }
}

/// The families encode through the client's own `Family`; unlike it, they keep their HELP
/// and TYPE lines while they have no series yet, as `/metrics` always has.
macro_rules! encode_as_family {
    ($($t:ty => $kind:expr),*) => {$(
        impl EncodeMetric for $t {
            fn encode(&self, encoder: MetricEncoder) -> std::fmt::Result {
                self.family.encode(encoder)
            }
            fn metric_type(&self) -> MetricType {
                $kind
            }
        }
    )*};
}
encode_as_family!(
    CounterVec => MetricType::Counter,
    GaugeVec => MetricType::Gauge,
    HistogramVec => MetricType::Histogram
);

fn stripe_latency_histogram() -> Histogram {
    Histogram::new(STRIPE_LATENCY_BUCKETS.iter().copied())
}

fn rate_limit_wait_histogram() -> Histogram {
    Histogram::new(RATE_LIMIT_WAIT_BUCKETS.iter().copied())
}

// Latencies with quantiles ------------------------------------------------------------------

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

// The daemon's series -----------------------------------------------------------------------

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
    /// `readerd_webhook_events_rejected_total{reason}`.
    pub webhooks_rejected: CounterVec,
    /// `readerd_api_requests_rejected_total{reason}`: e.g. `shutting_down`, `queue_full`.
    pub api_rejections: CounterVec,
    /// `readerd_config_reloads_total{result}`.
    pub config_reloads: CounterVec,
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
        let mut m = Metrics {
            payments: CounterVec::new(
                "readerd_payments_total",
                "Payments that entered each status.",
                &["merchant", "status"],
            ),
            payments_current: GaugeVec::new(
                "readerd_payments_current",
                "Payments currently in each non-final status.",
                &["merchant", "status"],
            ),
            stripe_requests: CounterVec::new(
                "readerd_stripe_requests_total",
                "Stripe API request attempts by endpoint and HTTP status (error = no response).",
                &["endpoint", "method", "status"],
            ),
            stripe_request_duration: HistogramVec::new(
                "readerd_stripe_request_duration_seconds",
                "Latency of Stripe API request attempts.",
                &["endpoint"],
                stripe_latency_histogram,
            ),
            stripe_retries: CounterVec::new(
                "readerd_stripe_retries_total",
                "Stripe API request attempts after the first (retries), by endpoint.",
                &["endpoint"],
            ),
            rate_limiter_wait: HistogramVec::new(
                "readerd_stripe_rate_limiter_wait_seconds",
                "Time requests waited for the client-side Stripe rate limiter.",
                &[],
                rate_limit_wait_histogram,
            ),
            stripe_degraded: GaugeVec::new(
                "readerd_stripe_degraded",
                "1 while Stripe is failing or slow for many requests.",
                &[],
            ),
            reader_online: GaugeVec::new(
                "readerd_reader_online",
                "1 if the reader is online and seen recently.",
                &["reader"],
            ),
            reader_busy: GaugeVec::new(
                "readerd_reader_busy",
                "1 while the reader holds an action.",
                &["reader"],
            ),
            reader_queue_depth: GaugeVec::new(
                "readerd_reader_queue_depth",
                "Commands waiting for the reader.",
                &["reader"],
            ),
            reader_last_seen_age: GaugeVec::new(
                "readerd_reader_last_seen_age_seconds",
                "Seconds since Stripe last heard from the reader.",
                &["reader"],
            ),
            authorizations_awaiting_capture: GaugeVec::new(
                "readerd_authorizations_awaiting_capture",
                "Authorised payments waiting for a manual capture.",
                &["merchant"],
            ),
            capture_seconds_left: GaugeVec::new(
                "readerd_authorization_capture_seconds_left",
                "Seconds left before the authorisation's capture_before (negative: lapsed).",
                &["merchant", "payment"],
            ),
            webhooks_accepted: CounterVec::new(
                "readerd_webhook_events_accepted_total",
                "Stripe webhook events accepted, by event type.",
                &["type"],
            ),
            webhooks_rejected: CounterVec::new(
                "readerd_webhook_events_rejected_total",
                "Stripe webhook events rejected, by reason.",
                &["reason"],
            ),
            api_rejections: CounterVec::new(
                "readerd_api_requests_rejected_total",
                "API requests refused by the daemon's own state, by reason.",
                &["reason"],
            ),
            config_reloads: CounterVec::new(
                "readerd_config_reloads_total",
                "Configuration reloads (SIGHUP), by result.",
                &["result"],
            ),
            build_info: GaugeVec::new(
                "readerd_build_info",
                "Always 1; the version label says which readerd runs.",
                &["version"],
            ),
            start_time: GaugeVec::new(
                "readerd_start_time_seconds",
                "Start time of the daemon, seconds since the Unix epoch.",
                &[],
            ),
            collectors: Mutex::new(Vec::new()),
            registry: Registry::default(),
            scrape: Mutex::new(()),
            degradation: Mutex::new(Degradation::default()),
            open_payments: Mutex::new(BTreeMap::new()),
        };
        let registry = &mut m.registry;
        m.build_info.desc.register(registry, m.build_info.clone());
        m.start_time.desc.register(registry, m.start_time.clone());
        m.payments.desc.register(registry, m.payments.clone());
        m.payments_current
            .desc
            .register(registry, m.payments_current.clone());
        m.stripe_requests
            .desc
            .register(registry, m.stripe_requests.clone());
        m.stripe_retries
            .desc
            .register(registry, m.stripe_retries.clone());
        m.stripe_degraded
            .desc
            .register(registry, m.stripe_degraded.clone());
        m.reader_online
            .desc
            .register(registry, m.reader_online.clone());
        m.reader_busy.desc.register(registry, m.reader_busy.clone());
        m.reader_queue_depth
            .desc
            .register(registry, m.reader_queue_depth.clone());
        m.reader_last_seen_age
            .desc
            .register(registry, m.reader_last_seen_age.clone());
        m.authorizations_awaiting_capture
            .desc
            .register(registry, m.authorizations_awaiting_capture.clone());
        m.capture_seconds_left
            .desc
            .register(registry, m.capture_seconds_left.clone());
        m.webhooks_accepted
            .desc
            .register(registry, m.webhooks_accepted.clone());
        m.webhooks_rejected
            .desc
            .register(registry, m.webhooks_rejected.clone());
        m.api_rejections
            .desc
            .register(registry, m.api_rejections.clone());
        m.config_reloads
            .desc
            .register(registry, m.config_reloads.clone());
        m.stripe_request_duration
            .desc
            .register(registry, m.stripe_request_duration.clone());
        m.rate_limiter_wait
            .desc
            .register(registry, m.rate_limiter_wait.clone());
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

    /// `reason`: e.g. `bad_signature`, `stale_timestamp`, `malformed`, `duplicate`.
    pub fn webhook_rejected(&self, reason: &str) {
        self.webhooks_rejected.inc(&[reason]);
    }

    pub fn api_rejected(&self, reason: &str) {
        self.api_rejections.inc(&[reason]);
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
mod tests {
    use super::*;

    #[test]
    fn endpoint_templates() {
        for (path, want) in [
            ("/v1/payment_intents", "/v1/payment_intents"),
            (
                "/v1/payment_intents/pi_3MtwBwLkdIwHu7ix28a3tqPa/capture",
                "/v1/payment_intents/{id}/capture",
            ),
            (
                "/v1/terminal/readers/tmr_abc/process_payment_intent",
                "/v1/terminal/readers/{id}/process_payment_intent",
            ),
            (
                "/v1/test_helpers/terminal/readers/tmr_FDOt2wlRZEdpd7/present_payment_method",
                "/v1/test_helpers/terminal/readers/{id}/present_payment_method",
            ),
            ("/v1/accounts/acct_1032D82eZvKYlo2C", "/v1/accounts/{id}"),
            (
                "/v1/terminal/locations?limit=100&starting_after=tml_1",
                "/v1/terminal/locations",
            ),
            ("/v1/refunds", "/v1/refunds"),
        ] {
            assert_eq!(endpoint_template(path), want, "{path}");
        }
    }

    #[test]
    fn renders_counters_gauges_and_labels_in_text_format() {
        let m = Metrics::new();
        m.payment_status("bakery", "succeeded");
        m.payment_status("bakery", "succeeded");
        m.payment_status("café \"the\" one", "queued");
        m.set_reader("tmr_1", true, false, 2);
        let out = m.render();
        assert!(out.contains("# TYPE readerd_payments_total counter\n"));
        assert!(
            out.contains("readerd_payments_total{merchant=\"bakery\",status=\"succeeded\"} 2\n")
        );
        assert!(out.contains(
            "readerd_payments_total{merchant=\"café \\\"the\\\" one\",status=\"queued\"} 1\n"
        ));
        assert!(out.contains("readerd_reader_online{reader=\"tmr_1\"} 1\n"));
        assert!(out.contains("readerd_reader_busy{reader=\"tmr_1\"} 0\n"));
        assert!(out.contains("readerd_reader_queue_depth{reader=\"tmr_1\"} 2\n"));
        assert!(out.contains("readerd_stripe_degraded 0\n"));
        assert!(out.contains(&format!(
            "readerd_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        m.remove_reader("tmr_1");
        assert!(!m.render().contains("tmr_1"));
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        let path = "/v1/payment_intents/pi_1/capture";
        m.stripe_request("POST", path, 1, Some(200), Duration::from_millis(30));
        m.stripe_request("POST", path, 1, None, Duration::from_secs(100));
        m.stripe_request("POST", path, 2, Some(200), Duration::from_millis(300));
        let out = m.render();
        let e = "endpoint=\"/v1/payment_intents/{id}/capture\"";
        assert!(out.contains(&format!(
            "readerd_stripe_requests_total{{{e},method=\"POST\",status=\"200\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "readerd_stripe_requests_total{{{e},method=\"POST\",status=\"error\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "readerd_stripe_request_duration_seconds_bucket{{{e},le=\"0.05\"}} 1\n"
        )));
        assert!(out.contains(&format!(
            "readerd_stripe_request_duration_seconds_bucket{{{e},le=\"0.5\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "readerd_stripe_request_duration_seconds_bucket{{{e},le=\"80\"}} 2\n"
        )));
        assert!(out.contains(&format!(
            "readerd_stripe_request_duration_seconds_bucket{{{e},le=\"+Inf\"}} 3\n"
        )));
        assert!(out.contains(&format!(
            "readerd_stripe_request_duration_seconds_count{{{e}}} 3\n"
        )));
        assert!(out.contains(&format!(
            "readerd_stripe_request_duration_seconds_sum{{{e}}} 100.33"
        )));
        assert!(out.contains(&format!("readerd_stripe_retries_total{{{e}}} 1\n")));
        m.rate_limiter_waited(Duration::from_millis(40));
        let out = m.render();
        assert!(out.contains("readerd_stripe_rate_limiter_wait_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(out.contains("readerd_stripe_rate_limiter_wait_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(out.contains("readerd_stripe_rate_limiter_wait_seconds_count 1\n"));
    }

    #[test]
    fn collectors_refresh_state_gauges_at_scrape_time() {
        let m = Metrics::new();
        let open = std::sync::Arc::new(Mutex::new(vec![("bakery", "pay_1", 120.0)]));
        let src = open.clone();
        m.add_collector(move |m| {
            let open = src.lock().unwrap();
            m.capture_seconds_left.replace_all(
                open.iter()
                    .map(|(merchant, pay, left)| (vec![*merchant, *pay], *left)),
            );
        });
        assert!(m.render().contains(
            "readerd_authorization_capture_seconds_left{merchant=\"bakery\",payment=\"pay_1\"} 120\n"
        ));
        open.lock().unwrap().clear();
        assert!(!m.render().contains("pay_1"));
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let m = Metrics::new();
        let out = m.render();
        let types: Vec<&str> = out.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(n, 19);
        assert_eq!(out.lines().filter(|l| l.starts_with("# HELP ")).count(), n);
    }

    #[tokio::test(start_paused = true)]
    async fn stripe_degrades_on_repeated_failures_and_recovers() {
        let m = Metrics::new();
        let p = "/v1/payment_intents";
        let ok = Duration::from_millis(100);
        // Scattered failures among successes: healthy.
        for i in 0..20 {
            let status = if i % 5 == 0 { Some(500) } else { Some(200) };
            m.stripe_request("GET", p, 1, status, ok);
        }
        assert!(!m.stripe_is_degraded());
        // A stall: timeouts and 503s.
        for _ in 0..15 {
            m.stripe_request("GET", p, 1, None, Duration::from_secs(30));
            m.stripe_request("GET", p, 2, Some(503), ok);
        }
        assert!(m.stripe_is_degraded());
        assert!(m.render().contains("readerd_stripe_degraded 1\n"));
        // A minute later, Stripe answers again.
        tokio::time::advance(Duration::from_secs(61)).await;
        for _ in 0..3 {
            m.stripe_request("GET", p, 1, Some(200), ok);
        }
        assert!(!m.stripe_is_degraded());
        assert!(m.render().contains("readerd_stripe_degraded 0\n"));
    }

    #[test]
    fn payments_counted_once_per_status_and_open_ones_gauged() {
        let m = Metrics::new();
        let soon = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 3600;
        m.payment_written("pay_1", "bakery", None, "queued", false, None);
        m.payment_written("pay_1", "bakery", Some("queued"), "processing", false, None);
        // A rewrite without a status change (a note, a poll) counts nothing.
        m.payment_written(
            "pay_1",
            "bakery",
            Some("processing"),
            "processing",
            false,
            None,
        );
        m.payment_written(
            "pay_1",
            "bakery",
            Some("processing"),
            "requires_capture",
            false,
            Some(soon),
        );
        m.payment_written("pay_2", "florist", None, "queued", false, None);
        let out = m.render();
        assert!(
            out.contains("readerd_payments_total{merchant=\"bakery\",status=\"processing\"} 1\n")
        );
        assert!(out.contains(
            "readerd_payments_current{merchant=\"bakery\",status=\"requires_capture\"} 1\n"
        ));
        assert!(
            out.contains("readerd_payments_current{merchant=\"florist\",status=\"queued\"} 1\n")
        );
        assert!(!out.contains("readerd_payments_current{merchant=\"bakery\",status=\"queued\"}"));
        assert!(out.contains("readerd_authorizations_awaiting_capture{merchant=\"bakery\"} 1\n"));
        let line = out
            .lines()
            .find(|l| l.starts_with("readerd_authorization_capture_seconds_left{merchant=\"bakery\",payment=\"pay_1\"}"))
            .unwrap();
        let left: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((3590.0..=3600.0).contains(&left), "{line}");
        // Captured: final, gone from the gauges, counted as succeeded.
        m.payment_written(
            "pay_1",
            "bakery",
            Some("requires_capture"),
            "succeeded",
            true,
            Some(soon),
        );
        let out = m.render();
        assert!(
            out.contains("readerd_payments_total{merchant=\"bakery\",status=\"succeeded\"} 1\n")
        );
        assert!(!out.contains("pay_1"));
        assert!(!out.contains("readerd_authorizations_awaiting_capture{"));
    }

    #[test]
    fn counters_count_per_label_set() {
        let m = Metrics::new();
        m.webhook_rejected("bad_signature");
        m.webhooks_rejected.add(&["bad_signature"], 2);
        m.webhook_rejected("duplicate");
        assert_eq!(m.webhooks_rejected.get(&["bad_signature"]), 3);
        assert_eq!(m.webhooks_rejected.get(&["duplicate"]), 1);
        assert_eq!(m.webhooks_rejected.get(&["stale_timestamp"]), 0);
    }

    #[test]
    fn names_and_help_are_written_as_given() {
        // The client adds `_total` to counters and a full stop to HELP texts: neither may
        // appear twice.
        let out = Metrics::new().render();
        assert!(out.contains(
            "# HELP readerd_config_reloads_total Configuration reloads (SIGHUP), by result.\n"
        ));
        assert!(out.contains("# TYPE readerd_config_reloads_total counter\n"));
        assert!(!out.contains("_total_total") && !out.contains(".."));
        assert!(out.contains("readerd_stripe_degraded 0\n"));
        assert!(!out.contains("{}"));
        assert!(!out.contains("# EOF"));
    }

    #[test]
    fn gauges_write_integers_as_integers_and_keep_fractions() {
        let m = Metrics::new();
        m.reader_last_seen_age.set(&["tmr_1"], 2.5);
        m.reader_queue_depth.set(&["tmr_1"], 3.0);
        m.reader_busy.set(&["tmr_1"], -1.0);
        let out = m.render();
        assert!(out.contains("readerd_reader_last_seen_age_seconds{reader=\"tmr_1\"} 2.5\n"));
        assert!(out.contains("readerd_reader_queue_depth{reader=\"tmr_1\"} 3\n"));
        assert!(out.contains("readerd_reader_busy{reader=\"tmr_1\"} -1\n"));
    }

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
