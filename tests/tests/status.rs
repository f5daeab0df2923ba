//! `walvault status` against the stand-ins, on the database host's
//! read-only keys: what it says of a fresh archive, of a gap and a file
//! stuck on one provider, once the functions (on their own rights) keep
//! the summary item, of the last drill, and the exit codes its thresholds
//! give; and what it says when the catalog cannot be read.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use shared::catalog::{CatalogRecord, RecordStatus};
use shared::clock::{now_millis, UnixMillis};
use shared::codec::Sha256Hex;
use shared::keys::drill_report_key;
use shared::retry::RequestLimits;
use shared::status::keep::{rebuild, refresh, RetentionRun, StagingReport, StoredSummary};
use shared::store::Metadata;
use shared::testing::{complete_backup, record_in};
use shared::wal::WalFileName;
use walvault::exit::STATUS_UNKNOWN;
use walvault_tests::archive::{archive_replicated, backends, backends_as, synthetic_segment};
use walvault_tests::profile::iam::Role;
use walvault_tests::shipper::Shipper;
use walvault_tests::standins::Stack;
use walvault_tests::unique_cluster;

const SYSID: u64 = 7_301_234_567_890_123_456;
const SEGMENT: u64 = 16 << 20;
const HOUR: u64 = 3_600_000;

fn segment_name(n: u64) -> String {
    format!("{:024X}", (1u128 << 64) | u128::from(n))
}

