//! SetupIntents (create, retrieve, cancel), the reader's `process_setup_intent` action, and
//! the card the customer presents for it (`present_payment_method` on a reader that waits
//! for a SetupIntent): a card saved for later, without a charge.
//!
//! Customers are not modelled: a `customer` is accepted when it looks like one (`cus_…`).
//! A SetupIntent can't keep a `card_present` PaymentMethod; what a later payment uses is
//! the reusable `card` PaymentMethod generated from it, `generated_card`, shown on the
//! reader's action and on the SetupIntent's latest attempt.

use super::*;
use crate::stripe::wire::*;
use serde_json::Value;

/// Values of `allow_redisplay`.
const ALLOW_REDISPLAY: [&str; 3] = ["always", "limited", "unspecified"];

impl State {
    fn setup_mut(&mut self, scope: &Option<String>, id: &str) -> Res<&mut Rec<SetupIntent>> {
        match self.setup_intents.get_mut(id) {
            Some(r) if &r.owner == scope => Ok(r),
            _ => Err(SimError::no_such("setup_intent", id, Some("intent"))),
        }
    }

    fn setup_view(&self, id: &str, expand: &[String]) -> Value {
        let Some(rec) = self.setup_intents.get(id) else {
            return Value::Null;
        };
        let mut si = rec.obj.clone();
        if expand.iter().any(|e| e == "latest_attempt") {
            if let Some(Expandable::Id(a)) = &si.latest_attempt {
                if let Some(att) = self.setup_attempts.get(a) {
                    si.latest_attempt = Some(Expandable::Object(Box::new(att.obj.clone())));
                }
            }
        }
        to_value(&si)
    }

