//! Separate charges and transfers: a payment's splits (one per merchant of a basket, or one
//! for a single `separate` merchant) and the pure arithmetic of their money, with no I/O.
//!
//! - After the capture, every split gets its captured share: the requested shares scaled to
//!   what was captured by largest remainder, never above the share; the tip is one more
//!   share, owned by the tip's merchant (the first split's unless the request named
//!   another), so a partial capture scales it like the rest.
//! - The transfer is the captured share minus the merchant's fee (the fee asked at
//!   acceptance, never more than the captured share).
//! - A refund of a split reverses its transfer by the refunded share: the cumulative
//!   reversal is `transferred × refunded / captured` rounded half up, so refunding a whole
//!   share reverses the whole transfer and the platform gives back its fee in proportion,
//!   as a refund with `refund_application_fee` would on a direct charge.

use super::machine::Failure;
use serde::{Deserialize, Serialize};

/// How many refused attempts a transfer gets before it is left for the operator.
pub const MAX_TRANSFER_ATTEMPTS: u32 = 5;

/// Where a split's transfer stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// Not yet due (the payment is not captured).
    #[default]
    NotDue,
    /// Due, its key on disk; sent or about to be sent (its outcome may be unknown).
    Pending,
    /// Stripe refused it; it is tried again (with a new key) up to the bound.
    Refused,
    /// Refused too many times: left for the operator.
    Failed,
    /// Made.
    Succeeded,
    /// Nothing to transfer (the captured share was all fee, or nothing was captured).
    None,
}

/// One merchant's part of a separate-charge payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub merchant: String,
    /// The merchant's connected account (the transfer's destination).
    pub account: String,
    /// The share asked for (minor units).
    pub amount: i64,
    /// The platform's fee asked at acceptance; once captured, what is kept of the share.
    #[serde(default)]
    pub fee: i64,
    /// The captured share (tip included for the tip's merchant), set after the capture.
    #[serde(default)]
    pub captured: i64,
    #[serde(default)]
    pub transfer_status: TransferStatus,
    /// Idempotency key of the transfer, on disk before it is sent.
    #[serde(default)]
    pub transfer_key: Option<String>,
    /// `tr_…`, once made.
    #[serde(default)]
    pub transfer: Option<String>,
    #[serde(default)]
    pub transferred: i64,
    #[serde(default)]
    pub transfer_attempts: u32,
    /// Stripe's last refusal.
    #[serde(default)]
    pub transfer_error: Option<Failure>,
    /// Refunds of this split that went through (or whose outcome is still unknown).
    #[serde(default)]
    pub refunded: i64,
    /// Reversals of its transfer made so far.
    #[serde(default)]
    pub reversed: i64,
}

impl Split {
    pub fn new(merchant: String, account: String, amount: i64, fee: i64) -> Split {
        Split {
            merchant,
            account,
            amount,
            fee,
            captured: 0,
            transfer_status: TransferStatus::NotDue,
            transfer_key: None,
            transfer: None,
            transferred: 0,
            transfer_attempts: 0,
            transfer_error: None,
            refunded: 0,
            reversed: 0,
        }
    }

    /// What the transfer sends: the captured share minus the fee.
    pub fn transfer_amount(&self) -> i64 {
        (self.captured - self.fee).max(0)
    }

    /// Whether a transfer is owed and not yet settled (made, or left for the operator).
    pub fn transfer_due(&self) -> bool {
        matches!(
            self.transfer_status,
            TransferStatus::Pending | TransferStatus::Refused
        )
    }
}

