//! Volume recovery: dead users of driver-backed volumes, orphan volume directories, rows whose
//! directory is missing, mounts nobody alive uses.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use carrel_core::fs::FileLock;
use carrel_meta::{leases, volumes as rows};

use crate::volumes::local;
use crate::{Engine, EngineError, Result};

/// What a volume check found (and, with repair, fixed).
#[derive(Debug, Clone, Default)]
pub struct VolumeCheck {
    /// Volume directories without a record (half-removed volumes) and leftovers of removals.
    pub orphan_dirs: Vec<PathBuf>,
    /// Volumes whose directory is missing (`volume <name>`).
    pub missing_dirs: Vec<String>,
    /// Mount records of dead users and mounts nobody alive uses (`<volume> (<user>)`).
    pub stale_mounts: Vec<String>,
    /// What was repaired.
    pub repaired: Vec<String>,
}

impl Engine {
    /// Run on every open: forget users of driver-backed volumes that are gone and unmount the
    /// volumes nobody alive uses. One query when no volume is mounted.
    pub(crate) fn recover_volumes(&self) -> Result<()> {
        let records = self.meta().read(rows::mounts)?;
        if records.is_empty() {
            return Ok(());
        }
        self.release_dead_users(&records, false).map(drop)
    }

    /// Whether a user of a driver-backed volume is alive: a container that exists and runs (or
    /// is being created under a live lease), or `lease:<id>` of a live lease. Anything else is
    /// taken to be alive.
    fn volume_user_alive(&self, user: &str, leased: &HashSet<String>) -> bool {
        if let Some(id) = user.strip_prefix("lease:") {
            if !id.bytes().all(|b| b.is_ascii_hexdigit()) || id.is_empty() {
                return false;
            }
            let listed = self
                .meta()
                .read(leases::list)
                .map(|l| l.iter().any(|(l, _, _, _)| l == id))
                .unwrap_or(true);
            if !listed {
                return false;
            }
            let path = self.layout().leases().join(format!("{id}.lock"));
            return !matches!(FileLock::try_lock(&path), Ok(Some(_)));
        }
        if carrel_core::digest::is_hex64(user) {
            return match self.meta().read(|c| carrel_meta::containers::get(c, user)) {
                Ok(None) => false,
                Ok(Some(_)) if leased.contains(user) => true,
                Ok(Some(_)) => self
                    .resolve_container(user)
                    .map(|c| c.is_running())
                    .unwrap_or(true),
                Err(_) => true,
            };
        }
        true
    }

    /// Drop the records of dead users; unmount volumes left without a live user. Returns what
    /// was (or, with `dry_run`, would be) released.
    fn release_dead_users(
        &self,
        records: &[(String, String)],
        dry_run: bool,
    ) -> Result<Vec<String>> {
        let leased = self.meta().read(|c| leases::protected(c, "container"))?;
        let mut out = Vec::new();
        let mut touched = BTreeSet::new();
        for (vol, user) in records {
            if self.volume_user_alive(user, &leased) {
                continue;
            }
            out.push(format!("{vol} ({user})"));
            touched.insert(vol.clone());
        }
        if dry_run {
            return Ok(out);
        }
        for vol in touched {
            let lock = self.volume_lock(&vol)?;
            let users: Vec<String> = self
                .meta()
                .read(rows::mounts)?
                .into_iter()
                .filter(|(v, _)| *v == vol)
                .map(|(_, u)| u)
                .collect();
            let (dead, alive): (Vec<_>, Vec<_>) = users
                .into_iter()
                .partition(|u| !self.volume_user_alive(u, &leased));
            if alive.is_empty() {
                local::unmount(&self.volume_path(&vol))?;
            }
            self.meta().write(|tx| {
                for u in &dead {
                    rows::remove_mount(tx, &vol, u)?;
                }
                Ok(())
            })?;
            tracing::info!(volume = %vol, users = dead.len(), "released volume users that are gone");
            drop(lock);
        }
        Ok(out)
    }

