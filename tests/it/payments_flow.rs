//! The payment engine against the emulator: the flow, its hard cases, and what Stripe saw.
//!
//! These drive `payments::Engine` directly (no HTTP API in between) so that each test can
//! reach into the emulator between steps: present a card, inject a fault, start a foreign
//! action. Waits poll the engine's records until a condition holds (bounded, never a
//! timed assertion).

use crate::common::{create_location, register_reader, start_foreign_payment};
use readerd::payments::engine::{CreatePayment, EngineConfig, PaymentError};
use readerd::payments::{
    CaptureMode, ChargeType, Directory, Engine, MerchantInfo, Payment, ReaderInfo, StaticDirectory,
    Status,
};
use readerd::sim::{self, FaultKind, FaultRule, Faults, SimConfig, SimHandle};
use readerd::store::Registry;
use readerd::stripe::wire::CapabilityStatus;
use readerd::stripe::{ClientConfig, RequestOptions, SecretKey, StripeClient};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const DECLINE_INSUFFICIENT: &str = "4000000000009995";

pub struct Env {
    pub sim: SimHandle,
    pub engine: Engine,
    pub stripe: StripeClient,
    pub dir: Arc<StaticDirectory>,
    pub readers: Vec<String>,
    /// merchant id → account
    pub accounts: BTreeMap<String, String>,
}

/// Short timings so that deadlines and waits happen within a test.
pub fn fast_config() -> EngineConfig {
    EngineConfig {
        queue_capacity: 16,
        poll_min: Duration::from_millis(10),
        poll_max: Duration::from_millis(50),
        pickup_timeout: Duration::from_millis(300),
        action_deadline: Duration::from_secs(20),
        busy_wait: Duration::from_secs(20),
        offline_wait: Duration::from_millis(300),
        review_timeout: Duration::from_secs(20),
        create_window: Duration::from_secs(10),
        dispatch_attempts: 3,
        webhook_poll: Duration::from_secs(5),
        webhook_grace: Duration::from_millis(500),
        list_poll: Duration::from_millis(20),
        list_poll_alone: Duration::from_millis(60),
    }
}

pub fn client(base: &str) -> StripeClient {
    let mut c = ClientConfig::new(base, SecretKey::new("sk_test_readerd"));
    c.requests_per_second = 10_000;
    StripeClient::new(c).unwrap()
}

/// An emulator with two FR merchants (`bakery` direct, `florist` destination), one
/// location and `n` simulated readers, and an engine on a temporary store.
pub async fn env_with(sim_cfg: SimConfig, cfg: EngineConfig, n: usize) -> Env {
    let sim = sim::spawn(sim_cfg).await.unwrap();
    let stripe = client(&sim.base_url());
    let dir = Arc::new(StaticDirectory::new());
    let mut accounts = BTreeMap::new();
    for (m, charge_type) in [
        ("bakery", ChargeType::Direct),
        ("florist", ChargeType::Destination),
    ] {
        let acct = sim.create_account("FR", "eur", CapabilityStatus::Active);
        dir.add_merchant(MerchantInfo {
            id: m.into(),
            account: acct.clone(),
            charge_type,
            enabled: true,
            country: Some("FR".into()),
            currency: Some("eur".into()),
            fee: None,
            platform_settles: false,
        });
        accounts.insert(m.to_string(), acct);
    }
    let loc = create_location(
        &stripe,
        "Shop",
        ["1 rue de la Paix", "75002", "Paris", "FR"],
        "loc-1",
    )
    .await;
    let mut readers = Vec::new();
    for i in 0..n {
        let r = register_reader(
            &stripe,
            &format!("till-{i}"),
            &loc.id,
            &format!("reader-{i}"),
        )
        .await;
        dir.add_reader(ReaderInfo {
            id: r.id.clone(),
            label: Some(r.label.clone()),
            location: Some(loc.id.clone()),
            country: Some("FR".into()),
            allowed_merchants: None,
            owner: None,
        });
        readers.push(r.id);
    }
    let engine = Engine::new(
        Registry::temporary().unwrap(),
        stripe.clone(),
        dir.clone(),
        cfg,
        Default::default(),
    );
    engine.start().await.unwrap();
    Env {
        sim,
        engine,
        stripe,
        dir,
        readers,
        accounts,
    }
}

