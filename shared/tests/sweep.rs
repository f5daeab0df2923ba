//! The retention sweep's logic on in-memory backends, on a simulated
//! clock: every fault class at every request it makes, and what the
//! archive holds afterwards.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use common::{announced, cluster, limits, name, pusher, replicator, WalDir};
use shared::catalog::{list_all, Catalog, CatalogOperation, CatalogRecord};
use shared::fault::Fault;
use shared::file::ArchivedFile;
use shared::keys::archive_key;
use shared::provider::Provider;
use shared::retention::plan::Rules;
use shared::retention::sweep::{SweepError, SweepReport, Sweeper};
use shared::store::Operation;
use shared::testing::{synthetic_segment, MemoryWorld};
use shared::wal::WalFileName;
use tokio::time::Instant;

const DAY: u64 = 86_400_000;

/// Segment `seg` of timeline 1.
fn segment(seg: u32) -> WalFileName {
    name(&format!("000000010000000000{seg:06X}"))
}

fn backup_of(seg: u32) -> WalFileName {
    name(&format!("{}.00000028.backup", segment(seg)))
}

/// Pushes and replicates `file` as if it reached staging on `day`.
async fn archive_on(world: &MemoryWorld, wal: &WalDir, file: &WalFileName, bytes: &[u8], day: u64) {
    world
        .staging
        .inner()
        .set_now(UNIX_EPOCH + Duration::from_millis(day * DAY));
    let spool = tempfile::tempdir().unwrap();
    pusher(world, &spool, 1)
        .push_one(&wal.file(file, bytes))
        .await
        .unwrap();
    replicator(world)
        .process(&announced(file), &limits().one_request())
        .await
        .unwrap();
}

/// Timeline 1, a segment a day for days 0 to 40; base backups starting on
/// days 5 and 20; a timeline 2 branched off at segment 45 (in the future
/// of every segment here). At day 40 with a 30-day window, the day-5
/// backup is the anchor: segments of days 0 to 4 may go.
async fn archive() -> MemoryWorld {
    let world = MemoryWorld::default();
    let wal = WalDir::default();
    for day in 0..=40u32 {
        let file = segment(day);
        archive_on(
            &world,
            &wal,
            &file,
            &synthetic_segment(&file, common::SYSID),
            u64::from(day),
        )
        .await;
    }
    for day in [5u32, 20] {
        let text = format!(
            "START WAL LOCATION: 0/{day:X}00028 (file {})\n",
            segment(day)
        );
        archive_on(
            &world,
            &wal,
            &backup_of(day),
            text.as_bytes(),
            u64::from(day),
        )
        .await;
    }
    let history = "1\t0/2D00000\tno recovery target specified\n";
    archive_on(
        &world,
        &wal,
        &name("00000002.history"),
        history.as_bytes(),
        39,
    )
    .await;
    world
}

fn expired() -> BTreeSet<WalFileName> {
    (0..5).map(segment).collect()
}

fn sweeper(world: &MemoryWorld, max_deletes: usize) -> Sweeper {
    let backends = world.backends();
    Sweeper {
        cluster: cluster(),
        catalog: backends.catalog,
        staging: backends.staging,
        replicas: backends.replicas,
        rules: Rules {
            window_ms: 30 * DAY,
            age_only_without_backups: false,
        },
        max_deletes,
        limits: limits(),
        abandoned_after: Duration::from_secs(2 * 86_400),
    }
}

async fn sweep(
    world: &MemoryWorld,
    dry_run: bool,
    max_deletes: usize,
) -> Result<SweepReport, SweepError> {
    tokio::time::pause();
    let deadline = Instant::now() + Duration::from_secs(600);
    let report = sweeper(world, max_deletes)
        .sweep(40 * DAY + 1, dry_run, deadline)
        .await;
    tokio::time::resume();
    report
}

fn on_provider(world: &MemoryWorld, provider: Provider) -> BTreeSet<WalFileName> {
    let store = world.replica(provider).inner();
    let all = (0..=40).map(segment);
    all.filter(|f| store.object(&archive_key(&cluster(), f)).is_some())
        .collect()
}

