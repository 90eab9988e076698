//! PaymentIntents (create, update, capture, cancel, list) and refunds, with Stripe's status
//! machine and its errors for illegal transitions. What a capture or a refund moves between
//! Connect accounts is `connect`'s.

use super::connect::RefundConnect;
use super::*;
use crate::stripe::wire::*;
use serde_json::Value;

impl State {
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
        let expand = check_expand(f, Self::PI_EXPAND)?;
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
            livemode: self.livemode,
            metadata,
            on_behalf_of,
            payment_method: None,
            payment_method_types: types,
            status: PaymentIntentStatus::RequiresPaymentMethod,
            transfer_data,
            transfer_group: f.str(&["transfer_group"]).map(str::to_string),
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
        let expand = check_expand(f, Self::PI_EXPAND)?;
        self.intent_mut(scope, id)?;
        Ok(self.intent_view(id, &expand))
    }

    pub fn update_intent(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(Self::PI_PARAMS)?;
        let expand = check_expand(f, Self::PI_EXPAND)?;
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
        let expand = check_expand(f, &["data.latest_charge"])?;
        let expand: Vec<String> = expand
            .iter()
            .filter_map(|e| e.strip_prefix("data.").map(str::to_string))
            .collect();
        // `created` as an exact time or a range: created[gt|gte|lt|lte].
        let exact = match f.0.get("created") {
            Some(serde_json::Value::Object(_)) => None,
            _ => f.int(&["created"])?,
        };
        let gt = f.int(&["created", "gt"])?;
        let gte = f.int(&["created", "gte"])?;
        let lt = f.int(&["created", "lt"])?;
        let lte = f.int(&["created", "lte"])?;
        let in_range = |c: i64| {
            exact.is_none_or(|e| c == e)
                && gt.is_none_or(|b| c > b)
                && gte.is_none_or(|b| c >= b)
                && lt.is_none_or(|b| c < b)
                && lte.is_none_or(|b| c <= b)
        };
        let mut recs: Vec<_> = self
            .intents
            .values()
            .filter(|r| &r.owner == scope)
            .filter(|r| in_range(r.obj.created))
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
        let expand = check_expand(f, Self::PI_EXPAND)?;
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
        if let Some(c) = charge {
            if let Some(ch) = self.charges.get_mut(&c) {
                ch.obj.captured = true;
                ch.obj.amount_captured = amount;
            }
            self.charge_captured(&c);
        }
        let v = self.intent_view(id, &[]);
        self.emit("payment_intent.succeeded", owner, v);
        Ok(self.intent_view(id, &expand))
    }

    pub fn cancel_intent(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&["cancellation_reason"])?;
        let expand = check_expand(f, Self::PI_EXPAND)?;
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
        let connect = RefundConnect {
            reverse_transfer: f.bool(&["reverse_transfer"])?.unwrap_or(false),
            refund_application_fee: f.bool(&["refund_application_fee"])?.unwrap_or(false),
        };
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
            (Some(pi), _) => self.refundable_charge(scope, pi)?,
            (None, Some(ch)) => ch.to_string(),
            (None, None) => return Err(SimError::missing("payment_intent")),
        };
        self.check_refund(scope, &charge_id, amount, connect)?;
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let refund = self.book_refund(scope, &charge_id, amount, reason, metadata, connect)?;
        Ok(to_value(&refund))
    }

    /// The charge of a PaymentIntent that can be refunded: the PaymentIntent succeeded.
    pub(super) fn refundable_charge(&mut self, scope: &Option<String>, pi: &str) -> Res<String> {
        let rec = self
            .intent_mut(scope, pi)
            .map_err(|e| e.with_param("payment_intent").status(400))?;
        match &rec.obj.latest_charge {
            Some(c) if rec.obj.status == PaymentIntentStatus::Succeeded => Ok(c.id().to_string()),
            _ => Err(SimError::invalid(
                Some("charge_not_refundable"),
                format!("This PaymentIntent ({pi}) does not have a successful charge to refund."),
            )
            .with_param("payment_intent")),
        }
    }

    /// Stripe's refusals of a refund of `amount` (all that is left when `None`) of a charge,
    /// checked before anything is booked: a reader's `refund_payment` is refused up front.
    /// The amount to refund.
    pub(super) fn check_refund(
        &self,
        scope: &Option<String>,
        charge_id: &str,
        amount: Option<i64>,
        connect: RefundConnect,
    ) -> Res<i64> {
        let ch = match self.charges.get(charge_id) {
            Some(c) if &c.owner == scope => c,
            _ => return Err(SimError::no_such("charge", charge_id, Some("charge")).status(400)),
        };
        self.check_refund_connect(&ch.obj, connect)?;
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
        Ok(amount)
    }

    /// Makes the refund (checked again: the charge may have moved since) and books what it
    /// moves between accounts; `charge.refunded` is emitted.
    pub(super) fn book_refund(
        &mut self,
        scope: &Option<String>,
        charge_id: &str,
        amount: Option<i64>,
        reason: Option<String>,
        metadata: Metadata,
        connect: RefundConnect,
    ) -> Res<Refund> {
        let amount = self.check_refund(scope, charge_id, amount, connect)?;
        let refund_id = self.id("re");
        let Some(ch) = self.charges.get_mut(charge_id) else {
            return Err(SimError::no_such("charge", charge_id, Some("charge")).status(400));
        };
        ch.obj.amount_refunded += amount;
        ch.obj.refunded = ch.obj.amount_refunded >= ch.obj.amount_captured;
        let currency = ch.obj.currency.clone();
        let payment_intent = ch.obj.payment_intent.clone();
        let reversal = self.refund_booked(charge_id, amount, connect);
        let refund = Refund {
            id: refund_id.clone(),
            object: "refund".into(),
            amount,
            charge: Some(charge_id.to_string()),
            created: now_secs(),
            currency,
            metadata,
            payment_intent,
            reason,
            status: Some("succeeded".into()),
            transfer_reversal: reversal.map(Expandable::Id),
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
        if let Some(c) = self.charges.get(charge_id) {
            let v = to_value(&c.obj);
            self.emit("charge.refunded", scope.clone(), v);
        }
        Ok(refund)
    }

    pub fn get_charge(&self, scope: &Option<String>, id: &str) -> Res<Value> {
        match self.charges.get(id) {
            Some(c) if &c.owner == scope => Ok(to_value(&c.obj)),
            _ => Err(SimError::no_such("charge", id, Some("charge"))),
        }
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
}
