//! Inputs on a reader's screen: accepting an input collection (validated, on disk, then
//! queued like a payment), reading it, canceling it, and resuming the unfinished ones at
//! start-up. The reader's part is [`crate::payments::worker`]'s.

use super::forward::CommandOp;
use super::{Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::ids::new_id;
use crate::payments::inputs::{Input, InputCollection, InputObservation, InputStep, INPUT_TYPES};
use crate::payments::machine::Source;
use crate::payments::queue::Job;
use crate::store::Tree;
use tokio::sync::broadcast;

/// Stripe's limits on `collect_inputs`.
const MAX_INPUTS: usize = 5;

fn invalid(message: impl Into<String>) -> PaymentError {
    PaymentError::invalid("invalid_inputs", message)
}

fn too_long(what: &str, s: Option<&str>, max: usize) -> Result<(), PaymentError> {
    match s {
        Some(s) if s.chars().count() > max => {
            Err(invalid(format!("{what} is longer than {max} characters")))
        }
        _ => Ok(()),
    }
}

/// Checks inputs against what Stripe accepts, so that a mistake is a `400` now rather
/// than a refusal once the job reaches the reader.
fn validate(inputs: &[Input]) -> Result<(), PaymentError> {
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(invalid(format!(
            "inputs must hold 1 to {MAX_INPUTS} inputs, not {}",
            inputs.len()
        )));
    }
    for (i, input) in inputs.iter().enumerate() {
        let at = format!("inputs[{i}]");
        if !INPUT_TYPES.contains(&input.kind.as_str()) {
            return Err(invalid(format!(
                "{at}.type must be one of {}",
                INPUT_TYPES.join(", ")
            )));
        }
        let t = &input.custom_text;
        if t.title.trim().is_empty() {
            return Err(invalid(format!("{at}.custom_text.title is required")));
        }
        too_long(&format!("{at}.custom_text.title"), Some(&t.title), 40)?;
        too_long(
            &format!("{at}.custom_text.description"),
            t.description.as_deref(),
            500,
        )?;
        too_long(
            &format!("{at}.custom_text.submit_button"),
            t.submit_button.as_deref(),
            30,
        )?;
        too_long(
            &format!("{at}.custom_text.skip_button"),
            t.skip_button.as_deref(),
            14,
        )?;
        match (&input.selection, input.kind.as_str()) {
            (None, "selection") => {
                return Err(invalid(format!(
                    "{at}: a selection needs selection.choices"
                )))
            }
            (Some(s), "selection") if s.choices.is_empty() => {
                return Err(invalid(format!(
                    "{at}: a selection needs at least one choice"
                )))
            }
            (Some(_), k) if k != "selection" => {
                return Err(invalid(format!("{at}: only a selection input has choices")))
            }
            _ => {}
        }
        for c in input.selection.iter().flat_map(|s| &s.choices) {
            if let Some(style) = &c.style {
                if style != "primary" && style != "secondary" {
                    return Err(invalid(format!(
                        "{at}: a choice's style is primary or secondary"
                    )));
                }
            }
        }
        for (j, tg) in input.toggles.iter().enumerate() {
            let at = format!("{at}.toggles[{j}]");
            if tg.title.is_none() && tg.description.is_none() {
                return Err(invalid(format!("{at} needs a title or a description")));
            }
            too_long(&format!("{at}.title"), tg.title.as_deref(), 50)?;
            too_long(&format!("{at}.description"), tg.description.as_deref(), 50)?;
            if tg
                .default_value
                .as_deref()
                .is_some_and(|d| d != "enabled" && d != "disabled")
            {
                return Err(invalid(format!(
                    "{at}.default_value is enabled or disabled"
                )));
            }
            if tg.value.is_some() {
                return Err(invalid(format!("{at}.value is the customer's to give")));
            }
        }
        if input.value.is_some() || input.skipped.is_some() {
            return Err(invalid(format!(
                "{at}: value and skipped are the customer's to give"
            )));
        }
    }
    Ok(())
}

impl Engine {
    /// Accepts inputs to collect on `reader` for `merchant`: the record is on disk before
    /// the job enters the reader's queue (`202`-style: it waits its turn like a payment).
    pub fn create_inputs(
        &self,
        reader: &str,
        merchant: &str,
        inputs: Vec<Input>,
    ) -> Result<InputCollection, PaymentError> {
        validate(&inputs)?;
        let info = self
            .inner
            .directory
            .reader(reader)
            .ok_or(PaymentError::NotFound("reader"))?;
        let c = InputCollection::new(
            new_id("inp"),
            info.id.clone(),
            merchant.to_string(),
            inputs,
            Timestamp::now(),
        );
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
        self.inner.registry.put(Tree::InputCollections, &c.id, &c)?;
        q.push(Job::Inputs {
            id: c.id.clone(),
            merchant: c.merchant.clone(),
        })?;
        drop(q);
        slot.work.notify_one();
        self.announce(&c.reader, &c.id);
        let _ = self.inner.input_events.send(c.clone());
        Ok(c)
    }