pub async fn env() -> Env {
    env_with(instant_sim(), fast_config(), 1).await
}

/// An emulator whose authorisations finish inside the present call.
pub fn instant_sim() -> SimConfig {
    SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    }
}

/// [`instant_sim`] with these fault rules.
pub fn with_faults(rules: Vec<FaultRule>) -> SimConfig {
    SimConfig {
        faults: Faults {
            rules,
            ..Faults::default()
        },
        ..instant_sim()
    }
}

/// The usual payment: 10.00 EUR for `bakery` on `reader`, captured automatically.
pub fn bakery_payment(env: &Env, reader: &str) -> Payment {
    env.engine
        .create(
            req("bakery", reader, 1000, CaptureMode::Automatic),
            "t",
            None,
        )
        .unwrap()
}

pub fn req(merchant: &str, reader: &str, amount: i64, capture: CaptureMode) -> CreatePayment {
    CreatePayment {
        merchant: merchant.into(),
        reader: reader.into(),
        amount,
        currency: "eur".into(),
        capture,
        description: Some("test".into()),
        metadata: BTreeMap::new(),
        tipping: None,
        flow: None,
        splits: None,
        tip_merchant: None,
    }
}

/// How many PaymentIntents the emulator holds on the bakery's account.
pub fn bakery_intents(env: &Env) -> usize {
    env.sim.payment_intent_count(Some(&env.accounts["bakery"]))
}

/// The usual happy end: once the payment is on `reader`, the customer taps the default
/// test card and the payment succeeds.
pub async fn paid_on_reader(env: &Env, reader: &str, id: &str) -> Payment {
    wait_on_reader(env, id).await;
    env.sim.present_card(reader, None).unwrap();
    wait_status(&env.engine, id, Status::Succeeded).await
}

/// A payment of `amount` for `bakery` with manual capture, authorised on reader 0 with the
/// default test card.
pub async fn authorised_on_reader(env: &Env, amount: i64) -> Payment {
    let r = &env.readers[0];
    let p = env
        .engine
        .create(req("bakery", r, amount, CaptureMode::Manual), "t", None)
        .unwrap();
    wait_on_reader(env, &p.id).await;
    env.sim.present_card(r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::RequiresCapture).await
}

/// Waits (bounded) until the payment satisfies `f`.
pub async fn wait_until(e: &Engine, id: &str, what: &str, f: impl Fn(&Payment) -> bool) -> Payment {
    for _ in 0..2000 {
        let p = e.get(id).unwrap().unwrap();
        if f(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = e.get(id).unwrap().unwrap();
    panic!("payment never became {what}: {p:#?}");
}

pub async fn wait_status(e: &Engine, id: &str, s: Status) -> Payment {
    wait_until(e, id, s.as_str(), |p| p.status == s).await
}

/// Waits until the reader shows our action in progress (the card dialogue is up).
pub async fn wait_on_reader(env: &Env, id: &str) -> Payment {
    wait_until(&env.engine, id, "on the reader", |p| {
        p.status == Status::Processing && p.waiting_for.as_deref() == Some("card")
    })
    .await
}

fn count(env: &Env, method: &str, suffix: &str) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix) && r.status == 200)
        .count()
}

fn present(env: &Env, reader: &str, card: Option<&str>) {
    env.sim.present_card(reader, card).unwrap();
}

