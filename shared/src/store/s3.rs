//! [`ObjectStore`] over aws-sdk-s3, for AWS S3 (staging), Cloudflare R2 and
//! Backblaze B2. Clients are built in [`crate::backends`]; the SDK's own
//! retries are off (see [`crate::retry`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    delete_each, BodyStream, ListPage, Metadata, Object, ObjectInfo, ObjectReader, ObjectStore,
    Operation, PutOutcome, StoreError, UploadId, UploadedPart, SHA256_METADATA,
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

/// How a store is to be talked to, as far as it differs from AWS S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S3Options {
    pub conditional: ConditionalPut,
    /// Deletes go out as `DeleteObjects` batches (until the store refuses).
    pub batch_delete: bool,
    /// The store keeps versions (a delete by name only hides): deletes
    /// remove every version, and a key that reads as missing is looked for
    /// among its versions, so that a hidden object is still served.
    pub keeps_versions: bool,
    /// PUTs carry `Content-MD5` (B2 requires it with Object Lock, and it
    /// guards the bytes where the SDK's CRC trailers are not sent).
    pub content_md5: bool,
    /// [`ObjectStore::put_replacing`] sends `If-Match` (until the store
    /// answers that it does not implement it); otherwise HEAD and compare.
    pub replace_if_match: bool,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            conditional: ConditionalPut::IfNoneMatch,
            batch_delete: true,
            keeps_versions: false,
            content_md5: true,
            replace_if_match: true,
        }
    }
}

pub struct S3Store {
    name: String,
    client: Client,
    bucket: String,
    if_none_match: AtomicBool,
    /// Whether PUT takes `If-Match` (until the store answers that it does not).
    if_match: AtomicBool,
    /// Cleared for good the first time the store refuses `DeleteObjects`.
    batch_delete: AtomicBool,
    keeps_versions: bool,
    content_md5: bool,
}

/// The most a GET reserves before the body arrives: a `Content-Length`
/// is not trusted with memory.
const MAX_PREALLOCATION: u64 = 64 << 20;

/// Keys per `DeleteObjects` request: S3's limit.
const DELETE_BATCH: usize = 1000;

