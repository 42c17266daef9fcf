//! Tar-split: a layer tar as the bytes that are not file content plus references to the files
//! of the extracted layer, so that the exact tar (same bytes, same diffID) can be given back
//! without keeping a second copy of the layer's content.
//!
//! [`apply_layer_split`](crate::apply::apply_layer_split) records it while it extracts: every
//! byte of the stream is either *raw* (headers, extension headers, padding, the end-of-archive
//! blocks and whatever follows them, and the data of entries whose content is not kept as a
//! plain file: sparse files, skipped entries) or the content of a regular file, which is
//! recorded as its path and length. [`TarSplit::reassemble`] streams the tar back, reading each
//! file's content from the layer directory through a [`Root`] (so a path can never lead
//! outside it, whatever the layer holds). The caller checks the reassembled stream's digest
//! against the layer's diffID, as for any stored layer.
//!
//! A layer where a later entry replaces or removes a file whose content was recorded (the same
//! path twice, a whiteout of it, a non-directory where one of its parents was) cannot be
//! reassembled from the directory; the recording then reports why, and the caller keeps the tar
//! itself instead.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use carrel_core::fs::Root;
use rustix::fs::OFlags;

/// Raw bytes beyond this make a recording give up (the caller keeps the tar instead): a layer
/// made mostly of entries whose content is not kept as files gains nothing from a split.
pub const MAX_RAW_BYTES: u64 = 64 << 20;

const MAGIC: &[u8] = b"carrel-tar-split/1\n";
const TAG_END: u8 = 0;
const TAG_RAW: u8 = 1;
const TAG_FILE: u8 = 2;

/// One run of the tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Bytes as they were.
    Raw(Vec<u8>),
    /// The first `len` bytes of the file at `path` (relative to the layer directory).
    File { path: Vec<u8>, len: u64 },
}

/// A layer tar without its file content (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TarSplit {
    segments: Vec<Segment>,
}

impl TarSplit {
    /// Total size of the tar it stands for.
    pub fn tar_size(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Raw(b) => b.len() as u64,
                Segment::File { len, .. } => *len,
            })
            .sum()
    }

    /// Bytes kept as they were (headers, padding...).
    pub fn raw_size(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Raw(b) => b.len() as u64,
                Segment::File { .. } => 0,
            })
            .sum()
    }

    /// Serialize (zstd-compressed) for storage.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut enc = zstd::Encoder::new(Vec::new(), 3)?;
        enc.write_all(MAGIC)?;
        for s in &self.segments {
            match s {
                Segment::Raw(b) => {
                    enc.write_all(&[TAG_RAW])?;
                    enc.write_all(&(b.len() as u64).to_le_bytes())?;
                    enc.write_all(b)?;
                }
                Segment::File { path, len } => {
                    enc.write_all(&[TAG_FILE])?;
                    enc.write_all(&(path.len() as u32).to_le_bytes())?;
                    enc.write_all(path)?;
                    enc.write_all(&len.to_le_bytes())?;
                }
            }
        }
        enc.write_all(&[TAG_END])?;
        enc.finish()
    }

    /// Parse what [`TarSplit::to_bytes`] wrote. Anything else is an `InvalidData` error.
    pub fn from_bytes(data: &[u8]) -> io::Result<TarSplit> {
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("tar-split: {what}"));
        let mut r = zstd::Decoder::new(data)?;
        let mut magic = vec![0u8; MAGIC.len()];
        r.read_exact(&mut magic).map_err(|_| bad("too short"))?;
        if magic != MAGIC {
            return Err(bad("not a carrel tar-split"));
        }
        let mut segments = Vec::new();
        loop {
            let mut tag = [0u8; 1];
            r.read_exact(&mut tag).map_err(|_| bad("truncated"))?;
            match tag[0] {
                TAG_END => break,
                TAG_RAW => {
                    let len = read_u64(&mut r).map_err(|_| bad("truncated"))?;
                    if len > MAX_RAW_BYTES {
                        return Err(bad("raw run too long"));
                    }
                    let mut b = vec![0u8; len as usize];
                    r.read_exact(&mut b).map_err(|_| bad("truncated"))?;
                    segments.push(Segment::Raw(b));
                }
                TAG_FILE => {
                    let mut n = [0u8; 4];
                    r.read_exact(&mut n).map_err(|_| bad("truncated"))?;
                    let n = u32::from_le_bytes(n) as usize;
                    if n > 64 * 1024 {
                        return Err(bad("path too long"));
                    }
                    let mut path = vec![0u8; n];
                    r.read_exact(&mut path).map_err(|_| bad("truncated"))?;
                    let len = read_u64(&mut r).map_err(|_| bad("truncated"))?;
                    segments.push(Segment::File { path, len });
                }
                _ => return Err(bad("unknown record")),
            }
        }
        Ok(TarSplit { segments })
    }

    /// The tar again: raw runs as they were, file content read from the layer directory
    /// `root` (resolved inside it, never following a symlink in the last component). A file
    /// shorter than recorded is an `UnexpectedEof` error naming it.
    pub fn reassemble(self, root: Root) -> Reassembled {
        Reassembled {
            segments: self.segments.into_iter(),
            root,
            current: None,
        }
    }

    /// Check that every recorded file is in `root` as a regular file of at least its recorded
    /// length (the recording cannot see what happens to a file after its entry, e.g. through a
    /// symlink replaced later).
    pub fn verify(&self, root: &Root) -> io::Result<()> {
        for s in &self.segments {
            if let Segment::File { path, len } = s {
                let f = open_in(root, path)?;
                let meta = f.metadata()?;
                if !meta.is_file() || meta.len() < *len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is not the file of {len} bytes the layer tar held",
                            Path::new(OsStr::from_bytes(path)).display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn open_in(root: &Root, path: &[u8]) -> io::Result<File> {
    let fd = root.open_nofollow(Path::new(OsStr::from_bytes(path)), OFlags::RDONLY)?;
    Ok(File::from(fd))
}

enum Current {
    Raw(Vec<u8>, usize),
    File(io::Take<File>, Vec<u8>, u64),
}

/// A reassembled tar stream (see [`TarSplit::reassemble`]).
pub struct Reassembled {
    segments: std::vec::IntoIter<Segment>,
    root: Root,
    current: Option<Current>,
}

impl Read for Reassembled {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.current {
                None => match self.segments.next() {
                    None => return Ok(0),
                    Some(Segment::Raw(b)) => self.current = Some(Current::Raw(b, 0)),
                    Some(Segment::File { path, len }) => {
                        let f = open_in(&self.root, &path)?;
                        self.current = Some(Current::File(f.take(len), path, len));
                    }
                },
                Some(Current::Raw(b, at)) => {
                    if *at == b.len() {
                        self.current = None;
                        continue;
                    }
                    let n = (b.len() - *at).min(buf.len());
                    buf[..n].copy_from_slice(&b[*at..*at + n]);
                    *at += n;
                    return Ok(n);
                }
                Some(Current::File(f, path, len)) => {
                    let n = f.read(buf)?;
                    if n > 0 {
                        return Ok(n);
                    }
                    if f.limit() > 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "{} is shorter than the {len} bytes the layer tar held",
                                Path::new(OsStr::from_bytes(path)).display()
                            ),
                        ));
                    }
                    self.current = None;
                }
            }
        }
    }
}