async fn records(world: &MemoryWorld) -> BTreeSet<WalFileName> {
    list_all(world.catalog.inner(), &cluster())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.file.wal())
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Step {
    CatalogList,
    HistoryGet(Provider),
    Delete(Provider),
    CatalogDelete,
}

/// What a sweep must leave: expired files still on each provider, expired
/// records still in the catalog (`None`: the sweep failed before deleting).
#[derive(Debug)]
struct Expect {
    left_on_r2: usize,
    left_on_b2: usize,
    records_left: usize,
    errors: usize,
}

/// Faults to inject, and what the sweep must then do (`Err`: fail before
/// deleting anything, naming what it could not read).
type Row = (Vec<(Step, Fault, u32)>, Result<Expect, &'static str>);

fn inject(world: &MemoryWorld, step: Step, fault: Fault, times: u32) {
    match step {
        Step::CatalogList => world
            .catalog
            .fail_next(CatalogOperation::List, fault, times),
        Step::HistoryGet(p) => {
            world
                .replica(p)
                .fail_key_next(Operation::Get, ".history", fault, times)
        }
        Step::Delete(p) => world.replica(p).fail_next(Operation::Delete, fault, times),
        Step::CatalogDelete => world
            .catalog
            .fail_next(CatalogOperation::Delete, fault, times),
    }
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Fault::*;
    use Step::*;
    const ALWAYS: u32 = u32::MAX;
    let done = || {
        Ok(Expect {
            left_on_r2: 0,
            left_on_b2: 0,
            records_left: 0,
            errors: 0,
        })
    };
    let (r2, b2) = (Provider::R2, Provider::B2);
    vec![
        (vec![], done()),
        (vec![(CatalogList, Refused, ALWAYS)], Err("catalog")),
        (vec![(CatalogList, Transient, ALWAYS)], Err("catalog")),
        (vec![(CatalogList, Hang, ALWAYS)], Err("catalog")),
        (vec![(CatalogList, Corrupt, ALWAYS)], Err("catalog")),
        (vec![(CatalogList, Transient, 1)], done()),
        (vec![(HistoryGet(r2), Refused, ALWAYS)], done()),
        (vec![(HistoryGet(r2), Corrupt, ALWAYS)], done()),
        (vec![(HistoryGet(r2), Refused, ALWAYS), (HistoryGet(b2), Hang, ALWAYS)], Err("history")),
        (vec![(HistoryGet(r2), Corrupt, ALWAYS), (HistoryGet(b2), Corrupt, ALWAYS)], Err("history")),
        (vec![(HistoryGet(r2), NotFound, ALWAYS), (HistoryGet(b2), NotFound, ALWAYS)], Err("history")),
        (vec![(Delete(r2), Refused, ALWAYS)], Ok(Expect { left_on_r2: 5, left_on_b2: 0, records_left: 5, errors: 5 })),
        (vec![(Delete(b2), Transient, ALWAYS)], Ok(Expect { left_on_r2: 0, left_on_b2: 5, records_left: 5, errors: 5 })),
        (vec![(Delete(b2), Hang, ALWAYS)], Ok(Expect { left_on_r2: 0, left_on_b2: 5, records_left: 5, errors: 5 })),
        (vec![(Delete(r2), LostAnswer, 1)], Ok(Expect { left_on_r2: 0, left_on_b2: 0, records_left: 1, errors: 1 })),
        (vec![(CatalogDelete, Refused, ALWAYS)], Ok(Expect { left_on_r2: 0, left_on_b2: 0, records_left: 5, errors: 5 })),
        (vec![(CatalogDelete, Transient, 1)], done()),
        (vec![(CatalogDelete, Hang, 1)], done()),
    ]
}

#[tokio::test]
async fn every_fault_at_every_request_deletes_only_what_is_gone_everywhere() {
    let (r2, b2) = (Provider::R2, Provider::B2);
    let rows = rows();
    // An archive from before the compress function kept a history file's
    // text in its record: the sweep reads the file from a replica.
    let archived = archive().await;
    let mut history = history_record(&archived).await;
    history.history = None;
    archived.catalog.inner().put(history);
    for (faults, expected) in rows {
        let world = archived.duplicate();
        for (step, fault, times) in &faults {
            inject(&world, *step, *fault, *times);
        }
        let result = sweep(&world, false, 100_000).await;
        world.heal();
        let case = format!("{faults:?}");
        match (expected, result) {
            (Err(what), Err(e)) => {
                let matches = match what {
                    "catalog" => matches!(e, SweepError::Catalog(_)),
                    _ => matches!(e, SweepError::History { .. }),
                };
                assert!(matches, "{case}: {e:?}");
                assert_eq!(on_provider(&world, r2).len(), 41, "{case}: nothing deleted");
                assert_eq!(records(&world).await.len(), 44, "{case}: no record removed");
            }
            (Ok(expect), Ok(report)) => {
                let left = |p| on_provider(&world, p).intersection(&expired()).count();
                assert_eq!(left(r2), expect.left_on_r2, "{case}: r2 {report:?}");
                assert_eq!(left(b2), expect.left_on_b2, "{case}: b2 {report:?}");
                let records = records(&world).await;
                assert_eq!(
                    records.intersection(&expired()).count(),
                    expect.records_left,
                    "{case}"
                );
                assert_eq!(report.errors.len(), expect.errors, "{case}: {report:?}");
                assert_eq!(
                    records.len(),
                    44 - 5 + expect.records_left,
                    "{case}: only expired records go"
                );
                assert_eq!(
                    on_provider(&world, r2).len() - left(r2),
                    36,
                    "{case}: nothing needed deleted"
                );
            }
            (expected, result) => panic!("{case}: expected {expected:?}, got {result:?}"),
        }
    }
}

async fn history_record(world: &MemoryWorld) -> CatalogRecord {
    let file = ArchivedFile::Wal(name("00000002.history"));
    world.catalog.get(&cluster(), &file).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_history_file_kept_in_its_record_needs_no_replica_and_is_verified() {
    let world = archive().await;
    let history = history_record(&world).await;
    assert!(history.history.is_some(), "compress keeps the text");
    for provider in Provider::ALL {
        world
            .replica(provider)
            .fail_key_next(Operation::Get, ".history", Fault::Refused, u32::MAX);
    }
    let report = sweep(&world, true, 100_000).await.unwrap();
    assert_eq!(report.planned, 5, "{report:?}");

    let mut altered = history;
    altered.history = Some(b"1\t0/9000000\tno recovery target specified\n".to_vec());
    world.catalog.inner().put(altered);
    let error = sweep(&world, true, 100_000).await.unwrap_err();
    assert!(
        matches!(&error, SweepError::History { detail, .. } if detail.contains("the text in its record")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_dry_run_reports_the_plan_and_deletes_nothing() {
    let world = archive().await;
    let report = sweep(&world, true, 100_000).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.planned, 5);
    assert_eq!(
        report.anchors.get(&1).map(String::as_str),
        Some(backup_of(5).to_string().as_str())
    );
    assert!(report.deleted.is_empty() && report.catalog_removed == 0);
    assert_eq!(on_provider(&world, Provider::R2).len(), 41);
    assert_eq!(records(&world).await.len(), 44);
}

#[tokio::test]
async fn a_failed_delete_is_finished_by_the_next_run_and_freed_bytes_are_counted_once() {
    let world = archive().await;
    world
        .replica(Provider::B2)
        .fail_always(Operation::Delete, Fault::Refused);
    let first = sweep(&world, false, 100_000).await.unwrap();
    assert_eq!(first.catalog_removed, 0);
    assert_eq!(first.deleted.get(&Provider::R2), Some(&5));
    world.heal();
    let second = sweep(&world, false, 100_000).await.unwrap();
    assert_eq!(second.catalog_removed, 5);
    assert!(second.errors.is_empty());
    assert!(on_provider(&world, Provider::B2).is_disjoint(&expired()));
    assert!(records(&world).await.is_disjoint(&expired()));
}

#[tokio::test]
async fn a_capped_run_stops_early_and_the_next_one_continues() {
    let world = archive().await;
    let first = sweep(&world, false, 3).await.unwrap();
    assert!(first.stopped_early);
    assert_eq!(first.catalog_removed, 3);
    let second = sweep(&world, false, 3).await.unwrap();
    assert!(!second.stopped_early);
    assert_eq!(second.catalog_removed, 2);
    assert!(records(&world).await.is_disjoint(&expired()));
}
