//! `readerd demo`: everything on one machine, with no network and no Stripe account.
//!
//! The emulator runs in-process (its simulated readers tap a test card by themselves a
//! couple of seconds after a payment reaches them), the daemon runs on a temporary store
//! with webhooks from the emulator, and the demo sets up what an operator would: two
//! merchants (Connect accounts created on the emulator), a location each, and two simulated
//! readers that both merchants share. It prints the API address and the tokens, then runs
//! until Ctrl-C. `--tour` then takes a scripted set of payments through the API (a success,
//! a decline then a retry, a manual capture, a cancel, a basket), an email asked for on a
//! reader's screen and a reviewed payment confirmed with a surcharge once its card is shown,
//! shows each one live, and exits 0 only if every one ended as expected.

use crate::api::auth::token_sha256;
use crate::cli::client::{ApiArgs, ApiClient, ClientError};
use crate::cli::payments::{awaits_confirm, card_line, describe};
use crate::config::{ClientEntry, Config, Role, Secrets, WebhookSecret};
use crate::daemon::Daemon;
use crate::sim::{self, SimConfig, SimHandle, WebhookTarget};
use crate::stripe::wire::CapabilityStatus;
use crate::stripe::SecretKey;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Run the scripted tour, then exit (0 only if every payment ended as expected).
    #[arg(long)]
    pub tour: bool,
    /// The API's address; when it is taken, any free port is used instead.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// How long after a payment reaches a reader its simulated customer taps a card.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub tap_after: Duration,
}

/// What the demo set up.
struct Setup {
    api: String,
    admin: String,
    pos: Vec<(String, String)>,
    readers: Vec<(String, String)>,
}

fn token() -> String {
    crate::payments::new_id("demo")
}

/// The `readerd demo` command.
pub fn main(args: DemoArgs) -> ExitCode {
    crate::telemetry::init(&crate::config::LogConfig {
        level: "warn".into(),
        ..Default::default()
    });
    let Some(rt) = crate::cli::runtime("readerd", true) else {
        return ExitCode::FAILURE;
    };
    rt.block_on(run(args))
}

async fn run(args: DemoArgs) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(_) => match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("readerd demo: cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("readerd demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let whsec = format!("whsec_{}", token());
    let sim = match sim::spawn(SimConfig {
        auth_delay: Duration::from_millis(800),
        auto_present: Some(args.tap_after),
        webhook: Some(WebhookTarget {
            url: format!("http://{addr}/webhooks/stripe"),
            secret: whsec.clone(),
        }),
        // A French venue: the platform's own charges (the food hall's baskets) are taken on
        // the same French readers as the merchants' direct and destination charges.
        platform_country: "FR".into(),
        ..SimConfig::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("readerd demo: cannot start the emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = match tempfile_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("readerd demo: cannot create a temporary store: {e}");
            return ExitCode::FAILURE;
        }
    };
    let admin = token();
    let pos: Vec<(String, String)> = ["bakery", "florist"]
        .iter()
        .map(|m| (m.to_string(), token()))
        .collect();
    let mut config = Config::default();
    config.stripe.api_base = sim.base_url();
    config.store.path = store.0.clone();
    config.api.listen = addr;
    config.api.clients.push(ClientEntry {
        name: "admin".into(),
        token_sha256: token_sha256(&admin),
        role: Role::Admin,
        merchants: vec![],
    });
    for (m, t) in &pos {
        config.api.clients.push(ClientEntry {
            name: format!("{m}-pos"),
            token_sha256: token_sha256(t),
            role: Role::Pos,
            merchants: vec![m.clone()],
        });
    }
    config.payments.poll_min = Duration::from_millis(200).into();
    config.payments.poll_max = Duration::from_secs(1).into();
    let secrets = Secrets {
        stripe_key: SecretKey::new("sk_test_readerd_demo"),
        webhook_secret: Some(WebhookSecret::new(whsec)),
    };
    let daemon = match Daemon::new(config, secrets).start(listener).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("readerd demo: the daemon did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api = format!("http://{addr}");
    let setup = match set_up(&sim, &api, &admin, pos).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("readerd demo: setting up failed: {e}");
            daemon.stop().await;
            return ExitCode::FAILURE;
        }
    };
    print_banner(&setup, args.tap_after, args.tour);
    let code = if args.tour {
        match tour(&setup, &sim).await {
            Ok(true) => {
                println!("\ntour: every payment ended as expected");
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!("\ntour: some payments did not end as expected");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("tour: {e}");
                ExitCode::FAILURE
            }
        }
    } else {
        crate::daemon::wait_for_signal().await;
        println!("\nstopping");
        ExitCode::SUCCESS
    };
    daemon.stop().await;
    sim.shutdown().await;
    drop(store);
    code
}