impl S3Store {
    /// A store named `name` (in logs and errors) over `bucket`.
    pub fn new(name: &str, client: Client, bucket: &str, options: S3Options) -> Self {
        S3Store {
            name: name.to_owned(),
            client,
            bucket: bucket.to_owned(),
            if_none_match: AtomicBool::new(options.conditional == ConditionalPut::IfNoneMatch),
            if_match: AtomicBool::new(options.replace_if_match),
            batch_delete: AtomicBool::new(options.batch_delete && !options.keeps_versions),
            keeps_versions: options.keeps_versions,
            content_md5: options.content_md5,
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
            Class::Throttled => StoreError::Throttled {
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
            Class::Unauthorized => StoreError::Unauthorized {
                store,
                operation,
                key,
                source,
            },
        }
    }

    fn etag_changed(&self, key: &str, etag: &str) -> StoreError {
        StoreError::PreconditionFailed {
            store: self.name.clone(),
            key: key.to_owned(),
            detail: format!("its ETag is no longer {etag}"),
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
        condition: WriteCondition<'_>,
    ) -> Result<Option<String>, PutFailure> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(body.len() as i64);
        if self.content_md5 {
            request = request.content_md5(content_md5(&body));
        }
        let mut request = request
            .body(ByteStream::from(body))
            .metadata(SHA256_METADATA, sha256.as_str());
        for (k, v) in metadata {
            request = request.metadata(k, v);
        }
        match condition {
            WriteCondition::None => {}
            WriteCondition::Absent => request = request.if_none_match("*"),
            WriteCondition::Replacing(etag) => request = request.if_match(etag),
        }
        let sent = request.send().await;
        self.write_answer(
            key,
            sent.map(|out| out.e_tag().map(str::to_owned)),
            condition != WriteCondition::None,
        )
    }

    /// A write's answer: its ETag, or why it failed (a store that does not
    /// implement the condition, when one was sent, apart).
    fn write_answer<E>(
        &self,
        key: &str,
        sent: Result<Option<String>, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
        conditional: bool,
    ) -> Result<Option<String>, PutFailure>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match sent {
            Ok(etag) => Ok(etag),
            Err(err) if conditional && not_implemented(&err) => {
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
                size: existing.size,
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
        let etag = unconditional(
            self.put(key, body, sha256, metadata, WriteCondition::None)
                .await,
        )?;
        self.confirm_created(key, sha256, etag).await
    }

    /// After a write sent without a condition: the object there now must
    /// be ours (a different writer may have raced in).
    async fn confirm_created(
        &self,
        key: &str,
        sha256: &Sha256Hex,
        etag: Option<String>,
    ) -> Result<PutOutcome, StoreError> {
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
        // Not quiet: the answer says which deletes only left a delete marker.
        let delete = Delete::builder()
            .set_objects(objects.ok())
            .quiet(false)
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
                let hidden: Vec<&str> = out
                    .deleted()
                    .iter()
                    .filter(|d| d.delete_marker() == Some(true))
                    .filter_map(|d| d.key())
                    .collect();
                let mut failed: HashMap<String, StoreError> = out
                    .errors()
                    .iter()
                    .filter_map(|e| {
                        let class = classify_response(None, e.code());
                        let text = format!(
                            "{}: {}",
                            e.code().unwrap_or("error"),
                            e.message().unwrap_or("")
                        );
                        let key = e.key()?;
                        (class != Class::NotFound).then(|| {
                            (
                                key.to_owned(),
                                self.classified(class, Operation::Delete, key, message(text)),
                            )
                        })
                    })
                    .collect();
                for key in hidden {
                    if let Err(e) = self.remove_versions(key).await {
                        failed.insert(key.to_owned(), e);
                    }
                }
                Some(
                    keys.iter()
                        .map(|key| failed.remove(key).map_or(Ok(()), Err))
                        .collect(),
                )
            }
            Err(err) if not_implemented(&err) || unsupported_header(&err) => {
                tracing::warn!(store = %self.name, "store refuses DeleteObjects as the SDK sends it; deleting key by key from now on");
                self.batch_delete.store(false, Ordering::Relaxed);
                None
            }
            Err(err) => {
                let error = self.error(Operation::Delete, &format!("{} keys", keys.len()), err);
                Some(keys.iter().map(|_| Err(error.clone())).collect())
            }
        }
    }

