//! `walvault fetch`: PostgreSQL's restore_command. Finds a file through the
//! catalog, fetches it from the first provider with a verified copy, and
//! only ever hands back bytes whose size and sha256 check out.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::catalog::{Catalog, CatalogRecord, RecordStatus};
use crate::codec::{self, Sha256Hex};
use crate::config::Provider;
use crate::keys::{archive_key, staging_key, ClusterName};
use crate::store::{Object, ObjectStore, StoreError};
use crate::wal::{WalFileName, MAX_SEGMENT_SIZE};

use super::META_RAW_SIZE;

/// Where a verified copy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Replica(Provider),
    Staging,
    Prefetched,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Replica(p) => write!(f, "{p}"),
            Source::Staging => f.write_str("staging"),
            Source::Prefetched => f.write_str("prefetch"),
        }
    }
}

#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub source: Source,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Every store answered "not found" and the catalog has no record.
    #[error("{0} is not in the archive")]
    NotFound(String),
    /// A store (or the catalog) failed, and no verified copy was found:
    /// the file may exist, so recovery must not end here.
    #[error("{name}: no verified copy, and stores failed: {}", errors.join("; "))]
    StoreErrors { name: String, errors: Vec<String> },
    /// Copies exist but none verifies, or the catalog lists the file and
    /// no store has it.
    #[error("{name}: no verified copy: {}", problems.join("; "))]
    NoVerifiedCopy { name: String, problems: Vec<String> },
    /// Two stores hold different, each self-consistent, copies.
    #[error("{name}: replicas disagree: {detail}")]
    Disagreement { name: String, detail: String },
}

/// A replica store and which provider it is.
pub struct Replica {
    pub provider: Provider,
    pub store: Arc<dyn ObjectStore>,
}

pub struct Fetcher {
    pub cluster: ClusterName,
    pub catalog: Arc<dyn Catalog>,
    pub staging: Arc<dyn ObjectStore>,
    /// In the configured fetch order.
    pub replicas: Vec<Replica>,
    requests: AtomicU32,
}

/// What a copy must decompress or hash to.
#[derive(Debug, Clone)]
struct Expected {
    size: u64,
    sha256: Sha256Hex,
}

/// One place a copy may be.
struct Candidate<'a> {
    source: Source,
    store: &'a dyn ObjectStore,
    key: String,
    compressed: bool,
    /// From the catalog; `None` means trust the object's own metadata.
    expected: Option<Expected>,
}

impl Fetcher {
    pub fn new(
        cluster: ClusterName,
        catalog: Arc<dyn Catalog>,
        staging: Arc<dyn ObjectStore>,
        replicas: Vec<Replica>,
    ) -> Self {
        Fetcher {
            cluster,
            catalog,
            staging,
            replicas,
            requests: AtomicU32::new(0),
        }
    }

