//! The crate's error type.

use std::fmt;
use std::io;

use carrel_core::{ErrorKind, HasKind};

/// An entry name (or any path) from an archive or a tree, kept as raw bytes.
///
/// Linux names are arbitrary bytes except `/` and NUL, so names are never converted to `String`.
/// `Display` quotes the name, escapes control characters and invalid UTF-8 (`\xNN`) and shortens
/// very long names, so a hostile name can never break a log line or an error message.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EntryName(Vec<u8>);

impl EntryName {
    /// Wrap raw name bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> EntryName {
        EntryName(bytes.into())
    }

    /// The raw bytes of the name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for EntryName {
    fn from(b: &[u8]) -> Self {
        EntryName(b.to_vec())
    }
}

impl From<&std::path::Path> for EntryName {
    fn from(p: &std::path::Path) -> Self {
        use std::os::unix::ffi::OsStrExt;
        EntryName(p.as_os_str().as_bytes().to_vec())
    }
}

/// Longest name shown in full in messages; longer names are cut in the middle.
const SHOW_MAX: usize = 200;

fn write_escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '"' || c == '\\' || c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        if self.0.len() > SHOW_MAX {
            write_escaped(f, &self.0[..SHOW_MAX / 2])?;
            write!(f, "…[{} bytes]…", self.0.len())?;
            write_escaped(f, &self.0[self.0.len() - SHOW_MAX / 2..])?;
        } else {
            write_escaped(f, &self.0)?;
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Everything that can go wrong reading, extracting or writing a layer tar.
///
/// Every message names the entry (or byte offset) and the problem on one line. Each variant maps
/// to a [`carrel_core::ErrorKind`]: malformed or hostile input is `InvalidArgument`, a full disk
/// is `Unavailable`, missing privileges are `Permission`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// An entry name climbs above the extraction root (`../x`, `a/../../x`).
    #[error("layer entry {entry}: path escapes the layer root")]
    Breakout {
        /// The entry name as found in the archive.
        entry: EntryName,
    },
    /// A hardlink entry's target climbs above the extraction root.
    #[error("layer entry {entry}: hardlink target {target} escapes the layer root")]
    LinkBreakout {
        /// The entry name.
        entry: EntryName,
        /// The hardlink target as found in the archive.
        target: EntryName,
    },
    /// One entry is not acceptable: a malformed whiteout, a forged overlay xattr, a hardlink to a
    /// directory, an out-of-range device number, a name that is too long, ...
    #[error("layer entry {entry}: {reason}")]
    InvalidEntry {
        /// The entry name.
        entry: EntryName,
        /// What is wrong with it.
        reason: String,
    },
    /// The byte stream is not a well-formed tar archive.
    #[error("invalid layer archive at byte {offset}: {reason}")]
    InvalidArchive {
        /// Offset of the offending header in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The stream ended inside an entry or before the end-of-archive marker.
    #[error("layer archive is truncated at byte {offset}: {reason}")]
    Truncated {
        /// Bytes read when the stream ended.
        offset: u64,
        /// Where it ended.
        reason: &'static str,
    },
    /// A configured bound ([`crate::Limits`]) was exceeded.
    #[error("layer {what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was counted (may name the entry).
        what: String,
        /// The configured limit.
        limit: u64,
    },
    /// The stream is compressed with a format carrel does not decode (bzip2, xz).
    #[error("unsupported compression: {0} (only gzip and zstd layers are supported)")]
    UnsupportedCompression(&'static str),
    /// A filesystem operation for one entry failed (e.g. `ENOSPC`, `ENOTDIR` for `f` then `f/g`).
    #[error("layer entry {entry}: {op}: {source}")]
    Fs {
        /// The entry name.
        entry: EntryName,
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading (or decompressing) the layer stream failed.
    #[error("reading layer stream at byte {offset}: {source}")]
    Read {
        /// Bytes of the uncompressed stream read before the failure.
        offset: u64,
        /// The error from the reader or decompressor.
        #[source]
        source: io::Error,
    },
    /// Reading a path of a tree being archived failed.
    #[error("archiving {path}: {op}: {source}")]
    Tree {
        /// The path inside the tree.
        path: EntryName,
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A tree cannot be represented as requested (e.g. an overlay upper dir using redirects).
    #[error("archiving {path}: {reason}")]
    Unsupported {
        /// The path inside the tree.
        path: EntryName,
        /// Why.
        reason: String,
    },
    /// Writing the archive to its destination failed.
    #[error("writing archive: {0}")]
    Write(#[source] io::Error),
    /// The extraction root or tree root itself could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The trusted root path.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Kind of an OS error met while extracting: malformed trees (`ENOTDIR`, `ELOOP`, ...) are the
/// archive's fault, a full disk is `Unavailable`.
fn fs_kind(err: &io::Error) -> ErrorKind {
    match err.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EROFS) => ErrorKind::Unavailable,
        Some(libc::EACCES) | Some(libc::EPERM) => ErrorKind::Permission,
        Some(libc::ENOTDIR)
        | Some(libc::EISDIR)
        | Some(libc::ELOOP)
        | Some(libc::ENAMETOOLONG)
        | Some(libc::EEXIST)
        | Some(libc::ENOENT)
        | Some(libc::EINVAL)
        | Some(libc::EFBIG)
        | Some(libc::EXDEV)
        | Some(libc::EMLINK)
        | Some(libc::E2BIG)
        | Some(libc::ERANGE) => ErrorKind::InvalidArgument,
        _ => ErrorKind::Internal,
    }
}

/// Kind of a read error: corrupt compressed data or a short stream is bad input.
fn read_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            ErrorKind::InvalidArgument
        }
        _ if err.raw_os_error().is_some() => ErrorKind::from_io(err),
        // Decoders report corruption as `Other` with a message.
        _ => ErrorKind::InvalidArgument,
    }
}

