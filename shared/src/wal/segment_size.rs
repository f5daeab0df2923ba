//! WAL segment size: a power of two from 1 MiB to 1 GiB (`initdb --wal-segsize`).

use std::fmt;

/// A segment size PostgreSQL accepts. The number of segments per log id is
/// 2^32 / size, which is what makes segment names size-dependent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentSize(u64);

pub const MIN_SEGMENT_SIZE: u64 = 1024 * 1024;
pub const MAX_SEGMENT_SIZE: u64 = 1024 * 1024 * 1024;

impl SegmentSize {
    /// PostgreSQL's default, 16 MiB.
    pub const DEFAULT: SegmentSize = SegmentSize(16 * 1024 * 1024);

    pub fn new(bytes: u64) -> Result<Self, InvalidSegmentSize> {
        if bytes.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&bytes) {
            Ok(SegmentSize(bytes))
        } else {
            Err(InvalidSegmentSize(bytes))
        }
    }

    pub fn bytes(&self) -> u64 {
        self.0
    }

    pub fn segments_per_log(&self) -> u64 {
        (1u64 << 32) / self.0
    }
}

impl fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.0 / (1024 * 1024))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} bytes is not a WAL segment size (a power of two from 1 MiB to 1 GiB)")]
pub struct InvalidSegmentSize(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_power_of_two_from_1_mib_to_1_gib() {
        let mut bytes = MIN_SEGMENT_SIZE;
        while bytes <= MAX_SEGMENT_SIZE {
            let size = SegmentSize::new(bytes).unwrap();
            assert_eq!(size.segments_per_log() * bytes, 1 << 32);
            bytes *= 2;
        }
    }

    #[test]
    fn refuses_anything_else() {
        for bytes in [
            0,
            512 * 1024,
            3 * 1024 * 1024,
            2 * MAX_SEGMENT_SIZE,
            MIN_SEGMENT_SIZE + 1,
        ] {
            assert_eq!(SegmentSize::new(bytes), Err(InvalidSegmentSize(bytes)));
        }
    }

    #[test]
    fn default_is_16_mib_with_256_segments_per_log() {
        assert_eq!(SegmentSize::DEFAULT.segments_per_log(), 256);
        assert_eq!(SegmentSize::DEFAULT.to_string(), "16 MiB");
    }
}
