//! `docker commit`: a new image whose top layer is the container's changes.

use std::io::Read;

use carrel_core::Digest;
use carrel_core::reference::{self, Reference};
use carrel_meta::images::{self as rows, ImageRow};

use super::super::Container;
use super::super::types::Config;
use crate::images::changes::apply_changes;
use crate::images::config::{HistoryEntry, ImageConfig, RunConfig, rfc3339_nanos};
use crate::images::layers::LayerSpec;
use crate::images::load::{MEDIA_CONFIG, MEDIA_LAYER_TAR};
use crate::{DriverKind, Engine, EngineError, Result};

/// Options of `docker commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOptions {
    /// `REPOSITORY[:TAG]` to tag the new image with (none: an untagged image).
    pub reference: Option<String>,
    /// `-m`: the commit message.
    pub comment: String,
    /// `-a`: the author.
    pub author: String,
    /// `-c`: Dockerfile instructions applied to the new image's config (CMD, ENTRYPOINT, ENV,
    /// EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR).
    pub changes: Vec<String>,
    /// `-p`: Docker pauses a running container while it commits it. carrel has no pause
    /// (no freezer in its runtime adapter): a running container is committed as it is, its
    /// writable layer read with pinned handles, so the layer is a valid tar of what was there
    /// while it was read, but files being written meanwhile may be caught half-written.
    pub pause: bool,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            reference: None,
            comment: String::new(),
            author: String::new(),
            changes: Vec::new(),
            pause: true,
        }
    }
}

/// The image-config fields of a container's config (what `-c` instructions change).
fn run_config_of(c: &Config, image: Option<&RunConfig>) -> RunConfig {
    RunConfig {
        user: c.user.clone(),
        exposed_ports: c.exposed_ports.clone(),
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        volumes: c.volumes.clone(),
        working_dir: c.working_dir.clone(),
        labels: c.labels.clone(),
        stop_signal: c.stop_signal.clone(),
        shell: image.and_then(|i| i.shell.clone()),
        on_build: c.on_build.clone(),
    }
}

/// The fields of [`RunConfig`] as they are named in Docker's config JSON.
const RUN_FIELDS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "Shell",
    "OnBuild",
];

