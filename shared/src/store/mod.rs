//! One small trait over the three object stores (staging S3, R2, B2),
//! typed errors that say whether a retry can help, the real S3
//! implementation, an in-memory one with the same semantics for fast
//! tests, and a failure-injecting wrapper.

mod faulty;
mod memory;
mod rotating;
mod s3;

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::codec::Sha256Hex;
use crate::error::{Cause, Retryable};
use crate::retry::TimedOut;

pub use faulty::FaultyStore;
pub use memory::MemoryStore;
pub use rotating::{Rekey, RotatingStore};
pub use s3::{ConditionalPut, S3Options, S3Store};

/// User metadata on every object walvault writes, its content tag: the
/// sha256 of the raw WAL bytes, or for a sealed replica the random tag its
/// catalog record holds ([`crate::catalog::RecordSeal`]), which tells the
/// provider nothing. Two objects under one key are "the same" exactly when
/// this matches, whatever their compression or encryption.
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

/// A body that arrives piece by piece, as the store sends it: what an
/// object too large to hold in memory is read through. A body cut short
/// ends with [`StoreError::Transient`].
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// An object being read: what the store said about it, and its body to come.
pub struct ObjectReader {
    pub info: ObjectInfo,
    pub body: BodyStream,
}

/// A multipart write in progress, as its store names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId(pub String);

/// One part a store has accepted: completing the upload names each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// From 1, in the object's order.
    pub number: u32,
    pub etag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call stored the object.
    Created { etag: Option<String> },
    /// An object with the same raw digest was already there; nothing written.
    /// `size`: the stored object's, which may differ from this body's (a
    /// sealed copy of another delivery).
    AlreadyPresent { etag: Option<String>, size: u64 },
}

impl PutOutcome {
    pub fn etag(&self) -> Option<&str> {
        match self {
            PutOutcome::Created { etag } | PutOutcome::AlreadyPresent { etag, .. } => {
                etag.as_deref()
            }
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

    /// Writes `body` over the object under `key` only while that object's
    /// ETag is `replaced` (`If-Match`): how `verify --repair` replaces a
    /// replica it found damaged with a verified copy, and never a good
    /// object, whose ETag would differ. Any other object there, or none,
    /// is [`StoreError::PreconditionFailed`] and is left untouched.
    /// Returns the new object's ETag.
    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
        replaced: &str,
    ) -> Result<Option<String>, StoreError>;

    async fn get(&self, key: &str) -> Result<Object, StoreError>;

    /// [`ObjectStore::get`] without holding the body: it is read from the
    /// returned stream as it arrives.
    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError>;

    /// Begins a multipart write of `key` that will carry `sha256` and
    /// `metadata` as [`ObjectStore::put_if_absent`] does; nothing is
    /// visible under the key until [`ObjectStore::complete_upload`].
    async fn create_upload(
        &self,
        key: &str,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<UploadId, StoreError>;

    /// Sends part `number` (from 1). Sending a part again replaces it, so
    /// a retried part is harmless.
    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError>;

    /// Makes `parts` the object under `key`, under the condition of
    /// [`ObjectStore::put_if_absent`]: an object already there with the
    /// same `sha256` is [`PutOutcome::AlreadyPresent`], any other is
    /// [`StoreError::PreconditionFailed`]; either way it is left
    /// untouched and the upload is aborted.
    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[UploadedPart],
        sha256: &Sha256Hex,
    ) -> Result<PutOutcome, StoreError>;

    /// Drops an upload and its parts (stores charge for parts kept). An
    /// upload already gone is success.
    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<(), StoreError>;

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError>;

    /// Deleting a missing key is success: deletes are retried.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Deletes `key` only if it still holds the object whose ETag is
    /// `etag` (S3's conditional delete, `If-Match`): another object put
    /// under the key since it was read is left alone
    /// ([`StoreError::PreconditionFailed`]). A missing key is success.
    async fn delete_if_etag(&self, key: &str, etag: &str) -> Result<(), StoreError>;

    /// Deletes many keys, in batches where the store accepts them; the
    /// result of each key, in order. By default one request per key.
    async fn delete_many(&self, keys: &[String]) -> Vec<Result<(), StoreError>> {
        delete_each(self, keys).await
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

/// A store request, for errors, logs and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    Put,
    Get,
    Head,
    Delete,
    List,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::Delete => "delete",
            Operation::List => "list",
        })
    }
}

