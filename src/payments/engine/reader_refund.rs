//! Refunds on the reader (Stripe's `refund_payment`): accepting one (decided by the same
//! rule as every refund, [`Engine::plan_refund`], on disk, then queued like a payment),
//! reading, canceling, and resuming the unfinished ones at start-up. The reader's part is
//! [`crate::payments::worker`]'s; the status machine is [`crate::payments::reader_refunds`].

use super::forward::CommandOp;
use super::{Engine, PaymentError};
use crate::payments::ids::new_id;
use crate::payments::machine::{Payment, Status};
use crate::payments::queue::Job;
use crate::payments::reader_refunds::{self, OnReader, ReaderRefundObservation, ReaderRefundStep};
use crate::payments::refunds::{self, RefundRecord, RefundStatus};
use crate::store::Tree;

impl Engine {
    /// Accepts a refund of payment `id` that waits for the customer's card on `reader` (the
    /// payment's own when `None`): `pending` from now on (counted against what is left),
    /// queued behind the reader's other jobs. `key` makes the request repeatable.
    pub async fn refund_on_reader(
        &self,
        id: &str,
        amount: Option<i64>,
        merchant: Option<&str>,
        reader: Option<&str>,
        client: &str,
        key: Option<&str>,
    ) -> Result<(Payment, RefundRecord), PaymentError> {
        // On a cluster the refund's reader's holder accepts it (the record and the queue are
        // its to write), with a key (the caller's, or one made here) so that it is accepted
        // once however often the holder, or the next one after a crash, carries it out. An
        // unknown reader is refused below, here.
        let target = {
            let p = self.load(id)?;
            let named = reader.unwrap_or(&p.reader);
            self.inner.directory.reader(named).map(|r| r.id.clone())
        };
        if let Some(target) = target {
            let fkey = key.map_or_else(|| new_id("fwd"), str::to_string);
            let op = CommandOp::RefundOnReader {
                amount,
                merchant: merchant.map(str::to_string),
                client: client.to_string(),
                key: fkey.clone(),
            };
            if let Some(done) = self.forwarded(&target, id, op).await {
                done?;
                let rec = self
                    .inner
                    .registry
                    .get::<RefundRecord>(
                        Tree::Refunds,
                        &refunds::idempotent_key(id, client, &fkey),
                    )?
                    .ok_or(PaymentError::NotFound("refund"))?;
                return Ok((self.load(id)?, rec));
            }
        }
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        let rkey = key.map(|k| refunds::idempotent_key(id, client, k));
        if let Some(k) = &rkey {
            if let Some(prev) = self.inner.registry.get::<RefundRecord>(Tree::Refunds, k)? {
                if amount.is_some_and(|a| a != prev.amount) || prev.on_reader.is_none() {
                    return Err(PaymentError::conflict(
                        "idempotency_conflict",
                        "this Idempotency-Key was used for another refund",
                    ));
                }
                return Ok((p, prev));
            }
        }
        if p.status == Status::Succeeded && p.payment_intent.is_none() {
            return Err(PaymentError::NotFound("payment_intent"));
        }
        let info = self
            .inner
            .directory
            .reader(reader.unwrap_or(&p.reader))
            .ok_or(PaymentError::NotFound("reader"))?;
        let mut rec = self.plan_refund(&p, amount, merchant)?;
        rec.stripe_key = format!("readerd:refund_payment:{id}:{}:0", rec.id);
        rec.on_reader = Some(OnReader::new(info.id.clone(), p.merchant.clone()));
        let k = rkey.unwrap_or_else(|| refunds::key(id, &rec.id));
        let slot = self.slot(&info.id);
        // Holding the queue lock across the write keeps a full queue from leaving a record
        // that no worker will ever take.
        let mut q = slot.queue.lock().expect("queue lock");
        if q.len() >= q.capacity() {
            return Err(crate::payments::queue::QueueFull {
                capacity: q.capacity(),
            }
            .into());
        }
        refunds::write(&self.inner.registry, &k, &rec)?;
        let _ = self.inner.refund_events.send(rec.clone());
        q.push(Job::Refund {
            id: rec.id.clone(),
            payment: id.to_string(),
            merchant: p.merchant.clone(),
        })?;
        drop(q);
        slot.work.notify_one();
        self.announce(&info.id, &rec.id);
        tracing::info!(payment = %id, refund = %rec.id, reader = %info.id, amount = rec.amount, "refund queued on the reader");
        Ok((p, rec))
    }

    /// One refund of payment `payment`.
    pub fn refund_record(
        &self,
        payment: &str,
        refund: &str,
    ) -> Result<Option<RefundRecord>, PaymentError> {
        Ok(self
            .refunds_of(payment)?
            .into_iter()
            .find(|r| r.id == refund))
    }

    /// Read-modify-write of one refund made on a reader (under the payment's write lock).
    pub(crate) fn observe_reader_refund(
        &self,
        payment: &str,
        refund: &str,
        obs: ReaderRefundObservation,
    ) -> Result<RefundRecord, PaymentError> {
        let _g = self.write_lock(payment);
        let mut rec = self
            .refund_record(payment, refund)?
            .ok_or(PaymentError::NotFound("refund"))?;
        match reader_refunds::apply(&mut rec, obs) {
            Ok(Some((from, to))) => {
                tracing::info!(payment = %payment, refund = %refund, %from, %to, "refund on the reader")
            }
            Ok(None) => {}
            Err(r) => tracing::debug!(refund = %refund, reason = %r, "observation not applied"),
        }
        refunds::replace(&self.inner.registry, &rec)?;
        let _ = self.inner.refund_events.send(rec.clone());
        Ok(rec)
    }

