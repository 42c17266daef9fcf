//! The snapshotter conformance suite: one set of cases every driver passes with real mounts.
//!
//! Each case builds layers the way the engine does (prepare → mount the active snapshot → write
//! files with `std::fs` → unmount → commit), applies the same operations to a plain reference
//! directory, then mounts a view (or a container's active snapshot) and compares both trees:
//! names, types, modes, owners, contents, symlink targets, device numbers, selected xattrs and
//! hardlink identity. Cases panic on failure (they are tests). Every case works in its own
//! scratch directory, and a guard unmounts whatever it mounted there, also on panic.
//!
//! Use [`snapshotter_conformance!`](crate::snapshotter_conformance) to get one `#[test]` per case,
//! or [`run_all`] to run them all in one test (e.g. on a special filesystem).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carrel_core::{ErrorKind, HasKind};
use carrel_meta::Meta;
use carrel_meta::snapshots::Kind;
use carrel_mount::{Mount, Mounter, mountinfo};

use crate::snapshot::{Labels, Snapshotter};
use crate::{StorageError, WhiteoutFormat};

/// Makes a driver on a data root with a metadata handle (a fresh "process" each call).
pub type Factory = fn(&Path, Arc<Meta>) -> Box<dyn Snapshotter>;

/// What the cases run against.
#[derive(Clone)]
pub struct Env {
    /// Makes the driver under test.
    pub factory: Factory,
    /// Performs the mounts (the real [`carrel_mount::KernelMounter`] in the shipped tests).
    pub mounter: Arc<dyn Mounter>,
    /// Where scratch directories go (`None`: the system temp dir), e.g. a mounted XFS image.
    pub base: Option<PathBuf>,
    /// Depth of the chain built by [`deep_chain`] (500 normally).
    pub chain_depth: usize,
}

impl Env {
    /// An environment with the kernel mounter, the system temp dir and a 500-layer chain.
    pub fn new(factory: Factory) -> Env {
        Env {
            factory,
            mounter: Arc::new(carrel_mount::KernelMounter::new()),
            base: None,
            chain_depth: 500,
        }
    }
}

/// A case of the suite.
pub type Case = fn(&Env);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("metadata_and_errors", metadata_and_errors),
    ("file_changed_in_upper", file_changed_in_upper),
    ("dir_removed_and_recreated", dir_removed_and_recreated),
    ("rename_across_layers", rename_across_layers),
    ("chown_in_upper", chown_in_upper),
    ("opaque_dirs", opaque_dirs),
    ("hardlinks", hardlinks),
    ("permissions_and_special_bits", permissions_and_special_bits),
    ("xattrs", xattrs),
    ("device_nodes_and_fifos", device_nodes_and_fifos),
    ("symlinks", symlinks),
    ("deep_chain", deep_chain),
    ("remove_with_children_refused", remove_with_children_refused),
    ("remove_order", remove_order),
    ("cleanup_reclaims_orphans", cleanup_reclaims_orphans),
    ("concurrent_instances", concurrent_instances),
    ("prepare_on_active_parent", prepare_on_active_parent),
    ("removal_in_two_halves", removal_in_two_halves),
];

/// Run every case in turn.
pub fn run_all(env: &Env) {
    for (name, case) in CASES {
        let t = Instant::now();
        case(env);
        tracing::info!(case = name, took = ?t.elapsed(), "conformance case passed");
    }
}

