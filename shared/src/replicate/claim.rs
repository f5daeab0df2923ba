//! Step two: create the file's catalog record, or find the one a previous
//! delivery created. The same content resumes where that delivery stopped;
//! different content under the name is a conflict, recorded and refused.

use std::time::Instant;

use bytes::Bytes;

use super::staged::Staged;
use super::{elapsed_ms, Outcome, ReplicateError, Run};
use crate::catalog::{CatalogRecord, CreateOutcome, RecordSeal, RecordStatus};
use crate::clock::now_millis;
use crate::codec::Sha256Hex;
use crate::error::chain;
use crate::metrics::Metric;

pub(super) enum Claim {
    /// Replicate: the record as it stands (replicas it lacks are written).
    Proceed(Box<CatalogRecord>),
    /// Nothing to replicate.
    Done(Outcome),
}

impl Run<'_> {
    /// `packed`: the compressed bytes, when compressed before the claim
    /// (a file streamed is compressed as it is written).
    pub(super) async fn claim(
        &mut self,
        staged: &Staged,
        packed: Option<&Bytes>,
    ) -> Result<Claim, ReplicateError> {
        let clock = Instant::now();
        let record = CatalogRecord {
            system_identifier: staged.header.map(|h| h.system_identifier),
            pg_version: staged.header.map(|h| h.pg_version.0),
            compressed_size: packed.map(|p| p.len() as u64),
            compressed_sha256: packed.map(|p| Sha256Hex::of(p)),
            backup: staged.backup.as_deref().cloned(),
            history: staged.history.clone(),
            seal: self
                .replicator
                .sealing
                .as_ref()
                .map(|sealing| RecordSeal::new(sealing, &staged.sha256)),
            ..CatalogRecord::replicating(
                self.replicator.cluster.clone(),
                self.file,
                staged.raw_size,
                staged.sha256.clone(),
                staged.staged_at,
                now_millis(),
            )
        };
        let catalog = &self.replicator.backends.catalog;
        let created = self
            .budget
            .run(format!("catalog create {}", self.file), || {
                catalog.create(&record)
            })
            .await
            .map_err(|e| self.catalog_error(e))?;
        self.steps.catalog_ms += elapsed_ms(clock);
        match created {
            CreateOutcome::Created => Ok(Claim::Proceed(Box::new(record))),
            CreateOutcome::Exists(existing)
                if existing.raw_sha256 == staged.sha256
                    && existing.status != RecordStatus::Corrupt =>
            {
                if existing.status == RecordStatus::Replicated {
                    self.delete_staging().await?;
                    Ok(Claim::Done(Outcome::AlreadyReplicated))
                } else {
                    Ok(Claim::Proceed(existing))
                }
            }
            CreateOutcome::Exists(existing) => {
                let detail = format!(
                    "staged sha256 {} differs from the recorded {} ({})",
                    staged.sha256, existing.raw_sha256, existing.status
                );
                // A re-drive meets the same staging object again: count it once.
                let counted = existing
                    .last_conflict
                    .as_deref()
                    .is_some_and(|d| d.contains(staged.sha256.as_str()));
                if !counted {
                    self.record_conflict(&detail).await?;
                }
                tracing::error!(file = %self.file, %detail, "CONFLICT: refusing a different file under an archived name");
                Ok(Claim::Done(Outcome::Conflict(detail)))
            }
        }
    }

    /// Counts a refused content in the record and the metrics.
    pub(super) async fn record_conflict(&mut self, detail: &str) -> Result<(), ReplicateError> {
        self.report.add(Metric::Conflicts, 1.0);
        let catalog = &self.replicator.backends.catalog;
        let (cluster, file) = (&self.replicator.cluster, &self.file);
        self.budget
            .run(format!("catalog record conflict {file}"), || {
                catalog.record_conflict(cluster, file, detail, now_millis())
            })
            .await
            .map_err(|e| {
                tracing::error!(file = %file, error = %chain(&e), "could not record the conflict");
                self.catalog_error(e)
            })
    }
}
