//! The stand-ins: moto servers on loopback ports, one per endpoint, with
//! the buckets, queue, notification and table walvault expects — each
//! behind a behaviour profile (`crate::profile`) that answers as the real
//! service does: staging as AWS S3 and the catalog as DynamoDB, both with
//! the IAM statements the CDK app synthesizes; one replica as Cloudflare
//! R2, the other as Backblaze B2. Every process signs as one role (the
//! database host, a recovering host, the compress or retention function),
//! with that role's keys on every service.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::types::{
    BucketVersioningStatus, Event, NotificationConfiguration, QueueConfiguration,
    VersioningConfiguration,
};
use aws_sdk_sqs::types::Message;
use shared::catalog::{PARTITION_KEY, SORT_KEY};
use shared::config::{Config, ReplicaCredentials};
use shared::provider::Provider;

use crate::process::{free_port, wait_for_port, GuardedProcess};
use crate::profile::aws::{AwsDynamoDb, AwsS3, MissingKeyPrefix};
use crate::profile::iam::{Policies, Role};
use crate::profile::providers::{B2Key, R2Token, B2, R2};
use crate::profile::{Profile, ProfileProxy};
use crate::{scratch_dir, workspace_root};

pub const STAGING_BUCKET: &str = "walvault-staging";
pub const R2_BUCKET: &str = "walvault-r2";
pub const B2_BUCKET: &str = "walvault-b2";
pub const CATALOG_TABLE: &str = "walvault-catalog";
pub const STAGING_QUEUE: &str = "walvault-staging-events";
pub const REGION: &str = "us-east-1";
/// The harness's own AWS key (the `Admin` role: no IAM check), e.g. for
/// provisioning and for planting damage.
pub const AWS_KEY: (&str, &str) = ("WVADMIN_harness", "test-aws-secret");
/// Every key's secret: the profiles tell keys apart by their id.
pub const SECRET: &str = "test-secret";
pub const B2_REGION: &str = "eu-central-003";

/// The AWS access key id, R2 token and B2 application key `role` holds.
pub fn keys(role: Role, cluster: &str) -> (String, String, String) {
    let r2 = match role {
        Role::Shipper | Role::Restore | Role::RestoreAndShip => R2Token::ObjectReadOnly,
        Role::Compress | Role::Retention | Role::Repair | Role::Admin => R2Token::ObjectReadWrite,
    };
    let b2 = match role {
        Role::Shipper | Role::Restore | Role::RestoreAndShip => B2Key::Read,
        Role::Compress | Role::Repair => B2Key::Write,
        Role::Retention | Role::Admin => B2Key::Delete,
    };
    (
        role.access_key_id(cluster),
        r2.access_key_id(role.tag()),
        b2.access_key_id(role.tag()),
    )
}

pub struct MotoServer {
    pub port: u16,
    _process: GuardedProcess,
}

impl MotoServer {
    pub fn start(name: &str) -> MotoServer {
        let moto = moto_server_binary();
        for _attempt in 0..5 {
            let port = free_port();
            let log = scratch_dir().join(format!("moto-{name}-{port}.log"));
            let args = vec![
                "-H".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                port.to_string(),
            ];
            let mut process =
                GuardedProcess::spawn(&format!("moto {name}"), &moto, &args, &log, None, "TERM");
            if wait_for_port(&mut process, port, Duration::from_secs(60)) {
                return MotoServer {
                    port,
                    _process: process,
                };
            }
            eprintln!(
                "moto {name} did not come up on {port}, retrying:\n{}",
                process.log_tail()
            );
        }
        panic!("moto {name} failed to start five times");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn moto_server_binary() -> PathBuf {
    let venv = std::env::var_os("WALVAULT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"));
    let moto = venv.join("bin/moto_server");
    assert!(
        moto.exists(),
        "{} is missing: run the README's test command (make test), which installs moto into the project venv",
        moto.display()
    );
    moto
}

/// The four moto servers: staging S3 with its SQS queue (and Secrets
/// Manager), "R2", "B2" (a versioned bucket: B2 keeps versions), and
/// DynamoDB, each on its own port.
pub struct Motos {
    pub staging: MotoServer,
    pub r2: MotoServer,
    pub b2: MotoServer,
    pub dynamodb: MotoServer,
}

/// The stand-ins as walvault sees them: each moto server behind its
/// service's profile.
pub struct Stack {
    pub moto: Motos,
    pub staging: ProfileProxy,
    pub dynamodb: ProfileProxy,
    pub r2: ProfileProxy,
    pub b2: ProfileProxy,
    pub queue_url: String,
    pub policies: Arc<Policies>,
    /// Staging endpoints of the tests' private proxies, which answer by
    /// the same profiles (and so take the roles' keys).
    private_staging: std::sync::Mutex<Vec<String>>,
}

/// Which service a profile proxy plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Staging,
    DynamoDb,
    R2,
    B2,
}

