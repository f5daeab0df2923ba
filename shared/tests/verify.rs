//! `walvault verify`'s logic on in-memory backends: a healthy archive, a
//! replica deleted, one damaged behind its metadata (found only by
//! `deep`), a file never replicated, a copy never recorded, an orphan, a
//! gap, a foreign object, a provider that hangs, keys that cannot write;
//! and what the archive holds after each repair.

mod common;

use bytes::Bytes;
use common::{announced, archived, cluster, limits, record_of, replicator, staged};
use shared::catalog::{Catalog, CatalogOperation, RecordRef, RecordStatus};
use shared::clock::now_millis;
use shared::codec::{decompress_verified, Sha256Hex};
use shared::fault::Fault;
use shared::keys::archive_key;
use shared::provider::Provider;
use shared::store::{Metadata, ObjectStore, Operation, StoreError, SHA256_METADATA};
use shared::testing::MemoryWorld;
use shared::verify::{Break, Problem, Range, Repair, Verifier, VerifyOptions, VerifyReport};
use shared::wal::WalFileName;

const FILES: [&str; 4] = [
    "000000010000000000000001",
    "000000010000000000000002",
    "000000010000000000000003",
    "000000010000000000000004",
];

struct NoProgress;

impl shared::verify::Progress for NoProgress {
    fn update(&self, _: u64, _: u64, _: u64, _: u64) {}
}

async fn world() -> MemoryWorld {
    let world = MemoryWorld::default();
    for file in FILES {
        archived(&world, file).await;
    }
    world
}

fn options(deep: bool, repair: bool) -> VerifyOptions {
    VerifyOptions {
        range: Range::default(),
        deep,
        repair,
        concurrency: 4,
        deadline: None,
    }
}

async fn verify(world: &MemoryWorld, options: VerifyOptions) -> VerifyReport {
    verify_at(world, options, now_millis()).await
}

/// A run at `now` (later than the files were archived: a gap is reported
/// only once the segment after it is no longer recent).
async fn verify_at(world: &MemoryWorld, options: VerifyOptions, now: u64) -> VerifyReport {
    let backends = world.backends();
    Verifier {
        cluster: cluster(),
        catalog: backends.catalog,
        replicas: backends.replicas,
        limits: limits(),
        identities: Default::default(),
    }
    .verify(options, now, &NoProgress)
    .await
    .unwrap()
}

fn key(file: &str) -> String {
    archive_key(&cluster(), file.parse::<WalFileName>().unwrap())
}

/// The copy on `provider` decompresses to `file`'s recorded bytes.
async fn holds_verified(world: &MemoryWorld, provider: Provider, file: &str) -> bool {
    let record = record_of(world, file.parse().unwrap()).await.unwrap();
    let Some(object) = world.replica(provider).inner().object(&key(file)) else {
        return false;
    };
    decompress_verified(&object.body, record.raw_size, &record.raw_sha256).is_ok()
}

#[tokio::test]
async fn a_healthy_archive_is_all_good_on_both_providers() {
    let world = world().await;
    for deep in [false, true] {
        let report = verify(&world, options(deep, false)).await;
        assert!(report.all_good(), "{report:#?}");
        assert_eq!(report.files, 4);
        for provider in Provider::ALL {
            let tally = &report.providers[&provider];
            assert_eq!((tally.checked, tally.good), (4, 4));
            assert!(tally.good_bytes > 0);
        }
        assert_eq!(report.orphans, Some(vec![]));
        assert!(report.breaks.is_empty());
    }
    // HEAD mode reads no body.
    let gets = world.replica(Provider::R2).calls(Operation::Get);
    verify(&world, options(false, false)).await;
    assert_eq!(world.replica(Provider::R2).calls(Operation::Get), gets);
}

