//! Leases: the mark that work is in flight.
//!
//! A process doing multi-step work (loading an image, creating a container) takes a lease: a row
//! in `leases` plus an exclusive `flock` on `leases/<id>.lock`. Resources it creates before they
//! are referenced by anything durable (blobs, snapshots being extracted) are listed in
//! `lease_resources`, which protects them from garbage collection. The lock dies with the process,
//! so a lease whose lock can be taken belongs to a crashed process: recovery rolls back what it
//! lists and runs garbage collection.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use carrel_core::fs::FileLock;
use rusqlite::{Connection, OptionalExtension, params};

use crate::{Meta, MetaError, QueryRowCached, Result};

/// A lease id (random hex).
pub type LeaseId = String;

/// A held lease. Dropping it releases the lock but leaves the rows for recovery; call
/// [`Lease::release`] when the work is done.
#[derive(Debug)]
pub struct Lease {
    id: LeaseId,
    lock: FileLock,
}

/// A resource listed under a lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseResource {
    /// The resource kind, e.g. `snapshot`, `blob`, `ingest`.
    pub kind: String,
    /// The resource's key or digest.
    pub reference: String,
}

/// A lease whose owner is gone.
#[derive(Debug)]
pub struct DeadLease {
    /// Its id.
    pub id: LeaseId,
    /// What it listed.
    pub resources: Vec<LeaseResource>,
    lock: FileLock,
}

fn lock_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.lock"))
}

impl Lease {
    /// Take a new lease for `purpose` (shown by `system check`).
    pub fn acquire(meta: &Meta, dir: &Path, purpose: &str) -> Result<Lease> {
        let (id, path, lock) = loop {
            let id = carrel_core::id::random_id()[..32].to_string();
            let path = lock_path(dir, &id);
            let lock = FileLock::lock(&path).map_err(|e| MetaError::Io(path.clone(), e))?;
            // Between the file's creation and our flock, another process's `dead` may have
            // found it without a row, locked it and unlinked it: a lock on an unlinked file
            // protects nothing (the next `dead` would take this live lease for a dead one).
            // Once we hold the lock on the file at the path, nobody unlinks it.
            let at_path = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
            let held = lock.file().metadata().ok().map(|m| (m.dev(), m.ino()));
            if at_path.is_some() && at_path == held {
                break (id, path, lock);
            }
        };
        let inserted = meta.write(|tx| {
            tx.execute(
                "INSERT INTO leases (id, purpose, pid, created) VALUES (?1, ?2, ?3, ?4)",
                params![id, purpose, std::process::id(), crate::now_nanos()],
            )?;
            Ok(())
        });
        if let Err(e) = inserted {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Lease { id, lock })
    }

    /// The lease id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// List a resource under this lease (inside the caller's transaction).
    pub fn add(&self, c: &Connection, kind: &str, reference: &str) -> Result<()> {
        add_resource(c, &self.id, kind, reference)
    }

    /// Stop protecting a resource (it is now referenced by something durable).
    pub fn remove(&self, c: &Connection, kind: &str, reference: &str) -> Result<()> {
        c.execute(
            "DELETE FROM lease_resources WHERE lease = ?1 AND kind = ?2 AND ref = ?3",
            params![self.id, kind, reference],
        )?;
        Ok(())
    }

    /// End the lease: its rows go, then its lock file.
    pub fn release(self, meta: &Meta) -> Result<()> {
        meta.write(|tx| {
            tx.execute("DELETE FROM leases WHERE id = ?1", [&self.id])?;
            Ok(())
        })?;
        let _ = std::fs::remove_file(self.lock.path());
        Ok(())
    }
}

/// List a resource under lease `id`.
pub fn add_resource(c: &Connection, id: &str, kind: &str, reference: &str) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO lease_resources (lease, kind, ref) VALUES (?1, ?2, ?3)",
        params![id, kind, reference],
    )?;
    Ok(())
}

