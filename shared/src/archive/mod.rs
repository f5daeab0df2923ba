//! The shipper's commands, one module each (as pgBackRest lays out
//! `archive/push` and `archive/get`), and the local spool they share.

pub(crate) mod download;
pub mod fetch;
pub mod prefetch;
pub mod push;
pub mod spool;
