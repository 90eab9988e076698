//! The emulator's objects and their status machines, with no I/O: accounts, locations,
//! readers and their action slot, PaymentIntents, charges and refunds, transfers and
//! application fees.
//!
//! Every object has an owner: `None` is the platform, `Some(acct)` a connected account. A
//! request sees only the objects of the account it addresses (`Stripe-Account`, or the
//! platform without it); anything else is `404 resource_missing`, as on Stripe. The one
//! crossing is the platform-owned-reader preview: a platform reader may process a
//! PaymentIntent that the platform created on one of its connected accounts, while that
//! preview is on (`State::platform_owned_readers`).
//!
//! Operations take decoded form parameters ([`Form`]) and return the wire object, or a
//! [`SimError`] shaped like Stripe's. Work that happens later (authorisation after the
//! card is presented, auto-present) is returned as [`Timer`]s for the server to schedule;
//! webhook events are queued in `outbox`.
//!
//! The operations live beside the objects they act on: `directory` (accounts, locations),
//! `readers` (readers, their action slot, the simulated customer, authorisation),
//! `payments` (PaymentIntents, refunds) and `connect` (transfers, application fees, their
//! reversals and refunds, and every account's books).
//!
//! Longer than 600 lines on purpose: the root of the emulator's state: accounts and
//! ownership, the two worlds, the dispatch of every operation, and the unit tests that
//! cross the state's parts.

mod configurations;
mod connect;
mod directory;
mod inputs;
mod payments;
mod reader_refunds;
mod readers;
mod review;
mod setups;

pub use connect::{Book, Books};

use crate::stripe::form::as_list;
use crate::stripe::wire::*;
use rand::rngs::StdRng;
use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The API version written into events.
pub const API_VERSION: &str = "2026-07-29.dahlia";

/// A Stripe-shaped error with its HTTP status.
#[derive(Clone, Debug, PartialEq)]
pub struct SimError {
    pub status: u16,
    pub error: Box<ApiErrorObject>,
    /// Whether the response is stored under an idempotency key. Parameter validation
    /// failures are not: Stripe stores nothing when validation fails.
    pub store: bool,
}

impl SimError {
    fn new(status: u16, kind: ErrorType, code: Option<&str>, msg: impl Into<String>) -> Self {
        let mut error = ApiErrorObject::new(kind, code, msg);
        if let Some(c) = code {
            error.doc_url = Some(format!(
                "https://stripe.com/docs/error-codes/{}",
                c.replace('_', "-")
            ));
        }
        SimError {
            status,
            error: Box::new(error),
            store: true,
        }
    }
    /// A 400 `invalid_request_error` raised during execution (stored).
    pub fn invalid(code: Option<&str>, msg: impl Into<String>) -> Self {
        Self::new(400, ErrorType::InvalidRequestError, code, msg)
    }
    /// A parameter validation failure (400, not stored).
    pub fn param(code: Option<&str>, param: &str, msg: impl Into<String>) -> Self {
        let mut e = Self::invalid(code, msg);
        e.error.param = Some(param.to_string());
        e.store = false;
        e
    }
    fn with_param(mut self, param: &str) -> Self {
        self.error.param = Some(param.to_string());
        self
    }
    pub fn missing(param: &str) -> Self {
        Self::param(
            Some("parameter_missing"),
            param,
            format!("Missing required param: {param}."),
        )
    }
    pub fn unknown_param(param: &str) -> Self {
        Self::param(
            Some("parameter_unknown"),
            param,
            format!("Received unknown parameter: {param}"),
        )
    }
    pub fn no_such(kind: &str, id: &str, param: Option<&str>) -> Self {
        let mut e = Self::new(
            404,
            ErrorType::InvalidRequestError,
            Some("resource_missing"),
            format!("No such {kind}: '{id}'"),
        );
        e.error.param = param.map(str::to_string);
        e
    }
    pub fn unrecognized(method: &str, path: &str) -> Self {
        let mut e = Self::new(
            404,
            ErrorType::InvalidRequestError,
            None,
            format!("Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."),
        );
        e.store = false;
        e
    }
    pub fn api(status: u16, msg: impl Into<String>) -> Self {
        Self::new(status, ErrorType::ApiError, None, msg)
    }
    pub fn idempotency(msg: impl Into<String>) -> Self {
        let mut e = Self::new(400, ErrorType::IdempotencyError, None, msg);
        e.store = false;
        e
    }
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    fn reader_offline() -> Self {
        Self::invalid(
            Some("terminal_reader_offline"),
            "Reader is currently offline, please ensure the reader is powered on and connected to the internet before retrying your request.",
        )
    }
    fn reader_busy() -> Self {
        Self::invalid(
            Some("terminal_reader_busy"),
            "Reader is currently busy processing another request. Please reference the integration guide at https://stripe.com/docs/terminal/payments/collect-payment?terminal-sdk-platform=server-driven#handle-errors for details on how to handle this error.",
        )
    }
    pub fn reader_timeout() -> Self {
        Self::invalid(
            Some("terminal_reader_timeout"),
            "There was a timeout when sending this command to the reader. Please reference the integration guide at https://stripe.com/docs/terminal/payments/collect-payment?terminal-sdk-platform=server-driven#handle-errors for details on how to handle this error.",
        )
    }
}

