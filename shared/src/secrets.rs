//! R2 and B2 keys from AWS Secrets Manager, read once at start-up. A secret
//! holds JSON `{"access_key_id": "…", "secret_access_key": "…"}`. Errors
//! name the secret, never its contents.

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::Deserialize;

use crate::config::{Config, ReplicaCredentials, Secret};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("reading secret {arn}: {detail}")]
    Fetch { arn: String, detail: String },
    #[error("secret {arn} is not JSON with string fields access_key_id and secret_access_key")]
    Malformed { arn: String },
}

#[derive(Deserialize)]
struct ReplicaKeys {
    access_key_id: String,
    secret_access_key: String,
}

/// Replaces every replica's secret ARN in `config` with the keys it holds.
pub async fn resolve_replica_credentials(
    sdk: &SdkConfig,
    config: &mut Config,
) -> Result<(), SecretsError> {
    let mut builder = aws_sdk_secretsmanager::config::Builder::from(sdk);
    if let Some(endpoint) = &config.secrets_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    let client = aws_sdk_secretsmanager::Client::from_conf(builder.build());
    for replica in [config.r2.as_mut(), config.b2.as_mut()]
        .into_iter()
        .flatten()
    {
        let ReplicaCredentials::SecretArn(arn) = &replica.credentials else {
            continue;
        };
        let arn = arn.clone();
        let out = client
            .get_secret_value()
            .secret_id(&arn)
            .send()
            .await
            .map_err(|e| SecretsError::Fetch {
                arn: arn.clone(),
                detail: DisplayErrorContext(&e).to_string(),
            })?;
        let keys: ReplicaKeys = out
            .secret_string()
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or_else(|| SecretsError::Malformed { arn: arn.clone() })?;
        replica.credentials = ReplicaCredentials::Keys {
            access_key_id: keys.access_key_id,
            secret_access_key: Secret::new(keys.secret_access_key),
        };
    }
    Ok(())
}
