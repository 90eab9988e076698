//! The emulator's injected faults, each made deterministic with a one-shot rule or a seed.

use crate::common::get_json;
use crate::common::sim_client::{check, emulator, instant, world, Api};
use readerd::sim::{spawn, FaultKind, FaultRule, Faults, SimConfig, SimHandle};
use readerd::stripe::form::Params;
use serde_json::Value;
use std::time::Duration;

fn pi_params() -> Params {
    let mut p = Params::new();
    p.push("amount", 1000)
        .push("currency", "usd")
        .push_list("payment_method_types", &["card_present"]);
    p
}

fn one_shot(kind: FaultKind, method: &str, path: &str) -> Faults {
    Faults {
        rules: vec![FaultRule::new(kind, method, path).times(1)],
        ..Faults::default()
    }
}

/// Arms a one-shot `kind` on creating a PaymentIntent, then creates one under `key`: the
/// connection is dropped, so no answer comes back.
async fn create_dropped(sim: &SimHandle, api: &Api, kind: FaultKind, account: &str, key: &str) {
    sim.set_faults(one_shot(kind, "POST", "/v1/payment_intents"));
    let r = api
        .send(
            reqwest::Method::POST,
            "/v1/payment_intents",
            &pi_params(),
            Some(account),
            Some(key),
        )
        .await;
    assert!(r.is_err(), "expected a dropped connection, got {r:?}");
}

#[tokio::test]
async fn a_5xx_before_the_work_is_not_stored_and_says_retry() {
    let (sim, api) = instant().await;
    let a = api.account("US").await;
    sim.set_faults(one_shot(FaultKind::Error, "POST", "/v1/payment_intents"));
    let r = api
        .post_key("/v1/payment_intents", &pi_params(), Some(&a), "k")
        .await;
    assert_eq!(r.header("stripe-should-retry"), Some("true"));
    let e = r.err(500, None);
    assert_eq!(e["type"], "api_error");
    assert_eq!(sim.payment_intent_count(Some(&a)), 0);
    // The same key runs the request now: nothing was stored.
    let r = api
        .post_key("/v1/payment_intents", &pi_params(), Some(&a), "k")
        .await;
    assert_eq!(r.header("idempotent-replayed"), None);
    r.ok();
    assert_eq!(sim.payment_intent_count(Some(&a)), 1);
    let log = sim.requests();
    let failed = log.iter().find(|r| r.status == 500).unwrap();
    assert_eq!(failed.fault.as_deref(), Some("error"));
}

#[tokio::test]
async fn dropped_connections_before_and_after_the_work_look_alike_to_the_caller() {
    let (sim, api) = instant().await;
    let a = api.account("US").await;
    // Before: no answer, nothing done.
    create_dropped(&sim, &api, FaultKind::DropBefore, &a, "k1").await;
    assert_eq!(sim.payment_intent_count(Some(&a)), 0);
    api.post_key("/v1/payment_intents", &pi_params(), Some(&a), "k1")
        .await
        .ok();
    assert_eq!(sim.payment_intent_count(Some(&a)), 1);
    // After: no answer, but the PaymentIntent exists and the key replays it.
    create_dropped(&sim, &api, FaultKind::DropAfter, &a, "k2").await;
    assert_eq!(sim.payment_intent_count(Some(&a)), 2);
    let r = api
        .post_key("/v1/payment_intents", &pi_params(), Some(&a), "k2")
        .await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    let replayed = r.ok();
    check("payment_intent", &replayed);
    assert_eq!(sim.payment_intent_count(Some(&a)), 2);
    // A replay can be lost on the way too; the key still holds the answer.
    create_dropped(&sim, &api, FaultKind::DropBefore, &a, "k2").await;
    let again = api
        .post_key("/v1/payment_intents", &pi_params(), Some(&a), "k2")
        .await;
    assert_eq!(again.ok()["id"], replayed["id"]);
    assert_eq!(sim.payment_intent_count(Some(&a)), 2);
    let log = sim.requests();
    let dropped: Vec<_> = log.iter().filter(|r| r.status == 0).collect();
    assert_eq!(dropped.len(), 3);
    assert_eq!(dropped[0].fault.as_deref(), Some("drop_before"));
    assert_eq!(dropped[1].fault.as_deref(), Some("drop_after"));
    assert!(dropped[2].replayed);
}

