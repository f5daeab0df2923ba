//! Prefetch for `walvault fetch`: while PostgreSQL replays one segment, the
//! next ones are fetched, verified and renamed into a directory outside
//! pg_wal, so that its next requests are served without any store call.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::fetch::{FetchError, Fetcher};
use super::spool::{is_temporary, write_atomically};
use crate::wal::{Segment, SegmentSize, WalFileName};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct FillReport {
    pub fetched: usize,
    pub already_there: usize,
    pub not_in_archive: usize,
    pub failed: usize,
    pub removed_stale: usize,
}

/// Held by the one prefetcher running for a spool.
const LOCK: &str = ".lock";

/// Becomes the spool's prefetcher: `None` when another one is running
/// (the next fetch will start one again).
pub fn lock(dir: &Path) -> std::io::Result<Option<File>> {
    std::fs::create_dir_all(dir)?;
    let lock = open_lock(dir)?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether this user can create the prefetch directory and its lock file.
pub fn lock_file_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    open_lock(dir).map(drop)
}

fn open_lock(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))
}

/// Whether a prefetcher holds the spool's lock now.
fn prefetcher_running(dir: &Path) -> bool {
    File::open(dir.join(LOCK))
        .is_ok_and(|file| matches!(file.try_lock(), Err(TryLockError::WouldBlock)))
}

/// Kept by the prefetcher while it downloads `name` (a temporary file
/// name, so that [`remove_stale`] clears what a killed prefetcher left).
fn in_flight_marker(dir: &Path, name: &WalFileName) -> PathBuf {
    dir.join(format!(".{name}.walvault-fetching.tmp"))
}

/// Removes its marker when the download it marks is over, however it ended.
struct InFlight(PathBuf);

