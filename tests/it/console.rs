//! The operator console and what it reads: the page's headers and policy, the payment
//! list's `limit`, and `GET /v1/events`, the stream of every payment change a caller may
//! see. (The console itself runs in a real browser in `tests/browser/console_check.py`.)

use crate::common::TestEnv;
use readerd::sim::SimConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_console_is_three_static_files_under_a_strict_policy() {
    let env = TestEnv::start().await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        // No token: the files hold no data.
        let resp = env
            .http
            .get(format!("{}{path}", env.api_url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers().clone();
        let header = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}: {h:?}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header("cache-control"), "no-store", "{path}");
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
        if path == "/console" {
            // Nothing inline that the policy would block: the script and the style are files.
            assert!(body.contains(r#"<script src="/console/app.js" defer></script>"#));
            assert_eq!(body.matches("<script").count(), 1, "{body}");
            assert!(
                !body.contains("<style") && !body.contains("style="),
                "{body}"
            );
            // No inline event handler either (`onclick=…`): `script-src 'self'` blocks them.
            let inline_handler = body.match_indices(" on").any(|(i, _)| {
                let rest = &body[i + 3..];
                let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!inline_handler, "{body}");
        }
        if path == "/console/app.js" {
            assert!(!body.contains("innerHTML"), "data goes in as text only");
            assert!(
                !body.contains("localStorage"),
                "the token stays in sessionStorage"
            );
        }
    }
    env.stop().await;
}

/// Payments of `merchant` on `reader`, left queued (the reader is offline).
async fn queued(env: &TestEnv, reader: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (s, p) = env
            .post(
                env.pos("bakery"),
                "/v1/payments",
                json!({"merchant": "bakery", "reader": reader, "amount": 1000 + i, "currency": "eur"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        ids.push(p["id"].as_str().unwrap().to_string());
    }
    ids
}

#[tokio::test]
async fn the_payment_list_takes_a_limit_newest_first() {
    let env = TestEnv::start().await;
    env.add_merchant("bakery", "FR", "eur").await;
    let location = env.add_location("Hall", "FR", None).await;
    let reader = env.add_reader("till", &location).await;
    assert!(env.sim.set_reader_online(&reader, false));
    queued(&env, &reader, 3).await;

    let (s, all) = env.get(&env.admin_token, "/v1/payments").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 3, "the default page holds them all");
    let created: Vec<&str> = all
        .iter()
        .map(|p| p["created_at"].as_str().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {created:?}"
    );

    let (s, two) = env.get(&env.admin_token, "/v1/payments?limit=2").await;
    assert_eq!(s, StatusCode::OK, "{two}");
    assert_eq!(two.as_array().unwrap()[..], all[..2]);
    let (s, one) = env
        .get(env.pos("bakery"), "/v1/payments?limit=1&status=queued")
        .await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (s, max) = env.get(&env.admin_token, "/v1/payments?limit=1000").await;
    assert_eq!((s, max.as_array().unwrap().len()), (StatusCode::OK, 3));

    for bad in ["0", "1001", "-1", "ten"] {
        let (s, e) = env
            .get(&env.admin_token, &format!("/v1/payments?limit={bad}"))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "limit={bad}: {e}");
        assert_eq!(e["error"]["code"], "invalid_request", "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("limit"),
            "{e}"
        );
    }
    env.stop().await;
}

/// An open `GET /v1/events` answer and what it has sent so far.
struct Events {
    resp: reqwest::Response,
    text: String,
}

impl Events {
    async fn open(env: &TestEnv, token: &str) -> Events {
        let resp = env
            .http
            .get(format!("{}/v1/events", env.api_url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut e = Events {
            resp,
            text: String::new(),
        };
        e.read_until(|t| t.contains("event: ready"), "ready").await;
        e
    }

    /// Reads until `done(text)` holds (panics after 10 s, naming `what`).
    async fn read_until(&mut self, done: impl Fn(&str) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(b))) => self.text.push_str(&String::from_utf8_lossy(&b)),
                Ok(Ok(None)) => panic!("the stream ended before {what}: {}", self.text),
                Ok(Err(e)) => panic!("the stream broke before {what}: {e}"),
                Err(_) => panic!("no {what} within 10 s: {}", self.text),
            }
        }
    }

    /// Every payment the stream carried.
    fn payments(&self) -> Vec<Value> {
        self.text
            .split("\n\n")
            .filter(|b| b.contains("event: payment"))
            .filter_map(|b| b.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).expect("a payment"))
            .collect()
    }
}

