//! Thin safe wrappers over the mount system calls rustix lacks.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::Propagation;

/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// `MOUNT_ATTR_NODEV`.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// `MOUNT_ATTR_NOEXEC`.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
/// `MOUNT_ATTR_IDMAP`.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (`MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawMountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// What to change on a mount with [`mount_setattr`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MountAttrChange {
    /// `MOUNT_ATTR_*` flags to set.
    pub set: u64,
    /// `MOUNT_ATTR_*` flags to clear.
    pub clear: u64,
    /// Propagation type to set.
    pub propagation: Option<Propagation>,
}

fn propagation_flag(p: Propagation) -> u64 {
    #[allow(clippy::unnecessary_cast)]
    let flag = match p {
        Propagation::Private => libc::MS_PRIVATE,
        Propagation::Slave => libc::MS_SLAVE,
        Propagation::Shared => libc::MS_SHARED,
        Propagation::Unbindable => libc::MS_UNBINDABLE,
    } as u64;
    flag
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], attr)`: change the attributes of the
/// mount that `fd` refers to (an `open_tree`/`fsmount` descriptor or an `O_PATH` descriptor of a
/// mount point), and of every mount below it when `recursive`.
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    change: MountAttrChange,
) -> io::Result<()> {
    let attr = RawMountAttr {
        attr_set: change.set,
        attr_clr: change.clear,
        propagation: change.propagation.map(propagation_flag).unwrap_or(0),
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a valid NUL-terminated string, `attr` is a live, properly sized
    // `struct mount_attr` that the kernel only reads, and `fd` is a borrowed open descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const RawMountAttr,
            std::mem::size_of::<RawMountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
