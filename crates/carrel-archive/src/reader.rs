//! A strict, bounded, streaming tar reader.
//!
//! The `tar` crate provides the header layout; the framing (extension headers, sparse maps, end of
//! archive) is done here so that every allocation is bounded before it is made, sparse maps are
//! available to the extractor (holes are never written), and the rules follow Go's `archive/tar`
//! (what Docker and containerd use) for valid input while refusing ambiguous input:
//!
//! - numbers: octal (NUL/space padded) or base-256; anything else is an error;
//! - the header checksum must match (signed or unsigned sum);
//! - header-only types (links, devices, dirs, fifos) carry no data whatever their size field says;
//! - a PAX `x` header applies to the next *entry* (not to a GNU `L`/`K` header); two PAX headers,
//!   two long names, or a PAX `path` together with a GNU long name are refused;
//! - PAX records are parsed strictly (length, `=`, newline, no NUL in keys or path values);
//!   repeated keys are refused (except the GNU sparse 0.0 `offset`/`numbytes` pairs);
//! - global `g` headers are validated and returned as [`Kind::Global`] so the caller ignores them;
//! - GNU old sparse (`S`) and PAX GNU sparse 0.0, 0.1 and 1.0 are decoded into region lists;
//! - the archive ends at a zero block (a second block, if present, must be zero too); a stream that
//!   ends elsewhere, or without the marker after some entries, is truncated.

use std::collections::HashSet;
use std::io::{self, BufRead};

use crate::compression::StreamLimit;
use crate::split::Recorder;
use crate::{ArchiveError, Limits};

/// Size of a tar block.
pub(crate) const BLOCK: u64 = 512;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// A PAX global header: validated, creates nothing.
    Global,
}

/// A point in time as a tar archive states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub(crate) struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// One data region of a sparse file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub offset: u64,
    pub len: u64,
}

/// One logical archive entry, with all extension headers applied.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub kind: Kind,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Time,
    pub atime: Option<Time>,
    /// Logical size of a regular file (the real size of a sparse file).
    pub size: u64,
    /// Data regions when the file is sparse; their lengths add up to the data in the archive.
    pub sparse: Option<Vec<Region>>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Offset of the entry's first header in the stream.
    pub offset: u64,
}

/// The reader. `R` is the (buffered) uncompressed stream.
pub(crate) struct TarReader<R> {
    r: R,
    pos: u64,
    remaining: u64,
    padding: u64,
    entries: u64,
    ended: bool,
    max_entries: u64,
    max_header_bytes: u64,
    max_sparse_regions: u64,
    stream_limit: u64,
    /// Records a tar-split of the stream, when asked.
    split: Option<Recorder>,
}

/// Result of trying to read one block.
enum Block {
    Full,
    Eof,
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Bytes up to the first NUL.
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&x| x == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// Parse a numeric header field like Go's `archive/tar`: base-256 when the high bit is set,
/// otherwise octal padded with spaces or NULs (an empty field is 0).
pub(crate) fn parse_numeric(b: &[u8]) -> Option<i64> {
    if let Some(&first) = b.first()
        && first & 0x80 != 0
    {
        let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in b.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 > 0 {
                return None;
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 > 0 {
            return None;
        }
        let x = x as i64;
        return Some(if inv == 0xff { !x } else { x });
    }
    let trimmed = {
        let start = b.iter().position(|&c| c != b' ' && c != 0);
        match start {
            None => return Some(0),
            Some(s) => {
                let end = b.iter().rposition(|&c| c != b' ' && c != 0).unwrap_or(s);
                &b[s..=end]
            }
        }
    };
    let digits = cstr(trimmed);
    if digits.is_empty() || !digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    let mut x: u64 = 0;
    for &c in digits {
        x = x.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
    }
    i64::try_from(x).ok()
}

/// Parse a non-negative decimal number (PAX values, sparse maps).
fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut x: u64 = 0;
    for &c in b {
        x = x.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(x)
}

/// Parse a PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(b: &[u8]) -> Option<Time> {
    let (neg, b) = match b.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, b),
    };
    let (secs, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let secs = i64::try_from(parse_decimal(secs)?).ok()?;
    let mut nsec: u32 = 0;
    if let Some(frac) = frac {
        if !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..9 {
            nsec = nsec * 10 + frac.get(i).map_or(0, |c| u32::from(c - b'0'));
        }
    }
    if !neg {
        return Some(Time { sec: secs, nsec });
    }
    // -1.25 is 1.25 seconds before the epoch: sec -2, nsec 0.75e9.
    if nsec == 0 {
        Some(Time {
            sec: -secs,
            nsec: 0,
        })
    } else {
        Some(Time {
            sec: -secs - 1,
            nsec: 1_000_000_000 - nsec,
        })
    }
}

