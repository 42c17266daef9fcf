//! Extracting a layer tar into a directory, treating every entry as hostile.
//!
//! How an entry is placed:
//!
//! 1. Its name is cleaned lexically ([`carrel_core::fs::clean_relative`]); a `..` that climbs
//!    above the root is a [`ArchiveError::Breakout`], a leading `/` is dropped.
//! 2. Its parent directory is resolved by the kernel inside the root
//!    (`openat2(RESOLVE_IN_ROOT)`), so symlinks — even absolute ones, even planted by this or an
//!    earlier layer — can never lead outside. Missing parents are created with
//!    [`carrel_core::fs::Root::mkdir_all`] (mode 0755 whatever the umask).
//! 3. The final component is acted on only through `*at` calls relative to that parent
//!    descriptor: `O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `mknodat`, `symlinkat`, `linkat` without
//!    `AT_SYMLINK_FOLLOW`, `unlinkat`. Whatever was there is unlinked first (a later entry wins; a
//!    directory stays when the new entry is a directory too).
//! 4. Metadata goes through the new file's descriptor (`fchown`, `fsetxattr`, `fchmod`,
//!    `futimens`) or, for symlinks and special files, through `AT_SYMLINK_NOFOLLOW` calls
//!    (symlinks are never chmodded). Directory modes and times are applied at the end, after their
//!    children, on a descriptor re-resolved by path and checked to be the same inode.
//!
//! Nothing resolved is cached between entries (CVE-2025-47290).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use carrel_core::fs::{Root, clean_relative, is_plain_name};
use carrel_core::{Digest, DigestReader};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::fs::{Gid, Uid};

use crate::compression::{BUFFER_SIZE, LimitReader};
use crate::error::{fs_err, invalid};
use crate::reader::{Entry, Kind, TarReader, Time, stream_error};
use crate::split::TarSplit;
use crate::sys::{self, DIR_NOFOLLOW, XattrTarget};
use crate::{ArchiveError, EntryName, WhiteoutFormat};

/// Bounds on what one archive may make carrel do (R5 in the threat catalog).
///
/// Memory use is bounded by `max_header_bytes` (plus the 1 MiB stream buffer and, for naive
/// whiteouts, one set of the layer's paths), disk use by `max_bytes_written` or the filesystem.
///
/// **Decompression bombs with the defaults**: gzip expands at most ~1000:1 and zstd more, but
/// carrel never buffers a stream, so a bomb only costs CPU time and the bytes it makes carrel
/// write. A bomb whose payload is zeros ends at the first zero block (a valid empty layer) and
/// its remaining bytes are refused after `max_trailing_bytes` (16 MiB). A bomb whose payload is a
/// huge file entry is written out until the disk is full; the kernel's `ENOSPC` is returned as a
/// clean [`ArchiveError::Fs`] of kind `Unavailable` and the caller deletes the layer directory.
/// Set `max_bytes_written` (disk bytes of file content) or `max_stream_bytes` (uncompressed tar
/// bytes) to fail earlier; a header that declares a huge size without the data behind it is
/// [`ArchiveError::Truncated`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of entries (default 10 000 000).
    pub max_entries: u64,
    /// Maximum size of one PAX header, GNU long name or sparse map (default 1 MiB, as Go's
    /// `archive/tar`).
    pub max_header_bytes: u64,
    /// Maximum length of a (cleaned) entry path or link target in bytes (default 4096).
    pub max_path_len: usize,
    /// Maximum length of one path component in bytes (default 255).
    pub max_name_len: usize,
    /// Maximum number of regions in one sparse map (default 100 000).
    pub max_sparse_regions: u64,
    /// Maximum bytes of file content written (default: unlimited).
    pub max_bytes_written: Option<u64>,
    /// Maximum bytes of uncompressed tar stream read, trailing data included (default:
    /// unlimited).
    pub max_stream_bytes: Option<u64>,
    /// Maximum bytes after the end-of-archive marker (default 16 MiB); they are read so the
    /// diffID covers the whole stream, as Docker's does.
    pub max_trailing_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000_000,
            max_header_bytes: 1 << 20,
            max_path_len: 4096,
            max_name_len: 255,
            max_sparse_regions: 100_000,
            max_bytes_written: None,
            max_stream_bytes: None,
            max_trailing_bytes: 16 << 20,
        }
    }
}

/// How to apply a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// How whiteouts are written (overlay upper dir, or a full tree).
    pub whiteouts: WhiteoutFormat,
    /// Resource bounds.
    pub limits: Limits,
    /// Set owners from the archive's numeric uid/gid (default true; needs root).
    pub preserve_ownership: bool,
    /// Create character and block devices (default true; needs root). When false they are
    /// skipped (rootless use, or copying out to a host directory).
    pub create_devices: bool,
}

