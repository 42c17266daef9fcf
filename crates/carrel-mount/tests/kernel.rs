//! Real mounts (run as root): overlay with 500 lowers, the classic fallback, binds, tmpfs.

use std::path::{Path, PathBuf};

use carrel_mount::{
    KernelMounter, Mount, MountError, Mounter, OverlayMount, ShortLowers, mountinfo,
};

/// Unmounts everything below its directory when dropped, also on panic.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let m = KernelMounter::new();
        for info in mountinfo::mounts_under(self.dir.path()).unwrap_or_default() {
            let _ = m.unmount(&info.mount_point, true);
        }
    }
}

fn layers(s: &Scratch, n: usize) -> Vec<PathBuf> {
    // Topmost first: layer n-1 .. 0; each has its own file and overwrites "top".
    let mut v = Vec::new();
    for i in 0..n {
        let d = s.mkdir(&format!("layers/{i:03}"));
        std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
        std::fs::write(d.join("top"), i.to_string()).unwrap();
        v.push(d);
    }
    v.reverse();
    v
}

#[test]
fn overlay_with_500_lowers_and_an_upper() {
    let s = Scratch::new();
    let lower = layers(&s, 500);
    let upper = s.mkdir("upper");
    let work = s.mkdir("work");
    let target = s.mkdir("merged");
    let m = KernelMounter::new();
    let t = std::time::Instant::now();
    m.mount(
        &Mount::Overlay(OverlayMount {
            volatile: false,
            lower,
            upper: Some(upper.clone()),
            work: Some(work),
            short: None,
        }),
        &target,
    )
    .unwrap();
    let took = t.elapsed();
    assert!(took.as_secs() < 5, "{took:?}");
    assert_eq!(std::fs::read_to_string(target.join("top")).unwrap(), "499");
    assert_eq!(std::fs::read_to_string(target.join("f0")).unwrap(), "0");
    std::fs::write(target.join("new"), "x").unwrap();
    assert!(upper.join("new").exists());
    let info = mountinfo::mounts_under(&target).unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].fs_type, "overlay");
    assert!(info[0].has_option("upperdir"));
    m.unmount(&target, false).unwrap();
    assert!(mountinfo::mounts_under(&target).unwrap().is_empty());
    // Unmounting what is not mounted is fine.
    m.unmount(&target, false).unwrap();
}

