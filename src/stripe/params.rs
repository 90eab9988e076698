//! Typed request parameters for every endpoint readerd calls, each turned into [`Params`]
//! in one place so that the exact bytes are tested and every name is checked against
//! Stripe's OpenAPI description.

use super::form::Params;
use super::wire::{
    Address, CaptureMethod, Cart, CollectedInput, Metadata, ProcessConfig, ReaderStatus, Tipping,
};

fn push_address(p: &mut Params, prefix: &str, a: &Address) {
    p.push_opt(format!("{prefix}[line1]"), a.line1.as_ref())
        .push_opt(format!("{prefix}[line2]"), a.line2.as_ref())
        .push_opt(format!("{prefix}[city]"), a.city.as_ref())
        .push_opt(format!("{prefix}[state]"), a.state.as_ref())
        .push_opt(format!("{prefix}[postal_code]"), a.postal_code.as_ref())
        .push_opt(format!("{prefix}[country]"), a.country.as_ref());
}

/// `POST /v1/terminal/locations`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateLocation {
    pub display_name: String,
    pub address: Address,
    pub metadata: Metadata,
}

impl CreateLocation {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("display_name", &self.display_name);
        push_address(&mut p, "address", &self.address);
        p.push_map("metadata", &self.metadata);
        p
    }
}

/// `POST /v1/terminal/locations/{id}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateLocation {
    pub display_name: Option<String>,
    pub address: Option<Address>,
    pub metadata: Metadata,
    /// `Some("")` detaches the location's configuration; `None` leaves it as it is.
    pub configuration_overrides: Option<String>,
}

impl UpdateLocation {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("display_name", self.display_name.as_ref());
        if let Some(a) = &self.address {
            push_address(&mut p, "address", a);
        }
        p.push_map("metadata", &self.metadata).push_opt(
            "configuration_overrides",
            self.configuration_overrides.as_ref(),
        );
        p
    }
}

/// `POST /v1/terminal/readers`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegisterReader {
    pub registration_code: String,
    pub label: Option<String>,
    pub location: Option<String>,
    pub metadata: Metadata,
}

impl RegisterReader {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("registration_code", &self.registration_code)
            .push_opt("label", self.label.as_ref())
            .push_opt("location", self.location.as_ref())
            .push_map("metadata", &self.metadata);
        p
    }
}

/// `POST /v1/terminal/connection_tokens`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateConnectionToken {
    /// Restricts the token to the readers of one location.
    pub location: Option<String>,
}

impl CreateConnectionToken {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("location", self.location.as_ref());
        p
    }
}

/// `POST /v1/terminal/readers/{id}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateReader {
    pub label: Option<String>,
    pub metadata: Metadata,
}

impl UpdateReader {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("label", self.label.as_ref())
            .push_map("metadata", &self.metadata);
        p
    }
}

/// Filters of `GET /v1/terminal/readers` (pagination is the client's business).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListReaders {
    pub location: Option<String>,
    pub status: Option<ReaderStatus>,
    pub device_type: Option<String>,
    pub serial_number: Option<String>,
}

impl ListReaders {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("location", self.location.as_ref())
            .push_opt("status", self.status.as_ref())
            .push_opt("device_type", self.device_type.as_ref())
            .push_opt("serial_number", self.serial_number.as_ref());
        p
    }
}

/// `POST /v1/terminal/readers/{id}/process_payment_intent`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessPaymentIntent {
    pub payment_intent: String,
    pub process_config: Option<ProcessConfig>,
}

impl ProcessPaymentIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("payment_intent", &self.payment_intent);
        if let Some(c) = &self.process_config {
            p.push_opt("process_config[skip_tipping]", c.skip_tipping)
                .push_opt(
                    "process_config[tipping][amount_eligible]",
                    c.tipping.as_ref().and_then(|t| t.amount_eligible),
                )
                .push_opt(
                    "process_config[enable_customer_cancellation]",
                    c.enable_customer_cancellation,
                );
        }
        p
    }
}

