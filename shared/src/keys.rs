//! The object key layout: the one place that knows where things live.
//!
//! ```text
//! staging bucket   <cluster>/staging/<wal file name>        raw bytes, as pushed
//!                  <cluster>/staging/backup/<id>/<part>     base backup chunks and descriptor
//!                  <cluster>/identity.json                  the cluster's pinned identity
//!                  <cluster>/drills/<ms>.json               recovery drill reports
//! R2 and B2        <cluster>/wal/<wal file name>.zst        zstd frame
//!                  <cluster>/backup/<id>/<part>.zst         zstd frame
//! ```
//!
//! WAL file names are fixed-width upper-case hex, so a listing of
//! `<cluster>/wal/` comes back in WAL order (timeline, then position).

use std::fmt;
use std::str::FromStr;

use crate::backup::name::BackupFile;
use crate::file::ArchivedFile;

const STAGING_DIR: &str = "staging";
const ARCHIVE_DIR: &str = "wal";
const ARCHIVE_SUFFIX: &str = ".zst";
const IDENTITY_FILE: &str = "identity.json";
const DRILL_DIR: &str = "drills";

/// The name of a PostgreSQL cluster in walvault: the first component of
/// every key. Lower-case letters, digits, `-` and `_`, at most 63 bytes,
/// starting with a letter or digit, so it is safe in keys, metric dimensions
/// and DynamoDB keys alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(String);

impl ClusterName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClusterName {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(ClusterName(s.to_owned()))
        } else {
            Err(KeyError::BadClusterName(s.to_owned()))
        }
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// User metadata walvault writes on its objects, besides
/// [`crate::store::SHA256_METADATA`] (the raw bytes' digest, on every one).
pub mod meta {
    /// Staging objects: the raw size, as the shipper read it.
    pub const SIZE: &str = "size";
    /// Staging segments: the system identifier from the WAL header.
    pub const SYSTEM_IDENTIFIER: &str = "system-identifier";
    /// Staging segments: the PostgreSQL version from the WAL header.
    pub const PG_VERSION: &str = "pg-version";
    /// Staging objects: the host that pushed the file.
    pub const HOST: &str = "host";
    /// Archived objects: the raw size, so that a copy can be verified
    /// without the catalog.
    pub const RAW_SIZE: &str = "raw-size";
    /// On a sealed replica, which carries no raw size (its claims are
    /// inside): the format it is sealed in.
    pub const SEALED: &str = "sealed";
    pub const SEALED_FORMAT: &str = "age-v1";
}

pub fn staging_key(cluster: &ClusterName, file: impl Into<ArchivedFile>) -> String {
    format!("{}{}", staging_prefix(cluster), file.into())
}

/// The prefix under which every staging object of a cluster lives.
pub fn staging_prefix(cluster: &ClusterName) -> String {
    staging_prefix_of(cluster.as_str())
}

fn staging_prefix_of(cluster: &str) -> String {
    format!("{cluster}/{STAGING_DIR}/")
}

fn archive_prefix_of(cluster: &str) -> String {
    format!("{cluster}/{ARCHIVE_DIR}/")
}

fn identity_key_of(cluster: &str) -> String {
    format!("{cluster}/{IDENTITY_FILE}")
}

