//! Saving a card on a reader (`process_setup_intent`) through the engine against the
//! emulator: saved on the right account for the merchant's charge type, refused, walked
//! away from, canceled from the point of sale, behind someone else's action, and sharing
//! the reader's queue with payments; and `readerd setups` through a daemon.

use crate::common::start_foreign_payment;
use crate::payments_flow::{
    bakery_payment, env, env_with, fast_config, instant_sim, wait_on_reader, wait_status, Env,
};
use readerd::payments::engine::{CreateSetup, EngineConfig};
use readerd::payments::{AllowRedisplay, Setup, SetupStatus, Status};
use readerd::stripe::wire::{ActionStatus, ActionType, SetupIntent, SetupIntentStatus};
use readerd::stripe::RequestOptions;
use std::time::Duration;

fn save(env: &Env, merchant: &str, reader: &str) -> Setup {
    env.engine
        .create_setup(CreateSetup {
            merchant: merchant.into(),
            reader: reader.into(),
            customer: Some("cus_guest42".into()),
            allow_redisplay: AllowRedisplay::Limited,
        })
        .unwrap()
}

async fn wait_setup(env: &Env, id: &str, what: &str, f: impl Fn(&Setup) -> bool) -> Setup {
    for _ in 0..2000 {
        let s = env.engine.setup(id).unwrap().unwrap();
        if f(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = env.engine.setup(id).unwrap().unwrap();
    panic!("setup never {what}: {s:#?}");
}

async fn wait_processing(env: &Env, id: &str) -> Setup {
    wait_setup(env, id, "processing", |s| {
        s.status == SetupStatus::Processing
    })
    .await
}

async fn wait_final(env: &Env, id: &str, st: SetupStatus) -> Setup {
    wait_setup(env, id, st.as_str(), |s| s.status == st).await
}

fn count(env: &Env, suffix: &str) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(suffix) && r.status == 200)
        .count()
}

