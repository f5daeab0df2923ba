//! `walvault verify` against the stand-ins, as a person on call runs it:
//! on the database host's read-only keys it finds a replica deleted on R2,
//! an orphan, and (only with `--deep`) a copy damaged on B2 behind an
//! unchanged ETag; its `--repair` is refused there; with an operator's
//! keys (`RepairPolicy`, R2 read-write token, B2 write key) it repairs
//! both, and the archive verifies clean.

use shared::catalog::{RecordRef, TargetState};
use shared::clock::now_millis;
use shared::keys::{archive_key, meta};
use shared::provider::Provider;
use shared::store::Metadata;
use shared::wal::WalFileName;
use walvault::exit::{VERIFY_PROBLEMS, VERIFY_REPAIR_REFUSED};
use walvault_tests::archive::{archive_replicated, backends, synthetic_segment, tamper};
use walvault_tests::profile::iam::Role;
use walvault_tests::shipper::Shipper;
use walvault_tests::standins::Stack;
use walvault_tests::unique_cluster;

const SYSID: u64 = 7_301_234_567_890_123_456;
const FILES: [&str; 4] = [
    "000000010000000000000001",
    "000000010000000000000002",
    "000000010000000000000003",
    "000000010000000000000004",
];

fn name(s: &str) -> WalFileName {
    s.parse().unwrap()
}

/// Runs `walvault <args>`: the exit code, stdout (the report) and stderr.
fn run(shipper: &Shipper, args: &[&str]) -> (i32, String, String) {
    let out = shipper.command(args).output().expect("running walvault");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Damages B2's copy of `file` the way bit rot does: the bytes change and
/// the store keeps reporting the ETag the catalog recorded.
async fn rot_on_b2(config: &shared::config::Config, file: &str) {
    let key = archive_key(&config.cluster, name(file));
    let b2 = tamper(Provider::B2).await;
    let original = b2.get(&key).await.unwrap();
    let mut damaged = original.body.to_vec();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    b2.delete(&key).await.unwrap();
    let record = backends(config)
        .await
        .catalog
        .get(&config.cluster, &name(file).into())
        .await
        .unwrap()
        .unwrap();
    let metadata = Metadata::from([(meta::RAW_SIZE.to_owned(), record.raw_size.to_string())]);
    b2.put_if_absent(&key, damaged.into(), &record.raw_sha256, &metadata)
        .await
        .unwrap();
    let rotten = b2.head(&key).await.unwrap();
    let target = TargetState {
        key,
        size: rotten.size,
        etag: rotten.etag,
        at: now_millis(),
        stored_sha256: None,
    };
    backends(config)
        .await
        .catalog
        .record_target(RecordRef::of(&record), Provider::B2, &target, now_millis())
        .await
        .unwrap();
}

#[tokio::test]
async fn verify_finds_what_is_wrong_and_repair_needs_write_keys() {
    let stack = Stack::shared();
    let cluster = unique_cluster("verify");
    let config = stack.config(&cluster);
    for file in FILES {
        archive_replicated(&config, &name(file), &synthetic_segment(&name(file), SYSID)).await;
    }
    let host = Shipper::new(&stack.env_as(Role::Shipper, &cluster));

    let (code, out, err) = run(&host, &["verify", "--deep"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("result: OK (exit 0)"), "{out}");

    // Damage: R2's copy of …02 deleted, B2's copy of …03 rotten, an
    // object on R2 that no record names.
    let missing_key = archive_key(&config.cluster, name(FILES[1]));
    tamper(Provider::R2)
        .await
        .delete(&missing_key)
        .await
        .unwrap();
    rot_on_b2(&config, FILES[2]).await;
    let orphan = format!("{cluster}/wal/0000000100000000000000AA.zst");
    tamper(Provider::R2)
        .await
        .put_if_absent(
            &orphan,
            bytes::Bytes::from_static(b"left behind"),
            &shared::codec::Sha256Hex::of(b"x"),
            &Metadata::new(),
        )
        .await
        .unwrap();

    // A HEAD finds the deleted copy and the orphan, not the rot.
    let (code, out, err) = run(&host, &["verify", "--json"]);
    assert_eq!(code, i32::from(VERIFY_PROBLEMS), "{out}\n{err}");
    let report = json(&out);
    assert_eq!(report["cluster"], cluster.as_str());
    assert_eq!(report["exit_code"], VERIFY_PROBLEMS);
    assert_eq!(report["deep"], false);
    assert_eq!(report["files"], 4);
    assert_eq!(report["providers"]["r2"]["checked"], 4);
    assert_eq!(report["providers"]["r2"]["good"], 3);
    assert_eq!(report["providers"]["b2"]["good"], 4);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{out}");
    assert_eq!(problems[0]["file"], FILES[1]);
    assert_eq!(problems[0]["provider"], "r2");
    assert_eq!(problems[0]["problem"]["kind"], "missing");
    let orphans = report["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{out}");
    assert_eq!(orphans[0]["key"], orphan.as_str());
    assert_eq!(report["breaks"].as_array().unwrap().len(), 0);

    // --deep downloads every copy and finds the rot too.
    let (code, out, _) = run(&host, &["verify", "--deep", "--json"]);
    assert_eq!(code, i32::from(VERIFY_PROBLEMS));
    let report = json(&out);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{out}");
    let rotten = problems.iter().find(|p| p["provider"] == "b2").unwrap();
    assert_eq!(rotten["file"], FILES[2]);
    assert_eq!(rotten["problem"]["kind"], "corrupt");

    // The host's keys are read-only: repair is refused, nothing written.
    let (code, out, err) = run(&host, &["verify", "--deep", "--repair"]);
    assert_eq!(code, i32::from(VERIFY_REPAIR_REFUSED), "{out}\n{err}");
    assert!(
        out.contains("repair refused") && out.contains("write access"),
        "{out}"
    );
    assert!(tamper(Provider::R2).await.head(&missing_key).await.is_err());

    // An operator's keys: both copies repaired from the other provider;
    // the orphan is reported and left alone.
    let operator = Shipper::new(&stack.env_as(Role::Repair, &cluster));
    let (code, out, err) = run(&operator, &["verify", "--deep", "--repair", "--json"]);
    assert_eq!(
        code,
        i32::from(VERIFY_PROBLEMS),
        "the orphan remains: {out}\n{err}"
    );
    let report = json(&out);
    for problem in report["problems"].as_array().unwrap() {
        assert_eq!(problem["repair"]["result"], "repaired", "{out}");
    }
    assert!(tamper(Provider::R2).await.head(&orphan).await.is_ok());

    tamper(Provider::R2).await.delete(&orphan).await.unwrap();
    let (code, out, err) = run(&host, &["verify", "--deep"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("problems: none") && out.contains("orphans (no catalog record): none"),
        "{out}"
    );

    // A range: one timeline, no orphan search.
    let (code, out, _) = run(&host, &["verify", "--timeline", "2", "--json"]);
    assert_eq!(code, 0);
    let report = json(&out);
    assert_eq!(report["files"], 0);
    assert_eq!(report["orphans"], serde_json::Value::Null);
}
