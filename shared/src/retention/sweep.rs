//! Carrying out a retention plan: delete expired files from R2 and B2, then
//! their catalog records. Idempotent: a file whose delete failed anywhere
//! keeps its record, is planned again next run, and finished then.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plan::{parse_history, plan, Histories};
use crate::catalog::{
    dynamodb_client, list_all, Catalog, CatalogError, CatalogRecord, DynamoCatalog, RecordRef,
    UnixMillis,
};
use crate::codec::decompress_verified;
use crate::config::{Config, ConfigError, Provider};
use crate::keys::{archive_key, ClusterName};
use crate::metrics::{MetricRecord, Unit};
use crate::store::{configured_replica, ObjectStore};
use crate::wal::{WalFileKind, WalFileName};

/// Files expired per round of batched deletes.
const DELETE_BATCH: usize = 500;

/// Catalog deletes in flight at once.
const CATALOG_CONCURRENCY: usize = 16;

pub struct Sweeper {
    pub cluster: ClusterName,
    pub catalog: Arc<dyn Catalog>,
    /// Clients whose credentials may delete.
    pub r2: Arc<dyn ObjectStore>,
    pub b2: Arc<dyn ObjectStore>,
    pub window: Duration,
    /// At most this many files deleted per run: a bound on what one run
    /// can do, whatever the plan says.
    pub max_deletes: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub dry_run: bool,
    pub records: usize,
    pub planned: usize,
    pub deleted_r2: usize,
    pub deleted_b2: usize,
    pub catalog_removed: usize,
    pub bytes_freed: u64,
    /// Kept files by reason.
    pub kept: BTreeMap<String, usize>,
    /// The backup each live timeline is anchored on.
    pub anchors: BTreeMap<u32, String>,
    pub age_only_fallback: bool,
    /// The run stopped at the deadline or the per-run cap; the next one continues.
    pub stopped_early: bool,
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Without every timeline's history the planner cannot tell which
    /// files other timelines need: nothing is deleted.
    #[error("cannot read timeline history {file}: {detail}")]
    History { file: String, detail: String },
}

impl Sweeper {
    /// The sweeper of one cold start, from configuration.
    pub fn from_config(sdk: &aws_config::SdkConfig, config: &Config) -> Result<Self, ConfigError> {
        Ok(Sweeper {
            cluster: config.cluster.clone(),
            catalog: Arc::new(DynamoCatalog::new(
                dynamodb_client(sdk, config),
                &config.catalog.table,
            )),
            r2: configured_replica(sdk, config, Provider::R2)?,
            b2: configured_replica(sdk, config, Provider::B2)?,
            window: config.retention,
            max_deletes: config.retention_max_deletes,
        })
    }

    /// Plans at `now` and, unless `dry_run`, deletes until done, the cap,
    /// or `deadline`.
    pub async fn sweep(
        &self,
        now: UnixMillis,
        dry_run: bool,
        deadline: Instant,
    ) -> Result<SweepReport, SweepError> {
        let records = list_all(self.catalog.as_ref(), &self.cluster).await?;
        let histories = self.histories(&records).await?;
        let plan = plan(&records, &histories, now, self.window.as_millis() as u64);
        let mut report = SweepReport {
            dry_run,
            records: records.len(),
            planned: plan.delete.len(),
            age_only_fallback: plan.age_only_fallback,
            anchors: plan
                .anchors
                .iter()
                .map(|(t, b)| (*t, b.to_string()))
                .collect(),
            ..SweepReport::default()
        };
        for reason in plan.kept.values() {
            *report.kept.entry(format!("{reason:?}")).or_default() += 1;
        }
        if plan.age_only_fallback {
            tracing::error!(cluster = %self.cluster, "NO BASE BACKUP in the archive: retention falls back to file age alone, which cannot guarantee point-in-time recovery");
        }
        if !dry_run {
            let by_name: BTreeMap<WalFileName, &CatalogRecord> =
                records.iter().map(|r| (r.file, r)).collect();
            let allowed = plan.delete.len().min(self.max_deletes);
            let mut attempted = 0;
            for batch in plan.delete[..allowed].chunks(DELETE_BATCH) {
                if Instant::now() >= deadline {
                    break;
                }
                let batch: Vec<&CatalogRecord> = batch
                    .iter()
                    .filter_map(|f| by_name.get(f).copied())
                    .collect();
                self.expire(&batch, &mut report).await;
                attempted += batch.len();
            }
            report.stopped_early = attempted < plan.delete.len();
        }
        self.emit(&report);
        Ok(report)
    }

