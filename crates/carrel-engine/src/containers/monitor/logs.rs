//! Docker's `json-file` log: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2006-01-02T15:04:05.999999999Z"}`.
//!
//! The monitor writes it ([`LogWriter`]); `carrel logs` reads it ([`read_log`], with `--tail`,
//! `-f` and `-t`).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest line kept in one record; longer output is split into partial records (Docker: 16K).
pub const MAX_LINE: usize = 16 * 1024;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The text, with its newline when the line was complete.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 time with nanoseconds, UTC, as Go's `RFC3339Nano` writes it.
    pub time: String,
}

/// Go's `time.RFC3339Nano` of now in UTC (trailing zeros of the fraction dropped).
pub fn now_rfc3339_nano() -> String {
    rfc3339_nano(chrono::Utc::now())
}

/// Go's `time.RFC3339Nano` of `t` (trailing zeros of the fraction dropped).
pub fn rfc3339_nano(t: chrono::DateTime<chrono::Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

/// Appends container output to the json-file log, one record per line.
#[derive(Debug)]
pub struct LogWriter {
    file: io::BufWriter<File>,
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    /// Open (append, create) the log at `path`.
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(LogWriter {
            file: io::BufWriter::with_capacity(64 * 1024, file),
            partial: [Vec::new(), Vec::new()],
        })
    }

    fn record(&mut self, stream: usize, text: &[u8]) -> io::Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(text).into_owned(),
            stream: if stream == 1 { "stderr" } else { "stdout" }.to_string(),
            time: now_rfc3339_nano(),
        };
        serde_json::to_writer(&mut self.file, &entry)?;
        self.file.write_all(b"\n")
    }

    /// Add output of `stream` (0: stdout, 1: stderr): complete lines become records, the rest
    /// waits for its newline (or is written as a partial record past [`MAX_LINE`]).
    pub fn write(&mut self, stream: usize, data: &[u8]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.partial[stream]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            self.record(stream, &buf[start..end])?;
            start = end;
        }
        while buf.len() - start >= MAX_LINE {
            self.record(stream, &buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        buf.drain(..start);
        self.partial[stream] = buf;
        Ok(())
    }

    /// Write out unfinished lines (at the end of the output).
    pub fn finish_partial(&mut self) -> io::Result<()> {
        for s in 0..2 {
            let buf = std::mem::take(&mut self.partial[s]);
            if !buf.is_empty() {
                self.record(s, &buf)?;
            }
        }
        self.flush()
    }

    /// Flush buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What `carrel logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only the last N records (`--tail N`; `None`: all).
    pub tail: Option<usize>,
    /// Keep reading as the log grows (`-f`), until `stop` says so and the log is drained.
    pub follow: bool,
}

/// Offset of the start of the last `n` lines of `file`, scanning backwards in chunks.
fn tail_offset(file: &mut File, n: usize) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    // The last byte is the newline ending the last record; it does not start a line.
    let mut skip_last = true;
    while pos > 0 {
        let chunk = buf.len().min(pos as usize);
        pos -= chunk as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..chunk])?;
        for i in (0..chunk).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == len - 1 {
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
        skip_last = false;
    }
    Ok(0)
}

