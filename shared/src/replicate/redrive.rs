//! The scheduled re-drive: staging objects older than a threshold were
//! missed (their event lost) or are stuck `partial` (a provider was
//! down); each is processed again, until the budget runs out. It is
//! also the one place that sees the whole staging backlog, so it reports
//! how many files still wait and for how long: no rule expires staging
//! objects, and this age is what calls a human when replication fails.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Outcome, ReplicateError, Replicator};
use crate::clock::unix_millis;
use crate::events::ObjectRef;
use crate::keys::{parse_staging_key, staging_prefix, ClusterName};
use crate::metrics::{Metric, MetricRecord};
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
    /// Files still waiting for replication when the run ended: too young,
    /// failed, or not reached. Corrupt and conflicting objects are not
    /// counted: they are recorded, alarmed, and left for a human.
    pub backlog: u64,
    /// The age of the oldest of them, in milliseconds (0 when none waits),
    /// at the listing.
    pub oldest_backlog_age_ms: u64,
    /// When staging was listed (Unix milliseconds): what the ages count from.
    pub listed_at_ms: u64,
}

impl RedriveReport {
    fn still_waiting(&mut self, age: Option<Duration>) {
        self.backlog += 1;
        let age_ms = age.map_or(0, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX));
        self.oldest_backlog_age_ms = self.oldest_backlog_age_ms.max(age_ms);
    }

    /// The EMF line of this run: the backlog and its age, emitted on every
    /// run (zeros included) so that the alarm sees a steady series.
    pub fn metrics(&self, cluster: &ClusterName) -> MetricRecord {
        let mut record = MetricRecord::new(cluster.as_str());
        record
            .add(Metric::StagingBacklog, self.backlog as f64)
            .add(Metric::OldestStagingAge, self.oldest_backlog_age_ms as f64)
            .property("redrive", serde_json::to_value(self).unwrap_or_default());
        record
    }
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
        let now = SystemTime::now();
        let mut report = RedriveReport {
            listed_at_ms: unix_millis(now),
            ..RedriveReport::default()
        };
        for object in objects {
            if parse_staging_key(&object.key).is_err() {
                continue;
            }
            report.scanned += 1;
            let age = object
                .last_modified
                .and_then(|t| now.duration_since(t).ok());
            if age.is_none_or(|age| age < older_than) {
                report.too_young += 1;
                report.still_waiting(age);
                continue;
            }
            if budget.is_spent() {
                report.stopped_at_deadline = true;
                report.still_waiting(age);
                continue;
            }
            let reference = ObjectRef {
                bucket: self.staging_bucket.clone(),
                key: object.key,
            };
            match self.process(&reference, budget).await {
                Ok(Outcome::Replicated) => report.replicated += 1,
                Ok(_) => report.settled += 1,
                Err(_) => {
                    report.failed += 1;
                    report.still_waiting(age);
                }
            }
        }
        Ok(report)
    }
}