/// One `#[test]` per conformance case. Takes an expression that evaluates to an [`Env`].
#[macro_export]
macro_rules! snapshotter_conformance {
    ($env:expr) => {
        $crate::snapshotter_conformance!(@cases $env;
            metadata_and_errors, file_changed_in_upper, dir_removed_and_recreated,
            rename_across_layers, chown_in_upper, opaque_dirs, hardlinks,
            permissions_and_special_bits, xattrs, device_nodes_and_fifos, symlinks, deep_chain,
            remove_with_children_refused, remove_order, cleanup_reclaims_orphans,
            concurrent_instances, prepare_on_active_parent, removal_in_two_halves);
    };
    (@cases $env:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&$env);
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Scratch space and mounts

/// A scratch directory holding a data root, mount targets and the reference tree. Dropping it
/// unmounts everything below it (lazily) and removes it.
pub struct Scratch {
    path: PathBuf,
    mounter: Arc<dyn Mounter>,
    counter: std::sync::atomic::AtomicUsize,
}

impl Scratch {
    /// A new scratch directory under `env.base` or the system temp dir.
    pub fn new(env: &Env) -> Scratch {
        let base = env.base.clone().unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!(
            "carrel-conformance-{}",
            carrel_core::id::random_short(12).to_lowercase()
        ));
        std::fs::create_dir_all(path.join("root")).unwrap();
        std::fs::create_dir_all(path.join("ref")).unwrap();
        std::fs::set_permissions(path.join("ref"), std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch {
            path,
            mounter: env.mounter.clone(),
            counter: Default::default(),
        }
    }

    /// The data root.
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    /// The reference directory the same operations are applied to.
    pub fn reference(&self) -> PathBuf {
        self.path.join("ref")
    }

    /// A fresh empty directory to mount on.
    pub fn target(&self) -> PathBuf {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self.path.join(format!("mnt{n}"));
        std::fs::create_dir(&p).unwrap();
        p
    }

    /// A driver on this scratch's data root with its own metadata handle.
    pub fn open(&self, env: &Env) -> Box<dyn Snapshotter> {
        let meta = Arc::new(Meta::open(&self.root().join("carrel.db")).unwrap());
        (env.factory)(&self.root(), meta)
    }

    /// Mount `mounts` on a fresh target; the guard unmounts.
    pub fn mount(&self, mounts: &[Mount]) -> Mounted {
        let target = self.target();
        self.mounter.mount_all(mounts, &target).unwrap();
        Mounted {
            target,
            count: mounts.len(),
            mounter: self.mounter.clone(),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in mountinfo::mounts_under(&self.path).unwrap_or_default() {
            let _ = self.mounter.unmount(&m.mount_point, true);
        }
        if mountinfo::mounts_under(&self.path)
            .map(|m| m.is_empty())
            .unwrap_or(false)
        {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A mounted snapshot; unmounted when dropped (or explicitly with [`Mounted::unmount`]).
pub struct Mounted {
    target: PathBuf,
    count: usize,
    mounter: Arc<dyn Mounter>,
}

impl Mounted {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmount now, failing loudly. A short `EBUSY` is waited out: tests of the same binary run
    /// in parallel threads, and one that spawns a program (`mkfs`, `mount`) forks a child that
    /// holds copies of every descriptor of the process, including a file another test just
    /// wrote in this mount, until the child's `exec` closes them.
    pub fn unmount(mut self) {
        while self.count > 0 {
            let mut tries = 0;
            loop {
                match self.mounter.unmount(&self.target, false) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    other => break other.unwrap(),
                }
            }
            self.count -= 1;
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        while self.count > 0 {
            let _ = self.mounter.unmount(&self.target, true);
            self.count -= 1;
        }
    }
}

/// Prepare `tmp-<name>` on `parent`, mount it, run `ops` on it and on the reference directory,
/// unmount and commit it as `name`.
pub fn layer(
    s: &Scratch,
    sn: &dyn Snapshotter,
    parent: Option<&str>,
    name: &str,
    ops: &dyn Fn(&Path),
) {
    let key = format!("tmp-{name}");
    let mounts = sn.prepare(&key, parent, Labels::new()).unwrap();
    let m = s.mount(&mounts);
    ops(m.path());
    m.unmount();
    ops(&s.reference());
    sn.commit(name, &key, Labels::new()).unwrap();
}

/// Mount a new view of `name` and compare it with the reference tree; then do the same with a
/// new active snapshot (a container's root) on it. Both are removed again.
pub fn check(s: &Scratch, sn: &dyn Snapshotter, name: &str) {
    let expected = scan(&s.reference());
    let view = format!("view-{}", carrel_core::id::random_short(8));
    let mounts = sn.view(&view, name, Labels::new()).unwrap();
    assert!(mounts.iter().all(Mount::is_readonly), "{mounts:?}");
    let m = s.mount(&mounts);
    assert_trees_eq(&scan(m.path()), &expected, &format!("view of {name}"));
    m.unmount();
    sn.remove(&view).unwrap();

    let ctr = format!("ctr-{}", carrel_core::id::random_short(8));
    let m = s.mount(&sn.prepare(&ctr, Some(name), Labels::new()).unwrap());
    assert_trees_eq(&scan(m.path()), &expected, &format!("container on {name}"));
    m.unmount();
    sn.remove(&ctr).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Tree comparison

/// What a tree entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file with its content.
    File(Vec<u8>),
    /// A symlink with its target.
    Symlink(PathBuf),
    /// A character device with its device number.
    Char(u64),
    /// A block device with its device number.
    Block(u64),
    /// A fifo.
    Fifo,
    /// A socket.
    Socket,
}

/// One entry of a scanned tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Type and content.
    pub kind: NodeKind,
    /// Permission bits with setuid/setgid/sticky (none for symlinks).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count (non-directories).
    pub nlink: u64,
    /// The first path (in sorted order) sharing this inode, for hardlinks.
    pub link_group: Option<PathBuf>,
    /// `user.*`, `trusted.*` (but not `trusted.overlay.*`) and `security.capability`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Scan the tree under `root` (symlinks not followed).
pub fn scan(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    let mut all = Vec::new();
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
        all.push((rel, m));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, m) in all {
        let p = root.join(&rel);
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            NodeKind::Dir
        } else if ft.is_file() {
            NodeKind::File(std::fs::read(&p).unwrap())
        } else if ft.is_symlink() {
            NodeKind::Symlink(std::fs::read_link(&p).unwrap())
        } else if ft.is_char_device() {
            NodeKind::Char(m.rdev())
        } else if ft.is_block_device() {
            NodeKind::Block(m.rdev())
        } else if ft.is_fifo() {
            NodeKind::Fifo
        } else {
            NodeKind::Socket
        };
        let link_group = (!ft.is_dir() && m.nlink() > 1).then(|| {
            inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        });
        out.insert(
            rel,
            Node {
                mode: if ft.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                },
                uid: m.uid(),
                gid: m.gid(),
                nlink: if ft.is_dir() { 0 } else { m.nlink() },
                link_group,
                xattrs: read_xattrs(&p),
                kind,
            },
        );
    }
    out
}

fn read_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let n = rustix::fs::llistxattr_query(p).unwrap_or(0);
    if n == 0 {
        return out;
    }
    let mut names = vec![0u8; n + 64];
    let n = rustix::fs::llistxattr(p, &mut names[..]).unwrap();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let keep = name.starts_with("user.")
            || (name.starts_with("trusted.") && !name.starts_with("trusted.overlay."))
            || name == "security.capability";
        if !keep {
            continue;
        }
        let len = rustix::fs::lgetxattr_query(p, name.as_str()).unwrap();
        let mut v = vec![0u8; len];
        let k = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        v.truncate(k);
        out.insert(name, v);
    }
    out
}

