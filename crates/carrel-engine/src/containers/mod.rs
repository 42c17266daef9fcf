//! Containers: a writable copy-on-write layer (a snapshot keyed by the container id) over an
//! image's read-only layers, a record in the `containers` table, and a directory
//! `<root>/containers/<id>` for the runtime bundle, logs and the monitor's files.
//!
//! Creating and removing are done under a lease, so a crash in the middle is rolled forward by
//! the next carrel command (the half-made or half-removed container is removed entirely).

pub mod fs;
pub mod inspect;
pub mod lifecycle;
pub mod list;
pub mod monitor;
pub mod mounts;
pub mod names;
pub mod runtime;
pub mod spec;
pub mod tty;
pub mod types;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use carrel_core::Digest;
use carrel_meta::containers::{self as rows, ContainerRow};
use carrel_meta::leases;
use carrel_storage::snapshot::Labels;

use crate::images::config::{RunConfig, rfc3339_nanos};
use crate::{Engine, EngineError, Result};
use types::{Config, CreateRequest, HostConfig, State, Status};

/// What a container runs: the create request merged with the image's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The merged `Config`.
    pub config: Config,
    /// The `HostConfig` as given (normalized).
    pub host_config: HostConfig,
    /// The executable (first word of entrypoint + cmd).
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its volumes, binds and tmpfs as planned at create (volume names resolved, anonymous
    /// ones included); `None` when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<carrel_mountspec::MountPlan>,
}

/// The files of a container whose record is gone ([`Engine::container_remove_record`]): its
/// directory, its writable layer's files and the lease listing them until
/// [`Engine::remove_container_files`] deletes them.
#[derive(Debug)]
#[must_use = "the container's files stay on disk until removed"]
pub(crate) struct ContainerFiles {
    dir: PathBuf,
    layer: Option<carrel_storage::SnapshotFiles>,
    lease: Option<carrel_meta::Lease>,
}

/// A container as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// 64 hex characters.
    pub id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// The image it was created from.
    pub image_id: Digest,
    /// The snapshot key of its writable layer.
    pub snapshot: String,
    /// What it runs.
    pub spec: ContainerSpec,
    /// Its lifecycle state.
    pub state: State,
    /// Creation time, nanoseconds since the epoch.
    pub created: i64,
}

impl Container {
    fn from_row(row: ContainerRow) -> Result<Container> {
        let spec: ContainerSpec = serde_json::from_str(&row.spec).map_err(|e| {
            EngineError::InvalidArgument(format!(
                "container {}: stored spec is invalid: {e}",
                row.id
            ))
        })?;
        let state: State = serde_json::from_str(&row.state).map_err(|e| {
            EngineError::InvalidArgument(format!(
                "container {}: stored state is invalid: {e}",
                row.id
            ))
        })?;
        Ok(Container {
            id: row.id,
            name: row.name,
            image_id: row.image_id,
            snapshot: row.snapshot,
            spec,
            state,
            created: row.created,
        })
    }

    /// The short (12 character) id.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// True while its process runs (running, paused or restarting).
    pub fn is_running(&self) -> bool {
        matches!(
            self.state.status,
            Status::Running | Status::Paused | Status::Restarting
        )
    }

