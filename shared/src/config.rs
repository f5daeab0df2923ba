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
use crate::provider::{Provider, RegionError};
use crate::seal::{Identities, KeyError, Recipients};

pub const ENV_PREFIX: &str = "WALVAULT_";

/// How long one request attempt may take unless `WALVAULT_REQUEST_TIMEOUT_SECS`
/// says otherwise (the CDK app lowers it for short function timeouts).
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;

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
    "RETENTION_AGE_ONLY",
    "RETENTION_MAX_DELETES",
    "IMMUTABLE_DAYS",
    "INCOMPLETE_BACKUP_DAYS",
    "PG_BINDIR",
    "BACKUP_CHUNK_MIB",
    "BACKUP_CONCURRENCY",
    "BACKUP_WAL_WAIT_SECS",
    "RESTORE_READ_AHEAD",
    "VERIFY_AFTER_SWEEP",
    "VERIFY_CONCURRENCY",
    "RECIPIENTS",
    "ENCRYPTION_OFF",
    "IDENTITY_FILE",
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
    /// read at start-up by [`crate::backends::Backends::connect`].
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
    /// The configured replicas; a provider is configured entirely or not at all.
    pub replicas: BTreeMap<Provider, ReplicaConfig>,
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
    /// With no base backup known, the sweep deletes by age alone (instead
    /// of deleting nothing).
    pub retention_age_only: bool,
    /// At most this many files deleted by one retention run.
    pub retention_max_deletes: usize,
    /// The archive's immutability window (R2 bucket lock rules, B2 Object
    /// Lock), set up on the providers; shorter than the retention window,
    /// so that the sweep only meets files whose lock has expired.
    pub immutable: Option<Duration>,
    /// Age after which the sweep removes the parts of a base backup that
    /// never finished (no descriptor): from staging, R2, B2 and the catalog.
    pub incomplete_backup_age: Duration,
    /// PostgreSQL's programs (`pg_basebackup`, `pg_verifybackup`, `pg_ctl`,
    /// `psql`); found by version, then on `PATH`, when unset.
    pub pg_bindir: Option<PathBuf>,
    /// Bytes per base backup chunk.
    pub backup_chunk_size: usize,
    /// Chunks `walvault backup` uploads at once.
    pub backup_concurrency: usize,
    /// How long `walvault backup` waits for the WAL its backup needs.
    pub backup_wal_wait: Duration,
    /// Chunks `walvault restore` fetches ahead of the one it writes.
    pub restore_read_ahead: usize,
    /// The retention function verifies (and repairs) the archive after
    /// each sweep, in the time its invocation has left.
    pub verify_after_sweep: bool,
    /// Files `walvault verify` checks at once.
    pub verify_concurrency: usize,
    /// Whether the compress function seals new copies, and to whom.
    pub encryption: Encryption,
    /// The identity files fetch, restore, verify and drill open sealed
    /// copies with (none: sealed copies cannot be opened).
    pub identity_files: Vec<PathBuf>,
}

