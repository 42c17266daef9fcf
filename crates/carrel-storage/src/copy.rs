//! The `copy` driver (Docker's `vfs` equivalent): every snapshot is a full directory tree.
//!
//! ```text
//! <root>/copy/            0710
//!   <id>/                 0710
//!     dir/                the snapshot's full tree
//!     dir.tmp/            a copy in progress (renamed to dir/ when complete)
//! ```
//!
//! `prepare` copies the parent's tree with [`copy_tree`], which clones file data with `FICLONE`
//! where the filesystem has reflinks (XFS with `reflink=1`, btrfs) and otherwise copies it in the
//! kernel with `copy_file_range`, keeping holes. A view is a read-only bind of its parent's tree
//! (no copy); committed snapshots and views mount read-only, active ones read-write.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use carrel_meta::snapshots::{Kind, SnapshotRow};
use carrel_meta::{Meta, Transaction};
use carrel_mount::Mount;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, SeekFrom, Timespec, Timestamps};

use crate::overlay::{create_home, mkdir_mode};
use crate::snapshot::{
    ApplyTarget, CleanupReport, DriverPaths, Info, Labels, SnapshotFiles, Snapshotter, Store,
    Usage, WhiteoutFormat, kind_name, measure, open_dir_nofollow,
};
use crate::{Result, StorageError};

/// The copy storage driver.
#[derive(Debug)]
pub struct CopySnapshotter {
    store: Store,
    reflinks: bool,
}

impl CopySnapshotter {
    /// Open (creating if needed) the driver's home `<root>/copy` and probe once whether its
    /// filesystem has reflinks.
    pub fn new(meta: Arc<Meta>, root: &Path) -> Result<CopySnapshotter> {
        let home = root.join("copy");
        create_home(&home)?;
        let reflinks = carrel_mount::features::reflink_supported(&home);
        tracing::debug!(home = %home.display(), reflinks, "copy driver ready");
        Ok(CopySnapshotter {
            store: Store {
                meta,
                home,
                driver: "copy",
            },
            reflinks,
        })
    }

    /// Whether file data is cloned with reflinks (probed once when the driver was opened);
    /// otherwise it is copied.
    pub fn reflinks(&self) -> bool {
        self.reflinks
    }

    fn tree(&self, row: &SnapshotRow) -> PathBuf {
        self.store.dir(&row.id).join("dir")
    }

    fn mounts_for(&self, row: &SnapshotRow, chain: &[SnapshotRow]) -> Result<Vec<Mount>> {
        Ok(match row.kind {
            Kind::Active => vec![Mount::bind(self.tree(row), false)],
            Kind::Committed => vec![Mount::bind(self.tree(row), true)],
            Kind::View => {
                let parent = chain.first().ok_or_else(|| StorageError::WrongKind {
                    key: row.key.clone(),
                    actual: "view without parent",
                    expected: "view",
                })?;
                vec![Mount::bind(self.tree(parent), true)]
            }
        })
    }

    fn create_layout(&self, row: &SnapshotRow, chain: &[SnapshotRow]) -> Result<()> {
        let dir = self.store.dir(&row.id);
        mkdir_mode(&dir, 0o710, false)?;
        if row.kind == Kind::View {
            return Ok(());
        }
        let tree = dir.join("dir");
        match chain.first() {
            None => mkdir_mode(&tree, 0o755, false).map(drop),
            Some(parent) => {
                let tmp = dir.join("dir.tmp");
                let src = self.tree(parent);
                let stats = copy_tree(&src, &tmp)
                    .map_err(|e| StorageError::io("copying snapshot tree from", &src, e))?;
                std::fs::rename(&tmp, &tree).map_err(|e| StorageError::io("renaming", &tmp, e))?;
                tracing::debug!(key = %row.key, files = stats.files, reflinked = stats.reflinked, "copied parent tree");
                Ok(())
            }
        }
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        labels: Labels,
    ) -> Result<Vec<Mount>> {
        let (row, chain) = self
            .store
            .insert_new(key, parent, kind, labels, None, false)?;
        if let Err(e) = self.create_layout(&row, &chain) {
            self.store.rollback(&row, None);
            return Err(e);
        }
        self.mounts_for(&row, &chain)
    }
}

