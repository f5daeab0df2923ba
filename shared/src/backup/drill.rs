//! `walvault drill`: the recovery test nobody has to remember. Restores a
//! backup into a scratch directory, recovers it with a throw-away server
//! (unix socket in a private directory, archiving off: it never writes to
//! the archive), checks it, removes everything, and reports the real
//! recovery point and recovery time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::name::BackupId;
use super::pg_tools::PgTools;
use super::restore::{
    verify_with_postgres, write_recovery_settings, RecoverySettings, RestoreError, Restorer,
};
use super::target::Target;
use crate::clock::now_millis;
use crate::error::chain;

/// The socket's port number: the socket directory is private to the
/// drill, so no other server can be in the way.
const PORT: &str = "5432";

pub struct DrillSettings {
    pub target: Target,
    pub backup: Option<BackupId>,
    /// A scratch directory is made (and removed) inside it.
    pub scratch_parent: PathBuf,
    pub restore_command: String,
    pub pg_bindir: Option<PathBuf>,
    /// SQL queries, each of which must return true.
    pub checks: Vec<String>,
    /// The database role the checks run as (the cluster's superuser).
    pub user: String,
    pub recovery_timeout: Duration,
    /// Leave the scratch directory (and a stopped server) for inspection.
    pub keep: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stages {
    pub restore_seconds: f64,
    pub recovery_seconds: f64,
    pub checks_seconds: f64,
    pub total_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub answer: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub cluster: String,
    pub passed: bool,
    /// The stage that failed, and why.
    pub failure: Option<String>,
    pub started_at_ms: u64,
    pub backup: Option<String>,
    pub backup_reason: Option<String>,
    pub target: String,
    pub wal_segments_replayed: u64,
    /// The last transaction replayed: what this archive could recover to
    /// right now (the real RPO is now minus this).
    pub recovered_to: Option<String>,
    pub data_checksums: Option<bool>,
    pub checks: Vec<CheckResult>,
    pub stages: Stages,
    pub restored_bytes: u64,
    pub chunks_from_fallback: u64,
    pub scratch: Option<String>,
}

pub async fn run(restorer: &Restorer, settings: &DrillSettings) -> DrillReport {
    let started = Instant::now();
    let mut report = DrillReport {
        cluster: restorer.cluster.to_string(),
        passed: false,
        failure: None,
        started_at_ms: now_millis(),
        backup: None,
        backup_reason: None,
        target: settings.target.to_string(),
        wal_segments_replayed: 0,
        recovered_to: None,
        data_checksums: None,
        checks: Vec::new(),
        stages: Stages::default(),
        restored_bytes: 0,
        chunks_from_fallback: 0,
        scratch: None,
    };
    let scratch = match tempfile::Builder::new()
        .prefix("walvault-drill-")
        .tempdir_in(&settings.scratch_parent)
    {
        Ok(dir) => dir,
        Err(e) => {
            report.failure = Some(format!(
                "scratch directory in {}: {e}",
                settings.scratch_parent.display()
            ));
            return report;
        }
    };
    report.scratch = Some(scratch.path().display().to_string());
    let outcome = drill(restorer, settings, scratch.path(), &mut report).await;
    report.stages.total_seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => {
            let failed: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.check.as_str())
                .collect();
            if failed.is_empty() {
                report.passed = true;
            } else {
                report.failure = Some(format!("checks failed: {}", failed.join("; ")));
            }
        }
        Err(failure) => report.failure = Some(failure),
    }
    if settings.keep {
        let _ = scratch.keep();
    } else {
        report.scratch = None;
    }
    report
}

