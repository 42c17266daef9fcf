//! The [`Mounter`] trait and [`KernelMounter`], the executor that performs [`Mount`] values.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};

use crate::sys::{self, MountAttrChange};
use crate::{Mount, MountError, OverlayMount};

/// The most lower layers overlayfs stacks (`OVL_MAX_STACK`).
pub const OVERLAY_MAX_LOWERS: usize = 500;

/// Performs mounts. [`KernelMounter`] is the real one.
pub trait Mounter: Send + Sync {
    /// Mount `mount` on the existing directory (or file, for file binds) `target`.
    fn mount(&self, mount: &Mount, target: &Path) -> Result<(), MountError>;

    /// Unmount `target` (`MNT_DETACH` when `lazy`). A target that is not a mount point (`EINVAL`)
    /// is not an error, so recovery can call this on every candidate; a missing target is.
    fn unmount(&self, target: &Path, lazy: bool) -> Result<(), MountError>;

    /// Mount `mounts` in order on `target` (stacked). If one fails, those already mounted are
    /// unmounted again before the error is returned.
    fn mount_all(&self, mounts: &[Mount], target: &Path) -> Result<(), MountError> {
        for (i, m) in mounts.iter().enumerate() {
            if let Err(e) = self.mount(m, target) {
                for _ in 0..i {
                    if let Err(u) = self.unmount(target, true) {
                        tracing::warn!(target = %target.display(), error = %u, "rollback unmount failed");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The real executor: the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`,
/// `open_tree`, `mount_setattr`), with a classic `mount(2)` fallback for overlay on kernels
/// without `lowerdir+`.
#[derive(Debug, Clone, Default)]
pub struct KernelMounter {
    force_classic_overlay: bool,
}

impl KernelMounter {
    /// The executor, using `lowerdir+` when the kernel has it.
    pub fn new() -> KernelMounter {
        KernelMounter::default()
    }

    /// An executor that always mounts overlays with classic `mount(2)` option data, as on kernels
    /// older than 6.8. For tests of the fallback.
    pub fn classic_overlay() -> KernelMounter {
        KernelMounter {
            force_classic_overlay: true,
        }
    }

    /// Mount `mount` onto the object `target_fd` refers to (an `O_PATH` descriptor of a directory
    /// or file, e.g. resolved inside a container root). `target` is only used in messages.
    pub fn mount_on(
        &self,
        mount: &Mount,
        target_fd: BorrowedFd<'_>,
        target: &Path,
    ) -> Result<(), MountError> {
        match mount {
            Mount::Overlay(o) => {
                if self.force_classic_overlay || !lowerdir_plus_supported() {
                    if !self.force_classic_overlay {
                        tracing::info!(target = %target.display(), "overlay lowerdir+ unsupported; using classic mount(2)");
                    }
                    mount_overlay_classic(o, target_fd, target)
                } else {
                    mount_overlay(o, target_fd, target)
                }
            }
            Mount::Bind {
                source,
                readonly,
                recursive,
                propagation,
            } => mount_bind(
                source,
                *readonly,
                *recursive,
                *propagation,
                target_fd,
                target,
            ),
            Mount::Tmpfs { options } => mount_tmpfs(options, target_fd, target),
        }
    }
}

impl KernelMounter {
    /// Make `mount` as a detached mount (not attached anywhere; an `fsmount`/`open_tree`
    /// descriptor) and return its descriptor: a directory handle on the new mount's root that
    /// paths can be resolved under (e.g. with `openat2(RESOLVE_IN_ROOT)`), and that can be
    /// attached later with `move_mount`. The mount lives as long as the descriptor (and what is
    /// attached from it): nothing is ever left mounted, and nothing propagates to other mount
    /// namespaces. Bind mounts get their propagation only once attached, so it is ignored here.
    pub fn mount_detached(&self, mount: &Mount) -> Result<OwnedFd, MountError> {
        let target = Path::new("<detached>");
        match mount {
            Mount::Overlay(o) => overlay_fsmount(
                o,
                !self.force_classic_overlay && lowerdir_plus_supported(),
                target,
            ),
            Mount::Bind {
                source,
                readonly,
                recursive,
                ..
            } => bind_tree(source, *readonly, *recursive, target),
            Mount::Tmpfs { options } => tmpfs_fsmount(options, target),
        }
    }
}

impl Mounter for KernelMounter {
    fn mount(&self, mount: &Mount, target: &Path) -> Result<(), MountError> {
        let fd = rustix::fs::open(
            target,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| MountError::sys(target, "open target", e))?;
        self.mount_on(mount, fd.as_fd(), target)?;
        tracing::debug!(target = %target.display(), ?mount, "mounted");
        Ok(())
    }

    fn unmount(&self, target: &Path, lazy: bool) -> Result<(), MountError> {
        let mut flags = UnmountFlags::NOFOLLOW;
        if lazy {
            flags |= UnmountFlags::DETACH;
        }
        match rustix::mount::unmount(target, flags) {
            Ok(()) => {
                tracing::debug!(target = %target.display(), lazy, "unmounted");
                Ok(())
            }
            Err(rustix::io::Errno::INVAL) => {
                tracing::debug!(target = %target.display(), "not mounted");
                Ok(())
            }
            Err(e) => Err(MountError::sys(
                target,
                if lazy {
                    "umount2(MNT_DETACH)"
                } else {
                    "umount2"
                },
                e,
            )),
        }
    }
}

/// Whether overlayfs takes one `lowerdir+` per layer (Linux 6.8+). Probed once per process.
pub fn lowerdir_plus_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let Ok(fs) = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) else {
            return false;
        };
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", "/").is_ok()
    })
}

/// The messages the kernel queued on an fs-context descriptor (why `fsconfig` failed).
fn fs_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    if out.is_empty() {
        String::new()
    } else {
        format!(" [{}]", out.join("; "))
    }
}

fn fsconfig_str(fs: &OwnedFd, key: &str, value: &Path, target: &Path) -> Result<(), MountError> {
    rustix::mount::fsconfig_set_string(fs, key, value.as_os_str().as_bytes()).map_err(|e| {
        MountError::sys(
            target,
            format!("fsconfig({key}={}){}", value.display(), fs_log(fs)),
            e,
        )
    })
}

fn attach(mnt: &OwnedFd, target_fd: BorrowedFd<'_>, target: &Path) -> Result<(), MountError> {
    rustix::mount::move_mount(
        mnt,
        "",
        target_fd,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| MountError::sys(target, "move_mount", e))
}

fn check_overlay(o: &OverlayMount, target: &Path) -> Result<(), MountError> {
    let invalid = |reason: String| MountError::Invalid {
        target: target.to_path_buf(),
        reason,
    };
    if o.lower.is_empty() {
        return Err(invalid("overlay without lower layers".into()));
    }
    if o.lower.len() > OVERLAY_MAX_LOWERS {
        return Err(invalid(format!(
            "overlay with {} lower layers, more than the kernel's {OVERLAY_MAX_LOWERS}",
            o.lower.len()
        )));
    }
    if o.upper.is_none() && o.lower.len() < 2 {
        return Err(invalid(
            "a read-only overlay needs two lower layers (use a read-only bind for one)".into(),
        ));
    }
    if o.upper.is_some() != o.work.is_some() {
        return Err(invalid("upper and work directories go together".into()));
    }
    Ok(())
}

fn mount_overlay(
    o: &OverlayMount,
    target_fd: BorrowedFd<'_>,
    target: &Path,
) -> Result<(), MountError> {
    let mnt = overlay_fsmount(o, true, target)?;
    attach(&mnt, target_fd, target)
}

/// A detached overlay mount (`fsopen`/`fsconfig`/`fsmount`): one `lowerdir+` per layer, or one
/// classic `lowerdir` string (full paths, escaped) without `plus`.
fn overlay_fsmount(o: &OverlayMount, plus: bool, target: &Path) -> Result<OwnedFd, MountError> {
    check_overlay(o, target)?;
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| MountError::sys(target, "fsopen(overlay)", e))?;
    if plus {
        for l in &o.lower {
            fsconfig_str(&fs, "lowerdir+", l, target)?;
        }
    } else {
        let mut lower = Vec::new();
        for (i, l) in o.lower.iter().enumerate() {
            if i > 0 {
                lower.push(b':');
            }
            lower.extend(escape_classic(l));
        }
        let lower = PathBuf::from(std::ffi::OsString::from_vec(lower));
        fsconfig_str(&fs, "lowerdir", &lower, target)?;
    }
    if let (Some(upper), Some(work)) = (&o.upper, &o.work) {
        fsconfig_str(&fs, "upperdir", upper, target)?;
        fsconfig_str(&fs, "workdir", work, target)?;
    }
    for (k, v) in [("index", "off"), ("redirect_dir", "off")] {
        fsconfig_str(&fs, k, Path::new(v), target)?;
    }
    if o.volatile && o.upper.is_some() {
        rustix::mount::fsconfig_set_flag(&fs, "volatile").map_err(|e| {
            MountError::sys(target, format!("fsconfig(volatile){}", fs_log(&fs)), e)
        })?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| {
        MountError::sys(
            target,
            format!(
                "fsconfig(create) of overlay with {} lowers{}",
                o.lower.len(),
                fs_log(&fs)
            ),
            e,
        )
    })?;
    let attrs = if o.upper.is_none() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    } else {
        MountAttrFlags::empty()
    };
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| MountError::sys(target, format!("fsmount(overlay){}", fs_log(&fs)), e))
}

/// Escape a path for classic overlay option data (`\`, `,` and `:` are special).
fn escape_classic(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The `mount(2)` option data of a classic overlay mount. Uses the short lower paths when given.
pub fn classic_overlay_data(o: &OverlayMount) -> Vec<u8> {
    let lowers: Vec<&Path> = match &o.short {
        Some(s) if s.lower.len() == o.lower.len() => s.lower.iter().map(PathBuf::as_path).collect(),
        _ => o.lower.iter().map(PathBuf::as_path).collect(),
    };
    let mut data = b"lowerdir=".to_vec();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            data.push(b':');
        }
        data.extend(escape_classic(l));
    }
    if let (Some(upper), Some(work)) = (&o.upper, &o.work) {
        data.extend(b",upperdir=");
        data.extend(escape_classic(upper));
        data.extend(b",workdir=");
        data.extend(escape_classic(work));
    }
    data.extend(b",index=off,redirect_dir=off");
    if o.volatile && o.upper.is_some() {
        data.extend(b",volatile");
    }
    data
}

fn mount_overlay_classic(
    o: &OverlayMount,
    target_fd: BorrowedFd<'_>,
    target: &Path,
) -> Result<(), MountError> {
    check_overlay(o, target)?;
    let data = classic_overlay_data(o);
    let max = rustix::param::page_size() - 1;
    if data.len() > max {
        return Err(MountError::DataTooLong {
            target: target.to_path_buf(),
            len: data.len(),
            max,
            layers: o.lower.len(),
        });
    }
    let data = CString::new(data).map_err(|_| MountError::Invalid {
        target: target.to_path_buf(),
        reason: "NUL byte in overlay paths".into(),
    })?;
    let flags = if o.upper.is_none() {
        rustix::mount::MountFlags::RDONLY
    } else {
        rustix::mount::MountFlags::empty()
    };
    let fd_path = carrel_core::fs::proc_fd_path(target_fd);
    let do_mount = || {
        rustix::mount::mount("overlay", &fd_path, "overlay", flags, data.as_c_str())
            .map_err(|e| MountError::sys(target, "mount(overlay, classic)", e))
    };
    match &o.short {
        Some(short) if short.lower.len() == o.lower.len() => {
            // Relative lower paths resolve from the working directory; change it only in a
            // helper thread that has unshared its fs context, so no other thread is affected.
            let dir = short.dir.clone();
            std::thread::scope(|s| {
                s.spawn(|| {
                    // SAFETY: CLONE_FS only detaches this thread's cwd/root/umask from the other
                    // threads; it does not touch file descriptor tables or memory.
                    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                        .map_err(|e| MountError::sys(target, "unshare(CLONE_FS)", e))?;
                    rustix::process::chdir(&dir).map_err(|e| {
                        MountError::sys(target, format!("chdir({})", dir.display()), e)
                    })?;
                    do_mount()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(MountError::Invalid {
                        target: target.to_path_buf(),
                        reason: "mount helper thread panicked".into(),
                    })
                })
            })
        }
        _ => do_mount(),
    }
}

fn mount_bind(
    source: &Path,
    readonly: bool,
    recursive: bool,
    propagation: Option<crate::Propagation>,
    target_fd: BorrowedFd<'_>,
    target: &Path,
) -> Result<(), MountError> {
    let tree = bind_tree(source, readonly, recursive, target)?;
    attach(&tree, target_fd, target)?;
    if let Some(p) = propagation {
        sys::mount_setattr(
            tree.as_fd(),
            recursive,
            MountAttrChange {
                propagation: Some(p),
                ..Default::default()
            },
        )
        .map_err(|e| MountError::sys(target, format!("mount_setattr(propagation {p:?})"), e))?;
    }
    Ok(())
}

/// A detached clone of `source` (with its submounts when `recursive`), read-only (all of it)
/// when asked.
fn bind_tree(
    source: &Path,
    readonly: bool,
    recursive: bool,
    target: &Path,
) -> Result<OwnedFd, MountError> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(CWD, source, flags)
        .map_err(|e| MountError::sys(target, format!("open_tree({})", source.display()), e))?;
    if readonly {
        sys::mount_setattr(
            tree.as_fd(),
            recursive,
            MountAttrChange {
                set: sys::MOUNT_ATTR_RDONLY,
                ..Default::default()
            },
        )
        .map_err(|e| MountError::sys(target, "mount_setattr(rdonly)", e))?;
    }
    Ok(tree)
}

/// Split tmpfs options into mount attributes and filesystem parameters.
fn split_tmpfs_options(options: &[String]) -> (MountAttrFlags, Vec<(String, Option<String>)>) {
    let mut attrs = MountAttrFlags::empty();
    let mut params = Vec::new();
    for opt in options {
        let flag = match opt.as_str() {
            "ro" => Some(MountAttrFlags::MOUNT_ATTR_RDONLY),
            "noexec" => Some(MountAttrFlags::MOUNT_ATTR_NOEXEC),
            "nosuid" => Some(MountAttrFlags::MOUNT_ATTR_NOSUID),
            "nodev" => Some(MountAttrFlags::MOUNT_ATTR_NODEV),
            "noatime" => Some(MountAttrFlags::MOUNT_ATTR_NOATIME),
            "strictatime" => Some(MountAttrFlags::MOUNT_ATTR_STRICTATIME),
            "nodiratime" => Some(MountAttrFlags::MOUNT_ATTR_NODIRATIME),
            "nosymfollow" => Some(MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW),
            "rw" | "exec" | "suid" | "dev" | "relatime" | "atime" | "diratime" => {
                Some(MountAttrFlags::empty())
            }
            _ => None,
        };
        match flag {
            Some(f) => attrs |= f,
            None => match opt.split_once('=') {
                Some((k, v)) => params.push((k.to_string(), Some(v.to_string()))),
                None => params.push((opt.clone(), None)),
            },
        }
    }
    (attrs, params)
}

fn mount_tmpfs(
    options: &[String],
    target_fd: BorrowedFd<'_>,
    target: &Path,
) -> Result<(), MountError> {
    let mnt = tmpfs_fsmount(options, target)?;
    attach(&mnt, target_fd, target)
}

/// A detached tmpfs with `options`.
fn tmpfs_fsmount(options: &[String], target: &Path) -> Result<OwnedFd, MountError> {
    let (attrs, params) = split_tmpfs_options(options);
    let fs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| MountError::sys(target, "fsopen(tmpfs)", e))?;
    for (k, v) in &params {
        match v {
            Some(v) => fsconfig_str(&fs, k, Path::new(v), target)?,
            None => rustix::mount::fsconfig_set_flag(&fs, k.as_str())
                .map_err(|e| MountError::sys(target, format!("fsconfig({k}){}", fs_log(&fs)), e))?,
        }
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| {
        MountError::sys(
            target,
            format!("fsconfig(create) of tmpfs{}", fs_log(&fs)),
            e,
        )
    })?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| MountError::sys(target, "fsmount(tmpfs)", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShortLowers;

    #[test]
    fn classic_data_escapes_and_prefers_short_paths() {
        let o = OverlayMount {
            volatile: false,
            lower: vec!["/a:b".into(), "/c,d".into()],
            upper: Some("/u".into()),
            work: Some("/w".into()),
            short: None,
        };
        assert_eq!(
            String::from_utf8(classic_overlay_data(&o)).unwrap(),
            "lowerdir=/a\\:b:/c\\,d,upperdir=/u,workdir=/w,index=off,redirect_dir=off"
        );
        let volatile = OverlayMount {
            volatile: true,
            ..o.clone()
        };
        assert!(
            String::from_utf8(classic_overlay_data(&volatile))
                .unwrap()
                .ends_with(",redirect_dir=off,volatile")
        );
        assert_eq!(
            volatile.volatile_marker().unwrap(),
            Path::new("/w/work/incompat/volatile")
        );
        let o = OverlayMount {
            volatile: false,
            short: Some(ShortLowers {
                dir: "/home".into(),
                lower: vec!["l/A".into(), "l/B".into()],
            }),
            ..o
        };
        assert!(
            String::from_utf8(classic_overlay_data(&o))
                .unwrap()
                .starts_with("lowerdir=l/A:l/B,")
        );
    }

    #[test]
    fn tmpfs_options_are_split() {
        let (attrs, params) = split_tmpfs_options(&[
            "size=64m".into(),
            "noexec".into(),
            "ro".into(),
            "mode=1777".into(),
            "rw".into(),
        ]);
        assert_eq!(
            attrs,
            MountAttrFlags::MOUNT_ATTR_NOEXEC | MountAttrFlags::MOUNT_ATTR_RDONLY
        );
        assert_eq!(
            params,
            vec![
                ("size".into(), Some("64m".into())),
                ("mode".into(), Some("1777".into()))
            ]
        );
    }

    #[test]
    fn invalid_overlays_are_refused_before_any_syscall() {
        let t = Path::new("/nonexistent");
        let one = OverlayMount {
            volatile: false,
            lower: vec!["/a".into()],
            upper: None,
            work: None,
            short: None,
        };
        assert!(check_overlay(&one, t).is_err());
        let many = OverlayMount {
            volatile: false,
            lower: vec!["/a".into(); 501],
            upper: Some("/u".into()),
            work: Some("/w".into()),
            short: None,
        };
        let e = check_overlay(&many, t).unwrap_err().to_string();
        assert!(e.contains("501") && e.contains("/nonexistent"), "{e}");
    }
}
