//! JSON written byte for byte as Go's `encoding/json` writes it.
//!
//! Differences from serde_json's defaults that show in Docker's output:
//! - `json.Marshal` escapes `<`, `>` and `&` as `\u003c`, `\u003e`, `\u0026` (the template
//!   function `json` turns that off, as docker/cli does); U+2028 and U+2029 are always escaped;
//! - floats use Go's shortest form: `53317`, not `53317.0`; `1e+21`, not `1e21`;
//! - `json.Indent` / `json.MarshalIndent` layout (`"key": value`, empty `{}` and `[]` kept
//!   compact) is reproduced by [`indent`].

use std::io;

use gotmpl::Value;
use serde::Serialize;
use serde_json::ser::Formatter;

/// A serde_json formatter producing Go's compact encoding.
struct GoFormatter {
    escape_html: bool,
}

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' | '>' | '&' if self.escape_html => true,
                '\u{2028}' | '\u{2029}' => true,
                _ => false,
            };
            if esc {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                write!(writer, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(go_float(value, false).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        writer.write_all(go_float(f64::from(value), true).as_bytes())
    }
}

/// Format a float as Go's `encoding/json` does.
fn go_float(f: f64, is32: bool) -> String {
    let abs = f.abs();
    let exp = abs != 0.0 && !(1e-6..1e21).contains(&abs);
    let s = match (exp, is32) {
        (false, false) => format!("{f}"),
        (false, true) => format!("{}", f as f32),
        (true, false) => format!("{f:e}"),
        (true, true) => format!("{:e}", f as f32),
    };
    if !exp {
        return s;
    }
    // Rust writes `1e21` and `1.5e-7`; Go writes `1e+21` and `1.5e-07`, then trims
    // `e-07` back to `e-7`. So only a positive exponent needs its sign.
    match s.split_once('e') {
        Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
        _ => s,
    }
}

/// Compact JSON of a `Serialize` value, as Go's `json.Marshal` writes it.
pub(crate) fn to_go_json<T: Serialize + ?Sized>(
    value: &T,
    escape_html: bool,
) -> serde_json::Result<String> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter { escape_html });
    value.serialize(&mut ser)?;
    // The formatter only writes valid UTF-8 (serde_json escapes, we add ASCII).
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// Re-indent compact JSON as Go's `json.Indent(dst, src, prefix, indent)` does.
///
/// `src` must be valid JSON (as produced by [`to_go_json`]); whitespace outside strings is
/// dropped and rebuilt.
pub(crate) fn indent(src: &str, prefix: &str, indent: &str) -> String {
    let mut out = String::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // Set after `{` or `[`: the newline is written lazily so that empty containers stay `{}`.
    let mut need_indent = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(prefix);
        for _ in 0..depth {
            out.push_str(indent);
        }
    };
    for c in src.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if need_indent && c != ']' && c != '}' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                need_indent = true;
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            '}' | ']' => {
                if need_indent {
                    // Empty container.
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The template function `json`: Go's `json.Encoder` with `SetEscapeHTML(false)`, without
/// the trailing newline. A value Go cannot encode gives an empty string, as in docker/cli.
pub(crate) fn template_json(v: &Value) -> String {
    to_serde(v)
        .and_then(|j| to_go_json(&j, false).ok())
        .unwrap_or_default()
}

/// Convert template data back to JSON data. Maps come out sorted by key, as Go sorts map keys.
fn to_serde(v: &Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Uint(u) => J::from(*u),
        Value::Float(f) => J::Number(serde_json::Number::from_f64(*f)?),
        Value::String(s) => J::String(s.to_string()),
        Value::List(l) => J::Array(l.iter().map(to_serde).collect::<Option<_>>()?),
        Value::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| Some((k.to_string(), to_serde(v)?)))
                .collect::<Option<_>>()?,
        ),
        Value::Function(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_like_go() {
        let v = json!({"a": "<b>&</b>", "c": "\u{2028}\n\t\u{1}\"\\é"});
        assert_eq!(
            to_go_json(&v, true).unwrap(),
            r#"{"a":"\u003cb\u003e\u0026\u003c/b\u003e","c":"\u2028\n\t\u0001\"\\é"}"#
        );
        assert_eq!(
            to_go_json(&v, false).unwrap(),
            r#"{"a":"<b>&</b>","c":"\u2028\n\t\u0001\"\\é"}"#
        );
    }

    #[test]
    fn floats_like_go() {
        let cases = [
            (53317.0, "53317"),
            (53317.102, "53317.102"),
            (0.5, "0.5"),
            (-0.0, "-0"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (1e-10, "1e-10"),
            (0.000001, "0.000001"),
            (123456789.125, "123456789.125"),
        ];
        for (f, want) in cases {
            assert_eq!(to_go_json(&f, true).unwrap(), want, "{f}");
        }
        assert_eq!(to_go_json(&0.1f32, true).unwrap(), "0.1");
    }

    #[test]
    fn indents_like_marshal_indent() {
        let src = r#"{"Dns":"0.0.0.0","E":{},"L":[],"N":[1,{"a":"x,y:{z}"}],"S":"q\"{"}"#;
        assert_eq!(
            indent(src, "", "    "),
            "{\n    \"Dns\": \"0.0.0.0\",\n    \"E\": {},\n    \"L\": [],\n    \"N\": [\n        1,\n        {\n            \"a\": \"x,y:{z}\"\n        }\n    ],\n    \"S\": \"q\\\"{\"\n}"
        );
        assert_eq!(indent("[]", "", "    "), "[]");
        assert_eq!(indent("[{}]", "", "    "), "[\n    {}\n]");
        assert_eq!(indent(" { \"a\" : 1 }", "", "\t"), "{\n\t\"a\": 1\n}");
    }

    #[test]
    fn template_json_sorts_maps_and_keeps_html() {
        let v = gotmpl::to_value(&json!({"b": [1, "x<"], "a": null, "c": 1.0})).unwrap();
        assert_eq!(template_json(&v), r#"{"a":null,"b":[1,"x<"],"c":1}"#);
        assert_eq!(template_json(&Value::String("s".into())), r#""s""#);
        assert_eq!(template_json(&Value::Float(f64::NAN)), "");
    }
}
