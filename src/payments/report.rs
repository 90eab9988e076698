//! The settlement report: who holds what from readerd's payments in a period, one row per
//! merchant and currency, computed from readerd's own records (payments and refunds), with
//! no Stripe call. Each row sums payments that `readerd payments list --merchant …` shows.
//!
//! A payment belongs to the period in which it was created (`from` inclusive, `to`
//! exclusive); its refunds and reversals count with it, whenever they were made. Only money
//! that moved counts: succeeded payments, refunds that went through or whose outcome is
//! still unknown (never paid twice), transfers and reversals that Stripe confirmed.
//!
//! Per row, `gross - refunded - fees - pending_transfer = net`, where `net` is what the
//! merchant holds from these payments and `fees` what the platform keeps, so the platform's
//! holding in a currency is the sum of `fees` (and of `pending_transfer`, owed) over its
//! rows:
//! - a direct charge: the merchant holds the charge less refunds and the application fee
//!   (its refunds do not give the fee back); nothing is transferred;
//! - a destination charge: the whole capture is transferred; a refund reverses the same
//!   amount and gives back the fee in proportion (rounded half up, on the cumulative
//!   refunded amount, as Stripe and the emulator do);
//! - a separate charge: each split's transfer (the captured share less the fee) and its
//!   reversals, as recorded; a transfer not made yet (still being tried, or left for the
//!   operator) shows as `pending_transfer`, held by the platform meanwhile.
//!
//! Against Stripe's balance transactions for the same payments, in a connected account's
//! balance: `transfer`/`payment` (destination and separate) or `charge` (direct) lines sum
//! to `gross` or `transferred`; `transfer_refund`/`payment_refund` lines to `reversed`;
//! `refund` lines (direct) to `refunded`; `application_fee` lines to the fees charged. In
//! the platform's balance: `charge` lines (destination, separate) less `transfer` lines
//! plus `transfer_refund` lines, less `refund` lines, plus `application_fee` less
//! `application_fee_refund` lines, is the sum of `fees` and `pending_transfer`. Stripe's own processing fees are
//! outside readerd's records and the report. Stripe dates each line by when it happened,
//! the report by the payment: a refund made after `to` is in the report, and in a later
//! period of Stripe's.

use super::machine::{ChargeType, Payment, Status};
use super::refunds::RefundRecord;
use super::splits::{share, TransferStatus};
use crate::clock::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One merchant's money in one currency over the period (minor units).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Row {
    pub merchant: String,
    pub currency: String,
    /// Payments (or baskets with a share of this merchant) that captured money.
    pub payments: u64,
    /// Captured (the merchant's share of a basket, tip included when it is theirs).
    pub gross: i64,
    pub refunded: i64,
    /// What the platform keeps: application fees net of their refunds.
    pub fees: i64,
    pub transferred: i64,
    pub reversed: i64,
    /// Separate charges: transfers owed and not made yet.
    pub pending_transfer: i64,
    /// What the merchant holds: `gross - refunded - fees - pending_transfer`.
    pub net: i64,
}

/// What to report on.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub from: Timestamp,
    pub to: Timestamp,
    /// One merchant only.
    pub merchant: Option<String>,
    /// Only these merchants (a pos client's); `None` = every merchant.
    pub scope: Option<Vec<String>>,
}

impl Query {
    fn wants(&self, merchant: &str) -> bool {
        self.merchant.as_deref().is_none_or(|m| m == merchant)
            && self
                .scope
                .as_ref()
                .is_none_or(|s| s.iter().any(|x| x == merchant))
    }
}

