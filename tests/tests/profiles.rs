//! The behaviour profiles themselves: each documented rule of AWS S3,
//! DynamoDB, R2 and B2 (see `tests/src/profile/`) gives the documented
//! answer, and the wire faults reach walvault as the error class they
//! stand for.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use shared::codec::Sha256Hex;
use shared::error::Retryable;
use shared::store::{Metadata, ObjectStore, S3Options, S3Store, StoreError};
use walvault_tests::profile::aws::{AwsS3, MissingKeyPrefix};
use walvault_tests::profile::faults::NetFault;
use walvault_tests::profile::iam::Role;
use walvault_tests::profile::providers::{B2Key, LockRule, R2Token};
use walvault_tests::profile::{Profile, ProfileProxy};
use walvault_tests::standins::{
    keys, Service, Stack, B2_BUCKET, B2_REGION, CATALOG_TABLE, R2_BUCKET, SECRET, STAGING_BUCKET,
};
use walvault_tests::unique_cluster;

/// An S3 client signing with `access_key` for `region`.
fn s3(
    endpoint: &str,
    access_key: &str,
    region: &str,
    checksums: RequestChecksumCalculation,
) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(access_key, SECRET, None, None, "profiles"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .request_checksum_calculation(checksums)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn plain(endpoint: &str, access_key: &str, region: &str) -> aws_sdk_s3::Client {
    s3(
        endpoint,
        access_key,
        region,
        RequestChecksumCalculation::WhenRequired,
    )
}

/// The HTTP status and error code of a failed call (`ok` when it worked).
fn answer<T, E: ProvideErrorMetadata>(
    result: &Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            format!("{status} {}", e.code().unwrap_or("-"))
        }
    }
}

async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    answer(
        &client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await,
    )
}

async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    answer(&client.get_object().bucket(bucket).key(key).send().await)
}

async fn delete(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    answer(&client.delete_object().bucket(bucket).key(key).send().await)
}

#[tokio::test]
async fn aws_s3_answers_by_the_synthesized_iam_statements() {
    let stack = Stack::shared();
    let cluster = unique_cluster("iam-s3");
    let endpoint = stack.staging.endpoint();
    let as_role = |role: Role| plain(&endpoint, &keys(role, &cluster).0, "us-east-1");
    let staged = format!("{cluster}/staging/000000010000000000000001");
    let missing = format!("{cluster}/staging/000000010000000000000099");
    let (shipper, restore, compress, retention) = (
        as_role(Role::Shipper),
        as_role(Role::Restore),
        as_role(Role::Compress),
        as_role(Role::Retention),
    );
    assert_eq!(put(&shipper, STAGING_BUCKET, &staged).await, "ok");
    assert_eq!(
        get(&shipper, STAGING_BUCKET, &missing).await,
        "404 NoSuchKey",
        "ListBucket: missing is 404"
    );
    assert_eq!(
        delete(&shipper, STAGING_BUCKET, &staged).await,
        "403 AccessDenied",
        "hosts never delete"
    );
    assert_eq!(
        put(&shipper, STAGING_BUCKET, "another-cluster/staging/x").await,
        "403 AccessDenied"
    );
    assert_eq!(
        put(&restore, STAGING_BUCKET, &staged).await,
        "403 AccessDenied",
        "restore only reads"
    );
    assert_eq!(
        get(&restore, STAGING_BUCKET, &missing).await,
        "404 NoSuchKey"
    );
    assert_eq!(
        get(
            &compress,
            STAGING_BUCKET,
            &format!("{cluster}/identity.json")
        )
        .await,
        "403 AccessDenied"
    );
    assert_eq!(
        put(&compress, STAGING_BUCKET, &staged).await,
        "403 AccessDenied",
        "compress never writes staging"
    );
    assert_eq!(
        get(&retention, STAGING_BUCKET, &missing).await,
        "403 AccessDenied",
        "no ListBucket: missing is 403"
    );
    let unknown = plain(&endpoint, "AKIAIOSFODNN7EXAMPLE", "us-east-1");
    assert_eq!(
        get(&unknown, STAGING_BUCKET, &staged).await,
        "403 InvalidAccessKeyId"
    );
    let conditional = shipper
        .put_object()
        .bucket(STAGING_BUCKET)
        .key(&staged)
        .if_none_match("*")
        .body(ByteStream::from_static(b"y"))
        .send()
        .await;
    assert_eq!(answer(&conditional), "412 PreconditionFailed");
    assert_eq!(delete(&compress, STAGING_BUCKET, &staged).await, "ok");
}