impl Snapshotter for CopySnapshotter {
    fn driver_name(&self) -> &'static str {
        "copy"
    }

    fn home(&self) -> PathBuf {
        self.store.home.clone()
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active, labels)
    }

    fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, Some(parent), Kind::View, labels)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let row = self.store.get(key)?;
        let chain = match row.kind {
            Kind::View => self.store.chain(row.parent.as_deref())?,
            _ => Vec::new(),
        };
        self.mounts_for(&row, &chain)
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.store.commit(name, key, labels, None, |row| {
            let tree = self.tree(row);
            measure(&tree).map_err(|e| StorageError::io("measuring", tree, e))
        })
    }

    fn commit_measured(&self, name: &str, key: &str, labels: Labels, usage: Usage) -> Result<()> {
        self.store.commit(name, key, labels, None, |_| Ok(usage))
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.store.remove_now(key, |tx| self.remove_record(tx, key))
    }

    fn remove_record(&self, tx: &Transaction, key: &str) -> Result<SnapshotFiles> {
        self.store.remove_row_in(tx, key, |_| Vec::new())
    }

    fn stat(&self, key: &str) -> Result<Info> {
        self.store.stat(key)
    }

    fn update_labels(&self, key: &str, labels: Labels) -> Result<Info> {
        self.store.update_labels(key, labels)
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        self.store.usage(key, |row| match row.kind {
            Kind::View => self.store.dir(&row.id),
            _ => self.tree(row),
        })
    }

    fn walk(&self) -> Result<Vec<Info>> {
        self.store.walk()
    }

    fn apply_target(&self, key: &str) -> Result<ApplyTarget> {
        let row = self.store.get(key)?;
        if row.kind != Kind::Active {
            return Err(StorageError::WrongKind {
                key: key.to_string(),
                actual: kind_name(row.kind),
                expected: "active",
            });
        }
        Ok(ApplyTarget {
            dir: self.tree(&row),
            format: WhiteoutFormat::Naive,
        })
    }

    fn upper_dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.tree(&self.store.get(key)?))
    }

    fn paths(&self, key: &str) -> Result<DriverPaths> {
        let row = self.store.get(key)?;
        let tree = match row.kind {
            Kind::View => {
                let chain = self.store.chain(row.parent.as_deref())?;
                chain
                    .first()
                    .map(|p| self.tree(p))
                    .unwrap_or_else(|| self.tree(&row))
            }
            _ => self.tree(&row),
        };
        Ok(DriverPaths {
            lower: Vec::new(),
            upper: tree.clone(),
            merged: tree,
            work: PathBuf::new(),
        })
    }

    fn cleanup(&self, dry_run: bool) -> Result<CleanupReport> {
        // A view has no tree of its own; its directory is the marker.
        self.store.cleanup(dry_run, |r| match r.kind {
            Kind::View => self.store.dir(&r.id),
            _ => self.tree(r),
        })
    }
}

/// What [`copy_tree`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files copied (hardlinks counted once).
    pub files: u64,
    /// Of those, how many were cloned with a reflink.
    pub reflinked: u64,
}

/// Copy the tree at `src` to the new directory `dst`, preserving ownership, modes (including
/// setuid/setgid/sticky), extended attributes (`trusted.*`, `security.capability`, ACLs),
/// hardlinks within the tree, symlinks (never followed), device nodes, fifos and sockets (all
/// recreated), sparse files and timestamps (directories' after their children). File data is
/// cloned with `FICLONE` where possible, else copied with `copy_file_range`.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let src_fd = open_dir_nofollow(rustix::fs::CWD, src)?;
    let st = rustix::fs::fstat(&src_fd)?;
    rustix::fs::mkdir(dst, Mode::from_raw_mode(0o700))?;
    let dst_fd = open_dir_nofollow(rustix::fs::CWD, dst)?;
    let mut c = Copier {
        dst_root: dst_fd.try_clone()?,
        links: HashMap::new(),
        stats: CopyStats::default(),
    };
    c.copy_dir(&src_fd, &dst_fd, Path::new(""))?;
    finish_fd(&src_fd, &dst_fd, &st)?;
    Ok(c.stats)
}

