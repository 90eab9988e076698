//! Connect money movements: the transfer and application fee of a captured charge, their
//! reversal and refund in proportion to a refund, and the books that say who holds what.
//!
//! As Stripe documents it: a destination charge (`transfer_data[destination]`) transfers
//! the captured amount (or `transfer_data[amount]`) from the platform to the destination
//! once captured; an `application_fee_amount` is then collected from the account that
//! received the funds (the destination, or the connected account of a direct charge) by the
//! platform. A refund is paid by the account that owns the charge; with `reverse_transfer`
//! it pulls back a share of the transfer proportional to the refunded share of the charge,
//! with `refund_application_fee` it gives back the same share of the fee. Proportional
//! amounts are computed on the cumulative refunded amount and rounded half up, so that the
//! refunds of a whole charge reverse the whole transfer and refund the whole fee, to the
//! unit (Stripe does not document its rounding).
//!
//! Stripe's processing fees are not modelled: the books hold only these movements.

use super::*;
use crate::stripe::wire::*;
use serde_json::Value;

/// One account's movements in one currency, in minor units, signed from its side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Book {
    /// Captured charges that settled on this account.
    pub charges: i64,
    /// Refunds paid out of this account (negative).
    pub refunds: i64,
    /// Transfers received (positive) or sent (negative, the platform).
    pub transfers: i64,
    /// Transfer reversals: given back (negative) or recovered (positive, the platform).
    pub transfer_reversals: i64,
    /// Application fees collected (positive, the platform) or paid (negative).
    pub application_fees: i64,
    /// Application fee refunds: paid back (negative, the platform) or received (positive).
    pub application_fee_refunds: i64,
    /// The sum of the above: what the account holds from these movements.
    pub net: i64,
}

impl Book {
    fn total(&mut self) {
        self.net = self.charges
            + self.refunds
            + self.transfers
            + self.transfer_reversals
            + self.application_fees
            + self.application_fee_refunds;
    }
}

/// Per account (`platform` or `acct_…`), per currency.
pub type Books = BTreeMap<String, BTreeMap<String, Book>>;

/// What a refund asks of the charge's transfer and fee, checked before anything moves.
#[derive(Clone, Copy, Debug, Default)]
pub struct RefundConnect {
    pub reverse_transfer: bool,
    pub refund_application_fee: bool,
}

/// `part` of `whole` applied to `amount`, rounded half up (all non-negative).
fn share(amount: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return 0;
    }
    let (a, p, w) = (amount as i128, part as i128, whole as i128);
    ((2 * a * p + w) / (2 * w)) as i64
}

impl State {
    fn book(&mut self, owner: &Option<String>, currency: &str, f: impl FnOnce(&mut Book)) {
        let key = owner.clone().unwrap_or_else(|| "platform".into());
        let b = self
            .books
            .entry(key)
            .or_default()
            .entry(currency.to_string())
            .or_default();
        f(b);
        b.total();
    }

