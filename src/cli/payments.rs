//! `readerd pay …` and `readerd payments …`: the payment commands of the API client.
//!
//! `pay` creates a payment and follows it live over the payment's event stream (a status
//! line that updates, "waiting for card…", then the outcome); Ctrl-C asks the daemon to
//! cancel and keeps following until Stripe has the last word. It exits 0 only when the
//! payment succeeded (or, with `--capture manual`, is authorised); a declined payment ends
//! with the command that sends it back to the reader. Amounts are shown as money
//! ([`super::money`]).

use super::client::{block_on, or_dash, print_json, ApiArgs, ApiClient, ClientError, Table};
use super::money;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct PayCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The merchant to charge for.
    #[arg(long, required_unless_present = "split")]
    pub merchant: Option<String>,
    /// A basket instead of one merchant: `--split bakery=800 --split florist=450` (every
    /// merchant on separate charges; `--amount` is their sum).
    #[arg(long, value_name = "MERCHANT=AMOUNT", conflicts_with = "merchant")]
    pub split: Vec<String>,
    /// The reader (`tmr_…` or its label).
    #[arg(long)]
    pub reader: String,
    /// Amount in minor units (1250 = 12.50).
    #[arg(long)]
    pub amount: i64,
    /// Lower-case currency, such as `eur`.
    #[arg(long)]
    pub currency: String,
    /// `automatic` or `manual` (authorise now, capture later).
    #[arg(long, default_value = "automatic", value_parser = ["automatic", "manual"])]
    pub capture: String,
    /// A description kept on the payment and its PaymentIntent.
    #[arg(long)]
    pub description: Option<String>,
    /// Make the request repeatable (a random key is used otherwise).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Create the payment and return at once, without following it.
    #[arg(long)]
    pub no_follow: bool,
    /// Skip the reader's tip screen for this payment.
    #[arg(long)]
    pub no_tipping: bool,
    /// Review the card before it is authorised: the card is shown and you are asked
    /// whether to confirm (no: the payment is canceled).
    #[arg(long)]
    pub review: bool,
    /// With `--review`: add this surcharge (minor units, within the merchant's
    /// `surcharge_max`) at the confirm.
    #[arg(long, requires = "review")]
    pub surcharge: Option<i64>,
    /// With `--review`: confirm without asking (scripts, tests). Without a terminal and
    /// without `--yes`, the reviewed payment is canceled.
    #[arg(long, short = 'y', requires = "review")]
    pub yes: bool,
}

#[derive(Args, Debug)]
pub struct PaymentsCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub action: PaymentsAction,
}

#[derive(Subcommand, Debug)]
pub enum PaymentsAction {
    /// List payments (newest first), following the pages to the last one.
    List {
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        reader: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// Only payments created at or after this time (RFC 3339).
        #[arg(long)]
        created_gte: Option<String>,
        /// Only payments created before this time (RFC 3339).
        #[arg(long)]
        created_lt: Option<String>,
        /// Stop after this many payments (default: every page).
        #[arg(long)]
        max: Option<usize>,
        /// Payments asked for per page (the API's `limit`, 1 to 1000).
        #[arg(long, default_value_t = 100)]
        page_size: usize,
    },
    /// Show one payment with its history.
    Show { id: String },
    /// Cancel a payment (`canceled` once Stripe confirms).
    Cancel { id: String },
    /// Capture an authorised payment, fully or `--amount` of it.
    Capture {
        id: String,
        #[arg(long)]
        amount: Option<i64>,
    },
    /// Send a declined payment back to its reader (same PaymentIntent).
    Retry { id: String },
    /// Confirm a reviewed payment (`requires_confirmation`), with an optional surcharge.
    Confirm {
        id: String,
        /// Minor units added to the amount first (within the merchant's `surcharge_max`).
        #[arg(long)]
        surcharge: Option<i64>,
    },
    /// Refund a succeeded payment, fully or `--amount` of it.
    Refund {
        id: String,
        #[arg(long)]
        amount: Option<i64>,
        /// The merchant of a basket the refund is for (required when it has several).
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Refund on a reader: the refund waits for the customer's card (required for
        /// Interac); the command waits until it is done, failed or canceled.
        #[arg(long)]
        on_reader: bool,
        /// With --on-reader: the reader (id or label); the payment's own by default.
        #[arg(long, requires = "on_reader")]
        reader: Option<String>,
        /// With --on-reader: print the queued refund and return at once.
        #[arg(long, requires = "on_reader")]
        no_wait: bool,
    },
    /// Cancel a refund that waits for the card on a reader (its amount is freed).
    CancelRefund { id: String, refund: String },
    /// Follow a payment live until it settles.
    Follow { id: String },
}

