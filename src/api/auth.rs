//! Bearer-token authentication and the caller's scope.
//!
//! The config holds only SHA-256 hashes of the tokens. A presented token is hashed and
//! compared with every configured hash in constant time (no early exit), so neither timing
//! nor the answer tells which part matched. No token or an unknown one is 401.
//!
//! Scope rules every handler applies through [`Caller`]:
//! - admin: everything;
//! - pos: reads of locations and readers, and everything about its own merchants; an
//!   object of another merchant is answered as if it did not exist (404, never 403);
//! - an admin-only route is 403 to pos ([`Caller::require_admin`]).

use super::error::ApiError;
use crate::config::{ClientEntry, Role};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

/// A configured client: its token's hash and who it is.
type Entry = (Vec<u8>, Arc<Caller>);

/// The configured clients. Replaced as a whole on reload (SIGHUP), so a request sees either
/// the old set or the new one.
pub struct Auth {
    clients: RwLock<Arc<Vec<Entry>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("clients", &self.current().len())
            .finish()
    }
}

/// What a reload changed, by client name (never tokens or their hashes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientsDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, another token, role or merchant list.
    pub changed: Vec<String>,
}

/// Who is calling, and what it may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The client's name from the config (for logs).
    pub name: String,
    pub role: Role,
    /// pos: its merchants. Empty for admin (who sees all).
    pub merchants: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// 403 unless admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "this operation needs an admin token; pos clients may not use it",
            ))
        }
    }

    /// Whether the caller may see and act for `merchant`.
    pub fn may_see_merchant(&self, merchant: &str) -> bool {
        self.is_admin() || self.merchants.iter().any(|m| m == merchant)
    }
}

/// The SHA-256 of a token, lowercase hex (what `token_sha256` holds).
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Auth {
    pub fn new(clients: &[ClientEntry]) -> Self {
        let clients = clients
            .iter()
            .filter_map(|c| {
                let hash = hex::decode(&c.token_sha256).ok()?;
                Some((
                    hash,
                    Arc::new(Caller {
                        name: c.name.clone(),
                        role: c.role,
                        merchants: if c.role == Role::Admin {
                            Vec::new()
                        } else {
                            c.merchants.clone()
                        },
                    }),
                ))
            })
            .collect();
        Auth {
            clients: RwLock::new(Arc::new(clients)),
        }
    }

    fn current(&self) -> Arc<Vec<Entry>> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `clients` in force at once and says what changed.
    pub fn reload(&self, clients: &[ClientEntry]) -> ClientsDiff {
        let fresh = Auth::new(clients).current();
        let mut slot = self.clients.write().unwrap_or_else(|p| p.into_inner());
        let old = slot.clone();
        let find = |set: &[Entry], name: &str| -> Option<Entry> {
            set.iter().find(|(_, c)| c.name == name).cloned()
        };
        let mut diff = ClientsDiff::default();
        for (hash, caller) in fresh.iter() {
            match find(&old, &caller.name) {
                None => diff.added.push(caller.name.clone()),
                Some((old_hash, old_caller)) => {
                    if &old_hash != hash || old_caller != *caller {
                        diff.changed.push(caller.name.clone());
                    }
                }
            }
        }
        for (_, caller) in old.iter() {
            if find(&fresh, &caller.name).is_none() {
                diff.removed.push(caller.name.clone());
            }
        }
        *slot = fresh;
        diff
    }

    /// The caller a token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Caller>> {
        let presented = Sha256::digest(token.as_bytes());
        let mut found = None;
        for (hash, caller) in self.current().iter() {
            if bool::from(hash.as_slice().ct_eq(presented.as_slice())) {
                found = Some(caller.clone());
            }
        }
        found
    }

    /// The caller of a request from its `Authorization` header.
    pub fn from_parts(&self, parts: &Parts) -> Result<Arc<Caller>, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization header (Bearer token)"))?;
        let value = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("unreadable Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("Authorization header must be `Bearer <token>`")
            })?;
        self.authenticate(token)
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Auth>::from_ref(state);
        let caller = auth.from_parts(parts)?;
        Ok((*caller).clone())
    }
}

/// A caller that must be admin: rejected with 403 before the body is read, so that a pos
/// client learns nothing from an admin route but "not for you".
#[derive(Clone, Debug)]
pub struct Admin(pub Caller);

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_their_hash_only() {
        let clients = vec![
            ClientEntry {
                name: "desk".into(),
                token_sha256: token_sha256("pos-token"),
                role: Role::Pos,
                merchants: vec!["bakery".into()],
            },
            ClientEntry {
                name: "ops".into(),
                token_sha256: token_sha256("admin-token"),
                role: Role::Admin,
                merchants: vec![],
            },
        ];
        let auth = Auth::new(&clients);
        let pos = auth.authenticate("pos-token").unwrap();
        assert_eq!(pos.role, Role::Pos);
        assert!(pos.may_see_merchant("bakery") && !pos.may_see_merchant("florist"));
        assert!(pos.require_admin().is_err());
        let admin = auth.authenticate("admin-token").unwrap();
        assert!(admin.may_see_merchant("anything") && admin.require_admin().is_ok());
        assert!(auth.authenticate("pos-token ").is_none());
        assert!(auth.authenticate("").is_none());
        let diff = auth.reload(&[
            ClientEntry {
                name: "desk".into(),
                token_sha256: token_sha256("pos-token-2"),
                role: Role::Pos,
                merchants: vec!["bakery".into()],
            },
            ClientEntry {
                name: "kiosk".into(),
                token_sha256: token_sha256("kiosk-token"),
                role: Role::Pos,
                merchants: vec!["florist".into()],
            },
        ]);
        assert_eq!(
            diff,
            ClientsDiff {
                added: vec!["kiosk".into()],
                removed: vec!["ops".into()],
                changed: vec!["desk".into()],
            }
        );
        assert!(auth.authenticate("pos-token").is_none());
        assert!(auth.authenticate("admin-token").is_none());
        assert_eq!(auth.authenticate("pos-token-2").unwrap().name, "desk");
        assert_eq!(auth.authenticate("kiosk-token").unwrap().name, "kiosk");
        assert_eq!(
            token_sha256("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
