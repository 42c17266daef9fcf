//! The client side of the monitor: spawn it, learn that the container started (or why not),
//! attach to its streams, stop and kill it, wait for it, repair after a dead monitor, and run
//! extra processes in the container (`exec`).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carrel_core::fs::FileLock;
use carrel_mount::{KernelMounter, Mounter};
use rustix::event::{PollFd, PollFlags, poll};

use super::proto::{self, StartError, Started};
use super::spawn;
use super::{ENV_ATTACH, ENV_SYNC_FD, EXIT_FILE, ExitInfo, LOCK_FILE, now_nanos, read_exit};
use crate::containers::runtime::{ExecOptions, RunError, Runtime, exit_code_of};
use crate::containers::spec::RunPlan;
use crate::containers::tty::{self, ConsoleSocket};

/// What the container's streams delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Standard output bytes (all output with a terminal).
    Stdout(Vec<u8>),
    /// Standard error bytes.
    Stderr(Vec<u8>),
    /// The container started.
    Started(Started),
    /// It could not be started.
    Failed(StartError),
    /// It ended and the exit is recorded.
    Exit(ExitInfo),
}

/// A connection to a container's monitor: its sync socket or an attach connection.
#[derive(Debug)]
pub struct AttachStream {
    stream: UnixStream,
}

impl AttachStream {
    /// Wrap a connected stream.
    pub fn new(stream: UnixStream) -> AttachStream {
        AttachStream { stream }
    }

    /// The next event; `Ok(None)` when the monitor closed the stream.
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        let Some((kind, payload)) = proto::read_frame(&mut self.stream)? else {
            return Ok(None);
        };
        let bad = |e: serde_json::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        Ok(Some(match kind {
            proto::STDOUT => Event::Stdout(payload),
            proto::STDERR => Event::Stderr(payload),
            proto::STARTED => Event::Started(serde_json::from_slice(&payload).map_err(bad)?),
            proto::ERROR => Event::Failed(serde_json::from_slice(&payload).map_err(bad)?),
            proto::EXIT => Event::Exit(serde_json::from_slice(&payload).map_err(bad)?),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown monitor frame kind {other}"),
                ));
            }
        }))
    }

    /// Send bytes to the container's stdin.
    pub fn send_stdin(&mut self, data: &[u8]) -> io::Result<()> {
        proto::write_frame(&mut self.stream, proto::STDIN, data)
    }

    /// Close the container's stdin (after what was sent before).
    pub fn close_stdin(&mut self) -> io::Result<()> {
        proto::write_frame(&mut self.stream, proto::STDIN_CLOSE, &[])
    }

    /// Resize the container's terminal.
    pub fn resize(&mut self, rows: u16, cols: u16) -> io::Result<()> {
        let mut p = rows.to_be_bytes().to_vec();
        p.extend_from_slice(&cols.to_be_bytes());
        proto::write_frame(&mut self.stream, proto::RESIZE, &p)
    }

    /// A second handle on the same connection (e.g. one thread writes stdin, one reads).
    pub fn try_clone(&self) -> io::Result<AttachStream> {
        Ok(AttachStream {
            stream: self.stream.try_clone()?,
        })
    }

    /// The underlying socket.
    pub fn socket(&self) -> &UnixStream {
        &self.stream
    }

    /// Copy the container's output to `stdout`/`stderr` until it exits (returning its exit) or
    /// the monitor goes away (`None`). With `stdin`, a thread copies it to the container and
    /// closes the container's stdin at its end.
    pub fn pump(
        &mut self,
        stdin: Option<Box<dyn Read + Send>>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> io::Result<Option<ExitInfo>> {
        if let Some(mut input) = stdin {
            let mut w = self.try_clone()?;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match input.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if w.send_stdin(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = w.close_stdin();
            });
        }
        loop {
            match self.next_event()? {
                None => return Ok(None),
                Some(Event::Stdout(d)) => {
                    stdout.write_all(&d)?;
                    stdout.flush()?;
                }
                Some(Event::Stderr(d)) => {
                    stderr.write_all(&d)?;
                    stderr.flush()?;
                }
                Some(Event::Exit(e)) => return Ok(Some(e)),
                Some(_) => {}
            }
        }
    }
}