#[tokio::test]
async fn automatic_payment_succeeds_with_one_intent_on_the_merchant_account() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = env
        .engine
        .create(
            req("bakery", "till-0", 1250, CaptureMode::Automatic),
            "t",
            None,
        )
        .unwrap();
    assert_eq!(p.status, Status::Queued);
    assert_eq!(p.reader, r, "the label resolves to the reader id");
    let p = paid_on_reader(&env, &r, &p.id).await;
    assert_eq!(p.amount_captured, 1250);
    assert_eq!(p.failure, None);
    let acct = &env.accounts["bakery"];
    assert_eq!(env.sim.payment_intent_count(Some(acct)), 1);
    assert_eq!(env.sim.payment_intent_count(None), 0);
    // What Stripe saw: PI creation on the merchant's account with the persisted key, the
    // reader command on the platform with its own key.
    let reqs = env.sim.requests();
    let create = reqs
        .iter()
        .find(|q| q.method == "POST" && q.path == "/v1/payment_intents")
        .unwrap();
    assert_eq!(create.account.as_deref(), Some(acct.as_str()));
    assert_eq!(
        create.idempotency_key.as_deref(),
        Some(p.intent_key.as_str())
    );
    let ppi = reqs
        .iter()
        .find(|q| q.path.ends_with("/process_payment_intent"))
        .unwrap();
    assert_eq!(ppi.account, None);
    assert!(ppi.idempotency_key.is_some());
    let pi = env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &[],
            &RequestOptions::account(acct),
        )
        .await
        .unwrap();
    assert_eq!(pi.metadata.get("readerd_payment"), Some(&p.id));
    assert_eq!(pi.payment_method_types, ["card_present"]);
    let statuses: Vec<_> = p
        .history
        .iter()
        .filter(|h| h.note.is_none())
        .map(|h| h.status)
        .collect();
    assert_eq!(
        statuses,
        [Status::Queued, Status::Processing, Status::Succeeded]
    );
}

#[tokio::test]
async fn destination_charges_live_on_the_platform_with_a_transfer() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = env
        .engine
        .create(req("florist", &r, 2000, CaptureMode::Automatic), "t", None)
        .unwrap();
    let p = paid_on_reader(&env, &r, &p.id).await;
    assert_eq!(env.sim.payment_intent_count(None), 1);
    let pi = env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &[],
            &RequestOptions::platform(),
        )
        .await
        .unwrap();
    assert_eq!(
        pi.transfer_data
            .as_ref()
            .map(|t| t.destination.id().to_string()),
        Some(env.accounts["florist"].clone())
    );
}

#[tokio::test]
async fn manual_capture_partial_then_refunds_never_exceed_the_capture() {
    let env = env().await;
    let p = authorised_on_reader(&env, 5000).await;
    assert!(p.capture_before.is_some(), "capture_before is kept: {p:?}");
    assert_eq!(p.amount_captured, 0);
    // Over the authorised amount: refused before Stripe.
    assert!(matches!(
        env.engine.capture(&p.id, Some(6000)).await,
        Err(PaymentError::Invalid { .. })
    ));
    let p = env.engine.capture(&p.id, Some(3000)).await.unwrap();
    assert_eq!(p.status, Status::Succeeded);
    assert_eq!(p.amount_captured, 3000);
    // A second capture is the first one again (at most one capture).
    let again = env.engine.capture(&p.id, Some(3000)).await.unwrap();
    assert_eq!(again.amount_captured, 3000);
    assert_eq!(count(&env, "POST", "/capture"), 1);

    let (_, r1) = env
        .engine
        .refund(&p.id, Some(1000), "t", Some("rf-1"))
        .await
        .unwrap();
    let (_, r1b) = env
        .engine
        .refund(&p.id, Some(1000), "t", Some("rf-1"))
        .await
        .unwrap();
    assert_eq!(r1.id, r1b.id, "the same key is the same refund");
    assert!(matches!(
        env.engine.refund(&p.id, Some(2500), "t", None).await,
        Err(PaymentError::Invalid {
            code: "refund_too_large",
            ..
        })
    ));
    let (p, _) = env.engine.refund(&p.id, None, "t", None).await.unwrap();
    assert_eq!(p.amount_refunded, 3000);
    assert_eq!(count(&env, "POST", "/v1/refunds"), 2);
    assert!(env.engine.refund(&p.id, Some(1), "t", None).await.is_err());
}

