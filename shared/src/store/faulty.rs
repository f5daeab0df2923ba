//! A wrapper that makes chosen operations of a store fail, and counts every
//! call, so that failure paths are tested with the real store behind it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ListPage, Metadata, Object, ObjectInfo, ObjectStore, PutOutcome, StoreError};
use crate::codec::Sha256Hex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Put,
    Get,
    Head,
    Delete,
    List,
}

impl Operation {
    fn as_str(&self) -> &'static str {
        match self {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::Delete => "delete",
            Operation::List => "list",
        }
    }
}

#[derive(Default)]
struct Faults {
    /// Failures still to inject per operation; `None` means until healed.
    remaining: HashMap<Operation, Option<u32>>,
    calls: HashMap<Operation, u64>,
}

pub struct FaultyStore<S> {
    inner: S,
    faults: Mutex<Faults>,
}

impl<S: ObjectStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            faults: Mutex::new(Faults::default()),
        }
    }

    /// The next `times` calls of `operation` fail as retryable.
    pub fn fail_next(&self, operation: Operation, times: u32) {
        self.lock().remaining.insert(operation, Some(times));
    }

    /// Every call of `operation` fails until [`FaultyStore::heal`].
    pub fn fail_always(&self, operation: Operation) {
        self.lock().remaining.insert(operation, None);
    }

    pub fn heal(&self) {
        self.lock().remaining.clear();
    }

    /// Calls of `operation` so far, failed ones included.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.lock().calls.get(&operation).copied().unwrap_or(0)
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        // A panic while holding this lock is a test failure already; the
        // counters are still usable.
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, operation: Operation, key: &str) -> Result<(), StoreError> {
        let mut faults = self.lock();
        *faults.calls.entry(operation).or_default() += 1;
        let inject = match faults.remaining.get_mut(&operation) {
            None => false,
            Some(None) => true,
            Some(Some(0)) => false,
            Some(Some(n)) => {
                *n -= 1;
                true
            }
        };
        if inject {
            Err(StoreError::Retryable {
                store: self.inner.name().to_owned(),
                operation: operation.as_str(),
                key: key.to_owned(),
                detail: "injected fault".into(),
            })
        } else {
            Ok(())
        }
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
        self.enter(Operation::Put, key)?;
        self.inner.put_if_absent(key, body, sha256, metadata).await
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        self.enter(Operation::Get, key)?;
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.enter(Operation::Head, key)?;
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.enter(Operation::Delete, key)?;
        self.inner.delete(key).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        self.enter(Operation::List, prefix)?;
        self.inner.list_page(prefix, start_after).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that answers every call with "not found": enough to see
    /// which calls reach it.
    struct Empty;

    #[async_trait]
    impl ObjectStore for Empty {
        fn name(&self) -> &str {
            "empty"
        }
        async fn put_if_absent(
            &self,
            _: &str,
            _: Bytes,
            _: &Sha256Hex,
            _: &Metadata,
        ) -> Result<PutOutcome, StoreError> {
            Ok(PutOutcome::Created { etag: None })
        }
        async fn get(&self, key: &str) -> Result<Object, StoreError> {
            Err(StoreError::NotFound {
                store: "empty".into(),
                key: key.into(),
            })
        }
        async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
            Err(StoreError::NotFound {
                store: "empty".into(),
                key: key.into(),
            })
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn list_page(&self, _: &str, _: Option<&str>) -> Result<ListPage, StoreError> {
            Ok(ListPage {
                objects: vec![],
                truncated: false,
            })
        }
    }

    #[tokio::test]
    async fn injects_the_requested_number_of_failures_then_passes_through() {
        let store = FaultyStore::new(Empty);
        store.fail_next(Operation::Get, 2);
        for _ in 0..2 {
            assert!(store.get("k").await.unwrap_err().is_retryable());
        }
        assert!(store.get("k").await.unwrap_err().is_not_found());
        assert_eq!(store.calls(Operation::Get), 3);
        assert_eq!(store.calls(Operation::Head), 0);
    }

    #[tokio::test]
    async fn fails_always_until_healed() {
        let store = FaultyStore::new(Empty);
        store.fail_always(Operation::Delete);
        for _ in 0..5 {
            assert!(store.delete("k").await.unwrap_err().is_retryable());
        }
        assert!(
            store.head("k").await.unwrap_err().is_not_found(),
            "other operations unaffected"
        );
        store.heal();
        assert!(store.delete("k").await.is_ok());
    }
}
