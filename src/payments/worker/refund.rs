//! A refund on the reader: `refund_payment` on a free reader, then watching the reader's
//! action until the customer presents the card (and Stripe's refund object says the refund
//! is made), walks away, or the point of sale cancels.
//!
//! Our action is recognised on the reader by its type and `metadata[readerd_refund]`, never
//! by position: someone else's action is never touched. Each attempt's key is on disk
//! (`step: sending`) before it is sent; after a restart the reader is read first (our
//! action is followed, not sent again) and, when the reader no longer shows it, the
//! PaymentIntent's refunds are searched for ours before anything is sent again. What a
//! reader read says is decided by [`reading`], one pure function.

use super::backoff;
use crate::payments::engine::{Engine, PaymentError, ReaderSlot};
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::machine::{Failure, Payment};
use crate::payments::reader_refunds::{ReaderRefundObservation as Obs, ReaderRefundStep};
use crate::payments::refunds::{RefundRecord, RefundStatus, REFUND_METADATA};
use crate::stripe::params::RefundPayment;
use crate::stripe::wire::{ActionStatus, ActionType, Reader};
use crate::stripe::{Disposition, StripeError};
use std::collections::BTreeMap;
use tokio::time::{sleep, Instant};

/// What a reader read says about refund `id`.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Our action is on the reader, waiting for the card.
    Waiting,
    /// Our action succeeded, with Stripe's refund (`re_…`) when the reader names it.
    Succeeded(Option<String>),
    /// Our action failed.
    Failed(Failure),
    /// Someone else's action is in progress: the reader is busy.
    Busy,
    /// The reader is free (no action of ours, nothing in progress).
    Free,
}

/// The decision about our refund `id` from a read of its reader.
pub fn reading(r: &Reader, id: &str) -> Reading {
    let Some(a) = r.action.as_ref() else {
        return Reading::Free;
    };
    let ours = a.kind == ActionType::RefundPayment
        && a.refund_payment
            .as_ref()
            .is_some_and(|x| x.metadata.get(REFUND_METADATA).map(String::as_str) == Some(id));
    if !ours {
        let busy = a.status == ActionStatus::InProgress && a.kind != ActionType::SetReaderDisplay;
        return if busy { Reading::Busy } else { Reading::Free };
    }
    match a.status {
        ActionStatus::InProgress => Reading::Waiting,
        ActionStatus::Succeeded => Reading::Succeeded(
            a.refund_payment
                .as_ref()
                .and_then(|x| x.refund.as_ref())
                .map(|r| r.id().to_string()),
        ),
        ActionStatus::Failed | ActionStatus::Other(_) => Reading::Failed(Failure::new(
            a.failure_code
                .clone()
                .unwrap_or_else(|| "action_failed".into()),
            a.failure_message
                .clone()
                .unwrap_or_else(|| "the reader reported a failure".into()),
        )),
    }
}

type R<T> = Result<T, PaymentError>;

struct Job<'a> {
    e: &'a Engine,
    slot: &'a ReaderSlot,
    payment: &'a str,
    id: &'a str,
}

/// Runs one refund on the reader to a final status (or until the daemon stops).
pub(super) async fn run(engine: &Engine, slot: &ReaderSlot, payment: &str, id: &str) {
    let job = Job {
        e: engine,
        slot,
        payment,
        id,
    };
    if let Err(e) = job.run().await {
        tracing::error!(payment = %payment, refund = %id, error = %e, "refund on the reader stopped; it resumes at the next start");
    }
}

/// What the job does next after a look at the reader.
enum Next {
    Watch,
    Send,
    Done,
}

