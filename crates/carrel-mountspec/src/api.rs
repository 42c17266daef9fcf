//! The Engine API's request shapes for mounts: `HostConfig.Mounts[]` ([`ApiMount`]) and the
//! mount-related pieces of a container create request ([`MountRequest`]).
//!
//! Field names and empty-field omission follow Docker's Go types (`omitempty` everywhere), so a
//! request serialized here is byte-for-byte what the docker CLI sends (Go sorts map keys, and so
//! does a `BTreeMap`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// `Mount.BindOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindOptions {
    /// `private`, `rprivate`, `shared`, `rshared`, `slave` or `rslave` (validated by the daemon).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub propagation: String,
    /// Bind without submounts (`bind-recursive=disabled`).
    #[serde(skip_serializing_if = "is_false")]
    pub non_recursive: bool,
    /// Create a missing source as a directory (`bind-create-src`).
    #[serde(skip_serializing_if = "is_false")]
    pub create_mountpoint: bool,
    /// Read-only, but submounts keep their mode (`bind-recursive=writable`).
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_non_recursive: bool,
    /// Recursively read-only or fail (`bind-recursive=readonly`).
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_force_recursive: bool,
}

/// `Mount.VolumeOptions.DriverConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DriverConfig {
    /// Volume driver name (`volume-driver`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Driver options (`volume-opt`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// `Mount.VolumeOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    /// Do not populate an empty volume from the image (`volume-nocopy`).
    #[serde(skip_serializing_if = "is_false")]
    pub no_copy: bool,
    /// Labels of a volume created for this mount (`volume-label`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Mount this path inside the volume (`volume-subpath`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subpath: String,
    /// Driver and driver options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<DriverConfig>,
}

/// `Mount.ImageOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageOptions {
    /// Mount this path inside the image (`image-subpath`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subpath: String,
}

/// `Mount.TmpfsOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    /// Size limit in bytes; 0 means unset (the kernel's default, half of RAM).
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub size_bytes: i64,
    /// Mode of the tmpfs root (Go `os.FileMode`); 0 means unset (the kernel's `1777`).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub mode: u32,
    /// API-only extra options (API ≥ 1.46): `[["exec"]]` or `[["noexec"]]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<Vec<String>>,
}

/// One `HostConfig.Mounts[]` entry: the Engine API's `Mount` object (what `--mount` becomes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiMount {
    /// `bind`, `volume`, `tmpfs` or `image`; anything else is rejected by the daemon.
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Host path (bind), volume name (volume; empty for an anonymous volume) or image reference.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Path in the container, as given (the daemon cleans it).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Mount read-only.
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// `consistent`, `cached`, `delegated`, ...: stored and ignored on Linux.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub consistency: String,
    /// Options of a bind mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    /// Options of a volume mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    /// Options of an image mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_options: Option<ImageOptions>,
    /// Options of a tmpfs mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
}

/// The empty JSON object Docker uses as the value of `Config.Volumes` entries (`{"/data": {}}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The mount-related parts of a container create request, as the CLI builds them and the daemon
/// receives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    /// `HostConfig.Binds`: `-v` specs that have a source, in flag order, identical ones collapsed.
    pub binds: Vec<String>,
    /// `Config.Volumes`: anonymous `-v /path` specs, keyed by the string as typed.
    pub config_volumes: BTreeMap<String, Empty>,
    /// `HostConfig.Mounts`: the `--mount` flags.
    pub mounts: Vec<ApiMount>,
    /// `HostConfig.Tmpfs`: `--tmpfs` destination → options (a repeated destination: last wins).
    pub tmpfs: BTreeMap<String, String>,
    /// `HostConfig.VolumesFrom`: `--volumes-from` values, verbatim.
    pub volumes_from: Vec<String>,
    /// `HostConfig.VolumeDriver`: `--volume-driver` (for `-v` and image volumes only).
    pub volume_driver: String,
    /// `HostConfig.ReadonlyRootfs`: `--read-only`.
    pub readonly_rootfs: bool,
    /// `HostConfig.AutoRemove`: `--rm` (anonymous volumes go with the container).
    pub auto_remove: bool,
    /// `HostConfig.RestartPolicy.Name` (empty or `no` for none).
    pub restart_policy: String,
}