/// Panic with a readable list of differences when the trees differ.
pub fn assert_trees_eq(got: &BTreeMap<PathBuf, Node>, want: &BTreeMap<PathBuf, Node>, what: &str) {
    if got == want {
        return;
    }
    let mut diffs = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {}: {w:?}", k.display())),
            Some(g) if g != w => diffs.push(format!("{}: got {g:?}, want {w:?}", k.display())),
            _ => {}
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        diffs.push(format!("unexpected {}: {:?}", k.display(), got[k]));
    }
    diffs.truncate(20);
    panic!("{what}: trees differ:\n{}", diffs.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Small file helpers for the cases (paths are the test's own)

fn write(p: &Path, data: &str) {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mknod(p: &Path, ft: rustix::fs::FileType, mode: u32, dev: u64) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        ft,
        rustix::fs::Mode::from_raw_mode(mode),
        dev,
    )
    .unwrap();
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// `mv`: rename, or copy and delete when the kernel says `EXDEV` (overlayfs renaming a lower
/// directory with `redirect_dir=off`), as coreutils does.
fn mv(from: &Path, to: &Path) {
    match std::fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            crate::copy::copy_tree(from, to).unwrap();
            std::fs::remove_dir_all(from).unwrap();
        }
        Err(e) => panic!("rename {} -> {}: {e}", from.display(), to.display()),
    }
}