/// The layout with `{cluster}` for the cluster name: what the infra's
/// bucket rules and policies are written against ([`crate::contract`]).
pub fn layout_templates() -> [(&'static str, String); 4] {
    let cluster = "{cluster}";
    [
        ("staging_prefix", staging_prefix_of(cluster)),
        (
            "staging_backup_prefix",
            format!("{}{}", staging_prefix_of(cluster), BackupFile::all_prefix()),
        ),
        ("identity_key", identity_key_of(cluster)),
        ("archive_prefix", archive_prefix_of(cluster)),
    ]
}

pub fn archive_key(cluster: &ClusterName, file: impl Into<ArchivedFile>) -> String {
    match file.into() {
        ArchivedFile::Wal(name) => format!(
            "{}{name}{ARCHIVE_SUFFIX}",
            archive_prefix_of(cluster.as_str())
        ),
        // Backup parts are named `backup/<id>/<part>` already.
        ArchivedFile::Backup(part) => format!("{cluster}/{part}{ARCHIVE_SUFFIX}"),
    }
}

/// The archived file `key` holds under `cluster`'s layout, if it is one:
/// the inverse of [`archive_key`].
pub fn parse_archive_key(cluster: &ClusterName, key: &str) -> Option<ArchivedFile> {
    let name = key
        .strip_prefix(&format!("{cluster}/"))?
        .strip_suffix(ARCHIVE_SUFFIX)?;
    let name = name
        .strip_prefix(&format!("{ARCHIVE_DIR}/"))
        .unwrap_or(name);
    let file: ArchivedFile = name.parse().ok()?;
    (archive_key(cluster, file) == key).then_some(file)
}

/// Where `walvault drill` stores its report: `<cluster>/drills/<ms>.json`
/// in the staging bucket, outside `staging/` so that the compress function
/// leaves it alone.
pub fn drill_report_key(cluster: &ClusterName, started_at_ms: u64) -> String {
    format!("{}{started_at_ms:013}.json", drill_prefix(cluster))
}

pub fn drill_prefix(cluster: &ClusterName) -> String {
    format!("{cluster}/{DRILL_DIR}/")
}

pub fn identity_key(cluster: &ClusterName) -> String {
    identity_key_of(cluster.as_str())
}

/// Reads a (URL-decoded) staging key back into its cluster and file name.
pub fn parse_staging_key(key: &str) -> Result<(ClusterName, ArchivedFile), KeyError> {
    let not_staging = || KeyError::NotStagingKey(key.to_owned());
    let mut parts = key.splitn(3, '/');
    let (Some(cluster), Some(STAGING_DIR), Some(name)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(not_staging());
    };
    let cluster = cluster.parse().map_err(|_| not_staging())?;
    let name = name.parse().map_err(|_| not_staging())?;
    Ok((cluster, name))
}

/// Decodes an object key as S3 event notifications carry it: form-encoded,
/// so `+` is a space and everything else is percent-encoded (some stores
/// encode `/` as `%2F`, others leave it).
pub fn decode_event_key(raw: &str) -> Result<String, KeyError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|key| key.into_owned())
        .map_err(|_| KeyError::BadEventKey(raw.to_owned()))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("event key {0:?} does not decode to UTF-8")]
    BadEventKey(String),
    #[error("{0:?} is not a cluster name (lower-case letters, digits, '-' and '_', 1 to 63 bytes, starting with a letter or digit)")]
    BadClusterName(String),
    #[error(
        "{0:?} is not a walvault staging key (<cluster>/staging/<wal file name or backup part>)"
    )]
    NotStagingKey(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalFileName;

    fn cluster() -> ClusterName {
        "orders-db".parse().unwrap()
    }

    fn name(s: &str) -> WalFileName {
        s.parse().unwrap()
    }

    #[test]
    fn layout_is_as_documented() {
        let seg = name("000000010000000000000003");
        assert_eq!(
            staging_key(&cluster(), seg),
            "orders-db/staging/000000010000000000000003"
        );
        assert_eq!(
            archive_key(&cluster(), seg),
            "orders-db/wal/000000010000000000000003.zst"
        );
        assert_eq!(identity_key(&cluster()), "orders-db/identity.json");
        assert!(staging_key(&cluster(), seg).starts_with(&staging_prefix(&cluster())));
    }

    #[test]
    fn keys_parse_back_for_every_kind() {
        for n in [
            "000000010000000000000003",
            "000000010000000000000003.partial",
            "00000002.history",
            "000000010000000000000003.00000028.backup",
        ] {
            let n = name(n);
            assert_eq!(
                parse_staging_key(&staging_key(&cluster(), n)).unwrap(),
                (cluster(), n.into())
            );
        }
        let chunk: ArchivedFile = "backup/20261127T101500Z/000003".parse().unwrap();
        let key = staging_key(&cluster(), chunk);
        assert_eq!(key, "orders-db/staging/backup/20261127T101500Z/000003");
        assert_eq!(parse_staging_key(&key).unwrap(), (cluster(), chunk));
        assert_eq!(
            archive_key(&cluster(), chunk),
            "orders-db/backup/20261127T101500Z/000003.zst"
        );
    }

    #[test]
    fn foreign_keys_are_refused() {
        for key in [
            "",
            "orders-db/000000010000000000000003",
            "orders-db/staging/000000010000000000000003/x",
            "orders-db/staging/backup/20261127T101500Z",
            "orders-db/staging/backup/20261127T101500Z/3",
            "orders-db/staging/not-wal",
            "orders-db/wal/000000010000000000000003.zst",
            "Orders/staging/000000010000000000000003",
            "orders-db/identity.json",
            "/orders-db/staging/000000010000000000000003",
        ] {
            assert!(parse_staging_key(key).is_err(), "{key:?} accepted");
        }
    }

    #[test]
    fn archive_keys_list_in_wal_order() {
        let names = [
            "000000010000000000000001",
            "0000000100000000000000FF",
            "000000010000000000000100.partial",
            "000000010000000100000000",
            "00000002.history",
            "000000020000000100000000",
        ];
        let keys: Vec<String> = names
            .iter()
            .map(|n| archive_key(&cluster(), name(n)))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn archive_keys_parse_back_to_their_files_and_nothing_else_does() {
        for n in ["000000010000000000000001", "00000002.history"] {
            let key = archive_key(&cluster(), name(n));
            assert_eq!(parse_archive_key(&cluster(), &key), Some(name(n).into()));
        }
        let chunk: ArchivedFile = "backup/20261127T101500Z/000001".parse().unwrap();
        let key = archive_key(&cluster(), chunk);
        assert_eq!(parse_archive_key(&cluster(), &key), Some(chunk));
        for key in [
            "orders-db/wal/000000010000000000000001",
            "other/wal/000000010000000000000001.zst",
            "orders-db/wal/notwal.zst",
            "orders-db/000000010000000000000001.zst",
        ] {
            assert_eq!(parse_archive_key(&cluster(), key), None, "{key}");
        }
    }

    #[test]
    fn event_keys_are_form_decoded() {
        for (raw, decoded) in [
            (
                "orders-db/staging/000000010000000000000003",
                "orders-db/staging/000000010000000000000003",
            ),
            (
                "orders-db%2Fstaging%2F000000010000000000000003",
                "orders-db/staging/000000010000000000000003",
            ),
            ("a+b%2Bc", "a b+c"),
            ("caf%C3%A9", "café"),
            ("100%", "100%"),
        ] {
            assert_eq!(decode_event_key(raw).unwrap(), decoded, "{raw}");
        }
        assert_eq!(
            decode_event_key("%FF"),
            Err(KeyError::BadEventKey("%FF".into()))
        );
    }

    #[test]
    fn cluster_names_are_checked() {
        for good in ["a", "db1", "orders_eu-west-1", &"x".repeat(63)] {
            assert!(good.parse::<ClusterName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "-db",
            "Db",
            "db/1",
            "db 1",
            "db.1",
            &"x".repeat(64),
            "é",
        ] {
            assert!(bad.parse::<ClusterName>().is_err(), "{bad}");
        }
    }
}
