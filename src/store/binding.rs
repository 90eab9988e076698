//! The store's binding to one platform and one mode: a store made with a test key is never
//! driven with a live key, nor with another platform's key, and the reverse.
//!
//! The binding is a small file in the store's directory (`binding.json`), read before the
//! store itself is opened, so that a refused start changes no byte of the store (opening
//! the embedded database alone may write to it). It is written once, at the first start,
//! with the key's mode and the platform account Stripe names for that key
//! (`GET /v1/account`); a platform learnt later (Stripe was unreachable at the first start)
//! is added to it then.

use super::StoreError;
use crate::clock::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file in the store's directory.
pub const BINDING_FILE: &str = "binding.json";

/// Stripe's two worlds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Test,
    Live,
}

impl Mode {
    /// The mode of a secret or restricted key (`sk_test_`, `rk_test_`, `sk_live_`,
    /// `rk_live_`); `None` for anything else.
    pub fn of_key(key: &str) -> Option<Mode> {
        if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
            Some(Mode::Test)
        } else if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            Some(Mode::Live)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Live => "live",
        }
    }

    /// Stripe's `livemode` of this mode's objects.
    pub fn livemode(self) -> bool {
        self == Mode::Live
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a store is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub mode: Mode,
    /// The platform account (`acct_…`); `None` until Stripe has named it.
    #[serde(default)]
    pub platform: Option<String>,
    pub bound_at: Timestamp,
}

/// A start that the binding refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindingError {
    #[error("the store {store} is bound to {bound} mode, but the Stripe key is a {key} mode key: a store never mixes live and test objects; use the {bound} key, or another store for {key} mode")]
    Mode {
        store: String,
        bound: Mode,
        key: Mode,
    },
    #[error("the store {store} is bound to platform {bound}, but the Stripe key belongs to platform {key}: use {bound}'s key, or another store for {key}")]
    Platform {
        store: String,
        bound: String,
        key: String,
    },
}

fn file(dir: &Path) -> PathBuf {
    dir.join(BINDING_FILE)
}

/// The binding of the store in `dir`, if it has one.
pub fn read(dir: &Path) -> Result<Option<Binding>, StoreError> {
    match std::fs::read(file(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Engine(format!("{}: {e}", file(dir).display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Engine(format!("{}: {e}", file(dir).display()))),
    }
}

/// Writes the binding (to a temporary file, flushed, then renamed over the old one).
pub fn write(dir: &Path, b: &Binding) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Engine(format!("{}: {e}", file(dir).display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!("{BINDING_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(b).expect("a binding serialises");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, file(dir)).map_err(io)?;
    Ok(())
}

/// Whether a key of `mode` on `platform` (when Stripe named it) may drive a store bound to
/// `bound`.
pub fn check(
    store: &Path,
    bound: &Binding,
    mode: Mode,
    platform: Option<&str>,
) -> Result<(), BindingError> {
    if bound.mode != mode {
        return Err(BindingError::Mode {
            store: store.display().to_string(),
            bound: bound.mode,
            key: mode,
        });
    }
    if let (Some(b), Some(k)) = (bound.platform.as_deref(), platform) {
        if b != k {
            return Err(BindingError::Platform {
                store: store.display().to_string(),
                bound: b.to_string(),
                key: k.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_of_keys() {
        for (k, m) in [
            ("sk_test_x", Some(Mode::Test)),
            ("rk_test_x", Some(Mode::Test)),
            ("sk_live_x", Some(Mode::Live)),
            ("rk_live_x", Some(Mode::Live)),
            ("pk_live_x", None),
            ("whatever", None),
        ] {
            assert_eq!(Mode::of_key(k), m, "{k}");
        }
    }

    #[test]
    fn a_binding_refuses_the_other_mode_and_another_platform() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let b = Binding {
            mode: Mode::Test,
            platform: Some("acct_a".into()),
            bound_at: Timestamp::from_ms(0),
        };
        write(dir.path(), &b).unwrap();
        let b = read(dir.path()).unwrap().unwrap();
        assert!(check(dir.path(), &b, Mode::Test, Some("acct_a")).is_ok());
        assert!(check(dir.path(), &b, Mode::Test, None).is_ok());
        let e = check(dir.path(), &b, Mode::Live, Some("acct_a")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("test mode") && text.contains("live mode"),
            "{text}"
        );
        let e = check(dir.path(), &b, Mode::Test, Some("acct_b")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("acct_a") && text.contains("acct_b"), "{text}");
    }
}