/// Records a [`TarSplit`] while a layer is extracted (used by the tar reader and the
/// extractor).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    segments: Vec<Segment>,
    raw: Vec<u8>,
    raw_total: u64,
    /// The file whose content is being read, and how much of it so far.
    file: Option<(Vec<u8>, u64)>,
    /// Paths whose content is recorded, and every directory above them.
    files: HashSet<PathBuf>,
    parents: HashSet<PathBuf>,
    broken: Option<String>,
}

impl Recorder {
    /// Bytes of the stream that are not file content.
    pub(crate) fn raw(&mut self, b: &[u8]) {
        if self.broken.is_some() || b.is_empty() {
            return;
        }
        self.close_file();
        self.raw_total += b.len() as u64;
        if self.raw_total > MAX_RAW_BYTES {
            self.give_up(format!(
                "more than {MAX_RAW_BYTES} bytes are not file content"
            ));
            return;
        }
        self.raw.extend_from_slice(b);
    }

    /// `n` bytes of the content of the file being read (or raw bytes when none is).
    pub(crate) fn content(&mut self, b: &[u8]) {
        if self.broken.is_some() {
            return;
        }
        match &mut self.file {
            Some((_, len)) => *len += b.len() as u64,
            None => self.raw(b),
        }
    }

    /// The content read from now on is that of the regular file at `path` (relative to the
    /// layer directory), until [`Recorder::end_file`].
    pub(crate) fn begin_file(&mut self, path: &Path) {
        if self.broken.is_some() {
            return;
        }
        self.close_file();
        self.flush_raw();
        self.file = Some((path.as_os_str().as_bytes().to_vec(), 0));
        self.files.insert(path.to_path_buf());
        let mut p = path.parent();
        while let Some(dir) = p {
            if dir.as_os_str().is_empty() || !self.parents.insert(dir.to_path_buf()) {
                break;
            }
            p = dir.parent();
        }
    }

    /// The file's content is read (what follows is raw again).
    pub(crate) fn end_file(&mut self) {
        self.close_file();
    }

    /// An entry is about to change `path` (create, replace or remove it); `dir` when it makes
    /// a directory (which keeps what is in a directory that is there already).
    pub(crate) fn touch(&mut self, path: &Path, dir: bool) {
        if self.broken.is_some() {
            return;
        }
        if self.files.contains(path) {
            self.give_up(format!("{} is written twice", path.display()));
        } else if !dir && self.parents.contains(path) {
            self.give_up(format!("{} replaces a directory", path.display()));
        }
    }

    /// Stop recording: the layer cannot be reassembled from its directory.
    pub(crate) fn give_up(&mut self, why: String) {
        if self.broken.is_none() {
            tracing::debug!(why, "layer tar kept whole: no tar-split");
            self.broken = Some(why);
            self.segments = Vec::new();
            self.raw = Vec::new();
            self.files = HashSet::new();
            self.parents = HashSet::new();
            self.file = None;
        }
    }

    fn close_file(&mut self) {
        if let Some((path, len)) = self.file.take()
            && len > 0
        {
            self.segments.push(Segment::File { path, len });
        }
    }

    fn flush_raw(&mut self) {
        if !self.raw.is_empty() {
            self.segments
                .push(Segment::Raw(std::mem::take(&mut self.raw)));
        }
    }

    /// The recording, or why there is none.
    pub(crate) fn finish(mut self) -> Result<TarSplit, String> {
        if let Some(why) = self.broken {
            return Err(why);
        }
        self.close_file();
        self.flush_raw();
        Ok(TarSplit {
            segments: self.segments,
        })
    }
}
