//! The payment routes: create (with `Idempotency-Key`), read, list, follow (Server-Sent
//! Events), cancel, capture, retry, refund, and cart display on a reader.
//!
//! Scope: a pos client acts only for its merchants, and a payment of any other merchant is
//! answered as if it did not exist (404). Handlers validate and translate; the decisions
//! live in [`crate::payments::Engine`].
//!
//! Longer than 600 lines on purpose: the payment routes with their typed views, each
//! handler carrying its OpenAPI annotation (about a third of the lines); one route per
//! handler.

use super::error::Envelope;
use super::json::parse_body;
use super::scope::{self, Object};
use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Routes};
use crate::clock::Timestamp;
use crate::fleet::ReaderRecord;
use crate::payments::engine::{CreatePayment, PaymentError, PaymentFilter};
use crate::payments::machine::{CaptureMode, Card, Failure, HistoryEntry, PaymentFlow};
use crate::payments::reader_refunds::OnReader;
use crate::payments::splits::{Split, TransferStatus};
use crate::payments::RefundRecord;
use crate::payments::{Engine, Payment, Status};
use crate::stripe::wire::{Cart, CartLineItem};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// The payment routes; the engine rides along as an extension.
pub fn routes(engine: Engine) -> Routes {
    Routes::new()
        .post("/v1/payments", create)
        .get("/v1/payments", list)
        .get("/v1/payments/{id}", show)
        .get("/v1/payments/{id}/events", events)
        .post("/v1/payments/{id}/cancel", cancel)
        .post("/v1/payments/{id}/confirm", confirm)
        .post("/v1/payments/{id}/capture", capture)
        .post("/v1/payments/{id}/retry", retry)
        .post("/v1/payments/{id}/refunds", refund)
        .get("/v1/reports/settlement", settlement)
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct PaymentView {
    /// `pay_…`.
    pub id: String,
    /// Always `payment`.
    pub object: String,
    pub status: Status,
    pub merchant: String,
    /// The reader's id (`tmr_…`).
    pub reader: String,
    /// In the currency's minor units.
    pub amount: i64,
    /// Lower-case ISO code (`eur`).
    pub currency: String,
    pub capture: CaptureMode,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The PaymentIntent on Stripe (`pi_…`), once created.
    pub payment_intent: Option<String>,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    /// The tip the customer added on the reader, if any.
    pub tip: Option<i64>,
    /// `false` when the reader's tip screen is skipped for this payment.
    pub tipping: bool,
    /// `process` (the default), or `review`: the card is shown (`requires_confirmation`)
    /// before it is authorised.
    #[serde(default)]
    pub flow: PaymentFlow,
    /// A reviewed payment's card, once read: what the point of sale reviews.
    #[serde(default)]
    pub card: Option<Card>,
    /// The surcharge added at the confirm (minor units), once on the PaymentIntent.
    #[serde(default)]
    pub surcharge: Option<i64>,
    /// Until when an unconfirmed reviewed payment waits (RFC 3339), then it is canceled.
    #[serde(default)]
    pub review_until: Option<String>,
    /// Why it was declined or failed.
    pub failure: Option<Failure>,
    /// When an uncaptured authorisation is released (RFC 3339).
    pub capture_before: Option<String>,
    pub cancel_requested: bool,
    /// What it waits for right now (`card`, `reader`, …), if anything worth saying.
    pub waiting_for: Option<String>,
    /// How many times it was sent to the reader.
    pub attempts: u32,
    pub created_at: String,
    pub updated_at: String,
    /// Every status change, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Separate charges only: one entry per merchant (several for a basket), with its share
    /// and its transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<Vec<SplitView>>,
}

/// One merchant's part of a separate-charge payment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SplitView {
    pub merchant: String,
    /// The share asked for (minor units).
    pub amount: i64,
    /// The platform's fee kept out of the transfer.
    pub fee: i64,
    /// The captured share (tip included for the tip's merchant), once captured.
    pub captured: i64,
    /// The Stripe Transfer (`tr_…`), once made.
    pub transfer: Option<String>,
    pub transferred: i64,
    pub reversed: i64,
    pub refunded: i64,
    pub transfer_status: TransferStatus,
    /// Stripe's last refusal of the transfer.
    pub transfer_error: Option<Failure>,
}

