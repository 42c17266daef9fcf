//! The per-container monitor: a small process (a re-exec of the `carrel` binary, like Podman's
//! conmon) that owns one running container.
//!
//! It takes `<container dir>/monitor.lock` for its whole life (its liveness mark), becomes a
//! child subreaper so the container's init becomes its child, mounts the root, writes
//! `config.json`, creates and starts the container with the OCI runtime, reports to the client
//! that spawned it over a sync socket, then copies the container's output into the json-file log
//! and to attached clients (`attach.sock`), feeds them stdin, and when the container ends it
//! records the exit, deletes the container from the runtime, unmounts the root and, with
//! `--rm`, removes the container through [`ContainerHooks`].
//!
//! Files in the container directory:
//! `plan.json` (input, [`RunPlan`]), `config.json`, `monitor.lock`, `attach.sock`,
//! `<id>-json.log`, `runtime.log` (the runtime's errors), `init.pid`, `monitor.json`
//! ([`Started`] of the current run), `exit.json` ([`ExitInfo`] of the last run).
//!
//! The client side (spawning, attaching, stopping, waiting, recovery, exec) is in [`client`].

pub mod client;
pub mod logs;
pub mod proto;
pub mod spawn;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use carrel_core::fs::FileLock;
use carrel_mount::{KernelMounter, Mount, Mounter};
use rustix::event::{PollFd, PollFlags, poll};
use serde::{Deserialize, Serialize};

use super::runtime::{RunError, read_pid_file};
use super::spec::{RunPlan, oci_spec, write_config};
use super::tty::ConsoleSocket;
pub use client::*;
use logs::LogWriter;
pub use proto::{StartError, Started};

/// The monitor's lock file (held while it lives).
pub const LOCK_FILE: &str = "monitor.lock";
/// The attach socket.
pub const ATTACH_SOCKET: &str = "attach.sock";
/// The record of the current run.
pub const STARTED_FILE: &str = "monitor.json";
/// The record of the last exit.
pub const EXIT_FILE: &str = "exit.json";
/// The runtime's JSON error log.
pub const RUNTIME_LOG: &str = "runtime.log";
/// The container init's pid, as the runtime wrote it.
pub const PID_FILE: &str = "init.pid";

/// Environment variable naming the sync socket's descriptor in the monitor.
pub const ENV_SYNC_FD: &str = "CARREL_MONITOR_SYNC_FD";
/// What stands for the container id on the command line of a monitor spawned before its
/// container was made ([`PendingMonitor`]); as long as an id, so that the monitor can show its
/// container's id in its place once it is assigned one.
pub const PENDING_ID: &str = "................................................................";
/// Environment variable: `1` when the sync client also wants the container's output and input.
pub const ENV_ATTACH: &str = "CARREL_MONITOR_ATTACH";

/// How a container run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code (128+N when killed by signal N).
    pub exit_code: i32,
    /// Killed by the OOM killer.
    #[serde(default)]
    pub oom_killed: bool,
    /// Start time, nanoseconds since the epoch (0 if it never started).
    #[serde(default)]
    pub started_at: i64,
    /// End time, nanoseconds since the epoch.
    pub finished_at: i64,
    /// Why it could not start, if it did not.
    #[serde(default)]
    pub error: String,
}

/// What the monitor tells the container store. The store implements it; the monitor calls it
/// from its own process, so implementations open what they need themselves. Errors are logged,
/// never fatal to the monitor.
pub trait ContainerHooks {
    /// The monitor runs in its own background process (called before anything else): the
    /// time to start preparing what the other hooks need, while the container starts.
    fn on_monitor_start(&self) {}
    /// The container runs (its init's host pid).
    fn on_started(&self, _started: &Started) -> Result<(), RunError> {
        Ok(())
    }
    /// The container could not be started (state stays `created` with `error` and the exit code
    /// 125/126/127, as Docker records it).
    fn on_start_failed(&self, _exit: &ExitInfo) -> Result<(), RunError> {
        Ok(())
    }
    /// The container ended; its runtime state is deleted and its root unmounted.
    fn on_exited(&self, _exit: &ExitInfo) -> Result<(), RunError> {
        Ok(())
    }
    /// `--rm`: remove the container (record, writable layer, directory). Returns whether it
    /// is gone (a restart keeps it); the deletion of its files may be left to
    /// [`ContainerHooks::after_exit_reported`].
    fn on_auto_remove(&self) -> Result<bool, RunError> {
        Ok(false)
    }
    /// The clients have been told how the container ended (or that it could not start): the
    /// time for work nobody waits for, such as deleting the files of a container removed by
    /// `--rm`. Called once, last.
    fn after_exit_reported(&self) {}
}

/// Hooks that do nothing (the monitor still writes `monitor.json` and `exit.json`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl ContainerHooks for NoHooks {}

/// How the monitor was started.
#[derive(Debug, Default)]
pub struct MonitorOptions {
    /// The sync socket to the spawning client.
    pub sync: Option<OwnedFd>,
    /// The sync client also attaches (gets output, sends input).
    pub attach: bool,
    /// Detach from the spawning process (fork, `setsid`) before doing anything. The `carrel`
    /// binary sets it; tests that run the monitor in a thread do not.
    pub daemonize: bool,
}

