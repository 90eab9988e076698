//! Webhook events as observations: the emulator's own events handed to the engine on time,
//! late, twice, reordered, or never; and the fall back to polling when they stop.

use crate::payments_flow::{
    bakery_payment, env_with, fast_config, instant_sim, wait_on_reader, wait_status, Env,
};
use readerd::payments::engine::EngineConfig;
use readerd::payments::machine::Step;
use readerd::payments::{Engine, Payment, Status};
use readerd::stripe::wire::{Event, PaymentIntent, Reader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hands one event to the engine the way the webhook route does once it is verified.
fn deliver(engine: &Engine, ev: &Event) {
    if ev.kind.starts_with("terminal.reader.") {
        let r: Reader = serde_json::from_value(ev.data.object.clone()).unwrap();
        engine.event_reader(r, ev.created);
    } else if ev.kind.starts_with("payment_intent.") {
        let pi: PaymentIntent = serde_json::from_value(ev.data.object.clone()).unwrap();
        engine.event_intent(&pi, ev.account.as_deref());
    }
}

/// Delivers the emulator's events as they appear, while `on` is set.
pub(crate) fn courier(env: &Arc<Env>, on: Arc<AtomicBool>) {
    let env = env.clone();
    tokio::spawn(async move {
        let (sim, engine) = (&env.sim, &env.engine);
        let mut sent = 0;
        loop {
            let all = sim.events();
            if on.load(Ordering::SeqCst) {
                for ev in &all[sent..] {
                    deliver(engine, ev);
                }
            }
            sent = all.len();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

fn reads(env: &Env) -> Vec<String> {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path.clone())
        .collect()
}

pub(crate) async fn paid(env: &Env) -> Payment {
    let r = env.readers[0].clone();
    let p = bakery_payment(env, &r);
    wait_on_reader(env, &p.id).await;
    env.sim.present_card(&r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::Succeeded).await
}

pub(crate) fn slow_safety_net() -> EngineConfig {
    EngineConfig {
        webhook_poll: Duration::from_secs(60),
        ..fast_config()
    }
}

#[tokio::test]
async fn events_track_payments_and_spare_every_read() {
    let env = Arc::new(env_with(instant_sim(), slow_safety_net(), 1).await);
    courier(&env, Arc::new(AtomicBool::new(true)));
    assert!(!env.engine.webhooks_tracking(), "no event yet: polling");
    paid(&env).await;
    assert!(
        env.engine.webhooks_tracking(),
        "an event for our action arrived"
    );
    // The next payment: written twice (create, process), read never; the safety-net
    // poll is a minute away and the events carry the outcome.
    env.sim.reset_requests();
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    // The customer taps once the reader shows the payment: once readerd has recorded the
    // dispatch (its own record; nothing reads the reader now). Waiting only for the request
    // in the emulator's log let the tap race the recording of the reader's answer.
    for _ in 0..1000 {
        if env.engine.get(&p.id).unwrap().unwrap().step == Step::Dispatched {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    env.sim.present_card(&r, None).unwrap();
    let p = wait_status(&env.engine, &p.id, Status::Succeeded).await;
    assert_eq!(p.amount_captured, 1000);
    assert_eq!(
        reads(&env),
        Vec::<String>::new(),
        "no read told anything new"
    );
    assert_eq!(env.sim.requests().len(), 2);
}

#[tokio::test]
async fn late_duplicated_and_reordered_events_change_nothing() {
    // Events never delivered on time: the payment is tracked by polling alone.
    let env = env_with(instant_sim(), fast_config(), 1).await;
    let p = paid(&env).await;
    assert!(!env.engine.webhooks_tracking());
    // Then every event arrives, late, newest first, twice (a stale `payment_intent.created`
    // after the poll that saw it succeed among them).
    let events = env.sim.events();
    assert!(events.iter().any(|e| e.kind == "payment_intent.created"));
    for _ in 0..2 {
        for ev in events.iter().rev() {
            deliver(&env.engine, ev);
        }
        for ev in &events {
            deliver(&env.engine, ev);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = env.engine.get(&p.id).unwrap().unwrap();
    assert_eq!(after.status, Status::Succeeded);
    assert_eq!(after.amount_captured, p.amount_captured);
    assert_eq!(
        after.history.len(),
        p.history.len(),
        "no event rewrote the history: {:#?}",
        after.history
    );
}

#[tokio::test]
async fn a_late_event_of_an_earlier_decline_does_not_decline_the_retry() {
    let env = env_with(instant_sim(), fast_config(), 1).await;
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    env.sim.present_card(&r, Some("4000000000009995")).unwrap();
    wait_status(&env.engine, &p.id, Status::Declined).await;
    let decline_events = env.sim.events();
    env.engine.retry(&p.id).await.unwrap();
    wait_on_reader(&env, &p.id).await;
    // The first attempt's failure events arrive now, during the second attempt.
    for ev in &decline_events {
        deliver(&env.engine, ev);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.engine.get(&p.id).unwrap().unwrap().status,
        Status::Processing,
        "the retry is still waiting for its card"
    );
    env.sim.present_card(&r, None).unwrap();
    wait_status(&env.engine, &p.id, Status::Succeeded).await;
}

#[tokio::test]
async fn webhooks_dying_mid_run_fall_back_to_polling() {
    let cfg = EngineConfig {
        webhook_poll: Duration::from_secs(2),
        webhook_grace: Duration::from_millis(300),
        ..fast_config()
    };
    let env = Arc::new(env_with(instant_sim(), cfg, 1).await);
    let on = Arc::new(AtomicBool::new(true));
    courier(&env, on.clone());
    paid(&env).await;
    assert!(env.engine.webhooks_tracking());
    // Webhooks stop. The next payment is found by the safety-net poll…
    on.store(false, Ordering::SeqCst);
    let started = Instant::now();
    paid(&env).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // …whose event never comes: readerd polls by itself again.
    for _ in 0..100 {
        if !env.engine.webhooks_tracking() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!env.engine.webhooks_tracking(), "fell back to polling");
    let started = Instant::now();
    paid(&env).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "found by polling: {:?}",
        started.elapsed()
    );
    // And webhooks are trusted again as soon as they deliver.
    on.store(true, Ordering::SeqCst);
    paid(&env).await;
    assert!(env.engine.webhooks_tracking());
}

#[tokio::test]
async fn a_cancel_on_the_reader_is_read_back_while_webhooks_track_payments() {
    // Stripe sends no event for `cancel_action`: the watch must not wait for one.
    let env = Arc::new(env_with(instant_sim(), slow_safety_net(), 1).await);
    courier(&env, Arc::new(AtomicBool::new(true)));
    paid(&env).await;
    assert!(env.engine.webhooks_tracking());
    let r = env.readers[0].clone();
    let p = bakery_payment(&env, &r);
    wait_on_reader(&env, &p.id).await;
    let started = Instant::now();
    env.engine.cancel(&p.id).await.unwrap();
    wait_status(&env.engine, &p.id, Status::Canceled).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "canceled by the read after the cancel, not the minute-long safety net: {:?}",
        started.elapsed()
    );
}
