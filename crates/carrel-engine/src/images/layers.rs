//! Layers: committed snapshots keyed by chain id, created once and shared.
//!
//! Creating the layers of an image: take each layer's lock file, bottom first (so two processes
//! loading images that share layers extract each once, and never deadlock: chain ids fix the
//! order), check-and-protect the ones that exist in single transactions, prepare leased
//! snapshots for the others, extract them — side by side when the driver keeps layers apart
//! (overlay), one after the other otherwise — verifying each diff id while the layer as shipped
//! is stored in the content store in the same pass, flush the filesystem once, and commit the
//! layers bottom first under their chain ids.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use carrel_core::Digest;
use carrel_core::fs::FileLock;
use carrel_meta::snapshots::{self, Kind};
use carrel_meta::{Lease, leases};
use carrel_storage::content::{BlobWriter, Expected};
use carrel_storage::snapshot::Labels;

use crate::{Engine, EngineError, Progress, Result};

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

/// Opens a layer's bytes as shipped (plain or compressed tar), each time it is called.
pub type LayerSource<'a> = Box<dyn Fn() -> Result<Box<dyn Read + Send>> + Send + Sync + 'a>;

/// One layer to make sure exists.
pub struct LayerJob<'a> {
    /// Chain id, parent and diff id (and the stored blob when the caller stored it already).
    pub spec: LayerSpec,
    /// Where its bytes come from.
    pub source: LayerSource<'a>,
    /// Its size as shipped, when known (for progress and to check the stored copy).
    pub size: Option<u64>,
    /// Keep the layer as shipped in the content store (verified against `expected`).
    pub store_as: Option<(String, Option<Expected>)>,
}

/// The result of [`Engine::ensure_layers`] for one layer.
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

/// What extracting one layer produced.
struct Extracted {
    size: u64,
    tar_size: u64,
    blob: Option<(Digest, String)>,
}

/// Copies everything read into a blob being written (the layer as shipped) and counts it.
struct Tee<R> {
    inner: R,
    writer: Arc<Mutex<Option<BlobWriter>>>,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            w.write_all(&buf[..n])?;
        }
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Run `f` while a ticker reports the bytes counted in `read` to `progress`.
fn with_ticker<T: Send>(
    progress: &dyn Progress,
    read: &AtomicU64,
    f: impl FnOnce() -> T + Send,
) -> T {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut reported = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let now = read.load(Ordering::Relaxed);
                if now > reported {
                    progress.advance(now - reported);
                    reported = now;
                }
                if finished {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let out = f();
        done.store(true, Ordering::Release);
        out
    })
}