#[tokio::test]
async fn decline_then_retry_on_the_same_intent() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = env
        .engine
        .create(req("bakery", &r, 1500, CaptureMode::Automatic), "t", None)
        .unwrap();
    wait_on_reader(&env, &p.id).await;
    present(&env, &r, Some(DECLINE_INSUFFICIENT));
    let d = wait_status(&env.engine, &p.id, Status::Declined).await;
    assert_eq!(d.failure.as_ref().unwrap().code, "insufficient_funds");
    // Cannot capture or refund a decline.
    assert!(env.engine.capture(&p.id, None).await.is_err());
    let again = env.engine.retry(&p.id).await.unwrap();
    assert_eq!(again.status, Status::Queued);
    let s = paid_on_reader(&env, &r, &p.id).await;
    assert_eq!(s.payment_intent, d.payment_intent, "same PaymentIntent");
    assert_eq!(bakery_intents(&env), 1);
    let keys: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.path.ends_with("/process_payment_intent"))
        .map(|q| q.idempotency_key.unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "a new key per attempt");
    assert!(
        env.engine.retry(&p.id).await.is_err(),
        "only a decline can be retried"
    );
}

#[tokio::test]
async fn cancel_while_queued_touches_nothing_on_stripe() {
    let env = env().await;
    let r = env.readers[0].clone();
    let first = bakery_payment(&env, &r);
    wait_on_reader(&env, &first.id).await;
    let second = env
        .engine
        .create(req("bakery", &r, 2000, CaptureMode::Automatic), "t", None)
        .unwrap();
    let before = env.sim.requests().len();
    let c = env.engine.cancel(&second.id).await.unwrap();
    assert_eq!(c.status, Status::Canceled);
    assert_eq!(c.payment_intent, None);
    assert_eq!(
        env.sim.requests().len(),
        before,
        "no Stripe call for a queued cancel"
    );
    present(&env, &r, None);
    wait_status(&env.engine, &first.id, Status::Succeeded).await;
    assert_eq!(bakery_intents(&env), 1);
    // A final payment stays final.
    assert!(env.engine.cancel(&first.id).await.is_err());
    assert_eq!(
        env.engine.cancel(&second.id).await.unwrap().status,
        Status::Canceled
    );
}

#[tokio::test]
async fn cancel_on_the_reader_before_the_card_is_confirmed_by_stripe() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    let c = env.engine.cancel(&p.id).await.unwrap();
    assert_eq!(
        c.status,
        Status::Processing,
        "not canceled until Stripe says so"
    );
    assert!(c.cancel_requested);
    let p = wait_status(&env.engine, &p.id, Status::Canceled).await;
    assert_eq!(count(&env, "POST", "/cancel_action"), 1);
    let pi = env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &[],
            &RequestOptions::account(&env.accounts["bakery"]),
        )
        .await
        .unwrap();
    assert_eq!(pi.status.as_str(), "canceled");
    // The reader is free for the next payment.
    let next = bakery_payment(&env, &r);
    wait_on_reader(&env, &next.id).await;
}

#[tokio::test]
async fn cancel_during_authorisation_reports_the_late_authorisation() {
    let sim_cfg = SimConfig {
        auth_delay: Duration::from_millis(600),
        ..SimConfig::default()
    };
    let env = env_with(sim_cfg, fast_config(), 1).await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    present(&env, &r, None); // authorising for 600 ms
    env.engine.cancel(&p.id).await.unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Succeeded).await;
    assert!(p.cancel_requested);
    let notes: Vec<_> = p.history.iter().filter_map(|h| h.note.clone()).collect();
    assert!(
        notes.iter().any(|n| n.contains("being authorised")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("before the cancel")),
        "{notes:?}"
    );
    assert_eq!(
        count(&env, "POST", "/cancel"),
        0,
        "the PaymentIntent was not canceled"
    );
}

#[tokio::test]
async fn a_foreign_action_is_waited_for_and_never_canceled() {
    let env = env().await;
    let r = env.readers[0].clone();
    // Another integration's payment is on the reader.
    start_foreign_payment(&env.stripe, &env.accounts["bakery"], &r, "foreign").await;
    let p = bakery_payment(&env, &r);
    let waiting = wait_until(&env.engine, &p.id, "waiting for the busy reader", |p| {
        p.waiting_for.as_deref() == Some("reader_busy")
    })
    .await;
    assert_eq!(waiting.status, Status::Queued);
    assert_eq!(
        env.engine.reader_live(&r).current.as_deref(),
        Some(p.id.as_str())
    );
    // The foreign customer pays; then ours goes.
    present(&env, &r, None);
    paid_on_reader(&env, &r, &p.id).await;
    let cancels = env
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.path.ends_with("/cancel_action") || q.path.ends_with("/cancel"))
        .count();
    assert_eq!(cancels, 0, "the foreign action was never canceled");
}