impl Job<'_> {
    fn load(&self) -> R<RefundRecord> {
        self.e
            .refund_record(self.payment, self.id)?
            .ok_or(PaymentError::NotFound("refund"))
    }

    fn observe(&self, obs: Obs) -> R<RefundRecord> {
        self.e.observe_reader_refund(self.payment, self.id, obs)
    }

    async fn run(&self) -> R<()> {
        let rec = self.load()?;
        let Some(job) = rec.on_reader.clone() else {
            return Ok(());
        };
        if rec.status != RefundStatus::Pending {
            return Ok(());
        }
        if job.cancel_requested && job.step == ReaderRefundStep::Queued {
            self.observe(Obs::Canceled)?;
            return Ok(());
        }
        if job.step != ReaderRefundStep::Queued {
            // A restart: the action may be on the reader, or over, already.
            let next = match self.read_reader().await {
                Some(r) => self.after_reading(reading(&r, self.id)).await?,
                None => Next::Send,
            };
            match next {
                Next::Watch => return self.watch().await,
                Next::Done => return Ok(()),
                Next::Send => {}
            }
        }
        if self.send().await? {
            self.watch().await?;
        }
        Ok(())
    }

    /// Acts on a reading of the reader: our action waiting is watched; our action over is
    /// recorded; no action of ours means the refund is looked for on Stripe (it may have been
    /// made before a restart) and, when it is not there, sent (again).
    async fn after_reading(&self, reading: Reading) -> R<Next> {
        match reading {
            Reading::Waiting => {
                self.observe(Obs::Accepted)?;
                Ok(Next::Watch)
            }
            Reading::Succeeded(_) => {
                self.made().await?;
                Ok(Next::Done)
            }
            Reading::Failed(f) => {
                if !self.found().await? {
                    self.observe(Obs::Failed(f))?;
                }
                Ok(Next::Done)
            }
            Reading::Busy | Reading::Free => {
                if self.found().await? {
                    Ok(Next::Done)
                } else {
                    Ok(Next::Send)
                }
            }
        }
    }

    /// Our refund on Stripe, found by `metadata[readerd_refund]` among the PaymentIntent's
    /// refunds: recorded as made when it is there.
    async fn found(&self) -> R<bool> {
        let p = self.e.load(self.payment)?;
        let Some(pi) = p.payment_intent.clone() else {
            return Ok(false);
        };
        self.e.count("list_refunds");
        let refund = self
            .e
            .stripe()
            .list_refunds(&pi, &Engine::intent_options(&p))
            .await?
            .into_iter()
            .find(|r| r.metadata.get(REFUND_METADATA).map(String::as_str) == Some(self.id));
        match refund {
            Some(r) => {
                let status = RefundStatus::from(r.status.unwrap_or_else(|| "succeeded".into()));
                self.e
                    .reader_refund_made(self.payment, self.id, r.id, status)
                    .await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The reader's action succeeded: the refund stays pending until Stripe's refund object
    /// is read too (a few reads apart: it is made with the action).
    async fn made(&self) -> R<()> {
        for n in 0..6 {
            if self.found().await? {
                return Ok(());
            }
            sleep(backoff(n)).await;
        }
        // Left pending: the next start reads the reader and the refunds again.
        tracing::warn!(refund = %self.id, "the reader's refund succeeded but Stripe lists no refund of ours yet");
        Err(PaymentError::NotFound("refund"))
    }

    /// Waits for a free reader (bounded), then sends `refund_payment` with a new key per
    /// attempt, written first. `true` when the reader took it.
    async fn send(&self) -> R<bool> {
        let cfg = self.e.config().clone();
        let until = Instant::now() + cfg.busy_wait;
        let mut n = 0;
        let mut timeouts = 0;
        loop {
            let rec = self.load()?;
            let Some(job) = rec.on_reader.clone() else {
                return Ok(false);
            };
            if rec.status != RefundStatus::Pending {
                return Ok(false);
            }
            if job.cancel_requested {
                self.observe(Obs::Canceled)?;
                return Ok(false);
            }
            match self.read_reader().await {
                None => {
                    self.observe(Obs::Failed(Failure::new(
                        "reader_unavailable",
                        format!("reader {} could not be read", self.slot.id),
                    )))?;
                    return Ok(false);
                }
                Some(r) => match reading(&r, self.id) {
                    Reading::Waiting => {
                        self.observe(Obs::Accepted)?;
                        return Ok(true);
                    }
                    Reading::Busy => {
                        if !self.wait_busy(until, &mut n).await? {
                            return Ok(false);
                        }
                        continue;
                    }
                    Reading::Free => {}
                    other => {
                        return match self.after_reading(other).await? {
                            Next::Watch => Ok(true),
                            Next::Done => Ok(false),
                            Next::Send => continue,
                        }
                    }
                },
            }
            let p = self.e.load(self.payment)?;
            let key = format!(
                "readerd:refund_payment:{}:{}:{}",
                self.payment,
                self.id,
                job.attempts + 1
            );
            let rec = self.observe(Obs::Sending { key: key.clone() })?;
            failpoint("before_reader_refund");
            self.e.count("refund_payment");
            let res = self
                .e
                .stripe()
                .refund_payment(
                    &self.slot.id,
                    &request(&p, &rec),
                    &self.slot.options().key(key),
                )
                .await;
            match res {
                Ok(r) => {
                    self.e.inner.directory.observe_reader(&r);
                    failpoint("after_reader_refund_sent");
                    self.observe(Obs::Accepted)?;
                    return match self.after_reading(reading(&r, self.id)).await? {
                        Next::Done => Ok(false),
                        Next::Watch | Next::Send => Ok(true),
                    };
                }
                Err(e) if e.code() == Some("terminal_reader_busy") => {
                    if !self.wait_busy(until, &mut n).await? {
                        return Ok(false);
                    }
                }
                Err(e) if e.code() == Some("terminal_reader_timeout") => {
                    // Possibly a false negative: the next read tells; the next attempt has
                    // its own key.
                    timeouts += 1;
                    if timeouts >= cfg.dispatch_attempts {
                        return self.refused(&e).map(|_| false);
                    }
                }
                Err(e) if e.disposition() == Disposition::Definitive => {
                    return self.refused(&e).map(|_| false);
                }
                Err(e) => {
                    tracing::info!(refund = %self.id, error = %e, "refund_payment outcome unknown; reading the reader");
                    if Instant::now() >= until {
                        // Left pending: the next start reads the reader and the refunds.
                        return Err(e.into());
                    }
                    sleep(backoff(n)).await;
                    n += 1;
                }
            }
        }
    }

    /// Someone else's action holds the reader: wait (bounded), never cancel it. `false`
    /// once the wait is over (the refund failed as `reader_busy`, its amount freed).
    async fn wait_busy(&self, until: Instant, n: &mut u32) -> R<bool> {
        if Instant::now() >= until {
            self.observe(Obs::Failed(Failure::new(
                "reader_busy",
                "the reader stayed busy with another action",
            )))?;
            return Ok(false);
        }
        let wait = backoff(*n).min(until.saturating_duration_since(Instant::now()));
        let _ = tokio::time::timeout(wait, self.slot.hint.notified()).await;
        *n += 1;
        Ok(true)
    }

    fn refused(&self, e: &StripeError) -> R<()> {
        self.observe(Obs::Failed(Failure::new(
            e.code().unwrap_or("stripe_error").to_string(),
            e.to_string(),
        )))?;
        Ok(())
    }

    /// Polls the reader (woken early by webhooks and cancels) until our action is over. Past
    /// the action deadline, or on a cancel from the point of sale, our own action is
    /// canceled.
    async fn watch(&self) -> R<()> {
        let cfg = self.e.config().clone();
        let deadline = Instant::now() + cfg.action_deadline;
        let mut poll = cfg.poll_min;
        loop {
            let rec = self.load()?;
            if rec.status != RefundStatus::Pending {
                return Ok(());
            }
            let cancel = rec.on_reader.as_ref().is_some_and(|j| j.cancel_requested);
            let over_time = Instant::now() >= deadline;
            if cancel || over_time {
                if self.cancel_ours(over_time).await? {
                    return Ok(());
                }
            } else if let Some(r) = self.read_reader().await {
                match reading(&r, self.id) {
                    Reading::Waiting => {}
                    Reading::Busy | Reading::Free => {
                        if !self.found().await? {
                            self.observe(Obs::Failed(Failure::new(
                                "action_replaced",
                                "the reader no longer shows the refund (cleared or replaced)",
                            )))?;
                        }
                        return Ok(());
                    }
                    done => {
                        self.after_reading(done).await?;
                        return Ok(());
                    }
                }
            }
            let _ = tokio::time::timeout(poll, self.slot.hint.notified()).await;
            poll = (poll * 2).min(cfg.poll_max);
        }
    }

    /// Cancels our own action (only while the reader still shows it). `true` once the
    /// refund is final.
    async fn cancel_ours(&self, timed_out: bool) -> R<bool> {
        let Some(r) = self.read_reader().await else {
            return Ok(false);
        };
        let outcome = if timed_out {
            Obs::Failed(Failure::new(
                "customer_timeout",
                "the customer did not present the card in time; the reader was freed",
            ))
        } else {
            Obs::Canceled
        };
        match reading(&r, self.id) {
            Reading::Waiting => {}
            Reading::Busy | Reading::Free => {
                if !self.found().await? {
                    self.observe(outcome)?;
                }
                return Ok(true);
            }
            done => {
                self.after_reading(done).await?;
                return Ok(true);
            }
        }
        self.e.count("cancel_action");
        let key = format!("readerd:cancel_action:{}:{}", self.id, new_id("k"));
        match self
            .e
            .stripe()
            .cancel_action(&self.slot.id, &self.slot.options().key(key))
            .await
        {
            Ok(r) => {
                self.e.inner.directory.observe_reader(&r);
                self.observe(outcome)?;
                Ok(true)
            }
            Err(e) => {
                // The card may be being read: the reader decides.
                tracing::warn!(refund = %self.id, error = %e, "cancel_action refused; watching on");
                Ok(false)
            }
        }
    }

    async fn read_reader(&self) -> Option<Reader> {
        super::read_job_reader(self.e, self.slot, self.e.stripe()).await
    }
}

/// The request for our record: the Connect flags decided when the refund was recorded (as
/// `POST /v1/refunds` would send them), our ids in the metadata.
fn request(p: &Payment, rec: &RefundRecord) -> RefundPayment {
    RefundPayment {
        payment_intent: p.payment_intent.clone().unwrap_or_default(),
        amount: Some(rec.amount),
        metadata: BTreeMap::from([
            ("readerd_payment".to_string(), p.id.clone()),
            (REFUND_METADATA.to_string(), rec.id.clone()),
        ]),
        reverse_transfer: rec.reverse_transfer,
        refund_application_fee: rec.reverse_transfer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::wire::{Expandable, ReaderAction, RefundPaymentAction};

    fn reader(kind: ActionType, status: ActionStatus, ours: Option<&str>) -> Reader {
        let mut r: Reader = serde_json::from_value(serde_json::json!({
            "id": "tmr_1", "object": "terminal.reader", "device_type": "simulated_wisepos_e",
            "label": "till", "livemode": false, "serial_number": "s", "metadata": {}
        }))
        .unwrap();
        r.action = Some(ReaderAction {
            kind,
            status,
            failure_code: Some("card_declined".into()),
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: None,
            refund_payment: ours.map(|id| RefundPaymentAction {
                metadata: [(REFUND_METADATA.to_string(), id.to_string())].into(),
                refund: Some(Expandable::Id("re_1".into())),
                ..Default::default()
            }),
            process_setup_intent: None,
            collect_inputs: None,
            collect_payment_method: None,
            confirm_payment_intent: None,
        });
        r
    }

    #[test]
    fn our_refund_is_recognised_by_its_metadata_only() {
        use ActionStatus::*;
        let rp = ActionType::RefundPayment;
        assert_eq!(
            reading(&reader(rp.clone(), InProgress, Some("rf_1")), "rf_1"),
            Reading::Waiting
        );
        assert_eq!(
            reading(&reader(rp.clone(), InProgress, Some("rf_2")), "rf_1"),
            Reading::Busy
        );
        assert_eq!(
            reading(&reader(rp.clone(), Succeeded, Some("rf_2")), "rf_1"),
            Reading::Free
        );
        assert_eq!(
            reading(
                &reader(ActionType::ProcessPaymentIntent, InProgress, None),
                "rf_1"
            ),
            Reading::Busy
        );
        assert_eq!(
            reading(&reader(rp.clone(), Succeeded, Some("rf_1")), "rf_1"),
            Reading::Succeeded(Some("re_1".into()))
        );
        match reading(&reader(rp, Failed, Some("rf_1")), "rf_1") {
            Reading::Failed(f) => assert_eq!(f.code, "card_declined"),
            other => panic!("{other:?}"),
        }
    }
}