static SHARED: OnceLock<Stack> = OnceLock::new();

impl Stack {
    /// One stack per test binary, started on first use. Tests share it and
    /// keep apart by using their own cluster names.
    pub fn shared() -> &'static Stack {
        // Started on a thread of its own: the caller is usually inside a
        // tokio test runtime, where provisioning cannot block.
        SHARED.get_or_init(|| {
            std::thread::spawn(Stack::start)
                .join()
                .expect("starting the stand-ins")
        })
    }

    fn start() -> Stack {
        let handles: Vec<_> = ["staging", "r2", "b2", "dynamodb"]
            .into_iter()
            .map(|name| std::thread::spawn(move || MotoServer::start(name)))
            .collect();
        let mut servers = handles
            .into_iter()
            .map(|h| h.join().expect("moto start thread"));
        let mut next = || servers.next().expect("four servers");
        let moto = Motos {
            staging: next(),
            r2: next(),
            b2: next(),
            dynamodb: next(),
        };
        // The SDK clients below belong to this short-lived runtime; tests
        // build their own in theirs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let queue_url = runtime.block_on(provision(&moto));
        let policies = Arc::new(Policies::from_template(
            &iam_template_path(),
            STAGING_BUCKET,
            CATALOG_TABLE,
        ));
        let proxy =
            |service| ProfileProxy::start(profile(service, &policies), moto_port(&moto, service));
        Stack {
            staging: proxy(Service::Staging),
            dynamodb: proxy(Service::DynamoDb),
            r2: proxy(Service::R2),
            b2: proxy(Service::B2),
            moto,
            queue_url,
            policies,
            private_staging: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A profile proxy of its own in front of `service`'s stand-in, for a
    /// test that injects faults or changes the rules without disturbing the
    /// other tests of its binary.
    pub fn private_proxy(&self, service: Service) -> ProfileProxy {
        let proxy = ProfileProxy::start(
            profile(service, &self.policies),
            moto_port(&self.moto, service),
        );
        if service == Service::Staging {
            if let Ok(mut endpoints) = self.private_staging.lock() {
                endpoints.push(proxy.endpoint());
            }
        }
        proxy
    }

    /// The `WALVAULT_*` and `AWS_*` environment of the database host
    /// (`ShipperPolicy`; read-only replica keys) using this stack as `cluster`.
    pub fn env(&self, cluster: &str) -> BTreeMap<String, String> {
        self.env_as(Role::Shipper, cluster)
    }

    /// The environment of `role` acting for `cluster`.
    pub fn env_as(&self, role: Role, cluster: &str) -> BTreeMap<String, String> {
        let (aws, r2, b2) = keys(role, cluster);
        let pairs = [
            ("WALVAULT_CLUSTER", cluster.to_owned()),
            ("WALVAULT_STAGING_BUCKET", STAGING_BUCKET.to_owned()),
            ("WALVAULT_STAGING_ENDPOINT", self.staging.endpoint()),
            ("WALVAULT_R2_ENDPOINT", self.r2.endpoint()),
            ("WALVAULT_R2_BUCKET", R2_BUCKET.to_owned()),
            ("WALVAULT_R2_ACCESS_KEY_ID", r2),
            ("WALVAULT_R2_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("WALVAULT_B2_ENDPOINT", self.b2.endpoint()),
            ("WALVAULT_B2_BUCKET", B2_BUCKET.to_owned()),
            ("WALVAULT_B2_ACCESS_KEY_ID", b2),
            ("WALVAULT_B2_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("WALVAULT_B2_REGION", B2_REGION.to_owned()),
            ("WALVAULT_CATALOG_TABLE", CATALOG_TABLE.to_owned()),
            ("WALVAULT_DYNAMODB_ENDPOINT", self.dynamodb.endpoint()),
            ("WALVAULT_SECRETS_ENDPOINT", self.moto.staging.endpoint()),
            ("WALVAULT_REQUEST_TIMEOUT_SECS", "10".to_owned()),
            ("AWS_ACCESS_KEY_ID", aws),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// The database host's walvault configuration for `cluster`.
    pub fn config(&self, cluster: &str) -> Config {
        config_from_env(&self.env(cluster))
    }
}

/// Where `make iam-template` writes the CDK app's template for the AWS
/// profile.
pub fn iam_template_path() -> PathBuf {
    std::env::var_os("WALVAULT_IAM_TEMPLATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"))
                .join("walvault-iam-template.json")
        })
}

fn moto_port(moto: &Motos, service: Service) -> u16 {
    match service {
        Service::Staging => moto.staging.port,
        Service::DynamoDb => moto.dynamodb.port,
        Service::R2 => moto.r2.port,
        Service::B2 => moto.b2.port,
    }
}

/// The production profile of `service`.
fn profile(service: Service, policies: &Arc<Policies>) -> Profile {
    match service {
        Service::Staging => Profile::AwsS3(AwsS3 {
            policies: Arc::clone(policies),
            missing_key_prefix: MissingKeyPrefix::Key,
        }),
        Service::DynamoDb => Profile::AwsDynamoDb(AwsDynamoDb {
            policies: Arc::clone(policies),
        }),
        Service::R2 => Profile::R2(R2::default()),
        Service::B2 => Profile::B2(B2 {
            region: B2_REGION.to_owned(),
            strict_region: true,
            accepts_checksum_headers: false,
            object_lock: Default::default(),
        }),
    }
}

async fn provision(moto: &Motos) -> String {
    let sdk = aws_sdk_config().await;
    for (server, bucket) in [
        (&moto.staging, STAGING_BUCKET),
        (&moto.r2, R2_BUCKET),
        (&moto.b2, B2_BUCKET),
    ] {
        s3_client(&sdk, &server.endpoint())
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e:?}"));
    }
    s3_client(&sdk, &moto.b2.endpoint())
        .put_bucket_versioning()
        .bucket(B2_BUCKET)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("B2 keeps versions");
    let sqs = sqs_client(&sdk, &moto.staging.endpoint());
    let queue_url = sqs
        .create_queue()
        .queue_name(STAGING_QUEUE)
        .send()
        .await
        .expect("creating the staging queue")
        .queue_url
        .expect("queue url");
    let queue_arn = format!("arn:aws:sqs:{REGION}:123456789012:{STAGING_QUEUE}");
    let notification = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(queue_arn)
                .events(Event::S3ObjectCreated)
                .build()
                .expect("queue configuration"),
        )
        .build();
    s3_client(&sdk, &moto.staging.endpoint())
        .put_bucket_notification_configuration()
        .bucket(STAGING_BUCKET)
        .notification_configuration(notification)
        .send()
        .await
        .expect("wiring the staging bucket to the queue");
    dynamodb_client(&sdk, &moto.dynamodb.endpoint())
        .create_table()
        .table_name(CATALOG_TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PARTITION_KEY))
        .attribute_definitions(attribute(SORT_KEY))
        .key_schema(key(PARTITION_KEY, KeyType::Hash))
        .key_schema(key(SORT_KEY, KeyType::Range))
        .send()
        .await
        .expect("creating the catalog table");
    queue_url
}

