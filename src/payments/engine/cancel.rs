//! Cancel and retry. A queued payment that never reached Stripe is canceled at once; one off
//! the reader (authorised or declined) by canceling its PaymentIntent, each attempt with a
//! fresh key; one on the reader through its worker. A retry puts a declined payment's
//! PaymentIntent back in the reader's queue.

use super::forward::CommandOp;
use super::{server_side, Engine, PaymentError};
use crate::payments::ids::new_id;
use crate::payments::machine::{IntentView, Observation, Payment, Source, Status};
use crate::payments::queue::{Job, QueueFull};
use crate::stripe::params::CancelPaymentIntent;
use crate::stripe::wire::PaymentIntentStatus;
use crate::stripe::Disposition;

/// A PaymentIntent that a cancel can still end.
fn cancelable(s: &PaymentIntentStatus) -> bool {
    matches!(
        s,
        PaymentIntentStatus::RequiresPaymentMethod
            | PaymentIntentStatus::RequiresConfirmation
            | PaymentIntentStatus::RequiresAction
            | PaymentIntentStatus::RequiresCapture
    )
}

impl Engine {
    /// Cancels a payment. A queued payment that never reached Stripe is canceled at once; an
    /// authorised or declined one by canceling its PaymentIntent; one on the reader by asking
    /// the worker, which reports what really happens (`canceled` only once Stripe confirms).
    pub async fn cancel(&self, id: &str) -> Result<Payment, PaymentError> {
        let reader = self.load(id)?.reader;
        if let Some(done) = self.forwarded(&reader, id, CommandOp::Cancel).await {
            return done.and_then(|()| self.load(id));
        }
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        match p.status {
            Status::Canceled => return Ok(p),
            s if s.is_final() => {
                return Err(PaymentError::conflict(
                    "invalid_state",
                    format!("payment is already {s}"),
                ))
            }
            _ => {}
        }
        let slot = self.slot(&p.reader);
        let removed = slot.queue.lock().expect("queue lock").remove(id);
        if removed && p.payment_intent.is_none() {
            return self.observe(id, Observation::CanceledBeforeStripe, Source::Api);
        }
        let p = self.update(id, |p| {
            p.cancel_requested = true;
            Ok(())
        })?;
        let p = self.observe(
            &p.id,
            Observation::Note("cancel requested".into()),
            Source::Api,
        )?;
        if removed || matches!(p.status, Status::Declined | Status::RequiresCapture) {
            // Off the reader: the PaymentIntent alone decides.
            return self.cancel_intent(&p, Source::Api).await;
        }
        // On (or about to be on) the reader: the worker handles it.
        slot.hint.notify_one();
        Ok(p)
    }

    /// Cancels the payment's PaymentIntent on Stripe and records what Stripe says. Used for
    /// user cancels and for failures (with `failing` set beforehand).
    pub(crate) async fn cancel_intent(
        &self,
        p: &Payment,
        source: Source,
    ) -> Result<Payment, PaymentError> {
        let Some(pi) = p.payment_intent.clone() else {
            // Nothing on Stripe.
            if let Some(f) = p.failing.clone() {
                return self.observe(&p.id, Observation::Fail(f), source);
            }
            return self.observe(&p.id, Observation::CanceledBeforeStripe, source);
        };
        // A fresh key per attempt: a cancel refused now (the PaymentIntent was authorising)
        // must be sendable again later, and Stripe would replay a stored refusal for an old
        // key. Its outcome is always read back, so it never needs replaying.
        let opts = Self::intent_options(p).key(format!("readerd:cancel:{pi}:{}", new_id("k")));
        let params = CancelPaymentIntent {
            cancellation_reason: Some(if p.failing.is_some() {
                "abandoned".into()
            } else {
                "requested_by_customer".into()
            }),
        };
        self.count("cancel_payment_intent");
        let res = self
            .inner
            .stripe
            .cancel_payment_intent(&pi, &params, &opts)
            .await;
        let view = match res {
            Ok(intent) => IntentView::from(&intent),
            Err(e) => {
                // Refused (already authorised, captured, or canceled): read what is true.
                tracing::info!(payment = %p.id, error = %e, "cancel of PaymentIntent refused; reading it");
                let mut intent = self.read_intent(p).await?;
                let unknown = server_side(&e) || e.disposition() != Disposition::Definitive;
                if unknown && cancelable(&intent.status) {
                    // A 5xx (perhaps stored under the key) or no answer, and nothing was
                    // canceled: once more, with a fresh key.
                    self.count("cancel_payment_intent");
                    let again =
                        Self::intent_options(p).key(format!("readerd:cancel:{pi}:{}", new_id("k")));
                    intent = match self
                        .inner
                        .stripe
                        .cancel_payment_intent(&pi, &params, &again)
                        .await
                    {
                        Ok(i) => i,
                        Err(_) => self.read_intent(p).await?,
                    };
                }
                IntentView::from(&intent)
            }
        };
        self.observe(
            &p.id,
            Observation::Intent {
                view,
                reader_done: true,
            },
            source,
        )
    }

    /// After a decline: the same PaymentIntent goes back to the reader.
    pub async fn retry(&self, id: &str) -> Result<Payment, PaymentError> {
        let reader = self.load(id)?.reader;
        if let Some(done) = self.forwarded(&reader, id, CommandOp::Retry).await {
            return done.and_then(|()| self.load(id));
        }
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        if p.status != Status::Declined {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "only a declined payment can be retried; this one is {}",
                    p.status
                ),
            ));
        }
        let slot = self.slot(&p.reader);
        let p = {
            let mut q = slot.queue.lock().expect("queue lock");
            if q.len() >= q.capacity() {
                return Err(QueueFull {
                    capacity: q.capacity(),
                }
                .into());
            }
            let p = self.observe(id, Observation::Retry, Source::Api)?;
            q.push(Job::Payment {
                id: p.id.clone(),
                merchant: p.merchant.clone(),
            })?;
            p
        };
        slot.work.notify_one();
        self.announce(&p.reader, &p.id);
        Ok(p)
    }
}
