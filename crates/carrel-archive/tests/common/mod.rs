//! Shared test helpers: a byte-exact tar builder, the containment harness of ADVERSARIAL.md and
//! tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use carrel_archive::{ApplyOptions, ApplyStats, ArchiveError, WhiteoutFormat, apply_layer};

// ---------------------------------------------------------------------------------------------
// Tar builder
// ---------------------------------------------------------------------------------------------

/// A numeric header field value: octal when it fits, otherwise base-256 (which can also carry
/// negative numbers).
#[derive(Clone, Copy, Debug)]
pub enum Num {
    Val(u64),
    Neg(i64),
}

/// One raw header.
#[derive(Clone, Debug)]
pub struct H {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: Option<u64>,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub major: Num,
    pub minor: Num,
    pub gnu: bool,
    pub data: Vec<u8>,
}

impl H {
    pub fn new(name: impl AsRef<[u8]>, typeflag: u8) -> H {
        H {
            name: name.as_ref().to_vec(),
            typeflag,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: None,
            mtime: 1_600_000_000,
            link: Vec::new(),
            major: Num::Val(0),
            minor: Num::Val(0),
            gnu: false,
            data: Vec::new(),
        }
    }
    pub fn mode(mut self, m: u32) -> H {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> H {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> H {
        self.mtime = t;
        self
    }
    pub fn link(mut self, l: impl AsRef<[u8]>) -> H {
        self.link = l.as_ref().to_vec();
        self
    }
    pub fn data(mut self, d: impl AsRef<[u8]>) -> H {
        self.data = d.as_ref().to_vec();
        self
    }
    pub fn dev(mut self, major: Num, minor: Num) -> H {
        self.major = major;
        self.minor = minor;
        self
    }
    /// Declare a size different from the data that follows.
    pub fn size(mut self, s: u64) -> H {
        self.size = Some(s);
        self
    }
}

fn put_str(b: &mut [u8], s: &[u8]) {
    let n = s.len().min(b.len());
    b[..n].copy_from_slice(&s[..n]);
}

fn put_num(b: &mut [u8], v: Num) {
    let len = b.len();
    match v {
        Num::Val(v) if v < 8u64.pow(len as u32 - 1) => {
            let s = format!("{:0width$o}\0", v, width = len - 1);
            b.copy_from_slice(s.as_bytes());
        }
        Num::Val(v) => {
            b.fill(0);
            let bytes = v.to_be_bytes();
            b[len - 8..].copy_from_slice(&bytes);
            b[0] |= 0x80;
        }
        Num::Neg(v) => {
            b.fill(0xff);
            let bytes = v.to_be_bytes();
            b[len - 8..].copy_from_slice(&bytes);
        }
    }
}

/// Build a 512-byte header block.
pub fn header_block(h: &H) -> [u8; 512] {
    let mut b = [0u8; 512];
    put_str(&mut b[0..100], &h.name);
    put_num(&mut b[100..108], Num::Val(u64::from(h.mode)));
    put_num(&mut b[108..116], Num::Val(h.uid));
    put_num(&mut b[116..124], Num::Val(h.gid));
    put_num(
        &mut b[124..136],
        Num::Val(h.size.unwrap_or(h.data.len() as u64)),
    );
    put_num(&mut b[136..148], Num::Val(h.mtime));
    b[156] = h.typeflag;
    put_str(&mut b[157..257], &h.link);
    if h.gnu {
        b[257..263].copy_from_slice(b"ustar ");
        b[263..265].copy_from_slice(b" \0");
    } else {
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
    }
    put_num(&mut b[329..337], h.major);
    put_num(&mut b[337..345], h.minor);
    set_checksum(&mut b);
    b
}

pub fn set_checksum(b: &mut [u8; 512]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// One PAX record.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut size = base + base.to_string().len();
    if size.to_string().len() + base != size {
        size = base + size.to_string().len();
    }
    let mut out = size.to_string().into_bytes();
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// A tar stream under construction.
#[derive(Default, Clone)]
pub struct Tar {
    pub buf: Vec<u8>,
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    /// Append a header and its data (padded).
    pub fn raw(&mut self, h: H) -> &mut Tar {
        let blk = header_block(&h);
        self.buf.extend_from_slice(&blk);
        self.buf.extend_from_slice(&h.data);
        let pad = (512 - h.data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// Append a PAX `x` header with raw record bytes.
    pub fn pax_raw(&mut self, records: &[u8]) -> &mut Tar {
        self.raw(H::new("PaxHeaders.0/x", b'x').data(records))
    }

    /// Append a PAX `x` header with these records.
    pub fn pax(&mut self, records: &[(&[u8], &[u8])]) -> &mut Tar {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.pax_raw(&data)
    }

    /// An entry; names longer than 100 bytes get a PAX path record.
    pub fn entry(&mut self, h: H) -> &mut Tar {
        if h.name.len() > 100 || h.link.len() > 100 {
            let mut recs = Vec::new();
            if h.name.len() > 100 {
                recs.extend(pax_record(b"path", &h.name));
            }
            if h.link.len() > 100 {
                recs.extend(pax_record(b"linkpath", &h.link));
            }
            self.pax_raw(&recs);
            let mut short = h.clone();
            short.name.truncate(100);
            short.link.truncate(100);
            return self.raw(short);
        }
        self.raw(h)
    }

    pub fn file(&mut self, name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> &mut Tar {
        self.entry(H::new(name, b'0').data(data))
    }
    pub fn dir(&mut self, name: impl AsRef<[u8]>, mode: u32) -> &mut Tar {
        self.entry(H::new(name, b'5').mode(mode))
    }
    pub fn symlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Tar {
        self.entry(H::new(name, b'2').mode(0o777).link(target))
    }
    pub fn hardlink(&mut self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Tar {
        self.entry(H::new(name, b'1').link(target))
    }
    /// A regular file with xattrs (PAX SCHILY.xattr records).
    pub fn file_xattrs(
        &mut self,
        name: impl AsRef<[u8]>,
        data: impl AsRef<[u8]>,
        xattrs: &[(&str, &[u8])],
    ) -> &mut Tar {
        let recs: Vec<(Vec<u8>, Vec<u8>)> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}").into_bytes(), v.to_vec()))
            .collect();
        let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        self.pax(&refs);
        self.file(name, data)
    }

    /// The stream with the end-of-archive marker.
    pub fn finish(&self) -> Vec<u8> {
        let mut b = self.buf.clone();
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

// ---------------------------------------------------------------------------------------------
// Containment harness
// ---------------------------------------------------------------------------------------------

/// What is recorded about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub size: u64,
    pub nlink: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub content: Option<carrel_core::Digest>,
    pub link: Option<Vec<u8>>,
}

pub fn kind_of(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    }
}

pub fn xattrs_of(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => n,
        Err(_) => return out,
    };
    let names: Vec<Vec<u8>> = buf[..n]
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    for name in names {
        let mut v = vec![0u8; 65536];
        if let Ok(n) = rustix::fs::lgetxattr(p, OsStr::from_bytes(&name), &mut v[..]) {
            v.truncate(n);
            out.insert(name, v);
        }
    }
    out
}

pub fn node(p: &Path) -> Node {
    let m = fs::symlink_metadata(p).unwrap();
    let kind = kind_of(m.file_type());
    Node {
        kind,
        ino: m.ino(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        size: m.size(),
        nlink: m.nlink(),
        xattrs: xattrs_of(p),
        content: (kind == "file").then(|| carrel_core::Digest::of_bytes(&fs::read(p).unwrap())),
        link: (kind == "symlink")
            .then(|| fs::read_link(p).unwrap().as_os_str().as_bytes().to_vec()),
    }
}

/// Record `p` and everything below it, except paths under `skip`.
pub fn snapshot_into(p: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    if p == skip {
        return;
    }
    let n = node(p);
    let is_dir = n.kind == "dir";
    out.insert(p.to_path_buf(), n);
    if is_dir {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for c in names {
            snapshot_into(&c, skip, out);
        }
    }
}

/// The containment harness: `T/root` (or another name) with canaries around it and a host-wide
/// canary directory (its own temp dir, absolute path used as a symlink target).
pub struct Fixture {
    pub t: tempfile::TempDir,
    pub root: PathBuf,
    pub canary: tempfile::TempDir,
    before: BTreeMap<PathBuf, Node>,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_root("root")
    }

    pub fn with_root(name: &str) -> Fixture {
        let t = tempfile::Builder::new()
            .prefix("carrel-archive-t")
            .tempdir()
            .unwrap();
        let root = t.path().join(name);
        fs::create_dir(&root).unwrap();
        let mk = |rel: &str, content: &[u8], mode: u32| {
            let p = t.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        };
        mk("victim/hello", b"victim", 0o644);
        mk("dest-evil/secret", b"secret", 0o600);
        mk("perm400", b"perm400", 0o400);
        mk("also-exists-outside-root", b"also", 0o640);
        mk("etc/passwd", b"root:x:0:0:host", 0o644);
        fs::create_dir(t.path().join("outside-dir")).unwrap();
        fs::set_permissions(
            t.path().join("outside-dir"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        let canary = tempfile::Builder::new()
            .prefix("carrel-canary-")
            .tempdir()
            .unwrap();
        fs::write(canary.path().join("file"), b"canary").unwrap();
        fs::set_permissions(
            canary.path().join("file"),
            fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        // Distinct, old times make any utime through a symlink visible.
        for p in [
            t.path().join("victim/hello"),
            t.path().join("dest-evil/secret"),
            t.path().join("perm400"),
            canary.path().join("file"),
        ] {
            let ts = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: 1_000_000,
                    tv_nsec: 0,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: 1_000_000,
                    tv_nsec: 0,
                },
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &ts,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
        let mut fx = Fixture {
            t,
            root,
            canary,
            before: BTreeMap::new(),
        };
        fx.before = fx.snapshot();
        fx
    }

    pub fn t(&self) -> &Path {
        self.t.path()
    }

    pub fn canary(&self) -> &Path {
        self.canary.path()
    }

    /// Everything outside the root: `T` itself and its other contents, and the canary dir.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Node> {
        let mut out = BTreeMap::new();
        snapshot_into(self.t.path(), &self.root, &mut out);
        snapshot_into(self.canary.path(), &self.root, &mut out);
        out
    }

    /// Assert that nothing outside the root changed and nothing new appeared.
    pub fn assert_unchanged(&self) {
        let after = self.snapshot();
        for (p, n) in &after {
            match self.before.get(p) {
                None => panic!("new path outside the root: {}", p.display()),
                Some(b) => assert_eq!(b, n, "changed outside the root: {}", p.display()),
            }
        }
        for p in self.before.keys() {
            assert!(
                after.contains_key(p),
                "removed outside the root: {}",
                p.display()
            );
        }
        // No inode inside the root is shared with anything outside it.
        let outside: std::collections::HashSet<u64> = after
            .values()
            .filter(|n| n.kind != "dir")
            .map(|n| n.ino)
            .collect();
        let mut stack = vec![self.root.clone()];
        while let Some(p) = stack.pop() {
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else {
                assert!(
                    !outside.contains(&m.ino()),
                    "{} shares an inode with a file outside the root",
                    p.display()
                );
            }
        }
    }

    /// Take a new "before" snapshot (after a test added its own fixtures outside the root).
    pub fn resnapshot(&mut self) {
        self.before = self.snapshot();
    }

    /// Wipe the root (between sub-cases, after `assert_unchanged`), recreate it empty and take a
    /// new "before" snapshot (recreating the root changes its parent's times).
    pub fn reset_root(&mut self) {
        fs::remove_dir_all(&self.root).unwrap();
        fs::create_dir(&self.root).unwrap();
        self.before = self.snapshot();
    }

    pub fn apply(&self, tar: &[u8], fmt: WhiteoutFormat) -> Result<ApplyStats, ArchiveError> {
        apply_layer(&self.root, tar, &ApplyOptions::new(fmt))
    }

    pub fn apply_naive(&self, tar: &[u8]) -> Result<ApplyStats, ArchiveError> {
        self.apply(tar, WhiteoutFormat::Naive)
    }
}

// ---------------------------------------------------------------------------------------------
// Tree comparison
// ---------------------------------------------------------------------------------------------

/// A tree's description for comparisons: relative path → node facts. Inode numbers are replaced by
/// a hardlink group id (the first path of that inode), ctimes are dropped.
pub fn describe(root: &Path) -> BTreeMap<PathBuf, (Node, Option<PathBuf>, u64)> {
    let mut raw = BTreeMap::new();
    snapshot_into(root, Path::new("/nonexistent"), &mut raw);
    let mut first_of: std::collections::HashMap<u64, PathBuf> = Default::default();
    let mut out = BTreeMap::new();
    for (p, mut n) in raw {
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let blocks = fs::symlink_metadata(&p).unwrap().blocks();
        let group = if n.kind != "dir" && n.nlink > 1 {
            Some(first_of.entry(n.ino).or_insert_with(|| rel.clone()).clone())
        } else {
            None
        };
        n.ino = 0;
        n.ctime = (0, 0);
        // Layer tars carry whole seconds (as Docker writes them).
        n.mtime.1 = 0;
        if n.kind == "dir" {
            n.size = 0;
            n.nlink = 0;
        }
        if n.kind == "symlink" {
            // Symlink times are not interesting across tools.
            n.mtime = (0, 0);
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        out.insert(rel, (n, group, blocks));
    }
    out
}

/// Assert two trees are the same (types, modes, owners, xattrs, link groups, mtimes, symlink
/// targets, content). Block counts are compared only for sparse checks by the caller.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let da = describe(a);
    let db = describe(b);
    let ka: Vec<_> = da.keys().collect();
    let kb: Vec<_> = db.keys().collect();
    assert_eq!(ka, kb, "different paths");
    for (p, (na, ga, _)) in &da {
        let (nb, gb, _) = &db[p];
        assert_eq!(na, nb, "different node at {}", p.display());
        assert_eq!(ga, gb, "different hardlink group at {}", p.display());
    }
}

/// Run a command, panicking with its stderr on failure.
pub fn run(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn set_times(p: &Path, sec: i64) {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}