/// `POST /v1/terminal/readers/{id}/collect_payment_method`: the card is read and attached
/// to the PaymentIntent (`requires_confirmation`), not yet authorised.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectPaymentMethod {
    pub payment_intent: String,
    pub skip_tipping: Option<bool>,
}

impl CollectPaymentMethod {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("payment_intent", &self.payment_intent)
            .push_opt("collect_config[skip_tipping]", self.skip_tipping);
        p
    }
}

/// `POST /v1/terminal/readers/{id}/confirm_payment_intent`: the collected card is
/// authorised for the PaymentIntent's amount as it stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfirmPaymentIntent {
    pub payment_intent: String,
}

impl ConfirmPaymentIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("payment_intent", &self.payment_intent);
        p
    }
}

/// `POST /v1/terminal/readers/{id}/set_reader_display` (`type=cart`).
#[derive(Clone, Debug, PartialEq)]
pub struct SetReaderDisplay {
    pub cart: Cart,
}

impl SetReaderDisplay {
    pub fn to_params(&self) -> Params {
        let c = &self.cart;
        let mut p = Params::new();
        p.push("type", "cart").push("cart[currency]", &c.currency);
        p.push_indexed("cart[line_items]", c.line_items.len(), |i, it| {
            let li = &c.line_items[i];
            it.push("amount", li.amount)
                .push("description", &li.description)
                .push("quantity", li.quantity);
        });
        p.push_opt("cart[tax]", c.tax).push("cart[total]", c.total);
        p
    }
}

/// `POST /v1/terminal/readers/{id}/collect_inputs`: up to five inputs on the reader's
/// screen. Only what a request may carry is sent (the answers of a [`CollectedInput`] are
/// the reader's).
#[derive(Clone, Debug, PartialEq)]
pub struct CollectInputs {
    pub inputs: Vec<CollectedInput>,
    pub metadata: Metadata,
}

impl CollectInputs {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let at = format!("inputs[{i}]");
            p.push(format!("{at}[type]"), input.kind.as_str());
            if let Some(t) = &input.custom_text {
                p.push(format!("{at}[custom_text][title]"), &t.title)
                    .push_opt(
                        format!("{at}[custom_text][description]"),
                        t.description.as_ref(),
                    )
                    .push_opt(
                        format!("{at}[custom_text][submit_button]"),
                        t.submit_button.as_ref(),
                    )
                    .push_opt(
                        format!("{at}[custom_text][skip_button]"),
                        t.skip_button.as_ref(),
                    );
            }
            p.push_opt(format!("{at}[required]"), input.required);
            if let Some(sel) = &input.selection {
                for (j, c) in sel.choices.iter().enumerate() {
                    let c_at = format!("{at}[selection][choices][{j}]");
                    p.push_opt(format!("{c_at}[id]"), c.id.as_ref())
                        .push_opt(format!("{c_at}[style]"), c.style.as_ref())
                        .push(format!("{c_at}[text]"), &c.text);
                }
            }
            for (j, t) in input.toggles.iter().enumerate() {
                let t_at = format!("{at}[toggles][{j}]");
                p.push_opt(format!("{t_at}[default_value]"), t.default_value.as_ref())
                    .push_opt(format!("{t_at}[description]"), t.description.as_ref())
                    .push_opt(format!("{t_at}[title]"), t.title.as_ref());
            }
        }
        p.push_map("metadata", &self.metadata);
        p
    }
}

/// `POST /v1/terminal/readers/{id}/process_setup_intent`: the card read on the reader is
/// saved on the SetupIntent. `allow_redisplay` (`always`, `limited`, `unspecified`) is
/// required by Stripe: whether the saved card may be shown to the customer again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessSetupIntent {
    pub setup_intent: String,
    pub allow_redisplay: String,
    pub enable_customer_cancellation: Option<bool>,
}

impl ProcessSetupIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("setup_intent", &self.setup_intent)
            .push("allow_redisplay", &self.allow_redisplay)
            .push_opt(
                "process_config[enable_customer_cancellation]",
                self.enable_customer_cancellation,
            );
        p
    }
}

