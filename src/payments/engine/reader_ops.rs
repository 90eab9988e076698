//! What the engine does with a reader itself rather than a payment: cart displays (queued
//! like payments, never displacing one) and the operator's force-clear of a stuck action.

use super::{Engine, PaymentError};
use crate::payments::ids::new_id;
use crate::payments::queue::Job;
use crate::stripe::wire::Cart;

/// A cart display waiting in a reader's queue.
#[derive(Clone, Debug)]
pub(crate) struct DisplayRequest {
    pub reader: String,
    pub cart: Cart,
}

impl Engine {
    /// Queues a cart display on a reader; it never displaces a payment.
    pub fn display(
        &self,
        reader: &str,
        merchant: &str,
        cart: Cart,
    ) -> Result<String, PaymentError> {
        let info = self
            .inner
            .directory
            .reader(reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        let id = new_id("disp");
        let slot = self.slot(&info.id);
        self.inner.displays.lock().expect("displays").insert(
            id.clone(),
            DisplayRequest {
                reader: info.id.clone(),
                cart,
            },
        );
        let pushed = slot.queue.lock().expect("queue lock").push(Job::Display {
            id: id.clone(),
            merchant: merchant.to_string(),
        });
        if let Err(e) = pushed {
            self.inner.displays.lock().expect("displays").remove(&id);
            return Err(e.into());
        }
        slot.work.notify_one();
        Ok(id)
    }

    /// An operator's force-clear: cancels the reader's action only if it still holds the
    /// PaymentIntent the operator named (compare, then cancel), so that a customer's payment
    /// that replaced it in the meantime is never killed. Returns the reader as it is after.
    pub async fn clear_reader(
        &self,
        reader: &str,
        payment_intent: &str,
    ) -> Result<crate::stripe::wire::Reader, PaymentError> {
        let info = self
            .inner
            .directory
            .reader(reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        let on_reader = info.options();
        self.count("retrieve_reader");
        let r = self
            .inner
            .stripe
            .retrieve_reader_on(&info.id, &on_reader)
            .await?;
        let holds = r.action.as_ref().filter(|a| {
            a.status == crate::stripe::wire::ActionStatus::InProgress
                && a.payment_intent_id() == Some(payment_intent)
        });
        if holds.is_none() {
            let what = match &r.action {
                Some(a) if a.status == crate::stripe::wire::ActionStatus::InProgress => format!(
                    "an in-progress {} action{}",
                    a.kind,
                    a.payment_intent_id()
                        .map(|p| format!(" for {p}"))
                        .unwrap_or_default()
                ),
                _ => "no action in progress".to_string(),
            };
            return Err(PaymentError::conflict(
                "reader_action_mismatch",
                format!(
                    "reader {} holds {what}, not {payment_intent}; nothing was canceled",
                    info.id
                ),
            ));
        }
        tracing::warn!(reader = %info.id, payment_intent, "operator force-clear of the reader's action");
        self.count("cancel_action");
        let key = format!("readerd:clear:{}:{payment_intent}:{}", info.id, new_id("k"));
        Ok(self
            .inner
            .stripe
            .cancel_action(&info.id, &on_reader.key(key))
            .await?)
    }
}
