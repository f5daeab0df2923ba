//! The archive's figures, folded from catalog records one at a time: what
//! `walvault status` shows, and what the functions keep in the summary
//! item so that status need not read every record. Pure: records in,
//! figures out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::keep::StagingReport;
use crate::backup::name::{BackupFile, BackupPart};
use crate::catalog::{CatalogRecord, RecordStatus};
use crate::clock::UnixMillis;
use crate::file::ArchivedFile;
use crate::provider::Provider;
use crate::seal::Fingerprint;
use crate::wal::{Segment, SegmentSize, WalFileName};

/// A record staged this recently is not folded into the stored summary:
/// compress handles files in any order, so an older neighbour may still
/// be on its way, and a gap seen now may close (the same grace as
/// `walvault verify`'s continuity check).
pub const SETTLE_GRACE_MS: u64 = 15 * 60 * 1000;

/// A record not settled this long after staging is stuck (a provider
/// refusing one file, a staging object gone): the kept fold takes it as it
/// is and names it in [`ArchiveSummary::stuck`], rather than stop there for
/// good.
pub const STUCK_AFTER_MS: u64 = 6 * 3_600_000;

/// The newest gaps listed per timeline (all are counted), the backups, the
/// corrupt files and the stuck ones listed: the item stays far below
/// DynamoDB's 400 KB.
const GAPS_LISTED: usize = 20;
const BACKUPS_LISTED: usize = 60;
const CORRUPT_LISTED: usize = 20;
const STUCK_LISTED: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiveSummary {
    /// Every WAL record up to this name (in the catalog's order) is folded
    /// in; the next read starts after it.
    pub wal_through: Option<String>,
    /// The same for base-backup parts.
    pub backups_through: Option<String>,
    /// Records folded in.
    pub files: u64,
    pub raw_bytes: u64,
    /// Copies recorded, per provider (`r2`, `b2`).
    pub providers: BTreeMap<String, ProviderTotals>,
    pub segment_size: Option<u64>,
    pub timelines: BTreeMap<u32, TimelineSpan>,
    /// Files recorded `corrupt` at archive time: never replicated.
    pub corrupt: u64,
    pub corrupt_files: Vec<String>,
    /// Files under which different content was pushed (and refused).
    pub conflicted: u64,
    /// The newest base backups, oldest first.
    pub backups: Vec<BackupLine>,
    /// Records passed over unsettled (see [`STUCK_AFTER_MS`]), not counted
    /// in the figures: status reads each again and counts it as it stands
    /// then; the re-drive counts it here once it settles.
    #[serde(default)]
    pub stuck: Vec<String>,
    /// Stuck records beyond the hundred named: counted as they stood.
    #[serde(default)]
    pub stuck_unlisted: u64,
    /// Files whose copies are sealed (see [`crate::seal`]).
    #[serde(default)]
    pub sealed: u64,
    /// Files sealed to each recipient, by fingerprint: what each key opens.
    #[serde(default)]
    pub sealed_to: BTreeMap<Fingerprint, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderTotals {
    pub files: u64,
    /// Stored (compressed) bytes.
    pub bytes: u64,
}

/// The archived segments of one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSpan {
    pub first: String,
    pub newest: String,
    /// When the newest segment reached staging.
    pub newest_staged_at: UnixMillis,
    pub segments: u64,
    /// Segments missing between the first and the newest.
    pub missing: u64,
    /// The newest gaps, in WAL order.
    pub gaps: Vec<Gap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The last segment before the gap.
    pub after: String,
    pub first_missing: String,
    pub missing: u64,
    /// The first segment after the gap.
    pub next: String,
    /// When the segment after the gap reached staging: a gap younger than
    /// [`SETTLE_GRACE_MS`] may still close.
    pub next_staged_at: UnixMillis,
}

