//! The fleet API against the emulator: merchants, locations, readers, sync, restart.

use crate::common::TestEnv;
use readerd::stripe::params::{CreateLocation, RegisterReader};
use readerd::stripe::wire::{Address, CapabilityStatus};
use readerd::stripe::RequestOptions;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

fn stripe_posts(env: &TestEnv, path: &str) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .count()
}

#[tokio::test]
async fn merchants_are_looked_up_on_stripe_first() {
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    let acct = env
        .sim
        .create_account("FR", "eur", CapabilityStatus::Active);

    let (s, m) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "bakery", "account": acct, "display_name": "La Boulangerie", "charge_type": "direct"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["id"], "bakery");
    assert_eq!(m["account"], acct.as_str());
    assert_eq!(m["display_name"], "La Boulangerie");
    assert_eq!(m["charge_type"], "direct");
    assert_eq!(m["country"], "FR");
    assert_eq!(m["default_currency"], "eur");
    assert_eq!(m["card_payments"], "active");
    assert_eq!(m["card_payments_active"], true);
    assert_eq!(m["charges_enabled"], true);
    assert_eq!(m["can_charge"], true);
    let looked_up = env
        .sim
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path == format!("/v1/accounts/{acct}"));
    assert!(looked_up, "the account is read from Stripe");

    // Adding it again with the same account updates it; another account is a conflict.
    let (s, m) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "bakery", "account": acct, "display_name": "Boulangerie", "charge_type": "destination", "application_fee_amount": 30}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["charge_type"], "destination");
    assert_eq!(m["application_fee_amount"], 30);
    let other = env
        .sim
        .create_account("FR", "eur", CapabilityStatus::Active);
    let (s, e) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "bakery", "account": other}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "conflict");

    // An account Stripe does not know is refused with Stripe's reason, and not recorded.
    let (s, e) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "ghost", "account": "acct_doesnotexist00", "charge_type": "direct"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(e["error"]["code"], "resource_missing");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acct_doesnotexist00"),
        "{e}"
    );
    let (s, _) = env.get(&admin, "/v1/merchants/ghost").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Not an account id at all: refused before Stripe is asked.
    let (s, e) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "x", "account": "bakery"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "no spaces", "account": acct}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    // An account whose card_payments is not active is added but flagged, and a re-check
    // picks up the change.
    let pending = env
        .sim
        .create_account("FR", "eur", CapabilityStatus::Inactive);
    let (s, m) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "florist", "account": pending, "display_name": "Fleurs", "charge_type": "direct"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(m["card_payments"], "inactive");
    assert_eq!(m["can_charge"], false);
    assert!(env.sim.set_capability(&pending, CapabilityStatus::Active));
    let (s, m) = env.get(&admin, "/v1/merchants/florist").await;
    assert_eq!((s, m["can_charge"].clone()), (StatusCode::OK, json!(false)));
    let (s, m) = env
        .post(&admin, "/v1/merchants/florist/check", json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["card_payments"], "active");
    assert_eq!(m["can_charge"], true);
    assert!(env.sim.set_capability(&pending, CapabilityStatus::Inactive));
    let checked = env.state().fleet.check_all_merchants().await;
    assert_eq!(checked, 2);
    let (_, m) = env.get(&admin, "/v1/merchants/florist").await;
    assert_eq!(
        m["can_charge"], false,
        "the periodic re-check flags it again"
    );
    // The start-up re-check reads only merchants whose last check is old enough.
    let reads = env.sim.requests().len();
    let fleet = &env.state().fleet;
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(fleet.check_merchants_older_than(hour).await, 0);
    assert_eq!(
        env.sim.requests().len(),
        reads,
        "nothing stale, nothing read"
    );
    let now = std::time::Duration::ZERO;
    assert_eq!(fleet.check_merchants_older_than(now).await, 2);

    let (s, list) = env.get(&admin, "/v1/merchants").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&list), vec!["bakery", "florist"]);
    let (s, _) = env
        .post(&admin, "/v1/merchants/nobody/check", json!(null))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.stop().await;
}

