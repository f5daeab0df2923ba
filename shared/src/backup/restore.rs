//! `walvault restore`: choose the newest complete backup that can reach the
//! target, check in the catalog that the WAL from it to the target is
//! there, then stream its chunks (verified, from the first provider with a
//! good copy) into the data directory, check it with `pg_verifybackup`,
//! and write the recovery settings. Everything that can refuse does so
//! before the first byte is downloaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::catalog::{backups, BackupState};
use super::descriptor::BackupSummary;
use super::name::{BackupFile, BackupId};
use super::target::Target;
use crate::archive::fetch::{FetchError, Fetcher, Source};
use crate::catalog::{list_prefix, Catalog, CatalogError, CatalogRecord, RecordStatus};
use crate::error::chain;
use crate::file::ArchivedFile;
use crate::keys::ClusterName;
use crate::wal::{Segment, WalFileName};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{} is not empty: restore writes only into an empty or new directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("no backup can reach {target}: {reason}")]
    NoBackup { target: Target, reason: String },
    #[error("backup {id}: {reason}")]
    RequestedBackup { id: BackupId, reason: String },
    #[error("the WAL the backup needs to become consistent is not all archived: {missing} is missing (from {first} to {stop})")]
    BackupWalMissing {
        first: WalFileName,
        stop: WalFileName,
        missing: WalFileName,
    },
    #[error("WAL continuity is broken: {missing} is missing, so recovery from backup {backup} would stop at {last_before} before reaching {target}; choose a target before the gap (--lsn or --time) to restore up to it deliberately")]
    WalGap {
        backup: BackupId,
        target: Target,
        missing: WalFileName,
        last_before: WalFileName,
    },
    #[error("catalog")]
    Catalog(#[source] CatalogError),
    #[error("backup part {file}")]
    Fetch {
        file: ArchivedFile,
        #[source]
        source: FetchError,
    },
    #[error("writing the data directory")]
    Write(#[source] std::io::Error),
    #[error("pg_verifybackup found the restored directory wrong: {0}")]
    Verify(String),
}

/// The backup chosen, and why.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    pub backup: BackupState,
    pub summary: BackupSummary,
    pub reason: String,
    pub wal: Continuity,
}

/// The WAL the catalog holds from the backup's start towards the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuity {
    pub first: WalFileName,
    /// The last segment checked: the target's, or the newest archived.
    pub last: WalFileName,
    pub segments: u64,
}

/// Chooses the backup: the one requested, or the newest complete one that
/// finished before the target.
pub fn choose<'a>(
    states: &'a [BackupState],
    target: &Target,
    requested: Option<BackupId>,
) -> Result<(&'a BackupState, &'a BackupSummary, String), RestoreError> {
    let reaches = |summary: &BackupSummary| match target {
        Target::Latest => true,
        Target::Time(t) => summary.stopped_at_ms <= *t,
        Target::Lsn(lsn) => summary.stop_lsn() <= *lsn,
    };
    if let Some(id) = requested {
        let state =
            states
                .iter()
                .find(|s| s.id == id)
                .ok_or_else(|| RestoreError::RequestedBackup {
                    id,
                    reason: "not in the catalog".into(),
                })?;
        let summary = match (&state.incomplete, &state.summary) {
            (None, Some(summary)) => summary,
            (Some(why), _) => {
                return Err(RestoreError::RequestedBackup {
                    id,
                    reason: format!("not complete ({why})"),
                })
            }
            (None, None) => {
                return Err(RestoreError::RequestedBackup {
                    id,
                    reason: "no summary".into(),
                })
            }
        };
        if !reaches(summary) {
            return Err(RestoreError::RequestedBackup {
                id,
                reason: format!("it became consistent after {target}"),
            });
        }
        return Ok((state, summary, "requested".into()));
    }
    let complete: Vec<(&BackupState, &BackupSummary)> = states
        .iter()
        .filter(|s| s.is_complete())
        .filter_map(|s| Some((s, s.summary.as_ref()?)))
        .collect();
    let chosen = complete
        .iter()
        .filter(|(_, summary)| reaches(summary))
        .max_by_key(|(_, summary)| summary.stopped_at_ms);
    match chosen {
        Some((state, summary)) => {
            let newer = complete
                .iter()
                .filter(|(_, s)| s.stopped_at_ms > summary.stopped_at_ms)
                .count();
            let reason = if newer == 0 {
                "the newest complete backup".to_owned()
            } else {
                format!("the newest complete backup that finished before {target} ({newer} newer ones finished after it)")
            };
            Ok((state, summary, reason))
        }
        None => {
            let incomplete = states.len() - complete.len();
            let reason = match complete
                .iter()
                .min_by_key(|(_, s)| s.stopped_at_ms)
            {
                None => format!("the catalog has no complete base backup ({incomplete} incomplete); take one with `walvault backup`"),
                Some((state, summary)) => format!(
                    "the oldest complete backup, {}, became consistent at {} (LSN {}), after the target",
                    state.id,
                    super::target::postgres_time(summary.stopped_at_ms),
                    summary.stop_lsn
                ),
            };
            Err(RestoreError::NoBackup {
                target: *target,
                reason,
            })
        }
    }
}

