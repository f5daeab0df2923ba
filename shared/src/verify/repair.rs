//! `verify --repair`: a replica found missing or damaged gets a copy from a
//! provider whose copy is verified (downloaded, decompressed, sha256
//! checked) just before; the copy is written through the same rules as
//! the compress function (put-if-absent; over a damaged object, only while
//! that object's ETag is the one found), read back verified, then recorded.
//! Nothing is deleted, and no object the catalog does not know is
//! overwritten.

use std::sync::Arc;

use bytes::Bytes;

use crate::backends::Replicas;
use crate::catalog::{
    mark_replicated, Catalog, CatalogError, CatalogRecord, RecordRef, RecordStatus, TargetState,
};
use crate::clock::now_millis;
use crate::codec::{verify_stored, CodecError, Sha256Hex};
use crate::error::chain;
use crate::provider::Provider;
use crate::seal::{self, OpenError};
use crate::store::{ObjectInfo, ObjectStore, PutOutcome, StoreError};

use crate::archive::download::DownloadError;

use super::check::{replica_key, Checker};
use super::report::{Problem, Repair};

/// The largest replica repaired, held in memory: a base-backup chunk's
/// most. A larger one (a WAL segment over 64 MiB compressed) is reported,
/// not repaired.
const REPAIR_LIMIT: u64 = 64 << 20;

/// The configured keys or the catalog refused a write: every other repair
/// would be refused the same way, so repairs stop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoWriteAccess(pub String);

pub(super) struct Repairer<'a> {
    pub checker: &'a Checker,
    pub replicas: &'a Replicas,
    pub catalog: &'a Arc<dyn Catalog>,
}

