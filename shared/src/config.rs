//! Every walvault setting, read from `WALVAULT_*` environment variables and
//! optionally a TOML file, validated up front with errors that name the
//! variable at fault.
//!
//! The file uses the variable names without the `WALVAULT_` prefix, in lower
//! case (`staging_bucket = "…"`); an environment variable overrides the same
//! setting in the file. PostgreSQL runs archive_command with a bare
//! environment, which is why the file exists.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::codec::CompressionLevel;
use crate::keys::ClusterName;

pub const ENV_PREFIX: &str = "WALVAULT_";

/// Every setting walvault reads, for error messages, docs and the file check.
pub const SETTINGS: &[&str] = &[
    "CLUSTER",
    "STAGING_BUCKET",
    "STAGING_ENDPOINT",
    "R2_ENDPOINT",
    "R2_BUCKET",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "R2_REGION",
    "R2_SECRET_ARN",
    "B2_ENDPOINT",
    "B2_BUCKET",
    "B2_ACCESS_KEY_ID",
    "B2_SECRET_ACCESS_KEY",
    "B2_REGION",
    "B2_SECRET_ARN",
    "SECRETS_ENDPOINT",
    "CATALOG_TABLE",
    "DYNAMODB_ENDPOINT",
    "ZSTD_LEVEL",
    "REQUEST_TIMEOUT_SECS",
    "MAX_ATTEMPTS",
    "SYSTEM_IDENTIFIER",
    "PUSH_CONCURRENCY",
    "PUSH_DEADLINE_SECS",
    "SPOOL_DIR",
    "PREFETCH",
    "FETCH_ORDER",
    "REDRIVE_AFTER_SECS",
    "RETENTION_DAYS",
    "RETENTION_DRY_RUN",
    "RETENTION_MAX_DELETES",
];

/// A value that must never reach a log line or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Which S3-compatible provider a replica lives on; they differ in the
/// client settings they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    R2,
    B2,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::R2, Provider::B2];

    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::R2 => "r2",
            Provider::B2 => "b2",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingConfig {
    pub bucket: String,
    /// Set only for stand-ins; AWS S3 otherwise.
    pub endpoint: Option<String>,
}

