//! The names PostgreSQL gives the files it hands to `archive_command`.
//!
//! A segment is `TTTTTTTTLLLLLLLLSSSSSSSS` (timeline, log id, segment within
//! the log id, each eight upper-case hex digits). Around it PostgreSQL also
//! archives `TTTTTTTT.history`, `<segment>.<offset>.backup` and
//! `<segment>.partial`. Everything here is pure parsing and arithmetic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::segment_size::SegmentSize;

/// One WAL segment: a timeline and the segment's position in the WAL stream.
///
/// Field order makes the derived `Ord` match the lexical order of the names,
/// which is also the order of the archive keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

impl Segment {
    /// The segment number counted from the start of the WAL stream
    /// (PostgreSQL's `XLogSegNo`) for a given segment size.
    pub fn segno(&self, size: SegmentSize) -> u64 {
        u64::from(self.log) * size.segments_per_log() + u64::from(self.seg)
    }

    pub fn from_segno(timeline: u32, segno: u64, size: SegmentSize) -> Result<Self, NameError> {
        let per_log = size.segments_per_log();
        let log = u32::try_from(segno / per_log).map_err(|_| NameError::OutOfRange {
            what: "segment number",
        })?;
        Ok(Segment {
            timeline,
            log,
            seg: (segno % per_log) as u32,
        })
    }

    /// The LSN at which this segment starts.
    pub fn start_lsn(&self, size: SegmentSize) -> u64 {
        self.segno(size) * size.bytes()
    }

    /// Whether the segment number is possible for this segment size: with
    /// 64 MiB segments, for instance, `SSSSSSSS` never exceeds `0x3F`.
    pub fn fits(&self, size: SegmentSize) -> bool {
        u64::from(self.seg) < size.segments_per_log()
    }

    pub fn next(&self, size: SegmentSize) -> Result<Segment, NameError> {
        self.check_fits(size)?;
        let segno = self
            .segno(size)
            .checked_add(1)
            .ok_or(NameError::OutOfRange {
                what: "next segment",
            })?;
        Segment::from_segno(self.timeline, segno, size)
    }

    pub fn previous(&self, size: SegmentSize) -> Result<Segment, NameError> {
        self.check_fits(size)?;
        let segno = self
            .segno(size)
            .checked_sub(1)
            .ok_or(NameError::OutOfRange {
                what: "previous segment",
            })?;
        Segment::from_segno(self.timeline, segno, size)
    }

    fn check_fits(&self, size: SegmentSize) -> Result<(), NameError> {
        if self.fits(size) {
            Ok(())
        } else {
            Err(NameError::SegmentTooLarge {
                seg: self.seg,
                segment_size: size.bytes(),
            })
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

/// The kind of an archived WAL file, as recorded in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalFileKind {
    Segment,
    Partial,
    History,
    Backup,
}

impl WalFileKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            WalFileKind::Segment => "segment",
            WalFileKind::Partial => "partial",
            WalFileKind::History => "history",
            WalFileKind::Backup => "backup",
        }
    }
}

impl FromStr for WalFileKind {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "segment" => Ok(WalFileKind::Segment),
            "partial" => Ok(WalFileKind::Partial),
            "history" => Ok(WalFileKind::History),
            "backup" => Ok(WalFileKind::Backup),
            other => Err(NameError::UnknownKind(other.to_owned())),
        }
    }
}

impl fmt::Display for WalFileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any file name PostgreSQL archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFileName {
    Segment(Segment),
    /// The last, incomplete segment of a timeline, archived at promotion.
    Partial(Segment),
    /// `TTTTTTTT.history`: the timeline history PostgreSQL writes at a switch.
    History {
        timeline: u32,
    },
    /// `<segment>.<offset>.backup`: the backup history file that marks where
    /// a base backup started (`offset` is the start LSN within the segment).
    Backup {
        segment: Segment,
        offset: u32,
    },
}

impl WalFileName {
    pub fn kind(&self) -> WalFileKind {
        match self {
            WalFileName::Segment(_) => WalFileKind::Segment,
            WalFileName::Partial(_) => WalFileKind::Partial,
            WalFileName::History { .. } => WalFileKind::History,
            WalFileName::Backup { .. } => WalFileKind::Backup,
        }
    }

