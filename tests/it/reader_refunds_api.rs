//! Refunds on the reader through the API and the command-line client: `202` and `pending`,
//! followed with Server-Sent Events to `succeeded`, and `readerd payments refund
//! --on-reader` waiting for the card.

use crate::common::TestEnv;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn wait(env: &TestEnv, token: &str, path: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        let (_, v) = env.get(token, path).await;
        if f(&v) {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never got there: {last:#}");
}

/// A succeeded payment of 1000 of the bakery on `reader`.
async fn paid(env: &TestEnv, reader: &str) -> String {
    let tok = env.pos("bakery");
    let (s, p) = env
        .post(
            tok,
            "/v1/payments",
            json!({"merchant": "bakery", "reader": reader, "amount": 1000, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    let path = format!("/v1/payments/{id}");
    wait(env, tok, &path, |p| p["waiting_for"] == "card").await;
    env.sim.present_card(reader, None).unwrap();
    wait(env, tok, &path, |p| p["status"] == "succeeded").await;
    id
}

#[tokio::test]
async fn a_refund_on_the_reader_is_followed_to_succeeded_and_the_cli_waits_for_the_card() {
    let env = TestEnv::start().await;
    env.add_merchant("bakery", "FR", "eur").await;
    let loc = env.add_location("Shop", "FR", None).await;
    let reader = env.add_reader("till", &loc).await;
    let tok = env.pos("bakery").to_string();
    let pay = paid(&env, &reader).await;

    let (s, rf) = env
        .post(
            &tok,
            &format!("/v1/payments/{pay}/refunds"),
            json!({"amount": 250, "on_reader": true, "reader": "till"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{rf}");
    assert_eq!(rf["status"], "pending");
    assert_eq!(rf["on_reader"]["reader"], reader.as_str());
    let path = format!("/v1/payments/{pay}/refunds/{}", rf["id"].as_str().unwrap());
    let mut sse = env
        .http
        .get(format!("{}{path}/events", env.api_url))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    wait(&env, &tok, &path, |r| r["on_reader"]["step"] == "on_reader").await;
    env.sim.present_card(&reader, None).unwrap();
    let done = wait(&env, &tok, &path, |r| r["status"] == "succeeded").await;
    assert!(done["refund"].as_str().unwrap().starts_with("re_"));
    assert_eq!(done["payment_object"]["amount_refunded"], 250);
    let mut text = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
        .await
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let seen: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| {
            let v: Value = serde_json::from_str(d.trim()).unwrap();
            (
                v["status"].as_str().unwrap().to_string(),
                v["on_reader"]["step"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(text.contains("event: refund"), "{text}");
    assert_eq!(seen.first().unwrap().0, "pending", "{text}");
    assert!(
        seen.iter()
            .any(|(s, st)| s == "pending" && st == "on_reader"),
        "{text}"
    );
    assert_eq!(seen.last().unwrap().0, "succeeded", "{text}");
    // A final refund cannot be canceled.
    let (s, _) = env.post(&tok, &format!("{path}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The command-line client waits for the card, then reports the refund.
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(["payments", "refund", &pay, "--amount", "300", "--on-reader"])
        .env("READERD_API", &env.api_url)
        .env("READERD_TOKEN", &tok)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiting = false;
    for _ in 0..500 {
        let reader = env.stripe().retrieve_reader(&reader).await.unwrap();
        if reader
            .action
            .as_ref()
            .is_some_and(|a| a.refund_payment.is_some() && a.status.as_str() == "in_progress")
        {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(waiting, "the CLI's refund never reached the reader");
    env.sim.present_card(&reader, None).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the CLI returns once the card is presented")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("waits for the customer's card"), "{stdout}");
    assert!(stdout.contains(": succeeded"), "{stdout}");
    let (_, p) = env.get(&tok, &format!("/v1/payments/{pay}")).await;
    assert_eq!(p["amount_refunded"], 550);
}
