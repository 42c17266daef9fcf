//! The `blobs` table: the content store's index of committed blobs.

use rusqlite::{Connection, OptionalExtension, params};

use carrel_core::Digest;

use crate::{MetaError, QueryRowCached, Result};

/// One committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    /// Its digest (also its file name).
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The media type it was stored as.
    pub media_type: String,
    /// When it was committed, nanoseconds since the epoch.
    pub created: i64,
}

/// Record a blob; an existing row is kept as it is.
pub fn insert(c: &Connection, row: &BlobRow) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO blobs (digest, size, media_type, created) VALUES (?1, ?2, ?3, ?4)",
        params![
            row.digest.to_string(),
            row.size as i64,
            row.media_type,
            row.created
        ],
    )?;
    Ok(())
}

fn parse(digest: String, size: i64, media_type: String, created: i64) -> Result<BlobRow> {
    Ok(BlobRow {
        digest: Digest::parse(&digest).map_err(|_| MetaError::invalid("blob digest", digest))?,
        size: size as u64,
        media_type,
        created,
    })
}

/// The row for a digest.
pub fn get(c: &Connection, digest: &Digest) -> Result<Option<BlobRow>> {
    let r = c
        .query_row_cached(
            "SELECT digest, size, media_type, created FROM blobs WHERE digest = ?1",
            [digest.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    r.map(|(d, s, m, t)| parse(d, s, m, t)).transpose()
}

/// Every blob.
pub fn list(c: &Connection) -> Result<Vec<BlobRow>> {
    let mut stmt =
        c.prepare_cached("SELECT digest, size, media_type, created FROM blobs ORDER BY digest")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (d, s, m, t) = r?;
        out.push(parse(d, s, m, t)?);
    }
    Ok(out)
}

/// Forget a blob. Returns false when it was not recorded.
pub fn delete(c: &Connection, digest: &Digest) -> Result<bool> {
    Ok(c.execute("DELETE FROM blobs WHERE digest = ?1", [digest.to_string()])? == 1)
}