impl TimelineSpan {
    /// Counts a segment older than the newest: before the first, or in a
    /// gap (it arrived late), which then shrinks or splits.
    fn fill(&mut self, segment: Segment, name: &str, staged_at: UnixMillis, size: SegmentSize) {
        let segno = segment.segno(size);
        let parse = |n: &str| match n.parse::<WalFileName>() {
            Ok(WalFileName::Segment(s)) => Some(s),
            _ => None,
        };
        let Some(first) = parse(&self.first) else {
            return;
        };
        if segno < first.segno(size) {
            let missing = first.segno(size) - segno - 1;
            if missing > 0 {
                self.missing += missing;
                if let Ok(first_missing) = segment.next(size) {
                    self.gaps.insert(
                        0,
                        Gap {
                            after: name.to_owned(),
                            first_missing: WalFileName::Segment(first_missing).to_string(),
                            missing,
                            next: self.first.clone(),
                            next_staged_at: 0,
                        },
                    );
                }
            }
            self.first = name.to_owned();
            self.trim_gaps();
            return;
        }
        let Some(index) = self.gaps.iter().position(|gap| {
            parse(&gap.first_missing).is_some_and(|f| {
                let from = f.segno(size);
                from <= segno && segno < from + gap.missing
            })
        }) else {
            // Already counted, or in a gap no longer listed.
            self.missing = self.missing.saturating_sub(1);
            return;
        };
        self.missing = self.missing.saturating_sub(1);
        let gap = self.gaps.remove(index);
        let from = parse(&gap.first_missing).map_or(segno, |f| f.segno(size));
        let before = segno - from;
        let after = gap.missing - before - 1;
        let mut pieces = Vec::new();
        if before > 0 {
            pieces.push(Gap {
                missing: before,
                next: name.to_owned(),
                next_staged_at: staged_at,
                ..gap.clone()
            });
        }
        if after > 0 {
            if let Ok(first_missing) = segment.next(size) {
                pieces.push(Gap {
                    after: name.to_owned(),
                    first_missing: WalFileName::Segment(first_missing).to_string(),
                    missing: after,
                    ..gap
                });
            }
        }
        for (offset, piece) in pieces.into_iter().enumerate() {
            self.gaps.insert(index + offset, piece);
        }
        self.trim_gaps();
    }

    /// Keeps the newest [`GAPS_LISTED`] gaps.
    fn trim_gaps(&mut self) {
        let excess = self.gaps.len().saturating_sub(GAPS_LISTED);
        self.gaps.drain(..excess);
    }
}

/// One base backup, as far as its records show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupLine {
    pub id: String,
    pub timeline: Option<u32>,
    pub start_segment: Option<String>,
    pub started_at_ms: Option<UnixMillis>,
    pub stopped_at_ms: Option<UnixMillis>,
    /// The tar stream's size (raw).
    pub size: Option<u64>,
    /// Stored bytes of its parts, on one provider.
    pub stored_bytes: u64,
    /// From the descriptor; `None` until it is recorded.
    pub chunk_count: Option<u32>,
    pub chunks_replicated: u32,
    pub descriptor_replicated: bool,
}

impl BackupLine {
    /// Complete: the descriptor and every chunk it lists replicated.
    /// (Restore also checks the chunks' digests against the descriptor.)
    pub fn is_complete(&self) -> bool {
        self.descriptor_replicated && self.chunk_count == Some(self.chunks_replicated)
    }
}

impl ArchiveSummary {
    /// Adds one record, whatever its state (a file still in staging is
    /// archived there: fetch serves it), and moves the position past it.
    /// Records come in the catalog's order (WAL names, then backup parts),
    /// each once.
    pub fn add(&mut self, record: &CatalogRecord) {
        self.pass(record);
        self.count(record);
    }

    /// Moves the position past `record` without counting it.
    fn pass(&mut self, record: &CatalogRecord) {
        let name = Some(record.file.to_string());
        match record.file {
            ArchivedFile::Wal(_) => self.wal_through = name,
            ArchivedFile::Backup(_) => self.backups_through = name,
        }
    }

