//! Tipping per location through the daemon's API against the emulator: the Terminal
//! Configuration on Stripe's books and attached to the location, updated, removed, read
//! back by the sync, replayed with its key after a lost answer, and the tip screen of a
//! payment at that location with and without `tipping: false`.

use crate::common::TestEnv;
use readerd::sim::{FaultKind, FaultRule, Faults};
use readerd::stripe::params::{UpdateConfiguration, UpdateLocation};
use readerd::stripe::wire::{ActionStatus, CurrencyTipping, TerminalConfiguration, Tipping};
use readerd::stripe::RequestOptions;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

fn opts(account: Option<&str>) -> RequestOptions {
    match account {
        Some(a) => RequestOptions::account(a),
        None => RequestOptions::platform(),
    }
}

async fn configuration(env: &TestEnv, id: &str, account: Option<&str>) -> TerminalConfiguration {
    env.stripe()
        .retrieve_configuration(id, &opts(account))
        .await
        .expect("the configuration is on Stripe")
}

async fn attached(env: &TestEnv, location: &str, account: Option<&str>) -> Option<String> {
    env.stripe()
        .retrieve_location_on(location, &opts(account))
        .await
        .expect("the location is on Stripe")
        .configuration_overrides
}

/// Requests to Terminal Configurations the emulator saw, as `METHOD path`.
fn configuration_calls(env: &TestEnv) -> Vec<String> {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1/terminal/configurations"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn usd(percentages: &[i64]) -> Tipping {
    Tipping::from([(
        "usd".to_string(),
        CurrencyTipping {
            percentages: Some(percentages.to_vec()),
            ..Default::default()
        },
    )])
}

async fn set(env: &TestEnv, location: &str, body: Value) -> (StatusCode, Value) {
    env.post(&env.admin_token, &format!("/v1/locations/{location}"), body)
        .await
}

#[tokio::test]
async fn tipping_is_a_configuration_attached_to_the_location_updated_then_removed() {
    let env = TestEnv::start().await;
    let bar = env.add_location("Bar", "US", None).await;
    let (s, l) = env
        .get(&env.admin_token, &format!("/v1/locations/{bar}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["configuration"], Value::Null);
    assert_eq!(l["tipping"], Value::Null);

    // Set: created on the platform (the location's owner) and attached.
    let (s, l) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [10, 15, 20], "fixed_amounts": [100, 200, 300], "smart_tip_threshold": 1000}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let tmc = l["configuration"]
        .as_str()
        .expect("a configuration")
        .to_string();
    assert!(tmc.starts_with("tmc_"), "{l}");
    assert_eq!(
        l["tipping"],
        json!({"usd": {"percentages": [10, 15, 20], "fixed_amounts": [100, 200, 300], "smart_tip_threshold": 1000}})
    );
    assert_eq!(
        attached(&env, &bar, None).await.as_deref(),
        Some(tmc.as_str())
    );
    let c = configuration(&env, &tmc, None).await;
    let usd_tips = &c.tipping.as_ref().unwrap()["usd"];
    assert_eq!(usd_tips.percentages, Some(vec![10, 15, 20]));
    assert_eq!(usd_tips.fixed_amounts, Some(vec![100, 200, 300]));
    assert_eq!(usd_tips.smart_tip_threshold, Some(1000));
    let creates = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/terminal/configurations")
        .collect::<Vec<_>>();
    assert_eq!(creates.len(), 1);
    assert!(creates[0].idempotency_key.is_some(), "sent with its key");
    assert_eq!(creates[0].account, None, "on the platform");

    // Update: the same configuration, new suggestions, no second create.
    let (s, l) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [15, 18, 22]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["configuration"], tmc.as_str());
    assert_eq!(l["tipping"], json!({"usd": {"percentages": [15, 18, 22]}}));
    assert_eq!(
        configuration(&env, &tmc, None).await.tipping,
        Some(usd(&[15, 18, 22]))
    );

    // Remove: the configuration's tipping is unset, the configuration stays attached.
    let (s, l) = set(&env, &bar, json!({"tipping": null})).await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["tipping"], Value::Null);
    assert_eq!(l["configuration"], tmc.as_str());
    assert_eq!(configuration(&env, &tmc, None).await.tipping, None);
    assert_eq!(
        attached(&env, &bar, None).await.as_deref(),
        Some(tmc.as_str())
    );

    // Set again: one update of the same configuration.
    let (s, l) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [10]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["configuration"], tmc.as_str());
    let calls = configuration_calls(&env);
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "POST /v1/terminal/configurations")
            .count(),
        1,
        "one configuration ever created: {calls:?}"
    );

    // The list and a restart show it (the registry keeps it).
    let (_, list) = env.get(&env.admin_token, "/v1/locations").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == bar.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["tipping"], json!({"usd": {"percentages": [10]}}));
    let mut env = env;
    env.restart().await;
    let (_, l) = env
        .get(&env.admin_token, &format!("/v1/locations/{bar}"))
        .await;
    assert_eq!(l["configuration"], tmc.as_str());
    assert_eq!(l["tipping"], json!({"usd": {"percentages": [10]}}));
    // Removing tipping where there is no configuration sends nothing.
    let cloakroom = env.add_location("Cloakroom", "US", None).await;
    let before = configuration_calls(&env).len();
    let (s, l) = set(&env, &cloakroom, json!({"tipping": null})).await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["configuration"], Value::Null);
    assert_eq!(configuration_calls(&env).len(), before);
    env.stop().await;
}

