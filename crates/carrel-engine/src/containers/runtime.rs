//! The OCI runtime adapter: finds `runc`/`crun` (or a runtime given by path), probes which ones
//! work on this host (once per boot, cached under the data root), and calls them through the
//! runtime command-line convention (`create`, `start`, `state`, `kill`, `delete`, `exec`).
//!
//! Runtime state lives under `<data root>/runtime/<name>` (the runtime's `--root`), so two
//! carrel data roots never see each other's containers. Runtime failures become [`RunError`]s
//! whose messages and exit codes follow Docker (`OCI runtime create failed: …`, 127 for a missing
//! executable, 126 for one that cannot be executed, 125 otherwise).

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use carrel_core::{ErrorKind, HasKind};
use serde::{Deserialize, Serialize};

/// A failure of the run machinery (spec, runtime, monitor).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The OCI runtime refused an operation. The message is Docker's (`OCI runtime create failed:
    /// …`) and `exit_code` what `docker run` exits with for it (125, 126 or 127).
    #[error("OCI runtime {op} failed: {message}")]
    Runtime {
        /// `create`, `start`, `exec`, `kill`, `delete`.
        op: String,
        /// The runtime's own message.
        message: String,
        /// Docker's exit code for this failure.
        exit_code: i32,
    },
    /// No usable OCI runtime (missing binary, or one that does not work on this host).
    #[error("{0}")]
    RuntimeUnavailable(String),
    /// The request is malformed (unknown user, relative working directory, bad signal).
    #[error("{0}")]
    InvalidArgument(String),
    /// The object does not exist (container unknown to the runtime, no monitor).
    #[error("{0}")]
    NotFound(String),
    /// The container's state forbids the operation (not running, already running).
    #[error("{0}")]
    Conflict(String),
    /// Something did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// The monitor failed or broke its protocol.
    #[error("{0}")]
    Internal(String),
    /// Mounting or unmounting the container's filesystems failed.
    #[error(transparent)]
    Mount(#[from] carrel_mount::MountError),
    /// A filesystem or process operation failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl RunError {
    /// Wrap an I/O error with what was being done to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> RunError {
        RunError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// The exit status `docker run` uses for this failure: 126/127 for entrypoints that cannot
    /// be executed or found, 125 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Runtime { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}

impl HasKind for RunError {
    fn kind(&self) -> ErrorKind {
        match self {
            RunError::Runtime { exit_code, .. } if *exit_code != 125 => ErrorKind::InvalidArgument,
            RunError::Runtime { .. } => ErrorKind::Internal,
            RunError::RuntimeUnavailable(_) => ErrorKind::Precondition,
            RunError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            RunError::NotFound(_) => ErrorKind::NotFound,
            RunError::Conflict(_) => ErrorKind::Conflict,
            RunError::Timeout(_) => ErrorKind::Unavailable,
            RunError::Internal(_) => ErrorKind::Internal,
            RunError::Mount(e) => e.kind(),
            RunError::Io { source, .. } => ErrorKind::from_io(source),
        }
    }
}

impl From<RunError> for crate::EngineError {
    fn from(e: RunError) -> Self {
        use crate::EngineError as E;
        let msg = e.to_string();
        match e.kind() {
            ErrorKind::NotFound => E::NotFound(msg),
            ErrorKind::AlreadyExists => E::AlreadyExists(msg),
            ErrorKind::Conflict => E::Conflict(msg),
            ErrorKind::InvalidArgument => E::InvalidArgument(msg),
            ErrorKind::Permission => E::Permission(msg),
            _ => E::Precondition(msg),
        }
    }
}

/// Docker's exit code for a runtime's error message about starting a process (`docker run`'s
/// rules: 127 when the executable is not found, 126 when it cannot be executed, else 125).
pub fn exit_code_for_message(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("executable file not found")
        || m.contains("no such file or directory")
        || (m.contains("executable file") && m.contains("not found"))
    {
        127
    } else if m.contains("permission denied")
        || m.contains("is a directory")
        || m.contains("exec format error")
        || m.contains("operation not permitted")
    {
        126
    } else {
        125
    }
}

/// One OCI runtime binary and where it keeps its state for this data root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// The name shown to users (`crun`, `runc`, or the file name of a runtime given by path).
    pub name: String,
    /// The binary.
    pub path: PathBuf,
    /// The runtime's `--root` (`<data root>/runtime/<name>`).
    pub state_root: PathBuf,
}