/// `parts` scaled to `total` by largest remainder, each never above its part (all
/// non-negative; `total` at most their sum).
pub fn scale(parts: &[i64], total: i64) -> Vec<i64> {
    let sum: i64 = parts.iter().sum();
    if sum <= 0 {
        return vec![0; parts.len()];
    }
    let total = total.clamp(0, sum);
    let (t, s) = (total as i128, sum as i128);
    let mut out: Vec<i64> = parts
        .iter()
        .map(|p| ((*p as i128) * t / s) as i64)
        .collect();
    let mut left = total - out.iter().sum::<i64>();
    // Largest remainder first; ties to the earlier part.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(((parts[i] as i128) * t) % s));
    for i in order {
        if left == 0 {
            break;
        }
        if out[i] < parts[i] {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

/// Sets every split's captured share and fee after a capture of `captured` (tip included)
/// with `tip` on the reader, the tip owned by split `tip_split`; the transfers become due
/// (or `None` when there is nothing to send). Done once: splits already planned are left.
pub fn plan(splits: &mut [Split], captured: i64, tip: i64, tip_split: usize) {
    if splits
        .iter()
        .any(|s| s.transfer_status != TransferStatus::NotDue)
    {
        return;
    }
    let mut parts: Vec<i64> = splits.iter().map(|s| s.amount).collect();
    parts.push(tip.max(0));
    let shares = scale(&parts, captured);
    let tip_share = shares[splits.len()];
    for (i, s) in splits.iter_mut().enumerate() {
        s.captured = shares[i] + if i == tip_split { tip_share } else { 0 };
        s.fee = s.fee.min(s.captured);
        s.transfer_status = if s.transfer_amount() > 0 {
            TransferStatus::Pending
        } else {
            TransferStatus::None
        };
    }
}

/// `part` of `whole` applied to `amount`, rounded half up (all non-negative).
pub fn share(amount: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return 0;
    }
    let (a, p, w) = (amount as i128, part as i128, whole as i128);
    ((2 * a * p + w) / (2 * w)) as i64
}

/// The reversal a refund of `refund` on this split owes, given what was already refunded
/// and reversed: never more than what is left of the transfer.
pub fn reversal_for(s: &Split, refund: i64) -> i64 {
    if s.transferred <= 0 {
        return 0;
    }
    let target = share(s.transferred, s.refunded + refund, s.captured).min(s.transferred);
    (target - s.reversed).clamp(0, s.transferred - s.reversed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_remainder_adds_up_and_never_exceeds_a_share() {
        assert_eq!(scale(&[800, 450], 1250), vec![800, 450]);
        assert_eq!(scale(&[800, 450], 1000), vec![640, 360]);
        assert_eq!(scale(&[100, 100, 100], 100), vec![34, 33, 33]);
        assert_eq!(scale(&[1, 1, 1], 2), vec![1, 1, 0]);
        assert_eq!(scale(&[500, 0], 250), vec![250, 0]);
        assert_eq!(
            scale(&[700, 300], 5000),
            vec![700, 300],
            "never above a share"
        );
        for total in 0..=60 {
            let s = scale(&[17, 23, 20], total);
            assert_eq!(s.iter().sum::<i64>(), total);
            assert!(s.iter().zip([17, 23, 20]).all(|(a, b)| *a <= b));
        }
    }

    fn basket() -> Vec<Split> {
        vec![
            Split::new("bakery".into(), "acct_b".into(), 800, 40),
            Split::new("florist".into(), "acct_f".into(), 450, 20),
        ]
    }

    #[test]
    fn the_tip_goes_to_its_merchant_and_scales_with_a_partial_capture() {
        let mut s = basket();
        plan(&mut s, 1350, 100, 0);
        assert_eq!((s[0].captured, s[1].captured), (900, 450));
        assert_eq!((s[0].transfer_amount(), s[1].transfer_amount()), (860, 430));
        assert!(s
            .iter()
            .all(|x| x.transfer_status == TransferStatus::Pending));
        let mut s = basket();
        plan(&mut s, 675, 100, 1);
        assert_eq!(s.iter().map(|x| x.captured).sum::<i64>(), 675);
        assert_eq!((s[0].captured, s[1].captured), (400, 275));
        // Planned once.
        plan(&mut s, 1350, 100, 1);
        assert_eq!(s[0].captured, 400);
    }

    #[test]
    fn a_share_that_is_all_fee_transfers_nothing() {
        let mut s = vec![Split::new("kiosk".into(), "acct_k".into(), 100, 100)];
        plan(&mut s, 100, 0, 0);
        assert_eq!(s[0].transfer_status, TransferStatus::None);
        assert_eq!(s[0].transfer_amount(), 0);
    }

    #[test]
    fn reversals_follow_the_refunded_share_and_add_up_to_the_transfer() {
        let mut s = Split::new("bakery".into(), "acct_b".into(), 800, 40);
        s.captured = 800;
        s.transferred = 760;
        let r1 = reversal_for(&s, 333);
        assert_eq!(r1, 316); // 760 × 333 / 800 = 316.35
        s.refunded += 333;
        s.reversed += r1;
        let r2 = reversal_for(&s, 467);
        assert_eq!(r1 + r2, 760);
        s.refunded += 467;
        s.reversed += r2;
        assert_eq!(reversal_for(&s, 1), 0);
        let nothing = Split::new("x".into(), "acct_x".into(), 100, 0);
        assert_eq!(reversal_for(&nothing, 50), 0);
    }
}
