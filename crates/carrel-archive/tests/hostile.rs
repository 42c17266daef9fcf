//! The hostile-archive suite: ADVERSARIAL.md section A, run with the containment harness (canary
//! files and directories beside the extraction root, the root's parent, a host-wide canary
//! directory; everything outside the root is snapshotted before and compared after).
//!
//! Covered, by id (ADVERSARIAL.md ST-xx, CATALOG.md A-xx where the plan has no ST case):
//! - ST-01 parent traversal refused, dotted names fine            → `st01_*`
//! - ST-02 absolute names land under the root                     → `st02_*`
//! - ST-03 writing through symlinks stays inside (4 tars)         → `st03_*`
//! - A-04  two-hop `inner/go_up` symlink chain                    → `a04_*`
//! - A-05  directory replaced by a symlink mid-archive (CVE-2025-47290), also between
//!   siblings that share their parent's handle         → `a05_*`
//! - A-06  absolute symlinks from a lower layer resolve inside     → `a06_*`
//! - ST-07 relative escape then absolute symlink (re-rooted)      → `st07_*`
//! - ST-08 prefix-sharing sibling `dest` / `dest-evil`            → `st08_*`
//! - ST-09 hardlink escapes, directory hardlinks, legit absolute  → `st09_*`
//! - A-10  hardlink to a symlink links the symlink                 → `a10_*`
//! - ST-11 chmod/chown/utime/xattr never follow symlinks   → `st11_*`
//! - ST-13 duplicates and type changes, two-layer stacks          → `st13_*`
//! - ST-14 implied, file-shaped and restrictive parents (umask 027 in `umask.rs`) → `st14_*`
//! - ST-15 degenerate whiteouts refused, exact whiteout semantics  → `st15_*`
//! - A-16  forged overlay xattrs refused                           → `a16_*`
//! - ST-19 device numbers out of range, devices, fifos, setuid    → `st19_*`
//! - ST-22 extension-header edge cases and resource limits → `st22_*`
//! - ST-23 decompression bombs (byte limits, trailing-data limit, ENOSPC with the defaults),
//!   zstd windows, many gzip members, huge declared and sparse sizes → `st23_*`
//! - ST-24 truncated and corrupt archives                         → `st24_*`
//! - ST-26 diffID over the whole stream (the mismatch checks themselves are the importer's) → `st26_*`
//! - ST-29 byte-exact odd names                                   → `st29_*`
//! - ST-31 extraction racing a symlink swap (live tree, bounded)  → `st31_*`
//! - ST-35 archiving a live tree that swaps files     → `st35_*`
//!
//! Not here: ST-27 (digest syntax) and ST-28 (docker-save structure) are about the importer, not
//! tar extraction; the rootless and copy-out parts of ST-19 are the caller's (`create_devices`).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use carrel_archive::{ApplyOptions, ArchiveError, Limits, WhiteoutFormat, apply_layer, decompress};
use carrel_core::{ErrorKind, HasKind};
use common::{Fixture, H, Num, Tar};

fn naive() -> ApplyOptions {
    ApplyOptions::new(WhiteoutFormat::Naive)
}

fn assert_breakout(r: Result<carrel_archive::ApplyStats, ArchiveError>) {
    let e = r.expect_err("expected a breakout error");
    assert!(e.is_breakout(), "expected a breakout error, got: {e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("escapes the layer root"), "{e}");
}

fn assert_invalid(r: Result<carrel_archive::ApplyStats, ArchiveError>, needle: &str) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.to_string().contains(needle),
        "{e:?} does not mention {needle:?}"
    );
}

fn assert_limit(r: Result<carrel_archive::ApplyStats, ArchiveError>, needle: &str) {
    match r {
        Err(e @ ArchiveError::LimitExceeded { .. }) => {
            assert!(
                e.to_string().contains(needle),
                "{e} does not mention {needle:?}"
            );
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
        other => panic!("expected a limit error mentioning {needle:?}, got {other:?}"),
    }
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    fs::read(p).unwrap()
}

// ---------------------------------------------------------------------------------------------
// ST-01, ST-02
// ---------------------------------------------------------------------------------------------

#[test]
fn st01_parent_traversal_is_refused() {
    let mut fx = Fixture::new();
    for name in [
        "..",
        "../pwned",
        "../../pwned",
        "/../victim/slash-dotdot",
        "a/../../pwned",
        "./../pwned",
    ] {
        let tar = Tar::new().file(name, "bad").finish();
        assert_breakout(fx.apply_naive(&tar));
        // A bare `..` directory entry must not chmod or utime the parent either.
        let tar = Tar::new().dir(format!("{name}/"), 0o777).finish();
        assert_breakout(fx.apply_naive(&tar));
        fx.assert_unchanged();
        assert!(!fx.t().join("pwned").exists());
        assert!(!fx.t().join("victim/slash-dotdot").exists());
        fx.reset_root();
    }
}

#[test]
fn st01_dotted_names_are_legitimate() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .file("..gitme", "1")
        .file("foo..bar", "2")
        .file("...", "3")
        .file("a/..b/c", "4")
        .file("a/../inside", "5")
        .finish();
    fx.apply_naive(&tar).unwrap();
    for (p, c) in [
        ("..gitme", "1"),
        ("foo..bar", "2"),
        ("...", "3"),
        ("a/..b/c", "4"),
        ("inside", "5"),
    ] {
        assert_eq!(read(fx.root.join(p)), c.as_bytes(), "{p}");
    }
    fx.assert_unchanged();
}

#[test]
fn st02_absolute_names_land_under_the_root() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .file("/etc/passwd-test", "a")
        .file("//abs/double", "b")
        .file("/./dot/x", "c")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert_eq!(read(fx.root.join("etc/passwd-test")), b"a");
    assert_eq!(read(fx.root.join("abs/double")), b"b");
    assert_eq!(read(fx.root.join("dot/x")), b"c");
    fx.assert_unchanged();
}

// ---------------------------------------------------------------------------------------------
// ST-03, A-04, A-05, A-06, ST-07, ST-08
// ---------------------------------------------------------------------------------------------

#[test]
fn st03_writes_through_symlinks_stay_inside() {
    let mut fx = Fixture::new();
    // Tar 1: absolute symlink re-rooted.
    let tar = Tar::new()
        .dir("etc/", 0o755)
        .symlink("localetc", "/etc")
        .file("localetc/unbroken", "unbroken")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert_eq!(read(fx.root.join("etc/unbroken")), b"unbroken");
    assert_eq!(
        fs::read_link(fx.root.join("localetc")).unwrap(),
        Path::new("/etc")
    );
    fx.assert_unchanged();
    fx.reset_root();

    // Tar 2: relative escape.
    let tar = Tar::new()
        .symlink("loophole", "../victim")
        .file("loophole/file", "pwned")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert_eq!(read(fx.root.join("victim/file")), b"pwned");
    fx.assert_unchanged();
    fx.reset_root();

    // Tar 3: deeper relative escape with new directories behind it.
    let tar = Tar::new()
        .symlink("dir/loophole", "../../victim")
        .file("dir/loophole/newdir/newfile", "pwned")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert_eq!(read(fx.root.join("victim/newdir/newfile")), b"pwned");
    fx.assert_unchanged();
    fx.reset_root();

    // Tar 4: absolute host path of the canary directory.
    let canary = fx.canary().to_path_buf();
    let tar = Tar::new()
        .symlink("canary", canary.as_os_str().as_encoded_bytes())
        .file("canary/file", "pwned")
        .finish();
    fx.apply_naive(&tar).unwrap();
    let rerooted = fx.root.join(canary.strip_prefix("/").unwrap()).join("file");
    assert_eq!(read(rerooted), b"pwned");
    assert_eq!(read(canary.join("file")), b"canary");
    fx.assert_unchanged();
}

