//! `walvault fetch`: PostgreSQL's restore_command. Finds a file through the
//! catalog, fetches it from the first provider with a verified copy, and
//! only ever hands back bytes whose size and sha256 check out.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use tempfile::TempPath;

use super::download::{self, DownloadError};
use super::spool::write_atomically;
use crate::backends::Replicas;
use crate::catalog::{Catalog, CatalogError, CatalogRecord, RecordStatus};
use crate::clock::{now_millis, UnixMillis};
use crate::codec::{self, CodecError, Sha256Hex, IN_MEMORY_LIMIT};
use crate::error::{chain, Retryable};
use crate::file::ArchivedFile;
use crate::keys::{archive_key, meta, staging_key, ClusterName};
use crate::provider::Provider;
use crate::retry::RequestLimits;
use crate::seal::{self, Fingerprint, Identities, OpenError};
use crate::store::{Object, ObjectInfo, ObjectStore, StoreError};
use crate::wal::{WalFileName, MAX_SEGMENT_SIZE};

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
    pub body: FetchedBody,
    pub source: Source,
}

/// A verified copy's raw bytes.
#[derive(Debug)]
pub enum FetchedBody {
    Memory(Vec<u8>),
    /// A file over [`IN_MEMORY_LIMIT`], fetched by a fetcher
    /// [streaming into](Fetcher::streaming_into) a directory: a temporary
    /// file there, removed unless persisted.
    File {
        path: TempPath,
        len: u64,
    },
}

