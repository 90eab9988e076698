//! Tenancy: the one place that decides whether a caller may see an object, or act on it for
//! a merchant.
//!
//! Every route that takes a merchant, a location, a reader or a payment asks [`check`] (one
//! object, refused with the right error) or [`allows`] (to filter a list). The rules:
//! - an admin sees and acts on everything;
//! - a pos client acts for its own merchants only;
//! - a pos client sees a location without a merchant or of one of its merchants, a reader
//!   whose allowlist is absent or names one of its merchants, and a payment of one of its
//!   merchants (a basket: only when every merchant in it is one of its merchants; an input
//!   collection: its merchant);
//! - a merchant-owned location or reader (on the merchant's connected account) is seen by
//!   pos clients of its owner only, whatever its grouping or allowlist;
//! - acting on a reader for a merchant needs the reader to be visible *and* to serve that
//!   merchant (its allowlist), so a pos client can never reach a reader fenced for
//!   someone else by naming its own merchant; a merchant-owned reader serves its owner only,
//!   and a caller who sees it but names another merchant is told `400 reader_not_shared`;
//! - whatever a pos client may not see is answered `404` as if it did not exist, never
//!   `403`: a pos client never learns that another merchant's object exists. `403` is only
//!   for routes that are admin-only as a whole ([`super::auth::Admin`]).

use super::{ApiError, Caller};
use crate::fleet::{LocationRecord, ReaderRecord};
use crate::payments::{InputCollection, Payment, Setup};
use axum::http::StatusCode;

