//! What a base backup is, as walvault records it: facts read from
//! PostgreSQL's own files in the stream (`backup_label`, the backup
//! manifest, `pg_control`), the chunk list, and the summary the catalog
//! keeps. The descriptor is the backup's last part: without it, a backup
//! never completed.

use serde::{Deserialize, Serialize};

use super::name::{BackupFile, BackupId};
use crate::codec::Sha256Hex;
use crate::wal::{Lsn, Segment, SegmentSize, WalFileName};

pub const DESCRIPTOR_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("backup_label: {0}")]
    Label(String),
    #[error("backup_manifest: {0}")]
    Manifest(String),
    #[error("global/pg_control: {0}")]
    Control(String),
    #[error("descriptor: {0}")]
    Descriptor(String),
}

/// The facts of `backup_label` walvault uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    pub start_lsn: Lsn,
    /// The segment the backup starts in, as the label names it.
    pub start_segment: Segment,
    pub start_timeline: u32,
    /// `BACKUP FROM: standby`.
    pub from_standby: bool,
    pub label: String,
}

impl BackupLabel {
    pub fn parse(text: &str) -> Result<BackupLabel, DescriptorError> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
                .map(str::trim)
                .ok_or_else(|| DescriptorError::Label(format!("no {key} line")))
        };
        // START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
        let start = field("START WAL LOCATION")?;
        let (lsn, file) = start
            .split_once(" (file ")
            .ok_or_else(|| DescriptorError::Label(format!("START WAL LOCATION {start:?}")))?;
        let start_lsn: Lsn = lsn
            .parse()
            .map_err(|e: crate::wal::BadLsn| DescriptorError::Label(e.to_string()))?;
        let start_segment = match file.trim_end_matches(')').parse::<WalFileName>() {
            Ok(WalFileName::Segment(segment)) => segment,
            _ => return Err(DescriptorError::Label(format!("start file in {start:?}"))),
        };
        let start_timeline = field("START TIMELINE")?
            .parse()
            .map_err(|_| DescriptorError::Label("START TIMELINE is not a number".into()))?;
        Ok(BackupLabel {
            start_lsn,
            start_segment,
            start_timeline,
            from_standby: field("BACKUP FROM").is_ok_and(|from| from == "standby"),
            label: field("LABEL").unwrap_or_default().to_owned(),
        })
    }
}

/// The facts of the backup manifest walvault uses: the WAL the backup
/// needs and the manifest's own checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFacts {
    /// (timeline, start, end): the WAL needed to make the backup consistent.
    pub wal_ranges: Vec<(u32, Lsn, Lsn)>,
    pub checksum: String,
}

impl ManifestFacts {
    pub fn parse(bytes: &[u8]) -> Result<ManifestFacts, DescriptorError> {
        #[derive(Deserialize)]
        struct Range {
            #[serde(rename = "Timeline")]
            timeline: u32,
            #[serde(rename = "Start-LSN")]
            start: String,
            #[serde(rename = "End-LSN")]
            end: String,
        }
        #[derive(Deserialize)]
        struct Manifest {
            #[serde(rename = "WAL-Ranges")]
            wal_ranges: Vec<Range>,
            #[serde(rename = "Manifest-Checksum")]
            checksum: String,
        }
        let bad = |e: String| DescriptorError::Manifest(e);
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let wal_ranges = manifest
            .wal_ranges
            .into_iter()
            .map(|r| {
                let start = r
                    .start
                    .parse()
                    .map_err(|e: crate::wal::BadLsn| bad(e.to_string()))?;
                let end = r
                    .end
                    .parse()
                    .map_err(|e: crate::wal::BadLsn| bad(e.to_string()))?;
                Ok((r.timeline, start, end))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if wal_ranges.is_empty() {
            return Err(bad("no WAL-Ranges".into()));
        }
        Ok(ManifestFacts {
            wal_ranges,
            checksum: manifest.checksum,
        })
    }

    /// Where the backup becomes consistent: the end of the last range.
    pub fn stop(&self) -> (u32, Lsn) {
        let (timeline, _, end) = self.wal_ranges[self.wal_ranges.len() - 1];
        (timeline, end)
    }
}

/// The system identifier: the first field of `pg_control`, in the byte
/// order of the server (little-endian on every platform walvault runs on).
pub fn system_identifier_of_control(pg_control: &[u8]) -> Result<u64, DescriptorError> {
    let first: [u8; 8] = pg_control
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DescriptorError::Control("shorter than 8 bytes".into()))?;
    Ok(u64::from_le_bytes(first))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub size: u64,
    pub sha256: Sha256Hex,
}

/// The backup's descriptor: written to staging after every chunk, by the
/// host that took the backup, and replicated like any file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupDescriptor {
    pub format: u32,
    pub id: String,
    pub cluster: String,
    /// A string: JSON numbers lose precision past 2^53 in many readers.
    pub system_identifier: String,
    pub pg_version: u32,
    pub segment_size: u64,
    pub start_timeline: u32,
    pub start_lsn: String,
    pub start_segment: String,
    pub stop_timeline: u32,
    pub stop_lsn: String,
    pub from_standby: bool,
    pub started_at_ms: u64,
    pub stopped_at_ms: u64,
    /// Bytes of the tar stream.
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: Vec<ChunkEntry>,
    /// The backup manifest's own SHA-256 (`Manifest-Checksum`).
    pub manifest_checksum: String,
    pub label: String,
    pub host: String,
}

