//! Review before confirm: `collect_payment_method` reads the card and attaches it to the
//! PaymentIntent (`requires_confirmation`) without authorising it; the platform may change
//! the amount (a surcharge) and then `confirm_payment_intent` authorises the card it
//! collected. Stripe's refusals: a PaymentIntent not waiting for a card cannot be collected
//! for, and one with no collected card cannot be confirmed (`intent_invalid_state`).
//!
//! Once the card is read, the `collect_payment_method` action is over (`succeeded`, with
//! the PaymentMethod) and Stripe sends `terminal.reader.action_updated`, the one event of
//! this action (`action_succeeded`/`action_failed` come for the confirm).

use super::*;
use crate::stripe::wire::*;
use serde_json::Value;

impl State {
    /// The PaymentIntent a payment action on reader `id` names, if the reader may act on
    /// it: its own account's, or (preview) a connected account's on a platform reader;
    /// the location in the country of the account receiving the funds. Its owner.
    fn payment_action_intent(
        &mut self,
        scope: &Option<String>,
        id: &str,
        pi_id: &str,
    ) -> Res<Option<String>> {
        let reader_owner = self.reader_mut(scope, id)?.owner.clone();
        let preview = self.platform_owned_readers;
        let (pi_owner, on_behalf_of) = match self.intents.get(pi_id) {
            Some(r)
                if r.owner == reader_owner
                    || (preview && reader_owner.is_none() && r.owner.is_some()) =>
            {
                (
                    r.owner.clone(),
                    r.obj.on_behalf_of.as_ref().map(|a| a.id().to_string()),
                )
            }
            _ => {
                return Err(
                    SimError::no_such("payment_intent", pi_id, Some("payment_intent")).status(400),
                )
            }
        };
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
        Ok(pi_owner)
    }

    fn intent_state_error(pi_id: &str, status: &PaymentIntentStatus, want: &str) -> SimError {
        let mut e = SimError::invalid(
            Some("intent_invalid_state"),
            format!("Payment intent must be in the {want} state to be {}. The PaymentIntent {pi_id} has a status of {status}.",
                if want == "requires_confirmation" { "confirmed by a reader" } else { "collected by a reader" }),
        );
        e.error.param = Some("payment_intent".into());
        e
    }

