//! The catalog's conditional writes, against the DynamoDB stand-in and
//! the in-memory catalog alike: the tests of the logic rely on the two
//! answering the same.

use std::future::Future;
use std::sync::Arc;

use shared::catalog::{
    Catalog, CatalogError, CatalogRecord, CreateOutcome, MemoryCatalog, RecordRef, RecordStatus,
    TargetState,
};
use shared::codec::Sha256Hex;
use shared::config::Config;
use shared::keys::archive_key;
use shared::provider::Provider;
use walvault_tests::archive::backends;
use walvault_tests::standins::Stack;
use walvault_tests::unique_cluster;

/// Runs `check` against DynamoDB (the stand-in) and the in-memory catalog.
async fn on_both<F, Fut>(prefix: &str, check: F)
where
    F: Fn(Arc<dyn Catalog>, Config) -> Fut,
    Fut: Future<Output = ()>,
{
    let config = Stack::shared().config(&unique_cluster(prefix));
    check(backends(&config).await.catalog, config.clone()).await;
    check(Arc::new(MemoryCatalog::default()), config).await;
}

fn record(config: &Config, file: &str) -> CatalogRecord {
    CatalogRecord {
        system_identifier: Some(7_301_234_567_890_123_456),
        pg_version: Some(15),
        ..CatalogRecord::replicating(
            config.cluster.clone(),
            file.parse().unwrap(),
            shared::wal::SegmentSize::DEFAULT.bytes(),
            Sha256Hex::of(file.as_bytes()),
            1_000,
            2_000,
        )
    }
}

fn target(record: &CatalogRecord, at: u64) -> TargetState {
    TargetState {
        key: archive_key(&record.cluster, record.file),
        size: 4321,
        etag: Some("\"etag\"".into()),
        at,
        stored_sha256: None,
    }
}

#[tokio::test]
async fn create_is_conditional_and_returns_the_existing_record() {
    on_both(
        "create",
        create_is_conditional_and_returns_the_existing_record_on,
    )
    .await;
}

async fn create_is_conditional_and_returns_the_existing_record_on(
    catalog: Arc<dyn Catalog>,
    config: Config,
) {
    let rec = record(&config, "000000010000000000000001");
    assert_eq!(catalog.get(&rec.cluster, &rec.file).await.unwrap(), None);
    assert_eq!(catalog.create(&rec).await.unwrap(), CreateOutcome::Created);
    assert_eq!(
        catalog.get(&rec.cluster, &rec.file).await.unwrap(),
        Some(rec.clone())
    );

    let mut different = rec.clone();
    different.raw_sha256 = Sha256Hex::of(b"other content");
    assert_eq!(
        catalog.create(&different).await.unwrap(),
        CreateOutcome::Exists(Box::new(rec.clone()))
    );
    assert_eq!(
        catalog.get(&rec.cluster, &rec.file).await.unwrap(),
        Some(rec),
        "the first record stands"
    );
}

#[tokio::test]
async fn of_eight_concurrent_creates_one_wins() {
    on_both("create-race", of_eight_concurrent_creates_one_wins_on).await;
}

