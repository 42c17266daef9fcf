//! The volume service through the engine: records and directories (modes, crash-safe order),
//! names (ST-36), reserved labels (ST-53), concurrent creates (ST-59), references and leases
//! (in use, prune never taking a leased volume: C-06), driver-backed volumes mounted on first
//! use and unmounted by the last user (tmpfs, bind, an ext4 image on a loop device), stale
//! mounts released by recovery, XFS project quotas (`size`), export/import round trips (owners,
//! modes, xattrs, hardlinks, a sparse 1 GiB file, symlinks) and export while the volume's files
//! are swapped for symlinks to a host canary (ST-35).
//!
//! Needs root. Mounts, loop devices and temporary directories are cleaned up by drop guards.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use carrel_engine::volumes::{
    ExportOptions, ImportOptions, PruneFilter, VolumeCreate, VolumeFilter,
};
use carrel_engine::{Engine, EngineError, EngineOptions};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

struct Env {
    dir: tempfile::TempDir,
    engine: Engine,
}

impl Env {
    fn new() -> Option<Env> {
        if !is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("carrel-vol-test")
            .tempdir()
            .unwrap();
        let engine = open(&dir.path().join("root"));
        Some(Env { dir, engine })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}

fn open(root: &Path) -> Engine {
    Engine::open(&EngineOptions {
        root: root.to_path_buf(),
        storage_driver: Some("copy".into()),
    })
    .unwrap()
}

/// Unmount everything below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    for _ in 0..4 {
        let Ok(mounts) = carrel_mount::mountinfo::mounts_under(dir) else {
            return;
        };
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let _ = rustix::mount::unmount(&m.mount_point, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn req(name: Option<&str>, opts: &[(&str, &str)]) -> VolumeCreate {
    VolumeCreate {
        name: name.map(str::to_string),
        driver: None,
        labels: BTreeMap::new(),
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_mounted(p: &Path) -> bool {
    carrel_mount::mountinfo::is_mount_point(p).unwrap()
}

/// A fake container row (volume references need one).
fn add_container(engine: &Engine, vol: &str) -> String {
    let id = carrel_core::id::random_id();
    engine
        .meta()
        .write(|tx| {
            carrel_meta::containers::insert(
                tx,
                &carrel_meta::containers::ContainerRow {
                    id: id.clone(),
                    name: format!("c{}", &id[..8]),
                    image_id: carrel_core::Digest::of_bytes(b"i"),
                    snapshot: id.clone(),
                    spec: "{}".into(),
                    state: "{}".into(),
                    created: 1,
                },
            )?;
            carrel_meta::volumes::add_ref(tx, vol, &id)
        })
        .unwrap();
    id
}

fn drop_container(engine: &Engine, id: &str) {
    engine
        .meta()
        .write(|tx| carrel_meta::containers::delete(tx, id).map(drop))
        .unwrap();
}

#[test]
fn create_get_remove_with_docker_modes_and_texts() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    let v = e.volume_create(&req(Some("data"), &[])).unwrap();
    assert_eq!(v.mountpoint, env.root().join("volumes/data/_data"));
    assert_eq!(v.driver, "local");
    assert_eq!(v.scope, "local");
    assert!(v.labels.is_empty());
    assert_eq!(mode(&env.root().join("volumes")), 0o701);
    assert_eq!(mode(&env.root().join("volumes/data")), 0o701);
    assert_eq!(mode(&v.mountpoint), 0o755);
    assert_eq!(e.volume_path("data"), v.mountpoint);
    assert_eq!(e.volume_get("data").unwrap(), v);
    let ins = v.inspect();
    assert!(!ins.created_at.contains('.'), "{}", ins.created_at);

    // Same name, same driver: the existing volume, unchanged (labels and options ignored).
    let mut again = req(Some("data"), &[("type", "tmpfs"), ("device", "tmpfs")]);
    again.labels.insert("x".into(), "1".into());
    assert_eq!(e.volume_create(&again).unwrap(), v);
    // Another driver: Docker's conflict.
    let mut other = req(Some("data"), &[]);
    other.driver = Some("flocker".into());
    let err = e.volume_create(&other).unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)));
    assert_eq!(
        err.to_string(),
        "create data: driver 'local' already has volume 'data': volume name must be unique"
    );
    other.name = Some("fresh".into());
    assert_eq!(
        e.volume_create(&other).unwrap_err().to_string(),
        "create fresh: error looking up volume plugin flocker: plugin \"flocker\" not found"
    );

