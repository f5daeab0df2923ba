//! The scheduled re-drive: staging objects older than a threshold were
//! missed (their event lost) or are stuck `partial` (a provider was
//! down); each is processed again, until the budget runs out.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Outcome, ReplicateError, Replicator};
use crate::events::ObjectRef;
use crate::keys::{parse_staging_key, staging_prefix};
use crate::retry::Budget;
use crate::store::list_all;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    pub scanned: u64,
    pub too_young: u64,
    pub replicated: u64,
    /// Nothing to do, or recorded as corrupt or conflicting.
    pub settled: u64,
    pub failed: u64,
    pub stopped_at_deadline: bool,
}

impl Replicator {
    /// Processes this cluster's staging objects older than `older_than`.
    pub async fn redrive(
        &self,
        older_than: Duration,
        budget: &Budget,
    ) -> Result<RedriveReport, ReplicateError> {
        let prefix = staging_prefix(&self.cluster);
        let staging = &self.backends.staging;
        let objects = budget
            .run(format!("staging list {prefix}"), || {
                list_all(staging.as_ref(), &prefix)
            })
            .await
            .map_err(|source| ReplicateError::Staging {
                file: prefix.clone(),
                source,
            })?;
        let mut report = RedriveReport::default();
        let now = SystemTime::now();
        for object in objects {
            if parse_staging_key(&object.key).is_err() {
                continue;
            }
            report.scanned += 1;
            let young = object
                .last_modified
                .and_then(|t| now.duration_since(t).ok())
                .is_none_or(|age| age < older_than);
            if young {
                report.too_young += 1;
                continue;
            }
            if budget.is_spent() {
                report.stopped_at_deadline = true;
                break;
            }
            let reference = ObjectRef {
                bucket: self.staging_bucket.clone(),
                key: object.key,
            };
            match self.process(&reference, budget).await {
                Ok(Outcome::Replicated) => report.replicated += 1,
                Ok(_) => report.settled += 1,
                Err(_) => report.failed += 1,
            }
        }
        Ok(report)
    }
}
