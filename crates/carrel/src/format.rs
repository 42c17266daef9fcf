//! Output formatting (in progress).
pub struct Placeholder;
