//! A throw-away PostgreSQL 15 cluster in a temporary directory, listening
//! only on a Unix socket. PostgreSQL refuses to run as root, so when the
//! tests run as root the cluster belongs to the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{free_port, run_checked, running_as_root, GuardedProcess};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PG_USER: &str = "postgres";

#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// `initdb --wal-segsize`, in MiB; PostgreSQL's default (16) if `None`.
    pub wal_segsize_mb: Option<u32>,
    /// `archive_command`; if `None`, archived files are copied into
    /// [`Postgres::archive_dir`].
    pub archive_command: Option<String>,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
}

pub struct Postgres {
    root: TempDir,
    port: u16,
    process: Option<GuardedProcess>,
}

impl Postgres {
    /// initdb, configure with `wal_level=replica` and `archive_mode=on`,
    /// start, and wait until it accepts connections.
    pub fn start(options: PgOptions) -> Postgres {
        let root = tempfile::Builder::new()
            .prefix("walvault-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        for dir in ["archive", "socket"] {
            std::fs::create_dir(root.path().join(dir)).expect("creating a PostgreSQL directory");
        }
        hand_to_postgres_user(root.path());
        let data = root.path().join("data");
        let mut initdb = as_pg_user(&format!("{PG_BIN}/initdb"));
        initdb.args(["-D"]).arg(&data).args([
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if let Some(mb) = options.wal_segsize_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        run_checked(&mut initdb);

        let archive_command = options
            .archive_command
            .clone()
            .unwrap_or_else(|| format!("cp %p {}/%f", root.path().join("archive").display()));
        let mut conf = vec![
            "listen_addresses = ''".to_owned(),
            format!(
                "unix_socket_directories = '{}'",
                root.path().join("socket").display()
            ),
            "wal_level = replica".to_owned(),
            "archive_mode = on".to_owned(),
            format!(
                "archive_command = '{}'",
                archive_command.replace('\'', "''")
            ),
            "max_wal_senders = 4".to_owned(),
            "fsync = off".to_owned(),
            "shared_buffers = 32MB".to_owned(),
            "max_wal_size = 1GB".to_owned(),
            "log_min_messages = warning".to_owned(),
        ];
        conf.extend(options.extra_conf.iter().cloned());
        append_conf(&data, "walvault test harness", &conf);

        let mut pg = Postgres {
            root,
            port: 0,
            process: None,
        };
        pg.launch();
        pg
    }

    /// A new cluster recovered from `base_backup` (a `pg_basebackup`
    /// directory), with `restore_command` and any `recovery_conf` lines
    /// (e.g. `recovery_target_time`). Starts it and waits until it accepts
    /// connections; recovery may still be running.
    pub fn recover(
        base_backup: &Path,
        restore_command: &str,
        recovery_conf: &[String],
    ) -> Postgres {
        let mut conf = vec![
            "archive_mode = off".to_owned(),
            format!(
                "restore_command = '{}'",
                restore_command.replace('\'', "''")
            ),
        ];
        conf.extend(recovery_conf.iter().cloned());
        Postgres::from_copy(base_backup, "walvault recovery", &conf, true)
    }

    /// A new cluster started from a copy of the stopped cluster at `data`,
    /// its WAL and archive status included, with `conf` lines appended:
    /// the same archiving backlog, once for each archiver under test.
    pub fn start_copy(data: &Path, conf: &[String]) -> Postgres {
        Postgres::from_copy(data, "walvault copy", conf, false)
    }

    fn from_copy(source: &Path, heading: &str, conf: &[String], recover: bool) -> Postgres {
        let vacant = Postgres::vacant();
        run_checked(
            Command::new("cp")
                .arg("-a")
                .arg(source)
                .arg(vacant.data_dir()),
        );
        if recover {
            std::fs::write(vacant.data_dir().join("recovery.signal"), "").expect("recovery.signal");
        }
        vacant.start(heading, conf)
    }

    /// A cluster's directories with no data directory yet: for a tool that
    /// restores one in place ([`Vacant::data_dir`]), then [`Vacant::start`].
    pub fn vacant() -> Vacant {
        let root = tempfile::Builder::new()
            .prefix("walvault-pg-copy-")
            .tempdir()
            .expect("temp dir for the cluster");
        std::fs::create_dir(root.path().join("socket")).expect("socket dir");
        std::fs::create_dir(root.path().join("archive")).expect("archive dir");
        hand_to_postgres_user(root.path());
        Vacant { root }
    }

    /// Waits until recovery has ended and the cluster accepts writes.
    pub fn wait_promoted(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.sql("SELECT pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "still in recovery after {timeout:?}; log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server (fast shutdown), keeping its directories.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// The end of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(GuardedProcess::log_tail)
            .unwrap_or_default()
    }

    fn launch(&mut self) {
        for _attempt in 0..5 {
            let port = free_port();
            let log = self.root.path().join(format!("postgres-{port}.log"));
            let args = vec![
                "-D".to_owned(),
                self.data_dir().display().to_string(),
                "-p".to_owned(),
                port.to_string(),
            ];
            let run_as = running_as_root().then_some(PG_USER);
            // SIGINT: PostgreSQL's fast shutdown.
            let mut process = GuardedProcess::spawn(
                "postgres",
                Path::new(&format!("{PG_BIN}/postgres")),
                &args,
                &log,
                run_as,
                "INT",
            );
            self.port = port;
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !process.has_exited() {
                let ready = Command::new(format!("{PG_BIN}/pg_isready"))
                    .args(["-q", "-h"])
                    .arg(self.socket_dir())
                    .args(["-p", &port.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                if ready {
                    self.process = Some(process);
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!(
                "PostgreSQL did not start on port {port}:\n{}",
                process.log_tail()
            );
        }
        panic!("PostgreSQL failed to start five times");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn pg_wal(&self) -> PathBuf {
        self.data_dir().join("pg_wal")
    }

    /// Where the default archive_command copies archived files.
    pub fn archive_dir(&self) -> PathBuf {
        self.root.path().join("archive")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().join("socket")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL and returns psql's unaligned, tuples-only output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        let mut psql = Command::new(format!("{PG_BIN}/psql"));
        psql.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            PG_USER,
            "-d",
            "postgres",
            "-h",
        ])
        .arg(self.socket_dir())
        .args(["-p", &self.port.to_string(), "-c", sql]);
        run_checked(&mut psql).trim().to_owned()
    }

    pub fn system_identifier(&self) -> u64 {
        self.sql("SELECT system_identifier FROM pg_control_system()")
            .parse()
            .expect("system identifier is a number")
    }

    /// `pgbench -i` at `scale`, then `transactions` transactions on one client.
    pub fn pgbench(&self, scale: u32, transactions: u32) {
        run_checked(self.pgbench_command().args([
            "-i",
            "-q",
            "-s",
            &scale.to_string(),
            "postgres",
        ]));
        if transactions > 0 {
            run_checked(self.pgbench_command().args([
                "-n",
                "-c",
                "1",
                "-t",
                &transactions.to_string(),
                "postgres",
            ]));
        }
    }

    /// The pgbench workload on an initialized database: `clients` clients
    /// for `duration`.
    pub fn pgbench_for(&self, clients: u32, duration: Duration) {
        run_checked(self.pgbench_command().args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.to_string(),
            "-T",
            &duration.as_secs().max(1).to_string(),
            "postgres",
        ]));
    }

    fn pgbench_command(&self) -> Command {
        let mut command = Command::new(format!("{PG_BIN}/pgbench"));
        command
            .args(["-U", PG_USER, "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string()]);
        command
    }

    /// Takes a base backup with `pg_basebackup` into `dest` (which must not
    /// exist yet) and returns the backup label.
    pub fn base_backup(&self, dest: &Path) -> String {
        let mut backup = as_pg_user(&format!("{PG_BIN}/pg_basebackup"));
        backup
            .args(["-U", PG_USER, "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "--checkpoint=fast",
                "--no-sync",
                "-X",
                "stream",
                "-D",
            ])
            .arg(dest);
        run_checked(&mut backup);
        std::fs::read_to_string(dest.join("backup_label")).expect("reading backup_label")
    }

    /// A hot standby of this cluster, streaming from it (`pg_basebackup -R`).
    pub fn start_standby(&self) -> Postgres {
        let dest = self.scratch("standby").join("data");
        let mut backup = as_pg_user(&format!("{PG_BIN}/pg_basebackup"));
        backup
            .args(["-U", PG_USER, "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string()])
            .args(["--checkpoint=fast", "--no-sync", "-X", "stream", "-R", "-D"])
            .arg(&dest);
        run_checked(&mut backup);
        Postgres::from_copy(
            &dest,
            "walvault standby",
            &["hot_standby = on".to_owned()],
            false,
        )
    }

    /// A directory the `postgres` user may write into, removed with the cluster.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join("scratch").join(name);
        std::fs::create_dir_all(&dir).expect("creating a scratch dir");
        hand_to_postgres_user(&self.root.path().join("scratch"));
        dir
    }

    /// Switches to a new segment and returns the name of the one just closed.
    pub fn switch_wal(&self) -> String {
        self.sql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Waits until the archiver has handed `file` to archive_command
    /// successfully, failing the test after `timeout`.
    pub fn wait_archived(&self, file: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.sql(&format!(
                "SELECT last_archived_wal >= '{file}' FROM pg_stat_archiver"
            ));
            if done == "t" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{file} not archived within {timeout:?}: {}",
                self.sql("SELECT row_to_json(a) FROM pg_stat_archiver a")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directories of a cluster whose data directory is still to come.
pub struct Vacant {
    root: TempDir,
}

impl Vacant {
    /// Where the data directory goes (absent until something puts it there).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Starts the cluster in its data directory, with `conf` lines appended
    /// to postgresql.conf.
    pub fn start(self, heading: &str, conf: &[String]) -> Postgres {
        let mut lines = vec![format!(
            "unix_socket_directories = '{}'",
            self.root.path().join("socket").display()
        )];
        lines.extend(conf.iter().cloned());
        append_conf(&self.data_dir(), heading, &lines);
        hand_to_postgres_user(self.root.path());
        let mut pg = Postgres {
            root: self.root,
            port: 0,
            process: None,
        };
        pg.launch();
        pg
    }
}

/// Appends `lines` to postgresql.conf under a comment; later lines win.
fn append_conf(data: &Path, heading: &str, lines: &[String]) {
    let conf_path = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf_path).expect("reading postgresql.conf");
    text.push_str(&format!("\n# {heading}\n"));
    text.push_str(&lines.join("\n"));
    text.push('\n');
    std::fs::write(&conf_path, text).expect("writing postgresql.conf");
}

/// `program` as the `postgres` user when we are root (`runuser`).
pub fn as_pg_user(program: &str) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// Gives the `postgres` user the directory tree, when we are root.
pub fn hand_to_postgres_user(dir: &Path) {
    if !running_as_root() {
        return;
    }
    run_checked(
        Command::new("chown")
            .args(["-R", &format!("{PG_USER}:{PG_USER}")])
            .arg(dir),
    );
}
