//! `readerd merchants …`, `readerd locations …`, `readerd readers …`: the fleet commands of
//! the API client. Tables by default, the API's JSON with `--json`.

use super::client::{
    block_on, decode, or_dash, print_json, ApiArgs, ApiClient, ClientError, Table,
};
use crate::api::fleet::{LocationView, MerchantView, ReaderView};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct MerchantsCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub action: MerchantsAction,
}

#[derive(Subcommand, Debug)]
pub enum MerchantsAction {
    /// Add a merchant (its Connect account is looked up on Stripe first).
    Add {
        /// readerd's name for it (letters, digits, '-', '_'); or `--id`.
        #[arg(required_unless_present = "id_flag", conflicts_with = "id_flag")]
        id: Option<String>,
        /// The connected account, `acct_…`; or `--account`.
        #[arg(
            required_unless_present = "account_flag",
            conflicts_with = "account_flag"
        )]
        account: Option<String>,
        /// The same as ID, as an option.
        #[arg(long = "id", value_name = "ID")]
        id_flag: Option<String>,
        /// The same as ACCOUNT, as an option.
        #[arg(long = "account", value_name = "ACCOUNT")]
        account_flag: Option<String>,
        /// The name shown in listings (default: the account's business name, or the id).
        #[arg(long)]
        display_name: Option<String>,
        /// `direct` (PaymentIntent on the connected account), `destination`, or `separate`
        /// (on the platform; readerd transfers each merchant's share, baskets allowed).
        #[arg(long, default_value = "direct", value_parser = ["direct", "destination", "separate"])]
        charge_type: String,
        /// Destination charges: who settles them, `merchant` (on_behalf_of the merchant) or
        /// `platform`.
        #[arg(long, value_parser = ["merchant", "platform"])]
        settlement: Option<String>,
        /// A fixed platform fee per payment, in minor units.
        #[arg(long)]
        application_fee_amount: Option<i64>,
        /// The most a reviewed payment may be surcharged at its confirm, in minor units
        /// (absent: no surcharge).
        #[arg(long)]
        surcharge_max: Option<i64>,
    },
    /// List merchants.
    List,
    /// Show one merchant.
    Show { id: String },
    /// Re-check a merchant's account on Stripe now.
    Check { id: String },
}

#[derive(Args, Debug)]
pub struct LocationsCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub action: LocationsAction,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum LocationsAction {
    /// Create a location on Stripe (as the platform, or as `--owner`).
    Create {
        #[arg(long)]
        display_name: String,
        /// Two-letter ISO country code (must be the merchant's account country).
        #[arg(long)]
        country: String,
        #[arg(long)]
        line1: Option<String>,
        #[arg(long)]
        line2: Option<String>,
        #[arg(long)]
        city: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        postal_code: Option<String>,
        /// The merchant it mainly serves (grouping only).
        #[arg(long)]
        merchant: Option<String>,
        /// Who owns it: `platform` (the default) or a merchant, on whose connected account
        /// it is created.
        #[arg(long)]
        owner: Option<String>,
    },
    /// List locations.
    List,
    /// Set a location's tip suggestions in one currency (a Terminal Configuration on
    /// Stripe, attached to the location), or remove them with `--remove`. Several
    /// currencies at once: `POST /v1/locations/{id}` of the API.
    Tipping {
        /// The location, `tml_…`.
        id: String,
        /// The currency of the suggestions (lowercase, as Stripe: usd, eur, gbp, cad, aud…).
        #[arg(long, default_value = "usd")]
        currency: String,
        /// Up to three percentages, comma-separated: `10,15,20`.
        #[arg(long, value_delimiter = ',')]
        percentages: Vec<i64>,
        /// Up to three fixed amounts in minor units, comma-separated: `100,200,300`.
        #[arg(long, value_delimiter = ',')]
        fixed_amounts: Vec<i64>,
        /// In minor units: fixed amounts below it, percentages from it (needs both).
        #[arg(long)]
        smart_tip_threshold: Option<i64>,
        /// Remove the location's tipping (its configuration stays attached).
        #[arg(long, conflicts_with_all = ["percentages", "fixed_amounts", "smart_tip_threshold"])]
        remove: bool,
    },
}

#[derive(Args, Debug)]
pub struct ReadersCmd {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub action: ReadersAction,
}