fn expect_kind(
    r: Result<impl std::fmt::Debug, StorageError>,
    kind: ErrorKind,
    what: &str,
) -> StorageError {
    match r {
        Ok(v) => panic!("{what}: expected a {kind} error, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{what}: {e}");
            e
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// stat/usage/walk/labels/paths, kinds, and the errors of misuse; keys never become paths.
pub fn metadata_and_errors(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    let home = sn.home();
    assert!(home.starts_with(s.root()));

    expect_kind(
        sn.prepare("", None, Labels::new()),
        ErrorKind::InvalidArgument,
        "empty key",
    );
    expect_kind(
        sn.mounts("missing"),
        ErrorKind::NotFound,
        "mounts of missing",
    );
    expect_kind(
        sn.prepare("x", Some("missing"), Labels::new()),
        ErrorKind::NotFound,
        "missing parent",
    );

    let mounts = sn.prepare("k", None, Labels::new()).unwrap();
    assert!(!mounts.iter().any(Mount::is_readonly));
    expect_kind(
        sn.prepare("k", None, Labels::new()),
        ErrorKind::AlreadyExists,
        "same key",
    );
    expect_kind(
        sn.view("v", "k", Labels::new()),
        ErrorKind::Conflict,
        "view of active",
    );
    // A child of an active snapshot is a conflict unless the driver keeps layers independent
    // (see `prepare_on_active_parent`, which covers that case).
    if !sn.independent_layers() {
        expect_kind(
            sn.prepare("c", Some("k"), Labels::new()),
            ErrorKind::Conflict,
            "child of active",
        );
    }
    let info = sn.stat("k").unwrap();
    assert_eq!(
        (info.kind, info.parent.clone(), info.size),
        (Kind::Active, None, None)
    );
    assert!(carrel_core::digest::is_hex64(&info.id));

    let target = sn.apply_target("k").unwrap();
    let want = if sn.driver_name() == "overlay2" {
        WhiteoutFormat::Overlay
    } else {
        WhiteoutFormat::Naive
    };
    assert_eq!(target.format, want);
    assert!(target.dir.starts_with(&home));
    std::fs::write(target.dir.join("ten-k"), vec![1u8; 10 * 1024]).unwrap();
    let active_usage = sn.usage("k").unwrap();
    assert!(
        active_usage.size >= 10 * 1024 && active_usage.inodes >= 2,
        "{active_usage:?}"
    );

    let labels = Labels::from([("a".to_string(), "b".to_string())]);
    sn.commit("layer", "k", labels.clone()).unwrap();
    expect_kind(sn.stat("k"), ErrorKind::NotFound, "stat of committed key");
    expect_kind(
        sn.commit("again", "layer", Labels::new()),
        ErrorKind::Conflict,
        "commit of committed",
    );
    expect_kind(
        sn.apply_target("layer"),
        ErrorKind::Conflict,
        "apply to committed",
    );
    let info = sn.stat("layer").unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.labels, labels);
    assert!(info.size.unwrap() >= 10 * 1024);
    assert_eq!(sn.usage("layer").unwrap().size, info.size.unwrap());
    assert!(sn.mounts("layer").unwrap().iter().all(Mount::is_readonly));

    sn.view("v", "layer", Labels::new()).unwrap();
    assert!(sn.mounts("v").unwrap().iter().all(Mount::is_readonly));
    sn.prepare("c", Some("layer"), Labels::new()).unwrap();
    let paths = sn.paths("c").unwrap();
    assert!(paths.upper.is_dir(), "{paths:?}");
    if sn.driver_name() == "overlay2" {
        assert_eq!(paths.lower, vec![sn.upper_dir("layer").unwrap()]);
        assert!(paths.work.is_dir() && paths.merged.is_dir());
    }
    sn.prepare("d", Some("layer"), Labels::new()).unwrap();
    // A layer measured by its caller records that usage.
    sn.prepare("base2", None, Labels::new()).unwrap();
    let dir = sn.apply_target("base2").unwrap().dir;
    std::fs::write(dir.join("twenty-k"), vec![2u8; 20 * 1024]).unwrap();
    let measured = sn.usage("base2").unwrap();
    assert!(measured.size >= 20 * 1024, "{measured:?}");
    sn.commit_measured("base2", "base2", Labels::new(), measured)
        .unwrap();
    assert_eq!(sn.usage("base2").unwrap(), measured);
    assert_eq!(sn.stat("base2").unwrap().size, Some(measured.size));
    let new_labels = Labels::from([("x".to_string(), "y".to_string())]);
    assert_eq!(
        sn.update_labels("c", new_labels.clone()).unwrap().labels,
        new_labels
    );
    expect_kind(
        sn.update_labels("nope", Labels::new()),
        ErrorKind::NotFound,
        "labels of missing",
    );

    let walk = sn.walk().unwrap();
    let pos = |k: &str| walk.iter().position(|i| i.key == k).unwrap();
    assert_eq!(walk.len(), 5);
    assert!(pos("layer") < pos("v") && pos("layer") < pos("c") && pos("layer") < pos("d"));

    // Untrusted keys are stored, never used as paths.
    let evil = "../../../../escape/../x";
    sn.prepare(evil, None, Labels::new()).unwrap();
    assert!(sn.upper_dir(evil).unwrap().starts_with(&home));
    assert!(!s.path.join("escape").exists() && !s.path.join("x").exists());
    sn.remove(evil).unwrap();
}

/// A file rewritten in an upper layer wins; its neighbours stay.
pub fn file_changed_in_upper(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("etc/conf"), "one");
        write(&r.join("etc/other"), "keep");
        write(&r.join("bin/tool"), "#!/bin/sh\n");
        chmod(&r.join("bin/tool"), 0o755);
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        write(&r.join("etc/conf"), "two, longer than before");
    });
    layer(&s, &*sn, Some("l2"), "l3", &|r| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(r.join("etc/conf"))
            .unwrap();
        f.write_all(b"+3").unwrap();
    });
    check(&s, &*sn, "l3");
}

/// A directory removed in one layer and recreated empty in the next is empty.
pub fn dir_removed_and_recreated(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("a/b/c"), "c");
        write(&r.join("a/d"), "d");
        write(&r.join("keep/x"), "x");
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        std::fs::remove_dir_all(r.join("a")).unwrap();
        std::fs::remove_file(r.join("keep/x")).unwrap();
    });
    check(&s, &*sn, "l2");
    layer(&s, &*sn, Some("l2"), "l3", &|r| {
        std::fs::create_dir(r.join("a")).unwrap();
    });
    check(&s, &*sn, "l3");
    assert!(
        std::fs::read_dir(s.reference().join("a"))
            .unwrap()
            .next()
            .is_none()
    );
}

/// Renaming a lower file and a lower directory (overlay: `EXDEV` for directories, then copy).
pub fn rename_across_layers(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("f"), "file");
        write(&r.join("d/one"), "1");
        write(&r.join("d/sub/two"), "2");
        chmod(&r.join("d/sub"), 0o750);
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        mv(&r.join("f"), &r.join("g"));
        mv(&r.join("d"), &r.join("e"));
    });
    check(&s, &*sn, "l2");
    layer(&s, &*sn, Some("l2"), "l3", &|r| {
        mv(&r.join("e/sub"), &r.join("sub-moved"));
        mv(&r.join("g"), &r.join("e/g"));
    });
    check(&s, &*sn, "l3");
}

/// chown of lower files, directories and symlinks in an upper layer.
pub fn chown_in_upper(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("f"), "f");
        write(&r.join("d/inner"), "i");
        std::os::unix::fs::symlink("f", r.join("link")).unwrap();
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        std::os::unix::fs::lchown(r.join("f"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::lchown(r.join("d"), Some(123), Some(456)).unwrap();
        std::os::unix::fs::lchown(r.join("link"), Some(7), Some(8)).unwrap();
    });
    check(&s, &*sn, "l2");
}

