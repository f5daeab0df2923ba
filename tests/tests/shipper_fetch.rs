//! `walvault fetch` as PostgreSQL's restore_command, and directly, against
//! the stand-ins: verified restore, fallbacks, exit codes, prefetch.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shared::codec::{compress, CompressionLevel, Sha256Hex};
use shared::config::Config;
use shared::keys::{archive_key, meta};
use shared::provider::Provider;
use shared::store::Metadata;
use shared::wal::WalFileName;
use walvault::exit::{
    FETCH_DISAGREEMENT, FETCH_NOT_FOUND, FETCH_NO_VERIFIED_COPY, FETCH_STORE_ERROR,
};
use walvault_tests::archive::{archive_replicated, stage, synthetic_segment, tamper};
use walvault_tests::postgres::{PgOptions, Postgres};
use walvault_tests::profile::faults::NetFault;
use walvault_tests::profile::iam::Role;
use walvault_tests::shipper::{public_tempdir, Run, Shipper};
use walvault_tests::standins::Stack;
use walvault_tests::unique_cluster;

const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

fn name(s: &str) -> WalFileName {
    s.parse().unwrap()
}

const SYSID: u64 = 7_301_234_567_890_123_456;

/// A valid 1 MiB segment named `file`.
fn segment(file: &str) -> Vec<u8> {
    synthetic_segment(&name(file), SYSID)
}

struct Setup {
    config: Config,
    env: BTreeMap<String, String>,
}

fn setup(prefix: &str) -> Setup {
    let stack = Stack::shared();
    let cluster = unique_cluster(prefix);
    // A recovering host: `RestorePolicy`, read-only replica keys.
    let env = stack.env_as(Role::Restore, &cluster);
    Setup {
        config: stack.config(&cluster),
        env,
    }
}

fn fetch(shipper: &Shipper, file: &str, dest: &Path) -> Run {
    shipper.run(&["fetch", file, dest.to_str().unwrap()])
}

fn with(env: &BTreeMap<String, String>, changes: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = env.clone();
    for (k, v) in changes {
        env.insert(k.to_string(), v.to_string());
    }
    env
}

#[tokio::test]
async fn a_replicated_file_is_restored_verified() {
    let s = setup("fetch");
    let raw = segment("000000010000000000000001");
    archive_replicated(&s.config, &name("000000010000000000000001"), &raw).await;
    let shipper = Shipper::new(&with(&s.env, &[("WALVAULT_PREFETCH", "0")]));
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYXLOG");
    let run = fetch(&shipper, "000000010000000000000001", &dest);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("from r2"), "{}", run.stderr);
    assert_eq!(std::fs::read(&dest).unwrap(), raw);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["RECOVERYXLOG"], "no temporary files left");

    // The configured order decides which replica serves.
    let b2_first = Shipper::new(&with(
        &s.env,
        &[
            ("WALVAULT_PREFETCH", "0"),
            ("WALVAULT_FETCH_ORDER", "b2,r2"),
        ],
    ));
    let run = fetch(&b2_first, "000000010000000000000001", &dest);
    assert!(run.stderr.contains("from b2"), "{}", run.stderr);
}

#[tokio::test]
async fn a_64_mib_segment_streams_to_disk_verified_and_leaves_nothing_behind() {
    let s = setup("fetch-large");
    let file = name("000000010000000000000002");
    let size = shared::wal::SegmentSize::new(64 << 20).unwrap();
    let raw = shared::testing::synthetic_segment_of(&file, SYSID, size);
    archive_replicated(&s.config, &file, &raw).await;
    let shipper = Shipper::new(&with(&s.env, &[("WALVAULT_PREFETCH", "0")]));
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYXLOG");
    let run = fetch(&shipper, "000000010000000000000002", &dest);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(std::fs::read(&dest).unwrap() == raw, "the fetched bytes");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["RECOVERYXLOG"], "no temporary files left");

    // R2's copy a valid zstd frame of other bytes: the streamed copy fails
    // verification at its end, and B2 serves.
    let key = archive_key(&s.config.cluster, file);
    let r2 = tamper(Provider::R2).await;
    r2.delete(&key).await.unwrap();
    let mut wrong = raw.clone();
    wrong[40 << 20] ^= 1;
    let packed = Bytes::from(compress(&wrong, CompressionLevel::default()).unwrap());
    r2.put_if_absent(
        &key,
        packed,
        &Sha256Hex::of(&raw),
        &Metadata::from([(meta::RAW_SIZE.to_owned(), raw.len().to_string())]),
    )
    .await
    .unwrap();
    std::fs::remove_file(&dest).unwrap();
    let run = fetch(&shipper, "000000010000000000000002", &dest);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("from b2"), "{}", run.stderr);
    assert!(run.stderr.contains("CORRUPT"), "{}", run.stderr);
    assert!(std::fs::read(&dest).unwrap() == raw, "the fetched bytes");
}

