//! The walvault core shared by the shipper and the Lambda functions.
//! Binaries parse input, call in here, and map the result.
//!
//! - Domain: `wal` (file names, segment sizes, page headers), `codec`
//!   (zstd, sha256), `keys` (object layout and metadata), `clock`.
//! - Configuration and wiring: `config` (validated settings), `provider`
//!   (R2 and B2 and their quirks), `secrets`, `backends` (the one place that
//!   builds clients), `contract` (names shared with the CDK app).
//! - I/O behind traits: `store` (object stores) and `catalog` (DynamoDB),
//!   each with its real client, an in-memory twin and a fault wrapper
//!   (`fault`); `retry` (the one retry loop, with budgets); `error`.
//! - Commands: `archive/` (`push`, `fetch`, `prefetch`, `spool`),
//!   `replicate/` (the compress function, step by step, and its event
//!   dispatch), `retention/` (`plan`, pure; `sweep`), `verify/` (every
//!   replica against its record, and repair), with `identity`,
//!   `events`, `metrics` and `logging`; `testing` holds fixtures for tests of the logic.

pub mod archive;
pub mod backends;
pub mod backup;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod config;
pub mod contract;
pub mod error;
pub mod events;
pub mod fault;
pub mod file;
pub mod identity;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod provider;
pub mod replicate;
pub mod retention;
pub mod retry;
pub mod seal;
pub mod secrets;
pub mod status;
pub mod store;
pub mod testing;
pub mod verify;
pub mod wal;
