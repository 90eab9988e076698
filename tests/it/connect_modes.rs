//! Live and sandbox never mix: a store is bound at its first start to the key's mode and
//! the platform; the other mode or another platform is refused (exit 64, naming both, no
//! byte of the store changed); events of the other mode are refused and counted; the
//! emulator keeps the two worlds apart.

use crate::common::{TestEnv, SECRET_KEY, WEBHOOK_SECRET};
use readerd::config::{Secrets, WebhookSecret};
use readerd::daemon::{Daemon, DaemonError};
use readerd::sim::{self, SimConfig};
use readerd::store::binding::{self, Mode};
use readerd::store::Tree;
use readerd::stripe::SecretKey;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Every file under `dir` with its bytes.
fn bytes_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn secrets(key: &str) -> Secrets {
    Secrets {
        stripe_key: SecretKey::new(key),
        webhook_secret: Some(WebhookSecret::new(WEBHOOK_SECRET)),
    }
}

async fn start(config: &readerd::config::Config, key: &str) -> Result<(), DaemonError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = Daemon::new(config.clone(), secrets(key))
        .start(listener)
        .await?;
    handle.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_store_is_bound_at_its_first_start_and_refuses_the_other_mode_and_platform() {
    let mut env = TestEnv::start().await;
    let platform = env.sim.platform_account();
    let b = binding::read(&env.store_path).unwrap().expect("bound");
    assert_eq!(b.mode, Mode::Test);
    assert_eq!(b.platform.as_deref(), Some(platform.as_str()));
    let (s, ready) = env.get("", "/readyz").await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    assert_eq!(ready["mode"], "test");
    assert_eq!(ready["platform"], platform.as_str());
    env.stop_daemon().await;
    let before = bytes_of(&env.store_path);

    // A live key on the test store.
    let e = start(&env.config, "sk_live_readerd_tests")
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DaemonError::Binding(_)), "{e:?}");
    assert!(
        text.contains("test mode") && text.contains("live mode"),
        "{text}"
    );
    assert_eq!(
        format!("{:?}", e.exit_code()),
        format!("{:?}", std::process::ExitCode::from(64))
    );
    assert!(bytes_of(&env.store_path) == before, "the store changed");

    // A test key of another platform.
    let other = sim::spawn(SimConfig {
        seed: 4242,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    assert_ne!(other.platform_account(), platform);
    let mut elsewhere = env.config.clone();
    elsewhere.stripe.api_base = other.base_url();
    let e = start(&elsewhere, SECRET_KEY).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&platform) && text.contains(&other.platform_account()),
        "{text}"
    );
    assert!(bytes_of(&env.store_path) == before, "the store changed");
    other.shutdown().await;

    // The binary: exit 64 naming both modes; check-config says what the store is bound to.
    let config = env.store_path.parent().unwrap().join("readerd.toml");
    std::fs::write(
        &config,
        format!(
            "[stripe]\napi_base = \"{}\"\n\n[store]\npath = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
            env.sim.base_url(),
            env.store_path.display()
        ),
    )
    .unwrap();
    let run = |cmd: &str, key: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_readerd"))
            .args([cmd, "--config"])
            .arg(&config)
            .env("READERD_STRIPE_SECRET_KEY", key)
            .output()
            .unwrap()
    };
    let out = run("run", "sk_live_readerd_tests");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("test mode") && stderr.contains("live mode"),
        "{stderr}"
    );
    assert!(bytes_of(&env.store_path) == before, "the store changed");
    let out = run("check-config", SECRET_KEY);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("bound to test mode") && stdout.contains(&platform),
        "{stdout}"
    );
    let out = run("check-config", "sk_live_readerd_tests");
    assert_eq!(out.status.code(), Some(64));

    // The right key still starts it.
    env.restart().await;
    env.stop().await;
}

#[tokio::test]
async fn an_event_of_the_other_mode_is_refused_counted_and_changes_nothing() {
    let env = TestEnv::start().await;
    let event = json!({
        "id": "evt_live_1", "object": "event", "type": "payment_intent.succeeded",
        "api_version": "2026-07-29.dahlia", "created": 1_800_000_000, "livemode": true,
        "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "data": {"object": {"id": "pi_live_1", "object": "payment_intent"}}
    });
    let body = serde_json::to_vec(&event).unwrap();
    let now = readerd::clock::now_secs();
    let send = |body: Vec<u8>| {
        env.http
            .post(format!("{}/webhooks/stripe", env.api_url))
            .header(
                "Stripe-Signature",
                readerd::stripe::webhook::header(WEBHOOK_SECRET, now, &body),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = send(body).await.unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "livemode_mismatch", "{e}");
    let events = env
        .state()
        .registry
        .store()
        .scan(Tree::WebhookEvents)
        .unwrap();
    assert!(events.is_empty(), "the refused event was recorded");
    let metrics = env
        .http
        .get(format!("{}/metrics", env.api_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"readerd_webhook_events_rejected_total{reason="livemode_mismatch"} 1"#),
        "{metrics}"
    );
    // The same event in test mode is taken.
    let mut test = event.clone();
    test["livemode"] = false.into();
    test["id"] = "evt_test_1".into();
    let r = send(serde_json::to_vec(&test).unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    env.stop().await;
}

#[tokio::test]
async fn the_emulator_keeps_two_worlds() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let acct = sim.create_account("FR", "eur", readerd::stripe::wire::CapabilityStatus::Active);
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, key: &str, account: Option<&str>| {
        let mut r = http
            .request(method, format!("{}{path}", sim.base_url()))
            .basic_auth(key, Some(""));
        if let Some(a) = account {
            r = r.header("Stripe-Account", a);
        }
        r
    };
    for (key, live) in [("sk_test_worlds", false), ("sk_live_worlds", true)] {
        // The same platform and connected accounts in both.
        let me: Value = call(reqwest::Method::GET, "/v1/account", key, None)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["id"], sim.platform_account().as_str());
        let r = call(
            reqwest::Method::GET,
            &format!("/v1/accounts/{acct}"),
            key,
            None,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let loc: Value = call(
            reqwest::Method::POST,
            "/v1/terminal/locations",
            key,
            Some(&acct),
        )
        .form(&[
            ("display_name", "Shop"),
            ("address[country]", "FR"),
            ("address[city]", "Paris"),
            ("address[line1]", "1 Rue"),
            ("address[postal_code]", "75001"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(loc["livemode"], live, "{loc}");
        let other = if live {
            "sk_test_worlds"
        } else {
            "sk_live_worlds"
        };
        let id = loc["id"].as_str().unwrap();
        let seen = call(
            reqwest::Method::GET,
            &format!("/v1/terminal/locations/{id}"),
            other,
            Some(&acct),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(seen.status(), 404, "the other world sees {id}");
        let list: Value = call(
            reqwest::Method::GET,
            "/v1/terminal/locations",
            key,
            Some(&acct),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    }
    sim.shutdown().await;
}
