//! The OpenAPI document (`GET /openapi.json`) against the code and against real answers:
//!
//! - the served document equals the checked-in `docs/openapi.json` (after a deliberate API
//!   change, regenerate it with `READERD_BLESS=1 cargo test --test it api_openapi`), and it
//!   describes exactly the routes the daemon serves;
//! - it passes an OpenAPI 3.1 validator (`openapi-spec-validator`);
//! - a daemon's answers, for every route and every status the document lists for it, match
//!   the document's schemas (`jsonschema`).
//!
//! The validators are Python packages (`tests/openapi/check.py`, `requirements.txt`), which
//! `.ci/run` installs into `.venv`. Without them these tests fail and say how to install
//! them.

use crate::api_tenancy::{fill, quiet, table, wait_payment, world_with};
use crate::common::{TestEnv, WEBHOOK_SECRET};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has the validators: `$READERD_PYTHON`, else the repository's `.venv`,
/// else `python3` (whose missing packages `check.py` reports with the way to install them).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("READERD_PYTHON") {
        return p.into();
    }
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// Runs `tests/openapi/check.py args…`; panics with its output unless it passes.
fn check(args: &[&Path], what: &str) {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tests/openapi/check.py"));
    if what == "spec" {
        cmd.arg("spec");
    } else {
        cmd.arg("responses");
    }
    cmd.args(args);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {:?} ({e}): install Python 3 and the validators: python3 -m venv .venv && .venv/bin/pip install -r tests/openapi/requirements.txt",
            python()
        )
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check.py {what} failed:\n{text}");
    eprintln!("{text}");
}

#[tokio::test]
async fn the_served_document_is_the_snapshot_and_covers_every_route() {
    let env = TestEnv::start().await;
    let resp = env
        .http
        .get(format!("{}/openapi.json", env.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let served = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&served).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");

    let routes = &env.daemon.as_ref().unwrap().routes;
    let (undocumented, unserved) = readerd::api::openapi::differences(routes);
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document (add them to api::openapi::ApiDoc): {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "operations in the OpenAPI document that no route serves: {unserved:?}"
    );

    let snapshot = repo().join("docs/openapi.json");
    if std::env::var_os("READERD_BLESS").is_some() {
        std::fs::write(&snapshot, &served).expect("write docs/openapi.json");
    }
    let checked_in = std::fs::read_to_string(&snapshot).unwrap_or_default();
    assert!(
        checked_in == served,
        "the served OpenAPI document differs from docs/openapi.json; if the API change is \
         deliberate, regenerate the snapshot with `READERD_BLESS=1 cargo test --test it \
         api_openapi` and commit it"
    );
    env.stop().await;
}

#[test]
fn the_document_passes_an_openapi_validator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, readerd::api::openapi::json()).unwrap();
    check(&[&path], "spec");
}

