//! The emulator's Terminal Configurations, driven the way Stripe's docs describe: raw form
//! requests, Stripe's refusals, a location's `configuration_overrides`, and the tip screen
//! a reader at that location shows (or skips with `process_config[skip_tipping]`).

use crate::common::sim_client::{emulator, instant, world, Api};
use readerd::sim::SimConfig;
use readerd::stripe::form::Params;
use serde_json::{json, Value};
use std::time::Duration;

fn usd_tips() -> Params {
    let mut p = Params::new();
    p.push_list("tipping[usd][percentages]", &[10, 15, 20])
        .push_list("tipping[usd][fixed_amounts]", &[100, 200, 300])
        .push("tipping[usd][smart_tip_threshold]", 1000);
    p
}

async fn create(api: &Api, p: &Params, account: Option<&str>) -> Value {
    api.post("/v1/terminal/configurations", p, account)
        .await
        .ok()
}

async fn attach(api: &Api, location: &str, tmc: &str) -> crate::common::sim_client::Resp {
    let mut p = Params::new();
    p.push("configuration_overrides", tmc);
    api.post(&format!("/v1/terminal/locations/{location}"), &p, None)
        .await
}

#[tokio::test]
async fn configurations_are_created_read_updated_listed_and_deleted() {
    let (_sim, api) = instant().await;
    let c = create(&api, &usd_tips(), None).await;
    let id = c["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("tmc_"));
    assert_eq!(c["object"], "terminal.configuration");
    assert_eq!(c["is_account_default"], false);
    assert_eq!(
        c["tipping"]["usd"],
        json!({"percentages": [10, 15, 20], "fixed_amounts": [100, 200, 300], "smart_tip_threshold": 1000})
    );
    let got = api
        .get(
            &format!("/v1/terminal/configurations/{id}"),
            &Params::new(),
            None,
        )
        .await
        .ok();
    assert_eq!(got, c);

    // Update replaces the tipping; `tipping=""` unsets it.
    let mut p = Params::new();
    p.push_list("tipping[eur][percentages]", &[5, 10]);
    let v = api
        .post(&format!("/v1/terminal/configurations/{id}"), &p, None)
        .await
        .ok();
    assert_eq!(v["tipping"], json!({"eur": {"percentages": [5, 10]}}));
    let mut p = Params::new();
    p.push("tipping", "");
    let v = api
        .post(&format!("/v1/terminal/configurations/{id}"), &p, None)
        .await
        .ok();
    assert!(v.get("tipping").is_none(), "{v}");

    // Each account its own.
    let account = api.account("US").await;
    let theirs = create(&api, &usd_tips(), Some(&account)).await;
    let list = api
        .get("/v1/terminal/configurations", &Params::new(), None)
        .await
        .ok();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    api.get(
        &format!(
            "/v1/terminal/configurations/{}",
            theirs["id"].as_str().unwrap()
        ),
        &Params::new(),
        None,
    )
    .await
    .err(404, Some("resource_missing"));
    let mut q = Params::new();
    q.push("is_account_default", true);
    let none = api.get("/v1/terminal/configurations", &q, None).await.ok();
    assert_eq!(none["data"], json!([]));

    // Deleting it detaches it from the locations that named it.
    let location = api.location("Bar", "US").await;
    let v = attach(&api, &location, &id).await.ok();
    assert_eq!(v["configuration_overrides"], id.as_str());
    let d = api
        .delete(&format!("/v1/terminal/configurations/{id}"), None)
        .await
        .ok();
    assert_eq!(
        d,
        json!({"id": id, "object": "terminal.configuration", "deleted": true})
    );
    let l = api
        .get(
            &format!("/v1/terminal/locations/{location}"),
            &Params::new(),
            None,
        )
        .await
        .ok();
    assert!(l.get("configuration_overrides").is_none(), "{l}");
    api.get(
        &format!("/v1/terminal/configurations/{id}"),
        &Params::new(),
        None,
    )
    .await
    .err(404, Some("resource_missing"));
}

#[tokio::test]
async fn bad_tipping_and_unknown_configurations_are_refused_as_stripe_does() {
    let (_sim, api) = instant().await;
    let mut four = Params::new();
    four.push_list("tipping[usd][percentages]", &[5, 10, 15, 20]);
    let mut currency = Params::new();
    currency.push_list("tipping[xyz][percentages]", &[10]);
    let mut field = Params::new();
    field.push_list("tipping[usd][percent]", &[10]);
    let mut word = Params::new();
    word.push_list("tipping[usd][percentages]", &["ten"]);
    let mut mixed = Params::new();
    mixed
        .push_list("tipping[usd][percentages]", &[10])
        .push_list("tipping[eur][fixed_amounts]", &[100]);
    let mut splash = Params::new();
    splash.push("bbpos_wisepos_e[splashscreen]", "file_1");
    for (p, code) in [
        (four, None),
        (currency, Some("parameter_unknown")),
        (field, Some("parameter_unknown")),
        (word, Some("parameter_invalid_integer")),
        (mixed, None),
        (splash, Some("parameter_unknown")),
    ] {
        api.post("/v1/terminal/configurations", &p, None)
            .await
            .err(400, code);
    }
    assert_eq!(
        api.get("/v1/terminal/configurations", &Params::new(), None)
            .await
            .ok()["data"],
        json!([]),
        "nothing was created"
    );
    // An unknown configuration, or another account's, on a location.
    let location = api.location("Bar", "US").await;
    let e = attach(&api, &location, "tmc_nothing")
        .await
        .err(400, Some("resource_missing"));
    assert_eq!(e["param"], "configuration_overrides");
    let account = api.account("US").await;
    let theirs = create(&api, &usd_tips(), Some(&account)).await;
    attach(&api, &location, theirs["id"].as_str().unwrap())
        .await
        .err(400, Some("resource_missing"));
    api.post("/v1/terminal/configurations/tmc_nothing", &usd_tips(), None)
        .await
        .err(404, Some("resource_missing"));
}

/// Processes a 1,000 (or `eligible`) payment on a reader at a location with `usd_tips`;
/// the PaymentIntent after the customer tapped choosing the tip screen's suggestion 1.
async fn tipped(api: &Api, skip: bool, amount: i64, present: Value) -> Value {
    let w = world(api).await;
    let tmc = create(api, &usd_tips(), None).await;
    attach(api, &w.location, tmc["id"].as_str().unwrap())
        .await
        .ok();
    let pi = api.intent(None, amount, "automatic").await;
    let mut p = Params::new();
    p.push("payment_intent", &pi);
    if skip {
        p.push("process_config[skip_tipping]", true);
    }
    api.post(
        &format!("/v1/terminal/readers/{}/process_payment_intent", w.reader),
        &p,
        None,
    )
    .await
    .ok();
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/readers/{}/present", api.base, w.reader))
        .json(&present)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    api.get_intent(None, &pi).await
}

#[tokio::test]
async fn the_tip_screen_follows_the_locations_configuration_unless_skipped() {
    let (_sim, api) = instant().await;
    // From the threshold, percentages: 15 % of 2,000.
    let pi = tipped(&api, false, 2000, json!({"tip_suggestion": 1})).await;
    assert_eq!(pi["amount"], 2300);
    assert_eq!(pi["amount_details"]["tip"]["amount"], 300);
    // Below it, fixed amounts: the second is 200.
    let pi = tipped(&api, false, 500, json!({"tip_suggestion": 1})).await;
    assert_eq!(pi["amount"], 700);
    // skip_tipping: no tip screen, so no tip, whatever the customer would have chosen.
    let pi = tipped(&api, true, 2000, json!({"tip_suggestion": 1})).await;
    assert_eq!(pi["amount"], 2000);
    assert!(pi["amount_details"]["tip"]["amount"].is_null(), "{pi}");
    let pi = tipped(&api, true, 2000, json!({"amount_tip": 150})).await;
    assert_eq!(pi["amount"], 2000);
}

#[tokio::test]
async fn the_simulated_customer_picks_the_first_suggestion() {
    let (_sim, api) = emulator(SimConfig {
        auth_delay: Duration::ZERO,
        auto_present: Some(Duration::from_millis(10)),
        ..SimConfig::default()
    })
    .await;
    let w = world(&api).await;
    let tmc = create(&api, &usd_tips(), None).await;
    attach(&api, &w.location, tmc["id"].as_str().unwrap())
        .await
        .ok();
    let pi = api.intent(None, 2000, "automatic").await;
    api.process(&w.reader, &pi).await.ok();
    for _ in 0..200 {
        let v = api.get_intent(None, &pi).await;
        if v["status"] == "succeeded" {
            assert_eq!(v["amount"], 2200, "10 % of 2,000");
            assert_eq!(v["amount_details"]["tip"]["amount"], 200);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the simulated customer never paid");
}