    /// Requests made to stores and the catalog so far.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    pub async fn fetch(&self, name: &WalFileName) -> Result<Fetched, FetchError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let lookup = self.catalog.get(&self.cluster, name).await;
        let (candidates, listed, catalog_error) = match lookup {
            Ok(Some(record)) => {
                if record.status == RecordStatus::Corrupt {
                    return Err(FetchError::NoVerifiedCopy {
                        name: name.to_string(),
                        problems: vec![format!(
                            "the catalog marks it corrupt: {}",
                            record.detail.unwrap_or_default()
                        )],
                    });
                }
                (self.candidates_from_record(&record), true, None)
            }
            // Not yet replicated (or never pushed): only staging can have it.
            Ok(None) => (vec![self.staging_candidate(name, None)], false, None),
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "catalog unavailable; looking in the stores directly");
                (self.candidates_by_layout(name), false, Some(e.to_string()))
            }
        };

        let mut errors: Vec<String> = catalog_error.into_iter().collect();
        let mut corrupt = Vec::new();
        for candidate in &candidates {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let object = match candidate.store.get(&candidate.key).await {
                Ok(object) => object,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => {
                    tracing::warn!(file = %name, source = %candidate.source, error = %e, "store failed; trying the next");
                    errors.push(e.to_string());
                    continue;
                }
            };
            match verify(candidate, &object) {
                Ok((bytes, sha256)) => {
                    if candidate.expected.is_none() {
                        self.check_agreement(name, candidate, &sha256, &candidates)
                            .await?;
                    }
                    return Ok(Fetched {
                        bytes,
                        source: candidate.source,
                    });
                }
                Err(problem) => {
                    tracing::error!(file = %name, source = %candidate.source, key = %candidate.key, problem = %problem, "CORRUPT copy; trying the next");
                    corrupt.push(format!("{} copy corrupt: {problem}", candidate.source));
                }
            }
        }
        let name = name.to_string();
        if !errors.is_empty() {
            errors.extend(corrupt);
            Err(FetchError::StoreErrors { name, errors })
        } else if !corrupt.is_empty() {
            Err(FetchError::NoVerifiedCopy {
                name,
                problems: corrupt,
            })
        } else if listed {
            Err(FetchError::NoVerifiedCopy {
                name,
                problems: vec!["the catalog lists it as archived but no store has it".into()],
            })
        } else {
            Err(FetchError::NotFound(name))
        }
    }

    fn candidates_from_record(&self, record: &CatalogRecord) -> Vec<Candidate<'_>> {
        let expected = Expected {
            size: record.raw_size,
            sha256: record.raw_sha256.clone(),
        };
        let mut candidates: Vec<Candidate<'_>> = self
            .replicas
            .iter()
            .filter_map(|replica| {
                let target = record.target(replica.provider)?;
                Some(Candidate {
                    source: Source::Replica(replica.provider),
                    store: replica.store.as_ref(),
                    key: target.key.clone(),
                    compressed: true,
                    expected: Some(expected.clone()),
                })
            })
            .collect();
        // Until both replicas are confirmed the raw copy stays in staging.
        if record.status != RecordStatus::Replicated {
            candidates.push(self.staging_candidate(&record.file, Some(expected)));
        }
        candidates
    }

    fn candidates_by_layout(&self, name: &WalFileName) -> Vec<Candidate<'_>> {
        let mut candidates: Vec<Candidate<'_>> = self
            .replicas
            .iter()
            .map(|replica| Candidate {
                source: Source::Replica(replica.provider),
                store: replica.store.as_ref(),
                key: archive_key(&self.cluster, name),
                compressed: true,
                expected: None,
            })
            .collect();
        candidates.push(self.staging_candidate(name, None));
        candidates
    }

    fn staging_candidate(&self, name: &WalFileName, expected: Option<Expected>) -> Candidate<'_> {
        Candidate {
            source: Source::Staging,
            store: self.staging.as_ref(),
            key: staging_key(&self.cluster, name),
            compressed: false,
            expected,
        }
    }

    /// Without the catalog, each copy vouches only for itself: make sure no
    /// other replica holds a different one before trusting it.
    async fn check_agreement(
        &self,
        name: &WalFileName,
        chosen: &Candidate<'_>,
        sha256: &Sha256Hex,
        all: &[Candidate<'_>],
    ) -> Result<(), FetchError> {
        for other in all
            .iter()
            .filter(|c| c.source != chosen.source && c.compressed)
        {
            self.requests.fetch_add(1, Ordering::Relaxed);
            if let Ok(info) = other.store.head(&other.key).await {
                if let Some(theirs) = info.sha256() {
                    if &theirs != sha256 {
                        return Err(FetchError::Disagreement {
                            name: name.to_string(),
                            detail: format!(
                                "{} has sha256 {sha256}, {} has {theirs}",
                                chosen.source, other.source
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks a fetched object; returns the raw bytes and their digest.
fn verify(candidate: &Candidate<'_>, object: &Object) -> Result<(Vec<u8>, Sha256Hex), String> {
    let expected = match &candidate.expected {
        Some(expected) => expected.clone(),
        None => {
            let sha256 = object.info.sha256().ok_or("no sha256 metadata")?;
            let size = if candidate.compressed {
                object
                    .info
                    .metadata
                    .get(META_RAW_SIZE)
                    .and_then(|s| s.parse().ok())
                    .ok_or("no raw-size metadata")?
            } else {
                object.info.size
            };
            Expected { size, sha256 }
        }
    };
    if expected.size > MAX_SEGMENT_SIZE {
        return Err(format!(
            "claims {} bytes, more than any WAL file",
            expected.size
        ));
    }
    let raw = if candidate.compressed {
        codec::decompress_verified(&object.body, expected.size, &expected.sha256)
            .map_err(|e| e.to_string())?
    } else {
        let raw = object.body.to_vec();
        codec::verify(&raw, expected.size, &expected.sha256).map_err(|e| e.to_string())?;
        raw
    };
    Ok((raw, expected.sha256))
}