impl PayCmd {
    pub fn run(self) -> ExitCode {
        let mut code = ExitCode::FAILURE;
        let out = block_on(async {
            let c = ApiClient::new(&self.api)?;
            let key = self
                .idempotency_key
                .clone()
                .unwrap_or_else(|| crate::payments::new_id("cli"));
            let mut body = json!({
                "reader": self.reader,
                "amount": self.amount,
                "currency": self.currency,
                "capture": self.capture,
                "description": self.description,
            });
            if self.split.is_empty() {
                body["merchant"] = json!(self.merchant);
            } else {
                let mut splits = Vec::new();
                for s in &self.split {
                    let parsed = s
                        .split_once('=')
                        .and_then(|(m, a)| Some((m, a.parse::<i64>().ok()?)));
                    let Some((m, a)) = parsed else {
                        return Err(ClientError::Unexpected(format!(
                            "--split {s}: expected MERCHANT=AMOUNT in minor units"
                        )));
                    };
                    splits.push(json!({"merchant": m, "amount": a}));
                }
                body["splits"] = json!(splits);
            }
            if self.no_tipping {
                body["tipping"] = json!(false);
            }
            if self.review {
                body["flow"] = json!("review");
            }
            let p = c.post_idempotent("/v1/payments", &body, Some(&key)).await?;
            if self.api.json && self.no_follow {
                print_json(&p);
            } else {
                println!(
                    "payment {} for {} on {}",
                    p["id"].as_str().unwrap_or("?"),
                    money::format(self.amount, &self.currency),
                    p["reader"].as_str().unwrap_or("?")
                );
            }
            if self.no_follow {
                code = ExitCode::SUCCESS;
                return Ok(());
            }
            let id = p["id"].as_str().unwrap_or_default().to_string();
            let mut last = follow(&c, &id, true).await?;
            if last["status"] == "requires_confirmation" {
                last = self.decide(&c, &id, &last).await?;
            }
            if self.api.json {
                print_json(&last);
            }
            let manual = self.capture == "manual";
            code = match last["status"].as_str() {
                Some("succeeded") => ExitCode::SUCCESS,
                Some("requires_capture") if manual => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            };
            Ok(())
        });
        if out != ExitCode::SUCCESS {
            return out;
        }
        code
    }
}

impl PayCmd {
    /// A reviewed payment's card is shown: confirm it (asked, or `--yes`) with the
    /// surcharge, or cancel it; then follow it to its outcome.
    async fn decide(&self, c: &ApiClient, id: &str, p: &Value) -> Result<Value, ClientError> {
        let amount = money::format_json(&p["amount"], &p["currency"]);
        let total = match self.surcharge {
            Some(s) if s > 0 => format!(
                "{amount} + {} surcharge",
                money::format(s, p["currency"].as_str().unwrap_or(&self.currency))
            ),
            _ => amount,
        };
        let yes = if self.yes {
            true
        } else if std::io::stdin().is_terminal() {
            print!("confirm {total} on this card? [y/N] ");
            let _ = std::io::stdout().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            matches!(answer.trim(), "y" | "Y" | "yes")
        } else {
            println!("no terminal to ask on, and no --yes: canceling");
            false
        };
        if yes {
            let body = match self.surcharge {
                Some(s) => json!({ "surcharge": s }),
                None => json!({}),
            };
            c.post(&format!("/v1/payments/{id}/confirm"), &body).await?;
            println!("confirmed: {total}");
        } else {
            c.post_empty(&format!("/v1/payments/{id}/cancel")).await?;
        }
        follow(c, id, true).await
    }
}

/// A reviewed payment's card as one line: `visa •••• 4242 (credit, apple_pay)`.
pub fn card_line(card: &Value) -> String {
    let mut s = format!(
        "{} •••• {}",
        card["brand"].as_str().unwrap_or("card"),
        card["last4"].as_str().unwrap_or("????")
    );
    let extra: Vec<&str> = [card["funding"].as_str(), card["wallet"].as_str()]
        .into_iter()
        .flatten()
        .collect();
    if !extra.is_empty() {
        s.push_str(&format!(" ({})", extra.join(", ")));
    }
    s
}

/// Whether a reviewed payment shows its card and waits for the point of sale.
pub fn awaits_confirm(p: &Value) -> bool {
    p["status"] == "requires_confirmation"
        && p["waiting_for"] == "confirmation"
        && p["card"].is_object()
        && p["cancel_requested"] != true
}

