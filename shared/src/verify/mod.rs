//! `walvault verify`: every archived file in a range, checked on every
//! provider against its catalog record (`check`); objects no record names
//! (`orphans`); breaks in WAL continuity (`continuity`); and, with
//! `--repair`, missing or damaged replicas copied from a verified one
//! (`repair`). What was found is a [`VerifyReport`] (`report`). The
//! retention function runs it after each sweep (`scheduled`).

mod check;
mod continuity;
mod orphans;
mod repair;
mod report;
mod scheduled;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use tokio::time::Instant;

use crate::backends::Replicas;
use crate::catalog::{list_all, Catalog, CatalogError, CatalogRecord, RecordStatus};
use crate::clock::UnixMillis;
use crate::keys::{archive_key, ClusterName};
use crate::provider::Provider;
use crate::retry::RequestLimits;
use crate::seal::Identities;

use check::{Checked, Checker, IN_FLIGHT_GRACE_MS};
use repair::NoWriteAccess;
use repair::Repairer;
pub use report::{Break, Finding, Orphan, Problem, ProviderTally, Repair, Unchecked, VerifyReport};
pub use scheduled::ScheduledVerify;

/// Which records a run covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// WAL files of this timeline only (no backup parts).
    pub timeline: Option<u32>,
    /// Files that reached staging at or after this time.
    pub since: Option<UnixMillis>,
}

impl Range {
    pub fn is_everything(&self) -> bool {
        self.timeline.is_none() && self.since.is_none()
    }

    fn covers(&self, record: &CatalogRecord) -> bool {
        let timeline = match self.timeline {
            None => true,
            Some(t) => record.file.wal().is_some_and(|w| w.timeline() == t),
        };
        timeline && self.since.is_none_or(|since| record.staged_at >= since)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    pub range: Range,
    /// Download every copy and check its raw sha256, not only a HEAD.
    pub deep: bool,
    pub repair: bool,
    /// Files checked at once (each on every provider at once).
    pub concurrency: usize,
    /// When the run must end (a Lambda invocation's); files not reached by
    /// then are counted, not checked.
    pub deadline: Option<Instant>,
}

/// Progress, as files and stored bytes are checked.
pub trait Progress: Send + Sync {
    /// `files` of `total_files` done; `bytes` of the stored bytes they hold.
    fn update(&self, files: u64, total_files: u64, bytes: u64, total_bytes: u64);
}

pub struct Verifier {
    pub cluster: ClusterName,
    pub catalog: Arc<dyn Catalog>,
    pub replicas: Replicas,
    pub limits: RequestLimits,
    /// What sealed copies are opened with (none: a deep check reports
    /// them unchecked, and they are not repaired).
    pub identities: Identities,
}

/// Why a run could not even start: the catalog could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the catalog")]
pub struct VerifyError(#[source] pub CatalogError);

/// One file's result on every provider.
struct FileResult<'a> {
    record: &'a CatalogRecord,
    checks: Vec<(Provider, Checked)>,
}

impl Verifier {
    pub async fn verify(
        &self,
        options: VerifyOptions,
        now: UnixMillis,
        progress: &dyn Progress,
    ) -> Result<VerifyReport, VerifyError> {
        let checker = Checker {
            limits: self.limits,
            identities: self.identities.clone(),
            deep: options.deep,
            now,
            deadline: options.deadline,
        };
        let all = checker
            .budget()
            .run("catalog list", || {
                list_all(self.catalog.as_ref(), &self.cluster)
            })
            .await
            .map_err(VerifyError)?;
        // Newest first: on a run with a deadline, what was archived last
        // (and is most at risk) is checked first.
        let in_range: Vec<&CatalogRecord> = all
            .iter()
            .rev()
            .filter(|r| options.range.covers(r))
            .collect();
        let (corrupt, to_check): (Vec<&CatalogRecord>, Vec<&CatalogRecord>) = in_range
            .iter()
            .partition(|r| r.status == RecordStatus::Corrupt);
        let mut report = VerifyReport {
            deep: options.deep,
            files: in_range.len() as u64,
            raw_bytes: in_range.iter().map(|r| r.raw_size).sum(),
            corrupt_inputs: corrupt.iter().map(|r| r.file.to_string()).collect(),
            ..VerifyReport::default()
        };
        for provider in Provider::ALL {
            if self.replicas.get(provider).is_none() {
                report.unchecked.push(Unchecked {
                    file: "every file".into(),
                    provider,
                    reason: format!("no {provider} replica is configured here"),
                });
            }
        }
        let recent = now.saturating_sub(IN_FLIGHT_GRACE_MS);
        match continuity::breaks(&in_range, &all, recent) {
            Ok(breaks) => report.breaks = breaks,
            Err(reason) => report.continuity_unknown = Some(reason),
        }
        if options.range.is_everything() {
            // Before the copies: listings are few requests, and a run cut
            // short by its deadline still looks for orphans.
            let expected: BTreeSet<String> = all
                .iter()
                .map(|r| archive_key(&r.cluster, r.file))
                .chain(
                    all.iter()
                        .flat_map(|r| r.targets.values().map(|t| t.key.clone())),
                )
                .collect();
            let found = orphans::find(
                &self.cluster,
                &self.replicas,
                &expected,
                self.catalog.as_ref(),
                &checker,
            )
            .await;
            report.orphans = Some(found.orphans);
            report.unchecked.extend(found.unlisted);
        }
        self.check_all(&checker, &to_check, options, progress, &mut report)
            .await;
        Ok(report)
    }