/// Copy the entries of the open directory `src` into the existing (empty) directory `dst` as
/// [`copy_tree`] copies a tree, then give `dst` the owner, mode, extended attributes and times of
/// `src`. Both are descriptors (opened `O_RDONLY | O_DIRECTORY`), so a caller that resolved them
/// inside a root (a container's image, a volume) never has a path re-resolved: populating a
/// volume from image content uses this. Entries are created with `O_EXCL`/`mkdirat`, so nothing
/// already in `dst` is ever written through or replaced.
pub fn copy_dir_into(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<CopyStats> {
    let src_fd = rustix::io::fcntl_dupfd_cloexec(src, 0)?;
    let dst_fd = rustix::io::fcntl_dupfd_cloexec(dst, 0)?;
    let st = rustix::fs::fstat(&src_fd)?;
    let mut c = Copier {
        dst_root: dst_fd.try_clone()?,
        links: HashMap::new(),
        stats: CopyStats::default(),
    };
    c.copy_dir(&src_fd, &dst_fd, Path::new(""))?;
    finish_fd(&src_fd, &dst_fd, &st)?;
    Ok(c.stats)
}

struct Copier {
    dst_root: OwnedFd,
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
}

fn rdonly() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Copier {
    fn copy_dir(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &Path) -> io::Result<()> {
        let mut names: Vec<CString> = Vec::new();
        for entry in rustix::fs::Dir::read_from(src)? {
            let entry = entry?;
            let n = entry.file_name();
            if n.to_bytes() != b"." && n.to_bytes() != b".." {
                names.push(n.to_owned());
            }
        }
        for name in names {
            self.copy_entry(src, dst, rel, &name).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{}: {e}",
                        rel.join(OsStr::from_bytes(name.to_bytes())).display()
                    ),
                )
            })?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        rel: &Path,
        name: &CStr,
    ) -> io::Result<()> {
        let st = rustix::fs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let child_rel = rel.join(OsStr::from_bytes(name.to_bytes()));
        if ft != FileType::Directory && st.st_nlink > 1 {
            let id = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&id) {
                rustix::fs::linkat(&self.dst_root, first, dst, name, AtFlags::empty())?;
                return Ok(());
            }
            self.links.insert(id, child_rel.clone());
        }
        let perm = Mode::from_raw_mode(st.st_mode & 0o7777);
        match ft {
            FileType::Directory => {
                rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700))?;
                let s = open_dir_nofollow(src, name)?;
                let d = open_dir_nofollow(dst, name)?;
                self.copy_dir(&s, &d, &child_rel)?;
                finish_fd(&s, &d, &st)
            }
            FileType::RegularFile => {
                let s = rustix::fs::openat(src, name, rdonly(), Mode::empty())?;
                let d = rustix::fs::openat(
                    dst,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                self.stats.files += 1;
                if copy_data(&s, &d, st.st_size as u64)? {
                    self.stats.reflinked += 1;
                }
                finish_fd(&s, &d, &st)
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, name, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), dst, name)?;
                finish_at(src, dst, name, &st, true)
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                rustix::fs::mknodat(dst, name, ft, perm, st.st_rdev)?;
                finish_at(src, dst, name, &st, false)
            }
            FileType::Unknown => {
                tracing::warn!(path = %child_rel.display(), "skipping file of unknown type");
                Ok(())
            }
        }
    }
}

/// Clone or copy all data of `s` into `d`, keeping holes. Returns whether a reflink was used.
fn copy_data(s: &OwnedFd, d: &OwnedFd, len: u64) -> io::Result<bool> {
    if len > 0 {
        let sf = std::fs::File::from(s.try_clone()?);
        let df = std::fs::File::from(d.try_clone()?);
        if carrel_core::fs::try_reflink(&sf, &df)? {
            return Ok(true);
        }
    }
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(s, SeekFrom::Data(pos)) {
            Ok(p) => p,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => pos, // no SEEK_DATA: copy everything
        };
        let end = match rustix::fs::seek(s, SeekFrom::Hole(data)) {
            Ok(p) => p.min(len),
            Err(_) => len,
        };
        copy_range(s, d, data, end - data)?;
        pos = end;
    }
    rustix::fs::ftruncate(d, len)?;
    Ok(false)
}

