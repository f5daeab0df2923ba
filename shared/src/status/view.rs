//! What `walvault status` reads: the summary item, then the records it
//! does not cover yet (those archived since the last fold, any still being
//! replicated, and the stuck ones it names), so that the figures are
//! current while the number of requests stays small however large the
//! catalog.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::drill::{last_drill, LastDrill};
use super::keep::{load, look_up, read_range, CatalogRange, StoredSummary};
use super::summary::SETTLE_GRACE_MS;
use super::summary::{ArchiveSummary, Gap};
use super::StatusError;
use crate::catalog::{Catalog, CatalogRecord, RecordStatus};
use crate::clock::UnixMillis;
use crate::error::chain;
use crate::keys::ClusterName;
use crate::provider::Provider;
use crate::retry::Budget;
use crate::store::ObjectStore;
use crate::wal::{SegmentSize, WalFileName};

/// Pages read per range after the summary's position: 10,000 records.
/// Beyond that the functions have not kept the summary for a long while,
/// and status says its figures are partial rather than read on.
pub const STATUS_PAGES: usize = 20;

/// Segments of gaps looked up by key at most, and the largest gap looked
/// into: a late file is one or a few segments; a longer gap is real.
const GAP_LOOKUPS: usize = 12;
const SMALL_GAP: u64 = 3;

/// Files in flight listed (all are counted).
const IN_FLIGHT_LISTED: usize = 50;

/// The most the last drill's report may take, read after everything else:
/// a staging bucket that hangs costs this, not the catalog's answer.
const DRILL_TIME: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub cluster: String,
    pub now: UnixMillis,
    /// The summary item's version; `None` when the functions have not
    /// written one yet.
    pub summary_version: Option<u64>,
    /// Why the summary item could not be used (its records were read).
    pub summary_problem: Option<String>,
    /// The summary item as kept, with the newer records folded into its
    /// `archive`; empty when there is none or it does not parse.
    #[serde(flatten)]
    pub kept: StoredSummary,
    pub in_flight: InFlight,
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

/// Files not on every provider yet (`replicating`, `partial`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct InFlight {
    pub count: u64,
    /// Of which staged longer ago than the settling grace.
    pub late: u64,
    /// The providers those late files are missing on.
    pub late_missing: BTreeSet<String>,
    /// When the oldest of them reached staging.
    pub oldest_staged_at: Option<UnixMillis>,
    /// The first files, in catalog order.
    pub files: Vec<InFlightFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InFlightFile {
    pub file: String,
    pub status: String,
    pub staged_at: UnixMillis,
    /// The providers with no copy recorded.
    pub missing: Vec<String>,
    pub detail: Option<String>,
}

impl StatusView {
    /// How long ago the functions last kept the summary, if they did.
    pub fn summary_age(&self) -> Option<Duration> {
        (self.summary_version.is_some() && self.summary_problem.is_none())
            .then(|| Duration::from_millis(self.now.saturating_sub(self.kept.updated_at)))
    }
}

impl InFlight {
    /// Counts `record` if it is not on every provider yet.
    fn note(&mut self, record: &CatalogRecord, now: UnixMillis) {
        if !matches!(
            record.status,
            RecordStatus::Replicating | RecordStatus::Partial
        ) {
            return;
        }
        let missing: Vec<String> = Provider::ALL
            .into_iter()
            .filter(|p| record.target(*p).is_none())
            .map(|p| p.as_str().to_owned())
            .collect();
        self.count += 1;
        if record.staged_at.saturating_add(SETTLE_GRACE_MS) <= now {
            self.late += 1;
            self.late_missing.extend(missing.iter().cloned());
        }
        self.oldest_staged_at = Some(
            self.oldest_staged_at
                .map_or(record.staged_at, |t| t.min(record.staged_at)),
        );
        if self.files.len() < IN_FLIGHT_LISTED {
            self.files.push(InFlightFile {
                file: record.file.to_string(),
                status: record.status.to_string(),
                staged_at: record.staged_at,
                missing,
                detail: record.detail.clone(),
            });
        }
    }
}

