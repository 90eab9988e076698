//! Refunds of a succeeded payment (the records are in [`crate::payments::refunds`]): never
//! more than captured, each named on Stripe by `metadata[readerd_refund]`, and never taken
//! for refused while its outcome is unknown (it stays pending and is sent again with its
//! key).

use super::forward::CommandOp;
use super::{server_side, Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::machine::{ChargeType, Observation, Payment, Source, Status};
use crate::payments::refunds::{self, RefundRecord, RefundStatus, REFUND_METADATA};
use crate::payments::splits::{self, TransferStatus};
use crate::store::Tree;
use crate::stripe::params::{CreateRefund, CreateTransferReversal};
use crate::stripe::{wire, Disposition, RequestOptions, StripeError};
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
        self.refund_for(id, amount, None, client, key).await
    }

    /// [`Engine::refund`] naming the merchant it is for: required for a basket of several
    /// merchants, whose refund comes out of that merchant's share (never more than it) and
    /// reverses that merchant's transfer in proportion (never more than was transferred).
    pub async fn refund_for(
        &self,
        id: &str,
        amount: Option<i64>,
        merchant: Option<&str>,
        client: &str,
        key: Option<&str>,
    ) -> Result<(Payment, RefundRecord), PaymentError> {
        let reader = self.load(id)?.reader;
        // Forwarded with a key (the caller's, or one made here), so that the holder, or
        // the next one after a crash, refunds once however often it carries it out.
        let fkey = key.map_or_else(|| new_id("fwd"), str::to_string);
        let op = CommandOp::Refund {
            amount,
            merchant: merchant.map(str::to_string),
            client: client.to_string(),
            key: fkey.clone(),
        };
        if let Some(done) = self.forwarded(&reader, id, op).await {
            done?;
            let rec = self
                .inner
                .registry
                .get::<RefundRecord>(Tree::Refunds, &refunds::idempotent_key(id, client, &fkey))?
                .ok_or(PaymentError::NotFound("refund"))?;
            return Ok((self.load(id)?, rec));
        }
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        let rkey = key.map(|k| refunds::idempotent_key(id, client, k));
        if let Some(k) = &rkey {
            if let Some(prev) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, k)? {
                if amount.is_some_and(|a| a != prev.amount)
                    || merchant.is_some_and(|m| prev.merchant.as_deref().is_some_and(|x| x != m))
                {
                    return Err(PaymentError::conflict(
                        "idempotency_conflict",
                        "this Idempotency-Key was used for another refund",
                    ));
                }
                let rec = if prev.status == RefundStatus::Pending {
                    self.send_refund(prev).await?
                } else {
                    prev
                };
                let rec = if rec.reversal_due() {
                    self.send_reversal(rec).await?
                } else {
                    rec
                };
                return Ok((self.load(id)?, rec));
            }
        }
        let rec = self.plan_refund(&p, amount, merchant)?;
        let rid = rec.id.clone();
        let k = rkey.unwrap_or_else(|| refunds::key(id, &rid));
        refunds::write(&self.inner.registry, &k, &rec)?;
        failpoint("before_refund");
        let rec = self.send_refund(rec).await?;
        let rec = if rec.reversal_due() {
            self.send_reversal(rec).await?
        } else {
            rec
        };
        Ok((self.load(id)?, rec))
    }

    /// Decides a refund of `p` (all that is left when `amount` is `None`), the one rule for
    /// a refund sent to Stripe and one made on a reader: only a succeeded payment, never more
    /// than is left (pending refunds count), a basket's merchant's share and its transfer
    /// reversal, a destination charge's `reverse_transfer`. Nothing is written.
    pub(super) fn plan_refund(
        &self,
        p: &Payment,
        amount: Option<i64>,
        merchant: Option<&str>,
    ) -> Result<RefundRecord, PaymentError> {
        let id = p.id.as_str();
        if p.status != Status::Succeeded {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!(
                    "only a succeeded payment can be refunded; this one is {}",
                    p.status
                ),
            ));
        }
        let split = split_of(p, merchant)?;
        let all = self.refunds_of(&p.id)?;
        let committed: i64 = all
            .iter()
            .filter(|r| r.status.commits_money())
            .map(|r| r.amount)
            .sum();
        let mut left = p.amount_captured - committed;
        let mut reversal_base = None;
        if let Some(i) = split {
            let s = &p.splits[i];
            if matches!(
                s.transfer_status,
                TransferStatus::NotDue | TransferStatus::Pending | TransferStatus::Refused
            ) {
                return Err(PaymentError::conflict(
                    "transfer_pending",
                    format!(
                        "merchant {}'s transfer is not made yet; refund it once the transfer is made (or left for the operator)",
                        s.merchant
                    ),
                ));
            }
            let mine = all
                .iter()
                .filter(|r| r.split == Some(i) && r.status.commits_money());
            let refunded: i64 = mine.clone().map(|r| r.amount).sum();
            let reversed: i64 = mine.map(|r| r.reversal_amount).sum();
            left = left.min(s.captured - refunded);
            let mut base = s.clone();
            base.refunded = refunded;
            base.reversed = reversed;
            reversal_base = Some(base);
        }
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(PaymentError::invalid(
                "refund_too_large",
                format!("at most {left} can still be refunded"),
            ));
        }
        let rid = new_id("rf");
        let reversal_amount = reversal_base
            .as_ref()
            .map(|s| splits::reversal_for(s, amount))
            .unwrap_or(0);
        Ok(RefundRecord {
            id: rid.clone(),
            payment: p.id.clone(),
            amount,
            stripe_key: format!("readerd:refund:{id}:{rid}"),
            status: RefundStatus::Pending,
            refund: None,
            created_at: Timestamp::now(),
            reverse_transfer: p.charge_type == ChargeType::Destination,
            split,
            merchant: split.map(|i| p.splits[i].merchant.clone()),
            reversal_amount,
            reversal_key: (reversal_amount > 0).then(|| format!("readerd:reversal:{id}:{rid}")),
            reversal: None,
            reversal_error: None,
            on_reader: None,
        })
    }

    /// Reverses (part of) the split's transfer for a refund that went through, with the
    /// key written when the refund was recorded. After a 5xx that Stripe stored under the
    /// key, the reversal is looked up by `metadata[readerd_refund]` before a new key.
    pub(super) async fn send_reversal(
        &self,
        rec: RefundRecord,
    ) -> Result<RefundRecord, PaymentError> {
        let p = self.load(&rec.payment)?;
        let (Some(i), Some(key)) = (rec.split, rec.reversal_key.clone()) else {
            return Ok(rec);
        };
        let Some(transfer) = p.splits.get(i).and_then(|s| s.transfer.clone()) else {
            return Ok(rec);
        };
        let merchant = p.splits[i].merchant.clone();
        let params = CreateTransferReversal {
            amount: Some(rec.reversal_amount),
            metadata: BTreeMap::from([
                ("readerd_payment".to_string(), p.id.clone()),
                (REFUND_METADATA.to_string(), rec.id.clone()),
            ]),
        };
        let platform = RequestOptions::platform();
        failpoint("before_reversal");
        self.count("create_transfer_reversal");
        let mut res = self
            .inner
            .stripe
            .create_transfer_reversal(&transfer, &params, &platform.clone().key(key))
            .await;
        if let Err(e) = &res {
            if e.disposition() == Disposition::Definitive && server_side(e) {
                self.count("list_transfer_reversals");
                let found = self
                    .inner
                    .stripe
                    .list_transfer_reversals(&transfer, &platform)
                    .await?
                    .into_iter()
                    .find(|r| r.metadata.get(REFUND_METADATA) == Some(&rec.id));
                res = match found {
                    Some(r) => Ok(r),
                    None => {
                        let rec = {
                            let _g = self.write_lock(&rec.payment);
                            let mut updated = rec.clone();
                            updated.reversal_key = Some(format!(
                                "readerd:reversal:{}:{}:{}",
                                rec.payment,
                                rec.id,
                                new_id("k")
                            ));
                            refunds::replace(&self.inner.registry, &updated)?;
                            updated
                        };
                        self.count("create_transfer_reversal");
                        self.inner
                            .stripe
                            .create_transfer_reversal(
                                &transfer,
                                &params,
                                &platform
                                    .clone()
                                    .key(rec.reversal_key.clone().unwrap_or_default()),
                            )
                            .await
                    }
                };
            }
        }
        let (reversal, error, err) = match res {
            Ok(r) => {
                failpoint("after_reversal");
                self.inner.links.metrics.transfer(&merchant, "reversed");
                (Some(r.id), None, None)
            }
            Err(e) if e.disposition() == Disposition::Definitive && !server_side(&e) => {
                self.inner
                    .links
                    .metrics
                    .transfer(&merchant, "reversal_refused");
                tracing::error!(payment = %p.id, refund = %rec.id, error = %e, "transfer reversal refused: left for the operator");
                (None, Some(e.to_string()), Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        let rec = {
            let _g = self.write_lock(&rec.payment);
            let mut updated = self
                .refunds_of(&rec.payment)?
                .into_iter()
                .find(|r| r.id == rec.id)
                .unwrap_or(rec);
            updated.reversal = reversal;
            updated.reversal_error = error;
            refunds::replace(&self.inner.registry, &updated)?;
            updated
        };
        self.sync_splits(&rec.payment)?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(rec),
        }
    }

    /// Rewrites the splits' refunded and reversed totals from the refund records.
    fn sync_splits(&self, id: &str) -> Result<(), PaymentError> {
        let all = self.refunds_of(id)?;
        self.update(id, |p| {
            for (i, s) in p.splits.iter_mut().enumerate() {
                let mine = all.iter().filter(|r| r.split == Some(i));
                s.refunded = mine
                    .clone()
                    .filter(|r| r.refund.is_some() && r.status.commits_money())
                    .map(|r| r.amount)
                    .sum();
                s.reversed = mine
                    .filter(|r| r.reversal.is_some())
                    .map(|r| r.reversal_amount)
                    .sum();
            }
            Ok(())
        })?;
        Ok(())
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
        if rec.on_reader.is_some() {
            // Made on the reader, never with `POST /v1/refunds`: its worker follows it.
            return Ok(rec);
        }
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
        let rec = self.settle_refund(rec, status, refund)?;
        match err {
            Some(e) => Err(e.into()),
            None => Ok(rec),
        }
    }

    /// Records what Stripe said of a refund (its status and `re_…`), then the payment's
    /// refunded total and the splits' totals.
    pub(super) fn settle_refund(
        &self,
        rec: RefundRecord,
        status: RefundStatus,
        refund: Option<String>,
    ) -> Result<RefundRecord, PaymentError> {
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
        if rec.split.is_some() {
            self.sync_splits(&rec.payment)?;
        }
        Ok(rec)
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

/// The split a refund comes out of: the named merchant's in a basket (required when it has
/// several), the only one of a single separate merchant, none for other charges.
fn split_of(p: &Payment, merchant: Option<&str>) -> Result<Option<usize>, PaymentError> {
    if p.splits.is_empty() {
        return match merchant {
            Some(m) if m != p.merchant => Err(PaymentError::invalid(
                "merchant_not_in_payment",
                format!("payment {} is not for merchant {m}", p.id),
            )),
            _ => Ok(None),
        };
    }
    match merchant {
        Some(m) => p
            .splits
            .iter()
            .position(|s| s.merchant == m)
            .map(Some)
            .ok_or_else(|| {
                PaymentError::invalid(
                    "merchant_not_in_payment",
                    format!("payment {} has no share of merchant {m}", p.id),
                )
            }),
        None if p.splits.len() == 1 => Ok(Some(0)),
        None => Err(PaymentError::invalid(
            "merchant_required",
            "a refund of a basket of several merchants names the merchant it is for",
        )),
    }
}