async fn intent(env: &Env, s: &Setup, on: &RequestOptions) -> SetupIntent {
    env.stripe
        .retrieve_setup_intent(s.setup_intent.as_deref().unwrap(), &["latest_attempt"], on)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_direct_merchants_card_is_saved_on_its_account_and_a_payment_waits_its_turn() {
    let env = env().await;
    let r = env.readers[0].clone();
    let s = save(&env, "bakery", &r);
    assert_eq!(s.status, SetupStatus::Queued);
    let p = bakery_payment(&env, &r);
    wait_processing(&env, &s.id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        env.engine.get(&p.id).unwrap().unwrap().status,
        Status::Queued
    );
    let on_reader = env.stripe.retrieve_reader(&r).await.unwrap();
    let a = on_reader.action.unwrap();
    assert_eq!(a.kind, ActionType::ProcessSetupIntent);

    env.sim.present_card(&r, None).unwrap();
    let s = wait_final(&env, &s.id, SetupStatus::Succeeded).await;
    let acct = RequestOptions::account(&env.accounts["bakery"]);
    let si = intent(&env, &s, &acct).await;
    assert_eq!(si.status, SetupIntentStatus::Succeeded);
    assert_eq!(si.payment_method_types, ["card_present"]);
    assert_eq!(si.usage, "off_session");
    assert_eq!(si.customer.as_ref().unwrap().id(), "cus_guest42");
    assert!(si.on_behalf_of.is_none());
    // The reusable card is the SetupIntent's generated card, not the card_present one.
    let pm = s.payment_method.clone().unwrap();
    assert_eq!(si.generated_card(), Some(pm.as_str()));
    assert_ne!(si.payment_method.as_ref().unwrap().id(), pm);
    // The keys were on disk first.
    let sent = env
        .sim
        .requests()
        .into_iter()
        .find(|q| q.path.ends_with("/process_setup_intent"))
        .unwrap();
    assert_eq!(sent.idempotency_key, s.key);
    let created = env
        .sim
        .requests()
        .into_iter()
        .find(|q| q.path == "/v1/setup_intents")
        .unwrap();
    assert_eq!(
        created.idempotency_key.as_deref(),
        Some(s.intent_key.as_str())
    );
    assert_eq!(count(&env, "/v1/setup_intents"), 1);

    // Then the payment has the reader.
    wait_on_reader(&env, &p.id).await;
    env.sim.present_card(&r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::Succeeded).await;
}

#[tokio::test]
async fn a_destination_merchants_card_is_saved_on_the_platform_on_its_behalf() {
    let env = env().await;
    let r = env.readers[0].clone();
    let s = save(&env, "florist", &r);
    wait_processing(&env, &s.id).await;
    env.sim.present_card(&r, None).unwrap();
    let s = wait_final(&env, &s.id, SetupStatus::Succeeded).await;
    assert!(s.account.is_none());
    let si = intent(&env, &s, &RequestOptions::platform()).await;
    assert_eq!(si.status, SetupIntentStatus::Succeeded);
    assert_eq!(
        si.on_behalf_of.as_ref().map(|o| o.id().to_string()),
        Some(env.accounts["florist"].clone())
    );
    // Not on the florist's own account.
    assert!(env
        .stripe
        .retrieve_setup_intent(
            si.id.as_str(),
            &[],
            &RequestOptions::account(&env.accounts["florist"])
        )
        .await
        .is_err());
}

#[tokio::test]
async fn a_refused_card_fails_the_setup_and_cancels_its_setup_intent() {
    let env = env().await;
    let r = env.readers[0].clone();
    let s = save(&env, "bakery", &r);
    wait_processing(&env, &s.id).await;
    env.sim.present_card(&r, Some("4000000000000002")).unwrap();
    let s = wait_final(&env, &s.id, SetupStatus::Failed).await;
    assert_eq!(
        s.failure.as_ref().unwrap().code,
        "setup_intent_authentication_failure"
    );
    assert!(s.payment_method.is_none());
    let si = intent(&env, &s, &RequestOptions::account(&env.accounts["bakery"])).await;
    assert_eq!(si.status, SetupIntentStatus::Canceled);
    // The reader is free for the next job.
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
}

#[tokio::test]
async fn a_customer_who_walks_away_is_timed_out_and_the_reader_freed() {
    let cfg = EngineConfig {
        action_deadline: Duration::from_millis(300),
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let s = save(&env, "bakery", &r);
    let s = wait_final(&env, &s.id, SetupStatus::Failed).await;
    assert_eq!(s.failure.as_ref().unwrap().code, "customer_timeout");
    assert_eq!(count(&env, "/cancel_action"), 1);
    let reader = env.stripe.retrieve_reader(&r).await.unwrap();
    assert!(reader.action.is_none(), "the reader was freed");
    let si = intent(&env, &s, &RequestOptions::account(&env.accounts["bakery"])).await;
    assert_eq!(si.status, SetupIntentStatus::Canceled);
    assert_eq!(si.cancellation_reason.as_deref(), Some("abandoned"));
}

#[tokio::test]
async fn a_cancel_from_the_point_of_sale_clears_our_action_and_the_setup_intent() {
    let env = env().await;
    let r = env.readers[0].clone();
    let s = save(&env, "bakery", &r);
    wait_processing(&env, &s.id).await;
    let asked = env.engine.cancel_setup(&s.id).await.unwrap();
    assert!(asked.cancel_requested);
    let s = wait_final(&env, &s.id, SetupStatus::Canceled).await;
    assert_eq!(count(&env, "/cancel_action"), 1);
    assert!(env
        .stripe
        .retrieve_reader(&r)
        .await
        .unwrap()
        .action
        .is_none());
    let si = intent(&env, &s, &RequestOptions::account(&env.accounts["bakery"])).await;
    assert_eq!(si.status, SetupIntentStatus::Canceled);
    assert_eq!(
        si.cancellation_reason.as_deref(),
        Some("requested_by_customer")
    );
    // Final: a second cancel is a conflict.
    assert!(env.engine.cancel_setup(&s.id).await.is_err());
}

#[tokio::test]
async fn a_queued_setup_canceled_never_reaches_stripe() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    let s = save(&env, "bakery", &r);
    let s = env.engine.cancel_setup(&s.id).await.unwrap();
    assert_eq!(s.status, SetupStatus::Canceled);
    env.sim.present_card(&r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::Succeeded).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&env, "/v1/setup_intents"), 0);
    assert_eq!(count(&env, "/process_setup_intent"), 0);
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
    let s = save(&env, "bakery", &r);
    let s = wait_final(&env, &s.id, SetupStatus::Failed).await;
    assert_eq!(s.failure.as_ref().unwrap().code, "reader_busy");
    assert_eq!(count(&env, "/cancel_action"), 0);
    assert_eq!(count(&env, "/process_setup_intent"), 0);
    let reader = env.stripe.retrieve_reader(&r).await.unwrap();
    let a = reader.action.unwrap();
    assert_eq!(a.kind, ActionType::ProcessPaymentIntent);
    assert_eq!(a.status, ActionStatus::InProgress);
    assert_eq!(a.payment_intent_id(), Some(foreign.id.as_str()));
    let si = intent(&env, &s, &RequestOptions::account(&env.accounts["bakery"])).await;
    assert_eq!(si.status, SetupIntentStatus::Canceled);
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_queued() {
    let env = env().await;
    let r = env.readers[0].clone();
    let req = |merchant: &str, customer: Option<&str>| CreateSetup {
        merchant: merchant.into(),
        reader: r.clone(),
        customer: customer.map(str::to_string),
        allow_redisplay: AllowRedisplay::Always,
    };
    assert!(env.engine.create_setup(req("bakery", Some("bob"))).is_err());
    assert!(env.engine.create_setup(req("nobody", None)).is_err());
    assert!(env
        .engine
        .create_setup(CreateSetup {
            reader: "tmr_nope".into(),
            ..req("bakery", None)
        })
        .is_err());
    assert!(env.sim.requests().iter().all(|q| !q.path.contains("setup")));
}

