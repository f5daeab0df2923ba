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
use crate::identity::{check_identity, IdentityError};
use crate::keys::{staging_key, ClusterName};
use crate::retry::retry_until;
use crate::store::{Metadata, ObjectStore, PutOutcome, StoreError};
use crate::wal::{HeaderError, NameError, WalFileKind, WalFileName, WalHeader};

/// Metadata the shipper puts on every staging object (besides `sha256`).
pub const META_SIZE: &str = "size";
pub const META_SYSTEM_IDENTIFIER: &str = "system-identifier";
pub const META_PG_VERSION: &str = "pg-version";
pub const META_HOST: &str = "host";

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
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(transparent)]
    NotWalFile(#[from] NameError),
    #[error("{name} is not a valid WAL segment: {source}")]
    BadContent { name: String, source: HeaderError },
    #[error("{name} refused: {source}")]
    WrongCluster { name: String, source: IdentityError },
    #[error(
        "{name} is already archived with different content ({detail}); nothing was overwritten"
    )]
    Conflict { name: String, detail: String },
    #[error("{name}: stores unavailable, gave up after {waited:?}: {detail}")]
    Unavailable {
        name: String,
        waited: Duration,
        detail: String,
    },
    #[error("{name}: {detail}")]
    Failed { name: String, detail: String },
}

pub struct Pusher {
    pub cluster: ClusterName,
    pub staging: Arc<dyn ObjectStore>,
    pub catalog: Arc<dyn Catalog>,
    pub pinned_system_identifier: Option<u64>,
    pub host: String,
    /// Total time one push may spend retrying transient failures.
    pub deadline: Duration,
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
                    tracing::warn!(file = %follower.display(), error = %e, "parallel push failed; PostgreSQL's own call will retry it")
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
        let label = name.to_string();
        let bytes = Bytes::from(read(path).await?);
        let deadline = Instant::now() + self.deadline;
        let mut metadata = Metadata::from([
            (META_SIZE.to_owned(), bytes.len().to_string()),
            (META_HOST.to_owned(), self.host.clone()),
        ]);
        if matches!(name.kind(), WalFileKind::Segment | WalFileKind::Partial) {
            let header =
                WalHeader::parse_file(&name, &bytes).map_err(|source| PushError::BadContent {
                    name: label.clone(),
                    source,
                })?;
            let check = retry_until(deadline, "identity", || async {
                check_identity(
                    self.staging.as_ref(),
                    &self.cluster,
                    self.pinned_system_identifier,
                    &header,
                    &label,
                    &self.host,
                )
                .await
                .map_err(IdentityFailure)
            });
            check.await.map_err(|IdentityFailure(e)| match e {
                IdentityError::Store(e) => self.store_failure(&label, deadline, e),
                other => PushError::WrongCluster {
                    name: label.clone(),
                    source: other,
                },
            })?;
            metadata.insert(
                META_SYSTEM_IDENTIFIER.to_owned(),
                header.system_identifier.to_string(),
            );
            metadata.insert(META_PG_VERSION.to_owned(), header.pg_version.0.to_string());
        }
        let sha = Sha256Hex::of(&bytes);

        // Already archived and removed from staging? The catalog knows.
        if let Some(outcome) = self.check_catalog(&name, &sha, deadline).await? {
            return Ok((outcome, sha));
        }
        let key = staging_key(&self.cluster, &name);
        let put = retry_until(deadline, "staging put", || {
            self.staging
                .put_if_absent(&key, bytes.clone(), &sha, &metadata)
        })
        .await;
        let outcome = match put {
            Ok(PutOutcome::Created { .. }) => PushOutcome::Stored,
            Ok(PutOutcome::AlreadyPresent { .. }) => {
                tracing::warn!(file = %name, "already in staging with the same content");
                PushOutcome::AlreadyStaged
            }
            Err(StoreError::PreconditionFailed { detail, .. }) => {
                return Err(PushError::Conflict {
                    name: label,
                    detail: format!("staging copy differs: {detail}"),
                })
            }
            Err(e) => return Err(self.store_failure(&label, deadline, e)),
        };
        // A different file archived between the catalog check and our put
        // would leave ours a conflict the compress function refuses.
        self.check_catalog(&name, &sha, deadline).await?;
        Ok((outcome, sha))
    }

    /// `Some(AlreadyArchived)` if the catalog holds these bytes, `None` if
    /// it holds nothing, a conflict if it holds other bytes.
    async fn check_catalog(
        &self,
        name: &WalFileName,
        sha: &Sha256Hex,
        deadline: Instant,
    ) -> Result<Option<PushOutcome>, PushError> {
        let record = retry_until(deadline, "catalog get", || {
            self.catalog.get(&self.cluster, name)
        })
        .await
        .map_err(|e| self.catalog_failure(name, deadline, e))?;
        match record {
            None => Ok(None),
            Some(record) if record.status == RecordStatus::Corrupt => Err(PushError::Conflict {
                name: name.to_string(),
                detail: format!(
                    "the compress function found its staging copy corrupt ({}); after investigating, delete the staging object {} and the catalog record",
                    record.detail.unwrap_or_default(),
                    staging_key(&self.cluster, name)
                ),
            }),
            Some(record) if &record.raw_sha256 == sha => {
                tracing::warn!(file = %name, status = %record.status, "already archived with the same content");
                Ok(Some(PushOutcome::AlreadyArchived))
            }
            Some(record) => Err(PushError::Conflict {
                name: name.to_string(),
                detail: format!("archived sha256 {}, this file {sha}", record.raw_sha256),
            }),
        }
    }

    fn store_failure(&self, name: &str, deadline: Instant, e: StoreError) -> PushError {
        self.failure(name, deadline, e.is_retryable(), e.to_string())
    }

    fn catalog_failure(&self, name: &WalFileName, deadline: Instant, e: CatalogError) -> PushError {
        self.failure(&name.to_string(), deadline, e.is_retryable(), e.to_string())
    }

    fn failure(&self, name: &str, deadline: Instant, retryable: bool, detail: String) -> PushError {
        if retryable {
            PushError::Unavailable {
                name: name.to_owned(),
                waited: self
                    .deadline
                    .saturating_sub(deadline.saturating_duration_since(Instant::now())),
                detail,
            }
        } else {
            PushError::Failed {
                name: name.to_owned(),
                detail,
            }
        }
    }
}

/// Lets identity checks retry only on their store errors.
struct IdentityFailure(IdentityError);

impl crate::retry::Transient for IdentityFailure {
    fn is_transient(&self) -> bool {
        matches!(&self.0, IdentityError::Store(e) if e.is_retryable())
    }
}

impl std::fmt::Display for IdentityFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
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
    tokio::fs::read(path).await.map_err(|e| PushError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
