//! The Stripe client on the wire, against a scripted HTTP server on loopback: headers,
//! exact bodies, retries and their idempotency keys, error mapping, pagination and the
//! client-side rate limiter. Time-dependent tests run on tokio's paused clock.

use readerd::stripe::client::{AttemptRecord, RequestObserver};
use readerd::stripe::params::*;
use readerd::stripe::wire::*;
use readerd::stripe::{
    ClientConfig, Disposition, RequestOptions, SecretKey, StripeClient, StripeError,
};
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "sk_test_51SuperSecretKeyThatMustNeverLeak";

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    /// Path and query string, as sent.
    pub(crate) target: String,
    /// Lower-cased names.
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: String,
    /// Virtual time since the server started.
    pub(crate) at: Duration,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What the server does with the next request.
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read the request, then close the connection without answering.
    Drop,
    /// Read the request and never answer (the client's timeout fires).
    Hang,
}

pub(crate) fn ok(body: serde_json::Value) -> Reply {
    Reply::Json {
        status: 200,
        headers: vec![("request-id", "req_ok".into())],
        body: body.to_string(),
    }
}

fn err(status: u16, code: &str, headers: &[(&'static str, &str)]) -> Reply {
    let mut h: Vec<(&'static str, String)> = vec![("request-id", format!("req_{status}"))];
    h.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
    Reply::Json {
        status,
        headers: h,
        body: json!({"error": {"type": if status == 429 || status >= 500 {"api_error"} else {"invalid_request_error"},
            "code": code, "message": format!("scripted {status} {code}")}})
        .to_string(),
    }
}

/// A scripted HTTP/1.1 server: answers requests in order from its script (the last entry
/// repeats) and records every request. Every response closes its connection, so each
/// attempt is one connection and nothing depends on pooling.
pub(crate) struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub(crate) async fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let started = tokio::time::Instant::now();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    serve_one(sock, seen, script, started).await;
                });
            }
        });
        Server { addr, seen }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_one(
    mut sock: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    started: tokio::time::Instant,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    seen.lock().unwrap().push(Seen {
        method,
        target,
        headers,
        body: String::from_utf8(body).unwrap(),
        at: started.elapsed(),
    });
    let reply = {
        let mut s = script.lock().unwrap();
        if s.len() > 1 {
            s.pop_front().unwrap()
        } else {
            s.front().cloned().expect("empty script")
        }
    };
    match reply {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&body);
            let _ = sock.write_all(out.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
        Reply::Drop => drop(sock),
        Reply::Hang => {
            // Keep the connection open until the client gives up.
            let _ = sock.read(&mut chunk).await;
        }
    }
}

pub(crate) fn config(base: String) -> ClientConfig {
    let mut c = ClientConfig::new(base, SecretKey::new(KEY));
    c.requests_per_second = 1000;
    c
}

fn client(server: &Server) -> StripeClient {
    StripeClient::new(config(server.base())).unwrap()
}

pub(crate) fn reader_json(id: &str) -> serde_json::Value {
    json!({
        "id": id, "object": "terminal.reader", "action": null, "device_sw_version": null,
        "device_type": "simulated_wisepos_e", "ip_address": "0.0.0.0", "label": "Front desk",
        "livemode": false, "location": "tml_1", "metadata": {}, "serial_number": "sim-1",
        "status": "online"
    })
}

pub(crate) fn location_json(id: &str) -> serde_json::Value {
    json!({
        "id": id, "object": "terminal.location",
        "address": {"city": "Berlin", "country": "DE", "line1": "Hauptstr. 1", "line2": null,
                    "postal_code": "10115", "state": null},
        "display_name": "Bakery", "livemode": false, "metadata": {}
    })
}

pub(crate) fn pi_json(id: &str, status: &str) -> serde_json::Value {
    json!({
        "id": id, "object": "payment_intent", "amount": 1250, "amount_capturable": 0,
        "amount_received": 0, "capture_method": "automatic", "created": 1_700_000_000,
        "currency": "eur", "livemode": false, "metadata": {"readerd_payment": "pay_1"},
        "payment_method_types": ["card_present"], "status": status
    })
}

