//! The daemon layer: a create request's mount pieces validated and normalized into a
//! [`MountPlan`], with Docker's checks, messages and precedence rules.
//!
//! Order of checks (first failure wins), as in Docker's create path:
//! 1. `HostConfig.Mounts`: option structs that do not match the type (API ≥ 1.42), then each
//!    mount's validation including whether a bind source exists;
//! 2. `HostConfig.Tmpfs` destinations;
//! 3. `--volumes-from` specs;
//! 4. `HostConfig.Binds`, each parsed, checked against the daemon-root propagation rule and for a
//!    duplicate destination among binds and tmpfs;
//! 5. `HostConfig.Mounts` again, each checked against the daemon root and against earlier binds
//!    and mounts;
//! 6. `Config.Volumes` and the image's `VOLUME`s: an anonymous volume wherever the destination is
//!    still free.
//!
//! Nothing is created here: volumes (and the volume-driver checks of
//! [`crate::check_local_volume_create`]), copy-up, bind-source directories and subpath resolution
//! are the engine's, at create and start. Failures Docker reports only at start are kept for
//! [`MountPlan::check_start`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

use carrel_core::ErrorKind;

use crate::api::{ApiMount, BindOptions, DriverConfig, MountRequest, VolumeOptions};
use crate::error::{MountError, Stage};
use crate::gostr::{self, quote};
use crate::host::{HostPaths, stat_error_text};
use crate::spec::{
    ANONYMOUS_VOLUME_LABEL, BindRecursive, BindSpec, ImageSpec, MountSpec, Origin, Propagation,
    SelinuxRelabel, TmpfsSpec, VolumeSpec, VolumesFromSpec,
};
use crate::tmpfs;

/// Daemon-wide facts the planner needs.
pub struct PlanContext<'a> {
    /// The data root (`/var/lib/carrel`). Binds of it, inside it or of a parent of it get `rslave`
    /// propagation, and only `rslave`/`rshared` may be asked for.
    pub daemon_root: String,
    /// Whether bind sources exist (only `--mount type=bind` sources are checked).
    pub host: &'a dyn HostPaths,
}

/// The warning the daemon returns when `--volume-driver` is combined with `--mount` volumes.
pub const VOLUME_DRIVER_IGNORED_WARNING: &str = "the container-wide volume-driver configuration is ignored for volumes specified via 'mount'. Use '--mount type=volume,volume-driver=...' instead";

/// A container's mounts, validated and normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// The mounts: inherited (`--volumes-from`) entries first, then binds, `--mount`s, tmpfs and
    /// anonymous volumes. Use [`MountPlan::mounts_in_order`] to apply them.
    pub mounts: Vec<MountSpec>,
    /// `--read-only`: the root filesystem is read-only (user mounts keep their own mode).
    pub readonly_rootfs: bool,
    /// `--rm`: the container's anonymous volumes go with it.
    pub auto_remove: bool,
    /// Warnings for the create response.
    pub warnings: Vec<String>,
}

fn invalid_spec(raw: &str) -> MountError {
    MountError::create(format!("invalid volume specification: '{raw}'"))
}

fn invalid_mode(mode: &str) -> MountError {
    MountError::create(format!("invalid mode: {mode}"))
}

/// `invalid mount config for type "<t>": <reason>`.
fn mount_config(kind: &str, reason: impl std::fmt::Display) -> MountError {
    MountError::create(format!(
        "invalid mount config for type {}: {reason}",
        quote(kind)
    ))
}

fn extra_field(kind: &str, field: &str) -> MountError {
    mount_config(kind, format!("field {field} must not be specified"))
}

fn missing_field(kind: &str, field: &str) -> MountError {
    mount_config(kind, format!("field {field} must not be empty"))
}

const ROOT_DESTINATION: &str = "invalid specification: destination can't be '/'";

/// Whether a `-v` mode string is valid: comma-separated, case-sensitive tokens, at most one of
/// each category (access `rw`/`ro`, label `z`/`Z`, propagation, copy `nocopy`, consistency
/// `consistent`/`cached`/`delegated`). The empty mode is valid.
pub fn is_valid_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let mut counts = [0u8; 5];
    for token in mode.split(',') {
        let category = match token {
            "rw" | "ro" => 0,
            "z" | "Z" => 1,
            t if Propagation::parse(t).is_some() => 2,
            "nocopy" => 3,
            "consistent" | "cached" | "delegated" => 4,
            _ => return false,
        };
        counts[category] += 1;
    }
    counts.iter().all(|&c| c <= 1)
}

