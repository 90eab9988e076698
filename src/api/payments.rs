//! The payment routes: create (with `Idempotency-Key`), read, list, follow (Server-Sent
//! Events), cancel, capture, retry, refund, and cart display on a reader.
//!
//! Scope: a pos client acts only for its merchants, and a payment of any other merchant is
//! answered as if it did not exist (404). Handlers validate and translate; the decisions
//! live in [`crate::payments::Engine`].

use super::json::parse_body;
use super::scope::{self, Object};
use super::{ApiError, ApiJson, AppState, Caller, Routes};
use crate::clock::Timestamp;
use crate::fleet::ReaderRecord;
use crate::payments::engine::{CreatePayment, PaymentError, PaymentFilter};
use crate::payments::RefundRecord;
use crate::payments::{Engine, Payment, Status};
use crate::stripe::wire::{Cart, CartLineItem};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;

/// The payment routes; the engine rides along as an extension.
pub fn routes(engine: Engine) -> Routes {
    Routes::new()
        .post("/v1/payments", create)
        .get("/v1/payments", list)
        .get("/v1/payments/{id}", show)
        .get("/v1/payments/{id}/events", events)
        .post("/v1/payments/{id}/cancel", cancel)
        .post("/v1/payments/{id}/capture", capture)
        .post("/v1/payments/{id}/retry", retry)
        .post("/v1/payments/{id}/refunds", refund)
        .post("/v1/readers/{id}/display", display)
        .post("/v1/readers/{id}/clear", clear)
        .extension(engine)
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match e {
            PaymentError::Invalid { code, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
            }
            PaymentError::Forbidden { code, message } => {
                ApiError::new(StatusCode::FORBIDDEN, code, message)
            }
            PaymentError::NotFound(kind) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such {kind}"),
            ),
            PaymentError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            PaymentError::QueueFull(q) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", q.to_string())
            }
            PaymentError::Stripe(s) => s.into(),
            PaymentError::Store(s) => s.into(),
        }
    }
}

/// The contract's payment object, plus what helps to follow it (history, what it waits
/// for, the authorisation's deadline).
pub fn payment_json(p: &Payment) -> Value {
    json!({
        "id": p.id,
        "object": "payment",
        "status": p.status,
        "merchant": p.merchant,
        "reader": p.reader,
        "amount": p.amount,
        "currency": p.currency,
        "capture": p.capture,
        "description": p.description,
        "metadata": p.metadata,
        "payment_intent": p.payment_intent,
        "amount_captured": p.amount_captured,
        "amount_refunded": p.amount_refunded,
        "tip": p.tip,
        "failure": p.failure,
        "capture_before": p.capture_before.map(|s| super::json::timestamp(Timestamp::from_secs(s))),
        "cancel_requested": p.cancel_requested,
        "waiting_for": p.waiting_for,
        "attempts": p.attempt,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "history": p.history,
    })
}

fn refund_json(r: &RefundRecord) -> Value {
    json!({
        "id": r.id,
        "object": "refund",
        "payment": r.payment,
        "amount": r.amount,
        "status": r.status,
        "refund": r.refund,
        "created_at": r.created_at,
    })
}

/// The payment, if the caller may see it (404 otherwise, whoever's it is).
fn visible(engine: &Engine, caller: &Caller, id: &str) -> Result<Payment, ApiError> {
    let p = engine
        .get(id)?
        .ok_or_else(|| ApiError::not_found("payment", id))?;
    scope::check(caller, Object::Payment(&p))?;
    Ok(p)
}

/// The reader named by id or label, if the caller may act on it for `merchant` (see
/// [`scope`]): `404` for a reader a pos client may not use, whether or not it exists.
fn usable_reader(
    state: &AppState,
    caller: &Caller,
    reader: &str,
    merchant: Option<&str>,
) -> Result<ReaderRecord, ApiError> {
    let r = state
        .fleet
        .find_reader(reader)?
        .ok_or_else(|| ApiError::not_found("reader", reader))?;
    scope::check(caller, Object::ReaderFor(&r, merchant))?;
    Ok(r)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| ApiError::bad_request("unreadable Idempotency-Key header")),
    }
}

/// An optional JSON body: empty means the defaults.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreatePayment>,
) -> Result<Response, ApiError> {
    scope::check(&caller, Object::Merchant(&req.merchant))?;
    usable_reader(&state, &caller, &req.reader, Some(&req.merchant))?;
    let key = idempotency_key(&headers)?;
    let p = engine.create(req, &caller.name, key.as_deref())?;
    Ok((StatusCode::CREATED, Json(payment_json(&p))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    merchant: Option<String>,
    reader: Option<String>,
    status: Option<String>,
    /// At most this many payments, newest first.
    limit: Option<String>,
}

/// The page size when the caller names none, and the most it may ask for.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 1000;

fn list_limit(q: Option<&str>) -> Result<usize, ApiError> {
    let Some(s) = q.filter(|s| !s.is_empty()) else {
        return Ok(LIST_LIMIT_DEFAULT);
    };
    match s.parse::<usize>() {
        Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit must be a whole number from 1 to {LIST_LIMIT_MAX}, not {s:?}"
        ))),
    }
}

async fn list(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status {s:?}; one of queued, processing, requires_capture, succeeded, declined, canceled, failed"
            ))
        })?),
    };
    let limit = list_limit(q.limit.as_deref())?;
    let filter = PaymentFilter {
        merchant: q.merchant.filter(|s| !s.is_empty()),
        reader: q.reader.filter(|s| !s.is_empty()),
        status,
        scope: (!caller.is_admin()).then(|| caller.merchants.clone()),
    };
    Ok(Json(
        engine
            .list(&filter)?
            .iter()
            .take(limit)
            .map(payment_json)
            .collect(),
    ))
}

