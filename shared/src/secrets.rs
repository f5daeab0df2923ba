//! R2 and B2 keys kept in AWS Secrets Manager. A secret holds JSON
//! `{"access_key_id": "…", "secret_access_key": "…"}`. Errors name the
//! setting that points at the secret, never the secret's name or contents.

use aws_sdk_secretsmanager::Client;
use serde::Deserialize;

use crate::config::Secret;
use crate::error::{cause, Cause};

/// A replica's S3 access key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Secrets Manager could not be asked, or refused.
    #[error("{setting}: the secret cannot be read")]
    Fetch {
        setting: String,
        #[source]
        source: Cause,
    },
    #[error(
        "{setting}: the secret is not JSON with string fields access_key_id and secret_access_key"
    )]
    Malformed { setting: String },
}

#[derive(Deserialize)]
struct StoredKey {
    access_key_id: String,
    secret_access_key: String,
}

/// Reads the key in secret `arn`; `setting` names where the ARN came from.
pub async fn read_access_key(
    client: &Client,
    arn: &str,
    setting: &str,
) -> Result<AccessKey, SecretsError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretsError::Fetch {
            setting: setting.to_owned(),
            source: cause(e),
        })?;
    let stored: StoredKey = out
        .secret_string()
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(|| SecretsError::Malformed {
            setting: setting.to_owned(),
        })?;
    Ok(AccessKey {
        access_key_id: stored.access_key_id,
        secret_access_key: Secret::new(stored.secret_access_key),
    })
}
