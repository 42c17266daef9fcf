//! `/proc/self/mountinfo`: which mounts exist, for recovery and feature probes.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::MountError;

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount id.
    pub id: u64,
    /// Parent mount id.
    pub parent_id: u64,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// The path inside the filesystem that is mounted (the bind source's path in its filesystem).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Optional fields (`shared:1`, `master:2`, ...).
    pub optional: Vec<String>,
    /// Filesystem type (`ext4`, `overlay`).
    pub fs_type: String,
    /// Mount source (device or `none`).
    pub source: String,
    /// Per-superblock options (`rw,prjquota`).
    pub super_options: String,
}

impl MountInfo {
    /// Whether `opt` (e.g. `prjquota`) is among the superblock or mount options.
    pub fn has_option(&self, opt: &str) -> bool {
        self.super_options
            .split(',')
            .chain(self.mount_options.split(','))
            .any(|o| o == opt || o.split_once('=').is_some_and(|(k, _)| k == opt))
    }
}

/// Decode the octal escapes (`\040` for space, `\011`, `\012`, `\134`) the kernel writes.
pub fn unescape(field: &str) -> OsString {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if v <= 0xff {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// Parse one mountinfo line.
pub fn parse_line(line: &str) -> Result<MountInfo, MountError> {
    let bad = || MountError::MountInfo(format!("malformed line {line:?}"));
    let mut fields = line.split(' ');
    let mut next = || fields.next().ok_or_else(bad);
    let id = next()?.parse().map_err(|_| bad())?;
    let parent_id = next()?.parse().map_err(|_| bad())?;
    let (major, minor) = next()?.split_once(':').ok_or_else(bad)?;
    let major = major.parse().map_err(|_| bad())?;
    let minor = minor.parse().map_err(|_| bad())?;
    let root = PathBuf::from(unescape(next()?));
    let mount_point = PathBuf::from(unescape(next()?));
    let mount_options = next()?.to_string();
    let mut optional = Vec::new();
    loop {
        let f = next()?;
        if f == "-" {
            break;
        }
        optional.push(f.to_string());
    }
    let fs_type = unescape(next()?).to_string_lossy().into_owned();
    let source = unescape(next()?).to_string_lossy().into_owned();
    let super_options = next().unwrap_or_default().to_string();
    Ok(MountInfo {
        id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        mount_options,
        optional,
        fs_type,
        source,
        super_options,
    })
}

/// Parse a whole mountinfo text.
pub fn parse(text: &str) -> Result<Vec<MountInfo>, MountError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

/// Every mount of this process's mount namespace, in the kernel's order (parents first).
pub fn read() -> Result<Vec<MountInfo>, MountError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| MountError::MountInfo(format!("reading /proc/self/mountinfo: {e}")))?;
    parse(&text)
}

/// From `mounts`, those at or below `prefix` (compared by path components), deepest first, and
/// among mounts stacked on one point the most recent first: the order to unmount them in.
pub fn under(mounts: &[MountInfo], prefix: &Path) -> Vec<MountInfo> {
    let mut out: Vec<MountInfo> = mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(prefix))
        .cloned()
        .collect();
    // Kernel order lists parents before children and older before newer stacked mounts, so the
    // reverse of it (stable within equal depth) is a safe unmount order.
    let order: std::collections::HashMap<u64, usize> =
        mounts.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
    out.sort_by(|a, b| {
        let da = a.mount_point.components().count();
        let db = b.mount_point.components().count();
        db.cmp(&da).then(order[&b.id].cmp(&order[&a.id]))
    });
    out
}

/// The mounts of this process at or below `prefix`, deepest first (see [`under`]).
pub fn mounts_under(prefix: &Path) -> Result<Vec<MountInfo>, MountError> {
    Ok(under(&read()?, prefix))
}

/// The mount that holds `path` (the deepest mount point that is a prefix of it). `path` should be
/// canonical.
pub fn mount_of(mounts: &[MountInfo], path: &Path) -> Option<MountInfo> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| m.clone())
}

/// Whether `path` is itself a mount point in this process's namespace.
pub fn is_mount_point(path: &Path) -> Result<bool, MountError> {
    Ok(read()?.iter().any(|m| m.mount_point == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
40 22 0:50 / /var/lib/carrel rw - xfs /dev/loop0 rw,attr2,inode64,prjquota
41 40 0:51 / /var/lib/carrel/overlay2/abc/merged rw - overlay overlay rw,lowerdir=/a:/b
42 40 0:52 / /var/lib/carrel/with\\040space rw - tmpfs tmpfs rw
43 41 0:53 / /var/lib/carrel/overlay2/abc/merged/proc rw - proc proc rw
44 40 0:54 / /var/lib/carrel/overlay2/abc/merged rw - tmpfs tmpfs rw
45 22 0:55 / /var/lib/carrel2 rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.len(), 8);
        assert_eq!(m[1].root, Path::new("/mnt1"));
        assert_eq!(m[1].optional, vec!["master:1"]);
        assert_eq!(m[1].fs_type, "ext3");
        assert_eq!(m[1].super_options, "rw,errors=continue");
        assert_eq!(m[4].mount_point, Path::new("/var/lib/carrel/with space"));
        assert!(m[2].has_option("prjquota"));
        assert!(!m[1].has_option("prjquota"));
        assert_eq!(unescape("a\\134b\\011c\\012"), OsString::from("a\\b\tc\n"));
        assert_eq!(unescape("trailing\\04"), OsString::from("trailing\\04"));
    }

    #[test]
    fn under_is_deepest_first_and_component_wise() {
        let m = parse(SAMPLE).unwrap();
        let got: Vec<u64> = under(&m, Path::new("/var/lib/carrel"))
            .iter()
            .map(|m| m.id)
            .collect();
        // carrel2 is not below carrel; the stacked tmpfs (44) comes before the overlay (41).
        assert_eq!(got, vec![43, 44, 41, 42, 40]);
        let holder = mount_of(&m, Path::new("/var/lib/carrel/overlay2/x")).unwrap();
        assert_eq!(holder.id, 40);
    }

    #[test]
    fn reads_own_mountinfo() {
        let all = read().unwrap();
        assert!(all.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
