//! A position in the WAL stream, written as PostgreSQL does: `X/Y`, the
//! high and low 32 bits in upper-case hex.

use std::fmt;
use std::str::FromStr;

use super::name::{NameError, Segment};
use super::segment_size::SegmentSize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The segment of `timeline` that holds this position.
    pub fn segment(&self, timeline: u32, size: SegmentSize) -> Result<Segment, NameError> {
        Segment::from_segno(timeline, self.0 / size.bytes(), size)
    }

    /// The offset of this position within its segment.
    pub fn offset_in_segment(&self, size: SegmentSize) -> u64 {
        self.0 % size.bytes()
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an LSN (two hex numbers separated by '/', like 0/2000028)")]
pub struct BadLsn(pub String);

impl FromStr for Lsn {
    type Err = BadLsn;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadLsn(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 {
                return Err(bad());
            }
            u32::from_str_radix(h, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_as_postgres_does() {
        let lsn: Lsn = "2/3000028".parse().unwrap();
        assert_eq!(lsn.0, 0x2_0300_0028);
        assert_eq!(lsn.to_string(), "2/3000028");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        for bad in ["", "0", "/1", "1/", "g/1", "123456789/0", "0/1/2"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn finds_its_segment() {
        let lsn: Lsn = "0/2000028".parse().unwrap();
        let segment = lsn.segment(1, SegmentSize::DEFAULT).unwrap();
        assert_eq!(segment.to_string(), "000000010000000000000002");
        assert_eq!(lsn.offset_in_segment(SegmentSize::DEFAULT), 0x28);
    }
}
