//! `walvault push` as PostgreSQL's archive_command, and directly, against
//! the stand-ins.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shared::codec::Sha256Hex;
use shared::keys::{meta, staging_key};
use shared::store::list_all;
use shared::wal::{SegmentSize, WalFileName};
use walvault::exit::{PUSH_CONFLICT, PUSH_REFUSED_FILE, PUSH_UNAVAILABLE, PUSH_WRONG_CLUSTER};
use walvault_tests::archive::{archive_replicated, backends};
use walvault_tests::postgres::{PgOptions, Postgres};
use walvault_tests::shipper::{public_tempdir, Shipper};
use walvault_tests::standins::{Service, Stack};
use walvault_tests::unique_cluster;

/// A few real segments from a throw-away cluster, archived by `cp`.
struct Segments {
    pg: Postgres,
    files: Vec<PathBuf>,
}

fn real_segments(count: usize) -> Segments {
    let pg = Postgres::start(PgOptions::default());
    pg.pgbench(1, 100);
    let mut last = String::new();
    for _ in 0..count {
        pg.sql("CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1)");
        last = pg.switch_wal();
    }
    pg.wait_archived(&last, Duration::from_secs(60));
    let mut files: Vec<PathBuf> = std::fs::read_dir(pg.archive_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.file_name().unwrap().to_str().unwrap().parse(),
                Ok(WalFileName::Segment(_))
            )
        })
        .collect();
    files.sort();
    Segments { pg, files }
}

/// A copy of `file` under its own name in a fresh directory (outside any
/// pg_wal, so no parallel push is attempted).
fn copy_named(file: &Path, contents: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = public_tempdir("walvault-push-");
    let path = dir.path().join(file.file_name().unwrap());
    match contents {
        Some(bytes) => std::fs::write(&path, bytes).unwrap(),
        None => {
            std::fs::copy(file, &path).unwrap();
        }
    }
    (dir, path)
}

fn wal_name(path: &Path) -> WalFileName {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("a WAL file name")
}

fn push(shipper: &Shipper, path: &Path) -> walvault_tests::shipper::Run {
    shipper.run(&["push", path.to_str().unwrap()])
}

#[tokio::test]
async fn postgres_drains_a_backlog_through_walvault_push() {
    let stack = Stack::shared();
    let cluster = unique_cluster("drain");
    let shipper = Shipper::new(&stack.env(&cluster));
    // Archiving unconfigured: WAL piles up as .ready files.
    let pg = Postgres::start(PgOptions {
        archive_command: Some(String::new()),
        ..PgOptions::default()
    });
    pg.pgbench(1, 300);
    let mut last = String::new();
    for _ in 0..8 {
        pg.sql("CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1)");
        last = pg.switch_wal();
    }
    let ready = std::fs::read_dir(pg.pg_wal().join("archive_status"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".ready")
        })
        .count();
    assert!(ready >= 8, "backlog of {ready}");

    pg.sql(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        shipper.command_line("push %p").replace('\'', "''")
    ));
    pg.sql("SELECT pg_reload_conf()");
    pg.wait_archived(&last, Duration::from_secs(120));
    assert_eq!(pg.sql("SELECT failed_count FROM pg_stat_archiver"), "0");

    let config = stack.config(&cluster);
    let staging = backends(&config).await.staging;
    let objects = list_all(staging.as_ref(), &format!("{cluster}/staging/"))
        .await
        .unwrap();
    assert!(
        objects.len() >= ready,
        "{} objects for {ready} ready files",
        objects.len()
    );
    let sysid = pg.system_identifier().to_string();
    for object in objects {
        let info = staging.head(&object.key).await.unwrap();
        let name: WalFileName = object.key.rsplit('/').next().unwrap().parse().unwrap();
        assert!(info.sha256().is_some(), "{name}");
        assert_eq!(info.metadata[meta::SIZE], info.size.to_string());
        assert!(!info.metadata[meta::HOST].is_empty());
        if let WalFileName::Segment(_) = name {
            assert_eq!(info.size, SegmentSize::DEFAULT.bytes());
            assert_eq!(info.metadata[meta::SYSTEM_IDENTIFIER], sysid);
            assert_eq!(info.metadata[meta::PG_VERSION], "15");
        }
    }
    // The parallel pushes left no markers behind once PostgreSQL caught up.
    let markers = std::fs::read_dir(shipper.spool_dir().join("pushed"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(markers, 0);
}

#[tokio::test]
async fn repushes_are_idempotent_and_conflicts_refused_in_staging_and_after() {
    let stack = Stack::shared();
    let cluster = unique_cluster("repush");
    let config = stack.config(&cluster);
    let shipper = Shipper::new(&stack.env(&cluster));
    let segments = real_segments(3);
    let (first, second) = (&segments.files[0], &segments.files[1]);

    // In staging.
    let (_d1, path) = copy_named(first, None);
    assert_eq!(push(&shipper, &path).code, 0);
    let again = push(&shipper, &path);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("AlreadyStaged"), "{}", again.stderr);

    let original = std::fs::read(first).unwrap();
    let mut altered = original.clone();
    altered[100_000] ^= 0xFF;
    let (_d2, altered_path) = copy_named(first, Some(&altered));
    let refused = push(&shipper, &altered_path);
    assert_eq!(refused.code, i32::from(PUSH_CONFLICT), "{}", refused.stderr);
    let name = wal_name(first);
    let stored = backends(&config)
        .await
        .staging
        .get(&staging_key(&config.cluster, name))
        .await
        .unwrap();
    assert_eq!(
        Sha256Hex::of(&stored.body),
        Sha256Hex::of(&original),
        "the staged copy is untouched"
    );

    // Replicated and gone from staging: the catalog decides.
    let second_bytes = std::fs::read(second).unwrap();
    let second_name = wal_name(second);
    archive_replicated(&config, &second_name, &second_bytes).await;
    let (_d3, path) = copy_named(second, None);
    let same = push(&shipper, &path);
    assert_eq!(same.code, 0, "{}", same.stderr);
    assert!(same.stderr.contains("AlreadyArchived"), "{}", same.stderr);
    let mut altered = second_bytes.clone();
    altered[200_000] ^= 0x01;
    let (_d4, altered_path) = copy_named(second, Some(&altered));
    let refused = push(&shipper, &altered_path);
    assert_eq!(refused.code, i32::from(PUSH_CONFLICT), "{}", refused.stderr);
    // The archived copy's record is untouched. (The push asks the catalog
    // after its put: the same-bytes push above left a duplicate in staging
    // for the compress function to drop, which refused this one's put.)
    let backends = backends(&config).await;
    let record = backends
        .catalog
        .get(&config.cluster, &second_name.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.raw_sha256, Sha256Hex::of(&second_bytes));
}

