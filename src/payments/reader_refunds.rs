//! Refunds on the reader (Stripe's `refund_payment`, needed for Interac): the reader job's
//! part of a refund record and its status machine, pure transitions with no I/O, like the
//! input collection's.
//!
//! The refund record stays `pending` (counted against what can still be refunded) from the
//! moment it is accepted until both the reader's action and Stripe's refund object say it is
//! done: then Stripe's status. The customer walking away (our deadline), Stripe's refusal,
//! or a reader that stayed busy end it `failed`; a cancel from the point of sale ends it
//! `canceled`; both free the amount again. `step` says how far the job went, so that a
//! restart knows whether the action may be on the reader: `sending` is written, with the
//! attempt's key in the record's `stripe_key`, before `refund_payment` is sent.

use super::machine::Failure;
use super::refunds::{RefundRecord, RefundStatus};
use serde::{Deserialize, Serialize};

/// How far the reader job went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReaderRefundStep {
    /// Waiting in the reader's queue; nothing sent.
    Queued,
    /// The attempt's key is on disk; `refund_payment` may have reached the reader.
    Sending,
    /// The reader took the action and waits for the card.
    OnReader,
}

/// The reader job of a refund made on a reader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OnReader {
    /// The reader that waits for the card (`tmr_…`).
    pub reader: String,
    /// The merchant whose turn in the reader's queue it takes (the payment's).
    pub queue: String,
    pub step: ReaderRefundStep,
    /// `refund_payment` attempts so far; each has its own key.
    pub attempts: u32,
    #[serde(default)]
    pub cancel_requested: bool,
    /// Why it ended without a refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl OnReader {
    pub fn new(reader: String, queue: String) -> Self {
        OnReader {
            reader,
            queue,
            step: ReaderRefundStep::Queued,
            attempts: 0,
            cancel_requested: false,
            failure: None,
        }
    }
}

/// What the reader job learned.
#[derive(Clone, Debug, PartialEq)]
pub enum ReaderRefundObservation {
    /// A new attempt: its key is written before `refund_payment` is sent.
    Sending { key: String },
    /// The reader took our action.
    Accepted,
    /// Stripe's refund object (`re_…`) and its status, once the reader's action succeeded.
    Refunded {
        refund: String,
        status: RefundStatus,
    },
    /// Our action failed on the reader, Stripe refused it, the customer walked away, or the
    /// reader stayed busy: no refund.
    Failed(Failure),
    /// The point of sale asked to cancel.
    CancelRequested,
    /// Canceled: before the reader took it, or our `cancel_action` cleared it.
    Canceled,
}

/// An observation that does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReaderRefundRefused {
    #[error("the refund is {0}, which is final")]
    Final(RefundStatus),
    #[error("the refund is not made on a reader")]
    NotOnReader,
}

/// Applies an observation to a refund made on a reader; returns the status change, if any.
pub fn apply(
    rec: &mut RefundRecord,
    obs: ReaderRefundObservation,
) -> Result<Option<(RefundStatus, RefundStatus)>, ReaderRefundRefused> {
    let before = rec.status.clone();
    let Some(job) = rec.on_reader.as_mut() else {
        return Err(ReaderRefundRefused::NotOnReader);
    };
    if before != RefundStatus::Pending {
        return match obs {
            ReaderRefundObservation::CancelRequested => Ok(None),
            _ => Err(ReaderRefundRefused::Final(before)),
        };
    }
    match obs {
        ReaderRefundObservation::Sending { key } => {
            job.attempts += 1;
            job.step = ReaderRefundStep::Sending;
            rec.stripe_key = key;
        }
        ReaderRefundObservation::Accepted => job.step = ReaderRefundStep::OnReader,
        ReaderRefundObservation::Refunded { refund, status } => {
            rec.refund = Some(refund);
            rec.status = status;
        }
        ReaderRefundObservation::Failed(f) => {
            job.failure = Some(f);
            rec.status = RefundStatus::Failed;
        }
        ReaderRefundObservation::CancelRequested => job.cancel_requested = true,
        ReaderRefundObservation::Canceled => rec.status = RefundStatus::Canceled,
    }
    Ok((rec.status != before).then(|| (before, rec.status.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use ReaderRefundObservation as O;

    fn fresh() -> RefundRecord {
        RefundRecord {
            id: "rf_1".into(),
            payment: "pay_1".into(),
            amount: 500,
            stripe_key: "k0".into(),
            status: RefundStatus::Pending,
            refund: None,
            created_at: Timestamp::from_ms(1),
            reverse_transfer: false,
            split: None,
            merchant: None,
            reversal_amount: 0,
            reversal_key: None,
            reversal: None,
            reversal_error: None,
            on_reader: Some(OnReader::new("tmr_1".into(), "bakery".into())),
        }
    }

    #[test]
    fn pending_until_the_refund_object_then_final() {
        let mut r = fresh();
        apply(&mut r, O::Sending { key: "k1".into() }).unwrap();
        let job = r.on_reader.clone().unwrap();
        assert_eq!((job.step, job.attempts), (ReaderRefundStep::Sending, 1));
        assert_eq!(r.stripe_key, "k1", "the attempt's key is the record's");
        assert_eq!(apply(&mut r, O::Accepted), Ok(None));
        assert_eq!(r.status, RefundStatus::Pending);
        assert!(
            r.status.commits_money(),
            "counted while it waits for the card"
        );
        let ch = apply(
            &mut r,
            O::Refunded {
                refund: "re_1".into(),
                status: RefundStatus::Succeeded,
            },
        )
        .unwrap();
        assert_eq!(ch, Some((RefundStatus::Pending, RefundStatus::Succeeded)));
        assert_eq!(r.refund.as_deref(), Some("re_1"));
        assert_eq!(
            apply(&mut r, O::Canceled),
            Err(ReaderRefundRefused::Final(RefundStatus::Succeeded))
        );
        // A late cancel is harmless.
        assert_eq!(apply(&mut r, O::CancelRequested), Ok(None));
    }

    #[test]
    fn a_cancel_or_a_failure_frees_the_amount() {
        let mut r = fresh();
        apply(&mut r, O::CancelRequested).unwrap();
        assert!(r.on_reader.as_ref().unwrap().cancel_requested);
        apply(&mut r, O::Canceled).unwrap();
        assert!(!r.status.commits_money());

        let mut r = fresh();
        apply(
            &mut r,
            O::Failed(Failure::new("customer_timeout", "walked away")),
        )
        .unwrap();
        assert_eq!(r.status, RefundStatus::Failed);
        assert!(!r.status.commits_money());
        assert_eq!(
            r.on_reader.unwrap().failure.unwrap().code,
            "customer_timeout"
        );
    }

    #[test]
    fn an_ordinary_refund_is_not_a_reader_job() {
        let mut r = fresh();
        r.on_reader = None;
        assert_eq!(
            apply(&mut r, O::Accepted),
            Err(ReaderRefundRefused::NotOnReader)
        );
    }
}
