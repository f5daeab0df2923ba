//! The compress function's logic on in-memory backends: every fault class
//! at every step of one delivery, and what it leaves behind.

mod common;

use std::time::Duration;

use common::{announced, archived, cluster, limits, name, record_of, replicator, staged, Times};
use shared::backup::name::BackupFile;
use shared::catalog::{Catalog, CatalogOperation, RecordStatus};
use shared::error::Retryable;
use shared::fault::Fault;
use shared::file::ArchivedFile;
use shared::keys::{archive_key, staging_key};
use shared::metrics::Metric;
use shared::provider::Provider;
use shared::replicate::{Outcome, ReplicateError};
use shared::store::{ObjectStore, Operation};
use shared::testing::MemoryWorld;
use shared::wal::WalFileName;
use tokio::time::Instant;

const FILE: &str = "000000010000000000000007";

#[derive(Debug, Clone, Copy)]
enum Step {
    StagingGet,
    CatalogCreate,
    ReplicaPut(Provider),
    CatalogRecordReplica,
    CatalogSetStatus,
    StagingDelete,
}

/// What one delivery must leave behind.
#[derive(Debug)]
struct Expect {
    /// `replicated`, `vanished`, `corrupt`, or `partial`/`failed` with
    /// `-permanent`/`-transient`.
    result: &'static str,
    status: Option<RecordStatus>,
    staging_left: bool,
    /// Providers holding the replica afterwards.
    stored: &'static [Provider],
    metric: Option<Metric>,
}

const BOTH: &[Provider] = &[Provider::R2, Provider::B2];
const NONE: &[Provider] = &[];

fn inject(world: &MemoryWorld, step: Step, fault: Fault, times: Times) {
    let n = times.count();
    match step {
        Step::StagingGet => world.staging.fail_next(Operation::Get, fault, n),
        Step::StagingDelete => world.staging.fail_next(Operation::Delete, fault, n),
        Step::ReplicaPut(p) => world.replica(p).fail_next(Operation::Put, fault, n),
        Step::CatalogCreate => world.catalog.fail_next(CatalogOperation::Create, fault, n),
        Step::CatalogRecordReplica => {
            world
                .catalog
                .fail_next(CatalogOperation::RecordTarget, fault, n)
        }
        Step::CatalogSetStatus => world
            .catalog
            .fail_next(CatalogOperation::SetStatus, fault, n),
    }
}

fn label(result: &Result<Outcome, ReplicateError>) -> String {
    let kind = |e: &ReplicateError| {
        if e.is_permanent() {
            "permanent"
        } else {
            "transient"
        }
    };
    match result {
        Ok(Outcome::Replicated) => "replicated".into(),
        Ok(Outcome::Vanished) => "vanished".into(),
        Ok(Outcome::Corrupt(_)) => "corrupt".into(),
        Ok(other) => format!("{other:?}"),
        Err(e @ ReplicateError::Partial { .. }) => format!("partial-{}", kind(e)),
        Err(e) => format!("failed-{}", kind(e)),
    }
}

fn expect(
    result: &'static str,
    status: Option<RecordStatus>,
    staging_left: bool,
    stored: &'static [Provider],
    metric: Option<Metric>,
) -> Expect {
    Expect {
        result,
        status,
        staging_left,
        stored,
        metric,
    }
}

/// A clean delivery despite the fault: it was retried within the budget.
fn healed() -> Expect {
    expect(
        "replicated",
        Some(RecordStatus::Replicated),
        false,
        BOTH,
        Some(Metric::FilesArchived),
    )
}

