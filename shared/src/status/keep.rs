//! The summary item, kept by the functions: after each re-drive (every few
//! minutes) the compress function folds in the records settled since the
//! last time and stores the staging backlog it measured; after each sweep
//! the retention function rebuilds the whole summary from every record
//! (undoing what it deleted) and stores what the sweep and the verify did.
//! Writes are conditional on the version read, so two writers never undo
//! each other: the loser reads again and redoes its part.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use super::summary::{ArchiveSummary, Keeping};
use super::StatusError;
use crate::backup::name::BackupFile;
use crate::catalog::{Catalog, CatalogError, CatalogRecord, ClusterItemKind, RecordStatus};
use crate::clock::UnixMillis;
use crate::file::ArchivedFile;
use crate::keys::ClusterName;
use crate::retention::sweep::SweepReport;
use crate::retry::Budget;
use crate::verify::ScheduledVerify;

/// Pages one refresh reads at most per range: at 500 records a page, far
/// more than a few minutes of archiving; the next run goes on.
pub const REFRESH_PAGES: usize = 40;

/// The summary item's body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredSummary {
    pub archive: ArchiveSummary,
    pub updated_at: UnixMillis,
    /// When every record was last read (by the retention function).
    pub rebuilt_at: Option<UnixMillis>,
    pub retention: Option<RetentionRun>,
    pub staging: Option<StagingReport>,
    pub verify: Option<VerifyRun>,
}

/// The last retention sweep, as its report gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRun {
    pub at: UnixMillis,
    pub window_days: u32,
    pub dry_run: bool,
    /// The backup each live timeline is anchored on.
    pub anchors: BTreeMap<u32, String>,
    pub files_deleted: usize,
    pub bytes_freed: u64,
    pub backups_deleted: usize,
    pub no_base_backup: bool,
    pub stopped_early: bool,
    pub errors: usize,
}

impl RetentionRun {
    /// The sweep `report` describes, run at `at` with a window of `window_ms`.
    pub fn of(report: &SweepReport, window_ms: u64, at: UnixMillis) -> Self {
        RetentionRun {
            at,
            window_days: u32::try_from(window_ms / 86_400_000).unwrap_or(u32::MAX),
            dry_run: report.dry_run,
            anchors: report.anchors.clone(),
            files_deleted: report.catalog_removed,
            bytes_freed: report.bytes_freed,
            backups_deleted: report.backups_deleted,
            no_base_backup: report.no_base_backup,
            stopped_early: report.stopped_early,
            errors: report.errors.len(),
        }
    }
}

/// The staging backlog the last re-drive measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingReport {
    pub at: UnixMillis,
    pub backlog: u64,
    pub oldest_age_ms: u64,
}

/// The scheduled verify that followed the last sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRun {
    pub at: UnixMillis,
    pub files: u64,
    /// Wrong and not repaired: copies, orphans, WAL breaks, corrupt files.
    pub outstanding: u64,
    /// Of which copies missing or damaged.
    #[serde(default)]
    pub copies: u64,
    pub repaired: u64,
    pub unchecked: u64,
    pub failed: Option<String>,
}

impl VerifyRun {
    /// The scheduled verify's outcome, finished at `at`.
    pub fn of(verified: &ScheduledVerify, at: UnixMillis) -> Self {
        VerifyRun {
            at,
            files: verified.files,
            outstanding: verified.outstanding,
            copies: verified.copies,
            repaired: verified.repaired,
            unchecked: verified.unchecked,
            failed: verified.failed.clone(),
        }
    }
}

/// The summary item as read: its version (for the conditional write) and
/// its body, or why the body could not be read (it is then rebuilt).
pub struct Loaded {
    pub version: Option<u64>,
    pub summary: Result<StoredSummary, String>,
}

pub async fn load(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    budget: &Budget,
) -> Result<Loaded, StatusError> {
    let item = budget
        .run("catalog read summary", || {
            catalog.get_cluster_item(cluster, ClusterItemKind::Summary)
        })
        .await?;
    Ok(match item {
        None => Loaded {
            version: None,
            summary: Ok(StoredSummary::default()),
        },
        Some(item) => Loaded {
            version: Some(item.version),
            summary: serde_json::from_str(&item.body)
                .map_err(|e| format!("the summary item does not parse: {e}")),
        },
    })
}

