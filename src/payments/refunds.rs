//! Refund records (tree `refunds`) and their store access.
//!
//! A record's key starts with its payment's id: `<payment>/<refund id>` for a refund asked
//! without an `Idempotency-Key`, `<payment>/<client>/<Idempotency-Key>` for one asked with
//! one (so that the same key finds the same refund). Payment ids (`pay_` and 20 letters and
//! digits) hold no `/`, so `<payment>/` is a prefix that reads exactly that payment's
//! refunds, with no scan of the tree.

use crate::clock::Timestamp;
use crate::store::{Batch, Registry, StoreError, Tree};
use serde::{Deserialize, Serialize};

/// Refund metadata naming readerd's refund record, so a refund whose answer was lost
/// can be found on Stripe.
pub const REFUND_METADATA: &str = "readerd_refund";

crate::string_enum!(
    /// Where a refund stands: `pending` until Stripe answers (or while its outcome is
    /// unknown), then Stripe's own status. Serialised as Stripe spells it; a status this
    /// version does not know is kept as it is.
    RefundStatus {
        Pending => "pending",
        RequiresAction => "requires_action",
        Succeeded => "succeeded",
        Failed => "failed",
        Canceled => "canceled",
    }
);

impl RefundStatus {
    /// Whether the refund counts against what can still be refunded: everything but a
    /// refusal, so that a refund whose outcome is unknown is never paid out twice.
    pub fn commits_money(&self) -> bool {
        !matches!(self, RefundStatus::Failed | RefundStatus::Canceled)
    }
}

/// A refund of a payment (tree `refunds`; keys in the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub id: String,
    pub payment: String,
    pub amount: i64,
    /// Stripe idempotency key, on disk before the request.
    pub stripe_key: String,
    /// `pending` until Stripe answers, then Stripe's status; `failed` and `canceled` are
    /// excluded from totals ([`RefundStatus::commits_money`]).
    pub status: RefundStatus,
    pub refund: Option<String>,
    pub created_at: Timestamp,
    /// A destination charge's refund reverses the transfer and refunds the fee in
    /// proportion; decided when the refund is recorded, so a re-send repeats its parameters.
    #[serde(default)]
    pub reverse_transfer: bool,
    /// Separate charges: the split (and its merchant) the refund comes out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// The reversal of the split's transfer this refund owes, decided when the refund is
    /// recorded (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reversal_amount: i64,
    /// Idempotency key of the reversal, on disk before the refund is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_key: Option<String>,
    /// `trr_…`, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal: Option<String>,
    /// Stripe refused the reversal: left for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_error: Option<String>,
    /// A refund made on a reader (Stripe's `refund_payment`, the customer's card presented
    /// again): its reader job. `stripe_key` is then the current attempt's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reader: Option<crate::payments::reader_refunds::OnReader>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl RefundRecord {
    /// The refund went through and its transfer reversal is still owed.
    pub fn reversal_due(&self) -> bool {
        self.reversal_amount > 0
            && self.reversal.is_none()
            && self.reversal_error.is_none()
            && self.refund.is_some()
            && self.status.commits_money()
            && self.status != RefundStatus::Pending
    }
}

/// The key of a refund asked without an `Idempotency-Key`.
pub(crate) fn key(payment: &str, refund: &str) -> String {
    format!("{payment}/{refund}")
}

/// The key of a refund asked by `client` with `Idempotency-Key: idempotency_key`.
pub(crate) fn idempotent_key(payment: &str, client: &str, idempotency_key: &str) -> String {
    format!("{payment}/{client}/{idempotency_key}")
}

/// Every refund of one payment (a prefix range).
pub(crate) fn of_payment(
    registry: &Registry,
    payment: &str,
) -> Result<Vec<(String, RefundRecord)>, StoreError> {
    registry.scan_prefix(Tree::Refunds, &format!("{payment}/"))
}

/// The index entry (tree `payment_index`) that marks a pending refund, so that reconcile
/// and the sweep find them without reading every refund.
fn pending_entry(key: &str) -> String {
    format!("rp/{key}")
}

/// Writes a refund record under `key` and its pending mark in one batch: the mark is there
/// exactly while the refund is pending.
pub(crate) fn write(registry: &Registry, key: &str, rec: &RefundRecord) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    stage(&mut batch, key, rec);
    registry.apply(batch)
}

/// Adds to `batch` what [`write`] writes.
pub(crate) fn stage(batch: &mut Batch, key: &str, rec: &RefundRecord) {
    batch.put_record(Tree::Refunds, key, rec);
    if rec.status == RefundStatus::Pending {
        batch.put(Tree::PaymentIndex, pending_entry(key), Vec::new());
    } else {
        batch.remove(Tree::PaymentIndex, pending_entry(key));
    }
}

/// Adds to `batch` the removal of a refund record and its pending mark.
pub(crate) fn stage_remove(batch: &mut Batch, key: &str) {
    batch.remove(Tree::Refunds, key);
    batch.remove(Tree::PaymentIndex, pending_entry(key));
}

/// Writes `rec` over the stored record of the same refund, wherever its key (the caller
/// holds the payment's write lock).
pub(crate) fn replace(registry: &Registry, rec: &RefundRecord) -> Result<(), StoreError> {
    for (k, r) in of_payment(registry, &rec.payment)? {
        if r.id == rec.id {
            write(registry, &k, rec)?;
        }
    }
    Ok(())
}

