//! `carrel info`, `carrel version`, `carrel system check`, `carrel system df`, `carrel system prune`.

use std::io::Write;

use anyhow::Result;

use carrel_core::units::bytes_size;
use carrel_engine::Engine;

use super::ExitStatus;
use crate::cli::{CheckArgs, InfoArgs};
use crate::format::render_inspect;

/// `carrel version`.
pub fn version() -> Result<u8> {
    println!("carrel version {}", env!("CARGO_PKG_VERSION"));
    Ok(0)
}

/// `carrel info`.
pub fn info(engine: &Engine, a: &InfoArgs) -> Result<u8> {
    let info = engine.info()?;
    let mut out = std::io::stdout().lock();
    if !a.format.is_empty() {
        let text = render_inspect(&a.format, &[&info])?;
        // Inspect-style rendering wraps a single object in an array for the default format.
        let text = if a.format == "json" {
            serde_json::to_string(&info)? + "\n"
        } else {
            text
        };
        out.write_all(text.as_bytes())?;
        return Ok(0);
    }
    let f = &info.kernel_features;
    let yes = |b: bool| if b { "true" } else { "false" };
    writeln!(out, "Containers: {}", info.containers)?;
    writeln!(out, " Running: {}", info.containers_running)?;
    writeln!(out, " Paused: {}", info.containers_paused)?;
    writeln!(out, " Stopped: {}", info.containers_stopped)?;
    writeln!(out, "Images: {}", info.images)?;
    writeln!(out, "Server Version: {}", info.server_version)?;
    writeln!(out, "Storage Driver: {}", info.driver)?;
    for [k, v] in &info.driver_status {
        writeln!(out, " {k}: {v}")?;
    }
    writeln!(out, "Runtimes: {}", info.runtimes.join(" "))?;
    writeln!(out, "Default Runtime: {}", info.default_runtime)?;
    for [name, why] in &info.unusable_runtimes {
        writeln!(out, " {name} (unusable here): {why}")?;
    }
    writeln!(out, "Kernel Features:")?;
    writeln!(out, " Overlayfs: {}", yes(f.overlay))?;
    writeln!(
        out,
        " Overlay lowerdir+ (500 layers): {}",
        yes(f.overlay_lowerdir_plus)
    )?;
    writeln!(out, " Overlay metacopy: {}", yes(f.overlay_metacopy))?;
    writeln!(out, " Reflink: {}", yes(f.reflink))?;
    writeln!(
        out,
        " Recursive read-only mounts: {}",
        yes(f.recursive_readonly)
    )?;
    writeln!(out, " Idmapped mounts: {}", yes(f.idmapped_mounts))?;
    writeln!(out, " Project quotas: {}", yes(f.project_quota))?;
    writeln!(out, "Kernel Version: {}", info.kernel_version)?;
    writeln!(out, "Operating System: {}", info.operating_system)?;
    writeln!(out, "OSType: {}", info.os_type)?;
    writeln!(out, "Architecture: {}", info.architecture)?;
    writeln!(out, "CPUs: {}", info.ncpu)?;
    writeln!(out, "Total Memory: {}", bytes_size(info.mem_total))?;
    writeln!(out, "Name: {}", info.name)?;
    writeln!(out, "ID: {}", info.id)?;
    writeln!(out, "Carrel Root Dir: {}", info.docker_root_dir)?;
    Ok(0)
}

/// `carrel system check [--repair]`.
pub fn check(engine: &Engine, a: &CheckArgs) -> Result<u8> {
    let r = engine.system_check(a.repair)?;
    let mut out = std::io::stdout().lock();
    let mut section = |title: &str, items: Vec<String>| -> std::io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        writeln!(out, "{title}:")?;
        for i in items {
            writeln!(out, "  {i}")?;
        }
        Ok(())
    };
    let paths = |v: &[std::path::PathBuf]| v.iter().map(|p| p.display().to_string()).collect();
    section("Database problems", r.database.clone())?;
    section("Interrupted work of dead processes", r.dead_leases.clone())?;
    section("Interrupted writes", paths(&r.ingest_leftovers))?;
    section("Orphan layer directories", paths(&r.orphan_dirs))?;
    section("Layers whose directory is missing", r.missing_dirs.clone())?;
    section("Blob files without a record", paths(&r.unrecorded_blobs))?;
    section(
        "Recorded blobs whose file is missing",
        r.missing_blobs.iter().map(|d| d.to_string()).collect(),
    )?;
    section(
        "Broken images",
        r.broken_images
            .iter()
            .map(|(i, w)| format!("{i}: {w}"))
            .collect(),
    )?;
    section("Unreferenced layers and blobs", r.garbage.clone())?;
    section("Repaired", r.repaired.clone())?;
    if r.is_clean() {
        writeln!(out, "No problems found.")?;
        return Ok(0);
    }
    if a.repair {
        writeln!(
            out,
            "Repaired what could be repaired; run `carrel system check` again to confirm."
        )?;
        return Ok(0);
    }
    writeln!(
        out,
        "Problems found; run `carrel system check --repair` to fix them."
    )?;
    Err(ExitStatus(1).into())
}

