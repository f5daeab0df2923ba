//! Everything walvault archives: PostgreSQL's WAL files and the parts of
//! base backups. One name space, so that one road (staging → the compress
//! function → R2 and B2 → the catalog) carries both. A WAL name starts with
//! a hex digit and a backup part with `backup/`, so in the catalog's order
//! every WAL file comes before every backup part.

use std::fmt;
use std::str::FromStr;

use crate::backup::name::{BackupFile, BackupPart};
use crate::wal::{WalFileKind, WalFileName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchivedFile {
    Wal(WalFileName),
    Backup(BackupFile),
}

/// An archived file's kind, as the catalog records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Wal(WalFileKind),
    BackupChunk,
    BackupDescriptor,
}

impl FileKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FileKind::Wal(kind) => kind.as_str(),
            FileKind::BackupChunk => "backup-chunk",
            FileKind::BackupDescriptor => "backup-descriptor",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ArchivedFile {
    pub fn kind(&self) -> FileKind {
        match self {
            ArchivedFile::Wal(name) => FileKind::Wal(name.kind()),
            ArchivedFile::Backup(BackupFile {
                part: BackupPart::Chunk(_),
                ..
            }) => FileKind::BackupChunk,
            ArchivedFile::Backup(BackupFile {
                part: BackupPart::Descriptor,
                ..
            }) => FileKind::BackupDescriptor,
        }
    }

    pub fn wal(&self) -> Option<WalFileName> {
        match self {
            ArchivedFile::Wal(name) => Some(*name),
            ArchivedFile::Backup(_) => None,
        }
    }

    pub fn backup(&self) -> Option<BackupFile> {
        match self {
            ArchivedFile::Backup(file) => Some(*file),
            ArchivedFile::Wal(_) => None,
        }
    }
}

impl fmt::Display for ArchivedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchivedFile::Wal(name) => name.fmt(f),
            ArchivedFile::Backup(file) => file.fmt(f),
        }
    }
}

impl FromStr for ArchivedFile {
    type Err = NotArchivedFile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(name) = s.parse::<WalFileName>() {
            return Ok(ArchivedFile::Wal(name));
        }
        s.parse::<BackupFile>()
            .map(ArchivedFile::Backup)
            .map_err(|_| NotArchivedFile(s.to_owned()))
    }
}

impl From<WalFileName> for ArchivedFile {
    fn from(name: WalFileName) -> Self {
        ArchivedFile::Wal(name)
    }
}

impl From<&WalFileName> for ArchivedFile {
    fn from(name: &WalFileName) -> Self {
        ArchivedFile::Wal(*name)
    }
}

impl From<BackupFile> for ArchivedFile {
    fn from(file: BackupFile) -> Self {
        ArchivedFile::Backup(file)
    }
}

impl From<&ArchivedFile> for ArchivedFile {
    fn from(file: &ArchivedFile) -> Self {
        *file
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is neither a WAL file name PostgreSQL archives nor a base backup part")]
pub struct NotArchivedFile(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_files_sort_before_backup_parts_as_their_names_do() {
        let names = [
            "000000010000000000000001",
            "0000000A0000000000000001.partial",
            "00000002.history",
            "backup/20261127T101500Z/000000",
            "backup/20261127T101500Z/backup.json",
        ];
        for name in names {
            assert_eq!(name.parse::<ArchivedFile>().unwrap().to_string(), name);
        }
        let backup: ArchivedFile = names[3].parse().unwrap();
        for wal in &names[..3] {
            assert!(wal.parse::<ArchivedFile>().unwrap() < backup, "{wal}");
        }
        assert_eq!(backup.kind(), FileKind::BackupChunk);
        assert!("backup/x".parse::<ArchivedFile>().is_err());
    }
}
