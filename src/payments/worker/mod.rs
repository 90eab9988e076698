//! One worker per reader: takes the next job from the reader's queue and carries it to the
//! point where the reader is free again, with exactly one action in flight.
//!
//! A payment's flow, each step written to the store before it is acted on:
//! 1. the PaymentIntent, created with the idempotency key written at acceptance (replayed on
//!    5xx and dropped connections, so exactly one PaymentIntent exists);
//! 2. a pre-flight read of the reader: someone else's action in progress means wait
//!    (bounded), never cancel it;
//! 3. `process_payment_intent` with a new key per attempt; `terminal_reader_busy`,
//!    `terminal_reader_timeout` (which may be a false negative: the reader is read and our
//!    PaymentIntent matched before anything is re-sent), `terminal_reader_offline`;
//! 4. watching: the reader is polled, faster at first, while our action is in progress
//!    (webhooks only wake the poll early); once the action is over the PaymentIntent decides.
//!    A reader that shows no sign of life after the dispatch is reported as not having
//!    picked the payment up; an action past its deadline is cancelled and, again, the
//!    PaymentIntent decides. A cancel refused during authorisation waits for the result.
//!
//! The daemon only ever fails a payment after its PaymentIntent is canceled on Stripe (or
//! never existed), so nothing authorised later can be lost.
//!
//! One file per step: [`intent`] (1), [`dispatch`] (2 and 3), [`watch`] (4); [`display`] and
//! [`inputs`] are the other kinds of job, a cart shown on the reader and inputs collected on
//! its screen. This file holds the worker loop and what every step shares: the flow's
//! record access, the reads that retry, giving up.

mod dispatch;
mod display;
mod inputs;
mod intent;
mod refund;
mod review;
mod setups;
mod watch;

use super::engine::{Engine, EngineConfig, PaymentError, ReaderSlot};
use super::ids::new_id;
use super::machine::{Failure, Observation, Payment, Source, Status, Step};
use super::queue::Job;
use crate::clock::Timestamp;
use crate::stripe::wire::{ActionStatus, ActionType, PaymentIntent, Reader};
use crate::stripe::{Disposition, StripeClient, StripeError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// An idle worker proves it is alive this often.
const IDLE_BEAT: Duration = Duration::from_secs(5);

/// The longest a worker may spend on one job without a heartbeat: a payment's waits
/// (busy reader, pickup, action deadline) and its Stripe calls with their retries fit well
/// inside; only a worker that hangs or died exceeds it.
const WORKER_BUDGET: Duration = Duration::from_secs(30 * 60);

/// The worker loop of one reader.
pub(crate) async fn run(engine: Engine, slot: Arc<ReaderSlot>) {
    let beat = engine
        .inner
        .links
        .liveness
        .register(format!("reader worker {}", slot.id), WORKER_BUDGET);
    let tick = || beat.tick();
    loop {
        let job = loop {
            tick();
            if engine.is_draining() {
                // Shutting down: nothing new starts on the reader; the queue is on disk.
                tokio::time::sleep(IDLE_BEAT).await;
                continue;
            }
            if !engine.works(&slot.id) {
                // Another instance holds the reader's lease: this worker waits for it.
                let _ = tokio::time::timeout(IDLE_BEAT, slot.work.notified()).await;
                continue;
            }
            let next = slot.queue.lock().expect("queue lock").pop();
            match next {
                Some(j) => break j,
                None => {
                    let _ = tokio::time::timeout(IDLE_BEAT, slot.work.notified()).await;
                }
            }
        };
        *slot.current.lock().expect("current") = Some(job.id().to_string());
        match &job {
            Job::Payment { id, .. } => {
                // The daemon's own latency is measured from here: time spent waiting behind
                // other payments on the same reader is the reader's, not the daemon's.
                engine
                    .inner
                    .stats
                    .lock()
                    .expect("stats")
                    .accepted(id, std::time::Instant::now());
                let flow = Flow {
                    e: engine.clone(),
                    slot: slot.clone(),
                    cfg: engine.config().clone(),
                    id: id.clone(),
                    reader_missing: AtomicBool::new(false),
                };
                // Its own task: a panic in one payment's flow must not stop the reader.
                match tokio::spawn(async move { flow.run().await }).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        tracing::error!(payment = %id, error = %err, "payment flow stopped; it resumes at the next start")
                    }
                    Err(err) => {
                        tracing::error!(payment = %id, error = %err, "payment flow panicked; it resumes at the next start")
                    }
                }
            }
            Job::Display { id, .. } => display::show(&engine, &slot, id).await,
            Job::Inputs { id, .. } => inputs::collect(&engine, &slot, id).await,
            Job::Setup { id, .. } => setups::save(&engine, &slot, id).await,
            Job::Refund { id, payment, .. } => refund::run(&engine, &slot, payment, id).await,
        }
        *slot.current.lock().expect("current") = None;
    }
}