#[rustfmt::skip]
fn table() -> Vec<(Step, Fault, Times, Expect)> {
    use Fault::{Corrupt, Hang, LostAnswer, NotFound, PreconditionFailed, Refused, Transient};
    use RecordStatus::{Partial, Replicated, Replicating};
    use Step::*;
    use Times::*;
    let (r2, b2) = (ReplicaPut(Provider::R2), ReplicaPut(Provider::B2));
    let mut rows = vec![
        (StagingGet, NotFound, Always, expect("vanished", None, true, NONE, Some(Metric::VanishedFiles))),
        (StagingGet, PreconditionFailed, Always, expect("failed-permanent", None, true, NONE, None)),
        (StagingGet, Refused, Always, expect("failed-permanent", None, true, NONE, None)),
        (StagingGet, Hang, Always, expect("failed-transient", None, true, NONE, None)),
        (StagingGet, Corrupt, Always, expect("corrupt", Some(RecordStatus::Corrupt), true, NONE, Some(Metric::CorruptInputs))),
        (CatalogCreate, PreconditionFailed, Always, expect("failed-permanent", None, true, NONE, None)),
        (CatalogCreate, Refused, Always, expect("failed-permanent", None, true, NONE, None)),
        (CatalogCreate, Corrupt, Always, expect("failed-permanent", None, true, NONE, None)),
        (CatalogCreate, Transient, Always, expect("failed-transient", None, true, NONE, None)),
        (r2, NotFound, Always, expect("partial-permanent", Some(Partial), true, &[Provider::B2], Some(Metric::R2Failures))),
        (r2, PreconditionFailed, Always, expect("partial-permanent", Some(Partial), true, &[Provider::B2], Some(Metric::Conflicts))),
        (r2, Refused, Always, expect("partial-permanent", Some(Partial), true, &[Provider::B2], Some(Metric::R2Failures))),
        (r2, Hang, Always, expect("partial-transient", Some(Partial), true, &[Provider::B2], Some(Metric::R2Failures))),
        (b2, Refused, Always, expect("partial-permanent", Some(Partial), true, &[Provider::R2], Some(Metric::B2Failures))),
        (b2, Transient, Always, expect("partial-transient", Some(Partial), true, &[Provider::R2], Some(Metric::B2Failures))),
        (CatalogRecordReplica, PreconditionFailed, Always, expect("partial-permanent", Some(Partial), true, BOTH, Some(Metric::R2Failures))),
        (CatalogRecordReplica, Refused, Always, expect("partial-permanent", Some(Partial), true, BOTH, Some(Metric::B2Failures))),
        (CatalogRecordReplica, Corrupt, Always, expect("partial-permanent", Some(Partial), true, BOTH, None)),
        (CatalogRecordReplica, Hang, Always, expect("partial-transient", Some(Partial), true, BOTH, None)),
        (CatalogSetStatus, PreconditionFailed, Always, expect("failed-permanent", Some(Replicating), true, BOTH, None)),
        (CatalogSetStatus, Refused, Always, expect("failed-permanent", Some(Replicating), true, BOTH, None)),
        (CatalogSetStatus, Transient, Always, expect("failed-transient", Some(Replicating), true, BOTH, None)),
        (StagingDelete, Refused, Always, expect("failed-permanent", Some(Replicated), true, BOTH, None)),
        (StagingDelete, Hang, Always, expect("failed-transient", Some(Replicated), true, BOTH, None)),
        // The key holds another object than the one replicated: left for its own delivery.
        (StagingDelete, PreconditionFailed, Always, expect("replicated", Some(Replicated), true, BOTH, Some(Metric::FilesArchived))),
    ];
    // A fault that strikes once is retried within the budget, whatever it
    // is: a lost answer included (the write landed; its retry finds it).
    for step in [
        StagingGet,
        CatalogCreate,
        r2,
        b2,
        CatalogRecordReplica,
        CatalogSetStatus,
        StagingDelete,
    ] {
        for fault in [Transient, Hang, LostAnswer] {
            rows.push((step, fault, Once, healed()));
        }
    }
    rows
}

