//! The compress function's event dispatch and re-drive on in-memory
//! backends: which messages of a batch are reported failed, corrupt inputs
//! recorded and never replicated, lost events found by the re-drive.

mod common;

use std::time::{Duration, SystemTime};

use common::{announced, cluster, limits, name, record_of, replicator, staged, STAGING_BUCKET};
use serde_json::json;
use shared::catalog::{Catalog, RecordStatus};
use shared::codec::Sha256Hex;
use shared::fault::Fault;
use shared::keys::{archive_key, meta, staging_key};
use shared::provider::Provider;
use shared::replicate::invocation::handle_invocation;
use shared::replicate::Outcome;
use shared::store::{Metadata, ObjectStore, Operation, SHA256_METADATA};
use shared::testing::{synthetic_segment, MemoryWorld};
use shared::wal::WalFileName;
use tokio::time::Instant;

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn body(file: &WalFileName) -> String {
    json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": STAGING_BUCKET},
        "object": {"key": staging_key(&cluster(), file)}}}]})
    .to_string()
}

#[tokio::test]
async fn a_batch_reports_exactly_the_failed_messages() {
    let world = MemoryWorld::default();
    let (good, _) = staged(&world, "00000001000000000000000B").await;
    let (blocked, _) = staged(&world, "00000001000000000000000C").await;
    world
        .staging
        .fail_key(Operation::Get, &blocked.to_string(), Fault::Refused);
    let event = json!({"Records": [
        {"messageId": "blocked", "eventSource": "aws:sqs", "body": body(&blocked)},
        {"messageId": "malformed", "eventSource": "aws:sqs", "body": "{\"Records\": [{\"s3\": 42}]}"},
        {"messageId": "test-event", "eventSource": "aws:sqs", "body": "{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\"}"},
        {"messageId": "good", "eventSource": "aws:sqs", "body": body(&good)},
    ]});
    let response = handle_invocation(
        &replicator(&world),
        &event,
        Duration::from_secs(900),
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "blocked"}, {"itemIdentifier": "malformed"}]})
    );
    let record = record_of(&world, good).await.unwrap();
    assert_eq!(record.status, RecordStatus::Replicated);
    assert!(
        world
            .staging
            .inner()
            .object(&staging_key(&cluster(), blocked))
            .is_some(),
        "the failed one waits in staging for its retry"
    );
}

