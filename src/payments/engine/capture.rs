//! Capture of an authorised payment: at most one, its key written before it is sent and
//! replayed after any failure; a new key only after a stored 5xx and a read showing the
//! PaymentIntent still uncaptured.

use super::forward::CommandOp;
use super::{server_side, Engine, PaymentError};
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::machine::{CaptureRequest, Observation, Payment, Source, Status};
use crate::stripe::params::CapturePaymentIntent;
use crate::stripe::wire::PaymentIntentStatus;
use crate::stripe::Disposition;

impl Engine {
    /// Captures an authorised payment, fully or partially. At most one capture: its key is
    /// written first and replayed on a retry.
    pub async fn capture(&self, id: &str, amount: Option<i64>) -> Result<Payment, PaymentError> {
        let reader = self.load(id)?.reader;
        let op = CommandOp::Capture { amount };
        if let Some(done) = self.forwarded(&reader, id, op).await {
            return done.and_then(|()| self.load(id));
        }
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        if p.status == Status::Succeeded && p.capture_request.is_some() {
            return Ok(p);
        }
        if p.status != Status::RequiresCapture {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "only an authorised payment can be captured; this one is {}",
                    p.status
                ),
            ));
        }
        if let Some(a) = amount {
            if a <= 0 || a > p.amount + p.tip.unwrap_or(0) {
                return Err(PaymentError::invalid(
                    "invalid_amount",
                    "the capture amount must be positive and at most the authorised amount",
                ));
            }
        }
        let pi = p
            .payment_intent
            .clone()
            .ok_or(PaymentError::NotFound("payment_intent"))?;
        let p = self.update(id, |p| {
            if p.capture_request.is_none() {
                p.capture_request = Some(CaptureRequest {
                    key: format!("readerd:capture:{pi}"),
                    amount,
                });
            }
            Ok(())
        })?;
        failpoint("before_capture");
        self.send_capture(&p).await
    }

    pub(super) async fn send_capture(&self, p: &Payment) -> Result<Payment, PaymentError> {
        match self.send_capture_once(p).await {
            Err(PaymentError::Stripe(e))
                if e.disposition() == Disposition::Definitive && server_side(&e) =>
            {
                // Stripe stored a 5xx under the capture key and would replay it forever.
                // Only when the PaymentIntent still waits for its capture does a new key,
                // written before it is used, let the capture run (Stripe captures a
                // PaymentIntent at most once anyway).
                let intent = self.read_intent(p).await?;
                if intent.status != PaymentIntentStatus::RequiresCapture {
                    return Err(e.into());
                }
                let p = self.update(&p.id, |p| {
                    if let Some(c) = p.capture_request.as_mut() {
                        c.key = format!(
                            "readerd:capture:{}:{}",
                            p.payment_intent.clone().unwrap_or_default(),
                            new_id("k")
                        );
                    }
                    Ok(())
                })?;
                self.send_capture_once(&p).await
            }
            r => r,
        }
    }

    pub(super) async fn send_capture_once(&self, p: &Payment) -> Result<Payment, PaymentError> {
        let req = p
            .capture_request
            .clone()
            .ok_or(PaymentError::NotFound("capture"))?;
        let pi = p
            .payment_intent
            .clone()
            .ok_or(PaymentError::NotFound("payment_intent"))?;
        // A partial capture restates the fee, never above what is captured (Stripe caps
        // the fee at the captured amount); a full capture keeps the one set at creation.
        let params = CapturePaymentIntent {
            amount_to_capture: req.amount,
            application_fee_amount: req
                .amount
                .and_then(|a| p.application_fee_amount.map(|f| f.min(a))),
        };
        self.count("capture_payment_intent");
        let res = self
            .inner
            .stripe
            .capture_payment_intent(&pi, &params, &Self::intent_options(p).key(req.key))
            .await;
        match res {
            Ok(intent) => {
                failpoint("after_capture");
                self.observe(&p.id, Observation::intent_read(&intent), Source::Api)
            }
            Err(e) => {
                // Whatever happened, the PaymentIntent says what is true now.
                if let Ok(intent) = self.read_intent(p).await {
                    let after =
                        self.observe(&p.id, Observation::intent_read(&intent), Source::Api)?;
                    if after.status == Status::Succeeded {
                        return Ok(after);
                    }
                }
                Err(e.into())
            }
        }
    }
}
