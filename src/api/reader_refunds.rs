//! A payment's refunds, one at a time: `GET /v1/payments/{id}/refunds/{refund}` reads one
//! (a refund made on a reader is `pending` until the card is presented), `…/events`
//! follows one (Server-Sent Events), and `POST /v1/payments/{id}/refunds/{refund}/cancel`
//! cancels one that waits on a reader.
//! Refunds are made with `POST /v1/payments/{id}/refunds` (`on_reader: true` for one on a
//! reader).
//!
//! Scope: the payment's (a refund of a payment the caller may not see does not exist).

use super::error::Envelope;
use super::events::Followed;
use super::payments::{visible, RefundView};
use super::{ApiError, AppState, Caller, Routes};
use crate::payments::reader_refunds::ReaderRefundStep;
use crate::payments::refunds::{RefundRecord, RefundStatus};
use crate::payments::Engine;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};

pub fn routes(engine: Engine) -> Routes {
    Routes::new()
        .get("/v1/payments/{id}/refunds/{refund}", show)
        .get("/v1/payments/{id}/refunds/{refund}/events", events)
        .post("/v1/payments/{id}/refunds/{refund}/cancel", cancel)
        .extension(engine)
}

#[utoipa::path(
    get,
    operation_id = "show_refund",
    path = "/v1/payments/{id}/refunds/{refund}",
    tag = "payments",
    summary = "One refund of a payment (one on a reader is `pending` until the card is presented)",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)"), ("refund" = String, Path, description = "The refund's id (`rf_…`)")),
    responses((status = 200, description = "The refund", body = RefundView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment or refund, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn show(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path((id, refund)): Path<(String, String)>,
) -> Result<Json<RefundView>, ApiError> {
    let p = visible(&engine, &caller, &id)?;
    let r = engine
        .refund_record(&id, &refund)?
        .ok_or_else(|| ApiError::not_found("refund", &refund))?;
    Ok(Json(RefundView::new(&r, &p)))
}

#[utoipa::path(
    post,
    operation_id = "cancel_refund",
    path = "/v1/payments/{id}/refunds/{refund}/cancel",
    tag = "payments",
    summary = "Cancel a refund that waits on a reader (queued: at once; on the reader: readerd clears its own action)",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)"), ("refund" = String, Path, description = "The refund's id (`rf_…`)")),
    responses((status = 200, description = "Canceled (its amount can be refunded again), or `cancel_requested` while readerd clears the reader", body = RefundView), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment or refund, or not the caller's to see", body = Envelope), (status = 409, description = "Already final, or not a refund on a reader (`invalid_state`)", body = Envelope), (status = 503, description = "readerd is shutting down (`shutting_down`)", body = Envelope)),
    security(("bearer" = []))
)]
async fn cancel(
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path((id, refund)): Path<(String, String)>,
) -> Result<Json<RefundView>, ApiError> {
    visible(&engine, &caller, &id)?;
    if engine.refund_record(&id, &refund)?.is_none() {
        return Err(ApiError::not_found("refund", &refund));
    }
    let r = engine.cancel_reader_refund(&id, &refund).await?;
    let p = engine.load(&id)?;
    Ok(Json(RefundView::new(&r, &p)))
}

/// Where a refund stands, as far as a follower cares: its status and its reader job's step.
impl Followed for RefundRecord {
    type Status = (u8, u8);
    fn id(&self) -> &str {
        &self.id
    }
    fn status(&self) -> Self::Status {
        let status = match self.status {
            RefundStatus::Pending => 0,
            RefundStatus::RequiresAction => 1,
            RefundStatus::Succeeded => 2,
            RefundStatus::Failed => 3,
            RefundStatus::Canceled => 4,
            RefundStatus::Other(_) => 5,
        };
        let step = match self.on_reader.as_ref().map(|j| j.step) {
            None => 0,
            Some(ReaderRefundStep::Queued) => 1,
            Some(ReaderRefundStep::Sending) => 2,
            Some(ReaderRefundStep::OnReader) => 3,
        };
        (status, step)
    }
    fn is_final(&self) -> bool {
        self.status != RefundStatus::Pending
    }
}

/// Server-Sent Events: the refund as it is now, then one `refund` event per change (queued,
/// on the reader, then its final status); the stream ends after a final status, or when the
/// daemon drains.
#[utoipa::path(
    get,
    operation_id = "follow_refund",
    path = "/v1/payments/{id}/refunds/{refund}/events",
    tag = "payments",
    summary = "Follow a refund (Server-Sent Events), e.g. one waiting for the card on a reader",
    params(("id" = String, Path, description = "The payment's id (`pay_…`)"), ("refund" = String, Path, description = "The refund's id (`rf_…`)")),
    responses((status = 200, description = "A stream of `refund` events, each with a refund (see RefundView) as its JSON data: as it is, then one per change; it ends after a final status", content_type = "text/event-stream", body = String), (status = 401, description = "No token, or an unknown one", body = Envelope), (status = 404, description = "No such payment or refund, or not the caller's to see", body = Envelope)),
    security(("bearer" = []))
)]
async fn events(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    Path((id, refund)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    // Subscribe before reading, so that no change falls between the two.
    let rx = engine.subscribe_refunds();
    visible(&engine, &caller, &id)?;
    let current = engine
        .refund_record(&id, &refund)?
        .ok_or_else(|| ApiError::not_found("refund", &refund))?;
    let reload = {
        let engine = engine.clone();
        let payment = id.clone();
        move |rid: &str| engine.refund_record(&payment, rid).ok().flatten()
    };
    let view = move |r: &RefundRecord| {
        let p = engine.get(&r.payment).ok().flatten();
        match p {
            Some(p) => serde_json::to_value(RefundView::new(r, &p)).unwrap_or_default(),
            None => serde_json::Value::Null,
        }
    };
    Ok(super::events::follow(
        rx,
        current,
        state.draining.clone(),
        "refund",
        reload,
        view,
    ))
}
