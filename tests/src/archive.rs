//! Puts files into the archive the way the compress function does (zstd to
//! R2 and B2, a `replicated` catalog record), for tests of restore.

use bytes::Bytes;
use shared::archive::push::META_SIZE;
use shared::archive::META_RAW_SIZE;
use shared::catalog::{
    dynamodb_client, now_millis, Catalog, CatalogRecord, DynamoCatalog, RecordStatus, TargetState,
};
use shared::codec::{compress, Sha256Hex};
use shared::config::{Config, Provider};
use shared::keys::{archive_key, staging_key};
use shared::store::{replica_store, staging_store, ConditionalPut, Metadata, ObjectStore};
use shared::wal::{WalFileName, WalHeader};

use crate::standins::walvault_sdk_config;

/// Archives `raw` under `name` on both replicas and in the catalog.
pub async fn archive_replicated(config: &Config, name: &WalFileName, raw: &[u8]) -> CatalogRecord {
    let sdk = walvault_sdk_config(config).await;
    let sha = Sha256Hex::of(raw);
    let packed = Bytes::from(compress(raw, config.zstd_level).expect("compressing"));
    let key = archive_key(&config.cluster, name);
    let metadata = Metadata::from([(META_RAW_SIZE.to_owned(), raw.len().to_string())]);
    let now = now_millis();
    let mut targets = Vec::new();
    for provider in Provider::ALL {
        let store = replica_store(
            &sdk,
            config.replica(provider).expect("replica configured"),
            ConditionalPut::IfNoneMatch,
        );
        let put = store
            .put_if_absent(&key, packed.clone(), &sha, &metadata)
            .await
            .expect("replica put");
        targets.push(TargetState {
            key: key.clone(),
            size: packed.len() as u64,
            etag: put.etag().map(str::to_owned),
            at: now,
        });
    }
    let header = WalHeader::parse_file(name, raw).ok();
    let record = CatalogRecord {
        system_identifier: header.map(|h| h.system_identifier),
        pg_version: header.map(|h| h.pg_version.0),
        compressed_size: Some(packed.len() as u64),
        compressed_sha256: Some(Sha256Hex::of(&packed)),
        status: RecordStatus::Replicated,
        b2: targets.pop(),
        r2: targets.pop(),
        replicated_at: Some(now),
        ..CatalogRecord::replicating(
            config.cluster.clone(),
            *name,
            raw.len() as u64,
            sha.clone(),
            now,
            now,
        )
    };
    catalog(config)
        .await
        .create(&record)
        .await
        .expect("catalog create");
    record
}

/// Puts `raw` into staging as the shipper does, without a catalog record.
pub async fn stage(config: &Config, name: &WalFileName, raw: &[u8]) {
    let sdk = walvault_sdk_config(config).await;
    let body = Bytes::copy_from_slice(raw);
    staging_store(&sdk, config)
        .put_if_absent(
            &staging_key(&config.cluster, name),
            body,
            &Sha256Hex::of(raw),
            &Metadata::from([(META_SIZE.to_owned(), raw.len().to_string())]),
        )
        .await
        .expect("staging put");
}

pub async fn catalog(config: &Config) -> DynamoCatalog {
    let sdk = walvault_sdk_config(config).await;
    DynamoCatalog::new(dynamodb_client(&sdk, config), &config.catalog.table)
}

/// A replica store for `provider` as walvault would build it.
pub async fn replica(config: &Config, provider: Provider) -> impl ObjectStore {
    let sdk = walvault_sdk_config(config).await;
    replica_store(
        &sdk,
        config.replica(provider).expect("replica configured"),
        ConditionalPut::IfNoneMatch,
    )
}

/// The staging store as walvault would build it.
pub async fn staging(config: &Config) -> impl ObjectStore {
    let sdk = walvault_sdk_config(config).await;
    staging_store(&sdk, config)
}
