//! The path a developer takes on a laptop: `cargo lambda watch` runs the
//! compress and retention functions against the stand-ins, and
//! `cargo lambda invoke` feeds them the sample events in `events/` exactly as
//! committed. Every check looks at the real outcome: replicas written and
//! byte-identical after decompression, catalog records, staging cleaned up,
//! retention deleting only what its report planned.
//!
//! `make test` runs this after `cargo test` (a cargo started from inside
//! `cargo test` would wait forever on the build lock). It prints TAP-style
//! `ok`/`not ok` lines and `# pass`/`# fail` totals, and exits 1 on a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shared::catalog::{RecordRef, RecordStatus};
use shared::clock::now_millis;
use shared::codec::{decompress, unpack_verified};
use shared::config::Config;
use shared::keys::{archive_key, staging_key};
use shared::provider::Provider;
use shared::retry::RequestLimits;
use shared::seal::{generate_identity, is_sealed, state, Fingerprint, Identities};
use shared::store::StoreError;
use shared::wal::WalFileName;
use walvault_tests::archive::{
    archive_replicated, backdate, backends, stage, synthetic_segment, tamper,
};
use walvault_tests::process::{free_port, wait_for_port, GuardedProcess};
use walvault_tests::profile::iam::Role;
use walvault_tests::standins::Stack;
use walvault_tests::{scratch_dir, workspace_root};

/// The cluster and segments the committed sample events name.
const CLUSTER: &str = "demo";
const SQS_SEGMENT: &str = "000000010000000000000001";
const S3_SEGMENT: &str = "000000010000000000000002";
const EVENTBRIDGE_SEGMENT: &str = "000000010000000000000003";
/// Archived 40 days ago: the only file a 30-day sweep may delete.
const EXPIRED_SEGMENT: &str = "000000010000000000000000";
/// A base backup's history file, 39 days old: the sweep's anchor.
const BACKUP: &str = "000000010000000000000001.00000028.backup";
const SYSTEM_IDENTIFIER: u64 = 7_311_234_567_890_123_456;
const DAY_MILLIS: u64 = 24 * 60 * 60 * 1000;
/// The first invoke of each function builds it (a no-op after
/// `cargo build --workspace --bins`, minutes on a cold target directory).
const FIRST_INVOKE_TIMEOUT: Duration = Duration::from_secs(900);

struct Tap {
    passed: usize,
    failed: usize,
}

impl Tap {
    fn check(&mut self, what: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("ok - {what}");
            }
            Err(why) => {
                self.failed += 1;
                println!("not ok - {what}\n  # {}", why.replace('\n', "\n  # "));
            }
        }
    }
}

struct Watch {
    process: GuardedProcess,
    port: u16,
    log: PathBuf,
}

impl Watch {
    /// `cargo lambda watch` on loopback with the stand-ins' settings as
    /// an env file, the way a developer points it at local services. One
    /// watch per function: each signs with its own role's keys, as in
    /// production, and the env file applies to every function it serves.
    fn start(function: &str, env: &BTreeMap<String, String>) -> Watch {
        let env_file = scratch_dir().join(format!("{function}.env"));
        let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&env_file, lines).expect("writing the env file");
        let port = free_port();
        let log = scratch_dir().join(format!("cargo-lambda-watch-{function}.log"));
        let args = [
            format!("PATH={}", path_with_cargo_lambda()),
            "cargo".into(),
            "lambda".into(),
            "watch".into(),
            "--ignore-changes".into(),
            "--invoke-address".into(),
            "127.0.0.1".into(),
            "--invoke-port".into(),
            port.to_string(),
            "--timeout".into(),
            FIRST_INVOKE_TIMEOUT.as_secs().to_string(),
            "--env-file".into(),
            env_file.display().to_string(),
        ];
        let mut process = GuardedProcess::spawn(
            "cargo lambda watch",
            Path::new("/usr/bin/env"),
            &args,
            &log,
            None,
            "INT",
        );
        assert!(
            wait_for_port(&mut process, port, Duration::from_secs(120)),
            "cargo lambda watch did not listen on {port}:\n{}",
            process.log_tail()
        );
        Watch { process, port, log }
    }

    /// `cargo lambda invoke <function> --data-file events/<event>`: the
    /// function's JSON response, or what went wrong.
    fn invoke(&self, function: &str, event: &str) -> Result<Value, String> {
        let data_file = workspace_root().join("events").join(event);
        let out = Command::new("cargo")
            .env("PATH", path_with_cargo_lambda())
            .args(["lambda", "invoke", function, "--output-format", "json"])
            .args(["--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &self.port.to_string()])
            .arg("--data-file")
            .arg(&data_file)
            .output()
            .map_err(|e| format!("running cargo lambda invoke: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "cargo lambda invoke {function} {event} failed ({}):\n{stdout}{}\nwatch log ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log.display(),
                self.process.log_tail()
            ));
        }
        serde_json::from_str(&stdout).map_err(|e| format!("response is not JSON ({e}): {stdout}"))
    }
}