fn copy_range(s: &OwnedFd, d: &OwnedFd, start: u64, mut n: u64) -> io::Result<()> {
    let mut off_in = start;
    let mut off_out = start;
    while n > 0 {
        let chunk = n.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(s, Some(&mut off_in), d, Some(&mut off_out), chunk) {
            Ok(0) => return Ok(()),
            Ok(k) => n -= k as u64,
            Err(rustix::io::Errno::XDEV)
            | Err(rustix::io::Errno::OPNOTSUPP)
            | Err(rustix::io::Errno::INVAL)
            | Err(rustix::io::Errno::NOSYS) => {
                let mut buf = vec![0u8; chunk.min(1 << 20)];
                let k = rustix::io::pread(s, &mut buf, off_in)?;
                if k == 0 {
                    return Ok(());
                }
                let mut w = 0;
                while w < k {
                    w += rustix::io::pwrite(d, &buf[w..k], off_out + w as u64)?;
                }
                off_in += k as u64;
                off_out += k as u64;
                n -= k as u64;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn timestamps(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Owner, mode, xattrs and times of a file or directory we hold descriptors of. Ownership
/// first (chown clears setuid bits and `security.capability`), times last.
fn finish_fd(s: &OwnedFd, d: &OwnedFd, st: &rustix::fs::Stat) -> io::Result<()> {
    rustix::fs::fchown(
        d,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )?;
    rustix::fs::fchmod(d, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    copy_xattrs(XattrTarget::Fd(s), XattrTarget::Fd(d))?;
    rustix::fs::futimens(d, &timestamps(st))?;
    Ok(())
}

/// The same for entries we do not open (symlinks, devices, fifos, sockets).
fn finish_at(
    src: &OwnedFd,
    dst: &OwnedFd,
    name: &CStr,
    st: &rustix::fs::Stat,
    symlink: bool,
) -> io::Result<()> {
    rustix::fs::chownat(
        dst,
        name,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if !symlink {
        rustix::fs::chmodat(
            dst,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    let n = OsStr::from_bytes(name.to_bytes());
    // `/proc/self/fd/<dir>/<name>`: the directory's magic link is followed, `name` is not.
    let src_path = carrel_core::fs::proc_fd_path(src.as_fd()).join(n);
    let dst_path = carrel_core::fs::proc_fd_path(dst.as_fd()).join(n);
    copy_xattrs(XattrTarget::Path(&src_path), XattrTarget::Path(&dst_path))?;
    rustix::fs::utimensat(dst, name, &timestamps(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// A file whose extended attributes are read or written: an open descriptor, or a path whose
/// last component is not followed.
#[derive(Clone, Copy)]
enum XattrTarget<'a> {
    Fd(&'a OwnedFd),
    Path(&'a Path),
}

impl XattrTarget<'_> {
    fn list_query(self) -> rustix::io::Result<usize> {
        match self {
            XattrTarget::Fd(fd) => rustix::fs::flistxattr_query(fd),
            XattrTarget::Path(p) => rustix::fs::llistxattr_query(p),
        }
    }
    fn list(self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrTarget::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            XattrTarget::Path(p) => rustix::fs::llistxattr(p, buf),
        }
    }
    fn get_query(self, name: &OsStr) -> rustix::io::Result<usize> {
        match self {
            XattrTarget::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
            XattrTarget::Path(p) => rustix::fs::lgetxattr_query(p, name),
        }
    }
    fn get(self, name: &OsStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrTarget::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
            XattrTarget::Path(p) => rustix::fs::lgetxattr(p, name, buf),
        }
    }
    fn set(self, name: &OsStr, value: &[u8]) -> rustix::io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        match self {
            XattrTarget::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, flags),
            XattrTarget::Path(p) => rustix::fs::lsetxattr(p, name, value, flags),
        }
    }
}

/// Copy every extended attribute of `src` to `dst`. A destination that does not support an
/// attribute is logged and skipped.
fn copy_xattrs(src: XattrTarget<'_>, dst: XattrTarget<'_>) -> io::Result<()> {
    let names = list_xattrs(src)?;
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        let value = match get_xattr(src, name) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        match dst.set(name, &value) {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) => {
                tracing::warn!(attr = %name.to_string_lossy(), "extended attribute not supported by the destination; skipped");
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("setting {}: {e}", name.to_string_lossy()),
                ));
            }
        }
    }
    Ok(())
}

fn list_xattrs(t: XattrTarget<'_>) -> io::Result<Vec<u8>> {
    loop {
        let n = match t.list_query() {
            Ok(n) => n,
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; n];
        match t.list(&mut buf[..]) {
            Ok(k) => {
                buf.truncate(k);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn get_xattr(t: XattrTarget<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    loop {
        let n = t.get_query(name)?;
        let mut buf = vec![0u8; n];
        match t.get(name, &mut buf[..]) {
            Ok(k) => {
                buf.truncate(k);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
