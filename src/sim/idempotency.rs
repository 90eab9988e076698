//! Idempotency keys as Stripe keeps them: per account and key, the first response (status
//! and body, errors included) is stored and replayed; the same key with other parameters or
//! on another endpoint is an `idempotency_error`; a duplicate that arrives while the first is
//! still running is a 409. Requests refused before execution began (validation, injected
//! 5xx or a connection dropped before the work) store nothing, so they are safe to resend.

use std::collections::HashMap;

/// Which account a key belongs to (`None` = the platform) and the key.
type Slot = (Option<String>, String);

#[derive(Clone, Debug)]
enum Entry {
    Running {
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        status: u16,
        body: String,
    },
}

/// What to do with a request that carries an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// First use: run it (and then call [`Keys::finish`] or [`Keys::abandon`]).
    Run,
    /// Seen before with the same parameters: answer this.
    Replay { status: u16, body: String },
    /// Seen before with other parameters or on another endpoint.
    Mismatch,
    /// The first request with this key is still running.
    InUse,
}

/// The stored keys.
#[derive(Debug, Default)]
pub struct Keys {
    entries: HashMap<Slot, Entry>,
}

impl Keys {
    /// `fingerprint` identifies the endpoint and the parameters (method, path, canonical body).
    pub fn begin(&mut self, account: &Option<String>, key: &str, fingerprint: &str) -> Begin {
        let slot = (account.clone(), key.to_string());
        match self.entries.get(&slot) {
            None => {
                self.entries.insert(
                    slot,
                    Entry::Running {
                        fingerprint: fingerprint.to_string(),
                    },
                );
                Begin::Run
            }
            Some(Entry::Running { .. }) => Begin::InUse,
            Some(Entry::Done {
                fingerprint: f,
                status,
                body,
            }) => {
                if f == fingerprint {
                    Begin::Replay {
                        status: *status,
                        body: body.clone(),
                    }
                } else {
                    Begin::Mismatch
                }
            }
        }
    }

    /// Stores the response of a request that ran.
    pub fn finish(&mut self, account: &Option<String>, key: &str, status: u16, body: &str) {
        let slot = (account.clone(), key.to_string());
        if let Some(Entry::Running { fingerprint }) = self.entries.remove(&slot) {
            self.entries.insert(
                slot,
                Entry::Done {
                    fingerprint,
                    status,
                    body: body.to_string(),
                },
            );
        }
    }

    /// Forgets a request that never began executing.
    pub fn abandon(&mut self, account: &Option<String>, key: &str) {
        let slot = (account.clone(), key.to_string());
        if matches!(self.entries.get(&slot), Some(Entry::Running { .. })) {
            self.entries.remove(&slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_refuses_mismatch_and_in_use_and_scopes_per_account() {
        let mut k = Keys::default();
        let a = Some("acct_a".to_string());
        assert_eq!(k.begin(&a, "k", "POST /v1/x a=1"), Begin::Run);
        assert_eq!(k.begin(&a, "k", "POST /v1/x a=1"), Begin::InUse);
        assert_eq!(k.begin(&None, "k", "POST /v1/x a=2"), Begin::Run);
        k.finish(&a, "k", 200, "{}");
        assert_eq!(
            k.begin(&a, "k", "POST /v1/x a=1"),
            Begin::Replay {
                status: 200,
                body: "{}".into()
            }
        );
        assert_eq!(k.begin(&a, "k", "POST /v1/x a=3"), Begin::Mismatch);
        k.abandon(&None, "k");
        assert_eq!(k.begin(&None, "k", "POST /v1/y"), Begin::Run);
    }
}