impl MonitorOptions {
    /// The options the spawning client passed in the environment ([`ENV_SYNC_FD`],
    /// [`ENV_ATTACH`]), with `daemonize` set. Takes ownership of the sync descriptor.
    pub fn from_env() -> MonitorOptions {
        let sync = std::env::var(ENV_SYNC_FD)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|fd| {
                *fd > 2 && rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(*fd) }).is_ok()
            })
            // SAFETY: the descriptor was passed to this process for it alone and is open.
            .map(|fd| unsafe { super::tty::owned_from_raw(fd) });
        if let Some(fd) = &sync {
            let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
        }
        // Descriptors the client inherited from its own parent (a shell's pipes, a jobserver)
        // must not be held open for the container's lifetime.
        close_inherited(sync.as_ref().map(|f| f.as_raw_fd()));
        // SAFETY: single-threaded at this point of the monitor's start; removes our own vars.
        unsafe {
            std::env::remove_var(ENV_SYNC_FD);
        }
        let attach = std::env::var(ENV_ATTACH).is_ok_and(|v| v == "1");
        unsafe {
            std::env::remove_var(ENV_ATTACH);
        }
        MonitorOptions {
            sync,
            attach,
            daemonize: true,
        }
    }
}

/// Close every descriptor above stderr except `keep`.
fn close_inherited(keep: Option<i32>) {
    let close = |first: u32, last: u32| {
        if first <= last {
            // SAFETY: close_range on descriptors this fresh process does not use.
            unsafe {
                libc::syscall(libc::SYS_close_range, first, last, 0);
            }
        }
    };
    match keep {
        Some(k) if k >= 3 => {
            close(3, k as u32 - 1);
            close(k as u32 + 1, u32::MAX);
        }
        _ => close(3, u32::MAX),
    }
}

/// Nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn write_json(dir: &Path, name: &str, v: &impl Serialize) -> Result<(), RunError> {
    let data = serde_json::to_vec(v).map_err(|e| RunError::Internal(e.to_string()))?;
    super::spec::write_replace(dir, name, &data)
        .map_err(|e| RunError::io("writing", dir.join(name), e))
}

/// Read `exit.json` of a container directory, if the monitor wrote one.
pub fn read_exit(dir: &Path) -> Option<ExitInfo> {
    serde_json::from_slice(&std::fs::read(dir.join(EXIT_FILE)).ok()?).ok()
}

/// Read `monitor.json` of a container directory (the current or last run's start).
pub fn read_started(dir: &Path) -> Option<Started> {
    serde_json::from_slice(&std::fs::read(dir.join(STARTED_FILE)).ok()?).ok()
}

/// Fork into the background: the parent returns to its caller's `exit`, the child (returned
/// `true`) starts a new session. Must be called while the process has one thread.
fn daemonize() -> io::Result<bool> {
    // SAFETY: called at the monitor's start, single-threaded; the child only continues Rust
    // code that the parent would have run.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let _ = rustix::process::setsid();
            // Do not pin the caller's working directory (and its mount).
            let _ = std::env::set_current_dir("/");
            rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// What a monitor spawned ahead of its container ([`PendingMonitor`]) learned.
#[derive(Debug)]
pub enum Assignment {
    /// This is the process the client spawned, which has forked the monitor into the
    /// background: it ends now.
    Detached,
    /// The client went away without assigning a container: nothing to do.
    Abandoned,
    /// Run the monitor of container `id` with `options`.
    Container {
        /// The container's full id.
        id: String,
        /// The options to pass to [`run_monitor`] (no longer daemonizing).
        options: MonitorOptions,
    },
}

/// For a monitor spawned ahead of its container ([`PendingMonitor::spawn`]): detach into the
/// background at once (with `opts.daemonize`), then wait on the sync socket for the client to
/// assign the container ([`proto::ASSIGN`]). The wait lasts as long as the client: a client that
/// ends or drops its [`PendingMonitor`] closes the socket, and nothing was made.
pub fn await_assignment(mut opts: MonitorOptions) -> Result<Assignment, RunError> {
    let Some(sync) = opts.sync.take() else {
        return Err(RunError::Internal(
            "a monitor without a container needs a sync socket to learn it".into(),
        ));
    };
    if opts.daemonize {
        if !daemonize().map_err(|e| RunError::io("forking monitor", "/", e))? {
            return Ok(Assignment::Detached);
        }
        opts.daemonize = false;
    }
    let mut stream = UnixStream::from(sync);
    let assignment = match proto::read_frame(&mut stream) {
        Ok(Some((proto::ASSIGN, payload))) => serde_json::from_slice::<proto::Assignment>(&payload)
            .map_err(|e| RunError::Internal(format!("bad container assignment: {e}")))?,
        Ok(Some((kind, _))) => {
            return Err(RunError::Internal(format!(
                "expected a container assignment, got frame kind {kind}"
            )));
        }
        Ok(None) => return Ok(Assignment::Abandoned),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Assignment::Abandoned),
        Err(e) => return Err(RunError::io("reading the sync socket", "", e)),
    };
    if !carrel_core::digest::is_hex64(&assignment.id) {
        return Err(RunError::InvalidArgument(format!(
            "invalid container id {:?}",
            assignment.id
        )));
    }
    opts.sync = Some(OwnedFd::from(stream));
    opts.attach = assignment.attach;
    Ok(Assignment::Container {
        id: assignment.id,
        options: opts,
    })
}

