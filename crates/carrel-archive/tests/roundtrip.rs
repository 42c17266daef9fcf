//! Round trips: tars built with the `tar` crate, with GNU tar and with carrel's own writers,
//! extracted and compared tree against tree; whiteout semantics; compression detection.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use carrel_archive::{
    ApplyOptions, ArchiveError, Compression, TarSource, WhiteoutFormat, WriteOptions, apply_layer,
    decompress, write_overlay_diff, write_paths, write_tree,
};
use carrel_core::Digest;
use common::{Tar, assert_same_tree, run, set_times};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, Uid};

/// `security.capability` for `cap_net_raw+ep` (VFS_CAP_REVISION_2).
const CAP_NET_RAW: &[u8] = &[
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("carrel-archive-rt")
        .tempdir()
        .unwrap()
}

fn overlay() -> ApplyOptions {
    ApplyOptions::new(WhiteoutFormat::Overlay)
}

fn naive() -> ApplyOptions {
    ApplyOptions::new(WhiteoutFormat::Naive)
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    rfs::chownat(
        rfs::CWD,
        p,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn lsetxattr(p: &Path, k: &str, v: &[u8]) {
    rfs::lsetxattr(p, k, v, rfs::XattrFlags::empty()).unwrap();
}

/// A tree with every kind of object and metadata carrel must preserve.
fn make_tree(root: &Path) {
    let p = |rel: &str| root.join(rel);
    fs::create_dir_all(p("d/sub")).unwrap();
    fs::write(p("d/file"), b"hello").unwrap();
    chmod(&p("d/file"), 0o640);
    lchown(&p("d/file"), 1000, 100);
    lsetxattr(&p("d/file"), "user.color", b"blue");
    lsetxattr(&p("d/file"), "trusted.t", b"1");
    fs::hard_link(p("d/file"), p("d/hard")).unwrap();
    fs::write(p("d/setuid"), b"su").unwrap();
    chmod(&p("d/setuid"), 0o4755);
    fs::write(p("d/setgid"), b"sg").unwrap();
    lchown(&p("d/setgid"), 0, 50);
    chmod(&p("d/setgid"), 0o2711);
    fs::write(p("cap"), b"ping").unwrap();
    chmod(&p("cap"), 0o755);
    lsetxattr(&p("cap"), "security.capability", CAP_NET_RAW);
    fs::create_dir(p("sticky")).unwrap();
    chmod(&p("sticky"), 0o1777);
    std::os::unix::fs::symlink("file", p("d/link")).unwrap();
    lchown(&p("d/link"), 1000, 1000);
    lsetxattr(&p("d/link"), "trusted.onlink", b"yes");
    std::os::unix::fs::symlink("/nonexistent/target", p("d/abslink")).unwrap();
    fs::create_dir(p("dev")).unwrap();
    rfs::mknodat(
        rfs::CWD,
        p("dev/null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rfs::makedev(1, 3),
    )
    .unwrap();
    chmod(&p("dev/null"), 0o666);
    rfs::mknodat(
        rfs::CWD,
        p("dev/sda"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o660),
        rfs::makedev(8, 0),
    )
    .unwrap();
    lchown(&p("dev/sda"), 0, 6);
    chmod(&p("dev/sda"), 0o660);
    rfs::mknodat(
        rfs::CWD,
        p("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    chmod(&p("fifo"), 0o644);
    fs::create_dir(p("empty")).unwrap();
    chmod(&p("empty"), 0o700);
    lchown(&p("empty"), 33, 33);
    let long = format!("long/{}/{}", "x".repeat(150), "y".repeat(120));
    fs::create_dir_all(p(&long).parent().unwrap()).unwrap();
    fs::write(p(&long), b"long").unwrap();
    fs::write(p("\u{fc}n\u{ef}c\u{f8}d\u{e9}"), b"utf8").unwrap();
    fs::write(root.join(OsStr::from_bytes(b"bin\xff")), b"latin").unwrap();
    fs::write(p("bigid"), b"big").unwrap();
    lchown(&p("bigid"), 3_000_000, 3_000_001);
    fs::write(p("empty-file"), b"").unwrap();
    fs::write(p("blocks"), vec![7u8; 70_000]).unwrap();
    // Whole-second times, children before parents.
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            if fs::symlink_metadata(&e).unwrap().is_dir() {
                stack.push(e.clone());
            }
            all.push(e);
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, e) in all.iter().enumerate() {
        set_times(e, 1_500_000_000 + i as i64 * 7);
    }
}

#[test]
fn tar_crate_archive_round_trips() {
    let t = tmp();
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o751);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(1_234_567_890);
    h.set_size(0);
    b.append_data(&mut h, "dir/", &[][..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o4750);
    h.set_uid(1000);
    h.set_gid(1001);
    h.set_mtime(1_111_111_111);
    h.set_size(3);
    b.append_pax_extensions([
        ("SCHILY.xattr.user.k", &b"v"[..]),
        ("SCHILY.xattr.security.capability", CAP_NET_RAW),
        ("mtime", b"1111111111.25"),
        ("atime", b"1222222222.5"),
    ])
    .unwrap();
    b.append_data(&mut h, "dir/file", &b"abc"[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "dir/hard", "dir/file").unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_uid(5);
    h.set_gid(6);
    h.set_mtime(1_000_000_000);
    h.set_size(0);
    b.append_link(&mut h, "dir/sym", "../elsewhere").unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(5).unwrap();
    h.set_mode(0o666);
    h.set_size(0);
    b.append_data(&mut h, "dev/zero", &[][..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Fifo);
    h.set_mode(0o600);
    h.set_size(0);
    b.append_data(&mut h, "pipe", &[][..]).unwrap();
    let tar = b.into_inner().unwrap();

    let stats = apply_layer(&dst, &tar[..], &overlay()).unwrap();
    assert_eq!(stats.diff_id, Digest::of_bytes(&tar));
    assert_eq!(stats.tar_size, tar.len() as u64);
    assert_eq!(stats.bytes_written, 3);
    assert_eq!(stats.entries, 6);

    let m = fs::metadata(dst.join("dir")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o751, 7, 8, 1_234_567_890)
    );
    let m = fs::metadata(dst.join("dir/file")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4750, 1000, 1001));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_111_111_111, 250_000_000));
    assert_eq!((m.atime(), m.atime_nsec()), (1_222_222_222, 500_000_000));
    assert_eq!(m.nlink(), 2);
    let x = common::xattrs_of(&dst.join("dir/file"));
    assert_eq!(x.get(&b"user.k"[..]).unwrap(), b"v");
    assert_eq!(x.get(&b"security.capability"[..]).unwrap(), CAP_NET_RAW);
    assert_eq!(fs::metadata(dst.join("dir/hard")).unwrap().ino(), m.ino());
    let s = fs::symlink_metadata(dst.join("dir/sym")).unwrap();
    assert!(s.is_symlink());
    assert_eq!((s.uid(), s.gid(), s.mtime()), (5, 6, 1_000_000_000));
    assert_eq!(
        fs::read_link(dst.join("dir/sym")).unwrap(),
        Path::new("../elsewhere")
    );
    let c = fs::symlink_metadata(dst.join("dev/zero")).unwrap();
    assert!(c.file_type().is_char_device());
    assert_eq!((rfs::major(c.rdev()), rfs::minor(c.rdev())), (1, 5));
    assert!(
        fs::symlink_metadata(dst.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // Implied parent of dev/zero.
    assert_eq!(
        fs::metadata(dst.join("dev")).unwrap().mode() & 0o7777,
        0o755
    );
}

#[test]
fn write_tree_round_trips_and_is_deterministic() {
    let t = tmp();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    make_tree(&src);
    let mut a = Vec::new();
    let sa = write_tree(&src, &mut a, &WriteOptions::default()).unwrap();
    let mut b = Vec::new();
    let sb = write_tree(&src, &mut b, &WriteOptions::default()).unwrap();
    assert_eq!(a, b, "write_tree is deterministic");
    assert_eq!(sa.digest, Digest::of_bytes(&a));
    assert_eq!(sa.size, a.len() as u64);
    assert_eq!(sa, sb);
    let stats = apply_layer(&dst, &a[..], &overlay()).unwrap();
    assert_eq!(stats.diff_id, sa.digest);
    assert_eq!(stats.entries, sa.entries);
    assert_same_tree(&src, &dst);

    // The entry order is Go's filepath.Walk order (sorted names, depth first) and hardlinks are
    // link entries.
    let names = list(&a);
    let mut sorted = names.clone();
    sorted.sort_by(|x, y| walk_order(&x.0, &y.0));
    assert_eq!(names, sorted);
    let hard = names.iter().find(|(n, _)| n == b"d/hard").unwrap();
    assert_eq!(hard.1, b'1');
    assert!(
        names
            .iter()
            .all(|(n, _)| !n.starts_with(b"./") && !n.starts_with(b"/"))
    );
}

/// Compare paths as a depth-first walk with sorted names visits them.
fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let ca: Vec<&[u8]> = a.split(|&c| c == b'/').filter(|s| !s.is_empty()).collect();
    let cb: Vec<&[u8]> = b.split(|&c| c == b'/').filter(|s| !s.is_empty()).collect();
    ca.cmp(&cb)
}

/// (name, typeflag) of every entry, using the `tar` crate.
fn list(tar: &[u8]) -> Vec<(Vec<u8>, u8)> {
    let mut ar = tar::Archive::new(tar);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path_bytes().into_owned(),
                e.header().entry_type().as_byte(),
            )
        })
        .collect()
}

