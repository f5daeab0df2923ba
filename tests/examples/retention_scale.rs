//! Benchmark 4 of `make bench`: one retention sweep over a catalog of
//! 100,000 records, as the daily run of a busy cluster sees it: 31 days of
//! segments (about 3,200 a day, one base backup a day), the oldest day
//! expired. R2 and B2 are s3s-fs, the catalog is moto's DynamoDB. Side by
//! side on the same records: the planner alone, one page of the catalog
//! (the sweep reads them all), and the whole sweep (read, verify, plan, R2
//! and B2 batch deletes, conditional catalog deletes). Prints figures;
//! asserts only that the sweep deleted what it planned.
//!
//! `cargo run --release -p walvault-tests --example retention_scale [records]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use bytes::Bytes;
use shared::catalog::{CatalogRecord, RecordStatus, TargetState};
use shared::codec::Sha256Hex;
use shared::keys::{archive_key, ClusterName};
use shared::provider::Provider;
use shared::retention::plan::{plan, Histories, Rules, WalEntry};
use shared::retention::sweep::Sweeper;
use shared::retry::RequestLimits;
use shared::store::Metadata;
use shared::wal::{Segment, WalFileName};
use walvault_tests::archive::backends;
use walvault_tests::s3s::S3sFs;
use walvault_tests::snapshot::SnapshotPages;
use walvault_tests::standins::{aws_sdk_config, config_from_env, dynamodb_client, Stack};

const DAY: u64 = 24 * 3_600_000;
const WINDOW: u64 = 30 * DAY;
/// DynamoDB's BatchWriteItem limit.
const BATCH: usize = 25;

fn main() {
    let records: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let runtime = walvault_tests::example_runtime();
    let stack = Stack::shared();
    let s3 = S3sFs::start();
    runtime.block_on(async {
        s3.create_walvault_buckets().await;
        let mut env = stack.env("bench-retention");
        s3.redirect(&mut env);
        let config = config_from_env(&env);
        let spacing = 31 * DAY / records as u64;
        let all = synthetic(&config.cluster, records, spacing);
        let now = records as u64 * spacing;

        let started = Instant::now();
        let rules = Rules {
            window_ms: WINDOW,
            age_only_without_backups: false,
        };
        let entries: Vec<WalEntry> = all.iter().filter_map(WalEntry::of).collect();
        let planned = plan(&entries, &[], &Histories::new(), now, &rules);
        let planner = started.elapsed();
        println!(
            "4. retention sweep: {} catalog records ({} segments over 31 days, {} backups), {} expired",
            all.len(),
            records,
            all.len() - records,
            planned.delete.len()
        );

        let started = Instant::now();
        seed(&config, &all, &planned.delete).await;
        eprintln!("(seeded in {:.0} s)", started.elapsed().as_secs_f64());

        // One page only: moto answers each page by scanning the whole
        // partition, so reading all of it twice would double a cost that
        // belongs to the stand-in, not to walvault.
        let started = Instant::now();
        let backends = backends(&config).await;
        let page = backends
            .catalog
            .list_page(&config.cluster, "", None)
            .await
            .expect("reading a catalog page");
        let one_page = started.elapsed();
        let pages = all.len().div_ceil(page.records.len());

        let snapshot = all.clone();
        let sweeper = Sweeper {
            cluster: config.cluster.clone(),
            catalog: Arc::new(SnapshotPages::new(
                config.cluster.clone(),
                snapshot,
                page.records.len(),
                backends.catalog.clone(),
            )),
            staging: backends.staging.clone(),
            replicas: backends.replicas.clone(),
            rules,
            max_deletes: config.retention_max_deletes,
            limits: RequestLimits::from_config(&config),
            abandoned_after: config.incomplete_backup_age,
        };
        let started = Instant::now();
        let report = sweeper
            .sweep(now, false, tokio::time::Instant::now() + Duration::from_secs(3600))
            .await
            .expect("sweep");
        let sweep = started.elapsed();
        assert_eq!(report.catalog_removed, planned.delete.len(), "{report:?}");

        println!(
            "{:<44} {:>10.2}",
            format!("one catalog page of {} records", page.records.len()),
            one_page.as_secs_f64()
        );
        println!(
            "{:<44} {:>10.2}",
            format!("all {pages} pages (one page × {pages}, estimated)"),
            one_page.as_secs_f64() * pages as f64
        );
        println!("{:<44} {:>10} {:>14}", "step", "seconds", "ms/expired");
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / planned.delete.len() as f64;
        for (label, took) in [
            ("planner alone (in memory)", planner),
            ("whole sweep, pages from a snapshot", sweep),
        ] {
            println!("{label:<44} {:>10.2} {:>14.2}", took.as_secs_f64(), per(took));
        }
    });
}

/// Writes every record to the catalog in batches, and objects on R2 and B2
/// for the files the sweep will delete (the sweep never reads the others).
async fn seed(config: &shared::config::Config, records: &[CatalogRecord], doomed: &[WalFileName]) {
    let sdk = aws_sdk_config().await;
    let dynamodb = dynamodb_client(&sdk, &Stack::shared().moto.dynamodb.endpoint());
    for chunk in records.chunks(BATCH) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|r| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(r.to_item()))
                            .build()
                            .expect("put request"),
                    )
                    .build()
            })
            .collect();
        while !requests.is_empty() {
            let out = dynamodb
                .batch_write_item()
                .request_items(&config.catalog.table, requests)
                .send()
                .await
                .expect("batch write");
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(&config.catalog.table))
                .unwrap_or_default();
        }
    }
    let backends = backends(config).await;
    for file in doomed {
        let body = Bytes::from(file.to_string().into_bytes());
        for store in backends.replicas.iter().map(|r| &r.store) {
            store
                .put_if_absent(
                    &archive_key(&config.cluster, file),
                    body.clone(),
                    &Sha256Hex::of(file.to_string().as_bytes()),
                    &Metadata::new(),
                )
                .await
                .expect("object");
        }
    }
}

/// `n` segments on one timeline, `spacing` apart, with a base backup a day.
fn synthetic(cluster: &ClusterName, n: usize, spacing: u64) -> Vec<CatalogRecord> {
    let per_day = (DAY / spacing).max(1);
    let mut records = Vec::with_capacity(n + n / per_day as usize + 1);
    for i in 0..n as u64 {
        let segment = Segment {
            timeline: 1,
            log: (i / 256) as u32,
            seg: (i % 256) as u32,
        };
        records.push(record(cluster, WalFileName::Segment(segment), i * spacing));
        if i % per_day == 0 {
            records.push(record(
                cluster,
                WalFileName::Backup {
                    segment,
                    offset: 0x28,
                },
                i * spacing + 1,
            ));
        }
    }
    records
}

fn record(cluster: &ClusterName, file: WalFileName, at: u64) -> CatalogRecord {
    let key = archive_key(cluster, file);
    let target = TargetState {
        key,
        size: 64,
        etag: None,
        at,
        stored_sha256: None,
    };
    CatalogRecord {
        status: RecordStatus::Replicated,
        compressed_size: Some(64),
        targets: Provider::ALL.map(|p| (p, target.clone())).into(),
        ..CatalogRecord::replicating(
            cluster.clone(),
            file.into(),
            64,
            Sha256Hex::of(file.to_string().as_bytes()),
            at,
            at,
        )
    }
}