#[tokio::test]
async fn hosts_see_404_whether_or_not_s3_evaluates_a_prefix_for_missing_keys() {
    let stack = Stack::shared();
    let cluster = unique_cluster("iam-prefix");
    let missing = format!("{cluster}/staging/000000010000000000000099");
    for rule in [MissingKeyPrefix::Key, MissingKeyPrefix::Absent] {
        let proxy = ProfileProxy::start(
            Profile::AwsS3(AwsS3 {
                policies: Arc::clone(&stack.policies),
                missing_key_prefix: rule,
            }),
            stack.moto.staging.port,
        );
        for role in [Role::Shipper, Role::Restore, Role::Compress] {
            let client = plain(&proxy.endpoint(), &keys(role, &cluster).0, "us-east-1");
            assert_eq!(
                get(&client, STAGING_BUCKET, &missing).await,
                "404 NoSuchKey",
                "{rule:?} {role:?}"
            );
        }
    }
}

/// The error code of a DynamoDB call (`ok` when it worked).
fn code<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    result: Result<(), aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
            .unwrap_or("-")
            .to_owned(),
    }
}

#[tokio::test]
async fn dynamodb_answers_by_the_synthesized_iam_statements() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = Stack::shared();
    let cluster = unique_cluster("iam-ddb");
    let client = |role: Role| {
        let conf = aws_sdk_dynamodb::config::Builder::new()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                keys(role, &cluster).0,
                SECRET,
                None,
                None,
                "p",
            ))
            .endpoint_url(stack.dynamodb.endpoint())
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    };
    let key = |c: &aws_sdk_dynamodb::Client| {
        c.get_item()
            .table_name(CATALOG_TABLE)
            .key("cluster", AttributeValue::S(cluster.clone()))
            .key("file_name", AttributeValue::S("00000002.history".into()))
    };
    assert_eq!(
        code(key(&client(Role::Shipper)).send().await.map(|_| ())),
        "ok"
    );
    assert_eq!(
        code(key(&client(Role::Restore)).send().await.map(|_| ())),
        "ok"
    );
    let put = |c: aws_sdk_dynamodb::Client| async move {
        c.put_item()
            .table_name(CATALOG_TABLE)
            .item("cluster", AttributeValue::S("x".into()))
            .item("file_name", AttributeValue::S("y".into()))
            .send()
            .await
            .map(|_| ())
    };
    assert_eq!(
        code(put(client(Role::Restore)).await),
        "AccessDeniedException"
    );
    assert_eq!(
        code(put(client(Role::Shipper)).await),
        "AccessDeniedException"
    );
    let delete = |c: aws_sdk_dynamodb::Client| async move {
        c.delete_item()
            .table_name(CATALOG_TABLE)
            .key("cluster", AttributeValue::S("x".into()))
            .key("file_name", AttributeValue::S("y".into()))
            .send()
            .await
            .map(|_| ())
    };
    assert_eq!(
        code(delete(client(Role::Compress)).await),
        "AccessDeniedException"
    );
    assert_eq!(code(delete(client(Role::Retention)).await), "ok");
}

