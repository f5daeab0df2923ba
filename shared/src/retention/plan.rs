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
//! backups from each anchor on are always kept. A backup is a `.backup`
//! history file or a complete base backup in the catalog (a backup from a
//! standby leaves only the latter); expired catalog backups are deleted
//! with all their parts. With no backup at all it deletes nothing, unless
//! age-only retention was chosen.

use std::collections::{BTreeMap, BTreeSet};

use crate::backup::name::BackupId;
use crate::catalog::CatalogRecord;
use crate::clock::UnixMillis;
use crate::wal::{Segment, SegmentSize, WalFileKind, WalFileName};

/// What the planner needs of an archived WAL file's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalEntry {
    pub file: WalFileName,
    /// When it reached staging: its age.
    pub staged_at: UnixMillis,
}

impl WalEntry {
    /// The entry of a WAL file's record; `None` for other records.
    pub fn of(record: &CatalogRecord) -> Option<WalEntry> {
        Some(WalEntry {
            file: record.file.wal()?,
            staged_at: record.staged_at,
        })
    }
}

/// One timeline switch from a `.history` file: `parent` ended at byte
/// `switch_offset` of the segment at `switch_position` (see [`position`])
/// and the child timeline continued from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub parent: u32,
    pub switch_position: (u32, u32),
    pub switch_offset: u64,
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
    /// No base backup is known at all, and age-only retention was not
    /// chosen: nothing can go.
    NoBaseBackup,
}

/// A base backup the planner can anchor on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackupRef {
    /// A `.backup` history file in the archive.
    HistoryFile(WalFileName),
    /// A complete base backup in the catalog.
    Catalog(BackupId),
}

impl std::fmt::Display for BackupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupRef::HistoryFile(name) => write!(f, "{name}"),
            BackupRef::Catalog(id) => write!(f, "backup {id}"),
        }
    }
}

/// What the planner needs of a complete base backup in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupEntry {
    pub id: BackupId,
    /// The segment it starts in, and the start's byte offset in it.
    pub start: Segment,
    pub offset: u32,
    /// When it became consistent.
    pub finished: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Files to delete, in WAL order.
    pub delete: Vec<WalFileName>,
    pub kept: BTreeMap<WalFileName, KeepReason>,
    /// Catalog backups to delete, every part of them.
    pub delete_backups: Vec<BackupId>,
    pub kept_backups: BTreeMap<BackupId, KeepReason>,
    /// The backup each live timeline is anchored on.
    pub anchors: BTreeMap<u32, BackupRef>,
    /// No base backup was known: the plan kept everything, or (if the
    /// rules allow it) deleted by age alone.
    pub no_base_backup: bool,
}

/// A segment's position in the WAL stream, independent of its timeline:
/// (log id, segment), ordered as LSNs are.
pub fn position(segment: &Segment) -> (u32, u32) {
    (segment.log, segment.seg)
}

/// A segment position: (log id, segment).
pub type Position = (u32, u32);

/// One stretch of a timeline's line: which timeline, from which position,
/// to which switch (inclusive; `None` for the open end).
type Stretch = (u32, Position, Option<Switch>);

/// The line of `timeline`: `(timeline, from, to)` ranges of positions, from
/// the first ancestor to the timeline itself. A switch position belongs to
/// both sides: the child's first segment there starts with the parent's
/// pages, so the parent's copy is kept too.
fn line_of(timeline: u32, histories: &Histories) -> Vec<Stretch> {
    let switches = histories.get(&timeline).cloned().unwrap_or_default();
    let mut line = Vec::new();
    let mut from = (0, 0);
    for switch in &switches {
        line.push((switch.parent, from, Some(*switch)));
        from = switch.switch_position;
    }
    line.push((timeline, from, None));
    line
}

fn on_line(line: &[Stretch], timeline: u32, pos: Position) -> bool {
    line.iter().any(|(tli, from, to)| {
        *tli == timeline && pos >= *from && to.is_none_or(|to| pos <= to.switch_position)
    })
}

