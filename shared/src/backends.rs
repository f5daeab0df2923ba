//! The one place that turns configuration into clients: the staging store,
//! the catalog and the replicas, with replica keys read from Secrets
//! Manager once, at start-up, where configured that way. Logic receives a
//! [`Backends`] (or its parts) and never builds a client itself.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};

use crate::catalog::{Catalog, DynamoCatalog};
use crate::config::{Config, ReplicaConfig, ReplicaCredentials};
use crate::provider::Provider;
use crate::secrets::{read_access_key, AccessKey, SecretsError};
use crate::store::{ObjectStore, S3Options, S3Store};

/// The stores and the catalog one process works with.
#[derive(Clone)]
pub struct Backends {
    pub staging: Arc<dyn ObjectStore>,
    pub catalog: Arc<dyn Catalog>,
    pub replicas: Replicas,
}

/// A replica store and which provider it is on.
#[derive(Clone)]
pub struct Replica {
    pub provider: Provider,
    pub store: Arc<dyn ObjectStore>,
}

/// The configured replicas, at most one per provider, in the order reads
/// should try them.
#[derive(Clone, Default)]
pub struct Replicas(Vec<Replica>);

impl Replicas {
    /// Keeps the first replica of each provider, in the given order.
    pub fn new(replicas: Vec<Replica>) -> Self {
        let mut kept: Vec<Replica> = Vec::new();
        for replica in replicas {
            if !kept.iter().any(|r| r.provider == replica.provider) {
                kept.push(replica);
            }
        }
        Replicas(kept)
    }

    pub fn get(&self, provider: Provider) -> Option<&Arc<dyn ObjectStore>> {
        self.0
            .iter()
            .find(|r| r.provider == provider)
            .map(|r| &r.store)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Replica> {
        self.0.iter()
    }

    pub fn providers(&self) -> Vec<Provider> {
        self.0.iter().map(|r| r.provider).collect()
    }

    /// The same replicas, those named in `order` first, in that order.
    pub fn ordered(&self, order: &[Provider]) -> Replicas {
        let mut sorted = self.0.clone();
        sorted.sort_by_key(|r| {
            order
                .iter()
                .position(|p| *p == r.provider)
                .unwrap_or(order.len())
        });
        Replicas(sorted)
    }

    /// Fails unless every provider has a replica: what writers need.
    pub fn require_all(&self) -> Result<(), BackendError> {
        match Provider::ALL.into_iter().find(|p| self.get(*p).is_none()) {
            None => Ok(()),
            Some(missing) => Err(BackendError::MissingReplica(missing)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(
        "no {0} replica is configured (set WALVAULT_{setting}_ENDPOINT and the rest of its settings)",
        setting = .0.setting_infix()
    )]
    MissingReplica(Provider),
}

impl Backends {
    /// Connects with the standard AWS chain for staging, the catalog and
    /// Secrets Manager.
    pub async fn connect(config: &Config) -> Result<Self, BackendError> {
        Self::connect_with(&sdk_loader(config).load().await, config).await
    }

    /// Connects with `sdk` (region, credentials, timeouts) for the AWS side.
    pub async fn connect_with(sdk: &SdkConfig, config: &Config) -> Result<Self, BackendError> {
        let mut replicas = Vec::new();
        for replica in config.replicas.values() {
            let key = access_key(sdk, config, replica).await?;
            replicas.push(Replica {
                provider: replica.provider,
                store: Arc::new(replica_store(sdk, replica, &key)),
            });
        }
        Ok(Backends {
            staging: Arc::new(staging_store(sdk, config)),
            catalog: Arc::new(catalog(sdk, config)),
            replicas: Replicas::new(replicas).ordered(&config.fetch_order),
        })
    }
}

/// The SDK settings shared by every client: a bounded connect, an attempt
/// timeout as a backstop behind the callers' budgets, and no SDK retries
/// ([`crate::retry`] is the one retry loop). Credentials and region come
/// from the standard AWS chain unless the caller sets them on the loader.
pub fn sdk_loader(config: &Config) -> ConfigLoader {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(config.request_timeout))
        .operation_attempt_timeout(config.request_timeout)
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::disabled())
}

fn staging_store(sdk: &SdkConfig, config: &Config) -> S3Store {
    let mut builder = aws_sdk_s3::config::Builder::from(sdk);
    if let Some(endpoint) = &config.staging.endpoint {
        builder = builder.endpoint_url(endpoint).force_path_style(true);
    }
    S3Store::new(
        "staging",
        aws_sdk_s3::Client::from_conf(builder.build()),
        &config.staging.bucket,
        // AWS S3 takes the SDK's CRC32, which guards the upload at a
        // fraction of MD5's cost (a base backup is gigabytes).
        S3Options {
            content_md5: false,
            ..S3Options::default()
        },
    )
}

fn catalog(sdk: &SdkConfig, config: &Config) -> DynamoCatalog {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(endpoint) = &config.catalog.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    DynamoCatalog::new(
        aws_sdk_dynamodb::Client::from_conf(builder.build()),
        &config.catalog.table,
    )
}

async fn access_key(
    sdk: &SdkConfig,
    config: &Config,
    replica: &ReplicaConfig,
) -> Result<AccessKey, SecretsError> {
    match &replica.credentials {
        ReplicaCredentials::Keys {
            access_key_id,
            secret_access_key,
        } => Ok(AccessKey {
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        }),
        ReplicaCredentials::SecretArn(arn) => {
            let mut builder = aws_sdk_secretsmanager::config::Builder::from(sdk);
            if let Some(endpoint) = &config.secrets_endpoint {
                builder = builder.endpoint_url(endpoint);
            }
            let client = aws_sdk_secretsmanager::Client::from_conf(builder.build());
            let setting = format!("WALVAULT_{}_SECRET_ARN", replica.provider.setting_infix());
            read_access_key(&client, arn, &setting).await
        }
    }
}

/// R2 or B2: static credentials, path-style addressing, and checksums only
/// when an operation requires them (neither provider accepts the SDK's
/// default CRC trailers everywhere).
fn replica_store(sdk: &SdkConfig, replica: &ReplicaConfig, key: &AccessKey) -> S3Store {
    let credentials = Credentials::new(
        key.access_key_id.clone(),
        key.secret_access_key.expose().to_owned(),
        None,
        None,
        "walvault-config",
    );
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .credentials_provider(credentials)
        .region(Region::new(replica.region.clone()))
        .endpoint_url(&replica.endpoint)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    let quirks = replica.provider.quirks();
    S3Store::new(
        replica.provider.as_str(),
        aws_sdk_s3::Client::from_conf(conf),
        &replica.bucket,
        S3Options {
            batch_delete: !quirks.refuses_checksum_headers,
            keeps_versions: quirks.keeps_versions,
            ..S3Options::default()
        },
    )
}
