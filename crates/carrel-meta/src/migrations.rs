//! Versioned schema migrations. Version N of the schema is the result of applying
//! `MIGRATIONS[0..N]`; a migration is never edited once released, only new ones appended.

use std::path::Path;

use rusqlite::Connection;

use crate::{MetaError, Result};

/// Each entry migrates from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: settings, snapshots (storage drivers), blobs, images and tags, leases.
    r#"
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE snapshots (
        key     TEXT PRIMARY KEY,
        id      TEXT NOT NULL UNIQUE,
        parent  TEXT REFERENCES snapshots(key),
        kind    TEXT NOT NULL CHECK (kind IN ('view', 'active', 'committed')),
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        size    INTEGER,
        inodes  INTEGER,
        labels  TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX snapshots_parent ON snapshots(parent);
    CREATE TABLE blobs (
        digest     TEXT PRIMARY KEY,
        size       INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        created    INTEGER NOT NULL
    );
    CREATE TABLE images (
        id         TEXT PRIMARY KEY,
        config     TEXT NOT NULL,
        manifest   TEXT,
        layers     TEXT NOT NULL,
        size       INTEGER NOT NULL,
        created    INTEGER NOT NULL,
        loaded     INTEGER NOT NULL,
        last_tag   INTEGER
    );
    CREATE TABLE tags (
        name     TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id),
        created  INTEGER NOT NULL
    );
    CREATE INDEX tags_image ON tags(image_id);
    CREATE TABLE leases (
        id      TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        pid     INTEGER NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE lease_resources (
        lease TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
        kind  TEXT NOT NULL,
        ref   TEXT NOT NULL,
        PRIMARY KEY (lease, kind, ref)
    );
    CREATE INDEX lease_resources_ref ON lease_resources(kind, ref);
    "#,
    // 2: containers.
    r#"
    CREATE TABLE containers (
        id       TEXT PRIMARY KEY,
        name     TEXT NOT NULL UNIQUE,
        image_id TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        spec     TEXT NOT NULL,
        state    TEXT NOT NULL,
        created  INTEGER NOT NULL
    );
    CREATE INDEX containers_image ON containers(image_id);
    "#,
    // 3: volumes, the containers that reference them, and who has them mounted.
    r#"
    CREATE TABLE volumes (
        name       TEXT PRIMARY KEY,
        driver     TEXT NOT NULL,
        labels     TEXT NOT NULL DEFAULT '{}',
        options    TEXT NOT NULL DEFAULT '{}',
        created    INTEGER NOT NULL,
        size       INTEGER,
        size_at    INTEGER
    );
    CREATE TABLE volume_refs (
        volume    TEXT NOT NULL REFERENCES volumes(name),
        container TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        PRIMARY KEY (volume, container)
    );
    CREATE INDEX volume_refs_container ON volume_refs(container);
    CREATE TABLE volume_mounts (
        volume TEXT NOT NULL REFERENCES volumes(name),
        user   TEXT NOT NULL,
        PRIMARY KEY (volume, user)
    );
    "#,
];

/// The schema version this binary writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > CURRENT_VERSION {
        return Err(MetaError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: CURRENT_VERSION,
        });
    }
    if version == CURRENT_VERSION {
        return Ok(());
    }
    // Serialize migrations between processes; re-read the version inside the lock.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| -> Result<()> {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(sql)?;
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
            tracing::debug!(version = i + 1, "migrated metadata schema");
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
