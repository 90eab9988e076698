//! Retention: final payments older than `[store] keep_final` move from the live store to
//! daily JSON-lines files (`payments-YYYY-MM-DD.jsonl` by creation day, UTC) under
//! `[store] archive_dir`, and can be put back ([`restore`]).
//!
//! Crash-safe, a chunk of one day's payments at a time:
//! 1. the chunk's file and its length before the chunk are written to the store (meta key
//!    [`PENDING_KEY`]);
//! 2. the chunk's lines are appended to the file and the file is fsynced;
//! 3. one batch removes the payments, their refunds and index entries, puts their tombstones
//!    (a list cursor naming one still pages) and removes the pending mark.
//!
//! A crash before 3 leaves the payments live and the mark on disk: the next run first cuts
//! the file back to the marked length, so a line is never written twice and never lost.
//! A payment with money still moving (a refund pending or requiring action, a transfer or
//! a transfer reversal still owed) is never archived; neither is one that is not final.

use super::{Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::index;
use crate::payments::machine::Payment;
use crate::payments::refunds::{self, RefundRecord, RefundStatus};
use crate::store::{Batch, Registry, StoreError, Tree};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The meta key of an archive chunk under way.
pub const PENDING_KEY: &str = "archive_pending";

/// Payments per chunk (one fsync and one store batch each).
const CHUNK: usize = 500;

/// What an archive chunk under way may have appended to.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    file: PathBuf,
    len: u64,
}

/// One line of an archive file: the payment's record and its refunds, as stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchivedPayment {
    pub payment: Payment,
    #[serde(default)]
    pub refunds: Vec<ArchivedRefund>,
}

/// A refund record with its store key.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchivedRefund {
    pub key: String,
    pub record: RefundRecord,
}

/// What an archive run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    pub archived: usize,
    /// Old enough and final, but with money still moving.
    pub held: usize,
}

/// The archive file of a payment's creation day.
pub fn file_for(dir: &Path, created: Timestamp) -> PathBuf {
    let day = &created.to_rfc3339()[..10];
    dir.join(format!("payments-{day}.jsonl"))
}

fn io(e: std::io::Error, what: &Path) -> PaymentError {
    StoreError::Engine(format!("archive file {}: {e}", what.display())).into()
}

/// Whether a refund of the payment still moves money (its own, or a transfer reversal it
/// owes).
fn refund_open(r: &RefundRecord) -> bool {
    matches!(
        r.status,
        RefundStatus::Pending | RefundStatus::RequiresAction
    ) || r.reversal_due()
}

/// Cuts back the file of a chunk that a crash interrupted, and clears its mark.
fn recover(registry: &Registry) -> Result<(), PaymentError> {
    let Some(bytes) = registry.store().get(Tree::Meta, PENDING_KEY)? else {
        return Ok(());
    };
    let p: Pending = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        tree: Tree::Meta.name(),
        key: PENDING_KEY.into(),
        message: e.to_string(),
    })?;
    match std::fs::OpenOptions::new().write(true).open(&p.file) {
        Ok(f) => {
            let len = f.metadata().map_err(|e| io(e, &p.file))?.len();
            if len > p.len {
                tracing::warn!(file = %p.file.display(), "cutting back an interrupted archive chunk");
                f.set_len(p.len).map_err(|e| io(e, &p.file))?;
                f.sync_all().map_err(|e| io(e, &p.file))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e, &p.file)),
    }
    registry.store().remove(Tree::Meta, PENDING_KEY)?;
    Ok(())
}