fn create_pi() -> CreatePaymentIntent {
    CreatePaymentIntent {
        amount: 1250,
        currency: "eur".into(),
        payment_method_types: vec!["card_present".into()],
        capture_method: CaptureMethod::Automatic,
        application_fee_amount: Some(50),
        description: Some("Two coffees".into()),
        metadata: BTreeMap::from([("readerd_payment".into(), "pay_1".into())]),
        transfer_destination: None,
        on_behalf_of: None,
        transfer_group: None,
    }
}

#[tokio::test]
async fn post_on_connected_account_sends_every_header_and_exact_body() {
    let server = Server::start(vec![ok(pi_json("pi_1", "requires_payment_method"))]).await;
    let pi = client(&server)
        .create_payment_intent(&create_pi(), &RequestOptions::account("acct_1").key("k-1"))
        .await
        .unwrap();
    assert_eq!(pi.id, "pi_1");
    assert_eq!(pi.status, PaymentIntentStatus::RequiresPaymentMethod);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/v1/payment_intents");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(r.header("stripe-version"), Some("2026-07-29.dahlia"));
    assert_eq!(
        r.header("user-agent"),
        Some(concat!("readerd/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(r.header("stripe-account"), Some("acct_1"));
    assert_eq!(r.header("idempotency-key"), Some("k-1"));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        r.body,
        "amount=1250&currency=eur&payment_method_types[]=card_present&capture_method=automatic&application_fee_amount=50&description=Two%20coffees&metadata[readerd_payment]=pay_1"
    );
}

#[tokio::test]
async fn platform_requests_carry_no_account_and_no_key_unless_asked() {
    let server = Server::start(vec![ok(reader_json("tmr_1"))]).await;
    let c = client(&server);
    c.retrieve_reader("tmr_1").await.unwrap();
    c.register_reader(
        &RegisterReader {
            registration_code: "simulated-wpe".into(),
            label: Some("Front desk".into()),
            location: Some("tml_1".into()),
            metadata: Default::default(),
        },
        &RequestOptions::platform(),
    )
    .await
    .unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.header("stripe-account"), None, "{r:?}");
        assert_eq!(r.header("idempotency-key"), None, "{r:?}");
        assert!(r.header("authorization").is_some());
        assert!(r.header("stripe-version").is_some());
    }
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/v1/terminal/readers/tmr_1");
    assert_eq!(seen[0].body, "");
    assert_eq!(seen[1].target, "/v1/terminal/readers");
    assert_eq!(
        seen[1].body,
        "registration_code=simulated-wpe&label=Front%20desk&location=tml_1"
    );
}

#[tokio::test]
async fn get_never_sends_an_idempotency_key_and_puts_expand_in_the_query() {
    let server = Server::start(vec![ok(pi_json("pi_1", "succeeded"))]).await;
    client(&server)
        .retrieve_payment_intent(
            "pi_1",
            &["latest_charge"],
            &RequestOptions::account("acct_9").key("ignored-on-get"),
        )
        .await
        .unwrap();
    let r = &server.seen()[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, "/v1/payment_intents/pi_1?expand[]=latest_charge");
    assert_eq!(r.header("stripe-account"), Some("acct_9"));
    assert_eq!(r.header("idempotency-key"), None);
}

#[tokio::test]
async fn delete_returns_the_deleted_object() {
    let server = Server::start(vec![ok(
        json!({"id": "tml_1", "object": "terminal.location", "deleted": true}),
    )])
    .await;
    let d = client(&server).delete_location("tml_1").await.unwrap();
    assert!(d.deleted);
    let r = &server.seen()[0];
    assert_eq!(r.method, "DELETE");
    assert_eq!(r.target, "/v1/terminal/locations/tml_1");
}

