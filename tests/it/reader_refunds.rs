//! Refunds on the reader (`refund_payment`) through the engine against the emulator: made
//! when the customer presents the card, pending (and counted) until then, walked away from,
//! canceled from the point of sale, behind someone else's action, refused by Stripe, and in
//! a destination charge's Connect shape.

use crate::common::start_foreign_payment;
use crate::payments_flow::{
    bakery_payment, env, env_with, fast_config, instant_sim, paid_on_reader, req, wait_on_reader,
    wait_status, Env,
};
use readerd::payments::engine::{EngineConfig, PaymentError};
use readerd::payments::machine::CaptureMode;
use readerd::payments::reader_refunds::ReaderRefundStep;
use readerd::payments::refunds::{RefundRecord, RefundStatus, REFUND_METADATA};
use readerd::payments::Status;
use readerd::stripe::params::{CreateRefund, RefundPayment};
use readerd::stripe::wire::{ActionStatus, ActionType};
use readerd::stripe::RequestOptions;
use std::time::Duration;

fn count(env: &Env, suffix: &str) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(suffix) && r.status == 200)
        .count()
}

/// A succeeded payment of the bakery (a direct charge) of 1000.
async fn paid(env: &Env) -> String {
    let r = env.readers[0].clone();
    let p = bakery_payment(env, &r);
    paid_on_reader(env, &r, &p.id).await;
    p.id
}

async fn on_reader(env: &Env, pay: &str, amount: Option<i64>) -> RefundRecord {
    env.engine
        .refund_on_reader(pay, amount, None, None, "t", None)
        .await
        .unwrap()
        .1
}

