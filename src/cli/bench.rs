//! `readerd bench`: many simulated readers and payments against the emulator with no added
//! latency, to measure what the daemon itself costs.
//!
//! The emulator runs as a child process (this binary's `readerd sim`, stopped with the
//! bench, and by itself should the bench die: it stops when its stdin closes), reached over
//! loopback HTTP for everything: Stripe's API, its control routes (accounts, the rate limit,
//! the request counts, the customers' taps) and its webhooks. So this process holds the
//! daemon's part only (engine, store, webhook intake, plus the bench's small client), and its
//! memory is the daemon's, reported apart from the emulator's.
//!
//! Customers tap at once, or after a delay drawn in `--tap-after A..B`; `--webhooks` has the
//! emulator deliver its signed events to an intake that verifies them and hands them to the
//! engine as the daemon's webhook route does; `--stripe-rate-limit N` has the emulator answer
//! `429` beyond N requests per second, and spends the engine's request budget at 90 % of it.
//! `--registered N` registers N readers (at most `--per-location` per location), of which
//! `--readers`, spread over them, take the payments; `--in-flight N` keeps at most N payments
//! submitted and not ended instead of submitting them all at once.
//!
//! Reported: payments per second; Stripe requests per payment by kind, counted by the
//! emulator, and its `429`s; tap → status recorded at p50 and p99; the most readers busy at
//! once; the daemon's added latency (acceptance to `process_payment_intent` sent; reader
//! outcome seen to status recorded) at p50 and p99; the daemon's peak and final resident
//! memory (`VmHWM`, `VmRSS` of this process) and the emulator's (of its process); with
//! 20,000 payments or more, the daemon's `VmRSS` after the first 10,000 ended as well.

use crate::metrics::LatencyHistogram;
use crate::payments::directory::{MerchantInfo, ReaderInfo, StaticDirectory};
use crate::payments::engine::{CreatePayment, Engine, EngineConfig};
use crate::payments::machine::{CaptureMode, ChargeType, Status};
use crate::payments::stats::quantile;
use crate::sim::RequestCount;
use crate::store::Registry;
use crate::stripe::params::{CreateLocation, RegisterReader};
use crate::stripe::webhook::{verify, DEFAULT_TOLERANCE_SECS};
use crate::stripe::wire::{Address, Event, PaymentIntent, Reader};
use crate::stripe::{ClientConfig, RequestOptions, SecretKey, StripeClient};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Simulated readers that take payments.
    #[arg(long, default_value_t = 200)]
    pub readers: usize,
    /// Readers registered in all (the daemon knows every one), of which `--readers`, spread
    /// over them, take the payments; `--readers` when absent.
    #[arg(long)]
    pub registered: Option<usize>,
    /// Registered readers per location, at most (as at a venue: a location per stand).
    #[arg(long, default_value_t = 100)]
    pub per_location: usize,
    /// Payments in total (spread round-robin over the readers).
    #[arg(long, default_value_t = 2000)]
    pub payments: usize,
    /// At most this many payments submitted and not ended at once, the next submitted as
    /// one ends; all submitted at the start when absent.
    #[arg(long)]
    pub in_flight: Option<usize>,
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

/// Resident memory of one process, KiB, from its `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmHWM`: the peak.
    pub peak_kib: Option<u64>,
    /// `VmRSS`: now.
    pub rss_kib: Option<u64>,
}

