//! Containers for real: busybox containers run through the `carrel` binary with crun (the
//! default) and runc, on copy-on-write roots. What a user checks: exit codes, output streams,
//! `ps`/`inspect`/`logs`, what is on disk and what is mounted, and that nothing outlives a
//! container that is gone — no mount, no monitor, no container process, no runtime state, no
//! cgroup (every test ends with [`Ctr::finish`], and `nothing_is_left_behind` runs a mixed
//! workload and checks the whole data root afterwards).
//!
//! Docker's answers are the reference: exit status 125 for a `run` that fails before the
//! process starts, 126/127 for an entrypoint that cannot be executed or found, its messages for
//! unknown objects, name conflicts and removal of a running container.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::*;

// ---- the test root --------------------------------------------------------------------------

/// A fresh data root with the busybox image, remembering every container id it has seen (for
/// the cgroup check at the end). [`TestRoot`]'s methods are reachable through `Deref`; `run`,
/// `ok` and `run_cmd` are shadowed to record ids.
struct Ctr {
    t: TestRoot,
    seen: Mutex<BTreeSet<String>>,
}

impl std::ops::Deref for Ctr {
    type Target = TestRoot;
    fn deref(&self) -> &TestRoot {
        &self.t
    }
}

/// How long a container may take to reach a state the test waits for.
const SETTLE: Duration = Duration::from_secs(20);

impl Ctr {
    fn new(name: &str) -> Ctr {
        let t = TestRoot::new(&format!("ctr-{name}"));
        busybox(&t);
        Ctr {
            t,
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    fn note(&self) {
        let ids = list_dir(&self.path("containers"));
        self.seen.lock().unwrap().extend(ids);
    }

    fn note_id(&self, id: &str) {
        self.seen.lock().unwrap().insert(id.to_string());
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let out = self.t.run(args);
        self.note();
        out
    }

    fn run_cmd(&self, cmd: Command, input: Input) -> Output {
        let out = self.t.run_cmd(cmd, input);
        self.note();
        out
    }

    fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(out.success(), "command failed: {out:?}");
        out.stdout
    }

    /// Run a command that must fail with exit status `code` and exactly one `Error: …` line on
    /// stderr; returns that line without the `Error: ` prefix.
    fn err<S: AsRef<OsStr>>(&self, args: &[S], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(out.code(), Some(code), "exit status: {out:?}");
        one_line_error(&out.stderr)
            .strip_prefix("Error: ")
            .unwrap()
            .to_string()
    }

    /// `run ARGS` that must succeed; returns its stdout.
    fn out(&self, args: &[&str]) -> String {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        self.ok(&a)
    }

    /// `container inspect -f TEMPLATE NAME`, trimmed.
    fn ins(&self, name: &str, template: &str) -> String {
        self.ok(&["container", "inspect", "-f", template, name])
            .trim_end()
            .to_string()
    }

    fn status(&self, name: &str) -> String {
        self.ins(name, "{{.State.Status}}")
    }

    fn id_of(&self, name: &str) -> String {
        let id = self.ins(name, "{{.Id}}");
        self.note_id(&id);
        id
    }

    /// The container's writable layer (its overlay upper directory).
    fn upper(&self, name: &str) -> PathBuf {
        PathBuf::from(self.ins(name, "{{.GraphDriver.Data.UpperDir}}"))
    }

    /// The image's own layer directory.
    fn image_layer(&self) -> PathBuf {
        PathBuf::from(
            self.ok(&[
                "image",
                "inspect",
                "-f",
                "{{.GraphDriver.Data.UpperDir}}",
                "busybox",
            ])
            .trim(),
        )
    }

    /// Full ids of all containers (`ps -a -q --no-trunc`), in `ps` order.
    fn ids(&self) -> Vec<String> {
        self.ok(&["ps", "-a", "-q", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Wait until the container's state is `status`.
    fn wait_status(&self, name: &str, status: &str) {
        let mut last = String::new();
        let ok = wait_until(SETTLE, || {
            last = self
                .run(&["container", "inspect", "-f", "{{.State.Status}}", name])
                .stdout
                .trim()
                .to_string();
            last == status
        });
        assert!(ok, "{name} is {last:?}, not {status:?}");
    }

    /// Wait until the container's log contains `needle`.
    fn wait_log(&self, name: &str, needle: &str) {
        let mut last = String::new();
        let ok = wait_until(SETTLE, || {
            last = self.run(&["logs", name]).stdout;
            last.contains(needle)
        });
        assert!(ok, "{name} never logged {needle:?}; log: {last:?}");
    }

    /// Every container monitor of this root, as `(pid, command line)`.
    fn monitors(&self) -> Vec<(u32, String)> {
        processes_naming(self.root())
            .into_iter()
            .filter(|(_, c)| c.contains(" container-monitor "))
            .collect()
    }

    /// The pid of a container's monitor (found by its command line, as a user would).
    fn monitor_pid(&self, id: &str) -> u32 {
        let needle = format!("container-monitor {id}");
        let found: Vec<u32> = processes_naming(self.root())
            .into_iter()
            .filter(|(_, c)| c.ends_with(&needle))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(found.len(), 1, "one monitor for {id}: {found:?}");
        found[0]
    }

    /// What the runtimes and the kernel still keep for containers this root has seen: cgroups
    /// named after them.
    fn cgroups(&self) -> Vec<PathBuf> {
        self.note();
        let seen = self.seen.lock().unwrap().clone();
        let mut out = Vec::new();
        for ctrl in list_dir(Path::new("/sys/fs/cgroup")) {
            for id in &seen {
                let p = Path::new("/sys/fs/cgroup")
                    .join(&ctrl)
                    .join("carrel")
                    .join(id);
                if p.exists() {
                    out.push(p);
                }
            }
        }
        out
    }

    /// No container is running and nothing of one that ran is left: no mount under the test
    /// directory, no monitor or client process, no container process, no runtime state, no
    /// cgroup. Waits (bounded) for monitors that are still finishing.
    #[track_caller]
    fn assert_quiet(&self) {
        let ok = wait_until(SETTLE, || {
            self.leftovers().is_empty() && self.cgroups().is_empty()
        });
        assert!(
            ok,
            "left behind: {:#?}\ncgroups: {:#?}",
            self.leftovers(),
            self.cgroups()
        );
    }

    /// Remove every container (`rm -f`) and check that the data root is back to the image alone
    /// and nothing of the containers is left anywhere.
    fn finish(self) {
        let ids = self.ids();
        if !ids.is_empty() {
            let mut args = vec!["rm".to_string(), "-f".to_string()];
            args.extend(ids);
            self.ok(&args);
        }
        assert_eq!(self.ids(), Vec::<String>::new());
        self.assert_quiet();
        assert_eq!(list_dir(&self.path("containers")), Vec::<String>::new());
        // Only image layers remain in the storage driver.
        let mut layers: BTreeSet<String> = BTreeSet::new();
        for img in self.image_ids() {
            for d in self.layer_dirs_of(&img) {
                layers.insert(
                    d.parent()
                        .unwrap()
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        let dirs: BTreeSet<String> = self.driver_dirs().into_iter().collect();
        assert_eq!(dirs, layers, "storage driver directories");
        self.assert_check_clean();
    }
}

/// What a failed command must not have changed.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    ids: Vec<String>,
    container_dirs: Vec<String>,
    driver_dirs: Vec<String>,
    mounts: Vec<PathBuf>,
    runtime_states: Vec<String>,
}

impl Ctr {
    /// Wait until monitors of containers that ended are done (the runtime keeps state only for
    /// the running ones).
    #[track_caller]
    fn settle(&self) {
        let ok = wait_until(SETTLE, || {
            self.runtime_states().len() == self.ok(&["ps", "-q"]).lines().count()
        });
        assert!(
            ok,
            "runtime state of ended containers: {:?}",
            self.runtime_states()
        );
    }

    /// After containers are gone: their records and mounts at once (no list shows them, their
    /// names are free), and once their monitors are done (after reporting the exit they delete
    /// the runtime's state and, for `--rm`, the container's directory and writable layer)
    /// everything as in `empty`. While a monitor still deletes, `system check` finds nothing
    /// wrong: the files are work in flight under the removal's lease.
    #[track_caller]
    fn assert_gone(&self, empty: &Snapshot) {
        let now = self.snapshot();
        assert_eq!((&now.ids, &now.mounts), (&empty.ids, &empty.mounts));
        self.assert_check_clean();
        self.settle();
        wait_until(SETTLE, || self.snapshot() == *empty);
        let now = self.snapshot();
        let extra: Vec<(String, Vec<String>)> = now
            .container_dirs
            .iter()
            .filter(|d| !empty.container_dirs.contains(d))
            .map(|d| (d.clone(), list_dir(&self.path("containers").join(d))))
            .collect();
        assert!(extra.is_empty(), "container directories left: {extra:?}");
        assert_eq!(now, *empty);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            ids: self.ids(),
            container_dirs: list_dir(&self.path("containers")),
            driver_dirs: self.driver_dirs(),
            mounts: self.mounts(),
            runtime_states: self.runtime_states(),
        }
    }
}

/// Lines of a child's output, read by a thread as they come.
struct Lines {
    rx: mpsc::Receiver<String>,
    got: Vec<String>,
}

impl Lines {
    fn new(r: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            got: Vec::new(),
        }
    }

    /// Wait for a line containing `needle`; panics after `SETTLE`.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + SETTLE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    self.got.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; got {:?}", self.got),
            }
        }
    }
}

/// Wait (bounded) for a child to end; kills it and panics when it does not.
fn wait_child(root: &TestRoot, child: &mut Child, what: &str) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(SETTLE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    root.forget_pid(child.id());
    match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end");
        }
    }
}