/// The PAX records that matter, parsed strictly.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    size: Option<u64>,
    mtime: Option<Time>,
    atime: Option<Time>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse_major: Option<Vec<u8>>,
    sparse_minor: Option<Vec<u8>>,
    sparse_name: Option<Vec<u8>>,
    sparse_size: Option<Vec<u8>>,
    sparse_realsize: Option<Vec<u8>>,
    sparse_numblocks: Option<Vec<u8>>,
    sparse_map: Option<Vec<u8>>,
    /// GNU sparse 0.0: alternating offset / numbytes values.
    sparse_pairs: Vec<Vec<u8>>,
}

const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

fn parse_pax(data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or("PAX record without a length")?;
        let n = parse_decimal(&rest[..sp]).ok_or("PAX record with a malformed length")?;
        let n = usize::try_from(n).map_err(|_| "PAX record length overflows")?;
        if n < 5 || n > rest.len() || n <= sp + 1 {
            return Err("PAX record length out of range".into());
        }
        let rec = &rest[sp + 1..n];
        if rec.last() != Some(&b'\n') {
            return Err("PAX record not terminated by a newline".into());
        }
        let rec = &rec[..rec.len() - 1];
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or("PAX record without '='")?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err("PAX record with an empty or NUL-containing key".into());
        }
        rest = &rest[n..];
        let is_pair = key == b"GNU.sparse.offset" || key == b"GNU.sparse.numbytes";
        if !is_pair && !seen.insert(key) {
            return Err(format!(
                "PAX record {:?} repeated",
                String::from_utf8_lossy(key)
            ));
        }
        let num = |v: &[u8]| {
            parse_decimal(v).ok_or_else(|| {
                format!(
                    "PAX record {:?} is not a number",
                    String::from_utf8_lossy(key)
                )
            })
        };
        let time = |v: &[u8]| {
            parse_pax_time(v).ok_or_else(|| {
                format!(
                    "PAX record {:?} is not a time",
                    String::from_utf8_lossy(key)
                )
            })
        };
        match key {
            b"path" | b"linkpath" | b"uname" | b"gname" if value.contains(&0) => {
                return Err("PAX path or name record contains NUL".into());
            }
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"uid" => pax.uid = Some(num(value)?),
            b"gid" => pax.gid = Some(num(value)?),
            b"size" => pax.size = Some(num(value)?),
            b"mtime" => pax.mtime = Some(time(value)?),
            b"atime" => pax.atime = Some(time(value)?),
            b"ctime" => {
                time(value)?;
            }
            b"GNU.sparse.major" => pax.sparse_major = Some(value.to_vec()),
            b"GNU.sparse.minor" => pax.sparse_minor = Some(value.to_vec()),
            b"GNU.sparse.name" => pax.sparse_name = Some(value.to_vec()),
            b"GNU.sparse.size" => pax.sparse_size = Some(value.to_vec()),
            b"GNU.sparse.realsize" => pax.sparse_realsize = Some(value.to_vec()),
            b"GNU.sparse.numblocks" => pax.sparse_numblocks = Some(value.to_vec()),
            b"GNU.sparse.map" => pax.sparse_map = Some(value.to_vec()),
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                let want_offset = pax.sparse_pairs.len() % 2 == 0;
                if want_offset != (key == b"GNU.sparse.offset") || value.contains(&b',') {
                    return Err("GNU sparse 0.0 records out of order".into());
                }
                pax.sparse_pairs.push(value.to_vec());
            }
            _ => {
                if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                    if name.is_empty() {
                        return Err("PAX xattr record with an empty name".into());
                    }
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                }
                // Other records (uname, gname, comment, charset, vendor keys) change nothing.
            }
        }
    }
    if !pax.sparse_pairs.is_empty() {
        if pax.sparse_map.is_some() || pax.sparse_pairs.len() % 2 != 0 {
            return Err("inconsistent GNU sparse 0.0 records".into());
        }
        pax.sparse_map = Some(pax.sparse_pairs.join(&b','));
    }
    Ok(pax)
}

