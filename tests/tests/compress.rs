//! The compress function's real clients and event shapes, called
//! in-process as the Lambda handler would, against the stand-ins: replicas
//! the `zstd` CLI reads, a real S3 notification through SQS, encoded keys,
//! concurrent deliveries racing on real conditional writes, keys from
//! Secrets Manager. The logic under every fault is tested on in-memory
//! backends (`shared/tests/replicate.rs`, `shared/tests/invocation.rs`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shared::catalog::RecordStatus;
use shared::codec::Sha256Hex;
use shared::config::Config;
use shared::events::ObjectRef;
use shared::keys::{archive_key, staging_key};
use shared::provider::Provider;
use shared::replicate::invocation::handle_invocation;
use shared::replicate::Outcome;
use shared::retry::RequestLimits;
use shared::wal::WalFileName;
use tokio::time::Instant;
use walvault_tests::archive::{backends, replicator, stage, synthetic_segment};
use walvault_tests::profile::iam::Role;
use walvault_tests::standins::{self, walvault_sdk_config, Stack, STAGING_BUCKET};
use walvault_tests::unique_cluster;

const SYSID: u64 = 7_301_234_567_890_123_456;

fn name(s: &str) -> WalFileName {
    s.parse().unwrap()
}

/// Pushes a synthetic segment named `file`, as `walvault push` does.
async fn staged_segment(config: &Config, file: &str) -> (WalFileName, Vec<u8>) {
    let file = name(file);
    let raw = synthetic_segment(&file, SYSID);
    stage(config, &file, &raw).await;
    (file, raw)
}

fn object(config: &Config, file: &WalFileName) -> ObjectRef {
    ObjectRef {
        bucket: STAGING_BUCKET.into(),
        key: staging_key(&config.cluster, file),
    }
}

fn budget(config: &Config) -> shared::retry::Budget {
    RequestLimits::from_config(config).one_request()
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
    let backends = backends(config).await;
    for provider in Provider::ALL {
        let copy = backends
            .replicas
            .get(provider)
            .unwrap()
            .get(&key)
            .await
            .unwrap();
        assert_eq!(zstd_cli_decompress(&copy.body), raw, "{provider} replica");
    }
    assert!(
        backends
            .staging
            .head(&staging_key(&config.cluster, file))
            .await
            .unwrap_err()
            .is_not_found(),
        "the staging copy is gone"
    );
    let record = backends
        .catalog
        .get(&config.cluster, &file.into())
        .await
        .unwrap()
        .expect("a record");
    assert_eq!(record.status, RecordStatus::Replicated);
    assert_eq!(record.raw_size, raw.len() as u64);
    assert_eq!(record.raw_sha256, Sha256Hex::of(raw));
    assert!(record.replicated_at.is_some());
    // A file streamed is compressed as it is written: each replica's size
    // is in its target, and the record has no single compressed digest.
    let streamed = raw.len() as u64 > shared::codec::IN_MEMORY_LIMIT;
    assert_eq!(record.compressed_sha256.is_none(), streamed);
    for provider in Provider::ALL {
        let target = record
            .target(provider)
            .unwrap_or_else(|| panic!("{provider} target"));
        assert_eq!(target.key, key);
        let stored = backends
            .replicas
            .get(provider)
            .unwrap()
            .head(&key)
            .await
            .unwrap();
        assert_eq!(target.size, stored.size, "{provider}: the recorded size");
        if streamed {
            assert!(
                stored.etag.as_deref().is_some_and(|e| e.contains('-')),
                "{provider}: a multipart object"
            );
        } else {
            assert_eq!(Some(target.size), record.compressed_size);
        }
    }
    if file.segment().is_some() {
        assert!(
            record.stored_size().unwrap() < raw.len() as u64 / 2,
            "WAL-like bytes compress"
        );
        assert_eq!(record.system_identifier, Some(SYSID));
        assert_eq!(record.pg_version, Some(15));
    }
}