#[derive(Subcommand, Debug)]
pub enum ReadersAction {
    /// Register a reader on Stripe with its registration code.
    Register {
        /// The code shown on the reader (`simulated-wpe` for a simulated one).
        #[arg(long = "code", alias = "registration-code")]
        code: String,
        #[arg(long)]
        label: Option<String>,
        /// The location, `tml_…`.
        #[arg(long)]
        location: String,
        /// Restrict the reader to these merchants (repeat; default: every merchant).
        #[arg(long = "merchant")]
        merchants: Vec<String>,
        /// Who owns it: `platform` (the default) or a merchant, on whose connected account
        /// it is registered (in a location of the same owner; it serves its owner only).
        #[arg(long)]
        owner: Option<String>,
    },
    /// List readers with their live state.
    List,
    /// Show one reader (by id or label).
    Show { id: String },
    /// Pull every location and reader from Stripe now.
    Sync,
    /// Set which merchants a reader may serve.
    Allow {
        /// The reader, by id or label.
        id: String,
        /// A merchant (repeat).
        #[arg(long = "merchant", required_unless_present = "all")]
        merchants: Vec<String>,
        /// Serve every merchant (clears the list).
        #[arg(long, conflicts_with = "merchants")]
        all: bool,
    },
}

fn path_segment(s: &str) -> String {
    // Ids and labels go into the path; keep them to one segment.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn output<T: serde::de::DeserializeOwned>(
    api: &ApiArgs,
    v: Value,
    table: impl FnOnce(T) -> Table,
) -> Result<(), ClientError> {
    if api.json {
        print_json(&v);
    } else {
        table(decode(v)?).print();
    }
    Ok(())
}

fn merchants_table(list: Vec<MerchantView>) -> Table {
    let mut t = Table::new(&[
        "ID",
        "ACCOUNT",
        "NAME",
        "CHARGE",
        "COUNTRY",
        "CURRENCY",
        "CARD_PAYMENTS",
        "CHARGES",
        "CAN_CHARGE",
    ]);
    for m in list {
        t.row(vec![
            m.id,
            m.account,
            m.display_name,
            m.charge_type.as_str().to_string(),
            or_dash(m.country),
            or_dash(m.default_currency),
            m.card_payments,
            if m.charges_enabled {
                "enabled"
            } else {
                "disabled"
            }
            .to_string(),
            if m.can_charge { "yes" } else { "NO" }.to_string(),
        ]);
    }
    t
}

fn locations_table(list: Vec<LocationView>) -> Table {
    let mut t = Table::new(&["ID", "NAME", "COUNTRY", "CITY", "MERCHANT", "STATE"]);
    for l in list {
        t.row(vec![
            l.id,
            l.display_name,
            or_dash(l.address.country),
            or_dash(l.address.city),
            or_dash(l.merchant),
            if l.gone { "gone" } else { "present" }.to_string(),
        ]);
    }
    t
}

