//! The data root's layout on disk (mirrors Docker's, see DESIGN.md "On disk").

use std::path::{Path, PathBuf};

use crate::{EngineError, Result};

/// Paths inside a data root. All are trusted: they are built from the root and fixed names only.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the data root at `root`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// The data root itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The metadata database.
    pub fn db(&self) -> PathBuf {
        self.root.join("carrel.db")
    }

    /// The content store.
    pub fn content(&self) -> PathBuf {
        self.root.join("content")
    }

    /// Lease lock files (in-flight work of live processes).
    pub fn leases(&self) -> PathBuf {
        self.root.join("leases")
    }

    /// Per-object lock files (e.g. one per layer being extracted).
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Container directories (bundle, logs, monitor files).
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Local volumes (`<root>/volumes/<name>/_data`).
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// Create the root and its fixed directories with Docker-like modes (root 0710, private
    /// directories 0700). The directories that hold one directory per container or volume are
    /// marked the top of a directory hierarchy where the filesystem has the flag, like the
    /// storage drivers' homes (see [`carrel_core::fs::mark_top_directory`]).
    pub fn create(&self) -> Result<()> {
        let dirs: [(PathBuf, u32, bool); 6] = [
            (self.root.clone(), 0o710, false),
            (self.leases(), 0o700, false),
            (self.locks(), 0o700, false),
            (self.content(), 0o700, false),
            (self.containers(), 0o710, true),
            (self.volumes(), 0o701, true),
        ];
        for (dir, mode, spread) in dirs {
            if !dir.is_dir() {
                carrel_core::fs::create_dir_mode(&dir, mode)
                    .map_err(|e| EngineError::io("creating data directory", &dir, e))?;
                if spread && let Err(e) = carrel_core::fs::mark_top_directory(&dir) {
                    tracing::debug!(dir = %dir.display(), %e, "could not mark a data directory");
                }
            }
        }
        Ok(())
    }
}