#[tokio::test]
async fn a_merchant_owned_locations_configuration_is_on_the_merchants_account() {
    let env = TestEnv::start().await;
    let account = env.add_merchant("bakery", "FR", "eur").await;
    let (s, l) = env
        .post(
            &env.admin_token,
            "/v1/locations",
            json!({"display_name": "Bakery", "owner": "bakery",
                   "address": {"line1": "1 Rue", "city": "Paris", "postal_code": "75001", "country": "FR"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{l}");
    let shop = l["id"].as_str().unwrap().to_string();
    let (s, l) = set(
        &env,
        &shop,
        json!({"tipping": {"eur": {"fixed_amounts": [50, 100]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let tmc = l["configuration"].as_str().unwrap().to_string();
    assert_eq!(
        attached(&env, &shop, Some(&account)).await.as_deref(),
        Some(tmc.as_str())
    );
    assert!(configuration(&env, &tmc, Some(&account))
        .await
        .tipping
        .is_some());
    // Not the platform's.
    assert!(env
        .stripe()
        .retrieve_configuration(&tmc, &RequestOptions::platform())
        .await
        .is_err());
    for r in env.sim.requests() {
        let ours = r
            .path
            .starts_with(&format!("/v1/terminal/configurations/{tmc}"))
            || r.path == format!("/v1/terminal/locations/{shop}");
        if r.method == "POST" && (ours || r.path == "/v1/terminal/configurations") {
            assert_eq!(
                r.account.as_deref(),
                Some(account.as_str()),
                "{} {}",
                r.method,
                r.path
            );
        }
    }
    env.stop().await;
}

#[tokio::test]
async fn bad_tipping_is_refused_before_stripe_and_changes_nothing() {
    let env = TestEnv::start().await;
    let bar = env.add_location("Bar", "US", None).await;
    let (s, _) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [10, 15, 20]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, before) = env
        .get(&env.admin_token, &format!("/v1/locations/{bar}"))
        .await;
    let calls = configuration_calls(&env).len();
    let requests = env.sim.requests().len();
    for body in [
        json!({"tipping": {"usd": {"percentages": [5, 10, 15, 20]}}}),
        json!({"tipping": {"usd": {"fixed_amounts": [100, 200, 300, 400]}}}),
        json!({"tipping": {"usd": {"percentages": []}}}),
        json!({"tipping": {"usd": {"percentages": [0, 10]}}}),
        json!({"tipping": {"usd": {"fixed_amounts": [-5]}}}),
        json!({"tipping": {"usd": {}}}),
        json!({"tipping": {"usd": {"percentages": [10]}, "eur": {"fixed_amounts": [100]}}}),
        json!({"tipping": {"usd": {"percentages": [10], "smart_tip_threshold": 500}}}),
        json!({"tipping": {"xyz": {"percentages": [10]}}}),
        json!({"tipping": {"USD": {"percentages": [10]}}}),
        json!({"tipping": {}}),
        json!({"tipping": {"usd": {"percentages": ["ten"]}}}),
        json!({"tipping": {"usd": {"percent": [10]}}}),
        json!({"tipping": [10, 15]}),
        json!({}),
        json!({"display_name": "Pub"}),
    ] {
        let (s, e) = set(&env, &bar, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} → {e}");
    }
    // Unknown location, and a pos client.
    let (s, _) = set(
        &env,
        "tml_nothing",
        json!({"tipping": {"usd": {"percentages": [10]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = env
        .post(
            env.pos("bakery"),
            &format!("/v1/locations/{bar}"),
            json!({"tipping": null}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        configuration_calls(&env).len(),
        calls,
        "nothing sent to Stripe"
    );
    assert_eq!(
        env.sim.requests().len(),
        requests,
        "nothing sent to Stripe at all"
    );
    let (_, after) = env
        .get(&env.admin_token, &format!("/v1/locations/{bar}"))
        .await;
    assert_eq!(before, after, "the location is as it was");
    env.stop().await;
}

#[tokio::test]
async fn the_sync_reads_back_tipping_changed_on_stripe() {
    let env = TestEnv::start().await;
    let bar = env.add_location("Bar", "US", None).await;
    let (_, l) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [10, 15, 20]}}}),
    )
    .await;
    let tmc = l["configuration"].as_str().unwrap().to_string();
    let stripe = env.stripe();
    let platform = RequestOptions::platform();

    // Someone edits the configuration on Stripe (the Dashboard, say).
    stripe
        .update_configuration(
            &tmc,
            &UpdateConfiguration {
                tipping: Some(usd(&[18, 20, 25])),
            },
            &platform,
        )
        .await
        .unwrap();
    let (s, report) = env
        .post(&env.admin_token, "/v1/readers/sync", json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["locations"]["updated"], 1, "{report}");
    let (_, l) = env
        .get(&env.admin_token, &format!("/v1/locations/{bar}"))
        .await;
    assert_eq!(l["tipping"], json!({"usd": {"percentages": [18, 20, 25]}}));

    // A location and configuration made on Stripe directly are imported with their tipping.
    let other = stripe
        .create_configuration(
            &readerd::stripe::params::CreateConfiguration { tipping: usd(&[5]) },
            &platform,
        )
        .await
        .unwrap();
    let lounge = stripe
        .create_location(
            &readerd::stripe::params::CreateLocation {
                display_name: "Lounge".into(),
                address: readerd::stripe::wire::Address {
                    country: Some("US".into()),
                    ..Default::default()
                },
                metadata: Default::default(),
            },
            &platform,
        )
        .await
        .unwrap();
    stripe
        .update_location(
            &lounge.id,
            &UpdateLocation {
                configuration_overrides: Some(other.id.clone()),
                ..Default::default()
            },
            &platform,
        )
        .await
        .unwrap();
    // And the bar's configuration is detached on Stripe.
    stripe
        .update_location(
            &bar,
            &UpdateLocation {
                configuration_overrides: Some(String::new()),
                ..Default::default()
            },
            &platform,
        )
        .await
        .unwrap();
    let (s, report) = env
        .post(&env.admin_token, "/v1/readers/sync", json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let (_, l) = env
        .get(&env.admin_token, &format!("/v1/locations/{}", lounge.id))
        .await;
    assert_eq!(l["configuration"], other.id.as_str());
    assert_eq!(l["tipping"], json!({"usd": {"percentages": [5]}}));
    let (_, l) = env
        .get(&env.admin_token, &format!("/v1/locations/{bar}"))
        .await;
    assert_eq!(l["configuration"], Value::Null);
    assert_eq!(l["tipping"], Value::Null);

    // A configuration another location uses is not changed through this one.
    stripe
        .update_location(
            &bar,
            &UpdateLocation {
                configuration_overrides: Some(other.id.clone()),
                ..Default::default()
            },
            &platform,
        )
        .await
        .unwrap();
    env.post(&env.admin_token, "/v1/readers/sync", json!(null))
        .await;
    let (s, e) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [30]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(
        configuration(&env, &other.id, None).await.tipping,
        Some(usd(&[5]))
    );
    env.stop().await;
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_replayed_with_the_key_on_disk() {
    let env = TestEnv::start().await;
    let bar = env.add_location("Bar", "US", None).await;
    // Stripe makes the configuration, but no answer comes back, for longer than the
    // client retries.
    env.sim.set_faults(Faults {
        rules: vec![
            FaultRule::new(FaultKind::DropAfter, "POST", "/v1/terminal/configurations").times(1000),
        ],
        ..Faults::default()
    });
    let (s, e) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [10, 15, 20]}}}),
    )
    .await;
    assert!(s.is_server_error(), "{s} {e}");
    env.sim.set_faults(Faults::default());
    // A restart between: the key comes from the store.
    let mut env = env;
    env.restart().await;
    // Sent again without an Idempotency-Key: the step's key is on disk and replayed.
    let (s, l) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [10, 15, 20]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    let creates: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/terminal/configurations")
        .collect();
    assert!(creates.len() >= 2, "{creates:?}");
    let key = creates[0].idempotency_key.clone();
    assert!(key.is_some());
    assert!(
        creates.iter().all(|r| r.idempotency_key == key),
        "every attempt with the same key"
    );
    assert!(
        creates.last().unwrap().replayed,
        "Stripe answered from the key"
    );
    let all = env
        .stripe()
        .list_configurations_on(&RequestOptions::platform())
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "one configuration, not two: {all:?}");
    assert_eq!(l["configuration"], all[0].id.as_str());
    assert_eq!(attached(&env, &bar, None).await, Some(all[0].id.clone()));
    env.stop().await;
}

/// Waits (bounded) for `reader`'s `process_payment_intent` action, and returns its
/// `process_config[skip_tipping]`.
async fn skip_tipping_sent(env: &TestEnv, reader: &str) -> Option<bool> {
    for _ in 0..500 {
        let r = env.stripe().retrieve_reader(reader).await.unwrap();
        let waiting = r
            .action
            .filter(|a| a.status == ActionStatus::InProgress)
            .and_then(|a| a.process_payment_intent);
        if let Some(p) = waiting {
            return p.process_config.and_then(|c| c.skip_tipping);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no payment reached reader {reader}");
}

async fn wait_succeeded(env: &TestEnv, id: &str) -> Value {
    for _ in 0..500 {
        let (_, p) = env
            .get(&env.admin_token, &format!("/v1/payments/{id}"))
            .await;
        if p["status"] == "succeeded" {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("payment {id} never succeeded");
}

/// The customer taps a card after choosing suggestion `index` on the tip screen.
async fn tap_choosing_tip(env: &TestEnv, reader: &str, index: usize) {
    let r = env
        .http
        .post(format!(
            "{}/_sim/readers/{reader}/present",
            env.sim.base_url()
        ))
        .json(&json!({"tip_suggestion": index}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

#[tokio::test]
async fn a_payment_at_a_tipping_location_shows_the_tip_screen_unless_tipping_is_false() {
    let env = TestEnv::start().await;
    let account = env.add_merchant("diner", "US", "usd").await;
    let bar = env.add_location("Bar", "US", Some("diner")).await;
    let reader = env.add_reader("bar-1", &bar).await;
    let (s, l) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [10, 15, 20]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");

    for (tipping, skip, amount, tip) in [
        (None, None, 1150, Some(150)),
        (Some(false), Some(true), 1000, None),
    ] {
        let mut body =
            json!({"merchant": "diner", "reader": reader, "amount": 1000, "currency": "usd"});
        if let Some(t) = tipping {
            body["tipping"] = json!(t);
        }
        let (s, p) = env.post(&env.admin_token, "/v1/payments", body).await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        assert_eq!(skip_tipping_sent(&env, &reader).await, skip);
        // The customer picks 15 %: the tip screen is shown only without `tipping: false`.
        tap_choosing_tip(&env, &reader, 1).await;
        let p = wait_succeeded(&env, p["id"].as_str().unwrap()).await;
        let pi = env
            .stripe()
            .retrieve_payment_intent(
                p["payment_intent"].as_str().unwrap(),
                &[],
                &RequestOptions::account(&account),
            )
            .await
            .unwrap();
        assert_eq!(pi.amount, amount, "tipping {tipping:?}");
        assert_eq!(
            pi.amount_details.and_then(|d| d.tip).and_then(|t| t.amount),
            tip
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn a_step_stripe_refused_for_good_is_not_replayed() {
    let env = TestEnv::start().await;
    let bar = env.add_location("Bar", "US", None).await;
    // Stripe refuses the create for good and keeps that answer under its key (a replay
    // of the key would get the same refusal forever).
    env.sim.set_faults(Faults {
        rules: vec![FaultRule {
            status: Some(400),
            ..FaultRule::new(
                FaultKind::ErrorStored,
                "POST",
                "/v1/terminal/configurations",
            )
            .executed(false)
            .times(1)
        }],
        ..Faults::default()
    });
    let (s, e) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [10]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    // Another tipping afterwards: a fresh create, not the refused one's key and parameters.
    let (s, l) = set(
        &env,
        &bar,
        json!({"tipping": {"usd": {"percentages": [20]}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["tipping"], json!({"usd": {"percentages": [20]}}));
    let keys: Vec<_> = env
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/terminal/configurations")
        .map(|r| r.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(keys[0], keys[1]);
    env.stop().await;
}