/// rm -rf a directory and recreate it with new content: nothing of the old shows through.
pub fn opaque_dirs(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("d/x"), "x");
        write(&r.join("d/y"), "y");
        write(&r.join("d/sub/z"), "z");
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        write(&r.join("d/added"), "added");
    });
    layer(&s, &*sn, Some("l2"), "l3", &|r| {
        std::fs::remove_dir_all(r.join("d")).unwrap();
        write(&r.join("d/new"), "new");
        write(&r.join("d/sub/other"), "other");
    });
    check(&s, &*sn, "l3");
}

/// Hardlinks within a layer keep their identity and link count.
pub fn hardlinks(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("a"), "shared");
        std::fs::create_dir(r.join("sub")).unwrap();
        std::fs::hard_link(r.join("a"), r.join("b")).unwrap();
        std::fs::hard_link(r.join("a"), r.join("sub/c")).unwrap();
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        write(&r.join("n1"), "new pair");
        std::fs::hard_link(r.join("n1"), r.join("sub/n2")).unwrap();
    });
    check(&s, &*sn, "l2");
    let tree = scan(&s.reference());
    assert_eq!(tree[Path::new("sub/c")].nlink, 3);
}

/// setuid, setgid, sticky, 0700 and 0000 survive commit, also when changed in an upper layer.
pub fn permissions_and_special_bits(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("bin/suid"), "s");
        chmod(&r.join("bin/suid"), 0o4755);
        write(&r.join("bin/sgid"), "g");
        chmod(&r.join("bin/sgid"), 0o2711);
        std::fs::create_dir(r.join("tmp")).unwrap();
        chmod(&r.join("tmp"), 0o1777);
        std::fs::create_dir(r.join("private")).unwrap();
        chmod(&r.join("private"), 0o700);
        std::fs::create_dir(r.join("shared")).unwrap();
        chmod(&r.join("shared"), 0o2775);
        write(&r.join("none"), "0");
        chmod(&r.join("none"), 0o000);
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        chmod(&r.join("none"), 0o4700);
        std::os::unix::fs::lchown(r.join("bin/suid"), Some(0), Some(0)).unwrap();
        chmod(&r.join("bin/suid"), 0o4755);
        chmod(&r.join("private"), 0o711);
    });
    check(&s, &*sn, "l2");
}

/// Extended attributes (user, trusted, security.capability) survive commit and upper changes.
pub fn xattrs(env: &Env) {
    // A v2 capability set with cap_net_bind_service effective and permitted.
    let cap: Vec<u8> = [0x0200_0001u32, 1 << 10, 0, 0, 0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("f"), "f");
        setxattr(&r.join("f"), "user.color", b"blue");
        std::fs::create_dir(r.join("d")).unwrap();
        setxattr(&r.join("d"), "trusted.marker", b"m");
        write(&r.join("ping"), "elf");
        setxattr(&r.join("ping"), "security.capability", &cap);
        std::os::unix::fs::symlink("f", r.join("link")).unwrap();
        setxattr(&r.join("link"), "trusted.on-link", b"l");
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        setxattr(&r.join("f"), "user.color", b"red");
        setxattr(&r.join("f"), "user.extra", b"");
        rustix::fs::lremovexattr(r.join("d"), "trusted.marker").unwrap();
    });
    check(&s, &*sn, "l2");
    assert_eq!(
        scan(&s.reference())[Path::new("ping")].xattrs["security.capability"],
        cap
    );
}

/// Character and block devices, fifos and sockets; removing one in an upper layer.
pub fn device_nodes_and_fifos(env: &Env) {
    use rustix::fs::FileType;
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        std::fs::create_dir(r.join("dev")).unwrap();
        mknod(
            &r.join("dev/null"),
            FileType::CharacterDevice,
            0o666,
            rustix::fs::makedev(1, 3),
        );
        mknod(
            &r.join("dev/loop9"),
            FileType::BlockDevice,
            0o660,
            rustix::fs::makedev(7, 9),
        );
        mknod(&r.join("fifo"), FileType::Fifo, 0o644, 0);
        mknod(&r.join("fifo2"), FileType::Fifo, 0o600, 0);
        drop(std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap());
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        std::fs::remove_file(r.join("fifo2")).unwrap();
        mknod(
            &r.join("dev/zero"),
            FileType::CharacterDevice,
            0o666,
            rustix::fs::makedev(1, 5),
        );
        std::os::unix::fs::lchown(r.join("dev/null"), Some(5), Some(5)).unwrap();
    });
    check(&s, &*sn, "l2");
}

