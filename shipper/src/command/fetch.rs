//! `walvault fetch %f %p`: PostgreSQL's restore_command, and the
//! prefetcher it starts in the background.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use shared::archive::fetch::Source;
use shared::archive::prefetch;
use shared::archive::spool::Spool;
use shared::config::Config;
use shared::error::chain;
use shared::wal::{SegmentSize, WalFileName};

use super::fetcher;
use walvault::exit::{fetch_exit, FETCH_LOCAL_ERROR};

pub(crate) async fn fetch(
    config: Config,
    config_file: Option<&Path>,
    wal_file: &str,
    dest: &Path,
) -> u8 {
    let started = Instant::now();
    let name: WalFileName = match wal_file.parse() {
        Ok(name) => name,
        Err(e) => {
            eprintln!("walvault fetch: {e}");
            return FETCH_LOCAL_ERROR;
        }
    };
    let prefetch_dir = Spool::new(&config.spool_dir).prefetch_dir();
    let prefetching = config.prefetch > 0
        && matches!(name, WalFileName::Segment(_))
        && prefetch_usable(&prefetch_dir);
    if prefetching {
        match prefetch::take_or_join(&prefetch_dir, &name, dest, config.request_timeout).await {
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
        // A large file streams to a temporary file beside its destination.
        Ok(fetcher) => fetcher.streaming_into(directory_of(dest).to_path_buf()),
        Err(e) => {
            eprintln!("walvault fetch: {} (exit {FETCH_LOCAL_ERROR})", chain(&e));
            return FETCH_LOCAL_ERROR;
        }
    };
    match fetcher.fetch(&name).await {
        Ok(fetched) => {
            let (source, len) = (fetched.source, fetched.len());
            if let Err(e) = fetched.persist(dest) {
                eprintln!("walvault fetch: {name}: writing {}: {e}", dest.display());
                return FETCH_LOCAL_ERROR;
            }
            report_fetch(&name, source, fetcher.requests(), started);
            if prefetching {
                spawn_prefetch(config_file, &name, len);
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

/// Whether the prefetcher can work in `dir`. When it cannot, recovery
/// still works, one store round trip slower per segment: said once (per
/// spool, until it works again), loudly, with the fix, in PostgreSQL's log.
fn prefetch_usable(dir: &Path) -> bool {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut spool = DefaultHasher::new();
    dir.hash(&mut spool);
    let reported =
        std::env::temp_dir().join(format!("walvault-prefetch-off-{:016x}", spool.finish()));
    match prefetch::lock_file_writable(dir) {
        Ok(()) => {
            let _ = std::fs::remove_file(&reported);
            true
        }
        Err(e) => {
            if std::fs::File::create_new(&reported).is_ok() {
                eprintln!(
                    "walvault fetch: WARNING: prefetch is off: its directory under the spool directory \
                     (WALVAULT_SPOOL_DIR) is not writable by this user ({e}). Recovery works, but \
                     each segment waits for a store round trip. Fix: make the spool directory \
                     writable by the user PostgreSQL runs as, or set WALVAULT_PREFETCH=0. \
                     (Said once until it works again.)"
                );
            }
            false
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

/// The directory `path` is in (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

pub(crate) async fn prefetch_after(config: Config, wal_file: &str, segment_size: u64) -> u8 {
    let (Ok(WalFileName::Segment(current)), Ok(size)) = (
        wal_file.parse::<WalFileName>(),
        SegmentSize::new(segment_size),
    ) else {
        return 1;
    };
    let dir = Spool::new(&config.spool_dir).prefetch_dir();
    // One prefetcher at a time; a busy one will be followed by the next fetch's.
    let _lock = match prefetch::lock(&dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => return 0,
        Err(_) => return 1,
    };
    let Ok(planned) = prefetch::plan(dir.clone(), current, size, config.prefetch) else {
        return 1;
    };
    let Ok(fetcher) = fetcher(&config).await else {
        return 1;
    };
    let fetcher = fetcher.streaming_into(dir);
    match planned.fetch(Arc::new(fetcher)).await {
        Ok(_) => 0,
        Err(_) => 1,
    }
}