type Res<T> = Result<T, SimError>;

// ---------------------------------------------------------------------------------------
// Parameters

/// Decoded form parameters (a JSON tree of strings, from [`crate::stripe::form::decode`]).
#[derive(Clone, Debug, Default)]
pub struct Form(pub Value);

impl Form {
    pub fn new(v: Value) -> Self {
        Form(v)
    }
    fn get(&self, path: &[&str]) -> Option<&Value> {
        let mut v = &self.0;
        for p in path {
            v = v.get(*p)?;
        }
        Some(v)
    }
    /// A string parameter (`a[b]` is `&["a", "b"]`).
    pub fn str(&self, path: &[&str]) -> Option<&str> {
        self.get(path).and_then(Value::as_str)
    }
    fn name(path: &[&str]) -> String {
        let mut s = path[0].to_string();
        for p in &path[1..] {
            s.push_str(&format!("[{p}]"));
        }
        s
    }
    fn req_str(&self, path: &[&str]) -> Res<&str> {
        match self.str(path) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(SimError::missing(&Self::name(path))),
        }
    }
    fn int(&self, path: &[&str]) -> Res<Option<i64>> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) => s.parse::<i64>().map(Some).map_err(|_| {
                SimError::param(
                    Some("parameter_invalid_integer"),
                    &Self::name(path),
                    format!("Invalid integer: {s}"),
                )
            }),
            Some(_) => Err(SimError::param(
                Some("parameter_invalid_integer"),
                &Self::name(path),
                "Invalid integer",
            )),
        }
    }
    fn bool(&self, path: &[&str]) -> Res<Option<bool>> {
        match self.str(path) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(s) => Err(SimError::param(
                Some("parameter_invalid_boolean"),
                &Self::name(path),
                format!("Invalid boolean: {s}"),
            )),
        }
    }
    fn list(&self, key: &str) -> Option<Vec<String>> {
        let v = self.0.get(key)?;
        as_list(v).map(|items| {
            items
                .into_iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
    }
    /// `expand[]` values.
    pub fn expand(&self) -> Vec<String> {
        self.list("expand").unwrap_or_default()
    }
    /// Refuses top-level parameters outside `allowed` (plus `expand`), as Stripe does.
    fn only(&self, allowed: &[&str]) -> Res<()> {
        if let Some(map) = self.0.as_object() {
            for k in map.keys() {
                if k != "expand" && !allowed.contains(&k.as_str()) {
                    return Err(SimError::unknown_param(k));
                }
            }
        }
        Ok(())
    }
    /// Applies `metadata[...]` to `target`: an empty value removes a key, `metadata=` clears.
    fn apply_metadata(&self, target: &mut Metadata) -> Res<()> {
        match self.0.get("metadata") {
            None => Ok(()),
            Some(Value::String(s)) if s.is_empty() => {
                target.clear();
                Ok(())
            }
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v.as_str() {
                        Some("") => {
                            target.remove(k);
                        }
                        Some(s) => {
                            target.insert(k.clone(), s.to_string());
                        }
                        None => {
                            return Err(SimError::param(
                                Some("parameter_invalid_string"),
                                &format!("metadata[{k}]"),
                                "Invalid metadata value",
                            ))
                        }
                    }
                }
                Ok(())
            }
            Some(_) => Err(SimError::param(
                None,
                "metadata",
                "Invalid hash for metadata",
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Objects

/// An object with its owner (`None` = platform) and creation order.
#[derive(Clone, Debug)]
pub struct Rec<T> {
    pub owner: Option<String>,
    pub seq: u64,
    pub obj: T,
}

/// A card tapped on a reader, waiting for its authorisation to finish.
#[derive(Clone, Debug)]
pub struct Pending {
    pub card: TestCard,
    pub tip: i64,
}

/// A reader and what the emulator knows beyond its wire object.
#[derive(Clone, Debug)]
pub struct ReaderRec {
    pub seq: u64,
    pub owner: Option<String>,
    pub obj: Reader,
    pub online: bool,
    /// Bumped by every new action and every cancel, so stale timers do nothing.
    pub generation: u64,
    /// A card was presented and the authorisation is running: cancel is busy.
    pub authorizing: Option<Pending>,
    /// An authorisation finished while the reader was offline: it could not report, and
    /// reports `connection_error` when it comes back.
    pub unreported: bool,
    /// The account of the charge a `refund_payment` action refunds.
    pub refund_owner: Option<String>,
}

/// Work to schedule after a delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Finish the authorisation of the card presented on `reader`.
    Authorize { reader: String, generation: u64 },
    /// Tap the default card on `reader` (auto-present).
    Present { reader: String, generation: u64 },
    /// Answer the inputs on `reader`'s screen (auto-present).
    Answer { reader: String, generation: u64 },
}

/// A webhook event waiting for delivery.
pub type Outbox = Vec<Event>;

/// Everything the emulator holds.
pub struct State {
    pub rng: StdRng,
    seq: u64,
    pub platform: Account,
    pub accounts: BTreeMap<String, Rec<Account>>,
    pub locations: BTreeMap<String, Rec<Location>>,
    /// Terminal Configurations (`tmc_…`), each of its account.
    pub configurations: BTreeMap<String, Rec<TerminalConfiguration>>,
    pub readers: BTreeMap<String, ReaderRec>,
    pub intents: BTreeMap<String, Rec<PaymentIntent>>,
    /// SetupIntents (cards saved on a reader) and their attempts.
    pub setup_intents: BTreeMap<String, Rec<SetupIntent>>,
    pub setup_attempts: BTreeMap<String, Rec<SetupAttempt>>,
    pub charges: BTreeMap<String, Rec<Charge>>,
    pub refunds: BTreeMap<String, Rec<Refund>>,
    /// Transfers (the platform's objects): destination charges' and those made with
    /// `POST /v1/transfers`.
    pub transfers: BTreeMap<String, Rec<Transfer>>,
    /// Reversals of transfers made with `POST /v1/transfers/{id}/reversals`.
    pub transfer_reversals: BTreeMap<String, Rec<TransferReversal>>,
    /// Application fees collected by the platform.
    pub application_fees: BTreeMap<String, Rec<ApplicationFee>>,
    /// Who holds what: every account's money movements (`GET /_sim/balances`).
    pub books: Books,
    /// Events not yet handed to the webhook sender.
    pub outbox: Outbox,
    /// Every event created (`GET /_sim/events`).
    pub events: Vec<Event>,
    /// Delayed work not yet handed to the scheduler.
    pub timers: Vec<Timer>,
    /// Cards read by `collect_payment_method`, by PaymentIntent, for its confirm.
    pub collected: BTreeMap<String, Pending>,
    /// The request being handled (copied into events' `request`).
    pub request: Option<EventRequest>,
    pub auth_delay_zero: bool,
    /// Stripe has enabled the platform-owned-reader preview for this platform: its readers
    /// may process PaymentIntents of its connected accounts. When off, such a PaymentIntent
    /// is not found from the reader (`resource_missing`), as on an account without it.
    pub platform_owned_readers: bool,
    /// This world's mode: a live key's requests see the live world (`livemode: true`), a
    /// test key's the test world; the two share accounts, never objects.
    pub livemode: bool,
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Wall-clock unix seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A Stripe-looking id: `prefix_` and `n` random characters.
pub fn random_id(rng: &mut StdRng, prefix: &str, n: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + 1 + n);
    s.push_str(prefix);
    s.push('_');
    for _ in 0..n {
        s.push(ALNUM[rng.gen_range(0..ALNUM.len())] as char);
    }
    s
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The local currency of a country (Terminal's rule: local currency only).
pub fn currency_of(country: &str) -> &'static str {
    match country {
        "US" => "usd",
        "CA" => "cad",
        "GB" => "gbp",
        "AU" => "aud",
        "NZ" => "nzd",
        "SG" => "sgd",
        "JP" => "jpy",
        "MY" => "myr",
        "CH" => "chf",
        "DK" => "dkk",
        "NO" => "nok",
        "SE" => "sek",
        "PL" => "pln",
        "CZ" => "czk",
        "AT" | "BE" | "DE" | "ES" | "FI" | "FR" | "IE" | "IT" | "LU" | "NL" | "PT" => "eur",
        _ => "usd",
    }
}

fn minimum_amount(currency: &str) -> i64 {
    match currency {
        "gbp" => 30,
        "dkk" => 250,
        "nok" | "sek" => 300,
        "pln" | "myr" => 200,
        "czk" => 1500,
        "hkd" => 400,
        "mxn" => 1000,
        "huf" => 17500,
        _ => 50,
    }
}

/// A Stripe test card as the simulated reader reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCard {
    pub number: String,
    pub brand: &'static str,
    pub funding: &'static str,
    /// The decline this card always produces: (error code, decline code).
    pub decline: Option<(&'static str, Option<&'static str>)>,
    /// A PIN-capable card: amounts ending 02/03 are approved after the PIN prompt.
    pub pin: bool,
}

/// The default card: Visa 4242.
pub const DEFAULT_CARD: &str = "4242424242424242";

impl TestCard {
    pub fn from_number(number: &str) -> Res<TestCard> {
        let digits: String = number.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.len() < 12 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(SimError::param(
                Some("invalid_number"),
                "card_present[number]",
                "The card number is not a valid credit card number.",
            ));
        }
        let decline = match digits.as_str() {
            "4000000000000002" => Some(("card_declined", Some("generic_decline"))),
            "4000000000009995" => Some(("card_declined", Some("insufficient_funds"))),
            "4000000000009987" => Some(("card_declined", Some("lost_card"))),
            "4000000000009979" => Some(("card_declined", Some("stolen_card"))),
            "4000000000000069" => Some(("expired_card", Some("expired_card"))),
            "4000000000000119" => Some(("processing_error", Some("processing_error"))),
            _ => None,
        };
        let pin = matches!(
            digits.as_str(),
            "4001007020000002" | "4000008260000075" | "4001000360000005" | "4000002760000008"
        );
        let (brand, funding) = match digits.as_str() {
            "4000056655665556" => ("visa", "debit"),
            "5200828282828210" => ("mastercard", "debit"),
            "5105105105105100" => ("mastercard", "prepaid"),
            "4506445006931933" => ("interac", "debit"),
            "6280000360000978" | "4000050360000001" | "5555050360000080" => ("eftpos_au", "debit"),
            d if d.starts_with("34") || d.starts_with("37") => ("amex", "credit"),
            d if d.starts_with("6011") || d.starts_with("65") => ("discover", "credit"),
            d if d.starts_with("30") || d.starts_with("36") || d.starts_with("38") => {
                ("diners", "credit")
            }
            d if d.starts_with("35") => ("jcb", "credit"),
            d if d.starts_with("62") => ("unionpay", "credit"),
            d if d.starts_with('5') || d.starts_with('2') => ("mastercard", "credit"),
            _ => ("visa", "credit"),
        };
        Ok(TestCard {
            number: digits,
            brand,
            funding,
            decline,
            pin,
        })
    }

    fn last4(&self) -> String {
        self.number[self.number.len() - 4..].to_string()
    }

    /// The decline this card gives for `amount` (the test-amount rule), if any.
    pub fn outcome(&self, amount: i64) -> Option<(&'static str, Option<&'static str>)> {
        if self.decline.is_some() {
            return self.decline;
        }
        let code = match amount.rem_euclid(100) {
            1 => "call_issuer",
            2 if !self.pin => "offline_pin_required",
            3 if !self.pin => "online_or_offline_pin_required",
            5 => "generic_decline",
            55 => "incorrect_pin",
            65 => "withdrawal_count_limit_exceeded",
            75 => "pin_try_exceeded",
            _ => return None,
        };
        Some(("card_declined", Some(code)))
    }
}

fn decline_message(code: &str, decline: Option<&str>) -> &'static str {
    match (code, decline) {
        ("expired_card", _) => "Your card has expired.",
        ("processing_error", _) => {
            "An error occurred while processing your card. Try again in a little bit."
        }
        (_, Some("insufficient_funds")) => "Your card has insufficient funds.",
        (_, Some("lost_card")) | (_, Some("stolen_card")) => "Your card was declined.",
        (_, Some("incorrect_pin")) => "The PIN entered is incorrect.",
        (_, Some("pin_try_exceeded")) => "The allowable number of PIN tries has been exceeded.",
        _ => "Your card was declined.",
    }
}

/// The `expand[]` values of a request, refusing any not in `allowed`.
fn check_expand(f: &Form, allowed: &[&str]) -> Res<Vec<String>> {
    let e = f.expand();
    for x in &e {
        if !allowed.contains(&x.as_str()) {
            return Err(SimError::param(
                None,
                "expand",
                format!("This property cannot be expanded ({x})."),
            ));
        }
    }
    Ok(e)
}

// ---------------------------------------------------------------------------------------
// Lists

/// Stripe's cursor pagination over objects sorted newest first.
fn paginate<T: Serialize>(items: Vec<(String, T)>, q: &Form, url: &str) -> Res<Value> {
    let limit = q.int(&["limit"])?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(SimError::param(
            Some("parameter_invalid_integer"),
            "limit",
            "Invalid limit: must be between 1 and 100",
        ));
    }
    let limit = limit as usize;
    let position = |param: &str, id: &str| {
        items
            .iter()
            .position(|(i, _)| i == id)
            .ok_or_else(|| SimError::no_such("object", id, Some(param)).status(400))
    };
    let (data, has_more): (Vec<&T>, bool) = if let Some(after) = q.str(&["starting_after"]) {
        let p = position("starting_after", after)?;
        let rest = &items[p + 1..];
        (
            rest.iter().take(limit).map(|(_, t)| t).collect(),
            rest.len() > limit,
        )
    } else if let Some(before) = q.str(&["ending_before"]) {
        let p = position("ending_before", before)?;
        let head = &items[..p];
        let start = head.len().saturating_sub(limit);
        (head[start..].iter().map(|(_, t)| t).collect(), start > 0)
    } else {
        (
            items.iter().take(limit).map(|(_, t)| t).collect(),
            items.len() > limit,
        )
    };
    Ok(to_value(&List {
        object: "list".into(),
        data,
        has_more,
        url: url.to_string(),
    }))
}