/// A session on a new pseudo-terminal: carrel runs with the terminal's slave side as its
/// controlling terminal and stdio; the test reads and writes the master side.
struct PtySession {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    done: Arc<AtomicBool>,
}

impl PtySession {
    fn start(root: &Ctr, args: &[&str]) -> PtySession {
        let (master, slave) = openpty();
        let mut cmd = root.command(args);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = root.spawn_cmd(cmd);
        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        {
            let mut m = master.try_clone().unwrap();
            let output = output.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // EIO once every slave descriptor is closed.
                while let Ok(n) = m.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                done.store(true, Ordering::SeqCst);
            });
        }
        PtySession {
            child,
            master,
            output,
            done,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn expect(&self, needle: &str) {
        assert!(
            wait_until(SETTLE, || self.text().contains(needle)),
            "terminal never showed {needle:?}: {:?}",
            self.text()
        );
    }

    fn send(&mut self, data: &[u8]) {
        self.master.write_all(data).unwrap();
    }

    /// Wait for carrel to exit; returns its exit code and everything the terminal showed.
    fn finish(mut self, root: &TestRoot) -> (Option<i32>, String) {
        let status = wait_child(root, &mut self.child, "the terminal session");
        wait_until(Duration::from_secs(5), || self.done.load(Ordering::SeqCst));
        (status.code(), self.text())
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

// ---- run: exit codes, streams, stdin, through both runtimes -------------------------------

/// The basic run cases with `--runtime rt` (`None`: the default), which must be `expect_rt`.
fn basics(name: &str, rt: Option<&str>, expect_rt: &str) {
    let r = Ctr::new(name);
    let run = |extra: &[&str]| -> Output {
        let mut a = vec!["run"];
        if let Some(rt) = rt {
            a.extend(["--runtime", rt]);
        }
        a.extend_from_slice(extra);
        r.run(&a)
    };
    // Exit codes pass through; stdout and stderr stay apart.
    let o = run(&["--name", "zero", "busybox", "true"]);
    assert_eq!(
        (o.code(), o.stdout.as_str(), o.stderr.as_str()),
        (Some(0), "", "")
    );
    let o = run(&[
        "--name",
        "three",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; echo out2; exit 3",
    ]);
    assert_eq!(o.code(), Some(3), "{o:?}");
    assert_eq!(o.stdout, "out\nout2\n");
    assert_eq!(o.stderr, "err\n");
    assert_eq!(
        r.ins("three", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 3"
    );
    assert_eq!(r.ins("three", "{{.HostConfig.Runtime}}"), rt.unwrap_or(""));
    // The logs keep the streams apart too.
    let l = r.run(&["logs", "three"]);
    assert_eq!(
        (l.stdout.as_str(), l.stderr.as_str()),
        ("out\nout2\n", "err\n")
    );
    // stdin piped with -i, also more than a pipe buffer of it.
    let mut a = vec!["run"];
    if let Some(rt) = rt {
        a.extend(["--runtime", rt]);
    }
    a.extend(["-i", "busybox", "cat"]);
    assert_eq!(r.t.ok_stdin(&a, b"hi\n"), "hi\n");
    let big: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    let o = r.t.run_stdin(&a, big.as_bytes());
    assert!(o.success(), "{o:?}");
    assert!(
        o.stdout == big,
        "{} bytes back of {}",
        o.stdout.len(),
        big.len()
    );
    // Without -i the container's stdin is empty.
    a.retain(|x| *x != "-i");
    assert_eq!(r.t.ok_stdin(&a, b"ignored\n"), "");
    r.note();

    // Killed: 137, through `carrel kill` while `run` is attached.
    let mut a = vec!["run", "--name", "killed"];
    if let Some(rt) = rt {
        a.extend(["--runtime", rt]);
    }
    a.extend(["busybox", "sleep", "1000"]);
    let child = r.spawn(&a, Stdio::null(), Stdio::piped(), Stdio::piped());
    r.wait_status("killed", "running");
    let id = r.id_of("killed");
    // It runs under the runtime asked for: its state is in that runtime's directory.
    assert!(
        r.runtime_states().contains(&format!("{expect_rt}/{id}")),
        "{:?}",
        r.runtime_states()
    );
    assert_eq!(r.ok(&["kill", "killed"]), "killed\n");
    let o = r.wait(child, "run killed");
    assert_eq!(o.code(), Some(137), "{o:?}");
    assert_eq!(
        r.ins("killed", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    // Detached, then `wait`.
    let mut a = vec!["run", "-d"];
    if let Some(rt) = rt {
        a.extend(["--runtime", rt]);
    }
    a.extend(["busybox", "sh", "-c", "sleep 0.3; exit 9"]);
    let id = r.ok(&a).trim().to_string();
    assert!(
        carrel_core::digest::is_hex64(&id),
        "run -d prints the id: {id:?}"
    );
    assert_eq!(r.ok(&["wait", &id]), "9\n");
    // An entrypoint that does not exist: 127; one that cannot be executed: 126. (crun says
    // "executable file `/x` not found", runc "stat /x: no such file or directory", as in Docker.)
    for (cmd, code, words) in [
        (
            "/nonexistent",
            127,
            &["not found", "no such file or directory"][..],
        ),
        ("nonexistent", 127, &["executable file", "not found"][..]),
        (
            "/etc/passwd",
            126,
            &["permission denied", "permission denied"][..],
        ),
    ] {
        let mut a = vec!["run", "--rm"];
        if let Some(rt) = rt {
            a.extend(["--runtime", rt]);
        }
        a.extend(["busybox", cmd]);
        let e = r.err(&a, code);
        assert!(e.starts_with("OCI runtime create failed: "), "{e}");
        let e = e.to_lowercase();
        assert!(e.contains(words[0]) || e.contains(words[1]), "{cmd}: {e}");
    }
    r.finish();
}

#[test]
fn run_basics_default_runtime_is_crun() {
    // `info` lists both runtimes, crun first and default.
    let r = TestRoot::new("ctr-info");
    let info = r.ok(&["info"]);
    assert!(info.contains("\nRuntimes: crun runc\n"), "{info}");
    assert!(info.contains("\nDefault Runtime: crun\n"), "{info}");
    drop(r);
    basics("basics-crun", None, "crun");
}

#[test]
fn run_basics_with_runc() {
    basics("basics-runc", Some("runc"), "runc");
}

// ---- run options --------------------------------------------------------------------------

#[test]
fn run_options_env_user_workdir_entrypoint_hostname_network_read_only() {
    let r = Ctr::new("options");
    // -e, --env-file, a bare -e KEY from carrel's environment (dropped when unset). Later
    // values win; the image's PATH stays; HOSTNAME and HOME as Docker sets them.
    let env_file = r.scratch("env.list");
    std::fs::write(&env_file, "# a comment\n\nA=1\nB=two words\nX=from-file\n").unwrap();
    let mut cmd = r.command(&[
        "run",
        "--env-file",
        s(&env_file),
        "-e",
        "X=1",
        "-e",
        "FROM_HOST",
        "-e",
        "CARREL_TEST_UNSET_VAR",
        "--hostname",
        "envhost",
        "busybox",
        "env",
    ]);
    cmd.env("FROM_HOST", "from host")
        .env_remove("CARREL_TEST_UNSET_VAR");
    let o = r.run_cmd(cmd, Input::None);
    assert!(o.success(), "{o:?}");
    let env: BTreeSet<&str> = o.stdout.lines().collect();
    let want: BTreeSet<&str> = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME=envhost",
        "A=1",
        "B=two words",
        "X=1",
        "FROM_HOST=from host",
        "HOME=/root",
    ]
    .into_iter()
    .collect();
    assert_eq!(env, want);
    // A bad env file is refused before anything is made.
    r.settle();
    let before = r.snapshot();
    let e = r.err(
        &["run", "--env-file", "/nonexistent/env", "busybox", "true"],
        125,
    );
    assert!(e.contains("/nonexistent/env"), "{e}");
    assert_eq!(r.snapshot(), before);

    // -w: used, and created when missing (as a change of the container).
    assert_eq!(r.out(&["-w", "/tmp", "busybox", "pwd"]), "/tmp\n");
    assert_eq!(
        r.out(&["--name", "wd", "-w", "/new/dir", "busybox", "pwd"]),
        "/new/dir\n"
    );
    assert_eq!(r.ok(&["diff", "wd"]), "A /new\nA /new/dir\n");

    // -u by name, by uid:gid (no entry needed), HOME from the user's entry or /.
    assert_eq!(
        r.out(&[
            "-u",
            "nobody",
            "busybox",
            "sh",
            "-c",
            "id -u; id -g; echo $HOME; id -un"
        ]),
        "65534\n65534\n/home\nnobody\n"
    );
    assert_eq!(
        r.out(&[
            "-u",
            "1234:5678",
            "busybox",
            "sh",
            "-c",
            "id -u; id -g; echo $HOME"
        ]),
        "1234\n5678\n/\n"
    );
    assert_eq!(
        r.out(&["-u", "www-data:mail", "busybox", "sh", "-c", "id -u; id -g"]),
        "33\n12\n"
    );
    assert_eq!(r.ins("wd", "{{.Config.User}}"), "");
    // A user the image does not have: Docker's message, 125, the container stays created
    // (as Docker keeps it) and nothing runs or is mounted for it.
    let e = r.err(
        &["run", "--name", "nouser", "-u", "bob", "busybox", "true"],
        125,
    );
    assert_eq!(
        e,
        "unable to find user bob: no matching entries in passwd file"
    );
    assert_eq!(r.status("nouser"), "created");
    assert_eq!(
        r.ins("nouser", "{{.State.Error}}"),
        "unable to find user bob: no matching entries in passwd file"
    );
    let e = r.err(&["run", "-u", "nobody:nosuchgroup", "busybox", "true"], 125);
    assert_eq!(
        e,
        "unable to find group nosuchgroup: no matching entries in group file"
    );
    r.assert_quiet();

    // --entrypoint replaces the image's; the arguments follow it.
    assert_eq!(
        r.out(&[
            "--name",
            "ep",
            "--entrypoint",
            "echo",
            "busybox",
            "hello",
            "world"
        ]),
        "hello world\n"
    );
    assert_eq!(r.ins("ep", "{{.Path}} {{.Args}}"), "echo [hello world]");

    // --hostname, and the default: the short id.
    assert_eq!(
        r.out(&[
            "--hostname",
            "myhost",
            "busybox",
            "sh",
            "-c",
            "hostname; cat /etc/hostname"
        ]),
        "myhost\nmyhost\n"
    );
    let cid = r.scratch("cid");
    let out = r.out(&["--cidfile", s(&cid), "busybox", "hostname"]);
    let id = std::fs::read_to_string(&cid).unwrap();
    r.note_id(&id);
    assert_eq!(out, format!("{}\n", &id[..12]));

    // --network none (the default): only a loopback device; host: the host's devices.
    let host_devs = list_dir(Path::new("/sys/class/net"));
    assert!(
        host_devs.len() > 1,
        "the host has more than lo: {host_devs:?}"
    );
    assert_eq!(r.out(&["busybox", "ls", "/sys/class/net"]), "lo\n");
    assert_eq!(
        r.out(&["--network", "none", "busybox", "ls", "/sys/class/net"]),
        "lo\n"
    );
    let seen: Vec<String> = r
        .out(&["--network", "host", "busybox", "ls", "/sys/class/net"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(seen, host_devs);
    assert_eq!(
        r.out(&["--net", "host", "busybox", "hostname"])
            .trim()
            .len(),
        12,
        "a host-network container keeps its own host name"
    );

    // --read-only: writes fail everywhere on the root (also /tmp and /etc/hosts, as Docker
    // mounts its network files read-only then), but not on the runtime's tmpfs mounts.
    let script = "touch /x; touch /tmp/x; echo 1 >> /etc/hosts; \
                  echo shm > /dev/shm/x && cat /dev/shm/x; touch /dev/x && echo dev";
    let o = r.run(&[
        "run",
        "--name",
        "ro",
        "--read-only",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(o.success(), "{o:?}");
    assert_eq!(o.stdout, "shm\ndev\n");
    let errs: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs.iter().all(|l| l.ends_with("Read-only file system")),
        "{errs:?}"
    );
    assert_eq!(r.ins("ro", "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(r.ok(&["diff", "ro"]), "");
    // Without it the same writes land in the container's layer.
    let o = r.run(&["run", "--name", "rw", "busybox", "sh", "-c", script]);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("shm\ndev\n", ""));
    assert_eq!(r.ok(&["diff", "rw"]), "C /tmp\nA /tmp/x\nA /x\n");
    assert!(r.upper("rw").join("x").exists());
    r.finish();
}

// ---- copy-on-write isolation ----------------------------------------------------------------

#[test]
fn copy_on_write_isolation() {
    let r = Ctr::new("cow");
    let image_layer = r.image_layer();
    let before = tree(&image_layer);
    // Two containers of one image write the same paths: a new file, an appended image file, a
    // deleted image file. Each run first shows what it finds.
    let script = "cat /data/f 2>/dev/null || echo none; \
                  test -e /etc/group && echo group || echo nogroup; tail -n 1 /etc/passwd; \
                  mkdir -p /data; echo $WHO > /data/f; echo $WHO >> /etc/passwd; rm /etc/group";
    let original_last = "nobody:x:65534:65534:nobody:/home:/bin/false";
    for who in ["one", "two"] {
        r.ok(&[
            "create",
            "--name",
            who,
            "-e",
            &format!("WHO={who}"),
            "busybox",
            "sh",
            "-c",
            script,
        ]);
    }
    for who in ["one", "two"] {
        let o = r.run(&["start", "-a", who]);
        assert!(o.success(), "{o:?}");
        assert_eq!(
            o.stdout,
            format!("none\ngroup\n{original_last}\n"),
            "{who} sees only the image"
        );
    }
    // Stopped and started again, each keeps (only) its own writes.
    for who in ["one", "two"] {
        let o = r.run(&["start", "-a", who]);
        assert_eq!(o.stdout, format!("{who}\nnogroup\n{who}\n"), "{who}: {o:?}");
        let upper = r.upper(who);
        assert_eq!(
            std::fs::read_to_string(upper.join("data/f")).unwrap(),
            format!("{who}\n")
        );
        let passwd = std::fs::read_to_string(upper.join("etc/passwd")).unwrap();
        assert!(
            passwd.ends_with(&format!("{original_last}\n{who}\n{who}\n")),
            "{passwd}"
        );
    }
    // Running side by side: a write in one is not seen by the other.
    for n in ["r1", "r2"] {
        r.ok(&["run", "-d", "--name", n, "busybox", "sleep", "1000"]);
    }
    r.ok(&["exec", "r1", "sh", "-c", "echo mine > /shared; rm /bin/ls"]);
    let o = r.run(&["exec", "r2", "cat", "/shared"]);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("No such file or directory"), "{o:?}");
    assert_eq!(
        r.run(&["exec", "r2", "ls", "/data"]).code(),
        Some(1),
        "r2 has no /data"
    );
    assert_eq!(r.ok(&["exec", "r1", "cat", "/shared"]), "mine\n");
    assert_eq!(r.run(&["exec", "r1", "ls", "/"]).code(), Some(127));
    assert!(r.run(&["exec", "r2", "ls", "/"]).success());
    // A new container sees the image as it was.
    assert_eq!(
        r.out(&[
            "--rm",
            "busybox",
            "sh",
            "-c",
            "tail -n 1 /etc/passwd; ls /etc/group; ls /shared 2>&1; true"
        ]),
        format!("{original_last}\n/etc/group\nls: /shared: No such file or directory\n")
    );
    // The image's layer is byte-for-byte what it was.
    assert_trees_eq(&tree(&image_layer), &before, "the image layer");
    // rm takes the container's layer directory with it, and only it.
    let one_dir = r.upper("one").parent().unwrap().to_path_buf();
    let two_dir = r.upper("two").parent().unwrap().to_path_buf();
    let one_id = r.id_of("one");
    assert!(one_dir.is_dir() && two_dir.is_dir());
    assert_eq!(r.ok(&["rm", "one"]), "one\n");
    assert!(!one_dir.exists(), "{} left", one_dir.display());
    assert!(!r.path("containers").join(&one_id).exists());
    assert!(two_dir.is_dir());
    assert_trees_eq(&tree(&image_layer), &before, "the image layer");
    r.finish();
}

#[test]
fn diff_commit_export_cp_round_trips() {
    let r = Ctr::new("fsops");
    r.ok(&[
        "run",
        "--name",
        "ww",
        "busybox",
        "sh",
        "-c",
        "echo new > /newfile; echo changed >> /etc/passwd; rm /etc/group; \
         mkdir -p /d/e; echo deep > /d/e/f",
    ]);
    assert_eq!(
        r.ok(&["diff", "ww"]),
        "A /d\nA /d/e\nA /d/e/f\nC /etc\nD /etc/group\nC /etc/passwd\nA /newfile\n"
    );
    // commit: a new image that has the changes.
    let img = r.ok(&["commit", "ww", "ww-img:1"]).trim().to_string();
    assert!(img.starts_with("sha256:"), "{img}");
    assert_eq!(
        r.out(&[
            "--rm",
            "ww-img:1",
            "sh",
            "-c",
            "cat /newfile /d/e/f; tail -n 1 /etc/passwd; test -e /etc/group || echo gone"
        ]),
        "new\ndeep\nchanged\ngone\n"
    );
    // export: the merged view.
    let o = r.run(&["export", "ww"]);
    assert!(o.success());
    let mut entries = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(o.stdout_raw.as_slice());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.insert(name, data);
    }
    assert_eq!(entries["newfile"], b"new\n");
    assert_eq!(entries["d/e/f"], b"deep\n");
    assert!(entries["etc/passwd"].ends_with(b"changed\n"));
    assert!(!entries.contains_key("etc/group"));
    assert!(entries.contains_key("bin/busybox"));
    // cp out: a file, and a directory as a tar stream.
    let out = r.scratch("f");
    r.ok(&["cp", "ww:/d/e/f", s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), b"deep\n");
    let o = r.run(&["cp", "ww:/d", "-"]);
    let mut names = Vec::new();
    for e in tar::Archive::new(o.stdout_raw.as_slice())
        .entries()
        .unwrap()
    {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.contains(&"d/e/f".to_string()), "{names:?}");
    // cp in: into a created container, which then runs with it.
    let src = r.scratch("fromhost");
    std::fs::write(&src, b"from the host\n").unwrap();
    r.ok(&["create", "--name", "cpc", "busybox", "cat", "/fromhost"]);
    r.ok(&["cp", s(&src), "cpc:/fromhost"]);
    assert_eq!(r.ok(&["diff", "cpc"]), "A /fromhost\n");
    let o = r.run(&["start", "-a", "cpc"]);
    assert_eq!(
        (o.code(), o.stdout.as_str()),
        (Some(0), "from the host\n"),
        "{o:?}"
    );
    // ... and into a running one, seen at once.
    r.ok(&["run", "-d", "--name", "live", "busybox", "sleep", "1000"]);
    r.ok(&["cp", s(&src), "live:/tmp/"]);
    assert_eq!(
        r.ok(&["exec", "live", "cat", "/tmp/fromhost"]),
        "from the host\n"
    );
    r.ok(&["rm", "-f", "live", "ww", "cpc"]);
    r.ok(&["rmi", "ww-img:1"]);
    r.finish();
}

// ---- lifecycle ------------------------------------------------------------------------------

/// A shell loop that says `ready`, answers `USR1`, and exits 0 on `TERM`.
const TRAPPING: &str = "trap 'echo term; exit 0' TERM; trap 'echo usr1' USR1; \
                        echo ready; while true; do sleep 0.1; done";
/// A shell loop that ignores `TERM`.
const STUBBORN: &str = "trap '' TERM; echo ready; while true; do sleep 0.1; done";

#[test]
fn create_start_stop_kill_restart_wait() {
    let r = Ctr::new("lifecycle");
    // create + start -a: output, exit code.
    let id = r
        .ok(&[
            "create",
            "--name",
            "made",
            "busybox",
            "sh",
            "-c",
            "echo hello; echo oops >&2; exit 2",
        ])
        .trim()
        .to_string();
    assert!(carrel_core::digest::is_hex64(&id), "{id}");
    assert_eq!(r.status("made"), "created");
    assert_eq!(
        r.ins("made", "{{.State.Pid}} {{.State.StartedAt}}"),
        "0 0001-01-01T00:00:00Z"
    );
    let o = r.run(&["start", "-a", "made"]);
    assert_eq!(
        (o.code(), o.stdout.as_str(), o.stderr.as_str()),
        (Some(2), "hello\n", "oops\n")
    );
    assert_eq!(
        r.ins("made", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 2"
    );
    // start (not attached) prints the name; a started container runs.
    assert_eq!(r.ok(&["start", "made"]), "made\n");
    assert_eq!(r.ok(&["wait", "made"]), "2\n");

    // Starting a running container does nothing.
    r.ok(&[
        "run", "-d", "--name", "trapper", "busybox", "sh", "-c", TRAPPING,
    ]);
    r.wait_log("trapper", "ready");
    let pid = r.ins("trapper", "{{.State.Pid}}");
    assert_eq!(r.ok(&["start", "trapper"]), "trapper\n");
    assert_eq!(r.ins("trapper", "{{.State.Pid}}"), pid);
    assert_eq!(r.status("trapper"), "running");
    // kill -s USR1 is delivered (the shell traps it) and the container keeps running.
    assert_eq!(r.ok(&["kill", "-s", "USR1", "trapper"]), "trapper\n");
    r.wait_log("trapper", "usr1");
    assert_eq!(r.status("trapper"), "running");
    // stop: TERM, which it handles: a clean exit, well before the timeout.
    let t = Instant::now();
    assert_eq!(r.ok(&["stop", "trapper"]), "trapper\n");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(
        r.ins("trapper", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0"
    );
    assert!(r.ok(&["logs", "trapper"]).ends_with("term\n"));
    // Stopping a stopped container is fine.
    assert_eq!(r.ok(&["stop", "trapper"]), "trapper\n");
    // One that ignores TERM is killed after -t 1: 137.
    r.ok(&[
        "run", "-d", "--name", "stubborn", "busybox", "sh", "-c", STUBBORN,
    ]);
    r.wait_log("stubborn", "ready");
    let t = Instant::now();
    assert_eq!(r.ok(&["stop", "-t", "1", "stubborn"]), "stubborn\n");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "stop -t 1 took {took:?}"
    );
    assert_eq!(
        r.ins("stubborn", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    // --stop-signal and --stop-timeout of the container are used by stop.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "usr1stop",
        "--stop-signal",
        "USR1",
        "--stop-timeout",
        "1",
        "busybox",
        "sh",
        "-c",
        TRAPPING,
    ]);
    r.wait_log("usr1stop", "ready");
    r.ok(&["stop", "usr1stop"]);
    assert_eq!(r.ins("usr1stop", "{{.State.ExitCode}}"), "137");
    assert!(r.ok(&["logs", "usr1stop"]).contains("usr1"));

    // restart: counts, keeps the writable layer and what is in it.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "busybox",
        "sh",
        "-c",
        &format!("echo start >> /starts; {TRAPPING}"),
    ]);
    r.wait_log("again", "ready");
    let upper = r.upper("again");
    assert_eq!(r.ins("again", "{{.RestartCount}}"), "0");
    assert_eq!(r.ok(&["restart", "again"]), "again\n");
    assert_eq!(r.status("again"), "running");
    assert_eq!(r.ins("again", "{{.RestartCount}}"), "1");
    assert_ne!(r.ins("again", "{{.State.Pid}}"), pid);
    assert_eq!(r.upper("again"), upper);
    assert_eq!(r.ok(&["exec", "again", "cat", "/starts"]), "start\nstart\n");
    // restart of a stopped container starts it.
    r.ok(&["stop", "again"]);
    r.ok(&["restart", "again"]);
    assert_eq!(r.status("again"), "running");
    assert_eq!(r.ins("again", "{{.RestartCount}}"), "2");
    // kill (SIGKILL) and wait: 137.
    assert_eq!(r.ok(&["kill", "again"]), "again\n");
    assert_eq!(r.ok(&["wait", "again"]), "137\n");
    assert_eq!(
        r.ins("again", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    // wait for several, one still running for a while.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "later",
        "busybox",
        "sh",
        "-c",
        "sleep 0.5; exit 5",
    ]);
    assert_eq!(r.ok(&["wait", "later", "made"]), "5\n2\n");
    r.finish();
}

#[test]
fn ps_columns_filters_and_formats() {
    let r = Ctr::new("ps");
    r.ok(&[
        "create",
        "--name",
        "quoted",
        "busybox",
        "sh",
        "-c",
        "echo \"a b\" \\ c",
    ]);
    assert_eq!(
        r.ok(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]),
        "\"sh -c 'echo \\\"a b\\\" \\\\ c'\"\n",
        "Go's quoting of dockerd's command line"
    );
    r.ok(&["rm", "quoted"]);
    r.ok(&[
        "create", "--name", "fresh", "-l", "tier=db", "busybox", "true",
    ]);
    assert_eq!(
        r.run(&["run", "--name", "done3", "busybox", "sh", "-c", "exit 3"])
            .code(),
        Some(3)
    );
    let up_id = r
        .ok(&["run", "-d", "--name", "up", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
    // The table: Docker's header, one row per container, newest first.
    let table = r.ok(&["ps", "-a"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let cols = |l: &str| -> Vec<String> {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        cols(lines[0]),
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ]
    );
    let up = cols(lines[1]);
    assert_eq!(up[0], &up_id[..12]);
    assert_eq!(up[1], "busybox");
    assert_eq!(up[2], "\"sleep 1000\"");
    assert!(up[3].ends_with(" ago"), "{up:?}");
    assert!(up[4].starts_with("Up "), "{up:?}");
    assert_eq!(up[5], "up");
    let done = cols(lines[2]);
    assert!(
        done[4].starts_with("Exited (3) ") && done[4].ends_with(" ago"),
        "{done:?}"
    );
    assert_eq!(done[5], "done3");
    let fresh = cols(lines[3]);
    assert_eq!((fresh[4].as_str(), fresh[5].as_str()), ("Created", "fresh"));
    // Without -a only running containers.
    let running = r.ok(&["ps"]);
    assert_eq!(running.lines().count(), 2, "{running}");
    assert!(
        running.lines().nth(1).unwrap().ends_with(" up"),
        "{running}"
    );
    // Filters, formats, -q, -n, -l, --no-trunc.
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["ps", "--format", "{{.Names}}"];
        a.extend_from_slice(args);
        r.ok(&a).lines().map(str::to_string).collect()
    };
    assert_eq!(names(&["-a", "--filter", "status=exited"]), ["done3"]);
    assert_eq!(names(&["-a", "--filter", "status=created"]), ["fresh"]);
    assert_eq!(names(&["-a", "--filter", "status=running"]), ["up"]);
    assert_eq!(names(&["-a", "--filter", "exited=3"]), ["done3"]);
    assert_eq!(names(&["-a", "--filter", "label=tier=db"]), ["fresh"]);
    assert_eq!(names(&["-a", "--filter", "name=done"]), ["done3"]);
    assert_eq!(names(&["-a"]), ["up", "done3", "fresh"]);
    assert_eq!(names(&["-n", "2"]), ["up", "done3"]);
    assert_eq!(names(&["-l"]), ["up"]);
    assert_eq!(
        r.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}} {{.Command}}"]),
        "up running \"sleep 1000\"\ndone3 exited \"sh -c 'exit 3'\"\nfresh created \"true\"\n"
    );
    let short = r.ok(&["ps", "-q"]);
    assert_eq!(short, format!("{}\n", &up_id[..12]));
    let all = r.ids();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], up_id);
    assert!(all.iter().all(|i| carrel_core::digest::is_hex64(i)));
    let json = r.ok(&["ps", "-a", "--format", "json", "--filter", "name=up"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["Names"], "up");
    assert_eq!(v["State"], "running");
    r.finish();
}

#[test]
fn logs_tail_timestamps_and_follow() {
    let r = Ctr::new("logs");
    // (Pauses between the lines: the two streams are separate pipes, read in turns.)
    r.ok(&[
        "run",
        "--name",
        "lg",
        "busybox",
        "sh",
        "-c",
        "echo a; sleep 0.1; echo b >&2; sleep 0.1; echo c",
    ]);
    let o = r.run(&["logs", "lg"]);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("a\nc\n", "b\n"));
    let o = r.run(&["logs", "--tail", "1", "lg"]);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("c\n", ""));
    let o = r.run(&["logs", "--tail", "2", "lg"]);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("c\n", "b\n"));
    let o = r.run(&["logs", "-n", "0", "lg"]);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("", ""));
    let o = r.run(&["logs", "-t", "lg"]);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{o:?}");
    for (l, text) in lines.iter().zip(["a", "c"]) {
        let (ts, rest) = l.split_once(' ').unwrap();
        assert_eq!(rest, text);
        assert!(chrono_like(ts), "timestamp {ts:?}");
    }
    // -f follows a detached container until it exits.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4; do echo line $i; sleep 0.3; done; exit 4",
    ]);
    let t = Instant::now();
    let mut child = r.spawn(
        &["logs", "-f", "slow"],
        Stdio::null(),
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut lines = Lines::new(child.stdout.take().unwrap());
    lines.expect("line 1");
    assert_eq!(
        r.status("slow"),
        "running",
        "logs -f shows lines while the container runs"
    );
    lines.expect("line 4");
    let st = wait_child(&r, &mut child, "logs -f");
    assert!(st.success());
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(lines.got, ["line 1", "line 2", "line 3", "line 4"]);
    assert_eq!(r.ins("slow", "{{.State.ExitCode}}"), "4");
    // -f on a stopped container prints the log and returns.
    assert_eq!(r.ok(&["logs", "-f", "slow"]).lines().count(), 4);
    // A bad --tail is an error.
    let e = r.err(&["logs", "--tail", "x", "lg"], 1);
    assert!(e.contains("tail"), "{e}");
    r.finish();
}