/// What the catalog keeps of a descriptor (on the descriptor's record):
/// everything but the chunk list, which is summarised by its count and
/// digest so that completeness can be checked against the chunk records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub id: String,
    pub system_identifier: String,
    pub pg_version: u32,
    pub segment_size: u64,
    pub start_timeline: u32,
    pub start_lsn: String,
    pub start_segment: String,
    pub stop_timeline: u32,
    pub stop_lsn: String,
    pub from_standby: bool,
    pub started_at_ms: u64,
    pub stopped_at_ms: u64,
    pub size: u64,
    pub chunk_count: u32,
    pub chunks_sha256: Sha256Hex,
    pub manifest_checksum: String,
    pub label: String,
}

/// The digest of a chunk list: sha256 over `<index> <sha256>\n` lines.
pub fn chunk_list_digest<'a>(shas: impl IntoIterator<Item = &'a Sha256Hex>) -> Sha256Hex {
    let text: String = shas
        .into_iter()
        .enumerate()
        .map(|(i, sha)| format!("{i} {sha}\n"))
        .collect();
    Sha256Hex::of(text.as_bytes())
}

impl BackupDescriptor {
    pub fn parse(bytes: &[u8]) -> Result<BackupDescriptor, DescriptorError> {
        let descriptor: BackupDescriptor = serde_json::from_slice(bytes)
            .map_err(|e| DescriptorError::Descriptor(e.to_string()))?;
        if descriptor.format != DESCRIPTOR_FORMAT {
            return Err(DescriptorError::Descriptor(format!(
                "format {} (this walvault reads {DESCRIPTOR_FORMAT})",
                descriptor.format
            )));
        }
        descriptor.summary().map(|_| descriptor)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The summary, after checking the fields that later readers parse.
    pub fn summary(&self) -> Result<BackupSummary, DescriptorError> {
        let bad = |what: &str| DescriptorError::Descriptor(what.to_owned());
        let id: BackupId = self.id.parse().map_err(|_| bad("id"))?;
        let _: u64 = self
            .system_identifier
            .parse()
            .map_err(|_| bad("system_identifier"))?;
        let _: Lsn = self.start_lsn.parse().map_err(|_| bad("start_lsn"))?;
        let _: Lsn = self.stop_lsn.parse().map_err(|_| bad("stop_lsn"))?;
        SegmentSize::new(self.segment_size).map_err(|_| bad("segment_size"))?;
        if !matches!(self.start_segment.parse(), Ok(WalFileName::Segment(_))) {
            return Err(bad("start_segment"));
        }
        if self.chunks.is_empty() || self.chunks.len() > super::name::MAX_CHUNKS as usize {
            return Err(bad("chunk count"));
        }
        if self.chunks.iter().map(|c| c.size).sum::<u64>() != self.size {
            return Err(bad("chunk sizes do not add up to the size"));
        }
        Ok(BackupSummary {
            id: id.to_string(),
            system_identifier: self.system_identifier.clone(),
            pg_version: self.pg_version,
            segment_size: self.segment_size,
            start_timeline: self.start_timeline,
            start_lsn: self.start_lsn.clone(),
            start_segment: self.start_segment.clone(),
            stop_timeline: self.stop_timeline,
            stop_lsn: self.stop_lsn.clone(),
            from_standby: self.from_standby,
            started_at_ms: self.started_at_ms,
            stopped_at_ms: self.stopped_at_ms,
            size: self.size,
            chunk_count: self.chunks.len() as u32,
            chunks_sha256: chunk_list_digest(self.chunks.iter().map(|c| &c.sha256)),
            manifest_checksum: self.manifest_checksum.clone(),
            label: self.label.clone(),
        })
    }

    pub fn chunk_files(&self) -> Result<Vec<BackupFile>, DescriptorError> {
        let id: BackupId = self
            .id
            .parse()
            .map_err(|_| DescriptorError::Descriptor("id".into()))?;
        Ok((0..self.chunks.len() as u32)
            .map(|i| BackupFile::chunk(id, i))
            .collect())
    }
}

impl BackupSummary {
    pub fn id(&self) -> Option<BackupId> {
        self.id.parse().ok()
    }

    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn.parse().unwrap_or_default()
    }

    pub fn stop_lsn(&self) -> Lsn {
        self.stop_lsn.parse().unwrap_or_default()
    }

