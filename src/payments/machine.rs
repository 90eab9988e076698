//! The payment record and its status machine, as pure transitions.
//!
//! A [`Payment`] moves between the contract's statuses only through [`Payment::apply`],
//! driven by [`Observation`]s: what Stripe said about the PaymentIntent, that the reader
//! accepted the action, that the daemon gave up on a payment that can no longer carry money.
//! Nothing here does I/O, so every rule is unit-tested on its own:
//! - money only when the PaymentIntent is `requires_capture` or `succeeded`;
//! - a decline only when the PaymentIntent is back at `requires_payment_method` with a
//!   `last_payment_error`, once our reader action is over;
//! - `canceled` only when Stripe says the PaymentIntent is canceled (or nothing was ever
//!   created on Stripe);
//! - `failed` only when no money can move: no PaymentIntent exists, or it is canceled;
//! - final statuses are never left (an older observation cannot undo them);
//! - an authorisation that lands while a cancel is pending is reported, not lost.
//!
//! Longer than 600 lines on purpose: the whole status machine as pure transitions, one
//! match per observation, kept together so that every transition can be read against every
//! other; its tests are in `machine/tests.rs`.

use super::splits::Split;
use crate::clock::Timestamp;
use crate::stripe::wire::{self, PaymentIntentStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The contract's payment statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Processing,
    /// A reviewed payment (`flow: review`): the card is read, not yet authorised; the
    /// point of sale confirms (with a surcharge, perhaps) or cancels.
    RequiresConfirmation,
    RequiresCapture,
    Succeeded,
    Declined,
    Canceled,
    Failed,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Queued,
        Status::Processing,
        Status::RequiresConfirmation,
        Status::RequiresCapture,
        Status::Succeeded,
        Status::Declined,
        Status::Canceled,
        Status::Failed,
    ];

    /// Final statuses are never left.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Canceled | Status::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Processing => "processing",
            Status::RequiresConfirmation => "requires_confirmation",
            Status::RequiresCapture => "requires_capture",
            Status::Succeeded => "succeeded",
            Status::Declined => "declined",
            Status::Canceled => "canceled",
            Status::Failed => "failed",
        }
    }

    /// The payment holds its reader: waiting in line, on the reader, or read and waiting
    /// for the point of sale's confirm.
    pub fn on_reader(self) -> bool {
        matches!(
            self,
            Status::Queued | Status::Processing | Status::RequiresConfirmation
        )
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a status change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Api,
    Poll,
    Webhook,
    Reconcile,
}

/// `automatic` or `manual` capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    #[default]
    Automatic,
    Manual,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Automatic => "automatic",
            CaptureMode::Manual => "manual",
        }
    }
}

/// How the card is taken: `process` (read and authorised in one reader action) or
/// `review` (read with `collect_payment_method`, shown to the point of sale, authorised
/// with `confirm_payment_intent` once it confirms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFlow {
    #[default]
    Process,
    Review,
}

/// The card a reviewed payment read, as the point of sale sees it before confirming.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Card {
    pub brand: Option<String>,
    pub last4: Option<String>,
    /// `credit`, `debit`, `prepaid` or `unknown`.
    pub funding: Option<String>,
    /// The wallet it was tapped from (`apple_pay`, `google_pay`, …), when Stripe tells.
    pub wallet: Option<String>,
}

impl Card {
    /// The card of a PaymentMethod a reader collected.
    pub fn of(pm: &wire::PaymentMethod) -> Option<Card> {
        let c = pm.card()?;
        Some(Card {
            brand: c.brand.clone(),
            last4: c.last4.clone(),
            funding: c.funding.clone(),
            wallet: c.wallet.as_ref().map(|w| w.kind.clone()),
        })
    }
}

/// The point of sale confirmed a reviewed payment: the surcharge, and the key of the
/// PaymentIntent's amount update, both on disk before anything is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRequest {
    /// Minor units added to the amount before the card is authorised (0: none).
    pub surcharge: i64,
    /// Idempotency key of the amount update (replayed after a crash).
    pub update_key: String,
    /// Stripe's PaymentIntent shows the new amount.
    #[serde(default)]
    pub updated: bool,
}