#[tokio::test]
async fn a_reader_timeout_can_be_a_false_negative() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    sim.set_faults(one_shot(
        FaultKind::ReaderTimeout,
        "POST",
        "/v1/terminal/readers/*/process_payment_intent",
    ));
    let mut p = Params::new();
    p.push("payment_intent", &pi);
    let path = format!("/v1/terminal/readers/{}/process_payment_intent", w.reader);
    api.post_key(&path, &p, None, "ppi-1")
        .await
        .err(400, Some("terminal_reader_timeout"));
    // The reader did take it.
    let v = api.get_reader(&w.reader).await;
    assert_eq!(v["action"]["status"], "in_progress");
    assert_eq!(
        v["action"]["process_payment_intent"]["payment_intent"],
        pi.as_str()
    );
    // The stored error is replayed for the same key; a new key finds the reader busy.
    api.post_key(&path, &p, None, "ppi-1")
        .await
        .err(400, Some("terminal_reader_timeout"));
    api.post_key(&path, &p, None, "ppi-2")
        .await
        .err(400, Some("terminal_reader_busy"));
    // The payment goes on.
    api.present(&w.reader, None).await.ok();
    assert_eq!(
        api.get_intent(Some(&w.account), &pi).await["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn a_reader_that_drops_off_mid_action_leaves_it_in_progress() {
    let (sim, api) = emulator(SimConfig {
        auth_delay: Duration::ZERO,
        auto_present: Some(Duration::from_millis(1)),
        faults: one_shot(
            FaultKind::OfflineMidAction,
            "POST",
            "/v1/terminal/readers/*/process_payment_intent",
        ),
        ..SimConfig::default()
    })
    .await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    let v = api.process(&w.reader, &pi).await.ok();
    assert_eq!(v["action"]["status"], "in_progress");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Not even auto-present reaches it: it stays in progress, the reader offline.
    let v = api.get_reader(&w.reader).await;
    assert_eq!(v["status"], "offline");
    assert_eq!(v["action"]["status"], "in_progress");
    api.present(&w.reader, None)
        .await
        .err(400, Some("terminal_reader_offline"));
    api.cancel_action(&w.reader)
        .await
        .err(400, Some("terminal_reader_offline"));
    assert_eq!(
        api.get_intent(Some(&w.account), &pi).await["status"],
        "requires_payment_method"
    );
    // Back online, the operator clears it and the payment can start again.
    sim.set_reader_online(&w.reader, true);
    assert!(api.cancel_action(&w.reader).await.ok()["action"].is_null());
    api.process(&w.reader, &pi).await.ok();
}

#[tokio::test(start_paused = true)]
async fn latency_holds_the_key_so_a_concurrent_duplicate_gets_409() {
    let sim = spawn(SimConfig::default()).await.unwrap();
    let api = Api::new(&sim);
    let a = api.account("US").await;
    let mut slow = FaultRule::new(FaultKind::Latency, "POST", "/v1/payment_intents").times(1);
    slow.latency_ms = Some(5_000);
    sim.set_faults(Faults {
        rules: vec![slow],
        ..Faults::default()
    });
    let started = tokio::time::Instant::now();
    let p = pi_params();
    let (first, second) = tokio::join!(
        api.post_key("/v1/payment_intents", &p, Some(&a), "dup"),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            api.post_key("/v1/payment_intents", &p, Some(&a), "dup")
                .await
        }
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    first.ok();
    assert_eq!(second.header("stripe-should-retry"), Some("true"));
    second.err(409, Some("idempotency_key_in_use"));
    // Retried after the first finished, it replays.
    let r = api
        .post_key("/v1/payment_intents", &p, Some(&a), "dup")
        .await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(sim.payment_intent_count(Some(&a)), 1);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limiter_answers_429_with_the_limiter_reason() {
    let (sim, api) = emulator(SimConfig {
        rate_limit: Some(2),
        ..SimConfig::default()
    })
    .await;
    let q = Params::new();
    api.get("/v1/terminal/readers", &q, None).await.ok();
    api.get("/v1/terminal/readers", &q, None).await.ok();
    let r = api.get("/v1/terminal/readers", &q, None).await;
    assert_eq!(r.header("stripe-rate-limited-reason"), Some("global-rate"));
    r.err(429, Some("rate_limit"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.get("/v1/terminal/readers", &q, None).await.ok();
    // A one-shot limiter rule, with no limit set.
    sim.set_rate_limit(None);
    sim.set_faults(one_shot(FaultKind::RateLimit, "GET", "/v1/terminal/*"));
    api.get("/v1/terminal/readers", &q, None)
        .await
        .err(429, Some("rate_limit"));
    api.get("/v1/terminal/readers", &q, None).await.ok();
    // Object-lock contention: a 429 that is not a limiter (no reason header).
    sim.set_faults(one_shot(
        FaultKind::LockTimeout,
        "GET",
        "/v1/terminal/readers",
    ));
    let r = api.get("/v1/terminal/readers", &q, None).await;
    assert_eq!(r.header("stripe-rate-limited-reason"), None);
    r.err(429, Some("lock_timeout"));
    api.get("/v1/terminal/readers", &q, None).await.ok();
}

#[tokio::test]
async fn shares_of_faults_repeat_with_the_seed() {
    async fn run(seed: u64) -> Vec<u16> {
        let sim = spawn(SimConfig {
            seed,
            faults: Faults {
                error_rate: 0.5,
                ..Faults::default()
            },
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let api = Api::new(&sim);
        let mut out = Vec::new();
        for _ in 0..24 {
            out.push(
                api.get("/v1/terminal/locations", &Params::new(), None)
                    .await
                    .status,
            );
        }
        out
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
    assert_ne!(a, run(43).await);
}

#[tokio::test]
async fn faults_are_set_and_read_over_the_control_route() {
    let (sim, api) = instant().await;
    let http = reqwest::Client::new();
    let body = r#"{"latency_ms": 0, "rules": [{"kind": "error", "method": "GET", "path": "/v1/terminal/locations", "times": 2, "status": 503}]}"#;
    let r = http
        .post(format!("{}/_sim/faults", sim.base_url()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = get_json(&http, format!("{}/_sim/faults", sim.base_url())).await;
    assert_eq!(got["rules"][0]["times"], 2);
    for _ in 0..2 {
        api.get("/v1/terminal/locations", &Params::new(), None)
            .await
            .err(503, None);
    }
    api.get("/v1/terminal/locations", &Params::new(), None)
        .await
        .ok();
    assert!(sim.faults().rules.is_empty());
    let r = http
        .post(format!("{}/_sim/faults", sim.base_url()))
        .body(r#"{"no_such_fault": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_stored_5xx_is_replayed_for_its_key_whether_or_not_the_work_was_done() {
    let (sim, api) = instant().await;
    let a = api.account("US").await;
    for (executed, key, intents) in [(false, "k-not-done", 0), (true, "k-done", 1)] {
        sim.set_faults(Faults {
            rules: vec![
                FaultRule::new(FaultKind::ErrorStored, "POST", "/v1/payment_intents")
                    .executed(executed)
                    .times(1),
            ],
            ..Faults::default()
        });
        let r = api
            .post_key("/v1/payment_intents", &pi_params(), Some(&a), key)
            .await;
        assert_eq!(r.header("stripe-should-retry"), Some("false"));
        assert_eq!(r.err(500, None)["type"], "api_error");
        assert_eq!(sim.payment_intent_count(Some(&a)), intents, "{key}");
        // The key now only replays the stored failure; nothing runs again.
        for _ in 0..2 {
            let r = api
                .post_key("/v1/payment_intents", &pi_params(), Some(&a), key)
                .await;
            assert_eq!(r.header("idempotent-replayed"), Some("true"));
            assert_eq!(r.header("stripe-should-retry"), Some("false"));
            r.err(500, None);
        }
        assert_eq!(sim.payment_intent_count(Some(&a)), intents, "{key}");
    }
    // A new key runs the request.
    api.post_key("/v1/payment_intents", &pi_params(), Some(&a), "k-new")
        .await
        .ok();
    assert_eq!(sim.payment_intent_count(Some(&a)), 2);
    let faults: Vec<_> = sim.requests().into_iter().filter_map(|r| r.fault).collect();
    assert_eq!(faults, ["error_stored", "error_stored"]);
}