async fn wait_refund(
    env: &Env,
    pay: &str,
    id: &str,
    what: &str,
    f: impl Fn(&RefundRecord) -> bool,
) -> RefundRecord {
    for _ in 0..2000 {
        let r = env.engine.refund_record(pay, id).unwrap().unwrap();
        if f(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = env.engine.refund_record(pay, id).unwrap().unwrap();
    panic!("refund never {what}: {r:#?}");
}

async fn wait_waiting(env: &Env, pay: &str, id: &str) -> RefundRecord {
    wait_refund(env, pay, id, "on the reader", |r| {
        r.on_reader.as_ref().unwrap().step == ReaderRefundStep::OnReader
    })
    .await
}

async fn wait_final(env: &Env, pay: &str, id: &str, s: RefundStatus) -> RefundRecord {
    wait_refund(env, pay, id, s.as_str(), |r| r.status == s).await
}

#[tokio::test]
async fn a_refund_on_the_reader_is_pending_until_the_card_then_made_on_the_merchants_account() {
    let env = env().await;
    let r = env.readers[0].clone();
    let pay = paid(&env).await;
    let rf = on_reader(&env, &pay, Some(400)).await;
    assert_eq!(rf.status, RefundStatus::Pending);
    assert_eq!(
        rf.on_reader.as_ref().unwrap().reader,
        r,
        "the payment's reader"
    );
    let rf = wait_waiting(&env, &pay, &rf.id).await;
    assert_eq!(rf.status, RefundStatus::Pending);
    // The key it was sent with was on disk first.
    let sent = env
        .sim
        .requests()
        .into_iter()
        .find(|q| q.path.ends_with("/refund_payment"))
        .unwrap();
    assert_eq!(
        sent.idempotency_key.as_deref(),
        Some(rf.stripe_key.as_str())
    );

    // While it waits, it counts: an ordinary refund that would exceed what is left is
    // refused, one within it goes through.
    match env.engine.refund(&pay, Some(700), "t", None).await {
        Err(PaymentError::Invalid { code, message }) => {
            assert_eq!(code, "refund_too_large");
            assert!(message.contains("600"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&env, "/v1/refunds"), 0, "refused before Stripe");
    // Another on-reader refund is held to the same rule.
    assert!(env
        .engine
        .refund_on_reader(&pay, Some(700), None, None, "t", None)
        .await
        .is_err());

    env.sim.present_card(&r, None).unwrap();
    let rf = wait_final(&env, &pay, &rf.id, RefundStatus::Succeeded).await;
    let re = rf.refund.clone().expect("Stripe's refund");
    let p = env.engine.get(&pay).unwrap().unwrap();
    assert_eq!(p.amount_refunded, 400);
    // A direct charge: the refund is on the bakery's account, named by our metadata.
    let theirs = env
        .stripe
        .list_refunds(
            p.payment_intent.as_deref().unwrap(),
            &RequestOptions::account(&env.accounts["bakery"]),
        )
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].id, re);
    assert_eq!(theirs[0].amount, 400);
    assert_eq!(theirs[0].metadata[REFUND_METADATA], rf.id);
    // Never sent with POST /v1/refunds as well.
    assert_eq!(count(&env, "/v1/refunds"), 0);
    assert_eq!(count(&env, "/refund_payment"), 1);
    // The rest is refundable as usual.
    let (_, rest) = env.engine.refund(&pay, None, "t", None).await.unwrap();
    assert_eq!((rest.amount, rest.status), (600, RefundStatus::Succeeded));
}

#[tokio::test]
async fn a_destination_charge_refund_on_the_reader_reverses_the_transfer() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = env
        .engine
        .create(req("florist", &r, 2000, CaptureMode::Automatic), "t", None)
        .unwrap();
    paid_on_reader(&env, &r, &p.id).await;
    let rf = on_reader(&env, &p.id, Some(500)).await;
    assert!(rf.reverse_transfer, "decided as for any refund");
    wait_waiting(&env, &p.id, &rf.id).await;
    let reader = env.stripe.retrieve_reader(&r).await.unwrap();
    let action = reader.action.unwrap().refund_payment.unwrap();
    assert_eq!(action.reverse_transfer, Some(true));
    assert_eq!(action.refund_application_fee, Some(true));
    env.sim.present_card(&r, None).unwrap();
    let rf = wait_final(&env, &p.id, &rf.id, RefundStatus::Succeeded).await;
    let p = env.engine.get(&p.id).unwrap().unwrap();
    let refunds = env
        .stripe
        .list_refunds(
            p.payment_intent.as_deref().unwrap(),
            &RequestOptions::platform(),
        )
        .await
        .unwrap();
    assert_eq!(refunds[0].id, rf.refund.unwrap());
    assert!(
        refunds[0].transfer_reversal.is_some(),
        "the merchant bears its share"
    );
}

#[tokio::test]
async fn past_our_deadline_the_refund_fails_and_its_amount_is_free_again() {
    let cfg = EngineConfig {
        action_deadline: Duration::from_millis(300),
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let pay = paid(&env).await;
    let rf = on_reader(&env, &pay, None).await;
    assert_eq!(rf.amount, 1000);
    let rf = wait_final(&env, &pay, &rf.id, RefundStatus::Failed).await;
    assert_eq!(
        rf.on_reader.unwrap().failure.unwrap().code,
        "customer_timeout"
    );
    assert_eq!(count(&env, "/cancel_action"), 1);
    assert!(env
        .stripe
        .retrieve_reader(&r)
        .await
        .unwrap()
        .action
        .is_none());
    let (_, again) = env.engine.refund(&pay, None, "t", None).await.unwrap();
    assert_eq!(again.amount, 1000, "the whole amount is free again");
}

#[tokio::test]
async fn a_cancel_from_the_point_of_sale_clears_our_action() {
    let env = env().await;
    let r = env.readers[0].clone();
    let pay = paid(&env).await;
    let rf = on_reader(&env, &pay, Some(300)).await;
    wait_waiting(&env, &pay, &rf.id).await;
    let asked = env.engine.cancel_reader_refund(&pay, &rf.id).await.unwrap();
    assert!(asked.on_reader.unwrap().cancel_requested);
    let rf = wait_final(&env, &pay, &rf.id, RefundStatus::Canceled).await;
    assert_eq!(count(&env, "/cancel_action"), 1);
    assert!(env
        .stripe
        .retrieve_reader(&r)
        .await
        .unwrap()
        .action
        .is_none());
    // Final: a second cancel is a conflict; nothing was refunded.
    assert!(env.engine.cancel_reader_refund(&pay, &rf.id).await.is_err());
    assert_eq!(env.engine.get(&pay).unwrap().unwrap().amount_refunded, 0);
}

#[tokio::test]
async fn a_queued_refund_canceled_never_reaches_the_reader() {
    let env = env().await;
    let r = env.readers[0].clone();
    let pay = paid(&env).await;
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    let rf = on_reader(&env, &pay, Some(300)).await;
    let rf = env.engine.cancel_reader_refund(&pay, &rf.id).await.unwrap();
    assert_eq!(rf.status, RefundStatus::Canceled);
    env.sim.present_card(&r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::Succeeded).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&env, "/refund_payment"), 0);
}

