//! Base backups, restores and drills end to end, with the real `walvault`
//! binary, PostgreSQL 15 and its own tools: `walvault backup` streams
//! `pg_basebackup` into staging, the compress handler replicates the parts
//! as the event source mapping would, `walvault restore` rebuilds a data
//! directory that recovers to a time with exactly the rows committed before
//! it — from both providers, from either alone, past a corrupt chunk — and
//! `walvault drill` proves the archive unattended, or says why not.

use std::time::Duration;

use bytes::Bytes;
use shared::backup::name::BackupFile;
use shared::catalog::{list_prefix, RecordRef};
use shared::clock::now_millis;
use shared::codec::{compress, CompressionLevel};
use shared::config::Config;
use shared::file::ArchivedFile;
use shared::keys::{archive_key, staging_prefix};
use shared::provider::Provider;
use shared::retention::sweep::Sweeper;
use shared::store::{list_all, Metadata};
use walvault::exit::{BACKUP_REFUSED, DRILL_FAILED, RESTORE_REFUSED};
use walvault_tests::archive::{backends, backends_as, tamper};
use walvault_tests::backups::{
    backup_settings, dbname, now_rfc3339, recover_restored, recovering_host, restore, take_backup,
    take_backup_from,
};
use walvault_tests::pipeline::{
    drain_queue, replicator, start_source, write_and_archive, DEAD_ENDPOINT,
};
use walvault_tests::postgres::hand_to_postgres_user;
use walvault_tests::profile::iam::Role;
use walvault_tests::shipper::{public_tempdir, Shipper};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_to_a_time_from_either_provider_and_past_a_corrupt_chunk() {
    let source = start_source("backup", &backup_settings(1));
    source.pg.pgbench(2, 0);
    write_and_archive(&source.pg, 1, 1000);
    let id = take_backup(&source);
    let at_target = write_and_archive(&source.pg, 1001, 3000);
    std::thread::sleep(Duration::from_millis(1100));
    let target = now_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    let latest = write_and_archive(&source.pg, 3001, 6000);
    drain_queue(&replicator(&source.config).await, &source.config, false).await;

    let parts = list_prefix(
        backends(&source.config).await.catalog.as_ref(),
        &source.config.cluster,
        &BackupFile::prefix_of(id),
    )
    .await
    .expect("catalog");
    assert!(
        parts.len() > 20,
        "a pgbench database in 1 MiB chunks: {}",
        parts.len()
    );

    let host = recovering_host(&source, &[]);
    let (run, data) = restore(&host, &["--time", &target]);
    assert_eq!(run.code, 0, "restore:\n{}", run.stderr);
    assert!(run.stderr.contains(&id.to_string()), "{}", run.stderr);
    assert!(run.stderr.contains("pg_verifybackup"), "{}", run.stderr);
    assert_eq!(
        recover_restored(data),
        at_target,
        "rows committed before the target"
    );

    let (run, data) = restore(&host, &[]);
    assert_eq!(run.code, 0, "restore --latest:\n{}", run.stderr);
    assert_eq!(recover_restored(data), latest, "the end of the archive");

    for (first, dead) in [
        (Provider::R2, "WALVAULT_B2_ENDPOINT"),
        (Provider::B2, "WALVAULT_R2_ENDPOINT"),
    ] {
        let alone = recovering_host(&source, &[(dead, DEAD_ENDPOINT)]);
        let (run, data) = restore(&alone, &["--time", &target, "--from", first.as_str()]);
        assert_eq!(run.code, 0, "restore from {first} alone:\n{}", run.stderr);
        assert_eq!(recover_restored(data), at_target, "{first} alone");
    }

    // R2's copy of chunk 3 replaced by a valid zstd frame of other bytes.
    let chunk = ArchivedFile::Backup(BackupFile::chunk(id, 3));
    let record = parts
        .iter()
        .find(|r| r.file == chunk)
        .expect("chunk 3's record");
    let key = archive_key(&source.config.cluster, chunk);
    let r2 = tamper(Provider::R2).await;
    r2.delete(&key).await.expect("delete");
    let forged = compress(
        &vec![1u8; record.raw_size as usize],
        CompressionLevel::default(),
    )
    .expect("compress");
    r2.put_if_absent(
        &key,
        Bytes::from(forged),
        &record.raw_sha256,
        &Metadata::from([("raw-size".to_owned(), record.raw_size.to_string())]),
    )
    .await
    .expect("forge");
    let (run, data) = restore(&host, &["--time", &target, "--from", "r2"]);
    assert_eq!(run.code, 0, "restore past a corrupt chunk:\n{}", run.stderr);
    assert!(
        run.stderr.contains("CORRUPT") && run.stderr.contains("second provider"),
        "the corrupt copy is reported:\n{}",
        run.stderr
    );
    assert_eq!(recover_restored(data), at_target, "served from B2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_before_downloading_and_the_drill_passes_then_fails_on_a_broken_archive() {
    let source = start_source("drill", &backup_settings(1));
    write_and_archive(&source.pg, 1, 500);
    let host = recovering_host(&source, &[]);

    // Tablespaces outside the data directory: refused, named.
    let location = source.pg.scratch("tablespace");
    source.pg.sql(&format!(
        "CREATE TABLESPACE extra LOCATION '{}'",
        location.display()
    ));
    let run = Shipper::new(&source.env).run(&["backup", "--dbname", &dbname(&source.pg)]);
    assert_eq!(run.code, i32::from(BACKUP_REFUSED), "{}", run.stderr);
    assert!(
        run.stderr.contains("extra at "),
        "the tablespace is named: {}",
        run.stderr
    );
    source.pg.sql("DROP TABLESPACE extra");

    // No backup yet: refused, with the way out.
    let (run, data) = restore(&host, &[]);
    assert_eq!(run.code, i32::from(RESTORE_REFUSED), "{}", run.stderr);
    assert!(run.stderr.contains("walvault backup"), "{}", run.stderr);
    assert!(!data.data_dir().exists(), "nothing written");

    let before_backup = now_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    take_backup(&source);
    write_and_archive(&source.pg, 501, 2000);
    drain_queue(&replicator(&source.config).await, &source.config, false).await;

    let (run, _data) = restore(&host, &["--time", &before_backup]);
    assert_eq!(run.code, i32::from(RESTORE_REFUSED), "{}", run.stderr);
    assert!(run.stderr.contains("no backup can reach"), "{}", run.stderr);

    let occupied = public_tempdir("walvault-occupied-");
    std::fs::write(occupied.path().join("PG_VERSION"), "15").expect("write");
    let run = host.run(&["restore", "--to", occupied.path().to_str().expect("path")]);
    assert_eq!(run.code, i32::from(RESTORE_REFUSED), "{}", run.stderr);
    assert!(run.stderr.contains("not empty"), "{}", run.stderr);

    let checks = host.spool_dir().join("checks.sql");
    std::fs::write(
        &checks,
        "-- the drill's own checks\nSELECT count(*) = 2000 FROM proof\nSELECT NOT pg_is_in_recovery()\n",
    )
    .expect("checks");
    hand_to_postgres_user(&checks);
    let checks = checks.display().to_string();
    let (run, report) = host.run_as_postgres(&["drill", "--json", "--checks", &checks]);
    assert_eq!(run.code, 0, "drill:\n{}\n{report}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["passed"], true, "{report}");
    assert!(report["recovered_to"].is_string(), "{report}");
    assert!(
        report["wal_segments_replayed"].as_u64() > Some(0),
        "{report}"
    );
    assert!(
        report["stages"]["total_seconds"].as_f64() > Some(0.0),
        "{report}"
    );
    assert!(report["scratch"].is_null(), "cleaned up: {report}");
    let reports = list_all(
        backends(&source.config).await.staging.as_ref(),
        &format!("{}/drills/", source.config.cluster),
    )
    .await
    .expect("list");
    assert_eq!(reports.len(), 1, "the report is stored for walvault status");

    // A segment after the backup lost from the catalog and both providers.
    let catalog = backends(&source.config).await.catalog;
    let wal = list_prefix(catalog.as_ref(), &source.config.cluster, "00000001")
        .await
        .expect("catalog");
    let lost = wal
        .iter()
        .rfind(|r| {
            r.file
                .wal()
                .is_some_and(|w| w.kind() == shared::wal::WalFileKind::Segment)
        })
        .expect("a segment");
    for provider in Provider::ALL {
        tamper(provider)
            .await
            .delete(&archive_key(&source.config.cluster, lost.file))
            .await
            .expect("delete");
    }
    catalog
        .delete(RecordRef::of(lost))
        .await
        .expect("delete record");
    // A newer segment, so that the lost one is a gap and not the end.
    write_and_archive(&source.pg, 2001, 2100);
    drain_queue(&replicator(&source.config).await, &source.config, false).await;
    let (run, report) = host.run_as_postgres(&["drill", "--json"]);
    assert_eq!(
        run.code,
        i32::from(DRILL_FAILED),
        "{}\n{report}",
        run.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    let failure = report["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("continuity") && failure.contains(&lost.file.to_string()),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backup_never_looks_complete_and_the_sweep_removes_it() {
    let source = start_source("abandoned", &backup_settings(1));
    source.pg.pgbench(5, 0);
    write_and_archive(&source.pg, 1, 100);
    let shipper = Shipper::new(&source.env);
    let mut backup = shipper
        .command(&["backup", "--dbname", &dbname(&source.pg)])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("walvault backup");
    let staging = backends(&source.config).await.staging;
    let prefix = format!("{}backup/", staging_prefix(&source.config.cluster));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while list_all(staging.as_ref(), &prefix)
        .await
        .expect("list")
        .len()
        < 3
    {
        assert!(std::time::Instant::now() < deadline, "no chunk was staged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    backup.kill().expect("kill");
    backup.wait().expect("wait");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let staged = list_all(staging.as_ref(), &prefix).await.expect("list");
    assert!(
        staged.iter().all(|o| !o.key.ends_with("backup.json")),
        "no descriptor: {staged:?}"
    );

    let host = recovering_host(&source, &[]);
    let (run, _data) = restore(&host, &["--dry-run"]);
    assert_eq!(run.code, i32::from(RESTORE_REFUSED), "{}", run.stderr);
    assert!(
        run.stderr.contains("no complete base backup"),
        "{}",
        run.stderr
    );

    let config: Config = source.config.clone();
    let retention = backends_as(Role::Retention, &config).await;
    let sweeper = Sweeper::from_config(&config, &retention);
    let soon = sweeper
        .sweep(
            now_millis(),
            false,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await
        .expect("sweep");
    assert_eq!(soon.abandoned_backups, 0, "still young: it may be running");
    let later = sweeper
        .sweep(
            now_millis() + 3 * 86_400_000,
            false,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await
        .expect("sweep");
    assert_eq!(later.abandoned_backups, 1, "{later:?}");
    assert_eq!(later.staging_removed, staged.len(), "{later:?}");
    assert!(list_all(staging.as_ref(), &prefix)
        .await
        .expect("list")
        .is_empty());
    // The killed backup's events find nothing left to replicate.
    drain_queue(&replicator(&source.config).await, &source.config, false).await;
    let parts = list_prefix(
        backends(&config).await.catalog.as_ref(),
        &config.cluster,
        &BackupFile::all_prefix(),
    )
    .await
    .expect("catalog");
    assert!(parts.is_empty(), "{parts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_a_standby_anchors_retention_and_restores() {
    let source = start_source("standby", &backup_settings(1));
    write_and_archive(&source.pg, 1, 500);
    let standby = source.pg.start_standby();
    // From a standby, the segment holding the backup's stop point is
    // archived once the primary switches: as archive_timeout would.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let switching = {
        let done = std::sync::Arc::clone(&done);
        let socket = source.pg.socket_dir();
        let port = source.pg.port();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1500));
                let _ = std::process::Command::new(format!(
                    "{}/psql",
                    walvault_tests::postgres::PG_BIN
                ))
                .args(["-X", "-q", "-U", "postgres", "-h"])
                .arg(&socket)
                .args(["-p", &port.to_string(), "-c", "SELECT pg_switch_wal()"])
                .output();
            }
        })
    };
    let id = take_backup_from(&source, &standby);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    switching.join().expect("the switching thread");
    let expected = write_and_archive(&source.pg, 501, 1500);
    drain_queue(&replicator(&source.config).await, &source.config, false).await;

    let catalog = backends(&source.config).await.catalog;
    let summary = list_prefix(
        catalog.as_ref(),
        &source.config.cluster,
        &BackupFile::prefix_of(id),
    )
    .await
    .expect("catalog")
    .into_iter()
    .find_map(|r| r.backup)
    .expect("the descriptor's summary");
    assert!(summary.from_standby, "{summary:?}");
    let start = summary.start_segment().expect("start segment");

    // A month later, every file is older than the window: the sweep keeps
    // what a recovery from the standby's backup needs, anchored on it (the
    // primary's only .backup file, from the harness's first backup, is
    // older), and deletes what came before its start.
    let retention = backends_as(Role::Retention, &source.config).await;
    let report = Sweeper::from_config(&source.config, &retention)
        .sweep(
            now_millis() + 31 * 86_400_000,
            false,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await
        .expect("sweep");
    assert_eq!(
        report.anchors.get(&1),
        Some(&format!("backup {id}")),
        "{report:?}"
    );
    assert!(report.catalog_removed > 0, "{report:?}");
    assert_eq!(report.backups_kept, 1, "{report:?}");
    let left = list_prefix(catalog.as_ref(), &source.config.cluster, "00000001")
        .await
        .expect("catalog");
    for record in &left {
        if let Some(shared::wal::WalFileName::Segment(segment)) = record.file.wal() {
            assert!(
                segment >= start,
                "{} is before the anchor's start {start} and kept",
                record.file
            );
        }
    }
    assert!(
        left.iter()
            .any(|r| r.file.wal() == Some(shared::wal::WalFileName::Segment(start))),
        "the anchor's first segment is kept"
    );

    // And the archive still restores, from that backup.
    let host = recovering_host(&source, &[]);
    let (run, data) = restore(&host, &[]);
    assert_eq!(run.code, 0, "restore:\n{}", run.stderr);
    assert!(run.stderr.contains(&id.to_string()), "{}", run.stderr);
    assert_eq!(recover_restored(data), expected);
}
