//! A catalog in memory with exactly the conditions of [`super::DynamoCatalog`]
//! (create if absent, writes only on a record of the same content, status
//! transitions from named states, `replicated` only with every replica),
//! for fast tests of the logic above it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    Catalog, CatalogError, CatalogOperation, CatalogRecord, ClusterItem, ClusterItemKind,
    CreateOutcome, RecordPage, RecordRef, RecordStatus, TargetState,
};
use crate::clock::UnixMillis;
use crate::file::ArchivedFile;
use crate::keys::ClusterName;
use crate::provider::Provider;

/// By name, as DynamoDB's sort key orders them.
type Key = (ClusterName, String);

fn key(cluster: &ClusterName, file: &ArchivedFile) -> Key {
    (cluster.clone(), file.to_string())
}

pub struct MemoryCatalog {
    records: Mutex<BTreeMap<Key, CatalogRecord>>,
    items: Mutex<BTreeMap<(ClusterName, ClusterItemKind), ClusterItem>>,
    page_size: usize,
}

impl Default for MemoryCatalog {
    fn default() -> Self {
        MemoryCatalog {
            records: Mutex::new(BTreeMap::new()),
            items: Mutex::new(BTreeMap::new()),
            page_size: 500,
        }
    }
}

impl MemoryCatalog {
    /// Listings return at most `page_size` records a page.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// A new catalog holding the same records: a snapshot to start tests from.
    pub fn duplicate(&self) -> Self {
        MemoryCatalog {
            records: Mutex::new(self.lock().clone()),
            items: Mutex::new(self.lock_items().clone()),
            page_size: self.page_size,
        }
    }

    /// Every record, in key order.
    pub fn records(&self) -> Vec<CatalogRecord> {
        self.lock().values().cloned().collect()
    }

    /// Replaces or inserts a record unconditionally: how a test sets up a
    /// state the conditional writes would not reach on their own.
    pub fn put(&self, record: CatalogRecord) {
        self.lock()
            .insert(key(&record.cluster, &record.file), record);
    }