impl Engine {
    /// Make sure the layers of an image exist, bottom first, extracting the missing ones. Every
    /// layer (new or reused) is protected by `lease` until the caller records an image that
    /// references it. A failure leaves none of the new layers behind.
    pub fn ensure_layers(
        &self,
        lease: &Lease,
        jobs: Vec<LayerJob<'_>>,
        progress: &dyn Progress,
    ) -> Result<Vec<LayerOutcome>> {
        let mut locks = Vec::with_capacity(jobs.len());
        let mut outcomes: Vec<Option<LayerOutcome>> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let lock_path = self
                .layout()
                .locks()
                .join(format!("layer-{}", job.spec.chain.hex()));
            locks.push(
                FileLock::lock(&lock_path)
                    .map_err(|e| EngineError::io("locking", &lock_path, e))?,
            );
            let key = layer_key(&job.spec.chain);
            outcomes.push(
                self.protect_existing_layer(lease, &key)?
                    .map(|size| LayerOutcome {
                        created: false,
                        size,
                    }),
            );
        }
        let missing: Vec<usize> = (0..jobs.len()).filter(|i| outcomes[*i].is_none()).collect();
        if missing.is_empty() {
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let total: u64 = missing.iter().filter_map(|i| jobs[*i].size).sum();
        progress.start(
            &format!("Loading {} layer(s)", missing.len()),
            (total > 0).then_some(total),
        );
        let mut prepared: Vec<usize> = Vec::new();
        let result = if self.snapshotter().independent_layers() {
            self.extract_side_by_side(lease, &jobs, &missing, &mut prepared, progress)
        } else {
            self.extract_in_turn(lease, &jobs, &missing, &mut prepared, progress)
        };
        progress.finish();
        match result {
            Ok(done) => {
                for (i, size) in done {
                    outcomes[i] = Some(LayerOutcome {
                        created: true,
                        size,
                    });
                }
                drop(locks);
                Ok(outcomes.into_iter().flatten().collect())
            }
            Err(e) => {
                // Children first; free the space first (a full disk cannot record removals).
                for i in prepared.iter().rev() {
                    let key = layer_key(&jobs[*i].spec.chain);
                    if matches!(self.snapshotter().stat(&key), Ok(info) if info.kind == Kind::Active)
                    {
                        self.empty_extraction(&key);
                        if let Err(cleanup) = self.snapshotter().remove(&key) {
                            tracing::warn!(%cleanup, key, "could not remove a failed layer");
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// Make sure one layer exists (see [`Engine::ensure_layers`]); `open` gives its tar stream.
    pub fn ensure_layer(
        &self,
        lease: &Lease,
        spec: &LayerSpec,
        open: &(dyn Fn() -> Result<Box<dyn Read + Send>> + Send + Sync),
    ) -> Result<LayerOutcome> {
        let job = LayerJob {
            spec: spec.clone(),
            source: Box::new(open),
            size: None,
            store_as: None,
        };
        let mut out = self.ensure_layers(lease, vec![job], &crate::NoProgress)?;
        out.pop()
            .ok_or_else(|| EngineError::InvalidArgument("no layer to create".into()))
    }

    /// Prepare a leased snapshot for a missing layer (keyed by its chain id).
    fn prepare_layer(&self, lease: &Lease, spec: &LayerSpec) -> Result<()> {
        let key = layer_key(&spec.chain);
        self.meta()
            .write(|tx| leases::add_resource(tx, lease.id(), "snapshot", &key))?;
        let parent = spec.parent.as_ref().map(layer_key);
        self.snapshotter()
            .prepare(&key, parent.as_deref(), Labels::new())?;
        Ok(())
    }

    /// Overlay: prepare all missing layers (each on its parent, which may still be active),
    /// extract them in parallel, flush once, commit bottom first.
    fn extract_side_by_side(
        &self,
        lease: &Lease,
        jobs: &[LayerJob<'_>],
        missing: &[usize],
        prepared: &mut Vec<usize>,
        progress: &dyn Progress,
    ) -> Result<Vec<(usize, u64)>> {
        for &i in missing {
            self.check_parent(jobs, i, missing)?;
            self.prepare_layer(lease, &jobs[i].spec)?;
            prepared.push(i);
        }
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(missing.len())
            .max(1);
        let next = Mutex::new(0usize);
        let results: Mutex<Vec<(usize, Result<Extracted>)>> = Mutex::new(Vec::new());
        let read = Arc::new(AtomicU64::new(0));
        with_ticker(progress, &read, || {
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(|| {
                        loop {
                            let k = {
                                let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                                let k = *n;
                                *n += 1;
                                k
                            };
                            let Some(&i) = missing.get(k) else { return };
                            let r = self.extract_layer(lease, &jobs[i], &read);
                            let failed = r.is_err();
                            results
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((i, r));
                            if failed {
                                // Stop handing out work; running extractions finish.
                                *next.lock().unwrap_or_else(|p| p.into_inner()) = missing.len();
                                return;
                            }
                        }
                    });
                }
            })
        });
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results.sort_by_key(|(i, _)| *i);
        let mut extracted = Vec::new();
        for (i, r) in results {
            extracted.push((i, r?));
        }
        if extracted.len() != missing.len() {
            return Err(EngineError::InvalidArgument(
                "layer extraction stopped early".into(),
            ));
        }
        self.sync_layers()?;
        let mut done = Vec::new();
        for (i, e) in extracted {
            self.commit_layer(lease, &jobs[i].spec, &e)?;
            done.push((i, e.size));
        }
        Ok(done)
    }

    /// Other drivers: each missing layer is prepared on its committed parent, extracted,
    /// flushed and committed before the next.
    fn extract_in_turn(
        &self,
        lease: &Lease,
        jobs: &[LayerJob<'_>],
        missing: &[usize],
        prepared: &mut Vec<usize>,
        progress: &dyn Progress,
    ) -> Result<Vec<(usize, u64)>> {
        let mut done = Vec::new();
        let read = Arc::new(AtomicU64::new(0));
        for &i in missing {
            self.check_parent(jobs, i, missing)?;
            self.prepare_layer(lease, &jobs[i].spec)?;
            prepared.push(i);
            let e = with_ticker(progress, &read, || {
                self.extract_layer(lease, &jobs[i], &read)
            })?;
            self.sync_layers()?;
            self.commit_layer(lease, &jobs[i].spec, &e)?;
            done.push((i, e.size));
        }
        Ok(done)
    }

    /// A layer's parent must exist or be made in this batch.
    fn check_parent(&self, jobs: &[LayerJob<'_>], i: usize, missing: &[usize]) -> Result<()> {
        let Some(parent) = &jobs[i].spec.parent else {
            return Ok(());
        };
        let in_batch = missing
            .iter()
            .any(|&j| j < i && jobs[j].spec.chain == *parent);
        if in_batch {
            return Ok(());
        }
        let key = layer_key(parent);
        match self.meta().read(|c| snapshots::get(c, &key))? {
            Some(r) if r.kind == Kind::Committed => Ok(()),
            _ => Err(EngineError::InvalidArgument(format!(
                "layer {} is missing its parent layer {key}",
                jobs[i].spec.chain
            ))),
        }
    }

    /// Extract one layer into its prepared snapshot, storing it as shipped on the way when
    /// asked, and verify its diff id.
    fn extract_layer(
        &self,
        lease: &Lease,
        job: &LayerJob<'_>,
        read: &Arc<AtomicU64>,
    ) -> Result<Extracted> {
        let key = layer_key(&job.spec.chain);
        let target = self.snapshotter().apply_target(&key)?;
        let writer = Arc::new(Mutex::new(match &job.store_as {
            Some(_) => Some(self.content().writer(lease)?),
            None => None,
        }));
        let tee = Tee {
            inner: (job.source)()?,
            writer: writer.clone(),
            read: read.clone(),
        };
        let (_, tar) = carrel_archive::decompress(io::BufReader::with_capacity(1 << 20, tee))?;
        let opts = carrel_archive::ApplyOptions::new(target.format);
        let applied = carrel_archive::apply_layer(&target.dir, tar, &opts);
        // The layer as shipped is verified first: a blob that does not match its digest is the
        // more precise report than the extraction error or diff id mismatch it causes.
        let mut blob = job.spec.blob.clone();
        if let Some((media_type, expected)) = &job.store_as {
            let taken = writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(mut w) = taken {
                // Whatever the extraction did not read (bytes after a compressed stream, or
                // after the point where it failed) still belongs to the blob.
                let mut rest = (job.source)()?;
                io::copy(&mut (&mut rest).take(w.written()), &mut io::sink())
                    .map_err(|e| EngineError::io("reading layer", "source", e))?;
                io::copy(&mut rest, &mut w)
                    .map_err(|e| EngineError::io("storing layer", "source", e))?;
                let d = w.commit(media_type, expected.as_ref())?;
                blob = Some((d, media_type.clone()));
            }
        }
        let stats = applied?;
        if stats.diff_id != job.spec.diff_id {
            return Err(EngineError::InvalidArgument(format!(
                "layer {}: diff id mismatch: expected {}, found {}",
                job.spec.chain, job.spec.diff_id, stats.diff_id
            )));
        }
        Ok(Extracted {
            size: stats.bytes_written,
            tar_size: stats.tar_size,
            blob,
        })
    }

    /// Make what was extracted durable before it is committed: one flush of the filesystem.
    fn sync_layers(&self) -> Result<()> {
        let home = self.snapshotter().home();
        let dir = std::fs::File::open(&home).map_err(|e| EngineError::io("opening", &home, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| EngineError::io("syncing", &home, e.into()))?;
        Ok(())
    }

    /// Commit an extracted layer under its chain id with its labels.
    fn commit_layer(&self, lease: &Lease, spec: &LayerSpec, e: &Extracted) -> Result<()> {
        let key = layer_key(&spec.chain);
        let mut labels = Labels::new();
        labels.insert(LABEL_DIFF_ID.into(), spec.diff_id.to_string());
        labels.insert(LABEL_SIZE.into(), e.size.to_string());
        labels.insert(LABEL_TAR_SIZE.into(), e.tar_size.to_string());
        if let Some((blob, media_type)) = &e.blob {
            labels.insert(LABEL_BLOB.into(), blob.to_string());
            labels.insert(LABEL_MEDIA_TYPE.into(), media_type.clone());
        }
        self.meta()
            .write(|tx| leases::add_resource(tx, lease.id(), "snapshot", &key))?;
        self.snapshotter().commit(&key, &key, labels)?;
        Ok(())
    }

    /// Remove what a failed extraction wrote into its snapshot (best effort; the snapshot
    /// itself is removed afterwards, or by recovery).
    fn empty_extraction(&self, key: &str) {
        let Ok(target) = self.snapshotter().apply_target(key) else {
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
