//! The `local` driver's options: `type`/`device`/`o` (a filesystem mounted on `_data` on first
//! use, with `mount(2)` exactly as moby's `local` driver and `moby/sys/mount` do it) and `size`
//! (an XFS project quota on `_data`, or the size of a `type=tmpfs` volume).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use carrel_mount::Mounter;
use rustix::fs::{Mode, OFlags};

use crate::{EngineError, Result};

/// Whether the options ask for a mounted filesystem (moby's `needsMount`: `type` or `device`).
pub(crate) fn needs_mount(options: &BTreeMap<String, String>) -> bool {
    options.get("type").is_some_and(|t| !t.is_empty())
        || options.get("device").is_some_and(|d| !d.is_empty())
}

fn is_tmpfs(options: &BTreeMap<String, String>) -> bool {
    options.get("type").map(String::as_str) == Some("tmpfs")
}

/// Whether a `size` option can be honoured: as the size of a `type=tmpfs` volume (a carrel
/// extension), or as a project quota on a plain volume when the data root is XFS with project
/// quotas. (Docker's answer otherwise: `quota size requested but no quota support`.)
pub(crate) fn size_supported(options: &BTreeMap<String, String>, volumes_dir: &Path) -> bool {
    if !options.contains_key("size") {
        return true;
    }
    if is_tmpfs(options) {
        return true;
    }
    !needs_mount(options) && carrel_mount::features::project_quota(volumes_dir)
}

/// The quota (bytes) a plain volume asks for: its `size`, when above 0 and not a tmpfs size.
pub(crate) fn quota_size(options: &BTreeMap<String, String>) -> Result<Option<u64>> {
    if needs_mount(options) {
        return Ok(None);
    }
    let Some(v) = options.get("size") else {
        return Ok(None);
    };
    let bytes = carrel_mountspec::cli::ram_in_bytes(v)
        .ok_or_else(|| EngineError::InvalidArgument(format!("invalid size: '{v}'")))?;
    Ok((bytes > 0).then_some(bytes as u64))
}

/// One entry of moby's mount flag table: (clear the flag instead of setting it, flag).
fn flag_of(opt: &str) -> Option<(bool, libc::c_ulong)> {
    use libc::*;
    Some(match opt {
        "defaults" => (false, 0),
        "ro" => (false, MS_RDONLY),
        "rw" => (true, MS_RDONLY),
        "suid" => (true, MS_NOSUID),
        "nosuid" => (false, MS_NOSUID),
        "dev" => (true, MS_NODEV),
        "nodev" => (false, MS_NODEV),
        "exec" => (true, MS_NOEXEC),
        "noexec" => (false, MS_NOEXEC),
        "sync" => (false, MS_SYNCHRONOUS),
        "async" => (true, MS_SYNCHRONOUS),
        "dirsync" => (false, MS_DIRSYNC),
        "remount" => (false, MS_REMOUNT),
        "mand" => (false, MS_MANDLOCK),
        "nomand" => (true, MS_MANDLOCK),
        "atime" => (true, MS_NOATIME),
        "noatime" => (false, MS_NOATIME),
        "diratime" => (true, MS_NODIRATIME),
        "nodiratime" => (false, MS_NODIRATIME),
        "bind" => (false, MS_BIND),
        "rbind" => (false, MS_BIND | MS_REC),
        "unbindable" => (false, MS_UNBINDABLE),
        "runbindable" => (false, MS_UNBINDABLE | MS_REC),
        "private" => (false, MS_PRIVATE),
        "rprivate" => (false, MS_PRIVATE | MS_REC),
        "shared" => (false, MS_SHARED),
        "rshared" => (false, MS_SHARED | MS_REC),
        "slave" => (false, MS_SLAVE),
        "rslave" => (false, MS_SLAVE | MS_REC),
        "relatime" => (false, MS_RELATIME),
        "norelatime" => (true, MS_RELATIME),
        "strictatime" => (false, MS_STRICTATIME),
        "nostrictatime" => (true, MS_STRICTATIME),
        _ => return None,
    })
}

/// Split mount options into `mount(2)` flags and the data string (moby's `parseOptions`).
pub(crate) fn parse_options(o: &str) -> (libc::c_ulong, String) {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for opt in o.split(',').filter(|s| !s.is_empty()) {
        match flag_of(opt) {
            Some((clear, f)) if clear => flags &= !f,
            Some((_, f)) => flags |= f,
            None => data.push(opt),
        }
    }
    (flags, data.join(","))
}

/// Go's text of an errno (`no such file or directory`).
fn go_errno(e: i32) -> String {
    let s = std::io::Error::from_raw_os_error(e).to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// The value of `key=` in a comma-separated option string.
fn option_value<'a>(o: &'a str, key: &str) -> Option<&'a str> {
    o.split(',')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

