//! Real containers through the run machinery, for both crun and runc: a busybox root on an
//! overlay mount, the monitor (this test binary re-executed, see `monitor_child_entry`), logs,
//! attach, terminals, stop, exec and recovery after a killed monitor.
//!
//! Needs root and the runtimes; a runtime that does not work on the host is skipped with a
//! message. Every test cleans up processes, runtime state and mounts in a drop guard.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carrel_engine::containers::monitor::{
    self, Event, ExecRequest, ExitInfo, MonitorHandle, MonitorOptions, NoHooks, Recovery,
};
use carrel_engine::containers::runtime::{RunError, Runtime, RuntimeProbe};
use carrel_engine::containers::spec::{self, RunPlan};
use carrel_mount::{Mount, OverlayMount};

const ENV_MONITOR_DIR: &str = "CARREL_TEST_MONITOR_DIR";
const ENV_SPAWNER_DIR: &str = "CARREL_TEST_SPAWNER_DIR";

/// Not a test: when this binary is re-executed as a container monitor (or as a throw-away
/// spawner), do that job and exit.
#[test]
fn monitor_child_entry() {
    if let Ok(dir) = std::env::var(ENV_MONITOR_DIR) {
        let opts = MonitorOptions::from_env();
        let code = monitor::run_monitor(Path::new(&dir), opts, &NoHooks).unwrap_or(125);
        std::process::exit(code);
    }
    if let Ok(dir) = std::env::var(ENV_SPAWNER_DIR) {
        // Spawn a detached container, say so on stdout, then wait to be killed.
        let h = monitor::spawn_monitor(monitor_command(Path::new(&dir)), false).unwrap();
        println!("started {}", h.started.pid);
        std::thread::sleep(Duration::from_secs(600));
        std::process::exit(0);
    }
}

fn monitor_command(dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "monitor_child_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ENV_MONITOR_DIR, dir);
    c
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A busybox root filesystem shared (read-only, as the overlay's lower layer) by the tests.
fn busybox_lower() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        // Built once under a temporary name, then renamed into place: concurrent test
        // processes share it, and it is never modified afterwards.
        let dir = std::env::temp_dir().join("carrel-rt-busybox-v1");
        if dir.join("bin/busybox").exists() {
            return dir;
        }
        let tmp = tempfile::Builder::new()
            .prefix("carrel-rt-busybox")
            .tempdir()
            .unwrap()
            .keep();
        build_busybox_root(&tmp);
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
    .clone()
}

fn build_busybox_root(dir: &Path) {
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in [
            "bin",
            "etc",
            "tmp",
            "root",
            "home/alice",
            "proc",
            "sys",
            "dev",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "true", "false", "echo", "cat", "id", "pwd", "touch", "sleep", "tty", "stty",
            "env", "ls", "printf", "read", "kill",
        ] {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\nwheel:x:10:alice\nalice:x:1000:\naudio:x:29:alice\n",
        )
        .unwrap();
        std::fs::write(dir.join("notexec"), "#!/bin/sh\n").unwrap();
    }
}

/// One test's data root with its containers; cleans up everything on drop.
struct Env {
    root: tempfile::TempDir,
    runtime: Runtime,
    ids: Vec<String>,
}

impl Env {
    fn new(runtime: &str) -> Option<Env> {
        if !is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let root = tempfile::Builder::new()
            .prefix("carrel-rt")
            .tempdir()
            .unwrap();
        let probe = RuntimeProbe::get(root.path());
        let rt = match probe.select(runtime, root.path()) {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("skipping {runtime}: {e}");
                return None;
            }
        };
        Some(Env {
            root,
            runtime: rt,
            ids: Vec::new(),
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.path().join("containers").join(id)
    }

    /// A plan for `args` on a fresh overlay root.
    fn plan(&mut self, args: &[&str]) -> RunPlan {
        let id = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            rand_u64(),
            rand_u64(),
            rand_u64(),
            rand_u64()
        );
        let dir = self.dir(&id);
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        self.ids.push(id.clone());
        let (hostname, hosts, resolv) =
            spec::write_network_files(&dir, &id[..12], spec::NetworkMode::None).unwrap();
        RunPlan {
            id: id.clone(),
            bundle: dir.clone(),
            rootfs: dir.join("merged"),
            rootfs_mounts: vec![Mount::Overlay(OverlayMount {
                volatile: false,
                lower: vec![busybox_lower()],
                upper: Some(dir.join("upper")),
                work: Some(dir.join("work")),
                short: None,
            })],
            args: args.iter().map(|s| s.to_string()).collect(),
            env: spec::docker_env(&[], &id[..12], false, "/root"),
            cwd: "/".into(),
            hostname: id[..12].to_string(),
            runtime: self.runtime.clone(),
            log_path: dir.join(format!("{id}-json.log")),
            hostname_path: Some(hostname),
            hosts_path: Some(hosts),
            resolv_conf_path: Some(resolv),
            ..Default::default()
        }
    }

