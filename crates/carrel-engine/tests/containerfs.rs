//! `diff`, `commit`, `export` and `cp` through the engine against hostile, live containers
//! (ADVERSARIAL.md ST-30, ST-31, ST-35 for containers, ST-44; CATALOG.md A-28, A-29):
//!
//! - a **real running container** (crun or runc, the monitor being this test binary
//!   re-executed) that swaps `/srv/dir` between a directory and symlinks to `/`, to a host
//!   canary directory (absolute and with `..`), as fast as it can, while the test copies into
//!   and out of `/srv/dir/sub`, through static links to `/etc` and to the canary path, and
//!   exports the whole root: no host file is ever read or written, every copy lands in the
//!   container;
//! - the same race on the `copy` driver (its tree is the container's root), swapped with
//!   `renameat2(RENAME_EXCHANGE)`;
//! - views of stopped containers leave no mount and no mountpoint behind (ST-44), and the
//!   runtime's mount points (Docker's init layer) stay out of `diff` (docker-py's `test_diff`:
//!   `touch /test` gives exactly `A /test`).
//!
//! Needs root and (for the running cases) a working OCI runtime; without one they are skipped
//! with a message. Everything started is killed and unmounted in drop guards.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use carrel_engine::containers::fs::{ChangeKind, CommitOptions, CopyFromOptions, CopyToOptions};
use carrel_engine::containers::monitor::{self, MonitorOptions, NoHooks};
use carrel_engine::containers::runtime::{Runtime, RuntimeProbe};
use carrel_engine::containers::spec::{self, RunPlan};
use carrel_engine::containers::types::{Config, CreateRequest, HostConfig, Status};
use carrel_engine::{Engine, EngineOptions};

const ENV_MONITOR_DIR: &str = "CARREL_FS_TEST_MONITOR_DIR";

