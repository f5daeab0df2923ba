//! Whether a cluster's new copies are sealed, kept in the catalog (the
//! cluster item `encryption`), so that a deployment that lost its
//! recipient variable cannot turn encryption off unseen: the compress
//! function compares it with its configuration at every cold start, and
//! refuses to start rather than store plain copies of a sealed cluster.
//! Turning encryption off is `WALVAULT_ENCRYPTION_OFF`, and is recorded.

use serde::{Deserialize, Serialize};

use super::{Fingerprint, Sealing, TagKey};
use crate::catalog::{Catalog, CatalogError, ClusterItemKind};
use crate::clock::UnixMillis;
use crate::config::Encryption;
use crate::error::Retryable;
use crate::keys::ClusterName;
use crate::retry::Budget;

/// The cluster's encryption, as the last compress function to start
/// recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionState {
    pub sealed: bool,
    /// Whom new copies are sealed to (empty when not sealed).
    pub recipients: Vec<Fingerprint>,
    /// When this state was recorded.
    pub since: UnixMillis,
    /// The cluster's [`TagKey`] (hex in the item; never in a log line):
    /// made when the cluster is first sealed, kept through rotations and
    /// turning encryption off.
    #[serde(default)]
    pub tag_key: Option<TagKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The catalog says new copies are sealed, and this deployment has no
    /// recipient: it must not store plain copies.
    #[error("the catalog says this cluster's copies are sealed (to {}), but WALVAULT_RECIPIENTS is not set: set it, or set WALVAULT_ENCRYPTION_OFF=true to store new copies unencrypted", super::listed(recipients))]
    RecipientsMissing { recipients: Vec<Fingerprint> },
    #[error("the cluster's encryption state in the catalog")]
    Catalog(#[source] CatalogError),
    #[error("the cluster's encryption state in the catalog is not readable: {0}")]
    Unreadable(String),
}

impl Retryable for StateError {
    fn is_permanent(&self) -> bool {
        match self {
            StateError::Catalog(e) => e.is_permanent(),
            StateError::RecipientsMissing { .. } | StateError::Unreadable(_) => true,
        }
    }
}

/// What the catalog says (`None`: nothing recorded, a cluster that was
/// never sealed).
pub async fn read(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    budget: &Budget,
) -> Result<Option<(u64, EncryptionState)>, StateError> {
    let item = budget
        .run("catalog read encryption", || {
            catalog.get_cluster_item(cluster, ClusterItemKind::Encryption)
        })
        .await
        .map_err(StateError::Catalog)?;
    item.map(|item| {
        serde_json::from_str(&item.body)
            .map(|state| (item.version, state))
            .map_err(|e| StateError::Unreadable(e.to_string()))
    })
    .transpose()
}

/// Checks `configured` against the catalog at start-up and records a
/// change: sealing turned on, recipients rotated, or sealing turned off
/// explicitly. Refuses a deployment with no recipients for a cluster the
/// catalog says is sealed. How the deployment seals, if it does.
pub async fn check_at_start(
    catalog: &dyn Catalog,
    cluster: &ClusterName,
    configured: &Encryption,
    budget: &Budget,
    now: UnixMillis,
) -> Result<Option<Sealing>, StateError> {
    // Two functions starting at once may both write: the loser reads
    // again and finds the state it wanted, or writes over the other's.
    for _ in 0..3 {
        let current = read(catalog, cluster, budget).await?;
        let wanted = match (configured, &current) {
            (Encryption::Unset, Some((_, state))) if state.sealed => {
                return Err(StateError::RecipientsMissing {
                    recipients: state.recipients.clone(),
                })
            }
            (Encryption::Unset, _) | (Encryption::Off, None) => return Ok(None),
            (Encryption::Off, Some(_)) => (false, Vec::new()),
            (Encryption::To(to), _) => (true, to.fingerprints().to_vec()),
        };
        let kept_key = current
            .as_ref()
            .and_then(|(_, state)| state.tag_key.clone());
        let tag_key = match (kept_key, wanted.0) {
            (Some(key), _) => Some(key),
            (None, true) => {
                Some(TagKey::random().map_err(|e| StateError::Unreadable(e.to_string()))?)
            }
            (None, false) => None,
        };
        let sealing = match (configured, &tag_key) {
            (Encryption::To(to), Some(tag_key)) => Some(Sealing {
                recipients: to.clone(),
                tag_key: tag_key.clone(),
            }),
            _ => None,
        };
        if let Some((_, state)) = &current {
            let same_key = state.tag_key.is_some() || tag_key.is_none();
            if (state.sealed, &state.recipients) == (wanted.0, &wanted.1) && same_key {
                return Ok(sealing);
            }
        }
        let state = EncryptionState {
            sealed: wanted.0,
            recipients: wanted.1,
            since: now,
            tag_key: tag_key.clone(),
        };
        let body =
            serde_json::to_string(&state).map_err(|e| StateError::Unreadable(e.to_string()))?;
        let expected = current.map(|(version, _)| version);
        let written = budget
            .run("catalog write encryption", || {
                catalog.put_cluster_item(cluster, ClusterItemKind::Encryption, expected, &body)
            })
            .await;
        match written {
            Ok(()) => {
                tracing::info!(sealed = state.sealed, recipients = %super::listed(&state.recipients), "recorded the cluster's encryption");
                return Ok(sealing);
            }
            Err(CatalogError::ConditionFailed { .. }) => continue,
            Err(e) => return Err(StateError::Catalog(e)),
        }
    }
    Err(StateError::Unreadable(
        "changed by another writer three times in a row".into(),
    ))
}
