//! Refunds of a succeeded payment (tree `refunds`): never more than captured, each named on
//! Stripe by `metadata[readerd_refund]`, and never taken for refused while its outcome is
//! unknown (it stays pending and is sent again with its key).

use super::{server_side, Engine, PaymentError};
use crate::clock::now_rfc3339 as now;
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::machine::{Observation, Payment, Source, Status};
use crate::store::Tree;
use crate::stripe::params::CreateRefund;
use crate::stripe::Disposition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A refund of a payment (tree `refunds`, key `<payment>/<key>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub id: String,
    pub payment: String,
    pub amount: i64,
    /// Stripe idempotency key, on disk before the request.
    pub stripe_key: String,
    /// `pending` until Stripe answers, then Stripe's status; `failed` excludes it from totals.
    pub status: String,
    pub refund: Option<String>,
    pub created_at: String,
}

/// Refund metadata naming readerd's refund record, so a refund whose answer was lost
/// can be found on Stripe.
pub const REFUND_METADATA: &str = "readerd_refund";

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
        let rkey = key.map(|k| format!("{id}/{client}/{k}"));
        if let Some(k) = &rkey {
            if let Some(prev) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, k)? {
                if amount.is_some_and(|a| a != prev.amount) {
                    return Err(PaymentError::conflict(
                        "idempotency_conflict",
                        "this Idempotency-Key was used for a refund of another amount",
                    ));
                }
                let rec = if prev.status == "pending" {
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
            .filter(|r| r.status != "failed" && r.status != "canceled")
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
            status: "pending".into(),
            refund: None,
            created_at: now(),
        };
        let k = rkey.unwrap_or_else(|| format!("{id}/{rid}"));
        self.inner.registry.put(Tree::Refunds, &k, &rec)?;
        failpoint("before_refund");
        let rec = self.send_refund(rec).await?;
        Ok((self.load(id)?, rec))
    }

    /// Gives a pending refund a new Stripe key, written before it is used.
    pub(super) fn rekey_refund(&self, rec: &RefundRecord) -> Result<RefundRecord, PaymentError> {
        let _g = self.write_lock(&rec.payment);
        let mut updated = rec.clone();
        updated.stripe_key = format!("readerd:refund:{}:{}:{}", rec.payment, rec.id, new_id("k"));
        let all: Vec<(String, Vec<u8>)> = self.inner.registry.store().scan(Tree::Refunds)?;
        for (k, _) in all {
            if let Some(r) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, &k)? {
                if r.id == rec.id {
                    self.inner.registry.put(Tree::Refunds, &k, &updated)?;
                }
            }
        }
        Ok(updated)
    }

    pub(super) fn refunds_of(&self, id: &str) -> Result<Vec<RefundRecord>, PaymentError> {
        let all: Vec<RefundRecord> = self.inner.registry.list(Tree::Refunds)?;
        Ok(all.into_iter().filter(|r| r.payment == id).collect())
    }

    pub(super) async fn send_refund(
        &self,
        rec: RefundRecord,
    ) -> Result<RefundRecord, PaymentError> {
        let p = self.load(&rec.payment)?;
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
        };
        self.count("create_refund");
        let mut res = self
            .inner
            .stripe
            .create_refund(
                &params,
                &Self::intent_options(&p).key(rec.stripe_key.clone()),
            )
            .await;
        if let Err(e) = &res {
            if e.disposition() == Disposition::Definitive && server_side(e) {
                // A 5xx stored under the key: the refund may or may not exist. Look for
                // it by its metadata; only when it is not there, a new key (on disk first).
                self.count("list_refunds");
                let found = self
                    .inner
                    .stripe
                    .list_refunds(&params.payment_intent, &Self::intent_options(&p))
                    .await?
                    .into_iter()
                    .find(|r| r.metadata.get(REFUND_METADATA) == Some(&rec.id));
                res = match found {
                    Some(r) => Ok(r),
                    None => {
                        let rec = self.rekey_refund(&rec)?;
                        self.count("create_refund");
                        self.inner
                            .stripe
                            .create_refund(
                                &params,
                                &Self::intent_options(&p).key(rec.stripe_key.clone()),
                            )
                            .await
                    }
                };
            }
        }
        if res.is_ok() {
            failpoint("after_refund");
        }
        let (status, refund, err) = match res {
            Ok(r) => (
                r.status.unwrap_or_else(|| "succeeded".into()),
                Some(r.id),
                None,
            ),
            // A 5xx is never taken for a refusal: the refund may exist, so it stays
            // pending (counted against what can still be refunded).
            Err(e) if e.disposition() == Disposition::Definitive && !server_side(&e) => {
                ("failed".to_string(), None, Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        let rec = {
            let _g = self.write_lock(&rec.payment);
            let all: Vec<(String, Vec<u8>)> = self.inner.registry.store().scan(Tree::Refunds)?;
            let mut updated = rec.clone();
            updated.status = status;
            updated.refund = refund;
            for (k, _) in all {
                if let Some(r) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, &k)? {
                    if r.id == rec.id {
                        self.inner.registry.put(Tree::Refunds, &k, &updated)?;
                    }
                }
            }
            updated
        };
        let total: i64 = self
            .refunds_of(&rec.payment)?
            .iter()
            .filter(|r| r.refund.is_some() && r.status != "failed" && r.status != "canceled")
            .map(|r| r.amount)
            .sum();
        self.observe(&rec.payment, Observation::Refunded { total }, Source::Api)?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(rec),
        }
    }
}
