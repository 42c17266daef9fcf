//! A fast path for the most common row templates: text and plain `{{.Field}}` actions only, as
//! every default table of docker/cli is. Such a line is rendered by picking the named fields out
//! of each item's `Serialize` output as text, without building template data for the whole item
//! or running the template engine: `volume ls` with 10,000 volumes spends most of its time there
//! otherwise.
//!
//! Anything else (functions, pipelines, trim markers, a field that is not a string, number or
//! boolean, a missing field) makes [`FieldLine::render`] answer `None`, and the caller uses the
//! template engine, which gives the exact output or error.

use serde::Serialize;
use serde::ser::{self, Impossible};
use std::fmt;

/// A row template made of literal text and `{{.Field}}` actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLine {
    parts: Vec<Part>,
    /// The distinct field names the line uses.
    fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// Index into `fields`.
    Field(usize),
}

impl FieldLine {
    /// The line for `src`, or `None` when it uses anything but text and `{{.Field}}`.
    pub fn parse(src: &str) -> Option<FieldLine> {
        let mut line = FieldLine {
            parts: Vec::new(),
            fields: Vec::new(),
        };
        let mut rest = src;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                line.parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}")?;
            let name = after[..close].trim_matches([' ', '\t']).strip_prefix('.')?;
            let plain = !name.is_empty()
                && !after[..close].starts_with('-')
                && !after[..close].ends_with('-')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
            if !plain {
                return None;
            }
            let index = match line.fields.iter().position(|f| f == name) {
                Some(i) => i,
                None => {
                    line.fields.push(name.to_string());
                    line.fields.len() - 1
                }
            };
            line.parts.push(Part::Field(index));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            line.parts.push(Part::Text(rest.to_string()));
        }
        Some(line)
    }

    /// Append the line for `item` to `out`; `None` (and `out` unchanged) when the item does not
    /// fit the fast path.
    pub fn render<T: Serialize + ?Sized>(&self, item: &T, out: &mut String) -> Option<()> {
        let mut picker = Picker {
            wanted: &self.fields,
            values: vec![None; self.fields.len()],
            key: None,
        };
        item.serialize(&mut picker).ok()?;
        let values: Vec<String> = picker.values.into_iter().collect::<Option<_>>()?;
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(i) => out.push_str(&values[*i]),
            }
        }
        Some(())
    }
}

/// Why an item does not fit the fast path (never shown: the caller falls back).
#[derive(Debug)]
struct Unfit;

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a plain field")
    }
}

impl std::error::Error for Unfit {}

impl ser::Error for Unfit {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Unfit
    }
}

/// Collects the wanted fields of a struct or map as text.
struct Picker<'a> {
    wanted: &'a [String],
    values: Vec<Option<String>>,
    /// The key of the map entry being serialized.
    key: Option<String>,
}

impl Picker<'_> {
    fn pick<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Unfit> {
        if let Some(i) = self.wanted.iter().position(|w| w == key) {
            self.values[i] = Some(value.serialize(TextOf)?);
        }
        Ok(())
    }
}

/// Implements the serializer methods that print a scalar as text.
macro_rules! as_text {
    ($($name:ident($arg:ty);)*) => {
        $(fn $name(self, v: $arg) -> Result<String, Unfit> { Ok(v.to_string()) })*
    };
}

/// Implements the methods that look through a wrapper (`Some`, a newtype struct) to the value
/// inside, and reject a newtype enum variant, for a serializer whose `Ok` is `$ok`.
macro_rules! look_through_wrappers {
    ($ok:ty) => {
        fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<$ok, Unfit> {
            v.serialize(self)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            v: &T,
        ) -> Result<$ok, Unfit> {
            v.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<$ok, Unfit> {
            Err(Unfit)
        }
    };
}

/// Implements the serializer methods that reject a value.
macro_rules! unfit {
    ($($name:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $name(self, $(_: $arg),*) -> Result<$ret, Unfit> { Err(Unfit) })*
    };
}

impl ser::Serializer for &mut Picker<'_> {
    type Ok = ();
    type Error = Unfit;
    type SerializeSeq = Impossible<(), Unfit>;
    type SerializeTuple = Impossible<(), Unfit>;
    type SerializeTupleStruct = Impossible<(), Unfit>;
    type SerializeTupleVariant = Impossible<(), Unfit>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Unfit>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Unfit> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Unfit> {
        Ok(self)
    }
    look_through_wrappers!(());
    unfit! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

impl ser::SerializeStruct for &mut Picker<'_> {
    type Ok = ();
    type Error = Unfit;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unfit> {
        self.pick(key, value)
    }
    fn end(self) -> Result<(), Unfit> {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Picker<'_> {
    type Ok = ();
    type Error = Unfit;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unfit> {
        self.key = Some(key.serialize(TextOf)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unfit> {
        let key = self.key.take().ok_or(Unfit)?;
        self.pick(&key, value)
    }
    fn end(self) -> Result<(), Unfit> {
        Ok(())
    }
}

/// A scalar as Go's template prints it (strings as they are, integers in decimal, booleans as
/// `true`/`false`); anything else does not fit.
struct TextOf;

impl ser::Serializer for TextOf {
    type Ok = String;
    type Error = Unfit;
    type SerializeSeq = Impossible<String, Unfit>;
    type SerializeTuple = Impossible<String, Unfit>;
    type SerializeTupleStruct = Impossible<String, Unfit>;
    type SerializeTupleVariant = Impossible<String, Unfit>;
    type SerializeMap = Impossible<String, Unfit>;
    type SerializeStruct = Impossible<String, Unfit>;
    type SerializeStructVariant = Impossible<String, Unfit>;

    as_text! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_str(&str);
    }
    look_through_wrappers!(String);
    unfit! {
        serialize_f32(f32) -> String;
        serialize_f64(f64) -> String;
        serialize_char(char) -> String;
        serialize_bytes(&[u8]) -> String;
        serialize_none() -> String;
        serialize_unit() -> String;
        serialize_unit_struct(&'static str) -> String;
        serialize_unit_variant(&'static str, u32, &'static str) -> String;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    struct Row {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Size")]
        size: u64,
        #[serde(rename = "Labels")]
        labels: Vec<String>,
    }

    fn row() -> Row {
        Row {
            name: "vol1".into(),
            size: 42,
            labels: vec!["a".into()],
        }
    }

    fn render(src: &str, item: &impl Serialize) -> Option<String> {
        let mut out = String::new();
        FieldLine::parse(src)?.render(item, &mut out)?;
        Some(out)
    }

    #[test]
    fn plain_fields_and_text_render_without_the_engine() {
        assert_eq!(
            render("{{.Name}}\t{{ .Size }} ({{.Name}})", &row()).as_deref(),
            Some("vol1\t42 (vol1)")
        );
        assert_eq!(
            render("x{{.Name}}", &json!({"Name": "m"})).as_deref(),
            Some("xm")
        );
        assert_eq!(render("text only", &row()).as_deref(), Some("text only"));
    }

    #[test]
    fn anything_else_is_left_to_the_template_engine() {
        for src in [
            "{{json .}}",
            "{{.Name | upper}}",
            "{{- .Name}}",
            "{{.Name -}}",
            "{{.Config.Name}}",
            "{{.}}",
            "{{if .Name}}x{{end}}",
            "{{.Name",
            "{{.1x}}",
        ] {
            assert_eq!(FieldLine::parse(src), None, "{src}");
        }
        // A field that is not a scalar, or is missing.
        assert_eq!(render("{{.Labels}}", &row()), None);
        assert_eq!(render("{{.Missing}}", &row()), None);
    }
}
