//! `walvault status`'s logic on in-memory backends: how many requests it
//! makes on a catalog of 100,000 records, that the summary the functions
//! keep a little at a time agrees with one rebuilt from every record (with
//! files late, slow, stuck and missing), two writers of the summary
//! interleaved, a summary that does not parse, a catalog that hangs or
//! refuses, and the thresholds' verdicts.

mod common;

use std::time::Duration;

use common::{cluster, limits};
use shared::catalog::{
    Catalog, CatalogError, CatalogOperation, CatalogRecord, ClusterItem, ClusterItemKind,
    CreateOutcome, RecordPage, RecordRef, RecordStatus, TargetState,
};
use shared::clock::UnixMillis;
use shared::fault::Fault;
use shared::file::ArchivedFile;
use shared::keys::ClusterName;
use shared::provider::Provider;
use shared::retry::Budget;
use shared::status::health::{checks, verdict, Level, Thresholds};
use shared::status::keep::{
    load, rebuild, record_verify, refresh, RetentionRun, StagingReport, VerifyRun,
};
use shared::status::summary::ArchiveSummary;
use shared::status::view::{read, StatusView};
use shared::status::StatusError;
use shared::testing::{complete_backup, record_in, set_state, MemoryWorld};

const MINUTE: u64 = 60_000;
const DAY: u64 = 86_400_000;
const SEGMENT: u64 = 16 << 20;
/// 2026-11-27T10:00:00Z.
const NOW: UnixMillis = 1_795_773_600_000;

fn segno_of(name: &str) -> u64 {
    let part = |range: std::ops::Range<usize>| u64::from_str_radix(&name[range], 16).unwrap();
    (part(8..16) << 8) | part(16..24)
}

fn segment_name(segno: u64) -> String {
    format!("00000001{:08X}{:08X}", segno >> 8, segno & 0xFF)
}

fn segment(segno: u64, status: RecordStatus, staged_at: UnixMillis) -> CatalogRecord {
    let file: ArchivedFile = segment_name(segno).parse().expect("a segment name");
    record_in(&cluster(), file, SEGMENT, status, staged_at)
}

/// A complete base backup of `chunks` chunks, starting in segment `start`.
fn backup(started_at: UnixMillis, start: u64, chunks: u32) -> Vec<CatalogRecord> {
    let start = segment_name(start).parse().expect("a segment name");
    complete_backup(&cluster(), started_at, start, SEGMENT, chunks)
}

fn put_all(world: &MemoryWorld, records: impl IntoIterator<Item = CatalogRecord>) {
    for record in records {
        world.catalog.inner().put(record);
    }
}

fn budget() -> Budget {
    limits().until(tokio::time::Instant::now() + Duration::from_secs(30))
}

fn retention_run(at: UnixMillis) -> RetentionRun {
    RetentionRun {
        at,
        window_days: 30,
        ..RetentionRun::default()
    }
}

async fn view_at(world: &MemoryWorld, now: UnixMillis) -> StatusView {
    read(
        world.catalog.as_ref(),
        world.staging.as_ref(),
        &cluster(),
        now,
        &budget(),
    )
    .await
    .expect("status reads")
}

/// Every record folded in the catalog's order, as status folds what the
/// summary does not cover: what the view must add up to.
fn folded_whole(world: &MemoryWorld) -> ArchiveSummary {
    let mut all = ArchiveSummary::default();
    for record in world.catalog.inner().records() {
        all.add(&record);
    }
    all
}

/// The figures a view shows, without the names of the stuck records (a
/// whole fold has none).
fn figures(view: StatusView) -> ArchiveSummary {
    ArchiveSummary {
        stuck: Vec::new(),
        ..view.kept.archive
    }
}

/// The staging report of a re-drive at `at` that found nothing waiting.
fn nothing_waits(at: UnixMillis) -> StagingReport {
    StagingReport {
        at,
        backlog: 0,
        oldest_age_ms: 0,
    }
}

async fn keep(world: &MemoryWorld, staging: StagingReport, now: UnixMillis) {
    refresh(world.catalog.as_ref(), &cluster(), staging, now, &budget())
        .await
        .expect("refresh");
}

