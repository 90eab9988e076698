//! Inputs on a reader's screen (Stripe's `collect_inputs`): the record (tree
//! `input_collections`) and its status machine, pure transitions with no I/O, like the
//! payment's.
//!
//! `queued` → `collecting` (the reader took the action) → `succeeded` (with the answers),
//! `failed` (the customer walked away, Stripe refused, or the reader stayed busy) or
//! `canceled` (asked for before the reader took it, or our `cancel_action` confirmed).
//! Final statuses are never left. `step` says how far the flow went, so that a restart
//! knows whether the action may be on the reader: `sending` is written, with the attempt's
//! idempotency key, before `collect_inputs` is sent.

use super::machine::{Failure, Source};
use crate::clock::Timestamp;
use serde::{Deserialize, Serialize};

/// An input collection's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputStatus {
    Queued,
    Collecting,
    Succeeded,
    Failed,
    Canceled,
}

impl InputStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            InputStatus::Succeeded | InputStatus::Failed | InputStatus::Canceled
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            InputStatus::Queued => "queued",
            InputStatus::Collecting => "collecting",
            InputStatus::Succeeded => "succeeded",
            InputStatus::Failed => "failed",
            InputStatus::Canceled => "canceled",
        }
    }
}

impl std::fmt::Display for InputStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far the flow went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputStep {
    /// Accepted; nothing sent.
    Accepted,
    /// The attempt's key is on disk; `collect_inputs` may have reached the reader.
    Sending,
    /// The reader took the action.
    Sent,
}

/// One input's screen text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomText {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_button: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_button: Option<String>,
}

/// A choice of a `selection` input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    pub choices: Vec<Choice>,
}

/// A checkbox under an input; `value` (`enabled` | `disabled`) once collected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The input types a reader can collect.
pub const INPUT_TYPES: [&str; 6] = [
    "email",
    "phone",
    "text",
    "numeric",
    "selection",
    "signature",
];

/// One input: what the screen asks for and, once collected, the answer (`value`; for a
/// selection the chosen choice's id; for a signature a File id) or `skipped`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    pub custom_text: CustomText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toggles: Vec<Toggle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<bool>,
}

/// What a customer gave for one input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub value: Option<String>,
    pub skipped: bool,
    /// The toggles' values, in order.
    pub toggles: Vec<Option<String>>,
}

/// One status change or note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InputHistory {
    pub status: InputStatus,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An input collection (tree `input_collections`, keyed by id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputCollection {
    pub id: String,
    pub reader: String,
    pub merchant: String,
    pub status: InputStatus,
    pub step: InputStep,
    pub inputs: Vec<Input>,
    /// `collect_inputs` attempts so far; each has its own key.
    pub attempt: u32,
    /// The current attempt's idempotency key, on disk before it is sent.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub failure: Option<Failure>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub history: Vec<InputHistory>,
}

/// What the flow learned.
#[derive(Clone, Debug, PartialEq)]
pub enum InputObservation {
    /// A new attempt: its key is written before `collect_inputs` is sent.
    Sending { key: String },
    /// The reader took our action.
    Accepted,
    /// Our action succeeded with these answers (one per input, in order).
    Collected(Vec<Answer>),
    /// Our action failed on the reader, Stripe refused it, or the daemon gave up.
    Failed(Failure),
    /// The point of sale asked to cancel.
    CancelRequested,
    /// Canceled: before the reader took it, or our `cancel_action` cleared it.
    Canceled,
    /// A note about progress (no status change).
    Note(String),
}

/// An observation that does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputRefused {
    #[error("input collection is {0}, which is final")]
    Final(InputStatus),
    #[error("the answers do not match the {0} inputs asked for")]
    Mismatch(usize),
}

impl InputCollection {
    pub fn new(
        id: String,
        reader: String,
        merchant: String,
        inputs: Vec<Input>,
        now: Timestamp,
    ) -> Self {
        InputCollection {
            id,
            reader,
            merchant,
            status: InputStatus::Queued,
            step: InputStep::Accepted,
            inputs,
            attempt: 0,
            key: None,
            cancel_requested: false,
            failure: None,
            created_at: now,
            updated_at: now,
            history: vec![InputHistory {
                status: InputStatus::Queued,
                at: now,
                source: Source::Api,
                note: None,
            }],
        }
    }