/// Where a replica's S3 credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaCredentials {
    Keys {
        access_key_id: String,
        secret_access_key: Secret,
    },
    /// A Secrets Manager secret, JSON `{"access_key_id": …, "secret_access_key": …}`,
    /// read once at start-up by [`crate::secrets::resolve_replica_credentials`].
    SecretArn(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub provider: Provider,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub credentials: ReplicaCredentials,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogConfig {
    pub table: String,
    /// Set only for stand-ins; AWS DynamoDB otherwise.
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub cluster: ClusterName,
    /// Secrets Manager endpoint (stand-ins only; AWS when unset).
    pub secrets_endpoint: Option<String>,
    pub staging: StagingConfig,
    pub catalog: CatalogConfig,
    pub r2: Option<ReplicaConfig>,
    pub b2: Option<ReplicaConfig>,
    pub zstd_level: CompressionLevel,
    /// Upper bound on one request attempt to any store.
    pub request_timeout: Duration,
    /// Attempts per request, including the first (the SDK's standard retry).
    pub max_attempts: u32,
    /// The cluster's PostgreSQL system identifier, if pinned; otherwise the
    /// first pushed segment's is recorded in the staging bucket.
    pub system_identifier: Option<u64>,
    /// How many `.ready` files one `walvault push` uploads at once (1: only
    /// the file PostgreSQL asked for).
    pub push_concurrency: usize,
    /// How long `walvault push` keeps retrying transient failures.
    pub push_deadline: Duration,
    /// Local state of the shipper: finished parallel pushes, prefetched files.
    pub spool_dir: PathBuf,
    /// Segments `walvault fetch` prefetches after the one asked for (0: off).
    pub prefetch: usize,
    /// Which replica `walvault fetch` tries first.
    pub fetch_order: Vec<Provider>,
    /// Age after which the compress function's re-drive takes a staging
    /// object as stuck (its event lost, or a replica missing).
    pub redrive_after: Duration,
    /// How far back point-in-time recovery must stay possible.
    pub retention: Duration,
    /// The retention sweep reports and deletes nothing.
    pub retention_dry_run: bool,
    /// At most this many files deleted by one retention run.
    pub retention_max_deletes: usize,
}

impl Config {
    /// Reads the process environment, and `file` underneath it if given.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let file = match file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        Self::from_sources(&env, &file)
    }

    /// `env` holds full variable names; `file` holds names without the
    /// prefix, lower-case, as in the TOML file.
    pub fn from_sources(
        env: &BTreeMap<String, String>,
        file: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let settings = Settings { env, file };
        let cluster: ClusterName = settings
            .required("CLUSTER")?
            .parse()
            .map_err(|e: crate::keys::KeyError| settings.invalid("CLUSTER", e.to_string()))?;
        let staging = StagingConfig {
            bucket: settings.bucket("STAGING_BUCKET")?,
            endpoint: settings.endpoint("STAGING_ENDPOINT")?,
        };
        let catalog = CatalogConfig {
            table: settings.table("CATALOG_TABLE")?,
            endpoint: settings.endpoint("DYNAMODB_ENDPOINT")?,
        };
        let zstd_level = match settings.get("ZSTD_LEVEL") {
            None => CompressionLevel::default(),
            Some(v) => v
                .parse::<i32>()
                .map_err(|e| e.to_string())
                .and_then(|l| CompressionLevel::new(l).map_err(|e| e.to_string()))
                .map_err(|reason| settings.invalid("ZSTD_LEVEL", reason))?,
        };
        let request_timeout = Duration::from_secs(settings.positive("REQUEST_TIMEOUT_SECS", 30)?);
        let max_attempts = u32::try_from(settings.positive("MAX_ATTEMPTS", 3)?)
            .map_err(|_| settings.invalid("MAX_ATTEMPTS", "too large".into()))?;
        let system_identifier = match settings.get("SYSTEM_IDENTIFIER") {
            None => None,
            Some(v) => Some(v.parse::<u64>().ok().filter(|id| *id != 0).ok_or_else(|| {
                settings.invalid(
                    "SYSTEM_IDENTIFIER",
                    format!("{v:?} is not a PostgreSQL system identifier"),
                )
            })?),
        };
        let push_concurrency = settings.positive("PUSH_CONCURRENCY", 4)?;
        if push_concurrency > 64 {
            return Err(settings.invalid("PUSH_CONCURRENCY", "at most 64".into()));
        }
        let prefetch = match settings.get("PREFETCH") {
            None => 8,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 64)
                .ok_or_else(|| {
                    settings.invalid(
                        "PREFETCH",
                        format!("{v:?} is not a whole number from 0 to 64"),
                    )
                })?,
        };
        let spool_dir = settings
            .get("SPOOL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new("/var/spool/walvault").join(cluster.as_str()));
        if !spool_dir.is_absolute() {
            return Err(settings.invalid("SPOOL_DIR", "must be an absolute path".into()));
        }
        let fetch_order = match settings.get("FETCH_ORDER") {
            None => vec![Provider::R2, Provider::B2],
            Some(v) => {
                parse_fetch_order(&v).map_err(|reason| settings.invalid("FETCH_ORDER", reason))?
            }
        };
        Ok(Config {
            cluster,
            secrets_endpoint: settings.endpoint("SECRETS_ENDPOINT")?,
            staging,
            catalog,
            r2: settings.replica(Provider::R2)?,
            b2: settings.replica(Provider::B2)?,
            zstd_level,
            request_timeout,
            max_attempts,
            system_identifier,
            push_concurrency: push_concurrency as usize,
            push_deadline: Duration::from_secs(settings.positive("PUSH_DEADLINE_SECS", 60)?),
            spool_dir,
            prefetch,
            fetch_order,
            redrive_after: Duration::from_secs(settings.positive("REDRIVE_AFTER_SECS", 900)?),
            retention: Duration::from_secs(settings.positive("RETENTION_DAYS", 30)? * 86_400),
            retention_dry_run: match settings.get("RETENTION_DRY_RUN").as_deref() {
                None | Some("false") | Some("0") => false,
                Some("true") | Some("1") => true,
                Some(other) => {
                    return Err(settings.invalid(
                        "RETENTION_DRY_RUN",
                        format!("{other:?} is not true or false"),
                    ))
                }
            },
            retention_max_deletes: settings.positive("RETENTION_MAX_DELETES", 100_000)? as usize,
        })
    }

    /// The replica settings of `provider`, or an error naming what to set.
    pub fn replica(&self, provider: Provider) -> Result<&ReplicaConfig, ConfigError> {
        let configured = match provider {
            Provider::R2 => self.r2.as_ref(),
            Provider::B2 => self.b2.as_ref(),
        };
        configured.ok_or_else(|| ConfigError::Missing(replica_var(provider, "ENDPOINT")))
    }
}

