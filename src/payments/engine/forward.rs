//! Capture, cancel, refund and retry (and the cancel of an input collection, a refund on
//! the reader accepted or canceled, the cancel of a setup) asked of an instance that does
//! not work the reader: carried out by the reader's holder, never here.
//!
//! Only the holder of a reader's lease writes the steps of that reader's payments, each
//! write fenced by the lease. An API call that lands elsewhere (any instance serves the
//! whole API) is written to the store as a [`Command`] (tree `commands`, key
//! `<reader>/<command>`) and announced like a job ([`crate::store::Store::notify_job`]);
//! the holder hears it, carries it out as if it had been asked directly (same operation
//! locks, same at-most-once keys), writes the outcome into the command and announces it
//! again; the instance that was asked waits for that outcome and answers with it. A
//! holder that dies with a command pending leaves it to the reader's next holder, which
//! finds it when it takes the reader over; a refund always travels with an idempotency
//! key (the caller's, or one made for it), so that a command carried out twice refunds
//! once.
//!
//! Why forward rather than write here under the holder's token: the holder's worker, its
//! reconcile and the webhook hints it receives write the same records at the same time;
//! two writers of one record on two machines would need every write of the engine to be a
//! compare-and-swap with a retry. One writer per reader keeps the engine's
//! read-modify-write as it is on one machine.

use super::leases::Cluster;
use super::{Engine, PaymentError};
use crate::clock::Timestamp;
use crate::payments::ids::new_id;
use crate::payments::queue::QueueFull;
use crate::store::{JobNotice, Tree};
use crate::stripe::wire::ApiErrorObject;
use crate::stripe::StripeError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long the instance that was asked waits for the holder's outcome before it answers
/// `409 pending_on_holder` (the command stays: the holder carries it out when it can).
const FORWARD_WAIT: Duration = Duration::from_secs(30);
/// The outcome is read again this often even without a notice (one lost with its
/// connection).
const FORWARD_POLL: Duration = Duration::from_millis(500);
/// A command whose outcome nobody collected (its asker died) is removed after this long.
const DONE_KEPT: Duration = Duration::from_secs(600);

/// An operation on a payment, as the API asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum CommandOp {
    Capture {
        amount: Option<i64>,
    },
    Cancel,
    Retry,
    /// Cancel of an input collection (its id is the command's `payment`).
    CancelInputs,
    Refund {
        amount: Option<i64>,
        merchant: Option<String>,
        client: String,
        /// The caller's `Idempotency-Key`, or one made for the forwarded refund.
        key: String,
    },
    /// A refund made on the command's reader (which may not be the payment's own).
    RefundOnReader {
        amount: Option<i64>,
        merchant: Option<String>,
        client: String,
        /// The caller's `Idempotency-Key`, or one made for the forwarded refund.
        key: String,
    },
    /// Cancel of a refund made on the command's reader.
    CancelReaderRefund {
        refund: String,
    },
    /// Cancel of a setup (its id is the command's `payment`).
    CancelSetup,
}

/// A forwarded operation and, once carried out, its outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Command {
    pub id: String,
    pub reader: String,
    /// The payment (or, for [`CommandOp::CancelInputs`], the input collection; for
    /// [`CommandOp::CancelSetup`], the setup).
    pub payment: String,
    pub op: CommandOp,
    /// The instance that was asked.
    pub by: String,
    pub created_at: Timestamp,
    pub outcome: Option<Outcome>,
    pub done_at: Option<Timestamp>,
}

/// What the holder answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Outcome {
    Done,
    Invalid {
        code: String,
        message: String,
    },
    Forbidden {
        code: String,
        message: String,
    },
    NotFound {
        what: String,
    },
    Conflict {
        code: String,
        message: String,
    },
    QueueFull {
        capacity: usize,
    },
    /// Stripe refused, with its error object (`None`: no answer, or not Stripe's error
    /// object).
    Stripe {
        status: Option<u16>,
        error: Option<Box<ApiErrorObject>>,
        message: String,
    },
    Store {
        message: String,
    },
}