    // Anonymous: 64 hex and the label.
    let a = e.volume_create(&req(None, &[])).unwrap();
    assert!(carrel_core::digest::is_hex64(&a.name));
    assert_eq!(a.labels.get("com.docker.volume.anonymous").unwrap(), "");
    // A named create of an anonymous volume's name is refused from the CLI path (ST-36)...
    let err = e.volume_create_named(&req(Some(&a.name), &[])).unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
    // ...while containers reuse it by name as Docker does.
    assert_eq!(e.volume_create(&req(Some(&a.name), &[])).unwrap(), a);

    e.volume_remove("data", false).unwrap();
    assert!(!env.root().join("volumes/data").exists());
    assert_eq!(
        e.volume_get("data").unwrap_err().to_string(),
        "get data: no such volume"
    );
    assert_eq!(
        e.volume_remove("data", false).unwrap_err().to_string(),
        "get data: no such volume"
    );
    e.volume_remove("data", true).unwrap();
    // No lock file or directory is left of removed volumes.
    assert!(!env.root().join("locks/volumes/data").exists());
    let report = e.system_check(false).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn names_are_validated_and_never_touch_the_disk() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    let long = "a".repeat(256);
    for bad in [
        "x",
        "..",
        ".",
        "/testvol",
        "./hello",
        ".hello",
        "a/b",
        "a\\b",
        "a b",
        "a:b",
        "a\0b",
        "-a",
        "../../etc",
    ] {
        let err = e.volume_create(&req(Some(bad), &[])).unwrap_err();
        assert!(
            matches!(err, EngineError::InvalidArgument(_)),
            "{bad:?}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("create {bad}: ")), "{msg}");
        if bad.len() == 1 {
            assert_eq!(
                msg,
                format!(
                    "create {bad}: volume name is too short, names should be at least two alphanumeric characters"
                )
            );
        } else {
            assert!(
                msg.ends_with("includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"),
                "{msg}"
            );
        }
    }
    // Longer than a file name may be: refused by the filesystem, and nothing is left.
    assert!(e.volume_create(&req(Some(&long), &[])).is_err());
    for ok in ["thing.d", "hello-world", "a_b", "A1"] {
        e.volume_create(&req(Some(ok), &[])).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(env.root().join("volumes"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["A1", "a_b", "hello-world", "thing.d"]);
    assert!(!env.dir.path().join("testvol").exists());
    assert_eq!(e.volume_list(&VolumeFilter::default()).unwrap().len(), 4);
}

#[test]
fn reserved_label_and_options_are_checked_before_anything_is_made() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    let mut r = req(Some("named"), &[]);
    r.labels
        .insert("com.docker.volume.anonymous".into(), String::new());
    let err = e.volume_create(&r).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("create named: label com.docker.volume.anonymous is reserved")
    );
    // Without a name the label is set by carrel, whatever the user gave.
    r.name = None;
    r.labels
        .insert("com.docker.volume.anonymous".into(), "x".into());
    let a = e.volume_create(&r).unwrap();
    assert_eq!(a.labels["com.docker.volume.anonymous"], "");
    for (opts, msg) in [
        (&[("foo", "bar")][..], "create v1: invalid option: \"foo\""),
        (
            &[("device", "/dev/x")][..],
            "create v1: missing required option: \"type\"",
        ),
        (
            &[("type", "tmpfs")][..],
            "create v1: missing required option: \"device\"",
        ),
        (&[("size", "abc")][..], "create v1: invalid size: 'abc'"),
        (
            &[("size", "10m")][..],
            "create v1: quota size requested but no quota support",
        ),
    ] {
        let err = e.volume_create(&req(Some("v1"), opts)).unwrap_err();
        assert_eq!(err.to_string(), msg);
        assert!(!env.root().join("volumes/v1").exists());
        assert!(e.volume_get("v1").is_err());
    }
}

#[test]
fn in_use_volumes_stay_and_name_their_users() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    e.volume_create(&req(Some("busy"), &[])).unwrap();
    let c1 = add_container(e, "busy");
    let c2 = add_container(e, "busy");
    let mut ids = [c1.clone(), c2.clone()];
    ids.sort();
    for force in [false, true] {
        let err = e.volume_remove("busy", force).unwrap_err();
        assert!(matches!(err, EngineError::Conflict(_)));
        assert_eq!(
            err.to_string(),
            format!("remove busy: volume is in use - [{}, {}]", ids[0], ids[1])
        );
    }
    let dangling = VolumeFilter::parse(&["dangling=true".into()]).unwrap();
    assert!(e.volume_list(&dangling).unwrap().is_empty());
    let report = e
        .volume_prune(&PruneFilter {
            all: true,
            ..Default::default()
        })
        .unwrap();
    assert!(report.deleted.is_empty());
    drop_container(e, &c1);
    drop_container(e, &c2);
    assert_eq!(e.volume_list(&dangling).unwrap().len(), 1);
    e.volume_remove("busy", false).unwrap();
}