fn parse_fetch_order(value: &str) -> Result<Vec<Provider>, String> {
    let mut order = Vec::new();
    for part in value.split(',').map(str::trim) {
        let provider = match part.to_ascii_lowercase().as_str() {
            "r2" => Provider::R2,
            "b2" => Provider::B2,
            other => return Err(format!("{other:?} is not a replica (r2, b2)")),
        };
        if order.contains(&provider) {
            return Err(format!("{provider} is listed twice"));
        }
        order.push(provider);
    }
    Ok(order)
}

fn replica_var(provider: Provider, setting: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{setting}",
        provider.as_str().to_ascii_uppercase()
    )
}

/// Parses the TOML file into the flat settings map, refusing unknown keys
/// so that a typo cannot silently fall back to a default.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse_file(&text).map_err(|reason| ConfigError::File {
        path: path.display().to_string(),
        reason,
    })
}

pub fn parse_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if !SETTINGS.contains(&key.to_ascii_uppercase().as_str()) || key != key.to_ascii_lowercase()
        {
            return Err(format!(
                "unknown setting {key:?} (settings are the WALVAULT_* names in lower case without the prefix, e.g. staging_bucket)"
            ));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(format!(
                    "{key} must be a string or an integer, not {}",
                    other.type_str()
                ))
            }
        };
        out.insert(key, value);
    }
    Ok(out)
}

struct Settings<'a> {
    env: &'a BTreeMap<String, String>,
    file: &'a BTreeMap<String, String>,
}

