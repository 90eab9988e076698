//! Every request the client can send, checked against Stripe's OpenAPI description
//! (`../shared/stripe-fixtures/openapi-terminal-subset.json`).
//!
//! The client sends each request, with every option set, to a recording loopback server;
//! each recorded request is matched to its operation in the spec, its body (POST) or query
//! (GET, DELETE) is decoded back into a tree, and every parameter name, nesting, type,
//! enum value and required parameter is checked the way a validating server would. What
//! Stripe added after the 2023 subset is named in [`NEWER_THAN_SUBSET`] with the fact that
//! allows it, so a typo still fails.

use crate::common::fixtures_dir;
use crate::stripe_client::{config, location_json, ok, pi_json, reader_json, Server};
use readerd::stripe::form;
use readerd::stripe::params::*;
use readerd::stripe::wire::*;
use readerd::stripe::{RequestOptions, StripeClient};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Operations and parameters newer than the 2023-09 subset, each with the fact from
/// Stripe's API reference that allows it.
const NEWER_THAN_SUBSET: &[(&str, &str, &str)] = &[
    // API reference, "Hand off a PaymentIntent to a Reader": process_config has
    // `enable_customer_cancellation` (boolean), added after 2023-09.
    (
        "POST",
        "/v1/terminal/readers/{reader}/process_payment_intent",
        "process_config[enable_customer_cancellation]",
    ),
];

/// `POST /v1/refunds` is outside the subset (it holds Terminal and PaymentIntents only).
/// Its parameters as Stripe's API reference ("Create a refund") gives them, for the ones
/// readerd sends. `refund_application_fee` and `reverse_transfer` are booleans there
/// ("Connect only"): the first refunds the application fee in proportion to the refunded
/// amount, the second reverses the transfer in proportion (for a charge made with
/// `transfer_data[destination]`); both appear with the same types on the reader's
/// `refund_payment` in the subset.
fn refunds_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "payment_intent": {"type": "string", "maxLength": 5000},
            "amount": {"type": "integer"},
            "reason": {"type": "string", "enum": ["duplicate", "fraudulent", "requested_by_customer"]},
            "metadata": {"anyOf": [
                {"type": "object", "additionalProperties": {"type": "string"}},
                {"type": "string", "enum": [""]}
            ]},
            "refund_application_fee": {"type": "boolean"},
            "reverse_transfer": {"type": "boolean"},
            "expand": {"type": "array", "items": {"type": "string", "maxLength": 5000}}
        }
    })
}

/// `GET /v1/account` (the key's own account, which names the platform a store is bound to)
/// is outside the subset too. Stripe's API reference ("Retrieve account"): no parameters
/// but the common `expand`. readerd sends none.
fn own_account_query() -> BTreeMap<&'static str, Value> {
    BTreeMap::from([(
        "expand",
        json!({"name": "expand", "in": "query", "schema": {"type": "array", "items": {"type": "string", "maxLength": 5000}}}),
    )])
}

