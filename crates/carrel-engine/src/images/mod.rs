//! Images: resolve, list, inspect, tag, remove, history, prune; plus load/save/import in
//! submodules.
//!
//! An image is a row in `images` (its config, the chain ids of its layers, its size) plus tags in
//! `tags`. Its layers are committed snapshots keyed by chain id, shared by every image that has
//! them; removing an image only collects the layers and blobs nothing else references.

pub mod busybox;
pub mod changes;
pub mod config;
mod flush;
pub mod import;
pub mod layers;
pub mod load;
pub mod save;
mod signal;

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use carrel_core::Digest;
use carrel_core::reference::{self, AnyReference, Reference};
use carrel_meta::images::{self as rows, ImageRow};

use crate::{Engine, EngineError, Result};
use config::{ImageConfig, rfc3339_nanos};

/// One line of `carrel images`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    /// `sha256:<hex>`.
    pub id: String,
    /// Tags in Docker's familiar form (`busybox:latest`).
    pub repo_tags: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Total size of its layers in bytes.
    pub size: u64,
    /// Labels from the config.
    pub labels: Option<BTreeMap<String, String>>,
    /// Number of containers using it (-1 when not computed).
    pub containers: i64,
}

/// `GraphDriver` in inspect output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    /// `LowerDir`, `UpperDir`, `MergedDir`, `WorkDir`.
    pub data: BTreeMap<String, String>,
    /// `overlay2` or `copy`.
    pub name: String,
}

/// `RootFS` in inspect output.
#[derive(Debug, Clone, Serialize)]
pub struct RootFsInspect {
    /// Always `layers`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Diff ids, bottom first.
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// `carrel image inspect`, in the shape of Docker's `ImageInspect`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    /// `sha256:<hex>`.
    pub id: String,
    /// Tags, familiar form.
    pub repo_tags: Vec<String>,
    /// Digested references (none until registries are supported).
    pub repo_digests: Vec<String>,
    /// Parent image id (empty: carrel does not track build parents).
    pub parent: String,
    /// Comment.
    pub comment: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Docker version that built it, if recorded.
    pub docker_version: String,
    /// Author.
    pub author: String,
    /// The run configuration.
    pub config: serde_json::Value,
    /// Architecture.
    pub architecture: String,
    /// Architecture variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS.
    pub os: String,
    /// Size in bytes.
    pub size: u64,
    /// Storage driver paths.
    pub graph_driver: GraphDriver,
    /// Layers.
    #[serde(rename = "RootFS")]
    pub root_fs: RootFsInspect,
    /// `LastTagTime`.
    pub metadata: BTreeMap<String, String>,
}

/// One line of `carrel history`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryItem {
    /// The image id for the newest entry, `<missing>` for the others.
    pub id: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// The command.
    pub created_by: String,
    /// Tags (on the newest entry).
    pub tags: Vec<String>,
    /// Size of the layer the step made.
    pub size: u64,
    /// Comment.
    pub comment: String,
}

/// One entry of an image removal report (`Untagged: …` / `Deleted: …`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DeleteRecord {
    /// A tag was removed.
    Untagged(String),
    /// An image or layer was deleted.
    Deleted(String),
}

/// What `image prune` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Removal records, in order.
    pub deleted: Vec<DeleteRecord>,
    /// Bytes freed.
    pub reclaimed: u64,
}

/// Filters of `carrel images`.
#[derive(Debug, Clone, Default)]
pub struct ImageFilter {
    /// `dangling=true|false`.
    pub dangling: Option<bool>,
    /// `reference=PATTERN` (repository or repository:tag, `*` globs).
    pub reference: Vec<String>,
    /// `label=KEY` or `label=KEY=VALUE`.
    pub label: Vec<String>,
}

/// How a user named an image.
enum ImageRef {
    Id(Digest),
    Named(Reference),
    Prefix(String),
}

fn classify(name: &str) -> Result<ImageRef> {
    if let Some(hex) = name.strip_prefix("sha256:")
        && !carrel_core::digest::is_hex64(hex)
    {
        return Ok(ImageRef::Prefix(hex.to_string()));
    }
    Ok(match reference::parse_any_reference(name)? {
        AnyReference::Digest(d) => ImageRef::Id(d),
        AnyReference::Named(r) => ImageRef::Named(r.with_default_tag()),
    })
}

fn familiar(tag: &str) -> String {
    Reference::parse_normalized_named(tag)
        .map(|r| r.familiar_string())
        .unwrap_or_else(|_| tag.to_string())
}