fn status(host: &Shipper, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let out = host
        .command(&all)
        .output()
        .expect("running walvault status");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    // A key printed twice would parse, the last one winning: count them.
    if let Some(object) = json.as_object() {
        for key in object.keys() {
            let printed = stdout.matches(&format!("\n  \"{key}\":")).count();
            assert_eq!(printed, 1, "{key} printed {printed} times at the top level");
        }
    }
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

/// A record as the compress function leaves it, written straight to the
/// catalog: status reads only the catalog.
fn record(cluster: &str, file: &str, status: RecordStatus, staged_at: UnixMillis) -> CatalogRecord {
    let cluster = cluster.parse().expect("a cluster name");
    let file = file.parse().expect("a file name");
    record_in(&cluster, file, SEGMENT, status, staged_at)
}

/// The records of a complete one-chunk base backup starting in segment 1.
fn base_backup(cluster: &str, started_at: UnixMillis) -> Vec<CatalogRecord> {
    let cluster = cluster.parse().expect("a cluster name");
    let start = segment_name(1).parse().expect("a segment name");
    complete_backup(&cluster, started_at, start, SEGMENT, 1)
}

#[tokio::test]
async fn status_reports_the_archive_and_exits_as_monitoring_expects() {
    let stack = Stack::shared();
    let cluster = unique_cluster("status");
    let config = stack.config(&cluster);
    let admin = backends(&config).await;
    let now = now_millis();
    for n in 1..=4 {
        let name: WalFileName = segment_name(n).parse().unwrap();
        archive_replicated(&config, &name, &synthetic_segment(&name, SYSID)).await;
    }
    for part in base_backup(&cluster, now - 2 * HOUR) {
        admin.catalog.create(&part).await.unwrap();
    }
    let host = Shipper::new(&stack.env_as(Role::Shipper, &cluster));

    // A fresh archive: nothing kept by the functions yet, so a warning.
    let (code, report, stderr) = status(&host, &[]);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["level"], "WARNING");
    assert_eq!(report["exit_code"], 1);
    assert_eq!(report["cluster"], cluster.as_str());
    assert_eq!(report["summary_version"], Value::Null);
    assert_eq!(check(&report, "retention")["level"], "WARNING");
    assert_eq!(check(&report, "archiving")["level"], "OK");
    assert_eq!(check(&report, "backups")["level"], "OK");
    assert_eq!(report["archive"]["files"], 6);
    assert_eq!(
        report["archive"]["timelines"]["1"]["newest"],
        segment_name(4)
    );
    assert_eq!(report["archive"]["backups"][0]["chunks_replicated"], 1);
    let r2 = &report["providers"][0];
    assert_eq!(
        (r2["provider"].as_str(), r2["files"].as_u64()),
        (Some("r2"), Some(6))
    );
    assert!(r2["ratio"].as_f64().unwrap() > 1.0, "{r2}");
    assert!(r2["monthly_cost"].as_f64().unwrap() > 0.0, "{r2}");
    // The summary item (absent) and two pages: WAL, backups.
    assert_eq!(report["catalog_requests"], 3);

    // Segment 5 never arrives; 6 has been on R2 only for an hour.
    let stuck = record(
        &cluster,
        &segment_name(6),
        RecordStatus::Partial,
        now - HOUR,
    );
    admin.catalog.create(&stuck).await.unwrap();
    let (code, report, stderr) = status(&host, &[]);
    assert_eq!(code, 2, "{report:#}\n{stderr}");
    assert_eq!(report["level"], "CRITICAL");
    assert_eq!(report["in_flight"]["count"], 1);
    assert_eq!(report["in_flight"]["files"][0]["file"], segment_name(6));
    assert_eq!(
        report["in_flight"]["files"][0]["missing"],
        serde_json::json!(["b2"])
    );
    assert_eq!(check(&report, "replication")["level"], "WARNING");
    let continuity = check(&report, "continuity");
    assert_eq!(continuity["level"], "CRITICAL");
    assert!(
        continuity["text"]
            .as_str()
            .unwrap()
            .contains(&segment_name(5)),
        "{continuity}"
    );
    // The human form says the same facts, in 100 columns.
    let out = host.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text.starts_with(&format!("walvault status {cluster}: CRITICAL - ")),
        "{text}"
    );
    assert!(
        text.contains(&format!("in flight: {} partial", segment_name(6))),
        "{text}"
    );
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");

    // The functions keep the summary on their own rights: the re-drive an
    // hour later folds what has settled, the sweep rebuilds it.
    let limits = RequestLimits {
        timeout: Duration::from_secs(5),
        attempts: 3,
    };
    let budget = limits.until(tokio::time::Instant::now() + Duration::from_secs(60));
    let compress = backends_as(Role::Compress, &config).await;
    let staging = StagingReport {
        at: now + HOUR,
        backlog: 0,
        oldest_age_ms: 0,
    };
    refresh(
        compress.catalog.as_ref(),
        &config.cluster,
        staging,
        now + HOUR,
        &budget,
    )
    .await
    .unwrap();
    let retention = backends_as(Role::Retention, &config).await;
    let run = RetentionRun {
        at: now,
        window_days: 30,
        ..RetentionRun::default()
    };
    rebuild(
        retention.catalog.as_ref(),
        &config.cluster,
        run,
        now + HOUR,
        &budget,
    )
    .await
    .unwrap();
    let (code, report, _) = status(&host, &[]);
    assert_eq!(code, 2);
    assert_eq!(report["summary_version"], 2);
    assert_eq!(report["staging"]["backlog"], 0);
    assert_eq!(check(&report, "retention")["level"], "OK");
    // The summary is kept up to segment 4: only the stuck file is read.
    let item = admin
        .catalog
        .get_cluster_item(&config.cluster, shared::catalog::ClusterItemKind::Summary)
        .await
        .unwrap()
        .unwrap();
    let kept: StoredSummary = serde_json::from_str(&item.body).unwrap();
    assert_eq!(kept.archive.wal_through, Some(segment_name(4)));
    assert_eq!(report["archive"]["wal_through"], segment_name(6));
    assert_eq!(report["records_read"], 1);
    assert_eq!(report["archive"]["files"], 7);

    // Segment 5 arrives and 6 reaches B2: healthy, but for the thresholds.
    let mut late = record(
        &cluster,
        &segment_name(5),
        RecordStatus::Replicated,
        now - HOUR,
    );
    admin.catalog.create(&late).await.unwrap();
    late = record(
        &cluster,
        &segment_name(6),
        RecordStatus::Replicated,
        now - HOUR,
    );
    admin
        .catalog
        .delete(shared::catalog::RecordRef::of(&late))
        .await
        .unwrap();
    admin.catalog.create(&late).await.unwrap();
    // The newest segment is an hour old: the default RPO warning.
    let (code, report, _) = status(&host, &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(check(&report, "archiving")["level"], "WARNING");
    let (code, report, _) = status(&host, &["--rpo-warn", "2h", "--rpo-crit", "3h"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["level"], "OK");
    let (code, _, _) = status(&host, &["--rpo-crit", "30m"]);
    assert_eq!(code, 2);

    // A drill report in staging, as `walvault drill` stores it.
    let drill = serde_json::json!({
        "cluster": cluster, "started_at_ms": now - HOUR, "passed": false,
        "failure": "recovery: the server did not reach the target", "target": "latest",
        "recovered_to": null,
    });
    let body = Bytes::from(drill.to_string());
    let sha = Sha256Hex::of(&body);
    admin
        .staging
        .put_if_absent(
            &drill_report_key(&config.cluster, now - HOUR),
            body,
            &sha,
            &Metadata::new(),
        )
        .await
        .unwrap();
    let (code, report, _) = status(&host, &["--rpo-warn", "2h", "--rpo-crit", "3h"]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["last_drill"]["passed"], false);
    assert!(check(&report, "drill")["text"]
        .as_str()
        .unwrap()
        .contains("FAILED"));

    // A catalog that cannot be read: UNKNOWN, saying why (the provider's
    // refusal names the table) and never a credential.
    let mut env = stack.env_as(Role::Shipper, &cluster);
    let secrets: Vec<String> = env
        .iter()
        .filter(|(key, _)| key.contains("SECRET"))
        .map(|(_, value)| value.clone())
        .collect();
    assert!(!secrets.is_empty());
    env.insert("WALVAULT_CATALOG_TABLE".into(), "no-such-table".into());
    let lost = Shipper::new(&env);
    let out = lost.command(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(i32::from(STATUS_UNKNOWN)), "{text}");
    assert!(
        text.starts_with(&format!("walvault status {cluster}: UNKNOWN - ")),
        "{text}"
    );
    assert!(text.contains("the catalog could not be read"), "{text}");
    assert!(
        secrets.iter().all(|secret| !text.contains(secret.as_str())),
        "{text}"
    );
}