    /// Applies an observation; returns the status change, if any.
    pub fn apply(
        &mut self,
        obs: InputObservation,
        source: Source,
        at: Timestamp,
    ) -> Result<Option<(InputStatus, InputStatus)>, InputRefused> {
        if self.status.is_final() {
            return match obs {
                InputObservation::Note(_) | InputObservation::CancelRequested => Ok(None),
                _ => Err(InputRefused::Final(self.status)),
            };
        }
        let before = self.status;
        let mut note = None;
        match obs {
            InputObservation::Sending { key } => {
                self.attempt += 1;
                self.key = Some(key);
                self.step = InputStep::Sending;
            }
            InputObservation::Accepted => {
                self.step = InputStep::Sent;
                self.status = InputStatus::Collecting;
            }
            InputObservation::Collected(answers) => {
                if answers.len() != self.inputs.len() {
                    return Err(InputRefused::Mismatch(self.inputs.len()));
                }
                for (input, a) in self.inputs.iter_mut().zip(answers) {
                    input.value = a.value;
                    input.skipped = Some(a.skipped);
                    for (t, v) in input.toggles.iter_mut().zip(a.toggles) {
                        t.value = v;
                    }
                }
                self.status = InputStatus::Succeeded;
            }
            InputObservation::Failed(f) => {
                note = Some(format!("{}: {}", f.code, f.message));
                self.failure = Some(f);
                self.status = InputStatus::Failed;
            }
            InputObservation::CancelRequested => {
                self.cancel_requested = true;
                note = Some("cancel requested".into());
            }
            InputObservation::Canceled => self.status = InputStatus::Canceled,
            InputObservation::Note(n) => note = Some(n),
        }
        self.updated_at = at;
        let changed = (self.status != before).then_some((before, self.status));
        if changed.is_some() || note.is_some() {
            self.history.push(InputHistory {
                status: self.status,
                at,
                source,
                note,
            });
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: &str) -> Input {
        Input {
            kind: kind.into(),
            required: true,
            custom_text: CustomText {
                title: "Email".into(),
                ..Default::default()
            },
            selection: None,
            toggles: vec![Toggle {
                title: Some("Newsletter".into()),
                default_value: Some("enabled".into()),
                ..Default::default()
            }],
            value: None,
            skipped: None,
        }
    }

    fn fresh() -> InputCollection {
        InputCollection::new(
            "inp_1".into(),
            "tmr_1".into(),
            "m".into(),
            vec![input("email")],
            Timestamp::from_ms(1),
        )
    }

    #[test]
    fn collects_the_answers_and_stays_final() {
        let mut c = fresh();
        let at = Timestamp::from_ms(2);
        c.apply(
            InputObservation::Sending { key: "k1".into() },
            Source::Poll,
            at,
        )
        .unwrap();
        assert_eq!(
            (c.status, c.step, c.attempt),
            (InputStatus::Queued, InputStep::Sending, 1)
        );
        let ch = c
            .apply(InputObservation::Accepted, Source::Poll, at)
            .unwrap();
        assert_eq!(ch, Some((InputStatus::Queued, InputStatus::Collecting)));
        let answer = Answer {
            value: Some("a@b.c".into()),
            skipped: false,
            toggles: vec![Some("enabled".into())],
        };
        c.apply(InputObservation::Collected(vec![answer]), Source::Poll, at)
            .unwrap();
        assert_eq!(c.status, InputStatus::Succeeded);
        assert_eq!(c.inputs[0].value.as_deref(), Some("a@b.c"));
        assert_eq!(c.inputs[0].toggles[0].value.as_deref(), Some("enabled"));
        assert_eq!(
            c.apply(InputObservation::Canceled, Source::Api, at),
            Err(InputRefused::Final(InputStatus::Succeeded))
        );
        assert_eq!(
            c.apply(
                InputObservation::Failed(Failure::new("x", "y")),
                Source::Poll,
                at
            ),
            Err(InputRefused::Final(InputStatus::Succeeded))
        );
        // A late cancel is harmless.
        assert_eq!(
            c.apply(InputObservation::CancelRequested, Source::Api, at),
            Ok(None)
        );
        assert_eq!(c.status, InputStatus::Succeeded);
    }

    #[test]
    fn answers_must_match_the_inputs() {
        let mut c = fresh();
        let at = Timestamp::from_ms(2);
        assert_eq!(
            c.apply(InputObservation::Collected(vec![]), Source::Poll, at),
            Err(InputRefused::Mismatch(1))
        );
        assert_eq!(c.status, InputStatus::Queued);
    }

    #[test]
    fn a_failure_is_recorded_with_its_code() {
        let mut c = fresh();
        let at = Timestamp::from_ms(2);
        c.apply(InputObservation::Accepted, Source::Poll, at)
            .unwrap();
        c.apply(
            InputObservation::Failed(Failure::new("collect_inputs_timed_out", "walked away")),
            Source::Webhook,
            at,
        )
        .unwrap();
        assert_eq!(c.status, InputStatus::Failed);
        assert_eq!(c.failure.as_ref().unwrap().code, "collect_inputs_timed_out");
        assert_eq!(c.history.len(), 3);
    }
}
