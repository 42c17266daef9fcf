//! XFS project quotas: the `size` option of a plain local volume.
//!
//! Each such volume's `_data` gets its own project id with the inherit flag
//! (`FS_IOC_FSSETXATTR`, `FS_XFLAG_PROJINHERIT`), so everything created below it is charged to
//! the project, and a hard block limit (`quotactl_fd(Q_XSETQLIM, PRJQUOTA)`, falling back to
//! `quotactl` on the block device). Writing past the limit fails with `EDQUOT`.
//!
//! Project ids are global to the filesystem. A data root takes a range of its own: its
//! `volumes` directory gets a base id (derived from its device and inode, and stored as that
//! directory's own project id so it survives), and volumes get `base + 1`, `base + 2`, … from a
//! counter in the `settings` table. Ids are never reused.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::{Engine, EngineError, Result};

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsDiskQuota {
    version: i8,
    flags: i8,
    fieldmask: u16,
    id: u32,
    blk_hardlimit: u64,
    blk_softlimit: u64,
    ino_hardlimit: u64,
    ino_softlimit: u64,
    bcount: u64,
    icount: u64,
    itimer: i32,
    btimer: i32,
    iwarns: u16,
    bwarns: u16,
    itimer_hi: i8,
    btimer_hi: i8,
    rtbtimer_hi: i8,
    padding2: i8,
    rtb_hardlimit: u64,
    rtb_softlimit: u64,
    rtbcount: u64,
    rtbtimer: i32,
    rtbwarns: u16,
    padding3: i16,
    padding4: [u8; 8],
}

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const Q_XSETQLIM: u32 = (('X' as u32) << 8) + 4;
const PRJQUOTA: u32 = 2;
const FS_DQUOT_VERSION: i8 = 1;
const FS_PROJ_QUOTA: i8 = 2;
const FS_DQ_BSOFT: u16 = 1 << 2;
const FS_DQ_BHARD: u16 = 1 << 3;
const SETTING_NEXT: &str = "volume-quota-next-project";

fn qcmd(cmd: u32, ty: u32) -> libc::c_int {
    ((cmd << 8) | (ty & 0xff)) as libc::c_int
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn get_xattr(fd: BorrowedFd<'_>) -> std::io::Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one `struct fsxattr` (28 bytes) to the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) };
    if rc != 0 {
        return Err(last_err());
    }
    Ok(x)
}

fn set_xattr(fd: BorrowedFd<'_>, x: &FsXattr) -> std::io::Result<()> {
    // SAFETY: FS_IOC_FSSETXATTR reads one `struct fsxattr` from the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, x as *const FsXattr) };
    if rc != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// `quotactl_fd(fd, cmd, id, addr)`, or `quotactl(cmd, device, id, addr)` on kernels without it.
fn quotactl(
    fd: BorrowedFd<'_>,
    path: &Path,
    cmd: u32,
    id: u32,
    q: &mut FsDiskQuota,
) -> std::io::Result<()> {
    // SAFETY: the quota commands used here read or write one `struct fs_disk_quota`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            fd.as_raw_fd(),
            qcmd(cmd, PRJQUOTA),
            id,
            q as *mut FsDiskQuota,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = last_err();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    let device = block_device(path)?;
    let dev = std::ffi::CString::new(device.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: as above; `dev` is a NUL-terminated path.
    let rc = unsafe {
        libc::quotactl(
            qcmd(cmd, PRJQUOTA),
            dev.as_ptr(),
            id as libc::c_int,
            (q as *mut FsDiskQuota).cast(),
        )
    };
    if rc != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// The block device holding `path` (from mountinfo).
fn block_device(path: &Path) -> std::io::Result<std::path::PathBuf> {
    let canon = std::fs::canonicalize(path)?;
    let mounts =
        carrel_mount::mountinfo::read().map_err(|e| std::io::Error::other(e.to_string()))?;
    carrel_mount::mountinfo::mount_of(&mounts, &canon)
        .map(|m| std::path::PathBuf::from(m.source))
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))
}

fn open_dir(path: &Path) -> Result<std::os::fd::OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| EngineError::io("opening", path, e.into()))
}

/// The base project id of this data root's volumes (set on `volumes/` when missing).
fn base_id(volumes: &Path) -> Result<u32> {
    let fd = open_dir(volumes)?;
    let mut x =
        get_xattr(fd.as_fd()).map_err(|e| EngineError::io("reading project id of", volumes, e))?;
    if x.projid != 0 {
        return Ok(x.projid);
    }
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(volumes).map_err(|e| EngineError::io("reading", volumes, e))?;
    let mix = (m.dev() ^ m.ino().rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // 32 000 ranges of 65 536 ids, above the small ids administrators hand out by hand.
    x.projid = (((mix >> 33) % 32_000 + 1) as u32) << 16;
    set_xattr(fd.as_fd(), &x).map_err(|e| EngineError::io("setting project id of", volumes, e))?;
    Ok(x.projid)
}

/// Give `data` (a volume's `_data`) a project of its own, if it has none, and a hard limit of
/// `bytes`. Idempotent.
pub(crate) fn set_quota(engine: &Engine, data: &Path, bytes: u64) -> Result<()> {
    let volumes = engine.layout().volumes();
    let fd = open_dir(data)?;
    let mut x =
        get_xattr(fd.as_fd()).map_err(|e| EngineError::io("reading project id of", data, e))?;
    let base = base_id(&volumes)?;
    if x.projid == 0 || x.projid == base {
        let id = engine.meta().write(|tx| {
            let next = carrel_meta::settings::get(tx, SETTING_NEXT)?
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|&n| n > base)
                .unwrap_or(base + 1);
            carrel_meta::settings::set(tx, SETTING_NEXT, &(next + 1).to_string())?;
            Ok(next)
        })?;
        x.projid = id;
        x.xflags |= FS_XFLAG_PROJINHERIT;
        set_xattr(fd.as_fd(), &x).map_err(|e| EngineError::io("setting project id of", data, e))?;
    }
    let blocks = bytes.div_ceil(512);
    let mut q = FsDiskQuota {
        version: FS_DQUOT_VERSION,
        flags: FS_PROJ_QUOTA,
        fieldmask: FS_DQ_BSOFT | FS_DQ_BHARD,
        id: x.projid,
        blk_hardlimit: blocks,
        blk_softlimit: blocks,
        ..Default::default()
    };
    quotactl(fd.as_fd(), data, Q_XSETQLIM, x.projid, &mut q)
        .map_err(|e| EngineError::io("setting the quota of", data, e))?;
    tracing::debug!(path = %data.display(), project = x.projid, bytes, "volume quota set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_match_the_kernel() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<FsDiskQuota>(), 112);
        assert_eq!(qcmd(Q_XSETQLIM, PRJQUOTA), 0x0058_0402);
    }
}
