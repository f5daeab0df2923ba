//! Fixtures for tests of the logic, shared by this crate's tests and the
//! integration harness: a valid synthetic WAL segment, a whole set of
//! in-memory backends with a fault injector on every store and the catalog,
//! and catalog records in any state.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backends::{Backends, Replica, Replicas};
use crate::backup::descriptor::BackupSummary;
use crate::backup::name::{BackupFile, BackupId};
use crate::catalog::{CatalogRecord, FaultyCatalog, MemoryCatalog, RecordStatus, TargetState};
use crate::clock::UnixMillis;
use crate::codec::Sha256Hex;
use crate::file::ArchivedFile;
use crate::keys::ClusterName;
use crate::provider::Provider;
use crate::store::{FaultyStore, MemoryStore, ObjectStore};
use crate::wal::{SegmentSize, WalFileName, MIN_SEGMENT_SIZE};

/// A valid 1 MiB PostgreSQL 15 segment for `name` (a segment or
/// `.partial`): the long page header, then record-like bytes that compress
/// roughly as real WAL does.
pub fn synthetic_segment(name: &WalFileName, system_identifier: u64) -> Vec<u8> {
    let size = SegmentSize::new(MIN_SEGMENT_SIZE).expect("1 MiB is a segment size");
    synthetic_segment_of(name, system_identifier, size)
}

