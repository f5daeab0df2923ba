//! `walvault push`: PostgreSQL's archive_command. Exit 0 means the file is
//! durably in the staging bucket (or already archived with the same bytes).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::spool::Spool;
use crate::catalog::{Catalog, CatalogError, RecordStatus};
use crate::codec::Sha256Hex;
use crate::error::Retryable;
use crate::file::ArchivedFile;
use crate::identity::{check_identity, IdentityError};
use crate::keys::{meta, staging_key, ClusterName};
use crate::retry::{Budget, RequestLimits};
use crate::store::{Metadata, ObjectStore, PutOutcome, StoreError};
use crate::wal::{HeaderError, NameError, WalFileKind, WalFileName, WalHeader};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// This call stored the file in staging.
    Stored,
    /// The same bytes were already in staging.
    AlreadyStaged,
    /// The same bytes are already archived (staging copy replicated and gone).
    AlreadyArchived,
    /// An earlier parallel push stored exactly this file.
    PushedEarlier,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    NotWalFile(#[from] NameError),
    #[error("{name} is not a valid WAL segment")]
    BadContent {
        name: WalFileName,
        #[source]
        source: HeaderError,
    },
    #[error("{name} refused")]
    WrongCluster {
        name: WalFileName,
        #[source]
        source: IdentityError,
    },
    #[error(
        "{name} is already archived with different content ({detail}); nothing was overwritten"
    )]
    Conflict { name: WalFileName, detail: String },
    /// The staging bucket failed; [`Retryable::is_permanent`] tells
    /// whether waiting can help.
    #[error("{name}: staging failed after {waited:?}")]
    Store {
        name: WalFileName,
        waited: Duration,
        #[source]
        source: StoreError,
    },
    /// The catalog failed, likewise.
    #[error("{name}: catalog failed after {waited:?}")]
    Catalog {
        name: WalFileName,
        waited: Duration,
        #[source]
        source: CatalogError,
    },
}

impl Retryable for PushError {
    /// Whether PostgreSQL's next call can succeed without a human: only
    /// when a store or the catalog was unavailable.
    fn is_permanent(&self) -> bool {
        match self {
            PushError::Store { source, .. } => source.is_permanent(),
            PushError::Catalog { source, .. } => source.is_permanent(),
            PushError::WrongCluster {
                source: IdentityError::Store(e),
                ..
            } => e.is_permanent(),
            _ => true,
        }
    }
}

pub struct Pusher {
    pub cluster: ClusterName,
    pub staging: Arc<dyn ObjectStore>,
    pub catalog: Arc<dyn Catalog>,
    pub pinned_system_identifier: Option<u64>,
    pub host: String,
    /// Total time one push may spend retrying transient failures.
    pub deadline: Duration,
    pub limits: RequestLimits,
    pub spool: Spool,
    /// Files uploaded at once, the one asked for included.
    pub concurrency: usize,
}

