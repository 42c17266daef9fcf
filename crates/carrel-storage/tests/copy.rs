//! The conformance suite on the copy driver, with real mounts; copy-specific checks.

use std::path::Path;
use std::sync::Arc;

use carrel_meta::Meta;
use carrel_storage::Snapshotter;
use carrel_storage::conformance::Env;
use carrel_storage::copy::CopySnapshotter;

fn copy(root: &Path, meta: Arc<Meta>) -> Box<dyn Snapshotter> {
    Box::new(CopySnapshotter::new(meta, root).unwrap())
}

fn env() -> Env {
    Env::new(copy)
}

carrel_storage::snapshotter_conformance!(env());
