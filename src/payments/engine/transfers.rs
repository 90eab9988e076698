//! Separate charges' transfers: after the capture, one Transfer per split from the
//! platform's charge (`source_transaction`), each keyed and its key on disk before it is
//! sent, and each reconciled after a crash by replaying its key. A transfer is never made
//! twice: its outcome unknown, it is replayed with the same key; after a 5xx that Stripe
//! stored under the key, it is looked up in its `transfer_group` by
//! `metadata[readerd_split]` before a new key. A refusal (say, the merchant's `transfers`
//! capability is off) is shown on the split, counted in `/metrics`, and tried again by the
//! sweep up to [`MAX_TRANSFER_ATTEMPTS`] times; after that it is left for the operator.
//! None of this runs on the reader's worker, so the reader never waits for it.

use super::{server_side, Engine, PaymentError};
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::machine::{Failure, Payment, Status};
use crate::payments::splits::{self, TransferStatus, MAX_TRANSFER_ATTEMPTS};
use crate::stripe::params::CreateTransfer;
use crate::stripe::{Disposition, RequestOptions, StripeError};
use std::collections::BTreeMap;

/// Transfer metadata naming the split, so a transfer whose answer was lost can be found.
pub const SPLIT_METADATA: &str = "readerd_split";

impl Engine {
    /// Whether the payment owes transfers that are not settled yet.
    pub(crate) fn transfers_due(p: &Payment) -> bool {
        p.status == Status::Succeeded
            && p.amount_captured > 0
            && p.splits
                .iter()
                .any(|s| s.transfer_status == TransferStatus::NotDue || s.transfer_due())
    }

