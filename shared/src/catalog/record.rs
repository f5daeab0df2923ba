//! The catalog record of one archived WAL file and its DynamoDB item form.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::CatalogError;
use crate::backup::descriptor::BackupSummary;
use crate::clock::UnixMillis;
use crate::codec::Sha256Hex;
use crate::file::ArchivedFile;
use crate::keys::{meta, ClusterName};
use crate::provider::Provider;
use crate::seal::{Fingerprint, Recipients, Sealing};
use crate::store::Metadata;

/// The item's attribute names: the table's key schema and every attribute
/// walvault writes (the infra reads them from the contract, see
/// [`crate::contract`]). Each replica is an attribute named after its
/// provider (`r2`, `b2`), a map of [`TARGET_ATTRIBUTES`].
pub mod attr {
    /// Partition key: one partition per cluster.
    pub const CLUSTER: &str = "cluster";
    /// Sort key: the WAL file name, so a query returns files in WAL order.
    pub const FILE_NAME: &str = "file_name";
    pub const KIND: &str = "kind";
    pub const TIMELINE: &str = "timeline";
    pub const RAW_SIZE: &str = "raw_size";
    pub const RAW_SHA256: &str = "raw_sha256";
    pub const SYSTEM_IDENTIFIER: &str = "system_identifier";
    pub const PG_VERSION: &str = "pg_version";
    pub const COMPRESSED_SIZE: &str = "compressed_size";
    pub const COMPRESSED_SHA256: &str = "compressed_sha256";
    pub const STATUS: &str = "status";
    pub const STAGED_AT: &str = "staged_at";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";
    pub const REPLICATED_AT: &str = "replicated_at";
    pub const CONFLICTS: &str = "conflicts";
    pub const LAST_CONFLICT: &str = "last_conflict";
    pub const DETAIL: &str = "detail";
    /// Backup descriptors: the backup's summary, as JSON.
    pub const BACKUP: &str = "backup";
    /// Sealed files: the replicas' content tag (see [`super::RecordSeal`]).
    pub const SEAL_TAG: &str = "seal_tag";
    /// Sealed files: the public recipients (`age1…`), separated by spaces.
    pub const SEALED_TO: &str = "sealed_to";
    /// Timeline history files: their bytes (binary: the text is in the
    /// database's encoding), for the retention function, which cannot open
    /// sealed copies.
    pub const HISTORY: &str = "history";

    /// Every top-level attribute but the per-provider replica maps.
    pub const ALL: [&str; 22] = [
        CLUSTER,
        FILE_NAME,
        KIND,
        TIMELINE,
        RAW_SIZE,
        RAW_SHA256,
        SYSTEM_IDENTIFIER,
        PG_VERSION,
        COMPRESSED_SIZE,
        COMPRESSED_SHA256,
        STATUS,
        STAGED_AT,
        CREATED_AT,
        UPDATED_AT,
        REPLICATED_AT,
        CONFLICTS,
        LAST_CONFLICT,
        DETAIL,
        BACKUP,
        SEAL_TAG,
        SEALED_TO,
        HISTORY,
    ];

    /// A cluster item's attributes (see [`crate::catalog::ClusterItem`]);
    /// the body's name is the summary's, the first such item.
    pub const ITEM_VERSION: &str = "version";
    pub const ITEM_BODY: &str = "summary";

    /// The fields of a replica map.
    pub const TARGET_ATTRIBUTES: [&str; 5] = ["key", "size", "etag", "at", "stored_sha256"];
}

pub use attr::{CLUSTER as PARTITION_KEY, FILE_NAME as SORT_KEY};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordStatus {
    /// Recorded; replicas being written.
    Replicating,
    /// Some replica confirmed, another still missing.
    Partial,
    /// Every replica confirmed; the staging copy may go.
    Replicated,
    /// The staging object failed verification and was never replicated.
    Corrupt,
}

