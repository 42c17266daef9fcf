//! The functions docker/cli registers on every `--format` template (`templates/templates.go`):
//! `json`, `split`, `join`, `title`, `lower`, `upper`, `pad`, `truncate`. Go's own builtins
//! (`println`, `printf`, `index`, `len`, …) come with gotmpl; `index` is replaced so that a
//! missing key of a string map gives `""` as Go does for `map[string]string`.
//!
//! Table headers are rendered with [`header_funcs`], which, like docker/cli's
//! `HeaderFunctions`, turns the string functions into the identity so the header text stays
//! intact (`pad` is kept, to stay aligned with the rows).

use std::sync::Arc;

use gotmpl::{FuncMap, TemplateError, Value};

use super::json::template_json;

type Result<T> = std::result::Result<T, TemplateError>;

/// The functions for rendering items.
pub(crate) fn basic_funcs() -> FuncMap {
    let mut m = FuncMap::new();
    add(&mut m, "json", |a| {
        arity("json", a, 1)?;
        Ok(Value::String(template_json(&a[0]).into()))
    });
    add(&mut m, "split", |a| {
        arity("split", a, 2)?;
        let s = string_arg(&a[0])?;
        let sep = string_arg(&a[1])?;
        Ok(Value::List(
            go_split(&s, &sep)
                .into_iter()
                .map(|p| Value::String(p.into()))
                .collect(),
        ))
    });
    add(&mut m, "join", |a| {
        arity("join", a, 2)?;
        let sep = string_arg(&a[1])?;
        let parts: Vec<String> = match &a[0] {
            Value::Nil => Vec::new(),
            Value::List(l) => l.iter().map(display).collect(),
            other => {
                return Err(wrong_type("[]string", other));
            }
        };
        Ok(Value::String(parts.join(&sep).into()))
    });
    add(&mut m, "title", |a| {
        arity("title", a, 1)?;
        Ok(Value::String(go_title(&string_arg(&a[0])?).into()))
    });
    add(&mut m, "lower", |a| {
        arity("lower", a, 1)?;
        Ok(Value::String(string_arg(&a[0])?.to_lowercase().into()))
    });
    add(&mut m, "upper", |a| {
        arity("upper", a, 1)?;
        Ok(Value::String(string_arg(&a[0])?.to_uppercase().into()))
    });
    add(&mut m, "pad", pad);
    add(&mut m, "truncate", |a| {
        arity("truncate", a, 2)?;
        let s = string_arg(&a[0])?;
        let n = int_arg(&a[1])?;
        Ok(Value::String(truncate(&s, n).into()))
    });
    add(&mut m, "index", index);
    m
}

/// The functions for rendering a table's header row.
pub(crate) fn header_funcs() -> FuncMap {
    let mut m = basic_funcs();
    for name in [
        "json", "split", "join", "title", "lower", "upper", "truncate",
    ] {
        add(&mut m, name, |a| {
            Ok(a.first().cloned().unwrap_or(Value::Nil))
        });
    }
    m
}

fn add(m: &mut FuncMap, name: &str, f: impl Fn(&[Value]) -> Result<Value> + Send + Sync + 'static) {
    m.insert(name.to_string(), Arc::new(f));
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<()> {
    if args.len() == n {
        Ok(())
    } else {
        Err(TemplateError::ArgCount {
            name: name.to_string(),
            expected: n,
            got: args.len(),
        })
    }
}

fn wrong_type(expected: &str, got: &Value) -> TemplateError {
    TemplateError::Exec(format!(
        "wrong type for value; expected {expected}; got {}",
        got.type_name()
    ))
}

/// A string parameter. A missing value (nil) reads as `""`, as an unset string field does in
/// Docker's typed data.
fn string_arg(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.to_string()),
        Value::Nil => Ok(String::new()),
        other => Err(wrong_type("string", other)),
    }
}