/// The runtimes carrel knows by name, in order of preference.
pub const KNOWN_RUNTIMES: [&str; 2] = ["crun", "runc"];

/// The state of a container as the runtime reports it (`state ID`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RuntimeState {
    /// Container id.
    pub id: String,
    /// Pid of the container's init process (0 when stopped).
    #[serde(default)]
    pub pid: i32,
    /// `creating`, `created`, `running`, `paused`, `stopped`.
    pub status: String,
    /// The bundle directory.
    #[serde(default)]
    pub bundle: PathBuf,
}

/// How `runtime exec` runs a process.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Allocate a terminal; the runtime sends its master over `console_socket`.
    pub tty: bool,
    /// The console socket (required with `tty`).
    pub console_socket: Option<PathBuf>,
    /// Return once the process started (its pid is written to `pid_file`).
    pub detach: bool,
    /// Where the runtime writes the process's pid.
    pub pid_file: Option<PathBuf>,
}

/// Search `PATH` (plus the usual sbin directories, which `sudo` may drop) for `name`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    let extra = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn install_hint(name: &str) -> String {
    match name {
        "crun" | "runc" => format!("install it with `apt-get install {name}`"),
        _ => "install crun or runc (`apt-get install crun`)".into(),
    }
}

impl Runtime {
    /// The runtime `name_or_path` (a name looked up in `PATH`, or a path) with its state under
    /// `data_root`. Does not check that it works on this host (see [`RuntimeProbe`]).
    pub fn locate(name_or_path: &str, data_root: &Path) -> Result<Runtime, RunError> {
        let (name, path) = if name_or_path.contains('/') {
            let p = PathBuf::from(name_or_path);
            if !is_executable(&p) {
                return Err(RunError::RuntimeUnavailable(format!(
                    "OCI runtime {name_or_path} not found or not executable: {}",
                    install_hint("")
                )));
            }
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| name_or_path.to_string());
            (name, p)
        } else {
            if name_or_path.is_empty() || !carrel_core::fs::is_plain_name(name_or_path.as_ref()) {
                return Err(RunError::InvalidArgument(format!(
                    "invalid OCI runtime name {name_or_path:?}"
                )));
            }
            let p = find_in_path(name_or_path).ok_or_else(|| {
                RunError::RuntimeUnavailable(format!(
                    "OCI runtime {name_or_path:?} not found in $PATH: {}",
                    install_hint(name_or_path)
                ))
            })?;
            (name_or_path.to_string(), p)
        };
        let state_root = data_root.join("runtime").join(&name);
        Ok(Runtime {
            name,
            path,
            state_root,
        })
    }

    fn base(&self, log: Option<&Path>) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&self.state_root);
        if let Some(log) = log {
            c.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        c
    }

    fn ensure_state_root(&self) -> Result<(), RunError> {
        if !self.state_root.is_dir() {
            carrel_core::fs::create_dir_mode(&self.state_root, 0o700).map_err(|e| {
                RunError::io("creating runtime state directory", &self.state_root, e)
            })?;
        }
        Ok(())
    }

    /// The `create` command line, for a caller that sets up the container's stdio on it (the
    /// container inherits the runtime's stdin/stdout/stderr unless a console socket is given).
    pub fn create_command(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        log: Option<&Path>,
    ) -> Result<Command, RunError> {
        self.bundle_command(&["create"], id, bundle, pid_file, console_socket, log)
    }

    /// The `run --detach` command line: `create` and `start` in one runtime call (what the
    /// monitor uses: one runtime process fewer per container start). Failures read as
    /// `create` failures, as Docker reports them.
    pub fn run_detached_command(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        log: Option<&Path>,
    ) -> Result<Command, RunError> {
        self.bundle_command(
            &["run", "--detach"],
            id,
            bundle,
            pid_file,
            console_socket,
            log,
        )
    }

    fn bundle_command(
        &self,
        verb: &[&str],
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        log: Option<&Path>,
    ) -> Result<Command, RunError> {
        self.ensure_state_root()?;
        let mut c = self.base(log);
        c.args(verb)
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        if let Some(s) = console_socket {
            c.arg("--console-socket").arg(s);
        }
        c.arg(id);
        Ok(c)
    }

    /// Turn the end of a runtime call into an error when it failed: the message is the last
    /// error in the runtime's JSON `log`, else the last line of its `stderr`.
    pub fn check(
        &self,
        op: &str,
        status: ExitStatus,
        stderr: &[u8],
        log: Option<&Path>,
    ) -> Result<(), RunError> {
        if status.success() {
            return Ok(());
        }
        let message = runtime_error_message(log, stderr)
            .unwrap_or_else(|| format!("{} {op} exited with {status}", self.name));
        let mut exit_code = exit_code_for_message(&message);
        if op == "exec" && exit_code == 125 {
            exit_code = 126;
        }
        Err(RunError::Runtime {
            op: op.to_string(),
            message,
            exit_code,
        })
    }

    fn run(&self, op: &str, mut cmd: Command, log: Option<&Path>) -> Result<Vec<u8>, RunError> {
        cmd.stdin(Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| RunError::io("running", &self.path, e))?;
        self.check(op, out.status, &out.stderr, log)?;
        Ok(out.stdout)
    }

    /// `create` with the container's stdio connected to the given files.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: Option<&Path>,
        stdio: (Stdio, Stdio, Stdio),
    ) -> Result<(), RunError> {
        let mut cmd = self.create_command(id, bundle, pid_file, None, log)?;
        cmd.stdin(stdio.0).stdout(stdio.1).stderr(stdio.2);
        let status = cmd
            .status()
            .map_err(|e| RunError::io("running", &self.path, e))?;
        self.check("create", status, &[], log)
    }

    /// `run --detach` (create and start) with the container's stdio connected to the given
    /// files.
    pub fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: Option<&Path>,
        stdio: (Stdio, Stdio, Stdio),
    ) -> Result<(), RunError> {
        let mut cmd = self.run_detached_command(id, bundle, pid_file, None, log)?;
        cmd.stdin(stdio.0).stdout(stdio.1).stderr(stdio.2);
        let status = cmd
            .status()
            .map_err(|e| RunError::io("running", &self.path, e))?;
        self.check("create", status, &[], log)
    }

    /// Whether the runtime keeps state for container `id` (a cheap check of its state
    /// directory, `<state root>/<id>`, which runc and crun both use).
    pub fn has_state(&self, id: &str) -> bool {
        carrel_core::fs::is_plain_name(id.as_ref()) && self.state_root.join(id).exists()
    }

    /// `start ID`: run the created container's process.
    pub fn start(&self, id: &str, log: Option<&Path>) -> Result<(), RunError> {
        let mut c = self.base(log);
        c.arg("start").arg(id);
        self.run("start", c, log).map(drop)
    }

    /// `state ID`; `Ok(None)` when the runtime does not know the container.
    pub fn state(&self, id: &str) -> Result<Option<RuntimeState>, RunError> {
        let mut c = self.base(None);
        c.arg("state").arg(id).stdin(Stdio::null());
        let out = c
            .output()
            .map_err(|e| RunError::io("running", &self.path, e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if is_not_found(&err) {
                return Ok(None);
            }
            self.check("state", out.status, &out.stderr, None)?;
        }
        serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
            RunError::Internal(format!("{} state {id}: unreadable answer: {e}", self.name))
        })
    }

    /// `kill ID SIGNAL` (`--all`: every process of the container).
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RunError> {
        let mut c = self.base(None);
        c.arg("kill");
        if all {
            c.arg("--all");
        }
        c.arg(id).arg(signal.to_string());
        match self.run("kill", c, None) {
            Ok(_) => Ok(()),
            Err(RunError::Runtime { message, .. }) if is_not_running(&message) => {
                Err(RunError::Conflict(format!("container {id} is not running")))
            }
            Err(e) => Err(e),
        }
    }

    /// `pause ID`: freeze every process of the container (cgroup freezer).
    pub fn pause(&self, id: &str) -> Result<(), RunError> {
        let mut c = self.base(None);
        c.arg("pause").arg(id);
        match self.run("pause", c, None) {
            Err(RunError::Runtime { message, .. }) if is_not_running(&message) => {
                Err(RunError::Conflict(format!("container {id} is not running")))
            }
            other => other.map(drop),
        }
    }

    /// `resume ID`: thaw a container frozen by [`Runtime::pause`].
    pub fn resume(&self, id: &str) -> Result<(), RunError> {
        let mut c = self.base(None);
        c.arg("resume").arg(id);
        self.run("resume", c, None).map(drop)
    }

    /// `delete [--force] ID`. A container the runtime does not know is not an error.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RunError> {
        let mut c = self.base(None);
        c.arg("delete");
        if force {
            c.arg("--force");
        }
        c.arg(id);
        match self.run("delete", c, None) {
            Err(RunError::Runtime { message, .. }) if is_not_found(&message) => Ok(()),
            other => other.map(drop),
        }
    }

    /// `exec --process FILE ID` with the process described by `process`, its stdio connected to
    /// `stdio` (ignored with a terminal). Without `detach` this waits and returns the process's
    /// exit code (128+N for a signal); with it, it returns 0 once the process started.
    pub fn exec(
        &self,
        id: &str,
        bundle: &Path,
        process: &oci_spec::runtime::Process,
        opts: &ExecOptions,
        stdio: (Stdio, Stdio, Stdio),
    ) -> Result<i32, RunError> {
        let mut cmd = self.exec_command(id, bundle, process, opts)?;
        cmd.stdin(stdio.0).stdout(stdio.1).stderr(stdio.2);
        let status = cmd
            .status()
            .map_err(|e| RunError::io("running", &self.path, e))?;
        self.finish_exec(&cmd, status)
    }

    /// The `exec` command line (for callers that spawn it themselves, e.g. to relay a terminal
    /// while it runs); finish with [`Runtime::finish_exec`].
    pub fn exec_command(
        &self,
        id: &str,
        bundle: &Path,
        process: &oci_spec::runtime::Process,
        opts: &ExecOptions,
    ) -> Result<Command, RunError> {
        let tag = format!(
            "exec-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let pfile = bundle.join(format!("{tag}.json"));
        let data = serde_json::to_vec(process)
            .map_err(|e| RunError::Internal(format!("encoding exec process: {e}")))?;
        std::fs::write(&pfile, data).map_err(|e| RunError::io("writing", &pfile, e))?;
        let log = bundle.join(format!("{tag}.log"));
        let mut c = self.base(Some(&log));
        c.arg("exec").arg("--process").arg(&pfile);
        if opts.tty {
            c.arg("--tty");
            if let Some(s) = &opts.console_socket {
                c.arg("--console-socket").arg(s);
            }
        }
        if opts.detach {
            c.arg("--detach");
        }
        if let Some(p) = &opts.pid_file {
            c.arg("--pid-file").arg(p);
        }
        c.arg(id);
        Ok(c)
    }

    /// Interpret the end of an `exec` started from [`Runtime::exec_command`]: the runtime's own
    /// failure becomes an error (Docker's `OCI runtime exec failed`), otherwise the process's exit
    /// code is returned. Removes the temporary process and log files.
    pub fn finish_exec(&self, cmd: &Command, status: ExitStatus) -> Result<i32, RunError> {
        let args: Vec<PathBuf> = cmd.get_args().map(PathBuf::from).collect();
        let find = |flag: &str| {
            args.iter()
                .position(|a| a.as_os_str() == flag)
                .and_then(|i| args.get(i + 1).cloned())
        };
        let log = find("--log");
        let pfile = find("--process");
        let logged = log
            .as_deref()
            .and_then(|l| runtime_error_message(Some(l), &[]));
        for p in [log, pfile].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
        if let Some(message) = logged {
            let code = match exit_code_for_message(&message) {
                125 => 126,
                c => c,
            };
            return Err(RunError::Runtime {
                op: "exec".into(),
                message,
                exit_code: code,
            });
        }
        Ok(exit_code_of(status))
    }
}

