//! `cp` into a live tree ([`apply_tar_at`]) and layer diffs from change lists
//! ([`write_changes`]), with the containment harness of ADVERSARIAL.md (ST-30, ST-31 at the
//! archive level, A-28): the destination path and every entry are resolved inside the root, so
//! symlinks to host directories (absolute, relative with `..`, swapped while copying) never let a
//! copy touch anything outside it.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, Instant};

use carrel_archive::{
    ApplyStats, ArchiveError, CopyOptions, DiffEntry, Ownership, WriteOptions, apply_tar_at,
    write_changes,
};
use carrel_core::fs::Root;
use common::{Fixture, H, Tar};

fn copy_into(
    fx: &Fixture,
    dest: &str,
    tar: &[u8],
    opts: &CopyOptions,
) -> Result<ApplyStats, ArchiveError> {
    let root = Root::open(&fx.root).unwrap();
    apply_tar_at(&root, Path::new(dest), tar, opts)
}

fn open_errno(r: Result<ApplyStats, ArchiveError>) -> i32 {
    match r {
        Err(ArchiveError::Open { source, .. }) => source.raw_os_error().unwrap_or(0),
        other => panic!("expected an error resolving the destination, got {other:?}"),
    }
}

/// The canary directory's absolute path, recreated inside the root (where a link to it
/// legitimately points, from the container's point of view).
fn canary_inside(fx: &Fixture) -> std::path::PathBuf {
    let inside = fx.root.join(fx.canary().strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    inside
}

#[test]
fn destination_symlinks_to_host_directories_resolve_inside() {
    let mut fx = Fixture::new();
    let canary = fx.canary().to_path_buf();
    let depth = canary.components().count() + 3;
    symlink(&canary, fx.root.join("abs")).unwrap();
    symlink(
        format!(
            "{}{}",
            "../".repeat(depth),
            canary.strip_prefix("/").unwrap().display()
        ),
        fx.root.join("rel"),
    )
    .unwrap();
    symlink(fx.t().join("outside-dir"), fx.root.join("out")).unwrap();
    fx.resnapshot();
    let tar = Tar::new().file("x", "payload").finish();
    // The link's target does not exist inside the root: nothing to copy into.
    assert_eq!(
        open_errno(copy_into(&fx, "/abs", &tar, &CopyOptions::default())),
        libc::ENOENT
    );
    assert_eq!(
        open_errno(copy_into(&fx, "/out/", &tar, &CopyOptions::default())),
        libc::ENOENT
    );
    let inside = canary_inside(&fx);
    fx.resnapshot();
    copy_into(&fx, "/abs", &tar, &CopyOptions::default()).unwrap();
    assert_eq!(fs::read(inside.join("x")).unwrap(), b"payload");
    let tar2 = Tar::new().dir("d/", 0o755).file("d/y", "more").finish();
    copy_into(&fx, "rel/", &tar2, &CopyOptions::default()).unwrap();
    assert_eq!(fs::read(inside.join("d/y")).unwrap(), b"more");
    fx.assert_unchanged();
}

#[test]
fn hostile_entries_stay_inside_the_root() {
    let mut fx = Fixture::new();
    fs::create_dir_all(fx.root.join("dst")).unwrap();
    fs::create_dir_all(fx.root.join("etc")).unwrap();
    fx.resnapshot();
    let opts = CopyOptions::default();
    // ST-01: climbing names are refused.
    let e = copy_into(
        &fx,
        "/dst",
        &Tar::new().file("../../victim/hello", "x").finish(),
        &opts,
    )
    .unwrap_err();
    assert!(e.is_breakout(), "{e}");
    // ST-02: absolute names land under the destination.
    copy_into(&fx, "/dst", &Tar::new().file("/abs", "a").finish(), &opts).unwrap();
    assert_eq!(fs::read(fx.root.join("dst/abs")).unwrap(), b"a");
    // ST-03: a symlink to `/` then a file through it: the root's `/`, never the host's.
    let tar = Tar::new()
        .symlink("l", "/")
        .file("l/etc/passwd", "root-of-container")
        .symlink("h", fx.t().to_str().unwrap())
        .file("h/victim/hello", "pwned")
        .finish();
    let _ = copy_into(&fx, "/dst", &tar, &opts);
    assert_eq!(
        fs::read(fx.root.join("etc/passwd")).unwrap(),
        b"root-of-container"
    );
    // ST-09: hardlinks that climb out are refused; absolute ones are relative to the
    // destination.
    let e = copy_into(
        &fx,
        "/dst",
        &Tar::new().hardlink("hl", "../../victim/hello").finish(),
        &opts,
    )
    .unwrap_err();
    assert!(e.is_breakout(), "{e}");
    let e = copy_into(
        &fx,
        "/dst",
        &Tar::new().hardlink("hl", "/etc/passwd").finish(),
        &opts,
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    copy_into(
        &fx,
        "/dst",
        &Tar::new()
            .dir("sub/", 0o755)
            .file("sub/a", "A")
            .hardlink("sub/b", "sub/a")
            .finish(),
        &opts,
    )
    .unwrap();
    let (a, b) = (
        fs::metadata(fx.root.join("dst/sub/a")).unwrap(),
        fs::metadata(fx.root.join("dst/sub/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    fx.assert_unchanged();
}

#[test]
fn cp_archives_have_no_whiteouts_and_keep_the_destination_itself() {
    let fx = Fixture::new();
    let dst = fx.root.join("dst");
    fs::create_dir(&dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(dst.join("keep"), b"k").unwrap();
    let tar = Tar::new()
        .entry(H::new("./", b'5').mode(0o777).owner(1234, 1234))
        .file(".wh.keep", "")
        .file("sub/.wh..wh..opq", "")
        .finish();
    copy_into(&fx, "/dst", &tar, &CopyOptions::default()).unwrap();
    assert_eq!(fs::read(dst.join("keep")).unwrap(), b"k");
    assert!(dst.join(".wh.keep").is_file());
    assert!(dst.join("sub/.wh..wh..opq").is_file());
    let m = fs::metadata(&dst).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o700, 0));
    fx.assert_unchanged();
}

#[test]
fn no_overwrite_dir_non_dir_and_ownership() {
    let fx = Fixture::new();
    let dst = fx.root.join("dst");
    fs::create_dir_all(dst.join("d")).unwrap();
    fs::write(dst.join("f"), b"f").unwrap();
    let strict = CopyOptions {
        no_overwrite_dir_non_dir: true,
        ..CopyOptions::default()
    };
    let e = copy_into(&fx, "dst", &Tar::new().file("d", "x").finish(), &strict).unwrap_err();
    assert!(
        e.to_string().contains("cannot overwrite a directory"),
        "{e}"
    );
    let e = copy_into(&fx, "dst", &Tar::new().dir("f/", 0o755).finish(), &strict).unwrap_err();
    assert!(
        e.to_string().contains("cannot overwrite a non-directory"),
        "{e}"
    );
    assert!(dst.join("d").is_dir() && dst.join("f").is_file());
    // Without the option, entries replace what is there (as layers do).
    copy_into(
        &fx,
        "dst",
        &Tar::new().file("d", "x").finish(),
        &CopyOptions::default(),
    )
    .unwrap();
    assert!(dst.join("d").is_file());
    // Ownership: the archive's, the caller's, or a fixed one.
    let owned = Tar::new()
        .entry(H::new("o", b'0').owner(1234, 4321).data("o"))
        .finish();
    for (ownership, want) in [
        (Ownership::Archive, (1234, 4321)),
        (Ownership::Caller, (0, 0)),
        (Ownership::Fixed { uid: 55, gid: 66 }, (55, 66)),
    ] {
        let opts = CopyOptions {
            ownership,
            ..CopyOptions::default()
        };
        copy_into(&fx, "dst", &owned, &opts).unwrap();
        let m = fs::symlink_metadata(dst.join("o")).unwrap();
        assert_eq!((m.uid(), m.gid()), want, "{ownership:?}");
    }
    // Devices are skipped when asked (copies out to the host).
    let dev = Tar::new()
        .entry(H::new("null", b'3').dev(common::Num::Val(1), common::Num::Val(3)))
        .finish();
    let opts = CopyOptions {
        create_devices: false,
        ..CopyOptions::default()
    };
    copy_into(&fx, "dst", &dev, &opts).unwrap();
    assert!(!dst.join("null").exists());
    fx.assert_unchanged();
}

#[test]
fn destination_errors() {
    let fx = Fixture::new();
    fs::write(fx.root.join("file"), b"x").unwrap();
    let tar = Tar::new().file("x", "x").finish();
    let o = CopyOptions::default();
    assert_eq!(open_errno(copy_into(&fx, "/nope", &tar, &o)), libc::ENOENT);
    assert_eq!(
        open_errno(copy_into(&fx, "/nope/sub", &tar, &o)),
        libc::ENOENT
    );
    assert_eq!(open_errno(copy_into(&fx, "/file", &tar, &o)), libc::ENOTDIR);
    assert_eq!(
        open_errno(copy_into(&fx, "/file/", &tar, &o)),
        libc::ENOTDIR
    );
    symlink("loop", fx.root.join("loop")).unwrap();
    assert_eq!(open_errno(copy_into(&fx, "/loop", &tar, &o)), libc::ELOOP);
    fx.assert_unchanged();
}

/// ST-31 at the archive level: the destination's parent is swapped (renameat2 EXCHANGE) with
/// symlinks to a host directory and to the canary directory while copies run.
#[test]
fn st31_copy_racing_a_destination_swap_stays_inside() {
    let mut fx = Fixture::new();
    let outside = fx.t().join("outside-dir");
    let canary = fx.canary().to_path_buf();
    fs::create_dir_all(fx.root.join("srv/dir/sub")).unwrap();
    symlink(&outside, fx.root.join("srv/alt")).unwrap();
    symlink(&canary, fx.root.join("srv/alt2")).unwrap();
    symlink("/", fx.root.join("srv/alt3")).unwrap();
    fx.resnapshot();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let srv = fx.root.join("srv");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let dir = rustix::fs::open(&srv, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())
                .unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let other = ["alt", "alt2", "alt3"][(n % 3) as usize];
                let _ = rustix::fs::renameat_with(
                    &dir,
                    "dir",
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
        .file("f", "x")
        .dir("d/", 0o777)
        .file("d/g", "y")
        .symlink("link", "/")
        .hardlink("hl", "f")
        .finish();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut runs, mut ok) = (0, 0);
    while Instant::now() < deadline && runs < 2000 {
        for dest in ["/srv/dir/sub", "/srv/dir"] {
            if copy_into(&fx, dest, &tar, &CopyOptions::default()).is_ok() {
                ok += 1;
            }
        }
        runs += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        swaps > 0 && runs > 0 && ok > 0,
        "swaps {swaps}, runs {runs}, ok {ok}"
    );
    fx.assert_unchanged();
}

#[test]
fn write_changes_makes_a_layer_diff() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(r.join("etc/sub")).unwrap();
    fs::write(r.join("etc/passwd"), b"me").unwrap();
    fs::write(r.join("etc/sub/unchanged"), b"u").unwrap();
    fs::write(r.join("new"), b"n").unwrap();
    let changes = vec![
        DiffEntry {
            path: "/etc".into(),
            deleted: false,
        },
        DiffEntry {
            path: "/etc/group".into(),
            deleted: true,
        },
        DiffEntry {
            path: "/etc/passwd".into(),
            deleted: false,
        },
        DiffEntry {
            path: "/gone-meanwhile".into(),
            deleted: false,
        },
        DiffEntry {
            path: "/new".into(),
            deleted: false,
        },
    ];
    let mut out = Vec::new();
    let stats = write_changes(r, &changes, &mut out, &WriteOptions::default()).unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&out[..]).entries().unwrap() {
        let e = e.unwrap();
        names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
    }
    // A directory is one entry (its unchanged children are not in the diff).
    assert_eq!(names, ["etc/", "etc/.wh.group", "etc/passwd", "new"]);
    assert_eq!(stats.entries, 4);
}
