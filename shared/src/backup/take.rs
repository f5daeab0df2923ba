//! `walvault backup`: a base backup streamed from `pg_basebackup` into
//! fixed-size chunks in the staging bucket, then a descriptor. The host
//! keeps its rights (write to staging, read the catalog); the compress
//! function compresses, replicates and records the parts like WAL.
//!
//! Nothing is held but the chunks in flight: memory is at most
//! (concurrency + 1) × chunk size. The descriptor is written only when the
//! stream was a complete tar archive of this cluster, `pg_basebackup`
//! succeeded, and the WAL the backup needs to become consistent is in the
//! archive: a backup without its descriptor never looks complete, and the
//! retention sweep removes its chunks after a while.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::descriptor::{
    system_identifier_of_control, BackupDescriptor, BackupLabel, ChunkEntry, DescriptorError,
    ManifestFacts, DESCRIPTOR_FORMAT,
};
use super::name::{BackupFile, BackupId, MAX_CHUNKS};
use super::tar::{TarError, TarScanner};
use crate::catalog::{Catalog, CatalogError};
use crate::clock::now_millis;
use crate::codec::Sha256Hex;
use crate::error::Retryable;
use crate::file::ArchivedFile;
use crate::identity::{recorded_identity, IdentityError};
use crate::keys::{meta, staging_key, ClusterName};
use crate::retry::{Budget, RequestLimits};
use crate::store::{Metadata, ObjectStore, PutOutcome, StoreError};
use crate::wal::{Lsn, Segment, SegmentSize, WalFileName, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};

