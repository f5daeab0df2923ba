//! The catalog with its pages read from a snapshot, for measurements at
//! scale (`make bench`).

use std::sync::Arc;

use shared::catalog::{
    Catalog, CatalogError, CatalogRecord, ClusterItem, ClusterItemKind, CreateOutcome, RecordPage,
    RecordRef, RecordStatus, TargetState,
};
use shared::clock::UnixMillis;
use shared::file::ArchivedFile;
use shared::keys::ClusterName;
use shared::provider::Provider;

/// The catalog with its pages read from a snapshot of the records in it,
/// and every write (the sweep's conditional deletes) sent to the catalog
/// itself: moto needs about a second per page of a large partition (it
/// scans and sorts the whole partition for each), which would measure moto
/// rather than the sweep. Pages are the size the catalog returns.
pub struct SnapshotPages {
    cluster: ClusterName,
    /// Sorted by file name as a string, as the catalog's sort key is.
    records: Vec<CatalogRecord>,
    page_size: usize,
    inner: Arc<dyn Catalog>,
}

#[async_trait::async_trait]
impl Catalog for SnapshotPages {
    async fn get(
        &self,
        cluster: &ClusterName,
        file: &ArchivedFile,
    ) -> Result<Option<CatalogRecord>, CatalogError> {
        self.inner.get(cluster, file).await
    }

    async fn create(&self, record: &CatalogRecord) -> Result<CreateOutcome, CatalogError> {
        self.inner.create(record).await
    }

    async fn record_target(
        &self,
        record: RecordRef<'_>,
        provider: Provider,
        target: &TargetState,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        self.inner.record_target(record, provider, target, at).await
    }

    async fn set_status(
        &self,
        record: RecordRef<'_>,
        from: &[RecordStatus],
        to: RecordStatus,
        detail: Option<&str>,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        self.inner.set_status(record, from, to, detail, at).await
    }

    async fn record_conflict(
        &self,
        cluster: &ClusterName,
        file: &ArchivedFile,
        detail: &str,
        at: UnixMillis,
    ) -> Result<(), CatalogError> {
        self.inner.record_conflict(cluster, file, detail, at).await
    }

    async fn delete(&self, record: RecordRef<'_>) -> Result<(), CatalogError> {
        self.inner.delete(record).await
    }

    async fn get_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
    ) -> Result<Option<ClusterItem>, CatalogError> {
        self.inner.get_cluster_item(cluster, item).await
    }

    async fn put_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
        expected: Option<u64>,
        body: &str,
    ) -> Result<(), CatalogError> {
        self.inner
            .put_cluster_item(cluster, item, expected, body)
            .await
    }

    async fn list_page(
        &self,
        cluster: &ClusterName,
        prefix: &str,
        after: Option<&ArchivedFile>,
    ) -> Result<RecordPage, CatalogError> {
        // The sweep lists everything; a snapshot answers nothing else.
        if *cluster != self.cluster || !prefix.is_empty() {
            return Ok(RecordPage {
                records: Vec::new(),
                next: None,
            });
        }
        // In the catalog's order: by the file name as a string.
        let start = match after {
            Some(after) => {
                let after = after.to_string();
                self.records
                    .partition_point(|r| r.file.to_string() <= after)
            }
            None => 0,
        };
        let end = (start + self.page_size).min(self.records.len());
        let records = self.records[start..end].to_vec();
        let next = (end < self.records.len())
            .then(|| records.last().map(|r| r.file))
            .flatten();
        Ok(RecordPage { records, next })
    }
}

impl SnapshotPages {
    /// Pages of `page_size` from `records` (any order), writes to `inner`.
    pub fn new(
        cluster: ClusterName,
        mut records: Vec<CatalogRecord>,
        page_size: usize,
        inner: Arc<dyn Catalog>,
    ) -> Self {
        records.sort_by_key(|r| r.file.to_string());
        SnapshotPages {
            cluster,
            records,
            page_size,
            inner,
        }
    }
}