#[tokio::test]
async fn r2_answers_as_cloudflare_documents() {
    let stack = Stack::shared();
    let proxy = stack.private_proxy(Service::R2);
    let prefix = unique_cluster("r2");
    let rw = R2Token::ObjectReadWrite.access_key_id("t");
    let client = plain(&proxy.endpoint(), &rw, "auto");
    let key = |n: &str| format!("{prefix}/{n}");
    assert_eq!(put(&client, R2_BUCKET, &key("a")).await, "ok");
    assert_eq!(
        put(&client, R2_BUCKET, &key("a")).await,
        "429 TooManyRequests",
        "one write a second to a key"
    );
    for alias in ["us-east-1", "auto"] {
        assert_eq!(
            get(&plain(&proxy.endpoint(), &rw, alias), R2_BUCKET, &key("a")).await,
            "ok",
            "{alias}"
        );
    }
    assert_eq!(
        get(
            &plain(&proxy.endpoint(), &rw, "eu-west-1"),
            R2_BUCKET,
            &key("a")
        )
        .await,
        "400 InvalidRegionName"
    );
    let read_only = plain(
        &proxy.endpoint(),
        &R2Token::ObjectReadOnly.access_key_id("t"),
        "auto",
    );
    assert_eq!(
        put(&read_only, R2_BUCKET, &key("b")).await,
        "403 AccessDenied"
    );
    let with_crc = s3(
        &proxy.endpoint(),
        &rw,
        "auto",
        RequestChecksumCalculation::WhenSupported,
    );
    let both = with_crc
        .put_object()
        .bucket(R2_BUCKET)
        .key(key("c"))
        .content_md5("ndTkYSaMgDT1yFZOFVxnpg==")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(
        answer(&both),
        "400 InvalidRequest",
        "Content-MD5 and a CRC together"
    );
    let big = client
        .put_object()
        .bucket(R2_BUCKET)
        .key(key("d"))
        .metadata("big", "x".repeat(8200))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(answer(&big), "400 MetadataTooLarge");
    let locked = client
        .put_object()
        .bucket(R2_BUCKET)
        .key(key("e"))
        .object_lock_mode(aws_sdk_s3::types::ObjectLockMode::Governance)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(answer(&locked), "501 NotImplemented");
    assert_eq!(
        multipart(&client, R2_BUCKET, &key("f"), &[5 << 20, 6 << 20, 1]).await,
        "400 InvalidPart"
    );
    assert_eq!(
        multipart(&client, R2_BUCKET, &key("g"), &[1 << 20, 1 << 20]).await,
        "400 EntityTooSmall"
    );
    assert_eq!(
        multipart(&client, R2_BUCKET, &key("h"), &[5 << 20, 5 << 20, 1]).await,
        "ok"
    );

    // A bucket lock rule: nothing under the prefix is deleted or replaced
    // before its age, whatever the token.
    let Profile::R2(rules) = proxy.profile() else {
        unreachable!()
    };
    rules.lock_rules.lock().unwrap().push(LockRule {
        prefix: format!("{prefix}/locked/"),
        max_age: Duration::from_secs(7 * 86_400),
    });
    assert_eq!(put(&client, R2_BUCKET, &key("locked/1")).await, "ok");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        delete(&client, R2_BUCKET, &key("locked/1")).await,
        "403 ObjectLockedByBucketPolicy"
    );
    assert_eq!(
        put(&client, R2_BUCKET, &key("locked/1")).await,
        "403 ObjectLockedByBucketPolicy"
    );
    proxy.advance_clock(Duration::from_secs(8 * 86_400));
    assert_eq!(
        delete(&client, R2_BUCKET, &key("locked/1")).await,
        "ok",
        "after the lock's age"
    );
}

/// A multipart upload of parts of `sizes`; the answer of its completion.
async fn multipart(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    sizes: &[usize],
) -> String {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap().to_owned();
    let mut parts = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let number = i as i32 + 1;
        let part = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from(vec![b'p'; *size]))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
    }
    let done = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    answer(&done)
}