    async fn check_all(
        &self,
        checker: &Checker,
        records: &[&CatalogRecord],
        options: VerifyOptions,
        progress: &dyn Progress,
        report: &mut VerifyReport,
    ) {
        let total_files = records.len() as u64;
        let providers = self.replicas.providers().len() as u64;
        let total_bytes: u64 = records
            .iter()
            .map(|r| r.stored_size().unwrap_or(0) * providers)
            .sum();
        let (mut files, mut bytes) = (0u64, 0u64);
        progress.update(0, total_files, 0, total_bytes);
        // Files are taken on only while there is time; those in flight
        // at the deadline finish within their cut-off budgets.
        let in_time = |_: &&&CatalogRecord| {
            std::future::ready(options.deadline.is_none_or(|d| Instant::now() < d))
        };
        let mut results = stream::iter(records.iter())
            .take_while(in_time)
            .map(|record| self.check_file(checker, record))
            .buffer_unordered(options.concurrency.max(1));
        let repairer = Repairer {
            checker,
            replicas: &self.replicas,
            catalog: &self.catalog,
        };
        while let Some(result) = results.next().await {
            files += 1;
            bytes += result.record.stored_size().unwrap_or(0) * providers;
            self.settle(result, options.repair.then_some(&repairer), report)
                .await;
            progress.update(files, total_files, bytes, total_bytes);
        }
        report.not_reached = total_files - files;
    }

    async fn check_file<'a>(&self, checker: &Checker, record: &'a CatalogRecord) -> FileResult<'a> {
        let checks = futures_util::future::join_all(self.replicas.iter().map(|replica| async {
            let checked = checker
                .check(record, replica.provider, replica.store.as_ref())
                .await;
            (replica.provider, checked)
        }))
        .await;
        FileResult { record, checks }
    }

    /// Adds one file's results to the report, repairing what can be.
    async fn settle(
        &self,
        result: FileResult<'_>,
        repairer: Option<&Repairer<'_>>,
        report: &mut VerifyReport,
    ) {
        let good: Vec<(Provider, u64)> = result
            .checks
            .iter()
            .filter_map(|(p, c)| match c {
                Checked::Good { size } => Some((*p, *size)),
                _ => None,
            })
            .collect();
        let file = result.record.file.to_string();
        for (provider, checked) in result.checks {
            let tally = report.providers.entry(provider).or_default();
            tally.checked += 1;
            match checked {
                Checked::Good { size } => {
                    tally.good += 1;
                    tally.good_bytes += size;
                }
                Checked::InFlight => report.in_flight += 1,
                Checked::Unchecked(reason) => {
                    tally.unchecked += 1;
                    report.unchecked.push(Unchecked {
                        file: file.clone(),
                        provider,
                        reason,
                    });
                }
                Checked::Problem { problem, found } => {
                    tally.problems += 1;
                    let repair = match repairer {
                        Some(_) if report.repair_refused.is_some() => None,
                        Some(repairer) if problem.repairable() => {
                            let repaired = repairer
                                .repair(result.record, provider, &problem, found.as_ref(), &good)
                                .await;
                            match repaired {
                                Ok(repair) => Some(repair),
                                Err(NoWriteAccess(reason)) => {
                                    report.repair_refused = Some(reason);
                                    None
                                }
                            }
                        }
                        _ => None,
                    };
                    report.problems.push(Finding {
                        file: file.clone(),
                        provider,
                        problem,
                        repair,
                    });
                }
            }
        }
    }
}
