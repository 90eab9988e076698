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

use super::engine::{has_money, Engine, EngineConfig, PaymentError, ReaderSlot};
use super::failpoint::failpoint;
use super::ids::new_id;
use super::machine::{Failure, IntentView, Observation, Payment, Source, Status, Step};
use super::queue::Job;
use crate::clock::{now_ms, now_rfc3339};
use crate::stripe::params::{CreatePaymentIntent, ProcessPaymentIntent, SetReaderDisplay};
use crate::stripe::wire::{
    ActionStatus, ActionType, CaptureMethod, PaymentIntent, PaymentIntentStatus, Reader,
    ReaderStatus,
};
use crate::stripe::{Disposition, RequestOptions, StripeError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// How far Stripe's clock may be behind ours when looking for a PaymentIntent by the time
/// it was created.
const CLOCK_MARGIN: Duration = Duration::from_secs(15 * 60);

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
        .liveness
        .get()
        .map(|l| l.register(format!("reader worker {}", slot.id), WORKER_BUDGET));
    let tick = || {
        if let Some(b) = &beat {
            b.tick();
        }
    };
    loop {
        let job = loop {
            tick();
            if engine.is_draining() {
                // Shutting down: nothing new starts on the reader; the queue is on disk.
                tokio::time::sleep(IDLE_BEAT).await;
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
            Job::Display { id, .. } => display(&engine, &slot, id).await,
        }
        *slot.current.lock().expect("current") = None;
    }
}

type R<T> = Result<T, PaymentError>;

/// What the pre-flight read found.
enum Preflight {
    /// Idle (or showing a finished action): dispatch.
    Free,
    /// Our action is already in progress (a resumed payment): watch it.
    Ours,
    /// The payment ended while waiting (canceled, or the wait ran out).
    Done,
}

struct Flow {
    e: Engine,
    slot: Arc<ReaderSlot>,
    cfg: EngineConfig,
    id: String,
    /// Stripe answered 404 for the reader: it was deleted (or moved off the platform).
    reader_missing: AtomicBool,
}

fn is_our_action(r: &Reader, pi: &str) -> Option<ActionStatus> {
    let a = r.action.as_ref()?;
    (a.kind == ActionType::ProcessPaymentIntent && a.payment_intent_id() == Some(pi))
        .then(|| a.status.clone())
}

fn backoff(n: u32) -> Duration {
    Duration::from_millis((250u64 << n.min(5)).min(5_000))
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
        let at = now_rfc3339();
        let text = text.into();
        self.e.update(&self.id, |p| {
            p.waiting_for = waiting_for;
            p.apply(Observation::Note(text), Source::Poll, &at)?;
            Ok(())
        })
    }

    async fn run(&self) -> R<()> {
        let p = self.load()?;
        if p.status.is_final() || matches!(p.status, Status::RequiresCapture | Status::Declined) {
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
        while matches!(p.status, Status::Queued | Status::Processing) && Instant::now() < until {
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

    // ----------------------------------------------------------------------------------
    // Step 1: the PaymentIntent

    async fn ensure_intent(&self, p: Payment) -> R<Option<Payment>> {
        if p.payment_intent.is_some() {
            return Ok(Some(p));
        }
        let p = self.e.update(&self.id, |p| {
            p.step = Step::CreatingIntent;
            Ok(())
        })?;
        failpoint("before_pi_create");
        let mut metadata = p.metadata.clone();
        metadata.insert("readerd_payment".into(), p.id.clone());
        let params = CreatePaymentIntent {
            amount: p.amount,
            currency: p.currency.clone(),
            payment_method_types: vec!["card_present".into()],
            capture_method: match p.capture {
                super::machine::CaptureMode::Automatic => CaptureMethod::Automatic,
                super::machine::CaptureMode::Manual => CaptureMethod::Manual,
            },
            application_fee_amount: p.application_fee_amount,
            description: p.description.clone(),
            metadata,
            transfer_destination: match p.charge_type {
                super::machine::ChargeType::Direct => None,
                super::machine::ChargeType::Destination => Some(p.account.clone()),
            },
            on_behalf_of: None,
        };
        let started = Instant::now();
        let mut key = p.intent_key.clone();
        let mut n = 0u32;
        loop {
            self.e.count("create_payment_intent");
            let res = self
                .e
                .stripe()
                .create_payment_intent(&params, &Engine::intent_options(&p).key(key.clone()))
                .await;
            match res {
                Ok(pi) => {
                    failpoint("after_pi_created");
                    self.e.index_intent(&pi.id, &self.id);
                    let p = self.e.update(&self.id, |p| {
                        p.payment_intent = Some(pi.id.clone());
                        p.step = Step::IntentCreated;
                        Ok(())
                    })?;
                    failpoint("after_pi_persisted");
                    return Ok(Some(p));
                }
                Err(e) => {
                    let disp = e.disposition();
                    let stored_5xx =
                        disp == Disposition::Definitive && e.status().is_some_and(|s| s >= 500);
                    if disp == Disposition::Definitive && !stored_5xx {
                        let code = e.code().unwrap_or("stripe_error").to_string();
                        let code = match code.as_str() {
                            "capability_not_active"
                            | "account_invalid"
                            | "payment_method_unactivated" => "merchant_not_enabled".to_string(),
                            _ => code,
                        };
                        self.give_up(Failure::new(code, e.to_string())).await?;
                        return Ok(None);
                    }
                    if stored_5xx || started.elapsed() >= self.cfg.create_window {
                        // Stripe stored a failure for this key (or will not answer): look for
                        // a PaymentIntent carrying our id before anything else.
                        let found = self.find_intent(&p).await;
                        if let Ok(Some(pi)) = found {
                            let p = self.e.update(&self.id, |p| {
                                p.payment_intent = Some(pi.clone());
                                p.step = Step::IntentCreated;
                                Ok(())
                            })?;
                            self.e.index_intent(&pi, &self.id);
                            return Ok(Some(p));
                        }
                        if started.elapsed() >= self.cfg.create_window {
                            self.give_up(Failure::new(
                                "stripe_unavailable",
                                format!("could not create the PaymentIntent: {e}"),
                            ))
                            .await?;
                            return Ok(None);
                        }
                        if found.is_ok() {
                            // None exists: a fresh key, written before it is used.
                            n += 1;
                            key = format!("{}:r{n}", p.intent_key);
                            let k = key.clone();
                            self.e.update(&self.id, |p| {
                                p.intent_key = k;
                                Ok(())
                            })?;
                        }
                        // A failed search proves nothing: the key stays, and the search is
                        // made again after the next (replayed) failure.
                    }
                    tracing::info!(payment = %self.id, error = %e, "PaymentIntent creation failed; replaying");
                    sleep(backoff(n.max(1))).await;
                    n += 1;
                }
            }
        }
    }

    /// A PaymentIntent of this payment on Stripe, found by its metadata among those created
    /// since the payment was accepted (less a margin for clocks that disagree), so that the
    /// search costs a page or two whatever the account's history.
    async fn find_intent(&self, p: &Payment) -> Result<Option<String>, StripeError> {
        self.e.count("list_payment_intents");
        let opts = Engine::intent_options(p);
        let since = humantime::parse_rfc3339_weak(&p.created_at)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64 - CLOCK_MARGIN.as_secs() as i64);
        let list = match since {
            Some(since) => {
                self.e
                    .stripe()
                    .list_payment_intents_created_since(since, &opts)
                    .await
            }
            None => self.e.stripe().list_payment_intents(&opts).await,
        }?;
        Ok(list
            .into_iter()
            .find(|pi| pi.metadata.get("readerd_payment") == Some(&p.id))
            .map(|pi| pi.id))
    }

    // ----------------------------------------------------------------------------------
    // Reads that retry: never conclude anything from a failed read.

    async fn read_reader(&self) -> Option<Reader> {
        let mut n = 0;
        loop {
            self.e.count("retrieve_reader");
            match self.e.stripe().retrieve_reader(&self.slot.id).await {
                Ok(r) => {
                    // Keeps the fleet's status and last-seen fresh without a read of its own.
                    self.e.inner.directory.observe_reader(&r);
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
            .cancel_action(&self.slot.id, &RequestOptions::platform().key(key))
            .await
    }

    // ----------------------------------------------------------------------------------
    // Steps 2 and 3: pre-flight and dispatch

    async fn preflight(&self, pi: &str, busy_until: Instant) -> R<Preflight> {
        let mut n = 0;
        let mut noted = false;
        loop {
            let Some(r) = self.read_reader().await else {
                if self.reader_missing.load(Ordering::SeqCst) {
                    self.give_up(self.reader_gone("404 on reading it")).await?;
                    return Ok(Preflight::Done);
                }
                return Ok(Preflight::Free);
            };
            let action = r
                .action
                .as_ref()
                .filter(|a| a.status == ActionStatus::InProgress);
            let Some(a) = action else {
                return Ok(Preflight::Free);
            };
            if a.kind == ActionType::ProcessPaymentIntent && a.payment_intent_id() == Some(pi) {
                return Ok(Preflight::Ours);
            }
            if let Some(stale) = a
                .payment_intent_id()
                .and_then(|x| self.e.payment_for_intent(x))
            {
                if stale.status.is_final() {
                    // Left behind by one of our own payments that is over (its reader went
                    // away mid-action): ours to clear.
                    tracing::info!(reader = %self.slot.id, payment = %stale.id, "clearing a stale action of a finished payment");
                    let _ = self.cancel_action().await;
                    if n > 3 {
                        sleep(backoff(n)).await;
                    }
                    n += 1;
                    continue;
                }
            }
            if a.kind == ActionType::SetReaderDisplay && *self.slot_shows_our_cart() {
                // Our own cart display: clear it, it never blocks a payment.
                let _ = self.cancel_action().await;
                continue;
            }
            // Someone else's action: wait for it, never cancel it.
            if Instant::now() >= busy_until {
                self.give_up(Failure::new(
                    "reader_busy",
                    format!(
                        "the reader stayed busy with another {} action",
                        a.kind.as_str()
                    ),
                ))
                .await?;
                return Ok(Preflight::Done);
            }
            if !noted {
                noted = true;
                self.note(
                    format!(
                        "reader busy with another {} action{}; waiting (never canceled; an operator may force-clear it by naming it)",
                        a.kind,
                        a.payment_intent_id()
                            .map(|p| format!(" for {p}"))
                            .unwrap_or_default()
                    ),
                    Some("reader_busy".into()),
                )?;
            }
            tokio::select! {
                _ = sleep(backoff(n).max(self.cfg.poll_min)) => {}
                _ = self.slot.hint.notified() => {}
            }
            n += 1;
            let p = self.load()?;
            if p.cancel_requested {
                self.e.cancel_intent(&p, Source::Api).await?;
                return Ok(Preflight::Done);
            }
        }
    }

    fn slot_shows_our_cart(&self) -> std::sync::MutexGuard<'_, bool> {
        self.slot.shows_our_cart.lock().expect("display flag")
    }

    /// Hands the PaymentIntent to the reader. `Some` when the reader has it (watch it).
    async fn dispatch(&self, mut p: Payment) -> R<Option<(Payment, Instant)>> {
        let pi = p.payment_intent.clone().unwrap_or_default();
        let busy_until = Instant::now() + self.cfg.busy_wait;
        let offline_until = Instant::now() + self.cfg.offline_wait;
        let mut resends = 0u32;
        let mut offline_noted = false;
        loop {
            if let Some(f) = p.failing.clone() {
                self.give_up(f).await?;
                return Ok(None);
            }
            if p.cancel_requested {
                self.e.cancel_intent(&p, Source::Api).await?;
                return Ok(None);
            }
            match self.preflight(&pi, busy_until).await? {
                Preflight::Done => return Ok(None),
                Preflight::Ours => {
                    let p = self.observe(Observation::Dispatched, Source::Poll)?;
                    return Ok(Some((p, Instant::now())));
                }
                Preflight::Free => {}
            }
            p = self.load()?;
            if p.cancel_requested {
                self.e.cancel_intent(&p, Source::Api).await?;
                return Ok(None);
            }
            let attempt = p.attempt + 1;
            let key = format!("readerd:ppi:{pi}:{attempt}:{}", new_id("k"));
            let k = key.clone();
            self.e.update(&self.id, |p| {
                p.attempt = attempt;
                p.attempt_key = Some(k);
                p.step = Step::Dispatching;
                Ok(())
            })?;
            failpoint("before_dispatch");
            self.e
                .inner
                .stats
                .lock()
                .expect("stats")
                .dispatching(&self.id, std::time::Instant::now());
            self.e.count("process_payment_intent");
            *self.slot_shows_our_cart() = false;
            let res = self
                .e
                .stripe()
                .process_payment_intent(
                    &self.slot.id,
                    &ProcessPaymentIntent {
                        payment_intent: pi.clone(),
                        process_config: None,
                    },
                    &RequestOptions::platform().key(key),
                )
                .await;
            let err = match res {
                Ok(_) => {
                    failpoint("after_dispatch");
                    let p = self.observe(Observation::Dispatched, Source::Poll)?;
                    failpoint("after_dispatch_persisted");
                    return Ok(Some((p, Instant::now())));
                }
                Err(e) => e,
            };
            let code = err.code().unwrap_or("").to_string();
            tracing::info!(payment = %self.id, error = %err, "process_payment_intent refused");
            match code.as_str() {
                "terminal_reader_busy" => {
                    if self.reader_has_ours(&pi).await {
                        let p = self.observe(Observation::Dispatched, Source::Poll)?;
                        return Ok(Some((p, Instant::now())));
                    }
                    if Instant::now() >= busy_until {
                        self.give_up(Failure::new("reader_busy", "the reader stayed busy"))
                            .await?;
                        return Ok(None);
                    }
                    sleep(backoff(resends)).await;
                    resends += 1;
                }
                "terminal_reader_timeout" => {
                    // Maybe a false negative: did the reader get it after all?
                    if self.reader_has_ours(&pi).await {
                        self.observe(
                            Observation::Note(
                                "reader timed out but had the payment after all; not re-sent"
                                    .into(),
                            ),
                            Source::Poll,
                        )?;
                        let p = self.observe(Observation::Dispatched, Source::Poll)?;
                        return Ok(Some((p, Instant::now())));
                    }
                    resends += 1;
                    if resends >= self.cfg.dispatch_attempts {
                        self.give_up(Failure::new(
                            "timeout",
                            "the reader did not acknowledge the payment",
                        ))
                        .await?;
                        return Ok(None);
                    }
                    sleep(Duration::from_secs(1)).await;
                }
                "terminal_reader_offline" => {
                    if Instant::now() >= offline_until {
                        self.give_up(Failure::new(
                            "reader_offline",
                            "the reader is offline (no signal for 2 minutes)",
                        ))
                        .await?;
                        return Ok(None);
                    }
                    if !offline_noted {
                        offline_noted = true;
                        self.note(
                            "reader offline; waiting for it",
                            Some("reader_offline".into()),
                        )?;
                    }
                    tokio::select! {
                        _ = sleep(Duration::from_secs(2)) => {}
                        _ = self.slot.hint.notified() => {}
                    }
                }
                "intent_invalid_state" => {
                    let intent = self.read_intent(&p).await?;
                    let p = self.observe(Observation::intent_read(&intent), Source::Poll)?;
                    if matches!(p.status, Status::Queued | Status::Processing)
                        && !has_money(&intent.status)
                    {
                        self.give_up(Failure::new("intent_invalid_state", err.to_string()))
                            .await?;
                    }
                    return Ok(None);
                }
                "terminal_reader_invalid_location_for_payment" => {
                    // Validated at acceptance, so the reader's location changed since (or
                    // the registry has not seen the change yet).
                    self.give_up(Failure::new(
                        "location_country_mismatch",
                        format!(
                            "Stripe refused the payment on reader {}: its location is not in the country of the account receiving the funds (merchant {}); move the reader to a location in the merchant's country, or sync the fleet if it was moved ({err})",
                            self.slot.id, p.merchant
                        ),
                    ))
                    .await?;
                    return Ok(None);
                }
                _ => match err.disposition() {
                    // A 5xx that Stripe stored under the attempt's key (`Stripe-Should-Retry:
                    // false`) may or may not have reached the reader: handled below like any
                    // other server error (the reader is read, a new attempt gets a new key).
                    Disposition::Definitive if err.status().is_none_or(|s| s < 500) => {
                        let param = err.api_error().and_then(|a| a.param.clone());
                        let failure = if code == "resource_missing"
                            && param.as_deref() != Some("payment_intent")
                        {
                            // Not our PaymentIntent but the reader in the path is missing.
                            if !self.reader_missing.swap(true, Ordering::SeqCst) {
                                self.e.inner.directory.reader_missing(&self.slot.id);
                            }
                            self.reader_gone(&err)
                        } else if code == "resource_missing"
                            && p.charge_type == super::machine::ChargeType::Direct
                        {
                            // The reader's account (the platform) cannot see a PaymentIntent
                            // of the connected account.
                            Failure::new(
                                "account_mismatch",
                                format!(
                                    "Stripe cannot find PaymentIntent {pi} from the platform's reader: a platform-owned reader may process a connected account's PaymentIntent only when Stripe has enabled that preview for this platform and the PaymentIntent was created by this platform with Stripe-Account; ask Stripe to enable the platform-owned-reader preview, or give merchant {} charge_type \"destination\", which works without it ({err})",
                                    p.merchant
                                ),
                            )
                        } else if code.is_empty() {
                            Failure::new("stripe_error", err.to_string())
                        } else {
                            Failure::new(code, err.to_string())
                        };
                        self.give_up(failure).await?;
                        return Ok(None);
                    }
                    _ => {
                        // 5xx, 429, dropped connection: the client replayed the same key (or
                        // Stripe stored the 5xx); read the reader before a new attempt.
                        if self.reader_has_ours(&pi).await {
                            let p = self.observe(Observation::Dispatched, Source::Poll)?;
                            return Ok(Some((p, Instant::now())));
                        }
                        resends += 1;
                        if resends >= self.cfg.dispatch_attempts * 3 {
                            self.give_up(Failure::new(
                                "stripe_unavailable",
                                format!("could not hand the payment to the reader: {err}"),
                            ))
                            .await?;
                            return Ok(None);
                        }
                        sleep(backoff(resends)).await;
                    }
                },
            }
            p = self.load()?;
        }
    }

    async fn reader_has_ours(&self, pi: &str) -> bool {
        match self.read_reader().await {
            Some(r) => is_our_action(&r, pi) == Some(ActionStatus::InProgress),
            None => false,
        }
    }

    // ----------------------------------------------------------------------------------
    // Step 4: watching

    async fn watch(&self, mut p: Payment, dispatched: Instant, first: Source) -> R<()> {
        let pi = p.payment_intent.clone().unwrap_or_default();
        let dispatched_ms = now_ms();
        let mut interval = self.cfg.poll_min;
        let mut deadline = dispatched + self.cfg.action_deadline;
        let mut cancel_sent = false;
        let mut pickup_noted = false;
        let mut deadline_failure: Option<Failure> = None;
        let mut source = first;
        // A resumed payment looks at once; otherwise every look follows a wait.
        let mut look_now = first == Source::Reconcile;
        loop {
            if !look_now {
                let woke = tokio::select! {
                    _ = sleep(interval) => false,
                    _ = self.slot.hint.notified() => true,
                };
                source = if woke { Source::Webhook } else { Source::Poll };
            }
            look_now = false;
            p = self.load()?;
            if p.status.is_final() {
                return Ok(());
            }
            if p.cancel_requested && !cancel_sent {
                cancel_sent = true;
                match self.cancel_action().await {
                    Ok(_) => {
                        self.observe(
                            Observation::Note("cancel sent to the reader".into()),
                            Source::Api,
                        )?;
                    }
                    Err(e) if e.code() == Some("terminal_reader_busy") => {
                        self.note(
                            "cancel refused by the reader: the card is being authorised; waiting for the result",
                            Some("authorisation".into()),
                        )?;
                    }
                    Err(e) => {
                        self.observe(
                            Observation::Note(format!("cancel on the reader failed: {e}")),
                            Source::Api,
                        )?;
                    }
                }
            }
            let reader = self.read_reader().await;
            let ours = reader.as_ref().and_then(|r| is_our_action(r, &pi));
            if ours == Some(ActionStatus::InProgress) {
                let r = reader.as_ref().expect("ours implies a reader");
                let offline = r.status == Some(ReaderStatus::Offline);
                if !pickup_noted && dispatched.elapsed() >= self.cfg.pickup_timeout {
                    let seen = r.last_seen_at.is_some_and(|ms| ms >= dispatched_ms);
                    if !seen || offline {
                        pickup_noted = true;
                        self.note(
                            format!(
                                "the reader has not picked the payment up after {} s (last seen {})",
                                self.cfg.pickup_timeout.as_secs(),
                                r.last_seen_at
                                    .map(|ms| format!("{} s before the dispatch", (dispatched_ms - ms) / 1000))
                                    .unwrap_or_else(|| "never".into())
                            ),
                            Some("reader_not_picked_up".into()),
                        )?;
                    }
                }
                if Instant::now() >= deadline && deadline_failure.is_none() {
                    let failure = if offline {
                        Failure::new(
                            "reader_offline",
                            "the reader went offline during the payment",
                        )
                    } else {
                        Failure::new("timeout", "the reader did not finish the payment in time")
                    };
                    match self.cancel_action().await {
                        Ok(_) => {
                            self.observe(
                                Observation::Note(format!(
                                    "deadline passed ({}); reader action canceled",
                                    failure.code
                                )),
                                Source::Poll,
                            )?;
                            deadline_failure = Some(failure);
                        }
                        Err(e) => {
                            // Authorising (busy) or unreachable: look again a bit later.
                            self.observe(
                                Observation::Note(format!(
                                    "deadline passed but the reader action could not be canceled: {e}"
                                )),
                                Source::Poll,
                            )?;
                            deadline = Instant::now() + self.cfg.poll_max * 5;
                            if offline {
                                // An unreachable reader cannot be cancelled; the deadline
                                // still stands, and the PaymentIntent decides.
                                deadline_failure = Some(failure);
                            } else {
                                interval = (interval * 3 / 2).min(self.cfg.poll_max);
                                continue;
                            }
                        }
                    }
                } else {
                    interval = (interval * 3 / 2).min(self.cfg.poll_max);
                    source = Source::Poll;
                    continue;
                }
            }
            // Our action is over (or gone): the PaymentIntent decides.
            self.e
                .inner
                .stats
                .lock()
                .expect("stats")
                .reader_done(&self.id, std::time::Instant::now());
            let action_failure = reader.as_ref().and_then(|r| {
                let a = r.action.as_ref()?;
                (ours == Some(ActionStatus::Failed)).then(|| {
                    Failure::new(
                        a.failure_code
                            .clone()
                            .unwrap_or_else(|| "reader_action_failed".into()),
                        a.failure_message
                            .clone()
                            .unwrap_or_else(|| "the reader action failed".into()),
                    )
                })
            });
            let intent = self.read_intent(&p).await?;
            let reader_done = ours != Some(ActionStatus::InProgress) || deadline_failure.is_some();
            let p = self.observe(
                Observation::Intent {
                    view: IntentView::from(&intent),
                    reader_done,
                },
                source,
            )?;
            match p.status {
                Status::Processing | Status::Queued => match intent.status {
                    PaymentIntentStatus::RequiresPaymentMethod
                        if intent.last_payment_error.is_none() || deadline_failure.is_some() =>
                    {
                        let customer = action_failure
                            .as_ref()
                            .is_some_and(|f| f.code == "customer_canceled");
                        if customer {
                            // The customer pressed cancel on the reader: a cancel, which
                            // Stripe confirms by canceling the PaymentIntent.
                            let f = action_failure.clone();
                            let p = self.e.update(&self.id, |p| {
                                p.cancel_requested = true;
                                p.failure = f;
                                Ok(())
                            })?;
                            self.note("the customer canceled on the reader", None)?;
                            self.e.cancel_intent(&p, Source::Poll).await?;
                            return Ok(());
                        }
                        if p.cancel_requested {
                            self.e.cancel_intent(&p, Source::Api).await?;
                            return Ok(());
                        }
                        let f = deadline_failure
                            .clone()
                            .or(action_failure)
                            .unwrap_or_else(|| {
                                if self.reader_missing.load(Ordering::SeqCst) {
                                    self.reader_gone("404 while the payment was on it")
                                } else {
                                    Failure::new(
                                        "reader_action_lost",
                                        "the reader's action ended without a result",
                                    )
                                }
                            });
                        self.give_up(f).await?;
                        return Ok(());
                    }
                    _ => {
                        // Collected or authorising: the PaymentIntent has not decided yet.
                        if deadline_failure.is_some()
                            && Instant::now() >= deadline + self.cfg.action_deadline
                        {
                            let f = deadline_failure
                                .clone()
                                .unwrap_or_else(|| Failure::new("timeout", "no result in time"));
                            self.give_up(f).await?;
                            return Ok(());
                        }
                        interval = self.cfg.poll_min;
                        source = Source::Poll;
                    }
                },
                _ => return self.after(p).await,
            }
        }
    }
}

/// A cart display job: shown only when the reader is free; it never replaces an action in
/// progress.
async fn display(engine: &Engine, slot: &ReaderSlot, id: &str) {
    let Some(req) = engine.inner.displays.lock().expect("displays").remove(id) else {
        return;
    };
    let until = Instant::now() + engine.config().busy_wait;
    let mut n = 0;
    loop {
        engine.count("retrieve_reader");
        let busy = match engine.stripe().retrieve_reader(&req.reader).await {
            Ok(r) => {
                engine.inner.directory.observe_reader(&r);
                r.action.as_ref().is_some_and(|a| {
                    a.status == ActionStatus::InProgress && a.kind != ActionType::SetReaderDisplay
                })
            }
            Err(e) => {
                tracing::warn!(reader = %req.reader, error = %e, "display: reader unreadable");
                true
            }
        };
        if !busy {
            break;
        }
        if Instant::now() >= until {
            tracing::warn!(reader = %req.reader, display = %id, "display dropped: the reader stayed busy");
            return;
        }
        sleep(backoff(n)).await;
        n += 1;
    }
    engine.count("set_reader_display");
    let res = engine
        .stripe()
        .set_reader_display(
            &req.reader,
            &SetReaderDisplay { cart: req.cart },
            &RequestOptions::platform().key(format!("readerd:display:{id}")),
        )
        .await;
    match res {
        Ok(_) => *slot.shows_our_cart.lock().expect("display flag") = true,
        Err(e) => {
            tracing::warn!(reader = %req.reader, display = %id, error = %e, "display refused")
        }
    }
}
