//! The archive's state in a handful of catalog requests: what the person
//! on call asks first (can I recover, and to when; is archiving keeping up;
//! do both providers hold everything; what does it cost).
//!
//! - [`summary`]: the figures, folded from records (pure).
//! - [`keep`]: the summary item the functions keep up to date.
//! - [`view`]: what `walvault status` reads: the item and the newer records.
//! - [`drill`]: the last recovery drill's report.
//! - [`health`]: thresholds, checks and the monitoring-plugin exit status.

pub mod drill;
pub mod health;
pub mod keep;
pub mod summary;
pub mod view;

use crate::catalog::CatalogError;
use crate::retry::TimedOut;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The summary item or a position in it cannot be read: the retention
    /// function's next rebuild replaces it.
    #[error("catalog summary: {0}")]
    Malformed(String),
    /// Other writers kept changing the summary item: the next run goes on.
    #[error("catalog summary: changed by another writer at every attempt")]
    Contended,
}

impl From<TimedOut> for StatusError {
    fn from(timed_out: TimedOut) -> Self {
        StatusError::Catalog(CatalogError::TimedOut(timed_out))
    }
}