/// `2024-01-02T03:04:05.123456789Z`.
fn chrono_like(ts: &str) -> bool {
    ts.len() >= 20
        && ts.ends_with('Z')
        && ts.as_bytes()[4] == b'-'
        && ts.as_bytes()[10] == b'T'
        && ts.as_bytes()[13] == b':'
}

#[test]
fn exec_in_a_running_container() {
    let r = Ctr::new("exec");
    r.ok(&[
        "run", "-d", "--name", "ex", "-e", "BASE=1", "-w", "/srv", "busybox", "sleep", "1000",
    ]);
    let o = r.run(&["exec", "ex", "sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(
        (o.code(), o.stdout.as_str(), o.stderr.as_str()),
        (Some(5), "out\n", "err\n")
    );
    // The container's environment and working directory by default, -e/-w/-u to change them.
    assert_eq!(
        r.ok(&["exec", "ex", "sh", "-c", "echo $BASE; pwd; id -u"]),
        "1\n/srv\n0\n"
    );
    assert_eq!(
        r.ok(&[
            "exec",
            "-e",
            "BASE=2",
            "-e",
            "NEW=x",
            "ex",
            "sh",
            "-c",
            "echo $BASE$NEW"
        ]),
        "2x\n"
    );
    assert_eq!(r.ok(&["exec", "-w", "/tmp", "ex", "pwd"]), "/tmp\n");
    assert_eq!(
        r.ok(&["exec", "-u", "nobody", "ex", "sh", "-c", "id -u; id -g"]),
        "65534\n65534\n"
    );
    assert_eq!(
        r.ok(&["exec", "-u", "42:43", "ex", "sh", "-c", "id -u; id -g"]),
        "42\n43\n"
    );
    let e = r.err(&["exec", "-u", "bob", "ex", "true"], 126);
    assert!(e.contains("unable to find user bob"), "{e}");
    assert_eq!(
        r.ok(&["exec", "ex", "hostname"]),
        format!("{}\n", &r.id_of("ex")[..12])
    );
    // -i passes stdin; without it stdin is empty.
    assert_eq!(
        r.t.ok_stdin(&["exec", "-i", "ex", "cat"], b"piped\n"),
        "piped\n"
    );
    assert_eq!(r.t.ok_stdin(&["exec", "ex", "cat"], b"piped\n"), "");
    // -d returns at once; the process runs on.
    assert_eq!(
        r.ok(&["exec", "-d", "ex", "sh", "-c", "sleep 0.2; echo d > /tmp/d"]),
        ""
    );
    assert!(wait_until(SETTLE, || r
        .run(&["exec", "ex", "cat", "/tmp/d"])
        .stdout
        == "d\n"));
    // A command that is not there: 127 and one error line; not executable: 126.
    let e = r.err(&["exec", "ex", "/nonexistent"], 127);
    assert!(e.starts_with("OCI runtime exec failed: "), "{e}");
    let e = r.err(&["exec", "ex", "/etc/passwd"], 126);
    assert!(e.to_lowercase().contains("permission denied"), "{e}");
    // Exec'd processes end with the container.
    r.ok(&["exec", "-d", "ex", "sleep", "1000"]);
    r.ok(&["stop", "-t", "0", "ex"]);
    // Exec into a stopped container is an error.
    let id = r.id_of("ex");
    assert_eq!(
        r.err(&["exec", "ex", "true"], 1),
        format!("container {id} is not running")
    );
    r.assert_quiet();
    r.finish();
}

#[test]
fn rename_and_prune() {
    let r = Ctr::new("rename");
    r.ok(&["run", "-d", "--name", "first", "busybox", "sleep", "1000"]);
    let id = r.id_of("first");
    assert_eq!(r.ok(&["rename", "first", "second"]), "");
    assert_eq!(
        r.ins("second", "{{.Name}} {{.Id}}"),
        format!("/second {id}")
    );
    assert_eq!(
        r.err(&["inspect", "--type", "container", "first"], 1),
        "No such container: first"
    );
    assert_eq!(r.ok(&["ps", "--format", "{{.Names}}"]), "second\n");
    // The running container is unaffected; its name can be taken by another now.
    assert_eq!(r.status("second"), "running");
    r.ok(&["create", "--name", "first", "busybox", "true"]);
    let e = r.err(&["rename", "first", "second"], 1);
    assert!(
        e.starts_with("Conflict. The container name \"/second\" is already in use"),
        "{e}"
    );
    let e = r.err(&["rename", "first", "bad name"], 1);
    assert!(e.starts_with("Invalid container name (bad name)"), "{e}");

    // prune: every stopped container (created and exited), not the running one.
    r.ok(&["run", "--name", "gone1", "busybox", "true"]);
    let dirs_before = r.driver_dirs().len();
    let gone: BTreeSet<String> = ["first", "gone1"].iter().map(|n| r.id_of(n)).collect();
    let out = r.ok(&["container", "prune", "-f"]);
    let listed: BTreeSet<String> = out
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    assert!(out.contains("\nTotal reclaimed space: "), "{out}");
    assert_eq!(listed, gone);
    assert_eq!(r.ok(&["ps", "-a", "--format", "{{.Names}}"]), "second\n");
    assert_eq!(r.driver_dirs().len(), dirs_before - 2);
    for g in &gone {
        assert!(!r.path("containers").join(g).exists());
    }
    // Nothing to prune: nothing listed.
    assert_eq!(
        r.ok(&["container", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    r.finish();
}

// ---- containers outlive their clients --------------------------------------------------------

#[test]
fn detached_and_abandoned_containers_keep_running() {
    let r = Ctr::new("survive");
    // run -d: the client is gone when the command returns; the container runs on.
    let id = r
        .ok(&["run", "-d", "--name", "bg", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
    let pid: u32 = r.ins("bg", "{{.State.Pid}}").parse().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.status("bg"), "running");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(cmdline_text(pid), "sleep 1000");
    let mon = r.monitor_pid(&id);
    let ppid = std::fs::read_to_string(format!("/proc/{mon}/stat")).unwrap();
    let ppid: u32 = ppid
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(
        ppid,
        std::process::id(),
        "the monitor is not a child of the test"
    );

    // A foreground run whose client is SIGKILLed: the container runs on (its monitor is not the
    // client), `ps` shows it up, and a later `attach` gets its output and its exit code.
    let script = "trap 'echo bye; exit 6' TERM; i=0; \
                  while true; do echo tick $i; i=$((i+1)); sleep 0.2; done";
    let mut client = r.spawn(
        &["run", "--name", "fg", "busybox", "sh", "-c", script],
        Stdio::null(),
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut lines = Lines::new(client.stdout.take().unwrap());
    lines.expect("tick 1");
    client.kill().unwrap();
    client.wait().unwrap();
    r.forget_pid(client.id());
    std::thread::sleep(Duration::from_millis(500));
    let ps = r.ok(&[
        "ps",
        "--filter",
        "name=fg",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(ps.starts_with("fg Up "), "{ps}");
    let mut attach = r.spawn(
        &["attach", "fg"],
        Stdio::null(),
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut seen = Lines::new(attach.stdout.take().unwrap());
    let first = seen.expect("tick");
    let n: u32 = first.trim_start_matches("tick ").parse().unwrap();
    assert!(
        n > 2,
        "attach shows current output, not the log from the start: {first}"
    );
    seen.expect(&format!("tick {}", n + 2));
    // The log has every line, also those written while no client was attached.
    let log = r.ok(&["logs", "fg"]);
    for i in 0..=n {
        assert!(
            log.contains(&format!("tick {i}\n")),
            "tick {i} missing from the log"
        );
    }
    // Stopping it ends the attached client with the container's exit code.
    r.ok(&["stop", "fg"]);
    seen.expect("bye");
    let st = wait_child(&r, &mut attach, "attach");
    assert_eq!(st.code(), Some(6));
    assert_eq!(r.ins("fg", "{{.State.ExitCode}}"), "6");
    // An attach client killed does not stop the container either.
    r.ok(&["start", "fg"]);
    let mut attach = r.spawn(
        &["attach", "fg"],
        Stdio::null(),
        Stdio::piped(),
        Stdio::null(),
    );
    Lines::new(attach.stdout.take().unwrap()).expect("tick");
    attach.kill().unwrap();
    attach.wait().unwrap();
    r.forget_pid(attach.id());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.status("fg"), "running");
    // Attaching to a stopped container is an error.
    r.ok(&["stop", "-t", "0", "bg"]);
    assert_eq!(
        r.err(&["attach", "bg"], 1),
        "You cannot attach to a stopped container, start it first"
    );
    r.finish();
}

/// A client that reads slower than the container writes gets all of the output and the exit
/// code: the container waits for it (Docker's backpressure), nothing is dropped.
#[test]
fn a_slow_client_gets_all_output() {
    let r = Ctr::new("slow");
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    let total = 8_000_000usize;
    let script = format!(
        "yes {} | head -c {total}; echo done >&2; exit 5",
        line.trim_end()
    );
    let mut child = r.spawn(
        &["run", "--name", "chatty", "busybox", "sh", "-c", &script],
        Stdio::null(),
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut stdout = child.stdout.take().unwrap();
    // Not read for a while: far more than any buffer is pending meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        r.status("chatty"),
        "running",
        "the container waits for its reader"
    );
    let mut got = Vec::new();
    stdout.read_to_end(&mut got).unwrap();
    let o = r.wait(child, "run chatty");
    assert_eq!(o.code(), Some(5), "{o:?}");
    assert_eq!(o.stderr, "done\n");
    assert_eq!(got.len(), total);
    assert!(
        got.chunks(line.len())
            .all(|c| line.as_bytes().starts_with(c))
    );
    // The log has all of it too.
    let tail = r.ok(&["logs", "--tail", "1", "chatty"]);
    assert_eq!(tail, line[..total % line.len()].to_string());
    r.finish();
}

// ---- --rm ----------------------------------------------------------------------------------

#[test]
fn rm_and_auto_remove_leave_nothing() {
    let r = Ctr::new("autorm");
    let empty = r.snapshot();
    // Foreground --rm: gone when run returns, with its layer and its directory.
    let cid = r.scratch("cid1");
    let o = r.run(&[
        "run",
        "--rm",
        "--cidfile",
        s(&cid),
        "busybox",
        "sh",
        "-c",
        "echo x > /f; exit 4",
    ]);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(4), ""), "{o:?}");
    r.note_id(&std::fs::read_to_string(&cid).unwrap());
    r.assert_gone(&empty);
    // Detached --rm, then stop: stop succeeds and the container is gone.
    let id = r
        .ok(&[
            "run", "-d", "--rm", "--name", "drm", "busybox", "sh", "-c", TRAPPING,
        ])
        .trim()
        .to_string();
    r.note_id(&id);
    r.wait_log("drm", "ready");
    assert_eq!(r.ok(&["stop", "drm"]), "drm\n");
    r.assert_gone(&empty);
    assert_eq!(
        r.err(&["inspect", "--type", "container", "drm"], 1),
        "No such container: drm"
    );
    // Detached --rm ending on its own, and killed, and rm -f'ed.
    let id = r
        .ok(&["run", "-d", "--rm", "busybox", "sh", "-c", "sleep 0.2"])
        .trim()
        .to_string();
    r.note_id(&id);
    assert!(wait_until(SETTLE, || r.ids().is_empty()));
    let id = r
        .ok(&[
            "run", "-d", "--rm", "--name", "kk", "busybox", "sleep", "1000",
        ])
        .trim()
        .to_string();
    r.note_id(&id);
    assert_eq!(r.ok(&["kill", "kk"]), "kk\n");
    assert!(wait_until(SETTLE, || r.ids().is_empty()));
    let id = r
        .ok(&[
            "run", "-d", "--rm", "--name", "ff", "busybox", "sleep", "1000",
        ])
        .trim()
        .to_string();
    r.note_id(&id);
    assert_eq!(r.ok(&["rm", "-f", "ff"]), "ff\n");
    r.assert_gone(&empty);
    // wait on a --rm container prints its exit code (the container is gone right after).
    let id = r
        .ok(&[
            "run",
            "-d",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "sleep 0.5; exit 3",
        ])
        .trim()
        .to_string();
    r.note_id(&id);
    assert_eq!(r.ok(&["wait", &id]), "3\n");
    r.assert_gone(&empty);
    // restart keeps a --rm container (Docker turns AutoRemove off for its stop), with its
    // layer; a later stop removes it.
    r.ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "rs",
        "busybox",
        "sh",
        "-c",
        &format!("echo start >> /starts; {TRAPPING}"),
    ]);
    r.wait_log("rs", "ready");
    // The writable layer of a --rm container is mounted volatile (not synced: it is thrown
    // away), and mounts again after a restart; other containers' layers are not.
    let root_line = "grep ' / / ' /proc/self/mountinfo";
    assert!(
        r.ok(&["exec", "rs", "sh", "-c", root_line])
            .contains("volatile"),
        "--rm root not volatile"
    );
    let kept = r.ok(&["run", "--name", "kept", "busybox", "sh", "-c", root_line]);
    assert!(
        kept.contains("overlay") && !kept.contains("volatile"),
        "{kept}"
    );
    r.ok(&["rm", "kept"]);
    assert_eq!(r.ok(&["restart", "rs"]), "rs\n");
    assert_eq!(r.status("rs"), "running");
    assert!(
        r.ok(&["exec", "rs", "sh", "-c", root_line])
            .contains("volatile")
    );
    assert_eq!(
        r.ins("rs", "{{.RestartCount}} {{.HostConfig.AutoRemove}}"),
        "1 true"
    );
    assert_eq!(r.ok(&["exec", "rs", "cat", "/starts"]), "start\nstart\n");
    assert_eq!(r.ok(&["stop", "rs"]), "rs\n");
    r.assert_gone(&empty);
    // --rm with a start that fails: removed too.
    let e = r.err(&["run", "--rm", "busybox", "/nonexistent"], 127);
    assert!(e.contains("not found"), "{e}");
    r.assert_gone(&empty);
    let e = r.err(&["run", "--rm", "-u", "bob", "busybox", "true"], 125);
    assert!(e.starts_with("unable to find user bob"), "{e}");
    r.assert_gone(&empty);
    let e = r.err(&["run", "-d", "--rm", "busybox", "/nonexistent"], 127);
    assert!(e.contains("not found"), "{e}");
    r.assert_gone(&empty);
    r.assert_quiet();
    // Plain rm of an exited container takes its layer and directory.
    r.ok(&["run", "--name", "plain", "busybox", "touch", "/x"]);
    let layer = r.upper("plain").parent().unwrap().to_path_buf();
    let id = r.id_of("plain");
    assert!(layer.is_dir() && r.path("containers").join(&id).is_dir());
    assert_eq!(r.ok(&["rm", "plain"]), "plain\n");
    r.assert_gone(&empty);
    // rm -f of a running one kills it.
    r.ok(&["run", "-d", "--name", "running", "busybox", "sleep", "1000"]);
    let pid = r.ins("running", "{{.State.Pid}}");
    assert_eq!(r.ok(&["rm", "-f", "running"]), "running\n");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || cmdline_text(pid.parse().unwrap()) != "sleep 1000"
    );
    r.assert_gone(&empty);
    r.finish();
}

// ---- recovery after the monitor is killed -------------------------------------------------

#[test]
fn recovery_after_kill_9_of_the_monitor() {
    let r = Ctr::new("recover");
    let id = r
        .ok(&["run", "-d", "--name", "victim", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
    let pid: u32 = r.ins("victim", "{{.State.Pid}}").parse().unwrap();
    let mon = r.monitor_pid(&id);
    let upper = r.upper("victim");
    let merged = upper.parent().unwrap().join("merged");
    assert!(
        r.mounts().contains(&merged),
        "the root is mounted while it runs"
    );
    // SAFETY: a plain kill of the monitor process we found by its command line.
    assert_eq!(unsafe { libc::kill(mon as libc::pid_t, libc::SIGKILL) }, 0);
    assert!(wait_until(SETTLE, || !Path::new(&format!("/proc/{mon}")).exists()));
    // The container process outlived its monitor; the next command repairs the container.
    let ps = r.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.starts_with("victim Exited (137) "), "{ps}");
    assert_eq!(
        r.ins(
            "victim",
            "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}"
        ),
        "exited 137 0"
    );
    assert!(r.mounts().is_empty(), "{:?}", r.mounts());
    let findmnt = Command::new("findmnt")
        .args(["-rn", "-o", "TARGET"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&findmnt.stdout).contains(s(r.base())));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || cmdline_text(pid) != "sleep 1000",
        "the container process is gone"
    );
    r.assert_quiet();
    r.assert_check_clean();
    // Its layer kept what it had; it starts again and can be removed.
    std::fs::write(upper.join("kept"), b"kept\n").unwrap();
    r.ok(&["start", "victim"]);
    assert_eq!(r.status("victim"), "running");
    assert_eq!(r.ok(&["exec", "victim", "cat", "/kept"]), "kept\n");
    // A foreground client is also repaired: its run ends when the monitor dies.
    let mut client = r.spawn(
        &[
            "run",
            "--name",
            "fgvictim",
            "busybox",
            "sh",
            "-c",
            "echo up; sleep 1000",
        ],
        Stdio::null(),
        Stdio::piped(),
        Stdio::piped(),
    );
    Lines::new(client.stdout.take().unwrap()).expect("up");
    let fid = r.id_of("fgvictim");
    let fmon = r.monitor_pid(&fid);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(fmon as libc::pid_t, libc::SIGKILL) }, 0);
    let st = wait_child(&r, &mut client, "run whose monitor was killed");
    assert_eq!(st.code(), Some(137));
    assert_eq!(
        r.ins("fgvictim", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    // A --rm container whose monitor dies is removed by the repair.
    let rid = r
        .ok(&[
            "run", "-d", "--rm", "--name", "rmvictim", "busybox", "sleep", "1000",
        ])
        .trim()
        .to_string();
    r.note_id(&rid);
    let rmon = r.monitor_pid(&rid);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(rmon as libc::pid_t, libc::SIGKILL) }, 0);
    assert!(wait_until(SETTLE, || !Path::new(&format!("/proc/{rmon}")).exists()));
    let names = r.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!names.contains("rmvictim"), "{names}");
    assert!(!r.path("containers").join(&rid).exists());
    // rm works on the repaired ones.
    r.ok(&["rm", "-f", "victim"]);
    r.ok(&["rm", "fgvictim"]);
    r.assert_check_clean();
    r.finish();
}

