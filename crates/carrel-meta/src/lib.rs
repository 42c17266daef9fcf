//! carrel-meta: the metadata database of a data root.
//!
//! One SQLite file (`carrel.db`, WAL, `synchronous=NORMAL`) shared by every carrel process on the
//! root. The schema is versioned with `PRAGMA user_version` and migrated forward when opened.
//! Every table has one owning module: [`snapshots`] (storage drivers), [`blobs`], [`images`],
//! [`leases`] (in-flight work). Row accessors take a `&Connection` so callers can combine several
//! of them in one transaction via [`Meta::write`].

pub mod blobs;
pub mod containers;
pub mod error;
pub mod images;
pub mod leases;
mod migrations;
pub mod settings;
pub mod snapshots;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use error::MetaError;
pub use leases::{Lease, LeaseId};
pub use rusqlite::{Connection, Transaction};

/// Prepared statements kept per connection (more than the queries carrel has).
const STATEMENT_CACHE: usize = 128;

/// `query_row` through the connection's statement cache: a query is parsed once per connection,
/// not at every call (SQLite's parser was the biggest part of a server's answer to a list).
pub(crate) trait QueryRowCached {
    /// Like [`Connection::query_row`], with the statement taken from the cache.
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl QueryRowCached for Connection {
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Result type of this crate.
pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// A handle on the metadata database.
pub struct Meta {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// WAL size above which a closing connection checkpoints and truncates the WAL (64 frames of
/// 4 KiB pages).
pub const WAL_TRUNCATE_BYTES: u64 = 64 * (4096 + 24);

impl Drop for Meta {
    /// Checkpoint and truncate a long WAL (see [`keep_wal_between_processes`]), without waiting:
    /// when another process is reading or writing, the next closing connection does it.
    fn drop(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let long = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_TRUNCATE_BYTES);
        if !long {
            return;
        }
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = conn.busy_timeout(Duration::ZERO);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint skipped");
        }
    }
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").field("path", &self.path).finish()
    }
}

/// How long a writer waits for another process's transaction before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Every carrel command is a short process: by default the last connection to close checkpoints
/// the WAL into the database, syncs both and deletes the WAL, and the next command creates and
/// syncs a new one, which costs several `fsync`s per command for nothing. The WAL is kept instead
/// (`SQLITE_FCNTL_PERSIST_WAL`, no checkpoint on close), and a crash loses nothing that a
/// checkpoint on close would have kept.
///
/// The WAL must stay short, though: the first connection of every process rebuilds the WAL
/// index by reading every frame of the WAL, and forgets which frames earlier processes already
/// checkpointed, so a process never restarts a WAL that another one checkpointed. A closing
/// connection therefore checkpoints and truncates the WAL once it is longer than
/// [`WAL_TRUNCATE_BYTES`] (see [`Meta`]'s `Drop`): two `fsync`s every ten or so commands instead
/// of every command, and at most a few hundred kilobytes to read at each start.
fn keep_wal_between_processes(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    let mut persist: std::os::raw::c_int = 1;
    // SAFETY: a file control on the open connection's main database; `persist` outlives the call.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut persist as *mut std::os::raw::c_int).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            Some("keeping the WAL file".into()),
        ));
    }
    Ok(())
}

impl Meta {
    /// Open (creating if needed) the database at `path` and migrate it to the current schema.
    pub fn open(path: &Path) -> Result<Meta> {
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| MetaError::Io(path.to_path_buf(), e))?;
        }
        let conn = Connection::open(path).map_err(|e| MetaError::open(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| MetaError::open(path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; \
             PRAGMA mmap_size=268435456;",
        )
        .map_err(|e| MetaError::open(path, e))?;
        keep_wal_between_processes(&conn).map_err(|e| MetaError::open(path, e))?;
        migrations::migrate(&conn, path)?;
        // Every query is prepared once per connection (a server keeps its connection).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Meta {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run read-only work on the connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// Run `f` in a write transaction (`BEGIN IMMEDIATE`, so writers queue instead of deadlocking)
    /// and commit it when `f` succeeds. Nothing is written when `f` fails.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// [`Meta::write`] for work that can also fail for reasons of its own (`E`): the
    /// transaction commits only when `f` returns `Ok(Ok(_))`; on `Ok(Err(e))` nothing is written
    /// and `e` is handed back.
    pub fn try_write<T, E>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<std::result::Result<T, E>>,
    ) -> Result<std::result::Result<T, E>> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        if out.is_ok() {
            tx.commit()?;
        }
        Ok(out)
    }

    /// Run read-only work that needs one consistent view of several tables (a read
    /// transaction: nothing another process commits meanwhile is seen half).
    pub fn read_consistent<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        f(&tx)
    }

    /// Check the database file itself (`PRAGMA quick_check`).
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare("PRAGMA quick_check")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for r in rows {
                let r = r?;
                if r != "ok" {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }
}

/// Seconds since the Unix epoch, with nanoseconds, as stored in `created` columns.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
