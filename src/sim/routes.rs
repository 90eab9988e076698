//! HTTP for the emulator: Stripe's `/v1` routes and the `/_sim/` control routes.
//!
//! Every `/v1` request goes through the same steps, in Stripe's order: a `Request-Id`;
//! authentication (any `sk_test_` key is the platform); the `Stripe-Account` scope; the
//! rate limiter; parameter decoding; the fault decision; the idempotency key (replay,
//! mismatch, in use); injected latency; then the operation on the state, whose response
//! is stored under the key. A dropped connection is real: the socket is closed without a
//! response (see [`Conn`]).
//!
//! Longer than 600 lines on purpose: one handler runs every `/v1` request through the same
//! steps, and the table that maps Stripe's paths onto the state's operations sits beside
//! it, so that a new endpoint cannot skip a step.

use super::faults::Outcome;
use super::idempotency::Begin;
use super::state::{Form, SimError, TestCard};
use super::{lock, Faults, RequestRecord, Shared};
use crate::stripe::form::decode;
use crate::stripe::wire::{CapabilityStatus, ErrorEnvelope};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Serves until `shutdown` flips to true.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new().fallback(handle).with_state(shared);
    let signal = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    let _ = axum::serve(
        SimListener(listener),
        app.into_make_service_with_connect_info::<Conn>(),
    )
    .with_graceful_shutdown(signal)
    .await;
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    if let Some(rest) = path.strip_prefix("/_sim/") {
        let request_id = {
            let mut st = lock(&shared.state);
            super::state::random_id(&mut st.rng, "req", 14)
        };
        let mut resp = control(&shared, &method, rest, uri.query(), &body);
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("request-id", v);
        }
        return resp;
    }
    api(shared, conn, method, uri, headers, body).await
}