impl From<&Split> for SplitView {
    fn from(s: &Split) -> Self {
        SplitView {
            merchant: s.merchant.clone(),
            amount: s.amount,
            fee: s.fee,
            captured: s.captured,
            transfer: s.transfer.clone(),
            transferred: s.transferred,
            reversed: s.reversed,
            refunded: s.refunded,
            transfer_status: s.transfer_status,
            transfer_error: s.transfer_error.clone(),
        }
    }
}

impl From<&Payment> for PaymentView {
    fn from(p: &Payment) -> Self {
        PaymentView {
            id: p.id.clone(),
            object: "payment".into(),
            status: p.status,
            merchant: p.merchant.clone(),
            reader: p.reader.clone(),
            amount: p.amount,
            currency: p.currency.clone(),
            capture: p.capture,
            description: p.description.clone(),
            metadata: p.metadata.clone(),
            payment_intent: p.payment_intent.clone(),
            amount_captured: p.amount_captured,
            amount_refunded: p.amount_refunded,
            tip: p.tip,
            tipping: !p.skip_tipping,
            flow: p.flow,
            card: p.card.clone(),
            surcharge: p.surcharge,
            review_until: (p.status == Status::RequiresConfirmation)
                .then_some(p.review_until)
                .flatten()
                .map(super::json::timestamp),
            failure: p.failure.clone(),
            capture_before: p
                .capture_before
                .map(|s| super::json::timestamp(Timestamp::from_secs(s))),
            cancel_requested: p.cancel_requested,
            waiting_for: p.waiting_for.clone(),
            attempts: p.attempt,
            created_at: super::json::timestamp(p.created_at),
            updated_at: super::json::timestamp(p.updated_at),
            history: p.history.clone(),
            splits: (!p.splits.is_empty()).then(|| p.splits.iter().map(SplitView::from).collect()),
        }
    }
}

/// A refund, with the payment as it stands after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct RefundView {
    /// `re_…` of readerd's own (Stripe's is `refund`).
    pub id: String,
    /// Always `refund`.
    pub object: String,
    /// The payment's id.
    pub payment: String,
    pub amount: i64,
    /// `pending` until Stripe answers, then Stripe's status (`succeeded`, `failed`, …).
    pub status: String,
    /// The refund on Stripe, once known.
    pub refund: Option<String>,
    /// A basket's refund: the merchant whose share it comes out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// Separate charges: the reversal of the merchant's transfer this refund owes
    /// (`reversal_amount`), once made (`reversal`, `trr_…`), or why Stripe refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_error: Option<String>,
    pub created_at: String,
    /// A refund made on a reader (`on_reader: true`): the reader that waits for the card,
    /// how far its job went, and why it ended without a refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reader: Option<OnReader>,
    /// The payment after the refund.
    pub payment_object: PaymentView,
}

impl RefundView {
    pub(super) fn new(r: &RefundRecord, p: &Payment) -> Self {
        RefundView {
            id: r.id.clone(),
            object: "refund".into(),
            payment: r.payment.clone(),
            amount: r.amount,
            status: r.status.as_str().to_string(),
            refund: r.refund.clone(),
            merchant: r.merchant.clone(),
            reversal: r.reversal.clone(),
            reversal_amount: r.split.map(|_| r.reversal_amount),
            reversal_error: r.reversal_error.clone(),
            created_at: super::json::timestamp(r.created_at),
            on_reader: r.on_reader.clone(),
            payment_object: p.into(),
        }
    }
}

/// A cart display, accepted into the reader's queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DisplayView {
    pub id: String,
    /// Always `display`.
    pub object: String,
    /// The reader's id.
    pub reader: String,
    /// Always `queued`.
    pub status: String,
}

