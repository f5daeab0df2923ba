//! `walvault drill`: restore, recover with a throw-away server, check,
//! clean up, report (see `shared::backup::drill`). The report is also
//! stored in the staging bucket for `walvault status`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use shared::backup::drill::{run, DrillReport, DrillSettings};
use shared::backup::name::BackupId;
use shared::backup::target::Target;
use shared::codec::Sha256Hex;
use shared::config::Config;
use shared::error::chain;
use shared::keys::drill_report_key;
use shared::retry::RequestLimits;
use shared::store::Metadata;

use super::restore::{default_restore_command, restorer};
use walvault::exit::{DRILL_FAILED, DRILL_USAGE};

pub(crate) struct DrillOptions {
    pub target: Target,
    pub backup: Option<BackupId>,
    pub checks_file: Option<PathBuf>,
    pub user: String,
    pub scratch: Option<PathBuf>,
    pub timeout: Duration,
    pub keep: bool,
    pub json: bool,
    pub restore_command: Option<String>,
}

pub(crate) async fn drill(config: Config, config_file: Option<&Path>, options: DrillOptions) -> u8 {
    let checks = match &options.checks_file {
        None => Vec::new(),
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => checks_of(&text),
            Err(e) => {
                eprintln!(
                    "walvault drill: reading {}: {e} (exit {DRILL_USAGE})",
                    file.display()
                );
                return DRILL_USAGE;
            }
        },
    };
    let restorer = match restorer(&config, None).await {
        Ok(restorer) => restorer,
        Err(_) => return DRILL_FAILED,
    };
    let settings = DrillSettings {
        target: options.target,
        backup: options.backup,
        scratch_parent: options
            .scratch
            .clone()
            .unwrap_or_else(|| config.spool_dir.clone()),
        restore_command: options
            .restore_command
            .clone()
            .unwrap_or_else(|| default_restore_command(config_file)),
        pg_bindir: config.pg_bindir.clone(),
        checks,
        user: options.user.clone(),
        recovery_timeout: options.timeout,
        keep: options.keep,
    };
    if let Err(e) = std::fs::create_dir_all(&settings.scratch_parent) {
        eprintln!(
            "walvault drill: scratch directory {}: {e} (exit {DRILL_USAGE})",
            settings.scratch_parent.display()
        );
        return DRILL_USAGE;
    }
    let report = run(&restorer, &settings).await;
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_summary(&report);
    }
    store_report(&config, &report).await;
    if report.passed {
        0
    } else {
        DRILL_FAILED
    }
}

/// One SQL query per line; blank lines and `--` comments are skipped.
fn checks_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .map(str::to_owned)
        .collect()
}

fn print_summary(report: &DrillReport) {
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    println!("walvault drill {verdict} for cluster {}", report.cluster);
    if let Some(failure) = &report.failure {
        println!("  failure:        {failure}");
    }
    if let Some(backup) = &report.backup {
        println!(
            "  backup:         {backup} ({})",
            report.backup_reason.as_deref().unwrap_or("")
        );
    }
    println!("  target:         {}", report.target);
    println!(
        "  WAL replayed:   {} segments",
        report.wal_segments_replayed
    );
    println!(
        "  recovered to:   {} (the last commit replayed: the recovery point now)",
        report
            .recovered_to
            .as_deref()
            .unwrap_or("no transaction replayed")
    );
    if let Some(ok) = report.data_checksums {
        println!("  pg_checksums:   {}", if ok { "ok" } else { "FAILED" });
    }
    for check in &report.checks {
        println!(
            "  check:          {} {}",
            if check.passed { "ok    " } else { "FAILED" },
            check.check
        );
    }
    let s = &report.stages;
    println!(
        "  time:           restore {:.1} s, recovery {:.1} s, checks {:.1} s; total (the recovery time) {:.1} s",
        s.restore_seconds, s.recovery_seconds, s.checks_seconds, s.total_seconds
    );
    if let Some(scratch) = &report.scratch {
        println!("  kept:           {scratch}");
    }
}

/// Stores the report under the cluster's prefix in the staging bucket
/// (outside `staging/`: the compress function leaves it alone).
async fn store_report(config: &Config, report: &DrillReport) {
    let Ok(json) = serde_json::to_vec_pretty(report) else {
        return;
    };
    let key = drill_report_key(&config.cluster, report.started_at_ms);
    let stored = async {
        let backends = shared::backends::Backends::connect(config)
            .await
            .map_err(|e| chain(&e))?;
        let body = Bytes::from(json);
        let sha = Sha256Hex::of(&body);
        let metadata = Metadata::new();
        RequestLimits::from_config(config)
            .one_request()
            .run(format!("staging put {key}"), || {
                backends
                    .staging
                    .put_if_absent(&key, body.clone(), &sha, &metadata)
            })
            .await
            .map_err(|e| chain(&e))
    };
    match stored.await {
        Ok(_) => eprintln!("walvault drill: report stored as {key}"),
        Err(e) => eprintln!("walvault drill: WARNING: the report could not be stored ({e}); `walvault status` will not show this drill"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_one_query_a_line() {
        let checks = checks_of("-- counts\nSELECT count(*) > 0 FROM t\n\n  SELECT true  \n");
        assert_eq!(checks, ["SELECT count(*) > 0 FROM t", "SELECT true"]);
    }
}