#[tokio::test]
async fn missing_files_exit_1_fast_and_partials_are_never_served() {
    let s = setup("missing");
    let shipper = Shipper::new(&s.env);
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYHISTORY");
    let started = Instant::now();
    let run = fetch(&shipper, "00000007.history", &dest);
    assert_eq!(run.code, i32::from(FETCH_NOT_FOUND), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!dest.exists());

    archive_replicated(
        &s.config,
        &name("000000010000000000000004.partial"),
        &segment("000000010000000000000004.partial"),
    )
    .await;
    let run = fetch(
        &shipper,
        "000000010000000000000004",
        &dir.path().join("RECOVERYXLOG"),
    );
    assert_eq!(
        run.code,
        i32::from(FETCH_NOT_FOUND),
        "a .partial is not the full segment: {}",
        run.stderr
    );
}

#[tokio::test]
async fn a_file_only_in_staging_is_served_from_there() {
    let s = setup("staged");
    let raw = segment("000000010000000000000002");
    stage(&s.config, &name("000000010000000000000002"), &raw).await;
    let shipper = Shipper::new(&s.env);
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYXLOG");
    let run = fetch(&shipper, "000000010000000000000002", &dest);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("from staging"), "{}", run.stderr);
    assert_eq!(std::fs::read(&dest).unwrap(), raw);
}

#[tokio::test]
async fn r2_down_and_b2_not_found_aborts_recovery() {
    let s = setup("r2-down");
    let file = name("000000010000000000000003");
    archive_replicated(&s.config, &file, &segment("000000010000000000000003")).await;
    tamper(Provider::B2)
        .await
        .delete(&archive_key(&s.config.cluster, file))
        .await
        .unwrap();
    let shipper = Shipper::new(&with(
        &s.env,
        &[
            ("WALVAULT_R2_ENDPOINT", DEAD_ENDPOINT),
            ("WALVAULT_REQUEST_TIMEOUT_SECS", "2"),
            ("WALVAULT_MAX_ATTEMPTS", "1"),
        ],
    ));
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYXLOG");
    let run = fetch(&shipper, &file.to_string(), &dest);
    assert_eq!(run.code, i32::from(FETCH_STORE_ERROR), "{}", run.stderr);
    assert!(!dest.exists());
}

