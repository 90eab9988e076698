//! The emulator's objects and their status machines, with no I/O: accounts, locations,
//! readers and their action slot, PaymentIntents, charges and refunds.
//!
//! Every object has an owner: `None` is the platform, `Some(acct)` a connected account. A
//! request sees only the objects of the account it addresses (`Stripe-Account`, or the
//! platform without it); anything else is `404 resource_missing`, as on Stripe. The one
//! crossing is the platform-owned-reader preview: a platform reader may process a
//! PaymentIntent that the platform created on one of its connected accounts.
//!
//! Operations take decoded form parameters ([`Form`]) and return the wire object, or a
//! [`SimError`] shaped like Stripe's. Work that happens later (authorisation after the
//! card is presented, auto-present) is returned as [`Timer`]s for the server to schedule;
//! webhook events are queued in `outbox`.

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
}

/// Work to schedule after a delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Finish the authorisation of the card presented on `reader`.
    Authorize { reader: String, generation: u64 },
    /// Tap the default card on `reader` (auto-present).
    Present { reader: String, generation: u64 },
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
    pub readers: BTreeMap<String, ReaderRec>,
    pub intents: BTreeMap<String, Rec<PaymentIntent>>,
    pub charges: BTreeMap<String, Rec<Charge>>,
    pub refunds: BTreeMap<String, Rec<Refund>>,
    /// Events not yet handed to the webhook sender.
    pub outbox: Outbox,
    /// Every event created (`GET /_sim/events`).
    pub events: Vec<Event>,
    /// Delayed work not yet handed to the scheduler.
    pub timers: Vec<Timer>,
    /// The request being handled (copied into events' `request`).
    pub request: Option<EventRequest>,
    pub auth_delay_zero: bool,
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
            "4000000000000069" => Some(("expired_card", None)),
            "4000000000000119" => Some(("processing_error", None)),
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
            readers: BTreeMap::new(),
            intents: BTreeMap::new(),
            charges: BTreeMap::new(),
            refunds: BTreeMap::new(),
            outbox: Vec::new(),
            events: Vec::new(),
            timers: Vec::new(),
            request: None,
            auth_delay_zero: false,
        }
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
            livemode: false,
            pending_webhooks: 1,
            request: Some(self.request.clone().unwrap_or_default()),
        };
        if self.events.len() >= super::MAX_LOG {
            self.events.drain(..super::MAX_LOG / 10);
        }
        self.events.push(event.clone());
        self.outbox.push(event);
    }

    // Accounts -----------------------------------------------------------------------------

    /// Creates a connected account directly (control API).
    pub fn add_account(
        &mut self,
        country: &str,
        currency: &str,
        card_payments: Option<CapabilityStatus>,
    ) -> Account {
        let active = card_payments == Some(CapabilityStatus::Active);
        let acct = Account {
            id: random_id(&mut self.rng, "acct", 16),
            object: "account".into(),
            business_profile: Some(BusinessProfile { name: None }),
            capabilities: Some(AccountCapabilities {
                card_payments,
                transfers: Some(CapabilityStatus::Active),
            }),
            charges_enabled: Some(active),
            payouts_enabled: Some(active),
            details_submitted: Some(true),
            controller: Some(AccountController {
                kind: Some("application".into()),
                is_controller: Some(true),
            }),
            country: Some(country.to_string()),
            created: Some(now_secs()),
            default_currency: Some(currency.to_string()),
            email: None,
            metadata: Some(Metadata::new()),
            requirements: Some(AccountRequirements {
                disabled_reason: (!active).then(|| "requirements.pending_verification".into()),
                currently_due: Some(vec![]),
            }),
            kind: Some("custom".into()),
        };
        let seq = self.next_seq();
        self.accounts.insert(
            acct.id.clone(),
            Rec {
                owner: None,
                seq,
                obj: acct.clone(),
            },
        );
        acct
    }

    pub fn create_account(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(&[
            "type",
            "country",
            "default_currency",
            "email",
            "capabilities",
            "business_profile",
            "business_type",
            "controller",
            "metadata",
            "tos_acceptance",
            "settings",
            "external_account",
            "company",
            "individual",
        ])?;
        if scope.is_some() {
            return Err(SimError::param(
                None,
                "type",
                "Connected accounts cannot create other accounts.",
            )
            .status(403));
        }
        let kind = f.str(&["type"]).unwrap_or("custom").to_string();
        if !matches!(kind.as_str(), "standard" | "express" | "custom") {
            return Err(SimError::param(
                Some("parameter_invalid_string"),
                "type",
                format!("Invalid type: must be one of standard, express, or custom ({kind})"),
            ));
        }
        let country = f.str(&["country"]).unwrap_or("US").to_ascii_uppercase();
        if country.len() != 2 {
            return Err(SimError::param(
                Some("country_unsupported"),
                "country",
                format!("Country '{country}' is unknown."),
            ));
        }
        let currency = f
            .str(&["default_currency"])
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| currency_of(&country).to_string());
        let requested = |cap: &str| f.bool(&["capabilities", cap, "requested"]);
        let card = requested("card_payments")?
            .unwrap_or(false)
            .then_some(CapabilityStatus::Active);
        let transfers = requested("transfers")?.unwrap_or(false);
        let mut acct = self.add_account(&country, &currency, card);
        if !transfers {
            if let Some(c) = acct.capabilities.as_mut() {
                c.transfers = None;
            }
        }
        acct.kind = Some(kind);
        acct.email = f.str(&["email"]).map(str::to_string);
        if let Some(name) = f.str(&["business_profile", "name"]) {
            acct.business_profile = Some(BusinessProfile {
                name: Some(name.to_string()),
            });
        }
        let mut md = Metadata::new();
        f.apply_metadata(&mut md)?;
        acct.metadata = Some(md);
        if let Some(rec) = self.accounts.get_mut(&acct.id) {
            rec.obj = acct.clone();
        }
        Ok(to_value(&acct))
    }

    pub fn get_account(&self, scope: &Option<String>, id: &str) -> Res<Value> {
        if id == self.platform.id && scope.is_none() {
            return Ok(to_value(&self.platform));
        }
        match (scope, self.accounts.get(id)) {
            (None, Some(rec)) => Ok(to_value(&rec.obj)),
            (Some(s), Some(rec)) if s == id => Ok(to_value(&rec.obj)),
            _ => Err(SimError::no_such("account", id, Some("account")).status(404)),
        }
    }

    /// `GET /v1/account`: the addressed account itself.
    pub fn get_self_account(&self, scope: &Option<String>) -> Res<Value> {
        match scope {
            None => Ok(to_value(&self.platform)),
            Some(a) => self.get_account(scope, a),
        }
    }

    pub fn list_accounts(&self, scope: &Option<String>, f: &Form) -> Res<Value> {
        if scope.is_some() {
            return paginate::<Account>(vec![], f, "/v1/accounts");
        }
        let mut items: Vec<_> = self.accounts.values().collect();
        items.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let items = items
            .into_iter()
            .map(|r| (r.obj.id.clone(), r.obj.clone()))
            .collect();
        paginate(items, f, "/v1/accounts")
    }

    /// Sets `capabilities.card_payments` (control API); `charges_enabled` follows it.
    pub fn set_capability(&mut self, id: &str, status: CapabilityStatus) -> Option<Account> {
        let rec = self.accounts.get_mut(id)?;
        let active = status == CapabilityStatus::Active;
        let caps = rec.obj.capabilities.get_or_insert_with(Default::default);
        caps.card_payments = Some(status);
        rec.obj.charges_enabled = Some(active);
        rec.obj.payouts_enabled = Some(active);
        rec.obj.requirements = Some(AccountRequirements {
            disabled_reason: (!active).then(|| "requirements.pending_verification".into()),
            currently_due: Some(vec![]),
        });
        Some(rec.obj.clone())
    }

    // Locations ----------------------------------------------------------------------------

    fn location_mut(&mut self, scope: &Option<String>, id: &str) -> Res<&mut Rec<Location>> {
        match self.locations.get_mut(id) {
            Some(r) if &r.owner == scope => Ok(r),
            _ => Err(SimError::no_such("terminal.location", id, Some("location"))),
        }
    }

    fn apply_address(f: &Form, prefix: &str, a: &mut Address) {
        let set = |field: &str, slot: &mut Option<String>| {
            if let Some(v) = f.str(&[prefix, field]) {
                *slot = (!v.is_empty()).then(|| v.to_string());
            }
        };
        set("line1", &mut a.line1);
        set("line2", &mut a.line2);
        set("city", &mut a.city);
        set("state", &mut a.state);
        set("postal_code", &mut a.postal_code);
        set("country", &mut a.country);
    }

    const LOCATION_PARAMS: &'static [&'static str] = &[
        "display_name",
        "address",
        "metadata",
        "configuration_overrides",
        "phone",
        "address_kana",
        "address_kanji",
        "display_name_kana",
        "display_name_kanji",
    ];

    pub fn create_location(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(Self::LOCATION_PARAMS)?;
        let display_name = f.req_str(&["display_name"])?.to_string();
        if !f.0.get("address").is_some_and(Value::is_object) {
            return Err(SimError::missing("address"));
        }
        let mut address = Address::default();
        Self::apply_address(f, "address", &mut address);
        let Some(country) = address.country.clone() else {
            return Err(SimError::missing("address[country]"));
        };
        address.country = Some(country.to_ascii_uppercase());
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let loc = Location {
            id: self.id("tml"),
            object: "terminal.location".into(),
            address,
            configuration_overrides: f.str(&["configuration_overrides"]).map(str::to_string),
            display_name,
            livemode: false,
            metadata,
        };
        let seq = self.next_seq();
        self.locations.insert(
            loc.id.clone(),
            Rec {
                owner: scope.clone(),
                seq,
                obj: loc.clone(),
            },
        );
        Ok(to_value(&loc))
    }

    pub fn get_location(&mut self, scope: &Option<String>, id: &str) -> Res<Value> {
        Ok(to_value(&self.location_mut(scope, id)?.obj))
    }

    pub fn update_location(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(Self::LOCATION_PARAMS)?;
        let rec = self.location_mut(scope, id)?;
        if let Some(n) = f.str(&["display_name"]) {
            rec.obj.display_name = n.to_string();
        }
        Self::apply_address(f, "address", &mut rec.obj.address);
        if let Some(c) = f.str(&["configuration_overrides"]) {
            rec.obj.configuration_overrides = (!c.is_empty()).then(|| c.to_string());
        }
        f.apply_metadata(&mut rec.obj.metadata)?;
        Ok(to_value(&rec.obj))
    }

    pub fn delete_location(&mut self, scope: &Option<String>, id: &str) -> Res<Value> {
        self.location_mut(scope, id)?;
        self.locations.remove(id);
        Ok(to_value(&Deleted {
            id: id.to_string(),
            object: "terminal.location".into(),
            deleted: true,
            device_type: None,
            serial_number: None,
        }))
    }

    pub fn list_locations(&self, scope: &Option<String>, f: &Form) -> Res<Value> {
        let mut items: Vec<_> = self
            .locations
            .values()
            .filter(|r| &r.owner == scope)
            .collect();
        items.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let items = items
            .into_iter()
            .map(|r| (r.obj.id.clone(), r.obj.clone()))
            .collect();
        paginate(items, f, "/v1/terminal/locations")
    }

    // Readers ------------------------------------------------------------------------------

    fn reader_mut(&mut self, scope: &Option<String>, id: &str) -> Res<&mut ReaderRec> {
        match self.readers.get_mut(id) {
            Some(r) if &r.owner == scope => Ok(r),
            _ => Err(SimError::no_such("terminal.reader", id, None)),
        }
    }

    /// The reader as the API shows it: status from the simulated link, `last_seen_at`
    /// advancing while online.
    pub fn reader_view(&mut self, id: &str, expand: &[String]) -> Value {
        let now = now_millis();
        let Some(rec) = self.readers.get_mut(id) else {
            return Value::Null;
        };
        if rec.online {
            rec.obj.last_seen_at = Some(now);
        }
        rec.obj.status = Some(if rec.online {
            ReaderStatus::Online
        } else {
            ReaderStatus::Offline
        });
        let mut reader = rec.obj.clone();
        let owner = rec.owner.clone();
        if expand.iter().any(|e| e == "location") {
            if let Some(Expandable::Id(lid)) = &reader.location {
                if let Some(l) = self.locations.get(lid).filter(|l| l.owner == owner) {
                    reader.location = Some(Expandable::Object(Box::new(l.obj.clone())));
                }
            }
        }
        if expand
            .iter()
            .any(|e| e == "action.process_payment_intent.payment_intent")
        {
            if let Some(p) = reader
                .action
                .as_mut()
                .and_then(|a| a.process_payment_intent.as_mut())
            {
                if let Some(pi) = self.intents.get(p.payment_intent.id()) {
                    if pi.owner == owner {
                        p.payment_intent = Expandable::Object(Box::new(pi.obj.clone()));
                    }
                }
            }
        }
        to_value(&reader)
    }

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

    const READER_EXPAND: &'static [&'static str] =
        &["location", "action.process_payment_intent.payment_intent"];

    pub fn register_reader(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(&["registration_code", "label", "location", "metadata"])?;
        let expand = Self::check_expand(f, Self::READER_EXPAND)?;
        let code = f.req_str(&["registration_code"])?;
        let (device_type, prefix) = match code {
            "simulated-wpe" => (DeviceType::SimulatedWiseposE, "simulated-wpe"),
            "simulated-s700" => (DeviceType::SimulatedStripeS700, "simulated-s700"),
            "simulated-s710" => (DeviceType::SimulatedStripeS710, "simulated-s710"),
            other => {
                return Err(SimError::param(
                    None,
                    "registration_code",
                    format!("The registration code '{other}' is invalid or has expired. Generate a new registration code on the reader and try again."),
                ))
            }
        };
        let location = match f.str(&["location"]) {
            Some(l) if !l.is_empty() => {
                if !matches!(self.locations.get(l), Some(r) if &r.owner == scope) {
                    return Err(SimError::no_such("location", l, Some("location")).status(400));
                }
                Some(Expandable::Id(l.to_string()))
            }
            _ => None,
        };
        let mut hex = || {
            let n: u128 = self.rng.gen();
            format!("{n:032x}")
        };
        let h = hex();
        let serial = format!(
            "{prefix}-{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        let label = f
            .str(&["label"])
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| serial.clone());
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let reader = Reader {
            id: self.id("tmr"),
            object: "terminal.reader".into(),
            action: None,
            device_sw_version: Some("2.42.0.0".into()),
            device_type,
            ip_address: Some("0.0.0.0".into()),
            label,
            last_seen_at: Some(now_millis()),
            livemode: false,
            location,
            metadata,
            serial_number: serial,
            status: Some(ReaderStatus::Online),
        };
        let id = reader.id.clone();
        let seq = self.next_seq();
        self.readers.insert(
            id.clone(),
            ReaderRec {
                seq,
                owner: scope.clone(),
                obj: reader,
                online: true,
                generation: 0,
                authorizing: None,
                unreported: false,
            },
        );
        Ok(self.reader_view(&id, &expand))
    }

    pub fn get_reader(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        let expand = Self::check_expand(f, Self::READER_EXPAND)?;
        self.reader_mut(scope, id)?;
        Ok(self.reader_view(id, &expand))
    }

    pub fn update_reader(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&["label", "metadata"])?;
        let expand = Self::check_expand(f, Self::READER_EXPAND)?;
        let rec = self.reader_mut(scope, id)?;
        if let Some(l) = f.str(&["label"]) {
            rec.obj.label = if l.is_empty() {
                rec.obj.serial_number.clone()
            } else {
                l.to_string()
            };
        }
        f.apply_metadata(&mut rec.obj.metadata)?;
        Ok(self.reader_view(id, &expand))
    }

    pub fn delete_reader(&mut self, scope: &Option<String>, id: &str) -> Res<Value> {
        let rec = self.reader_mut(scope, id)?;
        let deleted = Deleted {
            id: id.to_string(),
            object: "terminal.reader".into(),
            deleted: true,
            device_type: Some(rec.obj.device_type.clone()),
            serial_number: Some(rec.obj.serial_number.clone()),
        };
        self.readers.remove(id);
        Ok(to_value(&deleted))
    }

    pub fn list_readers(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        let expand = Self::check_expand(f, &["data.location"])?;
        let expand: Vec<String> = expand
            .iter()
            .filter_map(|e| e.strip_prefix("data.").map(str::to_string))
            .collect();
        if let Some(s) = f.str(&["status"]) {
            if s != "online" && s != "offline" {
                return Err(SimError::param(
                    None,
                    "status",
                    format!("Invalid status: must be one of online or offline ({s})"),
                ));
            }
        }
        let mut recs: Vec<(u64, String)> = self
            .readers
            .values()
            .filter(|r| &r.owner == scope)
            .filter(|r| {
                f.str(&["location"])
                    .is_none_or(|l| r.obj.location.as_ref().map(|x| x.id()) == Some(l))
            })
            .filter(|r| {
                f.str(&["device_type"])
                    .is_none_or(|d| r.obj.device_type.as_str() == d)
            })
            .filter(|r| {
                f.str(&["serial_number"])
                    .is_none_or(|s| r.obj.serial_number == s)
            })
            .filter(|r| {
                f.str(&["status"])
                    .is_none_or(|s| (s == "online") == r.online)
            })
            .map(|r| (r.seq, r.obj.id.clone()))
            .collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.0));
        let items = recs
            .into_iter()
            .map(|(_, id)| (id.clone(), self.reader_view(&id, &expand)))
            .collect();
        paginate(items, f, "/v1/terminal/readers")
    }

    /// Brings a reader's simulated link up or down (control API).
    pub fn set_online(&mut self, id: &str, online: bool) -> Option<Value> {
        let rec = self.readers.get_mut(id)?;
        rec.online = online;
        if online && rec.unreported {
            // Back after losing its link mid-authorisation: the reader reports a connection
            // error, whatever became of the payment (which the PaymentIntent tells).
            rec.unreported = false;
            if let Some(a) = rec.obj.action.as_mut() {
                a.status = ActionStatus::Failed;
                a.failure_code = Some("connection_error".into());
                a.failure_message = Some(
                    "The reader lost its connection while authorizing the payment. Check the PaymentIntent for the outcome.".into(),
                );
                a.api_error = None;
                let view = self.reader_view(id, &[]);
                self.emit("terminal.reader.action_failed", None, view);
            }
        }
        Some(self.reader_view(id, &[]))
    }

    /// Offline, then busy: the checks every reader command makes first.
    fn reader_ready(&mut self, scope: &Option<String>, id: &str) -> Res<&mut ReaderRec> {
        let rec = self.reader_mut(scope, id)?;
        if !rec.online {
            return Err(SimError::reader_offline());
        }
        if rec.authorizing.is_some()
            || rec.obj.action.as_ref().is_some_and(|a| {
                a.status == ActionStatus::InProgress && a.kind != ActionType::SetReaderDisplay
            })
        {
            return Err(SimError::reader_busy());
        }
        Ok(rec)
    }

    /// `process_payment_intent`. `then_offline`: the reader takes the action and then drops
    /// off the network (fault injection).
    pub fn process_payment_intent(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
        auto_present: bool,
        then_offline: bool,
    ) -> Res<Value> {
        f.only(&["payment_intent", "process_config"])?;
        let expand = Self::check_expand(f, Self::READER_EXPAND)?;
        let pi_id = f.req_str(&["payment_intent"])?.to_string();
        let tip_eligible = f.int(&["process_config", "tipping", "amount_eligible"])?;
        let process_config = ProcessConfig {
            skip_tipping: f.bool(&["process_config", "skip_tipping"])?,
            tipping: tip_eligible.map(|a| TippingConfig {
                amount_eligible: Some(a),
            }),
            enable_customer_cancellation: f
                .bool(&["process_config", "enable_customer_cancellation"])?,
        };
        let reader_owner = self.reader_mut(scope, id)?.owner.clone();
        // The PaymentIntent: on the reader's own account, or (preview) on a connected
        // account of this platform when the reader belongs to the platform.
        let (pi_owner, status, types) = match self.intents.get(&pi_id) {
            Some(r) if r.owner == reader_owner || (reader_owner.is_none() && r.owner.is_some()) => {
                (
                    r.owner.clone(),
                    r.obj.status.clone(),
                    r.obj.payment_method_types.clone(),
                )
            }
            _ => {
                // A missing object named by a parameter is a 400, unlike one in the path.
                return Err(
                    SimError::no_such("payment_intent", &pi_id, Some("payment_intent")).status(400),
                );
            }
        };
        let rec = self.reader_ready(scope, id)?;
        if status != PaymentIntentStatus::RequiresPaymentMethod {
            let mut e = SimError::invalid(
                Some("intent_invalid_state"),
                format!("Payment intent must be in the requires_payment_method state to be processed by a reader. The PaymentIntent {pi_id} has a status of {status}."),
            );
            e.error.param = Some("payment_intent".into());
            return Err(e);
        }
        if !types
            .iter()
            .any(|t| t == "card_present" || t == "interac_present")
        {
            return Err(SimError::invalid(
                None,
                format!("The PaymentIntent {pi_id} does not accept card_present payments; add card_present to its payment_method_types."),
            )
            .with_param("payment_intent"));
        }
        rec.generation += 1;
        rec.obj.action = Some(ReaderAction {
            kind: ActionType::ProcessPaymentIntent,
            status: ActionStatus::InProgress,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: Some(ProcessPaymentIntentAction {
                payment_intent: Expandable::Id(pi_id),
                // Echoed only when sent, as Stripe's examples show.
                process_config: (process_config != ProcessConfig::default())
                    .then_some(process_config),
                account: pi_owner,
            }),
            set_reader_display: None,
            refund_payment: None,
            process_setup_intent: None,
        });
        let generation = rec.generation;
        if auto_present {
            self.timers.push(Timer::Present {
                reader: id.to_string(),
                generation,
            });
        }
        let view = self.reader_view(id, &expand);
        if then_offline {
            if let Some(rec) = self.readers.get_mut(id) {
                rec.online = false;
            }
        }
        Ok(view)
    }

    pub fn set_reader_display(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&["type", "cart"])?;
        let expand = Self::check_expand(f, Self::READER_EXPAND)?;
        let kind = f.req_str(&["type"])?;
        if kind != "cart" {
            return Err(SimError::param(
                None,
                "type",
                format!("Invalid type: must be cart ({kind})"),
            ));
        }
        let currency = f.req_str(&["cart", "currency"])?.to_ascii_lowercase();
        let total = f
            .int(&["cart", "total"])?
            .ok_or_else(|| SimError::missing("cart[total]"))?;
        let tax = f.int(&["cart", "tax"])?;
        let mut line_items = Vec::new();
        if let Some(items) = f.0.get("cart").and_then(|c| c.get("line_items")) {
            let items = as_list(items)
                .ok_or_else(|| SimError::param(None, "cart[line_items]", "Invalid array"))?;
            for (i, item) in items.into_iter().enumerate() {
                let field = Form(item.clone());
                let name = |k: &str| format!("cart[line_items][{i}][{k}]");
                let amount = field
                    .int(&["amount"])
                    .map_err(|_| {
                        SimError::param(
                            Some("parameter_invalid_integer"),
                            &name("amount"),
                            "Invalid integer",
                        )
                    })?
                    .ok_or_else(|| SimError::missing(&name("amount")))?;
                let quantity = field
                    .int(&["quantity"])
                    .map_err(|_| {
                        SimError::param(
                            Some("parameter_invalid_integer"),
                            &name("quantity"),
                            "Invalid integer",
                        )
                    })?
                    .ok_or_else(|| SimError::missing(&name("quantity")))?;
                let description = field
                    .str(&["description"])
                    .ok_or_else(|| SimError::missing(&name("description")))?
                    .to_string();
                line_items.push(CartLineItem {
                    amount,
                    description,
                    quantity,
                });
            }
        }
        let rec = self.reader_ready(scope, id)?;
        rec.generation += 1;
        rec.obj.action = Some(ReaderAction {
            kind: ActionType::SetReaderDisplay,
            status: ActionStatus::Succeeded,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: Some(SetReaderDisplayAction {
                kind: "cart".into(),
                cart: Some(Cart {
                    currency,
                    line_items,
                    tax,
                    total,
                }),
            }),
            refund_payment: None,
            process_setup_intent: None,
        });
        Ok(self.reader_view(id, &expand))
    }

    pub fn cancel_action(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&[])?;
        let expand = Self::check_expand(f, Self::READER_EXPAND)?;
        let rec = self.reader_mut(scope, id)?;
        if !rec.online {
            return Err(SimError::reader_offline());
        }
        if rec.authorizing.is_some() {
            return Err(SimError::reader_busy());
        }
        rec.generation += 1;
        rec.obj.action = None;
        Ok(self.reader_view(id, &expand))
    }

    /// The test helper: the customer presents a card on the reader.
    pub fn present_payment_method(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
    ) -> Res<Value> {
        f.only(&[
            "type",
            "card_present",
            "interac_present",
            "card",
            "amount_tip",
        ])?;
        let expand = Self::check_expand(f, Self::READER_EXPAND)?;
        let tip = f.int(&["amount_tip"])?.unwrap_or(0);
        if tip < 0 {
            return Err(SimError::param(
                Some("parameter_invalid_integer"),
                "amount_tip",
                "Invalid positive integer",
            ));
        }
        let kind = f.str(&["type"]).unwrap_or("card_present");
        let number = match kind {
            "card_present" => f.str(&["card_present", "number"]),
            "interac_present" => f.str(&["interac_present", "number"]),
            "card" => Some(f.req_str(&["card", "number"])?),
            other => {
                return Err(SimError::param(
                    None,
                    "type",
                    format!(
                    "Invalid type: must be one of card, card_present, or interac_present ({other})"
                ),
                ))
            }
        };
        let default = if kind == "interac_present" {
            "4506445006931933"
        } else {
            DEFAULT_CARD
        };
        let card = TestCard::from_number(number.unwrap_or(default))?;
        self.present(scope, id, card, tip)?;
        Ok(self.reader_view(id, &expand))
    }

    /// Starts the authorisation of `card` on the reader's in-progress payment.
    pub fn present(
        &mut self,
        scope: &Option<String>,
        id: &str,
        card: TestCard,
        tip: i64,
    ) -> Res<()> {
        let zero = self.auth_delay_zero;
        let rec = self.reader_mut(scope, id)?;
        if !rec.online {
            return Err(SimError::reader_offline());
        }
        if rec.authorizing.is_some() {
            return Err(SimError::reader_busy());
        }
        let waiting = rec.obj.action.as_ref().is_some_and(|a| {
            a.kind == ActionType::ProcessPaymentIntent && a.status == ActionStatus::InProgress
        });
        if !waiting {
            return Err(SimError::invalid(
                None,
                format!("Reader {id} is not waiting for a payment method: it has no in-progress process_payment_intent action."),
            ));
        }
        rec.authorizing = Some(Pending { card, tip });
        let generation = rec.generation;
        if zero {
            self.authorize(id, generation);
        } else {
            self.timers.push(Timer::Authorize {
                reader: id.to_string(),
                generation,
            });
        }
        Ok(())
    }

    /// Finishes an authorisation: the PaymentIntent moves on, the reader reports (when it
    /// is online; an offline reader leaves its action `in_progress`), events are queued.
    pub fn authorize(&mut self, reader_id: &str, generation: u64) {
        let Some(rec) = self.readers.get_mut(reader_id) else {
            return;
        };
        if rec.generation != generation {
            return;
        }
        let Some(pending) = rec.authorizing.take() else {
            return;
        };
        let online = rec.online;
        let location = rec.obj.location.as_ref().map(|l| l.id().to_string());
        let Some(pi_id) = rec
            .obj
            .action
            .as_ref()
            .and_then(|a| a.payment_intent_id())
            .map(str::to_string)
        else {
            return;
        };
        let now = now_secs();
        let charge_id = self.id("ch");
        let pm_id = self.id("pm");
        let Some(pi_rec) = self.intents.get_mut(&pi_id) else {
            return;
        };
        let owner = pi_rec.owner.clone();
        let result: Result<(), ApiErrorObject> =
            if pi_rec.obj.status != PaymentIntentStatus::RequiresPaymentMethod {
                Err(ApiErrorObject::new(
                    ErrorType::InvalidRequestError,
                    Some("intent_invalid_state"),
                    format!(
                        "The PaymentIntent has a status of {} and can no longer be processed.",
                        pi_rec.obj.status
                    ),
                ))
            } else {
                let pi = &mut pi_rec.obj;
                let amount = pi.amount + pending.tip;
                let card = &pending.card;
                let details = CardPresentDetails {
                    amount_authorized: Some(amount),
                    brand: Some(card.brand.to_string()),
                    capture_before: Some(if card.brand == "visa" {
                        now + 4 * 86400 + 18 * 3600
                    } else {
                        now + 2 * 86400
                    }),
                    exp_month: 12,
                    exp_year: 2030,
                    funding: Some(card.funding.to_string()),
                    incremental_authorization_supported: false,
                    last4: Some(card.last4()),
                    overcapture_supported: false,
                    read_method: Some("contactless_emv".into()),
                    reader: Some(reader_id.to_string()),
                    location: location.clone(),
                };
                let automatic = pi.capture_method != CaptureMethod::Manual;
                let mut charge = Charge {
                    id: charge_id.clone(),
                    object: "charge".into(),
                    amount,
                    amount_captured: 0,
                    amount_refunded: 0,
                    captured: false,
                    created: now,
                    currency: pi.currency.clone(),
                    failure_code: None,
                    failure_message: None,
                    livemode: false,
                    metadata: pi.metadata.clone(),
                    paid: false,
                    payment_intent: Some(pi.id.clone()),
                    payment_method_details: Some(PaymentMethodDetails {
                        kind: "card_present".into(),
                        card_present: Some(details),
                    }),
                    refunded: false,
                    status: "failed".into(),
                };
                pi.latest_charge = Some(Expandable::Id(charge_id.clone()));
                let r = match card.outcome(amount) {
                    Some((code, decline)) => {
                        let msg = decline_message(code, decline);
                        charge.failure_code = Some(code.to_string());
                        charge.failure_message = Some(msg.to_string());
                        let mut err = ApiErrorObject::new(ErrorType::CardError, Some(code), msg);
                        err.decline_code = decline.map(str::to_string);
                        err.charge = Some(charge_id.clone());
                        err.payment_method_type = Some("card_present".into());
                        err.doc_url = Some(format!(
                            "https://stripe.com/docs/error-codes/{}",
                            code.replace('_', "-")
                        ));
                        pi.last_payment_error = Some(err.clone());
                        pi.payment_method = None;
                        Err(err)
                    }
                    None => {
                        if pending.tip > 0 {
                            pi.amount = amount;
                            pi.amount_details = Some(AmountDetails {
                                tip: Some(Tip {
                                    amount: Some(pending.tip),
                                }),
                            });
                        }
                        charge.paid = true;
                        charge.status = "succeeded".into();
                        pi.last_payment_error = None;
                        pi.payment_method = Some(Expandable::Id(pm_id));
                        if automatic {
                            charge.captured = true;
                            charge.amount_captured = amount;
                            pi.status = PaymentIntentStatus::Succeeded;
                            pi.amount_received = amount;
                            pi.amount_capturable = 0;
                        } else {
                            pi.status = PaymentIntentStatus::RequiresCapture;
                            pi.amount_capturable = amount;
                        }
                        Ok(())
                    }
                };
                let seq = self.seq + 1;
                self.seq = seq;
                self.charges.insert(
                    charge_id.clone(),
                    Rec {
                        owner: owner.clone(),
                        seq,
                        obj: charge,
                    },
                );
                r
            };
        let pi_view = self.intents.get(&pi_id).map(|r| to_value(&r.obj));
        let pi_status = self.intents.get(&pi_id).map(|r| r.obj.status.clone());
        match (&result, pi_view) {
            (Ok(()), Some(v)) => {
                if pi_status == Some(PaymentIntentStatus::Succeeded) {
                    self.emit("payment_intent.succeeded", owner.clone(), v);
                } else {
                    self.emit("payment_intent.amount_capturable_updated", owner.clone(), v);
                }
            }
            (Err(e), Some(v)) if e.kind == ErrorType::CardError => {
                self.emit("payment_intent.payment_failed", owner.clone(), v);
            }
            _ => {}
        }
        if !online {
            if let Some(rec) = self.readers.get_mut(reader_id) {
                rec.unreported = true;
            }
            return;
        }
        if let Some(rec) = self.readers.get_mut(reader_id) {
            if let Some(action) = rec.obj.action.as_mut() {
                match result {
                    Ok(()) => action.status = ActionStatus::Succeeded,
                    Err(e) => {
                        action.status = ActionStatus::Failed;
                        action.failure_code = e.code.clone();
                        action.failure_message = e.message.clone();
                        action.api_error = Some(e);
                    }
                }
                let failed = action.status == ActionStatus::Failed;
                let view = self.reader_view(reader_id, &[]);
                let kind = if failed {
                    "terminal.reader.action_failed"
                } else {
                    "terminal.reader.action_succeeded"
                };
                self.emit(kind, None, view);
            }
        }
    }

    /// The customer presses cancel on the reader: a waiting payment action fails with
    /// `customer_canceled` (no `api_error`: the failure came from the reader).
    pub fn customer_cancel(&mut self, id: &str) -> Res<Value> {
        let Some(rec) = self.readers.get_mut(id) else {
            return Err(SimError::no_such("terminal.reader", id, None));
        };
        let waiting = rec.authorizing.is_none()
            && rec.obj.action.as_ref().is_some_and(|a| {
                a.kind == ActionType::ProcessPaymentIntent && a.status == ActionStatus::InProgress
            });
        if !waiting || !rec.online {
            return Err(SimError::invalid(
                None,
                format!("Reader {id} is not waiting for a card."),
            ));
        }
        rec.generation += 1;
        if let Some(a) = rec.obj.action.as_mut() {
            a.status = ActionStatus::Failed;
            a.failure_code = Some("customer_canceled".into());
            a.failure_message = Some(
                "This action could not be completed due to an error on the card reader.".into(),
            );
            a.api_error = None;
        }
        let view = self.reader_view(id, &[]);
        self.emit("terminal.reader.action_failed", None, view.clone());
        Ok(view)
    }

    /// Auto-present: taps the default card if the reader is still waiting on the same action.
    pub fn auto_present(&mut self, reader_id: &str, generation: u64) {
        let Some(rec) = self.readers.get(reader_id) else {
            return;
        };
        if rec.generation != generation || !rec.online || rec.authorizing.is_some() {
            return;
        }
        let owner = rec.owner.clone();
        if let Ok(card) = TestCard::from_number(DEFAULT_CARD) {
            let _ = self.present(&owner, reader_id, card, 0);
        }
    }

    // PaymentIntents -----------------------------------------------------------------------

    fn intent_mut(&mut self, scope: &Option<String>, id: &str) -> Res<&mut Rec<PaymentIntent>> {
        match self.intents.get_mut(id) {
            Some(r) if &r.owner == scope => Ok(r),
            _ => Err(SimError::no_such("payment_intent", id, Some("intent"))),
        }
    }

    fn intent_view(&self, id: &str, expand: &[String]) -> Value {
        let Some(rec) = self.intents.get(id) else {
            return Value::Null;
        };
        let mut pi = rec.obj.clone();
        if expand.iter().any(|e| e == "latest_charge") {
            if let Some(Expandable::Id(ch)) = &pi.latest_charge {
                if let Some(c) = self.charges.get(ch) {
                    pi.latest_charge = Some(Expandable::Object(Box::new(c.obj.clone())));
                }
            }
        }
        to_value(&pi)
    }

    const PI_EXPAND: &'static [&'static str] = &["latest_charge"];

    fn validate_amount(amount: i64, currency: &str, param: &str) -> Res<()> {
        if amount < minimum_amount(currency) {
            return Err(SimError::param(
                Some("amount_too_small"),
                param,
                format!(
                    "Amount must be at least {} {currency}",
                    minimum_amount(currency)
                ),
            ));
        }
        if amount > 99_999_999 {
            return Err(SimError::param(
                Some("amount_too_large"),
                param,
                "Amount must be no more than 99999999",
            ));
        }
        Ok(())
    }

    fn currency_param(f: &Form) -> Res<Option<String>> {
        match f.str(&["currency"]) {
            None => Ok(None),
            Some(c) if c.len() == 3 && c.chars().all(|x| x.is_ascii_alphabetic()) => {
                Ok(Some(c.to_ascii_lowercase()))
            }
            Some(c) => Err(SimError::param(
                None,
                "currency",
                format!("Invalid currency: {}. Stripe currently supports these currencies: usd, eur, gbp, cad, aud, nzd, sgd, jpy, chf, dkk, nok, sek, pln, czk, myr, ...", c.to_ascii_lowercase()),
            )),
        }
    }

    fn account_ref(&self, id: &str, param: &str) -> Res<Expandable<ObjectRef>> {
        if self.accounts.contains_key(id) {
            Ok(Expandable::Id(id.to_string()))
        } else {
            Err(SimError::param(
                None,
                param,
                format!("No such destination: '{id}'"),
            ))
        }
    }

    const PI_PARAMS: &'static [&'static str] = &[
        "amount",
        "currency",
        "payment_method_types",
        "capture_method",
        "application_fee_amount",
        "metadata",
        "description",
        "transfer_data",
        "on_behalf_of",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "receipt_email",
        "customer",
        "setup_future_usage",
        "transfer_group",
        "payment_method_options",
    ];

    pub fn create_intent(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(Self::PI_PARAMS)?;
        let expand = Self::check_expand(f, Self::PI_EXPAND)?;
        let amount = f
            .int(&["amount"])?
            .ok_or_else(|| SimError::missing("amount"))?;
        let currency = Self::currency_param(f)?.ok_or_else(|| SimError::missing("currency"))?;
        Self::validate_amount(amount, &currency, "amount")?;
        let types = f
            .list("payment_method_types")
            .unwrap_or_else(|| vec!["card".into()]);
        let capture_method = match f.str(&["capture_method"]).unwrap_or("automatic") {
            c @ ("automatic" | "automatic_async" | "manual") => CaptureMethod::from(c),
            other => {
                return Err(SimError::param(
                    None,
                    "capture_method",
                    format!("Invalid capture_method: must be one of automatic, automatic_async, or manual ({other})"),
                ))
            }
        };
        let fee = f.int(&["application_fee_amount"])?;
        let transfer_data = match f.str(&["transfer_data", "destination"]) {
            Some(d) => Some(TransferData {
                amount: f.int(&["transfer_data", "amount"])?,
                destination: self.account_ref(d, "transfer_data[destination]")?,
            }),
            None => None,
        };
        let on_behalf_of = match f.str(&["on_behalf_of"]) {
            Some(a) => Some(self.account_ref(a, "on_behalf_of")?),
            None => None,
        };
        if let Some(fee) = fee {
            if scope.is_none() && transfer_data.is_none() {
                return Err(SimError::param(
                    None,
                    "application_fee_amount",
                    "Can only apply an application_fee_amount when the PaymentIntent is attempting a direct payment (using an OAuth key or Stripe-Account header) or destination payment (using `transfer_data[destination]`).",
                ));
            }
            if fee < 0 || fee > amount {
                return Err(SimError::param(
                    None,
                    "application_fee_amount",
                    "The application fee must be a positive amount no greater than the payment amount.",
                ));
            }
        }
        // Terminal payments need the receiving account's card_payments capability.
        if let Some(acct) = scope {
            let active = self
                .accounts
                .get(acct)
                .is_some_and(|a| a.obj.card_payments_active());
            if !active && types.iter().any(|t| t.ends_with("_present") || t == "card") {
                return Err(SimError::invalid(
                    Some("payment_method_unactivated"),
                    format!("The account {acct} does not have the card_payments capability active, so it cannot accept card payments."),
                )
                .with_param("payment_method_types"));
            }
        }
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let pi = PaymentIntent {
            id: self.id("pi"),
            object: "payment_intent".into(),
            amount,
            amount_capturable: 0,
            amount_details: Some(AmountDetails {
                tip: Some(Tip { amount: None }),
            }),
            amount_received: 0,
            application_fee_amount: fee,
            canceled_at: None,
            cancellation_reason: None,
            capture_method,
            confirmation_method: "automatic".into(),
            created: now_secs(),
            currency,
            description: f.str(&["description"]).map(str::to_string),
            last_payment_error: None,
            latest_charge: None,
            livemode: false,
            metadata,
            on_behalf_of,
            payment_method: None,
            payment_method_types: types,
            status: PaymentIntentStatus::RequiresPaymentMethod,
            transfer_data,
        };
        let id = pi.id.clone();
        let seq = self.next_seq();
        self.intents.insert(
            id.clone(),
            Rec {
                owner: scope.clone(),
                seq,
                obj: pi,
            },
        );
        let v = self.intent_view(&id, &[]);
        self.emit("payment_intent.created", scope.clone(), v);
        Ok(self.intent_view(&id, &expand))
    }

    pub fn get_intent(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        let expand = Self::check_expand(f, Self::PI_EXPAND)?;
        self.intent_mut(scope, id)?;
        Ok(self.intent_view(id, &expand))
    }

    pub fn update_intent(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(Self::PI_PARAMS)?;
        let expand = Self::check_expand(f, Self::PI_EXPAND)?;
        let currency = Self::currency_param(f)?;
        let amount = f.int(&["amount"])?;
        let fee = f.int(&["application_fee_amount"])?;
        let capture = f.str(&["capture_method"]).map(str::to_string);
        let types = f.list("payment_method_types");
        let rec = self.intent_mut(scope, id)?;
        let pi = &mut rec.obj;
        let money_change =
            amount.is_some() || currency.is_some() || capture.is_some() || types.is_some();
        let open = matches!(
            pi.status,
            PaymentIntentStatus::RequiresPaymentMethod
                | PaymentIntentStatus::RequiresConfirmation
                | PaymentIntentStatus::RequiresAction
        );
        if (money_change && !open)
            || matches!(
                pi.status,
                PaymentIntentStatus::Canceled | PaymentIntentStatus::Succeeded
            ) && fee.is_some()
        {
            return Err(SimError::invalid(
                Some("payment_intent_unexpected_state"),
                format!("This PaymentIntent's amount, currency, capture_method and payment_method_types could not be updated because it has a status of {}. You may only update these fields of a PaymentIntent with one of the following statuses: requires_payment_method, requires_confirmation, requires_action.", pi.status),
            ));
        }
        let cur = currency.clone().unwrap_or_else(|| pi.currency.clone());
        if let Some(a) = amount {
            Self::validate_amount(a, &cur, "amount")?;
        }
        if let Some(c) = &capture {
            if !matches!(c.as_str(), "automatic" | "automatic_async" | "manual") {
                return Err(SimError::param(
                    None,
                    "capture_method",
                    format!("Invalid capture_method ({c})"),
                ));
            }
        }
        let mut metadata = pi.metadata.clone();
        f.apply_metadata(&mut metadata)?;
        pi.metadata = metadata;
        if let Some(a) = amount {
            pi.amount = a;
        }
        if let Some(c) = currency {
            pi.currency = c;
        }
        if let Some(c) = capture {
            pi.capture_method = CaptureMethod::from(c);
        }
        if let Some(t) = types {
            pi.payment_method_types = t;
        }
        if let Some(fee) = fee {
            pi.application_fee_amount = Some(fee);
        }
        if let Some(d) = f.str(&["description"]) {
            pi.description = (!d.is_empty()).then(|| d.to_string());
        }
        pi.last_payment_error = None;
        Ok(self.intent_view(id, &expand))
    }

    pub fn list_intents(&self, scope: &Option<String>, f: &Form) -> Res<Value> {
        let expand = Self::check_expand(f, &["data.latest_charge"])?;
        let expand: Vec<String> = expand
            .iter()
            .filter_map(|e| e.strip_prefix("data.").map(str::to_string))
            .collect();
        let mut recs: Vec<_> = self
            .intents
            .values()
            .filter(|r| &r.owner == scope)
            .collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let items = recs
            .into_iter()
            .map(|r| (r.obj.id.clone(), self.intent_view(&r.obj.id, &expand)))
            .collect();
        paginate(items, f, "/v1/payment_intents")
    }

    pub fn capture_intent(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&[
            "amount_to_capture",
            "application_fee_amount",
            "metadata",
            "statement_descriptor",
            "statement_descriptor_suffix",
            "final_capture",
            "transfer_data",
        ])?;
        let expand = Self::check_expand(f, Self::PI_EXPAND)?;
        let to_capture = f.int(&["amount_to_capture"])?;
        let fee = f.int(&["application_fee_amount"])?;
        let rec = self.intent_mut(scope, id)?;
        let owner = rec.owner.clone();
        let pi = &mut rec.obj;
        if pi.status != PaymentIntentStatus::RequiresCapture {
            return Err(SimError::invalid(
                Some("payment_intent_unexpected_state"),
                format!("This PaymentIntent could not be captured because it has a status of {}. Only a PaymentIntent with one of the following statuses may be captured: requires_capture.", pi.status),
            ));
        }
        let amount = to_capture.unwrap_or(pi.amount_capturable);
        if amount <= 0 || amount > pi.amount_capturable {
            return Err(SimError::param(
                Some("amount_too_large"),
                "amount_to_capture",
                format!("The amount to capture ({amount}) must be a positive amount less than or equal to the amount capturable ({}).", pi.amount_capturable),
            ));
        }
        if let Some(fee) = fee {
            if fee < 0 || fee > amount {
                return Err(SimError::param(
                    None,
                    "application_fee_amount",
                    "The application fee cannot exceed the amount captured.",
                ));
            }
            pi.application_fee_amount = Some(fee);
        }
        let mut metadata = pi.metadata.clone();
        f.apply_metadata(&mut metadata)?;
        pi.metadata = metadata;
        pi.status = PaymentIntentStatus::Succeeded;
        pi.amount_received = amount;
        pi.amount_capturable = 0;
        let charge = pi.latest_charge.as_ref().map(|c| c.id().to_string());
        if let Some(ch) = charge.and_then(|c| self.charges.get_mut(&c)) {
            ch.obj.captured = true;
            ch.obj.amount_captured = amount;
        }
        let v = self.intent_view(id, &[]);
        self.emit("payment_intent.succeeded", owner, v);
        Ok(self.intent_view(id, &expand))
    }

    pub fn cancel_intent(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&["cancellation_reason"])?;
        let expand = Self::check_expand(f, Self::PI_EXPAND)?;
        let reason = f.str(&["cancellation_reason"]).map(str::to_string);
        if let Some(r) = &reason {
            if !matches!(
                r.as_str(),
                "duplicate" | "fraudulent" | "requested_by_customer" | "abandoned"
            ) {
                return Err(SimError::param(
                    None,
                    "cancellation_reason",
                    format!("Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer, or abandoned ({r})"),
                ));
            }
        }
        let rec = self.intent_mut(scope, id)?;
        let owner = rec.owner.clone();
        let pi = &mut rec.obj;
        if matches!(
            pi.status,
            PaymentIntentStatus::Succeeded | PaymentIntentStatus::Canceled
        ) {
            return Err(SimError::invalid(
                Some("payment_intent_unexpected_state"),
                format!("You cannot cancel this PaymentIntent because it has a status of {}. Only a PaymentIntent with one of the following statuses may be canceled: requires_payment_method, requires_capture, requires_confirmation, requires_action, processing.", pi.status),
            ));
        }
        let released = pi.status == PaymentIntentStatus::RequiresCapture;
        pi.status = PaymentIntentStatus::Canceled;
        pi.cancellation_reason = reason;
        pi.canceled_at = Some(now_secs());
        pi.amount_capturable = 0;
        let charge = pi.latest_charge.as_ref().map(|c| c.id().to_string());
        if released {
            if let Some(ch) = charge.and_then(|c| self.charges.get_mut(&c)) {
                ch.obj.refunded = true;
                ch.obj.amount_refunded = ch.obj.amount;
            }
        }
        let v = self.intent_view(id, &[]);
        self.emit("payment_intent.canceled", owner, v);
        Ok(self.intent_view(id, &expand))
    }

    // Refunds ------------------------------------------------------------------------------

    pub fn create_refund(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(&[
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata",
            "refund_application_fee",
            "reverse_transfer",
            "instructions_email",
            "origin",
        ])?;
        let amount = f.int(&["amount"])?;
        if amount.is_some_and(|a| a <= 0) {
            return Err(SimError::param(
                Some("parameter_invalid_integer"),
                "amount",
                "Invalid positive integer",
            ));
        }
        let reason = f.str(&["reason"]).map(str::to_string);
        if let Some(r) = &reason {
            if !matches!(
                r.as_str(),
                "duplicate" | "fraudulent" | "requested_by_customer"
            ) {
                return Err(SimError::param(
                    None,
                    "reason",
                    format!("Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer ({r})"),
                ));
            }
        }
        let charge_id = match (f.str(&["payment_intent"]), f.str(&["charge"])) {
            (Some(pi), _) => {
                let rec = self
                    .intent_mut(scope, pi)
                    .map_err(|e| e.with_param("payment_intent").status(400))?;
                match &rec.obj.latest_charge {
                    Some(c) if rec.obj.status == PaymentIntentStatus::Succeeded => c.id().to_string(),
                    _ => {
                        return Err(SimError::invalid(
                            Some("charge_not_refundable"),
                            format!("This PaymentIntent ({pi}) does not have a successful charge to refund."),
                        )
                        .with_param("payment_intent"))
                    }
                }
            }
            (None, Some(ch)) => ch.to_string(),
            (None, None) => return Err(SimError::missing("payment_intent")),
        };
        let refund_id = self.id("re");
        let ch = match self.charges.get_mut(&charge_id) {
            Some(c) if &c.owner == scope => c,
            _ => return Err(SimError::no_such("charge", &charge_id, Some("charge")).status(400)),
        };
        if !ch.obj.captured {
            return Err(SimError::invalid(
                Some("charge_not_refundable"),
                format!("Charge {charge_id} has not been captured; cancel its PaymentIntent to release the authorization."),
            ));
        }
        let remaining = ch.obj.amount_captured - ch.obj.amount_refunded;
        if remaining <= 0 {
            return Err(SimError::invalid(
                Some("charge_already_refunded"),
                format!("Charge {charge_id} has already been refunded."),
            ));
        }
        let amount = amount.unwrap_or(remaining);
        if amount > remaining {
            return Err(SimError::invalid(
                Some("amount_too_large"),
                format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})"),
            )
            .with_param("amount"));
        }
        ch.obj.amount_refunded += amount;
        ch.obj.refunded = ch.obj.amount_refunded >= ch.obj.amount_captured;
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let refund = Refund {
            id: refund_id.clone(),
            object: "refund".into(),
            amount,
            charge: Some(charge_id.clone()),
            created: now_secs(),
            currency: ch.obj.currency.clone(),
            metadata,
            payment_intent: ch.obj.payment_intent.clone(),
            reason,
            status: Some("succeeded".into()),
        };
        let seq = self.next_seq();
        self.refunds.insert(
            refund_id,
            Rec {
                owner: scope.clone(),
                seq,
                obj: refund.clone(),
            },
        );
        if let Some(c) = self.charges.get(&charge_id) {
            let v = to_value(&c.obj);
            self.emit("charge.refunded", scope.clone(), v);
        }
        Ok(to_value(&refund))
    }

    pub fn get_refund(&self, scope: &Option<String>, id: &str) -> Res<Value> {
        match self.refunds.get(id) {
            Some(r) if &r.owner == scope => Ok(to_value(&r.obj)),
            _ => Err(SimError::no_such("refund", id, Some("refund"))),
        }
    }

    pub fn list_refunds(&self, scope: &Option<String>, f: &Form) -> Res<Value> {
        let mut recs: Vec<_> = self
            .refunds
            .values()
            .filter(|r| &r.owner == scope)
            .filter(|r| {
                f.str(&["payment_intent"])
                    .is_none_or(|p| r.obj.payment_intent.as_deref() == Some(p))
            })
            .collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let items = recs
            .into_iter()
            .map(|r| (r.obj.id.clone(), r.obj.clone()))
            .collect();
        paginate(items, f, "/v1/refunds")
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
        assert_eq!(exp.outcome(1000), Some(("expired_card", None)));
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