/// The exit code of a finished process as a shell reports it (128+N for signal N).
pub fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 255,
    }
}

fn is_not_found(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("does not exist") || m.contains("not found") || m.contains("no such file")
}

fn is_not_running(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("not running")
        || m.contains("process already finished")
        || m.contains("no such process")
        || m.contains("container not running")
}

/// The last error a runtime wrote to its JSON log (`{"level":"error","msg":…}` lines), else the
/// last meaningful line of its stderr (runc's `time=… level=error msg="…"` unwrapped).
pub fn runtime_error_message(log: Option<&Path>, stderr: &[u8]) -> Option<String> {
    if let Some(log) = log
        && let Ok(text) = std::fs::read_to_string(log)
    {
        // crun does not end its records with a newline: split on `}{` boundaries too.
        let text = text.replace("}{", "}\n{");
        let msg = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(|v| matches!(v["level"].as_str(), Some("error") | Some("fatal")))
            .filter_map(|v| v["msg"].as_str().map(str::to_string))
            .next_back();
        if msg.is_some() {
            return msg;
        }
    }
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    if let Some(i) = line.find("msg=\"") {
        let rest = &line[i + 5..];
        let end = rest.rfind('"').unwrap_or(rest.len());
        return Some(rest[..end].replace("\\\"", "\""));
    }
    Some(line.to_string())
}

