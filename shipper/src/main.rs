//! `walvault`, on the database host: PostgreSQL's archive_command
//! (`walvault push %p`) and restore_command (`walvault fetch %f %p`), base
//! backups (`backup`), restores (`restore`), the recovery drill
//! (`drill`), the archive's state (`status`) and its check (`verify`).
//! Parses arguments and configuration, and hands each command to its
//! module in `command/`.

mod command;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shared::backup::name::BackupId;
use shared::backup::target::{parse_time, Target};
use shared::config::Config;
use shared::provider::Provider;
use shared::status::health::Thresholds;
use shared::wal::Lsn;

use walvault::exit::{
    BACKUP_USAGE, DRILL_USAGE, FETCH_LOCAL_ERROR, PUSH_USAGE, RESTORE_USAGE, STATUS_UNKNOWN,
    VERIFY_USAGE,
};

const DEFAULT_CONFIG: &str = "/etc/walvault/walvault.toml";

#[derive(Parser)]
#[command(
    name = "walvault",
    version,
    about = "Continuous PostgreSQL archiving to R2 and B2: WAL, base backups, restore, drills"
)]
struct Cli {
    /// TOML configuration file (default: /etc/walvault/walvault.toml if it exists).
    #[arg(long, global = true, env = "WALVAULT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// archive_command: store one WAL file in the staging bucket (`walvault push %p`).
    Push {
        /// Path of the WAL file, as PostgreSQL's %p gives it.
        path: PathBuf,
    },
    /// restore_command: fetch one WAL file, verified (`walvault fetch %f %p`).
    Fetch {
        /// Name of the WAL file (%f).
        wal_file: String,
        /// Where to write it (%p).
        dest: PathBuf,
    },
    /// Fetches the segments after WAL_FILE into the prefetch directory
    /// (started by `fetch` in the background).
    #[command(hide = true)]
    Prefetch { wal_file: String, segment_size: u64 },
    /// Takes a base backup of the running cluster into the archive.
    Backup {
        /// libpq connection string for pg_basebackup (default: the PG*
        /// environment variables).
        #[arg(long)]
        dbname: Option<String>,
        /// Wait for a spread checkpoint instead of asking for an immediate one.
        #[arg(long)]
        spread_checkpoint: bool,
    },
    /// Restores a base backup into an empty directory, ready to recover to a target.
    Restore {
        /// The data directory to create (empty or absent).
        #[arg(long = "to")]
        dir: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
        /// Recover along this timeline (default: the latest).
        #[arg(long)]
        timeline: Option<u32>,
        /// The provider to read first (the other is the fallback).
        #[arg(long = "from", value_parser = parse_provider)]
        first_provider: Option<Provider>,
        /// The restore_command to write (default: this walvault's fetch).
        #[arg(long)]
        restore_command: Option<String>,
        /// Choose and explain, download nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restores, recovers with a throw-away server, checks, cleans up, reports.
    Drill {
        #[command(flatten)]
        target: TargetArgs,
        /// SQL checks, one query a line, each must return true.
        #[arg(long)]
        checks: Option<PathBuf>,
        /// The database role the checks run as.
        #[arg(long, default_value = "postgres")]
        user: String,
        /// Where the scratch directory goes (default: the spool directory).
        #[arg(long)]
        scratch: Option<PathBuf>,
        /// How long recovery may take, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Keep the scratch directory for inspection.
        #[arg(long)]
        keep: bool,
        /// The report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// The restore_command the throw-away server uses (default: this walvault's fetch).
        #[arg(long)]
        restore_command: Option<String>,
    },
    /// Writes a new identity for sealed copies (mode 0600, never over a
    /// file) and prints its public recipient, for WALVAULT_RECIPIENTS.
    Keygen {
        /// The identity file to create.
        #[arg(long = "out")]
        out: PathBuf,
    },
    /// The archive's state in one screen: recoverable window, archiving
    /// health, replication, backups, retention, the last drill. Exits 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN (monitoring-plugin convention).
    Status {
        /// WARNING when the newest archived segment is older (the RPO now).
        #[arg(long, default_value = "1h", value_parser = command::verify::parse_age)]
        rpo_warn: Duration,
        /// CRITICAL when the newest archived segment is older.
        #[arg(long, default_value = "4h", value_parser = command::verify::parse_age)]
        rpo_crit: Duration,
        /// WARNING when a file has waited in staging longer.
        #[arg(long, default_value = "15m", value_parser = command::verify::parse_age)]
        staging_warn: Duration,
        /// CRITICAL when a file has waited in staging longer.
        #[arg(long, default_value = "1h", value_parser = command::verify::parse_age)]
        staging_crit: Duration,
        /// WARNING from this many files not on every provider after 15 minutes.
        #[arg(long, default_value_t = 1)]
        partial_warn: u64,
        /// CRITICAL from this many.
        #[arg(long, default_value_t = 30)]
        partial_crit: u64,
        /// WARNING when the newest complete base backup is older.
        #[arg(long, default_value = "8d", value_parser = command::verify::parse_age)]
        backup_warn: Duration,
        /// CRITICAL when it is older.
        #[arg(long, default_value = "15d", value_parser = command::verify::parse_age)]
        backup_crit: Duration,
        /// R2's storage price, USD per GB-month, for the cost estimate.
        #[arg(long, default_value_t = command::status::R2_PRICE)]
        r2_price: f64,
        /// B2's storage price, USD per GB-month.
        #[arg(long, default_value_t = command::status::B2_PRICE)]
        b2_price: f64,
        /// The report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Checks every archived file on every provider against the catalog.
    Verify {
        /// Download every copy and check the sha256 of its raw bytes
        /// (default: a HEAD: presence, size and ETag).
        #[arg(long)]
        deep: bool,
        /// Copy missing or damaged replicas from a verified one, and record
        /// them (needs write keys: not the database host's).
        #[arg(long)]
        repair: bool,
        /// Only files archived since: an age (30m, 12h, 7d) or a time (RFC 3339).
        #[arg(long, value_parser = command::verify::parse_since)]
        since: Option<command::verify::Since>,
        /// Only WAL files of this timeline.
        #[arg(long)]
        timeline: Option<u32>,
        /// Files checked at once, each on every provider at once (default:
        /// WALVAULT_VERIFY_CONCURRENCY, 32).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=512))]
        jobs: Option<u16>,
        /// The report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct TargetArgs {
    /// Recover to this time (RFC 3339, e.g. 2026-11-27T10:15:00Z).
    #[arg(long, value_parser = parse_time, conflicts_with_all = ["lsn", "latest"])]
    time: Option<u64>,
    /// Recover to this WAL position (e.g. 0/3000028).
    #[arg(long, value_parser = parse_lsn, conflicts_with = "latest")]
    lsn: Option<Lsn>,
    /// Recover to the end of the archive (the default).
    #[arg(long)]
    latest: bool,
    /// Use this backup (default: the newest that can reach the target).
    #[arg(long, value_parser = parse_backup_id)]
    backup: Option<BackupId>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        match (self.time, self.lsn) {
            (Some(t), _) => Target::Time(t),
            (_, Some(lsn)) => Target::Lsn(lsn),
            _ => Target::Latest,
        }
    }
}

fn parse_provider(s: &str) -> Result<Provider, String> {
    Provider::parse(s).ok_or_else(|| format!("{s:?} is not a provider (r2, b2)"))
}

fn parse_lsn(s: &str) -> Result<Lsn, String> {
    s.parse().map_err(|e: shared::wal::BadLsn| e.to_string())
}

fn parse_backup_id(s: &str) -> Result<BackupId, String> {
    s.parse()
        .map_err(|e: shared::backup::name::BackupNameError| e.to_string())
}

/// The usage-error exit code of the command named on the command line.
fn usage_exit() -> u8 {
    match subcommand(std::env::args().skip(1)).as_deref() {
        // restore_command: anything but 0 and 1 must stop recovery.
        Some("fetch") => FETCH_LOCAL_ERROR,
        Some("backup") => BACKUP_USAGE,
        Some("restore") => RESTORE_USAGE,
        Some("drill") => DRILL_USAGE,
        Some("verify") => VERIFY_USAGE,
        Some("status") => STATUS_UNKNOWN,
        _ => PUSH_USAGE,
    }
}

/// The first argument that is neither an option nor `--config`'s value.
fn subcommand(mut args: impl Iterator<Item = String>) -> Option<String> {
    while let Some(arg) = args.next() {
        if arg == "--config" {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WALVAULT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .without_time()
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { usage_exit() } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("walvault: cannot start the async runtime: {e}");
            return ExitCode::from(FETCH_LOCAL_ERROR);
        }
    };
    // Keys are made before any deployment: no configuration needed.
    if let Command::Keygen { out } = &cli.command {
        return ExitCode::from(command::keygen::keygen(out));
    }
    let config_file = cli
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
    let code = runtime.block_on(async {
        let config = match Config::load(config_file.as_deref()) {
            Ok(config) => config,
            Err(e) => {
                if matches!(cli.command, Command::Prefetch { .. }) {
                    return 1;
                }
                let code = usage_exit();
                eprintln!("walvault: configuration: {e} (exit {code})");
                return code;
            }
        };
        let config_file = config_file.as_deref();
        match cli.command {
            Command::Keygen { .. } => unreachable!("keygen runs before the configuration is read"),
            Command::Push { path } => command::push::push(config, &path).await,
            Command::Fetch { wal_file, dest } => {
                command::fetch::fetch(config, config_file, &wal_file, &dest).await
            }
            Command::Prefetch {
                wal_file,
                segment_size,
            } => command::fetch::prefetch_after(config, &wal_file, segment_size).await,
            Command::Backup {
                dbname,
                spread_checkpoint,
            } => {
                let options = command::backup::BackupOptions {
                    dbname,
                    spread_checkpoint,
                };
                command::backup::backup(config, options).await
            }
            Command::Restore {
                dir,
                target,
                timeline,
                first_provider,
                restore_command,
                dry_run,
            } => {
                let options = command::restore::RestoreOptions {
                    dir,
                    target: target.target(),
                    backup: target.backup,
                    timeline,
                    first_provider,
                    restore_command,
                    dry_run,
                };
                command::restore::restore(config, config_file, options).await
            }
            Command::Drill {
                target,
                checks,
                user,
                scratch,
                timeout,
                keep,
                json,
                restore_command,
            } => {
                let options = command::drill::DrillOptions {
                    target: target.target(),
                    backup: target.backup,
                    checks_file: checks,
                    user,
                    scratch,
                    timeout: Duration::from_secs(timeout),
                    keep,
                    json,
                    restore_command,
                };
                command::drill::drill(config, config_file, options).await
            }
            Command::Status {
                rpo_warn,
                rpo_crit,
                staging_warn,
                staging_crit,
                partial_warn,
                partial_crit,
                backup_warn,
                backup_crit,
                r2_price,
                b2_price,
                json,
            } => {
                let args = command::status::StatusArgs {
                    thresholds: Thresholds {
                        rpo_warn,
                        rpo_crit,
                        staging_warn,
                        staging_crit,
                        partial_warn,
                        partial_crit,
                        backup_warn,
                        backup_crit,
                    },
                    prices: [(Provider::R2, r2_price), (Provider::B2, b2_price)],
                    json,
                };
                command::status::status(config, args).await
            }
            Command::Verify {
                deep,
                repair,
                since,
                timeline,
                jobs,
                json,
            } => {
                let args = command::verify::VerifyArgs {
                    deep,
                    repair,
                    since,
                    timeline,
                    jobs: jobs.map(usize::from),
                    json,
                };
                command::verify::verify(config, args).await
            }
        }
    });
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subcommand_is_found_past_the_global_options() {
        let args = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            subcommand(args("status --rpo-warn x").into_iter()).as_deref(),
            Some("status")
        );
        assert_eq!(
            subcommand(args("--config /etc/w.toml status --json").into_iter()).as_deref(),
            Some("status")
        );
        assert_eq!(
            subcommand(args("--config=/etc/w.toml fetch a b").into_iter()).as_deref(),
            Some("fetch")
        );
        assert_eq!(subcommand(args("--config").into_iter()), None);
    }
}
