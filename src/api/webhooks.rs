//! `POST /webhooks/stripe`: Stripe's events, as observations.
//!
//! The `Stripe-Signature` header is verified against the raw body (Stripe's tolerance of
//! 300 s, any of several `v1` values); a forged or stale event is refused with 400. Events
//! are deduplicated by id in the store (tree `webhook_events`), so a redelivery does
//! nothing. A reader event hands the reader it carries to the reader's watch, a
//! PaymentIntent event the PaymentIntent to the status machine; the engine keeps only what
//! moves a payment forward (`payments::engine::events`), so a late or reordered event
//! cannot undo what Stripe now says. Other events wake whoever should re-read. Without a configured signing secret the route does not exist (404).

use super::{ApiError, AppState, Routes};
use crate::payments::Engine;
use crate::store::Tree;
use crate::stripe::webhook::{verify, SignatureError, DEFAULT_TOLERANCE_SECS};
use crate::stripe::wire::{Event, PaymentIntent, Reader};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn routes(engine: Engine) -> Routes {
    Routes::new()
        .post("/webhooks/stripe", receive)
        .extension(engine)
}

/// The answer to Stripe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct WebhookAck {
    /// Always `true`.
    pub received: bool,
    /// `true` when the event was already processed (a redelivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

/// A processed event id (tree `webhook_events`).
#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    kind: String,
    received_at: crate::clock::Timestamp,
}

#[utoipa::path(
    post,
    path = "/webhooks/stripe",
    operation_id = "stripe_webhook",
    tag = "operations",
    summary = "Stripe's events (signed with `Stripe-Signature`), taken as hints to re-read",
    description = "Without `stripe.webhook_secret_file` configured, webhooks are off and this route answers 404.",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature of the raw body")),
    request_body(content = Object, description = "A Stripe event object"),
    responses(
        (status = 200, description = "Received (or a redelivery)", body = WebhookAck),
        (status = 400, description = "A forged or stale signature, or not an event", body = super::error::Envelope)
    )
)]
async fn receive(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WebhookAck>), ApiError> {
    let Some(secret) = &state.webhook_secret else {
        state.metrics.webhook_rejected("disabled");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "webhooks are off: no stripe.webhook_secret_file is configured",
        ));
    };
    let sig = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now = crate::clock::now_secs();
    // Any configured endpoint secret may have signed it (account and Connect endpoints).
    // When none matches, report the most telling reason: a stale timestamp under a
    // matching signature says more than "no match".
    let verdict = secret
        .expose()
        .iter()
        .map(|s| verify(s, sig, &body, now, DEFAULT_TOLERANCE_SECS))
        .reduce(|a, b| match (a, b) {
            (Ok(()), _) | (_, Ok(())) => Ok(()),
            (Err(SignatureError::NoMatch), other) => other,
            (first, _) => first,
        })
        .unwrap_or(Err(SignatureError::NoMatch));
    if let Err(e) = verdict {
        tracing::warn!(reason = %e, "webhook refused");
        state.metrics.webhook_rejected(match e {
            SignatureError::Malformed => "malformed_signature",
            SignatureError::NoMatch => "bad_signature",
            SignatureError::OutsideTolerance(_) => "stale_timestamp",
        });
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            format!("Stripe-Signature: {e}"),
        ));
    }
    let event: Event = serde_json::from_slice(&body).map_err(|e| {
        state.metrics.webhook_rejected("malformed_event");
        ApiError::bad_request(format!("not a Stripe event: {e}"))
    })?;
    if event.livemode != state.mode.livemode() {
        // An event of the other world (a live endpoint's secret reused for test, say):
        // nothing of it is recorded or acted on.
        let event_mode = if event.livemode { "live" } else { "test" };
        tracing::warn!(event = %event.id, event_mode, store_mode = %state.mode, "webhook event of the other mode refused");
        state.metrics.webhook_rejected("livemode_mismatch");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "livemode_mismatch",
            format!(
                "event {} is a {event_mode} mode event, but this readerd is bound to {} mode",
                event.id, state.mode
            ),
        ));
    }
    let seen = Seen {
        kind: event.kind.clone(),
        received_at: crate::clock::Timestamp::now(),
    };
    if state
        .registry
        .put_if_absent(Tree::WebhookEvents, &event.id, &seen)?
        .is_some()
    {
        state.metrics.webhook_rejected("duplicate");
        return Ok((
            StatusCode::OK,
            Json(WebhookAck {
                received: true,
                duplicate: Some(true),
            }),
        ));
    }
    state.metrics.webhook_accepted(&event.kind);
    hint(&engine, &event);
    Ok((
        StatusCode::OK,
        Json(WebhookAck {
            received: true,
            duplicate: None,
        }),
    ))
}

/// Hands the event to the engine: the reader or PaymentIntent it carries is an observation
/// (the engine keeps only what moves forward); anything else wakes whoever should re-read.
fn hint(engine: &Engine, event: &Event) {
    let obj = &event.data.object;
    let kind = event.kind.as_str();
    if kind.starts_with("terminal.reader.") {
        match serde_json::from_value::<Reader>(obj.clone()) {
            Ok(reader) => engine.event_reader(reader, event.created),
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "reader event without a readable reader; re-reading");
                if let Some(reader) = obj["id"].as_str() {
                    engine.hint_reader(reader);
                }
            }
        }
    } else if kind.starts_with("payment_intent.") {
        match serde_json::from_value::<PaymentIntent>(obj.clone()) {
            Ok(pi) => engine.event_intent(&pi, event.account.as_deref()),
            Err(_) => {
                if let Some(pi) = obj["id"].as_str() {
                    engine.hint_intent(pi);
                }
            }
        }
    } else if kind.starts_with("charge.") || kind.starts_with("refund.") {
        if let Some(pi) = obj["payment_intent"].as_str() {
            engine.hint_intent(pi);
        }
    }
}