/// Check that sparse regions are in order, do not overlap and stay inside `size`.
fn validate_regions(regions: &[Region], size: u64) -> bool {
    let mut end = 0u64;
    for r in regions {
        let Some(r_end) = r.offset.checked_add(r.len) else {
            return false;
        };
        if r.offset < end || r_end > size || r_end > i64::MAX as u64 {
            return false;
        }
        end = r_end;
    }
    true
}

impl<R: BufRead> TarReader<R> {
    pub(crate) fn new(r: R, limits: &Limits) -> Self {
        TarReader {
            r,
            pos: 0,
            remaining: 0,
            padding: 0,
            entries: 0,
            ended: false,
            max_entries: limits.max_entries,
            max_header_bytes: limits.max_header_bytes,
            max_sparse_regions: limits.max_sparse_regions,
            stream_limit: limits.max_stream_bytes.unwrap_or(u64::MAX),
            split: None,
        }
    }

    /// Record a tar-split of everything read from now on.
    pub(crate) fn record_split(&mut self) {
        self.split = Some(Recorder::default());
    }

    /// The tar-split recorder, when recording.
    pub(crate) fn split(&mut self) -> Option<&mut Recorder> {
        self.split.as_mut()
    }

    /// Stop recording and hand the recorder over.
    pub(crate) fn take_split(&mut self) -> Option<Recorder> {
        self.split.take()
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// The underlying stream (positioned after the end-of-archive marker once `next` returned
    /// `None`).
    pub(crate) fn into_inner(self) -> R {
        self.r
    }

    /// Turn an error of the underlying stream into an archive error.
    pub(crate) fn read_error(&self, e: io::Error) -> ArchiveError {
        stream_error(e, self.pos, self.stream_limit)
    }

    fn invalid(&self, offset: u64, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::InvalidArchive {
            offset,
            reason: reason.into(),
        }
    }

    fn truncated(&self, reason: &'static str) -> ArchiveError {
        ArchiveError::Truncated {
            offset: self.pos,
            reason,
        }
    }

    /// Read one block; a partial block is truncation.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<Block, ArchiveError> {
        let mut got = 0;
        while got < buf.len() {
            let avail = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            if avail.is_empty() {
                if got == 0 {
                    return Ok(Block::Eof);
                }
                return Err(self.truncated("inside a header block"));
            }
            let n = avail.len().min(buf.len() - got);
            buf[got..got + n].copy_from_slice(&avail[..n]);
            if let Some(s) = &mut self.split {
                s.raw(&avail[..n]);
            }
            self.r.consume(n);
            self.pos += n as u64;
            got += n;
        }
        Ok(Block::Full)
    }

    /// Skip `n` bytes; EOF before that is truncation.
    fn skip(&mut self, mut n: u64) -> Result<(), ArchiveError> {
        while n > 0 {
            let avail = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            if avail.is_empty() {
                return Err(self.truncated("inside an entry's data"));
            }
            let take = (avail.len() as u64).min(n) as usize;
            if let Some(s) = &mut self.split {
                s.raw(&avail[..take]);
            }
            self.r.consume(take);
            self.pos += take as u64;
            n -= take as u64;
        }
        Ok(())
    }