/// Absolute, relative and dangling symlinks, and one retargeted in an upper layer.
pub fn symlinks(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "l1", &|r| {
        write(&r.join("etc/real"), "real");
        std::os::unix::fs::symlink("/etc/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../etc/real", r.join("etc/rel-up")).unwrap();
        std::os::unix::fs::symlink("real", r.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("/does/not/exist", r.join("dangling")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("dirlink")).unwrap();
    });
    layer(&s, &*sn, Some("l1"), "l2", &|r| {
        std::fs::remove_file(r.join("abs")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", r.join("abs")).unwrap();
        std::fs::remove_file(r.join("etc/rel")).unwrap();
    });
    check(&s, &*sn, "l2");
}

/// A chain of `env.chain_depth` layers (each adds a file and overwrites one) mounts with every
/// file and the last overwrite winning; one more layer than the driver's maximum is refused.
pub fn deep_chain(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    let n = env.chain_depth;
    let t = Instant::now();
    let mut parent: Option<String> = None;
    for i in 0..n {
        let name = format!("layer{i:03}");
        layer(&s, &*sn, parent.as_deref(), &name, &|r| {
            if i == 0 {
                std::fs::create_dir(r.join("files")).unwrap();
            }
            std::fs::write(r.join("files").join(format!("f{i:03}")), i.to_string()).unwrap();
            std::fs::write(r.join("last"), i.to_string()).unwrap();
        });
        parent = Some(name);
    }
    let built = t.elapsed();
    let top = parent.unwrap();
    let t = Instant::now();
    let m = s.mount(
        &sn.prepare("top-container", Some(&top), Labels::new())
            .unwrap(),
    );
    let mounted = t.elapsed();
    assert_eq!(
        std::fs::read_to_string(m.path().join("last")).unwrap(),
        (n - 1).to_string()
    );
    assert_eq!(
        std::fs::read_dir(m.path().join("files")).unwrap().count(),
        n
    );
    for i in 0..n {
        let content =
            std::fs::read_to_string(m.path().join("files").join(format!("f{i:03}"))).unwrap();
        assert_eq!(content, i.to_string());
    }
    assert_trees_eq(&scan(m.path()), &scan(&s.reference()), "top of the chain");
    std::fs::write(m.path().join("written"), "ok").unwrap();
    m.unmount();
    check(&s, &*sn, &top);
    tracing::info!(
        driver = sn.driver_name(),
        layers = n,
        ?built,
        ?mounted,
        "deep chain"
    );
    match sn.max_depth() {
        Some(max) if n >= max => {
            // A container on the deepest chain works (above); one more layer does not.
            sn.prepare("one-too-many", Some(&top), Labels::new())
                .unwrap();
            let e = expect_kind(
                sn.commit("layer-beyond", "one-too-many", Labels::new()),
                ErrorKind::InvalidArgument,
                "layer beyond the maximum depth",
            );
            assert!(
                matches!(e, StorageError::TooDeep { depth, .. } if depth == max + 1),
                "{e}"
            );
            assert!(e.to_string().contains(&max.to_string()), "{e}");
            expect_kind(
                sn.stat("layer-beyond"),
                ErrorKind::NotFound,
                "refused layer left a row",
            );
            assert_eq!(sn.stat("one-too-many").unwrap().kind, Kind::Active);
            sn.remove("one-too-many").unwrap();
        }
        _ => {}
    }
    let _: Duration = built;
}

/// A snapshot with children (layers, views, containers) cannot be removed.
pub fn remove_with_children_refused(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "base", &|r| write(&r.join("f"), "f"));
    sn.prepare("ctr", Some("base"), Labels::new()).unwrap();
    let e = expect_kind(
        sn.remove("base"),
        ErrorKind::Conflict,
        "remove with a child",
    );
    assert!(
        matches!(e, StorageError::HasChildren { children: 1, .. }),
        "{e}"
    );
    sn.view("v", "base", Labels::new()).unwrap();
    expect_kind(
        sn.remove("base"),
        ErrorKind::Conflict,
        "remove with two children",
    );
    // Still intact and mountable.
    check(&s, &*sn, "base");
    sn.remove("ctr").unwrap();
    sn.remove("v").unwrap();
    sn.remove("base").unwrap();
    expect_kind(sn.remove("base"), ErrorKind::NotFound, "remove twice");
}

/// Layers extracted side by side: a driver with independent layers lets a layer be prepared on
/// a parent that is still active and refuses to commit it before the parent; other drivers
/// refuse the active parent at prepare.
pub fn prepare_on_active_parent(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    sn.prepare("a", None, Labels::new()).unwrap();
    if !sn.independent_layers() {
        expect_kind(
            sn.prepare("b", Some("a"), Labels::new()),
            ErrorKind::Conflict,
            "prepare on an active parent",
        );
        return;
    }
    sn.prepare("b", Some("a"), Labels::new()).unwrap();
    // Both are written at the same time, each into its own directory.
    let write_into = |key: &str, name: &str| {
        let target = sn.apply_target(key).unwrap();
        assert_eq!(target.format, WhiteoutFormat::Overlay);
        write(&target.dir.join(name), name);
    };
    write_into("b", "from-b");
    write_into("a", "from-a");
    expect_kind(
        sn.commit("b", "b", Labels::new()),
        ErrorKind::Conflict,
        "commit before the parent",
    );
    assert_eq!(sn.stat("b").unwrap().kind, Kind::Active);
    sn.commit("a", "a", Labels::new()).unwrap();
    sn.commit("b", "b", Labels::new()).unwrap();
    write(&s.reference().join("from-a"), "from-a");
    write(&s.reference().join("from-b"), "from-b");
    check(&s, &*sn, "b");
    assert_eq!(sn.stat("b").unwrap().parent.as_deref(), Some("a"));
}

