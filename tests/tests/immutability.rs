//! The immutability window: R2 bucket lock rules and B2 Object Lock on the
//! archive prefix, shorter than the retention window. walvault writes under
//! them (B2 takes an upload only with Content-MD5), a stolen compress or
//! host key cannot destroy what is archived inside the window, and the
//! retention sweep deletes once the locks have expired.

use std::time::Duration;

use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::primitives::ByteStream;
use shared::archive::fetch::{Fetcher, Source};
use shared::clock::now_millis;
use shared::keys::archive_key;
use shared::provider::Provider;
use shared::retention::sweep::Sweeper;
use shared::retry::RequestLimits;
use shared::wal::WalFileName;
use tokio::time::Instant;
use walvault_tests::archive::{archive_replicated, backends_as, synthetic_segment};
use walvault_tests::profile::iam::Role;
use walvault_tests::profile::providers::LockRule;
use walvault_tests::profile::Profile;
use walvault_tests::standins::{
    config_from_env, keys, Service, Stack, B2_BUCKET, B2_REGION, R2_BUCKET, SECRET,
};
use walvault_tests::unique_cluster;

const DAY: u64 = 86_400_000;
const LOCK_DAYS: u64 = 7;
const SYSID: u64 = 7_301_234_567_890_123_456;

fn segment(seg: u32) -> WalFileName {
    format!("0000000100000000000000{seg:02X}").parse().unwrap()
}

