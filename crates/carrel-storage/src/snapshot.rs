//! The snapshotter abstraction: layers and writable layers as keyed snapshots.
//!
//! Shaped after containerd's snapshotter: every snapshot has a key; committed snapshots are
//! read-only layers (keyed by chain id), active snapshots are writable (a container's layer, or a
//! layer being extracted), views are read-only mounts of a committed snapshot. Methods return
//! [`Mount`] values instead of mounting; the caller hands them to a `Mounter`.
//!
//! Metadata lives in the `snapshots` table of the data root's database (see `carrel_meta::snapshots`):
//! a row is written before its directory is created and deleted before its directory is removed,
//! so a crash leaves at worst an orphan directory, which [`Snapshotter::cleanup`] reclaims.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use carrel_meta::snapshots::{self as rows, SnapshotRow};
use carrel_meta::{Meta, Transaction};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};

pub use carrel_archive::WhiteoutFormat;
use carrel_meta::snapshots::Kind;
use carrel_mount::Mount;

use crate::{Result, StorageError};

/// Labels attached to a snapshot.
pub type Labels = BTreeMap<String, String>;

/// What is known about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The snapshot's key.
    pub key: String,
    /// The committed snapshot it is stacked on.
    pub parent: Option<String>,
    /// View, active or committed.
    pub kind: Kind,
    /// The driver's directory id (under the driver's home).
    pub id: String,
    /// Creation time, nanoseconds since the epoch.
    pub created: i64,
    /// Labels.
    pub labels: Labels,
    /// Bytes used by this snapshot's own changes, as recorded at commit (None while active).
    pub size: Option<u64>,
}

/// Disk usage of a snapshot's own changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of blocks used.
    pub size: u64,
    /// Inodes used.
    pub inodes: u64,
}

/// Where and how to extract a layer diff into an active snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyTarget {
    /// The directory to extract into (trusted, inside the driver's home).
    pub dir: PathBuf,
    /// How to write whiteouts.
    pub format: WhiteoutFormat,
}

/// Docker's `GraphDriver.Data` for a snapshot, shown by `inspect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverPaths {
    /// Lower directories, topmost first (empty for a base layer).
    pub lower: Vec<PathBuf>,
    /// The snapshot's own directory of changes (`diff`).
    pub upper: PathBuf,
    /// Where the snapshot is mounted when mounted.
    pub merged: PathBuf,
    /// The overlay work directory.
    pub work: PathBuf,
}

/// What [`Snapshotter::cleanup`] found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Directories under the driver's home with no metadata row (removed unless dry-run).
    pub orphan_dirs: Vec<PathBuf>,
    /// Rows whose directory is missing (reported; never removed by cleanup).
    pub missing_dirs: Vec<String>,
    /// Other leftovers (dangling short links and the like) that were removed.
    pub other: Vec<PathBuf>,
}

/// The lease resource kind under which the directory id of a removed snapshot is listed while
/// its files are being deleted ([`Snapshotter::remove_record`], then [`SnapshotFiles::remove`]):
/// such a directory is work in flight, which [`Snapshotter::cleanup`] neither reports nor
/// touches. If the process dies, its lease dies with it and the directory becomes an ordinary
/// orphan, reclaimed by the next cleanup.
pub const FILES_BEING_REMOVED: &str = "snapshot-files";

/// The files of a snapshot whose record is gone, deleted by [`SnapshotFiles::remove`].
#[derive(Debug)]
#[must_use = "the snapshot's files stay on disk until removed"]
pub struct SnapshotFiles {
    id: String,
    /// In removal order: helper entries pointing into the directory (overlay's short link)
    /// before the directory, so that none ever dangles.
    paths: Vec<PathBuf>,
}

impl SnapshotFiles {
    /// The snapshot's directory id (to list under a lease as [`FILES_BEING_REMOVED`]).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Delete the files (never following symlinks nor crossing into a mount). Files that are
    /// already gone, or vanish meanwhile (a concurrent cleanup), are not an error.
    pub fn remove(self) -> Result<()> {
        for p in &self.paths {
            remove_tree(p).map_err(|e| StorageError::io("removing", p, e))?;
        }
        Ok(())
    }
}

/// A storage driver.
pub trait Snapshotter: Send + Sync {
    /// The name users see: `overlay2` or `copy`.
    fn driver_name(&self) -> &'static str;

    /// The driver's home directory (`<root>/overlay2`, `<root>/copy`).
    fn home(&self) -> PathBuf;

