//! carrel-engine (in progress).