impl Engine {
    /// Find an image by reference (`busybox`, `busybox:1`), full id, or unique id prefix.
    pub fn resolve_image(&self, name: &str) -> Result<ImageRow> {
        let not_found = |shown: &str| EngineError::NotFound(format!("No such image: {shown}"));
        match classify(name)? {
            ImageRef::Id(id) => self
                .meta()
                .read(|c| rows::get(c, &id))?
                .ok_or_else(|| not_found(name)),
            ImageRef::Named(r) => {
                if let Some(tag) = self.meta().read(|c| rows::get_tag(c, &r.to_string()))? {
                    return self
                        .meta()
                        .read(|c| rows::get(c, &tag.image_id))?
                        .ok_or_else(|| not_found(&r.familiar_string()));
                }
                // Docker falls back to an id prefix when no tag matches.
                if name.len() >= 4
                    && name.bytes().all(|b| b.is_ascii_hexdigit())
                    && let Ok(row) = self.image_by_prefix(name)
                {
                    return Ok(row);
                }
                Err(not_found(&r.familiar_string()))
            }
            // Docker names what the user typed (`No such image: sha256:0123abcd`).
            ImageRef::Prefix(p) => self.image_by_prefix(&p).map_err(|e| match e {
                EngineError::NotFound(_) => not_found(name),
                other => other,
            }),
        }
    }

    fn image_by_prefix(&self, prefix: &str) -> Result<ImageRow> {
        let ids = self.meta().read(|c| rows::ids_with_prefix(c, prefix, 1))?;
        match ids.as_slice() {
            [] => Err(EngineError::NotFound(format!("No such image: {prefix}"))),
            [id] => self
                .meta()
                .read(|c| rows::get(c, id))?
                .ok_or_else(|| EngineError::NotFound(format!("No such image: {prefix}"))),
            _ => Err(EngineError::InvalidArgument(format!(
                "image id prefix {prefix} is ambiguous: it matches more than one image"
            ))),
        }
    }

    /// Parse an image's stored config.
    pub fn image_config(&self, row: &ImageRow) -> Result<ImageConfig> {
        ImageConfig::parse(row.config.as_bytes()).map_err(EngineError::InvalidArgument)
    }

