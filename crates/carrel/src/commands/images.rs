//! Image commands: images, image inspect, rmi, tag, history, image prune, load, save, import.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use carrel_core::units::{human_size, human_size_precision, time_ago};
use carrel_engine::Engine;
use carrel_engine::images::import::ImportOptions;
use carrel_engine::images::load::LoadInput;
use carrel_engine::images::{DeleteRecord, ImageFilter};

use super::ExitStatus;
use crate::cli::{
    HistoryArgs, ImageListArgs, ImagePruneArgs, ImportArgs, ImportBusyboxArgs, InspectArgs,
    LoadArgs, RemoveImageArgs, SaveArgs, TagArgs,
};
use crate::format::{render_inspect, render_list};
use crate::progress::TerminalProgress;

/// One row of `carrel images`, with the docker CLI's template field names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImageRow {
    containers: String,
    created_at: String,
    created_since: String,
    digest: String,
    #[serde(rename = "ID")]
    id: String,
    repository: String,
    shared_size: String,
    size: String,
    tag: String,
    unique_size: String,
    virtual_size: String,
}

const IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
const IMAGES_HEADERS: &[(&str, &str)] = &[
    ("Containers", "CONTAINERS"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("Digest", "DIGEST"),
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("SharedSize", "SHARED SIZE"),
    ("Size", "SIZE"),
    ("Tag", "TAG"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("VirtualSize", "VIRTUAL SIZE"),
];

/// Docker's `CreatedAt` form: `2024-01-02 03:04:05 +0000 UTC`.
fn created_at(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S +0000 UTC")
        .to_string()
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        carrel_core::id::short(id).to_string()
    }
}

fn parse_filters(filters: &[String]) -> Result<ImageFilter> {
    let mut f = ImageFilter::default();
    for raw in filters {
        let Some((key, value)) = raw.split_once('=') else {
            bail!("bad format of filter (expected name=value)");
        };
        match key {
            "dangling" => match value {
                "true" | "1" => f.dangling = Some(true),
                "false" | "0" => f.dangling = Some(false),
                _ => bail!("invalid filter 'dangling={value}'"),
            },
            "reference" => f.reference.push(value.to_string()),
            "label" => f.label.push(value.to_string()),
            other => bail!("invalid filter '{other}'"),
        }
    }
    Ok(f)
}

/// `carrel images`.
pub fn list(engine: &Engine, a: &ImageListArgs) -> Result<u8> {
    let mut filter = parse_filters(&a.filter)?;
    if let Some(repo) = &a.repository {
        filter.reference.push(repo.clone());
    }
    let images = engine.image_list(&filter)?;
    let mut rows = Vec::new();
    for img in &images {
        let tags: Vec<(String, String)> = if img.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            img.repo_tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => (r.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".to_string()),
                })
                .collect()
        };
        for (repository, tag) in tags {
            rows.push(ImageRow {
                containers: "N/A".into(),
                created_at: created_at(img.created),
                created_since: time_ago(img.created),
                digest: "<none>".into(),
                id: short_id(&img.id, a.no_trunc),
                repository,
                shared_size: "N/A".into(),
                size: human_size_precision(img.size as f64, 3),
                tag,
                unique_size: "N/A".into(),
                virtual_size: human_size_precision(img.size as f64, 3),
            });
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", r.id)?;
        }
        out.flush()?;
        return Ok(0);
    }
    out.write_all(render_list(&a.format, IMAGES_TABLE, IMAGES_HEADERS, &rows)?.as_bytes())?;
    out.flush()?;
    Ok(0)
}

