//! The retention planner: which archived files may go, and why each other
//! one stays. Pure: records, timeline histories and the time in; a plan out.
//!
//! A recovery to a time `t` inside the window along timeline `T` needs a
//! base backup on `T`'s line that finished before `t`, and every segment of
//! `T`'s line from that backup's start onwards. So for every *live* timeline
//! (one that received WAL inside the window, or the newest one) the planner
//! anchors on the newest backup on its line that finished before the window
//! started, and keeps everything on the line from the anchor's start
//! segment. Files staged inside the window, `.history` files, and the
//! backups from each anchor on are always kept. With no usable backup at
//! all, it falls back to age alone, and says so.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::CatalogRecord;
use crate::clock::UnixMillis;
use crate::wal::{Segment, SegmentSize, WalFileKind, WalFileName};

/// One timeline switch from a `.history` file: `parent` ended at
/// `switch_position` (a segment position, see [`position`]) and the child
/// timeline continued from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub parent: u32,
    pub switch_position: (u32, u32),
}

/// The ancestry of each timeline, from its `.history` file: every ancestor
/// in order with the position where it was left.
pub type Histories = BTreeMap<u32, Vec<Switch>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeepReason {
    /// Staged inside the window.
    InWindow,
    /// Timeline history: never deleted.
    History,
    /// Needed to recover along a live timeline from its anchor backup.
    NeededFromAnchor,
    /// A backup at or after an anchor.
    Backup,
    /// A live timeline has no backup on its line: nothing on it can go.
    NoBackupOnLine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Files to delete, in WAL order.
    pub delete: Vec<WalFileName>,
    pub kept: BTreeMap<WalFileName, KeepReason>,
    /// The backup each live timeline is anchored on.
    pub anchors: BTreeMap<u32, WalFileName>,
    /// No backup was known: the plan used age alone.
    pub age_only_fallback: bool,
}

/// A segment's position in the WAL stream, independent of its timeline:
/// (log id, segment), ordered as LSNs are.
pub fn position(segment: &Segment) -> (u32, u32) {
    (segment.log, segment.seg)
}

/// A segment position: (log id, segment).
pub type Position = (u32, u32);

/// One stretch of a timeline's line: which timeline, from which position,
/// to which (inclusive; `None` for the open end).
type Stretch = (u32, Position, Option<Position>);

/// The line of `timeline`: `(timeline, from, to)` ranges of positions, from
/// the first ancestor to the timeline itself (`to` is inclusive, `None` for
/// the open end). A switch position belongs to both sides: the child's first
/// segment there starts with the parent's pages.
fn line_of(timeline: u32, histories: &Histories) -> Vec<Stretch> {
    let switches = histories.get(&timeline).cloned().unwrap_or_default();
    let mut line = Vec::new();
    let mut from = (0, 0);
    for switch in &switches {
        line.push((switch.parent, from, Some(switch.switch_position)));
        from = switch.switch_position;
    }
    line.push((timeline, from, None));
    line
}

fn on_line(line: &[Stretch], timeline: u32, pos: Position) -> bool {
    line.iter()
        .any(|(tli, from, to)| *tli == timeline && pos >= *from && to.is_none_or(|to| pos <= to))
}

