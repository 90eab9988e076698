//! Tipping per location: a Terminal Configuration on Stripe holding the location's tip
//! suggestions, attached to the location with `configuration_overrides`, on the account
//! that owns the location (the platform, or the merchant for a merchant-owned location).
//!
//! [`Fleet::set_tipping`] writes it in steps, each one's idempotency key in the location's
//! record ([`TippingWrite`]) before it is sent: create the configuration (first use), attach
//! it to the location, or update the one already attached. A step that did not finish is
//! replayed with its own key and parameters by the next write to that location, so a lost
//! answer or a crash never leaves a second configuration behind; a step Stripe refused for
//! good is forgotten (a key replayed would repeat the refusal forever). Removing the tipping
//! (`None`) unsets the configuration's `tipping` (Stripe's `tipping=""`) and keeps it
//! attached: nothing else a configuration may hold (a splash screen set on the Dashboard) is
//! lost, and setting tipping again later is one update.
//!
//! A configuration another location also uses is never changed through this location (its
//! change would reach the other location's readers): that write is refused.
//!
//! The sync reads every account's configurations with one more list call
//! ([`list_tipping`]) and records each location's tipping from its configuration
//! ([`synced`]), so a change made on Stripe's side shows after the next sync.

use super::{stripe_key, Fleet, FleetError, LocationRecord};
use crate::clock::Timestamp;
use crate::store::Tree;
use crate::stripe::error::{Disposition, StripeError};
use crate::stripe::params::{CreateConfiguration, UpdateConfiguration, UpdateLocation};
use crate::stripe::wire::{self, CurrencyTipping, TerminalConfiguration};
use crate::stripe::RequestOptions;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The currencies a Terminal Configuration's `tipping` takes (Stripe's API reference,
/// "Create a Configuration": `tipping.<currency>`).
pub const TIPPING_CURRENCIES: &[&str] = &[
    "aud", "cad", "chf", "czk", "dkk", "eur", "gbp", "hkd", "myr", "nok", "nzd", "sek", "sgd",
    "usd",
];

/// The reader shows three suggestions (Stripe's "Collect on-reader tips"): at most three
/// percentages and three fixed amounts per currency.
pub const MAX_SUGGESTIONS: usize = 3;

/// One currency's tip suggestions, as readerd keeps them. Amounts are minor units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TipSuggestions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentages: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_amounts: Option<Vec<i64>>,
    /// Below it the reader suggests the fixed amounts, from it the percentages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart_tip_threshold: Option<i64>,
}

/// A location's tipping: suggestions by lowercase currency code.
pub type LocationTipping = BTreeMap<String, TipSuggestions>;

/// The step of a tipping write that was about to be sent, with its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TippingStep {
    /// `POST /v1/terminal/configurations`.
    Create,
    /// `POST /v1/terminal/locations/{id}` with `configuration_overrides`.
    Attach,
    /// `POST /v1/terminal/configurations/{id}`.
    Update,
}

/// A tipping write not known to have finished, kept in the location's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TippingWrite {
    pub step: TippingStep,
    /// The step's idempotency key, on disk before the step is sent.
    pub key: String,
    /// The configuration the step acts on (known after the create).
    #[serde(default)]
    pub configuration: Option<String>,
    /// The tipping the step sends (a replay must send the same parameters).
    #[serde(default)]
    pub tipping: Option<LocationTipping>,
}

fn invalid(msg: String) -> FleetError {
    FleetError::Invalid(msg)
}

