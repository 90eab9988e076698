//! Inputs on a reader's screen (`collect_inputs`) through the engine against the emulator:
//! answered, walked away from, past our deadline, canceled from the point of sale, behind
//! someone else's action, and sharing the reader's queue with payments.

use crate::common::start_foreign_payment;
use crate::payments_flow::{
    bakery_payment, env, env_with, fast_config, instant_sim, wait_on_reader, wait_status, Env,
};
use readerd::payments::engine::EngineConfig;
use readerd::payments::inputs::Input;
use readerd::payments::{InputCollection, InputStatus, Status};
use readerd::stripe::params::SucceedInputCollection;
use readerd::stripe::wire::{ActionStatus, ActionType};
use readerd::stripe::RequestOptions;
use serde_json::json;
use std::time::Duration;

fn inputs() -> Vec<Input> {
    serde_json::from_value(json!([
        {"type": "email", "required": true, "custom_text": {"title": "Email for the receipt"},
         "toggles": [{"title": "Newsletter", "default_value": "enabled"}]},
        {"type": "selection", "custom_text": {"title": "How did you hear of us?"},
         "selection": {"choices": [{"id": "friend", "text": "A friend", "style": "primary"},
                                   {"id": "web", "text": "The web"}]}},
        {"type": "signature", "custom_text": {"title": "Sign the rental agreement", "submit_button": "I agree"}},
    ]))
    .unwrap()
}

fn collect(env: &Env, reader: &str) -> InputCollection {
    env.engine
        .create_inputs(reader, "bakery", inputs())
        .unwrap()
}

async fn wait_inputs(
    env: &Env,
    id: &str,
    what: &str,
    f: impl Fn(&InputCollection) -> bool,
) -> InputCollection {
    for _ in 0..2000 {
        let c = env.engine.input_collection(id).unwrap().unwrap();
        if f(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = env.engine.input_collection(id).unwrap().unwrap();
    panic!("input collection never {what}: {c:#?}");
}

async fn wait_collecting(env: &Env, id: &str) -> InputCollection {
    wait_inputs(env, id, "collecting", |c| {
        c.status == InputStatus::Collecting
    })
    .await
}

async fn wait_final(env: &Env, id: &str, s: InputStatus) -> InputCollection {
    wait_inputs(env, id, s.as_str(), |c| c.status == s).await
}

fn count(env: &Env, suffix: &str) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(suffix) && r.status == 200)
        .count()
}

async fn answer(env: &Env, reader: &str, skip: Option<&str>) {
    env.stripe
        .succeed_input_collection(
            reader,
            &SucceedInputCollection {
                skip_non_required_inputs: skip.map(str::to_string),
            },
            &RequestOptions::platform(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn answered_inputs_are_recorded_and_a_payment_waits_its_turn() {
    let env = env().await;
    let r = env.readers[0].clone();
    let c = collect(&env, &r);
    assert_eq!(c.status, InputStatus::Queued);
    // A payment queued behind the inputs waits: one action slot per reader.
    let p = bakery_payment(&env, &r);
    wait_collecting(&env, &c.id).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        env.engine.get(&p.id).unwrap().unwrap().status,
        Status::Queued
    );
    assert_eq!(count(&env, "/process_payment_intent"), 0);

    answer(&env, &r, Some("all")).await;
    let c = wait_final(&env, &c.id, InputStatus::Succeeded).await;
    assert_eq!(c.inputs[0].value.as_deref(), Some("customer@example.com"));
    assert_eq!(c.inputs[0].skipped, Some(false));
    assert_eq!(c.inputs[0].toggles[0].value.as_deref(), Some("enabled"));
    // Not required: skipped when the customer skips what may be skipped.
    assert_eq!(c.inputs[1].skipped, Some(true));
    assert_eq!(c.inputs[2].value, None);
    assert_eq!(count(&env, "/collect_inputs"), 1);
    // The key it was sent with was on disk first.
    let sent = env
        .sim
        .requests()
        .into_iter()
        .find(|q| q.path.ends_with("/collect_inputs"))
        .unwrap();
    assert_eq!(sent.idempotency_key, c.key);

    // Then the payment has the reader.
    wait_on_reader(&env, &p.id).await;
    env.sim.present_card(&r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::Succeeded).await;
}

#[tokio::test]
async fn every_input_answered_gives_each_value() {
    let env = env().await;
    let r = env.readers[0].clone();
    let c = collect(&env, &r);
    wait_collecting(&env, &c.id).await;
    answer(&env, &r, None).await;
    let c = wait_final(&env, &c.id, InputStatus::Succeeded).await;
    assert_eq!(c.inputs[1].value.as_deref(), Some("friend"));
    assert!(c.inputs[2].value.as_deref().unwrap().starts_with("file_"));
}

#[tokio::test]
async fn a_customer_who_walks_away_fails_the_collection_and_frees_the_reader() {
    let env = env().await;
    let r = env.readers[0].clone();
    let c = collect(&env, &r);
    wait_collecting(&env, &c.id).await;
    env.stripe
        .timeout_input_collection(&r, &RequestOptions::platform())
        .await
        .unwrap();
    let c = wait_final(&env, &c.id, InputStatus::Failed).await;
    assert_eq!(c.failure.unwrap().code, "collect_inputs_timed_out");
    // The reader is free for the next job.
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
}

#[tokio::test]
async fn past_our_deadline_our_action_is_canceled() {
    let cfg = EngineConfig {
        action_deadline: Duration::from_millis(300),
        ..fast_config()
    };
    let env = env_with(instant_sim(), cfg, 1).await;
    let r = env.readers[0].clone();
    let c = collect(&env, &r);
    let c = wait_final(&env, &c.id, InputStatus::Failed).await;
    assert_eq!(c.failure.unwrap().code, "customer_timeout");
    assert_eq!(count(&env, "/cancel_action"), 1);
    let reader = env.stripe.retrieve_reader(&r).await.unwrap();
    assert!(reader.action.is_none(), "the reader was freed");
}

#[tokio::test]
async fn a_cancel_from_the_point_of_sale_clears_our_action() {
    let env = env().await;
    let r = env.readers[0].clone();
    let c = collect(&env, &r);
    wait_collecting(&env, &c.id).await;
    let asked = env.engine.cancel_inputs(&c.id).await.unwrap();
    assert!(asked.cancel_requested);
    let c = wait_final(&env, &c.id, InputStatus::Canceled).await;
    assert!(c.cancel_requested);
    assert_eq!(count(&env, "/cancel_action"), 1);
    assert!(env
        .stripe
        .retrieve_reader(&r)
        .await
        .unwrap()
        .action
        .is_none());
    // Final: a second cancel is a conflict.
    assert!(env.engine.cancel_inputs(&c.id).await.is_err());
}

#[tokio::test]
async fn a_queued_collection_canceled_never_reaches_the_reader() {
    let env = env().await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    let c = collect(&env, &r);
    let c = env.engine.cancel_inputs(&c.id).await.unwrap();
    assert_eq!(c.status, InputStatus::Canceled);
    env.sim.present_card(&r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::Succeeded).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&env, "/collect_inputs"), 0);
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
    let c = collect(&env, &r);
    let c = wait_final(&env, &c.id, InputStatus::Failed).await;
    assert_eq!(c.failure.unwrap().code, "reader_busy");
    assert_eq!(count(&env, "/cancel_action"), 0);
    let reader = env.stripe.retrieve_reader(&r).await.unwrap();
    let a = reader.action.unwrap();
    assert_eq!(a.kind, ActionType::ProcessPaymentIntent);
    assert_eq!(a.status, ActionStatus::InProgress);
    assert_eq!(a.payment_intent_id(), Some(foreign.id.as_str()));
}

