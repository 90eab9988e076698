//! Saving a card on a reader for later (Stripe's SetupIntent and `process_setup_intent`):
//! the record (tree `setups`) and its status machine, pure transitions with no I/O, like
//! the payment's.
//!
//! `queued` → `processing` (the reader took the action) → `succeeded` (with the reusable
//! `payment_method`), `failed` (the card was refused, the customer walked away, Stripe
//! refused, or the reader stayed busy) or `canceled` (asked for before the reader took it,
//! or our `cancel_action` confirmed). Final statuses are never left. `step` says how far
//! the flow went, so that a restart knows what may exist on Stripe: the SetupIntent's
//! creation key is on disk from acceptance, `creating_intent` is written before it is sent;
//! `sending` is written, with the attempt's idempotency key, before `process_setup_intent`.

use super::machine::{Failure, Source};
use crate::clock::Timestamp;
use serde::{Deserialize, Serialize};

/// A setup's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SetupStatus {
    Queued,
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

impl SetupStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            SetupStatus::Succeeded | SetupStatus::Failed | SetupStatus::Canceled
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SetupStatus::Queued => "queued",
            SetupStatus::Processing => "processing",
            SetupStatus::Succeeded => "succeeded",
            SetupStatus::Failed => "failed",
            SetupStatus::Canceled => "canceled",
        }
    }
}

impl std::fmt::Display for SetupStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stripe's `allow_redisplay`: whether the saved card may be shown to the customer again
/// in a later checkout. Required: readerd never picks it for the merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllowRedisplay {
    Always,
    Limited,
    Unspecified,
}

impl AllowRedisplay {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(AllowRedisplay::Always),
            "limited" => Some(AllowRedisplay::Limited),
            "unspecified" => Some(AllowRedisplay::Unspecified),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AllowRedisplay::Always => "always",
            AllowRedisplay::Limited => "limited",
            AllowRedisplay::Unspecified => "unspecified",
        }
    }
}

/// How far the flow went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupStep {
    /// Accepted; nothing sent.
    Accepted,
    /// The SetupIntent's creation may have reached Stripe (its key is `intent_key`).
    CreatingIntent,
    /// The SetupIntent exists (`setup_intent`).
    IntentCreated,
    /// The attempt's key is on disk; `process_setup_intent` may have reached the reader.
    Sending,
    /// The reader took the action.
    Sent,
}

/// One status change or note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetupHistory {
    pub status: SetupStatus,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A card saved on a reader (tree `setups`, keyed by id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub id: String,
    pub reader: String,
    pub merchant: String,
    /// The connected account the SetupIntent lives on (`Stripe-Account`), for a direct
    /// charge merchant; `None`: the platform. Decided at acceptance, like a payment's.
    #[serde(default)]
    pub account: Option<String>,
    /// Destination charges settled by the merchant: the SetupIntent's `on_behalf_of`, so
    /// the saved card is set up for the account its later payments settle on.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    #[serde(default)]
    pub customer: Option<String>,
    pub allow_redisplay: AllowRedisplay,
    pub status: SetupStatus,
    pub step: SetupStep,
    /// The SetupIntent's creation key, on disk from acceptance and replayed after a crash.
    pub intent_key: String,
    #[serde(default)]
    pub setup_intent: Option<String>,
    /// `process_setup_intent` attempts so far; each has its own key.
    pub attempt: u32,
    /// The current attempt's idempotency key, on disk before it is sent.
    #[serde(default)]
    pub key: Option<String>,
    /// On success: the reusable `card` PaymentMethod (`generated_card`).
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub failure: Option<Failure>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub history: Vec<SetupHistory>,
}

/// What a new setup is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSetup {
    pub id: String,
    pub reader: String,
    pub merchant: String,
    pub account: Option<String>,
    pub on_behalf_of: Option<String>,
    pub customer: Option<String>,
    pub allow_redisplay: AllowRedisplay,
}

/// What the flow learned.
#[derive(Clone, Debug, PartialEq)]
pub enum SetupObservation {
    /// The SetupIntent's creation is about to be sent (with `intent_key`).
    CreatingIntent,
    /// The SetupIntent exists.
    IntentCreated(String),
    /// A new attempt: its key is written before `process_setup_intent` is sent.
    Sending { key: String },
    /// The reader took our action.
    Accepted,
    /// The SetupIntent succeeded: the reusable PaymentMethod, when Stripe generated one.
    Saved(Option<String>),
    /// The card was refused, our action failed, Stripe refused it, or the daemon gave up.
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
pub enum SetupRefused {
    #[error("setup is {0}, which is final")]
    Final(SetupStatus),
    #[error("setup already has SetupIntent {0}")]
    OtherIntent(String),
}

impl Setup {
    pub fn new(n: NewSetup, now: Timestamp) -> Self {
        Setup {
            intent_key: format!("readerd:seti:{}", n.id),
            id: n.id,
            reader: n.reader,
            merchant: n.merchant,
            account: n.account,
            on_behalf_of: n.on_behalf_of,
            customer: n.customer,
            allow_redisplay: n.allow_redisplay,
            status: SetupStatus::Queued,
            step: SetupStep::Accepted,
            setup_intent: None,
            attempt: 0,
            key: None,
            payment_method: None,
            cancel_requested: false,
            failure: None,
            created_at: now,
            updated_at: now,
            history: vec![SetupHistory {
                status: SetupStatus::Queued,
                at: now,
                source: Source::Api,
                note: None,
            }],
        }
    }

