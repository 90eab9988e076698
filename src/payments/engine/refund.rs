//! Refunds of a succeeded payment (the records are in [`crate::payments::refunds`]): never
//! more than captured, each named on Stripe by `metadata[readerd_refund]`, and never taken
//! for refused while its outcome is unknown (it stays pending and is sent again with its
//! key).

use super::{server_side, Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::machine::{ChargeType, Observation, Payment, Source, Status};
use crate::payments::refunds::{self, RefundRecord, RefundStatus, REFUND_METADATA};
use crate::store::Tree;
use crate::stripe::params::CreateRefund;
use crate::stripe::{wire, Disposition, StripeError};
use std::collections::BTreeMap;

impl Engine {
    /// Refunds a succeeded payment, fully (`None`) or partially; refunds never add up to more
    /// than was captured. `key` makes the request repeatable.
    pub async fn refund(
        &self,
        id: &str,
        amount: Option<i64>,
        client: &str,
        key: Option<&str>,
    ) -> Result<(Payment, RefundRecord), PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        let rkey = key.map(|k| refunds::idempotent_key(id, client, k));
        if let Some(k) = &rkey {
            if let Some(prev) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, k)? {
                if amount.is_some_and(|a| a != prev.amount) {
                    return Err(PaymentError::conflict(
                        "idempotency_conflict",
                        "this Idempotency-Key was used for a refund of another amount",
                    ));
                }
                let rec = if prev.status == RefundStatus::Pending {
                    self.send_refund(prev).await?
                } else {
                    prev
                };
                return Ok((self.load(id)?, rec));
            }
        }
        if p.status != Status::Succeeded {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "only a succeeded payment can be refunded; this one is {}",
                    p.status
                ),
            ));
        }
        let committed: i64 = self
            .refunds_of(id)?
            .iter()
            .filter(|r| r.status.commits_money())
            .map(|r| r.amount)
            .sum();
        let left = p.amount_captured - committed;
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(PaymentError::invalid(
                "refund_too_large",
                format!("at most {left} can still be refunded"),
            ));
        }
        let rid = new_id("rf");
        let rec = RefundRecord {
            id: rid.clone(),
            payment: id.to_string(),
            amount,
            stripe_key: format!("readerd:refund:{id}:{rid}"),
            status: RefundStatus::Pending,
            refund: None,
            created_at: Timestamp::now(),
            reverse_transfer: p.charge_type == ChargeType::Destination,
        };
        let k = rkey.unwrap_or_else(|| refunds::key(id, &rid));
        refunds::write(&self.inner.registry, &k, &rec)?;
        failpoint("before_refund");
        let rec = self.send_refund(rec).await?;
        Ok((self.load(id)?, rec))
    }

    /// Gives a pending refund a new Stripe key, written before it is used.
    fn rekey_refund(&self, rec: &RefundRecord) -> Result<RefundRecord, PaymentError> {
        let _g = self.write_lock(&rec.payment);
        let mut updated = rec.clone();
        updated.stripe_key = format!("readerd:refund:{}:{}:{}", rec.payment, rec.id, new_id("k"));
        refunds::replace(&self.inner.registry, &updated)?;
        Ok(updated)
    }

    /// The payment's refunds (a prefix range of the tree).
    pub(super) fn refunds_of(&self, id: &str) -> Result<Vec<RefundRecord>, PaymentError> {
        Ok(refunds::of_payment(&self.inner.registry, id)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Sends a pending refund with its key and records what Stripe answered. A definitive
    /// refusal is `failed`; an unknown outcome leaves it pending and is an error.
    pub(super) async fn send_refund(
        &self,
        rec: RefundRecord,
    ) -> Result<RefundRecord, PaymentError> {
        let p = self.load(&rec.payment)?;
        let (rec, res) = self.create_refund(&p, rec).await?;
        if res.is_ok() {
            failpoint("after_refund");
        }
        let (status, refund, err) = match res {
            Ok(r) => (
                RefundStatus::from(r.status.unwrap_or_else(|| "succeeded".into())),
                Some(r.id),
                None,
            ),
            // A 5xx is never taken for a refusal: the refund may exist, so it stays
            // pending (counted against what can still be refunded).
            Err(e) if e.disposition() == Disposition::Definitive && !server_side(&e) => {
                (RefundStatus::Failed, None, Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        let rec = {
            let _g = self.write_lock(&rec.payment);
            let mut updated = rec;
            updated.status = status;
            updated.refund = refund;
            refunds::replace(&self.inner.registry, &updated)?;
            updated
        };
        let total: i64 = self
            .refunds_of(&rec.payment)?
            .iter()
            .filter(|r| r.refund.is_some() && r.status.commits_money())
            .map(|r| r.amount)
            .sum();
        self.observe(&rec.payment, Observation::Refunded { total }, Source::Api)?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(rec),
        }
    }

    /// The refund on Stripe: created with the record's key; after a 5xx that Stripe stored
    /// under the key, found by its metadata, or, when it is not there, created with a new
    /// key (on disk first). Returns the record as it now is (its key may be new).
    async fn create_refund(
        &self,
        p: &Payment,
        rec: RefundRecord,
    ) -> Result<(RefundRecord, Result<wire::Refund, StripeError>), PaymentError> {
        let pi = p
            .payment_intent
            .clone()
            .ok_or(PaymentError::NotFound("payment_intent"))?;
        let params = CreateRefund {
            payment_intent: pi,
            amount: Some(rec.amount),
            reason: Some("requested_by_customer".into()),
            metadata: BTreeMap::from([
                ("readerd_payment".to_string(), p.id.clone()),
                (REFUND_METADATA.to_string(), rec.id.clone()),
            ]),
            reverse_transfer: rec.reverse_transfer,
            refund_application_fee: rec.reverse_transfer,
        };
        self.count("create_refund");
        let res = self
            .inner
            .stripe
            .create_refund(
                &params,
                &Self::intent_options(p).key(rec.stripe_key.clone()),
            )
            .await;
        match &res {
            Err(e) if e.disposition() == Disposition::Definitive && server_side(e) => {}
            _ => return Ok((rec, res)),
        }
        // A 5xx stored under the key: the refund may or may not exist. Look for it by its
        // metadata; only when it is not there, a new key (on disk first).
        self.count("list_refunds");
        let found = self
            .inner
            .stripe
            .list_refunds(&params.payment_intent, &Self::intent_options(p))
            .await?
            .into_iter()
            .find(|r| r.metadata.get(REFUND_METADATA) == Some(&rec.id));
        if let Some(r) = found {
            return Ok((rec, Ok(r)));
        }
        let rec = self.rekey_refund(&rec)?;
        self.count("create_refund");
        let res = self
            .inner
            .stripe
            .create_refund(
                &params,
                &Self::intent_options(p).key(rec.stripe_key.clone()),
            )
            .await;
        Ok((rec, res))
    }
}
