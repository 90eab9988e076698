//! What the list routes share: the `limit` of a page, the `reader` filter (an id or a
//! label) and the `Link: <…>; rel="next"` header that names the next page (RFC 8288).

use super::{ApiError, AppState};
use crate::payments::engine::{DEFAULT_PAGE, MAX_PAGE};
use axum::http::{header, HeaderValue};
use axum::response::Response;

/// `limit`: default [`DEFAULT_PAGE`] when absent or empty, at most [`MAX_PAGE`].
pub(super) fn limit(q: Option<&str>) -> Result<usize, ApiError> {
    let Some(s) = q.filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT_PAGE);
    };
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit must be a whole number from 1 to {MAX_PAGE}, not {s:?}"
        ))),
    }
}

/// `reader`: by id or label, like the other reader routes, as the reader's id; `None` when
/// absent or empty. An unknown reader stays as given, so that it lists nothing.
pub(super) fn reader(state: &AppState, q: Option<&str>) -> Result<Option<String>, ApiError> {
    match q.filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(r) => Ok(Some(
            state
                .fleet
                .find_reader(r)?
                .map(|rec| rec.id)
                .unwrap_or_else(|| r.to_string()),
        )),
    }
}

/// The `Link: <{path}?…&starting_after={last}>; rel="next"` header: the same query (the
/// parameters given, in this order), with the cursor moved to this page's last item.
pub(super) fn link_next(
    resp: &mut Response,
    path: &str,
    query: &[(&str, &Option<String>)],
    last: &str,
) {
    let mut next = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        if let Some(v) = v {
            next.append_pair(k, v);
        }
    }
    next.append_pair("starting_after", last);
    let link = format!("<{path}?{}>; rel=\"next\"", next.finish());
    if let Ok(v) = HeaderValue::from_str(&link) {
        resp.headers_mut().insert(header::LINK, v);
    }
}
