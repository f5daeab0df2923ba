//! The compress function's work for one staging object: verify it,
//! compress it, write every replica, record each as it lands, and only
//! then remove the staging copy. Every step is conditional or idempotent,
//! so duplicate, concurrent and retried deliveries converge on one record
//! and identical replicas.
//!
//! One file per step: [`staged`] (read and verify), [`claim`] (create or
//! resume the record), [`write`] (the replicas), [`finish`] (mark
//! replicated, drop the staging copy); [`redrive`] sweeps stuck staging
//! objects; [`invocation`] maps Lambda events onto all of it.

mod claim;
mod finish;
pub mod invocation;
mod redrive;
mod staged;
mod streamed;
mod write;

use std::time::Instant;

use crate::backends::Backends;
use crate::catalog::CatalogError;
use crate::codec::{CodecError, CompressionLevel};
use crate::error::{chain, Retryable};
use crate::events::ObjectRef;
use crate::file::ArchivedFile;
use crate::keys::{parse_staging_key, ClusterName};
use crate::metrics::{Metric, MetricRecord};
use crate::provider::Provider;
use crate::retry::{Budget, RequestLimits};
use crate::seal::{KeyError, Sealing};
use crate::store::StoreError;

pub use redrive::RedriveReport;
pub use write::ReplicaError;

/// The compress function's clients and settings, built once per cold start.
pub struct Replicator {
    /// The only cluster this deployment replicates: other clusters'
    /// objects in a shared staging bucket are left alone.
    pub cluster: ClusterName,
    pub staging_bucket: String,
    /// Staging, the catalog, and a replica on every provider.
    pub backends: Backends,
    pub level: CompressionLevel,
    pub limits: RequestLimits,
    /// How new copies are sealed; plain copies when `None`.
    pub sealing: Option<Sealing>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every replica confirmed by this delivery; the staging copy is gone.
    Replicated,
    /// A duplicate delivery: the file was already replicated.
    AlreadyReplicated,
    /// Not one of this cluster's staging objects; acknowledged, never retried.
    Ignored(String),
    /// The staging object is gone and nothing is left to do.
    Vanished,
    /// The staging object failed verification; recorded, never replicated.
    Corrupt(String),
    /// Different content under a name already archived; recorded, refused.
    Conflict(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    /// The staging object could not be read (or listed, for the re-drive).
    #[error("{file}: reading the staging copy")]
    Staging {
        file: String,
        #[source]
        source: StoreError,
    },
    /// A catalog request failed.
    #[error("{file}: catalog")]
    Catalog {
        file: ArchivedFile,
        #[source]
        source: CatalogError,
    },
    /// The staged bytes could not be compressed.
    #[error("{file}: compressing")]
    Compress {
        file: ArchivedFile,
        #[source]
        source: CodecError,
    },
    /// The compressed bytes could not be sealed.
    #[error("{file}: sealing")]
    Seal {
        file: ArchivedFile,
        #[source]
        source: KeyError,
    },
    /// Some replica is still missing: the record says `partial`, and a
    /// retry redoes only what is missing.
    #[error("{file}: replication incomplete: {}", failures.iter().map(|(p, e)| format!("{p}: {}", chain(e))).collect::<Vec<_>>().join("; "))]
    Partial {
        file: ArchivedFile,
        failures: Vec<(Provider, ReplicaError)>,
    },
    /// Every replica is recorded, but the record then changed in a way no
    /// delivery of this content makes (another content, a status gone).
    #[error("{file}: the catalog record changed under this delivery")]
    RecordChanged { file: ArchivedFile },
    /// Replicated and recorded, but the staging copy could not be removed;
    /// the re-drive removes it later.
    #[error("{file}: replicated, but removing the staging copy failed")]
    StagingCleanup {
        file: ArchivedFile,
        #[source]
        source: StoreError,
    },
}

impl Retryable for ReplicateError {
    fn is_permanent(&self) -> bool {
        match self {
            ReplicateError::Staging { source, .. }
            | ReplicateError::StagingCleanup { source, .. } => source.is_permanent(),
            ReplicateError::Catalog { source, .. } => source.is_permanent(),
            ReplicateError::Compress { .. }
            | ReplicateError::Seal { .. }
            | ReplicateError::RecordChanged { .. } => true,
            ReplicateError::Partial { failures, .. } => {
                failures.iter().all(|(_, e)| e.is_permanent())
            }
        }
    }
}

impl Replicator {
    /// Builds the replicator of a deployment; every provider's replica
    /// must be configured.
    pub fn new(
        cluster: ClusterName,
        staging_bucket: String,
        backends: Backends,
        level: CompressionLevel,
        limits: RequestLimits,
    ) -> Result<Self, crate::backends::BackendError> {
        backends.replicas.require_all()?;
        Ok(Replicator {
            cluster,
            staging_bucket,
            backends,
            level,
            limits,
            sealing: None,
        })
    }

    /// Seals new copies as `sealing` says (none: plain copies).
    pub fn sealing_to(mut self, sealing: Option<Sealing>) -> Self {
        self.sealing = sealing;
        self
    }

    /// Handles one announced object within `budget` and logs one EMF line
    /// about it.
    pub async fn process(
        &self,
        object: &ObjectRef,
        budget: &Budget,
    ) -> Result<Outcome, ReplicateError> {
        let (result, report) = self.process_with_report(object, budget).await;
        if let Some(report) = report {
            report.emit();
        }
        result
    }