/// Whether a base backup that started at `offset` of `segment` lies on the
/// line: in the segment of a switch, only if it started before the switch
/// (a backup of the parent taken after the child forked is not the
/// child's).
fn backup_on_line(line: &[Stretch], segment: &Segment, offset: u32) -> bool {
    let pos = position(segment);
    line.iter().any(|(tli, from, to)| {
        *tli == segment.timeline
            && pos >= *from
            && to.is_none_or(|to| {
                pos < to.switch_position
                    || (pos == to.switch_position && u64::from(offset) < to.switch_offset)
            })
    })
}

/// What the sweep may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How far back point-in-time recovery must stay possible.
    pub window_ms: u64,
    /// With no base backup known at all, delete files older than the window
    /// anyway (by age alone). Off by default: backups taken from a standby
    /// write no `.backup` file, and deleting by age would then delete the
    /// WAL those backups need.
    pub age_only_without_backups: bool,
}

impl Rules {
    /// `WALVAULT_RETENTION_DAYS` and `WALVAULT_RETENTION_AGE_ONLY`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Rules {
            window_ms: config.retention.as_millis() as u64,
            age_only_without_backups: config.retention_age_only,
        }
    }
}

/// A backup: its name, where it starts, and when it finished.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    name: BackupRef,
    start: Segment,
    offset: u32,
    finished: UnixMillis,
}

/// A live timeline's line, and the position of its anchor backup (`None`:
/// no backup on the line, so nothing on it may go).
type ProtectedLine = (Vec<Stretch>, Option<Position>);

/// Plans the sweep of one cluster's WAL `records` and complete catalog
/// `backups` at `now`.
pub fn plan(
    records: &[WalEntry],
    backups: &[BackupEntry],
    histories: &Histories,
    now: UnixMillis,
    rules: &Rules,
) -> RetentionPlan {
    let window_start = now.saturating_sub(rules.window_ms);
    let (mut kept, candidates) = split_by_age(records, window_start);
    let anchors_known: Vec<Anchor> = records
        .iter()
        .filter_map(|r| match r.file {
            WalFileName::Backup { segment, offset } => Some(Anchor {
                name: BackupRef::HistoryFile(r.file),
                start: segment,
                offset,
                finished: r.staged_at,
            }),
            _ => None,
        })
        .chain(backups.iter().map(|b| Anchor {
            name: BackupRef::Catalog(b.id),
            start: b.start,
            offset: b.offset,
            finished: b.finished,
        }))
        .collect();
    if anchors_known.is_empty() {
        let delete = if rules.age_only_without_backups {
            candidates.into_iter().collect()
        } else {
            kept.extend(
                candidates
                    .into_iter()
                    .map(|f| (f, KeepReason::NoBaseBackup)),
            );
            Vec::new()
        };
        return RetentionPlan {
            delete,
            kept,
            delete_backups: Vec::new(),
            kept_backups: BTreeMap::new(),
            anchors: BTreeMap::new(),
            no_base_backup: true,
        };
    }
    let (anchors, protected) = anchor_lines(records, histories, &anchors_known, window_start);
    let mut delete = Vec::new();
    for file in candidates {
        match reason_to_keep(&file, &protected) {
            Some(reason) => {
                kept.insert(file, reason);
            }
            None => delete.push(file),
        }
    }
    let mut delete_backups = Vec::new();
    let mut kept_backups = BTreeMap::new();
    for backup in backups {
        let reason = if backup.finished >= window_start {
            Some(KeepReason::InWindow)
        } else {
            backup_needed(&backup.start, backup.offset, &protected)
        };
        match reason {
            Some(reason) => {
                kept_backups.insert(backup.id, reason);
            }
            None => delete_backups.push(backup.id),
        }
    }
    RetentionPlan {
        delete,
        kept,
        delete_backups,
        kept_backups,
        anchors,
        no_base_backup: false,
    }
}

