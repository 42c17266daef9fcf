//! Errors of the engine. Messages name the object and the problem, in Docker's words where users
//! and scripts rely on them.

use std::path::PathBuf;

use carrel_core::{ErrorKind, HasKind};

/// An engine failure.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The named object does not exist (`No such image: busybox:latest`).
    #[error("{0}")]
    NotFound(String),
    /// The object exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object's state forbids the operation (in use, referenced elsewhere).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed (bad reference, bad archive, bad option).
    #[error("{0}")]
    InvalidArgument(String),
    /// The host lacks something the request needs.
    #[error("{0}")]
    Precondition(String),
    /// A container's process could not be started (Docker's 125, 126 or 127 for `run`).
    #[error("{message}")]
    StartFailed {
        /// What the runtime said, in Docker's words.
        message: String,
        /// Docker's exit code for it.
        exit_code: i32,
    },
    /// carrel needs privileges it does not have.
    #[error("{0}")]
    Permission(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] carrel_storage::StorageError),
    /// Metadata failed.
    #[error(transparent)]
    Meta(#[from] carrel_meta::MetaError),
    /// A layer archive was refused.
    #[error(transparent)]
    Archive(#[from] carrel_archive::ArchiveError),
    /// A filesystem operation failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl EngineError {
    /// Wrap an I/O error with what was being done to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

impl HasKind for EngineError {
    fn kind(&self) -> ErrorKind {
        match self {
            EngineError::NotFound(_) => ErrorKind::NotFound,
            EngineError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            EngineError::Conflict(_) => ErrorKind::Conflict,
            EngineError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            EngineError::Precondition(_) => ErrorKind::Precondition,
            EngineError::Permission(_) => ErrorKind::Permission,
            EngineError::StartFailed { .. } => ErrorKind::Internal,
            EngineError::Storage(e) => e.kind(),
            EngineError::Meta(e) => e.kind(),
            EngineError::Archive(e) => e.kind(),
            EngineError::Io { source, .. } => ErrorKind::from_io(source),
        }
    }
}

impl From<carrel_core::reference::ReferenceError> for EngineError {
    fn from(e: carrel_core::reference::ReferenceError) -> Self {
        EngineError::InvalidArgument(e.to_string())
    }
}

/// Result type of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
