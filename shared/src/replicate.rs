//! The compress function's work for one staging object: verify, compress,
//! write both replicas, record them, and only then remove the staging copy.
//! Every step is conditional or idempotent, so duplicate, concurrent and
//! retried deliveries converge on one record and identical replicas.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::archive::push::{META_SIZE, META_SYSTEM_IDENTIFIER};
use crate::archive::META_RAW_SIZE;
use crate::catalog::{
    dynamodb_client, now_millis, Catalog, CatalogError, CatalogRecord, CreateOutcome,
    DynamoCatalog, RecordRef, RecordStatus, TargetState,
};
use crate::codec::{self, CompressionLevel, Sha256Hex};
use crate::config::{Config, ConfigError, Provider};
use crate::events::ObjectRef;
use crate::keys::{archive_key, parse_staging_key, staging_prefix, ClusterName};
use crate::metrics::{MetricRecord, Unit};
use crate::store::{
    configured_replica, list_all, staging_store, Metadata, Object, ObjectStore, StoreError,
};
use crate::wal::{WalFileKind, WalFileName, WalHeader};

pub struct Replicator {
    pub staging: Arc<dyn ObjectStore>,
    pub staging_bucket: String,
    pub r2: Arc<dyn ObjectStore>,
    pub b2: Arc<dyn ObjectStore>,
    pub catalog: Arc<dyn Catalog>,
    pub level: CompressionLevel,
    /// The part of the staging bucket the re-drive sweeps: the configured
    /// cluster's staging prefix (a deployment serves one cluster, and its
    /// role may list only that prefix).
    pub redrive_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both replicas confirmed by this delivery; the staging copy is gone.
    Replicated,
    /// A duplicate delivery: the file was already replicated.
    AlreadyReplicated,
    /// Not a walvault staging object; acknowledged, never retried.
    Ignored(String),
    /// The staging object is gone and nothing is left to do.
    Vanished,
    /// The staging object failed verification; recorded, never replicated.
    Corrupt(String),
    /// Different content under a name already archived; recorded, refused.
    Conflict(String),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReplicateError {
    /// Some replica is still missing; the record says `partial` and a retry
    /// redoes only what is missing.
    #[error("{file}: replication incomplete: {detail}")]
    Partial { file: String, detail: String },
    #[error("{file}: {detail}")]
    Store { file: String, detail: String },
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

impl Replicator {
    /// The clients of one cold start, from configuration; both replicas
    /// must be configured.
    pub fn from_config(sdk: &aws_config::SdkConfig, config: &Config) -> Result<Self, ConfigError> {
        Ok(Replicator {
            staging: Arc::new(staging_store(sdk, config)),
            staging_bucket: config.staging.bucket.clone(),
            r2: configured_replica(sdk, config, Provider::R2)?,
            b2: configured_replica(sdk, config, Provider::B2)?,
            catalog: Arc::new(DynamoCatalog::new(
                dynamodb_client(sdk, config),
                &config.catalog.table,
            )),
            level: config.zstd_level,
            redrive_prefix: staging_prefix(&config.cluster),
        })
    }

    fn replica(&self, provider: Provider) -> &dyn ObjectStore {
        match provider {
            Provider::R2 => self.r2.as_ref(),
            Provider::B2 => self.b2.as_ref(),
        }
    }

    /// Handles one announced object and logs one EMF line about it.
    pub async fn process(&self, object: &ObjectRef) -> Result<Outcome, ReplicateError> {
        if object.bucket != self.staging_bucket {
            let reason = format!(
                "object in bucket {:?}, not the staging bucket",
                object.bucket
            );
            tracing::warn!(key = %object.key, %reason, "ignored");
            return Ok(Outcome::Ignored(reason));
        }
        let (cluster, file) = match parse_staging_key(&object.key) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(key = %object.key, error = %e, "ignored");
                return Ok(Outcome::Ignored(e.to_string()));
            }
        };
        let started = Instant::now();
        let mut steps = Steps::default();
        let mut report = MetricRecord::new(cluster.as_str()).property("file", file.to_string());
        let result = self
            .replicate(&cluster, &file, &object.key, &mut steps, &mut report)
            .await;
        report = report
            .property("outcome", outcome_label(&result))
            .property("total_ms", started.elapsed().as_millis() as u64)
            .property("get_ms", steps.get_ms)
            .property("verify_ms", steps.verify_ms)
            .property("compress_ms", steps.compress_ms)
            .property("replicate_ms", steps.replicate_ms)
            .property("catalog_ms", steps.catalog_ms);
        if let Err(e) = &result {
            report = report.property("error", e.to_string());
        }
        report.emit();
        result
    }

