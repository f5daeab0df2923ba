//! The cluster's identity: the PostgreSQL system identifier every pushed
//! segment must carry. Pinned in configuration, or learned from the first
//! segment ever pushed and kept, conditionally created, in the staging
//! bucket (`<cluster>/identity.json`) so every host agrees on it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::Sha256Hex;
use crate::error::Retryable;
use crate::keys::{identity_key, ClusterName};
use crate::retry::TimedOut;
use crate::store::{Metadata, ObjectStore, StoreError};
use crate::wal::WalHeader;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// A string: JSON numbers lose precision past 2^53 in many readers.
    pub system_identifier: String,
    pub segment_size: u64,
    pub pg_version: u32,
    /// The segment it was learned from, and where.
    pub learned_from: String,
    pub host: String,
}

impl ClusterIdentity {
    pub fn system_identifier(&self) -> Result<u64, IdentityError> {
        self.system_identifier.parse().map_err(|_| {
            IdentityError::Malformed(format!("system_identifier {:?}", self.system_identifier))
        })
    }
}

/// Where the expected identity came from, for the refusal message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    Config,
    Staging,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The segment's system identifier is not the cluster's. (A pinned
    /// identifier is configuration, so it is not printed.)
    #[error(
        "segment belongs to another PostgreSQL cluster: its system identifier is {found}, but cluster {cluster} {}",
        match recorded_in { IdentitySource::Config => "is pinned to another by WALVAULT_SYSTEM_IDENTIFIER".to_owned(), IdentitySource::Staging => format!("is {expected}, as recorded in the staging bucket's identity.json") }
    )]
    WrongCluster {
        cluster: String,
        expected: u64,
        found: u64,
        recorded_in: IdentitySource,
    },
    #[error("the cluster identity object is unreadable: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Retryable for IdentityError {
    fn is_permanent(&self) -> bool {
        match self {
            IdentityError::Store(e) => e.is_permanent(),
            IdentityError::WrongCluster { .. } | IdentityError::Malformed(_) => true,
        }
    }
}

impl From<TimedOut> for IdentityError {
    fn from(timed_out: TimedOut) -> Self {
        IdentityError::Store(timed_out.into())
    }
}

/// Checks `header` against the cluster's identity, learning it from this
/// segment when nothing is known yet. Returns the identity in force.
pub async fn check_identity(
    staging: &dyn ObjectStore,
    cluster: &ClusterName,
    pinned: Option<u64>,
    header: &WalHeader,
    learned_from: &str,
    host: &str,
) -> Result<u64, IdentityError> {
    let found = header.system_identifier;
    let wrong = |expected, recorded_in| IdentityError::WrongCluster {
        cluster: cluster.to_string(),
        expected,
        found,
        recorded_in,
    };
    if let Some(expected) = pinned {
        return if expected == found {
            Ok(expected)
        } else {
            Err(wrong(expected, IdentitySource::Config))
        };
    }
    let key = identity_key(cluster);
    let expected = match read(staging, &key).await? {
        Some(identity) => identity.system_identifier()?,
        None => {
            let ours = ClusterIdentity {
                system_identifier: found.to_string(),
                segment_size: header.segment_size.bytes(),
                pg_version: header.pg_version.0,
                learned_from: learned_from.to_owned(),
                host: host.to_owned(),
            };
            let body = Bytes::from(
                serde_json::to_vec_pretty(&ours)
                    .map_err(|e| IdentityError::Malformed(e.to_string()))?,
            );
            match staging
                .put_if_absent(&key, body.clone(), &Sha256Hex::of(&body), &Metadata::new())
                .await
            {
                Ok(_) => found,
                // Another host learned it first: theirs stands.
                Err(StoreError::PreconditionFailed { .. }) => match read(staging, &key).await? {
                    Some(identity) => identity.system_identifier()?,
                    None => {
                        return Err(IdentityError::Malformed(
                            "identity object vanished after a conflicting create".into(),
                        ))
                    }
                },
                Err(e) => return Err(e.into()),
            }
        }
    };
    if expected == found {
        Ok(expected)
    } else {
        Err(wrong(expected, IdentitySource::Staging))
    }
}

/// The identity recorded in staging, if any host has pushed a segment yet.
pub async fn recorded_identity(
    staging: &dyn ObjectStore,
    cluster: &ClusterName,
) -> Result<Option<ClusterIdentity>, IdentityError> {
    read(staging, &identity_key(cluster)).await
}

async fn read(
    staging: &dyn ObjectStore,
    key: &str,
) -> Result<Option<ClusterIdentity>, IdentityError> {
    match staging.get(key).await {
        Ok(object) => serde_json::from_slice(&object.body)
            .map(Some)
            .map_err(|e| IdentityError::Malformed(e.to_string())),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
