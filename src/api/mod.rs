//! The daemon's HTTP API (axum): authentication, the error shape, strict JSON bodies, the
//! fleet routes and the operational probes.
//!
//! Composition: [`AppState`] holds the shared services (cheap to clone, everything behind
//! `Arc`). [`router`] builds the complete API from the fleet and ops routes plus any number
//! of extra `Router<AppState>`s that the daemon adds (the payment and webhook routes on
//! its payment engine). Handlers of every module use the same extractors:
//! [`Caller`] for authentication and scope, [`ApiJson`] for bodies, [`ApiError`] for errors.
//!
//! List endpoints answer a bare JSON array; times are RFC 3339 UTC strings
//! ([`json::timestamp`]).

pub mod auth;
pub mod console;
pub mod error;
pub mod events;
pub mod fleet;
pub mod inputs;
pub mod json;
pub mod openapi;
pub mod ops;
mod page;
pub mod payments;
pub mod reader_refunds;
pub mod request_id;
pub mod routes;
pub mod scope;
pub mod setups;
pub mod tipping;
pub mod tls;
pub mod tokens;
pub mod webhooks;

pub use auth::{Auth, Caller};
pub use error::ApiError;
pub use json::{ApiJson, ApiQuery, BodyLimit};
pub use request_id::RequestId;
pub use routes::{Route, Routes};

use crate::config::{Config, WebhookSecret};
use crate::fleet::{Fleet, LiveState, StripeHealth};
use crate::store::Registry;
use crate::stripe::StripeClient;
use axum::extract::{FromRef, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The services every handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub registry: Registry,
    pub stripe: StripeClient,
    pub fleet: Arc<Fleet>,
    pub health: Arc<StripeHealth>,
    /// Busy and queue depth per reader; the payment workers replace the idle default.
    pub live: Arc<dyn LiveState>,
    /// `stripe.webhook_secret_file`'s content, when configured.
    pub webhook_secret: Option<WebhookSecret>,
    pub body_limit: BodyLimit,
    /// The Prometheus series (`GET /metrics`); every module records into it.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The daemon's long-running loops, for the systemd watchdog.
    pub liveness: crate::systemd::Liveness,
    /// Set when a graceful shutdown begins: new work is refused with 503.
    pub draining: Arc<AtomicBool>,
    /// The mode the store is bound to: Stripe objects and events of the other are refused.
    pub mode: crate::store::binding::Mode,
    /// The platform account, when Stripe named it.
    pub platform: Option<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(s: &AppState) -> Self {
        s.body_limit
    }
}

/// The complete API: fleet and ops routes, then `extra` (the payment and webhook routes), with JSON
/// 404/405 answers for everything else, and its route table. While the daemon drains for
/// shutdown, requests that would start new work are refused (`refuse_while_draining`).
/// Outermost, every request gets its id and span ([`request_id::layer`]).
pub fn router(state: AppState, extra: Vec<Routes>) -> (Router, Vec<Route>) {
    let mut all = fleet::routes()
        .merge(ops::routes())
        .merge(console::routes())
        .merge(tokens::routes())
        .merge(tipping::routes());
    for e in extra {
        all = all.merge(e);
    }
    let (r, table) = all.into_parts();
    let r = r
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_while_draining,
        ))
        .layer(axum::middleware::from_fn(request_id::layer))
        .with_state(state);
    (r, table)
}

/// During a graceful shutdown, every `POST /v1/…` (a new payment, a retry, a capture, a
/// display, a registration…) is answered `503 shutting_down`, so nothing new starts that
/// the shutdown would have to abandon; the POS sends it again, with the same
/// `Idempotency-Key`, after the restart. Reads, probes and webhooks still work.
async fn refuse_while_draining(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.draining.load(Ordering::SeqCst)
        && request.method() == Method::POST
        && request.uri().path().starts_with("/v1/")
    {
        state.metrics.api_rejected("shutting_down");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "readerd is shutting down; send the request again after the restart (same Idempotency-Key)",
        )
        .into_response();
    }
    next.run(request).await
}