    /// Create a writable snapshot `key` on top of committed `parent` (or empty) and return the
    /// mounts that show it.
    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>>;

    /// Create a read-only view `key` of committed `parent` and return its mounts.
    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>>;

    /// The mounts of an existing snapshot (active: writable; view/committed: read-only).
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Commit the active snapshot `key` as the read-only snapshot `name`, measuring and recording
    /// its size and replacing its labels.
    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()>;

    /// [`Snapshotter::commit`], recording `usage` instead of measuring: the caller measured
    /// `key` with [`Snapshotter::usage`] after its last change, so that it can measure several
    /// layers while it waits for something else (their flush to disk).
    fn commit_measured(&self, name: &str, key: &str, labels: Labels, usage: Usage) -> Result<()>;

    /// Remove a snapshot that has no children: its row first, then its directory.
    fn remove(&self, key: &str) -> Result<()>;

    /// The first half of [`Snapshotter::remove`]: delete the record of `key` (which must have no
    /// children and nothing mounted inside its directory) in the caller's write transaction
    /// `tx`, so that it goes together with whatever the caller deletes in it, and return the
    /// files, which the caller removes after the commit. Until then the directory is an orphan
    /// to everyone else, unless the caller lists [`SnapshotFiles::id`] under a lease as
    /// [`FILES_BEING_REMOVED`] in the same transaction.
    fn remove_record(&self, tx: &Transaction, key: &str) -> Result<SnapshotFiles>;

    /// What is known about `key`.
    fn stat(&self, key: &str) -> Result<Info>;

    /// Replace the labels of `key`.
    fn update_labels(&self, key: &str, labels: Labels) -> Result<Info>;

    /// The disk usage of `key`'s own changes (measured now for active snapshots, recorded for
    /// committed ones).
    fn usage(&self, key: &str) -> Result<Usage>;

    /// Every snapshot, parents before children.
    fn walk(&self) -> Result<Vec<Info>>;

    /// True when each layer's own changes live apart from its parent's (overlay), so a layer
    /// may be prepared on an *active* parent and extracted at the same time as it; such a layer
    /// can only be committed once its parent is. Drivers that copy the parent's tree at prepare
    /// (copy) return false and refuse active parents.
    fn independent_layers(&self) -> bool {
        false
    }

    /// Where to extract a layer diff into the active snapshot `key`.
    fn apply_target(&self, key: &str) -> Result<ApplyTarget>;

    /// The directory holding `key`'s own changes: the overlay upper dir (whose whiteouts are
    /// 0/0 devices) or, for the copy driver, the full tree.
    fn upper_dir(&self, key: &str) -> Result<PathBuf>;

    /// Docker's `GraphDriver.Data` paths for `key`.
    fn paths(&self, key: &str) -> Result<DriverPaths>;

    /// Reclaim directories that have no metadata row (left by a crash) and dangling helper
    /// entries. With `dry_run` nothing is removed, only reported.
    fn cleanup(&self, dry_run: bool) -> Result<CleanupReport>;

    /// The deepest chain of committed layers the driver can mount (`None`: no limit). A chain of
    /// this many layers still takes a writable snapshot on top (a container), but committing
    /// that snapshot as one more layer fails with
    /// [`StorageError::TooDeep`](crate::StorageError::TooDeep).
    fn max_depth(&self) -> Option<usize> {
        None
    }
}

impl Info {
    pub(crate) fn from_row(row: &SnapshotRow) -> Info {
        Info {
            key: row.key.clone(),
            parent: row.parent.clone(),
            kind: row.kind,
            id: row.id.clone(),
            created: row.created,
            labels: row.labels.clone(),
            size: row.size,
        }
    }
}

pub(crate) fn kind_name(kind: Kind) -> &'static str {
    kind.as_str()
}

/// The metadata side shared by both drivers: rows in the `snapshots` table and the order of
/// operations around them.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) meta: Arc<Meta>,
    pub(crate) home: PathBuf,
    pub(crate) driver: &'static str,
}

impl Store {
    /// The directory of a snapshot (ids are validated plain names when rows are read).
    pub(crate) fn dir(&self, id: &str) -> PathBuf {
        self.home.join(id)
    }

    /// The row of `key`, or `SnapshotNotFound`.
    pub(crate) fn get(&self, key: &str) -> Result<SnapshotRow> {
        self.meta
            .read(|c| rows::get(c, key))?
            .ok_or_else(|| StorageError::SnapshotNotFound(key.to_string()))
    }

