//! Base backups that never finished: parts in staging or the archive, and
//! no descriptor anywhere. `walvault backup` cannot delete (the host has
//! no delete right), so the sweep removes them once nothing has been added
//! to them for `WALVAULT_INCOMPLETE_BACKUP_DAYS`. This is the one rule that
//! removes bytes not replicated to both providers: bytes that can never
//! restore anything. A backup with a descriptor is never abandoned, even
//! while some of its parts are still replicating.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::backup::catalog::BackupState;
use crate::backup::name::{BackupId, BackupPart};
use crate::catalog::CatalogRecord;
use crate::clock::{unix_millis, UnixMillis};
use crate::file::ArchivedFile;
use crate::keys::{parse_staging_key, staging_prefix, ClusterName};
use crate::store::{list_all, ObjectStore, StoreError};

#[derive(Debug, Clone, Default)]
pub struct Abandoned {
    pub id: Option<BackupId>,
    /// Its parts still in staging.
    pub staged_keys: Vec<String>,
    /// Its parts in the catalog (and so on the providers).
    pub records: Vec<CatalogRecord>,
}

#[derive(Default)]
struct Seen {
    staged_keys: Vec<String>,
    records: Vec<CatalogRecord>,
    has_descriptor: bool,
    last_activity: UnixMillis,
}

/// The backups abandoned at `now`, from the catalog's `states` and a
/// listing of the staging area's backup parts.
pub async fn find(
    staging: &dyn ObjectStore,
    cluster: &ClusterName,
    states: &[BackupState],
    now: UnixMillis,
    after: Duration,
) -> Result<Vec<Abandoned>, StoreError> {
    let prefix = format!("{}backup/", staging_prefix(cluster));
    let staged = list_all(staging, &prefix).await?;
    let mut seen: BTreeMap<BackupId, Seen> = BTreeMap::new();
    for object in staged {
        let Ok((_, ArchivedFile::Backup(file))) = parse_staging_key(&object.key) else {
            continue;
        };
        let entry = seen.entry(file.backup).or_default();
        entry.has_descriptor |= file.part == BackupPart::Descriptor;
        let at = object.last_modified.map(unix_millis).unwrap_or(now);
        entry.last_activity = entry.last_activity.max(at);
        entry.staged_keys.push(object.key);
    }
    for state in states {
        let entry = seen.entry(state.id).or_default();
        for record in &state.parts {
            entry.has_descriptor |=
                matches!(record.file.backup(), Some(f) if f.part == BackupPart::Descriptor);
            entry.last_activity = entry.last_activity.max(record.updated_at);
        }
        entry.records.extend(state.parts.iter().cloned());
    }
    let cutoff = now.saturating_sub(after.as_millis() as u64);
    Ok(seen
        .into_iter()
        .filter(|(_, s)| !s.has_descriptor && s.last_activity < cutoff)
        .map(|(id, s)| Abandoned {
            id: Some(id),
            staged_keys: s.staged_keys,
            records: s.records,
        })
        .collect())
}