/// An object a route is about to show or act on.
#[derive(Clone, Copy, Debug)]
pub enum Object<'a> {
    /// A merchant, by id, that the caller names (in a body or a query).
    Merchant(&'a str),
    Location(&'a LocationRecord),
    /// A reader, to see it.
    Reader(&'a ReaderRecord),
    /// A reader, to act on it for `merchant` (a payment or a cart display); `None` is the
    /// operator acting for no merchant, which only an admin may do.
    ReaderFor(&'a ReaderRecord, Option<&'a str>),
    Payment(&'a Payment),
    /// An input collection: seen like a payment, by its merchant.
    InputCollection(&'a InputCollection),
    /// A card saved on a reader: its merchant's.
    Setup(&'a Setup),
}

/// Whether the caller may see (or act on) the object.
pub fn allows(caller: &Caller, object: Object<'_>) -> bool {
    check(caller, object).is_ok()
}

/// `Ok` when the caller may see (or act on) the object; otherwise the error to answer with:
/// `404` for what a pos client may not see, `403 reader_not_allowed` when a visible reader
/// does not serve the merchant named.
pub fn check(caller: &Caller, object: Object<'_>) -> Result<(), ApiError> {
    match object {
        Object::Merchant(m) => {
            if caller.may_see_merchant(m) {
                Ok(())
            } else {
                Err(ApiError::not_found("merchant", m))
            }
        }
        Object::Location(l) => {
            let visible = match &l.owner {
                Some(owner) => caller.may_see_merchant(owner),
                None => l
                    .merchant
                    .as_deref()
                    .is_none_or(|m| caller.may_see_merchant(m)),
            };
            if visible {
                Ok(())
            } else {
                Err(ApiError::not_found("location", &l.id))
            }
        }
        Object::Reader(r) => {
            let visible = match (&r.owner, &r.merchants) {
                (Some(owner), _) => caller.may_see_merchant(owner),
                (None, None) => true,
                (None, Some(list)) => list.iter().any(|m| caller.may_see_merchant(m)),
            };
            if visible {
                Ok(())
            } else {
                Err(ApiError::not_found("reader", &r.id))
            }
        }
        Object::ReaderFor(r, merchant) => {
            check(caller, Object::Reader(r))?;
            let Some(merchant) = merchant else {
                return if caller.is_admin() {
                    Ok(())
                } else {
                    Err(ApiError::not_found("reader", &r.id))
                };
            };
            check(caller, Object::Merchant(merchant))?;
            if let Some(owner) = r.owner.as_deref().filter(|o| o != &merchant) {
                // The caller sees the reader (through its owner), so the refusal tells it
                // nothing it does not know.
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "reader_not_shared",
                    format!(
                        "reader {} belongs to merchant {owner}'s account and takes its payments only",
                        r.id
                    ),
                ));
            }
            if r.serves(merchant) {
                Ok(())
            } else if caller.is_admin() {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "reader_not_allowed",
                    format!("reader {} does not serve merchant {merchant}", r.id),
                ))
            } else {
                // A pos client that sees the reader through another of its merchants learns
                // nothing new from the refusal; one that does not see it must get the same
                // answer as for a reader that does not exist.
                Err(ApiError::not_found("reader", &r.id))
            }
        }
        Object::Payment(p) => {
            // A basket is visible only to a caller who sees every merchant in it.
            if p.merchants()
                .into_iter()
                .all(|m| caller.may_see_merchant(m))
            {
                Ok(())
            } else {
                Err(ApiError::not_found("payment", &p.id))
            }
        }
        Object::InputCollection(c) => {
            if caller.may_see_merchant(&c.merchant) {
                Ok(())
            } else {
                Err(ApiError::not_found("input_collection", &c.id))
            }
        }
        Object::Setup(s) => {
            if caller.may_see_merchant(&s.merchant) {
                Ok(())
            } else {
                Err(ApiError::not_found("setup", &s.id))
            }
        }
    }
}

/// The merchant a pos client acts for on `reader` when it names none: the first of its
/// merchants that the reader serves. `None` for an admin (the operator) or when the reader
/// serves none of them.
pub fn default_merchant<'a>(caller: &'a Caller, reader: &ReaderRecord) -> Option<&'a str> {
    if caller.is_admin() {
        return None;
    }
    caller
        .merchants
        .iter()
        .map(String::as_str)
        .find(|m| reader.serves(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn pos(merchants: &[&str]) -> Caller {
        Caller {
            name: "desk".into(),
            role: Role::Pos,
            merchants: merchants.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn admin() -> Caller {
        Caller {
            name: "ops".into(),
            role: Role::Admin,
            merchants: vec![],
        }
    }

    fn reader(allow: Option<&[&str]>) -> ReaderRecord {
        let mut r: ReaderRecord = serde_json::from_value(serde_json::json!({
            "id": "tmr_1", "label": "till", "location": null, "serial_number": "s",
            "device_type": "simulated_wisepos_e", "status": "online",
            "created_at": 0, "updated_at": 0, "synced_at": 0,
        }))
        .expect("a reader record");
        r.merchants = allow.map(|a| a.iter().map(|m| m.to_string()).collect());
        r
    }

    fn status(r: Result<(), ApiError>) -> u16 {
        match r {
            Ok(()) => 200,
            Err(e) => e.status.as_u16(),
        }
    }

    #[test]
    fn a_fenced_reader_is_out_of_reach_for_other_merchants() {
        let florist_only = reader(Some(&["florist"]));
        let open = reader(None);
        let bakery = pos(&["bakery"]);
        let both = pos(&["bakery", "florist"]);
        let cases: [(&Caller, &ReaderRecord, Option<&str>, u16); 10] = [
            (&bakery, &florist_only, Some("bakery"), 404),
            (&bakery, &florist_only, Some("florist"), 404),
            (&bakery, &florist_only, None, 404),
            (&bakery, &open, Some("bakery"), 200),
            (&bakery, &open, Some("florist"), 404),
            (&bakery, &open, None, 404),
            (&both, &florist_only, Some("bakery"), 404),
            (&both, &florist_only, Some("florist"), 200),
            (&admin(), &florist_only, Some("bakery"), 403),
            (&admin(), &florist_only, None, 200),
        ];
        for (i, (caller, r, merchant, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                status(check(caller, Object::ReaderFor(r, merchant))),
                want,
                "case {i}"
            );
        }
        assert!(!allows(&bakery, Object::Reader(&florist_only)));
        assert!(allows(&both, Object::Reader(&florist_only)));
        assert_eq!(default_merchant(&both, &florist_only), Some("florist"));
        assert_eq!(default_merchant(&bakery, &florist_only), None);
        assert_eq!(default_merchant(&admin(), &open), None);
    }

    #[test]
    fn a_merchant_owned_reader_is_its_owners_alone() {
        let mut owned = reader(None);
        owned.owner = Some("florist".into());
        let bakery = pos(&["bakery"]);
        let florist = pos(&["florist"]);
        let both = pos(&["bakery", "florist"]);
        let cases: [(&Caller, Option<&str>, u16); 7] = [
            (&florist, Some("florist"), 200),
            (&florist, None, 404),
            (&bakery, Some("bakery"), 404),
            (&bakery, Some("florist"), 404),
            (&both, Some("bakery"), 400),
            (&admin(), Some("bakery"), 400),
            (&admin(), Some("florist"), 200),
        ];
        for (i, (caller, merchant, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                status(check(caller, Object::ReaderFor(&owned, merchant))),
                want,
                "case {i}"
            );
        }
        assert!(!allows(&bakery, Object::Reader(&owned)));
        assert!(allows(&florist, Object::Reader(&owned)));
        assert_eq!(default_merchant(&both, &owned), Some("florist"));
        let mut location: LocationRecord = serde_json::from_value(serde_json::json!({
            "id": "tml_1", "display_name": "Shop", "address": {}, "merchant": null,
            "created_at": 0, "updated_at": 0, "synced_at": 0,
        }))
        .expect("a location record");
        assert!(allows(&bakery, Object::Location(&location)));
        location.owner = Some("florist".into());
        assert!(!allows(&bakery, Object::Location(&location)));
        assert!(allows(&florist, Object::Location(&location)));
    }
}