    /// Every change to any refund made on a reader, as it is written.
    pub fn subscribe_refunds(&self) -> tokio::sync::broadcast::Receiver<RefundRecord> {
        self.inner.refund_events.subscribe()
    }

    /// The reader's action and Stripe's refund object both say the refund is made: its
    /// status, then the payment's refunded total and the splits' (as for any refund), then
    /// the transfer reversal it owes.
    pub(crate) async fn reader_refund_made(
        &self,
        payment: &str,
        refund: &str,
        stripe_refund: String,
        status: RefundStatus,
    ) -> Result<RefundRecord, PaymentError> {
        let rec = self.observe_reader_refund(
            payment,
            refund,
            ReaderRefundObservation::Refunded {
                refund: stripe_refund.clone(),
                status: status.clone(),
            },
        )?;
        let rec = self.settle_refund(rec, status, Some(stripe_refund))?;
        let _ = self.inner.refund_events.send(rec.clone());
        if rec.reversal_due() {
            let lock = self.op_lock(payment);
            let _g = lock.lock().await;
            return self.send_reversal(rec).await;
        }
        Ok(rec)
    }

    /// The point of sale cancels a refund on the reader: still in the queue, canceled at
    /// once; on the reader, canceled by its worker (our own `cancel_action`, only while the
    /// reader still shows our action). A final one, or one not made on a reader, is `409`.
    /// On a cluster, the holder of the refund's reader cancels it.
    pub async fn cancel_reader_refund(
        &self,
        payment: &str,
        refund: &str,
    ) -> Result<RefundRecord, PaymentError> {
        let rec = self
            .refund_record(payment, refund)?
            .ok_or(PaymentError::NotFound("refund"))?;
        let Some(job) = rec.on_reader.clone() else {
            return Err(PaymentError::conflict(
                "invalid_state",
                "only a refund made on a reader can be canceled; this one went to Stripe directly",
            ));
        };
        let op = CommandOp::CancelReaderRefund {
            refund: refund.to_string(),
        };
        if let Some(done) = self.forwarded(&job.reader, payment, op).await {
            done?;
            return self
                .refund_record(payment, refund)?
                .ok_or(PaymentError::NotFound("refund"));
        }
        if rec.status != RefundStatus::Pending {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!("refund is {}, which is final", rec.status),
            ));
        }
        let slot = self.slot(&job.reader);
        let removed = job.step == ReaderRefundStep::Queued
            && slot.queue.lock().expect("queue lock").remove(refund);
        if removed {
            return self.observe_reader_refund(payment, refund, ReaderRefundObservation::Canceled);
        }
        let rec =
            self.observe_reader_refund(payment, refund, ReaderRefundObservation::CancelRequested)?;
        slot.hint.notify_one();
        Ok(rec)
    }

    /// The sweep: a pending refund on a reader that is neither waiting in its reader's
    /// queue nor being worked on (its job stopped on an error it could not get past) goes
    /// back to the front of the queue. How many went back.
    pub(super) fn requeue_reader_refunds(&self, pending: &[RefundRecord]) -> usize {
        let mut n = 0;
        for r in pending {
            let Some(job) = &r.on_reader else { continue };
            if !self.works(&job.reader) {
                continue;
            }
            let slot = self.slot(&job.reader);
            let current = slot.current.lock().expect("current").clone();
            let mut q = slot.queue.lock().expect("queue lock");
            if current.as_deref() != Some(r.id.as_str()) && !q.contains(&r.id) {
                tracing::warn!(payment = %r.payment, refund = %r.id, "resuming a refund on the reader whose job had stopped");
                q.push_resumed(Job::Refund {
                    id: r.id.clone(),
                    payment: r.payment.clone(),
                    merchant: job.queue.clone(),
                });
                drop(q);
                slot.work.notify_one();
                n += 1;
            }
        }
        n
    }

    /// Start-up (and a reader's lease taken back): every pending refund made on a reader
    /// goes back to the front of its reader's queue; its worker reads the reader, and the
    /// PaymentIntent's refunds, before it sends anything.
    pub(super) fn resume_reader_refunds(&self) -> Result<usize, PaymentError> {
        let mut open: Vec<RefundRecord> = refunds::pending(&self.inner.registry)?
            .into_iter()
            .filter(|r| r.on_reader.is_some())
            .collect();
        open.sort_by_key(|r| r.created_at);
        for r in &open {
            let Some(job) = &r.on_reader else { continue };
            let slot = self.slot(&job.reader);
            slot.queue
                .lock()
                .expect("queue lock")
                .push_resumed(Job::Refund {
                    id: r.id.clone(),
                    payment: r.payment.clone(),
                    merchant: job.queue.clone(),
                });
            slot.work.notify_one();
        }
        Ok(open.len())
    }
}
