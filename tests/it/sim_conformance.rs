//! The emulator driven over HTTP through Stripe's documented server-driven flows; every
//! object it returns is checked against the wire types and Stripe's schema.

use crate::common::get_json;
use crate::common::sim_client::{check, emulator, instant, world, Api};
use readerd::sim::SimConfig;
use readerd::stripe::form::Params;
use readerd::stripe::wire::CapabilityStatus;
use serde_json::{json, Value};
use std::time::Duration;

fn params(pairs: &[(&str, &str)]) -> Params {
    let mut p = Params::new();
    for (k, v) in pairs {
        p.push(*k, *v);
    }
    p
}

#[tokio::test]
async fn authentication_is_required_and_every_response_has_a_request_id() {
    let (sim, api) = instant().await;
    let none = Api::new(&sim).with_key("");
    let r = none.get("/v1/terminal/readers", &Params::new(), None).await;
    assert!(r.header("request-id").unwrap().starts_with("req_"));
    r.err(401, None);
    let bad = Api::new(&sim).with_key("pk_test_nope");
    let r = bad.get("/v1/terminal/readers", &Params::new(), None).await;
    let e = r.err(401, None);
    assert!(!e["message"].as_str().unwrap().contains("pk_test_nope"));
    // HTTP Basic with the key as user name, as `curl -u sk_test_…:` sends it.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/terminal/readers", sim.base_url()))
        .basic_auth("sk_test_basic", Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("request-id").is_some());
    let list: Value = resp.json().await.unwrap();
    check("list", &list);
    assert_eq!(list["url"], "/v1/terminal/readers");
    let r = api.get("/v1/nothing_here", &Params::new(), None).await;
    assert!(r.header("request-id").is_some());
    r.err(404, None);
}

#[tokio::test]
async fn registration_codes_give_simulated_device_types_and_others_are_refused() {
    let (_sim, api) = instant().await;
    let loc = api.location("HQ", "US").await;
    for (code, device) in [
        ("simulated-wpe", "simulated_wisepos_e"),
        ("simulated-s700", "simulated_stripe_s700"),
        ("simulated-s710", "simulated_stripe_s710"),
    ] {
        let v = api
            .post(
                "/v1/terminal/readers",
                &params(&[("registration_code", code), ("location", &loc)]),
                None,
            )
            .await
            .ok();
        check("terminal.reader", &v);
        assert_eq!(v["device_type"], device);
        assert!(v["serial_number"].as_str().unwrap().starts_with(code));
        assert_eq!(v["status"], "online");
        assert!(v["action"].is_null());
        assert_eq!(v["location"], loc.as_str());
        // Milliseconds, unlike every other Stripe timestamp.
        assert!(v["last_seen_at"].as_i64().unwrap() > 1_000_000_000_000);
    }
    let e = api
        .post(
            "/v1/terminal/readers",
            &params(&[("registration_code", "sepia-cerulean-aqua")]),
            None,
        )
        .await
        .err(400, None);
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "registration_code");
    api.post("/v1/terminal/readers", &Params::new(), None)
        .await
        .err(400, Some("parameter_missing"));
    let e = api
        .post(
            "/v1/terminal/readers",
            &params(&[
                ("registration_code", "simulated-wpe"),
                ("location", "tml_nope"),
            ]),
            None,
        )
        .await
        .err(400, Some("resource_missing"));
    assert_eq!(e["param"], "location");
}

#[tokio::test]
async fn locations_and_readers_have_crud_and_cursor_pagination() {
    let (_sim, api) = instant().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(api.location(&format!("Store {i}"), "US").await);
    }
    // Newest first, two per page.
    let page = |q: Params| {
        let api = &api;
        async move {
            let v = api.get("/v1/terminal/locations", &q, None).await.ok();
            check("list", &v);
            let got: Vec<String> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    check("terminal.location", l);
                    l["id"].as_str().unwrap().to_string()
                })
                .collect();
            (got, v["has_more"].as_bool().unwrap())
        }
    };
    let (p1, more) = page(params(&[("limit", "2")])).await;
    assert_eq!(p1, vec![ids[4].clone(), ids[3].clone()]);
    assert!(more);
    let (p2, more) = page(params(&[("limit", "2"), ("starting_after", &ids[3])])).await;
    assert_eq!(p2, vec![ids[2].clone(), ids[1].clone()]);
    assert!(more);
    let (p3, more) = page(params(&[("limit", "2"), ("starting_after", &ids[1])])).await;
    assert_eq!(p3, vec![ids[0].clone()]);
    assert!(!more);
    let (back, more) = page(params(&[("limit", "2"), ("ending_before", &ids[1])])).await;
    assert_eq!(back, vec![ids[3].clone(), ids[2].clone()]);
    assert!(more);
    api.get("/v1/terminal/locations", &params(&[("limit", "0")]), None)
        .await
        .err(400, Some("parameter_invalid_integer"));

    // Update, with metadata set and removed.
    let path = format!("/v1/terminal/locations/{}", ids[0]);
    let v = api
        .post(
            &path,
            &params(&[
                ("display_name", "Renamed"),
                ("metadata[a]", "1"),
                ("metadata[b]", "2"),
            ]),
            None,
        )
        .await
        .ok();
    check("terminal.location", &v);
    assert_eq!(v["display_name"], "Renamed");
    let v = api
        .post(&path, &params(&[("metadata[a]", "")]), None)
        .await
        .ok();
    assert_eq!(v["metadata"], serde_json::json!({"b": "2"}));
    let d = api.delete(&path, None).await.ok();
    assert_eq!(d["deleted"], true);
    assert_eq!(d["object"], "terminal.location");
    api.get(&path, &Params::new(), None)
        .await
        .err(404, Some("resource_missing"));

    // Readers: label update, filters, delete.
    let loc = ids[1].clone();
    let r1 = api.reader(&loc).await;
    let r2 = api.reader(&ids[2]).await;
    let v = api
        .post(
            &format!("/v1/terminal/readers/{r1}"),
            &params(&[("label", "Front desk")]),
            None,
        )
        .await
        .ok();
    check("terminal.reader", &v);
    assert_eq!(v["label"], "Front desk");
    let l = api
        .get("/v1/terminal/readers", &params(&[("location", &loc)]), None)
        .await
        .ok();
    let got: Vec<&str> = l["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![r1.as_str()]);
    let d = api
        .delete(&format!("/v1/terminal/readers/{r2}"), None)
        .await
        .ok();
    assert_eq!(d["deleted"], true);
    assert_eq!(d["device_type"], "simulated_wisepos_e");
    api.get(&format!("/v1/terminal/readers/{r2}"), &Params::new(), None)
        .await
        .err(404, Some("resource_missing"));
}

