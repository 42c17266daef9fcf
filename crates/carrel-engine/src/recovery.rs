//! Recovery at open and `carrel system check [--repair]`.
//!
//! Work in flight is always covered by a lease (a lock file held by a live process). At open, a
//! lease whose lock can be taken belongs to a process that died: its protection is dropped and
//! garbage is collected, which removes its half-extracted layers, its unreferenced blobs and its
//! ingest files. When no lease is dead, opening costs one directory listing.

use std::collections::HashSet;
use std::path::PathBuf;

use carrel_core::Digest;
use carrel_meta::{images, leases, snapshots};

use crate::images::layers::layer_key;
use crate::{Engine, Result};

/// What `system check` found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Problems of the database file itself.
    pub database: Vec<String>,
    /// Leases of processes that died (their work was interrupted).
    pub dead_leases: Vec<String>,
    /// Interrupted writes left in the content store's ingest directory.
    pub ingest_leftovers: Vec<PathBuf>,
    /// Storage-driver directories with no metadata (half-created or half-removed layers).
    pub orphan_dirs: Vec<PathBuf>,
    /// Snapshots whose directory is missing.
    pub missing_dirs: Vec<String>,
    /// Blob files without a record.
    pub unrecorded_blobs: Vec<PathBuf>,
    /// Recorded blobs whose file is missing.
    pub missing_blobs: Vec<Digest>,
    /// Images whose config blob or layers are missing: (image id, what is missing).
    pub broken_images: Vec<(String, String)>,
    /// Layers and blobs nothing references.
    pub garbage: Vec<String>,
    /// Volume users that are gone and volume mounts nobody alive uses.
    pub stale_volume_mounts: Vec<String>,
    /// What `--repair` did.
    pub repaired: Vec<String>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.database.is_empty()
            && self.dead_leases.is_empty()
            && self.ingest_leftovers.is_empty()
            && self.orphan_dirs.is_empty()
            && self.missing_dirs.is_empty()
            && self.unrecorded_blobs.is_empty()
            && self.missing_blobs.is_empty()
            && self.broken_images.is_empty()
            && self.garbage.is_empty()
            && self.stale_volume_mounts.is_empty()
    }
}

impl Engine {
    /// Roll back the work of dead processes and repair containers whose monitor died. Runs on
    /// every open.
    pub(crate) fn recover(&self) -> Result<()> {
        let dead = leases::dead(self.meta(), &self.layout().leases())?;
        if !dead.is_empty() {
            self.roll_back(dead)?;
        }
        self.recover_containers()?;
        self.recover_volumes()
    }

    /// Undo the work of dead processes: their half-made or half-removed containers go, their
    /// protection is dropped, and garbage is collected.
    fn roll_back(&self, dead: Vec<leases::DeadLease>) -> Result<()> {
        let mut containers = Vec::new();
        for d in dead {
            tracing::info!(
                lease = d.id,
                resources = d.resources.len(),
                "recovering interrupted work"
            );
            // A container being created or removed when its process died goes entirely.
            containers.extend(
                d.resources
                    .iter()
                    .filter(|r| r.kind == "container")
                    .map(|r| r.reference.clone()),
            );
            d.forget(self.meta())?;
        }
        for id in containers {
            if carrel_core::digest::is_hex64(&id) {
                self.discard_container(&id)?;
            }
        }
        self.sweep_container_dirs(false)?;
        self.check_volumes(true)?;
        self.collect_garbage()?;
        let live = self.live_lease_ids()?;
        self.content().cleanup_ingest(&live, false)?;
        Ok(())
    }

    /// Container directories without a record (left by a crash during removal).
    fn sweep_container_dirs(&self, dry_run: bool) -> Result<Vec<PathBuf>> {
        let dir = self.layout().containers();
        let mut on_disk = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                on_disk.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        // Directories first, then rows: a container's row exists before its directory does.
        // A container being removed (its row gone, its files not yet) is listed under the
        // removal's lease in the transaction that deleted its row: read both in one view.
        let (rows, in_flight) = self.meta().read_consistent(|c| {
            Ok((
                carrel_meta::containers::list(c)?,
                leases::protected(c, "container")?,
            ))
        })?;
        let known: HashSet<String> = rows.into_iter().map(|r| r.id).collect();
        let mut orphans = Vec::new();
        for name in on_disk {
            if known.contains(&name) || in_flight.contains(&name) {
                continue;
            }
            let path = dir.join(&name);
            // Listed before a removal ended (and its lease was released): not an orphan.
            if std::fs::symlink_metadata(&path).is_err() {
                continue;
            }
            if !dry_run {
                carrel_core::fs::remove_all(&path)
                    .map_err(|e| crate::EngineError::io("removing", &path, e))?;
            }
            orphans.push(path);
        }
        Ok(orphans)
    }