/// The codes of the engine's refusals (a refusal travels as text and comes back as the
/// engine's own code).
const CODES: &[&str] = &[
    "country_mismatch",
    "idempotency_conflict",
    "invalid_amount",
    "invalid_request",
    "invalid_splits",
    "invalid_state",
    "lease_lost",
    "merchant_not_in_payment",
    "merchant_required",
    "reader_action_mismatch",
    "reader_not_allowed",
    "reader_not_shared",
    "refund_too_large",
    "split_mismatch",
    "split_needs_separate_charges",
    "transfer_pending",
];
const NOT_FOUND: &[&str] = &[
    "capture",
    "charge",
    "input_collection",
    "merchant",
    "payment",
    "payment_intent",
    "reader",
    "refund",
    "setup",
];

fn code(s: &str) -> &'static str {
    CODES
        .iter()
        .find(|c| **c == s)
        .copied()
        .unwrap_or("refused")
}

impl Outcome {
    fn of(r: &Result<(), PaymentError>) -> Outcome {
        match r {
            Ok(()) => Outcome::Done,
            Err(PaymentError::Invalid { code, message }) => Outcome::Invalid {
                code: code.to_string(),
                message: message.clone(),
            },
            Err(PaymentError::Forbidden { code, message }) => Outcome::Forbidden {
                code: code.to_string(),
                message: message.clone(),
            },
            Err(PaymentError::NotFound(what)) => Outcome::NotFound {
                what: what.to_string(),
            },
            Err(PaymentError::Conflict { code, message }) => Outcome::Conflict {
                code: code.to_string(),
                message: message.clone(),
            },
            Err(PaymentError::QueueFull(q)) => Outcome::QueueFull {
                capacity: q.capacity,
            },
            Err(PaymentError::Stripe(e)) => match e {
                StripeError::Api { status, error, .. } => Outcome::Stripe {
                    status: Some(*status),
                    error: Some(error.clone()),
                    message: e.to_string(),
                },
                other => Outcome::Stripe {
                    status: None,
                    error: None,
                    message: other.to_string(),
                },
            },
            Err(PaymentError::Store(e)) => Outcome::Store {
                message: e.to_string(),
            },
        }
    }

    fn into_result(self) -> Result<(), PaymentError> {
        Err(match self {
            Outcome::Done => return Ok(()),
            Outcome::Invalid { code: c, message } => PaymentError::Invalid {
                code: code(&c),
                message,
            },
            Outcome::Forbidden { code: c, message } => PaymentError::Forbidden {
                code: code(&c),
                message,
            },
            Outcome::NotFound { what } => PaymentError::NotFound(
                NOT_FOUND
                    .iter()
                    .find(|w| **w == what)
                    .copied()
                    .unwrap_or("object"),
            ),
            Outcome::Conflict { code: c, message } => PaymentError::Conflict {
                code: code(&c),
                message,
            },
            Outcome::QueueFull { capacity } => QueueFull { capacity }.into(),
            Outcome::Stripe {
                status: Some(status),
                error: Some(error),
                ..
            } => StripeError::Api {
                status,
                error,
                request_id: None,
                should_retry: None,
                rate_limited_reason: None,
            }
            .into(),
            // No answer from Stripe on the holder: the outcome is unknown here too.
            Outcome::Stripe { message, .. } => StripeError::NoResponse(message).into(),
            Outcome::Store { message } => crate::store::StoreError::Engine(message).into(),
        })
    }
}

fn command_key(reader: &str, id: &str) -> String {
    format!("{reader}/{id}")
}

