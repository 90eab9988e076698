//! Every role and scope rule of the fleet API, and bad input on every fleet endpoint.

use crate::common::TestEnv;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
}

#[tokio::test]
async fn tokens_roles_and_merchant_scopes() {
    let env = TestEnv::builder()
        .pos("bakery", &["bakery"])
        .pos("florist", &["florist"])
        .pos("both", &["bakery", "florist"])
        .start()
        .await;
    let admin = env.admin_token.clone();
    let bakery = env.pos("bakery").to_string();
    let florist = env.pos("florist").to_string();
    let both = env.pos("both").to_string();
    env.add_merchant("bakery", "FR", "eur").await;
    env.add_merchant("florist", "FR", "eur").await;
    let bakery_loc = env.add_location("Bakery", "FR", Some("bakery")).await;
    let florist_loc = env.add_location("Florist", "FR", Some("florist")).await;
    let hall = env.add_location("Hall", "FR", None).await;
    let shared = env.add_reader("shared", &hall).await;
    let florist_only = env.add_reader("florist-only", &florist_loc).await;
    let (s, _) = env
        .post(
            &admin,
            &format!("/v1/readers/{florist_only}"),
            json!({"merchants": ["florist"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let duo = env.add_reader("duo", &bakery_loc).await;
    let (s, _) = env
        .post(
            &admin,
            &format!("/v1/readers/{duo}"),
            json!({"merchants": ["bakery", "florist"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // 401: no token, unknown token, not a bearer token.
    for (token, path) in [
        ("", "/v1/readers"),
        ("nope", "/v1/readers"),
        ("", "/v1/merchants"),
    ] {
        let (s, e) = env.get(token, path).await;
        assert_error(s, &e, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let resp = env
        .http
        .get(format!("{}/v1/readers", env.api_url))
        .header("authorization", format!("Basic {admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (s, e) = env
        .post("", "/v1/merchants", json!({"id": "x", "account": "acct_1"}))
        .await;
    assert_error(s, &e, StatusCode::UNAUTHORIZED, "unauthorized");

    // 403: admin-only routes for pos, whatever the body (even a bad one).
    let admin_only: Vec<(&str, String, Value)> = vec![
        ("GET", "/v1/merchants".into(), Value::Null),
        ("GET", "/v1/merchants/bakery".into(), Value::Null),
        ("GET", "/v1/merchants/florist".into(), Value::Null),
        (
            "POST",
            "/v1/merchants".into(),
            json!({"id": "bakery", "account": "acct_x"}),
        ),
        ("POST", "/v1/merchants/bakery/check".into(), Value::Null),
        (
            "POST",
            "/v1/locations".into(),
            json!({"display_name": "X", "address": {"country": "FR"}}),
        ),
        (
            "POST",
            "/v1/readers".into(),
            json!({"registration_code": "simulated-wpe", "location": hall}),
        ),
        ("POST", "/v1/readers/sync".into(), Value::Null),
        (
            "POST",
            format!("/v1/readers/{shared}"),
            json!({"merchants": ["bakery"]}),
        ),
        ("POST", "/v1/merchants".into(), json!("not even an object")),
    ];
    for token in [&bakery, &both] {
        for (method, path, body) in &admin_only {
            let (s, e) = if *method == "GET" {
                env.get(token, path).await
            } else {
                env.post(token, path, body.clone()).await
            };
            assert_error(s, &e, StatusCode::FORBIDDEN, "forbidden");
        }
    }

    // pos reads: locations of its merchants and unassigned ones; others do not exist.
    let (s, list) = env.get(&bakery, "/v1/locations").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&list), sorted(vec![bakery_loc.clone(), hall.clone()]));
    let (s, e) = env
        .get(&bakery, &format!("/v1/locations/{florist_loc}"))
        .await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let (s, l) = env
        .get(&bakery, &format!("/v1/locations/{bakery_loc}"))
        .await;
    assert_eq!(
        (s, l["merchant"].clone()),
        (StatusCode::OK, json!("bakery"))
    );
    let (s, e) = env.get(&bakery, "/v1/locations/tml_doesnotexist").await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let (s, list) = env.get(&florist, "/v1/locations").await;
    assert_eq!(
        (s, ids(&list)),
        (
            StatusCode::OK,
            sorted(vec![florist_loc.clone(), hall.clone()])
        )
    );
    let (_, list) = env.get(&both, "/v1/locations").await;
    assert_eq!(ids(&list).len(), 3);

    // pos reads: readers open to all or allowlisted for one of its merchants.
    let (s, list) = env.get(&bakery, "/v1/readers").await;
    assert_eq!(
        (s, ids(&list)),
        (StatusCode::OK, sorted(vec![shared.clone(), duo.clone()]))
    );
    let (s, e) = env
        .get(&bakery, &format!("/v1/readers/{florist_only}"))
        .await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let (s, e) = env.get(&bakery, "/v1/readers/florist-only").await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    // Not even an on-demand read reveals it (and Stripe is not asked).
    let reads = env.sim.requests().len();
    let (s, e) = env
        .get(&bakery, &format!("/v1/readers/{florist_only}?refresh=true"))
        .await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(env.sim.requests().len(), reads);
    let (s, r) = env
        .get(&bakery, &format!("/v1/readers/{shared}?refresh=true"))
        .await;
    assert_eq!((s, r["id"].clone()), (StatusCode::OK, json!(shared)));
    // The allowlist is shown reduced to the caller's own merchants.
    let (s, r) = env.get(&bakery, &format!("/v1/readers/{duo}")).await;
    assert_eq!(
        (s, r["merchants"].clone()),
        (StatusCode::OK, json!(["bakery"]))
    );
    let (_, r) = env.get(&admin, &format!("/v1/readers/{duo}")).await;
    assert_eq!(r["merchants"], json!(["bakery", "florist"]));
    let (_, list) = env.get(&florist, "/v1/readers").await;
    assert_eq!(
        ids(&list),
        sorted(vec![shared.clone(), florist_only.clone(), duo.clone()])
    );

    // Admin sees everything.
    let (_, list) = env.get(&admin, "/v1/readers").await;
    assert_eq!(ids(&list).len(), 3);
    let (_, list) = env.get(&admin, "/v1/locations").await;
    assert_eq!(ids(&list).len(), 3);

    // Probes need no token.
    let (s, h) = env.get("", "/healthz").await;
    assert_eq!((s, h["status"].clone()), (StatusCode::OK, json!("ok")));
    env.stop().await;
}

#[tokio::test]
async fn bad_input_on_every_endpoint_is_400_naming_the_problem() {
    let env = TestEnv::builder()
        .configure(|c| c.api.max_body_bytes = 1024)
        .start()
        .await;
    let admin = env.admin_token.clone();
    env.add_merchant("bakery", "FR", "eur").await;
    let loc = env.add_location("Shop", "FR", None).await;
    let reader = env.add_reader("front", &loc).await;
    let stripe_calls = env.sim.requests().len();

    let reader_path = format!("/v1/readers/{reader}");
    // (path, a body with a wrong type and the field it names, a body with an unknown field)
    let cases: Vec<(&str, Value, &str, Value)> = vec![
        (
            "/v1/merchants",
            json!({"id": "x", "account": 42}),
            "account",
            json!({"id": "x", "account": "acct_1", "colour": "red"}),
        ),
        (
            "/v1/merchants",
            json!({"id": "x", "account": "acct_1", "charge_type": "sideways"}),
            "charge_type",
            json!({"id": "x", "account": "acct_1", "application_fee": 3}),
        ),
        (
            "/v1/locations",
            json!({"display_name": "X", "address": {"country": 7}}),
            "address.country",
            json!({"display_name": "X", "address": {"country": "FR", "planet": "Earth"}}),
        ),
        (
            "/v1/readers",
            json!({"registration_code": "simulated-wpe", "location": loc, "merchants": "bakery"}),
            "merchants",
            json!({"registration_code": "simulated-wpe", "location": loc, "serial": "x"}),
        ),
        (
            &reader_path,
            json!({"merchants": [1, 2]}),
            "merchants[0]",
            json!({"merchants": null, "label": "x"}),
        ),
    ];
    for (path, wrong_type, field, unknown) in &cases {
        let (s, e) = env.post_raw(&admin, path, "{,}").await;
        assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("malformed JSON"),
            "{path}: {e}"
        );

        let (s, e) = env.post(&admin, path, wrong_type.clone()).await;
        assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("`{field}`")),
            "{path}: {msg} does not name {field}"
        );

        let (s, e) = env.post(&admin, path, unknown.clone()).await;
        assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field"),
            "{path}: {e}"
        );

        let big = json!({"id": "x".repeat(2000)}).to_string();
        let (s, e) = env.post_raw(&admin, path, big).await;
        assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1024 bytes"),
            "{path}: {e}"
        );

        let (s, e) = env.post_raw(&admin, path, "").await;
        assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");

        let resp = env
            .http
            .post(format!("{}{path}", env.api_url))
            .bearer_auth(&admin)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let e: Value = resp.json().await.unwrap();
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Content-Type"),
            "{e}"
        );
    }
    // Missing required fields name them.
    let (s, e) = env
        .post(&admin, "/v1/readers", json!({"location": loc}))
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("registration_code"),
        "{e}"
    );
    let (s, e) = env.post(&admin, "/v1/merchants", json!({"id": "x"})).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("account"),
        "{e}"
    );
    let (s, e) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "x", "account": "acct_1", "application_fee_amount": -5}),
        )
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "invalid_request");

    assert_eq!(
        env.sim.requests().len(),
        stripe_calls,
        "bad input never reaches Stripe"
    );

    // Unknown routes and methods answer in the same shape.
    let (s, e) = env.get(&admin, "/v1/nothing").await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let resp = env
        .http
        .delete(format!("{}/v1/readers", env.api_url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "method_not_allowed");
    env.stop().await;
}
