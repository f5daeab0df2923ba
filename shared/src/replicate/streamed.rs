//! Files larger than [`IN_MEMORY_LIMIT`] (segments of 32 MiB and more,
//! base-backup chunks) are never held whole: the staging body is hashed
//! and compressed as it streams in, and the compressed stream is cut into
//! equal parts written to every missing replica at once, as multipart
//! uploads (R2 requires equal parts). One part is in flight while the next
//! is compressed, so memory stays near two parts whatever the file's size.
//!
//! Verification is the same as for a file read whole, in another order:
//! the header and the shipper's claims are checked before anything is
//! written, the sha256 of the raw bytes at the end, and an upload is
//! completed only once it matches. A file that fails is recorded
//! `corrupt` and every upload aborted. A staging object larger than any
//! file of its kind can be is refused at once, with a record.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::claim::Claim;
use super::staged::{check_claims, check_content, staged_at, Corrupt, Staged};
use super::write::ReplicaError;
use super::{elapsed_ms, Outcome, ReplicateError, Run};
use crate::backup::MAX_CHUNK_SIZE;
use crate::catalog::{CatalogRecord, RecordRef, RecordStatus};
use crate::clock::now_millis;
use crate::codec::{CodecError, CompressionLevel, Sha256Hex, IN_MEMORY_LIMIT};
use crate::error::message;
use crate::file::FileKind;
use crate::keys::archive_key;
use crate::metrics::Metric;
use crate::provider::Provider;
use crate::retry::{Budget, TimedOut};
use crate::seal::{KeyError, Recipients, Sealer};
use crate::store::{
    BodyStream, ObjectInfo, ObjectReader, ObjectStore, Operation, PutOutcome, StoreError, UploadId,
    UploadedPart,
};
use crate::wal::{LONG_HEADER_SIZE, MAX_SEGMENT_SIZE};

/// Every part but the last is this size: R2 requires equal parts, and
/// every store at least 5 MiB.
pub(crate) const PART_SIZE: usize = 8 << 20;

/// The largest staging object that can be a file of this kind.
fn largest(kind: FileKind) -> u64 {
    match kind {
        FileKind::Wal(_) => MAX_SEGMENT_SIZE,
        FileKind::BackupChunk => MAX_CHUNK_SIZE,
        // Parsed whole: never streamed.
        FileKind::BackupDescriptor => IN_MEMORY_LIMIT,
    }
}

/// One provider's multipart upload.
struct Upload {
    provider: Provider,
    store: Arc<dyn ObjectStore>,
    key: String,
    id: UploadId,
    parts: Vec<UploadedPart>,
    /// Why this provider's upload stopped; the others go on.
    failed: Option<StoreError>,
}

/// A part on its way to every live upload: each upload's answer, by index.
type PartInFlight =
    Pin<Box<dyn Future<Output = Vec<(usize, Result<UploadedPart, StoreError>)>> + Send>>;

/// How a provider's replica begins.
enum Begun {
    Upload(Upload),
    /// Already there, or refused: the provider's result as is.
    Settled(Box<Result<CatalogRecord, ReplicaError>>),
}

/// The staging body as it was compressed and sent.
struct Sent {
    sha256: Sha256Hex,
    packed_size: u64,
    /// Of the bytes sent: every provider got the same parts.
    stored_sha256: Sha256Hex,
}

