//! `GET /metrics` of a whole daemon after real activity against the emulator: payments,
//! Stripe requests (with a retry and rate-limiter waits), readers, a pending capture and
//! webhooks; and the graceful drain (503 for new work, reads still served).

use crate::payments_api::{pos_token, start, Api, ADMIN};
use readerd::sim::{FaultKind, FaultRule, Faults, SimConfig};
use readerd::stripe::webhook;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

async fn scrape(api: &Api) -> String {
    let resp = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    resp.text().await.unwrap()
}

/// The value of the sample whose name-and-labels part starts with `series` (e.g.
/// `readerd_payments_total{merchant="bakery",status="succeeded"}`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every family operators scrape: name, type, HELP and label names. A rename or a changed
/// label set is a breaking change for dashboards and alerts (list it in CHANGELOG.md).
const FAMILIES: &[(&str, &str, &str, &[&str])] = &[
    (
        "readerd_build_info",
        "gauge",
        "Always 1; the version label says which readerd runs.",
        &["version"],
    ),
    (
        "readerd_start_time_seconds",
        "gauge",
        "Start time of the daemon, seconds since the Unix epoch.",
        &[],
    ),
    (
        "readerd_payments_total",
        "counter",
        "Payments that entered each status.",
        &["merchant", "status"],
    ),
    (
        "readerd_payments_current",
        "gauge",
        "Payments currently in each non-final status.",
        &["merchant", "status"],
    ),
    (
        "readerd_stripe_requests_total",
        "counter",
        "Stripe API request attempts by endpoint and HTTP status (error = no response).",
        &["endpoint", "method", "status"],
    ),
    (
        "readerd_stripe_retries_total",
        "counter",
        "Stripe API request attempts after the first (retries), by endpoint.",
        &["endpoint"],
    ),
    (
        "readerd_stripe_degraded",
        "gauge",
        "1 while Stripe is failing or slow for many requests.",
        &[],
    ),
    (
        "readerd_reader_online",
        "gauge",
        "1 if the reader is online and seen recently.",
        &["reader"],
    ),
    (
        "readerd_reader_busy",
        "gauge",
        "1 while the reader holds an action.",
        &["reader"],
    ),
    (
        "readerd_reader_queue_depth",
        "gauge",
        "Commands waiting for the reader.",
        &["reader"],
    ),
    (
        "readerd_reader_last_seen_age_seconds",
        "gauge",
        "Seconds since Stripe last heard from the reader.",
        &["reader"],
    ),
    (
        "readerd_authorizations_awaiting_capture",
        "gauge",
        "Authorised payments waiting for a manual capture.",
        &["merchant"],
    ),
    (
        "readerd_authorization_capture_seconds_left",
        "gauge",
        "Seconds left before the authorisation's capture_before (negative: lapsed).",
        &["merchant", "payment"],
    ),
    (
        "readerd_webhook_events_accepted_total",
        "counter",
        "Stripe webhook events accepted, by event type.",
        &["type"],
    ),
    (
        "readerd_webhooks_tracking",
        "gauge",
        "1 while webhook events track payments and polls are a safety net, 0 while readerd polls by itself.",
        &[],
    ),
    (
        "readerd_webhook_events_rejected_total",
        "counter",
        "Stripe webhook events rejected, by reason.",
        &["reason"],
    ),
    (
        "readerd_api_requests_rejected_total",
        "counter",
        "API requests refused by the daemon's own state, by reason.",
        &["reason"],
    ),
    (
        "readerd_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP), by result.",
        &["result"],
    ),
    (
        "readerd_stripe_objects_refused_total",
        "counter",
        "Stripe answers refused for what they held, by reason.",
        &["reason"],
    ),
    (
        "readerd_transfers_total",
        "counter",
        "Separate charges' transfers and reversals, by merchant and outcome.",
        &["merchant", "result"],
    ),
    (
        "readerd_leases_held",
        "gauge",
        "Readers whose worker runs on this instance.",
        &[],
    ),
    (
        "readerd_lease_losses_total",
        "counter",
        "Reader leases lost without being given up.",
        &[],
    ),
    (
        "readerd_lease_handovers_total",
        "counter",
        "Readers taken over from another tenure.",
        &[],
    ),
    (
        "readerd_operations_forwarded_total",
        "counter",
        "Payment operations handed to the instance working the reader.",
        &["op"],
    ),
    (
        "readerd_stripe_request_duration_seconds",
        "histogram",
        "Latency of Stripe API request attempts.",
        &["endpoint"],
    ),
    (
        "readerd_stripe_rate_limiter_wait_seconds",
        "histogram",
        "Time requests waited for the client-side Stripe rate limiter.",
        &[],
    ),
];

