//! `X-Docker-Container-Path-Stat`: what a path in a container is, resolved inside its root.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use carrel_core::fs::{Root, clean_absolute};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use super::{asserts_directory, docker_base};

/// Go's `os.FileMode` bits, as Docker puts them in `PathStat.mode`.
mod gomode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
}

/// Convert a Linux `st_mode` to Go's `os.FileMode` (permission bits and Go's type and special
/// bits), the `mode` Docker reports for paths in containers.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    match FileType::from_raw_mode(st_mode) {
        FileType::Directory => m |= gomode::DIR,
        FileType::Symlink => m |= gomode::SYMLINK,
        FileType::BlockDevice => m |= gomode::DEVICE,
        FileType::CharacterDevice => m |= gomode::DEVICE | gomode::CHAR_DEVICE,
        FileType::Fifo => m |= gomode::NAMED_PIPE,
        FileType::Socket => m |= gomode::SOCKET,
        _ => {}
    }
    if st_mode & 0o4000 != 0 {
        m |= gomode::SETUID;
    }
    if st_mode & 0o2000 != 0 {
        m |= gomode::SETGID;
    }
    if st_mode & 0o1000 != 0 {
        m |= gomode::STICKY;
    }
    m
}

/// Docker's `ContainerPathStat` (`api/types/container.PathStat`), sent base64-encoded as the
/// `X-Docker-Container-Path-Stat` header of `HEAD|GET /containers/{id}/archive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    /// Base name of the path as given (`.` for `DIR/.`, `/` for the root).
    pub name: String,
    /// Size in bytes (of the link itself for a symlink).
    pub size: i64,
    /// Go `os.FileMode`: permissions plus Go's type bits ([`go_file_mode`]).
    pub mode: u32,
    /// Modification time, RFC 3339 with nanoseconds as Go writes it (trailing zeros trimmed).
    pub mtime: String,
    /// For a symlink: its target fully resolved inside the container, as an absolute path.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

impl PathStat {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & gomode::DIR != 0
    }

    /// Whether it is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.mode & gomode::SYMLINK != 0
    }

    /// Whether it is a regular file.
    pub fn is_regular(&self) -> bool {
        self.mode
            & (gomode::DIR
                | gomode::SYMLINK
                | gomode::DEVICE
                | gomode::NAMED_PIPE
                | gomode::SOCKET
                | gomode::CHAR_DEVICE)
            == 0
    }

    /// Whether it is a device (Docker's CLI refuses those as copy destinations: `got a
    /// device`).
    pub fn is_device(&self) -> bool {
        self.mode & gomode::DEVICE != 0
    }

    /// The value of the `X-Docker-Container-Path-Stat` header: base64 of the JSON.
    pub fn header_value(&self) -> String {
        base64(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Go's `time.RFC3339Nano` in UTC: fractional seconds without trailing zeros.
pub(crate) fn go_rfc3339_nano(sec: i64, nsec: i64) -> String {
    let t = chrono::DateTime::from_timestamp(sec, nsec.clamp(0, 999_999_999) as u32)
        .unwrap_or_default();
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nsec > 0 {
        let frac = format!("{:09}", nsec);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect()
}

/// Resolve `path` inside the root the way Docker's `FollowSymlinkInScope` does: every symlink
/// (the last component too) is replaced by its target, absolute targets taken from the root,
/// `..` never climbing above it; components that do not exist are kept as they are. Returns an
/// absolute path in the container. Only ever reads links (`readlinkat` on handles resolved
/// inside the root), never follows one on the host.
pub(crate) fn resolve_in_scope(root: &Root, path: &Path) -> io::Result<PathBuf> {
    let mut pending = components(&clean_absolute(&Path::new("/").join(path)));
    let mut real = PathBuf::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        let candidate = real.join(&c);
        let (parent, name) = match root.open_parent(&candidate) {
            Ok(p) => p,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                real = candidate;
                continue;
            }
            Err(e) => return Err(e),
        };
        match rfs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                links += 1;
                if links > 255 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = rfs::readlinkat(&parent, &name, Vec::new())?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                let base = Path::new("/").join(if target.is_absolute() {
                    Path::new("")
                } else {
                    real.as_path()
                });
                let mut spliced = components(&clean_absolute(&base.join(target)));
                spliced.extend(pending.drain(..));
                pending = spliced;
                real = PathBuf::new();
            }
            Ok(_) | Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {
                real = candidate;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Path::new("/").join(real))
}

/// Stat `path` in the container (Docker's `ResolvePath` + `StatPath`): parent components are
/// resolved inside the root; the last one is not followed unless the path ends with `/` or
/// `/.`, in which case it must be a directory.
pub(crate) fn stat_path(root: &Root, path: &str) -> io::Result<PathStat> {
    let abs = clean_absolute(&Path::new("/").join(path));
    let follow = asserts_directory(path);
    let st = if abs == Path::new("/") {
        rfs::fstat(root.fd())?
    } else if follow {
        let fd = root.open_at(&abs, OFlags::PATH, Mode::empty())?;
        rfs::fstat(&fd)?
    } else {
        let (parent, name) = root.open_parent(&abs)?;
        rfs::statat(&parent, &name, AtFlags::SYMLINK_NOFOLLOW)?
    };
    let ft = FileType::from_raw_mode(st.st_mode);
    if follow && ft != FileType::Directory {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    let link_target = if ft == FileType::Symlink {
        resolve_in_scope(root, &abs)?.to_string_lossy().into_owned()
    } else {
        String::new()
    };
    Ok(PathStat {
        name: docker_base(path),
        size: st.st_size,
        mode: go_file_mode(st.st_mode),
        mtime: go_rfc3339_nano(st.st_mtime, st.st_mtime_nsec as i64),
        link_target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn go_modes_and_times() {
        assert_eq!(go_file_mode(0o040755), 0x8000_01ed);
        assert_eq!(go_file_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(0o041777), 0x8000_0000 | 0x10_0000 | 0o777);
        assert_eq!(go_file_mode(0o100644), 0o644);
        assert_eq!(go_rfc3339_nano(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(go_rfc3339_nano(1, 500_000_000), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn scope_resolution_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", r.join("dangling")).unwrap();
        let root = Root::open(r).unwrap();
        assert_eq!(
            resolve_in_scope(&root, Path::new("/abs")).unwrap(),
            Path::new("/etc")
        );
        assert_eq!(
            resolve_in_scope(&root, Path::new("/rel/passwd")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            resolve_in_scope(&root, Path::new("dangling")).unwrap(),
            Path::new("/nonexistent/x")
        );
        let st = stat_path(&root, "/abs").unwrap();
        assert!(st.is_symlink());
        assert_eq!(st.link_target, "/etc");
        assert_eq!(st.name, "abs");
        let st = stat_path(&root, "/abs/").unwrap();
        assert!(st.is_dir());
        assert_eq!(stat_path(&root, "/abs/.").unwrap().name, ".");
        assert_eq!(stat_path(&root, "/").unwrap().name, "/");
    }
}
