//! The `settings` table: facts about the data root itself (e.g. its storage driver).

use rusqlite::{Connection, OptionalExtension, params};

use crate::{QueryRowCached, Result};

/// The value stored under `key`.
pub fn get(c: &Connection, key: &str) -> Result<Option<String>> {
    Ok(
        c.query_row_cached("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

/// Store `value` under `key`, replacing what was there.
pub fn set(c: &Connection, key: &str, value: &str) -> Result<()> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}