    /// Starts [`Engine::settle_transfers`] in the background when the payment owes any.
    pub(crate) fn spawn_transfers(&self, p: &Payment) {
        if !Self::transfers_due(p) {
            return;
        }
        let engine = self.clone();
        let id = p.id.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.settle_transfers(&id).await {
                tracing::warn!(payment = %id, error = %e, "transfers not settled yet");
            }
        });
    }

    /// Plans the splits' shares (once) and sends every transfer that is due.
    pub async fn settle_transfers(&self, id: &str) -> Result<Payment, PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        if !Self::transfers_due(&p) {
            return Ok(p);
        }
        let mut p = self.update(id, |p| {
            let (captured, tip, tip_split) = (p.amount_captured, p.tip.unwrap_or(0), p.tip_split);
            splits::plan(&mut p.splits, captured, tip, tip_split);
            for (i, s) in p.splits.iter_mut().enumerate() {
                if s.transfer_due() && s.transfer_key.is_none() {
                    s.transfer_key = Some(format!("readerd:transfer:{}:{i}", p.id));
                }
            }
            Ok(())
        })?;
        if !p.splits.iter().any(|s| s.transfer_due()) {
            return Ok(p);
        }
        let charge = self.charge_of(&p).await?;
        let mut first_err = None;
        for i in 0..p.splits.len() {
            if !p.splits[i].transfer_due() {
                continue;
            }
            match self.send_transfer(&p, i, &charge).await {
                Ok(after) => p = after,
                Err(e) => {
                    p = self.load(id)?;
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(p),
        }
    }

    /// The id of the payment's charge (the transfers' `source_transaction`).
    async fn charge_of(&self, p: &Payment) -> Result<String, PaymentError> {
        let intent = self.read_intent(p).await?;
        intent
            .latest_charge
            .as_ref()
            .map(|c| c.id().to_string())
            .ok_or(PaymentError::NotFound("charge"))
    }

    fn transfer_params(p: &Payment, i: usize, charge: &str) -> CreateTransfer {
        let s = &p.splits[i];
        CreateTransfer {
            amount: s.transfer_amount(),
            currency: p.currency.clone(),
            destination: s.account.clone(),
            source_transaction: Some(charge.to_string()),
            transfer_group: Some(p.id.clone()),
            metadata: BTreeMap::from([
                ("readerd_payment".to_string(), p.id.clone()),
                (SPLIT_METADATA.to_string(), i.to_string()),
                ("readerd_merchant".to_string(), s.merchant.clone()),
            ]),
        }
    }

    /// Sends split `i`'s transfer with its key and records the outcome.
    async fn send_transfer(
        &self,
        p: &Payment,
        i: usize,
        charge: &str,
    ) -> Result<Payment, PaymentError> {
        let params = Self::transfer_params(p, i, charge);
        let key = p.splits[i]
            .transfer_key
            .clone()
            .ok_or(PaymentError::NotFound("transfer key"))?;
        failpoint("before_transfer");
        self.count("create_transfer");
        let platform = RequestOptions::platform();
        let mut res = self
            .inner
            .stripe
            .create_transfer(&params, &platform.clone().key(key))
            .await;
        if let Err(e) = &res {
            if e.disposition() == Disposition::Definitive && server_side(e) {
                // A 5xx stored under the key: the transfer may exist. Look for it in its
                // group; only when it is not there, a new key (on disk first).
                self.count("list_transfers");
                let found = self
                    .inner
                    .stripe
                    .list_transfers(&p.id, &platform)
                    .await?
                    .into_iter()
                    .find(|t| t.metadata.get(SPLIT_METADATA) == Some(&i.to_string()));
                res = match found {
                    Some(t) => Ok(t),
                    None => {
                        let p = self.update(&p.id, |p| {
                            p.splits[i].transfer_key =
                                Some(format!("readerd:transfer:{}:{i}:{}", p.id, new_id("k")));
                            Ok(())
                        })?;
                        let key = p.splits[i].transfer_key.clone().unwrap_or_default();
                        self.count("create_transfer");
                        self.inner
                            .stripe
                            .create_transfer(&params, &platform.clone().key(key))
                            .await
                    }
                };
            }
        }
        let merchant = p.splits[i].merchant.clone();
        match res {
            Ok(t) => {
                failpoint("after_transfer");
                self.inner.links.metrics.transfer(&merchant, "succeeded");
                self.update(&p.id, |p| {
                    let s = &mut p.splits[i];
                    s.transfer = Some(t.id.clone());
                    s.transferred = t.amount;
                    s.transfer_status = TransferStatus::Succeeded;
                    s.transfer_error = None;
                    Ok(())
                })
            }
            Err(e) if refused(&e) => {
                let failure = Failure::new(
                    e.code().unwrap_or("transfer_refused").to_string(),
                    e.to_string(),
                );
                let p = self.update(&p.id, |p| {
                    let s = &mut p.splits[i];
                    s.transfer_attempts += 1;
                    s.transfer_error = Some(failure.clone());
                    if s.transfer_attempts >= MAX_TRANSFER_ATTEMPTS {
                        s.transfer_status = TransferStatus::Failed;
                    } else {
                        s.transfer_status = TransferStatus::Refused;
                        // Stripe stored the refusal under the key: the next attempt needs
                        // a new one (on disk before it is used).
                        s.transfer_key =
                            Some(format!("readerd:transfer:{}:{i}:{}", p.id, new_id("k")));
                    }
                    Ok(())
                })?;
                let result = if p.splits[i].transfer_status == TransferStatus::Failed {
                    tracing::error!(payment = %p.id, merchant = %merchant, error = %e, "transfer refused too many times: left for the operator");
                    "failed"
                } else {
                    tracing::warn!(payment = %p.id, merchant = %merchant, error = %e, "transfer refused; it will be tried again");
                    "refused"
                };
                self.inner.links.metrics.transfer(&merchant, result);
                Err(e.into())
            }
            // Outcome unknown: the key stays, the sweep replays it.
            Err(e) => Err(e.into()),
        }
    }
}

/// A definitive refusal by Stripe (a 4xx that is not about rate or idempotency): the
/// transfer was not made.
fn refused(e: &StripeError) -> bool {
    e.disposition() == Disposition::Definitive && !server_side(e)
}
