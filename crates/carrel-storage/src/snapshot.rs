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

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use carrel_archive::WhiteoutFormat;
use carrel_meta::snapshots::Kind;
use carrel_mount::Mount;

use crate::Result;

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

    /// Remove a snapshot that has no children: its row first, then its directory.
    fn remove(&self, key: &str) -> Result<()>;

    /// What is known about `key`.
    fn stat(&self, key: &str) -> Result<Info>;

    /// Replace the labels of `key`.
    fn update_labels(&self, key: &str, labels: Labels) -> Result<Info>;

    /// The disk usage of `key`'s own changes (measured now for active snapshots, recorded for
    /// committed ones).
    fn usage(&self, key: &str) -> Result<Usage>;

    /// Every snapshot, parents before children.
    fn walk(&self) -> Result<Vec<Info>>;

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
}