impl Fetched {
    /// The raw file's length.
    pub fn len(&self) -> u64 {
        match &self.body {
            FetchedBody::Memory(bytes) => bytes.len() as u64,
            FetchedBody::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts the bytes at `dest`, atomically and durably: a streamed file is
    /// renamed into place (it was made in `dest`'s directory), bytes in
    /// memory are written beside it and renamed.
    pub fn persist(self, dest: &Path) -> std::io::Result<()> {
        match self.body {
            FetchedBody::Memory(bytes) => write_atomically(dest, &bytes),
            FetchedBody::File { path, .. } => {
                path.persist(dest).map_err(|e| e.error)?;
                let dir = dest.parent().unwrap_or(Path::new("."));
                std::fs::File::open(dir)?.sync_all()
            }
        }
    }

    /// The bytes in memory (read back, if they were streamed to a file).
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        match self.body {
            FetchedBody::Memory(bytes) => Ok(bytes),
            FetchedBody::File { path, .. } => std::fs::read(&path),
        }
    }
}

/// Why one place could not serve a verified copy.
#[derive(Debug, thiserror::Error)]
pub enum SourceFailure {
    #[error("catalog")]
    Catalog(#[source] CatalogError),
    #[error("{0}")]
    Store(Source, #[source] StoreError),
    /// The copy is there but does not verify.
    #[error("{0} copy corrupt")]
    Corrupt(Source, #[source] CopyProblem),
    /// The copy is sealed to keys no configured identity opens.
    #[error("{0} copy sealed to keys no configured identity opens")]
    Locked(Source),
}

/// What is wrong with a copy that was read.
#[derive(Debug, thiserror::Error)]
pub enum CopyProblem {
    #[error("no {0} metadata and no catalog record to verify it against")]
    Unverifiable(&'static str),
    #[error("claims {0} bytes, more than any WAL file")]
    TooLarge(u64),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

fn joined(failures: &[SourceFailure]) -> String {
    failures
        .iter()
        .map(|f| chain(f))
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every store answered "not found" and the catalog has no record.
    #[error("{0} is not in the archive")]
    NotFound(ArchivedFile),
    /// A store (or the catalog) failed, and no verified copy was found:
    /// the file may exist, so recovery must not end here.
    #[error("{name}: no verified copy, and stores failed: {}", joined(failures))]
    Unavailable {
        name: ArchivedFile,
        failures: Vec<SourceFailure>,
    },
    /// Copies exist but none verifies, or the catalog lists the file and
    /// no store has it.
    #[error("{name}: no verified copy: {}", if failures.is_empty() { reason.to_string() } else { joined(failures) })]
    NoVerifiedCopy {
        name: ArchivedFile,
        reason: &'static str,
        failures: Vec<SourceFailure>,
    },
    /// The copies found are sealed, and no configured identity opens
    /// them: the recipients (public) say which identity file is needed.
    #[error("{name}: sealed to {}, and no identity file configured (WALVAULT_IDENTITY_FILE) opens it{}", seal::listed(sealed_to), if failures.is_empty() { String::new() } else { format!(": {}", joined(failures)) })]
    Locked {
        name: ArchivedFile,
        sealed_to: Vec<Fingerprint>,
        failures: Vec<SourceFailure>,
    },
    /// Two stores hold different, each self-consistent, copies.
    #[error("{name}: replicas disagree: {detail}")]
    Disagreement { name: ArchivedFile, detail: String },
    /// The local disk failed while a copy streamed in: no other copy
    /// would fare better.
    #[error("{name}: writing the copy to the local disk")]
    Local {
        name: ArchivedFile,
        #[source]
        source: std::io::Error,
    },
}

pub struct Fetcher {
    pub cluster: ClusterName,
    pub catalog: Arc<dyn Catalog>,
    pub staging: Arc<dyn ObjectStore>,
    /// In the configured fetch order.
    pub replicas: Replicas,
    pub limits: RequestLimits,
    requests: AtomicU32,
    hedges: AtomicU32,
    hedge: HedgeDelay,
    /// Where a provider that lost a hedge is remembered across processes.
    slow_provider_file: Option<PathBuf>,
    /// Where files over [`IN_MEMORY_LIMIT`] stream to; held in memory
    /// when `None`.
    scratch: Option<PathBuf>,
    /// What sealed copies are opened with.
    identities: Identities,
}

/// A provider that did not answer while another served the file: asked
/// last by the fetches that follow, for [`SLOW_PROVIDER_FOR`]. Every fetch
/// and prefetch is a process of its own, so without this each one would
/// wait out the first hedge delay on a hung provider again.
const SLOW_PROVIDER_FOR: Duration = Duration::from_secs(300);

/// `"<provider> <until unix ms>"`, as the spool file holds it.
fn parse_slow_provider(text: &str, now: UnixMillis) -> Option<Provider> {
    let (provider, until) = text.trim().split_once(' ')?;
    let until: UnixMillis = until.parse().ok()?;
    let provider = Provider::ALL.into_iter().find(|p| p.as_str() == provider)?;
    (until > now).then_some(provider)
}

/// How long a read may go unanswered before the next store is asked too:
/// [`HedgeDelay::FACTOR`] times the typical time of a verified read in this
/// process (an average that follows the recent reads), within
/// [`HedgeDelay::MIN`] and [`HedgeDelay::MAX`]; [`HedgeDelay::FIRST`] before
/// any read has been seen.
#[derive(Debug, Default)]
struct HedgeDelay {
    /// Microseconds; 0 until the first verified read.
    typical_us: AtomicU64,
}

impl HedgeDelay {
    const FIRST: Duration = Duration::from_secs(1);
    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);
    const FACTOR: u32 = 4;

    fn delay(&self) -> Duration {
        match self.typical_us.load(Ordering::Relaxed) {
            0 => Self::FIRST,
            us => (Duration::from_micros(us) * Self::FACTOR).clamp(Self::MIN, Self::MAX),
        }
    }

    fn observe(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        // An average weighing the newest read by a quarter; updates racing
        // each other lose one sample, which an average can afford.
        let typical = match self.typical_us.load(Ordering::Relaxed) {
            0 => took,
            old => (old.saturating_mul(3) / 4).saturating_add(took / 4).max(1),
        };
        self.typical_us.store(typical, Ordering::Relaxed);
    }
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
    /// A streamed copy has begun to arrive: the store is answering, and
    /// a hedge would only download the file twice.
    answering: AtomicBool,
}

/// Where to look for a file, as the catalog lookup decided.
struct Plan<'a> {
    candidates: Vec<Candidate<'a>>,
    /// The catalog lists the file: "nowhere" is then an error, not absence.
    listed: bool,
    /// The recipients the catalog says its copies are sealed to.
    sealed_to: Vec<Fingerprint>,
    failures: Vec<SourceFailure>,
}

impl Fetcher {
    pub fn new(
        cluster: ClusterName,
        catalog: Arc<dyn Catalog>,
        staging: Arc<dyn ObjectStore>,
        replicas: Replicas,
        limits: RequestLimits,
    ) -> Self {
        Fetcher {
            cluster,
            catalog,
            staging,
            replicas,
            limits,
            requests: AtomicU32::new(0),
            hedges: AtomicU32::new(0),
            hedge: HedgeDelay::default(),
            slow_provider_file: None,
            scratch: None,
            identities: Identities::default(),
        }
    }

    /// Opens sealed copies with `identities`.
    pub fn opening_with(mut self, identities: Identities) -> Self {
        self.identities = identities;
        self
    }

    /// Streams a file over [`IN_MEMORY_LIMIT`] that the catalog lists into
    /// a temporary file in `dir` (the directory of its destination, so
    /// that [`Fetched::persist`] is a rename), decompressing and verifying
    /// it on the way, instead of holding it in memory.
    pub fn streaming_into(mut self, dir: PathBuf) -> Self {
        self.scratch = Some(dir);
        self
    }

    /// Remembers in `file` a provider that lost a hedge, and asks a provider
    /// remembered there (and not yet expired) last.
    pub fn remembering_slow_providers(mut self, file: PathBuf) -> Self {
        let slow = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| parse_slow_provider(&text, now_millis()));
        if let Some(slow) = slow {
            let mut order: Vec<Provider> = self
                .replicas
                .providers()
                .into_iter()
                .filter(|p| *p != slow)
                .collect();
            order.push(slow);
            self.replicas = self.replicas.ordered(&order);
            tracing::info!(provider = %slow, "asked last: it did not answer a recent read in time");
        }
        self.slow_provider_file = Some(file);
        self
    }

    fn remember_slow(&self, provider: Provider) {
        let Some(file) = &self.slow_provider_file else {
            return;
        };
        let until = now_millis() + SLOW_PROVIDER_FOR.as_millis() as UnixMillis;
        if let Err(e) = write_atomically(file, format!("{provider} {until}\n").as_bytes()) {
            tracing::warn!(error = %e, "cannot remember the slow provider in the spool");
        }
    }

    /// Requests made to stores and the catalog so far.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Reads that asked a second store because the first was slow.
    pub fn hedges(&self) -> u32 {
        self.hedges.load(Ordering::Relaxed)
    }

    /// A verified copy of `name`. "Not found" is answered only when the
    /// catalog has no record, staging, R2 and B2 all answer not found, and
    /// a second reading of the catalog still has none: PostgreSQL ends
    /// recovery on that answer, so it must not come from a catalog rolled
    /// back to an earlier time, or from a file replicated (and removed from
    /// staging) while we looked.
    pub async fn fetch(&self, name: &WalFileName) -> Result<Fetched, FetchError> {
        self.fetch_file(&ArchivedFile::Wal(*name)).await
    }

    /// [`Fetcher::fetch`] for any archived file (a base backup's parts too).
    pub async fn fetch_file(&self, name: &ArchivedFile) -> Result<Fetched, FetchError> {
        let plan = self.plan(name).await?;
        match self.fetch_planned(name, plan).await {
            Err(FetchError::NotFound(_)) => {
                let second = self.plan(name).await?;
                if second.listed || !second.failures.is_empty() {
                    self.fetch_planned(name, second).await
                } else {
                    Err(FetchError::NotFound(*name))
                }
            }
            other => other,
        }
    }

    async fn fetch_planned(
        &self,
        name: &ArchivedFile,
        plan: Plan<'_>,
    ) -> Result<Fetched, FetchError> {
        let Plan {
            candidates,
            listed,
            sealed_to,
            mut failures,
        } = plan;
        let catalog_answered = failures.is_empty();
        let not_found = match self
            .first_verified(
                name,
                &candidates,
                !listed && catalog_answered,
                &mut failures,
            )
            .await?
        {
            Ok(fetched) => {
                if !listed && fetched.source != Source::Staging {
                    tracing::warn!(file = %name, source = %fetched.source, "served a replica the catalog has no record of (a catalog restored to an earlier time?); `walvault verify` lists such files");
                }
                return Ok(fetched);
            }
            Err(not_found) => not_found,
        };
        let absent = !listed && catalog_answered && absence_settled(&not_found, &failures);
        if absent {
            for failure in &failures {
                tracing::warn!(file = %name, failure = %chain(failure), "not found on the stores that answered; this one did not");
            }
            failures.clear();
        }
        if failures
            .iter()
            .any(|f| matches!(f, SourceFailure::Locked(_)))
        {
            return Err(FetchError::Locked {
                name: *name,
                sealed_to,
                failures: failures
                    .into_iter()
                    .filter(|f| !matches!(f, SourceFailure::Locked(_)))
                    .collect(),
            });
        }
        let available = failures
            .iter()
            .all(|f| matches!(f, SourceFailure::Corrupt(..)));
        match (available, failures.is_empty(), listed) {
            (false, _, _) => Err(FetchError::Unavailable {
                name: *name,
                failures,
            }),
            (true, false, _) => Err(FetchError::NoVerifiedCopy {
                name: *name,
                reason: "every copy found is corrupt",
                failures,
            }),
            (true, true, true) => Err(FetchError::NoVerifiedCopy {
                name: *name,
                reason: "the catalog lists it as archived but no store has it",
                failures,
            }),
            (true, true, false) => Err(FetchError::NotFound(*name)),
        }
    }

    /// The first verified copy among `candidates`, tried in order; a
    /// candidate that has not answered within the hedge delay gets
    /// company: the next one starts too, the first verified copy wins and
    /// the others are dropped (cancelled). A hung provider then costs a
    /// recovery the hedge delay per file, not every attempt's timeout.
    /// With no copy, the sources that answered "not found" (the failures
    /// of the others are added to `failures`). When `absence_decidable`
    /// (the catalog answered and has no record), every store has been
    /// asked and the answers in settle that the file is nowhere, a store
    /// still silent after one more hedge delay is not waited for: a hung
    /// provider must not hold up, by its whole budget, every "not found"
    /// that ends a recovery or a prefetch past the end of the archive.
    async fn first_verified(
        &self,
        name: &ArchivedFile,
        candidates: &[Candidate<'_>],
        absence_decidable: bool,
        failures: &mut Vec<SourceFailure>,
    ) -> Result<Result<Fetched, Vec<Source>>, FetchError> {
        let start = |index: usize| {
            let began = Instant::now();
            let candidate = &candidates[index];
            let attempt = self.try_candidate(name, candidate, candidates);
            async move { (candidate.source, began, attempt.await) }
        };
        let mut waiting = 0..candidates.len();
        let mut running = FuturesUnordered::new();
        let mut not_found = Vec::new();
        let mut hedged = false;
        let mut first_failed = false;
        while let Some(first) = waiting.next() {
            running.push(start(first));
            while !running.is_empty() {
                // Every store asked, and the answers in say the file is
                // nowhere: the stores still running get one more hedge
                // delay to answer, not their whole budget.
                let settled = absence_decidable
                    && waiting.is_empty()
                    && absence_settled(&not_found, failures);
                let hedge = tokio::time::sleep(self.hedge.delay());
                tokio::select! {
                    Some((source, began, answer)) = running.next() => match answer? {
                        Ok(fetched) => {
                            // A streamed file's time is its size's, not the store's answer.
                            if matches!(fetched.body, FetchedBody::Memory(_)) {
                                self.hedge.observe(began.elapsed());
                            }
                            // The provider asked first lost a hedge, or
                            // failed (a refused connection is never hedged):
                            // the fetches that follow ask it last.
                            if let Source::Replica(slow) = candidates[0].source {
                                if (hedged || first_failed) && fetched.source != candidates[0].source {
                                    self.remember_slow(slow);
                                }
                            }
                            return Ok(Ok(fetched));
                        }
                        Err(None) => not_found.push(source),
                        Err(Some(failure)) => {
                            first_failed |= source == candidates[0].source;
                            failures.push(failure);
                        }
                    },
                    () = hedge, if settled || !waiting.is_empty() => {
                        if settled {
                            tracing::warn!(file = %name, after_ms = self.hedge.delay().as_millis() as u64, "not found on the stores that answered; not waiting longer for the others");
                            return Ok(Err(not_found));
                        }
                        if candidates.iter().any(|c| c.answering.load(Ordering::Relaxed)) {
                            continue;
                        }
                        if let Some(next) = waiting.next() {
                            tracing::info!(file = %name, after_ms = self.hedge.delay().as_millis() as u64, also = %candidates[next].source, "no answer yet; asking the next store too");
                            self.hedges.fetch_add(1, Ordering::Relaxed);
                            hedged = true;
                            running.push(start(next));
                        }
                    }
                }
            }
        }
        Ok(Err(not_found))
    }

    /// Asks the catalog where the file is.
    async fn plan(&self, name: &ArchivedFile) -> Result<Plan<'_>, FetchError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let lookup = self
            .limits
            .one_request()
            .run(format!("catalog get {name}"), || {
                self.catalog.get(&self.cluster, name)
            })
            .await;
        Ok(match lookup {
            Ok(Some(record)) if record.status == RecordStatus::Corrupt => {
                return Err(FetchError::NoVerifiedCopy {
                    name: *name,
                    reason: "the catalog marks it corrupt: its staging copy failed verification",
                    failures: Vec::new(),
                })
            }
            Ok(Some(record)) => Plan {
                candidates: self.candidates_from_record(&record),
                listed: true,
                sealed_to: record.sealed_to().to_vec(),
                failures: Vec::new(),
            },
            // Not yet replicated, never pushed, or a catalog that lost the
            // record: staging first (the usual case), then the replicas.
            Ok(None) => {
                let mut candidates = self.candidates_by_layout(name);
                candidates.rotate_right(1);
                Plan {
                    candidates,
                    listed: false,
                    sealed_to: Vec::new(),
                    failures: Vec::new(),
                }
            }
            Err(e) => {
                tracing::warn!(file = %name, error = %chain(&e), "catalog unavailable; looking in the stores directly");
                Plan {
                    candidates: self.candidates_by_layout(name),
                    listed: false,
                    sealed_to: Vec::new(),
                    failures: vec![SourceFailure::Catalog(e)],
                }
            }
        })
    }

    /// A verified copy from `candidate`; `Err(None)` when it has none.
    async fn try_candidate(
        &self,
        name: &ArchivedFile,
        candidate: &Candidate<'_>,
        all: &[Candidate<'_>],
    ) -> Result<Result<Fetched, Option<SourceFailure>>, FetchError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some((dir, expected)) = self.streams(candidate) {
            return self.stream_candidate(name, candidate, expected, dir).await;
        }
        let got = self
            .limits
            .one_request()
            .run(
                format!("{} get {}", candidate.source, candidate.key),
                || candidate.store.get(&candidate.key),
            )
            .await;
        let object = match got {
            Ok(object) => object,
            Err(e) => return Ok(Err(unanswered(name, candidate, e))),
        };
        match verify(candidate, &object, &self.identities) {
            Ok(bytes) => {
                if candidate.expected.is_none() {
                    self.check_agreement(name, candidate, &object.info, all)
                        .await?;
                }
                Ok(Ok(Fetched {
                    body: FetchedBody::Memory(bytes),
                    source: candidate.source,
                }))
            }
            Err(problem) => Ok(Err(Some(copy_failed(name, candidate, problem)))),
        }
    }

    /// Where `candidate` streams to, if it is too large to hold and its
    /// size and digest are known before reading.
    fn streams<'c>(&self, candidate: &'c Candidate<'_>) -> Option<(&Path, &'c Expected)> {
        let expected = candidate.expected.as_ref()?;
        let dir = self.scratch.as_deref()?;
        (expected.size > IN_MEMORY_LIMIT).then_some((dir, expected))
    }

    /// [`Fetcher::try_candidate`] for a file streamed to disk.
    async fn stream_candidate(
        &self,
        name: &ArchivedFile,
        candidate: &Candidate<'_>,
        expected: &Expected,
        dir: &Path,
    ) -> Result<Result<Fetched, Option<SourceFailure>>, FetchError> {
        if expected.size > MAX_SEGMENT_SIZE {
            let problem = CopyProblem::TooLarge(expected.size);
            return Ok(Err(Some(SourceFailure::Corrupt(candidate.source, problem))));
        }
        let opened = self
            .limits
            .one_request()
            .run(
                format!("{} get {}", candidate.source, candidate.key),
                || candidate.store.get_stream(&candidate.key),
            )
            .await;
        let reader = match opened {
            Ok(reader) => {
                candidate.answering.store(true, Ordering::Relaxed);
                reader
            }
            Err(e) => return Ok(Err(unanswered(name, candidate, e))),
        };
        let expect = download::Expect {
            size: expected.size,
            sha256: &expected.sha256,
            compressed: candidate.compressed,
            identities: &self.identities,
        };
        match download::to_temp_file(reader, expect, dir, self.limits.timeout).await {
            Ok(path) => Ok(Ok(Fetched {
                body: FetchedBody::File {
                    path,
                    len: expected.size,
                },
                source: candidate.source,
            })),
            Err(DownloadError::Store(e)) => {
                tracing::warn!(file = %name, source = %candidate.source, error = %chain(&e), "store failed mid-file; trying the next");
                Ok(Err(Some(SourceFailure::Store(candidate.source, e))))
            }
            Err(DownloadError::Corrupt(problem)) => Ok(Err(Some(copy_failed(
                name,
                candidate,
                CopyProblem::Codec(problem),
            )))),
            Err(DownloadError::Local(source)) => Err(FetchError::Local {
                name: *name,
                source,
            }),
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
                    answering: AtomicBool::new(false),
                })
            })
            .collect();
        // Until every replica is confirmed the raw copy stays in staging.
        if record.status != RecordStatus::Replicated {
            candidates.push(self.staging_candidate(record.file, Some(expected)));
        }
        candidates
    }

    /// Every replica in fetch order, then staging.
    fn candidates_by_layout(&self, name: &ArchivedFile) -> Vec<Candidate<'_>> {
        let mut candidates: Vec<Candidate<'_>> = self
            .replicas
            .iter()
            .map(|replica| Candidate {
                source: Source::Replica(replica.provider),
                store: replica.store.as_ref(),
                key: archive_key(&self.cluster, name),
                compressed: true,
                expected: None,
                answering: AtomicBool::new(false),
            })
            .collect();
        candidates.push(self.staging_candidate(*name, None));
        candidates
    }

    fn staging_candidate(&self, file: ArchivedFile, expected: Option<Expected>) -> Candidate<'_> {
        Candidate {
            source: Source::Staging,
            store: self.staging.as_ref(),
            key: staging_key(&self.cluster, file),
            compressed: false,
            expected,
            answering: AtomicBool::new(false),
        }
    }

    /// Without the catalog, each copy vouches only for itself: make sure no
    /// other replica holds a different one before trusting it.
    async fn check_agreement(
        &self,
        name: &ArchivedFile,
        chosen: &Candidate<'_>,
        chosen_info: &ObjectInfo,
        all: &[Candidate<'_>],
    ) -> Result<(), FetchError> {
        // Copies are compared by content tag; a plain copy's tag (the raw
        // sha256) and a sealed one's (random) cannot be compared.
        let ours = chosen_info.sha256();
        let ours_sealed = is_sealed_copy(chosen_info);
        for other in all
            .iter()
            .filter(|c| c.source != chosen.source && c.compressed)
        {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let head = self
                .limits
                .one_request()
                .run(format!("{} head {}", other.source, other.key), || {
                    other.store.head(&other.key)
                })
                .await;
            let theirs = match head {
                Ok(info) if is_sealed_copy(&info) == ours_sealed => info.sha256(),
                Ok(_) => None,
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    tracing::warn!(file = %name, source = %other.source, error = %chain(&e), "cannot compare with this replica");
                    None
                }
            };
            if let (Some(ours), Some(theirs)) = (&ours, theirs.filter(|t| Some(t) != ours.as_ref()))
            {
                return Err(FetchError::Disagreement {
                    name: *name,
                    detail: format!(
                        "{} has content tag {ours}, {} has {theirs}",
                        chosen.source, other.source
                    ),
                });
            }
        }
        Ok(())
    }
}

