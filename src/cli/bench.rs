//! `readerd bench`: many simulated readers and payments against the in-process emulator
//! with no added latency, to measure what the daemon itself costs.
//!
//! Customers tap at once, or after a delay drawn in `--tap-after A..B`; `--webhooks` has the
//! emulator deliver its signed events to an intake that verifies them and hands them to the
//! engine as the daemon's webhook route does; `--stripe-rate-limit N` has the emulator answer
//! `429` beyond N requests per second, and spends the engine's request budget at 90 % of it.
//!
//! Reported: payments per second; Stripe requests per payment by kind, counted from the
//! emulator's own request log, and its `429`s; tap → status recorded at p50 and p99; the most
//! readers busy at once; the daemon's added latency (acceptance to `process_payment_intent`
//! sent; reader outcome seen to status recorded) at p50 and p99; and the process's peak
//! resident memory (`VmHWM`, the in-process emulator included).

use crate::metrics::{endpoint_template, LatencyHistogram};
use crate::payments::directory::{MerchantInfo, ReaderInfo, StaticDirectory};
use crate::payments::engine::{CreatePayment, Engine, EngineConfig};
use crate::payments::machine::{CaptureMode, ChargeType, Status};
use crate::payments::stats::quantile;
use crate::sim::{self, SimConfig};
use crate::store::Registry;
use crate::stripe::params::{CreateLocation, RegisterReader};
use crate::stripe::webhook::{verify, DEFAULT_TOLERANCE_SECS};
use crate::stripe::wire::{Address, CapabilityStatus, Event, PaymentIntent, Reader};
use crate::stripe::{ClientConfig, RequestOptions, SecretKey, StripeClient};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Simulated readers.
    #[arg(long, default_value_t = 200)]
    pub readers: usize,
    /// Payments in total (spread round-robin over the readers).
    #[arg(long, default_value_t = 2000)]
    pub payments: usize,
    /// Merchants sharing the readers.
    #[arg(long, default_value_t = 4)]
    pub merchants: usize,
    /// The engine's fastest reader poll, milliseconds.
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// The store: sled:PATH, a directory (sled), or postgres:URL (an empty database); a
    /// temporary sled store otherwise.
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// Customers tap after a delay drawn in this range (`8s..8s`, `3s..15s`); at once when
    /// absent.
    #[arg(long, value_parser = parse_range)]
    pub tap_after: Option<(Duration, Duration)>,
    /// The emulator delivers signed webhook events, which the engine takes as observations.
    #[arg(long)]
    pub webhooks: bool,
    /// The emulator answers `429` beyond this many requests per second; the engine's budget
    /// is 90 % of it. No limit when absent.
    #[arg(long)]
    pub stripe_rate_limit: Option<u32>,
    /// Instead of the flow: fill the store in this directory with `--payments` final
    /// payments spread over `--days`, without the emulator, and mark it as a test store.
    #[arg(long, value_name = "DIR", conflicts_with = "store")]
    pub fill_store: Option<std::path::PathBuf>,
    /// Days the filled payments are spread over, ending now.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
}

