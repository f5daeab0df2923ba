//! [`ObjectStore`] with failures injected on chosen requests (see
//! [`crate::fault`]), over any other store.

use std::ops::Deref;

use async_trait::async_trait;
use bytes::Bytes;

use futures_util::StreamExt;

use super::{
    damaged, ListPage, Metadata, Object, ObjectInfo, ObjectReader, ObjectStore, Operation,
    PutOutcome, StoreError, UploadId, UploadedPart,
};
use crate::codec::Sha256Hex;
use crate::error::message;
use crate::fault::{Fault, Injector};

pub struct FaultyStore<S> {
    inner: S,
    faults: Injector<Operation>,
}

impl<S: ObjectStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            faults: Injector::default(),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn error(&self, operation: Operation, key: &str, fault: Fault) -> StoreError {
        let store = self.inner.name().to_owned();
        let key = key.to_owned();
        match fault {
            Fault::NotFound => StoreError::NotFound { store, key },
            Fault::PreconditionFailed => StoreError::PreconditionFailed {
                store,
                key,
                detail: "injected fault".into(),
            },
            Fault::Refused => StoreError::Refused {
                store,
                operation,
                key,
                source: message("injected fault: access denied"),
            },
            Fault::Transient | Fault::Hang | Fault::Corrupt | Fault::LostAnswer => {
                StoreError::Transient {
                    store,
                    operation,
                    key,
                    source: message("injected fault: 503 service unavailable"),
                }
            }
        }
    }

    /// Runs `call` unless the injected `fault` replaces or spoils it.
    async fn apply<T, F>(
        &self,
        fault: Option<Fault>,
        operation: Operation,
        key: &str,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        match fault {
            None | Some(Fault::Corrupt) => call.await,
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::LostAnswer) => {
                let _ = call.await;
                Err(self.error(operation, key, Fault::LostAnswer))
            }
            Some(fault) => Err(self.error(operation, key, fault)),
        }
    }

    async fn call<T, F>(&self, operation: Operation, key: &str, call: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let fault = self.faults.enter(operation, key);
        self.apply(fault, operation, key, call).await
    }
}

/// The injector's controls: `fail_next`, `fail_always`, `fail_key`, `heal`,
/// `calls`, `injected`.
impl<S> Deref for FaultyStore<S> {
    type Target = Injector<Operation>;

    fn deref(&self) -> &Self::Target {
        &self.faults
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn put_if_absent(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<PutOutcome, StoreError> {
        self.call(
            Operation::Put,
            key,
            self.inner.put_if_absent(key, body, sha256, metadata),
        )
        .await
    }

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
        replaced: &str,
    ) -> Result<Option<String>, StoreError> {
        self.call(
            Operation::Put,
            key,
            self.inner
                .put_replacing(key, body, sha256, metadata, replaced),
        )
        .await
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        let fault = self.faults.enter(Operation::Get, key);
        let mut object = self
            .apply(fault, Operation::Get, key, self.inner.get(key))
            .await?;
        if fault == Some(Fault::Corrupt) {
            object.body = damaged(&object.body);
        }
        Ok(object)
    }

    /// A lost answer is a body that breaks off halfway, as a reset
    /// connection leaves it.
    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let fault = self.faults.enter(Operation::Get, key);
        let opened = match fault {
            Some(Fault::LostAnswer) => self.inner.get_stream(key).await,
            _ => {
                self.apply(fault, Operation::Get, key, self.inner.get_stream(key))
                    .await
            }
        };
        let mut reader = opened?;
        if fault == Some(Fault::LostAnswer) {
            let (half, mut sent) = (reader.info.size / 2, 0u64);
            let broken = self.error(Operation::Get, key, Fault::LostAnswer);
            reader.body = Box::pin(
                reader
                    .body
                    .take_while(move |piece| {
                        let more = sent < half;
                        sent += piece.as_ref().map_or(0, |p| p.len() as u64);
                        std::future::ready(more)
                    })
                    .chain(futures_util::stream::once(std::future::ready(Err(broken)))),
            );
        }
        if fault == Some(Fault::Corrupt) {
            let mut first = true;
            reader.body = Box::pin(reader.body.map(move |piece| {
                let piece = piece?;
                Ok(if std::mem::take(&mut first) {
                    damaged(&piece)
                } else {
                    piece
                })
            }));
        }
        Ok(reader)
    }

