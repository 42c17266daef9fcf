//! The monitor's side of user mounts: set up against the container's mounted root, right before
//! the OCI runtime runs.
//!
//! **Sources are pinned.** Every bind source and volume directory is opened once (`O_PATH`; a
//! bind source's symlinks are followed as Docker follows them, a volume subpath is resolved
//! beneath the volume by the kernel) and the mount is cloned from that descriptor
//! (`open_tree(fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE)`), made read-only — recursively with
//! `mount_setattr(AT_RECURSIVE)`, so submounts of a read-only bind are read-only too — and
//! attached at a staging point `<container dir>/mounts/<n>`, a directory only root can reach. The
//! runtime is given that staging path, so whatever happens to the named path afterwards (a
//! symlink swapped, a directory renamed) the container gets exactly the object that was opened.
//! This also gives recursive read-only with runtimes that have no `rro` option (crun 1.8): the
//! runtime's `rbind` copies the already read-only submounts.
//!
//! **Destinations are resolved inside the root.** Each destination is resolved (and its
//! mountpoint created: a directory, or an empty file for a file source) inside the mounted root
//! with `openat2(RESOLVE_IN_ROOT)`, so a symlink in the image (`/conf -> /real/conf`,
//! `/sockets -> /root`) leads inside the container's tree, never onto the host; the runtime gets
//! the resolved path, which has no symlinks left. A destination that resolves into `/proc` is
//! refused. Destinations below another user mount (`--tmpfs /run -v x:/run/y`) or below the
//! runtime's own `/proc`, `/dev` and `/sys` lie inside a filesystem that only exists once the
//! runtime mounted it: they are given as written under their parent's resolved path, and the
//! runtime resolves them (both runc and crun resolve mount destinations inside the root).
//!
//! Staged mounts are released when the container ends ([`StagedMounts::release`]), before the
//! root is unmounted; recovery of a dead monitor unmounts anything left under the container
//! directory.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use carrel_core::fs::{Root, proc_fd_path};
use carrel_mount::sys::{self, MountAttrChange};
use carrel_mountspec::{BindRecursive, check_proc_destination};
use oci_spec::runtime::{Mount, MountBuilder};
use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags};
use serde::{Deserialize, Serialize};

use crate::containers::runtime::RunError;
use crate::containers::spec::RunPlan;

/// The staging directory under a container's directory.
pub const STAGING_DIR: &str = "mounts";

/// Destinations of the runtime's own filesystems: what is below them exists only once the
/// runtime mounted them.
const RUNTIME_DIRS: [&str; 3] = ["/proc", "/dev", "/sys"];

/// One user mount of a run plan, as the store planned it at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMount {
    /// Where it goes in the container (absolute and clean, as the user asked; resolved inside
    /// the root by the monitor).
    pub destination: String,
    /// What is mounted.
    pub source: PlannedSource,
    /// Read-only.
    pub readonly: bool,
    /// Submounts: bound with the source (`enabled`, `writable`, `readonly`) or not (`disabled`);
    /// read-only reaches them unless `writable`.
    #[serde(default)]
    pub recursive: BindRecursive,
    /// Propagation of the container's mount (`rprivate`, `rslave`, …; empty for tmpfs).
    #[serde(default)]
    pub propagation: String,
}

/// What a [`PlannedMount`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum PlannedSource {
    /// A host path (a bind's source). Symlinks in it are followed, as Docker follows them.
    Host {
        /// The path.
        path: PathBuf,
    },
    /// A volume's content directory, or a path beneath it.
    Volume {
        /// The volume's name.
        name: String,
        /// Its content directory as the volume service gave it (mounted if driver-backed).
        path: PathBuf,
        /// `volume-subpath`: resolved beneath the volume (see [`open_subpath`]).
        subpath: Option<String>,
    },
    /// A fresh tmpfs with these OCI options (Docker's defaults merged with the user's).
    Tmpfs {
        /// The options.
        options: Vec<String>,
    },
}

/// Host-side staging mounts of a running container (see the module docs).
#[derive(Debug, Default)]
pub struct StagedMounts {
    dir: Option<PathBuf>,
    points: Vec<PathBuf>,
}

