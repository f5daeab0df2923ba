//! The long page header at the start of every WAL segment
//! (`XLogLongPageHeaderData` in PostgreSQL's `xlog_internal.h`).
//!
//! Layout, little-endian on every platform PostgreSQL ships for:
//!
//! | offset | field             | type |
//! |--------|-------------------|------|
//! | 0      | `xlp_magic`       | u16  |
//! | 2      | `xlp_info`        | u16  |
//! | 4      | `xlp_tli`         | u32  |
//! | 8      | `xlp_pageaddr`    | u64  |
//! | 16     | `xlp_rem_len`     | u32  |
//! | 24     | `xlp_sysid`       | u64  |
//! | 32     | `xlp_seg_size`    | u32  |
//! | 36     | `xlp_xlog_blcksz` | u32  |

use std::fmt;

use super::name::{Segment, WalFileName};
use super::segment_size::SegmentSize;

pub const LONG_HEADER_SIZE: usize = 40;

/// `XLP_LONG_HEADER`: set in `xlp_info` on the first page of a segment.
const XLP_LONG_HEADER: u16 = 0x0002;

/// `XLOG_PAGE_MAGIC` of each supported major version. The magic changes
/// whenever the WAL format does, so a new major version is refused until it
/// is added here on purpose.
const PAGE_MAGICS: [(u16, u32); 6] = [
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// A PostgreSQL major version, as identified by the WAL page magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgVersion(pub u32);

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {}", self.0)
    }
}

/// What the long page header says about the segment that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub pg_version: PgVersion,
    pub magic: u16,
    /// Timeline of the first record on the page. At a timeline switch the
    /// first segment of the new timeline starts with the old timeline's
    /// pages, so this may be lower than the timeline in the file name.
    pub page_timeline: u32,
    pub page_address: u64,
    pub system_identifier: u64,
    pub segment_size: SegmentSize,
    pub block_size: u32,
}

impl WalHeader {
    /// Parses the header from the first bytes of a segment.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        if bytes.len() < LONG_HEADER_SIZE {
            return Err(HeaderError::Truncated { len: bytes.len() });
        }
        let magic = u16::from_le_bytes([bytes[0], bytes[1]]);
        let pg_version = version_of(magic).ok_or_else(|| {
            if version_of(magic.swap_bytes()).is_some() {
                HeaderError::BigEndian
            } else if matches!(magic >> 8, 0xD0 | 0xD1) {
                HeaderError::UnsupportedVersion { magic }
            } else {
                HeaderError::NotWal { magic }
            }
        })?;
        let info = u16::from_le_bytes([bytes[2], bytes[3]]);
        if info & XLP_LONG_HEADER == 0 {
            return Err(HeaderError::NoLongHeader);
        }
        let page_timeline = read_u32(bytes, 4);
        let page_address = read_u64(bytes, 8);
        let system_identifier = read_u64(bytes, 24);
        let segment_size = SegmentSize::new(u64::from(read_u32(bytes, 32)))
            .map_err(|e| HeaderError::BadSegmentSize(e.0))?;
        let block_size = read_u32(bytes, 36);
        if !(block_size.is_power_of_two() && (1024..=65536).contains(&block_size)) {
            return Err(HeaderError::BadBlockSize(block_size));
        }
        if page_timeline == 0 {
            return Err(HeaderError::ZeroTimeline);
        }
        if system_identifier == 0 {
            return Err(HeaderError::ZeroSystemIdentifier);
        }
        if !page_address.is_multiple_of(segment_size.bytes()) {
            return Err(HeaderError::MisalignedPageAddress {
                page_address,
                segment_size: segment_size.bytes(),
            });
        }
        Ok(WalHeader {
            pg_version,
            magic,
            page_timeline,
            page_address,
            system_identifier,
            segment_size,
            block_size,
        })
    }

    /// Parses the header of a whole archived file and checks that it belongs
    /// under `name`: the file is exactly one segment long and starts at the
    /// address the name gives. Only segments and `.partial` files carry a
    /// header; other kinds are refused here.
    pub fn parse_file(name: &WalFileName, contents: &[u8]) -> Result<Self, HeaderError> {
        Self::parse_start(name, contents, contents.len() as u64)
    }

    /// [`WalHeader::parse_file`] from the file's first bytes (at least a
    /// long header's worth) and its whole length: for a file read as it
    /// streams in.
    pub fn parse_start(
        name: &WalFileName,
        start: &[u8],
        file_len: u64,
    ) -> Result<Self, HeaderError> {
        let segment = match name {
            WalFileName::Segment(s) | WalFileName::Partial(s) => *s,
            WalFileName::History { .. } | WalFileName::Backup { .. } => {
                return Err(HeaderError::NotASegmentName(name.to_string()))
            }
        };
        let header = WalHeader::parse(start)?;
        header.check_belongs_to(&segment, file_len)?;
        Ok(header)
    }

    fn check_belongs_to(&self, segment: &Segment, file_len: u64) -> Result<(), HeaderError> {
        if file_len != self.segment_size.bytes() {
            return Err(HeaderError::WrongLength {
                len: file_len,
                segment_size: self.segment_size.bytes(),
            });
        }
        if !segment.fits(self.segment_size) {
            return Err(HeaderError::NameDoesNotMatch {
                name: segment.to_string(),
                page_address: self.page_address,
            });
        }
        if self.page_address != segment.start_lsn(self.segment_size)
            || self.page_timeline > segment.timeline
        {
            return Err(HeaderError::NameDoesNotMatch {
                name: segment.to_string(),
                page_address: self.page_address,
            });
        }
        Ok(())
    }
}

