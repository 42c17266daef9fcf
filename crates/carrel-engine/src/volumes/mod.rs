//! Volumes: named and anonymous data directories that outlive containers, Docker's `local`
//! driver (`<root>/volumes/<name>/_data`, optionally a mounted filesystem or a quota), and what
//! is built on them: list filters, prune, export/import, `system df`.
//!
//! # Records and directories
//!
//! A volume is a row in the `volumes` table (name, driver, labels, options, cached size) and a
//! directory `<root>/volumes/<name>/` (0701) holding `_data` (0755), Docker's modes. The row is
//! written first, then the directory; removal deletes the row first (in a transaction that
//! re-checks that no container references the volume and that no lease lists it), then unmounts
//! what is mounted there and removes the directory. A directory without a row is therefore always
//! garbage: recovery and `system check --repair` remove it (after unmounting anything on it). A
//! row whose directory is missing (a crash between the two steps of a create) gets its directory
//! back on the next use.
//!
//! Creating, removing, mounting and unmounting one volume take turns through a per-name lock
//! (`<root>/locks/volumes/<name>`, like moby's per-name locker), so concurrent creates of one
//! name make exactly one row and one directory, and a removal never races a mount.
//!
//! # Names and reserved labels
//!
//! Local volume names follow Docker's rule `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$` with its messages, so a
//! name is always one plain path component. A volume created without a name gets 64 random hex
//! characters and the label `com.docker.volume.anonymous=""`; that label is what makes a volume
//! anonymous (pruned by default). carrel's rule for it (ST-53) is stricter than Docker's: a user
//! may not set it on a *named* volume (the create is refused), so a named volume never becomes
//! prunable-as-anonymous through a label. On a volume created without a name it is set by carrel
//! whatever the user gave.
//!
//! # Users of driver-backed volumes
//!
//! A volume with `type`/`device` options is mounted on its first [`Engine::volume_mount`] and
//! unmounted when the last user calls [`Engine::volume_unmount`]; users are recorded in
//! `volume_mounts`. A user is a container id (alive while the container exists and runs, or is
//! being created under a live lease) or `lease:<id>` (alive while that lease is). Recovery drops
//! dead users and unmounts volumes nobody alive uses, and removal unmounts stale mounts, so a
//! stale mount never blocks `volume rm`.

mod archive;
mod filter;
mod local;
mod prune;
mod quota;
mod recovery;
mod usage;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use carrel_core::fs::FileLock;
use carrel_meta::volumes::{self as rows, VolumeRow};
use carrel_meta::{Lease, leases};

use crate::{Engine, EngineError, Result};

pub use archive::{ExportOptions, ImportOptions, ImportStats};
pub use filter::{PruneFilter, VolumeFilter, natural_cmp, natural_less};
pub use prune::VolumePruneReport;
pub use recovery::VolumeCheck;
pub use usage::{ContainerUsage, DiskUsage, ImageUsage, VolumeUsage};

/// The label that marks a volume created without a name.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// The only volume driver carrel has.
pub const LOCAL_DRIVER: &str = "local";

/// A volume as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its name (64 hex characters for an anonymous volume).
    pub name: String,
    /// Its driver (`local`).
    pub driver: String,
    /// The host path of its content (`<root>/volumes/<name>/_data`).
    pub mountpoint: PathBuf,
    /// Creation time, nanoseconds since the epoch.
    pub created: i64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options given at creation.
    pub options: BTreeMap<String, String>,
    /// `local`.
    pub scope: String,
}

impl Volume {
    /// Whether carrel created it without a name (it carries the anonymous label).
    pub fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }

    /// Whether the local driver mounts a filesystem for it (`type` or `device` given).
    pub fn needs_mount(&self) -> bool {
        local::needs_mount(&self.options)
    }

    /// Docker's `volume inspect` object.
    pub fn inspect(&self) -> VolumeInspect {
        VolumeInspect {
            created_at: created_at(self.created),
            driver: self.driver.clone(),
            labels: self.labels.clone(),
            mountpoint: self.mountpoint.display().to_string(),
            name: self.name.clone(),
            options: self.options.clone(),
            scope: self.scope.clone(),
        }
    }
}

/// Docker's `volume inspect` JSON (`GET /volumes/{name}`), keys in Docker's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeInspect {
    /// RFC 3339 without fractional seconds, in the local time zone.
    pub created_at: String,
    /// `local`.
    pub driver: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The host path of its content.
    pub mountpoint: String,
    /// Its name.
    pub name: String,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// `local`.
    pub scope: String,
}

