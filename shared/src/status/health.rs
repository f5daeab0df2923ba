//! The verdict on a [`StatusView`]: one check per question, each OK,
//! WARNING, CRITICAL or UNKNOWN against thresholds, and the worst of them
//! as the monitoring-plugin exit status (Nagios, Icinga, Sensu: 0, 1, 2, 3).
//! Pure: the view and the clock in, checks out.

use std::time::Duration;

use serde::Serialize;

use super::summary::{BackupLine, Gap, SETTLE_GRACE_MS};
use super::view::StatusView;
use crate::clock::UnixMillis;

/// The thresholds, each an age or a count; documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// The newest archived segment's age: the recovery point right now.
    pub rpo_warn: Duration,
    pub rpo_crit: Duration,
    /// The oldest file waiting in staging.
    pub staging_warn: Duration,
    pub staging_crit: Duration,
    /// Files not on every provider after the settling grace.
    pub partial_warn: u64,
    pub partial_crit: u64,
    /// The newest complete base backup's age.
    pub backup_warn: Duration,
    pub backup_crit: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        const MINUTE: u64 = 60;
        const DAY: u64 = 86_400;
        Thresholds {
            rpo_warn: Duration::from_secs(60 * MINUTE),
            rpo_crit: Duration::from_secs(4 * 60 * MINUTE),
            staging_warn: Duration::from_secs(15 * MINUTE),
            staging_crit: Duration::from_secs(60 * MINUTE),
            partial_warn: 1,
            partial_crit: 30,
            backup_warn: Duration::from_secs(8 * DAY),
            backup_crit: Duration::from_secs(15 * DAY),
        }
    }
}

/// Reports older than these mean a function has stopped keeping the
/// summary: the re-drive runs every few minutes, retention daily.
const STAGING_REPORT_STALE_MS: u64 = 2 * 3_600_000;
const RETENTION_RUN_STALE_MS: u64 = 48 * 3_600_000;
/// A drill older than this is due: a monthly drill, with some slack.
const DRILL_STALE_MS: u64 = 35 * 86_400_000;

/// Ordered by severity for the verdict: an UNKNOWN figure hides less than
/// a CRITICAL one (as Icinga's worst-state rule orders them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl Level {
    /// The monitoring-plugin exit status.
    pub const fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Unknown => "UNKNOWN",
            Level::Critical => "CRITICAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub text: String,
}

/// The worst level among `checks` (OK when there are none).
pub fn verdict(checks: &[Check]) -> Level {
    checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok)
}

fn age(now: UnixMillis, at: UnixMillis) -> Duration {
    Duration::from_millis(now.saturating_sub(at))
}

/// `95s` → `1m35s`; days for long ones.
pub fn human_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn by_age(age: Duration, warn: Duration, crit: Duration) -> Level {
    if age >= crit {
        Level::Critical
    } else if age >= warn {
        Level::Warning
    } else {
        Level::Ok
    }
}

fn by_count(count: u64, warn: u64, crit: u64) -> Level {
    if count >= crit {
        Level::Critical
    } else if count >= warn {
        Level::Warning
    } else {
        Level::Ok
    }
}

/// The newest complete base backup.
pub fn newest_complete_backup(view: &StatusView) -> Option<&BackupLine> {
    view.kept
        .archive
        .backups
        .iter()
        .rev()
        .find(|b| b.is_complete())
}

pub fn checks(view: &StatusView, limits: &Thresholds) -> Vec<Check> {
    let mut checks = vec![
        archiving(view, limits),
        staging(view, limits),
        replication(view, limits),
        continuity(view),
        backups(view, limits),
        verify(view),
        retention(view),
        drill(view),
    ];
    if let Some(problem) = &view.summary_problem {
        checks.push(check(
            "summary",
            Level::Warning,
            format!("{problem}; read the records instead"),
        ));
    }
    if view.unread {
        checks.push(check(
            "summary",
            Level::Unknown,
            format!(
                "the summary is far behind the catalog: {} records read, more left unread, figures partial",
                view.records_read
            ),
        ));
    }
    if view.kept.archive.conflicted > 0 {
        checks.push(check(
            "conflicts",
            Level::Warning,
            format!(
                "{} files had different content pushed under their name (refused; counted at \
                 the last rebuild)",
                view.kept.archive.conflicted
            ),
        ));
    }
    checks
}

