//! Review before confirm (`"flow": "review"`) through the engine against the emulator: the
//! card read and shown, a surcharge within the merchant's limit on Stripe's books, a
//! surcharge over it refused, a decline at the confirm, a point of sale that never confirms,
//! a customer who walks away, a cancel, and a reader busy with someone else's action.

use crate::common::start_foreign_payment;
use crate::payments_flow::{
    bakery_payment, env, env_with, fast_config, instant_sim, req, wait_on_reader, wait_status,
    wait_until, Env,
};
use readerd::payments::engine::{EngineConfig, PaymentError};
use readerd::payments::machine::PaymentFlow;
use readerd::payments::{CaptureMode, Payment, Status};
use readerd::stripe::wire::{ActionStatus, ActionType, PaymentIntentStatus};
use readerd::stripe::RequestOptions;
use std::time::Duration;

fn reviewed(env: &Env, reader: &str, amount: i64) -> Payment {
    let mut r = req("bakery", reader, amount, CaptureMode::Automatic);
    r.flow = Some(PaymentFlow::Review);
    env.engine.create(r, "t", None).unwrap()
}

/// A reviewed payment whose card (`number`, the default Visa when `None`) was read.
async fn read_card(env: &Env, reader: &str, amount: i64, number: Option<&str>) -> Payment {
    let p = reviewed(env, reader, amount);
    wait_on_reader(env, &p.id).await;
    env.sim.present_card(reader, number).unwrap();
    wait_until(&env.engine, &p.id, "showing its card", |p| {
        p.status == Status::RequiresConfirmation && p.card.is_some()
    })
    .await
}

fn count(env: &Env, suffix: &str) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(suffix) && r.status == 200)
        .count()
}

async fn intent_amount(env: &Env, p: &Payment) -> (i64, PaymentIntentStatus, i64) {
    let pi = env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &[],
            &RequestOptions::account(&env.accounts["bakery"]),
        )
        .await
        .unwrap();
    (pi.amount, pi.status, pi.amount_received)
}

#[tokio::test]
async fn a_reviewed_payment_with_a_surcharge_is_paid_amount_plus_surcharge() {
    let env = env().await;
    env.dir.set_surcharge_max("bakery", 200);
    let r = env.readers[0].clone();
    let p = read_card(&env, &r, 1000, None).await;
    let card = p.card.clone().unwrap();
    assert_eq!(card.brand.as_deref(), Some("visa"));
    assert_eq!(card.last4.as_deref(), Some("4242"));
    assert_eq!(card.funding.as_deref(), Some("credit"));
    assert!(p.review_until.is_some());
    // Read, not authorised, and the reader is held: nothing else was sent to it.
    assert_eq!(count(&env, "/collect_payment_method"), 1);
    assert_eq!(count(&env, "/process_payment_intent"), 0);
    let (amount, status, _) = intent_amount(&env, &p).await;
    assert_eq!(
        (amount, status),
        (1000, PaymentIntentStatus::RequiresConfirmation)
    );
    let other = bakery_payment(&env, &r);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        env.engine.get(&other.id).unwrap().unwrap().status,
        Status::Queued
    );

    let asked = env.engine.confirm(&p.id, Some(150)).await.unwrap();
    assert!(asked.confirm.is_some());
    let p = wait_status(&env.engine, &p.id, Status::Succeeded).await;
    assert_eq!(p.surcharge, Some(150));
    assert_eq!(p.amount_captured, 1150);
    // On the emulator's books: the PaymentIntent's amount is the amount plus the surcharge.
    let (amount, status, received) = intent_amount(&env, &p).await;
    assert_eq!(
        (amount, status, received),
        (1150, PaymentIntentStatus::Succeeded, 1150)
    );
    assert_eq!(count(&env, "/confirm_payment_intent"), 1);
    // The amount was updated (with the key on disk) before the confirm was sent.
    let reqs = env.sim.requests();
    let update = reqs
        .iter()
        .position(|q| q.path.ends_with(p.payment_intent.as_deref().unwrap()) && q.method == "POST")
        .unwrap();
    let confirm = reqs
        .iter()
        .position(|q| q.path.ends_with("/confirm_payment_intent"))
        .unwrap();
    assert!(update < confirm);
    assert_eq!(
        reqs[update].idempotency_key.as_deref(),
        Some(p.confirm.as_ref().unwrap().update_key.as_str())
    );
    // Then the next payment has the reader.
    wait_on_reader(&env, &other.id).await;
}