/// Reader operations outside the 2023 subset, as Stripe's API reference gives them
/// ("Collect inputs using a Reader", GA 2025-05; the test helpers "Simulate a successful
/// input collection" and "Simulate an input collection timeout"): the template and the
/// form schema of each. `collect_inputs`: `inputs` (required, at most 5), each with `type`
/// (required: email, numeric, phone, selection, signature, text), `custom_text` (required;
/// `title` required, at most 40 characters; `description` 500, `submit_button` 30,
/// `skip_button` 14), `required` (boolean), `selection[choices][]` (`id` and `text`
/// required, `style` primary or secondary) and `toggles[]` (`title`, `description`, at
/// most 50 characters each, `default_value` enabled or disabled); and `metadata`.
///
/// Saved cards, from Stripe's API reference: "Hand off a SetupIntent to a Reader"
/// (`process_setup_intent`: `setup_intent` and `allow_redisplay` (always, limited,
/// unspecified) required, `process_config[enable_customer_cancellation]` boolean; the
/// subset's 2023 form required `customer_consent_collected`, which Stripe has since removed
/// for `allow_redisplay`, so this form replaces the subset's), "Create a SetupIntent"
/// (SetupIntents are outside the subset: `payment_method_types` array of strings,
/// `customer`, `description`, `on_behalf_of` strings, `usage` off_session or on_session,
/// `metadata`, and others readerd does not send) and "Cancel a SetupIntent"
/// (`cancellation_reason`: abandoned, duplicate or requested_by_customer).
fn outside_subset(method: &str, path: &str) -> Option<(&'static str, Value)> {
    let expand = json!({"type": "array", "items": {"type": "string", "maxLength": 5000}});
    if method != "POST" {
        return None;
    }
    if path == "/v1/refunds" {
        return Some(("/v1/refunds", refunds_schema()));
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let string = json!({"type": "string", "maxLength": 5000});
    match segs.as_slice() {
        ["v1", "setup_intents"] => Some((
            "/v1/setup_intents",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "expand": expand,
                    "attach_to_self": {"type": "boolean"},
                    "confirm": {"type": "boolean"},
                    "customer": string,
                    "description": {"type": "string", "maxLength": 1000},
                    "metadata": {"anyOf": [
                        {"type": "object", "additionalProperties": {"type": "string"}},
                        {"type": "string", "enum": [""]}
                    ]},
                    "on_behalf_of": {"type": "string"},
                    "payment_method": string,
                    "payment_method_types": {"type": "array", "items": string},
                    "return_url": {"type": "string"},
                    "usage": {"type": "string", "enum": ["off_session", "on_session"]}
                }
            }),
        )),
        ["v1", "setup_intents", _, "cancel"] => Some((
            "/v1/setup_intents/{intent}/cancel",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "expand": expand,
                    "cancellation_reason": {"type": "string", "enum": ["abandoned", "duplicate", "requested_by_customer"]}
                }
            }),
        )),
        ["v1", "terminal", "readers", _, "process_setup_intent"] => Some((
            "/v1/terminal/readers/{reader}/process_setup_intent",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["allow_redisplay", "setup_intent"],
                "properties": {
                    "expand": expand,
                    "allow_redisplay": {"type": "string", "enum": ["always", "limited", "unspecified"]},
                    "process_config": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {"enable_customer_cancellation": {"type": "boolean"}}
                    },
                    "setup_intent": string
                }
            }),
        )),
        ["v1", "terminal", "readers", _, "collect_inputs"] => Some((
            "/v1/terminal/readers/{reader}/collect_inputs",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["inputs"],
                "properties": {
                    "expand": expand,
                    "metadata": {"anyOf": [
                        {"type": "object", "additionalProperties": {"type": "string"}},
                        {"type": "string", "enum": [""]}
                    ]},
                    "inputs": {"type": "array", "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["custom_text", "type"],
                        "properties": {
                            "type": {"type": "string", "enum": ["email", "numeric", "phone", "selection", "signature", "text"]},
                            "required": {"type": "boolean"},
                            "custom_text": {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["title"],
                                "properties": {
                                    "title": {"type": "string", "maxLength": 40},
                                    "description": {"type": "string", "maxLength": 500},
                                    "submit_button": {"type": "string", "maxLength": 30},
                                    "skip_button": {"type": "string", "maxLength": 14}
                                }
                            },
                            "selection": {
                                "type": "object",
                                "additionalProperties": false,
                                "required": ["choices"],
                                "properties": {"choices": {"type": "array", "items": {
                                    "type": "object",
                                    "additionalProperties": false,
                                    "required": ["id", "text"],
                                    "properties": {
                                        "id": {"type": "string", "maxLength": 50},
                                        "style": {"type": "string", "enum": ["primary", "secondary"]},
                                        "text": {"type": "string", "maxLength": 30}
                                    }
                                }}}
                            },
                            "toggles": {"type": "array", "items": {
                                "type": "object",
                                "additionalProperties": false,
                                "properties": {
                                    "default_value": {"type": "string", "enum": ["enabled", "disabled"]},
                                    "description": {"type": "string", "maxLength": 50},
                                    "title": {"type": "string", "maxLength": 50}
                                }
                            }}
                        }
                    }}
                }
            }),
        )),
        // "Collect a PaymentMethod using a Reader" and "Confirm a PaymentIntent using a
        // Reader" (GA 2025-06-30.basil): `payment_intent` (required); `collect_config` with
        // `allow_redisplay` (always, limited, unspecified), `enable_customer_cancellation`
        // and `skip_tipping` (booleans), `tipping[amount_eligible]` (integer);
        // `confirm_config[return_url]`.
        ["v1", "terminal", "readers", _, "collect_payment_method"] => Some((
            "/v1/terminal/readers/{reader}/collect_payment_method",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["payment_intent"],
                "properties": {
                    "expand": expand,
                    "payment_intent": {"type": "string", "maxLength": 5000},
                    "collect_config": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "allow_redisplay": {"type": "string", "enum": ["always", "limited", "unspecified"]},
                            "enable_customer_cancellation": {"type": "boolean"},
                            "skip_tipping": {"type": "boolean"},
                            "tipping": {
                                "type": "object",
                                "additionalProperties": false,
                                "properties": {"amount_eligible": {"type": "integer"}}
                            }
                        }
                    }
                }
            }),
        )),
        ["v1", "terminal", "readers", _, "confirm_payment_intent"] => Some((
            "/v1/terminal/readers/{reader}/confirm_payment_intent",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["payment_intent"],
                "properties": {
                    "expand": expand,
                    "payment_intent": {"type": "string", "maxLength": 5000},
                    "confirm_config": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {"return_url": {"type": "string"}}
                    }
                }
            }),
        )),
        ["v1", "test_helpers", "terminal", "readers", _, "succeed_input_collection"] => Some((
            "/v1/test_helpers/terminal/readers/{reader}/succeed_input_collection",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "expand": expand,
                    "skip_non_required_inputs": {"type": "string", "enum": ["all", "none"]}
                }
            }),
        )),
        ["v1", "test_helpers", "terminal", "readers", _, "timeout_input_collection"] => Some((
            "/v1/test_helpers/terminal/readers/{reader}/timeout_input_collection",
            json!({"type": "object", "additionalProperties": false, "properties": {"expand": expand}}),
        )),
        _ => None,
    }
}

/// Transfers are outside the subset too. Stripe's API reference ("Create a transfer",
/// "List all transfers", "Retrieve a transfer", "Create a transfer reversal") gives:
/// `POST /v1/transfers` with `amount` (integer), `currency` and `destination` (required
/// strings), `description`, `metadata`, `source_transaction`, `source_type`,
/// `transfer_group`; `GET /v1/transfers` with `created`, `destination`, `ending_before`,
/// `limit`, `starting_after`, `transfer_group`; `POST /v1/transfers/{id}/reversals` with
/// `amount`, `description`, `metadata`, `refund_application_fee` (boolean);
/// `GET /v1/transfers/{id}/reversals` with `ending_before`, `limit`, `starting_after`; all
/// take `expand`.
fn transfers_schema(method: &str, template: &str) -> Option<Value> {
    let metadata = json!({"anyOf": [
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "string", "enum": [""]}
    ]});
    let string = json!({"type": "string", "maxLength": 5000});
    let expand = json!({"type": "array", "items": {"type": "string", "maxLength": 5000}});
    let v = match (method, template) {
        ("POST", "/v1/transfers") => json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["currency", "destination"],
            "properties": {
                "amount": {"type": "integer"},
                "currency": {"type": "string"},
                "description": string,
                "destination": {"type": "string"},
                "metadata": metadata,
                "source_transaction": {"type": "string"},
                "source_type": {"type": "string", "enum": ["bank_account", "card", "fpx"]},
                "transfer_group": {"type": "string"},
                "expand": expand
            }
        }),
        ("GET", "/v1/transfers") => json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "destination": string,
                "ending_before": string,
                "limit": {"type": "integer"},
                "starting_after": string,
                "transfer_group": string,
                "expand": expand
            }
        }),
        ("GET", "/v1/transfers/{id}/reversals") => json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "ending_before": string,
                "limit": {"type": "integer"},
                "starting_after": string,
                "expand": expand
            }
        }),
        ("GET", "/v1/transfers/{id}") => json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"expand": expand}
        }),
        ("POST", "/v1/transfers/{id}/reversals") => json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "amount": {"type": "integer"},
                "description": string,
                "metadata": metadata,
                "refund_application_fee": {"type": "boolean"},
                "expand": expand
            }
        }),
        _ => return None,
    };
    Some(v)
}

