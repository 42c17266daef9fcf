//! The content store: blobs addressed by their sha256 digest.
//!
//! Layout under `<root>/content`:
//! - `blobs/sha256/<hex>`: committed blobs, read-only (mode 0444), never modified in place;
//! - `ingest/<lease>-<random>`: writes in flight. A file here whose lease is not alive is the
//!   remains of an interrupted write and is deleted by [`ContentStore::cleanup_ingest`].
//!
//! A write goes temp file → fsync → verify digest and size → record the row (under the writer's
//! lease) → rename into place → fsync the directory (or, for layers, one `syncfs` by the caller
//! before anything but the lease refers to the blob: [`BlobWriter::commit_unsynced`]). Removal
//! deletes the row first, then the file, so a blob file without a row is always garbage; a row
//! whose file is not there yet is not reported by [`ContentStore::contains`].

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use carrel_core::{Digest, DigestWriter};
use carrel_meta::blobs::{self, BlobRow};
use carrel_meta::{Lease, Meta};

use crate::{Result, StorageError};

/// The content-addressed blob store of a data root.
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
    meta: Arc<Meta>,
}

/// What a blob is expected to be, when the caller knows (from a manifest or a file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The digest the content must hash to.
    pub digest: Digest,
    /// The size it must have, when known.
    pub size: Option<u64>,
}

impl ContentStore {
    /// Open (creating if needed) the content store at `dir` (`<root>/content`).
    pub fn open(dir: &Path, meta: Arc<Meta>) -> Result<ContentStore> {
        for (d, mode) in [
            (dir.to_path_buf(), 0o700),
            (dir.join("blobs"), 0o700),
            (dir.join("blobs/sha256"), 0o700),
            (dir.join("ingest"), 0o700),
        ] {
            if !d.is_dir() {
                carrel_core::fs::create_dir_mode(&d, mode)
                    .map_err(|e| StorageError::io("creating", &d, e))?;
            }
        }
        Ok(ContentStore {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// The file holding a committed blob (it may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a blob is committed (recorded and present on disk).
    pub fn contains(&self, digest: &Digest) -> Result<bool> {
        Ok(
            self.meta.read(|c| blobs::get(c, digest))?.is_some()
                && self.blob_path(digest).is_file(),
        )
    }

    /// The recorded facts about a blob.
    pub fn info(&self, digest: &Digest) -> Result<BlobRow> {
        self.meta
            .read(|c| blobs::get(c, digest))?
            .ok_or_else(|| StorageError::BlobNotFound(digest.clone()))
    }

    /// Open a committed blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StorageError::BlobNotFound(digest.clone()),
            _ => StorageError::io("opening blob", path, e),
        })
    }