#[tokio::test]
async fn accounts_are_created_listed_and_their_capability_gates_payments() {
    let (sim, api) = instant().await;
    let a = api.account("DE").await;
    let v = api
        .get(&format!("/v1/accounts/{a}"), &Params::new(), None)
        .await
        .ok();
    check("account", &v);
    assert_eq!(v["capabilities"]["card_payments"], "active");
    assert_eq!(v["charges_enabled"], true);
    assert_eq!(v["country"], "DE");
    assert_eq!(v["default_currency"], "eur");
    let l = api.get("/v1/accounts", &Params::new(), None).await.ok();
    check("list", &l);
    assert_eq!(l["data"][0]["id"], a.as_str());
    // Without the capability requested it is not active.
    let v = api
        .post(
            "/v1/accounts",
            &params(&[("type", "custom"), ("country", "US")]),
            None,
        )
        .await
        .ok();
    check("account", &v);
    assert_eq!(v["charges_enabled"], false);

    let r = reqwest::Client::new()
        .post(format!("{}/_sim/accounts/{a}/capabilities", sim.base_url()))
        .body(r#"{"card_payments": "inactive"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = api
        .get(&format!("/v1/accounts/{a}"), &Params::new(), None)
        .await
        .ok();
    assert_eq!(v["capabilities"]["card_payments"], "inactive");
    assert_eq!(v["charges_enabled"], false);
    let mut p = Params::new();
    p.push("amount", 1000)
        .push("currency", "eur")
        .push_list("payment_method_types", &["card_present"]);
    api.post("/v1/payment_intents", &p, Some(&a))
        .await
        .err(400, Some("payment_method_unactivated"));
    assert!(sim.set_capability(&a, CapabilityStatus::Active));
    api.post("/v1/payment_intents", &p, Some(&a)).await.ok();
    // An account the platform does not have.
    api.get("/v1/payment_intents", &Params::new(), Some("acct_unknown"))
        .await
        .err(403, Some("account_invalid"));
}

/// Stripe's Capability object (`GET /v1/accounts/{id}/capabilities/card_payments`), which
/// adds `unrequested` to what the Account's `capabilities` hash shows.
#[tokio::test]
async fn capabilities_are_retrieved_and_listed_like_stripe() {
    let (sim, api) = instant().await;
    let a = api.account("DE").await;
    let v = api
        .get(
            &format!("/v1/accounts/{a}/capabilities/card_payments"),
            &Params::new(),
            None,
        )
        .await
        .ok();
    assert_eq!(v["object"], "capability");
    assert_eq!(v["id"], "card_payments");
    assert_eq!(v["account"], a.as_str());
    assert_eq!(v["requested"], true);
    assert_eq!(v["status"], "active");
    assert!(v["requirements"]["currently_due"].is_array(), "{v}");

    let bare = api
        .post("/v1/accounts", &params(&[("country", "DE")]), None)
        .await
        .ok();
    let b = bare["id"].as_str().unwrap().to_string();
    let v = api
        .get(
            &format!("/v1/accounts/{b}/capabilities/card_payments"),
            &Params::new(),
            None,
        )
        .await
        .ok();
    assert_eq!(
        (v["status"].as_str(), v["requested"].as_bool()),
        (Some("unrequested"), Some(false))
    );

    assert!(sim.set_capability(&a, CapabilityStatus::Pending));
    let l = api
        .get(
            &format!("/v1/accounts/{a}/capabilities"),
            &Params::new(),
            None,
        )
        .await
        .ok();
    assert_eq!(l["object"], "list");
    let card = l["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "card_payments")
        .cloned()
        .unwrap();
    assert_eq!(card["status"], "pending");
    assert_eq!(
        card["requirements"]["disabled_reason"],
        "requirements.pending_verification"
    );

    // The account itself may read it; another account and an unknown capability may not.
    api.get(
        &format!("/v1/accounts/{a}/capabilities/card_payments"),
        &Params::new(),
        Some(&a),
    )
    .await
    .ok();
    api.get(
        &format!("/v1/accounts/{a}/capabilities/card_payments"),
        &Params::new(),
        Some(&b),
    )
    .await
    .err(404, Some("resource_missing"));
    api.get(
        &format!("/v1/accounts/{a}/capabilities/no_such_capability"),
        &Params::new(),
        None,
    )
    .await
    .err(404, Some("resource_missing"));
}

#[tokio::test]
async fn payment_intent_parameters_are_validated_like_stripe() {
    let (_sim, api) = instant().await;
    let a = api.account("US").await;
    let e = api
        .post(
            "/v1/payment_intents",
            &params(&[("currency", "usd")]),
            Some(&a),
        )
        .await
        .err(400, Some("parameter_missing"));
    assert_eq!(e["param"], "amount");
    let e = api
        .post(
            "/v1/payment_intents",
            &params(&[("amount", "10"), ("currency", "usd")]),
            Some(&a),
        )
        .await
        .err(400, Some("amount_too_small"));
    assert_eq!(e["param"], "amount");
    api.post(
        "/v1/payment_intents",
        &params(&[("amount", "100000000"), ("currency", "usd")]),
        Some(&a),
    )
    .await
    .err(400, Some("amount_too_large"));
    api.post(
        "/v1/payment_intents",
        &params(&[("amount", "ten"), ("currency", "usd")]),
        Some(&a),
    )
    .await
    .err(400, Some("parameter_invalid_integer"));
    let e = api
        .post(
            "/v1/payment_intents",
            &params(&[("amount", "1000"), ("currency", "usd"), ("colour", "red")]),
            Some(&a),
        )
        .await
        .err(400, Some("parameter_unknown"));
    assert_eq!(e["param"], "colour");
    let mut p = params(&[
        ("amount", "1250"),
        ("currency", "USD"),
        ("capture_method", "manual"),
        ("application_fee_amount", "100"),
        ("description", "Two coffees"),
        ("metadata[readerd_payment]", "pay_1"),
    ]);
    p.push_list("payment_method_types", &["card_present"]);
    let v = api.post("/v1/payment_intents", &p, Some(&a)).await.ok();
    check("payment_intent", &v);
    assert_eq!(v["currency"], "usd");
    assert_eq!(v["status"], "requires_payment_method");
    assert_eq!(v["application_fee_amount"], 100);
    assert_eq!(v["metadata"]["readerd_payment"], "pay_1");
    // A fee on a platform charge needs a destination.
    api.post(
        "/v1/payment_intents",
        &params(&[
            ("amount", "1000"),
            ("currency", "usd"),
            ("application_fee_amount", "10"),
        ]),
        None,
    )
    .await
    .err(400, None);
    // Destination charge on the platform.
    let v = api
        .post(
            "/v1/payment_intents",
            &params(&[
                ("amount", "1000"),
                ("currency", "usd"),
                ("application_fee_amount", "10"),
                ("transfer_data[destination]", &a),
                ("on_behalf_of", &a),
            ]),
            None,
        )
        .await
        .ok();
    check("payment_intent", &v);
    assert_eq!(v["transfer_data"]["destination"], a.as_str());
    assert_eq!(v["on_behalf_of"], a.as_str());
    // Update and list.
    let id = v["id"].as_str().unwrap();
    let u = api
        .post(
            &format!("/v1/payment_intents/{id}"),
            &params(&[("amount", "1500"), ("metadata[k]", "v")]),
            None,
        )
        .await
        .ok();
    check("payment_intent", &u);
    assert_eq!(u["amount"], 1500);
    let l = api
        .get("/v1/payment_intents", &Params::new(), None)
        .await
        .ok();
    check("list", &l);
    assert_eq!(l["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn automatic_capture_succeeds_on_a_platform_reader_for_a_connected_account() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    let v = api.process(&w.reader, &pi).await.ok();
    check("terminal.reader", &v);
    assert_eq!(v["action"]["type"], "process_payment_intent");
    assert_eq!(v["action"]["status"], "in_progress");
    assert_eq!(
        v["action"]["process_payment_intent"]["payment_intent"],
        pi.as_str()
    );
    assert_eq!(
        v["action"]["process_payment_intent"]["account"],
        w.account.as_str()
    );
    let mut p = Params::new();
    p.push("amount_tip", 150);
    let v = api
        .post(
            &format!(
                "/v1/test_helpers/terminal/readers/{}/present_payment_method",
                w.reader
            ),
            &p,
            None,
        )
        .await
        .ok();
    check("terminal.reader", &v);
    assert_eq!(v["action"]["status"], "succeeded");
    let v = api.get_intent(Some(&w.account), &pi).await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["amount"], 1150);
    assert_eq!(v["amount_received"], 1150);
    assert_eq!(v["amount_details"]["tip"]["amount"], 150);
    let cp = &v["latest_charge"]["payment_method_details"]["card_present"];
    assert_eq!(cp["brand"], "visa");
    assert_eq!(cp["last4"], "4242");
    assert_eq!(cp["reader"], w.reader.as_str());
    assert_eq!(cp["location"], w.location.as_str());
    assert_eq!(cp["amount_authorized"], 1150);
    assert!(v["payment_method"].as_str().unwrap().starts_with("pm_"));
    // The PaymentIntent is the connected account's: the platform does not see it.
    api.get(&format!("/v1/payment_intents/{pi}"), &Params::new(), None)
        .await
        .err(404, Some("resource_missing"));
    assert_eq!(sim.payment_intent_count(Some(&w.account)), 1);
    assert_eq!(sim.payment_intent_count(None), 0);
}

#[tokio::test]
async fn a_decline_returns_the_intent_for_a_retry_on_the_same_payment_intent() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 2000, "manual").await;
    api.process(&w.reader, &pi).await.ok();
    let v = api.present(&w.reader, Some("4000000000009995")).await.ok();
    check("terminal.reader", &v);
    let action = &v["action"];
    assert_eq!(action["status"], "failed");
    assert_eq!(action["failure_code"], "card_declined");
    assert!(action["failure_message"].is_string());
    assert_eq!(action["api_error"]["type"], "card_error");
    assert_eq!(action["api_error"]["decline_code"], "insufficient_funds");
    let v = api.get_intent(Some(&w.account), &pi).await;
    assert_eq!(v["status"], "requires_payment_method");
    assert_eq!(v["last_payment_error"]["code"], "card_declined");
    assert_eq!(
        v["last_payment_error"]["decline_code"],
        "insufficient_funds"
    );
    assert_eq!(v["latest_charge"]["status"], "failed");
    // The same PaymentIntent goes back to the reader and succeeds.
    api.process(&w.reader, &pi).await.ok();
    let v = api.present(&w.reader, None).await.ok();
    assert_eq!(v["action"]["status"], "succeeded");
    let v = api.get_intent(Some(&w.account), &pi).await;
    assert_eq!(v["status"], "requires_capture");
    assert_eq!(v["amount_capturable"], 2000);
    assert!(v["last_payment_error"].is_null());

    // The other test cards and test amounts.
    for (card, amount, code, decline) in [
        (
            "4000000000000002",
            1000,
            "card_declined",
            Some("generic_decline"),
        ),
        ("4000000000009987", 1000, "card_declined", Some("lost_card")),
        (
            "4000000000009979",
            1000,
            "card_declined",
            Some("stolen_card"),
        ),
        (
            "4000000000000069",
            1000,
            "expired_card",
            Some("expired_card"),
        ),
        (
            "4000000000000119",
            1000,
            "processing_error",
            Some("processing_error"),
        ),
        (
            "4242424242424242",
            1005,
            "card_declined",
            Some("generic_decline"),
        ),
        (
            "4242424242424242",
            1001,
            "card_declined",
            Some("call_issuer"),
        ),
        (
            "4242424242424242",
            1075,
            "card_declined",
            Some("pin_try_exceeded"),
        ),
    ] {
        let pi = api.intent(Some(&w.account), amount, "automatic").await;
        api.process(&w.reader, &pi).await.ok();
        let v = api.present(&w.reader, Some(card)).await.ok();
        assert_eq!(v["action"]["status"], "failed", "{card} {amount}");
        assert_eq!(v["action"]["failure_code"], code);
        let pi = api.get_intent(Some(&w.account), &pi).await;
        assert_eq!(pi["last_payment_error"]["code"], code);
        assert_eq!(
            pi["last_payment_error"]["decline_code"].as_str(),
            decline,
            "{card} {amount}"
        );
    }
}

#[tokio::test]
async fn manual_capture_partial_capture_and_refund_limits() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let a = Some(w.account.as_str());
    let pi = api.intent(a, 5000, "manual").await;
    api.process(&w.reader, &pi).await.ok();
    api.present(&w.reader, Some("5555555555554444")).await.ok();
    let v = api.get_intent(a, &pi).await;
    assert_eq!(v["status"], "requires_capture");
    let cp = &v["latest_charge"]["payment_method_details"]["card_present"];
    assert_eq!(cp["brand"], "mastercard");
    let created = v["latest_charge"]["created"].as_i64().unwrap();
    // Two days for a Mastercard.
    assert_eq!(cp["capture_before"].as_i64().unwrap() - created, 2 * 86400);
    // Refunding an uncaptured payment is refused.
    let mut rp = Params::new();
    rp.push("payment_intent", &pi);
    api.post("/v1/refunds", &rp, a)
        .await
        .err(400, Some("charge_not_refundable"));
    let path = format!("/v1/payment_intents/{pi}/capture");
    api.post(&path, &params(&[("amount_to_capture", "6000")]), a)
        .await
        .err(400, Some("amount_too_large"));
    let v = api
        .post(&path, &params(&[("amount_to_capture", "3000")]), a)
        .await
        .ok();
    check("payment_intent", &v);
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["amount_received"], 3000);
    assert_eq!(v["amount_capturable"], 0);
    api.post(&path, &Params::new(), a)
        .await
        .err(400, Some("payment_intent_unexpected_state"));
    api.post(
        &format!("/v1/payment_intents/{pi}/cancel"),
        &Params::new(),
        a,
    )
    .await
    .err(400, Some("payment_intent_unexpected_state"));
    // Refunds add up to at most what was captured.
    let mut p = rp.clone();
    p.push("amount", 3001);
    api.post("/v1/refunds", &p, a)
        .await
        .err(400, Some("amount_too_large"));
    let mut p = rp.clone();
    p.push("amount", 1000);
    let r = api.post("/v1/refunds", &p, a).await.ok();
    check("refund", &r);
    assert_eq!(r["amount"], 1000);
    assert_eq!(r["status"], "succeeded");
    let r = api.post("/v1/refunds", &rp, a).await.ok();
    assert_eq!(r["amount"], 2000);
    api.post("/v1/refunds", &rp, a)
        .await
        .err(400, Some("charge_already_refunded"));
    let v = api.get_intent(a, &pi).await;
    let charge = api
        .get(
            &format!("/v1/charges/{}", v["latest_charge"]["id"].as_str().unwrap()),
            &Params::new(),
            a,
        )
        .await
        .ok();
    assert_eq!(charge["amount_refunded"], 3000);
    assert_eq!(v["latest_charge"]["amount_refunded"], 3000);
    assert_eq!(v["latest_charge"]["refunded"], true);
    assert_eq!(v["latest_charge"]["amount_captured"], 3000);
    // Refunds of a connected account's payment are not the platform's.
    api.post("/v1/refunds", &rp, None)
        .await
        .err(400, Some("resource_missing"));
}