    /// Counts `record` in the figures. A record behind the position (a
    /// stuck one that settled) fills the gap it left.
    pub fn count(&mut self, record: &CatalogRecord) {
        let name = record.file.to_string();
        self.files += 1;
        self.raw_bytes += record.raw_size;
        for (provider, target) in &record.targets {
            let totals = self
                .providers
                .entry(provider.as_str().to_owned())
                .or_default();
            totals.files += 1;
            totals.bytes += target.size;
        }
        if record.conflicts > 0 {
            self.conflicted += 1;
        }
        if record.seal.is_some() && record.status != RecordStatus::Corrupt {
            self.sealed += 1;
            for fingerprint in record.sealed_to() {
                *self.sealed_to.entry(fingerprint.clone()).or_default() += 1;
            }
        }
        if record.status == RecordStatus::Corrupt {
            self.corrupt += 1;
            if self.corrupt_files.len() < CORRUPT_LISTED {
                self.corrupt_files.push(name.clone());
            }
        }
        match &record.file {
            ArchivedFile::Wal(wal) => {
                if let (WalFileName::Segment(segment), false) =
                    (wal, record.status == RecordStatus::Corrupt)
                {
                    self.add_segment(*segment, record);
                }
            }
            ArchivedFile::Backup(part) => self.add_backup_part(*part, record),
        }
    }

    fn add_segment(&mut self, segment: Segment, record: &CatalogRecord) {
        // Every segment of a cluster has its size; one that is not a valid
        // segment size (a damaged record) does not set it for the others.
        let size = match self.segment_size.map(SegmentSize::new) {
            Some(Ok(size)) => size,
            Some(Err(_)) => return,
            None => match SegmentSize::new(record.raw_size) {
                Ok(size) => {
                    self.segment_size = Some(record.raw_size);
                    size
                }
                Err(_) => return,
            },
        };
        let name = WalFileName::Segment(segment).to_string();
        let span = self
            .timelines
            .entry(segment.timeline)
            .or_insert_with(|| TimelineSpan {
                first: name.clone(),
                newest: name.clone(),
                newest_staged_at: record.staged_at,
                segments: 0,
                missing: 0,
                gaps: Vec::new(),
            });
        span.segments += 1;
        let Ok(WalFileName::Segment(newest)) = span.newest.parse::<WalFileName>() else {
            return;
        };
        let (before, now) = (newest.segno(size), segment.segno(size));
        if now < before {
            span.fill(segment, &name, record.staged_at, size);
            return;
        }
        if now == before {
            // The span's first segment.
            return;
        }
        if now > before + 1 {
            let missing = now - before - 1;
            span.missing += missing;
            if let Ok(first_missing) = newest.next(size) {
                span.gaps.push(Gap {
                    after: span.newest.clone(),
                    first_missing: WalFileName::Segment(first_missing).to_string(),
                    missing,
                    next: name.clone(),
                    next_staged_at: record.staged_at,
                });
                span.trim_gaps();
            }
        }
        span.newest = name;
        span.newest_staged_at = record.staged_at;
    }

