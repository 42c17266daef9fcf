//! The `images` and `tags` tables.

use rusqlite::{Connection, OptionalExtension, Row, params};

use carrel_core::Digest;

use crate::{MetaError, QueryRowCached, Result};

/// One image: its config blob and the layers it stands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// The image id: the digest of its config.
    pub id: Digest,
    /// The config JSON exactly as stored in the content store.
    pub config: String,
    /// The image manifest JSON, when the image came with one.
    pub manifest: Option<String>,
    /// Chain ids of its layers, bottom first.
    pub layers: Vec<Digest>,
    /// Total size of its layers in bytes.
    pub size: u64,
    /// The config's creation time, nanoseconds since the epoch.
    pub created: i64,
    /// When it entered this store, nanoseconds since the epoch.
    pub loaded: i64,
    /// When it was last tagged, nanoseconds since the epoch.
    pub last_tag: Option<i64>,
}

const COLUMNS: &str = "id, config, manifest, layers, size, created, loaded, last_tag";

type RawImage = (
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
    Option<i64>,
);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawImage> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn parse(r: RawImage) -> Result<ImageRow> {
    let (id, config, manifest, layers, size, created, loaded, last_tag) = r;
    let id = Digest::parse(&id).map_err(|_| MetaError::invalid("image id", id))?;
    let layer_strings: Vec<String> =
        serde_json::from_str(&layers).map_err(|_| MetaError::invalid("image layers", &layers))?;
    let layers = layer_strings
        .iter()
        .map(|l| Digest::parse(l).map_err(|_| MetaError::invalid("layer chain id", l)))
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageRow {
        id,
        config,
        manifest,
        layers,
        size: size as u64,
        created,
        loaded,
        last_tag,
    })
}

/// Record an image. Returns false (and changes nothing) when it is already recorded.
pub fn insert(c: &Connection, row: &ImageRow) -> Result<bool> {
    let layers: Vec<String> = row.layers.iter().map(|d| d.to_string()).collect();
    let n = c.execute(
        &format!(
            "INSERT OR IGNORE INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        params![
            row.id.to_string(),
            row.config,
            row.manifest,
            serde_json::to_string(&layers).unwrap_or_else(|_| "[]".into()),
            row.size as i64,
            row.created,
            row.loaded,
            row.last_tag,
        ],
    )?;
    Ok(n == 1)
}

/// The image with this id.
pub fn get(c: &Connection, id: &Digest) -> Result<Option<ImageRow>> {
    c.query_row_cached(
        &format!("SELECT {COLUMNS} FROM images WHERE id = ?1"),
        [id.to_string()],
        raw,
    )
    .optional()?
    .map(parse)
    .transpose()
}

/// Every image, newest first.
pub fn list(c: &Connection) -> Result<Vec<ImageRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM images ORDER BY created DESC, id"
    ))?;
    let rows = stmt.query_map([], raw)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(parse(r?)?);
    }
    Ok(out)
}

/// Ids of images whose hex id starts with `prefix` (at most `limit` + 1, to detect ambiguity).
pub fn ids_with_prefix(c: &Connection, prefix: &str, limit: usize) -> Result<Vec<Digest>> {
    if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Vec::new());
    }
    let mut stmt =
        c.prepare_cached("SELECT id FROM images WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3")?;
    let lo = format!("sha256:{prefix}");
    let hi = format!("sha256:{prefix}\u{7f}");
    let rows = stmt.query_map(params![lo, hi, (limit + 1) as i64], |r| {
        r.get::<_, String>(0)
    })?;
    let mut out = Vec::new();
    for r in rows {
        let s = r?;
        out.push(Digest::parse(&s).map_err(|_| MetaError::invalid("image id", s))?);
    }
    Ok(out)
}

/// Delete an image row (its tags must be gone). Returns false when it did not exist.
pub fn delete(c: &Connection, id: &Digest) -> Result<bool> {
    Ok(c.execute("DELETE FROM images WHERE id = ?1", [id.to_string()])? == 1)
}

/// Record when an image was last tagged.
pub fn set_last_tag(c: &Connection, id: &Digest, when: i64) -> Result<()> {
    c.execute(
        "UPDATE images SET last_tag = ?2 WHERE id = ?1",
        params![id.to_string(), when],
    )?;
    Ok(())
}

/// One tag: a normalized reference (`docker.io/library/busybox:latest`) pointing at an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    /// The normalized reference.
    pub name: String,
    /// The image it points at.
    pub image_id: Digest,
    /// When the tag was set, nanoseconds since the epoch.
    pub created: i64,
}

fn parse_tag(name: String, id: String, created: i64) -> Result<TagRow> {
    Ok(TagRow {
        name,
        image_id: Digest::parse(&id).map_err(|_| MetaError::invalid("image id", id))?,
        created,
    })
}

/// Point `name` at `image_id`. Returns the image it pointed at before, if another one.
pub fn set_tag(c: &Connection, name: &str, image_id: &Digest, now: i64) -> Result<Option<Digest>> {
    let previous = get_tag(c, name)?.map(|t| t.image_id);
    c.execute(
        "INSERT INTO tags (name, image_id, created) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id, created = excluded.created",
        params![name, image_id.to_string(), now],
    )?;
    set_last_tag(c, image_id, now)?;
    Ok(previous.filter(|p| p != image_id))
}

/// The tag `name`.
pub fn get_tag(c: &Connection, name: &str) -> Result<Option<TagRow>> {
    c.query_row_cached(
        "SELECT name, image_id, created FROM tags WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?
    .map(|(n, i, t)| parse_tag(n, i, t))
    .transpose()
}

/// Every tag, sorted by name.
pub fn list_tags(c: &Connection) -> Result<Vec<TagRow>> {
    let mut stmt = c.prepare_cached("SELECT name, image_id, created FROM tags ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (n, i, t) = r?;
        out.push(parse_tag(n, i, t)?);
    }
    Ok(out)
}

/// The tags pointing at one image, sorted by name.
pub fn tags_of(c: &Connection, image_id: &Digest) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached("SELECT name FROM tags WHERE image_id = ?1 ORDER BY name")?;
    let rows = stmt.query_map([image_id.to_string()], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Remove the tag `name`. Returns false when it did not exist.
pub fn delete_tag(c: &Connection, name: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM tags WHERE name = ?1", [name])? == 1)
}