impl StagedMounts {
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Detach every staging mount (the container's own copies live in its mount namespace and
    /// go with it) and remove the staging directory. Idempotent.
    pub fn release(&mut self) {
        for p in self.points.drain(..).rev() {
            if let Err(e) = rustix::mount::unmount(
                &p,
                rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
            ) && e != rustix::io::Errno::INVAL
                && e != rustix::io::Errno::NOENT
            {
                tracing::warn!(point = %p.display(), error = %e, "could not detach a staged mount");
            }
        }
        if let Some(dir) = self.dir.take() {
            clear_staging(&dir);
        }
    }
}

/// Unmount whatever is left below a staging directory (a crashed monitor's) and remove it.
fn clear_staging(dir: &Path) {
    if let Ok(left) = carrel_mount::mountinfo::mounts_under(dir) {
        for m in left {
            let _ = rustix::mount::unmount(
                &m.mount_point,
                rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
            );
        }
    }
    if let Err(e) = carrel_core::fs::remove_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove the staging directory");
    }
}

/// Why a volume subpath cannot be used, in Docker's words.
#[derive(Debug, thiserror::Error)]
pub enum SubpathError {
    /// It leaves the volume (`..`, an absolute symlink, a symlink out).
    #[error("path concatenation escapes the base directory, base: {base}, subpath: {subpath}")]
    Escapes {
        /// The volume's directory.
        base: String,
        /// The subpath as given.
        subpath: String,
    },
    /// It cannot be opened (missing, not permitted, …).
    #[error("cannot access path {path}: {reason}")]
    NotAccessible {
        /// The volume's directory joined with the subpath (for the message only).
        path: String,
        /// The OS error, as Go prints it.
        reason: String,
    },
}

/// Open `subpath` beneath the volume directory `base` as an `O_PATH` handle: resolved by the
/// kernel with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, so `..`, absolute symlinks and
/// symlinks that lead out of the volume are refused (Docker's "escapes the base directory"),
/// while relative symlinks that stay inside it are followed (moby resolves them too).
pub fn open_subpath(base: &Path, subpath: &str) -> Result<OwnedFd, SubpathError> {
    let shown = || format!("{}/{}", base.display(), subpath);
    let not_accessible = |e: io::Error| SubpathError::NotAccessible {
        path: shown(),
        reason: super::io_text(&e),
    };
    let dir = rfs::open(
        base,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| not_accessible(e.into()))?;
    let mut attempts = 0;
    loop {
        match rfs::openat2(
            &dir,
            subpath,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::AGAIN) if attempts < 128 => attempts += 1,
            Err(rustix::io::Errno::XDEV) => {
                return Err(SubpathError::Escapes {
                    base: base.display().to_string(),
                    subpath: subpath.to_string(),
                });
            }
            Err(e) => return Err(not_accessible(e.into())),
        }
    }
}

fn io_err(context: &'static str, path: impl Into<PathBuf>, e: impl Into<io::Error>) -> RunError {
    RunError::io(context, path, e.into())
}

/// Open the source of a bind or volume mount (pinned by descriptor) and say whether it is a
/// directory.
pub(crate) fn open_source(source: &PlannedSource) -> Result<(OwnedFd, bool), RunError> {
    let fd = match source {
        PlannedSource::Host { path } => {
            rfs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                RunError::InvalidArgument(format!(
                    "error mounting \"{}\": stat {}: {}",
                    path.display(),
                    path.display(),
                    super::io_text(&e.into())
                ))
            })?
        }
        PlannedSource::Volume { path, subpath, .. } => match subpath {
            Some(sub) => {
                open_subpath(path, sub).map_err(|e| RunError::InvalidArgument(e.to_string()))?
            }
            None => rfs::open(
                path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("opening volume", path, e))?,
        },
        PlannedSource::Tmpfs { .. } => {
            return Err(RunError::Internal("a tmpfs has no source to open".into()));
        }
    };
    let st = rfs::fstat(&fd).map_err(|e| io_err("stat", "<mount source>", e))?;
    Ok((
        fd,
        FileType::from_raw_mode(st.st_mode) == FileType::Directory,
    ))
}

