//! The typed, validated mounts of a container: what a [`crate::MountPlan`] holds.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::gostr;

/// The label Docker's volume service puts on every volume created without a name.
pub const ANONYMOUS_VOLUME_LABEL: &str = "com.docker.volume.anonymous";

/// Mount propagation of a bind mount (`MountPoint.Propagation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// `private`
    Private,
    /// `rprivate` (Docker's default for binds)
    RPrivate,
    /// `shared`
    Shared,
    /// `rshared`
    RShared,
    /// `slave`
    Slave,
    /// `rslave` (what binds of the daemon root get by default)
    RSlave,
}

impl Propagation {
    /// All six, in Docker's order.
    pub const ALL: [Propagation; 6] = [
        Propagation::Private,
        Propagation::RPrivate,
        Propagation::Shared,
        Propagation::RShared,
        Propagation::Slave,
        Propagation::RSlave,
    ];

    /// Docker's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Private => "private",
            Propagation::RPrivate => "rprivate",
            Propagation::Shared => "shared",
            Propagation::RShared => "rshared",
            Propagation::Slave => "slave",
            Propagation::RSlave => "rslave",
        }
    }

    /// Parse Docker's spelling (case-sensitive).
    pub fn parse(s: &str) -> Option<Propagation> {
        Propagation::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether the propagation applies to submounts too (`r…`).
    pub fn is_recursive(self) -> bool {
        matches!(
            self,
            Propagation::RPrivate | Propagation::RShared | Propagation::RSlave
        )
    }
}

/// How a bind treats submounts of its source (`--mount bind-recursive=…`, Docker ≥ 25).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindRecursive {
    /// `rbind`; read-only means recursively read-only where the kernel and runtime can, and
    /// silently plain read-only otherwise (the default).
    #[default]
    Enabled,
    /// A plain `bind`: submounts are not visible (API `NonRecursive`).
    Disabled,
    /// `rbind`, read-only only at the top: submounts stay writable (API `ReadOnlyNonRecursive`).
    Writable,
    /// `rbind`, recursively read-only or fail at start (API `ReadOnlyForceRecursive`).
    Readonly,
}

impl BindRecursive {
    /// Docker's spelling (`enabled`, `disabled`, `writable`, `readonly`).
    pub fn as_str(self) -> &'static str {
        match self {
            BindRecursive::Enabled => "enabled",
            BindRecursive::Disabled => "disabled",
            BindRecursive::Writable => "writable",
            BindRecursive::Readonly => "readonly",
        }
    }
}

/// SELinux relabelling asked for with `z` / `Z` (applied only where SELinux is enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelinuxRelabel {
    /// `z`: a label shared by all containers.
    Shared,
    /// `Z`: a label private to this container.
    Private,
}

impl SelinuxRelabel {
    /// `z` or `Z`.
    pub fn as_str(self) -> &'static str {
        match self {
            SelinuxRelabel::Shared => "z",
            SelinuxRelabel::Private => "Z",
        }
    }

    /// The relabel a `-v` mode string asks for.
    pub fn from_mode(mode: &str) -> Option<SelinuxRelabel> {
        mode.split(',').find_map(|t| match t {
            "z" => Some(SelinuxRelabel::Shared),
            "Z" => Some(SelinuxRelabel::Private),
            _ => None,
        })
    }
}

/// Which part of the request a mount came from. It decides precedence, whether
/// `docker inspect` lists the mount, whether image content is copied in, and what `--rm` removes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// `HostConfig.Binds` (`-v` with a source).
    Binds,
    /// `HostConfig.Mounts` (`--mount`).
    Mounts,
    /// `HostConfig.Tmpfs` (`--tmpfs`): not listed by inspect.
    Tmpfs,
    /// `Config.Volumes` (anonymous `-v /path`).
    ConfigVolumes,
    /// The image's `VOLUME`s.
    ImageVolumes,
    /// Inherited through `--volumes-from` from the named container.
    VolumesFrom(String),
}