    /// [`Replicator::process`], handing back the EMF record instead of
    /// emitting it (none for an ignored object).
    pub async fn process_with_report(
        &self,
        object: &ObjectRef,
        budget: &Budget,
    ) -> (Result<Outcome, ReplicateError>, Option<MetricRecord>) {
        let file = match self.own_staging_file(object) {
            Ok(file) => file,
            Err(reason) => {
                tracing::warn!(key = %object.key, %reason, "ignored");
                return (Ok(Outcome::Ignored(reason)), None);
            }
        };
        let started = Instant::now();
        let mut report = MetricRecord::new(self.cluster.as_str());
        report.property("file", file.to_string());
        let mut run = Run {
            replicator: self,
            file,
            staging_key: &object.key,
            budget,
            report: &mut report,
            steps: Steps::default(),
            staged_etag: None,
        };
        let result = run.replicate().await;
        let steps = run.steps;
        steps.log_into(&mut report);
        if matches!(result, Ok(Outcome::Vanished)) {
            report.add(Metric::VanishedFiles, 1.0);
        }
        report
            .property("outcome", outcome_label(&result))
            .property("total_ms", started.elapsed().as_millis() as u64);
        if let Err(e) = &result {
            report
                .property("error", chain(e))
                .property("permanent", e.is_permanent());
        }
        (result, Some(report))
    }

    /// The file named by an announced object, if it is one of this
    /// cluster's staging objects; otherwise why it is ignored.
    fn own_staging_file(&self, object: &ObjectRef) -> Result<ArchivedFile, String> {
        if object.bucket != self.staging_bucket {
            return Err("object outside the staging bucket".into());
        }
        let (cluster, file) = parse_staging_key(&object.key).map_err(|e| e.to_string())?;
        if cluster != self.cluster {
            return Err(format!(
                "staging object of cluster {cluster}, not {}",
                self.cluster
            ));
        }
        Ok(file)
    }
}

/// One delivery of one file, step by step.
struct Run<'a> {
    replicator: &'a Replicator,
    file: ArchivedFile,
    staging_key: &'a str,
    budget: &'a Budget,
    report: &'a mut MetricRecord,
    steps: Steps,
    /// The ETag of the staging object this delivery read: only that object
    /// is removed once replicated, never one put under the key since.
    staged_etag: Option<String>,
}

impl Run<'_> {
    async fn replicate(&mut self) -> Result<Outcome, ReplicateError> {
        let object = match self.open_staged().await? {
            staged::Opened::Whole(object) => object,
            staged::Opened::Streaming(reader) => return self.replicate_streamed(reader).await,
            staged::Opened::Gone => return self.after_vanished().await,
        };
        let (staged, raw) = match self.verify_whole(object) {
            staged::Read::Verified(staged, raw) => (staged, raw),
            staged::Read::Corrupt(corrupt) => return self.record_corrupt(corrupt).await,
        };
        let packed = self.compress(&raw)?;
        drop(raw);
        let sealing = self.replicator.sealing.as_ref().map(|s| &s.recipients);
        let stored = self.seal_to(sealing, &staged, &packed)?;
        let record = match self.claim(&staged, Some(&stored)).await? {
            claim::Claim::Proceed(record) => record,
            claim::Claim::Done(outcome) => return Ok(outcome),
        };
        // A record an earlier delivery made keeps its own sealing: its
        // copies are all sealed to the same keys, or all plain.
        let record_sealing = record.seal.as_ref().map(|seal| &seal.recipients);
        let stored = match record_sealing == sealing {
            true => stored,
            false => self.seal_to(record_sealing, &staged, &packed)?,
        };
        let record = self.write_missing(&record, &stored).await?;
        self.finish(&record).await?;
        self.count_archived(&staged, stored.len() as u64);
        Ok(Outcome::Replicated)
    }

    fn catalog_error(&self, source: CatalogError) -> ReplicateError {
        ReplicateError::Catalog {
            file: self.file,
            source,
        }
    }
}

/// Per-step timings of one file, for the log line.
#[derive(Debug, Default)]
struct Steps {
    get_ms: u64,
    verify_ms: u64,
    compress_ms: u64,
    replicate_ms: u64,
    catalog_ms: u64,
}

impl Steps {
    fn log_into(&self, report: &mut MetricRecord) {
        report
            .property("get_ms", self.get_ms)
            .property("verify_ms", self.verify_ms)
            .property("compress_ms", self.compress_ms)
            .property("replicate_ms", self.replicate_ms)
            .property("catalog_ms", self.catalog_ms);
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn outcome_label(result: &Result<Outcome, ReplicateError>) -> &'static str {
    match result {
        Ok(Outcome::Replicated) => "replicated",
        Ok(Outcome::AlreadyReplicated) => "already-replicated",
        Ok(Outcome::Ignored(_)) => "ignored",
        Ok(Outcome::Vanished) => "vanished",
        Ok(Outcome::Corrupt(_)) => "corrupt",
        Ok(Outcome::Conflict(_)) => "conflict",
        Err(ReplicateError::Partial { .. }) => "partial",
        Err(_) => "failed",
    }
}
