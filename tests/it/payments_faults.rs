//! The payment flow against faults and against Stripe answers that only some integrations
//! ever see: a 5xx stored under the idempotency key, server errors, dropped connections,
//! rate limits and reader timeouts on the way to the reader (one table), then the
//! platform-owned-reader preview missing, a reader whose location is not in the country of
//! the account receiving the funds, and stored 5xx on capture, refund and cancel.

use crate::common::{create_location, register_reader};
use crate::payments_flow::{
    authorised_on_reader, bakery_intents, bakery_payment, env_with, fast_config, instant_sim,
    paid_on_reader, req, wait_on_reader, wait_status, with_faults,
};
use readerd::payments::engine::PaymentError;
use readerd::payments::Payment;
use readerd::payments::{CaptureMode, ReaderInfo, Status};
use readerd::sim::{FaultKind, FaultRule, Faults, RequestRecord, SimConfig};
use readerd::stripe::wire::PaymentIntentStatus;
use readerd::stripe::RequestOptions;

const CREATE: &str = "/v1/payment_intents";
const DISPATCH: &str = "/v1/terminal/readers/*/process_payment_intent";

/// A stored 5xx (replayed for the key forever) on the first `POST path`, with the work done
/// on Stripe or not.
fn stored_5xx(path: &str, executed: bool) -> FaultRule {
    FaultRule::new(FaultKind::ErrorStored, "POST", path)
        .executed(executed)
        .times(1)
}

/// The requests the emulator answered or dropped for `method path` (exactly).
fn sent<'a>(log: &'a [RequestRecord], method: &str, path: &str) -> Vec<&'a RequestRecord> {
    log.iter()
        .filter(|q| q.method == method && q.path == path)
        .collect()
}

fn dispatches(log: &[RequestRecord]) -> Vec<&RequestRecord> {
    log.iter()
        .filter(|q| q.path.ends_with("/process_payment_intent"))
        .collect()
}

/// A fault the flow must come through: the bakery's usual payment still ends `succeeded`
/// on the reader, with exactly one PaymentIntent, which Stripe says succeeded and which
/// names the payment; `check` then reads what was sent to Stripe.
struct Survived {
    fault: &'static str,
    rules: Vec<FaultRule>,
    check: fn(&[RequestRecord], &Payment),
}

