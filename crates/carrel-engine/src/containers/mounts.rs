//! Volumes, bind mounts and tmpfs of containers, from the create request to the running
//! container and back.
//!
//! - **Create** ([`Engine::plan_container_mounts`], then `container_create`): the request's
//!   `Binds`, `Mounts`, `Tmpfs`, `VolumesFrom` and `Config.Volumes`, and the image's `VOLUME`s,
//!   are validated and normalized by `carrel-mountspec` into a [`MountPlan`] with Docker's errors
//!   (a duplicate mount point is found before anything is made); `--volumes-from` containers are
//!   looked up and their mounts inherited. The plan's volumes are then created or found under
//!   the create lease ([`Engine::ensure_plan_volumes`]; anonymous ones get their 64-hex names
//!   recorded in the plan), referenced in the transaction that inserts the container row, and
//!   empty ones are populated once from the image ([`populate`]). The plan is stored in the
//!   container's spec, so start, inspect, `rm -v` and recovery all use the same facts. A failed
//!   create leaves nothing: no row, no reference, no anonymous volume, no mount.
//! - **Start** ([`Engine::plan_run_mounts`]): the Docker checks done at start
//!   ([`MountPlan::check_start`]), missing `-v` sources created as directories, propagation
//!   checks, volumes mounted through the volume service and subpaths checked; the result is a list
//!   of [`PlannedMount`]s in the run plan. The monitor then pins every source by descriptor,
//!   stages it (recursively read-only when asked) under the container directory and resolves
//!   every destination inside the mounted root before the runtime sees a path ([`setup`]).
//! - **Exit and removal**: the volumes are released (unmounted for driver-backed ones) and
//!   measured when a run ends ([`Engine::release_container_volumes`]); `rm -v` and `--rm` remove
//!   the anonymous ones ([`Engine::remove_container_volumes`]).
//! - **Inspect and ps**: [`Engine::mount_points`] gives Docker's `Mounts` entries.

mod populate;
pub mod setup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use carrel_core::{ErrorKind, HasKind};
use carrel_meta::Lease;
use carrel_mountspec::{
    BindRecursive, Empty, MountError, MountPlan, MountRequest, MountSpec, Origin, PlanContext,
    Propagation, RealHost, Stage, VolumeSpec, plan_mounts,
};

use super::Container;
use super::inspect::MountPoint;
use super::types::HostConfig;
use crate::volumes::VolumeCreate;
use crate::{Engine, EngineError, Result};

pub(crate) use populate::needs_image;
pub use setup::{PlannedMount, PlannedSource, StagedMounts, prepare_user_mounts};

/// A `carrel-mountspec` error as an engine error of the same kind, with Docker's message.
pub(crate) fn mount_error(e: MountError) -> EngineError {
    let message = e.message().to_string();
    match e.kind() {
        ErrorKind::NotFound => EngineError::NotFound(message),
        ErrorKind::AlreadyExists => EngineError::AlreadyExists(message),
        ErrorKind::Conflict => EngineError::Conflict(message),
        ErrorKind::Precondition | ErrorKind::Unavailable => EngineError::Precondition(message),
        ErrorKind::Permission => EngineError::Permission(message),
        ErrorKind::InvalidArgument | ErrorKind::Internal => EngineError::InvalidArgument(message),
    }
}

/// The mount pieces of a create request, as the daemon receives them. `user_volumes` is the
/// request's own `Config.Volumes` (anonymous `-v /path`), before the image's `VOLUME`s are
/// merged in: those are planned separately, with their own rules.
pub(crate) fn mount_request(
    user_volumes: Option<&BTreeMap<String, serde_json::Value>>,
    hc: &HostConfig,
) -> MountRequest {
    MountRequest {
        binds: hc.binds.clone().unwrap_or_default(),
        config_volumes: user_volumes
            .map(|v| v.keys().map(|k| (k.clone(), Empty {})).collect())
            .unwrap_or_default(),
        mounts: hc.mounts.clone().unwrap_or_default(),
        tmpfs: hc.tmpfs.clone().unwrap_or_default(),
        volumes_from: hc.volumes_from.clone().unwrap_or_default(),
        volume_driver: hc.volume_driver.clone(),
        readonly_rootfs: hc.readonly_rootfs,
        auto_remove: hc.auto_remove,
        restart_policy: hc.restart_policy.name.clone(),
    }
}