async fn rebuild_at(world: &MemoryWorld, now: UnixMillis) {
    rebuild(
        world.catalog.as_ref(),
        &cluster(),
        retention_run(now),
        now,
        &budget(),
    )
    .await
    .expect("rebuild");
}

#[tokio::test]
async fn status_of_100_000_records_makes_a_handful_of_requests() {
    let world = MemoryWorld::default();
    let old = NOW - 2 * DAY;
    put_all(
        &world,
        (1..=100_000).map(|n| segment(n, RecordStatus::Replicated, old + n)),
    );
    put_all(&world, backup(old, 1, 8));
    // The retention function's nightly rebuild reads everything once.
    rebuild_at(&world, NOW - DAY).await;
    // Then a day of archiving the summary has not seen; the last two
    // files are still on their way.
    put_all(
        &world,
        (100_001..=100_300).map(|n| segment(n, RecordStatus::Replicated, NOW - 10 * MINUTE)),
    );
    put_all(
        &world,
        [segment(100_301, RecordStatus::Partial, NOW - MINUTE)],
    );
    put_all(
        &world,
        [segment(100_302, RecordStatus::Replicating, NOW - MINUTE)],
    );

    let calls_before = world.catalog.calls(CatalogOperation::List);
    let view = view_at(&world, NOW).await;
    let lists = world.catalog.calls(CatalogOperation::List) - calls_before;
    assert_eq!(world.catalog.calls(CatalogOperation::GetClusterItem), 3);
    // One page of the WAL after the summary, one of the backups after it.
    assert_eq!(lists, 2, "{lists} list requests");
    assert_eq!(view.catalog_requests, 3);
    assert_eq!(view.records_read, 302);
    assert!(!view.unread);

    assert_eq!(view.kept.archive, folded_whole(&world));
    assert_eq!(view.kept.archive.files, 100_302 + 9);
    assert_eq!(view.kept.archive.provider(Provider::R2).files, 100_301 + 9);
    assert_eq!(view.kept.archive.provider(Provider::B2).files, 100_300 + 9);
    assert_eq!(view.in_flight.count, 2);
    assert_eq!(view.in_flight.late, 0);
    assert_eq!(view.in_flight.files[0].missing, vec!["b2"]);
    assert_eq!(view.in_flight.files[1].missing, vec!["r2", "b2"]);
    let span = &view.kept.archive.timelines[&1];
    assert_eq!(span.newest, segment_name(100_302));
    assert_eq!(span.missing, 0);
    assert!(view.kept.archive.backups[0].is_complete());
}

