//! One provider's copy of one file, against its catalog record: a HEAD
//! for presence, size, ETag and whose content it is; with `deep`, a GET
//! instead, whose answer says the same and whose body is then streamed,
//! decompressed and hashed, in constant memory.

use crate::archive::download::{check_stream, DownloadError, Expect};
use crate::catalog::{CatalogRecord, RecordStatus};
use crate::clock::UnixMillis;
use crate::codec::CodecError;
use crate::error::{chain, Retryable};
use crate::keys::archive_key;
use crate::provider::Provider;
use crate::retry::{Budget, RequestLimits};
use crate::seal::{self, Identities, OpenError};
use crate::store::{ObjectInfo, ObjectReader, ObjectStore, StoreError};
use tokio::time::Instant;

use super::report::Problem;

/// A record still `replicating` this recently may simply not be done: its
/// delivery is within the compress function's timeout and retries.
pub(super) const IN_FLIGHT_GRACE_MS: u64 = 15 * 60 * 1000;

/// What one copy was found to be.
#[derive(Debug)]
pub(super) enum Checked {
    Good {
        size: u64,
    },
    /// Not there yet, and the record says it is being written.
    InFlight,
    Problem {
        problem: Problem,
        /// The object found under the key, if any.
        found: Option<ObjectInfo>,
    },
    /// The provider did not answer within the request limits.
    Unchecked(String),
}

/// Where a replica of `record` lives on a provider: where the catalog says,
/// or where compress would have put it.
pub(super) fn replica_key(record: &CatalogRecord, provider: Provider) -> String {
    record
        .target(provider)
        .map(|t| t.key.clone())
        .unwrap_or_else(|| archive_key(&record.cluster, record.file))
}

pub(super) struct Checker {
    pub limits: RequestLimits,
    /// What sealed copies are opened with, for `--deep` and repair.
    pub identities: Identities,
    pub deep: bool,
    pub now: UnixMillis,
    /// When the run must be over (a Lambda invocation's end), if ever.
    pub deadline: Option<Instant>,
}

impl Checker {
    /// One request's budget: the request limits, cut at the deadline.
    pub(super) fn budget(&self) -> Budget {
        match self.deadline {
            Some(deadline) => self.limits.until(deadline),
            None => self.limits.one_request(),
        }
    }

    pub(super) async fn check(
        &self,
        record: &CatalogRecord,
        provider: Provider,
        store: &dyn ObjectStore,
    ) -> Checked {
        let key = replica_key(record, provider);
        let recorded = record.target(provider);
        let opened = if self.deep {
            self.budget()
                .run(format!("{provider} get {key}"), || store.get_stream(&key))
                .await
                .map(|reader| (reader.info.clone(), Some(reader)))
        } else {
            self.budget()
                .run(format!("{provider} head {key}"), || store.head(&key))
                .await
                .map(|info| (info, None))
        };
        let (info, body) = match opened {
            Ok(opened) => opened,
            Err(StoreError::NotFound { .. }) => {
                return match recorded {
                    Some(_) => problem(Problem::Missing, None),
                    None if self.in_flight(record) => Checked::InFlight,
                    None => problem(Problem::NotReplicated, None),
                }
            }
            Err(e) => return Checked::Unchecked(chain(&e)),
        };
        if info.sha256().as_ref() != Some(record.replica_tag()) {
            return problem(Problem::OtherContent, Some(info));
        }
        let Some(recorded) = recorded else {
            // Compress writes a copy, then records it.
            if self.in_flight(record) {
                return Checked::InFlight;
            }
            return problem(Problem::Unrecorded, Some(info));
        };
        if info.size != recorded.size {
            let differs = Problem::SizeDiffers {
                recorded: recorded.size,
                found: info.size,
            };
            return problem(differs, Some(info));
        }
        if let (Some(recorded), Some(found)) = (&recorded.etag, &info.etag) {
            if bare_etag(recorded) != bare_etag(found) {
                let differs = Problem::EtagDiffers {
                    recorded: recorded.clone(),
                    found: found.clone(),
                };
                return problem(differs, Some(info));
            }
        }
        if let Some(body) = body {
            match self
                .download_verified(record, provider, store, &key, Some(body))
                .await
            {
                Ok(_) => {}
                Err(DownloadError::Corrupt(CodecError::Sealed(OpenError::Locked))) => {
                    return Checked::Unchecked(format!(
                        "sealed to {}, which no configured identity opens",
                        seal::listed(record.sealed_to())
                    ))
                }
                Err(DownloadError::Corrupt(e)) => {
                    let corrupt = Problem::Corrupt {
                        reason: e.to_string(),
                    };
                    return problem(corrupt, Some(info));
                }
                Err(e) => return Checked::Unchecked(chain(&e)),
            }
        }
        Checked::Good { size: info.size }
    }

    /// Downloads the copy (its body from `opened`, if already open) and
    /// checks that it decompresses to the recorded raw bytes; what the
    /// store said of the object. Opening it runs under the request limits;
    /// the body then has the request timeout per piece, not for the whole
    /// (a large copy on a shared link takes longer than one request); a
    /// body broken off is read again while attempts and time are left.
    pub(super) async fn download_verified(
        &self,
        record: &CatalogRecord,
        provider: Provider,
        store: &dyn ObjectStore,
        key: &str,
        mut opened: Option<ObjectReader>,
    ) -> Result<ObjectInfo, DownloadError> {
        let budget = self.budget();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let reader = match opened.take() {
                Some(reader) => reader,
                None => {
                    budget
                        .run(format!("{provider} get {key}"), || store.get_stream(key))
                        .await?
                }
            };
            let info = reader.info.clone();
            let expect = Expect {
                size: record.raw_size,
                sha256: &record.raw_sha256,
                compressed: true,
                identities: &self.identities,
            };
            match check_stream(reader, expect, self.limits.timeout).await {
                Err(DownloadError::Store(e))
                    if !e.is_permanent()
                        && attempts < self.limits.attempts
                        && !budget.is_spent() =>
                {
                    tracing::debug!(%provider, key, error = %chain(&e), "reading the copy again");
                }
                checked => return checked.map(|()| info),
            }
        }
    }

    fn in_flight(&self, record: &CatalogRecord) -> bool {
        record.status == RecordStatus::Replicating
            && self.now.saturating_sub(record.created_at) < IN_FLIGHT_GRACE_MS
    }
}

/// An ETag without its quotes and weak marker: a store may quote it in one
/// answer and not in another.
fn bare_etag(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

fn problem(problem: Problem, found: Option<ObjectInfo>) -> Checked {
    Checked::Problem { problem, found }
}

#[cfg(test)]
mod tests {
    #[test]
    fn etags_compare_without_quotes_or_weak_marker() {
        assert_eq!(super::bare_etag("\"abc\""), "abc");
        assert_eq!(super::bare_etag("W/\"abc\""), "abc");
        assert_eq!(super::bare_etag("abc-3"), "abc-3");
    }
}