#[tokio::test]
async fn segments_of_another_cluster_are_refused() {
    let stack = Stack::shared();
    let cluster = unique_cluster("identity");
    let ours = real_segments(2);
    let theirs = real_segments(2);
    let shipper = Shipper::new(&stack.env(&cluster));
    let (_d1, path) = copy_named(&ours.files[0], None);
    assert_eq!(
        push(&shipper, &path).code,
        0,
        "the first segment pins the identity"
    );

    let (_d2, foreign) = copy_named(&theirs.files[1], None);
    let refused = push(&shipper, &foreign);
    assert_eq!(
        refused.code,
        i32::from(PUSH_WRONG_CLUSTER),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("another PostgreSQL cluster"),
        "{}",
        refused.stderr
    );

    // Pinned in config: refused without asking the store.
    let mut env = stack.env(&unique_cluster("pinned"));
    env.insert(
        "WALVAULT_SYSTEM_IDENTIFIER".into(),
        ours.pg.system_identifier().to_string(),
    );
    let pinned = Shipper::new(&env);
    let refused = push(&pinned, &foreign);
    assert_eq!(
        refused.code,
        i32::from(PUSH_WRONG_CLUSTER),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("WALVAULT_SYSTEM_IDENTIFIER"),
        "{}",
        refused.stderr
    );
    let (_d3, ok) = copy_named(&ours.files[1], None);
    assert_eq!(push(&pinned, &ok).code, 0);
}

#[tokio::test]
async fn truncated_and_non_wal_files_are_refused() {
    let stack = Stack::shared();
    let shipper = Shipper::new(&stack.env(&unique_cluster("refuse")));
    let segments = real_segments(1);
    let bytes = std::fs::read(&segments.files[0]).unwrap();
    for (label, contents) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("not wal", b"#!/bin/sh\necho not a segment\n".repeat(1000)),
        ("empty", Vec::new()),
    ] {
        let (_d, path) = copy_named(&segments.files[0], Some(&contents));
        let run = push(&shipper, &path);
        assert_eq!(
            run.code,
            i32::from(PUSH_REFUSED_FILE),
            "{label}: {}",
            run.stderr
        );
    }
    let dir = public_tempdir("walvault-push-");
    let odd = dir.path().join("postgresql.conf");
    std::fs::write(&odd, "x").unwrap();
    assert_eq!(push(&shipper, &odd).code, i32::from(PUSH_REFUSED_FILE));
    assert_eq!(
        push(&shipper, &dir.path().join("000000010000000000000009")).code,
        i32::from(PUSH_REFUSED_FILE),
        "missing file"
    );
}

#[tokio::test]
async fn stores_down_fail_within_the_deadline_then_push_succeeds_when_back() {
    let stack = Stack::shared();
    let cluster = unique_cluster("outage");
    let proxy = stack.private_proxy(Service::Staging);
    let mut env = stack.env(&cluster);
    env.insert("WALVAULT_STAGING_ENDPOINT".into(), proxy.endpoint());
    env.insert("WALVAULT_PUSH_DEADLINE_SECS".into(), "3".into());
    env.insert("WALVAULT_REQUEST_TIMEOUT_SECS".into(), "1".into());
    env.insert("WALVAULT_MAX_ATTEMPTS".into(), "1".into());
    let shipper = Shipper::new(&env);
    let segments = real_segments(1);
    let (_d, path) = copy_named(&segments.files[0], None);

    proxy.faults().go_down();
    let started = Instant::now();
    let down = push(&shipper, &path);
    assert_eq!(down.code, i32::from(PUSH_UNAVAILABLE), "{}", down.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    proxy.faults().come_back();
    let back = push(&shipper, &path);
    assert_eq!(back.code, 0, "{}", back.stderr);
}
