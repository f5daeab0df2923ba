//! Helpers for the tests of the logic on in-memory backends.

#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shared::archive::fetch::Fetcher;
use shared::archive::push::{PushOutcome, Pusher};
use shared::archive::spool::Spool;
use shared::catalog::{Catalog, CatalogRecord};
use shared::codec::{CompressionLevel, Sha256Hex};
use shared::events::ObjectRef;
use shared::keys::{staging_key, ClusterName};
use shared::provider::Provider;
use shared::replicate::Replicator;
use shared::retry::RequestLimits;
use shared::testing::{synthetic_segment, MemoryWorld};
use shared::wal::WalFileName;
use tempfile::TempDir;

pub const SYSID: u64 = 7_301_234_567_890_123_456;
pub const STAGING_BUCKET: &str = "staging-bucket";

pub fn cluster() -> ClusterName {
    "main".parse().unwrap()
}

pub fn name(s: &str) -> WalFileName {
    s.parse().unwrap()
}

/// How long an injected fault lasts.
#[derive(Debug, Clone, Copy)]
pub enum Times {
    /// One call fails; the next succeeds.
    Once,
    /// Every call fails until healed.
    Always,
}

impl Times {
    pub fn count(self) -> u32 {
        match self {
            Times::Once => 1,
            Times::Always => u32::MAX,
        }
    }
}

/// One attempt of a second, three attempts a request.
pub fn limits() -> RequestLimits {
    RequestLimits {
        timeout: Duration::from_secs(1),
        attempts: 3,
    }
}

/// A pg_wal directory of files to push.
pub struct WalDir {
    pub dir: TempDir,
}

impl Default for WalDir {
    fn default() -> Self {
        WalDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl WalDir {
    /// Writes `bytes` as `name` and returns its path.
    pub fn file(&self, name: &WalFileName, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name.to_string());
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A synthetic segment of this cluster named `name`.
    pub fn segment(&self, name: &WalFileName) -> (PathBuf, Vec<u8>) {
        let bytes = synthetic_segment(name, SYSID);
        (self.file(name, &bytes), bytes)
    }
}

/// The shipper on `world`, as `walvault push` builds it.
pub fn pusher(world: &MemoryWorld, spool: &TempDir, concurrency: usize) -> Arc<Pusher> {
    let backends = world.backends();
    Arc::new(Pusher {
        cluster: cluster(),
        staging: backends.staging,
        catalog: backends.catalog,
        pinned_system_identifier: None,
        host: "db1".into(),
        deadline: Duration::from_secs(20),
        limits: limits(),
        spool: Spool::new(spool.path()),
        concurrency,
    })
}

/// The compress function on `world`.
pub fn replicator(world: &MemoryWorld) -> Replicator {
    Replicator::new(
        cluster(),
        STAGING_BUCKET.into(),
        world.backends(),
        CompressionLevel::default(),
        limits(),
    )
    .unwrap()
}

/// Pushes a synthetic segment named `file` through `walvault push`'s code.
pub async fn staged(world: &MemoryWorld, file: &str) -> (WalFileName, Vec<u8>) {
    let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
    let name = name(file);
    let (path, bytes) = wal.segment(&name);
    let (outcome, sha) = pusher(world, &spool, 1).push_one(&path).await.unwrap();
    assert_eq!(outcome, PushOutcome::Stored);
    assert_eq!(sha, Sha256Hex::of(&bytes));
    (name, bytes)
}

/// The event that announces `file`'s staging object.
pub fn announced(file: &WalFileName) -> ObjectRef {
    ObjectRef {
        bucket: STAGING_BUCKET.into(),
        key: staging_key(&cluster(), file),
    }
}

/// A fetcher on `world` asking the providers in `order`.
pub fn fetcher_asking(world: &MemoryWorld, order: &[Provider]) -> Fetcher {
    let backends = world.backends();
    Fetcher::new(
        cluster(),
        backends.catalog,
        backends.staging,
        backends.replicas.ordered(order),
        limits(),
    )
}

/// Stages and replicates `file` through the production code paths.
pub async fn archived(world: &MemoryWorld, file: &str) -> (WalFileName, Vec<u8>) {
    let (name, bytes) = staged(world, file).await;
    let budget = limits().one_request();
    replicator(world)
        .process(&announced(&name), &budget)
        .await
        .unwrap();
    (name, bytes)
}

/// The catalog's record of `file`, if any.
pub async fn record_of(world: &MemoryWorld, file: WalFileName) -> Option<CatalogRecord> {
    world
        .catalog
        .get(&cluster(), &file.into())
        .await
        .expect("the in-memory catalog answers")
}

/// A synthetic segment of `mib` MiB pushed through `walvault push`'s code.
pub async fn staged_of(world: &MemoryWorld, file: &str, mib: u64) -> (WalFileName, Vec<u8>) {
    let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
    let name = name(file);
    let size = shared::wal::SegmentSize::new(mib << 20).unwrap();
    let bytes = shared::testing::synthetic_segment_of(&name, SYSID, size);
    let path = wal.file(&name, &bytes);
    let (outcome, _) = pusher(world, &spool, 1).push_one(&path).await.unwrap();
    assert_eq!(outcome, shared::archive::push::PushOutcome::Stored);
    (name, bytes)
}