/// Not a test: when this binary is re-executed as a container monitor, be one and exit.
#[test]
fn monitor_child_entry() {
    if let Ok(dir) = std::env::var(ENV_MONITOR_DIR) {
        let opts = MonitorOptions::from_env();
        let code = monitor::run_monitor(Path::new(&dir), opts, &NoHooks).unwrap_or(125);
        std::process::exit(code);
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn rand_hex() -> String {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A data root with an engine, the busybox image and the containers started by the test.
struct Env {
    dir: tempfile::TempDir,
    engine: Engine,
    runtime: Option<Runtime>,
    started: Vec<String>,
}

impl Env {
    fn new(driver: Option<&str>) -> Option<Env> {
        if !is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("carrel-fs-test")
            .tempdir()
            .unwrap();
        let engine = Engine::open(&EngineOptions {
            root: dir.path().join("root"),
            storage_driver: driver.map(str::to_string),
        })
        .unwrap();
        engine
            .import_busybox(Path::new("/bin/busybox"), "busybox:latest")
            .unwrap();
        Some(Env {
            dir,
            engine,
            runtime: None,
            started: Vec::new(),
        })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn create(&self, cmd: &[&str]) -> String {
        self.engine
            .container_create(CreateRequest {
                name: String::new(),
                config: Config {
                    image: "busybox".into(),
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
                host_config: HostConfig::default(),
            })
            .unwrap()
            .id
    }

    /// Start a created container through the monitor (as `carrel start` will) and record it as
    /// running. `None` when no runtime works here.
    fn start(&mut self, id: &str) -> Option<()> {
        if self.runtime.is_none() {
            let probe = RuntimeProbe::get(&self.root());
            match probe.select("", &self.root()) {
                Ok(rt) => self.runtime = Some(rt),
                Err(e) => {
                    eprintln!("skipping the running case: {e}");
                    return None;
                }
            }
        }
        let c = self.engine.resolve_container(id).unwrap();
        let dir = self.engine.container_dir(id);
        let paths = self.engine.snapshotter().paths(&c.snapshot).unwrap();
        let (hostname, hosts, resolv) =
            spec::write_network_files(&dir, &id[..12], spec::NetworkMode::None).unwrap();
        let mut args = vec![c.spec.path.clone()];
        args.extend(c.spec.args.iter().cloned());
        let plan = RunPlan {
            id: id.to_string(),
            bundle: dir.clone(),
            rootfs: paths.merged.clone(),
            rootfs_mounts: self.engine.snapshotter().mounts(&c.snapshot).unwrap(),
            args,
            env: spec::docker_env(&[], &id[..12], false, "/root"),
            cwd: "/".into(),
            hostname: id[..12].to_string(),
            runtime: self.runtime.clone().unwrap(),
            log_path: dir.join(format!("{id}-json.log")),
            hostname_path: Some(hostname),
            hosts_path: Some(hosts),
            resolv_conf_path: Some(resolv),
            ..Default::default()
        };
        plan.save(&dir).unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "monitor_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_MONITOR_DIR, &dir);
        let h = monitor::spawn_monitor(cmd, false).unwrap();
        self.started.push(id.to_string());
        self.engine
            .update_container_state(id, |s| {
                s.status = Status::Running;
                s.pid = i64::from(h.started.pid);
                s.monitor_pid = i64::from(h.started.monitor_pid);
                s.started_at = h.started.started_at;
                Ok(())
            })
            .unwrap();
        Some(())
    }

    /// Mounts at or below the data root (sorted).
    fn mounts(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = carrel_mount::mountinfo::mounts_under(self.dir.path())
            .unwrap()
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        v.sort();
        v
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in &self.started {
            let dir = self.engine.container_dir(id);
            if let Some(s) = monitor::read_started(&dir)
                && monitor::monitor_alive(&dir)
            {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(s.monitor_pid).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
            if let Some(rt) = &self.runtime {
                monitor::force_delete(rt, id);
            }
        }
        if let Ok(mounts) = carrel_mount::mountinfo::mounts_under(self.dir.path()) {
            for m in mounts {
                let _ = rustix::mount::unmount(&m.mount_point, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// A host directory the container's links point at, with a secret marker; everything about it
/// is recorded so that any change is seen.
struct Canary {
    dir: tempfile::TempDir,
    marker: Vec<u8>,
    before: BTreeMap<PathBuf, (u64, u32, i64, i64, Vec<u8>)>,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("carrel-canary-")
            .tempdir()
            .unwrap();
        let marker = format!("HOST-SECRET-{}", rand_hex()).into_bytes();
        std::fs::write(dir.path().join("file"), &marker).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let mut c = Canary {
            dir,
            marker,
            before: BTreeMap::new(),
        };
        c.before = c.snapshot();
        c
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, (u64, u32, i64, i64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(p) = stack.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(
                p.clone(),
                (m.ino(), m.mode(), m.mtime(), m.mtime_nsec(), content),
            );
            if m.is_dir() {
                for e in std::fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            }
        }
        out
    }

    fn assert_unchanged(&self) {
        assert_eq!(
            self.snapshot(),
            self.before,
            "the host canary directory changed"
        );
    }

    fn assert_absent_from(&self, data: &[u8], what: &str) {
        assert!(
            !data.windows(self.marker.len()).any(|w| w == self.marker),
            "host data leaked into {what}"
        );
    }
}

fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_700_000_000);
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

fn read_all(mut r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}

fn copy_in(env: &Env, id: &str, dest: &str, tar: &[u8]) -> carrel_engine::Result<()> {
    env.engine.container_copy_to(
        id,
        dest,
        Box::new(std::io::Cursor::new(tar.to_vec())),
        &CopyToOptions {
            no_overwrite_dir_non_dir: true,
            copy_uid_gid: false,
        },
    )
}

/// `openat2(RESOLVE_IN_ROOT)` fails with `EAGAIN` when a `..` is resolved while anything on the
/// filesystem is renamed (openat2(2): "the caller may choose to retry");
/// `carrel_core::fs::Root` does not retry yet, so a path through a `..` link can fail while the
/// container renames. Retry such operations a few times (they fail closed, never open).
fn retry_eagain<T>(mut f: impl FnMut() -> carrel_engine::Result<T>) -> carrel_engine::Result<T> {
    let mut n = 0;
    loop {
        match f() {
            Err(e) if n < 50 && e.to_string().contains("os error 11") => n += 1,
            r => return r,
        }
    }
}

fn copy_out(env: &Env, id: &str, path: &str) -> carrel_engine::Result<Vec<u8>> {
    let (_, s) = env
        .engine
        .container_copy_from(id, path, &CopyFromOptions::default())?;
    read_all(s).map_err(|e| carrel_engine::EngineError::io("reading", path, e))
}

/// Files named `name` in host places a broken copy could write to.
fn assert_not_on_host(name: &str, canary: &Canary) {
    for dir in [
        Path::new("/"),
        Path::new("/etc"),
        Path::new("/tmp"),
        canary.path(),
    ] {
        assert!(
            !dir.join(name).exists(),
            "{} appeared on the host",
            dir.join(name).display()
        );
    }
}

/// ST-31 with a real running container: the container swaps `/srv/dir` as fast as it can.
#[test]
fn st31_running_container_swapping_links_never_redirects_copies_to_the_host() {
    let Some(mut env) = Env::new(None) else {
        return;
    };
    let canary = Canary::new();
    let cpath = canary.path().display().to_string();
    let up = "../".repeat(12);
    let script = format!(
        "mkdir -p /srv/real/sub {cpath}/sub && echo container > {cpath}/file && \
         ln -s /etc /etclink && ln -s {cpath} /canarylink && ln -s {up}{cpath} /uplink && \
         touch /ready && while :; do \
           mv /srv/real /srv/dir; mv /srv/dir /srv/real; \
           ln -s {cpath} /srv/dir; rm /srv/dir; \
           ln -s / /srv/dir; rm /srv/dir; \
           ln -s {up}{cpath} /srv/dir; rm /srv/dir; \
         done"
    );
    let id = env.create(&["sh", "-c", &script]);
    if env.start(&id).is_none() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.engine.container_stat_path(&id, "/ready").is_err() {
        assert!(Instant::now() < deadline, "the container did not get ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mounts_before = env.mounts();
    let name = format!("carrel-st31-{}", rand_hex());
    let payload = tar_with(&name, b"payload");
    let started = Instant::now();
    let (mut runs, mut landed) = (0, 0);
    while runs < 1000 && started.elapsed() < Duration::from_secs(30) {
        if copy_in(&env, &id, "/srv/dir/sub", &payload).is_ok() {
            landed += 1;
        }
        let _ = copy_in(&env, &id, "/srv/dir", &payload);
        if let Ok(data) = copy_out(&env, &id, "/srv/dir") {
            canary.assert_absent_from(&data, "a copy of /srv/dir");
        }
        if runs % 50 == 0 {
            // Static links: they always resolve inside the container.
            copy_in(&env, &id, "/canarylink", &payload).unwrap();
            retry_eagain(|| copy_in(&env, &id, "/uplink/sub", &payload)).unwrap();
            copy_in(&env, &id, "/etclink/", &payload).unwrap();
            let data = copy_out(&env, &id, "/canarylink/file").unwrap();
            canary.assert_absent_from(&data, "a copy of /canarylink/file");
            assert!(data.windows(9).any(|w| w == b"container"));
            let data = retry_eagain(|| copy_out(&env, &id, "/uplink/file")).unwrap();
            canary.assert_absent_from(&data, "a copy of /uplink/file");
            let mut export = Vec::new();
            env.engine.container_export(&id, &mut export).unwrap();
            canary.assert_absent_from(&export, "the export");
        }
        runs += 1;
    }
    eprintln!("ST-31 running: {runs} rounds, {landed} copies landed in the swapped directory");
    assert!(
        landed > 0,
        "no copy into the swapped directory succeeded in {runs} runs"
    );
    // The copies through the static links are in the container.
    for p in [
        format!("{cpath}/{name}"),
        format!("{cpath}/sub/{name}"),
        format!("/etc/{name}"),
    ] {
        let st = env.engine.container_stat_path(&id, &p).unwrap();
        assert_eq!(st.size, 7, "{p}");
    }
    canary.assert_unchanged();
    assert_not_on_host(&name, &canary);
    assert_eq!(env.mounts(), mounts_before, "mounts changed (ST-44)");
    // A running container is committed as it is.
    let img = env
        .engine
        .container_commit(&id, &CommitOptions::default())
        .unwrap();
    assert!(img.to_string().starts_with("sha256:"));
}

/// The runtime's mount points and files stay out of `diff` (docker-py `test_diff`).
#[test]
fn diff_of_a_running_container_shows_only_its_own_changes() {
    let Some(mut env) = Env::new(None) else {
        return;
    };
    let id = env.create(&["sh", "-c", "touch /test && sleep 600"]);
    if env.start(&id).is_none() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.engine.container_stat_path(&id, "/test").is_err() {
        assert!(
            Instant::now() < deadline,
            "the container did not touch /test"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let changes = env.engine.container_changes(&id).unwrap();
    let shown: Vec<String> = changes
        .iter()
        .map(|c| format!("{} {}", c.kind.letter(), c.path.display()))
        .collect();
    assert_eq!(shown, ["A /test"]);
    assert_eq!(changes[0].kind, ChangeKind::Added);
    // Its JSON is Docker's.
    assert_eq!(
        serde_json::to_string(&changes).unwrap(),
        r#"[{"Path":"/test","Kind":1}]"#
    );
}

/// Views of a container that is not running: nothing stays mounted, no mountpoint is left, the
/// monitor lock is free again.
#[test]
fn st44_views_of_stopped_containers_leave_nothing_behind() {
    let Some(env) = Env::new(None) else {
        return;
    };
    let id = env.create(&["sh"]);
    let before = env.mounts();
    let cdir = env.engine.container_dir(&id);
    let entries = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&cdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "monitor.lock")
            .collect();
        v.sort();
        v
    };
    let entries_before = entries();
    copy_in(&env, &id, "/tmp", &tar_with("x", b"x")).unwrap();
    assert_eq!(copy_out(&env, &id, "/tmp/x").unwrap().len(), 2048);
    let st = env.engine.container_stat_path(&id, "/tmp/x").unwrap();
    assert_eq!((st.name.as_str(), st.size), ("x", 1));
    let mut out = Vec::new();
    env.engine.container_export(&id, &mut out).unwrap();
    // A stream dropped early releases its view too.
    let (_, stream) = env
        .engine
        .container_copy_from(&id, "/bin", &CopyFromOptions::default())
        .unwrap();
    drop(stream);
    // Errors release it as well.
    assert!(copy_in(&env, &id, "/nope", &tar_with("x", b"x")).is_err());
    assert!(copy_out(&env, &id, "/nope").is_err());
    assert_eq!(env.mounts(), before);
    assert_eq!(entries(), entries_before);
    assert!(!monitor::monitor_alive(&cdir));
    env.engine.container_remove(&id, false, false).unwrap();
}

/// The `copy` driver: the container's tree is swapped under the copies directly.
#[test]
fn st31_copy_driver_tree_swapped_under_copies() {
    let Some(env) = Env::new(Some("copy")) else {
        return;
    };
    let canary = Canary::new();
    let id = env.create(&["sh"]);
    let c = env.engine.resolve_container(&id).unwrap();
    let tree = env.engine.snapshotter().upper_dir(&c.snapshot).unwrap();
    std::fs::create_dir_all(tree.join("srv/dir/sub")).unwrap();
    std::os::unix::fs::symlink(canary.path(), tree.join("srv/alt")).unwrap();
    std::os::unix::fs::symlink("/", tree.join("srv/alt2")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../etc", tree.join("srv/alt3")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let srv = tree.join("srv");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let dir = rustix::fs::open(&srv, rustix::fs::OFlags::PATH, rustix::fs::Mode::empty())
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
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
    let name = format!("carrel-st31c-{}", rand_hex());
    let payload = tar_with(&name, b"payload");
    let started = Instant::now();
    let mut runs = 0;
    while runs < 2000 && started.elapsed() < Duration::from_secs(20) {
        let _ = copy_in(&env, &id, "/srv/dir/sub", &payload);
        let _ = copy_in(&env, &id, "/srv/dir", &payload);
        if let Ok(data) = copy_out(&env, &id, "/srv/dir") {
            canary.assert_absent_from(&data, "a copy of /srv/dir");
        }
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(swapper.join().unwrap() > 0);
    canary.assert_unchanged();
    assert_not_on_host(&name, &canary);
    let mut export = Vec::new();
    env.engine.container_export(&id, &mut export).unwrap();
    canary.assert_absent_from(&export, "the export");
    // And the diff / commit of the copy driver see the copies.
    let changes = env.engine.container_changes(&id).unwrap();
    assert!(changes.iter().any(|c| c.path == Path::new("/srv")));
    let img = env
        .engine
        .container_commit(&id, &CommitOptions::default())
        .unwrap();
    let row = env.engine.resolve_image(&img.to_string()).unwrap();
    assert_eq!(row.layers.len(), 2);
}
