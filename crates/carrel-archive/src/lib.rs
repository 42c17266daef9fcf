//! carrel-archive: layer tars in and out.

/// How whiteouts in a layer diff are written when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// The target is an overlay upper layer: `.wh.<name>` becomes a 0/0 character device and
    /// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
    Overlay,
    /// The target holds the full tree: `.wh.<name>` deletes the path and `.wh..wh..opq` deletes
    /// what lower layers put in its directory.
    Naive,
}
