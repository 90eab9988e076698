//! An input collection job: `collect_inputs` on a free reader, then watching the reader's
//! action until the customer answers, walks away, or the point of sale cancels.
//!
//! Our action is recognised on the reader by its type and `metadata[readerd_input]`, never
//! by position: someone else's action is never touched. Each attempt's key is on disk
//! (`step: sending`) before it is sent; after a restart the reader is read first, and an
//! action that is ours is followed, not sent again. What a reader read says about our
//! action is decided by [`reading`], one pure function, so that other observations of the
//! reader (webhook events, list polls) can feed the same decision.

use super::backoff;
use crate::payments::engine::{Engine, ReaderSlot};
use crate::payments::failpoint::failpoint;
use crate::payments::ids::new_id;
use crate::payments::inputs::{Answer, InputCollection, InputObservation, InputStep};
use crate::payments::machine::{Failure, Source};
use crate::stripe::params::CollectInputs;
use crate::stripe::wire::{
    ActionStatus, ActionType, CollectedInput, InputChoice, InputCustomText, InputSelection,
    InputToggle, InputType, Reader,
};
use crate::stripe::{Disposition, StripeError};
use tokio::time::{sleep, Instant};

/// The metadata key that names our input collection on the reader's action.
pub const METADATA_KEY: &str = "readerd_input";

/// What a reader read says about an input collection.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Our action is on the reader and in progress.
    Collecting,
    /// Our action is over.
    Done(InputObservation),
    /// Someone else's action is in progress: the reader is busy.
    Busy,
    /// The reader is free (no action of ours, nothing in progress).
    Free,
}

/// The decision about our input collection `id` from a read of its reader.
pub fn reading(r: &Reader, id: &str) -> Reading {
    let Some(a) = r.action.as_ref() else {
        return Reading::Free;
    };
    let ours = a.kind == ActionType::CollectInputs
        && a.collect_inputs
            .as_ref()
            .is_some_and(|c| c.metadata.get(METADATA_KEY).map(String::as_str) == Some(id));
    if !ours {
        let busy = a.status == ActionStatus::InProgress && a.kind != ActionType::SetReaderDisplay;
        return if busy { Reading::Busy } else { Reading::Free };
    }
    match a.status {
        ActionStatus::InProgress => Reading::Collecting,
        ActionStatus::Succeeded => {
            let answers = a
                .collect_inputs
                .as_ref()
                .map(|c| c.inputs.iter().map(answer).collect())
                .unwrap_or_default();
            Reading::Done(InputObservation::Collected(answers))
        }
        ActionStatus::Failed | ActionStatus::Other(_) => {
            Reading::Done(InputObservation::Failed(Failure::new(
                a.failure_code
                    .clone()
                    .unwrap_or_else(|| "action_failed".into()),
                a.failure_message
                    .clone()
                    .unwrap_or_else(|| "the reader reported a failure".into()),
            )))
        }
    }
}

fn answer(i: &CollectedInput) -> Answer {
    Answer {
        value: i.value().map(str::to_string),
        skipped: i.skipped.unwrap_or(false),
        toggles: i.toggles.iter().map(|t| t.value.clone()).collect(),
    }
}

/// The request for our record: the inputs as Stripe spells them, our id in the metadata.
fn request(c: &InputCollection) -> CollectInputs {
    let inputs = c
        .inputs
        .iter()
        .map(|i| CollectedInput {
            kind: InputType::from(i.kind.clone()),
            custom_text: Some(InputCustomText {
                title: i.custom_text.title.clone(),
                description: i.custom_text.description.clone(),
                submit_button: i.custom_text.submit_button.clone(),
                skip_button: i.custom_text.skip_button.clone(),
            }),
            required: Some(i.required),
            skipped: None,
            email: None,
            numeric: None,
            phone: None,
            text: None,
            signature: None,
            selection: i.selection.as_ref().map(|s| InputSelection {
                choices: s
                    .choices
                    .iter()
                    .map(|c| InputChoice {
                        id: Some(c.id.clone()),
                        text: c.text.clone(),
                        style: c.style.clone(),
                    })
                    .collect(),
                id: None,
                text: None,
            }),
            toggles: i
                .toggles
                .iter()
                .map(|t| InputToggle {
                    title: t.title.clone(),
                    description: t.description.clone(),
                    default_value: t.default_value.clone(),
                    value: None,
                })
                .collect(),
        })
        .collect();
    CollectInputs {
        inputs,
        metadata: [(METADATA_KEY.to_string(), c.id.clone())].into(),
    }
}