#[test]
fn read_only_overlay_and_too_many_lowers() {
    let s = Scratch::new();
    let lower = layers(&s, 501);
    let target = s.mkdir("merged");
    let m = KernelMounter::new();
    let err = m
        .mount(
            &Mount::Overlay(OverlayMount {
                volatile: false,
                lower: lower.clone(),
                upper: None,
                work: None,
                short: None,
            }),
            &target,
        )
        .unwrap_err();
    assert!(err.to_string().contains("501"), "{err}");
    m.mount(
        &Mount::Overlay(OverlayMount {
            volatile: false,
            lower: lower[..2].to_vec(),
            upper: None,
            work: None,
            short: None,
        }),
        &target,
    )
    .unwrap();
    assert_eq!(std::fs::read_to_string(target.join("top")).unwrap(), "500");
    let e = std::fs::write(target.join("x"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    m.unmount(&target, true).unwrap();
}

#[test]
fn classic_fallback_uses_short_paths_and_refuses_long_data() {
    let s = Scratch::new();
    let lower = layers(&s, 200);
    let target = s.mkdir("merged");
    let upper = s.mkdir("upper");
    let work = s.mkdir("work");
    let m = KernelMounter::classic_overlay();
    let o = OverlayMount {
        volatile: false,
        lower: lower.clone(),
        upper: Some(upper),
        work: Some(work),
        short: None,
    };
    // Long absolute paths do not fit in a page: a clear error, never a truncated lowerdir.
    let err = m.mount(&Mount::Overlay(o.clone()), &target).unwrap_err();
    assert!(
        matches!(err, MountError::DataTooLong { layers: 200, .. }),
        "{err}"
    );
    // Short relative paths do.
    let short = ShortLowers {
        dir: s.path().join("layers"),
        lower: lower
            .iter()
            .map(|p| PathBuf::from(p.file_name().unwrap()))
            .collect(),
    };
    let o = OverlayMount {
        volatile: false,
        short: Some(short),
        ..o
    };
    m.mount(&Mount::Overlay(o), &target).unwrap();
    assert_eq!(std::fs::read_to_string(target.join("top")).unwrap(), "199");
    assert_eq!(std::fs::read_to_string(target.join("f0")).unwrap(), "0");
    // The process's working directory is untouched.
    assert_ne!(std::env::current_dir().unwrap(), s.path().join("layers"));
    m.unmount(&target, false).unwrap();
}

#[test]
fn recursive_read_only_bind() {
    let s = Scratch::new();
    let src = s.mkdir("src");
    let sub = s.mkdir("src/sub");
    let target = s.mkdir("target");
    let m = KernelMounter::new();
    m.mount(
        &Mount::Tmpfs {
            options: vec!["size=1m".into(), "mode=0755".into()],
        },
        &sub,
    )
    .unwrap();
    std::fs::write(sub.join("inner"), "x").unwrap();
    m.mount(&Mount::rbind(&src, true), &target).unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("sub/inner")).unwrap(),
        "x"
    );
    for p in [target.join("new"), target.join("sub/new")] {
        let e = std::fs::write(&p, "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}", p.display());
    }
    // The source stays writable.
    std::fs::write(sub.join("still"), "x").unwrap();
    let under = mountinfo::mounts_under(&target).unwrap();
    assert_eq!(under.len(), 2);
    assert_eq!(under[0].mount_point, target.join("sub"));
    for info in under {
        m.unmount(&info.mount_point, false).unwrap();
    }
    m.unmount(&sub, false).unwrap();
}

#[test]
fn plain_bind_with_propagation_and_file_bind() {
    let s = Scratch::new();
    let src = s.mkdir("src");
    std::fs::write(src.join("f"), "hello").unwrap();
    let target = s.mkdir("target");
    let m = KernelMounter::new();
    m.mount(
        &Mount::Bind {
            source: src.clone(),
            readonly: false,
            recursive: false,
            propagation: Some(carrel_mount::Propagation::Private),
        },
        &target,
    )
    .unwrap();
    std::fs::write(target.join("g"), "w").unwrap();
    assert!(src.join("g").exists());
    let info = mountinfo::mounts_under(&target).unwrap();
    assert!(!info[0].optional.iter().any(|o| o.starts_with("shared:")));
    m.unmount(&target, false).unwrap();

    let file_target = s.path().join("file");
    std::fs::write(&file_target, "").unwrap();
    m.mount(&Mount::bind(src.join("f"), true), &file_target)
        .unwrap();
    assert_eq!(std::fs::read_to_string(&file_target).unwrap(), "hello");
    m.unmount(&file_target, false).unwrap();
}

#[test]
fn errors_name_the_target() {
    let s = Scratch::new();
    let target = s.mkdir("t");
    let m = KernelMounter::new();
    let e = m
        .mount(&Mount::bind(s.path().join("missing"), false), &target)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&target.display().to_string()) && msg.contains("open_tree"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert_eq!(
        carrel_core::HasKind::kind(&e),
        carrel_core::ErrorKind::NotFound
    );
    let e = m
        .mount(
            &Mount::Tmpfs {
                options: vec!["bogus=1".into()],
            },
            &target,
        )
        .unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn features_probe_this_host() {
    let s = Scratch::new();
    let f = carrel_mount::Features::probe(s.path());
    assert!(f.overlay);
    assert!(f.overlay_lowerdir_plus);
    assert!(f.recursive_readonly);
    assert_eq!(
        f.backing_filesystem,
        carrel_mount::features::backing_filesystem(s.path())
    );
}