    /// The rows of `parent` and its ancestors, topmost (i.e. `parent`) first.
    pub(crate) fn chain(&self, parent: Option<&str>) -> Result<Vec<SnapshotRow>> {
        self.meta.read(|c| chain_in(c, parent))?
    }

    /// Insert the row of a new snapshot (before anything is created on disk) and return it with
    /// its ancestors, topmost first. Views and active snapshots need a committed parent.
    pub(crate) fn insert_new(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: Labels,
        max_depth: Option<usize>,
        allow_active_parent: bool,
    ) -> Result<(SnapshotRow, Vec<SnapshotRow>)> {
        if key.is_empty() {
            return Err(StorageError::InvalidKey(key.to_string()));
        }
        let now = carrel_meta::now_nanos();
        let row = SnapshotRow {
            key: key.to_string(),
            id: carrel_core::id::random_id(),
            parent: parent.map(str::to_string),
            kind,
            created: now,
            updated: now,
            size: None,
            inodes: None,
            labels,
        };
        let ancestors = self.meta.write(|tx| {
            if rows::get(tx, key)?.is_some() {
                return Ok(Err(StorageError::SnapshotExists(key.to_string())));
            }
            let chain = match chain_in(tx, parent)? {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(p) = chain.first()
                && p.kind != Kind::Committed
                && !(allow_active_parent && p.kind == Kind::Active)
            {
                return Ok(Err(StorageError::WrongKind {
                    key: p.key.clone(),
                    actual: kind_name(p.kind),
                    expected: "committed",
                }));
            }
            if let Some(max) = max_depth {
                let depth = chain.len();
                if chain.len() > max {
                    return Ok(Err(StorageError::TooDeep {
                        key: key.to_string(),
                        depth,
                        max,
                        driver: self.driver,
                    }));
                }
            }
            rows::insert(tx, &row)?;
            Ok(Ok(chain))
        })??;
        Ok((row, ancestors))
    }

    /// Undo [`Store::insert_new`] after a failure on disk: row first, then the directory.
    pub(crate) fn rollback(&self, row: &SnapshotRow, extra: Option<&Path>) {
        if let Err(e) = self.meta.write(|tx| rows::delete(tx, &row.key)) {
            tracing::warn!(key = %row.key, error = %e, "rollback of snapshot row failed");
            return;
        }
        if let Some(p) = extra {
            let _ = remove_tree(p);
        }
        if let Err(e) = remove_tree(&self.dir(&row.id)) {
            tracing::warn!(key = %row.key, error = %e, "rollback of snapshot directory failed");
        }
    }

    /// Commit active `key` as `name` with the usage measured by `measure`.
    pub(crate) fn commit(
        &self,
        name: &str,
        key: &str,
        labels: Labels,
        max_depth: Option<usize>,
        measure: impl FnOnce(&SnapshotRow) -> Result<Usage>,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(StorageError::InvalidKey(name.to_string()));
        }
        let row = self.get(key)?;
        if row.kind != Kind::Active {
            return Err(StorageError::WrongKind {
                key: key.to_string(),
                actual: kind_name(row.kind),
                expected: "active",
            });
        }
        if let Some(max) = max_depth {
            let depth = self.chain(row.parent.as_deref())?.len() + 1;
            if depth > max {
                return Err(StorageError::TooDeep {
                    key: name.to_string(),
                    depth,
                    max,
                    driver: self.driver,
                });
            }
        }
        let usage = measure(&row)?;
        let now = carrel_meta::now_nanos();
        self.meta.write(|tx| {
            if name != key && rows::get(tx, name)?.is_some() {
                return Ok(Err(StorageError::SnapshotExists(name.to_string())));
            }
            // A layer prepared on a parent still being extracted commits after it.
            if let Some(parent) = &row.parent
                && let Some(p) = rows::get(tx, parent)?
                && p.kind != Kind::Committed
            {
                return Ok(Err(StorageError::WrongKind {
                    key: parent.clone(),
                    actual: kind_name(p.kind),
                    expected: "committed",
                }));
            }
            if !rows::commit(tx, key, name, usage.size, usage.inodes, &labels, now)? {
                return Ok(Err(StorageError::WrongKind {
                    key: key.to_string(),
                    actual: "not active",
                    expected: "active",
                }));
            }
            Ok(Ok(()))
        })??;
        tracing::debug!(
            driver = self.driver,
            key,
            name,
            size = usage.size,
            "committed snapshot"
        );
        Ok(())
    }

