//! The emulator's review before confirm, driven the way Stripe's docs describe:
//! `collect_payment_method` reads the card (PaymentIntent `requires_confirmation`,
//! `terminal.reader.action_updated`), the amount may change, `confirm_payment_intent`
//! authorises it; and Stripe's refusals.

use crate::common::sim_client::{instant, world, Api, Resp};
use readerd::stripe::form::Params;

async fn reader_action(api: &Api, reader: &str, action: &str, pi: &str) -> Resp {
    let mut p = Params::new();
    p.push("payment_intent", pi);
    api.post(&format!("/v1/terminal/readers/{reader}/{action}"), &p, None)
        .await
}

#[tokio::test]
async fn a_card_is_read_then_confirmed_for_the_amount_as_it_stands() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    // Nothing collected yet: Stripe refuses the confirm.
    reader_action(&api, &w.reader, "confirm_payment_intent", &pi)
        .await
        .err(400, Some("intent_invalid_state"));
    let v = reader_action(&api, &w.reader, "collect_payment_method", &pi)
        .await
        .ok();
    assert_eq!(v["action"]["type"], "collect_payment_method");
    assert_eq!(v["action"]["status"], "in_progress");
    // One action at a time.
    let other = api.intent(Some(&w.account), 500, "automatic").await;
    api.process(&w.reader, &other)
        .await
        .err(400, Some("terminal_reader_busy"));

    assert_eq!(
        api.present(&w.reader, Some("5555555555554444"))
            .await
            .status,
        200
    );
    let r = api.get_reader(&w.reader).await;
    let a = &r["action"];
    assert_eq!(a["status"], "succeeded");
    let card = &a["collect_payment_method"]["payment_method"]["card_present"];
    assert_eq!(card["brand"], "mastercard");
    assert_eq!(card["last4"], "4444");
    assert!(sim
        .events()
        .iter()
        .any(|e| e.kind == "terminal.reader.action_updated"));
    let intent = api.get_intent(Some(&w.account), &pi).await;
    assert_eq!(intent["status"], "requires_confirmation");
    assert!(intent["payment_method"]
        .as_str()
        .unwrap()
        .starts_with("pm_"));
    // A second collection for a PaymentIntent that already has its card is refused.
    reader_action(&api, &w.reader, "collect_payment_method", &pi)
        .await
        .err(400, Some("intent_invalid_state"));

    // The amount may still change (a surcharge), then the confirm authorises it.
    let mut up = Params::new();
    up.push("amount", "1150");
    api.post(&format!("/v1/payment_intents/{pi}"), &up, Some(&w.account))
        .await
        .ok();
    let v = reader_action(&api, &w.reader, "confirm_payment_intent", &pi)
        .await
        .ok();
    assert_eq!(v["action"]["type"], "confirm_payment_intent");
    let intent = api.get_intent(Some(&w.account), &pi).await;
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["amount_received"], 1150);
    assert_eq!(
        api.get_reader(&w.reader).await["action"]["status"],
        "succeeded"
    );
    assert!(sim
        .events()
        .iter()
        .any(|e| e.kind == "terminal.reader.action_succeeded"));
    // Paid: its amount can no longer change, and it cannot be confirmed again.
    api.post(&format!("/v1/payment_intents/{pi}"), &up, Some(&w.account))
        .await
        .err(400, Some("payment_intent_unexpected_state"));
    reader_action(&api, &w.reader, "confirm_payment_intent", &pi)
        .await
        .err(400, Some("intent_invalid_state"));
}

#[tokio::test]
async fn a_declined_confirm_puts_the_intent_back_to_waiting_for_a_card() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    reader_action(&api, &w.reader, "collect_payment_method", &pi)
        .await
        .ok();
    assert_eq!(
        api.present(&w.reader, Some("4000000000000002"))
            .await
            .status,
        200
    );
    reader_action(&api, &w.reader, "confirm_payment_intent", &pi)
        .await
        .ok();
    let r = api.get_reader(&w.reader).await;
    assert_eq!(r["action"]["status"], "failed");
    assert_eq!(r["action"]["failure_code"], "card_declined");
    let intent = api.get_intent(Some(&w.account), &pi).await;
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(
        intent["last_payment_error"]["decline_code"],
        "generic_decline"
    );
    // The card is gone with the decline: nothing to confirm until a new one is read.
    reader_action(&api, &w.reader, "confirm_payment_intent", &pi)
        .await
        .err(400, Some("intent_invalid_state"));
}

#[tokio::test]
async fn stripes_refusals_of_a_collection() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    api.post(
        &format!("/v1/terminal/readers/{}/collect_payment_method", w.reader),
        &Params::new(),
        None,
    )
    .await
    .err(400, Some("parameter_missing"));
    reader_action(&api, &w.reader, "collect_payment_method", "pi_nothing")
        .await
        .err(400, Some("resource_missing"));
    let mut bad = Params::new();
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    bad.push("payment_intent", &pi)
        .push("collect_config[allow_redisplay]", "sometimes");
    api.post(
        &format!("/v1/terminal/readers/{}/collect_payment_method", w.reader),
        &bad,
        None,
    )
    .await
    .err(400, None);
}
