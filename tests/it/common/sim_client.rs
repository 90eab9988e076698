//! A minimal Stripe-style HTTP client for driving the emulator in tests, and the check that
//! every object it returns parses into the shared wire types and carries only fields
//! Stripe documents.

use readerd::sim::{spawn, SimConfig, SimHandle};
use readerd::stripe::form::Params;
use readerd::stripe::wire;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// A response: status, selected headers and the JSON body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts 200 and returns the body, after checking the object it holds (and every
    /// object of a list) against the wire types and Stripe's schema.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "unexpected answer: {}", self.body);
        check_any(&self.body);
        self.body
    }
    /// Asserts an error envelope with `status` and `code`; returns the error object.
    pub fn err(self, status: u16, code: Option<&str>) -> Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.body);
        let env: wire::ErrorEnvelope =
            serde_json::from_value(self.body.clone()).expect("Stripe's error envelope");
        assert_eq!(env.error.code.as_deref(), code, "{}", self.body);
        check_schema("error", &self.body);
        self.body["error"].clone()
    }
}

/// Talks to one emulator with one `sk_test_` key.
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    key: String,
}

impl Api {
    pub fn new(sim: &SimHandle) -> Api {
        Api {
            base: sim.base_url(),
            http: reqwest::Client::new(),
            key: "sk_test_readerd".into(),
        }
    }

