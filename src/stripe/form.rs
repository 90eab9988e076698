//! Stripe's form encoding: `application/x-www-form-urlencoded` with bracket notation.
//!
//! [`Params`] is what the client sends: an ordered list of `key=value` pairs, built with
//! helpers for hashes (`address[line1]`), scalar arrays (`expand[]`), arrays of hashes
//! (`cart[line_items][0][amount]`), metadata and booleans. Order is kept so that the bytes
//! are stable and testable. [`decode`] is the inverse the emulator uses: it turns a body or
//! query string into a JSON tree of strings.
//!
//! Encoding choice: keys keep `[` and `]` literal (as Stripe's docs write them); every byte
//! outside `A-Z a-z 0-9 - . _ ~` is percent-encoded, a space as `%20`.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// An ordered set of form parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key=value`.
    pub fn push(&mut self, key: impl Into<String>, value: impl ToString) -> &mut Self {
        self.pairs.push((key.into(), value.to_string()));
        self
    }

    /// Adds `key=value` when `value` is `Some`.
    pub fn push_opt<V: ToString>(&mut self, key: impl Into<String>, value: Option<V>) -> &mut Self {
        if let Some(v) = value {
            self.push(key, v);
        }
        self
    }

    /// Adds `prefix[k]=v` for every entry (metadata and other string hashes).
    pub fn push_map(&mut self, prefix: &str, map: &BTreeMap<String, String>) -> &mut Self {
        for (k, v) in map {
            self.push(format!("{prefix}[{k}]"), v);
        }
        self
    }

    /// Adds `prefix[]=v` for every item (arrays of scalars, such as `expand[]`).
    pub fn push_list<V: std::fmt::Display>(&mut self, prefix: &str, items: &[V]) -> &mut Self {
        for v in items {
            self.push(format!("{prefix}[]"), v);
        }
        self
    }

    /// Adds an array of hashes, indexed as Stripe requires: `prefix[i][field]=v`.
    pub fn push_indexed<F>(&mut self, prefix: &str, count: usize, mut item: F) -> &mut Self
    where
        F: FnMut(usize, &mut ItemParams<'_>),
    {
        for i in 0..count {
            let mut p = ItemParams {
                prefix: format!("{prefix}[{i}]"),
                params: self,
            };
            item(i, &mut p);
        }
        self
    }

    /// Appends every pair of `other`.
    pub fn extend(&mut self, other: Params) -> &mut Self {
        self.pairs.extend(other.pairs);
        self
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The parameter names, as they appear on the wire (for checks against the spec).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(k, _)| k.as_str())
    }

    /// The value of the first pair named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The encoded body or query string.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            escape_into(&mut out, k, true);
            out.push('=');
            escape_into(&mut out, v, false);
        }
        out
    }
}

/// Builds one element of an array of hashes (see [`Params::push_indexed`]).
pub struct ItemParams<'a> {
    prefix: String,
    params: &'a mut Params,
}

impl ItemParams<'_> {
    pub fn push(&mut self, field: &str, value: impl ToString) -> &mut Self {
        self.params.push(format!("{}[{field}]", self.prefix), value);
        self
    }
    pub fn push_opt<V: ToString>(&mut self, field: &str, value: Option<V>) -> &mut Self {
        if let Some(v) = value {
            self.push(field, v);
        }
        self
    }
}

