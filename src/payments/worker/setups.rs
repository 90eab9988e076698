//! A setup job: the SetupIntent (created once, with the key written at acceptance), then
//! `process_setup_intent` on a free reader, then watching the reader's action until the
//! card is saved or refused, the customer walks away, or the point of sale cancels.
//!
//! Our action is recognised on the reader by its type and SetupIntent, never by position:
//! someone else's action is never touched. Each attempt's key is on disk (`step: sending`)
//! before it is sent; after a restart the reader is read first, and an action that is ours
//! is followed, not sent again; when the reader no longer shows it, the SetupIntent says
//! whether the card was saved. What a reader read says about our action is decided by
//! [`reading`], one pure function, which a reader carried by a webhook event feeds too (a
//! success only: a success does not go back). The reusable card is read from the
//! SetupIntent itself (`latest_attempt.payment_method_details.card_present.generated_card`).

use super::backoff;
use crate::payments::engine::{Engine, PaymentError, ReaderSlot};
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::machine::{Failure, Source};
use crate::payments::setups::{Setup, SetupObservation, SetupStep};
use crate::stripe::params::{CancelSetupIntent, CreateSetupIntent, ProcessSetupIntent};
use crate::stripe::wire::{ActionStatus, ActionType, Reader, SetupIntent, SetupIntentStatus};
use crate::stripe::{Disposition, Priority, StripeError};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// The metadata key that names our setup on its SetupIntent.
pub const METADATA_KEY: &str = "readerd_setup";

/// How our action on the reader ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Done {
    /// The card was saved; the reader's `generated_card`, when it shows one.
    Saved(Option<String>),
    /// The card was refused or the action failed.
    Failed(Failure),
}

/// What a reader read says about a setup.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Our action is on the reader and in progress.
    InProgress,
    /// Our action is over.
    Done(Done),
    /// Someone else's action is in progress: the reader is busy.
    Busy,
    /// The reader is free (no action of ours, nothing in progress).
    Free,
}

/// The decision about the SetupIntent `seti` from a read of its reader.
pub fn reading(r: &Reader, seti: &str) -> Reading {
    let Some(a) = r.action.as_ref() else {
        return Reading::Free;
    };
    let ours = a.kind == ActionType::ProcessSetupIntent && a.setup_intent_id() == Some(seti);
    if !ours {
        let busy = a.status == ActionStatus::InProgress && a.kind != ActionType::SetReaderDisplay;
        return if busy { Reading::Busy } else { Reading::Free };
    }
    match a.status {
        ActionStatus::InProgress => Reading::InProgress,
        ActionStatus::Succeeded => Reading::Done(Done::Saved(
            a.process_setup_intent
                .as_ref()
                .and_then(|p| p.generated_card.clone()),
        )),
        ActionStatus::Failed | ActionStatus::Other(_) => Reading::Done(Done::Failed(Failure::new(
            a.failure_code
                .clone()
                .unwrap_or_else(|| "action_failed".into()),
            a.failure_message
                .clone()
                .unwrap_or_else(|| "the reader reported a failure".into()),
        ))),
    }
}

type R<T> = Result<T, PaymentError>;

struct Job<'a> {
    e: &'a Engine,
    slot: &'a ReaderSlot,
    id: &'a str,
}

/// Runs one setup job to a final status (or until the daemon stops).
pub(super) async fn save(engine: &Engine, slot: &ReaderSlot, id: &str) {
    let job = Job {
        e: engine,
        slot,
        id,
    };
    if let Err(e) = job.run().await {
        tracing::error!(setup = %id, error = %e, "setup stopped; it resumes at the next start");
    }
}

