//! Step three: write every replica the record lacks, all at once, and
//! record each in the catalog as soon as its provider confirms it, so that
//! a slow or failing provider never holds back what another confirmed.

use std::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;

use super::{elapsed_ms, ReplicateError, Run};
use crate::catalog::{CatalogError, CatalogRecord, RecordRef, RecordStatus, TargetState};
use crate::clock::now_millis;
use crate::codec::Sha256Hex;
use crate::error::{chain, Retryable};
use crate::keys::archive_key;
use crate::metrics::Metric;
use crate::provider::Provider;
use crate::store::{PutOutcome, StoreError};

/// Why one provider's replica is not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The provider did not store it (or holds a different object).
    #[error("writing the replica")]
    Write(#[source] StoreError),
    /// The provider stored it, but the catalog did not record it; the
    /// next delivery finds it there and records it.
    #[error("recording the replica")]
    Record(#[source] CatalogError),
}

impl Retryable for ReplicaError {
    fn is_permanent(&self) -> bool {
        match self {
            ReplicaError::Write(e) => e.is_permanent(),
            ReplicaError::Record(e) => e.is_permanent(),
        }
    }
}

impl Run<'_> {
    /// Writes and records the missing replicas; the record then lists
    /// every provider, or the error says which are still missing.
    pub(super) async fn write_missing(
        &mut self,
        record: &CatalogRecord,
        packed: &Bytes,
    ) -> Result<CatalogRecord, ReplicateError> {
        let clock = Instant::now();
        let missing = record.missing_targets();
        let stored = Sha256Hex::of(packed);
        let writes = missing
            .iter()
            .map(|provider| self.write_and_record(*provider, record, packed, &stored));
        let results = join_all(writes).await;
        self.steps.replicate_ms = elapsed_ms(clock);
        self.settle(record, missing.into_iter().zip(results).collect())
            .await
    }

    /// The record once every write's result is in: every provider listed,
    /// or marked `partial` with the error saying which are missing.
    pub(super) async fn settle(
        &mut self,
        record: &CatalogRecord,
        results: Vec<(Provider, Result<CatalogRecord, ReplicaError>)>,
    ) -> Result<CatalogRecord, ReplicateError> {
        let mut now = record.clone();
        let mut failures = Vec::new();
        for (provider, result) in results {
            match result {
                Ok(updated) => now.targets.extend(updated.targets),
                Err(e) => failures.push((provider, self.replica_failed(provider, e).await)),
            }
        }
        if failures.is_empty() {
            return Ok(now);
        }
        self.mark_partial(record, &failures).await;
        Err(ReplicateError::Partial {
            file: self.file,
            failures,
        })
    }

    async fn write_and_record(
        &self,
        provider: Provider,
        record: &CatalogRecord,
        packed: &Bytes,
        stored: &Sha256Hex,
    ) -> Result<CatalogRecord, ReplicaError> {
        let store = self
            .replicator
            .backends
            .replicas
            .get(provider)
            .expect("a replicator has every provider's replica");
        let key = archive_key(&record.cluster, record.file);
        let metadata = record.replica_metadata();
        let put = self
            .budget
            .run(format!("{provider} put {key}"), || {
                store.put_if_absent(&key, packed.clone(), record.replica_tag(), &metadata)
            })
            .await
            .map_err(ReplicaError::Write)?;
        self.record_replica(
            provider,
            record,
            key,
            packed.len() as u64,
            &put,
            Some(stored),
        )
        .await
    }

    /// Records `provider`'s replica of `size` bytes under `key`; `written`
    /// is the digest of the bytes this delivery sent, kept when they are
    /// the ones stored (not when an earlier delivery's copy was found).
    pub(super) async fn record_replica(
        &self,
        provider: Provider,
        record: &CatalogRecord,
        key: String,
        size: u64,
        put: &PutOutcome,
        written: Option<&Sha256Hex>,
    ) -> Result<CatalogRecord, ReplicaError> {
        // A copy an earlier delivery stored is recorded as it is there.
        let (size, stored_sha256) = match put {
            PutOutcome::Created { .. } => (size, written.cloned()),
            PutOutcome::AlreadyPresent { size, .. } => (*size, None),
        };
        let target = TargetState {
            key,
            size,
            etag: put.etag().map(str::to_owned),
            at: now_millis(),
            stored_sha256,
        };
        let catalog = &self.replicator.backends.catalog;
        self.budget
            .run(format!("catalog record {provider} {}", record.file), || {
                catalog.record_target(RecordRef::of(record), provider, &target, now_millis())
            })
            .await
            .map_err(ReplicaError::Record)
    }

    /// Logs and counts a failed replica; a provider holding a different
    /// object is also a recorded conflict.
    pub(super) async fn replica_failed(
        &mut self,
        provider: Provider,
        error: ReplicaError,
    ) -> ReplicaError {
        tracing::warn!(file = %self.file, target = %provider, error = %chain(&error), "replica not recorded");
        self.report.add(Metric::replica_failures(provider), 1.0);
        if let ReplicaError::Write(StoreError::PreconditionFailed { detail, .. }) = &error {
            let detail = format!("{provider} holds a different object: {detail}");
            // Logged by record_conflict; the replica failure is what the caller sees.
            let _recorded = self.record_conflict(&detail).await;
        }
        error
    }

    /// Says in the record which replicas are missing and why.
    async fn mark_partial(
        &mut self,
        record: &CatalogRecord,
        failures: &[(Provider, ReplicaError)],
    ) {
        let clock = Instant::now();
        let detail = format!(
            "missing {}",
            failures
                .iter()
                .map(|(p, e)| format!("{p}: {}", chain(e)))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let catalog = &self.replicator.backends.catalog;
        let from = [RecordStatus::Replicating, RecordStatus::Partial];
        let marked = self
            .budget
            .run(format!("catalog mark partial {}", self.file), || {
                catalog.set_status(
                    RecordRef::of(record),
                    &from,
                    RecordStatus::Partial,
                    Some(&detail),
                    now_millis(),
                )
            })
            .await;
        if let Err(e) = marked {
            tracing::warn!(file = %self.file, error = %chain(&e), "could not mark the record partial");
        }
        self.steps.catalog_ms += elapsed_ms(clock);
    }
}