/// Resolve a host name to an address, as moby does for `addr=` and CIFS device URLs.
fn resolve_host(host: &str) -> std::result::Result<String, String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(host.to_string());
    }
    use std::net::ToSocketAddrs;
    (host, 0)
        .to_socket_addrs()
        .map_err(|e| format!("lookup {host}: {e}"))?
        .next()
        .map(|a| a.ip().to_string())
        .ok_or_else(|| format!("lookup {host}: no such host"))
}

fn mount_failed(msg: String, o: &str) -> EngineError {
    let msg = match option_value(o, "password").filter(|p| !p.is_empty()) {
        Some(p) => msg.replace(&format!("password={p}"), "password=********"),
        None => msg,
    };
    EngineError::Precondition(format!("failed to mount local volume: {msg}"))
}

/// Mount the filesystem `options` describe on `target` (a volume's `_data`), as moby's local
/// driver does: `addr=` of nfs/cifs and the host of a CIFS device resolved to an address, the
/// flags of `o` applied as `mount(2)` flags (propagation flags in a second call, a read-only bind
/// remounted read-only), the rest passed as data. For `type=tmpfs`, `size` becomes the tmpfs
/// size unless `o` gives one.
pub(crate) fn mount(options: &BTreeMap<String, String>, target: &Path) -> Result<()> {
    let fstype = options.get("type").cloned().unwrap_or_default();
    let mut device = options.get("device").cloned().unwrap_or_default();
    let mut o = options.get("o").cloned().unwrap_or_default();
    if fstype == "tmpfs"
        && option_value(&o, "size").is_none()
        && let Some(size) = options.get("size")
    {
        let bytes = carrel_mountspec::cli::ram_in_bytes(size)
            .ok_or_else(|| EngineError::InvalidArgument(format!("invalid size: '{size}'")))?;
        if bytes > 0 {
            o = if o.is_empty() {
                format!("size={bytes}")
            } else {
                format!("{o},size={bytes}")
            };
        }
    }
    if fstype == "nfs" || fstype == "cifs" {
        if let Some(addr) = option_value(&o, "addr").filter(|a| !a.is_empty()) {
            let addr = addr.to_string();
            let ip = resolve_host(&addr).map_err(|e| mount_failed(e, &o))?;
            o = o.replacen(&format!("addr={addr}"), &format!("addr={ip}"), 1);
        }
        if fstype == "cifs"
            && let Some(rest) = device.strip_prefix("//")
        {
            let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..host_end];
            let (userinfo, host) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let ip = resolve_host(host).map_err(|e| mount_failed(e, &o))?;
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            device = format!("//{user}{ip}{}", &rest[host_end..]);
        }
    }
    let (flags, data) = parse_options(&o);
    // Mount through a handle on `_data` taken without following a symlink.
    let fd = rustix::fs::open(
        target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| EngineError::io("opening volume directory", target, e.into()))?;
    let via = carrel_core::fs::proc_fd_path(fd.as_fd());
    let shown = target.display().to_string();
    let cstr = |s: &[u8]| {
        CString::new(s)
            .map_err(|_| mount_failed(format!("mount {device}:{shown}: NUL byte in an option"), &o))
    };
    let c_target = cstr(via.as_os_str().as_bytes())?;
    let c_device = cstr(device.as_bytes())?;
    let c_type = cstr(fstype.as_bytes())?;
    let c_data = cstr(data.as_bytes())?;
    let ptypes = libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE;
    let oflags = flags & !ptypes;
    let describe = |op: &str, src: &str, f: libc::c_ulong, d: &str, errno: i32| {
        let mut s = format!("{op} ");
        if src.is_empty() {
            s.push_str(&shown);
        } else {
            s.push_str(&format!("{src}:{shown}"));
        }
        if f != 0 {
            s.push_str(&format!(", flags: {f:#x}"));
        }
        if !d.is_empty() {
            s.push_str(&format!(", data: {d}"));
        }
        s.push_str(&format!(": {}", go_errno(errno)));
        s
    };
    let sys_mount = |src: Option<&CString>, ty: Option<&CString>, f, d: Option<&CString>| {
        raw_mount(&c_target, src, ty, f, d)
    };
    if flags & libc::MS_REMOUNT == 0 || !data.is_empty() {
        sys_mount(Some(&c_device), Some(&c_type), oflags, Some(&c_data))
            .map_err(|e| mount_failed(describe("mount", &device, oflags, &data, e), &o))?;
    }
    let undo = || {
        let _ = carrel_mount::KernelMounter::new().unmount(target, true);
    };
    // The handle above still names the directory under the new mount: the follow-up calls
    // (propagation, read-only remount) go to the mount itself, through a fresh handle.
    let fd = rustix::fs::open(
        target,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        undo();
        EngineError::io("opening volume directory", target, e.into())
    })?;
    let c_target = cstr(
        carrel_core::fs::proc_fd_path(fd.as_fd())
            .as_os_str()
            .as_bytes(),
    )?;
    let sys_mount = |src: Option<&CString>, ty: Option<&CString>, f, d: Option<&CString>| {
        raw_mount(&c_target, src, ty, f, d)
    };
    if flags & ptypes != 0 {
        let pflags = flags & (ptypes | libc::MS_REC | libc::MS_SILENT);
        if let Err(e) = sys_mount(None, None, pflags, None) {
            undo();
            return Err(mount_failed(describe("mount", "", pflags, "", e), &o));
        }
    }
    let broflags = libc::MS_BIND | libc::MS_RDONLY;
    if oflags & broflags == broflags {
        let f = oflags | libc::MS_REMOUNT;
        if let Err(e) = sys_mount(None, None, f, None) {
            undo();
            return Err(mount_failed(describe("remount", "", f, "", e), &o));
        }
    }
    Ok(())
}