impl Origin {
    /// The request field, as the conformance vectors name it.
    pub fn api_field(&self) -> &'static str {
        match self {
            Origin::Binds => "HostConfig.Binds",
            Origin::Mounts => "HostConfig.Mounts",
            Origin::Tmpfs => "HostConfig.Tmpfs",
            Origin::ConfigVolumes | Origin::ImageVolumes => "Config.Volumes",
            Origin::VolumesFrom(_) => "HostConfig.VolumesFrom",
        }
    }

    /// Whether the mount was asked for explicitly with a destination (`-v src:dst` or `--mount`).
    pub fn is_explicit(&self) -> bool {
        matches!(self, Origin::Binds | Origin::Mounts)
    }
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindSpec {
    /// Host path, cleaned (`//srv//data/` → `/srv/data`).
    pub source: String,
    /// Container path, cleaned.
    pub target: String,
    /// Read-only (see [`BindSpec::recursive`] for how deep).
    pub readonly: bool,
    /// Effective propagation: the one asked for, `rslave` for binds of (a parent of) the daemon
    /// root, else `rprivate`.
    pub propagation: Propagation,
    /// Whether a missing source is created as a directory at start (always for `-v`, only with
    /// `bind-create-src` for `--mount`; a `--mount` source is checked at create).
    pub create_host_path: bool,
    /// Submount handling.
    pub recursive: BindRecursive,
    /// SELinux relabel asked for with `z`/`Z`.
    pub selinux_relabel: Option<SelinuxRelabel>,
    /// The `-v` option string as given (`ro,z`), shown by inspect as `Mode`; empty for `--mount`.
    pub mode: String,
    /// `consistent`/`cached`/`delegated`/…: recorded, no effect on Linux.
    pub consistency: String,
    /// Where it came from.
    pub origin: Origin,
}

/// A named or anonymous volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// The volume name; `None` for an anonymous volume not created yet (the volume service picks a
    /// random 64-hex name; the engine may record it here).
    pub name: Option<String>,
    /// Created without a name: removed with the container by `--rm` / `rm -v`.
    pub anonymous: bool,
    /// Container path, cleaned.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// `nocopy` / `volume-nocopy`: do not populate an empty volume from the image.
    pub nocopy: bool,
    /// `volume-subpath`, verbatim (checked to be relative and inside the volume).
    pub subpath: Option<String>,
    /// Labels for a volume created for this mount (anonymous ones carry
    /// [`ANONYMOUS_VOLUME_LABEL`]).
    pub labels: BTreeMap<String, String>,
    /// Volume driver asked for (`None`: the default, `local`).
    pub driver: Option<String>,
    /// Driver options for a volume created for this mount (`volume-opt`).
    pub driver_options: BTreeMap<String, String>,
    /// The `-v` option string as given; empty for `--mount` and anonymous volumes.
    pub mode: String,
    /// `consistent`/`cached`/`delegated`/…: recorded, no effect on Linux.
    pub consistency: String,
    /// Where it came from.
    pub origin: Origin,
}

impl VolumeSpec {
    /// Whether the volume is the default driver's (`local`).
    pub fn is_local_driver(&self) -> bool {
        matches!(self.driver.as_deref(), None | Some("") | Some("local"))
    }

    /// `Mode` as inspect shows it: `-v` and `--mount` volumes of the local driver given no
    /// options show `z` (Docker's `setBindModeIfNull`); others show the mode as given.
    pub fn inspect_mode(&self) -> String {
        if self.mode.is_empty() && self.origin.is_explicit() && self.is_local_driver() {
            "z".to_string()
        } else {
            self.mode.clone()
        }
    }

    /// The SELinux relabel applied when the volume is set up (from [`VolumeSpec::inspect_mode`]).
    pub fn selinux_relabel(&self) -> Option<SelinuxRelabel> {
        SelinuxRelabel::from_mode(&self.inspect_mode())
    }

    /// Whether image content is copied into the volume when it is empty (once, at create):
    /// on unless `nocopy`, never for inherited mounts.
    pub fn copy_up(&self) -> bool {
        !self.nocopy && !matches!(self.origin, Origin::VolumesFrom(_))
    }
}

/// A fresh tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsSpec {
    /// Container path: the `--tmpfs` key verbatim (Docker does not clean it), or the cleaned
    /// `--mount` target.
    pub target: String,
    /// Read-only (the last `ro`/`rw` wins).
    pub readonly: bool,
    /// Size limit in bytes when one is given in bytes (`None`: the kernel's default, half of RAM,
    /// or a `size=N%` relative to RAM, see [`TmpfsSpec::options`]).
    pub size_bytes: Option<u64>,
    /// Mode of the tmpfs root (`None`: the kernel's `1777`).
    pub mode: Option<u32>,
    /// The option list for the OCI spec: Docker's defaults `noexec,nosuid,nodev,rprivate`
    /// followed by the user's, merged (last one of each kind wins) and allow-listed. Render it
    /// with [`TmpfsSpec::mount_args`].
    pub options: Vec<String>,
    /// The user's option string Docker derives the list from (`--tmpfs` options verbatim, or the
    /// `ro,mode=…,size=…` built from `--mount`).
    pub data: String,
    /// Where it came from.
    pub origin: Origin,
}