async fn show(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(payment_json(&visible(&engine, &caller, &id)?)))
}

/// Server-Sent Events: the payment as it is now, then one event per status change; the
/// stream ends after a final status, or when the daemon drains for shutdown (so a client
/// following a payment never holds a restart back).
async fn events(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Subscribe before reading, so that no change falls between the two.
    let rx = engine.subscribe();
    let current = visible(&engine, &caller, &id)?;
    struct St {
        rx: tokio::sync::broadcast::Receiver<Payment>,
        first: Option<Payment>,
        last: Option<Status>,
        done: bool,
        engine: Engine,
        id: String,
        draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }
    let st = St {
        rx,
        first: Some(current),
        last: None,
        done: false,
        engine,
        id,
        draining: state.draining.clone(),
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let next = match st.first.take() {
            Some(p) => p,
            None => loop {
                if st.draining.load(std::sync::atomic::Ordering::SeqCst) {
                    return None;
                }
                let received = tokio::time::timeout(super::events::DRAIN_CHECK, st.rx.recv());
                let Ok(received) = received.await else {
                    continue; // idle: look at the drain flag again
                };
                match received {
                    Ok(p) if p.id == st.id && Some(p.status) != st.last => break p,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed some: the record tells where it stands now.
                        match st.engine.get(&st.id) {
                            Ok(Some(p)) if Some(p.status) != st.last => break p,
                            _ => continue,
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            },
        };
        st.last = Some(next.status);
        st.done = next.status.is_final();
        let ev = Event::default()
            .event("payment")
            .data(payment_json(&next).to_string());
        Some((Ok::<Event, Infallible>(ev), st))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn cancel(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible(&engine, &caller, &id)?;
    Ok(Json(payment_json(&engine.cancel(&id).await?)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountBody {
    #[serde(default)]
    amount: Option<i64>,
}

async fn capture(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    visible(&engine, &caller, &id)?;
    let b: AmountBody = optional_body(&body)?;
    Ok(Json(payment_json(&engine.capture(&id, b.amount).await?)))
}

async fn retry(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible(&engine, &caller, &id)?;
    Ok(Json(payment_json(&engine.retry(&id).await?)))
}

async fn refund(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    visible(&engine, &caller, &id)?;
    let b: AmountBody = optional_body(&body)?;
    let key = idempotency_key(&headers)?;
    let (p, r) = engine
        .refund(&id, b.amount, &caller.name, key.as_deref())
        .await?;
    let mut out = refund_json(&r);
    out["payment_object"] = payment_json(&p);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisplayBody {
    currency: String,
    line_items: Vec<LineItem>,
    #[serde(default)]
    tax: Option<i64>,
    total: i64,
    /// The merchant the display is for (fair ordering in the reader's queue); a pos client
    /// with one merchant may leave it out.
    #[serde(default)]
    merchant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineItem {
    description: String,
    amount: i64,
    quantity: i64,
}

/// The queue name of a display that an admin sends for no merchant.
const OPERATOR: &str = "_operator";

/// `POST /v1/readers/{id}/display`: the same scope decision as a payment on that reader
/// (a pos client names one of its merchants, or gets the first one the reader serves), so a
/// till can never put a cart in front of another merchant's customers.
async fn display(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(reader): Path<String>,
    ApiJson(b): ApiJson<DisplayBody>,
) -> Result<Response, ApiError> {
    let record = state
        .fleet
        .find_reader(&reader)?
        .ok_or_else(|| ApiError::not_found("reader", &reader))?;
    let merchant = match b.merchant.as_deref() {
        Some(m) => {
            scope::check(&caller, Object::Merchant(m))?;
            Some(m)
        }
        None => scope::default_merchant(&caller, &record),
    };
    scope::check(&caller, Object::ReaderFor(&record, merchant))?;
    let merchant = merchant.unwrap_or(OPERATOR).to_string();
    if b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_lowercase()) {
        return Err(ApiError::bad_request(
            "currency must be lower-case, such as \"eur\"",
        ));
    }
    if b.line_items.is_empty() || b.total < 0 {
        return Err(ApiError::bad_request(
            "a cart needs at least one line item and a non-negative total",
        ));
    }
    let cart = Cart {
        currency: b.currency,
        line_items: b
            .line_items
            .into_iter()
            .map(|l| CartLineItem {
                amount: l.amount,
                description: l.description,
                quantity: l.quantity,
            })
            .collect(),
        tax: b.tax,
        total: b.total,
    };
    let id = engine.display(&record.id, &merchant, cart)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "object": "display", "reader": record.id, "status": "queued"})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearBody {
    /// The PaymentIntent the operator saw on the reader: only that action is canceled.
    payment_intent: String,
}

/// `POST /v1/readers/{id}/clear` (admin): the force-clear of a stuck action, compare then
/// cancel. 409 `reader_action_mismatch` when the reader holds anything else.
async fn clear(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(reader): Path<String>,
    ApiJson(b): ApiJson<ClearBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let r = engine.clear_reader(&reader, &b.payment_intent).await?;
    Ok(Json(json!({
        "reader": r.id,
        "cleared": b.payment_intent,
        "action": r.action.map(|a| json!({"type": a.kind, "status": a.status})),
    })))
}