/// Whether `path` is a mount point now.
pub(crate) fn is_mounted(path: &Path) -> Result<bool> {
    carrel_mount::mountinfo::is_mount_point(path).map_err(mount_error)
}

pub(crate) fn mount_error(e: carrel_mount::MountError) -> EngineError {
    EngineError::Precondition(e.to_string())
}

/// Unmount a volume's filesystem (lazily when it is busy). Not mounted is fine.
pub(crate) fn unmount(path: &Path) -> Result<()> {
    let m = carrel_mount::KernelMounter::new();
    // Stacked mounts (a repeated mount after a crash) come off one by one.
    for _ in 0..16 {
        if !is_mounted(path)? {
            return Ok(());
        }
        match m.unmount(path, false) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                m.unmount(path, true).map_err(mount_error)?;
            }
            Err(e) => return Err(mount_error(e)),
        }
    }
    Ok(())
}

/// Unmount everything mounted at or below `dir` (deepest first, lazily), and check that nothing
/// is left: a directory is only ever deleted once no mount can lead the deletion elsewhere.
pub(crate) fn unmount_all_under(dir: &Path) -> Result<()> {
    let m = carrel_mount::KernelMounter::new();
    for _ in 0..4 {
        let mounts = carrel_mount::mountinfo::mounts_under(dir).map_err(mount_error)?;
        if mounts.is_empty() {
            return Ok(());
        }
        for mi in mounts {
            if let Err(e) = m.unmount(&mi.mount_point, true) {
                tracing::warn!(target = %mi.mount_point.display(), %e, "could not unmount");
            }
        }
    }
    Err(EngineError::Precondition(format!(
        "{} still has mounts that cannot be removed; it is left in place",
        dir.display()
    )))
}

/// mount(2) on `target` with optional source, type and data; the errno on failure.
fn raw_mount(
    target: &CString,
    src: Option<&CString>,
    ty: Option<&CString>,
    flags: libc::c_ulong,
    data: Option<&CString>,
) -> std::result::Result<(), i32> {
    // SAFETY: every pointer is a valid NUL-terminated string or null, as mount(2) takes.
    let rc = unsafe {
        libc::mount(
            src.map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            ty.map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_like_moby() {
        let (f, d) = parse_options("bind,ro");
        assert_eq!(f, libc::MS_BIND | libc::MS_RDONLY);
        assert_eq!(d, "");
        let (f, d) = parse_options("addr=1.2.3.4,rw,nfsvers=4,noexec");
        assert_eq!(f, libc::MS_NOEXEC);
        assert_eq!(d, "addr=1.2.3.4,nfsvers=4");
        let (f, _) = parse_options("ro,rw");
        assert_eq!(f, 0);
        assert_eq!(go_errno(libc::ENOENT), "no such file or directory");
        assert_eq!(option_value("a=1,password=x,b", "password"), Some("x"));
        let e = mount_failed(
            "mount x, data: password=secret: denied".into(),
            "password=secret",
        );
        assert_eq!(
            e.to_string(),
            "failed to mount local volume: mount x, data: password=********: denied"
        );
    }

    #[test]
    fn which_volumes_mount() {
        let o = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(!needs_mount(&o(&[])));
        assert!(!needs_mount(&o(&[("size", "1m")])));
        assert!(needs_mount(&o(&[("type", "tmpfs"), ("device", "tmpfs")])));
        assert_eq!(quota_size(&o(&[("size", "1m")])).unwrap(), Some(1 << 20));
        assert_eq!(quota_size(&o(&[("size", "0")])).unwrap(), None);
        assert_eq!(
            quota_size(&o(&[
                ("type", "tmpfs"),
                ("device", "tmpfs"),
                ("size", "1m")
            ]))
            .unwrap(),
            None
        );
        let tmp = std::env::temp_dir();
        assert!(size_supported(
            &o(&[("type", "tmpfs"), ("device", "tmpfs"), ("size", "1m")]),
            &tmp
        ));
    }
}
