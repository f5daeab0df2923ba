//! Puts files into the archive the way the compress function does (zstd to
//! R2 and B2, a `replicated` catalog record), for tests of restore.

use bytes::Bytes;
use shared::archive::push::{META_PG_VERSION, META_SIZE, META_SYSTEM_IDENTIFIER};
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
    archive_replicated_at(config, name, raw, now_millis()).await
}

/// Like [`archive_replicated`], as if staged at `staged_at` (a simulated clock).
pub async fn archive_replicated_at(
    config: &Config,
    name: &WalFileName,
    raw: &[u8],
    staged_at: u64,
) -> CatalogRecord {
    let sdk = walvault_sdk_config(config).await;
    let sha = Sha256Hex::of(raw);
    let packed = Bytes::from(compress(raw, config.zstd_level).expect("compressing"));
    let key = archive_key(&config.cluster, name);
    let metadata = Metadata::from([(META_RAW_SIZE.to_owned(), raw.len().to_string())]);
    let now = staged_at;
    let mut targets = Vec::new();
    for provider in Provider::ALL {
        let store = replica_store(
            &sdk,
            config.replica(provider).expect("replica configured"),
            ConditionalPut::IfNoneMatch,
        )
        .expect("replica credentials");
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

/// Puts `raw` into staging with the metadata `walvault push` writes,
/// without a catalog record.
pub async fn stage(config: &Config, name: &WalFileName, raw: &[u8]) {
    stage_claiming(config, name, raw, &Sha256Hex::of(raw)).await;
}

/// Like [`stage`], but with `claimed` as the shipper's recorded sha256.
pub async fn stage_claiming(config: &Config, name: &WalFileName, raw: &[u8], claimed: &Sha256Hex) {
    let sdk = walvault_sdk_config(config).await;
    let mut metadata = Metadata::from([(META_SIZE.to_owned(), raw.len().to_string())]);
    if let Ok(header) = WalHeader::parse_file(name, raw) {
        metadata.insert(
            META_SYSTEM_IDENTIFIER.to_owned(),
            header.system_identifier.to_string(),
        );
        metadata.insert(META_PG_VERSION.to_owned(), header.pg_version.0.to_string());
    }
    staging_store(&sdk, config)
        .put_if_absent(
            &staging_key(&config.cluster, name),
            Bytes::copy_from_slice(raw),
            claimed,
            &metadata,
        )
        .await
        .expect("staging put");
}

/// A valid 1 MiB PostgreSQL 15 segment for `name` (a segment or
/// `.partial`): the long page header, then record-like bytes that compress
/// roughly as real WAL does.
pub fn synthetic_segment(name: &WalFileName, system_identifier: u64) -> Vec<u8> {
    const SIZE: u64 = 1 << 20;
    let segment = name.segment().expect("a segment name");
    let size = shared::wal::SegmentSize::new(SIZE).expect("1 MiB is legal");
    let mut bytes = vec![0u8; SIZE as usize];
    bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    bytes[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    bytes[4..8].copy_from_slice(&segment.timeline.to_le_bytes());
    bytes[8..16].copy_from_slice(&segment.start_lsn(size).to_le_bytes());
    bytes[24..32].copy_from_slice(&system_identifier.to_le_bytes());
    bytes[32..36].copy_from_slice(&(SIZE as u32).to_le_bytes());
    bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
    let mut state = (system_identifier as u32) ^ segment.seg ^ 0x9E37_79B9;
    for record in bytes[64..].chunks_mut(128) {
        for byte in record.iter_mut().take(40) {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *byte = (state % 16) as u8;
        }
    }
    bytes
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
    .expect("replica credentials")
}

/// The staging store as walvault would build it.
pub async fn staging(config: &Config) -> impl ObjectStore {
    let sdk = walvault_sdk_config(config).await;
    staging_store(&sdk, config)
}