    const SI_EXPAND: &'static [&'static str] = &["latest_attempt"];

    /// `POST /v1/setup_intents`.
    pub fn create_setup_intent(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(&[
            "payment_method_types",
            "customer",
            "usage",
            "on_behalf_of",
            "description",
            "metadata",
        ])?;
        let expand = check_expand(f, Self::SI_EXPAND)?;
        let types = f
            .list("payment_method_types")
            .unwrap_or_else(|| vec!["card".into()]);
        let usage = match f.str(&["usage"]).unwrap_or("off_session") {
            u @ ("off_session" | "on_session") => u.to_string(),
            other => {
                return Err(SimError::param(
                    None,
                    "usage",
                    format!("Invalid usage: must be one of on_session or off_session ({other})"),
                ))
            }
        };
        let customer = match f.str(&["customer"]) {
            None => None,
            Some(c) if c.starts_with("cus_") && c.len() > 4 => Some(Expandable::Id(c.to_string())),
            Some(c) => {
                return Err(SimError::no_such("customer", c, Some("customer")).status(400));
            }
        };
        let on_behalf_of = match f.str(&["on_behalf_of"]) {
            Some(a) if self.accounts.contains_key(a) => Some(Expandable::Id(a.to_string())),
            Some(a) => {
                return Err(SimError::param(
                    None,
                    "on_behalf_of",
                    format!("No such account: '{a}'"),
                ))
            }
            None => None,
        };
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let id = self.id("seti");
        let seq = self.next_seq();
        let si = SetupIntent {
            id: id.clone(),
            object: "setup_intent".into(),
            cancellation_reason: None,
            created: now_secs(),
            customer,
            description: f.str(&["description"]).map(str::to_string),
            last_setup_error: None,
            latest_attempt: None,
            livemode: self.livemode,
            metadata,
            on_behalf_of,
            payment_method: None,
            payment_method_types: types,
            status: SetupIntentStatus::RequiresPaymentMethod,
            usage,
        };
        self.setup_intents.insert(
            id.clone(),
            Rec {
                owner: scope.clone(),
                seq,
                obj: si,
            },
        );
        let view = self.setup_view(&id, &[]);
        self.emit("setup_intent.created", scope.clone(), view);
        Ok(self.setup_view(&id, &expand))
    }

    /// `GET /v1/setup_intents/{id}`.
    pub fn get_setup_intent(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        let expand = check_expand(f, Self::SI_EXPAND)?;
        self.setup_mut(scope, id)?;
        Ok(self.setup_view(id, &expand))
    }

    /// `POST /v1/setup_intents/{id}/cancel`: only before it succeeded.
    pub fn cancel_setup_intent(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
    ) -> Res<Value> {
        f.only(&["cancellation_reason"])?;
        let expand = check_expand(f, Self::SI_EXPAND)?;
        let reason = f.str(&["cancellation_reason"]).map(str::to_string);
        if let Some(r) = &reason {
            if !matches!(
                r.as_str(),
                "abandoned" | "requested_by_customer" | "duplicate"
            ) {
                return Err(SimError::param(
                    None,
                    "cancellation_reason",
                    format!("Invalid cancellation_reason: must be one of abandoned, requested_by_customer, or duplicate ({r})"),
                ));
            }
        }
        let rec = self.setup_mut(scope, id)?;
        let owner = rec.owner.clone();
        let si = &mut rec.obj;
        if matches!(
            si.status,
            SetupIntentStatus::Succeeded
                | SetupIntentStatus::Canceled
                | SetupIntentStatus::Processing
        ) {
            return Err(SimError::invalid(
                Some("setup_intent_unexpected_state"),
                format!("You cannot cancel this SetupIntent because it has a status of {}. Only a SetupIntent with one of the following statuses may be canceled: requires_payment_method, requires_confirmation, requires_action.", si.status),
            ));
        }
        si.status = SetupIntentStatus::Canceled;
        si.cancellation_reason = reason;
        let view = self.setup_view(id, &[]);
        self.emit("setup_intent.canceled", owner, view);
        Ok(self.setup_view(id, &expand))
    }

    /// `process_setup_intent`: the reader waits for a card to save on the SetupIntent.
    pub fn process_setup_intent(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
        auto_present: bool,
    ) -> Res<Value> {
        f.only(&["setup_intent", "allow_redisplay", "process_config"])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
        let si_id = f.req_str(&["setup_intent"])?.to_string();
        let redisplay = f.req_str(&["allow_redisplay"])?;
        if !ALLOW_REDISPLAY.contains(&redisplay) {
            return Err(SimError::param(
                None,
                "allow_redisplay",
                format!("Invalid allow_redisplay: must be one of always, limited, or unspecified ({redisplay})"),
            ));
        }
        if let Some(k) =
            f.0.get("process_config")
                .and_then(Value::as_object)
                .and_then(|m| m.keys().find(|k| *k != "enable_customer_cancellation"))
        {
            return Err(SimError::unknown_param(&format!("process_config[{k}]")));
        }
        let cancellation = f.bool(&["process_config", "enable_customer_cancellation"])?;
        let reader_owner = self.reader_mut(scope, id)?.owner.clone();
        // The SetupIntent: on the reader's own account, or (preview) on a connected account
        // of this platform when the reader belongs to the platform, as for PaymentIntents.
        let preview = self.platform_owned_readers;
        let (status, types) = match self.setup_intents.get(&si_id) {
            Some(r)
                if r.owner == reader_owner
                    || (preview && reader_owner.is_none() && r.owner.is_some()) =>
            {
                (r.obj.status.clone(), r.obj.payment_method_types.clone())
            }
            _ => {
                return Err(
                    SimError::no_such("setup_intent", &si_id, Some("setup_intent")).status(400),
                )
            }
        };
        let rec = self.reader_ready(scope, id)?;
        if status != SetupIntentStatus::RequiresPaymentMethod {
            return Err(SimError::invalid(
                Some("intent_invalid_state"),
                format!("Setup intent must be in the requires_payment_method state to be processed by a reader. The SetupIntent {si_id} has a status of {status}."),
            )
            .with_param("setup_intent"));
        }
        if !types.iter().any(|t| t == "card_present") {
            return Err(SimError::invalid(
                None,
                format!("The SetupIntent {si_id} does not accept card_present; add card_present to its payment_method_types."),
            )
            .with_param("setup_intent"));
        }
        rec.generation += 1;
        rec.obj.action = Some(ReaderAction {
            kind: ActionType::ProcessSetupIntent,
            status: ActionStatus::InProgress,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: None,
            refund_payment: None,
            process_setup_intent: Some(ProcessSetupIntentAction {
                setup_intent: Expandable::Id(si_id),
                generated_card: None,
                process_config: cancellation.map(|c| ProcessSetupConfig {
                    enable_customer_cancellation: Some(c),
                }),
            }),
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
        Ok(self.reader_view(id, &expand))
    }

    /// Whether the reader waits for a card to save (an in-progress `process_setup_intent`).
    pub(super) fn waits_for_setup(&self, id: &str) -> bool {
        self.readers.get(id).is_some_and(|r| {
            r.obj.action.as_ref().is_some_and(|a| {
                a.kind == ActionType::ProcessSetupIntent && a.status == ActionStatus::InProgress
            })
        })
    }

    /// The customer presents `card` for the reader's SetupIntent: saved (the SetupIntent
    /// succeeds, with a `generated_card`) or refused (`setup_intent_authentication_failure`,
    /// the SetupIntent back to `requires_payment_method`). Immediate: no charge is authorised.
    pub(super) fn present_setup(&mut self, id: &str, card: TestCard) -> Res<()> {
        let Some(si_id) = self
            .readers
            .get(id)
            .and_then(|r| r.obj.action.as_ref())
            .and_then(|a| a.setup_intent_id())
            .map(str::to_string)
        else {
            return Err(SimError::invalid(None, "no setup intent on the reader"));
        };
        let now = now_secs();
        let attempt_id = self.id("setatt");
        let pm = self.id("pm");
        let generated = self.id("pm");
        let livemode = self.livemode;
        let Some(rec) = self.setup_intents.get_mut(&si_id) else {
            return Err(SimError::no_such("setup_intent", &si_id, None));
        };
        let owner = rec.owner.clone();
        let si = &mut rec.obj;
        let refusal = if si.status != SetupIntentStatus::RequiresPaymentMethod {
            Some(ApiErrorObject::new(
                ErrorType::InvalidRequestError,
                Some("intent_invalid_state"),
                format!(
                    "The SetupIntent has a status of {} and can no longer be processed.",
                    si.status
                ),
            ))
        } else if let Some((code, decline)) = card.outcome(0) {
            let mut e = ApiErrorObject::new(
                ErrorType::CardError,
                Some("setup_intent_authentication_failure"),
                "The latest attempt to set up the payment method has failed because authentication failed.",
            );
            e.decline_code = decline.map(str::to_string).or(Some(code.to_string()));
            e.payment_method_type = Some("card_present".into());
            Some(e)
        } else {
            None
        };
        let attempt = SetupAttempt {
            id: attempt_id.clone(),
            object: "setup_attempt".into(),
            created: now,
            livemode,
            payment_method: Some(Expandable::Id(pm.clone())),
            payment_method_details: Some(SetupAttemptDetails {
                kind: "card_present".into(),
                card_present: Some(SetupAttemptCardPresent {
                    generated_card: refusal.is_none().then(|| Expandable::Id(generated.clone())),
                }),
            }),
            setup_error: refusal.clone(),
            setup_intent: Expandable::Id(si_id.clone()),
            status: if refusal.is_none() {
                "succeeded".into()
            } else {
                "failed".into()
            },
            usage: si.usage.clone(),
        };
        let stale = refusal
            .as_ref()
            .is_some_and(|e| e.code.as_deref() == Some("intent_invalid_state"));
        if !stale {
            si.latest_attempt = Some(Expandable::Id(attempt_id.clone()));
            match &refusal {
                None => {
                    si.status = SetupIntentStatus::Succeeded;
                    si.payment_method = Some(Expandable::Id(pm));
                    si.last_setup_error = None;
                }
                Some(e) => {
                    si.last_setup_error = Some(e.clone());
                    si.payment_method = None;
                }
            }
            let seq = self.next_seq();
            self.setup_attempts.insert(
                attempt_id,
                Rec {
                    owner: owner.clone(),
                    seq,
                    obj: attempt,
                },
            );
            let view = self.setup_view(&si_id, &[]);
            let kind = if refusal.is_none() {
                "setup_intent.succeeded"
            } else {
                "setup_intent.setup_failed"
            };
            self.emit(kind, owner, view);
        }
        if let Some(rec) = self.readers.get_mut(id) {
            rec.generation += 1;
            if let Some(a) = rec.obj.action.as_mut() {
                match &refusal {
                    None => {
                        a.status = ActionStatus::Succeeded;
                        if let Some(p) = a.process_setup_intent.as_mut() {
                            p.generated_card = Some(generated);
                        }
                    }
                    Some(e) => {
                        a.status = ActionStatus::Failed;
                        a.failure_code = e.code.clone();
                        a.failure_message = e.message.clone();
                        a.api_error = Some(e.clone());
                    }
                }
            }
        }
        let view = self.reader_view(id, &[]);
        let kind = if refusal.is_none() {
            "terminal.reader.action_succeeded"
        } else {
            "terminal.reader.action_failed"
        };
        self.emit(kind, None, view);
        Ok(())
    }
}
