//! Errors of the mount executor.

use std::path::PathBuf;

use carrel_core::{ErrorKind, HasKind};

/// A mount failure. Every message is one line naming the target and what failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A system call failed.
    #[error("mount {target}: {op} failed: {source}")]
    Syscall {
        /// The mount target (or the path being probed).
        target: PathBuf,
        /// What was being done, e.g. `fsconfig(lowerdir+=/a/b)`.
        op: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The classic `mount(2)` option string would not fit in one page.
    #[error(
        "mount {target}: overlay options are {len} bytes, more than the {max} that mount(2) accepts ({layers} lower layers); this kernel lacks lowerdir+"
    )]
    DataTooLong {
        /// The mount target.
        target: PathBuf,
        /// Length of the option string.
        len: usize,
        /// The limit.
        max: usize,
        /// Number of lower layers.
        layers: usize,
    },
    /// The mount description itself is unusable.
    #[error("mount {target}: invalid mount: {reason}")]
    Invalid {
        /// The mount target.
        target: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `/proc/self/mountinfo` could not be read or parsed.
    #[error("mountinfo: {0}")]
    MountInfo(String),
}

impl MountError {
    pub(crate) fn sys(
        target: impl Into<PathBuf>,
        op: impl Into<String>,
        source: impl Into<std::io::Error>,
    ) -> MountError {
        MountError::Syscall {
            target: target.into(),
            op: op.into(),
            source: source.into(),
        }
    }

    /// The OS error number behind this error, if it is a failed system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            MountError::Syscall { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl HasKind for MountError {
    fn kind(&self) -> ErrorKind {
        match self {
            MountError::Syscall { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => ErrorKind::NotFound,
                Some(libc::EBUSY) => ErrorKind::Conflict,
                Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::Permission,
                Some(libc::ENODEV) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                    ErrorKind::Precondition
                }
                Some(libc::ENOSPC) | Some(libc::ENOMEM) => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            MountError::DataTooLong { .. } | MountError::Invalid { .. } => {
                ErrorKind::InvalidArgument
            }
            MountError::MountInfo(_) => ErrorKind::Internal,
        }
    }
}
