//! Keeping records true to Stripe outside the flow: the start-up reconcile of every payment
//! (and input collection) that is not final, the periodic sweep (payments waiting off the reader, stopped flows,
//! pending refunds), and webhook hints (a re-read, never a decision on their own).

use super::{Engine, PaymentError};
use crate::payments::index;
use crate::payments::machine::{IntentView, Observation, Payment, Source, Status};
use crate::payments::queue::Job;
use crate::payments::refunds::{self, RefundStatus};

impl Engine {
    /// Reconciles and resumes every payment that is not final. Call once, at start-up,
    /// inside the runtime.
    pub async fn start(&self) -> Result<usize, PaymentError> {
        // Only the payments that are not final are read, through the status index: start-up
        // costs O(open payments), not O(history).
        let mut open = self.open_payments()?;
        open.sort_by_key(|p| p.created_at);
        let mut resumed = 0;
        for p in open {
            // Recent and open payments are known in memory (the store's intent index knows
            // the others).
            if let Some(pi) = &p.payment_intent {
                self.index_intent(pi, &p.id);
            }
            self.inner.links.metrics.payment_open(
                &p.id,
                &p.merchant,
                p.status.as_str(),
                false,
                p.capture_before,
            );
            resumed += 1;
            match p.status {
                Status::Queued | Status::Processing | Status::RequiresConfirmation => {
                    let slot = self.slot(&p.reader);
                    slot.queue
                        .lock()
                        .expect("queue lock")
                        .push_resumed(Job::Payment {
                            id: p.id.clone(),
                            merchant: p.merchant.clone(),
                        });
                    slot.work.notify_one();
                }
                Status::RequiresCapture | Status::Declined => {
                    let engine = self.clone();
                    let id = p.id.clone();
                    tokio::spawn(async move {
                        if let Err(e) = engine.resume_off_reader(&id).await {
                            tracing::warn!(payment = %id, error = %e, "reconcile failed");
                        }
                    });
                }
                _ => {}
            }
        }
        // Input collections on their way go back to the front of their readers' queues.
        resumed += self.resume_inputs()?;
        // So do cards being saved.
        resumed += self.resume_setups()?;
        // So do refunds waiting for a card on a reader (never sent with `POST /v1/refunds`).
        resumed += self.resume_reader_refunds()?;
        // Refunds left pending by a crash are re-sent with their own keys, and the
        // reversals they owe made after them.
        for r in refunds::pending(&self.inner.registry)? {
            let engine = self.clone();
            tokio::spawn(async move {
                if let Ok(r) = engine.send_refund(r).await {
                    if r.reversal_due() {
                        let _ = engine.send_reversal(r).await;
                    }
                }
            });
        }
        // A crash between a refund and its reversal: the reversal is made now.
        for r in refunds::reversals_due(&self.inner.registry)? {
            let engine = self.clone();
            tokio::spawn(async move {
                let lock = engine.op_lock(&r.payment);
                let _g = lock.lock().await;
                if let Err(e) = engine.send_reversal(r).await {
                    tracing::warn!(error = %e, "transfer reversal still unresolved");
                }
            });
        }
        // Separate charges captured before a crash: their transfers are made (or found,
        // by their keys) now.
        for p in self.transfers_owed()? {
            self.spawn_transfers(&p);
        }
        Ok(resumed)
    }

