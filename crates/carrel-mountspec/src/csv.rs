//! One record of Go's `encoding/csv` with its default settings, as the docker CLI reads a
//! `--mount` value: comma-separated fields, a field may be wrapped entirely in double quotes
//! (then it may contain commas, newlines and `""` for a quote), a quote anywhere else is an error.
//! Errors carry Go's text, including its 1-based line and byte column.

use std::fmt;

/// Why a record could not be read (Go's `csv.ParseError`, or `EOF` for empty input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvError {
    /// The input held no record at all (Go's `io.EOF`, printed as `EOF`).
    Eof,
    /// A quote inside an unquoted field (`bare " in non-quoted-field`).
    BareQuote {
        /// Line the record started on.
        start_line: usize,
        /// Line of the error.
        line: usize,
        /// 1-based byte column of the error.
        column: usize,
    },
    /// An unterminated quoted field, or text after a closing quote
    /// (`extraneous or missing " in quoted-field`).
    Quote {
        /// Line the record started on.
        start_line: usize,
        /// Line of the error.
        line: usize,
        /// 1-based byte column of the error.
        column: usize,
    },
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start_line, line, column, what) = match *self {
            CsvError::Eof => return f.write_str("EOF"),
            CsvError::BareQuote {
                start_line,
                line,
                column,
            } => (start_line, line, column, "bare \" in non-quoted-field"),
            CsvError::Quote {
                start_line,
                line,
                column,
            } => (
                start_line,
                line,
                column,
                "extraneous or missing \" in quoted-field",
            ),
        };
        if start_line != line {
            write!(
                f,
                "record on line {start_line}; parse error on line {line}, column {column}: {what}"
            )
        } else {
            write!(f, "parse error on line {line}, column {column}: {what}")
        }
    }
}

impl std::error::Error for CsvError {}

/// Splits input into lines the way Go's `csv.Reader.readLine` does: each line keeps its `\n`,
/// `\r\n` becomes `\n`, and a `\r` right before the end of input is dropped.
struct Lines<'a> {
    rest: &'a [u8],
    number: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<Vec<u8>> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |i| i + 1);
        let mut line = self.rest[..end].to_vec();
        self.rest = &self.rest[end..];
        self.number += 1;
        if !line.ends_with(b"\n") && line.ends_with(b"\r") {
            line.pop();
        }
        let n = line.len();
        if n >= 2 && line[n - 2] == b'\r' && line[n - 1] == b'\n' {
            line.truncate(n - 1);
            line[n - 2] = b'\n';
        }
        Some(line)
    }
}

fn length_nl(b: &[u8]) -> usize {
    usize::from(b.last() == Some(&b'\n'))
}

