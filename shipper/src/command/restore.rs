//! `walvault restore --to DIR`: a data directory ready to recover to a
//! target, from a base backup and the archive (see `shared::backup::restore`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shared::backup::name::BackupId;
use shared::backup::pg_tools::PgTools;
use shared::backup::restore::{
    check_empty, verify_with_postgres, write_recovery_settings, RecoverySettings, RestoreError,
    RestorePlan, Restorer,
};
use shared::backup::target::{postgres_time, Target};
use shared::config::Config;
use shared::error::chain;
use shared::provider::Provider;

use super::fetcher_from;
use crate::progress::{human_bytes, Progress};
use walvault::exit::{restore_exit, RESTORE_LOCAL};

pub(crate) struct RestoreOptions {
    pub dir: PathBuf,
    pub target: Target,
    pub backup: Option<BackupId>,
    pub timeline: Option<u32>,
    pub first_provider: Option<Provider>,
    /// The restore_command to write; by default this walvault, with the
    /// same configuration file.
    pub restore_command: Option<String>,
    /// Decide and explain, download nothing.
    pub dry_run: bool,
}

pub(crate) async fn restore(
    config: Config,
    config_file: Option<&Path>,
    options: RestoreOptions,
) -> u8 {
    if let Err(e) = check_empty(&options.dir) {
        return report(&e);
    }
    let restorer = match restorer(&config, options.first_provider).await {
        Ok(restorer) => restorer,
        Err(code) => return code,
    };
    let plan = match restorer.plan(&options.target, options.backup).await {
        Ok(plan) => plan,
        Err(e) => return report(&e),
    };
    describe(&plan, &options.target);
    if options.dry_run {
        eprintln!("walvault restore: dry run: nothing downloaded");
        return 0;
    }
    let progress = Progress::new("restore", std::io::stderr().is_terminal());
    let downloaded = restorer
        .download(&plan, &options.dir, &|done, total| {
            progress.update(done, Some(total))
        })
        .await;
    progress.finish();
    let downloaded = match downloaded {
        Ok(downloaded) => downloaded,
        Err(e) => return report(&e),
    };
    eprintln!(
        "walvault restore: {} in {} chunks written to {} (served by: {})",
        human_bytes(downloaded.bytes),
        downloaded.chunks,
        options.dir.display(),
        downloaded
            .sources
            .iter()
            .map(|(source, n)| format!("{source} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if downloaded.fallbacks > 0 {
        eprintln!(
            "walvault restore: WARNING: {} chunks came from the second provider: the first one's copy failed or was corrupt (logged above); `walvault verify` finds and repairs such copies",
            downloaded.fallbacks
        );
    }
    let tools = PgTools::locate(config.pg_bindir.as_deref(), Some(plan.summary.pg_version));
    if let Err(e) = verify_with_postgres(&tools.program("pg_verifybackup"), &options.dir) {
        return report(&e);
    }
    eprintln!("walvault restore: pg_verifybackup: every file matches the backup manifest");
    let restore_command = options
        .restore_command
        .clone()
        .unwrap_or_else(|| default_restore_command(config_file));
    if options.restore_command.is_none() && config_file.is_none() {
        eprintln!("walvault restore: WARNING: walvault is configured by WALVAULT_* environment variables; the server's environment must carry them too, or pass --restore-command");
    }
    let settings = RecoverySettings {
        restore_command: &restore_command,
        target: options.target,
        timeline: options.timeline,
        action: "promote",
        backup: plan.backup.id,
    };
    match write_recovery_settings(&options.dir, &settings) {
        Ok(true) => eprintln!("walvault restore: the backup was taken from a standby: its standby.signal is removed, so that the server recovers to the target and promotes"),
        Ok(false) => {}
        Err(e) => {
            eprintln!("walvault restore: writing the recovery settings: {e} (exit {RESTORE_LOCAL})");
            return RESTORE_LOCAL;
        }
    }
    eprintln!(
        "walvault restore: ready. Start the server to recover to {}:\n    {} -D {} start",
        options.target,
        tools.program("pg_ctl").display(),
        options.dir.display()
    );
    0
}

pub(crate) async fn restorer(config: &Config, first: Option<Provider>) -> Result<Restorer, u8> {
    match fetcher_from(config, first).await {
        Ok(fetcher) => Ok(Restorer {
            cluster: config.cluster.clone(),
            catalog: Arc::clone(&fetcher.catalog),
            fetcher: Arc::new(fetcher),
            read_ahead: config.restore_read_ahead,
        }),
        Err(e) => {
            eprintln!("walvault restore: {} (exit {RESTORE_LOCAL})", chain(&e));
            Err(RESTORE_LOCAL)
        }
    }
}

/// This walvault's `fetch`, with the configuration file it was given.
pub(crate) fn default_restore_command(config_file: Option<&Path>) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "walvault".into());
    match config_file {
        Some(file) => format!("{exe} --config {} fetch %f %p", file.display()),
        None => format!("{exe} fetch %f %p"),
    }
}

fn describe(plan: &RestorePlan, target: &Target) {
    let s = &plan.summary;
    eprintln!(
        "walvault restore: backup {} ({}): {} taken {}, consistent at LSN {} on timeline {} ({}), {} chunks{}",
        plan.backup.id,
        plan.reason,
        human_bytes(s.size),
        postgres_time(s.started_at_ms),
        s.stop_lsn,
        s.stop_timeline,
        postgres_time(s.stopped_at_ms),
        s.chunk_count,
        if s.from_standby { ", from a standby" } else { "" },
    );
    eprintln!(
        "walvault restore: WAL {} to {} ({} segments) is in the catalog; recovery goes to {target}",
        plan.wal.first, plan.wal.last, plan.wal.segments
    );
}

fn report(error: &RestoreError) -> u8 {
    let code = restore_exit(error);
    eprintln!(
        "walvault restore: REFUSED or FAILED (exit {code}): {}",
        chain(error)
    );
    code
}