#[tokio::test]
async fn a_surcharge_over_the_merchants_limit_is_refused_and_changes_nothing() {
    let env = env().await;
    env.dir.set_surcharge_max("bakery", 100);
    let r = env.readers[0].clone();
    let p = read_card(&env, &r, 1000, None).await;
    let err = env.engine.confirm(&p.id, Some(101)).await.unwrap_err();
    assert!(
        matches!(
            err,
            PaymentError::Invalid {
                code: "surcharge_too_high",
                ..
            }
        ),
        "{err:?}"
    );
    let negative = env.engine.confirm(&p.id, Some(-1)).await.unwrap_err();
    assert!(matches!(negative, PaymentError::Invalid { .. }));
    let after = env.engine.get(&p.id).unwrap().unwrap();
    assert_eq!(after.status, Status::RequiresConfirmation);
    assert_eq!(after.confirm, None);
    assert_eq!(count(&env, "/confirm_payment_intent"), 0);
    assert_eq!(intent_amount(&env, &p).await.0, 1000);
    // Without a surcharge it goes through.
    env.engine.confirm(&p.id, None).await.unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Succeeded).await;
    assert_eq!((p.amount_captured, p.surcharge), (1000, None));
}

#[tokio::test]
async fn a_payment_taken_on_the_reader_cannot_be_confirmed() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    let err = env.engine.confirm(&p.id, None).await.unwrap_err();
    assert!(matches!(err, PaymentError::Conflict { .. }), "{err:?}");
}

#[tokio::test]
async fn a_declined_confirm_follows_the_decline_and_retry_rules() {
    let env = env().await;
    env.dir.set_surcharge_max("bakery", 500);
    let r = env.readers[0].clone();
    let p = read_card(&env, &r, 1000, Some("4000000000009995")).await;
    env.engine.confirm(&p.id, Some(100)).await.unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Declined).await;
    assert_eq!(p.failure.as_ref().unwrap().code, "insufficient_funds");
    // Retry: the card is read again and reviewed again.
    env.engine.retry(&p.id).await.unwrap();
    wait_on_reader(&env, &p.id).await;
    env.sim.present_card(&r, None).unwrap();
    let p = wait_until(&env.engine, &p.id, "reviewed again", |p| {
        p.status == Status::RequiresConfirmation && p.card.is_some()
    })
    .await;
    assert_eq!(p.confirm, None);
    // Confirmed this time without the surcharge: the amount goes back to what was asked.
    env.engine.confirm(&p.id, None).await.unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Succeeded).await;
    assert_eq!(p.amount_captured, 1000);
    assert_eq!(intent_amount(&env, &p).await.0, 1000);
}

#[tokio::test]
async fn an_unconfirmed_payment_is_canceled_after_the_review_timeout_and_the_reader_freed() {
    let cfg = EngineConfig {
        review_timeout: Duration::from_millis(400),
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let p = read_card(&env, &r, 1000, None).await;
    let other = bakery_payment(&env, &r);
    let p = wait_status(&env.engine, &p.id, Status::Canceled).await;
    assert_eq!(p.failure.as_ref().unwrap().code, "review_timeout");
    assert_eq!(
        intent_amount(&env, &p).await.1,
        PaymentIntentStatus::Canceled
    );
    assert_eq!(count(&env, "/confirm_payment_intent"), 0);
    // A confirm now is too late.
    assert!(env.engine.confirm(&p.id, None).await.is_err());
    wait_on_reader(&env, &other.id).await;
}

#[tokio::test]
async fn a_customer_who_walks_away_before_the_card_is_read_ends_the_payment() {
    let cfg = EngineConfig {
        action_deadline: Duration::from_millis(300),
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let p = reviewed(&env, &r, 1000);
    let p = wait_until(&env.engine, &p.id, "final", |p| p.status.is_final()).await;
    assert_eq!(p.status, Status::Failed);
    assert_eq!(p.failure.as_ref().unwrap().code, "timeout");
    assert_eq!(count(&env, "/collect_payment_method"), 1);
    assert!(count(&env, "/cancel_action") >= 1);
}

#[tokio::test]
async fn a_customer_who_cancels_on_the_reader_cancels_the_payment() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = reviewed(&env, &r, 1000);
    wait_on_reader(&env, &p.id).await;
    env.sim.customer_cancel(&r).unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Canceled).await;
    assert_eq!(p.failure.as_ref().unwrap().code, "customer_canceled");
}

#[tokio::test]
async fn a_cancel_from_the_point_of_sale_while_reviewing_cancels_and_frees_the_reader() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = read_card(&env, &r, 1000, None).await;
    let other = bakery_payment(&env, &r);
    let asked = env.engine.cancel(&p.id).await.unwrap();
    assert!(asked.cancel_requested);
    let p = wait_status(&env.engine, &p.id, Status::Canceled).await;
    assert_eq!(
        intent_amount(&env, &p).await.1,
        PaymentIntentStatus::Canceled
    );
    assert_eq!(count(&env, "/confirm_payment_intent"), 0);
    wait_on_reader(&env, &other.id).await;
}