/// One row of `system df`, with docker/cli's field names.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct DfRow {
    active: String,
    reclaimable: String,
    size: String,
    total_count: String,
    #[serde(rename = "Type")]
    kind: String,
}

const DF_TABLE: &str = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}";
const DF_HEADERS: &[(&str, &str)] = &[
    ("Type", "TYPE"),
    ("TotalCount", "TOTAL"),
    ("Active", "ACTIVE"),
    ("Size", "SIZE"),
    ("Reclaimable", "RECLAIMABLE"),
];

/// docker/cli's reclaimable column: `<size> (<percent>%)` when the total is above 0.
fn reclaimable(reclaimable: u64, total: u64) -> String {
    match (reclaimable * 100).checked_div(total) {
        Some(pct) => format!("{} ({pct}%)", carrel_core::units::human_size(reclaimable)),
        None => carrel_core::units::human_size(reclaimable),
    }
}

/// `carrel system df`.
pub fn df(engine: &Engine, a: &crate::cli::DfArgs) -> Result<u8> {
    use carrel_core::units::human_size;
    let du = engine.system_df()?;
    let mut out = std::io::stdout().lock();
    if a.verbose {
        return df_verbose(&mut out, &du).map(|()| 0);
    }
    let images_used: u64 = du
        .images
        .iter()
        .filter(|i| i.containers > 0)
        .map(|i| i.size - i.shared_size)
        .sum();
    let c_total: u64 = du.containers.iter().map(|c| c.size_rw).sum();
    let c_free: u64 = du
        .containers
        .iter()
        .filter(|c| !c.active)
        .map(|c| c.size_rw)
        .sum();
    let measured = du.volumes.iter().filter(|v| v.size >= 0);
    let v_total: u64 = measured.clone().map(|v| v.size as u64).sum();
    let v_used: u64 = measured
        .filter(|v| v.links > 0)
        .map(|v| v.size as u64)
        .sum();
    let rows = [
        DfRow {
            kind: "Images".into(),
            total_count: du.images.len().to_string(),
            active: du
                .images
                .iter()
                .filter(|i| i.containers > 0)
                .count()
                .to_string(),
            size: human_size(du.layers_size),
            reclaimable: reclaimable(du.layers_size.saturating_sub(images_used), du.layers_size),
        },
        DfRow {
            kind: "Containers".into(),
            total_count: du.containers.len().to_string(),
            active: du
                .containers
                .iter()
                .filter(|c| c.active)
                .count()
                .to_string(),
            size: human_size(c_total),
            reclaimable: reclaimable(c_free, c_total),
        },
        DfRow {
            kind: "Local Volumes".into(),
            total_count: du.volumes.len().to_string(),
            active: du
                .volumes
                .iter()
                .filter(|v| v.links > 0 || v.size < 0)
                .count()
                .to_string(),
            size: human_size(v_total),
            reclaimable: reclaimable(v_total - v_used, v_total),
        },
        DfRow {
            kind: "Build Cache".into(),
            total_count: "0".into(),
            active: "0".into(),
            size: human_size(du.build_cache),
            reclaimable: human_size(du.build_cache),
        },
    ];
    out.write_all(crate::format::render_list(&a.format, DF_TABLE, DF_HEADERS, &rows)?.as_bytes())?;
    Ok(0)
}

