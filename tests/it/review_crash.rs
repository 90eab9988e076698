//! Reviewed payments and crashes, with the real binary: `readerd run` killed between each
//! key written and its request sent, and between each request sent and its outcome
//! recorded — the card's collection (`before_dispatch`, `after_dispatch`), the surcharge
//! (`before_surcharge`, `after_surcharge`) and the confirm (`before_confirm`,
//! `after_confirm`); restarted on the same store, each payment ends once, paid the amount
//! plus the surcharge, with the card collected once and authorised once on the reader.

use crate::common::free_port;
use crate::payments_crash::{readerd, sled_store, wait_up, Ctx, Proc, ADMIN, POS};
use serde_json::{json, Value};
use std::process::Stdio;

const COLLECT: [&str; 2] = ["before_dispatch", "after_dispatch"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_around_each_step_of_a_review_each_payment_is_paid_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim_port = free_port();
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let _sim = Proc(
        readerd()
            .args(["sim", "--listen", &format!("127.0.0.1:{sim_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    wait_up(&http, &format!("{sim_url}/_sim/stats")).await;
    let acct: Value = http
        .post(format!("{sim_url}/_sim/accounts"))
        .json(&json!({"country": "FR", "default_currency": "eur"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let acct = acct["id"].as_str().unwrap().to_string();
    let api_port = free_port();
    let config = dir.path().join("readerd.toml");
    std::fs::write(
        &config,
        crate::common::daemon_toml(
            &sim_url,
            &sled_store(&dir),
            api_port,
            (ADMIN, POS),
            &["bakery"],
            "",
        ),
    )
    .unwrap();
    let ctx = Ctx {
        http: http.clone(),
        api: format!("http://127.0.0.1:{api_port}"),
        sim: sim_url.clone(),
        reader_account: None,
    };
    let reader = {
        let _d = ctx.daemon(&config, None).await;
        let m = ctx
            .admin_post(
                "/v1/merchants",
                json!({"id": "bakery", "account": acct, "surcharge_max": 300}),
            )
            .await;
        assert_eq!(m["surcharge_max"], 300);
        let loc = ctx
            .admin_post(
                "/v1/locations",
                json!({"display_name": "Shop", "address": {"line1": "1 rue", "city": "Paris", "postal_code": "75001", "country": "FR"}}),
            )
            .await;
        let r = ctx
            .admin_post(
                "/v1/readers",
                json!({"registration_code": "simulated-wpe", "label": "till", "location": loc["id"]}),
            )
            .await;
        r["id"].as_str().unwrap().to_string()
    };
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
