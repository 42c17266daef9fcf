//! A container's root filesystem as an open directory handle, for `cp` and `export`.
//!
//! - `copy` driver: the container's tree is its root (the monitor bind-mounts it); it is opened
//!   directly.
//! - overlay, running: the monitor's mount of the root (`RunPlan::rootfs`, the snapshot's
//!   `merged` directory) is opened, after checking that it is a mount root. The handle pins the
//!   mount: if the container stops meanwhile, the monitor's unmount detaches it and it lives on
//!   until the handle is closed.
//! - overlay, not running: the container's monitor lock is taken (so the container cannot start
//!   on the same writable layer meanwhile), the snapshot is mounted at a fresh temporary
//!   mountpoint under the container directory — read-only (the writable layer as the top lower
//!   layer of a read-only overlay, which does not claim it as an upper directory) or read-write
//!   (the snapshot's own mounts) — opened, and immediately lazily detached. From then on only the
//!   handle keeps the mount alive: closing it (also when carrel is killed) releases it, so no
//!   mount is ever left behind, and the mountpoint directory is removed at once.
//!
//! For `cp` ([`Engine::container_view_with_mounts`]), a container that is not running gets its
//! binds and volumes mounted in the temporary view between mounting the root and detaching it
//! (sources pinned, targets resolved inside the root, as the monitor mounts them; see
//! `Engine::mount_into_view`), so they are detached with it. A running container's view is its
//! monitor's mount of the root, without them.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carrel_core::fs::{FileLock, Root, proc_fd_path};
use carrel_mount::{KernelMounter, Mount, Mounter};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, StatxAttributes, StatxFlags};

use crate::containers::Container;
use crate::containers::monitor::LOCK_FILE;
use crate::containers::spec::RunPlan;
use crate::{DriverKind, Engine, EngineError, Result};

/// How long to wait for a container that is starting or stopping (its monitor holds the lock
/// while it is not running yet or any more).
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// What the view is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reading (`export`, copies out, stat).
    ReadOnly,
    /// Copies into the container.
    ReadWrite,
}

/// An open view of a container's root. Dropping it releases everything it holds.
#[derive(Debug)]
pub(crate) struct ContainerView {
    // Field order is drop order: the handle (and with it a detached mount) goes before the lock.
    root: Root,
    _lock: Option<FileLock>,
}

impl ContainerView {
    /// The root, for in-root resolution.
    pub(crate) fn root(&self) -> &Root {
        &self.root
    }

    /// `/proc/self/fd/N` of the root: a path for APIs that take one, pinned to this view (it
    /// cannot be redirected by whatever is at the original path now).
    pub(crate) fn path(&self) -> PathBuf {
        proc_fd_path(self.root.fd())
    }
}

/// Open `path` if it is the root of a mount (a running container's mounted root).
fn open_mount_root(path: &Path) -> Result<Option<OwnedFd>> {
    let fd = match rfs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(EngineError::io("opening", path, e.into())),
    };
    Ok(is_mount_root(&fd, path)?.then_some(fd))
}