fn client(endpoint: &str, access_key: &str, region: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(access_key, SECRET, None, None, "intruder"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn ok<T, E>(result: Result<T, E>) -> bool {
    result.is_ok()
}

#[tokio::test]
async fn a_stolen_key_cannot_destroy_the_archive_inside_the_window_and_the_sweep_frees_it_after() {
    let stack = Stack::shared();
    let cluster = unique_cluster("immutable");
    let (r2, b2) = (
        stack.private_proxy(Service::R2),
        stack.private_proxy(Service::B2),
    );
    let Profile::R2(r2_rules) = r2.profile() else {
        unreachable!()
    };
    r2_rules.lock_rules.lock().unwrap().push(LockRule {
        prefix: format!("{cluster}/wal/"),
        max_age: Duration::from_millis(LOCK_DAYS * DAY),
    });
    let Profile::B2(b2_rules) = b2.profile() else {
        unreachable!()
    };
    *b2_rules.object_lock.lock().unwrap() = Some(Duration::from_millis(LOCK_DAYS * DAY));

    let mut env = stack.env(&cluster);
    env.insert("WALVAULT_R2_ENDPOINT".into(), r2.endpoint());
    env.insert("WALVAULT_B2_ENDPOINT".into(), b2.endpoint());
    env.insert("WALVAULT_IMMUTABLE_DAYS".into(), LOCK_DAYS.to_string());
    let config = config_from_env(&env);
    let mut archived = Vec::new();
    for seg in 1..=3 {
        let file = segment(seg);
        let raw = synthetic_segment(&file, SYSID);
        archive_replicated(&config, &file, &raw).await;
        archived.push((file, raw));
    }
    let backup: WalFileName = format!("{}.00000028.backup", segment(3)).parse().unwrap();
    archive_replicated(&config, &backup, b"START WAL LOCATION: 0/3000028\n").await;

    // The compress function's keys, stolen: they can write and (on R2)
    // delete; the host's can only read.
    for role in [Role::Compress, Role::Shipper] {
        let (_, r2_key, b2_key) = keys(role, &cluster);
        let (on_r2, on_b2) = (
            client(&r2.endpoint(), &r2_key, "auto"),
            client(&b2.endpoint(), &b2_key, B2_REGION),
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        for (file, _) in &archived {
            let key = archive_key(&config.cluster, file);
            assert!(
                !ok(on_r2
                    .delete_object()
                    .bucket(R2_BUCKET)
                    .key(&key)
                    .send()
                    .await),
                "{role:?} deleted {key} on R2"
            );
            let overwrite = on_r2
                .put_object()
                .bucket(R2_BUCKET)
                .key(&key)
                .body(ByteStream::from_static(b"ransom"))
                .send()
                .await;
            assert!(!ok(overwrite), "{role:?} overwrote {key} on R2");
            // On B2 a write key can hide by name and upload over it; neither
            // removes the locked version.
            let _hidden = on_b2
                .delete_object()
                .bucket(B2_BUCKET)
                .key(&key)
                .send()
                .await;
            let versions = on_b2
                .list_object_versions()
                .bucket(B2_BUCKET)
                .prefix(&key)
                .send()
                .await
                .unwrap();
            for version in versions.versions() {
                let removed = on_b2
                    .delete_object()
                    .bucket(B2_BUCKET)
                    .key(&key)
                    .set_version_id(version.version_id().map(str::to_owned))
                    .send()
                    .await;
                assert!(!ok(removed), "{role:?} removed a version of {key} on B2");
            }
        }
    }
    // The retention function's keys can delete versions, but not locked ones.
    let (_, _, b2_delete) = keys(Role::Retention, &cluster);
    let on_b2 = client(&b2.endpoint(), &b2_delete, B2_REGION);
    let key = archive_key(&config.cluster, archived[0].0);
    let versions = on_b2
        .list_object_versions()
        .bucket(B2_BUCKET)
        .prefix(&key)
        .send()
        .await
        .unwrap();
    assert!(
        !versions.versions().is_empty(),
        "the original version is still stored on B2"
    );
    for version in versions.versions() {
        let removed = on_b2
            .delete_object()
            .bucket(B2_BUCKET)
            .key(&key)
            .set_version_id(version.version_id().map(str::to_owned))
            .send()
            .await;
        assert!(!ok(removed), "a locked version was removed");
    }

    // Every file still restores, from R2 and from B2 alone (hidden there:
    // served from its version).
    let restore = backends_as(Role::Restore, &config).await;
    for order in [[Provider::R2, Provider::B2], [Provider::B2, Provider::R2]] {
        let fetcher = Fetcher::new(
            config.cluster.clone(),
            restore.catalog.clone(),
            restore.staging.clone(),
            restore.replicas.ordered(&order),
            RequestLimits::from_config(&config),
        );
        for (file, raw) in &archived {
            let fetched = fetcher
                .fetch(file)
                .await
                .unwrap_or_else(|e| panic!("{file} from {order:?}: {e}"));
            assert_eq!(fetched.source, Source::Replica(order[0]), "{file}");
            assert_eq!(&fetched.into_bytes().unwrap(), raw, "{file}");
        }
    }

    // Forty days on, the locks have expired and the sweep frees what the
    // retention window no longer needs, every version of it on B2.
    r2.advance_clock(Duration::from_millis(40 * DAY));
    b2.advance_clock(Duration::from_millis(40 * DAY));
    let retention = backends_as(Role::Retention, &config).await;
    let sweeper = Sweeper {
        max_deletes: 1000,
        ..Sweeper::from_config(&config, &retention)
    };
    let report = sweeper
        .sweep(
            now_millis() + 40 * DAY,
            false,
            Instant::now() + Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(
        report.catalog_removed, 2,
        "segments 1 and 2, before the backup"
    );
    for (file, _) in &archived[..2] {
        let key = archive_key(&config.cluster, file);
        let left = on_b2
            .list_object_versions()
            .bucket(B2_BUCKET)
            .prefix(&key)
            .send()
            .await
            .unwrap();
        assert!(
            left.versions().is_empty() && left.delete_markers().is_empty(),
            "{key}: {left:?}"
        );
    }
}

#[test]
fn the_window_must_end_before_retention_does() {
    let stack_free = |days: &str| {
        let mut env = std::collections::BTreeMap::new();
        for (k, v) in [
            ("CLUSTER", "c"),
            ("STAGING_BUCKET", "bucket"),
            ("CATALOG_TABLE", "table"),
            ("RETENTION_DAYS", "30"),
            ("IMMUTABLE_DAYS", days),
        ] {
            env.insert(format!("WALVAULT_{k}"), v.to_owned());
        }
        shared::config::Config::from_sources(&env, &Default::default())
    };
    assert!(stack_free("7").is_ok());
    assert!(stack_free("30").is_err());
}