#[tokio::test]
async fn b2_answers_as_backblaze_documents_and_users_report() {
    let stack = Stack::shared();
    let proxy = stack.private_proxy(Service::B2);
    let prefix = unique_cluster("b2");
    let key = |n: &str| format!("{prefix}/{n}");
    let as_key = |k: B2Key| plain(&proxy.endpoint(), &k.access_key_id("t"), B2_REGION);
    let (read, write, delete_key) = (
        as_key(B2Key::Read),
        as_key(B2Key::Write),
        as_key(B2Key::Delete),
    );
    assert_eq!(put(&write, B2_BUCKET, &key("a")).await, "ok");
    assert_eq!(
        put(&read, B2_BUCKET, &key("b")).await,
        "403 AccessDenied",
        "readFiles only"
    );
    let conditional = write
        .put_object()
        .bucket(B2_BUCKET)
        .key(key("c"))
        .if_none_match("*")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(answer(&conditional), "501 NotImplemented");
    let with_crc = s3(
        &proxy.endpoint(),
        &B2Key::Write.access_key_id("t"),
        B2_REGION,
        RequestChecksumCalculation::WhenSupported,
    );
    assert_eq!(
        put(&with_crc, B2_BUCKET, &key("d")).await,
        "400 InvalidArgument",
        "Unsupported header"
    );
    let wrong_region = plain(
        &proxy.endpoint(),
        &B2Key::Write.access_key_id("t"),
        "us-west-004",
    );
    assert_eq!(
        get(&wrong_region, B2_BUCKET, &key("a")).await,
        "400 AuthorizationHeaderMalformed"
    );
    let long = write
        .put_object()
        .bucket(B2_BUCKET)
        .key(key("e"))
        .metadata("info", "x".repeat(7000))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(
        answer(&long),
        "400 InvalidArgument",
        "name and file info over 7,000 bytes"
    );

    // A delete by name hides: the bytes stay as a version.
    assert_eq!(delete(&write, B2_BUCKET, &key("a")).await, "ok");
    assert_eq!(get(&read, B2_BUCKET, &key("a")).await, "404 NoSuchKey");
    let versions = read
        .list_object_versions()
        .bucket(B2_BUCKET)
        .prefix(key("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 1, "hidden, not deleted");
    let version = versions.versions()[0].version_id().unwrap().to_owned();
    let by_version = |c: &aws_sdk_s3::Client| {
        c.delete_object()
            .bucket(B2_BUCKET)
            .key(key("a"))
            .version_id(version.clone())
            .send()
    };
    assert_eq!(
        answer(&by_version(&write).await),
        "403 AccessDenied",
        "deleting a version needs deleteFiles"
    );
    assert_eq!(answer(&by_version(&delete_key).await), "ok");

    // Object Lock: uploads need Content-MD5; locked versions stay.
    let Profile::B2(rules) = proxy.profile() else {
        unreachable!()
    };
    *rules.object_lock.lock().unwrap() = Some(Duration::from_secs(7 * 86_400));
    assert_eq!(
        put(&write, B2_BUCKET, &key("f")).await,
        "400 InvalidRequest",
        "no Content-MD5"
    );
    let locked = write
        .put_object()
        .bucket(B2_BUCKET)
        .key(key("f"))
        .content_md5("ndTkYSaMgDT1yFZOFVxnpg==")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(answer(&locked), "ok");
    let version = locked.unwrap().version_id().unwrap().to_owned();
    let remove = || {
        delete_key
            .delete_object()
            .bucket(B2_BUCKET)
            .key(key("f"))
            .version_id(version.clone())
            .send()
    };
    assert_eq!(answer(&remove().await), "403 AccessDenied", "locked");
    proxy.advance_clock(Duration::from_secs(8 * 86_400));
    assert_eq!(answer(&remove().await), "ok", "after the retention period");
}

#[tokio::test]
async fn b2_that_accepts_checksum_headers_and_any_region_is_a_switch() {
    use walvault_tests::profile::providers::B2;
    let stack = Stack::shared();
    let proxy = ProfileProxy::start(
        Profile::B2(B2 {
            region: B2_REGION.into(),
            strict_region: false,
            accepts_checksum_headers: true,
            object_lock: Default::default(),
        }),
        stack.moto.b2.port,
    );
    let client = s3(
        &proxy.endpoint(),
        &B2Key::Write.access_key_id("t"),
        "us-east-1",
        RequestChecksumCalculation::WhenSupported,
    );
    assert_eq!(
        put(
            &client,
            B2_BUCKET,
            &format!("{}/a", unique_cluster("b2-lenient"))
        )
        .await,
        "ok"
    );
}

#[tokio::test]
async fn wire_faults_reach_walvault_as_their_error_class() {
    let stack = Stack::shared();
    let proxy = ProfileProxy::start(Profile::Plain, stack.moto.staging.port);
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("any", SECRET, None, None, "p"))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(2))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(proxy.endpoint())
            .force_path_style(true)
            .build(),
    );
    let store = S3Store::new("faulty", client, STAGING_BUCKET, S3Options::default());
    let key = format!("{}/staging/x", unique_cluster("wire"));
    let body = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    store
        .put_if_absent(&key, body.clone(), &Sha256Hex::of(&body), &Metadata::new())
        .await
        .unwrap();
    for (fault, expect) in [
        (NetFault::SLOW_DOWN, "throttled"),
        (NetFault::TOO_MANY_REQUESTS, "throttled"),
        (NetFault::INTERNAL_ERROR, "transient"),
        (NetFault::Reset, "transient"),
        (NetFault::Hang, "transient"),
        (NetFault::Truncate, "transient"),
    ] {
        proxy.faults().next(fault.clone(), 1);
        let error = store.get(&key).await.unwrap_err();
        let class = match &error {
            StoreError::Throttled { .. } => "throttled",
            e if !e.is_permanent() => "transient",
            _ => "permanent",
        };
        assert_eq!(class, expect, "{fault:?}: {error:?}");
        assert!(store.get(&key).await.is_ok(), "{fault:?} struck once");
    }
    assert_eq!(proxy.faults().injected().values().sum::<u64>(), 6);
}

