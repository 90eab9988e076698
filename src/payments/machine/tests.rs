//! The status machine's transitions, one test per rule.

use super::*;
use crate::clock::Timestamp;
use PaymentIntentStatus as P;

/// 2026-11-26T15:00:00Z.
const T: Timestamp = Timestamp::from_ms(1_795_705_200_000);

fn payment() -> Payment {
    Payment::new(
        NewPayment {
            id: "pay_1".into(),
            merchant: "bakery".into(),
            account: "acct_1".into(),
            charge_type: ChargeType::Direct,
            reader: "tmr_1".into(),
            amount: 1250,
            currency: "eur".into(),
            capture: CaptureMode::Automatic,
            description: None,
            metadata: BTreeMap::new(),
            application_fee_amount: None,
            on_behalf_of: None,
            intent_key: "pi:pay_1".into(),
            skip_tipping: false,
        },
        T,
    )
}

fn in_status(s: Status) -> Payment {
    let mut p = payment();
    p.status = s;
    if s != Status::Queued {
        p.payment_intent = Some("pi_1".into());
    }
    p
}

fn intent(status: P) -> Observation {
    Observation::Intent {
        view: IntentView::of(status),
        reader_done: true,
    }
}

fn declined_view() -> IntentView {
    IntentView {
        last_payment_error: Some(Failure::new(
            "insufficient_funds",
            "Your card has insufficient funds.",
        )),
        ..IntentView::of(P::RequiresPaymentMethod)
    }
}

fn apply(p: &mut Payment, o: Observation) -> Result<Option<Change>, Refused> {
    p.apply(o, Source::Poll, T)
}

#[test]
fn every_final_status_is_sticky_under_every_intent_status() {
    let all_pi = [
        P::RequiresPaymentMethod,
        P::RequiresConfirmation,
        P::RequiresAction,
        P::Processing,
        P::RequiresCapture,
        P::Canceled,
        P::Succeeded,
        P::Other("future_status".into()),
    ];
    for s in Status::ALL.into_iter().filter(|s| s.is_final()) {
        for pi in &all_pi {
            for reader_done in [false, true] {
                let mut p = in_status(s);
                let obs = Observation::Intent {
                    view: IntentView {
                        last_payment_error: Some(Failure::new("card_declined", "no")),
                        ..IntentView::of(pi.clone())
                    },
                    reader_done,
                };
                assert_eq!(apply(&mut p, obs), Ok(None), "{s} under {pi}");
                assert_eq!(p.status, s);
            }
        }
        let mut p = in_status(s);
        assert_eq!(
            apply(&mut p, Observation::Dispatched),
            Err(Refused::Final(s))
        );
        assert!(apply(&mut p, Observation::Retry).is_err());
        assert!(apply(&mut p, Observation::Fail(Failure::new("x", "y"))).is_err());
        assert!(apply(&mut p, Observation::CanceledBeforeStripe).is_err());
        assert_eq!(p.status, s);
    }
}

#[test]
fn money_only_from_requires_capture_or_succeeded() {
    let live = [
        Status::Queued,
        Status::Processing,
        Status::RequiresCapture,
        Status::Declined,
    ];
    for s in live {
        for pi in [
            P::RequiresPaymentMethod,
            P::RequiresConfirmation,
            P::RequiresAction,
            P::Processing,
            P::Other("x".into()),
        ] {
            let mut p = in_status(s);
            apply(&mut p, intent(pi.clone())).unwrap();
            assert!(
                !matches!(p.status, Status::Succeeded)
                    && (p.status != Status::RequiresCapture || s == Status::RequiresCapture),
                "{s} + {pi} gave {}",
                p.status
            );
            assert_eq!(p.amount_captured, 0);
        }
        let mut p = in_status(s);
        let view = IntentView {
            amount_received: 1250,
            ..IntentView::of(P::Succeeded)
        };
        let ch = apply(
            &mut p,
            Observation::Intent {
                view,
                reader_done: true,
            },
        )
        .unwrap();
        assert_eq!(ch.map(|c| c.to), Some(Status::Succeeded));
        assert_eq!(p.amount_captured, 1250);

        let mut p = in_status(s);
        apply(&mut p, intent(P::RequiresCapture)).unwrap();
        assert_eq!(p.status, Status::RequiresCapture);
    }
}

