//! Writing tars of directory trees: whole trees (`save`, `export`, `commit` of a copy snapshot),
//! chosen paths (`cp`), and overlay upper directories converted to OCI layer diffs.
//!
//! The output is deterministic: entries in depth-first order with each directory's names sorted
//! bytewise (Go's `filepath.Walk` order), ustar headers with PAX records only where needed (long
//! or non-ASCII names, large ids, sizes or times, xattrs), empty user/group names, mtimes in whole
//! seconds, no atime/ctime (as Docker writes layers). Files with several links become hardlink
//! entries after their first occurrence. Sockets are skipped. With [`WriteOptions::sparse`], files
//! with holes become PAX GNU sparse 1.0 entries.
//!
//! The tree may be live (a running container): every object is opened relative to its parent
//! directory's descriptor with `O_NOFOLLOW`, symlinks are archived as symlinks and never followed,
//! a file that vanishes is skipped, one that shrinks is padded with zeros and one that grows is
//! cut at the size it had when opened, so the stream is always a valid tar.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use carrel_core::fs::{Root, clean_absolute, clean_relative, proc_fd_path};
use carrel_core::{Digest, DigestWriter};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::compression::BUFFER_SIZE;
use crate::sys::{self, DIR_NOFOLLOW, XattrTarget};
use crate::{ArchiveError, EntryName};

/// Options for writing a tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Archive extended attributes as PAX `SCHILY.xattr.*` records (default true). Overlay
    /// private xattrs (`trusted.overlay.*`, `user.overlay.*`) and the host's
    /// `security.selinux` labels are never archived.
    pub xattrs: bool,
    /// Write files with holes as PAX GNU sparse 1.0 entries holding only their data (default
    /// false: layers are written dense, as Docker writes them). Holes are found with
    /// `SEEK_DATA`/`SEEK_HOLE`; GNU tar, Go's `archive/tar` and [`crate::apply_layer`] read such
    /// entries back as sparse files.
    pub sparse: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            xattrs: true,
            sparse: false,
        }
    }
}

/// One subtree to archive with [`write_paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarSource {
    /// Path inside the root (absolute or relative; resolved inside the root, symlinks in parent
    /// components included, so `/etc/x` with `etc -> /usr/etc` is the root's `usr/etc/x`).
    /// Empty or `/` means the root itself.
    pub path: PathBuf,
    /// Name of the subtree's top entry in the archive; its children are written below it. Empty
    /// means the children are written at the top level (the top entry itself is not written).
    pub name: PathBuf,
    /// When the source itself is a symlink, archive what it points to (resolved inside the root)
    /// instead of the link (`docker cp -L`).
    pub follow_symlink: bool,
}

/// What a write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteStats {
    /// Entries written (PAX extension headers not counted).
    pub entries: u64,
    /// Bytes of tar written.
    pub size: u64,
    /// sha256 of the tar written (a diffID when the tar is a layer).
    pub digest: Digest,
}

/// Write a tar of everything below `dir` (the directory itself is not an entry).
pub fn write_tree(
    dir: &Path,
    out: impl Write,
    opts: &WriteOptions,
) -> Result<WriteStats, ArchiveError> {
    write_paths(
        dir,
        &[TarSource {
            path: PathBuf::new(),
            name: PathBuf::new(),
            follow_symlink: false,
        }],
        out,
        opts,
    )
}

/// Write a tar of chosen subtrees of `root`, each renamed as its [`TarSource::name`] says (for
/// `cp`: `TarSource { path: "/etc/hosts", name: "hosts", .. }`).
pub fn write_paths(
    root: &Path,
    sources: &[TarSource],
    out: impl Write,
    opts: &WriteOptions,
) -> Result<WriteStats, ArchiveError> {
    let mut w = Walker::new(root, out, opts.clone(), false)?;
    for src in sources {
        w.source(src)?;
    }
    w.finish()
}