/// A force-clear's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ClearView {
    /// The reader's id.
    pub reader: String,
    /// The PaymentIntent whose action was canceled.
    pub cleared: String,
    /// The reader's action after the clear, if it still shows one.
    pub action: Option<ActionView>,
}

/// A reader's action as Stripe shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ActionView {
    /// `process_payment_intent`, `set_reader_display`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// `in_progress`, `succeeded` or `failed`.
    pub status: String,
}

/// The payment, if the caller may see it (404 otherwise, whoever's it is).
pub(super) fn visible(engine: &Engine, caller: &Caller, id: &str) -> Result<Payment, ApiError> {
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

#[utoipa::path(
    post,
    operation_id = "create_payment",
    path = "/v1/payments",
    tag = "payments",
    summary = "Take a payment on a reader (queued, then followed to a final status)",
    params(("Idempotency-Key" = Option<String>, Header, description = "One per sale: the same key with the same body answers the same payment, never a second charge (1 to 255 characters, scoped to the client)")),
    request_body = CreatePayment,
    responses((status = 201, description = "Accepted (or the same payment again, for a repeated key)", body = PaymentView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such merchant or reader, or not the caller's to see", body = Envelope), (status = 409, description = "The Idempotency-Key was used with another body (`idempotency_conflict`)", body = Envelope), (status = 429, description = "The reader's queue is full (`queue_full`)", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn create(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreatePayment>,
) -> Result<Response, ApiError> {
    for m in req.merchants() {
        scope::check(&caller, Object::Merchant(m))?;
    }
    for m in req.merchants() {
        usable_reader(&state, &caller, &req.reader, Some(m))?;
    }
    let key = idempotency_key(&headers)?;
    let p = engine.create(req, &caller.name, key.as_deref())?;
    Ok((StatusCode::CREATED, Json(PaymentView::from(&p))).into_response())
}

/// The list's filters and position (each optional; an unknown parameter is a 400).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this merchant's payments.
    merchant: Option<String>,
    /// Only payments on this reader (its id).
    reader: Option<String>,
    /// Only payments in this status.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// At most this many payments, newest first (default 100, at most 1000).
    limit: Option<String>,
    /// The last payment of the previous page: this page starts with the next older one.
    starting_after: Option<String>,
    /// Only payments created at or after this time (RFC 3339).
    created_gte: Option<String>,
    /// Only payments created before this time (RFC 3339).
    created_lt: Option<String>,
}

/// A time bound of the list, `None` when absent or empty.
fn list_time(name: &str, v: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => Timestamp::parse(v).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be an RFC 3339 time (2026-11-29T20:00:00Z), not {v:?}"
            ))
        }),
    }
}

/// `GET /v1/payments`: a page of at most `limit` payments, newest first, as a bare array;
/// when more follow, a `Link: <…&starting_after=<last id>>; rel="next"` header names the
/// next page (RFC 8288).
#[utoipa::path(
    get,
    operation_id = "list_payments",
    path = "/v1/payments",
    tag = "payments",
    summary = "The caller's payments, newest first, a page at a time",
    params(ListQuery),
    responses((status = 200, description = "A page of payments", body = Vec<PaymentView>, headers(("Link" = String, description = "When more payments follow: `</v1/payments?…&starting_after=<last id>>; rel=\"next\"`"))), (status = 400, description = "A bad or unknown query parameter", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope)),
    security(("bearer" = []))
)]
async fn list(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status {s:?}; one of queued, processing, requires_capture, succeeded, declined, canceled, failed"
            ))
        })?),
    };
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let filter = PaymentFilter {
        merchant: nonempty(&q.merchant),
        reader: nonempty(&q.reader),
        status,
        scope: (!caller.is_admin()).then(|| caller.merchants.clone()),
        created_gte: list_time("created_gte", q.created_gte.as_deref())?,
        created_lt: list_time("created_lt", q.created_lt.as_deref())?,
        starting_after: nonempty(&q.starting_after),
        limit: super::page::limit(q.limit.as_deref())?,
    };
    let page = engine.list(&filter)?;
    let body: Vec<PaymentView> = page.items.iter().map(PaymentView::from).collect();
    let mut resp = Json(body).into_response();
    if let (true, Some(last)) = (page.has_more, page.items.last()) {
        let query = [
            ("merchant", &q.merchant),
            ("reader", &q.reader),
            ("status", &q.status),
            ("limit", &q.limit),
            ("created_gte", &q.created_gte),
            ("created_lt", &q.created_lt),
        ];
        super::page::link_next(&mut resp, "/v1/payments", &query, &last.id);
    }
    Ok(resp)
}

