//! The built-in demo and test image, made offline from the host's static busybox (Debian's
//! `busybox-static`): `/bin/busybox` with every applet hard-linked beside it, a minimal `/etc`,
//! and the usual empty directories. Timestamps come from the busybox binary, so importing twice
//! gives the same image id.

use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use carrel_core::Digest;

use super::import::ImportOptions;
use super::load::LoadInput;
use crate::{Engine, EngineError, NoProgress, Result};

/// Where Debian's `busybox-static` installs the binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
bin:x:2:2:bin:/bin:/bin/false\n\
sys:x:3:3:sys:/dev:/bin/false\n\
sync:x:4:100:sync:/bin:/bin/sync\n\
mail:x:8:8:mail:/var/spool/mail:/bin/false\n\
www-data:x:33:33:www-data:/var/www:/bin/false\n\
operator:x:37:37:Operator:/var:/bin/false\n\
nobody:x:65534:65534:nobody:/home:/bin/false\n";

const GROUP: &str = "root:x:0:\n\
daemon:x:1:\n\
bin:x:2:\n\
sys:x:3:\n\
adm:x:4:\n\
tty:x:5:\n\
disk:x:6:\n\
wheel:x:10:root\n\
mail:x:12:\n\
www-data:x:33:\n\
operator:x:37:\n\
staff:x:50:\n\
users:x:100:\n\
nogroup:x:65534:\n";

/// Build the root filesystem tar of the busybox image.
pub fn busybox_rootfs(busybox: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(busybox).map_err(|e| {
        EngineError::Precondition(format!(
            "cannot read {}: {e}; install Debian's busybox-static (apt-get install busybox-static)",
            busybox.display()
        ))
    })?;
    let out = Command::new(busybox).arg("--list").output().map_err(|e| {
        EngineError::Precondition(format!("cannot run {} --list: {e}", busybox.display()))
    })?;
    if !out.status.success() {
        return Err(EngineError::Precondition(format!(
            "{} --list failed; is it busybox?",
            busybox.display()
        )));
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && carrel_core::fs::is_plain_name(std::ffi::OsStr::new(l)))
        .filter(|l| l != "busybox")
        .collect();
    applets.sort();
    applets.dedup();
    let binary = std::fs::read(busybox).map_err(|e| EngineError::io("reading", busybox, e))?;
    let mtime = meta.mtime().max(0) as u64;

    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty())
    };
    let file = |b: &mut tar::Builder<Vec<u8>>,
                name: &str,
                mode: u32,
                data: &[u8]|
     -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data)
    };
    let io = |e| EngineError::io("building", "busybox rootfs", e);
    for (d, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("home/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("usr/", 0o755),
        ("usr/sbin/", 0o755),
        ("var/", 0o755),
        ("var/spool/", 0o755),
        ("var/spool/mail/", 0o755),
        ("var/www/", 0o755),
    ] {
        dir(&mut b, d, mode).map_err(io)?;
    }
    file(&mut b, "bin/busybox", 0o755, &binary).map_err(io)?;
    for a in &applets {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Link);
        h.set_mode(0o755);
        h.set_mtime(mtime);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{a}"), "bin/busybox")
            .map_err(io)?;
    }
    file(&mut b, "etc/passwd", 0o644, PASSWD.as_bytes()).map_err(io)?;
    file(&mut b, "etc/group", 0o644, GROUP.as_bytes()).map_err(io)?;
    file(&mut b, "etc/hostname", 0o644, b"busybox\n").map_err(io)?;
    b.into_inner().map_err(io)
}

impl Engine {
    /// `carrel image import-busybox`: build the demo image and tag it (default `busybox:latest`).
    pub fn import_busybox(&self, busybox: &Path, reference: &str) -> Result<Digest> {
        let rootfs = busybox_rootfs(busybox)?;
        let mtime = std::fs::metadata(busybox).map(|m| m.mtime()).unwrap_or(0);
        let opts = ImportOptions {
            reference: Some(reference.to_string()),
            changes: vec![
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                r#"CMD ["sh"]"#.into(),
            ],
            message: Some(format!("busybox from {}", busybox.display())),
            created: Some(mtime * 1_000_000_000),
        };
        self.image_import(
            LoadInput::Stream(Box::new(Cursor::new(rootfs))),
            &opts,
            &NoProgress,
        )
    }
}