impl Memory {
    /// This process (`None`) or another.
    pub fn of(pid: Option<u32>) -> Memory {
        let path = match pid {
            Some(pid) => format!("/proc/{pid}/status"),
            None => "/proc/self/status".into(),
        };
        let status = std::fs::read_to_string(path).unwrap_or_default();
        Memory {
            peak_kib: status_kib(&status, "VmHWM:"),
            rss_kib: status_kib(&status, "VmRSS:"),
        }
    }
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The measurements of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub readers: usize,
    /// Readers registered (the daemon knows them all) and their locations.
    pub registered: usize,
    pub locations: usize,
    pub payments: usize,
    pub succeeded: usize,
    pub elapsed: Duration,
    /// Requests by kind (method and endpoint), counted by the emulator.
    pub requests: Vec<(String, u64)>,
    /// `429`s the emulator answered.
    pub rate_limited: u64,
    /// Customer tap → status recorded, p50 and p99.
    pub tap_to_recorded: (Option<Duration>, Option<Duration>),
    /// The most readers busy at once.
    pub busy_readers: usize,
    pub to_dispatch: (Option<Duration>, Option<Duration>),
    pub to_outcome: (Option<Duration>, Option<Duration>),
    /// The daemon's peak resident memory (`VmHWM` of this process), as before.
    pub peak_rss_kib: Option<u64>,
    /// The daemon (this process) after the run, before the bench's own read of the results.
    pub daemon: Memory,
    /// The daemon's `VmRSS` when the first payment was submitted (fleet set up, engine
    /// started), KiB.
    pub daemon_rss_at_start_kib: Option<u64>,
    /// The daemon's `VmRSS` once the first 10,000 payments had ended: (payments ended when
    /// it was read, KiB).
    pub daemon_rss_at_10k: Option<(u64, u64)>,
    /// The emulator's process after the run.
    pub emulator: Memory,
}

/// `VmHWM` of this process, KiB.
pub fn peak_rss_kib() -> Option<u64> {
    Memory::of(None).peak_kib
}

/// After this many payments ended, the daemon's memory is sampled for the long-run line.
const FIRST_SAMPLE_AT: u64 = 10_000;

/// The emulator, `readerd sim` in a child process of this binary, and a client of its
/// control routes. Dropping it kills the process; should this process die first, the
/// emulator stops when its stdin (held here) closes.
struct SimProcess {
    child: std::process::Child,
    /// Its stdout, kept open after the address was read from it.
    _stdout: Option<std::io::BufReader<std::process::ChildStdout>>,
    base: String,
    http: reqwest::Client,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SimProcess {
    async fn start(
        taps: (Duration, Duration),
        webhook_url: Option<&str>,
    ) -> Result<SimProcess, String> {
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(["sim", "--listen", "127.0.0.1:0", "--seed", "1"])
            .args(["--auth-delay", "0s", "--exit-with-stdin"])
            .arg("--auto-present")
            .arg(format!("{}ms", taps.0.as_millis()))
            .arg("--auto-present-max")
            .arg(format!("{}ms", taps.1.as_millis()))
            // One log line per request would cost the emulator more than its answers.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = webhook_url {
            // The secret through the environment, as `readerd sim` reads it, not argv.
            cmd.args(["--webhook-url", url])
                .env("READERD_SIM_WEBHOOK_SECRET", WEBHOOK_SECRET);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the emulator: {e}"))?;
        let stdout = child.stdout.take();
        let mut sim = SimProcess {
            child,
            _stdout: None,
            base: String::new(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?,
        };
        let stdout = stdout.ok_or("the emulator's stdout")?;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut out = std::io::BufReader::new(stdout);
            let mut line = String::new();
            out.read_line(&mut line).map(|_| (line, out))
        });
        let (line, out) = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .map_err(|_| "the emulator did not announce its address in 30 s".to_string())?
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the emulator's stdout: {e}"))?;
        sim._stdout = Some(out);
        sim.base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .ok_or_else(|| format!("the emulator did not announce its address: {line:?}"))?
            .to_string();
        Ok(sim)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn control<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        route: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, String> {
        let mut req = self
            .http
            .request(method, format!("{}/_sim/{route}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("/_sim/{route}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("/_sim/{route}: {status}: {text}"));
        }
        resp.json().await.map_err(|e| format!("/_sim/{route}: {e}"))
    }

    async fn create_account(&self, country: &str, currency: &str) -> Result<String, String> {
        let body = serde_json::json!({
            "country": country,
            "default_currency": currency,
            "card_payments": "active",
        });
        let v: serde_json::Value = self
            .control(reqwest::Method::POST, "accounts", Some(body))
            .await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("/_sim/accounts answered no id: {v}"))
    }

    async fn set_rate_limit(&self, per_second: Option<u32>) -> Result<(), String> {
        let body = serde_json::json!({ "per_second": per_second });
        self.control::<serde_json::Value>(reqwest::Method::POST, "rate-limit", Some(body))
            .await
            .map(drop)
    }