    /// Books a charge that was just captured, and makes its transfer (destination charges)
    /// and its application fee (when the PaymentIntent asked for one).
    pub(super) fn charge_captured(&mut self, charge_id: &str) {
        let Some(ch) = self.charges.get(charge_id) else {
            return;
        };
        let owner = ch.owner.clone();
        let amount = ch.obj.amount_captured;
        let currency = ch.obj.currency.clone();
        let Some(pi) = ch
            .obj
            .payment_intent
            .as_ref()
            .and_then(|p| self.intents.get(p))
        else {
            return;
        };
        let fee = pi
            .obj
            .application_fee_amount
            .map(|f| f.min(amount))
            .filter(|f| *f > 0);
        let transfer = pi.obj.transfer_data.as_ref().map(|t| {
            (
                t.destination.id().to_string(),
                t.amount.unwrap_or(amount).min(amount),
            )
        });
        self.book(&owner, &currency, |b| b.charges += amount);
        // The fee comes out of the account that received the funds.
        let payer = match &transfer {
            Some((dest, _)) => Some(dest.clone()),
            None => owner.clone(),
        };
        let mut transfer_id = None;
        if let Some((dest, t_amount)) = transfer {
            let id = self.id("tr");
            let seq = self.next_seq();
            self.transfers.insert(
                id.clone(),
                Rec {
                    owner: None,
                    seq,
                    obj: Transfer {
                        id: id.clone(),
                        object: "transfer".into(),
                        amount: t_amount,
                        amount_reversed: 0,
                        created: now_secs(),
                        currency: currency.clone(),
                        description: None,
                        destination: Expandable::Id(dest.clone()),
                        livemode: false,
                        metadata: Metadata::new(),
                        reversed: false,
                        source_transaction: Some(charge_id.to_string()),
                        transfer_group: None,
                    },
                },
            );
            self.book(&None, &currency, |b| b.transfers -= t_amount);
            self.book(&Some(dest), &currency, |b| b.transfers += t_amount);
            transfer_id = Some(id);
        }
        let mut fee_id = None;
        if let (Some(fee), Some(payer)) = (fee, payer) {
            let id = self.id("fee");
            let seq = self.next_seq();
            self.application_fees.insert(
                id.clone(),
                Rec {
                    owner: None,
                    seq,
                    obj: ApplicationFee {
                        id: id.clone(),
                        object: "application_fee".into(),
                        account: Expandable::Id(payer.clone()),
                        amount: fee,
                        amount_refunded: 0,
                        charge: charge_id.to_string(),
                        created: now_secs(),
                        currency: currency.clone(),
                        livemode: false,
                        refunded: false,
                    },
                },
            );
            self.book(&Some(payer), &currency, |b| b.application_fees -= fee);
            self.book(&None, &currency, |b| b.application_fees += fee);
            fee_id = Some(id);
        }
        if let Some(ch) = self.charges.get_mut(charge_id) {
            ch.obj.transfer = transfer_id.map(Expandable::Id);
            ch.obj.application_fee_amount = fee;
            ch.obj.application_fee = fee_id.map(Expandable::Id);
        }
    }

    /// Stripe's refusals for what a refund asks of the charge's transfer and fee.
    pub(super) fn check_refund_connect(&self, charge: &Charge, c: RefundConnect) -> Res<()> {
        let has_transfer = charge.transfer.is_some();
        if c.reverse_transfer && !has_transfer {
            return Err(SimError::invalid(
                None,
                format!("The charge {} has no transfer to reverse: reverse_transfer applies only to a charge made with transfer_data[destination].", charge.id),
            )
            .with_param("reverse_transfer"));
        }
        if c.refund_application_fee && has_transfer && !c.reverse_transfer {
            return Err(SimError::invalid(
                None,
                format!("Refunding the application fee of the destination charge {} also requires reversing its transfer: set reverse_transfer to true.", charge.id),
            )
            .with_param("refund_application_fee"));
        }
        Ok(())
    }

    /// Books a refund of `amount` on `charge_id` (whose `amount_refunded` already includes
    /// it) and makes what it asked for: the transfer reversal (its id is returned) and the
    /// application fee refund, each proportional to the refunded share of the charge.
    pub(super) fn refund_booked(
        &mut self,
        charge_id: &str,
        amount: i64,
        c: RefundConnect,
    ) -> Option<String> {
        let ch = self.charges.get(charge_id)?;
        let owner = ch.owner.clone();
        let currency = ch.obj.currency.clone();
        let captured = ch.obj.amount_captured;
        let refunded = ch.obj.amount_refunded;
        let transfer = ch.obj.transfer.as_ref().map(|t| t.id().to_string());
        let fee = ch.obj.application_fee.as_ref().map(|f| f.id().to_string());
        self.book(&owner, &currency, |b| b.refunds -= amount);
        let mut reversal = None;
        if c.reverse_transfer {
            let moved = transfer.and_then(|t| self.transfers.get_mut(&t)).map(|t| {
                let tr = &mut t.obj;
                let target = share(tr.amount, refunded, captured).min(tr.amount);
                let x = (target - tr.amount_reversed).max(0);
                tr.amount_reversed += x;
                tr.reversed = tr.amount_reversed >= tr.amount;
                (Some(tr.destination.id().to_string()), x)
            });
            if let Some((dest, x)) = moved {
                self.book(&dest, &currency, |b| b.transfer_reversals -= x);
                self.book(&None, &currency, |b| b.transfer_reversals += x);
                reversal = Some(self.id("trr"));
            }
        }
        if c.refund_application_fee {
            let moved = fee
                .and_then(|f| self.application_fees.get_mut(&f))
                .map(|f| {
                    let fee = &mut f.obj;
                    let target = share(fee.amount, refunded, captured).min(fee.amount);
                    let y = (target - fee.amount_refunded).max(0);
                    fee.amount_refunded += y;
                    fee.refunded = fee.amount_refunded >= fee.amount;
                    (Some(fee.account.id().to_string()), y)
                });
            if let Some((payer, y)) = moved {
                self.book(&None, &currency, |b| b.application_fee_refunds -= y);
                self.book(&payer, &currency, |b| b.application_fee_refunds += y);
            }
        }
        reversal
    }