    pub fn timeline(&self) -> u32 {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => s.timeline,
            WalFileName::Backup { segment, .. } => segment.timeline,
            WalFileName::History { timeline } => *timeline,
        }
    }

    /// The segment the file belongs to; `None` for a `.history` file.
    pub fn segment(&self) -> Option<Segment> {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => Some(*s),
            WalFileName::Backup { segment, .. } => Some(*segment),
            WalFileName::History { .. } => None,
        }
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(s) => write!(f, "{s}"),
            WalFileName::Partial(s) => write!(f, "{s}.partial"),
            WalFileName::History { timeline } => write!(f, "{timeline:08X}.history"),
            WalFileName::Backup { segment, offset } => write!(f, "{segment}.{offset:08X}.backup"),
        }
    }
}

impl FromStr for WalFileName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = || NameError::NotWalFileName(name.to_owned());
        if let Some(timeline) = name.strip_suffix(".history") {
            let timeline = parse_hex8(timeline).ok_or_else(invalid)?;
            if timeline == 0 {
                return Err(invalid());
            }
            return Ok(WalFileName::History { timeline });
        }
        if let Some(rest) = name.strip_suffix(".partial") {
            return parse_segment(rest)
                .map(WalFileName::Partial)
                .ok_or_else(invalid);
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (segment, offset) = rest.split_once('.').ok_or_else(invalid)?;
            let segment = parse_segment(segment).ok_or_else(invalid)?;
            let offset = parse_hex8(offset).ok_or_else(invalid)?;
            return Ok(WalFileName::Backup { segment, offset });
        }
        parse_segment(name)
            .map(WalFileName::Segment)
            .ok_or_else(invalid)
    }
}

fn parse_segment(s: &str) -> Option<Segment> {
    if s.len() != 24 {
        return None;
    }
    let segment = Segment {
        timeline: parse_hex8(&s[0..8])?,
        log: parse_hex8(&s[8..16])?,
        seg: parse_hex8(&s[16..24])?,
    };
    // Timeline 0 does not exist; PostgreSQL starts at 1.
    (segment.timeline != 0).then_some(segment)
}