#[tokio::test]
async fn a_reader_busy_with_someone_elses_action_is_waited_for_never_canceled() {
    let cfg = EngineConfig {
        busy_wait: Duration::from_millis(500),
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let foreign = start_foreign_payment(&env.stripe, &env.accounts["bakery"], &r, "foreign").await;
    let p = reviewed(&env, &r, 1000);
    let p = wait_until(&env.engine, &p.id, "final", |p| p.status.is_final()).await;
    assert_eq!(p.failure.as_ref().unwrap().code, "reader_busy");
    assert_eq!(count(&env, "/cancel_action"), 0);
    assert_eq!(count(&env, "/collect_payment_method"), 0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_and_the_pay_command_a_card_is_reviewed_then_confirmed_or_canceled() {
    use crate::payments_api::{pos_token, start, ADMIN};
    use readerd::sim::SimConfig;
    use reqwest::StatusCode;
    use serde_json::json;
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        auto_present: Some(Duration::from_millis(200)),
        ..SimConfig::default()
    })
    .await;
    // The merchant's surcharge limit is its own setting.
    let (s, m) = api
        .post(
            ADMIN,
            "/v1/merchants",
            json!({"id": "bakery", "account": api.accounts["bakery"], "charge_type": "direct", "surcharge_max": 200}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["surcharge_max"], 200);
    let (s, b) = api
        .post(
            ADMIN,
            "/v1/merchants",
            json!({"id": "bakery", "account": api.accounts["bakery"], "surcharge_max": -1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // Over HTTP: the card is shown, a surcharge over the limit is a 400 that changes nothing.
    let tok = pos_token("bakery");
    let (s, p) = api
        .post(
            &tok,
            "/v1/payments",
            json!({"merchant": "bakery", "reader": "till-1", "amount": 1000, "currency": "eur", "flow": "review"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["flow"], "review");
    let id = p["id"].as_str().unwrap().to_string();
    let mut shown = json!(null);
    for _ in 0..500 {
        let (_, p) = api.get(&tok, &format!("/v1/payments/{id}")).await;
        if p["status"] == "requires_confirmation" && p["card"].is_object() {
            shown = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shown["card"]["brand"], "visa", "{shown}");
    assert!(shown["review_until"].is_string(), "{shown}");
    let (s, e) = api
        .post(
            &tok,
            &format!("/v1/payments/{id}/confirm"),
            json!({"surcharge": 201}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "surcharge_too_high");
    let (_, after) = api.get(&tok, &format!("/v1/payments/{id}")).await;
    assert_eq!(after["status"], "requires_confirmation");
    let (s, _) = api
        .post(&tok, &format!("/v1/payments/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);

    // The pay command: the card shown, confirmed without asking, with a surcharge.
    let run = |args: Vec<&str>| {
        let url = api.url.clone();
        let args: Vec<String> = args.into_iter().map(str::to_string).collect();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_readerd"))
                .args(&args)
                .args(["--api", &url])
                .env("READERD_TOKEN", pos_token("bakery"))
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .unwrap()
        }
    };
    let pay = [
        "pay",
        "--merchant",
        "bakery",
        "--reader",
        "till-1",
        "--amount",
        "1000",
        "--currency",
        "eur",
        "--review",
    ];
    let mut yes = pay.to_vec();
    yes.extend(["--surcharge", "150", "--yes"]);
    let ok = run(yes).await;
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("card read: visa •••• 4242 (credit)"), "{out}");
    assert!(
        out.contains("confirmed: 10.00 EUR + 1.50 EUR surcharge"),
        "{out}"
    );
    assert!(out.contains("succeeded: 11.50 EUR captured"), "{out}");
    // No terminal to ask on and no --yes: the reviewed payment is canceled.
    let no = run(pay.to_vec()).await;
    let out = String::from_utf8_lossy(&no.stdout);
    assert!(!no.status.success(), "{out}");
    assert!(out.contains("canceling"), "{out}");
    assert!(
        out.lines().last().unwrap_or("").starts_with("canceled"),
        "{out}"
    );
}

#[tokio::test]
async fn while_webhooks_track_payments_action_updated_shows_the_card_with_no_reader_read() {
    use crate::payments_events::{courier, paid, slow_safety_net};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let env = Arc::new(env_with(instant_sim(), slow_safety_net(), 1).await);
    env.dir.set_surcharge_max("bakery", 200);
    courier(&env, Arc::new(AtomicBool::new(true)));
    paid(&env).await;
    assert!(env.engine.webhooks_tracking());
    env.sim.reset_requests();
    let r = env.readers[0].clone();
    let p = reviewed(&env, &r, 1000);
    for _ in 0..500 {
        if count(&env, "/collect_payment_method") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    env.sim.present_card(&r, Some("5555555555554444")).unwrap();
    let p = wait_until(&env.engine, &p.id, "showing its card", |p| {
        p.status == Status::RequiresConfirmation && p.card.is_some()
    })
    .await;
    assert_eq!(
        p.card.as_ref().unwrap().brand.as_deref(),
        Some("mastercard")
    );
    assert!(env
        .sim
        .events()
        .iter()
        .any(|e| e.kind == "terminal.reader.action_updated"));
    // The card came with the event: the reader was never read.
    let reader_reads = env
        .sim
        .requests()
        .iter()
        .filter(|q| q.method == "GET" && q.path.contains("/terminal/readers/"))
        .count();
    assert_eq!(reader_reads, 0);
    env.engine.confirm(&p.id, Some(200)).await.unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Succeeded).await;
    assert_eq!(p.amount_captured, 1200);
}