/// The report's rows, sorted by merchant and currency. `refunds` may hold any payment's
/// refunds: each payment takes its own.
pub fn settlement(payments: &[Payment], refunds: &[RefundRecord], q: &Query) -> Vec<Row> {
    let mut by_payment: BTreeMap<&str, Vec<&RefundRecord>> = BTreeMap::new();
    for r in refunds {
        by_payment.entry(r.payment.as_str()).or_default().push(r);
    }
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for p in payments {
        if p.status != Status::Succeeded
            || p.amount_captured <= 0
            || p.created_at < q.from
            || p.created_at >= q.to
        {
            continue;
        }
        let mine = by_payment.get(p.id.as_str()).cloned().unwrap_or_default();
        let mut add = |merchant: &str, f: &dyn Fn(&mut Row)| {
            if !q.wants(merchant) {
                return;
            }
            let row = rows
                .entry((merchant.to_string(), p.currency.clone()))
                .or_insert_with(|| Row {
                    merchant: merchant.to_string(),
                    currency: p.currency.clone(),
                    ..Row::default()
                });
            row.payments += 1;
            f(row);
        };
        let refunded: i64 = mine
            .iter()
            .filter(|r| r.status.commits_money() && r.split.is_none())
            .map(|r| r.amount)
            .sum::<i64>()
            .min(p.amount_captured);
        let fee = p.application_fee_amount.unwrap_or(0).min(p.amount_captured);
        match p.charge_type {
            ChargeType::Direct => add(&p.merchant, &|row| {
                row.gross += p.amount_captured;
                row.refunded += refunded;
                row.fees += fee;
            }),
            ChargeType::Destination => add(&p.merchant, &|row| {
                row.gross += p.amount_captured;
                row.refunded += refunded;
                row.fees += fee - share(fee, refunded, p.amount_captured).min(fee);
                row.transferred += p.amount_captured;
                row.reversed += refunded;
            }),
            ChargeType::Separate => {
                for s in &p.splits {
                    // A transfer still owed, less the share of it that refunds made
                    // since no longer owe (a refund before the transfer has nothing to
                    // reverse).
                    let pending = match s.transfer_status {
                        TransferStatus::Succeeded | TransferStatus::None => 0,
                        _ => {
                            let t = s.transfer_amount();
                            t - share(t, s.refunded, s.captured).min(t)
                        }
                    };
                    add(&s.merchant, &|row| {
                        row.gross += s.captured;
                        row.refunded += s.refunded;
                        row.transferred += s.transferred;
                        row.reversed += s.reversed;
                        row.pending_transfer += pending;
                        let net = s.transferred - s.reversed;
                        row.fees += s.captured - s.refunded - net - pending;
                    });
                }
            }
        }
    }
    rows.into_values()
        .map(|mut r| {
            r.net = r.gross - r.refunded - r.fees - r.pending_transfer;
            r
        })
        .collect()
}

/// The rows as CSV, with a header line (merchant ids and currencies hold no commas or
/// quotes; they are quoted anyway when they do).
pub fn to_csv(rows: &[Row]) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from(
        "merchant,currency,payments,gross,refunded,fees,transferred,reversed,pending_transfer,net\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            field(&r.merchant),
            field(&r.currency),
            r.payments,
            r.gross,
            r.refunded,
            r.fees,
            r.transferred,
            r.reversed,
            r.pending_transfer,
            r.net
        ));
    }
    out
}

