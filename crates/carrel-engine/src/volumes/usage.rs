//! `system df`: what images, containers and local volumes use.
//!
//! Images come from the layer sizes recorded at commit, containers from their writable layers
//! (measured now, as Docker does), and local volumes from the usage cached in the `volumes`
//! table (measured at creation, after a container using the volume exits, after an import, or
//! now for a volume never measured): `system df` never walks every volume, so it stays fast with
//! thousands of them.

use std::collections::HashMap;

use carrel_meta::volumes as rows;

use crate::containers::status_text;
use crate::{Engine, Result};

/// One image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    /// Full id (`sha256:…`).
    pub id: String,
    /// Its tags (familiar form).
    pub repo_tags: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Size of all its layers.
    pub size: u64,
    /// Size of its layers that other images use too.
    pub shared_size: u64,
    /// Containers created from it.
    pub containers: u64,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    /// Full id.
    pub id: String,
    /// Name (without `/`).
    pub name: String,
    /// The image as it was named at create.
    pub image: String,
    /// Command line.
    pub command: String,
    /// Creation time, nanoseconds since the epoch.
    pub created: i64,
    /// Docker's status text (`Up 2 minutes`, `Exited (0) …`).
    pub status: String,
    /// Running, paused or restarting.
    pub active: bool,
    /// Bytes of its writable layer.
    pub size_rw: u64,
    /// Number of volumes it references.
    pub volumes: u64,
}

/// One local volume without options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUsage {
    /// Name.
    pub name: String,
    /// Containers referencing it.
    pub links: u64,
    /// Cached disk usage, -1 when it could not be measured.
    pub size: i64,
}

/// The answer of `system df`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of every layer of every image, each counted once.
    pub layers_size: u64,
    /// Images.
    pub images: Vec<ImageUsage>,
    /// Containers.
    pub containers: Vec<ContainerUsage>,
    /// Local volumes without driver options (the ones Docker counts).
    pub volumes: Vec<VolumeUsage>,
    /// Build cache bytes (carrel has no build cache: 0).
    pub build_cache: u64,
}

impl Engine {
    /// `system df`.
    pub fn system_df(&self) -> Result<DiskUsage> {
        let mut du = DiskUsage::default();
        let images = self.meta().read(carrel_meta::images::list)?;
        let tagged: HashMap<String, Vec<String>> = self
            .image_list(&Default::default())?
            .into_iter()
            .map(|i| (i.id, i.repo_tags))
            .collect();
        let containers = self.containers()?;
        let mut users: HashMap<String, u64> = HashMap::new();
        for c in &containers {
            *users.entry(c.image_id.to_string()).or_default() += 1;
        }
        let mut layer_use: HashMap<String, u64> = HashMap::new();
        for img in &images {
            for l in &img.layers {
                *layer_use.entry(l.to_string()).or_default() += 1;
            }
        }
        let mut layer_size: HashMap<String, u64> = HashMap::new();
        for img in &images {
            let sizes = self.layer_sizes(&img.layers)?;
            let mut shared = 0;
            for (l, s) in img.layers.iter().zip(&sizes) {
                if layer_use.get(&l.to_string()).copied().unwrap_or(0) > 1 {
                    shared += s;
                }
                layer_size.insert(l.to_string(), *s);
            }
            let repo_tags = tagged.get(&img.id.to_string()).cloned().unwrap_or_default();
            du.images.push(ImageUsage {
                id: img.id.to_string(),
                repo_tags,
                created: img.created.div_euclid(1_000_000_000),
                size: sizes.iter().sum(),
                shared_size: shared,
                containers: users.get(&img.id.to_string()).copied().unwrap_or(0),
            });
        }
        du.layers_size = layer_size.values().sum();
        let refs = self.meta().read(rows::ref_counts)?;
        let mut per_container: HashMap<String, u64> = HashMap::new();
        self.meta().read(|c| {
            let mut stmt =
                c.prepare("SELECT container, COUNT(*) FROM volume_refs GROUP BY container")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for r in rows {
                let (id, n) = r?;
                per_container.insert(id, n as u64);
            }
            Ok(())
        })?;
        for c in containers {
            let size_rw = self
                .snapshotter()
                .usage(&c.snapshot)
                .map(|u| u.size)
                .unwrap_or(0);
            du.containers.push(ContainerUsage {
                status: status_text(&c.state),
                active: c.is_running(),
                command: c.command(),
                image: c.spec.config.image.clone(),
                volumes: per_container.get(&c.id).copied().unwrap_or(0),
                id: c.id,
                name: c.name,
                created: c.created,
                size_rw,
            });
        }
        for row in self.meta().read(rows::list)? {
            if row.driver != crate::volumes::LOCAL_DRIVER || !row.options.is_empty() {
                continue;
            }
            let size = match row.size {
                Some(s) => s as i64,
                // Never measured (e.g. populated by a container that is still running).
                None => self
                    .volume_measure(&row.name)
                    .map(|s| s as i64)
                    .unwrap_or(-1),
            };
            du.volumes.push(VolumeUsage {
                links: refs.get(&row.name).copied().unwrap_or(0),
                name: row.name,
                size,
            });
        }
        du.volumes
            .sort_by(|a, b| crate::volumes::natural_cmp(&a.name, &b.name));
        Ok(du)
    }
}
