//! The conformance suite on the copy driver, with real mounts; copy-specific checks.

use std::path::Path;
use std::sync::Arc;

use carrel_meta::Meta;
use carrel_storage::Snapshotter;
use carrel_storage::conformance::Env;
use carrel_storage::copy::CopySnapshotter;

fn copy(root: &Path, meta: Arc<Meta>) -> Box<dyn Snapshotter> {
    Box::new(CopySnapshotter::new(meta, root).unwrap())
}

fn env() -> Env {
    Env::new(copy)
}

carrel_storage::snapshotter_conformance!(env());

mod copy_specific {
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use carrel_meta::Meta;
    use carrel_mount::{Mounter, mountinfo};
    use carrel_storage::Snapshotter;
    use carrel_storage::conformance::{self, Env};
    use carrel_storage::copy::{CopySnapshotter, copy_tree};

    fn set_times(p: &Path, secs: i64) {
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: 5,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: 123_456_789,
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

    fn mtime(p: &Path) -> (i64, i64) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    }

    #[test]
    fn copy_tree_keeps_times_holes_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::write(src.join("d/e/f"), "f").unwrap();
        std::os::unix::fs::symlink("/etc", src.join("d/etc-link")).unwrap();
        std::os::unix::fs::symlink("..", src.join("d/e/loop")).unwrap();
        let sparse = src.join("sparse");
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        set_times(&src.join("d/e/f"), 1_000_000_000);
        set_times(&src.join("d/etc-link"), 1_000_000_100);
        set_times(&src.join("d/e"), 1_000_000_200);
        set_times(&src.join("d"), 1_000_000_300);

        let dst = dir.path().join("dst");
        let stats = copy_tree(&src, &dst).unwrap();
        assert_eq!(stats.files, 2);
        for rel in ["d/e/f", "d/etc-link", "d/e", "d"] {
            assert_eq!(mtime(&dst.join(rel)), mtime(&src.join(rel)), "{rel}");
        }
        assert_eq!(
            std::fs::read_link(dst.join("d/etc-link")).unwrap(),
            Path::new("/etc")
        );
        assert_eq!(
            std::fs::read_link(dst.join("d/e/loop")).unwrap(),
            Path::new("..")
        );
        let m = std::fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!(m.len(), 64 << 20);
        assert!(
            m.blocks() * 512 < (1 << 20),
            "holes were filled: {} blocks",
            m.blocks()
        );
        let mut buf = [0u8; 4];
        let g = std::fs::File::open(dst.join("sparse")).unwrap();
        g.read_exact_at(&mut buf, (64 << 20) - 4).unwrap();
        assert_eq!(&buf, b"tail");
        // The destination must not exist yet (no merging into an existing tree).
        assert!(copy_tree(&src, &dst).is_err());
    }

    /// An XFS filesystem with reflinks on a loop device, mounted under a temp dir; unmounted and
    /// detached when dropped, also when the test fails.
    struct XfsImage {
        _dir: tempfile::TempDir,
        mnt: PathBuf,
        dev: Option<String>,
    }

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    impl XfsImage {
        fn new() -> XfsImage {
            let dir = tempfile::tempdir().unwrap();
            let img = dir.path().join("xfs.img");
            std::fs::File::create(&img)
                .unwrap()
                .set_len(1 << 30)
                .unwrap();
            run(Command::new("mkfs.xfs")
                .args(["-q", "-m", "reflink=1"])
                .arg(&img));
            let mnt = dir.path().join("mnt");
            std::fs::create_dir(&mnt).unwrap();
            let mut me = XfsImage {
                mnt,
                dev: None,
                _dir: dir,
            };
            me.dev = Some(run(Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&img)));
            run(Command::new("mount")
                .args(["-t", "xfs"])
                .arg(me.dev.as_ref().unwrap())
                .arg(&me.mnt));
            me
        }
    }

    impl Drop for XfsImage {
        fn drop(&mut self) {
            let m = carrel_mount::KernelMounter::new();
            for info in mountinfo::mounts_under(&self.mnt).unwrap_or_default() {
                let _ = m.unmount(&info.mount_point, true);
            }
            if let Some(dev) = &self.dev {
                let _ = Command::new("losetup").arg("-d").arg(dev).status();
            }
        }
    }

    fn copy(root: &Path, meta: Arc<Meta>) -> Box<dyn Snapshotter> {
        Box::new(CopySnapshotter::new(meta, root).unwrap())
    }

    #[test]
    fn reflinks_are_not_claimed_on_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(Meta::open(&dir.path().join("db")).unwrap());
        let sn = CopySnapshotter::new(meta, dir.path()).unwrap();
        let fs = carrel_mount::features::backing_filesystem(dir.path());
        if fs == "extfs" {
            assert!(!sn.reflinks());
        }
    }

    #[test]
    fn suite_on_reflink_xfs() {
        let xfs = XfsImage::new();
        let env = Env {
            base: Some(xfs.mnt.clone()),
            ..Env::new(copy)
        };
        conformance::run_all(&env);

        // Reflinks are used: shared extents after a copy, and a 64 MiB file copies instantly.
        let root = xfs.mnt.join("reflink-root");
        std::fs::create_dir(&root).unwrap();
        let meta = Arc::new(Meta::open(&root.join("carrel.db")).unwrap());
        let sn = CopySnapshotter::new(meta, &root).unwrap();
        assert!(sn.reflinks());
        sn.prepare("tmp", None, Default::default()).unwrap();
        let big = sn.apply_target("tmp").unwrap().dir.join("big");
        let data: Vec<u8> = (0..(64u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &data).unwrap();
        rustix::fs::sync();
        sn.commit("base", "tmp", Default::default()).unwrap();
        let t = Instant::now();
        sn.prepare("child", Some("base"), Default::default())
            .unwrap();
        let took = t.elapsed();
        let copied = sn.upper_dir("child").unwrap().join("big");
        let frag = run(Command::new("filefrag").arg("-v").arg(&copied));
        assert!(frag.contains("shared"), "no shared extents:\n{frag}");
        assert!(
            took < Duration::from_millis(500),
            "a reflinked copy took {took:?}"
        );
        assert_eq!(std::fs::read(&copied).unwrap(), data);
        drop(sn);
        assert!(carrel_mount::features::reflink_supported(&xfs.mnt));
    }
}