/// A temporary directory removed on drop (the demo's store).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> std::io::Result<TempDir> {
    let p = std::env::temp_dir().join(format!("readerd-demo-{}", token()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}

fn client(api: &str, token: &str) -> Result<ApiClient, ClientError> {
    ApiClient::new(&ApiArgs {
        api: api.to_string(),
        token: Some(token.to_string()),
        json: false,
        ca_file: None,
        client_cert: None,
        client_key: None,
    })
}

async fn set_up(
    sim: &SimHandle,
    api: &str,
    admin: &str,
    pos: Vec<(String, String)>,
) -> Result<Setup, ClientError> {
    let c = client(api, admin)?;
    let merchants = [
        ("bakery", "Boulangerie Demo", "direct", "1 rue du Pain"),
        ("florist", "Fleurs Demo", "destination", "2 rue des Fleurs"),
    ];
    let mut readers = Vec::new();
    for (i, (id, name, charge, street)) in merchants.iter().enumerate() {
        let acct = sim.create_account("FR", "eur", CapabilityStatus::Active);
        // A reviewed payment may be surcharged up to 2.00 EUR.
        c.post(
            "/v1/merchants",
            &json!({"id": id, "account": acct, "display_name": name, "charge_type": charge,
                    "surcharge_max": 200}),
        )
        .await?;
        let loc = c
            .post(
                "/v1/locations",
                &json!({"display_name": name, "merchant": id,
                        "address": {"line1": street, "city": "Paris", "postal_code": "75001", "country": "FR"}}),
            )
            .await?;
        let label = format!("till-{}", i + 1);
        let r = c
            .post(
                "/v1/readers",
                &json!({"registration_code": "simulated-wpe", "label": label,
                        "location": loc["id"]}),
            )
            .await?;
        readers.push((label, r["id"].as_str().unwrap_or_default().to_string()));
    }
    // A food hall whose stalls share the readers and take baskets: separate charges settle
    // on the platform, which is French here, like the readers.
    for (id, name) in [("pretzels", "Pretzel Stand"), ("flowers", "Flower Stall")] {
        let acct = sim.create_account("FR", "eur", CapabilityStatus::Active);
        c.post(
            "/v1/merchants",
            &json!({"id": id, "account": acct, "display_name": name, "charge_type": "separate",
                    "application_fee_amount": 25}),
        )
        .await?;
    }
    Ok(Setup {
        api: api.to_string(),
        admin: admin.to_string(),
        pos,
        readers,
    })
}

fn print_banner(s: &Setup, tap: Duration, tour: bool) {
    println!("readerd demo: an emulated Stripe, a daemon on a temporary store, two merchants");
    println!(
        "sharing two simulated readers, and a food hall whose two stalls take baskets on them"
    );
    println!(
        "(the customer taps a card {} after a payment reaches a reader).\n",
        humantime::format_duration(tap)
    );
    println!("  API            {}", s.api);
    println!("  console        {}/console#token={}", s.api, s.admin);
    println!("  admin token    {}", s.admin);
    for (m, t) in &s.pos {
        println!("  pos token      {t}   (merchant {m})");
    }
    for (label, id) in &s.readers {
        println!("  reader         {label}  {id}");
    }
    if !tour {
        let bakery = s.pos.first().map(|p| p.1.as_str()).unwrap_or("");
        println!("\nTry, in another terminal:");
        println!("  export READERD_API={} READERD_TOKEN={bakery}", s.api);
        println!("  readerd pay --merchant bakery --reader till-1 --amount 1250 --currency eur");
        println!("  readerd pay --merchant bakery --reader till-2 --amount 4200 --currency eur --capture manual");
        println!("  readerd payments list");
        println!("  curl -s -H \"Authorization: Bearer $READERD_TOKEN\" $READERD_API/v1/payments");
        println!("(amounts ending in 01 or 05 are declined by the test card network)");
        println!("\nCtrl-C to stop.");
    }
}

/// Follows a payment live; `act` runs once per poll and may act on it (present a card,
/// cancel, capture). Returns the payment once it settles.
async fn follow_with<F, Fut>(c: &ApiClient, id: &str, mut act: F) -> Result<Value, ClientError>
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut last = String::new();
    for _ in 0..1200 {
        let p = c.get(&format!("/v1/payments/{id}")).await?;
        let line = describe(&p);
        if line != last {
            println!("    {line}");
            last = line;
        }
        if matches!(
            p["status"].as_str(),
            Some("succeeded" | "canceled" | "failed" | "declined" | "requires_capture")
        ) {
            return Ok(p);
        }
        act(p).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ClientError::Unexpected(format!(
        "payment {id} did not settle in time"
    )))
}

