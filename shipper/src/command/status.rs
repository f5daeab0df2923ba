//! `walvault status`: the archive's state from the catalog's summary item
//! and the records after it (see `shared::status`), as a table a person
//! reads or JSON a script parses, with the monitoring-plugin exit status
//! (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::time::Duration;

use serde::Serialize;
use shared::backends::Backends;
use shared::clock::{now_millis, utc_time};
use shared::config::Config;
use shared::error::chain;
use shared::provider::Provider;
use shared::retry::RequestLimits;
use shared::seal::Fingerprint;
use shared::status::health::{checks, cutting_gaps, human_age, verdict, Check, Level, Thresholds};
use shared::status::summary::ArchiveSummary;
use shared::status::view::{read, StatusView};
use tokio::time::Instant;

use crate::progress::human_bytes;
use walvault::exit::STATUS_UNKNOWN;

/// The most `status` waits for the catalog and the staging bucket.
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// Published storage prices, USD per GB-month (10⁹ bytes), November 2026:
/// R2 Standard storage, developers.cloudflare.com/r2/pricing; B2,
/// backblaze.com/cloud-storage/pricing ($6 per TB-month since October 2023).
pub(crate) const R2_PRICE: f64 = 0.015;
pub(crate) const B2_PRICE: f64 = 0.006;

pub(crate) struct StatusArgs {
    pub thresholds: Thresholds,
    pub prices: [(Provider, f64); 2],
    pub json: bool,
}

/// One provider's line: what it holds and what that costs a month.
#[derive(Serialize)]
struct ProviderLine {
    provider: &'static str,
    files: u64,
    stored_bytes: u64,
    /// Raw bytes of every archived file over what this provider stores.
    ratio: Option<f64>,
    price_per_gb_month: f64,
    monthly_cost: f64,
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    exit_code: u8,
    level: Level,
    checks: &'a [Check],
    providers: Vec<ProviderLine>,
    /// The fingerprints of the identities configured on this host.
    identities_here: &'a [Fingerprint],
    #[serde(flatten)]
    view: &'a StatusView,
}

