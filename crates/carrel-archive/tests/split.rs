//! Tar-split: a layer extracted with `apply_layer_split` gives back its exact tar from the
//! directory and the recorded split; layers that cannot (a file written twice, removed or
//! replaced later in the same layer) say why; a split never reads outside its directory.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use carrel_archive::{ApplyOptions, TarSplit, WhiteoutFormat, apply_layer_split};
use carrel_core::fs::Root;
use common::{H, Tar, run};

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("carrel-archive-split")
        .tempdir()
        .unwrap()
}

/// Extract `tar` into a fresh directory with the split recorded; the split must be usable.
fn split_of(dir: &Path, tar: &[u8], fmt: WhiteoutFormat) -> TarSplit {
    let (stats, split) = apply_layer_split(dir, tar, &ApplyOptions::new(fmt)).unwrap();
    assert_eq!(stats.tar_size, tar.len() as u64);
    let split = split.unwrap_or_else(|why| panic!("no split: {why}"));
    assert_eq!(split.tar_size(), tar.len() as u64);
    split
}

fn reassemble(split: TarSplit, dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    split
        .reassemble(Root::open(dir).unwrap())
        .read_to_end(&mut out)?;
    Ok(out)
}

/// Every kind of entry, long names (PAX and GNU), xattrs, whiteouts, an opaque directory, empty
/// and block-sized files, and bytes after the end-of-archive marker.
fn rich_tar() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("etc/", 0o755)
        .file("etc/hostname", b"carrel\n")
        .file("etc/empty", b"")
        .file("etc/block", vec![7u8; 512])
        .file(
            "etc/bigger",
            (0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
        )
        .symlink("etc/link", "/etc/hostname")
        .hardlink("etc/hard", "etc/hostname")
        .file_xattrs("etc/caps", b"x", &[("user.note", b"hello")])
        .dir("deep/", 0o700)
        .file(format!("deep/{}", "n".repeat(150)), b"long name by PAX")
        .file(".wh.gone", b"")
        .dir("opaque/", 0o755)
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/kept", b"kept");
    // A GNU long name (typeflag L) for one more file.
    let long = format!("deep/{}", "g".repeat(120));
    let mut name = long.clone().into_bytes();
    name.push(0);
    t.raw(H::new("././@LongLink", b'L').data(&name));
    t.raw(H::new(&long.as_bytes()[..100], b'0').data(b"long name by GNU"));
    let mut tar = t.finish();
    tar.extend_from_slice(&[0u8; 2048]);
    tar
}

#[test]
fn reassembles_the_exact_tar_for_both_whiteout_formats() {
    let tar = rich_tar();
    for fmt in [WhiteoutFormat::Overlay, WhiteoutFormat::Naive] {
        let t = tmp();
        let split = split_of(t.path(), &tar, fmt);
        assert!(
            split.raw_size() < tar.len() as u64 - 100_000,
            "file content is referenced, not copied: {} raw bytes of {}",
            split.raw_size(),
            tar.len()
        );
        let stored = split.to_bytes().unwrap();
        let back = TarSplit::from_bytes(&stored).unwrap();
        assert_eq!(back, split, "serialization round trip");
        assert_eq!(
            reassemble(back, t.path()).unwrap(),
            tar,
            "{fmt:?}: same bytes"
        );
    }
}

#[test]
fn gnu_tar_archives_reassemble_exactly() {
    let src = tmp();
    fs::create_dir_all(src.path().join("a/b")).unwrap();
    fs::write(src.path().join("a/b/file"), vec![1u8; 70_000]).unwrap();
    fs::write(src.path().join("a/small"), b"s").unwrap();
    fs::hard_link(src.path().join("a/small"), src.path().join("a/small2")).unwrap();
    symlink("b/file", src.path().join("a/rel")).unwrap();
    let out = tmp();
    let archive = out.path().join("layer.tar");
    for format in ["gnu", "posix"] {
        run(Command::new("tar")
            .arg("--format")
            .arg(format)
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(src.path())
            .arg("."));
        let tar = fs::read(&archive).unwrap();
        let t = tmp();
        let split = split_of(t.path(), &tar, WhiteoutFormat::Overlay);
        assert_eq!(
            reassemble(split, t.path()).unwrap(),
            tar,
            "GNU tar --format {format}"
        );
    }
}