    async fn reset_requests(&self) -> Result<(), String> {
        self.control::<serde_json::Value>(reqwest::Method::POST, "reset-requests", None)
            .await
            .map(drop)
    }

    async fn request_counts(&self) -> Result<Vec<RequestCount>, String> {
        self.control(reqwest::Method::GET, "requests/counts", None)
            .await
    }

    /// The customers' taps after the first `after`: (PaymentIntent, when).
    async fn taps_after(&self, after: usize) -> Result<Vec<(String, SystemTime)>, String> {
        #[derive(serde::Deserialize)]
        struct Tap {
            payment_intent: String,
            tapped_at_us: u64,
        }
        let taps: Vec<Tap> = self
            .control(reqwest::Method::GET, &format!("taps?after={after}"), None)
            .await?;
        Ok(taps
            .into_iter()
            .map(|t| {
                (
                    t.payment_intent,
                    SystemTime::UNIX_EPOCH + Duration::from_micros(t.tapped_at_us),
                )
            })
            .collect())
    }
}

/// Customer tap → status recorded, matched as both are learnt (taps from the emulator,
/// statuses from the engine) and then forgotten, so that the bench's own memory does not
/// grow with the payments.
#[derive(Default)]
struct TapClock {
    taps_seen: usize,
    tapped: HashMap<String, SystemTime>,
    recorded: HashMap<String, SystemTime>,
    histogram: LatencyHistogram,
}

impl TapClock {
    fn recorded(&mut self, pi: String, at: SystemTime) {
        match self.tapped.remove(&pi) {
            Some(tapped) => self
                .histogram
                .record(at.duration_since(tapped).unwrap_or_default()),
            None => {
                self.recorded.entry(pi).or_insert(at);
            }
        }
    }

    fn tapped(&mut self, taps: Vec<(String, SystemTime)>) {
        self.taps_seen += taps.len();
        for (pi, tapped) in taps {
            match self.recorded.remove(&pi) {
                Some(at) => self
                    .histogram
                    .record(at.duration_since(tapped).unwrap_or_default()),
                None => {
                    self.tapped.insert(pi, tapped);
                }
            }
        }
    }
}

/// Which payments were submitted and not seen to end yet, and how many succeeded. A
/// payment is submitted under this lock, so its end cannot be heard before it is here.
#[derive(Default)]
struct Ends {
    open: HashSet<String>,
    succeeded: usize,
}

impl Ends {
    /// True the first time a submitted payment is seen to end.
    fn ended(&mut self, id: &str, succeeded: bool) -> bool {
        let first = self.open.remove(id);
        if first && succeeded {
            self.succeeded += 1;
        }
        first
    }
}

