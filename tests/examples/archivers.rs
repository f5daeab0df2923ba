//! Benchmarks 1 and 3 of `make bench`: walvault against pgBackRest,
//! barman-cloud and `cp`, side by side in one run, on one pgbench backlog.
//!
//! 1. Backlog drain: a PostgreSQL 15 cluster builds a backlog with archiving
//!    off and stops; for every archiver a copy of it starts, the
//!    archive_command is switched on, and the archiver is timed until the
//!    last ready segment is archived.
//! 2. Restore: a base backup taken before the backlog is recovered through
//!    each tool's restore command until the end of the archive, timed until
//!    the cluster is promoted. The recovered data is checked against the
//!    source's (a benchmark of a broken restore would be worthless).
//!
//! The S3 tools (walvault staging, R2 and B2, barman-cloud) share one s3s-fs
//! server (S3 on the local disk); pgBackRest uses a local repository, as
//! the issue asks; walvault's catalog is moto's DynamoDB. `make bench`
//! installs the tools and builds everything in release mode.
//!
//! Then both again on a realistic link: profile proxies (plain, only the
//! link) in front of the same stand-ins, 20 ms round trip and 1 Gbit/s to
//! staging, the catalog and pgBackRest's S3 repository (over TLS, which
//! pgBackRest requires), 40 ms to R2 and B2; every new connection pays a
//! TCP and a TLS handshake.
//!
//! `cargo run --release -p walvault-tests --example archivers [segments]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use walvault_tests::pgbackrest::{PgBackRest, Repository, PGBACKREST_BUCKET, STANZA};
use walvault_tests::pipeline::replicator;
use walvault_tests::postgres::{hand_to_postgres_user, PgOptions, Postgres};
use walvault_tests::profile::faults::NetFault;
use walvault_tests::profile::tls::Certificate;
use walvault_tests::profile::{Link, Profile, ProfileProxy};
use walvault_tests::s3s::S3sFs;
use walvault_tests::shipper::{public_tempdir, Shipper};
use walvault_tests::standins::{config_from_env, Service, Stack, AWS_KEY, REGION};
use walvault_tests::workspace_root;

const BARMAN_BUCKET: &str = "barman";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);

/// The archive_command for a started copy of the backlog.
type ArchiveCommand<'a> = Box<dyn Fn(&Postgres) -> String + 'a>;

