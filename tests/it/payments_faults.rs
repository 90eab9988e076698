//! The payment flow against Stripe answers that only some integrations ever see: a 5xx
//! stored under the idempotency key, the platform-owned-reader preview missing, a reader
//! whose location is not in the country of the account receiving the funds.

use crate::common::{create_location, register_reader};
use crate::payments_flow::{
    bakery_intents, bakery_payment, env_with, fast_config, instant_sim, paid_on_reader, req,
    wait_on_reader, wait_status, with_faults,
};
use readerd::payments::engine::PaymentError;
use readerd::payments::{CaptureMode, ReaderInfo, Status};
use readerd::sim::{FaultKind, FaultRule, Faults, SimConfig};
use readerd::stripe::wire::PaymentIntentStatus;
use readerd::stripe::RequestOptions;

fn stored_5xx(path: &str, executed: bool) -> SimConfig {
    with_faults(vec![FaultRule::new(FaultKind::ErrorStored, "POST", path)
        .executed(executed)
        .times(1)])
}

#[tokio::test(start_paused = true)]
async fn a_stored_5xx_on_creation_leaves_one_intent_whether_or_not_it_was_created() {
    for executed in [true, false] {
        let env = env_with(
            stored_5xx("/v1/payment_intents", executed),
            fast_config(),
            1,
        )
        .await;
        let r = env.readers[0].clone();
        let p = bakery_payment(&env, &r);
        let p = paid_on_reader(&env, &r, &p.id).await;
        let acct = &env.accounts["bakery"];
        assert_eq!(
            env.sim.payment_intent_count(Some(acct)),
            1,
            "executed {executed}"
        );
        let log = env.sim.requests();
        let creates: Vec<_> = log
            .iter()
            .filter(|q| q.method == "POST" && q.path == "/v1/payment_intents")
            .collect();
        // The stored failure sent the flow to look for its PaymentIntent by metadata
        // before anything else.
        assert!(
            log.iter()
                .any(|q| q.method == "GET" && q.path == "/v1/payment_intents"),
            "{log:?}"
        );
        if executed {
            // Found: never created again.
            assert_eq!(creates.len(), 1, "{creates:?}");
        } else {
            // Not found: created once more, with a new key (the old one only replays).
            assert_eq!(creates.len(), 2, "{creates:?}");
            assert_ne!(creates[0].idempotency_key, creates[1].idempotency_key);
            assert_eq!(creates[1].status, 200);
        }
        let pi = p.payment_intent.clone().unwrap();
        let intent = env
            .stripe
            .retrieve_payment_intent(&pi, &[], &RequestOptions::account(acct.as_str()))
            .await
            .unwrap();
        assert_eq!(intent.status, PaymentIntentStatus::Succeeded);
        assert_eq!(intent.metadata.get("readerd_payment"), Some(&p.id));
    }
}

#[tokio::test(start_paused = true)]
async fn a_stored_5xx_on_dispatch_is_resolved_on_the_reader_and_the_payment_finishes() {
    for executed in [true, false] {
        let env = env_with(
            stored_5xx("/v1/terminal/readers/*/process_payment_intent", executed),
            fast_config(),
            1,
        )
        .await;
        let r = env.readers[0].clone();
        let p = bakery_payment(&env, &r);
        paid_on_reader(&env, &r, &p.id).await;
        assert_eq!(bakery_intents(&env), 1);
        let taken: Vec<_> = env
            .sim
            .requests()
            .into_iter()
            .filter(|q| q.path.ends_with("/process_payment_intent"))
            .collect();
        // Done: the reader had it, nothing re-sent. Not done: re-sent once, new key.
        let expected = if executed { 1 } else { 2 };
        assert_eq!(taken.len(), expected, "executed {executed}: {taken:?}");
        if !executed {
            assert_ne!(taken[0].idempotency_key, taken[1].idempotency_key);
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
        country: Some("FR".into()),
        allowed_merchants: None,
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
    let r = env.readers[0].clone();
    let p = env
        .engine
        .create(req("bakery", &r, amount, CaptureMode::Manual), "t", None)
        .unwrap();
    wait_on_reader(&env, &p.id).await;
    env.sim.present_card(&r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::RequiresCapture).await;
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

#[tokio::test(start_paused = true)]
async fn a_failed_search_after_a_stored_5xx_never_leads_to_a_second_intent() {
    let sim_cfg = with_faults(vec![
        FaultRule::new(FaultKind::ErrorStored, "POST", "/v1/payment_intents").times(1),
        // The search itself fails once, with a 500 Stripe says not to retry.
        FaultRule::new(FaultKind::ErrorStored, "GET", "/v1/payment_intents").times(1),
    ]);
    let env = env_with(sim_cfg, fast_config(), 1).await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    paid_on_reader(&env, &r, &p.id).await;
    assert_eq!(bakery_intents(&env), 1);
}