// ---------------------------------------------------------------------------------------
// Operations

impl State {
    pub fn new(mut rng: StdRng) -> State {
        let platform = Account {
            id: random_id(&mut rng, "acct", 16),
            object: "account".into(),
            business_profile: Some(BusinessProfile {
                name: Some("readerd sim platform".into()),
            }),
            capabilities: Some(AccountCapabilities {
                card_payments: Some(CapabilityStatus::Active),
                transfers: Some(CapabilityStatus::Active),
            }),
            charges_enabled: Some(true),
            payouts_enabled: Some(true),
            details_submitted: Some(true),
            controller: Some(AccountController {
                kind: Some("account".into()),
                is_controller: None,
            }),
            country: Some("US".into()),
            created: Some(now_secs()),
            default_currency: Some("usd".into()),
            email: None,
            metadata: Some(Metadata::new()),
            requirements: Some(AccountRequirements {
                disabled_reason: None,
                currently_due: Some(vec![]),
            }),
            kind: Some("standard".into()),
        };
        State {
            rng,
            seq: 0,
            platform,
            accounts: BTreeMap::new(),
            locations: BTreeMap::new(),
            configurations: BTreeMap::new(),
            readers: BTreeMap::new(),
            intents: BTreeMap::new(),
            setup_intents: BTreeMap::new(),
            setup_attempts: BTreeMap::new(),
            charges: BTreeMap::new(),
            refunds: BTreeMap::new(),
            transfers: BTreeMap::new(),
            transfer_reversals: BTreeMap::new(),
            application_fees: BTreeMap::new(),
            books: Books::new(),
            outbox: Vec::new(),
            events: Vec::new(),
            timers: Vec::new(),
            collected: BTreeMap::new(),
            request: None,
            auth_delay_zero: false,
            platform_owned_readers: true,
            livemode: false,
        }
    }

