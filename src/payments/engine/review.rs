//! Review before confirm: the point of sale confirms a payment whose card was read
//! (`requires_confirmation`), with a surcharge within its merchant's limit, or cancels it
//! (`cancel.rs`). The confirm is recorded with the key of the PaymentIntent's amount update,
//! both on disk before anything is sent; the reader's worker, which holds the reader for
//! the payment, carries it out (amount, then `confirm_payment_intent`).

use super::{Engine, PaymentError, MAX_AMOUNT};
use crate::clock::Timestamp;
use crate::payments::ids::new_id;
use crate::payments::machine::{ConfirmRequest, Observation, Payment, PaymentFlow, Source, Status};

impl Engine {
    /// Confirms a reviewed payment, adding `surcharge` (minor units) to its amount. A
    /// surcharge over the merchant's `surcharge_max` is refused and changes nothing; the
    /// same confirm asked again answers the payment as it stands.
    pub async fn confirm(&self, id: &str, surcharge: Option<i64>) -> Result<Payment, PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        if p.flow != PaymentFlow::Review {
            return Err(PaymentError::conflict(
                "invalid_state",
                "only a payment taken with \"flow\": \"review\" is confirmed; this one is authorised on the reader",
            ));
        }
        let surcharge = surcharge.unwrap_or(0);
        if let Some(c) = &p.confirm {
            if c.surcharge == surcharge {
                return Ok(p);
            }
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "the payment is already being confirmed with a surcharge of {}",
                    c.surcharge
                ),
            ));
        }
        if p.status != Status::RequiresConfirmation || p.cancel_requested {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "only a payment in requires_confirmation can be confirmed; this one is {}{}",
                    p.status,
                    if p.cancel_requested {
                        " and being canceled"
                    } else {
                        ""
                    }
                ),
            ));
        }
        self.check_surcharge(&p, surcharge)?;
        let pi = p.payment_intent.clone().unwrap_or_default();
        let key = format!("readerd:surcharge:{pi}:{}:{}", p.attempt, new_id("k"));
        let at = Timestamp::now();
        let note = if surcharge > 0 {
            format!("confirm requested with a surcharge of {surcharge}")
        } else {
            "confirm requested".to_string()
        };
        let p = self.update(id, |p| {
            p.confirm = Some(ConfirmRequest {
                surcharge,
                update_key: key,
                updated: false,
            });
            p.waiting_for = Some("authorisation".into());
            p.apply(Observation::Note(note), Source::Api, at)?;
            Ok(())
        })?;
        self.slot(&p.reader).hint.notify_one();
        Ok(p)
    }

    /// A surcharge is a whole number of minor units within the merchant's `surcharge_max`,
    /// on a payment for one merchant.
    fn check_surcharge(&self, p: &Payment, surcharge: i64) -> Result<(), PaymentError> {
        if surcharge < 0 {
            return Err(PaymentError::invalid(
                "invalid_surcharge",
                "surcharge must not be negative",
            ));
        }
        if surcharge == 0 {
            return Ok(());
        }
        if !p.splits.is_empty() {
            // Its transfers are the merchants' shares of the amount asked for.
            return Err(PaymentError::invalid(
                "invalid_surcharge",
                "a separate-charge payment (or basket) cannot be surcharged",
            ));
        }
        let max = self.inner.directory.surcharge_max(&p.merchant);
        match max {
            Some(max) if surcharge <= max => {}
            Some(max) => {
                return Err(PaymentError::invalid(
                    "surcharge_too_high",
                    format!(
                        "a surcharge of {surcharge} is over merchant {}'s surcharge_max of {max} (minor units)",
                        p.merchant
                    ),
                ))
            }
            None => {
                return Err(PaymentError::invalid(
                    "surcharge_too_high",
                    format!(
                        "merchant {} allows no surcharge (set its surcharge_max to allow one)",
                        p.merchant
                    ),
                ))
            }
        }
        if p.amount + p.tip.unwrap_or(0) + surcharge > MAX_AMOUNT {
            return Err(PaymentError::invalid(
                "surcharge_too_high",
                format!("the amount with the surcharge would be over {MAX_AMOUNT}"),
            ));
        }
        Ok(())
    }
}