    /// Removes a record behind walvault's back.
    pub fn remove(&self, cluster: &ClusterName, file: &ArchivedFile) {
        self.lock().remove(&key(cluster, file));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, CatalogRecord>> {
        // A panic while holding the lock is a test failure already.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[allow(clippy::type_complexity)]
    fn lock_items(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(ClusterName, ClusterItemKind), ClusterItem>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to the record `reference` names if it describes
    /// the same content and `allowed` says so; the record as it now stands.
    fn update(
        &self,
        operation: CatalogOperation,
        reference: RecordRef<'_>,
        allowed: impl FnOnce(&CatalogRecord) -> bool,
        change: impl FnOnce(&mut CatalogRecord),
    ) -> Result<CatalogRecord, CatalogError> {
        let mut records = self.lock();
        let key = key(reference.cluster, reference.file);
        match records.get_mut(&key) {
            Some(record) if &record.raw_sha256 == reference.raw_sha256 && allowed(record) => {
                change(record);
                Ok(record.clone())
            }
            _ => Err(CatalogError::ConditionFailed {
                operation,
                file: reference.file.to_string(),
            }),
        }
    }
}

#[async_trait]
impl Catalog for MemoryCatalog {
    async fn get(
        &self,
        cluster: &ClusterName,
        file: &ArchivedFile,
    ) -> Result<Option<CatalogRecord>, CatalogError> {
        Ok(self.lock().get(&key(cluster, file)).cloned())
    }

    async fn create(&self, record: &CatalogRecord) -> Result<CreateOutcome, CatalogError> {
        let mut records = self.lock();
        let key = key(&record.cluster, &record.file);
        match records.get(&key) {
            Some(existing) => Ok(CreateOutcome::Exists(Box::new(existing.clone()))),
            None => {
                records.insert(key, record.clone());
                Ok(CreateOutcome::Created)
            }
        }
    }

    async fn record_target(
        &self,
        record: RecordRef<'_>,
        provider: Provider,
        target: &TargetState,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        self.update(
            CatalogOperation::RecordTarget,
            record,
            |_| true,
            |r| {
                r.targets.insert(provider, target.clone());
                r.updated_at = at;
            },
        )
    }

    async fn set_status(
        &self,
        record: RecordRef<'_>,
        from: &[RecordStatus],
        to: RecordStatus,
        detail: Option<&str>,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        let allowed = |r: &CatalogRecord| {
            from.contains(&r.status) && (to != RecordStatus::Replicated || r.has_every_target())
        };
        self.update(CatalogOperation::SetStatus, record, allowed, |r| {
            r.status = to;
            r.updated_at = at;
            if to == RecordStatus::Replicated {
                r.replicated_at = Some(at);
            }
            r.detail = detail.map(str::to_owned);
        })
    }

    async fn record_conflict(
        &self,
        cluster: &ClusterName,
        file: &ArchivedFile,
        detail: &str,
        at: UnixMillis,
    ) -> Result<(), CatalogError> {
        match self.lock().get_mut(&key(cluster, file)) {
            Some(record) => {
                record.conflicts += 1;
                record.last_conflict = Some(detail.to_owned());
                record.updated_at = at;
                Ok(())
            }
            None => Err(CatalogError::ConditionFailed {
                operation: CatalogOperation::RecordConflict,
                file: file.to_string(),
            }),
        }
    }

    async fn delete(&self, record: RecordRef<'_>) -> Result<(), CatalogError> {
        let mut records = self.lock();
        let key = key(record.cluster, record.file);
        match records.get(&key) {
            Some(existing) if &existing.raw_sha256 != record.raw_sha256 => {
                Err(CatalogError::ConditionFailed {
                    operation: CatalogOperation::Delete,
                    file: record.file.to_string(),
                })
            }
            _ => {
                records.remove(&key);
                Ok(())
            }
        }
    }

    async fn list_page(
        &self,
        cluster: &ClusterName,
        prefix: &str,
        after: Option<&ArchivedFile>,
    ) -> Result<RecordPage, CatalogError> {
        let records = self.lock();
        let after = after.map(|a| a.to_string());
        let mut matching = records
            .iter()
            .filter(|((c, name), _)| {
                c == cluster && name.starts_with(prefix) && after.as_ref().is_none_or(|a| name > a)
            })
            .map(|(_, record)| record.clone());
        let page: Vec<CatalogRecord> = matching.by_ref().take(self.page_size).collect();
        let next = match matching.next() {
            Some(_) => page.last().map(|r| r.file),
            None => None,
        };
        Ok(RecordPage {
            records: page,
            next,
        })
    }

    async fn get_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
    ) -> Result<Option<ClusterItem>, CatalogError> {
        Ok(self.lock_items().get(&(cluster.clone(), item)).cloned())
    }

    async fn put_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
        expected: Option<u64>,
        body: &str,
    ) -> Result<(), CatalogError> {
        let mut items = self.lock_items();
        let key = (cluster.clone(), item);
        let current = items.get(&key).map(|item| item.version);
        if current != expected {
            return Err(CatalogError::ConditionFailed {
                operation: CatalogOperation::PutClusterItem,
                file: item.name().into(),
            });
        }
        items.insert(
            key,
            ClusterItem {
                version: expected.map_or(1, |v| v + 1),
                body: body.to_owned(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::list_all;
    use crate::codec::Sha256Hex;

    fn record(file: &str, content: &[u8]) -> CatalogRecord {
        CatalogRecord::replicating(
            "c".parse().unwrap(),
            file.parse().unwrap(),
            content.len() as u64,
            Sha256Hex::of(content),
            1,
            1,
        )
    }

    fn target() -> TargetState {
        TargetState {
            key: "k".into(),
            size: 1,
            etag: None,
            at: 2,
            stored_sha256: None,
        }
    }

    #[tokio::test]
    async fn writes_are_conditional_as_on_dynamodb() {
        let catalog = MemoryCatalog::default();
        let ours = record("000000010000000000000001", b"ours");
        assert_eq!(catalog.create(&ours).await.unwrap(), CreateOutcome::Created);
        let theirs = record("000000010000000000000001", b"theirs");
        assert!(matches!(
            catalog.create(&theirs).await.unwrap(),
            CreateOutcome::Exists(r) if r.raw_sha256 == ours.raw_sha256
        ));
        let wrong = RecordRef::of(&theirs);
        assert!(catalog
            .record_target(wrong, Provider::R2, &target(), 2)
            .await
            .is_err());
        let from = [RecordStatus::Replicating, RecordStatus::Partial];
        catalog
            .record_target(RecordRef::of(&ours), Provider::R2, &target(), 2)
            .await
            .unwrap();
        assert!(
            catalog
                .set_status(
                    RecordRef::of(&ours),
                    &from,
                    RecordStatus::Replicated,
                    None,
                    3
                )
                .await
                .is_err(),
            "replicated needs every replica"
        );
        catalog
            .record_target(RecordRef::of(&ours), Provider::B2, &target(), 2)
            .await
            .unwrap();
        let done = catalog
            .set_status(
                RecordRef::of(&ours),
                &from,
                RecordStatus::Replicated,
                None,
                3,
            )
            .await
            .unwrap();
        assert_eq!(done.replicated_at, Some(3));
        assert!(catalog.delete(wrong).await.is_err());
        catalog.delete(RecordRef::of(&ours)).await.unwrap();
        catalog.delete(RecordRef::of(&ours)).await.unwrap();
    }

    #[tokio::test]
    async fn listings_page_in_wal_order() {
        let catalog = MemoryCatalog::default().with_page_size(2);
        for seg in [5, 1, 3, 2, 4] {
            catalog
                .create(&record(&format!("00000001000000000000000{seg}"), b"x"))
                .await
                .unwrap();
        }
        let first = catalog
            .list_page(&"c".parse().unwrap(), "", None)
            .await
            .unwrap();
        assert_eq!(first.records.len(), 2);
        assert!(first.next.is_some());
        let all = list_all(&catalog, &"c".parse().unwrap()).await.unwrap();
        let names: Vec<String> = all.iter().map(|r| r.file.to_string()).collect();
        assert_eq!(names.len(), 5);
        assert!(names.windows(2).all(|w| w[0] < w[1]));
    }
}