/// The walvault configuration an `env` like [`Stack::env`]'s describes.
pub fn config_from_env(env: &BTreeMap<String, String>) -> Config {
    let settings = env
        .iter()
        .filter(|(k, _)| k.starts_with("WALVAULT_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Config::from_sources(&settings, &BTreeMap::new()).expect("the stand-in settings are valid")
}

/// The staging bucket's notification queue, shared by the tests of a binary.
pub struct StagingQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl Stack {
    pub async fn staging_queue(&self) -> StagingQueue {
        StagingQueue {
            sqs: sqs_client(&aws_sdk_config().await, &self.moto.staging.endpoint()),
            url: self.queue_url.clone(),
        }
    }
}

impl StagingQueue {
    /// Up to 10 messages, waiting a second for the first.
    pub async fn receive(&self) -> Vec<Message> {
        self.sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receiving from the staging queue")
            .messages
            .unwrap_or_default()
    }

    pub async fn delete(&self, message: &Message) {
        self.sqs
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .send()
            .await
            .expect("deleting a staging event");
    }

    /// Puts a message back, for the test it belongs to, after a second:
    /// at once, the next receive would return the same first messages
    /// again, and a test could wait forever behind another's (or behind
    /// those of a test that failed and never drains).
    pub async fn release(&self, message: &Message) {
        let _ = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .visibility_timeout(1)
            .send()
            .await;
    }
}

/// The decoded object key an S3 notification message announces; `None` for
/// `s3:TestEvent` and anything that is not an S3 notification.
pub fn announced_key(message: &Message) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(message.body()?).ok()?;
    shared::keys::decode_event_key(body["Records"][0]["s3"]["object"]["key"].as_str()?).ok()
}

/// Region and credentials for the stand-ins, set explicitly rather than
/// read from this process's environment.
pub async fn aws_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            AWS_KEY.0, AWS_KEY.1, None, None, "stand-in",
        ))
        .load()
        .await
}