/// What the scheduled verify after the last sweep found.
fn verify(view: &StatusView) -> Check {
    let now = view.now;
    match &view.kept.verify {
        Some(run) if run.copies > 0 => check(
            "verify",
            Level::Critical,
            format!(
                "the scheduled verify {} ago found {} copies missing or damaged it could not \
                 repair: run `walvault verify`",
                human_age(age(now, run.at)),
                run.copies
            ),
        ),
        Some(run) if now.saturating_sub(run.at) > RETENTION_RUN_STALE_MS => check(
            "verify",
            Level::Warning,
            format!(
                "the scheduled verify last ran {} ago (after each sweep)",
                human_age(age(now, run.at))
            ),
        ),
        Some(run) if run.outstanding > 0 => check(
            "verify",
            Level::Warning,
            format!(
                "the scheduled verify {} ago found {} orphans, WAL breaks or corrupt files: \
                 run `walvault verify`",
                human_age(age(now, run.at)),
                run.outstanding
            ),
        ),
        Some(run) if run.failed.is_some() || run.unchecked > 0 => check(
            "verify",
            Level::Warning,
            format!(
                "the scheduled verify {} ago could not check everything ({} copies unchecked)",
                human_age(age(now, run.at)),
                run.unchecked
            ),
        ),
        Some(run) => check(
            "verify",
            Level::Ok,
            format!(
                "the scheduled verify {} ago: {} files good, {} repaired",
                human_age(age(now, run.at)),
                run.files,
                run.repaired
            ),
        ),
        None => check(
            "verify",
            Level::Ok,
            "no scheduled verify recorded yet".into(),
        ),
    }
}

/// Whether the retention function runs, and cleanly.
fn retention(view: &StatusView) -> Check {
    let now = view.now;
    match &view.kept.retention {
        Some(run) if now.saturating_sub(run.at) > RETENTION_RUN_STALE_MS => check(
            "retention",
            Level::Warning,
            format!(
                "the retention function last ran {} ago (daily)",
                human_age(age(now, run.at))
            ),
        ),
        Some(run) if run.errors > 0 => check(
            "retention",
            Level::Warning,
            format!("the last sweep had {} errors (see its log)", run.errors),
        ),
        Some(run) => check(
            "retention",
            Level::Ok,
            format!(
                "swept {} ago: {} files deleted, {} days kept",
                human_age(age(now, run.at)),
                run.files_deleted,
                run.window_days
            ),
        ),
        None => check(
            "retention",
            Level::Warning,
            "the retention function has not written a summary yet (it runs daily)".into(),
        ),
    }
}

/// The last recovery drill.
fn drill(view: &StatusView) -> Check {
    let now = view.now;
    match (&view.last_drill, &view.drill_problem) {
        (_, Some(problem)) => check(
            "drill",
            Level::Warning,
            format!("the drill reports could not be read: {problem}"),
        ),
        (None, None) => check(
            "drill",
            Level::Ok,
            "no recovery drill recorded (run `walvault drill` on a schedule)".into(),
        ),
        (Some(drill), None) if !drill.passed => check(
            "drill",
            Level::Warning,
            format!(
                "the last drill, {} ago, FAILED: {}",
                human_age(age(now, drill.started_at_ms)),
                drill.failure.as_deref().unwrap_or("see its report")
            ),
        ),
        (Some(drill), None) if now.saturating_sub(drill.started_at_ms) > DRILL_STALE_MS => check(
            "drill",
            Level::Warning,
            format!(
                "the last drill passed {} ago: time for another",
                human_age(age(now, drill.started_at_ms))
            ),
        ),
        (Some(drill), None) => check(
            "drill",
            Level::Ok,
            format!(
                "the last drill passed {} ago, recovered to {}",
                human_age(age(now, drill.started_at_ms)),
                drill.recovered_to.as_deref().unwrap_or("the target")
            ),
        ),
    }
}

fn check(name: &'static str, level: Level, text: String) -> Check {
    Check { name, level, text }
}

fn archiving(view: &StatusView, limits: &Thresholds) -> Check {
    let newest = view.kept.archive.timelines.iter().next_back();
    let (level, text) = match newest {
        None => (Level::Critical, "no WAL segment archived".to_owned()),
        Some((timeline, span)) => {
            let rpo = age(view.now, span.newest_staged_at);
            (
                by_age(rpo, limits.rpo_warn, limits.rpo_crit),
                format!(
                    "newest segment {} (timeline {timeline}) archived {} ago",
                    span.newest,
                    human_age(rpo)
                ),
            )
        }
    };
    Check {
        name: "archiving",
        level,
        text,
    }
}

