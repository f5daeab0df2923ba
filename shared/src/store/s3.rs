//! [`ObjectStore`] over aws-sdk-s3, for AWS S3 (staging), Cloudflare R2 and
//! Backblaze B2. Clients are built in [`crate::backends`]; the SDK's own
//! retries are off (see [`crate::retry`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::{
    delete_each, ListPage, Metadata, Object, ObjectInfo, ObjectStore, Operation, PutOutcome,
    StoreError, SHA256_METADATA,
};
use crate::codec::Sha256Hex;
use crate::error::{cause, message, Cause};

/// How a store makes a create conditional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionalPut {
    /// `If-None-Match: *`: atomic; falls back to [`ConditionalPut::HeadAndCompare`]
    /// for good the first time the store answers that it is not implemented.
    IfNoneMatch,
    /// HEAD, PUT if absent, HEAD again to confirm: for stores without
    /// conditional writes. Not atomic: two different writers racing on one
    /// key can both see it absent; the confirming HEAD reports the loser.
    HeadAndCompare,
}

pub struct S3Store {
    name: String,
    client: Client,
    bucket: String,
    if_none_match: AtomicBool,
    /// Cleared for good the first time the store refuses `DeleteObjects`.
    batch_delete: AtomicBool,
}

/// Keys per `DeleteObjects` request: S3's limit.
const DELETE_BATCH: usize = 1000;