/// Whether new copies are sealed (see [`crate::seal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// No recipient configured, and not said to be off: the compress
    /// function refuses to start if the catalog says the cluster's copies
    /// are sealed, so that a variable lost in one deployment cannot turn
    /// encryption off.
    Unset,
    /// `WALVAULT_ENCRYPTION_OFF`: new copies are stored unsealed, even if
    /// older ones were sealed.
    Off,
    /// `WALVAULT_RECIPIENTS`: new copies are sealed to these.
    To(Recipients),
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
        let cluster = settings.cluster()?;
        Ok(Config {
            spool_dir: settings.spool_dir(&cluster)?,
            cluster,
            secrets_endpoint: settings.endpoint("SECRETS_ENDPOINT")?,
            staging: StagingConfig {
                bucket: settings.bucket("STAGING_BUCKET")?,
                endpoint: settings.endpoint("STAGING_ENDPOINT")?,
            },
            catalog: CatalogConfig {
                table: settings.table("CATALOG_TABLE")?,
                endpoint: settings.endpoint("DYNAMODB_ENDPOINT")?,
            },
            replicas: settings.replicas()?,
            zstd_level: settings.zstd_level()?,
            request_timeout: settings
                .seconds("REQUEST_TIMEOUT_SECS", DEFAULT_REQUEST_TIMEOUT_SECS)?,
            max_attempts: settings.whole("MAX_ATTEMPTS", 3, 1..=100)? as u32,
            system_identifier: settings.system_identifier()?,
            push_concurrency: settings.whole("PUSH_CONCURRENCY", 4, 1..=64)? as usize,
            push_deadline: settings.seconds("PUSH_DEADLINE_SECS", 60)?,
            prefetch: settings.whole("PREFETCH", 8, 0..=64)? as usize,
            fetch_order: settings.fetch_order()?,
            redrive_after: settings.seconds("REDRIVE_AFTER_SECS", 900)?,
            retention: Duration::from_secs(settings.positive("RETENTION_DAYS", 30)? * 86_400),
            retention_dry_run: settings.boolean("RETENTION_DRY_RUN", false)?,
            retention_age_only: settings.boolean("RETENTION_AGE_ONLY", false)?,
            retention_max_deletes: settings.positive("RETENTION_MAX_DELETES", 100_000)? as usize,
            immutable: settings.immutable()?,
            incomplete_backup_age: Duration::from_secs(
                settings.positive("INCOMPLETE_BACKUP_DAYS", 2)? * 86_400,
            ),
            pg_bindir: settings.absolute_path("PG_BINDIR")?,
            backup_chunk_size: (settings.whole(
                "BACKUP_CHUNK_MIB",
                32,
                1..=crate::backup::MAX_CHUNK_MIB,
            )? as usize)
                << 20,
            backup_concurrency: settings.whole("BACKUP_CONCURRENCY", 4, 1..=16)? as usize,
            backup_wal_wait: settings.seconds("BACKUP_WAL_WAIT_SECS", 300)?,
            restore_read_ahead: settings.whole("RESTORE_READ_AHEAD", 4, 1..=32)? as usize,
            verify_after_sweep: settings.boolean("VERIFY_AFTER_SWEEP", true)?,
            verify_concurrency: settings.whole("VERIFY_CONCURRENCY", 32, 1..=512)? as usize,
            encryption: settings.encryption()?,
            identity_files: settings.identity_files()?,
        })
    }

    /// The identities of `WALVAULT_IDENTITY_FILE`, read now (none when
    /// unset).
    pub fn identities(&self) -> Result<Identities, ConfigError> {
        Identities::load(&self.identity_files).map_err(|problem| ConfigError::Keys {
            variable: format!("{ENV_PREFIX}IDENTITY_FILE"),
            problem,
        })
    }

    /// The replica settings of `provider`, or an error naming what to set.
    pub fn replica(&self, provider: Provider) -> Result<&ReplicaConfig, ConfigError> {
        self.replicas
            .get(&provider)
            .ok_or_else(|| ConfigError::Missing(replica_var(provider, "ENDPOINT")))
    }
}

fn parse_fetch_order(value: &str) -> Result<Vec<Provider>, &'static str> {
    let mut order = Vec::new();
    for part in value.split(',').map(str::trim) {
        let provider =
            Provider::parse(part).ok_or("must list providers (r2, b2) separated by commas")?;
        if order.contains(&provider) {
            return Err("lists a provider twice");
        }
        order.push(provider);
    }
    Ok(order)
}

fn replica_var(provider: Provider, setting: &str) -> String {
    format!("{ENV_PREFIX}{}_{setting}", provider.setting_infix())
}

/// Parses the TOML file into the flat settings map, refusing unknown keys
/// so that a typo cannot silently fall back to a default.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let file_error = |problem: FileProblem| ConfigError::File {
        path: path.display().to_string(),
        problem,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(FileProblem::Unreadable(e.kind())))?;
    parse_file(&text).map_err(file_error)
}

