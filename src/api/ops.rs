//! Probes for supervisors and load balancers (no token): `GET /healthz` (the process
//! answers), `GET /readyz` (the store answers and Stripe was reachable) and `GET /metrics`
//! (Prometheus text format; see `crate::metrics`).
//!
//! `/readyz` must not spend Stripe's read allocation on every probe: while the last Stripe
//! call succeeded it answers from that, after checking that a connection to Stripe can
//! still be opened (a TCP connect, which costs no read: an idle daemon would otherwise keep
//! reporting an old success long after the network to Stripe went away). Only when Stripe
//! was unreachable (or never called) does it ask Stripe again, at most once per
//! [`PROBE_EVERY`].

use super::error::ApiError;
use super::{AppState, Routes};
use crate::store::Tree;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// The least time between two Stripe probes made by `/readyz`.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// How long a probe may take before Stripe counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes() -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
        .get("/metrics", metrics)
        .get("/openapi.json", openapi)
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz` when ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: String,
    /// The store's backend: `sled` or `postgres`.
    pub store: String,
    /// This instance's name (`[cluster] instance`, by default the host name).
    pub instance: String,
    /// Always `ok`.
    pub stripe: String,
    /// Stripe answers, but lately with errors or slowly (see the metrics).
    pub stripe_degraded: bool,
    /// The mode the store is bound to: `test` or `live`.
    pub mode: String,
    /// The platform account the store is bound to; `null` until Stripe has named it.
    pub platform: Option<String>,
}

/// The API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This API's OpenAPI 3.1 document",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object))
)]
async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::openapi::json(),
    )
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.metrics.render(),
    )
}

/// Whether a TCP connection to `api_base`'s host can be opened within [`PROBE_TIMEOUT`].
async fn connect_check(api_base: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(api_base).map_err(|e| format!("api_base: {e}"))?;
    let host = url
        .host_str()
        .ok_or("api_base has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot connect to {host}:{port}: {e}")),
        Err(_) => Err(format!(
            "cannot connect to {host}:{port} within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "The process answers",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "The store answers and Stripe was reachable",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready: Stripe unreachable, the store failing, or shutting down", body = super::error::Envelope)
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "readerd is shutting down",
        ));
    }
    let registry = state.registry.clone();
    let store =
        tokio::task::spawn_blocking(move || registry.store().get(Tree::Meta, "schema_version"))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Err(e) = store {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the store does not answer: {e}"),
        ));
    }
    let health = state.fleet.health();
    let needs_probe = match health.status() {
        Some(Ok(())) => match connect_check(&state.stripe.config().api_base).await {
            Ok(()) => false,
            Err(e) => {
                health.observe::<()>(&Err(crate::stripe::StripeError::NoResponse(e)));
                false
            }
        },
        None => true,
        Some(Err(_)) => health.age().is_none_or(|a| a >= PROBE_EVERY),
    };
    if needs_probe {
        let probe = tokio::time::timeout(PROBE_TIMEOUT, state.stripe.list_locations()).await;
        match probe {
            Ok(r) => health.observe(&r),
            Err(_) => health.observe::<()>(&Err(crate::stripe::StripeError::NoResponse(format!(
                "no answer within {} s",
                PROBE_TIMEOUT.as_secs()
            )))),
        }
    }
    match health.status() {
        Some(Ok(())) => Ok(Json(Ready {
            status: "ready".into(),
            store: state.registry.store().backend().into(),
            instance: state.config.cluster.instance_name(),
            stripe: "ok".into(),
            stripe_degraded: state.metrics.stripe_is_degraded(),
            mode: state.mode.as_str().into(),
            platform: state.platform.clone(),
        })),
        Some(Err(detail)) => Err(ApiError::stripe_unavailable(detail)),
        None => Err(ApiError::stripe_unavailable("not contacted yet")),
    }
}
