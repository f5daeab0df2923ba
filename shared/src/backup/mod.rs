//! Base backups: `walvault backup` streams PostgreSQL's base backup into
//! chunks that travel the WAL's road (staging, the compress function, R2
//! and B2, the catalog), then a descriptor; `restore` and `drill` bring one
//! back.

pub mod catalog;
pub mod descriptor;
pub mod drill;
pub mod name;
pub mod pg_tools;
pub mod restore;
pub mod take;
pub mod tar;
pub mod target;
