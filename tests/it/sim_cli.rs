//! `readerd sim` as a standalone process: it starts, announces its address, serves Stripe's
//! API and the control routes, and documents its flags.

use crate::common::get_json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn readerd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_readerd"))
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_standalone_emulator_serves_until_stopped() {
    let child = readerd()
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "9",
            "--auth-delay",
            "0s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("readerd runs");
    let mut child = Child(child);
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address announced: {line}"))
        .to_string();
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/v1/terminal/readers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/v1/terminal/locations"))
        .basic_auth("sk_test_cli", Some(""))
        .form(&[("display_name", "HQ"), ("address[country]", "US")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log: serde_json::Value = get_json(&http, format!("{base}/_sim/requests")).await;
    assert_eq!(log.as_array().unwrap().len(), 2);
    assert_eq!(log[1]["path"], "/v1/terminal/locations");
    let counts: serde_json::Value = get_json(&http, format!("{base}/_sim/requests/counts")).await;
    assert_eq!(
        counts,
        serde_json::json!([
            {"method": "GET", "endpoint": "/v1/terminal/readers", "status": 401, "count": 1},
            {"method": "POST", "endpoint": "/v1/terminal/locations", "status": 200, "count": 1},
        ])
    );
    let taps: serde_json::Value = get_json(&http, format!("{base}/_sim/taps?after=0")).await;
    assert_eq!(taps, serde_json::json!([]));
}

/// The emulator a parent starts with `--exit-with-stdin` stops once that parent's end of
/// its stdin closes, as when the parent dies, so it is never left running on its own.
#[tokio::test]
async fn the_emulator_stops_when_its_stdin_closes() {
    let child = readerd()
        .args(["sim", "--listen", "127.0.0.1:0", "--exit-with-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("readerd runs");
    let mut child = Child(child);
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(line.contains("http://"), "{line}");
    assert!(child.0.try_wait().unwrap().is_none(), "it serves meanwhile");
    drop(child.0.stdin.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after its stdin closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn flags_are_documented_and_checked() {
    let out = readerd().args(["sim", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--seed",
        "--auth-delay",
        "--auto-present",
        "--auto-present-max",
        "--webhook-url",
        "--webhook-secret",
        "--rate-limit",
        "--latency",
        "--error-rate",
        "--drop-before-rate",
        "--drop-after-rate",
        "--reader-timeout-rate",
        "--offline-mid-action-rate",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("127.0.0.1:12111"));
    let out = readerd()
        .args(["sim", "--listen", "127.0.0.1:0", "--error-rate", "1.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