/// Where the PaymentIntent lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChargeType {
    /// On the merchant's connected account (`Stripe-Account`).
    #[default]
    Direct,
    /// On the platform with `transfer_data[destination]`.
    Destination,
    /// On the platform with `transfer_group` = the payment id; one Transfer per split after
    /// the capture.
    Separate,
}

/// Why a payment failed or was declined: `{code, message}` as the contract shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// One status change (or a note about the payment's progress).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub status: Status,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How far the flow has gone: each step is written before it is acted on, so that a restart
/// knows what may already have happened on Stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Accepted; the PaymentIntent idempotency key is on disk, nothing sent yet.
    Accepted,
    /// The create request may have been sent (replay the same key to find out).
    CreatingIntent,
    /// The PaymentIntent exists (`payment_intent` is set).
    IntentCreated,
    /// `process_payment_intent` for `attempt` may have been sent with `attempt_key`.
    Dispatching,
    /// The reader accepted the action of `attempt`.
    Dispatched,
    /// The reader is done with this payment (authorised, declined, or final).
    Settled,
}

/// A capture request, persisted before it is sent (at most one capture per payment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    pub key: String,
    pub amount: Option<i64>,
}

/// A payment: the registry record (tree `payments`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    pub status: Status,
    pub merchant: String,
    /// The merchant's connected account at acceptance time.
    pub account: String,
    pub charge_type: ChargeType,
    pub reader: String,
    pub amount: i64,
    pub currency: String,
    pub capture: CaptureMode,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The platform fee asked for on the PaymentIntent, if any.
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    /// Destination charges: the settlement account named `on_behalf_of`, decided at
    /// acceptance so that a replayed creation sends the same parameters.
    #[serde(default)]
    pub on_behalf_of: Option<String>,
    /// The reader skips its tip screen for this payment (`process_config[skip_tipping]`).
    #[serde(default)]
    pub skip_tipping: bool,
    /// `review`: the card is shown to the point of sale before it is authorised.
    #[serde(default)]
    pub flow: PaymentFlow,
    /// The card read, once a reviewed payment reached `requires_confirmation`.
    #[serde(default)]
    pub card: Option<Card>,
    /// The surcharge added to the PaymentIntent's amount at the confirm.
    #[serde(default)]
    pub surcharge: Option<i64>,
    /// The confirm asked for, carried out by the reader's worker.
    #[serde(default)]
    pub confirm: Option<ConfirmRequest>,
    /// When an unconfirmed reviewed payment is canceled (`[payments] review_timeout`).
    #[serde(default)]
    pub review_until: Option<Timestamp>,
    pub payment_intent: Option<String>,
    /// Idempotency key of the PaymentIntent creation, on disk before the request is sent.
    pub intent_key: String,
    /// Number of `process_payment_intent` attempts begun.
    pub attempt: u32,
    /// Idempotency key of the current attempt (new for every attempt).
    pub attempt_key: Option<String>,
    pub step: Step,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub tip: Option<i64>,
    pub failure: Option<Failure>,
    /// Unix seconds after which an uncaptured authorisation is released: Stripe's own
    /// value, kept in Stripe's unit. Not a [`Timestamp`] on purpose: records already hold it
    /// as a bare number of seconds, which a `Timestamp` would read as milliseconds.
    pub capture_before: Option<i64>,
    #[serde(default)]
    pub capture_request: Option<CaptureRequest>,
    /// A POS asked to cancel; `canceled` still waits for Stripe.
    #[serde(default)]
    pub cancel_requested: bool,
    /// The daemon is giving up for this reason: the PaymentIntent is being canceled first,
    /// and its cancellation turns into `failed` with this failure.
    #[serde(default)]
    pub failing: Option<Failure>,
    /// What the payment is waiting for right now ("waiting for card", "reader busy"), if
    /// anything worth saying.
    #[serde(default)]
    pub waiting_for: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub history: Vec<HistoryEntry>,
    /// Separate charges: one split per merchant (a basket has several), each with its
    /// share and its transfer. Empty for direct and destination charges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<Split>,
    /// The split whose merchant receives the tip.
    #[serde(default)]
    pub tip_split: usize,
}

