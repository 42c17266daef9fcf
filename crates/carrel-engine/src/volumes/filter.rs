//! `volume ls` and `volume prune` filters, with Docker's keys, semantics and error texts, and
//! Docker's natural name order.

use crate::volumes::{LOCAL_DRIVER, Volume};
use crate::{EngineError, Result};
use std::cmp::Ordering;

/// `volume ls --filter`.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    /// `dangling=true|1|false|0`: only unreferenced (true) or referenced (false) volumes.
    pub dangling: Option<bool>,
    /// `driver=`: exact driver names, ORed.
    pub driver: Vec<String>,
    /// `label=KEY` / `label=KEY=VALUE`: all must match.
    pub label: Vec<String>,
    /// `name=`: unanchored regular expressions, ORed (an invalid one never matches).
    pub name: Vec<regex::Regex>,
    /// Whether a `name=` filter was given (even if none of its patterns compiled).
    has_name: bool,
}

/// Split `key=value` filters as Docker's `filters.ParseFlag` does: key lower-cased and trimmed,
/// value trimmed.
fn split(raw: &[String]) -> Result<Vec<(String, String)>> {
    raw.iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_lowercase(), v.trim().to_string())),
            None => Err(EngineError::InvalidArgument(
                "bad format of filter (expected name=value)".into(),
            )),
        })
        .collect()
}

fn values<'a>(pairs: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn invalid_with(key: &str, vals: &[&str]) -> EngineError {
    EngineError::InvalidArgument(format!("invalid filter '{key}=[{}]'", vals.join(" ")))
}

/// `label=KEY` / `label=KEY=VALUE` against a volume's labels.
pub(crate) fn label_matches(v: &Volume, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, want)) => v.labels.get(k).is_some_and(|have| have == want),
        None => v.labels.contains_key(filter),
    }
}

impl VolumeFilter {
    /// Parse `--filter` values (`dangling`, `driver`, `label`, `name`), with Docker's errors.
    pub fn parse(raw: &[String]) -> Result<VolumeFilter> {
        let pairs = split(raw)?;
        if let Some((k, _)) = pairs
            .iter()
            .find(|(k, _)| !matches!(k.as_str(), "dangling" | "driver" | "label" | "name"))
        {
            return Err(EngineError::InvalidArgument(format!(
                "invalid filter '{k}'"
            )));
        }
        let mut f = VolumeFilter::default();
        let dangling = values(&pairs, "dangling");
        if !dangling.is_empty() {
            let yes = dangling.iter().any(|v| matches!(*v, "true" | "1"));
            let no = dangling.iter().any(|v| matches!(*v, "false" | "0"));
            let other = dangling
                .iter()
                .any(|v| !matches!(*v, "true" | "1" | "false" | "0"));
            if other || (yes && no) {
                return Err(invalid_with("dangling", &dangling));
            }
            f.dangling = Some(yes);
        }
        f.driver = values(&pairs, "driver")
            .into_iter()
            .map(String::from)
            .collect();
        f.label = values(&pairs, "label")
            .into_iter()
            .map(String::from)
            .collect();
        let names = values(&pairs, "name");
        f.has_name = !names.is_empty();
        f.name = names
            .into_iter()
            .filter_map(|n| regex::Regex::new(n).ok())
            .collect();
        Ok(f)
    }

    /// Whether `v`, referenced by `refs` containers, passes.
    pub fn matches(&self, v: &Volume, refs: u64) -> bool {
        self.dangling.is_none_or(|d| d == (refs == 0))
            && (self.driver.is_empty() || self.driver.contains(&v.driver))
            && self.label.iter().all(|l| label_matches(v, l))
            && (!self.has_name || self.name.iter().any(|r| r.is_match(&v.name)))
    }
}

