//! `ps` filters and `container prune`.

use super::Container;
use super::types::Status;
use crate::images::{glob_match, label_matches};
use crate::{Engine, EngineError, Result};

/// Filters of `carrel ps` (Docker's `--filter` keys carrel supports).
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    /// `id=PREFIX`.
    pub id: Vec<String>,
    /// `name=SUBSTRING` (Docker matches names by substring).
    pub name: Vec<String>,
    /// `label=KEY[=VALUE]`.
    pub label: Vec<String>,
    /// `status=created|running|paused|restarting|removing|exited|dead`.
    pub status: Vec<String>,
    /// `exited=CODE`.
    pub exited: Vec<i64>,
    /// `ancestor=IMAGE` (name, name:tag or id).
    pub ancestor: Vec<String>,
    /// `before=CONTAINER`.
    pub before: Option<String>,
    /// `since=CONTAINER`.
    pub since: Option<String>,
    /// `volume=NAME|PATH`.
    pub volume: Vec<String>,
}

const STATUSES: &[&str] = &[
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];

impl ContainerFilter {
    /// Parse `key=value` filter strings as Docker does, with Docker's errors.
    pub fn parse(filters: &[String]) -> Result<ContainerFilter> {
        let mut f = ContainerFilter::default();
        for raw in filters {
            let Some((key, value)) = raw.split_once('=') else {
                return Err(EngineError::InvalidArgument(
                    "bad format of filter (expected name=value)".into(),
                ));
            };
            let value = value.to_string();
            match key {
                "id" => f.id.push(value),
                "name" => f.name.push(value),
                "label" => f.label.push(value),
                "status" => {
                    if !STATUSES.contains(&value.as_str()) {
                        return Err(EngineError::InvalidArgument(format!(
                            "invalid filter 'status={value}'"
                        )));
                    }
                    f.status.push(value)
                }
                "exited" => f.exited.push(value.parse().map_err(|_| {
                    EngineError::InvalidArgument(format!("invalid filter 'exited={value}'"))
                })?),
                "ancestor" => f.ancestor.push(value),
                "before" => f.before = Some(value),
                "since" => f.since = Some(value),
                "volume" => f.volume.push(value),
                other => {
                    return Err(EngineError::InvalidArgument(format!(
                        "invalid filter '{other}'"
                    )));
                }
            }
        }
        Ok(f)
    }
}

impl Engine {
    /// `carrel ps`: running containers (all with `all`), newest first, filtered. A container
    /// whose monitor died is repaired first (opening the data root does that too, but a
    /// server's engine stays open).
    pub fn container_list(&self, all: bool, filter: &ContainerFilter) -> Result<Vec<Container>> {
        let mut list = self.containers()?;
        for c in list.iter_mut() {
            if c.is_running()
                && !self.container_monitor_alive(&c.id)
                && let Ok(repaired) = self.refresh_container(&c.id)
            {
                *c = repaired;
            }
        }
        let created_of = |name: &str| -> Result<i64> { Ok(self.resolve_container(name)?.created) };
        let before = filter.before.as_deref().map(created_of).transpose()?;
        let since = filter.since.as_deref().map(created_of).transpose()?;
        let mut ancestors = Vec::new();
        for a in &filter.ancestor {
            // An unknown ancestor matches nothing, as in Docker.
            if let Ok(img) = self.resolve_image(a) {
                ancestors.push(img.id);
            }
        }
        let explicit_status = !filter.status.is_empty() || !filter.exited.is_empty();
        list.retain(|c| {
            (all || explicit_status || c.is_running() || before.is_some() || since.is_some())
                && (filter.id.is_empty() || filter.id.iter().any(|p| c.id.starts_with(p.as_str())))
                && (filter.name.is_empty()
                    || filter.name.iter().any(|n| {
                        c.name.contains(n.trim_start_matches('/')) || glob_match(n, &c.name)
                    }))
                && filter
                    .label
                    .iter()
                    .all(|l| label_matches(c.spec.config.labels.as_ref(), l))
                && (filter.status.is_empty()
                    || filter.status.iter().any(|s| s == c.state.status.as_str()))
                && (filter.exited.is_empty()
                    || (c.state.status == Status::Exited
                        && filter.exited.contains(&c.state.exit_code)))
                && (filter.ancestor.is_empty() || ancestors.contains(&c.image_id))
                && before.is_none_or(|t| c.created < t)
                && since.is_none_or(|t| c.created > t)
                && (filter.volume.is_empty() || self.mounts_match(c, &filter.volume))
        });
        Ok(list)
    }

    /// Docker's `volume=` filter: a mount of the container has one of `values` as its
    /// destination, or as its volume name (its source for a bind).
    fn mounts_match(&self, c: &Container, values: &[String]) -> bool {
        let points = self.mount_points(c);
        values.iter().any(|v| {
            points.iter().any(|m| {
                &m.destination == v
                    || match &m.name {
                        Some(name) => name == v,
                        None => &m.source == v,
                    }
            })
        })
    }

    /// `carrel container prune`: remove stopped containers matching `label` filters. Returns
    /// the removed ids and the bytes their writable layers used.
    pub fn container_prune(&self, labels: &[String]) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut reclaimed = 0u64;
        for c in self.containers()? {
            if c.is_running() || c.state.status == Status::Removing {
                continue;
            }
            if !labels
                .iter()
                .all(|l| label_matches(c.spec.config.labels.as_ref(), l))
            {
                continue;
            }
            reclaimed += self
                .snapshotter()
                .usage(&c.snapshot)
                .map(|u| u.size)
                .unwrap_or(0);
            self.container_remove(&c.id, false, false)?;
            removed.push(c.id);
        }
        Ok((removed, reclaimed))
    }
}