/// What a store's failure to serve `candidate` means: nothing when it has
/// no copy, otherwise a failure to report (logged; the next is tried).
fn unanswered(
    name: &ArchivedFile,
    candidate: &Candidate<'_>,
    error: StoreError,
) -> Option<SourceFailure> {
    if error.is_not_found() {
        return None;
    }
    tracing::warn!(file = %name, source = %candidate.source, error = %chain(&error), "store failed; trying the next");
    Some(SourceFailure::Store(candidate.source, error))
}

/// Staging keeps a file until both replicas hold it, so with no catalog
/// record, staging's "not found" and one replica's mean the file is
/// nowhere: the other replica being down does not matter (a recovery from
/// one provider alone must be able to end). A corrupt copy found means it
/// is somewhere.
fn absence_settled(not_found: &[Source], failures: &[SourceFailure]) -> bool {
    not_found.contains(&Source::Staging)
        && not_found.iter().any(|s| matches!(s, Source::Replica(_)))
        && !failures
            .iter()
            .any(|f| matches!(f, SourceFailure::Corrupt(..) | SourceFailure::Locked(_)))
}

/// Whether a replica's metadata marks it sealed.
fn is_sealed_copy(info: &ObjectInfo) -> bool {
    info.metadata.contains_key(meta::SEALED)
}

