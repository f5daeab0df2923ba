//! The shipper's commands, one module each (as pgBackRest lays out
//! `archive/push` and `archive/get`), and the local spool they share.

pub mod fetch;
pub mod prefetch;
pub mod push;
pub mod spool;

/// Metadata on archived (compressed) objects: the raw size, so a copy can
/// be verified without the catalog. `sha256` (raw) is on every object.
pub const META_RAW_SIZE: &str = "raw-size";
