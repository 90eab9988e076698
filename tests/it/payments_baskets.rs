//! Separate charges and transfers, and baskets of several merchants, through the payment
//! engine against the emulator: one PaymentIntent on the platform and one tap, one Transfer
//! per split after the capture, refunds that reverse one merchant's transfer, and the
//! settlement report equal to the emulator's books to the cent. Faults on transfer and
//! reversal creation, and a merchant whose `transfers` capability goes off mid-run.

use crate::common::{create_location, register_reader};
use crate::payments_flow::{
    env_with, fast_config, instant_sim, wait_on_reader, wait_status, wait_until, with_faults, Env,
};
use readerd::clock::Timestamp;
use readerd::metrics::Metrics;
use readerd::payments::engine::{CreatePayment, DaemonLinks, PaymentError, SplitRequest};
use readerd::payments::report::{Query, Row};
use readerd::payments::splits::TransferStatus;
use readerd::payments::{
    CaptureMode, ChargeType, Engine, Fee, MerchantInfo, Payment, ReaderInfo, RefundStatus, Status,
};
use readerd::sim::{FaultKind, FaultRule, SimConfig};
use readerd::store::Registry;
use readerd::stripe::wire::{CapabilityStatus, Transfer};
use readerd::stripe::RequestOptions;
use std::collections::BTreeMap;
use std::sync::Arc;

const TRANSFERS: &str = "/v1/transfers";
const REVERSALS: &str = "/v1/transfers/*/reversals";

/// Three `separate` merchants in FR (fees 40, 20 and none) and an engine whose metrics the
/// test can read.
struct Hall {
    env: Env,
    metrics: Arc<Metrics>,
}

async fn hall_with(sim: SimConfig) -> Hall {
    let mut env = env_with(sim, fast_config(), 0).await;
    // A separate charge settles on the platform (US in the emulator): the merchants, the
    // hall and its reader are in the US too.
    let loc = create_location(
        &env.stripe,
        "Food hall",
        ["1 Market St", "94105", "San Francisco", "US"],
        "hall",
    )
    .await;
    let r = register_reader(&env.stripe, "hall-till", &loc.id, "hall-1").await;
    env.dir.add_reader(ReaderInfo {
        id: r.id.clone(),
        label: Some(r.label.clone()),
        location: None,
        country: Some("US".into()),
        allowed_merchants: None,
        owner: None,
    });
    env.readers.push(r.id);
    for (m, fee) in [("bakery", 40), ("florist", 20), ("cheese", 0)] {
        let acct = env
            .sim
            .create_account("US", "usd", CapabilityStatus::Active);
        env.dir.add_merchant(MerchantInfo {
            id: m.into(),
            account: acct.clone(),
            charge_type: ChargeType::Separate,
            enabled: true,
            country: Some("US".into()),
            currency: Some("usd".into()),
            fee: (fee > 0).then_some(Fee {
                fixed: fee,
                basis_points: 0,
            }),
            platform_settles: false,
        });
        env.accounts.insert(m.to_string(), acct);
    }
    let metrics = Arc::new(Metrics::new());
    env.engine = Engine::new(
        Registry::temporary().unwrap(),
        env.stripe.clone(),
        env.dir.clone(),
        fast_config(),
        DaemonLinks {
            metrics: metrics.clone(),
            ..DaemonLinks::default()
        },
    );
    env.engine.start().await.unwrap();
    Hall { env, metrics }
}

async fn hall() -> Hall {
    hall_with(instant_sim()).await
}

fn basket(reader: &str, shares: &[(&str, i64)], capture: CaptureMode) -> CreatePayment {
    CreatePayment {
        merchant: String::new(),
        reader: reader.into(),
        amount: shares.iter().map(|(_, a)| a).sum(),
        currency: "usd".into(),
        capture,
        description: Some("basket".into()),
        metadata: BTreeMap::new(),
        tipping: None,
        flow: None,
        splits: Some(
            shares
                .iter()
                .map(|(m, a)| SplitRequest {
                    merchant: m.to_string(),
                    amount: *a,
                })
                .collect(),
        ),
        tip_merchant: None,
    }
}