#[utoipa::path(
    get,
    operation_id = "show_payment",
    path = "/v1/payments/{id}",
    tag = "payments",
    summary = "One payment",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)")),
    responses((status = 200, description = "The payment", body = PaymentView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn show(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    Ok(Json((&visible(&engine, &caller, &id)?).into()))
}

/// Server-Sent Events: the payment as it is now, then one event per status change; the
/// stream ends after a final status, or when the daemon drains for shutdown (so a client
/// following a payment never holds a restart back).
#[utoipa::path(
    get,
    operation_id = "follow_payment",
    path = "/v1/payments/{id}/events",
    tag = "payments",
    summary = "Follow a payment (Server-Sent Events)",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)")),
    responses((status = 200, description = "A stream of `payment` events, each with a payment object (see PaymentView) as its JSON data: the payment as it is, then one per status change; it ends after a final status", content_type = "text/event-stream", body = String), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn events(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Subscribe before reading, so that no change falls between the two.
    let rx = engine.subscribe();
    let current = visible(&engine, &caller, &id)?;
    let reload = move |id: &str| engine.get(id).ok().flatten();
    Ok(super::events::follow(
        rx,
        current,
        state.draining.clone(),
        "payment",
        reload,
        |p: &Payment| PaymentView::from(p),
    ))
}

#[utoipa::path(
    post,
    operation_id = "cancel_payment",
    path = "/v1/payments/{id}/cancel",
    tag = "payments",
    summary = "Cancel a payment that is queued, on the reader, declined or authorised",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)")),
    responses((status = 200, description = "The payment (`canceled`, or `cancel_requested` while the reader is busy with it)", body = PaymentView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment, or not the caller's to see", body = Envelope), (status = 409, description = "The payment's status does not allow it (`invalid_state`)", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn cancel(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    visible(&engine, &caller, &id)?;
    Ok(Json((&engine.cancel(&id).await?).into()))
}

/// A confirm: the surcharge to add to the amount first, if any.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// Minor units added to the amount before the card is authorised; at most the
    /// merchant's `surcharge_max`.
    #[serde(default)]
    surcharge: Option<i64>,
}

#[utoipa::path(
    post,
    operation_id = "confirm_payment",
    path = "/v1/payments/{id}/confirm",
    tag = "payments",
    summary = "Confirm a reviewed payment (`requires_confirmation`), with an optional surcharge",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)")),
    request_body = Option<ConfirmBody>,
    responses((status = 200, description = "The payment: the reader authorises the card next (`processing`, then its outcome)", body = PaymentView), (status = 400, description = "Bad input, or a surcharge over the merchant's `surcharge_max` (`surcharge_too_high`): nothing is changed", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment, or not the caller's to see", body = Envelope), (status = 409, description = "The payment is not a reviewed one waiting for its confirm (`invalid_state`)", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn confirm(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PaymentView>, ApiError> {
    visible(&engine, &caller, &id)?;
    let b: ConfirmBody = optional_body(&body)?;
    Ok(Json((&engine.confirm(&id, b.surcharge).await?).into()))
}

/// An amount, or nothing for all of what is left.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountBody {
    #[serde(default)]
    amount: Option<i64>,
}

/// A refund: an amount (or nothing for all that is left) and, for a basket, the merchant.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    #[serde(default)]
    amount: Option<i64>,
    /// The merchant of a basket the refund is for (required when it has several).
    #[serde(default)]
    merchant: Option<String>,
    /// Refund on a reader: the refund waits for the customer's card (Stripe's
    /// `refund_payment`, required for Interac); answered `202`, `pending` until done.
    #[serde(default)]
    on_reader: bool,
    /// With `on_reader`: the reader (id or label); the payment's own by default.
    #[serde(default)]
    reader: Option<String>,
}