#[tokio::test]
async fn stripe_refusing_the_intent_fails_the_payment_with_the_reason() {
    let env = env().await;
    let r = env.readers[0].clone();
    // The registry still thinks the merchant may charge; Stripe knows better.
    env.sim
        .set_capability(&env.accounts["bakery"], CapabilityStatus::Inactive);
    let p = bakery_payment(&env, &r);
    let p = wait_status(&env.engine, &p.id, Status::Failed).await;
    assert_eq!(p.failure.unwrap().code, "merchant_not_enabled");
    assert_eq!(p.payment_intent, None);
    assert_eq!(count(&env, "POST", "/process_payment_intent"), 0);
}

#[tokio::test]
async fn reader_offline_mid_payment_ends_at_the_deadline_with_the_true_outcome() {
    let sim_cfg = with_faults(vec![FaultRule::new(
        FaultKind::OfflineMidAction,
        "POST",
        "/v1/terminal/readers/*/process_payment_intent",
    )
    .times(1)]);
    let cfg = EngineConfig {
        action_deadline: Duration::from_millis(800),
        ..fast_config()
    };
    let env = env_with(sim_cfg, cfg, 1).await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    let p = wait_status(&env.engine, &p.id, Status::Failed).await;
    assert_eq!(p.failure.as_ref().unwrap().code, "reader_offline");
    let notes: Vec<_> = p.history.iter().filter_map(|h| h.note.clone()).collect();
    assert!(
        notes.iter().any(|n| n.contains("not picked")),
        "pickup check: {notes:?}"
    );
    // The PaymentIntent was canceled before the payment was called failed.
    let pi = env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &[],
            &RequestOptions::account(&env.accounts["bakery"]),
        )
        .await
        .unwrap();
    assert_eq!(pi.status.as_str(), "canceled");
    // The reader comes back with our stale action still on it: the next payment clears it.
    env.sim.set_reader_online(&r, true);
    let next = bakery_payment(&env, &r);
    paid_on_reader(&env, &r, &next.id).await;
}

/// Backoffs and waits run on tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn offline_reader_fails_the_payment_after_a_bounded_wait() {
    let env = env().await;
    let r = env.readers[0].clone();
    env.sim.set_reader_online(&r, false);
    let p = bakery_payment(&env, &r);
    let p = wait_status(&env.engine, &p.id, Status::Failed).await;
    assert_eq!(p.failure.as_ref().unwrap().code, "reader_offline");
    assert_eq!(
        count(&env, "POST", "/cancel"),
        1,
        "PaymentIntent canceled first"
    );
}

