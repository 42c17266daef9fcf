//! Error kinds shared by every carrel crate.
//!
//! Each crate has its own `thiserror` enum; every variant maps to one [`ErrorKind`]. The CLI maps
//! kinds to exit codes and the API server maps them to HTTP statuses the way Docker does.

use std::fmt;

/// The category of a failure, independent of the crate that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The named object does not exist (HTTP 404).
    NotFound,
    /// An object with that name or id already exists (HTTP 409).
    AlreadyExists,
    /// The object is in a state that forbids the operation, e.g. in use (HTTP 409).
    Conflict,
    /// The request itself is malformed (HTTP 400).
    InvalidArgument,
    /// The system lacks something the request needs, e.g. a kernel feature (HTTP 400/500).
    Precondition,
    /// A dependency (runtime, plugin, disk) is unavailable or full (HTTP 503/500).
    Unavailable,
    /// The caller lacks the privileges (HTTP 403).
    Permission,
    /// A bug or an unexpected system failure (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status Docker's API uses for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::AlreadyExists | ErrorKind::Conflict => 409,
            ErrorKind::InvalidArgument => 400,
            ErrorKind::Precondition => 400,
            ErrorKind::Unavailable => 503,
            ErrorKind::Permission => 403,
            ErrorKind::Internal => 500,
        }
    }

    /// Classify an I/O error by its OS error code.
    pub fn from_io(err: &std::io::Error) -> ErrorKind {
        match err.raw_os_error() {
            Some(libc::ENOENT) => ErrorKind::NotFound,
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => ErrorKind::AlreadyExists,
            Some(libc::EBUSY) => ErrorKind::Conflict,
            Some(libc::EACCES) | Some(libc::EPERM) => ErrorKind::Permission,
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EROFS) => ErrorKind::Unavailable,
            Some(libc::EINVAL) | Some(libc::ENAMETOOLONG) | Some(libc::EXDEV) => {
                ErrorKind::InvalidArgument
            }
            _ => ErrorKind::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Precondition => "failed precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Permission => "permission denied",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(s)
    }
}

/// Implemented by every crate's error type.
pub trait HasKind {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

impl HasKind for std::io::Error {
    fn kind(&self) -> ErrorKind {
        ErrorKind::from_io(self)
    }
}