/// Checks that every segment from the backup's start to the target (or
/// the newest archived one) is in the catalog, on the backup's timeline.
pub fn check_continuity(
    id: BackupId,
    summary: &BackupSummary,
    wal: &[CatalogRecord],
    target: &Target,
) -> Result<Continuity, RestoreError> {
    let (Some(size), Some(start), Some(stop)) = (
        summary.segment_size(),
        summary.start_segment(),
        summary.stop_segment(),
    ) else {
        return Err(RestoreError::RequestedBackup {
            id,
            reason: "its summary has an unreadable start or stop".into(),
        });
    };
    let timeline = stop.timeline;
    let present: std::collections::BTreeMap<Segment, &CatalogRecord> = wal
        .iter()
        .filter(|r| r.status != RecordStatus::Corrupt)
        .filter_map(|r| match r.file.wal()? {
            WalFileName::Segment(s) if s.timeline == timeline => Some((s, r)),
            _ => None,
        })
        .collect();
    // A backup whose timeline changed while it ran starts on another one.
    let first = if start.timeline == timeline {
        start
    } else {
        stop
    };
    let newest = present.keys().next_back().copied().unwrap_or(stop);
    let wanted_last = match target {
        Target::Latest => newest,
        Target::Lsn(lsn) => lsn.segment(timeline, size).unwrap_or(newest),
        Target::Time(t) => present
            .iter()
            .find(|(s, r)| **s >= stop && r.staged_at >= *t)
            .map(|(s, _)| *s)
            .unwrap_or(newest),
    };
    let last = wanted_last.max(stop);
    let mut segment = first;
    let mut count = 0u64;
    let mut previous = None;
    loop {
        if !present.contains_key(&segment) {
            let missing = WalFileName::Segment(segment);
            return Err(match previous {
                Some(before) if segment > stop => RestoreError::WalGap {
                    backup: id,
                    target: *target,
                    missing,
                    last_before: WalFileName::Segment(before),
                },
                _ => RestoreError::BackupWalMissing {
                    first: WalFileName::Segment(first),
                    stop: WalFileName::Segment(stop),
                    missing,
                },
            });
        }
        count += 1;
        if segment >= last {
            break;
        }
        previous = Some(segment);
        segment = match segment.next(size) {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    Ok(Continuity {
        first: WalFileName::Segment(first),
        last: WalFileName::Segment(last),
        segments: count,
    })
}

/// Refuses a directory with anything in it.
pub fn check_empty(dir: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                Err(RestoreError::NotEmpty(dir.to_owned()))
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RestoreError::Write(e)),
    }
}

/// What the download did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Downloaded {
    pub chunks: u64,
    pub bytes: u64,
    /// Chunks served by each place.
    pub sources: std::collections::BTreeMap<String, u64>,
    /// Chunks not served by the first provider in the fetch order.
    pub fallbacks: u64,
}

pub struct Restorer {
    pub cluster: ClusterName,
    pub catalog: Arc<dyn Catalog>,
    pub fetcher: Arc<Fetcher>,
    /// Chunks fetched ahead of the one being written.
    pub read_ahead: usize,
}

