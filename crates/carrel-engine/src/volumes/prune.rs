//! `volume prune`: remove the unused volumes a [`PruneFilter`] selects.

use carrel_core::fs::FileLock;
use carrel_meta::volumes as rows;

use crate::volumes::PruneFilter;
use crate::{Engine, EngineError, Result};

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumePruneReport {
    /// Names of the removed volumes, in natural order.
    pub deleted: Vec<String>,
    /// Bytes their content used (measured just before each removal).
    pub reclaimed: u64,
}

impl Engine {
    /// `volume prune`: remove every `local` volume without options that no container
    /// references — only anonymous ones unless `filter.all` — and that passes the label filters.
    /// Each removal re-checks references and leases in its own transaction, so a volume that a
    /// container being created lists under its lease is never removed; such a volume (or one
    /// that fails to be removed) is skipped. One prune runs at a time per data root (`a prune
    /// operation is already running` otherwise, as Docker).
    pub fn volume_prune(&self, filter: &PruneFilter) -> Result<VolumePruneReport> {
        let path = self.layout().locks().join("volume-prune.lock");
        let Some(_running) =
            FileLock::try_lock(&path).map_err(|e| EngineError::io("locking", &path, e))?
        else {
            return Err(EngineError::Conflict(
                "a prune operation is already running".into(),
            ));
        };
        let refs = self.meta().read(rows::ref_counts)?;
        let mut report = VolumePruneReport::default();
        for v in self.volume_list(&Default::default())? {
            if !filter.matches(&v, refs.get(&v.name).copied().unwrap_or(0)) {
                continue;
            }
            let size = crate::volumes::content_size(&v.mountpoint).unwrap_or(0);
            match self.volume_remove(&v.name, false) {
                Ok(()) => {
                    report.deleted.push(v.name);
                    report.reclaimed += size;
                }
                Err(e) => tracing::warn!(volume = %v.name, %e, "not pruned"),
            }
        }
        Ok(report)
    }
}
