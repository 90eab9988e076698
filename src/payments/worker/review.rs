//! Review before confirm (`"flow": "review"`): the card is read with
//! `collect_payment_method` (sent by the dispatch step, watched like any payment action)
//! and the payment stops at `requires_confirmation`, showing the card. The worker keeps the
//! reader for it (no other job takes the slot) until the point of sale confirms it, cancels
//! it, or `[payments] review_timeout` passes (then it is canceled and the reader freed).
//!
//! A confirm is carried out here: the PaymentIntent's amount raised by the surcharge (its
//! key on disk since the confirm was accepted, replayed after a crash), then
//! `confirm_payment_intent` through the dispatch step (a new key per attempt, on disk
//! first), then the watch; a decline follows the decline, retry and cancel rules of every
//! payment. A confirm that ends with no result leaves the payment in
//! `requires_confirmation`, to be confirmed again or canceled.

use super::{backoff, Flow, R};
use crate::clock::Timestamp;
use crate::payments::engine::Engine;
use crate::payments::failpoint::failpoint;
use crate::payments::machine::{Card, Failure, Payment, PaymentFlow, Source, Status};
use crate::stripe::params::{CollectPaymentMethod, ConfirmPaymentIntent, UpdatePaymentIntent};
use crate::stripe::wire::{ActionType, Reader};
use crate::stripe::{Disposition, StripeError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::sleep;

/// Which reader action a payment's next attempt sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReaderStep {
    /// `process_payment_intent`: read and authorise in one.
    Process,
    /// `collect_payment_method`: a reviewed payment's card is read.
    Collect,
    /// `confirm_payment_intent`: a reviewed payment's card is authorised.
    Confirm,
}

impl ReaderStep {
    pub(super) fn of(p: &Payment) -> ReaderStep {
        match (p.flow, p.status) {
            (PaymentFlow::Process, _) => ReaderStep::Process,
            (PaymentFlow::Review, Status::RequiresConfirmation) => ReaderStep::Confirm,
            (PaymentFlow::Review, _) => ReaderStep::Collect,
        }
    }

    /// The part of the attempt's idempotency key that names the action.
    pub(super) fn key_part(self) -> &'static str {
        match self {
            ReaderStep::Process => "ppi",
            ReaderStep::Collect => "cpm",
            ReaderStep::Confirm => "cfm",
        }
    }

    /// The Stripe endpoint, as the flow's request counts name it.
    pub(super) fn endpoint(self) -> &'static str {
        match self {
            ReaderStep::Process => "process_payment_intent",
            ReaderStep::Collect => "collect_payment_method",
            ReaderStep::Confirm => "confirm_payment_intent",
        }
    }

    /// The failpoint between the attempt's key written and the action sent.
    pub(super) fn before(self) -> &'static str {
        match self {
            ReaderStep::Confirm => "before_confirm",
            _ => "before_dispatch",
        }
    }

    /// The failpoint between the action sent and its outcome recorded.
    pub(super) fn after(self) -> &'static str {
        match self {
            ReaderStep::Confirm => "after_confirm",
            _ => "after_dispatch",
        }
    }
}

/// The card a reader shows collected for our PaymentIntent.
pub(super) fn collected_card(r: &Reader, pi: &str) -> Option<Card> {
    let a = r.action.as_ref()?;
    if a.kind != ActionType::CollectPaymentMethod || a.payment_intent_id() != Some(pi) {
        return None;
    }
    Card::of(a.collected_payment_method()?)
}

/// How long an unconfirmed payment may still wait: `None` once `until` has passed.
pub(super) fn review_left(until: Timestamp, now: Timestamp) -> Option<Duration> {
    let left = until.as_ms() - now.as_ms();
    (left > 0).then(|| Duration::from_millis(left as u64))
}

/// Waits for the point of sale (a confirm or a cancel wakes `hint`) for at most `left`.
/// `true`: woken; `false`: the time ran out.
pub(super) async fn wait_for_pos(hint: &Notify, left: Duration) -> bool {
    tokio::select! {
        _ = hint.notified() => true,
        _ = sleep(left) => false,
    }
}

