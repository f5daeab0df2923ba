//! The AWS stand-ins: moto servers on loopback ports, one per endpoint,
//! with the buckets, queue, notification and table walvault expects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::Message;
use shared::catalog::{PARTITION_KEY, SORT_KEY};
use shared::config::Config;

use crate::process::{free_port, wait_for_port, GuardedProcess};
use crate::{scratch_dir, workspace_root};

pub const STAGING_BUCKET: &str = "walvault-staging";
pub const R2_BUCKET: &str = "walvault-r2";
pub const B2_BUCKET: &str = "walvault-b2";
pub const CATALOG_TABLE: &str = "walvault-catalog";
pub const STAGING_QUEUE: &str = "walvault-staging-events";
pub const REGION: &str = "us-east-1";
/// moto accepts any credentials; R2 and B2 get their own to prove the
/// replica clients use the configured ones.
pub const AWS_KEY: (&str, &str) = ("test-aws-key", "test-aws-secret");
pub const R2_KEY: (&str, &str) = ("test-r2-key", "test-r2-secret");
pub const B2_KEY: (&str, &str) = ("test-b2-key", "test-b2-secret");
pub const B2_REGION: &str = "eu-central-003";

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

/// Four moto servers: staging S3 with its SQS queue, "R2", "B2", and
/// DynamoDB, each on its own port so that one can fail alone.
pub struct Stack {
    pub staging: MotoServer,
    pub r2: MotoServer,
    pub b2: MotoServer,
    pub dynamodb: MotoServer,
    pub queue_url: String,
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
        let (staging, r2, b2, dynamodb) = (
            servers.next().unwrap(),
            servers.next().unwrap(),
            servers.next().unwrap(),
            servers.next().unwrap(),
        );
        let mut stack = Stack {
            staging,
            r2,
            b2,
            dynamodb,
            queue_url: String::new(),
        };
        // The SDK clients below belong to this short-lived runtime; tests
        // build their own in theirs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        stack.queue_url = runtime.block_on(stack.provision());
        stack
    }

    async fn provision(&self) -> String {
        let sdk = aws_sdk_config().await;
        for (server, bucket) in [
            (&self.staging, STAGING_BUCKET),
            (&self.r2, R2_BUCKET),
            (&self.b2, B2_BUCKET),
        ] {
            s3_client(&sdk, &server.endpoint())
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e:?}"));
        }
        let sqs = sqs_client(&sdk, &self.staging.endpoint());
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
        s3_client(&sdk, &self.staging.endpoint())
            .put_bucket_notification_configuration()
            .bucket(STAGING_BUCKET)
            .notification_configuration(notification)
            .send()
            .await
            .expect("wiring the staging bucket to the queue");
        dynamodb_client(&sdk, &self.dynamodb.endpoint())
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

    /// The `WALVAULT_*` and `AWS_*` environment a walvault process needs to
    /// use this stack as `cluster`.
    pub fn env(&self, cluster: &str) -> BTreeMap<String, String> {
        let pairs = [
            ("WALVAULT_CLUSTER", cluster.to_owned()),
            ("WALVAULT_STAGING_BUCKET", STAGING_BUCKET.to_owned()),
            ("WALVAULT_STAGING_ENDPOINT", self.staging.endpoint()),
            ("WALVAULT_R2_ENDPOINT", self.r2.endpoint()),
            ("WALVAULT_R2_BUCKET", R2_BUCKET.to_owned()),
            ("WALVAULT_R2_ACCESS_KEY_ID", R2_KEY.0.to_owned()),
            ("WALVAULT_R2_SECRET_ACCESS_KEY", R2_KEY.1.to_owned()),
            ("WALVAULT_B2_ENDPOINT", self.b2.endpoint()),
            ("WALVAULT_B2_BUCKET", B2_BUCKET.to_owned()),
            ("WALVAULT_B2_ACCESS_KEY_ID", B2_KEY.0.to_owned()),
            ("WALVAULT_B2_SECRET_ACCESS_KEY", B2_KEY.1.to_owned()),
            ("WALVAULT_B2_REGION", B2_REGION.to_owned()),
            ("WALVAULT_CATALOG_TABLE", CATALOG_TABLE.to_owned()),
            ("WALVAULT_DYNAMODB_ENDPOINT", self.dynamodb.endpoint()),
            ("WALVAULT_SECRETS_ENDPOINT", self.staging.endpoint()),
            ("WALVAULT_REQUEST_TIMEOUT_SECS", "10".to_owned()),
            ("AWS_ACCESS_KEY_ID", AWS_KEY.0.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", AWS_KEY.1.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// The walvault configuration for `cluster` on this stack.
    pub fn config(&self, cluster: &str) -> Config {
        config_from_env(&self.env(cluster))
    }
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
            sqs: sqs_client(&aws_sdk_config().await, &self.staging.endpoint()),
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

    /// Puts a message straight back, for the test it belongs to.
    pub async fn release(&self, message: &Message) {
        let _ = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .visibility_timeout(0)
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

/// The SDK settings walvault itself would use for `config`, with the
/// stand-ins' region and credentials.
pub async fn walvault_sdk_config(config: &Config) -> SdkConfig {
    shared::backends::sdk_loader(config)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            AWS_KEY.0, AWS_KEY.1, None, None, "stand-in",
        ))
        .load()
        .await
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
