//! Step four: with every replica recorded, mark the record `replicated`
//! and only then remove the staging copy. Also what a delivery does when
//! the staging copy is already gone.

use std::time::Instant;

use super::staged::Staged;
use super::{elapsed_ms, Outcome, ReplicateError, Run};
use crate::catalog::{mark_replicated, CatalogError, CatalogRecord, RecordStatus};
use crate::clock::now_millis;
use crate::metrics::Metric;
use crate::store::StoreError;

impl Run<'_> {
    /// Marks the record replicated (a concurrent delivery may have done
    /// it already) and removes the staging copy.
    pub(super) async fn finish(&mut self, record: &CatalogRecord) -> Result<(), ReplicateError> {
        let clock = Instant::now();
        let catalog = self.replicator.backends.catalog.as_ref();
        match mark_replicated(catalog, record, self.budget).await {
            Ok(()) => {}
            // Neither marked nor replicated with this content since.
            Err(CatalogError::ConditionFailed { .. }) => {
                return Err(ReplicateError::RecordChanged { file: self.file })
            }
            Err(e) => return Err(self.catalog_error(e)),
        }
        self.steps.catalog_ms += elapsed_ms(clock);
        self.delete_staging().await
    }

    /// Removes the staging object this delivery replicated. Another object
    /// put under the key since (a re-push after an operator cleared a
    /// conflict) is left for its own delivery.
    pub(super) async fn delete_staging(&self) -> Result<(), ReplicateError> {
        let staging = &self.replicator.backends.staging;
        let key = self.staging_key;
        let deleted = match self.staged_etag.as_deref() {
            Some(etag) => {
                self.budget
                    .run(format!("staging delete {key}"), || {
                        staging.delete_if_etag(key, etag)
                    })
                    .await
            }
            None => {
                self.budget
                    .run(format!("staging delete {key}"), || staging.delete(key))
                    .await
            }
        };
        match deleted {
            Err(StoreError::PreconditionFailed { .. }) => {
                tracing::warn!(file = %self.file, "the staging key holds another object than the one replicated; left for its own delivery");
                Ok(())
            }
            other => other.map_err(|source| ReplicateError::StagingCleanup {
                file: self.file,
                source,
            }),
        }
    }

    /// The staging object is gone: replicated by another delivery, or
    /// lost before it was.
    pub(super) async fn after_vanished(&self) -> Result<Outcome, ReplicateError> {
        let catalog = &self.replicator.backends.catalog;
        let (cluster, file) = (&self.replicator.cluster, &self.file);
        let record = self
            .budget
            .run(format!("catalog get {file}"), || catalog.get(cluster, file))
            .await
            .map_err(|e| self.catalog_error(e))?;
        match record {
            Some(r) if r.status == RecordStatus::Replicated => Ok(Outcome::AlreadyReplicated),
            other => {
                tracing::warn!(file = %file, record = ?other.map(|r| r.status), "staging object gone before it was replicated");
                Ok(Outcome::Vanished)
            }
        }
    }

    pub(super) fn count_archived(&mut self, staged: &Staged, packed: u64) {
        let raw = staged.raw_size;
        self.report
            .add(Metric::FilesArchived, 1.0)
            .add(Metric::RawBytes, raw as f64)
            .add(Metric::CompressedBytes, packed as f64)
            .add(
                Metric::ReplicationLag,
                now_millis().saturating_sub(staged.staged_at) as f64,
            )
            .property("raw_bytes", raw)
            .property("compressed_bytes", packed)
            .property("ratio", raw as f64 / packed.max(1) as f64);
    }
}
