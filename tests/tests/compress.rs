//! The compress function's logic, called in-process as the Lambda handler
//! would, against the stand-ins.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::catalog::{Catalog, RecordStatus};
use shared::codec::Sha256Hex;
use shared::compress::handle_invocation;
use shared::config::{Config, Provider};
use shared::events::ObjectRef;
use shared::keys::{archive_key, staging_key};
use shared::replicate::{Outcome, ReplicateError, Replicator};
use shared::store::{
    replica_store, staging_store, ConditionalPut, FaultyStore, ObjectStore, Operation, S3Store,
};
use shared::wal::WalFileName;
use walvault_tests::archive::{
    catalog, replica, stage, stage_claiming, staging, synthetic_segment,
};
use walvault_tests::pipeline::replicator;
use walvault_tests::standins::{self, walvault_sdk_config, Stack, STAGING_BUCKET};
use walvault_tests::unique_cluster;

const SYSID: u64 = 7_301_234_567_890_123_456;

fn name(s: &str) -> WalFileName {
    s.parse().unwrap()
}

/// Stages a synthetic segment named `file` as `walvault push` would.
async fn staged_segment(config: &Config, file: &str) -> (WalFileName, Vec<u8>) {
    let file = name(file);
    let raw = synthetic_segment(&file, SYSID);
    stage(config, &file, &raw).await;
    (file, raw)
}

/// A replicator whose R2 and B2 stores inject faults on demand.
struct Faulty {
    replicator: Replicator,
    r2: Arc<FaultyStore<S3Store>>,
    b2: Arc<FaultyStore<S3Store>>,
}

async fn faulty_replicator(config: &Config) -> Faulty {
    let sdk = walvault_sdk_config(config).await;
    let faulty = |p| {
        Arc::new(FaultyStore::new(
            replica_store(
                &sdk,
                config.replica(p).unwrap(),
                ConditionalPut::IfNoneMatch,
            )
            .expect("replica credentials"),
        ))
    };
    let (r2, b2) = (faulty(Provider::R2), faulty(Provider::B2));
    let mut replicator = replicator(config).await;
    replicator.r2 = r2.clone();
    replicator.b2 = b2.clone();
    Faulty { replicator, r2, b2 }
}

fn object(config: &Config, file: &WalFileName) -> ObjectRef {
    ObjectRef {
        bucket: STAGING_BUCKET.into(),
        key: staging_key(&config.cluster, file),
    }
}

fn zstd_cli_decompress(compressed: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.zst");
    std::fs::write(&path, compressed).unwrap();
    let out = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .arg(&path)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "zstd -d failed");
    out.stdout
}

/// Both replicas decompress (with the zstd CLI) to `raw`, the record says
/// so, and staging no longer holds the file.
async fn assert_replicated(config: &Config, file: &WalFileName, raw: &[u8]) {
    let key = archive_key(&config.cluster, file);
    for provider in Provider::ALL {
        let copy = replica(config, provider).await.get(&key).await.unwrap();
        assert_eq!(zstd_cli_decompress(&copy.body), raw, "{provider} replica");
    }
    let record = catalog(config)
        .await
        .get(&config.cluster, file)
        .await
        .unwrap()
        .expect("a record");
    assert_eq!(record.status, RecordStatus::Replicated);
    assert_eq!(record.raw_size, raw.len() as u64);
    assert_eq!(record.raw_sha256, Sha256Hex::of(raw));
    assert!(record.compressed_sha256.is_some() && record.replicated_at.is_some());
    for provider in Provider::ALL {
        let target = record
            .target(provider)
            .unwrap_or_else(|| panic!("{provider} target"));
        assert_eq!(target.key, key);
        assert_eq!(target.size, record.compressed_size.unwrap());
    }
    if file.segment().is_some() {
        assert!(
            record.compressed_size.unwrap() < raw.len() as u64 / 2,
            "WAL-like bytes compress"
        );
        assert_eq!(record.system_identifier, Some(SYSID));
        assert_eq!(record.pg_version, Some(15));
    }
    assert!(
        staging(config)
            .await
            .head(&staging_key(&config.cluster, file))
            .await
            .unwrap_err()
            .is_not_found(),
        "staging copy removed"
    );
}

#[tokio::test]
async fn a_staged_segment_is_replicated_verified_and_recorded() {
    let config = Stack::shared().config(&unique_cluster("happy"));
    let (file, raw) = staged_segment(&config, "000000010000000000000001").await;
    let outcome = replicator(&config)
        .await
        .process(&object(&config, &file))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Replicated);
    assert_replicated(&config, &file, &raw).await;

    // History files carry no header and are replicated all the same.
    let history = name("00000002.history");
    let text = b"1\t0/3000000\tno recovery target specified\n".to_vec();
    stage(&config, &history, &text).await;
    assert_eq!(
        replicator(&config)
            .await
            .process(&object(&config, &history))
            .await
            .unwrap(),
        Outcome::Replicated
    );
    assert_replicated(&config, &history, &text).await;
}

