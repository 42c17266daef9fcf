//! carrel-archive: layer tars in and out, safely.
//!
//! - [`decompress`] detects gzip / zstd from the bytes (bzip2 and xz are refused; no external
//!   program is ever run) and returns a reader of the uncompressed tar.
//! - [`apply_layer`] extracts an uncompressed layer tar into a directory, converting whiteouts
//!   for an overlay upper dir or a full tree ([`WhiteoutFormat`]), bounded by [`Limits`], and
//!   returns the layer's diffID. Every entry is treated as hostile: see the [`apply`] module docs
//!   for how paths are resolved inside the root.
//! - [`write_tree`], [`write_paths`] and [`write_overlay_diff`] write deterministic tars of a
//!   directory tree, of chosen subtrees (`cp`), or of an overlay upper dir as an OCI diff;
//!   [`write_changes`] writes a layer diff from a list of changed paths.
//! - [`apply_layer_split`] does the same and records the layer's [`TarSplit`] (the tar without
//!   its file content), from which [`TarSplit::reassemble`] gives the exact tar back.
//! - [`apply_tar_at`] extracts a `cp` archive into a directory of a live tree (a container's
//!   root), resolving the destination and every entry inside the root (see [`copy`]).
//!
//! Errors are [`ArchiveError`], mapped to [`carrel_core::ErrorKind`] through
//! [`carrel_core::HasKind`].

#![warn(missing_docs)]

pub mod apply;
mod compression;
pub mod copy;
mod error;
mod reader;
pub mod split;
mod sys;
mod write;

pub use apply::{ApplyOptions, ApplyStats, Limits, apply_layer, apply_layer_split};
pub use compression::{BUFFER_SIZE, Compression, ZSTD_WINDOW_LOG_MAX, decompress, detect};
pub use copy::{CopyOptions, Ownership, apply_tar_at, resolve_dir_in_root};
pub use error::{ArchiveError, EntryName};
pub use split::TarSplit;
pub use write::{DiffEntry, write_changes};
pub use write::{TarSource, WriteOptions, WriteStats, write_overlay_diff, write_paths, write_tree};

/// How whiteouts in a layer diff are written when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// The target is an overlay upper layer: `.wh.<name>` becomes a 0/0 character device and
    /// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
    Overlay,
    /// The target holds the full tree: `.wh.<name>` deletes the path and `.wh..wh..opq` deletes
    /// what lower layers put in its directory.
    Naive,
}
