//! Several daemons on one PostgreSQL, with the real binaries: three `readerd run` and
//! `readerd sim` (cards tapped by themselves). Readers and payments go to random instances;
//! the instance working the most readers is killed mid-payment, another is paused past its
//! lease and woken. Every payment must end, with exactly one PaymentIntent each and no
//! capture twice, and each handover must take at most `lease_ttl` plus one renewal.
//!
//! A payment or an input collection accepted by an instance that does not work its reader
//! must start promptly (announced by `NOTIFY`, not found by a poll), and so must a cart
//! display; a capture, cancel or refund (and a refund on the reader, its cancel, a setup's
//! cancel) asked of such an instance is carried out by the reader's holder, once; a display and an input collection waiting for a paused holder
//! are shown and collected by its successor.
//!
//! Two sizes. CI runs a scaled-down exercise (about 25 s): 6 readers, 36 payments (and a
//! few more for the checks above), one kill, one pause, `lease_ttl` 2 s, and PostgreSQL
//! stopped for 3 s instead of the 10 s. The full exercise of the issue (20 readers,
//! 300 payments, two kills with the killed instance rejoining, 10 s without the database)
//! is `#[ignore]`d in the parallel suite and run alone by `.ci/run`, after it.

use crate::common::{free_port, get_json};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "cluster-admin";
const POS: &str = "cluster-pos";
const TTL: Duration = Duration::from_secs(2);

/// How big an exercise is.
struct Scale {
    readers: usize,
    payments: usize,
    /// After how many payments the busiest instance is killed (each time).
    kills: &'static [usize],
    /// Whether a killed instance is started again once its readers moved (it rejoins).
    restart_killed: bool,
    /// After how many payments an instance is paused past its lease.
    pause_at: usize,
    /// After how many payments PostgreSQL stops, and for how long.
    outage_at: usize,
    outage: Duration,
}

/// What CI runs: about 25 s.
const CI: Scale = Scale {
    readers: 6,
    payments: 36,
    kills: &[12],
    restart_killed: false,
    pause_at: 24,
    outage_at: 30,
    outage: Duration::from_secs(3),
};

/// The exercise: 20 readers, 300 payments, two kills, a pause, 10 s without the
/// database.
const FULL: Scale = Scale {
    readers: 20,
    payments: 300,
    kills: &[75, 150],
    restart_killed: true,
    pause_at: 200,
    outage_at: 250,
    outage: Duration::from_secs(10),
};
/// How soon a payment accepted by an instance that does not work its reader must start.
const PROMPT: Duration = Duration::from_millis(1500);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        signal(&self.0, "CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(c: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(c.id().to_string())
        .status();
}

fn readerd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_readerd"))
}

async fn wait_up(http: &reqwest::Client, url: &str) {
    for _ in 0..500 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{url} never came up");
}

struct Instance {
    name: String,
    api: String,
    config: std::path::PathBuf,
    proc: Option<Proc>,
}