/// Clone the mount at `source` (with its submounts unless `recursive` is `disabled`) as a
/// detached tree, read-only when asked (recursively unless `writable`).
pub(crate) fn clone_source(
    source: BorrowedFd<'_>,
    readonly: bool,
    recursive: BindRecursive,
) -> Result<OwnedFd, RunError> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    let with_submounts = recursive != BindRecursive::Disabled;
    if with_submounts {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(source, "", flags)
        .map_err(|e| io_err("open_tree", "<mount source>", e))?;
    if readonly {
        let deep = with_submounts && recursive != BindRecursive::Writable;
        sys::mount_setattr(
            tree.as_fd(),
            deep,
            MountAttrChange {
                set: sys::MOUNT_ATTR_RDONLY,
                ..Default::default()
            },
        )
        .map_err(|e| {
            if deep && recursive == BindRecursive::Readonly {
                RunError::InvalidArgument(format!(
                    "rro is not supported: failed to set recursive read-only mount attributes: {e}"
                ))
            } else {
                io_err("mount_setattr(rdonly)", "<mount source>", e)
            }
        })?;
    }
    Ok(tree)
}

/// Attach a detached tree onto the object `target` (an `O_PATH` descriptor).
pub(crate) fn attach(tree: &OwnedFd, target: BorrowedFd<'_>, shown: &Path) -> Result<(), RunError> {
    rustix::mount::move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| io_err("move_mount onto", shown, e))
}

/// Where `fd` (inside the tree whose root is `root`) is, as an absolute path in that tree.
pub(crate) fn path_in_root(root: &Root, fd: BorrowedFd<'_>) -> Result<String, RunError> {
    let real = std::fs::read_link(proc_fd_path(fd))
        .map_err(|e| io_err("resolving", proc_fd_path(fd), e))?;
    let base = std::fs::read_link(proc_fd_path(root.fd()))
        .map_err(|e| io_err("resolving", root.path(), e))?;
    if real == base {
        return Ok("/".into());
    }
    match real.strip_prefix(&base) {
        Ok(rel) => Ok(format!("/{}", rel.display())),
        Err(_) => Err(RunError::InvalidArgument(format!(
            "mount destination {} resolved outside the container root",
            real.display()
        ))),
    }
}

/// Is `path` strictly below `parent` (both absolute and clean)?
fn is_below(path: &str, parent: &str) -> bool {
    parent != "/"
        && path.len() > parent.len()
        && path.starts_with(parent)
        && path.as_bytes()[parent.len()] == b'/'
}

/// What [`resolve_destination`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// The parents and the mountpoint itself (a directory, or an empty file for a file source).
    All,
    /// Only the parents: a missing mountpoint is left to the runtime (a tmpfs: runc gives a
    /// tmpfs the mode of a mountpoint that exists, whatever `mode=` says).
    Parents,
    /// Nothing: everything must exist.
    Nothing,
}

/// Resolve the destination `dest` inside `root`, creating what `create` says, and return the
/// resolved absolute path in the root with an `O_PATH` handle on the mountpoint (`None` when it
/// was left to the runtime). Refuses a destination that resolves into `/proc`.
pub(crate) fn resolve_destination(
    root: &Root,
    dest: &str,
    is_dir: bool,
    create: Create,
) -> Result<(String, Option<OwnedFd>), RunError> {
    let rel = Path::new(dest.trim_start_matches('/'));
    let not_dir = |what: &str| {
        RunError::InvalidArgument(format!(
            "cannot mount on {dest}: {what} is not a directory in the container"
        ))
    };
    let proc_check = |p: &str| {
        check_proc_destination(p).map_err(|e| RunError::InvalidArgument(e.message().to_string()))
    };
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(RunError::InvalidArgument(format!(
            "invalid mount destination {dest}"
        )));
    };
    let parent_fd = if create != Create::Nothing {
        root.mkdir_all(parent, 0o755)
    } else {
        root.open_dir(parent)
    }
    .map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => not_dir("a parent"),
        _ => io_err("resolving mount destination", dest, e),
    })?;
    let parent_path = path_in_root(root, parent_fd.as_fd())?;
    let candidate = if parent_path == "/" {
        format!("/{}", name.to_string_lossy())
    } else {
        format!("{parent_path}/{}", name.to_string_lossy())
    };
    proc_check(&candidate)?;
    let fd = if is_dir && create == Create::All {
        root.mkdir_all(Path::new(&candidate), 0o755)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTDIR) => not_dir("it"),
                _ => io_err("creating mountpoint", &candidate, e),
            })?
    } else {
        match root.open_at(Path::new(&candidate), OFlags::PATH, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create == Create::Parents => {
                return Ok((candidate, None));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create == Create::All => {
                // A file mountpoint (through a dangling in-root symlink too).
                root.open_at(
                    Path::new(&candidate),
                    OFlags::CREATE | OFlags::RDONLY,
                    Mode::from_raw_mode(0o644),
                )
                .map_err(|e| io_err("creating mountpoint", &candidate, e))?
            }
            Err(e) => return Err(io_err("resolving mount destination", &candidate, e)),
        }
    };
    let resolved = path_in_root(root, fd.as_fd())?;
    proc_check(&resolved)?;
    Ok((resolved, Some(fd)))
}