/// Run the monitor for the container whose directory (and `plan.json`) is `dir`. Returns the
/// container's exit code (or Docker's 125/126/127 for a failed start). With
/// `opts.daemonize`, the calling process returns `Ok(0)` at once in the parent and the work
/// continues in a detached child (which then also returns here, when the container is done).
pub fn run_monitor(
    dir: &Path,
    opts: MonitorOptions,
    hooks: &dyn ContainerHooks,
) -> Result<i32, RunError> {
    if opts.daemonize && !daemonize().map_err(|e| RunError::io("forking monitor", dir, e))? {
        return Ok(0);
    }
    // A client going away must never kill the monitor.
    // SAFETY: ignoring SIGPIPE; writes then fail with EPIPE instead.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    hooks.on_monitor_start();
    let mut sync = opts
        .sync
        .map(|fd| Client::new(UnixStream::from(fd), opts.attach, true));
    let result = Monitor::start(dir, hooks, sync.as_mut());
    let mut monitor = match result {
        Ok(m) => m,
        Err((e, exit)) => {
            if let Some(s) = sync.as_mut() {
                let payload = StartError {
                    message: e.to_string(),
                    exit_code: exit.exit_code,
                    op: match &e {
                        RunError::Runtime { op, .. } => op.clone(),
                        _ => String::new(),
                    },
                    kind: carrel_core::HasKind::kind(&e).to_string(),
                };
                s.send_blocking(
                    proto::ERROR,
                    &serde_json::to_vec(&payload).unwrap_or_default(),
                );
            }
            hooks.after_exit_reported();
            return Err(e);
        }
    };
    if let Some(s) = sync {
        monitor.clients.push(s);
    }
    monitor.run(hooks)
}

/// One connected client (the sync socket or an attach connection).
struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: VecDeque<u8>,
    wants_output: bool,
    is_sync: bool,
    owns_stdin: bool,
    closed: bool,
}

/// Output buffered for a slow client before it is dropped.
const MAX_CLIENT_BACKLOG: usize = 8 << 20;

/// Output queued for an attached client above which the container's output is not read: the
/// container then blocks writing until the client catches up (Docker's backpressure), and no
/// client is dropped, nor output lost, because it reads slower than the container writes.
const THROTTLE_BACKLOG: usize = 1 << 20;

/// After the container exited, how long an attached client may make no progress reading the
/// rest of its output before it is dropped (so that the exit is recorded).
const STALLED_CLIENT: Duration = Duration::from_secs(10);

/// After the container exited, how long output still in its pipes is read.
const DRAIN: Duration = Duration::from_secs(2);

impl Client {
    fn new(stream: UnixStream, wants_output: bool, is_sync: bool) -> Client {
        let _ = stream.set_nonblocking(true);
        Client {
            stream,
            inbuf: Vec::new(),
            out: VecDeque::new(),
            wants_output,
            is_sync,
            owns_stdin: false,
            closed: false,
        }
    }

    fn queue(&mut self, kind: u8, payload: &[u8]) {
        if self.closed {
            return;
        }
        self.out.extend(proto::frame(kind, payload));
        if self.out.len() > MAX_CLIENT_BACKLOG {
            tracing::warn!("dropping an attached client that does not read its output");
            self.closed = true;
            return;
        }
        self.flush();
    }