/// Whether `config` points at this binary's profiled stand-ins (and not,
/// say, at the benchmarks' s3s-fs, which knows one key only).
fn on_profiles(config: &Config) -> bool {
    SHARED.get().is_some_and(|stack| {
        let Some(endpoint) = config.staging.endpoint.as_deref() else {
            return false;
        };
        endpoint == stack.staging.endpoint()
            || stack
                .private_staging
                .lock()
                .is_ok_and(|private| private.iter().any(|e| e == endpoint))
    })
}

/// The SDK settings walvault itself would use for `config`, with the
/// stand-ins' region and `role`'s AWS key (on the profiled stand-ins; the
/// harness's key elsewhere).
pub async fn walvault_sdk_config(role: Role, config: &Config) -> SdkConfig {
    let access_key_id = if on_profiles(config) {
        keys(role, config.cluster.as_str()).0
    } else {
        AWS_KEY.0.to_owned()
    };
    let secret = if on_profiles(config) {
        SECRET
    } else {
        AWS_KEY.1
    };
    shared::backends::sdk_loader(config)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            access_key_id,
            secret,
            None,
            None,
            "stand-in",
        ))
        .load()
        .await
}

/// `config` with `role`'s replica keys, on the profiled stand-ins (and
/// where the keys are in the configuration rather than in Secrets Manager).
pub fn as_role(role: Role, config: &Config) -> Config {
    let (_, r2, b2) = keys(role, config.cluster.as_str());
    let mut config = config.clone();
    if !on_profiles(&config) {
        return config;
    }
    for (provider, replica) in config.replicas.iter_mut() {
        if let ReplicaCredentials::Keys { access_key_id, .. } = &mut replica.credentials {
            *access_key_id = match provider {
                Provider::R2 => r2.clone(),
                Provider::B2 => b2.clone(),
            };
        }
    }
    config
}

pub fn s3_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub fn sqs_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

pub fn dynamodb_client(sdk: &SdkConfig, endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

fn attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("attribute definition")
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("key schema element")
}
