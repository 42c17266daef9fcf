//! carrel-mount: mounts described as data, and the executor that performs them.
//!
//! Snapshotters and the container planner return [`Mount`] values; only [`Mounter`]
//! implementations touch the kernel. [`KernelMounter`] uses the new mount API (`fsopen`/`fsconfig`
//! with one `lowerdir+` per layer, `open_tree`, `mount_setattr`, `move_mount`).
//!
//! - [`mountinfo`]: parse `/proc/self/mountinfo` and list the mounts under a path.
//! - [`features`]: kernel and filesystem features, probed once, for `carrel info`.
//! - [`sys`]: the `mount_setattr` wrapper rustix lacks.

mod error;
pub mod features;
mod kernel;
mod mount;
pub mod mountinfo;
pub mod sys;

pub use error::MountError;
pub use features::Features;
pub use kernel::{
    KernelMounter, Mounter, OVERLAY_MAX_LOWERS, classic_overlay_data, lowerdir_plus_supported,
};
pub use mount::{Mount, OverlayMount, Propagation, ShortLowers};