fn main() {
    let segments: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let runtime = walvault_tests::example_runtime();
    let stack = Stack::shared();
    let s3 = S3sFs::start();
    runtime.block_on(async {
        s3.create_walvault_buckets().await;
        s3.create_buckets(&[BARMAN_BUCKET, PGBACKREST_BUCKET]).await;
    });
    let pgbackrest_sync = PgBackRest::new(false, Repository::Local);
    let pgbackrest_async = PgBackRest::new(true, Repository::Local);
    let barman = Barman::new(&s3.endpoint());

    println!("building a pgbench backlog of at least {segments} segments after a base backup …");
    let backlog = Backlog::build(segments);
    println!(
        "backlog: {} segments of 16 MiB ready ({} after the base backup)\n",
        backlog.ready.len(),
        backlog.after_backup()
    );

    let cp_dir = postgres_dir("walvault-bench-cp-");
    let walvault_env = |cluster: &str, concurrency: u32| {
        let mut env = stack.env(cluster);
        s3.redirect(&mut env);
        env.insert("WALVAULT_PUSH_CONCURRENCY".into(), concurrency.to_string());
        env
    };
    let walvault_sync = Shipper::new(&walvault_env("bench-sync", 1));
    let walvault_parallel = Shipper::new(&walvault_env("bench-parallel", 4));

    println!(
        "1. backlog drain: {} segments (PostgreSQL 15 archiver; s3s-fs for S3, local repository for pgBackRest)",
        backlog.ready.len()
    );
    print_header("archive_command");
    let drains: Vec<(&str, ArchiveCommand)> = vec![
        (
            "cp (floor)",
            Box::new(|_| format!("cp %p {}/%f", cp_dir.path().display())),
        ),
        (
            "walvault push, sync",
            Box::new(|_| walvault_sync.command_line("push %p")),
        ),
        (
            "walvault push, 4 parallel",
            Box::new(|_| walvault_parallel.command_line("push %p")),
        ),
        (
            "pgbackrest zst, sync",
            Box::new(|pg| pgbackrest_sync.archive_push(pg)),
        ),
        (
            "pgbackrest zst, async ×4",
            Box::new(|pg| pgbackrest_async.archive_push(pg)),
        ),
        (
            "barman-cloud --zstd",
            Box::new(|_| barman.archive_command()),
        ),
    ];
    for (label, command) in &drains {
        let elapsed = backlog.drain(|pg| command(pg));
        print_rate(label, elapsed, backlog.ready.len());
    }

    // The compress function's work between push and fetch: staging to R2
    // and B2 with a catalog record, here through its re-drive path.
    let replicated = runtime.block_on(async {
        let config = config_from_env(&walvault_env("bench-sync", 1));
        let replicator = replicator(&config).await;
        let started = Instant::now();
        let budget = shared::retry::RequestLimits::from_config(&config)
            .until(tokio::time::Instant::now() + DRAIN_TIMEOUT);
        let report = replicator
            .redrive(Duration::ZERO, &budget)
            .await
            .expect("replicating the staged backlog");
        assert_eq!(report.failed, 0, "replication failures: {report:?}");
        (report.replicated, started.elapsed())
    });
    println!(
        "\n(compress function, in process: {} segments replicated to R2 and B2 in {:.1} s, {:.1} segments/s)",
        replicated.0,
        replicated.1.as_secs_f64(),
        replicated.0 as f64 / replicated.1.as_secs_f64()
    );

    println!(
        "\n3. restore: recovery of the base backup replaying {} archived segments to the end of the archive",
        backlog.after_backup()
    );
    print_header("restore_command");
    let fetch = |prefetch: u32| {
        let mut env = walvault_env("bench-sync", 1);
        env.insert("WALVAULT_PREFETCH".into(), prefetch.to_string());
        Shipper::new(&env)
    };
    let (fetch_plain, fetch_prefetch) = (fetch(0), fetch(8));
    let restores: Vec<(&str, String)> = vec![
        (
            "cp (floor)",
            format!("cp {}/%f %p", cp_dir.path().display()),
        ),
        ("walvault fetch", fetch_plain.command_line("fetch %f %p")),
        (
            "walvault fetch, prefetch 8",
            fetch_prefetch.command_line("fetch %f %p"),
        ),
        ("pgbackrest archive-get", pgbackrest_sync.archive_get()),
        (
            "pgbackrest archive-get async",
            pgbackrest_async.archive_get(),
        ),
        ("barman-cloud-wal-restore", barman.restore_command()),
    ];
    for (label, command) in &restores {
        let elapsed = backlog.restore(command);
        print_rate(label, elapsed, backlog.after_backup());
    }

    let shaped = ShapedLink::start(&s3, stack);
    let shaped_env = |cluster: &str, concurrency: u32, prefetch: u32| {
        let mut env = walvault_env(cluster, concurrency);
        env.insert("WALVAULT_PREFETCH".into(), prefetch.to_string());
        shaped.redirect(&mut env);
        env
    };
    let s3_repository = Repository::S3 {
        port: shaped.pgbackrest_s3.port(),
    };
    let pgbackrest_s3_sync = PgBackRest::new(false, s3_repository);
    let pgbackrest_s3_async = PgBackRest::new(true, s3_repository);
    let shaped_sync = Shipper::new(&shaped_env("shaped-sync", 1, 0));
    let shaped_parallel = Shipper::new(&shaped_env("shaped-parallel", 4, 0));
    println!("\n{}", ShapedLink::DESCRIPTION);
    println!("\n1b. backlog drain on the link");
    print_header("archive_command");
    let shaped_drains: Vec<(&str, ArchiveCommand)> = vec![
        (
            "walvault push, sync",
            Box::new(|_| shaped_sync.command_line("push %p")),
        ),
        (
            "walvault push, 4 parallel",
            Box::new(|_| shaped_parallel.command_line("push %p")),
        ),
        (
            "pgbackrest zst S3, sync",
            Box::new(|pg| pgbackrest_s3_sync.archive_push(pg)),
        ),
        (
            "pgbackrest zst S3, async ×4",
            Box::new(|pg| pgbackrest_s3_async.archive_push(pg)),
        ),
    ];
    for (label, command) in &shaped_drains {
        let requests = shaped.requests();
        let elapsed = backlog.drain(|pg| command(pg));
        print_rate_and_requests(
            label,
            elapsed,
            backlog.ready.len(),
            shaped.requests() - requests,
        );
    }

    println!("\n3b. restore on the link (the archive of the sync rows above)");
    print_header("restore_command");
    let (shaped_fetch, shaped_prefetch) = (
        Shipper::new(&shaped_env("bench-sync", 1, 0)),
        Shipper::new(&shaped_env("bench-sync", 1, 8)),
    );
    let shaped_restores: Vec<(&str, String)> = vec![
        (
            "cp (floor, no link)",
            format!("cp {}/%f %p", cp_dir.path().display()),
        ),
        ("walvault fetch", shaped_fetch.command_line("fetch %f %p")),
        (
            "walvault fetch, prefetch 8",
            shaped_prefetch.command_line("fetch %f %p"),
        ),
        (
            "pgbackrest archive-get S3",
            pgbackrest_s3_sync.archive_get(),
        ),
        (
            "pgbackrest archive-get S3 async",
            pgbackrest_s3_async.archive_get(),
        ),
    ];
    let mut healthy_prefetch = None;
    for (label, command) in &shaped_restores {
        let requests = shaped.requests();
        let elapsed = backlog.restore(command);
        if command == &shaped_prefetch.command_line("fetch %f %p") {
            healthy_prefetch = Some(elapsed);
        }
        print_rate_and_requests(
            label,
            elapsed,
            backlog.after_backup(),
            shaped.requests() - requests,
        );
    }
    // The same recovery with R2, the first provider asked, accepting every
    // request and never answering.
    shaped.r2.faults().on(NetFault::Hang, None, None);
    let requests = shaped.requests();
    let hung = backlog.restore(&shaped_prefetch.command_line("fetch %f %p"));
    shaped.r2.faults().clear();
    print_rate_and_requests(
        "walvault fetch, prefetch 8, R2 hung",
        hung,
        backlog.after_backup(),
        shaped.requests() - requests,
    );
    if let Some(healthy) = healthy_prefetch {
        println!(
            "recovery with R2 hung / with both healthy (prefetch 8): {:.2}×",
            hung.as_secs_f64() / healthy.as_secs_f64()
        );
    }
}