type R<T> = Result<T, PaymentError>;

struct Flow {
    e: Engine,
    slot: Arc<ReaderSlot>,
    cfg: EngineConfig,
    id: String,
    /// Stripe answered 404 for the reader: it was deleted (or moved off the platform).
    reader_missing: AtomicBool,
}

/// The status of the reader's action for our PaymentIntent: `process_payment_intent`, or a
/// reviewed payment's `collect_payment_method` or `confirm_payment_intent`.
fn is_our_action(r: &Reader, pi: &str) -> Option<ActionStatus> {
    let a = r.action.as_ref()?;
    (matches!(
        a.kind,
        ActionType::ProcessPaymentIntent
            | ActionType::CollectPaymentMethod
            | ActionType::ConfirmPaymentIntent
    ) && a.payment_intent_id() == Some(pi))
    .then(|| a.status.clone())
}

fn backoff(n: u32) -> Duration {
    Duration::from_millis((250u64 << n.min(5)).min(5_000))
}

/// A reader job (inputs, setups) found someone else's action on its reader: wait for a
/// nudge or the next backoff step (`n` counts them), never past `until`, and never cancel
/// that action. `false` once `until` has passed: the job then fails with
/// [`reader_stayed_busy`].
async fn wait_for_free_reader(slot: &ReaderSlot, until: Instant, n: &mut u32) -> bool {
    if Instant::now() >= until {
        return false;
    }
    let wait = backoff(*n).min(until.saturating_duration_since(Instant::now()));
    let _ = tokio::time::timeout(wait, slot.hint.notified()).await;
    *n += 1;
    true
}

/// How a reader job fails when [`wait_for_free_reader`] gave up.
fn reader_stayed_busy() -> Failure {
    Failure::new("reader_busy", "the reader stayed busy with another action")
}

/// A reader job's read of its reader (inputs, setups, refunds on the reader), through
/// `stripe` (a handle at the job's priority): the fleet learns what the reader shows; a
/// definitive refusal (a 404 also marks the reader missing) or 9 failed tries in a row give
/// `None`, which the job treats as "unknown for now".
async fn read_job_reader(e: &Engine, slot: &ReaderSlot, stripe: &StripeClient) -> Option<Reader> {
    let mut n = 0;
    loop {
        e.count("retrieve_reader");
        match stripe.retrieve_reader_on(&slot.id, &slot.options()).await {
            Ok(r) => {
                e.inner.directory.observe_reader(&r);
                return Some(r);
            }
            Err(err) if err.disposition() == Disposition::Definitive => {
                tracing::warn!(reader = %slot.id, error = %err, "reader unreadable");
                if err.status() == Some(404) {
                    e.inner.directory.reader_missing(&slot.id);
                }
                return None;
            }
            Err(err) => {
                if n >= 8 {
                    tracing::warn!(reader = %slot.id, error = %err, "reader read keeps failing");
                    return None;
                }
                sleep(backoff(n).max(Duration::from_millis(100))).await;
                n += 1;
            }
        }
    }
}

impl Flow {
    fn load(&self) -> R<Payment> {
        self.e.load(&self.id)
    }

    fn observe(&self, obs: Observation, source: Source) -> R<Payment> {
        self.e.observe(&self.id, obs, source)
    }

    /// Records a note and what the payment now waits for, in one write.
    fn note(&self, text: impl Into<String>, waiting_for: Option<String>) -> R<Payment> {
        let at = Timestamp::now();
        let text = text.into();
        self.e.update(&self.id, |p| {
            p.waiting_for = waiting_for;
            p.apply(Observation::Note(text), Source::Poll, at)?;
            Ok(())
        })
    }

    async fn run(&self) -> R<()> {
        self.take().await?;
        // A reviewed payment whose card was read keeps the reader until it is confirmed,
        // canceled, or times out.
        if self.load()?.status == Status::RequiresConfirmation {
            self.review().await?;
        }
        Ok(())
    }

