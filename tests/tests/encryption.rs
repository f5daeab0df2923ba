//! Client-side encryption end to end, with the real `walvault` binary,
//! PostgreSQL 15 and the stand-ins: a cluster archived plain (a base
//! backup and WAL), then sealed to key A (a base backup holding the marker
//! rows, and WAL), then to key B (a mixed archive across a rotation). R2
//! and B2 then hold no row text and no raw digest; recovery to a time from
//! the sealed backup gives exactly the rows committed before it, from the
//! plain backup across plain, A and B files the rows at the end, and the
//! drill passes; with only B, the A backup is refused naming A; without a
//! key, fetch stops above 125 naming it; a copy tampered with on R2 is
//! served from B2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::catalog::list_all as list_records;
use shared::config::{Config, Encryption};
use shared::keys::archive_key;
use shared::provider::Provider;
use shared::seal::{is_sealed, Fingerprint, Recipients};
use shared::store::list_all;
use walvault::exit::{FETCH_LOCKED, RESTORE_UNAVAILABLE};
use walvault_tests::archive::{backends, replicator, tamper};
use walvault_tests::backups::{
    backup_settings, now_rfc3339, recover_restored, recovering_host, restore, take_backup,
};
use walvault_tests::pipeline::{drain_queue, start_source, write_and_archive};
use walvault_tests::postgres::hand_to_postgres_user;
use walvault_tests::shipper::{public_tempdir, Run, Shipper};

/// Text that appears in the table's rows, so in the WAL, and must appear
/// in nothing R2 or B2 holds.
const MARKER: &str = "walvault-marker-7f3a9c-alice@example.com";