/// PAX keys of every entry.
fn pax_keys(tar: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar);
    let mut keys = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                keys.push(x.unwrap().key().unwrap().to_string());
            }
        }
    }
    keys
}

#[test]
fn gnu_tar_archives_extract_identically() {
    let t = tmp();
    let src = t.path().join("src");
    let dst = t.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    make_tree(&src);
    let tarball = t.path().join("gnu.tar");
    run(Command::new("tar")
        .args([
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-C",
        ])
        .arg(&src)
        .arg("-cf")
        .arg(&tarball)
        .arg("."));
    let data = fs::read(&tarball).unwrap();
    let stats = apply_layer(&dst, &data[..], &overlay()).unwrap();
    assert_eq!(stats.diff_id, Digest::of_bytes(&data));
    assert_same_tree(&src, &dst);

    // And the other way: GNU tar extracts what write_tree wrote into the same tree.
    let dst2 = t.path().join("dst2");
    fs::create_dir(&dst2).unwrap();
    let ours = t.path().join("ours.tar");
    write_tree(
        &src,
        fs::File::create(&ours).unwrap(),
        &WriteOptions::default(),
    )
    .unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&ours)
        .arg("-C")
        .arg(&dst2));
    assert_same_tree(&src, &dst2);
    // GNU tar's listing agrees on the names.
    let listing = run(Command::new("tar").arg("-tf").arg(&ours));
    let gnu: Vec<&[u8]> = listing
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mine: Vec<Vec<u8>> = list(&fs::read(&ours).unwrap())
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(gnu.len(), mine.len());
}

