//! Reviewed payments and crashes, with the real binary: `readerd run` killed between each
//! key written and its request sent, and between each request sent and its outcome
//! recorded — the card's collection (`before_dispatch`, `after_dispatch`), the surcharge
//! (`before_surcharge`, `after_surcharge`) and the confirm (`before_confirm`,
//! `after_confirm`); restarted on the same store, each payment ends once, paid the amount
//! plus the surcharge, with the card collected once and authorised once on the reader.

use crate::payments_crash::{one_reader, OneReader, POS};
use serde_json::{json, Value};

const COLLECT: [&str; 2] = ["before_dispatch", "after_dispatch"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_around_each_step_of_a_review_each_payment_is_paid_once() {
    let dir = tempfile::tempdir().unwrap();
    let OneReader {
        sim: _sim,
        ctx,
        config,
        reader,
        account: acct,
    } = one_reader(&dir, json!({"surcharge_max": 300})).await;
    let (http, sim_url) = (ctx.http.clone(), ctx.sim.clone());
    let pay = |key: String| {
        let ctx = &ctx;
        async move {
            ctx.http
                .post(format!("{}/v1/payments", ctx.api))
                .bearer_auth(POS)
                .header("Idempotency-Key", key)
                .json(&json!({"merchant": "bakery", "reader": "till", "amount": 1000, "currency": "eur", "flow": "review"}))
                .send()
                .await
        }
    };
    let confirm = |id: String| {
        let ctx = &ctx;
        async move {
            ctx.http
                .post(format!("{}/v1/payments/{id}/confirm", ctx.api))
                .bearer_auth(POS)
                .json(&json!({"surcharge": 150}))
                .send()
                .await
        }
    };

    let steps = [
        "before_dispatch",
        "after_dispatch",
        "before_surcharge",
        "after_surcharge",
        "before_confirm",
        "after_confirm",
    ];
    for (n, step) in steps.into_iter().enumerate() {
        let collects = ctx.executed("/collect_payment_method").await;
        let confirms = ctx.executed("/confirm_payment_intent").await;
        let key = format!("review-{n}");
        let (id, _d) = if COLLECT.contains(&step) {
            {
                let mut d = ctx.daemon(&config, Some(step)).await;
                // The answer may or may not make it out before the abort.
                let _ = pay(key.clone()).await;
                assert!(d.exited().await, "the daemon did not stop at {step}");
            }
            let d = ctx.daemon(&config, None).await;
            // The same key answers the payment accepted before the crash.
            let p: Value = pay(key.clone()).await.unwrap().json().await.unwrap();
            let id = p["id"].as_str().unwrap().to_string();
            ctx.wait_on_reader(&id).await;
            ctx.present(&reader).await;
            ctx.wait(&id, "showing its card", |p| {
                p["status"] == "requires_confirmation" && p["card"]["last4"] == "4242"
            })
            .await;
            let r = confirm(id.clone()).await.unwrap();
            assert!(r.status().is_success(), "{step}: {:?}", r.text().await);
            ctx.wait(&id, "paid", |p| p["status"] == "succeeded").await;
            (id, d)
        } else {
            let id = {
                let _d = ctx.daemon(&config, None).await;
                let p: Value = pay(key.clone()).await.unwrap().json().await.unwrap();
                let id = p["id"].as_str().unwrap().to_string();
                ctx.wait_on_reader(&id).await;
                ctx.present(&reader).await;
                ctx.wait(&id, "showing its card", |p| {
                    p["status"] == "requires_confirmation"
                })
                .await;
                id
            };
            {
                // Restarted, the payment holds the reader again, waiting for the confirm.
                let mut d = ctx.daemon(&config, Some(step)).await;
                let _ = confirm(id.clone()).await;
                // A loaded machine may take a while to resume the payment; 30 s at most.
                let stopped = d.exited().await || d.exited().await || d.exited().await;
                assert!(stopped, "the daemon did not stop at {step}");
            }
            let d = ctx.daemon(&config, None).await;
            ctx.wait(&id, "paid", |p| p["status"] == "succeeded").await;
            (id, d)
        };
        let p = ctx.get(&id).await;
        assert_eq!(p["amount_captured"], 1150, "{step}: {p:#}");
        assert_eq!(p["surcharge"], 150, "{step}");
        // On the emulator's books: the PaymentIntent's amount is the amount plus the
        // surcharge, and it is paid.
        let pi: Value = http
            .get(format!(
                "{sim_url}/v1/payment_intents/{}",
                p["payment_intent"].as_str().unwrap()
            ))
            .bearer_auth("sk_test_crash")
            .header("Stripe-Account", &acct)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (pi["amount"].clone(), pi["status"].clone()),
            (json!(1150), json!("succeeded")),
            "{step}"
        );
        // The card was read once and authorised once on the reader.
        assert_eq!(
            ctx.executed("/collect_payment_method").await - collects,
            1,
            "{step}: one collection"
        );
        assert_eq!(
            ctx.executed("/confirm_payment_intent").await - confirms,
            1,
            "{step}: one confirm"
        );
    }
}