// ---- terminals --------------------------------------------------------------------------------

#[test]
fn terminals() {
    let r = Ctr::new("tty");
    // -t without a terminal on carrel's stdin still gives the container one.
    let o = r.run(&["run", "-t", "busybox", "tty"]);
    assert!(o.success(), "{o:?}");
    assert!(o.stdout.starts_with("/dev/pts/"), "{o:?}");
    assert!(o.stdout.ends_with("\r\n"), "a terminal's line ends: {o:?}");
    // Without -t there is none.
    let o = r.run(&["run", "busybox", "tty"]);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(1), "not a tty\n"));
    // -t from a terminal; TERM is set.
    let p = PtySession::start(&r, &["run", "-t", "busybox", "sh", "-c", "tty; echo $TERM"]);
    let (code, text) = p.finish(&r);
    assert_eq!(code, Some(0), "{text:?}");
    assert!(
        text.contains("/dev/pts/") && text.contains("xterm"),
        "{text:?}"
    );
    // -it: an interactive shell driven through the terminal, its exit code passed through.
    let mut p = PtySession::start(&r, &["run", "-it", "--name", "shell", "busybox", "sh"]);
    p.expect("# ");
    p.send(b"echo ok; exit 7\n");
    let (code, text) = p.finish(&r);
    assert_eq!(code, Some(7), "{text:?}");
    assert!(text.contains("ok\r\n"), "{text:?}");
    assert_eq!(
        r.ins("shell", "{{.Config.Tty}} {{.State.ExitCode}}"),
        "true 7"
    );
    // The container's output went to its log too.
    assert!(r.ok(&["logs", "shell"]).contains("ok"));
    // exec -it into a running -t container.
    r.ok(&["run", "-dit", "--name", "bgtty", "busybox", "sh"]);
    let mut p = PtySession::start(&r, &["exec", "-it", "bgtty", "sh"]);
    p.expect("# ");
    p.send(b"tty; exit 3\n");
    let (code, text) = p.finish(&r);
    assert_eq!(code, Some(3), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    r.finish();
}