/// Read the first record of `input` like Go's `csv.NewReader(strings.NewReader(input)).Read()`.
///
/// Empty lines before the record are skipped; anything after the first record is ignored.
pub fn read_record(input: &str) -> Result<Vec<String>, CsvError> {
    let mut lines = Lines {
        rest: input.as_bytes(),
        number: 0,
    };
    // Skip empty lines.
    let mut line = loop {
        match lines.next_line() {
            None => return Err(CsvError::Eof),
            Some(l) if l.len() == length_nl(&l) => continue,
            Some(l) => break l,
        }
    };
    let start_line = lines.number;
    let mut line_no = lines.number;
    let mut col = 1usize;
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0usize; // offset into `line`
    'fields: loop {
        let rest = &line[pos..];
        if rest.first() != Some(&b'"') {
            // Unquoted field.
            let comma = rest.iter().position(|&b| b == b',');
            let field = match comma {
                Some(i) => &rest[..i],
                None => &rest[..rest.len() - length_nl(rest)],
            };
            if let Some(j) = field.iter().position(|&b| b == b'"') {
                return Err(CsvError::BareQuote {
                    start_line,
                    line: line_no,
                    column: col + j,
                });
            }
            fields.push(field.to_vec());
            match comma {
                Some(i) => {
                    pos += i + 1;
                    col += i + 1;
                    continue 'fields;
                }
                None => break 'fields,
            }
        }
        // Quoted field.
        let mut field: Vec<u8> = Vec::new();
        pos += 1;
        col += 1;
        loop {
            let rest = &line[pos..];
            if let Some(i) = rest.iter().position(|&b| b == b'"') {
                field.extend_from_slice(&rest[..i]);
                pos += i + 1;
                col += i + 1;
                let after = &line[pos..];
                match after.first() {
                    Some(b'"') => {
                        field.push(b'"');
                        pos += 1;
                        col += 1;
                    }
                    Some(b',') => {
                        pos += 1;
                        col += 1;
                        fields.push(field);
                        continue 'fields;
                    }
                    _ if length_nl(after) == after.len() => {
                        fields.push(field);
                        break 'fields;
                    }
                    _ => {
                        return Err(CsvError::Quote {
                            start_line,
                            line: line_no,
                            column: col - 1,
                        });
                    }
                }
            } else if !rest.is_empty() {
                // End of line inside the quotes: the field continues on the next line.
                field.extend_from_slice(rest);
                col += rest.len();
                match lines.next_line() {
                    Some(next) => {
                        line = next;
                        pos = 0;
                        line_no += 1;
                        col = 1;
                    }
                    None => {
                        line = Vec::new();
                        pos = 0;
                    }
                }
            } else {
                return Err(CsvError::Quote {
                    start_line,
                    line: line_no,
                    column: col,
                });
            }
        }
    }
    Ok(fields
        .into_iter()
        .map(|f| String::from_utf8_lossy(&f).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Vec<String> {
        read_record(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    #[test]
    fn plain_fields() {
        assert_eq!(ok("a,b,c"), ["a", "b", "c"]);
        assert_eq!(ok("a,,b,"), ["a", "", "b", ""]);
        assert_eq!(ok("a b, c"), ["a b", " c"]);
        assert_eq!(ok("single"), ["single"]);
        assert_eq!(ok("a,b\n"), ["a", "b"]);
        assert_eq!(ok("a,b\r\n"), ["a", "b"]);
        assert_eq!(ok("a,b\r"), ["a", "b"]);
    }

    #[test]
    fn quoted_fields() {
        assert_eq!(
            ok(r#"type=volume,"volume-opt=o=addr=1.2.3.4,rw",dst=/x"#),
            ["type=volume", "volume-opt=o=addr=1.2.3.4,rw", "dst=/x"]
        );
        assert_eq!(ok(r#""a""b",c"#), ["a\"b", "c"]);
        assert_eq!(ok(r#""""#), [""]);
        assert_eq!(ok(r#""a,b""#), ["a,b"]);
        assert_eq!(ok("\"multi\nline\",x"), ["multi\nline", "x"]);
    }

    #[test]
    fn only_the_first_record() {
        assert_eq!(ok("a,b\nc,d"), ["a", "b"]);
        assert_eq!(ok("\n\na,b"), ["a", "b"]);
    }

    #[test]
    fn errors_match_go() {
        assert_eq!(read_record(""), Err(CsvError::Eof));
        assert_eq!(read_record("\n").unwrap_err().to_string(), "EOF");
        assert_eq!(
            read_record(r#"type=bind,src="/srv/data",dst=/data"#)
                .unwrap_err()
                .to_string(),
            "parse error on line 1, column 15: bare \" in non-quoted-field"
        );
        assert_eq!(
            read_record(r#""type=bind,src=/srv/data,dst=/data"#)
                .unwrap_err()
                .to_string(),
            "parse error on line 1, column 35: extraneous or missing \" in quoted-field"
        );
        assert_eq!(
            read_record(r#""abc"d,e"#).unwrap_err().to_string(),
            "parse error on line 1, column 5: extraneous or missing \" in quoted-field"
        );
        assert_eq!(
            read_record(r#"a, "b""#).unwrap_err().to_string(),
            "parse error on line 1, column 4: bare \" in non-quoted-field"
        );
        assert_eq!(
            read_record("\"a\nb").unwrap_err().to_string(),
            "record on line 1; parse error on line 2, column 2: extraneous or missing \" in quoted-field"
        );
    }
}
