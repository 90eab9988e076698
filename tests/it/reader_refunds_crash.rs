//! Refunds on the reader and crashes, with the real binary: `readerd run` killed between the
//! attempt's key written and `refund_payment` sent, and between the action sent and the
//! card; restarted on the same store, each refund ends once, with exactly one
//! `refund_payment` carried out on the reader and exactly one refund on Stripe.

use crate::common::get_json;
use crate::payments_crash::{one_reader, Ctx, OneReader, POS};
use serde_json::{json, Value};
use std::time::Duration;

async fn get(ctx: &Ctx, path: &str) -> Value {
    ctx.http
        .get(format!("{}{path}", ctx.api))
        .bearer_auth(POS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait(ctx: &Ctx, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..1000 {
        let v = get(ctx, path).await;
        if f(&v) {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never {what}: {last:#}");
}

async fn present(ctx: &Ctx, reader: &str) {
    let r = ctx
        .http
        .post(format!(
            "{}/v1/test_helpers/terminal/readers/{reader}/present_payment_method",
            ctx.sim
        ))
        .bearer_auth("sk_test_crash")
        .form(&[("type", "interac_present")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

async fn refund(ctx: &Ctx, pay: &str, key: &str) -> reqwest::Result<reqwest::Response> {
    ctx.http
        .post(format!("{}/v1/payments/{pay}/refunds", ctx.api))
        .bearer_auth(POS)
        .header("Idempotency-Key", key)
        .json(&json!({"amount": 100, "on_reader": true}))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_around_refund_payment_each_refund_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    let OneReader {
        sim: _sim,
        ctx,
        config,
        reader,
        ..
    } = one_reader(&dir, json!({})).await;
    let (http, sim_url) = (ctx.http.clone(), ctx.sim.clone());
    // A payment of 1000 that succeeded.
    let pay = {
        let _d = ctx.daemon(&config, None).await;
        let p: Value = http
            .post(format!("{}/v1/payments", ctx.api))
            .bearer_auth(POS)
            .json(
                &json!({"merchant": "bakery", "reader": "till", "amount": 1000, "currency": "eur"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pay = p["id"].as_str().unwrap().to_string();
        let path = format!("/v1/payments/{pay}");
        wait(&ctx, &path, "on the reader", |p| p["waiting_for"] == "card").await;
        present(&ctx, &reader).await;
        wait(&ctx, &path, "succeeded", |p| p["status"] == "succeeded").await;
        pay
    };

    let mut sent_before = 0;
    for (n, step) in ["before_reader_refund", "after_reader_refund_sent"]
        .into_iter()
        .enumerate()
    {
        let key = format!("crash-{step}");
        {
            let mut d = ctx.daemon(&config, Some(step)).await;
            // The answer may or may not make it out before the abort.
            let _ = refund(&ctx, &pay, &key).await;
            assert!(d.exited().await, "the daemon did not stop at {step}");
        }
        let _d = ctx.daemon(&config, None).await;
        // The same key finds the same refund: it was on disk before anything was sent.
        let r: Value = refund(&ctx, &pay, &key)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rid = r["id"].as_str().unwrap().to_string();
        let path = format!("/v1/payments/{pay}/refunds/{rid}");
        let r = wait(&ctx, &path, "on the reader", |r| {
            r["on_reader"]["step"] == "on_reader"
        })
        .await;
        assert_eq!(r["status"], "pending", "{step}");
        // Carried out on the reader once, not replayed from a key.
        let sent = ctx.executed("/refund_payment").await;
        assert_eq!(
            sent - sent_before,
            1,
            "{step}: refund_payment carried out once on the reader"
        );
        sent_before = sent;
        present(&ctx, &reader).await;
        let done = wait(&ctx, &path, "succeeded", |r| r["status"] == "succeeded").await;
        assert!(done["refund"].as_str().unwrap().starts_with("re_"));
        // Killed after the send: the action on the reader is followed, not sent again.
        // Killed before it: the reader shows nothing of ours, so a new attempt is sent.
        let attempts = if step == "after_reader_refund_sent" {
            1
        } else {
            2
        };
        assert_eq!(done["on_reader"]["attempts"], attempts, "{step}");
        // Exactly one refund on Stripe per refund asked for.
        let p = get(&ctx, &format!("/v1/payments/{pay}")).await;
        assert_eq!(p["amount_refunded"], 100 * (n as i64 + 1), "{step}");
        let refunds: Value = get_json(&http, format!("{sim_url}/_sim/requests")).await;
        let created = refunds
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"] == "/v1/refunds" && r["method"] == "POST")
            .count();
        assert_eq!(created, 0, "{step}: never sent with POST /v1/refunds");
    }
}