    fn flush(&mut self) {
        while !self.out.is_empty() && !self.closed {
            let (a, _) = self.out.as_slices();
            match self.stream.write(a) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// Send a frame and wait (bounded) until it is written.
    fn send_blocking(&mut self, kind: u8, payload: &[u8]) {
        self.queue(kind, payload);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.out.is_empty() && !self.closed && Instant::now() < deadline {
            let mut p = [PollFd::new(&self.stream, PollFlags::OUT)];
            let _ = poll(&mut p, Some(&timespec(Duration::from_millis(100))));
            self.flush();
        }
    }
}

fn timespec(d: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: d.subsec_nanos() as i64,
    }
}

/// Where container output comes from.
enum Output {
    Pipes {
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    Tty {
        master: Option<OwnedFd>,
    },
}

struct Monitor {
    dir: PathBuf,
    plan: RunPlan,
    _lock: FileLock,
    mounted: bool,
    /// The user mounts' pinned sources, staged under the container directory.
    staged: super::mounts::StagedMounts,
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    output: Output,
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    stdin_close_pending: bool,
    log: Option<LogWriter>,
    pid: i32,
    pidfd: Option<OwnedFd>,
    started: Started,
}

type StartFailure = (RunError, ExitInfo);

/// The mounts of the container's root. The writable layer of a `--rm` container, thrown away
/// when it ends, is mounted `volatile` (as Podman does): its unmount then does not sync the whole
/// filesystem under it, which would make every short `run --rm` wait for all the host's pending
/// writes. Before mounting, a marker left by an earlier run that did not unmount cleanly is
/// removed ([`remove_volatile_markers`]): such a layer is disposable by definition.
fn root_mounts(plan: &RunPlan) -> Vec<Mount> {
    let mut mounts = plan.rootfs_mounts.clone();
    if plan.auto_remove {
        for m in mounts.iter_mut() {
            if let Mount::Overlay(o) = m
                && o.upper.is_some()
            {
                o.volatile = true;
            }
        }
    }
    mounts
}

/// Remove overlayfs's `incompat/volatile` markers of `mounts` (before mounting, and after a
/// clean unmount).
fn remove_volatile_markers(mounts: &[Mount]) {
    for m in mounts {
        if let Mount::Overlay(o) = m
            && o.volatile
            && let Some(marker) = o.volatile_marker()
            && let Err(e) = std::fs::remove_dir_all(&marker)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(marker = %marker.display(), error = %e, "cannot remove the volatile marker");
        }
    }
}

impl Monitor {
    /// Everything up to a running container; on failure everything done is undone, the failure
    /// recorded and the hooks told.
    fn start(
        dir: &Path,
        hooks: &dyn ContainerHooks,
        sync: Option<&mut Client>,
    ) -> Result<Monitor, StartFailure> {
        let fail = |e: RunError| {
            let exit = ExitInfo {
                exit_code: e.exit_code(),
                finished_at: now_nanos(),
                error: e.to_string(),
                ..Default::default()
            };
            (e, exit)
        };
        let lock = match lock_with_timeout(&dir.join(LOCK_FILE), Duration::from_secs(10)) {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Err(fail(RunError::Conflict(
                    "the container already has a running monitor".into(),
                )));
            }
            Err(e) => return Err(fail(RunError::io("locking", dir.join(LOCK_FILE), e))),
        };
        let plan = RunPlan::load(dir).map_err(fail)?;
        let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
        let mut m = Monitor {
            dir: dir.to_path_buf(),
            plan,
            _lock: lock,
            mounted: false,
            staged: Default::default(),
            listener: None,
            clients: Vec::new(),
            output: Output::Pipes {
                stdout: None,
                stderr: None,
            },
            stdin: None,
            stdin_buf: Vec::new(),
            stdin_close_pending: false,
            log: None,
            pid: 0,
            pidfd: None,
            started: Started {
                pid: 0,
                monitor_pid: std::process::id() as i32,
                started_at: 0,
            },
        };
        match m.create_and_start(sync) {
            Ok(()) => {
                if let Err(e) = hooks.on_started(&m.started) {
                    tracing::warn!(error = %e, "recording the start failed");
                }
                Ok(m)
            }
            Err(e) => {
                let (e, exit) = fail(e);
                m.cleanup(true);
                let _ = write_json(&m.dir, EXIT_FILE, &exit);
                if let Err(h) = hooks.on_start_failed(&exit) {
                    tracing::warn!(error = %h, "recording the failed start failed");
                }
                if m.plan.auto_remove
                    && let Err(h) = hooks.on_auto_remove()
                {
                    tracing::warn!(error = %h, "removing the container failed");
                }
                Err((e, exit))
            }
        }
    }