/// The scrape has exactly [`FAMILIES`], in that order, and every sample belongs to one of
/// them with its label names (plus `le` on histogram buckets) and a number for a value.
fn assert_families(text: &str) {
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    let want: Vec<String> = FAMILIES
        .iter()
        .flat_map(|(name, kind, help, _)| {
            [
                format!("# HELP {name} {help}"),
                format!("# TYPE {name} {kind}"),
            ]
        })
        .collect();
    assert_eq!(headers, want, "families changed:\n{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let mut keys: Vec<&str> = if labels.is_empty() {
            vec![]
        } else {
            // Label values here hold no `",`; split on the pairs' separators.
            labels
                .split("\",")
                .map(|kv| kv.split('=').next().unwrap())
                .collect()
        };
        let family = FAMILIES
            .iter()
            .find(|(n, kind, ..)| {
                name == *n
                    || (*kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(n)))
            })
            .unwrap_or_else(|| panic!("sample of no family: {line}"));
        if name.ends_with("_bucket") {
            assert_eq!(keys.pop(), Some("le"), "{line}");
        }
        assert_eq!(keys, family.3, "{line}");
    }
}

fn id(p: &serde_json::Value) -> String {
    p["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn metrics_carry_payments_stripe_readers_captures_and_webhooks() {
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        // The first PaymentIntent creation fails once with a retryable 500.
        faults: Faults {
            rules: vec![FaultRule::new(FaultKind::Error, "POST", "/v1/payment_intents").times(1)],
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let bakery = pos_token("bakery");
    let till1 = api.readers["till-1"].clone();
    let till2 = api.readers["till-2"].clone();

    // An automatic payment that succeeds, a manual one left awaiting capture.
    let paid = api.pay("bakery", "till-1", 1250, "automatic").await;
    api.wait_card(&bakery, &id(&paid)).await;
    api.sim.present_card(&till1, None).unwrap();
    api.wait_status(&bakery, &id(&paid), "succeeded").await;
    let held = api.pay("bakery", "till-2", 4000, "manual").await;
    api.wait_card(&bakery, &id(&held)).await;
    api.sim.present_card(&till2, None).unwrap();
    api.wait_status(&bakery, &id(&held), "requires_capture")
        .await;

    // A forged webhook.
    let body = br#"{"id":"evt_forged","object":"event","type":"payment_intent.succeeded","data":{"object":{}}}"#;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (s, e) = api
        .send(
            api.http
                .post(format!("{}/webhooks/stripe", api.url))
                .header(
                    "Stripe-Signature",
                    format!("t={t},v1={}", webhook::sign("whsec_wrong", t, body)),
                )
                .body(body.to_vec()),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    // A burst larger than the client's rate limit (20/s): some requests wait their turn.
    let stripe = api._daemon.as_ref().unwrap().state.stripe.clone();
    let burst = (0..40).map(|_| {
        let stripe = stripe.clone();
        let reader = till1.clone();
        async move { stripe.retrieve_reader(&reader).await.map(|_| ()) }
    });
    for r in futures_util::future::join_all(burst).await {
        r.unwrap();
    }

    // The emulator delivers its webhooks asynchronously: wait for the first to count.
    let mut text = scrape(&api).await;
    for _ in 0..500 {
        if text.contains("readerd_webhook_events_accepted_total{type=") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = scrape(&api).await;
    }

    assert_families(&text);
    let at_least_one = [
        r#"readerd_payments_total{merchant="bakery",status="queued"}"#,
        r#"readerd_payments_total{merchant="bakery",status="processing"}"#,
        r#"readerd_payments_total{merchant="bakery",status="succeeded"}"#,
        r#"readerd_payments_total{merchant="bakery",status="requires_capture"}"#,
        r#"readerd_payments_current{merchant="bakery",status="requires_capture"}"#,
        r#"readerd_stripe_requests_total{endpoint="/v1/payment_intents",method="POST",status="200"}"#,
        r#"readerd_stripe_requests_total{endpoint="/v1/payment_intents",method="POST",status="500"}"#,
        r#"readerd_stripe_requests_total{endpoint="/v1/terminal/readers/{id}/process_payment_intent",method="POST",status="200"}"#,
        r#"readerd_stripe_request_duration_seconds_count{endpoint="/v1/payment_intents"}"#,
        r#"readerd_stripe_retries_total{endpoint="/v1/payment_intents"}"#,
        "readerd_stripe_rate_limiter_wait_seconds_count",
        r#"readerd_reader_online{reader=""#,
        r#"readerd_authorizations_awaiting_capture{merchant="bakery"}"#,
        "readerd_webhook_events_accepted_total{type=",
        r#"readerd_webhook_events_rejected_total{reason="bad_signature"}"#,
        "readerd_build_info{version=",
    ];
    for series in at_least_one {
        let v = value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(v >= 1.0, "{series} = {v}");
    }
    assert_eq!(
        value(
            &text,
            r#"readerd_authorizations_awaiting_capture{merchant="bakery"}"#
        ),
        Some(1.0)
    );
    let left = value(
        &text,
        &format!(
            r#"readerd_authorization_capture_seconds_left{{merchant="bakery",payment="{}"}}"#,
            id(&held)
        ),
    )
    .unwrap_or_else(|| panic!("no capture deadline in:\n{text}"));
    assert!(left > 0.0, "capture_before already past: {left}");
    for reader in [&till1, &till2] {
        for series in [
            "readerd_reader_online",
            "readerd_reader_busy",
            "readerd_reader_queue_depth",
        ] {
            let s = format!(r#"{series}{{reader="{reader}"}}"#);
            assert!(value(&text, &s).is_some(), "no {s} in:\n{text}");
        }
    }
    assert_eq!(
        value(
            &text,
            &format!(r#"readerd_reader_busy{{reader="{till1}"}}"#)
        ),
        Some(0.0)
    );
    assert_eq!(value(&text, "readerd_stripe_degraded"), Some(0.0));
    // The systemd status line says the same in words.
    let handle = api._daemon.as_ref().unwrap();
    let status = readerd::daemon::status_line(&handle.state, handle.addr);
    assert!(
        status.contains("3/3 readers online")
            && status.contains("1 payments open")
            && status.ends_with("Stripe ok"),
        "{status}"
    );
    // Nothing secret in the scrape.
    assert!(!text.contains("sk_test") && !text.contains("whsec"));

    // Captured: no longer awaiting.
    let (s, _) = api
        .post(
            &bakery,
            &format!("/v1/payments/{}/capture", id(&held)),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let text = scrape(&api).await;
    assert!(
        !text.contains(&format!("payment=\"{}\"", id(&held))),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"readerd_payments_total{merchant="bakery",status="succeeded"}"#
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn draining_refuses_new_work_with_503_and_keeps_serving_reads() {
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let bakery = pos_token("bakery");
    // One payment on the reader, one queued behind it.
    let first = api.pay("bakery", "till-1", 700, "automatic").await;
    api.wait_card(&bakery, &id(&first)).await;
    let second = api.pay("bakery", "till-1", 800, "automatic").await;
    let handle = api._daemon.as_ref().unwrap();
    handle.drain().await;

    // What is on the reader finishes; nothing new starts on it.
    api.sim.present_card(&api.readers["till-1"], None).unwrap();
    api.wait_status(&bakery, &id(&first), "succeeded").await;
    for _ in 0..25 {
        let (_, p) = api
            .get(&bakery, &format!("/v1/payments/{}", id(&second)))
            .await;
        assert_eq!(p["status"], "queued", "{p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (s, e) = api
        .post(
            &bakery,
            "/v1/payments",
            json!({"merchant": "bakery", "reader": "till-1", "amount": 500, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["error"]["code"], "shutting_down");
    let (s, _) = api.get(ADMIN, "/v1/readers").await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = api.get("", "/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    let text = scrape(&api).await;
    assert_eq!(
        value(
            &text,
            r#"readerd_api_requests_rejected_total{reason="shutting_down"}"#
        ),
        Some(1.0)
    );
}