/// `cargo lambda` is the venv's `cargo-lambda` (from PyPI), found by cargo
/// on PATH.
fn path_with_cargo_lambda() -> String {
    let venv_bin = workspace_root().join(".venv/bin");
    assert!(
        venv_bin.join("cargo-lambda").exists(),
        "{} has no cargo-lambda: run the README's test command (make test), which installs it",
        venv_bin.display()
    );
    format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn name(file: &str) -> WalFileName {
    file.parse().expect("a WAL file name")
}

/// The compress function answered an SQS batch with no failed items.
fn no_batch_failures(response: &Value) -> Result<(), String> {
    match response.get("batchItemFailures").and_then(Value::as_array) {
        Some(failures) if failures.is_empty() => Ok(()),
        _ => Err(format!("expected no batch item failures, got {response}")),
    }
}

/// `file` is on R2 and B2, each copy decompressing to `raw`; the catalog
/// says `replicated`; the staging copy is gone.
async fn replicated(config: &Config, file: &str, raw: &[u8]) -> Result<(), String> {
    let wal = name(file);
    let backends = backends(config).await;
    for provider in Provider::ALL {
        let packed = backends
            .replicas
            .get(provider)
            .ok_or("replica not configured")?
            .get(&archive_key(&config.cluster, wal))
            .await
            .map_err(|e| format!("{provider:?} copy of {file}: {e}"))?;
        let unpacked = decompress(&packed.body, raw.len() as u64)
            .map_err(|e| format!("{provider:?} copy of {file} does not decompress: {e}"))?;
        if unpacked != raw {
            return Err(format!(
                "{provider:?} copy of {file} differs from the original"
            ));
        }
    }
    let record = backends
        .catalog
        .get(&config.cluster, &wal.into())
        .await
        .map_err(|e| format!("catalog read for {file}: {e}"))?
        .ok_or_else(|| format!("no catalog record for {file}"))?;
    if record.status != RecordStatus::Replicated {
        return Err(format!("catalog status of {file} is {:?}", record.status));
    }
    match backends
        .staging
        .head(&staging_key(&config.cluster, wal))
        .await
    {
        Err(e) if e.is_not_found() => Ok(()),
        Ok(_) => Err(format!("the staging copy of {file} is still there")),
        Err(e) => Err(format!("staging HEAD for {file}: {e}")),
    }
}

/// Every one of `files` is still waiting in staging.
async fn still_staged(config: &Config, files: &[&str]) -> Result<(), String> {
    let staging = backends(config).await.staging;
    for file in files {
        staging
            .head(&staging_key(&config.cluster, name(file)))
            .await
            .map_err(|e| format!("{file} should still be staged: {e}"))?;
    }
    Ok(())
}

/// Whether `file` is on each replica and in the catalog.
async fn presence(config: &Config, file: &str) -> Result<[bool; 3], String> {
    let wal = name(file);
    let key = archive_key(&config.cluster, wal);
    let stored = |head: Result<_, StoreError>| match head {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    };
    let backends = backends(config).await;
    let head = |provider| {
        backends
            .replicas
            .get(provider)
            .expect("configured")
            .head(&key)
    };
    let r2 = stored(head(Provider::R2).await);
    let b2 = stored(head(Provider::B2).await);
    let record = backends.catalog.get(&config.cluster, &wal.into()).await;
    match (r2, b2, record) {
        (Ok(r2), Ok(b2), Ok(record)) => Ok([r2, b2, record.is_some()]),
        (r2, b2, record) => Err(format!(
            "reading {file}: R2 {:?}, B2 {:?}, catalog {:?}",
            r2.err(),
            b2.err(),
            record.err()
        )),
    }
}

/// The summary item is there, with the re-drive's staging report.
async fn summary_kept(config: &Config) -> Result<(), String> {
    let item = backends(config)
        .await
        .catalog
        .get_cluster_item(&config.cluster, shared::catalog::ClusterItemKind::Summary)
        .await
        .map_err(|e| format!("reading the summary item: {e}"))?
        .ok_or("no summary item")?;
    let summary: shared::status::keep::StoredSummary = serde_json::from_str(&item.body)
        .map_err(|e| format!("the summary item does not parse: {e}"))?;
    match summary.staging {
        Some(report) if report.backlog == 0 => Ok(()),
        other => Err(format!("expected an empty staging backlog, got {other:?}")),
    }
}

fn report_field(report: &Value, field: &str) -> u64 {
    report
        .get(field)
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX)
}

