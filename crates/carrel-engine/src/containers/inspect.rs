//! `inspect` and `ps` answers in Docker's shapes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::types::{Config, HostConfig, Status};
use super::{Container, inspect_time, status_text};
use crate::{Engine, Result};

/// `State` of `inspect`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StateInspect {
    /// `created`, `running`, `exited`, …
    pub status: String,
    /// Running (or paused).
    pub running: bool,
    /// Paused.
    pub paused: bool,
    /// Restarting.
    pub restarting: bool,
    /// Killed by the OOM killer.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Dead.
    pub dead: bool,
    /// Host pid of its init process (0 when not running).
    pub pid: i64,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Why the last start failed.
    pub error: String,
    /// Start time (RFC 3339).
    pub started_at: String,
    /// End time (RFC 3339).
    pub finished_at: String,
}

/// One entry of `Mounts` in `inspect`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    /// `volume`, `bind`, `tmpfs`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Volume name (volumes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host path.
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// Volume driver (volumes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Mode as given (`ro`, `z`, …).
    pub mode: String,
    /// Writable.
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Propagation.
    pub propagation: String,
}

/// `GraphDriver` of `inspect`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriverInspect {
    /// Paths.
    pub data: BTreeMap<String, String>,
    /// Driver name.
    pub name: String,
}

/// `carrel inspect` of a container, in the shape of Docker's `ContainerJSON`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    /// Full id.
    pub id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Executable.
    pub path: String,
    /// Arguments.
    pub args: Vec<String>,
    /// State.
    pub state: StateInspect,
    /// Image id.
    pub image: String,
    /// `/etc/resolv.conf` source.
    pub resolv_conf_path: String,
    /// `/etc/hostname` source.
    pub hostname_path: String,
    /// `/etc/hosts` source.
    pub hosts_path: String,
    /// The json-file log.
    pub log_path: String,
    /// `/name`.
    pub name: String,
    /// Restarts.
    pub restart_count: i64,
    /// Storage driver.
    pub driver: String,
    /// Always `linux`.
    pub platform: String,
    /// SELinux mount label (unused).
    pub mount_label: String,
    /// SELinux process label (unused).
    pub process_label: String,
    /// AppArmor profile (unused).
    pub app_armor_profile: String,
    /// Exec sessions (none are kept).
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
    /// How it runs on the host.
    pub host_config: HostConfig,
    /// Storage driver paths.
    pub graph_driver: GraphDriverInspect,
    /// Volumes, binds and tmpfs mounts.
    pub mounts: Vec<MountPoint>,
    /// What it runs.
    pub config: Config,
    /// Networking (carrel has none of its own).
    pub network_settings: serde_json::Value,
}

/// One line of `carrel ps`, in the shape of Docker's `Container` summary.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    /// Full id.
    pub id: String,
    /// `["/name"]`.
    pub names: Vec<String>,
    /// The image as the user named it.
    pub image: String,
    /// Image id.
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// The command line.
    pub command: String,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Ports (none: carrel has no networking).
    pub ports: Vec<serde_json::Value>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `running`, `exited`, …
    pub state: String,
    /// `Up 2 minutes`, `Exited (0) 3 seconds ago`, …
    pub status: String,
    /// Mounts.
    pub mounts: Vec<MountPoint>,
}

impl Engine {
    /// The answer to `inspect` for a container.
    pub fn container_inspect(&self, name_or_id: &str) -> Result<ContainerInspect> {
        let c = self.resolve_container(name_or_id)?;
        let dir = self.container_dir(&c.id);
        let paths = self.snapshotter().paths(&c.snapshot)?;
        let mut data = BTreeMap::new();
        if !paths.lower.is_empty() {
            let lower: Vec<String> = paths
                .lower
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            data.insert("LowerDir".to_string(), lower.join(":"));
        }
        data.insert("MergedDir".into(), paths.merged.display().to_string());
        data.insert("UpperDir".into(), paths.upper.display().to_string());
        data.insert("WorkDir".into(), paths.work.display().to_string());
        let s = &c.state;
        Ok(ContainerInspect {
            created: inspect_time(c.created),
            path: c.spec.path.clone(),
            args: c.spec.args.clone(),
            state: StateInspect {
                status: s.status.as_str().into(),
                running: matches!(s.status, Status::Running | Status::Paused),
                paused: s.status == Status::Paused,
                restarting: s.status == Status::Restarting,
                oom_killed: s.oom_killed,
                dead: s.status == Status::Dead,
                pid: s.pid,
                exit_code: s.exit_code,
                error: s.error.clone(),
                started_at: inspect_time(s.started_at),
                finished_at: inspect_time(s.finished_at),
            },
            image: c.image_id.to_string(),
            resolv_conf_path: dir.join("resolv.conf").display().to_string(),
            hostname_path: dir.join("hostname").display().to_string(),
            hosts_path: dir.join("hosts").display().to_string(),
            log_path: dir.join(format!("{}-json.log", c.id)).display().to_string(),
            name: format!("/{}", c.name),
            restart_count: s.restart_count,
            driver: self.driver().name().into(),
            platform: "linux".into(),
            mount_label: String::new(),
            process_label: String::new(),
            app_armor_profile: String::new(),
            exec_ids: None,
            host_config: c.spec.host_config.clone(),
            graph_driver: GraphDriverInspect {
                data,
                name: self.driver().name().into(),
            },
            mounts: self.container_mount_points(&c),
            config: c.spec.config.clone(),
            network_settings: serde_json::json!({
                "Bridge": "",
                "SandboxID": "",
                "Ports": {},
                "SandboxKey": "",
                "Networks": {},
            }),
            id: c.id,
        })
    }

    /// The summary `ps` shows for a container.
    pub fn container_summary(&self, c: &Container) -> ContainerSummary {
        ContainerSummary {
            id: c.id.clone(),
            names: vec![format!("/{}", c.name)],
            image: c.spec.config.image.clone(),
            image_id: c.image_id.to_string(),
            command: c.command(),
            created: c.created.div_euclid(1_000_000_000),
            ports: Vec::new(),
            labels: c.spec.config.labels.clone().unwrap_or_default(),
            state: c.state.status.as_str().into(),
            status: status_text(&c.state),
            mounts: self.container_mount_points(c),
        }
    }

    /// The mounts of a container as `inspect` shows them (volumes, binds and `--mount` tmpfs;
    /// see [`Engine::mount_points`]).
    pub fn container_mount_points(&self, c: &Container) -> Vec<MountPoint> {
        self.mount_points(c)
    }
}