    async fn create_upload(
        &self,
        key: &str,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<UploadId, StoreError> {
        self.call(
            Operation::Put,
            key,
            self.inner.create_upload(key, sha256, metadata),
        )
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        self.call(
            Operation::Put,
            key,
            self.inner.upload_part(key, upload, number, body),
        )
        .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[UploadedPart],
        sha256: &Sha256Hex,
    ) -> Result<PutOutcome, StoreError> {
        self.call(
            Operation::Put,
            key,
            self.inner.complete_upload(key, upload, parts, sha256),
        )
        .await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<(), StoreError> {
        self.call(Operation::Delete, key, self.inner.abort_upload(key, upload))
            .await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.call(Operation::Head, key, self.inner.head(key)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call(Operation::Delete, key, self.inner.delete(key))
            .await
    }

    async fn delete_if_etag(&self, key: &str, etag: &str) -> Result<(), StoreError> {
        self.call(Operation::Delete, key, self.inner.delete_if_etag(key, etag))
            .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        self.call(
            Operation::List,
            prefix,
            self.inner.list_page(prefix, start_after),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Retryable;
    use crate::retry::Budget;
    use crate::store::MemoryStore;
    use std::time::Duration;

    async fn store_with(key: &str) -> FaultyStore<MemoryStore> {
        let store = FaultyStore::new(MemoryStore::new("mem"));
        store
            .put_if_absent(
                key,
                Bytes::from_static(b"body"),
                &Sha256Hex::of(b"body"),
                &Metadata::new(),
            )
            .await
            .unwrap();
        store
    }

    #[tokio::test]
    async fn injects_the_requested_number_of_failures_then_passes_through() {
        let store = store_with("k").await;
        store.fail_next(Operation::Get, Fault::Transient, 2);
        for _ in 0..2 {
            assert!(!store.get("k").await.unwrap_err().is_permanent());
        }
        assert!(store.get("k").await.is_ok());
        assert!(store.get("missing").await.unwrap_err().is_not_found());
        assert_eq!(store.calls(Operation::Get), 4);
        assert_eq!(store.calls(Operation::Head), 0);
        assert_eq!(store.injected(), 2);
    }

    #[tokio::test]
    async fn every_class_fails_as_documented() {
        for fault in Fault::ALL {
            let store = store_with("k").await;
            store.fail_next(Operation::Get, fault, 1);
            let result = tokio::time::timeout(Duration::from_millis(50), store.get("k")).await;
            match (fault, result) {
                (Fault::Hang, Err(_elapsed)) => {}
                (Fault::Corrupt, Ok(Ok(o))) => assert_ne!(&o.body[..], b"body"),
                (Fault::NotFound, Ok(Err(e))) => assert!(e.is_not_found()),
                (Fault::PreconditionFailed | Fault::Refused, Ok(Err(e))) => {
                    assert!(e.is_permanent())
                }
                (Fault::Transient | Fault::LostAnswer, Ok(Err(e))) => assert!(!e.is_permanent()),
                (fault, other) => panic!("{fault:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_lost_answer_still_carries_the_request_out() {
        let store = FaultyStore::new(MemoryStore::new("mem"));
        store.fail_next(Operation::Put, Fault::LostAnswer, 1);
        let sha = Sha256Hex::of(b"x");
        let lost = store
            .put_if_absent("k", Bytes::from_static(b"x"), &sha, &Metadata::new())
            .await;
        assert!(!lost.unwrap_err().is_permanent());
        assert!(store.inner().object("k").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hang_is_cut_off_by_the_budget_and_faults_can_target_keys() {
        let store = store_with("a/1").await;
        store.fail_key(Operation::Head, "a/", Fault::Hang);
        let budget = Budget::attempts(2, Duration::from_secs(1));
        let result = budget.run("head a/1", || store.head("a/1")).await;
        assert!(matches!(result, Err(StoreError::TimedOut(_))));
        assert!(store.head("b/1").await.unwrap_err().is_not_found());
        store.heal();
        assert!(store.head("a/1").await.is_ok());
    }
}