// ---------------------------------------------------------------------------------------
// /v1

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The secret key of a request: `Bearer <key>` or HTTP Basic with the key as user name.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let auth = header(headers, "authorization")?.trim();
    if let Some(k) = auth.strip_prefix("Bearer ") {
        return Some(k.trim().to_string());
    }
    let b64 = auth.strip_prefix("Basic ")?;
    let decoded = base64_decode(b64.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split(':').next().unwrap_or("").to_string())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        buf = (buf << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The key's world: `Ok(false)` for a test key, `Ok(true)` for a live one.
fn authenticate(headers: &HeaderMap) -> Result<bool, SimError> {
    let unauthorized = |msg: String| {
        let mut e = SimError::invalid(None, msg);
        e.status = 401;
        e.store = false;
        e
    };
    match api_key(headers) {
        None => Err(unauthorized("You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.".into())),
        Some(k) if (k.starts_with("sk_test_") || k.starts_with("rk_test_")) && k.len() > 8 => Ok(false),
        Some(k) if (k.starts_with("sk_live_") || k.starts_with("rk_live_")) && k.len() > 8 => Ok(true),
        Some(k) => {
            // Stripe shows only the last four characters of a wrong key.
            let tail: String = k.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            Err(unauthorized(format!("Invalid API Key provided: {}****{tail}", k.chars().take(8).collect::<String>().replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', ""))))
        }
    }
}

struct Answer {
    status: u16,
    body: String,
    headers: Vec<(&'static str, String)>,
}

fn error_body(e: &SimError, request_id: &str) -> String {
    let mut err = (*e.error).clone();
    err.request_log_url = Some(format!(
        "https://dashboard.stripe.com/test/logs/{request_id}"
    ));
    serde_json::to_string(&ErrorEnvelope { error: err }).unwrap_or_default()
}

fn error_answer(e: &SimError, request_id: &str) -> Answer {
    Answer {
        status: e.status,
        body: error_body(e, request_id),
        headers: Vec::new(),
    }
}

fn respond(a: Answer, request_id: &str, key: Option<&str>) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, a.body).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("request-id", v);
    }
    if let Some(k) = key.and_then(|k| HeaderValue::from_str(k).ok()) {
        h.insert("idempotency-key", k);
    }
    for (name, value) in a.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

async fn api(
    shared: Arc<Shared>,
    conn: Conn,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let request_id = {
        let mut st = lock(&shared.state);
        super::state::random_id(&mut st.rng, "req", 14)
    };
    let account = header(&headers, "stripe-account").map(str::to_string);
    let key = if method == Method::POST {
        header(&headers, "idempotency-key").map(str::to_string)
    } else {
        None
    };
    let mut record = RequestRecord {
        method: method.as_str().to_string(),
        path: path.clone(),
        account: account.clone(),
        idempotency_key: key.clone(),
        status: 0,
        fault: None,
        replayed: false,
        request_id: request_id.clone(),
    };
    let (answer, dropped) = pipeline(
        &shared,
        &conn,
        &method,
        &uri,
        &body,
        &headers,
        &account,
        &key,
        &request_id,
        &mut record,
    )
    .await;
    record.status = if dropped { 0 } else { answer.status };
    tracing::info!(
        method = %record.method,
        path = %record.path,
        account = record.account.as_deref().unwrap_or(""),
        status = record.status,
        fault = record.fault.as_deref().unwrap_or(""),
        replayed = record.replayed,
        request_id = %record.request_id,
        "sim request"
    );
    shared.record_request(record);
    if dropped {
        conn.kill.store(true, Ordering::SeqCst);
    }
    respond(answer, &request_id, key.as_deref())
}

#[allow(clippy::too_many_arguments)]
async fn pipeline(
    shared: &Arc<Shared>,
    _conn: &Conn,
    method: &Method,
    uri: &Uri,
    body: &Bytes,
    headers: &HeaderMap,
    account: &Option<String>,
    key: &Option<String>,
    request_id: &str,
    record: &mut RequestRecord,
) -> (Answer, bool) {
    let path = uri.path();
    let fail = |e: SimError| (error_answer(&e, request_id), false);
    let live = match authenticate(headers) {
        Ok(live) => live,
        Err(e) => return fail(e),
    };
    let (world, keys) = shared.world(live);
    let scope = match lock(world).scope(account.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let rate_limited = |record: &mut RequestRecord| {
        record.fault = Some("rate_limit".into());
        let mut e = SimError::invalid(
            Some("rate_limit"),
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
        );
        e.status = 429;
        let mut a = error_answer(&e, request_id);
        a.headers
            .push(("stripe-rate-limited-reason", "global-rate".into()));
        (a, false)
    };
    {
        let mut rate = lock(&shared.rate);
        if let Some(limit) = rate.0 {
            if !rate.1.admit(limit) {
                return rate_limited(record);
            }
        }
    }
    // GET and DELETE carry parameters in the query string; a POST may carry some there too.
    let query = uri.query().unwrap_or("");
    let raw = if *method == Method::POST {
        let body = String::from_utf8_lossy(body);
        match (query.is_empty(), body.is_empty()) {
            (true, _) => body.into_owned(),
            (false, true) => query.to_string(),
            (false, false) => format!("{query}&{body}"),
        }
    } else {
        query.to_string()
    };
    let form = match decode(&raw) {
        Ok(v) => Form::new(v),
        Err(e) => return fail(SimError::param(None, &e.0, format!("Invalid request: {e}"))),
    };
    if let Some(k) = key {
        if k.len() > 255 {
            return fail(SimError::param(
                None,
                "Idempotency-Key",
                "Idempotency keys must be at most 255 characters long.",
            ));
        }
    }
    let decision = {
        let mut rng = lock(&shared.fault_rng);
        lock(&shared.faults).decide(method.as_str(), path, &mut *rng)
    };
    record.fault = decision.outcome.name().map(str::to_string);
    if decision.outcome == Outcome::RateLimit {
        return rate_limited(record);
    }
    if decision.outcome == Outcome::LockTimeout {
        let mut e = SimError::invalid(
            Some("lock_timeout"),
            "This object cannot be accessed right now because another API request or Stripe process is currently accessing it. If you see this error intermittently, retry the request. If you see this error frequently and are making multiple concurrent requests to a single object, make your requests serially or at a lower rate.",
        );
        e.status = 429;
        return (error_answer(&e, request_id), false);
    }
    let fingerprint = format!("{method} {path} {}", form.0);
    // What the key says, when there is one: run, or answer without running.
    let settled: Option<Answer> = match key {
        None => None,
        Some(k) => match lock(keys).begin(&scope, k, &fingerprint) {
            Begin::Run => None,
            Begin::Replay { status, body } => {
                record.replayed = true;
                let mut headers = vec![("idempotent-replayed", "true".into())];
                if status >= 500 {
                    // A stored server error: sending the key again only replays it.
                    headers.push(("stripe-should-retry", "false".into()));
                }
                Some(Answer {
                    status,
                    body,
                    headers,
                })
            }
            Begin::Mismatch => Some(error_answer(
                &SimError::idempotency(format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request.")),
                request_id,
            )),
            Begin::InUse => {
                let mut e = SimError::invalid(
                    Some("idempotency_key_in_use"),
                    "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later.",
                );
                e.status = 409;
                let mut a = error_answer(&e, request_id);
                a.headers.push(("stripe-should-retry", "true".into()));
                Some(a)
            }
        },
    };
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let abandon = || {
        if let Some(k) = key {
            if settled.is_none() {
                lock(keys).abandon(&scope, k);
            }
        }
    };
    // Transport faults hit any request, replays included; they never touch a stored key.
    match decision.outcome {
        Outcome::Error(status) => {
            abandon();
            let e = SimError::api(
                status,
                "An unknown error occurred. Please retry the request; if the problem persists, contact Stripe support.",
            );
            let mut a = error_answer(&e, request_id);
            a.headers.push(("stripe-should-retry", "true".into()));
            return (a, false);
        }
        Outcome::DropBefore => {
            abandon();
            return (
                error_answer(&SimError::api(500, "dropped"), request_id),
                true,
            );
        }
        Outcome::DropAfter if settled.is_some() => {
            return (
                error_answer(&SimError::api(500, "dropped"), request_id),
                true,
            );
        }
        _ => {}
    }
    if let Some(answer) = settled {
        // A reader fault needs a reader command to act on; an answered key runs nothing.
        record.fault = None;
        return (answer, false);
    }
    // A stored server error that failed before doing the work runs nothing.
    let skip_work = matches!(
        decision.outcome,
        Outcome::ErrorStored {
            executed: false,
            ..
        }
    );
    let result = if skip_work {
        Ok(Value::Null)
    } else {
        let mut st = lock(world);
        st.request = Some(crate::stripe::wire::EventRequest {
            id: Some(request_id.to_string()),
            idempotency_key: key.clone(),
        });
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let r = dispatch(
            &mut st,
            method.as_str(),
            &segs,
            &scope,
            &form,
            shared.auto_present.is_some(),
            decision.outcome == Outcome::OfflineMidAction,
        );
        st.request = None;
        shared.flush(&mut st);
        r
    };
    let stored_error = match decision.outcome {
        Outcome::ErrorStored { status, .. } => Some(status),
        _ => None,
    };
    let result = match (result, decision.outcome) {
        (Ok(_), Outcome::ReaderTimeout) => Err(SimError::reader_timeout()),
        // Execution began, then failed: Stripe stores this answer under the key.
        (r, Outcome::ErrorStored { status, .. }) if r.as_ref().err().is_none_or(|e| e.store) => {
            Err(SimError::api(
                status,
                "An unknown error occurred. Please contact Stripe support if the problem persists.",
            ))
        }
        (r, _) => r,
    };
    let mut answer = match &result {
        Ok(v) => Answer {
            status: 200,
            body: v.to_string(),
            headers: Vec::new(),
        },
        Err(e) => error_answer(e, request_id),
    };
    if stored_error.is_some() && answer.status >= 500 {
        answer.headers.push(("stripe-should-retry", "false".into()));
    }
    if let Some(k) = key {
        let store = result.as_ref().err().is_none_or(|e| e.store);
        if store {
            lock(keys).finish(&scope, k, answer.status, &answer.body);
        } else {
            lock(keys).abandon(&scope, k);
        }
    }
    let dropped = decision.outcome == Outcome::DropAfter;
    (answer, dropped)
}

fn dispatch(
    st: &mut super::state::State,
    method: &str,
    segs: &[&str],
    scope: &Option<String>,
    f: &Form,
    auto_present: bool,
    offline_after: bool,
) -> Result<Value, SimError> {
    match (method, segs) {
        ("POST", ["v1", "accounts"]) => st.create_account(scope, f),
        ("GET", ["v1", "accounts"]) => st.list_accounts(scope, f),
        ("GET", ["v1", "accounts", id]) => st.get_account(scope, id),
        ("GET", ["v1", "accounts", id, "capabilities"]) => st.list_capabilities(scope, id),
        ("GET", ["v1", "accounts", id, "capabilities", cap]) => st.get_capability(scope, id, cap),
        ("GET", ["v1", "account"]) => st.get_self_account(scope),

        ("POST", ["v1", "terminal", "locations"]) => st.create_location(scope, f),
        ("GET", ["v1", "terminal", "locations"]) => st.list_locations(scope, f),
        ("GET", ["v1", "terminal", "locations", id]) => st.get_location(scope, id),
        ("POST", ["v1", "terminal", "locations", id]) => st.update_location(scope, id, f),
        ("DELETE", ["v1", "terminal", "locations", id]) => st.delete_location(scope, id),

        ("POST", ["v1", "terminal", "configurations"]) => st.create_configuration(scope, f),
        ("GET", ["v1", "terminal", "configurations"]) => st.list_configurations(scope, f),
        ("GET", ["v1", "terminal", "configurations", id]) => st.get_configuration(scope, id),
        ("POST", ["v1", "terminal", "configurations", id]) => st.update_configuration(scope, id, f),
        ("DELETE", ["v1", "terminal", "configurations", id]) => st.delete_configuration(scope, id),

        ("POST", ["v1", "terminal", "connection_tokens"]) => st.create_connection_token(scope, f),
        ("POST", ["v1", "terminal", "readers"]) => st.register_reader(scope, f),
        ("GET", ["v1", "terminal", "readers"]) => st.list_readers(scope, f),
        ("GET", ["v1", "terminal", "readers", id]) => st.get_reader(scope, id, f),
        ("POST", ["v1", "terminal", "readers", id]) => st.update_reader(scope, id, f),
        ("DELETE", ["v1", "terminal", "readers", id]) => st.delete_reader(scope, id),
        ("POST", ["v1", "terminal", "readers", id, "process_payment_intent"]) => {
            st.process_payment_intent(scope, id, f, auto_present, offline_after)
        }
        ("POST", ["v1", "terminal", "readers", id, "set_reader_display"]) => {
            st.set_reader_display(scope, id, f)
        }
        ("POST", ["v1", "terminal", "readers", id, "cancel_action"]) => {
            st.cancel_action(scope, id, f)
        }
        ("POST", ["v1", "terminal", "readers", id, "collect_payment_method"]) => {
            st.collect_payment_method(scope, id, f, auto_present)
        }
        ("POST", ["v1", "terminal", "readers", id, "confirm_payment_intent"]) => {
            st.confirm_payment_intent(scope, id, f)
        }
        ("POST", ["v1", "terminal", "readers", id, "process_setup_intent"]) => {
            st.process_setup_intent(scope, id, f, auto_present)
        }
        ("POST", ["v1", "terminal", "readers", id, "refund_payment"]) => {
            st.refund_payment(scope, id, f, auto_present)
        }
        ("POST", ["v1", "terminal", "readers", id, "collect_inputs"]) => {
            st.collect_inputs(scope, id, f, auto_present)
        }
        ("POST", ["v1", "test_helpers", "terminal", "readers", id, "succeed_input_collection"]) => {
            st.succeed_input_collection(scope, id, f)
        }
        ("POST", ["v1", "test_helpers", "terminal", "readers", id, "timeout_input_collection"]) => {
            st.timeout_input_collection(scope, id, f)
        }
        ("POST", ["v1", "test_helpers", "terminal", "readers", id, "present_payment_method"]) => {
            st.present_payment_method(scope, id, f)
        }

        ("POST", ["v1", "payment_intents"]) => st.create_intent(scope, f),
        ("GET", ["v1", "payment_intents"]) => st.list_intents(scope, f),
        ("GET", ["v1", "payment_intents", id]) => st.get_intent(scope, id, f),
        ("POST", ["v1", "payment_intents", id]) => st.update_intent(scope, id, f),
        ("POST", ["v1", "payment_intents", id, "capture"]) => st.capture_intent(scope, id, f),
        ("POST", ["v1", "payment_intents", id, "cancel"]) => st.cancel_intent(scope, id, f),

        ("POST", ["v1", "setup_intents"]) => st.create_setup_intent(scope, f),
        ("GET", ["v1", "setup_intents", id]) => st.get_setup_intent(scope, id, f),
        ("POST", ["v1", "setup_intents", id, "cancel"]) => st.cancel_setup_intent(scope, id, f),

        ("GET", ["v1", "charges", id]) => st.get_charge(scope, id),
        ("POST", ["v1", "refunds"]) => st.create_refund(scope, f),
        ("GET", ["v1", "refunds"]) => st.list_refunds(scope, f),
        ("GET", ["v1", "refunds", id]) => st.get_refund(scope, id),
        ("POST", ["v1", "transfers"]) => st.create_transfer(scope, f),
        ("GET", ["v1", "transfers"]) => st.list_transfers(scope, f),
        ("GET", ["v1", "transfers", id]) => st.get_transfer(scope, id),
        ("POST", ["v1", "transfers", id, "reversals"]) => st.create_reversal(scope, id, f),
        ("GET", ["v1", "transfers", id, "reversals"]) => st.list_reversals(scope, id, f),
        ("GET", ["v1", "application_fees", id]) => st.get_application_fee(scope, id),

        _ => Err(SimError::unrecognized(
            method,
            &format!("/{}", segs.join("/")),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// /_sim/

fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn sim_error(status: StatusCode, msg: impl Into<String>) -> Response {
    json_response(
        status,
        json!({"error": {"type": "invalid_request_error", "message": msg.into()}}),
    )
}

fn json_body(body: &Bytes) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// A control route that reads a JSON body: `f` with the body, or 400 when it is not JSON.
fn with_json(body: &Bytes, f: impl FnOnce(Value) -> Response) -> Response {
    match json_body(body) {
        Ok(v) => f(v),
        Err(msg) => sim_error(StatusCode::BAD_REQUEST, msg),
    }
}

/// 200 with `v` as JSON (`null` should it not serialise).
fn ok_json(v: impl serde::Serialize) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_value(v).unwrap_or(Value::Null),
    )
}

/// A simulated action refused as Stripe would: its status and error object.
fn control_error(e: SimError) -> Response {
    json_response(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({"error": e.error}),
    )
}

fn control(
    shared: &Arc<Shared>,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Response {
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let with_state = |f: &mut dyn FnMut(&mut super::state::State) -> Response| {
        let mut st = lock(&shared.state);
        st.request = None;
        let r = f(&mut st);
        shared.flush(&mut st);
        r
    };
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["requests"]) => ok_json(&*lock(&shared.log)),
        ("GET", ["requests", "counts"]) => ok_json(shared.request_counts()),
        ("POST", ["reset-requests"]) => {
            let n = shared.reset_requests();
            json_response(StatusCode::OK, json!({"cleared": n}))
        }
        ("GET", ["taps"]) => {
            // `?after=N`: only the taps after the first N (the list only grows).
            let after = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|kv| kv.strip_prefix("after="))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            let taps: Vec<Value> = lock(&shared.taps)
                .iter()
                .skip(after)
                .map(|(pi, at)| {
                    let us = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros() as u64)
                        .unwrap_or(0);
                    json!({"payment_intent": pi, "tapped_at_us": us})
                })
                .collect();
            ok_json(taps)
        }
        ("POST", ["readers", id, state @ ("online" | "offline")]) => {
            with_state(&mut |st| match st.set_online(id, *state == "online") {
                Some(v) => json_response(StatusCode::OK, v),
                None => sim_error(StatusCode::NOT_FOUND, format!("No such reader: '{id}'")),
            })
        }
        ("POST", ["readers", id, "present"]) => with_json(body, |v| {
            let number = v
                .get("number")
                .and_then(Value::as_str)
                .unwrap_or(super::DEFAULT_CARD)
                .to_string();
            let tip = v.get("amount_tip").and_then(Value::as_i64).unwrap_or(0);
            let suggestion = v.get("tip_suggestion").and_then(Value::as_u64);
            with_state(&mut |st| {
                let Some(owner) = st.readers.get(*id).map(|r| r.owner.clone()) else {
                    return sim_error(StatusCode::NOT_FOUND, format!("No such reader: '{id}'"));
                };
                // `tip_suggestion`: the customer picks that suggestion of the tip screen.
                let tip = match suggestion {
                    Some(i) => st.suggested_tip(id, i as usize).unwrap_or(0),
                    None => tip,
                };
                let r = TestCard::from_number(&number)
                    .and_then(|card| st.present(&owner, id, card, tip));
                match r {
                    Ok(()) => json_response(StatusCode::OK, st.reader_view(id, &[])),
                    Err(e) => control_error(e),
                }
            })
        }),
        ("POST", ["readers", id, "customer-cancel"]) => {
            with_state(&mut |st| match st.customer_cancel(id) {
                Ok(v) => json_response(StatusCode::OK, v),
                Err(e) => control_error(e),
            })
        }
        ("GET", ["faults"]) => ok_json(&*lock(&shared.faults)),
        ("POST", ["faults"]) => with_json(body, |v| match serde_json::from_value::<Faults>(v) {
            Ok(f) => {
                *lock(&shared.faults) = f.clone();
                ok_json(f)
            }
            Err(e) => sim_error(StatusCode::BAD_REQUEST, format!("invalid faults: {e}")),
        }),
        ("POST", ["rate-limit"]) => with_json(body, |v| {
            let per_second = v
                .get("per_second")
                .and_then(Value::as_u64)
                .map(|n| n as u32);
            lock(&shared.rate).0 = per_second;
            json_response(StatusCode::OK, json!({"per_second": per_second}))
        }),
        ("POST", ["accounts"]) => with_json(body, |v| {
            let country = v
                .get("country")
                .and_then(Value::as_str)
                .unwrap_or("US")
                .to_ascii_uppercase();
            let currency = v
                .get("default_currency")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| super::state::currency_of(&country).to_string());
            let status = v
                .get("card_payments")
                .and_then(Value::as_str)
                .map(CapabilityStatus::from)
                .unwrap_or(CapabilityStatus::Active);
            with_state(&mut |st| {
                let a = st.add_account(&country, &currency, Some(status.clone()));
                ok_json(a)
            })
        }),
        ("POST", ["preview"]) => with_json(body, |v| {
            let Some(enabled) = v.get("platform_owned_readers").and_then(Value::as_bool) else {
                return sim_error(
                    StatusCode::BAD_REQUEST,
                    "expected {\"platform_owned_readers\": true | false}",
                );
            };
            with_state(&mut |st| {
                st.platform_owned_readers = enabled;
                json_response(
                    StatusCode::OK,
                    json!({"platform_owned_readers": st.platform_owned_readers}),
                )
            })
        }),
        ("POST", ["accounts", id, "capabilities"]) => with_json(body, |v| {
            let card = v.get("card_payments").and_then(Value::as_str);
            let transfers = v.get("transfers").and_then(Value::as_str);
            if card.is_none() && transfers.is_none() {
                return sim_error(
                    StatusCode::BAD_REQUEST,
                    "expected {\"card_payments\" and/or \"transfers\": \"active\" | \"inactive\" | \"pending\"}",
                );
            }
            if [card, transfers]
                .into_iter()
                .flatten()
                .any(|s| !matches!(s, "active" | "inactive" | "pending"))
            {
                return sim_error(
                    StatusCode::BAD_REQUEST,
                    "a capability must be active, inactive or pending",
                );
            }
            with_state(&mut |st| {
                let mut out = None;
                if let Some(s) = card {
                    out = st.set_capability(id, CapabilityStatus::from(s));
                }
                if let Some(s) = transfers {
                    out = st.set_transfers_capability(id, CapabilityStatus::from(s));
                }
                match out {
                    Some(a) => ok_json(a),
                    None => sim_error(StatusCode::NOT_FOUND, format!("No such account: '{id}'")),
                }
            })
        }),
        ("GET", ["stats"]) => with_state(&mut |st| {
            json_response(StatusCode::OK, json!({"payment_intents": st.stats()}))
        }),
        ("GET", ["events"]) => with_state(&mut |st| ok_json(&st.events)),
        ("GET", ["balances"]) => with_state(&mut |st| ok_json(st.balances())),
        _ => sim_error(
            StatusCode::NOT_FOUND,
            format!("unknown control route {method} /_sim/{rest}"),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Connections that can be dropped on purpose

/// A connection's identity inside a handler: setting `kill` makes the connection fail its
/// next write, so the response is never sent and the socket is closed.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    kill: Arc<AtomicBool>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, SimListener>> for Conn {
    fn connect_info(stream: axum::serve::IncomingStream<'_, SimListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(crate) struct SimListener(TcpListener);

impl axum::serve::Listener for SimListener {
    type Io = KillableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    return (
                        KillableStream {
                            inner: stream,
                            kill: kill.clone(),
                        },
                        Conn { kill },
                    );
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        // Checks the socket is still usable; the address itself is not needed.
        self.0.local_addr()?;
        Ok(Conn {
            kill: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A TCP stream that refuses to write once its connection was marked for dropping.
pub(crate) struct KillableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

fn killed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "dropped by fault injection",
    )
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.kill.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