/// The transfers template of a path, if it is one.
fn transfers_template(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/v1/transfers")?;
    if rest.is_empty() {
        return Some("/v1/transfers");
    }
    let rest = rest.strip_prefix('/')?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [id] if !id.is_empty() => Some("/v1/transfers/{id}"),
        [id, "reversals"] if !id.is_empty() => Some("/v1/transfers/{id}/reversals"),
        _ => None,
    }
}

struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Option<Spec> {
        let dir = fixtures_dir()?;
        let text = std::fs::read_to_string(dir.join("openapi-terminal-subset.json")).unwrap();
        Some(Spec {
            doc: serde_json::from_str(&text).unwrap(),
        })
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unexpected $ref {r}"));
                self.resolve(&self.doc["components"]["schemas"][name])
            }
            None => schema,
        }
    }

    /// The path template and operation for a concrete path.
    fn operation(&self, method: &str, path: &str) -> Option<(String, &Value)> {
        let segs: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object().unwrap();
        for (template, ops) in paths {
            let t: Vec<&str> = template.split('/').collect();
            let matches = t.len() == segs.len()
                && t.iter()
                    .zip(&segs)
                    .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')));
            if matches {
                if let Some(op) = ops.get(method.to_ascii_lowercase()) {
                    return Some((template.clone(), op));
                }
            }
        }
        None
    }
}

/// Checks `value` (a decoded form tree: strings, arrays, maps) against `schema`.
fn check(
    spec: &Spec,
    schema: &Value,
    value: &Value,
    at: &str,
    allowed: &[&str],
    errs: &mut Vec<String>,
) {
    let schema = spec.resolve(schema);
    if let Some(alts) = schema.get("anyOf").and_then(Value::as_array) {
        let mut why = Vec::new();
        for alt in alts {
            let mut e = Vec::new();
            check(spec, alt, value, at, allowed, &mut e);
            if e.is_empty() {
                return;
            }
            why.extend(e);
        }
        errs.push(format!("{at}: fits no alternative ({})", why.join("; ")));
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    match value {
        Value::Object(map) if ty == Some("array") => match form::as_list(value) {
            Some(items) => {
                for (i, v) in items.into_iter().enumerate() {
                    check(
                        spec,
                        &schema["items"],
                        v,
                        &format!("{at}[{i}]"),
                        allowed,
                        errs,
                    );
                }
            }
            None => errs.push(format!("{at}: an array sent as a hash {map:?}")),
        },
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|v| v.is_object());
            if ty != Some("object") && props.is_none() && extra.is_none() {
                errs.push(format!("{at}: a hash where the spec wants {schema}"));
                return;
            }
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let req = req.as_str().unwrap();
                if !map.contains_key(req) {
                    errs.push(format!("{at}: required `{req}` missing"));
                }
            }
            for (k, v) in map {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}[{k}]")
                };
                if allowed.contains(&here.as_str()) {
                    continue;
                }
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(s), _) => check(spec, s, v, &here, allowed, errs),
                    (None, Some(s)) => check(spec, s, v, &here, allowed, errs),
                    (None, None) => errs.push(format!("{here}: unknown parameter")),
                }
            }
        }
        Value::Array(items) => {
            if ty != Some("array") {
                errs.push(format!("{at}: an array where the spec wants {schema}"));
                return;
            }
            for (i, v) in items.iter().enumerate() {
                check(
                    spec,
                    &schema["items"],
                    v,
                    &format!("{at}[{i}]"),
                    allowed,
                    errs,
                );
            }
        }
        Value::String(s) => {
            let fits = match ty {
                Some("string") => true,
                Some("integer") => s.parse::<i64>().is_ok(),
                Some("number") => s.parse::<f64>().is_ok(),
                Some("boolean") => s == "true" || s == "false",
                _ => false,
            };
            if !fits {
                errs.push(format!("{at}: `{s}` is not a {ty:?}"));
                return;
            }
            if let Some(values) = schema.get("enum").and_then(Value::as_array) {
                if !values.iter().any(|v| v == s) {
                    errs.push(format!("{at}: `{s}` is not one of {values:?}"));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if s.chars().count() as u64 > max {
                    errs.push(format!("{at}: longer than {max}"));
                }
            }
        }
        other => errs.push(format!("{at}: unexpected {other}")),
    }
}

