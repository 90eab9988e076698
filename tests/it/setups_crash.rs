//! Saved cards and crashes, with the real binary: `readerd run` killed between the
//! attempt's key written and `process_setup_intent` sent, and between the action sent and
//! the customer's card; restarted on the same store, each setup ends once, with one
//! SetupIntent and exactly one `process_setup_intent` carried out on the reader.

use crate::payments_crash::{one_reader, Ctx, OneReader, POS};
use serde_json::{json, Value};
use std::time::Duration;

async fn list(ctx: &Ctx) -> Vec<Value> {
    let v: Value = ctx
        .http
        .get(format!("{}/v1/setups?reader=till", ctx.api))
        .bearer_auth(POS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v.as_array().unwrap().clone()
}

async fn wait_status(ctx: &Ctx, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1000 {
        let c: Value = ctx
            .http
            .get(format!("{}/v1/setups/{id}", ctx.api))
            .bearer_auth(POS)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if c["status"] == status {
            return c;
        }
        last = c;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("setup never {status}: {last:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_around_process_setup_intent_each_setup_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    let OneReader {
        sim: _sim,
        ctx,
        config,
        reader,
        ..
    } = one_reader(&dir, json!({})).await;

    let mut sent_before = 0;
    for (n, step) in ["before_setup_send", "after_setup_sent"]
        .into_iter()
        .enumerate()
    {
        let known: Vec<Value> = {
            let _d = ctx.daemon(&config, None).await;
            list(&ctx).await
        };
        {
            let mut d = ctx.daemon(&config, Some(step)).await;
            // The answer may or may not make it out before the abort.
            let _ = ctx
                .http
                .post(format!("{}/v1/setups", ctx.api))
                .bearer_auth(POS)
                .json(&json!({"merchant": "bakery", "reader": "till", "customer": "cus_crash1", "allow_redisplay": "limited"}))
                .send()
                .await;
            assert!(d.exited().await, "the daemon did not stop at {step}");
        }
        let _d = ctx.daemon(&config, None).await;
        let now = list(&ctx).await;
        assert_eq!(now.len(), known.len() + 1, "{step}: the setup was on disk");
        let id = now[0]["id"].as_str().unwrap().to_string();
        wait_status(&ctx, &id, "processing").await;
        // Carried out on the reader, not replayed from a key.
        let sent = ctx.executed("/process_setup_intent").await;
        assert_eq!(
            sent - sent_before,
            1,
            "{step}: process_setup_intent carried out once on the reader"
        );
        sent_before = sent;
        // One SetupIntent per setup: its creation key was on disk, and it was made before.
        assert_eq!(ctx.executed("/v1/setup_intents").await, n + 1, "{step}");
        let r = ctx
            .http
            .post(format!(
                "{}/v1/test_helpers/terminal/readers/{reader}/present_payment_method",
                ctx.sim
            ))
            .bearer_auth("sk_test_crash")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        let done = wait_status(&ctx, &id, "succeeded").await;
        assert!(
            done["payment_method"].as_str().unwrap().starts_with("pm_"),
            "{step}: {done:#}"
        );
        // Killed after the send: the action on the reader is followed, not sent again.
        // Killed before it: the reader shows nothing of ours, so a new attempt is sent.
        let attempts = if step == "after_setup_sent" { 1 } else { 2 };
        assert_eq!(done["attempts"], attempts, "{step}");
    }
}
