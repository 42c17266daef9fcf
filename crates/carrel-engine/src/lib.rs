//! carrel-engine: one handle on a data root; every user-visible operation is a method here.
//!
//! The faces (the `carrel` CLI, later `carrel serve`) parse, call an [`Engine`] method and
//! format. Nothing here prints: long operations report through a [`Progress`] passed in.
//!
//! Opening an engine runs recovery: work left half-done by a crashed process (found through its
//! dead lease) is rolled back and garbage is collected, so nothing half-done is ever visible.

pub mod containers;
pub mod error;
pub mod events;
pub mod gc;
pub mod images;
pub mod info;
pub mod progress;
pub mod recovery;
pub mod root;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use carrel_meta::{Lease, Meta};
use carrel_storage::Snapshotter;
use carrel_storage::content::ContentStore;

pub use error::{EngineError, Result};
pub use progress::{NoProgress, Progress};
pub use root::Layout;

/// The default data root.
pub const DEFAULT_ROOT: &str = "/var/lib/carrel";

/// The storage drivers carrel has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// Kernel overlayfs (`overlay2` in user-facing output, like Docker).
    Overlay,
    /// Full copies with reflinks where the filesystem has them (like Docker's `vfs`).
    Copy,
}

impl DriverKind {
    /// Parse a user-given driver name (`overlay2`, `overlay`, `copy`, `vfs`).
    pub fn parse(name: &str) -> Result<DriverKind> {
        match name {
            "overlay2" | "overlay" | "overlayfs" => Ok(DriverKind::Overlay),
            "copy" | "vfs" => Ok(DriverKind::Copy),
            other => Err(EngineError::InvalidArgument(format!(
                "unknown storage driver {other:?}: carrel has overlay2 (kernel overlayfs) and copy"
            ))),
        }
    }

    /// The name shown to users and stored in the data root.
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Overlay => "overlay2",
            DriverKind::Copy => "copy",
        }
    }
}

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The data root.
    pub root: PathBuf,
    /// The storage driver asked for (`None`: the one the root already uses, else the best one the
    /// host supports).
    pub storage_driver: Option<String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            root: PathBuf::from(DEFAULT_ROOT),
            storage_driver: None,
        }
    }
}

/// A handle on one data root.
pub struct Engine {
    layout: Layout,
    meta: Arc<Meta>,
    content: ContentStore,
    snapshotter: Arc<dyn Snapshotter>,
    driver: DriverKind,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("root", &self.layout.root())
            .field("driver", &self.driver)
            .finish()
    }
}

const DRIVER_SETTING: &str = "storage-driver";

impl Engine {
    /// Open (creating if needed) the data root, pick its storage driver and run recovery.
    pub fn open(opts: &EngineOptions) -> Result<Engine> {
        let engine = Engine::open_without_recovery(opts)?;
        engine.recover()?;
        tracing::debug!(root = %engine.layout.root().display(), "engine open");
        Ok(engine)
    }

    /// Open the data root without recovering the work of dead processes (which [`Engine::open`]
    /// does): for a container's monitor, which only records its container's state and must not
    /// fail, nor be slowed, by a repair of the whole store while many containers start.
    pub fn open_without_recovery(opts: &EngineOptions) -> Result<Engine> {
        if !rustix::process::geteuid().is_root() {
            return Err(EngineError::Permission(format!(
                "carrel must run as root to use the data root {} (it mounts filesystems and keeps files of every user): run it with sudo",
                opts.root.display()
            )));
        }
        let root = absolute(&opts.root)?;
        let layout = Layout::new(&root);
        layout.create()?;
        let meta = {
            // Opening the database may create it, switch it to WAL mode and migrate it, and
            // SQLite answers "database is locked" instead of waiting when several processes do
            // that at once (e.g. concurrent first commands on a new root): opens take turns.
            let lock_path = layout.locks().join("open");
            let _lock = carrel_core::fs::FileLock::lock(&lock_path)
                .map_err(|e| EngineError::io("locking", &lock_path, e))?;
            Arc::new(Meta::open(&layout.db())?)
        };
        let content = ContentStore::open(&layout.content(), meta.clone())?;
        let driver = choose_driver(&meta, opts.storage_driver.as_deref(), &layout)?;
        let snapshotter = make_snapshotter(driver, &layout, meta.clone())?;
        let engine = Engine {
            layout,
            meta,
            content,
            snapshotter,
            driver,
        };
        Ok(engine)
    }

    /// The data root's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The metadata database.
    pub fn meta(&self) -> &Arc<Meta> {
        &self.meta
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The storage driver.
    pub fn snapshotter(&self) -> &Arc<dyn Snapshotter> {
        &self.snapshotter
    }

    /// Which storage driver this root uses.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Take a lease for a piece of multi-step work.
    pub fn lease(&self, purpose: &str) -> Result<Lease> {
        Ok(Lease::acquire(&self.meta, &self.layout.leases(), purpose)?)
    }

    /// End a piece of leased work: release the lease and, with `collect`, remove what it stored
    /// that nothing references. Failures here are logged, not returned: the work's own outcome
    /// is what the caller reports (a full disk must not turn "no space left" into "database is
    /// full"), and a lease that could not be released dies with this process, so the next carrel
    /// command finishes the cleanup.
    pub(crate) fn end_lease(&self, lease: Lease, collect: bool) {
        let id = lease.id().to_string();
        if let Err(e) = lease.release(&self.meta) {
            tracing::warn!(lease = id, %e, "could not release the lease; the next command cleans up");
            return;
        }
        if collect && let Err(e) = self.collect_garbage() {
            tracing::warn!(%e, "could not collect garbage; the next command cleans up");
        }
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(carrel_core::fs::clean_absolute(p))
    } else {
        let cwd = std::env::current_dir().map_err(|e| EngineError::io("resolving", p, e))?;
        Ok(carrel_core::fs::clean_absolute(&cwd.join(p)))
    }
}

fn choose_driver(meta: &Meta, requested: Option<&str>, layout: &Layout) -> Result<DriverKind> {
    let requested = requested.map(DriverKind::parse).transpose()?;
    let stored = meta
        .read(|c| carrel_meta::settings::get(c, DRIVER_SETTING))?
        .map(|s| DriverKind::parse(&s))
        .transpose()?;
    let chosen = match (requested, stored) {
        (Some(r), Some(s)) if r != s && meta.read(carrel_meta::snapshots::any)? => {
            return Err(EngineError::Precondition(format!(
                "data root {} holds layers of storage driver {}; it cannot be used with {} (remove its images and containers first, or use another --root)",
                layout.root().display(),
                s.name(),
                r.name()
            )));
        }
        (Some(r), _) => r,
        (None, Some(s)) => s,
        (None, None) => {
            if carrel_mount::features::Features::cached(layout.root()).overlay {
                DriverKind::Overlay
            } else {
                tracing::warn!("kernel overlayfs is not available; using the copy storage driver");
                DriverKind::Copy
            }
        }
    };
    if stored != Some(chosen) {
        meta.write(|tx| carrel_meta::settings::set(tx, DRIVER_SETTING, chosen.name()))?;
    }
    Ok(chosen)
}

fn make_snapshotter(
    driver: DriverKind,
    layout: &Layout,
    meta: Arc<Meta>,
) -> Result<Arc<dyn Snapshotter>> {
    Ok(match driver {
        DriverKind::Overlay => Arc::new(carrel_storage::overlay::OverlaySnapshotter::new(
            meta,
            layout.root(),
        )?),
        DriverKind::Copy => Arc::new(carrel_storage::copy::CopySnapshotter::new(
            meta,
            layout.root(),
        )?),
    })
}
