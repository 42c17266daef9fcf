//! The `snapshots` table, owned by the storage drivers: one row per layer, view or writable layer.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{MetaError, QueryRowCached, Result};

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read-only view of a committed snapshot.
    View,
    /// A writable snapshot (a container's writable layer, or a layer being extracted).
    Active,
    /// A committed, read-only layer.
    Committed,
}

impl Kind {
    /// The value stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }

    fn parse(s: &str) -> Result<Kind> {
        match s {
            "view" => Ok(Kind::View),
            "active" => Ok(Kind::Active),
            "committed" => Ok(Kind::Committed),
            other => Err(MetaError::invalid("snapshot kind", other)),
        }
    }
}

/// One row of the `snapshots` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    /// The caller's name for the snapshot (chain id for layers, container id for writable layers).
    pub key: String,
    /// The directory name under the driver's home (validated as a plain name on read).
    pub id: String,
    /// The committed snapshot this one is stacked on.
    pub parent: Option<String>,
    /// View, active or committed.
    pub kind: Kind,
    /// Creation time, nanoseconds since the epoch.
    pub created: i64,
    /// Last change, nanoseconds since the epoch.
    pub updated: i64,
    /// Bytes used by this snapshot's own changes, recorded at commit.
    pub size: Option<u64>,
    /// Inodes used by this snapshot's own changes, recorded at commit.
    pub inodes: Option<u64>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
}

const COLUMNS: &str = "key, id, parent, kind, created, updated, size, inodes, labels";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(SnapshotRow, String)> {
    let labels: String = r.get(8)?;
    let kind: String = r.get(3)?;
    Ok((
        SnapshotRow {
            key: r.get(0)?,
            id: r.get(1)?,
            parent: r.get(2)?,
            kind: Kind::Committed,
            created: r.get(4)?,
            updated: r.get(5)?,
            size: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            inodes: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
            labels: serde_json::from_str(&labels).unwrap_or_default(),
        },
        kind,
    ))
}

fn validate((mut row, kind): (SnapshotRow, String)) -> Result<SnapshotRow> {
    row.kind = Kind::parse(&kind)?;
    if !carrel_core::fs::is_plain_name(std::ffi::OsStr::new(&row.id)) || row.id.len() > 128 {
        return Err(MetaError::invalid("snapshot directory id", row.id));
    }
    Ok(row)
}

/// Insert a new snapshot row. Fails with a constraint error when the key exists.
pub fn insert(c: &Connection, row: &SnapshotRow) -> Result<()> {
    c.execute(
        &format!("INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            row.key,
            row.id,
            row.parent,
            row.kind.as_str(),
            row.created,
            row.updated,
            row.size.map(|v| v as i64),
            row.inodes.map(|v| v as i64),
            serde_json::to_string(&row.labels).unwrap_or_else(|_| "{}".into()),
        ],
    )?;
    Ok(())
}

/// The row for `key`, if any.
pub fn get(c: &Connection, key: &str) -> Result<Option<SnapshotRow>> {
    let row = c
        .query_row_cached(
            &format!("SELECT {COLUMNS} FROM snapshots WHERE key = ?1"),
            [key],
            from_row,
        )
        .optional()?;
    row.map(validate).transpose()
}

/// Every row, in creation order.
pub fn list(c: &Connection) -> Result<Vec<SnapshotRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM snapshots ORDER BY created, key"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(validate(r?)?);
    }
    Ok(out)
}

/// Whether there is any snapshot at all (without reading them).
pub fn any(c: &Connection) -> Result<bool> {
    Ok(
        c.query_row_cached("SELECT EXISTS (SELECT 1 FROM snapshots)", [], |r| {
            r.get::<_, bool>(0)
        })?,
    )
}

/// Keys of the snapshots whose parent is `key`.
pub fn children(c: &Connection, key: &str) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached("SELECT key FROM snapshots WHERE parent = ?1 ORDER BY key")?;
    let rows = stmt.query_map([key], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Turn the active snapshot `key` into the committed snapshot `name`, recording its usage and
/// labels. Returns false when `key` is not an active snapshot.
pub fn commit(
    c: &Connection,
    key: &str,
    name: &str,
    size: u64,
    inodes: u64,
    labels: &BTreeMap<String, String>,
    now: i64,
) -> Result<bool> {
    let n = c.execute(
        "UPDATE snapshots SET key = ?2, kind = 'committed', size = ?3, inodes = ?4, labels = ?5,
                updated = ?6
         WHERE key = ?1 AND kind = 'active'",
        params![
            key,
            name,
            size as i64,
            inodes as i64,
            serde_json::to_string(labels).unwrap_or_else(|_| "{}".into()),
            now
        ],
    )?;
    Ok(n == 1)
}

/// Replace the labels of a snapshot.
pub fn set_labels(c: &Connection, key: &str, labels: &BTreeMap<String, String>) -> Result<bool> {
    let n = c.execute(
        "UPDATE snapshots SET labels = ?2 WHERE key = ?1",
        params![
            key,
            serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
        ],
    )?;
    Ok(n == 1)
}

/// Record the measured usage of a snapshot.
pub fn set_usage(c: &Connection, key: &str, size: u64, inodes: u64) -> Result<bool> {
    let n = c.execute(
        "UPDATE snapshots SET size = ?2, inodes = ?3 WHERE key = ?1",
        params![key, size as i64, inodes as i64],
    )?;
    Ok(n == 1)
}

/// Delete the row for `key`. Returns false when it did not exist.
pub fn delete(c: &Connection, key: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM snapshots WHERE key = ?1", [key])? == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Meta;

    fn row(key: &str, id: &str, parent: Option<&str>, kind: Kind) -> SnapshotRow {
        SnapshotRow {
            key: key.into(),
            id: id.into(),
            parent: parent.map(Into::into),
            kind,
            created: 1,
            updated: 1,
            size: None,
            inodes: None,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn insert_commit_and_children() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("db")).unwrap();
        assert!(!meta.read(any).unwrap(), "no snapshot yet");
        meta.write(|tx| {
            insert(tx, &row("base", "1", None, Kind::Committed))?;
            insert(tx, &row("tmp", "2", Some("base"), Kind::Active))?;
            Ok(())
        })
        .unwrap();
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        assert!(
            meta.write(|tx| commit(tx, "tmp", "layer2", 10, 2, &labels, 5))
                .unwrap()
        );
        assert!(meta.read(any).unwrap());
        let r = meta.read(|c| get(c, "layer2")).unwrap().unwrap();
        assert_eq!(r.kind, Kind::Committed);
        assert_eq!(r.size, Some(10));
        assert_eq!(r.labels, labels);
        assert_eq!(meta.read(|c| children(c, "base")).unwrap(), vec!["layer2"]);
        // A duplicate key is refused.
        assert!(
            meta.write(|tx| insert(tx, &row("base", "3", None, Kind::Active)))
                .is_err()
        );
    }

    #[test]
    fn tampered_directory_ids_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("db")).unwrap();
        meta.write(|tx| insert(tx, &row("evil", "../../tmp/x", None, Kind::Active)))
            .unwrap();
        assert!(meta.read(|c| get(c, "evil")).is_err());
        assert!(meta.read(list).is_err());
    }
}