/// The line shown for a payment's current state.
pub fn describe(p: &Value) -> String {
    let status = p["status"].as_str().unwrap_or("?");
    let waiting = p["waiting_for"].as_str();
    let mut s = match (status, waiting) {
        ("queued", Some("reader_busy")) => {
            "queued: the reader is busy with another action…".to_string()
        }
        ("queued", Some("reader_offline")) => {
            "queued: the reader is offline, waiting for it…".to_string()
        }
        ("queued", _) => "queued: waiting for the reader…".to_string(),
        ("processing", Some("card")) => "processing: waiting for card…".to_string(),
        ("processing", Some("authorisation")) => "processing: authorising…".to_string(),
        ("processing", Some("reader_not_picked_up")) => {
            "processing: the reader has not picked the payment up…".to_string()
        }
        ("processing", _) => "processing…".to_string(),
        ("requires_confirmation", _) if awaits_confirm(p) => format!(
            "card read: {}; waiting for the confirm",
            card_line(&p["card"])
        ),
        ("requires_confirmation", Some("authorisation")) => {
            "confirmed: handing the card to the reader for authorisation…".to_string()
        }
        ("requires_confirmation", _) => "requires_confirmation…".to_string(),
        ("requires_capture", _) => format!(
            "authorised: capture before {}",
            p["capture_before"]
                .as_str()
                .unwrap_or("the authorisation expires")
        ),
        ("succeeded", _) => format!(
            "succeeded: {} captured",
            money::format_json(&p["amount_captured"], &p["currency"])
        ),
        (other, _) => other.to_string(),
    };
    if let Some(code) = p["failure"]["code"].as_str() {
        s.push_str(&format!(
            " ({code}: {})",
            p["failure"]["message"].as_str().unwrap_or("")
        ));
    }
    if p["cancel_requested"].as_bool() == Some(true) && !s.starts_with("canceled") {
        s.push_str(" [cancel requested]");
    }
    s
}

/// Whether following stops here: an outcome, or a reviewed card waiting for its confirm.
fn settled(status: &str, p: &Value) -> bool {
    matches!(
        status,
        "succeeded" | "canceled" | "failed" | "declined" | "requires_capture"
    ) || awaits_confirm(p)
}

