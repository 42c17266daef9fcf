//! Small filesystem helpers that act relative to a directory descriptor and never follow a
//! symlink in the final component.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use carrel_core::fs::proc_fd_path;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

/// Flags to open an existing directory for reading, never through a symlink.
pub(crate) const DIR_NOFOLLOW: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// `/proc/self/fd/<dir>/<name>`: a path whose parent is pinned by a descriptor, for the syscalls
/// that only take paths (`lsetxattr`, `llistxattr`). The final component is never followed by the
/// `l*` calls.
pub(crate) fn pinned_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    proc_fd_path(dir).join(name)
}

/// `chmod` of `name` in `dir` without following a symlink: `fchmodat2(AT_SYMLINK_NOFOLLOW)`
/// (Linux 6.6+), else an `O_PATH|O_NOFOLLOW` handle that is checked not to be a symlink and
/// changed through its `/proc/self/fd` link. Symlinks themselves are never chmodded.
pub(crate) fn lchmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let cname =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: fchmodat2 takes a directory fd, a NUL-terminated path, a mode and flags; all
    // arguments are valid for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            cname.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    let fd = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    rfs::chmod(proc_fd_path(fd.as_fd()), Mode::from_raw_mode(mode))?;
    Ok(())
}

/// Names in a directory (without `.` and `..`), in no particular order.
pub(crate) fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for entry in rfs::Dir::new(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(OsString::from_vec(name.to_vec()));
    }
    Ok(out)
}

fn ignore_enoent(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Remove `name` in `dir` and, when it is a directory, everything below it. Symlinks are removed,
/// never followed; a missing name is not an error. Iterative (no recursion on the stack): one
/// descriptor is held per directory level.
pub(crate) fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    struct Frame {
        fd: OwnedFd,
        name: OsString,
        children: Vec<OsString>,
    }
    let open = |parent: BorrowedFd<'_>, name: &OsStr| -> io::Result<Option<Frame>> {
        match rfs::openat(parent, name, DIR_NOFOLLOW, Mode::empty()) {
            Ok(fd) => {
                let children = read_names(fd.as_fd())?;
                Ok(Some(Frame {
                    fd,
                    name: name.to_os_string(),
                    children,
                }))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            // Replaced by a non-directory meanwhile: unlink that instead.
            Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {
                ignore_enoent(rfs::unlinkat(parent, name, AtFlags::empty()))?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    };
    let mut stack: Vec<Frame> = Vec::new();
    if let Some(f) = open(dir, name)? {
        stack.push(f);
    }
    while let Some(top) = stack.last_mut() {
        if let Some(child) = top.children.pop() {
            match rfs::unlinkat(&top.fd, &child, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(rustix::io::Errno::ISDIR) => {
                    let fd = top.fd.as_fd();
                    if let Some(f) = open(fd, &child)? {
                        stack.push(f);
                    }
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let done = stack.pop().expect("stack is not empty");
        let Frame { fd, name, .. } = done;
        drop(fd);
        let parent = stack.last().map(|f| f.fd.as_fd()).unwrap_or(dir);
        ignore_enoent(rfs::unlinkat(parent, &name, AtFlags::REMOVEDIR))?;
    }
    Ok(())
}

/// The xattr names of an open file.
pub(crate) fn list_xattrs_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match rfs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => return Ok(split_names(&buf[..n])),
            Err(rustix::io::Errno::RANGE) => {
                let need = rfs::flistxattr_query(fd)?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The xattr names of `name` in `dir` (the final component is not followed).
pub(crate) fn list_xattrs_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<Vec<u8>>> {
    let path = pinned_path(dir, name);
    let mut buf = vec![0u8; 1024];
    loop {
        match rfs::llistxattr(&path, &mut buf[..]) {
            Ok(n) => return Ok(split_names(&buf[..n])),
            Err(rustix::io::Errno::RANGE) => {
                let need = rfs::llistxattr_query(&path)?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn split_names(b: &[u8]) -> Vec<Vec<u8>> {
    b.split(|&c| c == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Where to read an xattr from.
#[derive(Clone, Copy)]
pub(crate) enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a OsStr),
}

/// The value of one xattr, `None` when it is absent.
pub(crate) fn get_xattr(target: XattrTarget<'_>, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let key = OsStr::from_bytes(key);
    let mut buf = vec![0u8; 256];
    loop {
        let r = match target {
            XattrTarget::Fd(fd) => rfs::fgetxattr(fd, key, &mut buf[..]),
            XattrTarget::At(dir, name) => rfs::lgetxattr(pinned_path(dir, name), key, &mut buf[..]),
        };
        match r {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        if buf.len() > (1 << 20) {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
    }
}

/// Set one xattr (on an open file, or on `name` in `dir` without following it).
pub(crate) fn set_xattr(target: XattrTarget<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let key = OsStr::from_bytes(key);
    let flags = rfs::XattrFlags::empty();
    match target {
        XattrTarget::Fd(fd) => rfs::fsetxattr(fd, key, value, flags)?,
        XattrTarget::At(dir, name) => rfs::lsetxattr(pinned_path(dir, name), key, value, flags)?,
    }
    Ok(())
}
