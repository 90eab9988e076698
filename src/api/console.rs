//! `GET /console`: the operator's page, served by the daemon itself.
//!
//! One HTML page, one script and one stylesheet, compiled into the binary
//! (`api/console/`), so the console works in a venue without internet and always matches
//! the daemon it comes from. The page holds no data and needs no token: it signs in with a
//! token the operator gives it (kept in the tab's `sessionStorage`) and reads everything
//! through the API, which applies the same scope as for any client. A strict
//! Content-Security-Policy allows nothing but these three files and requests to this
//! daemon: no inline script or style, no other origin, no framing, no form posts.

use super::Routes;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

/// The policy on every console answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The console's routes (public: the files hold no data).
pub fn routes() -> Routes {
    Routes::new()
        .get("/console", page)
        .get("/console/app.js", script)
        .get("/console/app.css", style)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[utoipa::path(
    get,
    operation_id = "console_page",
    path = "/console",
    tag = "operations",
    summary = "The operator's console (one HTML page; it holds no data and reads the API with the token the operator gives it)",
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub(super) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

#[utoipa::path(
    get,
    operation_id = "console_script",
    path = "/console/app.js",
    tag = "operations",
    summary = "The console's script",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String))
)]
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[utoipa::path(
    get,
    operation_id = "console_style",
    path = "/console/app.css",
    tag = "operations",
    summary = "The console's style sheet",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String))
)]
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