/// The path a volume lands on in the container: its target cleaned and made absolute (a
/// relative `Config.Volumes` key is taken from the root, as the runtime does).
pub(crate) fn volume_container_path(v: &VolumeSpec) -> String {
    let t = &v.target;
    if t.starts_with('/') {
        carrel_mountspec::path::clean(t)
    } else {
        carrel_mountspec::path::clean(&format!("/{t}"))
    }
}

/// The names of a plan's volumes (each once, in plan order).
pub(crate) fn volume_names(plan: &MountPlan) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in plan.volumes() {
        if let Some(n) = &v.name
            && !out.contains(n)
        {
            out.push(n.clone());
        }
    }
    out
}

/// What [`Engine::plan_run_mounts`] gives the run plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunMounts {
    /// The user mounts, in the order they are applied.
    pub mounts: Vec<PlannedMount>,
    /// The root's propagation when a mount needs it (`shared`, `rslave`).
    pub rootfs_propagation: Option<String>,
    /// Volumes mounted for this start (released again if the start fails).
    pub volumes: Vec<String>,
}

/// An error Docker reports when the container starts, with `docker run`'s exit status for it
/// (127 when the message says "no such file or directory", as the docker CLI decides).
fn start_failed(message: String) -> EngineError {
    let exit_code = super::runtime::exit_code_for_message(&message);
    if exit_code == 125 {
        EngineError::InvalidArgument(message)
    } else {
        EngineError::StartFailed { message, exit_code }
    }
}

/// Whether `path` is `root` or inside it, or a parent of it, compared as strings the way Docker
/// compares a bind source with its data root.
fn in_daemon_root(path: &str, root: &str) -> bool {
    path.starts_with(root) || root.starts_with(path)
}

impl Engine {
    /// Validate and normalize the mounts of a container being created (Docker's create-time
    /// checks and errors, the image's `VOLUME`s) and resolve `--volumes-from` against the
    /// containers it names. Nothing is created here.
    pub(crate) fn plan_container_mounts(
        &self,
        req: &MountRequest,
        image_volumes: &[String],
    ) -> Result<MountPlan> {
        let ctx = PlanContext {
            daemon_root: self.layout().root().to_string_lossy().into_owned(),
            host: &RealHost,
        };
        let mut plan = plan_mounts(req, image_volumes, &ctx).map_err(mount_error)?;
        plan.resolve_volumes_from(|name| {
            let parent = self.resolve_container(name).map_err(|e| match e {
                EngineError::NotFound(_) => MountError::new(
                    Stage::DaemonCreate,
                    ErrorKind::InvalidArgument,
                    format!("No such container: {name}"),
                ),
                other => MountError::new(Stage::DaemonCreate, other.kind(), other.to_string()),
            })?;
            Ok(parent.spec.mounts.map(|p| p.mounts).unwrap_or_default())
        })
        .map_err(mount_error)?;
        if let Some(MountSpec::Image(i)) = plan
            .mounts
            .iter()
            .find(|m| matches!(m, MountSpec::Image(_)))
        {
            return Err(EngineError::InvalidArgument(format!(
                "invalid mount config for type \"image\": image mounts are not supported by carrel (target {})",
                i.target
            )));
        }
        Ok(plan)
    }

    /// Create or find every volume of `plan`, each listed under `lease` (so no prune or removal
    /// takes it before the container references it). Anonymous volumes get their generated
    /// names recorded in the plan. Returns the names of the anonymous volumes made here; on
    /// failure those are removed again before the error is returned.
    pub(crate) fn ensure_plan_volumes(
        &self,
        plan: &mut MountPlan,
        lease: &Lease,
    ) -> Result<Vec<String>> {
        let mut created: Vec<String> = Vec::new();
        for m in plan.mounts.iter_mut() {
            let MountSpec::Volume(v) = m else { continue };
            let outcome = match v.name.clone() {
                Some(name) => self.ensure_named_volume(&name, v, lease),
                None => self
                    .volume_create_under(
                        &VolumeCreate {
                            name: None,
                            driver: v.driver.clone(),
                            labels: v.labels.clone(),
                            options: v.driver_options.clone(),
                        },
                        lease,
                    )
                    .map(|vol| {
                        created.push(vol.name.clone());
                        v.name = Some(vol.name);
                    }),
            };
            if let Err(e) = outcome {
                self.discard_anonymous_volumes(&created, Some(lease));
                return Err(e);
            }
        }
        Ok(created)
    }