#[tokio::test]
async fn locations_are_created_on_stripe_as_the_platform_in_the_merchants_country() {
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    env.add_merchant("bakery", "FR", "eur").await;

    let (s, loc) = env
        .post(
            &admin,
            "/v1/locations",
            json!({"display_name": "Bakery counter", "merchant": "bakery",
                   "address": {"line1": "1 rue de la Paix", "city": "Paris", "postal_code": "75002", "country": "fr"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{loc}");
    let id = loc["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("tml_"));
    assert_eq!(loc["merchant"], "bakery");
    assert_eq!(loc["address"]["country"], "FR");
    assert_eq!(loc["gone"], false);
    let req = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/v1/terminal/locations")
        .expect("the location was created on Stripe");
    assert_eq!(req.account, None, "as the platform, without Stripe-Account");
    assert!(req.idempotency_key.is_some(), "with an idempotency key");
    let on_stripe = env.stripe().retrieve_location(&id).await.unwrap();
    assert_eq!(
        on_stripe.metadata.get("readerd_merchant").unwrap(),
        "bakery"
    );

    // Another country than the merchant's account: refused, and Stripe is not asked.
    let before = stripe_posts(&env, "/v1/terminal/locations");
    let (s, e) = env
        .post(
            &admin,
            "/v1/locations",
            json!({"display_name": "Berlin", "merchant": "bakery", "address": {"city": "Berlin", "country": "DE"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "country_mismatch");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("DE") && msg.contains("FR") && msg.contains("bakery"),
        "{msg}"
    );
    assert_eq!(stripe_posts(&env, "/v1/terminal/locations"), before);

    // An unknown merchant, a missing country.
    let (s, e) = env
        .post(
            &admin,
            "/v1/locations",
            json!({"display_name": "X", "merchant": "nobody", "address": {"country": "FR"}}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = env
        .post(
            &admin,
            "/v1/locations",
            json!({"display_name": "X", "address": {"city": "Paris"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("country"));

    // Without a merchant: any country. The caller's Idempotency-Key makes a retried
    // create return the same location instead of a second one.
    let body = json!({"display_name": "Hall", "address": {"country": "DE"}});
    let mut created = Vec::new();
    for _ in 0..2 {
        let resp = env
            .http
            .post(format!("{}/v1/locations", env.api_url))
            .bearer_auth(&admin)
            .header("Idempotency-Key", "hall-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        created.push(resp.json::<Value>().await.unwrap()["id"].clone());
    }
    assert_eq!(created[0], created[1]);
    let other = created[0].as_str().unwrap().to_string();
    let (s, list) = env.get(&admin, "/v1/locations").await;
    assert_eq!(s, StatusCode::OK);
    let mut got = ids(&list);
    got.sort();
    let mut want = vec![id.clone(), other];
    want.sort();
    assert_eq!(got, want);
    let (s, one) = env.get(&admin, &format!("/v1/locations/{id}")).await;
    assert_eq!(
        (s, one["display_name"].clone()),
        (StatusCode::OK, json!("Bakery counter"))
    );
    env.stop().await;
}

#[tokio::test]
async fn readers_are_registered_on_stripe_and_bad_codes_refused() {
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    env.add_merchant("bakery", "FR", "eur").await;
    env.add_merchant("florist", "FR", "eur").await;
    let loc = env.add_location("Shop", "FR", Some("bakery")).await;

    let (s, r) = env
        .post(
            &admin,
            "/v1/readers",
            json!({"registration_code": "simulated-wpe", "label": "front", "location": loc}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("tmr_"));
    assert_eq!(r["label"], "front");
    assert_eq!(r["location"], loc.as_str());
    assert_eq!(r["status"], "online");
    assert_eq!(r["busy"], false);
    assert_eq!(r["queue_depth"], 0);
    assert!(r["worker"].as_str().is_some_and(|w| !w.is_empty()), "{r}");
    assert_eq!(r["merchants"], Value::Null);
    assert_eq!(r["device_type"], "simulated_wisepos_e");
    assert!(r["last_seen_at"].as_str().unwrap().ends_with('Z'));
    let req = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/v1/terminal/readers")
        .unwrap();
    assert_eq!(req.account, None);
    assert!(req.idempotency_key.is_some());

    // A refused code: Stripe's reason, nothing recorded.
    let (s, e) = env
        .post(
            &admin,
            "/v1/readers",
            json!({"registration_code": "purple-monkey-dishwasher", "label": "bad", "location": loc}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("purple-monkey-dishwasher"),
        "{e}"
    );
    // An unknown location.
    let (s, e) = env
        .post(
            &admin,
            "/v1/readers",
            json!({"registration_code": "simulated-wpe", "location": "tml_nope"}),
        )
        .await;
    assert!(s.is_client_error(), "{s} {e}");
    let (_, list) = env.get(&admin, "/v1/readers").await;
    assert_eq!(ids(&list), vec![id.clone()]);

    // Show by id and by label; restrict it to one merchant, then open it again.
    let (s, one) = env.get(&admin, &format!("/v1/readers/{id}")).await;
    assert_eq!((s, one["id"].clone()), (StatusCode::OK, json!(id)));
    let (s, one) = env.get(&admin, "/v1/readers/front").await;
    assert_eq!((s, one["id"].clone()), (StatusCode::OK, json!(id)));
    let (s, r) = env
        .post(
            &admin,
            &format!("/v1/readers/{id}"),
            json!({"merchants": ["florist"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["merchants"], json!(["florist"]));
    let on_stripe = env.stripe().retrieve_reader(&id).await.unwrap();
    assert_eq!(
        on_stripe
            .metadata
            .get("readerd_merchants")
            .map(String::as_str),
        Some("florist"),
        "the allowlist is kept on Stripe too, so a sync can restore it"
    );
    let (s, e) = env
        .post(
            &admin,
            &format!("/v1/readers/{id}"),
            json!({"merchants": []}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = env
        .post(
            &admin,
            &format!("/v1/readers/{id}"),
            json!({"merchants": ["nobody"]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = env
        .post(&admin, &format!("/v1/readers/{id}"), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, r) = env
        .post(
            &admin,
            &format!("/v1/readers/{id}"),
            json!({"merchants": null}),
        )
        .await;
    assert_eq!((s, r["merchants"].clone()), (StatusCode::OK, Value::Null));
    let record = env.state().fleet.reader(&id).unwrap().unwrap();
    assert!(record.serves("bakery") && record.serves("florist"));
    let on_stripe = env.stripe().retrieve_reader(&id).await.unwrap();
    assert!(!on_stripe.metadata.contains_key("readerd_merchants"));

    // A merchant in another country than the reader's location cannot be allowed on it.
    env.add_merchant("berlin", "DE", "eur").await;
    let (s, e) = env
        .post(
            &admin,
            &format!("/v1/readers/{id}"),
            json!({"merchants": ["bakery", "berlin"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "country_mismatch");
    let registrations = stripe_posts(&env, "/v1/terminal/readers");
    let (s, e) = env
        .post(
            &admin,
            "/v1/readers",
            json!({"registration_code": "simulated-wpe", "location": loc, "merchants": ["berlin"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "country_mismatch");
    assert_eq!(stripe_posts(&env, "/v1/terminal/readers"), registrations);

    // Registration with an allowlist.
    let (s, r) = env
        .post(
            &admin,
            "/v1/readers",
            json!({"registration_code": "simulated-s700", "label": "back", "location": loc, "merchants": ["bakery"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["merchants"], json!(["bakery"]));
    let (s, _) = env.get(&admin, "/v1/readers/tmr_unknown").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    env.stop().await;
}

#[tokio::test]
async fn sync_pulls_what_was_done_on_stripe_directly() {
    let env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    env.add_merchant("bakery", "FR", "eur").await;
    let loc = env.add_location("Shop", "FR", Some("bakery")).await;
    let ours = env.add_reader("front", &loc).await;

    // Behind the daemon's back: a location for the bakery, a reader, a reader going offline.
    let stripe = env.stripe();
    let mut metadata = readerd::stripe::wire::Metadata::new();
    metadata.insert("readerd_merchant".into(), "bakery".into());
    let direct_loc = stripe
        .create_location(
            &CreateLocation {
                display_name: "Kiosk".into(),
                address: Address {
                    country: Some("FR".into()),
                    city: Some("Lyon".into()),
                    ..Default::default()
                },
                metadata,
            },
            &RequestOptions::platform().key("test-direct-location"),
        )
        .await
        .unwrap();
    // As left by a crash between the registration on Stripe and the registry write: the
    // allowlist is on Stripe only.
    let direct = stripe
        .register_reader(
            &RegisterReader {
                registration_code: "simulated-wpe".into(),
                label: Some("kiosk".into()),
                location: Some(direct_loc.id.clone()),
                metadata: [("readerd_merchants".to_string(), "bakery".to_string())].into(),
            },
            &RequestOptions::platform().key("test-direct-reader"),
        )
        .await
        .unwrap();
    assert!(env.sim.set_reader_online(&ours, false));
    let (_, list) = env.get(&admin, "/v1/readers").await;
    assert!(!ids(&list).contains(&direct.id));
    // One reader read on demand: fresh status without a sync.
    let (_, r) = env.get(&admin, &format!("/v1/readers/{ours}")).await;
    assert_eq!(r["status"], "online", "the registry's state until asked");
    let (s, r) = env
        .get(&admin, &format!("/v1/readers/{ours}?refresh=true"))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "offline");
    assert!(r["checked_at"].as_str().unwrap().ends_with('Z'));
    let (s, e) = env
        .get(&admin, &format!("/v1/readers/{ours}?refresh=maybe"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = env
        .get(&admin, &format!("/v1/readers/{ours}?colour=red"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(env.sim.set_reader_online(&ours, true));
    let (_, r) = env
        .get(&admin, &format!("/v1/readers/{ours}?refresh=1"))
        .await;
    assert_eq!(r["status"], "online");
    assert!(env.sim.set_reader_online(&ours, false));

    let reads_before = env.sim.requests().len();
    let (s, report) = env.post(&admin, "/v1/readers/sync", json!(null)).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["readers"]["added"], 1, "{report}");
    assert_eq!(report["locations"]["added"], 1, "{report}");
    assert_eq!(report["readers"]["gone"], 0);
    let calls: Vec<_> = env.sim.requests()[reads_before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        calls.contains(&"GET /v1/terminal/locations".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"GET /v1/terminal/readers".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.iter().all(|c| c == "GET /v1/terminal/locations"
            || c == "GET /v1/terminal/readers"
            || c == "GET /v1/terminal/configurations"),
        "a sync is list calls only (locations, readers, configurations), no per-object reads: {calls:?}"
    );

    let (_, r) = env.get(&admin, &format!("/v1/readers/{}", direct.id)).await;
    assert_eq!(r["label"], "kiosk");
    assert_eq!(
        r["merchants"],
        json!(["bakery"]),
        "the allowlist comes back from Stripe"
    );
    assert_eq!(r["location"], direct_loc.id.as_str());
    assert_eq!(r["status"], "online");
    let (_, l) = env
        .get(&admin, &format!("/v1/locations/{}", direct_loc.id))
        .await;
    assert_eq!(
        l["merchant"], "bakery",
        "the merchant comes back from Stripe metadata"
    );
    let (_, r) = env.get(&admin, &format!("/v1/readers/{ours}")).await;
    assert_eq!(r["status"], "offline");

    // Deleted on Stripe: marked gone, not forgotten.
    stripe.delete_reader(&direct.id).await.unwrap();
    let (s, report) = env.post(&admin, "/v1/readers/sync", json!(null)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(report["readers"]["gone"], 1, "{report}");
    let (_, r) = env.get(&admin, &format!("/v1/readers/{}", direct.id)).await;
    assert_eq!(r["gone"], true);
    assert_eq!(r["status"], "offline");
    // A refresh of a reader Stripe no longer has marks it gone too.
    let extra = env.add_reader("extra", &loc).await;
    stripe.delete_reader(&extra).await.unwrap();
    let (s, r) = env
        .get(&admin, &format!("/v1/readers/{extra}?refresh=true"))
        .await;
    assert_eq!((s, r["gone"].clone()), (StatusCode::OK, json!(true)), "{r}");
    // A second sync changes nothing.
    let (_, report) = env.post(&admin, "/v1/readers/sync", json!(null)).await;
    assert_eq!(report["readers"]["gone"], 0);
    assert_eq!(report["readers"]["added"], 0);
    assert_eq!(report["locations"]["updated"], 0);
    env.stop().await;
}

#[tokio::test]
async fn the_initial_sync_runs_in_the_background_at_start() {
    let mut env = TestEnv::start().await;
    let loc = env.add_location("Shop", "FR", None).await;
    env.stop_daemon().await;
    let direct = env
        .stripe()
        .register_reader(
            &RegisterReader {
                registration_code: "simulated-wpe".into(),
                label: Some("while-down".into()),
                location: Some(loc),
                metadata: Default::default(),
            },
            &RequestOptions::platform().key("test-while-down"),
        )
        .await
        .unwrap();
    env.restart().await;
    // Wait for the background sync's outcome (bounded; not a timing assertion).
    let mut found = false;
    for _ in 0..200 {
        let (_, list) = env.get(&env.admin_token, "/v1/readers").await;
        if ids(&list).contains(&direct.id) {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        found,
        "the start-up sync imports the reader registered while the daemon was down"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_restart_on_the_same_store_keeps_everything() {
    let mut env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    env.add_merchant("bakery", "FR", "eur").await;
    env.add_merchant("florist", "FR", "eur").await;
    let loc = env.add_location("Shop", "FR", Some("bakery")).await;
    let reader = env.add_reader("front", &loc).await;
    let (s, _) = env
        .post(
            &admin,
            &format!("/v1/readers/{reader}"),
            json!({"merchants": ["florist"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut before = Vec::new();
    for path in ["/v1/merchants", "/v1/locations", "/v1/readers"] {
        before.push(env.get(&admin, path).await.1);
    }
    let old_url = env.api_url.clone();
    env.restart().await;
    assert_ne!(env.api_url, old_url, "a new daemon on a new port");
    for (i, path) in ["/v1/merchants", "/v1/locations", "/v1/readers"]
        .iter()
        .enumerate()
    {
        let (s, after) = env.get(&admin, path).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(ids(&after), ids(&before[i]), "{path}");
        if *path != "/v1/readers" {
            // Readers' last_seen_at may move with a background sync; the rest must not.
            assert_eq!(after, before[i], "{path}");
        }
    }
    let (_, r) = env.get(&admin, &format!("/v1/readers/{reader}")).await;
    assert_eq!(
        r["merchants"],
        json!(["florist"]),
        "the allowlist survives a restart"
    );
    env.stop().await;
}

#[tokio::test]
async fn stripe_unreachable_is_503_while_the_api_stays_up() {
    let env = TestEnv::builder()
        .configure(|c| {
            c.stripe.max_attempts = 1;
        })
        .start()
        .await;
    let admin = env.admin_token.clone();
    env.add_merchant("bakery", "FR", "eur").await;
    let (s, ready) = env.get("", "/readyz").await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    assert_eq!(ready["store"], "sled", "{ready}");
    assert!(
        ready["instance"].as_str().is_some_and(|i| !i.is_empty()),
        "{ready}"
    );

    env.sim.shutdown().await;
    let acct = "acct_1234567890abcdef";
    let (s, e) = env
        .post(
            &admin,
            "/v1/merchants",
            json!({"id": "late", "account": acct}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["error"]["code"], "stripe_unavailable");
    let (s, e) = env.post(&admin, "/v1/readers/sync", json!(null)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    let (s, e) = env.get("", "/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    // The registry still answers.
    let (s, list) = env.get(&admin, "/v1/merchants").await;
    assert_eq!(
        (s, ids(&list)),
        (StatusCode::OK, vec!["bakery".to_string()])
    );
    let (s, _) = env.get("", "/healthz").await;
    assert_eq!(s, StatusCode::OK);
    env.stop().await;
}

#[tokio::test]
async fn readyz_notices_stripe_gone_without_another_call() {
    let env = TestEnv::start().await;
    env.add_merchant("bakery", "FR", "eur").await;
    let (s, ready) = env.get("", "/readyz").await;
    assert_eq!(s, StatusCode::OK, "{ready}");

    // Nothing else talks to Stripe: an old success must not keep /readyz at 200.
    env.sim.shutdown().await;
    let (s, e) = env.get("", "/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["error"]["code"], "stripe_unavailable");
    env.stop().await;
}

#[tokio::test]
async fn the_daemon_starts_while_stripe_is_down() {
    let env = TestEnv::builder()
        .configure(|c| {
            // A port nothing listens on.
            c.stripe.api_base = "http://127.0.0.1:9".into();
            c.stripe.max_attempts = 1;
        })
        .start()
        .await;
    let (s, _) = env.get("", "/healthz").await;
    assert_eq!(s, StatusCode::OK);
    let (s, list) = env.get(&env.admin_token, "/v1/readers").await;
    assert_eq!((s, list), (StatusCode::OK, json!([])));
    let (s, e) = env.get("", "/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    env.stop().await;
}

#[tokio::test]
async fn a_lost_registry_is_rebuilt_from_stripe_by_the_sync() {
    let mut env = TestEnv::start().await;
    let admin = env.admin_token.clone();
    env.add_merchant("bakery", "FR", "eur").await;
    let loc = env.add_location("Shop", "FR", Some("bakery")).await;
    let reader = env.add_reader("front", &loc).await;
    let (s, _) = env
        .post(
            &admin,
            &format!("/v1/readers/{reader}"),
            json!({"merchants": ["bakery"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    env.stop_daemon().await;
    std::fs::remove_dir_all(&env.store_path).unwrap();
    env.restart().await;
    let mut rebuilt = None;
    for _ in 0..200 {
        let (_, r) = env.get(&admin, &format!("/v1/readers/{reader}")).await;
        if r["id"] == reader.as_str() {
            rebuilt = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let r = rebuilt.expect("the start-up sync restores the reader");
    assert_eq!(r["merchants"], json!(["bakery"]), "with its allowlist");
    assert_eq!(r["label"], "front");
    let (_, l) = env.get(&admin, &format!("/v1/locations/{loc}")).await;
    assert_eq!(l["merchant"], "bakery", "and the location's merchant");
    env.stop().await;
}