impl Pusher {
    /// Pushes `path`, and with concurrency above 1 also the segments that
    /// follow it in `archive_status/*.ready`, remembering those for
    /// PostgreSQL's next calls. The result is that of `path` alone.
    pub async fn push(self: &Arc<Self>, path: &Path) -> Result<PushOutcome, PushError> {
        let name = file_name(path)?;
        if let Some(marked) = self.spool.take_pushed(&name) {
            let bytes = read(path).await?;
            if Sha256Hex::of(&bytes) == marked {
                return Ok(PushOutcome::PushedEarlier);
            }
            tracing::warn!(file = %name, "a parallel push stored other bytes under this name; pushing again");
        }
        let followers = if self.concurrency > 1 {
            self.ready_followers(path, &name)
        } else {
            Vec::new()
        };
        let mut background = tokio::task::JoinSet::new();
        for follower in followers {
            let pusher = Arc::clone(self);
            background.spawn(async move {
                let result = pusher.push_one(&follower).await;
                (follower, result)
            });
        }
        let ours = self.push_one(path).await;
        while let Some(joined) = background.join_next().await {
            let Ok((follower, result)) = joined else {
                continue;
            };
            match result {
                Ok((_, sha)) => {
                    if let Ok(name) = file_name(&follower) {
                        if let Err(e) = self.spool.mark_pushed(&name, &sha) {
                            tracing::warn!(file = %name, error = %e, "stored, but cannot record it in the spool; PostgreSQL's call will push it again");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %follower.display(), error = %crate::error::chain(&e), "parallel push failed; PostgreSQL's own call will retry it")
                }
            }
        }
        ours.map(|(outcome, _)| outcome)
    }

    /// The segments after `name` that PostgreSQL has marked ready, in WAL
    /// order, up to concurrency − 1 of them.
    fn ready_followers(&self, path: &Path, name: &WalFileName) -> Vec<PathBuf> {
        let WalFileName::Segment(_) = name else {
            return Vec::new();
        };
        let Some(pg_wal) = path.parent() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(pg_wal.join("archive_status")) else {
            return Vec::new();
        };
        let mut ready: Vec<WalFileName> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready")?.parse().ok())
            .filter(|n: &WalFileName| n.kind() == WalFileKind::Segment && n > name)
            .collect();
        ready.sort();
        ready
            .into_iter()
            .take(self.concurrency - 1)
            .map(|n| pg_wal.join(n.to_string()))
            .collect()
    }

    /// Validates and stores one file; returns the outcome and the file's digest.
    pub async fn push_one(&self, path: &Path) -> Result<(PushOutcome, Sha256Hex), PushError> {
        let name = file_name(path)?;
        let bytes = Bytes::from(read(path).await?);
        let push = OnePush {
            pusher: self,
            name,
            started: Instant::now(),
            budget: Budget::until(Instant::now() + self.deadline, self.limits.timeout),
        };
        let metadata = push.check_content(&bytes).await?;
        let sha = Sha256Hex::of(&bytes);
        // Put first, then ask the catalog once: a file archived (and gone
        // from staging) before or during our put shows there, so one
        // question after the put keeps the never-overwrite promise that a
        // question before it could not (two round trips instead of three).
        let staged = push.put(bytes, &sha, &metadata).await?;
        match push.check_catalog(&sha).await? {
            Some(archived) => Ok((archived, sha)),
            None => Ok((staged, sha)),
        }
    }
}

/// One file's push: its name, its budget, and when it started.
struct OnePush<'a> {
    pusher: &'a Pusher,
    name: WalFileName,
    started: Instant,
    budget: Budget,
}