/// Validates one recorded request; returns the operation it matched and its errors.
fn validate(spec: &Spec, method: &str, target: &str, body: &str) -> (String, Vec<String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut errs = Vec::new();
    let outside = outside_subset(method, path);
    if let Some(t) = transfers_template(path) {
        let Some(schema) = transfers_schema(method, t) else {
            return (
                format!("{method} {t}"),
                vec![format!("{method} {path}: no such operation")],
            );
        };
        let text = if method == "POST" { body } else { query };
        if method == "POST" && !query.is_empty() {
            errs.push(format!("{t}: POST with a query string `{query}`"));
        }
        if method != "POST" {
            assert_eq!(body, "", "{method} {t} carries a body");
        }
        let tree = form::decode(text).unwrap_or_else(|e| panic!("{t}: {e}"));
        check(spec, &schema, &tree, "", &[], &mut errs);
        return (format!("{method} {t}"), errs);
    }
    // Stripe's current form of an operation wins over the subset's 2023 one.
    let found = if outside.is_some() {
        None
    } else {
        spec.operation(method, path)
    };
    let retrieve_setup_intent =
        method == "GET" && path.starts_with("/v1/setup_intents/") && path.matches('/').count() == 3;
    let (template, op) = match found {
        Some(found) => (found.0, Some(found.1)),
        None if outside.is_some() => (outside.as_ref().unwrap().0.to_string(), None),
        None if method == "POST" && path == "/v1/refunds" => ("/v1/refunds".to_string(), None),
        None if method == "GET" && path == "/v1/account" => ("/v1/account".to_string(), None),
        // "Retrieve a SetupIntent": `expand` (and a `client_secret` readerd never sends).
        None if retrieve_setup_intent => ("/v1/setup_intents/{intent}".to_string(), None),
        None => {
            return (
                format!("{method} {path}"),
                vec![format!("{method} {path}: no such operation")],
            )
        }
    };
    let allowed: Vec<&str> = NEWER_THAN_SUBSET
        .iter()
        .filter(|(m, t, _)| *m == method && *t == template)
        .map(|(_, _, p)| *p)
        .collect();
    if method == "POST" {
        if !query.is_empty() {
            errs.push(format!("{template}: POST with a query string `{query}`"));
        }
        let tree = form::decode(body).unwrap_or_else(|e| panic!("{template}: {e}"));
        let schema = match op {
            Some(op) => {
                op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"].clone()
            }
            None => {
                outside
                    .expect("a schema for an operation outside the subset")
                    .1
            }
        };
        check(spec, &schema, &tree, "", &allowed, &mut errs);
    } else {
        assert_eq!(body, "", "{method} {template} carries a body");
        let tree = form::decode(query).unwrap_or_else(|e| panic!("{template}: {e}"));
        let outside = own_account_query();
        let params: BTreeMap<&str, &Value> = match op {
            Some(op) => op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .map(|p| (p["name"].as_str().unwrap(), p))
                .collect(),
            None => outside.iter().map(|(k, v)| (*k, v)).collect(),
        };
        for (name, p) in &params {
            if p["required"] == true && tree.get(*name).is_none() {
                errs.push(format!("{template}: required query `{name}` missing"));
            }
        }
        for (k, v) in tree.as_object().unwrap() {
            match params.get(k.as_str()) {
                Some(p) => check(spec, &p["schema"], v, k, &allowed, &mut errs),
                None if allowed.contains(&k.as_str()) => {}
                None => errs.push(format!("{k}: unknown query parameter")),
            }
        }
    }
    (format!("{method} {template}"), errs)
}

fn full_metadata() -> Metadata {
    BTreeMap::from([
        ("readerd_payment".to_string(), "pay_1".to_string()),
        ("note".to_string(), "a b&c".to_string()),
    ])
}

fn full_address() -> Address {
    Address {
        city: Some("Berlin".into()),
        country: Some("DE".into()),
        line1: Some("Hauptstr. 1".into()),
        line2: Some("Hinterhaus".into()),
        postal_code: Some("10115".into()),
        state: Some("BE".into()),
    }
}