/// Plans the sweep of one cluster's `records` at `now` for a window of
/// `window_ms`.
pub fn plan(
    records: &[CatalogRecord],
    histories: &Histories,
    now: UnixMillis,
    window_ms: u64,
) -> RetentionPlan {
    let window_start = now.saturating_sub(window_ms);
    let mut kept: BTreeMap<WalFileName, KeepReason> = BTreeMap::new();
    let mut candidates: BTreeSet<WalFileName> = BTreeSet::new();
    for record in records {
        let reason = if record.file.kind() == WalFileKind::History {
            Some(KeepReason::History)
        } else if record.staged_at >= window_start {
            Some(KeepReason::InWindow)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                kept.insert(record.file, reason);
            }
            None => {
                candidates.insert(record.file);
            }
        }
    }

    // Live timelines: WAL inside the window, and always the newest one.
    let mut live: BTreeSet<u32> = records
        .iter()
        .filter(|r| r.staged_at >= window_start && r.file.kind() != WalFileKind::History)
        .map(|r| r.file.timeline())
        .collect();
    if let Some(newest) = records.iter().map(|r| r.file.timeline()).max() {
        live.insert(newest);
    }

    // Backups by the segment they start in, with when they finished.
    let backups: Vec<(WalFileName, Segment, UnixMillis)> = records
        .iter()
        .filter_map(|r| match r.file {
            WalFileName::Backup { segment, .. } => Some((r.file, segment, r.staged_at)),
            _ => None,
        })
        .collect();

    if backups.is_empty() {
        return RetentionPlan {
            delete: candidates.into_iter().collect(),
            kept,
            anchors: BTreeMap::new(),
            age_only_fallback: true,
        };
    }

    let mut anchors = BTreeMap::new();
    let mut protected_lines = Vec::new();
    for timeline in &live {
        let line = line_of(*timeline, histories);
        let anchor = backups
            .iter()
            .filter(|(_, start, finished)| {
                *finished <= window_start && on_line(&line, start.timeline, position(start))
            })
            .max_by_key(|(_, _, finished)| *finished);
        match anchor {
            Some((name, start, _)) => {
                anchors.insert(*timeline, *name);
                protected_lines.push((line, Some(position(start))));
            }
            None => protected_lines.push((line, None)),
        }
    }

    let mut delete = Vec::new();
    for file in candidates {
        let reason = match file {
            WalFileName::Backup { segment, .. } => {
                let needed = protected_lines.iter().any(|(line, anchor)| {
                    on_line(line, segment.timeline, position(&segment))
                        && anchor.is_none_or(|a| position(&segment) >= a)
                });
                needed.then_some(KeepReason::Backup)
            }
            WalFileName::Segment(segment) | WalFileName::Partial(segment) => {
                protected_lines.iter().find_map(|(line, anchor)| {
                    if !on_line(line, segment.timeline, position(&segment)) {
                        return None;
                    }
                    match anchor {
                        None => Some(KeepReason::NoBackupOnLine),
                        Some(a) if position(&segment) >= *a => Some(KeepReason::NeededFromAnchor),
                        Some(_) => None,
                    }
                })
            }
            WalFileName::History { .. } => Some(KeepReason::History),
        };
        match reason {
            Some(reason) => {
                kept.insert(file, reason);
            }
            None => delete.push(file),
        }
    }
    RetentionPlan {
        delete,
        kept,
        anchors,
        age_only_fallback: false,
    }
}

