//! Connection tokens for points of sale that drive a reader through a Terminal SDK instead
//! of the server-driven API: readerd is their backend and makes the token on the account
//! that owns the SDK's payments.
//!
//! The rule: a `direct` merchant's payments live on its connected account, so its token is
//! made there (`Stripe-Account`); `destination` (and every other platform charge) on the
//! platform. A `location` restricts the token to that location's readers and must belong to
//! the same account, else `location_owner_mismatch`. The secret is handed back and never
//! kept: not in the registry, not in a log line, not in a metric.

use super::{stripe_key, ChargeType, Fleet, FleetError};
use crate::stripe::params::CreateConnectionToken;
use crate::stripe::wire::ConnectionToken;
use crate::stripe::RequestOptions;

/// A token made for a merchant, and the account it was made on (`None` = the platform).
#[derive(Debug)]
pub struct IssuedToken {
    pub token: ConnectionToken,
    pub account: Option<String>,
}

impl Fleet {
    /// Makes a connection token for `merchant`'s SDK payments, optionally restricted to
    /// `location`. The caller has checked that it may act for the merchant and see the
    /// location.
    pub async fn connection_token(
        &self,
        merchant: &str,
        location: Option<&str>,
    ) -> Result<IssuedToken, FleetError> {
        let m = self
            .merchant(merchant)?
            .ok_or_else(|| FleetError::NotFound {
                kind: "merchant",
                id: merchant.to_string(),
            })?;
        let account = match m.charge_type {
            ChargeType::Direct => Some(m.account.clone()),
            _ => None,
        };
        if let Some(id) = location {
            let l = self.location(id)?.ok_or_else(|| FleetError::NotFound {
                kind: "location",
                id: id.to_string(),
            })?;
            let location_account = self.owner_account(l.owner.as_deref())?;
            if location_account != account {
                let name = |a: &Option<String>| match a {
                    Some(a) => format!("connected account {a}"),
                    None => "the platform".to_string(),
                };
                return Err(FleetError::OwnerMismatch(format!(
                    "location {id} belongs to {}, but merchant {merchant}'s SDK payments ({} charges) are made on {}: the token's location must belong to that account",
                    name(&location_account),
                    m.charge_type.as_str(),
                    name(&account)
                )));
            }
        }
        let opts = match &account {
            Some(a) => RequestOptions::account(a),
            None => RequestOptions::platform(),
        }
        // A fresh key per call: two tokens are harmless, and nothing is kept to replay.
        .key(stripe_key("connection-token", None));
        let params = CreateConnectionToken {
            location: location.map(str::to_string),
        };
        let token = self
            .observed(self.stripe.create_connection_token(&params, &opts))
            .await?;
        tracing::info!(merchant, account = ?account, location = ?location, "connection token issued");
        Ok(IssuedToken { token, account })
    }
}
