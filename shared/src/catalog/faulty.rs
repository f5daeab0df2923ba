//! [`Catalog`] with failures injected on chosen requests (see
//! [`crate::fault`]), over any other catalog.

use std::future::Future;
use std::ops::Deref;

use async_trait::async_trait;

use super::{
    Catalog, CatalogError, CatalogOperation, CatalogRecord, ClusterItem, ClusterItemKind,
    CreateOutcome, RecordPage, RecordRef, RecordStatus, TargetState,
};
use crate::clock::UnixMillis;
use crate::error::message;
use crate::fault::{Fault, Injector};
use crate::file::ArchivedFile;
use crate::keys::ClusterName;
use crate::provider::Provider;

pub struct FaultyCatalog<C> {
    inner: C,
    faults: Injector<CatalogOperation>,
}

impl<C: Catalog> FaultyCatalog<C> {
    pub fn new(inner: C) -> Self {
        FaultyCatalog {
            inner,
            faults: Injector::default(),
        }
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }

    fn error(&self, operation: CatalogOperation, file: &str, fault: Fault) -> CatalogError {
        let file = file.to_owned();
        match fault {
            Fault::NotFound | Fault::PreconditionFailed => {
                CatalogError::ConditionFailed { operation, file }
            }
            Fault::Refused => CatalogError::Refused {
                operation,
                file,
                source: message("injected fault: AccessDeniedException"),
            },
            Fault::Corrupt => CatalogError::Malformed {
                file,
                attribute: "status".into(),
                reason: "injected fault: unreadable item".into(),
            },
            Fault::Transient | Fault::Hang | Fault::LostAnswer => CatalogError::Transient {
                operation,
                file,
                source: message("injected fault: ThrottlingException"),
            },
        }
    }

    /// Runs `call` unless a fault replaces it. `NotFound` on a read
    /// answers "no record"; on a write it is a failed condition.
    async fn call<T, F>(
        &self,
        operation: CatalogOperation,
        file: &(dyn std::fmt::Display + Sync),
        call: F,
    ) -> Result<T, CatalogError>
    where
        F: Future<Output = Result<T, CatalogError>>,
    {
        let name = file.to_string();
        match self.faults.enter(operation, &name) {
            None => call.await,
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::LostAnswer) => {
                let _ = call.await;
                Err(self.error(operation, &name, Fault::LostAnswer))
            }
            Some(fault) => Err(self.error(operation, &name, fault)),
        }
    }
}

/// The injector's controls: `fail_next`, `fail_always`, `fail_key` (on the
/// file name), `heal`, `calls`, `injected`.
impl<C> Deref for FaultyCatalog<C> {
    type Target = Injector<CatalogOperation>;

    fn deref(&self) -> &Self::Target {
        &self.faults
    }
}

#[async_trait]
impl<C: Catalog> Catalog for FaultyCatalog<C> {
    async fn get(
        &self,
        cluster: &ClusterName,
        file: &ArchivedFile,
    ) -> Result<Option<CatalogRecord>, CatalogError> {
        let name = file.to_string();
        match self.faults.enter(CatalogOperation::Get, &name) {
            Some(Fault::NotFound) => Ok(None),
            None => self.inner.get(cluster, file).await,
            Some(Fault::Hang) => std::future::pending().await,
            Some(fault) => Err(self.error(CatalogOperation::Get, &name, fault)),
        }
    }

    async fn create(&self, record: &CatalogRecord) -> Result<CreateOutcome, CatalogError> {
        self.call(
            CatalogOperation::Create,
            &record.file,
            self.inner.create(record),
        )
        .await
    }

    async fn record_target(
        &self,
        record: RecordRef<'_>,
        provider: Provider,
        target: &TargetState,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        self.call(
            CatalogOperation::RecordTarget,
            record.file,
            self.inner.record_target(record, provider, target, at),
        )
        .await
    }

    async fn set_status(
        &self,
        record: RecordRef<'_>,
        from: &[RecordStatus],
        to: RecordStatus,
        detail: Option<&str>,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        self.call(
            CatalogOperation::SetStatus,
            record.file,
            self.inner.set_status(record, from, to, detail, at),
        )
        .await
    }

    async fn record_conflict(
        &self,
        cluster: &ClusterName,
        file: &ArchivedFile,
        detail: &str,
        at: UnixMillis,
    ) -> Result<(), CatalogError> {
        self.call(
            CatalogOperation::RecordConflict,
            file,
            self.inner.record_conflict(cluster, file, detail, at),
        )
        .await
    }

    async fn delete(&self, record: RecordRef<'_>) -> Result<(), CatalogError> {
        self.call(
            CatalogOperation::Delete,
            record.file,
            self.inner.delete(record),
        )
        .await
    }

    async fn list_page(
        &self,
        cluster: &ClusterName,
        prefix: &str,
        after: Option<&ArchivedFile>,
    ) -> Result<RecordPage, CatalogError> {
        let label = format!("{prefix}*");
        self.call(
            CatalogOperation::List,
            &label,
            self.inner.list_page(cluster, prefix, after),
        )
        .await
    }

    async fn get_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
    ) -> Result<Option<ClusterItem>, CatalogError> {
        self.call(
            CatalogOperation::GetClusterItem,
            &item.name(),
            self.inner.get_cluster_item(cluster, item),
        )
        .await
    }

    async fn put_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
        expected: Option<u64>,
        body: &str,
    ) -> Result<(), CatalogError> {
        self.call(
            CatalogOperation::PutClusterItem,
            &item.name(),
            self.inner.put_cluster_item(cluster, item, expected, body),
        )
        .await
    }
}
