//! The whole pipeline on the stand-ins: PostgreSQL archives through
//! `walvault push`; the staging bucket's notifications reach SQS; the
//! compress handler consumes the queue as the Lambda event source mapping
//! would; new clusters recover through `walvault fetch` with exactly the
//! committed data — from both providers, from either alone, past a corrupt
//! copy, after a provider outage during archiving, and along a new timeline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use shared::catalog::{Catalog, RecordStatus};
use shared::codec::{compress, CompressionLevel};
use shared::compress::handle_invocation;
use shared::config::{Config, Provider};
use shared::keys::{archive_key, staging_prefix};
use shared::replicate::Replicator;
use shared::store::{list_all, Metadata, ObjectStore};
use shared::wal::WalFileName;
use walvault_tests::archive::{catalog, replica, staging};
use walvault_tests::outage::OutageProxy;
use walvault_tests::postgres::{PgOptions, Postgres};
use walvault_tests::shipper::Shipper;
use walvault_tests::standins::{self, walvault_sdk_config, Stack};
use walvault_tests::unique_cluster;

const CHECKSUM: &str = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM proof";
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

/// Hands the cluster's messages from the queue to the compress handler in
/// batches, as the event source mapping does, until the cluster's staging
/// prefix is empty or, with `allow_failures` (its objects then stay), no
/// message is left. Returns how many messages the handler reported failed.
async fn drain_queue(replicator: &Replicator, config: &Config, allow_failures: bool) -> usize {
    let stack = Stack::shared();
    let sdk = standins::aws_sdk_config().await;
    let sqs = standins::sqs_client(&sdk, &stack.staging.endpoint());
    let staging_store = staging(config).await;
    let prefix = staging_prefix(&config.cluster);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut failed_total = 0;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        // Other tests' messages go straight back to the queue for them.
        let mut ours = Vec::new();
        for m in received.messages() {
            let body: Value = serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or_default();
            let key = body["Records"][0]["s3"]["object"]["key"]
                .as_str()
                .and_then(|k| shared::keys::decode_event_key(k).ok());
            if key.is_some_and(|k| k.starts_with(&prefix)) {
                ours.push(m.clone());
            } else {
                let handle = m.receipt_handle().unwrap_or_default();
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&stack.queue_url)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
        }
        if ours.is_empty() {
            if list_all(&staging_store, &prefix)
                .await
                .expect("list")
                .is_empty()
                || (allow_failures && received.messages().is_empty())
            {
                return failed_total;
            }
        } else {
            let records: Vec<Value> = ours
                .iter()
                .map(|m| json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(), "eventSource": "aws:sqs"}))
                .collect();
            let response = handle_invocation(
                replicator,
                &json!({ "Records": records }),
                Duration::from_secs(900),
                Instant::now() + Duration::from_secs(60),
            )
            .await
            .expect("handler");
            let failed = response["batchItemFailures"].as_array().map_or(0, Vec::len);
            assert!(allow_failures || failed == 0, "messages failed: {response}");
            failed_total += failed;
            // Failed ones are left to the re-drive here rather than SQS's redelivery.
            for m in &ours {
                sqs.delete_message()
                    .queue_url(&stack.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
    }
}

/// A source cluster archiving through `walvault push`, with a base backup
/// taken at the start.
struct Source {
    config: Config,
    /// Its directory holds the config file the archiver reads.
    _shipper: Shipper,
    env: BTreeMap<String, String>,
    pg: Postgres,
    backup: PathBuf,
}

