//! Batched reader polling: without webhooks, one reader list per location stands for the
//! reads of its busy readers. Requests are counted from the emulator's own log.

use crate::payments_events::courier;
use crate::payments_flow::{
    bakery_payment, env_with, fast_config, instant_sim, wait_on_reader, wait_status, with_faults,
    Env,
};
use readerd::payments::engine::EngineConfig;
use readerd::payments::Status;
use readerd::sim::{FaultKind, FaultRule};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Lists every 100 ms when four readers share a location (a lone reader: every 400 ms);
/// a reader polled by itself would be read every 10 to 50 ms.
fn listing() -> EngineConfig {
    EngineConfig {
        list_poll: Duration::from_millis(100),
        list_poll_alone: Duration::from_millis(400),
        ..fast_config()
    }
}

/// `GET /v1/terminal/readers` (the list) and `GET /v1/terminal/readers/{id}` (one reader).
fn lists_and_reads(env: &Env) -> (usize, usize) {
    let gets: Vec<String> = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/terminal/readers"))
        .map(|r| r.path.clone())
        .collect();
    let lists = gets.iter().filter(|p| *p == "/v1/terminal/readers").count();
    (lists, gets.len() - lists)
}

/// Starts one payment on each reader and waits until every card dialogue is up.
async fn all_busy(env: &Env) -> Vec<String> {
    let mut ids = Vec::new();
    for r in &env.readers {
        ids.push(bakery_payment(env, r).id);
    }
    for id in &ids {
        wait_on_reader(env, id).await;
    }
    ids
}

async fn all_paid(env: &Env, ids: &[String]) {
    for r in &env.readers {
        env.sim.present_card(r, None).unwrap();
    }
    for id in ids {
        let p = wait_status(&env.engine, id, Status::Succeeded).await;
        assert_eq!(p.amount_captured, 1000);
    }
}

#[tokio::test]
async fn busy_readers_at_one_location_cost_one_list_per_interval_not_one_read_each() {
    let env = env_with(instant_sim(), listing(), 4).await;
    let ids = all_busy(&env).await;
    // Wait for the first list (a lone reader's interval at most) to cover them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.sim.reset_requests();
    let window = Duration::from_millis(1000);
    tokio::time::sleep(window).await;
    let (lists, reads) = lists_and_reads(&env);
    assert_eq!(reads, 0, "no reader read while the list covers them");
    // One list per 100 ms for the four (a tick may run late, never early).
    assert!(
        (5..=11).contains(&lists),
        "{lists} lists in {window:?} for four busy readers"
    );
    assert_eq!(
        env.sim.requests().len(),
        lists,
        "nothing but lists while they wait"
    );
    // The listed readers carry the outcome: each payment is read once (its PaymentIntent).
    env.sim.reset_requests();
    all_paid(&env, &ids).await;
    let (_, reads) = lists_and_reads(&env);
    assert_eq!(reads, 0, "the outcome came from a list, not a reader read");
    let pi_reads = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/payment_intents/"))
        .count();
    assert_eq!(pi_reads, 4, "the PaymentIntent still decides, once each");
}

#[tokio::test]
async fn a_reader_the_list_does_not_carry_is_read_by_itself() {
    let env = env_with(instant_sim(), listing(), 2).await;
    let ids = all_busy(&env).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The second reader is deleted on Stripe: the list no longer carries it.
    let gone = env.readers[1].clone();
    env.stripe.delete_reader(&gone).await.unwrap();
    env.sim.reset_requests();
    let p = wait_status(&env.engine, &ids[1], Status::Failed).await;
    assert_eq!(
        p.failure.as_ref().map(|f| f.code.as_str()),
        Some("reader_not_found"),
        "its own read found it gone: {p:#?}"
    );
    let own_reads = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == format!("/v1/terminal/readers/{gone}"))
        .count();
    assert!(own_reads >= 1, "the missing reader was read by itself");
    // The other reader is still followed by the list and gets its payment.
    env.sim.present_card(&env.readers[0], None).unwrap();
    wait_status(&env.engine, &ids[0], Status::Succeeded).await;
}

#[tokio::test]
async fn a_failing_list_leaves_each_reader_to_its_own_reads() {
    let rule = FaultRule {
        status: Some(400),
        ..FaultRule::new(FaultKind::Error, "GET", "/v1/terminal/readers")
    };
    let env = env_with(with_faults(vec![rule]), listing(), 3).await;
    let ids = all_busy(&env).await;
    // Once the client gives up on a list (its retries are bounded), each reader is read
    // by itself again.
    env.sim.reset_requests();
    let mut reads = 0;
    for _ in 0..200 {
        reads = lists_and_reads(&env).1;
        if reads >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reads >= 6, "each reader is read by itself: {reads}");
    all_paid(&env, &ids).await;
}

