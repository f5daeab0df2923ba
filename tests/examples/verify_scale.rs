//! Benchmark 7 of `make bench`: `walvault verify`.
//!
//! 1. Scale: a HEAD of every copy of 100,000 archived files on R2 and B2
//!    (s3s-fs; 200,000 objects), the catalog's pages read from a snapshot
//!    as the retention benchmark does (moto scans the whole partition for
//!    each page, which would measure moto). At two concurrencies. The
//!    search for orphans (a listing of each bucket) is timed apart, one
//!    page: s3s-fs reads the whole directory for every page, as moto does
//!    the partition, which R2 and B2 do not.
//! 2. Deep, side by side with `pgbackrest verify`: the same real WAL
//!    segments (from pgbench) archived by walvault (push, then the compress
//!    function's code, into s3s-fs and moto's DynamoDB) and by pgBackRest
//!    (archive-push into a local repository, zstd level 3 as walvault);
//!    then every copy downloaded or read, decompressed and checked by each.
//!    pgBackRest reads a local disk and walvault two S3 servers over HTTP:
//!    the comparison favours pgBackRest.
//!
//! Prints figures; asserts only that each run found everything good.
//!
//! `cargo run --release -p walvault-tests --example verify_scale [files] [segments]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use shared::catalog::{CatalogRecord, RecordStatus, TargetState};
use shared::clock::now_millis;
use shared::codec::Sha256Hex;
use shared::config::Config;
use shared::keys::{archive_key, meta};
use shared::provider::Provider;
use shared::retry::RequestLimits;
use shared::store::Metadata;
use shared::verify::{Progress, Range, Verifier, VerifyOptions, VerifyReport};
use shared::wal::{Segment, WalFileName};
use walvault_tests::archive::{archive_replicated, backends};
use walvault_tests::pgbackrest::{PgBackRest, Repository};
use walvault_tests::postgres::{PgOptions, Postgres};
use walvault_tests::process::run_checked;
use walvault_tests::s3s::S3sFs;
use walvault_tests::snapshot::SnapshotPages;
use walvault_tests::standins::{config_from_env, Stack};

/// DynamoDB's page: 1 MB of items, about 500 of walvault's records.
const PAGE: usize = 500;
const MIB: f64 = 1024.0 * 1024.0;

struct Silent;

impl Progress for Silent {
    fn update(&self, _: u64, _: u64, _: u64, _: u64) {}
}

fn main() {
    let mut args = std::env::args().skip(1);
    let files: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let segments: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let runtime = walvault_tests::example_runtime();
    let stack = Stack::shared();
    let s3 = S3sFs::start();
    runtime.block_on(async {
        s3.create_walvault_buckets().await;
        let mut env = stack.env("bench-verify");
        s3.redirect(&mut env);
        scale(&config_from_env(&env), files).await;
    });
    let mut env = stack.env("bench-verify-deep");
    s3.redirect(&mut env);
    deep_against_pgbackrest(&runtime, &config_from_env(&env), segments);
}

/// Part 1: HEAD of every copy of `files` archived files.
async fn scale(config: &Config, files: usize) {
    let started = Instant::now();
    let records = seed(config, files).await;
    eprintln!(
        "(seeded {} objects in {:.0} s)",
        files * Provider::ALL.len(),
        started.elapsed().as_secs_f64()
    );
    let backends = backends(config).await;
    let verifier = Verifier {
        cluster: config.cluster.clone(),
        catalog: Arc::new(SnapshotPages::new(
            config.cluster.clone(),
            records,
            PAGE,
            backends.catalog.clone(),
        )),
        replicas: backends.replicas.clone(),
        limits: RequestLimits::from_config(config),
        identities: Default::default(),
    };
    println!(
        "7. walvault verify: a HEAD of every copy of {files} files on R2 and B2 (s3s-fs), catalog pages from a snapshot"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "concurrency (files at once)", "seconds", "files/s", "HEADs/s"
    );
    // Timeline 1 is every file: the same checks, without the orphan search.
    let every_file = Range {
        timeline: Some(1),
        since: None,
    };
    for concurrency in [32, 128] {
        let (report, took) = run(&verifier, every_file, false, concurrency).await;
        assert!(report.all_good(), "{report:#?}");
        let seconds = took.as_secs_f64();
        println!(
            "{:<34} {:>10.1} {:>10.0} {:>12.0}",
            concurrency,
            seconds,
            files as f64 / seconds,
            (files * Provider::ALL.len()) as f64 / seconds
        );
    }
    let r2 = backends.replicas.get(Provider::R2).expect("R2");
    let started = Instant::now();
    let page = r2
        .list_page(&format!("{}/", config.cluster), None)
        .await
        .expect("listing");
    let one_page = started.elapsed().as_secs_f64();
    let pages = (files * Provider::ALL.len()).div_ceil(page.objects.len().max(1));
    println!(
        "orphan search: one listing page of {} keys {:.2} s on s3s-fs; {} pages on R2 and B2",
        page.objects.len(),
        one_page,
        pages
    );
}

