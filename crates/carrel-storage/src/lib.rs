//! carrel-storage: where layer bytes live.
//!
//! - [`content`]: the content-addressed blob store (`content/blobs/sha256/<hex>`), written
//!   temp → fsync → verify → rename → fsync dir.
//! - [`snapshot`]: the [`Snapshotter`] trait (shaped like containerd's) and its implementations,
//!   [`overlay`] (kernel overlayfs, the default) and [`copy`] (full copies with reflinks where the
//!   filesystem has them), plus the [`conformance`] suite both pass.

pub mod conformance;
pub mod content;
pub mod copy;
pub mod error;
pub mod overlay;
pub mod snapshot;

pub use error::StorageError;
pub use snapshot::{
    ApplyTarget, DriverPaths, FILES_BEING_REMOVED, Info, SnapshotFiles, Snapshotter, Usage,
    WhiteoutFormat,
};

/// Result type of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