/// Profile proxies that add only a link, in front of the benchmark's
/// stand-ins.
struct ShapedLink {
    staging: ProfileProxy,
    catalog: ProfileProxy,
    r2: ProfileProxy,
    b2: ProfileProxy,
    pgbackrest_s3: ProfileProxy,
    _certificate_dir: TempDir,
}

impl ShapedLink {
    const DESCRIPTION: &str = "on a realistic link: 20 ms round trip and 1 Gbit/s to staging, the catalog and \
        pgBackRest's S3 (HTTPS), 40 ms and 1 Gbit/s to R2 and B2; TCP and TLS handshakes on every new connection";

    fn start(s3: &S3sFs, stack: &Stack) -> ShapedLink {
        let near = Link::https(Duration::from_millis(20), 1000);
        let far = Link::https(Duration::from_millis(40), 1000);
        let plain = |link| {
            let proxy = ProfileProxy::start(Profile::Plain, s3.port());
            proxy.set_link(link);
            proxy
        };
        let catalog = stack.private_proxy(Service::DynamoDb);
        catalog.set_link(near);
        let certificate_dir = public_tempdir("walvault-bench-tls-");
        let certificate = Certificate::self_signed(certificate_dir.path());
        let pgbackrest_s3 = ProfileProxy::start_tls(Profile::Plain, s3.port(), &certificate);
        pgbackrest_s3.set_link(near);
        ShapedLink {
            staging: plain(near),
            catalog,
            r2: plain(far),
            b2: plain(far),
            pgbackrest_s3,
            _certificate_dir: certificate_dir,
        }
    }

