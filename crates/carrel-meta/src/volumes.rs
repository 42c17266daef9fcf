//! The `volumes`, `volume_refs` and `volume_mounts` tables.
//!
//! - `volumes`: one row per volume (name, driver, labels, options, cached usage).
//! - `volume_refs`: which containers reference which volumes. A reference is written in the same
//!   transaction as the container's row and goes with it (`ON DELETE CASCADE`), so "volume is in
//!   use" is always exactly true, also after a crash.
//! - `volume_mounts`: who currently has a driver-backed volume (tmpfs, block device, nfs…)
//!   mounted, so it is mounted on first use and unmounted when the last user releases it.

use std::collections::BTreeMap;

use rusqlite::{Connection, Row, params};

use crate::{MetaError, QueryRowCached, Result};

/// One volume row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRow {
    /// Its name (validated by the caller's rules before insertion).
    pub name: String,
    /// Its driver (`local`).
    pub driver: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options (`type`, `device`, `o`, `size`).
    pub options: BTreeMap<String, String>,
    /// Creation time, nanoseconds since the epoch.
    pub created: i64,
    /// Last measured disk usage in bytes, if measured.
    pub size: Option<u64>,
    /// When it was measured, nanoseconds since the epoch.
    pub size_at: Option<i64>,
}

const COLUMNS: &str = "name, driver, labels, options, created, size, size_at";

/// A row of `SELECT {COLUMNS}`, its labels and options parsed from their JSON text in place.
fn read_row(r: &Row<'_>) -> Result<VolumeRow> {
    let name: String = r.get(0)?;
    if !carrel_core::fs::is_plain_name(std::ffi::OsStr::new(&name)) {
        return Err(MetaError::invalid("volume name", name));
    }
    let json = |i: usize, what: &'static str| -> Result<BTreeMap<String, String>> {
        let text = r
            .get_ref(i)?
            .as_str()
            .map_err(|_| MetaError::invalid(what, "(not text)"))?;
        serde_json::from_str(text).map_err(|_| MetaError::invalid(what, text))
    };
    Ok(VolumeRow {
        driver: r.get(1)?,
        labels: json(2, "volume labels")?,
        options: json(3, "volume options")?,
        created: r.get(4)?,
        size: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        size_at: r.get(6)?,
        name,
    })
}

/// Insert a volume. A duplicate name is a constraint error.
pub fn insert(c: &Connection, row: &VolumeRow) -> Result<()> {
    c.execute(
        &format!("INSERT INTO volumes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            row.name,
            row.driver,
            serde_json::to_string(&row.labels).unwrap_or_else(|_| "{}".into()),
            serde_json::to_string(&row.options).unwrap_or_else(|_| "{}".into()),
            row.created,
            row.size.map(|v| v as i64),
            row.size_at,
        ],
    )?;
    Ok(())
}

/// The volume named `name`.
pub fn get(c: &Connection, name: &str) -> Result<Option<VolumeRow>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM volumes WHERE name = ?1"))?;
    let mut rows = stmt.query([name])?;
    rows.next()?.map(read_row).transpose()
}

/// Every volume, in no particular order (callers sort in Docker's natural order, which SQL
/// cannot; scanning the table without the name index saves a lookup per row).
pub fn list(c: &Connection) -> Result<Vec<VolumeRow>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} FROM volumes"))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read_row(r)?);
    }
    Ok(out)
}

/// Delete a volume row (its references must be gone). Returns false when it did not exist.
pub fn delete(c: &Connection, name: &str) -> Result<bool> {
    c.execute("DELETE FROM volume_mounts WHERE volume = ?1", [name])?;
    Ok(c.execute("DELETE FROM volumes WHERE name = ?1", [name])? == 1)
}

/// Record a measured disk usage.
pub fn set_size(c: &Connection, name: &str, size: u64, at: i64) -> Result<()> {
    c.execute(
        "UPDATE volumes SET size = ?2, size_at = ?3 WHERE name = ?1",
        params![name, size as i64, at],
    )?;
    Ok(())
}

/// Record that `container` references `volume` (idempotent).
pub fn add_ref(c: &Connection, volume: &str, container: &str) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO volume_refs (volume, container) VALUES (?1, ?2)",
        params![volume, container],
    )?;
    Ok(())
}