/// Write the OCI layer diff of an overlay upper directory: 0/0 character devices become
/// `.wh.<name>` entries, a directory with `trusted.overlay.opaque=y` is followed by a
/// `.wh..wh..opq` entry, and no `trusted.overlay.*` xattr is ever emitted. An upper directory
/// that uses `redirect_dir` or `metacopy` cannot be diffed this way and is refused
/// ([`ArchiveError::Unsupported`]).
pub fn write_overlay_diff(upper: &Path, out: impl Write) -> Result<WriteStats, ArchiveError> {
    let mut w = Walker::new(upper, out, WriteOptions::default(), true)?;
    w.source(&TarSource {
        path: PathBuf::new(),
        name: PathBuf::new(),
        follow_symlink: false,
    })?;
    w.finish()
}

/// One path of a layer diff written by [`write_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffEntry {
    /// The path inside the tree (absolute or relative; resolved inside the root).
    pub path: PathBuf,
    /// The path was deleted: a `.wh.<name>` whiteout is written instead of the object.
    pub deleted: bool,
}

/// Write a layer diff from a list of changed paths of the tree `root` (Docker's
/// `ExportChanges`, used where the storage driver has no native diff): each present path is
/// written as one entry (a directory without its children: they are listed themselves when they
/// changed), each deleted path as an OCI whiteout `.wh.<name>`. Give the entries sorted by path
/// so that directories come before what they contain. Paths that vanished meanwhile are
/// skipped.
pub fn write_changes(
    root: &Path,
    changes: &[DiffEntry],
    out: impl Write,
    opts: &WriteOptions,
) -> Result<WriteStats, ArchiveError> {
    let mut w = Walker::new(root, out, opts.clone(), false)?;
    for c in changes {
        w.change(c)?;
    }
    w.finish()
}