impl InFlight {
    fn mark(dir: &Path, name: &WalFileName) -> std::io::Result<Self> {
        let marker = in_flight_marker(dir, name);
        File::create(&marker)?;
        Ok(InFlight(marker))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// PostgreSQL asks for `name` while the running prefetcher is still
/// downloading it: waits for that download (up to `limit`) and takes its
/// result, instead of starting a second download of the same file. `false`
/// when nothing was in flight, or it did not land in time: the caller
/// fetches the file itself.
pub async fn join_in_flight(
    dir: &Path,
    name: &WalFileName,
    dest: &Path,
    limit: Duration,
) -> std::io::Result<bool> {
    let marker = in_flight_marker(dir, name);
    if !marker.exists() || !prefetcher_running(dir) {
        return Ok(false);
    }
    let deadline = tokio::time::Instant::now() + limit;
    while marker.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    take(dir, name, dest)
}

/// Serves `name` from the prefetch directory: already there, or being
/// downloaded by the running prefetcher (see [`join_in_flight`]).
pub async fn take_or_join(
    dir: &Path,
    name: &WalFileName,
    dest: &Path,
    limit: Duration,
) -> std::io::Result<bool> {
    Ok(take(dir, name, dest)? || join_in_flight(dir, name, dest, limit).await?)
}

/// Moves a prefetched `name` to `dest` if there is one. Files in the
/// prefetch directory were verified before they were renamed into it.
pub fn take(dir: &Path, name: &WalFileName, dest: &Path) -> std::io::Result<bool> {
    let prefetched = dir.join(name.to_string());
    match std::fs::rename(&prefetched, dest) {
        Ok(()) => {
            if let Some(parent) = dest.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        // Another file system: copy, then drop the prefetched file.
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let bytes = std::fs::read(&prefetched)?;
            write_atomically(dest, &bytes)?;
            std::fs::remove_file(&prefetched)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// A prefetch run's work, each segment already marked in flight: marked
/// before the prefetcher connects to anything, so that a fetch arriving
/// meanwhile waits for this run instead of downloading the segment too.
pub struct Planned {
    dir: PathBuf,
    wanted: Vec<(Segment, InFlight)>,
    report: FillReport,
}

/// Plans the fetch of the `count` segments after `current` on its timeline
/// into `dir`, and removes what recovery has moved past.
pub fn plan(
    dir: PathBuf,
    current: Segment,
    size: SegmentSize,
    count: usize,
) -> std::io::Result<Planned> {
    std::fs::create_dir_all(&dir)?;
    let mut report = FillReport {
        removed_stale: remove_stale(&dir, &current)?,
        ..FillReport::default()
    };
    let mut wanted = Vec::new();
    let mut next = current;
    for _ in 0..count {
        next = match next.next(size) {
            Ok(n) => n,
            Err(_) => break,
        };
        if dir.join(next.to_string()).exists() {
            report.already_there += 1;
        } else {
            wanted.push((next, InFlight::mark(&dir, &WalFileName::Segment(next))?));
        }
    }
    Ok(Planned {
        dir,
        wanted,
        report,
    })
}

impl Planned {
    /// Fetches the planned segments in parallel, verified, into the
    /// directory.
    pub async fn fetch(self, fetcher: Arc<Fetcher>) -> std::io::Result<FillReport> {
        let Planned {
            dir,
            wanted,
            mut report,
        } = self;
        let mut fetches = tokio::task::JoinSet::new();
        for (segment, marker) in wanted {
            let fetcher = Arc::clone(&fetcher);
            fetches.spawn(async move {
                let result = fetcher.fetch(&WalFileName::Segment(segment)).await;
                (segment, marker, result)
            });
        }
        while let Some(joined) = fetches.join_next().await {
            let Ok((segment, _marker, result)) = joined else {
                report.failed += 1;
                continue;
            };
            // `_marker` goes after the file is in place: a fetch waiting on
            // it then finds the file.
            match result {
                Ok(fetched) => {
                    fetched.persist(&dir.join(segment.to_string()))?;
                    report.fetched += 1;
                }
                Err(FetchError::NotFound(_)) => report.not_in_archive += 1,
                Err(e) => {
                    // PostgreSQL's own request will meet this error, and abort.
                    tracing::warn!(file = %segment, error = %crate::error::chain(&e), "prefetch failed");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }
}

/// Removes segments at or before `current`, segments of other timelines
/// (recovery followed another one), and temporary files of interrupted writes.
fn remove_stale(dir: &Path, current: &Segment) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let stale = match file_name.parse::<WalFileName>() {
            Ok(WalFileName::Segment(s)) => s.timeline != current.timeline || s <= *current,
            Ok(_) => true,
            Err(_) => is_temporary(&file_name) && is_old(&entry),
        };
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Temporary files younger than this may belong to a prefetch still running.
const TEMPORARY_FILE_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

fn is_old(entry: &std::fs::DirEntry) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > TEMPORARY_FILE_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(s: &str) -> Segment {
        match s.parse::<WalFileName>().unwrap() {
            WalFileName::Segment(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stale_entries_are_those_recovery_moved_past() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000006",
            "000000020000000000000007",
            "00000002.history",
            ".000000010000000000000007.walvault-1.tmp",
            "unrelated",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let removed = remove_stale(dir.path(), &segment("000000010000000000000005")).unwrap();
        assert_eq!(removed, 4);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        // The young temporary file may belong to a running prefetch.
        assert_eq!(
            left,
            [
                ".000000010000000000000007.walvault-1.tmp",
                "000000010000000000000006",
                "unrelated"
            ]
        );
    }

    #[tokio::test]
    async fn a_fetch_joins_the_download_the_running_prefetcher_has_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let name: WalFileName = "000000010000000000000006".parse().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let prefetcher = lock(dir.path()).unwrap().expect("the lock is free");
        let marker = InFlight::mark(dir.path(), &name).unwrap();
        let landing = {
            let file = dir.path().join(name.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                write_atomically(&file, b"verified bytes").unwrap();
                drop(marker);
            })
        };
        let joined = take_or_join(dir.path(), &name, &dest, Duration::from_secs(10))
            .await
            .unwrap();
        landing.await.unwrap();
        assert!(joined);
        assert_eq!(std::fs::read(&dest).unwrap(), b"verified bytes");
        assert!(
            lock(dir.path()).unwrap().is_none(),
            "the prefetcher still holds it"
        );
        drop(prefetcher);
    }

    #[tokio::test]
    async fn a_marker_without_a_running_prefetcher_or_past_the_limit_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let name: WalFileName = "000000010000000000000006".parse().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let _marker = InFlight::mark(dir.path(), &name).unwrap();
        // Left by a killed prefetcher: nobody holds the lock.
        let started = std::time::Instant::now();
        assert!(
            !take_or_join(dir.path(), &name, &dest, Duration::from_secs(10))
                .await
                .unwrap()
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // A running prefetcher whose download does not land in time.
        let _prefetcher = lock(dir.path()).unwrap().expect("the lock is free");
        let started = std::time::Instant::now();
        assert!(
            !take_or_join(dir.path(), &name, &dest, Duration::from_millis(100))
                .await
                .unwrap()
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn take_moves_a_prefetched_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let name: WalFileName = "000000010000000000000006".parse().unwrap();
        std::fs::write(dir.path().join(name.to_string()), b"verified bytes").unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        assert!(take(dir.path(), &name, &dest).unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"verified bytes");
        assert!(!take(dir.path(), &name, &dest).unwrap());
    }
}
