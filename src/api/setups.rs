//! Saving a card on a reader for later payments: `POST /v1/setups` queues a setup like a
//! payment; `GET /v1/setups/{id}` (and `…/events`, Server-Sent Events) follows it to the
//! reusable `payment_method`; `GET /v1/setups` lists them a page at a time;
//! `POST /v1/setups/{id}/cancel` cancels it.
//!
//! Scope: the same decision as a payment (the caller names one of its merchants, and the
//! reader must be visible to it and serve that merchant); a setup of another merchant is
//! `404`.

use super::error::Envelope;
use super::scope::{self, Object};
use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Routes};
use crate::payments::engine::CreateSetup;
use crate::payments::machine::Failure;
use crate::payments::setups::SetupHistory;
use crate::payments::{AllowRedisplay, Engine, Setup, SetupStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub fn routes(engine: Engine) -> Routes {
    Routes::new()
        .post("/v1/setups", create)
        .get("/v1/setups", list)
        .get("/v1/setups/{id}", show)
        .get("/v1/setups/{id}/events", events)
        .post("/v1/setups/{id}/cancel", cancel)
        .extension(engine)
}

/// The contract's setup object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SetupView {
    /// `set_…`.
    pub id: String,
    /// Always `setup`.
    pub object: String,
    pub merchant: String,
    /// The reader's id (`tmr_…`).
    pub reader: String,
    /// The Stripe customer the card is saved for (`cus_…`), when one was named.
    pub customer: Option<String>,
    pub allow_redisplay: AllowRedisplay,
    pub status: SetupStatus,
    /// Once succeeded: the reusable `card` PaymentMethod (`pm_…`) to charge later, on the
    /// same account as the SetupIntent. `null` when Stripe could not generate one.
    pub payment_method: Option<String>,
    /// The SetupIntent (`seti_…`), once created: on the merchant's account for a direct
    /// charge merchant, on the platform otherwise.
    pub setup_intent: Option<String>,
    /// Why it failed.
    pub failure: Option<Failure>,
    pub cancel_requested: bool,
    /// How many times it was sent to the reader.
    pub attempts: u32,
    pub created_at: String,
    pub updated_at: String,
    /// Every status change, oldest first.
    pub history: Vec<SetupHistory>,
}

impl From<&Setup> for SetupView {
    fn from(s: &Setup) -> Self {
        SetupView {
            id: s.id.clone(),
            object: "setup".into(),
            merchant: s.merchant.clone(),
            reader: s.reader.clone(),
            customer: s.customer.clone(),
            allow_redisplay: s.allow_redisplay,
            status: s.status,
            payment_method: s.payment_method.clone(),
            setup_intent: s.setup_intent.clone(),
            failure: s.failure.clone(),
            cancel_requested: s.cancel_requested,
            attempts: s.attempt,
            created_at: super::json::timestamp(s.created_at),
            updated_at: super::json::timestamp(s.updated_at),
            history: s.history.clone(),
        }
    }
}

/// A card to save on a reader.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSetupBody {
    /// The merchant the card is saved for.
    merchant: String,
    /// The reader's id (`tmr_…`) or label.
    reader: String,
    /// A Stripe customer (`cus_…`) on the merchant's account (direct charges) or the
    /// platform's, to attach the card to.
    #[serde(default)]
    customer: Option<String>,
    /// Required: `always`, `limited` or `unspecified`: whether the saved card may be shown
    /// to the customer again in a later checkout (Stripe's `allow_redisplay`).
    #[serde(default)]
    #[schema(value_type = AllowRedisplay)]
    allow_redisplay: Option<String>,
}

#[utoipa::path(
    post,
    operation_id = "create_setup",
    path = "/v1/setups",
    tag = "setups",
    summary = "Save a customer's card on a reader for later payments (queued like a payment)",
    request_body = CreateSetupBody,
    responses((status = 201, description = "Queued", body = SetupView), (status = 400, description = "A bad body: `allow_redisplay` missing or not one of always, limited, unspecified; a customer that is not `cus_…` (`invalid_customer`); a merchant whose card payments are off", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The reader does not serve that merchant (admin)", body = Envelope), (status = 404, description = "No such reader or merchant, or not the caller's to use", body = Envelope), (status = 429, description = "The reader's queue is full (`queue_full`)", body = Envelope), (status = 503, description = "readerd is shutting down (`shutting_down`)", body = Envelope)),
    security(("bearer" = []))
)]
async fn create(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    ApiJson(b): ApiJson<CreateSetupBody>,
) -> Result<Response, ApiError> {
    scope::check(&caller, Object::Merchant(&b.merchant))?;
    let record = state
        .fleet
        .find_reader(&b.reader)?
        .ok_or_else(|| ApiError::not_found("reader", &b.reader))?;
    scope::check(&caller, Object::ReaderFor(&record, Some(&b.merchant)))?;
    let allow_redisplay = match b.allow_redisplay.as_deref() {
        None | Some("") => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_allow_redisplay",
                "allow_redisplay is required: always, limited or unspecified (whether the saved card may be shown to the customer again)",
            ))
        }
        Some(v) => AllowRedisplay::parse(v).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_allow_redisplay",
                format!("allow_redisplay must be always, limited or unspecified, not {v:?}"),
            )
        })?,
    };
    let s = engine.create_setup(CreateSetup {
        merchant: b.merchant,
        reader: record.id,
        customer: b.customer,
        allow_redisplay,
    })?;
    Ok((StatusCode::CREATED, Json(SetupView::from(&s))).into_response())
}