async fn drill(
    restorer: &Restorer,
    settings: &DrillSettings,
    scratch: &Path,
    report: &mut DrillReport,
) -> Result<(), String> {
    let stage = Instant::now();
    let plan = restorer
        .plan(&settings.target, settings.backup)
        .await
        .map_err(|e| format!("restore: {}", chain(&e)))?;
    report.backup = Some(plan.backup.id.to_string());
    report.backup_reason = Some(plan.reason.clone());
    let data = scratch.join("data");
    let downloaded = restorer
        .download(&plan, &data, &|_, _| {})
        .await
        .map_err(|e: RestoreError| format!("restore: {}", chain(&e)))?;
    report.restored_bytes = downloaded.bytes;
    report.chunks_from_fallback = downloaded.fallbacks;
    let tools = PgTools::locate(settings.pg_bindir.as_deref(), Some(plan.summary.pg_version));
    verify_with_postgres(&tools.program("pg_verifybackup"), &data)
        .map_err(|e| format!("restore: {}", chain(&e)))?;
    write_recovery_settings(
        &data,
        &RecoverySettings {
            restore_command: &settings.restore_command,
            target: settings.target,
            timeline: None,
            action: "promote",
            backup: plan.backup.id,
        },
    )
    .map_err(|e| format!("restore: writing the recovery settings: {e}"))?;
    report.stages.restore_seconds = stage.elapsed().as_secs_f64();

    let stage = Instant::now();
    let server = Server::start(&tools, scratch, &data, &settings.user)?;
    let recovered = server.wait_promoted(settings.recovery_timeout);
    report.wal_segments_replayed = server.restored_segments();
    if let Err(e) = recovered {
        server.stop();
        return Err(e);
    }
    report.recovered_to = server
        .query("SELECT coalesce(pg_last_xact_replay_timestamp()::text, '')")
        .ok()
        .filter(|t| !t.is_empty());
    report.stages.recovery_seconds = stage.elapsed().as_secs_f64();

    let stage = Instant::now();
    let checksums = server.query("SHOW data_checksums").map(|v| v == "on");
    for check in &settings.checks {
        let answer = server.query(check);
        report.checks.push(CheckResult {
            check: check.clone(),
            passed: answer.as_deref() == Ok("t"),
            answer: answer.unwrap_or_else(|e| e),
        });
    }
    server.stop();
    if checksums == Ok(true) {
        let status = Command::new(tools.program("pg_checksums"))
            .arg("--check")
            .arg("-D")
            .arg(&data)
            .output();
        let ok = status.as_ref().is_ok_and(|o| o.status.success());
        report.data_checksums = Some(ok);
        if !ok {
            report.checks.push(CheckResult {
                check: "pg_checksums --check".into(),
                passed: false,
                answer: status
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_else(|e| e.to_string()),
            });
        }
    }
    report.stages.checks_seconds = stage.elapsed().as_secs_f64();
    Ok(())
}

/// The throw-away server.
struct Server {
    pg_ctl: PathBuf,
    psql: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    user: String,
}

impl Server {
    fn start(tools: &PgTools, scratch: &Path, data: &Path, user: &str) -> Result<Server, String> {
        let socket = scratch.join("socket");
        std::fs::create_dir_all(&socket).map_err(|e| format!("socket directory: {e}"))?;
        // Only the drill can reach the private socket: trust it, whatever
        // the production pg_hba.conf demands.
        let hba = scratch.join("drill_hba.conf");
        std::fs::write(&hba, "local all all trust\n").map_err(|e| format!("pg_hba: {e}"))?;
        let server = Server {
            pg_ctl: tools.program("pg_ctl"),
            psql: tools.program("psql"),
            data: data.to_owned(),
            log: scratch.join("server.log"),
            socket,
            user: user.to_owned(),
        };
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p {PORT} -c archive_mode=off -c hba_file='{}' -c hot_standby=on",
            server.socket.display(),
            hba.display()
        );
        let status = Command::new(&server.pg_ctl)
            .arg("start")
            .arg("-D")
            .arg(&server.data)
            .arg("-l")
            .arg(&server.log)
            .arg("-o")
            .arg(options)
            .arg("-W")
            .output()
            .map_err(|e| format!("recovery: running {}: {e}", server.pg_ctl.display()))?;
        if status.status.success() {
            Ok(server)
        } else {
            Err(format!(
                "recovery: the server did not start: {}{}",
                String::from_utf8_lossy(&status.stderr),
                server.log_tail()
            ))
        }
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        let output = Command::new(&self.psql)
            .arg("-X")
            .arg("-A")
            .arg("-t")
            .arg("-h")
            .arg(&self.socket)
            .arg("-p")
            .arg(PORT)
            .arg("-U")
            .arg(&self.user)
            .arg("-d")
            .arg("postgres")
            .arg("-c")
            .arg(sql)
            .output()
            .map_err(|e| format!("running {}: {e}", self.psql.display()))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// Waits until recovery has ended and the server promoted.
    fn wait_promoted(&self, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(answer) = self.query("SELECT pg_is_in_recovery()") {
                if answer == "f" {
                    return Ok(());
                }
            }
            if self.log_text().contains("FATAL") && !self.is_running() {
                return Err(format!("recovery: the server stopped: {}", self.log_tail()));
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "recovery: not promoted within {timeout:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn is_running(&self) -> bool {
        Command::new(&self.pg_ctl)
            .arg("status")
            .arg("-D")
            .arg(&self.data)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Segments the server took from the archive.
    fn restored_segments(&self) -> u64 {
        self.log_text()
            .lines()
            .filter(|l| l.contains("restored log file") && !l.contains(".history"))
            .count() as u64
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn stop(&self) {
        let _ = Command::new(&self.pg_ctl)
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .arg("-m")
            .arg("fast")
            .arg("-w")
            .output();
    }
}
