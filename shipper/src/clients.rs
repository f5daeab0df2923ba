//! The store and catalog clients for one shipper run, built from config.

use std::sync::Arc;

use shared::archive::fetch::{Fetcher, Replica};
use shared::catalog::{dynamodb_client, Catalog, DynamoCatalog};
use shared::config::Config;
use shared::secrets::resolve_replica_credentials;
use shared::store::{build_sdk_config, replica_store, staging_store, ConditionalPut, ObjectStore};

pub struct Clients {
    pub staging: Arc<dyn ObjectStore>,
    pub catalog: Arc<dyn Catalog>,
    sdk: aws_config::SdkConfig,
}

impl Clients {
    /// Builds the clients; replica keys kept in Secrets Manager are read
    /// into `config` first.
    pub async fn build(config: &mut Config) -> Self {
        let sdk = build_sdk_config(config).await;
        if let Err(e) = resolve_replica_credentials(&sdk, config).await {
            tracing::warn!(error = %e, "replica credentials unavailable");
        }
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
                match replica_store(&self.sdk, replica, ConditionalPut::IfNoneMatch) {
                    Ok(store) => Some(Replica {
                        provider: *provider,
                        store: Arc::new(store) as Arc<dyn ObjectStore>,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "replica not usable");
                        None
                    }
                }
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