/// Extended attributes as (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// A header to write.
struct Hdr<'a> {
    name: &'a [u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    link: &'a [u8],
    major: u32,
    minor: u32,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// One PAX record, `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut size = base + base.to_string().len();
    if size.to_string().len() + base != size {
        size = base + size.to_string().len();
    }
    out.extend_from_slice(size.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Split a path into ustar (prefix, name) fields, as Go's `splitUSTARPath`.
fn split_ustar(p: &[u8]) -> Option<(&[u8], &[u8])> {
    if p.len() <= 100 {
        return Some((&[], p));
    }
    let mut len = p.len();
    if len > 156 {
        len = 156;
    } else if p[len - 1] == b'/' {
        len -= 1;
    }
    let i = p[..len].iter().rposition(|&c| c == b'/')?;
    let (prefix, name) = (&p[..i], &p[i + 1..]);
    if i == 0 || name.is_empty() || name.len() > 100 || prefix.len() > 155 {
        return None;
    }
    Some((prefix, name))
}

const OCTAL_MAX_7: u64 = 0o7777777;
const OCTAL_MAX_11: u64 = 0o77777777777;

/// The state of one tar being written.
struct Walker<W: Write> {
    root: Root,
    out: DigestWriter<BufWriter<W>>,
    opts: WriteOptions,
    overlay: bool,
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    buf: Vec<u8>,
}

struct Frame {
    fd: OwnedFd,
    prefix: Vec<u8>,
    /// Names still to visit, sorted descending so `pop` yields the smallest.
    names: Vec<OsString>,
}

fn tree_err(path: &[u8], op: &'static str) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = EntryName::from(path);
    move |source| ArchiveError::Tree { path, op, source }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    e.into()
}

fn sorted_names(fd: BorrowedFd<'_>, path: &[u8]) -> Result<Vec<OsString>, ArchiveError> {
    let mut names = sys::read_names(fd).map_err(tree_err(path, "read directory"))?;
    names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}

fn is_private_xattr(key: &[u8]) -> bool {
    key.starts_with(b"trusted.overlay.")
        || key.starts_with(b"user.overlay.")
        || key == b"security.selinux"
}

impl<W: Write> Walker<W> {
    fn new(root: &Path, out: W, opts: WriteOptions, overlay: bool) -> Result<Self, ArchiveError> {
        let root = Root::open(root).map_err(|source| ArchiveError::Open {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Walker {
            root,
            out: DigestWriter::new(BufWriter::with_capacity(BUFFER_SIZE, out)),
            opts,
            overlay,
            links: HashMap::new(),
            entries: 0,
            buf: vec![0u8; BUFFER_SIZE],
        })
    }

    fn finish(mut self) -> Result<WriteStats, ArchiveError> {
        self.out
            .write_all(&[0u8; 1024])
            .map_err(ArchiveError::Write)?;
        self.out.flush().map_err(ArchiveError::Write)?;
        let (digest, size, _) = self.out.finish();
        Ok(WriteStats {
            entries: self.entries,
            size,
            digest,
        })
    }

    fn source(&mut self, src: &TarSource) -> Result<(), ArchiveError> {
        let path_bytes = src.path.as_os_str().as_bytes();
        let clean = clean_relative(&src.path).map_err(|_| ArchiveError::Breakout {
            entry: EntryName::from(path_bytes),
        })?;
        let name = clean_relative(&src.name).map_err(|_| ArchiveError::Breakout {
            entry: EntryName::from(src.name.as_os_str().as_bytes()),
        })?;
        let name = name.as_os_str().as_bytes().to_vec();
        let prefix = |name: &[u8]| {
            if name.is_empty() {
                Vec::new()
            } else {
                [name, b"/"].concat()
            }
        };
        if clean.as_os_str().is_empty() {
            let fd = self
                .root
                .open_at(
                    Path::new(""),
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    Mode::empty(),
                )
                .map_err(tree_err(b"/", "open"))?;
            if !name.is_empty() {
                let st = rfs::fstat(&fd).map_err(|e| tree_err(b"/", "stat")(errno(e)))?;
                let xattrs = self.xattrs(XattrTarget::Fd(fd.as_fd()), b"/")?;
                self.dir_header(&name, &st, &xattrs, fd.as_fd())?;
            }
            let names = sorted_names(fd.as_fd(), b"/")?;
            return self.walk(Frame {
                fd,
                prefix: prefix(&name),
                names,
            });
        }
        let (parent, fname, st) = self.resolve(&clean, src.follow_symlink, path_bytes)?;
        if name.is_empty() {
            // Only the children of a directory source, at the top level.
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                return Err(ArchiveError::Unsupported {
                    path: EntryName::from(path_bytes),
                    reason: "an empty archive name needs a directory source".into(),
                });
            }
            let fd = rfs::openat(&parent, &fname, DIR_NOFOLLOW, Mode::empty())
                .map_err(|e| tree_err(path_bytes, "open directory")(errno(e)))?;
            let names = sorted_names(fd.as_fd(), path_bytes)?;
            return self.walk(Frame {
                fd,
                prefix: Vec::new(),
                names,
            });
        }
        if let Some(fd) = self.emit(parent.as_fd(), &fname, &name)? {
            let names = sorted_names(fd.as_fd(), &name)?;
            self.walk(Frame {
                fd,
                prefix: prefix(&name),
                names,
            })?;
        }
        Ok(())
    }

    /// One entry of [`write_changes`].
    fn change(&mut self, c: &DiffEntry) -> Result<(), ArchiveError> {
        let shown = c.path.as_os_str().as_bytes();
        let clean = clean_relative(&c.path).map_err(|_| ArchiveError::Breakout {
            entry: EntryName::from(shown),
        })?;
        let Some(base) = clean.file_name() else {
            return Ok(());
        };
        let arch = clean.as_os_str().as_bytes();
        if c.deleted {
            let dir = clean
                .parent()
                .unwrap_or(Path::new(""))
                .as_os_str()
                .as_bytes();
            let wh = if dir.is_empty() {
                [b".wh.", base.as_bytes()].concat()
            } else {
                [dir, b"/.wh.", base.as_bytes()].concat()
            };
            return self.header(&Hdr {
                name: &wh,
                typeflag: b'0',
                mode: 0o600,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 0,
                link: &[],
                major: 0,
                minor: 0,
                xattrs: &[],
            });
        }
        let (parent, name) = match self.root.open_parent(&clean) {
            Ok(p) => p,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                tracing::debug!(path = %EntryName::from(arch), "vanished while archiving; skipped");
                return Ok(());
            }
            Err(e) => return Err(tree_err(arch, "resolve")(e)),
        };
        // A directory's entry only: its changed children are entries of their own.
        self.emit(parent.as_fd(), &name, arch).map(drop)
    }

    /// Resolve a source inside the root: its parent (following in-root symlinks), its final name
    /// and what it is. With `follow`, a final symlink is resolved (inside the root) too.
    fn resolve(
        &self,
        clean: &Path,
        follow: bool,
        shown: &[u8],
    ) -> Result<(OwnedFd, OsString, rfs::Stat), ArchiveError> {
        let mut path = clean.to_path_buf();
        for _ in 0..40 {
            let (parent, fname) = self
                .root
                .open_parent(&path)
                .map_err(tree_err(shown, "resolve"))?;
            let st = rfs::statat(&parent, &fname, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| tree_err(shown, "stat")(errno(e)))?;
            if !follow || FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                return Ok((parent, fname, st));
            }
            let target = rfs::readlinkat(&parent, &fname, Vec::new())
                .map_err(|e| tree_err(shown, "readlink")(errno(e)))?;
            let target = Path::new(OsStr::from_bytes(target.as_bytes()));
            let base = Path::new("/").join(path.parent().unwrap_or(Path::new("")));
            let joined = clean_absolute(&base.join(target));
            path = clean_relative(&joined).unwrap_or_default();
            if path.as_os_str().is_empty() {
                return Err(tree_err(shown, "resolve")(io::Error::from_raw_os_error(
                    libc::EISDIR,
                )));
            }
        }
        Err(tree_err(shown, "resolve")(io::Error::from_raw_os_error(
            libc::ELOOP,
        )))
    }

    /// Depth-first walk below `first`.
    fn walk(&mut self, first: Frame) -> Result<(), ArchiveError> {
        let mut stack = vec![first];
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.pop() else {
                stack.pop();
                continue;
            };
            let arch = [&top.prefix[..], name.as_bytes()].concat();
            let dirfd = top.fd.as_fd();
            if let Some(fd) = self.emit(dirfd, &name, &arch)? {
                let names = sorted_names(fd.as_fd(), &arch)?;
                let mut prefix = arch;
                prefix.push(b'/');
                stack.push(Frame { fd, prefix, names });
            }
        }
        Ok(())
    }

    /// The xattrs to archive for an object, sorted by name.
    fn xattrs(&self, target: XattrTarget<'_>, shown: &[u8]) -> Result<Xattrs, ArchiveError> {
        let names = match target {
            XattrTarget::Fd(fd) => sys::list_xattrs_fd(fd),
            XattrTarget::At(dir, name) => sys::list_xattrs_at(dir, name),
        };
        let names = match names {
            // Vanished from a live tree since it was pinned: nothing to read.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Vec::new(),
            other => other.map_err(tree_err(shown, "list xattrs"))?,
        };
        if self.overlay {
            for n in &names {
                if n == b"trusted.overlay.redirect" || n == b"trusted.overlay.metacopy" {
                    return Err(ArchiveError::Unsupported {
                        path: EntryName::from(shown),
                        reason: format!(
                            "overlay upper dir uses {} (redirect_dir/metacopy); a native diff is impossible",
                            EntryName::from(&n[..])
                        ),
                    });
                }
            }
        }
        if !self.opts.xattrs {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for n in names {
            if is_private_xattr(&n) {
                continue;
            }
            match sys::get_xattr(target, &n) {
                Ok(Some(v)) => out.push((n, v)),
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(tree_err(shown, "read xattr")(e)),
            }
        }
        out.sort();
        Ok(out)
    }

    fn dir_header(
        &mut self,
        arch: &[u8],
        st: &rfs::Stat,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        fd: BorrowedFd<'_>,
    ) -> Result<(), ArchiveError> {
        let name = [arch, b"/"].concat();
        self.header(&Hdr {
            name: &name,
            typeflag: b'5',
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size: 0,
            mtime: st.st_mtime,
            link: &[],
            major: 0,
            minor: 0,
            xattrs,
        })?;
        if self.overlay {
            let opaque = sys::get_xattr(XattrTarget::Fd(fd), b"trusted.overlay.opaque")
                .map_err(tree_err(arch, "read xattr"))?;
            if opaque.as_deref() == Some(b"y") {
                let marker = [arch, b"/.wh..wh..opq"].concat();
                self.header(&Hdr {
                    name: &marker,
                    typeflag: b'0',
                    mode: st.st_mode & 0o777,
                    uid: u64::from(st.st_uid),
                    gid: u64::from(st.st_gid),
                    size: 0,
                    mtime: 0,
                    link: &[],
                    major: 0,
                    minor: 0,
                    xattrs: &[],
                })?;
            }
        }
        Ok(())
    }

    /// Write the entry for `name` in `dir`; returns the directory's descriptor to descend into.
    ///
    /// The object is first pinned with `O_PATH|O_NOFOLLOW` and everything (type, metadata, link
    /// target) is read from that handle; directories and regular files are then opened for
    /// reading through it (`/proc/self/fd/N`), so the bytes come from the inode that was checked.
    /// A live tree that swaps in a symlink, a device or a fifo can never make carrel follow or
    /// open it (opening some devices has side effects); what vanishes meanwhile is skipped.
    fn emit(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        arch: &[u8],
    ) -> Result<Option<OwnedFd>, ArchiveError> {
        let pinned = match rfs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                tracing::debug!(path = %EntryName::from(arch), "vanished while archiving; skipped");
                return Ok(None);
            }
            Err(e) => return Err(tree_err(arch, "open")(errno(e))),
        };
        let st = rfs::fstat(&pinned).map_err(|e| tree_err(arch, "stat")(errno(e)))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let reopen = |flags: OFlags| {
            rfs::open(
                proc_fd_path(pinned.as_fd()),
                flags | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| tree_err(arch, "open")(errno(e)))
        };
        if ft == FileType::Directory {
            let fd = reopen(OFlags::RDONLY | OFlags::DIRECTORY)?;
            let xattrs = self.xattrs(XattrTarget::Fd(fd.as_fd()), arch)?;
            self.dir_header(arch, &st, &xattrs, fd.as_fd())?;
            return Ok(Some(fd));
        }
        if ft == FileType::Socket {
            tracing::debug!(path = %EntryName::from(arch), "skipping socket");
            return Ok(None);
        }
        if self.overlay && ft == FileType::CharacterDevice && st.st_rdev == 0 {
            // An overlay whiteout: `.wh.<name>` in the same directory.
            let (dirpart, base) = match arch.iter().rposition(|&c| c == b'/') {
                Some(i) => (&arch[..=i], &arch[i + 1..]),
                None => (&[][..], arch),
            };
            let wh = [dirpart, b".wh.", base].concat();
            return self
                .header(&Hdr {
                    name: &wh,
                    typeflag: b'0',
                    mode: 0o600,
                    uid: u64::from(st.st_uid),
                    gid: u64::from(st.st_gid),
                    size: 0,
                    mtime: st.st_mtime,
                    link: &[],
                    major: 0,
                    minor: 0,
                    xattrs: &[],
                })
                .map(|()| None);
        }
        let file = if ft == FileType::RegularFile {
            Some(reopen(OFlags::RDONLY)?)
        } else {
            None
        };
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key).cloned() {
                return self
                    .header(&Hdr {
                        name: arch,
                        typeflag: b'1',
                        mode: st.st_mode & 0o7777,
                        uid: u64::from(st.st_uid),
                        gid: u64::from(st.st_gid),
                        size: 0,
                        mtime: st.st_mtime,
                        link: &first,
                        major: 0,
                        minor: 0,
                        xattrs: &[],
                    })
                    .map(|()| None);
            }
            self.links.insert(key, arch.to_vec());
        }
        let xattrs = match &file {
            Some(fd) => self.xattrs(XattrTarget::Fd(fd.as_fd()), arch)?,
            None => self.xattrs(XattrTarget::At(dir, name), arch)?,
        };
        let mut link = Vec::new();
        let (mut major, mut minor) = (0, 0);
        let typeflag = match ft {
            FileType::RegularFile => b'0',
            FileType::Symlink => {
                // The target of the pinned link itself (readlinkat with an empty path).
                link = rfs::readlinkat(&pinned, "", Vec::new())
                    .map_err(|e| tree_err(arch, "readlink")(errno(e)))?
                    .into_bytes();
                b'2'
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                major = rfs::major(st.st_rdev);
                minor = rfs::minor(st.st_rdev);
                if ft == FileType::CharacterDevice {
                    b'3'
                } else {
                    b'4'
                }
            }
            FileType::Fifo => b'6',
            _ => {
                tracing::debug!(path = %EntryName::from(arch), "skipping unknown file type");
                return Ok(None);
            }
        };
        let size = if file.is_some() { st.st_size as u64 } else { 0 };
        if let Some(fd) = &file
            && self.opts.sparse
            && (st.st_blocks as u64).saturating_mul(512) < size
            && let Some(regions) = data_regions(fd.as_fd(), size)
        {
            return self
                .sparse_file(fd.as_fd(), arch, &st, size, &regions, &xattrs)
                .map(|()| None);
        }
        self.header(&Hdr {
            name: arch,
            typeflag,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size,
            mtime: st.st_mtime,
            link: &link,
            major,
            minor,
            xattrs: &xattrs,
        })?;
        if let Some(fd) = file {
            self.copy_data(fd.as_fd(), size, arch)?;
        }
        Ok(None)
    }

    /// Copy exactly `size` bytes of a file, padded to a block.
    fn copy_data(
        &mut self,
        fd: BorrowedFd<'_>,
        size: u64,
        arch: &[u8],
    ) -> Result<(), ArchiveError> {
        let mut left = size;
        let mut short = false;
        while left > 0 {
            let want = (left.min(self.buf.len() as u64)) as usize;
            let n = if short {
                self.buf[..want].fill(0);
                want
            } else {
                match rustix::io::read(fd, &mut self.buf[..want]) {
                    Ok(0) => {
                        tracing::warn!(path = %EntryName::from(arch), "file shrank while archiving; padded with zeros");
                        short = true;
                        continue;
                    }
                    Ok(n) => n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(tree_err(arch, "read")(errno(e))),
                }
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(ArchiveError::Write)?;
            left -= n as u64;
        }
        let pad = ((512 - size % 512) % 512) as usize;
        self.out
            .write_all(&[0u8; 512][..pad])
            .map_err(ArchiveError::Write)?;
        Ok(())
    }

    /// A file with holes as a PAX GNU sparse 1.0 entry: the header names
    /// `<dir>/GNUSparseFile.0/<base>` (as GNU tar does), PAX records give the real name and
    /// size, and the data is the sparse map (decimal lines, padded to a block) followed by the
    /// data regions only.
    fn sparse_file(
        &mut self,
        fd: BorrowedFd<'_>,
        arch: &[u8],
        st: &rfs::Stat,
        size: u64,
        regions: &[(u64, u64)],
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), ArchiveError> {
        let mut map = format!("{}\n", regions.len()).into_bytes();
        for (off, len) in regions {
            map.extend_from_slice(format!("{off}\n{len}\n").as_bytes());
        }
        map.resize(map.len().div_ceil(512) * 512, 0);
        let data: u64 = regions.iter().map(|(_, l)| l).sum();
        let (dir, base) = match arch.iter().rposition(|&c| c == b'/') {
            Some(i) => (&arch[..=i], &arch[i + 1..]),
            None => (&[][..], arch),
        };
        let fake = [dir, b"GNUSparseFile.0/", base].concat();
        let mut extra = Vec::new();
        pax_record(&mut extra, b"GNU.sparse.major", b"1");
        pax_record(&mut extra, b"GNU.sparse.minor", b"0");
        pax_record(&mut extra, b"GNU.sparse.name", arch);
        pax_record(
            &mut extra,
            b"GNU.sparse.realsize",
            size.to_string().as_bytes(),
        );
        self.header_ext(
            &Hdr {
                name: &fake,
                typeflag: b'0',
                mode: st.st_mode & 0o7777,
                uid: u64::from(st.st_uid),
                gid: u64::from(st.st_gid),
                size: map.len() as u64 + data,
                mtime: st.st_mtime,
                link: &[],
                major: 0,
                minor: 0,
                xattrs,
            },
            &extra,
        )?;
        self.out.write_all(&map).map_err(ArchiveError::Write)?;
        for &(off, len) in regions {
            self.copy_region(fd, off, len, arch)?;
        }
        let pad = ((512 - data % 512) % 512) as usize;
        self.out
            .write_all(&[0u8; 512][..pad])
            .map_err(ArchiveError::Write)?;
        Ok(())
    }

    /// Copy exactly `len` bytes of a file from `off` (zeros past its end if it shrank).
    fn copy_region(
        &mut self,
        fd: BorrowedFd<'_>,
        mut off: u64,
        len: u64,
        arch: &[u8],
    ) -> Result<(), ArchiveError> {
        let mut left = len;
        let mut short = false;
        while left > 0 {
            let want = (left.min(self.buf.len() as u64)) as usize;
            let n = if short {
                self.buf[..want].fill(0);
                want
            } else {
                match rustix::io::pread(fd, &mut self.buf[..want], off) {
                    Ok(0) => {
                        tracing::warn!(path = %EntryName::from(arch), "file shrank while archiving; padded with zeros");
                        short = true;
                        continue;
                    }
                    Ok(n) => n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(tree_err(arch, "read")(errno(e))),
                }
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(ArchiveError::Write)?;
            left -= n as u64;
            off += n as u64;
        }
        Ok(())
    }

    /// Write one header, preceded by a PAX header when a field does not fit ustar.
    fn header(&mut self, h: &Hdr<'_>) -> Result<(), ArchiveError> {
        self.header_ext(h, &[])
    }

    /// [`Walker::header`] with extra PAX records (already encoded) in its PAX header.
    fn header_ext(&mut self, h: &Hdr<'_>, extra_pax: &[u8]) -> Result<(), ArchiveError> {
        let mut pax = Vec::new();
        let mut header = tar::Header::new_ustar();
        let ascii = |b: &[u8]| b.is_ascii();
        {
            let ustar = header.as_ustar_mut().expect("a ustar header");
            match split_ustar(h.name).filter(|_| ascii(h.name)) {
                Some((prefix, name)) => {
                    ustar.prefix[..prefix.len()].copy_from_slice(prefix);
                    ustar.name[..name.len()].copy_from_slice(name);
                }
                None => {
                    pax_record(&mut pax, b"path", h.name);
                    let short: Vec<u8> = h
                        .name
                        .iter()
                        .copied()
                        .filter(u8::is_ascii)
                        .take(100)
                        .collect();
                    ustar.name[..short.len()].copy_from_slice(&short);
                }
            }
            if !h.link.is_empty() {
                if h.link.len() <= 100 && ascii(h.link) {
                    ustar.linkname[..h.link.len()].copy_from_slice(h.link);
                } else {
                    pax_record(&mut pax, b"linkpath", h.link);
                }
            }
        }
        header.set_mode(h.mode);
        if h.uid > OCTAL_MAX_7 {
            pax_record(&mut pax, b"uid", h.uid.to_string().as_bytes());
            header.set_uid(0);
        } else {
            header.set_uid(h.uid);
        }
        if h.gid > OCTAL_MAX_7 {
            pax_record(&mut pax, b"gid", h.gid.to_string().as_bytes());
            header.set_gid(0);
        } else {
            header.set_gid(h.gid);
        }
        if h.size > OCTAL_MAX_11 {
            pax_record(&mut pax, b"size", h.size.to_string().as_bytes());
            header.set_size(0);
        } else {
            header.set_size(h.size);
        }
        if h.mtime < 0 || h.mtime as u64 > OCTAL_MAX_11 {
            pax_record(&mut pax, b"mtime", h.mtime.to_string().as_bytes());
            header.set_mtime(0);
        } else {
            header.set_mtime(h.mtime as u64);
        }
        header.set_entry_type(tar::EntryType::new(h.typeflag));
        if h.typeflag == b'3' || h.typeflag == b'4' {
            header
                .set_device_major(h.major)
                .and_then(|()| header.set_device_minor(h.minor))
                .map_err(ArchiveError::Write)?;
        }
        for (k, v) in h.xattrs {
            pax_record(&mut pax, &[b"SCHILY.xattr.", &k[..]].concat(), v);
        }
        pax.extend_from_slice(extra_pax);
        if !pax.is_empty() {
            self.pax_header(h.name, &pax)?;
        }
        header.set_cksum();
        self.out
            .write_all(header.as_bytes())
            .map_err(ArchiveError::Write)?;
        self.entries += 1;
        Ok(())
    }

    /// A PAX `x` header named like Go's (`<dir>/PaxHeaders.0/<base>`).
    fn pax_header(&mut self, name: &[u8], records: &[u8]) -> Result<(), ArchiveError> {
        let trimmed = name.strip_suffix(b"/").unwrap_or(name);
        let (dir, base) = match trimmed.iter().rposition(|&c| c == b'/') {
            Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
            None => (&[][..], trimmed),
        };
        let full = [dir, b"PaxHeaders.0/", base].concat();
        let short: Vec<u8> = full
            .iter()
            .copied()
            .filter(u8::is_ascii)
            .take(100)
            .collect();
        let mut header = tar::Header::new_ustar();
        header.as_ustar_mut().expect("a ustar header").name[..short.len()].copy_from_slice(&short);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(records.len() as u64);
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_cksum();
        self.out
            .write_all(header.as_bytes())
            .map_err(ArchiveError::Write)?;
        self.out.write_all(records).map_err(ArchiveError::Write)?;
        let pad = (512 - records.len() % 512) % 512;
        self.out
            .write_all(&[0u8; 512][..pad])
            .map_err(ArchiveError::Write)?;
        Ok(())
    }
}

/// The data regions (offset, length) of the first `size` bytes of a file, from
/// `SEEK_DATA`/`SEEK_HOLE`, ending with a zero-length region at `size` when the file ends in a
/// hole (as GNU tar writes it). `None` when the file has no hole or the filesystem cannot say.
fn data_regions(fd: BorrowedFd<'_>, size: u64) -> Option<Vec<(u64, u64)>> {
    let found = scan_regions(fd, size);
    // The dense path reads the file sequentially from its start.
    rfs::seek(fd, rustix::fs::SeekFrom::Start(0)).ok()?;
    found
}

fn scan_regions(fd: BorrowedFd<'_>, size: u64) -> Option<Vec<(u64, u64)>> {
    use rustix::fs::SeekFrom;
    let mut out = Vec::new();
    let mut off = 0u64;
    while off < size {
        let data = match rfs::seek(fd, SeekFrom::Data(off)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => return None,
        };
        if data >= size {
            break;
        }
        let hole = rfs::seek(fd, SeekFrom::Hole(data)).ok()?.min(size);
        if hole <= data {
            return None;
        }
        out.push((data, hole - data));
        off = hole;
    }
    if out.len() == 1 && out[0] == (0, size) {
        return None;
    }
    if out.last().is_none_or(|&(o, l)| o + l < size) {
        out.push((size, 0));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_are_self_consistent() {
        for vlen in [0usize, 1, 5, 6, 7, 90, 94, 95, 96, 97, 990, 995, 996, 1000] {
            let mut out = Vec::new();
            let v = vec![b'x'; vlen];
            pax_record(&mut out, b"path", &v);
            let sp = out.iter().position(|&c| c == b' ').unwrap();
            let n: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(n, out.len(), "value length {vlen}");
        }
    }

    #[test]
    fn ustar_split_matches_go() {
        assert_eq!(split_ustar(b"short"), Some((&b""[..], &b"short"[..])));
        let long = [vec![b'a'; 120], b"/".to_vec(), vec![b'b'; 50]].concat();
        let (p, n) = split_ustar(&long).unwrap();
        assert_eq!((p.len(), n.len()), (120, 50));
        assert!(split_ustar(&vec![b'a'; 300]).is_none());
    }
}