const THREE: &[(&str, i64)] = &[("bakery", 800), ("florist", 450), ("cheese", 300)];

/// Waits until every transfer of the payment is settled (made, or nothing to make).
async fn transfers_made(e: &Engine, id: &str) -> Payment {
    wait_until(e, id, "transferred", |p| {
        p.splits.iter().all(|s| {
            matches!(
                s.transfer_status,
                TransferStatus::Succeeded | TransferStatus::None
            )
        })
    })
    .await
}

async fn transfers_of(env: &Env, id: &str) -> Vec<Transfer> {
    env.stripe
        .list_transfers(id, &RequestOptions::platform())
        .await
        .unwrap()
}

/// A basket created and paid with the default card on reader 0.
async fn paid(h: &Hall, shares: &[(&str, i64)]) -> Payment {
    let r = h.env.readers[0].clone();
    let p = h
        .env
        .engine
        .create(basket(&r, shares, CaptureMode::Automatic), "hall", None)
        .unwrap();
    wait_on_reader(&h.env, &p.id).await;
    h.env.sim.present_card(&r, None).unwrap();
    wait_status(&h.env.engine, &p.id, Status::Succeeded).await;
    transfers_made(&h.env.engine, &p.id).await
}

fn report(e: &Engine) -> Vec<Row> {
    e.settlement_report(&Query {
        from: Timestamp::from_ms(0),
        to: Timestamp::from_ms(i64::MAX / 2),
        ..Query::default()
    })
    .unwrap()
}

/// Every merchant's row equals its account's book on the emulator, and the platform holds
/// the sum of the fees and of the transfers still owed, to the cent.
fn books_match_report(h: &Hall) {
    let books = h.env.sim.balances();
    let rows = report(&h.env.engine);
    assert!(!rows.is_empty());
    for r in &rows {
        let acct = &h.env.accounts[&r.merchant];
        let net = books
            .get(acct)
            .and_then(|b| b.get(&r.currency))
            .map_or(0, |b| b.net);
        assert_eq!(net, r.net, "{}: books {net}, report {r:?}", r.merchant);
    }
    // The platform holds its fees, and the transfers it still owes.
    let fees: i64 = rows.iter().map(|r| r.fees + r.pending_transfer).sum();
    assert_eq!(books["platform"]["usd"].net, fees, "platform: {rows:?}");
}

#[tokio::test]
async fn a_basket_of_three_merchants_is_one_tap_one_intent_and_a_transfer_each() {
    let h = hall().await;
    let p = paid(&h, THREE).await;
    assert_eq!(p.charge_type, ChargeType::Separate);
    assert_eq!(h.env.sim.payment_intent_count(None), 1, "one PaymentIntent");
    for m in ["bakery", "florist", "cheese"] {
        assert_eq!(
            h.env.sim.payment_intent_count(Some(&h.env.accounts[m])),
            0,
            "nothing on {m}'s account"
        );
    }
    let pi = h
        .env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &["latest_charge"],
            &RequestOptions::platform(),
        )
        .await
        .unwrap();
    assert_eq!(pi.transfer_group.as_deref(), Some(p.id.as_str()));
    assert_eq!(pi.application_fee_amount, None);
    let charge = pi.latest_charge.unwrap().id().to_string();
    let mut got: Vec<(String, i64)> = transfers_of(&h.env, &p.id)
        .await
        .into_iter()
        .map(|t| {
            assert_eq!(t.source_transaction.as_deref(), Some(charge.as_str()));
            assert_eq!(t.metadata["readerd_payment"], p.id);
            (t.destination.id().to_string(), t.amount)
        })
        .collect();
    got.sort();
    let mut want = vec![
        (h.env.accounts["bakery"].clone(), 760),
        (h.env.accounts["florist"].clone(), 430),
        (h.env.accounts["cheese"].clone(), 300),
    ];
    want.sort();
    assert_eq!(got, want);
    let s = &p.splits;
    assert_eq!(
        s.iter()
            .map(|s| (s.captured, s.fee, s.transferred))
            .collect::<Vec<_>>(),
        vec![(800, 40, 760), (450, 20, 430), (300, 0, 300)]
    );
    books_match_report(&h);
    // Sweeping again changes nothing: never a second transfer.
    h.env.engine.sweep().await;
    h.env.engine.settle_transfers(&p.id).await.unwrap();
    assert_eq!(transfers_of(&h.env, &p.id).await.len(), 3);
}

