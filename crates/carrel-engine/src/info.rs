//! `carrel info`: what this host and data root are, in the shape of Docker's `/info`.

use serde::Serialize;

use carrel_meta::images;
use carrel_mount::features::Features;

use crate::{DriverKind, Engine, Result};

/// System-wide information (Docker's `SystemInfo` fields that apply, plus carrel's features).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemInfo {
    /// A stable id of this data root.
    #[serde(rename = "ID")]
    pub id: String,
    /// Containers in the data root.
    pub containers: u64,
    /// Running containers.
    pub containers_running: u64,
    /// Paused containers.
    pub containers_paused: u64,
    /// Stopped containers.
    pub containers_stopped: u64,
    /// Images.
    pub images: u64,
    /// Storage driver name (`overlay2`, `copy`).
    pub driver: String,
    /// Storage driver details as `[name, value]` pairs.
    pub driver_status: Vec<[String; 2]>,
    /// The data root.
    pub docker_root_dir: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub operating_system: String,
    /// Always `linux`.
    #[serde(rename = "OSType")]
    pub os_type: String,
    /// `uname -m`.
    pub architecture: String,
    /// Online CPUs.
    #[serde(rename = "NCPU")]
    pub ncpu: u64,
    /// Total memory in bytes.
    pub mem_total: u64,
    /// Host name.
    pub name: String,
    /// carrel's version.
    pub server_version: String,
    /// OCI runtimes that work on this host.
    pub runtimes: Vec<String>,
    /// The runtime containers use unless `--runtime` says otherwise.
    pub default_runtime: String,
    /// Why other known runtimes do not work here: `[name, reason]`.
    pub unusable_runtimes: Vec<[String; 2]>,
    /// Kernel and filesystem features carrel detected.
    pub kernel_features: Features,
}

impl Engine {
    /// Gather system information.
    pub fn info(&self) -> Result<SystemInfo> {
        let features = Features::cached(self.layout().root());
        let id = self.root_id()?;
        let image_count = self.meta().read(images::list)?.len() as u64;
        let mut status = vec![[
            "Backing Filesystem".to_string(),
            features.backing_filesystem.clone(),
        ]];
        match self.driver() {
            DriverKind::Overlay => {
                status.push(["Supports d_type".into(), "true".into()]);
                status.push(["Native Overlay Diff".into(), "true".into()]);
                status.push(["userxattr".into(), "false".into()]);
                status.push([
                    "Layer mounts".into(),
                    if features.overlay_lowerdir_plus {
                        "new mount API, one lowerdir+ per layer (up to 500 layers)".into()
                    } else {
                        "mount(2) with short links (long chains limited by the page size)".into()
                    },
                ]);
            }
            DriverKind::Copy => {
                status.push([
                    "Reflinks".into(),
                    if features.reflink {
                        "true (copies share blocks)".into()
                    } else {
                        "false (full copies)".into()
                    },
                ]);
            }
        }
        let probe = self.runtimes();
        let runtimes: Vec<String> = probe.working().iter().map(|s| s.to_string()).collect();
        let unusable = probe
            .runtimes
            .iter()
            .filter(|r| !r.works)
            .map(|r| [r.name.clone(), r.reason.clone()])
            .collect();
        let containers = self.containers()?;
        let running = containers.iter().filter(|c| c.is_running()).count() as u64;
        let paused = containers
            .iter()
            .filter(|c| c.state.status == crate::containers::types::Status::Paused)
            .count() as u64;
        let uname = rustix::system::uname();
        let mem_total = rustix::system::sysinfo();
        Ok(SystemInfo {
            id,
            containers: containers.len() as u64,
            containers_running: running - paused,
            containers_paused: paused,
            containers_stopped: containers.len() as u64 - running,
            images: image_count,
            driver: self.driver().name().to_string(),
            driver_status: status,
            docker_root_dir: self.layout().root().display().to_string(),
            kernel_version: uname.release().to_string_lossy().into_owned(),
            operating_system: os_pretty_name(),
            os_type: "linux".into(),
            architecture: uname.machine().to_string_lossy().into_owned(),
            ncpu: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            mem_total: mem_total.totalram as u64 * u64::from(mem_total.mem_unit.max(1)),
            name: uname.nodename().to_string_lossy().into_owned(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            default_runtime: probe.default_name().unwrap_or("none").to_string(),
            runtimes,
            unusable_runtimes: unusable,
            kernel_features: features,
        })
    }

    /// A random id made once per data root.
    fn root_id(&self) -> Result<String> {
        if let Some(id) = self
            .meta()
            .read(|c| carrel_meta::settings::get(c, "root-id"))?
        {
            return Ok(id);
        }
        let fresh = carrel_core::id::random_id();
        Ok(self
            .meta()
            .write(|tx| match carrel_meta::settings::get(tx, "root-id")? {
                Some(id) => Ok(id),
                None => {
                    carrel_meta::settings::set(tx, "root-id", &fresh)?;
                    Ok(fresh.clone())
                }
            })?)
    }
}

fn os_pretty_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}
