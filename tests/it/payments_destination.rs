//! Destination charges through a whole daemon against the emulator: who settles them
//! (`on_behalf_of`, `settlement`), and who pays a refund, read on the emulator's books.
//!
//! Stripe's contract for a destination charge's refund: `reverse_transfer` pulls the
//! refunded share of the transfer back from the merchant, `refund_application_fee` gives
//! the platform's fee back in the same proportion, so every party ends as after a refund
//! of a direct charge. Without them the platform pays the whole refund and the merchant
//! keeps the money the customer got back.

use crate::payments_api::{pos_token, start, Api, ADMIN};
use readerd::sim::SimConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn daemon() -> Api {
    start(SimConfig {
        auth_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await
}

/// Re-adds a merchant of the fixture with other settings (the same account).
async fn set_merchant(api: &Api, id: &str, body: Value) -> Value {
    let mut b = json!({"id": id, "account": api.accounts[id], "display_name": id});
    for (k, v) in body.as_object().unwrap() {
        b[k] = v.clone();
    }
    let (s, m) = api.post(ADMIN, "/v1/merchants", b).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    m
}

/// A PaymentIntent as the emulator holds it (on the platform, or `account`).
async fn stripe_intent(api: &Api, pi: &str, account: Option<&str>) -> Value {
    let mut req = reqwest::Client::new()
        .get(format!(
            "{}/v1/payment_intents/{pi}?expand[]=latest_charge",
            api.sim.base_url()
        ))
        .basic_auth("sk_test_payments", Some(""));
    if let Some(a) = account {
        req = req.header("Stripe-Account", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The emulator's books for one account (`platform` or `acct_…`) in euros.
fn book(api: &Api, who: &str) -> Value {
    let b = serde_json::to_value(api.sim.balances()).unwrap();
    b[who]["eur"].clone()
}

/// Pays `amount` for `merchant` on `till-1`; the customer taps at once.
async fn paid(api: &Api, merchant: &str, amount: i64, capture: &str) -> Value {
    let tok = pos_token(merchant);
    let p = api.pay(merchant, "till-1", amount, capture).await;
    let id = p["id"].as_str().unwrap().to_string();
    api.wait_card(&tok, &id).await;
    api.sim.present_card(&api.readers["till-1"], None).unwrap();
    let want = if capture == "manual" {
        "requires_capture"
    } else {
        "succeeded"
    };
    api.wait_status(&tok, &id, want).await
}

async fn refund(api: &Api, merchant: &str, id: &str, amount: i64) -> Value {
    let (s, r) = api
        .post(
            &pos_token(merchant),
            &format!("/v1/payments/{id}/refunds"),
            json!({"amount": amount}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["status"], "succeeded", "{r}");
    r
}

/// The defect this guards against: a destination refund without `reverse_transfer` left the
/// merchant with its whole transfer and the platform paying the refund. Here the merchant's
/// books go down by its share of the refund and the platform gets back only the refunded
/// share of its fee, to the cent.
#[tokio::test]
async fn a_partial_refund_of_a_destination_charge_is_borne_by_the_merchant_less_its_fee_share() {
    let api = daemon().await;
    let acct = api.accounts["florist"].clone();
    let m = set_merchant(
        &api,
        "florist",
        json!({"charge_type": "destination", "application_fee_amount": 300}),
    )
    .await;
    assert_eq!(m["settlement"], "merchant");
    let p = paid(&api, "florist", 10000, "manual").await;
    let id = p["id"].as_str().unwrap().to_string();
    let pi = p["payment_intent"].as_str().unwrap().to_string();
    // On the platform, to the merchant, on behalf of the merchant.
    let v = stripe_intent(&api, &pi, None).await;
    assert_eq!(v["transfer_data"]["destination"], acct.as_str());
    assert_eq!(v["on_behalf_of"], acct.as_str());
    assert_eq!(v["application_fee_amount"], 300);
    // Captured in part through readerd: 8000 of 10000, the fixed fee stays 300.
    let (s, c) = api
        .post(
            &pos_token("florist"),
            &format!("/v1/payments/{id}/capture"),
            json!({"amount": 8000}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    api.wait_status(&pos_token("florist"), &id, "succeeded")
        .await;
    assert_eq!(book(&api, &acct)["net"], 8000 - 300);
    assert_eq!(book(&api, "platform")["net"], 300);

    // 2000 of 8000 refunded: a quarter of the transfer comes back from the merchant, a
    // quarter of the fee (75) goes back to it.
    refund(&api, "florist", &id, 2000).await;
    assert_eq!(
        book(&api, &acct),
        json!({"charges": 0, "refunds": 0, "transfers": 8000, "transfer_reversals": -2000,
               "application_fees": -300, "application_fee_refunds": 75, "net": 5775})
    );
    assert_eq!(
        book(&api, "platform"),
        json!({"charges": 8000, "refunds": -2000, "transfers": -8000, "transfer_reversals": 2000,
               "application_fees": 300, "application_fee_refunds": -75, "net": 225})
    );
    let v = stripe_intent(&api, &pi, None).await;
    assert_eq!(v["latest_charge"]["amount_refunded"], 2000);
    // The rest: nobody holds anything of this payment any more.
    refund(&api, "florist", &id, 6000).await;
    assert_eq!(book(&api, &acct)["net"], 0);
    assert_eq!(book(&api, "platform")["net"], 0);
    let (_, p) = api
        .get(&pos_token("florist"), &format!("/v1/payments/{id}"))
        .await;
    assert_eq!(p["amount_refunded"], 8000);
}

/// A direct charge is on the merchant's account already: its refund sends neither
/// parameter. The emulator refuses `reverse_transfer` on a charge without a transfer, and
/// `refund_application_fee` would hand the platform's fee back: neither happens.
#[tokio::test]
async fn a_direct_charge_refund_reverses_nothing_and_keeps_the_platform_fee() {
    let api = daemon().await;
    let acct = api.accounts["bakery"].clone();
    let m = set_merchant(&api, "bakery", json!({"application_fee_amount": 100})).await;
    assert_eq!(
        (m["charge_type"].as_str(), m["settlement"].as_str()),
        (Some("direct"), Some("merchant"))
    );
    let p = paid(&api, "bakery", 5000, "automatic").await;
    let id = p["id"].as_str().unwrap().to_string();
    let v = stripe_intent(&api, p["payment_intent"].as_str().unwrap(), Some(&acct)).await;
    assert!(v["on_behalf_of"].is_null(), "{v}");
    assert!(v["transfer_data"].is_null(), "{v}");
    refund(&api, "bakery", &id, 1000).await;
    assert_eq!(
        book(&api, &acct),
        json!({"charges": 5000, "refunds": -1000, "transfers": 0, "transfer_reversals": 0,
               "application_fees": -100, "application_fee_refunds": 0, "net": 3900})
    );
    assert_eq!(book(&api, "platform")["net"], 100);
}

/// `settlement: platform`: no `on_behalf_of`, so the platform settles and its country (the
/// emulator's platform is in the US) decides the location rule: a FR reader is refused by
/// Stripe, and readerd says why. A direct merchant cannot settle on the platform.
#[tokio::test]
async fn a_merchant_settled_by_the_platform_gets_no_on_behalf_of() {
    let api = daemon().await;
    let m = set_merchant(
        &api,
        "florist",
        json!({"charge_type": "destination", "settlement": "platform"}),
    )
    .await;
    assert_eq!(m["settlement"], "platform");
    let (_, shown) = api.get(ADMIN, "/v1/merchants/florist").await;
    assert_eq!(shown["settlement"], "platform");
    let tok = pos_token("florist");
    let p = api.pay("florist", "till-1", 1200, "automatic").await;
    let id = p["id"].as_str().unwrap().to_string();
    let failed = api.wait_status(&tok, &id, "failed").await;
    assert_eq!(
        failed["failure"]["code"], "location_country_mismatch",
        "{failed}"
    );
    let v = stripe_intent(&api, failed["payment_intent"].as_str().unwrap(), None).await;
    assert!(v["on_behalf_of"].is_null(), "{v}");
    assert_eq!(
        v["transfer_data"]["destination"],
        api.accounts["florist"].as_str()
    );

    let (s, e) = api
        .post(
            ADMIN,
            "/v1/merchants",
            json!({"id": "bakery", "account": api.accounts["bakery"], "settlement": "platform"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("destination"),
        "{e}"
    );
    let (s, e) = api
        .post(
            ADMIN,
            "/v1/merchants",
            json!({"id": "bakery", "account": api.accounts["bakery"], "settlement": "nobody"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
}

/// Records written before these fields existed still load: a merchant settles on its own
/// account, and a pending refund is sent again with the parameters it was first sent with.
#[test]
fn older_records_load_with_the_defaults() {
    let m: readerd::fleet::MerchantRecord = serde_json::from_value(json!({
        "id": "florist", "account": "acct_1", "display_name": "Florist",
        "charge_type": "destination", "card_payments": "active", "charges_enabled": true,
        "checked_at": 0, "created_at": 0, "updated_at": 0
    }))
    .unwrap();
    assert_eq!(m.settlement, readerd::fleet::Settlement::Merchant);
    let r: readerd::payments::RefundRecord = serde_json::from_value(json!({
        "id": "rf_1", "payment": "pay_1", "amount": 100, "stripe_key": "k",
        "status": "pending", "refund": null, "created_at": "2026-11-29T00:00:00Z"
    }))
    .unwrap();
    assert!(!r.reverse_transfer);
}