/// Sends every request the client has, with every option set, and returns what the server saw.
async fn send_everything(minimal: bool) -> Vec<crate::stripe_client::Seen> {
    let list_readers = json!({"object": "list", "url": "/v1/terminal/readers", "has_more": true,
        "data": [reader_json("tmr_1")]});
    let list_readers_end = json!({"object": "list", "url": "/v1/terminal/readers", "has_more": false,
        "data": [reader_json("tmr_2")]});
    let list_locations = json!({"object": "list", "url": "/v1/terminal/locations", "has_more": true,
        "data": [location_json("tml_1")]});
    let list_locations_end = json!({"object": "list", "url": "/v1/terminal/locations",
        "has_more": false, "data": [location_json("tml_2")]});
    let list_pis = json!({"object": "list", "url": "/v1/payment_intents", "has_more": true,
        "data": [pi_json("pi_1", "succeeded")]});
    let list_pis_end = json!({"object": "list", "url": "/v1/payment_intents", "has_more": false,
        "data": [pi_json("pi_2", "succeeded")]});
    let deleted_location = json!({"id": "tml_1", "object": "terminal.location", "deleted": true});
    let deleted_reader = json!({"id": "tmr_1", "object": "terminal.reader", "deleted": true});
    let refund = json!({"id": "re_1", "object": "refund", "amount": 100, "created": 1,
        "currency": "eur", "payment_intent": "pi_1", "status": "succeeded"});
    let token = json!({"object": "terminal.connection_token", "secret": "pst_test_1",
        "location": "tml_1"});
    let transfer = json!({"id": "tr_1", "object": "transfer", "amount": 700, "created": 1,
        "currency": "eur", "destination": "acct_2", "livemode": false});
    let list_transfers = json!({"object": "list", "url": "/v1/transfers", "has_more": false,
        "data": [transfer.clone()]});
    let reversal = json!({"id": "trr_1", "object": "transfer_reversal", "amount": 100,
        "created": 1, "currency": "eur", "transfer": "tr_1"});
    let setup_intent = json!({"id": "seti_1", "object": "setup_intent", "created": 1,
        "livemode": false, "status": "requires_payment_method",
        "payment_method_types": ["card_present"]});
    let configuration = json!({"id": "tmc_1", "object": "terminal.configuration",
        "livemode": false, "is_account_default": false,
        "tipping": {"usd": {"percentages": [10, 15, 20]}}});
    let server = Server::start(vec![
        ok(json!({"id": "acct_1", "object": "account"})),
        ok(location_json("tml_1")),
        ok(location_json("tml_1")),
        ok(location_json("tml_1")),
        ok(list_locations),
        ok(list_locations_end),
        ok(deleted_location),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(list_readers),
        ok(list_readers_end),
        ok(deleted_reader),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(pi_json("pi_1", "requires_payment_method")),
        ok(pi_json("pi_1", "requires_payment_method")),
        ok(pi_json("pi_1", "requires_payment_method")),
        ok(list_pis.clone()),
        ok(list_pis_end.clone()),
        ok(list_pis),
        ok(list_pis_end),
        ok(pi_json("pi_1", "succeeded")),
        ok(pi_json("pi_1", "canceled")),
        ok(refund),
        ok(transfer.clone()),
        ok(list_transfers),
        ok(transfer),
        ok(reversal.clone()),
        ok(
            json!({"object": "list", "url": "/v1/transfers/tr_1/reversals", "has_more": false,
            "data": [reversal]}),
        ),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(reader_json("tmr_1")),
        ok(json!({"id": "acct_platform", "object": "account"})),
        ok(token),
        ok(reader_json("tmr_1")),
        ok(setup_intent.clone()),
        ok(setup_intent.clone()),
        ok(setup_intent),
        ok(reader_json("tmr_1")),
        ok(configuration.clone()),
        ok(configuration.clone()),
        ok(configuration.clone()),
        ok(json!({"object": "list", "url": "/v1/terminal/configurations", "has_more": true,
            "data": [configuration.clone()]})),
        ok(json!({"object": "list", "url": "/v1/terminal/configurations", "has_more": false,
            "data": [json!({"id": "tmc_2", "object": "terminal.configuration", "livemode": false})]})),
    ])
    .await;
    let c = StripeClient::new(config(server.base())).unwrap();
    let acct = RequestOptions::account("acct_1").key("k");
    let platform = RequestOptions::platform().key("k");
    let full = !minimal;
    let some = |v: &str| full.then(|| v.to_string());
    let meta = if full {
        full_metadata()
    } else {
        Metadata::new()
    };

    c.retrieve_account("acct_1").await.unwrap();
    c.create_location(
        &CreateLocation {
            display_name: "Bakery".into(),
            address: if full {
                full_address()
            } else {
                Address {
                    country: Some("DE".into()),
                    ..Default::default()
                }
            },
            metadata: meta.clone(),
        },
        &platform,
    )
    .await
    .unwrap();
    c.retrieve_location("tml_1").await.unwrap();
    c.update_location(
        "tml_1",
        &UpdateLocation {
            display_name: some("Bakery 2"),
            address: full.then(full_address),
            metadata: meta.clone(),
            configuration_overrides: some("tmc_1"),
        },
        &platform,
    )
    .await
    .unwrap();
    c.list_locations().await.unwrap();
    c.delete_location("tml_1").await.unwrap();

    c.register_reader(
        &RegisterReader {
            registration_code: "simulated-wpe".into(),
            label: some("Front desk"),
            location: some("tml_1"),
            metadata: meta.clone(),
        },
        &platform,
    )
    .await
    .unwrap();
    c.retrieve_reader("tmr_1").await.unwrap();
    c.update_reader(
        "tmr_1",
        &UpdateReader {
            label: some("Back desk"),
            metadata: meta.clone(),
        },
        &platform,
    )
    .await
    .unwrap();
    c.list_readers(&ListReaders {
        location: some("tml_1"),
        status: full.then_some(ReaderStatus::Online),
        device_type: some("simulated_wisepos_e"),
        serial_number: some("sim-1"),
    })
    .await
    .unwrap();
    c.delete_reader("tmr_1").await.unwrap();
    c.process_payment_intent(
        "tmr_1",
        &ProcessPaymentIntent {
            payment_intent: "pi_1".into(),
            process_config: full.then_some(ProcessConfig {
                skip_tipping: Some(false),
                tipping: Some(TippingConfig {
                    amount_eligible: Some(1000),
                }),
                enable_customer_cancellation: Some(true),
            }),
        },
        &platform,
    )
    .await
    .unwrap();
    c.set_reader_display(
        "tmr_1",
        &SetReaderDisplay {
            cart: Cart {
                currency: "eur".into(),
                line_items: vec![
                    CartLineItem {
                        amount: 450,
                        description: "Tea".into(),
                        quantity: 1,
                    },
                    CartLineItem {
                        amount: 300,
                        description: "Cake".into(),
                        quantity: 2,
                    },
                ],
                tax: full.then_some(50),
                total: 1100,
            },
        },
        &platform,
    )
    .await
    .unwrap();
    c.present_payment_method(
        "tmr_1",
        &PresentPaymentMethod {
            card_present_number: some("4000000000009995"),
            amount_tip: full.then_some(200),
        },
        &platform,
    )
    .await
    .unwrap();
    c.cancel_action("tmr_1", &platform).await.unwrap();

    c.create_payment_intent(
        &CreatePaymentIntent {
            amount: 1250,
            currency: "eur".into(),
            payment_method_types: vec!["card_present".into()],
            // Both capture methods readerd sends: manual in one run, automatic in the other.
            capture_method: if full {
                CaptureMethod::Manual
            } else {
                CaptureMethod::Automatic
            },
            application_fee_amount: full.then_some(50),
            description: some("Two coffees"),
            metadata: meta.clone(),
            transfer_destination: some("acct_2"),
            on_behalf_of: some("acct_2"),
            transfer_group: some("pay_1"),
        },
        &acct,
    )
    .await
    .unwrap();
    c.retrieve_payment_intent(
        "pi_1",
        if full {
            &["latest_charge", "payment_method"]
        } else {
            &[]
        },
        &acct,
    )
    .await
    .unwrap();
    c.update_payment_intent(
        "pi_1",
        &UpdatePaymentIntent {
            amount: full.then_some(1500),
            application_fee_amount: full.then_some(60),
            description: some("Three coffees"),
            metadata: meta.clone(),
        },
        &acct,
    )
    .await
    .unwrap();
    c.list_payment_intents(&acct).await.unwrap();
    c.list_payment_intents_created_since(1_700_000_000, &acct)
        .await
        .unwrap();
    c.capture_payment_intent(
        "pi_1",
        &CapturePaymentIntent {
            amount_to_capture: full.then_some(1000),
            application_fee_amount: full.then_some(40),
        },
        &acct,
    )
    .await
    .unwrap();
    c.cancel_payment_intent(
        "pi_1",
        &CancelPaymentIntent {
            // Both reasons readerd sends.
            cancellation_reason: Some(
                if full {
                    "abandoned"
                } else {
                    "requested_by_customer"
                }
                .into(),
            ),
        },
        &acct,
    )
    .await
    .unwrap();
    c.create_refund(
        &CreateRefund {
            payment_intent: "pi_1".into(),
            amount: full.then_some(100),
            reason: some("requested_by_customer"),
            metadata: meta.clone(),
            // What a destination charge's refund sends.
            reverse_transfer: full,
            refund_application_fee: full,
        },
        &acct,
    )
    .await
    .unwrap();
    // What a separate charge's transfer and its reversal send.
    c.create_transfer(
        &CreateTransfer {
            amount: 700,
            currency: "eur".into(),
            destination: "acct_2".into(),
            source_transaction: some("ch_1"),
            transfer_group: some("pay_1"),
            metadata: meta.clone(),
        },
        &platform,
    )
    .await
    .unwrap();
    c.list_transfers("pay_1", &RequestOptions::platform())
        .await
        .unwrap();
    c.retrieve_transfer("tr_1", &RequestOptions::platform())
        .await
        .unwrap();
    c.create_transfer_reversal(
        "tr_1",
        &CreateTransferReversal {
            amount: full.then_some(100),
            metadata: meta.clone(),
        },
        &platform,
    )
    .await
    .unwrap();
    c.list_transfer_reversals("tr_1", &RequestOptions::platform())
        .await
        .unwrap();
    c.collect_inputs(
        "tmr_1",
        &CollectInputs {
            inputs: if full {
                full_inputs()
            } else {
                vec![CollectedInput {
                    kind: InputType::Email,
                    custom_text: Some(InputCustomText {
                        title: "Email".into(),
                        ..Default::default()
                    }),
                    required: None,
                    skipped: None,
                    email: None,
                    numeric: None,
                    phone: None,
                    text: None,
                    signature: None,
                    selection: None,
                    toggles: vec![],
                }]
            },
            metadata: if full {
                BTreeMap::from([("readerd_input".to_string(), "inp_1".to_string())])
            } else {
                Metadata::new()
            },
        },
        &platform,
    )
    .await
    .unwrap();
    c.refund_payment(
        "tmr_1",
        &RefundPayment {
            payment_intent: "pi_1".into(),
            amount: full.then_some(100),
            metadata: if full {
                BTreeMap::from([
                    ("readerd_payment".to_string(), "pay_1".to_string()),
                    ("readerd_refund".to_string(), "rf_1".to_string()),
                ])
            } else {
                Metadata::new()
            },
            reverse_transfer: full,
            refund_application_fee: full,
        },
        &platform,
    )
    .await
    .unwrap();
    c.succeed_input_collection(
        "tmr_1",
        &SucceedInputCollection {
            skip_non_required_inputs: some("all"),
        },
        &platform,
    )
    .await
    .unwrap();
    c.timeout_input_collection("tmr_1", &platform)
        .await
        .unwrap();
    // Review before confirm: the card read, then authorised.
    c.collect_payment_method(
        "tmr_1",
        &CollectPaymentMethod {
            payment_intent: "pi_1".into(),
            skip_tipping: full.then_some(true),
        },
        &platform,
    )
    .await
    .unwrap();
    c.confirm_payment_intent(
        "tmr_1",
        &ConfirmPaymentIntent {
            payment_intent: "pi_1".into(),
        },
        &platform,
    )
    .await
    .unwrap();
    // The store's binding, a connection token, a merchant-owned reader's read.
    c.retrieve_own_account().await.unwrap();
    c.create_connection_token(
        &CreateConnectionToken {
            location: some("tml_1"),
        },
        &acct,
    )
    .await
    .unwrap();
    c.retrieve_reader_on("tmr_1", &RequestOptions::account("acct_1"))
        .await
        .unwrap();
    // A card saved on a reader: the SetupIntent, read, canceled; the reader's action.
    c.create_setup_intent(
        &CreateSetupIntent {
            payment_method_types: vec!["card_present".into()],
            customer: some("cus_1"),
            usage: some("off_session"),
            on_behalf_of: some("acct_2"),
            description: some("Card on file"),
            metadata: meta.clone(),
        },
        &acct,
    )
    .await
    .unwrap();
    c.retrieve_setup_intent(
        "seti_1",
        if full { &["latest_attempt"] } else { &[] },
        &acct,
    )
    .await
    .unwrap();
    c.cancel_setup_intent(
        "seti_1",
        &CancelSetupIntent {
            cancellation_reason: some("abandoned"),
        },
        &acct,
    )
    .await
    .unwrap();
    c.process_setup_intent(
        "tmr_1",
        &ProcessSetupIntent {
            setup_intent: "seti_1".into(),
            allow_redisplay: "limited".into(),
            enable_customer_cancellation: full.then_some(true),
        },
        &platform,
    )
    .await
    .unwrap();
    // Tipping per location: a Terminal Configuration created, read, updated (or its
    // tipping unset) and listed.
    let tip = |p: Vec<i64>| CurrencyTipping {
        percentages: Some(p),
        fixed_amounts: full.then(|| vec![100, 200, 300]),
        smart_tip_threshold: full.then_some(1000),
    };
    let mut tipping = Tipping::from([("usd".to_string(), tip(vec![10, 15, 20]))]);
    if full {
        tipping.insert("eur".into(), tip(vec![5, 10]));
    }
    c.create_configuration(
        &CreateConfiguration {
            tipping: tipping.clone(),
        },
        &acct,
    )
    .await
    .unwrap();
    c.retrieve_configuration("tmc_1", &acct).await.unwrap();
    c.update_configuration(
        "tmc_1",
        &UpdateConfiguration {
            tipping: full.then_some(tipping),
        },
        &platform,
    )
    .await
    .unwrap();
    c.list_configurations_on(&acct).await.unwrap();
    server.seen()
}