impl RecordStatus {
    pub const ALL: [RecordStatus; 4] = [
        RecordStatus::Replicating,
        RecordStatus::Partial,
        RecordStatus::Replicated,
        RecordStatus::Corrupt,
    ];

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
        RecordStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
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
    /// The sha256 of the bytes this delivery stored, when it wrote them
    /// (not when it found them there): how a sealed copy is verified
    /// where no identity can open it (the retention function's repair).
    pub stored_sha256: Option<Sha256Hex>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRecord {
    pub cluster: ClusterName,
    pub file: ArchivedFile,
    pub raw_size: u64,
    pub raw_sha256: Sha256Hex,
    /// From the WAL header; segments and `.partial` files only.
    pub system_identifier: Option<u64>,
    pub pg_version: Option<u32>,
    pub compressed_size: Option<u64>,
    pub compressed_sha256: Option<Sha256Hex>,
    pub status: RecordStatus,
    /// The replicas confirmed so far, by provider.
    pub targets: BTreeMap<Provider, TargetState>,
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
    /// A backup descriptor's summary (set when the record is created).
    pub backup: Option<BackupSummary>,
    /// How the replicas are sealed; `None` for plain copies.
    pub seal: Option<RecordSeal>,
    /// A timeline history file's bytes (set when the record is created).
    pub history: Option<Vec<u8>>,
}

/// How a file's replicas are sealed (see [`crate::seal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSeal {
    /// What the replicas carry as their content tag where plain copies
    /// carry the raw sha256: keyed by the cluster's tag key, so that it
    /// tells a provider nothing, and the same for every delivery of the
    /// file, so that a retry recognises the copy an earlier one stored.
    pub tag: Sha256Hex,
    /// The recipients the copies are sealed to: public keys, kept so that
    /// a later delivery of the file (a retry, a re-drive) seals its copies
    /// to the same keys, whatever the deployment's keys are by then.
    pub recipients: Recipients,
}

impl RecordSeal {
    /// The seal of a new record of the file whose raw bytes have
    /// `raw_sha256`.
    pub fn new(sealing: &Sealing, raw_sha256: &Sha256Hex) -> Self {
        RecordSeal {
            tag: sealing.tag_key.tag(raw_sha256),
            recipients: sealing.recipients.clone(),
        }
    }
}