impl Run<'_> {
    pub(super) async fn replicate_streamed(
        &mut self,
        reader: ObjectReader,
    ) -> Result<Outcome, ReplicateError> {
        let ObjectReader { info, mut body } = reader;
        let limit = largest(self.file.kind());
        if info.size > limit {
            return self.refuse_oversized(&info, limit).await;
        }
        let clock = Instant::now();
        let start = self.read_start(&mut body).await?;
        let checked = check_claims(&info).and_then(|claimed| {
            check_content(&self.file, &info, &start).map(|checked| (claimed, checked))
        });
        self.steps.verify_ms = elapsed_ms(clock);
        let staged = match checked {
            Ok((claimed, checked)) => Staged {
                raw_size: info.size,
                sha256: claimed,
                header: checked.header,
                backup: checked.backup,
                history: None,
                staged_at: staged_at(&info),
            },
            Err(problem) => {
                let corrupt = Corrupt {
                    raw_size: info.size,
                    sha256: self.hash_rest(&start, body).await?,
                    staged_at: staged_at(&info),
                    problem,
                };
                return self.record_corrupt(corrupt).await;
            }
        };
        let record = match self.claim(&staged, None).await? {
            Claim::Proceed(record) => record,
            Claim::Done(outcome) => return Ok(outcome),
        };
        let record = match self.write_streamed(&record, &staged, start, body).await? {
            Ok(record) => record,
            Err(outcome) => return Ok(outcome),
        };
        self.finish(&record).await?;
        let packed_size = record.targets.values().map(|t| t.size).max();
        self.count_archived(&staged, packed_size.unwrap_or_default());
        Ok(Outcome::Replicated)
    }

    /// A staging object larger than any file of its kind can be: recorded
    /// `corrupt` with its size, never read, so never retried.
    async fn refuse_oversized(
        &mut self,
        info: &ObjectInfo,
        limit: u64,
    ) -> Result<Outcome, ReplicateError> {
        let problem = format!(
            "{} bytes: larger than any {} can be ({limit} bytes); not read",
            info.size,
            self.file.kind()
        );
        // Not hashed (it may be any size): the digest the shipper claims, if any.
        let sha256 = info.sha256().unwrap_or_else(|| Sha256Hex::of(b""));
        self.record_corrupt(Corrupt {
            raw_size: info.size,
            sha256,
            staged_at: staged_at(info),
            problem,
        })
        .await
    }

    /// Writes every replica the record lacks from the body as it streams
    /// in (`start` is what was read of it already), and records each as it
    /// lands: the record listing every provider, or the error saying which
    /// are missing; or the outcome, if the body turned out corrupt.
    async fn write_streamed(
        &mut self,
        record: &CatalogRecord,
        staged: &Staged,
        start: Bytes,
        body: BodyStream,
    ) -> Result<Result<CatalogRecord, Outcome>, ReplicateError> {
        let clock = Instant::now();
        let mut uploads = Vec::new();
        let mut results = Vec::new();
        for provider in record.missing_targets() {
            match self.begin_upload(provider, record).await {
                Begun::Upload(upload) => uploads.push(upload),
                Begun::Settled(result) => results.push((provider, *result)),
            }
        }
        // Nothing to send when every provider has its replica already.
        let sent = match uploads.is_empty() {
            true => None,
            false => match self.send(&mut uploads, record, staged, start, body).await {
                Ok(sent) => sent,
                Err(e) => {
                    abort_all(&uploads, self.budget).await;
                    return Err(e);
                }
            },
        };
        if let Some(sent) = sent.as_ref().filter(|s| s.sha256 != staged.sha256) {
            abort_all(&uploads, self.budget).await;
            let problem = format!(
                "sha256 of the content is {}, the shipper recorded {}",
                sent.sha256, staged.sha256
            );
            return self.corrupt_after_claim(record, problem).await.map(Err);
        }
        let completions = uploads
            .into_iter()
            .map(|upload| self.complete(upload, record, sent.as_ref()));
        results.extend(join_all(completions).await);
        self.steps.replicate_ms = elapsed_ms(clock);
        self.settle(record, results).await.map(Ok)
    }

    /// The body's first pieces, at least a WAL long header's worth (less
    /// only if the body is shorter).
    async fn read_start(&self, body: &mut BodyStream) -> Result<Bytes, ReplicateError> {
        let mut start = BytesMut::new();
        while start.len() < LONG_HEADER_SIZE {
            match self.next_piece(body).await? {
                Some(piece) => start.extend_from_slice(&piece),
                None => break,
            }
        }
        Ok(start.freeze())
    }

    /// The next piece of the staging body, within the time an attempt has.
    async fn next_piece(&self, body: &mut BodyStream) -> Result<Option<Bytes>, ReplicateError> {
        let limit = self.budget.attempt_limit();
        let staging_error = |source| ReplicateError::Staging {
            file: self.file.to_string(),
            source,
        };
        match tokio::time::timeout(limit, body.next()).await {
            Ok(Some(Ok(piece))) => Ok(Some(piece)),
            Ok(Some(Err(e))) => Err(staging_error(e)),
            Ok(None) => Ok(None),
            Err(_) => Err(staging_error(StoreError::TimedOut(TimedOut {
                what: format!("staging read {}", self.staging_key),
                after: limit,
            }))),
        }
    }

    /// The sha256 of the whole body, of which `start` was read already:
    /// what a corrupt record carries.
    async fn hash_rest(
        &self,
        start: &[u8],
        mut body: BodyStream,
    ) -> Result<Sha256Hex, ReplicateError> {
        let mut hasher = Sha256::new();
        hasher.update(start);
        while let Some(piece) = self.next_piece(&mut body).await? {
            hasher.update(&piece);
        }
        Ok(Sha256Hex::finish(hasher))
    }

    /// Starts `provider`'s upload, unless the provider holds the file
    /// already (recorded now) or holds another (a conflict).
    async fn begin_upload(&self, provider: Provider, record: &CatalogRecord) -> Begun {
        let store = Arc::clone(
            self.replicator
                .backends
                .replicas
                .get(provider)
                .expect("a replicator has every provider's replica"),
        );
        let key = archive_key(&record.cluster, record.file);
        let head = self
            .budget
            .run(format!("{provider} head {key}"), || store.head(&key))
            .await;
        match head {
            Err(StoreError::NotFound { .. }) => {}
            Ok(existing) => {
                return Begun::Settled(Box::new(match existing.sha256() {
                    Some(stored) if &stored == record.replica_tag() => {
                        let put = PutOutcome::AlreadyPresent {
                            etag: existing.etag.clone(),
                            size: existing.size,
                        };
                        self.record_replica(provider, record, key, existing.size, &put, None)
                            .await
                    }
                    stored => Err(ReplicaError::Write(StoreError::different_content(
                        store.name(),
                        &key,
                        stored.as_ref(),
                        record.replica_tag(),
                    ))),
                }))
            }
            Err(e) => return Begun::Settled(Box::new(Err(ReplicaError::Write(e)))),
        }
        let metadata = record.replica_metadata();
        let created = self
            .budget
            .run(format!("{provider} create upload {key}"), || {
                store.create_upload(&key, record.replica_tag(), &metadata)
            })
            .await;
        match created {
            Ok(id) => Begun::Upload(Upload {
                provider,
                store,
                key,
                id,
                parts: Vec::new(),
                failed: None,
            }),
            Err(e) => Begun::Settled(Box::new(Err(ReplicaError::Write(e)))),
        }
    }

    /// Reads, hashes and compresses the body, sending each full part to
    /// every upload still live while the next is compressed; `None` when
    /// every upload failed before the end (reading stops there).
    async fn send(
        &mut self,
        uploads: &mut [Upload],
        record: &CatalogRecord,
        staged: &Staged,
        start: Bytes,
        mut body: BodyStream,
    ) -> Result<Option<Sent>, ReplicateError> {
        let codec_error = |e: std::io::Error| ReplicateError::Compress {
            file: self.file,
            source: CodecError::Compress(e.to_string()),
        };
        // Sealed to the record's keys: every delivery of the file alike.
        let sealing = record.seal.as_ref().map(|seal| &seal.recipients);
        let mut packer = Packer::new(self.replicator.level, sealing, staged).map_err(|source| {
            ReplicateError::Seal {
                file: self.file,
                source,
            }
        })?;
        let mut hasher = Sha256::new();
        let mut stored_hasher = Sha256::new();
        let mut packed_size = 0u64;
        let mut in_flight: Option<PartInFlight> = None;
        let mut number = 0u32;
        let mut next = Some(start);
        loop {
            let piece = match next.take() {
                Some(piece) => piece,
                None => match self.next_piece(&mut body).await? {
                    Some(piece) => piece,
                    None => break,
                },
            };
            hasher.update(&piece);
            packer.write_all(&piece).map_err(codec_error)?;
            while packer.ready() >= PART_SIZE {
                let part = packer.take(PART_SIZE);
                settle_part(&mut in_flight, uploads).await;
                if uploads.iter().all(|u| u.failed.is_some()) {
                    return Ok(None);
                }
                number += 1;
                packed_size += part.len() as u64;
                stored_hasher.update(&part);
                in_flight = Some(send_part(uploads, number, Bytes::from(part), self.budget));
            }
        }
        let last = packer.finish().map_err(codec_error)?;
        settle_part(&mut in_flight, uploads).await;
        number += 1;
        packed_size += last.len() as u64;
        stored_hasher.update(&last);
        in_flight = Some(send_part(uploads, number, Bytes::from(last), self.budget));
        settle_part(&mut in_flight, uploads).await;
        Ok(Some(Sent {
            sha256: Sha256Hex::finish(hasher),
            packed_size,
            stored_sha256: Sha256Hex::finish(stored_hasher),
        }))
    }

    /// Completes one provider's upload and records its replica.
    async fn complete(
        &self,
        upload: Upload,
        record: &CatalogRecord,
        sent: Option<&Sent>,
    ) -> (Provider, Result<CatalogRecord, ReplicaError>) {
        let provider = upload.provider;
        if let Some(e) = upload.failed {
            return (provider, Err(ReplicaError::Write(e)));
        }
        let (store, key) = (&upload.store, &upload.key);
        let completed = self
            .budget
            .run(format!("{provider} complete upload {key}"), || {
                store.complete_upload(key, &upload.id, &upload.parts, record.replica_tag())
            })
            .await;
        let result = match completed {
            Ok(put) => {
                let (size, written) =
                    sent.map_or((0, None), |s| (s.packed_size, Some(&s.stored_sha256)));
                self.record_replica(provider, record, key.clone(), size, &put, written)
                    .await
            }
            Err(e) => {
                abort(&upload, self.budget).await;
                Err(ReplicaError::Write(e))
            }
        };
        (provider, result)
    }

    /// The content read differs from what was claimed after the claim: a
    /// record nothing was replicated under is marked corrupt; one that
    /// lists replicas (an earlier delivery verified the same object) is
    /// left as it is and the delivery fails, to read it again.
    async fn corrupt_after_claim(
        &mut self,
        record: &CatalogRecord,
        problem: String,
    ) -> Result<Outcome, ReplicateError> {
        if !record.targets.is_empty() {
            return Err(ReplicateError::Staging {
                file: self.file.to_string(),
                source: StoreError::Transient {
                    store: "staging".into(),
                    operation: Operation::Get,
                    key: self.staging_key.to_owned(),
                    source: message(format!("{problem}, unlike an earlier read")),
                },
            });
        }
        tracing::error!(file = %self.file, %problem, "CORRUPT staging object: not replicated");
        self.report
            .add(Metric::CorruptInputs, 1.0)
            .property("problem", problem.clone());
        let catalog = &self.replicator.backends.catalog;
        let from = [RecordStatus::Replicating, RecordStatus::Partial];
        self.budget
            .run(format!("catalog mark corrupt {}", self.file), || {
                catalog.set_status(
                    RecordRef::of(record),
                    &from,
                    RecordStatus::Corrupt,
                    Some(&problem),
                    now_millis(),
                )
            })
            .await
            .map_err(|e| self.catalog_error(e))?;
        Ok(Outcome::Corrupt(problem))
    }
}

