//! A history that grows for years: `readerd export` (JSON lines of a period, through the
//! API), `readerd archive` (archive now, or restore archive files, on a stopped daemon's
//! store), and `readerd bench --fill-store` (a store of N final payments for measurement).

use super::client::{block_on, ApiArgs, ApiClient, ClientError};
use crate::clock::Timestamp;
use crate::config::Config;
use crate::payments::directory::StaticDirectory;
use crate::payments::engine::{restore, Engine, EngineConfig};
use crate::payments::index;
use crate::payments::machine::{
    CaptureMode, ChargeType, HistoryEntry, NewPayment, Payment, Source, Status, Step,
};
use crate::store::{Batch, Registry};
use crate::stripe::{ClientConfig, SecretKey, StripeClient};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// `readerd export`: the payments created in `[from, to)`, one JSON object a line.
#[derive(Args, Debug)]
pub struct ExportCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The first day or time (`2026-01-01` or RFC 3339), included.
    #[arg(long)]
    pub from: String,
    /// The day or time the period ends, excluded.
    #[arg(long)]
    pub to: String,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A day (`2026-01-01`, midnight UTC) or an RFC 3339 time.
fn parse_when(s: &str) -> Option<Timestamp> {
    Timestamp::parse(s).or_else(|| Timestamp::parse(&format!("{s}T00:00:00Z")))
}

impl ExportCmd {
    pub fn run(self) -> ExitCode {
        block_on(async move {
            let (Some(from), Some(to)) = (parse_when(&self.from), parse_when(&self.to)) else {
                return Err(ClientError::Usage(
                    "--from and --to take a day (2026-01-01) or an RFC 3339 time".into(),
                ));
            };
            let c = ApiClient::new(&self.api)?;
            let mut out: Box<dyn Write> = match &self.out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .map_err(|e| ClientError::Usage(format!("{}: {e}", p.display())))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let path = format!(
                "/v1/payments?limit=1000&created_gte={}&created_lt={}",
                from.to_rfc3339(),
                to.to_rfc3339()
            );
            let mut failed = None;
            let n = c
                .get_all_pages(&path, None, |items| {
                    for p in items {
                        if let Err(e) = writeln!(out, "{p}") {
                            failed.get_or_insert(e);
                        }
                    }
                })
                .await?;
            if let Some(e) = failed.or_else(|| out.flush().err()) {
                return Err(ClientError::Unexpected(format!("writing the export: {e}")));
            }
            eprintln!("{n} payments exported");
            Ok(())
        })
    }
}

/// `readerd archive …`: on the store of a stopped daemon.
#[derive(Args, Debug)]
pub struct ArchiveCmd {
    /// The daemon's config file (its `[store]` section is used).
    #[arg(long, value_name = "PATH")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub action: ArchiveAction,
}