/// Reads a `.history` file: lines `parent_tli<TAB>X/Y<TAB>reason`, where
/// `X/Y` is the switch LSN. Positions need the segment size.
pub fn parse_history(text: &str, segment_size: SegmentSize) -> Result<Vec<Switch>, String> {
    let mut switches = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut fields = line.split_whitespace();
        let (Some(parent), Some(lsn)) = (fields.next(), fields.next()) else {
            return Err(format!("history line {line:?} lacks a timeline and an LSN"));
        };
        let parent: u32 = parent
            .parse()
            .map_err(|_| format!("bad timeline in {line:?}"))?;
        let (hi, lo) = lsn
            .split_once('/')
            .ok_or_else(|| format!("bad LSN in {line:?}"))?;
        let lsn = (u64::from_str_radix(hi, 16).map_err(|_| format!("bad LSN in {line:?}"))? << 32)
            | u64::from_str_radix(lo, 16).map_err(|_| format!("bad LSN in {line:?}"))?;
        let per_log = segment_size.segments_per_log();
        let segno = lsn / segment_size.bytes();
        switches.push(Switch {
            parent,
            switch_position: ((segno / per_log) as u32, (segno % per_log) as u32),
        });
    }
    Ok(switches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Hex;

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    fn record(file: WalFileName, staged_at: UnixMillis) -> CatalogRecord {
        CatalogRecord::replicating(
            "c".parse().unwrap(),
            file,
            SegmentSize::DEFAULT.bytes(),
            Sha256Hex::of(file.to_string().as_bytes()),
            staged_at,
            staged_at,
        )
    }

    fn seg(timeline: u32, seg: u32) -> Segment {
        Segment {
            timeline,
            log: 0,
            seg,
        }
    }

    /// One timeline, a segment an hour, backups on days 0, 10, 20 and 35;
    /// a 30-day window at day 40.
    #[test]
    fn keeps_everything_from_the_newest_backup_before_the_window() {
        let mut records = Vec::new();
        for i in 0..(40 * 24) {
            records.push(record(WalFileName::Segment(seg(1, i)), u64::from(i) * HOUR));
        }
        for day in [0u32, 10, 20, 35] {
            records.push(record(
                WalFileName::Backup {
                    segment: seg(1, day * 24),
                    offset: 0x28,
                },
                u64::from(day) * DAY + 1,
            ));
        }
        records.push(record(WalFileName::History { timeline: 1 }, 0));
        let plan = plan(&records, &Histories::new(), 40 * DAY, 30 * DAY);
        assert!(!plan.age_only_fallback);
        // Window starts at day 10; the day-10 backup finished just after.
        assert_eq!(
            plan.anchors[&1],
            WalFileName::Backup {
                segment: seg(1, 0),
                offset: 0x28
            }
        );
        assert!(
            plan.delete.is_empty(),
            "nothing before the day-0 backup to delete"
        );

        let later = plan_at(&records, 41 * DAY);
        assert_eq!(
            later.anchors[&1],
            WalFileName::Backup {
                segment: seg(1, 240),
                offset: 0x28
            }
        );
        assert_eq!(
            later.delete.len(),
            240 + 1,
            "day 0-9 segments and the day-0 backup"
        );
        assert!(later.delete.iter().all(|f| f.segment().unwrap().seg < 240));
        assert_eq!(
            later.kept[&WalFileName::Segment(seg(1, 240))],
            KeepReason::NeededFromAnchor
        );
        assert_eq!(
            later.kept[&WalFileName::History { timeline: 1 }],
            KeepReason::History
        );
    }

    fn plan_at(records: &[CatalogRecord], now: u64) -> RetentionPlan {
        plan(records, &Histories::new(), now, 30 * DAY)
    }

    #[test]
    fn with_no_backup_it_falls_back_to_age_and_says_so() {
        let records: Vec<_> = (0..10)
            .map(|i| record(WalFileName::Segment(seg(1, i)), u64::from(i) * DAY))
            .collect();
        let plan = plan(&records, &Histories::new(), 35 * DAY, 30 * DAY);
        assert!(plan.age_only_fallback);
        assert_eq!(
            plan.delete.len(),
            5,
            "days 0 to 4 are older than the window"
        );
    }

    #[test]
    fn an_ancestor_timeline_is_kept_up_to_the_switch() {
        // Timeline 1: segments 0..100, switch at segment 60 to timeline 2, which
        // runs 60..200. The only backup is on timeline 1 at segment 10.
        let mut records = Vec::new();
        for i in 0..100 {
            records.push(record(WalFileName::Segment(seg(1, i)), u64::from(i) * HOUR));
        }
        for i in 60..200 {
            records.push(record(
                WalFileName::Segment(seg(2, i)),
                (60 + u64::from(i)) * HOUR,
            ));
        }
        records.push(record(
            WalFileName::Backup {
                segment: seg(1, 10),
                offset: 0,
            },
            10 * HOUR + 1,
        ));
        records.push(record(WalFileName::History { timeline: 2 }, 120 * HOUR));
        let histories = Histories::from([(
            2,
            vec![Switch {
                parent: 1,
                switch_position: (0, 60),
            }],
        )]);
        let plan = plan(&records, &histories, 400 * HOUR, 100 * HOUR);
        assert_eq!(
            plan.anchors.get(&2),
            Some(&WalFileName::Backup {
                segment: seg(1, 10),
                offset: 0
            })
        );
        // Timeline 1 from the backup to the switch is on timeline 2's line.
        for i in 10..=60 {
            assert!(
                !plan.delete.contains(&WalFileName::Segment(seg(1, i))),
                "1/{i}"
            );
        }
        // Timeline 1 past the switch is on no live line, and old: it goes.
        assert!(plan.delete.contains(&WalFileName::Segment(seg(1, 99))));
        assert!(plan.delete.contains(&WalFileName::Segment(seg(1, 5))));
    }

    #[test]
    fn history_files_parse_into_switch_positions() {
        let text =
            "1\t0/3000000\tno recovery target specified\n\n2\t1/A0000098\tbefore 2026-11-01\n";
        let switches = parse_history(text, SegmentSize::DEFAULT).unwrap();
        assert_eq!(
            switches,
            [
                Switch {
                    parent: 1,
                    switch_position: (0, 3)
                },
                Switch {
                    parent: 2,
                    switch_position: (1, 0xA0)
                }
            ]
        );
        assert!(parse_history("garbage", SegmentSize::DEFAULT).is_err());
        assert!(parse_history("1\tzz/1\tx", SegmentSize::DEFAULT).is_err());
    }

    /// A tiny deterministic generator, so failures name a reproducible seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// A random archive: timelines branching off random points of random
    /// earlier ones (parents may go on writing), backups at random times,
    /// gaps in time.
    struct Archive {
        records: Vec<CatalogRecord>,
        histories: Histories,
        /// Per timeline, its segments: position and time written.
        segments: BTreeMap<u32, Vec<(u32, u64)>>,
        now: u64,
        window: u64,
    }

    fn random_archive(rng: &mut Rng) -> Archive {
        let mut clock = 0u64;
        let mut segments: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::from([(1, Vec::new())]);
        let mut histories = Histories::new();
        let mut records = Vec::new();
        let mut next_position: BTreeMap<u32, u32> = BTreeMap::from([(1, 0)]);
        let steps = 50 + rng.below(250);
        for _ in 0..steps {
            clock += HOUR * (1 + rng.below(6)) + if rng.below(40) == 0 { 5 * DAY } else { 0 };
            let timelines: Vec<u32> = segments.keys().copied().collect();
            let tli = timelines[rng.below(timelines.len() as u64) as usize];
            match rng.below(30) {
                0 if segments.len() < 4 && !segments[&tli].is_empty() => {
                    // Branch a new timeline off `tli` at one of its segments.
                    let existing = &segments[&tli];
                    let (at, _) = existing[rng.below(existing.len() as u64) as usize];
                    let child = *segments.keys().max().unwrap() + 1;
                    let mut ancestry: Vec<Switch> =
                        histories.get(&tli).cloned().unwrap_or_default();
                    ancestry.retain(|s| s.switch_position <= (0, at));
                    ancestry.push(Switch {
                        parent: tli,
                        switch_position: (0, at),
                    });
                    histories.insert(child, ancestry);
                    records.push(record(WalFileName::History { timeline: child }, clock));
                    segments.insert(child, vec![(at, clock)]);
                    records.push(record(WalFileName::Segment(seg(child, at)), clock));
                    next_position.insert(child, at + 1);
                }
                1..=3 if !segments[&tli].is_empty() => {
                    // A base backup starting in the timeline's latest segment.
                    let (at, _) = *segments[&tli].last().unwrap();
                    records.push(record(
                        WalFileName::Backup {
                            segment: seg(tli, at),
                            offset: 0x28,
                        },
                        clock,
                    ));
                }
                _ => {
                    let at = next_position[&tli];
                    segments.get_mut(&tli).unwrap().push((at, clock));
                    records.push(record(WalFileName::Segment(seg(tli, at)), clock));
                    next_position.insert(tli, at + 1);
                }
            }
        }
        let now = clock + rng.below(10 * DAY);
        let window = DAY * (1 + rng.below(30));
        Archive {
            records,
            histories,
            segments,
            now,
            window,
        }
    }

    /// Whether a recovery to `t` along `timeline` is possible with `present`
    /// files: some backup on the line that finished by `t`, and every
    /// segment of the line from its start to the one holding `t`.
    fn recoverable(
        archive: &Archive,
        present: &BTreeSet<WalFileName>,
        timeline: u32,
        t: u64,
    ) -> bool {
        let line = line_of(timeline, &archive.histories);
        let mut on_line_segments: Vec<(Segment, u64)> = Vec::new();
        for (tli, from, to) in &line {
            for (pos, at) in &archive.segments[tli] {
                let p = (0, *pos);
                if p >= *from && to.is_none_or(|to| p <= to) {
                    on_line_segments.push((seg(*tli, *pos), *at));
                }
            }
        }
        on_line_segments.sort_by_key(|(s, at)| (s.seg, *at));
        let end = on_line_segments
            .iter()
            .find(|(_, at)| *at >= t)
            .or(on_line_segments.last())
            .map(|(s, _)| s.seg);
        let Some(end) = end else { return false };
        archive.records.iter().any(|r| match r.file {
            WalFileName::Backup { segment, .. }
                if r.staged_at <= t && on_line(&line, segment.timeline, position(&segment)) =>
            {
                on_line_segments
                    .iter()
                    .filter(|(s, _)| s.seg >= segment.seg && s.seg <= end)
                    .all(|(s, _)| present.contains(&WalFileName::Segment(*s)))
            }
            _ => false,
        })
    }

    #[test]
    fn property_every_target_in_the_window_stays_recoverable() {
        let mut deleted_somewhere = 0;
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let archive = random_archive(&mut rng);
            let plan = plan(
                &archive.records,
                &archive.histories,
                archive.now,
                archive.window,
            );
            let window_start = archive.now.saturating_sub(archive.window);
            let all: BTreeSet<WalFileName> = archive.records.iter().map(|r| r.file).collect();
            let deleted: BTreeSet<WalFileName> = plan.delete.iter().copied().collect();
            let present: BTreeSet<WalFileName> = all.difference(&deleted).copied().collect();
            deleted_somewhere += deleted.len();

            for r in &archive.records {
                if deleted.contains(&r.file) {
                    assert!(
                        r.staged_at < window_start,
                        "seed {seed}: deleted {} from inside the window",
                        r.file
                    );
                    assert_ne!(
                        r.file.kind(),
                        WalFileKind::History,
                        "seed {seed}: deleted a history file"
                    );
                }
            }
            assert_eq!(
                deleted.len() + plan.kept.len(),
                all.len(),
                "seed {seed}: every file is planned once"
            );
            if plan.age_only_fallback {
                continue;
            }
            let live: BTreeSet<u32> = archive
                .records
                .iter()
                .filter(|r| r.staged_at >= window_start && r.file.kind() != WalFileKind::History)
                .map(|r| r.file.timeline())
                .chain(archive.segments.keys().max().copied())
                .collect();
            let mut targets: Vec<u64> = archive
                .records
                .iter()
                .map(|r| r.staged_at)
                .filter(|t| *t >= window_start)
                .collect();
            targets.push(window_start);
            targets.push(archive.now);
            for timeline in live {
                for t in &targets {
                    if recoverable(&archive, &all, timeline, *t) {
                        assert!(
                            recoverable(&archive, &present, timeline, *t),
                            "seed {seed}: recovery to {t} along timeline {timeline} lost (window from {window_start})"
                        );
                    }
                }
            }
        }
        assert!(
            deleted_somewhere > 1000,
            "the property must exercise deletion, deleted {deleted_somewhere}"
        );
    }
}
