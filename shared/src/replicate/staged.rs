//! Step one: read the staging object and check it against what the
//! shipper recorded and, for segments, against the WAL header. A file that
//! fails is recorded `corrupt` and never replicated.

use std::time::Instant;

use bytes::Bytes;

use super::{elapsed_ms, Outcome, ReplicateError, Run};
use crate::backup::descriptor::{BackupDescriptor, BackupSummary};
use crate::catalog::{CatalogRecord, RecordStatus};
use crate::clock::{now_millis, unix_millis, UnixMillis};
use crate::codec::{self, Sha256Hex};
use crate::file::{ArchivedFile, FileKind};
use crate::keys::meta;
use crate::metrics::Metric;
use crate::store::{Object, StoreError};
use crate::wal::{WalFileKind, WalHeader};

/// A staging object that passed verification.
pub(super) struct Staged {
    pub raw: Bytes,
    pub sha256: Sha256Hex,
    pub header: Option<WalHeader>,
    /// A backup descriptor's summary, for its catalog record.
    pub backup: Option<Box<BackupSummary>>,
    pub staged_at: UnixMillis,
}

/// A staging object that failed verification.
pub(super) struct Corrupt {
    raw_size: u64,
    sha256: Sha256Hex,
    staged_at: UnixMillis,
    problem: String,
}

pub(super) enum Read {
    Verified(Staged),
    Corrupt(Corrupt),
    /// No staging object under the key.
    Gone,
}

impl Run<'_> {
    pub(super) async fn read_staged(&mut self) -> Result<Read, ReplicateError> {
        let clock = Instant::now();
        let staging = &self.replicator.backends.staging;
        let key = self.staging_key;
        let got = self
            .budget
            .run(format!("staging get {key}"), || staging.get(key))
            .await;
        let object = match got {
            Ok(object) => object,
            Err(StoreError::NotFound { .. }) => return Ok(Read::Gone),
            Err(source) => {
                return Err(ReplicateError::Staging {
                    file: self.file.to_string(),
                    source,
                })
            }
        };
        self.steps.get_ms = elapsed_ms(clock);
        self.staged_etag = object.info.etag.clone();
        let clock = Instant::now();
        let sha256 = Sha256Hex::of(&object.body);
        let staged_at = object
            .info
            .last_modified
            .map(unix_millis)
            .unwrap_or_else(now_millis);
        let verified = verify(&self.file, &object, &sha256);
        self.steps.verify_ms = elapsed_ms(clock);
        Ok(match verified {
            Ok(Checked { header, backup }) => Read::Verified(Staged {
                raw: object.body,
                sha256,
                header,
                backup,
                staged_at,
            }),
            Err(problem) => Read::Corrupt(Corrupt {
                raw_size: object.body.len() as u64,
                sha256,
                staged_at,
                problem,
            }),
        })
    }

    pub(super) fn compress(&mut self, staged: &Staged) -> Result<Bytes, ReplicateError> {
        let clock = Instant::now();
        let packed = codec::compress(&staged.raw, self.replicator.level).map_err(|source| {
            ReplicateError::Compress {
                file: self.file,
                source,
            }
        })?;
        self.steps.compress_ms = elapsed_ms(clock);
        Ok(Bytes::from(packed))
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
struct Checked {
    header: Option<WalHeader>,
    backup: Option<Box<BackupSummary>>,
}

/// Checks the staged bytes against what the shipper recorded and, for
/// segments, against the WAL header; a backup descriptor must parse.
/// Returns what the content says, or what is wrong.
fn verify(file: &ArchivedFile, staged: &Object, sha: &Sha256Hex) -> Result<Checked, String> {
    match staged.info.sha256() {
        None => return Err("no sha256 metadata: not written by walvault push".into()),
        Some(claimed) if &claimed != sha => {
            return Err(format!(
                "sha256 of the content is {sha}, the shipper recorded {claimed}"
            ))
        }
        Some(_) => {}
    }
    if let Some(size) = staged.info.metadata.get(meta::SIZE) {
        if size != &staged.body.len().to_string() {
            return Err(format!(
                "{} bytes, the shipper recorded {size}",
                staged.body.len()
            ));
        }
    }
    if file.kind() == FileKind::BackupDescriptor {
        let summary = BackupDescriptor::parse(&staged.body)
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
    let header = WalHeader::parse_file(&name, &staged.body).map_err(|e| e.to_string())?;
    if let Some(claimed) = staged.info.metadata.get(meta::SYSTEM_IDENTIFIER) {
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