/// Docker's committed `config`: the container's whole config (`Hostname`, `Image`, …) with the
/// changed fields taken from `run`.
fn docker_config(container: &Config, run: &RunConfig) -> serde_json::Value {
    let base = serde_json::to_value(container).unwrap_or_default();
    let run = serde_json::to_value(run).unwrap_or_default();
    let mut out = serde_json::Map::new();
    if let Some(obj) = base.as_object() {
        for (k, v) in obj {
            if !RUN_FIELDS.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
                continue;
            }
            match run.get(k) {
                Some(x) => {
                    out.insert(k.clone(), x.clone());
                }
                None if k == "User" || k == "WorkingDir" => {
                    out.insert(k.clone(), serde_json::Value::String(String::new()));
                }
                None if k == "ExposedPorts" || k == "StopSignal" => {}
                None => {
                    out.insert(k.clone(), serde_json::Value::Null);
                }
            }
        }
    }
    // Fields the container's config does not have at all (Shell, or ones it skipped).
    if let Some(obj) = run.as_object() {
        for (k, v) in obj {
            if !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::Value::Object(out)
}

/// The digest of an empty layer (a tar of nothing: 1024 zero bytes), Docker's
/// `DigestSHA256EmptyTar`: such a diff adds no layer, only a history entry.
fn empty_layer() -> Digest {
    Digest::of_bytes(&[0u8; 1024])
}

impl Engine {
    pub(super) fn commit_container(&self, name: &str, opts: &CommitOptions) -> Result<Digest> {
        // Everything the user typed is checked before any work is done.
        let reference: Option<Reference> = opts
            .reference
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(reference::parse_tag_target)
            .transpose()?;
        let c = self.resolve_container(name)?;
        let image = self
            .meta()
            .read(|tx| rows::get(tx, &c.image_id))?
            .ok_or_else(|| EngineError::NotFound(format!("No such image: {}", c.image_id)))?;
        let parent_cfg = self.image_config(&image)?;
        let mut run = run_config_of(&c.spec.config, parent_cfg.config.as_ref());
        apply_changes(&mut run, &opts.changes)?;
        if c.is_running() {
            tracing::info!(
                container = %c.short_id(),
                pause = opts.pause,
                "committing a running container without pausing it (carrel cannot pause)"
            );
        }
        let lease = self.lease("container commit")?;
        let result = self.commit_under(
            &lease,
            &c,
            &image,
            parent_cfg,
            run,
            reference.as_ref(),
            opts,
        );
        lease.release(self.meta())?;
        if result.is_err()
            && let Err(e) = self.collect_garbage()
        {
            tracing::warn!(error = %e, "collecting garbage after a failed commit");
        }
        if let Ok(id) = &result {
            self.emit_container_event(
                &c,
                "commit",
                &[
                    ("comment", opts.comment.clone()),
                    ("imageID", id.to_string()),
                ],
            );
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_under(
        &self,
        lease: &carrel_meta::Lease,
        c: &Container,
        image: &ImageRow,
        parent_cfg: ImageConfig,
        run: RunConfig,
        reference: Option<&Reference>,
        opts: &CommitOptions,
    ) -> Result<Digest> {
        let started = std::time::Instant::now();
        // 1. The diff, stored uncompressed: its digest is the layer's diff id.
        let upper = self.snapshotter().upper_dir(&c.snapshot)?;
        let mut writer = self.content().writer(lease)?;
        let stats = match self.driver() {
            DriverKind::Overlay => carrel_archive::write_overlay_diff(&upper, &mut writer)?,
            DriverKind::Copy => {
                let entries: Vec<carrel_archive::DiffEntry> = self
                    .container_changes(&c.id)?
                    .into_iter()
                    .map(|ch| carrel_archive::DiffEntry {
                        deleted: ch.kind == super::ChangeKind::Deleted,
                        path: ch.path,
                    })
                    .collect();
                carrel_archive::write_changes(
                    &upper,
                    &entries,
                    &mut writer,
                    &carrel_archive::WriteOptions::default(),
                )?
            }
        };
        // No change: Docker adds no layer (its diff is the empty tar), only a history entry; the
        // blob is not kept.
        let empty = stats.entries == 0;
        let diff_id = if empty {
            drop(writer);
            empty_layer()
        } else {
            writer.commit(MEDIA_LAYER_TAR, None)?
        };

        // 2. The layer, stacked on the container's own parent.
        let parent = match self.snapshotter().stat(&c.snapshot)?.parent {
            Some(p) => Some(Digest::parse(&p).map_err(|_| {
                EngineError::InvalidArgument(format!(
                    "container {}: its layer's parent {p:?} is not a layer",
                    c.short_id()
                ))
            })?),
            None => None,
        };
        let mut layers = image.layers.clone();
        let mut size = image.size;
        if !empty {
            let chain = carrel_core::id::chain_id(parent.as_ref(), &diff_id);
            let spec = LayerSpec {
                chain: chain.clone(),
                parent,
                diff_id: diff_id.clone(),
                blob: Some((diff_id.clone(), MEDIA_LAYER_TAR.to_string())),
            };
            let content = self.content().clone();
            let blob = diff_id.clone();
            let outcome = self.ensure_layer(lease, &spec, &|| {
                Ok(Box::new(content.open_blob(&blob)?) as Box<dyn Read + Send>)
            })?;
            layers.push(chain);
            size += outcome.size;
        }

        // 3. The config: the parent image's, with the container's config and the changes.
        let now = carrel_meta::now_nanos();
        let created = rfc3339_nanos(now);
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let mut cfg = parent_cfg;
        if cfg.history.is_empty() {
            // Keep one history entry per layer, as readers of the history expect.
            cfg.history = cfg
                .rootfs
                .diff_ids
                .iter()
                .map(|_| HistoryEntry::default())
                .collect();
        }
        cfg.created = Some(created.clone());
        cfg.author = text(&opts.author);
        cfg.comment = text(&opts.comment);
        cfg.container = Some(c.id.clone());
        cfg.docker_version = None;
        cfg.config = Some(run.clone());
        if !empty {
            cfg.rootfs.diff_ids.push(diff_id.clone());
        }
        cfg.history.push(HistoryEntry {
            created: Some(created),
            created_by: Some(c.spec.config.cmd.clone().unwrap_or_default().join(" ")),
            author: text(&opts.author),
            comment: text(&opts.comment),
            empty_layer: empty,
        });
        let config_bytes = self.commit_config_json(&cfg, c, &run)?;
        let id = self
            .content()
            .write_bytes(lease, &config_bytes, MEDIA_CONFIG, None)?;

        // 4. The image row (and its tag), referencing the layers and the config.
        let row = ImageRow {
            id: id.clone(),
            config: String::from_utf8_lossy(&config_bytes).into_owned(),
            manifest: None,
            layers,
            size,
            created: now,
            loaded: now,
            last_tag: None,
        };
        self.meta().write(|tx| {
            rows::insert(tx, &row)?;
            if let Some(r) = reference {
                rows::set_tag(tx, &r.to_string(), &id, now)?;
            }
            Ok(())
        })?;
        tracing::debug!(container = %c.short_id(), image = %id, %diff_id, empty, elapsed = ?started.elapsed(), "committed");
        Ok(id)
    }

    /// The committed config JSON in Docker's shape: `config` and `container_config` are the
    /// container's full configs (with the changes applied to `config`).
    fn commit_config_json(
        &self,
        cfg: &ImageConfig,
        c: &Container,
        run: &RunConfig,
    ) -> Result<Vec<u8>> {
        let value = serde_json::to_value(cfg)
            .map_err(|e| EngineError::InvalidArgument(format!("encoding the image config: {e}")))?;
        let mut out = serde_json::Map::new();
        if let Some(obj) = value.as_object() {
            for (k, v) in obj {
                if k == "config" {
                    out.insert(k.clone(), docker_config(&c.spec.config, run));
                } else {
                    out.insert(k.clone(), v.clone());
                }
                if k == "container" {
                    out.insert(
                        "container_config".into(),
                        serde_json::to_value(&c.spec.config).unwrap_or_default(),
                    );
                }
            }
        }
        let bytes = serde_json::to_vec(&serde_json::Value::Object(out))
            .map_err(|e| EngineError::InvalidArgument(format!("encoding the image config: {e}")))?;
        // What is stored must read back.
        ImageConfig::parse(&bytes).map_err(EngineError::InvalidArgument)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_config_keeps_dockers_shape() {
        let c = Config {
            hostname: "abc".into(),
            image: "busybox".into(),
            cmd: Some(vec!["sh".into(), "-c".into(), "touch /x".into()]),
            env: Some(vec!["PATH=/bin".into()]),
            ..Default::default()
        };
        let mut run = run_config_of(&c, None);
        apply_changes(&mut run, &["CMD [\"sh\"]".into(), "USER nobody".into()]).unwrap();
        let v = docker_config(&c, &run);
        assert_eq!(v["Hostname"], "abc");
        assert_eq!(v["Image"], "busybox");
        assert_eq!(v["Cmd"], serde_json::json!(["sh"]));
        assert_eq!(v["User"], "nobody");
        assert_eq!(v["Entrypoint"], serde_json::Value::Null);
        assert_eq!(v["Env"], serde_json::json!(["PATH=/bin"]));
        assert_eq!(
            empty_layer().to_string(),
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        );
    }
}
