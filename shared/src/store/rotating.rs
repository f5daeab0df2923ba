//! A replica store whose access key lives in a secret that may be rotated
//! while the process runs (a warm Lambda keeps its clients for hours).
//! When the store stops accepting the key, the secret is read again, once,
//! and the request is repeated with the new key; a key that did not change
//! is not retried, and the secret is not read more often than
//! [`RotatingStore::REREAD_EVERY`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{
    ListPage, Metadata, Object, ObjectInfo, ObjectReader, ObjectStore, PutOutcome, StoreError,
    UploadId, UploadedPart,
};
use crate::codec::Sha256Hex;
use crate::error::{chain, Cause};

/// Builds the store anew from the key as it is now.
#[async_trait]
pub trait Rekey: Send + Sync {
    /// A store using the key the secret holds now; `None` when that key is
    /// the one already in use (re-trying with it cannot help).
    async fn rekey(&self) -> Result<Option<Arc<dyn ObjectStore>>, Cause>;

    /// Names the setting the key comes from, for logs (never the key).
    fn setting(&self) -> &str;
}

pub struct RotatingStore {
    /// The store's name, which does not change with its key.
    name: String,
    current: RwLock<Arc<dyn ObjectStore>>,
    rekey: Box<dyn Rekey>,
    /// When the secret was last read; one reader at a time.
    last_read: tokio::sync::Mutex<Option<Instant>>,
}

impl RotatingStore {
    /// A failing key makes at most one secret read per this interval.
    pub const REREAD_EVERY: Duration = Duration::from_secs(30);

    pub fn new(store: Arc<dyn ObjectStore>, rekey: Box<dyn Rekey>) -> Self {
        RotatingStore {
            name: store.name().to_owned(),
            current: RwLock::new(store),
            rekey,
            last_read: tokio::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> Arc<dyn ObjectStore> {
        match self.current.read() {
            Ok(store) => Arc::clone(&store),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// After `stale` refused its key: a store with a new key, if the
    /// secret holds one (or another request already switched to it).
    async fn renewed(&self, stale: &Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        let mut last_read = self.last_read.lock().await;
        let now = self.current();
        if !Arc::ptr_eq(&now, stale) {
            return Some(now);
        }
        if last_read.is_some_and(|at| at.elapsed() < Self::REREAD_EVERY) {
            return None;
        }
        *last_read = Some(Instant::now());
        let setting = self.rekey.setting();
        match self.rekey.rekey().await {
            Ok(Some(fresh)) => {
                tracing::warn!(store = %fresh.name(), %setting, "the access key was not accepted; using the key the secret holds now");
                match self.current.write() {
                    Ok(mut store) => *store = Arc::clone(&fresh),
                    Err(poisoned) => *poisoned.into_inner() = Arc::clone(&fresh),
                }
                Some(fresh)
            }
            Ok(None) => {
                tracing::error!(store = %stale.name(), %setting, "the access key is not accepted and the secret still holds it: a revoked key; put a valid one in the secret");
                None
            }
            Err(e) => {
                tracing::error!(store = %stale.name(), %setting, error = %chain(&*e), "the access key is not accepted and the secret cannot be read again");
                None
            }
        }
    }

    /// Runs `op` on the current store, and once more on a store with a new
    /// key if the current one's key is not accepted.
    async fn with_valid_key<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<dyn ObjectStore>) -> Fut + Send + Sync,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send,
        T: Send,
    {
        let store = self.current();
        match op(Arc::clone(&store)).await {
            Err(e @ StoreError::Unauthorized { .. }) => match self.renewed(&store).await {
                Some(fresh) => op(fresh).await,
                None => Err(e),
            },
            other => other,
        }
    }
}

#[async_trait]
impl ObjectStore for RotatingStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn put_if_absent(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<PutOutcome, StoreError> {
        self.with_valid_key(|store| {
            let body = body.clone();
            async move { store.put_if_absent(key, body, sha256, metadata).await }
        })
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
        self.with_valid_key(|store| {
            let body = body.clone();
            async move {
                store
                    .put_replacing(key, body, sha256, metadata, replaced)
                    .await
            }
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        self.with_valid_key(|store| async move { store.get(key).await })
            .await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.with_valid_key(|store| async move { store.head(key).await })
            .await
    }

    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError> {
        self.with_valid_key(|store| async move { store.get_stream(key).await })
            .await
    }

    // An upload id belongs to the bucket, not the key that began it: the
    // parts of an upload may go out under a renewed key.
    async fn create_upload(
        &self,
        key: &str,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<UploadId, StoreError> {
        self.with_valid_key(|store| async move { store.create_upload(key, sha256, metadata).await })
            .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        self.with_valid_key(|store| {
            let body = body.clone();
            async move { store.upload_part(key, upload, number, body).await }
        })
        .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[UploadedPart],
        sha256: &Sha256Hex,
    ) -> Result<PutOutcome, StoreError> {
        self.with_valid_key(|store| async move {
            store.complete_upload(key, upload, parts, sha256).await
        })
        .await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<(), StoreError> {
        self.with_valid_key(|store| async move { store.abort_upload(key, upload).await })
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.with_valid_key(|store| async move { store.delete(key).await })
            .await
    }

    async fn delete_if_etag(&self, key: &str, etag: &str) -> Result<(), StoreError> {
        self.with_valid_key(|store| async move { store.delete_if_etag(key, etag).await })
            .await
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<Result<(), StoreError>> {
        let store = self.current();
        let mut results = store.delete_many(keys).await;
        let refused: Vec<usize> = (0..results.len())
            .filter(|i| matches!(results[*i], Err(StoreError::Unauthorized { .. })))
            .collect();
        if refused.is_empty() {
            return results;
        }
        if let Some(fresh) = self.renewed(&store).await {
            let again: Vec<String> = refused.iter().map(|i| keys[*i].clone()).collect();
            for (i, result) in refused.into_iter().zip(fresh.delete_many(&again).await) {
                results[i] = result;
            }
        }
        results
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        self.with_valid_key(|store| async move { store.list_page(prefix, start_after).await })
            .await
    }
}