/// Reads a report bound: RFC 3339 (UTC), or a date `YYYY-MM-DD` meaning its midnight UTC;
/// `end_of_day` turns a bare date into the next midnight (so `to=2026-11-29` includes that
/// day).
pub fn parse_bound(s: &str, end_of_day: bool) -> Option<Timestamp> {
    let s = s.trim();
    if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        let t = Timestamp::parse(&format!("{s}T00:00:00Z"))?;
        return Some(if end_of_day {
            Timestamp::from_ms(t.as_ms() + 86_400_000)
        } else {
            t
        });
    }
    Timestamp::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::machine::{CaptureMode, NewPayment};
    use crate::payments::refunds::RefundStatus;
    use crate::payments::splits::{plan, Split};

    fn payment(id: &str, charge_type: ChargeType, captured: i64, fee: Option<i64>) -> Payment {
        let mut p = Payment::new(
            NewPayment {
                id: id.into(),
                merchant: "bakery".into(),
                account: "acct_b".into(),
                charge_type,
                reader: "tmr_1".into(),
                amount: captured,
                currency: "eur".into(),
                capture: CaptureMode::Automatic,
                description: None,
                metadata: Default::default(),
                application_fee_amount: fee,
                on_behalf_of: None,
                intent_key: "k".into(),
                skip_tipping: false,
            },
            Timestamp::from_ms(1_000),
        );
        p.status = Status::Succeeded;
        p.amount_captured = captured;
        p
    }

    fn refund(payment: &str, amount: i64, split: Option<usize>) -> RefundRecord {
        RefundRecord {
            id: "rf_1".into(),
            payment: payment.into(),
            amount,
            stripe_key: "k".into(),
            status: RefundStatus::Succeeded,
            refund: Some("re_1".into()),
            created_at: Timestamp::from_ms(2_000),
            reverse_transfer: false,
            split,
            merchant: None,
            reversal_amount: 0,
            reversal_key: None,
            reversal: None,
            reversal_error: None,
            on_reader: None,
        }
    }

    fn all() -> Query {
        Query {
            from: Timestamp::from_ms(0),
            to: Timestamp::from_ms(10_000),
            ..Query::default()
        }
    }

    #[test]
    fn every_row_adds_up_and_the_platform_holds_the_fees() {
        let direct = payment("pay_d", ChargeType::Direct, 1000, Some(30));
        let dest = payment("pay_x", ChargeType::Destination, 1000, Some(30));
        let mut basket = payment("pay_s", ChargeType::Separate, 1250, None);
        basket.splits = vec![
            Split::new("bakery".into(), "acct_b".into(), 800, 40),
            Split::new("florist".into(), "acct_f".into(), 450, 20),
        ];
        plan(&mut basket.splits, 1250, 0, 0);
        basket.splits[0].transfer_status = TransferStatus::Succeeded;
        basket.splits[0].transferred = 760;
        basket.splits[0].refunded = 400;
        basket.splits[0].reversed = 380;
        // The florist's transfer is still owed.
        let refunds = vec![refund("pay_d", 100, None), refund("pay_x", 500, None)];
        let rows = settlement(&[direct, dest, basket], &refunds, &all());
        let bakery = &rows[0];
        assert_eq!(
            (bakery.payments, bakery.gross, bakery.refunded),
            (3, 2800, 1000)
        );
        // Direct 30, destination 30 - 15, separate 800 - 400 - 380 = 20.
        assert_eq!(bakery.fees, 30 + 15 + 20);
        assert_eq!(bakery.net, 2800 - 1000 - 65);
        let florist = &rows[1];
        assert_eq!(
            (
                florist.gross,
                florist.pending_transfer,
                florist.fees,
                florist.net
            ),
            (450, 430, 20, 0)
        );
        // A scope keeps its merchants only; a period outside sees nothing.
        let q = Query {
            scope: Some(vec!["florist".into()]),
            ..all()
        };
        assert_eq!(settlement(&[], &refunds, &q), vec![]);
        let late = Query {
            from: Timestamp::from_ms(5_000),
            ..all()
        };
        let p = payment("pay_d", ChargeType::Direct, 1000, None);
        assert!(settlement(&[p], &[], &late).is_empty());
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_row() {
        let rows = vec![Row {
            merchant: "bakery".into(),
            currency: "eur".into(),
            payments: 2,
            gross: 100,
            net: 100,
            ..Row::default()
        }];
        assert_eq!(
            to_csv(&rows),
            "merchant,currency,payments,gross,refunded,fees,transferred,reversed,pending_transfer,net\nbakery,eur,2,100,0,0,0,0,0,100\n"
        );
    }

    #[test]
    fn dates_and_times_bound_the_period() {
        let d = parse_bound("2026-11-29", false).unwrap();
        assert_eq!(d, Timestamp::parse("2026-11-29T00:00:00Z").unwrap());
        let e = parse_bound("2026-11-29", true).unwrap();
        assert_eq!(e, Timestamp::parse("2026-11-30T00:00:00Z").unwrap());
        assert!(parse_bound("2026-11-29T12:00:00Z", true).is_some());
        assert!(parse_bound("yesterday", false).is_none());
    }
}