/// A copy that did not verify: locked (no identity opens it) or corrupt;
/// logged, and the next source is tried.
fn copy_failed(
    name: &ArchivedFile,
    candidate: &Candidate<'_>,
    problem: CopyProblem,
) -> SourceFailure {
    if let CopyProblem::Codec(CodecError::Sealed(OpenError::Locked)) = problem {
        tracing::error!(file = %name, source = %candidate.source, key = %candidate.key, "sealed to keys no configured identity opens; trying the next");
        return SourceFailure::Locked(candidate.source);
    }
    tracing::error!(file = %name, source = %candidate.source, key = %candidate.key, problem = %chain(&problem), "CORRUPT copy; trying the next");
    SourceFailure::Corrupt(candidate.source, problem)
}

impl Retryable for FetchError {
    /// Only absence is final; every other failure may clear (a provider
    /// back, a copy repaired), and recovery must stop rather than promote.
    fn is_permanent(&self) -> bool {
        matches!(self, FetchError::NotFound(_))
    }
}

/// Checks a fetched object (opening it if it is sealed); returns the raw
/// bytes.
fn verify(
    candidate: &Candidate<'_>,
    object: &Object,
    identities: &Identities,
) -> Result<Vec<u8>, CopyProblem> {
    let expected = match &candidate.expected {
        Some(expected) => expected.clone(),
        None => self_described(candidate, object, identities)?,
    };
    if expected.size > MAX_SEGMENT_SIZE {
        return Err(CopyProblem::TooLarge(expected.size));
    }
    let raw = if candidate.compressed {
        codec::unpack_verified(&object.body, expected.size, &expected.sha256, identities)?
    } else {
        let raw = object.body.to_vec();
        codec::verify(&raw, expected.size, &expected.sha256)?;
        raw
    };
    Ok(raw)
}

/// What a copy with no catalog record must hold, by its own account: a
/// sealed copy's claims, or a plain one's metadata.
fn self_described(
    candidate: &Candidate<'_>,
    object: &Object,
    identities: &Identities,
) -> Result<Expected, CopyProblem> {
    if candidate.compressed {
        if let (_, Some(claims)) = codec::unseal(&object.body, identities)? {
            return Ok(Expected {
                size: claims.raw_size,
                sha256: claims.raw_sha256,
            });
        }
    }
    let sha256 = object
        .info
        .sha256()
        .ok_or(CopyProblem::Unverifiable("sha256"))?;
    let size = if candidate.compressed {
        object
            .info
            .metadata
            .get(meta::RAW_SIZE)
            .and_then(|s| s.parse().ok())
            .ok_or(CopyProblem::Unverifiable("raw-size"))?
    } else {
        object.info.size
    };
    Ok(Expected { size, sha256 })
}