impl Engine {
    /// Archives the final payments created before `before` into `dir`, oldest first, at most
    /// `max` of them (all when `None`). Safe to run while the daemon serves: each payment is
    /// archived under its operation lock, after a fresh read.
    pub async fn archive_final(
        &self,
        dir: &Path,
        before: Timestamp,
        max: Option<usize>,
    ) -> Result<ArchiveReport, PaymentError> {
        let registry = self.inner.registry.clone();
        std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
        recover(&registry)?;
        let mut report = ArchiveReport::default();
        // Payments passed over (money still moving) are skipped by position on later chunks.
        let mut held: std::collections::HashSet<String> = Default::default();
        loop {
            let room = max.map_or(CHUNK, |m| CHUNK.min(m - report.archived));
            if room == 0 {
                return Ok(report);
            }
            // The next chunk: final payments of one creation day, oldest first.
            let mut chunk: Vec<Payment> = Vec::new();
            let mut day: Option<PathBuf> = None;
            index::for_each_created_before(&registry, before, CHUNK, |p| {
                if !p.status.is_final() || held.contains(&p.id) {
                    return Ok(true);
                }
                let file = file_for(dir, p.created_at);
                if day.as_ref().is_some_and(|d| d != &file) {
                    return Ok(false);
                }
                day = Some(file);
                chunk.push(p);
                Ok(chunk.len() < room)
            })?;
            let Some(file) = day else {
                return Ok(report);
            };
            // Under each payment's operation lock, nothing else changes it (captures,
            // cancels, refunds and webhook re-reads of final payments all take it).
            let mut guards = Vec::with_capacity(chunk.len());
            let mut lines = Vec::with_capacity(chunk.len());
            let mut batch = Batch::default();
            for p in &chunk {
                let lock = self.op_lock(&p.id);
                guards.push(lock.lock_owned().await);
                let Some(p) = self.get(&p.id)? else { continue };
                let refunds = refunds::of_payment(&registry, &p.id)?;
                if !p.status.is_final()
                    || Self::transfers_due(&p)
                    || refunds.iter().any(|(_, r)| refund_open(r))
                {
                    held.insert(p.id.clone());
                    report.held += 1;
                    continue;
                }
                index::stage_archive(&mut batch, &p);
                for (k, _) in &refunds {
                    refunds::stage_remove(&mut batch, k);
                }
                let line = ArchivedPayment {
                    payment: p,
                    refunds: refunds
                        .into_iter()
                        .map(|(key, record)| ArchivedRefund { key, record })
                        .collect(),
                };
                let mut text = serde_json::to_vec(&line).expect("records serialise");
                text.push(b'\n');
                lines.push(text);
            }
            if lines.is_empty() {
                continue;
            }
            self.write_chunk(&file, &lines, batch)?;
            report.archived += lines.len();
            drop(guards);
        }
    }

    /// Steps 1–3 of the module documentation for one chunk.
    fn write_chunk(
        &self,
        file: &Path,
        lines: &[Vec<u8>],
        mut batch: Batch,
    ) -> Result<(), PaymentError> {
        let registry = &self.inner.registry;
        let len = match std::fs::metadata(file) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(e, file)),
        };
        let pending = serde_json::to_vec(&Pending {
            file: file.to_path_buf(),
            len,
        })
        .expect("serialises");
        registry.store().put(Tree::Meta, PENDING_KEY, &pending)?;
        crate::payments::failpoint::failpoint("archive_marked");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(|e| io(e, file))?;
        for (i, l) in lines.iter().enumerate() {
            f.write_all(l).map_err(|e| io(e, file))?;
            if i == lines.len() / 2 {
                crate::payments::failpoint::failpoint("archive_half_written");
            }
        }
        f.sync_all().map_err(|e| io(e, file))?;
        if len == 0 {
            // A new file's directory entry is durable too.
            if let Some(dir) = file.parent() {
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        crate::payments::failpoint::failpoint("archive_file_synced");
        batch.remove(Tree::Meta, PENDING_KEY);
        registry.apply(batch)?;
        Ok(())
    }
}