/// What is wrong with the configuration file. Never carries a value from
/// the file: a malformed line may hold a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    #[error("cannot be read ({0})")]
    Unreadable(std::io::ErrorKind),
    #[error("line {line}{}: not valid TOML (each line is `name = \"value\"` or `name = number`)", key.as_ref().map(|k| format!(", setting {k}")).unwrap_or_default())]
    Syntax { line: usize, key: Option<String> },
    #[error("unknown setting {0} (settings are the WALVAULT_* names in lower case without the prefix, e.g. staging_bucket)")]
    UnknownSetting(String),
    #[error("setting {0} must be a string or a whole number")]
    WrongType(String),
}

pub fn parse_file(text: &str) -> Result<BTreeMap<String, String>, FileProblem> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let offset = e.span().map_or(0, |span| span.start);
        let line = text[..offset.min(text.len())].matches('\n').count() + 1;
        FileProblem::Syntax {
            line,
            key: known_setting_on_line(text.lines().nth(line - 1).unwrap_or("")),
        }
    })?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if !is_setting(&key) {
            return Err(FileProblem::UnknownSetting(key));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            _ => return Err(FileProblem::WrongType(key)),
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn is_setting(file_key: &str) -> bool {
    file_key == file_key.to_ascii_lowercase()
        && SETTINGS.contains(&file_key.to_ascii_uppercase().as_str())
}

/// The setting a malformed line starts with, if it names one (a name is
/// safe to print; anything else on the line may be a secret).
fn known_setting_on_line(line: &str) -> Option<String> {
    let name = line.split('=').next()?.trim();
    is_setting(name).then(|| name.to_owned())
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

    fn invalid(&self, name: &str, reason: &'static str) -> ConfigError {
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
                "is not a bucket name (3 to 63 lower-case letters, digits, '-' and '.')",
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
            Err(self.invalid(
                name,
                "is not a DynamoDB table name (3 to 255 letters, digits, '-', '_' and '.')",
            ))
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
            _ => Err(self.invalid(name, "is not an http:// or https:// URL")),
        }
    }

    fn positive(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(self.invalid(name, "must be a positive whole number")),
            },
        }
    }

    fn cluster(&self) -> Result<ClusterName, ConfigError> {
        self.required("CLUSTER")?.parse().map_err(|_| {
            self.invalid(
                "CLUSTER",
                "must be 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter or digit",
            )
        })
    }

    fn zstd_level(&self) -> Result<CompressionLevel, ConfigError> {
        match self.get("ZSTD_LEVEL") {
            None => Ok(CompressionLevel::default()),
            Some(v) => v
                .parse::<i32>()
                .ok()
                .and_then(|l| CompressionLevel::new(l).ok())
                .ok_or_else(|| self.invalid("ZSTD_LEVEL", "must be a whole number from -7 to 19")),
        }
    }

    fn system_identifier(&self) -> Result<Option<u64>, ConfigError> {
        self.get("SYSTEM_IDENTIFIER")
            .map(|v| {
                v.parse::<u64>().ok().filter(|id| *id != 0).ok_or_else(|| {
                    self.invalid(
                        "SYSTEM_IDENTIFIER",
                        "is not a PostgreSQL system identifier (a positive whole number)",
                    )
                })
            })
            .transpose()
    }

    fn spool_dir(&self, cluster: &ClusterName) -> Result<PathBuf, ConfigError> {
        let dir = self
            .get("SPOOL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new("/var/spool/walvault").join(cluster.as_str()));
        if dir.is_absolute() {
            Ok(dir)
        } else {
            Err(self.invalid("SPOOL_DIR", "must be an absolute path"))
        }
    }

    fn absolute_path(&self, name: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.get(name).map(PathBuf::from) {
            Some(path) if !path.is_absolute() => {
                Err(self.invalid(name, "must be an absolute path"))
            }
            other => Ok(other),
        }
    }

    fn encryption(&self) -> Result<Encryption, ConfigError> {
        let off = self.boolean("ENCRYPTION_OFF", false)?;
        match (self.get("RECIPIENTS"), off) {
            (Some(_), true) => Err(self.invalid(
                "ENCRYPTION_OFF",
                "cannot be true while WALVAULT_RECIPIENTS is set",
            )),
            (Some(list), false) => {
                Recipients::parse(&list)
                    .map(Encryption::To)
                    .map_err(|problem| ConfigError::Keys {
                        variable: format!("{ENV_PREFIX}RECIPIENTS"),
                        problem,
                    })
            }
            (None, true) => Ok(Encryption::Off),
            (None, false) => Ok(Encryption::Unset),
        }
    }

    /// Absolute paths separated by commas.
    fn identity_files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let Some(list) = self.get("IDENTITY_FILE") else {
            return Ok(Vec::new());
        };
        let files: Vec<PathBuf> = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if files.iter().any(|p| !p.is_absolute()) {
            return Err(self.invalid(
                "IDENTITY_FILE",
                "must be absolute paths separated by commas",
            ));
        }
        Ok(files)
    }

    fn fetch_order(&self) -> Result<Vec<Provider>, ConfigError> {
        match self.get("FETCH_ORDER") {
            None => Ok(Provider::ALL.to_vec()),
            Some(v) => parse_fetch_order(&v).map_err(|reason| self.invalid("FETCH_ORDER", reason)),
        }
    }

    /// A whole number within `range`, `default` when unset.
    fn whole(
        &self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let value = match self.get(name) {
            None => default,
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| self.invalid(name, "must be a whole number"))?,
        };
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(name, "is out of range (see the README)"))
        }
    }

    /// `IMMUTABLE_DAYS`, which must end before the retention window does.
    fn immutable(&self) -> Result<Option<Duration>, ConfigError> {
        if self.get("IMMUTABLE_DAYS").is_none() {
            return Ok(None);
        }
        let days = self.positive("IMMUTABLE_DAYS", 1)?;
        if days >= self.positive("RETENTION_DAYS", 30)? {
            return Err(self.invalid(
                "IMMUTABLE_DAYS",
                "must be shorter than WALVAULT_RETENTION_DAYS: the sweep deletes files older than the retention window, which must no longer be locked",
            ));
        }
        Ok(Some(Duration::from_secs(days * 86_400)))
    }

    fn seconds(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        self.positive(name, default).map(Duration::from_secs)
    }

    fn boolean(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref() {
            None => Ok(default),
            Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(_) => Err(self.invalid(name, "must be true or false")),
        }
    }

    fn replicas(&self) -> Result<BTreeMap<Provider, ReplicaConfig>, ConfigError> {
        Provider::ALL
            .into_iter()
            .filter_map(|p| self.replica(p).transpose())
            .map(|r| r.map(|r| (r.provider, r)))
            .collect()
    }

    /// A replica is either fully configured or not at all: half a
    /// configuration is an error, not a silently missing replica.
    fn replica(&self, provider: Provider) -> Result<Option<ReplicaConfig>, ConfigError> {
        let name = |setting: &str| format!("{}_{setting}", provider.setting_infix());
        let [endpoint, bucket, key_id, secret_key, region, secret_arn] = [
            "ENDPOINT",
            "BUCKET",
            "ACCESS_KEY_ID",
            "SECRET_ACCESS_KEY",
            "REGION",
            "SECRET_ARN",
        ]
        .map(name);
        let all = [
            &endpoint,
            &bucket,
            &key_id,
            &secret_key,
            &region,
            &secret_arn,
        ];
        if all.iter().all(|n| self.get(n).is_none()) {
            return Ok(None);
        }
        let endpoint_url = self
            .endpoint(&endpoint)?
            .ok_or_else(|| ConfigError::Missing(format!("{ENV_PREFIX}{endpoint}")))?;
        let signing_region = provider
            .signing_region(self.get(&region).as_deref(), &endpoint_url)
            .map_err(|e| match e {
                RegionError::Missing => ConfigError::Missing(format!("{ENV_PREFIX}{region}")),
                RegionError::Invalid(reason) => self.invalid(&region, reason),
            })?;
        let credentials = match self.get(&secret_arn) {
            Some(_) if self.get(&key_id).is_some() || self.get(&secret_key).is_some() => {
                return Err(self.invalid(
                    &secret_arn,
                    "is set together with the access keys: set one or the other",
                ))
            }
            Some(arn) if arn.starts_with("arn:") => ReplicaCredentials::SecretArn(arn),
            Some(_) => return Err(self.invalid(&secret_arn, "is not an ARN")),
            None => ReplicaCredentials::Keys {
                access_key_id: self.required(&key_id)?,
                secret_access_key: Secret::new(self.required(&secret_key)?),
            },
        };
        Ok(Some(ReplicaConfig {
            provider,
            endpoint: endpoint_url,
            bucket: self.bucket(&bucket)?,
            region: signing_region,
            credentials,
        }))
    }
}