/// `readerd setups create`, the real binary against a daemon whose emulator taps a card
/// for the customer: exit 0 with the payment method; then `list` and `show` find it; a
/// missing `allow_redisplay` is refused by the API with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setups_command_saves_a_card_and_shows_it() {
    use crate::common::TestEnv;
    let env = TestEnv::builder()
        .sim(readerd::sim::SimConfig {
            auto_present: Some(Duration::from_millis(200)),
            ..Default::default()
        })
        .configure(|c| {
            c.payments.poll_min = Duration::from_millis(20).into();
            c.payments.poll_max = Duration::from_millis(100).into();
        })
        .start()
        .await;
    env.add_merchant("bakery", "FR", "eur").await;
    let loc = env.add_location("Shop", "FR", Some("bakery")).await;
    env.add_reader("desk", &loc).await;
    let run = |args: Vec<&'static str>| {
        let api = env.api_url.clone();
        let token = env.pos("bakery").to_string();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_readerd"))
                .args(args)
                .env("READERD_API", api)
                .env("READERD_TOKEN", token)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(vec![
        "setups",
        "create",
        "--reader",
        "desk",
        "--merchant",
        "bakery",
        "--customer",
        "cus_hotel7",
        "--allow-redisplay",
        "always",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("succeeded: payment method pm_"), "{stdout}");
    let out = run(vec!["setups", "list", "--reader", "desk"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("succeeded"),
        "{stdout}"
    );
    let id = stdout
        .split_whitespace()
        .find(|w| w.starts_with("set_"))
        .unwrap()
        .to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(["setups", "show", &id])
        .env("READERD_API", env.api_url.clone())
        .env("READERD_TOKEN", env.pos("bakery"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cus_hotel7") && stdout.contains("seti_"),
        "{stdout}"
    );
    // allow_redisplay is required: a clear 400, and nothing queued.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/setups", env.api_url))
        .bearer_auth(env.pos("bakery"))
        .json(&serde_json::json!({"merchant": "bakery", "reader": "desk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_allow_redisplay", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("always, limited or unspecified"));
    env.stop().await;
}

/// A reader event that shows our action succeeded stands for a read: with polls a minute
/// apart, the card is recorded as soon as the event arrives, from the SetupIntent.
#[tokio::test]
async fn a_reader_event_ends_the_watch_without_waiting_for_a_poll() {
    let cfg = EngineConfig {
        poll_min: Duration::from_secs(60),
        poll_max: Duration::from_secs(60),
        ..fast_config()
    };
    let env = std::sync::Arc::new(env_with(instant_sim(), cfg, 1).await);
    {
        // Hands the emulator's reader events to the engine as the webhook route does.
        let env = env.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let all = env.sim.events();
                for ev in &all[sent..] {
                    if ev.kind.starts_with("terminal.reader.") {
                        let r: readerd::stripe::wire::Reader =
                            serde_json::from_value(ev.data.object.clone()).unwrap();
                        env.engine.event_reader(r, ev.created);
                    }
                }
                sent = all.len();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    let r = env.readers[0].clone();
    let s = save(&env, "bakery", &r);
    wait_processing(&env, &s.id).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reads = |env: &Env| {
        env.sim
            .requests()
            .iter()
            .filter(|q| q.method == "GET" && q.path.starts_with("/v1/terminal/readers/"))
            .count()
    };
    let before = reads(&env);
    let at = std::time::Instant::now();
    env.sim.present_card(&r, None).unwrap();
    let s = wait_final(&env, &s.id, SetupStatus::Succeeded).await;
    assert!(at.elapsed() < Duration::from_secs(5), "{:?}", at.elapsed());
    assert_eq!(reads(&env), before, "no reader read after the event");
    assert!(s.payment_method.unwrap().starts_with("pm_"));
    assert!(s
        .history
        .iter()
        .any(|h| h.source == readerd::payments::Source::Webhook));
}
