//! The daemon's one wall clock and its one time type, [`Timestamp`]: every record time,
//! age and signature tolerance reads the clock here.
//!
//! A leaf: it imports nothing of the crate. (The emulator in `sim/` keeps a clock of its own:
//! it stands for Stripe's servers, whose clock is not readerd's.)

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whole seconds since the Unix epoch (Stripe's timestamps, webhook signatures).
pub fn now_secs() -> i64 {
    now_ms().div_euclid(1000)
}

/// A point in time: milliseconds since the Unix epoch, UTC. The one time type of readerd's
/// records (payments, refunds, fleet) and of the API.
///
/// Written (to the store and in API JSON) as RFC 3339 UTC with milliseconds
/// (`2026-11-29T20:14:06.123Z`), whose text order is time order. Read from that string (any
/// precision) or from a bare number of milliseconds, which is how fleet records stored their
/// times before this type, so older stores read as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(now_ms())
    }

    pub const fn from_ms(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// From Stripe's whole seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    pub const fn as_ms(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (Stripe's unit), rounded down.
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// RFC 3339 UTC with milliseconds; times before the epoch show as the epoch.
    pub fn to_rfc3339(self) -> String {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(self.0.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }

    /// Reads RFC 3339 (UTC, `Z` or no zone, any precision).
    pub fn parse(s: &str) -> Option<Self> {
        let t = humantime::parse_rfc3339_weak(s).ok()?;
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        };
        Some(Timestamp(ms))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// The milliseconds from `rhs` to `self`.
impl std::ops::Sub for Timestamp {
    type Output = i64;
    fn sub(self, rhs: Timestamp) -> i64 {
        self.0.saturating_sub(rhs.0)
    }
}

impl std::ops::Sub<std::time::Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(rhs.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 time or milliseconds since the Unix epoch")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).ok_or_else(|| E::custom(format!("not an RFC 3339 time: {v:?}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("milliseconds out of range"))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_rfc3339_with_milliseconds_and_read_back() {
        let t = Timestamp::from_ms(1_700_000_000_123);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        assert_eq!(serde_json::to_value(t).unwrap(), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            serde_json::from_value::<Timestamp>("2023-11-14T22:13:20.123Z".into()).unwrap(),
            t
        );
        assert_eq!(
            Timestamp::from_ms(0).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn older_forms_still_read() {
        // Fleet records stored milliseconds; payments stored RFC 3339 strings (the
        // emulator's fixtures and hand-edited stores may hold whole seconds).
        let ms: Timestamp = serde_json::from_str("1700000000123").unwrap();
        assert_eq!(ms, Timestamp::from_ms(1_700_000_000_123));
        let secs: Timestamp = serde_json::from_str("\"2023-11-14T22:13:20Z\"").unwrap();
        assert_eq!(secs, Timestamp::from_ms(1_700_000_000_000));
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("true").is_err());
    }

    #[test]
    fn order_and_differences_are_in_milliseconds() {
        let a = Timestamp::from_ms(1_000);
        let b = Timestamp::from_ms(3_500);
        assert!(a < b);
        assert_eq!(b - a, 2_500);
        assert_eq!(
            b - std::time::Duration::from_secs(2),
            Timestamp::from_ms(1_500)
        );
        assert_eq!(Timestamp::from_secs(2), Timestamp::from_ms(2_000));
        assert_eq!(b.as_secs(), 3);
        // Text order is time order, for the lists that sort by it.
        assert!(a.to_rfc3339() < b.to_rfc3339());
    }
}