#[test]
fn leased_volumes_survive_prune_and_remove() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    // A container being created lists its (new, anonymous) volume under its lease.
    let lease = e.lease("container create").unwrap();
    let cid = carrel_core::id::random_id();
    e.meta()
        .write(|tx| lease.add(tx, "container", &cid))
        .unwrap();
    let v = e.volume_create_under(&req(None, &[]), &lease).unwrap();
    let other = e.volume_create(&req(None, &[])).unwrap();
    // A second process holding nothing prunes: the leased volume stays.
    let second = open(&env.root());
    let report = second.volume_prune(&PruneFilter::default()).unwrap();
    assert_eq!(report.deleted, vec![other.name.clone()]);
    assert!(e.volume_get(&v.name).is_ok());
    let err = second.volume_remove(&v.name, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("remove {}: volume is in use - [{cid}]", v.name)
    );
    lease.release(e.meta()).unwrap();
    let report = second.volume_prune(&PruneFilter::default()).unwrap();
    assert_eq!(report.deleted, vec![v.name.clone()]);
}

#[test]
fn concurrent_creates_make_one_volume() {
    let Some(env) = Env::new() else { return };
    let root = env.root();
    for round in 0..20 {
        let name = format!("data{round}");
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let root = root.clone();
                let name = name.clone();
                std::thread::spawn(move || {
                    let e = open(&root);
                    let mut r = req(Some(&name), &[]);
                    r.labels.insert("creator".into(), i.to_string());
                    if i == 7 {
                        r.driver = Some("other".into());
                    }
                    e.volume_create(&r)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert!(ok.len() >= 7);
        // Every creator got the same volume, with the first creator's labels.
        assert!(
            ok.iter()
                .all(|v| v.labels == ok[0].labels && v.created == ok[0].created)
        );
        let err = results[7].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("already has volume") || err.contains("plugin \"other\" not found"),
            "{err}"
        );
    }
    let e = &env.engine;
    assert_eq!(e.volume_list(&VolumeFilter::default()).unwrap().len(), 20);
    assert_eq!(std::fs::read_dir(root.join("volumes")).unwrap().count(), 20);
    // Creates interleaved with removes leave no orphan.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let e = open(&root);
                for _ in 0..30 {
                    if i % 2 == 0 {
                        let _ = e.volume_create(&req(Some("flip"), &[]));
                    } else {
                        let _ = e.volume_remove("flip", true);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let exists = e.volume_get("flip").is_ok();
    assert_eq!(root.join("volumes/flip/_data").is_dir(), exists);
    let names: Vec<_> = std::fs::read_dir(root.join("volumes"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert!(e.system_check(false).unwrap().is_clean());
}

#[test]
fn tmpfs_and_bind_volumes_mount_on_first_use() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    let v = e
        .volume_create(&req(
            Some("tmp"),
            &[
                ("type", "tmpfs"),
                ("device", "tmpfs"),
                ("o", "size=2m,uid=1000"),
                ("size", "9m"),
            ],
        ))
        .unwrap();
    assert!(!is_mounted(&v.mountpoint));
    let p = e.volume_mount("tmp", "user-a").unwrap();
    assert_eq!(p, v.mountpoint);
    assert!(is_mounted(&p));
    let st = rustix::fs::statfs(&p).unwrap();
    assert_eq!(
        st.f_blocks as u64 * st.f_bsize as u64,
        2 << 20,
        "o=size wins over size"
    );
    assert_eq!(std::fs::metadata(&p).unwrap().uid(), 1000);
    std::fs::write(p.join("f"), b"x").unwrap();
    e.volume_mount("tmp", "user-b").unwrap();
    e.volume_mount("tmp", "user-b").unwrap();
    e.volume_unmount("tmp", "user-a").unwrap();
    assert!(is_mounted(&p), "user-b still uses it");
    e.volume_unmount("tmp", "user-b").unwrap();
    assert!(!is_mounted(&p));
    assert!(!p.join("f").exists());
    e.volume_unmount("tmp", "user-b").unwrap();

    // tmpfs `size` option alone sizes the tmpfs.
    e.volume_create(&req(
        Some("tmp2"),
        &[("type", "tmpfs"), ("device", "tmpfs"), ("size", "3m")],
    ))
    .unwrap();
    let p2 = e.volume_mount("tmp2", "u").unwrap();
    let st = rustix::fs::statfs(&p2).unwrap();
    assert_eq!(st.f_blocks as u64 * st.f_bsize as u64, 3 << 20);

    // A bind of a host directory; the device must exist.
    let src = env.dir.path().join("srv");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello"), b"hi").unwrap();
    e.volume_create(&req(
        Some("bound"),
        &[
            ("type", "none"),
            ("device", src.to_str().unwrap()),
            ("o", "bind,ro"),
        ],
    ))
    .unwrap();
    let b = e.volume_mount("bound", "u").unwrap();
    assert_eq!(std::fs::read(b.join("hello")).unwrap(), b"hi");
    assert!(
        std::fs::write(b.join("new"), b"x").is_err(),
        "read-only bind"
    );
    // Removing it never deletes through the mount, and a stale mount does not block it.
    e.volume_remove("bound", false).unwrap();
    assert!(src.join("hello").exists());
    assert!(!is_mounted(&b));

    e.volume_create(&req(
        Some("missing"),
        &[
            ("type", "none"),
            ("device", "/nonexistent/dir"),
            ("o", "bind"),
        ],
    ))
    .unwrap();
    let err = e.volume_mount("missing", "u").unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "failed to mount local volume: mount /nonexistent/dir:{}, flags: 0x1000: no such file or directory",
            e.volume_path("missing").display()
        )
    );
    // The failed user is not recorded.
    assert_eq!(
        e.meta()
            .read(carrel_meta::volumes::mounts)
            .unwrap()
            .iter()
            .filter(|(v, _)| v == "missing")
            .count(),
        0
    );

    // Passwords never show in mount errors.
    e.volume_create(&req(
        Some("smb"),
        &[
            ("type", "cifs"),
            ("device", "//127.0.0.1/share"),
            ("o", "username=u,password=hunter2"),
        ],
    ))
    .unwrap();
    let err = e.volume_mount("smb", "u").unwrap_err().to_string();
    assert!(err.starts_with("failed to mount local volume: "), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn recovery_releases_dead_users_and_stale_mounts() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    e.volume_create(&req(Some("tv"), &[("type", "tmpfs"), ("device", "tmpfs")]))
        .unwrap();
    // A container that is gone, and a lease that died.
    let gone = carrel_core::id::random_id();
    let p = e.volume_mount("tv", &gone).unwrap();
    e.volume_mount("tv", "lease:0123456789abcdef0123456789abcdef")
        .unwrap();
    assert!(is_mounted(&p));
    let report = e.system_check(false).unwrap();
    assert_eq!(report.stale_volume_mounts.len(), 2, "{report:?}");
    // The next open releases them and unmounts.
    drop(open(&env.root()));
    assert!(!is_mounted(&p));
    assert!(
        e.meta()
            .read(carrel_meta::volumes::mounts)
            .unwrap()
            .is_empty()
    );
    // A mount nobody recorded (a crash inside an unmount) is found by system check.
    let p = e.volume_mount("tv", "x-user").unwrap();
    e.meta()
        .write(|tx| carrel_meta::volumes::remove_mount(tx, "tv", "x-user").map(drop))
        .unwrap();
    let report = e.system_check(true).unwrap();
    assert!(
        report
            .repaired
            .iter()
            .any(|r| r.contains("unmounted unused volume tv")),
        "{report:?}"
    );
    assert!(!is_mounted(&p));
}

#[test]
fn orphan_directories_are_swept_after_a_crash() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    // A crash after the row of a removal went: the directory stays, with a mount in it.
    let v = e.volume_create(&req(Some("half"), &[])).unwrap();
    std::fs::write(v.mountpoint.join("f"), b"x").unwrap();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"keep").unwrap();
    std::fs::create_dir(v.mountpoint.join("m")).unwrap();
    carrel_mount::Mounter::mount(
        &carrel_mount::KernelMounter::new(),
        &carrel_mount::Mount::bind(&outside, false),
        &v.mountpoint.join("m"),
    )
    .unwrap();
    e.meta()
        .write(|tx| carrel_meta::volumes::delete(tx, "half").map(drop))
        .unwrap();
    // A crash between a create's row and its directory.
    let row = carrel_meta::volumes::VolumeRow {
        name: "rowonly".into(),
        driver: "local".into(),
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        created: 1,
        size: None,
        size_at: None,
    };
    e.meta()
        .write(|tx| carrel_meta::volumes::insert(tx, &row))
        .unwrap();
    let report = e.system_check(false).unwrap();
    assert!(
        report
            .orphan_dirs
            .contains(&env.root().join("volumes/half")),
        "{report:?}"
    );
    assert!(report.missing_dirs.contains(&"volume rowonly".to_string()));
    let report = e.system_check(true).unwrap();
    assert!(!report.repaired.is_empty());
    assert!(!env.root().join("volumes/half").exists());
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
    assert!(env.root().join("volumes/rowonly/_data").is_dir());
    assert!(e.system_check(false).unwrap().is_clean());
}

/// A loop device over a file, detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(image: &Path, size_mb: u64, mkfs: &[&str]) -> Option<Loop> {
        let f = std::fs::File::create(image).unwrap();
        f.set_len(size_mb << 20).unwrap();
        drop(f);
        let mut cmd = Command::new(mkfs[0]);
        cmd.args(&mkfs[1..]).arg(image);
        let out = cmd.output().ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping: {} failed: {}",
                mkfs[0],
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipping: losetup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Loop {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn block_device_volume_mounts_and_unmounts() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    let Some(lo) = Loop::new(
        &env.dir.path().join("ext4.img"),
        32,
        &["mkfs.ext4", "-q", "-F"],
    ) else {
        return;
    };
    e.volume_create(&req(Some("disk"), &[("type", "ext4"), ("device", &lo.dev)]))
        .unwrap();
    let p = e.volume_mount("disk", "c1").unwrap();
    assert!(is_mounted(&p));
    assert!(p.join("lost+found").is_dir());
    std::fs::write(p.join("data"), b"persisted").unwrap();
    e.volume_unmount("disk", "c1").unwrap();
    assert!(!is_mounted(&p));
    assert!(!p.join("data").exists());
    let p = e.volume_mount("disk", "c2").unwrap();
    assert_eq!(std::fs::read(p.join("data")).unwrap(), b"persisted");
    // Export goes through the mount too.
    let mut tar = Vec::new();
    e.volume_export("disk", &mut tar, &ExportOptions::default())
        .unwrap();
    assert!(tar_names(&tar).contains(&"data".to_string()));
    e.volume_unmount("disk", "c2").unwrap();
    assert!(!is_mounted(&p));
    e.volume_remove("disk", false).unwrap();
}

fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            e.path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

/// An XFS filesystem with project quotas mounted on `dir`; unmounted on drop.
struct XfsRoot {
    dir: PathBuf,
    _lo: Loop,
}

impl XfsRoot {
    fn new(base: &Path) -> Option<XfsRoot> {
        let lo = Loop::new(
            &base.join("xfs.img"),
            300,
            &["mkfs.xfs", "-q", "-f", "-m", "crc=1"],
        )?;
        let dir = base.join("xfs");
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "xfs", "-o", "prjquota", &lo.dev])
            .arg(&dir)
            .status()
            .unwrap();
        if !st.success() {
            let dmesg = Command::new("dmesg")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            let why = String::from_utf8_lossy(&dmesg)
                .lines()
                .rev()
                .find(|l| l.contains("XFS"))
                .unwrap_or("")
                .to_string();
            eprintln!("skipping: cannot mount XFS with prjquota here ({why})");
            return None;
        }
        Some(XfsRoot { dir, _lo: lo })
    }
}

