//! `readerd run` as the real binary: it serves the API from its config, keeps the registry
//! across restarts, and exits cleanly on SIGTERM and SIGINT.

use crate::common::free_port;
use readerd::api::auth::token_sha256;
use readerd::sim::{self, SimConfig};
use readerd::stripe::wire::CapabilityStatus;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use tokio::process::{Child, Command};

async fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("READERD_STRIPE_SECRET_KEY", "sk_test_readerd_run")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starts readerd run")
}

/// Waits until the API answers `/healthz` (bounded; the process may still be starting).
async fn wait_healthy(http: &reqwest::Client, api: &str) {
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("{api}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("readerd run did not come up at {api}");
}

async fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args([sig, &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn run_serves_keeps_its_store_and_stops_on_signals() {
    let sim = sim::spawn(SimConfig::default()).await.unwrap();
    let acct = sim.create_account("FR", "eur", CapabilityStatus::Active);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("readerd.toml");
    std::fs::write(
        &config,
        format!(
            "[stripe]\napi_base = \"{}\"\n[store]\npath = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\n[[api.clients]]\nname = \"ops\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\n[log]\nformat = \"json\"\n",
            sim.base_url(),
            dir.path().join("store").display().to_string(),
            token_sha256("run-admin"),
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();

    let mut child = start(&config).await;
    wait_healthy(&http, &api).await;
    let resp = http
        .post(format!("{api}/v1/merchants"))
        .bearer_auth("run-admin")
        .json(&json!({"id": "bakery", "account": acct}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    signal(&child, "-TERM").await;
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "a clean exit on SIGTERM");

    let mut child = start(&config).await;
    wait_healthy(&http, &api).await;
    let list: Value = http
        .get(format!("{api}/v1/merchants"))
        .bearer_auth("run-admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["id"], "bakery", "the merchant survives the restart");
    signal(&child, "-INT").await;
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "a clean exit on SIGINT");
    sim.shutdown().await;
}

#[tokio::test]
async fn run_refuses_a_store_written_by_a_newer_readerd() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    {
        let r = readerd::store::Registry::open(&store).unwrap();
        r.store()
            .put(readerd::store::Tree::Meta, "schema_version", b"99")
            .unwrap();
    }
    let config = dir.path().join("readerd.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n[api]\nlisten = \"127.0.0.1:{}\"\n",
            store.display().to_string(),
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_readerd"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("READERD_STRIPE_SECRET_KEY", "sk_test_x")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 99"), "{err}");
}
