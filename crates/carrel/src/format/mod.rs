//! `--format` for list and inspect commands, as the docker CLI does it.
//!
//! List commands (`images`, `ps`, `volume ls`, …) resolve their `--format` value with
//! [`Output::resolve`] and render their items with a [`Formatter`]:
//!
//! ```ignore
//! let out = Output::resolve(&args.format, "table {{.Repository}}\t{{.Tag}}\t{{.ID}}");
//! let f = Formatter::new(&out, &[("Repository", "REPOSITORY"), ("Tag", "TAG"), ("ID", "IMAGE ID")])?;
//! f.write(&mut std::io::stdout().lock(), &rows)?; // rows: &[impl Serialize]
//! ```
//!
//! | `--format`         | output                                                          |
//! |--------------------|-----------------------------------------------------------------|
//! | empty or `table`   | the command's default table                                     |
//! | `table TEMPLATE`   | an aligned table with a header row built from the field names   |
//! | `json`             | one JSON object per line (`{{json .}}`, keys sorted)            |
//! | `raw`              | the command's raw template, where it has one                    |
//! | anything else      | a Go template, one line per item, no header, no alignment      |
//!
//! Items are any `Serialize` values (typically `serde_json::Value` objects or structs with
//! Docker's field names: `Repository`, `Tag`, `ID`, `CreatedSince`, `Size`, …). Templates get
//! docker/cli's functions (see [`funcs`]). Tables are aligned like Go's `text/tabwriter` with
//! docker/cli's settings (minwidth 10, padding 3, spaces; the last column is not padded).
//!
//! Inspect commands use an [`Inspector`]: a 4-space indented JSON array by default, a compact
//! array for `--format json`, or a template applied to each object.
//!
//! Nothing here prints: output goes to the `Write` given, errors come back as [`FormatError`].

// The commands that call this module are written separately; until all of them are in,
// some items are unused in the binary.
#![allow(dead_code)]

mod fields;
mod funcs;
mod json;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};

use gotmpl::{MissingKey, Template, TemplateError, Value};
use serde::Serialize;

/// Go's `tabwriter` settings used by docker/cli for tables.
const TAB_MINWIDTH: usize = 10;
const TAB_PADDING: usize = 3;

/// How a list command prints, resolved from `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An aligned table; the row template (without the `table` keyword). The header row is
    /// the same template applied to the header texts.
    Table(String),
    /// The command's raw format (`--format raw`): a template, no header, no alignment.
    Raw(String),
    /// One JSON object per item and line (`--format json`).
    Json,
    /// A Go template applied to each item, one line each, no header, no alignment.
    Template(String),
}

impl Output {
    /// Resolve a `--format` value. `default_table` is the command's default format, as
    /// docker/cli spells it (`"table {{.Repository}}\t{{.Tag}}…"`; the `table` keyword may be
    /// left out). `raw` is not special here: see [`resolve_with_raw`](Self::resolve_with_raw).
    pub fn resolve(format: &str, default_table: &str) -> Output {
        Output::resolve_inner(format, default_table, None)
    }

    /// Like [`resolve`](Self::resolve), for commands that also have a `raw` format.
    pub fn resolve_with_raw(format: &str, default_table: &str, raw: &str) -> Output {
        Output::resolve_inner(format, default_table, Some(raw))
    }

    fn resolve_inner(format: &str, default_table: &str, raw: Option<&str>) -> Output {
        if format.is_empty() || format == "table" {
            let default = default_table.strip_prefix("table").unwrap_or(default_table);
            return Output::Table(preprocess(default));
        }
        if format == "json" {
            return Output::Json;
        }
        if let (Some(raw), "raw") = (raw, format) {
            return Output::Raw(preprocess(raw));
        }
        // docker/cli: any format that starts with "table" is a table.
        match format.strip_prefix("table") {
            Some(rest) => Output::Table(preprocess(rest)),
            None => Output::Template(preprocess(format)),
        }
    }

    /// The template applied to each item.
    pub fn template(&self) -> &str {
        match self {
            Output::Table(t) | Output::Raw(t) | Output::Template(t) => t,
            Output::Json => "{{json .}}",
        }
    }

    /// True for table output (with a header row).
    pub fn is_table(&self) -> bool {
        matches!(self, Output::Table(_))
    }
}

/// docker/cli's `preFormat`: trim spaces and turn the two-character escapes `\t` and `\n`
/// into a tab and a newline.
fn preprocess(t: &str) -> String {
    t.trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n")
}