#[test]
fn gnu_tar_sparse_files_stay_sparse() {
    let t = tmp();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    // 64 MiB logical, three data islands and a trailing hole; plus one ending in data.
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(&[1u8; 8192], 0).unwrap();
    f.write_at(&[2u8; 4096], 20 << 20).unwrap();
    f.write_at(&[3u8; 100], (40 << 20) + 7).unwrap();
    let g = fs::File::create(src.join("tail")).unwrap();
    g.set_len(16 << 20).unwrap();
    g.write_at(b"end", (16 << 20) - 3).unwrap();
    drop((f, g));
    let src_content = fs::read(src.join("sparse")).unwrap();
    let tail_content = fs::read(src.join("tail")).unwrap();
    for (i, args) in [
        &["--sparse"][..],
        &["--format=posix", "--sparse", "--sparse-version=0.0"][..],
        &["--format=posix", "--sparse", "--sparse-version=0.1"][..],
        &["--format=posix", "--sparse", "--sparse-version=1.0"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let dst = t.path().join(format!("dst{i}"));
        fs::create_dir(&dst).unwrap();
        let tarball = t.path().join("sparse.tar");
        run(Command::new("tar")
            .args(args)
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(&tarball)
            .args(["sparse", "tail"]));
        let data = fs::read(&tarball).unwrap();
        let stats = apply_layer(&dst, &data[..], &overlay()).unwrap();
        assert!(
            stats.bytes_written < 1 << 20,
            "{args:?}: wrote {}",
            stats.bytes_written
        );
        for (name, content) in [("sparse", &src_content), ("tail", &tail_content)] {
            let m = fs::metadata(dst.join(name)).unwrap();
            assert_eq!(m.len(), content.len() as u64, "{args:?} {name}");
            assert!(
                m.blocks() * 512 < 1 << 20,
                "{args:?} {name}: {} blocks",
                m.blocks()
            );
            assert!(
                fs::read(dst.join(name)).unwrap() == *content,
                "{args:?} {name} content"
            );
        }
    }
}

#[test]
fn compression_is_detected_from_bytes() {
    let t = tmp();
    let tar = Tar::new().file("a", "alpha").dir("d/", 0o755).finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (blob, want) in [
        (tar.clone(), Compression::None),
        (gz, Compression::Gzip),
        (zst, Compression::Zstd),
    ] {
        let dst = t.path().join(want.as_str());
        fs::create_dir(&dst).unwrap();
        let (c, r) = decompress(std::io::BufReader::new(Cursor::new(blob))).unwrap();
        assert_eq!(c, want);
        let stats = apply_layer(&dst, r, &overlay()).unwrap();
        assert_eq!(stats.diff_id, Digest::of_bytes(&tar), "{want}");
        assert_eq!(fs::read(dst.join("a")).unwrap(), b"alpha");
    }
    // Real tools' output too.
    let plain = t.path().join("l.tar");
    fs::write(&plain, &tar).unwrap();
    for (tool, want) in [("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
        let out = run(Command::new(tool).args(["-c"]).arg(&plain));
        let (c, mut r) = decompress(Cursor::new(out)).unwrap();
        assert_eq!(c, want);
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, tar);
    }
    for (tool, name) in [("xz", "xz"), ("bzip2", "bzip2")] {
        let out = run(Command::new(tool).args(["-c"]).arg(&plain));
        match decompress(Cursor::new(out)) {
            Err(ArchiveError::UnsupportedCompression(n)) => assert_eq!(n, name),
            Err(e) => panic!("{tool}: {e}"),
            Ok(_) => panic!("{tool} must be refused"),
        }
    }
}

#[test]
fn naive_whiteouts_apply_to_lower_layers_only() {
    let t = tmp();
    let root = t.path().join("tree");
    fs::create_dir(&root).unwrap();
    let lower = Tar::new()
        .dir("etc/", 0o755)
        .file("etc/a", "a")
        .file("etc/b", "b")
        .dir("etc/sub/", 0o755)
        .file("etc/sub/c", "c")
        .dir("opq/", 0o755)
        .file("opq/old", "old")
        .dir("opq/keep/", 0o755)
        .file("opq/keep/old", "old")
        .symlink("link", "/etc")
        .finish();
    apply_layer(&root, &lower[..], &naive()).unwrap();
    let upper = Tar::new()
        .dir("opq/", 0o700)
        .file("opq/.wh..wh..opq", "")
        .file("opq/keep/new", "new")
        .file("etc/.wh.a", "")
        .file("etc/.wh.sub", "")
        .file(".wh.link", "")
        .finish();
    apply_layer(&root, &upper[..], &naive()).unwrap();
    let mut got: Vec<String> = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            got.push(p.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    got.sort();
    assert_eq!(got, ["etc", "etc/b", "opq", "opq/keep", "opq/keep/new"]);
    assert_eq!(
        fs::metadata(root.join("opq")).unwrap().mode() & 0o7777,
        0o700
    );
}

/// Build an overlay upper dir by hand: whiteout devices, an opaque dir, a real device.
fn make_upper(upper: &Path) {
    let p = |rel: &str| upper.join(rel);
    fs::create_dir_all(p("a")).unwrap();
    lsetxattr(&p("a"), "trusted.overlay.opaque", b"y");
    lsetxattr(&p("a"), "user.keep", b"k");
    fs::write(p("a/new"), b"new").unwrap();
    fs::create_dir_all(p("b/deeper")).unwrap();
    rfs::mknodat(
        rfs::CWD,
        p("b/c"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    lchown(&p("b/c"), 12, 34);
    rfs::mknodat(
        rfs::CWD,
        p("gone"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    rfs::mknodat(
        rfs::CWD,
        p("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rfs::makedev(1, 3),
    )
    .unwrap();
    chmod(&p("null"), 0o666);
    fs::write(p("b/deeper/f"), b"f").unwrap();
    for rel in [
        "a/new",
        "b/c",
        "gone",
        "null",
        "b/deeper/f",
        "b/deeper",
        "a",
        "b",
    ] {
        set_times(&p(rel), 1_600_000_000);
    }
}

#[test]
fn overlay_diff_round_trips_to_the_same_oci_entries() {
    let t = tmp();
    let upper = t.path().join("upper");
    fs::create_dir(&upper).unwrap();
    make_upper(&upper);
    let mut diff = Vec::new();
    let stats = write_overlay_diff(&upper, &mut diff).unwrap();
    assert_eq!(stats.digest, Digest::of_bytes(&diff));
    let entries = list(&diff);
    let names: Vec<String> = entries
        .iter()
        .map(|(n, ty)| format!("{}:{}", String::from_utf8_lossy(n), *ty as char))
        .collect();
    assert_eq!(
        names,
        [
            "a/:5",
            "a/.wh..wh..opq:0",
            "a/new:0",
            "b/:5",
            "b/.wh.c:0",
            "b/deeper/:5",
            "b/deeper/f:0",
            ".wh.gone:0",
            "null:3",
        ]
    );
    let keys = pax_keys(&diff);
    assert!(keys.iter().all(|k| !k.contains("overlay")), "{keys:?}");
    assert!(keys.contains(&"SCHILY.xattr.user.keep".to_string()));

    // Applied as an overlay upper dir, the diff gives back the same upper dir.
    let again = t.path().join("again");
    fs::create_dir(&again).unwrap();
    apply_layer(&again, &diff[..], &overlay()).unwrap();
    assert_same_tree(&upper, &again);
    let mut diff2 = Vec::new();
    write_overlay_diff(&again, &mut diff2).unwrap();
    assert_eq!(diff, diff2);

    // Applied naively over a lower tree, it gives the merged view.
    let merged = t.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let lower = Tar::new()
        .file("a/old", "o")
        .file("b/c", "c")
        .file("gone", "g")
        .file("stays", "s")
        .finish();
    apply_layer(&merged, &lower[..], &naive()).unwrap();
    apply_layer(&merged, &diff[..], &naive()).unwrap();
    assert!(!merged.join("a/old").exists() && merged.join("a/new").exists());
    assert!(!merged.join("b/c").exists() && !merged.join("gone").exists());
    assert!(merged.join("stays").exists());
}

#[test]
fn overlay_diff_refuses_redirects_and_never_emits_overlay_xattrs() {
    let t = tmp();
    let upper = t.path().join("upper");
    fs::create_dir_all(upper.join("renamed")).unwrap();
    lsetxattr(&upper.join("renamed"), "trusted.overlay.redirect", b"/orig");
    let e = write_overlay_diff(&upper, std::io::sink()).unwrap_err();
    assert!(matches!(e, ArchiveError::Unsupported { .. }), "{e}");
    // write_tree of a tree with overlay and selinux xattrs drops them.
    let tree = t.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("f"), b"x").unwrap();
    lsetxattr(&tree.join("f"), "trusted.overlay.origin", b"o");
    lsetxattr(&tree.join("f"), "user.overlay.origin", b"o");
    lsetxattr(&tree.join("f"), "user.fine", b"ok");
    let mut out = Vec::new();
    write_tree(&tree, &mut out, &WriteOptions::default()).unwrap();
    assert_eq!(pax_keys(&out), ["SCHILY.xattr.user.fine"]);
    let mut out = Vec::new();
    write_tree(
        &tree,
        &mut out,
        &WriteOptions {
            xattrs: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(pax_keys(&out).is_empty());
}

#[test]
fn write_paths_tars_a_subset_for_cp() {
    let t = tmp();
    let root = t.path().join("root");
    fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    fs::write(root.join("etc/hosts"), b"127.0.0.1").unwrap();
    fs::write(root.join("etc/conf.d/x"), b"x").unwrap();
    std::os::unix::fs::symlink("etc", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
    let canary = tempfile::Builder::new()
        .prefix("carrel-canary-")
        .tempdir()
        .unwrap();
    fs::write(canary.path().join("secret"), b"HOST SECRET").unwrap();
    std::os::unix::fs::symlink(canary.path(), root.join("host")).unwrap();
    let opts = WriteOptions::default();
    let src = |path: &str, name: &str, follow: bool| TarSource {
        path: PathBuf::from(path),
        name: PathBuf::from(name),
        follow_symlink: follow,
    };
    let names = |sources: &[TarSource]| {
        let mut out = Vec::new();
        write_paths(&root, sources, &mut out, &opts).unwrap();
        assert!(!out.windows(11).any(|w| w == b"HOST SECRET"));
        list(&out)
            .into_iter()
            .map(|(n, ty)| format!("{}:{}", String::from_utf8_lossy(&n), ty as char))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&[src("/etc/hosts", "hosts", false)]), ["hosts:0"]);
    assert_eq!(
        names(&[src("/etc", "etc", false)]),
        ["etc/:5", "etc/conf.d/:5", "etc/conf.d/x:0", "etc/hosts:0"]
    );
    // Through an absolute symlink in a parent component: resolved inside the root.
    assert_eq!(names(&[src("/abs/hosts", "h", false)]), ["h:0"]);
    // A symlink source is archived as a link unless asked to follow it.
    assert_eq!(names(&[src("link", "link", false)]), ["link:2"]);
    assert_eq!(
        names(&[src("link", "copy", true)]),
        [
            "copy/:5",
            "copy/conf.d/:5",
            "copy/conf.d/x:0",
            "copy/hosts:0"
        ]
    );
    // The contents of a directory at the top level (`cp dir/. -`), and several sources.
    assert_eq!(
        names(&[src("etc/conf.d", "", false), src("etc/hosts", "h", false)]),
        ["x:0", "h:0"]
    );
    // A symlink to a host directory never reaches the host.
    assert_eq!(names(&[src("host", "host", false)]), ["host:2"]);
    let e = write_paths(
        &root,
        &[src("host/secret", "s", false)],
        std::io::sink(),
        &opts,
    )
    .unwrap_err();
    assert_eq!(
        carrel_core::HasKind::kind(&e),
        carrel_core::ErrorKind::NotFound,
        "{e}"
    );
    let e = write_paths(&root, &[src("host", "s", true)], std::io::sink(), &opts).unwrap_err();
    assert_eq!(
        carrel_core::HasKind::kind(&e),
        carrel_core::ErrorKind::NotFound,
        "{e}"
    );
    // Escaping source paths are refused.
    let e = write_paths(
        &root,
        &[src("../../etc/passwd", "p", false)],
        std::io::sink(),
        &opts,
    )
    .unwrap_err();
    assert!(e.is_breakout(), "{e}");
}

#[test]
fn directory_times_are_set_after_children_and_root_entry_applies() {
    let t = tmp();
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let mut tar = Tar::new();
    tar.entry(common::H::new("./", b'5').mode(0o755).mtime(1_000_000_000));
    tar.entry(common::H::new("d/", b'5').mode(0o555).mtime(1_100_000_000));
    tar.file("d/a", "a");
    tar.entry(
        common::H::new("d/e/", b'5')
            .mode(0o750)
            .mtime(1_200_000_000),
    );
    tar.file("d/e/b", "b");
    tar.file("d/e/c", "c");
    apply_layer(&dst, &tar.finish()[..], &overlay()).unwrap();
    let m = fs::metadata(dst.join("d")).unwrap();
    assert_eq!((m.mtime(), m.mode() & 0o7777), (1_100_000_000, 0o555));
    assert_eq!(
        fs::metadata(dst.join("d/e")).unwrap().mtime(),
        1_200_000_000
    );
    let r = fs::metadata(&dst).unwrap();
    assert_eq!((r.mtime(), r.mode() & 0o7777), (1_000_000_000, 0o755));
}

#[test]
fn layer_stack_through_carrel_writer_matches_a_plain_copy() {
    // Apply two layers naively, tar the result, apply that once more: same tree.
    let t = tmp();
    let a = t.path().join("a");
    let b = t.path().join("b");
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    make_tree(&a);
    let mut l1 = Vec::new();
    write_tree(&a, &mut l1, &WriteOptions::default()).unwrap();
    let upper = Tar::new()
        .file("d/.wh.file", "")
        .file("d/new", "n")
        .file("empty/.wh..wh..opq", "")
        .finish();
    let merged = t.path().join("merged");
    fs::create_dir(&merged).unwrap();
    apply_layer(&merged, &l1[..], &naive()).unwrap();
    apply_layer(&merged, &upper[..], &naive()).unwrap();
    let mut flat = Vec::new();
    write_tree(&merged, &mut flat, &WriteOptions::default()).unwrap();
    apply_layer(&b, &flat[..], &naive()).unwrap();
    assert_same_tree(&merged, &b);
    assert!(!b.join("d/file").exists());
    assert_eq!(fs::metadata(b.join("d/hard")).unwrap().nlink(), 1);
}

#[test]
fn overlay_whiteout_then_directory_becomes_opaque() {
    let t = tmp();
    let upper = t.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let tar = Tar::new()
        .file(".wh.x", "")
        .dir("x/", 0o755)
        .file("x/new", "n")
        .dir("plain/", 0o755)
        .finish();
    apply_layer(&upper, &tar[..], &overlay()).unwrap();
    assert!(fs::symlink_metadata(upper.join("x")).unwrap().is_dir());
    let x = common::xattrs_of(&upper.join("x"));
    assert_eq!(
        x.get(&b"trusted.overlay.opaque"[..]).map(|v| &v[..]),
        Some(&b"y"[..])
    );
    assert!(common::xattrs_of(&upper.join("plain")).is_empty());
}