    pub fn start_segment(&self) -> Option<Segment> {
        match self.start_segment.parse() {
            Ok(WalFileName::Segment(segment)) => Some(segment),
            _ => None,
        }
    }

    pub fn segment_size(&self) -> Option<SegmentSize> {
        SegmentSize::new(self.segment_size).ok()
    }

    /// The segment holding the stop point: every segment from the start
    /// segment to this one must be archived for the backup to be usable.
    pub fn stop_segment(&self) -> Option<Segment> {
        self.stop_lsn()
            .segment(self.stop_timeline, self.segment_size()?)
            .ok()
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A descriptor of a backup made of `chunks`.
    pub(crate) fn descriptor_of(chunks: &[&[u8]]) -> BackupDescriptor {
        BackupDescriptor {
            format: DESCRIPTOR_FORMAT,
            id: "20261127T100203Z".into(),
            cluster: "main".into(),
            system_identifier: "7311234567890123456".into(),
            pg_version: 15,
            segment_size: 16 << 20,
            start_timeline: 1,
            start_lsn: "0/2000028".into(),
            start_segment: "000000010000000000000002".into(),
            stop_timeline: 1,
            stop_lsn: "0/3000100".into(),
            from_standby: false,
            started_at_ms: 1,
            stopped_at_ms: 2,
            size: chunks.iter().map(|c| c.len() as u64).sum(),
            chunk_size: 4,
            chunks: chunks
                .iter()
                .map(|c| ChunkEntry {
                    size: c.len() as u64,
                    sha256: Sha256Hex::of(c),
                })
                .collect(),
            manifest_checksum: "abc".into(),
            label: "x".into(),
            host: "db1".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
        CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: standby\n\
        START TIME: 2026-11-27 10:02:03 UTC\nLABEL: walvault 20261127T100203Z\nSTART TIMELINE: 1\n";

    #[test]
    fn reads_the_label_postgres_writes() {
        let label = BackupLabel::parse(LABEL).unwrap();
        assert_eq!(label.start_lsn, Lsn(0x0200_0028));
        assert_eq!(label.start_segment.to_string(), "000000010000000000000002");
        assert_eq!(label.start_timeline, 1);
        assert!(label.from_standby);
        assert_eq!(label.label, "walvault 20261127T100203Z");
        assert!(BackupLabel::parse("START TIMELINE: 1\n").is_err());
        assert!(BackupLabel::parse(&LABEL.replace("(file 0", "(file x")).is_err());
    }

    #[test]
    fn reads_the_manifest_facts() {
        let manifest = br#"{ "PostgreSQL-Backup-Manifest-Version": 1,
            "Files": [ { "Path": "PG_VERSION", "Size": 3 } ],
            "WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000000" },
                            { "Timeline": 2, "Start-LSN": "0/3000000", "End-LSN": "0/3000100" } ],
            "Manifest-Checksum": "abc" }"#;
        let facts = ManifestFacts::parse(manifest).unwrap();
        assert_eq!(facts.stop(), (2, Lsn(0x0300_0100)));
        assert_eq!(facts.checksum, "abc");
        assert!(ManifestFacts::parse(b"{}").is_err());
        assert!(ManifestFacts::parse(br#"{"WAL-Ranges": [], "Manifest-Checksum": "x"}"#).is_err());
    }

    #[test]
    fn descriptors_round_trip_and_summarise_their_chunks() {
        let d = tests_support::descriptor_of(&[b"abcd", b"ef"]);
        let parsed = BackupDescriptor::parse(&d.to_json()).unwrap();
        assert_eq!(parsed, d);
        let summary = d.summary().unwrap();
        assert_eq!(summary.chunk_count, 2);
        assert_eq!(
            summary.chunks_sha256,
            chunk_list_digest([&Sha256Hex::of(b"abcd"), &Sha256Hex::of(b"ef")])
        );
        assert_eq!(
            summary.stop_segment().unwrap().to_string(),
            "000000010000000000000003"
        );
        let files: Vec<String> = d
            .chunk_files()
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(
            files,
            [
                "backup/20261127T100203Z/000000",
                "backup/20261127T100203Z/000001"
            ]
        );
        let mut wrong = d.clone();
        wrong.size += 1;
        assert!(BackupDescriptor::parse(&wrong.to_json()).is_err());
        let mut future = d;
        future.format = 2;
        assert!(BackupDescriptor::parse(&future.to_json()).is_err());
    }

    #[test]
    fn the_system_identifier_is_the_first_field_of_pg_control() {
        let mut control = vec![0u8; 8192];
        control[..8].copy_from_slice(&7_311_234_567_890_123_456u64.to_le_bytes());
        assert_eq!(
            system_identifier_of_control(&control).unwrap(),
            7_311_234_567_890_123_456
        );
        assert!(system_identifier_of_control(&[1, 2]).is_err());
    }
}