#[tokio::test]
async fn a_corrupt_r2_copy_falls_back_to_b2_and_is_reported() {
    let s = setup("corrupt");
    let file = name("000000010000000000000005");
    let raw = segment("000000010000000000000005");
    let record = archive_replicated(&s.config, &file, &raw).await;
    // Replace R2's object with a valid zstd frame of other bytes.
    let r2 = tamper(Provider::R2).await;
    let key = archive_key(&s.config.cluster, file);
    r2.delete(&key).await.unwrap();
    let mut wrong = raw.clone();
    wrong[12_345] ^= 1;
    let packed = Bytes::from(compress(&wrong, CompressionLevel::default()).unwrap());
    r2.put_if_absent(
        &key,
        packed,
        &record.raw_sha256,
        &Metadata::from([(meta::RAW_SIZE.to_owned(), raw.len().to_string())]),
    )
    .await
    .unwrap();

    let shipper = Shipper::new(&s.env);
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYXLOG");
    let run = fetch(&shipper, &file.to_string(), &dest);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("CORRUPT") && run.stderr.contains("from b2"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&dest).unwrap(), raw);

    // Both corrupt: no verified copy, recovery aborts.
    let b2 = tamper(Provider::B2).await;
    b2.delete(&key).await.unwrap();
    b2.put_if_absent(
        &key,
        Bytes::from_static(b"garbage"),
        &record.raw_sha256,
        &Metadata::new(),
    )
    .await
    .unwrap();
    let run = fetch(&shipper, &file.to_string(), &dest);
    assert_eq!(
        run.code,
        i32::from(FETCH_NO_VERIFIED_COPY),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn without_the_catalog_copies_are_found_by_key_and_must_agree() {
    let s = setup("no-catalog");
    let file = name("000000010000000000000006");
    let raw = segment("000000010000000000000006");
    archive_replicated(&s.config, &file, &raw).await;
    let shipper = Shipper::new(&with(
        &s.env,
        &[
            ("WALVAULT_DYNAMODB_ENDPOINT", DEAD_ENDPOINT),
            ("WALVAULT_REQUEST_TIMEOUT_SECS", "2"),
            ("WALVAULT_MAX_ATTEMPTS", "1"),
        ],
    ));
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYXLOG");
    let run = fetch(&shipper, &file.to_string(), &dest);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(std::fs::read(&dest).unwrap(), raw);

    // Not found anywhere, but the catalog could not say: not "not found".
    let run = fetch(&shipper, "000000010000000000000066", &dest);
    assert_eq!(run.code, i32::from(FETCH_STORE_ERROR), "{}", run.stderr);

    // Two self-consistent but different copies fail loudly.
    let b2 = tamper(Provider::B2).await;
    let key = archive_key(&s.config.cluster, file);
    b2.delete(&key).await.unwrap();
    let other = segment("000000010000000000000060");
    let packed = Bytes::from(compress(&other, CompressionLevel::default()).unwrap());
    b2.put_if_absent(
        &key,
        packed,
        &Sha256Hex::of(&other),
        &Metadata::from([(meta::RAW_SIZE.to_owned(), other.len().to_string())]),
    )
    .await
    .unwrap();
    let run = fetch(&shipper, &file.to_string(), &dest);
    assert_eq!(run.code, i32::from(FETCH_DISAGREEMENT), "{}", run.stderr);
}

#[tokio::test]
async fn prefetched_segments_are_served_without_store_calls() {
    let s = setup("prefetch");
    let segments: Vec<(WalFileName, Vec<u8>)> = (0..5u8)
        .map(|i| {
            (
                name(&format!("0000000100000000000000{:02X}", 0x10 + i)),
                segment(&format!("0000000100000000000000{:02X}", 0x10 + i)),
            )
        })
        .collect();
    for (file, raw) in &segments {
        archive_replicated(&s.config, file, raw).await;
    }
    let shipper = Shipper::new(&with(&s.env, &[("WALVAULT_PREFETCH", "3")]));
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYXLOG");
    let run = fetch(&shipper, &segments[0].0.to_string(), &dest);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let prefetch_dir = shipper.spool_dir().join("prefetch");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(1..4).all(|i| prefetch_dir.join(segments[i].0.to_string()).exists()) {
        assert!(
            Instant::now() < deadline,
            "prefetch did not fill {}",
            prefetch_dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every store unreachable now: only the prefetch directory can serve.
    let offline = Shipper::new(&with(
        &s.env,
        &[
            ("WALVAULT_SPOOL_DIR", shipper.spool_dir().to_str().unwrap()),
            ("WALVAULT_R2_ENDPOINT", DEAD_ENDPOINT),
            ("WALVAULT_B2_ENDPOINT", DEAD_ENDPOINT),
            ("WALVAULT_STAGING_ENDPOINT", DEAD_ENDPOINT),
            ("WALVAULT_DYNAMODB_ENDPOINT", DEAD_ENDPOINT),
            ("WALVAULT_PREFETCH", "3"),
        ],
    ));
    for (file, raw) in &segments[1..4] {
        let run = fetch(&offline, &file.to_string(), &dest);
        assert_eq!(run.code, 0, "{file}: {}", run.stderr);
        assert!(
            run.stderr.contains("from prefetch (0 store requests"),
            "{}",
            run.stderr
        );
        assert_eq!(&std::fs::read(&dest).unwrap(), raw, "{file}");
    }
}

/// R2 accepts every request and never answers. The first fetch asks B2
/// too after the hedge delay, so it is served in about a second, not after
/// every attempt's timeout (3 × 10 s here) as before hedged reads; it
/// remembers R2 in the spool, and the next fetches ask B2 first.
#[tokio::test]
async fn a_hung_provider_is_hedged_not_waited_out() {
    let s = setup("r2-hung");
    let stack = Stack::shared();
    let r2 = stack.private_proxy(walvault_tests::standins::Service::R2);
    r2.faults().on(NetFault::Hang, None, None);
    let files: Vec<WalFileName> = (0x40..0x43u8)
        .map(|i| name(&format!("0000000100000000000000{i:02X}")))
        .collect();
    for file in &files {
        archive_replicated(&s.config, file, &segment(&file.to_string())).await;
    }
    let shipper = Shipper::new(&with(
        &s.env,
        &[
            ("WALVAULT_R2_ENDPOINT", &r2.endpoint()),
            ("WALVAULT_PREFETCH", "0"),
        ],
    ));
    let dir = public_tempdir("walvault-fetch-");
    let dest = dir.path().join("RECOVERYXLOG");
    for file in &files {
        let started = Instant::now();
        let run = fetch(&shipper, &file.to_string(), &dest);
        let took = started.elapsed();
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{file} from b2")),
            "{}",
            run.stderr
        );
        assert_eq!(std::fs::read(&dest).unwrap(), segment(&file.to_string()));
        // A bound on behaviour, not a speed claim: less than one attempt's
        // timeout, which the unhedged read waited three times.
        assert!(took < Duration::from_secs(10), "{file}: {took:?}");
    }
    assert_eq!(
        r2.faults().injected().get("hang").copied(),
        Some(1),
        "only the first fetch waited for R2"
    );
}

/// A spool PostgreSQL's user cannot write: recovery still works, and the
/// person reading PostgreSQL's log is told once, with the fix, without
/// the directory's path (a configuration value).
#[tokio::test]
async fn an_unusable_spool_turns_prefetch_off_with_one_loud_warning() {
    let s = setup("spool-off");
    let file = name("000000010000000000000031");
    let raw = segment(&file.to_string());
    archive_replicated(&s.config, &file, &raw).await;
    let dir = public_tempdir("walvault-fetch-");
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let spool = blocker.join("spool");
    let shipper = Shipper::new(&with(
        &s.env,
        &[
            ("WALVAULT_SPOOL_DIR", spool.to_str().unwrap()),
            ("WALVAULT_PREFETCH", "4"),
        ],
    ));
    let dest = dir.path().join("RECOVERYXLOG");
    let warning = "WARNING: prefetch is off";
    let first = fetch(&shipper, &file.to_string(), &dest);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(std::fs::read(&dest).unwrap(), raw);
    assert!(first.stderr.contains(warning), "{}", first.stderr);
    assert!(
        first.stderr.contains("WALVAULT_SPOOL_DIR"),
        "{}",
        first.stderr
    );
    assert!(
        !first.stderr.contains(dir.path().to_str().unwrap()),
        "{}",
        first.stderr
    );
    let second = fetch(&shipper, &file.to_string(), &dest);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        !second.stderr.contains(warning),
        "said once: {}",
        second.stderr
    );

    // Fixed, then broken again: said again.
    std::fs::remove_file(&blocker).unwrap();
    let fixed = fetch(&shipper, &file.to_string(), &dest);
    assert!(!fixed.stderr.contains(warning), "{}", fixed.stderr);
    std::fs::remove_dir_all(&blocker).unwrap();
    std::fs::write(&blocker, b"").unwrap();
    let broken = fetch(&shipper, &file.to_string(), &dest);
    assert!(broken.stderr.contains(warning), "{}", broken.stderr);
}

#[test]
fn postgres_replays_a_restore_through_walvault_fetch() {
    let s = setup("replay");
    let source = Postgres::start(PgOptions::default());
    let backup = source.scratch("backup").join("base");
    source.base_backup(&backup);
    source.pgbench(1, 200);
    source.sql(
        "CREATE TABLE proof AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    );
    let expected =
        source.sql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM proof");
    let last = source.switch_wal();
    source.wait_archived(&last, Duration::from_secs(60));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for entry in std::fs::read_dir(source.archive_dir()).unwrap() {
        let path = entry.unwrap().path();
        let file: WalFileName = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        let raw = std::fs::read(&path).unwrap();
        runtime.block_on(archive_replicated(&s.config, &file, &raw));
    }

    let shipper = Shipper::new(&s.env);
    let restored = Postgres::recover(&backup, &shipper.command_line("fetch %f %p"), &[]);
    restored.wait_promoted(Duration::from_secs(120));
    assert_eq!(
        restored.sql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM proof"),
        expected
    );
}
