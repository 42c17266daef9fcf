//! `carrel container-monitor ID` (hidden): the per-container monitor process. The client that
//! starts a container spawns it (`carrel_engine::containers::monitor::spawn_monitor`); it forks
//! into the background at once and lives as long as the container.

use anyhow::{Result, bail};

use carrel_engine::containers::monitor::{self, MonitorOptions, NoHooks};

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
    // The store's hooks (state updates, --rm removal) are plugged in here once it implements
    // `ContainerHooks`; until then the monitor's own records (monitor.json, exit.json) are the
    // state.
    let code = monitor::run_monitor(&dir, opts, &NoHooks)?;
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}