/// What the body becomes on its way out: zstd, then age when the
/// deployment seals; the output taken a part at a time.
enum Packer {
    Plain(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Sealed(zstd::stream::write::Encoder<'static, Sealer>),
}

impl Packer {
    /// Sealed to `sealing`, if anyone: the record's keys.
    fn new(
        level: CompressionLevel,
        sealing: Option<&Recipients>,
        staged: &Staged,
    ) -> Result<Self, KeyError> {
        let level = level.get();
        let zstd_error = |e: std::io::Error| KeyError::Encrypt(e.to_string());
        Ok(match sealing {
            None => Packer::Plain(
                zstd::stream::write::Encoder::new(Vec::new(), level).map_err(zstd_error)?,
            ),
            Some(to) => Packer::Sealed(
                zstd::stream::write::Encoder::new(Sealer::new(&staged.claims(), to)?, level)
                    .map_err(zstd_error)?,
            ),
        })
    }

    fn write_all(&mut self, piece: &[u8]) -> std::io::Result<()> {
        match self {
            Packer::Plain(encoder) => encoder.write_all(piece),
            Packer::Sealed(encoder) => encoder.write_all(piece),
        }
    }

    /// Output bytes ready to take.
    fn ready(&self) -> usize {
        match self {
            Packer::Plain(encoder) => encoder.get_ref().len(),
            Packer::Sealed(encoder) => encoder.get_ref().ready(),
        }
    }

    /// The first `n` output bytes ready.
    fn take(&mut self, n: usize) -> Vec<u8> {
        match self {
            Packer::Plain(encoder) => {
                let rest = encoder.get_mut().split_off(n);
                std::mem::replace(encoder.get_mut(), rest)
            }
            Packer::Sealed(encoder) => encoder.get_mut().take(n),
        }
    }

    /// Ends the output; what was not taken yet.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Packer::Plain(encoder) => encoder.finish(),
            Packer::Sealed(encoder) => encoder.finish()?.finish(),
        }
    }
}