impl HasKind for ArchiveError {
    fn kind(&self) -> ErrorKind {
        match self {
            ArchiveError::Breakout { .. }
            | ArchiveError::LinkBreakout { .. }
            | ArchiveError::InvalidEntry { .. }
            | ArchiveError::InvalidArchive { .. }
            | ArchiveError::Truncated { .. }
            | ArchiveError::LimitExceeded { .. }
            | ArchiveError::UnsupportedCompression(_) => ErrorKind::InvalidArgument,
            ArchiveError::Fs { source, .. } => fs_kind(source),
            ArchiveError::Read { source, .. } => read_kind(source),
            ArchiveError::Tree { source, .. } => ErrorKind::from_io(source),
            ArchiveError::Unsupported { .. } => ErrorKind::Precondition,
            ArchiveError::Write(e) => match e.raw_os_error() {
                Some(_) => ErrorKind::from_io(e),
                None => ErrorKind::Internal,
            },
            ArchiveError::Open { source, .. } => ErrorKind::from_io(source),
        }
    }
}

impl ArchiveError {
    /// True when the error says the archive tried to leave its root (a breakout attempt).
    pub fn is_breakout(&self) -> bool {
        matches!(
            self,
            ArchiveError::Breakout { .. } | ArchiveError::LinkBreakout { .. }
        )
    }
}

/// Shorthand: an `Fs` error for an entry.
pub(crate) fn fs_err(entry: &[u8], op: &'static str) -> impl FnOnce(io::Error) -> ArchiveError {
    let entry = EntryName::from(entry);
    move |source| ArchiveError::Fs { entry, op, source }
}

/// Shorthand: an `InvalidEntry` error.
pub(crate) fn invalid(entry: &[u8], reason: impl Into<String>) -> ArchiveError {
    ArchiveError::InvalidEntry {
        entry: EntryName::from(entry),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_shortened() {
        let e = ArchiveError::Breakout {
            entry: EntryName::new(b"../etc/passwd".to_vec()),
        };
        assert_eq!(
            e.to_string(),
            "layer entry \"../etc/passwd\": path escapes the layer root"
        );
        let odd = EntryName::new(b"a\n\xff\"b".to_vec());
        assert_eq!(odd.to_string(), "\"a\\n\\xff\\\"b\"");
        let long = EntryName::new(vec![b'a'; 10_000]);
        assert!(long.to_string().len() < 300);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let full = ArchiveError::Fs {
            entry: EntryName::new(b"x".to_vec()),
            op: "write",
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(full.kind(), ErrorKind::Unavailable);
    }
}
