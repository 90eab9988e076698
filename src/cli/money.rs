//! Amounts shown as money: minor units with the currency's own exponent, as Stripe counts
//! them (`1250 eur` is `12.50 EUR`, `1250 jpy` is `1250 JPY`, `1250 kwd` is `1.250 KWD`).
//!
//! The API and the store keep integer minor units; only what a person reads goes through
//! [`format`]. The console (`api/console/app.js`) holds the same two lists.

/// Currencies without a minor unit (Stripe's zero-decimal list).
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Currencies with three decimals (Stripe's three-decimal list).
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// How many decimals the currency's minor unit has (2 for anything not listed).
pub fn exponent(currency: &str) -> u32 {
    let c = currency.to_ascii_lowercase();
    if ZERO_DECIMAL.contains(&c.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&c.as_str()) {
        3
    } else {
        2
    }
}

/// `amount` minor units of `currency` as a person reads it: `12.50 EUR`, `-0.05 EUR`,
/// `1250 JPY`.
pub fn format(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_uppercase();
    let e = exponent(currency);
    if e == 0 {
        return format!("{amount} {code}");
    }
    let unit = 10u64.pow(e);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let width = e as usize;
    format!("{sign}{}.{:0width$} {code}", abs / unit, abs % unit)
}

/// [`format`] for a JSON payment or refund field (`-` when the amount is missing).
pub fn format_json(amount: &serde_json::Value, currency: &serde_json::Value) -> String {
    match (amount.as_i64(), currency.as_str()) {
        (Some(a), Some(c)) => format(a, c),
        (Some(a), None) => a.to_string(),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_use_the_currency_exponent() {
        let table = [
            (1250, "eur", "12.50 EUR"),
            (1250, "EUR", "12.50 EUR"),
            (5, "usd", "0.05 USD"),
            (0, "gbp", "0.00 GBP"),
            (-1250, "eur", "-12.50 EUR"),
            (-5, "eur", "-0.05 EUR"),
            (100_000_000, "chf", "1000000.00 CHF"),
            (1250, "jpy", "1250 JPY"),
            (1250, "krw", "1250 KRW"),
            (-300, "xof", "-300 XOF"),
            (1250, "kwd", "1.250 KWD"),
            (5, "bhd", "0.005 BHD"),
            (1, "tnd", "0.001 TND"),
            (i64::MIN, "eur", "-92233720368547758.08 EUR"),
        ];
        for (amount, currency, want) in table {
            assert_eq!(format(amount, currency), want, "{amount} {currency}");
        }
    }

    #[test]
    fn json_fields_without_a_currency_stay_plain_numbers() {
        use serde_json::json;
        assert_eq!(format_json(&json!(1250), &json!("eur")), "12.50 EUR");
        assert_eq!(format_json(&json!(1250), &json!(null)), "1250");
        assert_eq!(format_json(&json!(null), &json!("eur")), "-");
    }
}