/// Sends part `number` to every live upload at once; the future owns all
/// it needs, so the next part is compressed meanwhile.
fn send_part(uploads: &[Upload], number: u32, part: Bytes, budget: &Budget) -> PartInFlight {
    let budget = *budget;
    let sends: Vec<_> = uploads
        .iter()
        .enumerate()
        .filter(|(_, u)| u.failed.is_none())
        .map(|(index, u)| {
            let (store, key, id) = (Arc::clone(&u.store), u.key.clone(), u.id.clone());
            let (provider, part) = (u.provider, part.clone());
            async move {
                let sent = budget
                    .run(format!("{provider} part {number} of {key}"), || {
                        store.upload_part(&key, &id, number, part.clone())
                    })
                    .await;
                (index, sent)
            }
        })
        .collect();
    Box::pin(join_all(sends))
}

/// Waits for the part in flight, if any; an upload whose part failed is
/// aborted and goes no further.
async fn settle_part(in_flight: &mut Option<PartInFlight>, uploads: &mut [Upload]) {
    let Some(sending) = in_flight.take() else {
        return;
    };
    for (index, sent) in sending.await {
        let upload = &mut uploads[index];
        match sent {
            Ok(part) => upload.parts.push(part),
            Err(e) => upload.failed = Some(e),
        }
    }
}

/// Drops one upload's parts; a failure only leaves them to the bucket's
/// rule for incomplete uploads.
async fn abort(upload: &Upload, budget: &Budget) {
    let (store, key, id) = (&upload.store, &upload.key, &upload.id);
    let aborted = budget
        .at_most(1)
        .run(format!("{} abort upload {key}", upload.provider), || {
            store.abort_upload(key, id)
        })
        .await;
    if let Err(e) = aborted {
        tracing::warn!(provider = %upload.provider, key = %key, error = %crate::error::chain(&e), "could not abort the upload; its parts stay until the bucket's rule for incomplete uploads");
    }
}

async fn abort_all(uploads: &[Upload], budget: &Budget) {
    join_all(uploads.iter().map(|u| abort(u, budget))).await;
}