    pub fn with_key(mut self, key: &str) -> Api {
        self.key = key.to_string();
        self
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &Params,
        account: Option<&str>,
        idem: Option<&str>,
    ) -> Result<Resp, reqwest::Error> {
        let mut url = format!("{}{}", self.base, path);
        let mut req = if method == reqwest::Method::POST {
            self.http
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(params.encode())
        } else {
            if !params.is_empty() {
                url.push('?');
                url.push_str(&params.encode());
            }
            self.http.request(method, &url)
        };
        if !self.key.is_empty() {
            req = req.bearer_auth(&self.key);
        }
        if let Some(a) = account {
            req = req.header("Stripe-Account", a);
        }
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub async fn post(&self, path: &str, p: &Params, account: Option<&str>) -> Resp {
        self.send(reqwest::Method::POST, path, p, account, None)
            .await
            .expect("transport")
    }

    pub async fn post_key(&self, path: &str, p: &Params, account: Option<&str>, key: &str) -> Resp {
        self.send(reqwest::Method::POST, path, p, account, Some(key))
            .await
            .expect("transport")
    }

    pub async fn get(&self, path: &str, q: &Params, account: Option<&str>) -> Resp {
        self.send(reqwest::Method::GET, path, q, account, None)
            .await
            .expect("transport")
    }

    pub async fn delete(&self, path: &str, account: Option<&str>) -> Resp {
        self.send(reqwest::Method::DELETE, path, &Params::new(), account, None)
            .await
            .expect("transport")
    }

    // The documented flows' building blocks ------------------------------------------------

    /// A connected account with card_payments active.
    pub async fn account(&self, country: &str) -> String {
        let mut p = Params::new();
        p.push("type", "custom")
            .push("country", country)
            .push("capabilities[card_payments][requested]", true)
            .push("capabilities[transfers][requested]", true);
        let v = self.post("/v1/accounts", &p, None).await.ok();
        check("account", &v);
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn location(&self, name: &str, country: &str) -> String {
        let mut p = Params::new();
        p.push("display_name", name)
            .push("address[line1]", "1 Main St")
            .push("address[city]", "Springfield")
            .push("address[postal_code]", "12345")
            .push("address[country]", country);
        let v = self.post("/v1/terminal/locations", &p, None).await.ok();
        check("terminal.location", &v);
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn reader(&self, location: &str) -> String {
        let mut p = Params::new();
        p.push("registration_code", "simulated-wpe")
            .push("location", location);
        let v = self.post("/v1/terminal/readers", &p, None).await.ok();
        check("terminal.reader", &v);
        v["id"].as_str().unwrap().to_string()
    }

    /// A card_present PaymentIntent on `account`.
    pub async fn intent(&self, account: Option<&str>, amount: i64, capture: &str) -> String {
        let mut p = Params::new();
        p.push("amount", amount)
            .push("currency", "usd")
            .push_list("payment_method_types", &["card_present"])
            .push("capture_method", capture);
        let v = self.post("/v1/payment_intents", &p, account).await.ok();
        check("payment_intent", &v);
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn process(&self, reader: &str, pi: &str) -> Resp {
        let mut p = Params::new();
        p.push("payment_intent", pi);
        self.post(
            &format!("/v1/terminal/readers/{reader}/process_payment_intent"),
            &p,
            None,
        )
        .await
    }

    pub async fn present(&self, reader: &str, number: Option<&str>) -> Resp {
        let mut p = Params::new();
        if let Some(n) = number {
            p.push("type", "card_present")
                .push("card_present[number]", n);
        }
        self.post(
            &format!("/v1/test_helpers/terminal/readers/{reader}/present_payment_method"),
            &p,
            None,
        )
        .await
    }

    pub async fn cancel_action(&self, reader: &str) -> Resp {
        self.post(
            &format!("/v1/terminal/readers/{reader}/cancel_action"),
            &Params::new(),
            None,
        )
        .await
    }

    pub async fn get_reader(&self, reader: &str) -> Value {
        let v = self
            .get(
                &format!("/v1/terminal/readers/{reader}"),
                &Params::new(),
                None,
            )
            .await
            .ok();
        check("terminal.reader", &v);
        v
    }

    pub async fn get_intent(&self, account: Option<&str>, pi: &str) -> Value {
        let mut q = Params::new();
        q.push_list("expand", &["latest_charge"]);
        let v = self
            .get(&format!("/v1/payment_intents/{pi}"), &q, account)
            .await
            .ok();
        check("payment_intent", &v);
        v
    }
}

/// An emulator whose authorisations finish inside the present call.
pub async fn instant() -> (SimHandle, Api) {
    emulator(SimConfig {
        auth_delay: std::time::Duration::ZERO,
        ..SimConfig::default()
    })
    .await
}

/// An emulator started with `cfg`, and a client for it.
pub async fn emulator(cfg: SimConfig) -> (SimHandle, Api) {
    let sim = spawn(cfg).await.expect("emulator");
    let api = Api::new(&sim);
    (sim, api)
}

/// Platform, connected account, location, reader.
pub struct World {
    pub account: String,
    pub location: String,
    pub reader: String,
}

pub async fn world(api: &Api) -> World {
    let account = api.account("US").await;
    let location = api.location("HQ", "US").await;
    let reader = api.reader(&location).await;
    World {
        account,
        location,
        reader,
    }
}

// ---------------------------------------------------------------------------------------
// Shape checks

/// Fields newer than the 2023 OpenAPI subset that the newest fixtures, Stripe's API
/// reference or its changelog show; the emulator may write them. Matched as suffixes of the
/// field's dotted path.
const NEWER: &[&str] = &[
    // terminal.reader.last_seen_at: in fixtures3.json since 2025.
    "terminal.reader.last_seen_at",
    // action.api_error: 2026-05-27.dahlia changelog, newest fixtures.
    "action.api_error",
    // action.process_payment_intent.account: platform-owned-reader preview SDKs.
    "action.process_payment_intent.account",
    // process_config.enable_customer_cancellation: in the current API reference.
    "process_config.enable_customer_cancellation",
    // action.collect_inputs: Stripe's API reference, "Collect inputs using a Reader" (GA
    // 2025-05): `inputs[]` (type, custom_text, required, skipped, the typed value objects,
    // selection, toggles) and `metadata`. A suffix, so every field below it is allowed.
    "action.collect_inputs",
    // action.collect_payment_method and action.confirm_payment_intent: Stripe's API
    // reference (GA 2025-06-30.basil): `payment_intent`, `payment_method` (the PaymentMethod,
    // with `card_present` brand, last4, funding, wallet), `collect_config`, `confirm_config`
    // and (preview) `account`. Suffixes, so every field below them is allowed.
    "action.collect_payment_method",
    "action.confirm_payment_intent",
    // charge.payment_method_details.card_present.reader / .location: newer schema.
    "card_present.reader",
    "card_present.location",
];

fn spec() -> Option<&'static Value> {
    static SPEC: OnceLock<Option<Value>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let dir = super::fixtures_dir()?;
        let text = std::fs::read_to_string(dir.join("openapi-terminal-subset.json")).ok()?;
        serde_json::from_str(&text).ok()
    })
    .as_ref()
}

fn schema_properties(schema: &str) -> Option<BTreeSet<String>> {
    let props = spec()?["components"]["schemas"][schema]["properties"].as_object()?;
    Some(props.keys().cloned().collect())
}

/// Whether Stripe's schema was found (the field checks are skipped without it).
pub fn schema_available() -> bool {
    schema_properties("terminal.reader").is_some()
}

/// Follows `$ref`s.
fn resolve<'a>(spec: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        schema = &spec["components"]["schemas"][name];
    }
    schema
}

