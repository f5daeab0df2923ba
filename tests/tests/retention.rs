//! The retention sweep against the stand-ins, on a simulated clock, over a
//! catalog of records with real objects behind them on R2 and B2.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::catalog::list_all;
use shared::config::{Config, Provider};
use shared::keys::archive_key;
use shared::retention::sweep::{SweepError, Sweeper};
use shared::store::{replica_store, ConditionalPut, FaultyStore, ObjectStore, Operation, S3Store};
use shared::wal::{Segment, WalFileName};
use walvault_tests::archive::{archive_replicated_at, catalog, replica};
use walvault_tests::standins::{walvault_sdk_config, Stack};
use walvault_tests::unique_cluster;

const T0: u64 = 1_700_000_000_000;
const DAY: u64 = 86_400_000;
const MIB: usize = 1 << 20;

fn day(d: f64) -> u64 {
    T0 + (d * DAY as f64) as u64
}

fn seg(timeline: u32, seg: u32) -> WalFileName {
    WalFileName::Segment(Segment {
        timeline,
        log: 0,
        seg,
    })
}

fn backup(timeline: u32, s: u32) -> WalFileName {
    WalFileName::Backup {
        segment: Segment {
            timeline,
            log: 0,
            seg: s,
        },
        offset: 0x28,
    }
}

/// Timeline 1: a 1 MiB segment a day, segments 1–38; base backups starting
/// in segments 5 and 20. At segment 30 (day 30.5) a promotion starts
/// timeline 2, which runs to segment 60 with a backup at 45; the old
/// primary went on writing timeline 1 up to 38.
///
/// At day 70 with a 30-day window (from day 40), timeline 2 is the only
/// live one; its line is timeline 1 up to segment 30, then timeline 2. The
/// newest backup on that line finished before day 40 is the one at 1/20.
/// So timeline 1's segments 1–19 and 31–38 and the backup at 1/5 go: 28 files.
async fn build_archive(config: &Config) -> (BTreeSet<WalFileName>, BTreeSet<WalFileName>) {
    let mut files: Vec<(WalFileName, Vec<u8>, u64)> = Vec::new();
    let payload =
        |name: &WalFileName| name.to_string().into_bytes().repeat(MIB / 24 + 1)[..MIB].to_vec();
    for s in 1..=38 {
        files.push((seg(1, s), payload(&seg(1, s)), day(f64::from(s))));
    }
    for s in 30..=60 {
        files.push((seg(2, s), payload(&seg(2, s)), day(f64::from(s) + 0.5)));
    }
    for (b, at) in [
        (backup(1, 5), day(5.1)),
        (backup(1, 20), day(20.1)),
        (backup(2, 45), day(45.6)),
    ] {
        files.push((b, b"START WAL LOCATION: ...\n".to_vec(), at));
    }
    let history = WalFileName::History { timeline: 2 };
    // The switch at 0/1E00000: segment 30 with 1 MiB segments.
    files.push((
        history,
        b"1\t0/1E00000\tno recovery target specified\n".to_vec(),
        day(30.5),
    ));
    for (name, raw, at) in &files {
        archive_replicated_at(config, name, raw, *at).await;
    }
    let expired: BTreeSet<WalFileName> = (1..=19)
        .chain(31..=38)
        .map(|s| seg(1, s))
        .chain([backup(1, 5)])
        .collect();
    let kept: BTreeSet<WalFileName> = files
        .iter()
        .map(|(n, _, _)| *n)
        .filter(|n| !expired.contains(n))
        .collect();
    (expired, kept)
}

struct Setup {
    config: Config,
    sweeper: Sweeper,
    b2_faults: Arc<FaultyStore<S3Store>>,
}

async fn setup(prefix: &str, max_deletes: usize) -> Setup {
    let config = Stack::shared().config(&unique_cluster(prefix));
    let sdk = walvault_sdk_config(&config).await;
    let b2_faults = Arc::new(FaultyStore::new(
        replica_store(
            &sdk,
            config.replica(Provider::B2).unwrap(),
            ConditionalPut::IfNoneMatch,
        )
        .unwrap(),
    ));
    let mut sweeper = Sweeper::from_config(&sdk, &config).unwrap();
    sweeper.b2 = b2_faults.clone();
    sweeper.window = Duration::from_millis(30 * DAY);
    sweeper.max_deletes = max_deletes;
    Setup {
        config,
        sweeper,
        b2_faults,
    }
}

async fn records(config: &Config) -> BTreeSet<WalFileName> {
    list_all(&catalog(config).await, &config.cluster)
        .await
        .unwrap()
        .iter()
        .map(|r| r.file)
        .collect()
}