/// What went wrong talking to a store, sorted by what the caller can do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Nothing is stored under the key (or, for a whole listing, nothing
    /// under the prefix). Deletes count it as success; fetch moves on to
    /// the next store.
    #[error("{store}: {key} not found")]
    NotFound { store: String, key: String },
    /// A different object already holds the key and was left untouched:
    /// writing the same thing again cannot help.
    #[error("{store}: {key} already holds different content ({detail})")]
    PreconditionFailed {
        store: String,
        key: String,
        detail: String,
    },
    /// The store refused the request and will refuse it again: access
    /// denied, a missing bucket, a request it does not accept. Needs a
    /// change of configuration or rights.
    #[error("{store}: {operation} {key} refused")]
    Refused {
        store: String,
        operation: Operation,
        key: String,
        #[source]
        source: Cause,
    },
    /// The store does not accept the access key (unknown, deleted, or a
    /// signature made with another secret): the key was rotated or
    /// revoked. The same request will fail again; re-reading the key from
    /// its secret may help ([`RotatingStore`] does, once).
    #[error("{store}: {operation} {key}: the access key is not accepted")]
    Unauthorized {
        store: String,
        operation: Operation,
        key: String,
        #[source]
        source: Cause,
    },
    /// The service asks to slow down (429, `SlowDown`; R2 allows one write
    /// a second to a key): the same request may succeed after a pause.
    #[error("{store}: {operation} {key} throttled")]
    Throttled {
        store: String,
        operation: Operation,
        key: String,
        #[source]
        source: Cause,
    },
    /// A 5xx, a reset connection, a body cut short: the same request may
    /// succeed later.
    #[error("{store}: {operation} {key} failed, may succeed on retry")]
    Transient {
        store: String,
        operation: Operation,
        key: String,
        #[source]
        source: Cause,
    },
    /// No answer within the time the attempt had: the request may still
    /// have landed.
    #[error(transparent)]
    TimedOut(#[from] TimedOut),
}

impl Retryable for StoreError {
    fn is_permanent(&self) -> bool {
        match self {
            StoreError::NotFound { .. }
            | StoreError::PreconditionFailed { .. }
            | StoreError::Refused { .. }
            | StoreError::Unauthorized { .. } => true,
            StoreError::Throttled { .. }
            | StoreError::Transient { .. }
            | StoreError::TimedOut(_) => false,
        }
    }

    fn retry_after(&self) -> std::time::Duration {
        match self {
            StoreError::Throttled { .. } => THROTTLE_PAUSE,
            _ => std::time::Duration::ZERO,
        }
    }
}

/// How long to wait after a store asked to slow down: R2 allows one write
/// a second to one key.
const THROTTLE_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// `key` holds an object other than the one whose raw digest is `ours`
    /// (`stored`: the digest it carries, if walvault wrote it).
    pub(crate) fn different_content(
        store: &str,
        key: &str,
        stored: Option<&Sha256Hex>,
        ours: &Sha256Hex,
    ) -> Self {
        StoreError::PreconditionFailed {
            store: store.to_owned(),
            key: key.to_owned(),
            detail: match stored {
                Some(stored) => format!("stored sha256 {stored}, ours {ours}"),
                None => "stored object has no sha256 metadata: not written by walvault".into(),
            },
        }
    }
}

/// Deletes `keys` one request each: the default of
/// [`ObjectStore::delete_many`], and what a store that refuses batches does.
pub(crate) async fn delete_each(
    store: &(impl ObjectStore + ?Sized),
    keys: &[String],
) -> Vec<Result<(), StoreError>> {
    let mut results = Vec::with_capacity(keys.len());
    for key in keys {
        results.push(store.delete(key).await);
    }
    results
}

/// `body` with its first byte flipped: a copy that no longer verifies.
pub(crate) fn damaged(body: &Bytes) -> Bytes {
    let mut damaged = body.to_vec();
    if let Some(first) = damaged.first_mut() {
        *first ^= 0xFF;
    }
    Bytes::from(damaged)
}