/// A location's tipping, one row per currency.
fn tipping_table(l: LocationView) -> Table {
    let mut t = Table::new(&[
        "LOCATION",
        "CONFIGURATION",
        "CURRENCY",
        "PERCENTAGES",
        "FIXED_AMOUNTS",
        "SMART_TIP_THRESHOLD",
    ]);
    let list =
        |v: Option<Vec<i64>>| v.map(|v| v.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
    let tipping = l.tipping.unwrap_or_default();
    if tipping.is_empty() {
        t.row(vec![
            l.id.clone(),
            or_dash(l.configuration.clone()),
            "-".into(),
            "none".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    for (currency, s) in tipping {
        t.row(vec![
            l.id.clone(),
            or_dash(l.configuration.clone()),
            currency,
            or_dash(list(s.percentages)),
            or_dash(list(s.fixed_amounts)),
            or_dash(s.smart_tip_threshold.map(|n| n.to_string())),
        ]);
    }
    t
}

fn readers_table(list: Vec<ReaderView>) -> Table {
    let mut t = Table::new(&[
        "ID",
        "LABEL",
        "LOCATION",
        "STATUS",
        "LAST_SEEN",
        "BUSY",
        "QUEUE",
        "MERCHANTS",
    ]);
    for r in list {
        let status = if r.gone { "gone".to_string() } else { r.status };
        t.row(vec![
            r.id,
            r.label,
            or_dash(r.location),
            status,
            or_dash(r.last_seen_at),
            if r.busy { "busy" } else { "idle" }.to_string(),
            r.queue_depth.to_string(),
            r.merchants
                .map(|m| m.join(","))
                .unwrap_or_else(|| "(all)".to_string()),
        ]);
    }
    t
}

impl MerchantsCmd {
    pub fn run(self) -> ExitCode {
        block_on(async move {
            let c = ApiClient::new(&self.api)?;
            let a = &self.api;
            match self.action {
                MerchantsAction::Add {
                    id,
                    account,
                    id_flag,
                    account_flag,
                    display_name,
                    charge_type,
                    settlement,
                    application_fee_amount,
                    surcharge_max,
                } => {
                    let id = id.or(id_flag);
                    let account = account.or(account_flag);
                    let mut body =
                        json!({"id": id, "account": account, "charge_type": charge_type});
                    if let Some(n) = display_name {
                        body["display_name"] = json!(n);
                    }
                    if let Some(s) = settlement {
                        body["settlement"] = json!(s);
                    }
                    if let Some(f) = application_fee_amount {
                        body["application_fee_amount"] = json!(f);
                    }
                    if let Some(m) = surcharge_max {
                        body["surcharge_max"] = json!(m);
                    }
                    let v = c.post("/v1/merchants", &body).await?;
                    output(a, v, |m: MerchantView| merchants_table(vec![m]))
                }
                MerchantsAction::List => output(a, c.get("/v1/merchants").await?, merchants_table),
                MerchantsAction::Show { id } => {
                    let v = c
                        .get(&format!("/v1/merchants/{}", path_segment(&id)))
                        .await?;
                    output(a, v, |m: MerchantView| merchants_table(vec![m]))
                }
                MerchantsAction::Check { id } => {
                    let v = c
                        .post_empty(&format!("/v1/merchants/{}/check", path_segment(&id)))
                        .await?;
                    output(a, v, |m: MerchantView| merchants_table(vec![m]))
                }
            }
        })
    }
}

impl LocationsCmd {
    pub fn run(self) -> ExitCode {
        block_on(async move {
            let c = ApiClient::new(&self.api)?;
            let a = &self.api;
            match self.action {
                LocationsAction::Create {
                    display_name,
                    country,
                    line1,
                    line2,
                    city,
                    state,
                    postal_code,
                    merchant,
                    owner,
                } => {
                    let mut address = json!({"country": country});
                    for (k, v) in [
                        ("line1", line1),
                        ("line2", line2),
                        ("city", city),
                        ("state", state),
                        ("postal_code", postal_code),
                    ] {
                        if let Some(v) = v {
                            address[k] = json!(v);
                        }
                    }
                    let mut body = json!({"display_name": display_name, "address": address});
                    if let Some(m) = merchant {
                        body["merchant"] = json!(m);
                    }
                    if let Some(o) = owner {
                        body["owner"] = json!(o);
                    }
                    let v = c.post("/v1/locations", &body).await?;
                    output(a, v, |l: LocationView| locations_table(vec![l]))
                }
                LocationsAction::List => output(a, c.get("/v1/locations").await?, locations_table),
                LocationsAction::Tipping {
                    id,
                    currency,
                    percentages,
                    fixed_amounts,
                    smart_tip_threshold,
                    remove,
                } => {
                    let tipping = if remove {
                        Value::Null
                    } else {
                        let mut s = json!({});
                        if !percentages.is_empty() {
                            s["percentages"] = json!(percentages);
                        }
                        if !fixed_amounts.is_empty() {
                            s["fixed_amounts"] = json!(fixed_amounts);
                        }
                        if let Some(th) = smart_tip_threshold {
                            s["smart_tip_threshold"] = json!(th);
                        }
                        json!({ currency: s })
                    };
                    let v = c
                        .post(&format!("/v1/locations/{id}"), &json!({"tipping": tipping}))
                        .await?;
                    output(a, v, tipping_table)
                }
            }
        })
    }
}

impl ReadersCmd {
    pub fn run(self) -> ExitCode {
        block_on(async move {
            let c = ApiClient::new(&self.api)?;
            let a = &self.api;
            match self.action {
                ReadersAction::Register {
                    code,
                    label,
                    location,
                    merchants,
                    owner,
                } => {
                    let mut body = json!({"registration_code": code, "location": location});
                    if let Some(l) = label {
                        body["label"] = json!(l);
                    }
                    if !merchants.is_empty() {
                        body["merchants"] = json!(merchants);
                    }
                    if let Some(o) = owner {
                        body["owner"] = json!(o);
                    }
                    let v = c.post("/v1/readers", &body).await?;
                    output(a, v, |r: ReaderView| readers_table(vec![r]))
                }
                ReadersAction::List => output(a, c.get("/v1/readers").await?, readers_table),
                ReadersAction::Show { id } => {
                    let v = c.get(&format!("/v1/readers/{}", path_segment(&id))).await?;
                    output(a, v, |r: ReaderView| readers_table(vec![r]))
                }
                ReadersAction::Sync => {
                    let v = c.post_empty("/v1/readers/sync").await?;
                    if a.json {
                        print_json(&v);
                    } else {
                        let mut t = Table::new(&["KIND", "ADDED", "UPDATED", "GONE", "UNCHANGED"]);
                        for kind in ["locations", "readers"] {
                            let k = &v[kind];
                            t.row(vec![
                                kind.to_string(),
                                k["added"].to_string(),
                                k["updated"].to_string(),
                                k["gone"].to_string(),
                                k["unchanged"].to_string(),
                            ]);
                        }
                        t.print();
                    }
                    Ok(())
                }
                ReadersAction::Allow { id, merchants, all } => {
                    let body = if all {
                        json!({"merchants": null})
                    } else {
                        json!({"merchants": merchants})
                    };
                    let v = c
                        .post(&format!("/v1/readers/{}", path_segment(&id)), &body)
                        .await?;
                    output(a, v, |r: ReaderView| readers_table(vec![r]))
                }
            }
        })
    }
}
