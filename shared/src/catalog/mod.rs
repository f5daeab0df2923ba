//! The DynamoDB catalog: one record per archived WAL file, changed only by
//! conditional writes so that duplicate and concurrent events agree. One
//! trait, the DynamoDB implementation, an in-memory one with the same
//! conditions for fast tests, and a failure-injecting wrapper.

mod dynamo;
mod faulty;
mod memory;
mod record;

use std::fmt;

use async_trait::async_trait;

use crate::clock::{now_millis, UnixMillis};
use crate::codec::Sha256Hex;
use crate::error::{Cause, Retryable};
use crate::file::ArchivedFile;
use crate::file::FileKind;
use crate::keys::ClusterName;
use crate::provider::Provider;
use crate::retry::{Budget, TimedOut};
use crate::wal::{SegmentSize, WalFileKind};

pub use dynamo::DynamoCatalog;
pub use faulty::FaultyCatalog;
pub use memory::MemoryCatalog;
pub use record::{
    attr, CatalogRecord, RecordSeal, RecordStatus, TargetState, PARTITION_KEY, SORT_KEY,
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
    pub next: Option<ArchivedFile>,
}

/// Which record a write is for, and the raw content it must still
/// describe: a write never lands on a record of different content.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub cluster: &'a ClusterName,
    pub file: &'a ArchivedFile,
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
        file: &ArchivedFile,
    ) -> Result<Option<CatalogRecord>, CatalogError>;

    /// Creates the record unless one exists for the name.
    async fn create(&self, record: &CatalogRecord) -> Result<CreateOutcome, CatalogError>;

    /// Records a confirmed replica, if the record still describes the
    /// referenced content. Returns the record as it now stands.
    async fn record_target(
        &self,
        record: RecordRef<'_>,
        provider: Provider,
        target: &TargetState,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError>;

    /// Moves the record to `to` from one of `from`. `Replicated` also
    /// requires every provider's replica to be recorded. `detail` replaces
    /// the human-readable reason (removed when `None`).
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
        file: &ArchivedFile,
        detail: &str,
        at: UnixMillis,
    ) -> Result<(), CatalogError>;

    /// Removes the record if it still describes the referenced content;
    /// removing one already gone is success.
    async fn delete(&self, record: RecordRef<'_>) -> Result<(), CatalogError>;

    /// Records of a cluster whose name starts with `prefix` (all of them
    /// for `""`), in name order: WAL files in WAL order, then backup parts.
    /// A page at a time.
    async fn list_page(
        &self,
        cluster: &ClusterName,
        prefix: &str,
        after: Option<&ArchivedFile>,
    ) -> Result<RecordPage, CatalogError>;

    /// One of the cluster's items kept apart from its records.
    async fn get_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
    ) -> Result<Option<ClusterItem>, CatalogError>;

    /// Writes the item if its version is still `expected` (`None`:
    /// no item yet); the new item's version is one more. Two writers that
    /// read the same version cannot both land: the loser sees
    /// `ConditionFailed` and reads again.
    async fn put_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
        expected: Option<u64>,
        body: &str,
    ) -> Result<(), CatalogError>;
}

/// A cluster-wide item as stored: an opaque body under a version number.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterItem {
    pub version: u64,
    pub body: String,
}

/// The body may hold a secret (the encryption item's tag key): never shown.
impl fmt::Debug for ClusterItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClusterItem(version {}, {} bytes)",
            self.version,
            self.body.len()
        )
    }
}

/// The items a cluster has besides its records, each in a partition of
/// its own (`<cluster>#<name>`), so that no listing of records returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterItemKind {
    /// What `walvault status` reads (see [`crate::status`]).
    Summary,
    /// Whether the cluster's copies are sealed (see
    /// [`crate::seal::state`]).
    Encryption,
}

impl ClusterItemKind {
    pub fn name(&self) -> &'static str {
        match self {
            ClusterItemKind::Summary => "summary",
            ClusterItemKind::Encryption => "encryption",
        }
    }
}

/// Every record of a cluster, in name order, following pages.
pub async fn list_all(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
) -> Result<Vec<CatalogRecord>, CatalogError> {
    list_prefix(catalog, cluster, "").await
}