/// `carrel image inspect` (`kind` = image), `carrel container inspect` (`kind` = container) and
/// `carrel inspect` (either: a container first, then an image, as Docker looks them up).
pub fn inspect_objects(engine: &Engine, a: &InspectArgs, kind: Option<&str>) -> Result<u8> {
    let kind = kind.or(a.kind.as_deref());
    if let Some(k) = kind
        && k != "image"
        && k != "container"
    {
        bail!("\"{k}\" is not a valid value for --type");
    }
    let mut found: Vec<serde_json::Value> = Vec::new();
    let mut failed = false;
    for name in &a.names {
        let container = if kind != Some("image") {
            engine
                .container_inspect(name)
                .map(|c| serde_json::to_value(c).unwrap_or_default())
        } else {
            Err(carrel_engine::EngineError::NotFound(String::new()))
        };
        let result = match container {
            Ok(v) => Ok(v),
            Err(ce) if kind == Some("container") => Err(ce),
            Err(_) => engine
                .image_inspect(name)
                .map(|i| serde_json::to_value(i).unwrap_or_default()),
        };
        match result {
            Ok(v) => found.push(v),
            Err(e) => {
                let msg = match (kind, e.to_string().starts_with("No such")) {
                    (None, true) => format!("No such object: {name}"),
                    _ => e.to_string(),
                };
                eprintln!("Error: {msg}");
                failed = true;
            }
        }
    }
    let text = render_inspect(&a.format, &found)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(0)
}

/// `carrel image inspect`.
pub fn inspect(engine: &Engine, a: &InspectArgs) -> Result<u8> {
    inspect_objects(engine, a, Some("image"))
}