#[tokio::test]
async fn a_summary_kept_a_little_at_a_time_agrees_with_one_rebuilt_from_every_record() {
    let world = MemoryWorld::default();
    let mut now = NOW;
    let mut segno = 0;
    // Files whose record is created late (compress was down for them):
    // segment, when it was staged.
    let mut late: Vec<(u64, UnixMillis)> = Vec::new();
    let mut last_report = nothing_waits(now);
    put_all(&world, backup(NOW - MINUTE, 1, 3));
    // Segment 0 has been on R2 alone for seven hours: stuck, until round 30.
    put_all(
        &world,
        [segment(0, RecordStatus::Partial, NOW - 7 * 3_600_000)],
    );
    for round in 0..40u64 {
        now += 5 * MINUTE;
        for _ in 0..15 {
            segno += 1;
            let staged_at = now - MINUTE;
            match segno {
                // Every 50th never arrives: a gap.
                n if n % 50 == 0 => {}
                // Every 23rd waits in staging for 25 minutes before compress
                // records it: a record created after its successors.
                n if n % 23 == 0 => late.push((n, staged_at)),
                // Every 7th stays on R2 alone for 20 minutes.
                n if n % 7 == 0 => put_all(&world, [segment(n, RecordStatus::Partial, staged_at)]),
                n => put_all(&world, [segment(n, RecordStatus::Replicated, staged_at)]),
            }
        }
        for mut record in world.catalog.inner().records() {
            // Segment 0 stays stuck until round 30.
            let slow = record.staged_at + 20 * MINUTE <= now && record.staged_at >= NOW;
            if record.status == RecordStatus::Partial && slow {
                set_state(&mut record, RecordStatus::Replicated);
                world.catalog.inner().put(record);
            }
        }
        let (arrived, waiting): (Vec<_>, Vec<_>) = late
            .iter()
            .partition(|(_, staged_at)| staged_at + 25 * MINUTE <= now);
        for (n, staged_at) in arrived {
            let mut record = segment(n, RecordStatus::Replicated, staged_at);
            record.created_at = now;
            world.catalog.inner().put(record);
        }
        late = waiting;
        if round == 20 {
            put_all(&world, backup(now - 2 * MINUTE, segno - 2, 2));
        }
        if round == 30 {
            put_all(
                &world,
                [segment(0, RecordStatus::Replicated, NOW - 7 * 3_600_000)],
            );
        }
        // What the re-drive saw waiting in staging.
        let oldest = late.iter().map(|(_, at)| *at).min();
        let staging = StagingReport {
            at: now,
            backlog: late.len() as u64 + round,
            oldest_age_ms: oldest.map_or(0, |at| now - at),
        };
        keep(&world, staging, now).await;
        last_report = staging;
        // Every round, status adds up to every record.
        assert_eq!(figures(view_at(&world, now).await), folded_whole(&world));
        if round == 0 {
            let kept = load(world.catalog.as_ref(), &cluster(), &budget())
                .await
                .unwrap();
            assert_eq!(kept.summary.unwrap().archive.stuck, vec![segment_name(0)]);
        }
    }
    let kept = load(world.catalog.as_ref(), &cluster(), &budget())
        .await
        .unwrap()
        .summary
        .unwrap();
    assert_eq!(kept.staging, Some(last_report));
    let rebuilt_world = world.duplicate();
    rebuild_at(&rebuilt_world, now).await;
    let rebuilt = load(rebuilt_world.catalog.as_ref(), &cluster(), &budget())
        .await
        .unwrap()
        .summary
        .unwrap();
    assert_eq!(kept.archive, rebuilt.archive);
    // The fold stops short of the recent files: the last rounds are read
    // by status, not kept yet.
    assert!(kept.archive.files > 400, "{}", kept.archive.files);
    // Only the files that never arrived are missing: no late one is.
    let span = &kept.archive.timelines[&1];
    let newest = segno_of(&span.newest);
    assert!(newest > 300, "{newest}");
    assert_eq!(
        span.missing,
        (1..newest).filter(|n| n % 50 == 0).count() as u64
    );
    assert_eq!(kept.archive.backups.len(), 2);
    assert!(kept.archive.stuck.is_empty());
    assert_eq!(kept.archive.timelines[&1].first, segment_name(0));
    // The rebuild keeps the re-drive's staging report.
    assert_eq!(rebuilt.staging, kept.staging);
}

#[tokio::test]
async fn a_stuck_file_is_folded_named_and_read_again_until_it_settles() {
    let world = MemoryWorld::default();
    put_all(&world, backup(NOW - DAY, 1, 1));
    put_all(&world, [segment(1, RecordStatus::Replicated, NOW - DAY)]);
    put_all(&world, [segment(2, RecordStatus::Partial, NOW - DAY)]);
    put_all(
        &world,
        (3..=10).map(|n| segment(n, RecordStatus::Replicated, NOW - DAY)),
    );
    keep(&world, nothing_waits(NOW), NOW).await;
    let kept = load(world.catalog.as_ref(), &cluster(), &budget())
        .await
        .unwrap()
        .summary
        .unwrap();
    assert_eq!(kept.archive.stuck, vec![segment_name(2)]);
    assert_eq!(
        kept.archive.wal_through.as_deref(),
        Some(segment_name(10).as_str())
    );
    let view = view_at(&world, NOW).await;
    assert_eq!(view.records_read, 0);
    assert_eq!(view.in_flight.count, 1);
    assert_eq!(view.in_flight.late, 1);
    assert_eq!(view.in_flight.files[0].file, segment_name(2));
    // Status counts it as it stands: the figures are every record's.
    assert_eq!(view.kept.archive.files, folded_whole(&world).files);
    assert_eq!(view.kept.archive.timelines, folded_whole(&world).timelines);
    // B2 gets it at last: the next re-drive drops it from the list.
    let mut record = segment(2, RecordStatus::Replicated, NOW - DAY);
    set_state(&mut record, RecordStatus::Replicated);
    world.catalog.inner().put(record);
    keep(&world, nothing_waits(NOW + MINUTE), NOW + MINUTE).await;
    let view = view_at(&world, NOW + MINUTE).await;
    assert!(view.kept.archive.stuck.is_empty());
    assert_eq!(view.in_flight.count, 0);
    assert_eq!(figures(view), folded_whole(&world));
}

