//! Volume population ("copy-up"): an empty volume mounted over a directory of the image gets a
//! copy of that directory, once, when the container is created (Docker's rule).
//!
//! - The image content is read from a detached, read-only mount of the image's layers
//!   ([`ImageView`]): nothing is mounted anywhere, and the destination is resolved inside the
//!   image by the kernel (`RESOLVE_IN_ROOT`), so `VOLUME /../../etc` or a destination reached
//!   through an absolute symlink of the image copies the image's own files, never the host's.
//! - Only a directory is copied, only into an empty volume (or empty subpath directory), with
//!   owners, modes, extended attributes, times, hardlinks and symlinks as symlinks (never
//!   followed); the volume's root takes the owner and mode of the image directory.
//! - One population at a time per volume (`<root>/locks/populate/<name>.lock`), so two
//!   containers created on one empty volume do not both copy.
//! - A plain local volume used by no other container is populated atomically: the copy is made
//!   in the container's directory and exchanged with the volume's empty `_data`
//!   (`renameat2(RENAME_EXCHANGE)`). A crash before the exchange leaves the volume empty (the next
//!   container populates it again, from scratch); after it, the volume is complete. Otherwise
//!   (a driver-backed volume, a subpath, another container using the volume) the copy goes
//!   straight into the volume: a crash then leaves it partly filled, hence not empty, and it is
//!   never populated again over what is there (ADVERSARIAL ST-60).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use carrel_core::Digest;
use carrel_core::fs::{FileLock, Root};
use carrel_mount::KernelMounter;
use carrel_mountspec::{MountPlan, MountSpec, Origin};
use rustix::fs::{self as rfs, Mode, OFlags, RenameFlags};

use crate::{Engine, EngineError, Result};

/// A read-only view of an image's content: a detached mount of its layers, alive as long as
/// this value.
pub(crate) struct ImageView {
    root: Root,
}

impl ImageView {
    /// Open the directory `path` of the image (resolved inside it) for reading, if it is one.
    fn open_dir(&self, path: &str) -> Result<Option<OwnedFd>> {
        match self.root.open_at(
            Path::new(path),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(EngineError::io("opening image directory", path, e)),
        }
    }