    /// The payment's way to the reader and back: the PaymentIntent, the dispatch, the watch.
    async fn take(&self) -> R<()> {
        let p = self.load()?;
        if p.status.is_final()
            || matches!(
                p.status,
                Status::RequiresCapture | Status::Declined | Status::RequiresConfirmation
            )
        {
            return Ok(());
        }
        let resumed = matches!(
            p.step,
            Step::CreatingIntent | Step::Dispatching | Step::Dispatched
        ) || (p.step == Step::Accepted && p.payment_intent.is_some());
        if p.cancel_requested && p.payment_intent.is_none() && p.step == Step::Accepted {
            return self.finish_cancel(&p).await;
        }
        if let Some(f) = p.failing.clone() {
            if p.payment_intent.is_some() || p.step == Step::Accepted {
                // Given up before a restart: finish that (the PaymentIntent still decides).
                return self.give_up(f).await;
            }
        }
        let Some(p) = self.ensure_intent(p).await? else {
            return Ok(());
        };
        if resumed && matches!(p.step, Step::Dispatching | Step::Dispatched) {
            // We may have handed the PaymentIntent to the reader before the restart.
            let pi = p.payment_intent.clone().unwrap_or_default();
            if let Some(r) = self.read_reader().await {
                if is_our_action(&r, &pi) == Some(ActionStatus::InProgress) {
                    let p = self.observe(Observation::Dispatched, Source::Reconcile)?;
                    return self.watch(p, Instant::now(), Source::Reconcile).await;
                }
            }
            let intent = self.read_intent(&p).await?;
            let p = self.observe(Observation::intent_read(&intent), Source::Reconcile)?;
            if !matches!(p.status, Status::Queued | Status::Processing) {
                return self.after(p).await;
            }
        }
        let p = self.load()?;
        match self.dispatch(p).await? {
            Some((p, at)) => self.watch(p, at, Source::Poll).await,
            None => Ok(()),
        }
    }

    /// A payment that ended while the reader was ours: finish a cancel that is pending.
    async fn after(&self, p: Payment) -> R<()> {
        if p.cancel_requested
            && matches!(
                p.status,
                Status::Declined | Status::Queued | Status::Processing
            )
        {
            self.e.cancel_intent(&p, Source::Api).await?;
        }
        Ok(())
    }

    async fn finish_cancel(&self, p: &Payment) -> R<()> {
        self.e.cancel_intent(p, Source::Api).await?;
        Ok(())
    }

    /// The daemon gives up: cancel the PaymentIntent first, then `failed` (or whatever the
    /// PaymentIntent turns out to be).
    async fn give_up(&self, failure: Failure) -> R<()> {
        tracing::warn!(payment = %self.id, code = %failure.code, "giving up: {}", failure.message);
        let p = self.e.update(&self.id, |p| {
            p.failing = Some(failure);
            Ok(())
        })?;
        let mut p = self.e.cancel_intent(&p, Source::Poll).await?;
        // Stripe refuses to cancel a PaymentIntent that is being authorised: wait for the
        // authorisation to end (bounded), then cancel again or report what it became.
        let until = Instant::now() + self.cfg.action_deadline;
        let mut n = 0;
        while p.status.on_reader() && Instant::now() < until {
            sleep(backoff(n).max(self.cfg.poll_max)).await;
            n += 1;
            p = self.load()?;
            if p.status.is_final() || p.failing.is_none() {
                break;
            }
            p = self.e.cancel_intent(&p, Source::Poll).await?;
        }
        Ok(())
    }

    async fn read_reader(&self) -> Option<Reader> {
        let mut n = 0;
        loop {
            self.e.count("retrieve_reader");
            match self
                .e
                .stripe()
                .at(crate::stripe::Priority::Customer)
                .retrieve_reader_on(&self.slot.id, &self.slot.options())
                .await
            {
                Ok(r) => {
                    // Keeps the fleet's status and last-seen fresh without a read of its own.
                    self.e.inner.directory.observe_reader(&r);
                    self.e.learn_place(&self.slot, &r);
                    return Some(r);
                }
                Err(e) if e.disposition() == Disposition::Definitive => {
                    tracing::warn!(reader = %self.slot.id, error = %e, "reader unreadable");
                    if e.status() == Some(404) && !self.reader_missing.swap(true, Ordering::SeqCst)
                    {
                        self.e.inner.directory.reader_missing(&self.slot.id);
                    }
                    return None;
                }
                Err(e) => {
                    tracing::info!(reader = %self.slot.id, error = %e, "reader read failed; retrying");
                    sleep(backoff(n)).await;
                    n += 1;
                }
            }
        }
    }

    async fn read_intent(&self, p: &Payment) -> R<PaymentIntent> {
        let mut n = 0;
        loop {
            match self.e.read_intent(p).await {
                Ok(pi) => return Ok(pi),
                Err(PaymentError::Stripe(e)) if e.disposition() != Disposition::Definitive => {
                    tracing::info!(payment = %self.id, error = %e, "PaymentIntent read failed; retrying");
                    sleep(backoff(n)).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The failure of a payment whose reader Stripe no longer has.
    fn reader_gone(&self, detail: impl std::fmt::Display) -> Failure {
        Failure::new(
            "reader_not_found",
            format!(
                "Stripe no longer has reader {} (deleted, or registered elsewhere); register it again or use another reader ({detail})",
                self.slot.id
            ),
        )
    }

    async fn cancel_action(&self) -> Result<Reader, StripeError> {
        self.e.count("cancel_action");
        let p = self.load().ok();
        let key = format!(
            "readerd:cancel_action:{}:{}:{}",
            self.id,
            p.map(|p| p.attempt).unwrap_or(0),
            new_id("k")
        );
        self.e
            .stripe()
            .cancel_action(&self.slot.id, &self.slot.options().key(key))
            .await
    }
}
