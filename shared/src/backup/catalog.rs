//! The backups the catalog knows, and which of them are complete: the
//! descriptor's record replicated, with its summary, and one replicated
//! record per chunk whose digests add up to the summary's. Computed when
//! read, from the records themselves, so no second state can disagree.

use std::collections::BTreeMap;

use super::descriptor::{chunk_list_digest, BackupSummary};
use super::name::{BackupFile, BackupId, BackupPart};
use crate::catalog::{list_prefix, Catalog, CatalogError, CatalogRecord, RecordStatus};
use crate::clock::UnixMillis;
use crate::keys::ClusterName;

/// One backup as the catalog shows it.
#[derive(Debug, Clone)]
pub struct BackupState {
    pub id: BackupId,
    /// From the descriptor's record; `None` if no descriptor was recorded.
    pub summary: Option<BackupSummary>,
    /// Why the backup is not complete; `None` when it is.
    pub incomplete: Option<String>,
    /// The records of its parts (chunks, then the descriptor).
    pub parts: Vec<CatalogRecord>,
    /// When its first part reached staging.
    pub first_staged_at: UnixMillis,
}

impl BackupState {
    pub fn is_complete(&self) -> bool {
        self.incomplete.is_none()
    }

    /// Stored bytes of its parts on one provider (compressed).
    pub fn stored_size(&self) -> u64 {
        self.parts.iter().filter_map(|r| r.stored_size()).sum()
    }
}

/// Every backup of `cluster`, oldest first.
pub async fn backups(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
) -> Result<Vec<BackupState>, CatalogError> {
    let records = list_prefix(catalog, cluster, &BackupFile::all_prefix()).await?;
    Ok(group(records))
}

/// Groups the records of backup parts by backup, and judges each.
pub fn group(records: Vec<CatalogRecord>) -> Vec<BackupState> {
    let mut by_backup: BTreeMap<BackupId, Vec<CatalogRecord>> = BTreeMap::new();
    for record in records {
        if let Some(file) = record.file.backup() {
            by_backup.entry(file.backup).or_default().push(record);
        }
    }
    by_backup
        .into_iter()
        .map(|(id, parts)| judge(id, parts))
        .collect()
}

fn judge(id: BackupId, parts: Vec<CatalogRecord>) -> BackupState {
    let first_staged_at = parts.iter().map(|r| r.staged_at).min().unwrap_or_default();
    let descriptor = parts.iter().find(|r| {
        matches!(
            r.file.backup(),
            Some(BackupFile {
                part: BackupPart::Descriptor,
                ..
            })
        )
    });
    let summary = descriptor.and_then(|r| r.backup.clone());
    let incomplete = match (descriptor, &summary) {
        (None, _) => Some("no descriptor: the backup did not finish".to_owned()),
        (Some(_), None) => Some("the descriptor's record has no summary".to_owned()),
        (Some(record), Some(summary)) => why_incomplete(record, summary, &parts),
    };
    BackupState {
        id,
        summary,
        incomplete,
        parts,
        first_staged_at,
    }
}

fn why_incomplete(
    descriptor: &CatalogRecord,
    summary: &BackupSummary,
    parts: &[CatalogRecord],
) -> Option<String> {
    if descriptor.status != RecordStatus::Replicated {
        return Some(format!("descriptor {}", descriptor.status));
    }
    let chunks: BTreeMap<u32, &CatalogRecord> = parts
        .iter()
        .filter_map(|r| match r.file.backup()?.part {
            BackupPart::Chunk(n) => Some((n, r)),
            BackupPart::Descriptor => None,
        })
        .collect();
    for n in 0..summary.chunk_count {
        match chunks.get(&n) {
            None => return Some(format!("chunk {n} not recorded")),
            Some(r) if r.status != RecordStatus::Replicated => {
                return Some(format!("chunk {n} {}", r.status))
            }
            Some(_) => {}
        }
    }
    if chunks.len() as u32 != summary.chunk_count {
        return Some(format!(
            "{} chunk records, the descriptor lists {}",
            chunks.len(),
            summary.chunk_count
        ));
    }
    let digest = chunk_list_digest(chunks.values().map(|r| &r.raw_sha256));
    if digest != summary.chunks_sha256 {
        return Some("the chunks recorded are not the ones the descriptor lists".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::descriptor::tests_support::descriptor_of;
    use crate::codec::Sha256Hex;
    use crate::file::ArchivedFile;
    use crate::provider::Provider;

    fn record(file: BackupFile, sha: Sha256Hex, status: RecordStatus) -> CatalogRecord {
        let mut record = CatalogRecord::replicating(
            "main".parse().unwrap(),
            ArchivedFile::Backup(file),
            4,
            sha,
            10,
            10,
        );
        record.status = status;
        if status == RecordStatus::Replicated {
            for provider in Provider::ALL {
                record.targets.insert(
                    provider,
                    crate::catalog::TargetState {
                        key: String::new(),
                        size: 3,
                        etag: None,
                        at: 11,
                        stored_sha256: None,
                    },
                );
            }
        }
        record
    }

    fn backup(
        chunks: &[&[u8]],
        chunk_status: RecordStatus,
        with_descriptor: bool,
    ) -> Vec<CatalogRecord> {
        let descriptor = descriptor_of(chunks);
        let id: BackupId = descriptor.id.parse().unwrap();
        let mut records: Vec<CatalogRecord> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                record(
                    BackupFile::chunk(id, i as u32),
                    Sha256Hex::of(c),
                    chunk_status,
                )
            })
            .collect();
        if with_descriptor {
            let mut d = record(
                BackupFile::descriptor(id),
                Sha256Hex::of(b"descriptor"),
                RecordStatus::Replicated,
            );
            d.backup = Some(descriptor.summary().unwrap());
            records.push(d);
        }
        records
    }

    #[test]
    fn a_backup_is_complete_only_with_every_chunk_replicated_as_listed() {
        let chunks: [&[u8]; 2] = [b"abcd", b"ef"];
        let complete = group(backup(&chunks, RecordStatus::Replicated, true));
        assert_eq!(complete.len(), 1);
        assert!(complete[0].is_complete(), "{:?}", complete[0].incomplete);

        let no_descriptor = group(backup(&chunks, RecordStatus::Replicated, false));
        assert!(no_descriptor[0]
            .incomplete
            .as_deref()
            .unwrap()
            .contains("no descriptor"));

        let partial = group(backup(&chunks, RecordStatus::Partial, true));
        assert!(partial[0]
            .incomplete
            .as_deref()
            .unwrap()
            .contains("chunk 0 partial"));

        let mut missing = backup(&chunks, RecordStatus::Replicated, true);
        missing.remove(1);
        assert!(group(missing)[0]
            .incomplete
            .as_deref()
            .unwrap()
            .contains("chunk 1"));

        let mut swapped = backup(&chunks, RecordStatus::Replicated, true);
        swapped[0].raw_sha256 = Sha256Hex::of(b"other");
        assert!(group(swapped)[0]
            .incomplete
            .as_deref()
            .unwrap()
            .contains("not the ones"));
    }
}
