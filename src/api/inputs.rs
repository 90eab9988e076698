//! Inputs on a reader's screen: `POST /v1/readers/{id}/inputs` queues an input collection
//! like a payment; `GET /v1/input_collections/{id}` (and `…/events`, Server-Sent Events)
//! follows it, `GET /v1/input_collections[?reader=]` lists them; `POST /v1/input_collections/{id}/cancel` cancels it.
//!
//! Scope: the same decision as a payment on that reader (a pos client names one of its
//! merchants, or gets the first one the reader serves); a collection of another merchant is
//! `404`.

use super::error::Envelope;
use super::scope::{self, Object};
use super::{ApiError, ApiJson, ApiQuery, AppState, Caller, Routes};
use crate::payments::inputs::{Input, InputHistory};
use crate::payments::machine::Failure;
use crate::payments::{Engine, InputCollection, InputStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The queue name of inputs an admin collects for no merchant.
const OPERATOR: &str = "_operator";

pub fn routes(engine: Engine) -> Routes {
    Routes::new()
        .post("/v1/readers/{id}/inputs", create)
        .get("/v1/input_collections", list)
        .get("/v1/input_collections/{id}", show)
        .get("/v1/input_collections/{id}/events", events)
        .post("/v1/input_collections/{id}/cancel", cancel)
        .extension(engine)
}

/// The contract's input collection object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct InputCollectionView {
    /// `inp_…`.
    pub id: String,
    /// Always `input_collection`.
    pub object: String,
    /// The reader's id (`tmr_…`).
    pub reader: String,
    pub merchant: String,
    pub status: InputStatus,
    /// The inputs as asked for, each with the customer's `value` (or `skipped`) once
    /// collected.
    pub inputs: Vec<Input>,
    /// Why it failed.
    pub failure: Option<Failure>,
    pub cancel_requested: bool,
    /// How many times it was sent to the reader.
    pub attempts: u32,
    pub created_at: String,
    pub updated_at: String,
    /// Every status change, oldest first.
    pub history: Vec<InputHistory>,
}

impl From<&InputCollection> for InputCollectionView {
    fn from(c: &InputCollection) -> Self {
        InputCollectionView {
            id: c.id.clone(),
            object: "input_collection".into(),
            reader: c.reader.clone(),
            merchant: c.merchant.clone(),
            status: c.status,
            inputs: c.inputs.clone(),
            failure: c.failure.clone(),
            cancel_requested: c.cancel_requested,
            attempts: c.attempt,
            created_at: super::json::timestamp(c.created_at),
            updated_at: super::json::timestamp(c.updated_at),
            history: c.history.clone(),
        }
    }
}

/// Inputs to collect on a reader's screen.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInputs {
    /// The merchant it is for; a pos client may leave it out (the first of its merchants
    /// the reader serves).
    #[serde(default)]
    merchant: Option<String>,
    /// 1 to 5 inputs, in screen order.
    inputs: Vec<Input>,
}

#[utoipa::path(
    post,
    operation_id = "collect_inputs",
    path = "/v1/readers/{id}/inputs",
    tag = "inputs",
    summary = "Ask the customer for inputs on a reader's screen (queued like a payment)",
    params(("id" = String, Path, description = "The reader's id (`tmr_…`) or label")),
    request_body = CreateInputs,
    responses((status = 202, description = "Queued", body = InputCollectionView), (status = 400, description = "Bad inputs (`invalid_inputs`, the message names the input)", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 403, description = "The reader does not serve that merchant (admin)", body = Envelope), (status = 404, description = "No such reader or merchant, or not the caller's to use", body = Envelope), (status = 429, description = "The reader's queue is full (`queue_full`)", body = Envelope), (status = 503, description = "readerd is shutting down (`shutting_down`)", body = Envelope)),
    security(("bearer" = []))
)]
async fn create(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(reader): Path<String>,
    ApiJson(b): ApiJson<CreateInputs>,
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
    let merchant = merchant.unwrap_or(OPERATOR);
    let c = engine.create_inputs(&record.id, merchant, b.inputs)?;
    Ok((StatusCode::ACCEPTED, Json(InputCollectionView::from(&c))).into_response())
}