#[tokio::test]
async fn a_replica_deleted_on_r2_is_found_then_repaired_from_b2() {
    let world = world().await;
    world.replica(Provider::R2).inner().remove(&key(FILES[1]));
    let report = verify(&world, options(false, false)).await;
    assert!(report.anything_wrong());
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    let finding = &report.problems[0];
    assert_eq!(
        (finding.file.as_str(), finding.provider, &finding.problem),
        (FILES[1], Provider::R2, &Problem::Missing)
    );
    assert_eq!(finding.repair, None, "no repair unless asked");
    assert!(!holds_verified(&world, Provider::R2, FILES[1]).await);

    let report = verify(&world, options(false, true)).await;
    assert_eq!(
        report.problems[0].repair,
        Some(Repair::Repaired { from: Provider::B2 })
    );
    assert!(!report.anything_wrong(), "{report:#?}");
    assert!(holds_verified(&world, Provider::R2, FILES[1]).await);
    let record = record_of(&world, FILES[1].parse().unwrap()).await.unwrap();
    let stored = world
        .replica(Provider::R2)
        .inner()
        .object(&key(FILES[1]))
        .unwrap();
    assert_eq!(record.target(Provider::R2).unwrap().etag, stored.info.etag);
    assert!(verify(&world, options(true, false)).await.all_good());
}

#[tokio::test]
async fn a_replica_damaged_on_b2_is_found_only_by_deep_and_replaced() {
    let world = world().await;
    // Same size, same metadata, one byte flipped: a HEAD cannot tell.
    world.replica(Provider::B2).inner().corrupt(&key(FILES[2]));
    assert!(verify(&world, options(false, false)).await.all_good());
    let report = verify(&world, options(true, false)).await;
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    assert_eq!(report.problems[0].provider, Provider::B2);
    assert!(matches!(
        report.problems[0].problem,
        Problem::Corrupt { .. }
    ));

    let report = verify(&world, options(true, true)).await;
    assert_eq!(
        report.problems[0].repair,
        Some(Repair::Repaired { from: Provider::R2 })
    );
    assert!(holds_verified(&world, Provider::B2, FILES[2]).await);
    let again = verify(&world, options(true, false)).await;
    assert!(again.all_good(), "{again:#?}");
}

#[tokio::test]
async fn a_file_never_replicated_to_b2_is_copied_and_marked_replicated() {
    let world = MemoryWorld::default();
    archived(&world, FILES[0]).await;
    let (name, _) = staged(&world, FILES[1]).await;
    world
        .replica(Provider::B2)
        .fail_always(Operation::Put, Fault::Refused);
    let _partial = replicator(&world)
        .process(&announced(&name), &limits().one_request())
        .await;
    world.heal();
    let record = record_of(&world, name).await.unwrap();
    assert_eq!(record.status, RecordStatus::Partial);

    let report = verify(&world, options(false, false)).await;
    assert_eq!(report.problems[0].problem, Problem::NotReplicated);
    let report = verify(&world, options(false, true)).await;
    assert_eq!(
        report.problems[0].repair,
        Some(Repair::Repaired { from: Provider::R2 })
    );
    let record = record_of(&world, name).await.unwrap();
    assert_eq!(record.status, RecordStatus::Replicated);
    assert!(record.has_every_target());
    assert!(verify(&world, options(true, false)).await.all_good());
}

#[tokio::test]
async fn a_copy_written_but_never_recorded_is_verified_and_recorded_not_rewritten() {
    let world = MemoryWorld::default();
    let (name, _) = staged(&world, FILES[0]).await;
    world
        .catalog
        .fail_key(CatalogOperation::RecordTarget, FILES[0], Fault::Refused);
    let _ = replicator(&world)
        .process(&announced(&name), &limits().one_request())
        .await;
    world.heal();
    let record = record_of(&world, name).await.unwrap();
    assert!(record.targets.is_empty(), "{record:?}");
    let before = world
        .replica(Provider::R2)
        .inner()
        .object(&key(FILES[0]))
        .unwrap();

    let report = verify(&world, options(false, true)).await;
    assert_eq!(report.problems.len(), 2, "{report:#?}");
    for finding in &report.problems {
        assert_eq!(finding.problem, Problem::Unrecorded);
        assert_eq!(finding.repair, Some(Repair::Recorded));
    }
    let after = world
        .replica(Provider::R2)
        .inner()
        .object(&key(FILES[0]))
        .unwrap();
    assert_eq!(before.info.etag, after.info.etag, "the good copy stands");
    let record = record_of(&world, name).await.unwrap();
    assert_eq!(record.status, RecordStatus::Replicated);
}

