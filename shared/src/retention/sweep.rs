//! Carrying out a retention plan: delete expired files from every
//! provider, then their catalog records. Idempotent: a file whose delete
//! failed anywhere keeps its record, is planned again next run, and
//! finished then.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use tokio::time::Instant;

use super::abandoned::{self, Abandoned};
use super::plan::{parse_history, plan, BackupEntry, Histories, Rules, WalEntry};
use crate::backends::Replicas;
use crate::backup::catalog::{group, BackupState};
use crate::catalog::{list_all, segment_size, Catalog, CatalogError, CatalogRecord, RecordRef};
use crate::clock::UnixMillis;
use crate::codec::{unpack_verified, verify};
use crate::error::chain;
use crate::file::{ArchivedFile, FileKind};
use crate::keys::{archive_key, ClusterName};
use crate::metrics::{Metric, MetricRecord};
use crate::provider::Provider;
use crate::retry::{Budget, RequestLimits};
use crate::seal::Identities;
use crate::store::{ObjectStore, StoreError};
use crate::wal::{WalFileKind, WalFileName};

/// Files expired per round of batched deletes.
const DELETE_BATCH: usize = 500;

/// Catalog deletes in flight at once.
const CATALOG_CONCURRENCY: usize = 16;

pub struct Sweeper {
    pub cluster: ClusterName,
    pub catalog: Arc<dyn Catalog>,
    /// For the parts of abandoned base backups, which only this sweep removes.
    pub staging: Arc<dyn ObjectStore>,
    /// Every provider's replica, with credentials that may delete.
    pub replicas: Replicas,
    pub rules: Rules,
    /// At most this many files deleted per run: a bound on what one run
    /// can do, whatever the plan says.
    pub max_deletes: usize,
    pub limits: RequestLimits,
    /// A base backup with no descriptor and nothing added for this long is
    /// abandoned (`WALVAULT_INCOMPLETE_BACKUP_DAYS`).
    pub abandoned_after: Duration,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub dry_run: bool,
    pub records: usize,
    pub planned: usize,
    /// Files deleted, per provider.
    pub deleted: BTreeMap<Provider, usize>,
    pub catalog_removed: usize,
    pub bytes_freed: u64,
    /// Kept files by reason.
    pub kept: BTreeMap<String, usize>,
    /// The backup each live timeline is anchored on.
    pub anchors: BTreeMap<u32, String>,
    /// Complete base backups in the catalog, kept and expired.
    pub backups_kept: usize,
    pub backups_planned: usize,
    /// Expired backups whose every part is gone.
    pub backups_deleted: usize,
    /// Backups that never finished, removed.
    pub abandoned_backups: usize,
    /// Staging objects of abandoned backups removed.
    pub staging_removed: usize,
    /// No base backup was known: nothing was deleted, or (age-only
    /// retention chosen) files were deleted by age alone.
    pub no_base_backup: bool,
    /// The run stopped at the deadline or the per-run cap; the next one continues.
    pub stopped_early: bool,
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("listing the catalog")]
    Catalog(#[from] CatalogError),
    /// Without every timeline's history the planner cannot tell which
    /// files other timelines need: nothing is deleted.
    #[error("cannot read timeline history {file}: {detail}")]
    History { file: ArchivedFile, detail: String },
    /// The replicated segments do not agree on one segment size, which
    /// reading the histories needs: nothing is deleted.
    #[error("the catalog's replicated segments have no single segment size: {0}")]
    SegmentSize(String),
    /// Listing the staging area's backup parts failed: nothing is deleted.
    #[error("listing staged backup parts")]
    Staging(#[source] StoreError),
}

/// What the planner needs of a complete catalog backup.
fn backup_entry(state: &BackupState) -> Option<BackupEntry> {
    let summary = state.summary.as_ref().filter(|_| state.is_complete())?;
    let size = summary.segment_size()?;
    Some(BackupEntry {
        id: state.id,
        start: summary.start_segment()?,
        offset: summary.start_lsn().offset_in_segment(size) as u32,
        finished: summary.stopped_at_ms,
    })
}

impl Sweeper {
    /// The sweep a deployment's configuration describes, on its backends.
    pub fn from_config(
        config: &crate::config::Config,
        backends: &crate::backends::Backends,
    ) -> Self {
        Sweeper {
            cluster: config.cluster.clone(),
            catalog: Arc::clone(&backends.catalog),
            staging: Arc::clone(&backends.staging),
            replicas: backends.replicas.clone(),
            rules: Rules::from_config(config),
            max_deletes: config.retention_max_deletes,
            limits: RequestLimits::from_config(config),
            abandoned_after: config.incomplete_backup_age,
        }
    }

    /// Plans at `now` and, unless `dry_run`, deletes until done, the cap,
    /// or `deadline`.
    pub async fn sweep(
        &self,
        now: UnixMillis,
        dry_run: bool,
        deadline: Instant,
    ) -> Result<SweepReport, SweepError> {
        let budget = self.limits.until(deadline);
        let records = budget
            .run("catalog list", || {
                list_all(self.catalog.as_ref(), &self.cluster)
            })
            .await?;
        let histories = self.histories(&records, &budget).await?;
        let entries: Vec<WalEntry> = records.iter().filter_map(WalEntry::of).collect();
        let states = group(
            records
                .iter()
                .filter(|r| r.file.backup().is_some())
                .cloned()
                .collect(),
        );
        let complete: Vec<BackupEntry> = states.iter().filter_map(backup_entry).collect();
        let plan = plan(&entries, &complete, &histories, now, &self.rules);
        let abandoned = budget
            .run("staging list of backup parts", || {
                abandoned::find(
                    self.staging.as_ref(),
                    &self.cluster,
                    &states,
                    now,
                    self.abandoned_after,
                )
            })
            .await
            .map_err(SweepError::Staging)?;
        let mut report = SweepReport {
            dry_run,
            records: records.len(),
            planned: plan.delete.len(),
            no_base_backup: plan.no_base_backup,
            anchors: plan
                .anchors
                .iter()
                .map(|(t, b)| (*t, b.to_string()))
                .collect(),
            backups_kept: plan.kept_backups.len(),
            backups_planned: plan.delete_backups.len(),
            ..SweepReport::default()
        };
        for reason in plan.kept.values() {
            *report.kept.entry(format!("{reason:?}")).or_default() += 1;
        }
        if plan.no_base_backup {
            tracing::error!(cluster = %self.cluster, age_only = self.rules.age_only_without_backups, "NO BASE BACKUP in the archive: retention deletes nothing (unless WALVAULT_RETENTION_AGE_ONLY chose deleting by age alone, which cannot guarantee point-in-time recovery)");
        }
        if !dry_run {
            let by_name: BTreeMap<WalFileName, &CatalogRecord> = records
                .iter()
                .filter_map(|r| Some((r.file.wal()?, r)))
                .collect();
            let allowed = plan.delete.len().min(self.max_deletes);
            let mut attempted = 0;
            for batch in plan.delete[..allowed].chunks(DELETE_BATCH) {
                if budget.is_spent() {
                    break;
                }
                let batch: Vec<&CatalogRecord> = batch
                    .iter()
                    .filter_map(|f| by_name.get(f).copied())
                    .collect();
                self.expire(&batch, &budget, &mut report).await;
                attempted += batch.len();
            }
            let mut stopped_early = attempted < plan.delete.len();
            for id in &plan.delete_backups {
                if budget.is_spent() || attempted >= self.max_deletes {
                    stopped_early = true;
                    break;
                }
                if let Some(state) = states.iter().find(|s| s.id == *id) {
                    attempted += state.parts.len();
                    if self.expire_backup(&state.parts, &budget, &mut report).await {
                        report.backups_deleted += 1;
                    }
                }
            }
            for backup in &abandoned {
                if budget.is_spent() || attempted >= self.max_deletes {
                    stopped_early = true;
                    break;
                }
                attempted += backup.records.len() + backup.staged_keys.len();
                self.remove_abandoned(backup, &budget, &mut report).await;
            }
            report.stopped_early = stopped_early;
        }
        self.emit(&report);
        Ok(report)
    }

    /// Deletes every part of an expired backup, the descriptor first: a
    /// backup interrupted half-way no longer looks complete, and the
    /// abandoned-backup rule finishes it. Whether every part is gone.
    async fn expire_backup(
        &self,
        parts: &[CatalogRecord],
        budget: &Budget,
        report: &mut SweepReport,
    ) -> bool {
        let (descriptors, chunks): (Vec<&CatalogRecord>, Vec<&CatalogRecord>) = parts
            .iter()
            .partition(|r| r.file.kind() == FileKind::BackupDescriptor);
        let before = report.catalog_removed;
        self.expire(&descriptors, budget, report).await;
        for batch in chunks.chunks(DELETE_BATCH) {
            self.expire(batch, budget, report).await;
        }
        report.catalog_removed - before == parts.len()
    }

    /// Removes an abandoned backup's parts from the providers, the catalog
    /// and staging.
    async fn remove_abandoned(
        &self,
        backup: &Abandoned,
        budget: &Budget,
        report: &mut SweepReport,
    ) {
        tracing::warn!(backup = ?backup.id.map(|id| id.to_string()), parts = backup.records.len() + backup.staged_keys.len(), "removing a base backup that never finished");
        let records: Vec<&CatalogRecord> = backup.records.iter().collect();
        for batch in records.chunks(DELETE_BATCH) {
            self.expire(batch, budget, report).await;
        }
        // One DeleteObject each: a batch delete needs more rights than the
        // retention role has on staging.
        let mut all_gone = true;
        for keys in backup.staged_keys.chunks(CATALOG_CONCURRENCY) {
            let deletes = keys.iter().map(|key| {
                budget.run(format!("staging delete {key}"), || self.staging.delete(key))
            });
            for result in join_all(deletes).await {
                match result {
                    Ok(()) => report.staging_removed += 1,
                    Err(e) => {
                        all_gone = false;
                        report.errors.push(chain(&e));
                    }
                }
            }
        }
        if all_gone {
            report.abandoned_backups += 1;
        }
    }

    /// Deletes a batch of files from every provider (batched requests),
    /// then the records of those gone from all.
    async fn expire(&self, batch: &[&CatalogRecord], budget: &Budget, report: &mut SweepReport) {
        let keys: Vec<String> = batch
            .iter()
            .map(|r| archive_key(&r.cluster, r.file))
            .collect();
        let deletes = self.replicas.iter().map(|replica| async {
            match tokio::time::timeout(budget.left(), replica.store.delete_many(&keys)).await {
                Ok(results) => results
                    .into_iter()
                    .map(|r| r.map_err(|e| chain(&e)))
                    .collect(),
                Err(_) => vec![
                    Err(format!(
                        "{}: deletes cut off at the deadline",
                        replica.provider
                    ));
                    keys.len()
                ],
            }
        });
        let results: Vec<Vec<Result<(), String>>> = join_all(deletes).await;
        let mut gone: Vec<&CatalogRecord> = Vec::new();
        for (i, record) in batch.iter().enumerate() {
            let mut all_gone = true;
            for (replica, results) in self.replicas.iter().zip(&results) {
                match &results[i] {
                    Ok(()) => {
                        *report.deleted.entry(replica.provider).or_default() += 1;
                        if let Some(target) = record.target(replica.provider) {
                            report.bytes_freed += target.size;
                        }
                    }
                    Err(e) => {
                        all_gone = false;
                        report.errors.push(e.clone());
                    }
                }
            }
            if all_gone {
                gone.push(record);
            }
        }
        self.remove_records(&gone, budget, report).await;
    }

    /// Removes the records of files gone from every provider; conditional
    /// deletes are one request each, so a few at a time.
    async fn remove_records(
        &self,
        gone: &[&CatalogRecord],
        budget: &Budget,
        report: &mut SweepReport,
    ) {
        for chunk in gone.chunks(CATALOG_CONCURRENCY) {
            let deletes = chunk.iter().map(|record| {
                budget.run(format!("catalog delete {}", record.file), || {
                    self.catalog.delete(RecordRef::of(record))
                })
            });
            for result in join_all(deletes).await {
                match result {
                    Ok(()) => report.catalog_removed += 1,
                    Err(e) => report.errors.push(chain(&e)),
                }
            }
        }
    }

    /// Reads every archived `.history` file (from the first provider with
    /// a verified copy).
    async fn histories(
        &self,
        records: &[CatalogRecord],
        budget: &Budget,
    ) -> Result<Histories, SweepError> {
        let mut histories = Histories::new();
        let history_records: Vec<&CatalogRecord> = records
            .iter()
            .filter(|r| r.file.kind() == FileKind::Wal(WalFileKind::History))
            .collect();
        if history_records.is_empty() {
            return Ok(histories);
        }
        let segment_size = segment_size(records).map_err(SweepError::SegmentSize)?;
        for record in history_records {
            let ArchivedFile::Wal(WalFileName::History { timeline }) = record.file else {
                continue;
            };
            let text = self.read_verified(record, budget).await?;
            let switches =
                parse_history(&text, segment_size).map_err(|detail| SweepError::History {
                    file: record.file,
                    detail,
                })?;
            histories.insert(timeline, switches);
        }
        Ok(histories)
    }

    /// A timeline history file's text: from its record, where the
    /// compress function keeps its bytes (this function cannot open sealed
    /// copies), else from a replica; verified either way.
    async fn read_verified(
        &self,
        record: &CatalogRecord,
        budget: &Budget,
    ) -> Result<String, SweepError> {
        if let Some(bytes) = &record.history {
            return match verify(bytes, record.raw_size, &record.raw_sha256) {
                Ok(()) => Ok(String::from_utf8_lossy(bytes).into_owned()),
                Err(e) => Err(SweepError::History {
                    file: record.file,
                    detail: format!("the text in its record: {e}"),
                }),
            };
        }
        let key = archive_key(&record.cluster, record.file);
        let mut problems = Vec::new();
        let nobody = Identities::default();
        for replica in self.replicas.iter() {
            let got = budget
                .run(format!("{} get {key}", replica.provider), || {
                    replica.store.get(&key)
                })
                .await;
            match got {
                Ok(object) => {
                    match unpack_verified(
                        &object.body,
                        record.raw_size,
                        &record.raw_sha256,
                        &nobody,
                    ) {
                        Ok(raw) => return Ok(String::from_utf8_lossy(&raw).into_owned()),
                        Err(e) => problems.push(format!("{}: {e}", replica.provider)),
                    }
                }
                Err(e) => problems.push(chain(&e)),
            }
        }
        Err(SweepError::History {
            file: record.file,
            detail: problems.join("; "),
        })
    }

    fn emit(&self, report: &SweepReport) {
        let mut record = MetricRecord::new(self.cluster.as_str());
        record
            .add(Metric::RetentionDeleted, report.catalog_removed as f64)
            .add(Metric::RetentionBytesFreed, report.bytes_freed as f64)
            .add(Metric::RetentionErrors, report.errors.len() as f64)
            .add(
                Metric::RetentionNoBaseBackup,
                if report.no_base_backup { 1.0 } else { 0.0 },
            )
            .property("report", serde_json::to_value(report).unwrap_or_default());
        record.emit();
    }
}
