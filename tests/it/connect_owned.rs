//! Merchant-owned locations and readers (Stripe's GA "Terminal with Connect" shape) through
//! a whole daemon against the emulator: created on the merchant's connected account, every
//! call about them carrying its `Stripe-Account`, payments always direct charges on the
//! owner, a mixed fleet, the sync of every account, and the contract's refusals.

use crate::common::TestEnv;
use readerd::stripe::params::{CreateLocation, RegisterReader};
use readerd::stripe::wire;
use readerd::stripe::RequestOptions;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn env() -> TestEnv {
    TestEnv::builder()
        .pos("bakery", &["bakery"])
        .pos("florist", &["florist"])
        .pos("both", &["bakery", "florist"])
        .configure(|c| {
            c.payments.poll_min = Duration::from_millis(20).into();
            c.payments.poll_max = Duration::from_millis(100).into();
        })
        .start()
        .await
}

fn address(country: &str) -> Value {
    json!({"line1": "1 Rue", "city": "Paris", "postal_code": "75001", "country": country})
}

async fn owned_location(env: &TestEnv, owner: &str) -> String {
    let (s, l) = env
        .post(
            &env.admin_token,
            "/v1/locations",
            json!({"display_name": format!("{owner}'s shop"), "address": address("FR"), "owner": owner}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{l}");
    assert_eq!(l["owner"], owner, "{l}");
    assert_eq!(l["merchant"], owner, "{l}");
    l["id"].as_str().unwrap().to_string()
}

async fn owned_reader(env: &TestEnv, owner: &str, location: &str, label: &str) -> String {
    let (s, r) = env
        .post(
            &env.admin_token,
            "/v1/readers",
            json!({"registration_code": "simulated-wpe", "label": label, "location": location, "owner": owner}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["owner"], owner, "{r}");
    r["id"].as_str().unwrap().to_string()
}

async fn payment(env: &TestEnv, id: &str) -> Value {
    env.get(&env.admin_token, &format!("/v1/payments/{id}"))
        .await
        .1
}

async fn wait(env: &TestEnv, id: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1000 {
        let p = payment(env, id).await;
        if f(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("payment {id} stuck: {}", payment(env, id).await);
}

/// Pays on `reader` for `merchant` and taps a card; returns the succeeded payment.
pub(crate) async fn pay_and_tap(env: &TestEnv, token: &str, merchant: &str, reader: &str) -> Value {
    let (s, p) = env
        .post(
            token,
            "/v1/payments",
            json!({"merchant": merchant, "reader": reader, "amount": 1500, "currency": "eur"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    wait(env, &id, |p| p["waiting_for"] == "card").await;
    env.sim.present_card(reader, None).expect("tap");
    wait(env, &id, |p| p["status"] == "succeeded").await
}

/// Every request about `reader` (or a PaymentIntent) went to `account`.
fn accounts_of(env: &TestEnv, needle: &str) -> Vec<Option<String>> {
    env.sim
        .requests()
        .iter()
        .filter(|q| q.path.contains(needle))
        .map(|q| q.account.clone())
        .collect()
}

#[tokio::test]
async fn a_merchant_owned_reader_takes_direct_charges_on_its_owner_with_stripe_account() {
    let env = env().await;
    env.add_merchant("bakery", "FR", "eur").await;
    let florist = env.add_merchant("florist", "FR", "eur").await;
    // The florist's charge type is destination: its own reader still takes direct charges.
    let (s, m) = env
        .post(
            &env.admin_token,
            "/v1/merchants",
            json!({"id": "florist", "account": florist, "charge_type": "destination"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    let location = owned_location(&env, "florist").await;
    let reader = owned_reader(&env, "florist", &location, "florist-own").await;
    // Created on the florist's account.
    for path in ["/v1/terminal/locations", "/v1/terminal/readers"] {
        let creates: Vec<_> = env
            .sim
            .requests()
            .into_iter()
            .filter(|q| q.method == "POST" && q.path == path)
            .map(|q| q.account)
            .collect();
        assert_eq!(creates, vec![Some(florist.clone())], "{path}");
    }
    // Not visible from the platform.
    assert_eq!(
        env.stripe()
            .retrieve_reader(&reader)
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );

    let p = pay_and_tap(&env, env.pos("florist"), "florist", &reader).await;
    let pi = p["payment_intent"].as_str().unwrap().to_string();
    let intent = env
        .stripe()
        .retrieve_payment_intent(&pi, &[], &RequestOptions::account(&florist))
        .await
        .expect("the PaymentIntent is on the florist's account");
    assert!(intent.transfer_data.is_none());
    assert!(intent.on_behalf_of.is_none());
    let on_reader: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.path.contains(&reader) && q.status != 404)
        .map(|q| q.account)
        .collect();
    assert!(!on_reader.is_empty());
    assert!(
        on_reader
            .iter()
            .all(|a| a.as_deref() == Some(florist.as_str())),
        "every call about the reader carries Stripe-Account: {on_reader:?}"
    );
    assert!(accounts_of(&env, "/v1/payment_intents")
        .iter()
        .all(|a| a.as_deref() == Some(florist.as_str())));
    env.stop().await;
}

#[tokio::test]
async fn a_mixed_fleet_serves_one_merchant_from_a_platform_reader_and_its_own() {
    let env = env().await;
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
    let shared = env.add_reader("hall-till", &hall).await;
    let shop = owned_location(&env, "florist").await;
    let own = owned_reader(&env, "florist", &shop, "shop-till").await;

    let on_shared = pay_and_tap(&env, env.pos("florist"), "florist", &shared).await;
    let on_own = pay_and_tap(&env, env.pos("florist"), "florist", &own).await;
    // The shared reader: a destination charge on the platform.
    let pi = env
        .stripe()
        .retrieve_payment_intent(
            on_shared["payment_intent"].as_str().unwrap(),
            &[],
            &RequestOptions::platform(),
        )
        .await
        .unwrap();
    assert_eq!(
        pi.transfer_data
            .as_ref()
            .map(|t| t.destination.id().to_string()),
        Some(florist.clone())
    );
    // Its own reader: a direct charge on the florist.
    env.stripe()
        .retrieve_payment_intent(
            on_own["payment_intent"].as_str().unwrap(),
            &[],
            &RequestOptions::account(&florist),
        )
        .await
        .unwrap();
    assert!(accounts_of(&env, &shared).iter().all(Option::is_none));
    assert!(accounts_of(&env, &own)
        .iter()
        .all(|a| a.as_deref() == Some(florist.as_str())));
    env.stop().await;
}

#[tokio::test]
async fn the_contracts_refusals_for_owned_objects() {
    let env = env().await;
    env.add_merchant("bakery", "FR", "eur").await;
    env.add_merchant("florist", "FR", "eur").await;
    let hall = env.add_location("Hall", "FR", None).await;
    let shop = owned_location(&env, "florist").await;
    let before = env.sim.requests().len();
    // A merchant's reader in the platform's location, or the other way round.
    for (owner, location) in [(json!("florist"), &hall), (json!("platform"), &shop)] {
        let (s, e) = env
            .post(
                &env.admin_token,
                "/v1/readers",
                json!({"registration_code": "simulated-wpe", "location": location, "owner": owner}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["error"]["code"], "location_owner_mismatch", "{e}");
    }
    // A reader of the florist's in a location of the bakery's.
    let bakery_shop = owned_location(&env, "bakery").await;
    let (s, e) = env
        .post(
            &env.admin_token,
            "/v1/readers",
            json!({"registration_code": "simulated-wpe", "location": bakery_shop, "owner": "florist"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "location_owner_mismatch", "{e}");
    let sent: Vec<_> = env.sim.requests()[before..]
        .iter()
        .filter(|q| q.path == "/v1/terminal/readers")
        .map(|q| q.path.clone())
        .collect();
    assert!(sent.is_empty(), "refusals reach Stripe: {sent:?}");

    let own = owned_reader(&env, "florist", &shop, "florist-own").await;
    let pay = |merchant: &str| json!({"merchant": merchant, "reader": own, "amount": 1000, "currency": "eur"});
    // The bakery's till does not see the florist's reader at all.
    let (s, e) = env
        .post(env.pos("bakery"), "/v1/payments", pay("bakery"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    // Whoever sees it (the operator, a till of both) is told it is not shared.
    for token in [env.admin_token.as_str(), env.pos("both")] {
        let (s, e) = env.post(token, "/v1/payments", pay("bakery")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["error"]["code"], "reader_not_shared", "{e}");
    }
    // An allowlist on a merchant-owned reader cannot open it to others.
    let (s, e) = env
        .post(
            &env.admin_token,
            &format!("/v1/readers/{own}"),
            json!({"merchants": ["bakery"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    // Lists: the florist's objects are the florist's tills' only.
    for (token, sees) in [
        (env.pos("bakery"), false),
        (env.pos("florist"), true),
        (env.pos("both"), true),
    ] {
        let (_, readers) = env.get(token, "/v1/readers").await;
        let (_, locations) = env.get(token, "/v1/locations").await;
        let has = |list: &Value, id: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .any(|x| x["id"].as_str() == Some(id))
        };
        assert_eq!(has(&readers, &own), sees);
        assert_eq!(has(&locations, &shop), sees);
        let (s, _) = env.get(token, &format!("/v1/readers/{own}")).await;
        assert_eq!(s == StatusCode::OK, sees);
    }
    env.stop().await;
}

#[tokio::test]
async fn the_sync_covers_every_merchants_account() {
    let env = env().await;
    let florist = env.add_merchant("florist", "FR", "eur").await;
    env.add_merchant("bakery", "FR", "eur").await;
    // Made on Stripe behind readerd's back, on the florist's account.
    let stripe = env.stripe();
    let on_florist = RequestOptions::account(&florist);
    let loc = stripe
        .create_location(
            &CreateLocation {
                display_name: "Back room".into(),
                address: wire::Address {
                    country: Some("FR".into()),
                    city: Some("Paris".into()),
                    line1: Some("2 Rue".into()),
                    postal_code: Some("75002".into()),
                    ..Default::default()
                },
                metadata: Default::default(),
            },
            &on_florist.clone().key("sync-loc"),
        )
        .await
        .unwrap();
    let reader = stripe
        .register_reader(
            &RegisterReader {
                registration_code: "simulated-wpe".into(),
                label: Some("back".into()),
                location: Some(loc.id.clone()),
                metadata: Default::default(),
            },
            &on_florist.clone().key("sync-reader"),
        )
        .await
        .unwrap();
    let (s, report) = env
        .post(&env.admin_token, "/v1/readers/sync", json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    // (The start-up sync may have found them first: added then or now.)
    for kind in ["readers", "locations"] {
        let seen =
            report[kind]["added"].as_u64().unwrap() + report[kind]["unchanged"].as_u64().unwrap();
        assert_eq!(seen, 1, "{report}");
    }
    let (_, r) = env
        .get(&env.admin_token, &format!("/v1/readers/{}", reader.id))
        .await;
    assert_eq!(r["owner"], "florist", "{r}");
    let (_, l) = env
        .get(&env.admin_token, &format!("/v1/locations/{}", loc.id))
        .await;
    assert_eq!(l["owner"], "florist", "{l}");
    let lists: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.method == "GET" && q.path == "/v1/terminal/readers")
        .map(|q| q.account)
        .collect();
    assert!(
        lists.contains(&None) && lists.contains(&Some(florist.clone())),
        "{lists:?}"
    );
    // It takes the florist's payments found that way, and a second sync changes nothing.
    pay_and_tap(&env, env.pos("florist"), "florist", &reader.id).await;
    let (_, again) = env
        .post(&env.admin_token, "/v1/readers/sync", json!(null))
        .await;
    assert_eq!(again["readers"]["added"], 0, "{again}");
    assert_eq!(again["readers"]["gone"], 0, "{again}");
    // Deleted on the florist's account: gone at the next sync.
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/v1/terminal/readers/{}",
            env.sim.base_url(),
            reader.id
        ))
        .basic_auth(crate::common::SECRET_KEY, Some(""))
        .header("Stripe-Account", &florist)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let (_, after) = env
        .post(&env.admin_token, "/v1/readers/sync", json!(null))
        .await;
    assert_eq!(after["readers"]["gone"], 1, "{after}");
    env.stop().await;
}