/// History files and files staged inside the window are kept; the rest are
/// candidates for deletion.
fn split_by_age(
    records: &[WalEntry],
    window_start: UnixMillis,
) -> (BTreeMap<WalFileName, KeepReason>, BTreeSet<WalFileName>) {
    let mut kept = BTreeMap::new();
    let mut candidates = BTreeSet::new();
    for record in records {
        if record.file.kind() == WalFileKind::History {
            kept.insert(record.file, KeepReason::History);
        } else if record.staged_at >= window_start {
            kept.insert(record.file, KeepReason::InWindow);
        } else {
            candidates.insert(record.file);
        }
    }
    (kept, candidates)
}

/// For every live timeline (WAL inside the window, and always the newest
/// one), its line and the newest backup on it that finished before the
/// window started.
fn anchor_lines(
    records: &[WalEntry],
    histories: &Histories,
    backups: &[Anchor],
    window_start: UnixMillis,
) -> (BTreeMap<u32, BackupRef>, Vec<ProtectedLine>) {
    let mut live: BTreeSet<u32> = records
        .iter()
        .filter(|r| r.staged_at >= window_start && r.file.kind() != WalFileKind::History)
        .map(|r| r.file.timeline())
        .collect();
    live.extend(records.iter().map(|r| r.file.timeline()).max());
    let mut anchors = BTreeMap::new();
    let mut protected = Vec::new();
    for timeline in live {
        let line = line_of(timeline, histories);
        let anchor = backups
            .iter()
            .filter(|b| b.finished <= window_start && backup_on_line(&line, &b.start, b.offset))
            .max_by_key(|b| (b.finished, b.name));
        if let Some(anchor) = anchor {
            anchors.insert(timeline, anchor.name);
        }
        protected.push((line, anchor.map(|b| position(&b.start))));
    }
    (anchors, protected)
}

/// Whether a backup older than the window is still needed: it starts on a
/// protected line at or after that line's anchor.
fn backup_needed(start: &Segment, offset: u32, protected: &[ProtectedLine]) -> Option<KeepReason> {
    let needed = protected.iter().any(|(line, anchor)| {
        backup_on_line(line, start, offset) && anchor.is_none_or(|a| position(start) >= a)
    });
    needed.then_some(KeepReason::Backup)
}

