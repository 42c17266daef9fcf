//! Layers: committed snapshots keyed by chain id, created once and shared.
//!
//! Creating a layer: take the layer's lock file (so two processes loading images that share a
//! layer extract it once), check-and-protect an existing one in a single transaction, or prepare
//! a leased snapshot, extract the diff into it, verify the diff id, flush the filesystem, and
//! commit it under its chain id.

use std::collections::BTreeMap;
use std::io::Read;

use carrel_core::Digest;
use carrel_core::fs::FileLock;
use carrel_meta::snapshots::{self, Kind};
use carrel_meta::{Lease, leases};
use carrel_storage::snapshot::Labels;

use crate::{Engine, EngineError, Result};

/// Label: the layer's diff id (digest of its uncompressed tar).
pub const LABEL_DIFF_ID: &str = "carrel.layer.diff-id";
/// Label: the apparent size of the layer's content in bytes (what Docker shows as layer size).
pub const LABEL_SIZE: &str = "carrel.layer.size";
/// Label: the size in bytes of the layer's uncompressed tar.
pub const LABEL_TAR_SIZE: &str = "carrel.layer.tar-size";
/// Label: the content-store blob that holds the layer as shipped.
pub const LABEL_BLOB: &str = "carrel.layer.blob";
/// Label: the media type of that blob.
pub const LABEL_MEDIA_TYPE: &str = "carrel.layer.media-type";

/// What the caller knows about a layer to be created.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Its chain id (the snapshot key).
    pub chain: Digest,
    /// The chain id of the layer below, if any.
    pub parent: Option<Digest>,
    /// The diff id the extracted tar must hash to.
    pub diff_id: Digest,
    /// The content-store blob the layer came from, and its media type.
    pub blob: Option<(Digest, String)>,
}

/// The result of [`Engine::ensure_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOutcome {
    /// True when the layer was extracted now; false when it already existed.
    pub created: bool,
    /// Its content size in bytes.
    pub size: u64,
}

/// The snapshot key of a layer.
pub fn layer_key(chain: &Digest) -> String {
    chain.to_string()
}