#[utoipa::path(
    post,
    operation_id = "capture_payment",
    path = "/v1/payments/{id}/capture",
    tag = "payments",
    summary = "Capture an authorised payment (all of it, or `amount`)",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)")),
    request_body = Option<AmountBody>,
    responses((status = 200, description = "The payment", body = PaymentView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment, or not the caller's to see", body = Envelope), (status = 409, description = "The payment's status does not allow it (`invalid_state`)", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn capture(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PaymentView>, ApiError> {
    visible(&engine, &caller, &id)?;
    let b: AmountBody = optional_body(&body)?;
    Ok(Json((&engine.capture(&id, b.amount).await?).into()))
}

#[utoipa::path(
    post,
    operation_id = "retry_payment",
    path = "/v1/payments/{id}/retry",
    tag = "payments",
    summary = "Send a declined payment to the reader again",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)")),
    responses((status = 200, description = "The payment, queued again", body = PaymentView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment, or not the caller's to see", body = Envelope), (status = 409, description = "The payment's status does not allow it (`invalid_state`)", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn retry(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    visible(&engine, &caller, &id)?;
    Ok(Json((&engine.retry(&id).await?).into()))
}

#[utoipa::path(
    post,
    operation_id = "refund_payment",
    path = "/v1/payments/{id}/refunds",
    tag = "payments",
    summary = "Refund a captured payment (all that is left, or `amount`)",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)"), ("Idempotency-Key" = Option<String>, Header, description = "The same key answers the same refund, never a second one")),
    request_body = Option<RefundBody>,
    responses((status = 201, description = "The refund", body = RefundView), (status = 202, description = "A refund on the reader, queued: `pending` until the card is presented and Stripe made the refund", body = RefundView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment or reader, or not the caller's to see", body = Envelope), (status = 409, description = "Nothing was captured to refund (`invalid_state`), or the key was used with another body", body = Envelope), (status = 429, description = "The reader's queue is full (`queue_full`)", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn refund(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = visible(&engine, &caller, &id)?;
    let b: RefundBody = optional_body(&body)?;
    let key = idempotency_key(&headers)?;
    if b.on_reader {
        let reader = match b.reader.as_deref() {
            Some(r) => Some(usable_reader(&state, &caller, r, Some(&p.merchant))?.id),
            None => None,
        };
        let (p, r) = engine
            .refund_on_reader(
                &id,
                b.amount,
                b.merchant.as_deref(),
                reader.as_deref(),
                &caller.name,
                key.as_deref(),
            )
            .await?;
        return Ok((StatusCode::ACCEPTED, Json(RefundView::new(&r, &p))).into_response());
    }
    if b.reader.is_some() {
        return Err(ApiError::bad_request(
            "reader is for a refund made on_reader",
        ));
    }
    let (p, r) = engine
        .refund_for(
            &id,
            b.amount,
            b.merchant.as_deref(),
            &caller.name,
            key.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(RefundView::new(&r, &p))).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Start of the period: an RFC 3339 time or a date (`2026-11-01`), UTC.
    from: String,
    /// End of the period, exclusive; a date includes that day.
    to: String,
    /// Only this merchant's rows.
    #[serde(default)]
    merchant: Option<String>,
    /// `csv` for CSV (as `Accept: text/csv` does), `json` (the default).
    #[serde(default)]
    format: Option<String>,
}

/// `GET /v1/reports/settlement?from&to[&merchant][&format=csv]`: one row per merchant and
/// currency, from readerd's records; a pos client sees its merchants' rows only.
#[utoipa::path(
    get,
    operation_id = "settlement_report",
    path = "/v1/reports/settlement",
    tag = "payments",
    summary = "Who holds what from the period's payments: one row per merchant and currency (JSON, or CSV with `Accept: text/csv` or `format=csv`)",
    params(ReportQuery),
    responses((status = 200, description = "The rows (CSV with a header line when asked for)", content((Vec<crate::payments::report::Row> = "application/json"), (String = "text/csv"))), (status = 400, description = "A bad or unknown query parameter", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "A merchant unknown to the caller", body = Envelope)),
    security(("bearer" = []))
)]
async fn settlement(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    use crate::payments::report;
    let bound = |name: &str, v: &str, end: bool| {
        report::parse_bound(v, end).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be an RFC 3339 time or a date (YYYY-MM-DD), UTC: {v:?}"
            ))
        })
    };
    let from = bound("from", &q.from, false)?;
    let to = bound("to", &q.to, true)?;
    if to <= from {
        return Err(ApiError::bad_request("to must be after from"));
    }
    let merchant = q.merchant.filter(|m| !m.is_empty());
    if let Some(m) = &merchant {
        scope::check(&caller, Object::Merchant(m))?;
    }
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        None | Some("") => headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be json or csv, not {other:?}"
            )))
        }
    };
    let rows = engine.settlement_report(&report::Query {
        from,
        to,
        merchant,
        scope: (!caller.is_admin()).then(|| caller.merchants.clone()),
    })?;
    if csv {
        Ok((
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report::to_csv(&rows),
        )
            .into_response())
    } else {
        Ok(Json(rows).into_response())
    }
}