/// `POST /v1/setup_intents`: Terminal saves cards with `payment_method_types[]=card_present`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateSetupIntent {
    pub payment_method_types: Vec<String>,
    pub customer: Option<String>,
    /// `off_session` (Stripe's default) or `on_session`.
    pub usage: Option<String>,
    pub on_behalf_of: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
}

impl CreateSetupIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_list("payment_method_types", &self.payment_method_types)
            .push_opt("customer", self.customer.as_ref())
            .push_opt("usage", self.usage.as_ref())
            .push_opt("on_behalf_of", self.on_behalf_of.as_ref())
            .push_opt("description", self.description.as_ref())
            .push_map("metadata", &self.metadata);
        p
    }
}

/// `POST /v1/setup_intents/{id}/cancel`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CancelSetupIntent {
    /// `abandoned`, `requested_by_customer` or `duplicate`.
    pub cancellation_reason: Option<String>,
}

impl CancelSetupIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("cancellation_reason", self.cancellation_reason.as_ref());
        p
    }
}

/// `POST /v1/test_helpers/terminal/readers/{id}/succeed_input_collection`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SucceedInputCollection {
    /// `all` skips every input that is not required; `none` answers them all.
    pub skip_non_required_inputs: Option<String>,
}

impl SucceedInputCollection {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt(
            "skip_non_required_inputs",
            self.skip_non_required_inputs.as_ref(),
        );
        p
    }
}

/// `POST /v1/test_helpers/terminal/readers/{id}/present_payment_method`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresentPaymentMethod {
    /// A test card number; `None` presents the default Visa.
    pub card_present_number: Option<String>,
    pub amount_tip: Option<i64>,
}

impl PresentPaymentMethod {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        if let Some(n) = &self.card_present_number {
            p.push("type", "card_present")
                .push("card_present[number]", n);
        }
        p.push_opt("amount_tip", self.amount_tip);
        p
    }
}

/// `POST /v1/payment_intents`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreatePaymentIntent {
    pub amount: i64,
    pub currency: String,
    pub payment_method_types: Vec<String>,
    pub capture_method: CaptureMethod,
    pub application_fee_amount: Option<i64>,
    pub description: Option<String>,
    pub metadata: Metadata,
    /// Destination charges only: the connected account that receives the funds.
    pub transfer_destination: Option<String>,
    pub on_behalf_of: Option<String>,
    /// Separate charges and transfers: the group the charge and its transfers share.
    pub transfer_group: Option<String>,
}

impl CreatePaymentIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("amount", self.amount)
            .push("currency", &self.currency)
            .push_list("payment_method_types", &self.payment_method_types)
            .push("capture_method", &self.capture_method)
            .push_opt("application_fee_amount", self.application_fee_amount)
            .push_opt("description", self.description.as_ref())
            .push_map("metadata", &self.metadata)
            .push_opt(
                "transfer_data[destination]",
                self.transfer_destination.as_ref(),
            )
            .push_opt("on_behalf_of", self.on_behalf_of.as_ref())
            .push_opt("transfer_group", self.transfer_group.as_ref());
        p
    }
}

/// `POST /v1/payment_intents/{id}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdatePaymentIntent {
    pub amount: Option<i64>,
    pub application_fee_amount: Option<i64>,
    pub description: Option<String>,
    pub metadata: Metadata,
}

impl UpdatePaymentIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("amount", self.amount)
            .push_opt("application_fee_amount", self.application_fee_amount)
            .push_opt("description", self.description.as_ref())
            .push_map("metadata", &self.metadata);
        p
    }
}

/// `POST /v1/payment_intents/{id}/capture`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CapturePaymentIntent {
    pub amount_to_capture: Option<i64>,
    pub application_fee_amount: Option<i64>,
}

impl CapturePaymentIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("amount_to_capture", self.amount_to_capture)
            .push_opt("application_fee_amount", self.application_fee_amount);
        p
    }
}

/// `POST /v1/payment_intents/{id}/cancel`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CancelPaymentIntent {
    /// `duplicate`, `fraudulent`, `requested_by_customer` or `abandoned`.
    pub cancellation_reason: Option<String>,
}

impl CancelPaymentIntent {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("cancellation_reason", self.cancellation_reason.as_ref());
        p
    }
}

