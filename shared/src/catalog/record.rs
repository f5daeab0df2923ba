//! The catalog record of one archived WAL file and its DynamoDB item form.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;

use super::CatalogError;
use crate::codec::Sha256Hex;
use crate::config::Provider;
use crate::keys::ClusterName;
use crate::wal::{WalFileKind, WalFileName};

/// Partition key: one partition per cluster.
pub const PARTITION_KEY: &str = "cluster";
/// Sort key: the WAL file name, so a query returns files in WAL order.
pub const SORT_KEY: &str = "file_name";

/// Milliseconds since the Unix epoch. Callers pass times in, so that tests
/// and the retention planner can run on a simulated clock.
pub type UnixMillis = u64;

pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordStatus {
    /// Recorded; replicas being written.
    Replicating,
    /// One replica confirmed, the other still missing.
    Partial,
    /// Both replicas confirmed; the staging copy may go.
    Replicated,
    /// The staging object failed verification and was never replicated.
    Corrupt,
}

impl RecordStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordStatus::Replicating => "replicating",
            RecordStatus::Partial => "partial",
            RecordStatus::Replicated => "replicated",
            RecordStatus::Corrupt => "corrupt",
        }
    }
}

impl FromStr for RecordStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replicating" => Ok(RecordStatus::Replicating),
            "partial" => Ok(RecordStatus::Partial),
            "replicated" => Ok(RecordStatus::Replicated),
            "corrupt" => Ok(RecordStatus::Corrupt),
            other => Err(format!("unknown status {other:?}")),
        }
    }
}

impl fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one replica was confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRecord {
    pub cluster: ClusterName,
    pub file: WalFileName,
    pub raw_size: u64,
    pub raw_sha256: Sha256Hex,
    /// From the WAL header; segments and `.partial` files only.
    pub system_identifier: Option<u64>,
    pub pg_version: Option<u32>,
    pub compressed_size: Option<u64>,
    pub compressed_sha256: Option<Sha256Hex>,
    pub status: RecordStatus,
    pub r2: Option<TargetState>,
    pub b2: Option<TargetState>,
    /// When the raw file reached the staging bucket.
    pub staged_at: UnixMillis,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub replicated_at: Option<UnixMillis>,
    /// Different content pushed later under this name, refused each time.
    pub conflicts: u64,
    pub last_conflict: Option<String>,
    /// Why the record is `corrupt` or `partial`, for humans.
    pub detail: Option<String>,
}

impl CatalogRecord {
    /// A new record for a file whose replicas are about to be written.
    pub fn replicating(
        cluster: ClusterName,
        file: WalFileName,
        raw_size: u64,
        raw_sha256: Sha256Hex,
        staged_at: UnixMillis,
        now: UnixMillis,
    ) -> Self {
        CatalogRecord {
            cluster,
            file,
            raw_size,
            raw_sha256,
            system_identifier: None,
            pg_version: None,
            compressed_size: None,
            compressed_sha256: None,
            status: RecordStatus::Replicating,
            r2: None,
            b2: None,
            staged_at,
            created_at: now,
            updated_at: now,
            replicated_at: None,
            conflicts: 0,
            last_conflict: None,
            detail: None,
        }
    }