    /// `collect_payment_method`: the reader waits for a card for a PaymentIntent that
    /// waits for one.
    pub fn collect_payment_method(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
        auto_present: bool,
    ) -> Res<Value> {
        f.only(&["payment_intent", "collect_config"])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
        let pi_id = f.req_str(&["payment_intent"])?.to_string();
        let config = CollectConfig {
            skip_tipping: f.bool(&["collect_config", "skip_tipping"])?,
            enable_customer_cancellation: f
                .bool(&["collect_config", "enable_customer_cancellation"])?,
            tipping: f
                .int(&["collect_config", "tipping", "amount_eligible"])?
                .map(|a| TippingConfig {
                    amount_eligible: Some(a),
                }),
        };
        if let Some(r) = f.str(&["collect_config", "allow_redisplay"]) {
            if !matches!(r, "always" | "limited" | "unspecified") {
                return Err(SimError::param(
                    None,
                    "collect_config[allow_redisplay]",
                    format!(
                        "Invalid collect_config[allow_redisplay]: must be one of always, limited, or unspecified ({r})"
                    ),
                ));
            }
        }
        let pi_owner = self.payment_action_intent(scope, id, &pi_id)?;
        let (status, types) = {
            let pi = &self.intents[&pi_id].obj;
            (pi.status.clone(), pi.payment_method_types.clone())
        };
        let rec = self.reader_ready(scope, id)?;
        if status != PaymentIntentStatus::RequiresPaymentMethod {
            return Err(Self::intent_state_error(
                &pi_id,
                &status,
                "requires_payment_method",
            ));
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
            kind: ActionType::CollectPaymentMethod,
            status: ActionStatus::InProgress,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: None,
            refund_payment: None,
            process_setup_intent: None,
            collect_inputs: None,
            collect_payment_method: Some(CollectPaymentMethodAction {
                payment_intent: Expandable::Id(pi_id),
                payment_method: None,
                collect_config: (config != CollectConfig::default()).then_some(config),
                account: pi_owner,
            }),
            confirm_payment_intent: None,
        });
        let generation = rec.generation;
        if auto_present {
            self.timers.push(Timer::Present {
                reader: id.to_string(),
                generation,
            });
        }
        Ok(self.reader_view(id, &expand))
    }

    /// The customer's card is read for an in-progress `collect_payment_method`: attached to
    /// the PaymentIntent (`requires_confirmation`), shown on the action, and
    /// `terminal.reader.action_updated` is sent. Nothing is authorised yet.
    pub(super) fn collect_card(&mut self, id: &str, card: TestCard, tip: i64) {
        let pm_id = self.id("pm");
        let livemode = self.livemode;
        let Some(pi_id) = self
            .readers
            .get(id)
            .and_then(|r| r.obj.action.as_ref())
            .and_then(|a| a.payment_intent_id())
            .map(str::to_string)
        else {
            return;
        };
        // Stripe names a wallet only when the card came from one; test cards do not.
        let wallet: Option<CardWallet> = None;
        let present = PresentCard {
            brand: Some(card.brand.to_string()),
            last4: Some(card.last4()),
            funding: Some(card.funding.to_string()),
            exp_month: Some(12),
            exp_year: Some(2030),
            wallet,
        };
        let pm = PaymentMethod {
            id: pm_id.clone(),
            object: Some("payment_method".into()),
            kind: "card_present".into(),
            card_present: Some(present),
            interac_present: None,
            livemode,
        };
        if let Some(pi) = self.intents.get_mut(&pi_id) {
            pi.obj.status = PaymentIntentStatus::RequiresConfirmation;
            pi.obj.payment_method = Some(Expandable::Id(pm_id));
            pi.obj.last_payment_error = None;
            if tip > 0 {
                pi.obj.amount += tip;
                pi.obj.amount_details = Some(AmountDetails {
                    tip: Some(Tip { amount: Some(tip) }),
                });
            }
        }
        self.collected.insert(pi_id, Pending { card, tip });
        let Some(rec) = self.readers.get_mut(id) else {
            return;
        };
        if let Some(a) = rec.obj.action.as_mut() {
            a.status = ActionStatus::Succeeded;
            if let Some(c) = a.collect_payment_method.as_mut() {
                c.payment_method = Some(pm);
            }
        }
        let view = self.reader_view(id, &[]);
        self.emit("terminal.reader.action_updated", None, view);
    }

    /// `confirm_payment_intent`: the card collected for the PaymentIntent is authorised for
    /// its amount as it stands now.
    pub fn confirm_payment_intent(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
    ) -> Res<Value> {
        f.only(&["payment_intent", "confirm_config"])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
        let pi_id = f.req_str(&["payment_intent"])?.to_string();
        let pi_owner = self.payment_action_intent(scope, id, &pi_id)?;
        let status = self.intents[&pi_id].obj.status.clone();
        let zero = self.auth_delay_zero;
        let collected = self.collected.get(&pi_id).cloned();
        let rec = self.reader_ready(scope, id)?;
        let Some(pending) =
            collected.filter(|_| status == PaymentIntentStatus::RequiresConfirmation)
        else {
            return Err(Self::intent_state_error(
                &pi_id,
                &status,
                "requires_confirmation",
            ));
        };
        rec.generation += 1;
        rec.obj.action = Some(ReaderAction {
            kind: ActionType::ConfirmPaymentIntent,
            status: ActionStatus::InProgress,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: None,
            refund_payment: None,
            process_setup_intent: None,
            collect_inputs: None,
            collect_payment_method: None,
            confirm_payment_intent: Some(ConfirmPaymentIntentAction {
                payment_intent: Expandable::Id(pi_id),
                confirm_config: None,
                account: pi_owner,
            }),
        });
        // The tip is already in the amount since the collection.
        rec.authorizing = Some(Pending {
            card: pending.card,
            tip: 0,
        });
        let generation = rec.generation;
        let view = self.reader_view(id, &expand);
        if zero {
            self.authorize(id, generation);
        } else {
            self.timers.push(Timer::Authorize {
                reader: id.to_string(),
                generation,
            });
        }
        Ok(view)
    }
}
