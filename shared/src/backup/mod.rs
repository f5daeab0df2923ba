//! Base backups: `walvault backup` streams PostgreSQL's base backup into
//! chunks that travel the WAL's road (staging, the compress function, R2
//! and B2, the catalog), then a descriptor; `restore` and `drill` bring one
//! back.

/// The largest base-backup chunk `WALVAULT_BACKUP_CHUNK_MIB` allows.
pub const MAX_CHUNK_MIB: u64 = 64;
pub const MAX_CHUNK_SIZE: u64 = MAX_CHUNK_MIB << 20;

pub mod catalog;
pub mod descriptor;
pub mod drill;
pub mod name;
pub mod pg_tools;
pub mod restore;
pub mod take;
pub mod tar;
pub mod target;