/// Docker's `CreatedAt` of a volume: RFC 3339, whole seconds, local time zone (`Z` in UTC).
pub fn created_at(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeCreate {
    /// The name; `None` (or empty) makes an anonymous volume: 64 random hex characters and the
    /// label `com.docker.volume.anonymous=""`.
    pub name: Option<String>,
    /// The driver (`None` or empty: `local`).
    pub driver: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options (`type`, `device`, `o`, `size`).
    pub options: BTreeMap<String, String>,
}

/// A held per-volume lock (see the module docs). Taking it verifies that the lock file is still
/// the one at its path, so a removal that unlinks it under the lock never lets two holders in.
pub(crate) struct VolumeLock {
    lock: FileLock,
}

impl VolumeLock {
    /// Unlink the lock file (the volume is gone); other waiters notice and retry.
    fn unlink(self) {
        let _ = std::fs::remove_file(self.lock.path());
    }
}

fn not_found(name: &str) -> EngineError {
    EngineError::NotFound(format!("get {name}: no such volume"))
}

impl Engine {
    fn volume_from_row(&self, row: VolumeRow) -> Volume {
        Volume {
            mountpoint: self.volume_path(&row.name),
            name: row.name,
            driver: row.driver,
            created: row.created,
            labels: row.labels,
            options: row.options,
            scope: "local".into(),
        }
    }

    /// The host path of a local volume's content: `<root>/volumes/<name>/_data`. `name` must be
    /// a valid volume name (it is one path component).
    pub fn volume_path(&self, name: &str) -> PathBuf {
        let mut path = self.volume_dir(name);
        path.push("_data");
        path
    }

    /// `<root>/volumes/<name>`.
    pub(crate) fn volume_dir(&self, name: &str) -> PathBuf {
        self.layout().volumes().join(name)
    }

    /// Take the per-name lock of `name` (a plain path component).
    pub(crate) fn volume_lock(&self, name: &str) -> Result<VolumeLock> {
        if !carrel_core::fs::is_plain_name(name.as_ref()) {
            return Err(not_found(name));
        }
        let dir = self.layout().locks().join("volumes");
        if !dir.is_dir() {
            carrel_core::fs::create_dir_mode(&dir, 0o700)
                .map_err(|e| EngineError::io("creating lock directory", &dir, e))?;
        }
        let path = dir.join(name);
        loop {
            let lock =
                FileLock::lock(&path).map_err(|e| EngineError::io("locking volume", &path, e))?;
            use std::os::unix::fs::MetadataExt;
            let held = lock.file().metadata().map(|m| (m.dev(), m.ino())).ok();
            let now = std::fs::metadata(&path).map(|m| (m.dev(), m.ino())).ok();
            if held.is_some() && held == now {
                return Ok(VolumeLock { lock });
            }
            // The file was unlinked (its volume removed) while we waited: take the new one.
        }
    }

    /// `volume create` (Docker's semantics): a new volume, or — when the name exists with the
    /// same driver — the existing one, unchanged (new labels and options are ignored, as Docker
    /// does). Errors read `create <name>: …` as Docker's do.
    pub fn volume_create(&self, req: &VolumeCreate) -> Result<Volume> {
        self.create_volume(req, None, false)
    }

    /// [`Engine::volume_create`] for work in flight: the volume is listed (kind `volume`) under
    /// `lease` in the transaction that creates (or finds) it, so no prune or removal can take it
    /// before the caller references it (container create makes anonymous volumes this way).
    pub fn volume_create_under(&self, req: &VolumeCreate, lease: &Lease) -> Result<Volume> {
        self.create_volume(req, Some(lease), false)
    }

    /// `carrel volume create`: [`Engine::volume_create`], except that a given name that is an
    /// existing *anonymous* volume's is refused (ST-36): the user asked for a named volume, and
    /// handing back an anonymous one (prunable by default) would be a surprise. Containers reuse
    /// anonymous volumes by name through [`Engine::volume_create`] as Docker does.
    pub fn volume_create_named(&self, req: &VolumeCreate) -> Result<Volume> {
        self.create_volume(req, None, true)
    }

    fn create_volume(
        &self,
        req: &VolumeCreate,
        lease: Option<&Lease>,
        refuse_anonymous: bool,
    ) -> Result<Volume> {
        let driver = req
            .driver
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or(LOCAL_DRIVER)
            .to_string();
        let given = req.name.as_deref().filter(|n| !n.is_empty());
        let name = match given {
            Some(n) => n.to_string(),
            None => carrel_core::id::random_id(),
        };
        // A name that is not one plain path component never reaches the disk, not even as a
        // lock file; it cannot exist either, so Docker's next checks decide the message.
        if !carrel_core::fs::is_plain_name(name.as_ref()) {
            self.check_new(&name, given.is_some(), &driver, req)?;
            return Err(EngineError::InvalidArgument(format!(
                "create {name}: invalid volume name"
            )));
        }
        if name.len() > 255 {
            return Err(EngineError::InvalidArgument(format!(
                "create {name}: volume name is longer than a file name may be (255 bytes)"
            )));
        }
        let lock = self.volume_lock(&name)?;
        // Docker checks the existing record first: same driver → the existing volume.
        if let Some(row) = self.meta().read(|c| rows::get(c, &name))? {
            return self.existing(row, &driver, lease, refuse_anonymous);
        }
        let labels = match self.check_new(&name, given.is_some(), &driver, req) {
            Ok(l) => l,
            Err(e) => {
                lock.unlink();
                return Err(e);
            }
        };
        let now = carrel_meta::now_nanos();
        let row = VolumeRow {
            name: name.clone(),
            driver: driver.clone(),
            labels,
            options: req.options.clone(),
            created: now,
            size: Some(0),
            size_at: Some(now),
        };
        let inserted = self.meta().write(|tx| {
            rows::insert(tx, &row)?;
            if let Some(l) = lease {
                l.add(tx, "volume", &name)?;
            }
            Ok(())
        });
        if let Err(e) = inserted {
            lock.unlink();
            return Err(e.into());
        }
        if let Err(e) = self.ensure_volume_dirs(&row) {
            // Nothing of a failed create stays: its row, then its directory.
            let _ = self.meta().write(|tx| rows::delete(tx, &name));
            let _ = carrel_core::fs::remove_all(&self.volume_dir(&name));
            lock.unlink();
            return Err(match e {
                EngineError::InvalidArgument(m) => {
                    EngineError::InvalidArgument(format!("create {name}: {m}"))
                }
                other => other,
            });
        }
        drop(lock);
        tracing::debug!(volume = %name, "volume created");
        self.emit_volume_event(&name, "create", &[]);
        Ok(self.volume_from_row(row))
    }

    /// Docker's checks of a new volume, in its order (driver, then the local driver's name and
    /// option rules), plus carrel's reserved-label rule. Returns the labels to store.
    fn check_new(
        &self,
        name: &str,
        named: bool,
        driver: &str,
        req: &VolumeCreate,
    ) -> Result<BTreeMap<String, String>> {
        if driver != LOCAL_DRIVER {
            return Err(EngineError::NotFound(format!(
                "create {name}: error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        let quota_ok = local::size_supported(&req.options, &self.layout().volumes());
        carrel_mountspec::check_local_volume_create(name, &req.options, quota_ok)
            .map_err(|e| EngineError::InvalidArgument(e.message().to_string()))?;
        let mut labels = req.labels.clone();
        if named {
            if labels.contains_key(ANONYMOUS_LABEL) {
                return Err(EngineError::InvalidArgument(format!(
                    "create {name}: label {ANONYMOUS_LABEL} is reserved: carrel sets it on volumes created without a name, and a named volume cannot be made prunable as anonymous"
                )));
            }
        } else {
            labels.insert(ANONYMOUS_LABEL.to_string(), String::new());
        }
        Ok(labels)
    }

    /// The answer to a create of a name that exists (called with the volume's lock held).
    fn existing(
        &self,
        row: VolumeRow,
        driver: &str,
        lease: Option<&Lease>,
        refuse_anonymous: bool,
    ) -> Result<Volume> {
        if row.driver != driver {
            return Err(EngineError::Conflict(format!(
                "create {}: driver '{}' already has volume '{}': volume name must be unique",
                row.name, row.driver, row.name
            )));
        }
        if refuse_anonymous && row.labels.contains_key(ANONYMOUS_LABEL) {
            return Err(EngineError::Conflict(format!(
                "create {}: the name is taken by an anonymous volume; choose another name (or use the anonymous volume as it is)",
                row.name
            )));
        }
        if let Some(l) = lease {
            self.meta().write(|tx| l.add(tx, "volume", &row.name))?;
        }
        // A crash between the row and the directory of a create leaves a row alone: finish it.
        self.ensure_volume_dirs(&row)?;
        Ok(self.volume_from_row(row))
    }

    /// Make `<root>/volumes/<name>/` (0701) and `_data` (0755), and set the quota of a `size`
    /// volume. Idempotent.
    pub(crate) fn ensure_volume_dirs(&self, row: &VolumeRow) -> Result<()> {
        let dir = self.volume_dir(&row.name);
        let data = dir.join("_data");
        for (d, mode) in [(&dir, 0o701), (&data, 0o755)] {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(EngineError::io("creating volume directory", d, e)),
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
                .map_err(|e| EngineError::io("setting the mode of", d, e))?;
        }
        if let Some(size) = local::quota_size(&row.options)? {
            quota::set_quota(self, &data, size)?;
        }
        Ok(())
    }

    /// `volume inspect`: the volume named `name` (`get <name>: no such volume` otherwise).
    pub fn volume_get(&self, name: &str) -> Result<Volume> {
        if !carrel_core::fs::is_plain_name(name.as_ref()) {
            return Err(not_found(name));
        }
        self.meta()
            .read(|c| rows::get(c, name))?
            .map(|r| self.volume_from_row(r))
            .ok_or_else(|| not_found(name))
    }

    /// `volume ls`: the volumes `filter` keeps, in Docker's natural name order.
    pub fn volume_list(&self, filter: &VolumeFilter) -> Result<Vec<Volume>> {
        let (all, refs) = self
            .meta()
            .read(|c| Ok((rows::list(c)?, rows::ref_counts(c)?)))?;
        let mut out: Vec<Volume> = all
            .into_iter()
            .map(|r| self.volume_from_row(r))
            .filter(|v| filter.matches(v, refs.get(&v.name).copied().unwrap_or(0)))
            .collect();
        sort_by_name(&mut out);
        Ok(out)
    }

    /// Ids of the containers that reference a volume (running or not), sorted.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.meta().read(|c| rows::refs(c, name))?)
    }

    /// The host path whose content is the volume. A driver-backed volume (`type`/`device`) is
    /// mounted there on its first user (recorded in `volume_mounts`, idempotent per user); a
    /// plain one is just its directory. `user` is a container id or `lease:<id>` (see the module
    /// docs). Mount failures read `failed to mount local volume: …` as Docker's do.
    pub fn volume_mount(&self, name: &str, user: &str) -> Result<PathBuf> {
        let lock = self.volume_lock(name)?;
        let Some(row) = self.meta().read(|c| rows::get(c, name))? else {
            lock.unlink();
            return Err(not_found(name));
        };
        self.ensure_volume_dirs(&row)?;
        let path = self.volume_path(name);
        if !local::needs_mount(&row.options) {
            return Ok(path);
        }
        self.meta()
            .write(|tx| rows::add_mount(tx, name, user).map(drop))?;
        if !local::is_mounted(&path)? {
            if let Err(e) = local::mount(&row.options, &path) {
                let _ = self
                    .meta()
                    .write(|tx| rows::remove_mount(tx, name, user).map(drop));
                return Err(e);
            }
            tracing::debug!(volume = name, user, "volume mounted");
        }
        drop(lock);
        Ok(path)
    }

    /// Release `user`'s use of a volume; a driver-backed volume is unmounted when its last user
    /// leaves. Releasing a volume that is gone, or a user that holds none, is not an error (so
    /// teardown can be repeated).
    pub fn volume_unmount(&self, name: &str, user: &str) -> Result<()> {
        if !carrel_core::fs::is_plain_name(name.as_ref()) {
            return Ok(());
        }
        let lock = self.volume_lock(name)?;
        let Some(row) = self.meta().read(|c| rows::get(c, name))? else {
            lock.unlink();
            return Ok(());
        };
        if !local::needs_mount(&row.options) {
            return Ok(());
        }
        let others = self.meta().read(|c| {
            Ok(rows::mounts(c)?
                .into_iter()
                .filter(|(v, u)| v == name && u != user)
                .count())
        })?;
        let path = self.volume_path(name);
        if others == 0 {
            // Unmount first, then forget the user: a crash in between leaves a record of a
            // user that recovery finds dead, never a mount nobody knows about.
            local::unmount(&path)?;
            tracing::debug!(volume = name, user, "volume unmounted (last user)");
        }
        self.meta()
            .write(|tx| rows::remove_mount(tx, name, user).map(drop))?;
        drop(lock);
        Ok(())
    }

    /// `volume rm`: remove a volume that no container references and no work in flight lists.
    /// In use: `remove <name>: volume is in use - [<ids>]` (also with `force`, as Docker). An
    /// unknown name is `get <name>: no such volume`, or nothing with `force`. The record goes
    /// first; the directory is removed afterwards (what cannot be removed is left for
    /// recovery, the volume being gone already).
    pub fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        if !carrel_core::fs::is_plain_name(name.as_ref()) {
            return if force { Ok(()) } else { Err(not_found(name)) };
        }
        let lease = self.lease("volume remove")?;
        let result = self.remove_under(name, force, &lease);
        self.end_lease(lease, false);
        result
    }

    fn remove_under(&self, name: &str, force: bool, lease: &Lease) -> Result<()> {
        let lock = self.volume_lock(name)?;
        enum Outcome {
            Gone,
            InUse(Vec<String>),
            Removed,
        }
        let outcome = self.meta().write(|tx| {
            if rows::get(tx, name)?.is_none() {
                return Ok(Outcome::Gone);
            }
            let mut users = rows::refs(tx, name)?;
            if leases::protected(tx, "volume")?.contains(name) {
                let mut creating = rows::lease_users(tx, name)?;
                // Work in flight that is not a container (an export, an import) shows its lease.
                if creating.is_empty() {
                    creating = rows::leases_of(tx, name)?
                        .into_iter()
                        .map(|l| format!("lease:{l}"))
                        .collect();
                }
                users.extend(creating);
            }
            if !users.is_empty() {
                users.sort();
                users.dedup();
                return Ok(Outcome::InUse(users));
            }
            // Listed under our own lease until the directory is gone: a crash in between leaves
            // a dead lease, whose recovery sweeps the orphan directory.
            lease.add(tx, "volume-remove", name)?;
            rows::delete(tx, name)?;
            Ok(Outcome::Removed)
        })?;
        match outcome {
            Outcome::Gone => {
                lock.unlink();
                if force { Ok(()) } else { Err(not_found(name)) }
            }
            Outcome::InUse(users) => Err(EngineError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            ))),
            Outcome::Removed => {
                if let Err(e) = self.remove_volume_dir(name) {
                    tracing::warn!(volume = name, %e, "volume removed; its directory is left for recovery");
                }
                lock.unlink();
                tracing::debug!(volume = name, "volume removed");
                self.emit_volume_event(name, "destroy", &[]);
                Ok(())
            }
        }
    }

    /// Remove `<root>/volumes/<name>` whose row is gone: unmount whatever is mounted at or
    /// below it (never delete through a mount), move it aside, then delete it.
    pub(crate) fn remove_volume_dir(&self, name: &str) -> Result<()> {
        let dir = self.volume_dir(name);
        local::unmount_all_under(&dir)?;
        if !dir.exists() {
            return Ok(());
        }
        let trash = self.layout().volumes().join(format!(
            ".removing-{name}-{}",
            carrel_core::id::random_short(8)
        ));
        std::fs::rename(&dir, &trash)
            .map_err(|e| EngineError::io("moving aside volume directory", &dir, e))?;
        carrel_core::fs::remove_all(&trash)
            .map_err(|e| EngineError::io("removing volume directory", &trash, e))
    }

    /// Measure the size of a volume's `_data` as Docker does (the apparent sizes of everything
    /// but directories, hardlinks once, symlinks not followed, other filesystems not entered)
    /// and cache it in the `volumes` table for `system df`. Called after a container that uses
    /// the volume exits. A driver-backed volume is not walked (its filesystem may be remote, and
    /// `system df` does not count it): 0.
    pub fn volume_measure(&self, name: &str) -> Result<u64> {
        let v = self.volume_get(name)?;
        let size = if v.needs_mount() {
            0
        } else {
            content_size(&v.mountpoint)
                .map_err(|e| EngineError::io("measuring volume", &v.mountpoint, e))?
        };
        let now = carrel_meta::now_nanos();
        self.meta()
            .write(|tx| rows::set_size(tx, name, size, now))?;
        Ok(size)
    }
}

/// Docker's volume size (`directory.Size`): apparent sizes of all non-directories below `dir`,
/// each inode once, without following symlinks or entering other filesystems. A missing
/// directory is 0.
pub(crate) fn content_size(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let root = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let m = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if m.dev() != root.dev() {
                continue;
            }
            if m.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if seen.insert(m.ino()) {
                total += m.len();
            }
        }
    }
    Ok(total)
}

/// Sort volumes in Docker's natural name order, computing each name's sort key once.
fn sort_by_name(volumes: &mut [Volume]) {
    volumes.sort_by_cached_key(|v| filter::natural_key(&v.name));
}