/// Why a file older than the window must stay, if it must.
fn reason_to_keep(file: &WalFileName, protected: &[ProtectedLine]) -> Option<KeepReason> {
    match *file {
        WalFileName::Backup { segment, offset } => backup_needed(&segment, offset, protected),
        WalFileName::Segment(segment) | WalFileName::Partial(segment) => {
            protected.iter().find_map(|(line, anchor)| {
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
            switch_offset: lsn % segment_size.bytes(),
        });
    }
    Ok(switches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    fn record(file: WalFileName, staged_at: UnixMillis) -> WalEntry {
        WalEntry { file, staged_at }
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
        let plan = plan(&records, &[], &Histories::new(), 40 * DAY, &rules(30 * DAY));
        assert!(!plan.no_base_backup);
        // Window starts at day 10; the day-10 backup finished just after.
        assert_eq!(
            plan.anchors[&1],
            BackupRef::HistoryFile(WalFileName::Backup {
                segment: seg(1, 0),
                offset: 0x28
            })
        );
        assert!(
            plan.delete.is_empty(),
            "nothing before the day-0 backup to delete"
        );

        let later = plan_at(&records, 41 * DAY);
        assert_eq!(
            later.anchors[&1],
            BackupRef::HistoryFile(WalFileName::Backup {
                segment: seg(1, 240),
                offset: 0x28
            })
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

    fn plan_at(records: &[WalEntry], now: u64) -> RetentionPlan {
        plan(records, &[], &Histories::new(), now, &rules(30 * DAY))
    }

    fn rules(window_ms: u64) -> Rules {
        Rules {
            window_ms,
            age_only_without_backups: false,
        }
    }

    #[test]
    fn with_no_backup_nothing_goes_unless_age_only_retention_was_chosen() {
        let records: Vec<_> = (0..10)
            .map(|i| record(WalFileName::Segment(seg(1, i)), u64::from(i) * DAY))
            .collect();
        let refused = plan(&records, &[], &Histories::new(), 35 * DAY, &rules(30 * DAY));
        assert!(refused.no_base_backup);
        assert!(refused.delete.is_empty());
        assert_eq!(
            refused
                .kept
                .values()
                .filter(|r| **r == KeepReason::NoBaseBackup)
                .count(),
            5
        );
        let age_only = Rules {
            age_only_without_backups: true,
            ..rules(30 * DAY)
        };
        let by_age = plan(&records, &[], &Histories::new(), 35 * DAY, &age_only);
        assert!(by_age.no_base_backup);
        assert_eq!(
            by_age.delete.len(),
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
                switch_offset: 0,
            }],
        )]);
        let plan = plan(&records, &[], &histories, 400 * HOUR, &rules(100 * HOUR));
        assert_eq!(
            plan.anchors.get(&2),
            Some(&BackupRef::HistoryFile(WalFileName::Backup {
                segment: seg(1, 10),
                offset: 0
            }))
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

    /// Timeline 2 forked from timeline 1 inside segment 15; a backup of
    /// timeline 1 started in that segment after the fork is not on
    /// timeline 2's line, so timeline 2 stays anchored on the older backup.
    #[test]
    fn a_parent_backup_started_after_the_fork_does_not_anchor_the_child() {
        let mut records: Vec<WalEntry> = (0..20)
            .map(|i| record(WalFileName::Segment(seg(1, i)), u64::from(i) * HOUR))
            .collect();
        records.push(record(WalFileName::Segment(seg(2, 15)), 30 * HOUR));
        let old = WalFileName::Backup {
            segment: seg(1, 5),
            offset: 0x28,
        };
        let after_fork = WalFileName::Backup {
            segment: seg(1, 15),
            offset: 0x8000,
        };
        records.push(record(old, 5 * HOUR));
        records.push(record(after_fork, 16 * HOUR));
        records.push(record(WalFileName::History { timeline: 2 }, 30 * HOUR));
        let fork = Switch {
            parent: 1,
            switch_position: (0, 15),
            switch_offset: 0x100,
        };
        let histories = Histories::from([(2, vec![fork])]);
        let plan = plan(
            &records,
            &[],
            &histories,
            30 * HOUR + 30 * DAY,
            &rules(30 * DAY),
        );
        assert_eq!(plan.anchors[&2], BackupRef::HistoryFile(old));
        for i in 5..15 {
            assert!(
                !plan.delete.contains(&WalFileName::Segment(seg(1, i))),
                "1/{i}"
            );
        }
        let before_the_switch = Switch {
            switch_offset: 0x10000,
            ..fork
        };
        let histories = Histories::from([(2, vec![before_the_switch])]);
        let plan = super::plan(
            &records,
            &[],
            &histories,
            30 * HOUR + 30 * DAY,
            &rules(30 * DAY),
        );
        assert_eq!(
            plan.anchors[&2],
            BackupRef::HistoryFile(after_fork),
            "started before the switch: on the line"
        );
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
                    switch_position: (0, 3),
                    switch_offset: 0,
                },
                Switch {
                    parent: 2,
                    switch_position: (1, 0xA0),
                    switch_offset: 0x98,
                }
            ]
        );
        assert!(parse_history("garbage", SegmentSize::DEFAULT).is_err());
        assert!(parse_history("1\tzz/1\tx", SegmentSize::DEFAULT).is_err());
    }

    /// The archive a random history of a cluster leaves: timelines branch
    /// off points of earlier ones (parents may go on writing), base backups
    /// start at random times, time has gaps. Built by interpreting `ops`,
    /// so that proptest shrinks a failure to the fewest steps.
    #[derive(Debug)]
    struct Simulation {
        records: Vec<WalEntry>,
        /// Complete backups known only to the catalog (from a standby).
        backups: Vec<BackupEntry>,
        histories: Histories,
        timelines: BTreeMap<u32, SimTimeline>,
        now: u64,
        window: u64,
    }

    /// Base backups start at this byte of their segment.
    const BACKUP_OFFSET: u32 = 0x28;

    /// A simulated timeline: where it branched off (parent, position, byte
    /// offset of the switch), and its segments (position, time written).
    type SimTimeline = (Option<(u32, u32, u64)>, Vec<(u32, u64)>);

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Write(u8),
        /// Off which timeline, at which of its segments, and whether the
        /// switch lies before or after where backups start in a segment.
        Branch(u8, u8, bool),
        Backup(u8),
        CatalogBackup(u8),
        Gap,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => any::<u8>().prop_map(Op::Write),
            1 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(t, a, e)| Op::Branch(t, a, e)),
            2 => any::<u8>().prop_map(Op::Backup),
            2 => any::<u8>().prop_map(Op::CatalogBackup),
            1 => Just(Op::Gap),
        ]
    }

    fn simulate(ops: &[Op], hours_per_op: u64, window_days: u64, idle_days: u64) -> Simulation {
        let mut sim = Simulation {
            records: Vec::new(),
            backups: Vec::new(),
            histories: Histories::new(),
            timelines: BTreeMap::from([(1, (None, Vec::new()))]),
            now: 0,
            window: DAY * window_days,
        };
        let pick = |sim: &Simulation, n: u8| {
            let keys: Vec<u32> = sim.timelines.keys().copied().collect();
            keys[usize::from(n) % keys.len()]
        };
        for op in ops {
            sim.now += HOUR * hours_per_op;
            match *op {
                Op::Gap => sim.now += 5 * DAY,
                Op::Write(t) => {
                    let tli = pick(&sim, t);
                    let segments = &mut sim.timelines.get_mut(&tli).unwrap().1;
                    let at = segments.last().map_or(0, |(p, _)| p + 1);
                    segments.push((at, sim.now));
                    sim.records
                        .push(record(WalFileName::Segment(seg(tli, at)), sim.now));
                }
                Op::Backup(t) => {
                    let tli = pick(&sim, t);
                    if let Some((at, _)) = sim.timelines[&tli].1.last() {
                        let backup = WalFileName::Backup {
                            segment: seg(tli, *at),
                            offset: BACKUP_OFFSET,
                        };
                        sim.records.push(record(backup, sim.now));
                    }
                }
                Op::CatalogBackup(t) => {
                    let tli = pick(&sim, t);
                    if let Some((at, _)) = sim.timelines[&tli].1.last() {
                        sim.backups.push(BackupEntry {
                            id: BackupId::started_at(sim.now / 1000),
                            start: seg(tli, *at),
                            offset: BACKUP_OFFSET,
                            finished: sim.now,
                        });
                    }
                }
                Op::Branch(t, a, early) if sim.timelines.len() < 4 => {
                    let parent = pick(&sim, t);
                    let written = &sim.timelines[&parent].1;
                    if written.is_empty() {
                        continue;
                    }
                    let (at, _) = written[usize::from(a) % written.len()];
                    let mut switch_offset = if early { 0x10 } else { 0x100 };
                    if let Some((_, start, offset)) = sim.timelines[&parent].0.filter(|b| b.1 == at)
                    {
                        // A timeline can fork only after its parent began.
                        debug_assert_eq!(start, at);
                        switch_offset = switch_offset.max(offset + 0x10);
                    }
                    let child = sim.timelines.keys().max().unwrap() + 1;
                    let mut ancestry = sim.histories.get(&parent).cloned().unwrap_or_default();
                    ancestry.retain(|s| s.switch_position <= (0, at));
                    ancestry.push(Switch {
                        parent,
                        switch_position: (0, at),
                        switch_offset,
                    });
                    sim.histories.insert(child, ancestry);
                    sim.records
                        .push(record(WalFileName::History { timeline: child }, sim.now));
                    sim.records
                        .push(record(WalFileName::Segment(seg(child, at)), sim.now));
                    sim.timelines.insert(
                        child,
                        (Some((parent, at, switch_offset)), vec![(at, sim.now)]),
                    );
                }
                Op::Branch(..) => {}
            }
        }
        sim.now += DAY * idle_days;
        sim
    }

    /// The oracle, written from the simulation alone (not from the
    /// planner's histories or lines): the segments a recovery along
    /// `timeline` reads, in order. A child's segment at its branch position
    /// replaces the parent's one there.
    fn path(sim: &Simulation, timeline: u32) -> Vec<(u32, u32, u64)> {
        let (branch, own) = &sim.timelines[&timeline];
        let mut path = match branch {
            Some((parent, at, _)) => path(sim, *parent)
                .into_iter()
                .filter(|(_, pos, _)| pos < at)
                .collect(),
            None => Vec::new(),
        };
        path.extend(own.iter().map(|(pos, at)| (timeline, *pos, *at)));
        path
    }

    /// Where in `path(timeline)` a backup started in `pos` of `tli` starts
    /// reading, if it is on that path at all: in a switch segment, only a
    /// backup that started before the switch continues into the child.
    fn backup_start(sim: &Simulation, timeline: u32, tli: u32, pos: u32) -> Option<usize> {
        let (branch, own) = &sim.timelines[&timeline];
        let prefix = match branch {
            Some((parent, at, _)) => path(sim, *parent).iter().filter(|(_, p, _)| p < at).count(),
            None => 0,
        };
        if tli == timeline {
            return own.iter().position(|(p, _)| *p == pos).map(|i| prefix + i);
        }
        let (parent, at, switch_offset) = (*branch)?;
        let in_parent = backup_start(sim, parent, tli, pos);
        if pos < at {
            in_parent.filter(|i| *i < prefix)
        } else if pos == at && u64::from(BACKUP_OFFSET) < switch_offset && in_parent.is_some() {
            Some(prefix)
        } else {
            None
        }
    }

    /// Whether a recovery to `t` along `timeline` is possible with the
    /// `present` files and `backups`: a base backup that started on the
    /// path and finished by `t`, and every segment of the path from its
    /// start up to the one being written at `t`.
    fn recoverable(
        sim: &Simulation,
        present: &BTreeSet<WalFileName>,
        backups: &[BackupEntry],
        timeline: u32,
        t: u64,
    ) -> bool {
        let path = path(sim, timeline);
        let Some(end) = path
            .iter()
            .position(|(_, _, at)| *at >= t)
            .or(path.len().checked_sub(1))
        else {
            return false;
        };
        let history_files = sim.records.iter().filter_map(|r| match r.file {
            WalFileName::Backup { segment, .. } if present.contains(&r.file) => {
                Some((segment, r.staged_at))
            }
            _ => None,
        });
        let catalog = backups.iter().map(|b| (b.start, b.finished));
        history_files.chain(catalog).any(|(segment, finished)| {
            match backup_start(sim, timeline, segment.timeline, segment.seg) {
                Some(start) if finished <= t && start <= end => path[start..=end]
                    .iter()
                    .all(|(tli, pos, _)| present.contains(&WalFileName::Segment(seg(*tli, *pos)))),
                _ => false,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn property_every_target_in_the_window_stays_recoverable(
            ops in prop::collection::vec(op(), 20..250),
            hours_per_op in 1u64..6,
            window_days in 1u64..30,
            idle_days in 0u64..10,
        ) {
            let sim = simulate(&ops, hours_per_op, window_days, idle_days);
            let plan = plan(&sim.records, &sim.backups, &sim.histories, sim.now, &rules(sim.window));
            let window_start = sim.now.saturating_sub(sim.window);
            let all: BTreeSet<WalFileName> = sim.records.iter().map(|r| r.file).collect();
            let deleted: BTreeSet<WalFileName> = plan.delete.iter().copied().collect();
            let present: BTreeSet<WalFileName> = all.difference(&deleted).copied().collect();
            prop_assert_eq!(deleted.len() + plan.kept.len(), all.len(), "every file planned once");
            prop_assert_eq!(
                plan.delete_backups.len() + plan.kept_backups.len(),
                sim.backups.len(),
                "every backup planned once"
            );
            for r in sim.records.iter().filter(|r| deleted.contains(&r.file)) {
                prop_assert!(r.staged_at < window_start, "deleted {} from inside the window", r.file);
                prop_assert_ne!(r.file.kind(), WalFileKind::History, "deleted a history file");
            }
            let kept_backups: Vec<BackupEntry> = sim
                .backups
                .iter()
                .filter(|b| !plan.delete_backups.contains(&b.id))
                .copied()
                .collect();
            for b in sim.backups.iter().filter(|b| plan.delete_backups.contains(&b.id)) {
                prop_assert!(b.finished < window_start, "deleted backup {} from inside the window", b.id);
            }
            if plan.no_base_backup {
                prop_assert!(sim.backups.is_empty());
                return Ok(());
            }
            let mut live: BTreeSet<u32> = sim
                .timelines
                .iter()
                .filter(|(_, (_, segments))| segments.iter().any(|(_, at)| *at >= window_start))
                .map(|(tli, _)| *tli)
                .collect();
            live.extend(sim.timelines.keys().max());
            let mut targets: Vec<u64> = sim.records.iter().map(|r| r.staged_at).filter(|t| *t >= window_start).collect();
            targets.extend([window_start, sim.now]);
            for timeline in live {
                for t in &targets {
                    if recoverable(&sim, &all, &sim.backups, timeline, *t) {
                        prop_assert!(
                            recoverable(&sim, &present, &kept_backups, timeline, *t),
                            "recovery to {} along timeline {} lost (window from {})", t, timeline, window_start
                        );
                    }
                }
            }
        }
    }

    /// 200 operations on timeline 1, every 25th `backup`, the rest
    /// writes, and the plan a sweep makes of them.
    fn plan_with_backups_every_25(backup: Op) -> RetentionPlan {
        let ops: Vec<Op> = (0..200u8)
            .map(|i| if i % 25 == 0 { backup } else { Op::Write(0) })
            .collect();
        let sim = simulate(&ops, 3, 5, 0);
        plan(
            &sim.records,
            &sim.backups,
            &sim.histories,
            sim.now,
            &rules(sim.window),
        )
    }

    #[test]
    fn the_simulation_exercises_deletion() {
        let plan = plan_with_backups_every_25(Op::Backup(0));
        assert!(!plan.no_base_backup);
        assert!(plan.delete.len() > 100, "deleted {}", plan.delete.len());
    }

    #[test]
    fn backups_known_only_to_the_catalog_anchor_and_expire() {
        // A cluster backed up from a standby: no `.backup` history files.
        let plan = plan_with_backups_every_25(Op::CatalogBackup(0));
        assert!(!plan.no_base_backup);
        assert!(matches!(plan.anchors[&1], BackupRef::Catalog(_)));
        assert!(plan.delete.len() > 100, "deleted {}", plan.delete.len());
        assert!(!plan.delete_backups.is_empty());
        let anchor = match plan.anchors[&1] {
            BackupRef::Catalog(id) => id,
            other => panic!("{other:?}"),
        };
        assert_eq!(plan.kept_backups[&anchor], KeepReason::Backup);
        assert!(plan.delete_backups.iter().all(|id| *id < anchor));
    }
}