impl Restorer {
    /// Everything decided before downloading: the backup and the WAL check.
    pub async fn plan(
        &self,
        target: &Target,
        requested: Option<BackupId>,
    ) -> Result<RestorePlan, RestoreError> {
        let states = backups(self.catalog.as_ref(), &self.cluster)
            .await
            .map_err(RestoreError::Catalog)?;
        let (state, summary, reason) = choose(&states, target, requested)?;
        let timeline = summary
            .stop_segment()
            .map(|s| s.timeline)
            .unwrap_or(summary.stop_timeline);
        let wal = list_prefix(
            self.catalog.as_ref(),
            &self.cluster,
            &format!("{timeline:08X}"),
        )
        .await
        .map_err(RestoreError::Catalog)?;
        let continuity = check_continuity(state.id, summary, &wal, target)?;
        Ok(RestorePlan {
            backup: state.clone(),
            summary: summary.clone(),
            reason,
            wal: continuity,
        })
    }

    /// Streams the backup's chunks, in order, into `dir`; `progress` hears
    /// (bytes written, bytes in all).
    pub async fn download(
        &self,
        plan: &RestorePlan,
        dir: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Downloaded, RestoreError> {
        std::fs::create_dir_all(dir).map_err(RestoreError::Write)?;
        set_private(dir).map_err(RestoreError::Write)?;
        let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(2);
        let target_dir = dir.to_owned();
        let extract = tokio::task::spawn_blocking(move || unpack(receiver, &target_dir));
        let first_choice = self.fetcher.replicas.iter().next().map(|r| r.provider);
        let files: Vec<ArchivedFile> = (0..plan.summary.chunk_count)
            .map(|n| ArchivedFile::Backup(BackupFile::chunk(plan.backup.id, n)))
            .collect();
        let fetcher = &self.fetcher;
        let mut fetches = futures_util::stream::iter(files)
            .map(|file| async move { (file, fetcher.fetch_file(&file).await) })
            .buffered(self.read_ahead.max(1));
        let mut report = Downloaded::default();
        let total = plan.summary.size;
        let mut failure = None;
        while let Some((file, fetched)) = fetches.next().await {
            let fetched = match fetched {
                Ok(fetched) => fetched,
                Err(source) => {
                    failure = Some(RestoreError::Fetch { file, source });
                    break;
                }
            };
            report.chunks += 1;
            report.bytes += fetched.len();
            *report
                .sources
                .entry(fetched.source.to_string())
                .or_default() += 1;
            if first_choice.is_some_and(|p| fetched.source != Source::Replica(p)) {
                report.fallbacks += 1;
                tracing::warn!(part = %file, source = %fetched.source, "served by a fallback: the first provider's copy failed (see above)");
            }
            progress(report.bytes, total);
            // Chunks are held in memory: this fetcher streams nothing to disk.
            let bytes = match fetched.into_bytes() {
                Ok(bytes) => bytes,
                Err(e) => {
                    failure = Some(RestoreError::Write(e));
                    break;
                }
            };
            if sender.send(Bytes::from(bytes)).await.is_err() {
                break;
            }
        }
        drop(sender);
        let unpacked = extract
            .await
            .map_err(|e| RestoreError::Write(std::io::Error::other(e.to_string())))?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        unpacked.map_err(RestoreError::Write)?;
        Ok(report)
    }
}

/// Unpacks the tar stream arriving on `chunks` into `dir`.
fn unpack(chunks: tokio::sync::mpsc::Receiver<Bytes>, dir: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(ChannelReader {
        chunks,
        current: Bytes::new(),
    });
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(false);
    archive.unpack(dir)?;
    set_private(dir)
}

/// PostgreSQL refuses a data directory others can read.
fn set_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A blocking reader over chunks arriving from the async side.
struct ChannelReader {
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Runs `pg_verifybackup` on the restored directory against the backup
/// manifest it carries (WAL is not in the backup: it comes from the archive).
pub fn verify_with_postgres(program: &Path, dir: &Path) -> Result<(), RestoreError> {
    let output = std::process::Command::new(program)
        .arg("--no-parse-wal")
        .arg("--quiet")
        .arg(dir)
        .output()
        .map_err(|e| RestoreError::Verify(format!("running {}: {e}", program.display())))?;
    if output.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&output.stderr);
        Err(RestoreError::Verify(
            text.lines().take(20).collect::<Vec<_>>().join("; "),
        ))
    }
}

/// How the recovered server continues.
pub struct RecoverySettings<'a> {
    pub restore_command: &'a str,
    pub target: Target,
    /// `recovery_target_timeline`: `latest` unless one is named.
    pub timeline: Option<u32>,
    /// What the server does at the target: `promote` or `pause`.
    pub action: &'a str,
    pub backup: BackupId,
}