/// The recorded content size of a committed layer snapshot.
pub fn recorded_size(labels: &BTreeMap<String, String>) -> u64 {
    labels
        .get(LABEL_SIZE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl Engine {
    /// Make sure the layer `spec.chain` exists, extracting it from `open()` (an uncompressed or
    /// compressed tar stream) when it does not. The layer is protected by `lease` until the caller
    /// records an image that references it.
    pub fn ensure_layer(
        &self,
        lease: &Lease,
        spec: &LayerSpec,
        open: &mut dyn FnMut() -> Result<Box<dyn Read + Send>>,
    ) -> Result<LayerOutcome> {
        let key = layer_key(&spec.chain);
        let lock_path = self
            .layout()
            .locks()
            .join(format!("layer-{}", spec.chain.hex()));
        let _lock =
            FileLock::lock(&lock_path).map_err(|e| EngineError::io("locking", &lock_path, e))?;

        if let Some(size) = self.protect_existing_layer(lease, &key)? {
            return Ok(LayerOutcome {
                created: false,
                size,
            });
        }

        let parent_key = spec.parent.as_ref().map(layer_key);
        if let Some(p) = &parent_key {
            let parent = self.meta().read(|c| snapshots::get(c, p))?;
            if parent.map(|r| r.kind) != Some(Kind::Committed) {
                return Err(EngineError::InvalidArgument(format!(
                    "layer {} is missing its parent layer {p}",
                    spec.chain
                )));
            }
        }

        let extract_key = format!("extract-{}-{}", lease.id(), spec.chain.hex());
        self.meta()
            .write(|tx| leases::add_resource(tx, lease.id(), "snapshot", &extract_key))?;
        self.snapshotter()
            .prepare(&extract_key, parent_key.as_deref(), Labels::new())?;
        let result = self.extract_into(&extract_key, spec, open);
        let (size, tar_size) = match result {
            Ok(sizes) => sizes,
            Err(e) => {
                // Free the space the partial layer takes first: on a full disk the metadata
                // database cannot record the removal until there is room again.
                self.empty_extraction(&extract_key);
                if let Err(cleanup) = self.snapshotter().remove(&extract_key) {
                    tracing::warn!(%cleanup, key = extract_key, "could not remove failed layer");
                }
                return Err(e);
            }
        };

        let mut labels = Labels::new();
        labels.insert(LABEL_DIFF_ID.into(), spec.diff_id.to_string());
        labels.insert(LABEL_SIZE.into(), size.to_string());
        labels.insert(LABEL_TAR_SIZE.into(), tar_size.to_string());
        if let Some((blob, media_type)) = &spec.blob {
            labels.insert(LABEL_BLOB.into(), blob.to_string());
            labels.insert(LABEL_MEDIA_TYPE.into(), media_type.clone());
        }
        // Protect the committed name before it exists, so no collector can take it.
        self.meta()
            .write(|tx| leases::add_resource(tx, lease.id(), "snapshot", &key))?;
        self.snapshotter().commit(&key, &extract_key, labels)?;
        Ok(LayerOutcome {
            created: true,
            size,
        })
    }

    /// Remove what a failed extraction wrote into its snapshot (best effort; the snapshot
    /// itself is removed afterwards, or by recovery).
    fn empty_extraction(&self, extract_key: &str) {
        let Ok(target) = self.snapshotter().apply_target(extract_key) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&target.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if let Err(e) = carrel_core::fs::remove_all(&entry.path()) {
                tracing::warn!(path = %entry.path().display(), %e, "could not remove a partial layer file");
            }
        }
    }

    /// If the layer exists and is committed, protect it under `lease` (in the same transaction
    /// that saw it, so a concurrent collector cannot remove it in between) and return its size.
    fn protect_existing_layer(&self, lease: &Lease, key: &str) -> Result<Option<u64>> {
        Ok(self.meta().write(|tx| match snapshots::get(tx, key)? {
            Some(row) if row.kind == Kind::Committed => {
                leases::add_resource(tx, lease.id(), "snapshot", key)?;
                Ok(Some(recorded_size(&row.labels)))
            }
            _ => Ok(None),
        })?)
    }

    fn extract_into(
        &self,
        extract_key: &str,
        spec: &LayerSpec,
        open: &mut dyn FnMut() -> Result<Box<dyn Read + Send>>,
    ) -> Result<(u64, u64)> {
        let target = self.snapshotter().apply_target(extract_key)?;
        let reader = open()?;
        let (_, tar) =
            carrel_archive::decompress(std::io::BufReader::with_capacity(1 << 20, reader))?;
        let opts = carrel_archive::ApplyOptions::new(target.format);
        let stats = carrel_archive::apply_layer(&target.dir, tar, &opts)?;
        if stats.diff_id != spec.diff_id {
            return Err(EngineError::InvalidArgument(format!(
                "layer {}: diff id mismatch: expected {}, found {}",
                spec.chain, spec.diff_id, stats.diff_id
            )));
        }
        // One flush of the filesystem makes the layer durable before it is committed.
        let dir = std::fs::File::open(&target.dir)
            .map_err(|e| EngineError::io("opening", &target.dir, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| EngineError::io("syncing", &target.dir, e.into()))?;
        Ok((stats.bytes_written, stats.tar_size))
    }

    /// Recorded content sizes of layers, in the given order.
    pub fn layer_sizes(&self, chains: &[Digest]) -> Result<Vec<u64>> {
        self.meta()
            .read(|c| {
                chains
                    .iter()
                    .map(|ch| {
                        Ok(snapshots::get(c, &layer_key(ch))?
                            .map(|r| recorded_size(&r.labels))
                            .unwrap_or(0))
                    })
                    .collect()
            })
            .map_err(Into::into)
    }

    /// Total recorded size of all committed layers (for reclaimed-space reports).
    pub fn layer_bytes(&self) -> Result<u64> {
        Ok(self
            .meta()
            .read(snapshots::list)?
            .iter()
            .filter(|r| r.kind == Kind::Committed)
            .map(|r| recorded_size(&r.labels))
            .sum())
    }
}