#[tokio::test]
async fn healthy_webhooks_stop_the_lists_and_dying_ones_bring_them_back() {
    let cfg = EngineConfig {
        webhook_poll: Duration::from_secs(2),
        webhook_grace: Duration::from_millis(300),
        ..listing()
    };
    let env = Arc::new(env_with(instant_sim(), cfg, 3).await);
    let on = Arc::new(AtomicBool::new(true));
    courier(&env, on.clone());
    // A first payment proves the webhooks.
    let first = bakery_payment(&env, &env.readers[0]).id;
    wait_on_reader(&env, &first).await;
    env.sim.present_card(&env.readers[0], None).unwrap();
    wait_status(&env.engine, &first, Status::Succeeded).await;
    assert!(env.engine.webhooks_tracking());
    // Healthy: three busy readers, not one list.
    let ids = all_busy(&env).await;
    env.sim.reset_requests();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(lists_and_reads(&env), (0, 0), "events stand for every poll");
    all_paid(&env, &ids).await;
    // The webhooks die: a payment seen over by a poll gets no event, readerd falls back.
    on.store(false, Ordering::SeqCst);
    let lone = bakery_payment(&env, &env.readers[0]).id;
    wait_on_reader(&env, &lone).await;
    env.sim.present_card(&env.readers[0], None).unwrap();
    wait_status(&env.engine, &lone, Status::Succeeded).await;
    for _ in 0..200 {
        if !env.engine.webhooks_tracking() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!env.engine.webhooks_tracking(), "fell back to polling");
    let ids = all_busy(&env).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.sim.reset_requests();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (lists, reads) = lists_and_reads(&env);
    assert!(lists >= 3, "the lists are back: {lists}");
    assert_eq!(reads, 0, "and stand for the reads");
    all_paid(&env, &ids).await;
}

fn pi_reads(env: &Env) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/payment_intents/"))
        .count()
}

#[tokio::test]
async fn readers_starting_together_are_checked_by_one_list_not_one_read_each() {
    let env = env_with(instant_sim(), listing(), 4).await;
    env.sim.reset_requests();
    // No job has run on these readers yet: none is known to be free.
    let ids = all_busy(&env).await;
    let (lists, reads) = lists_and_reads(&env);
    assert_eq!(
        reads, 0,
        "no pre-flight read: the list of their location stood for them"
    );
    assert!(
        (1..=3).contains(&lists),
        "{lists} lists for four pre-flight checks"
    );
    all_paid(&env, &ids).await;
}

#[tokio::test]
async fn a_reader_a_list_shows_busy_is_read_before_anything_is_sent() {
    let env = env_with(instant_sim(), listing(), 1).await;
    let reader = env.readers[0].clone();
    // Someone else's payment is on the reader.
    crate::common::start_foreign_payment(&env.stripe, &env.accounts["bakery"], &reader, "foreign")
        .await;
    env.sim.reset_requests();
    let p = bakery_payment(&env, &reader);
    // The list shows it busy: it is read, and the payment waits instead of being sent.
    crate::payments_flow::wait_until(&env.engine, &p.id, "waiting for the reader", |p| {
        p.waiting_for.as_deref() == Some("reader_busy")
    })
    .await;
    let (lists, reads) = lists_and_reads(&env);
    assert!(lists >= 1 && reads >= 1, "{lists} lists, {reads} reads");
    assert!(
        !env.sim
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/process_payment_intent")),
        "nothing sent to a busy reader"
    );
}

#[tokio::test]
async fn a_lone_reader_takes_turns_between_a_list_and_a_look_at_its_payment_intent() {
    let env = env_with(instant_sim(), listing(), 1).await;
    let reader = env.readers[0].clone();
    let id = bakery_payment(&env, &reader).id;
    wait_on_reader(&env, &id).await;
    env.sim.reset_requests();
    // The first list after the dispatch shows the customer has not tapped yet…
    for _ in 0..200 {
        if lists_and_reads(&env).0 >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lists_and_reads(&env), (1, 0));
    // …the customer taps: the next turn is the PaymentIntent's, which settles the payment.
    env.sim.present_card(&reader, None).unwrap();
    let p = wait_status(&env.engine, &id, Status::Succeeded).await;
    assert_eq!(p.amount_captured, 1000);
    assert_eq!(lists_and_reads(&env), (1, 0), "no second list, no read");
    assert_eq!(pi_reads(&env), 1, "one look at the PaymentIntent decided");
}
