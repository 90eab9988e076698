//! Connection tokens for Terminal SDK points of sale: made on the account that owns the
//! SDK's payments (the merchant's for `direct`, the platform for `destination`), with and
//! without a location of that account; the refusals; and the secret kept out of the store,
//! the logs and the metrics.

use crate::common::{captured_logs, TestEnv};
use readerd::store::Tree;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn token(env: &TestEnv, caller: &str, body: Value) -> (StatusCode, Value) {
    env.post(caller, "/v1/connection_tokens", body).await
}

/// The `Stripe-Account` of every connection token request the emulator saw since `from`.
fn token_requests(env: &TestEnv, from: usize) -> Vec<Option<String>> {
    env.sim.requests()[from..]
        .iter()
        .filter(|q| q.path == "/v1/terminal/connection_tokens")
        .map(|q| q.account.clone())
        .collect()
}

async fn owned_location(env: &TestEnv, owner: &str) -> String {
    let (s, l) = env
        .post(
            &env.admin_token,
            "/v1/locations",
            json!({"display_name": "Own", "owner": owner,
                   "address": {"line1": "1 Rue", "city": "Paris", "postal_code": "75001", "country": "FR"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{l}");
    l["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_token_for_each_charge_type_with_and_without_a_location() {
    let logs = captured_logs();
    let env = TestEnv::start().await;
    let bakery = env.add_merchant("bakery", "FR", "eur").await;
    let florist = env.add_merchant("florist", "FR", "eur").await;
    let (s, m) = env
        .post(
            &env.admin_token,
            "/v1/merchants",
            json!({"id": "florist", "account": florist, "charge_type": "destination"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let hall = env.add_location("Hall", "FR", None).await;
    let bakery_shop = owned_location(&env, "bakery").await;
    let mut secrets = Vec::new();

    // direct: on the merchant's account, with or without one of its locations.
    for location in [None, Some(bakery_shop.clone())] {
        let from = env.sim.requests().len();
        let mut body = json!({"merchant": "bakery"});
        if let Some(l) = &location {
            body["location"] = l.as_str().into();
        }
        let (s, t) = token(&env, env.pos("bakery"), body).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        assert!(
            t["secret"].as_str().unwrap().starts_with("pst_test_"),
            "{t}"
        );
        assert_eq!(t["merchant"], "bakery");
        assert_eq!(t["account"], bakery.as_str());
        assert_eq!(t["location"], json!(location));
        assert_eq!(token_requests(&env, from), vec![Some(bakery.clone())]);
        secrets.push(t["secret"].as_str().unwrap().to_string());
    }
    // destination: on the platform, with or without a platform location.
    for location in [None, Some(hall.clone())] {
        let from = env.sim.requests().len();
        let mut body = json!({"merchant": "florist"});
        if let Some(l) = &location {
            body["location"] = l.as_str().into();
        }
        let (s, t) = token(&env, env.pos("florist"), body).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        assert_eq!(t["account"], json!(env.sim.platform_account()), "{t}");
        assert_eq!(t["location"], json!(location));
        assert_eq!(token_requests(&env, from), vec![None]);
        secrets.push(t["secret"].as_str().unwrap().to_string());
    }
    secrets.sort();
    secrets.dedup();
    assert_eq!(secrets.len(), 4, "every token is a new secret");

    // Refusals, none of which reaches Stripe.
    let from = env.sim.requests().len();
    let florist_shop = owned_location(&env, "florist").await;
    let from_after_setup = env.sim.requests().len();
    for (caller, body, status, code) in [
        // A location of another account than the token's.
        (
            env.admin_token.as_str(),
            json!({"merchant": "bakery", "location": hall}),
            400,
            "location_owner_mismatch",
        ),
        (
            env.admin_token.as_str(),
            json!({"merchant": "florist", "location": bakery_shop}),
            400,
            "location_owner_mismatch",
        ),
        (
            env.admin_token.as_str(),
            json!({"merchant": "florist", "location": florist_shop}),
            400,
            "location_owner_mismatch",
        ),
        // Outside the caller's merchants, or a location it cannot see.
        (
            env.pos("bakery"),
            json!({"merchant": "florist"}),
            404,
            "not_found",
        ),
        (
            env.pos("bakery"),
            json!({"merchant": "bakery", "location": florist_shop}),
            404,
            "not_found",
        ),
        (
            env.pos("bakery"),
            json!({"merchant": "bakery", "location": "tml_nope"}),
            404,
            "not_found",
        ),
        (
            env.admin_token.as_str(),
            json!({"merchant": "grocer"}),
            404,
            "not_found",
        ),
        ("", json!({"merchant": "bakery"}), 401, "unauthorized"),
    ] {
        let (s, e) = token(&env, caller, body.clone()).await;
        assert_eq!(s.as_u16(), status, "{body}: {e}");
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
    }
    assert!(from_after_setup > from);
    assert!(token_requests(&env, from_after_setup).is_empty());

    // The secrets are in the answers only.
    let store = env.state().registry.store().clone();
    let (_, metrics) = {
        let r = env
            .http
            .get(format!("{}/metrics", env.api_url))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    let text = logs.text();
    for secret in &secrets {
        for tree in Tree::ALL {
            for (k, v) in store.scan(tree).unwrap() {
                assert!(
                    !String::from_utf8_lossy(&v).contains(secret.as_str()),
                    "secret stored in {}/{k}",
                    tree.name()
                );
            }
        }
        assert!(!metrics.contains(secret.as_str()), "secret in /metrics");
        assert!(!text.contains(secret.as_str()), "secret in the logs");
    }
    env.stop().await;
}
