//! `Stripe-Signature`: signing (the emulator) and verification (the daemon's webhook intake).
//!
//! Header: `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`; the signature is
//! `hex(HMAC_SHA256(secret, "<t>.<raw body>"))`. Several `v1` values appear while a secret
//! is being rolled: any one matching is enough. Other schemes (`v0`) are ignored.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's SDK default tolerance between the signed timestamp and now.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or malformed Stripe-Signature header")]
    Malformed,
    #[error("no v1 signature matches")]
    NoMatch,
    #[error("timestamp outside the tolerance of {0} s")]
    OutsideTolerance(i64),
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The hex `v1` signature of `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

/// A complete `Stripe-Signature` header value.
pub fn header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// Verifies `header` for `body` against `secret` at time `now` (unix seconds), comparing in
/// constant time against every `v1` value.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => candidates.push(v),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::NoMatch);
    }
    let matched = candidates.iter().any(|c| match hex::decode(c) {
        Ok(bytes) => mac(secret, t, body).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    });
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance(tolerance_secs));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rolled_secrets() {
        let body = br#"{"id":"evt_1"}"#;
        let h = header("whsec_a", 1000, body);
        assert_eq!(verify("whsec_a", &h, body, 1100, 300), Ok(()));
        let rolled = format!(
            "t=1000,v1={},v1={},v0=zz",
            sign("whsec_old", 1000, body),
            sign("whsec_a", 1000, body)
        );
        assert_eq!(verify("whsec_a", &rolled, body, 1000, 300), Ok(()));
    }

    #[test]
    fn refuses_forged_stale_and_malformed() {
        let body = b"{}";
        let h = header("whsec_a", 1000, body);
        assert_eq!(
            verify("whsec_b", &h, body, 1000, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify("whsec_a", &h, b"{ }", 1000, 300),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify("whsec_a", &h, body, 1301, 300),
            Err(SignatureError::OutsideTolerance(300))
        );
        assert_eq!(
            verify("whsec_a", "garbage", body, 1000, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("whsec_a", "t=1000", body, 1000, 300),
            Err(SignatureError::NoMatch)
        );
    }
}