    fn create_and_start(&mut self, sync: Option<&mut Client>) -> Result<(), RunError> {
        let plan = &self.plan;
        let id = plan.id.clone();
        let rt = plan.runtime.clone();
        // Leftovers of an earlier run of this container (crashed monitor) go first.
        let _ = std::fs::remove_file(self.dir.join(EXIT_FILE));
        if !plan.rootfs_mounts.is_empty() {
            if !plan.rootfs.is_dir() {
                std::fs::create_dir_all(&plan.rootfs)
                    .map_err(|e| RunError::io("creating", &plan.rootfs, e))?;
            }
            let mounts = root_mounts(plan);
            remove_volatile_markers(&mounts);
            KernelMounter::new().mount_all(&mounts, &plan.rootfs)?;
            self.mounted = true;
        }
        self.plan.resolve_in_root()?;
        self.staged = super::mounts::prepare_user_mounts(&mut self.plan, &self.dir)?;
        let plan = &self.plan;
        let spec = oci_spec(plan)?;
        write_config(&plan.bundle, &spec)?;
        // Runtime state of an earlier run whose monitor died before deleting it.
        if rt.has_state(&id) {
            rt.delete(&id, true)?;
        }
        self.listener = Some(
            super::tty::bind_unix(&self.dir, ATTACH_SOCKET)
                .map_err(|e| RunError::io("binding", self.dir.join(ATTACH_SOCKET), e))?,
        );
        if let Some(l) = &self.listener {
            let _ = l.set_nonblocking(true);
        }
        self.log = Some(
            LogWriter::open(&plan.log_path)
                .map_err(|e| RunError::io("opening", &plan.log_path, e))?,
        );
        let runtime_log = self.dir.join(RUNTIME_LOG);
        let _ = std::fs::remove_file(&runtime_log);
        let pid_file = self.dir.join(PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| RunError::io("creating pipe for", &plan.bundle, e.into()))
        };
        if plan.tty {
            let console = ConsoleSocket::bind(&self.dir, "console.sock")?;
            let mut cmd = rt.run_detached_command(
                &id,
                &plan.bundle,
                &pid_file,
                Some(&console.path),
                Some(&runtime_log),
            )?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .map_err(|e| RunError::io("running", &rt.path, e))?;
            let master = console.receive_master(Duration::from_secs(60), || {
                matches!(child.try_wait(), Ok(None))
            });
            let out = child
                .wait_with_output()
                .map_err(|e| RunError::io("running", &rt.path, e))?;
            rt.check("create", out.status, &out.stderr, Some(&runtime_log))?;
            let master = master?;
            set_nonblocking(master.as_fd())?;
            if plan.open_stdin {
                // Input goes to the terminal too.
                self.stdin = Some(
                    rustix::io::fcntl_dupfd_cloexec(&master, 3)
                        .map_err(|e| RunError::io("dup", &plan.bundle, e.into()))?,
                );
            }
            self.output = Output::Tty {
                master: Some(master),
            };
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let stdin = if plan.open_stdin {
                let (in_r, in_w) = pipe()?;
                set_nonblocking(in_w.as_fd())?;
                self.stdin = Some(in_w);
                Stdio::from(in_r)
            } else {
                Stdio::null()
            };
            rt.run_detached(
                &id,
                &plan.bundle,
                &pid_file,
                Some(&runtime_log),
                (stdin, Stdio::from(out_w), Stdio::from(err_w)),
            )?;
            set_nonblocking(out_r.as_fd())?;
            set_nonblocking(err_r.as_fd())?;
            self.output = Output::Pipes {
                stdout: Some(out_r),
                stderr: Some(err_r),
            };
        }
        self.pid = read_pid_file(&pid_file)?;
        self.pidfd = rustix::process::Pid::from_raw(self.pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        let _ = sync;
        self.started.pid = self.pid;
        self.started.started_at = now_nanos();
        write_json(&self.dir, STARTED_FILE, &self.started)?;
        tracing::debug!(id = %id, pid = self.pid, "container started");
        Ok(())
    }

    /// Undo the run: runtime state, mounts. `failed`: the container never ran.
    fn cleanup(&mut self, failed: bool) {
        let rt = &self.plan.runtime;
        if let Err(e) = rt.delete(&self.plan.id, failed) {
            tracing::debug!(error = %e, "deleting the container from the runtime failed; forcing");
            if let Err(e) = rt.delete(&self.plan.id, true) {
                tracing::warn!(error = %e, "deleting the container from the runtime failed");
            }
        }
        if self.unmount() {
            remove_volatile_markers(&root_mounts(&self.plan));
        }
        self.listener = None;
        let _ = std::fs::remove_file(self.dir.join(ATTACH_SOCKET));
        if failed {
            let _ = std::fs::remove_file(self.dir.join(STARTED_FILE));
        }
    }