    /// Read a small committed blob into memory, refusing blobs larger than `limit` bytes.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let f = self.open_blob(digest)?;
        let mut out = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| StorageError::io("reading blob", self.blob_path(digest), e))?;
        if out.len() as u64 > limit {
            return Err(StorageError::SizeMismatch {
                what: format!("blob {digest} (limit)"),
                expected: limit,
                found: out.len() as u64,
            });
        }
        Ok(out)
    }

    /// Start writing a blob under `lease` (the lease protects it until something refers to it).
    pub fn writer(&self, lease: &Lease) -> Result<BlobWriter> {
        let path = self.dir.join("ingest").join(format!(
            "{}-{}",
            lease.id(),
            &carrel_core::id::random_id()[..16]
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StorageError::io("creating", &path, e))?;
        Ok(BlobWriter {
            inner: Some(DigestWriter::new(BufWriter::with_capacity(1 << 20, file))),
            path,
            store: self.clone(),
            lease_id: lease.id().to_string(),
        })
    }

    /// Store a small in-memory blob under `lease`, verifying it against `expected` if given.
    pub fn write_bytes(
        &self,
        lease: &Lease,
        data: &[u8],
        media_type: &str,
        expected: Option<&Expected>,
    ) -> Result<Digest> {
        let digest = Digest::of_bytes(data);
        if let Some(exp) = expected {
            verify(&exp.digest.to_string(), exp, &digest, data.len() as u64)?;
        }
        if self.contains(&digest)? {
            self.meta.write(|tx| {
                carrel_meta::leases::add_resource(tx, lease.id(), "blob", &digest.to_string())
            })?;
            return Ok(digest);
        }
        let mut w = self.writer(lease)?;
        w.write_all(data)
            .map_err(|e| StorageError::io("writing", w.path.clone(), e))?;
        w.commit(media_type, expected)
    }

    /// Forget a blob: its row first, then its file.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        self.meta.write(|tx| blobs::delete(tx, digest))?;
        self.remove_file(digest)
    }

    /// Remove the file of a blob whose row is already gone (a missing file is fine).
    pub fn remove_file(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("removing blob", path, e)),
        }
    }

    /// Every recorded blob.
    pub fn list(&self) -> Result<Vec<BlobRow>> {
        Ok(self.meta.read(blobs::list)?)
    }

    /// Blob files on disk that have no row, and rows without a file (for `system check`).
    pub fn check(&self) -> Result<ContentCheck> {
        let dir = self.dir.join("blobs/sha256");
        let mut on_disk = std::collections::BTreeSet::new();
        for e in std::fs::read_dir(&dir).map_err(|e| StorageError::io("listing", &dir, e))? {
            let e = e.map_err(|e| StorageError::io("listing", &dir, e))?;
            on_disk.insert(e.file_name().to_string_lossy().into_owned());
        }
        let rows = self.list()?;
        let mut report = ContentCheck::default();
        for r in &rows {
            if !on_disk.remove(r.digest.hex()) {
                report.missing_files.push(r.digest.clone());
            }
        }
        report.unrecorded_files = on_disk.into_iter().map(|n| dir.join(n)).collect();
        Ok(report)
    }

    /// Remove ingest files whose lease is not in `live_leases` (interrupted writes). Returns what
    /// was (or, with `dry_run`, would be) removed.
    pub fn cleanup_ingest(
        &self,
        live_leases: &std::collections::HashSet<String>,
        dry_run: bool,
    ) -> Result<Vec<PathBuf>> {
        let dir = self.dir.join("ingest");
        let mut removed = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| StorageError::io("listing", &dir, e))? {
            let e = e.map_err(|e| StorageError::io("listing", &dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let lease = name.split('-').next().unwrap_or("");
            if live_leases.contains(lease) {
                continue;
            }
            if !dry_run {
                carrel_core::fs::remove_all(&e.path())
                    .map_err(|err| StorageError::io("removing", e.path(), err))?;
            }
            removed.push(e.path());
        }
        Ok(removed)
    }

    /// The directory for in-flight writes (spool files of `load` live here too).
    pub fn ingest_dir(&self) -> PathBuf {
        self.dir.join("ingest")
    }
}

/// Inconsistencies between the `blobs` table and the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentCheck {
    /// Recorded blobs whose file is gone.
    pub missing_files: Vec<Digest>,
    /// Files with no record.
    pub unrecorded_files: Vec<PathBuf>,
}

fn verify(what: &str, expected: &Expected, found: &Digest, size: u64) -> Result<()> {
    if let Some(exp_size) = expected.size
        && exp_size != size
    {
        return Err(StorageError::SizeMismatch {
            what: what.to_string(),
            expected: exp_size,
            found: size,
        });
    }
    if &expected.digest != found {
        return Err(StorageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.digest.clone(),
            found: found.clone(),
        });
    }
    Ok(())
}

