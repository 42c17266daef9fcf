//! The `Mount` value type.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An overlay filesystem: read-only lower layers (top first, as overlayfs orders them), and an
/// optional writable upper layer with its work directory.
///
/// Without an upper layer overlayfs needs at least two lowers; a one-layer read-only view is a
/// read-only [`Mount::Bind`] instead (snapshotters produce that).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayMount {
    /// Lower directories, topmost first (absolute paths).
    pub lower: Vec<PathBuf>,
    /// The writable upper directory (absent for a read-only view).
    pub upper: Option<PathBuf>,
    /// The work directory that goes with `upper`.
    pub work: Option<PathBuf>,
    /// Short names of the same lowers for the classic `mount(2)` fallback (kernels without
    /// `lowerdir+`), resolved relative to [`ShortLowers::dir`]. Ignored with the new mount API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short: Option<ShortLowers>,
    /// Mount with overlayfs's `volatile` option (with an upper layer): the upper filesystem is
    /// not synced, at unmount nor on `sync`/`fsync` inside. For writable layers that are thrown
    /// away with their container (`--rm`); after a crash the kernel refuses the upper layer
    /// until `work/incompat/volatile` (a directory) is removed (see
    /// [`OverlayMount::volatile_marker`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volatile: bool,
}

impl OverlayMount {
    /// The directory overlayfs leaves in the work directory of a volatile mount, which makes
    /// later mounts of the same upper layer fail until it is removed.
    pub fn volatile_marker(&self) -> Option<PathBuf> {
        self.work
            .as_ref()
            .map(|w| w.join("work").join("incompat").join("volatile"))
    }
}

/// Lower directories given relative to a base directory, to keep `mount(2)` option data short
/// (Docker's `l/<short>` links).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortLowers {
    /// The directory the relative paths are resolved from (the driver's home).
    pub dir: PathBuf,
    /// One relative path per lower, in the same order as [`OverlayMount::lower`].
    pub lower: Vec<PathBuf>,
}

/// Mount propagation of a bind mount (`mount --make-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    /// `private`: no events in or out.
    Private,
    /// `slave`: events from the source come in, none go out.
    Slave,
    /// `shared`: events flow both ways.
    Shared,
    /// `unbindable`: private and cannot be bind mounted.
    Unbindable,
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
        /// Mount it read-only (recursively when `recursive`: every submount is read-only too).
        readonly: bool,
        /// Bind the submounts too (`rbind`).
        #[serde(default)]
        recursive: bool,
        /// Propagation to set on the new mount(s); `None` keeps the kernel's default.
        #[serde(default)]
        propagation: Option<Propagation>,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Options as `mount -o` takes them (`size=64m`, `mode=1777`, `noexec`, `ro`, ...). Flags
        /// that are mount attributes (`ro`, `noexec`, `nosuid`, `nodev`, `noatime`, ...) are applied
        /// to the mount; everything else is passed to tmpfs.
        options: Vec<String>,
    },
}

impl Mount {
    /// A plain (non-recursive) bind mount with the kernel's default propagation.
    pub fn bind(source: impl Into<PathBuf>, readonly: bool) -> Mount {
        Mount::Bind {
            source: source.into(),
            readonly,
            recursive: false,
            propagation: None,
        }
    }

    /// A recursive bind mount (`rbind`); read-only applies to every submount.
    pub fn rbind(source: impl Into<PathBuf>, readonly: bool) -> Mount {
        Mount::Bind {
            source: source.into(),
            readonly,
            recursive: true,
            propagation: None,
        }
    }

    /// Whether the mount is read-only.
    pub fn is_readonly(&self) -> bool {
        match self {
            Mount::Overlay(o) => o.upper.is_none(),
            Mount::Bind { readonly, .. } => *readonly,
            Mount::Tmpfs { options } => options.iter().any(|o| o == "ro"),
        }
    }
}
