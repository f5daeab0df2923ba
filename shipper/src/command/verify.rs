//! `walvault verify`: every archived file checked on every provider (see
//! `shared::verify`), a table a person reads or JSON a script parses, and
//! an exit status that says what to do next.

use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;
use shared::backends::Backends;
use shared::clock::{now_millis, UnixMillis};
use shared::config::Config;
use shared::error::chain;
use shared::retry::RequestLimits;
use shared::verify::{Finding, Problem, Range, Repair, Verifier, VerifyOptions, VerifyReport};

use crate::progress::{human_bytes, Progress};
use walvault::exit::{verify_exit, VERIFY_INCOMPLETE, VERIFY_USAGE};

/// How far back `--since` reaches: a point in time, or an age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    At(UnixMillis),
    Age(Duration),
}

impl Since {
    fn at(self, now: UnixMillis) -> UnixMillis {
        match self {
            Since::At(t) => t,
            Since::Age(age) => {
                now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
            }
        }
    }
}

/// `30s`, `30m`, `12h`, `7d`.
pub(crate) fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let unit = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(format!("{text:?} is not an age (30s, 30m, 12h, 7d)")),
    };
    text[..text.len() - 1]
        .parse::<u64>()
        .map(|n| Duration::from_secs(n.saturating_mul(unit)))
        .map_err(|_| format!("{text:?} is not an age (30s, 30m, 12h, 7d)"))
}

/// `30m`, `12h`, `7d`, or an RFC 3339 time.
pub(crate) fn parse_since(text: &str) -> Result<Since, String> {
    let text = text.trim();
    if let Ok(age) = parse_age(text) {
        return Ok(Since::Age(age));
    }
    shared::backup::target::parse_time(text)
        .map(Since::At)
        .map_err(|_| format!("{text:?} is neither an age (30m, 12h, 7d) nor a time (RFC 3339)"))
}

pub(crate) struct VerifyArgs {
    pub deep: bool,
    pub repair: bool,
    pub since: Option<Since>,
    pub timeline: Option<u32>,
    pub jobs: Option<usize>,
    pub json: bool,
}

/// What `--json` prints: the report and the verdict.
#[derive(Serialize)]
struct JsonReport<'a> {
    cluster: &'a str,
    exit_code: u8,
    #[serde(flatten)]
    report: &'a VerifyReport,
}

pub(crate) async fn verify(config: Config, args: VerifyArgs) -> u8 {
    let identities = match config.identities() {
        Ok(identities) => identities,
        Err(e) => {
            eprintln!("walvault verify: {e} (exit {VERIFY_USAGE})");
            return VERIFY_USAGE;
        }
    };
    let backends = match Backends::connect(&config).await {
        Ok(backends) => backends,
        Err(e) => {
            eprintln!("walvault verify: {} (exit {VERIFY_INCOMPLETE})", chain(&e));
            return VERIFY_INCOMPLETE;
        }
    };
    let now = now_millis();
    let options = VerifyOptions {
        range: Range {
            timeline: args.timeline,
            since: args.since.map(|s| s.at(now)),
        },
        deep: args.deep,
        repair: args.repair,
        concurrency: args.jobs.unwrap_or(config.verify_concurrency),
        deadline: None,
    };
    let verifier = Verifier {
        cluster: config.cluster.clone(),
        catalog: backends.catalog,
        replicas: backends.replicas,
        limits: RequestLimits::from_config(&config),
        identities,
    };
    let progress = FileProgress(Progress::new("verify", std::io::stderr().is_terminal()));
    let report = match verifier.verify(options, now, &progress).await {
        Ok(report) => report,
        Err(e) => {
            progress.0.finish();
            eprintln!("walvault verify: {} (exit {VERIFY_INCOMPLETE})", chain(&e));
            return VERIFY_INCOMPLETE;
        }
    };
    progress.0.finish();
    let code = verify_exit(&report);
    if args.json {
        let json = JsonReport {
            cluster: config.cluster.as_str(),
            exit_code: code,
            report: &report,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        print!("{}", human(config.cluster.as_str(), &report, code));
    }
    code
}

struct FileProgress(Progress);

impl shared::verify::Progress for FileProgress {
    fn update(&self, files: u64, total_files: u64, bytes: u64, total_bytes: u64) {
        self.0.update_files(files, total_files, bytes, total_bytes);
    }
}

/// At most this many lines of each list; `--json` has them all.
const LIST_LIMIT: usize = 40;

/// The report as a person reads it, in 100 columns.
fn human(cluster: &str, report: &VerifyReport, code: u8) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "walvault verify: cluster {cluster}, {} files, {} raw",
        report.files,
        human_bytes(report.raw_bytes),
    ));
    line(if report.deep {
        "checked: every copy downloaded, decompressed, its sha256 compared".into()
    } else {
        "checked: a HEAD of every copy (presence, size, ETag); --deep downloads".into()
    });
    line(format!(
        "{:<9}{:>10}{:>10}{:>14}{:>10}{:>11}",
        "provider", "checked", "good", "good bytes", "problems", "unchecked"
    ));
    for (provider, tally) in &report.providers {
        line(format!(
            "{:<9}{:>10}{:>10}{:>14}{:>10}{:>11}",
            provider.as_str(),
            tally.checked,
            tally.good,
            human_bytes(tally.good_bytes),
            tally.problems,
            tally.unchecked
        ));
    }
    list(&mut line, "problems", &report.problems, |f| {
        format!(
            "{} on {}: {}{}",
            f.file,
            f.provider,
            describe(&f.problem),
            repair_note(f)
        )
    });
    list(&mut line, "not checked", &report.unchecked, |u| {
        format!("{} on {}: {}", u.file, u.provider, u.reason)
    });
    match &report.orphans {
        None => line("orphans: not looked for (only a whole-archive run can tell)".into()),
        Some(orphans) => list(&mut line, "orphans (no catalog record)", orphans, |o| {
            format!("{} on {} ({})", o.key, o.provider, human_bytes(o.size))
        }),
    }
    list(&mut line, "WAL continuity breaks", &report.breaks, |b| {
        format!(
            "timeline {}: {} segment(s) missing after {} (first: {})",
            b.timeline, b.missing, b.after, b.first_missing
        )
    });
    if let Some(reason) = &report.continuity_unknown {
        line(format!("WAL continuity: not checked: {reason}"));
    }
    list(
        &mut line,
        "recorded corrupt when archived (never replicated)",
        &report.corrupt_inputs,
        |f| f.clone(),
    );
    if report.in_flight > 0 {
        line(format!(
            "in flight: {} copies still being written (not counted as problems)",
            report.in_flight
        ));
    }
    if let Some(reason) = &report.repair_refused {
        line(format!("repair refused: {reason}"));
    }
    line(format!("result: {} (exit {code})", verdict(report)));
    out
}