/// A blob being written. A failed or abandoned write deletes its temp file.
pub struct BlobWriter {
    inner: Option<DigestWriter<BufWriter<File>>>,
    path: PathBuf,
    store: ContentStore,
    lease_id: String,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.as_ref().map(|w| w.count()).unwrap_or(0)
    }

    /// Finish the blob: fsync, verify against `expected`, make it read-only, rename it into
    /// place, fsync the directory and record it (protected by the writer's lease).
    pub fn commit(self, media_type: &str, expected: Option<&Expected>) -> Result<Digest> {
        self.finish(media_type, expected, true)
    }

    /// Like [`BlobWriter::commit`] but without making the blob durable (no fsync of the file or
    /// of its directory), for a caller that flushes the whole filesystem (`syncfs`) before it
    /// records anything that refers to the blob, as the extraction of layers does for the
    /// layers and their blobs together: until then only the writer's lease refers to the blob,
    /// so a crash in between leaves a dead lease, whose blobs recovery removes.
    pub fn commit_unsynced(self, media_type: &str, expected: Option<&Expected>) -> Result<Digest> {
        self.finish(media_type, expected, false)
    }

    fn finish(
        mut self,
        media_type: &str,
        expected: Option<&Expected>,
        durable: bool,
    ) -> Result<Digest> {
        let Some(w) = self.inner.take() else {
            return Err(StorageError::io(
                "committing",
                &self.path,
                io::Error::other("writer already finished"),
            ));
        };
        let (digest, size, buf) = w.finish();
        let file = buf
            .into_inner()
            .map_err(|e| StorageError::io("writing", &self.path, e.into_error()))?;
        if durable {
            file.sync_all()
                .map_err(|e| StorageError::io("syncing", &self.path, e))?;
        }
        if let Some(exp) = expected {
            verify(&format!("blob {}", exp.digest), exp, &digest, size)?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o444))
            .map_err(|e| StorageError::io("protecting", &self.path, e))?;
        drop(file);
        // The row (and the lease's protection) first, then the file: a blob file on disk without
        // a row is always garbage, so collectors may remove such files at any time.
        let row = BlobRow {
            digest: digest.clone(),
            size,
            media_type: media_type.to_string(),
            created: carrel_meta::now_nanos(),
        };
        self.store.meta.write(|tx| {
            blobs::insert(tx, &row)?;
            carrel_meta::leases::add_resource(tx, &self.lease_id, "blob", &digest.to_string())
        })?;
        let dest = self.store.blob_path(&digest);
        if !durable && dest.exists() {
            // The same bytes are in place already (written by another process, durable or
            // covered by the flush that its writer and this one's caller both make before
            // anything refers to the blob): keep them rather than replace a blob that another
            // image may already refer to with a copy that is not on disk yet.
            return Ok(digest);
        }
        std::fs::rename(&self.path, &dest).map_err(|e| StorageError::io("committing", &dest, e))?;
        if durable {
            let dir = self.store.dir.join("blobs/sha256");
            carrel_core::fs::fsync_dir(&dir).map_err(|e| StorageError::io("syncing", &dir, e))?;
        }
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("blob writer finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful commit the temp name no longer exists; otherwise it is garbage.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, ContentStore, Arc<Meta>) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(Meta::open(&dir.path().join("db")).unwrap());
        std::fs::create_dir(dir.path().join("leases")).unwrap();
        let store = ContentStore::open(&dir.path().join("content"), meta.clone()).unwrap();
        (dir, store, meta)
    }

    #[test]
    fn write_verify_and_read_back() {
        let (dir, store, meta) = setup();
        let lease = Lease::acquire(&meta, &dir.path().join("leases"), "t").unwrap();
        let d = store
            .write_bytes(&lease, b"hello", "text/plain", None)
            .unwrap();
        assert_eq!(d, Digest::of_bytes(b"hello"));
        assert!(store.contains(&d).unwrap());
        assert_eq!(store.read_blob(&d, 100).unwrap(), b"hello");
        let mode = std::fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert!(store.read_blob(&d, 2).is_err());
        store.delete(&d).unwrap();
        assert!(!store.contains(&d).unwrap());
        assert!(matches!(
            store.open_blob(&d),
            Err(StorageError::BlobNotFound(_))
        ));
    }

    #[test]
    fn mismatches_name_expected_and_found() {
        let (dir, store, meta) = setup();
        let lease = Lease::acquire(&meta, &dir.path().join("leases"), "t").unwrap();
        let exp = Expected {
            digest: Digest::of_bytes(b"other"),
            size: None,
        };
        let err = store
            .write_bytes(&lease, b"hello", "x", Some(&exp))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&exp.digest.to_string()), "{err}");
        assert!(
            err.contains(&Digest::of_bytes(b"hello").to_string()),
            "{err}"
        );
        let exp = Expected {
            digest: Digest::of_bytes(b"hello"),
            size: Some(4),
        };
        let mut w = store.writer(&lease).unwrap();
        w.write_all(b"hello").unwrap();
        let err = w.commit("x", Some(&exp)).unwrap_err().to_string();
        assert!(err.contains("expected 4 bytes, found 5"), "{err}");
        // Nothing half-written remains.
        assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn interrupted_ingests_are_cleaned() {
        let (dir, store, meta) = setup();
        let lease = Lease::acquire(&meta, &dir.path().join("leases"), "t").unwrap();
        let mut w = store.writer(&lease).unwrap();
        w.write_all(b"partial").unwrap();
        std::mem::forget(w); // a crash: the temp file stays
        let live = std::collections::HashSet::from([lease.id().to_string()]);
        assert!(store.cleanup_ingest(&live, false).unwrap().is_empty());
        let removed = store.cleanup_ingest(&Default::default(), false).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    }
}
