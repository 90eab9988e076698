//! Inputs on a reader's screen: `POST /v1/readers/{id}/inputs` queues an input collection
//! like a payment; `GET /v1/input_collections/{id}` (and `…/events`, Server-Sent Events)
//! follows it, `GET /v1/input_collections[?reader=]` lists them; `POST /v1/input_collections/{id}/cancel` cancels it.
//!
//! Scope: the same decision as a payment on that reader (a pos client names one of its
//! merchants, or gets the first one the reader serves); a collection of another merchant is
//! `404`.

use super::scope::{self, Object};
use super::{ApiError, ApiJson, AppState, Caller, Routes};
use crate::payments::inputs::Input;
use crate::payments::{Engine, InputCollection, InputStatus};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;

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
pub fn input_collection_json(c: &InputCollection) -> Value {
    json!({
        "id": c.id,
        "object": "input_collection",
        "reader": c.reader,
        "merchant": c.merchant,
        "status": c.status,
        "inputs": c.inputs,
        "failure": c.failure,
        "cancel_requested": c.cancel_requested,
        "attempts": c.attempt,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "history": c.history,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    merchant: Option<String>,
    inputs: Vec<Input>,
}

async fn create(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(reader): Path<String>,
    ApiJson(b): ApiJson<CreateBody>,
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
    Ok((StatusCode::ACCEPTED, Json(input_collection_json(&c))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    reader: Option<String>,
}

/// `GET /v1/input_collections[?reader=]`: those the caller may see, newest first.
async fn list(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let reader = match q.reader.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        // By id or label, like the other reader routes; an unknown reader lists nothing.
        Some(r) => Some(
            state
                .fleet
                .find_reader(r)?
                .map(|rec| rec.id)
                .unwrap_or_else(|| r.to_string()),
        ),
    };
    Ok(Json(
        engine
            .list_inputs(reader.as_deref())?
            .iter()
            .filter(|c| scope::allows(&caller, Object::InputCollection(c)))
            .map(input_collection_json)
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

async fn show(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(input_collection_json(&visible(
        &engine, &caller, &id,
    )?)))
}

async fn cancel(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible(&engine, &caller, &id)?;
    Ok(Json(input_collection_json(&engine.cancel_inputs(&id)?)))
}

/// Server-Sent Events: the collection as it is now, then one `input_collection` event per
/// status change; the stream ends after a final status.
async fn events(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // Subscribe before reading, so that no change falls between the two.
    let rx = engine.subscribe_inputs();
    let current = visible(&engine, &caller, &id)?;
    struct St {
        rx: tokio::sync::broadcast::Receiver<InputCollection>,
        first: Option<InputCollection>,
        last: Option<InputStatus>,
        done: bool,
        engine: Engine,
        id: String,
    }
    let st = St {
        rx,
        first: Some(current),
        last: None,
        done: false,
        engine,
        id,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let next = match st.first.take() {
            Some(c) => c,
            None => loop {
                match st.rx.recv().await {
                    Ok(c) if c.id == st.id && Some(c.status) != st.last => break c,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        match st.engine.input_collection(&st.id) {
                            Ok(Some(c)) if Some(c.status) != st.last => break c,
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
            .event("input_collection")
            .data(input_collection_json(&next).to_string());
        Some((Ok::<Event, Infallible>(ev), st))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
