//! Webhooks from the emulator: signed as Stripe signs them, from the right account,
//! retried while the endpoint fails, and duplicated when asked to.

use crate::common::sim_client::{check_any, emulator, world};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use readerd::sim::{Faults, SimConfig, WebhookTarget};
use readerd::stripe::webhook;
use readerd::stripe::wire::Event;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const SECRET: &str = "whsec_test_secret";

struct Receiver {
    /// Answer 500 to this many deliveries first.
    fail_first: AtomicU32,
    tx: mpsc::UnboundedSender<Event>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now = readerd::sim::state::now_secs();
    if webhook::verify(SECRET, sig, &body, now, webhook::DEFAULT_TOLERANCE_SECS).is_err() {
        return StatusCode::BAD_REQUEST;
    }
    if r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let event: Event = serde_json::from_slice(&body).expect("an Event");
    let _ = r.tx.send(event);
    StatusCode::OK
}

async fn receiver(fail_first: u32) -> (String, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(Receiver {
        fail_first: AtomicU32::new(fail_first),
        tx,
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("an event in time")
        .expect("an event")
}

#[tokio::test(start_paused = true)]
async fn events_are_signed_scoped_and_retried_until_delivered() {
    // The endpoint fails twice: the first event is retried with backoff.
    let (url, mut rx) = receiver(2).await;
    let (_sim, api) = emulator(SimConfig {
        auth_delay: Duration::ZERO,
        webhook: Some(WebhookTarget {
            url,
            secret: SECRET.into(),
        }),
        ..SimConfig::default()
    })
    .await;
    let w = world(&api).await;
    let pi = api.intent(Some(&w.account), 1000, "automatic").await;
    api.process(&w.reader, &pi).await.ok();
    api.present(&w.reader, Some("4000000000000002")).await.ok();
    api.process(&w.reader, &pi).await.ok();
    api.present(&w.reader, None).await.ok();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next(&mut rx).await);
    }
    got.sort_by_key(|e| e.kind.clone());
    let kinds: Vec<(&str, Option<&str>)> = got
        .iter()
        .map(|e| (e.kind.as_str(), e.account.as_deref()))
        .collect();
    let acct = Some(w.account.as_str());
    assert_eq!(
        kinds,
        vec![
            ("payment_intent.created", acct),
            ("payment_intent.payment_failed", acct),
            ("payment_intent.succeeded", acct),
            ("terminal.reader.action_failed", None),
            ("terminal.reader.action_succeeded", None),
        ]
    );
    let failed = &got[3];
    assert_eq!(
        failed.data.object["action"]["failure_code"],
        "card_declined"
    );
    assert_eq!(failed.data.object["id"], w.reader.as_str());
    assert_eq!(got[2].data.object["id"], pi.as_str());
    assert!(got
        .iter()
        .all(|e| e.id.starts_with("evt_") && e.object == "event"));
    for e in &got {
        check_any(&e.data.object);
    }
    // The request that caused it is named.
    assert!(got[0]
        .request
        .as_ref()
        .unwrap()
        .id
        .as_deref()
        .unwrap()
        .starts_with("req_"));
}

#[tokio::test(start_paused = true)]
async fn events_can_be_duplicated_and_delayed() {
    let (url, mut rx) = receiver(0).await;
    let (sim, api) = emulator(SimConfig {
        webhook: Some(WebhookTarget {
            url,
            secret: SECRET.into(),
        }),
        faults: Faults {
            webhook_duplicate_rate: 1.0,
            webhook_delay_ms: 2_000,
            webhook_reorder: true,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let a = api.account("US").await;
    let started = tokio::time::Instant::now();
    let pi = api.intent(Some(&a), 1000, "manual").await;
    let first = next(&mut rx).await;
    let second = next(&mut rx).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(first.id, second.id);
    assert_eq!(first.kind, "payment_intent.created");
    assert_eq!(first.data.object["id"], pi.as_str());
    assert_eq!(sim.events().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn events_queued_during_the_delay_can_arrive_out_of_order() {
    let (url, mut rx) = receiver(0).await;
    let (_sim, api) = emulator(SimConfig {
        seed: 3,
        webhook: Some(WebhookTarget {
            url,
            secret: SECRET.into(),
        }),
        faults: Faults {
            webhook_delay_ms: 1_000,
            webhook_reorder: true,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let a = api.account("US").await;
    let mut created = Vec::new();
    for _ in 0..6 {
        created.push(api.intent(Some(&a), 1000, "manual").await);
    }
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(
            next(&mut rx).await.data.object["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_ne!(
        got, created,
        "the seeded shuffle keeps this order: pick another seed"
    );
    got.sort();
    created.sort();
    assert_eq!(got, created);
}
