//! Request ids: every answer carries a `Request-Id` header (`req_…`, new for each request),
//! error bodies repeat it as `error.request_id`, and every log line written while the
//! request is handled carries it, through one tracing span per request.
//!
//! [`layer`] is the API's outermost middleware. It also makes sure that every error leaves
//! as the JSON envelope: an [`ApiError`] marks its response (see [`Envelope`]) and gets the
//! id added; any other error answer (an axum rejection in plain text, such as a path that
//! is not valid percent-encoding) is turned into the envelope here.

use super::error::{ApiError, Envelope};
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::distributions::Alphanumeric;
use rand::Rng;
use tracing::Instrument;

/// The header that carries the id (Stripe's name for its own).
pub static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// The id of the request being handled (a request extension, for handlers that want it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh id: `req_` and 24 random alphanumerics.
    pub fn new() -> Self {
        let tail: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        RequestId(format!("req_{tail}"))
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// The largest plain-text error body that is carried over into the envelope's message.
const PLAIN_ERROR_LIMIT: usize = 4096;

/// Gives the request its id and span, and its answer the header and the envelope.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let id = RequestId::new();
    let span = tracing::info_span!(
        "request",
        request_id = %id.0,
        method = %request.method(),
        path = %request.uri().path(),
    );
    request.extensions_mut().insert(id.clone());
    let response = next.run(request).instrument(span.clone()).await;
    let mut response = if let Some(envelope) = response.extensions().get::<Envelope>().cloned() {
        let (mut parts, _) = response.into_parts();
        let body = envelope.to_json(Some(&id.0)).to_string();
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(body))
    } else if response.status().is_client_error() || response.status().is_server_error() {
        plain_to_envelope(response, &id.0).instrument(span).await
    } else {
        response
    };
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    response
}

/// An error answer that did not come from an [`ApiError`] (axum's own rejections answer
/// plain text): the same status, in the envelope, with the text as the message.
async fn plain_to_envelope(response: Response, id: &str) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), PLAIN_ERROR_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status.as_u16() {
        400 | 422 => "invalid_request",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        s if s >= 500 => "internal",
        _ => "error",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut e = ApiError::new(status, code, message).into_response();
    let envelope = e
        .extensions_mut()
        .remove::<Envelope>()
        .expect("an ApiError response carries its envelope");
    let (parts, _) = e.into_parts();
    Response::from_parts(parts, Body::from(envelope.to_json(Some(id)).to_string()))
}