#[tokio::test]
async fn a_staged_segment_is_replicated_verified_and_recorded() {
    let config = Stack::shared().config(&unique_cluster("happy"));
    let (file, raw) = staged_segment(&config, "000000010000000000000001").await;
    let outcome = replicator(&config)
        .await
        .process(&object(&config, &file), &budget(&config))
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
            .process(&object(&config, &history), &budget(&config))
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
    let ours = staging_key(&config.cluster, file);
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
    let encoded = staging_key(&config.cluster, first).replace('/', "%2F");
    let direct = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": STAGING_BUCKET}, "object": {"key": encoded, "size": raw.len()}}}]});
    handle_invocation(&replicator, &direct, Duration::from_secs(900), deadline())
        .await
        .unwrap();
    assert_replicated(&config, &first, &raw).await;

    let (second, raw) = staged_segment(&config, "000000010000000000000004").await;
    let bridge = json!({"version": "0", "detail-type": "Object Created", "source": "aws.s3",
        "detail": {"bucket": {"name": STAGING_BUCKET}, "object": {"key": staging_key(&config.cluster, second), "size": raw.len()}}});
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
            let (replicator, object, budget) =
                (replicator.clone(), object(&config, &file), budget(&config));
            tokio::spawn(async move { replicator.process(&object, &budget).await })
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
        replicator
            .process(&object(&config, &file), &budget(&config))
            .await
            .unwrap(),
        Outcome::AlreadyReplicated
    );
}

/// The compress role's SDK settings for `cluster`, and a Secrets Manager
/// client on the stand-in.
async fn secrets_manager(cluster: &str) -> (aws_config::SdkConfig, aws_sdk_secretsmanager::Client) {
    let stack = Stack::shared();
    let sdk = walvault_sdk_config(Role::Compress, &stack.config(cluster)).await;
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .endpoint_url(stack.moto.staging.endpoint())
            .build(),
    );
    (sdk, secrets)
}

#[tokio::test]
async fn replica_keys_are_read_from_secrets_manager_once_and_never_shown() {
    let stack = Stack::shared();
    let cluster = unique_cluster("secrets");
    let (sdk, secrets) = secrets_manager(&cluster).await;
    let (_, r2_key, b2_key) = standins::keys(Role::Compress, &cluster);
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
        json!({"access_key_id": r2_key, "secret_access_key": standins::SECRET}).to_string(),
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
    let config = Config::from_sources(&env, &Default::default()).unwrap();

    // The B2 secret lacks secret_access_key: start-up fails naming the
    // setting, never the secret's name or contents.
    let err = match shared::backends::Backends::connect_with(&sdk, &config).await {
        Err(e) => e,
        Ok(_) => panic!("a malformed secret must fail start-up"),
    };
    let printed = shared::error::chain(&err);
    assert!(printed.contains("WALVAULT_B2_SECRET_ARN"), "{printed}");
    assert!(
        !printed.contains("hunter2") && !printed.contains(&b2_arn),
        "{printed}"
    );

    // Fixed, the replicator works with keys from the secrets.
    let b2_good = create(
        format!("{cluster}-b2-good"),
        json!({"access_key_id": b2_key, "secret_access_key": standins::SECRET}).to_string(),
    )
    .await;
    env.insert("WALVAULT_B2_SECRET_ARN".into(), b2_good);
    let config = Config::from_sources(&env, &Default::default()).unwrap();
    let replicator = replicator(&config).await;
    let (file, raw) = staged_segment(&config, "00000001000000000000000D").await;
    assert_eq!(
        replicator
            .process(&object(&config, &file), &budget(&config))
            .await
            .unwrap(),
        Outcome::Replicated
    );
    assert_replicated(&config, &file, &raw).await;
}