/// A `--format` template or output error. Messages follow docker/cli's
/// (`template parsing error: template: :1: unexpected "}" in operand`).
#[derive(Debug)]
pub enum FormatError {
    /// The template does not parse.
    Parse(String),
    /// The template failed on an item (unknown field, wrong argument type, …).
    Execute(String),
    /// An item could not be turned into template data or JSON.
    Data(String),
    /// Writing the output failed.
    Io(io::Error),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Parse(m) | FormatError::Execute(m) => {
                write!(f, "template parsing error: {m}")
            }
            FormatError::Data(m) => write!(f, "cannot format value: {m}"),
            FormatError::Io(e) => write!(f, "write error: {e}"),
        }
    }
}

impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FormatError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FormatError {
    fn from(e: io::Error) -> Self {
        FormatError::Io(e)
    }
}

/// Parse a template with docker/cli's functions, mapping errors to Go's wording.
fn parse_template(
    src: &str,
    funcs: gotmpl::FuncMap,
    mk: MissingKey,
) -> Result<Template, FormatError> {
    let tmpl = Template::new("")
        .funcs(funcs.clone())
        .missing_key(mk)
        .parse(src)
        .map_err(|e| FormatError::Parse(go_error(&e, src)))?;
    check_functions(src, &funcs)?;
    Ok(tmpl)
}

/// Go's builtin template functions.
const GO_BUILTINS: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or",
    "print", "printf", "println", "slice", "urlquery",
];

/// Go rejects a call to an unknown function when parsing (`function "x" not defined`), even
/// if no item is ever rendered; gotmpl only notices when executing. Walk the syntax tree to
/// report it at parse time, with Go's text and line.
fn check_functions(src: &str, funcs: &gotmpl::FuncMap) -> Result<(), FormatError> {
    use gotmpl::parse::{Expr, ListNode, Node, Parser, PipeNode};

    type Known<'a> = &'a dyn Fn(&str) -> bool;
    fn pipe(p: &PipeNode, known: Known<'_>) -> Option<(usize, String)> {
        p.commands
            .iter()
            .flat_map(|c| c.args.iter())
            .find_map(|e| expr(e, known))
    }
    fn expr(e: &Expr, known: Known<'_>) -> Option<(usize, String)> {
        match e {
            Expr::Identifier(pos, name) if !known(name) => Some((pos.line, name.to_string())),
            Expr::Pipe(_, p) => pipe(p, known),
            Expr::Chain(_, inner, _) => expr(inner, known),
            _ => None,
        }
    }
    fn list(l: &ListNode, known: Known<'_>) -> Option<(usize, String)> {
        l.nodes.iter().find_map(|n| match n {
            Node::List(l) => list(l, known),
            Node::Action(a) => pipe(&a.pipe, known),
            Node::If(b) | Node::Range(b) | Node::With(b) => pipe(&b.pipe, known)
                .or_else(|| list(&b.body, known))
                .or_else(|| b.else_body.as_ref().and_then(|e| list(e, known))),
            Node::Template(t) => t.pipe.as_ref().and_then(|p| pipe(p, known)),
            Node::Define(d) => list(&d.body, known),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => None,
        })
    }

    // The template already parsed once, so this parse succeeds too.
    let Ok((tree, defines)) = Parser::new(src, "{{", "}}").and_then(Parser::parse) else {
        return Ok(());
    };
    let known = |name: &str| GO_BUILTINS.contains(&name) || funcs.contains_key(name);
    let missing =
        list(&tree, &known).or_else(|| defines.iter().find_map(|d| list(&d.body, &known)));
    match missing {
        Some((line, name)) => Err(FormatError::Parse(format!(
            "template: :{line}: function \"{name}\" not defined"
        ))),
        None => Ok(()),
    }
}

/// Go's text of a template error: `template: :LINE: MSG` for syntax errors, `template: :1:
/// executing "" …` style for run-time ones (gotmpl does not track run-time positions, so the
/// position is left out).
fn go_error(e: &TemplateError, src: &str) -> String {
    let line1 = if src.contains('\n') { "" } else { ":1" };
    match e {
        TemplateError::Parse { line, message, .. } | TemplateError::Lex { line, message, .. } => {
            let message = match message
                .strip_prefix("unexpected character: '")
                .and_then(|m| m.strip_suffix('\''))
            {
                Some(ch) => format!("unexpected \"{ch}\" in operand"),
                None => message.clone(),
            };
            format!("template: :{line}: {message}")
        }
        TemplateError::UndefinedFunction(name) => {
            format!("template: {line1}: function \"{name}\" not defined")
        }
        TemplateError::MissingKey { key } => {
            format!("template: executing \"\" at <.{key}>: map has no entry for key \"{key}\"")
        }
        TemplateError::Exec(m) => format!("template: executing \"\": {m}"),
        other => format!("template: executing \"\": {other}"),
    }
}