/// Connect to a running container's attach socket (`<container dir>/attach.sock`).
pub fn attach(dir: &Path) -> Result<AttachStream, RunError> {
    let p = dir.join(super::ATTACH_SOCKET);
    tty::connect_unix(&p)
        .map(AttachStream::new)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => RunError::Conflict(
                "You cannot attach to a stopped container, start it first".into(),
            ),
            _ => RunError::io("connecting to", p, e),
        })
}

/// A spawned monitor whose container started.
#[derive(Debug)]
pub struct MonitorHandle {
    /// What the monitor reported.
    pub started: Started,
    /// The sync connection: carries the output (when spawned with `attach`) and the exit.
    pub stream: AttachStream,
}

impl MonitorHandle {
    /// Wait for the container to end, discarding output; `None` if the monitor went away
    /// without reporting (killed). The exit is recorded (hooks called, root unmounted, `--rm`
    /// done) when this returns; the monitor may still be deleting the runtime's state, which
    /// [`wait_monitor`] waits for.
    pub fn wait_exit(mut self) -> Result<Option<ExitInfo>, RunError> {
        loop {
            match self.stream.next_event() {
                Ok(Some(Event::Exit(e))) => return Ok(Some(e)),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(RunError::Internal(format!("reading from the monitor: {e}"))),
            }
        }
    }
}

/// Spawn a monitor with `cmd` (any program calling [`super::run_monitor`] with
/// [`super::MonitorOptions::from_env`] for the container its command line names) and wait until
/// it reports that the container runs, or why it could not start (a [`RunError::Runtime`] keeps
/// Docker's exit code). With `attach`, the returned handle's stream also carries the container's
/// output from its first byte, and accepts stdin and resizes. The `carrel` binary's own monitor
/// is spawned with [`PendingMonitor`] instead.
///
/// The monitor detaches itself (new session, not a child of the caller once it forked), its
/// stdio go to `/dev/null`, and killing the caller does not affect it.
pub fn spawn_monitor(mut cmd: Command, attach: bool) -> Result<MonitorHandle, RunError> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| RunError::io("socketpair", "", e))?;
    cmd.env(ENV_SYNC_FD, spawn::SYNC_FD.to_string())
        .env(ENV_ATTACH, if attach { "1" } else { "0" });
    let pid = spawn::spawn_detached(&cmd, theirs.as_fd())
        .map_err(|e| RunError::io("spawning the container monitor", cmd.get_program(), e))?;
    drop(theirs);
    // The monitor forks into the background at once; reap the parent half.
    reap(pid);
    wait_started(AttachStream::new(ours))
}

/// A container monitor (`PROGRAM --root ROOT container-monitor <PENDING_ID>`, the `carrel`
/// binary's hidden command) spawned before its container is ready to start: it starts up,
/// forks into the background and waits to be told which container to run
/// ([`PendingMonitor::start`]). `carrel run` spawns it first thing, so that the monitor's own
/// start-up overlaps the container's creation instead of following it. Dropped unstarted, the
/// monitor ends without having made anything.
#[derive(Debug)]
pub struct PendingMonitor {
    /// The sync socket (taken when started).
    stream: Option<UnixStream>,
    /// The spawned process, until reaped (it exits as soon as it has forked the monitor).
    pid: Option<rustix::process::Pid>,
}