#[tokio::test]
async fn a_real_s3_notification_through_sqs_is_handled() {
    let stack = Stack::shared();
    let config = stack.config(&unique_cluster("sqs"));
    let (file, raw) = staged_segment(&config, "000000010000000000000002").await;

    let queue = stack.staging_queue().await;
    let ours = staging_key(&config.cluster, &file);
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        if let Some(m) = queue
            .receive()
            .await
            .into_iter()
            .find(|m| standins::announced_key(m).as_ref() == Some(&ours))
        {
            break m;
        }
        assert!(Instant::now() < deadline, "no notification for {ours}");
    };
    // The SQS event the Lambda event source mapping would deliver.
    let event = json!({"Records": [{
        "messageId": message.message_id().unwrap(),
        "receiptHandle": message.receipt_handle().unwrap(),
        "body": message.body().unwrap(),
        "attributes": {}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:walvault-staging-events", "awsRegion": "us-east-1"
    }]});
    let response = handle_invocation(
        &replicator(&config).await,
        &event,
        Duration::from_secs(900),
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_replicated(&config, &file, &raw).await;
}

#[tokio::test]
async fn direct_s3_and_eventbridge_events_with_encoded_keys_are_handled() {
    let config = Stack::shared().config(&unique_cluster("shapes"));
    let replicator = replicator(&config).await;
    let deadline = || Instant::now() + Duration::from_secs(60);

    let (first, raw) = staged_segment(&config, "000000010000000000000003").await;
    let encoded = staging_key(&config.cluster, &first).replace('/', "%2F");
    let direct = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": STAGING_BUCKET}, "object": {"key": encoded, "size": raw.len()}}}]});
    handle_invocation(&replicator, &direct, Duration::from_secs(900), deadline())
        .await
        .unwrap();
    assert_replicated(&config, &first, &raw).await;

    let (second, raw) = staged_segment(&config, "000000010000000000000004").await;
    let bridge = json!({"version": "0", "detail-type": "Object Created", "source": "aws.s3",
        "detail": {"bucket": {"name": STAGING_BUCKET}, "object": {"key": staging_key(&config.cluster, &second), "size": raw.len()}}});
    handle_invocation(&replicator, &bridge, Duration::from_secs(900), deadline())
        .await
        .unwrap();
    assert_replicated(&config, &second, &raw).await;
}

#[tokio::test]
async fn five_concurrent_duplicate_deliveries_converge() {
    let config = Stack::shared().config(&unique_cluster("dupes"));
    let (file, raw) = staged_segment(&config, "000000010000000000000005").await;
    let replicator = Arc::new(replicator(&config).await);
    let deliveries: Vec<_> = (0..5)
        .map(|_| {
            let (replicator, object) = (replicator.clone(), object(&config, &file));
            tokio::spawn(async move { replicator.process(&object).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for delivery in deliveries {
        outcomes.push(delivery.await.unwrap().expect("no error for a duplicate"));
    }
    assert!(outcomes.contains(&Outcome::Replicated), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Replicated | Outcome::AlreadyReplicated)),
        "{outcomes:?}"
    );
    assert_replicated(&config, &file, &raw).await;
    // A late duplicate after the staging copy is gone is acknowledged too.
    assert_eq!(
        replicator.process(&object(&config, &file)).await.unwrap(),
        Outcome::AlreadyReplicated
    );
}

#[tokio::test]
async fn a_failing_b2_leaves_a_partial_record_that_retry_and_redrive_heal() {
    let config = Stack::shared().config(&unique_cluster("b2-down"));
    let faulty = faulty_replicator(&config).await;
    let (file, raw) = staged_segment(&config, "000000010000000000000006").await;

    faulty.b2.fail_always(Operation::Put);
    let err = faulty
        .replicator
        .process(&object(&config, &file))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicateError::Partial { .. }), "{err:?}");
    let record = catalog(&config)
        .await
        .get(&config.cluster, &file)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Partial);
    assert!(record.r2.is_some() && record.b2.is_none());
    assert!(record.detail.unwrap().contains("b2"));
    assert!(
        staging(&config)
            .await
            .head(&staging_key(&config.cluster, &file))
            .await
            .is_ok(),
        "staging kept until replicated"
    );

    // The SQS retry while B2 is still down fails the message again.
    let event = json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs",
        "body": json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": STAGING_BUCKET}, "object": {"key": staging_key(&config.cluster, &file)}}}]}).to_string()}]});
    let response = handle_invocation(
        &faulty.replicator,
        &event,
        Duration::from_secs(900),
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "m1"}]})
    );

    // B2 is back: the re-drive finishes it, redoing only B2.
    faulty.b2.heal();
    let r2_puts = faulty.r2.calls(Operation::Put);
    let report = faulty
        .replicator
        .redrive(Duration::ZERO, Instant::now() + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(report.replicated, 1, "{report:?}");
    assert_eq!(
        faulty.r2.calls(Operation::Put),
        r2_puts,
        "R2 was not written again"
    );
    assert_replicated(&config, &file, &raw).await;
}