    fn add_backup_part(&mut self, part: BackupFile, record: &CatalogRecord) {
        let id = part.backup.to_string();
        if !self.backups.iter().any(|b| b.id == id) {
            self.backups.push(BackupLine {
                id: id.clone(),
                timeline: None,
                start_segment: None,
                started_at_ms: None,
                stopped_at_ms: None,
                size: None,
                stored_bytes: 0,
                chunk_count: None,
                chunks_replicated: 0,
                descriptor_replicated: false,
            });
            // Ids are start times in fixed width: name order is time order.
            self.backups.sort_by(|a, b| a.id.cmp(&b.id));
            if self.backups.len() > BACKUPS_LISTED {
                self.backups.remove(0);
            }
        }
        let Some(line) = self.backups.iter_mut().find(|b| b.id == id) else {
            // Older than every backup listed.
            return;
        };
        line.stored_bytes += record.stored_size().unwrap_or(0);
        let replicated = record.status == RecordStatus::Replicated;
        match part.part {
            BackupPart::Chunk(_) => line.chunks_replicated += u32::from(replicated),
            BackupPart::Descriptor => {
                line.descriptor_replicated = replicated;
                if let Some(summary) = &record.backup {
                    line.timeline = Some(summary.start_timeline);
                    line.start_segment = Some(summary.start_segment.clone());
                    line.started_at_ms = Some(summary.started_at_ms);
                    line.stopped_at_ms = Some(summary.stopped_at_ms);
                    line.size = Some(summary.size);
                    line.chunk_count = Some(summary.chunk_count);
                }
            }
        }
    }

    /// Folds `records` (the catalog's next records, in order) for keeping,
    /// up to the first one [`Keeping::may_fold`] refuses, so that what is
    /// kept does not change again except by retention, which rebuilds it.
    /// Returns whether it stopped there.
    pub fn fold_settled<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a CatalogRecord>,
        keeping: &Keeping,
    ) -> bool {
        for record in records {
            match keeping.may_fold(record) {
                Fold::Settled => self.add(record),
                Fold::Stuck if self.stuck.len() < STUCK_LISTED => {
                    self.pass(record);
                    self.stuck.push(record.file.to_string());
                }
                Fold::Stuck => {
                    self.stuck_unlisted += 1;
                    self.add(record);
                }
                Fold::NotYet => return true,
            }
        }
        false
    }

    /// The copies of every provider a complete archive would hold: for
    /// `status`, a provider with fewer than the others is missing some.
    pub fn provider(&self, provider: Provider) -> ProviderTotals {
        self.providers
            .get(provider.as_str())
            .cloned()
            .unwrap_or_default()
    }
}

/// When a record may be kept in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keeping {
    pub now: UnixMillis,
    /// What the last re-drive saw in staging: a record staged after its
    /// listing, or after the oldest object still waiting (whose record may
    /// not exist yet), is not kept yet, since passing it could leave a
    /// false gap behind. With no report, nothing staged within
    /// [`STUCK_AFTER_MS`] is kept.
    pub staging: Option<StagingReport>,
}

/// What [`Keeping::may_fold`] says of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Its state will not change by itself (replicated, or recorded
    /// corrupt), it is past the grace of out-of-order arrivals, and nothing
    /// staged before it may still be on its way.
    Settled,
    /// Not settled [`STUCK_AFTER_MS`] after it was staged and recorded.
    Stuck,
    NotYet,
}