#[tokio::test]
async fn cancel_action_before_the_card_then_cancel_the_payment_intent() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let a = Some(w.account.as_str());
    let pi = api.intent(a, 1000, "manual").await;
    api.process(&w.reader, &pi).await.ok();
    let v = api.cancel_action(&w.reader).await.ok();
    check("terminal.reader", &v);
    assert!(v["action"].is_null());
    assert!(api.get_reader(&w.reader).await["action"].is_null());
    // Nothing to present to any more.
    api.present(&w.reader, None).await.err(400, None);
    let v = api
        .post(
            &format!("/v1/payment_intents/{pi}/cancel"),
            &params(&[("cancellation_reason", "requested_by_customer")]),
            a,
        )
        .await
        .ok();
    check("payment_intent", &v);
    assert_eq!(v["status"], "canceled");
    assert_eq!(v["cancellation_reason"], "requested_by_customer");
    assert!(v["canceled_at"].is_i64());
    // A canceled PaymentIntent can no longer be processed, captured or canceled.
    let e = api
        .process(&w.reader, &pi)
        .await
        .err(400, Some("intent_invalid_state"));
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("requires_payment_method"));
    api.post(
        &format!("/v1/payment_intents/{pi}/capture"),
        &Params::new(),
        a,
    )
    .await
    .err(400, Some("payment_intent_unexpected_state"));
    api.post(
        &format!("/v1/payment_intents/{pi}/cancel"),
        &Params::new(),
        a,
    )
    .await
    .err(400, Some("payment_intent_unexpected_state"));
    // Cancelling an authorised PaymentIntent releases the hold.
    let pi = api.intent(a, 1000, "manual").await;
    api.process(&w.reader, &pi).await.ok();
    api.present(&w.reader, None).await.ok();
    let v = api
        .post(
            &format!("/v1/payment_intents/{pi}/cancel"),
            &Params::new(),
            a,
        )
        .await
        .ok();
    assert_eq!(v["status"], "canceled");
    assert_eq!(v["amount_capturable"], 0);
}