/// A new payment's fixed facts.
#[derive(Clone, Debug)]
pub struct NewPayment {
    pub id: String,
    pub merchant: String,
    pub account: String,
    pub charge_type: ChargeType,
    pub reader: String,
    pub amount: i64,
    pub currency: String,
    pub capture: CaptureMode,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub application_fee_amount: Option<i64>,
    pub on_behalf_of: Option<String>,
    pub intent_key: String,
    pub skip_tipping: bool,
}

/// What Stripe said about the PaymentIntent, reduced to what decides a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntentView {
    pub status: PaymentIntentStatus,
    pub last_payment_error: Option<Failure>,
    pub amount_received: i64,
    pub amount_capturable: i64,
    pub tip: Option<i64>,
    pub capture_before: Option<i64>,
    pub cancellation_reason: Option<String>,
}

impl IntentView {
    /// A bare view (tests and simple cases).
    pub fn of(status: PaymentIntentStatus) -> Self {
        IntentView {
            status,
            last_payment_error: None,
            amount_received: 0,
            amount_capturable: 0,
            tip: None,
            capture_before: None,
            cancellation_reason: None,
        }
    }
}

impl From<&wire::PaymentIntent> for IntentView {
    fn from(pi: &wire::PaymentIntent) -> Self {
        let capture_before = pi
            .latest_charge
            .as_ref()
            .and_then(|c| c.object())
            .and_then(|c| c.payment_method_details.as_ref())
            .and_then(|d| d.card_present.as_ref())
            .and_then(|c| c.capture_before);
        IntentView {
            status: pi.status.clone(),
            last_payment_error: pi.last_payment_error.as_ref().map(|e| {
                Failure::new(
                    e.decline_code
                        .clone()
                        .or_else(|| e.code.clone())
                        .unwrap_or_else(|| e.kind.as_str().to_string()),
                    e.message.clone().unwrap_or_else(|| "declined".to_string()),
                )
            }),
            amount_received: pi.amount_received,
            amount_capturable: pi.amount_capturable,
            tip: pi.tip_amount(),
            capture_before,
            cancellation_reason: pi.cancellation_reason.clone(),
        }
    }
}

/// Something that happened to a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A fresh read of the PaymentIntent. `reader_done`: our reader action is no longer in
    /// progress (finished, replaced, or cleared), so a decline on the PaymentIntent belongs to
    /// the current attempt and not to an earlier one.
    Intent { view: IntentView, reader_done: bool },
    /// The reader accepted `process_payment_intent`.
    Dispatched,
    /// Something worth showing that changes no status (pickup check, busy reader, a refused
    /// cancel).
    Note(String),
    /// The daemon gives up. Only valid when no money can move (no PaymentIntent, or the
    /// PaymentIntent is canceled).
    Fail(Failure),
    /// A cancel of a payment that never reached Stripe.
    CanceledBeforeStripe,
    /// `retry` after a decline: back to the queue, same PaymentIntent.
    Retry,
    /// A refund went through: the total refunded so far.
    Refunded { total: i64 },
}

impl Observation {
    /// A fresh read of the PaymentIntent made when our reader action is over.
    pub fn intent_read(intent: &wire::PaymentIntent) -> Self {
        Observation::Intent {
            view: IntentView::from(intent),
            reader_done: true,
        }
    }
}

/// An observation the machine refuses (a bug in the caller, or a request that does not fit).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("payment is {0}, which is final")]
    Final(Status),
    #[error("cannot fail a payment whose PaymentIntent may still carry money")]
    MoneyPossible,
    #[error("cannot {what} a payment that is {status}")]
    NotNow { what: &'static str, status: Status },
}

/// A status change made by [`Payment::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: Status,
    pub to: Status,
}

