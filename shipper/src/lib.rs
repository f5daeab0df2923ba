//! The `walvault` command's library part: its exit codes, which tests and
//! scripts can name instead of repeating numbers.

pub mod exit;