impl Keeping {
    pub fn may_fold(&self, record: &CatalogRecord) -> Fold {
        let stuck_since = self.now.saturating_sub(STUCK_AFTER_MS);
        // A record created late (compress down, a backlog re-driven in any
        // order) counts from its creation, not from its staging.
        let arrived = record.staged_at.max(record.created_at);
        let settled_state = matches!(
            record.status,
            RecordStatus::Replicated | RecordStatus::Corrupt
        );
        if !settled_state {
            return if arrived <= stuck_since {
                Fold::Stuck
            } else {
                Fold::NotYet
            };
        }
        // An object waiting longer than a stuck record is not waited for:
        // staging's own check reports it.
        let horizon = match self.staging {
            Some(report) => match report.oldest_waiting() {
                Some(oldest) if oldest > stuck_since => oldest.min(report.at),
                _ => report.at,
            },
            None => stuck_since,
        };
        if arrived.saturating_add(SETTLE_GRACE_MS) <= self.now && record.staged_at < horizon {
            Fold::Settled
        } else {
            Fold::NotYet
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SEGMENT: u64 = 16 * 1024 * 1024;

    pub(crate) fn segment(
        name: &str,
        status: RecordStatus,
        staged_at: UnixMillis,
    ) -> CatalogRecord {
        let cluster = "main".parse().expect("a cluster name");
        let file = name.parse().expect("a file name");
        crate::testing::record_in(&cluster, file, SEGMENT, status, staged_at)
    }

    fn name(segno: u64) -> String {
        format!("00000001{:08X}{:08X}", segno >> 8, segno & 0xFF)
    }

    #[test]
    fn totals_spans_and_gaps_follow_the_records() {
        let records: Vec<CatalogRecord> = [1u64, 2, 3, 6, 7, 0x100, 0x101]
            .iter()
            .map(|n| segment(&name(*n), RecordStatus::Replicated, 0))
            .collect();
        let mut summary = ArchiveSummary::default();
        for record in &records {
            summary.add(record);
        }
        assert_eq!(summary.files, 7);
        assert_eq!(summary.raw_bytes, 7 * SEGMENT);
        assert_eq!(summary.provider(Provider::R2).bytes, 7 * SEGMENT / 4);
        assert_eq!(summary.provider(Provider::B2).files, 7);
        let span = &summary.timelines[&1];
        assert_eq!(
            (span.first.as_str(), span.newest.as_str()),
            (name(1).as_str(), name(0x101).as_str())
        );
        assert_eq!(span.segments, 7);
        // 4, 5 missing; then 8 ..= 0xFF.
        assert_eq!(span.missing, 2 + 0xF8);
        assert_eq!(span.gaps.len(), 2);
        assert_eq!(span.gaps[0].after, name(3));
        assert_eq!(span.gaps[0].first_missing, name(4));
        assert_eq!(span.gaps[1].first_missing, name(8));
        assert_eq!(span.gaps[1].next, name(0x100));
        assert_eq!(summary.wal_through.as_deref(), Some(name(0x101).as_str()));
    }

    #[test]
    fn the_newest_gaps_are_listed_and_every_one_counted() {
        let mut summary = ArchiveSummary::default();
        for n in (1..=60u64).step_by(2) {
            summary.add(&segment(&name(n), RecordStatus::Replicated, n));
        }
        let span = &summary.timelines[&1];
        assert_eq!(span.missing, 29);
        assert_eq!(span.gaps.len(), GAPS_LISTED);
        assert_eq!(span.gaps.last().map(|g| g.next.clone()), Some(name(59)));
        assert_eq!(span.gaps[0].first_missing, name(20));
    }

    #[test]
    fn a_corrupt_segment_is_counted_and_leaves_a_gap() {
        let mut summary = ArchiveSummary::default();
        summary.add(&segment(&name(1), RecordStatus::Replicated, 0));
        summary.add(&segment(&name(2), RecordStatus::Corrupt, 0));
        summary.add(&segment(&name(3), RecordStatus::Replicated, 0));
        assert_eq!(summary.corrupt, 1);
        assert_eq!(summary.corrupt_files, vec![name(2)]);
        assert_eq!(summary.timelines[&1].gaps[0].first_missing, name(2));
    }

    #[test]
    fn folding_for_keeping_stops_at_the_first_unsettled_or_recent_record() {
        let now = 100 * SETTLE_GRACE_MS;
        let old = now - 2 * SETTLE_GRACE_MS;
        let records = vec![
            segment(&name(1), RecordStatus::Replicated, old),
            segment(&name(2), RecordStatus::Partial, old),
            segment(&name(3), RecordStatus::Replicated, old),
        ];
        let keeping = Keeping {
            now,
            staging: Some(StagingReport {
                at: now,
                ..StagingReport::default()
            }),
        };
        let mut summary = ArchiveSummary::default();
        assert!(summary.fold_settled(&records, &keeping));
        assert_eq!(summary.wal_through.as_deref(), Some(name(1).as_str()));
        let recent = vec![segment(&name(2), RecordStatus::Replicated, now - 1)];
        assert!(summary.fold_settled(&recent, &keeping));
        // Staged long ago, recorded a minute ago: not yet.
        let mut late = segment(&name(2), RecordStatus::Replicated, old);
        late.created_at = now - 60_000;
        assert!(summary.fold_settled([&late], &keeping));
        // Something older still waits in staging: not yet.
        let waiting = Keeping {
            now,
            staging: Some(StagingReport {
                at: now,
                backlog: 1,
                oldest_age_ms: now - old + 1,
            }),
        };
        let settled = vec![segment(&name(2), RecordStatus::Replicated, old)];
        assert!(summary.fold_settled(&settled, &waiting));
        assert_eq!(summary.files, 1);
        assert!(!summary.fold_settled(&settled, &keeping));
        assert_eq!(summary.wal_through.as_deref(), Some(name(2).as_str()));
    }

    #[test]
    fn a_record_stuck_for_hours_is_passed_named_and_counted_once_settled() {
        let now = 100 * STUCK_AFTER_MS;
        let keeping = Keeping {
            now,
            staging: Some(StagingReport {
                at: now,
                backlog: 1,
                oldest_age_ms: 2 * STUCK_AFTER_MS,
            }),
        };
        let records = vec![
            segment(&name(1), RecordStatus::Partial, now - 2 * STUCK_AFTER_MS),
            segment(&name(2), RecordStatus::Replicated, now - 2 * STUCK_AFTER_MS),
            segment(&name(3), RecordStatus::Partial, now - SETTLE_GRACE_MS),
        ];
        let mut summary = ArchiveSummary::default();
        assert!(summary.fold_settled(&records, &keeping));
        assert_eq!(summary.stuck, vec![name(1)]);
        assert_eq!(summary.wal_through.as_deref(), Some(name(2).as_str()));
        assert_eq!(summary.files, 1);
        // Settled at last: counted, and the span reaches back to it.
        summary.count(&segment(
            &name(1),
            RecordStatus::Replicated,
            now - 2 * STUCK_AFTER_MS,
        ));
        assert_eq!(summary.files, 2);
        assert_eq!(summary.provider(Provider::B2).files, 2);
        let span = &summary.timelines[&1];
        assert_eq!((span.first.as_str(), span.missing), (name(1).as_str(), 0));
        assert!(span.gaps.is_empty());
    }

    #[test]
    fn a_segment_counted_late_closes_or_splits_its_gap() {
        let mut summary = ArchiveSummary::default();
        for n in [1, 2, 7] {
            summary.add(&segment(&name(n), RecordStatus::Replicated, 0));
        }
        assert_eq!(summary.timelines[&1].missing, 4);
        summary.count(&segment(&name(4), RecordStatus::Replicated, 0));
        let span = &summary.timelines[&1];
        assert_eq!(span.missing, 3);
        let gaps: Vec<(&str, u64, &str)> = span
            .gaps
            .iter()
            .map(|g| (g.first_missing.as_str(), g.missing, g.next.as_str()))
            .collect();
        assert_eq!(
            gaps,
            vec![
                (name(3).as_str(), 1, name(4).as_str()),
                (name(5).as_str(), 2, name(7).as_str())
            ]
        );
        for n in [3, 5, 6] {
            summary.count(&segment(&name(n), RecordStatus::Replicated, 0));
        }
        let span = &summary.timelines[&1];
        assert_eq!((span.missing, span.gaps.len(), span.segments), (0, 0, 7));
        assert_eq!(span.newest, name(7));
    }

    #[test]
    fn the_summary_survives_its_json_form() {
        let mut summary = ArchiveSummary::default();
        summary.add(&segment(&name(1), RecordStatus::Replicated, 5));
        let text = serde_json::to_string(&summary).unwrap();
        let back: ArchiveSummary = serde_json::from_str(&text).unwrap();
        assert_eq!(back, summary);
    }
}
