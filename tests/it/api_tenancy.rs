//! Tenancy, route by route: every route the daemon serves has a row here, tried by an admin,
//! a pos client of the object's merchant, a pos client of another merchant, no token and an
//! unknown token. Refused calls must send nothing to Stripe (the emulator's request log) and
//! change nothing in the store. A route without a row fails the test, so a new route cannot
//! ship without its scope being decided.
//!
//! The objects belong to the florist: a location of the florist's, a reader fenced for the
//! florist (allowlist `["florist"]`) and payments of the florist's on it. "Another merchant"
//! is the bakery, acting with its own merchant wherever a body names one: that is how a till
//! would try to reach a reader that is not its own.

use crate::common::TestEnv;
use readerd::api::Route;
use readerd::store::Tree;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A card the emulator declines (insufficient funds).
const DECLINE: &str = "4000000000009995";

/// Who calls, in the order of [`Row::want`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Admin,
    /// A pos client of the florist (the object's merchant).
    Own,
    /// A pos client of the bakery.
    Other,
    NoToken,
    UnknownToken,
}

const CALLERS: [Who; 5] = [
    Who::Admin,
    Who::Own,
    Who::Other,
    Who::NoToken,
    Who::UnknownToken,
];

/// One route and what each caller gets.
pub(crate) struct Row {
    pub(crate) method: &'static str,
    /// The route as the router declares it.
    pub(crate) route: &'static str,
    /// The path to call: `{reader}`, `{location}`, `{paid}`, `{authorised}`, `{to_cancel}`,
    /// `{declined}` are replaced by the florist's objects.
    pub(crate) path: &'static str,
    /// The body (`{merchant}` in a string value is the caller's own merchant).
    pub(crate) body: Value,
    /// Statuses for admin, own, other, no token, unknown token.
    want: [u16; 5],
}

fn row(
    method: &'static str,
    route: &'static str,
    path: &'static str,
    body: Value,
    want: [u16; 5],
) -> Row {
    Row {
        method,
        route,
        path,
        body,
        want,
    }
}