#[tokio::test]
async fn a_partial_capture_scales_every_share_and_the_tip_goes_to_the_first_merchant() {
    let h = hall().await;
    let r = h.env.readers[0].clone();
    let p = h
        .env
        .engine
        .create(basket(&r, THREE, CaptureMode::Manual), "hall", None)
        .unwrap();
    wait_on_reader(&h.env, &p.id).await;
    h.env.sim.present_card_with_tip(&r, None, 100).unwrap();
    let p = wait_status(&h.env.engine, &p.id, Status::RequiresCapture).await;
    assert_eq!(p.tip, Some(100));
    // 1000 of 1650 (tip included): shares 800, 450, 300 and the tip 100, scaled.
    h.env.engine.capture(&p.id, Some(1000)).await.unwrap();
    let p = transfers_made(&h.env.engine, &p.id).await;
    let captured: Vec<i64> = p.splits.iter().map(|s| s.captured).collect();
    assert_eq!(captured.iter().sum::<i64>(), 1000);
    // 800·1000/1650 = 484.85, 450·… = 272.73, 300·… = 181.82, tip 60.61: the three largest
    // remainders get the three units left.
    assert_eq!(captured, vec![485 + 60, 273, 182]);
    let total: i64 = transfers_of(&h.env, &p.id)
        .await
        .iter()
        .map(|t| t.amount)
        .sum();
    assert_eq!(total, 1000 - 40 - 20);
    books_match_report(&h);
}

#[tokio::test]
async fn a_refund_for_one_merchant_reverses_only_its_transfer_never_beyond_its_share() {
    let h = hall().await;
    let p = paid(&h, THREE).await;
    let e = &h.env.engine;
    // Several merchants: the refund must name one.
    assert!(matches!(
        e.refund(&p.id, Some(100), "hall", None).await,
        Err(PaymentError::Invalid {
            code: "merchant_required",
            ..
        })
    ));
    assert!(matches!(
        e.refund_for(&p.id, Some(451), Some("florist"), "hall", None)
            .await,
        Err(PaymentError::Invalid {
            code: "refund_too_large",
            ..
        })
    ));
    let (_, r) = e
        .refund_for(&p.id, Some(200), Some("florist"), "hall", Some("k1"))
        .await
        .unwrap();
    assert_eq!(r.status, RefundStatus::Succeeded);
    // 430 × 200 / 450 = 191.1: the platform gives back its fee in proportion.
    assert_eq!(r.reversal_amount, 191);
    assert!(r.reversal.is_some());
    // The same key: the same refund, no second reversal.
    let (_, again) = e
        .refund_for(&p.id, Some(200), Some("florist"), "hall", Some("k1"))
        .await
        .unwrap();
    assert_eq!(again.id, r.id);
    let (p2, rest) = e
        .refund_for(&p.id, None, Some("florist"), "hall", None)
        .await
        .unwrap();
    assert_eq!(rest.amount, 250);
    assert_eq!(rest.reversal_amount, 430 - 191);
    let florist = &p2.splits[1];
    assert_eq!((florist.refunded, florist.reversed), (450, 430));
    assert_eq!(p2.amount_refunded, 450);
    let ts = transfers_of(&h.env, &p.id).await;
    let by_dest = |m: &str| {
        ts.iter()
            .find(|t| t.destination.id() == h.env.accounts[m])
            .unwrap()
            .amount_reversed
    };
    assert_eq!(
        (by_dest("bakery"), by_dest("florist"), by_dest("cheese")),
        (0, 430, 0)
    );
    // The florist's share is spent.
    assert!(e
        .refund_for(&p.id, Some(1), Some("florist"), "hall", None)
        .await
        .is_err());
    books_match_report(&h);
}