async fn on_provider(config: &Config, provider: Provider, files: &BTreeSet<WalFileName>) -> usize {
    let store = replica(config, provider).await;
    let mut present = 0;
    for file in files {
        if store
            .head(&archive_key(&config.cluster, file))
            .await
            .is_ok()
        {
            present += 1;
        }
    }
    present
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

#[tokio::test]
async fn a_dry_run_reports_the_plan_and_deletes_nothing() {
    let s = setup("dry", usize::MAX).await;
    let (expired, kept) = build_archive(&s.config).await;
    let report = s.sweeper.sweep(day(70.0), true, later()).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.planned, expired.len());
    assert_eq!(
        report.catalog_removed + report.deleted_r2 + report.deleted_b2,
        0
    );
    assert_eq!(report.anchors[&2], backup(1, 20).to_string());
    assert!(!report.age_only_fallback);
    assert_eq!(report.kept.values().sum::<usize>(), kept.len());
    assert_eq!(records(&s.config).await.len(), expired.len() + kept.len());
    assert_eq!(
        on_provider(&s.config, Provider::R2, &expired).await,
        expired.len()
    );
}

#[tokio::test]
async fn a_sweep_deletes_exactly_the_plan_and_a_failed_b2_delete_is_finished_next_run() {
    let s = setup("sweep", usize::MAX).await;
    let (expired, kept) = build_archive(&s.config).await;

    s.b2_faults.fail_always(Operation::Delete);
    let first = s.sweeper.sweep(day(70.0), false, later()).await.unwrap();
    assert_eq!(first.deleted_r2, expired.len());
    assert_eq!(first.deleted_b2, 0);
    assert_eq!(
        first.catalog_removed, 0,
        "a record stays while any copy may remain"
    );
    assert_eq!(first.errors.len(), expired.len());
    assert_eq!(records(&s.config).await.len(), expired.len() + kept.len());
    assert_eq!(
        on_provider(&s.config, Provider::B2, &expired).await,
        expired.len()
    );

    s.b2_faults.heal();
    let second = s.sweeper.sweep(day(70.0), false, later()).await.unwrap();
    assert_eq!(second.planned, expired.len());
    assert_eq!(second.catalog_removed, expired.len());
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    assert_eq!(records(&s.config).await, kept);
    for provider in Provider::ALL {
        assert_eq!(
            on_provider(&s.config, provider, &expired).await,
            0,
            "{provider}"
        );
        assert_eq!(
            on_provider(&s.config, provider, &kept).await,
            kept.len(),
            "{provider} keeps the rest"
        );
    }
    let third = s.sweeper.sweep(day(70.0), false, later()).await.unwrap();
    assert_eq!(third.planned, 0, "nothing left to do");
}

#[tokio::test]
async fn an_interrupted_sweep_resumes_where_it_stopped() {
    let s = setup("resume", 10).await;
    let (expired, kept) = build_archive(&s.config).await;
    let first = s.sweeper.sweep(day(70.0), false, later()).await.unwrap();
    assert!(first.stopped_early);
    assert_eq!(first.catalog_removed, 10);
    let stopped = s
        .sweeper
        .sweep(day(70.0), false, Instant::now())
        .await
        .unwrap();
    assert!(
        stopped.stopped_early && stopped.catalog_removed == 0,
        "a passed deadline stops before any delete"
    );
    let second = s.sweeper.sweep(day(70.0), false, later()).await.unwrap();
    let third = s.sweeper.sweep(day(70.0), false, later()).await.unwrap();
    assert_eq!(
        first.catalog_removed + second.catalog_removed + third.catalog_removed,
        expired.len()
    );
    assert!(!third.stopped_early);
    assert_eq!(records(&s.config).await, kept);
}

#[tokio::test]
async fn without_a_readable_history_nothing_is_deleted() {
    let s = setup("no-history", usize::MAX).await;
    let (expired, _) = build_archive(&s.config).await;
    let key = archive_key(&s.config.cluster, &WalFileName::History { timeline: 2 });
    for provider in Provider::ALL {
        replica(&s.config, provider)
            .await
            .delete(&key)
            .await
            .unwrap();
    }
    let err = s
        .sweeper
        .sweep(day(70.0), false, later())
        .await
        .unwrap_err();
    assert!(matches!(err, SweepError::History { .. }), "{err}");
    assert_eq!(
        on_provider(&s.config, Provider::R2, &expired).await,
        expired.len()
    );
}