/// Whether each runtime works on this host, and the default. Probed once per boot and cached in
/// `<data root>/runtime/probe.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeProbe {
    /// The boot the probe is valid for (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Every known runtime found on the host.
    pub runtimes: Vec<ProbedRuntime>,
}

/// One probed runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbedRuntime {
    /// Name (`crun`).
    pub name: String,
    /// Binary.
    pub path: PathBuf,
    /// Its first `--version` line.
    pub version: String,
    /// Whether it can run containers here.
    pub works: bool,
    /// Why not, when it does not.
    pub reason: String,
}

const PROBE_FILE: &str = "probe.json";

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// crun before 1.9 refuses hybrid cgroup layouts (v1 hierarchies plus a v2 `unified` mount)
/// while any controller is enabled on the v2 side. Returns the reason when that is the case here.
pub fn crun_hybrid_refusal() -> Option<String> {
    let unified = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let controllers = std::fs::read_to_string(unified).ok()?;
    let controllers = controllers.trim();
    if controllers.is_empty() {
        return None;
    }
    Some(format!(
        "cgroups in hybrid mode not supported: controllers {controllers:?} are enabled on /sys/fs/cgroup/unified; mount them as cgroup v1 hierarchies or use runc"
    ))
}

impl RuntimeProbe {
    /// The probe for `data_root`: the cached one when it is from this boot and the binaries are
    /// the same, else a fresh probe (a real `create` of an empty container per runtime) that is
    /// then cached.
    pub fn get(data_root: &Path) -> RuntimeProbe {
        let dir = data_root.join("runtime");
        let boot = boot_id();
        let found: Vec<(String, PathBuf)> = KNOWN_RUNTIMES
            .iter()
            .filter_map(|n| find_in_path(n).map(|p| (n.to_string(), p)))
            .collect();
        let cached = || {
            std::fs::read(dir.join(PROBE_FILE))
                .ok()
                .and_then(|data| serde_json::from_slice::<RuntimeProbe>(&data).ok())
                .filter(|cached| {
                    cached.boot_id == boot
                        && cached
                            .runtimes
                            .iter()
                            .map(|r| (r.name.clone(), r.path.clone()))
                            .eq(found.iter().cloned())
                })
        };
        if let Some(c) = cached() {
            return c;
        }
        // One probe at a time (processes, and threads of one process such as `carrel serve`,
        // whose probe containers would otherwise share names): the others use its result.
        let _probing = carrel_core::fs::create_dir_mode(&dir, 0o700)
            .ok()
            .and_then(|_| carrel_core::fs::FileLock::lock(&dir.join("probe.lock")).ok());
        if let Some(c) = cached() {
            return c;
        }
        let probe = RuntimeProbe {
            boot_id: boot,
            runtimes: found
                .into_iter()
                .map(|(name, path)| probe_one(&name, &path, data_root))
                .collect(),
        };
        if carrel_core::fs::create_dir_mode(&dir, 0o700).is_ok()
            && let Ok(data) = serde_json::to_vec_pretty(&probe)
            && let Err(e) = carrel_core::fs::atomic_write(&dir, PROBE_FILE, &data, 0o600)
        {
            tracing::warn!(error = %e, "could not cache the runtime probe");
        }
        probe
    }