impl ApplyOptions {
    /// Default options for a whiteout format.
    pub fn new(whiteouts: WhiteoutFormat) -> Self {
        ApplyOptions {
            whiteouts,
            limits: Limits::default(),
            preserve_ownership: true,
            create_devices: true,
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries in the archive (extension headers not counted, global headers counted).
    pub entries: u64,
    /// Bytes of file content written (holes of sparse files not counted).
    pub bytes_written: u64,
    /// sha256 of the whole uncompressed stream as read (the layer's diffID).
    pub diff_id: Digest,
    /// Size in bytes of the uncompressed stream.
    pub tar_size: u64,
}

/// A directory whose mode and times are applied after its children.
struct DeferredDir {
    path: PathBuf,
    dev: u64,
    ino: u64,
    mode: u32,
    times: Timestamps,
}

/// Extract an uncompressed layer tar into `dir` (a trusted, existing directory).
///
/// With [`WhiteoutFormat::Overlay`], `dir` is a fresh overlay upper directory: `.wh.<name>`
/// becomes a 0/0 character device and `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its
/// directory. With [`WhiteoutFormat::Naive`], `dir` holds the full tree of the lower layers:
/// `.wh.<name>` removes `<name>` (recursively, never following a symlink in its last component)
/// and `.wh..wh..opq` removes everything in its directory that this layer did not create. Other
/// `.wh..wh.*` (AUFS metadata) entries are skipped. Whiteouts never remove what the same layer
/// created (OCI image-spec `layer.md`).
///
/// The stream is hashed while it is read and drained to its end, so [`ApplyStats::diff_id`] is
/// the layer's diffID. On error this returns promptly; nothing outside `dir` has been touched,
/// and the caller deletes `dir`. No fsync is done: the caller syncs the filesystem once.
pub fn apply_layer(
    dir: &Path,
    tar_stream: impl Read,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ArchiveError> {
    let root = Root::open(dir).map_err(|source| ArchiveError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    apply_stream(root, tar_stream, opts, None, false).map(|(stats, _)| stats)
}

/// [`apply_layer`], also recording the layer's [`TarSplit`]: what the tar holds besides the
/// content of its regular files, so that the tar can be given back from `dir` later
/// ([`TarSplit::reassemble`]) instead of being kept as well. The split is `Err(why)` when
/// this layer cannot be reassembled from its directory (a file written twice or removed by a
/// later entry of the same layer, too much that is not file content); the extraction itself
/// is the same either way. Every recorded file is checked to be in `dir` at the end.
pub fn apply_layer_split(
    dir: &Path,
    tar_stream: impl Read,
    opts: &ApplyOptions,
) -> Result<(ApplyStats, Result<TarSplit, String>), ArchiveError> {
    let root = Root::open(dir).map_err(|source| ArchiveError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    let check = Root::open(dir).map_err(|source| ArchiveError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    let (stats, split) = apply_stream(root, tar_stream, opts, None, true)?;
    let split = split
        .unwrap_or_else(|| Err("not recorded".into()))
        .and_then(|split| {
            split
                .verify(&check)
                .map_err(|e| format!("recorded file: {e}"))?;
            Ok(split)
        });
    Ok((stats, split))
}

/// How an extraction for `cp` differs from a layer extraction (see [`crate::copy`]).
///
/// - Entries are placed below [`CopyRules::base`], a directory of the root that the caller
///   resolved (every entry is still resolved by the kernel inside the root, so a tree that
///   changes meanwhile can at most redirect an entry elsewhere inside the root);
/// - `.wh.*` names are ordinary files (a `cp` archive has no whiteouts);
/// - an entry naming the destination itself (`./`) is skipped, as Docker skips it, so the
///   destination keeps its own owner, mode and times;
/// - hardlink targets are relative to the destination, as Docker's `Untar` takes them.
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyRules {
    /// The destination directory, relative to the root.
    pub(crate) base: PathBuf,
    /// Refuse to replace a directory by a non-directory or a non-directory by a directory
    /// (Docker's `NoOverwriteDirNonDir`).
    pub(crate) no_overwrite_dir_non_dir: bool,
    /// Give every entry this owner instead of the archive's.
    pub(crate) chown: Option<(u32, u32)>,
}

/// [`apply_layer`] on an open root, optionally with [`CopyRules`].
pub(crate) fn apply_stream(
    root: Root,
    tar_stream: impl Read,
    opts: &ApplyOptions,
    copy: Option<&CopyRules>,
    record_split: bool,
) -> Result<(ApplyStats, Option<Result<TarSplit, String>>), ArchiveError> {
    let dir = root.path().to_path_buf();
    let limits = &opts.limits;
    let stream_limit = limits.max_stream_bytes.unwrap_or(u64::MAX);
    let hashed = DigestReader::new(LimitReader::new(tar_stream, limits.max_stream_bytes));
    let mut reader = TarReader::new(BufReader::with_capacity(BUFFER_SIZE, hashed), limits);
    if record_split && copy.is_none() {
        reader.record_split();
    }
    let mut ex = Extractor {
        root,
        opts,
        copy,
        created: (opts.whiteouts == WhiteoutFormat::Naive && copy.is_none()).then(HashSet::new),
        dirs: Vec::new(),
        dir_index: HashMap::new(),
        entries: 0,
        bytes_written: 0,
        parent: None,
        removals: std::cell::Cell::new(0),
    };
    while let Some(entry) = reader.next()? {
        ex.entries += 1;
        ex.apply(entry, &mut reader)?;
    }
    ex.finish_dirs()?;

    // Drain what follows the end-of-archive marker so the digest covers the whole stream.
    let after_end = reader.position();
    let mut split = reader.take_split();
    let mut inner = reader.into_inner();
    let mut trailing = 0u64;
    loop {
        let n = match inner.fill_buf() {
            Ok([]) => break,
            Ok(b) => {
                if let Some(s) = &mut split {
                    s.raw(b);
                }
                b.len()
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(e, after_end + trailing, stream_limit)),
        };
        inner.consume(n);
        trailing += n as u64;
        if trailing > limits.max_trailing_bytes {
            return Err(ArchiveError::LimitExceeded {
                what: "data after the end-of-archive marker".into(),
                limit: limits.max_trailing_bytes,
            });
        }
    }
    if trailing > 0 {
        tracing::debug!(
            trailing,
            "read trailing bytes after the end of the layer archive"
        );
    }
    let (diff_id, tar_size, _) = inner.into_inner().finish_now();
    tracing::debug!(
        dir = %dir.display(),
        entries = ex.entries,
        bytes = ex.bytes_written,
        %diff_id,
        "layer applied"
    );
    let stats = ApplyStats {
        entries: ex.entries,
        bytes_written: ex.bytes_written,
        diff_id,
        tar_size,
    };
    Ok((stats, split.map(|s| s.finish())))
}

struct Extractor<'a> {
    root: Root,
    opts: &'a ApplyOptions,
    /// Set for `cp` extractions.
    copy: Option<&'a CopyRules>,
    /// Paths this layer created (and their ancestors), for naive whiteouts.
    created: Option<HashSet<Vec<u8>>>,
    dirs: Vec<DeferredDir>,
    dir_index: HashMap<PathBuf, usize>,
    entries: u64,
    bytes_written: u64,
    /// The parent directory of the last entry of a layer, kept for the next entry in the same
    /// directory (most entries of a tar follow their siblings), which then needs no path walk.
    parent: Option<CachedParent>,
    /// How many times something was removed from the tree (see [`Extractor::clear`]).
    removals: std::cell::Cell<u64>,
}

/// A resolved parent directory. Once a path has resolved to a directory, only a removal (of a
/// component, or of a symlink on its way) can make it resolve elsewhere: entries only add
/// names, and replace or whiteout a name by removing it first. So the handle stands for the
/// path as long as nothing was removed since it was resolved.
struct CachedParent {
    path: PathBuf,
    fd: OwnedFd,
    removals: u64,
}

fn errno(e: rustix::io::Errno) -> io::Error {
    e.into()
}

fn timespec(t: Time) -> rfs::Timespec {
    rfs::Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec),
    }
}

/// Times to set: atime is never before mtime (as Docker does).
fn times_of(e: &Entry) -> Timestamps {
    let atime = e.atime.filter(|a| *a >= e.mtime).unwrap_or(e.mtime);
    Timestamps {
        last_access: timespec(atime),
        last_modification: timespec(e.mtime),
    }
}

fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<rfs::Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn file_type(st: &rfs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn is_forged_xattr(key: &[u8]) -> bool {
    key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.")
}

fn write_all_at(fd: BorrowedFd<'_>, mut buf: &[u8], offset: Option<u64>) -> io::Result<()> {
    let mut off = offset;
    while !buf.is_empty() {
        let r = match off {
            Some(o) => rustix::io::pwrite(fd, buf, o),
            None => rustix::io::write(fd, buf),
        };
        match r {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
            Ok(n) => {
                buf = &buf[n..];
                if let Some(o) = off.as_mut() {
                    *o += n as u64;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Extractor<'_> {
    fn apply<R: BufRead>(&mut self, e: Entry, rd: &mut TarReader<R>) -> Result<(), ArchiveError> {
        if e.kind == Kind::Global {
            tracing::debug!(offset = e.offset, "ignoring a PAX global header");
            return Ok(());
        }
        let raw: &[u8] = &e.path;
        let clean = clean_relative(Path::new(OsStr::from_bytes(raw))).map_err(|_| {
            ArchiveError::Breakout {
                entry: EntryName::from(raw),
            }
        })?;
        self.check_name(raw, &clean)?;
        let clean = match self.copy {
            None => clean,
            Some(_) if clean.as_os_str().is_empty() => {
                tracing::debug!(entry = %EntryName::from(raw), "skipping the entry naming the destination");
                return Ok(());
            }
            Some(c) => c.base.join(&clean),
        };
        if let Some((k, _)) = e.xattrs.iter().find(|(k, _)| is_forged_xattr(k)) {
            return Err(invalid(
                raw,
                format!(
                    "overlay xattr {} in the archive is refused",
                    EntryName::from(&k[..])
                ),
            ));
        }
        let comps: Vec<&OsStr> = clean.components().map(|c| c.as_os_str()).collect();
        let Some((&name, parents)) = comps.split_last() else {
            if e.kind == Kind::Dir {
                return self.root_dir(&e);
            }
            return Err(invalid(raw, "entry names the layer root"));
        };
        let parent_rel = clean.parent().unwrap_or(Path::new(""));

        // AUFS metadata (`.wh..wh.plnk/`, `.wh..wh.aufs`, ...) is skipped; the opaque marker is
        // the only `.wh..wh.` name with a meaning.
        let literal = self.copy.is_some();
        let is_meta = |c: &&OsStr| !literal && c.as_bytes().starts_with(b".wh..wh.");
        let is_opaque = !literal && e.kind == Kind::File && name.as_bytes() == b".wh..wh..opq";
        if parents.iter().any(is_meta) || (is_meta(&name) && !is_opaque) {
            tracing::debug!(entry = %EntryName::from(raw), "skipping AUFS metadata entry");
            return Ok(());
        }
        if is_opaque {
            return self.opaque(raw, parent_rel);
        }
        let target_of_whiteout = (e.kind == Kind::File && !literal)
            .then(|| name.as_bytes().strip_prefix(b".wh."))
            .flatten();
        if let Some(split) = rd.split() {
            match target_of_whiteout {
                Some(t) => split.touch(&parent_rel.join(OsStr::from_bytes(t)), false),
                None => split.touch(&clean, e.kind == Kind::Dir),
            }
        }
        if e.kind == Kind::File
            && !literal
            && let Some(target) = name.as_bytes().strip_prefix(b".wh.")
        {
            let target = OsStr::from_bytes(target);
            if !is_plain_name(target) {
                return Err(invalid(raw, "invalid whiteout name"));
            }
            return self.whiteout(raw, parent_rel, target, &e);
        }

        let (parent_fd, resolved_at) = self.take_parent(raw, parent_rel)?;
        let parent = parent_fd.as_fd();
        match e.kind {
            Kind::Dir => self.make_dir(raw, &clean, parent, name, &e)?,
            Kind::File => {
                // Plain content is recorded as a reference to the file; a sparse file's data
                // stays raw (its holes are not in the stream).
                let by_reference = e.sparse.is_none() && e.size > 0;
                if by_reference && let Some(split) = rd.split() {
                    split.begin_file(&clean);
                }
                self.make_file(raw, parent, name, &e, rd)?;
                if by_reference && let Some(split) = rd.split() {
                    split.end_file();
                }
            }
            Kind::Symlink => self.make_symlink(raw, parent, name, &e)?,
            Kind::Hardlink => self.make_hardlink(raw, parent, name, &e)?,
            Kind::Char | Kind::Block | Kind::Fifo => {
                if !self.make_special(raw, parent, name, &e)? {
                    return Ok(());
                }
            }
            Kind::Global => {}
        }
        self.record(&clean);
        if self.copy.is_none() {
            self.parent = Some(CachedParent {
                path: parent_rel.to_path_buf(),
                fd: parent_fd,
                removals: resolved_at,
            });
        }
        Ok(())
    }

    /// The parent directory of an entry: the one kept from the previous entry when it is the
    /// same path and nothing was removed since it was resolved, else resolved (and created)
    /// now. Returns the removal count at which it was resolved.
    fn take_parent(&mut self, raw: &[u8], rel: &Path) -> Result<(OwnedFd, u64), ArchiveError> {
        let removals = self.removals.get();
        if let Some(cached) = self.parent.take()
            && cached.removals == removals
            && cached.path == rel
        {
            return Ok((cached.fd, removals));
        }
        Ok((self.ensure_parent(raw, rel)?, removals))
    }

    /// Length limits and degenerate whiteout components anywhere in the path.
    fn check_name(&self, raw: &[u8], clean: &Path) -> Result<(), ArchiveError> {
        let limits = &self.opts.limits;
        let len = clean.as_os_str().len();
        if len > limits.max_path_len {
            return Err(ArchiveError::LimitExceeded {
                what: format!(
                    "path length of entry {} ({len} bytes)",
                    EntryName::from(raw)
                ),
                limit: limits.max_path_len as u64,
            });
        }
        for c in clean.components() {
            let c = c.as_os_str().as_bytes();
            if c.len() > limits.max_name_len {
                return Err(ArchiveError::LimitExceeded {
                    what: format!(
                        "name component length of entry {} ({} bytes)",
                        EntryName::from(raw),
                        c.len()
                    ),
                    limit: limits.max_name_len as u64,
                });
            }
            if self.copy.is_none() && (c == b".wh." || c == b".wh.." || c == b".wh...") {
                return Err(invalid(raw, "invalid whiteout name"));
            }
        }
        Ok(())
    }

    /// Remember that this layer created `path` (and so its ancestors), for naive whiteouts.
    fn record(&mut self, path: &Path) {
        let Some(set) = self.created.as_mut() else {
            return;
        };
        let mut p = Some(path);
        while let Some(cur) = p {
            if cur.as_os_str().is_empty() || !set.insert(cur.as_os_str().as_bytes().to_vec()) {
                break;
            }
            p = cur.parent();
        }
    }

    fn was_created(&self, path: &Path) -> bool {
        self.created
            .as_ref()
            .is_some_and(|s| s.contains(path.as_os_str().as_bytes()))
    }

    /// Resolve (and create if missing) the parent directory of an entry inside the root.
    fn ensure_parent(&self, raw: &[u8], rel: &Path) -> Result<OwnedFd, ArchiveError> {
        match self.root.open_dir(rel) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(fs_err(raw, "resolve parent directory")(e)),
        }
        self.mkdir_in_root(raw, rel)?;
        self.root
            .open_dir(rel)
            .map_err(fs_err(raw, "resolve parent directory"))
    }

    /// Create `rel` and its missing ancestors inside the root, resolving symlinks (dangling ones
    /// too) the way `openat2(RESOLVE_IN_ROOT)` does: one component at a time relative to a
    /// directory handle, with `..` and absolute targets taken against the *real* path walked so
    /// far and clamped at the root. New directories get mode 0755 whatever the umask.
    ///
    /// (`Root::mkdir_all` resolves relative targets against the lexical path instead, which puts
    /// `inner/go_up/escape/x` with `go_up -> ..`, `escape -> ../victim` at `inner/victim/x` while
    /// the kernel resolves it to `victim/x`; both stay inside the root, but they must agree.)
    fn mkdir_in_root(&self, raw: &[u8], rel: &Path) -> Result<(), ArchiveError> {
        let fail = |op: &'static str| move |e: rustix::io::Errno| fs_err(raw, op)(errno(e));
        let root_dir = || {
            self.root
                .open_dir(Path::new(""))
                .map_err(fs_err(raw, "open layer root"))
        };
        let mut pending: std::collections::VecDeque<std::ffi::OsString> = rel
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        let mut real = PathBuf::new();
        let mut cur = root_dir()?;
        let mut budget = 40;
        while let Some(c) = pending.pop_front() {
            match rfs::statat(&cur, &c, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == FileType::Directory => {
                    cur = rfs::openat(&cur, &c, DIR_NOFOLLOW, Mode::empty())
                        .map_err(fail("open parent directory"))?;
                    real.push(&c);
                }
                Ok(st) if file_type(&st) == FileType::Symlink => {
                    budget -= 1;
                    if budget == 0 {
                        return Err(fs_err(raw, "resolve parent directory")(
                            io::Error::from_raw_os_error(libc::ELOOP),
                        ));
                    }
                    let target = rfs::readlinkat(&cur, &c, Vec::new()).map_err(fail("readlink"))?;
                    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                    let base = Path::new("/").join(if target.is_absolute() {
                        Path::new("")
                    } else {
                        real.as_path()
                    });
                    let joined = carrel_core::fs::clean_absolute(&base.join(target));
                    let mut spliced: std::collections::VecDeque<std::ffi::OsString> = joined
                        .components()
                        .filter(|p| matches!(p, std::path::Component::Normal(_)))
                        .map(|p| p.as_os_str().to_os_string())
                        .collect();
                    spliced.extend(pending.drain(..));
                    pending = spliced;
                    real = PathBuf::new();
                    cur = root_dir()?;
                }
                Ok(_) => {
                    return Err(fs_err(raw, "create parent directory")(
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ));
                }
                Err(rustix::io::Errno::NOENT) => {
                    match rfs::mkdirat(&cur, &c, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(rustix::io::Errno::EXIST) => {
                            // Raced with another creator: look again.
                            budget -= 1;
                            if budget == 0 {
                                return Err(fs_err(raw, "create parent directory")(
                                    io::Error::from_raw_os_error(libc::EEXIST),
                                ));
                            }
                            pending.push_front(c);
                            continue;
                        }
                        Err(e) => return Err(fail("create parent directory")(e)),
                    }
                    let fd = rfs::openat(&cur, &c, DIR_NOFOLLOW, Mode::empty())
                        .map_err(fail("open parent directory"))?;
                    rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(fail("chmod parent directory"))?;
                    cur = fd;
                    real.push(&c);
                }
                Err(e) => return Err(fail("resolve parent directory")(e)),
            }
        }
        Ok(())
    }

    /// Remove whatever is at `name` (a directory recursively), never following it.
    fn clear(&self, raw: &[u8], parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), ArchiveError> {
        self.removals.set(self.removals.get() + 1);
        sys::remove_tree_at(parent, name).map_err(fs_err(raw, "remove existing entry"))
    }

    /// Create something at `name`; when the name is taken, remove what is there (never following
    /// it) and try once more. (Trying first saves a syscall per entry in the common case.)
    fn create_replacing<T>(
        &self,
        raw: &[u8],
        parent: BorrowedFd<'_>,
        name: &OsStr,
        op: &'static str,
        mut create: impl FnMut() -> rustix::io::Result<T>,
    ) -> Result<T, ArchiveError> {
        match create() {
            Err(rustix::io::Errno::EXIST) => {}
            r => return r.map_err(|e| fs_err(raw, op)(errno(e))),
        }
        if self.copy.is_some_and(|c| c.no_overwrite_dir_non_dir)
            && lstat_at(parent, name)
                .map_err(fs_err(raw, "stat"))?
                .is_some_and(|st| file_type(&st) == FileType::Directory)
        {
            return Err(invalid(
                raw,
                "cannot overwrite a directory with a non-directory",
            ));
        }
        self.clear(raw, parent, name)?;
        create().map_err(|e| fs_err(raw, op)(errno(e)))
    }

    /// The owner to give an entry: the copy rules' fixed owner, the archive's, or none.
    fn owner_of(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        match self.copy.and_then(|c| c.chown) {
            Some(owner) => Some(owner),
            None => self.opts.preserve_ownership.then_some((uid, gid)),
        }
    }

    fn chown_fd(&self, raw: &[u8], fd: BorrowedFd<'_>, e: &Entry) -> Result<(), ArchiveError> {
        if let Some((uid, gid)) = self.owner_of(e.uid, e.gid) {
            rfs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|er| fs_err(raw, "chown")(errno(er)))?;
        }
        Ok(())
    }

    fn chown_at(
        &self,
        raw: &[u8],
        parent: BorrowedFd<'_>,
        name: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<(), ArchiveError> {
        if let Some((uid, gid)) = self.owner_of(uid, gid) {
            rfs::chownat(
                parent,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|er| fs_err(raw, "chown")(errno(er)))?;
        }
        Ok(())
    }

    fn set_xattrs(
        &self,
        raw: &[u8],
        target: XattrTarget<'_>,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), ArchiveError> {
        for (k, v) in xattrs {
            match sys::set_xattr(target, k, v) {
                Ok(()) => {}
                Err(err)
                    if matches!(
                        err.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::EPERM)
                    ) =>
                {
                    tracing::warn!(
                        entry = %EntryName::from(raw),
                        xattr = %EntryName::from(&k[..]),
                        error = %err,
                        "xattr not supported here; skipped"
                    );
                }
                Err(err) => return Err(fs_err(raw, "set xattr")(err)),
            }
        }
        Ok(())
    }

    fn defer_dir(&mut self, path: &Path, st: &rfs::Stat, e: &Entry) {
        let d = DeferredDir {
            path: path.to_path_buf(),
            dev: st.st_dev,
            ino: st.st_ino,
            mode: e.mode,
            times: times_of(e),
        };
        match self.dir_index.get(path) {
            Some(&i) => self.dirs[i] = d,
            None => {
                self.dir_index.insert(path.to_path_buf(), self.dirs.len());
                self.dirs.push(d);
            }
        }
    }

    /// A directory entry naming the root itself (`./`): its owner, xattrs, mode and times apply
    /// to the root.
    fn root_dir(&mut self, e: &Entry) -> Result<(), ArchiveError> {
        let raw = &e.path[..];
        let fd = self
            .root
            .open_at(
                Path::new(""),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .map_err(fs_err(raw, "open layer root"))?;
        self.chown_fd(raw, fd.as_fd(), e)?;
        self.set_xattrs(raw, XattrTarget::Fd(fd.as_fd()), &e.xattrs)?;
        let st = rfs::fstat(&fd).map_err(|er| fs_err(raw, "stat")(errno(er)))?;
        self.defer_dir(Path::new(""), &st, e);
        Ok(())
    }

    fn make_dir(
        &mut self,
        raw: &[u8],
        clean: &Path,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
    ) -> Result<(), ArchiveError> {
        let mkdir = || rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700));
        let existing = match mkdir() {
            Ok(()) => None,
            Err(rustix::io::Errno::EXIST) => {
                let st = lstat_at(parent, name).map_err(fs_err(raw, "stat"))?;
                if !st
                    .as_ref()
                    .is_some_and(|st| file_type(st) == FileType::Directory)
                {
                    if st.is_some() && self.copy.is_some_and(|c| c.no_overwrite_dir_non_dir) {
                        return Err(invalid(
                            raw,
                            "cannot overwrite a non-directory with a directory",
                        ));
                    }
                    self.clear(raw, parent, name)?;
                    mkdir().map_err(|er| fs_err(raw, "mkdir")(errno(er)))?;
                }
                st
            }
            Err(er) => return Err(fs_err(raw, "mkdir")(errno(er))),
        };
        let fd = rfs::openat(parent, name, DIR_NOFOLLOW, Mode::empty())
            .map_err(|er| fs_err(raw, "open directory")(errno(er)))?;
        self.chown_fd(raw, fd.as_fd(), e)?;
        self.set_xattrs(raw, XattrTarget::Fd(fd.as_fd()), &e.xattrs)?;
        // `.wh.x` then `x/` in one layer: the new directory replaces the lower one, so in an
        // overlay upper dir it must hide the lower contents (opaque), as a naive apply does.
        if self.opts.whiteouts == WhiteoutFormat::Overlay
            && existing
                .as_ref()
                .is_some_and(|st| file_type(st) == FileType::CharacterDevice && st.st_rdev == 0)
        {
            sys::set_xattr(XattrTarget::Fd(fd.as_fd()), b"trusted.overlay.opaque", b"y")
                .map_err(fs_err(raw, "set opaque xattr"))?;
        }
        let st = rfs::fstat(&fd).map_err(|er| fs_err(raw, "stat")(errno(er)))?;
        self.defer_dir(clean, &st, e);
        Ok(())
    }

    fn make_file<R: BufRead>(
        &mut self,
        raw: &[u8],
        parent: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
        rd: &mut TarReader<R>,
    ) -> Result<(), ArchiveError> {
        let fd = self.create_replacing(raw, parent, name, "create file", || {
            rfs::openat(
                parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let regions: Vec<(Option<u64>, u64)> = match &e.sparse {
            Some(regions) => regions.iter().map(|r| (Some(r.offset), r.len)).collect(),
            None => vec![(None, u64::MAX)],
        };
        for (offset, len) in regions {
            let mut off = offset;
            let mut left = len;
            while left > 0 {
                let chunk = rd.data()?;
                if chunk.is_empty() {
                    break;
                }
                let n = (chunk.len() as u64).min(left) as usize;
                let total = self.bytes_written + n as u64;
                if let Some(max) = self.opts.limits.max_bytes_written
                    && total > max
                {
                    return Err(ArchiveError::LimitExceeded {
                        what: format!("bytes written (at entry {})", EntryName::from(raw)),
                        limit: max,
                    });
                }
                write_all_at(fd.as_fd(), &chunk[..n], off).map_err(fs_err(raw, "write"))?;
                rd.consume(n);
                self.bytes_written = total;
                left -= n as u64;
                if let Some(o) = off.as_mut() {
                    *o += n as u64;
                }
            }
        }
        if e.sparse.is_some() {
            rfs::ftruncate(&fd, e.size).map_err(|er| fs_err(raw, "truncate")(errno(er)))?;
        }
        // chown clears setuid/setgid and file capabilities, so it comes first.
        self.chown_fd(raw, fd.as_fd(), e)?;
        self.set_xattrs(raw, XattrTarget::Fd(fd.as_fd()), &e.xattrs)?;
        rfs::fchmod(&fd, Mode::from_raw_mode(e.mode))
            .map_err(|er| fs_err(raw, "chmod")(errno(er)))?;
        rfs::futimens(&fd, &times_of(e)).map_err(|er| fs_err(raw, "set times")(errno(er)))?;
        Ok(())
    }

    fn make_symlink(
        &mut self,
        raw: &[u8],
        parent: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
    ) -> Result<(), ArchiveError> {
        if e.link.len() > self.opts.limits.max_path_len {
            return Err(ArchiveError::LimitExceeded {
                what: format!(
                    "symlink target length of entry {} ({} bytes)",
                    EntryName::from(raw),
                    e.link.len()
                ),
                limit: self.opts.limits.max_path_len as u64,
            });
        }
        // The target is content: it may point anywhere, it is only ever resolved in a root.
        self.create_replacing(raw, parent, name, "symlink", || {
            rfs::symlinkat(OsStr::from_bytes(&e.link), parent, name)
        })?;
        self.chown_at(raw, parent, name, e.uid, e.gid)?;
        self.set_xattrs(raw, XattrTarget::At(parent, name), &e.xattrs)?;
        rfs::utimensat(parent, name, &times_of(e), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|er| fs_err(raw, "set times")(errno(er)))?;
        Ok(())
    }

    fn make_hardlink(
        &mut self,
        raw: &[u8],
        parent: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
    ) -> Result<(), ArchiveError> {
        let breakout = || ArchiveError::LinkBreakout {
            entry: EntryName::from(raw),
            target: EntryName::from(&e.link[..]),
        };
        let target =
            clean_relative(Path::new(OsStr::from_bytes(&e.link))).map_err(|_| breakout())?;
        // `cp`: link targets are relative to the destination, like the entry names.
        let target = match self.copy {
            Some(c) if !target.as_os_str().is_empty() => c.base.join(&target),
            _ => target,
        };
        if target.as_os_str().len() > self.opts.limits.max_path_len {
            return Err(ArchiveError::LimitExceeded {
                what: format!("hardlink target length of entry {}", EntryName::from(raw)),
                limit: self.opts.limits.max_path_len as u64,
            });
        }
        let missing = || {
            invalid(
                raw,
                format!(
                    "hardlink target {} does not exist in the layer",
                    EntryName::from(&e.link[..])
                ),
            )
        };
        let Some(tname) = target.file_name() else {
            return Err(invalid(raw, "hardlink to the layer root"));
        };
        // The target's parent is resolved inside the root; its last component is not followed,
        // so a hardlink to a symlink links the symlink itself.
        let tparent = match self.root.open_dir(target.parent().unwrap_or(Path::new(""))) {
            Ok(fd) => fd,
            Err(er) if matches!(er.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Err(missing());
            }
            Err(er) => return Err(fs_err(raw, "resolve hardlink target")(er)),
        };
        let tst = lstat_at(tparent.as_fd(), tname)
            .map_err(fs_err(raw, "stat hardlink target"))?
            .ok_or_else(missing)?;
        if file_type(&tst) == FileType::Directory {
            return Err(invalid(raw, "hardlink to a directory is refused"));
        }
        if let Some(st) = lstat_at(parent, name).map_err(fs_err(raw, "stat"))?
            && st.st_dev == tst.st_dev
            && st.st_ino == tst.st_ino
        {
            return Ok(());
        }
        self.create_replacing(raw, parent, name, "hardlink", || {
            rfs::linkat(tparent.as_fd(), tname, parent, name, AtFlags::empty())
        })?;
        // Metadata belongs to the shared inode and came with the target's own entry.
        Ok(())
    }

    /// Devices and fifos. Returns false when the entry was skipped.
    fn make_special(
        &mut self,
        raw: &[u8],
        parent: BorrowedFd<'_>,
        name: &OsStr,
        e: &Entry,
    ) -> Result<bool, ArchiveError> {
        let ft = match e.kind {
            Kind::Char => FileType::CharacterDevice,
            Kind::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        let mut dev = 0;
        if e.kind != Kind::Fifo {
            // Linux device numbers: 12-bit major, 20-bit minor. Checked before any syscall.
            if e.dev_major > 0xfff || e.dev_minor > 0xf_ffff {
                return Err(invalid(
                    raw,
                    format!("device number {}:{} out of range", e.dev_major, e.dev_minor),
                ));
            }
            if !self.opts.create_devices {
                tracing::debug!(entry = %EntryName::from(raw), "skipping device node");
                return Ok(false);
            }
            dev = rfs::makedev(e.dev_major, e.dev_minor);
        }
        self.create_replacing(raw, parent, name, "mknod", || {
            rfs::mknodat(parent, name, ft, Mode::from_raw_mode(e.mode & 0o777), dev)
        })?;
        self.chown_at(raw, parent, name, e.uid, e.gid)?;
        self.set_xattrs(raw, XattrTarget::At(parent, name), &e.xattrs)?;
        sys::lchmod_at(parent, name, e.mode).map_err(fs_err(raw, "chmod"))?;
        rfs::utimensat(parent, name, &times_of(e), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|er| fs_err(raw, "set times")(errno(er)))?;
        Ok(true)
    }

    fn whiteout(
        &mut self,
        raw: &[u8],
        parent_rel: &Path,
        target: &OsStr,
        e: &Entry,
    ) -> Result<(), ArchiveError> {
        match self.opts.whiteouts {
            WhiteoutFormat::Overlay => {
                let parent = self.ensure_parent(raw, parent_rel)?;
                match lstat_at(parent.as_fd(), target).map_err(fs_err(raw, "stat"))? {
                    Some(st) if file_type(&st) == FileType::CharacterDevice && st.st_rdev == 0 => {}
                    Some(_) => {
                        // The upper dir only holds this layer: whiteouts never hide same-layer
                        // content.
                        tracing::debug!(entry = %EntryName::from(raw), "whiteout of same-layer content ignored");
                        return Ok(());
                    }
                    None => {
                        rfs::mknodat(
                            parent.as_fd(),
                            target,
                            FileType::CharacterDevice,
                            Mode::empty(),
                            0,
                        )
                        .map_err(|er| fs_err(raw, "mknod whiteout")(errno(er)))?;
                    }
                }
                self.chown_at(raw, parent.as_fd(), target, e.uid, e.gid)?;
                rfs::utimensat(
                    parent.as_fd(),
                    target,
                    &times_of(e),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|er| fs_err(raw, "set times")(errno(er)))?;
            }
            WhiteoutFormat::Naive => {
                if self.was_created(&parent_rel.join(target)) {
                    tracing::debug!(entry = %EntryName::from(raw), "whiteout of same-layer content ignored");
                    return Ok(());
                }
                let parent = match self.root.open_dir(parent_rel) {
                    Ok(fd) => fd,
                    Err(er)
                        if matches!(
                            er.raw_os_error(),
                            Some(libc::ENOENT) | Some(libc::ENOTDIR)
                        ) =>
                    {
                        return Ok(());
                    }
                    Err(er) => return Err(fs_err(raw, "resolve whiteout directory")(er)),
                };
                self.clear(raw, parent.as_fd(), target)?;
            }
        }
        Ok(())
    }

    fn opaque(&mut self, raw: &[u8], dir_rel: &Path) -> Result<(), ArchiveError> {
        if !dir_rel.as_os_str().is_empty() {
            self.ensure_parent(raw, dir_rel)?;
        }
        let dir = self
            .root
            .open_at(dir_rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(fs_err(raw, "open opaque directory"))?;
        match self.opts.whiteouts {
            WhiteoutFormat::Overlay => {
                sys::set_xattr(
                    XattrTarget::Fd(dir.as_fd()),
                    b"trusted.overlay.opaque",
                    b"y",
                )
                .map_err(fs_err(raw, "set opaque xattr"))?;
            }
            WhiteoutFormat::Naive => {
                // Remove what lower layers put below the directory; keep (and descend into) what
                // this layer created.
                let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(dir, dir_rel.to_path_buf())];
                while let Some((fd, rel)) = stack.pop() {
                    let names =
                        sys::read_names(fd.as_fd()).map_err(fs_err(raw, "read directory"))?;
                    for child in names {
                        let child_rel = rel.join(&child);
                        if !self.was_created(&child_rel) {
                            self.clear(raw, fd.as_fd(), &child)?;
                            continue;
                        }
                        match rfs::openat(fd.as_fd(), &child, DIR_NOFOLLOW, Mode::empty()) {
                            Ok(cfd) => stack.push((cfd, child_rel)),
                            Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {}
                            Err(er) => return Err(fs_err(raw, "open directory")(errno(er))),
                        }
                    }
                }
            }
        }
        self.record(dir_rel);
        Ok(())
    }

    /// Apply deferred directory modes and times, children first. Each directory is re-resolved
    /// by path and must still be the inode that was created; otherwise it is left alone.
    fn finish_dirs(&mut self) -> Result<(), ArchiveError> {
        for d in self.dirs.iter().rev() {
            let raw = d.path.as_os_str().as_bytes();
            let fd = if d.path.as_os_str().is_empty() {
                self.root
                    .open_at(
                        Path::new(""),
                        OFlags::RDONLY | OFlags::DIRECTORY,
                        Mode::empty(),
                    )
                    .ok()
            } else {
                match self.root.open_parent(&d.path) {
                    Ok((parent, name)) => {
                        rfs::openat(&parent, &name, DIR_NOFOLLOW, Mode::empty()).ok()
                    }
                    Err(_) => None,
                }
            };
            let Some(fd) = fd else { continue };
            let st = rfs::fstat(&fd).map_err(|er| fs_err(raw, "stat")(errno(er)))?;
            if st.st_dev != d.dev || st.st_ino != d.ino {
                continue;
            }
            rfs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(|er| fs_err(raw, "chmod")(errno(er)))?;
            rfs::futimens(&fd, &d.times).map_err(|er| fs_err(raw, "set times")(errno(er)))?;
        }
        Ok(())
    }
}