/// `POST /v1/refunds`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateRefund {
    pub payment_intent: String,
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub metadata: Metadata,
    /// Connect: pull the refunded share of the charge's transfer back from the destination
    /// account (destination charges). Sent only when true.
    pub reverse_transfer: bool,
    /// Connect: give the refunded share of the application fee back. Sent only when true.
    pub refund_application_fee: bool,
}

impl CreateRefund {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("payment_intent", &self.payment_intent)
            .push_opt("amount", self.amount)
            .push_opt("reason", self.reason.as_ref())
            .push_map("metadata", &self.metadata)
            .push_opt("reverse_transfer", self.reverse_transfer.then_some(true))
            .push_opt(
                "refund_application_fee",
                self.refund_application_fee.then_some(true),
            );
        p
    }
}

/// `POST /v1/terminal/readers/{id}/refund_payment`: a refund that waits for the customer's
/// card on the reader (needed for Interac). The Connect flags as [`CreateRefund`]'s, sent
/// only when true; no `reason` (the reader action takes none).
#[derive(Clone, Debug, PartialEq)]
pub struct RefundPayment {
    pub payment_intent: String,
    pub amount: Option<i64>,
    pub metadata: Metadata,
    pub reverse_transfer: bool,
    pub refund_application_fee: bool,
}

impl RefundPayment {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("payment_intent", &self.payment_intent)
            .push_opt("amount", self.amount)
            .push_map("metadata", &self.metadata)
            .push_opt("reverse_transfer", self.reverse_transfer.then_some(true))
            .push_opt(
                "refund_application_fee",
                self.refund_application_fee.then_some(true),
            );
        p
    }
}

/// `POST /v1/transfers` (separate charges and transfers).
#[derive(Clone, Debug, PartialEq)]
pub struct CreateTransfer {
    pub amount: i64,
    pub currency: String,
    /// The connected account that receives it.
    pub destination: String,
    /// The charge that funds it, so the transfer does not wait for the platform's balance.
    pub source_transaction: Option<String>,
    pub transfer_group: Option<String>,
    pub metadata: Metadata,
}

impl CreateTransfer {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push("amount", self.amount)
            .push("currency", &self.currency)
            .push("destination", &self.destination)
            .push_opt("source_transaction", self.source_transaction.as_ref())
            .push_opt("transfer_group", self.transfer_group.as_ref())
            .push_map("metadata", &self.metadata);
        p
    }
}

/// `POST /v1/transfers/{id}/reversals`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateTransferReversal {
    /// All that is left of the transfer when absent.
    pub amount: Option<i64>,
    pub metadata: Metadata,
}

impl CreateTransferReversal {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        p.push_opt("amount", self.amount)
            .push_map("metadata", &self.metadata);
        p
    }
}

/// `tipping[<currency>][…]` for every currency; `tipping=""` (Stripe's way to unset it)
/// when there is none.
fn push_tipping(p: &mut Params, tipping: Option<&Tipping>) {
    match tipping {
        Some(t) if !t.is_empty() => {
            for (currency, c) in t {
                let at = |field: &str| format!("tipping[{currency}][{field}]");
                if let Some(list) = &c.fixed_amounts {
                    p.push_list(&at("fixed_amounts"), list);
                }
                if let Some(list) = &c.percentages {
                    p.push_list(&at("percentages"), list);
                }
                p.push_opt(at("smart_tip_threshold"), c.smart_tip_threshold);
            }
        }
        _ => {
            p.push("tipping", "");
        }
    }
}

/// `POST /v1/terminal/configurations`: a configuration holding tipping only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CreateConfiguration {
    pub tipping: Tipping,
}

impl CreateConfiguration {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        push_tipping(&mut p, Some(&self.tipping));
        p
    }
}

/// `POST /v1/terminal/configurations/{id}`: its tipping replaced, or unset (`None`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpdateConfiguration {
    pub tipping: Option<Tipping>,
}

impl UpdateConfiguration {
    pub fn to_params(&self) -> Params {
        let mut p = Params::new();
        push_tipping(&mut p, self.tipping.as_ref());
        p
    }
}