    /// The command line Docker shows in `ps`: the path, then the arguments, those with a space
    /// in single quotes (`sh -c 'echo hi'`), as dockerd builds it.
    pub fn command(&self) -> String {
        std::iter::once(self.spec.path.clone())
            .chain(self.spec.args.iter().map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Docker's `Status` column: `Up 2 minutes`, `Exited (0) 3 seconds ago`, `Created`.
pub fn status_text(state: &State) -> String {
    let since = |t: i64| {
        let now = carrel_meta::now_nanos();
        std::time::Duration::from_nanos(now.saturating_sub(t).max(0) as u64)
    };
    match state.status {
        Status::Created => "Created".into(),
        Status::Running | Status::Restarting => {
            format!(
                "Up {}",
                carrel_core::units::human_duration(since(state.started_at))
            )
        }
        Status::Paused => format!(
            "Up {} (Paused)",
            carrel_core::units::human_duration(since(state.started_at))
        ),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
        Status::Exited => {
            if state.finished_at == 0 {
                format!("Exited ({})", state.exit_code)
            } else {
                format!(
                    "Exited ({}) {} ago",
                    state.exit_code,
                    carrel_core::units::human_duration(since(state.finished_at))
                )
            }
        }
    }
}

/// Docker's time format for inspect, with its zero value for "never".
pub fn inspect_time(nanos: i64) -> String {
    if nanos == 0 {
        "0001-01-01T00:00:00Z".into()
    } else {
        rfc3339_nanos(nanos)
    }
}

/// The answer to `create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateResponse {
    /// The new container's id.
    pub id: String,
    /// Warnings (e.g. options carrel ignores).
    pub warnings: Vec<String>,
}

/// Merge an image's run config into a container config, as Docker does at create.
fn merge_image_config(config: &mut Config, image: &RunConfig) {
    if config.user.is_empty() {
        config.user = image.user.clone();
    }
    if let Some(img_env) = &image.env {
        let mut env: Vec<String> = img_env.clone();
        for e in config.env.take().unwrap_or_default() {
            let key = e.split_once('=').map(|(k, _)| k).unwrap_or(&e).to_string();
            env.retain(|x| x.split_once('=').map(|(k, _)| k).unwrap_or(x) != key);
            env.push(e);
        }
        config.env = Some(env);
    }
    if config.working_dir.is_empty() {
        config.working_dir = image.working_dir.clone();
    }
    // Docker's rule: without a (non-empty) entrypoint of its own, the container takes the
    // image's cmd when it has none, and the image's entrypoint unless it cleared it.
    if config.entrypoint.as_ref().is_none_or(|e| e.is_empty()) {
        if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            config.cmd = image.cmd.clone();
        }
        if config.entrypoint.is_none() {
            config.entrypoint = image.entrypoint.clone();
        }
    }
    if let Some(vols) = &image.volumes {
        let mine = config.volumes.get_or_insert_with(BTreeMap::new);
        for (k, v) in vols {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(labels) = &image.labels {
        let mine = config.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in labels {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(ports) = &image.exposed_ports {
        let mine = config.exposed_ports.get_or_insert_with(BTreeMap::new);
        for (k, v) in ports {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if config.stop_signal.is_none() {
        config.stop_signal = image.stop_signal.clone();
    }
    if config.on_build.is_none() {
        config.on_build = image.on_build.clone();
    }
}

/// Check the host config for what carrel does not do, and normalize it.
fn normalize_host_config(hc: &mut HostConfig) -> Result<()> {
    match hc.network_mode.as_str() {
        "" | "default" | "none" => hc.network_mode = "none".into(),
        "host" => {}
        other => {
            return Err(EngineError::InvalidArgument(format!(
                "network mode {other:?} is not supported: carrel does not manage container networks; use --network none (the default) or --network host"
            )));
        }
    }
    if !matches!(hc.restart_policy.name.as_str(), "" | "no") {
        return Err(EngineError::InvalidArgument(format!(
            "restart policy {:?} is not supported: carrel has no daemon to restart containers",
            hc.restart_policy.name
        )));
    }
    hc.restart_policy.name = "no".into();
    if hc.privileged {
        return Err(EngineError::InvalidArgument(
            "--privileged is not supported by carrel".into(),
        ));
    }
    if hc.shm_size == 0 {
        hc.shm_size = types::DEFAULT_SHM_SIZE;
    }
    if hc.shm_size < 0 {
        return Err(EngineError::InvalidArgument(
            "SHM size can not be less than 0".into(),
        ));
    }
    Ok(())
}

impl Engine {
    /// The directory of a container (`<root>/containers/<id>`).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.layout().containers().join(id)
    }

    /// Find a container by full id, name (with or without a leading `/`), or unique id prefix.
    pub fn resolve_container(&self, name_or_id: &str) -> Result<Container> {
        let not_found = || EngineError::NotFound(format!("No such container: {name_or_id}"));
        if name_or_id.is_empty() {
            return Err(not_found());
        }
        if carrel_core::digest::is_hex64(name_or_id)
            && let Some(row) = self.meta().read(|c| rows::get(c, name_or_id))?
        {
            return Container::from_row(row);
        }
        let name = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        if let Some(row) = self.meta().read(|c| rows::get_by_name(c, name))? {
            return Container::from_row(row);
        }
        let ids = self
            .meta()
            .read(|c| rows::ids_with_prefix(c, name_or_id, 1))?;
        match ids.as_slice() {
            [] => Err(not_found()),
            [id] => self
                .meta()
                .read(|c| rows::get(c, id))?
                .map(Container::from_row)
                .ok_or_else(not_found)?,
            _ => Err(EngineError::InvalidArgument(format!(
                "multiple IDs found with provided prefix: {name_or_id}"
            ))),
        }
    }

    /// Every container, newest first.
    pub fn containers(&self) -> Result<Vec<Container>> {
        self.meta()
            .read(rows::list)?
            .into_iter()
            .map(Container::from_row)
            .collect()
    }

    /// Replace the state of a container through `f`, atomically. Returns the new state.
    pub fn update_container_state(
        &self,
        id: &str,
        f: impl FnOnce(&mut State) -> Result<()>,
    ) -> Result<State> {
        let mut f = Some(f);
        let mut outcome: Option<Result<State>> = None;
        self.meta().write(|tx| {
            let Some(row) = rows::get(tx, id)? else {
                outcome = Some(Err(EngineError::NotFound(format!(
                    "No such container: {id}"
                ))));
                return Ok(());
            };
            let mut state: State = match serde_json::from_str(&row.state) {
                Ok(s) => s,
                Err(e) => {
                    outcome = Some(Err(EngineError::InvalidArgument(format!(
                        "container {id}: stored state is invalid: {e}"
                    ))));
                    return Ok(());
                }
            };
            if let Some(f) = f.take()
                && let Err(e) = f(&mut state)
            {
                outcome = Some(Err(e));
                return Ok(());
            }
            rows::set_state(tx, id, &serde_json::to_string(&state).unwrap_or_default())?;
            outcome = Some(Ok(state));
            Ok(())
        })?;
        outcome.unwrap_or_else(|| Err(EngineError::NotFound(format!("No such container: {id}"))))
    }

    /// What Docker refuses at create (its `verifyContainerSettings`), before anything is made: a
    /// relative working directory, an unknown stop signal, a runtime that is not there. Found
    /// only at start, each would leave a container that can never run.
    fn verify_settings(&self, config: &Config, host_config: &HostConfig) -> Result<()> {
        if !config.working_dir.is_empty() && !config.working_dir.starts_with('/') {
            return Err(EngineError::InvalidArgument(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                config.working_dir
            )));
        }
        if let Some(sig) = config.stop_signal.as_deref().filter(|s| !s.is_empty()) {
            runtime::parse_signal(sig)?;
        }
        if !host_config.runtime.is_empty() {
            self.runtimes()
                .select(&host_config.runtime, self.layout().root())?;
        }
        Ok(())
    }

    /// `carrel create`: make a container (its record, writable layer and directory).
    pub fn container_create(&self, req: CreateRequest) -> Result<CreateResponse> {
        let CreateRequest {
            name,
            mut config,
            mut host_config,
        } = req;
        let name = name.strip_prefix('/').unwrap_or(&name).to_string();
        if !name.is_empty() && !names::is_valid(&name) {
            return Err(EngineError::InvalidArgument(format!(
                "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if config.image.is_empty() {
            return Err(EngineError::InvalidArgument(
                "No image specified: give an image name".into(),
            ));
        }
        self.verify_settings(&config, &host_config)?;
        let image = self.resolve_image(&config.image)?;
        let image_config = self.image_config(&image)?;
        let run_config = image_config.config.clone().unwrap_or_default();
        // The request's own anonymous volumes, before the image's are merged in.
        let user_volumes = config.volumes.clone();
        merge_image_config(&mut config, &run_config);
        normalize_host_config(&mut host_config)?;
        // Every mount is validated (Docker's create-time errors, duplicates) before anything is
        // made.
        let image_volumes: Vec<String> = run_config
            .volumes
            .as_ref()
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        let mount_plan = self.plan_container_mounts(
            &mounts::mount_request(user_volumes.as_ref(), &host_config),
            &image_volumes,
        )?;
        let warnings = mount_plan.warnings.clone();
        let mut words: Vec<String> = config.entrypoint.clone().unwrap_or_default();
        words.extend(config.cmd.clone().unwrap_or_default());
        if words.is_empty() {
            return Err(EngineError::InvalidArgument("No command specified".into()));
        }
        let path = words.remove(0);
        let id = carrel_core::id::random_id();
        if config.hostname.is_empty() {
            config.hostname = id[..12].to_string();
        }
        let mut spec = ContainerSpec {
            config,
            host_config,
            path,
            args: words,
            mounts: (!mount_plan.mounts.is_empty()).then_some(mount_plan),
        };
        let Some(top) = image.layers.last().cloned() else {
            return Err(EngineError::InvalidArgument(format!(
                "image {} has no layers",
                image.id.short()
            )));
        };

        let lease = self.lease("container create")?;
        let mut anonymous = Vec::new();
        let result = self.create_under(
            &lease,
            &id,
            name,
            &image.id,
            &top,
            &mut spec,
            &mut anonymous,
        );
        lease.release(self.meta())?;
        if let Err(e) = result {
            // Roll back whatever was made: the row (and with it the volume references), the
            // snapshot, the directory, then the anonymous volumes made for it.
            self.discard_container(&id)?;
            self.discard_anonymous_volumes(&anonymous, None);
            return Err(e);
        }
        tracing::debug!(id = &id[..12], "container created");
        if let Ok(c) = self.resolve_container(&id) {
            self.emit_container_event(&c, "create", &[]);
        }
        Ok(CreateResponse { id, warnings })
    }

    #[allow(clippy::too_many_arguments)]
    fn create_under(
        &self,
        lease: &carrel_meta::Lease,
        id: &str,
        mut name: String,
        image_id: &Digest,
        top: &Digest,
        spec: &mut ContainerSpec,
        anonymous: &mut Vec<String>,
    ) -> Result<()> {
        // Volumes: the image's content (to check anonymous volumes and populate empty ones),
        // then every volume made or found, listed under the lease until the row references it.
        let view = match &spec.mounts {
            Some(p) if mounts::needs_image(p) => Some(self.image_view(top)?),
            _ => None,
        };
        if let (Some(p), Some(v)) = (&spec.mounts, &view) {
            self.check_volumes_over_files(p, v)?;
        }
        if let Some(p) = spec.mounts.as_mut() {
            *anonymous = self.ensure_plan_volumes(p, lease)?;
        }
        let volumes = spec
            .mounts
            .as_ref()
            .map(mounts::volume_names)
            .unwrap_or_default();
        let now = carrel_meta::now_nanos();
        let state = serde_json::to_string(&State::default()).unwrap_or_default();
        let spec_json = serde_json::to_string(spec).unwrap_or_default();
        let generated = name.is_empty();
        let mut attempt = 0;
        loop {
            if generated {
                name = names::generate(attempt);
            }
            let row = ContainerRow {
                id: id.to_string(),
                name: name.clone(),
                image_id: image_id.clone(),
                snapshot: id.to_string(),
                spec: spec_json.clone(),
                state: state.clone(),
                created: now,
            };
            let inserted = self.meta().write(|tx| {
                if let Some(other) = rows::get_by_name(tx, &row.name)? {
                    return Ok(Err(Some(other.id)));
                }
                leases::add_resource(tx, lease.id(), "container", id)?;
                leases::add_resource(tx, lease.id(), "snapshot", id)?;
                rows::insert(tx, &row)?;
                // The volumes it uses, checked and referenced with the row (the references go
                // when the row does).
                for v in &volumes {
                    if carrel_meta::volumes::get(tx, v)?.is_none() {
                        return Ok(Err(None));
                    }
                    carrel_meta::volumes::add_ref(tx, v, id)?;
                }
                Ok(Ok(()))
            })?;
            match inserted {
                Ok(()) => break,
                Err(None) => {
                    // Listed under the lease, a volume cannot go; this is a bug if it happens.
                    return Err(EngineError::NotFound(format!(
                        "a volume of container {} was removed while it was being created",
                        &id[..12]
                    )));
                }
                Err(_) if generated && attempt < 10 => attempt += 1,
                Err(Some(other)) => {
                    return Err(EngineError::Conflict(format!(
                        "Conflict. The container name \"/{name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                    )));
                }
            }
        }
        self.snapshotter()
            .prepare(id, Some(&top.to_string()), Labels::new())?;
        let dir = self.container_dir(id);
        carrel_core::fs::create_dir_mode(&dir, 0o710)
            .map_err(|e| EngineError::io("creating container directory", &dir, e))?;
        if let (Some(p), Some(v)) = (&spec.mounts, &view) {
            self.populate_volumes(id, p, v)?;
        }
        Ok(())
    }

    /// Remove every trace of a container: its record (with its writable layer's), then the
    /// layer's files and its directory. Missing pieces are fine (used to roll back a failed
    /// create and to finish a removal).
    pub(crate) fn discard_container(&self, id: &str) -> Result<()> {
        let files = self.discard_container_record(id, None)?;
        self.remove_container_files(files)
    }

    /// Delete the records of a container and of its writable layer in one transaction and
    /// return their files. Under `lease`, the container and the layer's directory are listed
    /// in the same transaction, so that the files are work in flight until
    /// [`Engine::remove_container_files`] has deleted them and released the lease, and a crash
    /// meanwhile leaves them to the lease's recovery. Nothing changes when the layer cannot go
    /// (something is mounted in it).
    fn discard_container_record(
        &self,
        id: &str,
        lease: Option<carrel_meta::Lease>,
    ) -> Result<ContainerFiles> {
        let layer = self
            .meta()
            .try_write(|tx| {
                if let Some(lease) = &lease {
                    lease.add(tx, "container", id)?;
                }
                rows::delete(tx, id)?;
                match self.snapshotter().remove_record(tx, id) {
                    Ok(files) => {
                        if let Some(lease) = &lease {
                            lease.add(tx, carrel_storage::FILES_BEING_REMOVED, files.id())?;
                        }
                        Ok(Ok(Some(files)))
                    }
                    Err(carrel_storage::StorageError::SnapshotNotFound(_)) => Ok(Ok(None)),
                    Err(e) => Ok(Err(EngineError::from(e))),
                }
            })
            .map_err(EngineError::from)
            .and_then(|r| r);
        let layer = match layer {
            Ok(layer) => layer,
            Err(e) => {
                if let Some(lease) = lease {
                    let _ = lease.release(self.meta());
                }
                return Err(e);
            }
        };
        Ok(ContainerFiles {
            dir: self.container_dir(id),
            layer,
            lease,
        })
    }

    /// Delete what [`Engine::discard_container_record`] left: the writable layer's files and the
    /// container directory at the same time (on two threads: neither depends on the other),
    /// then release the lease that listed them.
    pub(crate) fn remove_container_files(&self, files: ContainerFiles) -> Result<()> {
        let ContainerFiles { dir, layer, lease } = files;
        let (layer, directory) = std::thread::scope(|s| {
            let directory = std::thread::Builder::new()
                .name("remove-dir".into())
                .spawn_scoped(s, || carrel_core::fs::remove_all(&dir));
            let layer = layer.map_or(Ok(()), |l| l.remove());
            let directory = match directory {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the removal thread panicked"))),
                // No thread to be had: this one does it.
                Err(_) => carrel_core::fs::remove_all(&dir),
            };
            (layer, directory)
        });
        // Released even when a removal failed: what is left is then an orphan, reported by
        // `system check` and reclaimed by the next cleanup.
        let released = lease.map_or(Ok(()), |l| l.release(self.meta()));
        layer?;
        directory.map_err(|e| EngineError::io("removing container directory", &dir, e))?;
        Ok(released?)
    }

    /// `carrel rm`: remove a container (a running one only with `force`, which kills it first).
    /// With `volumes`, its anonymous volumes go too.
    pub fn container_remove(&self, name_or_id: &str, force: bool, volumes: bool) -> Result<()> {
        let files = self.container_remove_record(name_or_id, force, volumes)?;
        self.remove_container_files(files)
    }

    /// [`Engine::container_remove`] up to the deletion of the container's files: once this
    /// returns, the container is gone for every command (its name is free, no list shows it);
    /// its files are work in flight under a lease until [`Engine::remove_container_files`].
    pub(crate) fn container_remove_record(
        &self,
        name_or_id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<ContainerFiles> {
        let c = self.resolve_container(name_or_id)?;
        if c.is_running() {
            if !force {
                return Err(EngineError::Conflict(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    c.name
                )));
            }
            self.kill_for_removal(&c)?;
        }
        let lease = self.lease("container remove")?;
        // Whatever this container still holds of its volumes (a driver-backed volume stays
        // mounted for a user until released).
        self.release_container_volumes(&c.id, c.spec.mounts.as_ref(), false);
        let files = self.discard_container_record(&c.id, Some(lease))?;
        self.emit_container_event(&c, "destroy", &[]);
        if volumes {
            self.remove_container_volumes(c.spec.mounts.as_ref());
        }
        Ok(files)
    }

    /// `carrel rename`.
    pub fn container_rename(&self, name_or_id: &str, new_name: &str) -> Result<()> {
        let c = self.resolve_container(name_or_id)?;
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        if !names::is_valid(new_name) {
            return Err(EngineError::InvalidArgument(format!(
                "Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if new_name == c.name {
            return Err(EngineError::InvalidArgument(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        let clash = self.meta().write(|tx| {
            if let Some(other) = rows::get_by_name(tx, new_name)? {
                return Ok(Some(other.id));
            }
            rows::rename(tx, &c.id, new_name)?;
            Ok(None)
        })?;
        if let Some(other) = clash {
            return Err(EngineError::Conflict(format!(
                "Conflict. The container name \"/{new_name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
            )));
        }
        Ok(())
    }

    /// Containers created from an image (for image removal).
    pub(crate) fn containers_using_image(
        &self,
        id: &Digest,
    ) -> Result<Vec<crate::images::ImageUser>> {
        let ids = self.meta().read(|c| rows::using_image(c, id))?;
        let mut out = Vec::new();
        for cid in ids {
            if let Ok(c) = self.resolve_container(&cid) {
                out.push(crate::images::ImageUser {
                    running: c.is_running(),
                    id: c.id,
                });
            }
        }
        Ok(out)
    }

    /// Writable-layer snapshot keys of all containers (roots for garbage collection).
    pub(crate) fn container_snapshot_keys(&self) -> Result<Vec<String>> {
        Ok(self
            .meta()
            .read(rows::list)?
            .into_iter()
            .map(|r| r.snapshot)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_follows_docker() {
        let image = RunConfig {
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            cmd: Some(vec!["sh".into()]),
            working_dir: "/w".into(),
            user: "nobody".into(),
            ..Default::default()
        };
        let mut c = Config {
            env: Some(vec!["A=2".into(), "B=3".into()]),
            ..Default::default()
        };
        merge_image_config(&mut c, &image);
        assert_eq!(c.env.unwrap(), vec!["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(c.cmd.unwrap(), vec!["sh"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.user, "nobody");

        // A user entrypoint drops the image's cmd.
        let mut c = Config {
            entrypoint: Some(vec!["echo".into()]),
            ..Default::default()
        };
        merge_image_config(&mut c, &image);
        assert!(c.cmd.is_none());
        // A cleared entrypoint keeps the image's cmd.
        let mut c = Config {
            entrypoint: Some(vec![]),
            ..Default::default()
        };
        merge_image_config(&mut c, &image);
        assert_eq!(c.cmd.unwrap(), vec!["sh"]);
    }

    /// A fresh data root (in the returned temporary directory) with the busybox image, built
    /// from the host's busybox-static, and a created container whose directory and layer exist.
    struct Fixture {
        tmp: tempfile::TempDir,
        engine: Engine,
        id: String,
        dir: PathBuf,
        layer: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            assert!(
                rustix::process::geteuid().is_root(),
                "this test mounts and needs root"
            );
            let tmp = tempfile::tempdir().unwrap();
            let engine = Engine::open(&crate::EngineOptions {
                root: tmp.path().join("root"),
                storage_driver: None,
            })
            .unwrap();
            engine
                .import_busybox(std::path::Path::new("/bin/busybox"), "busybox:latest")
                .unwrap();
            let id = create(&engine);
            let (dir, layer) = (engine.container_dir(&id), layer_dir(&engine, &id));
            assert!(dir.is_dir() && layer.is_dir());
            Fixture {
                tmp,
                engine,
                id,
                dir,
                layer,
            }
        }
    }

    fn create(engine: &Engine) -> String {
        engine
            .container_create(CreateRequest {
                name: String::new(),
                config: Config {
                    image: "busybox".into(),
                    cmd: Some(vec!["true".into()]),
                    ..Default::default()
                },
                host_config: HostConfig::default(),
            })
            .unwrap()
            .id
    }

    fn layer_dir(engine: &Engine, id: &str) -> PathBuf {
        let c = engine.resolve_container(id).unwrap();
        engine
            .snapshotter()
            .paths(&c.snapshot)
            .unwrap()
            .upper
            .parent()
            .unwrap()
            .to_path_buf()
    }

    fn assert_check_clean(engine: &Engine) {
        let report = engine.system_check(false).unwrap();
        assert!(report.is_clean(), "{report:#?}");
    }

    /// A removal in two halves (`--rm` deletes the files after reporting the exit): between
    /// them the container is gone for every command while its files are work in flight, which
    /// `system check` does not report and a cleanup does not touch; if the process dies there,
    /// the next command's recovery deletes them.
    #[test]
    fn files_of_a_removed_container_are_work_in_flight_then_recovered() {
        let Fixture {
            tmp,
            engine,
            id,
            dir,
            layer,
        } = Fixture::new();

        let files = engine.container_remove_record(&id, false, false).unwrap();
        assert!(engine.resolve_container(&id).is_err());
        assert!(engine.containers().unwrap().is_empty());
        assert!(dir.is_dir() && layer.is_dir(), "files go later");
        assert_check_clean(&engine);
        engine.collect_garbage().unwrap();
        assert!(
            dir.is_dir() && layer.is_dir(),
            "a cleanup leaves them alone"
        );
        engine.remove_container_files(files).unwrap();
        assert!(!dir.exists() && !layer.exists());
        assert_check_clean(&engine);

        // The process dies between the halves: its lease dies with it (dropping the lease
        // releases its lock and keeps its rows, as a crash does).
        let id = create(&engine);
        let (dir, layer) = (engine.container_dir(&id), layer_dir(&engine, &id));
        let files = engine.container_remove_record(&id, false, false).unwrap();
        drop(files);
        assert!(dir.is_dir() && layer.is_dir());
        let report = engine.system_check(false).unwrap();
        assert_eq!(report.dead_leases.len(), 1, "{report:#?}");
        let reopened = Engine::open(&crate::EngineOptions {
            root: tmp.path().join("root"),
            storage_driver: None,
        })
        .unwrap();
        assert!(!dir.exists() && !layer.exists(), "recovered at open");
        assert_check_clean(&reopened);
    }

    /// A removal whose layer cannot go (something mounted inside it) is refused whole: the
    /// container stays, nothing of it is deleted, and its lease is released; once the mount is
    /// gone the removal succeeds.
    #[test]
    fn a_removal_refused_by_the_layer_keeps_the_container() {
        let Fixture {
            tmp: _tmp,
            engine,
            id,
            dir,
            layer,
        } = Fixture::new();
        let merged = layer.join("merged");
        use carrel_mount::Mounter;
        let mounter = carrel_mount::KernelMounter::new();
        let tmpfs = carrel_mount::Mount::Tmpfs {
            options: Vec::new(),
        };
        mounter.mount_all(&[tmpfs], &merged).unwrap();
        let refused = engine.container_remove(&id, true, false);
        let unmounted = mounter.unmount(&merged, false);
        let e = refused.expect_err("removal with a mount inside the layer");
        unmounted.unwrap();
        assert_eq!(
            carrel_core::HasKind::kind(&e),
            carrel_core::ErrorKind::Conflict
        );
        assert!(e.to_string().contains("merged"), "{e}");
        assert_eq!(engine.resolve_container(&id).unwrap().id, id);
        assert!(dir.is_dir() && layer.join("diff").is_dir());
        assert!(engine.meta().read(leases::list).unwrap().is_empty());
        assert_check_clean(&engine);
        engine.container_remove(&id, true, false).unwrap();
        assert!(!dir.exists() && !layer.exists());
        assert_check_clean(&engine);
    }

    #[test]
    fn status_texts() {
        let mut s = State::default();
        assert_eq!(status_text(&s), "Created");
        s.status = Status::Exited;
        s.exit_code = 3;
        s.finished_at = carrel_meta::now_nanos();
        assert_eq!(status_text(&s), "Exited (3) Less than a second ago");
        s.status = Status::Running;
        s.started_at = carrel_meta::now_nanos() - 5_000_000_000;
        assert_eq!(status_text(&s), "Up 5 seconds");
        assert_eq!(inspect_time(0), "0001-01-01T00:00:00Z");
    }
}