impl Flow {
    /// The reader action of a reviewed payment's attempt (its key already on disk).
    pub(super) async fn send_review(
        &self,
        p: &Payment,
        pi: &str,
        step: ReaderStep,
        key: String,
    ) -> Result<Reader, StripeError> {
        let o = self.slot.options().key(key);
        if step == ReaderStep::Confirm {
            let params = ConfirmPaymentIntent {
                payment_intent: pi.to_string(),
            };
            self.e
                .stripe()
                .confirm_payment_intent(&self.slot.id, &params, &o)
                .await
        } else {
            let params = CollectPaymentMethod {
                payment_intent: pi.to_string(),
                skip_tipping: p.skip_tipping.then_some(true),
            };
            self.e
                .stripe()
                .collect_payment_method(&self.slot.id, &params, &o)
                .await
        }
    }

    /// A reviewed payment in `requires_confirmation`: shows its card, then waits for the
    /// point of sale, holding the reader.
    pub(super) async fn review(&self) -> R<()> {
        loop {
            let p = self.load()?;
            if p.status != Status::RequiresConfirmation {
                return Ok(());
            }
            if p.cancel_requested {
                return self.end_review(None).await;
            }
            if p.card.is_none() {
                self.show_card(&p).await?;
            }
            let p = match p.review_until {
                Some(_) => self.load()?,
                None => {
                    let until = Timestamp::from_ms(
                        Timestamp::now().as_ms() + self.cfg.review_timeout.as_millis() as i64,
                    );
                    self.e.update(&self.id, |p| {
                        p.review_until = Some(until);
                        Ok(())
                    })?
                }
            };
            if p.confirm.is_some() {
                self.carry_out_confirm(p).await?;
                continue;
            }
            let until = p.review_until.unwrap_or_else(Timestamp::now);
            let Some(left) = review_left(until, Timestamp::now()) else {
                return self
                    .end_review(Some(Failure::new(
                        "review_timeout",
                        format!(
                            "not confirmed within {} s of the card being read",
                            self.cfg.review_timeout.as_secs()
                        ),
                    )))
                    .await;
            };
            wait_for_pos(&self.slot.hint, left).await;
        }
    }