fn settled(id: &str) -> impl Fn(&str) -> bool + '_ {
    move |t: &str| {
        t.split("\n\n")
            .any(|b| b.contains(id) && b.contains(r#""status":"succeeded""#))
    }
}

#[tokio::test]
async fn the_event_stream_shows_each_caller_only_the_payments_it_may_see() {
    let env = TestEnv::builder()
        .sim(SimConfig {
            auth_delay: Duration::ZERO,
            auto_present: Some(Duration::from_millis(100)),
            ..SimConfig::default()
        })
        .start()
        .await;
    env.add_merchant("bakery", "FR", "eur").await;
    env.add_merchant("florist", "FR", "eur").await;
    let location = env.add_location("Hall", "FR", None).await;
    // One reader open to both merchants: the stream, not the reader, must keep them apart.
    let reader = env.add_reader("shared", &location).await;

    let (s, e) = env.get("", "/v1/events").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    let mut admin = Events::open(&env, &env.admin_token).await;
    let mut bakery = Events::open(&env, env.pos("bakery")).await;
    let mut florist = Events::open(&env, env.pos("florist")).await;

    let mut ids = Vec::new();
    for m in ["florist", "bakery"] {
        let (s, p) = env
            .post(
                env.pos(m),
                "/v1/payments",
                json!({"merchant": m, "reader": reader, "amount": 2500, "currency": "eur"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        ids.push(p["id"].as_str().unwrap().to_string());
    }
    let (flo, bak) = (ids[0].clone(), ids[1].clone());
    admin
        .read_until(settled(&flo), "the florist's success")
        .await;
    admin
        .read_until(settled(&bak), "the bakery's success")
        .await;
    florist
        .read_until(settled(&flo), "the florist's success")
        .await;
    bakery
        .read_until(settled(&bak), "the bakery's success")
        .await;
    // Both payments were over before the bakery's ended, so the florist's stream has had
    // every chance to leak the bakery's payment, and the bakery's the florist's.
    let statuses = |e: &Events, id: &str| -> Vec<String> {
        e.payments()
            .iter()
            .filter(|p| p["id"] == id)
            .map(|p| p["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        statuses(&admin, &flo).first().map(String::as_str),
        Some("queued"),
        "every change, from the first: {}",
        admin.text
    );
    assert!(statuses(&admin, &flo).contains(&"processing".to_string()));
    assert!(bakery.payments().iter().all(|p| p["merchant"] == "bakery"));
    assert!(!bakery.text.contains(&flo), "{}", bakery.text);
    assert!(florist
        .payments()
        .iter()
        .all(|p| p["merchant"] == "florist"));
    assert!(!florist.text.contains(&bak), "{}", florist.text);

    // A refund is a change too.
    let (s, r) = env
        .post(
            env.pos("bakery"),
            &format!("/v1/payments/{bak}/refunds"),
            json!({"amount": 500}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    bakery
        .read_until(|t| t.contains(r#""amount_refunded":500"#), "the refund")
        .await;

    // A client removed by a reload loses its stream at once, as its next request would.
    let kept: Vec<_> = env
        .config
        .api
        .clients
        .iter()
        .filter(|c| c.name != "bakery")
        .cloned()
        .collect();
    let diff = env.state().auth.reload(&kept);
    assert_eq!(diff.removed, vec!["bakery".to_string()]);
    let rest = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match bakery.resp.chunk().await {
                Ok(Some(_)) => continue, // what came before the reload
                other => return other.map(|c| c.is_none()),
            }
        }
    })
    .await;
    assert!(
        matches!(rest, Ok(Ok(true)) | Ok(Err(_))),
        "the removed client's stream ended: {rest:?}"
    );

    // A drain for shutdown ends open streams, so they never hold the shutdown back.
    let started = Instant::now();
    env.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the shutdown waited for open streams: {:?}",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            // What the admin has not read yet (the refund), then the end.
            match admin.resp.chunk().await {
                Ok(Some(_)) => continue,
                other => return other.map(|c| c.is_none()),
            }
        }
    })
    .await;
    assert!(
        matches!(rest, Ok(Ok(true)) | Ok(Err(_))),
        "the stream is over after shutdown: {rest:?}"
    );
}

#[tokio::test]
async fn a_payment_stream_ends_when_the_daemon_drains() {
    let env = TestEnv::start().await;
    env.add_merchant("bakery", "FR", "eur").await;
    let location = env.add_location("Hall", "FR", None).await;
    let reader = env.add_reader("till", &location).await;
    assert!(env.sim.set_reader_online(&reader, false));
    let id = queued(&env, &reader, 1).await.remove(0);
    let mut resp = env
        .http
        .get(format!("{}/v1/payments/{id}/events", env.api_url))
        .bearer_auth(env.pos("bakery"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains(r#""status":"queued""#));
    // The payment waits for its reader; the stream would stay open until it is final.
    let started = Instant::now();
    env.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the shutdown waited for the open stream: {:?}",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                other => return other.map(|c| c.is_none()),
            }
        }
    })
    .await;
    assert!(matches!(rest, Ok(Ok(true)) | Ok(Err(_))), "{rest:?}");
}