    fn live_lease_ids(&self) -> Result<HashSet<String>> {
        Ok(self
            .meta()
            .read(leases::list)?
            .into_iter()
            .map(|(id, _, _, _)| id)
            .collect())
    }

    /// `carrel system check`: compare metadata and disk; with `repair`, fix what can be fixed.
    pub fn system_check(&self, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport {
            database: self.meta().integrity_check()?,
            ..Default::default()
        };
        // Dead leases (recovery already ran at open, but another process may have died since).
        let dead = leases::dead(self.meta(), &self.layout().leases())?;
        report.dead_leases = dead.iter().map(|d| d.id.clone()).collect();
        if repair {
            for d in &dead {
                report.repaired.push(format!(
                    "rolled back the interrupted work of a dead process ({})",
                    d.id
                ));
            }
            if !dead.is_empty() {
                self.roll_back(dead)?;
            }
        } else {
            drop(dead);
        }
        let live = self.live_lease_ids()?;
        report.ingest_leftovers = self.content().cleanup_ingest(&live, true)?;

        let cleanup = self.snapshotter().cleanup(true)?;
        report.orphan_dirs = cleanup.orphan_dirs.clone();
        report.orphan_dirs.extend(self.sweep_container_dirs(true)?);
        report.orphan_dirs.extend(cleanup.other.iter().cloned());
        report.missing_dirs = cleanup.missing_dirs.clone();
        let volumes = self.check_volumes(repair)?;
        report.orphan_dirs.extend(volumes.orphan_dirs);
        report.missing_dirs.extend(volumes.missing_dirs);
        report.stale_volume_mounts = volumes.stale_mounts;
        report.repaired.extend(volumes.repaired);

        let content = self.content().check()?;
        report.unrecorded_blobs = content.unrecorded_files;
        let protected_blobs = self.meta().read(|c| leases::protected(c, "blob"))?;
        report.missing_blobs = content
            .missing_files
            .into_iter()
            .filter(|d| !protected_blobs.contains(&d.to_string()))
            .collect();

        let all_snapshots = self.meta().read(snapshots::list)?;
        let committed: HashSet<&str> = all_snapshots
            .iter()
            .filter(|r| r.kind == snapshots::Kind::Committed)
            .map(|r| r.key.as_str())
            .collect();
        for img in self.meta().read(images::list)? {
            if !self.content().contains(&img.id)? {
                report.broken_images.push((
                    img.id.to_string(),
                    format!("config blob {} is missing", img.id),
                ));
            }
            for l in &img.layers {
                if !committed.contains(layer_key(l).as_str()) {
                    report
                        .broken_images
                        .push((img.id.to_string(), format!("layer {l} is missing")));
                }
            }
        }
        let preview = self.garbage_preview()?;
        report.garbage = preview
            .layers
            .iter()
            .chain(preview.snapshots.iter())
            .map(|k| format!("snapshot {k}"))
            .chain(preview.blobs.iter().map(|b| format!("blob {b}")))
            .collect();

        if repair {
            let gc = self.collect_garbage()?;
            for l in gc.layers.iter().chain(gc.snapshots.iter()) {
                report
                    .repaired
                    .push(format!("removed unreferenced snapshot {l}"));
            }
            for b in &gc.blobs {
                report
                    .repaired
                    .push(format!("removed unreferenced blob {b}"));
            }
            for p in self
                .content()
                .cleanup_ingest(&self.live_lease_ids()?, false)?
            {
                report
                    .repaired
                    .push(format!("removed interrupted write {}", p.display()));
            }
            for p in self.sweep_container_dirs(false)? {
                report
                    .repaired
                    .push(format!("removed orphan {}", p.display()));
            }
            let cleaned = self.snapshotter().cleanup(false)?;
            for p in cleaned.orphan_dirs.iter().chain(cleaned.other.iter()) {
                report
                    .repaired
                    .push(format!("removed orphan {}", p.display()));
            }
            for p in &report.unrecorded_blobs {
                match std::fs::remove_file(p) {
                    Ok(()) => report
                        .repaired
                        .push(format!("removed unrecorded blob {}", p.display())),
                    Err(e) => tracing::warn!(path = %p.display(), %e, "could not remove blob"),
                }
            }
            let mut broken: Vec<String> = report
                .broken_images
                .iter()
                .map(|(i, _)| i.clone())
                .collect();
            broken.dedup();
            for id in broken {
                let d = Digest::parse(&id)
                    .map_err(|e| crate::EngineError::InvalidArgument(e.to_string()))?;
                self.meta().write(|tx| {
                    for t in images::tags_of(tx, &d)? {
                        images::delete_tag(tx, &t)?;
                    }
                    images::delete(tx, &d)?;
                    Ok(())
                })?;
                report.repaired.push(format!("removed broken image {id}"));
            }
            if !report.broken_images.is_empty() {
                self.collect_garbage()?;
            }
        }
        Ok(report)
    }
}