impl OnePush<'_> {
    /// Checks a segment's header and cluster identity; returns the
    /// metadata the staging object carries.
    async fn check_content(&self, bytes: &Bytes) -> Result<Metadata, PushError> {
        let pusher = self.pusher;
        let mut metadata = Metadata::from([
            (meta::SIZE.to_owned(), bytes.len().to_string()),
            (meta::HOST.to_owned(), pusher.host.clone()),
        ]);
        if !matches!(
            self.name.kind(),
            WalFileKind::Segment | WalFileKind::Partial
        ) {
            return Ok(metadata);
        }
        let header =
            WalHeader::parse_file(&self.name, bytes).map_err(|source| PushError::BadContent {
                name: self.name,
                source,
            })?;
        self.check_identity(&header).await?;
        metadata.insert(
            meta::SYSTEM_IDENTIFIER.to_owned(),
            header.system_identifier.to_string(),
        );
        metadata.insert(meta::PG_VERSION.to_owned(), header.pg_version.0.to_string());
        Ok(metadata)
    }

    /// Checks the segment's system identifier against the cluster's,
    /// from the spool when this host already confirmed it, else from
    /// staging (a mismatch with the remembered one is re-read: the
    /// identity object is the authority).
    async fn check_identity(&self, header: &WalHeader) -> Result<(), PushError> {
        let pusher = self.pusher;
        if pusher.pinned_system_identifier.is_none()
            && pusher.spool.known_identity(&pusher.cluster) == Some(header.system_identifier)
        {
            return Ok(());
        }
        let label = self.name.to_string();
        let confirmed = self
            .budget
            .run("identity", || {
                check_identity(
                    pusher.staging.as_ref(),
                    &pusher.cluster,
                    pusher.pinned_system_identifier,
                    header,
                    &label,
                    &pusher.host,
                )
            })
            .await
            .map_err(|e| match e {
                IdentityError::Store(source) => self.store_failure(source),
                other => PushError::WrongCluster {
                    name: self.name,
                    source: other,
                },
            })?;
        if let Err(e) = pusher.spool.remember_identity(&pusher.cluster, confirmed) {
            tracing::warn!(error = %e, "cannot remember the cluster identity in the spool; the next push asks staging again");
        }
        Ok(())
    }

    async fn put(
        &self,
        bytes: Bytes,
        sha: &Sha256Hex,
        metadata: &Metadata,
    ) -> Result<PushOutcome, PushError> {
        let key = staging_key(&self.pusher.cluster, self.name);
        let staging = &self.pusher.staging;
        let put = self
            .budget
            .run(format!("staging put {key}"), || {
                staging.put_if_absent(&key, bytes.clone(), sha, metadata)
            })
            .await;
        match put {
            Ok(PutOutcome::Created { .. }) => Ok(PushOutcome::Stored),
            Ok(PutOutcome::AlreadyPresent { .. }) => {
                tracing::warn!(file = %self.name, "already in staging with the same content");
                Ok(PushOutcome::AlreadyStaged)
            }
            Err(StoreError::PreconditionFailed { detail, .. }) => Err(PushError::Conflict {
                name: self.name,
                detail: format!("staging copy differs: {detail}"),
            }),
            Err(e) => Err(self.store_failure(e)),
        }
    }

    /// `Some(AlreadyArchived)` if the catalog holds these bytes, `None` if
    /// it holds nothing, a conflict if it holds other bytes.
    async fn check_catalog(&self, sha: &Sha256Hex) -> Result<Option<PushOutcome>, PushError> {
        let (catalog, cluster, name) = (&self.pusher.catalog, &self.pusher.cluster, &self.name);
        let file = ArchivedFile::Wal(*name);
        let record = self
            .budget
            .run(format!("catalog get {name}"), || {
                catalog.get(cluster, &file)
            })
            .await
            .map_err(|source| PushError::Catalog {
                name: *name,
                waited: self.started.elapsed(),
                source,
            })?;
        match record {
            None => Ok(None),
            Some(record) if record.status == RecordStatus::Corrupt => Err(PushError::Conflict {
                name: *name,
                detail: format!(
                    "the compress function found its staging copy corrupt ({}); after investigating, delete the staging object {} and the catalog record",
                    record.detail.unwrap_or_default(),
                    staging_key(cluster, name)
                ),
            }),
            Some(record) if &record.raw_sha256 == sha => {
                tracing::warn!(file = %name, status = %record.status, "already archived with the same content");
                Ok(Some(PushOutcome::AlreadyArchived))
            }
            Some(record) => Err(PushError::Conflict {
                name: *name,
                detail: format!("archived sha256 {}, this file {sha}", record.raw_sha256),
            }),
        }
    }

    fn store_failure(&self, source: StoreError) -> PushError {
        PushError::Store {
            name: self.name,
            waited: self.started.elapsed(),
            source,
        }
    }
}

fn file_name(path: &Path) -> Result<WalFileName, PushError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    Ok(name.parse()?)
}

async fn read(path: &Path) -> Result<Vec<u8>, PushError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| PushError::Read {
            path: path.to_owned(),
            source,
        })
}