fn survived() -> Vec<Survived> {
    vec![
        Survived {
            fault: "a stored 5xx on creation, the PaymentIntent created",
            rules: vec![stored_5xx(CREATE, true)],
            check: |log, _| {
                // The stored failure sent the flow to look for its PaymentIntent by
                // metadata before anything else; found, it is never created again.
                assert!(!sent(log, "GET", CREATE).is_empty(), "{log:?}");
                let creates = sent(log, "POST", CREATE);
                assert_eq!(creates.len(), 1, "{creates:?}");
            },
        },
        Survived {
            fault: "a stored 5xx on creation, nothing created",
            rules: vec![stored_5xx(CREATE, false)],
            check: |log, _| {
                assert!(!sent(log, "GET", CREATE).is_empty(), "{log:?}");
                // Not found: created once more, with a new key (the old one only replays).
                let creates = sent(log, "POST", CREATE);
                assert_eq!(creates.len(), 2, "{creates:?}");
                assert_ne!(creates[0].idempotency_key, creates[1].idempotency_key);
                assert_eq!(creates[1].status, 200);
            },
        },
        Survived {
            fault: "a stored 5xx on creation, then a failed search for the PaymentIntent",
            rules: vec![
                FaultRule::new(FaultKind::ErrorStored, "POST", CREATE).times(1),
                // The search itself fails once, with a 500 Stripe says not to retry.
                FaultRule::new(FaultKind::ErrorStored, "GET", CREATE).times(1),
            ],
            // Never a second PaymentIntent: the common checks say it all.
            check: |_, _| {},
        },
        Survived {
            fault: "server errors and dropped connections at creation",
            rules: vec![
                FaultRule::new(FaultKind::Error, "POST", CREATE).times(2),
                FaultRule::new(FaultKind::DropAfter, "POST", CREATE).times(1),
                FaultRule::new(FaultKind::DropBefore, "POST", CREATE).times(1),
            ],
            check: |log, _| {
                // Every attempt replays the one key.
                let creates = sent(log, "POST", CREATE);
                assert!(creates.len() >= 4, "{creates:?}");
                assert!(creates
                    .iter()
                    .all(|q| q.idempotency_key == creates[0].idempotency_key));
            },
        },
        Survived {
            fault: "rate limits on creation and on the reader list",
            rules: vec![
                FaultRule::new(FaultKind::RateLimit, "POST", CREATE).times(2),
                // The pre-flight check and the watch look through the list of the location.
                FaultRule::new(FaultKind::RateLimit, "GET", "/v1/terminal/readers").times(2),
            ],
            check: |log, _| {
                let limited = log.iter().filter(|q| q.status == 429).count();
                assert_eq!(limited, 4);
            },
        },
        Survived {
            fault: "a stored 5xx on dispatch, the action taken by the reader",
            rules: vec![stored_5xx(DISPATCH, true)],
            check: |log, _| {
                // The reader had it: nothing re-sent.
                let taken = dispatches(log);
                assert_eq!(taken.len(), 1, "{taken:?}");
            },
        },
        Survived {
            fault: "a stored 5xx on dispatch, nothing taken",
            rules: vec![stored_5xx(DISPATCH, false)],
            check: |log, _| {
                // Re-sent once, with a new key.
                let taken = dispatches(log);
                assert_eq!(taken.len(), 2, "{taken:?}");
                assert_ne!(taken[0].idempotency_key, taken[1].idempotency_key);
            },
        },
        Survived {
            fault: "a reader timeout that is a false negative",
            rules: vec![FaultRule::new(FaultKind::ReaderTimeout, "POST", DISPATCH).times(1)],
            check: |log, p| {
                let taken = dispatches(log);
                assert_eq!(taken.len(), 1, "the reader had it: not re-sent ({taken:?})");
                assert_eq!(taken[0].fault.as_deref(), Some("reader_timeout"));
                assert!(p
                    .history
                    .iter()
                    .any(|h| h.note.as_deref().is_some_and(|n| n.contains("after all"))));
            },
        },
    ]
}