#[tokio::test]
async fn ids_are_escaped_in_paths() {
    let server = Server::start(vec![ok(reader_json("tmr_1"))]).await;
    client(&server)
        .retrieve_reader("tmr_1/../x?y")
        .await
        .unwrap();
    assert_eq!(
        server.seen()[0].target,
        "/v1/terminal/readers/tmr_1%2F..%2Fx%3Fy"
    );
}

#[tokio::test]
async fn error_body_and_headers_are_parsed_in_full() {
    let server = Server::start(vec![Reply::Json {
        status: 402,
        headers: vec![("request-id", "req_decl".into())],
        body: json!({"error": {"type": "card_error", "code": "card_declined",
            "decline_code": "insufficient_funds", "message": "Your card has insufficient funds.",
            "param": "payment_method", "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "charge": "ch_1"}})
        .to_string(),
    }])
    .await;
    let e = client(&server)
        .capture_payment_intent(
            "pi_1",
            &CapturePaymentIntent::default(),
            &RequestOptions::account("acct_1").key("cap:pi_1"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(402));
    assert_eq!(e.code(), Some("card_declined"));
    assert_eq!(e.request_id(), Some("req_decl"));
    let obj = e.api_error().unwrap();
    assert_eq!(obj.kind, ErrorType::CardError);
    assert_eq!(obj.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(obj.param.as_deref(), Some("payment_method"));
    assert_eq!(obj.charge.as_deref(), Some("ch_1"));
    assert_eq!(e.disposition(), Disposition::Definitive);
    assert_eq!(server.seen().len(), 1, "a decline is never retried");
}

#[tokio::test]
async fn lists_follow_has_more_with_starting_after() {
    let server = Server::start(vec![
        ok(
            json!({"object": "list", "url": "/v1/terminal/readers", "has_more": true,
                  "data": [reader_json("tmr_1"), reader_json("tmr_2")]}),
        ),
        ok(
            json!({"object": "list", "url": "/v1/terminal/readers", "has_more": true,
                  "data": [reader_json("tmr_3")]}),
        ),
        ok(
            json!({"object": "list", "url": "/v1/terminal/readers", "has_more": false,
                  "data": [reader_json("tmr_4")]}),
        ),
    ])
    .await;
    let readers = client(&server)
        .list_readers(&ListReaders {
            location: Some("tml_1".into()),
            status: Some(ReaderStatus::Online),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = readers.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["tmr_1", "tmr_2", "tmr_3", "tmr_4"]);
    let targets: Vec<_> = server.seen().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        [
            "/v1/terminal/readers?location=tml_1&status=online&limit=100",
            "/v1/terminal/readers?location=tml_1&status=online&limit=100&starting_after=tmr_2",
            "/v1/terminal/readers?location=tml_1&status=online&limit=100&starting_after=tmr_3",
        ]
    );
}

#[tokio::test]
async fn locations_and_payment_intents_paginate_too() {
    let server = Server::start(vec![
        ok(
            json!({"object": "list", "url": "/v1/terminal/locations", "has_more": true,
                  "data": [location_json("tml_1")]}),
        ),
        ok(
            json!({"object": "list", "url": "/v1/terminal/locations", "has_more": false,
                  "data": [location_json("tml_2")]}),
        ),
        ok(
            json!({"object": "list", "url": "/v1/payment_intents", "has_more": false,
                  "data": [pi_json("pi_1", "succeeded")]}),
        ),
    ])
    .await;
    let c = client(&server);
    assert_eq!(c.list_locations().await.unwrap().len(), 2);
    let pis = c
        .list_payment_intents(&RequestOptions::account("acct_1"))
        .await
        .unwrap();
    assert_eq!(pis[0].id, "pi_1");
    let seen = server.seen();
    assert_eq!(
        seen[1].target,
        "/v1/terminal/locations?limit=100&starting_after=tml_1"
    );
    assert_eq!(seen[2].target, "/v1/payment_intents?limit=100");
    assert_eq!(seen[2].header("stripe-account"), Some("acct_1"));
}

// Retries --------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_the_same_idempotency_key() {
    let server = Server::start(vec![
        err(500, "api_error", &[]),
        err(503, "api_error", &[]),
        ok(reader_json("tmr_1")),
    ])
    .await;
    let r = client(&server)
        .process_payment_intent(
            "tmr_1",
            &ProcessPaymentIntent {
                payment_intent: "pi_1".into(),
                process_config: None,
            },
            &RequestOptions::platform().key("ppi:pi_1:a1"),
        )
        .await
        .unwrap();
    assert_eq!(r.id, "tmr_1");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.header("idempotency-key"), Some("ppi:pi_1:a1"));
        assert_eq!(s.body, "payment_intent=pi_1");
    }
    // Exponential backoff: the second wait is longer than the shortest first one.
    assert!(seen[1].at >= Duration::from_millis(250), "{:?}", seen[1].at);
}

#[tokio::test(start_paused = true)]
async fn a_server_error_on_a_post_without_key_is_not_repeated() {
    let server = Server::start(vec![err(500, "api_error", &[]), ok(location_json("tml_1"))]).await;
    let e = client(&server)
        .create_location(&CreateLocation::default(), &RequestOptions::platform())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn bad_request_is_not_retried() {
    let server = Server::start(vec![
        err(400, "parameter_missing", &[]),
        ok(reader_json("tmr_1")),
    ])
    .await;
    let e = client(&server)
        .cancel_action("tmr_1", &RequestOptions::platform().key("ca:1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("parameter_missing"));
    assert_eq!(e.request_id(), Some("req_400"));
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn lock_timeout_is_retried() {
    let server = Server::start(vec![
        err(429, "lock_timeout", &[]),
        ok(reader_json("tmr_1")),
    ])
    .await;
    client(&server)
        .update_reader(
            "tmr_1",
            &UpdateReader {
                label: Some("x".into()),
                metadata: Default::default(),
            },
            &RequestOptions::platform().key("ur:1"),
        )
        .await
        .unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("idempotency-key"), Some("ur:1"));
}

#[tokio::test(start_paused = true)]
async fn limiter_429_is_retried_after_a_longer_wait() {
    let server = Server::start(vec![
        err(
            429,
            "rate_limit",
            &[("stripe-rate-limited-reason", "global-rate")],
        ),
        ok(reader_json("tmr_1")),
    ])
    .await;
    client(&server).retrieve_reader("tmr_1").await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].at - seen[0].at >= Duration::from_secs(1),
        "waited only {:?}",
        seen[1].at - seen[0].at
    );
}

#[tokio::test(start_paused = true)]
async fn should_retry_false_wins_over_a_server_error() {
    let server = Server::start(vec![
        err(500, "api_error", &[("stripe-should-retry", "false")]),
        ok(reader_json("tmr_1")),
    ])
    .await;
    let e = client(&server).retrieve_reader("tmr_1").await.unwrap_err();
    assert_eq!(e.disposition(), Disposition::Definitive);
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn should_retry_true_wins_over_a_bad_request() {
    let server = Server::start(vec![
        err(
            400,
            "terminal_reader_busy",
            &[("stripe-should-retry", "true")],
        ),
        ok(reader_json("tmr_1")),
    ])
    .await;
    client(&server)
        .set_reader_display(
            "tmr_1",
            &SetReaderDisplay {
                cart: Cart {
                    currency: "eur".into(),
                    line_items: vec![CartLineItem {
                        amount: 450,
                        description: "Tea".into(),
                        quantity: 1,
                    }],
                    tax: None,
                    total: 450,
                },
            },
            &RequestOptions::platform(),
        )
        .await
        .unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].body,
        "type=cart&cart[currency]=eur&cart[line_items][0][amount]=450&cart[line_items][0][description]=Tea&cart[line_items][0][quantity]=1&cart[total]=450"
    );
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_retries() {
    let server = Server::start(vec![err(503, "api_error", &[])]).await;
    let mut cfg = config(server.base());
    cfg.max_attempts = 3;
    let e = StripeClient::new(cfg)
        .unwrap()
        .retrieve_location("tml_1")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_bounds_the_retries() {
    let server = Server::start(vec![err(503, "api_error", &[])]).await;
    let mut cfg = config(server.base());
    cfg.max_attempts = 100;
    cfg.max_elapsed = Duration::from_secs(10);
    let started = tokio::time::Instant::now();
    StripeClient::new(cfg)
        .unwrap()
        .retrieve_location("tml_1")
        .await
        .unwrap_err();
    let n = server.seen().len();
    assert!((2..100).contains(&n), "{n} attempts");
    assert!(started.elapsed() <= Duration::from_secs(10));
}

// Transport failures ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn connection_refused_is_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut cfg = config(format!("http://{addr}"));
    cfg.max_attempts = 2;
    let e = StripeClient::new(cfg)
        .unwrap()
        .create_payment_intent(&create_pi(), &RequestOptions::account("acct_1"))
        .await
        .unwrap_err();
    assert!(matches!(e, StripeError::Connect(_)), "{e:?}");
    assert_eq!(e.disposition(), Disposition::Transient);
}

#[tokio::test(start_paused = true)]
async fn dropped_connection_after_sending_is_no_response_and_not_repeated_without_key() {
    let server = Server::start(vec![
        Reply::Drop,
        ok(pi_json("pi_1", "requires_payment_method")),
    ])
    .await;
    let e = client(&server)
        .create_payment_intent(&create_pi(), &RequestOptions::account("acct_1"))
        .await
        .unwrap_err();
    assert!(matches!(e, StripeError::NoResponse(_)), "{e:?}");
    assert_eq!(e.disposition(), Disposition::OutcomeUnknown);
    assert_eq!(server.seen().len(), 1, "no key: the caller must reconcile");
}

#[tokio::test(start_paused = true)]
async fn dropped_connection_with_a_key_is_repeated_with_that_key() {
    let server = Server::start(vec![
        Reply::Drop,
        ok(pi_json("pi_1", "requires_payment_method")),
    ])
    .await;
    client(&server)
        .create_payment_intent(
            &create_pi(),
            &RequestOptions::account("acct_1").key("pi:pay_1"),
        )
        .await
        .unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.header("idempotency-key") == Some("pi:pay_1")));
}

#[tokio::test(start_paused = true)]
async fn a_silent_server_times_out_as_no_response() {
    let server = Server::start(vec![Reply::Hang]).await;
    let mut cfg = config(server.base());
    cfg.max_attempts = 1;
    let e = StripeClient::new(cfg)
        .unwrap()
        .present_payment_method(
            "tmr_1",
            &PresentPaymentMethod::default(),
            &RequestOptions::platform(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StripeError::NoResponse(_)), "{e:?}");
}

// Observability and secrecy ---------------------------------------------------------------

/// (method, endpoint, attempt, status, failure) of each attempt.
type Attempt = (String, &'static str, u32, Option<u16>, Option<Disposition>);

#[derive(Default)]
struct Recorder(Mutex<Vec<Attempt>>);

impl RequestObserver for Recorder {
    fn on_attempt(&self, r: &AttemptRecord<'_>) {
        self.0.lock().unwrap().push((
            r.method.to_string(),
            r.endpoint,
            r.attempt,
            r.status,
            r.failure,
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn the_observer_sees_every_attempt() {
    let server = Server::start(vec![
        err(409, "idempotency_key_in_use", &[]),
        ok(pi_json("pi_1", "canceled")),
    ])
    .await;
    let rec = Arc::new(Recorder::default());
    let c = client(&server).with_observer(rec.clone());
    c.cancel_payment_intent(
        "pi_1",
        &CancelPaymentIntent {
            cancellation_reason: Some("abandoned".into()),
        },
        &RequestOptions::account("acct_1").key("cancel:pi_1"),
    )
    .await
    .unwrap();
    let got = rec.0.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            (
                "POST".to_string(),
                "/v1/payment_intents/{id}/cancel",
                1,
                Some(409),
                Some(Disposition::Transient)
            ),
            (
                "POST".to_string(),
                "/v1/payment_intents/{id}/cancel",
                2,
                Some(200),
                None
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_secret_key_appears_in_no_debug_log_or_error() {
    let logs = crate::common::captured_logs();

    let server = Server::start(vec![
        err(500, "api_error", &[]),
        err(401, "api_key_invalid", &[]),
    ])
    .await;
    let mut cfg = config(server.base());
    cfg.max_attempts = 3;
    let c = StripeClient::new(cfg.clone()).unwrap();
    let mut texts = vec![format!("{cfg:?}"), format!("{c:?}")];
    let e = c
        .create_refund(
            &CreateRefund {
                payment_intent: "pi_1".into(),
                amount: Some(100),
                ..Default::default()
            },
            &RequestOptions::account("acct_secrecy").key("rf:1"),
        )
        .await
        .unwrap_err();
    texts.push(format!("{e:?}"));
    texts.push(e.to_string());
    // Transport errors too: a refused connection and a dropped one.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let mut refused = config(format!("http://{dead}"));
    refused.max_attempts = 1;
    let e = StripeClient::new(refused)
        .unwrap()
        .retrieve_account("acct_1")
        .await
        .unwrap_err();
    texts.push(format!("{e:?} {e}"));
    let dropping = Server::start(vec![Reply::Drop]).await;
    let e = client(&dropping).delete_reader("tmr_1").await.unwrap_err();
    texts.push(format!("{e:?} {e}"));
    // A server that echoes the key, in an error message and in a body that does not parse.
    let echo = Server::start(vec![
        Reply::Json {
            status: 401,
            headers: vec![],
            body: json!({"error": {"type": "invalid_request_error",
                "message": format!("Invalid API Key provided: {KEY}")}})
            .to_string(),
        },
        Reply::Json {
            status: 200,
            headers: vec![],
            body: json!({"id": "acct_1", "object": "account", "created": KEY}).to_string(),
        },
    ])
    .await;
    let c = client(&echo);
    let e = c.retrieve_account("acct_1").await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    texts.push(format!("{e:?} {e}"));
    let e = c.retrieve_account("acct_1").await.unwrap_err();
    assert!(matches!(e, StripeError::Decode { .. }), "{e:?}");
    texts.push(format!("{e:?} {e}"));
    let log = logs.text();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("acct_secrecy")).collect();
    assert_eq!(
        ours.len(),
        2,
        "one event per attempt (500, then 401): {ours:?}"
    );
    assert!(
        ours.iter().all(|l| l.contains("attempt=")
            && l.contains("latency_ms=")
            && l.contains("path=/v1/refunds")),
        "{ours:?}"
    );
    assert!(
        ours[0].contains("req_500") && ours[0].contains("status=500"),
        "{ours:?}"
    );
    texts.push(log);
    for t in texts {
        assert!(!t.contains(KEY), "secret key leaked: {t}");
        assert!(!t.contains("SuperSecret"), "secret key leaked: {t}");
    }
}

// The client-side limiter ----------------------------------------------------------------

/// When each attempt was sent (virtual time), from the observer.
#[derive(Default)]
struct SendTimes(Mutex<Vec<tokio::time::Instant>>);

impl RequestObserver for SendTimes {
    fn on_attempt(&self, r: &AttemptRecord<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now() - r.latency);
    }
}

#[tokio::test(start_paused = true)]
async fn the_limiter_holds_a_burst_under_its_rate() {
    let server = Server::start(vec![ok(reader_json("tmr_1"))]).await;
    let mut cfg = config(server.base());
    cfg.requests_per_second = 10;
    let sends = Arc::new(SendTimes::default());
    let c = StripeClient::new(cfg).unwrap().with_observer(sends.clone());
    let start = tokio::time::Instant::now();
    let burst = (0..30).map(|i| {
        let c = c.clone();
        async move { c.retrieve_reader(&format!("tmr_{i}")).await }
    });
    let results = futures_util::future::join_all(burst).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        server.seen().len(),
        30,
        "every request went out, none was lost"
    );
    let mut at: Vec<Duration> = sends.0.lock().unwrap().iter().map(|t| *t - start).collect();
    at.sort();
    assert_eq!(at.len(), 30);
    // No one-second window holds more than the rate.
    for (i, t) in at.iter().enumerate() {
        let in_window = at[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 10,
            "{in_window} requests in the second from {t:?}: {at:?}"
        );
    }
    // 30 requests at 10/s: the last one leaves about 2.9 s after the first.
    assert!(at[29] >= Duration::from_millis(2900), "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn the_limiter_does_not_delay_an_unhurried_caller() {
    let server = Server::start(vec![ok(reader_json("tmr_1"))]).await;
    let mut cfg = config(server.base());
    cfg.requests_per_second = 2;
    let c = StripeClient::new(cfg).unwrap();
    for _ in 0..3 {
        let before = tokio::time::Instant::now();
        c.retrieve_reader("tmr_1").await.unwrap();
        assert!(before.elapsed() < Duration::from_millis(10));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn reader_commands_wait_longer_than_ordinary_calls() {
    let server = Server::start(vec![Reply::Hang]).await;
    let mut cfg = config(server.base());
    cfg.max_attempts = 1;
    let c = StripeClient::new(cfg).unwrap();

    let t = tokio::time::Instant::now();
    let e = c.retrieve_reader("tmr_1").await.unwrap_err();
    assert!(matches!(e, StripeError::NoResponse(_)), "{e:?}");
    let ordinary = t.elapsed();
    assert!(
        ordinary >= Duration::from_secs(30) && ordinary < Duration::from_secs(31),
        "{ordinary:?}"
    );

    let t = tokio::time::Instant::now();
    let e = c
        .process_payment_intent(
            "tmr_1",
            &ProcessPaymentIntent {
                payment_intent: "pi_1".into(),
                process_config: None,
            },
            &RequestOptions::platform().key("ppi:1"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StripeError::NoResponse(_)), "{e:?}");
    assert_eq!(e.disposition(), Disposition::OutcomeUnknown);
    let reader = t.elapsed();
    assert!(
        reader >= Duration::from_secs(80) && reader < Duration::from_secs(81),
        "{reader:?}"
    );
}

#[tokio::test]
async fn an_unreadable_success_is_outcome_unknown() {
    let server = Server::start(vec![Reply::Json {
        status: 200,
        headers: vec![("request-id", "req_garbled".into())],
        body: "<html>proxy</html>".into(),
    }])
    .await;
    let e = client(&server)
        .create_payment_intent(&create_pi(), &RequestOptions::account("acct_1"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StripeError::Decode { status: 200, .. }),
        "{e:?}"
    );
    assert_eq!(e.request_id(), Some("req_garbled"));
    assert_eq!(e.disposition(), Disposition::OutcomeUnknown);
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn bad_settings_are_refused_up_front() {
    let mut c = ClientConfig::new("http://127.0.0.1:1", SecretKey::new(KEY));
    c.requests_per_second = 0;
    assert!(matches!(StripeClient::new(c), Err(StripeError::Config(_))));
    let mut c = ClientConfig::new("http://127.0.0.1:1", SecretKey::new(KEY));
    c.max_attempts = 0;
    assert!(matches!(StripeClient::new(c), Err(StripeError::Config(_))));
    let c = ClientConfig::new("ftp://example", SecretKey::new(KEY));
    assert!(matches!(StripeClient::new(c), Err(StripeError::Config(_))));
    let c = ClientConfig::new("http://127.0.0.1:1", SecretKey::new("sk_test_\nsplit"));
    match StripeClient::new(c) {
        Err(e @ StripeError::Config(_)) => assert!(!e.to_string().contains("split")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expanded_latest_charge_reads_its_card_present_details() {
    let mut pi = pi_json("pi_1", "requires_capture");
    pi["capture_method"] = json!("manual");
    pi["amount_capturable"] = json!(1250);
    pi["amount_details"] = json!({"tip": {"amount": 150}});
    pi["latest_charge"] = json!({
        "id": "ch_1", "object": "charge", "amount": 1250, "amount_captured": 0,
        "amount_refunded": 0, "captured": false, "created": 1_700_000_000, "currency": "eur",
        "livemode": false, "metadata": {}, "paid": true, "payment_intent": "pi_1",
        "refunded": false, "status": "succeeded", "failure_code": null,
        "payment_method_details": {"type": "card_present", "card_present": {
            "amount_authorized": 1250, "brand": "visa", "capture_before": 1_700_400_000,
            "exp_month": 12, "exp_year": 2030, "funding": "credit", "last4": "4242",
            "incremental_authorization_supported": false, "overcapture_supported": false,
            "read_method": "contactless_emv", "reader": "tmr_1", "location": "tml_1",
            "receipt": {"account_type": "credit"}
        }}
    });
    let server = Server::start(vec![ok(pi)]).await;
    let pi = client(&server)
        .retrieve_payment_intent(
            "pi_1",
            &["latest_charge"],
            &RequestOptions::account("acct_1"),
        )
        .await
        .unwrap();
    assert_eq!(pi.status, PaymentIntentStatus::RequiresCapture);
    assert_eq!(pi.tip_amount(), Some(150));
    let charge = pi.latest_charge.as_ref().unwrap();
    assert_eq!(charge.id(), "ch_1");
    let card = charge
        .object()
        .and_then(|c| c.payment_method_details.as_ref())
        .and_then(|d| d.card_present.as_ref())
        .unwrap();
    assert_eq!(card.capture_before, Some(1_700_400_000));
    assert_eq!(card.brand.as_deref(), Some("visa"));
    assert_eq!(card.last4.as_deref(), Some("4242"));
    assert_eq!(card.reader.as_deref(), Some("tmr_1"));
}

/// An answer holding an object of the other mode than the key's is refused, never retried
/// (the request was carried out, in the other world), and counted.
#[tokio::test]
async fn an_object_of_the_other_mode_is_refused_and_counted() {
    let mut live = reader_json("tmr_1");
    live["livemode"] = true.into();
    let list = serde_json::json!({"object": "list", "url": "/v1/terminal/readers",
        "has_more": false, "data": [reader_json("tmr_2"), live.clone()]});
    let server = Server::start(vec![ok(live), ok(list), ok(reader_json("tmr_3"))]).await;
    let metrics = std::sync::Arc::new(readerd::metrics::Metrics::new());
    let c = StripeClient::new(config(server.base()))
        .unwrap()
        .with_observer(metrics.clone());
    let e = c.retrieve_reader("tmr_1").await.unwrap_err();
    assert!(
        matches!(e, StripeError::WrongMode { livemode: true, .. }),
        "{e:?}"
    );
    assert_eq!(e.disposition(), readerd::stripe::Disposition::Definitive);
    let e = c
        .list_readers(&readerd::stripe::params::ListReaders::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StripeError::WrongMode { .. }), "{e:?}");
    // A test object to a test key is taken.
    c.retrieve_reader("tmr_3").await.unwrap();
    assert_eq!(server.seen().len(), 3, "nothing was retried");
    assert!(
        metrics
            .render()
            .contains(r#"readerd_stripe_objects_refused_total{reason="livemode_mismatch"} 2"#),
        "{}",
        metrics.render()
    );
}
