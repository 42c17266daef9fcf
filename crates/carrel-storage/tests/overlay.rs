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

/// The whole suite again with overlays mounted by classic `mount(2)` (kernels without
/// `lowerdir+`): the `l/` short names keep a 100-layer chain within one page of options.
#[test]
fn suite_with_classic_mount_fallback() {
    let env = Env {
        mounter: Arc::new(carrel_mount::KernelMounter::classic_overlay()),
        chain_depth: 100,
        ..Env::new(overlay)
    };
    carrel_storage::conformance::run_all(&env);
}

/// Too many layers for classic option data is a clear error, never a truncated lowerdir.
#[test]
fn classic_fallback_refuses_what_does_not_fit() {
    use carrel_mount::{Mount, MountError, OverlayMount, ShortLowers};
    let mounter = carrel_mount::KernelMounter::classic_overlay();
    let dir = tempfile::tempdir().unwrap();
    let lower: Vec<_> = (0..200)
        .map(|i| dir.path().join(format!("layer{i}")))
        .collect();
    let short = ShortLowers {
        dir: dir.path().to_path_buf(),
        lower: (0..200)
            .map(|_| format!("l/{}", "X".repeat(26)).into())
            .collect(),
    };
    let m = Mount::Overlay(OverlayMount {
        volatile: false,
        lower,
        upper: None,
        work: None,
        short: Some(short),
    });
    let err = carrel_mount::Mounter::mount(&mounter, &m, dir.path()).unwrap_err();
    assert!(
        matches!(err, MountError::DataTooLong { layers: 200, .. }),
        "{err}"
    );
    let msg = carrel_storage::StorageError::from(err).to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}