    /// Delete the row of `key` if it has no children and nothing is mounted inside its
    /// directory, in the write transaction `tx`, and return it with the files to remove once
    /// `tx` commits: `helpers` (entries of the driver pointing into the directory) first, then
    /// the directory.
    pub(crate) fn remove_row_in(
        &self,
        tx: &Transaction,
        key: &str,
        helpers: impl FnOnce(&SnapshotRow) -> Vec<PathBuf>,
    ) -> Result<SnapshotFiles> {
        let Some(row) = rows::get(tx, key)? else {
            return Err(StorageError::SnapshotNotFound(key.to_string()));
        };
        // Refused while something is mounted inside the snapshot's directory (its `merged`
        // dir), before the row goes, so nothing is half removed.
        let dir = self.dir(&row.id);
        if let Some(path) = mounted_inside(&dir) {
            return Err(StorageError::Mounted {
                key: key.to_string(),
                path,
            });
        }
        let children = rows::children(tx, key)?;
        if !children.is_empty() {
            return Err(StorageError::HasChildren {
                key: key.to_string(),
                children: children.len(),
            });
        }
        rows::delete(tx, key)?;
        let mut paths = helpers(&row);
        paths.push(dir);
        Ok(SnapshotFiles { id: row.id, paths })
    }

    /// [`Store::remove_row_in`] in a transaction of its own, then the files.
    pub(crate) fn remove_now(
        &self,
        key: &str,
        remove_record: impl FnOnce(&Transaction) -> Result<SnapshotFiles>,
    ) -> Result<()> {
        let files = self.meta.try_write(|tx| Ok(remove_record(tx)))??;
        let id = files.id().to_string();
        files.remove()?;
        tracing::debug!(driver = self.driver, key, %id, "removed snapshot");
        Ok(())
    }

    pub(crate) fn stat(&self, key: &str) -> Result<Info> {
        Ok(Info::from_row(&self.get(key)?))
    }

    pub(crate) fn update_labels(&self, key: &str, labels: Labels) -> Result<Info> {
        let found = self.meta.write(|tx| rows::set_labels(tx, key, &labels))?;
        if !found {
            return Err(StorageError::SnapshotNotFound(key.to_string()));
        }
        self.stat(key)
    }

    /// Every snapshot, parents before children (roots in creation order, then depth first).
    pub(crate) fn walk(&self) -> Result<Vec<Info>> {
        let all = self.meta.read(rows::list)?;
        let keys: HashSet<&str> = all.iter().map(|r| r.key.as_str()).collect();
        let mut children: HashMap<&str, Vec<&SnapshotRow>> = HashMap::new();
        let mut roots = Vec::new();
        for r in &all {
            match r.parent.as_deref() {
                Some(p) if keys.contains(p) => children.entry(p).or_default().push(r),
                _ => roots.push(r),
            }
        }
        let mut out = Vec::with_capacity(all.len());
        let mut stack: Vec<&SnapshotRow> = roots.into_iter().rev().collect();
        while let Some(r) = stack.pop() {
            out.push(Info::from_row(r));
            if let Some(kids) = children.get(r.key.as_str()) {
                stack.extend(kids.iter().rev());
            }
        }
        Ok(out)
    }

    /// Usage: recorded for committed snapshots, measured in `path` otherwise.
    pub(crate) fn usage(
        &self,
        key: &str,
        path_of: impl FnOnce(&SnapshotRow) -> PathBuf,
    ) -> Result<Usage> {
        let row = self.get(key)?;
        if row.kind == Kind::Committed
            && let (Some(size), Some(inodes)) = (row.size, row.inodes)
        {
            return Ok(Usage { size, inodes });
        }
        let p = path_of(&row);
        measure(&p).map_err(|e| StorageError::io("measuring usage of", p, e))
    }