fn staging(view: &StatusView, limits: &Thresholds) -> Check {
    let now = view.now;
    let in_flight = view.in_flight.oldest_staged_at.map(|at| age(now, at));
    let from_report = view
        .kept
        .staging
        .and_then(|s| s.oldest_waiting())
        .map(|at| age(now, at));
    let oldest = in_flight.max(from_report).unwrap_or_default();
    let mut level = by_age(oldest, limits.staging_warn, limits.staging_crit);
    let backlog = view.kept.staging.map_or(0, |s| s.backlog);
    let mut text = if oldest.is_zero() {
        "nothing waits in staging".to_owned()
    } else {
        format!(
            "{} files in flight, {backlog} waiting at the last re-drive; the oldest for {}",
            view.in_flight.count,
            human_age(oldest)
        )
    };
    let report_age = view.kept.staging.map(|s| now.saturating_sub(s.at));
    let silent = match report_age {
        Some(ms) => ms > STAGING_REPORT_STALE_MS,
        // A summary kept by the retention function alone: the re-drive
        // never reported.
        None => view.summary_version.is_some(),
    };
    if silent {
        level = level.max(Level::Warning);
        text = match report_age {
            Some(ms) => format!(
                "the re-drive last reported {} ago: is the compress function's schedule running? {text}",
                human_age(Duration::from_millis(ms))
            ),
            None => format!("the re-drive has never reported: is the compress function's schedule running? {text}"),
        };
    }
    Check {
        name: "staging",
        level,
        text,
    }
}

fn replication(view: &StatusView, limits: &Thresholds) -> Check {
    let late = view.in_flight.late;
    let grace = human_age(Duration::from_millis(SETTLE_GRACE_MS));
    let text = if late == 0 {
        format!("every file older than {grace} is on every provider")
    } else {
        let missing: Vec<&str> = view
            .in_flight
            .late_missing
            .iter()
            .map(String::as_str)
            .collect();
        format!(
            "{late} files older than {grace} not on every provider (missing on {})",
            missing.join(", ")
        )
    };
    Check {
        name: "replication",
        level: by_count(late, limits.partial_warn, limits.partial_crit),
        text,
    }
}

/// The gaps older than the settling grace that cut recovery from the
/// newest complete backup to the end: on a later timeline than the
/// backup's, or on its own at or after its start segment (names of one
/// timeline sort in WAL order). All of them when there is no backup.
pub fn cutting_gaps(view: &StatusView) -> Vec<(u32, &Gap)> {
    let backup = newest_complete_backup(view);
    let mut cutting = Vec::new();
    for (timeline, span) in &view.kept.archive.timelines {
        for gap in &span.gaps {
            if view.now.saturating_sub(gap.next_staged_at) < SETTLE_GRACE_MS {
                continue;
            }
            let cuts = backup.is_none_or(|b| match (b.timeline, b.start_segment.as_deref()) {
                (Some(t), _) if t < *timeline => true,
                (Some(t), Some(start)) if t == *timeline => gap.next.as_str() > start,
                (Some(_), _) => false,
                (None, _) => true,
            });
            if cuts {
                cutting.push((*timeline, gap));
            }
        }
    }
    cutting
}

/// A gap that cuts recovery to the end short is critical; any other gap,
/// or a file recorded corrupt (a gap already), only limits recovery to
/// earlier points.
fn continuity(view: &StatusView) -> Check {
    let cutting = cutting_gaps(view);
    // Gaps next to a segment still within the grace may close yet.
    let young: u64 = view
        .kept
        .archive
        .timelines
        .values()
        .flat_map(|s| &s.gaps)
        .filter(|g| view.now.saturating_sub(g.next_staged_at) < SETTLE_GRACE_MS)
        .map(|g| g.missing)
        .sum();
    let missing = view
        .kept
        .archive
        .timelines
        .values()
        .map(|s| s.missing)
        .sum::<u64>()
        .saturating_sub(young);
    let (level, text) = if !cutting.is_empty() {
        let gaps: Vec<String> = cutting
            .iter()
            .map(|(_, gap)| format!("{} missing from {}", gap.missing, gap.first_missing))
            .collect();
        (
            Level::Critical,
            format!(
                "WAL gap after the newest backup, recovery stops before it: {}",
                gaps.join("; ")
            ),
        )
    } else if missing > 0 || view.kept.archive.corrupt > 0 {
        (
            Level::Warning,
            format!(
                "{missing} segments missing before the newest backup, {} files recorded corrupt",
                view.kept.archive.corrupt
            ),
        )
    } else {
        (Level::Ok, "WAL continuous on every timeline".to_owned())
    };
    Check {
        name: "continuity",
        level,
        text,
    }
}

fn backups(view: &StatusView, limits: &Thresholds) -> Check {
    let (level, text) = match newest_complete_backup(view) {
        None => (
            Level::Critical,
            "no complete base backup: nothing can be restored (run `walvault backup`)".to_owned(),
        ),
        Some(backup) => {
            let at = backup.stopped_at_ms.unwrap_or_default();
            let since = age(view.now, at);
            (
                by_age(since, limits.backup_warn, limits.backup_crit),
                format!(
                    "newest complete base backup {} finished {} ago",
                    backup.id,
                    human_age(since)
                ),
            )
        }
    };
    Check {
        name: "backups",
        level,
        text,
    }
}