    /// The live world beside this (test) one: the same platform and connected accounts
    /// (Stripe's accounts are the same in both modes), none of the objects, its own
    /// random stream.
    pub fn live_twin(&self, rng: StdRng) -> State {
        let mut live = State::new(rng);
        live.platform = self.platform.clone();
        live.accounts = self.accounts.clone();
        live.auth_delay_zero = self.auth_delay_zero;
        live.platform_owned_readers = self.platform_owned_readers;
        live.livemode = true;
        live
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn id(&mut self, prefix: &str) -> String {
        random_id(&mut self.rng, prefix, 24)
    }

    /// Resolves a `Stripe-Account` header: `None` = the platform.
    pub fn scope(&self, header: Option<&str>) -> Res<Option<String>> {
        match header {
            None | Some("") => Ok(None),
            Some(a) if a == self.platform.id => Ok(None),
            Some(a) if self.accounts.contains_key(a) => Ok(Some(a.to_string())),
            Some(a) => {
                let mut e = SimError::invalid(
                    Some("account_invalid"),
                    format!("The provided key does not have access to account '{a}' (or that account does not exist). Application access may have been revoked."),
                );
                e.status = 403;
                e.store = false;
                Err(e)
            }
        }
    }

    fn emit(&mut self, kind: &str, account: Option<String>, object: Value) {
        let event = Event {
            id: random_id(&mut self.rng, "evt", 24),
            object: "event".into(),
            kind: kind.to_string(),
            account,
            api_version: Some(API_VERSION.into()),
            created: now_secs(),
            data: EventData {
                object,
                previous_attributes: None,
            },
            livemode: self.livemode,
            pending_webhooks: 1,
            request: Some(self.request.clone().unwrap_or_default()),
        };
        if self.events.len() >= super::MAX_LOG {
            self.events.drain(..super::MAX_LOG / 10);
        }
        self.events.push(event.clone());
        self.outbox.push(event);
    }

    /// PaymentIntents per account (`platform` for the platform's own).
    pub fn stats(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.intents.values() {
            *m.entry(r.owner.clone().unwrap_or_else(|| "platform".into()))
                .or_insert(0) += 1;
        }
        m
    }

    /// The number of PaymentIntents on `account` (`None` = the platform).
    pub fn intent_count(&self, account: Option<&str>) -> usize {
        self.intents
            .values()
            .filter(|r| r.owner.as_deref() == account)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn form(q: &str) -> Form {
        Form::new(crate::stripe::form::decode(q).unwrap())
    }

    #[test]
    fn authorisation_timers_only_act_on_the_action_they_were_set_for() {
        let mut st = State::new(StdRng::seed_from_u64(1));
        let acct = Some(
            st.add_account("US", "usd", Some(CapabilityStatus::Active))
                .id,
        );
        let reader = st
            .register_reader(&None, &form("registration_code=simulated-wpe"))
            .unwrap();
        let reader = reader["id"].as_str().unwrap().to_string();
        let pi = st
            .create_intent(
                &acct,
                &form("amount=1000&currency=usd&payment_method_types[]=card_present"),
            )
            .unwrap();
        let pi = pi["id"].as_str().unwrap().to_string();
        st.process_payment_intent(
            &None,
            &reader,
            &form(&format!("payment_intent={pi}")),
            false,
            false,
        )
        .unwrap();
        st.present(
            &None,
            &reader,
            TestCard::from_number(DEFAULT_CARD).unwrap(),
            0,
        )
        .unwrap();
        let Some(Timer::Authorize { generation, .. }) = st.timers.pop() else {
            panic!("an authorisation timer");
        };
        // A stale timer (another generation) does nothing; the right one finishes it.
        st.authorize(&reader, generation + 1);
        assert_eq!(
            st.intents[&pi].obj.status,
            PaymentIntentStatus::RequiresPaymentMethod
        );
        st.authorize(&reader, generation);
        assert_eq!(st.intents[&pi].obj.status, PaymentIntentStatus::Succeeded);
        let kinds: Vec<&str> = st.outbox.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "payment_intent.created",
                "payment_intent.succeeded",
                "terminal.reader.action_succeeded"
            ]
        );
        // Firing twice changes nothing more.
        st.authorize(&reader, generation);
        assert_eq!(st.outbox.len(), 3);
    }

