//! `refund_payment` on a reader: an in-person refund (required for Interac) that waits for
//! the customer's card. Stripe refuses it up front when the PaymentIntent has no successful
//! charge or the amount is more than is left; the refund object is made when the card is
//! presented (`present_payment_method`), on the PaymentIntent's own account, with the same
//! Connect rules as `POST /v1/refunds`.

use super::connect::RefundConnect;
use super::*;
use crate::stripe::wire::*;
use serde_json::Value;

impl State {
    /// `refund_payment`: `payment_intent` or `charge`, `amount`, `metadata`,
    /// `reverse_transfer`, `refund_application_fee`; the reader must be free.
    pub fn refund_payment(
        &mut self,
        scope: &Option<String>,
        id: &str,
        f: &Form,
        auto_present: bool,
    ) -> Res<Value> {
        f.only(&[
            "payment_intent",
            "charge",
            "amount",
            "metadata",
            "reverse_transfer",
            "refund_application_fee",
            "refund_payment_config",
        ])?;
        let expand = check_expand(f, Self::READER_EXPAND)?;
        let amount = f.int(&["amount"])?;
        if amount.is_some_and(|a| a <= 0) {
            return Err(SimError::param(
                Some("parameter_invalid_integer"),
                "amount",
                "Invalid positive integer",
            ));
        }
        let connect = RefundConnect {
            reverse_transfer: f.bool(&["reverse_transfer"])?.unwrap_or(false),
            refund_application_fee: f.bool(&["refund_application_fee"])?.unwrap_or(false),
        };
        f.bool(&["refund_payment_config", "enable_customer_cancellation"])?;
        let reader_owner = self.reader_mut(scope, id)?.owner.clone();
        // The charge's account: the reader's own, or (preview, as for payments) a connected
        // account of this platform when the reader belongs to the platform.
        let owner = self.payment_owner(f, &reader_owner)?;
        let (pi, charge) = match (f.str(&["payment_intent"]), f.str(&["charge"])) {
            (Some(pi), _) => (Some(pi.to_string()), self.refundable_charge(&owner, pi)?),
            (None, Some(ch)) => (None, ch.to_string()),
            (None, None) => return Err(SimError::missing("payment_intent")),
        };
        let amount = self.check_refund(&owner, &charge, amount, connect)?;
        let mut metadata = Metadata::new();
        f.apply_metadata(&mut metadata)?;
        let rec = self.reader_ready(scope, id)?;
        rec.generation += 1;
        rec.obj.action = Some(ReaderAction {
            kind: ActionType::RefundPayment,
            status: ActionStatus::InProgress,
            failure_code: None,
            failure_message: None,
            api_error: None,
            process_payment_intent: None,
            set_reader_display: None,
            refund_payment: Some(RefundPaymentAction {
                amount: Some(amount),
                charge: Some(Expandable::Id(charge)),
                metadata,
                payment_intent: pi.map(Expandable::Id),
                reason: None,
                refund: None,
                refund_application_fee: connect.refund_application_fee.then_some(true),
                reverse_transfer: connect.reverse_transfer.then_some(true),
            }),
            process_setup_intent: None,
            collect_inputs: None,
            collect_payment_method: None,
            confirm_payment_intent: None,
        });
        rec.refund_owner = owner;
        let generation = rec.generation;
        if auto_present {
            self.timers.push(Timer::Present {
                reader: id.to_string(),
                generation,
            });
        }
        Ok(self.reader_view(id, &expand))
    }

    /// The account the named PaymentIntent (or charge) is on, if the reader may act on it.
    fn payment_owner(&self, f: &Form, reader_owner: &Option<String>) -> Res<Option<String>> {
        let preview = self.platform_owned_readers;
        let visible = |owner: &Option<String>| {
            owner == reader_owner || (preview && reader_owner.is_none() && owner.is_some())
        };
        if let Some(pi) = f.str(&["payment_intent"]) {
            return match self.intents.get(pi) {
                Some(r) if visible(&r.owner) => Ok(r.owner.clone()),
                _ => {
                    Err(SimError::no_such("payment_intent", pi, Some("payment_intent")).status(400))
                }
            };
        }
        if let Some(ch) = f.str(&["charge"]) {
            return match self.charges.get(ch) {
                Some(r) if visible(&r.owner) => Ok(r.owner.clone()),
                _ => Err(SimError::no_such("charge", ch, Some("charge")).status(400)),
            };
        }
        Err(SimError::missing("payment_intent"))
    }

    /// Whether the reader waits for a card for a refund.
    pub(super) fn refund_waiting(rec: &ReaderRec) -> bool {
        rec.obj.action.as_ref().is_some_and(|a| {
            a.kind == ActionType::RefundPayment && a.status == ActionStatus::InProgress
        })
    }

    /// The customer presents a card for the refund: Stripe makes the refund (checked again:
    /// the charge may have been refunded meanwhile) and the action succeeds with it, or fails
    /// with Stripe's refusal.
    pub(super) fn present_for_refund(&mut self, id: &str) -> Res<()> {
        let Some(rec) = self.readers.get_mut(id) else {
            return Err(SimError::no_such("terminal.reader", id, None));
        };
        let owner = rec.refund_owner.clone();
        let Some(a) = rec.obj.action.clone().and_then(|a| a.refund_payment) else {
            return Ok(());
        };
        rec.generation += 1;
        let charge = a
            .charge
            .as_ref()
            .map(|c| c.id().to_string())
            .unwrap_or_default();
        let connect = RefundConnect {
            reverse_transfer: a.reverse_transfer.unwrap_or(false),
            refund_application_fee: a.refund_application_fee.unwrap_or(false),
        };
        let result = self.book_refund(
            &owner,
            &charge,
            a.amount,
            a.reason.clone(),
            a.metadata.clone(),
            connect,
        );
        let Some(rec) = self.readers.get_mut(id) else {
            return Ok(());
        };
        let Some(action) = rec.obj.action.as_mut() else {
            return Ok(());
        };
        let kind = match result {
            Ok(refund) => {
                action.status = ActionStatus::Succeeded;
                if let Some(r) = action.refund_payment.as_mut() {
                    r.refund = Some(Expandable::Id(refund.id));
                }
                "terminal.reader.action_succeeded"
            }
            Err(e) => {
                action.status = ActionStatus::Failed;
                action.failure_code = e.error.code.clone();
                action.failure_message = e.error.message.clone();
                action.api_error = Some(*e.error);
                "terminal.reader.action_failed"
            }
        };
        let view = self.reader_view(id, &[]);
        self.emit(kind, None, view);
        Ok(())
    }
}
