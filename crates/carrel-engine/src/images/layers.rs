//! Layers: committed snapshots keyed by chain id, created once and shared.
//!
//! Creating the layers of an image: take each layer's lock file, bottom first (so two processes
//! loading images that share layers extract each once, and never deadlock: chain ids fix the
//! order), check-and-protect the ones that exist in single transactions, prepare leased
//! snapshots for the others, extract them — side by side when the driver keeps layers apart
//! (overlay), one after the other otherwise — verifying each diff id while the layer is kept in
//! the same pass (a compressed layer as shipped, in the content store; a plain tar as the
//! tar-split that rebuilds it from the extracted directory), flush the filesystem (started in the
//! background during the extraction, see [`super::flush`]), and commit the layers bottom first
//! under their chain ids.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use carrel_core::Digest;
use carrel_core::fs::FileLock;
use carrel_meta::snapshots::{self, Kind};
use carrel_meta::{Lease, leases};
use carrel_storage::content::{BlobWriter, Expected};
use carrel_storage::snapshot::{Labels, Usage};

use super::flush::{LayerFilesystems, with_early_flush};
use super::signal::with_helper;
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
/// Label: the content-store blob that holds the layer's tar-split (a layer shipped as a plain
/// tar is kept as its extracted directory plus this, not as a second copy of its content; see
/// [`carrel_archive::split`]).
pub const LABEL_TAR_SPLIT: &str = "carrel.layer.tar-split";
/// Media type of a stored tar-split.
pub const MEDIA_TYPE_TAR_SPLIT: &str = "application/vnd.carrel.tar-split.v1+zstd";

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
    /// Keep the layer as shipped (verified against `expected`): a compressed one as a blob in
    /// the content store, a plain tar as its tar-split.
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

/// The diff id of what was extracted must be the layer's.
fn check_diff_id(spec: &LayerSpec, found: &Digest) -> Result<()> {
    if *found != spec.diff_id {
        return Err(EngineError::InvalidArgument(format!(
            "layer {}: diff id mismatch: expected {}, found {found}",
            spec.chain, spec.diff_id
        )));
    }
    Ok(())
}

/// A layer as shipped must be what its manifest says (the content store's own check, for a
/// layer kept as a tar-split rather than a blob).
fn check_shipped(expected: &Expected, found: &Digest, size: u64) -> Result<()> {
    let what = format!("blob {}", expected.digest);
    if let Some(want) = expected.size
        && want != size
    {
        return Err(carrel_storage::StorageError::SizeMismatch {
            what,
            expected: want,
            found: size,
        }
        .into());
    }
    if expected.digest != *found {
        return Err(carrel_storage::StorageError::DigestMismatch {
            what,
            expected: expected.digest.clone(),
            found: found.clone(),
        }
        .into());
    }
    Ok(())
}