impl CatalogRecord {
    /// A new record for a file whose replicas are about to be written.
    pub fn replicating(
        cluster: ClusterName,
        file: ArchivedFile,
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
            targets: BTreeMap::new(),
            staged_at,
            created_at: now,
            updated_at: now,
            replicated_at: None,
            conflicts: 0,
            last_conflict: None,
            detail: None,
            backup: None,
            seal: None,
            history: None,
        }
    }

    /// The content tag every replica of this file carries (the `sha256`
    /// metadata): the raw sha256 for plain copies, the seal's random tag
    /// for sealed ones.
    pub fn replica_tag(&self) -> &Sha256Hex {
        self.seal
            .as_ref()
            .map_or(&self.raw_sha256, |seal| &seal.tag)
    }

    /// The recipients the replicas are sealed to (none: plain).
    pub fn sealed_to(&self) -> &[Fingerprint] {
        self.seal
            .as_ref()
            .map_or(&[], |seal| seal.recipients.fingerprints())
    }

    /// The metadata of a replica besides its content tag: for a plain
    /// copy the raw size, which lets it be verified without the catalog;
    /// for a sealed one (which carries its claims inside) only a mark that
    /// it is sealed.
    pub fn replica_metadata(&self) -> Metadata {
        match self.seal {
            Some(_) => Metadata::from([(meta::SEALED.to_owned(), meta::SEALED_FORMAT.to_owned())]),
            None => Metadata::from([(meta::RAW_SIZE.to_owned(), self.raw_size.to_string())]),
        }
    }

    pub fn target(&self, provider: Provider) -> Option<&TargetState> {
        self.targets.get(&provider)
    }

    /// The compressed size of one replica: recorded at the claim for a
    /// file compressed whole, by each replica for a file streamed.
    pub fn stored_size(&self) -> Option<u64> {
        self.compressed_size
            .or_else(|| self.targets.values().map(|t| t.size).max())
    }

    /// Whether every provider's replica is recorded.
    pub fn has_every_target(&self) -> bool {
        Provider::ALL.iter().all(|p| self.targets.contains_key(p))
    }

    /// The providers whose replica is not recorded yet.
    pub fn missing_targets(&self) -> Vec<Provider> {
        Provider::ALL
            .into_iter()
            .filter(|p| !self.targets.contains_key(p))
            .collect()
    }

    pub fn to_item(&self) -> HashMap<String, AttributeValue> {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let mut item: HashMap<String, AttributeValue> = [
            (attr::CLUSTER, s(self.cluster.as_str())),
            (attr::FILE_NAME, s(&self.file.to_string())),
            (attr::KIND, s(self.file.kind().as_str())),
            (attr::RAW_SIZE, n(self.raw_size)),
            (attr::RAW_SHA256, s(self.raw_sha256.as_str())),
            (attr::STATUS, s(self.status.as_str())),
            (attr::STAGED_AT, n(self.staged_at)),
            (attr::CREATED_AT, n(self.created_at)),
            (attr::UPDATED_AT, n(self.updated_at)),
            (attr::CONFLICTS, n(self.conflicts)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let optional = [
            (
                attr::TIMELINE,
                self.file.wal().map(|name| n(u64::from(name.timeline()))),
            ),
            (
                attr::SYSTEM_IDENTIFIER,
                self.system_identifier.map(|v| s(&v.to_string())),
            ),
            (attr::PG_VERSION, self.pg_version.map(|v| n(u64::from(v)))),
            (attr::COMPRESSED_SIZE, self.compressed_size.map(n)),
            (
                attr::COMPRESSED_SHA256,
                self.compressed_sha256.as_ref().map(|v| s(v.as_str())),
            ),
            (attr::REPLICATED_AT, self.replicated_at.map(n)),
            (attr::LAST_CONFLICT, self.last_conflict.as_deref().map(s)),
            (attr::DETAIL, self.detail.as_deref().map(s)),
            (
                attr::BACKUP,
                self.backup
                    .as_ref()
                    .and_then(|b| serde_json::to_string(b).ok())
                    .map(|json| s(&json)),
            ),
            (
                attr::SEAL_TAG,
                self.seal.as_ref().map(|seal| s(seal.tag.as_str())),
            ),
            (
                attr::SEALED_TO,
                self.seal.as_ref().map(|seal| s(&seal.recipients.to_list())),
            ),
            (
                attr::HISTORY,
                self.history
                    .as_ref()
                    .map(|bytes| AttributeValue::B(Blob::new(bytes.clone()))),
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                item.insert(name.to_owned(), value);
            }
        }
        for (provider, target) in &self.targets {
            item.insert(provider.as_str().to_owned(), target.to_attribute());
        }
        item
    }

    pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, CatalogError> {
        let fields = Fields(item);
        let cluster = fields
            .string(attr::CLUSTER)?
            .parse()
            .map_err(|e: crate::keys::KeyError| fields.malformed(attr::CLUSTER, e.to_string()))?;
        let file: ArchivedFile = fields.string(attr::FILE_NAME)?.parse().map_err(
            |e: crate::file::NotArchivedFile| fields.malformed(attr::FILE_NAME, e.to_string()),
        )?;
        fields.check_kind(&file)?;
        let sha = |name: &str, v: String| {
            Sha256Hex::parse(&v).map_err(|e| fields.malformed(name, e.to_string()))
        };
        let mut targets = BTreeMap::new();
        for provider in Provider::ALL {
            if let Some(target) = fields.target(provider)? {
                targets.insert(provider, target);
            }
        }
        Ok(CatalogRecord {
            cluster,
            file,
            raw_size: fields.number(attr::RAW_SIZE)?,
            raw_sha256: sha(attr::RAW_SHA256, fields.string(attr::RAW_SHA256)?)?,
            system_identifier: fields
                .opt_string(attr::SYSTEM_IDENTIFIER)?
                .map(|v| {
                    v.parse().map_err(|_| {
                        fields.malformed(attr::SYSTEM_IDENTIFIER, "not a number".into())
                    })
                })
                .transpose()?,
            pg_version: fields
                .opt_number(attr::PG_VERSION)?
                .map(|v| {
                    u32::try_from(v)
                        .map_err(|_| fields.malformed(attr::PG_VERSION, "too large".into()))
                })
                .transpose()?,
            compressed_size: fields.opt_number(attr::COMPRESSED_SIZE)?,
            compressed_sha256: fields
                .opt_string(attr::COMPRESSED_SHA256)?
                .map(|v| sha(attr::COMPRESSED_SHA256, v))
                .transpose()?,
            status: fields
                .string(attr::STATUS)?
                .parse()
                .map_err(|e| fields.malformed(attr::STATUS, e))?,
            targets,
            staged_at: fields.number(attr::STAGED_AT)?,
            created_at: fields.number(attr::CREATED_AT)?,
            updated_at: fields.number(attr::UPDATED_AT)?,
            replicated_at: fields.opt_number(attr::REPLICATED_AT)?,
            conflicts: fields.opt_number(attr::CONFLICTS)?.unwrap_or(0),
            last_conflict: fields.opt_string(attr::LAST_CONFLICT)?,
            detail: fields.opt_string(attr::DETAIL)?,
            backup: fields
                .opt_string(attr::BACKUP)?
                .map(|json| {
                    serde_json::from_str(&json)
                        .map_err(|e| fields.malformed(attr::BACKUP, e.to_string()))
                })
                .transpose()?,
            seal: fields
                .opt_string(attr::SEAL_TAG)?
                .map(|tag| {
                    let recipients =
                        Recipients::parse(&fields.opt_string(attr::SEALED_TO)?.unwrap_or_default())
                            .map_err(|e| fields.malformed(attr::SEALED_TO, e.to_string()))?;
                    Ok::<_, CatalogError>(RecordSeal {
                        tag: sha(attr::SEAL_TAG, tag)?,
                        recipients,
                    })
                })
                .transpose()?,
            history: fields.opt_bytes(attr::HISTORY)?,
        })
    }
}

impl TargetState {
    pub(crate) fn to_attribute(&self) -> AttributeValue {
        let mut m = HashMap::from([
            ("key".to_owned(), AttributeValue::S(self.key.clone())),
            ("size".to_owned(), AttributeValue::N(self.size.to_string())),
            ("at".to_owned(), AttributeValue::N(self.at.to_string())),
        ]);
        if let Some(etag) = &self.etag {
            m.insert("etag".to_owned(), AttributeValue::S(etag.clone()));
        }
        if let Some(sha256) = &self.stored_sha256 {
            m.insert(
                "stored_sha256".to_owned(),
                AttributeValue::S(sha256.as_str().to_owned()),
            );
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
            .get(attr::FILE_NAME)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_else(|| "<no file_name>".into());
        CatalogError::Malformed {
            file,
            attribute: attribute.to_owned(),
            reason,
        }
    }

    /// The `kind` attribute, if present, must agree with the file name.
    fn check_kind(&self, file: &ArchivedFile) -> Result<(), CatalogError> {
        let Some(kind) = self.opt_string(attr::KIND)? else {
            return Ok(());
        };
        if kind == file.kind().as_str() {
            Ok(())
        } else {
            Err(self.malformed(
                attr::KIND,
                format!("{kind} does not match the file name {file}"),
            ))
        }
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, CatalogError> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.malformed(name, "not a string".into())),
        }
    }

    fn opt_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, CatalogError> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::B(blob)) => Ok(Some(blob.as_ref().to_vec())),
            Some(_) => Err(self.malformed(name, "not binary".into())),
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
                .map_err(|_| self.malformed(name, "not a whole number".into())),
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
            stored_sha256: inner
                .opt_string("stored_sha256")
                .map_err(nested)?
                .map(|v| {
                    Sha256Hex::parse(&v).map_err(|e| {
                        self.malformed(&format!("{name}.stored_sha256"), e.to_string())
                    })
                })
                .transpose()?,
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
        record.targets.insert(
            Provider::R2,
            TargetState {
                key: "main/wal/000000010000000000000007.zst".into(),
                size: 1234,
                etag: Some("\"abc\"".into()),
                at: 5,
                stored_sha256: None,
            },
        );
        record.targets.insert(
            Provider::B2,
            TargetState {
                key: "main/wal/000000010000000000000007.zst".into(),
                size: 1234,
                etag: None,
                at: 6,
                stored_sha256: None,
            },
        );
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
