//! Crash safety with the real binary: `readerd sim` as a child process, `readerd run` killed
//! at each persisted step of the flow (`READERD_FAILPOINT`) and with SIGKILL mid-payment,
//! restarted on the same store; every payment must end exactly once, with exactly one
//! PaymentIntent each. Also: `readerd demo --tour` exits 0.

use crate::common::free_port;
use crate::common::get_json;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) const ADMIN: &str = "crash-admin";
pub(crate) const POS: &str = "crash-pos";

/// A child process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Proc {
    /// Whether the process exits (by itself) within a bounded wait.
    pub(crate) async fn exited(&mut self) -> bool {
        for _ in 0..500 {
            if self.0.try_wait().unwrap().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn readerd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_readerd"))
}

pub(crate) async fn wait_up(http: &reqwest::Client, url: &str) {
    for _ in 0..500 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never came up");
}

fn start_daemon(config: &Path, failpoint: Option<&str>) -> Proc {
    let mut cmd = readerd();
    cmd.args(["run", "--config"])
        .arg(config)
        .env("READERD_STRIPE_SECRET_KEY", "sk_test_crash")
        .env_remove("READERD_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(f) = failpoint {
        cmd.env("READERD_FAILPOINT", f);
    }
    Proc(cmd.spawn().unwrap())
}

pub(crate) struct Ctx {
    pub(crate) http: reqwest::Client,
    pub(crate) api: String,
    pub(crate) sim: String,
    /// The account of a merchant-owned reader (`Stripe-Account` of the tap).
    pub(crate) reader_account: Option<String>,
}

impl Ctx {
    /// `readerd run` on `config` (with an optional failpoint), once its API answers.
    pub(crate) async fn daemon(&self, config: &Path, failpoint: Option<&str>) -> Proc {
        let d = start_daemon(config, failpoint);
        wait_up(&self.http, &format!("{}/healthz", self.api)).await;
        d
    }
    async fn call(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let s = resp.status();
        (s, resp.json().await.unwrap_or(Value::Null))
    }
    pub(crate) async fn admin_post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self
            .call(
                self.http
                    .post(format!("{}{path}", self.api))
                    .bearer_auth(ADMIN)
                    .json(&body),
            )
            .await;
        assert!(s.is_success(), "{path}: {s} {v}");
        v
    }
    async fn pay(&self, key: &str, amount: i64) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{}/v1/payments", self.api))
            .bearer_auth(POS)
            .header("Idempotency-Key", key)
            .json(&json!({"merchant": "bakery", "reader": "till", "amount": amount, "currency": "eur"}))
            .send()
            .await
    }
    pub(crate) async fn get(&self, id: &str) -> Value {
        self.call(
            self.http
                .get(format!("{}/v1/payments/{id}", self.api))
                .bearer_auth(POS),
        )
        .await
        .1
    }
    /// Waits until the payment is on the reader, waiting for the card.
    pub(crate) async fn wait_on_reader(&self, id: &str) -> Value {
        self.wait(id, "on the reader", |p| {
            p["status"] == "processing" && p["waiting_for"] == "card"
        })
        .await
    }
    pub(crate) async fn wait(&self, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..1000 {
            let p = self.get(id).await;
            if f(&p) {
                return p;
            }
            last = p;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("payment never {what}: {last:#}");
    }
    /// Successful, non-replayed POSTs to paths ending in `suffix`, as the emulator saw them.
    pub(crate) async fn executed(&self, suffix: &str) -> usize {
        let reqs: Value = get_json(&self.http, format!("{}/_sim/requests", self.sim)).await;
        reqs.as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["method"] == "POST"
                    && r["path"].as_str().unwrap().ends_with(suffix)
                    && r["status"] == 200
                    && r["replayed"] != true
            })
            .count()
    }

    async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> reqwest::Result<reqwest::Response> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.api))
            .bearer_auth(POS)
            .json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req.send().await
    }

    async fn intents(&self, account: &str) -> u64 {
        let stats: Value = get_json(&self.http, format!("{}/_sim/stats", self.sim)).await;
        stats["payment_intents"][account].as_u64().unwrap_or(0)
    }
    /// Stripe's own test helper: the customer taps the default test card.
    pub(crate) async fn present(&self, reader: &str) {
        let mut req = self
            .http
            .post(format!(
                "{}/v1/test_helpers/terminal/readers/{reader}/present_payment_method",
                self.sim
            ))
            .bearer_auth("sk_test_crash");
        if let Some(acct) = &self.reader_account {
            req = req.header("Stripe-Account", acct);
        }
        let r = req
            .form(&[
                ("type", "card_present"),
                ("card_present[number]", "4242424242424242"),
            ])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }
}