async fn run(
    verifier: &Verifier,
    range: Range,
    deep: bool,
    concurrency: usize,
) -> (VerifyReport, Duration) {
    let options = VerifyOptions {
        range,
        deep,
        repair: false,
        concurrency,
        deadline: None,
    };
    let started = Instant::now();
    let report = verifier
        .verify(options, now_millis(), &Silent)
        .await
        .expect("verify");
    (report, started.elapsed())
}

/// `files` replicated segment records, each with a small object on R2 and
/// B2 whose size and ETag the record holds (a HEAD reads no body).
async fn seed(config: &Config, files: usize) -> Vec<CatalogRecord> {
    let backends = backends(config).await;
    let cluster = &config.cluster;
    let puts = (0..files as u64).map(|i| {
        let backends = &backends;
        async move {
            let name = WalFileName::Segment(Segment {
                timeline: 1,
                log: (i / 256) as u32,
                seg: (i % 256) as u32,
            });
            let sha = Sha256Hex::of(name.to_string().as_bytes());
            let key = archive_key(cluster, name);
            let body = Bytes::from(format!("{name} compressed"));
            let metadata = Metadata::from([(meta::RAW_SIZE.to_owned(), (16u64 << 20).to_string())]);
            let mut record = CatalogRecord::replicating(
                cluster.clone(),
                name.into(),
                16 << 20,
                sha.clone(),
                i,
                i,
            );
            for replica in backends.replicas.iter() {
                let put = replica
                    .store
                    .put_if_absent(&key, body.clone(), &sha, &metadata)
                    .await
                    .expect("seeding an object");
                let target = TargetState {
                    key: key.clone(),
                    size: body.len() as u64,
                    etag: put.etag().map(str::to_owned),
                    at: i,
                    stored_sha256: None,
                };
                record.targets.insert(replica.provider, target);
            }
            record.status = RecordStatus::Replicated;
            record.compressed_size = Some(body.len() as u64);
            record
        }
    });
    stream::iter(puts).buffer_unordered(64).collect().await
}

/// Part 2: the same real segments verified by walvault (`--deep`) and by
/// `pgbackrest verify`.
fn deep_against_pgbackrest(runtime: &tokio::runtime::Runtime, config: &Config, segments: usize) {
    let mut pg = Postgres::start(PgOptions {
        extra_conf: vec![
            "max_wal_size = 4GB".into(),
            "checkpoint_timeout = 1h".into(),
        ],
        ..PgOptions::default()
    });
    pg.pgbench(10, 0);
    let archived = |pg: &Postgres| -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(pg.archive_dir())
            .expect("archive dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.file_name().is_some_and(|n| n.len() == 24))
            .collect();
        files.sort();
        files
    };
    while archived(&pg).len() < segments {
        pg.pgbench_for(2, Duration::from_secs(5));
        pg.switch_wal();
    }
    let files: Vec<_> = archived(&pg).into_iter().take(segments).collect();
    let raw_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("segment").len())
        .sum();

    let pgbackrest = PgBackRest::new(false, Repository::Local);
    pgbackrest.stanza_create(&pg);
    for file in &files {
        run_checked(&mut pgbackrest.command(&["archive-push", &file.display().to_string()]));
    }
    pg.stop();
    runtime.block_on(async {
        for file in &files {
            let name: WalFileName = file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .expect("a segment name");
            let raw = std::fs::read(file).expect("reading a segment");
            archive_replicated(config, &name, &raw).await;
        }
    });

    println!(
        "\n7b. every copy downloaded, decompressed and checked: {} real segments ({:.0} MiB raw)",
        files.len(),
        raw_bytes as f64 / MIB
    );
    println!("{:<52} {:>10} {:>14}", "tool", "seconds", "raw MiB/s");
    let started = Instant::now();
    run_checked(&mut pgbackrest.command(&["verify"]));
    let baseline = started.elapsed();
    let backends = runtime.block_on(backends(config));
    let verifier = Verifier {
        cluster: config.cluster.clone(),
        catalog: backends.catalog.clone(),
        replicas: backends.replicas.clone(),
        limits: RequestLimits::from_config(config),
        identities: Default::default(),
    };
    let (report, took) = runtime.block_on(run(&verifier, Range::default(), true, 32));
    assert!(report.all_good(), "{report:#?}");
    let rate = |d: Duration| raw_bytes as f64 / MIB / d.as_secs_f64();
    println!(
        "{:<52} {:>10.2} {:>14.0}",
        "pgbackrest verify (one copy, local repository)",
        baseline.as_secs_f64(),
        rate(baseline)
    );
    println!(
        "{:<52} {:>10.2} {:>14.0}",
        "walvault verify --deep (R2 and B2: two copies, HTTP)",
        took.as_secs_f64(),
        rate(took)
    );
    println!(
        "walvault / pgBackRest: {:.2}× the time, for twice the copies",
        took.as_secs_f64() / baseline.as_secs_f64()
    );
}