impl S3Store {
    /// A store named `name` (in logs and errors) over `bucket`. With
    /// `batch_delete` false, deletes go one key at a time.
    pub fn new(
        name: &str,
        client: Client,
        bucket: &str,
        conditional: ConditionalPut,
        batch_delete: bool,
    ) -> Self {
        S3Store {
            name: name.to_owned(),
            client,
            bucket: bucket.to_owned(),
            if_none_match: AtomicBool::new(conditional == ConditionalPut::IfNoneMatch),
            batch_delete: AtomicBool::new(batch_delete),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn conditional_put(&self) -> ConditionalPut {
        if self.if_none_match.load(Ordering::Relaxed) {
            ConditionalPut::IfNoneMatch
        } else {
            ConditionalPut::HeadAndCompare
        }
    }

    fn error<E>(
        &self,
        operation: Operation,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let class = classify(&err);
        self.classified(class, operation, key, cause(err))
    }

    fn classified(
        &self,
        class: Class,
        operation: Operation,
        key: &str,
        source: Cause,
    ) -> StoreError {
        let (store, key) = (self.name.clone(), key.to_owned());
        match class {
            Class::NotFound => StoreError::NotFound { store, key },
            Class::PreconditionFailed => StoreError::PreconditionFailed {
                store,
                key,
                detail: source.to_string(),
            },
            Class::Transient => StoreError::Transient {
                store,
                operation,
                key,
                source,
            },
            Class::Refused => StoreError::Refused {
                store,
                operation,
                key,
                source,
            },
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
        if_none_match: bool,
    ) -> Result<Option<String>, PutFailure> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            .metadata(SHA256_METADATA, sha256.as_str());
        for (k, v) in metadata {
            request = request.metadata(k, v);
        }
        if if_none_match {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(out) => Ok(out.e_tag().map(str::to_owned)),
            Err(err) if if_none_match && not_implemented(&err) => {
                Err(PutFailure::ConditionalUnsupported)
            }
            Err(err) => Err(PutFailure::Store(self.error(Operation::Put, key, err))),
        }
    }

    /// Compares what holds `key` with the digest we meant to write.
    async fn compare_existing(
        &self,
        key: &str,
        sha256: &Sha256Hex,
    ) -> Result<PutOutcome, StoreError> {
        let existing = self.head(key).await?;
        match existing.sha256() {
            Some(stored) if &stored == sha256 => Ok(PutOutcome::AlreadyPresent {
                etag: existing.etag,
            }),
            stored => Err(StoreError::different_content(
                &self.name,
                key,
                stored.as_ref(),
                sha256,
            )),
        }
    }

    async fn put_head_and_compare(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<PutOutcome, StoreError> {
        match self.compare_existing(key, sha256).await {
            Err(StoreError::NotFound { .. }) => {}
            decided => return decided,
        }
        let etag = match self.put(key, body, sha256, metadata, false).await {
            Ok(etag) => etag,
            Err(PutFailure::Store(e)) => return Err(e),
            Err(PutFailure::ConditionalUnsupported) => {
                unreachable!("a plain put sends no condition")
            }
        };
        match self.compare_existing(key, sha256).await? {
            PutOutcome::AlreadyPresent { .. } => Ok(PutOutcome::Created { etag }),
            created => Ok(created),
        }
    }

    /// One `DeleteObjects` request; `None` when the store does not take
    /// batches (then per-key deletes from now on).
    async fn delete_batch(&self, keys: &[String]) -> Option<Vec<Result<(), StoreError>>> {
        if !self.batch_delete.load(Ordering::Relaxed) {
            return None;
        }
        let objects: Result<Vec<ObjectIdentifier>, _> = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect();
        let delete = Delete::builder()
            .set_objects(objects.ok())
            .quiet(true)
            .build()
            .ok()?;
        let sent = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await;
        match sent {
            Ok(out) => {
                let failed: HashMap<&str, (Class, String)> = out
                    .errors()
                    .iter()
                    .filter_map(|e| {
                        let class = classify_response(None, e.code());
                        let text = format!(
                            "{}: {}",
                            e.code().unwrap_or("error"),
                            e.message().unwrap_or("")
                        );
                        Some((e.key()?, (class, text)))
                    })
                    .collect();
                Some(
                    keys.iter()
                        .map(|key| match failed.get(key.as_str()) {
                            None => Ok(()),
                            Some((Class::NotFound, _)) => Ok(()),
                            Some((class, text)) => Err(self.classified(
                                *class,
                                Operation::Delete,
                                key,
                                message(text.clone()),
                            )),
                        })
                        .collect(),
                )
            }
            Err(err) if not_implemented(&err) => {
                tracing::warn!(store = %self.name, "store does not implement DeleteObjects; deleting key by key from now on");
                self.batch_delete.store(false, Ordering::Relaxed);
                None
            }
            Err(err) => {
                let error = self.error(Operation::Delete, &format!("{} keys", keys.len()), err);
                Some(keys.iter().map(|_| Err(error.clone())).collect())
            }
        }
    }
}

enum PutFailure {
    ConditionalUnsupported,
    Store(StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    NotFound,
    PreconditionFailed,
    Transient,
    Refused,
}

fn classify<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Class
where
    R: HasStatus,
{
    match err {
        SdkError::ConstructionFailure(_) => Class::Refused,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        _ => classify_response(err.raw_response().map(HasStatus::status), err.code()),
    }
}

/// Lets [`classify`] read the status of the SDK's raw response type.
trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn classify_response(status: Option<u16>, code: Option<&str>) -> Class {
    match (status, code) {
        // A missing bucket is a configuration error, not a missing object.
        (_, Some("NoSuchBucket")) => Class::Refused,
        (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => Class::NotFound,
        (Some(412), _) | (_, Some("PreconditionFailed")) => Class::PreconditionFailed,
        (
            _,
            Some(
                "SlowDown"
                | "Throttling"
                | "ThrottlingException"
                | "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                // A concurrent conditional write to the key is in flight:
                // its outcome decides, so the caller's next try settles it.
                | "ConditionalRequestConflict",
            ),
        ) => Class::Transient,
        (Some(408 | 409 | 429), _) => Class::Transient,
        (Some(s), _) if s >= 500 && s != 501 => Class::Transient,
        _ => Class::Refused,
    }
}

/// Whether a failure means "this store does not implement the feature"
/// (`If-None-Match` on PUT, `DeleteObjects`) rather than a real failure.
fn not_implemented<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    let status = err.raw_response().map(|r| r.status().as_u16());
    status == Some(501) || err.code() == Some("NotImplemented")
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// What a GET or HEAD answer says about the object.
fn object_info(
    key: &str,
    content_length: Option<i64>,
    etag: Option<&str>,
    last_modified: Option<&aws_sdk_s3::primitives::DateTime>,
    metadata: Option<&HashMap<String, String>>,
) -> ObjectInfo {
    ObjectInfo {
        key: key.to_owned(),
        size: content_length.unwrap_or_default().max(0) as u64,
        etag: etag.map(str::to_owned),
        last_modified: to_system_time(last_modified),
        metadata: metadata
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
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
        if !self.if_none_match.load(Ordering::Relaxed) {
            return self.put_head_and_compare(key, body, sha256, metadata).await;
        }
        match self.put(key, body.clone(), sha256, metadata, true).await {
            Ok(etag) => Ok(PutOutcome::Created { etag }),
            Err(PutFailure::Store(StoreError::PreconditionFailed { .. })) => {
                self.compare_existing(key, sha256).await
            }
            Err(PutFailure::Store(e)) => Err(e),
            Err(PutFailure::ConditionalUnsupported) => {
                tracing::warn!(store = %self.name, "store does not implement If-None-Match; using HEAD-and-compare from now on");
                self.if_none_match.store(false, Ordering::Relaxed);
                self.put_head_and_compare(key, body, sha256, metadata).await
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(Operation::Get, key, e))?;
        let info = object_info(
            key,
            out.content_length(),
            out.e_tag(),
            out.last_modified(),
            out.metadata(),
        );
        let transient = |source: Cause| StoreError::Transient {
            store: self.name.clone(),
            operation: Operation::Get,
            key: key.to_owned(),
            source,
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| transient(cause(e)))?
            .into_bytes();
        if body.len() as u64 != info.size {
            return Err(transient(message(format!(
                "body was {} bytes, Content-Length said {}",
                body.len(),
                info.size
            ))));
        }
        Ok(Object { info, body })
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(Operation::Head, key, e))?;
        Ok(object_info(
            key,
            out.content_length(),
            out.e_tag(),
            out.last_modified(),
            out.metadata(),
        ))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let sent = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match sent.map_err(|e| self.error(Operation::Delete, key, e)) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<Result<(), StoreError>> {
        let mut results = Vec::with_capacity(keys.len());
        for batch in keys.chunks(DELETE_BATCH) {
            match self.delete_batch(batch).await {
                Some(batch_results) => results.extend(batch_results),
                None => results.extend(delete_each(self, batch).await),
            }
        }
        results
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix);
        if let Some(after) = start_after {
            request = request.start_after(after);
        }
        let out = request
            .send()
            .await
            .map_err(|e| self.error(Operation::List, prefix, e))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_owned(),
                    size: o.size().unwrap_or_default().max(0) as u64,
                    etag: o.e_tag().map(str::to_owned),
                    last_modified: to_system_time(o.last_modified()),
                    metadata: Metadata::new(),
                })
            })
            .collect();
        Ok(ListPage {
            objects,
            truncated: out.is_truncated().unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_sorted_by_what_a_retry_can_do() {
        assert_eq!(classify_response(Some(404), None), Class::NotFound);
        assert_eq!(
            classify_response(Some(400), Some("NoSuchKey")),
            Class::NotFound
        );
        assert_eq!(
            classify_response(Some(412), None),
            Class::PreconditionFailed
        );
        for status in [408, 409, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify_response(Some(status), None),
                Class::Transient,
                "{status}"
            );
        }
        for code in [
            "RequestTimeout",
            "SlowDown",
            "ConditionalRequestConflict",
            "InternalError",
        ] {
            assert_eq!(
                classify_response(Some(400), Some(code)),
                Class::Transient,
                "{code}"
            );
        }
        for status in [400, 401, 403, 405, 501] {
            assert_eq!(
                classify_response(Some(status), None),
                Class::Refused,
                "{status}"
            );
        }
        assert_eq!(
            classify_response(Some(404), Some("NoSuchBucket")),
            Class::Refused
        );
        assert_eq!(
            classify_response(None, Some("AccessDenied")),
            Class::Refused
        );
        assert_eq!(classify_response(None, None), Class::Refused);
    }
}