    /// Every version of `key` (and every delete marker), newest first;
    /// `None` from a store that keeps no versions (it does not implement
    /// the listing).
    async fn versions(&self, key: &str) -> Result<Option<Vec<(String, bool)>>, StoreError> {
        let mut versions = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let listed = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(markers.0.clone())
                .set_version_id_marker(markers.1.clone())
                .send()
                .await;
            let out = match listed {
                Ok(out) => out,
                Err(err) if not_implemented(&err) => return Ok(None),
                Err(err) => return Err(self.error(Operation::List, key, err)),
            };
            let of_key = |k: Option<&str>| k == Some(key);
            versions.extend(
                out.versions()
                    .iter()
                    .filter(|v| of_key(v.key()))
                    .filter_map(|v| {
                        Some((
                            v.version_id()?.to_owned(),
                            false,
                            v.last_modified().copied(),
                        ))
                    }),
            );
            versions.extend(
                out.delete_markers()
                    .iter()
                    .filter(|m| of_key(m.key()))
                    .filter_map(|m| {
                        Some((m.version_id()?.to_owned(), true, m.last_modified().copied()))
                    }),
            );
            if out.is_truncated() != Some(true) {
                break;
            }
            markers = (
                out.next_key_marker().map(str::to_owned),
                out.next_version_id_marker().map(str::to_owned),
            );
        }
        versions.sort_by_key(|v| std::cmp::Reverse(v.2));
        Ok(Some(
            versions
                .into_iter()
                .map(|(id, marker, _)| (id, marker))
                .collect(),
        ))
    }

    /// A delete by name; `true` when the store only hid the object behind
    /// a delete marker (its bytes are still there).
    async fn delete_by_name(&self, key: &str) -> Result<bool, StoreError> {
        let sent = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match sent.map_err(|e| self.error(Operation::Delete, key, e)) {
            Ok(out) => Ok(out.delete_marker() == Some(true)),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Deletes every version of `key`: what frees its bytes on a store
    /// where a delete by name only hides them (B2). Needs a key that may
    /// delete versions (B2's `deleteFiles`).
    async fn remove_versions(&self, key: &str) -> Result<(), StoreError> {
        let Some(versions) = self.versions(key).await? else {
            // No versions to find: a plain delete is all there is.
            return self.delete_by_name(key).await.map(|_| ());
        };
        for (version, _) in versions {
            let deleted = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .version_id(&version)
                .send()
                .await;
            match deleted.map_err(|e| self.error(Operation::Delete, key, e)) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The newest version of a key that reads as missing: hidden, not
    /// deleted, on a store that keeps versions.
    async fn hidden_version(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .versions(key)
            .await?
            .unwrap_or_default()
            .into_iter()
            .find(|(_, marker)| !marker)
            .map(|(version, _)| version))
    }

    /// Opens `key` (a given version of it) for reading.
    async fn open_version(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectReader, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
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
        let body = body_stream(&self.name, key, info.size, out.body);
        Ok(ObjectReader { info, body })
    }

    /// Opens `key`, or on a store that keeps versions the newest version
    /// of a key that only reads as missing (hidden by a delete).
    async fn open(&self, key: &str) -> Result<ObjectReader, StoreError> {
        match self.open_version(key, None).await {
            Err(StoreError::NotFound { .. }) if self.keeps_versions => {
                let Some(version) = self.hidden_version(key).await? else {
                    return Err(StoreError::NotFound {
                        store: self.name.clone(),
                        key: key.to_owned(),
                    });
                };
                tracing::warn!(store = %self.name, key, version, "HIDDEN object: serving its newest version (hidden by a delete that kept its bytes)");
                self.open_version(key, Some(&version)).await
            }
            other => other,
        }
    }

    /// Completes an upload, `If-None-Match` where the store takes it.
    async fn complete(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[UploadedPart],
        if_none_match: bool,
    ) -> Result<Option<String>, PutFailure> {
        let parts: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .set_e_tag(p.etag.clone())
                    .build()
            })
            .collect();
        let mut request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if if_none_match {
            request = request.if_none_match("*");
        }
        let sent = request.send().await;
        self.write_answer(
            key,
            sent.map(|out| out.e_tag().map(str::to_owned)),
            if_none_match,
        )
    }

    /// Aborts an upload that is not to complete, keeping `outcome`; a
    /// failed abort only leaves parts for the bucket's lifecycle rule.
    async fn abandon<T>(&self, key: &str, upload: &UploadId, outcome: T) -> T {
        if let Err(e) = self.abort_upload(key, upload).await {
            tracing::warn!(store = %self.name, key, error = %crate::error::chain(&e), "could not abort the upload; its parts stay until the bucket's lifecycle rule drops them");
        }
        outcome
    }
}

/// An SDK body as a [`BodyStream`] that ends in an error if it carries
/// fewer (or more) bytes than the `Content-Length` announced.
fn body_stream(store: &str, key: &str, size: u64, body: ByteStream) -> BodyStream {
    let transient = {
        let (store, key) = (store.to_owned(), key.to_owned());
        move |source: Cause| StoreError::Transient {
            store: store.clone(),
            operation: Operation::Get,
            key: key.clone(),
            source,
        }
    };
    let state = (body, 0u64, false);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut body, received, done)| {
            let transient = transient.clone();
            async move {
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(piece)) => {
                        let received = received + piece.len() as u64;
                        if received > size {
                            let error = transient(message(format!(
                                "body is longer than the {size} bytes Content-Length said"
                            )));
                            return Some((Err(error), (body, received, true)));
                        }
                        Some((Ok(piece), (body, received, false)))
                    }
                    Some(Err(e)) => Some((Err(transient(cause(e))), (body, received, true))),
                    None if received != size => {
                        let error = transient(message(format!(
                            "body was {received} bytes, Content-Length said {size}"
                        )));
                        Some((Err(error), (body, received, true)))
                    }
                    None => None,
                }
            }
        },
    ))
}

/// What a PUT requires of the object already under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteCondition<'a> {
    None,
    /// `If-None-Match: *`: no object there.
    Absent,
    /// `If-Match`: the object with this ETag there.
    Replacing(&'a str),
}