    /// Points walvault's stores and catalog at the proxies.
    fn redirect(&self, env: &mut BTreeMap<String, String>) {
        for (store, proxy) in [
            ("STAGING", &self.staging),
            ("R2", &self.r2),
            ("B2", &self.b2),
            ("DYNAMODB", &self.catalog),
        ] {
            env.insert(format!("WALVAULT_{store}_ENDPOINT"), proxy.endpoint());
        }
    }

    /// Requests through every proxy so far.
    fn requests(&self) -> u64 {
        [
            &self.staging,
            &self.catalog,
            &self.r2,
            &self.b2,
            &self.pgbackrest_s3,
        ]
        .iter()
        .map(|p| p.requests())
        .sum()
    }
}

/// A stopped cluster whose pg_wal holds a backlog of ready segments, and a
/// base backup taken before the backlog's pgbench run.
struct Backlog {
    source: Postgres,
    backup: PathBuf,
    /// Ready segment names, sorted.
    ready: Vec<String>,
    /// The segment the base backup starts in.
    backup_start: String,
    /// `sum(abalance)` of pgbench_accounts at the end: what every recovery
    /// must reproduce.
    checksum: String,
}

impl Backlog {
    fn build(segments: usize) -> Backlog {
        let mut source = Postgres::start(PgOptions {
            archive_command: Some(String::new()),
            extra_conf: vec![
                "max_wal_size = 8GB".into(),
                "checkpoint_timeout = 1h".into(),
            ],
            ..PgOptions::default()
        });
        source.pgbench(10, 0);
        let backup = source.scratch("backup").join("base");
        let label = source.base_backup(&backup);
        let backup_start = label
            .lines()
            .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
            .and_then(|l| l.split("(file ").nth(1))
            .map(|f| f.trim_end_matches(')').to_owned())
            .expect("backup_label names its start segment");
        let started = Instant::now();
        let replayable = |ready: &[String]| ready.iter().filter(|s| **s >= backup_start).count();
        while replayable(&ready_segments(&source.pg_wal())) < segments {
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "the workload did not produce {segments} segments in 30 minutes"
            );
            source.pgbench_for(2, Duration::from_secs(5));
        }
        source.switch_wal();
        let checksum = source.sql("SELECT sum(abalance) FROM pgbench_accounts");
        source.stop();
        let ready = ready_segments(&source.pg_wal());
        Backlog {
            source,
            backup,
            ready,
            backup_start,
            checksum,
        }
    }

    fn after_backup(&self) -> usize {
        self.ready
            .iter()
            .filter(|s| **s >= self.backup_start)
            .count()
    }

    /// Starts a copy of the backlog with archiving off, switches
    /// `command` on, and times the archiver until the backlog is archived.
    fn drain(&self, command: impl FnOnce(&Postgres) -> String) -> Duration {
        let pg = Postgres::start_copy(
            &self.source.data_dir(),
            &["archive_command = ''".to_owned()],
        );
        let command = command(&pg);
        pg.sql(&format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            command.replace('\'', "''")
        ));
        let started = Instant::now();
        pg.sql("SELECT pg_reload_conf()");
        let last = self.ready.last().expect("a backlog");
        pg.wait_archived(last, DRAIN_TIMEOUT);
        let elapsed = started.elapsed();
        let failed = pg.sql("SELECT failed_count FROM pg_stat_archiver");
        assert_eq!(failed, "0", "archive_command failed:\n{}", pg.log_tail());
        elapsed
    }

    /// Recovers the base backup through `restore_command` to the end of
    /// the archive; the time until promotion.
    fn restore(&self, restore_command: &str) -> Duration {
        let started = Instant::now();
        let pg = Postgres::recover(&self.backup, restore_command, &[]);
        pg.wait_promoted(DRAIN_TIMEOUT);
        let elapsed = started.elapsed();
        let checksum = pg.sql("SELECT sum(abalance) FROM pgbench_accounts");
        assert_eq!(
            checksum,
            self.checksum,
            "recovery through {restore_command} did not reproduce the source:\n{}",
            pg.log_tail()
        );
        elapsed
    }
}