#[tokio::test]
async fn every_fault_at_every_step_leaves_a_known_state() {
    for (step, fault, times, expected) in table() {
        let world = MemoryWorld::default();
        let (file, _) = staged(&world, FILE).await;
        tokio::time::pause();
        inject(&world, step, fault, times);
        let budget = limits().until(Instant::now() + Duration::from_secs(60));
        let (result, report) = replicator(&world)
            .process_with_report(&announced(&file), &budget)
            .await;
        world.heal();
        tokio::time::resume();
        let case = format!("{step:?} {fault:?} {times:?}");
        assert_eq!(label(&result), expected.result, "{case}: {result:?}");
        let record = record_of(&world, file).await;
        assert_eq!(
            record.as_ref().map(|r| r.status),
            expected.status,
            "{case}: status"
        );
        let staging_left = world
            .staging
            .inner()
            .object(&staging_key(&cluster(), file))
            .is_some();
        assert_eq!(staging_left, expected.staging_left, "{case}: staging copy");
        let stored: Vec<Provider> = Provider::ALL
            .into_iter()
            .filter(|p| {
                world
                    .replica(*p)
                    .inner()
                    .object(&archive_key(&cluster(), file))
                    .is_some()
            })
            .collect();
        assert_eq!(stored, expected.stored, "{case}: replicas stored");
        if let Some(metric) = expected.metric {
            let counted = report.as_ref().and_then(|r| r.value(metric));
            assert_eq!(counted, Some(1.0), "{case}: {metric:?} counted");
        }
        if expected.result.starts_with("partial") {
            let detail = record.and_then(|r| r.detail).unwrap_or_default();
            assert!(
                detail.starts_with("missing "),
                "{case}: partial detail {detail:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_partial_file_is_finished_by_the_next_delivery_without_rewriting_the_other_replica() {
    // 1 MiB is read whole; 32 MiB is streamed as multipart uploads.
    for mib in [1, 32] {
        let world = MemoryWorld::default();
        let (file, raw) = common::staged_of(&world, FILE, mib).await;
        world
            .replica(Provider::B2)
            .fail_always(Operation::Put, Fault::Refused);
        let replicator = replicator(&world);
        let first = replicator
            .process(&announced(&file), &limits().one_request())
            .await;
        assert!(
            matches!(&first, Err(ReplicateError::Partial { failures, .. }) if failures.len() == 1),
            "{mib} MiB: {first:?}"
        );
        assert_eq!(
            record_of(&world, file).await.unwrap().status,
            RecordStatus::Partial
        );
        let r2_puts = world.replica(Provider::R2).calls(Operation::Put);
        world.heal();
        let second = replicator
            .process(&announced(&file), &limits().one_request())
            .await;
        assert_eq!(second.unwrap(), Outcome::Replicated, "{mib} MiB");
        assert_eq!(
            world.replica(Provider::R2).calls(Operation::Put),
            r2_puts,
            "{mib} MiB: R2 not rewritten"
        );
        let record = record_of(&world, file).await.unwrap();
        assert_eq!(record.status, RecordStatus::Replicated);
        assert_eq!(record.detail, None);
        assert_eq!(replica_bytes(&world, Provider::B2, file).unwrap(), raw);
        no_upload_left(&world);
    }
}

#[tokio::test]
async fn duplicate_deliveries_converge_and_a_late_one_finds_the_work_done() {
    let world = MemoryWorld::default();
    let (file, _) = staged(&world, FILE).await;
    let replicator = replicator(&world);
    let budget = limits().one_request();
    let object = announced(&file);
    let deliveries = (0..5).map(|_| replicator.process(&object, &budget));
    let results = futures_util::future::join_all(deliveries).await;
    assert!(
        results.iter().all(|r| matches!(
            r,
            Ok(Outcome::Replicated | Outcome::AlreadyReplicated | Outcome::Vanished)
        )),
        "{results:?}"
    );
    assert!(results.iter().any(|r| matches!(r, Ok(Outcome::Replicated))));
    let late = replicator
        .process(&announced(&file), &budget)
        .await
        .unwrap();
    assert_eq!(late, Outcome::AlreadyReplicated);
}

#[tokio::test]
async fn different_content_under_an_archived_name_is_a_recorded_conflict_counted_once() {
    let world = MemoryWorld::default();
    let (file, original) = archived(&world, FILE).await;
    let mut other = original.clone();
    other[4096] ^= 0xFF;
    let key = staging_key(&cluster(), file);
    let sha = shared::codec::Sha256Hex::of(&other);
    world
        .staging
        .put_if_absent(&key, other.into(), &sha, &Default::default())
        .await
        .unwrap();
    let replicator = replicator(&world);
    for _ in 0..2 {
        let (result, report) = replicator
            .process_with_report(&announced(&file), &limits().one_request())
            .await;
        assert!(matches!(result, Ok(Outcome::Conflict(_))), "{result:?}");
        let _ = report;
    }
    let record = record_of(&world, file).await.unwrap();
    assert_eq!(
        record.conflicts, 1,
        "a re-drive meeting the same object counts it once"
    );
    assert_eq!(record.status, RecordStatus::Replicated);
    let stored = world
        .replica(Provider::R2)
        .inner()
        .object(&archive_key(&cluster(), file))
        .unwrap();
    assert_eq!(
        stored.info.sha256(),
        Some(shared::codec::Sha256Hex::of(&original))
    );
}

#[tokio::test]
async fn objects_of_other_clusters_buckets_or_shapes_are_ignored_untouched() {
    let world = MemoryWorld::default();
    let (file, _) = staged(&world, FILE).await;
    let replicator = replicator(&world);
    let reads_before = world.staging.calls(Operation::Get);
    let other_cluster = shared::events::ObjectRef {
        bucket: common::STAGING_BUCKET.into(),
        key: format!("other-db/staging/{file}"),
    };
    let other_bucket = shared::events::ObjectRef {
        bucket: "elsewhere".into(),
        key: staging_key(&cluster(), file),
    };
    let not_wal = shared::events::ObjectRef {
        bucket: common::STAGING_BUCKET.into(),
        key: "main/staging/notes.txt".into(),
    };
    for object in [other_cluster, other_bucket, not_wal] {
        let result = replicator.process(&object, &limits().one_request()).await;
        assert!(
            matches!(result, Ok(Outcome::Ignored(_))),
            "{object:?}: {result:?}"
        );
    }
    assert_eq!(
        world.staging.calls(Operation::Get),
        reads_before,
        "nothing was read"
    );
    assert!(world
        .catalog
        .get(&cluster(), &(name(FILE)).into())
        .await
        .unwrap()
        .is_none());
}

// Files too large to hold whole: streamed in equal parts.

fn replica_bytes(world: &MemoryWorld, provider: Provider, file: WalFileName) -> Option<Vec<u8>> {
    let object = world
        .replica(provider)
        .inner()
        .object(&archive_key(&cluster(), file))?;
    Some(shared::codec::decompress(&object.body, 1 << 30).unwrap())
}

fn no_upload_left(world: &MemoryWorld) {
    for provider in Provider::ALL {
        assert_eq!(
            world.replica(provider).inner().pending_uploads(),
            0,
            "{provider}: an upload left behind"
        );
    }
}

#[tokio::test]
async fn a_64_mib_segment_is_streamed_to_both_providers_in_parts_and_verified() {
    let world = MemoryWorld::default();
    let (file, raw) = common::staged_of(&world, FILE, 64).await;
    let result = replicator(&world)
        .process(&announced(&file), &limits().one_request())
        .await;
    assert_eq!(result.unwrap(), Outcome::Replicated);
    for provider in Provider::ALL {
        assert!(
            replica_bytes(&world, provider, file).as_deref() == Some(&raw[..]),
            "{provider}: the replica decompresses to the staged bytes"
        );
        // create, at least two parts of 8 MiB, complete
        assert!(world.replica(provider).calls(Operation::Put) >= 4);
    }
    let record = record_of(&world, file).await.unwrap();
    assert_eq!(record.status, RecordStatus::Replicated);
    assert_eq!(record.raw_size, 64 << 20);
    assert_eq!(record.raw_sha256, shared::codec::Sha256Hex::of(&raw));
    assert!(world
        .staging
        .inner()
        .object(&staging_key(&cluster(), file))
        .is_none());
    no_upload_left(&world);
}

#[tokio::test]
async fn a_streamed_file_whose_bytes_differ_from_the_shippers_digest_is_recorded_corrupt_and_nothing_stays(
) {
    let world = MemoryWorld::default();
    let (file, raw) = common::staged_of(&world, FILE, 32).await;
    let key = staging_key(&cluster(), file);
    let staged = world.staging.inner().object(&key).unwrap();
    let mut flipped = raw.clone();
    flipped[20 << 20] ^= 0xFF;
    world
        .staging
        .inner()
        .plant(&key, flipped, staged.info.metadata.clone());
    let result = replicator(&world)
        .process(&announced(&file), &limits().one_request())
        .await;
    assert!(matches!(result, Ok(Outcome::Corrupt(_))), "{result:?}");
    let record = record_of(&world, file).await.unwrap();
    assert_eq!(record.status, RecordStatus::Corrupt);
    for provider in Provider::ALL {
        assert_eq!(replica_bytes(&world, provider, file), None, "{provider}");
    }
    no_upload_left(&world);
    assert!(
        world.staging.inner().object(&key).is_some(),
        "the staging copy is kept for the operator"
    );
}

#[tokio::test]
async fn an_object_larger_than_any_file_of_its_kind_is_refused_with_a_record_not_retried() {
    let world = MemoryWorld::default();
    let id: shared::backup::name::BackupId = "20261127T101500Z".parse().unwrap();
    let chunk = ArchivedFile::Backup(BackupFile::chunk(id, 0));
    let key = staging_key(&cluster(), chunk);
    let body = vec![7u8; (shared::backup::MAX_CHUNK_SIZE + 1) as usize];
    let sha = shared::codec::Sha256Hex::of(&body);
    world
        .staging
        .put_if_absent(&key, body.into(), &sha, &Default::default())
        .await
        .unwrap();
    let object = shared::events::ObjectRef {
        bucket: common::STAGING_BUCKET.into(),
        key: key.clone(),
    };
    let (result, report) = replicator(&world)
        .process_with_report(&object, &limits().one_request())
        .await;
    let Ok(Outcome::Corrupt(problem)) = result else {
        panic!("{result:?}")
    };
    assert!(
        problem.contains("larger than any backup-chunk"),
        "{problem}"
    );
    assert_eq!(
        report.unwrap().value(Metric::CorruptInputs),
        Some(1.0),
        "counted where the CorruptInputs alarm sees it"
    );
    let record = world
        .catalog
        .get(&cluster(), &chunk)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Corrupt);
    assert_eq!(world.replica(Provider::R2).calls(Operation::Put), 0);
}

#[tokio::test(start_paused = true)]
async fn a_provider_hanging_on_parts_costs_the_budget_not_the_other_replica() {
    let world = MemoryWorld::default();
    let (file, _) = common::staged_of(&world, FILE, 32).await;
    world
        .replica(Provider::R2)
        .fail_key(Operation::Put, "", Fault::Hang);
    let deadline = Instant::now() + Duration::from_secs(60);
    let budget = limits().until(deadline);
    let result = replicator(&world).process(&announced(&file), &budget).await;
    assert!(Instant::now() <= deadline, "finished within its budget");
    assert!(
        matches!(&result, Err(ReplicateError::Partial { failures, .. }) if failures.iter().all(|(p, e)| *p == Provider::R2 && !e.is_permanent())),
        "{result:?}"
    );
    let record = record_of(&world, file).await.unwrap();
    assert!(record.target(Provider::B2).is_some(), "B2 recorded");
    assert!(replica_bytes(&world, Provider::B2, file).is_some());
}

#[tokio::test]
async fn a_staging_read_failing_midway_aborts_every_upload_and_a_retry_completes() {
    let world = MemoryWorld::default();
    let (file, raw) = common::staged_of(&world, FILE, 32).await;
    // The answer lost midway: the body breaks off after half of it.
    world
        .staging
        .fail_next(Operation::Get, Fault::LostAnswer, 1);
    let replicator = replicator(&world);
    let first = replicator
        .process(&announced(&file), &limits().one_request())
        .await;
    assert!(
        matches!(&first, Err(e @ ReplicateError::Staging { .. }) if !e.is_permanent()),
        "{first:?}"
    );
    for provider in Provider::ALL {
        assert!(
            world.replica(provider).calls(Operation::Put) >= 1,
            "{provider}: the upload was begun"
        );
    }
    no_upload_left(&world);
    assert_eq!(
        record_of(&world, file).await.unwrap().status,
        RecordStatus::Replicating
    );
    let second = replicator
        .process(&announced(&file), &limits().one_request())
        .await;
    assert_eq!(second.unwrap(), Outcome::Replicated);
    assert_eq!(replica_bytes(&world, Provider::R2, file).unwrap(), raw);
}