/// One answer of the daemon, for the response check.
async fn sample(
    env: &TestEnv,
    samples: &mut Vec<Value>,
    method: &str,
    route: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = format!("{}{}", env.api_url, path);
    let mut req = match method {
        "GET" => env.http.get(url),
        "POST" => env.http.post(url),
        other => panic!("no method {other}"),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|c| c.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = if content_type.starts_with("application/json") {
        resp.json::<Value>().await.expect("a JSON body")
    } else {
        // A stream (SSE) or text: its content type is what is checked.
        drop(resp);
        Value::Null
    };
    samples.push(json!({
        "method": method, "route": route, "status": status,
        "content_type": content_type, "body": body,
    }));
    (status, body)
}

#[tokio::test]
async fn every_documented_answer_matches_the_document() {
    let w = world_with(|c| c.payments.queue_capacity = 4).await;
    let env = &w.env;
    let mut samples = Vec::new();
    let admin = Some(env.admin_token.as_str());
    let own = Some(env.pos("florist"));

    // Every route as the tenancy test calls it, by each kind of caller.
    quiet(env).await;
    for r in table(&w.new_account) {
        let mut path = r.path.to_string();
        for (k, id) in &w.objects {
            path = path.replace(&format!("{{{k}}}"), id);
        }
        for (token, merchant) in [
            (Some(env.pos("bakery")), "bakery"),
            (None, "florist"),
            (own, "florist"),
            (admin, "florist"),
        ] {
            let body = fill(&r.body, merchant, &w.objects);
            let body = (!body.is_null()).then_some(&body);
            sample(env, &mut samples, r.method, r.route, &path, token, body).await;
            quiet(env).await;
        }
    }

    // What the table does not reach: bad input, unknown objects, conflicts, a full queue.
    let reader = w.objects["reader"].clone();
    let paid = w.objects["paid"].clone();
    let declined = w.objects["declined"].clone();
    let location = w.objects["location"].clone();
    let bad = json!({"no_such_field": 1});
    let bad_input: &[(&str, String)] = &[
        ("/v1/merchants", "/v1/merchants".into()),
        ("/v1/locations", "/v1/locations".into()),
        ("/v1/locations/{id}", format!("/v1/locations/{location}")),
        ("/v1/readers", "/v1/readers".into()),
        ("/v1/readers/{id}", format!("/v1/readers/{reader}")),
        (
            "/v1/readers/{id}/display",
            format!("/v1/readers/{reader}/display"),
        ),
        (
            "/v1/readers/{id}/clear",
            format!("/v1/readers/{reader}/clear"),
        ),
        (
            "/v1/readers/{id}/inputs",
            format!("/v1/readers/{reader}/inputs"),
        ),
        ("/v1/payments", "/v1/payments".into()),
        ("/v1/setups", "/v1/setups".into()),
        (
            "/v1/payments/{id}/capture",
            format!("/v1/payments/{paid}/capture"),
        ),
        (
            "/v1/payments/{id}/refunds",
            format!("/v1/payments/{paid}/refunds"),
        ),
        (
            "/v1/payments/{id}/confirm",
            format!("/v1/payments/{paid}/confirm"),
        ),
    ];
    for (route, path) in bad_input {
        let (s, _) = sample(env, &mut samples, "POST", route, path, admin, Some(&bad)).await;
        assert_eq!(s, 400, "POST {path} with an unknown field");
    }
    for (route, path) in [
        (
            "/v1/readers/{id}",
            format!("/v1/readers/{reader}?refresh=maybe"),
        ),
        ("/v1/payments", "/v1/payments?colour=red".to_string()),
        (
            "/v1/input_collections",
            "/v1/input_collections?colour=red".to_string(),
        ),
        ("/v1/setups", "/v1/setups?colour=red".to_string()),
        (
            "/v1/reports/settlement",
            "/v1/reports/settlement?from=yesterday&to=2100-01-01".to_string(),
        ),
    ] {
        let (s, _) = sample(env, &mut samples, "GET", route, &path, admin, None).await;
        assert_eq!(s, 400, "GET {path}");
    }
    let unknown: &[(&str, &str, &str, Option<Value>)] = &[
        ("GET", "/v1/merchants/{id}", "/v1/merchants/nobody", None),
        (
            "POST",
            "/v1/merchants/{id}/check",
            "/v1/merchants/nobody/check",
            None,
        ),
        (
            "POST",
            "/v1/readers/{id}",
            "/v1/readers/tmr_nothing",
            Some(json!({"merchants": null})),
        ),
        (
            "POST",
            "/v1/readers/{id}/clear",
            "/v1/readers/tmr_nothing/clear",
            Some(json!({"payment_intent": "pi_x"})),
        ),
        (
            "POST",
            "/v1/locations/{id}",
            "/v1/locations/tml_nothing",
            Some(json!({"tipping": null})),
        ),
    ];
    for (method, route, path, body) in unknown {
        let (s, _) = sample(env, &mut samples, method, route, path, admin, body.as_ref()).await;
        assert_eq!(s, 404, "{method} {path}");
    }
    // The merchant again: an update.
    let grocer = json!({"id": "grocer", "account": w.new_account, "display_name": "Grocer", "charge_type": "direct"});
    let (s, _) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/merchants",
        "/v1/merchants",
        admin,
        Some(&grocer),
    )
    .await;
    assert_eq!(s, 200);
    // Actions the payment's status does not allow.
    for (route, path, body) in [
        (
            "/v1/payments/{id}/cancel",
            format!("/v1/payments/{paid}/cancel"),
            None,
        ),
        (
            "/v1/payments/{id}/capture",
            format!("/v1/payments/{declined}/capture"),
            None,
        ),
        (
            "/v1/payments/{id}/refunds",
            format!("/v1/payments/{declined}/refunds"),
            None,
        ),
    ] {
        let (s, b) = sample(
            env,
            &mut samples,
            "POST",
            route,
            &path,
            admin,
            body.as_ref(),
        )
        .await;
        assert_eq!(s, 409, "POST {path}: {b}");
    }
    // Tipping on a location whose configuration another location uses (attached on
    // Stripe directly, then synced): readerd does not change it.
    let (_, l) = env
        .get(&env.admin_token, &format!("/v1/locations/{location}"))
        .await;
    let tmc = l["configuration"]
        .as_str()
        .expect("the table set tipping")
        .to_string();
    let (s, kiosk) = env
        .post(
            &env.admin_token,
            "/v1/locations",
            json!({"display_name": "Kiosk 2", "merchant": "florist",
                   "address": {"line1": "1 Rue", "city": "Paris", "postal_code": "75001", "country": "FR"}}),
        )
        .await;
    assert_eq!(s, 201, "{kiosk}");
    let kiosk = kiosk["id"].as_str().unwrap().to_string();
    env.stripe()
        .update_location(
            &kiosk,
            &readerd::stripe::params::UpdateLocation {
                configuration_overrides: Some(tmc),
                ..Default::default()
            },
            &readerd::stripe::RequestOptions::platform(),
        )
        .await
        .unwrap();
    let (s, _) = env
        .post(&env.admin_token, "/v1/readers/sync", json!(null))
        .await;
    assert_eq!(s, 200);
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/locations/{id}",
        &format!("/v1/locations/{kiosk}"),
        admin,
        Some(&json!({"tipping": {"eur": {"percentages": [5]}}})),
    )
    .await;
    assert_eq!(s, 409, "{b}");

    // Inputs for a merchant the reader does not serve: the admin learns why.
    let email = json!([{"type": "email", "custom_text": {"title": "Email"}}]);
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/readers/{id}/inputs",
        &format!("/v1/readers/{reader}/inputs"),
        admin,
        Some(&json!({"merchant": "bakery", "inputs": email})),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    // A card saved for a merchant the reader does not serve: the same.
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/setups",
        "/v1/setups",
        admin,
        Some(&json!({"merchant": "bakery", "reader": reader, "allow_redisplay": "always"})),
    )
    .await;
    assert_eq!(s, 403, "{b}");

    // A payment on the reader (back online), then the force-clear of its action. What the
    // table's calls queued on the offline reader ends first.
    let mut idle = false;
    for _ in 0..500 {
        let r = env
            .get(&env.admin_token, &format!("/v1/readers/{reader}"))
            .await
            .1;
        if r["queue_depth"] == 0 && r["busy"] == false {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(idle, "the reader's queue never emptied");
    assert!(env.sim.set_reader_online(&reader, true));
    // Inputs on the screen, canceled from the point of sale.
    let (s, c) = env
        .post(
            env.pos("florist"),
            &format!("/v1/readers/{reader}/inputs"),
            json!({"inputs": email}),
        )
        .await;
    assert_eq!(s, 202, "{c}");
    let inputs = format!("/v1/input_collections/{}", c["id"].as_str().unwrap());
    for _ in 0..500 {
        if env.get(&env.admin_token, &inputs).await.1["status"] == "collecting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/input_collections/{id}/cancel",
        &format!("{inputs}/cancel"),
        own,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for _ in 0..500 {
        if env.get(&env.admin_token, &inputs).await.1["status"] == "canceled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A reviewed payment: its card shown, then confirmed.
    let review = json!({"merchant": "florist", "reader": reader, "amount": 600, "currency": "eur", "flow": "review"});
    let (s, p) = env.post(env.pos("florist"), "/v1/payments", review).await;
    assert_eq!(s, 201, "{p}");
    let reviewed = p["id"].as_str().unwrap().to_string();
    wait_payment(env, &reviewed, "on the reader", |p| {
        p["status"] == "processing" && p["waiting_for"] == "card"
    })
    .await;
    env.sim.present_card(&reader, None).unwrap();
    wait_payment(env, &reviewed, "showing its card", |p| {
        p["status"] == "requires_confirmation" && p["card"]["last4"] == "4242"
    })
    .await;
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/payments/{id}/confirm",
        &format!("/v1/payments/{reviewed}/confirm"),
        own,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    wait_payment(env, &reviewed, "paid", |p| p["status"] == "succeeded").await;
    // A card being saved, canceled from the point of sale.
    let (s, c) = env
        .post(
            env.pos("florist"),
            "/v1/setups",
            json!({"merchant": "florist", "reader": reader, "allow_redisplay": "unspecified"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let setup = format!("/v1/setups/{}", c["id"].as_str().unwrap());
    for _ in 0..500 {
        if env.get(&env.admin_token, &setup).await.1["status"] == "processing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/setups/{id}/cancel",
        &format!("{setup}/cancel"),
        own,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for _ in 0..500 {
        if env.get(&env.admin_token, &setup).await.1["status"] == "canceled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A refund on the reader, canceled from the point of sale while it waits for the card.
    let (s, rf) = env
        .post(
            env.pos("florist"),
            &format!("/v1/payments/{paid}/refunds"),
            json!({"amount": 100, "on_reader": true}),
        )
        .await;
    assert_eq!(s, 202, "{rf}");
    let refund = format!("/v1/payments/{paid}/refunds/{}", rf["id"].as_str().unwrap());
    for _ in 0..500 {
        if env.get(&env.admin_token, &refund).await.1["on_reader"]["step"] == "on_reader" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/payments/{id}/refunds/{refund}/cancel",
        &format!("{refund}/cancel"),
        own,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for _ in 0..500 {
        if env.get(&env.admin_token, &refund).await.1["status"] == "canceled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pay = json!({"merchant": "florist", "reader": reader, "amount": 700, "currency": "eur"});
    let (s, p) = env
        .post(env.pos("florist"), "/v1/payments", pay.clone())
        .await;
    assert_eq!(s, 201, "{p}");
    let on_reader = p["id"].as_str().unwrap().to_string();
    wait_payment(env, &on_reader, "on the reader", |p| {
        p["status"] == "processing" && p["waiting_for"] == "card"
    })
    .await;
    // An Idempotency-Key used again with another body; then the queue behind the payment
    // on the reader fills (capacity 4) and refuses.
    for (amount, want) in [(800, 201), (900, 409)] {
        let resp = env
            .http
            .post(format!("{}/v1/payments", env.api_url))
            .bearer_auth(env.pos("florist"))
            .header("idempotency-key", "order-openapi")
            .json(&json!({"merchant": "florist", "reader": reader, "amount": amount, "currency": "eur"}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        samples.push(
            json!({"method": "POST", "route": "/v1/payments", "status": status,
            "content_type": "application/json", "body": body}),
        );
        assert_eq!(status, want, "{body}");
    }
    let mut statuses = Vec::new();
    while statuses.len() < 6 && statuses.last() != Some(&429) {
        let (s, _) = sample(
            env,
            &mut samples,
            "POST",
            "/v1/payments",
            "/v1/payments",
            own,
            Some(&pay),
        )
        .await;
        statuses.push(s);
    }
    assert_eq!(
        statuses.last(),
        Some(&429),
        "the queue (capacity 4) never filled: {statuses:?}"
    );
    // Inputs wait in the same queue, so they are refused too.
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/readers/{id}/inputs",
        &format!("/v1/readers/{reader}/inputs"),
        own,
        Some(&json!({"inputs": email})),
    )
    .await;
    assert_eq!(s, 429, "{b}");
    // So do setups.
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/setups",
        "/v1/setups",
        own,
        Some(&json!({"merchant": "florist", "reader": reader, "allow_redisplay": "always"})),
    )
    .await;
    assert_eq!(s, 429, "{b}");
    // So do refunds on the reader.
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/payments/{id}/refunds",
        &format!("/v1/payments/{paid}/refunds"),
        own,
        Some(&json!({"amount": 100, "on_reader": true})),
    )
    .await;
    assert_eq!(s, 429, "{b}");
    let pi = env
        .get(&env.admin_token, &format!("/v1/payments/{on_reader}"))
        .await
        .1["payment_intent"]
        .as_str()
        .expect("the payment on the reader has its PaymentIntent")
        .to_string();
    let (s, b) = sample(
        env,
        &mut samples,
        "POST",
        "/v1/readers/{id}/clear",
        &format!("/v1/readers/{reader}/clear"),
        admin,
        Some(&json!({"payment_intent": pi})),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    // A signed webhook event.
    let event = json!({"id": "evt_openapi", "object": "event", "type": "payment_intent.succeeded",
        "created": 0, "livemode": false, "data": {"object": {"id": "pi_nothing"}}})
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let resp = env
        .http
        .post(format!("{}/webhooks/stripe", env.api_url))
        .header(
            "stripe-signature",
            readerd::stripe::webhook::header(WEBHOOK_SECRET, now, event.as_bytes()),
        )
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    samples.push(
        json!({"method": "POST", "route": "/webhooks/stripe", "status": 200,
        "content_type": "application/json", "body": body}),
    );

    // While draining for shutdown, every POST under /v1 and the readiness probe answer 503.
    env.daemon.as_ref().unwrap().drain().await;
    let routes = env.daemon.as_ref().unwrap().routes.clone();
    for r in routes
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/v1/"))
    {
        let path = r.path.replace("{id}", "x");
        let (s, _) = sample(
            env,
            &mut samples,
            "POST",
            r.path,
            &path,
            admin,
            Some(&json!({})),
        )
        .await;
        assert_eq!(s, 503, "POST {path} while draining");
    }
    let (s, _) = sample(env, &mut samples, "GET", "/readyz", "/readyz", None, None).await;
    assert_eq!(s, 503);
    tokio::time::sleep(Duration::from_millis(10)).await;

    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("openapi.json");
    std::fs::write(&doc, readerd::api::openapi::json()).unwrap();
    let answers = dir.path().join("samples.json");
    std::fs::write(&answers, serde_json::to_vec(&samples).unwrap()).unwrap();
    check(&[&doc, &answers], "responses");
}
