//! The `overlay2` driver: kernel overlayfs, laid out on disk exactly like Docker's overlay2.
//!
//! ```text
//! <root>/overlay2/                 0710
//!   <id>/                          0710
//!     diff/                        0755  the layer's own files (overlay upper dir)
//!     work/                        0700  overlay work dir
//!     merged/                      0700  conventional mount point
//!     link                         the 26-character short name of this layer
//!     lower                        "l/<short>:l/<short>..." of all ancestors, topmost first
//!   l/<short> -> ../<id>/diff      short names for the classic mount(2) fallback
//! ```
//!
//! Mounts use absolute `diff` paths with one `lowerdir+` each; the `l/` names only serve the
//! classic fallback on kernels without `lowerdir+`. A base-layer active snapshot (no parent) is a
//! read-write bind of its `diff` (overlay needs a lower layer); a view or committed snapshot with a
//! single layer is a read-only bind of that `diff`. Chains may be up to [`MAX_DEPTH`] layers deep
//! (the kernel's limit on lower layers): a container on a 500-layer image mounts (500 lowers and
//! its upper), but committing it as a 501st layer is refused with `TooDeep`, so no chain that
//! cannot be mounted is ever created.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use carrel_meta::snapshots::{Kind, SnapshotRow};
use carrel_meta::{Meta, Transaction};
use carrel_mount::{Mount, OverlayMount, ShortLowers};

use crate::snapshot::{
    ApplyTarget, CleanupReport, DriverPaths, Info, Labels, SnapshotFiles, Snapshotter, Store,
    Usage, WhiteoutFormat, kind_name, measure, remove_tree,
};
use crate::{Result, StorageError};

/// The deepest chain of layers the driver mounts (overlayfs's limit on lower layers).
pub const MAX_DEPTH: usize = carrel_mount::OVERLAY_MAX_LOWERS;

/// Length of the `l/` short names.
const SHORT_LEN: usize = 26;

/// The overlay2 storage driver.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    store: Store,
}

impl OverlaySnapshotter {
    /// Open (creating if needed) the driver's home `<root>/overlay2`. Fails with `Unsupported`
    /// when overlayfs is unavailable or the root itself is on overlayfs.
    pub fn new(meta: Arc<Meta>, root: &Path) -> Result<OverlaySnapshotter> {
        let home = root.join("overlay2");
        create_home(&home)?;
        mkdir_mode(&home.join("l"), 0o700, true)?;
        let unsupported = |reason: String| StorageError::Unsupported {
            driver: "overlay2",
            reason,
        };
        if rustix::mount::fsopen("overlay", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC).is_err() {
            return Err(unsupported("the kernel has no overlay filesystem".into()));
        }
        let backing = carrel_mount::features::backing_filesystem(&home);
        if backing == "overlayfs" {
            return Err(unsupported(format!("{} is on overlayfs", home.display())));
        }
        Ok(OverlaySnapshotter {
            store: Store {
                meta,
                home,
                driver: "overlay2",
            },
        })
    }

    fn diff(&self, row: &SnapshotRow) -> PathBuf {
        self.store.dir(&row.id).join("diff")
    }

    fn read_link(&self, row: &SnapshotRow) -> Option<String> {
        let s = std::fs::read_to_string(self.store.dir(&row.id).join("link")).ok()?;
        let s = s.trim();
        (s.len() == SHORT_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| s.to_string())
    }

    /// The mounts of `row` stacked on `chain` (its parent and ancestors, topmost first).
    fn mounts_for(&self, row: &SnapshotRow, chain: &[SnapshotRow]) -> Vec<Mount> {
        // A view shows its parent's chain; a committed snapshot shows itself on its ancestors.
        let mut layers: Vec<&SnapshotRow> = Vec::with_capacity(chain.len() + 1);
        if row.kind == Kind::Committed {
            layers.push(row);
        }
        layers.extend(chain.iter());
        let shorts: Option<Vec<PathBuf>> = layers
            .iter()
            .map(|r| self.read_link(r).map(|s| Path::new("l").join(s)))
            .collect();
        let lower: Vec<PathBuf> = layers.iter().map(|r| self.diff(r)).collect();
        let short = shorts.map(|lower| ShortLowers {
            dir: self.store.home.clone(),
            lower,
        });
        match row.kind {
            Kind::Active if chain.is_empty() => vec![Mount::bind(self.diff(row), false)],
            Kind::Active => vec![Mount::Overlay(OverlayMount {
                volatile: false,
                lower,
                upper: Some(self.diff(row)),
                work: Some(self.store.dir(&row.id).join("work")),
                short,
            })],
            Kind::View | Kind::Committed if lower.len() == 1 => {
                vec![Mount::bind(lower[0].clone(), true)]
            }
            Kind::View | Kind::Committed => vec![Mount::Overlay(OverlayMount {
                volatile: false,
                lower,
                upper: None,
                work: None,
                short,
            })],
        }
    }

