//! carrel-mount: mounts described as data, and the executor that performs them.
//!
//! Snapshotters and the container planner return [`Mount`] values; only [`Mounter`]
//! implementations touch the kernel. [`KernelMounter`] uses the new mount API (`fsopen`/`fsconfig`
//! with one `lowerdir+` per layer, `open_tree`, `mount_setattr`, `move_mount`).

mod mount;

pub use mount::{Mount, OverlayMount};
