//! The real S3 store against the S3 stand-ins: conditional creates,
//! reads, listing, error classes, and the R2/B2 client settings. The
//! put-if-absent contract also runs against the in-memory store, which the
//! tests of the logic rely on behaving the same.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shared::codec::Sha256Hex;
use shared::config::Config;
use shared::error::Retryable;
use shared::provider::Provider;
use shared::retry::Budget;
use shared::store::{
    list_all, ConditionalPut, MemoryStore, Metadata, ObjectStore, PutOutcome, S3Options, S3Store,
    StoreError,
};
use walvault_tests::archive::backends;
use walvault_tests::profile::iam::Role;
use walvault_tests::standins::{self, aws_sdk_config, s3_client, Stack, B2_BUCKET, STAGING_BUCKET};
use walvault_tests::unique_cluster;

async fn staging(config: &Config) -> Arc<dyn ObjectStore> {
    backends(config).await.staging
}

async fn replica(config: &Config, provider: Provider) -> Arc<dyn ObjectStore> {
    Arc::clone(
        backends(config)
            .await
            .replicas
            .get(provider)
            .expect("configured"),
    )
}

/// An S3 store over `bucket` of the stand-in at `endpoint`, in `conditional` mode.
async fn raw_store(endpoint: &str, bucket: &str, conditional: ConditionalPut) -> S3Store {
    let client = s3_client(&aws_sdk_config().await, endpoint);
    S3Store::new(
        "raw",
        client,
        bucket,
        S3Options {
            conditional,
            ..S3Options::default()
        },
    )
}

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Absent → created; same bytes → already present; different bytes →
/// refused with the original intact. Both conditional-put modes. Through
/// walvault's retry loop: R2 allows one write a second to a key.
async fn put_if_absent_contract(store: &dyn ObjectStore, key: &str) {
    let budget = Budget::attempts(4, Duration::from_secs(10));
    let put = |body: &Bytes, sha: &Sha256Hex, metadata: Metadata| {
        let (body, sha) = (body.clone(), sha.clone());
        async move {
            budget
                .run("put", || {
                    store.put_if_absent(key, body.clone(), &sha, &metadata)
                })
                .await
        }
    };
    let original = Bytes::from_static(b"first version of the segment");
    let original_sha = Sha256Hex::of(&original);
    let first = put(&original, &original_sha, meta(&[("host", "db1")]))
        .await
        .unwrap();
    assert!(matches!(first, PutOutcome::Created { .. }), "{first:?}");

    let again = put(&original, &original_sha, Metadata::new())
        .await
        .unwrap();
    assert!(
        matches!(again, PutOutcome::AlreadyPresent { .. }),
        "{again:?}"
    );

    let other = Bytes::from_static(b"a different segment, same name");
    let refused = put(&other, &Sha256Hex::of(&other), Metadata::new())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StoreError::PreconditionFailed { .. }),
        "{refused:?}"
    );

    let stored = store.get(key).await.unwrap();
    assert_eq!(stored.body, original, "the original must be untouched");
    assert_eq!(stored.info.sha256(), Some(original_sha));
    assert_eq!(
        stored.info.metadata.get("host").map(String::as_str),
        Some("db1")
    );
}

#[tokio::test]
async fn put_if_absent_with_if_none_match() {
    let config = Stack::shared().config(&unique_cluster("put"));
    let store = staging(&config).await;
    put_if_absent_contract(
        store.as_ref(),
        &format!("{}/staging/000000010000000000000001", config.cluster),
    )
    .await;
}

#[tokio::test]
async fn put_if_absent_with_head_and_compare_and_in_memory() {
    let config = Stack::shared().config(&unique_cluster("head-compare"));
    let endpoint = Stack::shared().moto.b2.endpoint();
    let store = raw_store(&endpoint, B2_BUCKET, ConditionalPut::HeadAndCompare).await;
    let key = format!("{}/wal/000000010000000000000001.zst", config.cluster);
    put_if_absent_contract(&store, &key).await;
    assert_eq!(store.conditional_put(), ConditionalPut::HeadAndCompare);
    put_if_absent_contract(&MemoryStore::new("memory"), &key).await;
}