fn mode_tokens(mode: &str) -> impl Iterator<Item = &str> {
    mode.split(',').filter(|t| !t.is_empty())
}

fn mode_propagation(mode: &str) -> Option<Propagation> {
    mode_tokens(mode).find_map(Propagation::parse)
}

fn mode_is_readonly(mode: &str) -> bool {
    mode_tokens(mode).any(|t| t == "ro")
}

fn mode_consistency(mode: &str) -> String {
    mode_tokens(mode)
        .find(|t| matches!(*t, "consistent" | "cached" | "delegated"))
        .unwrap_or("")
        .to_string()
}

/// Validate a destination like Docker's `validateMountTarget` (message without the
/// `invalid mount config` wrapper): not `/` once cleaned (backslashes count as `/`), absolute.
pub fn validate_destination(target: &str) -> Result<(), String> {
    let slashed = target.replace('\\', "/");
    if gostr::clean(&slashed) == "/" {
        return Err(ROOT_DESTINATION.to_string());
    }
    if !gostr::is_abs(&slashed) {
        return Err(format!(
            "invalid mount path: '{slashed}' mount path must be absolute"
        ));
    }
    Ok(())
}

/// The API ≥ 1.42 check that option structs match the mount type.
fn check_options_match_type(m: &ApiMount) -> Result<(), MountError> {
    let checks = [
        ("VolumeOptions", m.volume_options.is_some(), "volume"),
        ("BindOptions", m.bind_options.is_some(), "bind"),
        ("TmpfsOptions", m.tmpfs_options.is_some(), "tmpfs"),
    ];
    for (field, present, kind) in checks {
        if present && m.kind != kind {
            return Err(MountError::create(format!(
                "{field} must not be specified on mount type {}",
                quote(&m.kind)
            )));
        }
    }
    Ok(())
}

/// Docker's `validateMountConfig` for one `HostConfig.Mounts` entry (or a parsed `-v` spec).
/// `host` is `None` to skip the bind-source existence check (as for `-v`).
pub fn validate_mount(m: &ApiMount, host: Option<&dyn HostPaths>) -> Result<(), MountError> {
    let kind = m.kind.as_str();
    if m.target.is_empty() {
        return Err(missing_field(kind, "Target"));
    }
    validate_destination(&m.target).map_err(|reason| mount_config(kind, reason))?;
    match kind {
        "bind" => {
            if m.source.is_empty() {
                return Err(missing_field(kind, "Source"));
            }
            if let Some(b) = &m.bind_options
                && !b.propagation.is_empty()
                && Propagation::parse(&b.propagation).is_none()
            {
                return Err(mount_config(
                    kind,
                    format!("invalid propagation mode: {}", b.propagation),
                ));
            }
            if m.volume_options.is_some() {
                return Err(extra_field(kind, "VolumeOptions"));
            }
            if m.image_options.is_some() {
                return Err(extra_field(kind, "ImageOptions"));
            }
            if m.tmpfs_options.is_some() {
                return Err(extra_field(kind, "TmpfsOptions"));
            }
            let slashed = m.source.replace('\\', "/");
            if !gostr::is_abs(&slashed) {
                return Err(mount_config(
                    kind,
                    format!("invalid mount path: '{slashed}' mount path must be absolute"),
                ));
            }
            if let Some(host) = host {
                let exists = host
                    .exists(&m.source)
                    .map_err(|e| mount_config(kind, stat_error_text(&m.source, &e)))?;
                let create = m.bind_options.as_ref().is_some_and(|b| b.create_mountpoint);
                if !exists && !create {
                    return Err(MountError::new(
                        Stage::DaemonCreate,
                        ErrorKind::NotFound,
                        format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            m.source
                        ),
                    ));
                }
            }
        }
        "volume" => {
            if m.bind_options.is_some() {
                return Err(extra_field(kind, "BindOptions"));
            }
            if m.image_options.is_some() {
                return Err(extra_field(kind, "ImageOptions"));
            }
            if m.tmpfs_options.is_some() {
                return Err(extra_field(kind, "TmpfsOptions"));
            }
            if let Some(sub) = m.volume_options.as_ref().map(|o| o.subpath.as_str())
                && !sub.is_empty()
            {
                if m.source.is_empty() {
                    return Err(mount_config(
                        kind,
                        "must not set Subpath when using anonymous volumes",
                    ));
                }
                if !gostr::is_local(sub) {
                    return Err(mount_config(
                        kind,
                        "subpath must be a relative path within the volume",
                    ));
                }
            }
        }
        "tmpfs" => {
            if m.bind_options.is_some() {
                return Err(extra_field(kind, "BindOptions"));
            }
            if m.volume_options.is_some() {
                return Err(extra_field(kind, "VolumeOptions"));
            }
            if m.image_options.is_some() {
                return Err(extra_field(kind, "ImageOptions"));
            }
            if !m.source.is_empty() {
                return Err(extra_field(kind, "Source"));
            }
            tmpfs_api_options(m).map_err(|reason| mount_config(kind, reason))?;
        }
        "image" => {
            if m.bind_options.is_some() {
                return Err(extra_field(kind, "BindOptions"));
            }
            if m.volume_options.is_some() {
                return Err(extra_field(kind, "VolumeOptions"));
            }
            if m.tmpfs_options.is_some() {
                return Err(extra_field(kind, "TmpfsOptions"));
            }
            if m.source.is_empty() {
                return Err(missing_field(kind, "Source"));
            }
            if let Some(sub) = m.image_options.as_ref().map(|o| o.subpath.as_str())
                && !sub.is_empty()
                && !gostr::is_local(sub)
            {
                return Err(mount_config(
                    kind,
                    "subpath must be a relative path within the volume",
                ));
            }
        }
        _ => return Err(mount_config(kind, "mount type unknown")),
    }
    Ok(())
}