impl Drop for XfsRoot {
    fn drop(&mut self) {
        unmount_under(&self.dir);
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn xfs_project_quota_enforces_size() {
    if !is_root() {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("carrel-quota")
        .tempdir()
        .unwrap();
    let Some(xfs) = XfsRoot::new(base.path()) else {
        return;
    };
    let e = open(&xfs.dir.join("root"));
    assert!(carrel_mount::features::project_quota(&e.layout().volumes()));
    let v = e
        .volume_create(&req(Some("q"), &[("size", "10m")]))
        .unwrap();
    let v2 = e
        .volume_create(&req(Some("q2"), &[("size", "20m")]))
        .unwrap();
    let write = |dir: &Path, mb: usize| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.join("big"))?;
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..mb {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    };
    let err = write(&v.mountpoint, 16).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    std::fs::remove_file(v.mountpoint.join("big")).unwrap();
    // Subdirectories inherit the project.
    std::fs::create_dir(v.mountpoint.join("sub")).unwrap();
    assert_eq!(
        write(&v.mountpoint.join("sub"), 12)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EDQUOT)
    );
    write(&v.mountpoint.join("sub"), 0).unwrap();
    write(&v.mountpoint, 8).unwrap();
    write(&v2.mountpoint, 16).unwrap();
    assert_eq!(e.volume_measure("q").unwrap(), 8 << 20);
    drop(e);
}

fn setxattr(p: &Path, k: &str, v: &[u8]) {
    rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty()).unwrap();
}