/// `A..B`, two durations the humantime way.
fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}`: expected A..B, such as 3s..15s"))?;
    let a = humantime::parse_duration(a.trim()).map_err(|e| format!("`{a}`: {e}"))?;
    let b = humantime::parse_duration(b.trim()).map_err(|e| format!("`{b}`: {e}"))?;
    if b < a {
        return Err(format!("`{s}`: the end comes before the start"));
    }
    Ok((a, b))
}

/// The measurements of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub readers: usize,
    pub payments: usize,
    pub succeeded: usize,
    pub elapsed: Duration,
    /// Requests by kind (method and endpoint), from the emulator's log.
    pub requests: Vec<(String, u64)>,
    /// `429`s the emulator answered.
    pub rate_limited: u64,
    /// Customer tap → status recorded, p50 and p99.
    pub tap_to_recorded: (Option<Duration>, Option<Duration>),
    /// The most readers busy at once.
    pub busy_readers: usize,
    pub to_dispatch: (Option<Duration>, Option<Duration>),
    pub to_outcome: (Option<Duration>, Option<Duration>),
    pub peak_rss_kib: Option<u64>,
}

/// `VmHWM` of this process, KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the benchmark (inside a runtime).
pub async fn run_bench(args: &BenchArgs) -> Result<BenchReport, String> {
    let (tap_min, tap_max) = args.tap_after.unwrap_or_default();
    let intake = match args.webhooks {
        true => Some(Intake::bind().await?),
        false => None,
    };
    let sim = sim::spawn(SimConfig {
        auth_delay: Duration::ZERO,
        auto_present: Some(tap_min),
        auto_present_max: Some(tap_max),
        webhook: intake.as_ref().map(|i| sim::WebhookTarget {
            url: i.url.clone(),
            secret: WEBHOOK_SECRET.into(),
        }),
        rate_limit: args.stripe_rate_limit,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut cc = ClientConfig::new(sim.base_url(), SecretKey::new("sk_test_bench"));
    cc.requests_per_second = match args.stripe_rate_limit {
        Some(n) => (n * 9 / 10).max(1),
        None => 1_000_000,
    };
    // Setting up the fleet is not what is measured: no emulator limit until it is done.
    sim.set_rate_limit(None);
    let stripe = StripeClient::new(cc).map_err(|e| e.to_string())?;
    let dir = Arc::new(StaticDirectory::new());
    for i in 0..args.merchants.max(1) {
        let acct = sim.create_account("FR", "eur", CapabilityStatus::Active);
        dir.add_merchant(MerchantInfo {
            id: format!("m{i}"),
            account: acct,
            charge_type: ChargeType::Direct,
            enabled: true,
            country: Some("FR".into()),
            currency: Some("eur".into()),
            fee: None,
            platform_settles: false,
        });
    }
    let loc = stripe
        .create_location(
            &CreateLocation {
                display_name: "Bench".into(),
                address: Address {
                    country: Some("FR".into()),
                    city: Some("Paris".into()),
                    line1: Some("1 rue".into()),
                    postal_code: Some("75001".into()),
                    ..Default::default()
                },
                metadata: Default::default(),
            },
            &RequestOptions::platform().key("bench-loc"),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut readers = Vec::new();
    for i in 0..args.readers.max(1) {
        let r = stripe
            .register_reader(
                &RegisterReader {
                    registration_code: "simulated-wpe".into(),
                    label: Some(format!("bench-{i}")),
                    location: Some(loc.id.clone()),
                    metadata: Default::default(),
                },
                &RequestOptions::platform().key(format!("bench-reader-{i}")),
            )
            .await
            .map_err(|e| e.to_string())?;
        dir.add_reader(ReaderInfo {
            id: r.id.clone(),
            label: Some(r.label),
            location: Some(loc.id.clone()),
            country: Some("FR".into()),
            allowed_merchants: None,
            owner: None,
        });
        readers.push(r.id);
    }
    let registry = match &args.store {
        Some(s) => {
            let location = crate::store::Location::parse(s)
                .or_else(|e| {
                    if s.contains(':') {
                        Err(e)
                    } else {
                        Ok(crate::store::Location::Sled(s.into()))
                    }
                })
                .map_err(|e| format!("--store {e}"))?;
            let open = move || Registry::open_location(&location);
            tokio::task::spawn_blocking(open)
                .await
                .map_err(|e| e.to_string())?
        }
        None => Registry::temporary(),
    }
    .map_err(|e| e.to_string())?;
    let per_reader = args.payments.div_ceil(readers.len()) + 1;
    let engine = Engine::new(
        registry,
        stripe,
        dir,
        EngineConfig {
            queue_capacity: per_reader,
            poll_min: Duration::from_millis(args.poll_ms),
            poll_max: Duration::from_millis(args.poll_ms * 4),
            ..EngineConfig::default()
        },
        Default::default(),
    );
    engine.start().await.map_err(|e| e.to_string())?;
    if let Some(i) = intake {
        i.serve(engine.clone());
    }
    sim.set_rate_limit(args.stripe_rate_limit);
    sim.reset_requests();
    // When each payment's status was recorded, by PaymentIntent.
    let recorded = Arc::new(std::sync::Mutex::new(HashMap::<String, Instant>::new()));
    {
        let mut rx = engine.subscribe();
        let recorded = recorded.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(p) if p.status.is_final() => {
                        if let Some(pi) = p.payment_intent {
                            recorded
                                .lock()
                                .expect("recorded")
                                .entry(pi)
                                .or_insert_with(Instant::now);
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }
    let busy_peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (engine, readers, busy_peak) = (engine.clone(), readers.clone(), busy_peak.clone());
        tokio::spawn(async move {
            loop {
                let busy = readers
                    .iter()
                    .filter(|r| engine.reader_live(r).busy)
                    .count();
                busy_peak.fetch_max(busy, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    let started = Instant::now();
    let mut ids = Vec::with_capacity(args.payments);
    for i in 0..args.payments {
        let p = engine
            .create(
                CreatePayment {
                    merchant: format!("m{}", i % args.merchants.max(1)),
                    reader: readers[i % readers.len()].clone(),
                    amount: 1000 + 100 * (i as i64 % 50),
                    currency: "eur".into(),
                    capture: CaptureMode::Automatic,
                    description: None,
                    metadata: Default::default(),
                    tipping: None,
                    flow: None,
                    splits: None,
                    tip_merchant: None,
                },
                "bench",
                None,
            )
            .map_err(|e| e.to_string())?;
        ids.push(p.id);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while engine.settled_count() < ids.len() as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let mut succeeded = 0;
    for id in &ids {
        if engine.get(id).ok().flatten().map(|p| p.status) == Some(Status::Succeeded) {
            succeeded += 1;
        }
    }
    let stats = engine.stats();
    let mut requests = std::collections::BTreeMap::<String, u64>::new();
    let mut rate_limited = 0;
    for r in sim.requests() {
        if r.status == 429 {
            rate_limited += 1;
        }
        *requests
            .entry(format!("{} {}", r.method, endpoint_template(&r.path)))
            .or_default() += 1;
    }
    let recorded = recorded.lock().expect("recorded").clone();
    let mut taps = LatencyHistogram::default();
    for (pi, tapped) in sim.taps() {
        if let Some(at) = recorded.get(&pi) {
            taps.record(at.saturating_duration_since(tapped));
        }
    }
    Ok(BenchReport {
        readers: readers.len(),
        payments: ids.len(),
        succeeded,
        elapsed,
        requests: requests.into_iter().collect(),
        rate_limited,
        tap_to_recorded: (quantile(&taps, 0.5), quantile(&taps, 0.99)),
        busy_readers: busy_peak.load(std::sync::atomic::Ordering::Relaxed),
        to_dispatch: (
            quantile(&stats.to_dispatch, 0.5),
            quantile(&stats.to_dispatch, 0.99),
        ),
        to_outcome: (
            quantile(&stats.to_outcome, 0.5),
            quantile(&stats.to_outcome, 0.99),
        ),
        peak_rss_kib: peak_rss_kib(),
    })
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "{} payments on {} readers: {} succeeded in {:.2} s = {:.1} payments/s",
            self.payments,
            self.readers,
            self.succeeded,
            secs,
            self.payments as f64 / secs.max(1e-9)
        )?;
        writeln!(
            f,
            "readers busy at once (most): {}; 429s from the emulator: {}",
            self.busy_readers, self.rate_limited
        )?;
        writeln!(
            f,
            "customer tap -> status recorded: p50 {}  p99 {}",
            ms(self.tap_to_recorded.0),
            ms(self.tap_to_recorded.1)
        )?;
        writeln!(f, "Stripe requests per payment (the emulator's log):")?;
        let mut total = 0;
        for (k, v) in &self.requests {
            total += v;
            writeln!(
                f,
                "  {k:<60} {:.2}",
                *v as f64 / self.payments.max(1) as f64
            )?;
        }
        writeln!(
            f,
            "  {:<60} {:.2}",
            "total",
            total as f64 / self.payments.max(1) as f64
        )?;
        writeln!(
            f,
            "daemon latency, job taken from the reader's queue -> process_payment_intent sent: p50 {}  p99 {}",
            ms(self.to_dispatch.0),
            ms(self.to_dispatch.1)
        )?;
        writeln!(
            f,
            "daemon latency, reader outcome seen -> status recorded: p50 {}  p99 {}",
            ms(self.to_outcome.0),
            ms(self.to_outcome.1)
        )?;
        write!(
            f,
            "peak memory (VmHWM, whole process incl. the emulator): {}",
            self.peak_rss_kib
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        )
    }
}

/// The signing secret of the benchmark's webhook endpoint.
const WEBHOOK_SECRET: &str = "whsec_bench";

/// The benchmark's webhook intake: verifies each event's signature, as the daemon's route
/// does, and hands the reader or PaymentIntent it carries to the engine.
struct Intake {
    listener: tokio::net::TcpListener,
    url: String,
}

impl Intake {
    async fn bind() -> Result<Intake, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        Ok(Intake {
            listener,
            url: format!("http://{addr}/webhooks/stripe"),
        })
    }

    fn serve(self, engine: Engine) {
        use axum::http::{HeaderMap, StatusCode};
        let app = axum::Router::new().route(
            "/webhooks/stripe",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let engine = engine.clone();
                async move {
                    let sig = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let now = crate::clock::now_secs();
                    if verify(WEBHOOK_SECRET, sig, &body, now, DEFAULT_TOLERANCE_SECS).is_err() {
                        return StatusCode::BAD_REQUEST;
                    }
                    let Ok(ev) = serde_json::from_slice::<Event>(&body) else {
                        return StatusCode::BAD_REQUEST;
                    };
                    if ev.kind.starts_with("terminal.reader.") {
                        if let Ok(r) = serde_json::from_value::<Reader>(ev.data.object) {
                            engine.event_reader(r, ev.created);
                        }
                    } else if ev.kind.starts_with("payment_intent.") {
                        if let Ok(pi) = serde_json::from_value::<PaymentIntent>(ev.data.object) {
                            engine.event_intent(&pi, ev.account.as_deref());
                        }
                    }
                    StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(self.listener, app).await;
        });
    }
}

/// The `readerd bench` command.
pub fn main(args: BenchArgs) -> ExitCode {
    if let Some(dir) = &args.fill_store {
        return match super::history::fill_store(
            dir,
            args.payments,
            args.merchants,
            args.readers,
            args.days,
        ) {
            Ok(secs) => {
                println!(
                    "{} final payments written to {} in {secs:.1} s (a test store: readerd run warns about it)",
                    args.payments,
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("readerd bench --fill-store: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(rt) = crate::cli::runtime("readerd", true) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(run_bench(&args)) {
        Ok(r) => {
            println!("{r}");
            if r.succeeded == r.payments {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("readerd bench: {e}");
            ExitCode::FAILURE
        }
    }
}