/// Backoffs and waits run on tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn each_fault_on_the_way_to_the_reader_still_ends_in_one_paid_intent() {
    for case in survived() {
        let fault = case.fault;
        let env = env_with(with_faults(case.rules), fast_config(), 1).await;
        let r = env.readers[0].clone();
        let p = bakery_payment(&env, &r);
        let p = paid_on_reader(&env, &r, &p.id).await;
        assert_eq!(bakery_intents(&env), 1, "{fault}");
        let acct = &env.accounts["bakery"];
        let pi = p.payment_intent.clone().unwrap();
        let intent = env
            .stripe
            .retrieve_payment_intent(&pi, &[], &RequestOptions::account(acct.as_str()))
            .await
            .unwrap();
        assert_eq!(intent.status, PaymentIntentStatus::Succeeded, "{fault}");
        assert_eq!(
            intent.metadata.get("readerd_payment"),
            Some(&p.id),
            "{fault}"
        );
        let log = env.sim.requests();
        let checked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.check)(&log, &p)));
        if let Err(e) = checked {
            eprintln!("fault: {fault}");
            std::panic::resume_unwind(e);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_the_preview_direct_charges_fail_as_account_mismatch_and_destination_works() {
    let sim_cfg = SimConfig {
        platform_owned_readers: false,
        ..instant_sim()
    };
    let env = env_with(sim_cfg, fast_config(), 1).await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    let p = wait_status(&env.engine, &p.id, Status::Failed).await;
    let f = p.failure.clone().unwrap();
    assert_eq!(f.code, "account_mismatch", "{f:?}");
    assert!(f.message.contains("preview"), "{}", f.message);
    assert!(f.message.contains("Stripe-Account"), "{}", f.message);
    assert!(f.message.contains("destination"), "{}", f.message);
    // The PaymentIntent can never be charged: canceled on the merchant's account.
    let acct = &env.accounts["bakery"];
    let intent = env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &[],
            &RequestOptions::account(acct.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(intent.status, PaymentIntentStatus::Canceled);
    assert_eq!(env.sim.payment_intent_count(Some(acct)), 1);
    // A destination-charge merchant needs no preview.
    let q = env
        .engine
        .create(req("florist", &r, 1500, CaptureMode::Automatic), "t", None)
        .unwrap();
    paid_on_reader(&env, &r, &q.id).await;
}

#[tokio::test(start_paused = true)]
async fn a_reader_moved_to_another_country_fails_the_payment_clearly() {
    let env = env_with(instant_sim(), fast_config(), 0).await;
    let loc = create_location(
        &env.stripe,
        "Berlin",
        ["Unter den Linden 1", "10117", "Berlin", "DE"],
        "loc-de",
    )
    .await;
    let reader = register_reader(&env.stripe, "moved", &loc.id, "reader-de").await;
    // The registry still believes the reader is in France (the move is not synced yet).
    env.dir.add_reader(ReaderInfo {
        id: reader.id.clone(),
        label: Some("moved".into()),
        location: None,
        country: Some("FR".into()),
        allowed_merchants: None,
        owner: None,
    });
    for merchant in ["bakery", "florist"] {
        let p = env
            .engine
            .create(
                req(merchant, &reader.id, 1000, CaptureMode::Automatic),
                "t",
                None,
            )
            .unwrap();
        let p = wait_status(&env.engine, &p.id, Status::Failed).await;
        let f = p.failure.clone().unwrap();
        assert_eq!(f.code, "location_country_mismatch", "{merchant}: {f:?}");
        assert!(f.message.contains(&reader.id), "{}", f.message);
    }
}

/// A payment authorised for `amount` (manual capture) on reader 0, with `rules` injected
/// from then on.
async fn authorised(rules: Vec<FaultRule>, amount: i64) -> (crate::payments_flow::Env, String) {
    let env = env_with(instant_sim(), fast_config(), 1).await;
    let p = authorised_on_reader(&env, amount).await;
    env.sim.set_faults(Faults {
        rules,
        ..Faults::default()
    });
    (env, p.id)
}

#[tokio::test(start_paused = true)]
async fn a_stored_5xx_on_capture_ends_in_exactly_one_capture() {
    for executed in [true, false] {
        let rule = FaultRule::new(
            FaultKind::ErrorStored,
            "POST",
            "/v1/payment_intents/*/capture",
        )
        .executed(executed)
        .times(1);
        let (env, id) = authorised(vec![rule], 5000).await;
        let p = env.engine.capture(&id, Some(3000)).await.unwrap();
        assert_eq!(p.status, Status::Succeeded, "executed {executed}");
        assert_eq!(p.amount_captured, 3000);
        // Asked again: the same capture, nothing more on Stripe.
        let again = env.engine.capture(&id, Some(3000)).await.unwrap();
        assert_eq!(again.amount_captured, 3000);
        let ran = env
            .sim
            .requests()
            .into_iter()
            .filter(|q| q.path.ends_with("/capture") && q.status == 200)
            .count();
        assert_eq!(ran, if executed { 0 } else { 1 }, "executed {executed}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stored_5xx_on_a_refund_is_found_or_redone_never_doubled() {
    for executed in [true, false] {
        let (env, id) = authorised(vec![], 1000).await;
        env.engine.capture(&id, None).await.unwrap();
        env.sim.set_faults(Faults {
            rules: vec![
                FaultRule::new(FaultKind::ErrorStored, "POST", "/v1/refunds")
                    .executed(executed)
                    .times(1),
            ],
            ..Faults::default()
        });
        let (p, rec) = env
            .engine
            .refund(&id, Some(300), "t", Some("rf-1"))
            .await
            .unwrap();
        assert!(rec.refund.is_some(), "executed {executed}: {rec:?}");
        assert_eq!(p.amount_refunded, 300);
        // The rest, then nothing more: Stripe holds exactly what readerd shows.
        let (p, _) = env.engine.refund(&id, None, "t", None).await.unwrap();
        assert_eq!(p.amount_refunded, 1000);
        assert!(env.engine.refund(&id, Some(1), "t", None).await.is_err());
        let pi = p.payment_intent.clone().unwrap();
        let on_stripe = env
            .stripe
            .list_refunds(
                &pi,
                &RequestOptions::account(env.accounts["bakery"].as_str()),
            )
            .await
            .unwrap();
        assert_eq!(on_stripe.len(), 2, "executed {executed}: {on_stripe:?}");
        assert_eq!(on_stripe.iter().map(|r| r.amount).sum::<i64>(), 1000);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stored_5xx_on_cancel_still_cancels_an_authorised_payment() {
    let rule = FaultRule::new(
        FaultKind::ErrorStored,
        "POST",
        "/v1/payment_intents/*/cancel",
    )
    .executed(false)
    .times(1);
    let (env, id) = authorised(vec![rule], 1000).await;
    let p = env.engine.cancel(&id).await.unwrap();
    assert_eq!(p.status, Status::Canceled, "{p:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_reader_deleted_on_stripe_fails_its_payments_as_reader_not_found() {
    let env = env_with(instant_sim(), fast_config(), 1).await;
    let r = env.readers[0].clone();
    // Deleted while the payment waits for a card.
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    env.stripe.delete_reader(&r).await.unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Failed).await;
    assert_eq!(
        p.failure.as_ref().unwrap().code,
        "reader_not_found",
        "{p:#?}"
    );
    let intent = env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &[],
            &RequestOptions::account(env.accounts["bakery"].as_str()),
        )
        .await
        .unwrap();
    assert_eq!(intent.status, PaymentIntentStatus::Canceled);
    // A payment for the deleted reader (the registry has not synced yet), on a direct
    // charge: the reader is missing, not the PaymentIntent.
    let q = bakery_payment(&env, &r);
    let q = wait_status(&env.engine, &q.id, Status::Failed).await;
    let f = q.failure.clone().unwrap();
    assert_eq!(f.code, "reader_not_found", "{f:?}");
    assert!(f.message.contains(&r), "{}", f.message);
}

#[tokio::test(start_paused = true)]
async fn a_refund_left_pending_by_an_unreachable_stripe_is_finished_by_the_sweep() {
    let (env, id) = authorised(vec![], 1000).await;
    env.engine.capture(&id, None).await.unwrap();
    // Every refund request is lost before Stripe sees it, until the client gives up.
    env.sim.set_faults(Faults {
        rules: vec![FaultRule::new(FaultKind::DropBefore, "POST", "/v1/refunds")],
        ..Faults::default()
    });
    assert!(env
        .engine
        .refund(&id, Some(400), "t", Some("rf-1"))
        .await
        .is_err());
    // Unknown is not refused: it still counts against what can be refunded.
    assert!(matches!(
        env.engine.refund(&id, Some(700), "t", None).await,
        Err(PaymentError::Invalid {
            code: "refund_too_large",
            ..
        })
    ));
    assert_eq!(env.engine.get(&id).unwrap().unwrap().amount_refunded, 0);
    env.sim.set_faults(Faults::default());
    env.engine.sweep().await;
    let p = env.engine.get(&id).unwrap().unwrap();
    assert_eq!(p.amount_refunded, 400, "{p:#?}");
    let on_stripe = env
        .stripe
        .list_refunds(
            p.payment_intent.as_deref().unwrap(),
            &RequestOptions::account(env.accounts["bakery"].as_str()),
        )
        .await
        .unwrap();
    assert_eq!(on_stripe.len(), 1);
}
