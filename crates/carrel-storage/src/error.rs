//! Errors of the storage layer.

use std::path::PathBuf;

use carrel_core::{Digest, ErrorKind, HasKind};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No snapshot with that key.
    #[error("snapshot {0} does not exist")]
    SnapshotNotFound(String),
    /// A snapshot with that key exists already.
    #[error("snapshot {0} already exists")]
    SnapshotExists(String),
    /// The snapshot is not in the state the operation needs.
    #[error("snapshot {key} is {actual}, expected {expected}")]
    WrongKind {
        /// The snapshot.
        key: String,
        /// Its kind.
        actual: &'static str,
        /// The kind the operation needs.
        expected: &'static str,
    },
    /// The snapshot still has children.
    #[error("snapshot {key} is in use by {children} other snapshot(s)")]
    HasChildren {
        /// The snapshot.
        key: String,
        /// How many children.
        children: usize,
    },
    /// The snapshot is still mounted inside its directory.
    #[error("snapshot {key} is still mounted at {path}")]
    Mounted {
        /// The snapshot.
        key: String,
        /// The mount point.
        path: PathBuf,
    },
    /// The chain is deeper than the driver can mount.
    #[error("snapshot {key} has {depth} layers, more than the {max} that {driver} can mount")]
    TooDeep {
        /// The snapshot.
        key: String,
        /// Its depth.
        depth: usize,
        /// The limit.
        max: usize,
        /// The driver.
        driver: &'static str,
    },
    /// The requested driver cannot work on this host.
    #[error("storage driver {driver} is not supported here: {reason}")]
    Unsupported {
        /// The driver.
        driver: &'static str,
        /// Why.
        reason: String,
    },
    /// No blob with that digest.
    #[error("blob {0} not found in the content store")]
    BlobNotFound(Digest),
    /// Content did not hash to what was expected.
    #[error("digest mismatch for {what}: expected {expected}, found {found}")]
    DigestMismatch {
        /// What was being verified.
        what: String,
        /// The expected digest.
        expected: Digest,
        /// The digest of what was read.
        found: Digest,
    },
    /// Content had a different size than expected.
    #[error("size mismatch for {what}: expected {expected} bytes, found {found}")]
    SizeMismatch {
        /// What was being verified.
        what: String,
        /// The expected size.
        expected: u64,
        /// The size read.
        found: u64,
    },
    /// Metadata failed.
    #[error(transparent)]
    Meta(#[from] carrel_meta::MetaError),
    /// A mount failed.
    #[error(transparent)]
    Mount(#[from] carrel_mount::MountError),
    /// A snapshot key that cannot be used (empty).
    #[error("invalid snapshot key {0:?}")]
    InvalidKey(String),
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

impl StorageError {
    /// Wrap an I/O error with what was being done to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

impl HasKind for StorageError {
    fn kind(&self) -> ErrorKind {
        match self {
            StorageError::SnapshotNotFound(_) | StorageError::BlobNotFound(_) => {
                ErrorKind::NotFound
            }
            StorageError::SnapshotExists(_) => ErrorKind::AlreadyExists,
            StorageError::WrongKind { .. } | StorageError::HasChildren { .. } => {
                ErrorKind::Conflict
            }
            StorageError::Mounted { .. } => ErrorKind::Conflict,
            StorageError::TooDeep { .. } => ErrorKind::InvalidArgument,
            StorageError::Unsupported { .. } => ErrorKind::Precondition,
            StorageError::DigestMismatch { .. } | StorageError::SizeMismatch { .. } => {
                ErrorKind::InvalidArgument
            }
            StorageError::Meta(e) => e.kind(),
            StorageError::Mount(e) => e.kind(),
            StorageError::InvalidKey(_) => ErrorKind::InvalidArgument,
            StorageError::Io { source, .. } => ErrorKind::from_io(source),
        }
    }
}