fn int_arg(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Uint(u) => i64::try_from(*u).map_err(|_| wrong_type("int", v)),
        other => Err(wrong_type("int", other)),
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn go_split(s: &str, sep: &str) -> Vec<String> {
    if sep.is_empty() {
        s.chars().map(String::from).collect()
    } else {
        s.split(sep).map(str::to_string).collect()
    }
}

/// Go's (deprecated) `strings.Title`: upper-case the first letter of each word.
fn go_title(s: &str) -> String {
    fn is_separator(c: char) -> bool {
        if c.is_ascii() {
            return !(c.is_ascii_alphanumeric() || c == '_');
        }
        if c.is_alphanumeric() {
            return false;
        }
        c.is_whitespace()
    }
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        if is_separator(prev) {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// docker/cli's `padWithSpace`: pad a non-empty string on both sides.
fn pad(a: &[Value]) -> Result<Value> {
    arity("pad", a, 3)?;
    let s = string_arg(&a[0])?;
    let pre = usize::try_from(int_arg(&a[1])?).unwrap_or(0);
    let post = usize::try_from(int_arg(&a[2])?).unwrap_or(0);
    if s.is_empty() {
        return Ok(Value::String("".into()));
    }
    Ok(Value::String(
        format!("{}{s}{}", " ".repeat(pre), " ".repeat(post)).into(),
    ))
}

/// docker/cli's `truncateWithLength`: the first `n` bytes (never splitting a character).
fn truncate(s: &str, n: i64) -> String {
    let n = usize::try_from(n).unwrap_or(0);
    if s.len() < n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Go's `index`, except that a key missing from a map of strings (or from a nil map) gives
/// `""`, the zero value Go returns for Docker's `map[string]string` fields such as labels.
fn index(a: &[Value]) -> Result<Value> {
    if a.len() < 2 {
        return Err(TemplateError::ArgCount {
            name: "index".to_string(),
            expected: 2,
            got: a.len(),
        });
    }
    let mut val = a[0].clone();
    for key in &a[1..] {
        val = match (&val, key) {
            (Value::Map(m), Value::String(k)) => match m.get(k.as_ref()) {
                Some(v) => v.clone(),
                None if m.values().all(|v| matches!(v, Value::String(_))) => {
                    Value::String("".into())
                }
                None => Value::Nil,
            },
            (Value::Nil, Value::String(_)) => Value::String("".into()),
            _ => val.index(key)?,
        };
    }
    Ok(val)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &[Value]) -> Result<Value> {
        let m = basic_funcs();
        (m[name])(args)
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn string_functions() {
        assert_eq!(call("lower", &[s("AbC")]).unwrap(), s("abc"));
        assert_eq!(call("upper", &[s("AbC")]).unwrap(), s("ABC"));
        assert_eq!(
            call("title", &[s("hello wORLD foo_bar x-y")]).unwrap(),
            s("Hello WORLD Foo_bar X-Y")
        );
        assert_eq!(
            call("pad", &[s("x"), Value::Int(1), Value::Int(2)]).unwrap(),
            s(" x  ")
        );
        assert_eq!(
            call("pad", &[s(""), Value::Int(1), Value::Int(2)]).unwrap(),
            s("")
        );
        assert_eq!(
            call("truncate", &[s("abcdef"), Value::Int(3)]).unwrap(),
            s("abc")
        );
        assert_eq!(
            call("truncate", &[s("ab"), Value::Int(3)]).unwrap(),
            s("ab")
        );
        assert_eq!(
            call("truncate", &[s("abc"), Value::Int(3)]).unwrap(),
            s("abc")
        );
        assert_eq!(call("truncate", &[s("éé"), Value::Int(3)]).unwrap(), s("é"));
        assert_eq!(call("lower", &[Value::Nil]).unwrap(), s(""));
        let err = call("upper", &[Value::Int(3)]).unwrap_err().to_string();
        assert!(
            err.contains("wrong type for value; expected string; got int"),
            "{err}"
        );
    }

    #[test]
    fn split_and_join() {
        let parts = call("split", &[s("a,b,,c"), s(",")]).unwrap();
        assert_eq!(parts.to_string(), "[a b  c]");
        assert_eq!(
            call("split", &[s("ab"), s("")]).unwrap().to_string(),
            "[a b]"
        );
        assert_eq!(call("split", &[s(""), s(",")]).unwrap().to_string(), "[]");
        assert_eq!(call("join", &[parts, s("-")]).unwrap(), s("a-b--c"));
        assert_eq!(call("join", &[Value::Nil, s("-")]).unwrap(), s(""));
    }

    #[test]
    fn index_on_string_maps() {
        let labels = gotmpl::to_value(&serde_json::json!({"a": "1"})).unwrap();
        assert_eq!(index(&[labels.clone(), s("a")]).unwrap(), s("1"));
        assert_eq!(index(&[labels, s("zz")]).unwrap(), s(""));
        assert_eq!(index(&[Value::Nil, s("zz")]).unwrap(), s(""));
        let mixed = gotmpl::to_value(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(index(&[mixed, s("zz")]).unwrap(), Value::Nil);
        let list = gotmpl::to_value(&serde_json::json!(["x", "y"])).unwrap();
        assert_eq!(index(&[list, Value::Int(1)]).unwrap(), s("y"));
    }

    #[test]
    fn header_functions_are_identity() {
        let m = header_funcs();
        assert_eq!((m["upper"])(&[s("Name")]).unwrap(), s("Name"));
        assert_eq!(
            (m["truncate"])(&[s("NAME"), Value::Int(1)]).unwrap(),
            s("NAME")
        );
        assert_eq!((m["join"])(&[s("NAMES"), s(",")]).unwrap(), s("NAMES"));
        assert_eq!(
            (m["pad"])(&[s("NAME"), Value::Int(1), Value::Int(0)]).unwrap(),
            s(" NAME")
        );
    }
}
