//! readerd's metric families on `prometheus-client`: a family has a name, a HELP text and
//! fixed label names, and takes label values as `&[&str]` in that order. They encode through
//! the client's own `Family`, registered under the exact names operators scrape.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::AtomicU64;

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
    /// `_total` to counters and a full stop to HELP texts, so both are left out here (and
    /// must be there to leave out, or the scraped name or HELP would not be the one given).
    fn register(&self, registry: &mut Registry, metric: impl Metric) {
        let mut name = self.name;
        if metric.metric_type() == MetricType::Counter {
            debug_assert!(name.ends_with("_total"), "{name}: a counter ends in _total");
            name = name.strip_suffix("_total").unwrap_or(name);
        }
        debug_assert!(
            self.help.ends_with('.'),
            "{name}: HELP ends with a full stop"
        );
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
    pub(super) fn new(
        registry: &mut Registry,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        let c = CounterVec {
            desc: Desc { name, help, labels },
            family: Family::default(),
        };
        c.desc.register(registry, c.clone());
        c
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
    pub(super) fn new(
        registry: &mut Registry,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        let g = GaugeVec {
            desc: Desc { name, help, labels },
            family: Family::default(),
        };
        g.desc.register(registry, g.clone());
        g
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
    /// `buckets` makes an empty histogram with the family's buckets.
    pub(super) fn new(
        registry: &mut Registry,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: fn() -> Histogram,
    ) -> Self {
        let h = HistogramVec {
            desc: Desc { name, help, labels },
            family: Family::new_with_constructor(buckets),
        };
        h.desc.register(registry, h.clone());
        h
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
