//! How the retention sweep's cost grows with the number of records: the
//! planner alone on 100,000 records, and whole sweeps (catalog query, plan,
//! R2 and B2 deletes, catalog deletes) against the stand-ins at growing
//! sizes. Prints figures; asserts nothing.
//!
//! `cargo run -p walvault-tests --example retention_scale [n1 n2 …]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use shared::catalog::{Catalog, CatalogRecord, RecordStatus, TargetState};
use shared::codec::Sha256Hex;
use shared::config::Provider;
use shared::keys::archive_key;
use shared::retention::plan::{plan, Histories};
use shared::retention::sweep::Sweeper;
use shared::store::{Metadata, ObjectStore};
use shared::wal::{Segment, WalFileName};
use walvault_tests::archive::{catalog, replica};
use walvault_tests::standins::{walvault_sdk_config, Stack};
use walvault_tests::unique_cluster;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![250, 1000, 4000]
    } else {
        sizes
    };

    let records = synthetic(&"planner".parse().expect("cluster"), 100_000);
    let started = Instant::now();
    let planned = plan(
        &records,
        &Histories::new(),
        100_000 * HOUR + 31 * DAY,
        30 * DAY,
    );
    println!(
        "planner alone: 100000 records, {} to delete, {:.0} ms",
        planned.delete.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );

    println!("whole sweeps against the stand-ins (moto DynamoDB, R2, B2)");
    println!(
        "{:>10} {:>10} {:>10} {:>14}",
        "records", "expired", "seconds", "ms/expired"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in sizes {
        let (expired, elapsed) = runtime.block_on(sweep_of(n));
        println!(
            "{n:>10} {expired:>10} {:>10.1} {:>14.2}",
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1000.0 / expired as f64
        );
    }
}

/// `n` hourly segments on one timeline with a backup every day; all but the
/// last 30 days' worth are expired at the planning time used.
fn synthetic(cluster: &shared::keys::ClusterName, n: usize) -> Vec<CatalogRecord> {
    let mut records = Vec::with_capacity(n + n / 24);
    for i in 0..n as u64 {
        let segment = Segment {
            timeline: 1,
            log: (i / 256) as u32,
            seg: (i % 256) as u32,
        };
        records.push(record(cluster, WalFileName::Segment(segment), i * HOUR));
        if i % 24 == 0 {
            records.push(record(
                cluster,
                WalFileName::Backup {
                    segment,
                    offset: 0x28,
                },
                i * HOUR + 1,
            ));
        }
    }
    records
}

fn record(cluster: &shared::keys::ClusterName, file: WalFileName, at: u64) -> CatalogRecord {
    let key = archive_key(cluster, &file);
    let target = TargetState {
        key,
        size: 64,
        etag: None,
        at,
    };
    CatalogRecord {
        status: RecordStatus::Replicated,
        compressed_size: Some(64),
        r2: Some(target.clone()),
        b2: Some(target),
        ..CatalogRecord::replicating(
            cluster.clone(),
            file,
            64,
            Sha256Hex::of(file.to_string().as_bytes()),
            at,
            at,
        )
    }
}

/// Writes `n` expired records (and objects) plus a live tail, then times one sweep.
async fn sweep_of(n: usize) -> (usize, Duration) {
    let config = Stack::shared().config(&unique_cluster("scale"));
    let catalog = catalog(&config).await;
    let stores = [
        replica(&config, Provider::R2).await,
        replica(&config, Provider::B2).await,
    ];
    let total = n + 30 * 24;
    for record in synthetic(&config.cluster, total) {
        catalog.create(&record).await.expect("record");
        let body = Bytes::from(record.file.to_string().into_bytes());
        for store in &stores {
            store
                .put_if_absent(
                    &archive_key(&config.cluster, &record.file),
                    body.clone(),
                    &record.raw_sha256,
                    &Metadata::new(),
                )
                .await
                .expect("object");
        }
    }
    let sdk = walvault_sdk_config(&config).await;
    let mut sweeper = Sweeper::from_config(&sdk, &config).expect("sweeper");
    sweeper.window = Duration::from_millis(30 * DAY);
    let now = total as u64 * HOUR;
    let started = Instant::now();
    let report = sweeper
        .sweep(now, false, Instant::now() + Duration::from_secs(3600))
        .await
        .expect("sweep");
    (report.catalog_removed, started.elapsed())
}
