//! One small trait over the three object stores (staging S3, R2, B2), typed
//! errors that say whether a retry can help, the real S3 implementation and a
//! failure-injecting wrapper for tests.

mod faulty;
mod s3;

use std::collections::BTreeMap;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::codec::Sha256Hex;

pub use faulty::{FaultyStore, Operation};
pub use s3::{
    build_sdk_config, configured_replica, replica_store, sdk_loader, staging_store, ConditionalPut,
    S3Store,
};

/// User metadata on every object walvault writes: the sha256 of the raw WAL
/// bytes. Two objects under one key are "the same" exactly when this matches,
/// whatever their compression.
pub const SHA256_METADATA: &str = "sha256";

pub type Metadata = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<SystemTime>,
    /// User metadata, keys in lower case. Listings do not carry it.
    pub metadata: Metadata,
}

impl ObjectInfo {
    /// The raw-content digest recorded when the object was written, if any.
    pub fn sha256(&self) -> Option<Sha256Hex> {
        self.metadata
            .get(SHA256_METADATA)
            .and_then(|v| Sha256Hex::parse(v).ok())
    }
}

#[derive(Debug, Clone)]
pub struct Object {
    pub info: ObjectInfo,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call stored the object.
    Created { etag: Option<String> },
    /// An object with the same raw digest was already there; nothing written.
    AlreadyPresent { etag: Option<String> },
}

impl PutOutcome {
    pub fn etag(&self) -> Option<&str> {
        match self {
            PutOutcome::Created { etag } | PutOutcome::AlreadyPresent { etag } => etag.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    /// More keys follow the last one listed.
    pub truncated: bool,
}

/// The operations walvault needs from an object store.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Names the store in logs and errors ("r2", "staging", …).
    fn name(&self) -> &str;

    /// Stores `body` under `key` unless something is there already. An
    /// existing object with the same `sha256` metadata is success
    /// ([`PutOutcome::AlreadyPresent`]); anything else there is
    /// [`StoreError::PreconditionFailed`] and is left untouched.
    async fn put_if_absent(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<PutOutcome, StoreError>;

    async fn get(&self, key: &str) -> Result<Object, StoreError>;

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError>;

    /// Deleting a missing key is success: deletes are retried.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Deletes many keys, in batches where the store accepts them; the
    /// result of each key, in order. By default one request per key.
    async fn delete_many(&self, keys: &[String]) -> Vec<Result<(), StoreError>> {
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            results.push(self.delete(key).await);
        }
        results
    }

    /// Up to 1000 keys under `prefix`, in key order, after `start_after`.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StoreError>;
}

/// Lists every key under `prefix`, following pages.
pub async fn list_all(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<ObjectInfo>, StoreError> {
    let mut all: Vec<ObjectInfo> = Vec::new();
    loop {
        let start_after = all.last().map(|o| o.key.clone());
        let page = store.list_page(prefix, start_after.as_deref()).await?;
        let done = !page.truncated || page.objects.is_empty();
        all.extend(page.objects);
        if done {
            return Ok(all);
        }
    }
}

/// What went wrong talking to a store, sorted by what the caller can do.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("{store}: {key} not found")]
    NotFound { store: String, key: String },
    /// A different object already holds the key; retrying cannot help.
    #[error("{store}: {key} already holds different content ({detail})")]
    PreconditionFailed {
        store: String,
        key: String,
        detail: String,
    },
    /// Timeouts, throttling, 5xx, connection failures: may work later.
    #[error("{store}: {operation} {key} failed, may succeed on retry: {detail}")]
    Retryable {
        store: String,
        operation: &'static str,
        key: String,
        detail: String,
    },
    /// Access denied, bad request, missing bucket: needs a human.
    #[error("{store}: {operation} {key} failed: {detail}")]
    Permanent {
        store: String,
        operation: &'static str,
        key: String,
        detail: String,
    },
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Retryable { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}