#[tokio::test]
async fn a_corrupt_segment_is_counted_once_and_not_looked_up() {
    let world = MemoryWorld::default();
    put_all(&world, backup(NOW - DAY, 1, 1));
    put_all(
        &world,
        (1..=5).map(|n| {
            let state = if n == 3 {
                RecordStatus::Corrupt
            } else {
                RecordStatus::Replicated
            };
            segment(n, state, NOW - DAY)
        }),
    );
    keep(&world, nothing_waits(NOW), NOW).await;
    let view = view_at(&world, NOW).await;
    assert_eq!(view.kept.archive.files, 5 + 2);
    assert_eq!(view.kept.archive.corrupt_files, vec![segment_name(3)]);
    assert_eq!(view.kept.archive.timelines[&1].missing, 1);
    // The summary item and one list per range: no look-up of the gap.
    assert_eq!(view.catalog_requests, 3);
    assert_eq!(figures(view), folded_whole(&world));
}

#[tokio::test]
async fn a_file_recorded_after_the_fold_passed_its_place_is_found_by_key() {
    let world = MemoryWorld::default();
    put_all(&world, backup(NOW - DAY, 1, 1));
    put_all(
        &world,
        (1..=10)
            .filter(|n| *n != 5)
            .map(|n| segment(n, RecordStatus::Replicated, NOW - DAY)),
    );
    // Segment 5 has waited in staging for a day: the fold stops waiting.
    let staging = StagingReport {
        at: NOW,
        backlog: 1,
        oldest_age_ms: DAY,
    };
    keep(&world, staging, NOW).await;
    let view = view_at(&world, NOW).await;
    assert_eq!(view.kept.archive.timelines[&1].missing, 1);
    let found = checks(&view, &Thresholds::default());
    assert!(found
        .iter()
        .any(|c| c.name == "continuity" && c.level == Level::Critical));
    // Compress records it at last, behind the summary's position.
    let mut late = segment(5, RecordStatus::Replicated, NOW - DAY);
    late.created_at = NOW;
    put_all(&world, [late]);
    let view = view_at(&world, NOW + MINUTE).await;
    assert_eq!(view.kept.archive.timelines[&1].missing, 0);
    assert_eq!(view.kept.archive.files, folded_whole(&world).files);
    // The summary item, one list per range, one look-up by key.
    assert_eq!(view.catalog_requests, 4);
    let found = checks(&view, &Thresholds::default());
    assert!(
        found
            .iter()
            .any(|c| c.name == "continuity" && c.level == Level::Ok),
        "{found:?}"
    );
}