#[tokio::test]
async fn orphans_and_foreign_objects_are_reported_and_never_touched() {
    let world = world().await;
    let orphan = format!("{}/wal/000000010000000000000099.zst", cluster());
    world.replica(Provider::R2).inner().plant(
        &orphan,
        Bytes::from_static(b"left behind"),
        Metadata::new(),
    );
    let foreign = Metadata::from([(
        SHA256_METADATA.to_owned(),
        Sha256Hex::of(b"something else").as_str().to_owned(),
    )]);
    world.replica(Provider::B2).inner().plant(
        &key(FILES[3]),
        Bytes::from_static(b"not ours"),
        foreign,
    );

    let report = verify(&world, options(false, true)).await;
    let orphans = report.orphans.clone().unwrap();
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(
        (orphans[0].provider, orphans[0].key.as_str()),
        (Provider::R2, orphan.as_str())
    );
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].problem, Problem::OtherContent);
    assert_eq!(report.problems[0].repair, None);
    assert!(report.anything_wrong());
    assert!(world
        .replica(Provider::R2)
        .inner()
        .object(&orphan)
        .is_some());
    let kept = world
        .replica(Provider::B2)
        .inner()
        .object(&key(FILES[3]))
        .unwrap();
    assert_eq!(kept.body, Bytes::from_static(b"not ours"));
}

#[tokio::test]
async fn a_gap_in_wal_is_named_and_a_partial_range_skips_orphans() {
    let world = MemoryWorld::default();
    for file in [FILES[0], FILES[1], FILES[3]] {
        archived(&world, file).await;
    }
    // Just archived: the missing segment may still be on its way.
    assert!(verify(&world, options(false, false))
        .await
        .breaks
        .is_empty());
    let hour_later = now_millis() + 3_600_000;
    let report = verify_at(&world, options(false, false), hour_later).await;
    assert_eq!(
        report.breaks,
        vec![Break {
            timeline: 1,
            after: FILES[1].into(),
            first_missing: FILES[2].into(),
            missing: 1,
        }]
    );
    assert!(report.anything_wrong());

    let mut ranged = options(false, false);
    ranged.range.timeline = Some(2);
    let report = verify(&world, ranged).await;
    assert_eq!((report.files, report.orphans.clone()), (0, None));
    ranged.range = Range {
        timeline: None,
        since: Some(now_millis() + 60_000),
    };
    assert_eq!(verify(&world, ranged).await.files, 0);
}

#[tokio::test]
async fn a_provider_that_hangs_leaves_copies_unchecked_not_wrong() {
    let world = world().await;
    world
        .replica(Provider::B2)
        .fail_always(Operation::Head, Fault::Hang);
    let report = verify(&world, options(false, false)).await;
    assert!(!report.anything_wrong(), "{report:#?}");
    assert!(!report.all_good());
    assert_eq!(report.unchecked.len(), 4);
    assert!(report.unchecked.iter().all(|u| u.provider == Provider::B2));
    assert_eq!(report.providers[&Provider::R2].good, 4);
}

#[tokio::test]
async fn keys_that_cannot_write_refuse_the_repair_and_change_nothing() {
    let world = world().await;
    world.replica(Provider::R2).inner().remove(&key(FILES[0]));
    world.replica(Provider::R2).inner().remove(&key(FILES[1]));
    world
        .replica(Provider::R2)
        .fail_always(Operation::Put, Fault::Refused);
    let puts = world.replica(Provider::R2).calls(Operation::Put);
    let report = verify(&world, options(false, true)).await;
    let refused = report.repair_refused.clone().expect("repair refused");
    assert!(refused.contains("write access"), "{refused}");
    assert_eq!(report.problems.len(), 2);
    assert_eq!(
        world.replica(Provider::R2).calls(Operation::Put) - puts,
        1,
        "the first refusal stops every other repair"
    );
    assert!(report.problems.iter().all(|f| f.repair.is_none()));
    assert!(world
        .replica(Provider::R2)
        .inner()
        .object(&key(FILES[0]))
        .is_none());
}

#[tokio::test]
async fn a_copy_without_a_verified_source_is_not_repaired() {
    let world = world().await;
    world.replica(Provider::R2).inner().remove(&key(FILES[0]));
    world.replica(Provider::B2).inner().corrupt(&key(FILES[0]));
    // HEAD mode: B2's copy looks good, but it fails verification as a source.
    let report = verify(&world, options(false, true)).await;
    let Some(Repair::Failed { reason }) = &report.problems[0].repair else {
        panic!("{report:#?}");
    };
    assert!(reason.contains("no verified copy"), "{reason}");
    assert!(world
        .replica(Provider::R2)
        .inner()
        .object(&key(FILES[0]))
        .is_none());
    assert!(report.anything_wrong());
}