/// Removing leaf first empties the driver's home; a key can be reused afterwards.
pub fn remove_order(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "a", &|r| write(&r.join("a"), "a"));
    layer(&s, &*sn, Some("a"), "b", &|r| write(&r.join("b"), "b"));
    layer(&s, &*sn, Some("b"), "c", &|r| write(&r.join("c"), "c"));
    sn.view("v", "c", Labels::new()).unwrap();
    sn.prepare("x", Some("c"), Labels::new()).unwrap();
    // A snapshot mounted at its conventional place (`merged` for overlay2) is refused, never
    // deleted through its mount.
    let paths = sn.paths("x").unwrap();
    let m = s.mount(&sn.mounts("x").unwrap());
    write(&m.path().join("in-container"), "data");
    m.unmount();
    if paths.merged.is_dir() && paths.merged != paths.upper {
        env.mounter
            .mount_all(&sn.mounts("x").unwrap(), &paths.merged)
            .unwrap();
        let e = expect_kind(sn.remove("x"), ErrorKind::Conflict, "remove while mounted");
        env.mounter.unmount(&paths.merged, false).unwrap();
        assert!(matches!(e, StorageError::Mounted { .. }), "{e}");
        assert_eq!(sn.stat("x").unwrap().kind, Kind::Active);
    }
    for k in ["a", "b", "c"] {
        expect_kind(sn.remove(k), ErrorKind::Conflict, "remove of a parent");
    }
    for k in ["x", "v", "c", "b", "a"] {
        sn.remove(k).unwrap();
        expect_kind(sn.stat(k), ErrorKind::NotFound, "stat after remove");
    }
    assert!(sn.walk().unwrap().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(sn.home())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "l")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let l = sn.home().join("l");
    if l.exists() {
        assert_eq!(std::fs::read_dir(&l).unwrap().count(), 0);
    }
    sn.prepare("a", None, Labels::new()).unwrap();
    assert!(sn.cleanup(false).unwrap().orphan_dirs.is_empty());
}

/// `cleanup` removes a directory left without a row (a simulated crash), reports rows without a
/// directory, and never touches live (even mounted) snapshots.
pub fn cleanup_reclaims_orphans(env: &Env) {
    let s = Scratch::new(env);
    let sn = s.open(env);
    layer(&s, &*sn, None, "base", &|r| write(&r.join("f"), "base"));
    let live = s.mount(&sn.prepare("live", Some("base"), Labels::new()).unwrap());
    write(&live.path().join("g"), "live");
    sn.view("view", "base", Labels::new()).unwrap();

    // A crash between "create directory" and "insert row" cannot happen (the row comes first),
    // but a crash during remove (row deleted, directory not) leaves exactly this.
    let orphan = sn.home().join(carrel_core::id::random_id());
    write(&orphan.join("diff/some/file"), "orphan");
    std::os::unix::fs::symlink("/", orphan.join("diff/root-link")).unwrap();
    // A row whose directory vanished.
    sn.prepare("ghost", Some("base"), Labels::new()).unwrap();
    let ghost_dir = sn.home().join(sn.stat("ghost").unwrap().id);
    std::fs::remove_dir_all(&ghost_dir).unwrap();
    // A dangling short link (overlay2 only).
    let l = sn.home().join("l");
    let dangling = l.join("DANGLINGDANGLINGDANGLING00");
    if l.is_dir() {
        std::os::unix::fs::symlink("../0000/diff", &dangling).unwrap();
    }

    let report = sn.cleanup(true).unwrap();
    assert_eq!(report.orphan_dirs, vec![orphan.clone()]);
    assert_eq!(report.missing_dirs, vec!["ghost".to_string()]);
    assert!(orphan.exists(), "dry run removed something");

    let report = sn.cleanup(false).unwrap();
    assert_eq!(report.orphan_dirs, vec![orphan.clone()]);
    assert!(!orphan.exists());
    assert!(Path::new("/").join("etc").exists());
    if l.is_dir() {
        // The ghost's short link dangles too now.
        assert!(report.other.contains(&dangling), "{report:?}");
        assert!(std::fs::symlink_metadata(&dangling).is_err());
    }
    // Live snapshots are intact: the mounted one still works, the others mount.
    assert_eq!(
        std::fs::read_to_string(live.path().join("g")).unwrap(),
        "live"
    );
    assert_eq!(
        std::fs::read_to_string(live.path().join("f")).unwrap(),
        "base"
    );
    live.unmount();
    let m = s.mount(&sn.mounts("live").unwrap());
    assert_eq!(std::fs::read_to_string(m.path().join("g")).unwrap(), "live");
    m.unmount();
    let m = s.mount(&sn.mounts("view").unwrap());
    assert_eq!(std::fs::read_to_string(m.path().join("f")).unwrap(), "base");
    m.unmount();
    // The ghost can still be removed.
    sn.remove("ghost").unwrap();
    let report = sn.cleanup(false).unwrap();
    assert!(
        report.orphan_dirs.is_empty() && report.missing_dirs.is_empty(),
        "{report:?}"
    );
}

