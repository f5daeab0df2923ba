//! `walvault`, the on-host shipper: PostgreSQL's archive_command
//! (`walvault push %p`) and restore_command (`walvault fetch %f %p`).
//! Parses arguments and configuration, calls `shared`, maps the result to
//! the documented exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use shared::archive::fetch::{Fetched, Fetcher, Source};
use shared::archive::prefetch;
use shared::archive::push::Pusher;
use shared::archive::spool::{write_atomically, Spool};
use shared::backends::{BackendError, Backends};
use shared::config::Config;
use shared::error::chain;
use shared::retry::RequestLimits;
use shared::wal::{SegmentSize, WalFileName};

use walvault::exit::{fetch_exit, push_exit, FETCH_LOCAL_ERROR, PUSH_FAILED, PUSH_USAGE};

const DEFAULT_CONFIG: &str = "/etc/walvault/walvault.toml";

#[derive(Parser)]
#[command(
    name = "walvault",
    version,
    about = "Continuous PostgreSQL WAL archiving to R2 and B2"
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
            return ExitCode::from(if !e.use_stderr() {
                0
            } else if std::env::args().nth(1).as_deref() == Some("fetch") {
                // restore_command: anything but 0 and 1 must stop recovery.
                FETCH_LOCAL_ERROR
            } else {
                PUSH_USAGE
            });
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
    let config_file = cli
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
    let code = runtime.block_on(async {
        let config = Config::load(config_file.as_deref());
        match cli.command {
            Command::Push { path } => match config {
                Ok(config) => push(config, &path).await,
                Err(e) => {
                    eprintln!("walvault push: configuration: {e} (exit {PUSH_USAGE})");
                    PUSH_USAGE
                }
            },
            Command::Fetch { wal_file, dest } => match config {
                Ok(config) => fetch(config, config_file.as_deref(), &wal_file, &dest).await,
                Err(e) => {
                    eprintln!("walvault fetch: configuration: {e} (exit {FETCH_LOCAL_ERROR})");
                    FETCH_LOCAL_ERROR
                }
            },
            Command::Prefetch {
                wal_file,
                segment_size,
            } => match config {
                Ok(config) => prefetch_after(config, &wal_file, segment_size).await,
                Err(_) => 1,
            },
        }
    });
    ExitCode::from(code)
}

async fn push(config: Config, path: &Path) -> u8 {
    let started = Instant::now();
    let backends = match Backends::connect(&config).await {
        Ok(backends) => backends,
        Err(e) => {
            eprintln!("walvault push: FAILED (exit {PUSH_FAILED}): {}", chain(&e));
            return PUSH_FAILED;
        }
    };
    let pusher = Arc::new(Pusher {
        cluster: config.cluster.clone(),
        staging: backends.staging,
        catalog: backends.catalog,
        pinned_system_identifier: config.system_identifier,
        host: host_name(),
        deadline: config.push_deadline,
        limits: RequestLimits::from_config(&config),
        spool: Spool::new(&config.spool_dir),
        concurrency: config.push_concurrency,
    });
    let result = pusher.push(path).await;
    let code = push_exit(&result);
    match result {
        Ok(outcome) => eprintln!(
            "walvault push: {} {outcome:?} in {} ms",
            path.display(),
            started.elapsed().as_millis()
        ),
        Err(e) => eprintln!("walvault push: FAILED (exit {code}): {}", chain(&e)),
    }
    code
}

/// A fetcher over every configured replica, in the configured order.
async fn fetcher(config: &Config) -> Result<Fetcher, BackendError> {
    let backends = Backends::connect(config).await?;
    Ok(Fetcher::new(
        config.cluster.clone(),
        backends.catalog,
        backends.staging,
        backends.replicas,
        RequestLimits::from_config(config),
    ))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

async fn fetch(config: Config, config_file: Option<&Path>, wal_file: &str, dest: &Path) -> u8 {
    let started = Instant::now();
    let name: WalFileName = match wal_file.parse() {
        Ok(name) => name,
        Err(e) => {
            eprintln!("walvault fetch: {e}");
            return FETCH_LOCAL_ERROR;
        }
    };
    let spool = Spool::new(&config.spool_dir);
    let prefetching = config.prefetch > 0 && matches!(name, WalFileName::Segment(_));
    if prefetching {
        match prefetch::take(&spool.prefetch_dir(), &name, dest) {
            Ok(true) => {
                report_fetch(&name, Source::Prefetched, 0, started);
                if let Ok(size) = std::fs::metadata(dest).map(|m| m.len()) {
                    spawn_prefetch(config_file, &name, size);
                }
                return 0;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(file = %name, error = %e, "cannot use the prefetch directory"),
        }
    }
    let fetcher = match fetcher(&config).await {
        Ok(fetcher) => fetcher,
        Err(e) => {
            eprintln!("walvault fetch: {} (exit {FETCH_LOCAL_ERROR})", chain(&e));
            return FETCH_LOCAL_ERROR;
        }
    };
    match fetcher.fetch(&name).await {
        Ok(Fetched { bytes, source }) => {
            if let Err(e) = write_atomically(dest, &bytes) {
                eprintln!("walvault fetch: {name}: writing {}: {e}", dest.display());
                return FETCH_LOCAL_ERROR;
            }
            report_fetch(&name, source, fetcher.requests(), started);
            if prefetching {
                spawn_prefetch(config_file, &name, bytes.len() as u64);
            }
            0
        }
        Err(e) => {
            let code = fetch_exit(&e);
            eprintln!(
                "walvault fetch: {} (exit {code}, {} store requests)",
                chain(&e),
                fetcher.requests()
            );
            code
        }
    }
}

fn report_fetch(name: &WalFileName, source: Source, requests: u32, started: Instant) {
    eprintln!(
        "walvault fetch: {name} from {source} ({requests} store requests, {} ms)",
        started.elapsed().as_millis()
    );
}

/// Starts `walvault prefetch` detached, so that this process can return to
/// PostgreSQL at once.
fn spawn_prefetch(config_file: Option<&Path>, name: &WalFileName, segment_size: u64) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = std::process::Command::new(exe);
    if let Some(file) = config_file {
        command.arg("--config").arg(file);
    }
    command
        .arg("prefetch")
        .arg(name.to_string())
        .arg(segment_size.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if let Err(e) = command.spawn() {
        tracing::warn!(error = %e, "cannot start the prefetcher");
    }
}

async fn prefetch_after(config: Config, wal_file: &str, segment_size: u64) -> u8 {
    let (Ok(WalFileName::Segment(current)), Ok(size)) = (
        wal_file.parse::<WalFileName>(),
        SegmentSize::new(segment_size),
    ) else {
        return 1;
    };
    let dir = Spool::new(&config.spool_dir).prefetch_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return 1;
    }
    // One prefetcher at a time; a busy one will be followed by the next fetch's.
    let Ok(lock) = std::fs::File::create(dir.join(".lock")) else {
        return 1;
    };
    if lock.try_lock().is_err() {
        return 0;
    }
    let Ok(fetcher) = fetcher(&config).await else {
        return 1;
    };
    match prefetch::fill(Arc::new(fetcher), dir, current, size, config.prefetch).await {
        Ok(_) => 0,
        Err(_) => 1,
    }
}
