//! What `walvault verify` found, as facts a person or a script can act on.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::provider::Provider;

/// What is wrong with one provider's copy of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The catalog records the replica; the provider has no object.
    Missing,
    /// No replica is recorded and none is there: the file is not on this
    /// provider (a `partial` record, or one stuck `replicating`).
    NotReplicated,
    /// The provider holds the object, the catalog does not record it.
    Unrecorded,
    /// Not the size the catalog recorded when the replica was confirmed.
    SizeDiffers { recorded: u64, found: u64 },
    /// Not the ETag the catalog recorded: the object was written again.
    EtagDiffers { recorded: String, found: String },
    /// Its metadata names other content: not this file's object.
    OtherContent,
    /// Downloaded, it does not decompress to the recorded bytes.
    Corrupt { reason: String },
}

impl Problem {
    /// Whether a verified copy from another provider may be written over
    /// the object found: never over content the catalog does not know.
    pub fn repairable(&self) -> bool {
        !matches!(self, Problem::OtherContent)
    }
}

/// What `--repair` did about a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Repair {
    /// A copy verified on `from` was written, read back verified, recorded.
    Repaired { from: Provider },
    /// The object found verified after all; it is now recorded.
    Recorded,
    /// The file left the catalog while verify ran (the retention sweep
    /// expired it): nothing to repair.
    Gone,
    /// Not repaired; why.
    Failed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    pub provider: Provider,
    pub problem: Problem,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

impl Finding {
    /// Still wrong after this run.
    pub fn outstanding(&self) -> bool {
        !matches!(
            self.repair,
            Some(Repair::Repaired { .. } | Repair::Recorded | Repair::Gone)
        )
    }
}

/// A copy (or a provider's listing) that could not be checked: the
/// provider did not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unchecked {
    /// The file, or `listing` for the search for orphans.
    pub file: String,
    pub provider: Provider,
    pub reason: String,
}

/// An object under the cluster's prefix that no catalog record names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    pub provider: Provider,
    pub key: String,
    pub size: u64,
}

/// Segments missing between two archived ones of a timeline: recovery
/// cannot cross them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub timeline: u32,
    /// The last segment archived before the gap.
    pub after: String,
    /// The first segment missing.
    pub first_missing: String,
    pub missing: u64,
}

/// Per provider: how many copies were checked and found good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderTally {
    pub checked: u64,
    pub good: u64,
    pub good_bytes: u64,
    pub problems: u64,
    pub unchecked: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Whether every copy was downloaded and its raw sha256 checked.
    pub deep: bool,
    /// Catalog records in the range.
    pub files: u64,
    /// Their raw bytes.
    pub raw_bytes: u64,
    pub providers: BTreeMap<Provider, ProviderTally>,
    pub problems: Vec<Finding>,
    pub unchecked: Vec<Unchecked>,
    /// `None` when orphans were not looked for (a partial range, or the
    /// time ran out).
    pub orphans: Option<Vec<Orphan>>,
    pub breaks: Vec<Break>,
    /// Why continuity could not be checked (the segments disagree on
    /// their size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuity_unknown: Option<String>,
    /// Files recorded `corrupt` when they were archived: never replicated.
    pub corrupt_inputs: Vec<String>,
    /// Files whose replicas are still being written (recorded moments ago).
    pub in_flight: u64,
    /// Files not checked because the run's time ran out.
    pub not_reached: u64,
    /// Why repairs stopped early, when the configured keys cannot write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_refused: Option<String>,
}

impl VerifyReport {
    /// What was wrong and not repaired: copies, orphans, breaks, files
    /// recorded corrupt.
    pub fn outstanding(&self) -> u64 {
        let copies = self.problems.iter().filter(|f| f.outstanding()).count();
        let orphans = self.orphans.as_ref().map_or(0, Vec::len);
        (copies + orphans + self.breaks.len() + self.corrupt_inputs.len()) as u64
    }

    /// Copies repaired or found good and recorded in this run.
    pub fn repaired(&self) -> u64 {
        self.problems
            .iter()
            .filter(|f| matches!(f.repair, Some(Repair::Repaired { .. } | Repair::Recorded)))
            .count() as u64
    }

    /// Copies not checked: no answer, or not reached in time.
    pub fn unchecked_copies(&self) -> u64 {
        let providers = Provider::ALL.len() as u64;
        self.unchecked.len() as u64 + self.not_reached * providers
    }

    /// Nothing wrong and nothing left unchecked.
    pub fn all_good(&self) -> bool {
        !self.anything_wrong()
            && self.unchecked.is_empty()
            && self.continuity_unknown.is_none()
            && self.not_reached == 0
    }

    /// Something found wrong and not repaired in this run.
    pub fn anything_wrong(&self) -> bool {
        self.outstanding() > 0
    }
}