fn getxattr(p: &Path, k: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, k, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn export_import_round_trip_keeps_everything() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    let src = e.volume_create(&req(Some("src"), &[])).unwrap();
    let d = &src.mountpoint;
    std::fs::create_dir(d.join("dir")).unwrap();
    std::fs::write(d.join("dir/file"), b"content").unwrap();
    std::os::unix::fs::chown(d.join("dir/file"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(d.join("dir/file"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    std::fs::set_permissions(d.join("dir"), std::fs::Permissions::from_mode(0o710)).unwrap();
    std::fs::hard_link(d.join("dir/file"), d.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", d.join("abs")).unwrap();
    std::os::unix::fs::symlink("dir/file", d.join("rel")).unwrap();
    setxattr(&d.join("dir/file"), "user.note", b"hello");
    setxattr(&d.join("dir"), "trusted.x", b"t");
    let sparse = std::fs::File::create(d.join("sparse")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"middle", 512 << 20).unwrap();
    drop(sparse);
    std::os::unix::fs::chown(d, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o770)).unwrap();

    let mut tar = Vec::new();
    let n = e
        .volume_export("src", &mut tar, &ExportOptions::default())
        .unwrap();
    assert_eq!(n as usize, tar.len());
    assert!(
        tar.len() < 64 << 10,
        "sparse file archived sparse: {} bytes",
        tar.len()
    );

    let dst = e.volume_create(&req(Some("dst"), &[])).unwrap();
    let stats = e
        .volume_import(
            "dst",
            Box::new(std::io::Cursor::new(tar.clone())),
            &ImportOptions::default(),
        )
        .unwrap();
    assert!(stats.entries >= 7);
    let t = &dst.mountpoint;
    let m = std::fs::metadata(t).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o770));
    let f = std::fs::symlink_metadata(t.join("dir/file")).unwrap();
    assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1234, 5678, 0o4751));
    assert_eq!(mode(&t.join("dir")), 0o710);
    assert_eq!(std::fs::read(t.join("dir/file")).unwrap(), b"content");
    assert_eq!(
        std::fs::symlink_metadata(t.join("link")).unwrap().ino(),
        f.ino(),
        "hardlink kept"
    );
    assert_eq!(
        std::fs::read_link(t.join("abs")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert_eq!(
        std::fs::read_link(t.join("rel")).unwrap(),
        Path::new("dir/file")
    );
    assert_eq!(getxattr(&t.join("dir/file"), "user.note"), b"hello");
    assert_eq!(getxattr(&t.join("dir"), "trusted.x"), b"t");
    let s = std::fs::metadata(t.join("sparse")).unwrap();
    assert_eq!(s.len(), 1 << 30);
    assert!(
        s.blocks() * 512 < 1 << 20,
        "restored sparse: {} blocks",
        s.blocks()
    );
    let mut buf = [0u8; 6];
    std::fs::File::open(t.join("sparse"))
        .unwrap()
        .read_exact_at(&mut buf, 512 << 20)
        .unwrap();
    assert_eq!(&buf, b"middle");
    assert!(stats.size > 0);

    // Compressed input, and an unknown volume.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let dst2 = e.volume_create(&req(Some("dst2"), &[])).unwrap();
    e.volume_import(
        "dst2",
        Box::new(std::io::Cursor::new(gz)),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dst2.mountpoint.join("dir/file")).unwrap(),
        b"content"
    );
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    e.volume_import(
        "dst2",
        Box::new(std::io::Cursor::new(zst)),
        &ImportOptions::default(),
    )
    .unwrap();
    assert_eq!(
        e.volume_import(
            "nope",
            Box::new(std::io::empty()),
            &ImportOptions::default()
        )
        .unwrap_err()
        .to_string(),
        "get nope: no such volume"
    );
}

#[test]
fn import_of_hostile_archives_stays_inside() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    let v = e.volume_create(&req(Some("target"), &[])).unwrap();
    let canary = env.dir.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    // A symlink to the host canary, then a file written "through" it; a climbing name.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "esc", &canary).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, "esc/pwned", &b"evil"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let _ = e.volume_import(
        "target",
        Box::new(std::io::Cursor::new(tar)),
        &ImportOptions::default(),
    );
    let mut raw = vec![0u8; 512];
    {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..9].copy_from_slice(b"../../out");
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        raw.copy_from_slice(h.as_bytes());
    }
    raw.extend_from_slice(&[0u8; 1024]);
    let err = e
        .volume_import(
            "target",
            Box::new(std::io::Cursor::new(raw)),
            &ImportOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Archive(_)), "{err}");
    assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 0);
    assert!(!env.dir.path().join("out").exists());
    assert!(!env.root().join("out").exists());
    assert!(v.mountpoint.join("esc").symlink_metadata().is_ok());
}