impl Settings<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.env
            .get(&format!("{ENV_PREFIX}{name}"))
            .or_else(|| self.file.get(&name.to_ascii_lowercase()))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError::Missing(format!("{ENV_PREFIX}{name}")))
    }

    fn invalid(&self, name: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            variable: format!("{ENV_PREFIX}{name}"),
            reason,
        }
    }

    fn bucket(&self, name: &str) -> Result<String, ConfigError> {
        let bucket = self.required(name)?;
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if ok {
            Ok(bucket)
        } else {
            Err(self.invalid(
                name,
                format!("{bucket:?} is not a bucket name (3 to 63 lower-case letters, digits, '-' and '.')"),
            ))
        }
    }

    fn table(&self, name: &str) -> Result<String, ConfigError> {
        let table = self.required(name)?;
        let ok = (3..=255).contains(&table.len())
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if ok {
            Ok(table)
        } else {
            Err(self.invalid(name, format!("{table:?} is not a DynamoDB table name")))
        }
    }

    fn endpoint(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let Some(url) = self.get(name) else {
            return Ok(None);
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                Ok(Some(url.trim_end_matches('/').to_owned()))
            }
            _ => Err(self.invalid(name, format!("{url:?} is not an http:// or https:// URL"))),
        }
    }

    fn positive(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(self.invalid(name, format!("{v:?} is not a positive whole number"))),
            },
        }
    }

    /// A replica is either fully configured or not at all: half a
    /// configuration is an error, not a silently missing replica.
    fn replica(&self, provider: Provider) -> Result<Option<ReplicaConfig>, ConfigError> {
        let p = provider.as_str().to_ascii_uppercase();
        let names = [
            "ENDPOINT",
            "BUCKET",
            "ACCESS_KEY_ID",
            "SECRET_ACCESS_KEY",
            "REGION",
            "SECRET_ARN",
        ]
        .map(|s| format!("{p}_{s}"));
        if names.iter().all(|n| self.get(n).is_none()) {
            return Ok(None);
        }
        let region = match provider {
            // R2 only accepts the region "auto" for SigV4.
            Provider::R2 => match self.get(&names[4]) {
                None => "auto".to_owned(),
                Some(r) if r == "auto" => r,
                Some(r) => {
                    return Err(
                        self.invalid(&names[4], format!("R2 takes region \"auto\", not {r:?}"))
                    )
                }
            },
            Provider::B2 => self.required(&names[4])?,
        };
        let credentials = match self.get(&names[5]) {
            Some(arn) if self.get(&names[2]).is_some() || self.get(&names[3]).is_some() => {
                return Err(self.invalid(
                    &names[5],
                    format!("set either {arn:?} or the access keys, not both"),
                ))
            }
            Some(arn) if arn.starts_with("arn:") => ReplicaCredentials::SecretArn(arn),
            Some(arn) => return Err(self.invalid(&names[5], format!("{arn:?} is not an ARN"))),
            None => ReplicaCredentials::Keys {
                access_key_id: self.required(&names[2])?,
                secret_access_key: Secret::new(self.required(&names[3])?),
            },
        };
        Ok(Some(ReplicaConfig {
            provider,
            endpoint: self
                .endpoint(&names[0])?
                .ok_or_else(|| ConfigError::Missing(format!("{ENV_PREFIX}{}", names[0])))?,
            bucket: self.bucket(&names[1])?,
            region,
            credentials,
        }))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(String),
    #[error("{variable}: {reason}")]
    Invalid { variable: String, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0} credentials come from Secrets Manager and were not read yet")]
    Unresolved(Provider),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), v.to_string()))
            .collect()
    }

    fn minimal() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CLUSTER", "main"),
            ("STAGING_BUCKET", "wal-staging"),
            ("CATALOG_TABLE", "walvault-catalog"),
        ]
    }

    fn full() -> Vec<(&'static str, &'static str)> {
        let mut v = minimal();
        v.extend([
            ("R2_ENDPOINT", "https://acct.r2.cloudflarestorage.com/"),
            ("R2_BUCKET", "wal-r2"),
            ("R2_ACCESS_KEY_ID", "r2id"),
            ("R2_SECRET_ACCESS_KEY", "r2secret"),
            ("B2_ENDPOINT", "https://s3.eu-central-003.backblazeb2.com"),
            ("B2_BUCKET", "wal-b2"),
            ("B2_ACCESS_KEY_ID", "b2id"),
            ("B2_SECRET_ACCESS_KEY", "b2secret"),
            ("B2_REGION", "eu-central-003"),
        ]);
        v
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(&env(pairs), &BTreeMap::new())
    }

    #[test]
    fn minimal_settings_take_defaults() {
        let c = load(&minimal()).unwrap();
        assert_eq!(c.cluster.as_str(), "main");
        assert_eq!(c.staging.bucket, "wal-staging");
        assert_eq!(c.staging.endpoint, None);
        assert_eq!(c.catalog.table, "walvault-catalog");
        assert_eq!(c.zstd_level, CompressionLevel::default());
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.system_identifier, None);
        assert_eq!(c.push_concurrency, 4);
        assert_eq!(c.push_deadline, Duration::from_secs(60));
        assert_eq!(c.spool_dir, Path::new("/var/spool/walvault/main"));
        assert_eq!(c.prefetch, 8);
        assert_eq!(c.fetch_order, [Provider::R2, Provider::B2]);
        assert_eq!(c.redrive_after, Duration::from_secs(900));
        assert_eq!(c.retention, Duration::from_secs(30 * 86_400));
        assert!(!c.retention_dry_run);
        assert_eq!(c.retention_max_deletes, 100_000);
        assert!(c.r2.is_none() && c.b2.is_none());
        assert_eq!(
            c.replica(Provider::B2),
            Err(ConfigError::Missing("WALVAULT_B2_ENDPOINT".into()))
        );
    }

    #[test]
    fn full_settings_are_read() {
        let c = load(&full()).unwrap();
        let r2 = c.replica(Provider::R2).unwrap();
        assert_eq!(r2.endpoint, "https://acct.r2.cloudflarestorage.com");
        assert_eq!(r2.region, "auto");
        assert!(
            matches!(&r2.credentials, ReplicaCredentials::Keys { secret_access_key, .. } if secret_access_key.expose() == "r2secret")
        );
        let b2 = c.replica(Provider::B2).unwrap();
        assert_eq!(b2.region, "eu-central-003");
        assert!(
            matches!(&b2.credentials, ReplicaCredentials::Keys { access_key_id, .. } if access_key_id == "b2id")
        );
    }

    #[test]
    fn every_missing_required_setting_is_named() {
        for missing in ["CLUSTER", "STAGING_BUCKET", "CATALOG_TABLE"] {
            let pairs: Vec<_> = minimal()
                .into_iter()
                .filter(|(k, _)| *k != missing)
                .collect();
            assert_eq!(
                load(&pairs),
                Err(ConfigError::Missing(format!("WALVAULT_{missing}")))
            );
        }
        for missing in [
            "R2_BUCKET",
            "R2_SECRET_ACCESS_KEY",
            "B2_REGION",
            "B2_ENDPOINT",
        ] {
            let pairs: Vec<_> = full().into_iter().filter(|(k, _)| *k != missing).collect();
            assert_eq!(
                load(&pairs),
                Err(ConfigError::Missing(format!("WALVAULT_{missing}"))),
                "{missing}"
            );
        }
    }

    #[test]
    fn bad_values_say_which_variable_and_why() {
        for (var, value) in [
            ("CLUSTER", "Main DB"),
            ("STAGING_BUCKET", "Bad_Bucket"),
            ("STAGING_ENDPOINT", "localhost:9000"),
            ("CATALOG_TABLE", "t"),
            ("ZSTD_LEVEL", "23"),
            ("ZSTD_LEVEL", "fast"),
            ("REQUEST_TIMEOUT_SECS", "0"),
            ("MAX_ATTEMPTS", "-1"),
            ("R2_REGION", "us-east-1"),
            ("SYSTEM_IDENTIFIER", "0"),
            ("SYSTEM_IDENTIFIER", "-5"),
            ("PUSH_CONCURRENCY", "65"),
            ("PREFETCH", "100"),
            ("SPOOL_DIR", "relative/dir"),
            ("FETCH_ORDER", "r2,s3"),
            ("FETCH_ORDER", "b2,b2"),
            ("RETENTION_DRY_RUN", "maybe"),
            ("RETENTION_DAYS", "0"),
        ] {
            let mut pairs = full();
            pairs.retain(|(k, _)| *k != var);
            pairs.push((var, value));
            match load(&pairs) {
                Err(ConfigError::Invalid { variable, .. }) => {
                    assert_eq!(variable, format!("WALVAULT_{var}"))
                }
                other => panic!("{var}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn replica_keys_may_come_from_secrets_manager_instead() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:walvault-r2-AbCdEf";
        let mut pairs: Vec<_> = full()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("R2_ACCESS") && !k.starts_with("R2_SECRET"))
            .collect();
        pairs.push(("R2_SECRET_ARN", arn));
        let c = load(&pairs).unwrap();
        assert_eq!(
            c.replica(Provider::R2).unwrap().credentials,
            ReplicaCredentials::SecretArn(arn.into())
        );
        pairs.push(("R2_ACCESS_KEY_ID", "also-a-key"));
        assert!(
            matches!(load(&pairs), Err(ConfigError::Invalid { ref variable, .. }) if variable == "WALVAULT_R2_SECRET_ARN")
        );
        let mut not_arn: Vec<_> = full()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("B2_ACCESS") && !k.starts_with("B2_SECRET"))
            .collect();
        not_arn.push(("B2_SECRET_ARN", "walvault-b2"));
        assert!(
            matches!(load(&not_arn), Err(ConfigError::Invalid { ref variable, .. }) if variable == "WALVAULT_B2_SECRET_ARN")
        );
    }

    #[test]
    fn shipper_settings_are_read() {
        let mut pairs = full();
        pairs.extend([
            ("SYSTEM_IDENTIFIER", "7301234567890123456"),
            ("PUSH_CONCURRENCY", "1"),
            ("PUSH_DEADLINE_SECS", "5"),
            ("SPOOL_DIR", "/srv/walvault"),
            ("PREFETCH", "0"),
            ("FETCH_ORDER", "B2, r2"),
        ]);
        let c = load(&pairs).unwrap();
        assert_eq!(c.system_identifier, Some(7_301_234_567_890_123_456));
        assert_eq!(c.push_concurrency, 1);
        assert_eq!(c.push_deadline, Duration::from_secs(5));
        assert_eq!(c.spool_dir, Path::new("/srv/walvault"));
        assert_eq!(c.prefetch, 0);
        assert_eq!(c.fetch_order, [Provider::B2, Provider::R2]);
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let c = load(&full()).unwrap();
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("r2secret") && !printed.contains("b2secret"),
            "{printed}"
        );
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn file_settings_sit_under_the_environment() {
        let file = parse_file(
            r#"
            cluster = "from-file"
            staging_bucket = "file-bucket"
            catalog_table = "file-table"
            zstd_level = 5
            "#,
        )
        .unwrap();
        let c = Config::from_sources(&env(&[("STAGING_BUCKET", "env-bucket")]), &file).unwrap();
        assert_eq!(c.cluster.as_str(), "from-file");
        assert_eq!(c.staging.bucket, "env-bucket");
        assert_eq!(c.zstd_level, CompressionLevel::new(5).unwrap());
    }

    #[test]
    fn file_typos_and_odd_values_are_refused() {
        assert!(parse_file("stagin_bucket = \"x\"")
            .unwrap_err()
            .contains("stagin_bucket"));
        assert!(parse_file("STAGING_BUCKET = \"x\"").is_err());
        assert!(parse_file("zstd_level = [1]")
            .unwrap_err()
            .contains("zstd_level"));
        assert!(parse_file("cluster = ").is_err());
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/walvault.toml"))).unwrap_err();
        assert!(
            matches!(err, ConfigError::File { ref path, .. } if path == "/nonexistent/walvault.toml")
        );
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        for name in SETTINGS {
            assert!(
                readme.contains(&format!("{ENV_PREFIX}{name}")),
                "README lacks {ENV_PREFIX}{name}"
            );
        }
    }
}
