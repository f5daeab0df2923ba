//! Step one: read the staging object and check it against what the
//! shipper recorded and, for segments, against the WAL header. A file that
//! fails is recorded `corrupt` and never replicated. A file larger than
//! [`IN_MEMORY_LIMIT`] is not read whole: [`super::streamed`] takes it.

use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{elapsed_ms, Outcome, ReplicateError, Run};
use crate::backup::descriptor::{BackupDescriptor, BackupSummary};
use crate::catalog::{CatalogRecord, RecordStatus};
use crate::clock::{now_millis, unix_millis, UnixMillis};
use crate::codec::{self, Sha256Hex, IN_MEMORY_LIMIT};
use crate::file::{ArchivedFile, FileKind};
use crate::keys::meta;
use crate::metrics::Metric;
use crate::seal::{self, Claims, Recipients};
use crate::store::{Object, ObjectInfo, ObjectReader, StoreError};
use crate::wal::{WalFileKind, WalFileName, WalHeader};

/// What verification established about a staging object.
pub(super) struct Staged {
    pub raw_size: u64,
    pub sha256: Sha256Hex,
    pub header: Option<WalHeader>,
    /// A backup descriptor's summary, for its catalog record.
    pub backup: Option<Box<BackupSummary>>,
    /// A timeline history file's bytes, for its catalog record.
    pub history: Option<Vec<u8>>,
    pub staged_at: UnixMillis,
}

impl Staged {
    /// What a sealed copy of this file says it holds.
    pub fn claims(&self) -> Claims {
        Claims {
            raw_size: self.raw_size,
            raw_sha256: self.sha256.clone(),
        }
    }
}

/// A staging object that failed verification.
pub(super) struct Corrupt {
    pub raw_size: u64,
    pub sha256: Sha256Hex,
    pub staged_at: UnixMillis,
    pub problem: String,
}

/// The staging object, opened.
pub(super) enum Opened {
    /// Small enough to hold: read whole.
    Whole(Object),
    /// Too large to hold: to be read as it streams in.
    Streaming(ObjectReader),
    /// No staging object under the key.
    Gone,
}

pub(super) enum Read {
    Verified(Staged, Bytes),
    Corrupt(Corrupt),
}

impl Run<'_> {
    /// Opens the staging object, and reads it whole unless it is larger
    /// than [`IN_MEMORY_LIMIT`].
    pub(super) async fn open_staged(&mut self) -> Result<Opened, ReplicateError> {
        let clock = Instant::now();
        let staging = &self.replicator.backends.staging;
        let key = self.staging_key;
        let got = self
            .budget
            .run(format!("staging get {key}"), || async move {
                let reader = staging.get_stream(key).await?;
                if reader.info.size > IN_MEMORY_LIMIT {
                    return Ok(Opened::Streaming(reader));
                }
                let mut body = Vec::with_capacity(reader.info.size as usize);
                let mut pieces = reader.body;
                while let Some(piece) = pieces.next().await {
                    body.extend_from_slice(&piece?);
                }
                Ok(Opened::Whole(Object {
                    info: reader.info,
                    body: Bytes::from(body),
                }))
            })
            .await;
        let opened = match got {
            Ok(opened) => opened,
            Err(StoreError::NotFound { .. }) => return Ok(Opened::Gone),
            Err(source) => {
                return Err(ReplicateError::Staging {
                    file: self.file.to_string(),
                    source,
                })
            }
        };
        self.steps.get_ms = elapsed_ms(clock);
        if let Opened::Whole(Object { info, .. }) | Opened::Streaming(ObjectReader { info, .. }) =
            &opened
        {
            self.staged_etag = info.etag.clone();
        }
        Ok(opened)
    }

    /// Verifies a staging object read whole.
    pub(super) fn verify_whole(&mut self, object: Object) -> Read {
        let clock = Instant::now();
        let sha256 = Sha256Hex::of(&object.body);
        let staged_at = staged_at(&object.info);
        let raw_size = object.body.len() as u64;
        let verified = check_claims(&object.info).and_then(|claimed| {
            if claimed != sha256 {
                return Err(format!(
                    "sha256 of the content is {sha256}, the shipper recorded {claimed}"
                ));
            }
            check_content(&self.file, &object.info, &object.body)
        });
        self.steps.verify_ms = elapsed_ms(clock);
        match verified {
            Ok(Checked { header, backup }) => Read::Verified(
                Staged {
                    raw_size,
                    sha256,
                    header,
                    backup,
                    history: history_bytes(&self.file, &object.body),
                    staged_at,
                },
                object.body,
            ),
            Err(problem) => Read::Corrupt(Corrupt {
                raw_size,
                sha256,
                staged_at,
                problem,
            }),
        }
    }

    /// The raw bytes compressed.
    pub(super) fn compress(&mut self, raw: &Bytes) -> Result<Bytes, ReplicateError> {
        let clock = Instant::now();
        let packed = codec::compress(raw, self.replicator.level).map_err(|source| {
            ReplicateError::Compress {
                file: self.file,
                source,
            }
        })?;
        self.steps.compress_ms = elapsed_ms(clock);
        Ok(Bytes::from(packed))
    }

    /// What the replicas hold: the compressed bytes, sealed to `to` if
    /// anyone.
    pub(super) fn seal_to(
        &mut self,
        to: Option<&Recipients>,
        staged: &Staged,
        packed: &Bytes,
    ) -> Result<Bytes, ReplicateError> {
        let Some(to) = to else {
            return Ok(packed.clone());
        };
        let clock = Instant::now();
        let sealed =
            seal::seal(packed, &staged.claims(), to).map_err(|source| ReplicateError::Seal {
                file: self.file,
                source,
            })?;
        self.steps.compress_ms += elapsed_ms(clock);
        Ok(Bytes::from(sealed))
    }

    pub(super) async fn record_corrupt(
        &mut self,
        corrupt: Corrupt,
    ) -> Result<Outcome, ReplicateError> {
        tracing::error!(file = %self.file, problem = %corrupt.problem, "CORRUPT staging object: not replicated");
        self.report
            .add(Metric::CorruptInputs, 1.0)
            .property("problem", corrupt.problem.clone());
        let record = CatalogRecord {
            status: RecordStatus::Corrupt,
            detail: Some(corrupt.problem.clone()),
            ..CatalogRecord::replicating(
                self.replicator.cluster.clone(),
                self.file,
                corrupt.raw_size,
                corrupt.sha256,
                corrupt.staged_at,
                now_millis(),
            )
        };
        let catalog = &self.replicator.backends.catalog;
        self.budget
            .run(format!("catalog create {}", self.file), || {
                catalog.create(&record)
            })
            .await
            .map_err(|e| self.catalog_error(e))?;
        Ok(Outcome::Corrupt(corrupt.problem))
    }
}