#[tokio::test]
async fn two_merchants_sharing_a_reader_take_turns() {
    let env = env().await;
    let r = env.readers[0].clone();
    // A blocker keeps the reader busy while both merchants queue up.
    let blocker = bakery_payment(&env, &r);
    wait_on_reader(&env, &blocker.id).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push((
            "bakery",
            env.engine
                .create(
                    req("bakery", &r, 1100 + 100 * i, CaptureMode::Automatic),
                    "t",
                    None,
                )
                .unwrap()
                .id,
        ));
    }
    for i in 0..2 {
        ids.push((
            "florist",
            env.engine
                .create(
                    req("florist", &r, 5000 + 100 * i, CaptureMode::Automatic),
                    "t",
                    None,
                )
                .unwrap()
                .id,
        ));
    }
    assert_eq!(env.engine.reader_live(&r).queue_depth, 6);
    present(&env, &r, None);
    wait_status(&env.engine, &blocker.id, Status::Succeeded).await;
    let mut order = Vec::new();
    for _ in 0..ids.len() {
        let next = loop {
            if let Some((m, id)) = ids.iter().find(|(_, id)| {
                let p = env.engine.get(id).unwrap().unwrap();
                p.status == Status::Processing && p.waiting_for.as_deref() == Some("card")
            }) {
                break (*m, id.clone());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        order.push(next.0);
        present(&env, &r, None);
        wait_status(&env.engine, &next.1, Status::Succeeded).await;
    }
    assert_eq!(
        order,
        ["bakery", "florist", "bakery", "florist", "bakery", "bakery"]
    );
}

#[tokio::test]
async fn a_full_queue_refuses_more() {
    let cfg = EngineConfig {
        queue_capacity: 2,
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let first = bakery_payment(&env, &r);
    wait_on_reader(&env, &first.id).await;
    env.engine
        .create(req("bakery", &r, 1000, CaptureMode::Automatic), "t", None)
        .unwrap();
    env.engine
        .create(req("florist", &r, 1000, CaptureMode::Automatic), "t", None)
        .unwrap();
    assert!(matches!(
        env.engine
            .create(req("bakery", &r, 1000, CaptureMode::Automatic), "t", None),
        Err(PaymentError::QueueFull(_))
    ));
    let live = env.engine.reader_live(&r);
    assert!(live.busy);
    assert_eq!(live.queue_depth, 2);
}

#[tokio::test]
async fn idempotency_key_gives_the_same_payment_and_refuses_another_body() {
    let env = env().await;
    let r = env.readers[0].clone();
    let a = env
        .engine
        .create(
            req("bakery", &r, 1000, CaptureMode::Automatic),
            "pos",
            Some("k1"),
        )
        .unwrap();
    let b = env
        .engine
        .create(
            req("bakery", &r, 1000, CaptureMode::Automatic),
            "pos",
            Some("k1"),
        )
        .unwrap();
    assert_eq!(a.id, b.id);
    assert!(matches!(
        env.engine.create(
            req("bakery", &r, 2000, CaptureMode::Automatic),
            "pos",
            Some("k1")
        ),
        Err(PaymentError::Conflict { .. })
    ));
    // Keys are per client.
    let c = env
        .engine
        .create(
            req("bakery", &r, 1000, CaptureMode::Automatic),
            "other",
            Some("k1"),
        )
        .unwrap();
    assert_ne!(a.id, c.id);
}

#[tokio::test]
async fn a_merchant_without_card_payments_fails_without_touching_stripe() {
    let env = env().await;
    let r = env.readers[0].clone();
    let mut m = env.dir.merchant("bakery").unwrap();
    m.enabled = false;
    env.dir.add_merchant(m);
    let before = env.sim.requests().len();
    let p = bakery_payment(&env, &r);
    assert_eq!(p.status, Status::Failed);
    assert_eq!(p.failure.unwrap().code, "merchant_not_enabled");
    assert_eq!(env.sim.requests().len(), before);
}

#[tokio::test]
async fn a_display_waits_its_turn_and_never_displaces_a_payment() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    let p = wait_on_reader(&env, &p.id).await;
    let cart = readerd::stripe::wire::Cart {
        currency: "eur".into(),
        line_items: vec![readerd::stripe::wire::CartLineItem {
            amount: 500,
            description: "Croissant".into(),
            quantity: 2,
        }],
        tax: None,
        total: 1000,
    };
    env.engine.display(&r, "florist", cart).unwrap();
    assert_eq!(env.engine.reader_live(&r).queue_depth, 1);
    // The payment in flight is untouched: still our action on the reader.
    let reader = env.stripe.retrieve_reader(&r).await.unwrap();
    assert_eq!(
        reader.action.unwrap().payment_intent_id(),
        p.payment_intent.as_deref()
    );
    present(&env, &r, None);
    wait_status(&env.engine, &p.id, Status::Succeeded).await;
    for _ in 0..500 {
        if count(&env, "POST", "/set_reader_display") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(&env, "POST", "/set_reader_display"), 1);
}

#[tokio::test]
async fn on_reader_tip_is_recorded_once() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    env.sim.present_card_with_tip(&r, None, 150).unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Succeeded).await;
    assert_eq!(p.tip, Some(150));
    assert_eq!(p.amount_captured, 1150);
}