impl Payment {
    /// A freshly accepted payment (`queued`).
    pub fn new(n: NewPayment, now: Timestamp) -> Payment {
        Payment {
            id: n.id,
            status: Status::Queued,
            merchant: n.merchant,
            account: n.account,
            charge_type: n.charge_type,
            reader: n.reader,
            amount: n.amount,
            currency: n.currency,
            capture: n.capture,
            description: n.description,
            metadata: n.metadata,
            application_fee_amount: n.application_fee_amount,
            on_behalf_of: n.on_behalf_of,
            skip_tipping: n.skip_tipping,
            flow: PaymentFlow::Process,
            card: None,
            surcharge: None,
            confirm: None,
            review_until: None,
            payment_intent: None,
            intent_key: n.intent_key,
            attempt: 0,
            attempt_key: None,
            step: Step::Accepted,
            amount_captured: 0,
            amount_refunded: 0,
            tip: None,
            failure: None,
            capture_before: None,
            capture_request: None,
            cancel_requested: false,
            failing: None,
            waiting_for: None,
            created_at: now,
            updated_at: now,
            history: vec![HistoryEntry {
                status: Status::Queued,
                at: now,
                source: Source::Api,
                note: None,
            }],
            splits: Vec::new(),
            tip_split: 0,
        }
    }

    /// Every merchant the payment is for: its splits' (a basket), or its one merchant.
    pub fn merchants(&self) -> Vec<&str> {
        if self.splits.is_empty() {
            vec![self.merchant.as_str()]
        } else {
            self.splits.iter().map(|s| s.merchant.as_str()).collect()
        }
    }

    /// Whether the PaymentIntent (if any) is known to be unable to carry money any more.
    fn intent_dead(&self) -> bool {
        self.payment_intent.is_none()
    }

    fn set(&mut self, to: Status, source: Source, now: Timestamp, note: Option<String>) -> Change {
        let from = self.status;
        self.status = to;
        self.updated_at = now;
        if to != Status::Processing && to != Status::Queued {
            self.waiting_for = None;
        }
        self.history.push(HistoryEntry {
            status: to,
            at: now,
            source,
            note,
        });
        Change { from, to }
    }

    fn note(&mut self, source: Source, now: Timestamp, note: String) {
        self.updated_at = now;
        self.history.push(HistoryEntry {
            status: self.status,
            at: now,
            source,
            note: Some(note),
        });
    }

    /// Applies an observation. Returns the status change, if any; `Err` when the observation
    /// does not fit the payment (nothing is changed then).
    pub fn apply(
        &mut self,
        obs: Observation,
        source: Source,
        now: Timestamp,
    ) -> Result<Option<Change>, Refused> {
        match obs {
            Observation::Intent { view, reader_done } => {
                Ok(self.apply_intent(view, reader_done, source, now))
            }
            Observation::Dispatched => match self.status {
                Status::RequiresConfirmation => {
                    // The reader took the confirm: the card is being authorised.
                    self.step = Step::Dispatched;
                    let ch = self.set(Status::Processing, source, now, None);
                    self.waiting_for = Some("authorisation".into());
                    Ok(Some(ch))
                }
                Status::Queued => {
                    self.step = Step::Dispatched;
                    let ch = self.set(Status::Processing, source, now, None);
                    self.waiting_for = Some("card".into());
                    Ok(Some(ch))
                }
                Status::Processing => {
                    self.step = Step::Dispatched;
                    self.waiting_for = Some("card".into());
                    Ok(None)
                }
                s if s.is_final() => Err(Refused::Final(s)),
                s => Err(Refused::NotNow {
                    what: "dispatch",
                    status: s,
                }),
            },
            Observation::Note(text) => {
                self.note(source, now, text);
                Ok(None)
            }
            Observation::Fail(failure) => {
                if self.status.is_final() {
                    return Err(Refused::Final(self.status));
                }
                if !self.intent_dead() {
                    return Err(Refused::MoneyPossible);
                }
                let note = Some(format!("{}: {}", failure.code, failure.message));
                self.failure = Some(failure);
                self.step = Step::Settled;
                Ok(Some(self.set(Status::Failed, source, now, note)))
            }
            Observation::CanceledBeforeStripe => {
                if self.status.is_final() {
                    return Err(Refused::Final(self.status));
                }
                if !self.intent_dead() || self.status != Status::Queued {
                    return Err(Refused::NotNow {
                        what: "cancel without Stripe",
                        status: self.status,
                    });
                }
                self.cancel_requested = true;
                self.step = Step::Settled;
                Ok(Some(self.set(
                    Status::Canceled,
                    source,
                    now,
                    Some("canceled before anything was sent to Stripe".into()),
                )))
            }
            Observation::Retry => {
                if self.status != Status::Declined {
                    return Err(Refused::NotNow {
                        what: "retry",
                        status: self.status,
                    });
                }
                self.failure = None;
                self.step = Step::IntentCreated;
                // A reviewed payment reads the card again and waits for a new confirm.
                self.card = None;
                self.confirm = None;
                self.review_until = None;
                Ok(Some(self.set(
                    Status::Queued,
                    source,
                    now,
                    Some("retry on the same PaymentIntent".into()),
                )))
            }
            Observation::Refunded { total } => {
                if total > self.amount_refunded {
                    self.amount_refunded = total.min(self.amount_captured);
                    self.updated_at = now;
                }
                Ok(None)
            }
        }
    }

