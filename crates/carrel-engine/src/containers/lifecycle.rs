//! Starting, stopping, killing, waiting for and repairing containers: the store's side of the
//! run machinery in `spec`, `runtime` and `monitor`.
//!
//! `start` writes the container's run plan and spawns its monitor (a re-exec of the carrel
//! binary), which mounts the root, runs the container through the OCI runtime, records the state
//! through [`StoreHooks`], keeps the log, and cleans up when it ends. Every client only talks to
//! the monitor (its sync socket and `attach.sock`) and to the runtime (signals).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::monitor::client::{self, AttachStream, MonitorHandle, Recovery};
use super::monitor::{ContainerHooks, ExitInfo, Started};
use super::runtime::{RunError, Runtime, RuntimeProbe};
use super::spec::{NetworkMode, RunPlan};
use super::types::Status;
use super::{Container, ContainerFiles, EngineError};
use crate::{Engine, Result};

/// Docker's default stop timeout in seconds.
pub const DEFAULT_STOP_TIMEOUT: i64 = 10;

/// In the container directory while `restart` stops a `--rm` container (which is then kept).
const RESTARTING_MARK: &str = "restarting";

fn start_error(e: RunError) -> EngineError {
    match e {
        RunError::Runtime { .. } => {
            let exit_code = e.exit_code();
            EngineError::StartFailed {
                message: e.to_string(),
                exit_code,
            }
        }
        other => other.into(),
    }
}

impl Engine {
    /// The OCI runtimes that work on this host, and the default one (probed once per boot).
    pub fn runtimes(&self) -> RuntimeProbe {
        RuntimeProbe::get(self.layout().root())
    }