/// Every route of the API. Ordered so that the calls that succeed do not spoil the objects
/// of later rows.
#[rustfmt::skip]
pub(crate) fn table(new_account: &str) -> Vec<Row> {
    let cart = json!({"merchant": "{merchant}", "currency": "eur",
        "line_items": [{"description": "Total", "amount": 99_999, "quantity": 1}], "total": 99_999});
    let pay = json!({"merchant": "{merchant}", "reader": "{reader}", "amount": 1000, "currency": "eur"});
    let address = json!({"line1": "1 Rue", "city": "Paris", "postal_code": "75001", "country": "FR"});
    let grocer = json!({"id": "grocer", "account": new_account, "display_name": "Grocer", "charge_type": "direct"});
    let kiosk = json!({"display_name": "Kiosk", "address": address, "merchant": "florist"});
    let spare = json!({"registration_code": "simulated-wpe", "label": "spare", "location": "{location}"});
    let form = json!({"merchant": "{merchant}", "inputs": [{"type": "email", "custom_text": {"title": "Email"}}]});
    let card = json!({"merchant": "{merchant}", "reader": "{reader}", "allow_redisplay": "always"});
    let null = Value::Null;
    vec![
        // Operations: no bearer token needed (the webhook is authenticated by its signature).
        row("GET",  "/healthz",                     "/healthz",                          null.clone(), [200, 200, 200, 200, 200]),
        row("GET",  "/readyz",                      "/readyz",                           null.clone(), [200, 200, 200, 200, 200]),
        row("GET",  "/metrics",                     "/metrics",                          null.clone(), [200, 200, 200, 200, 200]),
        // The API's description holds no secret, and a client generator fetches it first.
        row("GET",  "/openapi.json",                "/openapi.json",                     null.clone(), [200, 200, 200, 200, 200]),
        row("POST", "/webhooks/stripe",             "/webhooks/stripe",                  json!({}),    [400, 400, 400, 400, 400]),
        // The console's files: public, they hold no data (it reads the API with a token).
        row("GET",  "/console",                     "/console",                          null.clone(), [200, 200, 200, 200, 200]),
        row("GET",  "/console/app.js",              "/console/app.js",                   null.clone(), [200, 200, 200, 200, 200]),
        row("GET",  "/console/app.css",             "/console/app.css",                  null.clone(), [200, 200, 200, 200, 200]),
        // Merchants: admin only.
        row("GET",  "/v1/merchants",                "/v1/merchants",                     null.clone(), [200, 403, 403, 401, 401]),
        row("GET",  "/v1/merchants/{id}",           "/v1/merchants/florist",             null.clone(), [200, 403, 403, 401, 401]),
        row("POST", "/v1/merchants/{id}/check",     "/v1/merchants/florist/check",       null.clone(), [200, 403, 403, 401, 401]),
        row("POST", "/v1/merchants",                "/v1/merchants",                     grocer,       [201, 403, 403, 401, 401]),
        // Locations: admin changes; pos reads those of no merchant or of its own.
        row("GET",  "/v1/locations",                "/v1/locations",                     null.clone(), [200, 200, 200, 401, 401]),
        row("GET",  "/v1/locations/{id}",           "/v1/locations/{location}",          null.clone(), [200, 200, 404, 401, 401]),
        row("POST", "/v1/locations",                "/v1/locations",                     kiosk,        [201, 403, 403, 401, 401]),
        row("POST", "/v1/locations/{id}",           "/v1/locations/{location}",          json!({"tipping": {"eur": {"percentages": [10, 15, 20]}}}), [200, 403, 403, 401, 401]),
        // Readers: admin changes; pos reads what the allowlist lets it see.
        row("GET",  "/v1/readers",                  "/v1/readers",                       null.clone(), [200, 200, 200, 401, 401]),
        row("GET",  "/v1/readers/{id}",             "/v1/readers/{reader}",              null.clone(), [200, 200, 404, 401, 401]),
        row("POST", "/v1/readers/{id}",             "/v1/readers/{reader}",              json!({"merchants": ["florist"]}), [200, 403, 403, 401, 401]),
        row("POST", "/v1/readers/sync",             "/v1/readers/sync",                  null.clone(), [200, 403, 403, 401, 401]),
        row("POST", "/v1/readers",                  "/v1/readers",                       spare,        [201, 403, 403, 401, 401]),
        row("POST", "/v1/readers/{id}/clear",       "/v1/readers/{reader}/clear",        json!({"payment_intent": "pi_nothing"}), [409, 403, 403, 401, 401]),
        // The display hole: the bakery's till, naming its own merchant, on the florist's reader.
        row("POST", "/v1/readers/{id}/display",     "/v1/readers/{reader}/display",      cart,         [202, 202, 404, 401, 401]),
        // Payments: pos within its merchants; another merchant's payment does not exist.
        row("POST", "/v1/readers/{id}/inputs",      "/v1/readers/{reader}/inputs",       form,         [202, 202, 404, 401, 401]),
        row("GET",  "/v1/input_collections",        "/v1/input_collections",             null.clone(), [200, 200, 200, 401, 401]),
        row("GET",  "/v1/input_collections/{id}",   "/v1/input_collections/{answered}",  null.clone(), [200, 200, 404, 401, 401]),
        row("GET",  "/v1/input_collections/{id}/events", "/v1/input_collections/{answered}/events", null.clone(), [200, 200, 404, 401, 401]),
        // Final: nothing left to cancel.
        row("POST", "/v1/input_collections/{id}/cancel", "/v1/input_collections/{answered}/cancel", null.clone(), [409, 409, 404, 401, 401]),
        // Saved cards: like payments.
        row("POST", "/v1/setups",                   "/v1/setups",                        card,         [201, 201, 404, 401, 401]),
        row("GET",  "/v1/setups",                   "/v1/setups",                        null.clone(), [200, 200, 200, 401, 401]),
        row("GET",  "/v1/setups/{id}",              "/v1/setups/{saved}",                null.clone(), [200, 200, 404, 401, 401]),
        row("GET",  "/v1/setups/{id}/events",       "/v1/setups/{saved}/events",         null.clone(), [200, 200, 404, 401, 401]),
        row("POST", "/v1/setups/{id}/cancel",       "/v1/setups/{saved}/cancel",         null.clone(), [409, 409, 404, 401, 401]),

        row("GET",  "/v1/payments",                 "/v1/payments",                      null.clone(), [200, 200, 200, 401, 401]),
        row("GET",  "/v1/payments/{id}",            "/v1/payments/{paid}",               null.clone(), [200, 200, 404, 401, 401]),
        row("GET",  "/v1/payments/{id}/events",     "/v1/payments/{paid}/events",        null.clone(), [200, 200, 404, 401, 401]),
        // Every change of the payments the caller may see (the bakery's stream stays silent).
        row("GET",  "/v1/events",                   "/v1/events",                        null.clone(), [200, 200, 200, 401, 401]),
        row("POST", "/v1/payments/{id}/refunds",    "/v1/payments/{paid}/refunds",       json!({"amount": 100}), [201, 201, 404, 401, 401]),
        // A refund on the reader is queued; the bakery's till cannot name the florist's
        // payment (nor its reader).
        row("POST", "/v1/payments/{id}/refunds",    "/v1/payments/{paid}/refunds",       json!({"amount": 100, "on_reader": true, "reader": "{reader}"}), [202, 202, 404, 401, 401]),
        row("GET",  "/v1/payments/{id}/refunds/{refund}", "/v1/payments/{paid}/refunds/{refund}", null.clone(), [200, 200, 404, 401, 401]),
        row("GET",  "/v1/payments/{id}/refunds/{refund}/events", "/v1/payments/{paid}/refunds/{refund}/events", null.clone(), [200, 200, 404, 401, 401]),
        // An ordinary refund has no reader job to cancel.
        row("POST", "/v1/payments/{id}/refunds/{refund}/cancel", "/v1/payments/{paid}/refunds/{refund}/cancel", null.clone(), [409, 409, 404, 401, 401]),
        // A second capture answers the captured payment again.
        row("POST", "/v1/payments/{id}/capture",    "/v1/payments/{authorised}/capture", null.clone(), [200, 200, 404, 401, 401]),
        row("POST", "/v1/payments/{id}/cancel",     "/v1/payments/{to_cancel}/cancel",   null.clone(), [200, 200, 404, 401, 401]),
        row("POST", "/v1/payments/{id}/retry",      "/v1/payments/{declined}/retry",     null.clone(), [409, 200, 404, 401, 401]),
        // Only a reviewed payment waiting for its confirm is confirmed.
        row("POST", "/v1/payments/{id}/confirm",    "/v1/payments/{paid}/confirm",       json!({"surcharge": 100}), [409, 409, 404, 401, 401]),
        row("POST", "/v1/payments",                 "/v1/payments",                      pay,          [201, 201, 404, 401, 401]),
        // Connection tokens: within the caller's merchants; a location it cannot see is 404.
        row("POST", "/v1/connection_tokens",        "/v1/connection_tokens",             json!({"merchant": "{merchant}"}), [201, 201, 201, 401, 401]),
        // The florist's location is the platform's, and the florist takes direct charges.
        row("POST", "/v1/connection_tokens",        "/v1/connection_tokens",             json!({"merchant": "{merchant}", "location": "{location}"}), [400, 400, 404, 401, 401]),
        // The settlement report: a pos client gets its merchants' rows; naming another
        // merchant is 404, as for a merchant that does not exist.
        row("GET",  "/v1/reports/settlement",       "/v1/reports/settlement?from=2020-01-01&to=2100-01-01", null.clone(), [200, 200, 200, 401, 401]),
        row("GET",  "/v1/reports/settlement",       "/v1/reports/settlement?from=2020-01-01&to=2100-01-01&merchant=florist&format=csv", null.clone(), [200, 200, 404, 401, 401]),
    ]
}