async fn save(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    expected: Option<u64>,
    summary: &StoredSummary,
    budget: &Budget,
) -> Result<(), StatusError> {
    let body = serde_json::to_string(summary)
        .map_err(|e| StatusError::Malformed(format!("summary to JSON: {e}")))?;
    // A lost answer retried sees its own write as a failed condition: the
    // caller reads again and redoes the fold, which is harmless.
    budget
        .run("catalog write summary", || {
            catalog.put_cluster_item(cluster, ClusterItemKind::Summary, expected, &body)
        })
        .await?;
    Ok(())
}

/// The two ranges of the catalog's order: WAL files, then backup parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogRange {
    Wal,
    Backups,
}

/// What reading a range showed.
#[derive(Debug, Default, Clone, Copy)]
pub struct RangeRead {
    pub pages: usize,
    /// Stopped by `max_pages` with more records to read.
    pub truncated: bool,
}

/// Reads `range` after `after`, a page at a time, handing each record to
/// `visit` until it answers `false`, the range ends or `max_pages` pages
/// were read.
pub async fn read_range(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    range: CatalogRange,
    after: Option<&str>,
    max_pages: usize,
    budget: &Budget,
    mut visit: impl FnMut(&CatalogRecord) -> bool,
) -> Result<RangeRead, StatusError> {
    let prefix = match range {
        CatalogRange::Wal => String::new(),
        CatalogRange::Backups => BackupFile::all_prefix(),
    };
    let mut after: Option<ArchivedFile> = match after {
        Some(name) => Some(name.parse().map_err(|_| {
            StatusError::Malformed(
                "the summary's position in the catalog is not a file name".into(),
            )
        })?),
        None => None,
    };
    let mut read = RangeRead::default();
    loop {
        if read.pages == max_pages {
            read.truncated = true;
            return Ok(read);
        }
        let page = budget
            .run("catalog list", || {
                catalog.list_page(cluster, &prefix, after.as_ref())
            })
            .await?;
        read.pages += 1;
        for record in &page.records {
            let in_range = match range {
                CatalogRange::Wal => matches!(record.file, ArchivedFile::Wal(_)),
                CatalogRange::Backups => matches!(record.file, ArchivedFile::Backup(_)),
            };
            if !in_range || !visit(record) {
                return Ok(read);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(read),
        }
    }
}

impl StagingReport {
    /// When the oldest object still waiting was staged, if any waits.
    pub fn oldest_waiting(&self) -> Option<UnixMillis> {
        (self.backlog > 0).then(|| self.at.saturating_sub(self.oldest_age_ms))
    }
}

/// Folds the records of both ranges after the summary's positions, as far
/// as `keeping` allows and `max_pages` pages per range.
async fn fold_ranges(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    archive: &mut ArchiveSummary,
    keeping: &Keeping,
    max_pages: usize,
    budget: &Budget,
) -> Result<(), StatusError> {
    for range in [CatalogRange::Wal, CatalogRange::Backups] {
        let after = match range {
            CatalogRange::Wal => archive.wal_through.clone(),
            CatalogRange::Backups => archive.backups_through.clone(),
        };
        read_range(
            catalog,
            cluster,
            range,
            after.as_deref(),
            max_pages,
            budget,
            |record| !archive.fold_settled([record], keeping),
        )
        .await?;
    }
    Ok(())
}

/// The record named `name`, read by key (`None` for a name that is no
/// file's: the summary item was written by something else).
pub(super) async fn look_up(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    name: &str,
    budget: &Budget,
) -> Result<Option<CatalogRecord>, StatusError> {
    let Ok(file) = name.parse::<ArchivedFile>() else {
        return Ok(None);
    };
    Ok(budget
        .run(format!("catalog get {name}"), || {
            catalog.get(cluster, &file)
        })
        .await?)
}

/// Counts the stuck records that have settled since, and drops them from
/// the list with those that are gone.
async fn settle_stuck(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    archive: &mut ArchiveSummary,
    budget: &Budget,
) -> Result<(), StatusError> {
    let mut still = Vec::with_capacity(archive.stuck.len());
    for name in std::mem::take(&mut archive.stuck) {
        match look_up(catalog, cluster, &name, budget).await? {
            Some(r) if matches!(r.status, RecordStatus::Replicating | RecordStatus::Partial) => {
                still.push(name)
            }
            Some(settled) => archive.count(&settled),
            None => {}
        }
    }
    archive.stuck = still;
    Ok(())
}

/// Writes `change(summary)` over the summary item, reading it again and
/// redoing the change while another writer gets in between.
async fn update<F, Fut>(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    budget: &Budget,
    mut change: F,
) -> Result<(), StatusError>
where
    F: FnMut(Result<StoredSummary, String>) -> Fut,
    Fut: Future<Output = Result<StoredSummary, StatusError>>,
{
    for _ in 0..3 {
        let loaded = load(catalog, cluster, budget).await?;
        let summary = change(loaded.summary).await?;
        match save(catalog, cluster, loaded.version, &summary, budget).await {
            Err(StatusError::Catalog(CatalogError::ConditionFailed { .. })) => continue,
            other => return other,
        }
    }
    Err(StatusError::Contended)
}

/// What the re-drive adds: the records settled since the last fold, and
/// its staging backlog.
pub async fn refresh(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    staging: StagingReport,
    now: UnixMillis,
    budget: &Budget,
) -> Result<(), StatusError> {
    let keeping = Keeping {
        now,
        staging: Some(staging),
    };
    update(catalog, cluster, budget, |loaded| async move {
        // An unreadable body is the retention function's to rebuild.
        let mut summary = loaded.map_err(StatusError::Malformed)?;
        settle_stuck(catalog, cluster, &mut summary.archive, budget).await?;
        let archive = &mut summary.archive;
        fold_ranges(catalog, cluster, archive, &keeping, REFRESH_PAGES, budget).await?;
        summary.staging = Some(staging);
        summary.updated_at = now;
        Ok(summary)
    })
    .await
}

/// What the retention function stores right after a sweep: the summary
/// rebuilt from the records (read anew, after the sweep's deletes) and
/// the sweep's report. The verify that follows adds its own with
/// [`record_verify`].
pub async fn rebuild(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    retention: RetentionRun,
    now: UnixMillis,
    budget: &Budget,
) -> Result<(), StatusError> {
    let stored = load(catalog, cluster, budget)
        .await?
        .summary
        .unwrap_or_default();
    // The last re-drive's report, however old: what it did not see is
    // left for the re-drives after it.
    let keeping = Keeping {
        now,
        staging: stored.staging,
    };
    let mut archive = ArchiveSummary::default();
    fold_ranges(catalog, cluster, &mut archive, &keeping, usize::MAX, budget).await?;
    update(catalog, cluster, budget, |kept| {
        let kept = kept.unwrap_or_default();
        std::future::ready(Ok(StoredSummary {
            archive: archive.clone(),
            updated_at: now,
            rebuilt_at: Some(now),
            retention: Some(retention.clone()),
            staging: kept.staging,
            verify: kept.verify,
        }))
    })
    .await
}

/// Stores what the scheduled verify found, leaving the rest as it is.
pub async fn record_verify(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    verify: VerifyRun,
    budget: &Budget,
) -> Result<(), StatusError> {
    update(catalog, cluster, budget, |kept| {
        std::future::ready(match kept {
            Err(problem) => Err(StatusError::Malformed(problem)),
            // Only beside a summary the rebuild wrote: alone it would look
            // like a summary kept long ago.
            Ok(kept) if kept.rebuilt_at.is_none() => Err(StatusError::Malformed(
                "no rebuilt summary to add the verify to".into(),
            )),
            Ok(mut kept) => {
                kept.verify = Some(verify.clone());
                Ok(kept)
            }
        })
    })
    .await
}
