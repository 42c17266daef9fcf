//! Containers in the Docker Engine API's shapes: the create request (`Config` + `HostConfig`),
//! the stored state, and the inspect and list answers. The CLI builds a [`CreateRequest`] from
//! its flags exactly as the docker CLI builds the API body, so the CLI and `carrel serve` share
//! one path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `Config`: what to run (image, command, environment, user, terminal).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Config {
    /// Host name inside the container (default: the short id).
    pub hostname: String,
    /// Domain name.
    pub domainname: String,
    /// `--user`: `name`, `uid`, `name:group`, `uid:gid`.
    pub user: String,
    /// Attach stdin (`-i` on `run`).
    pub attach_stdin: bool,
    /// Attach stdout.
    pub attach_stdout: bool,
    /// Attach stderr.
    pub attach_stderr: bool,
    /// Exposed ports (kept for compatibility; carrel has no networking).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Allocate a pseudo-terminal (`-t`).
    pub tty: bool,
    /// Keep stdin open (`-i`).
    pub open_stdin: bool,
    /// Close stdin after the first attached client detaches.
    pub stdin_once: bool,
    /// Environment, `KEY=value`.
    pub env: Option<Vec<String>>,
    /// Command (after the entrypoint).
    pub cmd: Option<Vec<String>>,
    /// The image as the user named it.
    pub image: String,
    /// Anonymous volume mount points (`VOLUME`, `-v /path`).
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Working directory.
    pub working_dir: String,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Networking disabled.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub network_disabled: bool,
    /// `ONBUILD` triggers from the image.
    pub on_build: Option<Vec<String>>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Signal that stops the container (default SIGTERM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds to wait after the stop signal before killing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
}

/// `HostConfig.LogConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    /// Always `json-file`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Driver options.
    pub config: BTreeMap<String, String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            kind: "json-file".into(),
            config: BTreeMap::new(),
        }
    }
}

/// `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    /// `no`, `always`, `unless-stopped`, `on-failure`.
    pub name: String,
    /// Retries for `on-failure`.
    pub maximum_retry_count: i64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            name: "no".into(),
            maximum_retry_count: 0,
        }
    }
}

/// `HostConfig`: how to run it on this host (mounts, read-only root, runtime, clean-up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// `-v` specs.
    pub binds: Option<Vec<String>>,
    /// `--cidfile`.
    #[serde(rename = "ContainerIDFile")]
    pub container_id_file: String,
    /// Logging.
    pub log_config: LogConfig,
    /// `none` or `host` (`default` means none: carrel has no container networking).
    pub network_mode: String,
    /// Restart policy (only `no` is supported).
    pub restart_policy: RestartPolicy,
    /// `--rm`.
    pub auto_remove: bool,
    /// Default volume driver for `-v`.
    pub volume_driver: String,
    /// `--volumes-from`.
    pub volumes_from: Option<Vec<String>>,
    /// Extra groups.
    pub group_add: Option<Vec<String>>,
    /// `--privileged` (not supported).
    pub privileged: bool,
    /// `--read-only`.
    pub readonly_rootfs: bool,
    /// `--tmpfs` specs: path → options.
    pub tmpfs: Option<BTreeMap<String, String>>,
    /// `/dev/shm` size in bytes.
    pub shm_size: i64,
    /// OCI runtime name or path.
    pub runtime: String,
    /// `--mount` specs (the Engine API's `Mount` objects, as the docker CLI sends them).
    pub mounts: Option<Vec<carrel_mountspec::ApiMount>>,
    /// Initial console size `[height, width]`.
    pub console_size: [u32; 2],
    /// Paths masked in the container (Docker's defaults).
    pub masked_paths: Option<Vec<String>>,
    /// Paths made read-only in the container (Docker's defaults).
    pub readonly_paths: Option<Vec<String>>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            binds: None,
            container_id_file: String::new(),
            log_config: LogConfig::default(),
            network_mode: "none".into(),
            restart_policy: RestartPolicy::default(),
            auto_remove: false,
            volume_driver: String::new(),
            volumes_from: None,
            group_add: None,
            privileged: false,
            readonly_rootfs: false,
            tmpfs: None,
            shm_size: DEFAULT_SHM_SIZE,
            runtime: String::new(),
            mounts: None,
            console_size: [0, 0],
            masked_paths: None,
            readonly_paths: None,
        }
    }
}

/// Docker's default `/dev/shm` size: 64 MiB.
pub const DEFAULT_SHM_SIZE: i64 = 64 << 20;

/// What `create` is asked to make.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// `--name` (empty: a generated name).
    pub name: String,
    /// What to run.
    pub config: Config,
    /// How to run it.
    pub host_config: HostConfig,
}

/// The lifecycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started (or start failed).
    Created,
    /// Its process runs.
    Running,
    /// Frozen.
    Paused,
    /// Being restarted.
    Restarting,
    /// Being removed.
    Removing,
    /// Its process ended.
    Exited,
    /// Broken beyond use (e.g. removal failed half way).
    Dead,
}

impl Status {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// The stored state of a container (`State` in inspect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    /// Lifecycle status.
    pub status: Status,
    /// Pid of the container's init process on the host (0 when not running).
    pub pid: i64,
    /// Pid of its monitor process (0 when none).
    #[serde(default)]
    pub monitor_pid: i64,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Why the last start failed, if it did.
    pub error: String,
    /// Killed by the OOM killer.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Start time, nanoseconds since the epoch (0: never).
    pub started_at: i64,
    /// End time, nanoseconds since the epoch (0: never).
    pub finished_at: i64,
    /// Restarts so far.
    pub restart_count: i64,
    /// The OCI runtime binary that runs it.
    #[serde(default)]
    pub runtime_path: String,
}

impl Default for State {
    fn default() -> Self {
        State {
            status: Status::Created,
            pid: 0,
            monitor_pid: 0,
            exit_code: 0,
            error: String::new(),
            oom_killed: false,
            started_at: 0,
            finished_at: 0,
            restart_count: 0,
            runtime_path: String::new(),
        }
    }
}
