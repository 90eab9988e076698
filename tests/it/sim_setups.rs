//! The emulator's SetupIntents, `process_setup_intent` and a card presented for it, driven
//! the way Stripe's docs describe: raw form requests, Stripe's refusals, the one action
//! slot, the events.

use crate::common::sim_client::{instant, world, Api, Resp};
use readerd::stripe::form::Params;
use serde_json::Value;

async fn create(api: &Api, account: Option<&str>, types: &[&str]) -> Resp {
    let mut p = Params::new();
    for t in types {
        p.push("payment_method_types[]", *t);
    }
    p.push("customer", "cus_guest1")
        .push("usage", "off_session")
        .push("metadata[order]", "42");
    api.post("/v1/setup_intents", &p, account).await
}

async fn process(api: &Api, reader: &str, seti: &str, redisplay: Option<&str>) -> Resp {
    let mut p = Params::new();
    p.push("setup_intent", seti);
    if let Some(r) = redisplay {
        p.push("allow_redisplay", r);
    }
    api.post(
        &format!("/v1/terminal/readers/{reader}/process_setup_intent"),
        &p,
        None,
    )
    .await
}

async fn get(api: &Api, account: Option<&str>, seti: &str) -> Value {
    let mut q = Params::new();
    q.push("expand[]", "latest_attempt");
    api.get(&format!("/v1/setup_intents/{seti}"), &q, account)
        .await
        .ok()
}

#[tokio::test]
async fn a_card_is_saved_with_a_generated_card_and_events() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let acct = Some(w.account.as_str());
    let si = create(&api, acct, &["card_present"]).await.ok();
    assert_eq!(si["status"], "requires_payment_method");
    assert_eq!(si["usage"], "off_session");
    assert_eq!(si["metadata"]["order"], "42");
    let seti = si["id"].as_str().unwrap().to_string();
    // A platform-owned reader takes its connected account's SetupIntent (preview).
    let v = process(&api, &w.reader, &seti, Some("always")).await.ok();
    assert_eq!(v["action"]["type"], "process_setup_intent");
    assert_eq!(v["action"]["status"], "in_progress");
    assert_eq!(v["action"]["process_setup_intent"]["setup_intent"], seti);
    // One action at a time.
    process(&api, &w.reader, &seti, Some("always"))
        .await
        .err(400, Some("terminal_reader_busy"));

    let v = api.present(&w.reader, None).await.ok();
    assert_eq!(v["action"]["status"], "succeeded");
    let generated = v["action"]["process_setup_intent"]["generated_card"]
        .as_str()
        .unwrap()
        .to_string();
    let si = get(&api, acct, &seti).await;
    assert_eq!(si["status"], "succeeded");
    let attempt = &si["latest_attempt"];
    assert_eq!(attempt["object"], "setup_attempt");
    assert_eq!(attempt["status"], "succeeded");
    assert_eq!(
        attempt["payment_method_details"]["card_present"]["generated_card"],
        generated.as_str()
    );
    assert_ne!(si["payment_method"], generated.as_str());
    let kinds: Vec<String> = sim.events().iter().map(|e| e.kind.clone()).collect();
    for k in [
        "setup_intent.created",
        "setup_intent.succeeded",
        "terminal.reader.action_succeeded",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    // Only its own account sees it.
    api.get(&format!("/v1/setup_intents/{seti}"), &Params::new(), None)
        .await
        .err(404, Some("resource_missing"));
    // Succeeded: neither processed again nor canceled.
    process(&api, &w.reader, &seti, Some("always"))
        .await
        .err(400, Some("intent_invalid_state"));
    api.post(
        &format!("/v1/setup_intents/{seti}/cancel"),
        &Params::new(),
        acct,
    )
    .await
    .err(400, Some("setup_intent_unexpected_state"));
}

#[tokio::test]
async fn a_refused_card_fails_the_action_and_the_setup_intent_may_be_canceled() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let si = create(&api, None, &["card_present"]).await.ok();
    let seti = si["id"].as_str().unwrap().to_string();
    process(&api, &w.reader, &seti, Some("limited")).await.ok();
    let v = api.present(&w.reader, Some("4000000000000002")).await.ok();
    assert_eq!(v["action"]["status"], "failed");
    assert_eq!(
        v["action"]["failure_code"],
        "setup_intent_authentication_failure"
    );
    let si = get(&api, None, &seti).await;
    assert_eq!(si["status"], "requires_payment_method");
    assert_eq!(
        si["last_setup_error"]["code"],
        "setup_intent_authentication_failure"
    );
    assert!(sim
        .events()
        .iter()
        .any(|e| e.kind == "setup_intent.setup_failed"));
    let mut p = Params::new();
    p.push("cancellation_reason", "abandoned");
    let si = api
        .post(&format!("/v1/setup_intents/{seti}/cancel"), &p, None)
        .await
        .ok();
    assert_eq!(si["status"], "canceled");
    assert_eq!(si["cancellation_reason"], "abandoned");
    // A canceled SetupIntent is not processed.
    process(&api, &w.reader, &seti, Some("limited"))
        .await
        .err(400, Some("intent_invalid_state"));
}

#[tokio::test]
async fn stripes_refusals() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let card_only = create(&api, None, &["card"]).await.ok();
    let ok = create(&api, None, &["card_present"]).await.ok();
    let seti = ok["id"].as_str().unwrap();
    // allow_redisplay is required, and one of three values.
    let e = process(&api, &w.reader, seti, None)
        .await
        .err(400, Some("parameter_missing"));
    assert_eq!(e["param"], "allow_redisplay");
    let e = process(&api, &w.reader, seti, Some("sometimes"))
        .await
        .err(400, None);
    assert_eq!(e["param"], "allow_redisplay");
    // The SetupIntent must accept card_present, and exist where the reader can see it.
    let e = process(
        &api,
        &w.reader,
        card_only["id"].as_str().unwrap(),
        Some("always"),
    )
    .await
    .err(400, None);
    assert_eq!(e["param"], "setup_intent");
    process(&api, &w.reader, "seti_nothing", Some("always"))
        .await
        .err(400, Some("resource_missing"));
    // The retired consent flag is an unknown parameter now.
    let mut p = Params::new();
    p.push("setup_intent", seti)
        .push("allow_redisplay", "always")
        .push("customer_consent_collected", "true");
    api.post(
        &format!("/v1/terminal/readers/{}/process_setup_intent", w.reader),
        &p,
        None,
    )
    .await
    .err(400, Some("parameter_unknown"));
    // SetupIntent creation: a usage Stripe does not know; a customer that is not one.
    let mut p = Params::new();
    p.push("usage", "sometimes");
    api.post("/v1/setup_intents", &p, None).await.err(400, None);
    let mut p = Params::new();
    p.push("customer", "bob");
    api.post("/v1/setup_intents", &p, None)
        .await
        .err(400, Some("resource_missing"));
    // cancel_action clears the reader; the SetupIntent stays open.
    process(&api, &w.reader, seti, Some("always")).await.ok();
    let v = api.cancel_action(&w.reader).await.ok();
    assert!(v["action"].is_null());
    assert_eq!(
        get(&api, None, seti).await["status"],
        "requires_payment_method"
    );
}
