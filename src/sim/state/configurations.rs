//! Terminal Configurations (`/v1/terminal/configurations`): create, retrieve, update,
//! delete and list, each account its own, holding on-reader tipping (other settings are
//! refused as unknown parameters). A location names one with `configuration_overrides`,
//! and a reader's tip screen follows its location's configuration: the simulated customer
//! (auto-present) picks the first suggestion, `POST /_sim/readers/{id}/present` with
//! `tip_suggestion` picks another, and `process_config[skip_tipping]` hides the screen.

use super::*;

/// The currencies Stripe takes in `tipping` (API reference, "Create a Configuration").
const CURRENCIES: &[&str] = &[
    "aud", "cad", "chf", "czk", "dkk", "eur", "gbp", "hkd", "myr", "nok", "nzd", "sek", "sgd",
    "usd",
];

/// The reader shows three suggestions.
const MAX_SUGGESTIONS: usize = 3;

impl State {
    fn configuration_mut(
        &mut self,
        scope: &Option<String>,
        id: &str,
    ) -> Res<&mut Rec<TerminalConfiguration>> {
        match self.configurations.get_mut(id) {
            Some(r) if &r.owner == scope => Ok(r),
            _ => Err(SimError::no_such(
                "terminal.configuration",
                id,
                Some("configuration"),
            )),
        }
    }

    /// A `configuration_overrides` value: `""` detaches; any other must be one of the
    /// account's configurations (a missing object named by a parameter is a 400).
    pub(super) fn check_configuration_param(
        &self,
        scope: &Option<String>,
        f: &Form,
    ) -> Res<Option<Option<String>>> {
        let Some(c) = f.str(&["configuration_overrides"]) else {
            return Ok(None);
        };
        if c.is_empty() {
            return Ok(Some(None));
        }
        match self.configurations.get(c) {
            Some(r) if &r.owner == scope => Ok(Some(Some(c.to_string()))),
            _ => {
                Err(
                    SimError::no_such("terminal.configuration", c, Some("configuration_overrides"))
                        .status(400),
                )
            }
        }
    }

    /// `tipping`: `""` unsets it; otherwise currencies with Stripe's keys, at most three
    /// values per list, and the same keys for every currency.
    fn tipping_param(f: &Form) -> Res<Option<Option<Tipping>>> {
        let Some(v) = f.0.get("tipping") else {
            return Ok(None);
        };
        if v.as_str() == Some("") {
            return Ok(Some(None));
        }
        let Some(map) = v.as_object() else {
            return Err(SimError::param(None, "tipping", "Invalid hash"));
        };
        let mut out = Tipping::new();
        let mut shape: Option<[bool; 3]> = None;
        for (currency, c) in map {
            if !CURRENCIES.contains(&currency.as_str()) {
                return Err(SimError::unknown_param(&format!("tipping[{currency}]")));
            }
            let Some(fields) = c.as_object() else {
                return Err(SimError::param(
                    None,
                    &format!("tipping[{currency}]"),
                    "Invalid hash",
                ));
            };
            let mut t = CurrencyTipping::default();
            for (k, v) in fields {
                let name = format!("tipping[{currency}][{k}]");
                match k.as_str() {
                    "percentages" | "fixed_amounts" => {
                        let items = as_list(v)
                            .ok_or_else(|| SimError::param(None, &name, "Invalid array"))?;
                        let mut list = Vec::new();
                        for i in items {
                            let n = i.as_str().and_then(|s| s.parse::<i64>().ok()).ok_or_else(
                                || {
                                    SimError::param(
                                        Some("parameter_invalid_integer"),
                                        &name,
                                        "Invalid integer",
                                    )
                                },
                            )?;
                            if n < 0 {
                                return Err(SimError::param(
                                    Some("parameter_invalid_integer"),
                                    &name,
                                    "This value must be greater than or equal to 0.",
                                ));
                            }
                            list.push(n);
                        }
                        if list.len() > MAX_SUGGESTIONS {
                            return Err(SimError::param(
                                None,
                                &name,
                                format!(
                                    "You can specify at most {MAX_SUGGESTIONS} values for {k}."
                                ),
                            ));
                        }
                        if k == "percentages" {
                            t.percentages = Some(list);
                        } else {
                            t.fixed_amounts = Some(list);
                        }
                    }
                    "smart_tip_threshold" => {
                        let n = Form(c.clone()).int(&["smart_tip_threshold"]).map_err(|_| {
                            SimError::param(
                                Some("parameter_invalid_integer"),
                                &name,
                                "Invalid integer",
                            )
                        })?;
                        t.smart_tip_threshold = n;
                    }
                    _ => return Err(SimError::unknown_param(&name)),
                }
            }
            let keys = [
                t.percentages.is_some(),
                t.fixed_amounts.is_some(),
                t.smart_tip_threshold.is_some(),
            ];
            if shape.is_some_and(|s| s != keys) {
                return Err(SimError::param(
                    None,
                    "tipping",
                    "If specifying more than one currency, you must provide the same configuration keys for each currency.",
                ));
            }
            shape = Some(keys);
            out.insert(currency.clone(), t);
        }
        Ok(Some(Some(out)))
    }