/// What extracting one layer produced.
struct Extracted {
    size: u64,
    tar_size: u64,
    blob: Option<(Digest, String)>,
    /// The stored tar-split, when the layer is kept as one instead of a blob.
    split: Option<Digest>,
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
    let mut reported = 0u64;
    let report = |_finished: bool| {
        let now = read.load(Ordering::Relaxed);
        if now > reported {
            progress.advance(now - reported);
            reported = now;
        }
    };
    with_helper(std::time::Duration::from_millis(50), report, f)
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
        let filesystems = LayerFilesystems::open(self)?;
        with_ticker(progress, &read, || {
            with_early_flush(self, &read, || {
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
        let usages = self.sync_and_measure(&filesystems, jobs, &extracted)?;
        let mut done = Vec::new();
        for ((i, e), usage) in extracted.into_iter().zip(usages) {
            self.commit_layer(lease, &jobs[i].spec, &e, usage)?;
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
        let filesystems = LayerFilesystems::open(self)?;
        for &i in missing {
            self.check_parent(jobs, i, missing)?;
            self.prepare_layer(lease, &jobs[i].spec)?;
            prepared.push(i);
            let e = with_ticker(progress, &read, || {
                with_early_flush(self, &read, || self.extract_layer(lease, &jobs[i], &read))
            })?;
            let extracted = [(i, e)];
            let usages = self.sync_and_measure(&filesystems, jobs, &extracted)?;
            let [(i, e)] = extracted;
            self.commit_layer(lease, &jobs[i].spec, &e, usages[0])?;
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
    /// asked, and verify its diff id. A layer to be stored that is a plain tar is kept as its
    /// tar-split instead (see [`Engine::extract_layer_split`]).
    fn extract_layer(
        &self,
        lease: &Lease,
        job: &LayerJob<'_>,
        read: &Arc<AtomicU64>,
    ) -> Result<Extracted> {
        let key = layer_key(&job.spec.chain);
        let target = self.snapshotter().apply_target(&key)?;
        if job.store_as.is_some() && self.is_plain_tar(job)? {
            return self.extract_layer_split(lease, job, read, &target);
        }
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
                // Made durable by the flush of the filesystem(s) before the layer is committed.
                let d = w.commit_unsynced(media_type, expected.as_ref())?;
                blob = Some((d, media_type.clone()));
            }
        }
        let stats = applied?;
        check_diff_id(&job.spec, &stats.diff_id)?;
        Ok(Extracted {
            size: stats.bytes_written,
            tar_size: stats.tar_size,
            blob,
            split: None,
        })
    }

    /// Whether a layer's bytes as shipped are a plain tar (not compressed).
    fn is_plain_tar(&self, job: &LayerJob<'_>) -> Result<bool> {
        let mut head = [0u8; 8];
        let got = super::load::read_full(&mut (job.source)()?, &mut head)
            .map_err(|e| EngineError::io("reading layer", "source", e))?;
        // Formats that are refused (xz, bzip2) take the ordinary path, which reports them.
        Ok(matches!(
            carrel_archive::detect(&head[..got]),
            Ok(carrel_archive::Compression::None)
        ))
    }

    /// Extract a plain-tar layer recording its tar-split, and store the split (small) rather
    /// than the tar (as big as the layer): `save` reassembles the exact tar from the layer's
    /// directory. The tar's digest is its diff id, so the layer as shipped is verified by the
    /// one hash of the extraction. A layer that cannot be reassembled from its directory (see
    /// [`carrel_archive::split`]) has its tar stored as before, read again from the source.
    fn extract_layer_split(
        &self,
        lease: &Lease,
        job: &LayerJob<'_>,
        read: &Arc<AtomicU64>,
        target: &carrel_storage::snapshot::ApplyTarget,
    ) -> Result<Extracted> {
        let Some((media_type, expected)) = &job.store_as else {
            return Err(EngineError::InvalidArgument(
                "a tar-split is only kept for a layer to be stored".into(),
            ));
        };
        let counted = Tee {
            inner: (job.source)()?,
            writer: Arc::new(Mutex::new(None)),
            read: read.clone(),
        };
        let opts = carrel_archive::ApplyOptions::new(target.format);
        let (stats, split) = match carrel_archive::apply_layer_split(&target.dir, counted, &opts) {
            Ok(done) => done,
            Err(e) => {
                // As on the ordinary path, a layer that does not match its digest is the more
                // precise report than the extraction error it causes.
                if let Some(exp) = expected {
                    let mut hashed = carrel_core::DigestReader::new((job.source)()?);
                    io::copy(&mut hashed, &mut io::sink())
                        .map_err(|e| EngineError::io("reading layer", "source", e))?;
                    let (found, size, _) = hashed.finish_now();
                    check_shipped(exp, &found, size)?;
                }
                return Err(e.into());
            }
        };
        if let Some(exp) = expected {
            check_shipped(exp, &stats.diff_id, stats.tar_size)?;
        }
        check_diff_id(&job.spec, &stats.diff_id)?;
        let (blob, split) = match split {
            Ok(split) => {
                let bytes = split
                    .to_bytes()
                    .map_err(|e| EngineError::io("encoding tar-split of", &target.dir, e))?;
                let mut w = self.content().writer(lease)?;
                w.write_all(&bytes)
                    .map_err(|e| EngineError::io("storing tar-split of", &target.dir, e))?;
                (None, Some(w.commit_unsynced(MEDIA_TYPE_TAR_SPLIT, None)?))
            }
            Err(why) => {
                tracing::debug!(layer = %job.spec.chain, why, "layer stored whole");
                let d = self.store_layer_blob(lease, job, media_type, expected.as_ref())?;
                (Some((d, media_type.clone())), None)
            }
        };
        Ok(Extracted {
            size: stats.bytes_written,
            tar_size: stats.tar_size,
            blob,
            split,
        })
    }

    /// Store a layer's bytes as shipped, read again from its source, as a blob (made durable
    /// with the layers).
    fn store_layer_blob(
        &self,
        lease: &Lease,
        job: &LayerJob<'_>,
        media_type: &str,
        expected: Option<&Expected>,
    ) -> Result<Digest> {
        let mut w = self.content().writer(lease)?;
        io::copy(&mut (job.source)()?, &mut w)
            .map_err(|e| EngineError::io("storing layer", "source", e))?;
        Ok(w.commit_unsynced(media_type, expected)?)
    }

    /// Flush the layer filesystems and, meanwhile, measure the disk usage of each extracted
    /// layer (metadata reads from the cache while the flush waits for the disk).
    fn sync_and_measure(
        &self,
        filesystems: &LayerFilesystems,
        jobs: &[LayerJob<'_>],
        extracted: &[(usize, Extracted)],
    ) -> Result<Vec<Usage>> {
        std::thread::scope(|scope| {
            let flush = scope.spawn(|| filesystems.sync());
            let usages: Result<Vec<Usage>> = extracted
                .iter()
                .map(|(i, _)| Ok(self.snapshotter().usage(&layer_key(&jobs[*i].spec.chain))?))
                .collect();
            let flushed = flush
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            flushed?;
            usages
        })
    }

    /// Commit an extracted layer under its chain id with its labels and measured usage.
    fn commit_layer(
        &self,
        lease: &Lease,
        spec: &LayerSpec,
        e: &Extracted,
        usage: Usage,
    ) -> Result<()> {
        let key = layer_key(&spec.chain);
        let mut labels = Labels::new();
        labels.insert(LABEL_DIFF_ID.into(), spec.diff_id.to_string());
        labels.insert(LABEL_SIZE.into(), e.size.to_string());
        labels.insert(LABEL_TAR_SIZE.into(), e.tar_size.to_string());
        if let Some((blob, media_type)) = &e.blob {
            labels.insert(LABEL_BLOB.into(), blob.to_string());
            labels.insert(LABEL_MEDIA_TYPE.into(), media_type.clone());
        }
        if let Some(split) = &e.split {
            labels.insert(LABEL_TAR_SPLIT.into(), split.to_string());
        }
        self.meta()
            .write(|tx| leases::add_resource(tx, lease.id(), "snapshot", &key))?;
        self.snapshotter()
            .commit_measured(&key, &key, labels, usage)?;
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