    /// Re-reads the PaymentIntent of every payment that waits off the reader (authorised or
    /// declined), so that what Stripe decided on its own (an authorisation expired after
    /// `capture_before`, a cancel from the Dashboard) is recorded even without webhooks; and
    /// puts back in line any payment on its way whose flow stopped.
    pub async fn sweep(&self) -> usize {
        let Ok(all) = self.open_payments() else {
            return 0;
        };
        let mut n = 0;
        let succeeded: Vec<Payment> = self.transfers_owed().unwrap_or_default();
        // A payment on its way whose flow stopped (an error it could not get past) goes back
        // to its reader's queue, first in line.
        for p in all.iter().filter(|p| p.status.on_reader()) {
            let slot = self.slot(&p.reader);
            let current = slot.current.lock().expect("current").clone();
            let mut q = slot.queue.lock().expect("queue lock");
            if current.as_deref() != Some(p.id.as_str()) && !q.contains(&p.id) {
                tracing::warn!(payment = %p.id, "resuming a payment whose flow had stopped");
                q.push_resumed(Job::Payment {
                    id: p.id.clone(),
                    merchant: p.merchant.clone(),
                });
                drop(q);
                slot.work.notify_one();
            }
        }
        for p in all
            .into_iter()
            .filter(|p| matches!(p.status, Status::RequiresCapture | Status::Declined))
        {
            let lock = self.op_lock(&p.id);
            let _g = lock.lock().await;
            // The sweep is a safety net: it yields to every payment at a reader.
            if let Ok(intent) = self
                .read_intent_at(&p, crate::stripe::Priority::Background)
                .await
            {
                n += 1;
                let _ = self.observe(&p.id, Observation::intent_read(&intent), Source::Poll);
            }
        }
        // Refunds whose outcome stayed unknown (Stripe unreachable, or a stored 5xx not yet
        // resolved) are sent again with their own keys.
        let pending = refunds::pending(&self.inner.registry).unwrap_or_default();
        // A refund on a reader whose job stopped goes back to its reader's queue instead.
        n += self.requeue_reader_refunds(&pending);
        for r in pending.into_iter().filter(|r| r.on_reader.is_none()) {
            let lock = self.op_lock(&r.payment);
            let _g = lock.lock().await;
            let still = self
                .refunds_of(&r.payment)
                .ok()
                .and_then(|all| all.into_iter().find(|x| x.id == r.id))
                .filter(|x| x.status == RefundStatus::Pending);
            if let Some(rec) = still {
                n += 1;
                match self.send_refund(rec).await {
                    Err(e) => {
                        tracing::info!(payment = %r.payment, refund = %r.id, error = %e, "pending refund still unresolved")
                    }
                    Ok(rec) if rec.reversal_due() => {
                        let _ = self.send_reversal(rec).await;
                    }
                    Ok(_) => {}
                }
            }
        }
        // Reversals still owed, then transfers still owed (refused ones up to their bound).
        for r in refunds::reversals_due(&self.inner.registry).unwrap_or_default() {
            let lock = self.op_lock(&r.payment);
            let _g = lock.lock().await;
            let still = self
                .refunds_of(&r.payment)
                .ok()
                .and_then(|all| all.into_iter().find(|x| x.id == r.id))
                .filter(|x| x.reversal_due());
            if let Some(rec) = still {
                n += 1;
                if let Err(e) = self.send_reversal(rec).await {
                    tracing::info!(payment = %r.payment, refund = %r.id, error = %e, "transfer reversal still unresolved");
                }
            }
        }
        for p in succeeded {
            n += 1;
            if let Err(e) = self.settle_transfers(&p.id).await {
                tracing::info!(payment = %p.id, error = %e, "transfers still unsettled");
            }
        }
        n
    }

    /// Every payment that owes transfers, found through the index.
    fn transfers_owed(&self) -> Result<Vec<Payment>, PaymentError> {
        let mut ids = Vec::new();
        index::for_each_transfers_due(&self.inner.registry, |id| {
            ids.push(id);
            Ok(())
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.get(&id)?.filter(Self::transfers_due) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Every payment that is not final, found through the status index.
    fn open_payments(&self) -> Result<Vec<Payment>, PaymentError> {
        let mut ids = Vec::new();
        index::for_each_open(&self.inner.registry, |id| {
            ids.push(id);
            Ok(())
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.get(&id)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// A webhook said something about a reader: wake its worker to re-read.
    pub fn hint_reader(&self, reader: &str) {
        let slot = self.existing_slot(reader);
        if let Some(s) = slot {
            s.hint.notify_one();
        }
    }

    /// A webhook said something about a PaymentIntent: re-read it (through the worker when
    /// the payment is on the reader).
    pub fn hint_intent(&self, pi: &str) {
        let Some(p) = self.payment_for_intent(pi) else {
            return;
        };
        match p.status {
            Status::Queued | Status::Processing | Status::RequiresConfirmation => {
                self.hint_reader(&p.reader)
            }
            Status::RequiresCapture | Status::Declined | Status::Succeeded => {
                let id = p.id.clone();
                let engine = self.clone();
                tokio::spawn(async move {
                    let lock = engine.op_lock(&id);
                    let _g = lock.lock().await;
                    if let Ok(p) = engine.load(&id) {
                        if let Ok(intent) = engine.read_intent(&p).await {
                            let _ = engine.observe(
                                &id,
                                Observation::Intent {
                                    view: IntentView::from(&intent),
                                    reader_done: p.status != Status::Processing,
                                },
                                Source::Webhook,
                            );
                        }
                    }
                });
            }
            _ => {}
        }
    }

    /// Start-up reconcile of a payment that is off the reader (authorised or declined):
    /// read its PaymentIntent, then finish a capture or cancel that was under way.
    pub(super) async fn resume_off_reader(&self, id: &str) -> Result<(), PaymentError> {
        let lock = self.op_lock(id);
        let _g = lock.lock().await;
        let p = self.load(id)?;
        let intent = self.read_intent(&p).await?;
        let p = self.observe(id, Observation::intent_read(&intent), Source::Reconcile)?;
        if p.status == Status::RequiresCapture && p.capture_request.is_some() {
            self.send_capture(&p).await?;
        } else if !p.status.is_final() && (p.cancel_requested || p.failing.is_some()) {
            self.cancel_intent(&p, Source::Reconcile).await?;
        }
        Ok(())
    }
}