/// The API-only `TmpfsOptions.Options`: only `exec` and `noexec`.
fn tmpfs_api_options(m: &ApiMount) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for opt in m.tmpfs_options.iter().flat_map(|t| &t.options) {
        match opt.as_slice() {
            [name] | [name, _] if name != "exec" && name != "noexec" => {
                return Err(format!("invalid option: {name}"));
            }
            [name] => out.push(name.clone()),
            [name, value] => out.push(format!("{name}={value}")),
            _ => return Err("invalid option array length".to_string()),
        }
    }
    Ok(out)
}

/// How a bind's API flags map to [`BindRecursive`]; combinations Docker refuses at start that a
/// single value cannot carry are refused here, at create.
fn bind_recursive(b: Option<&BindOptions>, readonly: bool) -> Result<BindRecursive, MountError> {
    let Some(b) = b else {
        return Ok(BindRecursive::Enabled);
    };
    if b.read_only_non_recursive && b.read_only_force_recursive {
        return Err(MountError::create(
            "mount options conflict: ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive",
        ));
    }
    if b.non_recursive {
        if !readonly && b.read_only_non_recursive {
            return Err(MountError::create(
                "mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive",
            ));
        }
        if !readonly && b.read_only_force_recursive {
            return Err(MountError::create(
                "mount options conflict: !ReadOnly && BindOptions.ReadOnlyForceRecursive",
            ));
        }
        return Ok(BindRecursive::Disabled);
    }
    Ok(if b.read_only_force_recursive {
        BindRecursive::Readonly
    } else if b.read_only_non_recursive {
        BindRecursive::Writable
    } else {
        BindRecursive::Enabled
    })
}

/// A validated API mount (from `--mount`, or a parsed `-v` spec) as a [`MountSpec`].
fn to_spec(m: &ApiMount, mode: &str, origin: Origin) -> Result<MountSpec, MountError> {
    let target = gostr::clean(&m.target);
    let spec = match m.kind.as_str() {
        "bind" => {
            let bind = m.bind_options.as_ref();
            let from_v = origin == Origin::Binds;
            MountSpec::Bind(BindSpec {
                source: gostr::clean(&m.source),
                target,
                readonly: m.read_only,
                propagation: bind
                    .and_then(|b| Propagation::parse(&b.propagation))
                    .unwrap_or(Propagation::RPrivate),
                create_host_path: from_v || bind.is_some_and(|b| b.create_mountpoint),
                recursive: bind_recursive(bind, m.read_only)?,
                selinux_relabel: SelinuxRelabel::from_mode(mode),
                mode: mode.to_string(),
                consistency: if from_v {
                    mode_consistency(mode)
                } else {
                    m.consistency.clone()
                },
                origin,
            })
        }
        "volume" => {
            let opts = m.volume_options.clone().unwrap_or_default();
            let driver = opts.driver_config.clone().unwrap_or_default();
            let anonymous = m.source.is_empty();
            let mut labels = opts.labels.clone();
            if anonymous {
                labels.insert(ANONYMOUS_VOLUME_LABEL.to_string(), String::new());
            }
            let from_v = origin == Origin::Binds;
            MountSpec::Volume(VolumeSpec {
                name: (!anonymous).then(|| m.source.clone()),
                anonymous,
                target,
                readonly: m.read_only,
                nocopy: opts.no_copy,
                subpath: (!opts.subpath.is_empty()).then(|| opts.subpath.clone()),
                labels,
                driver: (!driver.name.is_empty()).then(|| driver.name.clone()),
                driver_options: driver.options,
                mode: mode.to_string(),
                consistency: if from_v {
                    mode_consistency(mode)
                } else {
                    m.consistency.clone()
                },
                origin,
            })
        }
        "tmpfs" => {
            let t = m.tmpfs_options.clone().unwrap_or_default();
            let extra = tmpfs_api_options(m).map_err(|r| mount_config("tmpfs", r))?;
            let data = tmpfs::data_from_mount(m.read_only, t.size_bytes, t.mode, &extra);
            MountSpec::Tmpfs(TmpfsSpec {
                target,
                readonly: m.read_only,
                size_bytes: u64::try_from(t.size_bytes).ok().filter(|s| *s > 0),
                mode: (t.mode != 0).then_some(t.mode),
                options: tmpfs::merge_data(&data).unwrap_or_else(|_| defaults()),
                data,
                origin,
            })
        }
        "image" => MountSpec::Image(ImageSpec {
            source: m.source.clone(),
            target,
            subpath: m
                .image_options
                .as_ref()
                .filter(|o| !o.subpath.is_empty())
                .map(|o| o.subpath.clone()),
            origin,
        }),
        other => return Err(mount_config(other, "mount type unknown")),
    };
    Ok(spec)
}