    /// Familiar tags of an image, sorted.
    pub fn image_tags(&self, id: &Digest) -> Result<Vec<String>> {
        let mut tags: Vec<String> = self
            .meta()
            .read(|c| rows::tags_of(c, id))?
            .iter()
            .map(|t| familiar(t))
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// `carrel images`: every image, newest first, filtered.
    pub fn image_list(&self, filter: &ImageFilter) -> Result<Vec<ImageSummary>> {
        let images = self.meta().read(rows::list)?;
        let tags = self.meta().read(rows::list_tags)?;
        let mut by_image: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in tags {
            by_image
                .entry(t.image_id.to_string())
                .or_default()
                .push(familiar(&t.name));
        }
        let mut out = Vec::new();
        for img in images {
            let mut repo_tags = by_image.remove(&img.id.to_string()).unwrap_or_default();
            repo_tags.sort();
            if let Some(d) = filter.dangling
                && d != repo_tags.is_empty()
            {
                continue;
            }
            let cfg = self.image_config(&img).ok();
            let labels = cfg.and_then(|c| c.config.and_then(|c| c.labels));
            if !filter
                .label
                .iter()
                .all(|l| label_matches(labels.as_ref(), l))
            {
                continue;
            }
            if !filter.reference.is_empty() {
                repo_tags.retain(|t| filter.reference.iter().any(|p| reference_matches(p, t)));
                if repo_tags.is_empty() {
                    continue;
                }
            }
            out.push(ImageSummary {
                id: img.id.to_string(),
                repo_tags,
                created: img.created.div_euclid(1_000_000_000),
                size: img.size,
                labels,
                containers: -1,
            });
        }
        Ok(out)
    }

    /// `carrel image inspect`.
    pub fn image_inspect(&self, name: &str) -> Result<ImageInspect> {
        let row = self.resolve_image(name)?;
        let cfg = self.image_config(&row)?;
        let graph = match row.layers.last() {
            Some(top) => {
                let paths = self.snapshotter().paths(&top.to_string())?;
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
                data
            }
            None => BTreeMap::new(),
        };
        let mut metadata = BTreeMap::new();
        if let Some(t) = row.last_tag {
            metadata.insert("LastTagTime".to_string(), rfc3339_nanos(t));
        }
        Ok(ImageInspect {
            id: row.id.to_string(),
            repo_tags: self.image_tags(&row.id)?,
            repo_digests: Vec::new(),
            parent: String::new(),
            comment: cfg.comment.clone().unwrap_or_default(),
            created: rfc3339_nanos(row.created),
            docker_version: cfg.docker_version.clone().unwrap_or_default(),
            author: cfg.author.clone().unwrap_or_default(),
            config: serde_json::to_value(cfg.config.clone().unwrap_or_default())
                .unwrap_or_default(),
            architecture: cfg.architecture.clone(),
            variant: cfg.variant.clone(),
            os: cfg.os.clone(),
            size: row.size,
            graph_driver: GraphDriver {
                data: graph,
                name: self.driver().name().to_string(),
            },
            root_fs: RootFsInspect {
                kind: "layers".into(),
                layers: cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
            },
            metadata,
        })
    }

    /// `carrel tag SOURCE TARGET`.
    pub fn image_tag(&self, source: &str, target: &str) -> Result<()> {
        let target_ref = reference::parse_tag_target(target)?;
        let image = self.resolve_image(source)?;
        let now = carrel_meta::now_nanos();
        self.meta()
            .write(|tx| rows::set_tag(tx, &target_ref.to_string(), &image.id, now))?;
        self.emit_image_event(
            &image.id.to_string(),
            "tag",
            Some(&target_ref.familiar_string()),
        );
        Ok(())
    }

    /// `carrel rmi`: untag, and delete the image when its last tag goes (or when named by id).
    pub fn image_remove(&self, name: &str, force: bool) -> Result<Vec<DeleteRecord>> {
        let row = self.resolve_image(name)?;
        let mut records = Vec::new();
        let named = match classify(name)? {
            ImageRef::Named(r) => {
                let is_tag = self
                    .meta()
                    .read(|c| rows::get_tag(c, &r.to_string()))?
                    .is_some();
                is_tag.then_some(r)
            }
            _ => None,
        };
        let short = row.id.short().to_string();
        if let Some(r) = named {
            let remaining: Vec<String> = self
                .meta()
                .read(|c| rows::tags_of(c, &row.id))?
                .into_iter()
                .filter(|t| *t != r.to_string())
                .collect();
            if !remaining.is_empty() {
                self.meta()
                    .write(|tx| rows::delete_tag(tx, &r.to_string()))?;
                self.emit_image_event(&row.id.to_string(), "untag", Some(&r.familiar_string()));
                return Ok(vec![DeleteRecord::Untagged(r.familiar_string())]);
            }
            self.check_image_unused(&row.id, &short, force, Some(&r))?;
            records.push(DeleteRecord::Untagged(r.familiar_string()));
        } else {
            let tags = self.meta().read(|c| rows::tags_of(c, &row.id))?;
            let repos: HashSet<String> = tags
                .iter()
                .map(|t| {
                    t.rsplit_once(':')
                        .map(|(r, _)| r.to_string())
                        .unwrap_or_default()
                })
                .collect();
            if repos.len() > 1 && !force {
                return Err(EngineError::Conflict(format!(
                    "conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
                )));
            }
            self.check_image_unused(&row.id, &short, force, None)?;
            for t in &tags {
                records.push(DeleteRecord::Untagged(familiar(t)));
            }
        }
        // Tags and the image row go in one transaction; layers are collected afterwards.
        self.meta().write(|tx| {
            for t in rows::tags_of(tx, &row.id)? {
                rows::delete_tag(tx, &t)?;
            }
            rows::delete(tx, &row.id)?;
            Ok(())
        })?;
        records.push(DeleteRecord::Deleted(row.id.to_string()));
        for r in &records {
            match r {
                DeleteRecord::Untagged(t) => {
                    self.emit_image_event(&row.id.to_string(), "untag", Some(t))
                }
                DeleteRecord::Deleted(id) => self.emit_image_event(id, "delete", None),
            }
        }
        let collected = self.collect_garbage()?;
        for layer in collected.layers {
            records.push(DeleteRecord::Deleted(layer));
        }
        Ok(records)
    }

    /// Refuse to delete an image that containers use (filled in by the containers service).
    fn check_image_unused(
        &self,
        id: &Digest,
        short: &str,
        force: bool,
        named: Option<&Reference>,
    ) -> Result<()> {
        let users = self.containers_using_image(id)?;
        let Some(user) = users.first() else {
            return Ok(());
        };
        if user.running {
            return Err(EngineError::Conflict(format!(
                "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {}",
                carrel_core::id::short(&user.id)
            )));
        }
        if force {
            return Ok(());
        }
        Err(EngineError::Conflict(match named {
            Some(r) => format!(
                "conflict: unable to remove repository reference \"{}\" (must force) - container {} is using its referenced image {short}",
                r.familiar_string(),
                carrel_core::id::short(&user.id)
            ),
            None => format!(
                "conflict: unable to delete {short} (must be forced) - image is being used by stopped container {}",
                carrel_core::id::short(&user.id)
            ),
        }))
    }

    /// `carrel history`.
    pub fn image_history(&self, name: &str) -> Result<Vec<HistoryItem>> {
        let row = self.resolve_image(name)?;
        let cfg = self.image_config(&row)?;
        let sizes = self.layer_sizes(&row.layers)?;
        let mut layer_idx = sizes.len();
        let mut out = Vec::new();
        let history = if cfg.history.is_empty() {
            // No history recorded: one entry per layer.
            (0..sizes.len())
                .map(|_| config::HistoryEntry::default())
                .collect()
        } else {
            cfg.history.clone()
        };
        for h in history.iter().rev() {
            let size = if h.empty_layer || layer_idx == 0 {
                0
            } else {
                layer_idx -= 1;
                sizes[layer_idx]
            };
            let created = h
                .created
                .as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map(|t| t.timestamp())
                .unwrap_or(0);
            out.push(HistoryItem {
                id: "<missing>".into(),
                created,
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: Vec::new(),
                size,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        if let Some(first) = out.first_mut() {
            first.id = row.id.to_string();
            first.tags = self.image_tags(&row.id)?;
        }
        Ok(out)
    }

    /// `carrel image prune`: remove dangling images (all unused ones with `all`).
    pub fn image_prune(&self, all: bool, filter: &ImageFilter) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let images = self.meta().read(rows::list)?;
        let before = self.layer_bytes()?;
        for img in images {
            let tags = self.meta().read(|c| rows::tags_of(c, &img.id))?;
            if !all && !tags.is_empty() {
                continue;
            }
            if !self.containers_using_image(&img.id)?.is_empty() {
                continue;
            }
            let labels = self
                .image_config(&img)
                .ok()
                .and_then(|c| c.config.and_then(|c| c.labels));
            if !filter
                .label
                .iter()
                .all(|l| label_matches(labels.as_ref(), l))
            {
                continue;
            }
            self.meta().write(|tx| {
                for t in rows::tags_of(tx, &img.id)? {
                    rows::delete_tag(tx, &t)?;
                }
                rows::delete(tx, &img.id)?;
                Ok(())
            })?;
            for t in &tags {
                report.deleted.push(DeleteRecord::Untagged(familiar(t)));
            }
            report
                .deleted
                .push(DeleteRecord::Deleted(img.id.to_string()));
        }
        if !report.deleted.is_empty() {
            let collected = self.collect_garbage()?;
            for layer in collected.layers {
                report.deleted.push(DeleteRecord::Deleted(layer));
            }
        }
        report.reclaimed = before.saturating_sub(self.layer_bytes()?);
        Ok(report)
    }
}

/// `label=KEY` / `label=KEY=VALUE` against a label map.
pub fn label_matches(labels: Option<&BTreeMap<String, String>>, filter: &str) -> bool {
    let (key, value) = match filter.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (filter, None),
    };
    match labels.and_then(|l| l.get(key)) {
        None => false,
        Some(v) => value.is_none_or(|want| want == v),
    }
}

/// Docker's `reference=` filter: a glob over `repository` or `repository:tag`.
fn reference_matches(pattern: &str, familiar_tag: &str) -> bool {
    let repo = familiar_tag
        .rsplit_once(':')
        .map(|(r, _)| r)
        .unwrap_or(familiar_tag);
    glob_match(pattern, familiar_tag) || glob_match(pattern, repo)
}

/// A minimal glob: `*` matches any run of characters except `/`, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && t[0] != b'/' && go(p, &t[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// A container that uses an image (as far as image removal cares).
#[derive(Debug, Clone)]
pub struct ImageUser {
    /// The container id.
    pub id: String,
    /// Whether it is running.
    pub running: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_labels() {
        assert!(glob_match("busy*", "busybox"));
        assert!(!glob_match("busy*", "a/busybox"));
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busybox:lat*", "busybox:latest"));
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        assert!(label_matches(Some(&labels), "a"));
        assert!(label_matches(Some(&labels), "a=1"));
        assert!(!label_matches(Some(&labels), "a=2"));
        assert!(!label_matches(None, "a"));
    }
}
