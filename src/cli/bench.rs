//! `readerd bench`: many simulated readers and payments against the in-process emulator
//! with no added latency, to measure what the daemon itself costs.
//!
//! Reported: payments per second, Stripe requests per payment by kind, the daemon's added
//! latency (acceptance to `process_payment_intent` sent; reader outcome seen to status
//! recorded) at p50 and p99, and the process's peak resident memory (`VmHWM`).

use crate::payments::directory::{MerchantInfo, ReaderInfo, StaticDirectory};
use crate::payments::engine::{CreatePayment, Engine, EngineConfig};
use crate::payments::machine::{CaptureMode, ChargeType, Status};
use crate::payments::stats::quantile;
use crate::sim::{self, SimConfig};
use crate::store::Registry;
use crate::stripe::params::{CreateLocation, RegisterReader};
use crate::stripe::wire::{Address, CapabilityStatus};
use crate::stripe::{ClientConfig, RequestOptions, SecretKey, StripeClient};
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
}

/// The measurements of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub readers: usize,
    pub payments: usize,
    pub succeeded: usize,
    pub elapsed: Duration,
    pub requests: Vec<(String, u64)>,
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
    let sim = sim::spawn(SimConfig {
        auth_delay: Duration::ZERO,
        auto_present: Some(Duration::ZERO),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut cc = ClientConfig::new(sim.base_url(), SecretKey::new("sk_test_bench"));
    cc.requests_per_second = 1_000_000;
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
            country: Some("FR".into()),
            allowed_merchants: None,
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
    Ok(BenchReport {
        readers: readers.len(),
        payments: ids.len(),
        succeeded,
        elapsed,
        requests: stats
            .requests
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
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
        writeln!(f, "Stripe requests per payment:")?;
        let mut total = 0;
        for (k, v) in &self.requests {
            total += v;
            writeln!(
                f,
                "  {k:<26} {:.2}",
                *v as f64 / self.payments.max(1) as f64
            )?;
        }
        writeln!(
            f,
            "  {:<26} {:.2}",
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

/// The `readerd bench` command.
pub fn main(args: BenchArgs) -> ExitCode {
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