/// Eight upper-case hex digits, exactly as PostgreSQL writes them: a
/// lower-case name is not one PostgreSQL produced, so it is refused rather
/// than silently normalised into a second key for the same file.
fn parse_hex8(s: &str) -> Option<u32> {
    if s.len() != 8
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "{0:?} is not a WAL file name PostgreSQL archives (segment, .history, .backup or .partial)"
    )]
    NotWalFileName(String),
    #[error("unknown WAL file kind {0:?}")]
    UnknownKind(String),
    #[error("segment number {seg:#X} is impossible with {segment_size}-byte segments")]
    SegmentTooLarge { seg: u32, segment_size: u64 },
    #[error("{what} is outside the WAL address space")]
    OutOfRange { what: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(mib: u64) -> SegmentSize {
        SegmentSize::new(mib * 1024 * 1024).expect("legal segment size")
    }

    fn seg(name: &str) -> Segment {
        match name.parse::<WalFileName>() {
            Ok(WalFileName::Segment(s)) => s,
            other => panic!("{name} is not a segment: {other:?}"),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for (name, kind) in [
            ("000000010000000000000001", WalFileKind::Segment),
            ("0000000A00000003000000FF.partial", WalFileKind::Partial),
            ("00000002.history", WalFileKind::History),
            (
                "000000010000000000000002.00000028.backup",
                WalFileKind::Backup,
            ),
        ] {
            let parsed: WalFileName = name.parse().expect(name);
            assert_eq!(parsed.kind(), kind, "{name}");
            assert_eq!(parsed.to_string(), name);
        }
    }

    #[test]
    fn fields_are_read_from_the_right_places() {
        let parsed: WalFileName = "0000000A00000003000000FF.partial".parse().unwrap();
        assert_eq!(
            parsed,
            WalFileName::Partial(Segment {
                timeline: 10,
                log: 3,
                seg: 0xFF
            })
        );
        let backup: WalFileName = "000000010000000000000002.00000028.backup".parse().unwrap();
        assert_eq!(
            backup,
            WalFileName::Backup {
                segment: Segment {
                    timeline: 1,
                    log: 0,
                    seg: 2
                },
                offset: 0x28
            }
        );
        assert_eq!(backup.timeline(), 1);
        assert_eq!(
            "00000003.history".parse::<WalFileName>().unwrap().segment(),
            None
        );
    }

    #[test]
    fn rejects_what_postgres_never_writes() {
        for bad in [
            "",
            "00000001000000000000001",   // 23 digits
            "0000000100000000000000011", // 25 digits
            "000000010000000000000001.gz",
            "00000001000000000000000g",
            "00000001000000000000000a", // lower case
            "000000000000000000000001", // timeline 0
            "00000000.history",
            "0000001.history",
            "000000010000000000000001.backup",
            "000000010000000000000001.0000028.backup",
            "000000010000000000000001.00000028.partial.backup",
            "archive_status",
            "../000000010000000000000001",
            "000000010000000000000001\n",
        ] {
            assert!(
                matches!(
                    bad.parse::<WalFileName>(),
                    Err(NameError::NotWalFileName(_))
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn names_sort_in_wal_order() {
        let mut names = [
            "000000010000000100000000",
            "0000000100000000000000FF",
            "000000020000000000000001",
            "000000010000000000000002",
        ];
        let mut parsed: Vec<WalFileName> = names.iter().map(|n| n.parse().unwrap()).collect();
        parsed.sort();
        names.sort();
        let printed: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(printed, names);
    }

    #[test]
    fn next_wraps_at_the_end_of_a_log_id_for_16_mib() {
        let last = seg("0000000100000000000000FF");
        assert_eq!(
            last.next(size(16)).unwrap().to_string(),
            "000000010000000100000000"
        );
        assert_eq!(
            seg("000000010000000100000000")
                .previous(size(16))
                .unwrap()
                .to_string(),
            "0000000100000000000000FF"
        );
    }

    #[test]
    fn next_and_previous_follow_the_segment_size() {
        // segments per log id = 2^32 / size
        for (mib, last_seg) in [(1u64, 0xFFFu32), (64, 0x3F), (1024, 0x3)] {
            let last = Segment {
                timeline: 1,
                log: 7,
                seg: last_seg,
            };
            let next = last.next(size(mib)).unwrap();
            assert_eq!(
                next,
                Segment {
                    timeline: 1,
                    log: 8,
                    seg: 0
                },
                "{mib} MiB"
            );
            assert_eq!(next.previous(size(mib)).unwrap(), last, "{mib} MiB");
        }
    }

    #[test]
    fn segment_numbers_impossible_for_the_size_are_refused() {
        let too_far = seg("000000010000000000000040");
        assert!(too_far.fits(size(32)));
        assert!(!too_far.fits(size(64)));
        assert!(matches!(
            too_far.next(size(64)),
            Err(NameError::SegmentTooLarge { .. })
        ));
    }

    #[test]
    fn the_first_segment_has_no_previous_and_the_last_no_next() {
        let first = seg("000000010000000000000000");
        assert!(matches!(
            first.previous(size(16)),
            Err(NameError::OutOfRange { .. })
        ));
        let last = seg("00000001FFFFFFFF000000FF");
        assert!(matches!(
            last.next(size(16)),
            Err(NameError::OutOfRange { .. })
        ));
    }

    #[test]
    fn start_lsn_matches_postgres_arithmetic() {
        let s = seg("000000010000000200000003");
        assert_eq!(s.start_lsn(size(16)), 0x2_0300_0000);
        assert_eq!(
            Segment::from_segno(1, s.segno(size(16)), size(16)).unwrap(),
            s
        );
    }

    #[test]
    fn kind_strings_round_trip() {
        for kind in [
            WalFileKind::Segment,
            WalFileKind::Partial,
            WalFileKind::History,
            WalFileKind::Backup,
        ] {
            assert_eq!(kind.as_str().parse::<WalFileKind>().unwrap(), kind);
        }
        assert!("tar".parse::<WalFileKind>().is_err());
    }
}