/// The list's filter and position (an unknown parameter is a 400).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SetupsQuery {
    /// Only setups on this reader (its id or label).
    reader: Option<String>,
    /// At most this many setups, newest first (default 100, at most 1000).
    limit: Option<String>,
    /// The last setup of the previous page: this page starts with the next older one.
    starting_after: Option<String>,
}

/// `GET /v1/setups`: a page of the caller's setups, newest first, as a bare array; when
/// more follow, a `Link: <…&starting_after=<last id>>; rel="next"` header names the next
/// page, as for payments.
#[utoipa::path(
    get,
    operation_id = "list_setups",
    path = "/v1/setups",
    tag = "setups",
    summary = "The caller's setups, newest first, a page at a time",
    params(SetupsQuery),
    responses((status = 200, description = "A page of setups", body = Vec<SetupView>, headers(("Link" = String, description = "When more setups follow: `</v1/setups?…&starting_after=<last id>>; rel=\"next\"`"))), (status = 400, description = "A bad or unknown query parameter", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope)),
    security(("bearer" = []))
)]
async fn list(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SetupsQuery>,
) -> Result<Response, ApiError> {
    let limit = super::page::limit(q.limit.as_deref())?;
    let reader = super::page::reader(&state, q.reader.as_deref())?;
    let after = q.starting_after.as_deref().filter(|s| !s.is_empty());
    let page = engine.list_setups(
        |s| {
            reader.as_deref().is_none_or(|r| s.reader == r)
                && scope::allows(&caller, Object::Setup(s))
        },
        after,
        limit,
    )?;
    let body: Vec<SetupView> = page.items.iter().map(SetupView::from).collect();
    let mut resp = Json(body).into_response();
    if let (true, Some(last)) = (page.has_more, page.items.last()) {
        let query = [("reader", &q.reader), ("limit", &q.limit)];
        super::page::link_next(&mut resp, "/v1/setups", &query, &last.id);
    }
    Ok(resp)
}

fn visible(engine: &Engine, caller: &Caller, id: &str) -> Result<Setup, ApiError> {
    let s = engine
        .setup(id)?
        .ok_or_else(|| ApiError::not_found("setup", id))?;
    scope::check(caller, Object::Setup(&s))?;
    Ok(s)
}

#[utoipa::path(
    get,
    operation_id = "show_setup",
    path = "/v1/setups/{id}",
    tag = "setups",
    summary = "One setup, with the reusable payment method once succeeded",
    params(("id" = String, Path, description = "The setup's id (`set_…`)")),
    responses((status = 200, description = "The setup", body = SetupView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such setup, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn show(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SetupView>, ApiError> {
    Ok(Json((&visible(&engine, &caller, &id)?).into()))
}

#[utoipa::path(
    post,
    operation_id = "cancel_setup",
    path = "/v1/setups/{id}/cancel",
    tag = "setups",
    summary = "Cancel a setup (queued: at once; on the reader: readerd clears its own action and cancels the SetupIntent)",
    params(("id" = String, Path, description = "The setup's id (`set_…`)")),
    responses((status = 200, description = "Canceled, or `cancel_requested` while readerd clears the reader", body = SetupView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such setup, or not the caller's to see", body = Envelope), (status = 409, description = "Already final (`invalid_state`)", body = Envelope), (status = 503, description = "readerd is shutting down (`shutting_down`)", body = Envelope)),
    security(("bearer" = []))
)]
async fn cancel(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SetupView>, ApiError> {
    visible(&engine, &caller, &id)?;
    Ok(Json((&engine.cancel_setup(&id).await?).into()))
}

/// Server-Sent Events: the setup as it is now, then one `setup` event per status change;
/// the stream ends after a final status, or when the daemon drains.
#[utoipa::path(
    get,
    operation_id = "follow_setup",
    path = "/v1/setups/{id}/events",
    tag = "setups",
    summary = "Follow a setup (Server-Sent Events)",
    params(("id" = String, Path, description = "The setup's id (`set_…`)")),
    responses((status = 200, description = "A stream of `setup` events, each with a setup (see SetupView) as its JSON data: as it is, then one per status change; it ends after a final status", content_type = "text/event-stream", body = String), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such setup, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn events(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Subscribe before reading, so that no change falls between the two.
    let rx = engine.subscribe_setups();
    let current = visible(&engine, &caller, &id)?;
    let reload = move |id: &str| engine.setup(id).ok().flatten();
    Ok(super::events::follow(
        rx,
        current,
        state.draining.clone(),
        "setup",
        reload,
        |s: &Setup| SetupView::from(s),
    ))
}