/// How often the WAL the backup needs is looked for.
const WAL_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("reading the base backup stream")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("the stream ended before the end of its tar archive: the base backup did not finish")]
    Truncated,
    #[error("the stream has no {0}: not the tar stream of `pg_basebackup -D - -Ft` with a manifest (PostgreSQL 13 or later)")]
    MissingMember(&'static str),
    #[error("the cluster has tablespaces outside the data directory ({}): walvault backs up the data directory alone, and refuses rather than skip them", .0.join(", "))]
    Tablespaces(Vec<String>),
    #[error(transparent)]
    Facts(#[from] DescriptorError),
    #[error("the backup is of another PostgreSQL cluster: its system identifier is {found}, cluster {cluster}'s is {expected}")]
    WrongCluster {
        cluster: String,
        expected: u64,
        found: u64,
    },
    #[error("no segment of cluster {0} was ever archived: set archive_mode = on and archive_command = 'walvault push %p' first; a base backup without its WAL restores nothing")]
    NoArchiving(String),
    #[error("the WAL this backup needs ({segment}) was not archived within {waited:?}: is archiving working? (from a standby, the primary must switch segments: set archive_timeout)")]
    WalNotArchived {
        segment: WalFileName,
        waited: Duration,
    },
    #[error("the backup is larger than {MAX_CHUNKS} chunks: raise WALVAULT_BACKUP_CHUNK_MIB")]
    TooManyChunks,
    #[error("backup {0} already has parts in staging (another backup started in the same second): run it again")]
    Exists(BackupId),
    #[error("{what}: staging failed")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    #[error("catalog failed")]
    Catalog(#[source] CatalogError),
    #[error("reading the cluster identity")]
    Identity(#[source] IdentityError),
}

impl Retryable for BackupError {
    /// Whether running the backup again later can succeed without a change.
    fn is_permanent(&self) -> bool {
        match self {
            BackupError::Store { source, .. } => source.is_permanent(),
            BackupError::Catalog(source) => source.is_permanent(),
            BackupError::Identity(source) => source.is_permanent(),
            BackupError::Exists(_) | BackupError::WalNotArchived { .. } => false,
            _ => true,
        }
    }
}

/// What a backup needs from the host's configuration.
pub struct BackupTaker {
    pub cluster: ClusterName,
    pub staging: Arc<dyn ObjectStore>,
    pub catalog: Arc<dyn Catalog>,
    pub pinned_system_identifier: Option<u64>,
    pub host: String,
    pub limits: RequestLimits,
    /// How long one chunk's upload may keep retrying transient failures.
    pub chunk_deadline: Duration,
    pub chunk_size: usize,
    /// Chunks uploaded at once.
    pub concurrency: usize,
    /// How long to wait for the WAL the backup needs to reach the archive.
    pub wal_wait: Duration,
}

/// The stream, uploaded: what the descriptor needs from it.
pub struct Streamed {
    pub chunks: Vec<ChunkEntry>,
    pub size: u64,
    scanner: TarScanner,
}

impl BackupTaker {
    /// Uploads `source` (a `pg_basebackup -D - -Ft` stream) as the chunks of
    /// backup `id`; `progress` hears the bytes read so far.
    pub async fn stream<R>(
        &self,
        id: BackupId,
        mut source: R,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Streamed, BackupError>
    where
        R: AsyncRead + Unpin,
    {
        let mut scanner = TarScanner::default();
        let mut uploads = tokio::task::JoinSet::new();
        let mut chunks: Vec<Option<ChunkEntry>> = Vec::new();
        let mut size = 0u64;
        loop {
            let chunk = read_chunk(&mut source, self.chunk_size)
                .await
                .map_err(BackupError::Read)?;
            if chunk.is_empty() {
                break;
            }
            let index = u32::try_from(chunks.len())
                .ok()
                .filter(|i| *i < MAX_CHUNKS)
                .ok_or(BackupError::TooManyChunks)?;
            scanner.feed(&chunk)?;
            size += chunk.len() as u64;
            progress(size);
            chunks.push(None);
            while uploads.len() >= self.concurrency.max(1) {
                self.finish_one(&mut uploads, &mut chunks, id).await?;
            }
            // Hashed in the upload's task: the next chunk is read meanwhile.
            let uploader = self.uploader(BackupFile::chunk(id, index));
            uploads.spawn(async move {
                let entry = ChunkEntry {
                    size: chunk.len() as u64,
                    sha256: Sha256Hex::of(&chunk),
                };
                let sha256 = entry.sha256.clone();
                (index, entry, uploader.put(chunk, sha256).await)
            });
        }
        while !uploads.is_empty() {
            self.finish_one(&mut uploads, &mut chunks, id).await?;
        }
        if !scanner.finished() {
            return Err(BackupError::Truncated);
        }
        if !scanner.tablespace_links.is_empty() {
            return Err(BackupError::Tablespaces(scanner.tablespace_links.clone()));
        }
        Ok(Streamed {
            chunks: chunks.into_iter().flatten().collect(),
            size,
            scanner,
        })
    }

    async fn finish_one(
        &self,
        uploads: &mut tokio::task::JoinSet<(u32, ChunkEntry, Result<PutOutcome, BackupError>)>,
        chunks: &mut [Option<ChunkEntry>],
        id: BackupId,
    ) -> Result<(), BackupError> {
        let Some(joined) = uploads.join_next().await else {
            return Ok(());
        };
        let (index, entry, outcome) = joined.map_err(|e| BackupError::Store {
            what: format!("chunk upload task: {e}"),
            source: StoreError::Transient {
                store: "staging".into(),
                operation: crate::store::Operation::Put,
                key: String::new(),
                source: crate::error::message("the upload task ended abnormally"),
            },
        })?;
        match outcome {
            // Chunk 0 written before by another backup of the same second.
            Err(BackupError::Store {
                source: StoreError::PreconditionFailed { .. },
                ..
            }) => Err(BackupError::Exists(id)),
            Err(e) => Err(e),
            Ok(_) => {
                chunks[index as usize] = Some(entry);
                Ok(())
            }
        }
    }

    /// The upload of one part, retried until the chunk deadline.
    fn uploader(&self, file: BackupFile) -> Uploader {
        Uploader {
            staging: Arc::clone(&self.staging),
            key: staging_key(&self.cluster, file),
            file,
            host: self.host.clone(),
            budget: Budget::until(Instant::now() + self.chunk_deadline, self.limits.timeout),
        }
    }

    /// Checks the streamed backup against the cluster and the archive and
    /// writes its descriptor: the backup then exists.
    pub async fn finish(
        &self,
        id: BackupId,
        streamed: Streamed,
        started_at_ms: u64,
    ) -> Result<BackupDescriptor, BackupError> {
        let member = |name: &'static str| {
            streamed
                .scanner
                .members
                .get(name)
                .ok_or(BackupError::MissingMember(name))
        };
        let label = BackupLabel::parse(&String::from_utf8_lossy(member("backup_label")?))?;
        let manifest = ManifestFacts::parse(member("backup_manifest")?)?;
        let system_identifier = system_identifier_of_control(member("global/pg_control")?)?;
        let pg_version: u32 = String::from_utf8_lossy(member("PG_VERSION")?)
            .trim()
            .parse()
            .map_err(|_| DescriptorError::Control("PG_VERSION is not a number".into()))?;
        self.check_identity(system_identifier).await?;
        let segment_size = segment_size_of(&label)?;
        let (stop_timeline, stop_lsn) = manifest.stop();
        let stop_segment = stop_lsn
            .segment(stop_timeline, segment_size)
            .map_err(|e| DescriptorError::Manifest(e.to_string()))?;
        self.wait_for_wal(stop_segment).await?;
        let descriptor = BackupDescriptor {
            format: DESCRIPTOR_FORMAT,
            id: id.to_string(),
            cluster: self.cluster.to_string(),
            system_identifier: system_identifier.to_string(),
            pg_version,
            segment_size: segment_size.bytes(),
            start_timeline: label.start_timeline,
            start_lsn: label.start_lsn.to_string(),
            start_segment: label.start_segment.to_string(),
            stop_timeline,
            stop_lsn: stop_lsn.to_string(),
            from_standby: label.from_standby,
            started_at_ms,
            stopped_at_ms: now_millis(),
            size: streamed.size,
            chunk_size: self.chunk_size as u64,
            chunks: streamed.chunks,
            manifest_checksum: manifest.checksum,
            label: label.label,
            host: self.host.clone(),
        };
        descriptor.summary()?;
        let body = Bytes::from(descriptor.to_json());
        let sha = Sha256Hex::of(&body);
        self.uploader(BackupFile::descriptor(id))
            .put(body, sha)
            .await
            .map_err(|e| match e {
                BackupError::Store {
                    source: StoreError::PreconditionFailed { .. },
                    ..
                } => BackupError::Exists(id),
                other => other,
            })?;
        Ok(descriptor)
    }

    async fn check_identity(&self, found: u64) -> Result<(), BackupError> {
        let expected = match self.pinned_system_identifier {
            Some(pinned) => pinned,
            None => {
                let recorded = self
                    .limits
                    .one_request()
                    .run("identity", || {
                        recorded_identity(self.staging.as_ref(), &self.cluster)
                    })
                    .await
                    .map_err(BackupError::Identity)?;
                match recorded {
                    Some(identity) => identity
                        .system_identifier()
                        .map_err(BackupError::Identity)?,
                    None => return Err(BackupError::NoArchiving(self.cluster.to_string())),
                }
            }
        };
        if expected == found {
            Ok(())
        } else {
            Err(BackupError::WrongCluster {
                cluster: self.cluster.to_string(),
                expected,
                found,
            })
        }
    }

    /// Waits until the segment holding the stop point is in the archive
    /// (staging or the catalog): only then can the backup be restored.
    async fn wait_for_wal(&self, segment: Segment) -> Result<(), BackupError> {
        let name = WalFileName::Segment(segment);
        let file = ArchivedFile::Wal(name);
        let key = staging_key(&self.cluster, name);
        let started = Instant::now();
        loop {
            let staged = self
                .limits
                .one_request()
                .run(format!("staging head {key}"), || self.staging.head(&key))
                .await;
            match staged {
                Ok(_) => return Ok(()),
                Err(e) if e.is_not_found() => {}
                Err(source) => {
                    return Err(BackupError::Store {
                        what: format!("looking for {name}"),
                        source,
                    })
                }
            }
            let recorded = self
                .limits
                .one_request()
                .run(format!("catalog get {name}"), || {
                    self.catalog.get(&self.cluster, &file)
                })
                .await
                .map_err(BackupError::Catalog)?;
            if recorded.is_some() {
                return Ok(());
            }
            if started.elapsed() >= self.wal_wait {
                return Err(BackupError::WalNotArchived {
                    segment: name,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(WAL_POLL.min(self.wal_wait)).await;
        }
    }
}

/// One part's upload to staging.
struct Uploader {
    staging: Arc<dyn ObjectStore>,
    key: String,
    file: BackupFile,
    host: String,
    budget: Budget,
}

impl Uploader {
    async fn put(self, body: Bytes, sha256: Sha256Hex) -> Result<PutOutcome, BackupError> {
        let metadata = Metadata::from([
            (meta::SIZE.to_owned(), body.len().to_string()),
            (meta::HOST.to_owned(), self.host.clone()),
        ]);
        self.budget
            .run(format!("staging put {}", self.key), || {
                self.staging
                    .put_if_absent(&self.key, body.clone(), &sha256, &metadata)
            })
            .await
            .map_err(|source| BackupError::Store {
                what: format!("put {}", self.file),
                source,
            })
    }
}

/// Reads up to `size` bytes: a full chunk, or what is left at the end.
async fn read_chunk<R: AsyncRead + Unpin>(source: &mut R, size: usize) -> std::io::Result<Bytes> {
    let mut chunk = BytesMut::with_capacity(size);
    while chunk.len() < size {
        let read = source.read_buf(&mut (&mut chunk).limit(size)).await?;
        if read == 0 {
            break;
        }
    }
    Ok(chunk.freeze())
}

/// The segment size, from the start position and the start file the label
/// names together (the file is the position divided by the segment size).
fn segment_size_of(label: &BackupLabel) -> Result<SegmentSize, DescriptorError> {
    let candidates: Vec<SegmentSize> = (0..=10)
        .map(|shift| MIN_SEGMENT_SIZE << shift)
        .take_while(|bytes| *bytes <= MAX_SEGMENT_SIZE)
        .filter_map(|bytes| SegmentSize::new(bytes).ok())
        .filter(|size| {
            Lsn(label.start_lsn.0)
                .segment(label.start_timeline, *size)
                .is_ok_and(|s| s == label.start_segment)
        })
        .collect();
    match candidates.as_slice() {
        [size] => Ok(*size),
        _ => Err(DescriptorError::Label(format!(
            "the segment size does not follow from START WAL LOCATION {} (file {})",
            label.start_lsn, label.start_segment
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segment_size_follows_from_the_label() {
        let label = |lsn: &str, file: &str| BackupLabel {
            start_lsn: lsn.parse().unwrap(),
            start_segment: match file.parse::<WalFileName>().unwrap() {
                WalFileName::Segment(s) => s,
                _ => unreachable!(),
            },
            start_timeline: 1,
            from_standby: false,
            label: String::new(),
        };
        let default = label("0/2000028", "000000010000000000000002");
        assert_eq!(segment_size_of(&default).unwrap(), SegmentSize::DEFAULT);
        let big = label("0/40000028", "000000010000000000000001");
        assert_eq!(segment_size_of(&big).unwrap().bytes(), 1 << 30);
        assert!(segment_size_of(&label("0/2000028", "000000010000000000000009")).is_err());
    }
}