/// `{merchant}` in string values → `merchant`; `{reader}`/`{location}` → the objects.
pub(crate) fn fill(v: &Value, merchant: &str, objects: &BTreeMap<&str, String>) -> Value {
    match v {
        Value::String(s) => {
            let mut s = s.replace("{merchant}", merchant);
            for (k, id) in objects {
                s = s.replace(&format!("{{{k}}}"), id);
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, merchant, objects)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), fill(x, merchant, objects)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every record of every tree.
fn store_snapshot(env: &TestEnv) -> BTreeMap<(&'static str, String), Vec<u8>> {
    let store = env.state().registry.store().clone();
    let mut all = BTreeMap::new();
    for tree in Tree::ALL {
        for (k, v) in store.scan(tree).expect("scan") {
            all.insert((tree.name(), k), v);
        }
    }
    all
}

/// Waits until the emulator has seen no request for a while, so that what a payment or a
/// display set going has ended before the next refusal is measured.
pub(crate) async fn quiet(env: &TestEnv) {
    let mut last = env.sim.requests().len();
    let mut still = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = env.sim.requests().len();
        if now == last {
            still += 1;
            if still >= 4 {
                return;
            }
        } else {
            still = 0;
            last = now;
        }
    }
    panic!("the emulator never went quiet");
}

async fn call(
    env: &TestEnv,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, String) {
    let url = format!("{}{}", env.api_url, path);
    let mut req = match method {
        "GET" => env.http.get(url),
        "POST" => env.http.post(url),
        other => panic!("no method {other}"),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if !body.is_null() {
        req = req.json(body);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    let sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap_or("").starts_with("text/event-stream"));
    let text = if sse {
        // The stream of a final payment ends after one event, `/v1/events` never does:
        // keep what comes within two seconds.
        let mut resp = resp;
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    } else {
        resp.text().await.unwrap_or_default()
    };
    (status, text)
}

async fn payment_status(env: &TestEnv, id: &str) -> Value {
    env.get(&env.admin_token, &format!("/v1/payments/{id}"))
        .await
        .1
}

pub(crate) async fn wait_payment(env: &TestEnv, id: &str, what: &str, f: impl Fn(&Value) -> bool) {
    for _ in 0..1000 {
        if f(&payment_status(env, id).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "payment {id} never became {what}: {}",
        payment_status(env, id).await
    );
}

/// A florist payment on `reader`, tapped with `card`, left where `capture` takes it.
async fn florist_payment(env: &TestEnv, reader: &str, capture: &str, card: Option<&str>) -> String {
    let (s, p) = env
        .post(
            env.pos("florist"),
            "/v1/payments",
            json!({"merchant": "florist", "reader": reader, "amount": 2500, "currency": "eur", "capture": capture}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    wait_payment(env, &id, "on the reader", |p| {
        p["status"] == "processing" && p["waiting_for"] == "card"
    })
    .await;
    env.sim.present_card(reader, card).expect("tap");
    let want = match (capture, card) {
        (_, Some(_)) => "declined",
        ("manual", None) => "requires_capture",
        _ => "succeeded",
    };
    wait_payment(env, &id, want, |p| p["status"] == want).await;
    id
}

/// An input collection of the florist's, answered on the reader.
async fn florist_inputs(env: &TestEnv, reader: &str) -> String {
    let (s, c) = env
        .post(
            env.pos("florist"),
            &format!("/v1/readers/{reader}/inputs"),
            json!({"inputs": [{"type": "email", "custom_text": {"title": "Email"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let path = format!("/v1/input_collections/{id}");
    let mut answered = false;
    for _ in 0..500 {
        let (_, c) = env.get(&env.admin_token, &path).await;
        if c["status"] == "collecting" && !answered {
            env.stripe()
                .succeed_input_collection(
                    reader,
                    &Default::default(),
                    &readerd::stripe::RequestOptions::platform(),
                )
                .await
                .unwrap();
            answered = true;
        }
        if c["status"] == "succeeded" {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the florist's inputs were never answered");
}

/// A card of the florist's customer, saved on the reader.
async fn florist_setup(env: &TestEnv, reader: &str) -> String {
    let (s, c) = env
        .post(
            env.pos("florist"),
            "/v1/setups",
            json!({"merchant": "florist", "reader": reader, "allow_redisplay": "limited"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    let path = format!("/v1/setups/{id}");
    let mut presented = false;
    for _ in 0..500 {
        let (_, c) = env.get(&env.admin_token, &path).await;
        if c["status"] == "processing" && !presented {
            env.sim.present_card(reader, None).unwrap();
            presented = true;
        }
        if c["status"] == "succeeded" {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the florist's card was never saved");
}

pub(crate) struct World {
    pub(crate) env: TestEnv,
    pub(crate) objects: BTreeMap<&'static str, String>,
    pub(crate) new_account: String,
}

async fn world() -> World {
    world_with(|_| {}).await
}

/// The world, with `configure` applied to the daemon's config.
pub(crate) async fn world_with(
    configure: impl FnOnce(&mut readerd::config::Config) + Send + 'static,
) -> World {
    let env = TestEnv::builder()
        .configure(|c| {
            c.payments.poll_min = Duration::from_millis(20).into();
            c.payments.poll_max = Duration::from_millis(100).into();
            c.payments.offline_wait = Duration::from_millis(200).into();
            configure(c);
        })
        .start()
        .await;
    env.add_merchant("bakery", "FR", "eur").await;
    env.add_merchant("florist", "FR", "eur").await;
    let location = env.add_location("Florist", "FR", Some("florist")).await;
    let reader = env.add_reader("florist-till", &location).await;
    let (s, b) = env
        .post(
            &env.admin_token,
            &format!("/v1/readers/{reader}"),
            json!({"merchants": ["florist"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut objects = BTreeMap::new();
    objects.insert(
        "paid",
        florist_payment(&env, &reader, "automatic", None).await,
    );
    objects.insert(
        "authorised",
        florist_payment(&env, &reader, "manual", None).await,
    );
    objects.insert(
        "to_cancel",
        florist_payment(&env, &reader, "manual", None).await,
    );
    objects.insert(
        "declined",
        florist_payment(&env, &reader, "automatic", Some(DECLINE)).await,
    );
    objects.insert("answered", florist_inputs(&env, &reader).await);
    objects.insert("saved", florist_setup(&env, &reader).await);
    let (s, rf) = env
        .post(
            env.pos("florist"),
            &format!("/v1/payments/{}/refunds", objects["paid"]),
            json!({"amount": 10}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{rf}");
    objects.insert("refund", rf["id"].as_str().unwrap().to_string());
    // From here on, what the accepted calls start ends quickly (and sends nothing more).
    assert!(env.sim.set_reader_online(&reader, false));
    objects.insert("reader", reader);
    objects.insert("location", location);
    let new_account =
        env.sim
            .create_account("FR", "eur", readerd::stripe::wire::CapabilityStatus::Active);
    World {
        env,
        objects,
        new_account,
    }
}

#[tokio::test]
async fn every_route_decides_scope_for_every_caller() {
    let w = world().await;
    let env = &w.env;
    let rows = table(&w.new_account);

    // The table covers the router exactly.
    let served: BTreeSet<Route> = env
        .daemon
        .as_ref()
        .unwrap()
        .routes
        .iter()
        .copied()
        .collect();
    let listed: BTreeSet<(&str, &str)> = rows.iter().map(|r| (r.method, r.route)).collect();
    let missing: Vec<String> = served
        .iter()
        .filter(|r| !listed.contains(&(r.method, r.path)))
        .map(|r| r.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a tenancy row: {missing:?}"
    );
    let extra: Vec<_> = listed
        .iter()
        .filter(|(m, p)| !served.iter().any(|r| r.method == *m && r.path == *p))
        .collect();
    assert!(
        extra.is_empty(),
        "rows for routes the daemon does not serve: {extra:?}"
    );

    let own_ids: Vec<&String> = [
        "reader",
        "location",
        "paid",
        "authorised",
        "to_cancel",
        "declined",
        "answered",
        "saved",
    ]
    .iter()
    .map(|k| &w.objects[k])
    .collect();
    let mut failures = Vec::new();
    quiet(env).await;
    for r in &rows {
        let path = {
            let mut p = r.path.to_string();
            for (k, id) in &w.objects {
                p = p.replace(&format!("{{{k}}}"), id);
            }
            p
        };
        // Refusals (and the other merchant's reads) first, so nothing the allowed callers
        // change can hide what a refused caller did.
        for who in [
            Who::Other,
            Who::NoToken,
            Who::UnknownToken,
            Who::Own,
            Who::Admin,
        ] {
            let want = r.want[CALLERS.iter().position(|c| *c == who).unwrap()];
            let (token, merchant) = match who {
                Who::Admin => (Some(env.admin_token.as_str()), "florist"),
                Who::Own => (Some(env.pos("florist")), "florist"),
                Who::Other => (Some(env.pos("bakery")), "bakery"),
                Who::NoToken => (None, "florist"),
                Who::UnknownToken => (Some("not-a-configured-token"), "florist"),
            };
            let body = fill(&r.body, merchant, &w.objects);
            let stripe_before = env.sim.requests().len();
            let store_before = store_snapshot(env);
            let (status, text) = call(env, r.method, &path, token, &body).await;
            if status != want {
                failures.push(format!(
                    "{} {} as {who:?}: {status}, want {want}: {text}",
                    r.method, path
                ));
            }
            let refused = matches!(status, 401 | 403 | 404);
            if !refused {
                // Let what an accepted call set going end before the next refusal is measured.
                quiet(env).await;
            }
            if refused {
                let sent: Vec<String> = env.sim.requests()[stripe_before..]
                    .iter()
                    .map(|q| format!("{} {}", q.method, q.path))
                    .collect();
                if !sent.is_empty() {
                    failures.push(format!(
                        "{} {} as {who:?} was refused but sent {sent:?} to Stripe",
                        r.method, path
                    ));
                }
                if store_snapshot(env) != store_before {
                    failures.push(format!(
                        "{} {} as {who:?} was refused but changed the store",
                        r.method, path
                    ));
                }
                assert!(
                    text.contains("\"error\""),
                    "{} {path} as {who:?}: a refusal is the error envelope: {text}",
                    r.method
                );
            }
            // `/metrics` is the operator's, on a private listener, and names readers and
            // payments by design; the API must not show one merchant's objects to another.
            if who == Who::Other && status == 200 && r.route.starts_with("/v1/") {
                for id in &own_ids {
                    if text.contains(id.as_str()) {
                        failures.push(format!(
                            "{} {} shows the florist's {id} to the bakery",
                            r.method, path
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "tenancy failures:\n{}",
        failures.join("\n")
    );
    w.env.stop().await;
}

/// The regression: a bakery till asked for a cart on a reader fenced for the florist and got
/// 202, and the reader showed it. Now it is 404, as for a reader that does not exist, and no
/// `set_reader_display` reaches Stripe.
#[tokio::test]
async fn a_display_on_a_reader_fenced_for_another_merchant_is_404() {
    let env = TestEnv::start().await;
    env.add_merchant("bakery", "FR", "eur").await;
    env.add_merchant("florist", "FR", "eur").await;
    let location = env.add_location("Hall", "FR", None).await;
    let reader = env.add_reader("florist-till", &location).await;
    let (s, _) = env
        .post(
            &env.admin_token,
            &format!("/v1/readers/{reader}"),
            json!({"merchants": ["florist"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let cart = |merchant: Option<&str>| {
        let mut c = json!({"currency": "eur", "line_items": [{"description": "Total", "amount": 99_999, "quantity": 1}], "total": 99_999});
        if let Some(m) = merchant {
            c["merchant"] = m.into();
        }
        c
    };
    for body in [cart(Some("bakery")), cart(None), cart(Some("florist"))] {
        let (s, e) = env
            .post(
                env.pos("bakery"),
                &format!("/v1/readers/{reader}/display"),
                body,
            )
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
        assert_eq!(e["error"]["code"], "not_found", "{e}");
    }
    // The florist's own till may, and its cart does reach the reader.
    let (s, e) = env
        .post(
            env.pos("florist"),
            &format!("/v1/readers/{reader}/display"),
            cart(None),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    for _ in 0..500 {
        if env
            .sim
            .requests()
            .iter()
            .any(|q| q.path.ends_with("/set_reader_display"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let displays = env
        .sim
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/set_reader_display"))
        .count();
    assert_eq!(displays, 1, "only the florist's cart reached Stripe");
    env.stop().await;
}

/// Routes are registered through `api::Routes`, which keeps the table the tenancy test
/// walks; a route added with axum's own `Router::route` would escape it.
#[test]
fn every_api_route_is_registered_through_the_route_table() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/api") {
        let path = entry.expect("entry").path();
        // `routes.rs` itself, and the console's static files (`src/api/console/`).
        if path.file_name().is_some_and(|n| n == "routes.rs") || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        for (i, line) in text.lines().enumerate() {
            if line.contains(".route(")
                || line.contains(".nest(")
                || line.contains(".route_service(")
            {
                offenders.push(format!("{}:{}", path.display(), i + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "register routes through api::Routes so the tenancy test sees them: {offenders:?}"
    );
}