enum PutFailure {
    ConditionalUnsupported,
    Store(StoreError),
}

/// The result of a write sent without a condition, which cannot be
/// refused as unsupported.
fn unconditional(result: Result<Option<String>, PutFailure>) -> Result<Option<String>, StoreError> {
    match result {
        Ok(etag) => Ok(etag),
        Err(PutFailure::Store(e)) => Err(e),
        Err(PutFailure::ConditionalUnsupported) => {
            unreachable!("a write without a condition is never refused for one")
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    NotFound,
    PreconditionFailed,
    Throttled,
    Transient,
    Refused,
    Unauthorized,
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
        // The key itself is not accepted (S3's codes, which R2 and B2 use
        // for an unknown or deleted key): a rotated key, not a missing right.
        (Some(401), _)
        | (
            _,
            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken"),
        ) => Class::Unauthorized,
        (Some(404), _) | (_, Some("NoSuchKey" | "NotFound")) => Class::NotFound,
        (Some(412), _) | (_, Some("PreconditionFailed")) => Class::PreconditionFailed,
        (_, Some("SlowDown" | "Throttling" | "ThrottlingException" | "TooManyRequests")) => {
            Class::Throttled
        }
        (
            _,
            Some(
                "RequestTimeout"
                | "InternalError"
                | "ServiceUnavailable"
                // A concurrent conditional write to the key is in flight:
                // its outcome decides, so the caller's next try settles it.
                | "ConditionalRequestConflict",
            ),
        ) => Class::Transient,
        (Some(429), _) => Class::Throttled,
        (Some(408 | 409), _) => Class::Transient,
        (Some(s), _) if s >= 500 && s != 501 => Class::Transient,
        _ => Class::Refused,
    }
}

/// B2's answer to the checksum headers the SDK sends (400
/// `InvalidArgument` "Unsupported header …"): the request, not the
/// operation, is what it refuses.
fn unsupported_header<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    err.code() == Some("InvalidArgument")
        && err
            .message()
            .is_some_and(|m| m.contains("Unsupported header"))
}

