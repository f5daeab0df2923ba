//! Benchmark 5 of `make bench`: base backups and restores on one database
//! of at least 1.5 GB (pgbench), in one run, side by side:
//!
//! 1. Backup: `pg_basebackup -Ft` to the local disk (the floor: PostgreSQL's
//!    own streaming, nothing else), `walvault backup` into the staging
//!    bucket (s3s-fs), and `pgbackrest backup --type=full` (zst, local
//!    repository).
//! 2. Restore to a target time after a pgbench workload: download and lay
//!    out the backup, then WAL replay until the server promotes, each tool
//!    with its own archive (`walvault fetch` with prefetch from R2 on
//!    s3s-fs; pgBackRest's archive-get from its repository). The recovered
//!    `sum(abalance)` must equal the source's at the target.
//! 3. `walvault drill`: its report, the recovery time of this database.
//!
//! The cluster archives through both tools (`walvault push && pgbackrest
//! archive-push`): each backup needs its own WAL. walvault's catalog is
//! moto's DynamoDB; the compress function's work (the backup's chunks and
//! the WAL, to R2 and B2) runs in process between the backup and the
//! restore, timed on its own.
//!
//! `cargo run --release -p walvault-tests --example backups [pgbench scale]`

use std::time::{Duration, Instant};

use shared::retry::RequestLimits;
use walvault_tests::backups::{dbname, now_rfc3339};
use walvault_tests::pgbackrest::{PgBackRest, Repository};
use walvault_tests::pipeline::replicator;
use walvault_tests::postgres::{
    as_pg_user, hand_to_postgres_user, PgOptions, Postgres, Vacant, PG_BIN,
};
use walvault_tests::process::run_checked;
use walvault_tests::s3s::S3sFs;
use walvault_tests::shipper::{public_tempdir, Shipper};
use walvault_tests::standins::{config_from_env, Stack};

const CHECK: &str = "SELECT sum(abalance) FROM pgbench_accounts";

fn main() {
    let scale: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let runtime = walvault_tests::example_runtime();
    let stack = Stack::shared();
    let s3 = S3sFs::start();
    runtime.block_on(s3.create_walvault_buckets());
    let mut env = stack.env("bench-backups");
    s3.redirect(&mut env);
    env.insert("WALVAULT_PG_BINDIR".into(), PG_BIN.into());
    let shipper = Shipper::new(&env);
    let pgbackrest = PgBackRest::new(false, Repository::Local);

    let pg = Postgres::start(PgOptions {
        extra_conf: vec![
            "max_wal_size = 4GB".into(),
            "checkpoint_timeout = 1h".into(),
        ],
        ..PgOptions::default()
    });
    let archive_command = format!(
        "{} && {}",
        shipper.command_line("push %p"),
        pgbackrest.archive_push(&pg)
    );
    pg.sql(&format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        archive_command.replace('\'', "''")
    ));
    pg.sql("SELECT pg_reload_conf()");
    let started = Instant::now();
    pg.pgbench(scale, 0);
    pg.sql("CHECKPOINT");
    let size: u64 = pg
        .sql("SELECT pg_database_size('postgres')")
        .parse()
        .unwrap_or(0);
    println!(
        "6. base backups of a pgbench database, scale {scale}: {:.2} GiB (built in {:.0} s)",
        size as f64 / (1u64 << 30) as f64,
        started.elapsed().as_secs_f64()
    );

    println!("\n6a. backup");
    println!(
        "{:<44} {:>10} {:>12} {:>10}",
        "tool", "seconds", "MiB/s", "vs floor"
    );
    let floor_dir = public_tempdir("walvault-bench-basebackup-");
    hand_to_postgres_user(floor_dir.path());
    let floor = timed(|| {
        let mut command = as_pg_user(&format!("{PG_BIN}/pg_basebackup"));
        command
            .args(["-D"])
            .arg(floor_dir.path().join("tar"))
            .args(["-Ft", "-X", "none", "--checkpoint=fast", "--no-sync"])
            .arg(format!("--dbname={}", dbname(&pg)));
        run_checked(&mut command);
    });
    drop(floor_dir);
    print_row(
        "pg_basebackup -Ft to local disk (floor)",
        floor,
        size,
        floor,
    );
    let walvault = timed(|| {
        let run = shipper.run(&["backup", "--dbname", &dbname(&pg)]);
        assert_eq!(run.code, 0, "walvault backup:\n{}", run.stderr);
    });
    print_row(
        "walvault backup (32 MiB chunks, 4 at once)",
        walvault,
        size,
        floor,
    );
    let pgbackrest_backup = timed(|| {
        run_checked(&mut pgbackrest.command(&["backup", "--type=full"]));
    });
    print_row(
        "pgbackrest backup --type=full (zst, local)",
        pgbackrest_backup,
        size,
        floor,
    );

    // WAL after the backups, a target inside it, and more WAL after that.
    pg.pgbench_for(2, Duration::from_secs(20));
    let target = now_rfc3339();
    let expected = pg.sql(CHECK);
    std::thread::sleep(Duration::from_millis(1100));
    pg.pgbench_for(2, Duration::from_secs(10));
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(600));

    let config = config_from_env(&env);
    let replication = runtime.block_on(async {
        let started = Instant::now();
        let budget = RequestLimits::from_config(&config)
            .until(tokio::time::Instant::now() + Duration::from_secs(3600));
        let report = replicator(&config)
            .await
            .redrive(Duration::ZERO, &budget)
            .await
            .expect("replicating the backup and the WAL");
        assert_eq!(report.failed, 0, "{report:?}");
        (report.replicated, started.elapsed())
    });
    println!(
        "\n(compress function, in process: {} files — the backup's chunks and the WAL — to R2 and B2 in {:.1} s)",
        replication.0,
        replication.1.as_secs_f64()
    );

    println!("\n6b. restore to {target}: download and lay-out, then WAL replay to the target");
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}",
        "tool", "restore s", "replay s", "total s", "vs walvault"
    );
    let walvault = restore_walvault(&shipper, &target, &expected);
    print_restore("walvault restore --time (prefetch 8)", walvault, walvault);
    let pgbackrest_restore = restore_pgbackrest(&pgbackrest, &target, &expected);
    print_restore(
        "pgbackrest restore --type=time",
        pgbackrest_restore,
        walvault,
    );

    println!("\n6c. walvault drill (restore, recover to the end, check, clean up)");
    let (run, report) = shipper.run_as_postgres(&["drill"]);
    print!("{report}");
    assert_eq!(run.code, 0, "walvault drill:\n{}", run.stderr);
}

