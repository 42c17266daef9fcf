//! The Engine API's request shapes for mounts: `HostConfig.Mounts[]` ([`ApiMount`]) and the
//! mount-related pieces of a container create request ([`MountRequest`]).
//!
//! Field names and empty-field omission follow Docker's Go types (`omitempty` everywhere), so a
//! request serialized here is byte-for-byte what the docker CLI sends (Go sorts map keys, and so
//! does a `BTreeMap`).

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Go's decoder leaves a field at its zero value when the JSON says `null`; serde would fail.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

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
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub propagation: String,
    /// Bind without submounts (`bind-recursive=disabled`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub non_recursive: bool,
    /// Create a missing source as a directory (`bind-create-src`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub create_mountpoint: bool,
    /// Read-only, but submounts keep their mode (`bind-recursive=writable`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub read_only_non_recursive: bool,
    /// Recursively read-only or fail (`bind-recursive=readonly`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub read_only_force_recursive: bool,
}

/// `Mount.VolumeOptions.DriverConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DriverConfig {
    /// Volume driver name (`volume-driver`).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub name: String,
    /// Driver options (`volume-opt`).
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub options: BTreeMap<String, String>,
}

/// `Mount.VolumeOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    /// Do not populate an empty volume from the image (`volume-nocopy`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub no_copy: bool,
    /// Labels of a volume created for this mount (`volume-label`).
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub labels: BTreeMap<String, String>,
    /// Mount this path inside the volume (`volume-subpath`).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
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
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub subpath: String,
}

/// `Mount.TmpfsOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    /// Size limit in bytes; 0 means unset (the kernel's default, half of RAM).
    #[serde(skip_serializing_if = "is_zero_i64", deserialize_with = "nullable")]
    pub size_bytes: i64,
    /// Mode of the tmpfs root (Go `os.FileMode`); 0 means unset (the kernel's `1777`).
    #[serde(skip_serializing_if = "is_zero_u32", deserialize_with = "nullable")]
    pub mode: u32,
    /// API-only extra options (API ≥ 1.46): `[["exec"]]` or `[["noexec"]]`.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    pub options: Vec<Vec<String>>,
}

/// One `HostConfig.Mounts[]` entry: the Engine API's `Mount` object (what `--mount` becomes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiMount {
    /// `bind`, `volume`, `tmpfs` or `image`; anything else is rejected by the daemon.
    #[serde(
        rename = "Type",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub kind: String,
    /// Host path (bind), volume name (volume; empty for an anonymous volume) or image reference.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub source: String,
    /// Path in the container, as given (the daemon cleans it).
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub target: String,
    /// Mount read-only.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub read_only: bool,
    /// `consistent`, `cached`, `delegated`, ...: stored and ignored on Linux.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
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
/// Any value is accepted when reading, as Go's decoder does for `struct{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Empty {}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Empty, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Empty {})
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_go() {
        let m = ApiMount {
            kind: "bind".into(),
            source: "/srv/data".into(),
            target: "/data".into(),
            bind_options: Some(BindOptions::default()),
            ..ApiMount::default()
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"Type":"bind","Source":"/srv/data","Target":"/data","BindOptions":{}}"#
        );
        let t = ApiMount {
            kind: "tmpfs".into(),
            target: "/t".into(),
            tmpfs_options: Some(TmpfsOptions {
                size_bytes: 1 << 20,
                mode: 0o700,
                options: vec![vec!["exec".into()]],
            }),
            ..ApiMount::default()
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":1048576,"Mode":448,"Options":[["exec"]]}}"#
        );
    }

    #[test]
    fn reads_nulls_and_unknown_fields_like_go() {
        let m: ApiMount = serde_json::from_str(
            r#"{"Type":"volume","Source":null,"Target":"/d","ReadOnly":null,
                "VolumeOptions":{"NoCopy":false,"Labels":null,"DriverConfig":{"Name":"","Options":null}},
                "BindOptions":null,"ClusterOptions":{}}"#,
        )
        .unwrap();
        assert_eq!(m.kind, "volume");
        assert_eq!(m.source, "");
        assert!(m.bind_options.is_none());
        let vo = m.volume_options.unwrap();
        assert!(vo.labels.is_empty());
        assert!(vo.driver_config.unwrap().options.is_empty());
        let v: BTreeMap<String, Empty> =
            serde_json::from_str(r#"{"/a":{},"/b":null,"/c":{"x":1}}"#).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"/a":{},"/b":{},"/c":{}}"#
        );
    }
}