    /// Unmount the container's root (and the staged sources of its mounts). Returns whether the
    /// root was mounted and came off cleanly: a volatile upper layer is then whole, and may be
    /// mounted again (a restart, or a view for `cp`) once overlayfs's marker is removed, which
    /// is left to the caller (pointless for a layer about to be thrown away).
    fn unmount(&mut self) -> bool {
        // The staged sources of user mounts go before the root they were mounted for.
        self.staged.release();
        if !self.mounted {
            return false;
        }
        self.mounted = false;
        let m = KernelMounter::new();
        match m.unmount(&self.plan.rootfs, false) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "unmounting the root failed; detaching it");
                let _ = m.unmount(&self.plan.rootfs, true);
                false
            }
        }
    }

    fn broadcast(&mut self, kind: u8, data: &[u8]) {
        for c in self.clients.iter_mut().filter(|c| c.wants_output) {
            c.queue(kind, data);
        }
    }

    fn handle_output(&mut self, stream: usize, data: &[u8]) {
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.write(stream, data)
        {
            tracing::warn!(error = %e, "writing the container log failed");
        }
        let kind = if stream == 1 {
            proto::STDERR
        } else {
            proto::STDOUT
        };
        self.broadcast(kind, data);
    }

    fn handle_client_frames(&mut self, idx: usize) {
        let frames = match proto::take_frames(&mut self.clients[idx].inbuf) {
            Ok(f) => f,
            Err(_) => {
                self.clients[idx].closed = true;
                return;
            }
        };
        for (kind, payload) in frames {
            match kind {
                proto::STDIN if self.stdin.is_some() => {
                    self.clients[idx].owns_stdin = true;
                    self.stdin_buf.extend_from_slice(&payload);
                }
                proto::STDIN_CLOSE => {
                    self.clients[idx].owns_stdin = true;
                    self.stdin_close_pending = true;
                }
                proto::RESIZE if payload.len() >= 4 => {
                    let rows = u16::from_be_bytes([payload[0], payload[1]]);
                    let cols = u16::from_be_bytes([payload[2], payload[3]]);
                    if let Output::Tty { master: Some(m) } = &self.output {
                        let _ = super::tty::set_size(m.as_fd(), rows, cols);
                    }
                }
                _ => {}
            }
        }
    }

    fn flush_stdin(&mut self) {
        while !self.stdin_buf.is_empty() {
            let Some(fd) = &self.stdin else {
                self.stdin_buf.clear();
                break;
            };
            match rustix::io::write(fd, &self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    self.stdin = None;
                    self.stdin_buf.clear();
                }
            }
        }
        if self.stdin_close_pending {
            self.stdin = None;
            self.stdin_close_pending = false;
            if let Output::Tty { master: Some(m) } = &self.output {
                // A terminal has no half-close: send end-of-file (^D) instead.
                let _ = rustix::io::write(m, &[4]);
            }
        }
    }

    /// Read what is available from the container's output; returns false once all of it is
    /// closed.
    fn read_output(&mut self, which: usize, buf: &mut [u8]) {
        let fd = match (&self.output, which) {
            (
                Output::Pipes {
                    stdout: Some(f), ..
                },
                0,
            ) => f.as_raw_fd(),
            (
                Output::Pipes {
                    stderr: Some(f), ..
                },
                1,
            ) => f.as_raw_fd(),
            (Output::Tty { master: Some(f) }, 0) => f.as_raw_fd(),
            _ => return,
        };
        // SAFETY: fd belongs to self.output and stays open for this call.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut closed = false;
        for _ in 0..16 {
            match rustix::io::read(bfd, &mut *buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    self.handle_output(which, &data);
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => {}
                // EIO: the terminal's other side is closed.
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            match (&mut self.output, which) {
                (Output::Pipes { stdout, .. }, 0) => *stdout = None,
                (Output::Pipes { stderr, .. }, 1) => *stderr = None,
                (Output::Tty { master }, _) => *master = None,
                _ => {}
            }
        }
    }

    fn output_open(&self) -> bool {
        match &self.output {
            Output::Pipes { stdout, stderr } => stdout.is_some() || stderr.is_some(),
            Output::Tty { master } => master.is_some(),
        }
    }

    fn reap(&mut self) -> Option<i32> {
        let mut status = None;
        loop {
            let mut st: libc::c_int = 0;
            // SAFETY: plain waitpid on any child, non-blocking.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == self.pid {
                status = Some(if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else if libc::WIFSIGNALED(st) {
                    128 + libc::WTERMSIG(st)
                } else {
                    255
                });
            }
        }
        status
    }

    fn run(&mut self, hooks: &dyn ContainerHooks) -> Result<i32, RunError> {
        if let Some(c) = self.clients.iter_mut().find(|c| c.is_sync) {
            let payload = serde_json::to_vec(&self.started).unwrap_or_default();
            c.queue(proto::STARTED, &payload);
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut exit_code: Option<i32> = None;
        // Since when output is drained after the exit (reset when a throttle ends).
        let mut drain_from: Option<Instant> = None;
        let mut progress_at = Instant::now();
        let mut last_backlog = 0;
        let mut was_throttled = false;
        loop {
            let throttled = self.throttled();
            // Build the poll set: [pidfd][out0][out1][listener][stdin][clients...]
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(8 + self.clients.len());
            let mut slots: Vec<Slot> = Vec::new();
            if exit_code.is_none()
                && let Some(p) = &self.pidfd
            {
                fds.push(PollFd::new(p, PollFlags::IN));
                slots.push(Slot::Pid);
            }
            match &self.output {
                _ if throttled => {}
                Output::Pipes { stdout, stderr } => {
                    if let Some(f) = stdout {
                        fds.push(PollFd::new(f, PollFlags::IN));
                        slots.push(Slot::Out(0));
                    }
                    if let Some(f) = stderr {
                        fds.push(PollFd::new(f, PollFlags::IN));
                        slots.push(Slot::Out(1));
                    }
                }
                Output::Tty { master } => {
                    if let Some(f) = master {
                        fds.push(PollFd::new(f, PollFlags::IN));
                        slots.push(Slot::Out(0));
                    }
                }
            }
            if let Some(l) = &self.listener {
                fds.push(PollFd::new(l, PollFlags::IN));
                slots.push(Slot::Listener);
            }
            if !self.stdin_buf.is_empty()
                && let Some(s) = &self.stdin
            {
                fds.push(PollFd::new(s, PollFlags::OUT));
                slots.push(Slot::Stdin);
            }
            for (i, c) in self.clients.iter().enumerate() {
                let mut flags = PollFlags::IN;
                if !c.out.is_empty() {
                    flags |= PollFlags::OUT;
                }
                fds.push(PollFd::new(&c.stream, flags));
                slots.push(Slot::Client(i));
            }
            let timeout = match drain_from {
                Some(_) if throttled => Duration::from_millis(100),
                Some(d) => (d + DRAIN).saturating_duration_since(Instant::now()),
                // Without a pidfd, poll for the exit now and then.
                None if self.pidfd.is_none() => Duration::from_millis(100),
                None => Duration::from_secs(1),
            };
            match poll(&mut fds, Some(&timespec(timeout))) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(RunError::io("polling", &self.dir, e.into())),
            }
            let ready: Vec<(Slot, PollFlags)> = slots
                .iter()
                .zip(fds.iter())
                .map(|(s, f)| (*s, f.revents()))
                .filter(|(_, r)| !r.is_empty())
                .collect();
            drop(fds);
            for (slot, revents) in ready {
                match slot {
                    Slot::Pid => {}
                    Slot::Out(w) => self.read_output(w, &mut buf),
                    Slot::Listener => self.accept_clients(),
                    Slot::Stdin => self.flush_stdin(),
                    Slot::Client(i) => {
                        if revents.contains(PollFlags::OUT) {
                            self.clients[i].flush();
                        }
                        if revents.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                            self.read_client(i, &mut buf);
                        }
                    }
                }
            }
            self.flush_stdin();
            self.drop_closed_clients();
            if let Some(log) = self.log.as_mut() {
                let _ = log.flush();
            }
            if exit_code.is_none() {
                exit_code = self.reap();
                if exit_code.is_some() {
                    // Output still in the pipes is read until they close (the container's
                    // processes are gone with its pid namespace), for a bounded time.
                    drain_from = Some(Instant::now());
                }
            }
            let now = Instant::now();
            let backlog = self.backlog();
            if backlog < last_backlog || !throttled {
                progress_at = now;
            }
            last_backlog = backlog;
            if was_throttled && !throttled && drain_from.is_some() {
                drain_from = Some(now);
            }
            was_throttled = throttled;
            if let Some(d) = drain_from {
                if !self.output_open() {
                    break;
                }
                if throttled && now >= progress_at + STALLED_CLIENT {
                    tracing::warn!(
                        "dropping attached clients that stopped reading the output of an exited container"
                    );
                    for c in self.clients.iter_mut() {
                        if c.wants_output && c.out.len() >= THROTTLE_BACKLOG {
                            c.closed = true;
                        }
                    }
                    self.drop_closed_clients();
                } else if !throttled && now >= d + DRAIN {
                    break;
                }
            }
        }
        let exit_code = exit_code.unwrap_or(255);
        self.finish(hooks, exit_code)
    }

    /// Whether an attached client is so far behind that the container's output is not read.
    fn throttled(&self) -> bool {
        self.clients
            .iter()
            .any(|c| c.wants_output && !c.closed && c.out.len() >= THROTTLE_BACKLOG)
    }

    /// Output queued for the attached clients.
    fn backlog(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.wants_output && !c.closed)
            .map(|c| c.out.len())
            .sum()
    }

    fn accept_clients(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            match l.accept() {
                Ok((s, _)) => self.clients.push(Client::new(s, true, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn read_client(&mut self, i: usize, buf: &mut [u8]) {
        loop {
            match self.clients[i].stream.read(buf) {
                Ok(0) => {
                    self.clients[i].closed = true;
                    break;
                }
                Ok(n) => self.clients[i].inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.clients[i].closed = true;
                    break;
                }
            }
        }
        self.handle_client_frames(i);
    }

    fn drop_closed_clients(&mut self) {
        let mut close_stdin = false;
        self.clients.retain(|c| {
            if c.closed && c.owns_stdin {
                close_stdin = true;
            }
            !c.closed
        });
        if close_stdin && self.plan.stdin_once {
            self.stdin_close_pending = true;
            self.flush_stdin();
        }
    }

    fn finish(&mut self, hooks: &dyn ContainerHooks, exit_code: i32) -> Result<i32, RunError> {
        if let Some(log) = self.log.as_mut() {
            let _ = log.finish_partial();
        }
        self.stdin = None;
        self.output = Output::Pipes {
            stdout: None,
            stderr: None,
        };
        let exit = ExitInfo {
            exit_code,
            oom_killed: oom_killed(&self.plan.cgroups_path()),
            started_at: self.started.started_at,
            finished_at: now_nanos(),
            error: String::new(),
        };
        tracing::debug!(id = %self.plan.id, exit_code, "container exited");
        // Unmount first (removal of the writable layer needs it), record, tell the clients,
        // and only then delete the runtime's state: the exit is reported without waiting for
        // the runtime, and the lock held until the end keeps a new start away meanwhile.
        let unmounted = self.unmount();
        if let Err(e) = write_json(&self.dir, EXIT_FILE, &exit) {
            tracing::warn!(error = %e, "recording the exit failed");
        }
        if let Err(e) = hooks.on_exited(&exit) {
            tracing::warn!(error = %e, "recording the exit failed");
        }
        let removed = self.plan.auto_remove
            && hooks.on_auto_remove().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "removing the container failed");
                false
            });
        // A layer kept (no `--rm`, a restart, a failed removal) may be mounted again; the
        // marker of one about to be deleted is left to the deletion (removing it alone costs
        // ~1 ms on some disks, and the client waits for what happens before the exit is sent).
        if unmounted && !removed && self.dir.exists() {
            remove_volatile_markers(&root_mounts(&self.plan));
        }
        self.listener = None;
        let _ = std::fs::remove_file(self.dir.join(ATTACH_SOCKET));
        let payload = serde_json::to_vec(&exit).unwrap_or_default();
        for c in self.clients.iter_mut() {
            c.send_blocking(proto::EXIT, &payload);
        }
        self.clients.clear();
        self.cleanup(false);
        hooks.after_exit_reported();
        Ok(exit_code)
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Pid,
    Out(usize),
    Listener,
    Stdin,
    Client(usize),
}