impl PendingMonitor {
    /// Spawn the monitor `program` for the data root `root` (absolute).
    pub fn spawn(program: &Path, root: &Path) -> Result<PendingMonitor, RunError> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| RunError::io("socketpair", "", e))?;
        let mut cmd = Command::new(program);
        cmd.arg("--root")
            .arg(root)
            .arg("container-monitor")
            .arg(super::PENDING_ID)
            .env(ENV_SYNC_FD, spawn::SYNC_FD.to_string());
        let pid = spawn::spawn_detached(&cmd, theirs.as_fd())
            .map_err(|e| RunError::io("spawning the container monitor", program, e))?;
        Ok(PendingMonitor {
            stream: Some(ours),
            pid: Some(pid),
        })
    }

    /// Assign the container `id` (created, its run plan saved) and wait until it runs or why it
    /// could not start, as [`spawn_monitor`] does.
    pub fn start(mut self, id: &str, attach: bool) -> Result<MonitorHandle, RunError> {
        let assignment = proto::Assignment {
            id: id.to_string(),
            attach,
        };
        let payload =
            serde_json::to_vec(&assignment).map_err(|e| RunError::Internal(e.to_string()))?;
        let Some(mut stream) = self.stream.take() else {
            return Err(monitor_gone());
        };
        let sent = proto::write_frame(&mut stream, proto::ASSIGN, &payload);
        self.reap();
        if let Err(e) = sent {
            tracing::debug!(error = %e, "the pending monitor is gone");
            return Err(monitor_gone());
        }
        wait_started(AttachStream::new(stream))
    }

    fn reap(&mut self) {
        if let Some(pid) = self.pid.take() {
            reap(pid);
        }
    }
}

impl Drop for PendingMonitor {
    /// Close the socket first (an unstarted monitor then ends), then reap the spawned process.
    fn drop(&mut self) {
        self.stream = None;
        self.reap();
    }
}

fn monitor_gone() -> RunError {
    RunError::Internal(
        "the container monitor exited before the container started (see the log with --log-level debug)".into(),
    )
}