#[test]
fn layers_that_cannot_be_reassembled_say_why_and_still_extract() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "same path twice",
            Tar::new().file("f", b"one").file("f", b"two").finish(),
            "written twice",
        ),
        (
            "whiteout of a file of the same layer",
            Tar::new().file("f", b"one").file(".wh.f", b"").finish(),
            "written twice",
        ),
        (
            "a directory replaced by a file",
            Tar::new()
                .dir("d/", 0o755)
                .file("d/f", b"one")
                .file("d", b"now a file")
                .finish(),
            "replaces a directory",
        ),
        (
            "a file replaced by a directory",
            Tar::new().file("x", b"one").dir("x/", 0o755).finish(),
            "written twice",
        ),
    ];
    for (what, tar, why) in cases {
        let t = tmp();
        let (stats, split) = apply_layer_split(
            t.path(),
            &tar[..],
            &ApplyOptions::new(WhiteoutFormat::Naive),
        )
        .unwrap_or_else(|e| panic!("{what}: extraction failed: {e}"));
        assert_eq!(stats.tar_size, tar.len() as u64, "{what}");
        let err = split.expect_err(what);
        assert!(err.contains(why), "{what}: {err}");
    }
}

#[test]
fn a_changed_layer_file_is_an_error_not_wrong_bytes() {
    let tar = Tar::new()
        .file("f", vec![3u8; 4096])
        .file("g", b"g")
        .finish();
    let t = tmp();
    let split = split_of(t.path(), &tar, WhiteoutFormat::Overlay);
    fs::write(t.path().join("f"), b"short").unwrap();
    let root = Root::open(t.path()).unwrap();
    let err = split.verify(&root).unwrap_err();
    assert!(err.to_string().contains("4096 bytes"), "{err}");
    let err = reassemble(split.clone(), t.path()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    fs::remove_file(t.path().join("f")).unwrap();
    assert!(
        reassemble(split, t.path()).is_err(),
        "a missing file is an error"
    );
}

#[test]
fn a_split_never_reads_outside_its_directory() {
    // A split whose layer directory later holds symlinks to the host (or whose stored bytes
    // were forged to name `..` paths) still reads inside the directory only.
    let tar = Tar::new()
        .dir("etc/", 0o755)
        .file("etc/passwd", b"inside\n")
        .finish();
    let t = tmp();
    let split = split_of(t.path(), &tar, WhiteoutFormat::Overlay);
    fs::remove_dir_all(t.path().join("etc")).unwrap();
    symlink("/etc", t.path().join("etc")).unwrap();
    // "/etc" is resolved inside the directory: the link itself, a loop, never the host's.
    let err = reassemble(split.clone(), t.path()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    // An absolute link to a directory that is inside reads what is inside.
    fs::remove_file(t.path().join("etc")).unwrap();
    fs::create_dir(t.path().join("other")).unwrap();
    fs::write(t.path().join("other/passwd"), b"inside\n").unwrap();
    symlink("/other", t.path().join("etc")).unwrap();
    assert_eq!(reassemble(split.clone(), t.path()).unwrap(), tar);
    // The last component is never followed either.
    fs::remove_file(t.path().join("etc")).unwrap();
    fs::create_dir(t.path().join("etc")).unwrap();
    symlink("/etc/passwd", t.path().join("etc/passwd")).unwrap();
    let err = reassemble(split, t.path()).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ELOOP),
        "a symlinked file is not read: {err}"
    );
    fs::remove_file(t.path().join("etc/passwd")).unwrap();

    // Forged stored bytes are refused or stay inside.
    assert!(TarSplit::from_bytes(b"not zstd at all").is_err());
    let forged = forge(&[(b"../../../../etc/passwd", 7)]);
    let split = TarSplit::from_bytes(&forged).unwrap();
    let err = reassemble(split, t.path()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

/// A stored split naming `files` (path, length), written by hand.
fn forge(files: &[(&[u8], u64)]) -> Vec<u8> {
    let mut raw = b"carrel-tar-split/1\n".to_vec();
    for (path, len) in files {
        raw.push(2);
        raw.extend_from_slice(&(path.len() as u32).to_le_bytes());
        raw.extend_from_slice(path);
        raw.extend_from_slice(&len.to_le_bytes());
    }
    raw.push(0);
    zstd::encode_all(&raw[..], 3).unwrap()
}