type R<T> = Result<T, crate::payments::engine::PaymentError>;

struct Job<'a> {
    e: &'a Engine,
    slot: &'a ReaderSlot,
    id: &'a str,
}

/// Runs one input collection job to a final status (or until the daemon stops).
pub(super) async fn collect(engine: &Engine, slot: &ReaderSlot, id: &str) {
    let job = Job {
        e: engine,
        slot,
        id,
    };
    if let Err(e) = job.run().await {
        tracing::error!(inputs = %id, error = %e, "input collection stopped; it resumes at the next start");
    }
}

impl Job<'_> {
    fn load(&self) -> R<InputCollection> {
        self.e
            .input_collection(self.id)?
            .ok_or(crate::payments::engine::PaymentError::NotFound(
                "input_collection",
            ))
    }

    fn observe(&self, obs: InputObservation, source: Source) -> R<InputCollection> {
        self.e.observe_inputs(self.id, obs, source)
    }

    async fn run(&self) -> R<()> {
        let c = self.load()?;
        if c.status.is_final() {
            return Ok(());
        }
        if c.cancel_requested && c.step == InputStep::Accepted {
            self.observe(InputObservation::Canceled, Source::Api)?;
            return Ok(());
        }
        if c.step != InputStep::Accepted {
            // A restart: the action may be on the reader already. Follow it if it is ours.
            if let Some(r) = self.read_reader().await {
                match reading(&r, self.id) {
                    Reading::Collecting => {
                        self.observe(InputObservation::Accepted, Source::Reconcile)?;
                        return self.watch(Source::Reconcile).await;
                    }
                    Reading::Done(obs) => {
                        self.observe(obs, Source::Reconcile)?;
                        return Ok(());
                    }
                    Reading::Busy | Reading::Free => {}
                }
            }
        }
        if self.send().await? {
            self.watch(Source::Poll).await?;
        }
        Ok(())
    }

    /// Waits for a free reader (bounded), then sends `collect_inputs` with a new key per
    /// attempt, written first. `true` when the reader took it.
    async fn send(&self) -> R<bool> {
        let cfg = self.e.config().clone();
        let until = Instant::now() + cfg.busy_wait;
        let mut n = 0;
        let mut timeouts = 0;
        loop {
            let c = self.load()?;
            if c.status.is_final() {
                return Ok(false);
            }
            if c.cancel_requested {
                self.observe(InputObservation::Canceled, Source::Api)?;
                return Ok(false);
            }
            match self.read_reader().await {
                None => {
                    self.observe(
                        InputObservation::Failed(Failure::new(
                            "reader_unavailable",
                            format!("reader {} could not be read", self.slot.id),
                        )),
                        Source::Poll,
                    )?;
                    return Ok(false);
                }
                Some(r) => match reading(&r, self.id) {
                    Reading::Collecting => {
                        self.observe(InputObservation::Accepted, Source::Poll)?;
                        return Ok(true);
                    }
                    Reading::Done(obs) => {
                        self.observe(obs, Source::Poll)?;
                        return Ok(false);
                    }
                    Reading::Busy => {
                        if !self.wait_busy(until, &mut n).await? {
                            return Ok(false);
                        }
                        continue;
                    }
                    Reading::Free => {}
                },
            }
            let key = format!("readerd:inputs:{}:{}", self.id, c.attempt + 1);
            let c = self.observe(InputObservation::Sending { key: key.clone() }, Source::Poll)?;
            failpoint("before_inputs_send");
            self.e.count("collect_inputs");
            let res = self
                .e
                .stripe()
                .collect_inputs(&self.slot.id, &request(&c), &self.slot.options().key(key))
                .await;
            match res {
                Ok(r) => {
                    self.e.inner.directory.observe_reader(&r);
                    failpoint("after_inputs_sent");
                    if let Reading::Done(obs) = reading(&r, self.id) {
                        self.observe(InputObservation::Accepted, Source::Poll)?;
                        self.observe(obs, Source::Poll)?;
                        return Ok(false);
                    }
                    self.observe(InputObservation::Accepted, Source::Poll)?;
                    return Ok(true);
                }
                Err(e) if e.code() == Some("terminal_reader_busy") => {
                    if !self.wait_busy(until, &mut n).await? {
                        return Ok(false);
                    }
                }
                Err(e) if e.code() == Some("terminal_reader_timeout") => {
                    // Possibly a false negative: the next read tells; the next attempt has
                    // its own key.
                    timeouts += 1;
                    if timeouts >= cfg.dispatch_attempts {
                        return self.refused(&e).map(|_| false);
                    }
                }
                Err(e) if e.disposition() == Disposition::Definitive => {
                    return self.refused(&e).map(|_| false);
                }
                Err(e) => {
                    // Outcome unknown (the client spent its retries): the next read of the
                    // reader tells whether our action is there.
                    tracing::info!(inputs = %self.id, error = %e, "collect_inputs outcome unknown; reading the reader");
                    if Instant::now() >= until {
                        return self.refused(&e).map(|_| false);
                    }
                    sleep(backoff(n)).await;
                    n += 1;
                }
            }
        }
    }

    /// Someone else's action holds the reader: wait (bounded), never cancel it. `false`
    /// once the wait is over (the collection failed as `reader_busy`).
    async fn wait_busy(&self, until: Instant, n: &mut u32) -> R<bool> {
        if super::wait_for_free_reader(self.slot, until, n).await {
            return Ok(true);
        }
        let busy = InputObservation::Failed(super::reader_stayed_busy());
        self.observe(busy, Source::Poll)?;
        Ok(false)
    }

    fn refused(&self, e: &StripeError) -> R<()> {
        self.observe(
            InputObservation::Failed(Failure::new(
                e.code().unwrap_or("stripe_error").to_string(),
                e.to_string(),
            )),
            Source::Poll,
        )?;
        Ok(())
    }

    /// Polls the reader (woken early by webhooks and cancels) until our action is over. Past
    /// the action deadline, or on a cancel from the point of sale, our own action is
    /// canceled.
    async fn watch(&self, source: Source) -> R<()> {
        let cfg = self.e.config().clone();
        let deadline = Instant::now() + cfg.action_deadline;
        let mut poll = cfg.poll_min;
        let mut source = source;
        loop {
            let c = self.load()?;
            if c.status.is_final() {
                return Ok(());
            }
            let over_time = Instant::now() >= deadline;
            if c.cancel_requested || over_time {
                if self.cancel_ours(over_time).await? {
                    return Ok(());
                }
            } else if let Some(r) = self.read_reader().await {
                match reading(&r, self.id) {
                    Reading::Collecting => {}
                    Reading::Done(obs) => {
                        self.observe(obs, source)?;
                        return Ok(());
                    }
                    Reading::Busy | Reading::Free => {
                        self.observe(
                            InputObservation::Failed(Failure::new(
                                "action_replaced",
                                "the reader no longer shows the input collection (cleared or replaced)",
                            )),
                            source,
                        )?;
                        return Ok(());
                    }
                }
            }
            let _ = tokio::time::timeout(poll, self.slot.hint.notified()).await;
            poll = (poll * 2).min(cfg.poll_max);
            source = Source::Poll;
        }
    }

    /// Cancels our own action (only while the reader still shows it). `true` once the
    /// collection is final.
    async fn cancel_ours(&self, timed_out: bool) -> R<bool> {
        let Some(r) = self.read_reader().await else {
            return Ok(false);
        };
        let done = |obs| -> R<bool> {
            self.observe(obs, Source::Poll)?;
            Ok(true)
        };
        let outcome = if timed_out {
            InputObservation::Failed(Failure::new(
                "customer_timeout",
                "the customer did not answer in time; the reader was freed",
            ))
        } else {
            InputObservation::Canceled
        };
        match reading(&r, self.id) {
            Reading::Done(obs) => return done(obs),
            Reading::Busy | Reading::Free => return done(outcome),
            Reading::Collecting => {}
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
                done(outcome)
            }
            Err(e) => {
                tracing::warn!(inputs = %self.id, error = %e, "cancel_action refused; watching on");
                Ok(false)
            }
        }
    }

    async fn read_reader(&self) -> Option<Reader> {
        super::read_job_reader(self.e, self.slot, self.e.stripe()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::wire::{CollectInputsAction, InputValue, ReaderAction};

    fn reader(action: Option<ReaderAction>) -> Reader {
        let mut r: Reader = serde_json::from_value(serde_json::json!({
            "id": "tmr_1", "object": "terminal.reader", "device_type": "simulated_wisepos_e",
            "label": "till", "livemode": false, "serial_number": "s", "metadata": {}
        }))
        .unwrap();
        r.action = action;
        r
    }

    fn action(kind: ActionType, status: ActionStatus, ours: Option<&str>) -> ReaderAction {
        ReaderAction {
            kind,
            status,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: None,
            refund_payment: None,
            process_setup_intent: None,
            collect_inputs: ours.map(|id| CollectInputsAction {
                inputs: vec![CollectedInput {
                    kind: InputType::Email,
                    custom_text: None,
                    required: Some(true),
                    skipped: Some(false),
                    email: Some(InputValue {
                        value: Some("a@b.c".into()),
                    }),
                    numeric: None,
                    phone: None,
                    text: None,
                    signature: None,
                    selection: None,
                    toggles: vec![],
                }],
                metadata: [(METADATA_KEY.to_string(), id.to_string())].into(),
            }),
            collect_payment_method: None,
            confirm_payment_intent: None,
        }
    }

    #[test]
    fn our_action_is_recognised_by_its_metadata_only() {
        use ActionStatus::*;
        let ci = ActionType::CollectInputs;
        assert_eq!(reading(&reader(None), "inp_1"), Reading::Free);
        assert_eq!(
            reading(
                &reader(Some(action(ci.clone(), InProgress, Some("inp_1")))),
                "inp_1"
            ),
            Reading::Collecting
        );
        // Someone else's inputs, or a payment, in progress: busy, never ours.
        assert_eq!(
            reading(
                &reader(Some(action(ci.clone(), InProgress, Some("inp_2")))),
                "inp_1"
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
                "inp_1"
            ),
            Reading::Busy
        );
        // A cart on the screen, or someone else's finished action, leaves the reader free.
        assert_eq!(
            reading(
                &reader(Some(action(ActionType::SetReaderDisplay, InProgress, None))),
                "inp_1"
            ),
            Reading::Free
        );
        assert_eq!(
            reading(
                &reader(Some(action(ci.clone(), Succeeded, Some("inp_2")))),
                "inp_1"
            ),
            Reading::Free
        );
    }

    #[test]
    fn an_action_that_is_over_gives_the_answers_or_the_failure() {
        let ci = ActionType::CollectInputs;
        let done = reading(
            &reader(Some(action(
                ci.clone(),
                ActionStatus::Succeeded,
                Some("inp_1"),
            ))),
            "inp_1",
        );
        assert_eq!(
            done,
            Reading::Done(InputObservation::Collected(vec![Answer {
                value: Some("a@b.c".into()),
                skipped: false,
                toggles: vec![],
            }]))
        );
        let mut failed = action(ci, ActionStatus::Failed, Some("inp_1"));
        failed.failure_code = Some("collect_inputs_timed_out".into());
        match reading(&reader(Some(failed)), "inp_1") {
            Reading::Done(InputObservation::Failed(f)) => {
                assert_eq!(f.code, "collect_inputs_timed_out")
            }
            other => panic!("{other:?}"),
        }
    }
}