    /// A named volume for a container: the existing one (same driver; its options are kept, as
    /// Docker does) or a new one with the mount's labels and driver options. A removal racing
    /// with the lookup is retried: the name is then simply created again.
    fn ensure_named_volume(&self, name: &str, v: &VolumeSpec, lease: &Lease) -> Result<()> {
        let req = VolumeCreate {
            name: Some(name.to_string()),
            driver: v.driver.clone(),
            labels: v.labels.clone(),
            options: v.driver_options.clone(),
        };
        let mut attempts = 0;
        loop {
            match self.volume_create_under(&req, lease) {
                Ok(_) => return Ok(()),
                Err(EngineError::NotFound(m)) if m.ends_with("no such volume") && attempts < 20 => {
                    attempts += 1;
                    tracing::debug!(
                        volume = name,
                        "volume removed while being referenced; again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Remove anonymous volumes a failed create made (first unlisting them from `lease`, which
    /// protects them from removal). Failures are logged: what is left is a dangling anonymous
    /// volume that `volume prune` removes.
    pub(crate) fn discard_anonymous_volumes(&self, names: &[String], lease: Option<&Lease>) {
        for name in names {
            if let Some(l) = lease
                && let Err(e) = self.meta().write(|tx| l.remove(tx, "volume", name))
            {
                tracing::warn!(volume = %name, error = %e, "could not unlist a volume from its lease");
            }
            match self.volume_remove(name, true) {
                Ok(()) => {
                    tracing::debug!(volume = %name, "anonymous volume of a failed create removed")
                }
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "could not remove the anonymous volume of a failed create")
                }
            }
        }
    }

    /// The mounts of a container's next start (see the module docs): Docker's start-time checks,
    /// missing `-v` sources created (0755 directories), propagation checked, volumes mounted
    /// (driver-backed ones through the volume service, as user `c.id`) and subpaths checked.
    pub(crate) fn plan_run_mounts(&self, c: &Container) -> Result<RunMounts> {
        let mut out = RunMounts::default();
        let Some(plan) = &c.spec.mounts else {
            return Ok(out);
        };
        let result = self.plan_run_mounts_in(c, plan, &mut out);
        if let Err(e) = result {
            for name in &out.volumes {
                if let Err(u) = self.volume_unmount(name, &c.id) {
                    tracing::warn!(volume = %name, error = %u, "could not release a volume");
                }
            }
            return Err(e);
        }
        Ok(out)
    }

    fn plan_run_mounts_in(
        &self,
        c: &Container,
        plan: &MountPlan,
        out: &mut RunMounts,
    ) -> Result<()> {
        let order = plan
            .mounts_in_order()
            .map_err(|e| start_failed(e.message().to_string()))?;
        let root = self.layout().root().to_string_lossy().into_owned();
        let rro = carrel_mount::Features::cached(self.layout().root()).recursive_readonly;
        let mut shared = false;
        let mut slave = false;
        for m in order {
            let destination = m.container_path();
            match m {
                MountSpec::Bind(b) => {
                    let source = Path::new(&b.source);
                    match std::fs::metadata(source) {
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::NotFound && b.create_host_path =>
                        {
                            create_host_dir(source).map_err(|e| {
                                start_failed(format!(
                                    "error while creating mount source path '{}': {}",
                                    b.source,
                                    io_text(&e)
                                ))
                            })?;
                        }
                        Err(e) => {
                            return Err(start_failed(format!(
                                "error mounting \"{}\" to rootfs at \"{destination}\": stat {}: {}",
                                b.source,
                                b.source,
                                io_text(&e)
                            )));
                        }
                    }
                    match b.propagation {
                        Propagation::Shared | Propagation::RShared => {
                            check_source_propagation(source, true)?;
                            shared = true;
                        }
                        Propagation::Slave | Propagation::RSlave => {
                            match check_source_propagation(source, false) {
                                Ok(()) => slave = true,
                                // Docker's fallback for the implicit rslave of binds of its root.
                                Err(_)
                                    if in_daemon_root(&b.source, &root)
                                        && !explicit_propagation(c, b) =>
                                {
                                    tracing::debug!(source = %b.source, "falling back to default propagation for a bind source in the data root");
                                }
                                Err(e) => return Err(e),
                            }
                        }
                        _ => {}
                    }
                    if b.readonly && !rro {
                        if b.recursive == BindRecursive::Readonly {
                            return Err(start_failed(
                                "rro is not supported: failed to set recursive read-only mount attributes (kernel is older than 5.12?)"
                                    .into(),
                            ));
                        }
                        tracing::warn!(source = %b.source, "recursive read-only binds are not supported by this kernel: only the top mount is read-only");
                    }
                    let recursive = if b.readonly && !rro && b.recursive == BindRecursive::Enabled {
                        BindRecursive::Writable
                    } else {
                        b.recursive
                    };
                    out.mounts.push(PlannedMount {
                        destination,
                        source: PlannedSource::Host {
                            path: PathBuf::from(&b.source),
                        },
                        readonly: b.readonly,
                        recursive,
                        propagation: b.propagation.as_str().to_string(),
                    });
                }
                MountSpec::Volume(v) => {
                    let Some(name) = v.name.clone() else {
                        return Err(EngineError::InvalidArgument(format!(
                            "container {}: the volume at {} has no name (created by an older carrel?)",
                            c.short_id(),
                            v.target
                        )));
                    };
                    let path = self.volume_mount(&name, &c.id)?;
                    out.volumes.push(name.clone());
                    if let Some(sub) = &v.subpath {
                        setup::open_subpath(&path, sub).map_err(|e| start_failed(e.to_string()))?;
                    }
                    out.mounts.push(PlannedMount {
                        destination,
                        source: PlannedSource::Volume {
                            name,
                            path,
                            subpath: v.subpath.clone(),
                        },
                        readonly: v.readonly,
                        recursive: if v.readonly && !rro {
                            BindRecursive::Writable
                        } else {
                            BindRecursive::Enabled
                        },
                        propagation: "rprivate".into(),
                    });
                }
                MountSpec::Tmpfs(t) => {
                    let mut options = t
                        .effective_options()
                        .map_err(|e| start_failed(e.message().to_string()))?;
                    // Docker's documented default mode, whatever the runtime: runc would give
                    // the tmpfs the mode of its (pre-created) mountpoint, crun the kernel's.
                    if !options.iter().any(|o| o.starts_with("mode=")) {
                        options.push("mode=1777".into());
                    }
                    out.mounts.push(PlannedMount {
                        destination,
                        source: PlannedSource::Tmpfs { options },
                        readonly: t.readonly,
                        recursive: BindRecursive::Enabled,
                        propagation: String::new(),
                    });
                }
                MountSpec::Image(i) => {
                    return Err(EngineError::InvalidArgument(format!(
                        "image mounts are not supported by carrel (target {})",
                        i.target
                    )));
                }
                MountSpec::VolumesFrom(_) => {}
            }
        }
        out.rootfs_propagation = if shared {
            Some("shared".into())
        } else if slave {
            Some("rslave".into())
        } else {
            None
        };
        Ok(())
    }

    /// Release the volumes of a container's run: each is unmounted for user `id` (driver-backed
    /// volumes are unmounted when their last user leaves) and, with `measure`, its disk usage is
    /// measured and cached for `system df`. Failures are logged: the container's exit or removal
    /// is what the caller reports.
    pub(crate) fn release_container_volumes(
        &self,
        id: &str,
        plan: Option<&MountPlan>,
        measure: bool,
    ) {
        let Some(plan) = plan else { return };
        for name in volume_names(plan) {
            if let Err(e) = self.volume_unmount(&name, id) {
                tracing::warn!(volume = %name, error = %e, "could not release a volume");
            }
            if measure && let Err(e) = self.volume_measure(&name) {
                tracing::debug!(volume = %name, error = %e, "could not measure a volume");
            }
        }
    }

    /// `rm -v` / `--rm`: remove the anonymous volumes of a removed container (never named ones).
    /// A volume still used by another container (through `--volumes-from`) or already gone is
    /// skipped silently, as Docker does; other failures are logged.
    pub(crate) fn remove_container_volumes(&self, plan: Option<&MountPlan>) {
        let Some(plan) = plan else { return };
        let mut seen: Vec<&str> = Vec::new();
        for v in plan.volumes_removed_with_container() {
            let Some(name) = v.name.as_deref() else {
                continue;
            };
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            match self.volume_remove(name, false) {
                Ok(()) => {
                    tracing::debug!(volume = name, "anonymous volume removed with its container")
                }
                Err(EngineError::Conflict(m)) => {
                    tracing::debug!(volume = name, reason = %m, "anonymous volume still in use: kept")
                }
                Err(EngineError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(volume = name, error = %e, "could not remove an anonymous volume")
                }
            }
        }
    }

    /// Mount a stopped container's binds and volumes into a temporary view of its root at
    /// `target` (for `cp`, as Docker mounts them for its archive operations): sources pinned and
    /// cloned as at start, destinations resolved inside the root and missing mountpoints made
    /// (as Docker makes them). The mounts keep their own mode, or are all read-only with
    /// `readonly`. tmpfs mounts are not there (their content ended with the container), nor are
    /// driver-backed volumes. The caller detaches the whole tree with the view.
    pub(crate) fn mount_into_view(
        &self,
        c: &Container,
        target: &Path,
        readonly: bool,
    ) -> Result<()> {
        let Some(plan) = &c.spec.mounts else {
            return Ok(());
        };
        let Ok(order) = plan.mounts_in_order() else {
            return Ok(());
        };
        let root = carrel_core::fs::Root::open(target)
            .map_err(|e| EngineError::io("opening", target, e))?;
        for m in order {
            let (source, ro, recursive) = match m {
                MountSpec::Bind(b) => (
                    PlannedSource::Host {
                        path: PathBuf::from(&b.source),
                    },
                    b.readonly,
                    b.recursive,
                ),
                MountSpec::Volume(v) => {
                    let Some(name) = v.name.clone() else { continue };
                    let vol = match self.volume_get(&name) {
                        Ok(vol) if !vol.needs_mount() => vol,
                        _ => continue,
                    };
                    (
                        PlannedSource::Volume {
                            name,
                            path: vol.mountpoint,
                            subpath: v.subpath.clone(),
                        },
                        v.readonly,
                        BindRecursive::Enabled,
                    )
                }
                _ => continue,
            };
            let dest = m.container_path();
            let (fd, is_dir) = match setup::open_source(&source) {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(destination = %dest, error = %e, "mount source unavailable: not in the view");
                    continue;
                }
            };
            let point = match setup::resolve_destination(&root, &dest, is_dir, setup::Create::All) {
                Ok((_, Some(point))) => point,
                Ok((_, None)) => continue,
                Err(e) => {
                    tracing::debug!(destination = %dest, error = %e, "no mountpoint in the view");
                    continue;
                }
            };
            let tree =
                setup::clone_source(std::os::fd::AsFd::as_fd(&fd), readonly || ro, recursive)?;
            setup::attach(&tree, std::os::fd::AsFd::as_fd(&point), Path::new(&dest))?;
        }
        Ok(())
    }

    /// Whether the container path `abs` (absolute, clean) lies in one of the container's
    /// mounts, compared as paths as Docker does; a read-only one is Docker's
    /// `mounted volume is marked read-only`.
    pub(crate) fn path_in_mount(&self, c: &Container, abs: &Path) -> Result<bool> {
        for m in self.mount_points(c) {
            let dest = Path::new(&m.destination);
            if abs.starts_with(dest) {
                if m.rw {
                    return Ok(true);
                }
                return Err(EngineError::Permission(
                    "mounted volume is marked read-only".into(),
                ));
            }
        }
        Ok(false)
    }

    /// Docker's `Mounts` of a container (inspect and ps): volumes, binds and `--mount` tmpfs,
    /// in plan order; `--tmpfs` entries are not listed.
    pub fn mount_points(&self, c: &Container) -> Vec<MountPoint> {
        let Some(plan) = &c.spec.mounts else {
            return Vec::new();
        };
        plan.inspect_mounts()
            .into_iter()
            .filter_map(|m| match m {
                MountSpec::Bind(b) => Some(MountPoint {
                    kind: "bind".into(),
                    name: None,
                    source: b.source.clone(),
                    destination: b.target.clone(),
                    driver: None,
                    mode: b.mode.clone(),
                    rw: !b.readonly,
                    propagation: b.propagation.as_str().into(),
                }),
                MountSpec::Volume(v) => {
                    let name = v.name.clone()?;
                    Some(MountPoint {
                        kind: "volume".into(),
                        source: self.volume_path(&name).display().to_string(),
                        name: Some(name),
                        destination: v.target.clone(),
                        driver: Some(
                            v.driver
                                .clone()
                                .filter(|d| !d.is_empty())
                                .unwrap_or_else(|| "local".into()),
                        ),
                        mode: v.inspect_mode(),
                        rw: !v.readonly,
                        propagation: String::new(),
                    })
                }
                MountSpec::Tmpfs(t) => Some(MountPoint {
                    kind: "tmpfs".into(),
                    name: None,
                    source: String::new(),
                    destination: t.target.clone(),
                    driver: None,
                    mode: String::new(),
                    rw: !t.readonly,
                    propagation: String::new(),
                }),
                MountSpec::Image(i) => Some(MountPoint {
                    kind: "image".into(),
                    name: None,
                    source: i.source.clone(),
                    destination: i.target.clone(),
                    driver: None,
                    mode: String::new(),
                    rw: false,
                    propagation: "rprivate".into(),
                }),
                MountSpec::VolumesFrom(_) => None,
            })
            .collect()
    }
}

/// Whether the propagation of a bind was asked for explicitly (a `-v` mode word, or
/// `bind-propagation=` of the `--mount` with that target), rather than implied by the data-root
/// rule.
fn explicit_propagation(c: &Container, b: &carrel_mountspec::BindSpec) -> bool {
    if b.mode.split(',').any(|t| Propagation::parse(t).is_some()) {
        return true;
    }
    matches!(b.origin, Origin::Mounts)
        && c.spec.host_config.mounts.iter().flatten().any(|m| {
            carrel_mountspec::path::clean(&m.target) == b.target
                && m.bind_options
                    .as_ref()
                    .is_some_and(|o| !o.propagation.is_empty())
        })
}

/// Docker's `ensureShared` / `ensureSharedOrSlave`: the mount holding `source` must propagate
/// (be shared, or with `slave_ok` at least a slave) for a shared or slave bind of it.
fn check_source_propagation(source: &Path, shared_only: bool) -> Result<()> {
    let canon = std::fs::canonicalize(source)
        .map_err(|e| EngineError::io("resolving bind source", source, e))?;
    let mounts =
        carrel_mount::mountinfo::read().map_err(|e| EngineError::Precondition(e.to_string()))?;
    let Some(m) = carrel_mount::mountinfo::mount_of(&mounts, &canon) else {
        return Err(EngineError::Precondition(format!(
            "could not find the mount of {}",
            source.display()
        )));
    };
    let is_shared = m.optional.iter().any(|o| o.starts_with("shared:"));
    let is_slave = m.optional.iter().any(|o| o.starts_with("master:"));
    if is_shared || (!shared_only && is_slave) {
        return Ok(());
    }
    Err(EngineError::InvalidArgument(if shared_only {
        format!(
            "path {} is mounted on {} but it is not a shared mount",
            source.display(),
            m.mount_point.display()
        )
    } else {
        format!(
            "path {} is mounted on {} but it is not a shared or slave mount",
            source.display(),
            m.mount_point.display()
        )
    }))
}

/// Create a missing `-v` bind source as Docker does: directories (0755) all the way.
fn create_host_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
}

/// An OS error as Go prints it (`no such file or directory`).
pub(crate) fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().collect::<String>() + chars.as_str(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_and_text() {
        let e = mount_error(MountError::create("Duplicate mount point: /data"));
        assert!(matches!(e, EngineError::InvalidArgument(_)));
        assert_eq!(e.to_string(), "Duplicate mount point: /data");
        let e = mount_error(MountError::new(
            Stage::DaemonCreate,
            ErrorKind::NotFound,
            "invalid mount config for type \"bind\": bind source path does not exist: /x",
        ));
        assert!(matches!(e, EngineError::NotFound(_)));
    }

    #[test]
    fn start_failures_get_docker_exit_codes() {
        match start_failed("cannot access path /v/_data/x: no such file or directory".into()) {
            EngineError::StartFailed { exit_code, .. } => assert_eq!(exit_code, 127),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            start_failed("invalid tmpfs option \"foo\"".into()),
            EngineError::InvalidArgument(_)
        ));
    }

    #[test]
    fn requests_keep_user_volumes_apart_from_the_image() {
        let mut hc = HostConfig {
            binds: Some(vec!["/a:/b".into()]),
            ..HostConfig::default()
        };
        hc.tmpfs = Some([("/t".to_string(), "size=1m".to_string())].into());
        let user: BTreeMap<String, serde_json::Value> =
            [("/data".to_string(), serde_json::json!({}))].into();
        let r = mount_request(Some(&user), &hc);
        assert_eq!(r.binds, ["/a:/b"]);
        assert_eq!(r.config_volumes.keys().collect::<Vec<_>>(), ["/data"]);
        assert_eq!(r.tmpfs["/t"], "size=1m");
        assert_eq!(
            io_text(&std::io::Error::from_raw_os_error(2)),
            "no such file or directory"
        );
        assert!(in_daemon_root("/var/lib/carrel-foo", "/var/lib/carrel"));
        assert!(in_daemon_root("/", "/var/lib/carrel"));
        assert!(!in_daemon_root("/srv", "/var/lib/carrel"));
    }
}