/// [`synthetic_segment`] of any segment size (`--wal-segsize`).
pub fn synthetic_segment_of(
    name: &WalFileName,
    system_identifier: u64,
    size: SegmentSize,
) -> Vec<u8> {
    let segment = name.segment().expect("a segment name");
    let mut bytes = vec![0u8; size.bytes() as usize];
    bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    bytes[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    bytes[4..8].copy_from_slice(&segment.timeline.to_le_bytes());
    bytes[8..16].copy_from_slice(&segment.start_lsn(size).to_le_bytes());
    bytes[24..32].copy_from_slice(&system_identifier.to_le_bytes());
    bytes[32..36].copy_from_slice(&(size.bytes() as u32).to_le_bytes());
    bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
    let mut state = (system_identifier as u32) ^ segment.seg ^ 0x9E37_79B9;
    for record in bytes[64..].chunks_mut(128) {
        for byte in record.iter_mut().take(40) {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *byte = (state % 16) as u8;
        }
    }
    bytes
}

/// Staging, the catalog and a replica on every provider, all in memory,
/// each behind a fault injector.
pub struct MemoryWorld {
    pub staging: Arc<FaultyStore<MemoryStore>>,
    pub catalog: Arc<FaultyCatalog<MemoryCatalog>>,
    pub replicas: BTreeMap<Provider, Arc<FaultyStore<MemoryStore>>>,
}

impl Default for MemoryWorld {
    fn default() -> Self {
        MemoryWorld {
            staging: Arc::new(FaultyStore::new(MemoryStore::new("staging"))),
            catalog: Arc::new(FaultyCatalog::new(MemoryCatalog::default())),
            replicas: Provider::ALL
                .into_iter()
                .map(|p| (p, Arc::new(FaultyStore::new(MemoryStore::new(p.as_str())))))
                .collect(),
        }
    }
}

impl MemoryWorld {
    /// The world as the logic sees it, replicas in `Provider::ALL` order.
    pub fn backends(&self) -> Backends {
        let replicas = self
            .replicas
            .iter()
            .map(|(provider, store)| Replica {
                provider: *provider,
                store: Arc::clone(store) as Arc<dyn ObjectStore>,
            })
            .collect();
        Backends {
            staging: Arc::clone(&self.staging) as Arc<dyn ObjectStore>,
            catalog: Arc::clone(&self.catalog) as Arc<dyn crate::catalog::Catalog>,
            replicas: Replicas::new(replicas),
        }
    }

    pub fn replica(&self, provider: Provider) -> &FaultyStore<MemoryStore> {
        &self.replicas[&provider]
    }

    /// A new world holding the same objects and records, with no faults:
    /// a snapshot to start each case of a table from.
    pub fn duplicate(&self) -> Self {
        let store =
            |s: &FaultyStore<MemoryStore>| Arc::new(FaultyStore::new(s.inner().duplicate()));
        MemoryWorld {
            staging: store(&self.staging),
            catalog: Arc::new(FaultyCatalog::new(self.catalog.inner().duplicate())),
            replicas: self.replicas.iter().map(|(p, s)| (*p, store(s))).collect(),
        }
    }

    /// Heals every injected fault.
    pub fn heal(&self) {
        self.staging.heal();
        self.catalog.heal();
        for replica in self.replicas.values() {
            replica.heal();
        }
    }
}

/// A record of `file` as the compress function leaves it in `status`,
/// staged (and created) at `staged_at`: replicas recorded on every
/// provider when `replicated`, on R2 alone when `partial`, each a quarter
/// of the raw size.
pub fn record_in(
    cluster: &ClusterName,
    file: ArchivedFile,
    raw_size: u64,
    status: RecordStatus,
    staged_at: UnixMillis,
) -> CatalogRecord {
    let mut record = CatalogRecord::replicating(
        cluster.clone(),
        file,
        raw_size,
        Sha256Hex::of(file.to_string().as_bytes()),
        staged_at,
        staged_at,
    );
    set_state(&mut record, status);
    record
}

/// Moves `record` to `status`, with the replicas [`record_in`] gives it.
pub fn set_state(record: &mut CatalogRecord, status: RecordStatus) {
    record.status = status;
    let copies: &[Provider] = match status {
        RecordStatus::Replicated => &Provider::ALL,
        RecordStatus::Partial => &[Provider::R2],
        RecordStatus::Replicating | RecordStatus::Corrupt => &[],
    };
    record.targets.clear();
    for provider in copies {
        record.targets.insert(
            *provider,
            TargetState {
                key: record.file.to_string(),
                size: record.raw_size / 4,
                etag: None,
                at: record.staged_at,
                stored_sha256: None,
            },
        );
    }
}

/// The records of a complete base backup of `chunks` 1 MiB chunks on
/// timeline 1, started at `started_at` in segment `start` (of `segment_size`
/// bytes), finished a minute later.
pub fn complete_backup(
    cluster: &ClusterName,
    started_at: UnixMillis,
    start: WalFileName,
    segment_size: u64,
    chunks: u32,
) -> Vec<CatalogRecord> {
    let id = BackupId::started_at(started_at / 1000);
    let part = |part, size| {
        record_in(
            cluster,
            ArchivedFile::Backup(part),
            size,
            RecordStatus::Replicated,
            started_at,
        )
    };
    let mut parts: Vec<CatalogRecord> = (0..chunks)
        .map(|n| part(BackupFile::chunk(id, n), 1 << 20))
        .collect();
    let mut descriptor = part(BackupFile::descriptor(id), 4096);
    descriptor.staged_at = started_at + 60_000;
    let start_segment = start.to_string();
    let start_lsn = start.segment().map_or(0, |s| {
        SegmentSize::new(segment_size).map_or(0, |size| s.start_lsn(size))
    });
    descriptor.backup = Some(BackupSummary {
        id: id.to_string(),
        system_identifier: "7301234567890123456".into(),
        pg_version: 170000,
        segment_size,
        start_timeline: 1,
        start_lsn: format!("{:X}/{:X}", start_lsn >> 32, (start_lsn & 0xFFFF_FFFF) + 40),
        start_segment,
        stop_timeline: 1,
        stop_lsn: format!(
            "{:X}/{:X}",
            (start_lsn + segment_size) >> 32,
            (start_lsn + segment_size) & 0xFFFF_FFFF
        ),
        from_standby: false,
        started_at_ms: started_at,
        stopped_at_ms: started_at + 60_000,
        size: u64::from(chunks) << 20,
        chunk_count: chunks,
        chunks_sha256: Sha256Hex::of(b"chunk list"),
        manifest_checksum: String::new(),
        label: "walvault".into(),
    });
    parts.push(descriptor);
    parts
}