impl TmpfsSpec {
    /// The mode the tmpfs root gets: the one asked for, else the kernel's `1777`.
    pub fn effective_mode(&self) -> u32 {
        self.mode.unwrap_or(0o1777)
    }
}

/// A read-only view of a local image (`--mount type=image`, Engine ≥ 28).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Image reference (must be present locally; never pulled).
    pub source: String,
    /// Container path, cleaned.
    pub target: String,
    /// `image-subpath`, verbatim.
    pub subpath: Option<String>,
    /// Where it came from.
    pub origin: Origin,
}

/// A `--volumes-from CONTAINER[:MODE]` entry, resolved by the engine with
/// [`crate::MountPlan::resolve_volumes_from`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumesFromSpec {
    /// Container name or id.
    pub container: String,
    /// The mode (`rw` when none was given).
    pub mode: String,
    /// Whether the mode makes the inherited mounts read-only (`ro`); `rw` cannot make a
    /// read-only mount writable.
    pub readonly: bool,
}

/// One mount of a container, validated and normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSpec {
    /// A host path.
    Bind(BindSpec),
    /// A volume.
    Volume(VolumeSpec),
    /// A tmpfs.
    Tmpfs(TmpfsSpec),
    /// An image.
    Image(ImageSpec),
    /// Not a mount yet: every mount of another container, resolved by the engine.
    VolumesFrom(VolumesFromSpec),
}

impl MountSpec {
    /// The destination as Docker records it (empty for a `VolumesFrom` entry).
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind(b) => &b.target,
            MountSpec::Volume(v) => &v.target,
            MountSpec::Tmpfs(t) => &t.target,
            MountSpec::Image(i) => &i.target,
            MountSpec::VolumesFrom(_) => "",
        }
    }

    /// The absolute, cleaned path in the container where the mount lands. It differs from
    /// [`MountSpec::target`] only for destinations Docker records as given: a `--tmpfs` key
    /// (`/data/` → `/data`) or a relative `Config.Volumes` key (`x:/data` → `/x:/data`, as the
    /// runtime resolves it).
    pub fn container_path(&self) -> String {
        let t = self.target();
        if gostr::is_abs(t) {
            gostr::clean(t)
        } else {
            gostr::clean(&format!("/{t}"))
        }
    }

    /// Where the mount came from.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            MountSpec::Bind(b) => Some(&b.origin),
            MountSpec::Volume(v) => Some(&v.origin),
            MountSpec::Tmpfs(t) => Some(&t.origin),
            MountSpec::Image(i) => Some(&i.origin),
            MountSpec::VolumesFrom(_) => None,
        }
    }

    /// Whether the mount is read-only.
    pub fn readonly(&self) -> bool {
        match self {
            MountSpec::Bind(b) => b.readonly,
            MountSpec::Volume(v) => v.readonly,
            MountSpec::Tmpfs(t) => t.readonly,
            MountSpec::Image(_) => true,
            MountSpec::VolumesFrom(f) => f.readonly,
        }
    }

    /// The type name (`bind`, `volume`, `tmpfs`, `image`, or `volumes-from`).
    pub fn type_name(&self) -> &'static str {
        match self {
            MountSpec::Bind(_) => "bind",
            MountSpec::Volume(_) => "volume",
            MountSpec::Tmpfs(_) => "tmpfs",
            MountSpec::Image(_) => "image",
            MountSpec::VolumesFrom(_) => "volumes-from",
        }
    }

    pub(crate) fn set_origin(&mut self, origin: Origin) {
        match self {
            MountSpec::Bind(b) => b.origin = origin,
            MountSpec::Volume(v) => v.origin = origin,
            MountSpec::Tmpfs(t) => t.origin = origin,
            MountSpec::Image(i) => i.origin = origin,
            MountSpec::VolumesFrom(_) => {}
        }
    }
}
