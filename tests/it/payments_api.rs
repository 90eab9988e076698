//! The payment API of a whole daemon (in-process, on loopback) against the emulator:
//! the contract's shapes and codes, scoping between merchants, Server-Sent Events, and
//! the webhook intake (forged, duplicated, reordered, late).

use readerd::config::{ClientEntry, Config, Role, Secrets, WebhookSecret};
use readerd::daemon::{Daemon, DaemonHandle};
use readerd::sim::{self, Faults, SimConfig, SimHandle, WebhookTarget};
use readerd::stripe::webhook;
use readerd::stripe::wire::CapabilityStatus;
use readerd::stripe::SecretKey;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub const WHSEC: &str = "whsec_payments_tests";
/// The second endpoint's secret (a Connect endpoint): the daemon is configured with both.
pub const WHSEC_CONNECT: &str = "whsec_payments_tests_connect";
pub const ADMIN: &str = "admin-token";

pub struct Api {
    pub sim: SimHandle,
    pub _daemon: Option<DaemonHandle>,
    pub url: String,
    pub http: reqwest::Client,
    /// reader label → id
    pub readers: BTreeMap<String, String>,
    pub accounts: BTreeMap<String, String>,
    _dir: tempfile::TempDir,
}

pub fn pos_token(m: &str) -> String {
    format!("pos-{m}")
}

