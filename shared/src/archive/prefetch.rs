//! Prefetch for `walvault fetch`: while PostgreSQL replays one segment, the
//! next ones are fetched, verified and renamed into a directory outside
//! pg_wal, so that its next requests are served without any store call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Fetches the `count` segments after `current` on its timeline into `dir`,
/// and removes what recovery has moved past.
pub async fn fill(
    fetcher: Arc<Fetcher>,
    dir: PathBuf,
    current: Segment,
    size: SegmentSize,
    count: usize,
) -> std::io::Result<FillReport> {
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
            wanted.push(next);
        }
    }
    let mut fetches = tokio::task::JoinSet::new();
    for segment in wanted {
        let fetcher = Arc::clone(&fetcher);
        fetches
            .spawn(async move { (segment, fetcher.fetch(&WalFileName::Segment(segment)).await) });
    }
    while let Some(joined) = fetches.join_next().await {
        let Ok((segment, result)) = joined else {
            report.failed += 1;
            continue;
        };
        match result {
            Ok(fetched) => {
                write_atomically(&dir.join(segment.to_string()), &fetched.bytes)?;
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