    async fn replicate(
        &self,
        cluster: &ClusterName,
        file: &WalFileName,
        staging_key: &str,
        steps: &mut Steps,
        report: &mut MetricRecord,
    ) -> Result<Outcome, ReplicateError> {
        let fail = |detail: String| ReplicateError::Store {
            file: file.to_string(),
            detail,
        };
        let clock = Instant::now();
        let staged = match self.staging.get(staging_key).await {
            Ok(object) => object,
            Err(StoreError::NotFound { .. }) => return self.after_vanished(cluster, file).await,
            Err(e) => return Err(fail(e.to_string())),
        };
        steps.get_ms = elapsed_ms(clock);

        let clock = Instant::now();
        let raw = staged.body.clone();
        let sha = Sha256Hex::of(&raw);
        let verified = verify_staged(file, &staged, &sha);
        steps.verify_ms = elapsed_ms(clock);
        let staged_at = staged
            .info
            .last_modified
            .map(unix_millis)
            .unwrap_or_else(now_millis);
        let header = match verified {
            Ok(header) => header,
            Err(problem) => {
                *report = report
                    .clone()
                    .metric("CorruptInputs", 1.0, Unit::Count)
                    .property("problem", problem.clone());
                return self
                    .record_corrupt(cluster, file, &raw, sha, staged_at, problem)
                    .await;
            }
        };

        let clock = Instant::now();
        let packed =
            Bytes::from(codec::compress(&raw, self.level).map_err(|e| fail(e.to_string()))?);
        steps.compress_ms = elapsed_ms(clock);

        let mut record = CatalogRecord {
            system_identifier: header.map(|h| h.system_identifier),
            pg_version: header.map(|h| h.pg_version.0),
            compressed_size: Some(packed.len() as u64),
            compressed_sha256: Some(Sha256Hex::of(&packed)),
            ..CatalogRecord::replicating(
                cluster.clone(),
                *file,
                raw.len() as u64,
                sha.clone(),
                staged_at,
                now_millis(),
            )
        };
        let clock = Instant::now();
        match self
            .catalog
            .create(&record)
            .await
            .map_err(|e| fail(e.to_string()))?
        {
            CreateOutcome::Created => {}
            CreateOutcome::Exists(existing)
                if existing.raw_sha256 == sha && existing.status != RecordStatus::Corrupt =>
            {
                if existing.status == RecordStatus::Replicated {
                    self.delete_staging(staging_key)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    return Ok(Outcome::AlreadyReplicated);
                }
                record = *existing;
            }
            CreateOutcome::Exists(existing) => {
                let detail = format!(
                    "staged sha256 {sha} differs from the recorded {} ({})",
                    existing.raw_sha256, existing.status
                );
                // A re-drive meets the same staging object again: count it once.
                let counted = existing
                    .last_conflict
                    .as_deref()
                    .is_some_and(|d| d.contains(sha.as_str()));
                if !counted {
                    *report = report.clone().metric("Conflicts", 1.0, Unit::Count);
                    self.catalog
                        .record_conflict(cluster, file, &detail, now_millis())
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
                tracing::error!(file = %file, %detail, "CONFLICT: refusing a different file under an archived name");
                return Ok(Outcome::Conflict(detail));
            }
        }
        steps.catalog_ms += elapsed_ms(clock);

        let clock = Instant::now();
        // Only the replicas the record lacks: a retry redoes what is missing.
        let (r2, b2) = tokio::join!(
            self.write_missing_replica(Provider::R2, &record, &packed),
            self.write_missing_replica(Provider::B2, &record, &packed)
        );
        steps.replicate_ms = elapsed_ms(clock);

        let clock = Instant::now();
        let mut failures = Vec::new();
        for (provider, result) in [(Provider::R2, r2), (Provider::B2, b2)] {
            let Some(result) = result else { continue };
            match result {
                Ok(target) => {
                    record = self
                        .catalog
                        .record_target(RecordRef::of(&record), provider, &target, now_millis())
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
                Err(e) => {
                    *report =
                        report
                            .clone()
                            .metric(target_failure_metric(provider), 1.0, Unit::Count);
                    if let StoreError::PreconditionFailed { detail, .. } = &e {
                        *report = report.clone().metric("Conflicts", 1.0, Unit::Count);
                        let _ = self
                            .catalog
                            .record_conflict(
                                cluster,
                                file,
                                &format!("{provider} holds a different object: {detail}"),
                                now_millis(),
                            )
                            .await;
                    }
                    tracing::warn!(file = %file, target = %provider, error = %e, "replica write failed");
                    failures.push(format!("{provider}: {e}"));
                }
            }
        }
        let result = if failures.is_empty() {
            self.finish(cluster, file, staging_key, &record).await
        } else {
            let detail = format!("missing {}", failures.join("; "));
            let partial = self
                .catalog
                .set_status(
                    RecordRef::of(&record),
                    &[RecordStatus::Replicating, RecordStatus::Partial],
                    RecordStatus::Partial,
                    Some(&detail),
                    now_millis(),
                )
                .await;
            if let Err(e) = partial {
                tracing::warn!(file = %file, error = %e, "could not mark the record partial");
            }
            Err(ReplicateError::Partial {
                file: file.to_string(),
                detail,
            })
        };
        steps.catalog_ms += elapsed_ms(clock);
        if result.is_ok() {
            *report = report
                .clone()
                .metric("FilesArchived", 1.0, Unit::Count)
                .metric("RawBytes", raw.len() as f64, Unit::Bytes)
                .metric("CompressedBytes", packed.len() as f64, Unit::Bytes)
                .metric(
                    "ReplicationLag",
                    now_millis().saturating_sub(staged_at) as f64,
                    Unit::Milliseconds,
                )
                .property("raw_bytes", raw.len() as u64)
                .property("compressed_bytes", packed.len() as u64)
                .property("ratio", raw.len() as f64 / packed.len().max(1) as f64);
        }
        result
    }

    /// Writes the replica on `provider` unless the record already has it.
    async fn write_missing_replica(
        &self,
        provider: Provider,
        record: &CatalogRecord,
        packed: &Bytes,
    ) -> Option<Result<TargetState, StoreError>> {
        if record.target(provider).is_some() {
            return None;
        }
        Some(self.write_replica(provider, record, packed.clone()).await)
    }

    async fn write_replica(
        &self,
        provider: Provider,
        record: &CatalogRecord,
        packed: Bytes,
    ) -> Result<TargetState, StoreError> {
        let key = archive_key(&record.cluster, &record.file);
        let metadata = Metadata::from([(META_RAW_SIZE.to_owned(), record.raw_size.to_string())]);
        let size = packed.len() as u64;
        let outcome = self
            .replica(provider)
            .put_if_absent(&key, packed, &record.raw_sha256, &metadata)
            .await?;
        Ok(TargetState {
            key,
            size,
            etag: outcome.etag().map(str::to_owned),
            at: now_millis(),
        })
    }

    /// Both replicas are recorded: mark the record replicated, then remove
    /// the staging copy.
    async fn finish(
        &self,
        cluster: &ClusterName,
        file: &WalFileName,
        staging_key: &str,
        record: &CatalogRecord,
    ) -> Result<Outcome, ReplicateError> {
        let fail = |detail: String| ReplicateError::Store {
            file: file.to_string(),
            detail,
        };
        let marked = self
            .catalog
            .set_status(
                RecordRef::of(record),
                &[RecordStatus::Replicating, RecordStatus::Partial],
                RecordStatus::Replicated,
                None,
                now_millis(),
            )
            .await;
        match marked {
            Ok(_) => {}
            // A concurrent delivery got there first.
            Err(CatalogError::ConditionFailed { .. }) => match self
                .catalog
                .get(cluster, file)
                .await
                .map_err(|e| fail(e.to_string()))?
            {
                Some(now)
                    if now.status == RecordStatus::Replicated
                        && now.raw_sha256 == record.raw_sha256 => {}
                other => return Err(fail(format!("record changed under us: {other:?}"))),
            },
            Err(e) => return Err(fail(e.to_string())),
        }
        self.delete_staging(staging_key)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Outcome::Replicated)
    }

    async fn delete_staging(&self, key: &str) -> Result<(), StoreError> {
        self.staging.delete(key).await
    }

    async fn after_vanished(
        &self,
        cluster: &ClusterName,
        file: &WalFileName,
    ) -> Result<Outcome, ReplicateError> {
        let record = self
            .catalog
            .get(cluster, file)
            .await
            .map_err(|e| ReplicateError::Store {
                file: file.to_string(),
                detail: e.to_string(),
            })?;
        match record {
            Some(r) if r.status == RecordStatus::Replicated => Ok(Outcome::AlreadyReplicated),
            other => {
                tracing::warn!(file = %file, record = ?other.map(|r| r.status), "staging object gone before it was replicated");
                Ok(Outcome::Vanished)
            }
        }
    }

    async fn record_corrupt(
        &self,
        cluster: &ClusterName,
        file: &WalFileName,
        raw: &[u8],
        sha: Sha256Hex,
        staged_at: u64,
        problem: String,
    ) -> Result<Outcome, ReplicateError> {
        tracing::error!(file = %file, %problem, "CORRUPT staging object: not replicated");
        let record = CatalogRecord {
            status: RecordStatus::Corrupt,
            detail: Some(problem.clone()),
            ..CatalogRecord::replicating(
                cluster.clone(),
                *file,
                raw.len() as u64,
                sha,
                staged_at,
                now_millis(),
            )
        };
        match self.catalog.create(&record).await {
            Ok(_) => Ok(Outcome::Corrupt(problem)),
            Err(e) => Err(ReplicateError::Store {
                file: file.to_string(),
                detail: e.to_string(),
            }),
        }
    }

    /// Processes staging objects older than `older_than`: files whose event
    /// was lost, and `partial` ones whose missing replica may be back. Stops
    /// before `deadline`.
    pub async fn redrive(
        &self,
        older_than: Duration,
        deadline: Instant,
    ) -> Result<RedriveReport, ReplicateError> {
        let objects = list_all(self.staging.as_ref(), &self.redrive_prefix)
            .await
            .map_err(|e| ReplicateError::Store {
                file: "<staging listing>".into(),
                detail: e.to_string(),
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
            if Instant::now() >= deadline {
                report.stopped_at_deadline = true;
                break;
            }
            let reference = ObjectRef {
                bucket: self.staging_bucket.clone(),
                key: object.key.clone(),
            };
            match self.process(&reference).await {
                Ok(Outcome::Replicated) => report.replicated += 1,
                Ok(_) => report.settled += 1,
                Err(_) => report.failed += 1,
            }
        }
        Ok(report)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RedriveReport {
    pub scanned: u64,
    pub too_young: u64,
    pub replicated: u64,
    /// Nothing to do, or recorded as corrupt or conflicting.
    pub settled: u64,
    pub failed: u64,
    pub stopped_at_deadline: bool,
}

/// Checks the staged bytes against what the shipper recorded and, for
/// segments, against the WAL header. Returns the header, if any.
fn verify_staged(
    file: &WalFileName,
    staged: &Object,
    sha: &Sha256Hex,
) -> Result<Option<WalHeader>, String> {
    match staged.info.sha256() {
        None => return Err("no sha256 metadata: not written by walvault push".into()),
        Some(claimed) if &claimed != sha => {
            return Err(format!(
                "sha256 of the content is {sha}, the shipper recorded {claimed}"
            ))
        }
        Some(_) => {}
    }
    if let Some(size) = staged.info.metadata.get(META_SIZE) {
        if size != &staged.body.len().to_string() {
            return Err(format!(
                "{} bytes, the shipper recorded {size}",
                staged.body.len()
            ));
        }
    }
    if !matches!(file.kind(), WalFileKind::Segment | WalFileKind::Partial) {
        return Ok(None);
    }
    let header = WalHeader::parse_file(file, &staged.body).map_err(|e| e.to_string())?;
    if let Some(claimed) = staged.info.metadata.get(META_SYSTEM_IDENTIFIER) {
        if claimed != &header.system_identifier.to_string() {
            return Err(format!(
                "system identifier {} in the header, the shipper recorded {claimed}",
                header.system_identifier
            ));
        }
    }
    Ok(Some(header))
}

fn target_failure_metric(provider: Provider) -> &'static str {
    match provider {
        Provider::R2 => "R2Failures",
        Provider::B2 => "B2Failures",
    }
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
        Err(ReplicateError::Store { .. }) => "failed",
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
