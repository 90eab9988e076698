//! Stripe's JSON objects as readerd reads them, and as the emulator writes them.
//!
//! One set of types serves both the client (which parses them) and the emulator (which
//! serialises them), so the two cannot drift apart silently. Two rules follow from Stripe
//! adding fields and enum values every month:
//! - unknown fields are ignored when parsing (no `deny_unknown_fields` here);
//! - enums are `string_enum!` types: known values get a variant, unknown values are kept
//!   verbatim in `Other(String)` and written back unchanged.
//!
//! Only fields that Stripe documents are declared, so that what the emulator writes carries
//! no field unknown to Stripe. Fields newer than the 2023 OpenAPI subset are marked.
//!
//! Longer than 600 lines on purpose: one small declaration per Stripe object, all in one
//! place, so that a reader of the client and a reader of the emulator look at the same
//! shapes; split by object it would be a dozen files of thirty lines each.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Declares an enum that serialises as a string and keeps unknown values as data.
#[macro_export]
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($variant,)+
            /// A value this version of readerd does not know; kept verbatim.
            Other(String),
        }
        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s.as_str(),
                }
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $($text => Self::$variant,)+
                    _ => Self::Other(s),
                }
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::from(s.to_string())
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Stripe metadata: string keys to string values.
pub type Metadata = BTreeMap<String, String>;

/// A field that holds an object's id, or the object itself when expanded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Expandable<T> {
    Id(String),
    Object(Box<T>),
}

impl<T: HasId> Expandable<T> {
    /// The id, whether or not the field was expanded.
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) => id,
            Expandable::Object(o) => o.object_id(),
        }
    }
    /// The expanded object, if it was expanded.
    pub fn object(&self) -> Option<&T> {
        match self {
            Expandable::Id(_) => None,
            Expandable::Object(o) => Some(o),
        }
    }
}

/// Objects with an `id`.
pub trait HasId {
    fn object_id(&self) -> &str;
}

macro_rules! has_id {
    ($($t:ty),+) => { $(impl HasId for $t { fn object_id(&self) -> &str { &self.id } })+ };
}

/// Any object reduced to its id (for expandable fields readerd never expands, such as
/// `transfer_data.destination`, which fixtures show expanded to `{id, object}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

has_id!(
    ObjectRef,
    Account,
    Location,
    Reader,
    PaymentIntent,
    Charge,
    Refund,
    Transfer,
    TransferReversal,
    ApplicationFee,
    SetupIntent,
    SetupAttempt,
    TerminalConfiguration
);

/// `{"object": "list", "data": [...], "has_more", "url"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    #[serde(default = "list_object")]
    pub object: String,
    pub data: Vec<T>,
    pub has_more: bool,
    #[serde(default)]
    pub url: String,
}

/// Reads `null` as the type's default (for fields Stripe documents as nullable where an
/// empty value means the same).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn list_object() -> String {
    "list".to_string()
}

/// What a DELETE returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub object: String,
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<DeviceType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
}

/// A Terminal connection token (`terminal.connection_token`): the short-lived secret a
/// Terminal SDK connects with. Its `Debug` hides the secret, so it cannot reach a log by
/// accident.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionToken {
    pub object: String,
    /// `pst_…`: handed to the SDK, never stored or logged.
    pub secret: String,
    /// The location the token is restricted to, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl std::fmt::Debug for ConnectionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionToken")
            .field("object", &self.object)
            .field("secret", &"<redacted>")
            .field("location", &self.location)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Errors

string_enum!(
    /// `error.type`.
    ErrorType {
        ApiError => "api_error",
        CardError => "card_error",
        IdempotencyError => "idempotency_error",
        InvalidRequestError => "invalid_request_error",
    }
);

/// Stripe's error object (the `error` member of an error response, a PaymentIntent's
/// `last_payment_error`, a reader action's `api_error`). Everything but `type` is optional:
/// fixtures carry objects with `type` alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorObject {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_log_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    /// The PaymentIntent involved, in full. Kept as raw JSON: it is informational only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method_type: Option<String>,
}

