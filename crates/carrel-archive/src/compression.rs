//! Compression detected from the bytes of a stream (never from a file name or media type).
//!
//! gzip is decoded in-process with `flate2` (zlib-rs backend, multi-member streams iterated, not
//! recursed) and zstd with `zstd` (window capped at 2^27 bytes, so a frame that declares a huge
//! window is refused instead of allocated). bzip2 and xz are recognised and refused: carrel never
//! runs an external decompressor (CVE-2014-9357, CVE-2026-41567).

use std::io::{self, BufRead, BufReader, Cursor, Read};

use crate::ArchiveError;

/// Size of the buffers used between the compressed source, the decoder and the tar reader.
pub const BUFFER_SIZE: usize = 1 << 20;

/// Largest zstd window accepted (log2): 128 MiB, zstd's own default decoder limit.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (RFC 1952), possibly several concatenated members.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// A short name: `none`, `gzip` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b, 0x08];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
/// Bytes needed to recognise every supported or refused format.
const MAGIC_LEN: usize = 6;

/// Detect the compression from the first bytes of a stream.
///
/// Anything that is not gzip, zstd, bzip2 or xz is taken to be an uncompressed tar (the tar reader
/// then validates it). bzip2 and xz are errors.
pub fn detect(prefix: &[u8]) -> Result<Compression, ArchiveError> {
    if prefix.starts_with(GZIP_MAGIC) {
        Ok(Compression::Gzip)
    } else if prefix.starts_with(ZSTD_MAGIC) {
        Ok(Compression::Zstd)
    } else if prefix.starts_with(XZ_MAGIC) {
        Err(ArchiveError::UnsupportedCompression("xz"))
    } else if prefix.starts_with(BZIP2_MAGIC) {
        Err(ArchiveError::UnsupportedCompression("bzip2"))
    } else {
        Ok(Compression::None)
    }
}

/// Detect the compression of `r` from its first bytes and return a reader of the decoded bytes.
///
/// The returned reader yields the uncompressed tar stream (hash it for the diffID). A corrupt or
/// truncated compressed stream surfaces as an `io::Error` from that reader (`apply_layer` reports
/// it as [`ArchiveError::Read`]). The decoders keep a bounded amount of memory: a decompression
/// bomb only produces bytes, so bound it with [`crate::Limits`] (`max_stream_bytes`,
/// `max_bytes_written`) or disk quota.
pub fn decompress<R: BufRead + Send + 'static>(
    mut r: R,
) -> Result<(Compression, Box<dyn Read + Send>), ArchiveError> {
    // Peek without losing bytes: read up to MAGIC_LEN bytes and chain them back in front.
    let mut prefix = Vec::with_capacity(MAGIC_LEN);
    while prefix.len() < MAGIC_LEN {
        let buf = r
            .fill_buf()
            .map_err(|source| ArchiveError::Read { offset: 0, source })?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len().min(MAGIC_LEN - prefix.len());
        prefix.extend_from_slice(&buf[..n]);
        r.consume(n);
    }
    let compression = detect(&prefix)?;
    let source = Cursor::new(prefix).chain(r);
    let decoder: Box<dyn Read + Send> = match compression {
        Compression::None => return Ok((compression, Box::new(source))),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(BUFFER_SIZE, source),
        )),
        Compression::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                BUFFER_SIZE,
                source,
            ))
            .map_err(|source| ArchiveError::Read { offset: 0, source })?;
            dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|source| ArchiveError::Read { offset: 0, source })?;
            Box::new(dec)
        }
    };
    let reader = ThreadedReader::spawn(decoder)
        .map_err(|source| ArchiveError::Read { offset: 0, source })?;
    tracing::debug!(%compression, "layer stream compression detected");
    Ok((compression, Box::new(reader)))
}

/// Chunks in flight between a decoder thread and its reader.
const CHANNEL_DEPTH: usize = 4;

/// A reader whose bytes are produced by a decoder running on its own thread, so decompression
/// overlaps with extraction (the machine has more than one core; gzip decoding alone runs at
/// ~330 MB/s). The thread ends at the end of the stream, after an error, or as soon as the
/// reader is dropped (its next hand-over fails); it never blocks the reader's owner.
struct ThreadedReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    failed: bool,
}

impl ThreadedReader {
    fn spawn(mut decoder: Box<dyn Read + Send>) -> io::Result<ThreadedReader> {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_DEPTH);
        std::thread::Builder::new()
            .name("carrel-decompress".into())
            .spawn(move || {
                loop {
                    let mut buf = vec![0u8; BUFFER_SIZE];
                    let mut filled = 0;
                    while filled < buf.len() {
                        match decoder.read(&mut buf[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    if filled == 0 {
                        return;
                    }
                    buf.truncate(filled);
                    let at_end = filled < BUFFER_SIZE;
                    if tx.send(Ok(buf)).is_err() || at_end {
                        return;
                    }
                }
            })?;
        Ok(ThreadedReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            failed: false,
        })
    }
}

impl Read for ThreadedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            if self.failed {
                return Err(io::Error::other("decompression failed earlier"));
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                // The decoder thread ended: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader that fails once more than `limit` bytes have been read through it.
pub(crate) struct LimitReader<R> {
    inner: R,
    remaining: Option<u64>,
    limit: u64,
}

/// The payload of the `io::Error` a [`LimitReader`] returns.
#[derive(Debug)]
pub(crate) struct StreamLimit(pub u64);

impl std::fmt::Display for StreamLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stream longer than {} bytes", self.0)
    }
}

impl std::error::Error for StreamLimit {}

impl<R: Read> LimitReader<R> {
    pub(crate) fn new(inner: R, limit: Option<u64>) -> Self {
        LimitReader {
            inner,
            remaining: limit,
            limit: limit.unwrap_or(u64::MAX),
        }
    }
}

impl<R: Read> Read for LimitReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(remaining) = self.remaining else {
            return self.inner.read(buf);
        };
        if remaining == 0 {
            // Allow a clean EOF exactly at the limit; anything more is an error.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(StreamLimit(self.limit))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining = Some(remaining - n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_from_bytes() {
        assert_eq!(detect(b"\x1f\x8b\x08\0").unwrap(), Compression::Gzip);
        assert_eq!(detect(b"\x28\xb5\x2f\xfd").unwrap(), Compression::Zstd);
        assert_eq!(detect(b"etc/passwd\0").unwrap(), Compression::None);
        assert_eq!(detect(b"").unwrap(), Compression::None);
        assert!(matches!(
            detect(b"BZh91AY"),
            Err(ArchiveError::UnsupportedCompression("bzip2"))
        ));
        assert!(matches!(
            detect(b"\xfd7zXZ\0"),
            Err(ArchiveError::UnsupportedCompression("xz"))
        ));
    }

    #[test]
    fn gzip_round_trip_with_short_reads() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"hello world").unwrap();
        let gz = enc.finish().unwrap();
        // A reader that hands out one byte at a time must still be detected.
        let one = BufReader::with_capacity(1, Cursor::new(gz));
        let (c, mut r) = decompress(one).unwrap();
        assert_eq!(c, Compression::Gzip);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn limit_reader_allows_exact_and_refuses_more() {
        let mut out = Vec::new();
        LimitReader::new(&b"12345"[..], Some(5))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"12345");
        let err = LimitReader::new(&b"123456"[..], Some(5))
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.get_ref().unwrap().is::<StreamLimit>());
    }
}