#[tokio::test]
async fn reader_display_and_action_is_kept_until_replaced() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let mut p = Params::new();
    p.push("type", "cart")
        .push("cart[currency]", "usd")
        .push("cart[tax]", 100)
        .push("cart[total]", 1000)
        .push_indexed("cart[line_items]", 2, |i, it| {
            it.push("description", ["Tea", "Cake"][i])
                .push("amount", 450)
                .push("quantity", 1);
        });
    let v = api
        .post(
            &format!("/v1/terminal/readers/{}/set_reader_display", w.reader),
            &p,
            None,
        )
        .await
        .ok();
    check("terminal.reader", &v);
    assert_eq!(v["action"]["type"], "set_reader_display");
    assert_eq!(
        v["action"]["set_reader_display"]["cart"]["line_items"][1]["description"],
        "Cake"
    );
    // A payment replaces the display.
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    api.process(&w.reader, &pi).await.ok();
    api.present(&w.reader, None).await.ok();
    // The finished action stays on the reader.
    let v = api.get_reader(&w.reader).await;
    assert_eq!(v["action"]["type"], "process_payment_intent");
    assert_eq!(v["action"]["status"], "succeeded");
}

#[tokio::test(start_paused = true)]
async fn one_action_at_a_time_and_no_cancel_during_authorisation() {
    let (_sim, api) = emulator(SimConfig {
        auth_delay: Duration::from_secs(3),
        ..SimConfig::default()
    })
    .await;
    let w = world(&api).await;
    let a = Some(w.account.as_str());
    let pi = api.intent(a, 1000, "automatic").await;
    let other = api.intent(a, 1000, "automatic").await;
    api.process(&w.reader, &pi).await.ok();
    api.process(&w.reader, &other)
        .await
        .err(400, Some("terminal_reader_busy"));
    let v = api.present(&w.reader, None).await.ok();
    assert_eq!(v["action"]["status"], "in_progress");
    api.cancel_action(&w.reader)
        .await
        .err(400, Some("terminal_reader_busy"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let v = api.get_reader(&w.reader).await;
    assert_eq!(v["action"]["status"], "succeeded");
    assert_eq!(api.get_intent(a, &pi).await["status"], "succeeded");
    // Now idle: the next payment is accepted.
    api.process(&w.reader, &other).await.ok();
}

#[tokio::test]
async fn offline_readers_refuse_commands_until_back_online() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    let r = reqwest::Client::new()
        .post(format!(
            "{}/_sim/readers/{}/offline",
            sim.base_url(),
            w.reader
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = api.get_reader(&w.reader).await;
    assert_eq!(v["status"], "offline");
    let seen = v["last_seen_at"].as_i64().unwrap();
    api.process(&w.reader, &pi)
        .await
        .err(400, Some("terminal_reader_offline"));
    api.cancel_action(&w.reader)
        .await
        .err(400, Some("terminal_reader_offline"));
    let l = api
        .get(
            "/v1/terminal/readers",
            &params(&[("status", "offline")]),
            None,
        )
        .await
        .ok();
    assert_eq!(l["data"].as_array().unwrap().len(), 1);
    assert_eq!(api.get_reader(&w.reader).await["last_seen_at"], seen);
    assert!(sim.set_reader_online(&w.reader, true));
    api.process(&w.reader, &pi).await.ok();
}

#[tokio::test]
async fn idempotency_replays_refuses_mismatches_and_stores_no_validation_failure() {
    let (sim, api) = instant().await;
    let a = api.account("US").await;
    let mut p = Params::new();
    p.push("amount", 1000)
        .push("currency", "usd")
        .push_list("payment_method_types", &["card_present"]);
    let first = api
        .post_key("/v1/payment_intents", &p, Some(&a), "key-1")
        .await;
    let second = api
        .post_key("/v1/payment_intents", &p, Some(&a), "key-1")
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.body, second.body);
    assert_eq!(sim.payment_intent_count(Some(&a)), 1);
    // Other parameters, or another endpoint, with the same key.
    let mut p2 = p.clone();
    p2.push("description", "other");
    let e = api
        .post_key("/v1/payment_intents", &p2, Some(&a), "key-1")
        .await
        .err(400, None);
    assert_eq!(e["type"], "idempotency_error");
    let e = api
        .post_key("/v1/refunds", &p, Some(&a), "key-1")
        .await
        .err(400, None);
    assert_eq!(e["type"], "idempotency_error");
    // Keys are per account: the platform may use the same key for something else.
    let mut p3 = p.clone();
    p3.push("description", "platform");
    api.post_key("/v1/payment_intents", &p3, None, "key-1")
        .await
        .ok();
    // A validation failure stores nothing: the key is free for the corrected request.
    let bad = params(&[("currency", "usd")]);
    api.post_key("/v1/payment_intents", &bad, Some(&a), "key-2")
        .await
        .err(400, Some("parameter_missing"));
    api.post_key("/v1/payment_intents", &p, Some(&a), "key-2")
        .await
        .ok();
    // An execution error is stored and replayed.
    let w_loc = api.location("HQ", "US").await;
    let reader = api.reader(&w_loc).await;
    sim.set_reader_online(&reader, false);
    let pi = first.body["id"].as_str().unwrap();
    let mut pp = Params::new();
    pp.push("payment_intent", pi);
    let path = format!("/v1/terminal/readers/{reader}/process_payment_intent");
    api.post_key(&path, &pp, None, "ppi-1")
        .await
        .err(400, Some("terminal_reader_offline"));
    sim.set_reader_online(&reader, true);
    let r = api.post_key(&path, &pp, None, "ppi-1").await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    r.err(400, Some("terminal_reader_offline"));
    api.post_key(&path, &pp, None, "ppi-2").await.ok();
    let log = sim.requests();
    assert!(log
        .iter()
        .any(|r| r.idempotency_key.as_deref() == Some("ppi-2") && r.status == 200));
}

#[tokio::test]
async fn every_object_is_scoped_to_the_account_addressed() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let b = api.account("US").await;
    let pi = api.intent(Some(&w.account), 1000, "manual").await;
    // Another account, or the platform, does not see the PaymentIntent.
    for acct in [Some(b.as_str()), None] {
        api.get(&format!("/v1/payment_intents/{pi}"), &Params::new(), acct)
            .await
            .err(404, Some("resource_missing"));
        api.post(
            &format!("/v1/payment_intents/{pi}/cancel"),
            &Params::new(),
            acct,
        )
        .await
        .err(404, Some("resource_missing"));
    }
    // Platform readers and locations do not exist on a connected account.
    api.get(
        &format!("/v1/terminal/readers/{}", w.reader),
        &Params::new(),
        Some(&w.account),
    )
    .await
    .err(404, Some("resource_missing"));
    let mut p = Params::new();
    p.push("payment_intent", &pi);
    api.post(
        &format!("/v1/terminal/readers/{}/process_payment_intent", w.reader),
        &p,
        Some(&w.account),
    )
    .await
    .err(404, Some("resource_missing"));
    // The platform reader, without the header, takes it (the preview flow); a PaymentIntent
    // it cannot see at all is a missing parameter object.
    let e = api
        .process(&w.reader, "pi_missing")
        .await
        .err(400, Some("resource_missing"));
    assert_eq!(e["param"], "payment_intent");
    api.get(
        &format!("/v1/terminal/locations/{}", w.location),
        &Params::new(),
        Some(&w.account),
    )
    .await
    .err(404, Some("resource_missing"));
    let l = api
        .get("/v1/terminal/readers", &Params::new(), Some(&w.account))
        .await
        .ok();
    assert!(l["data"].as_array().unwrap().is_empty());
    // A platform PaymentIntent is not the connected account's.
    let own = api.intent(None, 1000, "automatic").await;
    api.get(
        &format!("/v1/payment_intents/{own}"),
        &Params::new(),
        Some(&w.account),
    )
    .await
    .err(404, Some("resource_missing"));
    // A connected account sees only itself.
    api.get(
        &format!("/v1/accounts/{b}"),
        &Params::new(),
        Some(&w.account),
    )
    .await
    .err(404, Some("resource_missing"));
    let me = api
        .get("/v1/account", &Params::new(), Some(&w.account))
        .await
        .ok();
    assert_eq!(me["id"], w.account.as_str());
}

#[tokio::test]
async fn the_request_log_has_the_documented_keys() {
    let (sim, api) = instant().await;
    let a = api.account("US").await;
    let mut p = Params::new();
    p.push("amount", 1000).push("currency", "usd");
    api.post_key("/v1/payment_intents", &p, Some(&a), "k-log")
        .await
        .ok();
    let log: Vec<Value> = get_json(
        &reqwest::Client::new(),
        format!("{}/_sim/requests", sim.base_url()),
    )
    .await;
    let last = log.last().unwrap();
    for k in ["method", "path", "account", "idempotency_key", "status"] {
        assert!(last.get(k).is_some(), "missing {k} in {last}");
    }
    assert_eq!(last["method"], "POST");
    assert_eq!(last["path"], "/v1/payment_intents");
    assert_eq!(last["account"], a.as_str());
    assert_eq!(last["idempotency_key"], "k-log");
    assert_eq!(last["status"], 200);
    let stats: Value = get_json(
        &reqwest::Client::new(),
        format!("{}/_sim/stats", sim.base_url()),
    )
    .await;
    assert_eq!(stats["payment_intents"][&a], 1);
    reqwest::Client::new()
        .post(format!("{}/_sim/reset-requests", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert!(sim.requests().is_empty());
}

#[test]
fn the_shape_check_refuses_fields_unknown_to_stripe() {
    if !crate::common::sim_client::schema_available() {
        return;
    }
    let reader = serde_json::json!({
        "id": "tmr_1", "object": "terminal.reader", "action": null, "device_sw_version": null,
        "device_type": "simulated_wisepos_e", "ip_address": null, "label": "x",
        "livemode": false, "location": null, "metadata": {}, "serial_number": "s",
        "status": "online", "last_seen_at": 1
    });
    check("terminal.reader", &reader);
    let mut bad = reader.clone();
    bad["busy"] = serde_json::json!(true);
    assert!(std::panic::catch_unwind(|| check("terminal.reader", &bad)).is_err());
    let mut bad_action = reader;
    bad_action["action"] = serde_json::json!({
        "type": "process_payment_intent", "status": "in_progress", "failure_code": null,
        "failure_message": null, "process_payment_intent": {"payment_intent": "pi_1", "owner": "x"}
    });
    assert!(std::panic::catch_unwind(|| check("terminal.reader", &bad_action)).is_err());
    // At any depth: an unknown address field of an expanded location.
    let mut bad_nested = bad_action.clone();
    bad_nested["action"] = serde_json::Value::Null;
    bad_nested["location"] = serde_json::json!({
        "id": "tml_1", "object": "terminal.location", "display_name": "HQ", "livemode": false,
        "metadata": {}, "address": {"country": "US", "colour": "blue"}
    });
    assert!(std::panic::catch_unwind(|| check("terminal.reader", &bad_nested)).is_err());
    bad_nested["location"]["address"]
        .as_object_mut()
        .unwrap()
        .remove("colour");
    check("terminal.reader", &bad_nested);
}

#[tokio::test]
async fn the_stripe_client_reads_everything_the_emulator_writes() {
    use readerd::stripe::params::*;
    use readerd::stripe::wire::{Address, CaptureMethod, PaymentIntentStatus};
    use readerd::stripe::{ClientConfig, RequestOptions, SecretKey, StripeClient};
    let (sim, api) = instant().await;
    let acct = api.account("US").await;
    let client = StripeClient::new(ClientConfig::new(
        sim.base_url(),
        SecretKey::new("sk_test_client"),
    ))
    .unwrap();
    let platform = RequestOptions::platform();
    let on_acct = RequestOptions::account(&acct);
    let account = client.retrieve_account(&acct).await.unwrap();
    assert!(account.card_payments_active());
    let loc = client
        .create_location(
            &CreateLocation {
                display_name: "HQ".into(),
                address: Address {
                    country: Some("US".into()),
                    line1: Some("1 Main St".into()),
                    ..Address::default()
                },
                ..CreateLocation::default()
            },
            &platform.clone().key("loc-1"),
        )
        .await
        .unwrap();
    let reader = client
        .register_reader(
            &RegisterReader {
                registration_code: "simulated-s700".into(),
                label: Some("Till 1".into()),
                location: Some(loc.id.clone()),
                ..RegisterReader::default()
            },
            &platform.clone().key("rdr-1"),
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .list_readers(&ListReaders::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(client.list_locations().await.unwrap().len(), 1);
    let pi = client
        .create_payment_intent(
            &CreatePaymentIntent {
                amount: 1250,
                currency: "usd".into(),
                payment_method_types: vec!["card_present".into()],
                capture_method: CaptureMethod::Manual,
                application_fee_amount: Some(50),
                description: None,
                metadata: Default::default(),
                transfer_destination: None,
                on_behalf_of: None,
                transfer_group: None,
            },
            &on_acct.clone().key("pi-1"),
        )
        .await
        .unwrap();
    let r = client
        .process_payment_intent(
            &reader.id,
            &ProcessPaymentIntent {
                payment_intent: pi.id.clone(),
                process_config: None,
            },
            &platform.clone().key("ppi-1"),
        )
        .await
        .unwrap();
    assert_eq!(
        r.action.as_ref().unwrap().payment_intent_id(),
        Some(pi.id.as_str())
    );
    client
        .present_payment_method(
            &reader.id,
            &PresentPaymentMethod {
                card_present_number: None,
                amount_tip: Some(100),
            },
            &platform.clone().key("present-1"),
        )
        .await
        .unwrap();
    let got = client
        .retrieve_payment_intent(&pi.id, &["latest_charge"], &on_acct)
        .await
        .unwrap();
    assert_eq!(got.status, PaymentIntentStatus::RequiresCapture);
    assert_eq!(got.tip_amount(), Some(100));
    let charge = got.latest_charge.as_ref().unwrap().object().unwrap();
    let cp = charge
        .payment_method_details
        .as_ref()
        .unwrap()
        .card_present
        .as_ref()
        .unwrap();
    assert_eq!(cp.reader.as_deref(), Some(reader.id.as_str()));
    let captured = client
        .capture_payment_intent(
            &pi.id,
            &CapturePaymentIntent {
                amount_to_capture: Some(1000),
                application_fee_amount: None,
            },
            &on_acct.clone().key("cap-1"),
        )
        .await
        .unwrap();
    assert_eq!(captured.amount_received, 1000);
    let refund = client
        .create_refund(
            &CreateRefund {
                payment_intent: pi.id.clone(),
                amount: Some(400),
                ..Default::default()
            },
            &on_acct.clone().key("re-1"),
        )
        .await
        .unwrap();
    assert_eq!(refund.amount, 400);
    assert_eq!(
        client.list_payment_intents(&on_acct).await.unwrap().len(),
        1
    );
    // The platform cannot see the connected account's PaymentIntent.
    let e = client
        .retrieve_payment_intent(&pi.id, &[], &platform)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("resource_missing"));
    let deleted = client.delete_reader(&reader.id).await.unwrap();
    assert!(deleted.deleted);
}

#[tokio::test(start_paused = true)]
async fn auto_present_taps_the_default_card_by_itself() {
    let (_sim, api) = emulator(SimConfig {
        auth_delay: Duration::from_secs(1),
        auto_present: Some(Duration::from_secs(2)),
        ..SimConfig::default()
    })
    .await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    api.process(&w.reader, &pi).await.ok();
    assert_eq!(
        api.get_intent(Some(&w.account), &pi).await["status"],
        "requires_payment_method"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let v = api.get_intent(Some(&w.account), &pi).await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(
        v["latest_charge"]["payment_method_details"]["card_present"]["last4"],
        "4242"
    );
    // A cancelled action is not tapped later.
    let pi2 = api.intent(Some(&w.account), 1000, "automatic").await;
    api.process(&w.reader, &pi2).await.ok();
    api.cancel_action(&w.reader).await.ok();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        api.get_intent(Some(&w.account), &pi2).await["status"],
        "requires_payment_method"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_loses_its_link_while_authorising_reports_connection_error() {
    let (sim, api) = emulator(SimConfig {
        auth_delay: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "manual").await;
    api.process(&w.reader, &pi).await.ok();
    api.present(&w.reader, None).await.ok();
    assert!(sim.set_reader_online(&w.reader, false));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The payment went through; the reader could not say so.
    assert_eq!(
        api.get_intent(Some(&w.account), &pi).await["status"],
        "requires_capture"
    );
    assert_eq!(
        api.get_reader(&w.reader).await["action"]["status"],
        "in_progress"
    );
    assert!(sim.set_reader_online(&w.reader, true));
    let v = api.get_reader(&w.reader).await;
    assert_eq!(v["action"]["status"], "failed");
    assert_eq!(v["action"]["failure_code"], "connection_error");
    let kinds: Vec<String> = sim.events().iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("terminal.reader.action_failed")
    );
}

#[tokio::test]
async fn the_customer_can_cancel_on_the_reader_and_control_routes_present_cards() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    api.process(&w.reader, &pi).await.ok();
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{}/_sim/readers/{}/customer-cancel",
            sim.base_url(),
            w.reader
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = api.get_reader(&w.reader).await;
    assert_eq!(v["action"]["status"], "failed");
    assert_eq!(v["action"]["failure_code"], "customer_canceled");
    assert!(v["action"]["api_error"].is_null());
    assert!(sim.customer_cancel(&w.reader).is_err());
    // The same PaymentIntent again, the card tapped through the control route with a tip.
    api.process(&w.reader, &pi).await.ok();
    let r = http
        .post(format!(
            "{}/_sim/readers/{}/present",
            sim.base_url(),
            w.reader
        ))
        .body(r#"{"number": "378282246310005", "amount_tip": 200}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("request-id").is_some());
    let v = api.get_intent(Some(&w.account), &pi).await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["amount"], 1200);
    assert_eq!(
        v["latest_charge"]["payment_method_details"]["card_present"]["brand"],
        "amex"
    );
    let r = http
        .post(format!("{}/_sim/readers/tmr_nope/present", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn without_the_platform_owned_reader_preview_a_connected_account_intent_is_not_found() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    sim.set_platform_owned_readers(false);
    let e = api
        .process(&w.reader, &pi)
        .await
        .err(400, Some("resource_missing"));
    assert_eq!(e["param"], "payment_intent");
    assert_eq!(
        e["message"],
        format!("No such payment_intent: '{pi}'"),
        "{e}"
    );
    // The platform's own PaymentIntents (destination charges) still work.
    let mut p = Params::new();
    p.push("amount", 1000)
        .push("currency", "usd")
        .push_list("payment_method_types", &["card_present"])
        .push("transfer_data[destination]", &w.account);
    let own = api.post("/v1/payment_intents", &p, None).await.ok();
    let own = own["id"].as_str().unwrap();
    api.process(&w.reader, own).await.ok();
    api.cancel_action(&w.reader).await.ok();
    // Back on: the connected account's PaymentIntent is processed.
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/preview", sim.base_url()))
        .body(r#"{"platform_owned_readers": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = api.process(&w.reader, &pi).await.ok();
    assert_eq!(v["action"]["process_payment_intent"]["account"], w.account);
}

#[tokio::test]
async fn a_reader_outside_the_country_of_the_account_receiving_the_funds_is_refused() {
    let (_sim, api) = instant().await;
    let us = api.account("US").await;
    let de = api.account("DE").await;
    let us_reader = api.reader(&api.location("HQ", "US").await).await;
    let de_reader = api.reader(&api.location("Berlin", "DE").await).await;
    let destination = |acct: &str, on_behalf_of: bool| {
        let mut p = Params::new();
        p.push("amount", 1000)
            .push("currency", "usd")
            .push_list("payment_method_types", &["card_present"])
            .push("transfer_data[destination]", acct);
        if on_behalf_of {
            p.push("on_behalf_of", acct);
        }
        p
    };
    // Direct charge: the connected account receives the funds.
    let pi_de = api.intent(Some(&de), 1000, "automatic").await;
    let e = api
        .process(&us_reader, &pi_de)
        .await
        .err(400, Some("terminal_reader_invalid_location_for_payment"));
    assert_eq!(e["type"], "invalid_request_error");
    // Destination charge on behalf of the connected account: it is the settlement
    // merchant, so its country decides.
    let pi_obo = api
        .post("/v1/payment_intents", &destination(&de, true), None)
        .await
        .ok();
    let pi_obo = pi_obo["id"].as_str().unwrap().to_string();
    api.process(&us_reader, &pi_obo)
        .await
        .err(400, Some("terminal_reader_invalid_location_for_payment"));
    // Nothing was taken by the refused reader; the matching ones take them.
    assert!(api.get_reader(&us_reader).await["action"].is_null());
    api.process(&de_reader, &pi_de).await.ok();
    api.cancel_action(&de_reader).await.ok();
    api.process(&de_reader, &pi_obo).await.ok();
    api.cancel_action(&de_reader).await.ok();
    // Destination charge without on_behalf_of: the platform (US) settles it.
    let pi_plat = api
        .post("/v1/payment_intents", &destination(&de, false), None)
        .await
        .ok();
    let pi_plat = pi_plat["id"].as_str().unwrap().to_string();
    api.process(&de_reader, &pi_plat)
        .await
        .err(400, Some("terminal_reader_invalid_location_for_payment"));
    api.process(&us_reader, &pi_plat).await.ok();
    api.cancel_action(&us_reader).await.ok();
    // The platform's own charge (no destination) pays the platform, a US account.
    let own = api.intent(None, 1000, "automatic").await;
    api.process(&de_reader, &own)
        .await
        .err(400, Some("terminal_reader_invalid_location_for_payment"));
    api.process(&us_reader, &own).await.ok();
    let pi_us = api.intent(Some(&us), 1000, "automatic").await;
    api.cancel_action(&us_reader).await.ok();
    api.process(&us_reader, &pi_us).await.ok();
}

#[tokio::test]
async fn payment_intents_are_listed_by_creation_time() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    let v = api.get_intent(Some(&w.account), &pi).await;
    let created = v["created"].as_i64().unwrap();
    let list = |q: &'static str, t: i64| {
        let mut p = Params::new();
        p.push(q, t);
        p
    };
    for (q, t, n) in [
        ("created[gte]", created, 1),
        ("created[gt]", created, 0),
        ("created[lte]", created, 1),
        ("created[lt]", created, 0),
        ("created[gte]", created + 3600, 0),
        ("created", created, 1),
    ] {
        let v = api
            .get("/v1/payment_intents", &list(q, t), Some(&w.account))
            .await
            .ok();
        assert_eq!(v["data"].as_array().unwrap().len(), n, "{q}={t}");
    }
}

/// A destination charge (`transfer_data[destination]`, `on_behalf_of`, a fee), captured in
/// part: the Transfer and the application fee it makes, as Stripe documents them.
async fn captured_destination_charge(api: &Api, acct: &str, reader: &str) -> (String, Value) {
    let mut p = Params::new();
    p.push("amount", 10000)
        .push("currency", "usd")
        .push_list("payment_method_types", &["card_present"])
        .push("capture_method", "manual")
        .push("application_fee_amount", 300)
        .push("transfer_data[destination]", acct)
        .push("on_behalf_of", acct);
    let v = api.post("/v1/payment_intents", &p, None).await.ok();
    let pi = v["id"].as_str().unwrap().to_string();
    api.process(reader, &pi).await.ok();
    api.present(reader, None).await.ok();
    // Nothing moves before the capture.
    let v = api.get_intent(None, &pi).await;
    assert!(v["latest_charge"]["transfer"].is_null(), "{v}");
    assert!(v["latest_charge"]["application_fee"].is_null(), "{v}");
    // A partial capture with the fee adjusted at capture.
    let v = api
        .post(
            &format!("/v1/payment_intents/{pi}/capture"),
            &params(&[
                ("amount_to_capture", "8000"),
                ("application_fee_amount", "200"),
            ]),
            None,
        )
        .await
        .ok();
    assert_eq!(v["amount_received"], 8000);
    let charge = api.get_intent(None, &pi).await["latest_charge"].clone();
    check("charge", &charge);
    (pi, charge)
}

fn book(b: &Value, who: &str) -> Value {
    b[who]["usd"].clone()
}

async fn balances(api: &Api) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/_sim/balances", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_destination_charge_transfers_and_its_refunds_reverse_and_refund_in_proportion() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let (pi, charge) = captured_destination_charge(&api, &w.account, &w.reader).await;
    let ch = charge["id"].as_str().unwrap().to_string();
    let tr = charge["transfer"].as_str().expect("a transfer").to_string();
    let fee = charge["application_fee"]
        .as_str()
        .expect("a fee")
        .to_string();
    assert!(tr.starts_with("tr_") && fee.starts_with("fee_"), "{charge}");
    assert_eq!(charge["application_fee_amount"], 200);
    let t = api
        .get(&format!("/v1/transfers/{tr}"), &Params::new(), None)
        .await
        .ok();
    check("transfer", &t);
    assert_eq!(t["object"], "transfer");
    assert_eq!(t["amount"], 8000);
    assert_eq!(t["destination"], w.account.as_str());
    assert_eq!(t["source_transaction"], ch.as_str());
    let f = api
        .get(&format!("/v1/application_fees/{fee}"), &Params::new(), None)
        .await
        .ok();
    check("application_fee", &f);
    assert_eq!(f["amount"], 200);
    assert_eq!(f["account"], w.account.as_str());
    // The platform's objects, not the connected account's.
    api.get(
        &format!("/v1/transfers/{tr}"),
        &Params::new(),
        Some(&w.account),
    )
    .await
    .err(404, Some("resource_missing"));
    let b = balances(&api).await;
    assert_eq!(
        book(&b, "platform"),
        json!({"charges": 8000, "refunds": 0, "transfers": -8000, "transfer_reversals": 0,
               "application_fees": 200, "application_fee_refunds": 0, "net": 200})
    );
    assert_eq!(book(&b, &w.account)["net"], 7800);

    // A refund of 3000 of 8000: 3000 of the transfer back, 75 of the 200 fee given back.
    let refund = |amount: &str| {
        params(&[
            ("payment_intent", pi.as_str()),
            ("amount", amount),
            ("reverse_transfer", "true"),
            ("refund_application_fee", "true"),
        ])
    };
    let r = api.post("/v1/refunds", &refund("3000"), None).await.ok();
    check("refund", &r);
    assert!(
        r["transfer_reversal"].as_str().unwrap().starts_with("trr_"),
        "{r}"
    );
    let b = balances(&api).await;
    assert_eq!(
        book(&b, "platform"),
        json!({"charges": 8000, "refunds": -3000, "transfers": -8000, "transfer_reversals": 3000,
               "application_fees": 200, "application_fee_refunds": -75, "net": 125})
    );
    assert_eq!(
        book(&b, &w.account),
        json!({"charges": 0, "refunds": 0, "transfers": 8000, "transfer_reversals": -3000,
               "application_fees": -200, "application_fee_refunds": 75, "net": 4875})
    );
    // 1001 more: the shares follow the cumulative refund (4001 of 8000: 100 of the fee).
    api.post("/v1/refunds", &refund("1001"), None).await.ok();
    let f = api
        .get(&format!("/v1/application_fees/{fee}"), &Params::new(), None)
        .await
        .ok();
    assert_eq!(f["amount_refunded"], 100);
    // The rest: the whole transfer reversed, the whole fee refunded, nobody holds anything.
    api.post("/v1/refunds", &refund("3999"), None).await.ok();
    let t = api
        .get(&format!("/v1/transfers/{tr}"), &Params::new(), None)
        .await
        .ok();
    assert_eq!(
        (t["amount_reversed"].as_i64(), t["reversed"].as_bool()),
        (Some(8000), Some(true))
    );
    let f = api
        .get(&format!("/v1/application_fees/{fee}"), &Params::new(), None)
        .await
        .ok();
    assert_eq!(
        (f["amount_refunded"].as_i64(), f["refunded"].as_bool()),
        (Some(200), Some(true))
    );
    let b = balances(&api).await;
    assert_eq!(book(&b, "platform")["net"], 0);
    assert_eq!(book(&b, &w.account)["net"], 0);
}

#[tokio::test]
async fn refunds_refuse_what_stripe_refuses_and_by_default_the_platform_pays() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let (pi, _) = captured_destination_charge(&api, &w.account, &w.reader).await;
    let with = |extra: &[(&str, &str)]| {
        let mut p = params(&[("payment_intent", pi.as_str()), ("amount", "1000")]);
        for (k, v) in extra {
            p.push(*k, *v);
        }
        p
    };
    // The fee of a destination charge is refunded only with its transfer reversed.
    let e = api
        .post(
            "/v1/refunds",
            &with(&[("refund_application_fee", "true")]),
            None,
        )
        .await
        .err(400, None);
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["param"], "refund_application_fee");
    api.post("/v1/refunds", &with(&[("reverse_transfer", "maybe")]), None)
        .await
        .err(400, Some("parameter_invalid_boolean"));
    // Nothing moved for the refused ones.
    let before = balances(&api).await;
    assert_eq!(book(&before, "platform")["refunds"], 0);
    // Without reverse_transfer the platform pays the refund and the merchant keeps its
    // transfer: Stripe's default, and what readerd must not leave a merchant with.
    let r = api.post("/v1/refunds", &with(&[]), None).await.ok();
    assert!(r["transfer_reversal"].is_null(), "{r}");
    let b = balances(&api).await;
    assert_eq!(book(&b, "platform")["net"], 200 - 1000);
    assert_eq!(book(&b, &w.account)["net"], 7800);

    // A direct charge has no transfer to reverse.
    let pi = api.intent(Some(&w.account), 2000, "automatic").await;
    api.process(&w.reader, &pi).await.ok();
    api.present(&w.reader, None).await.ok();
    let mut p = params(&[
        ("payment_intent", pi.as_str()),
        ("reverse_transfer", "true"),
    ]);
    let e = api
        .post("/v1/refunds", &p, Some(&w.account))
        .await
        .err(400, None);
    assert_eq!(e["param"], "reverse_transfer");
    let b = balances(&api).await;
    assert_eq!(book(&b, &w.account)["charges"], 2000);
    assert_eq!(book(&b, &w.account)["refunds"], 0);
    p = params(&[("payment_intent", pi.as_str()), ("amount", "500")]);
    api.post("/v1/refunds", &p, Some(&w.account)).await.ok();
    let b = balances(&api).await;
    assert_eq!(book(&b, &w.account)["refunds"], -500);
}

#[tokio::test]
async fn a_direct_charge_fee_is_paid_by_the_connected_account_and_refunded_on_request() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let a = Some(w.account.as_str());
    let mut p = Params::new();
    p.push("amount", 4000)
        .push("currency", "usd")
        .push_list("payment_method_types", &["card_present"])
        .push("application_fee_amount", 120);
    let v = api.post("/v1/payment_intents", &p, a).await.ok();
    let pi = v["id"].as_str().unwrap().to_string();
    api.process(&w.reader, &pi).await.ok();
    api.present(&w.reader, None).await.ok();
    let charge = api.get_intent(a, &pi).await["latest_charge"].clone();
    assert!(charge["transfer"].is_null(), "{charge}");
    assert!(charge["application_fee"]
        .as_str()
        .unwrap()
        .starts_with("fee_"));
    let b = balances(&api).await;
    assert_eq!(book(&b, &w.account)["net"], 4000 - 120);
    assert_eq!(book(&b, "platform")["net"], 120);
    // Half refunded with the fee: half of the fee goes back to the account.
    let p = params(&[
        ("payment_intent", pi.as_str()),
        ("amount", "2000"),
        ("refund_application_fee", "true"),
    ]);
    api.post("/v1/refunds", &p, a).await.ok();
    let b = balances(&api).await;
    assert_eq!(book(&b, &w.account)["net"], 4000 - 120 - 2000 + 60);
    assert_eq!(book(&b, "platform")["net"], 60);
}