fn version_of(magic: u16) -> Option<PgVersion> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, v)| PgVersion(*v))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Why a file is not a WAL segment walvault will take. None of these can be
/// fixed by retrying.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("file is too short for a WAL long page header ({len} bytes, need {LONG_HEADER_SIZE})")]
    Truncated { len: usize },
    #[error("not a WAL segment: page magic {magic:#06X} is not PostgreSQL's")]
    NotWal { magic: u16 },
    #[error("WAL page magic {magic:#06X} is from a PostgreSQL version walvault does not support (13 to 18 are)")]
    UnsupportedVersion { magic: u16 },
    #[error("WAL written by a big-endian machine is not supported")]
    BigEndian,
    #[error("first page lacks the long header (XLP_LONG_HEADER): not the start of a segment")]
    NoLongHeader,
    #[error("segment size {0} in the WAL header is not a power of two from 1 MiB to 1 GiB")]
    BadSegmentSize(u64),
    #[error("WAL block size {0} in the header is not a power of two from 1 KiB to 64 KiB")]
    BadBlockSize(u32),
    #[error("timeline 0 in the WAL header")]
    ZeroTimeline,
    #[error("system identifier 0 in the WAL header")]
    ZeroSystemIdentifier,
    #[error("page address {page_address:#X} is not at a segment boundary for {segment_size}-byte segments")]
    MisalignedPageAddress {
        page_address: u64,
        segment_size: u64,
    },
    #[error("file is {len} bytes but its WAL header says segments are {segment_size} bytes (truncated or padded)")]
    WrongLength { len: u64, segment_size: u64 },
    #[error("contents start at WAL address {page_address:#X}, which is not segment {name}")]
    NameDoesNotMatch { name: String, page_address: u64 },
    #[error("{0} is not a segment and has no WAL header")]
    NotASegmentName(String),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// A synthetic first page, laid out as PostgreSQL writes it.
    pub(crate) fn long_header(
        magic: u16,
        tli: u32,
        addr: u64,
        sysid: u64,
        seg_size: u32,
    ) -> Vec<u8> {
        let mut b = vec![0u8; LONG_HEADER_SIZE];
        b[0..2].copy_from_slice(&magic.to_le_bytes());
        b[2..4].copy_from_slice(&(XLP_LONG_HEADER | 0x0004).to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&seg_size.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn reads_every_field() {
        let h = WalHeader::parse(&long_header(
            0xD110,
            1,
            0x0300_0000,
            7_000_000_000_000_000_042,
            16 << 20,
        ))
        .unwrap();
        assert_eq!(h.pg_version, PgVersion(15));
        assert_eq!(h.page_timeline, 1);
        assert_eq!(h.page_address, 0x0300_0000);
        assert_eq!(h.system_identifier, 7_000_000_000_000_000_042);
        assert_eq!(h.segment_size.bytes(), 16 * MIB);
        assert_eq!(h.block_size, 8192);
    }

    #[test]
    fn knows_postgres_13_to_18() {
        for (magic, major) in PAGE_MAGICS {
            let h = WalHeader::parse(&long_header(magic, 1, 0, 1, 16 << 20)).unwrap();
            assert_eq!(h.pg_version, PgVersion(major));
        }
        assert_eq!(
            PAGE_MAGICS.iter().map(|p| p.1).collect::<Vec<_>>(),
            [13, 14, 15, 16, 17, 18]
        );
    }

    #[test]
    fn refuses_what_is_not_wal() {
        assert_eq!(
            WalHeader::parse(b"short"),
            Err(HeaderError::Truncated { len: 5 })
        );
        let mut text = b"#!/bin/sh\necho this is a shell script, not WAL at all\n".to_vec();
        text.resize(64, b' ');
        assert!(matches!(
            WalHeader::parse(&text),
            Err(HeaderError::NotWal { .. })
        ));
        assert!(matches!(
            WalHeader::parse(&long_header(0xD101, 1, 0, 1, 16 << 20)),
            Err(HeaderError::UnsupportedVersion { magic: 0xD101 })
        ));
        assert_eq!(
            WalHeader::parse(&long_header(0x10D1, 1, 0, 1, 16 << 20)),
            Err(HeaderError::BigEndian)
        );
        let mut short_page = long_header(0xD110, 1, 0, 1, 16 << 20);
        short_page[2] = 0;
        assert_eq!(
            WalHeader::parse(&short_page),
            Err(HeaderError::NoLongHeader)
        );
    }

    #[test]
    fn refuses_impossible_fields() {
        assert_eq!(
            WalHeader::parse(&long_header(0xD110, 1, 0, 1, 3 << 20)),
            Err(HeaderError::BadSegmentSize(3 << 20))
        );
        assert_eq!(
            WalHeader::parse(&long_header(0xD110, 0, 0, 1, 16 << 20)),
            Err(HeaderError::ZeroTimeline)
        );
        assert_eq!(
            WalHeader::parse(&long_header(0xD110, 1, 0, 0, 16 << 20)),
            Err(HeaderError::ZeroSystemIdentifier)
        );
        assert!(matches!(
            WalHeader::parse(&long_header(0xD110, 1, 0x2000, 1, 16 << 20)),
            Err(HeaderError::MisalignedPageAddress { .. })
        ));
        let mut odd_block = long_header(0xD110, 1, 0, 1, 16 << 20);
        odd_block[36..40].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            WalHeader::parse(&odd_block),
            Err(HeaderError::BadBlockSize(1000))
        );
    }

    fn file(header: Vec<u8>, len: u64) -> Vec<u8> {
        let mut f = header;
        f.resize(len as usize, 0);
        f
    }

    #[test]
    fn a_file_must_be_exactly_one_segment_at_its_named_address() {
        let name: WalFileName = "000000010000000000000003".parse().unwrap();
        // 1 MiB segments: segment 3 starts at 3 MiB.
        let good = file(long_header(0xD110, 1, 3 * MIB, 9, 1 << 20), MIB);
        assert!(WalHeader::parse_file(&name, &good).is_ok());

        let truncated = &good[..good.len() - 1];
        assert!(matches!(
            WalHeader::parse_file(&name, truncated),
            Err(HeaderError::WrongLength { .. })
        ));
        let elsewhere = file(long_header(0xD110, 1, 4 * MIB, 9, 1 << 20), MIB);
        assert!(matches!(
            WalHeader::parse_file(&name, &elsewhere),
            Err(HeaderError::NameDoesNotMatch { .. })
        ));
        let future_timeline = file(long_header(0xD110, 2, 3 * MIB, 9, 1 << 20), MIB);
        assert!(matches!(
            WalHeader::parse_file(&name, &future_timeline),
            Err(HeaderError::NameDoesNotMatch { .. })
        ));
    }

    #[test]
    fn the_first_segment_of_a_new_timeline_may_start_with_old_timeline_pages() {
        let name: WalFileName = "000000020000000000000003".parse().unwrap();
        let switched = file(long_header(0xD110, 1, 3 * MIB, 9, 1 << 20), MIB);
        assert_eq!(
            WalHeader::parse_file(&name, &switched)
                .unwrap()
                .page_timeline,
            1
        );
        let partial: WalFileName = "000000010000000000000003.partial".parse().unwrap();
        assert!(WalHeader::parse_file(&partial, &switched).is_ok());
    }

    #[test]
    fn history_and_backup_files_have_no_header() {
        let name: WalFileName = "00000002.history".parse().unwrap();
        assert!(matches!(
            WalHeader::parse_file(&name, b"1\t0/3000000\tno recovery target specified\n"),
            Err(HeaderError::NotASegmentName(_))
        ));
    }
}