fn is_mount_root(fd: &OwnedFd, path: &Path) -> Result<bool> {
    let stx = rfs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)
        .map_err(|e| EngineError::io("statx", path, e.into()))?;
    if !stx
        .stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
    {
        return Err(EngineError::Precondition(
            "the kernel does not report mount roots (STATX_ATTR_MOUNT_ROOT, Linux 5.8)".into(),
        ));
    }
    Ok(stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// Turn a snapshot's writable mounts into a read-only view of the same tree.
fn readonly_mounts(mounts: Vec<Mount>) -> Vec<Mount> {
    mounts
        .into_iter()
        .map(|m| match m {
            Mount::Overlay(mut o) => {
                if let Some(upper) = o.upper.take() {
                    // The writable layer becomes the top lower layer: whiteouts and opaque
                    // directories keep their meaning, and nothing claims it as an upper dir.
                    o.lower.insert(0, upper);
                    o.work = None;
                    o.short = None;
                }
                Mount::Overlay(o)
            }
            Mount::Bind {
                source,
                recursive,
                propagation,
                ..
            } => Mount::Bind {
                source,
                readonly: true,
                recursive,
                propagation,
            },
            other => other,
        })
        .collect()
}

/// A temporary mountpoint; removed (after unmounting, if still mounted) when dropped.
struct Mountpoint {
    target: PathBuf,
    mounted: bool,
}

impl Drop for Mountpoint {
    fn drop(&mut self) {
        if self.mounted {
            let m = KernelMounter::new();
            if let Err(e) = m.unmount(&self.target, false) {
                tracing::debug!(error = %e, target = %self.target.display(), "unmount failed; detaching");
                if let Err(e) = m.unmount(&self.target, true) {
                    tracing::warn!(error = %e, target = %self.target.display(), "could not unmount a temporary view");
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.target) {
            tracing::warn!(error = %e, target = %self.target.display(), "could not remove a temporary mountpoint");
        }
    }
}

impl Engine {
    /// Open a view of the container's root (see the module docs).
    pub(crate) fn container_view(&self, c: &Container, access: Access) -> Result<ContainerView> {
        self.open_view(c, access, false)
    }

    /// [`Engine::container_view`] with the container's binds and volumes mounted at their
    /// destinations when it is not running, as Docker mounts them for `cp`: a copy into a
    /// volume's path writes the volume. `export` does not use this (Docker's export has only
    /// the container's own filesystem).
    pub(crate) fn container_view_with_mounts(
        &self,
        c: &Container,
        access: Access,
    ) -> Result<ContainerView> {
        self.open_view(c, access, true)
    }

    fn open_view(&self, c: &Container, access: Access, with_mounts: bool) -> Result<ContainerView> {
        let with_mounts = with_mounts
            && c.spec.mounts.as_ref().is_some_and(|p| {
                p.mounts.iter().any(|m| {
                    matches!(
                        m,
                        carrel_mountspec::MountSpec::Bind(_)
                            | carrel_mountspec::MountSpec::Volume(_)
                    )
                })
            });
        if self.driver() == DriverKind::Copy && (!with_mounts || c.is_running()) {
            let tree = self.snapshotter().upper_dir(&c.snapshot)?;
            let root = Root::open(&tree).map_err(|e| EngineError::io("opening", &tree, e))?;
            return Ok(ContainerView { root, _lock: None });
        }
        let dir = self.container_dir(&c.id);
        let lock_path = dir.join(LOCK_FILE);
        let deadline = Instant::now() + BUSY_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            let c = self.resolve_container(&c.id)?;
            let merged = match RunPlan::load(&dir) {
                Ok(plan) => plan.rootfs,
                Err(_) => self.snapshotter().paths(&c.snapshot)?.merged,
            };
            if c.is_running()
                && let Some(fd) = open_mount_root(&merged)?
            {
                tracing::debug!(container = %c.short_id(), "using the running container's root");
                return Ok(ContainerView {
                    root: Root::from_fd(fd, merged),
                    _lock: None,
                });
            }
            match FileLock::try_lock(&lock_path) {
                Ok(Some(lock)) => {
                    // No monitor is alive. A root still mounted by one that died is the
                    // container's root all the same.
                    let root = match open_mount_root(&merged)? {
                        Some(fd) => Root::from_fd(fd, merged),
                        None => self.temporary_root(&c, access, with_mounts)?,
                    };
                    return Ok(ContainerView {
                        root,
                        _lock: Some(lock),
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(EngineError::io("locking", &lock_path, e)),
            }
            if Instant::now() >= deadline {
                return Err(EngineError::Conflict(format!(
                    "container {} is starting or stopping: try again",
                    c.short_id()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Mount the snapshot of a container that is not running at a temporary mountpoint, open it
    /// and detach it (see the module docs).
    fn temporary_root(&self, c: &Container, access: Access, with_mounts: bool) -> Result<Root> {
        let mut mounts = self.snapshotter().mounts(&c.snapshot)?;
        // With its binds and volumes, the root is mounted writable so their mountpoints can be
        // made (Docker makes them for every archive operation), and made read-only after.
        if access == Access::ReadOnly && !with_mounts {
            mounts = readonly_mounts(mounts);
        }
        let target = self.container_dir(&c.id).join(format!(
            ".view-{}",
            carrel_core::id::random_short(12).to_ascii_lowercase()
        ));
        carrel_core::fs::create_dir_mode(&target, 0o700)
            .map_err(|e| EngineError::io("creating", &target, e))?;
        let mut point = Mountpoint {
            target,
            mounted: false,
        };
        let m = KernelMounter::new();
        m.mount_all(&mounts, &point.target).map_err(|e| {
            EngineError::Precondition(format!("mounting the container's root: {e}"))
        })?;
        point.mounted = true;
        // The container's binds and volumes, below the root. A lazy unmount disconnects
        // submounts from their parent, so the view is then a detached copy of the whole tree
        // (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`), which keeps them where they are.
        let fd = if with_mounts {
            let readonly = access == Access::ReadOnly;
            self.mount_into_view(c, &point.target, readonly)?;
            if readonly {
                let top = rfs::open(
                    &point.target,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| EngineError::io("opening", &point.target, e.into()))?;
                carrel_mount::sys::mount_setattr(
                    top.as_fd(),
                    false,
                    carrel_mount::sys::MountAttrChange {
                        set: carrel_mount::sys::MOUNT_ATTR_RDONLY,
                        ..Default::default()
                    },
                )
                .map_err(|e| EngineError::io("making read-only", &point.target, e))?;
            }
            rustix::mount::open_tree(
                rfs::CWD,
                &point.target,
                rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                    | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | rustix::mount::OpenTreeFlags::AT_RECURSIVE,
            )
            .map_err(|e| EngineError::io("cloning the view of", &point.target, e.into()))?
        } else {
            rfs::open(
                &point.target,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| EngineError::io("opening", &point.target, e.into()))?
        };
        if !is_mount_root(&fd, &point.target)? {
            return Err(EngineError::Precondition(format!(
                "{} is not the mounted root of container {}",
                point.target.display(),
                c.short_id()
            )));
        }
        m.unmount(&point.target, true).map_err(|e| {
            EngineError::Precondition(format!("detaching the container's root: {e}"))
        })?;
        point.mounted = false;
        tracing::debug!(container = %c.short_id(), ?access, fd = ?fd.as_fd(), "temporary view mounted and detached");
        Ok(Root::from_fd(
            fd,
            PathBuf::from(format!("<root of container {}>", c.short_id())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carrel_mount::OverlayMount;

    #[test]
    fn readonly_view_stacks_the_writable_layer_on_top() {
        let rw = vec![Mount::Overlay(OverlayMount {
            volatile: false,
            lower: vec!["/l1".into(), "/l0".into()],
            upper: Some("/up".into()),
            work: Some("/work".into()),
            short: None,
        })];
        let ro = readonly_mounts(rw);
        assert_eq!(
            ro,
            vec![Mount::Overlay(OverlayMount {
                volatile: false,
                lower: vec!["/up".into(), "/l1".into(), "/l0".into()],
                upper: None,
                work: None,
                short: None,
            })]
        );
        assert!(ro[0].is_readonly());
        let b = readonly_mounts(vec![Mount::bind("/t", false)]);
        assert!(b[0].is_readonly());
    }
}
