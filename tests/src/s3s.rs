//! s3s-fs, the fast S3 stand-in of the benchmarks.

use std::collections::BTreeMap;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{free_port, wait_for_port, GuardedProcess};
use crate::standins::{
    aws_sdk_config, s3_client, AWS_KEY, B2_BUCKET, R2_BUCKET, REGION, STAGING_BUCKET,
};
use crate::{scratch_dir, workspace_root};

/// s3s-fs: an S3 API over a local directory, fast enough not to be the
/// bottleneck (moto, one Python process, is).
pub struct S3sFs {
    _process: GuardedProcess,
    _root: TempDir,
    port: u16,
}

impl S3sFs {
    /// Starts `.bench/bin/s3s-fs` (installed by `make bench`) on a free
    /// loopback port, accepting the stand-ins' AWS key.
    pub fn start() -> S3sFs {
        let binary = workspace_root().join(".bench/bin/s3s-fs");
        assert!(
            binary.exists(),
            "{} is missing: run `make bench`, which installs it",
            binary.display()
        );
        let root = tempfile::Builder::new()
            .prefix("walvault-s3s-")
            .tempdir()
            .expect("s3s-fs root");
        let port = free_port();
        let args = [
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--access-key".to_owned(),
            AWS_KEY.0.to_owned(),
            "--secret-key".to_owned(),
            AWS_KEY.1.to_owned(),
            root.path().display().to_string(),
        ];
        let mut process = GuardedProcess::spawn(
            "s3s-fs",
            &binary,
            &args,
            &scratch_dir().join("s3s-fs.log"),
            None,
            "TERM",
        );
        assert!(
            wait_for_port(&mut process, port, Duration::from_secs(30)),
            "s3s-fs did not start:\n{}",
            process.log_tail()
        );
        S3sFs {
            _process: process,
            _root: root,
            port,
        }
    }

    /// Points the staging, R2 and B2 stores of a [`crate::standins::Stack::env`]
    /// at this server (its buckets made by [`S3sFs::create_walvault_buckets`]);
    /// the catalog stays on moto's DynamoDB.
    pub fn redirect(&self, env: &mut BTreeMap<String, String>) {
        for store in ["STAGING", "R2", "B2"] {
            env.insert(format!("WALVAULT_{store}_ENDPOINT"), self.endpoint());
        }
        for provider in ["R2", "B2"] {
            env.insert(
                format!("WALVAULT_{provider}_ACCESS_KEY_ID"),
                AWS_KEY.0.into(),
            );
            env.insert(
                format!("WALVAULT_{provider}_SECRET_ACCESS_KEY"),
                AWS_KEY.1.into(),
            );
        }
        env.insert("WALVAULT_B2_REGION".into(), REGION.into());
        // s3s-fs knows one key: the harness's.
        env.insert("AWS_ACCESS_KEY_ID".into(), AWS_KEY.0.into());
        env.insert("AWS_SECRET_ACCESS_KEY".into(), AWS_KEY.1.into());
    }

    pub async fn create_walvault_buckets(&self) {
        self.create_buckets(&[STAGING_BUCKET, R2_BUCKET, B2_BUCKET])
            .await;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn create_buckets(&self, buckets: &[&str]) {
        let client = s3_client(&aws_sdk_config().await, &self.endpoint());
        for bucket in buckets {
            client
                .create_bucket()
                .bucket(*bucket)
                .send()
                .await
                .unwrap_or_else(|e| panic!("creating {bucket} on s3s-fs: {e:?}"));
        }
    }
}