/// Wait on a new monitor's sync `stream` until it reports the container running, or why it
/// could not start it.
fn wait_started(mut stream: AttachStream) -> Result<MonitorHandle, RunError> {
    loop {
        match stream.next_event() {
            Ok(Some(Event::Started(started))) => return Ok(MonitorHandle { started, stream }),
            Ok(Some(Event::Failed(f))) => {
                return Err(if f.op.is_empty() {
                    match f.kind.as_str() {
                        "not found" => RunError::NotFound(f.message),
                        "invalid argument" => RunError::InvalidArgument(f.message),
                        "conflict" | "already exists" => RunError::Conflict(f.message),
                        "failed precondition" => RunError::RuntimeUnavailable(f.message),
                        "unavailable" => RunError::Timeout(f.message),
                        _ => RunError::Internal(f.message),
                    }
                } else {
                    let prefix = format!("OCI runtime {} failed: ", f.op);
                    RunError::Runtime {
                        message: f
                            .message
                            .strip_prefix(&prefix)
                            .unwrap_or(&f.message)
                            .to_string(),
                        op: f.op,
                        exit_code: f.exit_code,
                    }
                });
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err(monitor_gone()),
        }
    }
}

/// Wait for the child `pid` to end (retrying interrupted waits).
fn reap(pid: rustix::process::Pid) {
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
    {}
}

/// Whether the monitor of the container directory `dir` is alive (holds its lock).
pub fn monitor_alive(dir: &Path) -> bool {
    if !dir.join(LOCK_FILE).exists() {
        return false;
    }
    matches!(FileLock::try_lock_existing(&dir.join(LOCK_FILE)), Ok(None))
}

/// Wait until the monitor of `dir` has ended (its exit recorded), at most `timeout` (`None`:
/// forever). Returns whether it ended.
pub fn wait_monitor(dir: &Path, timeout: Option<Duration>) -> bool {
    let lock = dir.join(LOCK_FILE);
    if timeout.is_none() {
        if !lock.exists() {
            return true;
        }
        // A shared lock is granted once the monitor's exclusive one is gone.
        return FileLock::lock_shared(&lock).is_ok();
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pause = Duration::from_millis(1);
    loop {
        if !monitor_alive(dir) {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Send `signal` to the container's init (`kill` / the first step of `stop`). A container that
/// is not running is a conflict error in Docker's words.
pub fn kill(runtime: &Runtime, id: &str, signal: i32) -> Result<(), RunError> {
    match runtime.state(id)? {
        Some(s) if matches!(s.status.as_str(), "running" | "created" | "paused") => {
            runtime.kill(id, signal, false)
        }
        _ => Err(RunError::Conflict(format!("container {id} is not running"))),
    }
}

fn pidfd_wait(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
}

/// Docker's `stop`: send `signal` (the container's stop signal), wait up to `timeout` for the
/// process to end, then SIGKILL it; finally wait (bounded) for the monitor in `dir` to record
/// the exit. A container that does not run is not an error. Returns whether SIGKILL was needed.
pub fn stop(
    runtime: &Runtime,
    id: &str,
    dir: &Path,
    signal: i32,
    timeout: Duration,
) -> Result<bool, RunError> {
    let state = match runtime.state(id)? {
        Some(s) if s.status != "stopped" && s.pid > 0 => s,
        _ => {
            wait_monitor(dir, Some(Duration::from_secs(10)));
            return Ok(false);
        }
    };
    let pidfd = rustix::process::Pid::from_raw(state.pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let mut killed = false;
    if signal != libc::SIGKILL {
        match runtime.kill(id, signal, false) {
            Ok(()) | Err(RunError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let ended = match &pidfd {
        Some(p) if signal != libc::SIGKILL => pidfd_wait(p, timeout),
        Some(_) => false,
        None => true,
    };
    if !ended {
        tracing::debug!(id, "container did not stop in time; killing it");
        killed = true;
        match runtime.kill(id, libc::SIGKILL, false) {
            Ok(()) | Err(RunError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some(p) = &pidfd
            && !pidfd_wait(p, Duration::from_secs(10))
        {
            return Err(RunError::Timeout(format!(
                "container {id} did not exit within 10 seconds of SIGKILL"
            )));
        }
    }
    if !wait_monitor(dir, Some(Duration::from_secs(10))) {
        return Err(RunError::Timeout(format!(
            "the monitor of container {id} did not record its exit in time"
        )));
    }
    Ok(killed)
}

/// What [`recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The monitor is alive: nothing to repair.
    MonitorAlive,
    /// The monitor is gone and left nothing behind (it recorded the exit, or never ran).
    Clean(Option<ExitInfo>),
    /// The monitor died without finishing: the container was killed and deleted from the
    /// runtime, its mounts released; the exit is the recorded one or 137.
    Repaired(ExitInfo),
}

/// Repair a container whose monitor may have died: `dir` is the container directory (its
/// `plan.json` says which runtime and root). Cheap when there is nothing to do (a lock attempt
/// and a file read). The store calls it for containers it believes running when opening or
/// inspecting them, and records the returned exit.
pub fn recover(dir: &Path) -> Result<Recovery, RunError> {
    let lock_path = dir.join(LOCK_FILE);
    // Never recreated here: the directory may be being removed (an auto-removed container).
    let _lock = match FileLock::try_lock_existing(&lock_path) {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(Recovery::MonitorAlive),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Recovery::Clean(None)),
        Err(e) => return Err(RunError::io("locking", lock_path, e)),
    };
    let plan = match RunPlan::load(dir) {
        Ok(p) => p,
        Err(_) => return Ok(Recovery::Clean(read_exit(dir))),
    };
    let recorded = read_exit(dir);
    let started = super::read_started(dir);
    let mounts = carrel_mount::mountinfo::mounts_under(&plan.rootfs).unwrap_or_default();
    // A monitor that finished wrote exit.json after unmounting; one that never started a
    // container wrote no monitor.json.
    if mounts.is_empty()
        && !plan.runtime.has_state(&plan.id)
        && (recorded.is_some() || started.is_none())
    {
        return Ok(Recovery::Clean(recorded));
    }
    let rt = &plan.runtime;
    if let Ok(Some(state)) = rt.state(&plan.id) {
        if state.status != "stopped" {
            let _ = rt.kill(&plan.id, libc::SIGKILL, true);
            if let Some(p) = rustix::process::Pid::from_raw(state.pid)
                && let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
            {
                pidfd_wait(&fd, Duration::from_secs(10));
            }
        }
        rt.delete(&plan.id, true)?;
    }
    let m = KernelMounter::new();
    for mi in carrel_mount::mountinfo::mounts_under(&plan.rootfs)
        .map_err(RunError::Mount)?
        .iter()
        .chain(
            carrel_mount::mountinfo::mounts_under(dir)
                .map_err(RunError::Mount)?
                .iter(),
        )
    {
        if let Err(e) = m.unmount(&mi.mount_point, false) {
            tracing::debug!(error = %e, "unmount failed; detaching");
            m.unmount(&mi.mount_point, true)?;
        }
    }
    let _ = std::fs::remove_file(dir.join(super::ATTACH_SOCKET));
    let exit = recorded.unwrap_or(ExitInfo {
        exit_code: 137,
        oom_killed: false,
        started_at: started.map(|s| s.started_at).unwrap_or(0),
        finished_at: now_nanos(),
        error: String::new(),
    });
    let data = serde_json::to_vec(&exit).map_err(|e| RunError::Internal(e.to_string()))?;
    carrel_core::fs::atomic_write(dir, EXIT_FILE, &data, 0o600)
        .map_err(|e| RunError::io("writing", dir.join(EXIT_FILE), e))?;
    Ok(Recovery::Repaired(exit))
}

/// A process to run in a running container (`exec`).
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Command and arguments.
    pub args: Vec<String>,
    /// Extra environment (`-e`), added to the container's.
    pub env: Vec<String>,
    /// User, already resolved (`None`: the container's, or [`ExecRequest::user_spec`]).
    pub user: Option<crate::containers::spec::ResolvedUser>,
    /// `exec --user` as given, resolved inside the container's (mounted) root.
    pub user_spec: Option<String>,
    /// Working directory (empty: the container's).
    pub cwd: String,
    /// Allocate a terminal.
    pub tty: bool,
}

/// The OCI process for `req` in the container of `plan`, with the container's capabilities,
/// environment and user as defaults.
pub fn exec_process(
    plan: &RunPlan,
    req: &ExecRequest,
) -> Result<oci_spec::runtime::Process, RunError> {
    let mut base = plan.clone();
    // The container's own user as its monitor resolved it (the root is mounted while it runs).
    let root = || {
        carrel_core::fs::Root::open(&plan.rootfs)
            .map_err(|e| RunError::io("opening", &plan.rootfs, e))
    };
    if let Some(spec) = base.user_spec.take() {
        base.user = crate::containers::spec::resolve_user(&root()?, &spec, &base.group_add)?;
        if !base.env.iter().any(|e| e.starts_with("HOME=")) {
            base.env.push(format!("HOME={}", base.user.home));
        }
    }
    if let Some(spec) = &req.user_spec {
        base.user = crate::containers::spec::resolve_user(&root()?, spec, &[])?;
    }
    base.args = req.args.clone();
    base.tty = req.tty;
    base.console_size = (0, 0);
    for kv in &req.env {
        let key = kv.split('=').next().unwrap_or("");
        base.env.retain(|e| e.split('=').next() != Some(key));
        base.env.push(kv.clone());
    }
    if let Some(u) = &req.user {
        base.user = u.clone();
    }
    if !req.cwd.is_empty() {
        base.cwd = req.cwd.clone();
    }
    let spec = crate::containers::spec::oci_spec(&base)?;
    spec.process()
        .clone()
        .ok_or_else(|| RunError::Internal("spec without process".into()))
}

/// `exec` without a terminal: the process's stdio are the given ones (e.g. the caller's);
/// returns its exit code. A process that cannot be started is Docker's `OCI runtime exec
/// failed` error (exit code 126 or 127).
pub fn exec(
    plan: &RunPlan,
    req: &ExecRequest,
    stdio: (Stdio, Stdio, Stdio),
) -> Result<i32, RunError> {
    let process = exec_process(plan, req)?;
    plan.runtime.exec(
        &plan.id,
        &plan.bundle,
        &process,
        &ExecOptions::default(),
        stdio,
    )
}

/// `exec` without a terminal for a client that shows the process's output (`carrel exec`): like
/// [`exec`], but the process's stderr is relayed to `stderr` and nothing the runtime itself
/// prints there reaches it. A runtime writes its error to its stderr as well as to its log, and
/// the process inherits that same stderr; so the process is started detached (with this process
/// as a child subreaper, it becomes our child once the runtime exits) and what the pipe carries
/// before the runtime has exited is held back: dropped when the runtime failed (the error is
/// returned, once, from its log), passed on when the process started. Returns the process's exit
/// code once it ended and its stderr is drained (bounded, for descendants that keep it open).
pub fn exec_relayed(
    plan: &RunPlan,
    req: &ExecRequest,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Box<dyn Write + Send>,
) -> Result<i32, RunError> {
    use std::sync::{Arc, Mutex};
    let process = exec_process(plan, req)?;
    let pid_file = plan
        .bundle
        .join(format!("exec-{}-{}.pid", std::process::id(), now_nanos()));
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let opts = ExecOptions {
        detach: true,
        pid_file: Some(pid_file.clone()),
        ..Default::default()
    };
    let mut cmd = plan
        .runtime
        .exec_command(&plan.id, &plan.bundle, &process, &opts)?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| RunError::io("creating pipe for", &plan.bundle, e.into()))?;
    cmd.stdin(stdin).stdout(stdout).stderr(Stdio::from(err_w));
    let spawned = cmd.spawn();
    // Our copy of the pipe's write end goes with the Command's stdio.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawned.map_err(|e| RunError::io("running", &plan.runtime.path, e))?;
    // Relay: `None` while held back, then straight through.
    struct Relay {
        held: Option<Vec<u8>>,
        out: Box<dyn Write + Send>,
    }
    let relay = Arc::new(Mutex::new(Relay {
        held: Some(Vec::new()),
        out: stderr,
    }));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    {
        let relay = relay.clone();
        let mut reader = std::fs::File::from(err_r);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut r = relay.lock().unwrap_or_else(|p| p.into_inner());
                        match r.held.as_mut() {
                            Some(h) => h.extend_from_slice(&buf[..n]),
                            None => {
                                let _ = r.out.write_all(&buf[..n]);
                                let _ = r.out.flush();
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done_tx.send(());
        });
    }
    let status = child
        .wait()
        .map_err(|e| RunError::io("running", &plan.runtime.path, e))?;
    let started = plan.runtime.finish_exec(&cmd, status);
    let pid = crate::containers::runtime::read_pid_file(&pid_file);
    let _ = std::fs::remove_file(&pid_file);
    let held = {
        let mut r = relay.lock().unwrap_or_else(|p| p.into_inner());
        let held = r.held.take().unwrap_or_default();
        if started.is_ok() && status.success() {
            let _ = r.out.write_all(&held);
            let _ = r.out.flush();
        }
        held
    };
    started?;
    if !status.success() {
        // Failed without logging why: its stderr says it.
        let message = crate::containers::runtime::runtime_error_message(None, &held)
            .unwrap_or_else(|| format!("{} exec exited with {status}", plan.runtime.name));
        let exit_code = match crate::containers::runtime::exit_code_for_message(&message) {
            125 => 126,
            c => c,
        };
        return Err(RunError::Runtime {
            op: "exec".into(),
            message,
            exit_code,
        });
    }
    let pid = pid?;
    let mut st: libc::c_int = 0;
    // SAFETY: waitpid on the exec'd process, our child through the subreaper.
    let r = loop {
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    if r != pid {
        return Err(RunError::Internal(format!(
            "lost the exit status of exec'd process {pid}"
        )));
    }
    let code = if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        255
    };
    // Its stderr ends with it (and the container's processes with the container); a descendant
    // that keeps it open is not waited for long.
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    Ok(code)
}

/// `exec -t`: run the process on a new terminal and relay it to `input`/`output` (normally the
/// caller's terminal, which the caller puts in raw mode with [`tty::RawMode`]); resizes of an
/// `input` terminal are forwarded. Returns the process's exit code.
pub fn exec_tty(
    plan: &RunPlan,
    req: &ExecRequest,
    input: Option<std::os::fd::BorrowedFd<'_>>,
    output: std::os::fd::BorrowedFd<'_>,
) -> Result<i32, RunError> {
    let mut req = req.clone();
    req.tty = true;
    let process = exec_process(plan, &req)?;
    let name = format!("exec-{}.sock", std::process::id());
    let console = ConsoleSocket::bind(&plan.bundle, &name)?;
    let pid_file = plan.bundle.join(format!("exec-{}.pid", std::process::id()));
    // runc only uses a console socket when it detaches: the process is started detached and,
    // with this process as a child subreaper, becomes our child once the runtime exits.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let opts = ExecOptions {
        tty: true,
        console_socket: Some(console.path.clone()),
        detach: true,
        pid_file: Some(pid_file.clone()),
    };
    let mut cmd = plan
        .runtime
        .exec_command(&plan.id, &plan.bundle, &process, &opts)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| RunError::io("running", &plan.runtime.path, e))?;
    let master = console.receive_master(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(None))
    });
    let status = child
        .wait()
        .map_err(|e| RunError::io("running", &plan.runtime.path, e))?;
    plan.runtime.finish_exec(&cmd, status)?;
    let master = master?;
    let pid = crate::containers::runtime::read_pid_file(&pid_file);
    let _ = std::fs::remove_file(&pid_file);
    let pid = pid?;
    let mut code: Option<i32> = None;
    let reap = |flags: libc::c_int| -> Option<i32> {
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid on the exec'd process, our child through the subreaper.
        let r = unsafe { libc::waitpid(pid, &mut st, flags) };
        if r == pid {
            Some(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else if libc::WIFSIGNALED(st) {
                128 + libc::WTERMSIG(st)
            } else {
                255
            })
        } else if r < 0 {
            // Not our child (e.g. reaped elsewhere): nothing more to learn.
            Some(-1)
        } else {
            None
        }
    };
    let relayed = tty::relay(master.as_fd(), input, output, || {
        if code.is_none() {
            code = reap(libc::WNOHANG);
        }
        code.is_some()
    });
    drop(master);
    let code = match code {
        Some(c) => c,
        None => reap(0).unwrap_or(-1),
    };
    relayed.map_err(|e| RunError::io("relaying the terminal of", &plan.bundle, e))?;
    if code < 0 {
        return Err(RunError::Internal(format!(
            "lost the exit status of exec'd process {pid}"
        )));
    }
    Ok(code)
}

/// The exit code of a finished `std::process` child as a shell reports it.
pub fn status_code(status: std::process::ExitStatus) -> i32 {
    exit_code_of(status)
}

/// Kill every process of the container and delete it from the runtime (for `rm -f` of a
/// container whose monitor is gone, and for test clean-up). Errors are ignored.
pub fn force_delete(runtime: &Runtime, id: &str) {
    let _ = runtime.kill(id, libc::SIGKILL, true);
    let _ = runtime.delete(id, true);
}