/// The segments missing in the newest small gaps (up to [`GAP_LOOKUPS`]):
/// a file recorded after the fold passed its place (it waited in staging
/// longer than the fold waits) is behind the summary's position, where no
/// listing finds it. Looked up by key, it closes its gap.
fn segments_to_recheck(archive: &ArchiveSummary) -> Vec<String> {
    let Some(size) = archive.segment_size.and_then(|s| SegmentSize::new(s).ok()) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    // The newest timeline's newest gaps first; a gap a corrupt file leaves
    // stays (its record is there, and is not the file).
    let gaps = archive
        .timelines
        .values()
        .rev()
        .flat_map(|span| span.gaps.iter().rev());
    let corrupt = |gap: &Gap| archive.corrupt_files.contains(&gap.first_missing);
    for gap in gaps.filter(|g| g.missing <= SMALL_GAP && !corrupt(g)) {
        let Ok(WalFileName::Segment(mut segment)) = gap.first_missing.parse::<WalFileName>() else {
            continue;
        };
        for _ in 0..gap.missing {
            if files.len() == GAP_LOOKUPS {
                return files;
            }
            files.push(WalFileName::Segment(segment).to_string());
            match segment.next(size) {
                Ok(next) => segment = next,
                Err(_) => break,
            }
        }
    }
    files
}

/// Reads the summary, the stuck records it names, the records after it
/// and the segments of its newest small gaps, then the last drill's report.
pub async fn read(
    catalog: &dyn Catalog,
    staging: &dyn ObjectStore,
    cluster: &ClusterName,
    now: UnixMillis,
    budget: &Budget,
) -> Result<StatusView, StatusError> {
    let loaded = load(catalog, cluster, budget).await?;
    let (kept, summary_problem) = match loaded.summary {
        Ok(kept) => (kept, None),
        Err(problem) => (StoredSummary::default(), Some(problem)),
    };
    let mut view = StatusView {
        cluster: cluster.to_string(),
        now,
        summary_version: loaded.version,
        summary_problem,
        kept,
        in_flight: InFlight::default(),
        records_read: 0,
        catalog_requests: 1,
        unread: false,
        last_drill: None,
        drill_problem: None,
    };
    for name in view.kept.archive.stuck.clone() {
        let record = look_up(catalog, cluster, &name, budget).await?;
        view.catalog_requests += 1;
        // Not in the kept figures: counted as it stands now.
        if let Some(record) = record {
            view.in_flight.note(&record, now);
            view.kept.archive.count(&record);
        }
    }
    for range in [CatalogRange::Wal, CatalogRange::Backups] {
        let after = match range {
            CatalogRange::Wal => view.kept.archive.wal_through.clone(),
            CatalogRange::Backups => view.kept.archive.backups_through.clone(),
        };
        let (archive, in_flight) = (&mut view.kept.archive, &mut view.in_flight);
        let mut read = 0u64;
        let pages = read_range(
            catalog,
            cluster,
            range,
            after.as_deref(),
            STATUS_PAGES,
            budget,
            |record| {
                read += 1;
                in_flight.note(record, now);
                archive.add(record);
                true
            },
        )
        .await?;
        view.records_read += read;
        view.catalog_requests += pages.pages as u64;
        view.unread |= pages.truncated;
    }
    for name in segments_to_recheck(&view.kept.archive) {
        let record = look_up(catalog, cluster, &name, budget).await?;
        view.catalog_requests += 1;
        // A corrupt record is counted already, and is no archived file.
        if let Some(record) = record.filter(|r| r.status != RecordStatus::Corrupt) {
            view.in_flight.note(&record, now);
            view.kept.archive.count(&record);
        }
    }
    let drill_budget = budget.by(Instant::now() + DRILL_TIME);
    match last_drill(staging, cluster, &drill_budget).await {
        Ok(drill) => view.last_drill = drill,
        Err(e) => view.drill_problem = Some(chain(&e)),
    }
    Ok(view)
}