fn list<T>(line: &mut impl FnMut(String), title: &str, items: &[T], show: impl Fn(&T) -> String) {
    if items.is_empty() {
        line(format!("{title}: none"));
        return;
    }
    line(format!("{title} ({}):", items.len()));
    for item in items.iter().take(LIST_LIMIT) {
        line(format!("  {}", show(item)));
    }
    if items.len() > LIST_LIMIT {
        line(format!(
            "  … and {} more (--json lists all)",
            items.len() - LIST_LIMIT
        ));
    }
}

fn describe(problem: &Problem) -> String {
    match problem {
        Problem::Missing => "missing (recorded, not found)".into(),
        Problem::NotReplicated => "never replicated (no copy recorded or found)".into(),
        Problem::Unrecorded => "present but not recorded".into(),
        Problem::SizeDiffers { recorded, found } => {
            format!("{found} bytes, recorded {recorded}")
        }
        Problem::EtagDiffers { recorded, found } => {
            format!("ETag {found}, recorded {recorded}")
        }
        Problem::OtherContent => "holds other content (left alone)".into(),
        Problem::Corrupt { reason } => format!("corrupt: {reason}"),
    }
}

fn repair_note(finding: &Finding) -> String {
    match &finding.repair {
        None => String::new(),
        Some(Repair::Repaired { from }) => format!(" → repaired from {from}"),
        Some(Repair::Recorded) => " → verified and recorded".into(),
        Some(Repair::Gone) => " → expired by retention meanwhile".into(),
        Some(Repair::Failed { reason }) => format!(" → not repaired: {reason}"),
    }
}

fn verdict(report: &VerifyReport) -> &'static str {
    if report.repair_refused.is_some() {
        "REPAIR REFUSED"
    } else if report.anything_wrong() {
        "PROBLEMS FOUND"
    } else if !report.all_good() {
        "INCOMPLETE: some copies could not be checked"
    } else {
        "OK"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_an_age_or_a_time() {
        assert_eq!(
            parse_since("7d").unwrap(),
            Since::Age(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(parse_since("30m").unwrap().at(3_600_000), 1_800_000);
        assert_eq!(
            parse_since("1970-01-01T00:00:10Z").unwrap(),
            Since::At(10_000)
        );
        assert!(parse_since("7 weeks").is_err());
        assert!(parse_since("d").is_err());
    }

    #[test]
    fn the_table_fits_100_columns_and_states_the_facts() {
        let mut report = VerifyReport {
            files: 3,
            ..VerifyReport::default()
        };
        report.providers.insert(
            shared::provider::Provider::R2,
            shared::verify::ProviderTally {
                checked: 3,
                good: 2,
                good_bytes: 2048,
                problems: 1,
                unchecked: 0,
            },
        );
        report.problems.push(Finding {
            file: "000000010000000000000002".into(),
            provider: shared::provider::Provider::R2,
            problem: Problem::Missing,
            repair: None,
        });
        report.orphans = Some(vec![]);
        let text = human("main", &report, 1);
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
        assert!(text.contains("000000010000000000000002 on r2: missing"));
        assert!(text.contains("result: PROBLEMS FOUND (exit 1)"));
    }
}
