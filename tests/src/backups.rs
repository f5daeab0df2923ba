//! Base backups on the stand-ins through the real `walvault` binary, for
//! the end-to-end tests and the demo: `walvault backup` of a source
//! cluster, `walvault restore` on a recovering host, and starting what it
//! restored.

use std::time::Duration;

use shared::backup::name::BackupId;
use shared::backup::target::postgres_time;
use shared::clock::now_millis;

use crate::pipeline::{with, Source, CHECKSUM};
use crate::postgres::{Postgres, Vacant, PG_BIN};
use crate::shipper::{Run, Shipper};

/// Settings for a source cluster that takes base backups: PostgreSQL's
/// programs (the shipper runs with a bare environment, as under
/// PostgreSQL), and chunks of `chunk_mib`.
pub fn backup_settings(chunk_mib: u32) -> Vec<(&'static str, String)> {
    vec![
        ("WALVAULT_PG_BINDIR", PG_BIN.to_owned()),
        ("WALVAULT_BACKUP_CHUNK_MIB", chunk_mib.to_string()),
        ("WALVAULT_BACKUP_WAL_WAIT_SECS", "60".to_owned()),
    ]
}

/// The libpq connection string of `pg` for `walvault backup --dbname`.
pub fn dbname(pg: &Postgres) -> String {
    format!(
        "host={} port={} user=postgres dbname=postgres",
        pg.socket_dir().display(),
        pg.port()
    )
}

/// `walvault backup` of `source`'s cluster, as its host runs it; the id.
pub fn take_backup(source: &Source) -> BackupId {
    take_backup_from(source, &source.pg)
}

/// `walvault backup` of `source`'s cluster taken from `server` (the
/// primary, or one of its standbys).
pub fn take_backup_from(source: &Source, server: &Postgres) -> BackupId {
    let shipper = Shipper::new(&source.env);
    let run = shipper.run(&["backup", "--dbname", &dbname(server)]);
    assert_eq!(run.code, 0, "walvault backup:\n{}", run.stderr);
    run.stderr
        .split("backup ")
        .filter_map(|rest| rest.split_whitespace().next())
        .find_map(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no backup id in:\n{}", run.stderr))
}

/// A recovering host: the restore role's keys, no prefetch.
pub fn recovering_host(source: &Source, changes: &[(&str, &str)]) -> Shipper {
    Shipper::new(&with(&source.env, changes))
}

/// `walvault restore --to <a new cluster's data dir> <args…>` on `host`;
/// the run, and the cluster to start.
pub fn restore(host: &Shipper, args: &[&str]) -> (Run, Vacant) {
    let cluster = Postgres::vacant();
    let data = cluster.data_dir();
    let fetch = host.command_line("fetch %f %p");
    let mut all = vec![
        "restore",
        "--to",
        data.to_str().expect("a UTF-8 path"),
        "--restore-command",
        &fetch,
    ];
    all.extend_from_slice(args);
    (host.run(&all), cluster)
}

/// Starts a restored cluster (archiving off) and waits until recovery
/// ended and it promoted; the proof table's checksum.
pub fn recover_restored(cluster: Vacant) -> String {
    let pg = cluster.start("walvault restored", &["archive_mode = off".to_owned()]);
    pg.wait_promoted(Duration::from_secs(120));
    pg.sql(CHECKSUM)
}

/// Now, as `--time` takes it.
pub fn now_rfc3339() -> String {
    postgres_time(now_millis())
        .replacen(' ', "T", 1)
        .replace("+00", "Z")
}
