//! carrel-core: the vocabulary every other carrel crate shares.
//!
//! - [`ErrorKind`]: the small set of error kinds every library error maps to (DESIGN.md principle 4).
//! - [`Digest`]: validated `sha256:<hex>` content addresses and hashing helpers.
//! - [`id`]: random object ids, Docker's short ids and chain ids.
//! - [`units`]: Docker's human-readable sizes and durations.
//! - [`fs`]: root-anchored path resolution (openat2), atomic writes, locks and clones.

pub mod digest;
pub mod error;
pub mod fs;
pub mod id;
pub mod reference;
pub mod units;

pub use digest::{Digest, DigestReader, DigestWriter, Sha256};
pub use error::{ErrorKind, HasKind};
