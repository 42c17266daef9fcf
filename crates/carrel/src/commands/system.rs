//! `carrel info`, `carrel version`, `carrel system check`.

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