fn defaults() -> Vec<String> {
    tmpfs::DEFAULT_OPTIONS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A `--tmpfs` entry (`HostConfig.Tmpfs[dest] = data`) as a spec. The destination is kept as
/// written; options outside the allow-list are reported by [`MountPlan::check_start`] (the spec
/// then carries only the defaults).
pub fn tmpfs_from_map(dest: &str, data: &str) -> TmpfsSpec {
    let options = tmpfs::merge_data(data).unwrap_or_else(|_| defaults());
    let mut readonly = false;
    let mut size_bytes = None;
    let mut mode = None;
    for opt in data.split(',') {
        match opt {
            "ro" => readonly = true,
            "rw" => readonly = false,
            _ => match opt.split_once('=') {
                Some(("size", v)) => size_bytes = tmpfs::parse_kernel_size(v),
                Some(("mode", v)) => mode = u32::from_str_radix(v, 8).ok(),
                _ => {}
            },
        }
    }
    TmpfsSpec {
        target: dest.to_string(),
        readonly,
        size_bytes,
        mode,
        options,
        data: data.to_string(),
        origin: Origin::Tmpfs,
    }
}

/// Docker's `ParseMountRaw` for one `HostConfig.Binds` entry: the API mount it stands for and
/// its mode string. Validation errors read
/// `invalid volume specification: '<raw>': invalid mount config for type …`.
pub fn parse_bind(raw: &str, volume_driver: &str) -> Result<(ApiMount, String), MountError> {
    let arr: Vec<&str> = raw.splitn(4, ':').collect();
    if arr[0].is_empty() {
        return Err(invalid_spec(raw));
    }
    let mut m = ApiMount::default();
    let mut mode = "";
    match arr.as_slice() {
        [target] => m.target = target.to_string(),
        [source, target] => {
            if is_valid_mode(target) {
                return Err(invalid_spec(raw));
            }
            m.source = source.to_string();
            m.target = target.to_string();
        }
        [source, target, md] => {
            m.source = source.to_string();
            m.target = target.to_string();
            mode = md;
        }
        _ => return Err(invalid_spec(raw)),
    }
    if !is_valid_mode(mode) {
        return Err(invalid_mode(mode));
    }
    m.kind = if gostr::is_abs(&m.source) {
        "bind"
    } else {
        "volume"
    }
    .to_string();
    m.read_only = mode_is_readonly(mode);
    if !volume_driver.is_empty() && m.kind == "volume" {
        m.volume_options = Some(VolumeOptions {
            driver_config: Some(DriverConfig {
                name: volume_driver.to_string(),
                ..DriverConfig::default()
            }),
            ..VolumeOptions::default()
        });
    }
    if mode_tokens(mode).any(|t| t == "nocopy") {
        m.volume_options
            .get_or_insert_with(VolumeOptions::default)
            .no_copy = true;
    }
    if let Some(p) = mode_propagation(mode) {
        m.bind_options = Some(BindOptions {
            propagation: p.as_str().to_string(),
            ..BindOptions::default()
        });
    }
    validate_mount(&m, None)
        .map_err(|e| e.prefixed(&format!("invalid volume specification: '{raw}': ")))?;
    Ok((m, mode.to_string()))
}

/// Docker's `ParseVolumesFrom`: `CONTAINER[:MODE]`, the mode a valid `-v` mode without
/// propagation or `nocopy` (`rw` when empty).
pub fn parse_volumes_from(spec: &str) -> Result<VolumesFromSpec, MountError> {
    if spec.is_empty() {
        return Err(MountError::create(
            "volumes-from specification cannot be an empty string",
        ));
    }
    let (container, mode) = spec.split_once(':').unwrap_or((spec, ""));
    let mode = if mode.is_empty() { "rw" } else { mode };
    if !is_valid_mode(mode)
        || mode_propagation(mode).is_some()
        || mode_tokens(mode).any(|t| t == "nocopy")
    {
        return Err(invalid_mode(mode));
    }
    Ok(VolumesFromSpec {
        container: container.to_string(),
        mode: mode.to_string(),
        readonly: mode_is_readonly(mode),
    })
}

/// The daemon-root rule: a bind whose (raw) source is a string prefix of the daemon root, or has
/// it as prefix, gets `rslave` when no propagation is given; only `rslave`/`rshared` may be given.
/// Returns whether the default must become `rslave`.
fn daemon_root_rule(m: &ApiMount, root: &str) -> Result<bool, MountError> {
    if m.kind != "bind" || !(m.source.starts_with(root) || root.starts_with(&m.source)) {
        return Ok(false);
    }
    let propagation = m
        .bind_options
        .as_ref()
        .map(|b| b.propagation.as_str())
        .unwrap_or("");
    match propagation {
        "" => Ok(true),
        "rslave" | "rshared" => Ok(false),
        p => Err(MountError::create(format!(
            "invalid mount config: must use either propagation mode \"rslave\" or \"rshared\" when mount source is within the daemon root, daemon root: {}, bind mount source: {}, propagation: {}",
            quote(root),
            quote(&m.source),
            quote(p)
        ))),
    }
}

fn set_rslave(spec: &mut MountSpec) {
    if let MountSpec::Bind(b) = spec {
        b.propagation = Propagation::RSlave;
    }
}

fn duplicate(dest: &str) -> MountError {
    MountError::create(format!("Duplicate mount point: {dest}"))
}

/// Destinations carrel never accepts for an image `VOLUME` (ADVERSARIAL ST-41).
fn is_system_path(path: &str) -> bool {
    ["/proc", "/sys", "/dev"].iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Files under `/proc` the runtime lets a mount cover (what lxcfs emulates); anything else at or
/// under `/proc` is refused at start.
pub const PROC_MOUNT_ALLOWLIST: [&str; 12] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/pressure/cpu",
    "/proc/pressure/io",
    "/proc/pressure/memory",
    "/proc/sys/kernel/ns_last_pid",
];

/// The runtime's check on a user mount's destination (cleaned, absolute): `/proc` itself and
/// anything under it is refused, except [`PROC_MOUNT_ALLOWLIST`]; `/sys`, `/dev` and look-alikes
/// such as `/sysfiles` or `/procfoo` are fine.
pub fn check_proc_destination(path: &str) -> Result<(), MountError> {
    if path == "/proc" {
        return Err(MountError::start(format!(
            "{} cannot be mounted because it is not of type proc",
            quote(path)
        )));
    }
    if path.starts_with("/proc/") && !PROC_MOUNT_ALLOWLIST.contains(&path) {
        return Err(MountError::start(format!(
            "{} cannot be mounted because it is inside /proc",
            quote(path)
        )));
    }
    Ok(())
}

/// Validate a create request's mounts and normalize them into a plan (see the module docs for
/// the order of checks). `image_volumes` are the image's `VOLUME` entries.
pub fn plan_mounts(
    req: &MountRequest,
    image_volumes: &[String],
    ctx: &PlanContext<'_>,
) -> Result<MountPlan, MountError> {
    for m in &req.mounts {
        check_options_match_type(m)?;
    }
    if req.auto_remove && !req.restart_policy.is_empty() && req.restart_policy != "no" {
        return Err(MountError::create(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    for m in &req.mounts {
        validate_mount(m, Some(ctx.host))?;
    }
    for dest in req.tmpfs.keys() {
        validate_destination(dest).map_err(MountError::create)?;
    }

    let mut mounts: Vec<MountSpec> = Vec::new();
    for vf in &req.volumes_from {
        mounts.push(MountSpec::VolumesFrom(parse_volumes_from(vf)?));
    }
    // Destinations of binds and `--mount`s (Docker's `binds` set), cleaned.
    let mut taken: HashSet<String> = HashSet::new();
    for raw in &req.binds {
        let (api, mode) = parse_bind(raw, &req.volume_driver)?;
        let rslave = daemon_root_rule(&api, &ctx.daemon_root)?;
        let mut spec = to_spec(&api, &mode, Origin::Binds)?;
        if rslave {
            set_rslave(&mut spec);
        }
        let dest = spec.target().to_string();
        if taken.contains(&dest) || req.tmpfs.contains_key(&dest) {
            return Err(duplicate(&dest));
        }
        taken.insert(dest);
        mounts.push(spec);
    }
    for m in &req.mounts {
        let rslave = daemon_root_rule(m, &ctx.daemon_root)?;
        let mut spec = to_spec(m, "", Origin::Mounts)?;
        if rslave {
            set_rslave(&mut spec);
        }
        let dest = spec.target().to_string();
        if taken.contains(&dest) {
            return Err(duplicate(&m.target));
        }
        taken.insert(dest);
        mounts.push(spec);
    }
    for (dest, data) in &req.tmpfs {
        mounts.push(MountSpec::Tmpfs(tmpfs_from_map(dest, data)));
    }
    let anonymous = req
        .config_volumes
        .keys()
        .map(|k| (k.as_str(), Origin::ConfigVolumes))
        .chain(
            image_volumes
                .iter()
                .map(|k| (k.as_str(), Origin::ImageVolumes)),
        );
    for (key, origin) in anonymous {
        let dest = gostr::clean(key);
        if taken.contains(&dest) || req.tmpfs.contains_key(&dest) {
            continue;
        }
        let absolute = gostr::clean(&format!("/{dest}"));
        if absolute == "/" {
            return Err(MountError::create(ROOT_DESTINATION));
        }
        if origin == Origin::ImageVolumes && is_system_path(&absolute) {
            return Err(MountError::create(format!(
                "invalid image volume {}: volumes under /proc, /sys or /dev are not allowed",
                quote(key)
            )));
        }
        let mut labels = BTreeMap::new();
        labels.insert(ANONYMOUS_VOLUME_LABEL.to_string(), String::new());
        mounts.push(MountSpec::Volume(VolumeSpec {
            name: None,
            anonymous: true,
            target: dest.clone(),
            readonly: false,
            nocopy: false,
            subpath: None,
            labels,
            driver: (!req.volume_driver.is_empty()).then(|| req.volume_driver.clone()),
            driver_options: BTreeMap::new(),
            mode: String::new(),
            consistency: String::new(),
            origin,
        }));
        taken.insert(dest);
    }

    let mut warnings = Vec::new();
    if !req.volume_driver.is_empty() && req.mounts.iter().any(|m| m.kind == "volume") {
        warnings.push(VOLUME_DRIVER_IGNORED_WARNING.to_string());
    }
    Ok(MountPlan {
        mounts,
        readonly_rootfs: req.readonly_rootfs,
        auto_remove: req.auto_remove,
        warnings,
    })
}

fn depth(path: &str) -> usize {
    gostr::clean(path).split('/').count()
}

impl MountPlan {
    /// The volumes of the plan (to create or reference at container create).
    pub fn volumes(&self) -> impl Iterator<Item = &VolumeSpec> {
        self.mounts.iter().filter_map(|m| match m {
            MountSpec::Volume(v) => Some(v),
            _ => None,
        })
    }

    /// What `docker inspect` lists as `Mounts`: everything but `--tmpfs` entries (and unresolved
    /// `--volumes-from` entries), including mounts that a tmpfs hides at start.
    pub fn inspect_mounts(&self) -> Vec<&MountSpec> {
        self.mounts
            .iter()
            .filter(|m| !matches!(m.origin(), None | Some(Origin::Tmpfs)))
            .collect()
    }

    /// The volumes `--rm` / `rm -v` remove with the container: those created without a name
    /// (inherited ones included; removal of a volume still in use is skipped silently).
    pub fn volumes_removed_with_container(&self) -> Vec<&VolumeSpec> {
        self.volumes().filter(|v| v.anonymous).collect()
    }

    /// Expand every `--volumes-from` entry with the mounts of that container (as the engine
    /// recorded them, anonymous volumes with their generated names), applying Docker's
    /// precedence: a later `--volumes-from` wins over an earlier one at the same destination,
    /// binds and `--mount`s win over inherited mounts silently, and anonymous volumes
    /// (`-v /path`, image `VOLUME`) are not created where an inherited mount sits.
    ///
    /// Inherited mounts keep type, source and propagation; they are read-only when the parent's
    /// is or the mode says `ro`; they carry no mode and are never populated from the image.
    /// `--tmpfs` entries of the parent are not inherited.
    pub fn resolve_volumes_from<F>(&mut self, mut lookup: F) -> Result<(), MountError>
    where
        F: FnMut(&str) -> Result<Vec<MountSpec>, MountError>,
    {
        let entries: Vec<VolumesFromSpec> = self
            .mounts
            .iter()
            .filter_map(|m| match m {
                MountSpec::VolumesFrom(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let mut inherited: Vec<MountSpec> = Vec::new();
        for vf in &entries {
            for parent in lookup(&vf.container)? {
                let mut m = match parent {
                    MountSpec::VolumesFrom(_) => continue,
                    MountSpec::Tmpfs(t) if t.origin == Origin::Tmpfs => continue,
                    other => other,
                };
                match &mut m {
                    MountSpec::Bind(b) => {
                        b.readonly |= vf.readonly;
                        b.mode.clear();
                        b.selinux_relabel = None;
                        b.create_host_path = true;
                    }
                    MountSpec::Volume(v) => {
                        v.readonly |= vf.readonly;
                        v.mode.clear();
                    }
                    MountSpec::Tmpfs(t) => {
                        if vf.readonly && !t.readonly {
                            t.readonly = true;
                            t.data = if t.data.is_empty() {
                                "ro".to_string()
                            } else {
                                format!("{},ro", t.data)
                            };
                            t.options = tmpfs::merge_data(&t.data).unwrap_or_else(|_| defaults());
                        }
                    }
                    MountSpec::Image(_) | MountSpec::VolumesFrom(_) => {}
                }
                m.set_origin(Origin::VolumesFrom(vf.container.clone()));
                inherited.retain(|x| x.target() != m.target());
                inherited.push(m);
            }
        }
        let explicit: HashSet<String> = self
            .mounts
            .iter()
            .filter(|m| m.origin().is_some_and(Origin::is_explicit))
            .map(|m| m.target().to_string())
            .collect();
        inherited.retain(|m| !explicit.contains(m.target()));
        let inherited_targets: HashSet<String> =
            inherited.iter().map(|m| m.target().to_string()).collect();
        self.mounts.retain(|m| match m.origin() {
            None => false,
            Some(Origin::ConfigVolumes | Origin::ImageVolumes) => {
                !inherited_targets.contains(m.target())
            }
            Some(_) => true,
        });
        inherited.append(&mut self.mounts);
        self.mounts = inherited;
        Ok(())
    }

    /// The failures Docker (and its runtime) report only when the container starts, so `create`
    /// succeeds and `start`/`run` fail: tmpfs options outside the allow-list (and carrel's refusal
    /// of unlimited tmpfs), bind flags that contradict read-only, and destinations at or under
    /// `/proc`. Also fails if `--volumes-from` entries were not resolved.
    pub fn check_start(&self) -> Result<(), MountError> {
        if self
            .mounts
            .iter()
            .any(|m| matches!(m, MountSpec::VolumesFrom(_)))
        {
            return Err(MountError::new(
                Stage::DaemonStart,
                ErrorKind::Internal,
                "--volumes-from entries were not resolved",
            ));
        }
        let order = self.apply_order();
        for m in &order {
            match m {
                MountSpec::Tmpfs(t) => {
                    t.effective_options()?;
                    t.check_limits()?;
                }
                MountSpec::Bind(b) if !b.readonly => match b.recursive {
                    BindRecursive::Writable => {
                        return Err(MountError::start(
                            "mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive",
                        ));
                    }
                    BindRecursive::Readonly => {
                        return Err(MountError::start(
                            "mount options conflict: !ReadOnly && BindOptions.ReadOnlyForceRecursive",
                        ));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        for m in &order {
            check_proc_destination(&m.container_path())?;
        }
        Ok(())
    }

    fn apply_order(&self) -> Vec<&MountSpec> {
        let tmpfs_targets: HashSet<&str> = self
            .mounts
            .iter()
            .filter(|m| matches!(m, MountSpec::Tmpfs(_)))
            .map(MountSpec::target)
            .collect();
        let mut order: Vec<&MountSpec> = self
            .mounts
            .iter()
            .filter(|m| match m {
                MountSpec::VolumesFrom(_) => false,
                MountSpec::Tmpfs(_) => true,
                other => !tmpfs_targets.contains(other.target()),
            })
            .collect();
        order.sort_by_key(|m| depth(&m.container_path()));
        order
    }

    /// The mounts to apply at start, shallow destinations first (so `--tmpfs /run` comes before
    /// `-v f:/run/x`), without the mounts a tmpfs at the same destination hides; fails with the
    /// first [`MountPlan::check_start`] error.
    pub fn mounts_in_order(&self) -> Result<Vec<&MountSpec>, MountError> {
        self.check_start()?;
        Ok(self.apply_order())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FixedHost;

    #[test]
    fn modes() {
        for ok in [
            "",
            "ro",
            "rw",
            "z",
            "Z",
            "ro,z,shared",
            "nocopy",
            "cached",
            "rw,Z,rslave,nocopy,delegated",
        ] {
            assert!(is_valid_mode(ok), "{ok}");
        }
        for bad in [
            "RO",
            "ro,",
            ",ro",
            "z,Z",
            "ro,rw",
            "shared,slave",
            "copy",
            "default",
            "cached,delegated",
            "volume-nocopy",
            "/data",
        ] {
            assert!(!is_valid_mode(bad), "{bad}");
        }
    }

    #[test]
    fn proc_destinations() {
        assert!(check_proc_destination("/proc").is_err());
        assert!(check_proc_destination("/proc/sys").is_err());
        assert!(check_proc_destination("/proc/sysrq-trigger").is_err());
        assert!(check_proc_destination("/proc/meminfo").is_ok());
        assert!(check_proc_destination("/procfoo").is_ok());
        assert!(check_proc_destination("/sysfiles/fs/cgroup").is_ok());
        assert!(check_proc_destination("/sys/fs/cgroup").is_ok());
        assert!(check_proc_destination("/dev/shm").is_ok());
        assert!(is_system_path("/sys/x"));
        assert!(is_system_path("/dev"));
        assert!(!is_system_path("/sysfiles/fs/cgroup"));
        assert!(!is_system_path("/devices"));
    }

    #[test]
    fn image_volume_policy_and_cleaning() {
        let host = FixedHost::new(["/srv/data"]);
        let ctx = PlanContext {
            daemon_root: "/var/lib/carrel".into(),
            host: &host,
        };
        let req = MountRequest::default();
        let err = plan_mounts(&req, &["/sys/x".into()], &ctx).unwrap_err();
        assert_eq!(err.stage(), Stage::DaemonCreate);
        let plan = plan_mounts(&req, &["/../../../../etc".into()], &ctx).unwrap();
        assert_eq!(plan.mounts[0].target(), "/etc");
        // A user mount under /proc is refused at start, /sysfiles is fine.
        let mut req = MountRequest {
            binds: vec![
                "/srv/data:/proc/sys".into(),
                "/srv/data:/sysfiles/fs/cgroup".into(),
            ],
            ..MountRequest::default()
        };
        let plan = plan_mounts(&req, &[], &ctx).unwrap();
        assert_eq!(
            plan.check_start().unwrap_err().to_string(),
            "\"/proc/sys\" cannot be mounted because it is inside /proc"
        );
        req.binds.remove(0);
        plan_mounts(&req, &[], &ctx).unwrap().check_start().unwrap();
    }

    #[test]
    fn apply_order_is_shallow_first_and_tmpfs_hides() {
        let host = FixedHost::new(["/srv/data"]);
        let ctx = PlanContext {
            daemon_root: "/var/lib/carrel".into(),
            host: &host,
        };
        let mut req = MountRequest {
            binds: vec!["/tmp/f:/run/test".into()],
            ..MountRequest::default()
        };
        req.tmpfs.insert("/run".into(), String::new());
        req.mounts.push(ApiMount {
            kind: "volume".into(),
            target: "/data".into(),
            ..ApiMount::default()
        });
        req.tmpfs.insert("/data".into(), "size=1m".into());
        let plan = plan_mounts(&req, &[], &ctx).unwrap();
        let order: Vec<(&str, &str)> = plan
            .mounts_in_order()
            .unwrap()
            .iter()
            .map(|m| (m.type_name(), m.target()))
            .collect();
        assert_eq!(
            order,
            [("tmpfs", "/data"), ("tmpfs", "/run"), ("bind", "/run/test")]
        );
        // The hidden volume is still a mount point (inspect lists it), tmpfs are not.
        let inspect: Vec<&str> = plan.inspect_mounts().iter().map(|m| m.target()).collect();
        assert_eq!(inspect, ["/run/test", "/data"]);
    }
}