/// The base64 MD5 of `body`, for `Content-MD5`.
fn content_md5(body: &[u8]) -> String {
    use md5::Digest;
    aws_smithy_types::base64::encode(md5::Md5::digest(body).as_slice())
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
        match self
            .put(key, body.clone(), sha256, metadata, WriteCondition::Absent)
            .await
        {
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

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        sha256: &Sha256Hex,
        metadata: &Metadata,
        replaced: &str,
    ) -> Result<Option<String>, StoreError> {
        if self.if_match.load(Ordering::Relaxed) {
            let condition = WriteCondition::Replacing(replaced);
            match self
                .put(key, body.clone(), sha256, metadata, condition)
                .await
            {
                Ok(etag) => return Ok(etag),
                Err(PutFailure::Store(StoreError::PreconditionFailed { .. })) => {
                    return Err(self.etag_changed(key, replaced))
                }
                Err(PutFailure::Store(e)) => return Err(e),
                Err(PutFailure::ConditionalUnsupported) => {
                    tracing::warn!(store = %self.name, "store does not implement If-Match on PUT; comparing the ETag first from now on");
                    self.if_match.store(false, Ordering::Relaxed);
                }
            }
        }
        // Not atomic: walvault's other writers never overwrite, so only a
        // delete or another repair can come between the HEAD and the PUT.
        match self.head(key).await {
            Ok(info) if info.etag.as_deref() == Some(replaced) => {}
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                return Err(self.etag_changed(key, replaced))
            }
            Err(e) => return Err(e),
        }
        unconditional(
            self.put(key, body, sha256, metadata, WriteCondition::None)
                .await,
        )
    }

    async fn get(&self, key: &str) -> Result<Object, StoreError> {
        let reader = self.open(key).await?;
        let mut body = Vec::with_capacity(reader.info.size.min(MAX_PREALLOCATION) as usize);
        let mut pieces = reader.body;
        while let Some(piece) = pieces.next().await {
            body.extend_from_slice(&piece?);
        }
        Ok(Object {
            info: reader.info,
            body: Bytes::from(body),
        })
    }

    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError> {
        self.open(key).await
    }

    async fn create_upload(
        &self,
        key: &str,
        sha256: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<UploadId, StoreError> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .metadata(SHA256_METADATA, sha256.as_str());
        for (k, v) in metadata {
            request = request.metadata(k, v);
        }
        let out = request
            .send()
            .await
            .map_err(|e| self.error(Operation::Put, key, e))?;
        out.upload_id()
            .map(|id| UploadId(id.to_owned()))
            .ok_or_else(|| StoreError::Transient {
                store: self.name.clone(),
                operation: Operation::Put,
                key: key.to_owned(),
                source: message("CreateMultipartUpload answered without an upload id"),
            })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        let mut request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .part_number(number as i32)
            .content_length(body.len() as i64);
        if self.content_md5 {
            request = request.content_md5(content_md5(&body));
        }
        let out = request
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error(Operation::Put, key, e))?;
        Ok(UploadedPart {
            number,
            etag: out.e_tag().map(str::to_owned),
        })
    }

    /// Looks first whatever the store's conditional writes: an upload is
    /// large, and a store that ignores `If-None-Match` on completion would
    /// otherwise replace what is there.
    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: &[UploadedPart],
        sha256: &Sha256Hex,
    ) -> Result<PutOutcome, StoreError> {
        match self.compare_existing(key, sha256).await {
            Err(StoreError::NotFound { .. }) => {}
            decided => return self.abandon(key, upload, decided).await,
        }
        let conditional = self.if_none_match.load(Ordering::Relaxed);
        match self.complete(key, upload, parts, conditional).await {
            Ok(etag) => Ok(PutOutcome::Created { etag }),
            Err(PutFailure::Store(StoreError::PreconditionFailed { .. })) => {
                let decided = self.compare_existing(key, sha256).await;
                self.abandon(key, upload, decided).await
            }
            Err(PutFailure::Store(e)) => Err(e),
            Err(PutFailure::ConditionalUnsupported) => {
                tracing::warn!(store = %self.name, "store does not implement If-None-Match; using HEAD-and-compare from now on");
                self.if_none_match.store(false, Ordering::Relaxed);
                let etag = unconditional(self.complete(key, upload, parts, false).await)?;
                self.confirm_created(key, sha256, etag).await
            }
        }
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<(), StoreError> {
        let sent = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .send()
            .await;
        match sent.map_err(|e| self.error(Operation::Delete, key, e)) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
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
        if self.keeps_versions || self.delete_by_name(key).await? {
            self.remove_versions(key).await
        } else {
            Ok(())
        }
    }

    async fn delete_if_etag(&self, key: &str, etag: &str) -> Result<(), StoreError> {
        if self.keeps_versions {
            // Versions are removed by id, which a condition cannot guard:
            // compare first (a narrow race, on stores walvault never
            // deletes conditionally from: staging keeps no versions).
            return match self.head(key).await {
                Ok(info) if info.etag.as_deref() == Some(etag) => self.delete(key).await,
                Ok(_) => Err(self.etag_changed(key, etag)),
                Err(StoreError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            };
        }
        let sent = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(etag)
            .send()
            .await;
        match sent.map_err(|e| self.error(Operation::Delete, key, e)) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(StoreError::PreconditionFailed { .. }) => Err(self.etag_changed(key, etag)),
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
        for status in [408, 409, 500, 502, 503, 504] {
            assert_eq!(
                classify_response(Some(status), None),
                Class::Transient,
                "{status}"
            );
        }
        assert_eq!(classify_response(Some(429), None), Class::Throttled);
        for code in ["SlowDown", "TooManyRequests"] {
            assert_eq!(
                classify_response(Some(503), Some(code)),
                Class::Throttled,
                "{code}"
            );
        }
        for code in [
            "RequestTimeout",
            "ConditionalRequestConflict",
            "InternalError",
        ] {
            assert_eq!(
                classify_response(Some(400), Some(code)),
                Class::Transient,
                "{code}"
            );
        }
        for code in [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
        ] {
            assert_eq!(
                classify_response(Some(403), Some(code)),
                Class::Unauthorized,
                "{code}"
            );
        }
        assert_eq!(classify_response(Some(401), None), Class::Unauthorized);
        for status in [400, 403, 405, 501] {
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