pub(crate) async fn status(config: Config, args: StatusArgs) -> u8 {
    let unknown = |what: String| {
        if args.json {
            let json = serde_json::json!({
                "cluster": config.cluster.as_str(),
                "exit_code": STATUS_UNKNOWN,
                "level": Level::Unknown,
                "error": what,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
        } else {
            println!("walvault status {}: UNKNOWN - {what}", config.cluster);
        }
        STATUS_UNKNOWN
    };
    let backends = match Backends::connect(&config).await {
        Ok(backends) => backends,
        Err(e) => return unknown(chain(&e)),
    };
    let budget = RequestLimits::from_config(&config).until(Instant::now() + TIME_LIMIT);
    let now = now_millis();
    let view = match read(
        backends.catalog.as_ref(),
        backends.staging.as_ref(),
        &config.cluster,
        now,
        &budget,
    )
    .await
    {
        Ok(view) => view,
        Err(e) => return unknown(format!("the catalog could not be read: {}", chain(&e))),
    };
    let checks = checks(&view, &args.thresholds);
    let level = verdict(&checks);
    let code = level.exit_code();
    let providers = provider_lines(&view.kept.archive, &args.prices);
    let keys_here = config
        .identities()
        .map(|identities| identities.fingerprints())
        .map_err(|e| e.to_string());
    if args.json {
        let json = JsonStatus {
            exit_code: code,
            level,
            checks: &checks,
            providers,
            identities_here: keys_here.as_deref().unwrap_or_default(),
            view: &view,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        print!("{}", human(&view, &checks, level, &providers, &keys_here));
    }
    code
}

fn provider_lines(archive: &ArchiveSummary, prices: &[(Provider, f64)]) -> Vec<ProviderLine> {
    prices
        .iter()
        .map(|(provider, price)| {
            let totals = archive.provider(*provider);
            ProviderLine {
                provider: provider.as_str(),
                files: totals.files,
                stored_bytes: totals.bytes,
                ratio: (totals.bytes > 0).then(|| archive.raw_bytes as f64 / totals.bytes as f64),
                price_per_gb_month: *price,
                monthly_cost: totals.bytes as f64 / 1e9 * price,
            }
        })
        .collect()
}

/// The report as a person reads it, in 100 columns. The first line is the
/// verdict with the worst finding, as monitoring plugins print it.
fn human(
    view: &StatusView,
    checks: &[Check],
    level: Level,
    providers: &[ProviderLine],
    keys_here: &Result<Vec<Fingerprint>, String>,
) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let worst = checks
        .iter()
        .filter(|c| c.level == level && level != Level::Ok)
        .map(|c| format!("{}: {}", c.name, c.text))
        .next()
        .unwrap_or_else(|| "archive healthy".into());
    line(truncate(format!(
        "walvault status {}: {} - {worst}",
        view.cluster,
        level.as_str()
    )));
    line(String::new());
    line(format!("recoverable   {}", window(view)));
    for (timeline, span) in &view.kept.archive.timelines {
        line(format!(
            "  timeline {timeline}: {} .. {}, {} segments, {} missing",
            span.first, span.newest, span.segments, span.missing
        ));
    }
    line(format!(
        "archived      {} files, {} raw; {} in flight",
        view.kept.archive.files,
        human_bytes(view.kept.archive.raw_bytes),
        view.in_flight.count
    ));
    line(format!(
        "  {:<10}{:>10}{:>12}{:>12}{:>14}",
        "provider", "files", "stored", "raw/stored", "USD/month"
    ));
    for p in providers {
        line(format!(
            "  {:<10}{:>10}{:>12}{:>12}{:>14}",
            p.provider,
            p.files,
            human_bytes(p.stored_bytes),
            p.ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            if p.monthly_cost > 0.0 && p.monthly_cost < 0.01 {
                "<0.01".to_owned()
            } else {
                format!("{:.2}", p.monthly_cost)
            }
        ));
    }
    let archive = &view.kept.archive;
    if archive.sealed > 0 {
        line(format!(
            "encryption    {} files sealed, {} not",
            archive.sealed,
            archive.files.saturating_sub(archive.sealed)
        ));
        for (fingerprint, files) in &archive.sealed_to {
            let here = match keys_here {
                Ok(keys) if keys.contains(fingerprint) => ", identity here",
                Ok(_) => ", no identity here",
                Err(_) => "",
            };
            line(format!("  key {fingerprint} opens {files} files{here}"));
        }
        if let Err(e) = keys_here {
            line(truncate(format!("  identities here: {e}")));
        }
    }
    for f in view.in_flight.files.iter().take(10) {
        line(format!(
            "  in flight: {} {} for {}, missing on {}",
            f.file,
            f.status,
            human_age(Duration::from_millis(view.now.saturating_sub(f.staged_at))),
            f.missing.join(", ")
        ));
    }
    if view.kept.archive.backups.is_empty() {
        line("backups       none".into());
    } else {
        line(format!(
            "backups       {:<18}{:<22}{:>10}{:>10}  state",
            "id", "stopped", "size", "stored"
        ));
        for b in view.kept.archive.backups.iter().rev().take(10) {
            line(format!(
                "              {:<18}{:<22}{:>10}{:>10}  {}",
                b.id,
                b.stopped_at_ms.map_or("-".into(), utc_time),
                b.size.map_or("-".into(), human_bytes),
                human_bytes(b.stored_bytes),
                if b.is_complete() {
                    "complete"
                } else {
                    "incomplete"
                }
            ));
        }
    }
    if let Some(run) = &view.kept.retention {
        line(format!(
            "retention     {} days; last sweep {}: {} files, {} freed{}",
            run.window_days,
            utc_time(run.at),
            run.files_deleted,
            human_bytes(run.bytes_freed),
            if run.dry_run { " (dry run)" } else { "" }
        ));
        for (timeline, backup) in &run.anchors {
            line(format!("  timeline {timeline} anchored on backup {backup}"));
        }
    }
    line(String::new());
    for check in checks {
        let head = format!("{:<10}{:<13}", check.level.as_str(), check.name);
        for (i, part) in wrap(&check.text, WIDTH - head.len())
            .into_iter()
            .enumerate()
        {
            let lead = if i == 0 {
                head.clone()
            } else {
                " ".repeat(head.len())
            };
            line(format!("{lead}{part}"));
        }
    }
    line(format!(
        "({} catalog requests, {} records read besides the summary{})",
        view.catalog_requests,
        view.records_read,
        view.summary_age()
            .map(|age| format!(", kept {} ago", human_age(age)))
            .unwrap_or_default()
    ));
    out
}

const WIDTH: usize = 100;

/// The first line, cut to the width (`--json` has every word).
fn truncate(text: String) -> String {
    if text.chars().count() <= WIDTH {
        return text;
    }
    let mut cut: String = text.chars().take(WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// `text` in lines of at most `width` columns, broken between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    // A word longer than a line (a path, an error chain) is cut.
    let pieces = text.split_whitespace().flat_map(|word| {
        let chars: Vec<char> = word.chars().collect();
        chars
            .chunks(width.max(1))
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
    });
    for word in pieces {
        let Some(current) = lines.last_mut() else {
            break;
        };
        if !current.is_empty() && current.chars().count() + 1 + word.chars().count() > width {
            lines.push(word);
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(&word);
        }
    }
    lines
}

/// From the oldest complete backup's stop to the newest archived segment,
/// or to the last segment before the first gap that cuts the way from the
/// newest backup (the continuity check's gaps).
fn window(view: &StatusView) -> String {
    let oldest = view.kept.archive.backups.iter().find(|b| b.is_complete());
    let Some((_, span)) = view.kept.archive.timelines.iter().next_back() else {
        return "nothing: no WAL archived".into();
    };
    let Some(from) = oldest.and_then(|b| b.stopped_at_ms) else {
        return "nothing: no complete base backup".into();
    };
    match cutting_gaps(view).first() {
        Some((_, gap)) => format!(
            "from {} to segment {} (then {} missing)",
            utc_time(from),
            gap.after,
            gap.missing
        ),
        None => format!(
            "from {} to {} (segment {})",
            utc_time(from),
            utc_time(span.newest_staged_at),
            span.newest
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::status::keep::{StagingReport, StoredSummary};
    use shared::status::summary::{ArchiveSummary, BackupLine, ProviderTotals, TimelineSpan};

    fn view() -> StatusView {
        let mut archive = ArchiveSummary {
            files: 3,
            raw_bytes: 3 << 24,
            ..ArchiveSummary::default()
        };
        for provider in Provider::ALL {
            archive.providers.insert(
                provider.as_str().into(),
                ProviderTotals {
                    files: 3,
                    bytes: 3 << 22,
                },
            );
        }
        archive.timelines.insert(
            1,
            TimelineSpan {
                first: "000000010000000000000001".into(),
                newest: "000000010000000000000003".into(),
                newest_staged_at: 1_795_774_500_000,
                segments: 3,
                missing: 0,
                gaps: vec![],
            },
        );
        archive.backups.push(BackupLine {
            id: "20261127T100000Z".into(),
            timeline: Some(1),
            start_segment: Some("000000010000000000000001".into()),
            started_at_ms: Some(1_795_773_600_000),
            stopped_at_ms: Some(1_795_773_660_000),
            size: Some(1 << 20),
            stored_bytes: 1 << 18,
            chunk_count: Some(1),
            chunks_replicated: 1,
            descriptor_replicated: true,
        });
        StatusView {
            cluster: "main".into(),
            now: 1_795_774_560_000,
            summary_version: Some(4),
            summary_problem: None,
            kept: StoredSummary {
                archive,
                updated_at: 1_795_774_500_000,
                staging: Some(StagingReport {
                    at: 1_795_774_500_000,
                    backlog: 0,
                    oldest_age_ms: 0,
                }),
                ..StoredSummary::default()
            },
            in_flight: Default::default(),
            records_read: 2,
            catalog_requests: 3,
            unread: false,
            last_drill: None,
            drill_problem: None,
        }
    }

    #[test]
    fn the_table_fits_100_columns_and_states_the_facts() {
        let view = view();
        let checks = checks(&view, &Thresholds::default());
        let level = verdict(&checks);
        let providers = provider_lines(
            &view.kept.archive,
            &[(Provider::R2, R2_PRICE), (Provider::B2, B2_PRICE)],
        );
        let text = human(&view, &checks, level, &providers, &Ok(Vec::new()));
        assert!(!text.contains("encryption"), "{text}");
        let mut sealed = view.clone();
        let (here, elsewhere): (Fingerprint, Fingerprint) = (
            "00112233445566aa".parse().unwrap(),
            "ffeeddccbbaa9988".parse().unwrap(),
        );
        sealed.kept.archive.sealed = 3;
        sealed.kept.archive.sealed_to = [(here.clone(), 3), (elsewhere, 1)].into();
        let sealed_text = human(&sealed, &checks, level, &providers, &Ok(vec![here]));
        assert!(sealed_text.contains("3 files sealed"), "{sealed_text}");
        assert!(
            sealed_text.contains("key 00112233445566aa opens 3 files, identity here"),
            "{sealed_text}"
        );
        assert!(
            sealed_text.contains("key ffeeddccbbaa9988 opens 1 files, no identity here"),
            "{sealed_text}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
        // No retention run recorded yet: a warning, named on the first line.
        assert!(
            text.starts_with("walvault status main: WARNING - retention:"),
            "{text}"
        );
        assert!(
            text.contains("from 2026-11-27T10:01:00Z to 2026-11-27T10:15:00Z"),
            "{text}"
        );
        assert!(text.contains("4.00x"), "{text}");
        assert!(text.contains("(3 catalog requests"), "{text}");
    }

    #[test]
    fn long_findings_wrap_between_words_and_long_words_are_cut() {
        let text = "the scheduled verify found 3 problems it could not repair";
        let lines = wrap(text, 20);
        assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        let path = format!("in /{}", "x".repeat(45));
        let lines = wrap(&path, 20);
        assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:?}");
        assert_eq!(lines.concat(), path.replace(' ', ""));
    }
}