    pub fn input_collection(&self, id: &str) -> Result<Option<InputCollection>, PaymentError> {
        Ok(self.inner.registry.get(Tree::InputCollections, id)?)
    }

    /// The input collections on `reader` (all readers when `None`), newest first. A scan
    /// of the whole tree, like the payment list.
    pub fn list_inputs(&self, reader: Option<&str>) -> Result<Vec<InputCollection>, PaymentError> {
        let all: Vec<InputCollection> = self.inner.registry.list(Tree::InputCollections)?;
        let mut out: Vec<InputCollection> = all
            .into_iter()
            .filter(|c| reader.is_none_or(|r| c.reader == r))
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(out)
    }

    /// Every change to any input collection, as it is written.
    pub fn subscribe_inputs(&self) -> broadcast::Receiver<InputCollection> {
        self.inner.input_events.subscribe()
    }

    /// Read-modify-write of one input collection; publishes the result.
    pub(crate) fn update_inputs<F>(&self, id: &str, f: F) -> Result<InputCollection, PaymentError>
    where
        F: FnOnce(&mut InputCollection) -> Result<(), PaymentError>,
    {
        let c = {
            let _g = self.write_lock(id);
            let mut c: InputCollection = self
                .inner
                .registry
                .get(Tree::InputCollections, id)?
                .ok_or(PaymentError::NotFound("input_collection"))?;
            f(&mut c)?;
            // Fenced by the reader's lease on a shared store, as a payment's steps are.
            let mut batch = crate::store::Batch::default();
            batch.put_record(Tree::InputCollections, id, &c);
            self.write_job(&c.reader, id, batch)?;
            c
        };
        let _ = self.inner.input_events.send(c.clone());
        Ok(c)
    }

    /// Applies an observation and persists it; a refused one is logged and changes nothing.
    pub(crate) fn observe_inputs(
        &self,
        id: &str,
        obs: InputObservation,
        source: Source,
    ) -> Result<InputCollection, PaymentError> {
        let at = Timestamp::now();
        self.update_inputs(id, |c| {
            match c.apply(obs, source, at) {
                Ok(Some((from, to))) => {
                    tracing::info!(inputs = %id, %from, %to, source = ?source, "input collection status")
                }
                Ok(None) => {}
                Err(r) => tracing::debug!(inputs = %id, reason = %r, "observation not applied"),
            }
            Ok(())
        })
    }

    /// The point of sale cancels: a collection still waiting in the queue is canceled at
    /// once; one on the reader is canceled by its worker (our own `cancel_action`, only
    /// while the reader still shows our action). A final one is `409`.
    pub async fn cancel_inputs(&self, id: &str) -> Result<InputCollection, PaymentError> {
        let c = self
            .input_collection(id)?
            .ok_or(PaymentError::NotFound("input_collection"))?;
        // On a shared store, only the reader's holder writes its collections.
        if let Some(done) = self.forwarded(&c.reader, id, CommandOp::CancelInputs).await {
            done?;
            return self
                .input_collection(id)?
                .ok_or(PaymentError::NotFound("input_collection"));
        }
        if c.status.is_final() {
            return Err(PaymentError::conflict(
                "invalid_state",
                format!("input collection is {}, which is final", c.status),
            ));
        }
        let slot = self.slot(&c.reader);
        let removed =
            c.step == InputStep::Accepted && slot.queue.lock().expect("queue lock").remove(id);
        if removed {
            return self.observe_inputs(id, InputObservation::Canceled, Source::Api);
        }
        let c = self.observe_inputs(id, InputObservation::CancelRequested, Source::Api)?;
        slot.hint.notify_one();
        Ok(c)
    }

    /// Start-up: every input collection that is not final goes back to the front of its
    /// reader's queue; its worker reads the reader before it sends anything.
    pub(super) fn resume_inputs(&self) -> Result<usize, PaymentError> {
        self.resume_inputs_of(None)
    }

    /// [`Engine::resume_inputs`] for one reader (one taken over), or all.
    pub(super) fn resume_inputs_of(&self, reader: Option<&str>) -> Result<usize, PaymentError> {
        let all: Vec<InputCollection> = self.inner.registry.list(Tree::InputCollections)?;
        let mut open: Vec<InputCollection> = all
            .into_iter()
            .filter(|c| !c.status.is_final() && reader.is_none_or(|r| c.reader == r))
            .collect();
        open.sort_by_key(|c| c.created_at);
        for c in &open {
            let slot = self.slot(&c.reader);
            slot.queue
                .lock()
                .expect("queue lock")
                .push_resumed(Job::Inputs {
                    id: c.id.clone(),
                    merchant: c.merchant.clone(),
                });
            slot.work.notify_one();
        }
        Ok(open.len())
    }
}