/// What verification learnt from the content.
pub(super) struct Checked {
    pub header: Option<WalHeader>,
    pub backup: Option<Box<BackupSummary>>,
}

/// When the shipper staged the object.
pub(super) fn staged_at(info: &ObjectInfo) -> UnixMillis {
    info.last_modified
        .map(unix_millis)
        .unwrap_or_else(now_millis)
}

/// Checks what the shipper recorded on the object against its size;
/// returns the sha256 it recorded, or what is wrong.
pub(super) fn check_claims(info: &ObjectInfo) -> Result<Sha256Hex, String> {
    let claimed = info
        .sha256()
        .ok_or("no sha256 metadata: not written by walvault push")?;
    if let Some(size) = info.metadata.get(meta::SIZE) {
        if size != &info.size.to_string() {
            return Err(format!("{} bytes, the shipper recorded {size}", info.size));
        }
    }
    Ok(claimed)
}

/// Checks the content against its name: for segments, the WAL header in
/// `start` (the file's first bytes, or all of it), the length and the
/// system identifier the shipper recorded; a backup
/// descriptor (given whole) must parse. Returns what the content says, or
/// what is wrong.
pub(super) fn check_content(
    file: &ArchivedFile,
    info: &ObjectInfo,
    start: &[u8],
) -> Result<Checked, String> {
    if file.kind() == FileKind::BackupDescriptor {
        let summary = BackupDescriptor::parse(start)
            .and_then(|d| d.summary())
            .map_err(|e| e.to_string())?;
        return Ok(Checked {
            header: None,
            backup: Some(Box::new(summary)),
        });
    }
    let Some(name) = file
        .wal()
        .filter(|name| matches!(name.kind(), WalFileKind::Segment | WalFileKind::Partial))
    else {
        return Ok(Checked {
            header: None,
            backup: None,
        });
    };
    let header = WalHeader::parse_start(&name, start, info.size).map_err(|e| e.to_string())?;
    if let Some(claimed) = info.metadata.get(meta::SYSTEM_IDENTIFIER) {
        if claimed != &header.system_identifier.to_string() {
            return Err(format!(
                "system identifier {} in the header, the shipper recorded {claimed}",
                header.system_identifier
            ));
        }
    }
    Ok(Checked {
        header: Some(header),
        backup: None,
    })
}

/// A timeline history file's bytes, kept in its record: the retention
/// function reads the timeline switches from them without opening a
/// sealed copy.
fn history_bytes(file: &ArchivedFile, body: &[u8]) -> Option<Vec<u8>> {
    match file {
        ArchivedFile::Wal(WalFileName::History { .. }) => Some(body.to_vec()),
        _ => None,
    }
}