impl Engine {
    /// `Some(outcome)` when this instance does not work `reader` (in a cluster): `op` was
    /// carried out by the reader's holder. `None`: carry it out here.
    pub(super) async fn forwarded(
        &self,
        reader: &str,
        payment: &str,
        op: CommandOp,
    ) -> Option<Result<(), PaymentError>> {
        let c = self.inner.cluster.as_ref()?;
        if self.works(reader) {
            return None;
        }
        let name = match &op {
            CommandOp::Capture { .. } => "capture",
            CommandOp::Cancel => "cancel",
            CommandOp::Retry => "retry",
            CommandOp::CancelInputs => "cancel_inputs",
            CommandOp::Refund { .. } => "refund",
            CommandOp::RefundOnReader { .. } => "refund_on_reader",
            CommandOp::CancelReaderRefund { .. } => "cancel_refund",
            CommandOp::CancelSetup => "cancel_setup",
        };
        self.inner.links.metrics.operations_forwarded.inc(&[name]);
        let cmd = Command {
            op,
            id: new_id("cmd"),
            reader: reader.to_string(),
            payment: payment.to_string(),
            by: c.instance.clone(),
            created_at: Timestamp::now(),
            outcome: None,
            done_at: None,
        };
        Some(self.forward(cmd).await)
    }

