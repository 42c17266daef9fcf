//! Running containers: run, start, stop, kill, restart, wait, logs, attach, exec.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use carrel_engine::containers::lifecycle::MonitorLaunch;
use carrel_engine::containers::monitor::ExitInfo;
use carrel_engine::containers::monitor::client::{
    self, AttachStream, Event, ExecRequest, PendingMonitor,
};
use carrel_engine::containers::monitor::logs::{LogOptions, follow_log};
use carrel_engine::containers::runtime::RunError;
use carrel_engine::containers::tty::{RawMode, WinchWatch, get_size};
use carrel_engine::{Engine, EngineError};

use super::ExitStatus;
use super::containers::{create_request, write_cidfile};
use crate::cli::{
    AttachArgs, ExecArgs, GlobalOptions, KillArgs, LogsArgs, RunArgs, StartArgs, StopArgs, WaitArgs,
};

/// Exit status of `run` when carrel itself failed (Docker's 125).
const EXIT_RUN_FAILED: u8 = 125;

/// The carrel binary, re-executed as each container's monitor.
fn monitor_program() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the carrel binary to run container monitors")
}

fn exit_u8(code: i64) -> u8 {
    u8::try_from(code.clamp(0, 255)).unwrap_or(255)
}

/// Print a run error the way `docker run` reports it and give Docker's exit status.
fn run_failure(e: anyhow::Error) -> anyhow::Error {
    let code = match e.downcast_ref::<EngineError>() {
        Some(EngineError::StartFailed { exit_code, .. }) => exit_u8(*exit_code as i64),
        _ => EXIT_RUN_FAILED,
    };
    eprintln!("Error: {}", e);
    ExitStatus(code).into()
}

/// Forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 received by carrel to the container
/// (Docker's `--sig-proxy`), from a dedicated thread that waits for them.
struct SignalProxy {
    set: libc::sigset_t,
}

const PROXIED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

impl SignalProxy {
    /// Block the proxied signals in this thread (call before other threads start, so they
    /// inherit the mask).
    fn block() -> SignalProxy {
        // SAFETY: plain sigset manipulation and pthread_sigmask on the calling thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in PROXIED {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            SignalProxy { set }
        }
    }

    /// Wait for one proxied signal.
    fn wait(&self) -> Option<libc::c_int> {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait on a set of blocked signals.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        (rc == 0).then_some(sig)
    }
}

