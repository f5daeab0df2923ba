//! Puts files into the archive on the stand-ins through walvault's own code
//! paths — `walvault push`'s [`Pusher`] into staging, then the compress
//! function's [`Replicator`] into the replicas and the catalog — so that
//! tests of restore start from exactly what production writes.

use std::sync::Arc;
use std::time::Duration;

use shared::archive::push::Pusher;
use shared::archive::spool::Spool;
use shared::backends::Backends;
use shared::catalog::CatalogRecord;
use shared::config::Config;
use shared::keys::staging_key;
use shared::provider::Provider;
use shared::replicate::{Outcome, Replicator};
use shared::retry::RequestLimits;
use shared::seal::state::check_at_start;
use shared::store::{ObjectStore, S3Options, S3Store};
use shared::wal::WalFileName;

use crate::profile::iam::Role;
use crate::standins::{
    as_role, aws_sdk_config, s3_client, walvault_sdk_config, Stack, B2_BUCKET, R2_BUCKET,
    STAGING_BUCKET,
};

pub use shared::testing::synthetic_segment;

/// The clients walvault builds for `config`, signed as `role`.
pub async fn backends_as(role: Role, config: &Config) -> Backends {
    let config = as_role(role, config);
    Backends::connect_with(&walvault_sdk_config(role, &config).await, &config)
        .await
        .expect("the stand-ins' backends")
}

/// The clients of the harness itself (no IAM check): for looking at what
/// walvault left, and for planting damage.
pub async fn backends(config: &Config) -> Backends {
    backends_as(Role::Admin, config).await
}

/// `provider`'s replica bucket reached behind its profile: how a test
/// damages an archived object (as a disk fault or an intruder would),
/// without the service's rules getting in the way.
pub async fn tamper(provider: Provider) -> Arc<dyn ObjectStore> {
    let stack = Stack::shared();
    let (moto, bucket) = match provider {
        Provider::R2 => (&stack.moto.r2, R2_BUCKET),
        Provider::B2 => (&stack.moto.b2, B2_BUCKET),
    };
    let client = s3_client(&aws_sdk_config().await, &moto.endpoint());
    Arc::new(S3Store::new(
        provider.as_str(),
        client,
        bucket,
        S3Options::default(),
    ))
}

/// Pushes `raw` as `name` into staging, as `walvault push` does.
pub async fn stage(config: &Config, name: &WalFileName, raw: &[u8]) {
    let backends = backends_as(Role::Shipper, config).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name.to_string());
    std::fs::write(&path, raw).expect("writing the file to push");
    let pusher = Arc::new(Pusher {
        cluster: config.cluster.clone(),
        staging: backends.staging,
        catalog: backends.catalog,
        pinned_system_identifier: config.system_identifier,
        host: "harness".into(),
        deadline: Duration::from_secs(30),
        limits: RequestLimits::from_config(config),
        spool: Spool::new(dir.path().join("spool")),
        concurrency: 1,
    });
    pusher.push_one(&path).await.expect("push");
}

/// The replicator the compress function builds for `config`, signed as
/// the compress function.
pub async fn replicator(config: &Config) -> Replicator {
    let replicator = Replicator::new(
        config.cluster.clone(),
        config.staging.bucket.clone(),
        backends_as(Role::Compress, config).await,
        config.zstd_level,
        RequestLimits::from_config(config),
    )
    .expect("a replica on every provider");
    // As the function starts: the cluster's encryption state checked, and
    // its tag key when sealing.
    let sealing = check_at_start(
        replicator.backends.catalog.as_ref(),
        &config.cluster,
        &config.encryption,
        &RequestLimits::from_config(config).one_request(),
        shared::clock::now_millis(),
    )
    .await
    .expect("the cluster's encryption state");
    replicator.sealing_to(sealing)
}

/// Pushes `raw` as `name` and replicates it; returns its catalog record.
pub async fn archive_replicated(config: &Config, name: &WalFileName, raw: &[u8]) -> CatalogRecord {
    stage(config, name, raw).await;
    let object = shared::events::ObjectRef {
        bucket: STAGING_BUCKET.into(),
        key: staging_key(&config.cluster, name),
    };
    let budget = RequestLimits::from_config(config).one_request();
    let outcome = replicator(config)
        .await
        .process(&object, &budget)
        .await
        .expect("replication");
    assert_eq!(outcome, Outcome::Replicated);
    backends(config)
        .await
        .catalog
        .get(&config.cluster, &name.into())
        .await
        .expect("catalog")
        .expect("a record")
}

/// Makes `name`'s catalog record say it reached staging at `staged_at`:
/// how a test on the stand-ins lets time pass for the retention sweep (the
/// stores stamp objects with the real clock).
pub async fn backdate(config: &Config, name: &WalFileName, staged_at: shared::clock::UnixMillis) {
    use aws_sdk_dynamodb::types::AttributeValue;
    use shared::catalog::attr;
    let sdk = crate::standins::aws_sdk_config().await;
    crate::standins::dynamodb_client(&sdk, &Stack::shared().moto.dynamodb.endpoint())
        .update_item()
        .table_name(&config.catalog.table)
        .key(attr::CLUSTER, AttributeValue::S(config.cluster.to_string()))
        .key(attr::FILE_NAME, AttributeValue::S(name.to_string()))
        .update_expression("SET #staged = :at")
        .expression_attribute_names("#staged", attr::STAGED_AT)
        .expression_attribute_values(":at", AttributeValue::N(staged_at.to_string()))
        .send()
        .await
        .expect("backdating a catalog record");
}