#[tokio::test]
async fn of_32_concurrent_different_creators_exactly_one_wins() {
    let config = Stack::shared().config(&unique_cluster("race"));
    let store = staging(&config).await;
    let key = format!("{}/staging/000000010000000000000002", config.cluster);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let body = Bytes::from(format!("writer {i} content").into_bytes());
                let sha = Sha256Hex::of(&body);
                let outcome = store
                    .put_if_absent(&key, body.clone(), &sha, &Metadata::new())
                    .await;
                (body, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (body, outcome) = task.await.unwrap();
        match outcome {
            Ok(PutOutcome::Created { .. }) => winners.push(body),
            Err(StoreError::PreconditionFailed { .. }) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator must win");
    assert_eq!(store.get(&key).await.unwrap().body, winners[0]);
}

#[tokio::test]
async fn concurrent_identical_creators_all_succeed() {
    let config = Stack::shared().config(&unique_cluster("same"));
    let store = staging(&config).await;
    let key = format!("{}/staging/000000010000000000000003", config.cluster);
    let body = Bytes::from_static(b"the same bytes from every writer");
    let sha = Sha256Hex::of(&body);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, key, body, sha) = (store.clone(), key.clone(), body.clone(), sha.clone());
            tokio::spawn(async move {
                store
                    .put_if_absent(&key, body, &sha, &Metadata::new())
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            PutOutcome::Created { .. } => created += 1,
            PutOutcome::AlreadyPresent { .. } => {}
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test]
async fn an_object_not_written_by_walvault_is_never_taken_as_ours() {
    let config = Stack::shared().config(&unique_cluster("foreign"));
    let store = staging(&config).await;
    let key = format!("{}/staging/000000010000000000000004", config.cluster);
    let body = Bytes::from_static(b"uploaded by hand");
    s3_client(&aws_sdk_config().await, &Stack::shared().staging.endpoint())
        .put_object()
        .bucket(STAGING_BUCKET)
        .key(&key)
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let err = store
        .put_if_absent(&key, body.clone(), &Sha256Hex::of(&body), &Metadata::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::PreconditionFailed { ref detail, .. } if detail.contains("no sha256")),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_head_delete_and_list() {
    let config = Stack::shared().config(&unique_cluster("ops"));
    let store = staging(&config).await;
    let prefix = format!("{}/staging/", config.cluster);
    let missing = format!("{prefix}000000010000000000000009");
    assert!(store.get(&missing).await.unwrap_err().is_not_found());
    assert!(store.head(&missing).await.unwrap_err().is_not_found());
    store
        .delete(&missing)
        .await
        .expect("deleting a missing key succeeds");

    // Written out of order; listed in key (= WAL) order.
    let names = [
        "000000010000000000000003",
        "000000010000000000000001",
        "00000002.history",
        "000000010000000000000002",
    ];
    for name in names {
        let body = Bytes::from(name.as_bytes().to_vec());
        store
            .put_if_absent(
                &format!("{prefix}{name}"),
                body.clone(),
                &Sha256Hex::of(&body),
                &Metadata::new(),
            )
            .await
            .unwrap();
    }
    let listed: Vec<String> = list_all(store.as_ref(), &prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut expected: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
    expected.sort();
    assert_eq!(listed, expected);

    let head = store.head(&expected[0]).await.unwrap();
    assert_eq!(head.size, 24);
    assert!(head.etag.is_some() && head.last_modified.is_some());

    store.delete(&expected[0]).await.unwrap();
    assert!(store.head(&expected[0]).await.unwrap_err().is_not_found());
    assert_eq!(list_all(store.as_ref(), &prefix).await.unwrap().len(), 3);
}

#[tokio::test]
async fn listing_follows_pages() {
    let config = Stack::shared().config(&unique_cluster("pages"));
    // On the R2 stand-in: staging would send a notification per object.
    let store = replica(&config, Provider::R2).await;
    let prefix = format!("{}/wal/", config.cluster);
    let keys: Vec<String> = (0..1010u32).map(|i| format!("{prefix}{i:08X}")).collect();
    // Past the 1000-key page size, a few writers at a time.
    for chunk in keys.chunks(8) {
        let writes: Vec<_> = chunk
            .iter()
            .map(|key| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let body = Bytes::from(key.clone().into_bytes());
                    store
                        .put_if_absent(&key, body.clone(), &Sha256Hex::of(&body), &Metadata::new())
                        .await
                        .unwrap();
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap();
        }
    }
    let listed: Vec<String> = list_all(store.as_ref(), &prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, keys, "every key once, in order");
}

#[tokio::test]
async fn r2_and_b2_clients_work_with_their_own_settings() {
    let stack = Stack::shared();
    let config = stack.config(&unique_cluster("replicas"));
    for provider in Provider::ALL {
        let replica_config = config.replica(provider).unwrap();
        assert_eq!(
            replica_config.region,
            if provider == Provider::R2 {
                "auto"
            } else {
                standins::B2_REGION
            }
        );
        let store = replica(&config, provider).await;
        assert_eq!(store.name(), provider.as_str());
        let key = format!("{}/wal/000000010000000000000001.zst", config.cluster);
        put_if_absent_contract(store.as_ref(), &key).await;
    }
    // Each replica went to its own endpoint, not staging.
    let key = format!("{}/wal/000000010000000000000001.zst", config.cluster);
    assert!(staging(&config)
        .await
        .head(&key)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn an_unreachable_store_is_retryable_and_a_missing_bucket_is_not() {
    let mut config = Stack::shared().config(&unique_cluster("down"));
    config.request_timeout = Duration::from_secs(2);
    config.max_attempts = 1;
    let good_endpoint = config.staging.endpoint.clone();
    // Nothing listens on port 9 of loopback (discard is never enabled here).
    config.staging.endpoint = Some("http://127.0.0.1:9".into());
    let down = staging(&config).await;
    let err = down
        .head("any/staging/000000010000000000000001")
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "{err:?}");
    let body = Bytes::from_static(b"x");
    let err = down
        .put_if_absent(
            "any/staging/x",
            body.clone(),
            &Sha256Hex::of(&body),
            &Metadata::new(),
        )
        .await
        .unwrap_err();
    assert!(!err.is_permanent(), "{err:?}");

    config.staging.endpoint = good_endpoint;
    config.staging.bucket = "no-such-bucket".into();
    let wrong = staging(&config).await;
    let err = wrong
        .put_if_absent("k", body.clone(), &Sha256Hex::of(&body), &Metadata::new())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
}

#[tokio::test]
async fn staging_writes_notify_the_queue() {
    let stack = Stack::shared();
    let config = stack.config(&unique_cluster("notify"));
    let store = staging(&config).await;
    let key = format!("{}/staging/000000010000000000000001", config.cluster);
    let body = Bytes::from_static(b"segment");
    store
        .put_if_absent(&key, body.clone(), &Sha256Hex::of(&body), &Metadata::new())
        .await
        .unwrap();

    let queue = stack.staging_queue().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Other tests share the queue: only ours is deleted.
        for message in queue.receive().await {
            if standins::announced_key(&message).as_ref() != Some(&key) {
                continue;
            }
            let event: serde_json::Value =
                serde_json::from_str(message.body().unwrap_or_default()).unwrap();
            assert_eq!(event["Records"][0]["eventName"], "ObjectCreated:Put");
            assert_eq!(event["Records"][0]["s3"]["bucket"]["name"], STAGING_BUCKET);
            queue.delete(&message).await;
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ObjectCreated notification for {key}"
        );
    }
}

#[tokio::test]
async fn deletes_remove_every_key_and_missing_ones_are_fine() {
    let config = Stack::shared().config(&unique_cluster("batch-delete"));
    // R2 past one DeleteObjects request; B2 key by key, every version.
    for (provider, count) in [(Provider::R2, 1010u32), (Provider::B2, 24)] {
        let store = replica(&config, provider).await;
        let prefix = format!("{}/wal/", config.cluster);
        let keys: Vec<String> = (0..count).map(|i| format!("{prefix}{i:08X}")).collect();
        for key in keys.iter().step_by(2) {
            let body = Bytes::from(key.clone().into_bytes());
            store
                .put_if_absent(key, body.clone(), &Sha256Hex::of(&body), &Metadata::new())
                .await
                .unwrap();
        }
        // Half of the keys never existed.
        let results = store.delete_many(&keys).await;
        assert_eq!(results.len(), keys.len());
        assert!(
            results.iter().all(Result::is_ok),
            "{provider}: {:?}",
            results.iter().find(|r| r.is_err())
        );
        assert!(
            list_all(store.as_ref(), &prefix).await.unwrap().is_empty(),
            "{provider}"
        );
    }
    // On B2 nothing is left hidden: the bytes are gone, not just out of sight.
    let versions = s3_client(&aws_sdk_config().await, &Stack::shared().moto.b2.endpoint())
        .list_object_versions()
        .bucket(B2_BUCKET)
        .prefix(format!("{}/wal/", config.cluster))
        .send()
        .await
        .unwrap();
    assert!(
        versions.versions().is_empty() && versions.delete_markers().is_empty(),
        "{versions:?}"
    );
}

/// `key` held A, was cleared, and now holds B: a delete conditioned on A's
/// ETag leaves B alone; one on B's removes it; a missing key is fine.
async fn delete_if_etag_contract(writer: &dyn ObjectStore, deleter: &dyn ObjectStore, key: &str) {
    let put = |body: &'static [u8]| {
        let body = Bytes::from_static(body);
        async move {
            writer
                .put_if_absent(key, body.clone(), &Sha256Hex::of(&body), &Metadata::new())
                .await
                .unwrap()
        }
    };
    put(b"first object").await;
    let first = deleter.head(key).await.unwrap().etag.expect("an ETag");
    deleter.delete(key).await.unwrap();
    put(b"second object").await;
    let second = deleter.head(key).await.unwrap().etag.expect("an ETag");
    assert_ne!(first, second);
    let err = deleter.delete_if_etag(key, &first).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PreconditionFailed { .. }),
        "{err:?}"
    );
    assert_eq!(&deleter.get(key).await.unwrap().body[..], b"second object");
    deleter.delete_if_etag(key, &second).await.unwrap();
    assert!(deleter.head(key).await.unwrap_err().is_not_found());
    deleter.delete_if_etag(key, &second).await.unwrap();
}

#[tokio::test]
async fn conditional_deletes_remove_only_the_object_that_was_read() {
    let config = Stack::shared().config(&unique_cluster("delete-if"));
    let key = format!("{}/staging/000000010000000000000001", config.cluster);
    // The host writes staging; the compress function deletes from it.
    let compress = staging(&standins::as_role(Role::Compress, &config)).await;
    delete_if_etag_contract(staging(&config).await.as_ref(), compress.as_ref(), &key).await;
    // B2 keeps versions: compared, then every version removed.
    let admin = standins::as_role(Role::Admin, &config);
    let b2 = replica(&admin, Provider::B2).await;
    let key = format!("{}/wal/000000010000000000000001.zst", config.cluster);
    delete_if_etag_contract(b2.as_ref(), b2.as_ref(), &key).await;
    let memory = MemoryStore::new("memory");
    delete_if_etag_contract(&memory, &memory, &key).await;
}

/// `key` holds A: a write naming A's ETag replaces it with B; one naming
/// A's ETag again (B is there now) is refused and B stays; so is one on a
/// missing key. Writes to the key a second apart: R2 allows one a second.
async fn put_replacing_contract(store: &dyn ObjectStore, key: &str) {
    let pause = || tokio::time::sleep(Duration::from_millis(1100));
    let sha = Sha256Hex::of(b"raw bytes");
    store
        .put_if_absent(
            key,
            Bytes::from_static(b"damaged copy"),
            &sha,
            &Metadata::new(),
        )
        .await
        .unwrap();
    let first = store.head(key).await.unwrap().etag.expect("an ETag");
    pause().await;
    let replaced = store
        .put_replacing(
            key,
            Bytes::from_static(b"verified copy"),
            &sha,
            &Metadata::new(),
            &first,
        )
        .await
        .unwrap();
    assert_eq!(&store.get(key).await.unwrap().body[..], b"verified copy");
    let second = store.head(key).await.unwrap();
    assert_ne!(second.etag.as_deref(), Some(first.as_str()));
    assert_eq!(second.sha256(), Some(sha.clone()));
    if let Some(replaced) = replaced {
        assert_eq!(Some(replaced), second.etag);
    }
    pause().await;
    let stale = store
        .put_replacing(
            key,
            Bytes::from_static(b"stale"),
            &sha,
            &Metadata::new(),
            &first,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::PreconditionFailed { .. }),
        "{stale:?}"
    );
    assert_eq!(&store.get(key).await.unwrap().body[..], b"verified copy");
    let missing = format!("{key}.missing");
    let absent = store
        .put_replacing(
            &missing,
            Bytes::from_static(b"x"),
            &sha,
            &Metadata::new(),
            &first,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(absent, StoreError::PreconditionFailed { .. }),
        "{absent:?}"
    );
    assert!(store.head(&missing).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn a_replacing_write_lands_only_over_the_object_it_names() {
    // R2 takes If-Match on PUT; B2 answers 501 and the store compares the
    // ETag itself first.
    let config = Stack::shared().config(&unique_cluster("put-replacing"));
    let operator = standins::as_role(Role::Repair, &config);
    for provider in Provider::ALL {
        let store = replica(&operator, provider).await;
        let key = format!("{}/wal/000000010000000000000001.zst", config.cluster);
        put_replacing_contract(store.as_ref(), &key).await;
    }
    put_replacing_contract(&MemoryStore::new("memory"), "k").await;
}