async fn tour(s: &Setup, sim: &SimHandle) -> Result<bool, ClientError> {
    let token = s.pos.first().map(|p| p.1.clone()).unwrap_or_default();
    let c = client(&s.api, &token)?;
    let till = |i: usize| s.readers.get(i).map(|r| r.1.clone()).unwrap_or_default();
    let mut all_ok = true;
    let mut check = |name: &str, ok: bool, p: &Value| {
        println!(
            "  => {name}: {} ({})\n",
            if ok { "as expected" } else { "NOT as expected" },
            p["status"].as_str().unwrap_or("?")
        );
        all_ok &= ok;
    };
    let create = |amount: i64, capture: &str, reader: &str| {
        json!({"merchant": "bakery", "reader": reader, "amount": amount, "currency": "eur",
               "capture": capture, "description": "readerd demo tour"})
    };

    println!("\n1. A payment: 12.50 EUR on till-1, the customer taps a Visa");
    let p = c
        .post_idempotent(
            "/v1/payments",
            &create(1250, "automatic", "till-1"),
            Some(&token_key()),
        )
        .await?;
    let p = follow_with(&c, p["id"].as_str().unwrap_or_default(), |_| async {
        Ok(())
    })
    .await?;
    check(
        "success",
        p["status"] == "succeeded" && p["amount_captured"] == 1250,
        &p,
    );

    println!("2. A decline, then a retry on the same PaymentIntent: 20.00 EUR on till-2");
    let p = c
        .post_idempotent(
            "/v1/payments",
            &create(2000, "automatic", "till-2"),
            Some(&token_key()),
        )
        .await?;
    let id = p["id"].as_str().unwrap_or_default().to_string();
    let reader = till(1);
    let mut presented = false;
    let d = follow_with(&c, &id, |p| {
        let go = !presented && p["waiting_for"] == "card";
        if go {
            presented = true;
            println!("    the customer taps a card with insufficient funds");
            let _ = sim.present_card(&reader, Some("4000000000009995"));
        }
        async { Ok(()) }
    })
    .await?;
    let declined = d["status"] == "declined";
    println!("    retrying: the same PaymentIntent goes back to the reader");
    c.post_empty(&format!("/v1/payments/{id}/retry")).await?;
    let p = follow_with(&c, &id, |_| async { Ok(()) }).await?;
    check(
        "decline then retry",
        declined && p["status"] == "succeeded" && p["payment_intent"] == d["payment_intent"],
        &p,
    );

    println!("3. A manual capture: 42.00 EUR authorised on till-1, 40.00 captured");
    let p = c
        .post_idempotent(
            "/v1/payments",
            &create(4200, "manual", "till-1"),
            Some(&token_key()),
        )
        .await?;
    let id = p["id"].as_str().unwrap_or_default().to_string();
    let a = follow_with(&c, &id, |_| async { Ok(()) }).await?;
    let authorised = a["status"] == "requires_capture";
    let p = c
        .post(
            &format!("/v1/payments/{id}/capture"),
            &json!({"amount": 4000}),
        )
        .await?;
    println!("    {}", describe(&p));
    check(
        "manual capture",
        authorised && p["status"] == "succeeded" && p["amount_captured"] == 4000,
        &p,
    );

    println!("4. A cancel: 9.00 EUR on till-2, cancelled before the card");
    let p = c
        .post_idempotent(
            "/v1/payments",
            &create(900, "automatic", "till-2"),
            Some(&token_key()),
        )
        .await?;
    let id = p["id"].as_str().unwrap_or_default().to_string();
    let mut sent = false;
    let p = follow_with(&c, &id, |p| {
        let go = !sent && p["status"] == "processing";
        let c = c.clone();
        let id = id.clone();
        if go {
            sent = true;
        }
        async move {
            if go {
                println!("    the customer changes their mind: cancel");
                c.post_empty(&format!("/v1/payments/{id}/cancel")).await?;
            }
            Ok(())
        }
    })
    .await?;
    check("cancel", p["status"] == "canceled", &p);

    println!("5. A basket: 8.00 EUR of pretzels and 4.50 EUR of flowers, one tap on till-1");
    let admin = client(&s.api, &s.admin)?;
    let p = admin
        .post_idempotent(
            "/v1/payments",
            &json!({"reader": "till-1", "amount": 1250, "currency": "eur",
                    "description": "readerd demo tour",
                    "splits": [{"merchant": "pretzels", "amount": 800},
                               {"merchant": "flowers", "amount": 450}]}),
            Some(&token_key()),
        )
        .await?;
    let id = p["id"].as_str().unwrap_or_default().to_string();
    follow_with(&admin, &id, |_| async { Ok(()) }).await?;
    let mut p = admin.get(&format!("/v1/payments/{id}")).await?;
    for _ in 0..100 {
        let done = p["splits"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["transfer_status"] == "succeeded"));
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        p = admin.get(&format!("/v1/payments/{id}")).await?;
    }
    for sp in p["splits"].as_array().into_iter().flatten() {
        println!(
            "    {}: {} transferred ({} fee kept), {}",
            sp["merchant"].as_str().unwrap_or("?"),
            sp["transferred"],
            sp["fee"],
            sp["transfer"].as_str().unwrap_or("-")
        );
    }
    println!("    the flowers are returned: the flower stall's share is refunded");
    let r = admin
        .post(
            &format!("/v1/payments/{id}/refunds"),
            &json!({"merchant": "flowers"}),
        )
        .await?;
    println!(
        "    refund {} of {}: {}, its transfer reversed by {}",
        r["id"].as_str().unwrap_or("?"),
        r["amount"],
        r["status"].as_str().unwrap_or("?"),
        r["reversal_amount"]
    );
    let p = admin.get(&format!("/v1/payments/{id}")).await?;
    let s0 = &p["splits"][0];
    let s1 = &p["splits"][1];
    check(
        "basket",
        p["status"] == "succeeded"
            && s0["transferred"] == 775
            && s0["reversed"] == 0
            && s1["transferred"] == 425
            && s1["reversed"] == 425
            && p["amount_refunded"] == 450,
        &p,
    );

    println!("6. An email for the receipt, asked for on till-1's screen");
    let inputs = json!({"merchant": "bakery", "inputs": [{"type": "email", "required": true,
        "custom_text": {"title": "Email for the receipt", "submit_button": "Send"}}]});
    let v = c
        .post(&format!("/v1/readers/{}/inputs", till(0)), &inputs)
        .await?;
    let id = v["id"].as_str().unwrap_or_default().to_string();
    let mut last = String::new();
    let mut v = v;
    for _ in 0..1200 {
        v = c.get(&format!("/v1/input_collections/{id}")).await?;
        let status = v["status"].as_str().unwrap_or("?").to_string();
        if status != last {
            println!("    {status}");
            last = status;
        }
        if matches!(last.as_str(), "succeeded" | "failed" | "canceled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let email = v["inputs"][0]["value"].as_str().unwrap_or("");
    if !email.is_empty() {
        println!("    the customer typed {email}");
    }
    check(
        "email input",
        v["status"] == "succeeded" && !email.is_empty(),
        &v,
    );

    println!("7. A reviewed payment: 20.00 EUR at the bar on till-1; the card is shown first, and the bar adds a 1.50 EUR surcharge before confirming");
    let mut body = create(2000, "automatic", "till-1");
    body["flow"] = json!("review");
    let p = c
        .post_idempotent("/v1/payments", &body, Some(&token_key()))
        .await?;
    let id = p["id"].as_str().unwrap_or_default().to_string();
    let mut p = p;
    let mut last = String::new();
    for _ in 0..1200 {
        p = c.get(&format!("/v1/payments/{id}")).await?;
        let line = describe(&p);
        if line != last {
            println!("    {line}");
            last = line;
        }
        if awaits_confirm(&p) || p["status"] != "queued" && p["status"] != "processing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = awaits_confirm(&p);
    if shown {
        println!(
            "    the bar sees {} and confirms with a 1.50 EUR surcharge",
            card_line(&p["card"])
        );
        c.post(
            &format!("/v1/payments/{id}/confirm"),
            &json!({"surcharge": 150}),
        )
        .await?;
    }
    let p = follow_with(&c, &id, |_| async { Ok(()) }).await?;
    check(
        "reviewed payment with a surcharge",
        shown
            && p["status"] == "succeeded"
            && p["surcharge"] == 150
            && p["amount_captured"] == 2150,
        &p,
    );
    Ok(all_ok)
}

fn token_key() -> String {
    crate::payments::new_id("tour")
}
