//! The chaos run of the lasting-failures issue, bounded for `make test`:
//! one round of every fault on every service (see `walvault_tests::chaos`),
//! then nothing lost and exactly the committed rows recovered from each
//! provider alone. `make soak` runs the same for as long as asked.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_every_fault_nothing_is_lost_and_each_provider_alone_recovers() {
    let report = walvault_tests::chaos::run(1, Duration::ZERO).await;
    println!("{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.corrupt_served, 0, "{report}");
    assert!(report.segments_archived >= 20, "{report}");
    // Every class reached walvault: 5xx, 503 SlowDown, 429, reset, hang, truncated body.
    for class in [
        "5xx",
        "503 SlowDown",
        "429",
        "reset",
        "hang",
        "truncated body",
    ] {
        assert!(
            report.faults_injected.get(class).copied().unwrap_or(0) > 0,
            "{class} never struck: {report}"
        );
    }
}