/// Every kind of input readerd sends, with every option.
fn full_inputs() -> Vec<CollectedInput> {
    let kinds = [
        InputType::Email,
        InputType::Phone,
        InputType::Text,
        InputType::Numeric,
        InputType::Selection,
    ];
    let mut all: Vec<CollectedInput> = kinds
        .into_iter()
        .map(|kind| CollectedInput {
            selection: (kind == InputType::Selection).then(|| InputSelection {
                choices: vec![
                    InputChoice {
                        id: Some("friend".into()),
                        text: "A friend".into(),
                        style: Some("primary".into()),
                    },
                    InputChoice {
                        id: Some("web".into()),
                        text: "The web".into(),
                        style: Some("secondary".into()),
                    },
                ],
                id: None,
                text: None,
            }),
            kind,
            custom_text: Some(InputCustomText {
                title: "Your answer".into(),
                description: Some("We only use it for the receipt".into()),
                submit_button: Some("Send".into()),
                skip_button: Some("Skip".into()),
            }),
            required: Some(true),
            skipped: None,
            email: None,
            numeric: None,
            phone: None,
            text: None,
            signature: None,
            toggles: vec![InputToggle {
                title: Some("Newsletter".into()),
                description: Some("Monthly news".into()),
                default_value: Some("enabled".into()),
                value: None,
            }],
        })
        .collect();
    // At most five inputs: the signature replaces the text in this request.
    all[2].kind = InputType::Signature;
    all
}