#[tokio::test]
async fn a_lost_event_is_found_by_the_redrive_once_old_enough() {
    let config = Stack::shared().config(&unique_cluster("lost"));
    let (file, raw) = staged_segment(&config, "000000010000000000000007").await;
    let replicator = replicator(&config).await;
    let young = replicator
        .redrive(
            Duration::from_secs(3600),
            Instant::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(young.replicated, 0);
    assert!(young.too_young >= 1);
    let schedule = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let report = handle_invocation(
        &replicator,
        &schedule,
        Duration::ZERO,
        Instant::now() + Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert!(report["replicated"].as_u64().unwrap() >= 1, "{report}");
    assert_replicated(&config, &file, &raw).await;
}

#[tokio::test]
async fn corrupt_inputs_are_recorded_and_never_replicated() {
    let config = Stack::shared().config(&unique_cluster("corrupt"));
    let replicator = replicator(&config).await;

    let mismatched = name("000000010000000000000008");
    let raw = synthetic_segment(&mismatched, SYSID);
    stage_claiming(
        &config,
        &mismatched,
        &raw,
        &Sha256Hex::of(b"what the shipper hashed"),
    )
    .await;
    let outcome = replicator
        .process(&object(&config, &mismatched))
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Corrupt(ref p) if p.contains("sha256")),
        "{outcome:?}"
    );

    let truncated = name("000000010000000000000009");
    let raw = synthetic_segment(&truncated, SYSID);
    stage(&config, &truncated, &raw[..raw.len() / 2]).await;
    let outcome = replicator
        .process(&object(&config, &truncated))
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Corrupt(ref p) if p.contains("bytes")),
        "{outcome:?}"
    );

    for file in [mismatched, truncated] {
        let record = catalog(&config)
            .await
            .get(&config.cluster, &file)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, RecordStatus::Corrupt);
        assert!(record.detail.is_some());
        for provider in Provider::ALL {
            let key = archive_key(&config.cluster, &file);
            assert!(
                replica(&config, provider)
                    .await
                    .head(&key)
                    .await
                    .unwrap_err()
                    .is_not_found(),
                "{provider} must hold nothing"
            );
        }
    }
}

#[tokio::test]
async fn foreign_keys_and_buckets_are_acknowledged_and_ignored() {
    let config = Stack::shared().config(&unique_cluster("foreign"));
    let replicator = replicator(&config).await;
    for object in [
        ObjectRef {
            bucket: STAGING_BUCKET.into(),
            key: format!("{}/identity.json", config.cluster),
        },
        ObjectRef {
            bucket: STAGING_BUCKET.into(),
            key: "someone/else/file.txt".into(),
        },
        ObjectRef {
            bucket: "another-bucket".into(),
            key: staging_key(&config.cluster, &name("000000010000000000000001")),
        },
    ] {
        assert!(
            matches!(
                replicator.process(&object).await.unwrap(),
                Outcome::Ignored(_)
            ),
            "{object:?}"
        );
    }
}

#[tokio::test]
async fn a_different_upload_under_an_archived_name_is_a_recorded_conflict() {
    let config = Stack::shared().config(&unique_cluster("conflict"));
    let replicator = replicator(&config).await;
    let file = name("00000001000000000000000A");
    let original = synthetic_segment(&file, SYSID);
    stage(&config, &file, &original).await;
    assert_eq!(
        replicator.process(&object(&config, &file)).await.unwrap(),
        Outcome::Replicated
    );

    let mut other = original.clone();
    other[500_000] ^= 0x5A;
    stage(&config, &file, &other).await;
    let outcome = replicator.process(&object(&config, &file)).await.unwrap();
    assert!(matches!(outcome, Outcome::Conflict(_)), "{outcome:?}");
    // Re-driven again, it is not counted twice.
    replicator.process(&object(&config, &file)).await.unwrap();

    let record = catalog(&config)
        .await
        .get(&config.cluster, &file)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, RecordStatus::Replicated);
    assert_eq!(record.raw_sha256, Sha256Hex::of(&original));
    assert_eq!(record.conflicts, 1);
    for provider in Provider::ALL {
        let copy = replica(&config, provider)
            .await
            .get(&archive_key(&config.cluster, &file))
            .await
            .unwrap();
        assert_eq!(
            zstd_cli_decompress(&copy.body),
            original,
            "{provider} untouched"
        );
    }
}

