//! The last recovery drill: `walvault drill` stores each report in the
//! staging bucket under `<cluster>/drills/` (the host may write there, not
//! to the catalog); status lists that prefix and reads the newest.

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::keys::{drill_prefix, ClusterName};
use crate::retry::Budget;
use crate::store::{list_all, ObjectStore, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDrill {
    pub started_at_ms: UnixMillis,
    pub passed: bool,
    pub failure: Option<String>,
    pub target: Option<String>,
    /// The last transaction replayed.
    pub recovered_to: Option<String>,
}

/// The newest drill report of `cluster`, if any. A report that does not
/// parse is a failed drill: something wrote it that status cannot trust.
pub async fn last_drill(
    staging: &dyn ObjectStore,
    cluster: &ClusterName,
    budget: &Budget,
) -> Result<Option<LastDrill>, StoreError> {
    let prefix = drill_prefix(cluster);
    let reports = budget
        .run(format!("staging list {prefix}"), || {
            list_all(staging, &prefix)
        })
        .await?;
    // Keys carry the start time in fixed-width digits: the greatest is the newest.
    let Some(newest) = reports
        .iter()
        .filter(|o| o.key.ends_with(".json"))
        .map(|o| o.key.as_str())
        .max()
    else {
        return Ok(None);
    };
    let object = budget
        .run(format!("staging get {newest}"), || staging.get(newest))
        .await?;
    Ok(Some(serde_json::from_slice(&object.body).unwrap_or_else(
        |e| LastDrill {
            started_at_ms: started_at(newest),
            passed: false,
            failure: Some(format!("the report {newest} does not parse: {e}")),
            target: None,
            recovered_to: None,
        },
    )))
}

fn started_at(key: &str) -> UnixMillis {
    key.rsplit('/')
        .next()
        .and_then(|name| name.strip_suffix(".json"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sha256Hex;
    use crate::keys::drill_report_key;
    use crate::store::{MemoryStore, Metadata};
    use bytes::Bytes;
    use std::time::Duration;

    async fn put(store: &MemoryStore, key: &str, body: &str) {
        let body = Bytes::from(body.to_owned());
        let sha = Sha256Hex::of(&body);
        store
            .put_if_absent(key, body, &sha, &Metadata::new())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_newest_report_is_read_and_an_unreadable_one_is_a_failure() {
        let cluster: ClusterName = "main".parse().unwrap();
        let store = MemoryStore::new("staging");
        let budget = Budget::attempts(1, Duration::from_secs(5));
        assert_eq!(last_drill(&store, &cluster, &budget).await.unwrap(), None);
        put(
            &store,
            &drill_report_key(&cluster, 1_000),
            r#"{"cluster":"main","started_at_ms":1000,"passed":true,"failure":null,"target":"latest","recovered_to":"2026-11-27 10:15:00+00","checks":[]}"#,
        )
        .await;
        put(
            &store,
            &drill_report_key(&cluster, 900),
            r#"{"passed":false}"#,
        )
        .await;
        let drill = last_drill(&store, &cluster, &budget)
            .await
            .unwrap()
            .unwrap();
        assert!(drill.passed);
        assert_eq!(drill.started_at_ms, 1_000);
        put(&store, &drill_report_key(&cluster, 2_000), "not json").await;
        let drill = last_drill(&store, &cluster, &budget)
            .await
            .unwrap()
            .unwrap();
        assert!(!drill.passed);
        assert_eq!(drill.started_at_ms, 2_000);
        assert!(drill.failure.unwrap().contains("does not parse"));
    }
}
