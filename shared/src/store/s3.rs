//! [`ObjectStore`] over aws-sdk-s3, for AWS S3 (staging), Cloudflare R2 and
//! Backblaze B2.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::{
    ListPage, Metadata, Object, ObjectInfo, ObjectStore, PutOutcome, StoreError, SHA256_METADATA,
};
use crate::codec::Sha256Hex;
use crate::config::{Config, ConfigError, Provider, ReplicaConfig, ReplicaCredentials};

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

/// The SDK settings shared by every client: timeouts per attempt, bounded
/// retries. Credentials and region come from the standard AWS chain unless
/// the caller sets them on the loader.
pub fn sdk_loader(config: &Config) -> ConfigLoader {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(config.request_timeout))
        .operation_attempt_timeout(config.request_timeout)
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
}

pub async fn build_sdk_config(config: &Config) -> SdkConfig {
    sdk_loader(config).load().await
}

/// The staging bucket on AWS S3 (or the stand-in named by
/// `WALVAULT_STAGING_ENDPOINT`).
pub fn staging_store(sdk: &SdkConfig, config: &Config) -> S3Store {
    let mut builder = aws_sdk_s3::config::Builder::from(sdk);
    if let Some(endpoint) = &config.staging.endpoint {
        builder = builder.endpoint_url(endpoint).force_path_style(true);
    }
    S3Store::new(
        "staging",
        Client::from_conf(builder.build()),
        &config.staging.bucket,
        ConditionalPut::IfNoneMatch,
    )
}

/// R2 or B2: static credentials, path-style addressing, and checksums only
/// when an operation requires them (neither provider accepts the SDK's
/// default CRC trailers everywhere).
pub fn replica_store(
    sdk: &SdkConfig,
    replica: &ReplicaConfig,
    conditional: ConditionalPut,
) -> Result<S3Store, ConfigError> {
    let credentials = match &replica.credentials {
        ReplicaCredentials::Keys {
            access_key_id,
            secret_access_key,
        } => Credentials::new(
            access_key_id.clone(),
            secret_access_key.expose().to_owned(),
            None,
            None,
            "walvault-config",
        ),
        ReplicaCredentials::SecretArn(_) => return Err(ConfigError::Unresolved(replica.provider)),
    };
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .credentials_provider(credentials)
        .region(Region::new(replica.region.clone()))
        .endpoint_url(&replica.endpoint)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Ok(S3Store::new(
        replica.provider.as_str(),
        Client::from_conf(conf),
        &replica.bucket,
        conditional,
    ))
}

/// The configured replica on `provider`, as a shared store handle.
pub fn configured_replica(
    sdk: &SdkConfig,
    config: &Config,
    provider: Provider,
) -> Result<Arc<dyn ObjectStore>, ConfigError> {
    Ok(Arc::new(replica_store(
        sdk,
        config.replica(provider)?,
        ConditionalPut::IfNoneMatch,
    )?))
}

impl S3Store {
    pub fn new(name: &str, client: Client, bucket: &str, conditional: ConditionalPut) -> Self {
        S3Store {
            name: name.to_owned(),
            client,
            bucket: bucket.to_owned(),
            if_none_match: AtomicBool::new(conditional == ConditionalPut::IfNoneMatch),
            batch_delete: AtomicBool::new(true),
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

    fn classify<E>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let detail = DisplayErrorContext(&err).to_string();
        match classify(&err, status, code.as_deref()) {
            Class::NotFound => StoreError::NotFound {
                store: self.name.clone(),
                key: key.to_owned(),
            },
            Class::PreconditionFailed => StoreError::PreconditionFailed {
                store: self.name.clone(),
                key: key.to_owned(),
                detail,
            },
            Class::Retryable => StoreError::Retryable {
                store: self.name.clone(),
                operation,
                key: key.to_owned(),
                detail,
            },
            Class::Permanent => StoreError::Permanent {
                store: self.name.clone(),
                operation,
                key: key.to_owned(),
                detail,
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
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                let code = err.code().map(str::to_owned);
                if if_none_match && conditional_unsupported(status, code.as_deref()) {
                    return Err(PutFailure::ConditionalUnsupported);
                }
                if status == Some(409) {
                    // ConditionalRequestConflict: another conditional write
                    // to this key is in flight; its outcome decides.
                    return Err(PutFailure::ConcurrentWrite);
                }
                Err(PutFailure::Store(self.classify("put", key, err)))
            }
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
            Some(stored) => Err(StoreError::PreconditionFailed {
                store: self.name.clone(),
                key: key.to_owned(),
                detail: format!("stored sha256 {stored}, ours {sha256}"),
            }),
            None => Err(StoreError::PreconditionFailed {
                store: self.name.clone(),
                key: key.to_owned(),
                detail: "stored object has no sha256 metadata: not written by walvault".into(),
            }),
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
            Err(PutFailure::ConditionalUnsupported | PutFailure::ConcurrentWrite) => {
                return Err(self.retryable_conflict(key))
            }
        };
        match self.compare_existing(key, sha256).await? {
            PutOutcome::AlreadyPresent { .. } => Ok(PutOutcome::Created { etag }),
            created => Ok(created),
        }
    }

    fn retryable_conflict(&self, key: &str) -> StoreError {
        StoreError::Retryable {
            store: self.name.clone(),
            operation: "put",
            key: key.to_owned(),
            detail: "a concurrent write to the same key was still in flight".into(),
        }
    }
}

impl S3Store {
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
        match self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
        {
            Ok(out) => {
                let failed: std::collections::HashMap<&str, String> = out
                    .errors()
                    .iter()
                    .filter_map(|e| {
                        Some((
                            e.key()?,
                            format!(
                                "{}: {}",
                                e.code().unwrap_or("error"),
                                e.message().unwrap_or("")
                            ),
                        ))
                    })
                    .collect();
                Some(
                    keys.iter()
                        .map(|key| match failed.get(key.as_str()) {
                            None => Ok(()),
                            Some(detail) => Err(StoreError::Retryable {
                                store: self.name.clone(),
                                operation: "delete",
                                key: key.clone(),
                                detail: detail.clone(),
                            }),
                        })
                        .collect(),
                )
            }
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                if conditional_unsupported(status, err.code()) {
                    tracing::warn!(store = %self.name, "store does not implement DeleteObjects; deleting key by key from now on");
                    self.batch_delete.store(false, Ordering::Relaxed);
                    return None;
                }
                let error = self.classify("delete", &format!("{} keys", keys.len()), err);
                Some(keys.iter().map(|_| Err(error.clone())).collect())
            }
        }
    }
}