    fn spawn(&self, plan: &RunPlan, attach: bool) -> Result<MonitorHandle, RunError> {
        plan.save(&plan.bundle).unwrap();
        monitor::spawn_monitor(monitor_command(&plan.bundle), attach)
    }

    /// Run to the end, returning the exit and the log's (stream, text) records.
    fn run(&self, plan: &RunPlan) -> (ExitInfo, Vec<(String, String)>) {
        let h = self.spawn(plan, false).unwrap();
        let exit = h.wait_exit().unwrap().expect("exit reported");
        (exit, self.log(plan))
    }

    fn log(&self, plan: &RunPlan) -> Vec<(String, String)> {
        let mut out = Vec::new();
        monitor::logs::read_log(
            &plan.log_path,
            &Default::default(),
            |e| {
                out.push((e.stream.clone(), e.log.clone()));
                Ok(())
            },
            || true,
        )
        .unwrap();
        out
    }

    fn assert_clean(&self, plan: &RunPlan) {
        assert!(monitor::wait_monitor(
            &plan.bundle,
            Some(Duration::from_secs(10))
        ));
        let mounts = carrel_mount::mountinfo::mounts_under(&plan.bundle).unwrap();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
        assert_eq!(
            self.runtime.state(&plan.id).unwrap(),
            None,
            "runtime state left"
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in &self.ids {
            let dir = self.dir(id);
            if let Some(s) = monitor::read_started(&dir)
                && monitor::monitor_alive(&dir)
            {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(s.monitor_pid).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
            monitor::force_delete(&self.runtime, id);
        }
        if let Ok(mounts) = carrel_mount::mountinfo::mounts_under(self.root.path()) {
            for m in mounts {
                let _ = rustix::mount::unmount(&m.mount_point, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    u64::from_le_bytes(b)
}

fn stdout_of(log: &[(String, String)]) -> String {
    log.iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, l)| l.as_str())
        .collect()
}

macro_rules! both_runtimes {
    ($name:ident) => {
        mod $name {
            #[test]
            fn crun() {
                super::$name("crun");
            }
            #[test]
            fn runc() {
                super::$name("runc");
            }
        }
    };
}

fn exit_codes(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let p = env.plan(&["/bin/true"]);
    let (exit, _) = env.run(&p);
    assert_eq!(exit.exit_code, 0);
    assert!(exit.finished_at >= exit.started_at && exit.started_at > 0);
    env.assert_clean(&p);
    let p = env.plan(&["sh", "-c", "exit 3"]);
    assert_eq!(env.run(&p).0.exit_code, 3);
    assert_eq!(monitor::read_exit(&p.bundle).unwrap().exit_code, 3);
    env.assert_clean(&p);
}
both_runtimes!(exit_codes);

fn log_streams(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let p = env.plan(&["sh", "-c", "echo out; echo err >&2; printf partial"]);
    let (exit, log) = env.run(&p);
    assert_eq!(exit.exit_code, 0);
    assert_eq!(
        log,
        [
            ("stdout".to_string(), "out\n".to_string()),
            ("stderr".into(), "err\n".into()),
            ("stdout".into(), "partial".into())
        ]
    );
}
both_runtimes!(log_streams);

fn restart_and_follow(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let p = env.plan(&[
        "sh",
        "-c",
        "echo a; sleep 0.5; echo b >&2; echo $$ >> /runs",
    ]);
    let h = env.spawn(&p, false).unwrap();
    // `logs -f`: follows until the monitor is done, and misses nothing written before.
    let mut got = Vec::new();
    monitor::logs::read_log(
        &p.log_path,
        &monitor::logs::LogOptions {
            tail: None,
            follow: true,
        },
        |e| {
            got.push(String::from_utf8(monitor::logs::format_entry(e, false)).unwrap());
            Ok(())
        },
        || !monitor::monitor_alive(&p.bundle),
    )
    .unwrap();
    assert_eq!(got, ["a\n", "b\n"]);
    assert_eq!(h.wait_exit().unwrap(), monitor::read_exit(&p.bundle));
    env.assert_clean(&p);
    // Start the same container again: same writable layer, the log grows.
    let (exit, log) = env.run(&p);
    assert_eq!(exit.exit_code, 0);
    assert_eq!(log.len(), 4);
    assert_eq!(
        std::fs::read_to_string(p.bundle.join("upper/runs"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    let mut tail = Vec::new();
    monitor::logs::read_log(
        &p.log_path,
        &monitor::logs::LogOptions {
            tail: Some(1),
            follow: false,
        },
        |e| {
            tail.push(String::from_utf8(monitor::logs::format_entry(e, true)).unwrap());
            Ok(())
        },
        || true,
    )
    .unwrap();
    assert!(tail[0].ends_with("Z b\n"), "{tail:?}");
    env.assert_clean(&p);
}
both_runtimes!(restart_and_follow);

fn env_cwd_user(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let mut p = env.plan(&["sh", "-c", "echo $FOO; pwd; id; cat /etc/hostname"]);
    // The monitor resolves the user and creates the working directory in the mounted root.
    p.user_spec = Some("alice".into());
    p.group_add = vec!["77".into()];
    p.env = vec!["FOO=bar".into(), "PATH=/bin".into()];
    p.cwd = "/work/dir/../dir".into();
    let (exit, log) = env.run(&p);
    assert_eq!(exit.exit_code, 0, "{log:?}");
    let out = stdout_of(&log);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "bar");
    assert_eq!(lines[1], "/work/dir");
    assert_eq!(
        lines[2],
        "uid=1000(alice) gid=1000(alice) groups=10(wheel),29(audio),77"
    );
    assert_eq!(lines[3], &p.id[..12]);
    assert!(p.bundle.join("upper/work/dir").is_dir());
    // HOME comes from the resolved user.
    let mut p = env.plan(&["sh", "-c", "echo $HOME; id -u"]);
    p.env = vec!["PATH=/bin".into()];
    p.user_spec = Some("alice".into());
    assert_eq!(stdout_of(&env.run(&p).1), "/home/alice\n1000\n");
    // An unknown user fails the start with Docker's message.
    let mut p = env.plan(&["true"]);
    p.user_spec = Some("bob".into());
    let e = env.spawn(&p, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unable to find user bob: no matching entries in passwd file"
    );
    env.assert_clean(&p);
}
both_runtimes!(env_cwd_user);

fn readonly_root(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let mut p = env.plan(&["touch", "/x"]);
    p.readonly_rootfs = true;
    let (exit, log) = env.run(&p);
    assert_eq!(exit.exit_code, 1);
    assert!(log[0].1.contains("Read-only file system"), "{log:?}");
    // The same without --read-only works and lands in the writable layer.
    let p = env.plan(&["touch", "/x"]);
    assert_eq!(env.run(&p).0.exit_code, 0);
    assert!(p.bundle.join("upper/x").exists());
}
both_runtimes!(readonly_root);

fn bad_entrypoints(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let p = env.plan(&["/no/such/binary"]);
    let e = env.spawn(&p, false).unwrap_err();
    assert_eq!(e.exit_code(), 127, "{e}");
    assert!(
        e.to_string().starts_with("OCI runtime create failed: "),
        "{e}"
    );
    assert_eq!(monitor::read_exit(&p.bundle).unwrap().exit_code, 127);
    env.assert_clean(&p);
    let p = env.plan(&["nosuchcommand"]);
    assert_eq!(env.spawn(&p, false).unwrap_err().exit_code(), 127);
    let p = env.plan(&["/notexec"]);
    let e = env.spawn(&p, false).unwrap_err();
    assert_eq!(e.exit_code(), 126, "{e}");
    let p = env.plan(&["/etc"]);
    assert_eq!(env.spawn(&p, false).unwrap_err().exit_code(), 126);
    env.assert_clean(&p);
}
both_runtimes!(bad_entrypoints);

fn detached_survives_spawner(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let p = env.plan(&["sleep", "1000"]);
    p.save(&p.bundle).unwrap();
    let mut spawner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "monitor_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_SPAWNER_DIR, &p.bundle)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut stdout = spawner.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.contains("started") && Instant::now() < deadline {
        let mut b = [0u8; 256];
        let n = stdout.read(&mut b).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&b[..n]));
    }
    assert!(out.contains("started"), "{out}");
    spawner.kill().unwrap();
    spawner.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(monitor::monitor_alive(&p.bundle));
    assert_eq!(env.runtime.state(&p.id).unwrap().unwrap().status, "running");
    let killed = monitor::stop(
        &env.runtime,
        &p.id,
        &p.bundle,
        libc::SIGTERM,
        Duration::from_secs(5),
    )
    .unwrap();
    // sleep is pid 1 of its namespace: SIGTERM without a handler is ignored, so SIGKILL.
    assert!(killed);
    assert_eq!(monitor::read_exit(&p.bundle).unwrap().exit_code, 137);
    env.assert_clean(&p);
}
both_runtimes!(detached_survives_spawner);

fn recovery_after_killed_monitor(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let p = env.plan(&["sleep", "1000"]);
    let h = env.spawn(&p, false).unwrap();
    assert_eq!(monitor::recover(&p.bundle).unwrap(), Recovery::MonitorAlive);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(h.started.monitor_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(monitor::wait_monitor(
        &p.bundle,
        Some(Duration::from_secs(5))
    ));
    // The container outlived its monitor: its root is still mounted.
    assert!(
        !carrel_mount::mountinfo::mounts_under(&p.rootfs)
            .unwrap()
            .is_empty()
    );
    match monitor::recover(&p.bundle).unwrap() {
        Recovery::Repaired(exit) => assert_eq!(exit.exit_code, 137),
        other => panic!("{other:?}"),
    }
    env.assert_clean(&p);
    // The container's process is gone (or a zombie, when the host's init does not reap).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", h.started.pid)).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
    // A second recovery finds nothing to do.
    assert!(matches!(
        monitor::recover(&p.bundle).unwrap(),
        Recovery::Clean(Some(_))
    ));
}
both_runtimes!(recovery_after_killed_monitor);

fn stop_with_timeout(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let p = env.plan(&[
        "sh",
        "-c",
        "trap '' TERM; echo ready; while true; do sleep 1; done",
    ]);
    let _h = env.spawn(&p, false).unwrap();
    let t = Instant::now();
    let killed = monitor::stop(
        &env.runtime,
        &p.id,
        &p.bundle,
        libc::SIGTERM,
        Duration::from_secs(1),
    )
    .unwrap();
    let took = t.elapsed();
    assert!(killed);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(monitor::read_exit(&p.bundle).unwrap().exit_code, 137);
    // A process that handles SIGTERM stops without SIGKILL.
    let p = env.plan(&[
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    let _h = env.spawn(&p, false).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let killed = monitor::stop(
        &env.runtime,
        &p.id,
        &p.bundle,
        libc::SIGTERM,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!killed);
    assert_eq!(monitor::read_exit(&p.bundle).unwrap().exit_code, 0);
    // Stopping a stopped container is not an error.
    assert!(!monitor::stop(&env.runtime, &p.id, &p.bundle, 15, Duration::from_secs(1)).unwrap());
    env.assert_clean(&p);
}
both_runtimes!(stop_with_timeout);

fn attach_stdin(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let mut p = env.plan(&["cat"]);
    p.open_stdin = true;
    p.stdin_once = true;
    let h = env.spawn(&p, true).unwrap();
    // A second client on the attach socket sees the same output.
    let mut other = monitor::attach(&p.bundle).unwrap();
    let mut s = h.stream;
    s.send_stdin(b"hello\n").unwrap();
    s.send_stdin(b"world\n").unwrap();
    s.close_stdin().unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let exit = s.pump(None, &mut out, &mut err).unwrap().unwrap();
    assert_eq!(exit.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&out), "hello\nworld\n");
    let mut seen = Vec::new();
    while let Some(ev) = other.next_event().unwrap() {
        match ev {
            Event::Stdout(d) => seen.extend(d),
            Event::Exit(e) => {
                assert_eq!(e.exit_code, 0);
                break;
            }
            _ => {}
        }
    }
    // The second client connected after start: it may have missed nothing or a prefix.
    assert!(String::from_utf8_lossy(&out).ends_with(&*String::from_utf8_lossy(&seen)));
    assert_eq!(stdout_of(&env.log(&p)), "hello\nworld\n");
    // Attaching to a stopped container is Docker's error.
    assert!(monitor::attach(&p.bundle).is_err());
}
both_runtimes!(attach_stdin);

fn terminal(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let mut p = env.plan(&["sh", "-c", "tty; read x; stty size"]);
    p.tty = true;
    p.open_stdin = true;
    p.console_size = (24, 80);
    p.env = spec::docker_env(&[], &p.hostname, true, "/root");
    let h = env.spawn(&p, true).unwrap();
    let mut s = h.stream;
    let mut out = Vec::new();
    // Wait for the tty line, then resize and let it print the size.
    loop {
        match s.next_event().unwrap().unwrap() {
            Event::Stdout(d) => out.extend(d),
            other => panic!("{other:?}"),
        }
        if String::from_utf8_lossy(&out).contains('\n') {
            break;
        }
    }
    s.resize(33, 77).unwrap();
    s.send_stdin(b"go\n").unwrap();
    let exit = s.pump(None, &mut out, &mut Vec::new()).unwrap().unwrap();
    assert_eq!(exit.exit_code, 0);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    assert!(text.contains("33 77"), "{text:?}");
    assert!(stdout_of(&env.log(&p)).contains("33 77"));
    env.assert_clean(&p);
}
both_runtimes!(terminal);

fn exec(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    let mut p = env.plan(&["sleep", "1000"]);
    p.user_spec = Some("alice".into());
    let _h = env.spawn(&p, false).unwrap();
    let out_path = p.bundle.join("exec.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let req = ExecRequest {
        args: vec!["sh".into(), "-c".into(), "echo hi $E; id -u; exit 5".into()],
        env: vec!["E=x".into()],
        ..Default::default()
    };
    let as_root = ExecRequest {
        args: vec!["id".into(), "-u".into()],
        user_spec: Some("0".into()),
        ..Default::default()
    };
    let out2 = p.bundle.join("exec2.out");
    let f2 = std::fs::File::create(&out2).unwrap();
    assert_eq!(
        monitor::exec(
            &p,
            &as_root,
            (Stdio::null(), Stdio::from(f2), Stdio::null())
        )
        .unwrap(),
        0
    );
    assert_eq!(std::fs::read_to_string(&out2).unwrap(), "0\n");
    let code = monitor::exec(
        &p,
        &req,
        (
            Stdio::null(),
            Stdio::from(out.try_clone().unwrap()),
            Stdio::from(out),
        ),
    )
    .unwrap();
    assert_eq!(code, 5);
    // The container's user (alice) is the default.
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "hi x\n1000\n");
    // A missing command is Docker's exec error.
    let bad = ExecRequest {
        args: vec!["/nope".into()],
        ..Default::default()
    };
    let e = monitor::exec(&p, &bad, (Stdio::null(), Stdio::null(), Stdio::null())).unwrap_err();
    assert!(e.to_string().starts_with("OCI runtime exec failed"), "{e}");
    assert_eq!(e.exit_code(), 127);
    // With a terminal: the output comes through the relay.
    let (r, w) = rustix::pipe::pipe().unwrap();
    let treq = ExecRequest {
        args: vec!["sh".into(), "-c".into(), "tty; exit 7".into()],
        tty: true,
        ..Default::default()
    };
    let code = monitor::exec_tty(&p, &treq, None, w.as_fd()).unwrap();
    drop(w);
    let mut text = String::new();
    std::fs::File::from(r).read_to_string(&mut text).unwrap();
    assert_eq!(code, 7);
    assert!(text.starts_with("/dev/pts/"), "{text:?}");
    monitor::stop(&env.runtime, &p.id, &p.bundle, 9, Duration::from_secs(1)).unwrap();
    env.assert_clean(&p);
}
both_runtimes!(exec);

/// Timing of `/bin/true`: the bare runtime (`run` of a prepared bundle) against carrel's path
/// (monitor spawn, overlay mount, config, create, start, wait, delete, unmount). Printed, not
/// asserted (a benchmark is not a test): `cargo test --release -- --nocapture timing`.
fn timing(rt: &str) {
    let Some(mut env) = Env::new(rt) else { return };
    const N: usize = 15;
    // Interleaved, medians: the machine's load varies. Bare: `RT run` of the same config on an
    // already mounted root (mount and config not timed). carrel: monitor spawn to exit report
    // (everything: spawn, mount, config, run --detach, wait, unmount, records).
    let mut bare = Vec::new();
    let mut full = Vec::new();
    let mut until_started = Vec::new();
    let mounter = carrel_mount::KernelMounter::new();
    for _ in 0..N {
        let p = env.plan(&["/bin/true"]);
        carrel_mount::Mounter::mount_all(&mounter, &p.rootfs_mounts, &p.rootfs).unwrap();
        spec::write_config(&p.bundle, &spec::oci_spec(&p).unwrap()).unwrap();
        let t = Instant::now();
        let st = Command::new(&env.runtime.path)
            .arg("--root")
            .arg(&env.runtime.state_root)
            .args(["run", "--bundle"])
            .arg(&p.bundle)
            .arg(&p.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        bare.push(t.elapsed());
        assert!(st.success());
        carrel_mount::Mounter::unmount(&mounter, &p.rootfs, false).unwrap();

        let p = env.plan(&["/bin/true"]);
        let t = Instant::now();
        let h = env.spawn(&p, false).unwrap();
        until_started.push(t.elapsed());
        let exit = h.wait_exit().unwrap().unwrap();
        full.push(t.elapsed());
        assert_eq!(exit.exit_code, 0);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (bare, full, until_started) = (
        median(&mut bare),
        median(&mut full),
        median(&mut until_started),
    );
    // The steps alone, in this process (no monitor): where the time goes.
    let p = env.plan(&["/bin/true"]);
    p.save(&p.bundle).unwrap();
    let t0 = Instant::now();
    carrel_mount::Mounter::mount_all(
        &carrel_mount::KernelMounter::new(),
        &p.rootfs_mounts,
        &p.rootfs,
    )
    .unwrap();
    let t1 = Instant::now();
    spec::write_config(&p.bundle, &spec::oci_spec(&p).unwrap()).unwrap();
    let t2 = Instant::now();
    let pid_file = p.bundle.join("pid");
    env.runtime
        .create(
            &p.id,
            &p.bundle,
            &pid_file,
            None,
            (Stdio::null(), Stdio::null(), Stdio::null()),
        )
        .unwrap();
    let t3 = Instant::now();
    env.runtime.start(&p.id, None).unwrap();
    let t4 = Instant::now();
    while env
        .runtime
        .state(&p.id)
        .unwrap()
        .is_some_and(|s| s.status != "stopped")
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let t5 = Instant::now();
    env.runtime.delete(&p.id, true).unwrap();
    let t6 = Instant::now();
    carrel_mount::Mounter::unmount(&carrel_mount::KernelMounter::new(), &p.rootfs, false).unwrap();
    let t7 = Instant::now();
    eprintln!(
        "timing {rt}: bare `{rt} run` {:.1} ms; carrel monitor path {:.1} ms (medians of {N}; until started {:.1} ms); steps in-process: mount {:.1}, config {:.1}, create {:.1}, start {:.1}, wait+state {:.1}, delete {:.1}, unmount {:.1} ms",
        ms(bare),
        ms(full),
        ms(until_started),
        ms(t1 - t0),
        ms(t2 - t1),
        ms(t3 - t2),
        ms(t4 - t3),
        ms(t5 - t4),
        ms(t6 - t5),
        ms(t7 - t6)
    );
}
both_runtimes!(timing);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn probe_lists_working_runtimes() {
    if !is_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let probe = RuntimeProbe::get(root.path());
    let first = t.elapsed();
    let t = Instant::now();
    let again = RuntimeProbe::get(root.path());
    let cached = t.elapsed();
    assert_eq!(probe, again);
    eprintln!(
        "runtimes: {:?}, default {:?} (probe {:.1} ms, cached {:.2} ms): {:?}",
        probe.working(),
        probe.default_name(),
        ms(first),
        ms(cached),
        probe.runtimes
    );
    if let Some(d) = probe.default_name() {
        let rt = probe.select("", root.path()).unwrap();
        assert_eq!(rt.name, d);
        assert_eq!(rt.state_root, root.path().join("runtime").join(d));
    }
}
