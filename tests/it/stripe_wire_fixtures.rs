//! Stripe's own example objects (`../shared/stripe-fixtures`: the newest fixtures, the
//! 2023 fixtures that match the OpenAPI subset, and stripe-mock's responses) against the
//! shared wire types: every object parses into its type, and what the type writes back is
//! the same data (a subset of the original, value for value), so the emulator, which
//! writes these types, never invents a field or changes a value. Unknown enum values
//! survive a round trip as data.

use crate::common::fixtures_dir;
use readerd::stripe::wire::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Debug;
use std::path::{Path, PathBuf};

/// Every fixture file, with its path relative to the fixtures directory.
fn fixture_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for sub in ["", "spec-2023-09-12", "stripe-mock-responses"] {
        let d = dir.join(sub);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name == "openapi-terminal-subset.json" {
                continue;
            }
            let rel = if sub.is_empty() {
                name
            } else {
                format!("{sub}/{name}")
            };
            out.push((rel, p));
        }
    }
    out
}

/// `ours` holds nothing that `original` does not: every key we write is in the original,
/// with the same value. (Fields we do not model are simply absent from `ours`.)
fn assert_subset(ours: &Value, original: &Value, at: &str) {
    match (ours, original) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let here = format!("{at}.{k}");
                match b.get(k) {
                    Some(w) => assert_subset(v, w, &here),
                    None => panic!("{here}: written as {v} but absent from Stripe's object"),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: array length");
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                assert_subset(v, w, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(ours, original, "{at}"),
    }
}

/// Parses `v` as `T`, writes it back, checks the subset rule, and parses the result again
/// to the same value.
fn round_trip<T>(name: &str, v: &Value) -> T
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let parsed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!(
            "{name}: does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    });
    let written = serde_json::to_value(&parsed).unwrap();
    assert_subset(&written, v, name);
    let again: T = serde_json::from_value(written).unwrap();
    assert_eq!(again, parsed, "{name}: second parse differs");
    parsed
}

/// Which wire type a Stripe object is, by its `object` field (and for lists, its `url`).
fn check_object(name: &str, v: &Value) -> &'static str {
    let object = v.get("object").and_then(Value::as_str);
    let deleted = v.get("deleted").and_then(Value::as_bool) == Some(true);
    match object {
        Some("account") => {
            let a: Account = round_trip(name, v);
            assert!(a.id.starts_with("acct_"), "{name}");
            "Account"
        }
        Some("terminal.reader") | Some("terminal.location") if deleted => {
            let d: Deleted = round_trip(name, v);
            assert!(d.deleted);
            "Deleted"
        }
        Some("terminal.reader") => {
            let r: Reader = round_trip(name, v);
            assert!(r.id.starts_with("tmr_"), "{name}");
            "Reader"
        }
        Some("terminal.location") => {
            let l: Location = round_trip(name, v);
            assert!(l.id.starts_with("tml_"), "{name}");
            "Location"
        }
        Some("payment_intent") => {
            let p: PaymentIntent = round_trip(name, v);
            assert!(p.id.starts_with("pi_"), "{name}");
            "PaymentIntent"
        }
        Some("list") => match v.get("url").and_then(Value::as_str) {
            Some("/v1/terminal/readers") => {
                let l: List<Reader> = round_trip(name, v);
                assert!(!l.data.is_empty(), "{name}");
                "List<Reader>"
            }
            Some("/v1/terminal/locations") => {
                let l: List<Location> = round_trip(name, v);
                assert!(!l.data.is_empty(), "{name}");
                "List<Location>"
            }
            other => panic!("{name}: a list of {other:?}: no test knows it"),
        },
        // readerd drives readers from the server and never asks for connection tokens
        // (those are for the client-side SDKs), so it has no type for them.
        Some("terminal.connection_token") => "skipped: connection tokens are not used",
        None if v.get("error").is_some() => {
            let e: ErrorEnvelope = round_trip(name, v);
            assert!(e.error.message.is_some(), "{name}");
            "ErrorEnvelope"
        }
        other => panic!("{name}: object {other:?}: no test knows it"),
    }
}

#[test]
fn every_fixture_parses_into_its_wire_type_and_writes_back_the_same_data() {
    let Some(dir) = fixtures_dir() else { return };
    let files = fixture_files(&dir);
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for (name, path) in &files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let kind = check_object(name, &v);
        println!("{name}: {kind}");
        *kinds.entry(kind).or_default() += 1;
    }
    // Every file was looked at, and each type was met at least once.
    assert_eq!(kinds.values().sum::<usize>(), files.len());
    for k in [
        "Account",
        "Deleted",
        "Reader",
        "Location",
        "PaymentIntent",
        "List<Reader>",
        "List<Location>",
        "ErrorEnvelope",
    ] {
        assert!(kinds.contains_key(k), "no fixture of {k}: {kinds:?}");
    }
}

fn load(rel: &str) -> Option<Value> {
    let dir = fixtures_dir()?;
    let text = std::fs::read_to_string(dir.join(rel)).unwrap();
    Some(serde_json::from_str(&text).unwrap())
}

