//! The verify the retention function runs after each sweep, with the time
//! its invocation has left: HEAD of every copy, repairs with the
//! function's keys, metrics and an alarm. The person on call hears of a
//! missing replica without anyone having run `walvault verify`.

use serde::Serialize;
use tokio::time::Instant;

use crate::clock::now_millis;
use crate::error::chain;
use crate::metrics::{Metric, MetricRecord};

use super::{Progress, Range, Verifier, VerifyOptions, VerifyReport};

/// What the scheduled run says, in the function's answer and its log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduledVerify {
    pub files: u64,
    /// Wrong and not repaired: copies, orphans, breaks, corrupt records.
    pub outstanding: u64,
    /// Of which copies missing or damaged on a provider.
    pub copies: u64,
    pub repaired: u64,
    /// Copies not checked (no answer, or the time ran out).
    pub unchecked: u64,
    /// Why the run could not start (the catalog could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// The first problems, for the log (all are in `walvault verify`).
    pub examples: Vec<String>,
}

const EXAMPLES: usize = 10;

struct Silent;

impl Progress for Silent {
    fn update(&self, _: u64, _: u64, _: u64, _: u64) {}
}

impl Verifier {
    /// Verifies the whole archive (HEAD) and repairs what it can by
    /// `deadline`; emits `VerifyProblems`, `VerifyRepaired` and
    /// `VerifyUnchecked`.
    pub async fn scheduled(&self, concurrency: usize, deadline: Instant) -> ScheduledVerify {
        let options = VerifyOptions {
            range: Range::default(),
            deep: false,
            repair: true,
            concurrency,
            deadline: Some(deadline),
        };
        let outcome = match self.verify(options, now_millis(), &Silent).await {
            Ok(report) => summary(&report),
            Err(e) => ScheduledVerify {
                failed: Some(chain(&e)),
                unchecked: 1,
                ..ScheduledVerify::default()
            },
        };
        let mut record = MetricRecord::new(self.cluster.as_str());
        record
            .add(Metric::VerifyProblems, outcome.outstanding as f64)
            .add(Metric::VerifyRepaired, outcome.repaired as f64)
            .add(Metric::VerifyUnchecked, outcome.unchecked as f64)
            .property("verify", serde_json::to_value(&outcome).unwrap_or_default());
        record.emit();
        if outcome.outstanding > 0 || outcome.failed.is_some() {
            tracing::error!(cluster = %self.cluster, outstanding = outcome.outstanding, failed = ?outcome.failed, examples = ?outcome.examples, "scheduled verify: the archive is not whole; run `walvault verify` for the full list");
        }
        outcome
    }
}

fn summary(report: &VerifyReport) -> ScheduledVerify {
    let copies = report
        .problems
        .iter()
        .filter(|f| f.outstanding())
        .map(|f| format!("{} on {}: {:?}", f.file, f.provider, f.problem));
    let orphans = report
        .orphans
        .iter()
        .flatten()
        .map(|o| format!("orphan {} on {}", o.key, o.provider));
    let breaks = report
        .breaks
        .iter()
        .map(|b| format!("{} segment(s) missing after {}", b.missing, b.after));
    let mut examples: Vec<String> = copies.chain(orphans).chain(breaks).take(EXAMPLES).collect();
    if let Some(reason) = &report.repair_refused {
        examples.insert(0, format!("repair refused: {reason}"));
    }
    ScheduledVerify {
        files: report.files,
        outstanding: report.outstanding(),
        copies: report.problems.iter().filter(|f| f.outstanding()).count() as u64,
        repaired: report.repaired(),
        unchecked: report.unchecked_copies(),
        failed: None,
        examples,
    }
}