#[tokio::test]
async fn a_batch_reports_exactly_the_failed_messages() {
    let config = Stack::shared().config(&unique_cluster("batch"));
    let good = name("00000001000000000000000B");
    let blocked = name("00000001000000000000000C");
    for file in [good, blocked] {
        stage(&config, &file, &synthetic_segment(&file, SYSID)).await;
    }
    let body = |file: &WalFileName| {
        json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": STAGING_BUCKET},
            "object": {"key": staging_key(&config.cluster, file)}}}]})
        .to_string()
    };
    // Messages are handled in order: the first staging read fails.
    let event = json!({"Records": [
        {"messageId": "blocked", "eventSource": "aws:sqs", "body": body(&blocked)},
        {"messageId": "malformed", "eventSource": "aws:sqs", "body": "{\"Records\": [{\"s3\": 42}]}"},
        {"messageId": "test-event", "eventSource": "aws:sqs", "body": "{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\"}"},
        {"messageId": "good", "eventSource": "aws:sqs", "body": body(&good)},
    ]});
    let staging_faults = Arc::new(FaultyStore::new(staging_store(
        &walvault_sdk_config(&config).await,
        &config,
    )));
    staging_faults.fail_next(Operation::Get, 1);
    let mut replicator = replicator(&config).await;
    replicator.staging = staging_faults;
    let response = handle_invocation(
        &replicator,
        &event,
        Duration::from_secs(900),
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "blocked"}, {"itemIdentifier": "malformed"}]})
    );
    assert_replicated(&config, &good, &synthetic_segment(&good, SYSID)).await;
    assert!(
        staging(&config)
            .await
            .head(&staging_key(&config.cluster, &blocked))
            .await
            .is_ok(),
        "the failed one waits for its retry"
    );
}

#[tokio::test]
async fn replica_keys_are_read_from_secrets_manager_once_and_never_shown() {
    let stack = Stack::shared();
    let cluster = unique_cluster("secrets");
    let sdk = walvault_sdk_config(&stack.config(&cluster)).await;
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .endpoint_url(stack.staging.endpoint())
            .build(),
    );
    let create = |name: String, value: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .create_secret()
                .name(name)
                .secret_string(value)
                .send()
                .await
                .unwrap()
                .arn
                .unwrap()
        }
    };
    let r2_arn = create(
        format!("{cluster}-r2"),
        json!({"access_key_id": standins::R2_KEY.0, "secret_access_key": standins::R2_KEY.1})
            .to_string(),
    )
    .await;
    let b2_arn = create(
        format!("{cluster}-b2"),
        "{\"access_key_id\": \"id\", \"password\": \"hunter2-very-secret\"}".to_owned(),
    )
    .await;

    let mut env: std::collections::BTreeMap<String, String> = stack
        .env(&cluster)
        .into_iter()
        .filter(|(k, _)| k.starts_with("WALVAULT_"))
        .collect();
    env.retain(|k, _| {
        !k.starts_with("WALVAULT_R2_ACCESS")
            && !k.starts_with("WALVAULT_R2_SECRET")
            && !k.starts_with("WALVAULT_B2_ACCESS")
            && !k.starts_with("WALVAULT_B2_SECRET")
    });
    env.insert("WALVAULT_R2_SECRET_ARN".into(), r2_arn);
    env.insert("WALVAULT_B2_SECRET_ARN".into(), b2_arn.clone());
    let mut config = Config::from_sources(&env, &Default::default()).unwrap();
    assert!(
        Replicator::from_config(&sdk, &config).is_err(),
        "unresolved keys cannot build clients"
    );

    // The B2 secret lacks secret_access_key: named, contents not shown.
    let err = shared::secrets::resolve_replica_credentials(&sdk, &mut config)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        shared::secrets::SecretsError::Malformed { arn: b2_arn }
    );
    assert!(!err.to_string().contains("hunter2"));

    // Fixed, the replicator works with keys from the secrets.
    let b2_good = create(
        format!("{cluster}-b2-good"),
        json!({"access_key_id": standins::B2_KEY.0, "secret_access_key": standins::B2_KEY.1})
            .to_string(),
    )
    .await;
    env.insert("WALVAULT_B2_SECRET_ARN".into(), b2_good);
    let mut config = Config::from_sources(&env, &Default::default()).unwrap();
    shared::secrets::resolve_replica_credentials(&sdk, &mut config)
        .await
        .unwrap();
    assert!(
        !format!("{config:?}").contains(standins::R2_KEY.1),
        "secrets stay out of debug output"
    );
    let replicator = replicator(&config).await;
    let (file, raw) = staged_segment(&config, "00000001000000000000000D").await;
    assert_eq!(
        replicator.process(&object(&config, &file)).await.unwrap(),
        Outcome::Replicated
    );
    assert_replicated(&config, &file, &raw).await;
}
