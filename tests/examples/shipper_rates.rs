//! Measures the shipper on the stand-ins: how fast PostgreSQL's archiver
//! drains a backlog through `walvault push` (sync vs parallel, with `cp` as
//! the floor), and how fast `walvault fetch` serves sequential requests
//! (without vs with prefetch). Prints figures side by side; asserts nothing.
//!
//! `cargo run -p walvault-tests --example shipper_rates [segments]`

use std::time::{Duration, Instant};

use walvault_tests::archive::archive_replicated;
use walvault_tests::postgres::{PgOptions, Postgres};
use walvault_tests::shipper::{public_tempdir, Shipper};
use walvault_tests::standins::Stack;
use walvault_tests::unique_cluster;

fn main() {
    let segments: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let stack = Stack::shared();
    println!("backlog drain, {segments} segments of 16 MiB (PostgreSQL 15 archiver, moto staging)");
    println!(
        "{:<28} {:>10} {:>12}",
        "archive_command", "s/segment", "segments/s"
    );
    let floor = drain(segments, |pg| {
        format!("cp %p {}/%f", pg.archive_dir().display())
    });
    print_rate("cp (floor)", floor, segments);
    for concurrency in [1, 4, 8] {
        let mut env = stack.env(&unique_cluster("bench-drain"));
        env.insert("WALVAULT_PUSH_CONCURRENCY".into(), concurrency.to_string());
        let shipper = Shipper::new(&env);
        let elapsed = drain(segments, |_| shipper.command_line("push %p"));
        print_rate(
            &format!("walvault push, {concurrency} at once"),
            elapsed,
            segments,
        );
    }

    println!();
    println!("restore, {segments} sequential requests of 16 MiB segments (moto R2/B2, catalog)");
    println!(
        "{:<28} {:>10} {:>12}",
        "restore_command", "s/segment", "segments/s"
    );
    let cluster = unique_cluster("bench-fetch");
    let config = stack.config(&cluster);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let names: Vec<String> = (1..=segments)
        .map(|i| format!("0000000100000000{:08X}", i))
        .collect();
    for name in &names {
        let raw = wal_like(name);
        runtime.block_on(archive_replicated(
            &config,
            &name.parse().expect("name"),
            &raw,
        ));
    }
    for prefetch in [0, 8] {
        let mut env = stack.env(&cluster);
        env.insert("WALVAULT_PREFETCH".into(), prefetch.to_string());
        let shipper = Shipper::new(&env);
        let dir = public_tempdir("walvault-bench-");
        let dest = dir.path().join("RECOVERYXLOG");
        let started = Instant::now();
        for name in &names {
            let run = shipper.run(&["fetch", name, dest.to_str().expect("utf-8 path")]);
            assert_eq!(run.code, 0, "{}", run.stderr);
        }
        print_rate(
            &format!("walvault fetch, prefetch {prefetch}"),
            started.elapsed(),
            segments,
        );
    }
}

/// Builds a backlog of `segments` ready files with archiving off, then
/// turns `command` on and times the archiver until it has caught up.
fn drain(segments: usize, command: impl FnOnce(&Postgres) -> String) -> Duration {
    let pg = Postgres::start(PgOptions {
        archive_command: Some(String::new()),
        ..PgOptions::default()
    });
    pg.sql("CREATE TABLE filler (x int)");
    let mut last = String::new();
    for _ in 0..segments {
        pg.sql("INSERT INTO filler SELECT generate_series(1, 1000)");
        last = pg.switch_wal();
    }
    let command = command(&pg);
    pg.sql(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        command.replace('\'', "''")
    ));
    let started = Instant::now();
    pg.sql("SELECT pg_reload_conf()");
    pg.wait_archived(&last, Duration::from_secs(1800));
    started.elapsed()
}

/// 16 MiB that compress about as OLTP WAL does: records between zeroes.
fn wal_like(seed: &str) -> Vec<u8> {
    let mut state: u32 = seed.bytes().fold(2_166_136_261, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    }) | 1;
    let mut out = vec![0u8; 16 << 20];
    for chunk in out.chunks_mut(256) {
        for byte in chunk.iter_mut().take(96) {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *byte = state as u8;
        }
    }
    out
}

fn print_rate(label: &str, elapsed: Duration, segments: usize) {
    let secs = elapsed.as_secs_f64();
    println!(
        "{label:<28} {:>10.3} {:>12.1}",
        secs / segments as f64,
        segments as f64 / secs
    );
}
