//! The series' names, labels and text format, the collectors, and Stripe's health.

use super::*;

#[test]
fn endpoint_templates() {
    for (path, want) in [
        ("/v1/payment_intents", "/v1/payment_intents"),
        (
            "/v1/payment_intents/pi_3MtwBwLkdIwHu7ix28a3tqPa/capture",
            "/v1/payment_intents/{id}/capture",
        ),
        (
            "/v1/terminal/readers/tmr_abc/process_payment_intent",
            "/v1/terminal/readers/{id}/process_payment_intent",
        ),
        (
            "/v1/test_helpers/terminal/readers/tmr_FDOt2wlRZEdpd7/present_payment_method",
            "/v1/test_helpers/terminal/readers/{id}/present_payment_method",
        ),
        ("/v1/accounts/acct_1032D82eZvKYlo2C", "/v1/accounts/{id}"),
        (
            "/v1/terminal/locations?limit=100&starting_after=tml_1",
            "/v1/terminal/locations",
        ),
        ("/v1/refunds", "/v1/refunds"),
    ] {
        assert_eq!(endpoint_template(path), want, "{path}");
    }
}

#[test]
fn renders_counters_gauges_and_labels_in_text_format() {
    let m = Metrics::new();
    m.payment_status("bakery", "succeeded");
    m.payment_status("bakery", "succeeded");
    m.payment_status("café \"the\" one", "queued");
    m.set_reader("tmr_1", true, false, 2);
    let out = m.render();
    assert!(out.contains("# TYPE readerd_payments_total counter\n"));
    assert!(out.contains("readerd_payments_total{merchant=\"bakery\",status=\"succeeded\"} 2\n"));
    assert!(out.contains(
        "readerd_payments_total{merchant=\"café \\\"the\\\" one\",status=\"queued\"} 1\n"
    ));
    assert!(out.contains("readerd_reader_online{reader=\"tmr_1\"} 1\n"));
    assert!(out.contains("readerd_reader_busy{reader=\"tmr_1\"} 0\n"));
    assert!(out.contains("readerd_reader_queue_depth{reader=\"tmr_1\"} 2\n"));
    assert!(out.contains("readerd_stripe_degraded 0\n"));
    assert!(out.contains(&format!(
        "readerd_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    )));
    m.remove_reader("tmr_1");
    assert!(!m.render().contains("tmr_1"));
}

#[test]
fn histograms_are_cumulative_with_sum_and_count() {
    let m = Metrics::new();
    let path = "/v1/payment_intents/pi_1/capture";
    m.stripe_request("POST", path, 1, Some(200), Duration::from_millis(30));
    m.stripe_request("POST", path, 1, None, Duration::from_secs(100));
    m.stripe_request("POST", path, 2, Some(200), Duration::from_millis(300));
    let out = m.render();
    let e = "endpoint=\"/v1/payment_intents/{id}/capture\"";
    assert!(out.contains(&format!(
        "readerd_stripe_requests_total{{{e},method=\"POST\",status=\"200\"}} 2\n"
    )));
    assert!(out.contains(&format!(
        "readerd_stripe_requests_total{{{e},method=\"POST\",status=\"error\"}} 1\n"
    )));
    assert!(out.contains(&format!(
        "readerd_stripe_request_duration_seconds_bucket{{{e},le=\"0.05\"}} 1\n"
    )));
    assert!(out.contains(&format!(
        "readerd_stripe_request_duration_seconds_bucket{{{e},le=\"0.5\"}} 2\n"
    )));
    assert!(out.contains(&format!(
        "readerd_stripe_request_duration_seconds_bucket{{{e},le=\"80\"}} 2\n"
    )));
    assert!(out.contains(&format!(
        "readerd_stripe_request_duration_seconds_bucket{{{e},le=\"+Inf\"}} 3\n"
    )));
    assert!(out.contains(&format!(
        "readerd_stripe_request_duration_seconds_count{{{e}}} 3\n"
    )));
    assert!(out.contains(&format!(
        "readerd_stripe_request_duration_seconds_sum{{{e}}} 100.33"
    )));
    assert!(out.contains(&format!("readerd_stripe_retries_total{{{e}}} 1\n")));
    m.rate_limiter_waited(Duration::from_millis(40));
    let out = m.render();
    assert!(out.contains("readerd_stripe_rate_limiter_wait_seconds_bucket{le=\"0.01\"} 0\n"));
    assert!(out.contains("readerd_stripe_rate_limiter_wait_seconds_bucket{le=\"0.05\"} 1\n"));
    assert!(out.contains("readerd_stripe_rate_limiter_wait_seconds_count 1\n"));
}

#[test]
fn collectors_refresh_state_gauges_at_scrape_time() {
    let m = Metrics::new();
    let open = std::sync::Arc::new(Mutex::new(vec![("bakery", "pay_1", 120.0)]));
    let src = open.clone();
    m.add_collector(move |m| {
        let open = src.lock().unwrap();
        m.capture_seconds_left.replace_all(
            open.iter()
                .map(|(merchant, pay, left)| (vec![*merchant, *pay], *left)),
        );
    });
    assert!(m.render().contains(
        "readerd_authorization_capture_seconds_left{merchant=\"bakery\",payment=\"pay_1\"} 120\n"
    ));
    open.lock().unwrap().clear();
    assert!(!m.render().contains("pay_1"));
}

#[test]
fn every_family_has_help_and_type_once() {
    let m = Metrics::new();
    let out = m.render();
    let types: Vec<&str> = out.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
    assert_eq!(n, 26);
    assert_eq!(out.lines().filter(|l| l.starts_with("# HELP ")).count(), n);
}

#[tokio::test(start_paused = true)]
async fn stripe_degrades_on_repeated_failures_and_recovers() {
    let m = Metrics::new();
    let p = "/v1/payment_intents";
    let ok = Duration::from_millis(100);
    // Scattered failures among successes: healthy.
    for i in 0..20 {
        let status = if i % 5 == 0 { Some(500) } else { Some(200) };
        m.stripe_request("GET", p, 1, status, ok);
    }
    assert!(!m.stripe_is_degraded());
    // A stall: timeouts and 503s.
    for _ in 0..15 {
        m.stripe_request("GET", p, 1, None, Duration::from_secs(30));
        m.stripe_request("GET", p, 2, Some(503), ok);
    }
    assert!(m.stripe_is_degraded());
    assert!(m.render().contains("readerd_stripe_degraded 1\n"));
    // A minute later, Stripe answers again.
    tokio::time::advance(Duration::from_secs(61)).await;
    for _ in 0..3 {
        m.stripe_request("GET", p, 1, Some(200), ok);
    }
    assert!(!m.stripe_is_degraded());
    assert!(m.render().contains("readerd_stripe_degraded 0\n"));
}

#[test]
fn payments_counted_once_per_status_and_open_ones_gauged() {
    let m = Metrics::new();
    let soon = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3600;
    m.payment_written("pay_1", "bakery", None, "queued", false, None);
    m.payment_written("pay_1", "bakery", Some("queued"), "processing", false, None);
    // A rewrite without a status change (a note, a poll) counts nothing.
    m.payment_written(
        "pay_1",
        "bakery",
        Some("processing"),
        "processing",
        false,
        None,
    );
    m.payment_written(
        "pay_1",
        "bakery",
        Some("processing"),
        "requires_capture",
        false,
        Some(soon),
    );
    m.payment_written("pay_2", "florist", None, "queued", false, None);
    let out = m.render();
    assert!(out.contains("readerd_payments_total{merchant=\"bakery\",status=\"processing\"} 1\n"));
    assert!(out
        .contains("readerd_payments_current{merchant=\"bakery\",status=\"requires_capture\"} 1\n"));
    assert!(out.contains("readerd_payments_current{merchant=\"florist\",status=\"queued\"} 1\n"));
    assert!(!out.contains("readerd_payments_current{merchant=\"bakery\",status=\"queued\"}"));
    assert!(out.contains("readerd_authorizations_awaiting_capture{merchant=\"bakery\"} 1\n"));
    let line = out
        .lines()
        .find(|l| {
            l.starts_with(
                "readerd_authorization_capture_seconds_left{merchant=\"bakery\",payment=\"pay_1\"}",
            )
        })
        .unwrap();
    let left: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((3590.0..=3600.0).contains(&left), "{line}");
    // Captured: final, gone from the gauges, counted as succeeded.
    m.payment_written(
        "pay_1",
        "bakery",
        Some("requires_capture"),
        "succeeded",
        true,
        Some(soon),
    );
    let out = m.render();
    assert!(out.contains("readerd_payments_total{merchant=\"bakery\",status=\"succeeded\"} 1\n"));
    assert!(!out.contains("pay_1"));
    assert!(!out.contains("readerd_authorizations_awaiting_capture{"));
}

#[test]
fn counters_count_per_label_set() {
    let m = Metrics::new();
    m.webhook_rejected("bad_signature");
    m.webhooks_rejected.add(&["bad_signature"], 2);
    m.webhook_rejected("duplicate");
    assert_eq!(m.webhooks_rejected.get(&["bad_signature"]), 3);
    assert_eq!(m.webhooks_rejected.get(&["duplicate"]), 1);
    assert_eq!(m.webhooks_rejected.get(&["stale_timestamp"]), 0);
}

#[test]
fn names_and_help_are_written_as_given() {
    // The client adds `_total` to counters and a full stop to HELP texts: neither may
    // appear twice.
    let out = Metrics::new().render();
    assert!(out.contains(
        "# HELP readerd_config_reloads_total Configuration reloads (SIGHUP), by result.\n"
    ));
    assert!(out.contains("# TYPE readerd_config_reloads_total counter\n"));
    assert!(!out.contains("_total_total") && !out.contains(".."));
    assert!(out.contains("readerd_stripe_degraded 0\n"));
    assert!(!out.contains("{}"));
    assert!(!out.contains("# EOF"));
}

#[test]
fn gauges_write_integers_as_integers_and_keep_fractions() {
    let m = Metrics::new();
    m.reader_last_seen_age.set(&["tmr_1"], 2.5);
    m.reader_queue_depth.set(&["tmr_1"], 3.0);
    m.reader_busy.set(&["tmr_1"], -1.0);
    let out = m.render();
    assert!(out.contains("readerd_reader_last_seen_age_seconds{reader=\"tmr_1\"} 2.5\n"));
    assert!(out.contains("readerd_reader_queue_depth{reader=\"tmr_1\"} 3\n"));
    assert!(out.contains("readerd_reader_busy{reader=\"tmr_1\"} -1\n"));
}
