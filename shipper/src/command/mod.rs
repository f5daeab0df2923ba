//! One module per command, as pgBackRest lays out its commands: each
//! builds what it needs from the configuration, calls `shared`, and maps
//! the result to its documented exit codes.

pub(crate) mod backup;
pub(crate) mod drill;
pub(crate) mod fetch;
pub(crate) mod keygen;
pub(crate) mod push;
pub(crate) mod restore;
pub(crate) mod status;
pub(crate) mod verify;

use shared::archive::fetch::Fetcher;
use shared::archive::spool::Spool;
use shared::backends::{BackendError, Backends};
use shared::config::{Config, ConfigError};
use shared::provider::Provider;
use shared::retry::RequestLimits;

/// A fetcher over every configured replica, in the configured order.
/// The fetcher of `walvault fetch` and its prefetcher: each a short-lived
/// process, so a provider that lost a hedge is remembered in the spool.
pub(crate) async fn fetcher(config: &Config) -> Result<Fetcher, SetupError> {
    let slow = Spool::new(&config.spool_dir).slow_provider_path(&config.cluster);
    Ok(fetcher_from(config, None)
        .await?
        .remembering_slow_providers(slow))
}

/// Why a command could not set up its clients.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error(transparent)]
    Backends(#[from] BackendError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A fetcher that asks `first` before the other providers, opening sealed
/// copies with the configured identities.
pub(crate) async fn fetcher_from(
    config: &Config,
    first: Option<Provider>,
) -> Result<Fetcher, SetupError> {
    let identities = config.identities()?;
    let backends = Backends::connect(config).await?;
    let replicas = match first {
        Some(first) => {
            let mut order = vec![first];
            order.extend(Provider::ALL.into_iter().filter(|p| *p != first));
            backends.replicas.ordered(&order)
        }
        None => backends.replicas,
    };
    Ok(Fetcher::new(
        config.cluster.clone(),
        backends.catalog,
        backends.staging,
        replicas,
        RequestLimits::from_config(config),
    )
    .opening_with(identities))
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