fn start_source(prefix: &str, env_changes: &[(&str, String)]) -> Source {
    let stack = Stack::shared();
    let cluster = unique_cluster(prefix);
    let mut env = stack.env(&cluster);
    for (k, v) in env_changes {
        env.insert((*k).to_owned(), v.clone());
    }
    let shipper = Shipper::new(&env);
    let pg = Postgres::start(PgOptions {
        archive_command: Some(shipper.command_line("push %p")),
        ..PgOptions::default()
    });
    let backup = pg.scratch("backup").join("base");
    pg.base_backup(&backup);
    pg.sql("CREATE TABLE proof (id int PRIMARY KEY, v text)");
    let settings = env
        .iter()
        .filter(|(k, _)| k.starts_with("WALVAULT_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Source {
        config: Config::from_sources(&settings, &BTreeMap::new()).expect("settings"),
        _shipper: shipper,
        env,
        pg,
        backup,
    }
}

/// Commits rows `from..=to` over a few segments, archives everything, and
/// returns the table's checksum.
fn write_and_archive(pg: &Postgres, from: u32, to: u32) -> String {
    let step = (to - from + 1) / 3;
    let mut start = from;
    while start <= to {
        let end = (start + step).min(to);
        pg.sql(&format!(
            "INSERT INTO proof SELECT g, md5(g::text) FROM generate_series({start}, {end}) g"
        ));
        pg.switch_wal();
        start = end + 1;
    }
    let expected = pg.sql(CHECKSUM);
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(120));
    assert_eq!(
        pg.sql("SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "archive_command never failed"
    );
    expected
}

/// Recovers a new cluster from `backup` through `walvault fetch` configured
/// by `env`, returning its checksum and its server log.
async fn recover(backup: PathBuf, env: BTreeMap<String, String>) -> (String, String) {
    recover_with(backup, env, Vec::new()).await
}

/// [`recover`] with extra recovery settings, e.g. a target time.
async fn recover_with(
    backup: PathBuf,
    env: BTreeMap<String, String>,
    settings: Vec<String>,
) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        let shipper = Shipper::new(&env);
        let restored = Postgres::recover(&backup, &shipper.command_line("fetch %f %p"), &settings);
        restored.wait_promoted(Duration::from_secs(120));
        (restored.sql(CHECKSUM), restored.log_tail())
    })
    .await
    .expect("recovery")
}

fn with(env: &BTreeMap<String, String>, changes: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = env.clone();
    for (k, v) in changes {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    // Prefetch off: each request then shows where it was served from.
    env.insert("WALVAULT_PREFETCH".into(), "0".into());
    env
}

async fn replicator(config: &Config) -> Replicator {
    let mut replicator =
        Replicator::from_config(&walvault_sdk_config(config).await, config).expect("replicator");
    replicator.redrive_prefix = staging_prefix(&config.cluster);
    replicator
}

async fn statuses(config: &Config) -> Vec<RecordStatus> {
    catalog(config)
        .await
        .list_page(&config.cluster, None)
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
        .list_page(&source.config.cluster, None)
        .await
        .expect("catalog");
    let victim = page
        .records
        .iter()
        .filter(|r| matches!(r.file, WalFileName::Segment(_)))
        .nth(1)
        .expect("a segment");
    let r2 = replica(&source.config, Provider::R2).await;
    let key = archive_key(&source.config.cluster, &victim.file);
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
    let b2 = Arc::new(OutageProxy::start(stack.b2.port));
    let source = start_source(
        "b2-outage",
        &[
            ("WALVAULT_B2_ENDPOINT", b2.endpoint()),
            ("WALVAULT_REQUEST_TIMEOUT_SECS", "2".into()),
            ("WALVAULT_MAX_ATTEMPTS", "1".into()),
        ],
    );
    b2.go_down();
    let expected = write_and_archive(&source.pg, 1, 6000);
    let replicator = replicator(&source.config).await;
    let failed = drain_queue(&replicator, &source.config, true).await;
    assert!(failed > 0, "B2 writes failed while it was down");
    let during = catalog(&source.config)
        .await
        .list_page(&source.config.cluster, None)
        .await
        .expect("catalog")
        .records;
    assert!(
        during
            .iter()
            .all(|r| r.r2.is_some() && r.b2.is_none() && r.status == RecordStatus::Partial),
        "R2 current, B2 missing"
    );

    b2.come_back();
    let report = replicator
        .redrive(Duration::ZERO, Instant::now() + Duration::from_secs(120))
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
        .list_page(&source.config.cluster, None)
        .await
        .expect("catalog")
        .records
        .iter()
        .map(|r| r.file)
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