/// Checks tipping against Stripe's rules before anything is sent: supported currencies;
/// per currency at least one kind of suggestion, at most [`MAX_SUGGESTIONS`] of each,
/// every value positive; a smart tip threshold (not negative) chooses between fixed amounts
/// and percentages, so it needs both; and, as Stripe requires, the same keys for every
/// currency.
pub fn validate(t: &LocationTipping) -> Result<(), FleetError> {
    if t.is_empty() {
        return Err(invalid(
            "tipping must name at least one currency; null removes the tipping".into(),
        ));
    }
    let mut shape: Option<(&str, [bool; 3])> = None;
    for (currency, s) in t {
        if !TIPPING_CURRENCIES.contains(&currency.as_str()) {
            return Err(invalid(format!(
                "tipping.{currency}: Stripe takes tipping for {} only (lowercase)",
                TIPPING_CURRENCIES.join(", ")
            )));
        }
        for (name, list) in [
            ("percentages", &s.percentages),
            ("fixed_amounts", &s.fixed_amounts),
        ] {
            let Some(list) = list else { continue };
            if list.is_empty() || list.len() > MAX_SUGGESTIONS {
                return Err(invalid(format!(
                    "tipping.{currency}.{name}: 1 to {MAX_SUGGESTIONS} values (the reader shows three suggestions), not {}",
                    list.len()
                )));
            }
            if let Some(v) = list.iter().find(|v| **v <= 0) {
                return Err(invalid(format!(
                    "tipping.{currency}.{name}: every value must be positive, not {v}"
                )));
            }
        }
        if s.percentages.is_none() && s.fixed_amounts.is_none() {
            return Err(invalid(format!(
                "tipping.{currency}: give percentages, fixed_amounts or both"
            )));
        }
        if let Some(th) = s.smart_tip_threshold {
            if th < 0 {
                return Err(invalid(format!(
                    "tipping.{currency}.smart_tip_threshold must not be negative"
                )));
            }
            if s.percentages.is_none() || s.fixed_amounts.is_none() {
                return Err(invalid(format!(
                    "tipping.{currency}.smart_tip_threshold chooses between fixed_amounts (below it) and percentages: give both"
                )));
            }
        }
        let keys = [
            s.percentages.is_some(),
            s.fixed_amounts.is_some(),
            s.smart_tip_threshold.is_some(),
        ];
        match shape {
            None => shape = Some((currency, keys)),
            Some((first, k)) if k != keys => {
                return Err(invalid(format!(
                    "tipping.{currency} and tipping.{first} give different keys: Stripe requires the same keys (percentages, fixed_amounts, smart_tip_threshold) for every currency"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn to_wire(t: &LocationTipping) -> wire::Tipping {
    t.iter()
        .map(|(c, s)| {
            (
                c.clone(),
                CurrencyTipping {
                    fixed_amounts: s.fixed_amounts.clone(),
                    percentages: s.percentages.clone(),
                    smart_tip_threshold: s.smart_tip_threshold,
                },
            )
        })
        .collect()
}

/// A configuration's tipping as readerd keeps it; `None` when it has none.
pub fn from_wire(c: &TerminalConfiguration) -> Option<LocationTipping> {
    let t: LocationTipping = c
        .tipping
        .as_ref()?
        .iter()
        .filter(|(_, s)| {
            s.percentages.is_some() || s.fixed_amounts.is_some() || s.smart_tip_threshold.is_some()
        })
        .map(|(c, s)| {
            (
                c.clone(),
                TipSuggestions {
                    percentages: s.percentages.clone(),
                    fixed_amounts: s.fixed_amounts.clone(),
                    smart_tip_threshold: s.smart_tip_threshold,
                },
            )
        })
        .collect();
    (!t.is_empty()).then_some(t)
}

/// Every configuration's tipping on the account `o` names, by configuration id (one list).
pub(super) async fn list_tipping(
    fleet: &Fleet,
    o: &RequestOptions,
) -> Result<HashMap<String, Option<LocationTipping>>, FleetError> {
    let configs = fleet
        .observed(fleet.stripe.list_configurations_on(o))
        .await?;
    Ok(configs
        .iter()
        .map(|c| (c.id.clone(), from_wire(c)))
        .collect())
}

/// Sets a synced location's tipping from its account's configurations; `true` when it
/// changed. A configuration missing from the list (deleted on Stripe) has no tipping.
pub(super) fn synced(
    record: &mut LocationRecord,
    configs: &HashMap<String, Option<LocationTipping>>,
    now: Timestamp,
) -> bool {
    let tipping = record
        .configuration
        .as_ref()
        .and_then(|c| configs.get(c).cloned().flatten());
    if record.tipping == tipping {
        return false;
    }
    record.tipping = tipping;
    record.updated_at = now;
    true
}

impl Fleet {
    /// Sets (`Some`) or removes (`None`) a location's tipping on Stripe, then records it.
    pub async fn set_tipping(
        &self,
        id: &str,
        tipping: Option<LocationTipping>,
        caller_key: Option<&str>,
    ) -> Result<LocationRecord, FleetError> {
        if let Some(t) = &tipping {
            validate(t)?;
        }
        let loc = self.location(id)?.ok_or_else(|| FleetError::NotFound {
            kind: "location",
            id: id.to_string(),
        })?;
        if loc.gone {
            return Err(FleetError::Conflict(format!(
                "location {id} is gone from Stripe"
            )));
        }
        let opts = self.owner_options(loc.owner.as_deref())?;
        let pending = loc.tipping_write.clone();
        // The configuration this location uses: the attached one, else one a write created
        // before it could attach it.
        let mut configuration = loc
            .configuration
            .clone()
            .or_else(|| pending.as_ref().and_then(|w| w.configuration.clone()));
        if let Some(c) = &configuration {
            let shared: Vec<String> = self
                .locations()?
                .into_iter()
                .filter(|l| l.id != id && !l.gone && l.configuration.as_deref() == Some(c))
                .map(|l| l.id)
                .collect();
            if !shared.is_empty() {
                return Err(FleetError::Conflict(format!(
                    "location {id} uses configuration {c}, which location(s) {} use too: readerd changes a location's own configuration only",
                    shared.join(", ")
                )));
            }
        }
        // What the configuration holds now, when this write knows it.
        let mut holds: Option<Option<LocationTipping>> = None;
        if configuration.is_none() {
            let Some(want) = &tipping else {
                return self.record_tipping(id, None, None);
            };
            // An interrupted create is replayed with its own key and parameters, so Stripe
            // answers with the configuration it made then.
            let (key, sent) = match &pending {
                Some(w) if w.step == TippingStep::Create => (
                    w.key.clone(),
                    w.tipping.clone().unwrap_or_else(|| want.clone()),
                ),
                _ => (stripe_key("configuration", caller_key), want.clone()),
            };
            self.write_step(id, TippingStep::Create, &key, None, Some(&sent))?;
            let created = self
                .observed(self.stripe.create_configuration(
                    &CreateConfiguration {
                        tipping: to_wire(&sent),
                    },
                    &opts.clone().key(key),
                ))
                .await
                .map_err(|e| self.step_failed(id, e))?;
            tracing::info!(location = %id, configuration = %created.id, "terminal configuration created");
            holds = Some(from_wire(&created));
            configuration = Some(created.id);
        }
        let cfg = configuration.unwrap_or_default();
        if holds.as_ref() != Some(&tipping) {
            let key = match &pending {
                Some(w)
                    if w.step == TippingStep::Update
                        && w.configuration.as_deref() == Some(&cfg)
                        && w.tipping == tipping =>
                {
                    w.key.clone()
                }
                _ => stripe_key("configuration-update", caller_key),
            };
            self.write_step(id, TippingStep::Update, &key, Some(&cfg), tipping.as_ref())?;
            let updated = self
                .observed(self.stripe.update_configuration(
                    &cfg,
                    &UpdateConfiguration {
                        tipping: tipping.as_ref().map(to_wire),
                    },
                    &opts.clone().key(key),
                ))
                .await
                .map_err(|e| self.step_failed(id, e))?;
            holds = Some(from_wire(&updated));
        }
        if loc.configuration.as_deref() != Some(&cfg) {
            let key = match &pending {
                Some(w)
                    if w.step == TippingStep::Attach
                        && w.configuration.as_deref() == Some(&cfg) =>
                {
                    w.key.clone()
                }
                _ => stripe_key("location-configuration", caller_key),
            };
            self.write_step(id, TippingStep::Attach, &key, Some(&cfg), tipping.as_ref())?;
            let attached = self
                .observed(self.stripe.update_location(
                    id,
                    &UpdateLocation {
                        configuration_overrides: Some(cfg.clone()),
                        ..Default::default()
                    },
                    &opts.clone().key(key),
                ))
                .await
                .map_err(|e| self.step_failed(id, e))?;
            tracing::info!(location = %id, configuration = ?attached.configuration_overrides, "terminal configuration attached");
        }
        self.record_tipping(id, Some(cfg), holds.flatten())
    }

    /// Puts a step and its key on disk before the step is sent.
    fn write_step(
        &self,
        id: &str,
        step: TippingStep,
        key: &str,
        configuration: Option<&str>,
        tipping: Option<&LocationTipping>,
    ) -> Result<(), FleetError> {
        let _w = self.writing();
        let mut rec = self.location(id)?.ok_or_else(|| FleetError::NotFound {
            kind: "location",
            id: id.to_string(),
        })?;
        rec.tipping_write = Some(TippingWrite {
            step,
            key: key.to_string(),
            configuration: configuration.map(str::to_string),
            tipping: tipping.cloned(),
        });
        self.registry.put(Tree::Locations, id, &rec)?;
        Ok(())
    }

    /// A step that failed: one Stripe refused for good is forgotten, so the next write
    /// starts afresh with a new key; any other (no answer, a 5xx) keeps its key for the
    /// replay.
    fn step_failed(&self, id: &str, e: StripeError) -> FleetError {
        if e.disposition() == Disposition::Definitive {
            let _w = self.writing();
            let forgotten = self.location(id).and_then(|rec| match rec {
                Some(mut rec) if rec.tipping_write.is_some() => {
                    rec.tipping_write = None;
                    Ok(self.registry.put(Tree::Locations, id, &rec)?)
                }
                _ => Ok(()),
            });
            if let Err(err) = forgotten {
                tracing::warn!(location = %id, error = %err, "a refused tipping step could not be forgotten");
            }
        }
        e.into()
    }

    /// Records the finished write: the attached configuration and its tipping.
    fn record_tipping(
        &self,
        id: &str,
        configuration: Option<String>,
        tipping: Option<LocationTipping>,
    ) -> Result<LocationRecord, FleetError> {
        let _w = self.writing();
        let mut rec = self.location(id)?.ok_or_else(|| FleetError::NotFound {
            kind: "location",
            id: id.to_string(),
        })?;
        rec.configuration = configuration;
        rec.tipping = tipping;
        rec.tipping_write = None;
        rec.updated_at = Timestamp::now();
        self.registry.put(Tree::Locations, id, &rec)?;
        tracing::info!(location = %id, configuration = ?rec.configuration, tipping = rec.tipping.is_some(), "location tipping set");
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(p: Option<Vec<i64>>, f: Option<Vec<i64>>, th: Option<i64>) -> LocationTipping {
        BTreeMap::from([(
            "usd".to_string(),
            TipSuggestions {
                percentages: p,
                fixed_amounts: f,
                smart_tip_threshold: th,
            },
        )])
    }

    #[test]
    fn stripes_limits_are_checked_before_anything_is_sent() {
        assert!(validate(&usd(Some(vec![10, 15, 20]), None, None)).is_ok());
        assert!(validate(&usd(
            Some(vec![10, 15, 20]),
            Some(vec![100, 200]),
            Some(1000)
        ))
        .is_ok());
        for bad in [
            usd(Some(vec![5, 10, 15, 20]), None, None),
            usd(None, Some(vec![100, 200, 300, 400]), None),
            usd(Some(vec![]), None, None),
            usd(Some(vec![0, 10]), None, None),
            usd(None, Some(vec![-100]), None),
            usd(None, None, None),
            usd(Some(vec![10]), None, Some(1000)),
            usd(Some(vec![10]), Some(vec![100]), Some(-1)),
            LocationTipping::new(),
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
        let mut other_currency = usd(Some(vec![10]), None, None);
        other_currency.insert("xyz".into(), TipSuggestions::default());
        assert!(validate(&other_currency).is_err());
        let mut upper = LocationTipping::new();
        upper.insert(
            "USD".into(),
            TipSuggestions {
                percentages: Some(vec![10]),
                ..Default::default()
            },
        );
        assert!(validate(&upper).is_err());
        // Stripe: the same keys for every currency.
        let mut mixed = usd(Some(vec![10]), None, None);
        mixed.insert(
            "eur".into(),
            TipSuggestions {
                fixed_amounts: Some(vec![100]),
                ..Default::default()
            },
        );
        assert!(validate(&mixed).is_err());
        let mut same = usd(Some(vec![10]), None, None);
        same.insert(
            "eur".into(),
            TipSuggestions {
                percentages: Some(vec![5, 10]),
                ..Default::default()
            },
        );
        assert!(validate(&same).is_ok());
    }

    #[test]
    fn a_configuration_without_suggestions_has_no_tipping() {
        let c: TerminalConfiguration = serde_json::from_value(serde_json::json!({
            "id": "tmc_1", "object": "terminal.configuration", "livemode": false,
            "is_account_default": false,
            "tipping": {"usd": {"percentages": [10, 15, 20]}, "eur": null, "gbp": {}}
        }))
        .unwrap();
        assert_eq!(from_wire(&c), Some(usd(Some(vec![10, 15, 20]), None, None)));
        let none: TerminalConfiguration = serde_json::from_value(serde_json::json!({
            "id": "tmc_2", "object": "terminal.configuration", "livemode": false
        }))
        .unwrap();
        assert_eq!(from_wire(&none), None);
    }
}