fn oci_mount(dest: &str, typ: &str, source: &Path, options: Vec<String>) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options)
        .build()
        .expect("all mount fields are set")
}

/// Set up `plan.user_mounts` against the mounted root (see the module docs): pin and stage the
/// sources under `<dir>/mounts/`, resolve the destinations inside the root, and add the
/// resulting OCI mounts to `plan.mounts`. Call after the root is mounted and
/// [`RunPlan::resolve_in_root`]; release the returned mounts when the container ends. On error
/// nothing stays staged.
pub fn prepare_user_mounts(plan: &mut RunPlan, dir: &Path) -> Result<StagedMounts, RunError> {
    if plan.user_mounts.is_empty() {
        return Ok(StagedMounts::default());
    }
    let staging = dir.join(STAGING_DIR);
    clear_staging(&staging);
    carrel_core::fs::create_dir_mode(&staging, 0o700)
        .map_err(|e| io_err("creating", &staging, e))?;
    let mut staged = StagedMounts {
        dir: Some(staging.clone()),
        points: Vec::new(),
    };
    match stage_all(plan, &staging, &mut staged) {
        Ok(mounts) => {
            plan.mounts.extend(mounts);
            Ok(staged)
        }
        Err(e) => {
            staged.release();
            Err(e)
        }
    }
}