    /// Names of the runtimes that work, in preference order (what `carrel info` lists).
    pub fn working(&self) -> Vec<&str> {
        self.runtimes
            .iter()
            .filter(|r| r.works)
            .map(|r| r.name.as_str())
            .collect()
    }

    /// The default runtime's name: crun when it works, else runc.
    pub fn default_name(&self) -> Option<&str> {
        self.working().first().copied()
    }

    /// Resolve `--runtime` (empty: the default) to a runtime whose state lives under `data_root`.
    /// An explicitly named known runtime that does not work here is an error with the reason.
    pub fn select(&self, requested: &str, data_root: &Path) -> Result<Runtime, RunError> {
        if requested.is_empty() {
            let name = self.default_name().ok_or_else(|| {
                let why: Vec<String> = self
                    .runtimes
                    .iter()
                    .map(|r| format!("{}: {}", r.name, r.reason))
                    .collect();
                RunError::RuntimeUnavailable(if why.is_empty() {
                    "no OCI runtime found: install one with `apt-get install crun` (or runc)".into()
                } else {
                    format!(
                        "no working OCI runtime ({}): install crun or runc (`apt-get install crun`)",
                        why.join("; ")
                    )
                })
            })?;
            return Runtime::locate(name, data_root);
        }
        let rt = Runtime::locate(requested, data_root)?;
        if let Some(p) = self.runtimes.iter().find(|r| r.path == rt.path)
            && !p.works
        {
            return Err(RunError::RuntimeUnavailable(format!(
                "OCI runtime {} does not work on this host: {}",
                p.name, p.reason
            )));
        }
        Ok(rt)
    }
}