/// ST-35: files of the volume swapped for symlinks to a host canary while exports run.
#[test]
fn export_never_leaks_host_files_through_swapped_symlinks() {
    let Some(env) = Env::new() else { return };
    let e = &env.engine;
    let v = e.volume_create(&req(Some("swap"), &[])).unwrap();
    let marker: String = (0..32)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let canary = env.dir.path().join("canary-host-file");
    std::fs::write(&canary, &marker).unwrap();
    let data = v.mountpoint.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), b"regular").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let data = data.clone();
        let canary = canary.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tmp = data.join(format!(".t{n}"));
                if n.is_multiple_of(2) {
                    let _ = std::os::unix::fs::symlink(&canary, &tmp);
                } else {
                    let _ = std::fs::write(&tmp, b"regular");
                }
                let _ = std::fs::rename(&tmp, data.join("f"));
                // The directory itself swapped for a link to the host directory, too.
                if n.is_multiple_of(5) {
                    let _ = std::fs::rename(&data, data.with_extension("real"));
                    let _ = std::os::unix::fs::symlink(canary.parent().unwrap(), &data);
                    let _ = std::fs::remove_file(&data);
                    let _ = std::fs::rename(data.with_extension("real"), &data);
                }
                n += 1;
            }
        })
    };
    let mut symlinks = 0;
    for _ in 0..500 {
        let mut tar = Vec::new();
        e.volume_export("swap", &mut tar, &ExportOptions { pause: false })
            .unwrap();
        assert!(
            !tar.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "host content leaked into an export"
        );
        let mut a = tar::Archive::new(&tar[..]);
        for entry in a.entries().unwrap() {
            let entry = entry.unwrap();
            if entry.header().entry_type() == tar::EntryType::Symlink {
                symlinks += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(symlinks > 0, "the race was exercised");
}
