//! The whole pipeline on the stand-ins: PostgreSQL archives through
//! `walvault push`; the staging bucket's notifications reach SQS; the
//! compress handler consumes the queue as the Lambda event source mapping
//! would; new clusters recover through `walvault fetch` with exactly the
//! committed data — from both providers, from either alone, past a corrupt
//! copy, after a provider outage during archiving, and along a new timeline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shared::catalog::{Catalog, RecordStatus};
use shared::codec::{compress, CompressionLevel};
use shared::config::Config;
use shared::keys::archive_key;
use shared::provider::Provider;
use shared::retry::RequestLimits;
use shared::store::Metadata;
use shared::wal::WalFileName;
use tokio::time::Instant;
use walvault_tests::archive::{backends, tamper};
use walvault_tests::pipeline::{
    drain_queue, recover, recover_with, replicator, start_source, with, write_and_archive,
    DEAD_ENDPOINT,
};
use walvault_tests::postgres::Postgres;
use walvault_tests::shipper::Shipper;
use walvault_tests::standins::{Service, Stack};

async fn catalog(config: &Config) -> Arc<dyn Catalog> {
    backends(config).await.catalog
}

async fn statuses(config: &Config) -> Vec<RecordStatus> {
    catalog(config)
        .await
        .list_page(&config.cluster, "", None)
        .await
        .expect("catalog")
        .records
        .iter()
        .map(|r| r.status)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_both_from_either_and_past_a_corrupt_copy() {
    let source = start_source("pipeline", &[]);
    let expected = write_and_archive(&source.pg, 1, 6000);
    drain_queue(&replicator(&source.config).await, &source.config, false).await;
    let records = statuses(&source.config).await;
    assert!(
        records.len() >= 5 && records.iter().all(|s| *s == RecordStatus::Replicated),
        "{records:?}"
    );

    let (both, _) = recover(source.backup.clone(), with(&source.env, &[])).await;
    assert_eq!(both, expected);
    let (r2_only, _) = recover(
        source.backup.clone(),
        with(&source.env, &[("WALVAULT_B2_ENDPOINT", DEAD_ENDPOINT)]),
    )
    .await;
    assert_eq!(r2_only, expected, "R2 alone");
    let (b2_only, _) = recover(
        source.backup.clone(),
        with(&source.env, &[("WALVAULT_R2_ENDPOINT", DEAD_ENDPOINT)]),
    )
    .await;
    assert_eq!(b2_only, expected, "B2 alone");

    // Corrupt R2's copy of the first segment after the backup: same key,
    // valid zstd, wrong bytes.
    let page = catalog(&source.config)
        .await
        .list_page(&source.config.cluster, "", None)
        .await
        .expect("catalog");
    let victim = page
        .records
        .iter()
        .filter(|r| matches!(r.file.wal(), Some(WalFileName::Segment(_))))
        .nth(1)
        .expect("a segment");
    let r2 = tamper(Provider::R2).await;
    let key = archive_key(&source.config.cluster, victim.file);
    r2.delete(&key).await.expect("delete");
    let forged = Bytes::from(
        compress(
            &vec![7u8; victim.raw_size as usize],
            CompressionLevel::default(),
        )
        .expect("compress"),
    );
    r2.put_if_absent(
        &key,
        forged,
        &victim.raw_sha256,
        &Metadata::from([("raw-size".to_owned(), victim.raw_size.to_string())]),
    )
    .await
    .expect("forge");
    let (past_corruption, log) = recover(source.backup.clone(), with(&source.env, &[])).await;
    assert_eq!(past_corruption, expected, "served from B2");
    assert!(
        log.contains("CORRUPT") && log.contains(&victim.file.to_string()),
        "the corruption is reported:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b2_outage_during_archiving_heals_and_b2_alone_recovers() {
    let stack = Stack::shared();
    let b2 = stack.private_proxy(Service::B2);
    let source = start_source(
        "b2-outage",
        &[
            ("WALVAULT_B2_ENDPOINT", b2.endpoint()),
            ("WALVAULT_REQUEST_TIMEOUT_SECS", "2".into()),
            ("WALVAULT_MAX_ATTEMPTS", "1".into()),
        ],
    );
    b2.faults().go_down();
    let expected = write_and_archive(&source.pg, 1, 6000);
    let replicator = replicator(&source.config).await;
    let failed = drain_queue(&replicator, &source.config, true).await;
    assert!(failed > 0, "B2 writes failed while it was down");
    let during = catalog(&source.config)
        .await
        .list_page(&source.config.cluster, "", None)
        .await
        .expect("catalog")
        .records;
    assert!(
        during.iter().all(|r| r.target(Provider::R2).is_some()
            && r.target(Provider::B2).is_none()
            && r.status == RecordStatus::Partial),
        "R2 current, B2 missing"
    );

    b2.faults().come_back();
    let report = replicator
        .redrive(
            Duration::ZERO,
            &RequestLimits::from_config(&source.config)
                .until(Instant::now() + Duration::from_secs(120)),
        )
        .await
        .expect("re-drive");
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(statuses(&source.config)
        .await
        .iter()
        .all(|s| *s == RecordStatus::Replicated));
    let (b2_only, _) = recover(
        source.backup.clone(),
        with(&source.env, &[("WALVAULT_R2_ENDPOINT", DEAD_ENDPOINT)]),
    )
    .await;
    assert_eq!(b2_only, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_follows_a_new_timeline() {
    let mut source = start_source("timeline", &[]);
    write_and_archive(&source.pg, 1, 3000);
    let replicator = replicator(&source.config).await;
    drain_queue(&replicator, &source.config, false).await;
    source.pg.stop();

    // Recover to the end and promote: timeline 2, archiving into the same cluster.
    let (env, backup) = (source.env.clone(), source.backup.clone());
    let promoted_state = tokio::task::spawn_blocking(move || {
        let shipper = Shipper::new(&with(&env, &[]));
        let archiving = [
            "archive_mode = on".to_owned(),
            format!(
                "archive_command = '{}'",
                shipper.command_line("push %p").replace('\'', "''")
            ),
        ];
        let promoted = Postgres::recover(&backup, &shipper.command_line("fetch %f %p"), &archiving);
        promoted.wait_promoted(Duration::from_secs(120));
        assert_eq!(
            promoted.sql("SELECT timeline_id FROM pg_control_checkpoint()"),
            "2"
        );
        let state = write_and_archive(&promoted, 3001, 5000);
        (state, promoted, shipper)
    })
    .await
    .expect("promotion");
    let (expected, promoted, shipper) = promoted_state;
    drain_queue(&replicator, &source.config, false).await;
    drop(promoted);
    drop(shipper);
    let names: Vec<WalFileName> = catalog(&source.config)
        .await
        .list_page(&source.config.cluster, "", None)
        .await
        .expect("catalog")
        .records
        .iter()
        .filter_map(|r| r.file.wal())
        .collect();
    assert!(
        names.contains(&WalFileName::History { timeline: 2 }),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| matches!(n, WalFileName::Segment(s) if s.timeline == 2)),
        "timeline 2 segments archived: {names:?}"
    );

    // A new recovery from the same backup follows the latest timeline.
    let (along_new_timeline, _) = recover(source.backup.clone(), with(&source.env, &[])).await;
    assert_eq!(along_new_timeline, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_recovery_stops_exactly_at_the_target() {
    let source = start_source("pitr", &[]);
    let before = write_and_archive(&source.pg, 1, 3000);
    // A moment after every row so far committed, and before any later one.
    let target = source.pg.sql("SELECT now()::text");
    source.pg.sql("SELECT pg_sleep(1.1)");
    let after = write_and_archive(&source.pg, 3001, 6000);
    assert_ne!(before, after);
    drain_queue(&replicator(&source.config).await, &source.config, false).await;

    let settings = vec![
        format!("recovery_target_time = '{target}'"),
        "recovery_target_action = 'promote'".to_owned(),
    ];
    let (at_target, _) =
        recover_with(source.backup.clone(), with(&source.env, &[]), settings).await;
    assert_eq!(
        at_target, before,
        "exactly what was committed before {target}, nothing after"
    );
}