/// `system df -v`: Docker's sections.
fn df_verbose(out: &mut dyn Write, du: &carrel_engine::volumes::DiskUsage) -> Result<()> {
    use carrel_core::units::{human_size, human_size_precision, time_ago};
    let table = |rows: Vec<Vec<String>>| -> String {
        crate::format::tabwrite(&rows.iter().map(|r| r.join("\t") + "\n").collect::<String>())
    };
    writeln!(out, "Images space usage:\n")?;
    let mut rows = vec![
        [
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for i in &du.images {
        let short =
            i.id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>();
        let tags: Vec<(String, String)> = if i.repo_tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.repo_tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => (r.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in tags {
            rows.push(vec![
                repo,
                tag,
                short.clone(),
                time_ago(i.created),
                human_size_precision(i.size as f64, 3),
                human_size_precision(i.shared_size as f64, 3),
                human_size_precision((i.size - i.shared_size) as f64, 3),
                i.containers.to_string(),
            ]);
        }
    }
    out.write_all(table(rows).as_bytes())?;
    writeln!(out, "\nContainers space usage:\n")?;
    let mut rows = vec![
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "LOCAL VOLUMES",
            "SIZE",
            "CREATED",
            "STATUS",
            "NAMES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for c in &du.containers {
        rows.push(vec![
            c.id[..12].to_string(),
            c.image.clone(),
            format!("\"{}\"", super::volumes::ellipsis(&c.command, 20)),
            c.volumes.to_string(),
            human_size(c.size_rw),
            time_ago(c.created.div_euclid(1_000_000_000)),
            c.status.clone(),
            c.name.clone(),
        ]);
    }
    out.write_all(table(rows).as_bytes())?;
    writeln!(out, "\nLocal Volumes space usage:\n")?;
    let mut rows = vec![["VOLUME NAME", "LINKS", "SIZE"].map(String::from).to_vec()];
    for v in &du.volumes {
        rows.push(vec![
            v.name.clone(),
            v.links.to_string(),
            if v.size < 0 {
                "N/A".into()
            } else {
                human_size(v.size as u64)
            },
        ]);
    }
    out.write_all(table(rows).as_bytes())?;
    writeln!(out, "\nBuild cache usage: {}\n", human_size(du.build_cache))?;
    let rows = vec![
        [
            "CACHE ID",
            "CACHE TYPE",
            "SIZE",
            "CREATED",
            "LAST USED",
            "USAGE",
            "SHARED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    out.write_all(table(rows).as_bytes())?;
    Ok(())
}

/// `carrel system prune`: stopped containers, with `--volumes` unused anonymous volumes, and
/// dangling (with `-a`: unused) images, with Docker's prompt and report. carrel has no networks
/// and no build cache, so Docker's lines about them are left out.
pub fn prune(engine: &Engine, a: &crate::cli::SystemPruneArgs) -> Result<u8> {
    let mut labels = Vec::new();
    for f in &a.filter {
        match f.split_once('=') {
            Some((k, _)) if k.trim() == "until" && a.volumes => {
                anyhow::bail!("ERROR: The \"until\" filter is not supported with \"--volumes\"")
            }
            Some((k, v)) if k.trim() == "label" => labels.push(v.to_string()),
            Some((k, _)) => anyhow::bail!("invalid filter '{}'", k.trim()),
            None => anyhow::bail!("bad format of filter (expected name=value)"),
        }
    }
    if !a.force {
        let mut text = String::from("WARNING! This will remove:\n  - all stopped containers\n");
        if a.volumes {
            text.push_str("  - all anonymous volumes not used by at least one container\n");
        }
        if a.all {
            text.push_str("  - all images without at least one container associated to them\n");
        } else {
            text.push_str("  - all dangling images\n");
        }
        if !labels.is_empty() {
            text.push_str("\n  Items to be pruned will be filtered with:\n");
            for l in &labels {
                text.push_str(&format!("  - label={l}\n"));
            }
        }
        println!("{text}");
        if !super::confirm("Are you sure you want to continue?") {
            return Ok(0);
        }
    }
    let mut out = std::io::stdout().lock();
    let mut reclaimed = 0u64;
    let (removed, freed) = engine.container_prune(&labels)?;
    reclaimed += freed;
    if !removed.is_empty() {
        writeln!(out, "Deleted Containers:")?;
        for id in &removed {
            writeln!(out, "{id}")?;
        }
        writeln!(out)?;
    }
    if a.volumes {
        let filter = carrel_engine::volumes::PruneFilter {
            all: false,
            label: labels.clone(),
            not_label: Vec::new(),
        };
        let report = engine.volume_prune(&filter)?;
        reclaimed += report.reclaimed;
        super::volumes::write_prune_report(&mut out, &report)?;
    }
    let filter = carrel_engine::images::ImageFilter {
        label: labels,
        ..Default::default()
    };
    let report = engine.image_prune(a.all, &filter)?;
    reclaimed += report.reclaimed;
    if !report.deleted.is_empty() {
        writeln!(out, "Deleted Images:")?;
        for r in &report.deleted {
            match r {
                carrel_engine::images::DeleteRecord::Untagged(t) => writeln!(out, "untagged: {t}")?,
                carrel_engine::images::DeleteRecord::Deleted(d) => writeln!(out, "deleted: {d}")?,
            }
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        carrel_core::units::human_size(reclaimed)
    )?;
    Ok(0)
}