async fn of_eight_concurrent_creates_one_wins_on(catalog: Arc<dyn Catalog>, config: Config) {
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let catalog = catalog.clone();
            let mut rec = record(&config, "000000010000000000000002");
            rec.raw_sha256 = Sha256Hex::of(&[i]);
            tokio::spawn(async move { catalog.create(&rec).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        if task.await.unwrap() == CreateOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test]
async fn replicated_needs_both_targets_and_the_same_content() {
    on_both(
        "targets",
        replicated_needs_both_targets_and_the_same_content_on,
    )
    .await;
}

async fn replicated_needs_both_targets_and_the_same_content_on(
    catalog: Arc<dyn Catalog>,
    config: Config,
) {
    let rec = record(&config, "000000010000000000000003");
    catalog.create(&rec).await.unwrap();
    let (cluster, file) = (&rec.cluster, &rec.file);
    let ours = RecordRef::of(&rec);

    let wrong_sha = Sha256Hex::of(b"someone else's segment");
    let err = catalog
        .record_target(
            RecordRef {
                raw_sha256: &wrong_sha,
                ..ours
            },
            Provider::R2,
            &target(&rec, 10),
            10,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::ConditionFailed { .. }),
        "{err:?}"
    );

    let after_r2 = catalog
        .record_target(ours, Provider::R2, &target(&rec, 10), 10)
        .await
        .unwrap();
    assert_eq!(after_r2.target(Provider::R2), Some(&target(&rec, 10)));
    assert_eq!(after_r2.target(Provider::B2), None);
    assert_eq!(after_r2.updated_at, 10);

    let early = catalog
        .set_status(
            ours,
            &[RecordStatus::Replicating],
            RecordStatus::Replicated,
            None,
            11,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(early, CatalogError::ConditionFailed { .. }),
        "replicated with one target: {early:?}"
    );

    let partial = catalog
        .set_status(
            ours,
            &[RecordStatus::Replicating],
            RecordStatus::Partial,
            Some("b2 missing"),
            12,
        )
        .await
        .unwrap();
    assert_eq!(partial.status, RecordStatus::Partial);
    assert_eq!(partial.detail.as_deref(), Some("b2 missing"));

    catalog
        .record_target(ours, Provider::B2, &target(&rec, 13), 13)
        .await
        .unwrap();
    let done = catalog
        .set_status(
            ours,
            &[RecordStatus::Replicating, RecordStatus::Partial],
            RecordStatus::Replicated,
            None,
            14,
        )
        .await
        .unwrap();
    assert_eq!(done.status, RecordStatus::Replicated);
    assert_eq!(done.replicated_at, Some(14));
    assert_eq!(done.detail, None, "the partial reason is cleared");

    let again = catalog
        .set_status(
            ours,
            &[RecordStatus::Replicating, RecordStatus::Partial],
            RecordStatus::Replicated,
            None,
            15,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(again, CatalogError::ConditionFailed { .. }),
        "a transition happens once: {again:?}"
    );
    assert_eq!(catalog.get(cluster, file).await.unwrap().unwrap(), done);
}

#[tokio::test]
async fn writes_to_a_missing_record_fail_their_condition() {
    on_both(
        "missing",
        writes_to_a_missing_record_fail_their_condition_on,
    )
    .await;
}

async fn writes_to_a_missing_record_fail_their_condition_on(
    catalog: Arc<dyn Catalog>,
    config: Config,
) {
    let rec = record(&config, "000000010000000000000004");
    let err = catalog
        .record_target(RecordRef::of(&rec), Provider::B2, &target(&rec, 1), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::ConditionFailed { .. }),
        "{err:?}"
    );
    let err = catalog
        .record_conflict(&rec.cluster, &rec.file, "x", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::ConditionFailed { .. }),
        "{err:?}"
    );
    assert_eq!(
        catalog.get(&rec.cluster, &rec.file).await.unwrap(),
        None,
        "no record conjured up"
    );
}

#[tokio::test]
async fn conflicts_are_counted() {
    on_both("conflicts", conflicts_are_counted_on).await;
}

async fn conflicts_are_counted_on(catalog: Arc<dyn Catalog>, config: Config) {
    let rec = record(&config, "000000010000000000000005");
    catalog.create(&rec).await.unwrap();
    catalog
        .record_conflict(&rec.cluster, &rec.file, "first", 5)
        .await
        .unwrap();
    catalog
        .record_conflict(&rec.cluster, &rec.file, "second", 6)
        .await
        .unwrap();
    let now = catalog.get(&rec.cluster, &rec.file).await.unwrap().unwrap();
    assert_eq!(now.conflicts, 2);
    assert_eq!(now.last_conflict.as_deref(), Some("second"));
    assert_eq!(
        now.raw_sha256, rec.raw_sha256,
        "the content record is unchanged"
    );
}

#[tokio::test]
async fn listing_returns_a_cluster_in_wal_order_across_pages() {
    on_both(
        "list",
        listing_returns_a_cluster_in_wal_order_across_pages_on,
    )
    .await;
}

async fn listing_returns_a_cluster_in_wal_order_across_pages_on(
    catalog: Arc<dyn Catalog>,
    config: Config,
) {
    let other = Stack::shared().config(&unique_cluster("list-other"));
    catalog
        .create(&record(&other, "000000010000000000000001"))
        .await
        .unwrap();
    // More than one 500-record page, written in reverse.
    let names: Vec<String> = (0..620u32)
        .rev()
        .map(|i| format!("00000001000000{:02X}000000{:02X}", i / 256, i % 256))
        .collect();
    for name in &names {
        catalog.create(&record(&config, name)).await.unwrap();
    }
    let mut listed = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = catalog
            .list_page(&config.cluster, "", after.as_ref())
            .await
            .unwrap();
        pages += 1;
        listed.extend(page.records.into_iter().map(|r| r.file.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(pages >= 2, "{pages} page(s)");
}