    /// Find directories without rows (listing the directory before reading the rows, so a
    /// snapshot being created concurrently, whose row is written before its directory, is never
    /// taken for an orphan) and rows without directories. `complete` names the path whose
    /// existence makes a snapshot's directory whole.
    pub(crate) fn cleanup(
        &self,
        dry_run: bool,
        complete: impl Fn(&SnapshotRow) -> PathBuf,
    ) -> Result<CleanupReport> {
        let mut dirs = Vec::new();
        let entries = std::fs::read_dir(&self.home)
            .map_err(|e| StorageError::io("listing", &self.home, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("listing", &self.home, e))?;
            let name = entry.file_name();
            if is_dir_id(&name) {
                dirs.push(name.to_string_lossy().into_owned());
            }
        }
        // The rows and the directories being removed in one view: a removal deletes a row and
        // lists its directory in one transaction.
        let (all, being_removed) = self.meta.read_consistent(|c| {
            Ok((
                rows::list(c)?,
                carrel_meta::leases::protected(c, FILES_BEING_REMOVED)?,
            ))
        })?;
        let ids: HashSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
        let mut report = CleanupReport::default();
        for id in dirs {
            if ids.contains(id.as_str()) || being_removed.contains(&id) {
                continue;
            }
            let p = self.dir(&id);
            // Listed before its removal ended (and its lease was released): not an orphan.
            if std::fs::symlink_metadata(&p).is_err() {
                continue;
            }
            if !dry_run {
                remove_tree(&p).map_err(|e| StorageError::io("removing orphan", &p, e))?;
                tracing::info!(driver = self.driver, path = %p.display(), "removed orphan snapshot directory");
            }
            report.orphan_dirs.push(p);
        }
        for r in &all {
            let d = self.dir(&r.id);
            if !complete(r).exists() {
                tracing::warn!(driver = self.driver, key = %r.key, path = %d.display(), "snapshot directory missing");
                report.missing_dirs.push(r.key.clone());
            }
        }
        Ok(report)
    }
}

/// The first mount point directly inside `dir`, if any (compared by mount id).
pub(crate) fn mounted_inside(dir: &Path) -> Option<PathBuf> {
    let fd = open_dir_nofollow(rustix::fs::CWD, dir).ok()?;
    let own = mount_id(&fd, Path::new("")).ok()?;
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = PathBuf::from(entry.file_name());
        if mount_id(&fd, &name).is_ok_and(|id| id != own) {
            return Some(dir.join(name));
        }
    }
    None
}

/// Whether a name under a driver's home looks like a snapshot directory (a 64-hex id).
pub(crate) fn is_dir_id(name: &OsStr) -> bool {
    std::str::from_utf8(name.as_bytes()).is_ok_and(carrel_core::digest::is_hex64)
}

fn chain_in(
    c: &carrel_meta::Connection,
    parent: Option<&str>,
) -> carrel_meta::Result<Result<Vec<SnapshotRow>>> {
    let mut out = Vec::new();
    let mut next = parent.map(str::to_string);
    while let Some(k) = next {
        let Some(row) = rows::get(c, &k)? else {
            return Ok(Err(StorageError::SnapshotNotFound(k)));
        };
        next = row.parent.clone();
        out.push(row);
        if out.len() > 100_000 {
            return Ok(Err(StorageError::TooDeep {
                key: k,
                depth: out.len(),
                max: 100_000,
                driver: "snapshots",
            }));
        }
    }
    Ok(Ok(out))
}

/// Measure the blocks and inodes used under `path` (hardlinks once, one filesystem, symlinks not
/// followed).
pub(crate) fn measure(path: &Path) -> io::Result<Usage> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::symlink_metadata(path)?;
    let dev = root.dev();
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if m.dev() != dev {
            continue;
        }
        if !m.is_dir() && m.nlink() > 1 && !seen.insert(m.ino()) {
            continue;
        }
        usage.size += m.blocks() * 512;
        usage.inodes += 1;
        if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(usage)
}

/// How many threads remove the top-level directories of a tree at most.
const REMOVAL_THREADS: usize = 4;

/// Remove a file or a directory tree without following symlinks and without ever descending
/// into another mount (a still-mounted `merged` dir or bind makes it fail with `EBUSY` instead of
/// deleting through the mount). A missing path is not an error, nor are entries that vanish
/// meanwhile (another process removing the same tree: a cleanup of orphans racing a removal).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return gone_is_fine(std::fs::remove_file(path));
    }
    let fd = match open_dir_nofollow(rustix::fs::CWD, path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let mnt = mount_id(&fd, Path::new(""))?;
    // The subdirectories (a layer's `diff`, `work`, `merged`) go at the same time, shared
    // among at most REMOVAL_THREADS threads: removing a directory waits on the filesystem
    // (freeing its block, a discard on some disks) much more than it computes.
    let entries = list_entries(&fd)?;
    let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(_, is_dir)| *is_dir);
    let threads = dirs.len().clamp(1, REMOVAL_THREADS);
    // Share `i`: every `threads`-th directory from the `i`-th; the first share takes the files.
    let remove_share = |i: usize| -> io::Result<()> {
        let files = if i == 0 { &files[..] } else { &[] };
        dirs.iter()
            .skip(i)
            .step_by(threads)
            .chain(files)
            .try_for_each(|(name, is_dir)| remove_entry(&fd, name, *is_dir, mnt, path))
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .map(|i| {
                std::thread::Builder::new()
                    .name("remove-tree".into())
                    .spawn_scoped(s, move || remove_share(i))
                    .map_err(|_| i)
            })
            .collect();
        let mut result = remove_share(0);
        for helper in helpers {
            let r = match helper {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a removal thread panicked"))),
                // No thread to be had: this one does its share.
                Err(i) => remove_share(i),
            };
            result = result.and(r);
        }
        result
    })?;
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