    /// Whether `path` exists in the image (symlinks followed inside it) and is not a directory.
    fn is_file(&self, path: &str) -> Result<bool> {
        match self
            .root
            .open_at(Path::new(path), OFlags::PATH, Mode::empty())
        {
            Ok(fd) => {
                let st = rfs::fstat(&fd).map_err(|e| EngineError::io("stat", path, e.into()))?;
                Ok(rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Directory)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(false),
            Err(e) => Err(EngineError::io("resolving in the image", path, e)),
        }
    }
}

/// Whether the open directory `fd` has no entries.
fn is_empty_dir(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
    for entry in rfs::Dir::read_from(&dup)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether any volume of `plan` needs the image: population, or the check that an anonymous
/// volume does not go over a file.
pub(crate) fn needs_image(plan: &MountPlan) -> bool {
    plan.volumes()
        .any(|v| v.copy_up() || matches!(v.origin, Origin::ConfigVolumes | Origin::ImageVolumes))
}

impl Engine {
    /// Mount the image whose top layer is `top` read-only and detached (see [`ImageView`]).
    pub(crate) fn image_view(&self, top: &Digest) -> Result<ImageView> {
        let mounts = self
            .snapshotter()
            .mounts(&crate::images::layers::layer_key(top))?;
        let [mount] = mounts.as_slice() else {
            return Err(EngineError::Precondition(format!(
                "layer {top}: expected one mount for a read-only view, got {}",
                mounts.len()
            )));
        };
        let fd = KernelMounter::new()
            .mount_detached(mount)
            .map_err(|e| EngineError::Precondition(format!("mounting the image read-only: {e}")))?;
        Ok(ImageView {
            root: Root::from_fd(fd, PathBuf::from(format!("<image {}>", top.short()))),
        })
    }

    /// Docker's refusal of an anonymous volume (`-v /path`, image `VOLUME`) whose destination is
    /// a file in the image.
    pub(crate) fn check_volumes_over_files(
        &self,
        plan: &MountPlan,
        view: &ImageView,
    ) -> Result<()> {
        for v in plan.volumes() {
            if !matches!(v.origin, Origin::ConfigVolumes | Origin::ImageVolumes) {
                continue;
            }
            let path = super::volume_container_path(v);
            if view.is_file(&path)? {
                return Err(EngineError::InvalidArgument(format!(
                    "cannot mount volume over existing file, file exists {path}"
                )));
            }
        }
        Ok(())
    }

    /// Populate the plan's empty volumes from the image (see the module docs). The container
    /// `id` exists (its row references the volumes and its directory is made).
    pub(crate) fn populate_volumes(
        &self,
        id: &str,
        plan: &MountPlan,
        view: &ImageView,
    ) -> Result<()> {
        for (i, m) in plan.mounts.iter().enumerate() {
            let MountSpec::Volume(v) = m else { continue };
            if !v.copy_up() {
                continue;
            }
            let Some(name) = v.name.as_deref() else {
                continue;
            };
            let Some(src) = view.open_dir(&super::volume_container_path(v))? else {
                continue;
            };
            self.populate_volume(id, i, name, v.subpath.as_deref(), &src)?;
        }
        Ok(())
    }

    fn populate_volume(
        &self,
        id: &str,
        index: usize,
        name: &str,
        subpath: Option<&str>,
        src: &OwnedFd,
    ) -> Result<()> {
        let locks = self.layout().locks().join("populate");
        if !locks.is_dir() {
            match carrel_core::fs::create_dir_mode(&locks, 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(EngineError::io("creating lock directory", &locks, e)),
            }
        }
        let lock_path = locks.join(format!("{name}.lock"));
        let _lock = FileLock::lock(&lock_path)
            .map_err(|e| EngineError::io("locking volume population", &lock_path, e))?;
        let path = self.volume_mount(name, id)?;
        let result = self.populate_locked(id, index, name, &path, subpath, src);
        if let Err(e) = self.volume_unmount(name, id) {
            tracing::warn!(volume = name, error = %e, "could not release a volume after populating it");
        }
        result
    }

    fn populate_locked(
        &self,
        id: &str,
        index: usize,
        name: &str,
        path: &Path,
        subpath: Option<&str>,
        src: &OwnedFd,
    ) -> Result<()> {
        let dst = match subpath {
            None => rfs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| EngineError::io("opening volume", path, e.into()))?,
            Some(sub) => {
                // Docker copies into the subpath when it exists (and is a directory).
                let Ok(p) = super::setup::open_subpath(path, sub) else {
                    return Ok(());
                };
                match rfs::openat(
                    &p,
                    "",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(_) => {
                        // `openat(fd, "")` needs O_PATH reopening through /proc.
                        match rfs::open(
                            carrel_core::fs::proc_fd_path(p.as_fd()),
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                            Mode::empty(),
                        ) {
                            Ok(fd) => fd,
                            Err(_) => return Ok(()),
                        }
                    }
                }
            }
        };
        if !is_empty_dir(dst.as_fd()).map_err(|e| EngineError::io("reading volume", path, e))? {
            tracing::debug!(volume = name, "volume not empty: not populated");
            return Ok(());
        }
        let others = self.volume_users(name)?.into_iter().any(|c| c != id);
        let plain = !self.volume_get(name)?.needs_mount();
        if subpath.is_none() && plain && !others {
            match self.populate_by_exchange(id, index, path, src) {
                Ok(true) => {
                    tracing::debug!(volume = name, "volume populated (exchanged)");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => return Err(e),
            }
        }
        carrel_storage::copy::copy_dir_into(src.as_fd(), dst.as_fd())
            .map_err(|e| EngineError::io("populating volume", path, e))?;
        tracing::debug!(volume = name, "volume populated");
        Ok(())
    }

    /// Copy into `<container dir>/.populate-<index>` and exchange it with the volume's `_data`.
    /// `Ok(false)` when the exchange is not possible here (another filesystem): nothing changed
    /// and the caller copies in place.
    fn populate_by_exchange(
        &self,
        id: &str,
        index: usize,
        path: &Path,
        src: &OwnedFd,
    ) -> Result<bool> {
        let (Some(vol_dir), Some(data_name)) = (path.parent(), path.file_name()) else {
            return Ok(false);
        };
        let stage = self.container_dir(id).join(format!(".populate-{index}"));
        let _ = carrel_core::fs::remove_all(&stage);
        rfs::mkdir(&stage, Mode::from_raw_mode(0o700))
            .map_err(|e| EngineError::io("creating", &stage, e.into()))?;
        let outcome = (|| -> Result<bool> {
            let stage_fd = rfs::open(
                &stage,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| EngineError::io("opening", &stage, e.into()))?;
            carrel_storage::copy::copy_dir_into(src.as_fd(), stage_fd.as_fd())
                .map_err(|e| EngineError::io("populating volume", &stage, e))?;
            let cdir = self.container_dir(id);
            let parent = rfs::open(
                &cdir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| EngineError::io("opening", &cdir, e.into()))?;
            let vol = rfs::open(
                vol_dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| EngineError::io("opening", vol_dir, e.into()))?;
            let stage_name = format!(".populate-{index}");
            match rfs::renameat_with(&parent, &stage_name, &vol, data_name, RenameFlags::EXCHANGE) {
                Ok(()) => Ok(true),
                Err(
                    rustix::io::Errno::XDEV | rustix::io::Errno::BUSY | rustix::io::Errno::INVAL,
                ) => Ok(false),
                Err(e) => Err(EngineError::io("exchanging volume content", path, e.into())),
            }
        })();
        // After an exchange the stage holds the volume's old, empty `_data`; otherwise a copy
        // nobody uses.
        if let Err(e) = carrel_core::fs::remove_all(&stage) {
            tracing::warn!(path = %stage.display(), error = %e, "could not remove a population stage");
        }
        outcome
    }
}