#[tokio::test]
async fn put_replacing_writes_only_over_the_object_it_names() {
    let world = MemoryWorld::default();
    let store = world.replica(Provider::R2);
    let sha = Sha256Hex::of(b"raw");
    store
        .put_if_absent("k", Bytes::from_static(b"one"), &sha, &Metadata::new())
        .await
        .unwrap();
    let first = store.inner().object("k").unwrap().info.etag.unwrap();
    let etag = store
        .put_replacing(
            "k",
            Bytes::from_static(b"two"),
            &sha,
            &Metadata::new(),
            &first,
        )
        .await
        .unwrap();
    assert_ne!(etag.as_deref(), Some(first.as_str()));
    let stale = store
        .put_replacing(
            "k",
            Bytes::from_static(b"three"),
            &sha,
            &Metadata::new(),
            &first,
        )
        .await;
    assert!(matches!(stale, Err(StoreError::PreconditionFailed { .. })));
    assert_eq!(
        store.inner().object("k").unwrap().body,
        Bytes::from_static(b"two")
    );
    assert!(store
        .put_replacing(
            "absent",
            Bytes::from_static(b"x"),
            &sha,
            &Metadata::new(),
            &first
        )
        .await
        .is_err());
}

#[tokio::test]
async fn files_not_reached_by_the_deadline_are_counted_not_passed() {
    let world = world().await;
    world
        .replica(Provider::R2)
        .fail_always(Operation::Head, Fault::Hang);
    let mut late = options(false, false);
    late.concurrency = 1;
    late.deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let report = verify(&world, late).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the deadline holds"
    );
    // The first file's R2 HEAD hangs until the deadline; the rest are not reached.
    assert_eq!((report.files, report.not_reached), (4, 3), "{report:#?}");
    assert!(!report.anything_wrong());
    assert!(!report.all_good());
    assert_eq!(report.unchecked_copies(), 1 + 3 * 2);
}

#[tokio::test]
async fn the_scheduled_run_repairs_and_counts() {
    let world = world().await;
    world.replica(Provider::B2).inner().remove(&key(FILES[3]));
    let backends = world.backends();
    let verifier = Verifier {
        cluster: cluster(),
        catalog: backends.catalog,
        replicas: backends.replicas,
        limits: limits(),
        identities: Default::default(),
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let outcome = verifier.scheduled(4, deadline).await;
    assert_eq!(
        (
            outcome.files,
            outcome.outstanding,
            outcome.repaired,
            outcome.unchecked
        ),
        (4, 0, 1, 0),
        "{outcome:?}"
    );
    assert!(holds_verified(&world, Provider::B2, FILES[3]).await);

    world
        .catalog
        .fail_always(CatalogOperation::List, Fault::Refused);
    let outcome = verifier.scheduled(4, deadline).await;
    assert!(outcome.failed.is_some(), "{outcome:?}");
    assert_eq!(outcome.unchecked, 1);
}

#[tokio::test]
async fn a_good_copy_under_another_etag_is_recorded_again_not_rewritten() {
    let world = world().await;
    let record = record_of(&world, FILES[0].parse().unwrap()).await.unwrap();
    let mut stale = record.target(Provider::R2).unwrap().clone();
    stale.etag = Some("\"an-etag-from-an-earlier-write\"".into());
    world
        .catalog
        .record_target(RecordRef::of(&record), Provider::R2, &stale, now_millis())
        .await
        .unwrap();
    let before = world
        .replica(Provider::R2)
        .inner()
        .object(&key(FILES[0]))
        .unwrap();
    let puts = world.replica(Provider::R2).calls(Operation::Put);

    let report = verify(&world, options(false, true)).await;
    assert!(matches!(
        report.problems[0].problem,
        Problem::EtagDiffers { .. }
    ));
    assert_eq!(report.problems[0].repair, Some(Repair::Recorded));
    assert_eq!(
        world.replica(Provider::R2).calls(Operation::Put),
        puts,
        "nothing written"
    );
    let record = record_of(&world, FILES[0].parse().unwrap()).await.unwrap();
    assert_eq!(record.target(Provider::R2).unwrap().etag, before.info.etag);
    assert!(verify(&world, options(false, false)).await.all_good());
}