/// A setting that is missing or wrong. Names the variable (or the file,
/// line and setting), never its value: values may be secrets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(String),
    #[error("{variable} {reason}")]
    Invalid {
        variable: String,
        reason: &'static str,
    },
    #[error("config file {path}: {problem}")]
    File { path: String, problem: FileProblem },
    /// A key list that is not one; the error names the entry, never a key.
    #[error("{variable}: {problem}")]
    Keys { variable: String, problem: KeyError },
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
        assert!(c.verify_after_sweep);
        assert_eq!(c.verify_concurrency, 32);
        assert!(c.replicas.is_empty());
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
            ("IMMUTABLE_DAYS", "30"),
            ("IMMUTABLE_DAYS", "0"),
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
        assert_eq!(
            parse_file("stagin_bucket = \"x\""),
            Err(FileProblem::UnknownSetting("stagin_bucket".into()))
        );
        assert!(parse_file("STAGING_BUCKET = \"x\"").is_err());
        assert_eq!(
            parse_file("zstd_level = [1]"),
            Err(FileProblem::WrongType("zstd_level".into()))
        );
        assert!(parse_file("cluster = ").is_err());
    }

    #[test]
    fn a_malformed_line_is_named_by_line_and_setting_and_its_value_never_printed() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let text = format!("cluster = \"main\"\nr2_secret_access_key = {secret}\n");
        let problem = parse_file(&text).unwrap_err();
        assert_eq!(
            problem,
            FileProblem::Syntax {
                line: 2,
                key: Some("r2_secret_access_key".into())
            }
        );
        let printed = ConfigError::File {
            path: "/etc/walvault/walvault.toml".into(),
            problem,
        }
        .to_string();
        for part in secret.split(['/', '+']) {
            assert!(!printed.contains(&part[..8.min(part.len())]), "{printed}");
        }
        assert!(printed.contains("line 2") && printed.contains("r2_secret_access_key"));
        let garbled = format!("cluster = \"main\"\n{secret}\n");
        let printed = parse_file(&garbled).unwrap_err().to_string();
        assert!(!printed.contains("wJalr"), "{printed}");
    }

    #[test]
    fn no_invalid_value_is_ever_printed() {
        for (var, value) in [
            ("CLUSTER", "Secret Value"),
            ("STAGING_BUCKET", "Secret_Value"),
            ("STAGING_ENDPOINT", "secretvalue:9000"),
            ("R2_SECRET_ARN", "secretvalue"),
            ("B2_REGION", "secretvalue"),
            ("FETCH_ORDER", "secretvalue"),
        ] {
            let mut pairs = full();
            pairs.retain(|(k, _)| *k != var);
            pairs.push((var, value));
            let printed = load(&pairs).unwrap_err().to_string();
            assert!(
                !printed.to_ascii_lowercase().contains("secret_value")
                    && !printed.to_ascii_lowercase().contains("secretvalue")
                    && !printed.contains("Secret Value"),
                "{var}: {printed}"
            );
        }
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/walvault.toml"))).unwrap_err();
        assert!(
            matches!(err, ConfigError::File { ref path, problem: FileProblem::Unreadable(_) } if path == "/nonexistent/walvault.toml")
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