/// Puts the payments of archive files back into the live store (the daemon stopped): each
/// line's payment with its index entries and refunds, in one batch per line. A payment
/// already live is left as it is. Answers how many were restored.
pub fn restore(registry: &Registry, files: &[PathBuf]) -> Result<usize, PaymentError> {
    use std::io::BufRead;
    let mut n = 0;
    for path in files {
        let f = std::fs::File::open(path).map_err(|e| io(e, path))?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| io(e, path))?;
            if line.trim().is_empty() {
                continue;
            }
            let a: ArchivedPayment = serde_json::from_str(&line).map_err(|e| {
                PaymentError::invalid(
                    "invalid_archive",
                    format!("{} line {}: {e}", path.display(), i + 1),
                )
            })?;
            if registry
                .store()
                .get(Tree::Payments, &a.payment.id)?
                .is_some()
            {
                continue;
            }
            let mut batch = Batch::default();
            index::stage(&mut batch, None, &a.payment);
            batch.remove(Tree::PaymentIndex, format!("a/{}", a.payment.id));
            for r in &a.refunds {
                refunds::stage(&mut batch, &r.key, &r.record);
            }
            registry.apply(batch)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::directory::StaticDirectory;
    use crate::payments::engine::EngineConfig;
    use crate::payments::machine::{CaptureMode, ChargeType, NewPayment, Status};
    use crate::stripe::{ClientConfig, SecretKey, StripeClient};
    use std::sync::Arc;

    fn engine(registry: Registry) -> Engine {
        let stripe = StripeClient::new(ClientConfig::new(
            "http://127.0.0.1:9",
            SecretKey::new("sk_test_none"),
        ))
        .unwrap();
        Engine::new(
            registry,
            stripe,
            Arc::new(StaticDirectory::new()),
            EngineConfig::default(),
            Default::default(),
        )
    }

    fn payment(id: &str, at_ms: i64, status: Status) -> Payment {
        let mut p = Payment::new(
            NewPayment {
                id: id.into(),
                merchant: "m".into(),
                account: "acct_1".into(),
                charge_type: ChargeType::Direct,
                reader: "tmr_1".into(),
                amount: 1000,
                currency: "eur".into(),
                capture: CaptureMode::Automatic,
                description: None,
                metadata: Default::default(),
                application_fee_amount: None,
                on_behalf_of: None,
                intent_key: format!("k:{id}"),
                skip_tipping: false,
            },
            Timestamp::from_ms(at_ms),
        );
        p.status = status;
        p
    }

    #[tokio::test]
    async fn a_payment_with_money_still_moving_stays_live_and_the_rest_goes_to_its_day() {
        let registry = Registry::temporary().unwrap();
        let e = engine(registry.clone());
        let day = 86_400_000;
        // Day 1: a succeeded payment with a pending refund, and a canceled one. Day 2: a
        // payment still on its way, and a succeeded one. Day 3: too recent.
        for p in [
            payment("pay_refunding", day, Status::Succeeded),
            payment("pay_canceled", day + 1, Status::Canceled),
            payment("pay_open", 2 * day, Status::Processing),
            payment("pay_done", 2 * day + 1, Status::Succeeded),
            payment("pay_recent", 3 * day, Status::Succeeded),
        ] {
            index::write(&registry, None, &p).unwrap();
        }
        let mut refund = RefundRecord {
            id: "rf_1".into(),
            payment: "pay_refunding".into(),
            amount: 100,
            stripe_key: "k".into(),
            status: RefundStatus::Pending,
            refund: None,
            created_at: Timestamp::from_ms(day),
            reverse_transfer: false,
            split: None,
            merchant: None,
            reversal_amount: 0,
            reversal_key: None,
            reversal: None,
            reversal_error: None,
            on_reader: None,
        };
        let rkey = refunds::key("pay_refunding", "rf_1");
        refunds::write(&registry, &rkey, &refund).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let before = Timestamp::from_ms(3 * day);
        let r = e.archive_final(dir.path(), before, None).await.unwrap();
        assert_eq!(
            r,
            ArchiveReport {
                archived: 2,
                held: 1
            }
        );
        for id in ["pay_refunding", "pay_open", "pay_recent"] {
            assert!(e.get(id).unwrap().is_some(), "{id}");
        }
        let read = |day: &str| {
            std::fs::read_to_string(dir.path().join(format!("payments-{day}.jsonl")))
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<ArchivedPayment>(l)
                        .unwrap()
                        .payment
                        .id
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(read("1970-01-02"), ["pay_canceled"]);
        assert_eq!(read("1970-01-03"), ["pay_done"]);
        // Once the refund is over, the payment goes too, with its refund.
        refund.status = RefundStatus::Succeeded;
        refunds::write(&registry, &rkey, &refund).unwrap();
        let r = e.archive_final(dir.path(), before, None).await.unwrap();
        assert_eq!(
            r,
            ArchiveReport {
                archived: 1,
                held: 0
            }
        );
        assert_eq!(read("1970-01-02"), ["pay_canceled", "pay_refunding"]);
        assert!(refunds::of_payment(&registry, "pay_refunding")
            .unwrap()
            .is_empty());
        assert!(index::verify(&registry).unwrap().is_empty());
        // And back.
        let n = restore(&registry, &[dir.path().join("payments-1970-01-02.jsonl")]).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            refunds::of_payment(&registry, "pay_refunding")
                .unwrap()
                .len(),
            1
        );
        assert!(index::verify(&registry).unwrap().is_empty());
    }
}