    /// The card, from the reader's collected action (once, for the point of sale).
    async fn show_card(&self, p: &Payment) -> R<()> {
        let pi = p.payment_intent.clone().unwrap_or_default();
        let card = match self.read_reader().await {
            Some(r) => collected_card(&r, &pi),
            None => None,
        };
        match card {
            Some(card) => {
                self.e.update(&self.id, |p| {
                    p.card = Some(card);
                    Ok(())
                })?;
            }
            None => {
                self.note("the reader no longer shows the card it read", None)?;
                // Not asked again: an empty card says the details are unknown.
                self.e.update(&self.id, |p| {
                    p.card = Some(Card::default());
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// The confirm the point of sale asked for: the surcharge on the PaymentIntent, then
    /// `confirm_payment_intent` and the watch.
    async fn carry_out_confirm(&self, p: Payment) -> R<()> {
        let Some(c) = p.confirm.clone() else {
            return Ok(());
        };
        if !c.updated {
            if c.surcharge != p.surcharge.unwrap_or(0) {
                failpoint("before_surcharge");
                if let Err(e) = self.surcharge(&p, c.surcharge, &c.update_key).await? {
                    // Refused for good: the payment waits for another confirm or a cancel.
                    self.e.update(&self.id, |p| {
                        p.confirm = None;
                        p.waiting_for = Some("confirmation".into());
                        Ok(())
                    })?;
                    self.note(format!("surcharge refused by Stripe: {e}"), None)?;
                    return Ok(());
                }
                failpoint("after_surcharge");
            }
            self.e.update(&self.id, |p| {
                if let Some(c) = p.confirm.as_mut() {
                    c.updated = true;
                    p.surcharge = (c.surcharge > 0).then_some(c.surcharge);
                }
                Ok(())
            })?;
        }
        let p = self.load()?;
        if let Some((p, at)) = self.dispatch(p).await? {
            self.watch(p, at, Source::Poll).await?;
        }
        let p = self.load()?;
        if p.status == Status::RequiresConfirmation && p.confirm.is_some() {
            // The confirm ended without a result (refused, or stopped on the reader): the
            // point of sale confirms again or cancels.
            self.e.update(&self.id, |p| {
                p.confirm = None;
                p.waiting_for = Some("confirmation".into());
                Ok(())
            })?;
            self.note(
                "the confirm ended without a result; confirm again or cancel",
                None,
            )?;
        }
        Ok(())
    }

    /// The PaymentIntent's amount raised by the surcharge, with the confirm's key (a replay
    /// after a crash or a lost answer sets the same amount). `Err`: Stripe refused it.
    async fn surcharge(
        &self,
        p: &Payment,
        surcharge: i64,
        key: &str,
    ) -> R<Result<(), StripeError>> {
        let pi = p.payment_intent.clone().unwrap_or_default();
        let amount = p.amount + p.tip.unwrap_or(0) + surcharge;
        let params = UpdatePaymentIntent {
            amount: Some(amount),
            ..UpdatePaymentIntent::default()
        };
        let mut n = 0;
        loop {
            self.e.count("update_payment_intent");
            let res = self
                .e
                .stripe()
                .update_payment_intent(&pi, &params, &Engine::intent_options(p).key(key))
                .await;
            match res {
                Ok(_) => return Ok(Ok(())),
                Err(e)
                    if e.disposition() == Disposition::Definitive
                        && e.status().is_none_or(|s| s < 500) =>
                {
                    return Ok(Err(e))
                }
                Err(e) if n >= 5 => return Ok(Err(e)),
                Err(e) => {
                    tracing::info!(payment = %self.id, error = %e, "surcharge update failed; retrying with its key");
                    sleep(backoff(n)).await;
                    n += 1;
                }
            }
        }
    }

    /// An unconfirmed payment ends: canceled by the point of sale, or (`timeout`) by
    /// `review_timeout`. The card's action is cleared from the reader and the
    /// PaymentIntent canceled; Stripe's answer decides.
    async fn end_review(&self, timeout: Option<Failure>) -> R<()> {
        if let Some(f) = timeout {
            tracing::info!(payment = %self.id, "review timed out; canceling");
            let note = format!("{}: {}", f.code, f.message);
            self.e.update(&self.id, |p| {
                p.cancel_requested = true;
                p.failure = Some(f);
                Ok(())
            })?;
            self.note(note, None)?;
        }
        let _ = self.cancel_action().await;
        let p = self.load()?;
        self.e.cancel_intent(&p, Source::Api).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_review_time_left_counts_down_to_none() {
        let until = Timestamp::from_ms(1_000_000);
        assert_eq!(
            review_left(until, Timestamp::from_ms(880_000)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(review_left(until, until), None);
        assert_eq!(review_left(until, Timestamp::from_ms(1_000_001)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_payment_waits_exactly_the_review_timeout() {
        let hint = Notify::new();
        let start = tokio::time::Instant::now();
        assert!(!wait_for_pos(&hint, Duration::from_secs(120)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirm_or_cancel_wakes_the_wait_at_once() {
        let hint = Arc::new(Notify::new());
        let h = hint.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(30)).await;
            h.notify_one();
        });
        let start = tokio::time::Instant::now();
        assert!(wait_for_pos(&hint, Duration::from_secs(120)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[test]
    fn the_reader_step_follows_the_flow_and_the_status() {
        let mut p: Payment = serde_json::from_value(serde_json::json!({
            "id": "pay_1", "status": "processing", "merchant": "m", "account": "acct_1",
            "charge_type": "direct", "reader": "tmr_1", "amount": 100, "currency": "eur",
            "capture": "automatic", "payment_intent": "pi_1", "intent_key": "k",
            "attempt": 0, "attempt_key": null, "step": "intent_created",
            "amount_captured": 0, "amount_refunded": 0, "tip": null, "failure": null,
            "capture_before": null, "created_at": 0, "updated_at": 0, "history": []
        }))
        .unwrap();
        assert_eq!(ReaderStep::of(&p), ReaderStep::Process);
        p.flow = PaymentFlow::Review;
        assert_eq!(ReaderStep::of(&p), ReaderStep::Collect);
        p.status = Status::RequiresConfirmation;
        assert_eq!(ReaderStep::of(&p), ReaderStep::Confirm);
        assert_eq!(ReaderStep::Confirm.before(), "before_confirm");
    }
}