    /// Compare volume records with `<root>/volumes` and the mount table; with `repair`, remove
    /// orphan directories (unmounting first), recreate missing ones, drop dead users and unmount
    /// mounts nobody alive uses.
    pub(crate) fn check_volumes(&self, repair: bool) -> Result<VolumeCheck> {
        let mut report = VolumeCheck::default();
        let dir = self.layout().volumes();
        // Directories first, then rows: a volume's row exists before its directory does.
        let mut on_disk = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                on_disk.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        let all = self.meta().read(rows::list)?;
        let known: HashSet<&str> = all.iter().map(|r| r.name.as_str()).collect();
        let removing = self
            .meta()
            .read(|c| leases::protected(c, "volume-remove"))?;
        for name in on_disk {
            if known.contains(name.as_str()) {
                continue;
            }
            let path = dir.join(&name);
            if let Some(rest) = name.strip_prefix(".removing-") {
                // Leftover of a removal; skip it while a live removal of that name runs.
                if removing.iter().any(|r| rest.starts_with(&format!("{r}-"))) {
                    continue;
                }
                report.orphan_dirs.push(path.clone());
                if repair {
                    local::unmount_all_under(&path)?;
                    carrel_core::fs::remove_all(&path)
                        .map_err(|e| EngineError::io("removing", &path, e))?;
                    report
                        .repaired
                        .push(format!("removed orphan {}", path.display()));
                }
                continue;
            }
            if !carrel_core::fs::is_plain_name(name.as_ref()) || removing.contains(&name) {
                continue;
            }
            report.orphan_dirs.push(path.clone());
            if repair {
                let lock = self.volume_lock(&name)?;
                if self.meta().read(|c| rows::get(c, &name))?.is_none() {
                    self.remove_volume_dir(&name)?;
                    report
                        .repaired
                        .push(format!("removed orphan {}", path.display()));
                }
                drop(lock);
            }
        }
        for row in &all {
            if self.volume_path(&row.name).is_dir() {
                continue;
            }
            report.missing_dirs.push(format!("volume {}", row.name));
            if repair {
                let lock = self.volume_lock(&row.name)?;
                if let Some(row) = self.meta().read(|c| rows::get(c, &row.name))? {
                    self.ensure_volume_dirs(&row)?;
                    report
                        .repaired
                        .push(format!("recreated the directory of volume {}", row.name));
                }
                drop(lock);
            }
        }
        let records = self.meta().read(rows::mounts)?;
        let released = self.release_dead_users(&records, !repair)?;
        if repair {
            report
                .repaired
                .extend(released.iter().map(|r| format!("released volume user {r}")));
        }
        report.stale_mounts = released;
        // Mounts on volumes with no record of any user (a crash inside an unmount).
        let users: HashSet<String> = self
            .meta()
            .read(rows::mounts)?
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        let mounts = carrel_mount::mountinfo::mounts_under(&dir).map_err(local::mount_error)?;
        for m in mounts {
            let Ok(rel) = m.mount_point.strip_prefix(&dir) else {
                continue;
            };
            let mut comps = rel.components();
            let (Some(name), Some(data), None) = (comps.next(), comps.next(), comps.next()) else {
                continue;
            };
            let name = name.as_os_str().to_string_lossy().into_owned();
            if data.as_os_str() != "_data"
                || !known.contains(name.as_str())
                || users.contains(&name)
            {
                continue;
            }
            report.stale_mounts.push(format!("{name} (no user)"));
            if repair {
                let lock = self.volume_lock(&name)?;
                let still_unused = !self
                    .meta()
                    .read(rows::mounts)?
                    .iter()
                    .any(|(v, _)| *v == name);
                if still_unused {
                    local::unmount(&m.mount_point)?;
                    report
                        .repaired
                        .push(format!("unmounted unused volume {name}"));
                }
                drop(lock);
            }
        }
        if repair {
            self.sweep_volume_locks(&known);
        }
        Ok(report)
    }

    /// Lock files of volumes that do not exist (a failed create, a crash).
    fn sweep_volume_locks(&self, known: &HashSet<&str>) {
        let dir = self.layout().locks().join("volumes");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = file.as_str();
            if known.contains(name) || !carrel_core::fs::is_plain_name(name.as_ref()) {
                continue;
            }
            if let Ok(lock) = self.volume_lock(name)
                && matches!(self.meta().read(|c| rows::get(c, name)), Ok(None))
            {
                lock.unlink();
            }
        }
    }
}