    fn create_layout(&self, row: &SnapshotRow, chain: &[SnapshotRow]) -> Result<()> {
        let dir = self.store.dir(&row.id);
        mkdir_mode(&dir, 0o710, false)?;
        mkdir_mode(&dir.join("diff"), 0o755, false)?;
        mkdir_mode(&dir.join("work"), 0o700, false)?;
        mkdir_mode(&dir.join("merged"), 0o700, false)?;
        if !chain.is_empty() {
            let shorts: Vec<String> = chain
                .iter()
                .filter_map(|r| self.read_link(r).map(|s| format!("l/{s}")))
                .collect();
            write_file(&dir.join("lower"), shorts.join(":").as_bytes())?;
        }
        let short = carrel_core::id::random_short(SHORT_LEN);
        write_file(&dir.join("link"), short.as_bytes())?;
        let link = self.store.home.join("l").join(&short);
        std::os::unix::fs::symlink(Path::new("..").join(&row.id).join("diff"), &link)
            .map_err(|e| StorageError::io("creating short link", &link, e))?;
        Ok(())
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        let (row, chain) = self.store.insert_new(
            key,
            parent,
            kind,
            labels,
            Some(MAX_DEPTH),
            kind == Kind::Active,
        )?;
        if let Err(e) = self.create_layout(&row, &chain) {
            let link = self
                .read_link(&row)
                .map(|s| self.store.home.join("l").join(s));
            self.store.rollback(&row, link.as_deref());
            return Err(e);
        }
        tracing::debug!(key, id = %row.id, kind = kind.as_str(), "created overlay2 snapshot");
        Ok(self.mounts_for(&row, &chain))
    }

    fn active(&self, key: &str) -> Result<SnapshotRow> {
        let row = self.store.get(key)?;
        if row.kind != Kind::Active {
            return Err(StorageError::WrongKind {
                key: key.to_string(),
                actual: kind_name(row.kind),
                expected: "active",
            });
        }
        Ok(row)
    }
}

/// Create a directory with exactly `mode`; returns whether it was created now (false when it
/// existed and `exist_ok`).
pub(crate) fn mkdir_mode(path: &Path, mode: u32, exist_ok: bool) -> Result<bool> {
    let created = match std::fs::create_dir(path) {
        Ok(()) => true,
        Err(e) if exist_ok && e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(StorageError::io("creating directory", path, e)),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| StorageError::io("setting mode of", path, e))?;
    Ok(created)
}

/// Create a driver's home (mode 0710). A new home is marked the top of a directory hierarchy so
/// that each snapshot directory starts in a block group of its own on ext2/3/4 (see
/// [`carrel_core::fs::mark_top_directory`]): layers extracted where others were just removed
/// do not pay for the removal.
pub(crate) fn create_home(home: &Path) -> Result<()> {
    if mkdir_mode(home, 0o710, true)? {
        match carrel_core::fs::mark_top_directory(home) {
            Ok(marked) => tracing::debug!(home = %home.display(), marked, "driver home created"),
            Err(e) => tracing::debug!(home = %home.display(), %e, "could not mark the driver home"),
        }
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| StorageError::io("creating", path, e))?;
    f.write_all(data)
        .map_err(|e| StorageError::io("writing", path, e))
}

impl Snapshotter for OverlaySnapshotter {
    fn driver_name(&self) -> &'static str {
        "overlay2"
    }

    fn home(&self) -> PathBuf {
        self.store.home.clone()
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, Some(parent), Kind::View, labels)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let row = self.store.get(key)?;
        let chain = self.store.chain(row.parent.as_deref())?;
        Ok(self.mounts_for(&row, &chain))
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.store
            .commit(name, key, labels, Some(MAX_DEPTH), |row| {
                let diff = self.diff(row);
                measure(&diff).map_err(|e| StorageError::io("measuring", diff, e))
            })
    }

    fn commit_measured(&self, name: &str, key: &str, labels: Labels, usage: Usage) -> Result<()> {
        self.store
            .commit(name, key, labels, Some(MAX_DEPTH), |_| Ok(usage))
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.store.remove_now(key, |tx| self.remove_record(tx, key))
    }

    fn remove_record(&self, tx: &Transaction, key: &str) -> Result<SnapshotFiles> {
        self.store.remove_row_in(tx, key, |row| {
            self.read_link(row)
                .map(|short| self.store.home.join("l").join(short))
                .into_iter()
                .collect()
        })
    }

    fn stat(&self, key: &str) -> Result<Info> {
        self.store.stat(key)
    }

    fn update_labels(&self, key: &str, labels: Labels) -> Result<Info> {
        self.store.update_labels(key, labels)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        self.store.usage(key, |row| self.diff(row))
    }

    fn walk(&self) -> Result<Vec<Info>> {
        self.store.walk()
    }

    fn independent_layers(&self) -> bool {
        true
    }

    fn apply_target(&self, key: &str) -> Result<ApplyTarget> {
        let row = self.active(key)?;
        Ok(ApplyTarget {
            dir: self.diff(&row),
            format: WhiteoutFormat::Overlay,
        })
    }

    fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.diff(&self.store.get(key)?))
    }

    fn paths(&self, key: &str) -> Result<DriverPaths> {
        let row = self.store.get(key)?;
        let chain = self.store.chain(row.parent.as_deref())?;
        let dir = self.store.dir(&row.id);
        Ok(DriverPaths {
            lower: chain.iter().map(|r| self.diff(r)).collect(),
            upper: dir.join("diff"),
            merged: dir.join("merged"),
            work: dir.join("work"),
        })
    }

    fn cleanup(&self, dry_run: bool) -> Result<CleanupReport> {
        let mut report = self.store.cleanup(dry_run, |r| self.diff(r))?;
        // Dangling short links (their layer is gone). A link is created only after its diff
        // exists and removed before it, so a dangling one never belongs to live work.
        let l = self.store.home.join("l");
        let entries = std::fs::read_dir(&l).map_err(|e| StorageError::io("listing", &l, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("listing", &l, e))?;
            let p = entry.path();
            if std::fs::metadata(&p).is_err() {
                if !dry_run {
                    remove_tree(&p)
                        .map_err(|e| StorageError::io("removing dangling link", &p, e))?;
                }
                report.other.push(p);
            }
        }
        Ok(report)
    }

    fn max_depth(&self) -> Option<usize> {
        Some(MAX_DEPTH)
    }
}