enum PutFailure {
    ConditionalUnsupported,
    ConcurrentWrite,
    Store(StoreError),
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    NotFound,
    PreconditionFailed,
    Retryable,
    Permanent,
}

fn classify<E, R>(err: &SdkError<E, R>, status: Option<u16>, code: Option<&str>) -> Class {
    match err {
        SdkError::ConstructionFailure(_) => Class::Permanent,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Retryable
        }
        _ => classify_response(status, code),
    }
}

fn classify_response(status: Option<u16>, code: Option<&str>) -> Class {
    match (status, code) {
        // A missing bucket is a configuration error, not a missing object.
        (_, Some("NoSuchBucket")) => Class::Permanent,
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
                | "ServiceUnavailable",
            ),
        ) => Class::Retryable,
        (Some(408 | 409 | 429), _) => Class::Retryable,
        (Some(s), _) if s >= 500 && s != 501 => Class::Retryable,
        _ => Class::Permanent,
    }
}

/// Whether a failure means "this store does not implement the feature"
/// (`If-None-Match` on PUT, `DeleteObjects`) rather than a real failure.
fn conditional_unsupported(status: Option<u16>, code: Option<&str>) -> bool {
    status == Some(501) || matches!(code, Some("NotImplemented"))
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
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
        // A 409 means a racing conditional write has not finished yet; give
        // it a moment to settle into a 412 or a visible object.
        for backoff_ms in [50u64, 200, 800] {
            match self.put(key, body.clone(), sha256, metadata, true).await {
                Ok(etag) => return Ok(PutOutcome::Created { etag }),
                Err(PutFailure::Store(StoreError::PreconditionFailed { .. })) => {
                    return self.compare_existing(key, sha256).await
                }
                Err(PutFailure::Store(e)) => return Err(e),
                Err(PutFailure::ConditionalUnsupported) => {
                    tracing::warn!(store = %self.name, "store does not implement If-None-Match; using HEAD-and-compare from now on");
                    self.if_none_match.store(false, Ordering::Relaxed);
                    return self.put_head_and_compare(key, body, sha256, metadata).await;
                }
                Err(PutFailure::ConcurrentWrite) => {
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await
                }
            }
        }
        match self.compare_existing(key, sha256).await {
            Err(StoreError::NotFound { .. }) => Err(self.retryable_conflict(key)),
            decided => decided,
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
            .map_err(|e| self.classify("get", key, e))?;
        let info = ObjectInfo {
            key: key.to_owned(),
            size: out.content_length().unwrap_or_default().max(0) as u64,
            etag: out.e_tag().map(str::to_owned),
            last_modified: to_system_time(out.last_modified()),
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Retryable {
                store: self.name.clone(),
                operation: "get",
                key: key.to_owned(),
                detail: format!("reading the body: {e}"),
            })?;
        let body = body.into_bytes();
        if body.len() as u64 != info.size {
            return Err(StoreError::Retryable {
                store: self.name.clone(),
                operation: "get",
                key: key.to_owned(),
                detail: format!(
                    "body was {} bytes, Content-Length said {}",
                    body.len(),
                    info.size
                ),
            });
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
            .map_err(|e| self.classify("head", key, e))?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: out.content_length().unwrap_or_default().max(0) as u64,
            etag: out.e_tag().map(str::to_owned),
            last_modified: to_system_time(out.last_modified()),
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.classify("delete", key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn delete_many(&self, keys: &[String]) -> Vec<Result<(), StoreError>> {
        let mut results = Vec::with_capacity(keys.len());
        for batch in keys.chunks(DELETE_BATCH) {
            match self.delete_batch(batch).await {
                Some(batch_results) => results.extend(batch_results),
                None => {
                    for key in batch {
                        results.push(self.delete(key).await);
                    }
                }
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
            .map_err(|e| self.classify("list", prefix, e))?;
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
                Class::Retryable,
                "{status}"
            );
        }
        assert_eq!(
            classify_response(Some(400), Some("RequestTimeout")),
            Class::Retryable
        );
        assert_eq!(
            classify_response(Some(503), Some("SlowDown")),
            Class::Retryable
        );
        for status in [400, 401, 403, 405, 501] {
            assert_eq!(
                classify_response(Some(status), None),
                Class::Permanent,
                "{status}"
            );
        }
        assert_eq!(classify_response(None, None), Class::Permanent);
    }

    #[test]
    fn not_implemented_means_no_conditional_writes() {
        assert!(conditional_unsupported(Some(501), None));
        assert!(conditional_unsupported(Some(400), Some("NotImplemented")));
        assert!(!conditional_unsupported(
            Some(412),
            Some("PreconditionFailed")
        ));
        assert!(!conditional_unsupported(Some(500), None));
    }
}