impl ApiErrorObject {
    /// An error object with a type, code and message (the emulator's usual shape).
    pub fn new(kind: ErrorType, code: Option<&str>, message: impl Into<String>) -> Self {
        ApiErrorObject {
            kind,
            code: code.map(str::to_string),
            decline_code: None,
            message: Some(message.into()),
            param: None,
            doc_url: None,
            request_log_url: None,
            charge: None,
            payment_intent: None,
            payment_method_type: None,
        }
    }
}

/// `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ApiErrorObject,
}

// ---------------------------------------------------------------------------------------
// Accounts

string_enum!(
    /// A capability's status on an account.
    CapabilityStatus {
        Active => "active",
        Inactive => "inactive",
        Pending => "pending",
    }
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountCapabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_payments: Option<CapabilityStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfers: Option<CapabilityStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BusinessProfile {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountRequirements {
    #[serde(default)]
    pub disabled_reason: Option<String>,
    #[serde(default)]
    pub currently_due: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountController {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_controller: Option<bool>,
}

/// A Connect account (a merchant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub object: String,
    #[serde(default)]
    pub business_profile: Option<BusinessProfile>,
    #[serde(default)]
    pub capabilities: Option<AccountCapabilities>,
    #[serde(default)]
    pub charges_enabled: Option<bool>,
    #[serde(default)]
    pub payouts_enabled: Option<bool>,
    #[serde(default)]
    pub details_submitted: Option<bool>,
    #[serde(default)]
    pub controller: Option<AccountController>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub default_currency: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub requirements: Option<AccountRequirements>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

impl Account {
    /// `capabilities.card_payments == active`.
    pub fn card_payments_active(&self) -> bool {
        matches!(
            self.capabilities
                .as_ref()
                .and_then(|c| c.card_payments.as_ref()),
            Some(CapabilityStatus::Active)
        )
    }
}

// ---------------------------------------------------------------------------------------
// Locations

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub line1: Option<String>,
    #[serde(default)]
    pub line2: Option<String>,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

/// A Terminal location (`tml_…`), owned by the platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub id: String,
    pub object: String,
    pub address: Address,
    /// Present only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_overrides: Option<String>,
    pub display_name: String,
    pub livemode: bool,
    #[serde(default)]
    pub metadata: Metadata,
}

// ---------------------------------------------------------------------------------------
// Terminal configurations

/// One currency's tip suggestions (`terminal.configuration.tipping.<currency>`): amounts in
/// the currency's minor units, percentages as whole numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyTipping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_amounts: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentages: Option<Vec<i64>>,
    /// Below it the reader suggests the fixed amounts, from it the percentages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart_tip_threshold: Option<i64>,
}

/// `terminal.configuration.tipping`: by lowercase currency code. A currency Stripe adds is
/// data like any other; a currency Stripe writes as `null` is left out.
pub type Tipping = BTreeMap<String, CurrencyTipping>;

fn tipping_without_nulls<'de, D>(d: D) -> Result<Option<Tipping>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Option<BTreeMap<String, Option<CurrencyTipping>>> = Option::deserialize(d)?;
    Ok(raw.map(|m| {
        m.into_iter()
            .filter_map(|(currency, config)| config.map(|c| (currency, c)))
            .collect()
    }))
}

/// `terminal.configuration`: how the readers it applies to behave (a location's through
/// its `configuration_overrides`). readerd reads and writes its `tipping` only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TerminalConfiguration {
    pub id: String,
    pub object: String,
    #[serde(default)]
    pub is_account_default: Option<bool>,
    pub livemode: bool,
    #[serde(
        default,
        deserialize_with = "tipping_without_nulls",
        skip_serializing_if = "Option::is_none"
    )]
    pub tipping: Option<Tipping>,
}

// ---------------------------------------------------------------------------------------
// Readers

string_enum!(
    /// `reader.device_type`.
    DeviceType {
        BbposWiseposE => "bbpos_wisepos_e",
        StripeS700 => "stripe_s700",
        StripeS710 => "stripe_s710",
        SimulatedWiseposE => "simulated_wisepos_e",
        SimulatedStripeS700 => "simulated_stripe_s700",
        SimulatedStripeS710 => "simulated_stripe_s710",
        VerifoneP400 => "verifone_P400",
    }
);

string_enum!(
    /// `reader.status`.
    ReaderStatus {
        Online => "online",
        Offline => "offline",
    }
);