    pub fn create_configuration(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(&["tipping", "name"])?;
        let tipping = Self::tipping_param(f)?.flatten();
        let c = TerminalConfiguration {
            id: self.id("tmc"),
            object: "terminal.configuration".into(),
            is_account_default: Some(false),
            livemode: self.livemode,
            tipping,
        };
        let seq = self.next_seq();
        self.configurations.insert(
            c.id.clone(),
            Rec {
                owner: scope.clone(),
                seq,
                obj: c.clone(),
            },
        );
        Ok(to_value(&c))
    }

    pub fn get_configuration(&mut self, scope: &Option<String>, id: &str) -> Res<Value> {
        Ok(to_value(&self.configuration_mut(scope, id)?.obj))
    }

    pub fn update_configuration(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
    ) -> Res<Value> {
        f.only(&["tipping", "name"])?;
        let tipping = Self::tipping_param(f)?;
        let rec = self.configuration_mut(scope, id)?;
        if let Some(t) = tipping {
            rec.obj.tipping = t;
        }
        Ok(to_value(&rec.obj))
    }

    /// Deletes a configuration; the locations that named it fall back to the account's
    /// default (their `configuration_overrides` is cleared).
    pub fn delete_configuration(&mut self, scope: &Option<String>, id: &str) -> Res<Value> {
        self.configuration_mut(scope, id)?;
        self.configurations.remove(id);
        for l in self.locations.values_mut() {
            if l.obj.configuration_overrides.as_deref() == Some(id) {
                l.obj.configuration_overrides = None;
            }
        }
        Ok(to_value(&Deleted {
            id: id.to_string(),
            object: "terminal.configuration".into(),
            deleted: true,
            device_type: None,
            serial_number: None,
        }))
    }

    pub fn list_configurations(&self, scope: &Option<String>, f: &Form) -> Res<Value> {
        let default = f.bool(&["is_account_default"])?;
        let mut items: Vec<_> = self
            .configurations
            .values()
            .filter(|r| &r.owner == scope)
            .filter(|r| default.is_none_or(|d| r.obj.is_account_default.unwrap_or(false) == d))
            .collect();
        items.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let items = items
            .into_iter()
            .map(|r| (r.obj.id.clone(), r.obj.clone()))
            .collect();
        paginate(items, f, "/v1/terminal/configurations")
    }

    /// The tip the customer picks on `reader_id`'s tip screen for its in-progress payment:
    /// suggestion `index` of its location's configuration for the PaymentIntent's currency,
    /// on `process_config[tipping][amount_eligible]` or the amount; a smart tip threshold
    /// shows the fixed amounts below it and the percentages from it. `None` when the screen
    /// is not shown (`skip_tipping`, no configuration or no tipping in that currency).
    pub fn suggested_tip(&self, reader_id: &str, index: usize) -> Option<i64> {
        let reader = self.readers.get(reader_id)?;
        let action = reader
            .obj
            .action
            .as_ref()?
            .process_payment_intent
            .as_ref()?;
        let config = action.process_config.as_ref();
        if config.and_then(|c| c.skip_tipping) == Some(true) {
            return None;
        }
        let location = self.locations.get(reader.obj.location.as_ref()?.id())?;
        let configuration = self
            .configurations
            .get(location.obj.configuration_overrides.as_deref()?)?;
        let pi = self
            .intents
            .get(reader.obj.action.as_ref()?.payment_intent_id()?)?;
        let t = configuration.obj.tipping.as_ref()?.get(&pi.obj.currency)?;
        let base = config
            .and_then(|c| c.tipping.as_ref())
            .and_then(|t| t.amount_eligible)
            .unwrap_or(pi.obj.amount);
        let by_amount = match (t.smart_tip_threshold, &t.fixed_amounts, &t.percentages) {
            (Some(th), Some(_), Some(_)) => base < th,
            (_, Some(_), None) => true,
            _ => false,
        };
        if by_amount {
            t.fixed_amounts.as_ref()?.get(index).copied()
        } else {
            let pct = *t.percentages.as_ref()?.get(index)?;
            Some((base * pct + 50) / 100)
        }
    }
}
