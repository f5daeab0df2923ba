//! Profiles the compress function's work on real 16 MiB WAL segments from
//! PostgreSQL 15: zstd ratio and speed per level beside the `zstd` CLI at
//! the same level on the same files (OLTP from pgbench, and a bulk load),
//! then one segment through the whole replicator against the stand-ins with
//! the time of each step and this process's peak memory. Asserts nothing.
//!
//! `cargo run -p walvault-tests --example compress_profile`

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use shared::codec::{compress, decompress, CompressionLevel};
use shared::events::ObjectRef;
use shared::keys::staging_key;
use shared::wal::WalFileName;
use walvault_tests::archive::{replicator, stage};
use walvault_tests::memory::peak_kib;
use walvault_tests::postgres::{PgOptions, Postgres};
use walvault_tests::standins::{Stack, STAGING_BUCKET};
use walvault_tests::unique_cluster;

const LEVELS: [i32; 5] = [1, 3, 6, 9, 12];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, file] = args.as_slice() {
        if mode == "one" {
            return replicate_one(&PathBuf::from(file));
        }
    }
    let pg = Postgres::start(PgOptions::default());
    let oltp = workload(&pg, |pg| pg.pgbench(5, 4000));
    let bulk = workload(&pg, |pg| {
        pg.sql("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS a, now() AS t FROM generate_series(1, 600000) g");
    });
    println!("zstd on real WAL (16 MiB segments): walvault (zstd crate, this build) vs zstd CLI, same files, same level");
    println!(
        "{:<6} {:<6} {:>6} {:>12} {:>12} {:>12} {:>10}",
        "wal", "level", "files", "ratio", "ms/segment", "cli ms/seg", "cli ratio"
    );
    for (label, files) in [("oltp", &oltp), ("bulk", &bulk)] {
        for level in LEVELS {
            let (ratio, ms) = ours(files, level);
            let (cli_ratio, cli_ms) = cli(files, level);
            println!("{label:<6} {level:<6} {:>6} {ratio:>12.2} {ms:>12.1} {cli_ms:>12.1} {cli_ratio:>10.2}", files.len());
        }
    }

    // A fresh process, so that its peak memory is the replicator's alone.
    let file = oltp.last().expect("an OLTP segment");
    let status = Command::new(std::env::current_exe().expect("own path"))
        .arg("one")
        .arg(file)
        .status()
        .expect("child");
    assert!(status.success());
}

/// One real segment through the whole replicator against the stand-ins.
fn replicate_one(file: &std::path::Path) {
    let raw = std::fs::read(file).expect("segment");
    let name: WalFileName = file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .parse()
        .expect("WAL name");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = Stack::shared().config(&unique_cluster("profile"));
    runtime.block_on(async {
        let replicator = replicator(&config).await;
        stage(&config, &name, &raw).await;
        drop(raw);
        println!();
        println!(
            "one segment through the replicator (level {}), EMF line:",
            config.zstd_level.get()
        );
        let before = peak_kib();
        let budget = shared::retry::RequestLimits::from_config(&config).one_request();
        replicator
            .process(
                &ObjectRef {
                    bucket: STAGING_BUCKET.into(),
                    key: staging_key(&config.cluster, name),
                },
                &budget,
            )
            .await
            .expect("replicated");
        println!(
            "peak resident memory (VmHWM): {} MiB before the replicator ran, {} MiB after",
            before / 1024,
            peak_kib() / 1024
        );
    });
}

/// Runs `load`, switches WAL, and returns the segments it archived.
fn workload(pg: &Postgres, load: impl FnOnce(&Postgres)) -> Vec<PathBuf> {
    let before: Vec<PathBuf> = archived(pg);
    load(pg);
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(300));
    archived(pg)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect()
}

fn archived(pg: &Postgres) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(pg.archive_dir())
        .expect("archive dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            matches!(
                p.file_name().and_then(|n| n.to_str()).map(str::parse),
                Some(Ok(WalFileName::Segment(_)))
            )
        })
        .collect();
    files.sort();
    files
}

fn ours(files: &[PathBuf], level: i32) -> (f64, f64) {
    let level = CompressionLevel::new(level).expect("level");
    let (mut raw_total, mut packed_total, mut elapsed) = (0usize, 0usize, Duration::ZERO);
    for file in files {
        let raw = std::fs::read(file).expect("segment");
        let started = Instant::now();
        let packed = compress(&raw, level).expect("compress");
        elapsed += started.elapsed();
        assert_eq!(
            decompress(&packed, raw.len() as u64).expect("round trip"),
            raw
        );
        raw_total += raw.len();
        packed_total += packed.len();
    }
    (
        raw_total as f64 / packed_total as f64,
        elapsed.as_secs_f64() * 1000.0 / files.len() as f64,
    )
}

fn cli(files: &[PathBuf], level: i32) -> (f64, f64) {
    let (mut raw_total, mut packed_total, mut elapsed) = (0usize, 0usize, Duration::ZERO);
    for file in files {
        let started = Instant::now();
        let out = Command::new("zstd")
            .arg(format!("-{level}"))
            .args(["-q", "-c", "--single-thread"])
            .arg(file)
            .output()
            .expect("zstd CLI");
        elapsed += started.elapsed();
        raw_total += std::fs::metadata(file).expect("size").len() as usize;
        packed_total += out.stdout.len();
    }
    (
        raw_total as f64 / packed_total as f64,
        elapsed.as_secs_f64() * 1000.0 / files.len() as f64,
    )
}