/// Runs the benchmark (inside a runtime).
pub async fn run_bench(args: &BenchArgs) -> Result<BenchReport, String> {
    let (tap_min, tap_max) = args.tap_after.unwrap_or_default();
    let busy_count = args.readers.max(1);
    let registered = args.registered.unwrap_or(busy_count);
    if registered < busy_count {
        return Err(format!(
            "--registered {registered} is fewer than the {busy_count} --readers"
        ));
    }
    let per_location = args.per_location.max(1);
    let intake = match args.webhooks {
        true => Some(Intake::bind().await?),
        false => None,
    };
    // Set up with no emulator limit: setting up the fleet is not what is measured.
    let sim =
        SimProcess::start((tap_min, tap_max), intake.as_ref().map(|i| i.url.as_str())).await?;
    let mut cc = ClientConfig::new(sim.base.clone(), SecretKey::new("sk_test_bench"));
    cc.requests_per_second = match args.stripe_rate_limit {
        Some(n) => (n * 9 / 10).max(1),
        None => 1_000_000,
    };
    // Setting up is not measured either: its own client, outside the engine's budget.
    let setup = StripeClient::new(ClientConfig {
        requests_per_second: 1_000_000,
        ..cc.clone()
    })
    .map_err(|e| e.to_string())?;
    let stripe = StripeClient::new(cc).map_err(|e| e.to_string())?;
    let dir = Arc::new(StaticDirectory::new());
    for i in 0..args.merchants.max(1) {
        let acct = sim.create_account("FR", "eur").await?;
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
    let locations = registered.div_ceil(per_location);
    let mut location_ids = Vec::with_capacity(locations);
    for l in 0..locations {
        let name = match locations {
            1 => "Bench".to_string(),
            _ => format!("Bench {l}"),
        };
        let loc = setup
            .create_location(
                &CreateLocation {
                    display_name: name,
                    address: Address {
                        country: Some("FR".into()),
                        city: Some("Paris".into()),
                        line1: Some("1 rue".into()),
                        postal_code: Some("75001".into()),
                        ..Default::default()
                    },
                    metadata: Default::default(),
                },
                &RequestOptions::platform().key(format!("bench-loc-{l}")),
            )
            .await
            .map_err(|e| e.to_string())?;
        location_ids.push(loc.id);
    }
    // Registered a few at a time, in order: reader i at location i / per_location.
    let all: Vec<String> = futures_util::stream::iter(0..registered)
        .map(|i| {
            let (setup, dir) = (&setup, &dir);
            let location = location_ids[i / per_location].clone();
            async move {
                let r = setup
                    .register_reader(
                        &RegisterReader {
                            registration_code: "simulated-wpe".into(),
                            label: Some(format!("bench-{i}")),
                            location: Some(location.clone()),
                            metadata: Default::default(),
                        },
                        &RequestOptions::platform().key(format!("bench-reader-{i}")),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                dir.add_reader(ReaderInfo {
                    id: r.id.clone(),
                    label: Some(r.label),
                    location: Some(location),
                    country: Some("FR".into()),
                    allowed_merchants: None,
                    owner: None,
                });
                Ok::<_, String>(r.id)
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    // The readers that take payments, spread evenly over the registered ones (and so over
    // the locations), as busy stands are at a venue.
    let readers: Vec<String> = (0..busy_count)
        .map(|k| all[k * registered / busy_count].clone())
        .collect();
    drop((all, setup));
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
    sim.set_rate_limit(args.stripe_rate_limit).await?;
    sim.reset_requests().await?;
    let ends = Arc::new(Mutex::new(Ends::default()));
    let clock = Arc::new(Mutex::new(TapClock::default()));
    let watcher = {
        let mut rx = engine.subscribe();
        let (ends, clock) = (ends.clone(), clock.clone());
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(p) if p.status.is_final() => {
                        let first = ends
                            .lock()
                            .expect("ends")
                            .ended(&p.id, p.status == Status::Succeeded);
                        if let Some(pi) = p.payment_intent.filter(|_| first) {
                            clock.lock().expect("clock").recorded(pi, SystemTime::now());
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        })
    };
    let busy_peak = Arc::new(AtomicUsize::new(0));
    let busy_watch = {
        let (engine, readers, busy_peak) = (engine.clone(), readers.clone(), busy_peak.clone());
        tokio::spawn(async move {
            loop {
                let busy = readers
                    .iter()
                    .filter(|r| engine.reader_live(r).busy)
                    .count();
                busy_peak.fetch_max(busy, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let at_start = Memory::of(None).rss_kib;
    let mut taps_at = Instant::now();
    let mut at_10k = None;
    let mut sample = |settled: u64| {
        if at_10k.is_none() && settled >= FIRST_SAMPLE_AT {
            at_10k = Memory::of(None).rss_kib.map(|kib| (settled, kib));
        }
    };
    let started = Instant::now();
    // Ten minutes, and more for long runs: 10 ms per payment.
    let deadline =
        started + Duration::from_secs(600) + Duration::from_millis(10) * args.payments as u32;
    let total = args.payments as u64;
    let mut submitted = 0usize;
    loop {
        let settled = engine.settled_count();
        sample(settled);
        if settled >= total || Instant::now() >= deadline {
            break;
        }
        let room = match args.in_flight {
            Some(n) => (settled as usize + n.max(1)).saturating_sub(submitted),
            None => usize::MAX,
        };
        let wave = room.min(args.payments - submitted);
        for _ in 0..wave {
            let i = submitted;
            if i % 256 == 0 {
                sample(engine.settled_count());
            }
            let mut ends = ends.lock().expect("ends");
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
            ends.open.insert(p.id);
            submitted += 1;
        }
        if taps_at.elapsed() >= Duration::from_secs(1) {
            let seen = clock.lock().expect("clock").taps_seen;
            let taps = sim.taps_after(seen).await?;
            clock.lock().expect("clock").tapped(taps);
            taps_at = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    // Memory first, before the bench reads its results.
    let daemon = Memory::of(None);
    let emulator = Memory::of(Some(sim.pid()));
    busy_watch.abort();
    // Payments whose end the watcher missed (its channel lagged): read from the store.
    tokio::time::sleep(Duration::from_millis(50)).await;
    watcher.abort();
    let (mut succeeded, missed) = {
        let mut ends = ends.lock().expect("ends");
        (ends.succeeded, std::mem::take(&mut ends.open))
    };
    for id in &missed {
        if engine.get(id).ok().flatten().map(|p| p.status) == Some(Status::Succeeded) {
            succeeded += 1;
        }
    }
    let stats = engine.stats();
    let mut requests = std::collections::BTreeMap::<String, u64>::new();
    let mut rate_limited = 0;
    for c in sim.request_counts().await? {
        if c.status == 429 {
            rate_limited += c.count;
        }
        *requests
            .entry(format!("{} {}", c.method, c.endpoint))
            .or_default() += c.count;
    }
    let taps = {
        let seen = clock.lock().expect("clock").taps_seen;
        sim.taps_after(seen).await?
    };
    let mut clock = clock.lock().expect("clock");
    clock.tapped(taps);
    Ok(BenchReport {
        readers: readers.len(),
        registered,
        locations,
        // All that were asked for: any not submitted by the deadline count as not succeeded.
        payments: args.payments,
        succeeded,
        elapsed,
        requests: requests.into_iter().collect(),
        rate_limited,
        tap_to_recorded: (
            quantile(&clock.histogram, 0.5),
            quantile(&clock.histogram, 0.99),
        ),
        busy_readers: busy_peak.load(Ordering::Relaxed),
        to_dispatch: (
            quantile(&stats.to_dispatch, 0.5),
            quantile(&stats.to_dispatch, 0.99),
        ),
        to_outcome: (
            quantile(&stats.to_outcome, 0.5),
            quantile(&stats.to_outcome, 0.99),
        ),
        peak_rss_kib: daemon.peak_kib,
        daemon,
        daemon_rss_at_start_kib: at_start,
        daemon_rss_at_10k: at_10k.filter(|_| args.payments as u64 >= 2 * FIRST_SAMPLE_AT),
        emulator,
    })
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let registered = match self.registered == self.readers {
            true => String::new(),
            false => format!(" of {} registered", self.registered),
        };
        writeln!(
            f,
            "{} payments on {} readers{registered} at {} location{}: {} succeeded in {:.2} s = {:.1} payments/s",
            self.payments,
            self.readers,
            self.locations,
            if self.locations == 1 { "" } else { "s" },
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
        writeln!(f, "Stripe requests per payment (counted by the emulator):")?;
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
        writeln!(
            f,
            "daemon memory (this process: engine, store, webhook intake, the bench's client): peak VmHWM {}, VmRSS at the first payment {}, after the run {}",
            mib(self.daemon.peak_kib),
            mib(self.daemon_rss_at_start_kib),
            mib(self.daemon.rss_kib)
        )?;
        if let Some((ended, at_10k)) = self.daemon_rss_at_10k {
            let ratio = self
                .daemon
                .rss_kib
                .map(|end| format!("{:.3}", end as f64 / at_10k.max(1) as f64))
                .unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "daemon VmRSS after the first {FIRST_SAMPLE_AT} payments ended (read at {ended}): {}; after the run: {} (ratio {ratio})",
                mib(Some(at_10k)),
                mib(self.daemon.rss_kib)
            )?;
        }
        write!(
            f,
            "emulator memory (its own process, apart): peak VmHWM {}, VmRSS after the run {}",
            mib(self.emulator.peak_kib),
            mib(self.emulator.rss_kib)
        )
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
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
