//! The `tojson` filter of chat templates as `transformers` defines it: Python's
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, so that
//! a template prints the same text here as with `transformers` (minijinja's own `tojson`
//! sorts keys and escapes `<`, `>`, `&` for HTML).

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// How to lay the text out (the keyword arguments of `json.dumps`).
struct Layout {
    indent: Option<String>,
    item: String,
    key: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

/// Largest indent `tojson` accepts.
const MAX_INDENT: usize = 64;

/// `value | tojson(ensure_ascii=false, indent=none, separators=none, sort_keys=false)`.
pub fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match (v.as_i64(), v.as_str()) {
            // A template cannot ask for a gigantic indent (`indent=10**12`).
            (Some(n), _) if n > MAX_INDENT as i64 => {
                return Err(invalid("tojson: indent above 64 is not supported"))
            }
            (Some(n), _) => " ".repeat(usize::try_from(n).unwrap_or(0)),
            (None, Some(s)) if s.len() > MAX_INDENT => {
                return Err(invalid("tojson: indent above 64 is not supported"))
            }
            (None, Some(s)) => s.to_owned(),
            _ => return Err(invalid("tojson: indent must be an integer or a string")),
        }),
    };
    let (item, key) = match kwargs.get::<Option<Vec<String>>>("separators")? {
        Some(pair) => match <[String; 2]>::try_from(pair) {
            Ok([item, key]) => (item, key),
            Err(_) => return Err(invalid("tojson: separators must be two strings")),
        },
        // Python's defaults: ", " without indent, "," with it.
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let layout = Layout {
        indent,
        item,
        key,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_value(&mut out, value, &layout, 0)?;
    Ok(out)
}

fn invalid(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.to_owned())
}

fn newline(out: &mut String, layout: &Layout, depth: usize) {
    if let Some(unit) = &layout.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(unit);
        }
    }
}

fn write_value(out: &mut String, v: &Value, layout: &Layout, depth: usize) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(out, v)?,
        ValueKind::String => write_string(out, v.as_str().unwrap_or_default(), layout),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, ('[', ']'), items.len(), layout, depth, |out, i| {
                write_value(out, &items[i], layout, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<(String, Value)> =
                v.try_iter()?.map(|k| (key_text(&k), k)).collect::<Vec<_>>();
            if layout.sort_keys {
                keys.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, ('{', '}'), keys.len(), layout, depth, |out, i| {
                let (text, key) = &keys[i];
                write_string(out, text, layout);
                out.push_str(&layout.key);
                write_value(out, &v.get_item(key)?, layout, depth + 1)
            })?;
        }
        other => {
            return Err(invalid(&format!(
                "tojson: a {other} value cannot be serialised"
            )))
        }
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    (open, close): (char, char),
    len: usize,
    layout: &Layout,
    depth: usize,
    mut item: impl FnMut(&mut String, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&layout.item);
        }
        newline(out, layout, depth + 1);
        item(out, i)?;
    }
    newline(out, layout, depth);
    out.push(close);
    Ok(())
}

/// A map key as Python's json writes it: strings as they are, numbers and booleans as text.
fn key_text(k: &Value) -> String {
    match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_owned(),
        ValueKind::Bool => if k.is_true() { "true" } else { "false" }.to_owned(),
        ValueKind::None | ValueKind::Undefined => "null".to_owned(),
        _ => k.to_string(),
    }
}

fn write_number(out: &mut String, v: &Value) -> Result<(), Error> {
    if v.is_integer() {
        out.push_str(&v.to_string());
        return Ok(());
    }
    let f = f64::try_from(v.clone())?;
    out.push_str(&python_float(f));
    Ok(())
}

/// `repr(float)`: the shortest digits that round-trip, in positional notation for decimal
/// exponents −5 < e < 16 and scientific (`1e+16`, `1.5e-05`) otherwise.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{f:e}"); // shortest round-trip digits: "-1.2345e3"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, digits) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m.replace('.', "")),
        None => ("", mantissa.replace('.', "")),
    };
    if (-5 < exp) && (exp < 16) {
        let point = exp + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{text}")
    } else {
        let rest = &digits[1..];
        let m = if rest.is_empty() {
            digits[..1].to_owned()
        } else {
            format!("{}.{rest}", &digits[..1])
        };
        format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

fn write_string(out: &mut String, s: &str, layout: &Layout) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if layout.ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> String {
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", |v: Value, k: Kwargs| tojson(&v, k));
        env.render_str(template, ()).unwrap()
    }

    #[test]
    fn prints_what_python_json_dumps_prints() {
        // Expected strings from Python 3.11: json.dumps(x, ensure_ascii=False, ...).
        assert_eq!(
            render(r#"{{ {"b": 1, "a": "é<\"\n", "c": [true, none, 1.5, -0.25]} | tojson }}"#),
            r#"{"b": 1, "a": "é<\"\n", "c": [true, null, 1.5, -0.25]}"#
        );
        assert_eq!(
            render(r#"{{ {"name": "f", "p": {"x": [1, 2], "e": {}}} | tojson(indent=4) }}"#),
            "{\n    \"name\": \"f\",\n    \"p\": {\n        \"x\": [\n            1,\n            2\n        ],\n        \"e\": {}\n    }\n}"
        );
        assert_eq!(
            render(r#"{{ {"b": 1, "a": 2} | tojson(sort_keys=true, separators=[",", ":"]) }}"#),
            r#"{"a":2,"b":1}"#
        );
        assert_eq!(
            render(r#"{{ "é🎉\u0001" | tojson(ensure_ascii=true) }}"#),
            r#""\u00e9\ud83c\udf89\u0001""#
        );
        assert_eq!(render("{{ [] | tojson(indent=2) }}"), "[]");
    }

    #[test]
    fn floats_as_python_repr_prints_them() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456789.125, "123456789.125"),
            (1e15, "1000000000000000.0"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(python_float(f), want, "{f}");
        }
    }

    #[test]
    fn unknown_arguments_are_errors() {
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", |v: Value, k: Kwargs| tojson(&v, k));
        let err = env
            .render_str("{{ 1 | tojson(indnet=2) }}", ())
            .unwrap_err();
        assert!(err.to_string().contains("indnet"), "{err}");
    }
}
