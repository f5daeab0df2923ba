//! The walvault core shared by the shipper and the Lambda functions: WAL file
//! names and headers, the codec, the object key layout, the store and catalog
//! clients, and configuration. Binaries parse input, call in here, and map
//! the result.

pub mod archive;
pub mod catalog;
pub mod codec;
pub mod compress;
pub mod config;
pub mod events;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod replicate;
pub mod retention;
pub mod retry;
pub mod secrets;
pub mod store;
pub mod wal;