impl Job<'_> {
    fn load(&self) -> R<Setup> {
        self.e
            .setup(self.id)?
            .ok_or(PaymentError::NotFound("setup"))
    }

    fn observe(&self, obs: SetupObservation, source: Source) -> R<Setup> {
        self.e.observe_setup(self.id, obs, source)
    }

    async fn run(&self) -> R<()> {
        let s = self.load()?;
        if s.status.is_final() {
            return Ok(());
        }
        if s.cancel_requested && s.step == SetupStep::Accepted {
            self.observe(SetupObservation::Canceled, Source::Api)?;
            return Ok(());
        }
        let resumed = s.step >= SetupStep::Sending;
        let Some(seti) = self.ensure_intent(s).await? else {
            return Ok(());
        };
        if resumed {
            // A restart: the action may be on the reader, or over already.
            if let Some(r) = self.read_reader().await {
                match reading(&r, &seti) {
                    Reading::InProgress => {
                        self.observe(SetupObservation::Accepted, Source::Reconcile)?;
                        return self.watch(&seti, Source::Reconcile).await;
                    }
                    Reading::Done(d) => return self.finish(&seti, d, Source::Reconcile).await,
                    Reading::Busy | Reading::Free => {}
                }
            }
            // Not on the reader (any more): the SetupIntent says whether the card was saved.
            if let Some(si) = self.read_intent(&seti).await {
                match si.status {
                    SetupIntentStatus::Succeeded => {
                        self.observe(
                            SetupObservation::Saved(si.generated_card().map(str::to_string)),
                            Source::Reconcile,
                        )?;
                        return Ok(());
                    }
                    SetupIntentStatus::Canceled => {
                        self.observe(
                            SetupObservation::Failed(Failure::new(
                                "setup_intent_canceled",
                                format!("SetupIntent {seti} was canceled on Stripe"),
                            )),
                            Source::Reconcile,
                        )?;
                        return Ok(());
                    }
                    _ => {}
                }
            }
        }
        if self.send(&seti).await? {
            self.watch(&seti, Source::Poll).await?;
        }
        Ok(())
    }

    /// The SetupIntent, created with the key written at acceptance (replayed after a crash,
    /// so there is one per setup). `None` when the setup ended instead.
    async fn ensure_intent(&self, s: Setup) -> R<Option<String>> {
        if let Some(si) = s.setup_intent {
            return Ok(Some(si));
        }
        let s = self.observe(SetupObservation::CreatingIntent, Source::Poll)?;
        let params = CreateSetupIntent {
            payment_method_types: vec!["card_present".into()],
            customer: s.customer.clone(),
            usage: Some("off_session".into()),
            on_behalf_of: s.on_behalf_of.clone(),
            description: None,
            metadata: [(METADATA_KEY.to_string(), s.id.clone())].into(),
        };
        let opts = Engine::setup_options(&s).key(s.intent_key.clone());
        let mut n = 0;
        loop {
            self.e.count("create_setup_intent");
            match self.e.stripe().create_setup_intent(&params, &opts).await {
                Ok(si) => {
                    self.observe(SetupObservation::IntentCreated(si.id.clone()), Source::Poll)?;
                    return Ok(Some(si.id));
                }
                Err(e) if e.disposition() == Disposition::Definitive || n >= 8 => {
                    self.fail(Failure::new(
                        e.code().unwrap_or("stripe_error").to_string(),
                        e.to_string(),
                    ))?;
                    return Ok(None);
                }
                Err(e) => {
                    tracing::info!(setup = %self.id, error = %e, "SetupIntent creation failed; replaying its key");
                    sleep(backoff(n)).await;
                    n += 1;
                }
            }
        }
    }

    /// Waits for a free reader (bounded), then sends `process_setup_intent` with a new key
    /// per attempt, written first. `true` when the reader took it.
    async fn send(&self, seti: &str) -> R<bool> {
        let cfg = self.e.config().clone();
        let until = Instant::now() + cfg.busy_wait;
        let mut n = 0;
        let mut timeouts = 0;
        loop {
            let s = self.load()?;
            if s.status.is_final() {
                return Ok(false);
            }
            if s.cancel_requested {
                self.close(seti, false).await?;
                return Ok(false);
            }
            match self.read_reader().await {
                None => {
                    self.fail_and_close(
                        seti,
                        Failure::new(
                            "reader_unavailable",
                            format!("reader {} could not be read", self.slot.id),
                        ),
                    )
                    .await?;
                    return Ok(false);
                }
                Some(r) => match reading(&r, seti) {
                    Reading::InProgress => {
                        self.observe(SetupObservation::Accepted, Source::Poll)?;
                        return Ok(true);
                    }
                    Reading::Done(d) => {
                        self.finish(seti, d, Source::Poll).await?;
                        return Ok(false);
                    }
                    Reading::Busy => {
                        if !self.wait_busy(seti, until, &mut n).await? {
                            return Ok(false);
                        }
                        continue;
                    }
                    Reading::Free => {}
                },
            }
            let key = format!("readerd:setup:{}:{}", self.id, s.attempt + 1);
            self.observe(SetupObservation::Sending { key: key.clone() }, Source::Poll)?;
            failpoint("before_setup_send");
            self.e.count("process_setup_intent");
            let params = ProcessSetupIntent {
                setup_intent: seti.to_string(),
                allow_redisplay: s.allow_redisplay.as_str().to_string(),
                enable_customer_cancellation: None,
            };
            let res = self
                .e
                .stripe()
                .process_setup_intent(&self.slot.id, &params, &self.slot.options().key(key))
                .await;
            match res {
                Ok(r) => {
                    self.e.inner.directory.observe_reader(&r);
                    failpoint("after_setup_sent");
                    self.observe(SetupObservation::Accepted, Source::Poll)?;
                    if let Reading::Done(d) = reading(&r, seti) {
                        self.finish(seti, d, Source::Poll).await?;
                        return Ok(false);
                    }
                    return Ok(true);
                }
                Err(e) if e.code() == Some("terminal_reader_busy") => {
                    if !self.wait_busy(seti, until, &mut n).await? {
                        return Ok(false);
                    }
                }
                Err(e) if e.code() == Some("terminal_reader_timeout") => {
                    // Possibly a false negative: the next read tells; the next attempt has
                    // its own key.
                    timeouts += 1;
                    if timeouts >= cfg.dispatch_attempts {
                        return self.refused(seti, &e).await.map(|_| false);
                    }
                }
                Err(e) if e.disposition() == Disposition::Definitive => {
                    return self.refused(seti, &e).await.map(|_| false);
                }
                Err(e) => {
                    // Outcome unknown (the client spent its retries): the next read of the
                    // reader tells whether our action is there.
                    tracing::info!(setup = %self.id, error = %e, "process_setup_intent outcome unknown; reading the reader");
                    if Instant::now() >= until {
                        return self.refused(seti, &e).await.map(|_| false);
                    }
                    sleep(backoff(n)).await;
                    n += 1;
                }
            }
        }
    }

    /// Someone else's action holds the reader: wait (bounded), never cancel it. `false`
    /// once the wait is over (the setup failed as `reader_busy`).
    async fn wait_busy(&self, seti: &str, until: Instant, n: &mut u32) -> R<bool> {
        if super::wait_for_free_reader(self.slot, until, n).await {
            return Ok(true);
        }
        self.fail_and_close(seti, super::reader_stayed_busy())
            .await?;
        Ok(false)
    }

    async fn refused(&self, seti: &str, e: &StripeError) -> R<()> {
        self.fail_and_close(
            seti,
            Failure::new(
                e.code().unwrap_or("stripe_error").to_string(),
                e.to_string(),
            ),
        )
        .await
    }

    /// What a reader event said about our action since the watch last looked: only a
    /// success stands for a read (an action that succeeded does not go back).
    fn seen_success(&self, seti: &str) -> Option<Done> {
        let r = self.slot.seen.lock().expect("seen reader").reader.take()?;
        match reading(&r, seti) {
            Reading::Done(d @ Done::Saved(_)) => Some(d),
            _ => None,
        }
    }

    /// Polls the reader (woken early by webhooks and cancels) until our action is over. Past
    /// the action deadline, or on a cancel from the point of sale, our own action is
    /// canceled.
    async fn watch(&self, seti: &str, source: Source) -> R<()> {
        let cfg = self.e.config().clone();
        let deadline = Instant::now() + cfg.action_deadline;
        let mut poll = cfg.poll_min;
        let mut source = source;
        loop {
            let s = self.load()?;
            if s.status.is_final() {
                return Ok(());
            }
            let over_time = Instant::now() >= deadline;
            if let Some(d) = self.seen_success(seti) {
                return self.finish(seti, d, Source::Webhook).await;
            }
            if s.cancel_requested || over_time {
                if self.cancel_ours(seti, over_time).await? {
                    return Ok(());
                }
            } else if let Some(r) = self.read_reader().await {
                match reading(&r, seti) {
                    Reading::InProgress => {}
                    Reading::Done(d) => return self.finish(seti, d, source).await,
                    Reading::Busy | Reading::Free => {
                        // Cleared or replaced by someone else: the SetupIntent says whether
                        // the card was saved before.
                        let saved = self
                            .read_intent(seti)
                            .await
                            .filter(|si| si.status == SetupIntentStatus::Succeeded);
                        match saved {
                            Some(si) => {
                                self.observe(
                                    SetupObservation::Saved(
                                        si.generated_card().map(str::to_string),
                                    ),
                                    source,
                                )?;
                            }
                            None => {
                                self.fail_and_close(
                                    seti,
                                    Failure::new(
                                        "action_replaced",
                                        "the reader no longer shows the setup (cleared or replaced)",
                                    ),
                                )
                                .await?;
                            }
                        }
                        return Ok(());
                    }
                }
            }
            let _ = tokio::time::timeout(poll, self.slot.hint.notified()).await;
            poll = (poll * 2).min(cfg.poll_max);
            source = Source::Poll;
        }
    }

    /// Our action is over. A saved card is recorded from the SetupIntent (the reader's
    /// `generated_card` only when the SetupIntent cannot be read); a refusal fails the
    /// setup and cancels its SetupIntent.
    async fn finish(&self, seti: &str, d: Done, source: Source) -> R<()> {
        match d {
            Done::Saved(on_reader) => {
                let pm = match self.read_intent(seti).await {
                    Some(si) => si.generated_card().map(str::to_string).or(on_reader),
                    None => on_reader,
                };
                self.observe(SetupObservation::Saved(pm), source)?;
                Ok(())
            }
            Done::Failed(f) => self.fail_and_close(seti, f).await,
        }
    }

    /// Cancels our own action (only while the reader still shows it). `true` once the
    /// setup is final.
    async fn cancel_ours(&self, seti: &str, timed_out: bool) -> R<bool> {
        let Some(r) = self.read_reader().await else {
            return Ok(false);
        };
        match reading(&r, seti) {
            Reading::Done(d) => {
                self.finish(seti, d, Source::Poll).await?;
                return Ok(true);
            }
            Reading::Busy | Reading::Free => {
                self.close(seti, timed_out).await?;
                return Ok(true);
            }
            Reading::InProgress => {}
        }
        self.e.count("cancel_action");
        let key = format!("readerd:cancel_action:{}:{}", self.id, new_id("k"));
        match self
            .e
            .stripe()
            .cancel_action(&self.slot.id, &self.slot.options().key(key))
            .await
        {
            Ok(r) => {
                self.e.inner.directory.observe_reader(&r);
                self.close(seti, timed_out).await?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(setup = %self.id, error = %e, "cancel_action refused; watching on");
                Ok(false)
            }
        }
    }

    /// The setup ends without a card: its SetupIntent is canceled, unless the card was
    /// saved just before (then the setup succeeded after all). `timed_out`: the customer
    /// walked away (`failed`, `customer_timeout`); otherwise the point of sale canceled.
    async fn close(&self, seti: &str, timed_out: bool) -> R<()> {
        let reason = if timed_out {
            "abandoned"
        } else {
            "requested_by_customer"
        };
        if let Some(si) = self.cancel_intent(seti, reason).await {
            if si.status == SetupIntentStatus::Succeeded {
                self.observe(
                    SetupObservation::Saved(si.generated_card().map(str::to_string)),
                    Source::Poll,
                )?;
                return Ok(());
            }
        }
        let outcome = if timed_out {
            SetupObservation::Failed(Failure::new(
                "customer_timeout",
                "the customer did not present a card in time; the reader was freed",
            ))
        } else {
            SetupObservation::Canceled
        };
        self.observe(outcome, Source::Poll)?;
        Ok(())
    }

    fn fail(&self, f: Failure) -> R<()> {
        self.observe(SetupObservation::Failed(f), Source::Poll)?;
        Ok(())
    }

    /// Fails the setup and cancels its SetupIntent, so that nothing can complete it later.
    async fn fail_and_close(&self, seti: &str, f: Failure) -> R<()> {
        self.fail(f)?;
        self.cancel_intent(seti, "abandoned").await;
        Ok(())
    }

    /// Cancels the SetupIntent (a fresh key per attempt: a refused cancel must be sendable
    /// again). Returns the SetupIntent as Stripe holds it after the attempt, when known.
    async fn cancel_intent(&self, seti: &str, reason: &str) -> Option<SetupIntent> {
        let s = self.load().ok()?;
        let opts = Engine::setup_options(&s).key(format!(
            "readerd:seti_cancel:{}:{}",
            self.id,
            new_id("k")
        ));
        self.e.count("cancel_setup_intent");
        let p = CancelSetupIntent {
            cancellation_reason: Some(reason.to_string()),
        };
        match self.e.stripe().cancel_setup_intent(seti, &p, &opts).await {
            Ok(si) => Some(si),
            Err(e) => {
                tracing::info!(setup = %self.id, error = %e, "SetupIntent not canceled; reading it");
                self.read_intent(seti).await
            }
        }
    }

    /// Reads the SetupIntent with its latest attempt (retrying what may pass).
    async fn read_intent(&self, seti: &str) -> Option<SetupIntent> {
        let s = self.load().ok()?;
        let opts = Engine::setup_options(&s);
        let mut n = 0;
        loop {
            self.e.count("retrieve_setup_intent");
            match self
                .e
                .stripe()
                .at(Priority::Customer)
                .retrieve_setup_intent(seti, &["latest_attempt"], &opts)
                .await
            {
                Ok(si) => return Some(si),
                Err(e) if e.disposition() == Disposition::Definitive || n >= 8 => {
                    tracing::warn!(setup = %self.id, error = %e, "SetupIntent unreadable");
                    return None;
                }
                Err(_) => {
                    sleep(backoff(n).max(Duration::from_millis(100))).await;
                    n += 1;
                }
            }
        }
    }

    async fn read_reader(&self) -> Option<Reader> {
        super::read_job_reader(self.e, self.slot, &self.e.stripe().at(Priority::Customer)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::wire::{Expandable, ProcessSetupIntentAction, ReaderAction};

    fn reader(action: Option<ReaderAction>) -> Reader {
        let mut r: Reader = serde_json::from_value(serde_json::json!({
            "id": "tmr_1", "object": "terminal.reader", "device_type": "simulated_wisepos_e",
            "label": "till", "livemode": false, "serial_number": "s", "metadata": {}
        }))
        .unwrap();
        r.action = action;
        r
    }

    fn action(kind: ActionType, status: ActionStatus, seti: Option<&str>) -> ReaderAction {
        ReaderAction {
            kind,
            status,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: None,
            refund_payment: None,
            process_setup_intent: seti.map(|s| ProcessSetupIntentAction {
                setup_intent: Expandable::Id(s.to_string()),
                generated_card: Some("pm_card".into()),
                process_config: None,
            }),
            collect_inputs: None,
            collect_payment_method: None,
            confirm_payment_intent: None,
        }
    }

    #[test]
    fn our_action_is_recognised_by_its_setup_intent_only() {
        use ActionStatus::*;
        let ps = ActionType::ProcessSetupIntent;
        assert_eq!(reading(&reader(None), "seti_1"), Reading::Free);
        assert_eq!(
            reading(
                &reader(Some(action(ps.clone(), InProgress, Some("seti_1")))),
                "seti_1"
            ),
            Reading::InProgress
        );
        assert_eq!(
            reading(
                &reader(Some(action(ps.clone(), InProgress, Some("seti_2")))),
                "seti_1"
            ),
            Reading::Busy
        );
        assert_eq!(
            reading(
                &reader(Some(action(
                    ActionType::ProcessPaymentIntent,
                    InProgress,
                    None
                ))),
                "seti_1"
            ),
            Reading::Busy
        );
        assert_eq!(
            reading(
                &reader(Some(action(ActionType::SetReaderDisplay, InProgress, None))),
                "seti_1"
            ),
            Reading::Free
        );
        assert_eq!(
            reading(
                &reader(Some(action(ps.clone(), Succeeded, Some("seti_2")))),
                "seti_1"
            ),
            Reading::Free
        );
        assert_eq!(
            reading(
                &reader(Some(action(ps.clone(), Succeeded, Some("seti_1")))),
                "seti_1"
            ),
            Reading::Done(Done::Saved(Some("pm_card".into())))
        );
        let mut failed = action(ps, Failed, Some("seti_1"));
        failed.failure_code = Some("setup_intent_authentication_failure".into());
        match reading(&reader(Some(failed)), "seti_1") {
            Reading::Done(Done::Failed(f)) => {
                assert_eq!(f.code, "setup_intent_authentication_failure")
            }
            other => panic!("{other:?}"),
        }
    }
}
