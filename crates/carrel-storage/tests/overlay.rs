//! The conformance suite on the overlay2 driver, with real mounts.

use std::path::Path;
use std::sync::Arc;

use carrel_meta::Meta;
use carrel_storage::Snapshotter;
use carrel_storage::conformance::Env;
use carrel_storage::overlay::OverlaySnapshotter;

fn overlay(root: &Path, meta: Arc<Meta>) -> Box<dyn Snapshotter> {
    Box::new(OverlaySnapshotter::new(meta, root).unwrap())
}

fn env() -> Env {
    Env::new(overlay)
}

carrel_storage::snapshotter_conformance!(env());