    #[test]
    fn test_cards_and_amounts_choose_outcomes() {
        let visa = TestCard::from_number(DEFAULT_CARD).unwrap();
        assert_eq!(visa.brand, "visa");
        assert_eq!(visa.outcome(1000), None);
        assert_eq!(
            visa.outcome(1005),
            Some(("card_declined", Some("generic_decline")))
        );
        assert_eq!(
            visa.outcome(1001),
            Some(("card_declined", Some("call_issuer")))
        );
        assert_eq!(
            visa.outcome(1002),
            Some(("card_declined", Some("offline_pin_required")))
        );
        let pin = TestCard::from_number("4001007020000002").unwrap();
        assert_eq!(pin.outcome(1002), None);
        let nsf = TestCard::from_number("4000000000009995").unwrap();
        assert_eq!(
            nsf.outcome(1000),
            Some(("card_declined", Some("insufficient_funds")))
        );
        let exp = TestCard::from_number("4000000000000069").unwrap();
        assert_eq!(
            exp.outcome(1000),
            Some(("expired_card", Some("expired_card")))
        );
        assert_eq!(
            TestCard::from_number("378282246310005").unwrap().brand,
            "amex"
        );
        assert_eq!(
            TestCard::from_number("5555555555554444").unwrap().brand,
            "mastercard"
        );
        assert!(TestCard::from_number("12ab").is_err());
    }
}
