//! The shipper's local state directory: markers for files a parallel push
//! already stored, and prefetched files waiting to be restored. Files appear
//! in it only complete: written to a temporary name, fsynced, renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::Sha256Hex;
use crate::keys::ClusterName;
use crate::wal::WalFileName;

pub struct Spool {
    root: PathBuf,
}

impl Spool {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Spool { root: root.into() }
    }

    /// Markers of files stored by an earlier push on PostgreSQL's behalf.
    pub fn pushed_dir(&self) -> PathBuf {
        self.root.join("pushed")
    }

    /// The system identifier last confirmed against `cluster`'s
    /// identity object, so later pushes need not ask staging again (the
    /// object is created once and never changed).
    pub fn known_identity(&self, cluster: &ClusterName) -> Option<u64> {
        std::fs::read_to_string(self.identity_path(cluster))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn remember_identity(
        &self,
        cluster: &ClusterName,
        system_identifier: u64,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        write_atomically(
            &self.identity_path(cluster),
            system_identifier.to_string().as_bytes(),
        )
    }

    fn identity_path(&self, cluster: &ClusterName) -> PathBuf {
        self.root.join(format!("identity-{cluster}"))
    }

    /// Where fetches remember a provider that was slow enough to be
    /// hedged, so that the next fetch processes ask the other one first.
    pub fn slow_provider_path(&self, cluster: &ClusterName) -> PathBuf {
        self.root.join(format!("slow-provider-{cluster}"))
    }

    /// Verified files fetched ahead of PostgreSQL's requests.
    pub fn prefetch_dir(&self) -> PathBuf {
        self.root.join("prefetch")
    }

    /// Records that `name` with digest `sha256` is safely stored.
    pub fn mark_pushed(&self, name: &WalFileName, sha256: &Sha256Hex) -> std::io::Result<()> {
        let dir = self.pushed_dir();
        std::fs::create_dir_all(&dir)?;
        write_atomically(&dir.join(name.to_string()), sha256.as_str().as_bytes())
    }

    /// Consumes the marker for `name` if there is one, returning the digest
    /// it records. Markers for earlier names are stale and removed too.
    pub fn take_pushed(&self, name: &WalFileName) -> Option<Sha256Hex> {
        let dir = self.pushed_dir();
        let entries = std::fs::read_dir(&dir).ok()?;
        let mut found = None;
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            match file_name.parse::<WalFileName>() {
                Ok(marked) if marked == *name => {
                    found = std::fs::read_to_string(entry.path())
                        .ok()
                        .and_then(|s| Sha256Hex::parse(s.trim()).ok());
                    let _ = std::fs::remove_file(entry.path());
                }
                Ok(marked) if marked < *name => {
                    let _ = std::fs::remove_file(entry.path());
                }
                _ => {}
            }
        }
        found
    }
}

/// Writes `bytes` to `dest` so that `dest` is either absent or complete:
/// a temporary file beside it, fsync, rename, fsync of the directory.
pub fn write_atomically(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let file_name = dest.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "destination has no file name",
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.walvault-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether a spool entry is a temporary file left by an interrupted write.
pub fn is_temporary(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.ends_with(".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> WalFileName {
        s.parse().unwrap()
    }

    #[test]
    fn a_marker_is_taken_once_and_clears_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        let sha = Sha256Hex::of(b"segment");
        spool
            .mark_pushed(&name("000000010000000000000001"), &sha)
            .unwrap();
        spool
            .mark_pushed(&name("000000010000000000000003"), &sha)
            .unwrap();
        spool
            .mark_pushed(&name("000000010000000000000005"), &sha)
            .unwrap();

        assert_eq!(
            spool.take_pushed(&name("000000010000000000000003")),
            Some(sha.clone())
        );
        assert_eq!(
            spool.take_pushed(&name("000000010000000000000003")),
            None,
            "taken once"
        );
        assert_eq!(
            spool.take_pushed(&name("000000010000000000000001")),
            None,
            "older marker cleared"
        );
        assert_eq!(
            spool.take_pushed(&name("000000010000000000000005")),
            Some(sha)
        );
    }

    #[test]
    fn no_spool_directory_means_no_markers() {
        let spool = Spool::new("/nonexistent/walvault-spool");
        assert_eq!(spool.take_pushed(&name("000000010000000000000001")), None);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        write_atomically(&dest, b"first").unwrap();
        write_atomically(&dest, b"second").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["RECOVERYXLOG"]);
        assert!(write_atomically(&dir.path().join("missing-dir/x"), b"x").is_err());
        assert!(is_temporary(".000000010000000000000001.walvault-12.tmp"));
        assert!(!is_temporary("000000010000000000000001"));
    }
}