    /// Deletes a batch of files from both providers (batched requests),
    /// then the records of those gone from both.
    async fn expire(&self, batch: &[&CatalogRecord], report: &mut SweepReport) {
        let keys: Vec<String> = batch
            .iter()
            .map(|r| archive_key(&r.cluster, &r.file))
            .collect();
        let (r2, b2) = tokio::join!(self.r2.delete_many(&keys), self.b2.delete_many(&keys));
        let mut gone: Vec<&CatalogRecord> = Vec::new();
        for ((record, r2), b2) in batch.iter().zip(r2).zip(b2) {
            let mut all_gone = true;
            for (provider, result) in [(Provider::R2, r2), (Provider::B2, b2)] {
                match result {
                    Ok(()) => {
                        match provider {
                            Provider::R2 => report.deleted_r2 += 1,
                            Provider::B2 => report.deleted_b2 += 1,
                        }
                        if record.target(provider).is_some() {
                            report.bytes_freed += record.compressed_size.unwrap_or(0);
                        }
                    }
                    Err(e) => {
                        all_gone = false;
                        report.errors.push(e.to_string());
                    }
                }
            }
            if all_gone {
                gone.push(record);
            }
        }
        // Catalog deletes are conditional, so one request each: a few at a time.
        for chunk in gone.chunks(CATALOG_CONCURRENCY) {
            let mut deletes = tokio::task::JoinSet::new();
            for record in chunk {
                let catalog = Arc::clone(&self.catalog);
                let (cluster, file, sha) = (
                    record.cluster.clone(),
                    record.file,
                    record.raw_sha256.clone(),
                );
                deletes.spawn(async move {
                    catalog
                        .delete(RecordRef {
                            cluster: &cluster,
                            file: &file,
                            raw_sha256: &sha,
                        })
                        .await
                });
            }
            while let Some(done) = deletes.join_next().await {
                match done {
                    Ok(Ok(())) => report.catalog_removed += 1,
                    Ok(Err(e)) => report.errors.push(e.to_string()),
                    Err(e) => report.errors.push(format!("catalog delete task: {e}")),
                }
            }
        }
    }

    /// Reads every archived `.history` file (from R2, else B2), verified.
    async fn histories(&self, records: &[CatalogRecord]) -> Result<Histories, SweepError> {
        let segment_size = records
            .iter()
            .find(|r| r.file.kind() == WalFileKind::Segment)
            .map(|r| r.raw_size)
            .unwrap_or(16 << 20);
        let mut histories = Histories::new();
        for record in records
            .iter()
            .filter(|r| r.file.kind() == WalFileKind::History)
        {
            let WalFileName::History { timeline } = record.file else {
                continue;
            };
            let text = self.read_verified(record).await?;
            let switches =
                parse_history(&text, segment_size).map_err(|detail| SweepError::History {
                    file: record.file.to_string(),
                    detail,
                })?;
            histories.insert(timeline, switches);
        }
        Ok(histories)
    }

    async fn read_verified(&self, record: &CatalogRecord) -> Result<String, SweepError> {
        let key = archive_key(&record.cluster, &record.file);
        let mut problems = Vec::new();
        for store in [&self.r2, &self.b2] {
            match store.get(&key).await {
                Ok(object) => {
                    match decompress_verified(&object.body, record.raw_size, &record.raw_sha256) {
                        Ok(raw) => return Ok(String::from_utf8_lossy(&raw).into_owned()),
                        Err(e) => problems.push(format!("{}: {e}", store.name())),
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(SweepError::History {
            file: record.file.to_string(),
            detail: problems.join("; "),
        })
    }

    fn emit(&self, report: &SweepReport) {
        let deleted = report.catalog_removed as f64;
        MetricRecord::new(self.cluster.as_str())
            .metric("RetentionDeleted", deleted, Unit::Count)
            .metric(
                "RetentionBytesFreed",
                report.bytes_freed as f64,
                Unit::Bytes,
            )
            .metric("RetentionErrors", report.errors.len() as f64, Unit::Count)
            .metric(
                "RetentionAgeOnlyFallback",
                if report.age_only_fallback { 1.0 } else { 0.0 },
                Unit::Count,
            )
            .property("report", serde_json::to_value(report).unwrap_or_default())
            .emit();
    }
}
