//! The names of a base backup's parts in the archive: the backup's id (its
//! start time, to the second, in UTC: `20261127T101500Z`), its numbered
//! chunks and its descriptor.
//!
//! ```text
//! backup/20261127T101500Z/000000        chunk 0: the first bytes of the tar stream
//! backup/20261127T101500Z/000001        …
//! backup/20261127T101500Z/backup.json   the descriptor: stop point, chunk list
//! ```
//!
//! Fixed-width fields make the lexical order of the names (DynamoDB's sort
//! order, a bucket listing's order) the order of backups and of chunks,
//! with the descriptor after every chunk.

use std::fmt;
use std::str::FromStr;

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};

const DIR: &str = "backup";
const DESCRIPTOR: &str = "backup.json";
/// Chunk numbers are six digits: a million chunks of the smallest size
/// (1 MiB) is a terabyte, of the default size far more than any cluster.
pub const MAX_CHUNKS: u32 = 1_000_000;

/// A base backup's id: the second it started, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId {
    unix_seconds: u64,
}

impl BackupId {
    pub fn started_at(unix_seconds: u64) -> Self {
        BackupId { unix_seconds }
    }

    pub fn unix_seconds(&self) -> u64 {
        self.unix_seconds
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = i64::try_from(self.unix_seconds).map_err(|_| fmt::Error)?;
        let iso = DateTime::from_secs(seconds)
            .fmt(DateTimeFormat::DateTime)
            .map_err(|_| fmt::Error)?;
        // 2026-11-27T10:15:00Z → 20261127T101500Z
        let compact: String = iso.chars().filter(|c| *c != '-' && *c != ':').collect();
        f.write_str(&compact)
    }
}

impl FromStr for BackupId {
    type Err = BackupNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BackupNameError::BadId(s.to_owned());
        let b = s.as_bytes();
        let shaped = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        if !shaped {
            return Err(bad());
        }
        let iso = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[9..11],
            &s[11..13],
            &s[13..15]
        );
        let parsed = DateTime::from_str(&iso, DateTimeFormat::DateTime).map_err(|_| bad())?;
        let unix_seconds = u64::try_from(parsed.secs()).map_err(|_| bad())?;
        let id = BackupId { unix_seconds };
        // 20260230T… parses leniently in some readers: only the canonical
        // spelling of a real instant is an id.
        if id.to_string() == s {
            Ok(id)
        } else {
            Err(bad())
        }
    }
}

/// One part of a base backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackupPart {
    /// The `n`-th fixed-size piece of the backup's tar stream.
    Chunk(u32),
    /// Written last: the backup's stop point and its chunk list. A backup
    /// without one never completed.
    Descriptor,
}

/// A part of a base backup, as named in staging, the archive and the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupFile {
    pub backup: BackupId,
    pub part: BackupPart,
}

impl BackupFile {
    pub fn chunk(backup: BackupId, index: u32) -> Self {
        BackupFile {
            backup,
            part: BackupPart::Chunk(index),
        }
    }

    pub fn descriptor(backup: BackupId) -> Self {
        BackupFile {
            backup,
            part: BackupPart::Descriptor,
        }
    }

    /// The name prefix every part of `backup` shares.
    pub fn prefix_of(backup: BackupId) -> String {
        format!("{DIR}/{backup}/")
    }

    /// The name prefix of every backup part.
    pub fn all_prefix() -> String {
        format!("{DIR}/")
    }
}

impl fmt::Display for BackupFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.part {
            BackupPart::Chunk(n) => write!(f, "{DIR}/{}/{n:06}", self.backup),
            BackupPart::Descriptor => write!(f, "{DIR}/{}/{DESCRIPTOR}", self.backup),
        }
    }
}

impl FromStr for BackupFile {
    type Err = BackupNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BackupNameError::BadName(s.to_owned());
        let mut parts = s.split('/');
        let (Some(DIR), Some(id), Some(part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let backup: BackupId = id.parse()?;
        let part = if part == DESCRIPTOR {
            BackupPart::Descriptor
        } else if part.len() == 6 && part.bytes().all(|b| b.is_ascii_digit()) {
            BackupPart::Chunk(part.parse().map_err(|_| bad())?)
        } else {
            return Err(bad());
        };
        Ok(BackupFile { backup, part })
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackupNameError {
    #[error("{0:?} is not a backup id (the UTC start time, like 20261127T101500Z)")]
    BadId(String),
    #[error(
        "{0:?} is not a backup part (backup/<id>/<six-digit chunk> or backup/<id>/backup.json)"
    )]
    BadName(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_utc_start_second_and_round_trip() {
        let id = BackupId::started_at(1_795_774_500);
        assert_eq!(id.to_string(), "20261127T101500Z");
        assert_eq!("20261127T101500Z".parse::<BackupId>().unwrap(), id);
        for bad in [
            "",
            "20261127T101500",
            "20261127 101500Z",
            "2026112T1015000Z",
            "20261327T101500Z",
            "20260230T101500Z",
            "20261127t101500z",
        ] {
            assert!(bad.parse::<BackupId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parts_round_trip_and_sort_as_their_names() {
        let id: BackupId = "20261127T101500Z".parse().unwrap();
        let later: BackupId = "20261128T000000Z".parse().unwrap();
        let mut files = vec![
            BackupFile::descriptor(later),
            BackupFile::descriptor(id),
            BackupFile::chunk(id, 10),
            BackupFile::chunk(later, 0),
            BackupFile::chunk(id, 2),
        ];
        for file in &files {
            assert_eq!(file.to_string().parse::<BackupFile>().unwrap(), *file);
            assert!(file
                .to_string()
                .starts_with(&BackupFile::prefix_of(file.backup)));
        }
        let mut by_name = files.clone();
        by_name.sort_by_key(|f| f.to_string());
        files.sort();
        assert_eq!(files, by_name);
        assert_eq!(
            BackupFile::chunk(id, 2).to_string(),
            "backup/20261127T101500Z/000002"
        );
    }

    #[test]
    fn refuses_what_walvault_never_writes() {
        for bad in [
            "backup/20261127T101500Z",
            "backup/20261127T101500Z/2",
            "backup/20261127T101500Z/0000002",
            "backup/20261127T101500Z/backup.txt",
            "backups/20261127T101500Z/000001",
            "backup/20261127T101500Z/000001/x",
        ] {
            assert!(bad.parse::<BackupFile>().is_err(), "{bad:?}");
        }
    }
}
