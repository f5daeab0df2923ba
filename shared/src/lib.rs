//! The walvault core shared by the shipper and the Lambda functions: WAL file
//! names and headers, the codec, the object key layout, the store and catalog
//! clients, and configuration. Binaries parse input, call in here, and map
//! the result.

pub mod catalog;
pub mod codec;
pub mod config;
pub mod keys;
pub mod store;
pub mod wal;