/// Every operation the client can call, as `METHOD template`.
const ALL_OPERATIONS: &[&str] = &[
    "GET /v1/accounts/{account}",
    "POST /v1/terminal/locations",
    "GET /v1/terminal/locations/{location}",
    "POST /v1/terminal/locations/{location}",
    "GET /v1/terminal/locations",
    "DELETE /v1/terminal/locations/{location}",
    "POST /v1/terminal/readers",
    "GET /v1/terminal/readers/{reader}",
    "POST /v1/terminal/readers/{reader}",
    "GET /v1/terminal/readers",
    "DELETE /v1/terminal/readers/{reader}",
    "POST /v1/terminal/readers/{reader}/process_payment_intent",
    "POST /v1/terminal/readers/{reader}/set_reader_display",
    "POST /v1/test_helpers/terminal/readers/{reader}/present_payment_method",
    "POST /v1/terminal/readers/{reader}/cancel_action",
    "POST /v1/payment_intents",
    "GET /v1/payment_intents/{intent}",
    "POST /v1/payment_intents/{intent}",
    "GET /v1/payment_intents",
    "POST /v1/payment_intents/{intent}/capture",
    "POST /v1/payment_intents/{intent}/cancel",
    "POST /v1/refunds",
    "GET /v1/account",
    "POST /v1/terminal/connection_tokens",
    "POST /v1/terminal/readers/{reader}/collect_inputs",
    "POST /v1/terminal/readers/{reader}/refund_payment",
    "POST /v1/test_helpers/terminal/readers/{reader}/succeed_input_collection",
    "POST /v1/test_helpers/terminal/readers/{reader}/timeout_input_collection",
    "POST /v1/terminal/readers/{reader}/collect_payment_method",
    "POST /v1/terminal/readers/{reader}/confirm_payment_intent",
    "POST /v1/transfers",
    "GET /v1/transfers",
    "GET /v1/transfers/{id}",
    "POST /v1/transfers/{id}/reversals",
    "GET /v1/transfers/{id}/reversals",
    "POST /v1/setup_intents",
    "GET /v1/setup_intents/{intent}",
    "POST /v1/setup_intents/{intent}/cancel",
    "POST /v1/terminal/readers/{reader}/process_setup_intent",
    "POST /v1/terminal/configurations",
    "GET /v1/terminal/configurations/{configuration}",
    "POST /v1/terminal/configurations/{configuration}",
    "GET /v1/terminal/configurations",
];

async fn check_all(minimal: bool) {
    let Some(spec) = Spec::load() else { return };
    let seen = send_everything(minimal).await;
    let mut covered = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for r in &seen {
        let (op, errs) = validate(&spec, &r.method, &r.target, &r.body);
        for e in errs {
            failures.push(format!("{op}: {e}\n    sent: {} {}", r.target, r.body));
        }
        covered.insert(op);
    }
    assert!(
        failures.is_empty(),
        "requests the spec refuses:\n{}",
        failures.join("\n")
    );
    let want: std::collections::BTreeSet<String> =
        ALL_OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(covered, want, "operations covered");
    // Pagination was exercised with its cursor on every list.
    for list in [
        "/v1/terminal/readers?",
        "/v1/terminal/locations?",
        "/v1/payment_intents?",
        "/v1/terminal/configurations?",
    ] {
        assert!(
            seen.iter()
                .any(|r| r.target.starts_with(list) && r.target.contains("starting_after=")),
            "{list} not paginated"
        );
    }
}

#[tokio::test]
async fn every_request_with_every_option_fits_the_spec() {
    check_all(false).await;
}

#[tokio::test]
async fn every_request_with_only_required_options_fits_the_spec() {
    check_all(true).await;
}