string_enum!(
    /// `reader.action.type`.
    ActionType {
        ProcessPaymentIntent => "process_payment_intent",
        ProcessSetupIntent => "process_setup_intent",
        RefundPayment => "refund_payment",
        SetReaderDisplay => "set_reader_display",
        CollectPaymentMethod => "collect_payment_method",
        ConfirmPaymentIntent => "confirm_payment_intent",
        CollectInputs => "collect_inputs",
    }
);

string_enum!(
    /// `reader.action.status`.
    ActionStatus {
        InProgress => "in_progress",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TippingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_eligible: Option<i64>,
}

/// `process_config` of `process_payment_intent`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_tipping: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tipping: Option<TippingConfig>,
    /// Newer than the 2023 schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_customer_cancellation: Option<bool>,
}

/// `action.process_payment_intent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessPaymentIntentAction {
    pub payment_intent: Expandable<PaymentIntent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_config: Option<ProcessConfig>,
    /// The account the PaymentIntent belongs to (platform-owned-reader preview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CartLineItem {
    pub amount: i64,
    pub description: String,
    pub quantity: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    pub currency: String,
    pub line_items: Vec<CartLineItem>,
    #[serde(default)]
    pub tax: Option<i64>,
    pub total: i64,
}

/// `action.set_reader_display`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetReaderDisplayAction {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub cart: Option<Cart>,
}

string_enum!(
    /// `inputs[].type` of `collect_inputs`.
    InputType {
        Email => "email",
        Numeric => "numeric",
        Phone => "phone",
        Selection => "selection",
        Signature => "signature",
        Text => "text",
    }
);

/// `inputs[].custom_text`: what the reader's screen says while it collects the input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputCustomText {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_button: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_button: Option<String>,
}

/// One choice of a `selection` input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputChoice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

/// `inputs[].selection`: the choices, and once collected the one chosen (`id`, `text`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputSelection {
    #[serde(default)]
    pub choices: Vec<InputChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `inputs[].toggles[]`: a checkbox under the input; `value` once collected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputToggle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `enabled` | `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    /// `enabled` | `disabled`, once collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The collected value of an `email`, `numeric`, `phone`, `text` or `signature` input (for
/// a signature, the id of a File).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputValue {
    #[serde(default)]
    pub value: Option<String>,
}

/// `action.collect_inputs.inputs[]`: one input as it was asked for, and the customer's
/// answer once the action succeeded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectedInput {
    #[serde(rename = "type")]
    pub kind: InputType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_text: Option<InputCustomText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<InputValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<InputValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<InputValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<InputValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<InputValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<InputSelection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toggles: Vec<InputToggle>,
}

impl CollectedInput {
    /// The collected value of a typed input (a selection gives the chosen choice's id).
    pub fn value(&self) -> Option<&str> {
        let v = match self.kind {
            InputType::Email => &self.email,
            InputType::Numeric => &self.numeric,
            InputType::Phone => &self.phone,
            InputType::Text => &self.text,
            InputType::Signature => &self.signature,
            InputType::Selection => return self.selection.as_ref()?.id.as_deref(),
            InputType::Other(_) => return None,
        };
        v.as_ref()?.value.as_deref()
    }
}

/// `action.collect_inputs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectInputsAction {
    #[serde(default)]
    pub inputs: Vec<CollectedInput>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// `payment_method.card_present.wallet`: the wallet a card was tapped from, when Stripe
/// tells (best effort).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CardWallet {
    #[serde(rename = "type")]
    pub kind: String,
}

/// `payment_method.card_present` (or `interac_present`): what the reader read of the card.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PresentCard {
    #[serde(default)]
    pub brand: Option<String>,
    #[serde(default)]
    pub last4: Option<String>,
    #[serde(default)]
    pub funding: Option<String>,
    #[serde(default)]
    pub exp_month: Option<i64>,
    #[serde(default)]
    pub exp_year: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<CardWallet>,
}

/// A PaymentMethod as a reader action shows it (`collect_payment_method.payment_method`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub id: String,
    #[serde(default)]
    pub object: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_present: Option<PresentCard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interac_present: Option<PresentCard>,
    #[serde(default)]
    pub livemode: bool,
}

