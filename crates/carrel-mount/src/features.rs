//! Kernel and filesystem features, probed once and shown by `carrel info`.
//!
//! What each field checks:
//! - `overlay`: `fsopen("overlay")` succeeds (the module is loaded or loadable).
//! - `overlay_lowerdir_plus`: overlayfs accepts `fsconfig(lowerdir+)` (Linux 6.8+).
//! - `overlay_metacopy`: `/sys/module/overlay/parameters/metacopy` exists.
//! - `recursive_readonly`: an `open_tree(OPEN_TREE_CLONE|AT_RECURSIVE)` clone of the probed
//!   directory accepts `mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)` (the clone is detached and
//!   vanishes when its descriptor closes).
//! - `idmapped_mounts`: not probed with a real user namespace; the kernel is at least 5.12 (when
//!   `mount_setattr` and `MOUNT_ATTR_IDMAP` appeared) and the backing filesystem is one that
//!   supported idmapped mounts by then or, for tmpfs (6.3) and overlayfs (5.19), by the running
//!   kernel's version.
//! - `reflink`: two temporary files in the directory can be cloned with `FICLONE`.
//! - `project_quota`: the directory's mount is XFS with `prjquota`/`pquota` in its options.
//! - `backing_filesystem`: the `statfs` magic of the directory, named as `docker info` names it.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rustix::fs::CWD;
use rustix::mount::{FsOpenFlags, OpenTreeFlags};
use serde::Serialize;

use crate::mountinfo;
use crate::sys::{self, MountAttrChange};

/// What the kernel and the data root's filesystem support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Features {
    /// `uname -r`.
    pub kernel: String,
    /// Overlayfs can be mounted.
    pub overlay: bool,
    /// Overlayfs takes one `lowerdir+` per layer (up to 500 layers).
    pub overlay_lowerdir_plus: bool,
    /// Overlayfs has the metacopy feature.
    pub overlay_metacopy: bool,
    /// Recursive read-only bind mounts (`mount_setattr`) work.
    pub recursive_readonly: bool,
    /// Idmapped mounts are expected to work on the data root (see the module docs).
    pub idmapped_mounts: bool,
    /// The data root's filesystem clones files with `FICLONE`.
    pub reflink: bool,
    /// The data root is XFS mounted with project quotas.
    pub project_quota: bool,
    /// Docker's name of the data root's filesystem (`extfs`, `xfs`, `btrfs`, ...).
    pub backing_filesystem: String,
}

impl Features {
    /// Probe everything for the data root `dir` (which must exist and be writable).
    pub fn probe(dir: &Path) -> Features {
        let kernel = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let backing = backing_filesystem(dir);
        let overlay = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).is_ok();
        Features {
            overlay,
            overlay_lowerdir_plus: overlay && crate::kernel::lowerdir_plus_supported(),
            overlay_metacopy: Path::new("/sys/module/overlay/parameters/metacopy").exists(),
            recursive_readonly: recursive_readonly(dir),
            idmapped_mounts: idmapped_mounts_expected(&kernel, &backing),
            reflink: reflink_supported(dir),
            project_quota: project_quota(dir),
            backing_filesystem: backing,
            kernel,
        }
    }

    /// [`Features::probe`], done once per directory per process.
    pub fn cached(dir: &Path) -> Features {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Features>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(f) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(dir) {
            return f.clone();
        }
        let f = Features::probe(dir);
        cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf(), f.clone());
        f
    }
}

/// Parse `major.minor` out of a kernel release string.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn idmapped_mounts_expected(release: &str, fs: &str) -> bool {
    let Some(v) = kernel_version(release) else {
        return false;
    };
    let since = match fs {
        "extfs" | "xfs" | "btrfs" | "f2fs" | "vfat" => (5, 12),
        "overlayfs" => (5, 19),
        "tmpfs" => (6, 3),
        _ => return false,
    };
    v >= since
}

/// Docker's name for the filesystem of `path` (`<unknown>` when not recognised).
pub fn backing_filesystem(path: &Path) -> String {
    let Ok(st) = rustix::fs::statfs(path) else {
        return "<unknown>".into();
    };
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    fs_name(magic).into()
}

/// Docker's name for a `statfs` magic number.
pub fn fs_name(magic: i64) -> &'static str {
    match magic as u32 {
        0xEF53 => "extfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xF2F5_2010 => "f2fs",
        0x8584_58F6 => "ramfs",
        0x7371_7368 => "squashfs",
        0x6173_6673 => "aufs",
        0xF15F => "ecryptfs",
        0x4d44 => "vfat",
        0x6573_5546 => "fuse",
        _ => "<unknown>",
    }
}

/// Whether `FICLONE` works between two new files in `dir`.
pub fn reflink_supported(dir: &Path) -> bool {
    let probe = || -> std::io::Result<bool> {
        let tag = carrel_core::id::random_short(12);
        let a_path = dir.join(format!(".reflink-probe-{tag}-a"));
        let b_path = dir.join(format!(".reflink-probe-{tag}-b"));
        let result = (|| {
            let mut a = std::fs::File::create_new(&a_path)?;
            a.write_all(&[0x5a; 4096])?;
            a.sync_all()?;
            let b = std::fs::File::create_new(&b_path)?;
            carrel_core::fs::try_reflink(&a, &b)
        })();
        let _ = std::fs::remove_file(&a_path);
        let _ = std::fs::remove_file(&b_path);
        result
    };
    probe().unwrap_or(false)
}

/// Whether `mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)` works on a detached clone of `dir`.
pub fn recursive_readonly(dir: &Path) -> bool {
    let Ok(tree) = rustix::mount::open_tree(
        CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    ) else {
        return false;
    };
    sys::mount_setattr(
        tree.as_fd(),
        true,
        MountAttrChange {
            set: sys::MOUNT_ATTR_RDONLY,
            ..Default::default()
        },
    )
    .is_ok()
}

/// Whether the mount holding `dir` is XFS with project quotas enabled.
pub fn project_quota(dir: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(dir) else {
        return false;
    };
    let Ok(mounts) = mountinfo::read() else {
        return false;
    };
    mountinfo::mount_of(&mounts, &canon)
        .is_some_and(|m| m.fs_type == "xfs" && (m.has_option("prjquota") || m.has_option("pquota")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert_eq!(fs_name(0xEF53), "extfs");
        assert_eq!(fs_name(0x58465342), "xfs");
        assert_eq!(fs_name(1), "<unknown>");
        assert_eq!(kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert!(idmapped_mounts_expected("6.1.0", "extfs"));
        assert!(!idmapped_mounts_expected("5.10.0", "xfs"));
        assert!(!idmapped_mounts_expected("6.1.0", "tmpfs"));
        assert!(!idmapped_mounts_expected("6.18.0", "nfs"));
    }

    #[test]
    fn probes_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let f = Features::cached(dir.path());
        assert!(!f.kernel.is_empty());
        assert_ne!(f.backing_filesystem, "");
        // Nothing is left behind by the reflink probe.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(Features::cached(dir.path()), f);
    }
}
