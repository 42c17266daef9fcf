//! Garbage collection: remove the layers and blobs nothing references.
//!
//! Roots: every image (its config blob, its layer chain), every container's writable layer
//! (added with containers), and everything listed under a lease (work in flight). The parents of
//! a kept snapshot are kept. Rows are deleted in one write transaction that re-reads the roots,
//! so a concurrent process that protects a layer (in its own transaction) either sees it deleted
//! and recreates it, or protects it first; directories and files go afterwards.

use std::collections::{HashMap, HashSet};

use carrel_core::Digest;
use carrel_meta::snapshots::{Kind, SnapshotRow};
use carrel_meta::{Connection, blobs, images, leases, snapshots};

use crate::images::layers::{LABEL_BLOB, LABEL_TAR_SPLIT, recorded_size};
use crate::{Engine, Result};

/// What a collection removed (or, planned, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Committed layers (chain ids).
    pub layers: Vec<String>,
    /// Other snapshots (abandoned extractions and views).
    pub snapshots: Vec<String>,
    /// Blobs.
    pub blobs: Vec<Digest>,
    /// Bytes of layer content and blobs freed.
    pub reclaimed: u64,
}

/// Decide what is garbage, reading through `c`. Snapshots come children first.
fn plan(
    c: &Connection,
    extra_roots: &[String],
) -> carrel_meta::Result<(Vec<SnapshotRow>, Vec<blobs::BlobRow>)> {
    let all = snapshots::list(c)?;
    let parent_of: HashMap<&str, Option<&str>> = all
        .iter()
        .map(|r| (r.key.as_str(), r.parent.as_deref()))
        .collect();
    let mut keep: HashSet<String> = leases::protected(c, "snapshot")?;
    keep.extend(extra_roots.iter().cloned());
    let mut keep_blobs: HashSet<String> = leases::protected(c, "blob")?;
    for img in images::list(c)? {
        keep_blobs.insert(img.id.to_string());
        keep.extend(img.layers.iter().map(|l| l.to_string()));
    }
    let mut stack: Vec<String> = keep.iter().cloned().collect();
    while let Some(k) = stack.pop() {
        if let Some(Some(p)) = parent_of.get(k.as_str())
            && keep.insert((*p).to_string())
        {
            stack.push((*p).to_string());
        }
    }
    fn depth<'a>(parent_of: &HashMap<&'a str, Option<&'a str>>, mut k: &'a str) -> usize {
        let mut d = 0usize;
        while let Some(Some(p)) = parent_of.get(k) {
            d += 1;
            k = p;
        }
        d
    }
    let mut doomed: Vec<SnapshotRow> = all
        .iter()
        .filter(|r| !keep.contains(&r.key))
        .cloned()
        .collect();
    doomed.sort_by_key(|r| std::cmp::Reverse(depth(&parent_of, &r.key)));
    for r in all.iter().filter(|r| keep.contains(&r.key)) {
        for label in [LABEL_BLOB, LABEL_TAR_SPLIT] {
            if let Some(b) = r.labels.get(label) {
                keep_blobs.insert(b.clone());
            }
        }
    }
    let doomed_blobs = blobs::list(c)?
        .into_iter()
        .filter(|b| !keep_blobs.contains(&b.digest.to_string()))
        .collect();
    Ok((doomed, doomed_blobs))
}

fn report_of(snaps: &[SnapshotRow], blobs: &[blobs::BlobRow]) -> GcReport {
    let mut report = GcReport::default();
    for r in snaps {
        if r.kind == Kind::Committed {
            report.reclaimed += recorded_size(&r.labels);
            report.layers.push(r.key.clone());
        } else {
            report.snapshots.push(r.key.clone());
        }
    }
    for b in blobs {
        report.reclaimed += b.size;
        report.blobs.push(b.digest.clone());
    }
    report
}

impl Engine {
    /// Remove unreferenced layers, snapshots and blobs.
    pub fn collect_garbage(&self) -> Result<GcReport> {
        // A crash in the middle leaves this lease dead, so the next open finishes the job.
        let lease = self.lease("garbage collection")?;
        let extra_roots = self.container_snapshot_keys()?;
        let report = self.meta().write(|tx| {
            let (snaps, doomed_blobs) = plan(tx, &extra_roots)?;
            for r in &snaps {
                snapshots::delete(tx, &r.key)?;
            }
            for b in &doomed_blobs {
                blobs::delete(tx, &b.digest)?;
            }
            Ok(report_of(&snaps, &doomed_blobs))
        })?;
        self.snapshotter().cleanup(false)?;
        for b in &report.blobs {
            self.content().remove_file(b)?;
        }
        lease.release(self.meta())?;
        if report != GcReport::default() {
            tracing::debug!(
                layers = report.layers.len(),
                snapshots = report.snapshots.len(),
                blobs = report.blobs.len(),
                "collected garbage"
            );
        }
        Ok(report)
    }

    /// What [`Engine::collect_garbage`] would remove now.
    pub fn garbage_preview(&self) -> Result<GcReport> {
        let extra_roots = self.container_snapshot_keys()?;
        Ok(self.meta().read(|c| {
            let (snaps, doomed_blobs) = plan(c, &extra_roots)?;
            Ok(report_of(&snaps, &doomed_blobs))
        })?)
    }
}