#[tokio::test]
async fn basket_validation_follows_the_contract() {
    let h = hall().await;
    let r = h.env.readers[0].clone();
    let e = &h.env.engine;
    // A direct merchant cannot be in a basket.
    h.env.dir.add_merchant(MerchantInfo {
        id: "kiosk".into(),
        account: h
            .env
            .sim
            .create_account("US", "usd", CapabilityStatus::Active),
        charge_type: ChargeType::Direct,
        enabled: true,
        country: Some("US".into()),
        currency: Some("usd".into()),
        fee: None,
        platform_settles: false,
    });
    let code = |req: CreatePayment| match e.create(req, "hall", None) {
        Err(PaymentError::Invalid { code, .. }) => code.to_string(),
        Err(PaymentError::NotFound(what)) => format!("404 {what}"),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(basket(
            &r,
            &[("bakery", 800), ("kiosk", 450)],
            CaptureMode::Automatic
        )),
        "split_needs_separate_charges"
    );
    assert_eq!(
        code(basket(
            &r,
            &[("bakery", 800), ("nobody", 450)],
            CaptureMode::Automatic
        )),
        "404 merchant"
    );
    let mut wrong_sum = basket(&r, THREE, CaptureMode::Automatic);
    wrong_sum.amount += 1;
    assert_eq!(code(wrong_sum), "invalid_splits");
    let mut tip = basket(&r, THREE, CaptureMode::Automatic);
    tip.tip_merchant = Some("kiosk".into());
    assert_eq!(code(tip), "invalid_tip_merchant");
    // Idempotent creation: the same key and body give the same basket.
    let a = e
        .create(basket(&r, THREE, CaptureMode::Manual), "hall", Some("b-1"))
        .unwrap();
    let b = e
        .create(basket(&r, THREE, CaptureMode::Manual), "hall", Some("b-1"))
        .unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(a.splits.len(), 3);
    // Cancel before the authorisation: nothing is transferred.
    let c = e.cancel(&a.id).await.unwrap();
    let c = wait_status(e, &c.id, Status::Canceled).await;
    assert!(c
        .splits
        .iter()
        .all(|s| s.transfer_status == TransferStatus::NotDue));
    assert!(transfers_of(&h.env, &a.id).await.is_empty());
}

#[tokio::test]
async fn a_declined_basket_is_retried_and_a_canceled_authorisation_transfers_nothing() {
    let h = hall().await;
    let r = h.env.readers[0].clone();
    let e = &h.env.engine;
    let p = e
        .create(basket(&r, THREE, CaptureMode::Manual), "hall", None)
        .unwrap();
    wait_on_reader(&h.env, &p.id).await;
    h.env
        .sim
        .present_card(&r, Some(crate::payments_flow::DECLINE_INSUFFICIENT))
        .unwrap();
    wait_status(e, &p.id, Status::Declined).await;
    e.retry(&p.id).await.unwrap();
    wait_on_reader(&h.env, &p.id).await;
    h.env.sim.present_card(&r, None).unwrap();
    wait_status(e, &p.id, Status::RequiresCapture).await;
    assert_eq!(
        h.env.sim.payment_intent_count(None),
        1,
        "the same PaymentIntent"
    );
    e.cancel(&p.id).await.unwrap();
    let p = wait_status(e, &p.id, Status::Canceled).await;
    assert!(p.splits.iter().all(|s| s.transfer.is_none()));
    assert!(transfers_of(&h.env, &p.id).await.is_empty());
}