/// The list's filter (an unknown parameter is a 400).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InputsQuery {
    /// Only collections on this reader (its id or label).
    reader: Option<String>,
}

/// `GET /v1/input_collections[?reader=]`: those the caller may see, newest first.
#[utoipa::path(
    get,
    operation_id = "list_input_collections",
    path = "/v1/input_collections",
    tag = "inputs",
    summary = "The caller's input collections, newest first",
    params(InputsQuery),
    responses((status = 200, description = "The input collections", body = Vec<InputCollectionView>), (status = 400, description = "A bad or unknown query parameter", body = Envelope), (status = 401, description = "No token, or an unknown one", body = Envelope)),
    security(("bearer" = []))
)]
async fn list(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    ApiQuery(q): ApiQuery<InputsQuery>,
) -> Result<Json<Vec<InputCollectionView>>, ApiError> {
    let reader = super::page::reader(&state, q.reader.as_deref())?;
    Ok(Json(
        engine
            .list_inputs(reader.as_deref())?
            .iter()
            .filter(|c| scope::allows(&caller, Object::InputCollection(c)))
            .map(InputCollectionView::from)
            .collect(),
    ))
}

fn visible(engine: &Engine, caller: &Caller, id: &str) -> Result<InputCollection, ApiError> {
    let c = engine
        .input_collection(id)?
        .ok_or_else(|| ApiError::not_found("input_collection", id))?;
    scope::check(caller, Object::InputCollection(&c))?;
    Ok(c)
}

#[utoipa::path(
    get,
    operation_id = "show_input_collection",
    path = "/v1/input_collections/{id}",
    tag = "inputs",
    summary = "One input collection, with the answers once collected",
    params(("id" = String, Path, description = "The input collection's id (`inp_…`)")),
    responses((status = 200, description = "The input collection", body = InputCollectionView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such input collection, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn show(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InputCollectionView>, ApiError> {
    Ok(Json((&visible(&engine, &caller, &id)?).into()))
}

#[utoipa::path(
    post,
    operation_id = "cancel_input_collection",
    path = "/v1/input_collections/{id}/cancel",
    tag = "inputs",
    summary = "Cancel an input collection (queued: at once; on the screen: readerd clears its own action)",
    params(("id" = String, Path, description = "The input collection's id (`inp_…`)")),
    responses((status = 200, description = "Canceled, or `cancel_requested` while readerd clears the reader", body = InputCollectionView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such input collection, or not the caller's to see", body = Envelope), (status = 409, description = "Already final (`invalid_state`)", body = Envelope), (status = 503, description = "readerd is shutting down (`shutting_down`)", body = Envelope)),
    security(("bearer" = []))
)]
async fn cancel(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<InputCollectionView>, ApiError> {
    visible(&engine, &caller, &id)?;
    Ok(Json((&engine.cancel_inputs(&id).await?).into()))
}

/// Server-Sent Events: the collection as it is now, then one `input_collection` event per
/// status change; the stream ends after a final status, or when the daemon drains.
#[utoipa::path(
    get,
    operation_id = "follow_input_collection",
    path = "/v1/input_collections/{id}/events",
    tag = "inputs",
    summary = "Follow an input collection (Server-Sent Events)",
    params(("id" = String, Path, description = "The input collection's id (`inp_…`)")),
    responses((status = 200, description = "A stream of `input_collection` events, each with an input collection (see InputCollectionView) as its JSON data: as it is, then one per status change; it ends after a final status", content_type = "text/event-stream", body = String), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such input collection, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn events(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Subscribe before reading, so that no change falls between the two.
    let rx = engine.subscribe_inputs();
    let current = visible(&engine, &caller, &id)?;
    let reload = move |id: &str| engine.input_collection(id).ok().flatten();
    Ok(super::events::follow(
        rx,
        current,
        state.draining.clone(),
        "input_collection",
        reload,
        |c: &InputCollection| InputCollectionView::from(c),
    ))
}