/// Every record of a cluster whose name starts with `prefix`.
pub async fn list_prefix(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    prefix: &str,
) -> Result<Vec<CatalogRecord>, CatalogError> {
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let page = catalog.list_page(cluster, prefix, after.as_ref()).await?;
        records.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(records),
        }
    }
}

/// Moves `record` from `replicating` or `partial` to `replicated`. A failed
/// condition is success when the record, read again, is replicated with the
/// same content: a concurrent delivery or repair marked it first.
pub async fn mark_replicated(
    catalog: &dyn Catalog,
    record: &CatalogRecord,
    budget: &Budget,
) -> Result<(), CatalogError> {
    let from = [RecordStatus::Replicating, RecordStatus::Partial];
    let marked = budget
        .run(format!("catalog mark replicated {}", record.file), || {
            catalog.set_status(
                RecordRef::of(record),
                &from,
                RecordStatus::Replicated,
                None,
                now_millis(),
            )
        })
        .await;
    let Err(refused @ CatalogError::ConditionFailed { .. }) = marked else {
        return marked.map(|_| ());
    };
    let now = budget
        .run(format!("catalog get {}", record.file), || {
            catalog.get(&record.cluster, &record.file)
        })
        .await?;
    match now {
        Some(now)
            if now.status == RecordStatus::Replicated && now.raw_sha256 == record.raw_sha256 =>
        {
            Ok(())
        }
        _ => Err(refused),
    }
}

/// The cluster's segment size: what every replicated segment's size says.
/// (A corrupt record's size is that of the bad object, so it does not count.)
pub fn segment_size<'a>(
    records: impl IntoIterator<Item = &'a CatalogRecord>,
) -> Result<SegmentSize, String> {
    let mut sizes = records
        .into_iter()
        .filter(|r| {
            r.file.kind() == FileKind::Wal(WalFileKind::Segment)
                && r.status == RecordStatus::Replicated
        })
        .map(|r| r.raw_size);
    let Some(first) = sizes.next() else {
        return Err("no replicated segment to take it from".into());
    };
    if let Some(other) = sizes.find(|s| *s != first) {
        return Err(format!("both {first} and {other} bytes"));
    }
    SegmentSize::new(first).map_err(|e| e.to_string())
}

/// A catalog request, for errors, logs and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CatalogOperation {
    Get,
    Create,
    RecordTarget,
    SetStatus,
    RecordConflict,
    Delete,
    List,
    GetClusterItem,
    PutClusterItem,
}

impl fmt::Display for CatalogOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CatalogOperation::Get => "get",
            CatalogOperation::Create => "create",
            CatalogOperation::RecordTarget => "record replica",
            CatalogOperation::SetStatus => "set status",
            CatalogOperation::RecordConflict => "record conflict",
            CatalogOperation::Delete => "delete",
            CatalogOperation::List => "list",
            CatalogOperation::GetClusterItem => "read cluster item",
            CatalogOperation::PutClusterItem => "write cluster item",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    /// The record is not in the state the write required (absent, other
    /// content, another status): the same write cannot succeed; re-reading
    /// the record tells what happened.
    #[error("catalog: {operation} {file}: the record is not in the state the write requires")]
    ConditionFailed {
        operation: CatalogOperation,
        file: String,
    },
    /// Throttling, a 5xx, a reset connection: may succeed later.
    #[error("catalog: {operation} {file} failed, may succeed on retry")]
    Transient {
        operation: CatalogOperation,
        file: String,
        #[source]
        source: Cause,
    },
    /// Access denied, a missing table, a request DynamoDB does not accept:
    /// needs a change of configuration or rights.
    #[error("catalog: {operation} {file} refused")]
    Refused {
        operation: CatalogOperation,
        file: String,
        #[source]
        source: Cause,
    },
    /// No answer within the time the attempt had: the write may still
    /// have landed.
    #[error(transparent)]
    TimedOut(#[from] TimedOut),
    /// An item walvault cannot read: written by something else, or damaged.
    #[error("catalog: record {file} has a bad {attribute}: {reason}")]
    Malformed {
        file: String,
        attribute: String,
        reason: String,
    },
}

impl Retryable for CatalogError {
    fn is_permanent(&self) -> bool {
        match self {
            CatalogError::ConditionFailed { .. }
            | CatalogError::Refused { .. }
            | CatalogError::Malformed { .. } => true,
            CatalogError::Transient { .. } | CatalogError::TimedOut(_) => false,
        }
    }
}