/// The object variants of a schema (itself, or the members of `anyOf`/`oneOf`).
fn variants<'a>(spec: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    let schema = resolve(spec, schema);
    let mut out = Vec::new();
    for key in ["anyOf", "oneOf"] {
        for v in schema[key].as_array().into_iter().flatten() {
            out.extend(variants(spec, v));
        }
    }
    if schema.get("properties").is_some() || schema.get("additionalProperties").is_some() {
        out.push(schema);
    }
    if schema.get("items").is_some() {
        out.push(schema);
    }
    out
}

/// Walks `v` along `schema`, refusing any field the schema (or [`NEWER`]) does not know.
fn walk(spec: &Value, schema: &Value, v: &Value, path: &str) {
    let vs = variants(spec, schema);
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}.{k}");
                let known = vs.iter().find_map(|s| {
                    s["properties"]
                        .get(k)
                        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                });
                match known {
                    Some(child_schema) => walk(spec, child_schema, child, &here),
                    None => assert!(
                        NEWER.iter().any(|n| here.ends_with(n)),
                        "`{here}` is a field unknown to Stripe"
                    ),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = vs.iter().find_map(|s| s.get("items")) {
                for (i, item) in items.iter().enumerate() {
                    walk(spec, item_schema, item, &format!("{path}[{i}]"));
                }
            }
        }
        _ => {}
    }
}

/// Walks `v` against the schema `name`, when the schema is available.
fn check_schema(name: &str, v: &Value) {
    if let Some(spec) = spec() {
        let schema = &spec["components"]["schemas"][name];
        assert!(schema.is_object(), "no schema {name}");
        walk(spec, schema, v, name);
    }
}

/// Checks `v` by its `object` (lists element by element); deleted stubs are checked
/// against the wire type only.
pub fn check_any(v: &Value) {
    let kind = v["object"].as_str().unwrap_or("");
    if v.get("deleted").is_some() {
        let _: wire::Deleted = serde_json::from_value(v.clone()).expect("a Deleted");
        return;
    }
    match kind {
        "list" => {
            check("list", v);
            for item in v["data"].as_array().into_iter().flatten() {
                check_any(item);
            }
        }
        "terminal.reader"
        | "terminal.location"
        | "payment_intent"
        | "charge"
        | "account"
        | "refund"
        | "transfer"
        | "application_fee"
        | "setup_intent"
        | "setup_attempt"
        | "terminal.configuration" => check(kind, v),
        // Outside the OpenAPI subset: the top-level fields of Stripe's Capability object.
        "capability" => {
            const FIELDS: &[&str] = &[
                "id",
                "object",
                "account",
                "future_requirements",
                "requested",
                "requested_at",
                "requirements",
                "status",
            ];
            for k in v.as_object().expect("an object").keys() {
                assert!(
                    FIELDS.contains(&k.as_str()),
                    "capability.{k} unknown to Stripe"
                );
            }
        }
        other => panic!("unexpected object `{other}`: {v}"),
    }
}

/// Asserts that `v` parses into the wire type of `kind` and that no field in it, at any
/// depth, is unknown to Stripe.
pub fn check(kind: &str, v: &Value) {
    match kind {
        "terminal.reader" => {
            let _: wire::Reader = serde_json::from_value(v.clone()).expect("a Reader");
        }
        "terminal.location" => {
            let _: wire::Location = serde_json::from_value(v.clone()).expect("a Location");
        }
        "payment_intent" => {
            let _: wire::PaymentIntent =
                serde_json::from_value(v.clone()).expect("a PaymentIntent");
        }
        "charge" => {
            let _: wire::Charge = serde_json::from_value(v.clone()).expect("a Charge");
        }
        "account" => {
            let _: wire::Account = serde_json::from_value(v.clone()).expect("an Account");
        }
        "refund" => {
            let _: wire::Refund = serde_json::from_value(v.clone()).expect("a Refund");
        }
        "transfer" => {
            let _: wire::Transfer = serde_json::from_value(v.clone()).expect("a Transfer");
        }
        "application_fee" => {
            let _: wire::ApplicationFee =
                serde_json::from_value(v.clone()).expect("an ApplicationFee");
        }
        "setup_intent" => {
            let _: wire::SetupIntent = serde_json::from_value(v.clone()).expect("a SetupIntent");
        }
        "setup_attempt" => {
            let _: wire::SetupAttempt = serde_json::from_value(v.clone()).expect("a SetupAttempt");
        }
        "terminal.configuration" => {
            let _: wire::TerminalConfiguration =
                serde_json::from_value(v.clone()).expect("a TerminalConfiguration");
        }
        "list" => {
            let l: wire::List<Value> = serde_json::from_value(v.clone()).expect("a List");
            assert_eq!(l.object, "list");
            return;
        }
        other => panic!("no check for {other}"),
    }
    check_schema(kind, v);
}