#[tokio::test]
async fn a_direct_event_fails_as_a_whole_for_lambda_to_retry() {
    let world = MemoryWorld::default();
    let (file, _) = staged(&world, "00000001000000000000000D").await;
    world.staging.fail_always(Operation::Get, Fault::Refused);
    let direct: serde_json::Value = serde_json::from_str(&body(&file)).unwrap();
    let err = handle_invocation(
        &replicator(&world),
        &direct,
        Duration::from_secs(900),
        deadline(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("1 of 1 objects failed"),
        "{err}"
    );
}

#[tokio::test]
async fn corrupt_inputs_are_recorded_and_never_replicated() {
    let world = MemoryWorld::default();
    let replicator = replicator(&world);
    // What the shipper recorded does not match what arrived.
    let cases: Vec<(WalFileName, Vec<u8>, Metadata, &str)> = {
        let mismatched = name("000000010000000000000008");
        let raw = synthetic_segment(&mismatched, common::SYSID);
        let claimed = Metadata::from([(
            SHA256_METADATA.into(),
            Sha256Hex::of(b"what the shipper hashed").to_string(),
        )]);
        let truncated = name("000000010000000000000009");
        let full = synthetic_segment(&truncated, common::SYSID);
        let half = full[..full.len() / 2].to_vec();
        let cut = Metadata::from([
            (SHA256_METADATA.into(), Sha256Hex::of(&half).to_string()),
            (meta::SIZE.into(), full.len().to_string()),
        ]);
        let foreign = name("00000001000000000000000A");
        let unsigned = synthetic_segment(&foreign, common::SYSID);
        vec![
            (mismatched, raw, claimed, "sha256"),
            (truncated, half, cut, "bytes"),
            (foreign, unsigned, Metadata::new(), "walvault push"),
        ]
    };
    for (file, bytes, metadata, problem) in cases {
        world
            .staging
            .inner()
            .plant(&staging_key(&cluster(), file), bytes, metadata);
        let outcome = replicator
            .process(&announced(&file), &limits().one_request())
            .await
            .unwrap();
        assert!(
            matches!(&outcome, Outcome::Corrupt(p) if p.contains(problem)),
            "{file}: {outcome:?}"
        );
        let record = record_of(&world, file).await.unwrap();
        assert_eq!(record.status, RecordStatus::Corrupt);
        assert!(record.detail.is_some());
        for provider in Provider::ALL {
            let stored = world
                .replica(provider)
                .inner()
                .object(&archive_key(&cluster(), file));
            assert!(stored.is_none(), "{provider} must hold nothing");
        }
    }
}

#[tokio::test]
async fn a_lost_event_is_found_by_the_redrive_once_old_enough() {
    let world = MemoryWorld::default();
    world
        .staging
        .inner()
        .set_now(SystemTime::now() - Duration::from_secs(7200));
    let (old, _) = staged(&world, "000000010000000000000007").await;
    world.staging.inner().set_now(SystemTime::now());
    let (young, _) = staged(&world, "000000010000000000000008").await;
    let schedule = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let report = handle_invocation(
        &replicator(&world),
        &schedule,
        Duration::from_secs(3600),
        deadline(),
    )
    .await
    .unwrap();
    assert_eq!(report["replicated"], 1, "{report}");
    assert_eq!(report["too_young"], 1, "{report}");
    assert_eq!(report["backlog"], 1, "the young file still waits: {report}");
    assert_eq!(report["summary"], "kept", "{report}");
    let item = world
        .catalog
        .get_cluster_item(&cluster(), shared::catalog::ClusterItemKind::Summary)
        .await
        .unwrap()
        .unwrap();
    let kept: shared::status::keep::StoredSummary = serde_json::from_str(&item.body).unwrap();
    assert_eq!(kept.staging.map(|s| s.backlog), Some(1));
    assert!(
        report["oldest_backlog_age_ms"].as_u64().unwrap() < 60_000,
        "{report}"
    );
    for (file, status) in [(old, Some(RecordStatus::Replicated)), (young, None)] {
        let record = record_of(&world, file).await;
        assert_eq!(record.map(|r| r.status), status, "{file}");
    }
}

#[tokio::test]
async fn the_redrive_stops_when_its_budget_is_spent_and_reports_it() {
    let world = MemoryWorld::default();
    world
        .staging
        .inner()
        .set_now(SystemTime::now() - Duration::from_secs(7200));
    for seg in 1..=3 {
        staged(&world, &format!("00000001000000000000000{seg}")).await;
    }
    world
        .replica(Provider::B2)
        .fail_always(Operation::Put, Fault::Hang);
    tokio::time::pause();
    let report = replicator(&world)
        .redrive(
            Duration::ZERO,
            &limits().until(Instant::now() + Duration::from_secs(4)),
        )
        .await
        .unwrap();
    tokio::time::resume();
    assert!(report.stopped_at_deadline, "{report:?}");
    assert!(report.failed >= 1 && report.failed < 3, "{report:?}");
}

/// Replication failing for days (a revoked key, secrets never filled in):
/// no rule expires the staging copy, the re-drive keeps trying, and the
/// backlog's age, which the `OldestStagingAge` alarm watches, grows with it.
#[tokio::test]
async fn replication_failing_for_days_keeps_the_staging_copy_and_reports_its_age() {
    let world = MemoryWorld::default();
    let three_days = Duration::from_secs(3 * 24 * 3600);
    world
        .staging
        .inner()
        .set_now(SystemTime::now() - three_days);
    let (stuck, _) = staged(&world, "000000010000000000000009").await;
    world.staging.inner().set_now(SystemTime::now());
    world
        .replica(Provider::B2)
        .fail_always(Operation::Put, Fault::Refused);
    let report = replicator(&world)
        .redrive(Duration::from_secs(900), &limits().until(deadline()))
        .await
        .unwrap();
    assert_eq!((report.failed, report.backlog), (1, 1), "{report:?}");
    assert!(
        report.oldest_backlog_age_ms >= three_days.as_millis() as u64,
        "{report:?}"
    );
    let line: serde_json::Value =
        serde_json::from_str(&report.metrics(&cluster()).to_line(0)).unwrap();
    assert_eq!(line["StagingBacklog"], 1.0);
    assert!(line["OldestStagingAge"].as_f64().unwrap() >= three_days.as_millis() as f64);
    let record = record_of(&world, stuck).await;
    assert_eq!(record.map(|r| r.status), Some(RecordStatus::Partial));
    assert!(
        world
            .staging
            .inner()
            .get(&staging_key(&cluster(), stuck))
            .await
            .is_ok(),
        "a file stuck `partial` keeps its staging copy"
    );

    // The provider is back: the next run replicates it, and nothing waits.
    world.replica(Provider::B2).heal();
    let report = replicator(&world)
        .redrive(Duration::from_secs(900), &limits().until(deadline()))
        .await
        .unwrap();
    assert_eq!((report.replicated, report.backlog), (1, 0), "{report:?}");
    assert_eq!(report.oldest_backlog_age_ms, 0);
}
