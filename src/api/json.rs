//! JSON request bodies and the API's time format.
//!
//! [`ApiJson`] replaces axum's `Json` extractor for request bodies so that every bad body is
//! a 400 in the API's error shape with a message naming the problem: the path of the field
//! with a wrong type, the unknown field, the syntax error's position, or the size limit.
//! Request types use `#[serde(deny_unknown_fields)]`. [`ApiQuery`] does the same for query
//! strings (a malformed one, an unknown or badly typed parameter → 400 in the envelope).

use super::error::ApiError;
use crate::clock::Timestamp;
use axum::body::Body;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The largest request body accepted, in bytes (`api.max_body_bytes`).
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A JSON request body, parsed strictly.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// Parses a JSON body, naming the offending field on a type error.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; a JSON object is expected",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "malformed JSON"
            }
            _ => "invalid request body",
        };
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("{what}: {inner}"))
        } else {
            ApiError::bad_request(format!("{what}: field `{path}`: {inner}"))
        }
    })?;
    Ok(value)
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        let limit = BodyLimit::from_ref(state).0;
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !(essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")) {
                return Err(ApiError::bad_request(format!(
                    "Content-Type must be application/json, not {ct:?}"
                )));
            }
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "the request body is larger than the limit of {limit} bytes (api.max_body_bytes)"
                ))
            })?;
        parse_body(&bytes).map(ApiJson)
    }
}

/// A query string, parsed strictly: its type uses `#[serde(deny_unknown_fields)]`, and any
/// problem is a 400 `invalid_request` naming it (axum's `Query` answers plain text).
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::bad_request(format!("invalid query string: {detail}"))
            })
    }
}

/// An API time: RFC 3339 in UTC with milliseconds (`2026-11-26T15:04:05.123Z`), the form
/// every time in the API takes (records' [`Timestamp`]s serialise the same way).
pub fn timestamp(t: Timestamp) -> String {
    t.to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        amount: i64,
        inner: Option<Inner>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn msg(s: &str) -> String {
        parse_body::<Body>(s.as_bytes()).unwrap_err().message
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(msg("{").contains("malformed JSON"));
        assert!(msg("").contains("empty"));
        let m = msg(r#"{"amount": "12"}"#);
        assert!(m.contains("`amount`") && m.contains("invalid type"), "{m}");
        let m = msg(r#"{"amount": 1, "inner": {"n": -1}}"#);
        assert!(m.contains("inner.n"), "{m}");
        let m = msg(r#"{"amount": 1, "colour": 2}"#);
        assert!(m.contains("unknown field `colour`"), "{m}");
        let m = msg(r#"{}"#);
        assert!(m.contains("missing field `amount`"), "{m}");
        assert!(parse_body::<Body>(br#"{"amount": 5}"#).is_ok());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(Timestamp::from_ms(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp(Timestamp::from_ms(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