#[tokio::test]
async fn transfers_survive_a_5xx_and_a_dropped_connection_without_doubling() {
    for rule in [
        FaultRule::new(FaultKind::Error, "POST", TRANSFERS).times(2),
        FaultRule::new(FaultKind::DropAfter, "POST", TRANSFERS).times(1),
        FaultRule::new(FaultKind::DropBefore, "POST", TRANSFERS).times(1),
        FaultRule::new(FaultKind::ErrorStored, "POST", TRANSFERS).times(1),
        FaultRule::new(FaultKind::ErrorStored, "POST", TRANSFERS)
            .times(1)
            .executed(false),
    ] {
        let what = format!("{rule:?}");
        let h = hall_with(with_faults(vec![rule])).await;
        let r = h.env.readers[0].clone();
        let p = h
            .env
            .engine
            .create(basket(&r, THREE, CaptureMode::Automatic), "hall", None)
            .unwrap();
        wait_on_reader(&h.env, &p.id).await;
        h.env.sim.present_card(&r, None).unwrap();
        wait_status(&h.env.engine, &p.id, Status::Succeeded).await;
        // Whatever the first attempt met, the sweep finishes what is left.
        for _ in 0..3 {
            let p = h.env.engine.get(&p.id).unwrap().unwrap();
            if p.splits
                .iter()
                .all(|s| s.transfer_status == TransferStatus::Succeeded)
            {
                break;
            }
            h.env.engine.sweep().await;
        }
        transfers_made(&h.env.engine, &p.id).await;
        assert_eq!(transfers_of(&h.env, &p.id).await.len(), 3, "{what}");
        books_match_report(&h);
    }
}

#[tokio::test]
async fn reversals_survive_a_5xx_and_a_dropped_connection_without_doubling() {
    for rule in [
        FaultRule::new(FaultKind::Error, "POST", REVERSALS).times(2),
        FaultRule::new(FaultKind::DropAfter, "POST", REVERSALS).times(1),
        FaultRule::new(FaultKind::ErrorStored, "POST", REVERSALS).times(1),
        FaultRule::new(FaultKind::ErrorStored, "POST", REVERSALS)
            .times(1)
            .executed(false),
    ] {
        let what = format!("{rule:?}");
        let h = hall().await;
        let p = paid(&h, THREE).await;
        h.env.sim.set_faults(readerd::sim::Faults {
            rules: vec![rule],
            ..Default::default()
        });
        let first = h
            .env
            .engine
            .refund_for(&p.id, Some(450), Some("florist"), "hall", None)
            .await;
        if first.is_err() {
            h.env.engine.sweep().await;
        }
        let tr = transfers_of(&h.env, &p.id)
            .await
            .into_iter()
            .find(|t| t.destination.id() == h.env.accounts["florist"])
            .unwrap();
        let reversals = h
            .env
            .stripe
            .list_transfer_reversals(&tr.id, &RequestOptions::platform())
            .await
            .unwrap();
        assert_eq!(reversals.len(), 1, "{what}: one reversal per refund");
        assert_eq!(tr.amount_reversed, 430, "{what}");
        books_match_report(&h);
    }
}

