//! The retention sweep with the real clients against the stand-ins: an
//! archive written through walvault's own paths, a dry run, then a sweep
//! whose deletes reach R2 (batched) and B2 (key by key) and the catalog.
//! The sweep's logic under every fault is tested on in-memory backends
//! (`shared/tests/sweep.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use shared::catalog::list_all;
use shared::clock::now_millis;
use shared::keys::archive_key;
use shared::provider::Provider;
use shared::retention::plan::Rules;
use shared::retention::sweep::Sweeper;
use shared::wal::WalFileName;
use tokio::time::Instant;
use walvault_tests::archive::{archive_replicated, backends, synthetic_segment};
use walvault_tests::standins::Stack;
use walvault_tests::unique_cluster;

const DAY: u64 = 86_400_000;
const SYSID: u64 = 7_301_234_567_890_123_456;

fn segment(seg: u32) -> WalFileName {
    format!("0000000100000000000000{seg:02X}").parse().unwrap()
}

#[tokio::test]
async fn a_sweep_deletes_exactly_the_plan_from_both_providers_and_the_catalog() {
    let config = Stack::shared().config(&unique_cluster("retention"));
    for seg in 1..=6 {
        let file = segment(seg);
        archive_replicated(&config, &file, &synthetic_segment(&file, SYSID)).await;
    }
    let backup: WalFileName = format!("{}.00000028.backup", segment(4)).parse().unwrap();
    archive_replicated(&config, &backup, b"START WAL LOCATION: 0/4000028\n").await;

    let backends = backends(&config).await;
    let sweeper = Sweeper {
        rules: Rules {
            window_ms: 30 * DAY,
            age_only_without_backups: false,
        },
        max_deletes: 1000,
        ..Sweeper::from_config(&config, &backends)
    };
    // Forty days on, everything is older than the window: the backup is
    // the anchor, the three segments before it may go.
    let later = now_millis() + 40 * DAY;
    let deadline = || Instant::now() + Duration::from_secs(120);
    let dry = sweeper.sweep(later, true, deadline()).await.unwrap();
    assert_eq!((dry.planned, dry.catalog_removed), (3, 0), "{dry:?}");

    let report = sweeper.sweep(later, false, deadline()).await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(report.catalog_removed, 3);
    for provider in Provider::ALL {
        assert_eq!(report.deleted.get(&provider), Some(&3), "{provider}");
        let store = backends.replicas.get(provider).unwrap();
        for seg in 1..=6 {
            let present = store
                .head(&archive_key(&config.cluster, segment(seg)))
                .await
                .is_ok();
            assert_eq!(present, seg >= 4, "{provider}: segment {seg}");
        }
    }
    assert!(report.bytes_freed > 0);
    let left: BTreeSet<WalFileName> = list_all(backends.catalog.as_ref(), &config.cluster)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.file.wal())
        .collect();
    let expected: BTreeSet<WalFileName> = (4..=6).map(segment).chain([backup]).collect();
    assert_eq!(left, expected);
}
