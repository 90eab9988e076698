//! Connected accounts and Terminal locations.

use super::*;
use crate::stripe::wire::*;
use serde_json::Value;

impl State {
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

    /// A connected account as seen from `scope` (the platform, or the account itself).
    fn connected_account(&self, scope: &Option<String>, id: &str) -> Res<&Account> {
        match (scope, self.accounts.get(id)) {
            (None, Some(rec)) => Ok(&rec.obj),
            (Some(s), Some(rec)) if s == id => Ok(&rec.obj),
            _ => Err(SimError::no_such("account", id, Some("account")).status(404)),
        }
    }

    /// `GET /v1/accounts/{id}/capabilities/{capability}`: Stripe's Capability object, which
    /// unlike the Account's `capabilities` hash also shows `unrequested`.
    pub fn get_capability(&self, scope: &Option<String>, id: &str, cap: &str) -> Res<Value> {
        let acct = self.connected_account(scope, id)?;
        match capability_json(acct, cap) {
            Some(v) => Ok(v),
            None => Err(SimError::no_such("capability", cap, None).status(404)),
        }
    }

    /// `GET /v1/accounts/{id}/capabilities`: every capability the emulator models.
    pub fn list_capabilities(&self, scope: &Option<String>, id: &str) -> Res<Value> {
        let acct = self.connected_account(scope, id)?;
        let data: Vec<Value> = CAPABILITIES
            .iter()
            .filter_map(|c| capability_json(acct, c))
            .collect();
        Ok(serde_json::json!({
            "object": "list",
            "url": format!("/v1/accounts/{id}/capabilities"),
            "has_more": false,
            "data": data,
        }))
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

    /// Turns the account's `transfers` capability on or off (what `POST /v1/transfers` to it
    /// needs).
    pub fn set_transfers_capability(
        &mut self,
        id: &str,
        status: CapabilityStatus,
    ) -> Option<Account> {
        let rec = self.accounts.get_mut(id)?;
        let caps = rec.obj.capabilities.get_or_insert_with(Default::default);
        caps.transfers = Some(status);
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
        let configuration_overrides = self.check_configuration_param(scope, f)?.flatten();
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let loc = Location {
            id: self.id("tml"),
            object: "terminal.location".into(),
            address,
            configuration_overrides,
            display_name,
            livemode: self.livemode,
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
        self.location_mut(scope, id)?;
        let configuration = self.check_configuration_param(scope, f)?;
        let rec = self.location_mut(scope, id)?;
        if let Some(n) = f.str(&["display_name"]) {
            rec.obj.display_name = n.to_string();
        }
        Self::apply_address(f, "address", &mut rec.obj.address);
        if let Some(c) = configuration {
            rec.obj.configuration_overrides = c;
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
}

/// The capabilities the emulator models (the ones readerd's flows touch).
const CAPABILITIES: &[&str] = &["card_payments", "transfers"];

/// A Capability object as Stripe returns it; `None` for a capability not modelled.
fn capability_json(acct: &Account, cap: &str) -> Option<Value> {
    let caps = acct.capabilities.clone().unwrap_or_default();
    let status = match cap {
        "card_payments" => caps.card_payments,
        "transfers" => caps.transfers,
        _ => return None,
    };
    let requested = status.is_some();
    let status = status.map_or("unrequested".to_string(), |s| s.as_str().to_string());
    let disabled_reason = match status.as_str() {
        "active" | "unrequested" => None,
        _ => Some("requirements.pending_verification"),
    };
    Some(serde_json::json!({
        "id": cap,
        "object": "capability",
        "account": acct.id,
        "requested": requested,
        "requested_at": requested.then_some(acct.created).flatten(),
        "status": status,
        "requirements": {
            "alternatives": [],
            "current_deadline": null,
            "currently_due": [],
            "disabled_reason": disabled_reason,
            "errors": [],
            "eventually_due": [],
            "past_due": [],
            "pending_verification": [],
        },
    }))
}