    /// Read exactly `n` bytes (already bounded by the caller).
    fn read_exact_vec(&mut self, n: u64) -> Result<Vec<u8>, ArchiveError> {
        let mut out = vec![0u8; n as usize];
        let mut got = 0;
        while got < out.len() {
            let avail = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            if avail.is_empty() {
                return Err(self.truncated("inside an extension header"));
            }
            let take = avail.len().min(out.len() - got);
            out[got..got + take].copy_from_slice(&avail[..take]);
            if let Some(s) = &mut self.split {
                s.raw(&avail[..take]);
            }
            self.r.consume(take);
            self.pos += take as u64;
            got += take;
        }
        Ok(out)
    }

    /// Read the data of an extension header (PAX, GNU long name), bounded by the header limit.
    fn read_ext(&mut self, size: u64, what: &str, offset: u64) -> Result<Vec<u8>, ArchiveError> {
        if size > self.max_header_bytes {
            return Err(ArchiveError::LimitExceeded {
                what: format!("{what} at byte {offset} ({size} bytes)"),
                limit: self.max_header_bytes,
            });
        }
        let data = self.read_exact_vec(size)?;
        self.skip(pad(size))?;
        Ok(data)
    }

    fn count_entry(&mut self) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(ArchiveError::LimitExceeded {
                what: "entry count".into(),
                limit: self.max_entries,
            });
        }
        Ok(())
    }

    /// The next logical entry, or `None` at the end-of-archive marker (or for an empty stream).
    /// Unread data of the previous entry is skipped first.
    pub(crate) fn next(&mut self) -> Result<Option<Entry>, ArchiveError> {
        if self.ended {
            return Ok(None);
        }
        let leftover = self.remaining + self.padding;
        self.skip(leftover)?;
        self.remaining = 0;
        self.padding = 0;

        let mut pax: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut first_offset: Option<u64> = None;
        let mut hdr = tar::Header::new_old();
        loop {
            let offset = self.pos;
            let pending = pax.is_some() || long_name.is_some() || long_link.is_some();
            match self.read_block(hdr.as_mut_bytes())? {
                Block::Full => {}
                Block::Eof if pending => {
                    return Err(self.truncated("after an extension header"));
                }
                Block::Eof if self.entries == 0 => {
                    // An empty stream is a valid empty layer.
                    self.ended = true;
                    return Ok(None);
                }
                Block::Eof => return Err(self.truncated("before the end-of-archive marker")),
            }
            if is_zero(hdr.as_bytes()) {
                if pending {
                    return Err(self.invalid(offset, "extension header not followed by an entry"));
                }
                let mut second = [0u8; BLOCK as usize];
                if let Block::Full = self.read_block(&mut second)?
                    && !is_zero(&second)
                {
                    return Err(self.invalid(
                        offset + BLOCK,
                        "non-zero block after the end-of-archive block",
                    ));
                }
                self.ended = true;
                return Ok(None);
            }
            first_offset.get_or_insert(offset);
            self.check_checksum(&hdr, offset)?;
            let typeflag = hdr.as_bytes()[156];
            let size = self.field(&hdr.as_old().size, offset, "size")?;
            match typeflag {
                b'x' => {
                    if pax.is_some() {
                        return Err(self.invalid(offset, "two PAX headers for one entry"));
                    }
                    let data = self.read_ext(size, "PAX header", offset)?;
                    pax = Some(parse_pax(&data).map_err(|r| self.invalid(offset, r))?);
                }
                b'g' => {
                    if pending {
                        return Err(self.invalid(offset, "extension header before a global header"));
                    }
                    let data = self.read_ext(size, "PAX global header", offset)?;
                    parse_pax(&data).map_err(|r| self.invalid(offset, r))?;
                    self.count_entry()?;
                    return Ok(Some(Entry {
                        kind: Kind::Global,
                        path: cstr(&hdr.as_old().name).to_vec(),
                        link: Vec::new(),
                        mode: 0,
                        uid: 0,
                        gid: 0,
                        mtime: Time::default(),
                        atime: None,
                        size: 0,
                        sparse: None,
                        dev_major: 0,
                        dev_minor: 0,
                        xattrs: Vec::new(),
                        offset,
                    }));
                }
                b'L' => {
                    if long_name.is_some() {
                        return Err(self.invalid(offset, "two GNU long names for one entry"));
                    }
                    let data = self.read_ext(size, "GNU long name", offset)?;
                    long_name = Some(cstr(&data).to_vec());
                }
                b'K' => {
                    if long_link.is_some() {
                        return Err(self.invalid(offset, "two GNU long link names for one entry"));
                    }
                    let data = self.read_ext(size, "GNU long link name", offset)?;
                    long_link = Some(cstr(&data).to_vec());
                }
                _ => {
                    let entry = self.build_entry(
                        &hdr,
                        first_offset.unwrap_or(offset),
                        offset,
                        size,
                        pax.take().unwrap_or_default(),
                        long_name.take().filter(|n| !n.is_empty()),
                        long_link.take().filter(|n| !n.is_empty()),
                    )?;
                    self.count_entry()?;
                    return Ok(Some(entry));
                }
            }
        }
    }

    fn field(&self, b: &[u8], offset: u64, what: &str) -> Result<u64, ArchiveError> {
        match parse_numeric(b) {
            Some(v) if v >= 0 => Ok(v as u64),
            Some(_) => Err(self.invalid(offset, format!("negative {what} field"))),
            None => Err(self.invalid(offset, format!("malformed {what} field"))),
        }
    }

    fn check_checksum(&self, hdr: &tar::Header, offset: u64) -> Result<(), ArchiveError> {
        let bytes = hdr.as_bytes();
        let want = parse_numeric(&hdr.as_old().cksum).ok_or_else(|| {
            self.invalid(offset, "malformed header checksum (not a tar archive?)")
        })?;
        let mut unsigned: i64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        if want != unsigned && want != signed {
            return Err(self.invalid(offset, "header checksum mismatch (not a tar archive?)"));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn build_entry(
        &mut self,
        hdr: &tar::Header,
        first_offset: u64,
        offset: u64,
        header_size: u64,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry, ArchiveError> {
        let bytes = hdr.as_bytes();
        let magic = &bytes[257..263];
        let version = &bytes[263..265];
        let is_star = magic == b"ustar\0" && &bytes[508..512] == b"tar\0";
        let is_ustar = magic == b"ustar\0";
        let is_gnu = magic == b"ustar " && version == b" \0";
        let v7 = hdr.as_old();

        if pax.path.is_some() && long_name.is_some() {
            return Err(self.invalid(offset, "both a PAX path and a GNU long name"));
        }
        if pax.linkpath.is_some() && long_link.is_some() {
            return Err(self.invalid(offset, "both a PAX linkpath and a GNU long link name"));
        }
        let mut path = if let Some(p) = pax.path.clone() {
            p
        } else if let Some(n) = long_name {
            n
        } else {
            let name = cstr(&v7.name);
            let prefix = if is_star {
                cstr(&bytes[345..476])
            } else if is_ustar {
                cstr(&bytes[345..500])
            } else {
                &[][..]
            };
            if prefix.is_empty() {
                name.to_vec()
            } else {
                [prefix, b"/", name].concat()
            }
        };
        let link = match (pax.linkpath.clone(), long_link) {
            (Some(l), _) => l,
            (None, Some(l)) => l,
            (None, None) => cstr(&v7.linkname).to_vec(),
        };

        let typeflag = bytes[156];
        let kind = match typeflag {
            b'0' | b'S' => Kind::File,
            0 if path.ends_with(b"/") => Kind::Dir,
            0 => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => {
                return Err(self.invalid(
                    offset,
                    format!(
                        "entry {} has unsupported type {:?}",
                        crate::EntryName::new(path.clone()),
                        char::from(other)
                    ),
                ));
            }
        };

        let mode = self.field(&v7.mode, offset, "mode")?;
        let mode = (mode & 0o7777) as u32;
        let id = |v: u64, what: &str| -> Result<u32, ArchiveError> {
            u32::try_from(v)
                .ok()
                .filter(|&x| x != u32::MAX)
                .ok_or_else(|| self.invalid(offset, format!("{what} {v} out of range")))
        };
        let uid = match pax.uid {
            Some(u) => u,
            None => self.field(&v7.uid, offset, "uid")?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => self.field(&v7.gid, offset, "gid")?,
        };
        let (uid, gid) = (id(uid, "uid")?, id(gid, "gid")?);
        let mtime = match pax.mtime {
            Some(t) => t,
            None => Time {
                sec: parse_numeric(&v7.mtime)
                    .ok_or_else(|| self.invalid(offset, "malformed mtime field"))?,
                nsec: 0,
            },
        };
        let mut atime = pax.atime;
        if atime.is_none() && is_gnu && bytes[345] != 0 {
            let a = parse_numeric(&bytes[345..357])
                .ok_or_else(|| self.invalid(offset, "malformed atime field"))?;
            atime = Some(Time { sec: a, nsec: 0 });
        }
        let (mut dev_major, mut dev_minor) = (0u32, 0u32);
        if (is_ustar || is_gnu) && matches!(kind, Kind::Char | Kind::Block) {
            let dev = |b: &[u8], what: &str| -> Result<u32, ArchiveError> {
                let v = parse_numeric(b)
                    .ok_or_else(|| self.invalid(offset, format!("malformed {what} field")))?;
                u32::try_from(v).map_err(|_| {
                    crate::error::invalid(&path, format!("device {what} {v} out of range"))
                })
            };
            dev_major = dev(&bytes[329..337], "major")?;
            dev_minor = dev(&bytes[337..345], "minor")?;
        }

        let header_only = matches!(
            kind,
            Kind::Hardlink | Kind::Symlink | Kind::Char | Kind::Block | Kind::Dir | Kind::Fifo
        );
        let mut data_size = pax.size.unwrap_or(header_size);
        if header_only {
            data_size = 0;
        }
        let mut logical = data_size;
        let mut sparse = None;

        if typeflag == b'S' {
            if !is_gnu {
                return Err(self.invalid(offset, "GNU sparse entry without a GNU header"));
            }
            let real = parse_numeric(&bytes[483..495])
                .filter(|&v| v >= 0)
                .ok_or_else(|| self.invalid(offset, "malformed sparse real size"))?
                as u64;
            let mut regions = Vec::new();
            let mut ended_map = false;
            let mut add = |reader: &Self, entry: &[u8]| -> Result<(), ArchiveError> {
                if ended_map || entry[0] == 0 {
                    ended_map = true;
                    return Ok(());
                }
                let off = parse_numeric(&entry[..12]).filter(|&v| v >= 0);
                let len = parse_numeric(&entry[12..24]).filter(|&v| v >= 0);
                match (off, len) {
                    (Some(o), Some(l)) => {
                        if regions.len() as u64 >= reader.max_sparse_regions {
                            return Err(ArchiveError::LimitExceeded {
                                what: "sparse map region count".into(),
                                limit: reader.max_sparse_regions,
                            });
                        }
                        regions.push(Region {
                            offset: o as u64,
                            len: l as u64,
                        });
                        Ok(())
                    }
                    _ => Err(reader.invalid(offset, "malformed sparse map entry")),
                }
            };
            for i in 0..4 {
                let s = 386 + i * 24;
                add(self, &bytes[s..s + 24])?;
            }
            let mut extended = bytes[482] != 0;
            let mut ext_blocks = 0u64;
            while extended {
                ext_blocks += 1;
                if ext_blocks * BLOCK > self.max_header_bytes {
                    return Err(ArchiveError::LimitExceeded {
                        what: format!("GNU sparse map at byte {offset}"),
                        limit: self.max_header_bytes,
                    });
                }
                let mut blk = [0u8; BLOCK as usize];
                if let Block::Eof = self.read_block(&mut blk)? {
                    return Err(self.truncated("inside a sparse map"));
                }
                for i in 0..21 {
                    add(self, &blk[i * 24..i * 24 + 24])?;
                }
                extended = blk[504] != 0;
            }
            logical = real;
            sparse = Some(regions);
        } else if kind == Kind::File {
            // PAX GNU sparse formats, recognised as Go does.
            let major = pax.sparse_major.as_deref();
            let minor = pax.sparse_minor.as_deref();
            let format = match (major, minor) {
                (Some(b"0"), Some(b"0")) | (Some(b"0"), Some(b"1")) => Some(false),
                (Some(b"1"), Some(b"0")) => Some(true),
                (Some(_), _) | (_, Some(_)) => None,
                (None, None) if pax.sparse_map.is_some() => Some(false),
                (None, None) => None,
            };
            if let Some(is_1x0) = format {
                if let Some(name) = pax.sparse_name.clone().filter(|n| !n.is_empty()) {
                    path = name;
                }
                if let Some(sz) = pax
                    .sparse_size
                    .as_deref()
                    .or(pax.sparse_realsize.as_deref())
                {
                    logical = parse_decimal(sz)
                        .ok_or_else(|| self.invalid(offset, "malformed GNU sparse size"))?;
                }
                let numbers: Vec<u64> =
                    if is_1x0 {
                        let (numbers, used) = self.read_sparse_1x0(offset, data_size)?;
                        data_size -= used;
                        numbers
                    } else {
                        let n = pax
                            .sparse_numblocks
                            .as_deref()
                            .and_then(parse_decimal)
                            .ok_or_else(|| self.invalid(offset, "missing GNU sparse numblocks"))?;
                        if n > self.max_sparse_regions {
                            return Err(ArchiveError::LimitExceeded {
                                what: "sparse map region count".into(),
                                limit: self.max_sparse_regions,
                            });
                        }
                        let map = pax.sparse_map.as_deref().unwrap_or(b"");
                        let mut nums = Vec::new();
                        if !map.is_empty() {
                            for part in map.split(|&c| c == b',') {
                                nums.push(parse_decimal(part).ok_or_else(|| {
                                    self.invalid(offset, "malformed GNU sparse map")
                                })?);
                            }
                        }
                        if nums.len() as u64 != 2 * n {
                            return Err(self.invalid(offset, "GNU sparse map length mismatch"));
                        }
                        nums
                    };
                sparse = Some(
                    numbers
                        .chunks(2)
                        .map(|c| Region {
                            offset: c[0],
                            len: c[1],
                        })
                        .collect(),
                );
            }
        }

        if let Some(regions) = &sparse {
            if !validate_regions(regions, logical) {
                return Err(self.invalid(offset, "invalid sparse map"));
            }
            let total: u64 = regions.iter().map(|r| r.len).sum();
            if total != data_size {
                return Err(self.invalid(offset, "sparse map does not match the entry's data size"));
            }
        }

        if (kind == Kind::Hardlink || kind == Kind::Symlink) && link.is_empty() {
            return Err(crate::error::invalid(
                &path,
                "link entry with an empty target",
            ));
        }

        self.remaining = data_size;
        self.padding = pad(data_size);
        if header_only {
            logical = 0;
        }
        Ok(Entry {
            kind,
            path,
            link,
            mode,
            uid,
            gid,
            mtime,
            atime,
            size: logical,
            sparse,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
            offset: first_offset,
        })
    }

    /// Read a GNU sparse 1.0 map from the start of an entry's data. Returns the numbers and the
    /// bytes of data the map used (whole blocks).
    fn read_sparse_1x0(
        &mut self,
        offset: u64,
        data_size: u64,
    ) -> Result<(Vec<u64>, u64), ArchiveError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut used = 0u64;
        let mut cursor = 0usize;
        let next_number = |reader: &mut Self,
                           buf: &mut Vec<u8>,
                           used: &mut u64,
                           cursor: &mut usize|
         -> Result<u64, ArchiveError> {
            loop {
                if let Some(nl) = buf[*cursor..].iter().position(|&c| c == b'\n') {
                    let v = parse_decimal(&buf[*cursor..*cursor + nl])
                        .ok_or_else(|| reader.invalid(offset, "malformed GNU sparse 1.0 map"))?;
                    *cursor += nl + 1;
                    return Ok(v);
                }
                if *used + BLOCK > data_size {
                    return Err(reader.invalid(offset, "GNU sparse 1.0 map longer than the entry"));
                }
                if *used + BLOCK > reader.max_header_bytes {
                    return Err(ArchiveError::LimitExceeded {
                        what: format!("GNU sparse map at byte {offset}"),
                        limit: reader.max_header_bytes,
                    });
                }
                let mut blk = [0u8; BLOCK as usize];
                if let Block::Eof = reader.read_block(&mut blk)? {
                    return Err(reader.truncated("inside a sparse map"));
                }
                *used += BLOCK;
                buf.extend_from_slice(&blk);
            }
        };
        let n = next_number(self, &mut buf, &mut used, &mut cursor)?;
        if n > self.max_sparse_regions {
            return Err(ArchiveError::LimitExceeded {
                what: "sparse map region count".into(),
                limit: self.max_sparse_regions,
            });
        }
        let mut nums = Vec::with_capacity(2 * n as usize);
        for _ in 0..2 * n {
            nums.push(next_number(self, &mut buf, &mut used, &mut cursor)?);
        }
        Ok((nums, used))
    }

    /// The next chunk of the current entry's data (empty when it is all read).
    pub(crate) fn data(&mut self) -> Result<&[u8], ArchiveError> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let (pos, limit, remaining) = (self.pos, self.stream_limit, self.remaining);
        // Retry interrupted reads first; the second call only returns what is buffered (or EOF).
        loop {
            match self.r.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(e, pos, limit)),
            }
        }
        let buf = self.r.fill_buf().map_err(|e| stream_error(e, pos, limit))?;
        if buf.is_empty() {
            return Err(ArchiveError::Truncated {
                offset: pos,
                reason: "inside an entry's data",
            });
        }
        let n = (buf.len() as u64).min(remaining) as usize;
        Ok(&buf[..n])
    }

    /// Mark `n` bytes returned by [`TarReader::data`] as used.
    pub(crate) fn consume(&mut self, n: usize) {
        if let Some(s) = &mut self.split {
            // The bytes just returned by `data` are still buffered: no I/O here.
            match self.r.fill_buf() {
                Ok(b) if b.len() >= n => s.content(&b[..n]),
                _ => s.give_up("the stream buffer changed under the tar reader".into()),
            }
        }
        self.r.consume(n);
        self.pos += n as u64;
        self.remaining -= n as u64;
    }
}

