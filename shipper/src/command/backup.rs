//! `walvault backup`: a base backup of the running cluster, streamed from
//! `pg_basebackup` into the staging bucket (see `shared::backup::take`).

use std::io::IsTerminal;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::backends::Backends;
use shared::backup::name::BackupId;
use shared::backup::pg_tools::PgTools;
use shared::backup::take::{BackupError, BackupTaker};
use shared::clock::now_millis;
use shared::config::Config;
use shared::error::chain;
use shared::retry::RequestLimits;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::host_name;
use crate::progress::{human_bytes, Progress};
use walvault::exit::{backup_exit, BACKUP_FAILED, BACKUP_POSTGRES};

/// How long one chunk's upload may keep retrying transient failures.
const CHUNK_DEADLINE: Duration = Duration::from_secs(600);

pub(crate) struct BackupOptions {
    /// A libpq connection string for `pg_basebackup --dbname`; the PG*
    /// environment variables apply when unset.
    pub dbname: Option<String>,
    /// A spread checkpoint instead of an immediate one.
    pub spread_checkpoint: bool,
}

pub(crate) async fn backup(config: Config, options: BackupOptions) -> u8 {
    let started = Instant::now();
    let started_at_ms = now_millis();
    let id = BackupId::started_at(started_at_ms / 1000);
    let backends = match Backends::connect(&config).await {
        Ok(backends) => backends,
        Err(e) => {
            eprintln!(
                "walvault backup: FAILED (exit {BACKUP_FAILED}): {}",
                chain(&e)
            );
            return BACKUP_FAILED;
        }
    };
    let taker = BackupTaker {
        cluster: config.cluster.clone(),
        staging: backends.staging,
        catalog: backends.catalog,
        pinned_system_identifier: config.system_identifier,
        host: host_name(),
        limits: RequestLimits::from_config(&config),
        chunk_deadline: CHUNK_DEADLINE,
        chunk_size: config.backup_chunk_size,
        concurrency: config.backup_concurrency,
        wal_wait: config.backup_wal_wait,
    };
    let tools = PgTools::locate(config.pg_bindir.as_deref(), None);
    if let Some(tablespaces) = extra_tablespaces(&tools, options.dbname.as_deref()) {
        return report_error(&BackupError::Tablespaces(tablespaces));
    }
    let program = tools.program("pg_basebackup");
    let mut command = tokio::process::Command::new(&program);
    // The manifest keeps PostgreSQL's default CRC32C per file, which
    // pg_verifybackup checks on restore; each chunk's sha256 already guards
    // the bytes end to end.
    command
        .args([
            "-D",
            "-",
            "-Ft",
            "-X",
            "none",
            "--progress",
            "--verbose",
            "--no-password",
        ])
        .arg(format!("--label=walvault {id}"))
        .arg(if options.spread_checkpoint {
            "--checkpoint=spread"
        } else {
            "--checkpoint=fast"
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dbname) = &options.dbname {
        command.arg(format!("--dbname={dbname}"));
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "walvault backup: cannot run {} ({e}): install PostgreSQL's client programs or set WALVAULT_PG_BINDIR (exit {BACKUP_POSTGRES})",
                program.display()
            );
            return BACKUP_POSTGRES;
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return BACKUP_POSTGRES;
    };
    let estimate = Arc::new(AtomicU64::new(0));
    let stderr_task = tokio::spawn(read_stderr(stderr, Arc::clone(&estimate)));
    eprintln!(
        "walvault backup: backup {id} of cluster {} started",
        config.cluster
    );
    let progress = Progress::new("backup", std::io::stderr().is_terminal());
    let streamed = taker
        .stream(id, stdout, &|bytes| {
            progress.update(
                bytes,
                Some(estimate.load(Ordering::Relaxed)).filter(|e| *e > 0),
            )
        })
        .await;
    progress.finish();
    let status = child.wait().await;
    let postgres_said = stderr_task.await.unwrap_or_default();
    let streamed = match (streamed, status) {
        (Ok(streamed), Ok(status)) if status.success() => streamed,
        (_, Ok(status)) if !status.success() => {
            eprintln!(
                "walvault backup: pg_basebackup failed ({status}); nothing recorded, the parts staged so far are removed by the retention sweep (exit {BACKUP_POSTGRES}):\n{}",
                postgres_said.join("\n")
            );
            return BACKUP_POSTGRES;
        }
        (Err(e), _) => return report_error(&e),
        (Ok(_), Err(e)) => {
            eprintln!("walvault backup: waiting for pg_basebackup: {e} (exit {BACKUP_POSTGRES})");
            return BACKUP_POSTGRES;
        }
        (Ok(streamed), Ok(_)) => streamed,
    };
    eprintln!(
        "walvault backup: {} streamed in {} chunks; waiting for the WAL it needs to be archived …",
        human_bytes(streamed.size),
        streamed.chunks.len()
    );
    match taker.finish(id, streamed, started_at_ms).await {
        Ok(descriptor) => {
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "walvault backup: backup {id} recorded: {} in {} chunks, {seconds:.1} s ({}/s); WAL {} to {} on timeline {}{}. It is complete once the compress function has replicated every part to R2 and B2.",
                human_bytes(descriptor.size),
                descriptor.chunks.len(),
                human_bytes((descriptor.size as f64 / seconds.max(0.001)) as u64),
                descriptor.start_lsn,
                descriptor.stop_lsn,
                descriptor.stop_timeline,
                if descriptor.from_standby { ", taken from a standby" } else { "" },
            );
            0
        }
        Err(e) => report_error(&e),
    }
}