pub(crate) fn open_dir_nofollow<Fd: std::os::fd::AsFd, P: rustix::path::Arg>(
    dir: Fd,
    name: P,
) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn mount_id<Fd: std::os::fd::AsFd>(dir: Fd, name: &Path) -> io::Result<u64> {
    let flags = if name.as_os_str().is_empty() {
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    Ok(rustix::fs::statx(dir, name, flags, StatxFlags::MNT_ID | StatxFlags::TYPE)?.stx_mnt_id)
}

/// The entries of `dir` (without `.` and `..`), each with whether it is a directory.
fn list_entries(dir: &OwnedFd) -> io::Result<Vec<(PathBuf, bool)>> {
    let mut entries = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = PathBuf::from(OsStr::from_bytes(name));
        let is_dir = match entry.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                let st = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        entries.push((name, is_dir));
    }
    Ok(entries)
}

fn remove_contents(dir: &OwnedFd, mnt: u64, shown: &Path) -> io::Result<()> {
    for (name, is_dir) in list_entries(dir)? {
        remove_entry(dir, &name, is_dir, mnt, shown)?;
    }
    Ok(())
}

/// An entry that vanished meanwhile was removed by someone else removing the same tree.
fn gone_is_fine(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Remove the entry `name` of `dir` (shown as `shown/name`), a directory with all it holds;
/// never crossing into another mount (`mnt` is the tree's own).
fn remove_entry(
    dir: &OwnedFd,
    name: &Path,
    is_dir: bool,
    mnt: u64,
    shown: &Path,
) -> io::Result<()> {
    let busy = || {
        io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "{} is a mount point (still mounted?)",
                shown.join(name).display()
            ),
        )
    };
    if is_dir {
        let child = match mount_id(dir, name) {
            Ok(id) if id != mnt => return Err(busy()),
            Ok(_) => open_dir_nofollow(dir, name),
            Err(e) => Err(e),
        };
        let child = match child {
            Ok(fd) => fd,
            Err(e) => return gone_is_fine(Err(e)),
        };
        remove_contents(&child, mnt, &shown.join(name))?;
        gone_is_fine(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io::Error::from))
    } else {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Err(rustix::io::Errno::BUSY) => Err(busy()),
            other => gone_is_fine(other.map_err(io::Error::from)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree with more top-level directories than removal threads, nested files and a symlink
    /// leading out of it.
    fn make_tree(root: &Path, outside: &Path) {
        for i in 0..(REMOVAL_THREADS * 3 + 1) {
            let d = root.join(format!("d{i}")).join("a/b");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
        }
        std::fs::write(root.join("top-file"), b"y").unwrap();
        std::os::unix::fs::symlink(outside, root.join("d0/out")).unwrap();
    }

    #[test]
    fn remove_tree_removes_everything_and_nothing_a_symlink_leads_to() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let root = tmp.path().join("tree");
        make_tree(&root, &outside);
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
        // Gone already: not an error.
        remove_tree(&root).unwrap();
    }

    #[test]
    fn remove_tree_refuses_a_mount_inside_and_deletes_nothing_through_it() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts a tmpfs: run it as root"
        );
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        make_tree(&root, tmp.path());
        let target = root.join(format!("d{}", REMOVAL_THREADS + 1)).join("a");
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
            }
        }
        rustix::mount::mount(
            "tmpfs",
            &target,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        let _guard = Unmount(target.clone());
        std::fs::write(target.join("in-the-mount"), b"m").unwrap();
        let e = remove_tree(&root).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
        assert!(e.to_string().contains("is a mount point"), "{e}");
        assert_eq!(std::fs::read(target.join("in-the-mount")).unwrap(), b"m");
    }
}