fn escape_into(out: &mut String, s: &str, keep_brackets: bool) {
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_brackets && matches!(b, b'[' | b']'));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A malformed form key, such as `a[b` or `a]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameter name `{0}`")]
pub struct DecodeError(pub String);

/// Decodes a form body or query string into a JSON tree whose leaves are strings.
///
/// `a[b]=1` → `{"a": {"b": "1"}}`; `a[]=x&a[]=y` → `{"a": ["x", "y"]}`;
/// `a[0][b]=1` → `{"a": {"0": {"b": "1"}}}` (use [`as_list`] to read indexed arrays).
/// A later scalar for the same key replaces an earlier one. Both `+` and `%20` decode to a
/// space, and bracket characters may arrive percent-encoded.
pub fn decode(input: &str) -> Result<Value, DecodeError> {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(input.as_bytes()) {
        if key.is_empty() {
            continue;
        }
        let path = split_key(&key)?;
        insert(&mut root, &path, value.into_owned(), &key)?;
    }
    Ok(root)
}

fn split_key(key: &str) -> Result<Vec<String>, DecodeError> {
    let bad = || DecodeError(key.to_string());
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() || head.contains(']') {
        return Err(bad());
    }
    let mut path = vec![head.to_string()];
    while !rest.is_empty() {
        if !rest.starts_with('[') {
            return Err(bad());
        }
        let close = rest.find(']').ok_or_else(bad)?;
        let seg = &rest[1..close];
        if seg.contains('[') {
            return Err(bad());
        }
        path.push(seg.to_string());
        rest = &rest[close + 1..];
    }
    Ok(path)
}

fn insert(node: &mut Value, path: &[String], value: String, key: &str) -> Result<(), DecodeError> {
    let bad = || DecodeError(key.to_string());
    let (seg, rest) = path.split_first().expect("non-empty path");
    if seg.is_empty() {
        // `[]`: append to an array.
        if node.is_null() {
            *node = Value::Array(Vec::new());
        }
        let arr = node.as_array_mut().ok_or_else(bad)?;
        if rest.is_empty() {
            arr.push(Value::String(value));
        } else {
            let mut child = Value::Null;
            insert(&mut child, rest, value, key)?;
            arr.push(child);
        }
        return Ok(());
    }
    if node.is_null() {
        *node = Value::Object(Map::new());
    }
    let obj = node.as_object_mut().ok_or_else(bad)?;
    if rest.is_empty() {
        obj.insert(seg.clone(), Value::String(value));
        Ok(())
    } else {
        let child = obj.entry(seg.clone()).or_insert(Value::Null);
        if child.is_string() {
            // `a=1&a[b]=2`: the hash replaces the scalar.
            *child = Value::Null;
        }
        insert(child, rest, value, key)
    }
}

/// Reads an array parameter sent either as `a[]=…` or as `a[0]=…&a[1]=…`.
/// Returns `None` when the value is neither (for example a plain string).
pub fn as_list(value: &Value) -> Option<Vec<&Value>> {
    match value {
        Value::Array(items) => Some(items.iter().collect()),
        Value::Object(map) => {
            let mut indexed: Vec<(usize, &Value)> = Vec::with_capacity(map.len());
            for (k, v) in map {
                indexed.push((k.parse().ok()?, v));
            }
            indexed.sort_by_key(|(i, _)| *i);
            Some(indexed.into_iter().map(|(_, v)| v).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_nested_parameters_exactly() {
        let mut p = Params::new();
        p.push("amount", 1250)
            .push("currency", "eur")
            .push_list("payment_method_types", &["card_present"])
            .push("address[line1]", "1 Main St")
            .push("process_config[skip_tipping]", true)
            .push_map(
                "metadata",
                &BTreeMap::from([("readerd_payment".into(), "pay_1".into())]),
            );
        assert_eq!(
            p.encode(),
            "amount=1250&currency=eur&payment_method_types[]=card_present&address[line1]=1%20Main%20St&process_config[skip_tipping]=true&metadata[readerd_payment]=pay_1"
        );
    }

    #[test]
    fn encodes_arrays_of_hashes_with_indices() {
        let items = [("Tea", 450, 1), ("Cake & cream", 300, 2)];
        let mut p = Params::new();
        p.push("type", "cart")
            .push_indexed("cart[line_items]", items.len(), |i, it| {
                it.push("description", items[i].0)
                    .push("amount", items[i].1)
                    .push("quantity", items[i].2);
            });
        assert_eq!(
            p.encode(),
            "type=cart&cart[line_items][0][description]=Tea&cart[line_items][0][amount]=450&cart[line_items][0][quantity]=1&cart[line_items][1][description]=Cake%20%26%20cream&cart[line_items][1][amount]=300&cart[line_items][1][quantity]=2"
        );
    }

    #[test]
    fn escapes_reserved_bytes_in_values_and_unicode() {
        let mut p = Params::new();
        p.push("description", "a=b&c[d]+é");
        assert_eq!(p.encode(), "description=a%3Db%26c%5Bd%5D%2B%C3%A9");
    }

    #[test]
    fn decode_inverts_encode() {
        let mut p = Params::new();
        p.push("amount", 1250)
            .push_list("expand", &["latest_charge", "payment_method"])
            .push("metadata[k]", "v w")
            .push_indexed("cart[line_items]", 2, |i, it| {
                it.push("amount", i * 100);
            });
        let v = decode(&p.encode()).unwrap();
        assert_eq!(
            v,
            json!({
                "amount": "1250",
                "expand": ["latest_charge", "payment_method"],
                "metadata": {"k": "v w"},
                "cart": {"line_items": {"0": {"amount": "0"}, "1": {"amount": "100"}}}
            })
        );
        let items = as_list(&v["cart"]["line_items"]).unwrap();
        assert_eq!(items[1]["amount"], "100");
    }

    #[test]
    fn decode_accepts_escaped_brackets_and_plus() {
        let v = decode("address%5Bline1%5D=1+Main&expand%5B%5D=x").unwrap();
        assert_eq!(v, json!({"address": {"line1": "1 Main"}, "expand": ["x"]}));
    }

    #[test]
    fn decode_rejects_malformed_keys() {
        assert!(decode("a[b=1").is_err());
        assert!(decode("a]=1").is_err());
        assert!(decode("[a]=1").is_err());
    }
}