impl PaymentMethod {
    /// The card read, whichever present type it is.
    pub fn card(&self) -> Option<&PresentCard> {
        self.card_present.as_ref().or(self.interac_present.as_ref())
    }
}

/// `collect_config` of `collect_payment_method`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_tipping: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_customer_cancellation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tipping: Option<TippingConfig>,
}

/// `action.collect_payment_method`: the PaymentIntent, and once the card is read the
/// PaymentMethod attached to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectPaymentMethodAction {
    pub payment_intent: Expandable<PaymentIntent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<PaymentMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_config: Option<CollectConfig>,
    /// The account the PaymentIntent belongs to (platform-owned-reader preview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// `action.confirm_payment_intent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfirmPaymentIntentAction {
    pub payment_intent: Expandable<PaymentIntent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// `process_config` of `process_setup_intent`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSetupConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_customer_cancellation: Option<bool>,
}

/// `action.process_setup_intent`: the SetupIntent on the reader and, once the card was
/// read, the reusable `card` PaymentMethod generated from it (when one could be).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessSetupIntentAction {
    pub setup_intent: Expandable<SetupIntent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_card: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_config: Option<ProcessSetupConfig>,
}

/// `action.refund_payment`: an in-person refund waiting for the customer's card; `refund`
/// once the card was presented and Stripe made the refund.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RefundPaymentAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<Expandable<ObjectRef>>,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<Expandable<ObjectRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<Expandable<ObjectRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_application_fee: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_transfer: Option<bool>,
}

/// `reader.action`: the reader's latest action, kept until replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReaderAction {
    #[serde(rename = "type")]
    pub kind: ActionType,
    pub status: ActionStatus,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_message: Option<String>,
    /// Newer than the 2023 schema (2026-05-27.dahlia).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_error: Option<ApiErrorObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_payment_intent: Option<ProcessPaymentIntentAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_reader_display: Option<SetReaderDisplayAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_payment: Option<RefundPaymentAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_setup_intent: Option<ProcessSetupIntentAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_inputs: Option<CollectInputsAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_payment_method: Option<CollectPaymentMethodAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_payment_intent: Option<ConfirmPaymentIntentAction>,
}

impl ReaderAction {
    /// The PaymentIntent id of a payment action: `process_payment_intent`,
    /// `collect_payment_method` or `confirm_payment_intent`.
    pub fn payment_intent_id(&self) -> Option<&str> {
        if let Some(p) = &self.process_payment_intent {
            return Some(p.payment_intent.id());
        }
        if let Some(c) = &self.collect_payment_method {
            return Some(c.payment_intent.id());
        }
        self.confirm_payment_intent
            .as_ref()
            .map(|c| c.payment_intent.id())
    }

    /// The PaymentMethod a `collect_payment_method` action collected.
    pub fn collected_payment_method(&self) -> Option<&PaymentMethod> {
        self.collect_payment_method
            .as_ref()?
            .payment_method
            .as_ref()
    }

    /// The SetupIntent id of a `process_setup_intent` action.
    pub fn setup_intent_id(&self) -> Option<&str> {
        self.process_setup_intent
            .as_ref()
            .map(|p| p.setup_intent.id())
    }
}

/// A Terminal reader (`tmr_…`), owned by the platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reader {
    pub id: String,
    pub object: String,
    #[serde(default)]
    pub action: Option<ReaderAction>,
    #[serde(default)]
    pub device_sw_version: Option<String>,
    pub device_type: DeviceType,
    #[serde(default)]
    pub ip_address: Option<String>,
    pub label: String,
    /// Milliseconds since the epoch (unlike other Stripe timestamps). Newer than the 2023 schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<i64>,
    pub livemode: bool,
    #[serde(default)]
    pub location: Option<Expandable<Location>>,
    #[serde(default)]
    pub metadata: Metadata,
    pub serial_number: String,
    #[serde(default)]
    pub status: Option<ReaderStatus>,
}

// ---------------------------------------------------------------------------------------
// PaymentIntents, charges, refunds