#[tokio::test]
async fn connection_error_lets_the_payment_intent_decide() {
    let sim_cfg = SimConfig {
        auth_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    let env = env_with(sim_cfg, fast_config(), 1).await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    let p = wait_on_reader(&env, &p.id).await;
    present(&env, &r, None);
    // The reader loses its link while the authorisation runs; it succeeds on Stripe.
    env.sim.set_reader_online(&r, false);
    let pi = p.payment_intent.clone().unwrap();
    let opts = RequestOptions::account(&env.accounts["bakery"]);
    for _ in 0..500 {
        let intent = env
            .stripe
            .retrieve_payment_intent(&pi, &[], &opts)
            .await
            .unwrap();
        if intent.status.as_str() == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing but the PaymentIntent can have told readerd yet: a lone reader's turn to look
    // at its PaymentIntent may already have recorded the success, never anything else.
    let now = env.engine.get(&p.id).unwrap().unwrap().status;
    assert!(
        matches!(now, Status::Processing | Status::Succeeded),
        "{now:?}"
    );
    // Back online, the reader reports connection_error; the PaymentIntent says succeeded.
    env.sim.set_reader_online(&r, true);
    let reader = env.stripe.retrieve_reader(&r).await.unwrap();
    assert_eq!(
        reader.action.unwrap().failure_code.as_deref(),
        Some("connection_error")
    );
    let p = wait_status(&env.engine, &p.id, Status::Succeeded).await;
    assert_eq!(p.amount_captured, 1000);
}

#[tokio::test]
async fn the_customer_canceling_on_the_reader_cancels_the_payment() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    env.sim.customer_cancel(&r).unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Canceled).await;
    assert_eq!(p.failure.unwrap().code, "customer_canceled");
    assert_eq!(
        count(&env, "POST", "/cancel"),
        1,
        "Stripe confirmed the cancel"
    );
}

