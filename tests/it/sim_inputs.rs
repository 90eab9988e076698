//! The emulator's `collect_inputs` and its test helpers, driven the way Stripe's docs
//! describe: raw form requests, Stripe's refusals, the one action slot, the events.

use crate::common::sim_client::{instant, world, Api};
use readerd::stripe::form::Params;
use serde_json::Value;

fn email_form() -> Params {
    let mut p = Params::new();
    p.push("inputs[0][type]", "email")
        .push("inputs[0][custom_text][title]", "Email for the receipt")
        .push("inputs[0][required]", "true")
        .push("inputs[0][toggles][0][title]", "Newsletter")
        .push("inputs[0][toggles][0][default_value]", "enabled")
        .push("inputs[1][type]", "selection")
        .push("inputs[1][custom_text][title]", "Table or bar?")
        .push("inputs[1][selection][choices][0][id]", "table")
        .push("inputs[1][selection][choices][0][text]", "Table")
        .push("inputs[1][selection][choices][1][id]", "bar")
        .push("inputs[1][selection][choices][1][text]", "Bar")
        .push("metadata[order]", "42");
    p
}

async fn collect(api: &Api, reader: &str, p: &Params) -> crate::common::sim_client::Resp {
    api.post(
        &format!("/v1/terminal/readers/{reader}/collect_inputs"),
        p,
        None,
    )
    .await
}

async fn helper(
    api: &Api,
    reader: &str,
    name: &str,
    p: &Params,
) -> crate::common::sim_client::Resp {
    api.post(
        &format!("/v1/test_helpers/terminal/readers/{reader}/{name}"),
        p,
        None,
    )
    .await
}

/// 200, and the reader checked against the wire types and Stripe's schema.
fn body(r: crate::common::sim_client::Resp) -> Value {
    r.ok()
}

#[tokio::test]
async fn inputs_are_collected_answered_and_hold_the_reader() {
    let (sim, api) = instant().await;
    let w = world(&api).await;
    let v = body(collect(&api, &w.reader, &email_form()).await);
    assert_eq!(v["action"]["type"], "collect_inputs");
    assert_eq!(v["action"]["status"], "in_progress");
    assert_eq!(v["action"]["collect_inputs"]["metadata"]["order"], "42");
    // One action at a time.
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    api.process(&w.reader, &pi)
        .await
        .err(400, Some("terminal_reader_busy"));
    collect(&api, &w.reader, &email_form())
        .await
        .err(400, Some("terminal_reader_busy"));
    // A card cannot answer inputs.
    assert_eq!(api.present(&w.reader, None).await.status, 400);

    let mut skip = Params::new();
    skip.push("skip_non_required_inputs", "all");
    let v = body(helper(&api, &w.reader, "succeed_input_collection", &skip).await);
    let inputs = &v["action"]["collect_inputs"]["inputs"];
    assert_eq!(v["action"]["status"], "succeeded");
    assert_eq!(inputs[0]["email"]["value"], "customer@example.com");
    assert_eq!(inputs[0]["skipped"], false);
    assert_eq!(inputs[0]["toggles"][0]["value"], "enabled");
    assert_eq!(inputs[1]["skipped"], true);
    assert!(sim
        .events()
        .iter()
        .any(|e| e.kind == "terminal.reader.action_succeeded"));
    // Over: the reader is free, and the helper has nothing left to answer.
    helper(&api, &w.reader, "succeed_input_collection", &Params::new())
        .await
        .err(400, None);
    api.process(&w.reader, &pi).await.ok();
}

#[tokio::test]
async fn a_timeout_fails_the_action_and_cancel_action_clears_it() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    body(collect(&api, &w.reader, &email_form()).await);
    let v = body(helper(&api, &w.reader, "timeout_input_collection", &Params::new()).await);
    assert_eq!(v["action"]["status"], "failed");
    assert_eq!(v["action"]["failure_code"], "collect_inputs_timed_out");
    body(collect(&api, &w.reader, &email_form()).await);
    let v = api.cancel_action(&w.reader).await.ok();
    assert!(v["action"].is_null());
}

#[tokio::test]
async fn stripes_refusals() {
    let (_sim, api) = instant().await;
    let w = world(&api).await;
    let refused = |kvs: &[(&str, &str)]| {
        let mut p = Params::new();
        for (k, v) in kvs {
            p.push(*k, *v);
        }
        p
    };
    for (p, param) in [
        (Params::new(), "inputs"),
        (
            refused(&[
                ("inputs[0][type]", "colour"),
                ("inputs[0][custom_text][title]", "x"),
            ]),
            "inputs[0][type]",
        ),
        (
            refused(&[("inputs[0][type]", "email")]),
            "inputs[0][custom_text][title]",
        ),
        (
            refused(&[
                ("inputs[0][type]", "selection"),
                ("inputs[0][custom_text][title]", "x"),
            ]),
            "inputs[0][selection][choices]",
        ),
        (
            refused(&[
                ("inputs[0][type]", "text"),
                ("inputs[0][custom_text][title]", "x"),
                (
                    "inputs[0][custom_text][skip_button]",
                    "a very long skip label",
                ),
            ]),
            "inputs[0][custom_text][skip_button]",
        ),
        (
            refused(&[
                ("inputs[0][type]", "email"),
                ("inputs[0][custom_text][title]", "x"),
                ("inputs[0][colour]", "red"),
            ]),
            "inputs[0][colour]",
        ),
    ] {
        let e = collect(&api, &w.reader, &p).await.err(400, e_code(param));
        assert_eq!(e["param"], param, "{e}");
    }
    let mut six = Params::new();
    for i in 0..6 {
        six.push(format!("inputs[{i}][type]"), "email")
            .push(format!("inputs[{i}][custom_text][title]"), "x");
    }
    collect(&api, &w.reader, &six).await.err(400, None);
    // Nothing to answer or time out on a free reader.
    helper(&api, &w.reader, "timeout_input_collection", &Params::new())
        .await
        .err(400, None);
}

/// The error code Stripe gives for each refused parameter above.
fn e_code(param: &str) -> Option<&'static str> {
    match param {
        "inputs" | "inputs[0][custom_text][title]" | "inputs[0][selection][choices]" => {
            Some("parameter_missing")
        }
        "inputs[0][colour]" => Some("parameter_unknown"),
        _ => None,
    }
}