async fn run(tap: &mut Tap) {
    let stack = Stack::shared();
    let config = stack.config(CLUSTER);
    let mut raw = BTreeMap::new();
    for file in [SQS_SEGMENT, S3_SEGMENT, EVENTBRIDGE_SEGMENT] {
        let bytes = synthetic_segment(&name(file), SYSTEM_IDENTIFIER);
        stage(&config, &name(file), &bytes).await;
        raw.insert(file, bytes);
    }
    let expired = synthetic_segment(&name(EXPIRED_SEGMENT), SYSTEM_IDENTIFIER);
    archive_replicated(&config, &name(EXPIRED_SEGMENT), &expired).await;
    backdate(
        &config,
        &name(EXPIRED_SEGMENT),
        now_millis() - 40 * DAY_MILLIS,
    )
    .await;
    // A base backup starting in the next segment, 39 days ago: the anchor
    // that lets the sweep delete what came before it.
    let backup = name(BACKUP);
    archive_replicated(&config, &backup, b"START WAL LOCATION: 0/1000028\n").await;
    backdate(&config, &backup, now_millis() - 39 * DAY_MILLIS).await;

    let watch = Watch::start("compress", &stack.env_as(Role::Compress, CLUSTER));

    let test_event = match watch.invoke("compress", "sqs-s3-test-event.json") {
        Ok(response) => no_batch_failures(&response),
        Err(e) => Err(e),
    };
    let test_event = match test_event {
        Ok(()) => still_staged(&config, &[SQS_SEGMENT, S3_SEGMENT, EVENTBRIDGE_SEGMENT]).await,
        Err(e) => Err(e),
    };
    tap.check(
        "compress: the s3:TestEvent sample is acknowledged and touches nothing",
        test_event,
    );
    for (event, file) in [
        ("sqs-s3-object-created.json", SQS_SEGMENT),
        ("s3-object-created.json", S3_SEGMENT),
        ("eventbridge-object-created.json", EVENTBRIDGE_SEGMENT),
    ] {
        let outcome = match watch.invoke("compress", event) {
            Ok(response) if event.starts_with("sqs") => no_batch_failures(&response),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(()) => replicated(&config, file, &raw[file]).await,
            Err(e) => Err(e),
        };
        tap.check(
            &format!("compress: {event} replicates {file} to R2 and B2 and records it"),
            outcome,
        );
    }

    // The schedule's event is the re-drive's: nothing is stuck, and the
    // status summary is kept under the function's own rights.
    let redrive = match watch.invoke("compress", "retention-schedule.json") {
        Ok(answer) if answer["summary"] == "kept" && report_field(&answer, "failed") == 0 => {
            summary_kept(&config).await
        }
        Ok(answer) => Err(format!(
            "expected a re-drive that keeps the summary, got {answer}"
        )),
        Err(e) => Err(e),
    };
    tap.check(
        "compress: a scheduled event re-drives staging and keeps the status summary",
        redrive,
    );

    drop(watch);
    let watch = Watch::start("retention", &stack.env_as(Role::Retention, CLUSTER));
    let dry_run = match watch.invoke("retention", "retention-dry-run.json") {
        Ok(report) => match presence(&config, EXPIRED_SEGMENT).await {
            Ok([true, true, true])
                if report["dry_run"] == Value::Bool(true)
                    && report_field(&report, "planned") == 1
                    && report_field(&report, "catalog_removed") == 0 =>
            {
                Ok(())
            }
            Ok(present) => Err(format!(
                "expected a dry run planning one deletion and deleting nothing; report {report}, \
                 {EXPIRED_SEGMENT} on R2/B2/catalog: {present:?}"
            )),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    tap.check(
        "retention: the dry-run sample plans the expired segment and deletes nothing",
        dry_run,
    );

    // R2 loses a copy behind walvault's back: the verify after the sweep
    // puts it back from B2, with the retention function's own rights.
    let lost = archive_key(&config.cluster, name(SQS_SEGMENT));
    let lost = match tamper(Provider::R2).await.delete(&lost).await {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("deleting R2's copy of {SQS_SEGMENT}: {e}")),
    };
    let sweep = match (lost, watch.invoke("retention", "retention-schedule.json")) {
        (Err(e), _) => Err(e),
        (Ok(()), Ok(report))
            if report_field(&report["deleted"], "r2") == 1
                && report_field(&report["deleted"], "b2") == 1
                && report_field(&report, "catalog_removed") == 1
                && report_field(&report["verify"], "repaired") == 1
                && report_field(&report["verify"], "outstanding") == 0
                && report_field(&report["verify"], "unchecked") == 0
                && report["summary"] == "rebuilt"
                && report["verify"]["summary"] == "recorded" =>
        {
            let mut outcome = match presence(&config, EXPIRED_SEGMENT).await {
                Ok([false, false, false]) => Ok(()),
                Ok(present) => Err(format!(
                    "{EXPIRED_SEGMENT} still on R2/B2/catalog: {present:?}"
                )),
                Err(e) => Err(e),
            };
            for file in [SQS_SEGMENT, S3_SEGMENT, EVENTBRIDGE_SEGMENT] {
                if outcome.is_ok() {
                    outcome = replicated(&config, file, &raw[file]).await;
                }
            }
            outcome
        }
        (Ok(()), Ok(report)) => Err(format!(
            "expected one deletion on R2, B2 and the catalog, and one repair, got {report}"
        )),
        (Ok(()), Err(e)) => Err(e),
    };
    tap.check(
        "retention: the schedule sample deletes the expired segment everywhere, keeps the rest, \
         its verify repairs a copy lost on R2, and the status summary is rebuilt and the verify \
         recorded in it",
        sweep,
    );
    drop(watch);
    encryption(tap, stack, &config, &raw[SQS_SEGMENT]).await;
}

/// The compress function with `WALVAULT_RECIPIENTS` seals what it
/// replicates and records the cluster as sealed; started again without
/// recipients it refuses to start, and starts with
/// `WALVAULT_ENCRYPTION_OFF`.
async fn encryption(tap: &mut Tap, stack: &Stack, config: &Config, raw: &[u8]) {
    let new = generate_identity("lambda-local");
    let key_file = scratch_dir().join("lambda-local-identity.txt");
    let written = std::fs::write(&key_file, &new.file_text);
    let identities = written
        .map_err(|e| e.to_string())
        .and_then(|()| Identities::load(&[&key_file]).map_err(|e| e.to_string()));
    let sealed = match (identities, forget(config, SQS_SEGMENT, raw).await) {
        (Ok(identities), Ok(())) => {
            let mut env = stack.env_as(Role::Compress, CLUSTER);
            env.insert("WALVAULT_RECIPIENTS".into(), new.recipient.clone());
            let watch = Watch::start("compress", &env);
            match watch.invoke("compress", "sqs-s3-object-created.json") {
                Ok(response) => match no_batch_failures(&response) {
                    Ok(()) => {
                        sealed_replicas(config, SQS_SEGMENT, raw, &identities, &new.fingerprint)
                            .await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    tap.check(
        "compress with WALVAULT_RECIPIENTS: R2 and B2 hold sealed copies that the identity opens, \
         and the catalog records the cluster as sealed",
        sealed,
    );
    // Started directly (`cargo lambda watch` would restart a function that
    // exits during its start, and hold the invoke): the check comes before
    // the function asks the runtime API for events.
    let refused = match start_compress(stack, &[]) {
        (false, stderr) if stderr.contains("WALVAULT_ENCRYPTION_OFF") => Ok(()),
        (_, stderr) => Err(format!(
            "expected a refusal naming WALVAULT_ENCRYPTION_OFF:\n{stderr}"
        )),
    };
    tap.check(
        "compress without WALVAULT_RECIPIENTS refuses to start for a cluster recorded as sealed",
        refused,
    );
    let (_, stderr) = start_compress(stack, &[("WALVAULT_ENCRYPTION_OFF", "true")]);
    let budget = RequestLimits::from_config(config).one_request();
    let catalog = backends(config).await.catalog;
    let off = match state::read(catalog.as_ref(), &config.cluster, &budget).await {
        Ok(Some((_, state))) if !state.sealed && !stderr.contains("WALVAULT_ENCRYPTION_OFF") => {
            Ok(())
        }
        other => Err(format!(
            "state {other:?} after a start with encryption off:\n{stderr}"
        )),
    };
    tap.check(
        "compress with WALVAULT_ENCRYPTION_OFF=true passes the check and records encryption off",
        off,
    );
}

/// Runs the compress binary with the stand-ins' settings and `changes`,
/// outside any Lambda runtime: whether it exited 0, and its stderr.
fn start_compress(stack: &Stack, changes: &[(&str, &str)]) -> (bool, String) {
    let mut env = stack.env_as(Role::Compress, CLUSTER);
    for (k, v) in changes {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let binary = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug/compress");
    match Command::new(&binary).env_clear().envs(&env).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => (false, format!("running {}: {e}", binary.display())),
    }
}

/// Removes `file` from the catalog and both providers and stages it again,
/// as if never archived.
async fn forget(config: &Config, file: &str, raw: &[u8]) -> Result<(), String> {
    let backends = backends(config).await;
    let wal = name(file);
    let record = backends
        .catalog
        .get(&config.cluster, &wal.into())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no record of {file}"))?;
    backends
        .catalog
        .delete(RecordRef::of(&record))
        .await
        .map_err(|e| e.to_string())?;
    for provider in Provider::ALL {
        tamper(provider)
            .await
            .delete(&archive_key(&config.cluster, wal))
            .await
            .map_err(|e| e.to_string())?;
    }
    stage(config, &wal, raw).await;
    Ok(())
}

/// Both providers hold `file` sealed, the identity opens it to `raw`, and
/// the catalog says the cluster is sealed to `fingerprint`.
async fn sealed_replicas(
    config: &Config,
    file: &str,
    raw: &[u8],
    identities: &Identities,
    fingerprint: &Fingerprint,
) -> Result<(), String> {
    let backends = backends(config).await;
    let record = backends
        .catalog
        .get(&config.cluster, &name(file).into())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no record of {file}"))?;
    for replica in backends.replicas.iter() {
        let object = replica
            .store
            .get(&archive_key(&config.cluster, name(file)))
            .await
            .map_err(|e| format!("{} copy: {e}", replica.provider))?;
        if !is_sealed(&object.body) {
            return Err(format!("{} holds a plain copy", replica.provider));
        }
        let opened = unpack_verified(
            &object.body,
            record.raw_size,
            &record.raw_sha256,
            identities,
        )
        .map_err(|e| format!("{} copy does not open: {e}", replica.provider))?;
        if opened != raw {
            return Err(format!(
                "{} copy differs from the original",
                replica.provider
            ));
        }
    }
    let budget = RequestLimits::from_config(config).one_request();
    match state::read(backends.catalog.as_ref(), &config.cluster, &budget).await {
        Ok(Some((_, state))) if state.sealed && state.recipients == [fingerprint.clone()] => Ok(()),
        other => Err(format!("the catalog's encryption state: {other:?}")),
    }
}

fn main() {
    let runtime = walvault_tests::example_runtime();
    let mut tap = Tap {
        passed: 0,
        failed: 0,
    };
    println!("# cargo lambda watch + cargo lambda invoke with events/ against the stand-ins");
    runtime.block_on(run(&mut tap));
    println!("# pass {}\n# fail {}", tap.passed, tap.failed);
    if tap.failed > 0 {
        std::process::exit(1);
    }
}