/// The cluster's tablespaces outside the data directory, named with their
/// locations, if `psql` can tell (if it cannot, `pg_basebackup` refuses
/// them itself, less clearly).
fn extra_tablespaces(tools: &PgTools, dbname: Option<&str>) -> Option<Vec<String>> {
    let mut psql = std::process::Command::new(tools.program("psql"));
    psql.args(["-X", "-A", "-t", "-w", "-c"]).arg(
        "SELECT spcname || ' at ' || pg_tablespace_location(oid) FROM pg_tablespace \
         WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname",
    );
    if let Some(dbname) = dbname {
        psql.arg(format!("--dbname={dbname}"));
    }
    let output = psql.output().ok().filter(|o| o.status.success())?;
    let names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    (!names.is_empty()).then_some(names)
}

fn report_error(error: &BackupError) -> u8 {
    let code = backup_exit(error);
    eprintln!("walvault backup: FAILED (exit {code}): {}", chain(error));
    code
}

/// Passes pg_basebackup's messages on, keeping its size estimate (from
/// `--progress`: `1234/5678 kB`) and every line for the error report.
async fn read_stderr(stderr: tokio::process::ChildStderr, estimate: Arc<AtomicU64>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stderr);
    let mut buffer = Vec::new();
    // Progress lines end in '\r', messages in '\n'.
    while let Ok(read) = reader.read_until(b'\r', &mut buffer).await {
        if read == 0 {
            break;
        }
        for line in String::from_utf8_lossy(&buffer).split(['\r', '\n']) {
            let line = line.trim();
            if let Some(total) = progress_total(line) {
                estimate.store(total, Ordering::Relaxed);
            } else if !line.is_empty() {
                tracing::info!(target: "pg_basebackup", "{line}");
                lines.push(line.to_owned());
            }
        }
        buffer.clear();
    }
    lines
}

/// The total of a `--progress` line, in bytes.
fn progress_total(line: &str) -> Option<u64> {
    let (counts, _) = line.split_once(" kB")?;
    let (_, total) = counts.rsplit_once('/')?;
    total.trim().parse::<u64>().ok().map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_size_estimate_of_progress_lines() {
        assert_eq!(
            progress_total("22953/22953 kB (100%), 1/1 tablespace"),
            Some(22953 * 1024)
        );
        assert_eq!(progress_total("pg_basebackup: base backup completed"), None);
    }
}