fn spawn_instance(config: &Path) -> Proc {
    Proc(
        readerd()
            .args(["run", "--config"])
            .arg(config)
            .env("READERD_STRIPE_SECRET_KEY", "sk_test_cluster")
            .env_remove("READERD_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn write_config(path: &Path, name: &str, port: u16, sim: &str, db: &str) {
    std::fs::write(
        path,
        crate::common::daemon_toml(
            sim,
            &format!("backend = \"postgres\"\nurl = {db:?}"),
            port,
            (ADMIN, POS),
            &["bakery"],
            &format!(
                "\n[cluster]\ninstance = \"{name}\"\nlease_ttl = \"{}s\"\n",
                TTL.as_secs()
            ),
        ),
    )
    .unwrap();
}

/// A small deterministic generator: "random" instances and readers, the same every run.
struct Lcg(u64);

impl Lcg {
    fn pick(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

struct Cluster {
    http: reqwest::Client,
    sim: String,
    instances: Vec<Instance>,
    readers: usize,
}

impl Cluster {
    fn live(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| i.proc.is_some())
    }

    async fn admin_post(&self, api: &str, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{api}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(s.is_success(), "{path}: {s} {v}");
        v
    }

    /// Reader id → the instance that works it, as `api` sees it.
    async fn workers(&self, api: &str) -> HashMap<String, Option<String>> {
        let Ok(resp) = self
            .http
            .get(format!("{api}/v1/readers"))
            .bearer_auth(ADMIN)
            .send()
            .await
        else {
            return HashMap::new();
        };
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["id"].as_str().unwrap().to_string(),
                            r["worker"].as_str().map(str::to_string),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Accepts a payment on instance `first` (or, if it is down, the next live one) under
    /// `key`; returns its id.
    async fn pay(&self, first: usize, key: &str, reader: &str, amount: i64) -> String {
        for attempt in 0..20 {
            let inst = &self.instances[(first + attempt) % self.instances.len()];
            if inst.proc.is_none() {
                continue;
            }
            let resp = self
                .http
                .post(format!("{}/v1/payments", inst.api))
                .bearer_auth(POS)
                .header("Idempotency-Key", key)
                .json(&json!({"merchant": "bakery", "reader": reader, "amount": amount, "currency": "eur"}))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(r) = resp {
                if r.status().is_success() {
                    let v: Value = r.json().await.unwrap();
                    return v["id"].as_str().unwrap().to_string();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("payment {key} never accepted");
    }

    /// [`Cluster::pay`] with a capture mode.
    async fn pay_with(
        &self,
        at: usize,
        key: &str,
        reader: &str,
        amount: i64,
        capture: &str,
    ) -> String {
        let (s, v) = self
            .pos_post(
                &self.instances[at].api,
                "/v1/payments",
                json!({"merchant": "bakery", "reader": reader, "amount": amount, "currency": "eur", "capture": capture}),
            )
            .await;
        assert!(s.is_success(), "{key}: {s} {v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn inputs_status(&self, id: &str) -> String {
        for inst in self.live() {
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/input_collections/{id}", inst.api))
                .bearer_auth(ADMIN)
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    return v["status"].as_str().unwrap_or("").to_string();
                }
            }
        }
        String::new()
    }

    /// How many cart displays the emulator showed on `reader`.
    async fn displays_shown(&self, reader: &str) -> usize {
        let reqs: Value = get_json(&self.http, format!("{}/_sim/requests", self.sim)).await;
        let path = format!("/v1/terminal/readers/{reader}/set_reader_display");
        reqs.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == "POST" && r["status"] == 200 && r["path"] == path.as_str())
            .count()
    }

    /// A POST as the point of sale: its status and body.
    async fn pos_post(&self, api: &str, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{api}{path}"))
            .bearer_auth(POS)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = resp.status();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    async fn payment(&self, id: &str) -> Value {
        for inst in self.live() {
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/payments/{id}", inst.api))
                .bearer_auth(POS)
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    return v;
                }
            }
        }
        Value::Null
    }

    async fn metric(&self, api: &str, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{api}/metrics"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// `readerd_operations_forwarded_total{op}` summed over the live instances.
    async fn forwarded(&self, op: &str) -> f64 {
        let mut n = 0.0;
        for i in self.live() {
            n += self
                .metric(
                    &i.api,
                    &format!("readerd_operations_forwarded_total{{op=\"{op}\"}}"),
                )
                .await;
        }
        n
    }

    /// Waits until every reader has a live worker; returns how long that took.
    async fn wait_all_worked(&self, since: Instant, what: &str) -> Duration {
        let live: HashSet<String> = self.live().map(|i| i.name.clone()).collect();
        let api = self.live().next().unwrap().api.clone();
        loop {
            let w = self.workers(&api).await;
            if w.len() == self.readers
                && w.values()
                    .all(|o| o.as_ref().is_some_and(|n| live.contains(n)))
            {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "{what}: readers never all worked by live instances: {w:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_fail_over_without_double_charges() {
    run(CI).await
}

/// The full exercise of the issue (20 readers, 300 payments, two kills with the killed
/// instance rejoining, a pause, 10 s without PostgreSQL): about a minute in a debug build,
/// and timing-sensitive beside the rest of the suite, so `.ci/run` runs it alone after
/// `cargo test`: `cargo test --test it cluster::full_scale -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run alone by .ci/run after the suite; see its comment"]
async fn full_scale_three_instances_twenty_readers_three_hundred_payments() {
    run(FULL).await
}

async fn run(scale: Scale) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // A server of its own: it is stopped on the way.
    let server = crate::common::pg::PgServer::private();
    let db = server.fresh_db();
    let mut server = Some(server);
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
                "--auto-present",
                "400ms",
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

    let mut instances = Vec::new();
    for name in ["east", "west", "north"] {
        let port = free_port();
        let config = dir.path().join(format!("{name}.toml"));
        write_config(&config, name, port, &sim_url, &db);
        let proc = spawn_instance(&config);
        let api = format!("http://127.0.0.1:{port}");
        wait_up(&http, &format!("{api}/healthz")).await;
        instances.push(Instance {
            name: name.to_string(),
            api,
            config,
            proc: Some(proc),
        });
    }
    let mut c = Cluster {
        http,
        sim: sim_url,
        instances,
        readers: scale.readers,
    };
    let mut rng = Lcg(13);

    // The merchant, a location and the readers, each created on a random instance.
    let api = |c: &Cluster, i: usize| c.instances[i].api.clone();
    c.admin_post(
        &api(&c, 0),
        "/v1/merchants",
        json!({"id": "bakery", "account": acct}),
    )
    .await;
    let loc = c
        .admin_post(
            &api(&c, 1),
            "/v1/locations",
            json!({"display_name": "Hall", "address": {"line1": "1 rue", "city": "Paris", "postal_code": "75001", "country": "FR"}}),
        )
        .await;
    let mut readers = Vec::new();
    for n in 0..scale.readers {
        let at = api(&c, rng.pick(3));
        let r = c
            .admin_post(
                &at,
                "/v1/readers",
                json!({"registration_code": "simulated-wpe", "label": format!("till {n}"), "location": loc["id"]}),
            )
            .await;
        readers.push(r["id"].as_str().unwrap().to_string());
    }
    c.wait_all_worked(Instant::now(), "start").await;

    // A payment accepted by an instance that does not work its reader starts on the
    // reader's holder at once: it is announced (NOTIFY), not found by the 5 s safety poll.
    // Three in a row, so that the poll cannot pass for the notice.
    let mut ids = Vec::new();
    let workers = c.workers(&api(&c, 0)).await;
    for (n, reader) in readers.iter().take(3).enumerate() {
        let owner = workers[reader].clone().unwrap();
        let elsewhere = c.instances.iter().position(|i| i.name != owner).unwrap();
        let sent = Instant::now();
        let id = c
            .pay(elsewhere, &format!("pay-notice-{n}"), reader, 900)
            .await;
        wait_status(&c, &id, |p| p["status"] != "queued").await;
        let took = sent.elapsed();
        assert!(
            took < PROMPT,
            "a payment accepted off its reader's holder started after {took:?}"
        );
        ids.push(id);
    }
    // So does an input collection.
    let reader = &readers[3];
    let owner = workers[reader].clone().unwrap();
    let elsewhere = c.instances.iter().position(|i| i.name != owner).unwrap();
    let sent = Instant::now();
    let inputs = c
        .admin_post(
            &c.instances[elsewhere].api,
            &format!("/v1/readers/{reader}/inputs"),
            json!({"merchant": "bakery", "inputs": [{"type": "email", "custom_text": {"title": "Receipt"}}]}),
        )
        .await;
    let inputs_id = inputs["id"].as_str().unwrap().to_string();
    while c.inputs_status(&inputs_id).await == "queued" {
        assert!(
            sent.elapsed() < PROMPT,
            "an input collection accepted off its reader's holder waited {:?}",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    while c.inputs_status(&inputs_id).await != "succeeded" {
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "inputs never collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // So does a cart display.
    let reader = &readers[2];
    let owner = workers[reader].clone().unwrap();
    let elsewhere = c.instances.iter().position(|i| i.name != owner).unwrap();
    let sent = Instant::now();
    let (s, d) = c
        .pos_post(
            &c.instances[elsewhere].api,
            &format!("/v1/readers/{reader}/display"),
            cart(),
        )
        .await;
    assert!(s.is_success(), "{s} {d}");
    while c.displays_shown(reader).await == 0 {
        assert!(
            sent.elapsed() < PROMPT,
            "a display accepted off its reader's holder waited {:?}",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    // Capture, cancel, refund and retry asked of an instance that does not work the
    // reader: the reader's holder carries them out, once, and the answer is the holder's.
    let mut other_intents = 0;
    {
        let holder_of = |r: &str| workers[r].clone().unwrap();
        let not_holder = |r: &str| {
            let h = holder_of(r);
            c.instances
                .iter()
                .find(|i| i.name != h)
                .unwrap()
                .api
                .clone()
        };
        let (r4, r5) = (readers[4].clone(), readers[5].clone());
        let to_capture = c.pay_with(0, "pay-fwd-capture", &r4, 2100, "manual").await;
        let to_cancel = c.pay_with(1, "pay-fwd-cancel", &r5, 2200, "manual").await;
        let to_refund = c
            .pay_with(2, "pay-fwd-refund", &r4, 2300, "automatic")
            .await;
        wait_status(&c, &to_capture, |p| p["status"] == "requires_capture").await;
        wait_status(&c, &to_cancel, |p| p["status"] == "requires_capture").await;
        wait_status(&c, &to_refund, |p| p["status"] == "succeeded").await;

        let (s, p) = c
            .pos_post(
                &not_holder(&r4),
                &format!("/v1/payments/{to_capture}/capture"),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{p:#}");
        assert_eq!(p["status"], "succeeded", "{p:#}");
        let (s, p) = c
            .pos_post(
                &not_holder(&r5),
                &format!("/v1/payments/{to_cancel}/cancel"),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{p:#}");
        assert_eq!(p["status"], "canceled", "{p:#}");
        let (s, r) = c
            .pos_post(
                &not_holder(&r4),
                &format!("/v1/payments/{to_refund}/refunds"),
                json!({"amount": 500}),
            )
            .await;
        assert_eq!(s, 201, "{r:#}");
        assert_eq!(r["amount"], 500, "{r:#}");
        // A refusal comes back as the holder gave it.
        let (s, e) = c
            .pos_post(
                &not_holder(&r5),
                &format!("/v1/payments/{to_cancel}/capture"),
                json!({}),
            )
            .await;
        assert_eq!(s, 409, "{e:#}");
        assert_eq!(e["error"]["code"], "invalid_state", "{e:#}");
        let p = c.payment(&to_refund).await;
        assert_eq!(p["amount_refunded"], 500, "{p:#}");
        // Each was handed over by the instance asked (none of them wrote the steps).
        let mut forwarded = 0.0;
        for i in c.live() {
            for op in ["capture", "cancel", "refund"] {
                forwarded += c
                    .metric(
                        &i.api,
                        &format!("readerd_operations_forwarded_total{{op=\"{op}\"}}"),
                    )
                    .await;
            }
        }
        assert_eq!(
            forwarded, 4.0,
            "capture, cancel, refund and the refused capture"
        );
        ids.push(to_capture);

        // A refund on the reader, its cancel and a setup's cancel asked of an instance that
        // does not work the reader: its holder accepts, and cancels, them too.
        let (s, r) = c
            .pos_post(
                &not_holder(&r4),
                &format!("/v1/payments/{to_refund}/refunds"),
                json!({"amount": 300, "on_reader": true}),
            )
            .await;
        assert_eq!(s, 202, "{r:#}");
        assert_eq!(r["status"], "pending", "{r:#}");
        let made = r["id"].as_str().unwrap().to_string();
        wait_refund(&c, &to_refund, &made, "succeeded").await;
        // The payment's refunded total follows the refund's status.
        wait_status(&c, &to_refund, |p| p["amount_refunded"] == 800).await;
        // r5 is kept busy (offline, its payment waits for it), so that what follows waits
        // in its holder's queue: only the holder can take it out of there, and a cancel
        // is final at once only if the holder carried it out.
        set_online(&c, &r5, false).await;
        let blocker = c
            .pay_with(0, "pay-fwd-blocker", &r5, 2400, "automatic")
            .await;
        wait_status(&c, &blocker, |p| {
            p["history"].as_array().is_some_and(|h| {
                h.iter()
                    .any(|e| e["note"] == "reader offline; waiting for it")
            })
        })
        .await;
        let (s, r) = c
            .pos_post(
                &not_holder(&r5),
                &format!("/v1/payments/{to_refund}/refunds"),
                json!({"amount": 200, "on_reader": true, "reader": r5}),
            )
            .await;
        assert_eq!(s, 202, "{r:#}");
        assert_eq!(r["on_reader"]["reader"], r5.as_str(), "{r:#}");
        let queued = r["id"].as_str().unwrap().to_string();
        let (s, r) = c
            .pos_post(
                &not_holder(&r5),
                &format!("/v1/payments/{to_refund}/refunds/{queued}/cancel"),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{r:#}");
        assert_eq!(r["status"], "canceled", "{r:#}");
        let (s, e) = c
            .pos_post(
                &not_holder(&r5),
                &format!("/v1/payments/{to_refund}/refunds/{queued}/cancel"),
                json!({}),
            )
            .await;
        assert_eq!(s, 409, "{e:#}");
        assert_eq!(e["error"]["code"], "invalid_state", "{e:#}");
        let (s, v) = c
            .pos_post(
                &not_holder(&r5),
                "/v1/setups",
                json!({"merchant": "bakery", "reader": r5, "allow_redisplay": "limited"}),
            )
            .await;
        assert!(s.is_success(), "{s} {v:#}");
        let setup = v["id"].as_str().unwrap().to_string();
        let (s, v) = c
            .pos_post(
                &not_holder(&r5),
                &format!("/v1/setups/{setup}/cancel"),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v:#}");
        assert_eq!(v["status"], "canceled", "{v:#}");
        let (s, e) = c
            .pos_post(
                &not_holder(&r5),
                &format!("/v1/setups/{setup}/cancel"),
                json!({}),
            )
            .await;
        assert_eq!(s, 409, "{e:#}");
        assert_eq!(e["error"]["code"], "invalid_state", "{e:#}");
        set_online(&c, &r5, true).await;
        assert_eq!(c.forwarded("refund_on_reader").await, 2.0);
        assert_eq!(
            c.forwarded("cancel_refund").await,
            2.0,
            "with the refused one"
        );
        assert_eq!(
            c.forwarded("cancel_setup").await,
            2.0,
            "with the refused one"
        );
        let p = c.payment(&to_refund).await;
        assert_eq!(p["amount_refunded"], 800, "nothing more: {p:#}");
        ids.push(blocker);
        ids.push(to_refund);
        other_intents += 1; // the canceled one's
    }

    // Payments to random instances and readers; the killing and pausing happen on the way.
    let mut handovers = Vec::new();
    let mut outage = None;
    for n in 0..scale.payments {
        let reader = readers[rng.pick(scale.readers)].clone();
        let id = c
            .pay(
                rng.pick(3),
                &format!("pay-{n}"),
                &reader,
                1000 + 100 * n as i64,
            )
            .await;
        ids.push(id.clone());
        if scale.kills.contains(&n) {
            // The instance working the most readers dies mid-payment.
            let workers = c.workers(&api(&c, 0)).await;
            let mut count: HashMap<String, usize> = HashMap::new();
            for w in workers.values().flatten() {
                *count.entry(w.clone()).or_default() += 1;
            }
            let busiest = count.into_iter().max_by_key(|(_, n)| *n).unwrap().0;
            let victim_reader = workers
                .iter()
                .find(|(_, w)| w.as_deref() == Some(busiest.as_str()))
                .unwrap()
                .0
                .clone();
            let mid = c
                .pay(1, &format!("pay-mid-kill-{n}"), &victim_reader, 4200)
                .await;
            ids.push(mid.clone());
            wait_status(&c, &mid, |p| p["status"] == "processing").await;
            let i = c.instances.iter().position(|i| i.name == busiest).unwrap();
            let killed_at = Instant::now();
            let mut p = c.instances[i].proc.take().unwrap();
            signal(&p.0, "KILL");
            let _ = p.0.wait();
            handovers.push(c.wait_all_worked(killed_at, "after the kill").await);
            if scale.restart_killed {
                // It comes back and takes its share again.
                c.instances[i].proc = Some(spawn_instance(&c.instances[i].config));
                wait_up(&c.http, &format!("{}/healthz", c.instances[i].api)).await;
            }
        }
        if n == scale.outage_at {
            // The database stops for a while: instances wait (API calls too), and no payment
            // that could still end well fails.
            let server = server.take().unwrap();
            server.stop();
            let back_after = scale.outage;
            outage = Some(std::thread::spawn(move || {
                std::thread::sleep(back_after);
                server.restart();
                server
            }));
        }
        if n == scale.pause_at {
            // A live instance that works a reader is paused past its lease, then woken: it
            // must find its leases lost and its writes refused.
            let workers = c.workers(&c.live().next().unwrap().api.clone()).await;
            let name = workers.values().flatten().next().unwrap().clone();
            let i = c.instances.iter().position(|i| i.name == name).unwrap();
            let paused_reader = workers
                .iter()
                .find(|(_, w)| w.as_deref() == Some(name.as_str()))
                .unwrap()
                .0
                .clone();
            let other = (0..3)
                .find(|&j| j != i && c.instances[j].proc.is_some())
                .unwrap();
            let mid = c.pay(other, "pay-mid-pause", &paused_reader, 4300).await;
            ids.push(mid.clone());
            wait_status(&c, &mid, |p| p["status"] == "processing").await;
            let paused_at = Instant::now();
            signal(&c.instances[i].proc.as_ref().unwrap().0, "STOP");
            // A display and an input collection for another reader of the paused instance,
            // accepted while it cannot act: its successor shows and collects them.
            let second = workers
                .iter()
                .find(|(r, w)| w.as_deref() == Some(name.as_str()) && **r != paused_reader)
                .map(|(r, _)| r.clone());
            assert!(second.is_some(), "two readers each: {workers:?}");
            let mut waiting_inputs = None;
            if let Some(r2) = &second {
                let api_other = c.instances[other].api.clone();
                let (s, d) = c
                    .pos_post(&api_other, &format!("/v1/readers/{r2}/display"), cart())
                    .await;
                assert!(s.is_success(), "{s} {d}");
                let (s, v) = c
                    .pos_post(
                        &api_other,
                        &format!("/v1/readers/{r2}/inputs"),
                        json!({"merchant": "bakery", "inputs": [{"type": "email", "custom_text": {"title": "Receipt"}}]}),
                    )
                    .await;
                assert!(s.is_success(), "{s} {v}");
                waiting_inputs = Some((r2.clone(), v["id"].as_str().unwrap().to_string()));
            }
            let api_i = c.instances[i].api.clone();
            let proc = c.instances[i].proc.take();
            handovers.push(c.wait_all_worked(paused_at, "after the pause").await);
            if let Some((r2, inputs_id)) = waiting_inputs {
                let since = Instant::now();
                while c.inputs_status(&inputs_id).await != "succeeded" {
                    assert!(
                        since.elapsed() < Duration::from_secs(20),
                        "inputs accepted for a paused holder's reader never collected"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                while c.displays_shown(&r2).await == 0 {
                    assert!(
                        since.elapsed() < Duration::from_secs(20),
                        "the display waiting on the paused holder was never shown"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(TTL).await;
            signal(&proc.as_ref().unwrap().0, "CONT");
            c.instances[i].proc = proc;
            // Once awake, it notices: its leases are lost.
            let woke = Instant::now();
            while c.metric(&api_i, "readerd_lease_losses_total").await < 1.0 {
                assert!(
                    woke.elapsed() < Duration::from_secs(10),
                    "the paused instance never noticed it lost its leases"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    let _server = outage.map(|t| t.join().unwrap());

    // Every payment final, each with one PaymentIntent.
    for id in &ids {
        let p = wait_status(&c, id, |p| {
            p["status"]
                .as_str()
                .is_some_and(|s| ["succeeded", "failed", "canceled"].contains(&s))
        })
        .await;
        assert_eq!(p["status"], "succeeded", "{p:#}");
    }
    let stats: Value = get_json(&c.http, format!("{}/_sim/stats", c.sim)).await;
    assert_eq!(
        stats["payment_intents"][&acct].as_u64().unwrap_or(0),
        ids.len() as u64 + other_intents,
        "one PaymentIntent per payment: {stats:#}"
    );
    let reqs: Value = get_json(&c.http, format!("{}/_sim/requests", c.sim)).await;
    let mut captured = HashSet::new();
    let mut refunds = 0;
    for r in reqs.as_array().unwrap() {
        let path = r["path"].as_str().unwrap();
        if r["method"] == "POST"
            && r["status"] == 200
            && r["replayed"] != true
            && path.ends_with("/capture")
        {
            assert!(captured.insert(path.to_string()), "{path} twice");
        }
        if r["method"] == "POST"
            && r["status"] == 200
            && r["replayed"] != true
            && path == "/v1/refunds"
        {
            refunds += 1;
        }
    }
    assert_eq!(refunds, 1, "the one refund asked for, once");
    // Each handover within lease_ttl plus one renewal (and the time to see it).
    let bound = TTL + TTL / 3 + Duration::from_millis(1500);
    for h in &handovers {
        assert!(*h <= bound, "a handover took {h:?} (bound {bound:?})");
    }
    eprintln!(
        "cluster exercise: {} readers, {} payments in {:?}; handovers {handovers:?} (bound {bound:?}); {} s without the database",
        scale.readers,
        ids.len(),
        started.elapsed(),
        scale.outage.as_secs()
    );
}

/// Puts the emulator's `reader` online or offline.
async fn set_online(c: &Cluster, reader: &str, online: bool) {
    let state = if online { "online" } else { "offline" };
    let resp = c
        .http
        .post(format!("{}/_sim/readers/{reader}/{state}", c.sim))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{reader} {state}");
}

/// Waits until refund `refund` of `payment` is `status`.
async fn wait_refund(c: &Cluster, payment: &str, refund: &str, status: &str) {
    let start = Instant::now();
    loop {
        let api = &c.live().next().unwrap().api;
        let r: Value = c
            .http
            .get(format!("{api}/v1/payments/{payment}/refunds/{refund}"))
            .bearer_auth(POS)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if r["status"] == status {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "refund {refund} never {status}: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn cart() -> Value {
    json!({"merchant": "bakery", "currency": "eur", "total": 300,
           "line_items": [{"description": "Tea", "amount": 300, "quantity": 1}]})
}

async fn wait_status(c: &Cluster, id: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let p = c.payment(id).await;
        if f(&p) {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "payment {id} stuck: {p:#}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}