/// A cart to show on the reader.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisplayBody {
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

/// One line of a cart.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    description: String,
    amount: i64,
    quantity: i64,
}

/// The queue name of a display that an admin sends for no merchant.
const OPERATOR: &str = "_operator";

/// `POST /v1/readers/{id}/display`: the same scope decision as a payment on that reader
/// (a pos client names one of its merchants, or gets the first one the reader serves), so a
/// till can never put a cart in front of another merchant's customers.
#[utoipa::path(
    post,
    operation_id = "display_cart",
    path = "/v1/readers/{id}/display",
    tag = "readers",
    summary = "Show a cart on a reader (queued like a payment)",
    params(("id" = String, Path, description = "The reader's id or label")),
    request_body = DisplayBody,
    responses((status = 202, description = "Queued", body = DisplayView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such reader, or not the caller's to see", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
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
        Json(DisplayView {
            id,
            object: "display".into(),
            reader: record.id,
            status: "queued".into(),
        }),
    )
        .into_response())
}

/// What the operator saw on the reader.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    /// The PaymentIntent the operator saw on the reader: only that action is canceled.
    payment_intent: String,
}

/// `POST /v1/readers/{id}/clear` (admin): the force-clear of a stuck action, compare then
/// cancel. 409 `reader_action_mismatch` when the reader holds anything else.
#[utoipa::path(
    post,
    operation_id = "clear_reader",
    path = "/v1/readers/{id}/clear",
    tag = "readers",
    summary = "Force-clear a stuck action (admin): only the PaymentIntent named is canceled",
    params(("id" = String, Path, description = "The reader's id or label")),
    request_body = ClearBody,
    responses((status = 200, description = "Cleared", body = ClearView), (status = 400, description = "Bad input (the message names it), or Stripe refused the request for good", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The caller is not an admin", body = Envelope), (status = 404, description = "No such reader, or not the caller's to see", body = Envelope), (status = 409, description = "The reader holds another action, or none (`reader_action_mismatch`)", body = Envelope), (status = 503, description = "Stripe cannot be reached right now, or readerd is shutting down", body = Envelope)),
    security(("bearer" = []))
)]
async fn clear(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(reader): Path<String>,
    ApiJson(b): ApiJson<ClearBody>,
) -> Result<Json<ClearView>, ApiError> {
    caller.require_admin()?;
    let r = engine.clear_reader(&reader, &b.payment_intent).await?;
    Ok(Json(ClearView {
        reader: r.id,
        cleared: b.payment_intent,
        action: r.action.map(|a| ActionView {
            kind: a.kind.to_string(),
            status: a.status.to_string(),
        }),
    }))
}