/// A warm function keeps its clients for hours. When the R2 key it read at
/// start-up is revoked by a rotation, R2 answers `InvalidAccessKeyId`: the
/// function reads the secret again, once, and carries on with the new key.
/// A key the secret still holds is not retried, and nothing printed shows
/// a key.
#[tokio::test]
async fn a_rotated_replica_key_is_read_again_from_its_secret() {
    let stack = Stack::shared();
    let cluster = unique_cluster("rotation");
    let (_, secrets) = secrets_manager(&cluster).await;
    let (_, r2_key, _) = standins::keys(Role::Compress, &cluster);
    let key_json =
        |id: &str| json!({"access_key_id": id, "secret_access_key": standins::SECRET}).to_string();
    let revoked = "R2REVOKEDKEY0000";
    let arn = secrets
        .create_secret()
        .name(format!("{cluster}-r2"))
        .secret_string(key_json(revoked))
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let mut env: std::collections::BTreeMap<String, String> = stack
        .env(&cluster)
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("WALVAULT_")
                && !k.starts_with("WALVAULT_R2_ACCESS")
                && !k.starts_with("WALVAULT_R2_SECRET")
        })
        .collect();
    env.insert("WALVAULT_R2_SECRET_ARN".into(), arn.clone());
    let config = Config::from_sources(&env, &Default::default()).unwrap();
    let replicator = replicator(&config).await;

    // Rotated after start-up: the key in use is gone, the secret holds the new one.
    secrets
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(key_json(&r2_key))
        .send()
        .await
        .unwrap();
    let (file, raw) = staged_segment(&config, "000000010000000000000011").await;
    let outcome = replicator
        .process(&object(&config, &file), &budget(&config))
        .await;
    assert_eq!(outcome.unwrap(), Outcome::Replicated);
    assert_replicated(&config, &file, &raw).await;

    // Revoked and not replaced: the error says the key is not accepted,
    // the secret is not read again within the interval, no key is shown.
    let other = replicator_with_revoked_secret(&config, &secrets, &arn, &key_json(revoked)).await;
    let (file, _) = staged_segment(&config, "000000010000000000000012").await;
    let err = other
        .process(&object(&config, &file), &budget(&config))
        .await
        .unwrap_err();
    let printed = shared::error::chain(&err);
    assert!(printed.contains("access key is not accepted"), "{printed}");
    assert!(
        !printed.contains(revoked)
            && !printed.contains(standins::SECRET)
            && !printed.contains(&arn),
        "{printed}"
    );
}

/// A replicator that read the revoked key from the secret at start-up.
async fn replicator_with_revoked_secret(
    config: &Config,
    secrets: &aws_sdk_secretsmanager::Client,
    arn: &str,
    revoked: &str,
) -> shared::replicate::Replicator {
    secrets
        .put_secret_value()
        .secret_id(arn)
        .secret_string(revoked)
        .send()
        .await
        .unwrap();
    replicator(config).await
}

#[tokio::test]
async fn a_64_mib_segment_is_streamed_to_r2_and_b2_in_equal_parts_through_their_profiles() {
    // R2's profile refuses unequal parts; B2's refuses If-None-Match on
    // the completion (501): both are taken as the real services answer.
    let config = Stack::shared().config(&unique_cluster("large"));
    let file = name("000000010000000000000004");
    let size = shared::wal::SegmentSize::new(64 << 20).unwrap();
    let raw = shared::testing::synthetic_segment_of(&file, SYSID, size);
    stage(&config, &file, &raw).await;
    let concurrent: Vec<_> = (0..2)
        .map(|_| {
            let (object, budget) = (object(&config, &file), budget(&config));
            let config = config.clone();
            tokio::spawn(async move { replicator(&config).await.process(&object, &budget).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for delivery in concurrent {
        outcomes.push(delivery.await.unwrap().expect("no error for a duplicate"));
    }
    assert!(outcomes.contains(&Outcome::Replicated), "{outcomes:?}");
    assert_replicated(&config, &file, &raw).await;
}
