//! Making extracted layers durable: one flush of each filesystem that received layer data,
//! started early in the background while the extraction is still writing.
//!
//! Extraction writes into the page cache; left alone, the kernel would only start writing it
//! back after its dirty thresholds (seconds later, or gigabytes), so the disk would sit idle
//! while the CPUs extract and the final flush would then write everything at once. A flusher
//! thread instead flushes the layer filesystems each time another [`FLUSH_STEP`] bytes of
//! layer data have been read, overlapping the writes with the extraction; the final flush
//! then has little left to write (measured in `bench/RESULTS.md`).
//!
//! Errors: a failed background flush is only logged. The final flush reports every write-back
//! error since the filesystems were opened for it ([`LayerFilesystems::open`], before the
//! extraction starts), because the kernel tracks the errors each open file has seen: the
//! flusher's own files having seen an error does not hide it from these.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::signal::with_helper;
use crate::{Engine, EngineError, Result};

/// How much more layer data must have been read before the flusher flushes again.
pub(super) const FLUSH_STEP: u64 = 16 << 20;
/// How often the flusher looks at the amount read.
const FLUSH_POLL: Duration = Duration::from_millis(100);

/// The filesystems that hold the layers and the content store, one open directory each.
pub(super) struct LayerFilesystems {
    dirs: Vec<(PathBuf, File)>,
}

impl LayerFilesystems {
    /// Open the layer home and the content store, keeping one directory per filesystem.
    pub(super) fn open(engine: &Engine) -> Result<LayerFilesystems> {
        let mut dirs: Vec<(PathBuf, File)> = Vec::new();
        let mut devices = Vec::new();
        for path in [engine.snapshotter().home(), engine.layout().content()] {
            let dir = File::open(&path).map_err(|e| EngineError::io("opening", &path, e))?;
            let dev = dir
                .metadata()
                .map_err(|e| EngineError::io("examining", &path, e))?
                .dev();
            if !devices.contains(&dev) {
                devices.push(dev);
                dirs.push((path, dir));
            }
        }
        Ok(LayerFilesystems { dirs })
    }

    /// Flush every filesystem, reporting the first failure (including write-back errors since
    /// these directories were opened).
    pub(super) fn sync(&self) -> Result<()> {
        for (path, dir) in &self.dirs {
            rustix::fs::syncfs(dir).map_err(|e| EngineError::io("syncing", path, e.into()))?;
        }
        Ok(())
    }
}

/// Run `f` (an extraction that counts the bytes it reads in `read`) while a background thread
/// flushes the layer filesystems each time another [`FLUSH_STEP`] bytes have been read. The
/// thread stops as soon as `f` returns; an extraction shorter than the step never flushes.
pub(super) fn with_early_flush<T: Send>(
    engine: &Engine,
    read: &AtomicU64,
    f: impl FnOnce() -> T + Send,
) -> T {
    let filesystems = match LayerFilesystems::open(engine) {
        Ok(fs) => fs,
        Err(e) => {
            tracing::debug!(%e, "no early flush of the layers");
            return f();
        }
    };
    let mut flushed_at = read.load(Ordering::Relaxed);
    let flush = |finished: bool| {
        let now = read.load(Ordering::Relaxed);
        if !finished && now.saturating_sub(flushed_at) >= FLUSH_STEP {
            flushed_at = now;
            if let Err(e) = filesystems.sync() {
                tracing::debug!(%e, "early flush of the layers failed");
            }
        }
    };
    with_helper(FLUSH_POLL, flush, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineOptions;
    use std::time::Instant;

    fn engine(root: &std::path::Path) -> Engine {
        Engine::open(&EngineOptions {
            root: root.to_path_buf(),
            storage_driver: Some("copy".into()),
        })
        .unwrap()
    }

    #[test]
    fn layer_home_and_content_store_on_one_filesystem_are_flushed_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let fs = LayerFilesystems::open(&engine).unwrap();
        assert_eq!(fs.dirs.len(), 1);
        fs.sync().unwrap();
    }

    #[test]
    fn a_short_extraction_does_not_wait_for_the_flusher() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let read = AtomicU64::new(0);
        let t = Instant::now();
        let out = with_early_flush(&engine, &read, || 42);
        assert_eq!(out, 42);
        assert!(t.elapsed() < FLUSH_POLL / 2, "took {:?}", t.elapsed());
    }

    #[test]
    fn a_long_extraction_is_flushed_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let read = AtomicU64::new(0);
        // A file written while "extracting" is on disk before the extraction ends: the
        // flusher wrote it back (its dirty pages are gone without any sync of ours).
        let path = engine.snapshotter().home().join("written-early");
        let dirty = || {
            std::fs::read_to_string("/proc/meminfo")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("Dirty:"))
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap())
                .unwrap()
        };
        with_early_flush(&engine, &read, || {
            std::fs::write(&path, vec![7u8; 32 << 20]).unwrap();
            let t = Instant::now();
            while dirty() > 16 << 10 && t.elapsed() < Duration::from_secs(20) {
                // (more "read" each time, so that the flusher keeps flushing whatever other
                // tests write meanwhile)
                read.fetch_add(FLUSH_STEP, Ordering::Relaxed);
                std::thread::sleep(FLUSH_POLL * 2);
            }
            assert!(dirty() <= 16 << 10, "still {} kB dirty", dirty());
        });
    }
}