#[test]
fn reader_actions_from_fixtures_read_as_their_facts() {
    let Some(v) = load("terminal.reader.action-process_payment_intent.json") else {
        return;
    };
    let r: Reader = serde_json::from_value(v).unwrap();
    let a = r.action.unwrap();
    assert_eq!(a.kind, ActionType::ProcessPaymentIntent);
    assert_eq!(a.status, ActionStatus::Failed);
    assert_eq!(a.api_error.unwrap().kind, ErrorType::IdempotencyError);
    assert_eq!(r.last_seen_at, None);

    let Some(v) =
        load("stripe-mock-responses/terminal.reader.expand-action.process_payment_intent.json")
    else {
        return;
    };
    let r: Reader = serde_json::from_value(v.clone()).unwrap();
    let ppi = r.action.unwrap().process_payment_intent.unwrap();
    let pi = ppi
        .payment_intent
        .object()
        .expect("the expanded PaymentIntent is read as an object");
    assert_eq!(
        ppi.payment_intent.id(),
        v["action"]["process_payment_intent"]["payment_intent"]["id"]
    );
    assert_eq!(pi.id, ppi.payment_intent.id());

    let Some(v) = load("terminal.reader.no-action.json") else {
        return;
    };
    let r: Reader = serde_json::from_value(v).unwrap();
    assert!(r.action.is_none());
    assert_eq!(r.status, Some(ReaderStatus::Online));
}

#[test]
fn payment_intent_fixture_keeps_its_filler_values() {
    let Some(v) = load("payment_intent.json") else {
        return;
    };
    let p: PaymentIntent = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(p.status, PaymentIntentStatus::RequiresPaymentMethod);
    assert_eq!(p.amount, v["amount"].as_i64().unwrap());
    // `last_payment_error: {"type": "idempotency_error"}` with nothing else.
    if v["last_payment_error"].is_object() {
        let e = p.last_payment_error.as_ref().unwrap();
        assert_eq!(e.kind.as_str(), v["last_payment_error"]["type"]);
    }
}

#[test]
fn unknown_enum_values_survive_a_round_trip() {
    let reader = json!({
        "id": "tmr_future", "object": "terminal.reader",
        "action": {
            "type": "print_content", "status": "paused_by_operator",
            "failure_code": null, "failure_message": null,
            "api_error": {"type": "temporary_error", "code": "something_new"}
        },
        "device_sw_version": "9.9.9", "device_type": "stripe_t600",
        "ip_address": null, "label": "Future", "livemode": false, "location": "tml_1",
        "metadata": {}, "serial_number": "T600-1", "status": "napping",
        "a_field_stripe_adds_next_month": {"nested": true}
    });
    let r: Reader = round_trip_ignoring_unknown_fields("reader", &reader);
    assert_eq!(r.device_type, DeviceType::Other("stripe_t600".into()));
    assert_eq!(r.status, Some(ReaderStatus::Other("napping".into())));
    let a = r.action.as_ref().unwrap();
    assert_eq!(a.kind, ActionType::Other("print_content".into()));
    assert_eq!(a.status, ActionStatus::Other("paused_by_operator".into()));
    assert_eq!(
        a.api_error.as_ref().unwrap().kind,
        ErrorType::Other("temporary_error".into())
    );
    let written = serde_json::to_value(&r).unwrap();
    assert_eq!(written["device_type"], "stripe_t600");
    assert_eq!(written["status"], "napping");
    assert_eq!(written["action"]["type"], "print_content");
    assert_eq!(written["action"]["status"], "paused_by_operator");
    assert_eq!(written["action"]["api_error"]["type"], "temporary_error");
    assert!(written.get("a_field_stripe_adds_next_month").is_none());

    let pi = json!({
        "id": "pi_future", "object": "payment_intent", "amount": 1000,
        "capture_method": "manual_preferred_someday", "created": 1, "currency": "eur",
        "livemode": false, "payment_method_types": ["card_present", "future_present"],
        "status": "requires_reauthorization"
    });
    let p: PaymentIntent = serde_json::from_value(pi).unwrap();
    assert_eq!(
        p.status,
        PaymentIntentStatus::Other("requires_reauthorization".into())
    );
    let written = serde_json::to_value(&p).unwrap();
    assert_eq!(written["status"], "requires_reauthorization");
    assert_eq!(written["capture_method"], "manual_preferred_someday");
    let again: PaymentIntent = serde_json::from_value(written).unwrap();
    assert_eq!(again, p);
}

/// Like [`round_trip`] but for an object that carries fields no type declares: they are
/// dropped, everything else is kept.
fn round_trip_ignoring_unknown_fields<T>(name: &str, v: &Value) -> T
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let parsed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let written = serde_json::to_value(&parsed).unwrap();
    assert_subset(&written, v, name);
    let again: T = serde_json::from_value(written).unwrap();
    assert_eq!(again, parsed);
    parsed
}

#[test]
fn a_refund_with_stripes_nullable_fields_null_parses() {
    // The schema marks refund `metadata`, `charge`, `payment_intent`, `reason`, `status`
    // nullable.
    let v = json!({"id": "re_1", "object": "refund", "amount": 100, "created": 1,
        "currency": "eur", "metadata": null, "charge": null, "payment_intent": null,
        "reason": null, "status": null, "balance_transaction": null});
    let r: Refund = serde_json::from_value(v).unwrap();
    assert!(r.metadata.is_empty());
    assert_eq!(r.amount, 100);
}