string_enum!(
    /// `payment_intent.status`.
    PaymentIntentStatus {
        RequiresPaymentMethod => "requires_payment_method",
        RequiresConfirmation => "requires_confirmation",
        RequiresAction => "requires_action",
        Processing => "processing",
        RequiresCapture => "requires_capture",
        Canceled => "canceled",
        Succeeded => "succeeded",
    }
);

string_enum!(
    /// `payment_intent.capture_method`.
    CaptureMethod {
        Automatic => "automatic",
        AutomaticAsync => "automatic_async",
        Manual => "manual",
    }
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tip {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AmountDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tip: Option<Tip>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    pub destination: Expandable<ObjectRef>,
}

/// A PaymentIntent. For direct charges it lives on the merchant's connected account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub object: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_capturable: i64,
    #[serde(default)]
    pub amount_details: Option<AmountDetails>,
    #[serde(default)]
    pub amount_received: i64,
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    #[serde(default)]
    pub canceled_at: Option<i64>,
    #[serde(default)]
    pub cancellation_reason: Option<String>,
    pub capture_method: CaptureMethod,
    #[serde(default = "automatic")]
    pub confirmation_method: String,
    pub created: i64,
    pub currency: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub last_payment_error: Option<ApiErrorObject>,
    #[serde(default)]
    pub latest_charge: Option<Expandable<Charge>>,
    pub livemode: bool,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub on_behalf_of: Option<Expandable<ObjectRef>>,
    #[serde(default)]
    pub payment_method: Option<Expandable<ObjectRef>>,
    pub payment_method_types: Vec<String>,
    pub status: PaymentIntentStatus,
    #[serde(default)]
    pub transfer_data: Option<TransferData>,
    /// Separate charges and transfers: the group its charge and transfers share.
    #[serde(default)]
    pub transfer_group: Option<String>,
}

fn automatic() -> String {
    "automatic".to_string()
}

impl PaymentIntent {
    /// The on-reader tip, if one was recorded.
    pub fn tip_amount(&self) -> Option<i64> {
        self.amount_details.as_ref()?.tip.as_ref()?.amount
    }
}

/// `charge.payment_method_details.card_present`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CardPresentDetails {
    #[serde(default)]
    pub amount_authorized: Option<i64>,
    #[serde(default)]
    pub brand: Option<String>,
    /// Unix seconds after which an uncaptured authorisation is released.
    #[serde(default)]
    pub capture_before: Option<i64>,
    #[serde(default)]
    pub exp_month: i64,
    #[serde(default)]
    pub exp_year: i64,
    #[serde(default)]
    pub funding: Option<String>,
    #[serde(default)]
    pub incremental_authorization_supported: bool,
    #[serde(default)]
    pub last4: Option<String>,
    #[serde(default)]
    pub overcapture_supported: bool,
    #[serde(default)]
    pub read_method: Option<String>,
    /// The reader used (newer than the 2023 schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<String>,
    /// The reader's location (newer than the 2023 schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethodDetails {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_present: Option<CardPresentDetails>,
}

/// A charge (the PaymentIntent's `latest_charge`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub object: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_captured: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub captured: bool,
    pub created: i64,
    pub currency: String,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_message: Option<String>,
    pub livemode: bool,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub paid: bool,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub payment_method_details: Option<PaymentMethodDetails>,
    #[serde(default)]
    pub refunded: bool,
    pub status: String,
    /// The platform's fee on this charge (Connect), once the charge is captured.
    #[serde(default)]
    pub application_fee: Option<Expandable<ObjectRef>>,
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    /// A destination charge's transfer to the connected account, once captured.
    #[serde(default)]
    pub transfer: Option<Expandable<ObjectRef>>,
}

/// A refund.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub object: String,
    pub amount: i64,
    #[serde(default)]
    pub charge: Option<String>,
    pub created: i64,
    pub currency: String,
    /// Nullable on refunds (unlike most objects): `null` reads as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// The reversal of the charge's transfer this refund made (`reverse_transfer`).
    #[serde(default)]
    pub transfer_reversal: Option<Expandable<ObjectRef>>,
}

/// A transfer to a connected account: the one a destination charge makes, or one created
/// with `POST /v1/transfers` (separate charges and transfers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub object: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_reversed: i64,
    pub created: i64,
    pub currency: String,
    #[serde(default)]
    pub description: Option<String>,
    pub destination: Expandable<ObjectRef>,
    pub livemode: bool,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub reversed: bool,
    /// The charge that funded it.
    #[serde(default)]
    pub source_transaction: Option<String>,
    #[serde(default)]
    pub transfer_group: Option<String>,
}