    async fn forward(&self, cmd: Command) -> Result<(), PaymentError> {
        let registry = &self.inner.registry;
        let store = registry.store();
        let key = command_key(&cmd.reader, &cmd.id);
        // Listening before the write: the outcome's notice cannot come before it.
        let mut notices = store.job_notifications();
        registry.put(Tree::Commands, &key, &cmd)?;
        tracing::info!(payment = %cmd.payment, reader = %cmd.reader, command = %cmd.id, "operation forwarded to the reader's holder");
        if let Err(e) = store.notify_job(&cmd.reader, &cmd.id) {
            tracing::warn!(command = %cmd.id, error = %e, "command notice not sent; the holder finds it at its next look");
        }
        let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
        loop {
            match registry.get::<Command>(Tree::Commands, &key)? {
                Some(Command {
                    outcome: Some(o), ..
                }) => {
                    registry.remove(Tree::Commands, &key)?;
                    return o.into_result();
                }
                Some(_) => {}
                None => {
                    return Err(PaymentError::conflict(
                        "pending_on_holder",
                        "the operation was handed to the reader's holder and its outcome is gone; read the payment",
                    ))
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PaymentError::conflict(
                    "pending_on_holder",
                    format!(
                        "the instance working reader {} has not carried the operation out yet; it will: read the payment later",
                        cmd.reader
                    ),
                ));
            }
            // The next notice about this command (or any sign that one was missed), or
            // the next poll.
            let heard = async {
                loop {
                    match notices.recv().await {
                        Ok(JobNotice::Job { job, .. }) if job == cmd.id => return,
                        Ok(JobNotice::Job { .. }) => {}
                        Ok(JobNotice::Missed)
                        | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(FORWARD_POLL, heard).await;
        }
    }

    /// The holder's side: carries out a pending command about `reader` once (it may be
    /// heard of twice, by notice and by a look), writes its outcome and announces it.
    pub(super) fn carry_out(&self, c: &Cluster, cmd: Command) {
        if !self.works(&cmd.reader) {
            return;
        }
        let key = command_key(&cmd.reader, &cmd.id);
        if cmd.outcome.is_some() {
            // Its asker is gone (or reads it now): removed once nobody will.
            let old = cmd.done_at.is_some_and(|t| {
                Timestamp::now().as_ms() - t.as_ms() > DONE_KEPT.as_millis() as i64
            });
            if old {
                let _ = self.inner.registry.remove(Tree::Commands, &key);
            }
            return;
        }
        if !c.running.lock().expect("commands").insert(cmd.id.clone()) {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let result = match &cmd.op {
                CommandOp::Capture { amount } => {
                    engine.capture(&cmd.payment, *amount).await.map(|_| ())
                }
                CommandOp::Cancel => engine.cancel(&cmd.payment).await.map(|_| ()),
                CommandOp::Retry => engine.retry(&cmd.payment).await.map(|_| ()),
                CommandOp::CancelInputs => engine.cancel_inputs(&cmd.payment).await.map(|_| ()),
                CommandOp::Refund {
                    amount,
                    merchant,
                    client,
                    key,
                } => engine
                    .refund_for(
                        &cmd.payment,
                        *amount,
                        merchant.as_deref(),
                        client,
                        Some(key),
                    )
                    .await
                    .map(|_| ()),
                CommandOp::RefundOnReader {
                    amount,
                    merchant,
                    client,
                    key,
                } => engine
                    .refund_on_reader(
                        &cmd.payment,
                        *amount,
                        merchant.as_deref(),
                        Some(&cmd.reader),
                        client,
                        Some(key),
                    )
                    .await
                    .map(|_| ()),
                CommandOp::CancelReaderRefund { refund } => engine
                    .cancel_reader_refund(&cmd.payment, refund)
                    .await
                    .map(|_| ()),
                CommandOp::CancelSetup => engine.cancel_setup(&cmd.payment).await.map(|_| ()),
            };
            if let Err(e) = &result {
                tracing::info!(payment = %cmd.payment, command = %cmd.id, error = %e, "forwarded operation refused");
            }
            let mut done = cmd.clone();
            done.outcome = Some(Outcome::of(&result));
            done.done_at = Some(Timestamp::now());
            let registry = &engine.inner.registry;
            // Written over the command only while it is there: its asker removes it once it
            // has the outcome, so a missing one was answered already (by a former holder).
            let written = match registry.get::<Command>(Tree::Commands, &key) {
                Ok(Some(_)) => registry.put(Tree::Commands, &key, &done),
                other => other.map(|_| ()),
            };
            match written {
                Ok(()) => {
                    if let Err(e) = registry.store().notify_job(&cmd.reader, &cmd.id) {
                        tracing::warn!(command = %cmd.id, error = %e, "outcome notice not sent; its asker reads it at its next look");
                    }
                }
                Err(e) => {
                    tracing::warn!(command = %cmd.id, error = %e, "forwarded operation's outcome not written")
                }
            }
            if let Some(c) = engine.inner.cluster.as_ref() {
                c.running.lock().expect("commands").remove(&cmd.id);
            }
        });
    }

    /// The pending commands about `reader` (its holder carries them out).
    pub(super) fn commands_of(&self, reader: &str) -> Vec<Command> {
        self.inner
            .registry
            .scan_prefix::<Command>(Tree::Commands, &format!("{reader}/"))
            .map(|v| v.into_iter().map(|(_, c)| c).collect())
            .unwrap_or_default()
    }

    /// The command `id` about `reader`, if there is one.
    pub(super) fn command(&self, reader: &str, id: &str) -> Option<Command> {
        self.inner
            .registry
            .get(Tree::Commands, &command_key(reader, id))
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_comes_back_as_the_engine_said_it() {
        let cases: Vec<PaymentError> = vec![
            PaymentError::conflict("invalid_state", "payment is already canceled"),
            PaymentError::invalid("refund_too_large", "at most 5 can still be refunded"),
            PaymentError::NotFound("payment"),
            QueueFull { capacity: 3 }.into(),
        ];
        for e in cases {
            let before = e.to_string();
            let back = Outcome::of(&Err(e)).into_result().unwrap_err();
            assert_eq!(back.to_string(), before);
        }
        let o = Outcome::of(&Err(PaymentError::conflict("transfer_pending", "x")));
        let json = serde_json::to_string(&o).unwrap();
        let back: Outcome = serde_json::from_str(&json).unwrap();
        assert!(matches!(
            back.into_result(),
            Err(PaymentError::Conflict {
                code: "transfer_pending",
                ..
            })
        ));
        assert!(Outcome::of(&Ok(())).into_result().is_ok());
        // The refusals of a refund on the reader and of the cancels keep their "what".
        for what in ["refund", "setup"] {
            let back = Outcome::of(&Err(PaymentError::NotFound(what)))
                .into_result()
                .unwrap_err();
            assert!(matches!(back, PaymentError::NotFound(w) if w == what));
        }
    }

    #[test]
    fn every_operation_is_read_back_as_it_was_written() {
        let ops = [
            CommandOp::RefundOnReader {
                amount: Some(300),
                merchant: Some("bakery".into()),
                client: "pos".into(),
                key: "k".into(),
            },
            CommandOp::CancelReaderRefund {
                refund: "rf_1".into(),
            },
            CommandOp::CancelSetup,
        ];
        for op in ops {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(
                serde_json::from_str::<CommandOp>(&json).unwrap(),
                op,
                "{json}"
            );
        }
    }
}