#[tokio::test]
async fn a_refused_transfer_shows_on_the_payment_is_counted_and_retried_within_a_bound() {
    let h = hall().await;
    let cheese = h.env.accounts["cheese"].clone();
    // The cheese merchant's transfers capability goes off mid-run.
    h.env
        .sim
        .set_transfers_capability(&cheese, CapabilityStatus::Inactive);
    let r = h.env.readers[0].clone();
    let p = h
        .env
        .engine
        .create(basket(&r, THREE, CaptureMode::Automatic), "hall", None)
        .unwrap();
    wait_on_reader(&h.env, &p.id).await;
    h.env.sim.present_card(&r, None).unwrap();
    wait_status(&h.env.engine, &p.id, Status::Succeeded).await;
    let p = wait_until(&h.env.engine, &p.id, "refused", |p| {
        p.splits[2].transfer_status == TransferStatus::Refused
            && p.splits[..2]
                .iter()
                .all(|s| s.transfer_status == TransferStatus::Succeeded)
    })
    .await;
    let err = p.splits[2].transfer_error.clone().unwrap();
    assert_eq!(err.code, "insufficient_capabilities_for_transfer");
    assert!(h
        .metrics
        .render()
        .contains(r#"readerd_transfers_total{merchant="cheese",result="refused"} 1"#));
    // The reader is free: another basket goes through meanwhile.
    let other = paid(&h, &[("bakery", 500), ("florist", 600)]).await;
    assert_eq!(other.status, Status::Succeeded);
    // Refused again up to the bound, then left for the operator.
    for _ in 0..10 {
        h.env.engine.sweep().await;
    }
    let p = h.env.engine.get(&p.id).unwrap().unwrap();
    assert_eq!(p.splits[2].transfer_status, TransferStatus::Failed);
    assert_eq!(p.splits[2].transfer_attempts, 5);
    assert!(h
        .metrics
        .render()
        .contains(r#"readerd_transfers_total{merchant="cheese",result="failed"} 1"#));
    // The report shows the transfer still owed, held by the platform meanwhile.
    let rows = report(&h.env.engine);
    let row = rows.iter().find(|r| r.merchant == "cheese").unwrap();
    assert_eq!((row.pending_transfer, row.net), (300, 0));
    books_match_report(&h);
}

/// Through the HTTP API: a pos client with every merchant of a basket creates, refunds and
/// reports it; one scoped to a single merchant of it gets 404 for it, as for a payment
/// that does not exist, and sees only its own merchant's row in the report.
#[tokio::test]
async fn a_basket_is_visible_only_to_a_caller_with_every_merchant_in_it() {
    use crate::payments_api::{pos_token, start, ADMIN};
    use reqwest::StatusCode;
    use serde_json::{json, Value};
    let api = start(instant_sim()).await;
    let mut accts = BTreeMap::new();
    for (m, fee) in [("deli", 50), ("bar", 0)] {
        let acct = api
            .sim
            .create_account("US", "usd", CapabilityStatus::Active);
        let (s, b) = api
            .post(
                ADMIN,
                "/v1/merchants",
                json!({"id": m, "account": acct, "display_name": m, "charge_type": "separate", "application_fee_amount": fee}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["charge_type"], "separate");
        accts.insert(m, acct);
    }
    let (s, loc) = api
        .post(
            ADMIN,
            "/v1/locations",
            json!({"display_name": "Hall", "address": {"line1": "1 Market St", "city": "San Francisco", "state": "CA", "postal_code": "94105", "country": "US"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{loc}");
    let (s, r) = api
        .post(
            ADMIN,
            "/v1/readers",
            json!({"registration_code": "simulated-wpe", "label": "hall", "location": loc["id"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let reader = r["id"].as_str().unwrap().to_string();
    let hall = pos_token("hall");
    let deli = pos_token("deli");
    let body = json!({"reader": "hall", "amount": 2000, "currency": "usd",
        "splits": [{"merchant": "deli", "amount": 1500}, {"merchant": "bar", "amount": 500}]});
    // The deli's own desk cannot name the bar: 404, as for a merchant that does not exist.
    let (s, e) = api.post(&deli, "/v1/payments", body.clone()).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    // A destination merchant cannot be in a basket.
    let (s, e) = api
        .post(
            ADMIN,
            "/v1/payments",
            json!({"reader": "till-1", "amount": 2000, "currency": "eur",
                "splits": [{"merchant": "bakery", "amount": 1500}, {"merchant": "florist", "amount": 500}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "split_needs_separate_charges", "{e}");
    let (s, p) = api
        .post_key(&hall, "/v1/payments", "b-1", body.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    let (_, again) = api.post_key(&hall, "/v1/payments", "b-1", body).await;
    assert_eq!(again["id"], id.as_str(), "idempotent creation");
    api.wait_card(&hall, &id).await;
    api.sim.present_card(&reader, None).unwrap();
    let p = api
        .wait(&hall, &id, "transferred", |p| {
            p["splits"]
                .as_array()
                .is_some_and(|s| s.iter().all(|s| s["transfer_status"] == "succeeded"))
        })
        .await;
    let split = &p["splits"][0];
    assert_eq!(
        (
            &split["merchant"],
            &split["amount"],
            &split["fee"],
            &split["transferred"],
            &split["reversed"]
        ),
        (
            &json!("deli"),
            &json!(1500),
            &json!(50),
            &json!(1450),
            &json!(0)
        )
    );
    assert!(split["transfer"].as_str().unwrap().starts_with("tr_"));
    // One merchant's desk: the basket does not exist for it.
    let (s, _) = api.get(&deli, &format!("/v1/payments/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .post(
            &deli,
            &format!("/v1/payments/{id}/refunds"),
            json!({"merchant": "deli"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = api.get(&deli, "/v1/payments").await;
    assert!(!list.to_string().contains(&id));
    // The hall's desk refunds the bar's share: the merchant must be named.
    let refunds = format!("/v1/payments/{id}/refunds");
    let (s, e) = api.post(&hall, &refunds, json!({"amount": 100})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "merchant_required");
    let (s, r) = api
        .post(&hall, &refunds, json!({"merchant": "bar", "amount": 200}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["merchant"], "bar");
    assert_eq!(r["reversal_amount"], 200);
    assert!(r["reversal"].as_str().unwrap().starts_with("trr_"));
    // The report, as JSON and as CSV, against the emulator's books.
    let today = "from=2000-01-01&to=2100-01-01";
    let (s, rows) = api
        .get(&hall, &format!("/v1/reports/settlement?{today}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{rows}");
    let books = serde_json::to_value(api.sim.balances()).unwrap();
    let rows = rows.as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        let m = row["merchant"].as_str().unwrap();
        assert_eq!(row["net"], books[&accts[m]]["usd"]["net"], "{m}: {row}");
    }
    let fees: i64 = rows.iter().map(|r| r["fees"].as_i64().unwrap()).sum();
    assert_eq!(books["platform"]["usd"]["net"], fees);
    let bar = rows.iter().find(|r| r["merchant"] == "bar").unwrap();
    assert_eq!(
        bar,
        &json!({"merchant": "bar", "currency": "usd", "payments": 1, "gross": 500,
            "refunded": 200, "fees": 0, "transferred": 500, "reversed": 200,
            "pending_transfer": 0, "net": 300})
    );
    let csv = api
        .http
        .get(format!("{}/v1/reports/settlement?{today}", api.url))
        .bearer_auth(&hall)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    assert!(
        csv.contains("\nbar,usd,1,500,200,0,500,200,0,300\n"),
        "{csv}"
    );
    // The deli's desk sees the deli's row only, and cannot ask for the bar's.
    let (_, mine) = api
        .get(&deli, &format!("/v1/reports/settlement?{today}"))
        .await;
    assert_eq!(
        mine.as_array()
            .unwrap()
            .iter()
            .map(|r| r["merchant"].clone())
            .collect::<Vec<Value>>(),
        vec![json!("deli")]
    );
    let (s, _) = api
        .get(
            &deli,
            &format!("/v1/reports/settlement?{today}&merchant=bar"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The command line: the same CSV, and a table in money.
    let cli = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_readerd"));
        c.args(["report", "--from", "2000-01-01", "--to", "2100-01-01"])
            .args(args)
            .env("READERD_API", &api.url)
            .env("READERD_TOKEN", &hall);
        c
    };
    let out = cli(&["--csv", "--merchant", "bar"]).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "merchant,currency,payments,gross,refunded,fees,transferred,reversed,pending_transfer,net\nbar,usd,1,500,200,0,500,200,0,300\n"
    );
    let out = cli(&[]).output().await.unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(table.starts_with("MERCHANT"), "{table}");
    assert!(table.contains("3.00 USD"), "{table}");
}

/// The emulator enforces Stripe's rules for transfers and reversals.
#[tokio::test]
async fn the_emulator_refuses_transfers_and_reversals_stripe_refuses() {
    use readerd::stripe::params::{CreateTransfer, CreateTransferReversal};
    let h = hall().await;
    let p = paid(&h, &[("bakery", 800), ("florist", 450)]).await;
    let platform = RequestOptions::platform();
    let pi = h
        .env
        .stripe
        .retrieve_payment_intent(
            p.payment_intent.as_deref().unwrap(),
            &["latest_charge"],
            &platform,
        )
        .await
        .unwrap();
    let charge = pi.latest_charge.unwrap().id().to_string();
    let transfer = |amount: i64, dest: &str, source: Option<&str>| CreateTransfer {
        amount,
        currency: "usd".into(),
        destination: dest.to_string(),
        source_transaction: source.map(str::to_string),
        transfer_group: None,
        metadata: Default::default(),
    };
    let code = |e: readerd::stripe::StripeError| e.code().unwrap_or("").to_string();
    let cheese = h.env.accounts["cheese"].clone();
    // 760 + 430 already left the 1250 charge: 61 more would exceed it.
    let e = h
        .env
        .stripe
        .create_transfer(&transfer(61, &cheese, Some(&charge)), &platform)
        .await
        .unwrap_err();
    assert_eq!(code(e), "transfer_source_balance_parameters_mismatch");
    let ok = h
        .env
        .stripe
        .create_transfer(&transfer(60, &cheese, Some(&charge)), &platform)
        .await
        .unwrap();
    // Not a charge of the platform's.
    let e = h
        .env
        .stripe
        .create_transfer(&transfer(10, &cheese, Some("ch_nope")), &platform)
        .await
        .unwrap_err();
    assert_eq!(code(e), "resource_missing");
    // The destination needs its transfers capability.
    h.env
        .sim
        .set_transfers_capability(&cheese, CapabilityStatus::Inactive);
    let e = h
        .env
        .stripe
        .create_transfer(&transfer(10, &cheese, None), &platform)
        .await
        .unwrap_err();
    assert_eq!(code(e), "insufficient_capabilities_for_transfer");
    // A reversal never exceeds what is left of the transfer.
    let rev = |amount| CreateTransferReversal {
        amount: Some(amount),
        metadata: Default::default(),
    };
    h.env
        .stripe
        .create_transfer_reversal(&ok.id, &rev(40), &platform)
        .await
        .unwrap();
    assert!(h
        .env
        .stripe
        .create_transfer_reversal(&ok.id, &rev(21), &platform)
        .await
        .is_err());
    let t = h
        .env
        .stripe
        .retrieve_transfer(&ok.id, &platform)
        .await
        .unwrap();
    assert_eq!((t.amount_reversed, t.reversed), (40, false));
    // Transfer events were sent.
    let kinds: Vec<String> = h.env.sim.events().into_iter().map(|e| e.kind).collect();
    assert!(kinds.iter().any(|k| k == "transfer.created"));
    assert!(kinds.iter().any(|k| k == "transfer.reversed"));
}

/// A basket's refund on the reader takes the same shape as a plain one: out of the named
/// merchant's share, then the reversal of that merchant's transfer once the refund is made.
#[tokio::test]
async fn a_basket_refund_on_the_reader_reverses_the_merchants_transfer_once_made() {
    let h = hall().await;
    let p = paid(&h, THREE).await;
    let e = &h.env.engine;
    let r = h.env.readers[0].clone();
    let (_, rf) = e
        .refund_on_reader(&p.id, Some(200), Some("florist"), None, "hall", None)
        .await
        .unwrap();
    assert_eq!((rf.split, rf.reversal_amount), (Some(1), 191));
    assert!(
        !rf.reverse_transfer,
        "a separate charge's transfer is ours to reverse"
    );
    // Pending, it holds the florist's share back.
    assert!(e
        .refund_for(&p.id, Some(251), Some("florist"), "hall", None)
        .await
        .is_err());
    for _ in 0..500 {
        let on = h.env.stripe.retrieve_reader(&r).await.unwrap().action;
        if on.is_some_and(|a| a.refund_payment.is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(e
        .refund_record(&p.id, &rf.id)
        .unwrap()
        .unwrap()
        .reversal
        .is_none());
    h.env.sim.present_card(&r, None).unwrap();
    let mut done = None;
    for _ in 0..500 {
        let x = e.refund_record(&p.id, &rf.id).unwrap().unwrap();
        if x.reversal.is_some() {
            done = Some(x);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let done = done.expect("the reversal is made after the refund");
    assert_eq!(done.status, RefundStatus::Succeeded);
    let p2 = e.get(&p.id).unwrap().unwrap();
    assert_eq!((p2.splits[1].refunded, p2.splits[1].reversed), (200, 191));
    books_match_report(&h);
}
