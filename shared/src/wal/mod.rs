//! WAL file names, segment sizes and the long page header.

mod header;
mod lsn;
mod name;
mod segment_size;

pub use header::{HeaderError, PgVersion, WalHeader, LONG_HEADER_SIZE};
pub use lsn::{BadLsn, Lsn};
pub use name::{NameError, Segment, WalFileKind, WalFileName};
pub use segment_size::{InvalidSegmentSize, SegmentSize, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
