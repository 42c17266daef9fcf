//! `carrel container-monitor ID` (hidden): the per-container monitor process. The client that
//! starts a container spawns it (`carrel_engine::containers::monitor::PendingMonitor`), with
//! [`monitor::PENDING_ID`] for the id when it is spawned before the container exists; it forks
//! into the background at once and lives as long as the container.

use anyhow::{Result, bail};

use carrel_engine::Engine;
use carrel_engine::containers::lifecycle::{RemovedFiles, StoreHooks};
use carrel_engine::containers::monitor::{
    self, Assignment, ContainerHooks, ExitInfo, MonitorOptions, Started,
};
use carrel_engine::containers::runtime::RunError;

use crate::cli::{ContainerMonitorArgs, GlobalOptions};

/// Run the monitor of container `args.id` under the data root of `global`.
pub fn run(global: &GlobalOptions, args: &ContainerMonitorArgs) -> Result<u8> {
    // Take the sync descriptor before anything else can open files over it.
    let mut opts = MonitorOptions::from_env();
    let mut id = args.id.clone();
    if id == monitor::PENDING_ID {
        // Spawned ahead of its container (`carrel run`): detach, then learn which one.
        match monitor::await_assignment(opts)? {
            Assignment::Detached | Assignment::Abandoned => return Ok(0),
            Assignment::Container {
                id: assigned,
                options,
            } => {
                show_in_command_line(monitor::PENDING_ID, &assigned);
                id = assigned;
                opts = options;
            }
        }
    }
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid container id {id:?}");
    }
    let root = std::path::absolute(&global.root)?;
    let dir = root.join("containers").join(&id);
    log_to_container_dir(&dir);
    // The store records the container's state through these hooks; it is opened lazily in the
    // monitor's own (forked) process.
    let hooks = LazyStoreHooks {
        global,
        id: &id,
        engine: std::sync::OnceLock::new(),
        opening: std::sync::Mutex::new(None),
        removed: RemovedFiles::default(),
    };
    let code = monitor::run_monitor(&dir, opts, &hooks)?;
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

/// Write `shown` over `placeholder` in this process's command line as `ps` and
/// `/proc/PID/cmdline` show it (the memory the kernel reads it from, the argument strings at
/// the top of the stack), so that a monitor spawned before its container existed is found by
/// its container's id like any other. `shown` must be as long as `placeholder`; a command line
/// without the placeholder is left alone.
fn show_in_command_line(placeholder: &str, shown: &str) {
    if placeholder.len() != shown.len() {
        return;
    }
    let Some((start, end)) = argument_area() else {
        return;
    };
    // SAFETY: [start, end) is this process's own argument area, mapped and writable for its
    // whole life; no other thread runs yet, and the bytes written keep every string's length
    // and terminator.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    // The id is the last argument: the placeholder is looked for from the end.
    if let Some(at) = area
        .windows(placeholder.len())
        .rposition(|w| w == placeholder.as_bytes())
    {
        area[at..at + shown.len()].copy_from_slice(shown.as_bytes());
    }
}

/// `arg_start` and `arg_end` of `/proc/self/stat` (fields 48 and 49).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start with field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(48 - 3);
    let start: usize = fields.next()?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (start > 0 && end > start).then_some((start, end))
}

/// The monitor's own messages (its warnings: a state it could not record, a removal that
/// failed) go to `monitor.log` in the container's directory, as it has no terminal.
fn log_to_container_dir(dir: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(file) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join("monitor.log"))
    else {
        return;
    };
    // SAFETY: dup2 onto standard error, before the monitor starts any thread.
    unsafe {
        libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), libc::STDERR_FILENO);
    }
}

/// How long the monitor keeps trying to open the data root for a hook.
const OPEN_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// The store's hooks, opening the engine the first time one is called (after the monitor forked
/// into the background, so the client is not kept waiting for it). The monitor only records its
/// own container's state, so it opens the store without the recovery a command runs, and a
/// failed open is tried again (a busy store must not leave the state unrecorded).
struct LazyStoreHooks<'a> {
    global: &'a GlobalOptions,
    id: &'a str,
    engine: std::sync::OnceLock<Engine>,
    /// The first open, started on a thread of its own when the monitor starts, so that it runs
    /// while the container starts instead of delaying the first state update after it.
    opening: std::sync::Mutex<Option<std::thread::JoinHandle<Option<Engine>>>>,
    /// The files of the container once `--rm` removed it, deleted after the exit is reported.
    removed: RemovedFiles,
}

impl LazyStoreHooks<'_> {
    fn engine(&self) -> Result<&Engine, RunError> {
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        let early = self.opening.lock().ok().and_then(|mut o| o.take());
        if let Some(Ok(Some(e))) = early.map(|h| h.join()) {
            return Ok(self.engine.get_or_init(|| e));
        }
        let deadline = std::time::Instant::now() + OPEN_RETRY;
        let mut pause = std::time::Duration::from_millis(10);
        loop {
            let opened = Engine::open_without_recovery(&super::engine_options(self.global));
            match opened {
                Ok(e) => return Ok(self.engine.get_or_init(|| e)),
                Err(e) if std::time::Instant::now() >= deadline => {
                    tracing::error!(error = %e, "the monitor cannot open the data root");
                    return Err(RunError::Internal(format!(
                        "cannot open the data root: {e}"
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "opening the data root failed; trying again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&StoreHooks<'_>) -> Result<T, RunError>,
    ) -> Result<T, RunError> {
        f(&StoreHooks::sharing(
            self.engine()?,
            self.id,
            self.removed.clone(),
        ))
    }
}

impl ContainerHooks for LazyStoreHooks<'_> {
    fn on_monitor_start(&self) {
        let opts = super::engine_options(self.global);
        // A failed early open is only logged: `engine` then tries again, with retries.
        let thread = std::thread::Builder::new()
            .name("open-store".into())
            .spawn(move || {
                Engine::open_without_recovery(&opts)
                    .inspect_err(|e| tracing::warn!(error = %e, "opening the data root failed"))
                    .ok()
            });
        if let (Ok(thread), Ok(mut slot)) = (thread, self.opening.lock()) {
            *slot = Some(thread);
        }
    }
    fn on_started(&self, started: &Started) -> Result<(), RunError> {
        self.with(|h| h.on_started(started))
    }
    fn on_start_failed(&self, exit: &ExitInfo) -> Result<(), RunError> {
        self.with(|h| h.on_start_failed(exit))
    }
    fn on_exited(&self, exit: &ExitInfo) -> Result<(), RunError> {
        self.with(|h| h.on_exited(exit))
    }
    fn on_auto_remove(&self) -> Result<bool, RunError> {
        self.with(|h| h.on_auto_remove())
    }
    fn after_exit_reported(&self) {
        let _ = self.with(|h| {
            h.after_exit_reported();
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_area_is_the_command_line() {
        let (start, end) = argument_area().expect("arg_start and arg_end");
        // SAFETY: reading this process's own argument area, which the kernel names.
        let area = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) };
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(area, &cmdline[..]);
    }

    #[test]
    fn a_command_line_without_the_placeholder_is_left_alone() {
        let before = std::fs::read("/proc/self/cmdline").unwrap();
        show_in_command_line(monitor::PENDING_ID, &"a".repeat(64));
        show_in_command_line("x", "too long");
        assert_eq!(std::fs::read("/proc/self/cmdline").unwrap(), before);
    }
}
