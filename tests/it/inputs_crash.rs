//! Input collections and crashes, with the real binary: `readerd run` killed between the
//! attempt's key written and `collect_inputs` sent, and between the action sent and the
//! customer's answer; restarted on the same store, each collection ends once, with exactly
//! one `collect_inputs` carried out on the reader.

use crate::payments_crash::{one_reader, Ctx, OneReader, POS};
use serde_json::{json, Value};
use std::time::Duration;

async fn list(ctx: &Ctx) -> Vec<Value> {
    let v: Value = ctx
        .http
        .get(format!("{}/v1/input_collections?reader=till", ctx.api))
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
            .get(format!("{}/v1/input_collections/{id}", ctx.api))
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
    panic!("input collection never {status}: {last:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_around_collect_inputs_each_collection_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    let OneReader {
        sim: _sim,
        ctx,
        config,
        reader,
        ..
    } = one_reader(&dir, json!({})).await;

    let mut sent_before = 0;
    for step in ["before_inputs_send", "after_inputs_sent"] {
        let known: Vec<Value> = {
            let _d = ctx.daemon(&config, None).await;
            list(&ctx).await
        };
        {
            let mut d = ctx.daemon(&config, Some(step)).await;
            // The answer may or may not make it out before the abort.
            let _ = ctx
                .http
                .post(format!("{}/v1/readers/till/inputs", ctx.api))
                .bearer_auth(POS)
                .json(&json!({"inputs": [{"type": "email", "required": true, "custom_text": {"title": "Email for the receipt"}}]}))
                .send()
                .await;
            assert!(d.exited().await, "the daemon did not stop at {step}");
        }
        let _d = ctx.daemon(&config, None).await;
        let now = list(&ctx).await;
        assert_eq!(
            now.len(),
            known.len() + 1,
            "{step}: the collection was on disk"
        );
        let id = now[0]["id"].as_str().unwrap().to_string();
        wait_status(&ctx, &id, "collecting").await;
        // Carried out on the reader, not replayed from a key.
        let sent = ctx.executed("/collect_inputs").await;
        assert_eq!(
            sent - sent_before,
            1,
            "{step}: collect_inputs carried out once on the reader"
        );
        sent_before = sent;
        let r = ctx
            .http
            .post(format!(
                "{}/v1/test_helpers/terminal/readers/{reader}/succeed_input_collection",
                ctx.sim
            ))
            .bearer_auth("sk_test_crash")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        let done = wait_status(&ctx, &id, "succeeded").await;
        assert_eq!(done["inputs"][0]["value"], "customer@example.com", "{step}");
        // Killed after the send: the action on the reader is followed, not sent again.
        // Killed before it: the reader shows nothing of ours, so a new attempt is sent.
        let attempts = if step == "after_inputs_sent" { 1 } else { 2 };
        assert_eq!(done["attempts"], attempts, "{step}");
    }
}