    /// Applies an observation; returns the status change, if any.
    pub fn apply(
        &mut self,
        obs: SetupObservation,
        source: Source,
        at: Timestamp,
    ) -> Result<Option<(SetupStatus, SetupStatus)>, SetupRefused> {
        if self.status.is_final() {
            return match obs {
                SetupObservation::Note(_) | SetupObservation::CancelRequested => Ok(None),
                _ => Err(SetupRefused::Final(self.status)),
            };
        }
        let before = self.status;
        let mut note = None;
        match obs {
            SetupObservation::CreatingIntent => {
                self.step = self.step.max(SetupStep::CreatingIntent);
            }
            SetupObservation::IntentCreated(si) => {
                if let Some(old) = self.setup_intent.as_ref().filter(|o| **o != si) {
                    return Err(SetupRefused::OtherIntent(old.clone()));
                }
                note = self
                    .setup_intent
                    .is_none()
                    .then(|| format!("SetupIntent {si}"));
                self.setup_intent = Some(si);
                self.step = self.step.max(SetupStep::IntentCreated);
            }
            SetupObservation::Sending { key } => {
                self.attempt += 1;
                self.key = Some(key);
                self.step = SetupStep::Sending;
            }
            SetupObservation::Accepted => {
                self.step = SetupStep::Sent;
                self.status = SetupStatus::Processing;
            }
            SetupObservation::Saved(pm) => {
                self.payment_method = pm;
                self.status = SetupStatus::Succeeded;
            }
            SetupObservation::Failed(f) => {
                note = Some(format!("{}: {}", f.code, f.message));
                self.failure = Some(f);
                self.status = SetupStatus::Failed;
            }
            SetupObservation::CancelRequested => {
                self.cancel_requested = true;
                note = Some("cancel requested".into());
            }
            SetupObservation::Canceled => self.status = SetupStatus::Canceled,
            SetupObservation::Note(n) => note = Some(n),
        }
        self.updated_at = at;
        let changed = (self.status != before).then_some((before, self.status));
        if changed.is_some() || note.is_some() {
            self.history.push(SetupHistory {
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

    fn fresh() -> Setup {
        Setup::new(
            NewSetup {
                id: "set_1".into(),
                reader: "tmr_1".into(),
                merchant: "m".into(),
                account: Some("acct_1".into()),
                on_behalf_of: None,
                customer: Some("cus_1".into()),
                allow_redisplay: AllowRedisplay::Always,
            },
            Timestamp::from_ms(1),
        )
    }

    #[test]
    fn saves_the_card_and_stays_final() {
        let mut s = fresh();
        assert_eq!(s.intent_key, "readerd:seti:set_1");
        let at = Timestamp::from_ms(2);
        s.apply(SetupObservation::CreatingIntent, Source::Poll, at)
            .unwrap();
        s.apply(
            SetupObservation::IntentCreated("seti_1".into()),
            Source::Poll,
            at,
        )
        .unwrap();
        s.apply(
            SetupObservation::Sending { key: "k1".into() },
            Source::Poll,
            at,
        )
        .unwrap();
        assert_eq!(
            (s.status, s.step, s.attempt),
            (SetupStatus::Queued, SetupStep::Sending, 1)
        );
        let ch = s
            .apply(SetupObservation::Accepted, Source::Poll, at)
            .unwrap();
        assert_eq!(ch, Some((SetupStatus::Queued, SetupStatus::Processing)));
        s.apply(
            SetupObservation::Saved(Some("pm_card".into())),
            Source::Poll,
            at,
        )
        .unwrap();
        assert_eq!(s.status, SetupStatus::Succeeded);
        assert_eq!(s.payment_method.as_deref(), Some("pm_card"));
        assert_eq!(
            s.apply(SetupObservation::Canceled, Source::Api, at),
            Err(SetupRefused::Final(SetupStatus::Succeeded))
        );
        assert_eq!(
            s.apply(
                SetupObservation::Failed(Failure::new("x", "y")),
                Source::Poll,
                at
            ),
            Err(SetupRefused::Final(SetupStatus::Succeeded))
        );
        assert_eq!(
            s.apply(SetupObservation::CancelRequested, Source::Api, at),
            Ok(None)
        );
    }

    #[test]
    fn one_setup_intent_per_setup() {
        let mut s = fresh();
        let at = Timestamp::from_ms(2);
        s.apply(
            SetupObservation::IntentCreated("seti_1".into()),
            Source::Poll,
            at,
        )
        .unwrap();
        // The same one again (a replayed creation) is harmless; another is refused.
        s.apply(
            SetupObservation::IntentCreated("seti_1".into()),
            Source::Reconcile,
            at,
        )
        .unwrap();
        assert_eq!(
            s.apply(
                SetupObservation::IntentCreated("seti_2".into()),
                Source::Poll,
                at
            ),
            Err(SetupRefused::OtherIntent("seti_1".into()))
        );
        assert_eq!(s.setup_intent.as_deref(), Some("seti_1"));
        // A restart never moves the step back.
        s.apply(SetupObservation::CreatingIntent, Source::Reconcile, at)
            .unwrap();
        assert_eq!(s.step, SetupStep::IntentCreated);
    }

    #[test]
    fn a_refusal_is_recorded_with_its_code() {
        let mut s = fresh();
        let at = Timestamp::from_ms(2);
        s.apply(SetupObservation::Accepted, Source::Poll, at)
            .unwrap();
        s.apply(
            SetupObservation::Failed(Failure::new(
                "setup_intent_authentication_failure",
                "refused",
            )),
            Source::Webhook,
            at,
        )
        .unwrap();
        assert_eq!(s.status, SetupStatus::Failed);
        assert_eq!(
            s.failure.as_ref().unwrap().code,
            "setup_intent_authentication_failure"
        );
        assert_eq!(
            AllowRedisplay::parse("limited"),
            Some(AllowRedisplay::Limited)
        );
        assert_eq!(AllowRedisplay::parse("sometimes"), None);
    }
}