/// The checker is not vacuous: it refuses what a validating server refuses.
#[test]
fn the_checker_refuses_typos_wrong_types_and_missing_parameters() {
    let Some(spec) = Spec::load() else { return };
    let bad = [
        ("POST", "/v1/terminal/readers/tmr_1/process_payment_intent", "payment_intent=pi_1&process_config[skip_tiping]=true"),
        ("POST", "/v1/terminal/readers/tmr_1/process_payment_intent", "payment_intent=pi_1&process_config[skip_tipping]=yes"),
        ("POST", "/v1/terminal/readers/tmr_1/process_payment_intent", "process_config[skip_tipping]=true"),
        ("POST", "/v1/terminal/readers/tmr_1/process_payment_intent", "payment_intent=pi_1&process_config[enable_customer_cancelation]=true"),
        ("POST", "/v1/payment_intents", "amount=12.50&currency=eur"),
        ("POST", "/v1/payment_intents", "amount=1250&currency=eur&capture_method=manuel"),
        ("POST", "/v1/payment_intents", "amount=1250&currency=eur&transfer_data[amount]=5"),
        ("POST", "/v1/payment_intents", "amount=1250&currency=eur&payment_method_types=card_present"),
        ("POST", "/v1/terminal/locations", "display_name=x&address[line1]=y"),
        ("POST", "/v1/terminal/readers/tmr_1/set_reader_display", "type=cart&cart[currency]=eur&cart[total]=1&cart[line_items][0][amount]=1&cart[line_items][0][quantity]=1"),
        ("POST", "/v1/refunds", "payment_intent=pi_1&reason=changed_mind"),
        ("POST", "/v1/refunds", "payment_intent=pi_1&amount_refunded=1"),
        ("POST", "/v1/refunds", "payment_intent=pi_1&reverse_transfer=yes"),
        ("POST", "/v1/refunds", "payment_intent=pi_1&refund_aplication_fee=true"),
        ("POST", "/v1/terminal/connection_tokens", "locaton=tml_1"),
        ("GET", "/v1/account?account=acct_1", ""),
        ("POST", "/v1/transfers", "amount=100&currency=eur"),
        ("POST", "/v1/transfers", "amount=1.5&currency=eur&destination=acct_1"),
        ("POST", "/v1/transfers", "amount=100&currency=eur&destination=acct_1&source_transacton=ch_1"),
        ("POST", "/v1/transfers/tr_1/reversals", "amount=10&reverse=true"),
        ("GET", "/v1/transfers?transfer_grup=pay_1", ""),
        ("GET", "/v1/terminal/readers?status=busy", ""),
        ("GET", "/v1/terminal/readers?limit=100&starting_afterr=tmr_1", ""),
        ("GET", "/v1/payment_intents/pi_1?expand=latest_charge", ""),
        ("POST", "/v1/terminal/readers/tmr_1/reboot", ""),
        ("POST", "/v1/terminal/readers/tmr_1/collect_inputs", "inputs[0][type]=emial&inputs[0][custom_text][title]=x"),
        ("POST", "/v1/terminal/readers/tmr_1/collect_inputs", "inputs[0][type]=email"),
        ("POST", "/v1/terminal/readers/tmr_1/collect_inputs", "inputs[0][type]=email&inputs[0][custom_text][title]=x&inputs[0][custom_text][skip_button]=a%20very%20long%20label"),
        ("POST", "/v1/terminal/readers/tmr_1/collect_inputs", "inputs[0][type]=selection&inputs[0][custom_text][title]=x&inputs[0][selection][choices][0][text]=a"),
        ("POST", "/v1/test_helpers/terminal/readers/tmr_1/succeed_input_collection", "skip_non_required_inputs=some"),
        ("POST", "/v1/terminal/readers/tmr_1/collect_payment_method", "collect_config[skip_tipping]=true"),
        ("POST", "/v1/terminal/readers/tmr_1/collect_payment_method", "payment_intent=pi_1&collect_config[skip_tiping]=true"),
        ("POST", "/v1/terminal/readers/tmr_1/confirm_payment_intent", "payment_intent=pi_1&surcharge=150"),
    ];
    for (method, target, body) in bad {
        let (op, errs) = validate(&spec, method, target, body);
        assert!(!errs.is_empty(), "{op} accepted `{target}` `{body}`");
    }
    // And accepts the same requests written right.
    let good = [
        ("POST", "/v1/terminal/readers/tmr_1/process_payment_intent", "payment_intent=pi_1&process_config[skip_tipping]=true&process_config[enable_customer_cancellation]=false"),
        ("POST", "/v1/payment_intents", "amount=1250&currency=eur&capture_method=manual&transfer_data[destination]=acct_1&payment_method_types[]=card_present&metadata[a]=b"),
        ("POST", "/v1/payment_intents/pi_1", "application_fee_amount=&metadata="),
        ("POST", "/v1/refunds", "payment_intent=pi_1&amount=400&reverse_transfer=true&refund_application_fee=true"),
        ("POST", "/v1/terminal/connection_tokens", "location=tml_1"),
        ("GET", "/v1/account", ""),
        ("POST", "/v1/transfers", "amount=100&currency=eur&destination=acct_1&source_transaction=ch_1&transfer_group=pay_1&metadata[readerd_payment]=pay_1"),
        ("POST", "/v1/transfers/tr_1/reversals", "amount=10&metadata[readerd_refund]=rf_1"),
        ("GET", "/v1/transfers?transfer_group=pay_1&limit=100", ""),
        ("GET", "/v1/terminal/readers?status=online&limit=100&starting_after=tmr_1&expand[]=data.location", ""),
    ];
    for (method, target, body) in good {
        let (op, errs) = validate(&spec, method, target, body);
        assert!(
            errs.is_empty(),
            "{op} refused `{target}` `{body}`: {errs:?}"
        );
    }
}
