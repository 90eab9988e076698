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

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
