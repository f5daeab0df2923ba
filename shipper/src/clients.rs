//! The store and catalog clients for one shipper run, built from config.

use std::sync::Arc;

use shared::archive::fetch::{Fetcher, Replica};
use shared::catalog::{dynamodb_client, Catalog, DynamoCatalog};
use shared::config::Config;
use shared::store::{build_sdk_config, replica_store, staging_store, ConditionalPut, ObjectStore};

pub struct Clients {
    pub staging: Arc<dyn ObjectStore>,
    pub catalog: Arc<dyn Catalog>,
    sdk: aws_config::SdkConfig,
}

impl Clients {
    pub async fn build(config: &Config) -> Self {
        let sdk = build_sdk_config(config).await;
        Clients {
            staging: Arc::new(staging_store(&sdk, config)),
            catalog: Arc::new(DynamoCatalog::new(
                dynamodb_client(&sdk, config),
                &config.catalog.table,
            )),
            sdk,
        }
    }

    /// A fetcher over every configured replica, in the configured order.
    pub fn fetcher(&self, config: &Config) -> Fetcher {
        let replicas = config
            .fetch_order
            .iter()
            .filter_map(|provider| {
                let replica = config.replica(*provider).ok()?;
                Some(Replica {
                    provider: *provider,
                    store: Arc::new(replica_store(
                        &self.sdk,
                        replica,
                        ConditionalPut::IfNoneMatch,
                    )) as Arc<dyn ObjectStore>,
                })
            })
            .collect();
        Fetcher::new(
            config.cluster.clone(),
            self.catalog.clone(),
            self.staging.clone(),
            replicas,
        )
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