/// The `[store]` section of a sled store in `dir`.
/// What every crash test of a reader job starts from: a real `readerd sim` with one French
/// account, and the config of a `readerd run` beside it (a sled store in `dir`, the `ADMIN`
/// and `POS` tokens, the merchant "bakery") whose store already holds that merchant (with
/// the fields of `merchant` added), a location and one reader labelled "till".
pub(crate) struct OneReader {
    pub(crate) sim: Proc,
    pub(crate) ctx: Ctx,
    pub(crate) config: std::path::PathBuf,
    pub(crate) reader: String,
    /// The merchant's connected account on the emulator.
    pub(crate) account: String,
}

pub(crate) async fn one_reader(dir: &tempfile::TempDir, merchant: Value) -> OneReader {
    let sim_port = free_port();
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let sim = Proc(
        readerd()
            .args(["sim", "--listen", &format!("127.0.0.1:{sim_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    wait_up(&http, &format!("{sim_url}/_sim/stats")).await;
    let acct: Value = http
        .post(format!("{sim_url}/_sim/accounts"))
        .json(&json!({"country": "FR", "default_currency": "eur"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account = acct["id"].as_str().unwrap().to_string();
    let api_port = free_port();
    let config = dir.path().join("readerd.toml");
    std::fs::write(
        &config,
        crate::common::daemon_toml(
            &sim_url,
            &sled_store(dir),
            api_port,
            (ADMIN, POS),
            &["bakery"],
            "",
        ),
    )
    .unwrap();
    let ctx = Ctx {
        http,
        api: format!("http://127.0.0.1:{api_port}"),
        sim: sim_url,
        reader_account: None,
    };
    let reader = {
        let _d = ctx.daemon(&config, None).await;
        let mut m = json!({"id": "bakery", "account": account});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), merchant.as_object()) {
            m.extend(extra.clone());
        }
        let answer = ctx.admin_post("/v1/merchants", m).await;
        for (k, v) in merchant.as_object().into_iter().flatten() {
            assert_eq!(&answer[k], v, "the merchant's {k}");
        }
        let loc = ctx
            .admin_post(
                "/v1/locations",
                json!({"display_name": "Shop", "address": {"line1": "1 rue", "city": "Paris", "postal_code": "75001", "country": "FR"}}),
            )
            .await;
        let r = ctx
            .admin_post(
                "/v1/readers",
                json!({"registration_code": "simulated-wpe", "label": "till", "location": loc["id"]}),
            )
            .await;
        r["id"].as_str().unwrap().to_string()
    };
    OneReader {
        sim,
        ctx,
        config,
        reader,
        account,
    }
}

pub(crate) fn sled_store(dir: &tempfile::TempDir) -> String {
    format!(
        "path = {:?}",
        dir.path().join("store").display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_step_every_payment_ends_once_with_one_intent() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    killed_at_every_step(dir, &store, false).await;
}

/// The same on a reader the merchant owns: every reader command of the resumed flows must
/// still carry the owner's `Stripe-Account`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_step_on_a_merchant_owned_reader_every_payment_ends_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir);
    killed_at_every_step(dir, &store, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_killed_at_every_step_every_payment_ends_once_with_one_intent() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::pg::pg().fresh_db();
    killed_at_every_step(
        dir,
        &format!("backend = \"postgres\"\nurl = {url:?}"),
        false,
    )
    .await;
}

/// The crash test on one store (`store` is the `[store]` section's body), on a platform
/// reader or one the merchant owns.
async fn killed_at_every_step(dir: tempfile::TempDir, store: &str, owned: bool) {
    let sim_port = free_port();
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let _sim = Proc(
        readerd()
            .args([
                "sim",
                "--listen",
                &format!("127.0.0.1:{sim_port}"),
                "--auth-delay",
                "0s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    wait_up(&http, &format!("{sim_url}/_sim/stats")).await;
    let acct: Value = http
        .post(format!("{sim_url}/_sim/accounts"))
        .json(&json!({"country": "FR", "default_currency": "eur"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let acct = acct["id"].as_str().unwrap().to_string();

    let api_port = free_port();
    let config = dir.path().join("readerd.toml");
    std::fs::write(
        &config,
        crate::common::daemon_toml(&sim_url, store, api_port, (ADMIN, POS), &["bakery"], ""),
    )
    .unwrap();
    let ctx = Ctx {
        http: http.clone(),
        api: format!("http://127.0.0.1:{api_port}"),
        sim: sim_url.clone(),
        reader_account: owned.then(|| acct.clone()),
    };
    let owner = if owned { "bakery" } else { "platform" };

    // Set up with a daemon that is then killed.
    let reader = {
        let _d = ctx.daemon(&config, None).await;
        ctx.admin_post("/v1/merchants", json!({"id": "bakery", "account": acct}))
            .await;
        let loc = ctx
            .admin_post(
                "/v1/locations",
                json!({"display_name": "Shop", "address": {"line1": "1 rue", "city": "Paris", "postal_code": "75001", "country": "FR"}, "owner": owner}),
            )
            .await;
        let r = ctx
            .admin_post(
                "/v1/readers",
                json!({"registration_code": "simulated-wpe", "label": "till", "location": loc["id"], "owner": owner}),
            )
            .await;
        r["id"].as_str().unwrap().to_string()
    };

    let steps = [
        "before_pi_create",
        "after_pi_created",
        "after_pi_persisted",
        "before_dispatch",
        "after_dispatch",
        "after_dispatch_persisted",
    ];
    let mut payments = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let key = format!("crash-{step}");
        let amount = 1000 + 100 * i as i64;
        {
            let mut d = ctx.daemon(&config, Some(step)).await;
            // The answer may or may not make it out before the abort.
            let _ = ctx.pay(&key, amount).await;
            assert!(d.exited().await, "the daemon did not stop at {step}");
        }
        let _d = ctx.daemon(&config, None).await;
        // The same key and body: the payment accepted before the crash.
        let resp = ctx.pay(&key, amount).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{step}");
        let p: Value = resp.json().await.unwrap();
        let id = p["id"].as_str().unwrap().to_string();
        ctx.wait_on_reader(&id).await;
        ctx.present(&reader).await;
        let done = ctx
            .wait(&id, "succeeded", |p| p["status"] == "succeeded")
            .await;
        assert_eq!(done["amount_captured"], amount, "{step}");
        payments.push(done);
        assert_eq!(
            ctx.intents(&acct).await,
            payments.len() as u64,
            "one PaymentIntent per payment after {step}"
        );
    }

    // Captures and refunds killed before and after Stripe carried them out.
    let mut manual = Vec::new();
    {
        let _d = ctx.daemon(&config, None).await;
        for k in 0..2 {
            let p: Value = ctx
                .post(
                    "/v1/payments",
                    Some(&format!("crash-manual-{k}")),
                    json!({"merchant": "bakery", "reader": "till", "amount": 5000, "currency": "eur", "capture": "manual"}),
                )
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = p["id"].as_str().unwrap().to_string();
            ctx.wait_on_reader(&id).await;
            ctx.present(&reader).await;
            ctx.wait(&id, "authorised", |p| p["status"] == "requires_capture")
                .await;
            manual.push(id);
        }
    }
    let crash_during =
        |step: &'static str, path: String, key: Option<&'static str>, body: Value| {
            let ctx = &ctx;
            let config = &config;
            async move {
                let mut d = ctx.daemon(config, Some(step)).await;
                let _ = ctx.post(&path, key, body).await;
                assert!(d.exited().await, "the daemon did not stop at {step}");
            }
        };
    for (id, step) in manual.iter().zip(["before_capture", "after_capture"]) {
        crash_during(
            step,
            format!("/v1/payments/{id}/capture"),
            None,
            json!({"amount": 4000}),
        )
        .await;
        let _d = ctx.daemon(&config, None).await;
        let done = ctx
            .wait(id, "captured after the restart", |p| {
                p["status"] == "succeeded"
            })
            .await;
        assert_eq!(done["amount_captured"], 4000, "{step}");
    }
    assert_eq!(ctx.executed("/capture").await, 2, "one capture per payment");
    let refunds = format!("/v1/payments/{}/refunds", manual[0]);
    // A refund killed before Stripe saw it and one killed after Stripe carried it out: at
    // the next start each pending refund is sent again with its own key, so Stripe does the
    // first now and replays the second.
    let mut up = None;
    for (step, key, amount, refunded) in [
        ("before_refund", "rf-crash-1", 1000, 1000),
        ("after_refund", "rf-crash-2", 500, 1500),
    ] {
        drop(up.take());
        crash_during(step, refunds.clone(), Some(key), json!({"amount": amount})).await;
        up = Some(ctx.daemon(&config, None).await);
        let p = ctx
            .wait(&manual[0], "refunded after the restart", |p| {
                p["amount_refunded"] == refunded
            })
            .await;
        assert_eq!(p["amount_captured"], 4000, "{step}");
    }
    // Asking again with the same keys gives the same refunds, nothing new.
    for (key, amount) in [("rf-crash-1", 1000), ("rf-crash-2", 500)] {
        let r = ctx
            .post(&refunds, Some(key), json!({"amount": amount}))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(ctx.get(&manual[0]).await["amount_refunded"], 1500);
    assert_eq!(
        ctx.executed("/v1/refunds").await,
        2,
        "one refund per request"
    );
    payments.extend(futures_util::future::join_all(manual.iter().map(|id| ctx.get(id))).await);
    drop(up);

    // SIGKILL while the card dialogue is up; the customer pays while the daemon is down.
    let id = {
        let _d = ctx.daemon(&config, None).await;
        let p: Value = ctx
            .pay("crash-sigkill", 3000)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = p["id"].as_str().unwrap().to_string();
        ctx.wait_on_reader(&id).await;
        id
    }; // killed here
    ctx.present(&reader).await;
    let _d = ctx.daemon(&config, None).await;
    let done = ctx
        .wait(&id, "succeeded after the restart", |p| {
            p["status"] == "succeeded"
        })
        .await;
    assert!(
        done["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["source"] == "reconcile"),
        "{done:#}"
    );
    payments.push(done);
    assert_eq!(ctx.intents(&acct).await, payments.len() as u64);
    let mut pis: Vec<_> = payments
        .iter()
        .map(|p| p["payment_intent"].as_str().unwrap().to_string())
        .collect();
    pis.sort();
    pis.dedup();
    assert_eq!(
        pis.len(),
        payments.len(),
        "every payment has its own PaymentIntent"
    );
    // Every call about the reader went to the account that owns it.
    let reqs: Value = get_json(&http, format!("{sim_url}/_sim/requests")).await;
    let want = ctx
        .reader_account
        .clone()
        .map(Value::from)
        .unwrap_or(Value::Null);
    for r in reqs.as_array().unwrap() {
        let path = r["path"].as_str().unwrap();
        if path.starts_with("/v1/terminal/readers/") {
            assert_eq!(r["account"], want, "{r}");
        }
    }
    // The same count through Stripe's API, and each PaymentIntent names its payment.
    let stripe = readerd::stripe::StripeClient::new(readerd::stripe::ClientConfig::new(
        sim_url.clone(),
        readerd::stripe::SecretKey::new("sk_test_crash"),
    ))
    .unwrap();
    let listed = stripe
        .list_payment_intents(&readerd::stripe::RequestOptions::account(&acct))
        .await
        .unwrap();
    assert_eq!(listed.len(), payments.len());
    for pi in &listed {
        let owner = pi.metadata.get("readerd_payment").unwrap();
        assert!(payments
            .iter()
            .any(|p| p["id"] == owner.as_str() && p["payment_intent"] == pi.id.as_str()));
    }
    // After every kill above, each payment record is in exactly its indexes.
    drop(_d);
    let registry = readerd::store::Registry::open(&dir.path().join("store")).unwrap();
    assert_eq!(
        readerd::payments::index::verify(&registry).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn the_demo_tour_ends_as_expected() {
    let out = readerd()
        .args([
            "demo",
            "--tour",
            "--listen",
            "127.0.0.1:0",
            "--tap-after",
            "1s",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every payment ended as expected"),
        "{stdout}"
    );
    for step in [
        "success",
        "decline then retry",
        "manual capture",
        "cancel",
        "email input",
        "basket",
    ] {
        assert!(
            stdout.contains(&format!("=> {step}: as expected")),
            "{stdout}"
        );
    }
}

/// Baskets killed at each step of their transfers and reversals: after kill -9 and a
/// restart, every basket has one PaymentIntent, one Transfer per split and one reversal per
/// refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baskets_killed_at_transfers_and_reversals_end_with_one_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let sim_port = free_port();
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let _sim = Proc(
        readerd()
            .args([
                "sim",
                "--listen",
                &format!("127.0.0.1:{sim_port}"),
                "--auth-delay",
                "0s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    wait_up(&http, &format!("{sim_url}/_sim/stats")).await;
    let mut accounts = Vec::new();
    for _ in 0..2 {
        // Separate charges settle on the platform (US in the emulator).
        let a: Value = http
            .post(format!("{sim_url}/_sim/accounts"))
            .json(&json!({"country": "US", "default_currency": "usd"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        accounts.push(a["id"].as_str().unwrap().to_string());
    }
    let api_port = free_port();
    let config = dir.path().join("readerd.toml");
    std::fs::write(
        &config,
        crate::common::daemon_toml(
            &sim_url,
            &sled_store(&dir),
            api_port,
            (ADMIN, POS),
            &["bakery", "florist"],
            "",
        ),
    )
    .unwrap();
    let ctx = Ctx {
        http: http.clone(),
        api: format!("http://127.0.0.1:{api_port}"),
        sim: sim_url.clone(),
        reader_account: None,
    };
    let reader = {
        let _d = ctx.daemon(&config, None).await;
        for (m, acct, fee) in [("bakery", &accounts[0], 40), ("florist", &accounts[1], 20)] {
            ctx.admin_post(
                "/v1/merchants",
                json!({"id": m, "account": acct, "charge_type": "separate", "application_fee_amount": fee}),
            )
            .await;
        }
        let loc = ctx
            .admin_post(
                "/v1/locations",
                json!({"display_name": "Hall", "address": {"line1": "1 Market St", "city": "San Francisco", "state": "CA", "postal_code": "94105", "country": "US"}}),
            )
            .await;
        let r = ctx
            .admin_post(
                "/v1/readers",
                json!({"registration_code": "simulated-wpe", "label": "till", "location": loc["id"]}),
            )
            .await;
        r["id"].as_str().unwrap().to_string()
    };
    let basket = json!({"reader": "till", "amount": 1250, "currency": "usd",
        "splits": [{"merchant": "bakery", "amount": 800}, {"merchant": "florist", "amount": 450}]});
    let transferred = |p: &Value| {
        p["splits"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["transfer_status"] == "succeeded"))
    };
    let mut baskets = Vec::new();
    for step in ["before_transfer", "after_transfer"] {
        let key = format!("basket-{step}");
        let id = {
            let mut d = ctx.daemon(&config, Some(step)).await;
            let p: Value = ctx
                .post("/v1/payments", Some(&key), basket.clone())
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = p["id"].as_str().unwrap().to_string();
            ctx.wait_on_reader(&id).await;
            ctx.present(&reader).await;
            assert!(d.exited().await, "the daemon did not stop at {step}");
            id
        };
        let _d = ctx.daemon(&config, None).await;
        let p = ctx
            .wait(&id, "transferred after the restart", transferred)
            .await;
        assert_eq!(p["splits"][0]["transferred"], 760, "{step}");
        assert_eq!(p["splits"][1]["transferred"], 430, "{step}");
        baskets.push(id);
    }
    assert_eq!(
        ctx.intents("platform").await,
        2,
        "one PaymentIntent per basket"
    );
    assert_eq!(
        ctx.executed("/v1/transfers").await,
        4,
        "one Transfer per split"
    );
    // A refund of the florist's share killed before and after its reversal.
    let id = &baskets[0];
    let refunds = format!("/v1/payments/{id}/refunds");
    let mut up = None;
    for (step, key, amount, refunded, reversed) in [
        ("before_reversal", "rv-crash-1", 200, 200, 191),
        ("after_reversal", "rv-crash-2", 250, 450, 430),
    ] {
        drop(up.take());
        {
            let mut d = ctx.daemon(&config, Some(step)).await;
            let _ = ctx
                .post(
                    &refunds,
                    Some(key),
                    json!({"merchant": "florist", "amount": amount}),
                )
                .await;
            assert!(d.exited().await, "the daemon did not stop at {step}");
        }
        up = Some(ctx.daemon(&config, None).await);
        let p = ctx
            .wait(id, "reversed after the restart", |p| {
                p["splits"][1]["reversed"] == reversed
            })
            .await;
        assert_eq!(p["splits"][1]["refunded"], refunded, "{step}");
        assert_eq!(p["splits"][0]["reversed"], 0, "{step}");
    }
    assert_eq!(
        ctx.executed("/v1/refunds").await,
        2,
        "one refund per request"
    );
    assert_eq!(
        ctx.executed("/reversals").await,
        2,
        "one reversal per refund"
    );
    drop(up);
}