impl Repairer<'_> {
    /// Repairs `provider`'s copy of `record`, found with `problem` (and the
    /// object `found` there, if any), from one of `sources`: providers
    /// whose copy passed the check, with the stored size found there.
    pub(super) async fn repair(
        &self,
        record: &CatalogRecord,
        provider: Provider,
        problem: &Problem,
        found: Option<&ObjectInfo>,
        sources: &[(Provider, u64)],
    ) -> Result<Repair, NoWriteAccess> {
        let Some(store) = self.replicas.get(provider) else {
            return Ok(failed(format!("no {provider} replica is configured")));
        };
        let key = replica_key(record, provider);
        // An object whose metadata is this file's but whose size, ETag or
        // record is not what the catalog says may still be good (written
        // again by a retried delivery; its record lost): read it first,
        // and keep it if it is.
        if let (Some(info), false) = (found, matches!(problem, Problem::Corrupt { .. })) {
            match self
                .checker
                .download_verified(record, provider, store.as_ref(), &key, None)
                .await
            {
                Ok(_) => return self.record(record, provider, key, info, None).await,
                // Maybe good, and no key to tell: never written over.
                Err(DownloadError::Corrupt(CodecError::Sealed(OpenError::Locked))) => {
                    return Ok(failed(format!(
                        "the copy found is sealed to {} and no configured identity opens it",
                        seal::listed(record.sealed_to())
                    )))
                }
                Err(DownloadError::Corrupt(_)) => {}
                Err(e) => return Ok(failed(format!("reading the copy found: {}", chain(&e)))),
            }
        }
        if !self.still_archived(record).await {
            return Ok(Repair::Gone);
        }
        let copy = match self.verified_copy(record, sources).await {
            Ok(copy) => copy,
            Err(reason) => return Ok(failed(reason)),
        };
        let metadata = record.replica_metadata();
        let written = match found {
            None => self
                .checker
                .budget()
                .run(format!("{provider} put {key}"), || {
                    store.put_if_absent(&key, copy.body.clone(), record.replica_tag(), &metadata)
                })
                .await
                .map(|put| matches!(put, PutOutcome::Created { .. })),
            Some(ObjectInfo { etag: None, .. }) => {
                return Ok(failed(format!(
                    "{provider} gives no ETag for the object found, so it cannot be replaced conditionally"
                )))
            }
            Some(ObjectInfo {
                etag: Some(replaced),
                ..
            }) => self
                .checker
                .budget()
                .run(format!("{provider} replace {key}"), || {
                    store.put_replacing(
                        &key,
                        copy.body.clone(),
                        record.replica_tag(),
                        &metadata,
                        replaced,
                    )
                })
                .await
                .map(|_| true),
        };
        // Whether the object there now holds `copy`'s bytes, for certain.
        let wrote = match written {
            Ok(created) => created,
            // Another object is there now (another repair, a retried write
            // whose first answer was lost): what is there is read back below.
            Err(StoreError::PreconditionFailed { .. }) => false,
            // A create refused is the keys' rights; a replacement refused
            // may be this one object's lock (R2 bucket locks).
            Err(e @ (StoreError::Refused { .. } | StoreError::Unauthorized { .. }))
                if found.is_none() =>
            {
                return Err(no_write_access(provider.as_str(), &e))
            }
            Err(e) => return Ok(failed(format!("writing the copy: {}", chain(&e)))),
        };
        let read_back = match self.checker.identities.is_empty() && seal::is_sealed(&copy.body) {
            true => self.read_back_same(store.as_ref(), &key, &copy.body).await,
            false => {
                self.checker
                    .download_verified(record, provider, store.as_ref(), &key, None)
                    .await
            }
        };
        let info = match read_back {
            Ok(info) => info,
            Err(e) => return Ok(failed(format!("the copy read back: {}", chain(&e)))),
        };
        let written = wrote.then(|| Sha256Hex::of(&copy.body));
        match self.record(record, provider, key, &info, written).await? {
            Repair::Recorded => Ok(Repair::Repaired { from: copy.from }),
            other => Ok(other),
        }
    }

    /// The object under `key`, if it holds exactly `written`: how a sealed
    /// copy written without a key to open it is read back.
    async fn read_back_same(
        &self,
        store: &dyn ObjectStore,
        key: &str,
        written: &[u8],
    ) -> Result<ObjectInfo, DownloadError> {
        let object = self
            .checker
            .budget()
            .run(format!("get {key}"), || store.get(key))
            .await?;
        if object.body.as_ref() != written {
            return Err(DownloadError::Corrupt(CodecError::DigestMismatch {
                expected: Sha256Hex::of(written),
                actual: Sha256Hex::of(&object.body),
            }));
        }
        Ok(object.info)
    }

    /// Whether the catalog still lists the file: the retention sweep
    /// deletes a file's replicas before its record, and a copy put back
    /// in between would be left behind.
    async fn still_archived(&self, record: &CatalogRecord) -> bool {
        // Unreadable: the repair goes ahead; the sweep removes it again.
        !matches!(self.reread(record).await, Ok(None))
    }

    /// The file's record as it stands now.
    async fn reread(&self, record: &CatalogRecord) -> Result<Option<CatalogRecord>, CatalogError> {
        self.checker
            .budget()
            .run(format!("catalog get {}", record.file), || {
                self.catalog.get(&record.cluster, &record.file)
            })
            .await
    }

    /// A copy from the first of `sources` that downloads verified.
    async fn verified_copy(
        &self,
        record: &CatalogRecord,
        sources: &[(Provider, u64)],
    ) -> Result<VerifiedCopy, String> {
        let mut reasons = Vec::new();
        for &(from, size) in sources {
            let Some(store) = self.replicas.get(from) else {
                continue;
            };
            if size > REPAIR_LIMIT {
                reasons.push(format!(
                    "{from}: over {} MiB, too large to repair in memory",
                    REPAIR_LIMIT >> 20
                ));
                continue;
            }
            let key = replica_key(record, from);
            let got = self
                .checker
                .budget()
                .run(format!("{from} get {key}"), || store.get(&key))
                .await;
            match got {
                Ok(object) => {
                    let identities = &self.checker.identities;
                    let verified = verify_stored(
                        &object.body,
                        record.raw_size,
                        &record.raw_sha256,
                        identities,
                    );
                    match verified {
                        Ok(()) => {
                            return Ok(VerifiedCopy {
                                from,
                                body: object.body,
                            })
                        }
                        // No key here (the retention function holds none):
                        // the bytes compress stored, by their digest.
                        Err(CodecError::Sealed(OpenError::Locked))
                            if stored_as_recorded(record, from, &object.body) =>
                        {
                            return Ok(VerifiedCopy {
                                from,
                                body: object.body,
                            })
                        }
                        Err(e) => reasons.push(format!("{from}: {e}")),
                    }
                }
                Err(e) => reasons.push(format!("{from}: {}", chain(&e))),
            }
        }
        if reasons.is_empty() {
            reasons.push("no other provider's copy passed the check".into());
        }
        Err(format!(
            "no verified copy to repair from ({})",
            reasons.join("; ")
        ))
    }

    /// Records `provider`'s copy, described by `info`, and marks the file
    /// `replicated` once every provider's copy is recorded.
    async fn record(
        &self,
        record: &CatalogRecord,
        provider: Provider,
        key: String,
        info: &ObjectInfo,
        written: Option<Sha256Hex>,
    ) -> Result<Repair, NoWriteAccess> {
        let target = TargetState {
            key,
            size: info.size,
            etag: info.etag.clone(),
            at: now_millis(),
            stored_sha256: written,
        };
        let recorded = self
            .checker
            .budget()
            .run(format!("catalog record {provider} {}", record.file), || {
                self.catalog
                    .record_target(RecordRef::of(record), provider, &target, now_millis())
            })
            .await;
        let now = match recorded {
            Ok(now) => now,
            Err(e) => return catalog_failed("recording the copy", e),
        };
        let unfinished = [RecordStatus::Replicating, RecordStatus::Partial];
        if now.has_every_target() && unfinished.contains(&now.status) {
            let budget = self.checker.budget();
            if let Err(e) = mark_replicated(self.catalog.as_ref(), record, &budget).await {
                return catalog_failed("recorded, but marking the file replicated", e);
            }
        }
        Ok(Repair::Recorded)
    }
}

struct VerifiedCopy {
    from: Provider,
    body: Bytes,
}

fn failed(reason: String) -> Repair {
    Repair::Failed { reason }
}

fn no_write_access(what: &str, error: &dyn std::error::Error) -> NoWriteAccess {
    NoWriteAccess(format!(
        "{what} refused a write ({}): repair needs write access to the providers and \
         the catalog, which the database host's keys do not have by design; run \
         `walvault verify --repair` where write keys are configured",
        chain(error)
    ))
}

fn catalog_failed(what: &str, error: CatalogError) -> Result<Repair, NoWriteAccess> {
    match error {
        CatalogError::Refused { .. } => Err(no_write_access("the catalog", &error)),
        e => Ok(failed(format!("{what}: {}", chain(&e)))),
    }
}

/// Whether `body` is byte for byte what was stored on `from`: its digest
/// is the one recorded when the copy was written there, or (records from
/// before that was kept) the one recorded when the file was compressed.
fn stored_as_recorded(record: &CatalogRecord, from: Provider, body: &[u8]) -> bool {
    let digest = Sha256Hex::of(body);
    let written = record.target(from).and_then(|t| t.stored_sha256.as_ref());
    written == Some(&digest) || record.compressed_sha256.as_ref() == Some(&digest)
}
