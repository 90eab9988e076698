//! A payment's refunds, one at a time: `GET /v1/payments/{id}/refunds/{refund}` reads one
//! (a refund made on a reader is `pending` until the card is presented), and
//! `POST /v1/payments/{id}/refunds/{refund}/cancel` cancels one that waits on a reader.
//! Refunds are made with `POST /v1/payments/{id}/refunds` (`on_reader: true` for one on a
//! reader).
//!
//! Scope: the payment's (a refund of a payment the caller may not see does not exist).

use super::error::Envelope;
use super::payments::{visible, RefundView};
use super::{ApiError, Caller, Routes};
use crate::payments::Engine;
use axum::extract::Path;
use axum::{Extension, Json};

pub fn routes(engine: Engine) -> Routes {
    Routes::new()
        .get("/v1/payments/{id}/refunds/{refund}", show)
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
    let r = engine.cancel_reader_refund(&id, &refund)?;
    let p = engine.load(&id)?;
    Ok(Json(RefundView::new(&r, &p)))
}
