//! pgBackRest, the baseline the benchmarks compare walvault with: a
//! configuration per run (local or S3 repository, sync or async archiving,
//! zstd), and the command lines of its archive, backup and restore.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::postgres::{as_pg_user, hand_to_postgres_user, Postgres};
use crate::process::run_checked;
use crate::shipper::public_tempdir;
use crate::standins::{AWS_KEY, REGION};

pub const PGBACKREST: &str = "/usr/bin/pgbackrest";
pub const STANZA: &str = "bench";
/// The bucket of S3 repositories, on the benchmarks' S3 server.
pub const PGBACKREST_BUCKET: &str = "pgbackrest";

/// Where pgBackRest keeps its repository.
#[derive(Clone, Copy)]
pub enum Repository {
    Local,
    /// The benchmark's S3 bucket behind the HTTPS proxy on `port`.
    S3 {
        port: u16,
    },
}

/// pgBackRest with zstd, sync or async.
pub struct PgBackRest {
    dir: TempDir,
    archive_async: bool,
    repository: Repository,
}

impl PgBackRest {
    pub fn new(archive_async: bool, repository: Repository) -> PgBackRest {
        assert!(
            Path::new(PGBACKREST).exists(),
            "{PGBACKREST} is missing: run `make bench`, which installs the benchmarked tools"
        );
        let dir = public_tempdir("walvault-bench-pgbackrest-");
        hand_to_postgres_user(dir.path());
        PgBackRest {
            dir,
            archive_async,
            repository,
        }
    }

    /// Writes the configuration for `pg` and creates the stanza.
    pub fn stanza_create(&self, pg: &Postgres) {
        self.write_config(&pg.data_dir(), &pg.socket_dir(), pg.port());
        run_checked(&mut self.command(&["stanza-create"]));
    }

    /// The archive_command for `pg` (configured and stanza created first).
    pub fn archive_push(&self, pg: &Postgres) -> String {
        self.stanza_create(pg);
        format!(
            "{PGBACKREST} --config={} --stanza={STANZA} archive-push %p",
            self.config_path().display()
        )
    }

    /// restore_command: pg1-path is the recovering cluster's data
    /// directory, where PostgreSQL runs the command.
    pub fn archive_get(&self) -> String {
        format!(
            "{PGBACKREST} --config={} --stanza={STANZA} --pg1-path=\"$PWD\" archive-get %f \"%p\"",
            self.config_path().display()
        )
    }

    /// `pgbackrest <args…>` as the `postgres` user, with this configuration.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = as_pg_user(PGBACKREST);
        command
            .arg(format!("--config={}", self.config_path().display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args);
        command
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("pgbackrest.conf")
    }

    fn write_config(&self, data: &Path, socket: &Path, port: u16) {
        let dir = self.dir.path();
        let repository = match self.repository {
            Repository::Local => format!("repo1-path={}\n", dir.join("repo").display()),
            // One bucket, a short path per configuration (sync and async
            // each have their stanza; s3s-fs turns a multipart upload's
            // key into a file name, which must stay under 255 bytes).
            Repository::S3 { port } => format!(
                "repo1-type=s3\nrepo1-path=/{path}\nrepo1-s3-bucket={PGBACKREST_BUCKET}\n\
                 repo1-s3-endpoint=127.0.0.1\nrepo1-storage-port={port}\nrepo1-s3-region={REGION}\n\
                 repo1-s3-key={key}\nrepo1-s3-key-secret={secret}\nrepo1-s3-uri-style=path\n\
                 repo1-storage-verify-tls=n\n",
                path = if self.archive_async { "async" } else { "sync" },
                key = AWS_KEY.0,
                secret = AWS_KEY.1,
            ),
        };
        let text = format!(
            "[global]\n{repository}spool-path={spool}\nlock-path={lock}\nlog-path={log}\n\
             log-level-console=off\nlog-level-file=warn\ncompress-type=zst\ncompress-level=3\n\
             archive-async={async_}\nprocess-max=4\nstart-fast=y\n\n\
             [{STANZA}]\npg1-path={data}\npg1-socket-path={socket}\npg1-port={port}\npg1-user=postgres\n",
            spool = dir.join("spool").display(),
            lock = dir.join("lock").display(),
            log = dir.join("log").display(),
            async_ = if self.archive_async { "y" } else { "n" },
            data = data.display(),
            socket = socket.display(),
        );
        std::fs::write(self.config_path(), text).expect("writing pgbackrest.conf");
        hand_to_postgres_user(dir);
    }
}
