//! `make demo`: walvault end to end on local stand-ins, with a short human
//! summary. Built from the test harness: moto servers for S3, SQS, DynamoDB,
//! R2 and B2 behind the behaviour profiles; a PostgreSQL 15 archiving
//! through `walvault push`; a base backup by `walvault backup`; the compress
//! function's handler draining the queue; a retention dry run; a
//! point-in-time recovery by `walvault restore --time`, started and checked
//! row for row; a `walvault drill`; and `walvault status`. Everything it starts is stopped and
//! removed when it exits.

use std::time::{Duration, Instant};

use shared::catalog::RecordStatus;
use shared::clock::now_millis;
use shared::keys::archive_key;
use shared::provider::Provider;
use shared::replicate::invocation::handle_invocation;
use shared::retention::sweep::Sweeper;
use shared::retry::RequestLimits;
use shared::status::keep::{rebuild, RetentionRun};
use shared::wal::WalFileKind;
use walvault_tests::archive::backends;
use walvault_tests::backups::{
    backup_settings, now_rfc3339, recover_restored, recovering_host, restore, take_backup,
};
use walvault_tests::pipeline::{drain_queue, replicator, start_source, write_and_archive};
use walvault_tests::standins::Stack;

struct Stages(Vec<(&'static str, Duration)>);

impl Stages {
    fn time<T>(&mut self, name: &'static str, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = work();
        self.0.push((name, started.elapsed()));
        out
    }
}

fn main() {
    let runtime = walvault_tests::example_runtime();
    let mut stages = Stages(Vec::new());
    println!("walvault demo: starting the stand-ins and PostgreSQL 15 …");
    stages.time("start stand-ins", Stack::shared);
    let source = stages.time("PostgreSQL", || start_source("demo", &backup_settings(4)));
    stages.time("workload, archived by walvault push", || {
        write_and_archive(&source.pg, 1, 10_000)
    });
    let backup = stages.time("walvault backup", || take_backup(&source));
    let (before, target) = stages.time("more workload, archived by walvault push", || {
        let before = write_and_archive(&source.pg, 10_001, 20_000);
        source.pg.sql("SELECT pg_sleep(1.1)");
        let target = now_rfc3339();
        source.pg.sql("SELECT pg_sleep(1.1)");
        write_and_archive(&source.pg, 20_001, 40_000);
        (before, target)
    });

    let config = source.config.clone();
    runtime.block_on(async {
        let replicator = replicator(&config).await;
        let started = Instant::now();
        drain_queue(&replicator, &config, false).await;
        stages.0.push((
            "compress: S3 → SQS → handler → R2, B2, catalog",
            started.elapsed(),
        ));
        // The compress function's schedule: the re-drive, which finds
        // nothing stuck and keeps the status summary.
        let schedule: serde_json::Value =
            serde_json::from_str(include_str!("../../events/retention-schedule.json"))
                .expect("the sample schedule event");
        let redrive = handle_invocation(
            &replicator,
            &schedule,
            config.redrive_after,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await
        .expect("re-drive");
        assert_eq!(redrive["summary"], "kept", "{redrive}");

        let backends = backends(&config).await;
        let records = backends
            .catalog
            .list_page(&config.cluster, "", None)
            .await
            .expect("catalog")
            .records;
        let (mut raw, mut packed, mut agree) = (0u64, 0u64, 0usize);
        let replica = |p| backends.replicas.get(p).expect("configured");
        let (r2, b2) = (replica(Provider::R2), replica(Provider::B2));
        for record in &records {
            raw += record.raw_size;
            packed += record.stored_size().unwrap_or(0);
            let key = archive_key(&record.cluster, record.file);
            let (a, b) = (r2.head(&key).await, b2.head(&key).await);
            if let (Ok(a), Ok(b)) = (a, b) {
                if a.sha256().as_ref() == Some(record.replica_tag())
                    && b.sha256() == a.sha256()
                    && a.size == b.size
                {
                    agree += 1;
                }
            }
        }
        let segments = records
            .iter()
            .filter(|r| {
                r.file
                    .wal()
                    .is_some_and(|w| w.kind() == WalFileKind::Segment)
            })
            .count();
        let replicated = records
            .iter()
            .filter(|r| r.status == RecordStatus::Replicated)
            .count();

        let started = Instant::now();
        let sweeper = Sweeper::from_config(&config, &backends);
        let dry = sweeper
            .sweep(
                now_millis(),
                true,
                tokio::time::Instant::now() + Duration::from_secs(60),
            )
            .await
            .expect("dry run");
        stages.0.push(("retention dry run", started.elapsed()));
        // As the retention function does after each sweep: the summary
        // `walvault status` reads.
        let run = RetentionRun::of(&dry, sweeper.rules.window_ms, now_millis());
        let budget = RequestLimits::from_config(&config)
            .until(tokio::time::Instant::now() + Duration::from_secs(60));
        rebuild(
            backends.catalog.as_ref(),
            &config.cluster,
            run,
            now_millis(),
            &budget,
        )
        .await
        .expect("status summary");

        let started = Instant::now();
        let host = recovering_host(&source, &[]);
        let (run, data) = restore(&host, &["--time", &target]);
        assert_eq!(run.code, 0, "walvault restore:\n{}", run.stderr);
        let recovered = recover_restored(data);
        stages.0.push((
            "walvault restore --time, then recovery through walvault fetch",
            started.elapsed(),
        ));

        let started = Instant::now();
        let (drill, drill_summary) = host.run_as_postgres(&["drill"]);
        stages.0.push(("walvault drill", started.elapsed()));

        println!();
        println!(
            "files archived      {} ({} segments, {} replicated on both R2 and B2)",
            records.len(),
            segments,
            replicated
        );
        println!(
            "bytes               {} MiB raw → {:.1} MiB compressed (ratio {:.1}×)",
            raw >> 20,
            packed as f64 / 1048576.0,
            raw as f64 / packed.max(1) as f64
        );
        println!(
            "replicas agree      {agree} of {} (same sha256 and size on R2 and B2)",
            records.len()
        );
        println!(
            "retention dry run   {} files planned for deletion, {} files and {} base backups kept",
            dry.planned + dry.backups_planned,
            dry.kept.values().sum::<usize>(),
            dry.backups_kept
        );
        println!("base backup         {backup} (walvault backup, replicated like WAL)");
        println!("recovery target     {target}");
        let verdict = if recovered == before {
            "VERIFIED: the recovered table equals exactly what was committed before the target"
        } else {
            "MISMATCH"
        };
        println!("recovery result     {verdict}");
        println!();
        print!("{drill_summary}");
        if drill.code != 0 {
            println!("{}", drill.stderr);
        }
        let started = Instant::now();
        let status = host
            .command(&["status"])
            .output()
            .expect("running walvault status");
        stages.0.push(("walvault status", started.elapsed()));
        println!();
        println!(
            "$ walvault status   (exit {})",
            status.status.code().unwrap_or(-1)
        );
        print!("{}", String::from_utf8_lossy(&status.stdout));
        println!();
        for (stage, took) in &stages.0 {
            println!("  {:>8.1} s  {stage}", took.as_secs_f64());
        }
        assert_eq!(recovered, before, "recovery must match");
        assert_eq!(drill.code, 0, "the drill must pass");
    });
    println!("\nstopping the stand-ins and removing PostgreSQL's directories.");
}