/// Appends the recovery settings to `postgresql.auto.conf` (which the
/// backup carries, and which wins over `postgresql.conf`) and creates
/// `recovery.signal`. A backup taken from a standby carries that standby's
/// `standby.signal`, which would keep the server a standby forever (waiting
/// for more WAL after the target): it is removed. Returns whether it was.
pub fn write_recovery_settings(
    dir: &Path,
    settings: &RecoverySettings<'_>,
) -> std::io::Result<bool> {
    use std::io::Write;
    let quote = |value: &str| format!("'{}'", value.replace('\'', "''"));
    let mut lines = vec![
        String::new(),
        format!(
            "# walvault restore of backup {}, to {}",
            settings.backup, settings.target
        ),
        format!("restore_command = {}", quote(settings.restore_command)),
        format!(
            "recovery_target_timeline = {}",
            quote(
                &settings
                    .timeline
                    .map_or("latest".to_owned(), |t| t.to_string())
            )
        ),
    ];
    for (name, value) in settings.target.settings() {
        lines.push(format!("{name} = {}", quote(&value)));
    }
    if settings.target != Target::Latest {
        lines.push(format!(
            "recovery_target_action = {}",
            quote(settings.action)
        ));
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("postgresql.auto.conf"))?;
    conf.write_all((lines.join("\n") + "\n").as_bytes())?;
    conf.sync_all()?;
    std::fs::File::create(dir.join("recovery.signal"))?.sync_all()?;
    match std::fs::remove_file(dir.join("standby.signal")) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why a fetch error is worth showing in full.
pub fn describe(error: &RestoreError) -> String {
    chain(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::catalog::group;
    use crate::backup::descriptor::tests_support::descriptor_of;
    use crate::codec::Sha256Hex;
    use crate::provider::Provider;

    fn replicated(file: ArchivedFile, sha: Sha256Hex, staged_at: u64) -> CatalogRecord {
        let mut record = CatalogRecord::replicating(
            "main".parse().unwrap(),
            file,
            16 << 20,
            sha,
            staged_at,
            staged_at,
        );
        record.status = RecordStatus::Replicated;
        for provider in Provider::ALL {
            record.targets.insert(
                provider,
                crate::catalog::TargetState {
                    key: String::new(),
                    size: 1,
                    etag: None,
                    at: staged_at,
                    stored_sha256: None,
                },
            );
        }
        record
    }

    /// A complete backup starting in segment `start`, consistent at the
    /// start of segment `stop`... at `stopped_at`.
    fn backup(id: &str, start: u32, stop_lsn: &str, stopped_at: u64) -> Vec<CatalogRecord> {
        let mut d = descriptor_of(&[b"chunk"]);
        d.id = id.into();
        d.start_segment = format!("0000000100000000{start:08X}");
        d.start_lsn = format!("0/{start:X}000028");
        d.stop_lsn = stop_lsn.into();
        d.stopped_at_ms = stopped_at;
        let id: BackupId = id.parse().unwrap();
        let mut descriptor = replicated(
            ArchivedFile::Backup(BackupFile::descriptor(id)),
            Sha256Hex::of(id.to_string().as_bytes()),
            stopped_at,
        );
        descriptor.backup = Some(d.summary().unwrap());
        vec![
            replicated(
                ArchivedFile::Backup(BackupFile::chunk(id, 0)),
                Sha256Hex::of(b"chunk"),
                stopped_at,
            ),
            descriptor,
        ]
    }

    fn segments(
        range: std::ops::RangeInclusive<u32>,
        staged_at: impl Fn(u32) -> u64,
    ) -> Vec<CatalogRecord> {
        range
            .map(|n| {
                let name: WalFileName = format!("0000000100000000{n:08X}").parse().unwrap();
                replicated(name.into(), Sha256Hex::of(&n.to_be_bytes()), staged_at(n))
            })
            .collect()
    }

    #[test]
    fn the_newest_complete_backup_before_the_target_is_chosen() {
        let mut records = backup("20261101T000000Z", 2, "0/3000100", 1_000);
        records.extend(backup("20261102T000000Z", 8, "0/9000100", 5_000));
        let states = group(records);
        let pick = |target, requested| {
            choose(&states, &target, requested).map(|(s, _, _)| s.id.to_string())
        };
        assert_eq!(pick(Target::Latest, None).unwrap(), "20261102T000000Z");
        assert_eq!(pick(Target::Time(4_000), None).unwrap(), "20261101T000000Z");
        assert_eq!(
            pick(Target::Lsn("0/9000100".parse().unwrap()), None).unwrap(),
            "20261102T000000Z"
        );
        assert!(matches!(
            choose(&states, &Target::Time(500), None),
            Err(RestoreError::NoBackup { .. })
        ));
        let requested: BackupId = "20261102T000000Z".parse().unwrap();
        assert!(matches!(
            choose(&states, &Target::Time(4_000), Some(requested)),
            Err(RestoreError::RequestedBackup { .. })
        ));
        let mut only_chunks = backup("20261103T000000Z", 12, "0/D000100", 9_000);
        only_chunks.pop();
        let states = group(only_chunks);
        let refusal = choose(&states, &Target::Latest, None)
            .unwrap_err()
            .to_string();
        assert!(
            refusal.contains("no complete base backup (1 incomplete)"),
            "{refusal}"
        );
    }

    #[test]
    fn continuity_is_checked_from_the_backup_to_the_target() {
        let records = backup("20261101T000000Z", 2, "0/4000100", 1_000);
        let states = group(records);
        let state = &states[0];
        let summary = state.summary.as_ref().unwrap();

        let whole = segments(2..=9, |n| u64::from(n) * 1_000);
        let latest = check_continuity(state.id, summary, &whole, &Target::Latest).unwrap();
        assert_eq!(latest.last.to_string(), "000000010000000000000009");
        assert_eq!(latest.segments, 8);

        let mut gap = whole.clone();
        gap.retain(|r| r.file.to_string() != "000000010000000000000007");
        match check_continuity(state.id, summary, &gap, &Target::Latest) {
            Err(RestoreError::WalGap {
                missing,
                last_before,
                ..
            }) => {
                assert_eq!(missing.to_string(), "000000010000000000000007");
                assert_eq!(last_before.to_string(), "000000010000000000000006");
            }
            other => panic!("{other:?}"),
        }
        // A target before the gap is reachable.
        let before = check_continuity(state.id, summary, &gap, &Target::Time(5_500)).unwrap();
        assert_eq!(before.last.to_string(), "000000010000000000000006");

        let mut hole = whole;
        hole.retain(|r| r.file.to_string() != "000000010000000000000003");
        assert!(matches!(
            check_continuity(state.id, summary, &hole, &Target::Time(2_500)),
            Err(RestoreError::BackupWalMissing { .. })
        ));
    }

    #[test]
    fn recovery_settings_are_appended_and_quoted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.auto.conf"), "port = 5432\n").unwrap();
        write_recovery_settings(
            dir.path(),
            &RecoverySettings {
                restore_command: "walvault --config '/etc/w.toml' fetch %f %p",
                target: Target::Lsn("0/3000028".parse().unwrap()),
                timeline: None,
                action: "promote",
                backup: "20261101T000000Z".parse().unwrap(),
            },
        )
        .unwrap();
        let conf = std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(conf.starts_with("port = 5432\n"));
        assert!(conf.contains("restore_command = 'walvault --config ''/etc/w.toml'' fetch %f %p'"));
        assert!(conf.contains("recovery_target_lsn = '0/3000028'"));
        assert!(conf.contains("recovery_target_timeline = 'latest'"));
        assert!(conf.contains("recovery_target_action = 'promote'"));
        assert!(dir.path().join("recovery.signal").exists());
        std::fs::write(dir.path().join("standby.signal"), "").unwrap();
        let settings = RecoverySettings {
            restore_command: "walvault fetch %f %p",
            target: Target::Latest,
            timeline: None,
            action: "promote",
            backup: "20261101T000000Z".parse().unwrap(),
        };
        assert!(
            write_recovery_settings(dir.path(), &settings).unwrap(),
            "a standby's signal removed"
        );
        assert!(!dir.path().join("standby.signal").exists());
        assert!(!write_recovery_settings(dir.path(), &settings).unwrap());
        assert!(check_empty(dir.path()).is_err());
        assert!(check_empty(&dir.path().join("new")).is_ok());
    }
}