fn stage_all(
    plan: &RunPlan,
    staging: &Path,
    staged: &mut StagedMounts,
) -> Result<Vec<Mount>, RunError> {
    let root = Root::open(&plan.rootfs).map_err(|e| io_err("opening", &plan.rootfs, e))?;
    // (destination as asked, as resolved) of the mounts done so far.
    let mut done: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for (i, m) in plan.user_mounts.iter().enumerate() {
        let source = match &m.source {
            PlannedSource::Tmpfs { .. } => None,
            other => Some(open_source(other)?),
        };
        let is_dir = source.as_ref().is_none_or(|(_, d)| *d);
        let parent = done
            .iter()
            .filter(|(asked, _)| is_below(&m.destination, asked))
            .max_by_key(|(asked, _)| asked.len());
        let dest = if let Some((asked, resolved)) = parent {
            format!("{resolved}{}", &m.destination[asked.len()..])
        } else if RUNTIME_DIRS.iter().any(|d| is_below(&m.destination, d)) {
            m.destination.clone()
        } else {
            let create = if source.is_none() {
                Create::Parents
            } else {
                Create::All
            };
            resolve_destination(&root, &m.destination, is_dir, create)?.0
        };
        check_proc_destination(&dest)
            .map_err(|e| RunError::InvalidArgument(e.message().to_string()))?;
        done.push((m.destination.clone(), dest.clone()));
        match (&m.source, source) {
            (PlannedSource::Tmpfs { options }, _) => {
                out.push(oci_mount(
                    &dest,
                    "tmpfs",
                    Path::new("tmpfs"),
                    options.clone(),
                ));
            }
            (_, Some((fd, is_dir))) => {
                let point = staging.join(i.to_string());
                if is_dir {
                    rfs::mkdir(&point, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_err("creating", &point, e))?;
                } else {
                    rfs::open(
                        &point,
                        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                    .map_err(|e| io_err("creating", &point, e))?;
                }
                let target = rfs::open(
                    &point,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_err("opening", &point, e))?;
                let tree = clone_source(fd.as_fd(), m.readonly, m.recursive)?;
                attach(&tree, target.as_fd(), &point)?;
                staged.points.push(point.clone());
                let mut options = vec![if m.recursive == BindRecursive::Disabled {
                    "bind".to_string()
                } else {
                    "rbind".to_string()
                }];
                if m.readonly {
                    options.push("ro".into());
                }
                if !m.propagation.is_empty() {
                    options.push(m.propagation.clone());
                }
                out.push(oci_mount(&dest, "bind", &point, options));
            }
            (_, None) => unreachable!("sources other than tmpfs are opened above"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below() {
        assert!(is_below("/run/x", "/run"));
        assert!(!is_below("/run", "/run"));
        assert!(!is_below("/running", "/run"));
        assert!(!is_below("/x", "/"));
        assert!(is_below("/dev/shm", "/dev"));
    }

    #[test]
    fn subpaths_stay_beneath_the_volume() {
        let v = tempfile::tempdir().unwrap();
        let base = v.path();
        std::fs::create_dir(base.join("sub")).unwrap();
        std::fs::write(base.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/", base.join("l_root")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", base.join("l_abs")).unwrap();
        std::os::unix::fs::symlink("../../", base.join("l_up")).unwrap();
        std::os::unix::fs::symlink("sub", base.join("l_good")).unwrap();
        for ok in ["sub", "sub/../sub", "l_good", "sub/f"] {
            assert!(open_subpath(base, ok).is_ok(), "{ok}");
        }
        for bad in ["l_root", "l_abs", "l_up", "../x", "/abs"] {
            let e = open_subpath(base, bad).unwrap_err();
            assert!(matches!(e, SubpathError::Escapes { .. }), "{bad}: {e}");
            assert!(
                e.to_string()
                    .starts_with("path concatenation escapes the base directory")
            );
        }
        let e = open_subpath(base, "nope").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot access path {}/nope: no such file or directory",
                base.display()
            )
        );
    }

    #[test]
    fn destinations_are_resolved_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let rootdir = t.path().join("root");
        std::fs::create_dir_all(rootdir.join("real/conf")).unwrap();
        std::os::unix::fs::symlink("/real/conf", rootdir.join("conf")).unwrap();
        std::os::unix::fs::symlink("/root", rootdir.join("sockets")).unwrap();
        std::os::unix::fs::symlink("/proc", rootdir.join("myproc")).unwrap();
        std::os::unix::fs::symlink("../../../..", rootdir.join("up")).unwrap();
        let root = Root::open(&rootdir).unwrap();
        let (p, _) = resolve_destination(&root, "/conf/stack", true, Create::All).unwrap();
        assert_eq!(p, "/real/conf/stack");
        assert!(rootdir.join("real/conf/stack").is_dir());
        let (p, _) =
            resolve_destination(&root, "/sockets/docker.sock", false, Create::All).unwrap();
        assert_eq!(p, "/root/docker.sock");
        assert!(rootdir.join("root/docker.sock").is_file());
        let (p, _) = resolve_destination(&root, "/up/etc/x", true, Create::All).unwrap();
        assert_eq!(p, "/etc/x");
        assert!(rootdir.join("etc/x").is_dir());
        let e = resolve_destination(&root, "/myproc/sys", true, Create::All).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"/proc/sys\" cannot be mounted because it is inside /proc"
        );
        assert!(!rootdir.join("proc/sys").exists());
        // A tmpfs mountpoint that is missing is left to the runtime, its parents are made.
        let (p, fd) = resolve_destination(&root, "/conf/new/t", true, Create::Parents).unwrap();
        assert_eq!(p, "/real/conf/new/t");
        assert!(fd.is_none());
        assert!(
            rootdir.join("real/conf/new").is_dir() && !rootdir.join("real/conf/new/t").exists()
        );
    }
}