#[derive(Subcommand, Debug)]
pub enum ArchiveAction {
    /// Archive now the final payments created before `--before` (default: `keep_final` ago).
    Now {
        #[arg(long)]
        before: Option<String>,
    },
    /// Put the payments of archive files back into the live store.
    Restore {
        /// `payments-YYYY-MM-DD.jsonl` files of `[store] archive_dir`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// An engine on `registry` that can archive but reaches no Stripe (nothing here calls it).
fn offline_engine(registry: Registry) -> Result<Engine, String> {
    let stripe = StripeClient::new(ClientConfig::new(
        "http://127.0.0.1:9",
        SecretKey::new("sk_test_offline"),
    ))
    .map_err(|e| e.to_string())?;
    Ok(Engine::new(
        registry,
        stripe,
        Arc::new(StaticDirectory::new()),
        EngineConfig::default(),
        Default::default(),
    ))
}

impl ArchiveCmd {
    pub fn run(self) -> ExitCode {
        match self.go() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("readerd archive: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn go(self) -> Result<(), String> {
        let config = Config::load(&self.config).map_err(|e| e.to_string())?;
        let registry = Registry::open_with_cache(
            &config.store.path,
            config.store.cache_mb.saturating_mul(1024 * 1024),
        )
        .map_err(|e| e.to_string())?;
        match self.action {
            ArchiveAction::Restore { files } => {
                let n = restore(&registry, &files).map_err(|e| e.to_string())?;
                println!("{n} payments restored");
                Ok(())
            }
            ArchiveAction::Now { before } => {
                let dir = config
                    .store
                    .archive_dir
                    .clone()
                    .ok_or("[store] archive_dir is not set")?;
                let before = match (before, config.store.keep_final) {
                    (Some(b), _) => parse_when(&b).ok_or("--before takes a day or a time")?,
                    (None, Some(k)) => Timestamp::now() - k.0,
                    (None, None) => return Err("give --before or set [store] keep_final".into()),
                };
                let (report, secs) = archive_now(registry, &dir, before)?;
                println!(
                    "{} payments archived ({} held: money still moving) in {secs:.2} s = {:.0} payments/s",
                    report.archived,
                    report.held,
                    report.archived as f64 / secs.max(1e-9)
                );
                Ok(())
            }
        }
    }
}

/// Archives on a runtime of its own; answers the report and the seconds it took.
pub fn archive_now(
    registry: Registry,
    dir: &Path,
    before: Timestamp,
) -> Result<(crate::payments::engine::ArchiveReport, f64), String> {
    let rt = super::runtime("readerd archive", false).ok_or("no runtime")?;
    rt.block_on(async {
        let engine = offline_engine(registry)?;
        let t = Instant::now();
        let r = engine
            .archive_final(dir, before, None)
            .await
            .map_err(|e| e.to_string())?;
        Ok((r, t.elapsed().as_secs_f64()))
    })
}

/// Fills the store at `dir` with `n` final payments spread over the last `days` days, on
/// `merchants` merchants and `readers` readers, without Stripe or the emulator; marks it
/// as a test store. Answers the seconds it took.
pub fn fill_store(
    dir: &Path,
    n: usize,
    merchants: usize,
    readers: usize,
    days: u64,
) -> Result<f64, String> {
    let registry = Registry::open(dir).map_err(|e| e.to_string())?;
    registry
        .mark_test_store("filled by readerd bench --fill-store: never on Stripe")
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let now = Timestamp::now().as_ms();
    let span = (days.max(1) * 86_400_000) as i64;
    let mut batch = Batch::default();
    for i in 0..n {
        // Oldest first, evenly spread, so that creation order is insertion order.
        let at = Timestamp::from_ms(now - span + (span / n.max(1) as i64) * i as i64);
        let p = filled_payment(i, at, merchants.max(1), readers.max(1));
        index::stage(&mut batch, None, &p);
        if (i + 1) % 1000 == 0 {
            registry
                .apply(std::mem::take(&mut batch))
                .map_err(|e| e.to_string())?;
        }
        // A first sign of life early, then one line per 100,000.
        if i + 1 == 10_000 || (i + 1) % 100_000 == 0 {
            eprintln!(
                "{} payments written ({:.0} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    registry.apply(batch).map_err(|e| e.to_string())?;
    Ok(started.elapsed().as_secs_f64())
}

/// A final payment as the flow leaves it: mostly succeeded, some canceled or failed.
fn filled_payment(i: usize, at: Timestamp, merchants: usize, readers: usize) -> Payment {
    let id = format!("pay_fill{:016}", i);
    let mut p = Payment::new(
        NewPayment {
            id: id.clone(),
            merchant: format!("m{}", i % merchants),
            account: format!("acct_fill{}", i % merchants),
            charge_type: ChargeType::Direct,
            reader: format!("tmr_fill{}", i % readers),
            amount: 500 + (i as i64 % 97) * 25,
            currency: "eur".into(),
            capture: CaptureMode::Automatic,
            description: Some(format!("order {i}")),
            metadata: Default::default(),
            application_fee_amount: None,
            on_behalf_of: None,
            intent_key: format!("readerd:pi:{id}"),
            skip_tipping: false,
        },
        at,
    );
    let status = match i % 20 {
        0 => Status::Canceled,
        1 => Status::Failed,
        _ => Status::Succeeded,
    };
    let done = Timestamp::from_ms(at.as_ms() + 4_000);
    p.payment_intent = Some(format!("pi_fill{:016}", i));
    p.attempt = 1;
    p.attempt_key = Some(format!("readerd:ppi:{id}:1"));
    p.step = Step::Settled;
    p.status = status;
    if status == Status::Succeeded {
        p.amount_captured = p.amount;
    }
    for (st, ms) in [(Status::Processing, 300), (status, 4_000)] {
        p.history.push(HistoryEntry {
            status: st,
            at: Timestamp::from_ms(at.as_ms() + ms),
            source: Source::Poll,
            note: None,
        });
    }
    p.updated_at = done;
    p
}