#[test]
fn declined_only_with_last_payment_error_after_our_action() {
    // No last_payment_error: still processing.
    let mut p = in_status(Status::Processing);
    assert_eq!(apply(&mut p, intent(P::RequiresPaymentMethod)), Ok(None));
    assert_eq!(p.status, Status::Processing);
    // A decline while our action is still in progress belongs to an earlier attempt.
    let mut p = in_status(Status::Processing);
    let obs = Observation::Intent {
        view: declined_view(),
        reader_done: false,
    };
    assert_eq!(apply(&mut p, obs), Ok(None));
    // Queued (retry not yet dispatched): the old decline is not re-reported.
    let mut p = in_status(Status::Queued);
    p.payment_intent = Some("pi_1".into());
    let obs = Observation::Intent {
        view: declined_view(),
        reader_done: true,
    };
    assert_eq!(apply(&mut p, obs), Ok(None));
    assert_eq!(p.status, Status::Queued);
    // The real thing.
    let mut p = in_status(Status::Processing);
    let obs = Observation::Intent {
        view: declined_view(),
        reader_done: true,
    };
    let ch = apply(&mut p, obs).unwrap().unwrap();
    assert_eq!(ch.to, Status::Declined);
    assert_eq!(p.failure.as_ref().unwrap().code, "insufficient_funds");
}

#[test]
fn decline_then_retry_then_success_on_the_same_intent() {
    let mut p = in_status(Status::Queued);
    p.payment_intent = Some("pi_1".into());
    apply(&mut p, Observation::Dispatched).unwrap();
    assert_eq!(p.status, Status::Processing);
    apply(
        &mut p,
        Observation::Intent {
            view: declined_view(),
            reader_done: true,
        },
    )
    .unwrap();
    assert_eq!(p.status, Status::Declined);
    apply(&mut p, Observation::Retry).unwrap();
    assert_eq!(p.status, Status::Queued);
    assert_eq!(p.failure, None);
    assert_eq!(p.payment_intent.as_deref(), Some("pi_1"));
    apply(&mut p, Observation::Dispatched).unwrap();
    apply(&mut p, intent(P::Succeeded)).unwrap();
    assert_eq!(p.status, Status::Succeeded);
    let statuses: Vec<_> = p.history.iter().map(|h| h.status).collect();
    assert_eq!(
        statuses,
        [
            Status::Queued,
            Status::Processing,
            Status::Declined,
            Status::Queued,
            Status::Processing,
            Status::Succeeded
        ]
    );
}

#[test]
fn retry_only_after_a_decline() {
    for s in Status::ALL.into_iter().filter(|s| *s != Status::Declined) {
        let mut p = in_status(s);
        assert!(apply(&mut p, Observation::Retry).is_err(), "{s}");
    }
}

#[test]
fn canceled_only_when_stripe_says_so_or_nothing_reached_stripe() {
    let mut p = in_status(Status::Processing);
    p.cancel_requested = true;
    for pi in [
        P::RequiresPaymentMethod,
        P::RequiresConfirmation,
        P::Processing,
    ] {
        apply(&mut p, intent(pi)).unwrap();
        assert_eq!(p.status, Status::Processing);
    }
    apply(&mut p, intent(P::Canceled)).unwrap();
    assert_eq!(p.status, Status::Canceled);

    // Without a PaymentIntent, a queued payment cancels locally.
    let mut p = payment();
    assert_eq!(
        apply(&mut p, Observation::CanceledBeforeStripe)
            .unwrap()
            .unwrap()
            .to,
        Status::Canceled
    );
    // With one, it cannot.
    let mut p = payment();
    p.payment_intent = Some("pi_1".into());
    assert!(apply(&mut p, Observation::CanceledBeforeStripe).is_err());
    assert_eq!(p.status, Status::Queued);
}

