//! The `Mount` value type.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An overlay filesystem: read-only lower layers (top first, as overlayfs orders them), and an
/// optional writable upper layer with its work directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayMount {
    /// Lower directories, topmost first.
    pub lower: Vec<PathBuf>,
    /// The writable upper directory (absent for a read-only view).
    pub upper: Option<PathBuf>,
    /// The work directory that goes with `upper`.
    pub work: Option<PathBuf>,
}

/// A mount described as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mount {
    /// Kernel overlayfs.
    Overlay(OverlayMount),
    /// A bind mount of a host directory or file.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Mount it read-only.
        readonly: bool,
    },
}
