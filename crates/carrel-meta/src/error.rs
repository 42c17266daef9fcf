//! Errors of the metadata layer.

use std::path::{Path, PathBuf};

use carrel_core::{ErrorKind, HasKind};

/// A metadata failure.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// SQLite failed.
    #[error("metadata database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database could not be opened (corrupt, locked, not a database).
    #[error("cannot open metadata database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer carrel.
    #[error(
        "metadata database {path} has schema version {found}, newer than this carrel supports ({supported}); upgrade carrel"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Version on disk.
        found: i64,
        /// Newest version this binary knows.
        supported: i64,
    },
    /// A row holds a value that does not pass validation (tampering or corruption).
    #[error("metadata database holds an invalid {what}: {value:?}")]
    Invalid {
        /// What kind of value.
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// A filesystem error around the database (lease files, db file creation).
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

impl MetaError {
    pub(crate) fn open(path: &Path, source: rusqlite::Error) -> MetaError {
        MetaError::Open {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: impl Into<String>) -> MetaError {
        MetaError::Invalid {
            what,
            value: value.into(),
        }
    }
}

impl HasKind for MetaError {
    fn kind(&self) -> ErrorKind {
        match self {
            MetaError::Sqlite(rusqlite::Error::QueryReturnedNoRows) => ErrorKind::NotFound,
            MetaError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                ErrorKind::AlreadyExists
            }
            MetaError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    || e.code == rusqlite::ErrorCode::DatabaseLocked =>
            {
                ErrorKind::Unavailable
            }
            MetaError::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                ErrorKind::Unavailable
            }
            MetaError::Sqlite(_) => ErrorKind::Internal,
            MetaError::Open { .. } => ErrorKind::Unavailable,
            MetaError::TooNew { .. } => ErrorKind::Precondition,
            MetaError::Invalid { .. } => ErrorKind::Internal,
            MetaError::Io(_, e) => ErrorKind::from_io(e),
        }
    }
}
