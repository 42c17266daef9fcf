//! `carrel container-monitor ID` (hidden): the per-container monitor process. The client that
//! starts a container spawns it (`carrel_engine::containers::monitor::spawn_monitor`); it forks
//! into the background at once and lives as long as the container.

use anyhow::{Result, bail};

use carrel_engine::Engine;
use carrel_engine::containers::lifecycle::StoreHooks;
use carrel_engine::containers::monitor::{self, ContainerHooks, ExitInfo, MonitorOptions, Started};
use carrel_engine::containers::runtime::RunError;

use crate::cli::{ContainerMonitorArgs, GlobalOptions};

/// Run the monitor of container `args.id` under the data root of `global`.
pub fn run(global: &GlobalOptions, args: &ContainerMonitorArgs) -> Result<u8> {
    // Take the sync descriptor before anything else can open files over it.
    let opts = MonitorOptions::from_env();
    if args.id.is_empty() || !args.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("invalid container id {:?}", args.id);
    }
    let root = std::path::absolute(&global.root)?;
    let dir = root.join("containers").join(&args.id);
    // The store records the container's state through these hooks; it is opened lazily in the
    // monitor's own (forked) process.
    let hooks = LazyStoreHooks {
        global,
        id: &args.id,
        engine: std::sync::OnceLock::new(),
    };
    let code = monitor::run_monitor(&dir, opts, &hooks)?;
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}

/// The store's hooks, opening the engine the first time one is called (after the monitor forked
/// into the background, so the client is not kept waiting for it).
struct LazyStoreHooks<'a> {
    global: &'a GlobalOptions,
    id: &'a str,
    engine: std::sync::OnceLock<Option<Engine>>,
}

impl LazyStoreHooks<'_> {
    fn with(
        &self,
        f: impl FnOnce(&StoreHooks<'_>) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        let engine = self.engine.get_or_init(|| match super::open(self.global) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(error = %e, "the monitor cannot open the data root");
                None
            }
        });
        match engine {
            Some(e) => f(&StoreHooks::new(e, self.id)),
            None => Err(RunError::Internal("cannot open the data root".into())),
        }
    }
}

impl ContainerHooks for LazyStoreHooks<'_> {
    fn on_started(&self, started: &Started) -> Result<(), RunError> {
        self.with(|h| h.on_started(started))
    }
    fn on_start_failed(&self, exit: &ExitInfo) -> Result<(), RunError> {
        self.with(|h| h.on_start_failed(exit))
    }
    fn on_exited(&self, exit: &ExitInfo) -> Result<(), RunError> {
        self.with(|h| h.on_exited(exit))
    }
    fn on_auto_remove(&self) -> Result<(), RunError> {
        self.with(|h| h.on_auto_remove())
    }
}