#[test]
fn a_late_authorisation_of_a_payment_being_canceled_is_reported() {
    for (pi, want) in [
        (P::Succeeded, Status::Succeeded),
        (P::RequiresCapture, Status::RequiresCapture),
    ] {
        let mut p = in_status(Status::Processing);
        p.cancel_requested = true;
        apply(&mut p, intent(pi)).unwrap();
        assert_eq!(p.status, want);
        let note = p.history.last().unwrap().note.clone().unwrap();
        assert!(note.contains("before the cancel"), "{note}");
    }
}

#[test]
fn failing_waits_for_the_intent_to_be_canceled() {
    let mut p = in_status(Status::Processing);
    assert_eq!(
        apply(
            &mut p,
            Observation::Fail(Failure::new("reader_offline", "gone"))
        ),
        Err(Refused::MoneyPossible)
    );
    p.failing = Some(Failure::new("reader_offline", "gone"));
    apply(&mut p, intent(P::RequiresPaymentMethod)).unwrap();
    assert_eq!(p.status, Status::Processing);
    apply(&mut p, intent(P::Canceled)).unwrap();
    assert_eq!(p.status, Status::Failed);
    assert_eq!(p.failure.as_ref().unwrap().code, "reader_offline");

    // A failing payment whose PaymentIntent turns out authorised is not failed.
    let mut p = in_status(Status::Processing);
    p.failing = Some(Failure::new("timeout", "stuck"));
    apply(&mut p, intent(P::Succeeded)).unwrap();
    assert_eq!(p.status, Status::Succeeded);

    // No PaymentIntent: failing is immediate.
    let mut p = payment();
    apply(
        &mut p,
        Observation::Fail(Failure::new("merchant_not_enabled", "no")),
    )
    .unwrap();
    assert_eq!(p.status, Status::Failed);
}

#[test]
fn manual_capture_then_succeeded_keeps_capture_before_and_tip_once() {
    let mut p = in_status(Status::Processing);
    p.capture = CaptureMode::Manual;
    let view = IntentView {
        capture_before: Some(1_800_000_000),
        tip: Some(100),
        amount_capturable: 1350,
        ..IntentView::of(P::RequiresCapture)
    };
    apply(
        &mut p,
        Observation::Intent {
            view: view.clone(),
            reader_done: true,
        },
    )
    .unwrap();
    assert_eq!(p.status, Status::RequiresCapture);
    assert_eq!(p.capture_before, Some(1_800_000_000));
    // The same observation again changes nothing, and the tip is recorded once.
    let n = p.history.len();
    let again = IntentView {
        tip: Some(999),
        ..view
    };
    assert_eq!(
        apply(
            &mut p,
            Observation::Intent {
                view: again,
                reader_done: true
            }
        ),
        Ok(None)
    );
    assert_eq!(p.history.len(), n);
    assert_eq!(p.tip, Some(100));
    let captured = IntentView {
        amount_received: 1000,
        ..IntentView::of(P::Succeeded)
    };
    apply(
        &mut p,
        Observation::Intent {
            view: captured,
            reader_done: true,
        },
    )
    .unwrap();
    assert_eq!(p.status, Status::Succeeded);
    assert_eq!(p.amount_captured, 1000);
    // An older requires_capture read does not undo it.
    apply(&mut p, intent(P::RequiresCapture)).unwrap();
    assert_eq!(p.status, Status::Succeeded);
}

#[test]
fn refunds_never_exceed_what_was_captured() {
    let mut p = in_status(Status::Succeeded);
    p.amount_captured = 1000;
    apply(&mut p, Observation::Refunded { total: 400 }).unwrap();
    assert_eq!(p.amount_refunded, 400);
    apply(&mut p, Observation::Refunded { total: 300 }).unwrap();
    assert_eq!(p.amount_refunded, 400, "totals only grow");
    apply(&mut p, Observation::Refunded { total: 5000 }).unwrap();
    assert_eq!(p.amount_refunded, 1000);
}

#[test]
fn dispatch_only_from_queued_or_processing() {
    let mut p = in_status(Status::Queued);
    assert_eq!(
        apply(&mut p, Observation::Dispatched).unwrap().unwrap().to,
        Status::Processing
    );
    assert_eq!(apply(&mut p, Observation::Dispatched), Ok(None));
    let mut p = in_status(Status::Declined);
    assert!(apply(&mut p, Observation::Dispatched).is_err());
    let mut p = in_status(Status::RequiresCapture);
    assert!(apply(&mut p, Observation::Dispatched).is_err());
}

