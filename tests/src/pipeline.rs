//! The whole pipeline on the stand-ins, for the end-to-end tests and the
//! demo: a PostgreSQL archiving through `walvault push`, the staging
//! queue drained into the compress handler as the Lambda event source
//! mapping would, and recoveries through `walvault fetch`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::config::Config;
use shared::keys::staging_prefix;
use shared::replicate::invocation::handle_invocation;
use shared::replicate::Replicator;
use shared::store::list_all;

use crate::archive::backends;
use crate::postgres::{PgOptions, Postgres};
use crate::profile::iam::Role;
use crate::shipper::Shipper;
use crate::standins::{announced_key, keys, Stack};
use crate::unique_cluster;

pub use crate::archive::replicator;

pub const CHECKSUM: &str =
    "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM proof";
pub const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

/// Hands the cluster's messages from the queue to the compress handler in
/// batches, as the event source mapping does, until the cluster's staging
/// prefix is empty or, with `allow_failures` (its objects then stay), no
/// message is left. Returns how many messages the handler reported failed.
pub async fn drain_queue(replicator: &Replicator, config: &Config, allow_failures: bool) -> usize {
    let queue = Stack::shared().staging_queue().await;
    let staging_store = backends(config).await.staging;
    let prefix = staging_prefix(&config.cluster);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut failed_total = 0;
    loop {
        let received = queue.receive().await;
        // Other tests' messages go straight back to the queue for them.
        let mut ours = Vec::new();
        for m in &received {
            if announced_key(m).is_some_and(|k| k.starts_with(&prefix)) {
                ours.push(m);
            } else {
                queue.release(m).await;
            }
        }
        if ours.is_empty() {
            if list_all(staging_store.as_ref(), &prefix)
                .await
                .expect("list")
                .is_empty()
                || (allow_failures && received.is_empty())
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
                tokio::time::Instant::now() + Duration::from_secs(60),
            )
            .await
            .expect("handler");
            let failed = response["batchItemFailures"].as_array().map_or(0, Vec::len);
            assert!(allow_failures || failed == 0, "messages failed: {response}");
            failed_total += failed;
            // Failed ones are left to the re-drive here rather than SQS's redelivery.
            for m in ours {
                queue.delete(m).await;
            }
        }
        if Instant::now() >= deadline {
            let left: Vec<String> = list_all(staging_store.as_ref(), &prefix)
                .await
                .map(|objects| objects.into_iter().map(|o| o.key).collect())
                .unwrap_or_default();
            panic!("the queue did not drain; left in staging: {left:?}");
        }
    }
}

/// A source cluster archiving through `walvault push`, with a base backup
/// taken at the start.
pub struct Source {
    pub config: Config,
    /// Its directory holds the config file the archiver reads.
    _shipper: Shipper,
    pub env: BTreeMap<String, String>,
    pub pg: Postgres,
    pub backup: PathBuf,
}

pub fn start_source(prefix: &str, env_changes: &[(&str, String)]) -> Source {
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
pub fn write_and_archive(pg: &Postgres, from: u32, to: u32) -> String {
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
pub async fn recover(backup: PathBuf, env: BTreeMap<String, String>) -> (String, String) {
    recover_with(backup, env, Vec::new()).await
}

/// [`recover`] with extra recovery settings, e.g. a target time.
pub async fn recover_with(
    backup: PathBuf,
    env: BTreeMap<String, String>,
    settings: Vec<String>,
) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        let shipper = Shipper::new(&env);
        let restored = Postgres::recover(&backup, &shipper.command_line("fetch %f %p"), &settings);
        // Room for a soak's WAL (hundreds of segments) with a provider
        // down; a recovery that finishes returns at once.
        restored.wait_promoted(Duration::from_secs(600));
        (restored.sql(CHECKSUM), restored.log_tail())
    })
    .await
    .expect("recovery")
}

pub fn with(env: &BTreeMap<String, String>, changes: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = env.clone();
    for (k, v) in changes {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    // Prefetch off: each request then shows where it was served from.
    env.insert("WALVAULT_PREFETCH".into(), "0".into());
    // A recovering host holds `RestorePolicy`, and `ShipperPolicy` to
    // archive once promoted.
    let cluster = env["WALVAULT_CLUSTER"].clone();
    env.insert(
        "AWS_ACCESS_KEY_ID".into(),
        keys(Role::RestoreAndShip, &cluster).0,
    );
    env
}