    pub fn target(&self, provider: Provider) -> Option<&TargetState> {
        match provider {
            Provider::R2 => self.r2.as_ref(),
            Provider::B2 => self.b2.as_ref(),
        }
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::new();
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: u64| AttributeValue::N(v.to_string());
        item.insert(PARTITION_KEY.into(), s(self.cluster.as_str()));
        item.insert(SORT_KEY.into(), s(&self.file.to_string()));
        item.insert("kind".into(), s(self.file.kind().as_str()));
        item.insert("timeline".into(), n(u64::from(self.file.timeline())));
        item.insert("raw_size".into(), n(self.raw_size));
        item.insert("raw_sha256".into(), s(self.raw_sha256.as_str()));
        item.insert("status".into(), s(self.status.as_str()));
        item.insert("staged_at".into(), n(self.staged_at));
        item.insert("created_at".into(), n(self.created_at));
        item.insert("updated_at".into(), n(self.updated_at));
        item.insert("conflicts".into(), n(self.conflicts));
        if let Some(v) = self.system_identifier {
            item.insert("system_identifier".into(), s(&v.to_string()));
        }
        if let Some(v) = self.pg_version {
            item.insert("pg_version".into(), n(u64::from(v)));
        }
        if let Some(v) = self.compressed_size {
            item.insert("compressed_size".into(), n(v));
        }
        if let Some(v) = &self.compressed_sha256 {
            item.insert("compressed_sha256".into(), s(v.as_str()));
        }
        if let Some(v) = self.replicated_at {
            item.insert("replicated_at".into(), n(v));
        }
        if let Some(v) = &self.last_conflict {
            item.insert("last_conflict".into(), s(v));
        }
        if let Some(v) = &self.detail {
            item.insert("detail".into(), s(v));
        }
        for provider in Provider::ALL {
            if let Some(t) = self.target(provider) {
                item.insert(provider.as_str().into(), t.to_attribute());
            }
        }
        item
    }

    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, CatalogError> {
        let fields = Fields(item);
        let cluster = fields
            .string(PARTITION_KEY)?
            .parse()
            .map_err(|e: crate::keys::KeyError| fields.malformed(PARTITION_KEY, e.to_string()))?;
        let file: WalFileName = fields
            .string(SORT_KEY)?
            .parse()
            .map_err(|e: crate::wal::NameError| fields.malformed(SORT_KEY, e.to_string()))?;
        if let Some(kind) = fields.opt_string("kind")? {
            let kind: WalFileKind = kind
                .parse()
                .map_err(|e: crate::wal::NameError| fields.malformed("kind", e.to_string()))?;
            if kind != file.kind() {
                return Err(fields.malformed(
                    "kind",
                    format!("{kind} does not match the file name {file}"),
                ));
            }
        }
        let sha = |name: &str, v: String| {
            Sha256Hex::parse(&v).map_err(|e| fields.malformed(name, e.to_string()))
        };
        Ok(CatalogRecord {
            cluster,
            file,
            raw_size: fields.number("raw_size")?,
            raw_sha256: sha("raw_sha256", fields.string("raw_sha256")?)?,
            system_identifier: fields
                .opt_string("system_identifier")?
                .map(|v| {
                    v.parse()
                        .map_err(|_| fields.malformed("system_identifier", v.clone()))
                })
                .transpose()?,
            pg_version: fields
                .opt_number("pg_version")?
                .map(|v| {
                    u32::try_from(v).map_err(|_| fields.malformed("pg_version", v.to_string()))
                })
                .transpose()?,
            compressed_size: fields.opt_number("compressed_size")?,
            compressed_sha256: fields
                .opt_string("compressed_sha256")?
                .map(|v| sha("compressed_sha256", v))
                .transpose()?,
            status: fields
                .string("status")?
                .parse()
                .map_err(|e| fields.malformed("status", e))?,
            r2: fields.target(Provider::R2)?,
            b2: fields.target(Provider::B2)?,
            staged_at: fields.number("staged_at")?,
            created_at: fields.number("created_at")?,
            updated_at: fields.number("updated_at")?,
            replicated_at: fields.opt_number("replicated_at")?,
            conflicts: fields.opt_number("conflicts")?.unwrap_or(0),
            last_conflict: fields.opt_string("last_conflict")?,
            detail: fields.opt_string("detail")?,
        })
    }
}

impl TargetState {
    pub(crate) fn to_attribute(&self) -> AttributeValue {
        let mut m = HashMap::new();
        m.insert("key".to_owned(), AttributeValue::S(self.key.clone()));
        m.insert("size".to_owned(), AttributeValue::N(self.size.to_string()));
        m.insert("at".to_owned(), AttributeValue::N(self.at.to_string()));
        if let Some(etag) = &self.etag {
            m.insert("etag".to_owned(), AttributeValue::S(etag.clone()));
        }
        AttributeValue::M(m)
    }
}

/// Typed reads from an item, each failure naming the attribute.
struct Fields<'a>(&'a HashMap<String, AttributeValue>);