    fn apply_intent(
        &mut self,
        view: IntentView,
        reader_done: bool,
        source: Source,
        now: Timestamp,
    ) -> Option<Change> {
        // Facts that only ever grow are recorded whatever the status.
        if self.tip.is_none() {
            if let Some(t) = view.tip {
                self.tip = Some(t);
            }
        }
        if view.capture_before.is_some() && self.capture_before.is_none() {
            self.capture_before = view.capture_before;
        }
        match self.status {
            Status::Canceled | Status::Failed => return None,
            Status::Succeeded => {
                if view.status == PaymentIntentStatus::Succeeded
                    && view.amount_received > self.amount_captured
                {
                    self.amount_captured = view.amount_received;
                    self.updated_at = now;
                }
                return None;
            }
            _ => {}
        }
        let late = if self.cancel_requested {
            Some("authorised before the cancel could take effect: not canceled".to_string())
        } else {
            None
        };
        match view.status {
            PaymentIntentStatus::Succeeded => {
                self.amount_captured = view.amount_received;
                self.failure = None;
                self.step = Step::Settled;
                Some(self.set(Status::Succeeded, source, now, late))
            }
            PaymentIntentStatus::RequiresCapture => {
                if self.status == Status::RequiresCapture {
                    return None;
                }
                self.failure = None;
                self.step = Step::Settled;
                Some(self.set(Status::RequiresCapture, source, now, late))
            }
            PaymentIntentStatus::Canceled => {
                self.step = Step::Settled;
                if let Some(f) = self.failing.take() {
                    let note = Some(format!("{}: {}", f.code, f.message));
                    self.failure = Some(f);
                    return Some(self.set(Status::Failed, source, now, note));
                }
                let note = if self.cancel_requested {
                    None
                } else {
                    Some(format!(
                        "PaymentIntent canceled on Stripe ({})",
                        view.cancellation_reason
                            .as_deref()
                            .unwrap_or("no reason given")
                    ))
                };
                Some(self.set(Status::Canceled, source, now, note))
            }
            PaymentIntentStatus::RequiresPaymentMethod => {
                // A decline belongs to our attempt only once our action is over and the
                // reader was actually given the PaymentIntent.
                match (&view.last_payment_error, self.status, reader_done) {
                    (Some(err), Status::Processing, true) => {
                        self.failure = Some(err.clone());
                        self.step = Step::Settled;
                        let note = Some(format!("{}: {}", err.code, err.message));
                        Some(self.set(Status::Declined, source, now, note))
                    }
                    _ => None,
                }
            }
            PaymentIntentStatus::RequiresConfirmation
                if self.flow == PaymentFlow::Review
                    && self.status == Status::Processing
                    && reader_done =>
            {
                // The card is read, not authorised: the point of sale reviews it. A confirm
                // that ended without a result (or was cut by a restart) leaves it here too;
                // the worker decides whether the confirm asked for is sent again.
                self.review_until = None;
                let ch = self.set(Status::RequiresConfirmation, source, now, late);
                self.waiting_for = Some("confirmation".into());
                Some(ch)
            }
            // Collected or authorising: wait for Stripe to decide.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