/// Every refund whose transfer reversal is still owed, of any payment: a walk of the
/// refunds a chunk at a time (these are rare and end quickly; no index yet).
pub(crate) fn reversals_due(registry: &Registry) -> Result<Vec<RefundRecord>, StoreError> {
    let mut out = Vec::new();
    registry.for_each::<RefundRecord>(Tree::Refunds, "", 1000, |_, r| {
        if r.reversal_due() {
            out.push(r);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Every pending refund, of any payment, found through their pending marks: the start-up
/// reconcile and the sweep read only these, never the whole tree.
pub(crate) fn pending(registry: &Registry) -> Result<Vec<RefundRecord>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let rows =
            registry
                .store()
                .scan_range(Tree::PaymentIndex, "rp/", after.as_deref(), 500, false)?;
        let done = rows.len() < 500;
        for (k, _) in rows {
            if let Some(r) = registry.get::<RefundRecord>(Tree::Refunds, &k[3..])? {
                if r.status == RefundStatus::Pending {
                    out.push(r);
                }
            }
            after = Some(k);
        }
        if done {
            return Ok(out);
        }
    }
}

/// Marks every pending refund (the store's schema 2 → 3 step), a chunk at a time.
pub(crate) fn rebuild(registry: &Registry) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    registry.for_each::<RefundRecord>(Tree::Refunds, "", 1000, |k, r| {
        if r.status == RefundStatus::Pending {
            batch.put(Tree::PaymentIndex, pending_entry(&k), Vec::new());
        }
        Ok(())
    })?;
    registry.apply(batch)
}

/// Every disagreement between refund records and their pending marks.
pub(crate) fn verify(registry: &Registry) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    registry.for_each::<RefundRecord>(Tree::Refunds, "", 1000, |k, r| {
        let marked = registry
            .store()
            .get(Tree::PaymentIndex, &pending_entry(&k))?
            .is_some();
        if marked != (r.status == RefundStatus::Pending) {
            problems.push(format!(
                "refund {k}: pending mark {marked}, status {}",
                r.status
            ));
        }
        Ok(())
    })?;
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(payment: &str, id: &str, status: RefundStatus) -> RefundRecord {
        RefundRecord {
            id: id.into(),
            payment: payment.into(),
            amount: 100,
            stripe_key: format!("readerd:refund:{payment}:{id}"),
            status,
            refund: None,
            created_at: Timestamp::from_ms(1_795_000_000_000),
            reverse_transfer: false,
            split: None,
            merchant: None,
            reversal_amount: 0,
            reversal_key: None,
            reversal: None,
            reversal_error: None,
            on_reader: None,
        }
    }

    #[test]
    fn statuses_keep_stripes_spelling_on_disk_and_unknown_ones_survive() {
        for (s, text) in [
            (RefundStatus::Pending, "pending"),
            (RefundStatus::RequiresAction, "requires_action"),
            (RefundStatus::Succeeded, "succeeded"),
            (RefundStatus::Failed, "failed"),
            (RefundStatus::Canceled, "canceled"),
            (RefundStatus::Other("later".into()), "later"),
        ] {
            assert_eq!(serde_json::to_value(&s).unwrap(), text);
            assert_eq!(
                serde_json::from_value::<RefundStatus>(text.into()).unwrap(),
                s
            );
        }
        // A record written before the status was typed reads the same.
        let old = r#"{"id":"rf_1","payment":"pay_1","amount":5,"stripe_key":"k","status":"pending","refund":null,"created_at":"2026-11-29T20:00:00.123Z"}"#;
        let r: RefundRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.status, RefundStatus::Pending);
        assert!(!r.reverse_transfer, "an old refund repeats its old request");
        let again = serde_json::to_string(&r).unwrap();
        assert_eq!(
            again,
            old.replace('}', r#","reverse_transfer":false}"#),
            "every old field kept as it was"
        );
    }

    #[test]
    fn only_refusals_leave_the_total() {
        assert!(RefundStatus::Pending.commits_money());
        assert!(RefundStatus::Succeeded.commits_money());
        assert!(RefundStatus::RequiresAction.commits_money());
        assert!(!RefundStatus::Failed.commits_money());
        assert!(!RefundStatus::Canceled.commits_money());
    }

    #[test]
    fn a_payments_refunds_are_read_by_its_prefix_and_replaced_in_place() {
        let reg = Registry::temporary().unwrap();
        let a = rec("pay_a", "rf_1", RefundStatus::Pending);
        let keyed = rec("pay_a", "rf_2", RefundStatus::Pending);
        let other = rec("pay_ab", "rf_3", RefundStatus::Pending);
        write(&reg, &key("pay_a", "rf_1"), &a).unwrap();
        write(&reg, &idempotent_key("pay_a", "pos", "k1"), &keyed).unwrap();
        write(&reg, &key("pay_ab", "rf_3"), &other).unwrap();

        let ids = |p: &str| -> Vec<String> {
            let mut ids: Vec<String> = of_payment(&reg, p)
                .unwrap()
                .into_iter()
                .map(|(_, r)| r.id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids("pay_a"), vec!["rf_1", "rf_2"]);
        assert_eq!(ids("pay_ab"), vec!["rf_3"]);

        let mut done = keyed.clone();
        done.status = RefundStatus::Succeeded;
        replace(&reg, &done).unwrap();
        let stored: Option<RefundRecord> = reg
            .get(Tree::Refunds, &idempotent_key("pay_a", "pos", "k1"))
            .unwrap();
        assert_eq!(stored.as_ref(), Some(&done));
        let mut left: Vec<String> = pending(&reg).unwrap().into_iter().map(|r| r.id).collect();
        left.sort();
        assert_eq!(left, vec!["rf_1", "rf_3"]);
        // Read through their pending marks, which follow the status in the same batch.
        assert!(verify(&reg).unwrap().is_empty());
        reg.put(Tree::Refunds, &key("pay_ab", "rf_3"), &done)
            .unwrap();
        assert_eq!(verify(&reg).unwrap().len(), 1);
    }
}