/// A catalog where another writer's summary lands between this writer's
/// read and its write, once.
struct Interleaved {
    inner: std::sync::Arc<dyn Catalog>,
    other: std::sync::Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Catalog for Interleaved {
    async fn get(
        &self,
        c: &ClusterName,
        f: &ArchivedFile,
    ) -> Result<Option<CatalogRecord>, CatalogError> {
        self.inner.get(c, f).await
    }
    async fn create(&self, r: &CatalogRecord) -> Result<CreateOutcome, CatalogError> {
        self.inner.create(r).await
    }
    async fn record_target(
        &self,
        r: RecordRef<'_>,
        p: Provider,
        t: &TargetState,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        self.inner.record_target(r, p, t, at).await
    }
    async fn set_status(
        &self,
        r: RecordRef<'_>,
        from: &[RecordStatus],
        to: RecordStatus,
        detail: Option<&str>,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        self.inner.set_status(r, from, to, detail, at).await
    }
    async fn record_conflict(
        &self,
        c: &ClusterName,
        f: &ArchivedFile,
        detail: &str,
        at: UnixMillis,
    ) -> Result<(), CatalogError> {
        self.inner.record_conflict(c, f, detail, at).await
    }
    async fn delete(&self, r: RecordRef<'_>) -> Result<(), CatalogError> {
        self.inner.delete(r).await
    }
    async fn list_page(
        &self,
        c: &ClusterName,
        prefix: &str,
        after: Option<&ArchivedFile>,
    ) -> Result<RecordPage, CatalogError> {
        self.inner.list_page(c, prefix, after).await
    }
    async fn get_cluster_item(
        &self,
        c: &ClusterName,
        item: ClusterItemKind,
    ) -> Result<Option<ClusterItem>, CatalogError> {
        self.inner.get_cluster_item(c, item).await
    }
    async fn put_cluster_item(
        &self,
        c: &ClusterName,
        item: ClusterItemKind,
        expected: Option<u64>,
        body: &str,
    ) -> Result<(), CatalogError> {
        let other = self.other.lock().unwrap().take();
        if let Some(other) = other {
            self.inner
                .put_cluster_item(c, item, expected, &other)
                .await?;
        }
        self.inner.put_cluster_item(c, item, expected, body).await
    }
}

#[tokio::test]
async fn two_writers_never_undo_each_other() {
    let world = MemoryWorld::default();
    put_all(
        &world,
        (1..=10).map(|n| segment(n, RecordStatus::Replicated, NOW - DAY)),
    );
    // The retention function's rebuild lands between the re-drive's read
    // and its write: the re-drive reads again and keeps both.
    let swept = std::sync::Arc::new(MemoryWorld::default());
    rebuild(
        swept.catalog.as_ref(),
        &cluster(),
        retention_run(NOW - 1),
        NOW - 1,
        &budget(),
    )
    .await
    .unwrap();
    let other = swept
        .catalog
        .get_cluster_item(&cluster(), ClusterItemKind::Summary)
        .await
        .unwrap()
        .unwrap()
        .body;
    let interleaved = Interleaved {
        inner: world.catalog.clone(),
        other: std::sync::Mutex::new(Some(other)),
    };
    let staging = StagingReport {
        at: NOW,
        backlog: 3,
        oldest_age_ms: 60_000,
    };
    refresh(&interleaved, &cluster(), staging, NOW, &budget())
        .await
        .unwrap();
    // The other writer's, the re-drive's refused, the re-drive's again.
    assert_eq!(world.catalog.calls(CatalogOperation::PutClusterItem), 3);
    let kept = load(world.catalog.as_ref(), &cluster(), &budget())
        .await
        .unwrap();
    assert_eq!(kept.version, Some(2));
    let kept = kept.summary.unwrap();
    assert_eq!(kept.staging, Some(staging));
    assert_eq!(kept.retention.map(|r| r.at), Some(NOW - 1));
    assert_eq!(kept.archive.files, 10);
    // The rebuild after a sweep keeps the re-drive's report; the verify
    // after it adds its own and leaves the rest.
    rebuild_at(&world, NOW).await;
    let verify = VerifyRun {
        at: NOW,
        files: 10,
        ..VerifyRun::default()
    };
    record_verify(
        world.catalog.as_ref(),
        &cluster(),
        verify.clone(),
        &budget(),
    )
    .await
    .unwrap();
    let kept = load(world.catalog.as_ref(), &cluster(), &budget())
        .await
        .unwrap()
        .summary
        .unwrap();
    assert_eq!(kept.staging, Some(staging));
    assert_eq!(kept.verify, Some(verify));
    assert_eq!(kept.retention.map(|r| r.at), Some(NOW));
    // A writer that loses every time gives up, and says so.
    world
        .catalog
        .fail_always(CatalogOperation::PutClusterItem, Fault::PreconditionFailed);
    let err = refresh(world.catalog.as_ref(), &cluster(), staging, NOW, &budget())
        .await
        .unwrap_err();
    assert!(matches!(err, StatusError::Contended), "{err}");
}

#[tokio::test]
async fn a_summary_that_does_not_parse_is_read_around_then_rebuilt() {
    let world = MemoryWorld::default();
    put_all(
        &world,
        (1..=5).map(|n| segment(n, RecordStatus::Replicated, NOW - DAY)),
    );
    world
        .catalog
        .put_cluster_item(&cluster(), ClusterItemKind::Summary, None, "{not json")
        .await
        .unwrap();
    let view = view_at(&world, NOW).await;
    assert!(view
        .summary_problem
        .as_deref()
        .unwrap()
        .contains("does not parse"));
    assert_eq!(view.summary_age(), None);
    assert_eq!(view.kept.archive.files, 5);
    let verdicts = checks(&view, &Thresholds::default());
    assert!(verdicts
        .iter()
        .any(|c| c.name == "summary" && c.level == Level::Warning));
    // The re-drive leaves it to the rebuild, which replaces it.
    let err = refresh(
        world.catalog.as_ref(),
        &cluster(),
        nothing_waits(NOW),
        NOW,
        &budget(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StatusError::Malformed(_)), "{err}");
    rebuild_at(&world, NOW).await;
    let view = view_at(&world, NOW).await;
    assert_eq!(view.summary_problem, None);
    assert_eq!(view.records_read, 0);
    assert_eq!(view.kept.archive.files, 5);
}

#[tokio::test]
async fn a_catalog_that_hangs_or_refuses_gives_no_verdict() {
    let world = MemoryWorld::default();
    world
        .catalog
        .fail_always(CatalogOperation::GetClusterItem, Fault::Hang);
    let short = limits().until(tokio::time::Instant::now() + Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = read(
        world.catalog.as_ref(),
        world.staging.as_ref(),
        &cluster(),
        NOW,
        &short,
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(err.to_string().contains("no answer within"), "{err}");
    world.heal();
    world
        .catalog
        .fail_always(CatalogOperation::List, Fault::Refused);
    let err = read(
        world.catalog.as_ref(),
        world.staging.as_ref(),
        &cluster(),
        NOW,
        &budget(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StatusError::Catalog(_)), "{err}");
    // A staging bucket that hangs costs the drill's report, not the verdict.
    world.heal();
    world
        .staging
        .fail_always(shared::store::Operation::List, Fault::Hang);
    let started = std::time::Instant::now();
    let view = view_at(&world, NOW).await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(view.drill_problem.is_some());
}

/// A healthy archive as the functions keep it: WAL up to a minute ago, a
/// backup a day old, a sweep and a verify last night, a re-drive just now.
async fn healthy() -> MemoryWorld {
    let world = MemoryWorld::default();
    put_all(&world, backup(NOW - DAY, 1, 2));
    put_all(
        &world,
        (1..=60).map(|n| segment(n, RecordStatus::Replicated, NOW - (61 - n) * MINUTE)),
    );
    rebuild_at(&world, NOW - 8 * 3_600_000).await;
    let verify = VerifyRun {
        at: NOW - 8 * 3_600_000,
        files: 40,
        ..VerifyRun::default()
    };
    record_verify(world.catalog.as_ref(), &cluster(), verify, &budget())
        .await
        .unwrap();
    keep(&world, nothing_waits(NOW - MINUTE), NOW - MINUTE).await;
    world
}

async fn level_of(world: &MemoryWorld, thresholds: &Thresholds) -> (Level, Vec<String>) {
    let view = view_at(world, NOW).await;
    let found = checks(&view, thresholds);
    let named = found
        .iter()
        .filter(|c| c.level != Level::Ok)
        .map(|c| format!("{} {:?}: {}", c.name, c.level, c.text))
        .collect();
    (verdict(&found), named)
}

async fn verify_found(world: &MemoryWorld, outstanding: u64, copies: u64) {
    let verify = VerifyRun {
        at: NOW,
        files: 60,
        outstanding,
        copies,
        ..VerifyRun::default()
    };
    record_verify(world.catalog.as_ref(), &cluster(), verify, &budget())
        .await
        .unwrap();
}

#[tokio::test]
async fn thresholds_give_the_monitoring_exit_codes() {
    let defaults = Thresholds::default();
    let world = healthy().await;
    let (level, named) = level_of(&world, &defaults).await;
    assert_eq!(level, Level::Ok, "{named:?}");
    assert_eq!(level.exit_code(), 0);

    // The newest segment is a minute old: past a 30s RPO warning, then
    // past a 30s critical one.
    let strict = Thresholds {
        rpo_warn: Duration::from_secs(30),
        ..defaults
    };
    assert_eq!(level_of(&world, &strict).await.0.exit_code(), 1);
    let stricter = Thresholds {
        rpo_crit: Duration::from_secs(30),
        ..strict
    };
    assert_eq!(level_of(&world, &stricter).await.0.exit_code(), 2);

    // Sixty files on R2 only, past the grace: every one counted, not only
    // the fifty listed.
    let many = world.duplicate();
    put_all(
        &many,
        (61..=120).map(|n| segment(n, RecordStatus::Partial, NOW - 20 * MINUTE)),
    );
    let view = view_at(&many, NOW).await;
    assert_eq!((view.in_flight.count, view.in_flight.late), (60, 60));
    assert_eq!(view.in_flight.files.len(), 50);
    let many_crit = Thresholds {
        partial_crit: 60,
        ..defaults
    };
    assert_eq!(level_of(&many, &many_crit).await.0, Level::Critical);

    // A file on R2 only for 20 minutes: warnings (replication, staging);
    // from 1 such file critical.
    let partial = world.duplicate();
    put_all(
        &partial,
        [segment(61, RecordStatus::Partial, NOW - 20 * MINUTE)],
    );
    let (level, named) = level_of(&partial, &defaults).await;
    assert_eq!(level, Level::Warning, "{named:?}");
    assert!(
        named
            .iter()
            .any(|n| n.contains("replication") && n.contains("missing on b2")),
        "{named:?}"
    );
    let one_is_too_many = Thresholds {
        partial_crit: 1,
        ..defaults
    };
    assert_eq!(
        level_of(&partial, &one_is_too_many).await.0,
        Level::Critical
    );

    // A segment missing after the newest backup: recovery to the end fails.
    let gap = world.duplicate();
    put_all(
        &gap,
        [segment(62, RecordStatus::Replicated, NOW - 20 * MINUTE)],
    );
    let (level, named) = level_of(&gap, &defaults).await;
    assert_eq!(level, Level::Critical, "{named:?}");
    assert!(
        named
            .iter()
            .any(|n| n.contains("continuity") && n.contains(&segment_name(61))),
        "{named:?}"
    );
    // … unless it is younger than the grace: the file may be on its way.
    let young_gap = world.duplicate();
    put_all(
        &young_gap,
        [segment(62, RecordStatus::Replicated, NOW - MINUTE)],
    );
    assert_eq!(level_of(&young_gap, &defaults).await.0, Level::Ok);

    // A gap over the newest backup's start segment: that backup cannot be
    // restored, whatever the name before the gap.
    let over_start = MemoryWorld::default();
    put_all(&over_start, backup(NOW - DAY, 10, 1));
    put_all(
        &over_start,
        (1..=20)
            .filter(|n| !(9..=11).contains(n))
            .map(|n| segment(n, RecordStatus::Replicated, NOW - DAY + n * MINUTE)),
    );
    let (level, named) = level_of(&over_start, &defaults).await;
    assert_eq!(level, Level::Critical, "{named:?}");
    assert!(
        named
            .iter()
            .any(|n| n.contains("continuity") && n.contains(&segment_name(9))),
        "{named:?}"
    );
    // A gap wholly before it only limits recovery to earlier points.
    let before_start = MemoryWorld::default();
    put_all(&before_start, backup(NOW - DAY, 10, 1));
    put_all(
        &before_start,
        (1..=20)
            .filter(|n| *n != 5)
            .map(|n| segment(n, RecordStatus::Replicated, NOW - DAY + n * MINUTE)),
    );
    let (_, named) = level_of(&before_start, &defaults).await;
    assert!(
        named.iter().any(|n| n.starts_with("continuity Warning")),
        "{named:?}"
    );
    assert!(!named.iter().any(|n| n.starts_with("continuity Critical")));

    // No backup at all: nothing can be restored.
    let no_backup = MemoryWorld::default();
    put_all(
        &no_backup,
        (1..=3).map(|n| segment(n, RecordStatus::Replicated, NOW - MINUTE)),
    );
    let (level, named) = level_of(&no_backup, &defaults).await;
    assert_eq!(level, Level::Critical);
    assert!(named.iter().any(|n| n.starts_with("backups")), "{named:?}");
    // … nor any summary kept by the functions: a warning as well.
    assert!(
        named.iter().any(|n| n.starts_with("retention")),
        "{named:?}"
    );

    // A summary kept by the sweep alone: the re-drive has never reported.
    let silent = MemoryWorld::default();
    put_all(&silent, backup(NOW - DAY, 1, 1));
    put_all(
        &silent,
        [segment(1, RecordStatus::Replicated, NOW - MINUTE)],
    );
    rebuild_at(&silent, NOW).await;
    let (level, named) = level_of(&silent, &defaults).await;
    assert_eq!(level, Level::Warning, "{named:?}");
    assert!(named.iter().any(|n| n.starts_with("staging")), "{named:?}");

    // The functions stopped keeping the summary long ago: more records
    // than status reads, figures partial.
    let behind = MemoryWorld::default();
    put_all(&behind, backup(NOW - DAY, 1, 1));
    put_all(
        &behind,
        (1..=10_500).map(|n| segment(n, RecordStatus::Replicated, NOW - MINUTE)),
    );
    let view = view_at(&behind, NOW).await;
    assert!(view.unread);
    // 20 pages of WAL, then the backup's two parts.
    assert_eq!(view.records_read, 10_000 + 2);
    let found = checks(&view, &defaults);
    assert!(found
        .iter()
        .any(|c| c.name == "summary" && c.level == Level::Unknown));
    assert_eq!(verdict(&found).exit_code(), 3);

    // The scheduled verify left a copy unrepaired: critical; only an
    // orphan or an old break: a warning.
    let unrepaired = world.duplicate();
    verify_found(&unrepaired, 1, 1).await;
    let (level, named) = level_of(&unrepaired, &defaults).await;
    assert_eq!(level, Level::Critical);
    assert!(named.iter().any(|n| n.starts_with("verify")), "{named:?}");
    let orphan = world.duplicate();
    verify_found(&orphan, 1, 0).await;
    assert_eq!(level_of(&orphan, &defaults).await.0, Level::Warning);
    // Left unrepaired three days ago, and no verify since: still critical.
    let old_damage = world.duplicate();
    let verify = VerifyRun {
        at: NOW - 3 * DAY,
        files: 60,
        outstanding: 1,
        copies: 1,
        ..VerifyRun::default()
    };
    record_verify(old_damage.catalog.as_ref(), &cluster(), verify, &budget())
        .await
        .unwrap();
    assert_eq!(level_of(&old_damage, &defaults).await.0, Level::Critical);

    // An old backup: warning at 8 days, critical at 15.
    let stale = Thresholds {
        backup_warn: Duration::from_secs(3600),
        ..defaults
    };
    assert_eq!(level_of(&world, &stale).await.0, Level::Warning);
    let staler = Thresholds {
        backup_crit: Duration::from_secs(3600),
        ..stale
    };
    assert_eq!(level_of(&world, &staler).await.0, Level::Critical);
}
