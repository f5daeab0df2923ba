//! Objects under the cluster's prefix on a provider that no catalog record
//! names: storage paid for and never restored from, or, after the
//! catalog was rolled back (DynamoDB's own point-in-time recovery), files
//! the catalog has forgotten. Listed, never deleted.

use std::collections::BTreeSet;

use crate::backends::Replicas;
use crate::error::chain;
use crate::keys::ClusterName;
use crate::store::ListPage;

use super::check::Checker;
use super::report::{Orphan, Unchecked};

pub(super) struct Found {
    pub orphans: Vec<Orphan>,
    /// Providers whose listing failed part-way.
    pub unlisted: Vec<Unchecked>,
}

/// Every object under `<cluster>/` on every replica whose key is not in
/// `expected`.
pub(super) async fn find(
    cluster: &ClusterName,
    replicas: &Replicas,
    expected: &BTreeSet<String>,
    checker: &Checker,
) -> Found {
    let prefix = format!("{cluster}/");
    let mut found = Found {
        orphans: Vec::new(),
        unlisted: Vec::new(),
    };
    for replica in replicas.iter() {
        let mut after: Option<String> = None;
        loop {
            let page = checker
                .budget()
                .run(format!("{} list {prefix}", replica.provider), || {
                    replica.store.list_page(&prefix, after.as_deref())
                })
                .await;
            let ListPage { objects, truncated } = match page {
                Ok(page) => page,
                Err(e) => {
                    found.unlisted.push(Unchecked {
                        file: "listing".into(),
                        provider: replica.provider,
                        reason: chain(&e),
                    });
                    break;
                }
            };
            after = objects.last().map(|o| o.key.clone());
            found.orphans.extend(
                objects
                    .into_iter()
                    .filter(|o| !expected.contains(&o.key))
                    .map(|o| Orphan {
                        provider: replica.provider,
                        key: o.key,
                        size: o.size,
                    }),
            );
            if !truncated || after.is_none() {
                break;
            }
        }
    }
    found
}