fn probe_one(name: &str, path: &Path, data_root: &Path) -> ProbedRuntime {
    let mut out = ProbedRuntime {
        name: name.to_string(),
        path: path.to_path_buf(),
        ..Default::default()
    };
    match Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => {
            out.version = String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
        }
        Ok(o) => {
            out.reason = format!(
                "{} --version failed: {}",
                path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return out;
        }
        Err(e) => {
            out.reason = format!("cannot run {}: {e}", path.display());
            return out;
        }
    }
    if name == "crun"
        && let Some(reason) = crun_hybrid_refusal()
    {
        out.reason = reason;
        return out;
    }
    match real_probe(name, path, data_root) {
        Ok(()) => out.works = true,
        Err(reason) => out.reason = reason,
    }
    out
}

/// Create a container with an empty root whose process does not exist: a runtime that gets as
/// far as looking for the executable handles namespaces and cgroups on this host.
fn real_probe(name: &str, path: &Path, data_root: &Path) -> Result<(), String> {
    let dir = data_root
        .join("runtime")
        .join(format!("probe-{name}-{}", std::process::id()));
    let _ = carrel_core::fs::remove_all(&dir);
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| format!("creating {}: {e}", rootfs.display()))?;
    let rt = Runtime {
        name: name.into(),
        path: path.into(),
        state_root: dir.join("state"),
    };
    let id = format!("carrel-probe-{}", std::process::id());
    let plan = super::spec::RunPlan {
        id: id.clone(),
        bundle: dir.clone(),
        rootfs: rootfs.clone(),
        args: vec!["/carrel-runtime-probe".into()],
        runtime: rt.clone(),
        ..Default::default()
    };
    let result = (|| {
        let spec = super::spec::oci_spec(&plan).map_err(|e| e.to_string())?;
        super::spec::write_config(&dir, &spec).map_err(|e| e.to_string())?;
        let log = dir.join("log.json");
        match rt.create(
            &id,
            &dir,
            &dir.join("pid"),
            Some(&log),
            (Stdio::null(), Stdio::null(), Stdio::piped()),
        ) {
            Ok(()) => Ok(()),
            Err(RunError::Runtime { exit_code: 127, .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })();
    let _ = rt.delete(&id, true);
    let _ = carrel_core::fs::remove_all(&dir);
    result
}

/// Read a pid file written by a runtime.
pub fn read_pid_file(path: &Path) -> Result<i32, RunError> {
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|e| RunError::io("reading", path, e))?;
    s.trim()
        .parse()
        .map_err(|_| RunError::Internal(format!("{}: not a pid: {s:?}", path.display())))
}

/// Parse a signal as Docker accepts it: `SIGTERM`, `TERM`, `term`, or a number.
pub fn parse_signal(s: &str) -> Result<i32, RunError> {
    let bad = || RunError::InvalidArgument(format!("Invalid signal: {s}"));
    if s.is_empty() {
        return Ok(libc::SIGTERM);
    }
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            if let Some(rest) = name.strip_prefix("RTMIN+") {
                let n: i32 = rest.parse().map_err(|_| bad())?;
                return Ok(libc::SIGRTMIN() + n);
            }
            return Err(bad());
        }
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_exit_codes() {
        assert_eq!(
            exit_code_for_message(
                "runc create failed: unable to start container process: exec: \"/x\": stat /x: no such file or directory"
            ),
            127
        );
        assert_eq!(
            exit_code_for_message(
                "executable file `foo` not found in $PATH: No such file or directory"
            ),
            127
        );
        assert_eq!(
            exit_code_for_message("exec: \"/etc\": permission denied"),
            126
        );
        assert_eq!(
            exit_code_for_message("open executable: Permission denied"),
            126
        );
        assert_eq!(
            exit_code_for_message("open executable: Operation not permitted"),
            126
        );
        assert_eq!(exit_code_for_message("exec format error"), 126);
        assert_eq!(
            exit_code_for_message("cgroups in hybrid mode not supported"),
            125
        );
    }

    #[test]
    fn error_messages_from_logs_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            "{\"msg\":\"warn\",\"level\":\"warning\"}{\"msg\":\"open executable: Permission denied\",\"level\":\"error\",\"time\":\"x\"}",
        )
        .unwrap();
        assert_eq!(
            runtime_error_message(Some(&log), b"").unwrap(),
            "open executable: Permission denied"
        );
        let stderr = b"time=\"2026-11-27T02:26:47Z\" level=error msg=\"container \\\"x\\\" does not exist\"\n";
        assert_eq!(
            runtime_error_message(None, stderr).unwrap(),
            "container \"x\" does not exist"
        );
        assert_eq!(runtime_error_message(None, b"\n"), None);
        let e = RunError::Runtime {
            op: "create".into(),
            message: "m".into(),
            exit_code: 127,
        };
        assert_eq!(e.to_string(), "OCI runtime create failed: m");
        assert_eq!(e.exit_code(), 127);
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("").unwrap(), 15);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn locate_by_name_and_path() {
        let root = Path::new("/var/lib/carrel");
        if let Some(p) = find_in_path("sh") {
            let rt = Runtime::locate(p.to_str().unwrap(), root).unwrap();
            assert_eq!(rt.name, "sh");
            assert_eq!(rt.state_root, root.join("runtime/sh"));
        }
        let e = Runtime::locate("no-such-runtime-xyz", root).unwrap_err();
        assert!(e.to_string().contains("not found in $PATH"), "{e}");
        let e = Runtime::locate("crun-missing", root).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Precondition);
        assert!(Runtime::locate("/nonexistent/crun", root).is_err());
    }
}