/// Turn an item into template data.
fn to_data<T: Serialize + ?Sized>(item: &T) -> Result<Value, FormatError> {
    gotmpl::to_value(item).map_err(|e| FormatError::Data(e.to_string()))
}

/// Renders the items of a list command for one resolved [`Output`].
pub struct Formatter {
    output: Output,
    row: Template,
    /// The row template when it is only text and `{{.Field}}` actions (see [`fields`]).
    plain_row: Option<fields::FieldLine>,
    header: Option<Template>,
    headers: BTreeMap<String, String>,
}

impl Formatter {
    /// Parse the output's template. `headers` maps field names to the column titles Docker
    /// shows (`("ID", "IMAGE ID")`); a field without an entry gets its name in capitals, split
    /// at word boundaries (`CreatedAt` ⇒ `CREATED AT`).
    pub fn new(output: &Output, headers: &[(&str, &str)]) -> Result<Formatter, FormatError> {
        let src = output.template();
        let row = parse_template(src, funcs::basic_funcs(), MissingKey::Error)?;
        let header = if output.is_table() {
            Some(parse_template(
                src,
                funcs::header_funcs(),
                MissingKey::Invalid,
            )?)
        } else {
            None
        };
        Ok(Formatter {
            output: output.clone(),
            row,
            plain_row: fields::FieldLine::parse(src),
            header,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    /// The resolved output.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Render all items (and the header row for tables) to a string. Nothing is produced if
    /// any item fails, as in docker/cli.
    pub fn render<T: Serialize>(&self, items: &[T]) -> Result<String, FormatError> {
        let body = match self.render_plain(items) {
            Some(body) => body,
            None => self.render_with_engine(items)?,
        };
        let Some(header) = &self.header else {
            return Ok(body);
        };
        let first_fields = items.first().map(to_data).transpose()?;
        let mut text = String::new();
        // docker/cli ignores errors of the header row; keep whatever was rendered.
        let _ = header.execute_fmt(&mut text, &self.header_data(first_fields.as_ref()));
        text.push('\n');
        text.push_str(&body);
        Ok(tabwrite(&text))
    }

    /// The item lines through the fast path, when the row template and every item fit it.
    fn render_plain<T: Serialize>(&self, items: &[T]) -> Option<String> {
        let line = self.plain_row.as_ref()?;
        let mut body = String::new();
        for item in items {
            line.render(item, &mut body)?;
            body.push('\n');
        }
        Some(body)
    }

    /// The item lines through the template engine.
    fn render_with_engine<T: Serialize>(&self, items: &[T]) -> Result<String, FormatError> {
        let mut body = String::new();
        for item in items {
            let line = self
                .row
                .execute_to_string(&to_data(item)?)
                .map_err(|e| FormatError::Execute(go_error(&e, self.output.template())))?;
            body.push_str(&line);
            body.push('\n');
        }
        Ok(body)
    }

    /// Render all items to `w` (see [`render`](Self::render)).
    pub fn write<T: Serialize>(&self, w: &mut dyn Write, items: &[T]) -> Result<(), FormatError> {
        let s = self.render(items)?;
        w.write_all(s.as_bytes())?;
        Ok(())
    }

    /// The data the header row is rendered with: the caller's titles, plus a derived title
    /// for every other field of the first item.
    fn header_data(&self, first: Option<&Value>) -> Value {
        let mut map: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(Value::Map(fields)) = first {
            for k in fields.keys() {
                map.insert(k.to_string(), Value::String(default_header(k).into()));
            }
        }
        for (k, v) in &self.headers {
            map.insert(k.clone(), Value::String(v.as_str().into()));
        }
        Value::Map(std::sync::Arc::new(
            map.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        ))
    }
}

/// Render a list in one call: resolve `format` against `default_table`, then format `items`.
pub fn render_list<T: Serialize>(
    format: &str,
    default_table: &str,
    headers: &[(&str, &str)],
    items: &[T],
) -> Result<String, FormatError> {
    Formatter::new(&Output::resolve(format, default_table), headers)?.render(items)
}

/// `CreatedAt` ⇒ `CREATED AT`, `ID` ⇒ `ID`, `Mountpoint` ⇒ `MOUNTPOINT`.
fn default_header(field: &str) -> String {
    let chars: Vec<char> = field.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase()
                || (chars[i - 1].is_uppercase()
                    && chars.get(i + 1).is_some_and(|n| n.is_lowercase())));
        if boundary {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// Align tab-separated cells as Go's `text/tabwriter` does with docker/cli's settings
/// (`tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`).
///
/// Go sizes a column as `max(minwidth, widest cell + padding)`; the `tabwriter` crate as
/// `max(minwidth, widest cell) + padding`, so its minwidth is set to `10 - 3`.
pub fn tabwrite(text: &str) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new())
        .minwidth(TAB_MINWIDTH - TAB_PADDING)
        .padding(TAB_PADDING);
    // Writing to a Vec cannot fail.
    let _ = tw.write_all(text.as_bytes());
    let out = tw.into_inner().unwrap_or_default();
    String::from_utf8(out).unwrap_or_default()
}

/// Output for `inspect` commands: `docker inspect`'s three modes.
///
/// - no `--format`: a JSON array indented by 4 spaces (`json.MarshalIndent`), HTML-unsafe
///   characters escaped as Go does, keys in the order the items serialize them;
/// - `--format json`: the same array on one line;
/// - any other format: a template applied to each object, one result per line, with missing
///   fields an error (docker's `missingkey=error`).
///
/// Items are added one at a time so that a failing one does not stop the others; the caller
/// collects the errors, then calls [`finish`](Self::finish).
pub struct Inspector {
    mode: InspectMode,
    /// Compact JSON of each element, or rendered template lines.
    parts: Vec<String>,
}

enum InspectMode {
    Indented,
    Json,
    Template {
        src: String,
        strict: Box<Template>,
        lenient: Box<Template>,
    },
}

impl Inspector {
    /// Prepare for a `--format` value (empty for the default).
    pub fn new(format: &str) -> Result<Inspector, FormatError> {
        let mode = match format {
            "" => InspectMode::Indented,
            "json" => InspectMode::Json,
            src => InspectMode::Template {
                src: src.to_string(),
                strict: Box::new(parse_template(
                    src,
                    funcs::basic_funcs(),
                    MissingKey::Error,
                )?),
                lenient: Box::new(parse_template(
                    src,
                    funcs::basic_funcs(),
                    MissingKey::Invalid,
                )?),
            },
        };
        Ok(Inspector {
            mode,
            parts: Vec::new(),
        })
    }

    /// Add one inspected object.
    pub fn add<T: Serialize + ?Sized>(&mut self, item: &T) -> Result<(), FormatError> {
        let part = match &self.mode {
            InspectMode::Indented | InspectMode::Json => {
                json::to_go_json(item, true).map_err(|e| FormatError::Data(e.to_string()))?
            }
            InspectMode::Template {
                src,
                strict,
                lenient,
            } => {
                let data = to_data(item)?;
                match strict.execute_to_string(&data) {
                    Ok(s) => s,
                    // Docker runs inspect templates on typed structs first: a missing struct
                    // field (capitalized, like `.Foo`) is an error, while a missing key of a
                    // map such as `.Config.Labels.version` prints `<no value>`.
                    Err(TemplateError::MissingKey { key })
                        if !key.starts_with(|c: char| c.is_ascii_uppercase()) =>
                    {
                        lenient
                            .execute_to_string(&data)
                            .map_err(|e| FormatError::Execute(go_error(&e, src)))?
                    }
                    Err(e) => return Err(FormatError::Execute(go_error(&e, src))),
                }
            }
        };
        self.parts.push(part);
        Ok(())
    }

    /// Write everything added, as docker does at the end of `inspect`.
    pub fn finish(self, w: &mut dyn Write) -> Result<(), FormatError> {
        let out = match self.mode {
            InspectMode::Indented | InspectMode::Json if self.parts.is_empty() => "[]\n".into(),
            InspectMode::Indented => {
                format!(
                    "{}\n",
                    json::indent(&format!("[{}]", self.parts.join(",")), "", "    ")
                )
            }
            InspectMode::Json => format!("[{}]\n", self.parts.join(",")),
            InspectMode::Template { .. } if self.parts.is_empty() => "\n".into(),
            InspectMode::Template { .. } => {
                let mut s = String::new();
                for p in &self.parts {
                    s.push_str(p);
                    s.push('\n');
                }
                s
            }
        };
        w.write_all(out.as_bytes())?;
        Ok(())
    }
}

/// Render `items` as `docker inspect` does for `format`, stopping at the first failing item.
pub fn render_inspect<T: Serialize>(format: &str, items: &[T]) -> Result<String, FormatError> {
    let mut insp = Inspector::new(format)?;
    for item in items {
        insp.add(item)?;
    }
    let mut out = Vec::new();
    insp.finish(&mut out)?;
    Ok(String::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests;
