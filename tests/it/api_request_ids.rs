//! Request ids and the error envelope at the API's edge: every answer has a `Request-Id`
//! header, error bodies repeat it, the log lines written for the request carry it, and no
//! error leaves in plain text (a bad query string, an unknown query parameter, a path that
//! is not valid percent-encoding, an unknown route or method).

use crate::common::{captured_logs, TestEnv};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;

async fn call(
    env: &TestEnv,
    method: Method,
    path: &str,
    token: &str,
) -> (StatusCode, String, Value) {
    let mut req = env.http.request(method, format!("{}{path}", env.api_url));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status();
    let id = resp
        .headers()
        .get("request-id")
        .unwrap_or_else(|| panic!("{path}: no Request-Id header"))
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, id, body)
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_errors_repeat_it() {
    let logs = captured_logs();
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();

    let mut ids = BTreeSet::new();
    for (path, token) in [("/healthz", ""), ("/v1/readers", admin.as_str())] {
        let (s, id, _) = call(&env, Method::GET, path, token).await;
        assert!(s.is_success(), "{path}: {s}");
        assert!(id.starts_with("req_") && id.len() > 12, "{id}");
        assert!(ids.insert(id), "ids are unique per request");
    }

    let (s, id, body) = call(&env, Method::GET, "/v1/payments/pay_nothing", &admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert_eq!(body["error"]["request_id"], id.as_str(), "{body}");
    assert!(ids.insert(id.clone()));
    // The error's own log line is written inside the request's span.
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains(&id) && l.contains("pay_nothing"))
        .unwrap_or_else(|| panic!("no log line carries {id}"));
    assert!(line.contains("request_id"), "{line}");
}

#[tokio::test]
async fn every_error_is_the_json_envelope() {
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    let cases: &[(Method, &str, StatusCode, &str, &str)] = &[
        // An unknown query parameter, a badly typed one and a malformed query string.
        (
            Method::GET,
            "/v1/payments?colour=red",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "colour",
        ),
        (
            Method::GET,
            "/v1/payments?status=sideways",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "sideways",
        ),
        (
            Method::GET,
            "/v1/payments?merchant=a&merchant=b",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "merchant",
        ),
        (
            Method::GET,
            "/v1/readers/x?refresh=maybe",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh",
        ),
        // A path segment that is not valid percent-encoded UTF-8 (axum's own rejection).
        (
            Method::GET,
            "/v1/payments/%FF",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "",
        ),
        (
            Method::GET,
            "/v1/nothing",
            StatusCode::NOT_FOUND,
            "not_found",
            "",
        ),
        (
            Method::DELETE,
            "/v1/payments",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "",
        ),
        (
            Method::GET,
            "/v1/payments",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "",
        ),
    ];
    for (method, path, want, code, mentions) in cases {
        let token = if *want == StatusCode::UNAUTHORIZED {
            ""
        } else {
            admin.as_str()
        };
        let (s, id, body) = call(&env, method.clone(), path, token).await;
        assert_eq!(s, *want, "{method} {path}: {body}");
        assert!(body.is_object(), "{method} {path}: not JSON: {body}");
        assert_eq!(body["error"]["code"], *code, "{method} {path}: {body}");
        assert_eq!(
            body["error"]["request_id"],
            id.as_str(),
            "{method} {path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            !message.is_empty() && message.contains(mentions),
            "{method} {path}: {body}"
        );
    }
}
