//! The `containers` table: one row per container. `spec` and `state` are JSON documents owned
//! by the engine; this module validates the columns it interprets (id, name, image id).

use rusqlite::{Connection, OptionalExtension, Row, params};

use carrel_core::Digest;

use crate::{MetaError, QueryRowCached, Result};

/// One container row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    /// 64 lowercase hex characters.
    pub id: String,
    /// Unique name, without Docker's leading `/`.
    pub name: String,
    /// The image it was created from.
    pub image_id: Digest,
    /// Snapshot key of its writable layer.
    pub snapshot: String,
    /// What to run (JSON, engine-defined).
    pub spec: String,
    /// Lifecycle state (JSON, engine-defined).
    pub state: String,
    /// Creation time, nanoseconds since the epoch.
    pub created: i64,
}

const COLUMNS: &str = "id, name, image_id, snapshot, spec, state, created";

type Raw = (String, String, String, String, String, String, i64);

fn raw(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn parse((id, name, image_id, snapshot, spec, state, created): Raw) -> Result<ContainerRow> {
    if !carrel_core::digest::is_hex64(&id) {
        return Err(MetaError::invalid("container id", id));
    }
    Ok(ContainerRow {
        image_id: Digest::parse(&image_id).map_err(|_| MetaError::invalid("image id", image_id))?,
        id,
        name,
        snapshot,
        spec,
        state,
        created,
    })
}

/// Insert a container. A duplicate name or id is a constraint error.
pub fn insert(c: &Connection, row: &ContainerRow) -> Result<()> {
    c.execute(
        &format!("INSERT INTO containers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            row.id,
            row.name,
            row.image_id.to_string(),
            row.snapshot,
            row.spec,
            row.state,
            row.created
        ],
    )?;
    Ok(())
}

/// The container with this exact id.
pub fn get(c: &Connection, id: &str) -> Result<Option<ContainerRow>> {
    c.query_row_cached(
        &format!("SELECT {COLUMNS} FROM containers WHERE id = ?1"),
        [id],
        raw,
    )
    .optional()?
    .map(parse)
    .transpose()
}

/// The container with this exact name.
pub fn get_by_name(c: &Connection, name: &str) -> Result<Option<ContainerRow>> {
    c.query_row_cached(
        &format!("SELECT {COLUMNS} FROM containers WHERE name = ?1"),
        [name],
        raw,
    )
    .optional()?
    .map(parse)
    .transpose()
}

/// Ids starting with `prefix` (at most `limit` + 1, to detect ambiguity).
pub fn ids_with_prefix(c: &Connection, prefix: &str, limit: usize) -> Result<Vec<String>> {
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Vec::new());
    }
    let mut stmt = c.prepare_cached(
        "SELECT id FROM containers WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3",
    )?;
    let hi = format!("{prefix}\u{7f}");
    let rows = stmt.query_map(params![prefix, hi, (limit + 1) as i64], |r| {
        r.get::<_, String>(0)
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every container, newest first.
pub fn list(c: &Connection) -> Result<Vec<ContainerRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM containers ORDER BY created DESC, id"
    ))?;
    let rows = stmt.query_map([], raw)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(parse(r?)?);
    }
    Ok(out)
}

/// Replace the state document of a container. Returns false when it does not exist.
pub fn set_state(c: &Connection, id: &str, state: &str) -> Result<bool> {
    Ok(c.execute(
        "UPDATE containers SET state = ?2 WHERE id = ?1",
        params![id, state],
    )? == 1)
}

/// Rename a container. A name in use is a constraint error.
pub fn rename(c: &Connection, id: &str, name: &str) -> Result<bool> {
    Ok(c.execute(
        "UPDATE containers SET name = ?2 WHERE id = ?1",
        params![id, name],
    )? == 1)
}

/// Delete a container row. Returns false when it did not exist.
pub fn delete(c: &Connection, id: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM containers WHERE id = ?1", [id])? == 1)
}

/// Ids of the containers created from an image.
pub fn using_image(c: &Connection, image: &Digest) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached("SELECT id FROM containers WHERE image_id = ?1 ORDER BY id")?;
    let rows = stmt.query_map([image.to_string()], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
