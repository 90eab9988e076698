//! Readers, their one action slot, and the simulated customer at the reader: registration,
//! `process_payment_intent`, `set_reader_display`, `cancel_action`, presenting a card, and
//! the authorisation that follows.
//!
//! Longer than 600 lines on purpose: every reader action Stripe has (process, display,
//! inputs, cancel) and the simulated customer act on the reader's one action slot, so they
//! live beside it.

use super::*;
use crate::stripe::form::as_list;
use crate::stripe::wire::*;
use rand::Rng;
use serde_json::Value;

impl State {
    // Readers ------------------------------------------------------------------------------

    pub(super) fn reader_mut(&mut self, scope: &Option<String>, id: &str) -> Res<&mut ReaderRec> {
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

    pub(super) const READER_EXPAND: &'static [&'static str] =
        &["location", "action.process_payment_intent.payment_intent"];

    pub fn register_reader(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(&["registration_code", "label", "location", "metadata"])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
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
            livemode: self.livemode,
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
                refund_owner: None,
            },
        );
        Ok(self.reader_view(&id, &expand))
    }

    /// `POST /v1/terminal/connection_tokens`: a fresh secret for a Terminal SDK on the
    /// account addressed, optionally restricted to one of that account's locations. The
    /// emulator keeps no record of it (Stripe's tokens are short-lived and single-use).
    pub fn create_connection_token(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(&["location"])?;
        let location = match f.str(&["location"]) {
            Some(l) if !l.is_empty() => {
                if !matches!(self.locations.get(l), Some(r) if &r.owner == scope) {
                    return Err(
                        SimError::no_such("terminal.location", l, Some("location")).status(400)
                    );
                }
                Some(l.to_string())
            }
            _ => None,
        };
        let n: u128 = self.rng.gen();
        let token = ConnectionToken {
            object: "terminal.connection_token".into(),
            secret: format!(
                "pst_{}_{n:032x}",
                if self.livemode { "live" } else { "test" }
            ),
            location,
        };
        Ok(to_value(&token))
    }

    pub fn get_reader(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        let expand = check_expand(f, Self::READER_EXPAND)?;
        self.reader_mut(scope, id)?;
        Ok(self.reader_view(id, &expand))
    }

    pub fn update_reader(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&["label", "metadata"])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
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
        let expand = check_expand(f, &["data.location"])?;
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
    pub(super) fn reader_ready(&mut self, scope: &Option<String>, id: &str) -> Res<&mut ReaderRec> {
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
        let expand = check_expand(f, Self::READER_EXPAND)?;
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
        let preview = self.platform_owned_readers;
        let (pi_owner, status, types, on_behalf_of) = match self.intents.get(&pi_id) {
            Some(r)
                if r.owner == reader_owner
                    || (preview && reader_owner.is_none() && r.owner.is_some()) =>
            {
                (
                    r.owner.clone(),
                    r.obj.status.clone(),
                    r.obj.payment_method_types.clone(),
                    r.obj.on_behalf_of.as_ref().map(|a| a.id().to_string()),
                )
            }
            _ => {
                // A missing object named by a parameter is a 400, unlike one in the path.
                return Err(
                    SimError::no_such("payment_intent", &pi_id, Some("payment_intent")).status(400),
                );
            }
        };
        // Stripe's regional rule: the reader's location must be in the country of the
        // account that receives the funds, the settlement merchant: `on_behalf_of` when
        // set, else the account the PaymentIntent is on (a connected account for a direct
        // charge, the platform for a destination charge without `on_behalf_of`).
        let location_country = self
            .readers
            .get(id)
            .and_then(|r| r.obj.location.as_ref())
            .and_then(|l| self.locations.get(l.id()))
            .and_then(|l| l.obj.address.country.clone());
        let receiver = on_behalf_of.or(pi_owner.clone());
        let funds_country = match &receiver {
            Some(acct) => self.accounts.get(acct).and_then(|a| a.obj.country.clone()),
            None => self.platform.country.clone(),
        };
        if let (Some(loc), Some(funds)) = (&location_country, &funds_country) {
            if !loc.eq_ignore_ascii_case(funds) {
                return Err(SimError::invalid(
                    Some("terminal_reader_invalid_location_for_payment"),
                    format!("The Reader {id} is registered to a Location in {loc}, but PaymentIntent {pi_id} pays an account in {funds}. The Location of the Reader must be in the same country as the account receiving the funds."),
                )
                .with_param("payment_intent"));
            }
        }
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
            collect_inputs: None,
            collect_payment_method: None,
            confirm_payment_intent: None,
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
        let expand = check_expand(f, Self::READER_EXPAND)?;
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
            collect_inputs: None,
            collect_payment_method: None,
            confirm_payment_intent: None,
        });
        Ok(self.reader_view(id, &expand))
    }

    pub fn cancel_action(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&[])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
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
        let expand = check_expand(f, Self::READER_EXPAND)?;
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
        let collecting = rec.obj.action.as_ref().is_some_and(|a| {
            a.kind == ActionType::CollectPaymentMethod && a.status == ActionStatus::InProgress
        });
        if collecting {
            // Read, not authorised: `confirm_payment_intent` authorises it.
            self.collect_card(id, card, tip);
            return Ok(());
        }
        if self.waits_for_setup(id) {
            return self.present_setup(id, card);
        }
        let rec = self.reader_mut(scope, id)?;
        if Self::refund_waiting(rec) {
            return self.present_for_refund(id);
        }
        let waiting = rec.obj.action.as_ref().is_some_and(|a| {
            a.kind == ActionType::ProcessPaymentIntent && a.status == ActionStatus::InProgress
        });
        if !waiting {
            return Err(SimError::invalid(
                None,
                format!("Reader {id} is not waiting for a payment method: it has no in-progress process_payment_intent or collect_payment_method action."),
            ));
        }
        // With `process_config[skip_tipping]` the customer saw no tip screen.
        let skip = rec
            .obj
            .action
            .as_ref()
            .and_then(|a| a.process_payment_intent.as_ref())
            .and_then(|p| p.process_config.as_ref())
            .and_then(|c| c.skip_tipping)
            == Some(true);
        let tip = if skip { 0 } else { tip };
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
        let confirming = rec
            .obj
            .action
            .as_ref()
            .is_some_and(|a| a.kind == ActionType::ConfirmPaymentIntent);
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
        // A confirm authorises the card collected before (`requires_confirmation`).
        let expected = if confirming {
            PaymentIntentStatus::RequiresConfirmation
        } else {
            PaymentIntentStatus::RequiresPaymentMethod
        };
        let result: Result<(), ApiErrorObject> = if pi_rec.obj.status != expected {
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
                livemode: self.livemode,
                metadata: pi.metadata.clone(),
                paid: false,
                payment_intent: Some(pi.id.clone()),
                payment_method_details: Some(PaymentMethodDetails {
                    kind: "card_present".into(),
                    card_present: Some(details),
                }),
                refunded: false,
                status: "failed".into(),
                application_fee: None,
                application_fee_amount: pi.application_fee_amount,
                transfer: None,
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
                    pi.status = PaymentIntentStatus::RequiresPaymentMethod;
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
            let captured = charge.captured;
            self.charges.insert(
                charge_id.clone(),
                Rec {
                    owner: owner.clone(),
                    seq,
                    obj: charge,
                },
            );
            if captured {
                self.charge_captured(&charge_id);
            }
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
            && (Self::refund_waiting(rec)
                || rec.obj.action.as_ref().is_some_and(|a| {
                    matches!(
                        a.kind,
                        ActionType::ProcessPaymentIntent | ActionType::CollectPaymentMethod
                    ) && a.status == ActionStatus::InProgress
                }));
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

    /// Auto-present: taps the default card if the reader is still waiting on the same action;
    /// the PaymentIntent tapped for.
    pub fn auto_present(&mut self, reader_id: &str, generation: u64) -> Option<String> {
        let rec = self.readers.get(reader_id)?;
        if rec.generation != generation || !rec.online || rec.authorizing.is_some() {
            return None;
        }
        let owner = rec.owner.clone();
        let pi = rec
            .obj
            .action
            .as_ref()
            .and_then(|a| a.payment_intent_id())
            .map(str::to_string);
        let card = TestCard::from_number(DEFAULT_CARD).ok()?;
        // On a tip screen, the simulated customer picks the first suggestion.
        let tip = self.suggested_tip(reader_id, 0).unwrap_or(0);
        self.present(&owner, reader_id, card, tip).ok()?;
        pi
    }
}