/// Every resource of `kind` listed under any lease (these are protected from collection).
pub fn protected(c: &Connection, kind: &str) -> Result<std::collections::HashSet<String>> {
    let mut stmt = c.prepare_cached("SELECT ref FROM lease_resources WHERE kind = ?1")?;
    let rows = stmt.query_map([kind], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Leases recorded in the database: (id, purpose, pid, created).
pub fn list(c: &Connection) -> Result<Vec<(LeaseId, String, i64, i64)>> {
    let mut stmt =
        c.prepare_cached("SELECT id, purpose, pid, created FROM leases ORDER BY created")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Find leases whose owner died: rows whose lock can be taken. The returned leases hold their
/// locks, so nobody else recovers them at the same time. Lock files without a row whose lock can
/// be taken are removed.
pub fn dead(meta: &Meta, dir: &Path) -> Result<Vec<DeadLease>> {
    // Files first, then rows: a lease's file exists before its row does.
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".lock") {
                files.push(id.to_string());
            }
        }
    }
    let rows = meta.read(list)?;
    let mut out = Vec::new();
    for (id, _, _, _) in &rows {
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MetaError::invalid("lease id", id.clone()));
        }
        let path = lock_path(dir, id);
        // A lease released since the rows were read has no file, and no process holds it: the
        // row is what tells a dead lease from a released one. So the file is never created
        // here, and the row is read again once the lock is held (its owner releases the row
        // before the lock).
        let lock = match FileLock::try_lock_existing(&path) {
            Ok(Some(lock)) => lock,
            Ok(None) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The owner died between its file and its row, or released it meanwhile: the
                // file is made before the row, so a row without a file is dead only if the row
                // is still there now.
                match FileLock::try_lock(&path).map_err(|e| MetaError::Io(path.clone(), e))? {
                    Some(lock) => lock,
                    None => continue,
                }
            }
            Err(e) => return Err(MetaError::Io(path, e)),
        };
        let still_there = meta.read(|c| {
            Ok(
                c.query_row_cached("SELECT 1 FROM leases WHERE id = ?1", [id], |_| Ok(()))
                    .optional()?
                    .is_some(),
            )
        })?;
        if !still_there {
            // Released between the listing and the lock: not ours to roll back.
            let _ = std::fs::remove_file(lock.path());
            continue;
        }
        let resources = meta.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, ref FROM lease_resources WHERE lease = ?1 ORDER BY kind, ref",
            )?;
            let rows = stmt.query_map([id], |r| {
                Ok(LeaseResource {
                    kind: r.get(0)?,
                    reference: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        out.push(DeadLease {
            id: id.clone(),
            resources,
            lock,
        });
    }
    for id in files {
        if rows.iter().any(|(r, _, _, _)| *r == id) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let path = lock_path(dir, &id);
        if let Ok(Some(_lock)) = FileLock::try_lock(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(out)
}

impl DeadLease {
    /// Forget the dead lease once its resources were rolled back.
    pub fn forget(self, meta: &Meta) -> Result<()> {
        meta.write(|tx| {
            tx.execute("DELETE FROM leases WHERE id = ?1", [&self.id])?;
            Ok(())
        })?;
        let _ = std::fs::remove_file(self.lock.path());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_leases_are_not_dead_and_dead_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("db")).unwrap();
        let leases = dir.path().join("leases");
        std::fs::create_dir(&leases).unwrap();
        let live = Lease::acquire(&meta, &leases, "test").unwrap();
        meta.write(|tx| live.add(tx, "snapshot", "k1")).unwrap();
        assert!(dead(&meta, &leases).unwrap().is_empty());
        assert!(
            meta.read(|c| protected(c, "snapshot"))
                .unwrap()
                .contains("k1")
        );

        // Simulate a crash: drop the lock without releasing.
        let id = live.id().to_string();
        drop(live);
        let found = dead(&meta, &leases).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, id);
        assert_eq!(found[0].resources[0].reference, "k1");
        for d in found {
            d.forget(&meta).unwrap();
        }
        assert!(meta.read(|c| protected(c, "snapshot")).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&leases).unwrap().count(), 0);

        let l = Lease::acquire(&meta, &leases, "test").unwrap();
        l.release(&meta).unwrap();
        assert!(meta.read(list).unwrap().is_empty());
    }
}
