//! Extracting a `cp` archive into a directory of a live tree: Docker's
//! `PUT /containers/{id}/archive` (`docker cp SRC CONTAINER:DEST`, `docker cp - CONTAINER:DEST`)
//! and the host side of `docker cp CONTAINER:SRC DEST`.
//!
//! The destination path is as untrusted as the archive: a running container can swap any of
//! its components for a symlink at any moment. So nothing is resolved as a host path:
//!
//! 1. the destination is resolved inside the root one component at a time, relative to
//!    directory descriptors opened with `O_NOFOLLOW`, symlinks (absolute ones relative to the
//!    root) spliced in and clamped at the root — the result is the destination's real path
//!    inside the root, checked against the kernel's own `openat2(RESOLVE_IN_ROOT)` resolution;
//! 2. every entry is then placed by the layer extractor ([`crate::apply`]) at that path, resolved
//!    again by the kernel inside the root for each entry. A swap between the two steps, or in
//!    the middle of the archive, can at most send an entry somewhere else inside the root: never
//!    outside it.
//!
//! Unlike a layer, a `cp` archive has no whiteouts (`.wh.*` names are plain files), its `./`
//! entry does not change the destination itself, and hardlink targets are relative to the
//! destination.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use carrel_core::fs::{Root, clean_absolute};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::apply::{CopyRules, apply_stream};
use crate::{ApplyOptions, ApplyStats, ArchiveError, Limits, WhiteoutFormat};

/// Who owns what a `cp` extraction creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ownership {
    /// The owners recorded in the archive (Docker's default for copies into a container).
    #[default]
    Archive,
    /// The extracting process (Docker's `NoLchown`: the client side of a copy out of a
    /// container).
    Caller,
    /// One owner for everything (`docker cp -a`: the container's user).
    Fixed {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
}

/// How [`apply_tar_at`] extracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// Refuse to replace an existing directory by a non-directory and vice versa (Docker's
    /// `noOverwriteDirNonDir`, which the docker CLI always sets).
    pub no_overwrite_dir_non_dir: bool,
    /// Who owns the new files.
    pub ownership: Ownership,
    /// Create character and block devices (false: skip them, e.g. when extracting on the host).
    pub create_devices: bool,
    /// Resource bounds.
    pub limits: Limits,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            no_overwrite_dir_non_dir: false,
            ownership: Ownership::Archive,
            create_devices: true,
            limits: Limits::default(),
        }
    }
}

/// Resolve the existing directory `path` inside `root`, following symlinks (the last component
/// too) the way the kernel does with `RESOLVE_IN_ROOT`, and return a handle on it with its real
/// path relative to the root (no symlink in it).
///
/// Errors: `ENOENT` when a component is missing, `ENOTDIR` when the path (or a component) is not
/// a directory, `ELOOP` after 40 symlinks, `EAGAIN` when the tree changed while it was resolved
/// so that the kernel's resolution of the real path is another directory.
pub fn resolve_dir_in_root(root: &Root, path: &Path) -> io::Result<(OwnedFd, PathBuf)> {
    let comps = |p: &Path| -> VecDeque<OsString> {
        clean_absolute(&Path::new("/").join(p))
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                _ => None,
            })
            .collect()
    };
    let open_root = || root.open_dir(Path::new(""));
    let mut pending = comps(path);
    let mut real = PathBuf::new();
    let mut cur = open_root()?;
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        let st = rfs::statat(&cur, &c, AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                cur = rfs::openat(
                    &cur,
                    &c,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                real.push(&c);
            }
            FileType::Symlink => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = rfs::readlinkat(&cur, &c, Vec::new())?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                let base = if target.is_absolute() {
                    PathBuf::new()
                } else {
                    real.clone()
                };
                let mut spliced = comps(&base.join(target));
                spliced.extend(pending.drain(..));
                pending = spliced;
                real = PathBuf::new();
                cur = open_root()?;
            }
            _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    // The kernel must agree: the real path resolves (inside the root) to the same directory.
    let check = root.open_at(&real, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
    let (a, b) = (rfs::fstat(&cur)?, rfs::fstat(&check)?);
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
        return Err(io::Error::from_raw_os_error(libc::EAGAIN));
    }
    Ok((cur, real))
}

/// Extract a `cp` archive (uncompressed tar) into the existing directory `dest` of the tree
/// `root`, as described in the [module docs](self). `dest` is resolved inside the root (a
/// symlink as its last component is followed, as Docker does, to extract "into a symlink that
/// points to a directory"); when it is missing or not a directory the error is
/// [`ArchiveError::Open`] with `ENOENT` / `ENOTDIR` as its source.
///
/// Every hostile-archive defence of [`crate::apply_layer`] applies (names that climb out,
/// absolute names, writing through symlinks, hardlink escapes, metadata through symlinks,
/// forged overlay xattrs, resource limits).
pub fn apply_tar_at(
    root: &Root,
    dest: &Path,
    tar_stream: impl Read,
    opts: &CopyOptions,
) -> Result<ApplyStats, ArchiveError> {
    let open_err = |source| ArchiveError::Open {
        path: dest.to_path_buf(),
        source,
    };
    let (_dir, base) = resolve_dir_in_root(root, dest).map_err(open_err)?;
    let fd = rustix::io::fcntl_dupfd_cloexec(root.fd(), 3).map_err(|e| open_err(e.into()))?;
    let root = Root::from_fd(fd, root.path().to_path_buf());
    tracing::debug!(dest = %dest.display(), real = %base.display(), "extracting a copy");
    let apply = ApplyOptions {
        whiteouts: WhiteoutFormat::Naive,
        limits: opts.limits.clone(),
        preserve_ownership: opts.ownership == Ownership::Archive,
        create_devices: opts.create_devices,
    };
    let rules = CopyRules {
        base,
        no_overwrite_dir_non_dir: opts.no_overwrite_dir_non_dir,
        chown: match opts.ownership {
            Ownership::Fixed { uid, gid } => Some((uid, gid)),
            _ => None,
        },
    };
    apply_stream(root, tar_stream, &apply, Some(&rules), false).map(|(stats, _)| stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_resolves_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../real/sub", r.join("real/up")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("host")).unwrap();
        let root = Root::open(r).unwrap();
        let (_, p) = resolve_dir_in_root(&root, Path::new("/abs/sub")).unwrap();
        assert_eq!(p, Path::new("real/sub"));
        let (_, p) = resolve_dir_in_root(&root, Path::new("real/up")).unwrap();
        assert_eq!(p, Path::new("real/sub"));
        let (_, p) = resolve_dir_in_root(&root, Path::new("/")).unwrap();
        assert_eq!(p, Path::new(""));
        // A link to a host directory is resolved inside the root, where it does not exist.
        let e = resolve_dir_in_root(&root, Path::new("/host")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        std::fs::write(r.join("file"), b"x").unwrap();
        let e = resolve_dir_in_root(&root, Path::new("/file")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
    }
}