/// Copy a container's streams to ours until it exits, with a terminal relay for `-t` and a
/// signal proxy otherwise. Returns its exit, or `None` when the monitor went away.
fn attach_session(
    engine: &Engine,
    id: &str,
    mut stream: AttachStream,
    tty: bool,
    stdin: bool,
    sig_proxy: bool,
) -> Result<Option<ExitInfo>> {
    let proxy = (sig_proxy && !tty).then(SignalProxy::block);
    let stdin_fd = std::io::stdin();
    let raw = if tty && stdin_fd.is_terminal() {
        Some(RawMode::enable(stdin_fd.as_fd()).context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    if let Some(proxy) = proxy {
        // Signals go straight to the runtime; the thread ends with the process. A container
        // that already ended (a `--rm` one is gone with its record by now) takes no signals:
        // its exit is waiting in the stream.
        match engine.container_runtime(id) {
            Ok(runtime) => {
                let id = id.to_string();
                std::thread::spawn(move || {
                    while let Some(sig) = proxy.wait() {
                        if let Err(e) = client::kill(&runtime, &id, sig) {
                            tracing::debug!(error = %e, "signal not forwarded");
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::debug!(error = %e, "no signal forwarding: the container ended"),
        }
    }
    {
        if stdin {
            let mut w = stream.try_clone()?;
            std::thread::spawn(move || {
                let mut input = std::io::stdin().lock();
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match std::io::Read::read(&mut input, &mut buf) {
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
        if raw.is_some() {
            let mut w = stream.try_clone()?;
            let winch = WinchWatch::install()?;
            if let Ok((rows, cols)) = get_size(std::io::stdin().as_fd()) {
                let _ = w.resize(rows, cols);
            }
            std::thread::spawn(move || {
                loop {
                    let mut fds = [rustix::event::PollFd::from_borrowed_fd(
                        winch.fd(),
                        rustix::event::PollFlags::IN,
                    )];
                    if rustix::event::poll(&mut fds, None).is_err() {
                        return;
                    }
                    winch.drain();
                    if let Ok((rows, cols)) = get_size(std::io::stdin().as_fd())
                        && w.resize(rows, cols).is_err()
                    {
                        return;
                    }
                }
            });
        }
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        let exit = loop {
            match stream.next_event() {
                Ok(Some(Event::Stdout(d))) => {
                    out.write_all(&d)?;
                    out.flush()?;
                }
                Ok(Some(Event::Stderr(d))) => {
                    err.write_all(&d)?;
                    err.flush()?;
                }
                Ok(Some(Event::Exit(e))) => break Some(e),
                Ok(Some(_)) => {}
                Ok(None) => break None,
                // The monitor went away (killed), perhaps in the middle of a frame.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    break None;
                }
                Err(e) => return Err(e.into()),
            }
        };
        drop(raw);
        // Helper threads wait on stdin or signals until the process ends: callers exit at once.
        Ok(exit)
    }
}

/// The exit code of a finished attach: the reported one, else the recorded one.
fn exit_code_after(engine: &Engine, id: &str, exit: Option<ExitInfo>) -> i64 {
    match exit {
        Some(e) => e.exit_code as i64,
        None => engine
            .refresh_container(id)
            .map(|c| c.state.exit_code)
            .unwrap_or(137),
    }
}

/// `carrel run`.
pub fn run(global: &GlobalOptions, a: &RunArgs) -> Result<u8> {
    // The container's monitor is spawned first, so that its own start-up (loading the binary,
    // forking into the background) overlaps opening the store and creating the container; it
    // waits to be told the container, and ends unused if the run fails before.
    // (Spawned from a thread of its own: `posix_spawn` holds the calling thread until the
    // binary is loaded.)
    let program = monitor_program()?;
    let spawning = {
        let (program, root) = (program.clone(), global.root.clone());
        std::thread::spawn(move || {
            std::path::absolute(&root)
                .map_err(|e| RunError::io("resolving", &root, e))
                .and_then(|root| PendingMonitor::spawn(&program, &root))
        })
    };
    let engine = &super::open(global)?;
    let c = &a.create;
    if let Some(p) = &c.cidfile
        && p.exists()
    {
        return Err(run_failure(anyhow::anyhow!(
            "container ID file found, make sure the other container isn't running or delete {}",
            p.display()
        )));
    }
    let req = create_request(c, !a.detach).map_err(run_failure)?;
    let created = engine
        .container_create(req)
        .map_err(|e| run_failure(e.into()))?;
    write_cidfile(c, &created.id).map_err(run_failure)?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    let pending = match spawning.join() {
        Ok(Ok(m)) => Some(m),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cannot spawn the monitor ahead; spawning it now");
            None
        }
        Err(_) => None,
    };
    let launch = match pending {
        Some(m) => MonitorLaunch::Pending(m),
        None => MonitorLaunch::Program(&program),
    };
    if a.detach {
        match engine.container_start_via(&created.id, false, launch) {
            Ok(_) => {
                println!("{}", created.id);
                return Ok(0);
            }
            Err(e) => {
                if c.rm {
                    let _ = engine.container_remove(&created.id, true, true);
                }
                return Err(run_failure(e.into()));
            }
        }
    }
    let handle = match engine.container_start_via(&created.id, true, launch) {
        Ok(Some(h)) => h,
        Ok(None) => bail!("container {} was already running", created.id),
        Err(e) => {
            if c.rm {
                let _ = engine.container_remove(&created.id, true, true);
            }
            return Err(run_failure(e.into()));
        }
    };
    let exit = attach_session(
        engine,
        &created.id,
        handle.stream,
        c.tty,
        c.interactive,
        a.sig_proxy,
    )?;
    let code = exit_code_after(engine, &created.id, exit);
    finish(exit_u8(code))
}

/// End the process with `code` right away (attached sessions leave helper threads blocked on
/// stdin or signals, which must not keep carrel alive).
fn finish(code: u8) -> Result<u8> {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(i32::from(code));
}

/// `carrel start`.
pub fn start(engine: &Engine, a: &StartArgs) -> Result<u8> {
    let program = monitor_program()?;
    if a.attach || a.interactive {
        if a.names.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let c = engine.resolve_container(&a.names[0])?;
        let handle = engine.container_start(&c.id, true, &program)?;
        let stream = match handle {
            Some(h) => h.stream,
            None => engine.container_attach(&c.id)?,
        };
        let exit = attach_session(
            engine,
            &c.id,
            stream,
            c.spec.config.tty,
            a.interactive && c.spec.config.open_stdin,
            true,
        )?;
        let code = exit_code_after(engine, &c.id, exit);
        return finish(exit_u8(code));
    }
    let mut failed = false;
    for name in &a.names {
        match engine.container_start(name, false, &program) {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(0)
}

/// `carrel stop`.
pub fn stop(engine: &Engine, a: &StopArgs) -> Result<u8> {
    each(&a.names, |n| {
        if let Some(sig) = &a.signal {
            let c = engine.resolve_container(n)?;
            if c.is_running() {
                engine.container_kill(n, Some(sig))?;
            }
        }
        engine.container_stop(n, a.timeout)
    })
}

/// `carrel restart`.
pub fn restart(engine: &Engine, a: &StopArgs) -> Result<u8> {
    let program = monitor_program()?;
    each(&a.names, |n| {
        engine.container_restart(n, a.timeout, &program)
    })
}

/// `carrel kill`.
pub fn kill(engine: &Engine, a: &KillArgs) -> Result<u8> {
    each(&a.names, |n| engine.container_kill(n, Some(&a.signal)))
}

/// Apply `f` to each named container, printing the name on success and the error otherwise.
fn each(names: &[String], f: impl Fn(&str) -> carrel_engine::Result<()>) -> Result<u8> {
    let mut failed = false;
    for name in names {
        match f(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(0)
}

/// `carrel wait`.
pub fn wait(engine: &Engine, a: &WaitArgs) -> Result<u8> {
    let mut failed = false;
    for name in &a.names {
        match engine.container_wait(name) {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(0)
}

/// `carrel logs`.
pub fn logs(engine: &Engine, a: &LogsArgs) -> Result<u8> {
    if a.since.is_some() || a.until.is_some() {
        bail!("--since and --until are not supported by carrel logs yet");
    }
    let tail = match a.tail.as_str() {
        "all" | "" => None,
        n => Some(n.parse::<usize>().map_err(|_| {
            anyhow::anyhow!("invalid value for \"tail\": {n:?}: expected a number or \"all\"")
        })?),
    };
    let c = engine.resolve_container(&a.name)?;
    let path = engine.container_log_path(&c);
    let follow = a.follow && c.is_running();
    let opts = LogOptions { tail, follow };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    follow_log(&path, &opts, a.timestamps, &mut out, &mut err, || {
        !engine.container_monitor_alive(&c.id)
    })?;
    Ok(0)
}

/// `carrel attach`.
pub fn attach(engine: &Engine, a: &AttachArgs) -> Result<u8> {
    let c = engine.resolve_container(&a.name)?;
    let stream = engine.container_attach(&c.id)?;
    let exit = attach_session(
        engine,
        &c.id,
        stream,
        c.spec.config.tty,
        !a.no_stdin && c.spec.config.open_stdin,
        a.sig_proxy,
    )?;
    let code = exit_code_after(engine, &c.id, exit);
    finish(exit_u8(code))
}

/// `carrel exec`.
pub fn exec(engine: &Engine, a: &ExecArgs) -> Result<u8> {
    if a.privileged {
        bail!("--privileged is not supported by carrel");
    }
    let mut words = a.container_and_command.clone();
    let name = words.remove(0);
    let (_, plan) = engine.container_exec_plan(&name)?;
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(super::containers::env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| super::containers::env_entry(e)));
    let req = ExecRequest {
        args: words,
        env,
        user: None,
        user_spec: a.user.clone(),
        cwd: a.workdir.clone().unwrap_or_default(),
        tty: a.tty,
    };
    let result = if a.detach {
        let process = client::exec_process(&plan, &req)?;
        let pid_file = plan.bundle.join(format!("exec-{}.pid", std::process::id()));
        let opts = carrel_engine::containers::runtime::ExecOptions {
            detach: true,
            pid_file: Some(pid_file.clone()),
            ..Default::default()
        };
        let r = plan.runtime.exec(
            &plan.id,
            &plan.bundle,
            &process,
            &opts,
            (
                std::process::Stdio::null(),
                std::process::Stdio::null(),
                std::process::Stdio::null(),
            ),
        );
        let _ = std::fs::remove_file(&pid_file);
        r
    } else if a.tty {
        let stdin = std::io::stdin();
        let raw = if stdin.is_terminal() && a.interactive {
            Some(RawMode::enable(stdin.as_fd())?)
        } else {
            None
        };
        let input = a.interactive.then(|| stdin.as_fd());
        let stdout = std::io::stdout();
        let r = client::exec_tty(&plan, &req, input, stdout.as_fd());
        drop(raw);
        r
    } else {
        let stdin = if a.interactive {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        };
        // Its stderr is relayed, so that the runtime's own copy of an error is not shown.
        client::exec_relayed(
            &plan,
            &req,
            stdin,
            std::process::Stdio::inherit(),
            Box::new(std::io::stderr()),
        )
    };
    match result {
        Ok(code) => Ok(exit_u8(code as i64)),
        Err(e) => {
            // Docker: 127/126 for a command that is missing or cannot be executed, 126 for any
            // other failure to start the process (an unknown --user, a bad working directory).
            let code = match &e {
                carrel_engine::containers::runtime::RunError::Runtime { .. } => e.exit_code(),
                _ => 126,
            };
            eprintln!("Error: {e}");
            Err(ExitStatus(exit_u8(code as i64)).into())
        }
    }
}
