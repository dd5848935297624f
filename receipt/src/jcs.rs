//! RFC 8785 JSON Canonicalization Scheme for the values receipts hold.
//!
//! Object members sorted by their names' UTF-16 code units, no whitespace, strings escaped as
//! ECMAScript's `JSON.stringify` does (`\b \t \n \f \r \" \\`, other controls as `\u00xx`,
//! everything else literal). Receipt bodies hold no floats, so numbers are integers, which must
//! be below 2^53 in magnitude to be exact; anything else is refused rather than rounded.

use serde_json::Value;

/// Why a value cannot be canonicalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not canonicalizable: {0}")]
pub struct JcsError(pub String);

/// The canonical text of `value`.
pub fn canonicalize(value: &Value) -> Result<String, JcsError> {
    let mut out = String::new();
    write(value, &mut out)?;
    Ok(out)
}

const MAX_SAFE: u64 = (1 << 53) - 1;

fn write(value: &Value, out: &mut String) -> Result<(), JcsError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64().filter(|u| *u <= MAX_SAFE) {
                out.push_str(&u.to_string());
            } else if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= MAX_SAFE) {
                out.push_str(&i.to_string());
            } else {
                return Err(JcsError(format!(
                    "number {n} (only integers below 2^53 are allowed)"
                )));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write(v, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_by_utf16_and_escapes_like_ecmascript() {
        // RFC 8785 §3.2.3's sorting example (keys only; its values include floats).
        let v = json!({"\u{20ac}": 1, "\r": 2, "\u{1f600}": 3, "\u{80}": 4, "1": 5, "\u{fb33}": 6, "\u{10}": 7, "\u{f6}": 8});
        let keys: Vec<String> = canonicalize(&v)
            .unwrap()
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|kv| kv.rsplit_once(':').unwrap().1.to_owned())
            .collect();
        assert_eq!(keys, ["2", "7", "5", "4", "8", "1", "3", "6"]);
        let s = json!({"b": [true, null, "a\"\\\u{1}\n\u{7f}é😀"], "a": -3});
        assert_eq!(
            canonicalize(&s).unwrap(),
            "{\"a\":-3,\"b\":[true,null,\"a\\\"\\\\\\u0001\\n\u{7f}é😀\"]}"
        );
    }

    #[test]
    fn refuses_floats_and_unsafe_integers() {
        assert!(canonicalize(&json!({"x": 0.5})).is_err());
        assert!(canonicalize(&json!(1u64 << 53)).is_err());
        assert_eq!(
            canonicalize(&json!((1u64 << 53) - 1)).unwrap(),
            "9007199254740991"
        );
    }
}