// ---- bad input ----------------------------------------------------------------------------------

#[test]
fn bad_input_is_one_clear_error_and_leaves_nothing() {
    let r = Ctr::new("bad");
    r.ok(&["run", "-d", "--name", "busy", "busybox", "sleep", "1000"]);
    r.ok(&["run", "--name", "stopped", "busybox", "true"]);
    let busy_id = r.id_of("busy");
    let stopped_id = r.id_of("stopped");
    r.settle();
    let before = r.snapshot();
    let busy_monitor = format!("container-monitor {busy_id}");
    let check = |args: &[&str], code: i32, msg: &str| {
        let e = r.err(args, code);
        assert!(e.contains(msg), "{args:?}: {e:?} does not say {msg:?}");
        assert_eq!(r.snapshot(), before, "{args:?} changed something");
        // `run` spawns the container's monitor before making the container; one that was
        // never given its container ends with the failed run.
        let mut others = Vec::new();
        let gone = wait_until(SETTLE, || {
            others = r
                .monitors()
                .into_iter()
                .filter(|(_, c)| !c.ends_with(&busy_monitor))
                .collect();
            others.is_empty()
        });
        assert!(gone, "{args:?} left a monitor behind: {others:?}");
    };
    // run/create failures before anything runs: 125 (run), 1 (create).
    check(
        &["run", "nosuchimage"],
        125,
        "No such image: nosuchimage:latest",
    );
    check(
        &["create", "nosuchimage"],
        1,
        "No such image: nosuchimage:latest",
    );
    check(
        &["run", "--name", "busy", "busybox", "true"],
        125,
        &format!(
            "Conflict. The container name \"/busy\" is already in use by container \"{busy_id}\". You have to remove (or rename) that container to be able to reuse that name."
        ),
    );
    check(
        &["create", "--name", "busy", "busybox", "true"],
        1,
        "is already in use",
    );
    for bad in ["bad name", "x", "-x", "a/b", "é"] {
        check(
            &["run", "--name", bad, "busybox", "true"],
            125,
            &format!("Invalid container name ({bad}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        );
    }
    // An unknown option before the image is the usage error docker gives, not an image name.
    check(
        &["run", "--bogus", "busybox", "true"],
        125,
        "unknown flag: --bogus (see 'carrel run --help')",
    );
    check(
        &["create", "-Z", "busybox"],
        125,
        "unknown shorthand flag: 'Z' in -Z",
    );
    check(
        &["exec", "--bogus", "busy", "true"],
        125,
        "unknown flag: --bogus",
    );
    check(
        &["run", "--network", "bridge", "busybox", "true"],
        125,
        "network mode \"bridge\" is not supported",
    );
    check(
        &["run", "--network", "container:busy", "busybox", "true"],
        125,
        "is not supported",
    );
    check(
        &["run", "-p", "80:80", "busybox", "true"],
        125,
        "publishing ports (-p) is not supported",
    );
    check(
        &["run", "--restart", "always", "busybox", "true"],
        125,
        "restart policy \"always\" is not supported",
    );
    check(
        &["run", "--shm-size", "abc", "busybox", "true"],
        125,
        "invalid argument \"abc\" for \"--shm-size\" flag: invalid size: 'abc'",
    );
    check(
        &["run", "--runtime", "nosuch", "busybox", "true"],
        125,
        "OCI runtime \"nosuch\" not found",
    );
    check(
        &["create", "--runtime", "nosuch", "busybox", "true"],
        1,
        "OCI runtime \"nosuch\" not found",
    );
    check(
        &["run", "--runtime", "/nonexistent/crun", "busybox", "true"],
        125,
        "not found",
    );
    check(
        &["run", "--stop-signal", "NOPE", "busybox", "true"],
        125,
        "Invalid signal: NOPE",
    );
    check(
        &["run", "-w", "relative", "busybox", "true"],
        125,
        "the working directory 'relative' is invalid, it needs to be an absolute path",
    );
    check(
        &["run", "--privileged", "busybox", "true"],
        125,
        "--privileged is not supported",
    );
    check(
        &["run", "--pull", "always", "busybox", "true"],
        125,
        "never pulls",
    );
    // Unknown containers, for every command that takes one.
    let nosuch: &[&[&str]] = &[
        &["start", "nosuch"],
        &["start", "-a", "nosuch"],
        &["stop", "nosuch"],
        &["kill", "nosuch"],
        &["restart", "nosuch"],
        &["wait", "nosuch"],
        &["logs", "nosuch"],
        &["attach", "nosuch"],
        &["exec", "nosuch", "true"],
        &["rm", "nosuch"],
        &["rm", "-f", "nosuch"],
        &["rename", "nosuch", "other"],
        &["container", "inspect", "nosuch"],
        &["diff", "nosuch"],
        &["export", "nosuch"],
        &["commit", "nosuch"],
        &["cp", "nosuch:/etc/passwd", "-"],
    ];
    for args in nosuch {
        check(args, 1, "No such container: nosuch");
    }
    // Ambiguous id prefixes: two ids that share their first character.
    let mut by_first: std::collections::BTreeMap<char, Vec<String>> = Default::default();
    let mut extra = Vec::new();
    let mut pair = None;
    for id in r.ids() {
        by_first
            .entry(id.chars().next().unwrap())
            .or_default()
            .push(id);
    }
    while pair.is_none() {
        let id = r.ok(&["create", "busybox", "true"]).trim().to_string();
        extra.push(id.clone());
        let v = by_first.entry(id.chars().next().unwrap()).or_default();
        v.push(id);
        if v.len() >= 2 {
            pair = Some(v[0][..1].to_string());
        }
        assert!(extra.len() <= 17, "pigeonhole");
    }
    let prefix = pair.unwrap();
    let before_amb = r.snapshot();
    for cmd in [
        &["container", "inspect"][..],
        &["rm"],
        &["start"],
        &["logs"],
    ] {
        let mut a = cmd.to_vec();
        a.push(&prefix);
        let e = r.err(&a, 1);
        assert_eq!(
            e,
            format!("multiple IDs found with provided prefix: {prefix}"),
            "{a:?}"
        );
        assert_eq!(r.snapshot(), before_amb);
    }
    // A unique prefix works.
    let one = &extra[0][..12];
    assert_eq!(r.ins(one, "{{.Id}}"), extra[0]);
    let mut a = vec!["rm"];
    a.extend(extra.iter().map(String::as_str));
    r.ok(&a);
    assert_eq!(r.snapshot(), before);

    // rm of a running container without -f: Docker's words; it keeps running.
    check(
        &["rm", "busy"],
        1,
        "cannot remove container \"/busy\": container is running: stop the container before removing or force remove",
    );
    assert_eq!(r.status("busy"), "running");
    // kill of a stopped container; a bad signal.
    check(
        &["kill", "stopped"],
        1,
        &format!("cannot kill container: stopped: container {stopped_id} is not running"),
    );
    check(&["kill", "-s", "NOPE", "busy"], 1, "Invalid signal: NOPE");
    assert_eq!(r.status("busy"), "running");
    // A failing entrypoint: Docker's exit code and message; the container stays created with
    // the error (Docker keeps it too) but nothing runs or is mounted for it.
    let e = r.err(&["run", "--name", "noexec", "busybox", "/nonexistent"], 127);
    assert!(
        e.starts_with("OCI runtime create failed: ") && e.contains("not found"),
        "{e}"
    );
    assert_eq!(
        r.ins("noexec", "{{.State.Status}} {{.State.ExitCode}}"),
        "created 127"
    );
    assert!(r.ins("noexec", "{{.State.Error}}").contains("not found"));
    let e = r.err(&["run", "--name", "notexec", "busybox", "/etc"], 126);
    assert!(e.starts_with("OCI runtime create failed: "), "{e}");
    assert_eq!(r.mounts(), before.mounts);
    assert_eq!(r.runtime_states(), before.runtime_states);
    let e = r.err(&["start", "noexec"], 1);
    assert!(e.contains("not found"), "{e}");
    r.ok(&["rm", "noexec", "notexec"]);
    assert_eq!(r.snapshot(), before);
    // Several names: the good ones are done, each bad one is an error line, exit 1.
    let o = r.run(&["rm", "nosuch1", "stopped", "nosuch2"]);
    assert_eq!(o.code(), Some(1));
    assert_eq!(o.stdout, "stopped\n");
    assert_eq!(
        o.stderr,
        "Error: No such container: nosuch1\nError: No such container: nosuch2\n"
    );
    r.finish();
}

// ---- nothing left behind -----------------------------------------------------------------------

/// A mixed workload on one data root — detached, foreground, killed clients, `--rm`, terminals,
/// exec, failed starts, a killed monitor — then everything removed: no mount, no monitor, no
/// container process, no runtime state, no cgroup, no container directory, no layer but the
/// image's, and `system check` is clean.
#[test]
fn nothing_is_left_behind() {
    let r = Ctr::new("leftovers");
    let image_layer = r.image_layer();
    let image_tree = tree(&image_layer);
    for i in 0..3 {
        r.ok(&[
            "run",
            "-d",
            "--name",
            &format!("d{i}"),
            "busybox",
            "sh",
            "-c",
            TRAPPING,
        ]);
    }
    r.ok(&[
        "run",
        "-d",
        "--runtime",
        "runc",
        "--name",
        "viarunc",
        "busybox",
        "sleep",
        "1000",
    ]);
    r.ok(&["run", "-dit", "--name", "tty", "busybox", "sh"]);
    r.ok(&["exec", "-d", "d0", "sleep", "1000"]);
    r.ok(&["run", "--rm", "busybox", "true"]);
    r.ok(&["run", "busybox", "sh", "-c", "echo x > /y"]);
    let _ = r.run(&["run", "busybox", "/nonexistent"]);
    let _ = r.run(&["run", "-u", "bob", "busybox", "true"]);
    let mut client = r.spawn(
        &[
            "run",
            "--name",
            "orphan",
            "busybox",
            "sh",
            "-c",
            "echo up; sleep 1000",
        ],
        Stdio::null(),
        Stdio::piped(),
        Stdio::null(),
    );
    Lines::new(client.stdout.take().unwrap()).expect("up");
    client.kill().unwrap();
    client.wait().unwrap();
    r.forget_pid(client.id());
    let id = r
        .ok(&["run", "-d", "busybox", "sleep", "1000"])
        .trim()
        .to_string();
    let mon = r.monitor_pid(&id);
    // SAFETY: a plain kill of the monitor found by its command line.
    unsafe {
        libc::kill(mon as libc::pid_t, libc::SIGKILL);
    }
    r.ok(&["stop", "d1"]);
    r.ok(&["kill", "d2"]);
    assert_eq!(
        r.ok(&["ps", "-q"]).lines().count(),
        4,
        "d0, viarunc, tty, orphan"
    );
    assert_trees_eq(&tree(&image_layer), &image_tree, "the image layer");
    r.finish();
}
