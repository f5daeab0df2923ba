//! The DynamoDB catalog: one record per archived WAL file, changed only by
//! conditional writes so that duplicate and concurrent events agree.

mod dynamo;
mod record;

use async_trait::async_trait;

use crate::codec::Sha256Hex;
use crate::config::Provider;
use crate::keys::ClusterName;
use crate::wal::WalFileName;

pub use dynamo::{dynamodb_client, DynamoCatalog};
pub use record::{
    now_millis, CatalogRecord, RecordStatus, TargetState, UnixMillis, PARTITION_KEY, SORT_KEY,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A record for the name already existed; here it is, unchanged.
    Exists(Box<CatalogRecord>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPage {
    pub records: Vec<CatalogRecord>,
    /// Pass back as `after` to read the next page; `None` at the end.
    pub next: Option<WalFileName>,
}

/// Which record a write is for, and the raw content it must still
/// describe: a write never lands on a record of different content.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub cluster: &'a ClusterName,
    pub file: &'a WalFileName,
    pub raw_sha256: &'a Sha256Hex,
}

impl<'a> RecordRef<'a> {
    pub fn of(record: &'a CatalogRecord) -> Self {
        RecordRef {
            cluster: &record.cluster,
            file: &record.file,
            raw_sha256: &record.raw_sha256,
        }
    }
}

#[async_trait]
pub trait Catalog: Send + Sync {
    async fn get(
        &self,
        cluster: &ClusterName,
        file: &WalFileName,
    ) -> Result<Option<CatalogRecord>, CatalogError>;

    /// Creates the record unless one exists for the name.
    async fn create(&self, record: &CatalogRecord) -> Result<CreateOutcome, CatalogError>;

    /// Records a confirmed replica, if the record still describes content
    /// with the referenced content. Returns the record as it now stands.
    async fn record_target(
        &self,
        record: RecordRef<'_>,
        provider: Provider,
        target: &TargetState,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError>;

    /// Moves the record to `to` from one of `from`. `Replicated` also
    /// requires both replicas to be recorded. `detail` replaces the
    /// human-readable reason (removed when `None`).
    async fn set_status(
        &self,
        record: RecordRef<'_>,
        from: &[RecordStatus],
        to: RecordStatus,
        detail: Option<&str>,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError>;

    /// Counts a refused attempt to archive different content under an
    /// existing name.
    async fn record_conflict(
        &self,
        cluster: &ClusterName,
        file: &WalFileName,
        detail: &str,
        at: UnixMillis,
    ) -> Result<(), CatalogError>;

    /// Removes the record if it still describes the referenced content;
    /// removing one already gone is success.
    async fn delete(&self, record: RecordRef<'_>) -> Result<(), CatalogError>;

    /// Records of a cluster in WAL order, a page at a time.
    async fn list_page(
        &self,
        cluster: &ClusterName,
        after: Option<&WalFileName>,
    ) -> Result<RecordPage, CatalogError>;
}

/// Every record of a cluster, in WAL order, following pages.
pub async fn list_all(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
) -> Result<Vec<CatalogRecord>, CatalogError> {
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let page = catalog.list_page(cluster, after.as_ref()).await?;
        records.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(records),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    /// The record is not in the state the write required; retrying the same
    /// write cannot help, re-reading the record can.
    #[error("catalog: {file}: condition not met ({detail})")]
    ConditionFailed { file: String, detail: String },
    #[error("catalog: {operation} {file} failed, may succeed on retry: {detail}")]
    Retryable {
        operation: &'static str,
        file: String,
        detail: String,
    },
    #[error("catalog: {operation} {file} failed: {detail}")]
    Permanent {
        operation: &'static str,
        file: String,
        detail: String,
    },
    #[error("catalog: record {file} has a bad {attribute}: {reason}")]
    Malformed {
        file: String,
        attribute: String,
        reason: String,
    },
}

impl CatalogError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CatalogError::Retryable { .. })
    }
}