/// An identity written by `walvault keygen` into `dir`: its path and its
/// public recipient.
fn keygen(host: &Shipper, dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let run = host.run(&["keygen", "--out", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(run.code, 0, "keygen:\n{}", run.stderr);
    let again = host.run(&["keygen", "--out", path.to_str().expect("a UTF-8 path")]);
    assert_eq!(again.code, 1, "keygen never overwrites:\n{}", again.stderr);
    let text = std::fs::read_to_string(&path).expect("the identity file");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("the public key comment")
        .to_owned();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    (path, recipient)
}

/// `config` sealing to `recipient`.
fn sealing(config: &Config, recipient: &str) -> Config {
    Config {
        encryption: Encryption::To(Recipients::parse(recipient).expect("a recipient")),
        ..config.clone()
    }
}

/// `run` exited `code`, naming the key by its fingerprint and never
/// printing the key itself.
fn stopped_naming(run: &Run, code: u8, fingerprint: &Fingerprint, recipient: &str) {
    assert_eq!(i32::from(code), run.code, "{}", run.stderr);
    assert!(run.stderr.contains(fingerprint.as_str()), "{}", run.stderr);
    assert!(!run.stderr.contains(recipient), "{}", run.stderr);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hold_only_ciphertext_and_recovery_crosses_the_rotation() {
    let source = start_source("sealed", &backup_settings(1));
    let keys = public_tempdir("walvault-keys");
    let (key_a, recipient_a) = keygen(&Shipper::new(&source.env), keys.path(), "a.txt");
    let (key_b, recipient_b) = keygen(&Shipper::new(&source.env), keys.path(), "b.txt");
    hand_to_postgres_user(keys.path());

    // Plain, from before encryption: a backup and some rows.
    let plain_backup = take_backup(&source);
    write_and_archive(&source.pg, 1, 1000);
    drain_queue(&replicator(&source.config).await, &source.config, false).await;
    let plain: Vec<String> = list_records(
        backends(&source.config).await.catalog.as_ref(),
        &source.config.cluster,
    )
    .await
    .expect("catalog")
    .iter()
    .map(|r| r.file.to_string())
    .collect();

    // Sealed to A: rows carrying the marker, and a backup holding them.
    source.pg.sql(&format!(
        "INSERT INTO proof SELECT g, '{MARKER}' || g FROM generate_series(1001, 1500) g"
    ));
    let sealed_backup = take_backup(&source);
    let at_target = write_and_archive(&source.pg, 1501, 3000);
    let sealed_to_a = sealing(&source.config, &recipient_a);
    drain_queue(&replicator(&sealed_to_a).await, &sealed_to_a, false).await;
    std::thread::sleep(Duration::from_millis(1100));
    let target = now_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));

    // Rotated to B.
    source.pg.sql(&format!(
        "INSERT INTO proof SELECT g, '{MARKER}' || g FROM generate_series(3001, 3500) g"
    ));
    let latest = write_and_archive(&source.pg, 3501, 5000);
    let sealed_to_b = sealing(&source.config, &recipient_b);
    drain_queue(&replicator(&sealed_to_b).await, &sealed_to_b, false).await;

    // What the providers hold: no row text, raw or after a zstd decode;
    // no raw digest in any metadata; every file after the switch sealed.
    let backends = backends(&source.config).await;
    let records = list_records(backends.catalog.as_ref(), &source.config.cluster)
        .await
        .expect("catalog");
    let digests: Vec<&str> = records.iter().map(|r| r.raw_sha256.as_str()).collect();
    let sealed: Vec<_> = records.iter().filter(|r| r.seal.is_some()).collect();
    assert!(
        sealed.len() >= 6,
        "{} sealed of {}",
        sealed.len(),
        records.len()
    );
    for record in &records {
        assert_eq!(
            record.seal.is_none(),
            plain.contains(&record.file.to_string()),
            "{}: sealed exactly when archived after the switch",
            record.file
        );
    }
    let prefix = format!("{}/", source.config.cluster);
    for replica in backends.replicas.iter() {
        let objects = list_all(replica.store.as_ref(), &prefix)
            .await
            .expect("list");
        assert_eq!(objects.len(), records.len(), "{}", replica.provider);
        for listed in objects {
            let object = replica.store.get(&listed.key).await.expect("get");
            let what = format!("{} {}", replica.provider, listed.key);
            assert!(
                !contains(&object.body, MARKER.as_bytes()),
                "{what}: marker in the body"
            );
            let decoded = shared::codec::decompress(&object.body, 1 << 30).unwrap_or_default();
            assert!(
                !contains(&decoded, MARKER.as_bytes()),
                "{what}: marker after zstd"
            );
            let metadata = format!("{:?}", object.info.metadata);
            let record = records
                .iter()
                .find(|r| archive_key(&source.config.cluster, r.file) == listed.key)
                .expect("every object has a record");
            assert_eq!(record.seal.is_some(), is_sealed(&object.body), "{what}");
            if record.seal.is_some() {
                assert!(
                    digests.iter().all(|d| !metadata.contains(d)),
                    "{what}: {metadata}"
                );
                assert!(!metadata.contains("raw-size"), "{what}: {metadata}");
            }
        }
    }

    // Recovery to the target from the backup sealed to A; to the end from
    // the plain backup, across plain, A and B files.
    let identities = format!("{},{}", key_a.display(), key_b.display());
    let host = recovering_host(&source, &[("WALVAULT_IDENTITY_FILE", &identities)]);
    let (run, data) = restore(&host, &["--time", &target]);
    assert_eq!(run.code, 0, "restore:\n{}", run.stderr);
    assert!(
        run.stderr.contains(&sealed_backup.to_string()),
        "{}",
        run.stderr
    );
    assert_eq!(
        recover_restored(data),
        at_target,
        "rows committed before the target"
    );
    let plain_id = plain_backup.to_string();
    let (run, data) = restore(&host, &["--latest", "--backup", &plain_id]);
    assert_eq!(run.code, 0, "restore --latest:\n{}", run.stderr);
    assert_eq!(recover_restored(data), latest, "across the rotation to B");

    // The unattended drill, from the backup sealed to A through B's WAL.
    let (run, report) = host.run_as_postgres(&["drill", "--json"]);
    assert_eq!(run.code, 0, "drill:\n{}\n{report}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["passed"], true, "{report}");

    // With only B, the backup sealed to A is not restored.
    let key_b_path = key_b.to_str().expect("a UTF-8 path");
    let only_b = recovering_host(&source, &[("WALVAULT_IDENTITY_FILE", key_b_path)]);
    let sealed_id = sealed_backup.to_string();
    let (run, _) = restore(&only_b, &["--latest", "--backup", &sealed_id]);
    let fingerprint_a = Recipients::parse(&recipient_a)
        .expect("a recipient")
        .fingerprints()[0]
        .clone();
    stopped_naming(&run, RESTORE_UNAVAILABLE, &fingerprint_a, &recipient_a);

    // A file sealed to A, fetched without A: above 125, naming A.
    let first_a = sealed
        .iter()
        .find(|r| r.sealed_to() == [fingerprint_a.clone()] && r.file.wal().is_some())
        .expect("a segment sealed to A");
    let name = first_a.file.to_string();
    let dest = public_tempdir("walvault-fetched");
    let to = dest.path().join("segment");
    let to = to.to_str().expect("a UTF-8 path");
    for identity in [None, Some(key_b.to_str().expect("a UTF-8 path"))] {
        let mut changes = vec![];
        if let Some(identity) = identity {
            changes.push(("WALVAULT_IDENTITY_FILE", identity));
        }
        let run = recovering_host(&source, &changes).run(&["fetch", &name, to]);
        stopped_naming(&run, FETCH_LOCKED, &fingerprint_a, &recipient_a);
    }

    // Tampered with on R2: the copy is corrupt, B2 serves it.
    let r2 = tamper(Provider::R2).await;
    let key = archive_key(&source.config.cluster, first_a.file);
    let mut body = r2.get(&key).await.expect("R2's copy").body.to_vec();
    let middle = body.len() / 2;
    body[middle] ^= 0x55;
    r2.delete(&key).await.expect("delete");
    r2.put_if_absent(
        &key,
        body.into(),
        first_a.replica_tag(),
        &first_a.replica_metadata(),
    )
    .await
    .expect("tampering");
    let run = host.run(&["fetch", &name, to]);
    assert_eq!(run.code, 0, "fetch past a tampered copy:\n{}", run.stderr);
    assert!(run.stderr.contains("CORRUPT"), "{}", run.stderr);
    let fetched = std::fs::read(to).expect("the fetched segment");
    assert_eq!(shared::codec::Sha256Hex::of(&fetched), first_a.raw_sha256);
}