fn ready_segments(pg_wal: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pg_wal.join("archive_status"))
        .expect("reading archive_status")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".ready"))
                .filter(|n| n.len() == 24)
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// barman-cloud from PyPI (barman 3.19.1 in a venv made with Debian's
/// python), against the s3s-fs bucket.
struct Barman {
    bin: PathBuf,
    endpoint: String,
}

impl Barman {
    fn new(endpoint: &str) -> Barman {
        let bin = workspace_root().join(".bench/venv/bin");
        installed(&bin.join("barman-cloud-wal-archive"));
        Barman {
            bin,
            endpoint: endpoint.to_owned(),
        }
    }

    fn env(&self) -> String {
        let env = BTreeMap::from([
            ("AWS_ACCESS_KEY_ID", AWS_KEY.0),
            ("AWS_SECRET_ACCESS_KEY", AWS_KEY.1),
            ("AWS_DEFAULT_REGION", REGION),
        ]);
        let pairs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("env {}", pairs.join(" "))
    }

    fn archive_command(&self) -> String {
        self.command("barman-cloud-wal-archive --zstd", "%p")
    }

    fn restore_command(&self) -> String {
        self.command("barman-cloud-wal-restore", "%f %p")
    }

    fn command(&self, program_and_options: &str, files: &str) -> String {
        format!(
            "{} {}/{program_and_options} --endpoint-url {} s3://{BARMAN_BUCKET}/wal {STANZA} {files}",
            self.env(),
            self.bin.display(),
            self.endpoint
        )
    }
}

/// Stops the benchmark before any work if a compared tool is missing.
fn installed(tool: &Path) {
    assert!(
        tool.exists(),
        "{} is missing: run `make bench`, which installs the benchmarked tools",
        tool.display()
    );
}

/// A temporary directory the `postgres` user owns.
fn postgres_dir(prefix: &str) -> TempDir {
    let dir = public_tempdir(prefix);
    hand_to_postgres_user(dir.path());
    dir
}

fn print_header(what: &str) {
    println!("{what:<32} {:>10} {:>12}", "s/segment", "segments/s");
}

fn print_rate(label: &str, elapsed: Duration, segments: usize) {
    println!("{}", rate(label, elapsed, segments));
}

/// The rate, and the requests the proxies saw per segment.
fn print_rate_and_requests(label: &str, elapsed: Duration, segments: usize, requests: u64) {
    println!(
        "{} {:>14.1} requests/segment",
        rate(label, elapsed, segments),
        requests as f64 / segments as f64
    );
}

fn rate(label: &str, elapsed: Duration, segments: usize) -> String {
    let secs = elapsed.as_secs_f64();
    format!(
        "{label:<32} {:>10.3} {:>12.1}",
        secs / segments as f64,
        segments as f64 / secs
    )
}
