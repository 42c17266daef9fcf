//! Docker's human-readable units: sizes (`1.24MB`), durations (`2 hours`) and size parsing (`1g`).
//!
//! These follow the formatting rules of the `go-units` package the Docker CLI uses, including
//! Go's `%g` verb, so columns line up with what Docker users and scripts expect.

use std::time::Duration;

const DECIMAL_UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY_UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// Decimal size with `precision` significant digits, e.g. `human_size_precision(1_240_191.0, 3)`
/// is `"1.24MB"` (what `docker images` prints).
pub fn human_size_precision(size: f64, precision: usize) -> String {
    let (value, unit) = scale(size, 1000.0, &DECIMAL_UNITS);
    format!("{}{}", format_g(value, precision), unit)
}

/// Decimal size with 4 significant digits (Docker's `units.HumanSize`, used by `system df`).
pub fn human_size(size: u64) -> String {
    human_size_precision(size as f64, 4)
}

/// Binary size with 4 significant digits, e.g. `1.5GiB` (Docker's `units.BytesSize`).
pub fn bytes_size(size: u64) -> String {
    let (value, unit) = scale(size as f64, 1024.0, &BINARY_UNITS);
    format!("{}{}", format_g(value, 4), unit)
}

fn scale(mut size: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    (size, units[i])
}

/// Go's `fmt.Sprintf("%.*g", precision, v)` for non-negative finite values.
pub fn format_g(v: f64, precision: usize) -> String {
    let p = precision.max(1);
    if v == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= p as i32 {
        let m = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Docker's `units.HumanDuration`: "Less than a second", "About a minute", "3 hours", "2 weeks".
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours_f = d.as_secs_f64() / 3600.0;
    let hours = hours_f.round() as u64;
    if seconds < 1 {
        "Less than a second".into()
    } else if seconds == 1 {
        "1 second".into()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", (hours_f as u64) / 24 / 365)
    }
}

/// "N units ago" for a unix timestamp in seconds, as `docker images` shows `CREATED`.
pub fn time_ago(unix_secs: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let d = Duration::from_secs(now.saturating_sub(unix_secs).max(0) as u64);
    format!("{} ago", human_duration(d))
}

/// Why a size string could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size: '{0}'")]
pub struct SizeParseError(pub String);

/// Parse a size with binary multipliers like Docker's `units.RAMInBytes`: `1024`, `64k`, `1g`,
/// `1.5GB`, `10MiB`.
pub fn parse_ram_bytes(s: &str) -> Result<i64, SizeParseError> {
    let err = || SizeParseError(s.to_string());
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, rest) = t.split_at(num_end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars();
    let mult: f64 = match chars.next().map(|c| c.to_ascii_lowercase()) {
        None => 1.0,
        Some('b') if chars.as_str().is_empty() => 1.0,
        Some(c) => {
            let m = match c {
                'k' => 1024f64,
                'm' => 1024f64.powi(2),
                'g' => 1024f64.powi(3),
                't' => 1024f64.powi(4),
                'p' => 1024f64.powi(5),
                _ => return Err(err()),
            };
            let tail = chars.as_str().to_ascii_lowercase();
            if !matches!(tail.as_str(), "" | "b" | "i" | "ib") {
                return Err(err());
            }
            m
        }
    };
    Ok((value * mult) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_go_units() {
        assert_eq!(human_size_precision(1_240_191.0, 3), "1.24MB");
        assert_eq!(human_size_precision(1_985_568.0, 3), "1.99MB");
        assert_eq!(human_size(12_345_678_901), "12.35GB");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size_precision(999_900.0, 3), "1e+03kB");
        assert_eq!(human_size(4096), "4.096kB");
        assert_eq!(bytes_size(1536), "1.5KiB");
    }

    #[test]
    fn durations_match_go_units() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(59)), "59 seconds");
        assert_eq!(human_duration(Duration::from_secs(60)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(45 * 60)), "45 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "About an hour");
        assert_eq!(human_duration(Duration::from_secs(5 * 3600)), "5 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
        assert_eq!(human_duration(Duration::from_secs(20 * 86400)), "2 weeks");
        assert_eq!(human_duration(Duration::from_secs(90 * 86400)), "3 months");
        assert_eq!(human_duration(Duration::from_secs(800 * 86400)), "2 years");
    }

    #[test]
    fn ram_bytes() {
        assert_eq!(parse_ram_bytes("1024"), Ok(1024));
        assert_eq!(parse_ram_bytes("64k"), Ok(65536));
        assert_eq!(parse_ram_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_ram_bytes("1GB"), Ok(1 << 30));
        assert_eq!(parse_ram_bytes("10MiB"), Ok(10 << 20));
        assert!(parse_ram_bytes("abc").is_err());
        assert!(parse_ram_bytes("1x").is_err());
        assert!(parse_ram_bytes("").is_err());
    }
}
