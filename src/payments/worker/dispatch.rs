//! Steps 2 and 3: the pre-flight check of the reader (from the next list of its place when
//! that shows it free, else a read; someone else's action: wait, bounded,
//! never cancel it; a stale action of one of our finished payments, or our own cart display:
//! clear it), then `process_payment_intent` with a new key per attempt, written before it is
//! sent. A refusal that may be a false negative (busy, timeout, a 5xx, no answer) is matched
//! on the reader before anything is re-sent.

use super::review::ReaderStep;
use super::{backoff, is_our_action, Flow, R};
use crate::payments::engine::has_money;
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::machine::{ChargeType, Failure, Observation, Payment, Source, Status, Step};
use crate::stripe::params::ProcessPaymentIntent;
use crate::stripe::wire::{ActionStatus, ActionType, ProcessConfig};
use crate::stripe::{Disposition, StripeError};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// What the pre-flight read found.
pub(super) enum Preflight {
    /// Idle (or showing a finished action): dispatch.
    Free,
    /// Our action is already in progress (a resumed payment): watch it.
    Ours,
    /// The payment ended while waiting (canceled, or the wait ran out).
    Done,
}

/// Where a dispatch stands after one step.
enum Next {
    /// The reader has our PaymentIntent (since this instant): watch it.
    Watch(Box<Payment>, Instant),
    /// The payment ended, was canceled or given up: the reader is free.
    Stop,
    /// Read the payment again and make another attempt.
    Again,
}

/// The bounds of one dispatch, across its attempts.
struct Attempts {
    pi: String,
    busy_until: Instant,
    offline_until: Instant,
    resends: u32,
    offline_noted: bool,
}