/// `volume prune --filter` (and `--all`).
#[derive(Debug, Clone, Default)]
pub struct PruneFilter {
    /// Prune named volumes too (`--all`, `all=true`); otherwise only anonymous ones.
    pub all: bool,
    /// `label=`: the volume must carry all of them.
    pub label: Vec<String>,
    /// `label!=`: the volume is kept when it carries all of them.
    pub not_label: Vec<String>,
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl PruneFilter {
    /// Parse `--filter` values (`label`, `label!`, `all`), with Docker's errors; `all` is the
    /// `--all` flag (the CLI refuses it together with an `all=` filter).
    pub fn parse(raw: &[String], all: bool) -> Result<PruneFilter> {
        let pairs: Vec<(String, String)> = raw
            .iter()
            .map(|f| {
                // `label!=k=v`: the key ends at the first `=`, so `label!` is the key.
                match f.split_once('=') {
                    Some((k, v)) => Ok((k.trim().to_lowercase(), v.trim().to_string())),
                    None => Err(EngineError::InvalidArgument(
                        "bad format of filter (expected name=value)".into(),
                    )),
                }
            })
            .collect::<Result<_>>()?;
        if let Some((k, _)) = pairs
            .iter()
            .find(|(k, _)| !matches!(k.as_str(), "label" | "label!" | "all"))
        {
            return Err(EngineError::InvalidArgument(format!(
                "invalid filter '{k}'"
            )));
        }
        let mut f = PruneFilter {
            all,
            label: values(&pairs, "label")
                .into_iter()
                .map(String::from)
                .collect(),
            not_label: values(&pairs, "label!")
                .into_iter()
                .map(String::from)
                .collect(),
        };
        let alls = values(&pairs, "all");
        match alls.as_slice() {
            [] => {}
            [v] => {
                f.all = parse_go_bool(v).ok_or_else(|| {
                    EngineError::InvalidArgument(format!(
                        "invalid filter 'all': strconv.ParseBool: parsing \"{v}\": invalid syntax"
                    ))
                })?;
            }
            many => {
                return Err(EngineError::InvalidArgument(format!(
                    "invalid filter 'all=[{}]': only one value is expected",
                    many.join(" ")
                )));
            }
        }
        Ok(f)
    }

    /// Whether `v` (referenced by `refs` containers) is pruned: a `local` volume without
    /// options that no container references, anonymous unless `all`, passing the label filters.
    pub fn matches(&self, v: &Volume, refs: u64) -> bool {
        v.driver == LOCAL_DRIVER
            && refs == 0
            && v.options.is_empty()
            && (self.all || v.is_anonymous())
            && self.label.iter().all(|l| label_matches(v, l))
            && (self.not_label.is_empty() || !self.not_label.iter().all(|l| label_matches(v, l)))
    }
}

/// Docker's natural order (`sortorder.NaturalLess`) as an ordering, in one pass: runs of
/// digits compare as numbers (a digit sorts before any other byte).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (s1, s2) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    while i < s1.len() && j < s2.len() {
        let (c1, c2) = (s1[i], s2[j]);
        let (d1, d2) = (c1.is_ascii_digit(), c2.is_ascii_digit());
        if d1 != d2 {
            return if d1 {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if !d1 {
            if c1 != c2 {
                return c1.cmp(&c2);
            }
            i += 1;
            j += 1;
            continue;
        }
        while i < s1.len() && s1[i] == b'0' {
            i += 1;
        }
        while j < s2.len() && s2[j] == b'0' {
            j += 1;
        }
        let (nz1, nz2) = (i, j);
        while i < s1.len() && s1[i].is_ascii_digit() {
            i += 1;
        }
        while j < s2.len() && s2[j].is_ascii_digit() {
            j += 1;
        }
        // A longer number (without leading zeros) is the bigger one, equal lengths compare
        // digit by digit, and equal numbers by where their significant digits start.
        let order = (i - nz1)
            .cmp(&(j - nz2))
            .then_with(|| s1[nz1..i].cmp(&s2[nz2..j]))
            .then_with(|| nz1.cmp(&nz2));
        if order != Ordering::Equal {
            return order;
        }
    }
    s1.len().cmp(&s2.len())
}

/// A sort key whose byte order is [`natural_cmp`]'s order, for sorting many names with one
/// scan of each: a run of digits becomes `0x00`, its length without leading zeros (4 bytes), its
/// significant digits and its count of leading zeros (4 bytes); any other byte `b` becomes
/// `0x01 b`, so that digits sort first.
pub fn natural_key(name: &str) -> Vec<u8> {
    let s = name.as_bytes();
    let mut key = Vec::with_capacity(s.len() * 2 + 8);
    let mut i = 0;
    while i < s.len() {
        if !s[i].is_ascii_digit() {
            key.extend_from_slice(&[1, s[i]]);
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && s[i] == b'0' {
            i += 1;
        }
        let significant = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        key.push(0);
        key.extend_from_slice(&((i - significant) as u32).to_be_bytes());
        key.extend_from_slice(&s[significant..i]);
        key.extend_from_slice(&((significant - start) as u32).to_be_bytes());
    }
    key
}

/// Docker's natural order (`sortorder.NaturalLess`): whether `a` sorts before `b`.
pub fn natural_less(a: &str, b: &str) -> bool {
    natural_cmp(a, b) == Ordering::Less
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn natural_key_orders_as_natural_cmp() {
        let names = [
            "",
            "a",
            "a0",
            "a00",
            "a000",
            "a1",
            "a01",
            "a001",
            "a1b",
            "a01b",
            "a10",
            "a2",
            "a9",
            "a09",
            "a010",
            "b",
            "ab",
            "a.b",
            "a-1",
            "a_1",
            "1",
            "01",
            "001",
            "10",
            "2",
            "0",
            "00",
            "x1y2",
            "x1y10",
            "x01y2",
            "x1y02",
            "vol9",
            "vol10",
            "vol100",
            "Vol1",
            "é1",
            "e1",
            "z",
            "99999999999999999999",
            "100000000000000000000",
            "a1a1",
            "a1a01",
        ];
        for a in names {
            for b in names {
                assert_eq!(
                    natural_key(a).cmp(&natural_key(b)),
                    natural_cmp(a, b),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    fn vol(name: &str, labels: &[(&str, &str)]) -> Volume {
        Volume {
            name: name.into(),
            driver: "local".into(),
            mountpoint: Default::default(),
            created: 0,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            options: BTreeMap::new(),
            scope: "local".into(),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn natural_order() {
        let mut names = vec!["v10", "v9", "v1", "a", "v01", "B", "v2b", "v2a"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["B", "a", "v1", "v01", "v2a", "v2b", "v9", "v10"]);
    }

    #[test]
    fn list_filters() {
        let err = |f: &[&str]| VolumeFilter::parse(&s(f)).unwrap_err().to_string();
        assert_eq!(
            err(&["dangling"]),
            "bad format of filter (expected name=value)"
        );
        assert_eq!(err(&["label!=a"]), "invalid filter 'label!'");
        assert_eq!(
            err(&["dangling=maybe"]),
            "invalid filter 'dangling=[maybe]'"
        );
        assert_eq!(
            err(&["dangling=true", "dangling=0"]),
            "invalid filter 'dangling=[true 0]'"
        );
        let v = vol("rosemary", &[("a", "1"), ("b", "")]);
        let ok = |f: &[&str], refs| VolumeFilter::parse(&s(f)).unwrap().matches(&v, refs);
        assert!(ok(&["name=rose"], 0));
        assert!(!ok(&["name=^mary"], 0));
        assert!(ok(&["name=^mary", "name=y$"], 0));
        assert!(!ok(&["name=("], 0));
        assert!(ok(&["label=a", "label=b="], 0));
        assert!(!ok(&["label=a", "label=c"], 0));
        assert!(ok(&["Dangling = true"], 0));
        assert!(!ok(&["dangling=1"], 2));
        assert!(ok(&["dangling=false"], 2));
        assert!(ok(&["driver=other", "driver=local"], 0));
    }

    #[test]
    fn prune_filters() {
        let err = |f: &[&str]| PruneFilter::parse(&s(f), false).unwrap_err().to_string();
        assert_eq!(err(&["until=1h"]), "invalid filter 'until'");
        assert_eq!(
            err(&["all=maybe"]),
            "invalid filter 'all': strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
        assert_eq!(
            err(&["all=1", "all=0"]),
            "invalid filter 'all=[1 0]': only one value is expected"
        );
        let anon = vol("x1", &[(crate::volumes::ANONYMOUS_LABEL, ""), ("k", "v")]);
        let named = vol("x2", &[("k", "v")]);
        let p = PruneFilter::parse(&[], false).unwrap();
        assert!(p.matches(&anon, 0) && !p.matches(&named, 0) && !p.matches(&anon, 1));
        let p = PruneFilter::parse(&s(&["all=true"]), false).unwrap();
        assert!(p.matches(&named, 0));
        let p = PruneFilter::parse(&s(&["label!=k=v"]), true).unwrap();
        assert!(!p.matches(&named, 0));
        let p = PruneFilter::parse(&s(&["label=k", "label=z"]), true).unwrap();
        assert!(!p.matches(&named, 0));
    }
}