/// Padding after `size` bytes of data up to the next block.
fn pad(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Map an error of the uncompressed stream to an archive error.
pub(crate) fn stream_error(e: io::Error, pos: u64, limit: u64) -> ArchiveError {
    if e.get_ref().is_some_and(|inner| inner.is::<StreamLimit>()) {
        return ArchiveError::LimitExceeded {
            what: "uncompressed stream size".into(),
            limit,
        };
    }
    ArchiveError::Read {
        offset: pos,
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_follow_go() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"12 34\0"), None);
        assert_eq!(parse_numeric(b"9\0"), None);
        // base-256: 2^32 and -1
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some(1 << 32)
        );
        assert_eq!(parse_numeric(&[0xff; 8]), Some(-1));
    }

    #[test]
    fn pax_times_and_records() {
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some(Time {
                sec: 1_700_000_000,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(Time {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert!(parse_pax_time(b"1.x").is_none());
        let p = parse_pax(b"11 path=ab\n").unwrap();
        assert_eq!(p.path.unwrap(), b"ab");
        assert!(parse_pax(b"11 path=ab\n11 path=cd\n").is_err());
        assert!(parse_pax(b"10 path=ab").is_err());
        assert!(parse_pax(b"3 x\n").is_err());
        assert!(parse_pax(b"12 path=a\0b\n").is_err());
        let x = parse_pax(b"27 SCHILY.xattr.user.k=v\0w\n").unwrap();
        assert_eq!(x.xattrs, vec![(b"user.k".to_vec(), b"v\0w".to_vec())]);
    }
}