#[test]
fn canceled_by_stripe_without_our_request_says_why() {
    let mut p = in_status(Status::RequiresCapture);
    let view = IntentView {
        cancellation_reason: Some("expired".into()),
        ..IntentView::of(P::Canceled)
    };
    apply(
        &mut p,
        Observation::Intent {
            view,
            reader_done: true,
        },
    )
    .unwrap();
    assert_eq!(p.status, Status::Canceled);
    assert!(p
        .history
        .last()
        .unwrap()
        .note
        .as_ref()
        .unwrap()
        .contains("expired"));
}

#[test]
fn statuses_serialise_as_the_contract_spells_them() {
    for s in Status::ALL {
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json, serde_json::Value::String(s.as_str().into()));
        assert_eq!(Status::parse(s.as_str()), Some(s));
    }
    let finals: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_final()).collect();
    assert_eq!(
        finals,
        [Status::Succeeded, Status::Canceled, Status::Failed]
    );
}

fn reviewed(s: Status) -> Payment {
    let mut p = in_status(s);
    p.flow = PaymentFlow::Review;
    p
}

#[test]
fn a_reviewed_card_read_waits_for_the_confirm() {
    let mut p = reviewed(Status::Processing);
    // Still on the reader: nothing decided yet.
    let obs = Observation::Intent {
        view: IntentView::of(P::RequiresConfirmation),
        reader_done: false,
    };
    assert_eq!(apply(&mut p, obs).unwrap(), None);
    let ch = apply(&mut p, intent(P::RequiresConfirmation))
        .unwrap()
        .unwrap();
    assert_eq!(ch.to, Status::RequiresConfirmation);
    assert!(!p.status.is_final());
    assert!(p.status.on_reader());
    assert_eq!(p.waiting_for.as_deref(), Some("confirmation"));
}

#[test]
fn a_processed_payment_never_stops_for_a_review() {
    let mut p = in_status(Status::Processing);
    assert_eq!(
        apply(&mut p, intent(P::RequiresConfirmation)).unwrap(),
        None
    );
    assert_eq!(p.status, Status::Processing);
}

#[test]
fn the_confirm_on_the_reader_is_processing_again_and_a_decline_is_a_decline() {
    let mut p = reviewed(Status::RequiresConfirmation);
    let ch = apply(&mut p, Observation::Dispatched).unwrap().unwrap();
    assert_eq!(ch.to, Status::Processing);
    let obs = Observation::Intent {
        view: declined_view(),
        reader_done: true,
    };
    assert_eq!(apply(&mut p, obs).unwrap().unwrap().to, Status::Declined);
    // Retry forgets the card and the confirm: the card is read again.
    p.card = Some(Card::default());
    p.confirm = Some(ConfirmRequest {
        surcharge: 150,
        update_key: "k".into(),
        updated: true,
    });
    assert_eq!(
        apply(&mut p, Observation::Retry).unwrap().unwrap().to,
        Status::Queued
    );
    assert_eq!((p.card.clone(), p.confirm.clone()), (None, None));
}

#[test]
fn an_unconfirmed_payment_is_canceled_only_by_stripe() {
    let mut p = reviewed(Status::RequiresConfirmation);
    assert!(apply(&mut p, Observation::CanceledBeforeStripe).is_err());
    assert!(apply(&mut p, Observation::Fail(Failure::new("x", "y"))).is_err());
    assert_eq!(
        apply(&mut p, intent(P::Canceled)).unwrap().unwrap().to,
        Status::Canceled
    );
}

#[test]
fn a_confirmed_payment_authorised_is_money() {
    for (pi, want) in [
        (P::Succeeded, Status::Succeeded),
        (P::RequiresCapture, Status::RequiresCapture),
    ] {
        let mut p = reviewed(Status::Processing);
        assert_eq!(apply(&mut p, intent(pi)).unwrap().unwrap().to, want);
    }
}