/// The swapped assignment: the replica walvault knows as R2 behaves as B2
/// (no conditional writes, checksum headers refused, deletes that hide),
/// and the one it knows as B2 behaves as R2 (no versions). walvault's
/// fallbacks, not its knowledge of the provider kinds, must carry it:
/// archive, restore from each alone, and free on both.
#[tokio::test]
async fn the_swapped_assignment_still_archives_restores_and_frees() {
    use shared::archive::fetch::Fetcher;
    use shared::backends::Backends;
    use shared::provider::Provider;
    use shared::replicate::{Outcome, Replicator};

    use shared::retention::sweep::Sweeper;
    use shared::retry::RequestLimits;
    use shared::wal::WalFileName;
    use walvault_tests::archive::{stage, synthetic_segment};
    use walvault_tests::profile::providers::{B2, R2};
    use walvault_tests::standins::{config_from_env, walvault_sdk_config};

    let stack = Stack::shared();
    let cluster = unique_cluster("swapped");
    let b2_like = ProfileProxy::start(
        Profile::B2(B2 {
            region: B2_REGION.into(),
            strict_region: false,
            accepts_checksum_headers: false,
            object_lock: Default::default(),
        }),
        stack.moto.b2.port,
    );
    let r2_like = ProfileProxy::start(Profile::R2(R2::default()), stack.moto.r2.port);
    let config_as = |role: Role| {
        let (r2_key, b2_key) = match role {
            Role::Compress => (
                B2Key::Write.access_key_id("s"),
                R2Token::ObjectReadWrite.access_key_id("s"),
            ),
            Role::Retention => (
                B2Key::Delete.access_key_id("s"),
                R2Token::ObjectReadWrite.access_key_id("s"),
            ),
            _ => (
                B2Key::Read.access_key_id("s"),
                R2Token::ObjectReadOnly.access_key_id("s"),
            ),
        };
        let mut env = stack.env_as(role, &cluster);
        env.insert("WALVAULT_R2_ENDPOINT".into(), b2_like.endpoint());
        env.insert("WALVAULT_R2_BUCKET".into(), B2_BUCKET.into());
        env.insert("WALVAULT_R2_ACCESS_KEY_ID".into(), r2_key);
        env.insert("WALVAULT_B2_ENDPOINT".into(), r2_like.endpoint());
        env.insert("WALVAULT_B2_BUCKET".into(), R2_BUCKET.into());
        env.insert("WALVAULT_B2_ACCESS_KEY_ID".into(), b2_key);
        env.insert("WALVAULT_B2_REGION".into(), "auto".into());
        config_from_env(&env)
    };
    let backends = |role: Role| async move {
        let config = config_as(role);
        Backends::connect_with(&walvault_sdk_config(role, &config).await, &config)
            .await
            .unwrap()
    };
    let compress = config_as(Role::Compress);
    let replicator = Replicator::new(
        compress.cluster.clone(),
        compress.staging.bucket.clone(),
        backends(Role::Compress).await,
        compress.zstd_level,
        RequestLimits::from_config(&compress),
    )
    .unwrap();
    let files: Vec<(WalFileName, Vec<u8>)> = (1..=3)
        .map(|seg| {
            let file: WalFileName = format!("0000000100000000000000{seg:02X}").parse().unwrap();
            let raw = synthetic_segment(&file, 7_301_234_567_890_123_456);
            (file, raw)
        })
        .chain(std::iter::once((
            "000000010000000000000003.00000028.backup".parse().unwrap(),
            b"START WAL LOCATION: 0/3000028\n".to_vec(),
        )))
        .collect();
    for (file, raw) in &files {
        stage(&compress, file, raw).await;
        let object = shared::events::ObjectRef {
            bucket: STAGING_BUCKET.into(),
            key: shared::keys::staging_key(&compress.cluster, file),
        };
        let outcome = replicator
            .process(
                &object,
                &RequestLimits::from_config(&compress).one_request(),
            )
            .await;
        assert_eq!(outcome.unwrap(), Outcome::Replicated, "{file}");
    }
    let restore = backends(Role::Restore).await;
    for first in Provider::ALL {
        let fetcher = Fetcher::new(
            compress.cluster.clone(),
            restore.catalog.clone(),
            restore.staging.clone(),
            restore.replicas.ordered(&[first]),
            RequestLimits::from_config(&compress),
        );
        for (file, raw) in &files[..3] {
            let fetched = fetcher.fetch(file).await.unwrap();
            assert_eq!(
                fetched.source,
                shared::archive::fetch::Source::Replica(first)
            );
            assert_eq!(&fetched.into_bytes().unwrap(), raw);
        }
    }
    let retention = backends(Role::Retention).await;
    let config = config_as(Role::Retention);
    let report = Sweeper {
        max_deletes: 100,
        ..Sweeper::from_config(&config, &retention)
    }
    .sweep(
        shared::clock::now_millis() + 40 * 86_400_000,
        false,
        tokio::time::Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.catalog_removed, 2);
    assert!(retention
        .catalog
        .get(&config.cluster, &(files[0].0).into())
        .await
        .unwrap()
        .is_none());
    let versions = plain(&stack.moto.b2.endpoint(), "admin", "us-east-1")
        .list_object_versions()
        .bucket(B2_BUCKET)
        .prefix(format!("{cluster}/wal/000000010000000000000001"))
        .send()
        .await
        .unwrap();
    assert!(
        versions.versions().is_empty() && versions.delete_markers().is_empty(),
        "freed, not hidden"
    );
}