#[tokio::test]
async fn a_reader_that_frees_up_in_time_takes_the_inputs() {
    let env = env().await;
    let r = env.readers[0].clone();
    start_foreign_payment(&env.stripe, &env.accounts["bakery"], &r, "foreign").await;
    let c = collect(&env, &r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        env.engine.input_collection(&c.id).unwrap().unwrap().status,
        InputStatus::Queued
    );
    // The other integration's customer pays; the reader is free.
    env.sim.present_card(&r, None).unwrap();
    wait_collecting(&env, &c.id).await;
    assert_eq!(count(&env, "/cancel_action"), 0);
}

#[test]
fn invalid_inputs_are_refused_before_anything_is_queued() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let env = env().await;
        let r = env.readers[0].clone();
        for bad in [
            json!([]),
            json!([{"type": "colour", "custom_text": {"title": "x"}}]),
            json!([{"type": "email", "custom_text": {"title": ""}}]),
            json!([{"type": "selection", "custom_text": {"title": "x"}}]),
            json!([{"type": "text", "custom_text": {"title": "x", "skip_button": "a very long skip label"}}]),
            json!([{"type": "email", "custom_text": {"title": "x"}, "value": "me@example.com"}]),
            json!([{"type": "email", "custom_text": {"title": "x"}, "toggles": [{"default_value": "on", "title": "t"}]}]),
            json!((0..6).map(|_| json!({"type": "email", "custom_text": {"title": "x"}})).collect::<Vec<_>>()),
        ] {
            let inputs: Vec<Input> = serde_json::from_value(bad.clone()).unwrap();
            assert!(
                env.engine.create_inputs(&r, "bakery", inputs).is_err(),
                "accepted {bad}"
            );
        }
        assert!(env.sim.requests().iter().all(|q| !q.path.ends_with("/collect_inputs")));
    });
}

/// `readerd inputs collect`, the real binary against a daemon whose emulator answers for
/// the customer: exit 0 with the answers; then `list` and `show` find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inputs_command_collects_and_shows_the_answers() {
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
    env.add_reader("kiosk", &loc).await;
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
        "inputs",
        "collect",
        "--reader",
        "kiosk",
        "--input",
        "email:Email for the receipt",
        "--input",
        "selection:Table or bar?",
        "--choice",
        "table=Table",
        "--choice",
        "bar=Bar",
        "--required",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("customer@example.com"), "{stdout}");
    assert!(stdout.contains("table"), "{stdout}");
    let out = run(vec!["inputs", "list", "--reader", "kiosk"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("succeeded"),
        "{stdout}"
    );
    // A mistake is refused before anything reaches the reader.
    let out = run(vec![
        "inputs",
        "collect",
        "--reader",
        "kiosk",
        "--input",
        "colour:Pick",
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("type"));
    env.stop().await;
}