/// A reversal of (part of) a transfer: money pulled back from the connected account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferReversal {
    pub id: String,
    pub object: String,
    pub amount: i64,
    pub created: i64,
    pub currency: String,
    #[serde(default)]
    pub metadata: Metadata,
    /// The transfer it reverses.
    pub transfer: Expandable<ObjectRef>,
}

// ---------------------------------------------------------------------------------------
// SetupIntents (saving a card for later)

string_enum!(
    /// `setup_intent.status`.
    SetupIntentStatus {
        RequiresPaymentMethod => "requires_payment_method",
        RequiresConfirmation => "requires_confirmation",
        RequiresAction => "requires_action",
        Processing => "processing",
        Canceled => "canceled",
        Succeeded => "succeeded",
    }
);

/// A SetupIntent (`seti_…`): a payment method saved for later, without a charge. On the
/// merchant's connected account for direct charges, on the platform otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetupIntent {
    pub id: String,
    pub object: String,
    #[serde(default)]
    pub cancellation_reason: Option<String>,
    pub created: i64,
    #[serde(default)]
    pub customer: Option<Expandable<ObjectRef>>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub last_setup_error: Option<ApiErrorObject>,
    /// The latest SetupAttempt (`setatt_…`), expandable.
    #[serde(default)]
    pub latest_attempt: Option<Expandable<SetupAttempt>>,
    pub livemode: bool,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub on_behalf_of: Option<Expandable<ObjectRef>>,
    /// The `card_present` PaymentMethod read on the reader.
    #[serde(default)]
    pub payment_method: Option<Expandable<ObjectRef>>,
    #[serde(default)]
    pub payment_method_types: Vec<String>,
    pub status: SetupIntentStatus,
    /// `off_session` (the default) or `on_session`.
    #[serde(default = "off_session")]
    pub usage: String,
}

fn off_session() -> String {
    "off_session".into()
}

/// `payment_method_details.card_present` of a SetupAttempt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetupAttemptCardPresent {
    /// The reusable `card` PaymentMethod generated from the card read on the reader.
    #[serde(default)]
    pub generated_card: Option<Expandable<ObjectRef>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetupAttemptDetails {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_present: Option<SetupAttemptCardPresent>,
}

/// One attempt at confirming a SetupIntent (`setatt_…`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetupAttempt {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub livemode: bool,
    #[serde(default)]
    pub payment_method: Option<Expandable<ObjectRef>>,
    #[serde(default)]
    pub payment_method_details: Option<SetupAttemptDetails>,
    #[serde(default)]
    pub setup_error: Option<ApiErrorObject>,
    pub setup_intent: Expandable<ObjectRef>,
    pub status: String,
    #[serde(default = "off_session")]
    pub usage: String,
}

impl SetupIntent {
    /// The reusable card of a succeeded SetupIntent read with `expand[]=latest_attempt`:
    /// `latest_attempt.payment_method_details.card_present.generated_card`.
    pub fn generated_card(&self) -> Option<&str> {
        self.latest_attempt
            .as_ref()?
            .object()?
            .payment_method_details
            .as_ref()?
            .card_present
            .as_ref()?
            .generated_card
            .as_ref()
            .map(|c| c.id())
    }
}

/// An application fee: what the platform collected on a connected account's charge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplicationFee {
    pub id: String,
    pub object: String,
    /// The connected account the fee was taken from.
    pub account: Expandable<ObjectRef>,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    pub charge: String,
    pub created: i64,
    pub currency: String,
    pub livemode: bool,
    #[serde(default)]
    pub refunded: bool,
}

// ---------------------------------------------------------------------------------------
// Events

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_attributes: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A webhook event. `account` is set for events from connected accounts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub object: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default)]
    pub api_version: Option<String>,
    pub created: i64,
    pub data: EventData,
    pub livemode: bool,
    #[serde(default)]
    pub pending_webhooks: i64,
    #[serde(default)]
    pub request: Option<EventRequest>,
}