impl Flow {
    pub(super) async fn preflight(&self, pi: &str, busy_until: Instant) -> R<Preflight> {
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
            if is_our_action(&r, pi).is_some() {
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

    pub(super) fn slot_shows_our_cart(&self) -> std::sync::MutexGuard<'_, bool> {
        self.slot.shows_our_cart.lock().expect("display flag")
    }

    async fn reader_has_ours(&self, pi: &str) -> bool {
        match self.read_reader().await {
            Some(r) => is_our_action(&r, pi) == Some(ActionStatus::InProgress),
            None => false,
        }
    }

    /// Hands the PaymentIntent to the reader. `Some` when the reader has it (watch it).
    pub(super) async fn dispatch(&self, mut p: Payment) -> R<Option<(Payment, Instant)>> {
        let mut a = Attempts {
            pi: p.payment_intent.clone().unwrap_or_default(),
            busy_until: Instant::now() + self.cfg.busy_wait,
            offline_until: Instant::now() + self.cfg.offline_wait,
            resends: 0,
            offline_noted: false,
        };
        loop {
            let next = match self.before_attempt(&p, &a).await? {
                Some(next) => next,
                None => {
                    p = self.load()?;
                    if p.cancel_requested {
                        self.e.cancel_intent(&p, Source::Api).await?;
                        return Ok(None);
                    }
                    match self.send(&p, &a.pi).await? {
                        Ok(p) => Next::Watch(Box::new(p), Instant::now()),
                        Err(err) => self.after_refusal(&p, &err, &mut a).await?,
                    }
                }
            };
            match next {
                Next::Watch(p, at) => return Ok(Some((*p, at))),
                Next::Stop => return Ok(None),
                Next::Again => p = self.load()?,
            }
        }
    }

    /// What settles the dispatch before an attempt: a failure or cancel already recorded,
    /// or what the pre-flight read found. `None`: the reader is free, send.
    async fn before_attempt(&self, p: &Payment, a: &Attempts) -> R<Option<Next>> {
        if let Some(f) = p.failing.clone() {
            self.give_up(f).await?;
            return Ok(Some(Next::Stop));
        }
        if p.cancel_requested {
            self.e.cancel_intent(p, Source::Api).await?;
            return Ok(Some(Next::Stop));
        }
        if a.resends == 0 && self.slot.known_free.swap(false, Ordering::SeqCst) {
            // The last job left the reader with its action over: no pre-flight read. A reader
            // someone took since refuses with `terminal_reader_busy`, and is read then.
            return Ok(None);
        }
        if a.resends == 0 {
            // The next list of the reader's place is the pre-flight check, shared with every
            // reader there that starts now. Only a reader it shows free is taken from it;
            // anything in progress (ours after a restart, a stale one, someone else's) is
            // read and handled below.
            let wait = self.cfg.list_poll_alone;
            if let Some(r) = self.e.listed_view(&self.slot, wait).await {
                let busy = r
                    .action
                    .as_ref()
                    .is_some_and(|a| a.status == ActionStatus::InProgress);
                if !busy {
                    return Ok(None);
                }
            }
        }
        Ok(match self.preflight(&a.pi, a.busy_until).await? {
            Preflight::Done => Some(Next::Stop),
            Preflight::Ours => {
                let p = self.observe(Observation::Dispatched, Source::Poll)?;
                Some(Next::Watch(Box::new(p), Instant::now()))
            }
            Preflight::Free => None,
        })
    }

    /// One attempt of the payment's reader action, its key written first: for a reviewed
    /// payment `collect_payment_method`, then once confirmed `confirm_payment_intent`;
    /// otherwise `process_payment_intent`. `Ok`: the reader has it (and the record says so).
    async fn send(&self, p: &Payment, pi: &str) -> R<Result<Payment, StripeError>> {
        let step = ReaderStep::of(p);
        let attempt = p.attempt + 1;
        let key = format!("readerd:{}:{pi}:{attempt}:{}", step.key_part(), new_id("k"));
        let k = key.clone();
        self.e.update(&self.id, |p| {
            p.attempt = attempt;
            p.attempt_key = Some(k);
            p.step = Step::Dispatching;
            Ok(())
        })?;
        failpoint(step.before());
        self.e
            .inner
            .stats
            .lock()
            .expect("stats")
            .dispatching(&self.id, std::time::Instant::now());
        self.e.count(step.endpoint());
        if std::mem::take(&mut *self.slot_shows_our_cart()) {
            self.e.cart_cleared(&self.slot.id);
        }
        let res = match step {
            ReaderStep::Process => {
                self.e
                    .stripe()
                    .process_payment_intent(
                        &self.slot.id,
                        &ProcessPaymentIntent {
                            payment_intent: pi.to_string(),
                            process_config: p.skip_tipping.then(|| ProcessConfig {
                                skip_tipping: Some(true),
                                ..ProcessConfig::default()
                            }),
                        },
                        &self.slot.options().key(key),
                    )
                    .await
            }
            ReaderStep::Collect | ReaderStep::Confirm => self.send_review(p, pi, step, key).await,
        };
        match res {
            Ok(r) => {
                // Where the reader stands, for the batched poll of its location.
                self.e.learn_place(&self.slot, &r);
                failpoint(step.after());
                let p = self.observe(Observation::Dispatched, Source::Poll)?;
                failpoint("after_dispatch_persisted");
                Ok(Ok(p))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// A refused `process_payment_intent`: wait and try again, find that the reader has it
    /// after all, or give up, by Stripe's error code.
    async fn after_refusal(&self, p: &Payment, err: &StripeError, a: &mut Attempts) -> R<Next> {
        let code = err.code().unwrap_or("").to_string();
        tracing::info!(payment = %self.id, error = %err, "process_payment_intent refused");
        match code.as_str() {
            "terminal_reader_busy" => {
                if self.reader_has_ours(&a.pi).await {
                    return self.dispatched();
                }
                if Instant::now() >= a.busy_until {
                    self.give_up(Failure::new("reader_busy", "the reader stayed busy"))
                        .await?;
                    return Ok(Next::Stop);
                }
                sleep(backoff(a.resends)).await;
                a.resends += 1;
            }
            "terminal_reader_timeout" => {
                // Maybe a false negative: did the reader get it after all?
                if self.reader_has_ours(&a.pi).await {
                    self.observe(
                        Observation::Note(
                            "reader timed out but had the payment after all; not re-sent".into(),
                        ),
                        Source::Poll,
                    )?;
                    return self.dispatched();
                }
                a.resends += 1;
                if a.resends >= self.cfg.dispatch_attempts {
                    self.give_up(Failure::new(
                        "timeout",
                        "the reader did not acknowledge the payment",
                    ))
                    .await?;
                    return Ok(Next::Stop);
                }
                sleep(Duration::from_secs(1)).await;
            }
            "terminal_reader_offline" => {
                if Instant::now() >= a.offline_until {
                    self.give_up(Failure::new(
                        "reader_offline",
                        "the reader is offline (no signal for 2 minutes)",
                    ))
                    .await?;
                    return Ok(Next::Stop);
                }
                if !a.offline_noted {
                    a.offline_noted = true;
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
                let intent = self.read_intent(p).await?;
                let p = self.observe(Observation::intent_read(&intent), Source::Poll)?;
                if matches!(p.status, Status::Queued | Status::Processing)
                    && !has_money(&intent.status)
                {
                    self.give_up(Failure::new("intent_invalid_state", err.to_string()))
                        .await?;
                }
                return Ok(Next::Stop);
            }
            "terminal_reader_invalid_location_for_payment" => {
                // Validated at acceptance, so the reader's location changed since (or the
                // registry has not seen the change yet).
                self.give_up(Failure::new(
                    "location_country_mismatch",
                    format!(
                        "Stripe refused the payment on reader {}: its location is not in the country of the account receiving the funds (merchant {}); move the reader to a location in the merchant's country, or sync the fleet if it was moved ({err})",
                        self.slot.id, p.merchant
                    ),
                ))
                .await?;
                return Ok(Next::Stop);
            }
            // A 5xx that Stripe stored under the attempt's key (`Stripe-Should-Retry: false`)
            // may or may not have reached the reader: handled below like any other server
            // error (the reader is read, a new attempt gets a new key).
            _ if err.disposition() == Disposition::Definitive
                && err.status().is_none_or(|s| s < 500) =>
            {
                let failure = self.refusal_failure(p, &a.pi, err, &code);
                self.give_up(failure).await?;
                return Ok(Next::Stop);
            }
            _ => {
                // 5xx, 429, dropped connection: the client replayed the same key (or Stripe
                // stored the 5xx); read the reader before a new attempt.
                if self.reader_has_ours(&a.pi).await {
                    return self.dispatched();
                }
                a.resends += 1;
                if a.resends >= self.cfg.dispatch_attempts * 3 {
                    self.give_up(Failure::new(
                        "stripe_unavailable",
                        format!("could not hand the payment to the reader: {err}"),
                    ))
                    .await?;
                    return Ok(Next::Stop);
                }
                sleep(backoff(a.resends)).await;
            }
        }
        Ok(Next::Again)
    }

    /// The reader turned out to have our PaymentIntent: record it and watch.
    fn dispatched(&self) -> R<Next> {
        let p = self.observe(Observation::Dispatched, Source::Poll)?;
        Ok(Next::Watch(Box::new(p), Instant::now()))
    }

    /// The failure a definitive refusal of `process_payment_intent` stands for.
    fn refusal_failure(&self, p: &Payment, pi: &str, err: &StripeError, code: &str) -> Failure {
        let param = err.api_error().and_then(|a| a.param.clone());
        if code == "resource_missing" && param.as_deref() != Some("payment_intent") {
            // Not our PaymentIntent but the reader in the path is missing.
            if !self.reader_missing.swap(true, Ordering::SeqCst) {
                self.e.inner.directory.reader_missing(&self.slot.id);
            }
            self.reader_gone(err)
        } else if code == "resource_missing" && p.charge_type == ChargeType::Direct {
            // The reader's account (the platform) cannot see a PaymentIntent of the connected
            // account.
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
        }
    }
}