#[test]
fn a04_two_hop_symlink_chain_stays_inside() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .dir("inner/", 0o755)
        .symlink("inner/go_up", "..")
        .symlink("inner/go_up/escape", "../victim")
        .file("inner/go_up/escape/newfile", "pwned")
        .finish();
    fx.apply_naive(&tar).unwrap();
    // `escape` was created at the root (go_up resolves there); its target is clamped at the root.
    assert!(
        fs::symlink_metadata(fx.root.join("escape"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(read(fx.root.join("victim/newfile")), b"pwned");
    assert!(!fx.t().join("victim/newfile").exists());
    fx.assert_unchanged();
}

#[test]
fn a05_directory_replaced_by_symlink_mid_archive() {
    let fx = Fixture::new();
    let canary = fx.canary().to_path_buf();
    let tar = Tar::new()
        .dir("foo/", 0o755)
        .dir("foo/tmp/", 0o755)
        .file("foo/tmp/file", "A")
        .symlink("foo", "/")
        .file("foo/tmp/file", "B")
        .symlink("bar", canary.as_os_str().as_encoded_bytes())
        .file("bar/file", "B")
        .dir("foo/", 0o755)
        .file("foo/tmp/file", "C")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert_eq!(read(fx.root.join("foo/tmp/file")), b"C");
    // B went to the root's own /tmp/file (foo -> / is the layer root).
    assert_eq!(read(fx.root.join("tmp/file")), b"B");
    assert_eq!(read(canary.join("file")), b"canary");
    fx.assert_unchanged();
}

/// Siblings share their parent's handle, but a removal in between (here a whiteout of the
/// lower directory that the siblings' path went through, `x`, which is not in their path as
/// written) makes the next sibling resolve its path again, as the kernel sees it then.
#[test]
fn a05_a_removal_between_siblings_resolves_their_directory_again() {
    let fx = Fixture::new();
    let lower = Tar::new()
        .dir("x/", 0o755)
        .dir("x/d/", 0o755)
        .file("x/d/old", "lower")
        .symlink("a", "x")
        .finish();
    fx.apply_naive(&lower).unwrap();
    let upper = Tar::new()
        .file("a/d/one", "1")
        .file(".wh.x", "")
        .file("a/d/two", "2")
        .finish();
    fx.apply_naive(&upper).unwrap();
    // `x` went with its content; `a/d/two` then made `x/d` again through the dangling `a`.
    assert!(!fx.root.join("x/d/one").exists() && !fx.root.join("x/d/old").exists());
    assert_eq!(read(fx.root.join("x/d/two")), b"2");
    assert_eq!(read(fx.root.join("a/d/two")), b"2");
    fx.assert_unchanged();
}

#[test]
fn a06_lower_layer_absolute_symlinks_resolve_inside() {
    let fx = Fixture::new();
    let lower = Tar::new()
        .dir("run/", 0o755)
        .dir("run/existing/", 0o755)
        .file("run/source", "src")
        .dir("var/", 0o755)
        .symlink("var/run", "/run")
        .finish();
    fx.apply_naive(&lower).unwrap();
    let upper = Tar::new()
        .file("var/run/existing/non-existing/file", "x")
        .hardlink("var/run/link", "var/run/source")
        .finish();
    fx.apply_naive(&upper).unwrap();
    assert_eq!(read(fx.root.join("run/existing/non-existing/file")), b"x");
    let a = fs::metadata(fx.root.join("run/source")).unwrap();
    let b = fs::metadata(fx.root.join("run/link")).unwrap();
    assert_eq!(a.ino(), b.ino());
    fx.assert_unchanged();
}

#[test]
fn st07_relative_escape_then_absolute_symlink_is_rerooted() {
    let fx = Fixture::new();
    fs::create_dir(fx.root.join("target")).unwrap();
    std::os::unix::fs::symlink("..", fx.root.join("escape")).unwrap();
    std::os::unix::fs::symlink("/target", fx.root.join("absolute")).unwrap();
    let tar = Tar::new().file("escape/absolute/file", "x").finish();
    // carrel's rule: paths are resolved by the kernel inside the root (RESOLVE_IN_ROOT), so the
    // chain is re-rooted, exactly as for `cp` (which uses the same extractor).
    fx.apply_naive(&tar).unwrap();
    assert_eq!(read(fx.root.join("target/file")), b"x");
    assert!(!fx.t().join("target").exists());
    fx.assert_unchanged();
}

#[test]
fn st08_prefix_sharing_sibling_is_outside() {
    let mut fx = Fixture::with_root("dest");
    let tar = Tar::new().hardlink("grab", "../dest-evil/secret").finish();
    assert_breakout(fx.apply_naive(&tar));
    assert!(!fx.root.join("grab").exists());
    assert_eq!(
        fs::metadata(fx.t().join("dest-evil/secret"))
            .unwrap()
            .nlink(),
        1
    );
    fx.assert_unchanged();
    fx.reset_root();

    let tar = Tar::new()
        .symlink("s", "../dest-evil")
        .file("s/new", "x")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert!(!fx.t().join("dest-evil/new").exists());
    assert_eq!(read(fx.root.join("dest-evil/new")), b"x");
    fx.assert_unchanged();
}

// ---------------------------------------------------------------------------------------------
// ST-09, A-10, ST-11
// ---------------------------------------------------------------------------------------------

#[test]
fn st09_hardlink_escapes_are_refused() {
    let mut fx = Fixture::new();
    let canary_file = fx.canary().join("file");
    let cases: Vec<(Vec<u8>, bool)> = vec![
        (b"../victim/hello".to_vec(), true),
        (b"/../victim/hello".to_vec(), true),
        (b"../../../../../../victim/hello".to_vec(), true),
        (b"../../../../../etc/passwd".to_vec(), true),
        // Absolute targets are taken inside the root, where they do not exist.
        (canary_file.as_os_str().as_encoded_bytes().to_vec(), false),
        (b"/etc/passwd".to_vec(), false),
    ];
    for (target, breakout) in cases {
        let tar = Tar::new().hardlink("link", &target).finish();
        let r = fx.apply_naive(&tar);
        if breakout {
            assert_breakout(r);
        } else {
            assert_invalid(r, "does not exist in the layer");
        }
        fx.assert_unchanged();
        fx.reset_root();
    }
    // A hardlink to a directory, then a write through it.
    let tar = Tar::new()
        .hardlink("loophole-victim", "../victim")
        .file("loophole-victim/file", "x")
        .finish();
    assert_breakout(fx.apply_naive(&tar));
    fx.assert_unchanged();
    fx.reset_root();
    let tar = Tar::new().dir("d/", 0o755).hardlink("dl", "d").finish();
    assert_invalid(fx.apply_naive(&tar), "hardlink to a directory");
    fx.assert_unchanged();
    fx.reset_root();
    // Through a symlinked directory: resolved inside the root, so the target is missing.
    let tar = Tar::new()
        .symlink("d1", "../../victim")
        .hardlink("mypasswd", "d1/hello")
        .finish();
    assert_invalid(fx.apply_naive(&tar), "does not exist in the layer");
    fx.assert_unchanged();
    fx.reset_root();
    // The same through a symlinked directory whose in-root target exists links *that* file.
    let tar = Tar::new()
        .file("victim/hello", "layer's own")
        .symlink("d1", "../../victim")
        .hardlink("mypasswd", "d1/hello")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert_eq!(
        fs::metadata(fx.root.join("mypasswd")).unwrap().ino(),
        fs::metadata(fx.root.join("victim/hello")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(fx.t().join("victim/hello")).unwrap().nlink(),
        1
    );
    assert_eq!(fs::metadata(&canary_file).unwrap().nlink(), 1);
    fx.assert_unchanged();
}

#[test]
fn st09_legitimate_absolute_hardlinks_work() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .file("usr/bin/perlbug", "#!perl")
        .hardlink("usr/bin/perlthanks", "/usr/bin/perlbug")
        .file("etc/passwd", "root:x:0:0")
        .hardlink("etc/passwd-link", "/etc/passwd")
        .finish();
    fx.apply_naive(&tar).unwrap();
    let a = fs::metadata(fx.root.join("usr/bin/perlbug")).unwrap();
    let b = fs::metadata(fx.root.join("usr/bin/perlthanks")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(
        fs::metadata(fx.root.join("etc/passwd-link")).unwrap().ino(),
        fs::metadata(fx.root.join("etc/passwd")).unwrap().ino()
    );
    fx.assert_unchanged();
}

#[test]
fn a10_hardlink_to_symlink_links_the_symlink() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .symlink("symlink1", "regfile")
        .hardlink("symlink2", "symlink1")
        .file("regfile", "content")
        .symlink("localpasswd", "/etc/passwd")
        .hardlink("localpasswd-dup", "localpasswd")
        .finish();
    fx.apply_naive(&tar).unwrap();
    let s1 = fs::symlink_metadata(fx.root.join("symlink1")).unwrap();
    let s2 = fs::symlink_metadata(fx.root.join("symlink2")).unwrap();
    assert!(s2.is_symlink());
    assert_eq!(s1.ino(), s2.ino());
    let dup = fs::symlink_metadata(fx.root.join("localpasswd-dup")).unwrap();
    assert!(dup.is_symlink());
    assert_eq!(
        fs::read_link(fx.root.join("localpasswd-dup")).unwrap(),
        Path::new("/etc/passwd")
    );
    fx.assert_unchanged();
}

#[test]
fn st11_chmod_never_follows_a_symlink() {
    let fx = Fixture::new();
    let also = fx.t().join("also-exists-outside-root");
    let perm = fx.t().join("perm400");
    let also_b = also.as_os_str().as_encoded_bytes();
    // containerd's HardlinkSymlinkChmod: absolute name and target, then a 0777 hardlink to it.
    let tar = Tar::new()
        .symlink(also_b, perm.as_os_str().as_encoded_bytes())
        .entry(H::new("sketchylink", b'1').link(also_b).mode(0o777))
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert_eq!(fs::metadata(&perm).unwrap().mode() & 0o7777, 0o400);
    let m = fs::symlink_metadata(&also).unwrap();
    assert!(m.is_file());
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert!(
        fs::symlink_metadata(fx.root.join("sketchylink"))
            .unwrap()
            .is_symlink()
    );
    fx.assert_unchanged();
}

#[test]
fn st11_metadata_on_symlink_entries_never_reaches_the_target() {
    let fx = Fixture::new();
    let hello = fx.t().join("victim/hello");
    let outside_dir = fx.t().join("outside-dir");
    let canary = fx.canary().to_path_buf();
    // (iii) a symlink entry whose mode, owner, times and xattrs would all land on the target if
    // followed.
    let mut t = Tar::new();
    t.pax(&[(b"SCHILY.xattr.trusted.carrel-test", b"x")]);
    t.entry(
        H::new("s", b'2')
            .link(hello.as_os_str().as_encoded_bytes())
            .mode(0o4777)
            .owner(1234, 1234)
            .mtime(2_000_000_000),
    );
    // (ii) a symlink to a host directory, then a directory entry of the same name (and `d2/.`).
    t.symlink("d", outside_dir.as_os_str().as_encoded_bytes());
    t.entry(H::new("d/", b'5').mode(0o777).owner(1234, 1234));
    t.symlink("d2", canary.as_os_str().as_encoded_bytes());
    t.entry(H::new("d2/.", b'5').mode(0o777).owner(1234, 1234));
    // A device and a fifo over symlinks to outside files.
    t.symlink("dev", canary.join("file").as_os_str().as_encoded_bytes());
    t.entry(
        H::new("dev", b'3')
            .dev(Num::Val(1), Num::Val(3))
            .mode(0o666),
    );
    t.symlink("fifo", hello.as_os_str().as_encoded_bytes());
    t.entry(H::new("fifo", b'6').mode(0o666).owner(4321, 4321));
    fx.apply_naive(&t.finish()).unwrap();
    let s = fs::symlink_metadata(fx.root.join("s")).unwrap();
    assert!(s.is_symlink());
    assert_eq!((s.uid(), s.gid()), (1234, 1234));
    assert!(fs::symlink_metadata(fx.root.join("d")).unwrap().is_dir());
    assert_eq!(
        fs::symlink_metadata(fx.root.join("d")).unwrap().mode() & 0o7777,
        0o777
    );
    assert!(fs::symlink_metadata(fx.root.join("d2")).unwrap().is_dir());
    assert!(
        fs::symlink_metadata(fx.root.join("dev"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(
        fs::symlink_metadata(fx.root.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    fx.assert_unchanged();
}

// ---------------------------------------------------------------------------------------------
// ST-13, ST-14
// ---------------------------------------------------------------------------------------------

#[test]
fn st13_duplicates_replace_and_never_write_through() {
    let mut fx = Fixture::new();
    let tar = Tar::new()
        .symlink("loophole-victim", "../victim")
        .file("loophole-victim", "new")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert!(
        fs::symlink_metadata(fx.root.join("loophole-victim"))
            .unwrap()
            .is_file()
    );
    assert_eq!(read(fx.root.join("loophole-victim")), b"new");
    fx.assert_unchanged();
    fx.reset_root();

    let tar = Tar::new()
        .file("x", "1")
        .dir("x/", 0o755)
        .file("x/inner", "i")
        .file("x", "2")
        .finish();
    fx.apply_naive(&tar).unwrap();
    assert_eq!(read(fx.root.join("x")), b"2");
    fx.assert_unchanged();
    fx.reset_root();

    // Layer stack 1 (naive, same tree): lower symlink to a host dir, upper directory there.
    let canary = fx.canary().to_path_buf();
    let lower = Tar::new()
        .symlink("localetc", canary.as_os_str().as_encoded_bytes())
        .finish();
    let upper = Tar::new()
        .dir("localetc/", 0o755)
        .file("localetc/localpasswd", "x")
        .finish();
    fx.apply_naive(&lower).unwrap();
    fx.apply_naive(&upper).unwrap();
    assert!(
        fs::symlink_metadata(fx.root.join("localetc"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(read(fx.root.join("localetc/localpasswd")), b"x");
    assert!(!canary.join("localpasswd").exists());
    fx.assert_unchanged();
    fx.reset_root();

    // Layer stack 2: lower dir with a file, upper replaces it with a symlink to a host dir.
    let lower = Tar::new().dir("d/", 0o755).file("d/f", "f").finish();
    let upper = Tar::new()
        .symlink("d", canary.as_os_str().as_encoded_bytes())
        .finish();
    fx.apply_naive(&lower).unwrap();
    fx.apply_naive(&upper).unwrap();
    assert!(
        fs::symlink_metadata(fx.root.join("d"))
            .unwrap()
            .is_symlink()
    );
    // A third layer writing through it stays inside.
    let third = Tar::new().file("d/planted", "x").finish();
    fx.apply_naive(&third).unwrap();
    assert!(!canary.join("planted").exists());
    fx.assert_unchanged();
}

#[test]
fn st13_overlay_layers_in_separate_dirs() {
    let fx = Fixture::new();
    let canary = fx.canary().to_path_buf();
    let l1 = fx.root.join("l1");
    let l2 = fx.root.join("l2");
    fs::create_dir(&l1).unwrap();
    fs::create_dir(&l2).unwrap();
    let opts = ApplyOptions::new(WhiteoutFormat::Overlay);
    let lower = Tar::new()
        .symlink("localetc", canary.as_os_str().as_encoded_bytes())
        .symlink("up", "../../..")
        .finish();
    apply_layer(&l1, &lower[..], &opts).unwrap();
    let upper = Tar::new()
        .file("localetc/localpasswd", "x")
        .file("up/escaped", "x")
        .file(".wh.localetc", "")
        .finish();
    apply_layer(&l2, &upper[..], &opts).unwrap();
    assert!(fs::symlink_metadata(l2.join("localetc")).unwrap().is_dir());
    assert!(l2.join("up/escaped").exists());
    assert!(!canary.join("localpasswd").exists());
    fx.assert_unchanged();
}

#[test]
fn st14_implied_file_shaped_and_restrictive_parents() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .file("deeply/nested/and/implied", "x")
        .dir("explicit/", 0o400)
        .file("explicit/child", "c")
        .entry(H::new("dirnoslash", b'5').mode(0o700))
        .finish();
    fx.apply_naive(&tar).unwrap();
    for d in ["deeply", "deeply/nested", "deeply/nested/and"] {
        assert_eq!(
            fs::metadata(fx.root.join(d)).unwrap().mode() & 0o7777,
            0o755,
            "{d}"
        );
    }
    assert_eq!(read(fx.root.join("explicit/child")), b"c");
    assert_eq!(
        fs::metadata(fx.root.join("explicit")).unwrap().mode() & 0o7777,
        0o400
    );
    let m = fs::metadata(fx.root.join("dirnoslash")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o700);
    // A file used as a directory: a clean ENOTDIR-class error, no escape.
    let tar = Tar::new().file("f", "x").file("f/g", "y").finish();
    let e = fx.apply_naive(&tar).unwrap_err();
    assert!(matches!(e, ArchiveError::Fs { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("\"f/g\""), "{e}");
    fx.assert_unchanged();
}

// ---------------------------------------------------------------------------------------------
// ST-15, A-16
// ---------------------------------------------------------------------------------------------

fn st15_lower(fx: &Fixture) {
    let lower = Tar::new()
        .dir("etc/", 0o755)
        .file("etc/passwd", "all users")
        .file("etc/whitedout", "w")
        .symlink("localetc", "/etc")
        .dir("keep/", 0o755)
        .finish();
    fx.apply_naive(&lower).unwrap();
}

#[test]
fn st15_degenerate_whiteouts_are_refused() {
    let mut fx = Fixture::new();
    for name in [
        ".wh.",
        ".wh..",
        ".wh...",
        "etc/.wh..",
        "etc/.wh...",
        "a/.wh.../x",
        "etc/.wh../x",
    ] {
        st15_lower(&fx);
        let before = common::describe(&fx.root);
        let tar = Tar::new().file(name, "").finish();
        assert_invalid(fx.apply_naive(&tar), "invalid whiteout name");
        assert_eq!(
            before,
            common::describe(&fx.root),
            "{name} changed the lower tree"
        );
        fx.assert_unchanged();
        fx.reset_root();
        // Same in overlay format.
        let tar = Tar::new().file(name, "").finish();
        assert_invalid(
            fx.apply(&tar, WhiteoutFormat::Overlay),
            "invalid whiteout name",
        );
        fx.assert_unchanged();
        fx.reset_root();
    }
}

#[test]
fn st15_whiteout_semantics_are_exact_naive() {
    let fx = Fixture::new();
    st15_lower(&fx);
    let upper = Tar::new()
        .file(".wh.localetc", "")
        .file(".wh.etc/somefile", "content")
        .finish();
    fx.apply_naive(&upper).unwrap();
    assert!(fs::symlink_metadata(fx.root.join("localetc")).is_err());
    assert_eq!(read(fx.root.join("etc/passwd")), b"all users");
    assert_eq!(read(fx.root.join(".wh.etc/somefile")), b"content");
    // A whiteout under a symlinked parent resolves inside the root.
    let upper = Tar::new()
        .symlink("localetc", "/etc")
        .file("localetc/.wh.whitedout", "")
        .finish();
    fx.apply_naive(&upper).unwrap();
    assert!(!fx.root.join("etc/whitedout").exists());
    assert!(fx.t().join("etc/passwd").exists());
    fx.assert_unchanged();
}

#[test]
fn st15_whiteouts_never_hide_same_layer_content() {
    let fx = Fixture::new();
    let lower = Tar::new()
        .dir("a/", 0o755)
        .file("a/old", "o")
        .dir("a/sub/", 0o755)
        .file("a/sub/old", "o")
        .file("b", "lower")
        .finish();
    fx.apply_naive(&lower).unwrap();
    let upper = Tar::new()
        .file("c", "same layer")
        .file(".wh.c", "")
        .file("a/new", "n")
        .file("a/sub/new", "n")
        .file("a/.wh..wh..opq", "")
        .file(".wh.b", "")
        .dir(".wh..wh.plnk/", 0o700)
        .file(".wh..wh.plnk/123", "aufs")
        .file("a/.wh..wh.aufs", "")
        .finish();
    fx.apply_naive(&upper).unwrap();
    assert_eq!(read(fx.root.join("c")), b"same layer");
    assert_eq!(read(fx.root.join("a/new")), b"n");
    assert_eq!(read(fx.root.join("a/sub/new")), b"n");
    assert!(!fx.root.join("a/old").exists());
    assert!(!fx.root.join("a/sub/old").exists());
    assert!(!fx.root.join("b").exists());
    assert!(!fx.root.join(".wh..wh.plnk").exists());
    assert!(!fx.root.join("a/.wh..wh.aufs").exists());
    fx.assert_unchanged();
}

#[test]
fn st15_overlay_whiteouts_and_opaque() {
    let fx = Fixture::new();
    let upper = Tar::new()
        .file(".wh.localetc", "")
        .dir("a/", 0o755)
        .file("a/.wh..wh..opq", "")
        .file("a/new", "n")
        .file("x/y/.wh.gone", "")
        .file("c", "same layer")
        .file(".wh.c", "")
        .finish();
    fx.apply(&upper, WhiteoutFormat::Overlay).unwrap();
    let wh = fs::symlink_metadata(fx.root.join("localetc")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    let opq = common::xattrs_of(&fx.root.join("a"));
    assert_eq!(
        opq.get(&b"trusted.overlay.opaque"[..]).map(|v| &v[..]),
        Some(&b"y"[..])
    );
    assert!(
        fs::symlink_metadata(fx.root.join("x/y/gone"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert_eq!(read(fx.root.join("c")), b"same layer");
    assert!(!fx.root.join(".wh.localetc").exists());
    fx.assert_unchanged();
}

#[test]
fn a16_forged_overlay_xattrs_are_refused() {
    let mut fx = Fixture::new();
    for key in [
        "trusted.overlay.redirect",
        "trusted.overlay.metacopy",
        "trusted.overlay.opaque",
        "trusted.overlay.origin",
        "user.overlay.redirect",
    ] {
        for fmt in [WhiteoutFormat::Overlay, WhiteoutFormat::Naive] {
            let tar = Tar::new().file_xattrs("f", "x", &[(key, b"/etc")]).finish();
            assert_invalid(fx.apply(&tar, fmt), "overlay xattr");
            assert!(!fx.root.join("f").exists(), "nothing is written for {key}");
            let mut t = Tar::new();
            t.pax(&[(format!("SCHILY.xattr.{key}").as_bytes(), b"y")]);
            t.dir("d/", 0o755);
            assert_invalid(fx.apply(&t.finish(), fmt), "overlay xattr");
            assert!(!fx.root.join("d").exists());
            fx.assert_unchanged();
            fx.reset_root();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ST-19
// ---------------------------------------------------------------------------------------------

#[test]
fn st19_device_numbers_out_of_range_are_refused() {
    let mut fx = Fixture::new();
    let cases = [
        (Num::Val(1 << 32), Num::Val(0)),
        (Num::Val(0), Num::Val(1 << 32)),
        (Num::Neg(-1), Num::Val(0)),
        (Num::Val(0), Num::Neg(-1)),
        (Num::Val(4096), Num::Val(0)),
        (Num::Val(0), Num::Val(1 << 20)),
    ];
    for (major, minor) in cases {
        for ty in [b'3', b'4'] {
            let tar = Tar::new()
                .entry(H::new("dev", ty).dev(major, minor))
                .finish();
            assert_invalid(fx.apply_naive(&tar), "out of range");
            assert!(fs::symlink_metadata(fx.root.join("dev")).is_err());
            fx.assert_unchanged();
            fx.reset_root();
        }
    }
}

#[test]
fn st19_devices_fifos_and_setuid_are_preserved() {
    let fx = Fixture::new();
    let tar = Tar::new()
        .entry(
            H::new("dev/null-copy", b'3')
                .dev(Num::Val(1), Num::Val(3))
                .mode(0o666),
        )
        .entry(
            H::new("dev/loop-copy", b'4')
                .dev(Num::Val(7), Num::Val(0))
                .mode(0o660)
                .owner(0, 6),
        )
        .entry(H::new("fifo", b'6').mode(0o620).owner(5, 5))
        .entry(H::new("bin/su", b'0').mode(0o4755).owner(0, 0).data("su"))
        .entry(
            H::new("bin/sg", b'0')
                .mode(0o2755)
                .owner(1000, 1000)
                .data("sg"),
        )
        .entry(H::new("tmp/", b'5').mode(0o1777))
        .finish();
    fx.apply_naive(&tar).unwrap();
    let m = fs::symlink_metadata(fx.root.join("dev/null-copy")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(
        (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())),
        (1, 3)
    );
    assert_eq!(m.mode() & 0o7777, 0o666);
    let m = fs::symlink_metadata(fx.root.join("dev/loop-copy")).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!((m.mode() & 0o7777, m.gid()), (0o660, 6));
    let m = fs::symlink_metadata(fx.root.join("fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o620, 5));
    assert_eq!(
        fs::metadata(fx.root.join("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    let m = fs::metadata(fx.root.join("bin/sg")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o2755, 1000));
    assert_eq!(
        fs::metadata(fx.root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    fx.assert_unchanged();

    // With devices disabled (rootless, copy-out to a host directory) they are skipped.
    let other = fx.root.join("nodev");
    fs::create_dir(&other).unwrap();
    let mut opts = naive();
    opts.create_devices = false;
    apply_layer(&other, &tar[..], &opts).unwrap();
    assert!(fs::symlink_metadata(other.join("dev/null-copy")).is_err());
    assert!(other.join("bin/su").exists());
}

// ---------------------------------------------------------------------------------------------
// ST-22
// ---------------------------------------------------------------------------------------------

#[test]
fn st22_global_header_creates_nothing() {
    let fx = Fixture::new();
    let mut t = Tar::new();
    t.raw(H::new("foo/bar", b'g').data(common::pax_record(b"comment", b"hi")));
    t.file("ok", "x");
    fx.apply_naive(&t.finish()).unwrap();
    assert!(!fx.root.join("foo").exists());
    assert_eq!(read(fx.root.join("ok")), b"x");
    fx.assert_unchanged();
}

#[test]
fn st22_oversized_headers_are_bounded() {
    let fx = Fixture::new();
    // A PAX header declaring 64 MiB: refused before anything is allocated.
    let mut t = Tar::new();
    t.raw(H::new("PaxHeaders.0/x", b'x').size(64 << 20));
    assert_limit(fx.apply_naive(&t.buf), "PAX header");
    // A PAX header with 1 000 000 records (6 MB).
    let recs: Vec<u8> = (0..1_000_000).flat_map(|_| b"6 a=b\n".to_vec()).collect();
    let t = Tar::new().pax_raw(&recs).file("f", "x").finish();
    assert_limit(fx.apply_naive(&t), "PAX header");
    // A GNU long name of 2 MiB.
    let t = Tar::new()
        .raw(H::new("././@LongLink", b'L').data(vec![b'a'; 2 << 20]))
        .file("f", "x")
        .finish();
    assert_limit(fx.apply_naive(&t), "GNU long name");
    // A path of 70 000 bytes.
    let long: Vec<u8> = b"abcd/".repeat(14_000);
    let t = Tar::new()
        .pax(&[(b"path", &long)])
        .file("short", "x")
        .finish();
    assert_limit(fx.apply_naive(&t), "path length");
    // A 256-byte component.
    let t = Tar::new().file(vec![b'n'; 256], "x").finish();
    assert_limit(fx.apply_naive(&t), "name component length");
    // A symlink target of 1 MiB, and one of 5000 bytes.
    let target = vec![b't'; 1 << 20];
    let t = Tar::new()
        .pax(&[(b"linkpath", &target)])
        .symlink("s", "x")
        .finish();
    assert_limit(fx.apply_naive(&t), "PAX header");
    let target = vec![b't'; 5000];
    let t = Tar::new()
        .pax(&[(b"linkpath", &target)])
        .symlink("s", "x")
        .finish();
    assert_limit(fx.apply_naive(&t), "symlink target length");
    fx.assert_unchanged();
}

/// A GNU sparse (`S`) header with `regions` tiny regions spread over extension blocks.
fn gnu_sparse(name: &str, real_size: u64, regions: &[(u64, u64)], data: &[u8]) -> Vec<u8> {
    let mut h = H::new(name, b'S').data(data);
    h.gnu = true;
    let mut blk = common::header_block(&h);
    let put = |b: &mut [u8], v: u64| {
        if v < 8u64.pow(11) {
            b.copy_from_slice(format!("{:011o}\0", v).as_bytes());
        } else {
            b.fill(0);
            b[0] = 0x80;
            b[4..].copy_from_slice(&v.to_be_bytes());
        }
    };
    put(&mut blk[483..495], real_size);
    let mut it = regions.iter();
    for i in 0..4 {
        if let Some(&(o, l)) = it.next() {
            put(&mut blk[386 + i * 24..398 + i * 24], o);
            put(&mut blk[398 + i * 24..410 + i * 24], l);
        }
    }
    let rest: Vec<_> = it.collect();
    blk[482] = u8::from(!rest.is_empty());
    common::set_checksum(&mut blk);
    let mut out = blk.to_vec();
    let chunks: Vec<_> = rest.chunks(21).collect();
    for (ci, chunk) in chunks.iter().enumerate() {
        let mut ext = [0u8; 512];
        for (i, &&(o, l)) in chunk.iter().enumerate() {
            put(&mut ext[i * 24..i * 24 + 12], o);
            put(&mut ext[i * 24 + 12..i * 24 + 24], l);
        }
        ext[504] = u8::from(ci + 1 < chunks.len());
        out.extend_from_slice(&ext);
    }
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    out
}

#[test]
fn st22_sparse_map_bombs_are_bounded() {
    let fx = Fixture::new();
    let regions: Vec<(u64, u64)> = (0..1_000_000u64).map(|i| (i * 2, 1)).collect();
    let mut tar = gnu_sparse("s", 2_000_000, &regions, &vec![b'x'; 1_000_000]);
    tar.extend_from_slice(&[0u8; 1024]);
    let start = Instant::now();
    assert_limit(fx.apply_naive(&tar), "sparse map");
    assert!(start.elapsed() < Duration::from_secs(10));
    // PAX 0.1 map declaring a million regions.
    let t = Tar::new()
        .pax(&[
            (b"GNU.sparse.major", b"0"),
            (b"GNU.sparse.minor", b"1"),
            (b"GNU.sparse.size", b"10"),
            (b"GNU.sparse.numblocks", b"1000000"),
            (b"GNU.sparse.map", b"0,1"),
        ])
        .file("s", "x")
        .finish();
    assert_limit(fx.apply_naive(&t), "sparse map region count");
    fx.assert_unchanged();
}

#[test]
fn st22_entry_count_is_capped() {
    let fx = Fixture::new();
    let mut t = Tar::new();
    for i in 0..1500 {
        t.file(format!("f{i}"), "");
    }
    let tar = t.finish();
    let mut opts = naive();
    opts.limits = Limits {
        max_entries: 1000,
        ..Limits::default()
    };
    assert_limit(apply_layer(&fx.root, &tar[..], &opts), "entry count");
    fx.assert_unchanged();
}

#[test]
fn st22_many_tiny_entries_run_in_linear_time() {
    let fx = Fixture::new();
    let mut t = Tar::new();
    for i in 0..20_000 {
        t.file(format!("d{}/f{i}", i % 100), "");
    }
    let start = Instant::now();
    let stats = fx.apply_naive(&t.finish()).unwrap();
    assert_eq!(stats.entries, 20_000);
    assert!(start.elapsed() < Duration::from_secs(30));
    fx.assert_unchanged();
}

#[test]
fn st22_parser_differentials_are_resolved_like_go_or_refused() {
    let mut fx = Fixture::new();
    // PAX size overrides the ustar size (either direction): the data is 0 bytes and what follows
    // is the next header, as Go's archive/tar reads it.
    let mut t = Tar::new();
    t.pax(&[(b"size", b"0")]);
    t.raw(H::new("a", b'0').size(512));
    t.file("b", "bee");
    fx.apply_naive(&t.finish()).unwrap();
    assert_eq!(read(fx.root.join("a")), b"");
    assert_eq!(read(fx.root.join("b")), b"bee");
    fx.reset_root();
    // PAX applies to the file after a GNU long name, not to the long name header.
    let mut t = Tar::new();
    t.pax(&[(b"SCHILY.xattr.user.k", b"v")]);
    t.raw(H::new("././@LongLink", b'L').data(b"long-name\0"));
    t.file("short", "x");
    fx.apply_naive(&t.finish()).unwrap();
    assert_eq!(
        common::xattrs_of(&fx.root.join("long-name"))
            .get(&b"user.k"[..])
            .map(|v| &v[..]),
        Some(&b"v"[..])
    );
    fx.reset_root();
    // Ambiguous or malformed headers are refused.
    let refused: Vec<Vec<u8>> = vec![
        {
            let mut t = Tar::new();
            t.pax(&[(b"path", b"from-pax")]);
            t.raw(H::new("././@LongLink", b'L').data(b"from-gnu\0"));
            t.file("short", "x");
            t.finish()
        },
        {
            let mut t = Tar::new();
            t.pax_raw(
                &[
                    common::pax_record(b"path", b"a"),
                    common::pax_record(b"path", b"b"),
                ]
                .concat(),
            );
            t.file("short", "x");
            t.finish()
        },
        Tar::new().pax_raw(b"9 size=x\n").file("f", "x").finish(),
        Tar::new().pax_raw(b"10 path=ab").file("f", "x").finish(),
        Tar::new()
            .pax_raw(b"6 a=b\n")
            .pax_raw(b"6 a=b\n")
            .file("f", "x")
            .finish(),
        {
            let mut b = Tar::new().file("f", "x").finish();
            b[100] = b'9'; // mode field not octal: checksum mismatch or malformed
            b
        },
        Tar::new().raw(H::new("v", b'V')).finish(),
    ];
    for (i, tar) in refused.iter().enumerate() {
        let e = fx
            .apply_naive(tar)
            .expect_err(&format!("case {i} must be refused"));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "case {i}: {e}");
        fx.assert_unchanged();
        fx.reset_root();
    }
}

// ---------------------------------------------------------------------------------------------
// ST-23
// ---------------------------------------------------------------------------------------------

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gzip stream (many members) of a tar holding one file of `size` zero bytes.
fn gzip_bomb(size: u64) -> Vec<u8> {
    let mut out = gz(&common::header_block(&H::new("bomb", b'0').size(size)));
    let mib = gz(&vec![0u8; 1 << 20]);
    for _ in 0..(size >> 20) {
        out.extend_from_slice(&mib);
    }
    out.extend(gz(&[0u8; 1024]));
    out
}

fn apply_compressed(
    root: &Path,
    blob: Vec<u8>,
    opts: &ApplyOptions,
) -> Result<carrel_archive::ApplyStats, ArchiveError> {
    let (_, r) = decompress(std::io::Cursor::new(blob))?;
    apply_layer(root, r, opts)
}

#[test]
fn st23_gzip_bomb_stops_at_the_byte_limit() {
    let fx = Fixture::new();
    let bomb = gzip_bomb(1 << 30);
    assert!(bomb.len() < 8 << 20, "bomb is {} bytes", bomb.len());
    let mut opts = naive();
    opts.limits.max_bytes_written = Some(10 << 20);
    let start = Instant::now();
    assert_limit(
        apply_compressed(&fx.root, bomb.clone(), &opts),
        "bytes written",
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(fs::metadata(fx.root.join("bomb")).unwrap().len() <= 10 << 20);

    let mut opts = naive();
    opts.limits.max_stream_bytes = Some(10 << 20);
    assert_limit(
        apply_compressed(&fx.root, bomb, &opts),
        "uncompressed stream size",
    );

    // With the defaults, a stream of zeros is an empty layer whose trailing data is bounded.
    let mut zeros = Vec::new();
    let mib = gz(&vec![0u8; 1 << 20]);
    for _ in 0..1024 {
        zeros.extend_from_slice(&mib);
    }
    let start = Instant::now();
    assert_limit(
        apply_compressed(&fx.root, zeros, &naive()),
        "after the end-of-archive",
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    fx.assert_unchanged();
}

#[test]
fn st23_zstd_bomb_and_huge_window() {
    let fx = Fixture::new();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.write_all(&common::header_block(&H::new("bomb", b'0').size(256 << 20)))
        .unwrap();
    let mib = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&mib).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    let blob = enc.finish().unwrap();
    let mut opts = naive();
    opts.limits.max_bytes_written = Some(10 << 20);
    assert_limit(apply_compressed(&fx.root, blob, &opts), "bytes written");

    // A frame declaring a 2^31-byte window is refused without allocating it.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.window_log(31).unwrap();
    enc.long_distance_matching(true).unwrap();
    enc.write_all(&Tar::new().file("f", "x").finish()).unwrap();
    let blob = enc.finish().unwrap();
    let e = apply_compressed(&fx.root, blob, &naive()).unwrap_err();
    assert!(matches!(e, ArchiveError::Read { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    fx.assert_unchanged();
}

#[test]
fn st23_many_empty_gzip_members_then_a_tar() {
    let fx = Fixture::new();
    let empty = gz(b"");
    let mut blob = Vec::new();
    for _ in 0..100_000 {
        blob.extend_from_slice(&empty);
    }
    let tar = Tar::new().file("real", "content").finish();
    blob.extend(gz(&tar));
    let stats = apply_compressed(&fx.root, blob, &naive()).unwrap();
    assert_eq!(read(fx.root.join("real")), b"content");
    assert_eq!(stats.diff_id, carrel_core::Digest::of_bytes(&tar));
    fx.assert_unchanged();
}

#[test]
fn st23_huge_declared_size_and_huge_sparse_file() {
    let mut fx = Fixture::new();
    // A regular file declaring 2^62 bytes without the data: truncated, promptly.
    let tar = Tar::new().raw(H::new("huge", b'0').size(1 << 62)).finish();
    let e = fx.apply_naive(&tar).unwrap_err();
    assert!(matches!(e, ArchiveError::Truncated { .. }), "{e}");
    fx.assert_unchanged();
    fx.reset_root();
    // A sparse file of logical size 1 TiB with one data block at its end: no 1 TiB of blocks.
    let tib = 1u64 << 40;
    let mut tar = gnu_sparse("sparse", tib, &[(tib - 512, 512)], &[b'z'; 512]);
    tar.extend_from_slice(&[0u8; 1024]);
    let stats = fx.apply_naive(&tar).unwrap();
    assert_eq!(stats.bytes_written, 512);
    let m = fs::metadata(fx.root.join("sparse")).unwrap();
    assert_eq!(m.len(), tib);
    assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
    fx.assert_unchanged();
}

// ---------------------------------------------------------------------------------------------
// ST-24, ST-26
// ---------------------------------------------------------------------------------------------

#[test]
fn st24_truncated_and_corrupt_archives_fail_cleanly() {
    let mut fx = Fixture::new();
    let tar = Tar::new()
        .file("a", vec![b'a'; 3000])
        .file("b", vec![b'b'; 3000])
        .finish();
    // Cut in the middle of the first file's data.
    let e = fx.apply_naive(&tar[..1500]).unwrap_err();
    assert!(matches!(e, ArchiveError::Truncated { .. }), "{e}");
    fx.assert_unchanged();
    fx.reset_root();
    // Cut at a header boundary, before the end-of-archive marker.
    let boundary = 512 + 3072;
    let e = fx.apply_naive(&tar[..boundary]).unwrap_err();
    assert!(matches!(e, ArchiveError::Truncated { .. }), "{e}");
    fx.reset_root();
    // Cut inside a header block.
    let e = fx.apply_naive(&tar[..boundary + 100]).unwrap_err();
    assert!(matches!(e, ArchiveError::Truncated { .. }), "{e}");
    fx.reset_root();
    // gzip cut mid-stream, and gzip with a corrupted CRC.
    let blob = gz(&tar);
    let e = apply_compressed(&fx.root, blob[..blob.len() / 2].to_vec(), &naive()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    fx.reset_root();
    let mut bad = blob.clone();
    let n = bad.len();
    bad[n - 8] ^= 0xff;
    let e = apply_compressed(&fx.root, bad, &naive()).unwrap_err();
    assert!(matches!(e, ArchiveError::Read { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    fx.reset_root();
    // Random bytes.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let e = fx.apply_naive(&noise).unwrap_err();
    assert!(matches!(e, ArchiveError::InvalidArchive { .. }), "{e}");
    fx.assert_unchanged();
    fx.reset_root();
    // bzip2 and xz are refused, never run.
    for magic in [&b"BZh91AY&SY"[..], &b"\xfd7zXZ\0\0\0"[..]] {
        let e = apply_compressed(&fx.root, magic.to_vec(), &naive()).unwrap_err();
        assert!(matches!(e, ArchiveError::UnsupportedCompression(_)), "{e}");
    }
    // Empty stream and a stream of two zero blocks are valid empty layers.
    let s = fx.apply_naive(b"").unwrap();
    assert_eq!((s.entries, s.tar_size), (0, 0));
    let s = fx.apply_naive(&[0u8; 1024]).unwrap();
    assert_eq!((s.entries, s.tar_size), (0, 1024));
    // A single zero block is accepted too (Go's reader does); a non-zero block after it is not.
    fx.apply_naive(&[0u8; 512]).unwrap();
    let mut odd = vec![0u8; 512];
    odd.extend_from_slice(&Tar::new().file("late", "x").finish());
    let e = fx.apply_naive(&odd).unwrap_err();
    assert!(matches!(e, ArchiveError::InvalidArchive { .. }), "{e}");
    assert!(!fx.root.join("late").exists());
    fx.assert_unchanged();
}

#[test]
fn st26_diff_id_covers_the_whole_stream() {
    let fx = Fixture::new();
    let mut tar = Tar::new().file("a", "x").finish();
    tar.extend_from_slice(&[0u8; 8192]);
    tar.extend_from_slice(b"trailing garbage");
    let stats = fx.apply_naive(&tar).unwrap();
    assert_eq!(stats.diff_id, carrel_core::Digest::of_bytes(&tar));
    assert_eq!(stats.tar_size, tar.len() as u64);
    let mut opts = naive();
    opts.limits.max_trailing_bytes = 100;
    assert_limit(
        apply_layer(&fx.root, &tar[..], &opts),
        "after the end-of-archive",
    );
}

// ---------------------------------------------------------------------------------------------
// ST-29
// ---------------------------------------------------------------------------------------------

#[test]
fn st29_byte_exact_odd_names() {
    let fx = Fixture::new();
    let names: Vec<Vec<u8>> = vec![
        b"bin\xff\xfe".to_vec(),
        b"new\nline".to_vec(),
        b"carriage\rreturn".to_vec(),
        b"-leading-dash".to_vec(),
        b"co:lon".to_vec(),
        b"back\\slash".to_vec(),
        vec![b'L'; 255],
    ];
    let mut t = Tar::new();
    for n in &names {
        t.file(n, n);
    }
    // A 4000-byte nested path is fine; 5000 bytes exceeds the path limit with a clear error.
    let deep: Vec<u8> = [b"dddddddddd/".repeat(360), b"leaf".to_vec()].concat();
    t.file(&deep, "deep");
    fx.apply_naive(&t.finish()).unwrap();
    for n in &names {
        let p = fx.root.join(OsStr::from_bytes(n));
        assert_eq!(read(&p), *n);
    }
    let deep_p = fx.root.join(OsStr::from_bytes(&deep));
    assert!(deep_p.as_os_str().len() > 3900);
    let too_deep: Vec<u8> = [b"dddddddddd/".repeat(454), b"leaf".to_vec()].concat();
    let tar = Tar::new().file(&too_deep, "x").finish();
    assert_limit(fx.apply_naive(&tar), "path length");
    // write_tree round-trips the exact bytes.
    let mut out = Vec::new();
    carrel_archive::write_tree(&fx.root, &mut out, &Default::default()).unwrap();
    let again = fx.root.join("again");
    fs::create_dir(&again).unwrap();
    apply_layer(&again, &out[..], &naive()).unwrap();
    for n in &names {
        let p = again.join(OsStr::from_bytes(n));
        assert_eq!(read(&p), *n);
    }
    fx.assert_unchanged();
}

// ---------------------------------------------------------------------------------------------
// ST-31: a live tree swapping a directory for a symlink to the host while layers are applied
// ---------------------------------------------------------------------------------------------

#[test]
fn st31_extraction_racing_a_symlink_swap_stays_inside() {
    let fx = Fixture::new();
    let outside = fx.t().join("outside-dir");
    let canary = fx.canary().to_path_buf();
    fs::create_dir(fx.root.join("d")).unwrap();
    std::os::unix::fs::symlink(&outside, fx.root.join("alt")).unwrap();
    std::os::unix::fs::symlink(&canary, fx.root.join("alt2")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let root = fx.root.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let dir = rustix::fs::open(&root, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())
                .unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let other = if n.is_multiple_of(2) { "alt" } else { "alt2" };
                let _ = rustix::fs::renameat_with(
                    &dir,
                    "d",
                    &dir,
                    other,
                    rustix::fs::RenameFlags::EXCHANGE,
                );
                n += 1;
            }
            n
        })
    };
    let tar = Tar::new()
        .file("d/f", "x")
        .dir("d/sub/", 0o777)
        .file("d/sub/g", "y")
        .symlink("d/link", "/")
        .hardlink("d/hl", "d/f")
        .entry(H::new("d/fifo", b'6').mode(0o666))
        .file("d/.wh.hello", "")
        .file("d/sub/.wh..wh..opq", "")
        .finish();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut runs = 0;
    while Instant::now() < deadline && runs < 2000 {
        let _ = fx.apply_naive(&tar);
        let _ = fx.apply(&tar, WhiteoutFormat::Overlay);
        runs += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 0 && runs > 0);
    fx.assert_unchanged();
}

// ---------------------------------------------------------------------------------------------
// ST-35: archiving a live tree while it swaps files for symlinks and fifos
// ---------------------------------------------------------------------------------------------

#[test]
fn st35_archiving_a_live_tree_never_reads_outside() {
    let mut fx = Fixture::new();
    let secret = fx.canary().join("secret");
    fs::write(&secret, b"TOP-SECRET-HOST-DATA").unwrap();
    fx.resnapshot();
    let root = fx.root.clone();
    fs::write(root.join("f"), b"container data").unwrap();
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/inner"), b"inner").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("alt-link")).unwrap();
    std::os::unix::fs::symlink(fx.canary(), root.join("alt-dir")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("alt-fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let root = root.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let dir = rustix::fs::open(&root, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())
                .unwrap();
            let x = rustix::fs::RenameFlags::EXCHANGE;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = rustix::fs::renameat_with(&dir, "f", &dir, "alt-link", x);
                let _ = rustix::fs::renameat_with(&dir, "d", &dir, "alt-dir", x);
                let _ = rustix::fs::renameat_with(&dir, "f", &dir, "alt-fifo", x);
                n += 1;
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut runs = 0;
    while Instant::now() < deadline && runs < 2000 {
        let mut out = Vec::new();
        carrel_archive::write_tree(&root, &mut out, &Default::default()).unwrap();
        assert!(!out.windows(20).any(|w| w == b"TOP-SECRET-HOST-DATA"));
        // Every output is a valid tar.
        runs += 1;
        let mut ar = tar::Archive::new(&out[..]);
        for e in ar.entries().unwrap() {
            e.unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 0 && runs > 0);
    fx.assert_unchanged();
}

/// Unmounts a test mount when dropped (also when the test fails).
struct MountGuard(std::path::PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn st23_gzip_bomb_with_default_limits_ends_in_a_clean_enospc() {
    let fx = Fixture::new();
    // A small filesystem stands in for a full disk: the bomb (64 MiB of zeros in one entry)
    // is written until the kernel says ENOSPC, which is a clean, typed error.
    let small = fx.root.join("small");
    fs::create_dir(&small).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &small,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=4m",
    )
    .unwrap();
    let _guard = MountGuard(small.clone());
    let start = Instant::now();
    let e = apply_compressed(&small, gzip_bomb(64 << 20), &naive()).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(matches!(e, ArchiveError::Fs { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("\"bomb\""), "{e}");
    drop(_guard);
    fx.assert_unchanged();
}