impl Fields<'_> {
    fn malformed(&self, attribute: &str, reason: String) -> CatalogError {
        let file = self
            .0
            .get(SORT_KEY)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_else(|| "<no file_name>".into());
        CatalogError::Malformed {
            file,
            attribute: attribute.to_owned(),
            reason,
        }
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, CatalogError> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.malformed(name, "not a string".into())),
        }
    }

    fn string(&self, name: &str) -> Result<String, CatalogError> {
        self.opt_string(name)?
            .ok_or_else(|| self.malformed(name, "missing".into()))
    }

    fn opt_number(&self, name: &str) -> Result<Option<u64>, CatalogError> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(n)) => n
                .parse()
                .map(Some)
                .map_err(|_| self.malformed(name, format!("{n:?} is not a whole number"))),
            Some(_) => Err(self.malformed(name, "not a number".into())),
        }
    }

    fn number(&self, name: &str) -> Result<u64, CatalogError> {
        self.opt_number(name)?
            .ok_or_else(|| self.malformed(name, "missing".into()))
    }

    fn target(&self, provider: Provider) -> Result<Option<TargetState>, CatalogError> {
        let name = provider.as_str();
        let map = match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => return Ok(None),
            Some(AttributeValue::M(m)) => m,
            Some(_) => return Err(self.malformed(name, "not a map".into())),
        };
        let inner = Fields(map);
        let nested = |e: CatalogError| match e {
            CatalogError::Malformed {
                attribute, reason, ..
            } => self.malformed(&format!("{name}.{attribute}"), reason),
            other => other,
        };
        Ok(Some(TargetState {
            key: inner.string("key").map_err(nested)?,
            size: inner.number("size").map_err(nested)?,
            etag: inner.opt_string("etag").map_err(nested)?,
            at: inner.number("at").map_err(nested)?,
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(cluster: &str, file: &str) -> CatalogRecord {
        CatalogRecord {
            system_identifier: Some(7_301_234_567_890_123_456),
            pg_version: Some(15),
            ..CatalogRecord::replicating(
                cluster.parse().unwrap(),
                file.parse().unwrap(),
                16 << 20,
                Sha256Hex::of(file.as_bytes()),
                1_700_000_000_000,
                1_700_000_000_500,
            )
        }
    }

    #[test]
    fn items_round_trip_with_every_field() {
        let mut record = sample("main", "000000010000000000000007");
        let minimal = record.clone();
        assert_eq!(
            CatalogRecord::from_item(&minimal.to_item()).unwrap(),
            minimal
        );

        record.compressed_size = Some(1234);
        record.compressed_sha256 = Some(Sha256Hex::of(b"z"));
        record.status = RecordStatus::Replicated;
        record.r2 = Some(TargetState {
            key: "main/wal/000000010000000000000007.zst".into(),
            size: 1234,
            etag: Some("\"abc\"".into()),
            at: 5,
        });
        record.b2 = Some(TargetState {
            key: "main/wal/000000010000000000000007.zst".into(),
            size: 1234,
            etag: None,
            at: 6,
        });
        record.replicated_at = Some(7);
        record.conflicts = 2;
        record.last_conflict = Some("sha256 differs".into());
        record.detail = Some("note".into());
        assert_eq!(CatalogRecord::from_item(&record.to_item()).unwrap(), record);
    }

    #[test]
    fn the_item_carries_kind_and_timeline_for_queries() {
        let item = sample("main", "0000000300000000000000A0.partial").to_item();
        assert_eq!(item["kind"], AttributeValue::S("partial".into()));
        assert_eq!(item["timeline"], AttributeValue::N("3".into()));
    }

    #[test]
    fn malformed_items_name_the_attribute() {
        let good = sample("main", "000000010000000000000007").to_item();
        let cases: Vec<(&str, Option<AttributeValue>)> = vec![
            ("raw_size", None),
            ("raw_size", Some(AttributeValue::S("big".into()))),
            ("raw_sha256", Some(AttributeValue::S("nothex".into()))),
            ("status", Some(AttributeValue::S("lost".into()))),
            ("kind", Some(AttributeValue::S("history".into()))),
            ("file_name", Some(AttributeValue::S("x".into()))),
            ("r2", Some(AttributeValue::M(HashMap::new()))),
        ];
        for (attribute, value) in cases {
            let mut item = good.clone();
            match value {
                Some(v) => item.insert(attribute.to_owned(), v),
                None => item.remove(attribute),
            };
            match CatalogRecord::from_item(&item) {
                Err(CatalogError::Malformed { attribute: a, .. }) => {
                    assert!(a.starts_with(attribute), "{a} vs {attribute}")
                }
                other => panic!("{attribute}: {other:?}"),
            }
        }
    }
}
