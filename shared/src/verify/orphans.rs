//! Objects under the cluster's prefix on a provider that no catalog record
//! names: storage paid for and never restored from, or, after the
//! catalog was rolled back (DynamoDB's own point-in-time recovery), files
//! the catalog has forgotten. Listed, never deleted.

use std::collections::BTreeSet;

use crate::backends::Replicas;
use crate::catalog::Catalog;
use crate::error::chain;
use crate::keys::{parse_archive_key, ClusterName};
use crate::store::ListPage;

use super::check::Checker;
use super::report::{Orphan, Unchecked};

pub(super) struct Found {
    pub orphans: Vec<Orphan>,
    /// Providers whose listing failed part-way.
    pub unlisted: Vec<Unchecked>,
}

/// Every object under `<cluster>/` on every replica whose key is not in
/// `expected` (the catalog as read at the run's start) and whose file has
/// no record now either: compress records a file before it writes its
/// copies, so a copy listed may be newer than the catalog read; one
/// catalog read per such object tells.
pub(super) async fn find(
    cluster: &ClusterName,
    replicas: &Replicas,
    expected: &BTreeSet<String>,
    catalog: &dyn Catalog,
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
    let mut orphans = Vec::with_capacity(found.orphans.len());
    for orphan in std::mem::take(&mut found.orphans) {
        let Some(file) = parse_archive_key(cluster, &orphan.key) else {
            orphans.push(orphan);
            continue;
        };
        let now = checker
            .budget()
            .run(format!("catalog get {file}"), || {
                catalog.get(cluster, &file)
            })
            .await;
        match now {
            Ok(None) => orphans.push(orphan),
            Ok(Some(_)) => {}
            Err(e) => found.unlisted.push(Unchecked {
                file: orphan.key,
                provider: orphan.provider,
                reason: format!("whether it is an orphan: {}", chain(&e)),
            }),
        }
    }
    found.orphans = orphans;
    found
}
