//! The local stand-in harness for walvault's integration tests: moto
//! servers standing in for S3, SQS, DynamoDB, R2 and B2, and a throw-away
//! PostgreSQL 15 cluster. It installs nothing; the README's test command
//! does (moto into the project venv).

pub mod archive;
pub mod backups;
pub mod chaos;
pub mod memory;
pub mod pgbackrest;
pub mod pipeline;
pub mod postgres;
pub mod process;
pub mod profile;
pub mod s3s;
pub mod shipper;
pub mod snapshot;
pub mod standins;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_owned()
}

/// A directory for this test binary's logs, kept after the run for
/// post-mortems and removed by the next run of the same binary.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().ok();
        let name = exe
            .as_deref()
            .and_then(Path::file_stem)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "walvault-tests".into());
        let dir = std::env::temp_dir().join("walvault-test-logs").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test log directory");
        dir
    })
}

/// The tokio runtime of the examples (demo, local invocation, benchmarks):
/// one worker per core of these 2-core machines.
pub fn example_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A cluster name no other test in this run uses, so that tests can share
/// one stack without seeing each other's objects and records.
pub fn unique_cluster(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