#[tokio::test]
async fn a_reader_busy_with_someone_elses_action_is_waited_for_never_canceled() {
    let cfg = EngineConfig {
        busy_wait: Duration::from_millis(500),
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let pay = paid(&env).await;
    let foreign = start_foreign_payment(&env.stripe, &env.accounts["bakery"], &r, "foreign").await;
    let rf = on_reader(&env, &pay, Some(300)).await;
    let rf = wait_final(&env, &pay, &rf.id, RefundStatus::Failed).await;
    assert_eq!(rf.on_reader.unwrap().failure.unwrap().code, "reader_busy");
    assert_eq!(count(&env, "/cancel_action"), 0);
    let a = env
        .stripe
        .retrieve_reader(&r)
        .await
        .unwrap()
        .action
        .unwrap();
    assert_eq!(a.kind, ActionType::ProcessPaymentIntent);
    assert_eq!(a.status, ActionStatus::InProgress);
    assert_eq!(a.payment_intent_id(), Some(foreign.id.as_str()));
}

#[tokio::test]
async fn stripes_refusal_fails_the_refund() {
    let env = env().await;
    let pay = paid(&env).await;
    let p = env.engine.get(&pay).unwrap().unwrap();
    // Refunded behind readerd's back (the Dashboard): Stripe has less left than readerd.
    env.stripe
        .create_refund(
            &CreateRefund {
                payment_intent: p.payment_intent.clone().unwrap(),
                amount: Some(800),
                reason: None,
                metadata: Default::default(),
                reverse_transfer: false,
                refund_application_fee: false,
            },
            &RequestOptions::account(&env.accounts["bakery"]),
        )
        .await
        .unwrap();
    let rf = on_reader(&env, &pay, Some(500)).await;
    let rf = wait_final(&env, &pay, &rf.id, RefundStatus::Failed).await;
    assert_eq!(
        rf.on_reader.unwrap().failure.unwrap().code,
        "amount_too_large"
    );
}

#[tokio::test]
async fn the_emulator_refuses_a_refund_of_a_payment_that_did_not_succeed() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = env
        .engine
        .create(req("bakery", &r, 1000, CaptureMode::Manual), "t", None)
        .unwrap();
    paid_on_reader_manual(&env, &r, &p.id).await;
    let p = env.engine.get(&p.id).unwrap().unwrap();
    // readerd refuses it first…
    assert!(env
        .engine
        .refund_on_reader(&p.id, None, None, None, "t", None)
        .await
        .is_err());
    // …and so does Stripe.
    let err = env
        .stripe
        .refund_payment(
            &r,
            &RefundPayment {
                payment_intent: p.payment_intent.clone().unwrap(),
                amount: Some(100),
                metadata: Default::default(),
                reverse_transfer: false,
                refund_application_fee: false,
            },
            &RequestOptions::platform(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("charge_not_refundable"));
}

async fn paid_on_reader_manual(env: &Env, reader: &str, id: &str) {
    wait_on_reader(env, id).await;
    env.sim.present_card(reader, None).unwrap();
    wait_status(&env.engine, id, Status::RequiresCapture).await;
}

#[tokio::test]
async fn the_emulator_reports_the_refund_in_its_events_and_refuses_a_busy_reader() {
    let env = env().await;
    let r = env.readers[0].clone();
    let pay = paid(&env).await;
    let p = env.engine.get(&pay).unwrap().unwrap();
    let ask = |amount: i64| RefundPayment {
        payment_intent: p.payment_intent.clone().unwrap(),
        amount: Some(amount),
        metadata: Default::default(),
        reverse_transfer: false,
        refund_application_fee: false,
    };
    // More than the charge: refused before the reader is touched.
    let err = env
        .stripe
        .refund_payment(&r, &ask(5000), &RequestOptions::platform())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("amount_too_large"));
    let reader = env
        .stripe
        .refund_payment(&r, &ask(100), &RequestOptions::platform())
        .await
        .unwrap();
    let a = reader.action.unwrap();
    assert_eq!(
        (a.kind, a.status),
        (ActionType::RefundPayment, ActionStatus::InProgress)
    );
    // One action at a time.
    let err = env
        .stripe
        .refund_payment(&r, &ask(100), &RequestOptions::platform())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("terminal_reader_busy"));
    let reader = env.sim.present_card(&r, None).unwrap();
    let a = reader.action.unwrap();
    assert_eq!(a.status, ActionStatus::Succeeded);
    let re = a.refund_payment.unwrap().refund.unwrap().id().to_string();
    let events = env.sim.events();
    let last = events
        .iter()
        .rev()
        .find(|e| e.kind.starts_with("terminal.reader.action_"))
        .unwrap();
    assert_eq!(last.kind, "terminal.reader.action_succeeded");
    assert!(events.iter().any(|e| e.kind == "charge.refunded"));
    let on_books = env
        .stripe
        .list_refunds(
            p.payment_intent.as_deref().unwrap(),
            &RequestOptions::account(&env.accounts["bakery"]),
        )
        .await
        .unwrap();
    assert_eq!(on_books[0].id, re);
    assert_eq!(on_books[0].amount, 100);
}

#[tokio::test]
async fn a_customer_who_cancels_on_the_reader_fails_the_refund() {
    let env = env().await;
    let r = env.readers[0].clone();
    let pay = paid(&env).await;
    let rf = on_reader(&env, &pay, Some(300)).await;
    wait_waiting(&env, &pay, &rf.id).await;
    env.sim.customer_cancel(&r).unwrap();
    let rf = wait_final(&env, &pay, &rf.id, RefundStatus::Failed).await;
    assert_eq!(
        rf.on_reader.unwrap().failure.unwrap().code,
        "customer_canceled"
    );
    assert_eq!(env.engine.get(&pay).unwrap().unwrap().amount_refunded, 0);
}