    /// The run plan of a container as its next start will use it.
    fn run_plan(&self, c: &Container) -> Result<RunPlan> {
        let dir = self.container_dir(&c.id);
        let hc = &c.spec.host_config;
        let cfg = &c.spec.config;
        let runtime = self
            .runtimes()
            .select(&hc.runtime, self.layout().root())
            .map_err(EngineError::from)?;
        let network = if hc.network_mode == "host" {
            NetworkMode::Host
        } else {
            NetworkMode::None
        };
        let (hostname, hosts, resolv) =
            super::spec::write_network_files(&dir, &cfg.hostname, network)?;
        let paths = self.snapshotter().paths(&c.snapshot)?;
        let mut args = vec![c.spec.path.clone()];
        args.extend(c.spec.args.iter().cloned());
        // Last, as it mounts volumes (released again if the start fails).
        let user_mounts = self.plan_run_mounts(c)?;
        Ok(RunPlan {
            id: c.id.clone(),
            bundle: dir.clone(),
            rootfs: paths.merged,
            rootfs_mounts: self.snapshotter().mounts(&c.snapshot)?,
            readonly_rootfs: hc.readonly_rootfs,
            args,
            // Docker's PATH (when the image has none), HOSTNAME and TERM (with -t), then the
            // container's own.
            env: super::spec::base_env(
                cfg.env.as_deref().unwrap_or_default(),
                &cfg.hostname,
                cfg.tty,
            ),
            cwd: if cfg.working_dir.is_empty() {
                "/".into()
            } else {
                cfg.working_dir.clone()
            },
            user: Default::default(),
            user_spec: (!cfg.user.is_empty()).then(|| cfg.user.clone()),
            group_add: hc.group_add.clone().unwrap_or_default(),
            hostname: cfg.hostname.clone(),
            domainname: cfg.domainname.clone(),
            tty: cfg.tty,
            open_stdin: cfg.open_stdin,
            stdin_once: cfg.stdin_once,
            console_size: (
                hc.console_size[0].min(u16::MAX as u32) as u16,
                hc.console_size[1].min(u16::MAX as u32) as u16,
            ),
            network,
            mounts: Vec::new(),
            user_mounts: user_mounts.mounts,
            rootfs_propagation: user_mounts.rootfs_propagation,
            runtime,
            log_path: dir.join(format!("{}-json.log", c.id)),
            auto_remove: hc.auto_remove,
            stop_signal: cfg.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
            stop_timeout: cfg.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT).max(0) as u64,
            hosts_path: Some(hosts),
            hostname_path: Some(hostname),
            resolv_conf_path: Some(resolv),
            shm_size: hc.shm_size.max(0) as u64,
            masked_paths: hc.masked_paths.clone(),
            readonly_paths: hc.readonly_paths.clone(),
            nofile: 0,
        })
    }

    /// `carrel start` (and the start half of `run`): spawn the container's monitor and wait until
    /// the container runs. With `attach`, the returned handle's stream carries the container's
    /// output from its first byte and takes its input. Starting a running container is a no-op
    /// (`Ok(None)`), as in Docker.
    pub fn container_start(
        &self,
        name_or_id: &str,
        attach: bool,
        monitor_program: &Path,
    ) -> Result<Option<MonitorHandle>> {
        self.container_start_via(name_or_id, attach, MonitorLaunch::Program(monitor_program))
    }

    /// [`Engine::container_start`] with the monitor given by `launch` (one spawned ahead, so
    /// that its start-up overlapped the caller's work).
    pub fn container_start_via(
        &self,
        name_or_id: &str,
        attach: bool,
        launch: MonitorLaunch<'_>,
    ) -> Result<Option<MonitorHandle>> {
        let c = self.resolve_container(name_or_id)?;
        if c.is_running() {
            return Ok(None);
        }
        if c.state.status == Status::Removing || c.state.status == Status::Dead {
            return Err(EngineError::Conflict(format!(
                "container {} is marked for removal and cannot be started",
                c.short_id()
            )));
        }
        let dir = self.container_dir(&c.id);
        // A previous run's monitor may still be finishing (unmounting, deleting runtime state).
        client::wait_monitor(&dir, Some(Duration::from_secs(10)));
        // A restart that died between its stop and this start left its mark.
        let _ = std::fs::remove_file(dir.join(RESTARTING_MARK));
        let plan = self.run_plan(&c)?;
        if let Err(e) = plan.save(&dir) {
            self.release_container_volumes(&c.id, c.spec.mounts.as_ref(), false);
            return Err(e.into());
        }
        tracing::debug!(id = c.short_id(), "run plan written; spawning the monitor");
        let monitor = match launch {
            MonitorLaunch::Program(program) => {
                client::PendingMonitor::spawn(program, self.layout().root())
            }
            MonitorLaunch::Pending(m) => Ok(m),
        };
        match monitor.and_then(|m| m.start(&c.id, attach)) {
            Ok(handle) => {
                tracing::debug!(
                    id = c.short_id(),
                    pid = handle.started.pid,
                    "container started"
                );
                Ok(Some(handle))
            }
            Err(e) => {
                // The monitor released them if it ran; releasing twice is harmless.
                self.release_container_volumes(&c.id, c.spec.mounts.as_ref(), false);
                Err(start_error(e))
            }
        }
    }

    /// The runtime a started container runs under.
    pub fn container_runtime(&self, name_or_id: &str) -> Result<Runtime> {
        let c = self.resolve_container(name_or_id)?;
        self.runtime_of(&c)
    }

    /// The runtime a (started) container runs under, from its run plan.
    fn runtime_of(&self, c: &Container) -> Result<Runtime> {
        let plan = RunPlan::load(&self.container_dir(&c.id))?;
        Ok(plan.runtime)
    }

    /// `carrel stop`: the stop signal, then SIGKILL after `timeout` seconds (the container's own
    /// stop timeout, else 10). Stopping a container that does not run is not an error.
    pub fn container_stop(&self, name_or_id: &str, timeout: Option<i64>) -> Result<()> {
        let c = self.resolve_container(name_or_id)?;
        if !c.is_running() {
            return Ok(());
        }
        let dir = self.container_dir(&c.id);
        let rt = self.runtime_of(&c)?;
        let signal = super::runtime::parse_signal(
            c.spec.config.stop_signal.as_deref().unwrap_or("SIGTERM"),
        )?;
        let timeout = timeout
            .or(c.spec.config.stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        // A negative timeout waits forever, as in Docker.
        let wait = if timeout < 0 {
            Duration::from_secs(u64::MAX / 4)
        } else {
            Duration::from_secs(timeout as u64)
        };
        client::stop(&rt, &c.id, &dir, signal, wait)?;
        match self.refresh_container(&c.id) {
            // A `--rm` container is gone once its monitor recorded the exit: stopped, as asked.
            Err(EngineError::NotFound(_)) if c.spec.host_config.auto_remove => Ok(()),
            other => other.map(drop),
        }
    }

    /// `carrel kill`: send a signal (default SIGKILL) to the container's init.
    pub fn container_kill(&self, name_or_id: &str, signal: Option<&str>) -> Result<()> {
        let c = self.resolve_container(name_or_id)?;
        let sig = super::runtime::parse_signal(signal.unwrap_or("SIGKILL"))?;
        if !c.is_running() {
            return Err(EngineError::Conflict(format!(
                "cannot kill container: {}: container {} is not running",
                name_or_id, c.id
            )));
        }
        let rt = self.runtime_of(&c)?;
        client::kill(&rt, &c.id, sig).map_err(|e| match e {
            RunError::Conflict(_) => EngineError::Conflict(format!(
                "cannot kill container: {}: container {} is not running",
                name_or_id, c.id
            )),
            other => other.into(),
        })?;
        if sig == libc::SIGKILL {
            client::wait_monitor(&self.container_dir(&c.id), Some(Duration::from_secs(10)));
        }
        Ok(())
    }

    /// `carrel wait`: block until the container is not running and return its exit code.
    pub fn container_wait(&self, name_or_id: &str) -> Result<i64> {
        let c = self.resolve_container(name_or_id)?;
        if c.is_running() {
            let dir = self.container_dir(&c.id);
            // A `--rm` container is gone with its record once it ended: its monitor tells the
            // exit to its attached clients before it goes.
            if c.spec.host_config.auto_remove
                && let Ok(mut stream) = client::attach(&dir)
            {
                while let Ok(Some(event)) = stream.next_event() {
                    if let client::Event::Exit(e) = event {
                        return Ok(e.exit_code as i64);
                    }
                }
            }
            client::wait_monitor(&dir, None);
        }
        let c = self.refresh_container(&c.id)?;
        Ok(c.state.exit_code)
    }

    /// `carrel restart`: stop (if running), then start detached.
    pub fn container_restart(
        &self,
        name_or_id: &str,
        timeout: Option<i64>,
        monitor_program: &Path,
    ) -> Result<()> {
        let c = self.resolve_container(name_or_id)?;
        // Docker turns AutoRemove off while restart stops the container: its monitor records
        // the exit but keeps a `--rm` container while this mark is there.
        let mark = self.container_dir(&c.id).join(RESTARTING_MARK);
        let keep = c.spec.host_config.auto_remove && c.is_running();
        if keep {
            std::fs::write(&mark, b"")
                .map_err(|e| EngineError::io("marking the restart of", &mark, e))?;
        }
        let stopped = self.container_stop(&c.id, timeout);
        if keep {
            let _ = std::fs::remove_file(&mark);
        }
        stopped?;
        self.update_container_state(&c.id, |s| {
            s.restart_count += 1;
            Ok(())
        })?;
        self.container_start(&c.id, false, monitor_program)?;
        Ok(())
    }

    /// Connect to a running container's streams (`carrel attach`).
    pub fn container_attach(&self, name_or_id: &str) -> Result<AttachStream> {
        let c = self.resolve_container(name_or_id)?;
        if !c.is_running() {
            return Err(EngineError::Conflict(
                "You cannot attach to a stopped container, start it first".into(),
            ));
        }
        Ok(client::attach(&self.container_dir(&c.id))?)
    }

    /// The json-file log of a container.
    pub fn container_log_path(&self, c: &Container) -> PathBuf {
        self.container_dir(&c.id).join(format!("{}-json.log", c.id))
    }

    /// Whether the monitor of a container is alive (used to end `logs -f`).
    pub fn container_monitor_alive(&self, id: &str) -> bool {
        client::monitor_alive(&self.container_dir(id))
    }

    /// The run plan of a running container (for `exec`).
    pub fn container_exec_plan(&self, name_or_id: &str) -> Result<(Container, RunPlan)> {
        let c = self.resolve_container(name_or_id)?;
        if !c.is_running() {
            return Err(EngineError::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        let plan = RunPlan::load(&self.container_dir(&c.id))?;
        Ok((c, plan))
    }

    /// Kill a running container and wait for its monitor to record the exit, before removal.
    pub(crate) fn kill_for_removal(&self, c: &Container) -> Result<()> {
        let dir = self.container_dir(&c.id);
        match self.runtime_of(c) {
            Ok(rt) => {
                client::stop(&rt, &c.id, &dir, libc::SIGKILL, Duration::ZERO)?;
            }
            Err(e) => tracing::debug!(error = %e, "no run plan; repairing instead"),
        }
        match self.refresh_container(&c.id) {
            // A `--rm` container removed itself when it ended.
            Err(EngineError::NotFound(_)) if c.spec.host_config.auto_remove => Ok(()),
            other => other.map(drop),
        }
    }

    /// Re-read a container, repairing its state when its monitor died while the record says it
    /// runs (the container is killed, its mounts released, and it is marked exited).
    pub fn refresh_container(&self, id: &str) -> Result<Container> {
        let c = self.resolve_container(id)?;
        if !c.is_running() {
            return Ok(c);
        }
        let dir = self.container_dir(&c.id);
        let exit = match client::recover(&dir)? {
            Recovery::MonitorAlive => return Ok(c),
            Recovery::Clean(exit) => exit,
            Recovery::Repaired(exit) => {
                tracing::info!(id = c.short_id(), "repaired a container whose monitor died");
                Some(exit)
            }
        };
        let exit = exit.unwrap_or(ExitInfo {
            exit_code: 137,
            finished_at: carrel_meta::now_nanos(),
            ..Default::default()
        });
        self.record_exit(&c.id, &exit)?;
        // The monitor that died could not release the container's volumes.
        self.release_container_volumes(&c.id, c.spec.mounts.as_ref(), true);
        let auto_remove = c.spec.host_config.auto_remove;
        if auto_remove {
            self.container_remove(&c.id, false, true)?;
            return Err(EngineError::NotFound(format!("No such container: {id}")));
        }
        self.resolve_container(&c.id)
    }

    /// Record that a container's process ended.
    pub fn record_exit(&self, id: &str, exit: &ExitInfo) -> Result<()> {
        self.update_container_state(id, |s| {
            s.status = Status::Exited;
            s.pid = 0;
            s.monitor_pid = 0;
            s.exit_code = exit.exit_code as i64;
            s.oom_killed = exit.oom_killed;
            s.finished_at = exit.finished_at;
            if exit.started_at != 0 {
                s.started_at = exit.started_at;
            }
            s.error = exit.error.clone();
            Ok(())
        })?;
        if let Ok(c) = self.resolve_container(id) {
            self.emit_container_event(&c, "die", &[("exitCode", exit.exit_code.to_string())]);
        }
        Ok(())
    }

    /// Repair every container whose record says it runs but whose monitor is gone.
    pub(crate) fn recover_containers(&self) -> Result<()> {
        for c in self.containers()? {
            if c.is_running()
                && !client::monitor_alive(&self.container_dir(&c.id))
                && let Err(e) = self.refresh_container(&c.id)
            {
                tracing::warn!(id = c.short_id(), error = %e, "could not repair container");
            }
        }
        Ok(())
    }
}

/// Where the monitor of a container being started comes from.
#[derive(Debug)]
pub enum MonitorLaunch<'a> {
    /// Spawn this program (the `carrel` binary, for its hidden `container-monitor` command)
    /// once the container is ready to start.
    Program(&'a Path),
    /// A monitor spawned ahead ([`client::PendingMonitor::spawn`]) for the same data root.
    Pending(client::PendingMonitor),
}

/// The container store's answers to the monitor (run inside the monitor process).
pub struct StoreHooks<'a> {
    engine: &'a Engine,
    id: String,
    removed: RemovedFiles,
}

/// Where the monitor keeps the files of its container once `--rm` removed it, until the exit is
/// reported and they are deleted ([`StoreHooks`] made afresh for each call share one).
#[derive(Debug, Default, Clone)]
pub struct RemovedFiles(Arc<Mutex<Option<ContainerFiles>>>);

impl<'a> StoreHooks<'a> {
    /// Hooks for container `id`.
    pub fn new(engine: &'a Engine, id: &str) -> StoreHooks<'a> {
        StoreHooks::sharing(engine, id, RemovedFiles::default())
    }

    /// Hooks for container `id` that keep the files of a removed container in `removed`.
    pub fn sharing(engine: &'a Engine, id: &str, removed: RemovedFiles) -> StoreHooks<'a> {
        StoreHooks {
            engine,
            id: id.to_string(),
            removed,
        }
    }

    /// Delete the files of the container `--rm` removed, if it did.
    fn remove_files(&self) {
        let files = self
            .removed
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(files) = files
            && let Err(e) = self.engine.remove_container_files(files)
        {
            tracing::warn!(error = %e, "deleting the removed container's files failed; the next cleanup reclaims them");
        }
    }

    /// Release the container's volumes after a run (and measure them when it ran).
    fn release_volumes(&self, measure: bool) {
        match self.engine.resolve_container(&self.id) {
            Ok(c) => self
                .engine
                .release_container_volumes(&c.id, c.spec.mounts.as_ref(), measure),
            Err(e) => tracing::warn!(error = %e, "cannot release the container's volumes"),
        }
    }
}

fn hook_error(e: EngineError) -> RunError {
    RunError::Internal(e.to_string())
}

impl ContainerHooks for StoreHooks<'_> {
    fn on_started(&self, started: &Started) -> std::result::Result<(), RunError> {
        self.engine
            .update_container_state(&self.id, |s| {
                s.status = Status::Running;
                s.pid = started.pid as i64;
                s.monitor_pid = started.monitor_pid as i64;
                s.started_at = started.started_at;
                s.finished_at = 0;
                s.exit_code = 0;
                s.error.clear();
                Ok(())
            })
            .map_err(hook_error)?;
        if let Ok(c) = self.engine.resolve_container(&self.id) {
            self.engine.emit_container_event(&c, "start", &[]);
        }
        Ok(())
    }

    fn on_start_failed(&self, exit: &ExitInfo) -> std::result::Result<(), RunError> {
        self.release_volumes(false);
        self.engine
            .update_container_state(&self.id, |s| {
                // Docker keeps a container that failed to start as `created`, with the error.
                if s.status != Status::Exited {
                    s.status = Status::Created;
                }
                s.pid = 0;
                s.exit_code = exit.exit_code as i64;
                s.error = exit.error.clone();
                Ok(())
            })
            .map(|_| ())
            .map_err(hook_error)
    }

    fn on_exited(&self, exit: &ExitInfo) -> std::result::Result<(), RunError> {
        tracing::debug!(code = exit.exit_code, "recording the exit");
        let recorded = self.engine.record_exit(&self.id, exit).map_err(hook_error);
        self.release_volumes(true);
        recorded
    }

    fn on_auto_remove(&self) -> std::result::Result<bool, RunError> {
        if self
            .engine
            .container_dir(&self.id)
            .join(RESTARTING_MARK)
            .exists()
        {
            tracing::debug!("restarting: the container is kept");
            return Ok(false);
        }
        tracing::debug!("removing the container (--rm)");
        // The container is gone for everyone once its record is; its files go after the exit is
        // reported, as work in flight under the removal's lease (a crash of this process leaves
        // them to the lease's recovery).
        let files = self
            .engine
            .container_remove_record(&self.id, false, true)
            .map_err(hook_error)?;
        *self.removed.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(files);
        tracing::debug!("removed");
        Ok(true)
    }

    fn after_exit_reported(&self) {
        self.remove_files();
    }
}
