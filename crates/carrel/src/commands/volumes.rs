//! `carrel volume create|ls|inspect|rm|prune|export|import`, with Docker's flags, tables and
//! texts (`export`/`import` are carrel's own: Docker has no volume backup command).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use anyhow::{Result, bail};
use serde::Serialize;

use carrel_core::units::human_size;
use carrel_engine::Engine;
use carrel_engine::volumes::{
    ExportOptions, ImportOptions, PruneFilter, Volume, VolumeCreate, VolumeFilter,
};

use super::ExitStatus;
use crate::cli::{
    VolumeCreateArgs, VolumeExportArgs, VolumeImportArgs, VolumeInspectArgs, VolumeListArgs,
    VolumePruneArgs, VolumeRmArgs,
};
use crate::format::{Inspector, render_list};

/// Docker's `opts.ValidateLabel` and map split: `key[=value]`.
fn parse_labels(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in raw {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!("invalid label '{l}': empty name");
        }
        if k.chars().any(char::is_whitespace) {
            bail!("label '{k}' contains whitespaces");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `-o key=value` (split at the first `=`; a key alone has an empty value; the last one wins).
fn parse_opts(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap_or((o.as_str(), ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `carrel volume create`.
pub fn create(engine: &Engine, a: &VolumeCreateArgs) -> Result<u8> {
    if a.names.len() > 1 {
        eprintln!(
            "carrel: 'carrel volume create' requires at most 1 argument\n\nUsage:  carrel volume create [OPTIONS] [VOLUME]\n\nSee 'carrel volume create --help'."
        );
        return Err(ExitStatus(1).into());
    }
    let name = match (&a.name, a.names.first()) {
        (Some(_), Some(_)) => bail!(
            "conflicting options: cannot specify a volume-name through both --name and as a positional arg"
        ),
        (Some(n), None) | (None, Some(n)) => Some(n.clone()),
        (None, None) => None,
    };
    let req = VolumeCreate {
        name,
        driver: Some(a.driver.clone()),
        labels: parse_labels(&a.label)?,
        options: parse_opts(&a.opt),
    };
    let v = engine.volume_create_named(&req)?;
    println!("{}", v.name);
    Ok(0)
}

/// One `volume ls` row, with docker/cli's field names, borrowed from its volume (10,000 rows
/// must not cost 100,000 string copies).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeRow<'a> {
    availability: &'static str,
    driver: &'a str,
    group: &'static str,
    labels: String,
    links: &'static str,
    mountpoint: std::borrow::Cow<'a, str>,
    name: &'a str,
    scope: &'a str,
    size: &'static str,
    status: &'static str,
}

const VOLUMES_TABLE: &str = "table {{.Driver}}\t{{.Name}}";
const VOLUMES_HEADERS: &[(&str, &str)] = &[
    ("Availability", "AVAILABILITY"),
    ("Driver", "DRIVER"),
    ("Group", "GROUP"),
    ("Labels", "LABELS"),
    ("Links", "LINKS"),
    ("Mountpoint", "MOUNTPOINT"),
    ("Name", "VOLUME NAME"),
    ("Scope", "SCOPE"),
    ("Size", "SIZE"),
    ("Status", "STATUS"),
];

fn row_of(v: &Volume) -> VolumeRow<'_> {
    VolumeRow {
        availability: "N/A",
        driver: &v.driver,
        group: "N/A",
        labels: v
            .labels
            .iter()
            .map(|(k, val)| format!("{k}={val}"))
            .collect::<Vec<_>>()
            .join(","),
        links: "N/A",
        mountpoint: v.mountpoint.to_string_lossy(),
        name: &v.name,
        scope: &v.scope,
        size: "N/A",
        status: "N/A",
    }
}

/// docker/cli's `{{.Label "key"}}` is a method call, which the template engine lacks: each one
/// is rewritten to a field of its own (`.Label_0`, …) filled per row. Returns the template and
/// the keys in order.
fn rewrite_label_calls(tmpl: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(tmpl.len());
    let mut keys: Vec<String> = Vec::new();
    let mut rest = tmpl;
    while let Some(i) = rest.find(".Label") {
        let (before, after) = rest.split_at(i);
        out.push_str(before);
        let tail = &after[".Label".len()..];
        let trimmed = tail.trim_start_matches([' ', '\t']);
        let parsed = (trimmed.len() < tail.len())
            .then(|| trimmed.strip_prefix('"'))
            .flatten()
            .and_then(|q| {
                let mut key = String::new();
                let mut chars = q.char_indices();
                while let Some((j, c)) = chars.next() {
                    match c {
                        '"' => return Some((key, &q[j + 1..])),
                        '\\' => key.push(chars.next()?.1),
                        c => key.push(c),
                    }
                }
                None
            });
        match parsed {
            Some((key, remaining)) => {
                let n = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                    keys.push(key.clone());
                    keys.len() - 1
                });
                out.push_str(&format!(".Label_{n}"));
                rest = remaining;
            }
            None => {
                out.push_str(".Label");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    (out, keys)
}

/// docker/cli's header of a `.Label "a.b-c"` column: the last dotted part, `-`/`_` as spaces.
fn label_header(key: &str) -> String {
    key.rsplit('.')
        .next()
        .unwrap_or(key)
        .replace(['-', '_'], " ")
        .to_uppercase()
}

/// `carrel volume ls`.
pub fn list(engine: &Engine, a: &VolumeListArgs) -> Result<u8> {
    let filter = VolumeFilter::parse(&a.filter)?;
    let volumes = engine.volume_list(&filter)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.quiet {
        for v in &volumes {
            writeln!(out, "{}", v.name)?;
        }
        out.flush()?;
        return Ok(0);
    }
    let (format, keys) = rewrite_label_calls(&a.format);
    let text = if keys.is_empty() {
        let rows: Vec<VolumeRow> = volumes.iter().map(row_of).collect();
        render_list(&a.format, VOLUMES_TABLE, VOLUMES_HEADERS, &rows)?
    } else {
        let rows: Vec<serde_json::Value> = volumes
            .iter()
            .map(|v| {
                let mut m = serde_json::to_value(row_of(v)).unwrap_or_default();
                if let Some(obj) = m.as_object_mut() {
                    for (i, k) in keys.iter().enumerate() {
                        let val = v.labels.get(k).cloned().unwrap_or_default();
                        obj.insert(format!("Label_{i}"), serde_json::Value::String(val));
                    }
                }
                m
            })
            .collect();
        let label_headers: Vec<(String, String)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("Label_{i}"), label_header(k)))
            .collect();
        let mut headers: Vec<(&str, &str)> = VOLUMES_HEADERS.to_vec();
        headers.extend(label_headers.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        render_list(&format, VOLUMES_TABLE, &headers, &rows)?
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(0)
}

/// `carrel volume inspect`.
pub fn inspect(engine: &Engine, a: &VolumeInspectArgs) -> Result<u8> {
    let mut insp = match Inspector::new(&a.format) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return Err(ExitStatus(64).into());
        }
    };
    let mut failed = false;
    for name in &a.names {
        if name.is_empty() {
            eprintln!("Error: invalid volume name or ID: value is empty");
            failed = true;
            continue;
        }
        match engine.volume_get(name) {
            Ok(v) => insp.add(&v.inspect())?,
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    insp.finish(&mut std::io::stdout().lock())?;
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(0)
}

/// `carrel volume rm`.
pub fn remove(engine: &Engine, a: &VolumeRmArgs) -> Result<u8> {
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for name in &a.names {
        match engine.volume_remove(name, a.force) {
            Ok(()) => writeln!(out, "{name}")?,
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(0)
}

/// `carrel volume prune`.
pub fn prune(engine: &Engine, a: &VolumePruneArgs) -> Result<u8> {
    if a.all
        && a.filter
            .iter()
            .any(|f| f.split_once('=').is_some_and(|(k, _)| k.trim() == "all"))
    {
        bail!("conflicting options: cannot specify both --all and --filter all=1");
    }
    let filter = PruneFilter::parse(&a.filter, a.all)?;
    if !a.force {
        if filter.all {
            println!(
                "WARNING! This will remove all local volumes not used by at least one container."
            );
        } else {
            println!(
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            );
        }
        if !super::confirm("Are you sure you want to continue?") {
            eprintln!("volume prune has been cancelled");
            return Ok(0);
        }
    }
    let report = engine.volume_prune(&filter)?;
    let mut out = std::io::stdout().lock();
    write_prune_report(&mut out, &report)?;
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(report.reclaimed)
    )?;
    Ok(0)
}

/// The `Deleted Volumes:` section of a prune (nothing when nothing was removed).
pub(super) fn write_prune_report(
    out: &mut dyn Write,
    report: &carrel_engine::volumes::VolumePruneReport,
) -> std::io::Result<()> {
    if report.deleted.is_empty() {
        return Ok(());
    }
    writeln!(out, "Deleted Volumes:")?;
    for n in &report.deleted {
        writeln!(out, "{n}")?;
    }
    writeln!(out)
}

/// `carrel volume export`.
pub fn export(engine: &Engine, a: &VolumeExportArgs) -> Result<u8> {
    let opts = ExportOptions { pause: !a.no_pause };
    match &a.output {
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            engine.volume_export(&a.name, &mut out, &opts)?;
            out.flush()?;
        }
        Some(path) => {
            // Written beside the target and renamed, so a failed export leaves no partial file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                bail!(
                    "invalid output path: directory {} does not exist",
                    dir.display()
                );
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "volume.tar".into());
            let tmp = dir.join(format!(".{name}.carrel-tmp-{}", std::process::id()));
            let result = (|| -> Result<()> {
                let file = std::fs::File::create(&tmp)?;
                let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                engine.volume_export(&a.name, &mut out, &opts)?;
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                std::fs::rename(&tmp, path)?;
                Ok(())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?;
        }
    }
    Ok(0)
}

/// `carrel volume import`.
pub fn import(engine: &Engine, a: &VolumeImportArgs) -> Result<u8> {
    let input: Box<dyn std::io::Read + Send> = if a.source == "-" {
        if std::io::stdin().is_terminal() {
            bail!("requested import from stdin, but stdin is a terminal");
        }
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(&a.source) {
            Ok(f) => Box::new(f),
            Err(e) => bail!("open {}: {e}", a.source),
        }
    };
    engine.volume_import(&a.name, input, &ImportOptions { force: a.force })?;
    Ok(0)
}

/// Docker's `Ellipsis`: cut to `width` characters, the last being `…`.
pub(super) fn ellipsis(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_calls_become_fields() {
        let (t, k) = rewrite_label_calls(
            "{{.Name}} {{.Label \"com.x\"}} {{.Labels}} {{.Label \"a\"}} {{.Label \"com.x\"}}",
        );
        assert_eq!(
            t,
            "{{.Name}} {{.Label_0}} {{.Labels}} {{.Label_1}} {{.Label_0}}"
        );
        assert_eq!(k, ["com.x", "a"]);
        assert_eq!(label_header("com.example.my-key"), "MY KEY");
        let (t, k) = rewrite_label_calls("{{.Label}}");
        assert_eq!((t.as_str(), k.len()), ("{{.Label}}", 0));
    }

    #[test]
    fn labels_and_options_parse_like_docker() {
        assert_eq!(
            parse_labels(&["=x".into()]).unwrap_err().to_string(),
            "invalid label '=x': empty name"
        );
        assert_eq!(
            parse_labels(&["a b=1".into()]).unwrap_err().to_string(),
            "label 'a b' contains whitespaces"
        );
        let o = parse_opts(&["o=addr=1.2.3.4,rw".into(), "type".into(), "type=nfs".into()]);
        assert_eq!(o["o"], "addr=1.2.3.4,rw");
        assert_eq!(o["type"], "nfs");
    }
}
