//! Breaks in WAL continuity: segments missing between two archived ones
//! of the same timeline. A timeline's first segment follows its parent's
//! (the switch point), so each timeline is checked from its own first
//! archived segment to its last. Pure: records in, breaks out.

use std::collections::BTreeMap;

use crate::catalog::{segment_size, CatalogRecord, RecordStatus};
use crate::clock::UnixMillis;
use crate::wal::{Segment, WalFileName};

use super::report::Break;

/// The breaks among `records` (any order). A segment recorded `corrupt`
/// was never archived, so it counts as missing. A gap whose next segment
/// reached staging at `recent` or later is not reported yet: compress
/// handles files in any order, and the missing ones may be on their way.
/// The segment size comes from `all` the cluster's replicated segments;
/// fails only when they disagree on it.
pub(super) fn breaks(
    records: &[&CatalogRecord],
    all: &[CatalogRecord],
    recent: UnixMillis,
) -> Result<Vec<Break>, String> {
    let mut by_timeline: BTreeMap<u32, BTreeMap<Segment, UnixMillis>> = BTreeMap::new();
    for record in records {
        if record.status == RecordStatus::Corrupt {
            continue;
        }
        if let Some(WalFileName::Segment(segment)) = record.file.wal() {
            by_timeline
                .entry(segment.timeline)
                .or_default()
                .insert(segment, record.staged_at);
        }
    }
    if by_timeline.is_empty() {
        return Ok(Vec::new());
    }
    let size = segment_size(all).map_err(|e| format!("segment size: {e}"))?;
    let mut breaks = Vec::new();
    for (timeline, segments) in by_timeline {
        let mut previous: Option<Segment> = None;
        for (segment, staged_at) in segments {
            if let Some(before) = previous {
                let (after, now) = (before.segno(size), segment.segno(size));
                if now > after + 1 && staged_at < recent {
                    let first_missing = before.next(size).map_err(|e| e.to_string())?;
                    breaks.push(Break {
                        timeline,
                        after: WalFileName::Segment(before).to_string(),
                        first_missing: WalFileName::Segment(first_missing).to_string(),
                        missing: now - after - 1,
                    });
                }
            }
            previous = Some(segment);
        }
    }
    Ok(breaks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Hex;

    /// Breaks among every record, none of them recent.
    fn breaks_in(records: &[CatalogRecord]) -> Result<Vec<Break>, String> {
        let refs: Vec<&CatalogRecord> = records.iter().collect();
        breaks(&refs, records, u64::MAX)
    }

    fn records(names: &[&str]) -> Vec<CatalogRecord> {
        names
            .iter()
            .map(|n| {
                let mut record = CatalogRecord::replicating(
                    "main".parse().unwrap(),
                    n.parse().unwrap(),
                    16 << 20,
                    Sha256Hex::of(n.as_bytes()),
                    0,
                    0,
                );
                record.status = RecordStatus::Replicated;
                record
            })
            .collect()
    }

    #[test]
    fn the_step_from_one_log_file_to_the_next_is_not_a_break() {
        let found = breaks_in(&records(&[
            "0000000100000000000000FE",
            "0000000100000000000000FF",
            "000000010000000100000000",
        ]))
        .unwrap();
        assert_eq!(found, vec![]);
    }

    #[test]
    fn segments_missing_inside_a_timeline_are_named_and_counted() {
        let found = breaks_in(&records(&[
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000006",
            "000000010000000000000007",
            "0000000100000000000000FF",
            "000000010000000100000001",
        ]))
        .unwrap();
        let expected = |after: &str, first: &str, missing| Break {
            timeline: 1,
            after: after.into(),
            first_missing: first.into(),
            missing,
        };
        assert_eq!(
            found,
            vec![
                expected("000000010000000000000002", "000000010000000000000003", 3),
                expected("000000010000000000000007", "000000010000000000000008", 0xF7),
                expected("0000000100000000000000FF", "000000010000000100000000", 1),
            ]
        );
    }

    #[test]
    fn a_new_timeline_starting_mid_way_is_not_a_break_and_corrupt_is_missing() {
        let mut all = records(&[
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003",
            "00000002.history",
            "000000020000000000000003",
            "000000020000000000000004",
        ]);
        assert_eq!(breaks_in(&all).unwrap(), vec![]);
        all[1].status = RecordStatus::Corrupt;
        let found = breaks_in(&all).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].first_missing, "000000010000000000000002");
    }

    #[test]
    fn a_gap_just_before_a_recent_segment_is_not_reported_yet() {
        let mut all = records(&["000000010000000000000001", "000000010000000000000003"]);
        all[1].staged_at = 1_000;
        let refs: Vec<&CatalogRecord> = all.iter().collect();
        assert_eq!(breaks(&refs, &all, 1_000).unwrap(), vec![]);
        assert_eq!(breaks(&refs, &all, 1_001).unwrap().len(), 1);
    }

    #[test]
    fn disagreeing_segment_sizes_are_refused_not_guessed() {
        let mut all = records(&["000000010000000000000001", "000000010000000000000002"]);
        all[1].raw_size = 1 << 20;
        assert!(breaks_in(&all).unwrap_err().contains("segment size"));
    }
}
