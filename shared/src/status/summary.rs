//! The archive's figures, folded from catalog records one at a time: what
//! `walvault status` shows, and what the functions keep in the summary
//! item so that status need not read every record. Pure: records in,
//! figures out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backup::name::{BackupFile, BackupPart};
use crate::catalog::{CatalogRecord, RecordStatus};
use crate::clock::UnixMillis;
use crate::file::ArchivedFile;
use crate::provider::Provider;
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
    /// Records folded before they settled (see [`STUCK_AFTER_MS`]): status
    /// reads each again.
    #[serde(default)]
    pub stuck: Vec<String>,
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
    /// archived there: fetch serves it). Records come in the catalog's
    /// order (WAL names, then backup parts), each once.
    pub fn add(&mut self, record: &CatalogRecord) {
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
        if record.status == RecordStatus::Corrupt {
            self.corrupt += 1;
            if self.corrupt_files.len() < CORRUPT_LISTED {
                self.corrupt_files.push(name.clone());
            }
        }
        match &record.file {
            ArchivedFile::Wal(wal) => {
                self.wal_through = Some(name);
                if let (WalFileName::Segment(segment), false) =
                    (wal, record.status == RecordStatus::Corrupt)
                {
                    self.add_segment(*segment, record);
                }
            }
            ArchivedFile::Backup(part) => {
                self.backups_through = Some(name);
                self.add_backup_part(*part, record);
            }
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
        if now <= before {
            // The span's first segment, or one out of order: nothing to extend.
            return;
        }
        if now > before + 1 {
            let missing = now - before - 1;
            span.missing += missing;
            if let Ok(first_missing) = newest.next(size) {
                if span.gaps.len() == GAPS_LISTED {
                    span.gaps.remove(0);
                }
                span.gaps.push(Gap {
                    after: span.newest.clone(),
                    first_missing: WalFileName::Segment(first_missing).to_string(),
                    missing,
                    next: name.clone(),
                    next_staged_at: record.staged_at,
                });
            }
        }
        span.newest = name;
        span.newest_staged_at = record.staged_at;
    }

    fn add_backup_part(&mut self, part: BackupFile, record: &CatalogRecord) {
        let id = part.backup.to_string();
        if self.backups.last().is_none_or(|b| b.id != id) {
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
            if self.backups.len() > BACKUPS_LISTED {
                self.backups.remove(0);
            }
        }
        let Some(line) = self.backups.last_mut() else {
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
                Fold::Settled => {}
                Fold::Stuck if self.stuck.len() < STUCK_LISTED => {
                    self.stuck.push(record.file.to_string());
                }
                Fold::Stuck | Fold::NotYet => return true,
            }
            self.add(record);
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
    /// When the oldest object still waiting in staging was staged, as the
    /// re-drive just measured it: its record may not exist yet, and a
    /// record after it folded now would leave a false gap behind it.
    pub oldest_waiting: Option<UnixMillis>,
}

/// What [`Keeping::may_fold`] says of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Its state will not change by itself (replicated, or recorded
    /// corrupt), it is past the grace of out-of-order arrivals, and nothing
    /// older waits in staging.
    Settled,
    /// Not settled, long past [`STUCK_AFTER_MS`]: folded as it is, named.
    Stuck,
    NotYet,
}

impl Keeping {
    pub fn may_fold(&self, record: &CatalogRecord) -> Fold {
        let stuck_since = self.now.saturating_sub(STUCK_AFTER_MS);
        if record.staged_at <= stuck_since
            && !matches!(
                record.status,
                RecordStatus::Replicated | RecordStatus::Corrupt
            )
        {
            return Fold::Stuck;
        }
        // A record created late (compress down, a backlog re-driven in any
        // order) counts from its creation, not from its staging.
        let arrived = record.staged_at.max(record.created_at);
        // A staging object waiting longer than a stuck record is not waited
        // for: staging's own check reports it.
        let behind_waiting = self
            .oldest_waiting
            .is_some_and(|oldest| oldest > stuck_since && record.staged_at >= oldest);
        let settled = matches!(
            record.status,
            RecordStatus::Replicated | RecordStatus::Corrupt
        ) && arrived.saturating_add(SETTLE_GRACE_MS) <= self.now
            && !behind_waiting;
        if settled {
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
            oldest_waiting: None,
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
            oldest_waiting: Some(old - 1),
        };
        let settled = vec![segment(&name(2), RecordStatus::Replicated, old)];
        assert!(summary.fold_settled(&settled, &waiting));
        assert_eq!(summary.files, 1);
        assert!(!summary.fold_settled(&settled, &keeping));
        assert_eq!(summary.wal_through.as_deref(), Some(name(2).as_str()));
    }

    #[test]
    fn a_record_stuck_for_hours_is_folded_as_it_is_and_named() {
        let now = 100 * STUCK_AFTER_MS;
        let keeping = Keeping {
            now,
            oldest_waiting: Some(now - 2 * STUCK_AFTER_MS),
        };
        let records = vec![
            segment(&name(1), RecordStatus::Partial, now - 2 * STUCK_AFTER_MS),
            segment(&name(2), RecordStatus::Replicated, now - 2 * STUCK_AFTER_MS),
            segment(&name(3), RecordStatus::Partial, now - SETTLE_GRACE_MS),
        ];
        let mut summary = ArchiveSummary::default();
        assert!(summary.fold_settled(&records, &keeping));
        assert_eq!(summary.stuck, vec![name(1)]);
        assert_eq!(summary.files, 2);
        assert_eq!(summary.provider(Provider::B2).files, 1);
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
