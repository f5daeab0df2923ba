//! The one place that turns configuration into clients: the staging store,
//! the catalog and the replicas, with replica keys read from Secrets
//! Manager at start-up, where configured that way, and read again when a
//! provider stops accepting the key (a rotation while a warm function
//! runs). Logic receives a [`Backends`] (or its parts) and never builds a
//! client itself.

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
use crate::error::{cause, Cause};
use crate::provider::Provider;
use crate::secrets::{read_access_key, AccessKey, SecretsError};
use crate::store::{ObjectStore, Rekey, RotatingStore, S3Options, S3Store};

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
            let store: Arc<dyn ObjectStore> = match &replica.credentials {
                ReplicaCredentials::Keys {
                    access_key_id,
                    secret_access_key,
                } => {
                    let key = AccessKey {
                        access_key_id: access_key_id.clone(),
                        secret_access_key: secret_access_key.clone(),
                    };
                    Arc::new(replica_store(sdk, replica, &key))
                }
                ReplicaCredentials::SecretArn(arn) => {
                    let (store, rekey) = SecretKey::read(sdk, config, replica, arn).await?;
                    Arc::new(RotatingStore::new(store, Box::new(rekey)))
                }
            };
            replicas.push(Replica {
                provider: replica.provider,
                store,
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

/// A replica's key kept in Secrets Manager, and the store using it.
struct SecretKey {
    sdk: SdkConfig,
    replica: ReplicaConfig,
    secrets: aws_sdk_secretsmanager::Client,
    arn: String,
    /// `WALVAULT_<PROVIDER>_SECRET_ARN`: what errors and logs name.
    setting: String,
    in_use: std::sync::Mutex<AccessKey>,
}

impl SecretKey {
    async fn read(
        sdk: &SdkConfig,
        config: &Config,
        replica: &ReplicaConfig,
        arn: &str,
    ) -> Result<(Arc<dyn ObjectStore>, SecretKey), SecretsError> {
        let mut builder = aws_sdk_secretsmanager::config::Builder::from(sdk);
        if let Some(endpoint) = &config.secrets_endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let secrets = aws_sdk_secretsmanager::Client::from_conf(builder.build());
        let setting = format!("WALVAULT_{}_SECRET_ARN", replica.provider.setting_infix());
        let key = read_access_key(&secrets, arn, &setting).await?;
        let store = Arc::new(replica_store(sdk, replica, &key));
        let this = SecretKey {
            sdk: sdk.clone(),
            replica: replica.clone(),
            secrets,
            arn: arn.to_owned(),
            setting,
            in_use: std::sync::Mutex::new(key),
        };
        Ok((store, this))
    }
}

#[async_trait::async_trait]
impl Rekey for SecretKey {
    async fn rekey(&self) -> Result<Option<Arc<dyn ObjectStore>>, Cause> {
        let key = read_access_key(&self.secrets, &self.arn, &self.setting)
            .await
            .map_err(cause)?;
        let mut in_use = match self.in_use.lock() {
            Ok(in_use) => in_use,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *in_use == key {
            return Ok(None);
        }
        let store = replica_store(&self.sdk, &self.replica, &key);
        *in_use = key;
        Ok(Some(Arc::new(store)))
    }

    fn setting(&self) -> &str {
        &self.setting
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
            replace_if_match: quirks.replaces_if_match,
            ..S3Options::default()
        },
    )
}
