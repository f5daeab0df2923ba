//! The whole pipeline on the stand-ins: PostgreSQL archives through
//! `walvault push`; the staging bucket's notifications reach SQS; the
//! compress handler consumes the queue as the Lambda event source mapping
//! would; a new cluster recovers through `walvault fetch` with exactly the
//! committed data.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::catalog::{Catalog, RecordStatus};
use shared::compress::handle_invocation;
use shared::config::Config;
use shared::keys::staging_prefix;
use shared::replicate::Replicator;
use shared::store::list_all;
use walvault_tests::archive::{catalog, staging};
use walvault_tests::postgres::{PgOptions, Postgres};
use walvault_tests::shipper::Shipper;
use walvault_tests::standins::{self, walvault_sdk_config, Stack};
use walvault_tests::unique_cluster;

const CHECKSUM: &str = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM proof";

/// Receives the queue's messages and hands them to the compress handler in
/// batches of 10, deleting those it did not report failed, until the
/// cluster's staging prefix is empty.
async fn drain_queue(stack: &Stack, replicator: &Replicator, config: &Config) {
    let sdk = standins::aws_sdk_config().await;
    let sqs = standins::sqs_client(&sdk, &stack.staging.endpoint());
    let staging_store = staging(config).await;
    let prefix = staging_prefix(&config.cluster);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = received.messages();
        if !messages.is_empty() {
            let records: Vec<Value> = messages
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
            let failed: Vec<&str> = response["batchItemFailures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["itemIdentifier"].as_str())
                .collect();
            assert!(failed.is_empty(), "messages failed: {failed:?}");
            for m in messages {
                sqs.delete_message()
                    .queue_url(&stack.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
        } else if list_all(&staging_store, &prefix)
            .await
            .expect("list")
            .is_empty()
        {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_replicate_and_recover_through_the_real_pipeline() {
    let stack = Stack::shared();
    let cluster = unique_cluster("pipeline");
    let config = stack.config(&cluster);
    let shipper = Shipper::new(&stack.env(&cluster));
    let source = Postgres::start(PgOptions {
        archive_command: Some(shipper.command_line("push %p")),
        ..PgOptions::default()
    });
    let backup = source.scratch("backup").join("base");
    source.base_backup(&backup);
    source.sql("CREATE TABLE proof (id int PRIMARY KEY, v text)");
    for round in 0..4 {
        source.sql(&format!(
            "INSERT INTO proof SELECT g, md5(g::text) FROM generate_series({}, {}) g",
            round * 2000 + 1,
            (round + 1) * 2000
        ));
        source.switch_wal();
    }
    let expected = source.sql(CHECKSUM);
    let last = source.switch_wal();
    source.wait_archived(&last, Duration::from_secs(120));
    assert_eq!(source.sql("SELECT failed_count FROM pg_stat_archiver"), "0");

    let replicator =
        Replicator::from_config(&walvault_sdk_config(&config).await, &config).expect("replicator");
    drain_queue(stack, &replicator, &config).await;

    let page = catalog(&config)
        .await
        .list_page(&config.cluster, None)
        .await
        .expect("catalog");
    assert!(page.records.len() >= 5, "{} records", page.records.len());
    for record in &page.records {
        assert_eq!(record.status, RecordStatus::Replicated, "{}", record.file);
    }

    let restored = tokio::task::spawn_blocking(move || {
        let restored = Postgres::recover(&backup, &shipper.command_line("fetch %f %p"), &[]);
        restored.wait_promoted(Duration::from_secs(120));
        restored.sql(CHECKSUM)
    })
    .await
    .expect("recovery");
    assert_eq!(restored, expected);
}