fn timed(work: impl FnOnce()) -> Duration {
    let started = Instant::now();
    work();
    started.elapsed()
}

fn print_row(label: &str, took: Duration, bytes: u64, floor: Duration) {
    println!(
        "{label:<44} {:>10.1} {:>12.1} {:>9.2}×",
        took.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64 / took.as_secs_f64(),
        took.as_secs_f64() / floor.as_secs_f64()
    );
}

fn print_restore(
    label: &str,
    (restore, replay): (Duration, Duration),
    baseline: (Duration, Duration),
) {
    let total = restore + replay;
    println!(
        "{label:<44} {:>10.1} {:>10.1} {:>10.1} {:>9.2}×",
        restore.as_secs_f64(),
        replay.as_secs_f64(),
        total.as_secs_f64(),
        total.as_secs_f64() / (baseline.0 + baseline.1).as_secs_f64()
    );
}

/// (restore, replay) of `walvault restore`, checked against `expected`.
fn restore_walvault(shipper: &Shipper, target: &str, expected: &str) -> (Duration, Duration) {
    let cluster = Postgres::vacant();
    let data = cluster.data_dir();
    let fetch = shipper.command_line("fetch %f %p");
    let restore = timed(|| {
        let run = shipper.run(&[
            "restore",
            "--to",
            data.to_str().expect("a UTF-8 path"),
            "--time",
            target,
            "--restore-command",
            &fetch,
        ]);
        assert_eq!(run.code, 0, "walvault restore:\n{}", run.stderr);
    });
    let replay = recover(cluster, expected);
    (restore, replay)
}

/// (restore, replay) of `pgbackrest restore`, checked against `expected`.
fn restore_pgbackrest(
    pgbackrest: &PgBackRest,
    target: &str,
    expected: &str,
) -> (Duration, Duration) {
    let cluster = Postgres::vacant();
    let data = cluster.data_dir();
    std::fs::create_dir(&data).expect("data dir");
    hand_to_postgres_user(&data);
    let target = target.replacen('T', " ", 1).replace('Z', "+00");
    let restore = timed(|| {
        run_checked(&mut pgbackrest.command(&[
            "restore",
            &format!("--pg1-path={}", data.display()),
            "--type=time",
            &format!("--target={target}"),
            "--target-action=promote",
        ]));
    });
    let replay = recover(cluster, expected);
    (restore, replay)
}

/// Starts a restored cluster and times it until it promoted.
fn recover(cluster: Vacant, expected: &str) -> Duration {
    let started = Instant::now();
    let pg = cluster.start("restored", &["archive_mode = off".to_owned()]);
    pg.wait_promoted(Duration::from_secs(3600));
    let took = started.elapsed();
    assert_eq!(
        pg.sql(CHECK),
        expected,
        "the recovered data:\n{}",
        pg.log_tail()
    );
    took
}