#[tokio::test]
async fn a_reader_busy_too_long_fails_the_payment_and_leaves_the_foreign_action_alone() {
    let cfg = EngineConfig {
        busy_wait: Duration::from_millis(500),
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let foreign = start_foreign_payment(&env.stripe, &env.accounts["bakery"], &r, "foreign").await;
    let p = bakery_payment(&env, &r);
    let p = wait_status(&env.engine, &p.id, Status::Failed).await;
    assert_eq!(p.failure.unwrap().code, "reader_busy");
    let reader = env.stripe.retrieve_reader(&r).await.unwrap();
    let a = reader.action.unwrap();
    assert_eq!(a.payment_intent_id(), Some(foreign.id.as_str()));
    assert_eq!(
        a.status.as_str(),
        "in_progress",
        "the foreign payment is untouched"
    );
    assert_eq!(count(&env, "POST", "/cancel_action"), 0);
}

/// The real deadlines (15 s pickup check, 3 min action deadline) on tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn default_deadlines_on_a_paused_clock() {
    let sim_cfg = with_faults(vec![FaultRule::new(
        FaultKind::OfflineMidAction,
        "POST",
        "/v1/terminal/readers/*/process_payment_intent",
    )
    .times(1)]);
    let env = env_with(sim_cfg, EngineConfig::default(), 1).await;
    let r = env.readers[0].clone();
    let started = tokio::time::Instant::now();
    let p = bakery_payment(&env, &r);
    let mut p = p;
    for _ in 0..5000 {
        p = env.engine.get(&p.id).unwrap().unwrap();
        if p.status == Status::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = started.elapsed();
    assert_eq!(p.failure.as_ref().unwrap().code, "reader_offline");
    assert!(
        waited >= EngineConfig::default().action_deadline,
        "{waited:?}"
    );
    let notes: Vec<_> = p.history.iter().filter_map(|h| h.note.clone()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("not picked the payment up after 15 s")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn the_sweep_records_what_stripe_decided_on_its_own() {
    let env = env().await;
    let p = authorised_on_reader(&env, 3000).await;
    // The authorisation is canceled outside readerd (say, from the Dashboard).
    env.stripe
        .cancel_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &Default::default(),
            &RequestOptions::account(&env.accounts["bakery"]).key("dashboard"),
        )
        .await
        .unwrap();
    assert_eq!(env.engine.sweep().await, 1);
    let p = env.engine.get(&p.id).unwrap().unwrap();
    assert_eq!(p.status, Status::Canceled);
    assert!(
        p.history
            .last()
            .unwrap()
            .note
            .as_deref()
            .unwrap()
            .contains("outside")
            || p.history
                .last()
                .unwrap()
                .note
                .as_deref()
                .unwrap()
                .contains("canceled on Stripe")
    );
}

#[tokio::test]
async fn application_fee_and_cancel_after_a_decline() {
    let env = env().await;
    let r = env.readers[0].clone();
    let mut m = env.dir.merchant("bakery").unwrap();
    m.fee = Some(readerd::payments::Fee {
        fixed: 30,
        basis_points: 100,
    });
    env.dir.add_merchant(m);
    let p = env
        .engine
        .create(req("bakery", &r, 2000, CaptureMode::Automatic), "t", None)
        .unwrap();
    assert_eq!(p.application_fee_amount, Some(50));
    let p = wait_on_reader(&env, &p.id).await;
    let opts = RequestOptions::account(&env.accounts["bakery"]);
    let pi = env
        .stripe
        .retrieve_payment_intent(p.payment_intent.as_deref().unwrap(), &[], &opts)
        .await
        .unwrap();
    assert_eq!(pi.application_fee_amount, Some(50));
    present(&env, &r, Some(DECLINE_INSUFFICIENT));
    wait_status(&env.engine, &p.id, Status::Declined).await;
    let c = env.engine.cancel(&p.id).await.unwrap();
    assert_eq!(c.status, Status::Canceled);
    let pi = env
        .stripe
        .retrieve_payment_intent(p.payment_intent.as_deref().unwrap(), &[], &opts)
        .await
        .unwrap();
    assert_eq!(pi.status.as_str(), "canceled");
}

#[tokio::test]
async fn reader_busy_on_dispatch_waits_for_the_other_action_and_never_cancels_it() {
    // Our process_payment_intent is held up in the network long enough for another
    // integration to take the reader first.
    let sim_cfg = with_faults(vec![FaultRule {
        latency_ms: Some(500),
        ..FaultRule::new(
            FaultKind::Latency,
            "POST",
            "/v1/terminal/readers/*/process_payment_intent",
        )
        .times(1)
    }]);
    let env = env_with(sim_cfg, fast_config(), 1).await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_until(&env.engine, &p.id, "dispatching", |p| {
        p.step == readerd::payments::machine::Step::Dispatching
    })
    .await;
    start_foreign_payment(&env.stripe, &env.accounts["bakery"], &r, "foreign").await;
    // Ours was refused busy; it waits behind the foreign payment.
    wait_until(&env.engine, &p.id, "waiting for the busy reader", |p| {
        p.waiting_for.as_deref() == Some("reader_busy")
    })
    .await;
    assert!(env
        .sim
        .requests()
        .iter()
        .any(|q| q.path.ends_with("/process_payment_intent") && q.status == 400));
    present(&env, &r, None); // the foreign customer pays
    let p = paid_on_reader(&env, &r, &p.id).await;
    assert_eq!(
        p.attempt, 2,
        "a new attempt (and key) after the busy refusal"
    );
    assert_eq!(count(&env, "POST", "/cancel_action"), 0);
    assert_eq!(bakery_intents(&env), 2);
}

#[tokio::test]
async fn a_payment_without_tipping_skips_the_tip_screen_and_others_keep_it() {
    let env = env().await;
    let r = env.readers[0].clone();
    let mut no_tip = req("bakery", &r, 1000, CaptureMode::Automatic);
    no_tip.tipping = Some(false);
    let p = env.engine.create(no_tip, "t", None).unwrap();
    assert!(p.skip_tipping);
    wait_on_reader(&env, &p.id).await;
    let action = env
        .stripe
        .retrieve_reader(&r)
        .await
        .unwrap()
        .action
        .unwrap();
    let sent = action.process_payment_intent.unwrap().process_config;
    assert_eq!(sent.and_then(|c| c.skip_tipping), Some(true));
    present(&env, &r, None);
    wait_status(&env.engine, &p.id, Status::Succeeded).await;

    let p = bakery_payment(&env, &r);
    assert!(!p.skip_tipping);
    wait_on_reader(&env, &p.id).await;
    let action = env
        .stripe
        .retrieve_reader(&r)
        .await
        .unwrap()
        .action
        .unwrap();
    assert_eq!(action.process_payment_intent.unwrap().process_config, None);
}