/// Ids of the containers that reference `volume`, sorted.
pub fn refs(c: &Connection, volume: &str) -> Result<Vec<String>> {
    let mut stmt =
        c.prepare_cached("SELECT container FROM volume_refs WHERE volume = ?1 ORDER BY container")?;
    let rows = stmt.query_map([volume], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Names of the volumes `container` references, sorted.
pub fn volumes_of(c: &Connection, container: &str) -> Result<Vec<String>> {
    let mut stmt =
        c.prepare_cached("SELECT volume FROM volume_refs WHERE container = ?1 ORDER BY volume")?;
    let rows = stmt.query_map([container], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Reference counts of every volume (volumes without references are absent).
pub fn ref_counts(c: &Connection) -> Result<BTreeMap<String, u64>> {
    let mut stmt = c.prepare_cached("SELECT volume, COUNT(*) FROM volume_refs GROUP BY volume")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = BTreeMap::new();
    for r in rows {
        let (v, n) = r?;
        out.insert(v, n as u64);
    }
    Ok(out)
}

/// Drop every reference of `container` (its row's deletion does this too).
pub fn remove_refs(c: &Connection, container: &str) -> Result<()> {
    c.execute("DELETE FROM volume_refs WHERE container = ?1", [container])?;
    Ok(())
}

/// Record that `user` has `volume` mounted; returns how many users have it mounted now.
pub fn add_mount(c: &Connection, volume: &str, user: &str) -> Result<u64> {
    c.execute(
        "INSERT OR IGNORE INTO volume_mounts (volume, user) VALUES (?1, ?2)",
        params![volume, user],
    )?;
    mount_count(c, volume)
}

/// Forget that `user` has `volume` mounted; returns how many users still have it mounted.
pub fn remove_mount(c: &Connection, volume: &str, user: &str) -> Result<u64> {
    c.execute(
        "DELETE FROM volume_mounts WHERE volume = ?1 AND user = ?2",
        params![volume, user],
    )?;
    mount_count(c, volume)
}

/// How many users have `volume` mounted.
pub fn mount_count(c: &Connection, volume: &str) -> Result<u64> {
    Ok(c.query_row_cached(
        "SELECT COUNT(*) FROM volume_mounts WHERE volume = ?1",
        [volume],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Every (volume, user) mount record.
pub fn mounts(c: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt =
        c.prepare_cached("SELECT volume, user FROM volume_mounts ORDER BY volume, user")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ids of the containers listed (kind `container`) under the live leases that also list
/// `volume` (kind `volume`): the containers being created with it right now.
pub fn lease_users(c: &Connection, volume: &str) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT DISTINCT u.ref FROM lease_resources v JOIN lease_resources u ON u.lease = v.lease
         WHERE v.kind = 'volume' AND v.ref = ?1 AND u.kind = 'container' ORDER BY u.ref",
    )?;
    let rows = stmt.query_map([volume], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Ids of the leases that list `volume` (kind `volume`).
pub fn leases_of(c: &Connection, volume: &str) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT DISTINCT lease FROM lease_resources WHERE kind = 'volume' AND ref = ?1 ORDER BY lease",
    )?;
    let rows = stmt.query_map([volume], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Number of volumes.
pub fn count(c: &Connection) -> Result<u64> {
    Ok(c.query_row_cached("SELECT COUNT(*) FROM volumes", [], |r| r.get::<_, i64>(0))? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Meta;
    use crate::containers::{self, ContainerRow};

    fn vol(name: &str) -> VolumeRow {
        VolumeRow {
            name: name.into(),
            driver: "local".into(),
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            created: 1,
            size: None,
            size_at: None,
        }
    }

    #[test]
    fn references_follow_the_container_row() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("db")).unwrap();
        let id = "a".repeat(64);
        meta.write(|tx| {
            insert(tx, &vol("v1"))?;
            containers::insert(
                tx,
                &ContainerRow {
                    id: id.clone(),
                    name: "c".into(),
                    image_id: carrel_core::Digest::of_bytes(b"i"),
                    snapshot: id.clone(),
                    spec: "{}".into(),
                    state: "{}".into(),
                    created: 1,
                },
            )?;
            add_ref(tx, "v1", &id)
        })
        .unwrap();
        assert_eq!(meta.read(|c| refs(c, "v1")).unwrap(), vec![id.clone()]);
        assert_eq!(meta.read(|c| volumes_of(c, &id)).unwrap(), vec!["v1"]);
        // A volume in use cannot lose its row.
        assert!(meta.write(|tx| delete(tx, "v1")).is_err());
        meta.write(|tx| containers::delete(tx, &id)).unwrap();
        assert!(meta.read(|c| refs(c, "v1")).unwrap().is_empty());
        assert!(meta.write(|tx| delete(tx, "v1")).unwrap());
    }

    #[test]
    fn a_long_wal_is_truncated_when_the_last_user_closes_and_a_short_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let wal = dir.path().join("db-wal");
        let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        // One short command: its WAL stays for the next one (no checkpoint, no fsync).
        drop(Meta::open(&db).unwrap());
        let meta = Meta::open(&db).unwrap();
        meta.write(|tx| insert(tx, &vol("v0"))).unwrap();
        drop(meta);
        let short = wal_len();
        assert!(short > 0 && short <= crate::WAL_TRUNCATE_BYTES, "{short}");
        // Many writes: the closing connection checkpoints and truncates.
        let meta = Meta::open(&db).unwrap();
        for i in 1..200 {
            meta.write(|tx| insert(tx, &vol(&format!("v{i}")))).unwrap();
        }
        assert!(wal_len() > crate::WAL_TRUNCATE_BYTES);
        drop(meta);
        assert_eq!(wal_len(), 0);
        // Nothing was lost.
        let meta = Meta::open(&db).unwrap();
        assert_eq!(meta.read(list).unwrap().len(), 200);
    }

    #[test]
    fn mount_counts() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("db")).unwrap();
        meta.write(|tx| insert(tx, &vol("v"))).unwrap();
        assert_eq!(meta.write(|tx| add_mount(tx, "v", "c1")).unwrap(), 1);
        assert_eq!(meta.write(|tx| add_mount(tx, "v", "c2")).unwrap(), 2);
        assert_eq!(meta.write(|tx| remove_mount(tx, "v", "c1")).unwrap(), 1);
        assert_eq!(meta.read(mounts).unwrap().len(), 1);
    }
}