/// `carrel rmi`.
pub fn remove(engine: &Engine, a: &RemoveImageArgs) -> Result<u8> {
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for name in &a.names {
        match engine.image_remove(name, a.force) {
            Ok(records) => print_records(&mut out, &records, false)?,
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

fn print_records(out: &mut dyn Write, records: &[DeleteRecord], lower: bool) -> Result<()> {
    for r in records {
        match (r, lower) {
            (DeleteRecord::Untagged(t), false) => writeln!(out, "Untagged: {t}")?,
            (DeleteRecord::Deleted(d), false) => writeln!(out, "Deleted: {d}")?,
            (DeleteRecord::Untagged(t), true) => writeln!(out, "untagged: {t}")?,
            (DeleteRecord::Deleted(d), true) => writeln!(out, "deleted: {d}")?,
        }
    }
    Ok(())
}

/// `carrel tag`.
pub fn tag(engine: &Engine, a: &TagArgs) -> Result<u8> {
    engine.image_tag(&a.source, &a.target)?;
    Ok(0)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct HistoryRow {
    #[serde(rename = "ID")]
    id: String,
    created_since: String,
    created_at: String,
    created_by: String,
    size: String,
    comment: String,
}

const HISTORY_TABLE: &str =
    "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";
const HISTORY_HEADERS: &[(&str, &str)] = &[
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

/// Docker's `Ellipsis`: cut to `width` characters, the last being `…`.
fn ellipsis(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `carrel history`.
pub fn history(engine: &Engine, a: &HistoryArgs) -> Result<u8> {
    let items = engine.image_history(&a.name)?;
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for i in &items {
            writeln!(
                out,
                "{}",
                if i.id == "<missing>" {
                    i.id.clone()
                } else {
                    short_id(&i.id, a.no_trunc)
                }
            )?;
        }
        return Ok(0);
    }
    let rows: Vec<HistoryRow> = items
        .iter()
        .map(|i| {
            let created_by = i.created_by.replace('\t', " ");
            HistoryRow {
                id: if i.id == "<missing>" {
                    i.id.clone()
                } else {
                    short_id(&i.id, a.no_trunc)
                },
                created_since: if a.human {
                    time_ago(i.created)
                } else {
                    created_rfc3339(i.created)
                },
                created_at: created_rfc3339(i.created),
                created_by: if a.no_trunc {
                    created_by
                } else {
                    ellipsis(&created_by, 45)
                },
                size: if a.human {
                    human_size_precision(i.size as f64, 3)
                } else {
                    i.size.to_string()
                },
                comment: i.comment.clone(),
            }
        })
        .collect();
    out.write_all(render_list(&a.format, HISTORY_TABLE, HISTORY_HEADERS, &rows)?.as_bytes())?;
    Ok(0)
}

fn created_rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `carrel image prune`.
pub fn prune(engine: &Engine, a: &ImagePruneArgs) -> Result<u8> {
    let filter = parse_filters(&a.filter)?;
    if !a.force {
        let warning = if a.all {
            "WARNING! This will remove all images without at least one container associated to them."
        } else {
            "WARNING! This will remove all dangling images."
        };
        println!("{warning}");
        if !super::confirm("Are you sure you want to continue?") {
            return Ok(0);
        }
    }
    let report = engine.image_prune(a.all, &filter)?;
    let mut out = std::io::stdout().lock();
    if !report.deleted.is_empty() {
        writeln!(out, "Deleted Images:")?;
        print_records(&mut out, &report.deleted, true)?;
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(report.reclaimed)
    )?;
    Ok(0)
}

/// `carrel load`.
pub fn load(engine: &Engine, a: &LoadArgs) -> Result<u8> {
    let input = match &a.input {
        Some(p) => LoadInput::File(p.clone()),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            LoadInput::Stream(Box::new(std::io::stdin()))
        }
    };
    let progress = TerminalProgress::new(a.quiet);
    let loaded = engine.image_load(input, &progress)?;
    let mut out = std::io::stdout().lock();
    for img in loaded {
        for (tag, old) in &img.moved_tags {
            writeln!(
                out,
                "The image {tag} already exists, renaming the old one with ID {old} to empty string"
            )?;
        }
        if img.tags.is_empty() {
            writeln!(out, "Loaded image ID: {}", img.id)?;
        }
        for t in &img.tags {
            writeln!(out, "Loaded image: {t}")?;
        }
    }
    Ok(0)
}

/// `carrel save`.
pub fn save(engine: &Engine, a: &SaveArgs) -> Result<u8> {
    let progress = TerminalProgress::new(false);
    match &a.output {
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            engine.image_save(&a.names, &mut out, &progress)?;
            out.flush()?;
        }
        Some(path) => {
            // Write beside the target and rename, so a failed save leaves no partial file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile_in(dir, path)?;
            let result = (|| -> Result<()> {
                let file = std::fs::File::create(&tmp)
                    .with_context(|| format!("failed to create {}", tmp.display()))?;
                let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                engine.image_save(&a.names, &mut out, &progress)?;
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("failed to write {}", path.display()))?;
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

fn tempfile_in(dir: &std::path::Path, target: &std::path::Path) -> Result<std::path::PathBuf> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    if !dir.is_dir() {
        bail!(
            "invalid output path: directory {} does not exist",
            dir.display()
        );
    }
    Ok(dir.join(format!(".{name}.carrel-tmp-{}", std::process::id())))
}

/// `carrel import`.
pub fn import(engine: &Engine, a: &ImportArgs) -> Result<u8> {
    let input = if a.source == "-" {
        LoadInput::Stream(Box::new(std::io::stdin()))
    } else if a.source.contains("://") {
        bail!(
            "importing from a URL is not supported ({}): download the file and import it",
            a.source
        );
    } else {
        LoadInput::File(a.source.clone().into())
    };
    let opts = ImportOptions {
        reference: a.reference.clone(),
        changes: a.change.clone(),
        message: a.message.clone(),
        created: None,
    };
    let progress = TerminalProgress::new(false);
    let id = engine.image_import(input, &opts, &progress)?;
    println!("{id}");
    Ok(0)
}

/// `carrel image import-busybox`.
pub fn import_busybox(engine: &Engine, a: &ImportBusyboxArgs) -> Result<u8> {
    let id = engine.import_busybox(&a.busybox, &a.tag)?;
    println!("{id}");
    Ok(0)
}
