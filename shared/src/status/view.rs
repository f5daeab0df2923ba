//! What `walvault status` reads: the summary item, then the records it
//! does not cover yet (those archived since the last fold, and any still
//! being replicated), so that the figures are current while the number of
//! requests stays small however large the catalog.

use serde::Serialize;

use super::drill::{last_drill, LastDrill};
use super::keep::{load, read_range, CatalogRange, RetentionRun, StagingReport, VerifyRun};
use super::summary::ArchiveSummary;
use super::StatusError;
use crate::catalog::{Catalog, RecordStatus};
use crate::clock::UnixMillis;
use crate::error::chain;
use crate::keys::ClusterName;
use crate::provider::Provider;
use crate::retry::Budget;
use crate::store::ObjectStore;

/// Pages read per range after the summary's position: 10,000 records.
/// Beyond that the functions have not kept the summary for a long while,
/// and status says its figures are partial rather than read on.
pub const STATUS_PAGES: usize = 20;

/// Files in flight listed (all are counted).
const IN_FLIGHT_LISTED: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub cluster: String,
    pub now: UnixMillis,
    /// The summary item's version; `None` when the functions have not
    /// written one yet.
    pub summary_version: Option<u64>,
    /// Why the summary item could not be used (its records were read).
    pub summary_problem: Option<String>,
    pub summary_updated_at: Option<UnixMillis>,
    pub rebuilt_at: Option<UnixMillis>,
    pub retention: Option<RetentionRun>,
    pub staging: Option<StagingReport>,
    pub verify: Option<VerifyRun>,
    /// The kept figures with the newer records folded in.
    pub archive: ArchiveSummary,
    /// Files not on every provider yet (`replicating`, `partial`).
    pub in_flight: Vec<InFlight>,
    pub in_flight_count: u64,
    /// Records read besides the summary item.
    pub records_read: u64,
    /// Catalog requests made.
    pub catalog_requests: u64,
    /// More records were left unread than status reads: figures partial.
    pub unread: bool,
    pub last_drill: Option<LastDrill>,
    /// Why the drill reports could not be read.
    pub drill_problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    pub file: String,
    pub status: String,
    pub staged_at: UnixMillis,
    /// The providers with no copy recorded.
    pub missing: Vec<String>,
    pub detail: Option<String>,
}

/// Reads the summary, the records after it and the last drill's report.
pub async fn read(
    catalog: &dyn Catalog,
    staging: &dyn ObjectStore,
    cluster: &ClusterName,
    now: UnixMillis,
    budget: &Budget,
) -> Result<StatusView, StatusError> {
    let loaded = load(catalog, cluster, budget).await?;
    let (stored, summary_problem) = match loaded.summary {
        Ok(stored) => (stored, None),
        Err(problem) => (Default::default(), Some(problem)),
    };
    let mut view = StatusView {
        cluster: cluster.to_string(),
        now,
        summary_version: loaded.version,
        summary_problem,
        summary_updated_at: loaded.version.map(|_| stored.updated_at),
        rebuilt_at: stored.rebuilt_at,
        retention: stored.retention,
        staging: stored.staging,
        verify: stored.verify,
        archive: stored.archive,
        in_flight: Vec::new(),
        in_flight_count: 0,
        records_read: 0,
        catalog_requests: 1,
        unread: false,
        last_drill: None,
        drill_problem: None,
    };
    match last_drill(staging, cluster, budget).await {
        Ok(drill) => view.last_drill = drill,
        Err(e) => view.drill_problem = Some(chain(&e)),
    }
    for range in [CatalogRange::Wal, CatalogRange::Backups] {
        let after = match range {
            CatalogRange::Wal => view.archive.wal_through.clone(),
            CatalogRange::Backups => view.archive.backups_through.clone(),
        };
        let (archive, in_flight) = (&mut view.archive, &mut view.in_flight);
        let (mut read, mut flying) = (0u64, 0u64);
        let pages = read_range(
            catalog,
            cluster,
            range,
            after.as_deref(),
            STATUS_PAGES,
            budget,
            |record| {
                read += 1;
                if matches!(
                    record.status,
                    RecordStatus::Replicating | RecordStatus::Partial
                ) {
                    flying += 1;
                    if in_flight.len() < IN_FLIGHT_LISTED {
                        in_flight.push(InFlight {
                            file: record.file.to_string(),
                            status: record.status.to_string(),
                            staged_at: record.staged_at,
                            missing: Provider::ALL
                                .into_iter()
                                .filter(|p| record.target(*p).is_none())
                                .map(|p| p.as_str().to_owned())
                                .collect(),
                            detail: record.detail.clone(),
                        });
                    }
                }
                // A file with no copy yet is not archived: it is in flight only.
                if record.status != RecordStatus::Replicating {
                    archive.add(record);
                }
                true
            },
        )
        .await?;
        view.records_read += read;
        view.in_flight_count += flying;
        view.catalog_requests += pages.pages as u64;
        view.unread |= pages.truncated;
    }
    Ok(view)
}