    /// `GET /_sim/balances`: every account's book per currency.
    pub fn balances(&self) -> Books {
        self.books.clone()
    }

    pub fn get_transfer(&self, scope: &Option<String>, id: &str) -> Res<Value> {
        match self.transfers.get(id) {
            Some(t) if &t.owner == scope => Ok(to_value(&t.obj)),
            _ => Err(SimError::no_such("transfer", id, Some("id"))),
        }
    }

    const TRANSFER_PARAMS: &'static [&'static str] = &[
        "amount",
        "currency",
        "destination",
        "description",
        "metadata",
        "source_transaction",
        "transfer_group",
    ];

    /// `POST /v1/transfers` (separate charges and transfers), with Stripe's rules: the
    /// platform only; the destination a connected account whose `transfers` capability is
    /// active; a `source_transaction` a succeeded charge of the platform in the same
    /// currency, which all transfers from it together cannot exceed.
    pub fn create_transfer(&mut self, scope: &Option<String>, f: &Form) -> Res<Value> {
        f.only(Self::TRANSFER_PARAMS)?;
        let amount = f
            .int(&["amount"])?
            .ok_or_else(|| SimError::missing("amount"))?;
        let currency = f.req_str(&["currency"])?.to_ascii_lowercase();
        let destination = f.req_str(&["destination"])?.to_string();
        if amount <= 0 {
            return Err(SimError::param(
                Some("parameter_invalid_integer"),
                "amount",
                "This value must be greater than or equal to 1.",
            ));
        }
        if scope.is_some() {
            return Err(SimError::invalid(
                None,
                "Transfers are made by the platform: this request cannot be made with Stripe-Account.",
            ));
        }
        let Some(acct) = self.accounts.get(&destination) else {
            return Err(SimError::param(
                None,
                "destination",
                format!("No such destination: '{destination}'"),
            ));
        };
        let transfers_active = matches!(
            acct.obj
                .capabilities
                .as_ref()
                .and_then(|c| c.transfers.as_ref()),
            Some(CapabilityStatus::Active)
        );
        if !transfers_active {
            return Err(SimError::invalid(
                Some("insufficient_capabilities_for_transfer"),
                format!("Your destination account needs to have at least one of the following capabilities enabled: transfers, crypto_transfers, legacy_payments ({destination})."),
            )
            .with_param("destination"));
        }
        let source = f.str(&["source_transaction"]).map(str::to_string);
        if let Some(src) = &source {
            let ch = match self.charges.get(src) {
                Some(c) if c.owner.is_none() => &c.obj,
                _ => return Err(SimError::no_such("charge", src, Some("source_transaction"))),
            };
            if ch.status != "succeeded" || !ch.captured {
                return Err(SimError::invalid(
                    None,
                    format!("The source_transaction {src} must be a succeeded, captured charge."),
                )
                .with_param("source_transaction"));
            }
            if ch.currency != currency {
                return Err(SimError::invalid(
                    None,
                    format!("The currency of source_transaction {src} ({}) must match the transfer's currency ({currency}).", ch.currency),
                )
                .with_param("currency"));
            }
            let already: i64 = self
                .transfers
                .values()
                .filter(|t| t.obj.source_transaction.as_deref() == Some(src))
                .map(|t| t.obj.amount)
                .sum();
            if already + amount > ch.amount_captured {
                return Err(SimError::invalid(
                    Some("transfer_source_balance_parameters_mismatch"),
                    format!("Transfers using source_transaction {src} cannot exceed its amount: {} already transferred of {}, {amount} asked.", already, ch.amount_captured),
                )
                .with_param("amount"));
            }
        }
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let id = self.id("tr");
        let seq = self.next_seq();
        let t = Transfer {
            id: id.clone(),
            object: "transfer".into(),
            amount,
            amount_reversed: 0,
            created: now_secs(),
            currency: currency.clone(),
            description: f.str(&["description"]).map(str::to_string),
            destination: Expandable::Id(destination.clone()),
            livemode: false,
            metadata,
            reversed: false,
            source_transaction: source,
            transfer_group: f.str(&["transfer_group"]).map(str::to_string),
        };
        self.transfers.insert(
            id.clone(),
            Rec {
                owner: None,
                seq,
                obj: t,
            },
        );
        self.book(&None, &currency, |b| b.transfers -= amount);
        self.book(&Some(destination), &currency, |b| b.transfers += amount);
        let v = to_value(&self.transfers[&id].obj);
        self.emit("transfer.created", None, v.clone());
        Ok(v)
    }

    /// `GET /v1/transfers`: the platform's transfers, newest first, optionally of one
    /// `transfer_group` or `destination`.
    pub fn list_transfers(&self, scope: &Option<String>, f: &Form) -> Res<Value> {
        let mut recs: Vec<_> = self
            .transfers
            .values()
            .filter(|t| &t.owner == scope)
            .filter(|t| {
                f.str(&["transfer_group"])
                    .is_none_or(|g| t.obj.transfer_group.as_deref() == Some(g))
            })
            .filter(|t| {
                f.str(&["destination"])
                    .is_none_or(|d| t.obj.destination.id() == d)
            })
            .collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let items = recs
            .into_iter()
            .map(|r| (r.obj.id.clone(), r.obj.clone()))
            .collect();
        paginate(items, f, "/v1/transfers")
    }

    /// `POST /v1/transfers/{id}/reversals`: at most what is left of the transfer (all of it
    /// without `amount`).
    pub fn create_reversal(&mut self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        f.only(&[
            "amount",
            "description",
            "metadata",
            "refund_application_fee",
        ])?;
        let asked = f.int(&["amount"])?;
        let (left, currency, dest) = match self.transfers.get(id) {
            Some(t) if &t.owner == scope => (
                t.obj.amount - t.obj.amount_reversed,
                t.obj.currency.clone(),
                t.obj.destination.id().to_string(),
            ),
            _ => return Err(SimError::no_such("transfer", id, Some("id"))),
        };
        let amount = asked.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(SimError::invalid(
                None,
                format!("You have requested a reversal of {amount}, but only {left} of transfer {id} is left to reverse."),
            )
            .with_param("amount"));
        }
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let rid = self.id("trr");
        let seq = self.next_seq();
        let r = TransferReversal {
            id: rid.clone(),
            object: "transfer_reversal".into(),
            amount,
            created: now_secs(),
            currency: currency.clone(),
            metadata,
            transfer: Expandable::Id(id.to_string()),
        };
        self.transfer_reversals.insert(
            rid.clone(),
            Rec {
                owner: None,
                seq,
                obj: r.clone(),
            },
        );
        if let Some(t) = self.transfers.get_mut(id) {
            t.obj.amount_reversed += amount;
            t.obj.reversed = t.obj.amount_reversed >= t.obj.amount;
        }
        self.book(&Some(dest), &currency, |b| b.transfer_reversals -= amount);
        self.book(&None, &currency, |b| b.transfer_reversals += amount);
        let t = to_value(&self.transfers[id].obj);
        self.emit("transfer.reversed", None, t);
        Ok(to_value(&r))
    }

    /// `GET /v1/transfers/{id}/reversals`, newest first.
    pub fn list_reversals(&self, scope: &Option<String>, id: &str, f: &Form) -> Res<Value> {
        match self.transfers.get(id) {
            Some(t) if &t.owner == scope => {}
            _ => return Err(SimError::no_such("transfer", id, Some("id"))),
        }
        let mut recs: Vec<_> = self
            .transfer_reversals
            .values()
            .filter(|r| r.obj.transfer.id() == id)
            .collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.seq));
        let items = recs
            .into_iter()
            .map(|r| (r.obj.id.clone(), r.obj.clone()))
            .collect();
        paginate(items, f, &format!("/v1/transfers/{id}/reversals"))
    }

    pub fn get_application_fee(&self, scope: &Option<String>, id: &str) -> Res<Value> {
        match self.application_fees.get(id) {
            Some(f) if &f.owner == scope => Ok(to_value(&f.obj)),
            _ => Err(SimError::no_such("application_fee", id, Some("id"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_round_half_up_and_add_up_to_the_whole() {
        assert_eq!(share(30, 400, 1000), 12);
        assert_eq!(share(25, 500, 1000), 13); // 12.5
        assert_eq!(share(25, 333, 1000), 8); // 8.325
        assert_eq!(share(1000, 1000, 1000), 1000);
        assert_eq!(share(7, 0, 1000), 0);
        assert_eq!(share(7, 1, 0), 0);
    }
}