/// Read the json-file log at `path`, calling `out` for every record (oldest first). With
/// `follow`, keep waiting for new records until `stop()` returns true (checked between polls,
/// e.g. "the container's monitor has ended"); the records written before that are still read.
/// A missing log is an empty one.
pub fn read_log(
    path: &Path,
    opts: &LogOptions,
    mut out: impl FnMut(&LogEntry) -> io::Result<()>,
    mut stop: impl FnMut() -> bool,
) -> io::Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !opts.follow => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => loop {
            if stop() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(f) = File::open(path) {
                break f;
            }
        },
        Err(e) => return Err(e),
    };
    let start = match opts.tail {
        Some(n) => tail_offset(&mut file, n)?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let mut stopping = false;
    loop {
        let n = reader.read_until(b'\n', &mut line)?;
        if n > 0 && line.ends_with(b"\n") {
            if let Ok(entry) = serde_json::from_slice::<LogEntry>(&line) {
                out(&entry)?;
            }
            line.clear();
            continue;
        }
        // At the end (maybe in the middle of a record being written).
        if !opts.follow || stopping {
            return Ok(());
        }
        if stop() {
            // Read once more: records written just before the end are not lost.
            stopping = true;
            continue;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `carrel logs [-f] [--tail N] [-t]`: copy the records of the json-file log at `path` to
/// `stdout` and `stderr` by their stream, following (until `stop()`) when asked.
pub fn follow_log(
    path: &Path,
    opts: &LogOptions,
    timestamps: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    stop: impl FnMut() -> bool,
) -> io::Result<()> {
    read_log(
        path,
        opts,
        |e| {
            let out: &mut dyn Write = if e.stream == "stderr" {
                &mut *stderr
            } else {
                &mut *stdout
            };
            out.write_all(&format_entry(e, timestamps))?;
            if opts.follow {
                out.flush()?;
            }
            Ok(())
        },
        stop,
    )?;
    stdout.flush()?;
    stderr.flush()
}

/// Format one record as `carrel logs` prints it: the text, prefixed by its time and a space with
/// `timestamps` (`-t`).
pub fn format_entry(e: &LogEntry, timestamps: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.log.len() + 32);
    if timestamps {
        out.extend_from_slice(e.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(e.log.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(path: &Path, tail: Option<usize>) -> Vec<LogEntry> {
        let mut got = Vec::new();
        read_log(
            path,
            &LogOptions {
                tail,
                follow: false,
            },
            |e| {
                got.push(e.clone());
                Ok(())
            },
            || true,
        )
        .unwrap();
        got
    }

    #[test]
    fn lines_streams_partials_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-json.log");
        let mut w = LogWriter::open(&p).unwrap();
        w.write(0, b"one\ntw").unwrap();
        w.write(1, b"err\n").unwrap();
        w.write(0, b"o\nthree").unwrap();
        w.finish_partial().unwrap();
        let got = entries(&p, None);
        let logs: Vec<(&str, &str)> = got
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            logs,
            [
                ("stdout", "one\n"),
                ("stderr", "err\n"),
                ("stdout", "two\n"),
                ("stdout", "three")
            ]
        );
        assert!(got[0].time.ends_with('Z'));
        let tail: Vec<String> = entries(&p, Some(2)).into_iter().map(|e| e.log).collect();
        assert_eq!(tail, ["two\n", "three"]);
        assert!(entries(&p, Some(0)).is_empty());
        assert_eq!(entries(&p, Some(10)).len(), 4);
        assert!(entries(&dir.path().join("missing"), None).is_empty());
        let long = vec![b'a'; MAX_LINE + 10];
        w.write(0, &long).unwrap();
        w.flush().unwrap();
        assert_eq!(entries(&p, Some(1))[0].log.len(), MAX_LINE);
    }

    #[test]
    fn follow_splits_streams() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let mut w = LogWriter::open(&p).unwrap();
        w.write(0, b"o1\n").unwrap();
        w.write(1, b"e1\n").unwrap();
        w.write(0, b"o2\n").unwrap();
        w.flush().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let opts = LogOptions {
            tail: Some(2),
            follow: true,
        };
        follow_log(&p, &opts, false, &mut out, &mut err, || true).unwrap();
        assert_eq!(out, b"o2\n");
        assert_eq!(err, b"e1\n");
    }

    #[test]
    fn go_time_format() {
        use chrono::TimeZone;
        let t = chrono::Utc
            .timestamp_opt(1_700_000_000, 120_000_000)
            .unwrap();
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.12Z");
        let t = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20Z");
        let e = LogEntry {
            log: "hi\n".into(),
            stream: "stdout".into(),
            time: "T".into(),
        };
        assert_eq!(format_entry(&e, true), b"T hi\n");
    }
}