/// The emulator (webhooks to the daemon), a daemon with an admin token and one pos token
/// per merchant (`bakery`, `florist`, both FR; `grocer` in DE; `deli`, and `hall` for `deli`
/// and `bar`, merchants the tests add), a FR location with readers
/// `till-1` (any merchant) and `till-2` (bakery only), and a DE location with `kasse`.
pub async fn start(sim_cfg: SimConfig) -> Api {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sim = sim::spawn(SimConfig {
        webhook: Some(WebhookTarget {
            url: format!("http://{addr}/webhooks/stripe"),
            secret: WHSEC.into(),
        }),
        ..sim_cfg
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.stripe.api_base = sim.base_url();
    config.stripe.max_elapsed = Duration::from_secs(5).into();
    config.store.path = dir.path().join("store");
    config.api.listen = addr;
    config.sync.interval = Duration::from_secs(3600).into();
    config.payments.poll_min = Duration::from_millis(20).into();
    config.payments.poll_max = Duration::from_millis(100).into();
    config.payments.offline_wait = Duration::from_millis(300).into();
    config.api.clients.push(ClientEntry {
        name: "admin".into(),
        token_sha256: readerd::api::auth::token_sha256(ADMIN),
        role: Role::Admin,
        merchants: vec![],
    });
    for m in ["bakery", "florist", "grocer", "deli"] {
        config.api.clients.push(ClientEntry {
            name: format!("{m}-desk"),
            token_sha256: readerd::api::auth::token_sha256(&pos_token(m)),
            role: Role::Pos,
            merchants: vec![m.into()],
        });
    }
    // A food hall's desk takes baskets of its two stalls (created by the tests that use it).
    config.api.clients.push(ClientEntry {
        name: "hall-desk".into(),
        token_sha256: readerd::api::auth::token_sha256(&pos_token("hall")),
        role: Role::Pos,
        merchants: vec!["deli".into(), "bar".into()],
    });
    config.validate().unwrap();
    let secrets = Secrets {
        stripe_key: SecretKey::new("sk_test_payments"),
        webhook_secret: Some(WebhookSecret::from_lines(&format!(
            "{WHSEC}\n{WHSEC_CONNECT}\n"
        ))),
    };
    let daemon = Daemon::new(config, secrets).start(listener).await.unwrap();
    let mut api = Api {
        url: format!("http://{}", daemon.addr),
        sim,
        _daemon: Some(daemon),
        http: reqwest::Client::new(),
        readers: BTreeMap::new(),
        accounts: BTreeMap::new(),
        _dir: dir,
    };
    for (m, country, currency, charge) in [
        ("bakery", "FR", "eur", "direct"),
        ("florist", "FR", "eur", "destination"),
        ("grocer", "DE", "eur", "direct"),
    ] {
        let acct = api
            .sim
            .create_account(country, currency, CapabilityStatus::Active);
        let (s, b) = api
            .post(
                ADMIN,
                "/v1/merchants",
                json!({"id": m, "account": acct, "display_name": m, "charge_type": charge}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        api.accounts.insert(m.into(), acct);
    }
    let mut locs = BTreeMap::new();
    for (country, merchant) in [("FR", "bakery"), ("DE", "grocer")] {
        let (s, loc) = api
            .post(
                ADMIN,
                "/v1/locations",
                json!({"display_name": format!("Shop {country}"), "merchant": merchant,
                       "address": {"line1": "1 Main", "city": "City", "postal_code": "10000", "country": country}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{loc}");
        locs.insert(country, loc["id"].as_str().unwrap().to_string());
    }
    for (label, country, merchants) in [
        ("till-1", "FR", None),
        ("till-2", "FR", Some(vec!["bakery"])),
        ("kasse", "DE", None),
    ] {
        let (s, r) = api
            .post(
                ADMIN,
                "/v1/readers",
                json!({"registration_code": "simulated-wpe", "label": label, "location": locs[country], "merchants": merchants}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        api.readers
            .insert(label.into(), r["id"].as_str().unwrap().to_string());
    }
    api
}

impl Api {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    pub async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }
    pub async fn post_key(
        &self,
        token: &str,
        path: &str,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body),
        )
        .await
    }
    pub async fn post_empty(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .bearer_auth(token),
        )
        .await
    }
    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .get(format!("{}{path}", self.url))
                .bearer_auth(token),
        )
        .await
    }
    /// Polls a payment (bounded) until `f` holds.
    pub async fn wait(
        &self,
        token: &str,
        id: &str,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..1500 {
            let (s, p) = self.get(token, &format!("/v1/payments/{id}")).await;
            assert_eq!(s, StatusCode::OK, "{p}");
            if f(&p) {
                return p;
            }
            last = p;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("payment never {what}: {last:#}");
    }
    pub async fn wait_status(&self, token: &str, id: &str, status: &str) -> Value {
        self.wait(token, id, status, |p| p["status"] == status)
            .await
    }
    pub async fn wait_card(&self, token: &str, id: &str) -> Value {
        self.wait(token, id, "waiting for a card", |p| {
            p["status"] == "processing" && p["waiting_for"] == "card"
        })
        .await
    }
    pub async fn pay(&self, merchant: &str, reader: &str, amount: i64, capture: &str) -> Value {
        let (s, p) = self
            .post(
                &pos_token(merchant),
                "/v1/payments",
                json!({"merchant": merchant, "reader": reader, "amount": amount, "currency": "eur", "capture": capture}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        p
    }
}

fn id(p: &Value) -> String {
    p["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn payment_object_and_lifecycle_over_http() {
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let tok = pos_token("bakery");
    let body = json!({"merchant": "bakery", "reader": "till-1", "amount": 1250, "currency": "eur",
                      "capture": "automatic", "description": "2 croissants", "metadata": {"order": "42"}});
    let (s, p) = api
        .post_key(&tok, "/v1/payments", "order-42", body.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    for field in [
        "id",
        "status",
        "merchant",
        "reader",
        "amount",
        "currency",
        "capture",
        "payment_intent",
        "amount_captured",
        "amount_refunded",
        "tip",
        "failure",
        "created_at",
        "updated_at",
    ] {
        assert!(p.get(field).is_some(), "missing {field}: {p}");
    }
    assert_eq!(p["status"], "queued");
    assert_eq!(p["reader"], api.readers["till-1"].as_str());
    assert_eq!(p["failure"], Value::Null);
    // The same key and body: the same payment. Another body: 409.
    let (s2, p2) = api
        .post_key(&tok, "/v1/payments", "order-42", body.clone())
        .await;
    assert_eq!(s2, StatusCode::CREATED);
    assert_eq!(p2["id"], p["id"]);
    let mut other = body.clone();
    other["amount"] = json!(1300);
    let (s3, e3) = api.post_key(&tok, "/v1/payments", "order-42", other).await;
    assert_eq!(s3, StatusCode::CONFLICT, "{e3}");
    assert!(e3["error"]["code"].is_string());

    // Events: open the stream, then let the customer pay.
    let mut sse = api
        .http
        .get(format!("{}/v1/payments/{}/events", api.url, id(&p)))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    api.wait_card(&tok, &id(&p)).await;
    let live: Value = api
        .get(ADMIN, &format!("/v1/readers/{}", api.readers["till-1"]))
        .await
        .1;
    assert_eq!(live["busy"], true, "{live}");
    api.sim.present_card(&api.readers["till-1"], None).unwrap();
    let done = api.wait_status(&tok, &id(&p), "succeeded").await;
    assert_eq!(done["amount_captured"], 1250);
    let mut text = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(10), sse.chunk())
        .await
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let statuses: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| {
            serde_json::from_str::<Value>(d.trim()).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        matches!(
            statuses.first().map(String::as_str),
            Some("queued" | "processing")
        ),
        "{text}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("succeeded"),
        "{text}"
    );
    let mut dedup = statuses.clone();
    dedup.dedup();
    assert_eq!(dedup, statuses, "one event per status change");

    // List filters.
    let (_, l) = api
        .get(&tok, "/v1/payments?status=succeeded&merchant=bakery")
        .await;
    assert_eq!(l.as_array().unwrap().len(), 1);
    let (_, l) = api.get(&tok, "/v1/payments?status=queued").await;
    assert_eq!(l.as_array().unwrap().len(), 0);
    let (s, _) = api.get(&tok, "/v1/payments?status=paid").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Refunds over HTTP: partial, idempotent, bounded.
    let path = format!("/v1/payments/{}/refunds", id(&p));
    let (s, r1) = api
        .post_key(&tok, &path, "rf-1", json!({"amount": 250}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r1}");
    let (_, r1b) = api
        .post_key(&tok, &path, "rf-1", json!({"amount": 250}))
        .await;
    assert_eq!(r1["id"], r1b["id"]);
    let (s, e) = api.post(&tok, &path, json!({"amount": 5000})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = api.post_empty(&tok, &path).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, p) = api.get(&tok, &format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(p["amount_refunded"], 1250);
}

#[tokio::test]
async fn decline_retry_manual_capture_and_cancel_over_http() {
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let tok = pos_token("bakery");
    let till = api.readers["till-1"].clone();
    let p = api.pay("bakery", "till-1", 1000, "automatic").await;
    api.wait_card(&tok, &id(&p)).await;
    api.sim
        .present_card(&till, Some("4000000000000002"))
        .unwrap();
    let d = api.wait_status(&tok, &id(&p), "declined").await;
    assert_eq!(
        d["failure"]["code"], "generic_decline",
        "the decline code, when Stripe gives one"
    );
    let (s, r) = api
        .post_empty(&tok, &format!("/v1/payments/{}/retry", id(&p)))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    api.wait_card(&tok, &id(&p)).await;
    api.sim.present_card(&till, None).unwrap();
    let ok = api.wait_status(&tok, &id(&p), "succeeded").await;
    assert_eq!(ok["payment_intent"], d["payment_intent"]);

    let m = api.pay("bakery", "till-2", 4000, "manual").await;
    api.wait_card(&tok, &id(&m)).await;
    api.sim.present_card(&api.readers["till-2"], None).unwrap();
    let a = api.wait_status(&tok, &id(&m), "requires_capture").await;
    assert!(a["capture_before"].is_string(), "{a}");
    let (s, c) = api
        .post(
            &tok,
            &format!("/v1/payments/{}/capture", id(&m)),
            json!({"amount": 3500}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "succeeded");
    assert_eq!(c["amount_captured"], 3500);

    let c = api.pay("bakery", "till-1", 1000, "automatic").await;
    api.wait_card(&tok, &id(&c)).await;
    let (s, _) = api
        .post_empty(&tok, &format!("/v1/payments/{}/cancel", id(&c)))
        .await;
    assert_eq!(s, StatusCode::OK);
    let c = api.wait_status(&tok, &id(&c), "canceled").await;
    let (s, e) = api
        .post_empty(&tok, &format!("/v1/payments/{}/capture", id(&c)))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
}

#[tokio::test]
async fn tenant_isolation_and_validation() {
    let api = start(SimConfig::default()).await;
    let bakery = pos_token("bakery");
    let florist = pos_token("florist");
    let p = api.pay("bakery", "till-1", 1000, "automatic").await;
    let pid = id(&p);
    // Another merchant's pos never learns it exists.
    for (method, path) in [
        ("GET", format!("/v1/payments/{pid}")),
        ("GET", format!("/v1/payments/{pid}/events")),
        ("POST", format!("/v1/payments/{pid}/cancel")),
        ("POST", format!("/v1/payments/{pid}/capture")),
        ("POST", format!("/v1/payments/{pid}/retry")),
        ("POST", format!("/v1/payments/{pid}/refunds")),
    ] {
        let (s, e) = if method == "GET" {
            api.get(&florist, &path).await
        } else {
            api.post_empty(&florist, &path).await
        };
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {e}");
        let (s2, e2) = if method == "GET" {
            api.get(
                &florist,
                &format!("/v1/payments/pay_nope{}", &path[path.len()..]),
            )
            .await
        } else {
            api.post_empty(&florist, "/v1/payments/pay_nope/cancel")
                .await
        };
        assert_eq!(s2, StatusCode::NOT_FOUND, "{e2}");
        assert_eq!(e["error"]["code"], e2["error"]["code"]);
    }
    let (_, l) = api.get(&florist, "/v1/payments").await;
    assert_eq!(l.as_array().unwrap().len(), 0);
    let (_, l) = api.get(&florist, "/v1/payments?merchant=bakery").await;
    assert_eq!(l.as_array().unwrap().len(), 0);
    let (_, l) = api.get(ADMIN, "/v1/payments").await;
    assert_eq!(l.as_array().unwrap().len(), 1);
    // Charging for a merchant outside the scope: 404, like an unknown merchant.
    let (s, _) = api
        .post(
            &florist,
            "/v1/payments",
            json!({"merchant": "bakery", "reader": "till-1", "amount": 1000, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // No token, unknown token.
    let (s, _) = api
        .send(api.http.get(format!("{}/v1/payments", api.url)))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api.get("nope", "/v1/payments").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A reader whose allowlist excludes the merchant: a pos client of another merchant
    // cannot see it (404, as for a reader that does not exist); the admin can, and is told
    // why.
    let (s, e) = api
        .post(
            &florist,
            "/v1/payments",
            json!({"merchant": "florist", "reader": "till-2", "amount": 1000, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = api
        .post(
            ADMIN,
            "/v1/payments",
            json!({"merchant": "florist", "reader": "till-2", "amount": 1000, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["error"]["code"], "reader_not_allowed", "{e}");
    // A reader in another country.
    let (s, e) = api
        .post(
            &florist,
            "/v1/payments",
            json!({"merchant": "florist", "reader": "kasse", "amount": 1000, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "country_mismatch");
    for (body, code) in [
        (
            json!({"merchant": "florist", "reader": "till-1", "amount": 0, "currency": "eur"}),
            "invalid_amount",
        ),
        (
            json!({"merchant": "florist", "reader": "till-1", "amount": 12.5, "currency": "eur"}),
            "invalid_request",
        ),
        (
            json!({"merchant": "florist", "reader": "till-1", "amount": 1000, "currency": "EUR"}),
            "invalid_currency",
        ),
        (
            json!({"merchant": "florist", "reader": "till-1", "amount": 1000, "currency": "usd"}),
            "invalid_currency",
        ),
        (
            json!({"merchant": "florist", "reader": "till-1", "amount": 1000, "currency": "eur", "capture": "later"}),
            "invalid_request",
        ),
        (
            json!({"merchant": "florist", "reader": "till-1", "amount": 1000, "currency": "eur", "tip": 1}),
            "invalid_request",
        ),
    ] {
        let (s, e) = api.post(&florist, "/v1/payments", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
    }
    let (s, _) = api
        .post(
            &florist,
            "/v1/payments",
            json!({"merchant": "florist", "reader": "till-9", "amount": 1000, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A merchant whose card payments are not active: failed, merchant_not_enabled.
    api.sim
        .set_capability(&api.accounts["florist"], CapabilityStatus::Inactive);
    let (s, m) = api.post_empty(ADMIN, "/v1/merchants/florist/check").await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let p = api.pay("florist", "till-1", 1000, "automatic").await;
    assert_eq!(p["status"], "failed");
    assert_eq!(p["failure"]["code"], "merchant_not_enabled");
    let _ = bakery;
}

fn signed(body: &str, secret: &str, t: i64) -> String {
    webhook::header(secret, t, body.as_bytes())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn webhooks_forged_duplicated_reordered_and_late() {
    // The emulator itself delivers every event twice, late and shuffled.
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        faults: Faults {
            webhook_duplicate_rate: 1.0,
            webhook_delay_ms: 200,
            webhook_reorder: true,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let tok = pos_token("bakery");
    let p = api.pay("bakery", "till-1", 1000, "automatic").await;
    api.wait_card(&tok, &id(&p)).await;
    api.sim.present_card(&api.readers["till-1"], None).unwrap();
    let done = api.wait_status(&tok, &id(&p), "succeeded").await;
    let pi = done["payment_intent"].as_str().unwrap().to_string();

    let url = format!("{}/webhooks/stripe", api.url);
    // A late, stale event saying the PaymentIntent failed: accepted as a hint, changes nothing.
    let stale = json!({"id": "evt_stale_1", "object": "event", "type": "payment_intent.payment_failed",
        "created": now() - 60, "livemode": false, "account": api.accounts["bakery"],
        "data": {"object": {"id": pi, "object": "payment_intent", "status": "requires_payment_method"}}})
    .to_string();
    let send = |body: String, sig: String| {
        api.http
            .post(&url)
            .header("Stripe-Signature", sig)
            .header("Content-Type", "application/json")
            .body(body)
    };
    let (s, r) = api
        .send(send(stale.clone(), signed(&stale, WHSEC, now())))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, r) = api
        .send(send(stale.clone(), signed(&stale, WHSEC, now())))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["duplicate"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, after) = api.get(&tok, &format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(
        after["history"], done["history"],
        "an old event never undoes a final state"
    );
    // Forged: wrong secret, tampered body, stale timestamp, missing header.
    let (s, e) = api
        .send(send(stale.clone(), signed(&stale, "whsec_other", now())))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "invalid_signature");
    let tampered = stale.replace("evt_stale_1", "evt_stale_2");
    let (s, _) = api.send(send(tampered, signed(&stale, WHSEC, now()))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api
        .send(send(stale.clone(), signed(&stale, WHSEC, now() - 301)))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.send(api.http.post(&url).body(stale.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A rolled secret: any matching v1 counts.
    let t = now();
    let fresh = stale.replace("evt_stale_1", "evt_rolled");
    let header = format!(
        "t={t},v1={},v1={}",
        webhook::sign("whsec_old", t, fresh.as_bytes()),
        webhook::sign(WHSEC, t, fresh.as_bytes())
    );
    let (s, r) = api.send(send(fresh, header)).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    // The other endpoint's secret (account and Connect endpoints sign with their own).
    let connect = stale.replace("evt_stale_1", "evt_connect");
    let (s, r) = api
        .send(send(
            connect.clone(),
            signed(&connect, WHSEC_CONNECT, now()),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["duplicate"], serde_json::Value::Null, "{r}");
}

#[tokio::test]
async fn display_goes_through_the_reader_queue() {
    let api = start(SimConfig::default()).await;
    let (s, d) = api
        .post(
            &pos_token("bakery"),
            &format!("/v1/readers/{}/display", api.readers["till-1"]),
            json!({"currency": "eur", "line_items": [{"description": "Tea", "amount": 450, "quantity": 1}], "total": 450}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    for _ in 0..500 {
        if api
            .sim
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/set_reader_display") && r.status == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cart was never shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pay_command_follows_the_payment_and_exits_by_its_outcome() {
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        auto_present: Some(Duration::from_millis(200)),
        ..SimConfig::default()
    })
    .await;
    let run = |args: Vec<String>| {
        let url = api.url.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_readerd"))
                .args(&args)
                .args(["--api", &url])
                .env("READERD_TOKEN", pos_token("bakery"))
                .output()
                .await
                .unwrap()
        }
    };
    let pay = |amount: &str, capture: &str| {
        [
            "pay",
            "--merchant",
            "bakery",
            "--reader",
            "till-1",
            "--amount",
            amount,
            "--currency",
            "eur",
            "--capture",
            capture,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
    };
    let ok = run(pay("1250", "automatic")).await;
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("for 12.50 EUR on"), "amounts are money: {out}");
    assert!(out.contains("waiting for card"), "{out}");
    assert!(out.contains("succeeded: 12.50 EUR captured"), "{out}");
    // Amounts ending in 05 are declined by the test network.
    let declined = run(pay("1005", "automatic")).await;
    let out = String::from_utf8_lossy(&declined.stdout);
    assert!(!declined.status.success(), "{out}");
    assert!(out.contains("declined"), "{out}");
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("pay_"))
        .expect("the payment's id");
    assert!(
        out.contains(&format!("readerd payments retry {id}")),
        "a decline names the command that retries it: {out}"
    );
    let manual = run(pay("4200", "manual")).await;
    assert!(
        manual.status.success(),
        "{}",
        String::from_utf8_lossy(&manual.stdout)
    );
    let list = run(vec![
        "payments".into(),
        "list".into(),
        "--status".into(),
        "declined".into(),
    ])
    .await;
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{out}");
    assert_eq!(
        out.lines().count(),
        2,
        "a header and the declined payment: {out}"
    );
    assert!(out.contains("declined"), "{out}");
    assert!(out.contains("10.05 EUR"), "the list shows money: {out}");
}

#[tokio::test]
async fn force_clear_cancels_only_the_named_action() {
    use crate::common::start_foreign_payment;
    use readerd::stripe::{ClientConfig, StripeClient};
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let stripe = StripeClient::new(ClientConfig::new(
        api.sim.base_url(),
        SecretKey::new("sk_test_other"),
    ))
    .unwrap();
    let till = api.readers["till-1"].clone();
    // Another integration left an action on the reader.
    let foreign = start_foreign_payment(&stripe, &api.accounts["bakery"], &till, "stuck").await;
    let tok = pos_token("bakery");
    let p = api.pay("bakery", "till-1", 1000, "automatic").await;
    let waiting = api
        .wait(&tok, &id(&p), "waiting for the busy reader", |p| {
            p["waiting_for"] == "reader_busy"
        })
        .await;
    let note = waiting["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|h| h["note"].as_str())
        .unwrap()
        .to_string();
    assert!(
        note.contains(&foreign.id),
        "the blocking PaymentIntent is named: {note}"
    );
    let path = format!("/v1/readers/{till}/clear");
    let (s, _) = api
        .post(&tok, &path, json!({"payment_intent": foreign.id}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "admin only");
    let (s, e) = api
        .post(ADMIN, &path, json!({"payment_intent": "pi_not_this_one"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "reader_action_mismatch");
    let (s, c) = api
        .post(ADMIN, &path, json!({"payment_intent": foreign.id}))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    api.wait_card(&tok, &id(&p)).await;
    api.sim.present_card(&till, None).unwrap();
    api.wait_status(&tok, &id(&p), "succeeded").await;
}

#[tokio::test]
async fn reader_reads_of_a_payment_keep_the_listed_reader_fresh_without_a_sync() {
    use readerd::fleet::ReaderRecord;
    use readerd::store::Tree;
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let reader = api.readers["till-1"].clone();
    // The registry last heard from the reader an hour ago (the last sync).
    let registry = api._daemon.as_ref().unwrap().state.registry.clone();
    let mut rec: ReaderRecord = registry.get(Tree::Readers, &reader).unwrap().unwrap();
    let hour_ago = rec.last_seen_at.unwrap() - Duration::from_secs(3600);
    rec.last_seen_at = Some(hour_ago);
    rec.synced_at = hour_ago;
    registry.put(Tree::Readers, &reader, &rec).unwrap();
    let (s, before) = api.get(ADMIN, &format!("/v1/readers/{reader}")).await;
    assert_eq!(s, StatusCode::OK, "{before}");
    api.sim.reset_requests();

    let p = api.pay("bakery", &reader, 1000, "automatic").await;
    api.wait_card(&pos_token("bakery"), &id(&p)).await;
    api.sim.present_card(&reader, None).unwrap();
    api.wait_status(&pos_token("bakery"), &id(&p), "succeeded")
        .await;

    let (s, after) = api.get(ADMIN, &format!("/v1/readers/{reader}")).await;
    assert_eq!(s, StatusCode::OK, "{after}");
    assert_eq!(after["status"], "online", "{after}");
    let seen = |v: &Value| v["last_seen_at"].as_str().unwrap().to_string();
    // RFC 3339 UTC strings of one format order as their times do.
    assert!(seen(&after) > seen(&before), "{before} → {after}");
    // Only the payment's own looks: no sync (it lists the locations, then the readers) and
    // no extra read by the fleet. The one reader list is the pre-flight check of the
    // reader's location.
    let log = api.sim.requests();
    let gets = |path: &str| {
        log.iter()
            .filter(|q| q.method == "GET" && q.path == path)
            .count()
    };
    assert_eq!(gets("/v1/terminal/locations"), 0, "{log:?}");
    assert!(gets("/v1/terminal/readers") <= 1, "{log:?}");
}

#[tokio::test]
async fn a_reader_deleted_on_stripe_mid_payment_fails_it_and_is_marked_gone() {
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let reader = api.readers["till-1"].clone();
    let p = api.pay("bakery", &reader, 1000, "automatic").await;
    api.wait_card(&pos_token("bakery"), &id(&p)).await;
    let r = api
        .http
        .delete(format!(
            "{}/v1/terminal/readers/{reader}",
            api.sim.base_url()
        ))
        .bearer_auth("sk_test_elsewhere")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let p = api
        .wait_status(&pos_token("bakery"), &id(&p), "failed")
        .await;
    assert_eq!(p["failure"]["code"], "reader_not_found", "{p:#}");
    // The fleet learns it without waiting for a sync: no new payment is taken for it.
    let mut gone = Value::Null;
    for _ in 0..500 {
        let (s, r) = api.get(ADMIN, &format!("/v1/readers/{reader}")).await;
        if s == StatusCode::OK && r["gone"] == true {
            gone = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gone["gone"], true, "the reader was never marked gone");
    let (s, b) = api
        .post(
            &pos_token("bakery"),
            "/v1/payments",
            json!({"merchant": "bakery", "reader": reader, "amount": 500, "currency": "eur"}),
        )
        .await;
    assert!(s.is_client_error(), "{s} {b}");
}

#[tokio::test]
async fn tipping_false_is_taken_and_shown() {
    let api = start(SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await;
    let tok = pos_token("bakery");
    let body = json!({"merchant": "bakery", "reader": "till-1", "amount": 1250, "currency": "eur",
                      "tipping": false});
    let (s, p) = api.post(&tok, "/v1/payments", body).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(p["tipping"], false);
    let body = json!({"merchant": "bakery", "reader": "till-1", "amount": 1250, "currency": "eur",
                      "tipping": "no"});
    let (s, _) = api.post(&tok, "/v1/payments", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