/// How long to wait before opening the stream again when it ended early (the daemon
/// restarted, or a proxy closed an idle connection).
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Follows a payment until it settles (final, declined or authorised), printing each change
/// as the daemon's event stream (`GET /v1/payments/{id}/events`) reports it. The stream
/// starts with the payment as it is, so opening it again after a dropped connection loses
/// nothing. With `cancel_on_interrupt`, Ctrl-C asks the daemon to cancel and keeps
/// following.
pub async fn follow(
    c: &ApiClient,
    id: &str,
    cancel_on_interrupt: bool,
) -> Result<Value, ClientError> {
    let tty = std::io::stdout().is_terminal();
    let mut last_line = String::new();
    let mut interrupted = false;
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let path = format!("/v1/payments/{id}/events");
    loop {
        let mut events = c.events(&path).await?;
        loop {
            let event = tokio::select! {
                e = events.next() => e?,
                _ = &mut ctrl_c, if cancel_on_interrupt && !interrupted => {
                    interrupted = true;
                    if tty { println!(); }
                    println!("cancelling (the payment is canceled only once Stripe confirms)…");
                    c.post_empty(&format!("/v1/payments/{id}/cancel")).await?;
                    continue;
                }
            };
            let Some(event) = event else { break };
            if event.event != "payment" {
                continue;
            }
            let p: Value = serde_json::from_str(&event.data).map_err(|_| {
                ClientError::Unexpected(format!("an event that is not a payment: {}", event.data))
            })?;
            let line = describe(&p);
            if line != last_line {
                if tty {
                    print!("\r\x1b[2K{line}");
                    let _ = std::io::stdout().flush();
                } else {
                    println!("{line}");
                }
                last_line = line;
            }
            let status = p["status"].as_str().unwrap_or("");
            if settled(status, &p) {
                if tty {
                    println!();
                }
                if let Some(notes) = p["history"].as_array() {
                    for n in notes.iter().filter_map(|h| h["note"].as_str()) {
                        if n.contains("before the cancel") {
                            println!("note: {n}");
                        }
                    }
                }
                if status == "declined" {
                    println!("{}", retry_hint(id));
                }
                return Ok(p);
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Waits for a refund on a reader to leave `pending` (the customer presents the card, walks
/// away, or the point of sale cancels), reading it once a second.
async fn wait_refund(
    c: &ApiClient,
    payment: &str,
    r: &Value,
    quiet: bool,
) -> Result<Value, ClientError> {
    let rid = r["id"].as_str().unwrap_or_default().to_string();
    if !quiet {
        println!(
            "refund {rid} waits for the customer's card on reader {}",
            r["on_reader"]["reader"].as_str().unwrap_or("?")
        );
    }
    let mut r = r.clone();
    while r["status"] == "pending" {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        r = c
            .get(&format!("/v1/payments/{payment}/refunds/{rid}"))
            .await?;
    }
    if !quiet {
        if let Some(f) = r["on_reader"]["failure"].as_object() {
            println!(
                "  {}: {}",
                f.get("code").and_then(Value::as_str).unwrap_or("?"),
                f.get("message").and_then(Value::as_str).unwrap_or("")
            );
        }
    }
    Ok(r)
}

/// What to run to send a declined payment back to its reader (same PaymentIntent).
pub fn retry_hint(id: &str) -> String {
    format!("to try again on the reader (same PaymentIntent): readerd payments retry {id}")
}

impl PaymentsCmd {
    pub fn run(self) -> ExitCode {
        let json_out = self.api.json;
        block_on(async move {
            let c = ApiClient::new(&self.api)?;
            let show = |v: &Value| {
                if json_out {
                    print_json(v);
                } else {
                    print_payment(v);
                }
            };
            match self.action {
                PaymentsAction::List {
                    merchant,
                    reader,
                    status,
                    created_gte,
                    created_lt,
                    max,
                    page_size,
                } => {
                    let mut q = form_urlencoded::Serializer::new(String::new());
                    q.append_pair("limit", &page_size.to_string());
                    for (k, v) in [
                        ("merchant", merchant),
                        ("reader", reader),
                        ("status", status),
                        ("created_gte", created_gte),
                        ("created_lt", created_lt),
                    ] {
                        if let Some(v) = v {
                            q.append_pair(k, &v);
                        }
                    }
                    let path = format!("/v1/payments?{}", q.finish());
                    let mut all = Vec::new();
                    c.get_all_pages(&path, max, |items| all.extend(items))
                        .await?;
                    let v = serde_json::Value::Array(all);
                    if json_out {
                        print_json(&v);
                        return Ok(());
                    }
                    let mut t = Table::new(&[
                        "ID", "STATUS", "MERCHANT", "READER", "AMOUNT", "CAPTURED", "REFUNDED",
                        "CREATED",
                    ]);
                    for p in v.as_array().into_iter().flatten() {
                        t.row(vec![
                            or_dash(p["id"].as_str()),
                            or_dash(p["status"].as_str()),
                            or_dash(p["merchant"].as_str()),
                            or_dash(p["reader"].as_str()),
                            money::format_json(&p["amount"], &p["currency"]),
                            money::format_json(&p["amount_captured"], &p["currency"]),
                            money::format_json(&p["amount_refunded"], &p["currency"]),
                            or_dash(p["created_at"].as_str()),
                        ]);
                    }
                    t.print();
                }
                PaymentsAction::Show { id } => show(&c.get(&format!("/v1/payments/{id}")).await?),
                PaymentsAction::Cancel { id } => {
                    show(&c.post_empty(&format!("/v1/payments/{id}/cancel")).await?)
                }
                PaymentsAction::Capture { id, amount } => {
                    let body = match amount {
                        Some(a) => json!({ "amount": a }),
                        None => json!({}),
                    };
                    show(&c.post(&format!("/v1/payments/{id}/capture"), &body).await?)
                }
                PaymentsAction::Confirm { id, surcharge } => {
                    let body = match surcharge {
                        Some(s) => json!({ "surcharge": s }),
                        None => json!({}),
                    };
                    c.post(&format!("/v1/payments/{id}/confirm"), &body).await?;
                    if json_out {
                        print_json(&c.get(&format!("/v1/payments/{id}")).await?);
                    } else {
                        follow(&c, &id, true).await?;
                    }
                }
                PaymentsAction::Retry { id } => {
                    let p = c.post_empty(&format!("/v1/payments/{id}/retry")).await?;
                    if json_out {
                        print_json(&p);
                    } else {
                        follow(&c, &id, true).await?;
                    }
                }
                PaymentsAction::Refund {
                    id,
                    amount,
                    merchant,
                    idempotency_key,
                    on_reader,
                    reader,
                    no_wait,
                } => {
                    let mut body = json!({});
                    if let Some(a) = amount {
                        body["amount"] = json!(a);
                    }
                    if let Some(m) = merchant {
                        body["merchant"] = json!(m);
                    }
                    if on_reader {
                        body["on_reader"] = json!(true);
                        if let Some(r) = reader {
                            body["reader"] = json!(r);
                        }
                    }
                    let mut r = c
                        .post_idempotent(
                            &format!("/v1/payments/{id}/refunds"),
                            &body,
                            idempotency_key.as_deref(),
                        )
                        .await?;
                    if on_reader && !no_wait {
                        r = wait_refund(&c, &id, &r, json_out).await?;
                    }
                    if json_out {
                        print_json(&r);
                    } else {
                        println!(
                            "refund {} of {}: {}",
                            r["id"].as_str().unwrap_or("?"),
                            money::format_json(&r["amount"], &r["payment_object"]["currency"]),
                            r["status"].as_str().unwrap_or("?")
                        );
                    }
                }
                PaymentsAction::CancelRefund { id, refund } => {
                    let r = c
                        .post_empty(&format!("/v1/payments/{id}/refunds/{refund}/cancel"))
                        .await?;
                    if json_out {
                        print_json(&r);
                    } else {
                        println!(
                            "refund {refund}: {}{}",
                            r["status"].as_str().unwrap_or("?"),
                            if r["on_reader"]["cancel_requested"] == true
                                && r["status"] == "pending"
                            {
                                " (cancel requested: readerd clears the reader)"
                            } else {
                                ""
                            }
                        );
                    }
                }
                PaymentsAction::Follow { id } => {
                    follow(&c, &id, false).await?;
                }
            }
            Ok(())
        })
    }
}

fn print_payment(p: &Value) {
    println!("{}  {}", p["id"].as_str().unwrap_or("?"), describe(p));
    let cur = &p["currency"];
    println!(
        "  merchant {}  reader {}  amount {}  capture {}",
        or_dash(p["merchant"].as_str()),
        or_dash(p["reader"].as_str()),
        money::format_json(&p["amount"], cur),
        or_dash(p["capture"].as_str())
    );
    println!(
        "  payment_intent {}  captured {}  refunded {}  tip {}",
        or_dash(p["payment_intent"].as_str()),
        money::format_json(&p["amount_captured"], cur),
        money::format_json(&p["amount_refunded"], cur),
        if p["tip"].is_null() {
            "-".to_string()
        } else {
            money::format_json(&p["tip"], cur)
        }
    );
    for h in p["history"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<16} {:<9} {}",
            h["at"].as_str().unwrap_or(""),
            h["status"].as_str().unwrap_or(""),
            h["source"].as_str().unwrap_or(""),
            h["note"].as_str().unwrap_or("")
        );
    }
}

/// `readerd report`: the settlement report of a period.
#[derive(Args, Debug)]
pub struct ReportCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Start of the period: an RFC 3339 time or a date (`2026-11-01`), UTC.
    #[arg(long)]
    pub from: String,
    /// End of the period (exclusive; a date includes that day).
    #[arg(long)]
    pub to: String,
    /// One merchant only.
    #[arg(long)]
    pub merchant: Option<String>,
    /// CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
}

impl ReportCmd {
    pub fn run(self) -> ExitCode {
        block_on(async {
            let c = ApiClient::new(&self.api)?;
            let mut q = format!(
                "/v1/reports/settlement?from={}&to={}",
                urlencode(&self.from),
                urlencode(&self.to)
            );
            if let Some(m) = &self.merchant {
                q.push_str(&format!("&merchant={}", urlencode(m)));
            }
            let v = c.get(&q).await?;
            if self.api.json {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<crate::payments::report::Row> =
                serde_json::from_value(v).unwrap_or_default();
            if self.csv {
                print!("{}", crate::payments::report::to_csv(&rows));
                return Ok(());
            }
            let mut t = Table::new(&[
                "MERCHANT",
                "CURRENCY",
                "PAYMENTS",
                "GROSS",
                "REFUNDED",
                "FEES",
                "TRANSFERRED",
                "REVERSED",
                "PENDING",
                "NET",
            ]);
            for r in &rows {
                let m = |a: i64| money::format(a, &r.currency);
                t.row(vec![
                    r.merchant.clone(),
                    r.currency.clone(),
                    r.payments.to_string(),
                    m(r.gross),
                    m(r.refunded),
                    m(r.fees),
                    m(r.transferred),
                    m(r.reversed),
                    m(r.pending_transfer),
                    m(r.net),
                ]);
            }
            t.print();
            Ok(())
        })
    }
}

/// Percent-encodes a query value (RFC 3339 times carry `:` and `+`).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