/// [`Snapshotter::remove_record`] in the caller's transaction, the files after: a rolled back
/// transaction keeps the snapshot whole; once committed, the key is free at once, and the
/// directory is work in flight while listed under a live lease (no cleanup reports or touches
/// it), an orphan otherwise; deleting the files leaves no dangling helper entry, and deleting
/// files a cleanup already took is not an error.
pub fn removal_in_two_halves(env: &Env) {
    use crate::snapshot::FILES_BEING_REMOVED;
    use carrel_meta::Lease;

    let s = Scratch::new(env);
    let sn = s.open(env);
    let meta = Meta::open(&s.root().join("carrel.db")).unwrap();
    let leases = s.root().join("leases");
    std::fs::create_dir_all(&leases).unwrap();
    layer(&s, &*sn, None, "base", &|r| write(&r.join("f"), "base"));
    let prepare = |key: &str| {
        let m = s.mount(&sn.prepare(key, Some("base"), Labels::new()).unwrap());
        write(&m.path().join("g"), key);
        m.unmount();
        sn.home().join(sn.stat(key).unwrap().id)
    };
    let clean = |what: &str| {
        let report = sn.cleanup(true).unwrap();
        assert_eq!(report, Default::default(), "{what}");
    };

    // Rolled back: nothing changed.
    let dir = prepare("ctr");
    let undone: Result<(), ()> = meta
        .try_write(|tx| {
            let _files = sn.remove_record(tx, "ctr").unwrap();
            Ok(Err(()))
        })
        .unwrap();
    assert!(undone.is_err());
    let m = s.mount(&sn.mounts("ctr").unwrap());
    assert_eq!(std::fs::read_to_string(m.path().join("g")).unwrap(), "ctr");
    m.unmount();
    clean("after a rollback");

    // Under a lease: in flight until deleted.
    let lease = Lease::acquire(&meta, &leases, "removal").unwrap();
    let files = meta
        .try_write(|tx| {
            let files = sn.remove_record(tx, "ctr").unwrap();
            lease.add(tx, FILES_BEING_REMOVED, files.id())?;
            Ok(Ok::<_, ()>(files))
        })
        .unwrap()
        .unwrap();
    expect_kind(sn.stat("ctr"), ErrorKind::NotFound, "stat of a removed key");
    assert!(dir.is_dir());
    clean("while the files are in flight");
    assert_eq!(sn.cleanup(false).unwrap(), Default::default());
    assert!(dir.is_dir(), "a cleanup deleted files in flight");
    // The key is free at once.
    let again = prepare("ctr");
    assert_ne!(again, dir);
    files.remove().unwrap();
    lease.release(&meta).unwrap();
    assert!(!dir.exists());
    clean("after the files were deleted");

    // Without a lease (or once its process died): an orphan, and a cleanup may take it first.
    let files = meta
        .try_write(|tx| Ok(Ok::<_, ()>(sn.remove_record(tx, "ctr").unwrap())))
        .unwrap()
        .unwrap();
    assert_eq!(sn.cleanup(true).unwrap().orphan_dirs, vec![again.clone()]);
    assert_eq!(sn.cleanup(false).unwrap().orphan_dirs, vec![again.clone()]);
    assert!(!again.exists());
    files.remove().unwrap();
    clean("after a cleanup took the files");
}

/// Two driver instances with their own database handles (two "processes") prepare and commit
/// concurrently on one data root; every layer lands and mounts, one key wins a race.
pub fn concurrent_instances(env: &Env) {
    let s = Scratch::new(env);
    let a = s.open(env);
    let b = s.open(env);
    let per = 12;
    std::thread::scope(|scope| {
        for (tag, sn) in [("a", &a), ("b", &b)] {
            let s = &s;
            scope.spawn(move || {
                let mut parent: Option<String> = None;
                for i in 0..per {
                    let name = format!("{tag}{i:02}");
                    let key = format!("tmp-{name}");
                    let m = s.mount(&sn.prepare(&key, parent.as_deref(), Labels::new()).unwrap());
                    std::fs::write(m.path().join(&name), &name).unwrap();
                    m.unmount();
                    sn.commit(&name, &key, Labels::new()).unwrap();
                    let race = sn.prepare(&format!("race{i}"), None, Labels::new());
                    if let Err(e) = race {
                        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
                    }
                    parent = Some(name);
                }
            });
        }
    });
    let c = s.open(env);
    let walk = c.walk().unwrap();
    assert_eq!(walk.len(), 2 * per + per, "{walk:?}");
    for tag in ["a", "b"] {
        let top = format!("{tag}{:02}", per - 1);
        let m = s.mount(&c.mounts(&top).unwrap());
        for i in 0..per {
            let name = format!("{tag}{i:02}");
            assert_eq!(std::fs::read_to_string(m.path().join(&name)).unwrap(), name);
        }
        m.unmount();
    }
    let report = c.cleanup(true).unwrap();
    assert!(
        report.orphan_dirs.is_empty() && report.missing_dirs.is_empty(),
        "{report:?}"
    );
}