/// Whether the OOM killer killed a process of the container's cgroup (read before the runtime
/// removes the cgroup): `oom_kill` in cgroup v2's `memory.events` or v1's `memory.oom_control`.
pub fn oom_killed(cgroup: &str) -> bool {
    let rel = cgroup.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
        Path::new("/sys/fs/cgroup/unified")
            .join(rel)
            .join("memory.events"),
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
    ];
    candidates.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|t| {
            t.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
            })
        })
    })
}

/// Take the monitor lock, waiting (bounded) for a previous monitor of the same container that
/// is still finishing (deleting the runtime state after reporting the exit).
fn lock_with_timeout(path: &Path, timeout: Duration) -> io::Result<Option<FileLock>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(l) = FileLock::try_lock(path)? {
            return Ok(Some(l));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), RunError> {
    let flags =
        rustix::fs::fcntl_getfl(fd).map_err(|e| RunError::Internal(format!("fcntl: {e}")))?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| RunError::Internal(format!("fcntl: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options as a pending monitor has them (not daemonizing: the test runs in-process), and
    /// the client's end of the sync socket.
    fn pending() -> (MonitorOptions, UnixStream) {
        let (client, monitor) = UnixStream::pair().unwrap();
        let opts = MonitorOptions {
            sync: Some(OwnedFd::from(monitor)),
            attach: false,
            daemonize: false,
        };
        (opts, client)
    }

    fn assign(client: &mut UnixStream, id: &str, attach: bool) {
        let a = proto::Assignment {
            id: id.to_string(),
            attach,
        };
        proto::write_frame(client, proto::ASSIGN, &serde_json::to_vec(&a).unwrap()).unwrap();
    }

    #[test]
    fn an_assignment_names_the_container_and_keeps_the_socket() {
        let (opts, mut client) = pending();
        let id = "ab".repeat(32);
        assign(&mut client, &id, true);
        match await_assignment(opts).unwrap() {
            Assignment::Container { id: got, options } => {
                assert_eq!(got, id);
                assert!(options.attach);
                assert!(!options.daemonize);
                // The same socket carries the rest of the conversation.
                let mut sync = UnixStream::from(options.sync.expect("sync socket"));
                sync.write_all(b"x").unwrap();
                let mut b = [0u8; 1];
                client.read_exact(&mut b).unwrap();
                assert_eq!(&b, b"x");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_client_that_goes_away_abandons_the_monitor() {
        let (opts, client) = pending();
        drop(client);
        assert!(matches!(
            await_assignment(opts).unwrap(),
            Assignment::Abandoned
        ));
        // A frame cut short is the same.
        let (opts, mut client) = pending();
        client.write_all(&[proto::ASSIGN, 0, 0]).unwrap();
        drop(client);
        assert!(matches!(
            await_assignment(opts).unwrap(),
            Assignment::Abandoned
        ));
    }

    #[test]
    fn bad_assignments_are_refused() {
        for id in ["", "nothex", "../../etc", &"AB".repeat(32), &"a".repeat(65)] {
            let (opts, mut client) = pending();
            assign(&mut client, id, false);
            let e = await_assignment(opts).unwrap_err();
            assert!(matches!(e, RunError::InvalidArgument(_)), "{id:?}: {e:?}");
        }
        let (opts, mut client) = pending();
        proto::write_frame(&mut client, proto::STDIN, b"hello").unwrap();
        let e = await_assignment(opts).unwrap_err();
        assert!(
            e.to_string().contains("expected a container assignment"),
            "{e}"
        );
        let (opts, mut client) = pending();
        proto::write_frame(&mut client, proto::ASSIGN, b"{not json").unwrap();
        let e = await_assignment(opts).unwrap_err();
        assert!(e.to_string().contains("bad container assignment"), "{e}");
        let e = await_assignment(MonitorOptions::default()).unwrap_err();
        assert!(e.to_string().contains("needs a sync socket"), "{e}");
    }

    #[test]
    fn the_pending_id_is_as_long_as_an_id() {
        assert_eq!(PENDING_ID.len(), 64);
        assert!(!carrel_core::digest::is_hex64(PENDING_ID));
    }
}
