//! `walvault fetch`'s logic on in-memory backends: every fault class at
//! every store it asks, and the answer PostgreSQL gets (the exit code each
//! answer maps to is in the shipper's `exit.rs`).

mod common;

use common::{archived, cluster, fetcher_asking, limits, name, record_of, staged, Times};
use shared::archive::fetch::{FetchError, FetchedBody, Fetcher, Source};
use shared::catalog::CatalogOperation;
use shared::codec::Sha256Hex;
use shared::fault::Fault;
use shared::keys::{archive_key, meta};
use shared::provider::Provider;
use shared::store::{Metadata, Operation, SHA256_METADATA};
use shared::testing::MemoryWorld;
use shared::wal::WalFileName;

const FILE: &str = "000000010000000000000007";

/// Which read a fault strikes.
#[derive(Debug, Clone, Copy)]
enum Step {
    Catalog,
    Replica(Provider),
    Staging,
}

/// The answer, as the exit code PostgreSQL would see would name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Served(Source),
    NotFound,
    Unavailable,
    NoVerifiedCopy,
    Disagreement,
    LocalDisk,
    Locked,
}

fn answer(result: &Result<shared::archive::fetch::Fetched, FetchError>) -> Answer {
    match result {
        Ok(fetched) => Answer::Served(fetched.source),
        Err(FetchError::NotFound(_)) => Answer::NotFound,
        Err(FetchError::Unavailable { .. }) => Answer::Unavailable,
        Err(FetchError::NoVerifiedCopy { .. }) => Answer::NoVerifiedCopy,
        Err(FetchError::Disagreement { .. }) => Answer::Disagreement,
        Err(FetchError::Local { .. }) => Answer::LocalDisk,
        Err(FetchError::Locked { .. }) => Answer::Locked,
    }
}

fn inject(world: &MemoryWorld, (step, fault, times): (Step, Fault, Times)) {
    let n = times.count();
    match step {
        Step::Catalog => world.catalog.fail_next(CatalogOperation::Get, fault, n),
        Step::Replica(p) => world.replica(p).fail_next(Operation::Get, fault, n),
        Step::Staging => world.staging.fail_next(Operation::Get, fault, n),
    }
}

fn fetcher(world: &MemoryWorld) -> Fetcher {
    fetcher_asking(world, &[Provider::R2, Provider::B2])
}

type Row = (&'static str, Vec<(Step, Fault, Times)>, Answer);

#[rustfmt::skip]
fn archived_rows() -> Vec<Row> {
    use Answer::{NoVerifiedCopy, Served, Unavailable};
    use Fault::*;
    use Step::*;
    use Times::*;
    let (r2, b2) = (Replica(Provider::R2), Replica(Provider::B2));
    let mut rows: Vec<Row> = vec![
        ("healthy", vec![], Served(Source::Replica(Provider::R2))),
        ("catalog refused: found by key, replicas agree", vec![(Catalog, Refused, Always)], Served(Source::Replica(Provider::R2))),
        ("catalog down", vec![(Catalog, Transient, Always)], Served(Source::Replica(Provider::R2))),
        ("catalog hung", vec![(Catalog, Hang, Always)], Served(Source::Replica(Provider::R2))),
        ("catalog item unreadable", vec![(Catalog, Corrupt, Always)], Served(Source::Replica(Provider::R2))),
        ("r2 lacks it", vec![(r2, NotFound, Always)], Served(Source::Replica(Provider::B2))),
        ("r2 refuses", vec![(r2, Refused, Always)], Served(Source::Replica(Provider::B2))),
        ("r2 down", vec![(r2, Transient, Always)], Served(Source::Replica(Provider::B2))),
        ("r2 hung", vec![(r2, Hang, Always)], Served(Source::Replica(Provider::B2))),
        ("r2 copy corrupt", vec![(r2, Corrupt, Always)], Served(Source::Replica(Provider::B2))),
        ("b2 broken is never asked", vec![(b2, Refused, Always)], Served(Source::Replica(Provider::R2))),
        ("both refuse", vec![(r2, Refused, Always), (b2, Refused, Always)], Unavailable),
        ("both hung", vec![(r2, Hang, Always), (b2, Hang, Always)], Unavailable),
        ("r2 down and b2 lacks it: an error, not absence", vec![(r2, Transient, Always), (b2, NotFound, Always)], Unavailable),
        ("r2 corrupt and b2 down", vec![(r2, Corrupt, Always), (b2, Transient, Always)], Unavailable),
        ("both copies corrupt", vec![(r2, Corrupt, Always), (b2, Corrupt, Always)], NoVerifiedCopy),
        ("listed but on no provider", vec![(r2, NotFound, Always), (b2, NotFound, Always)], NoVerifiedCopy),
        ("catalog down and both refuse", vec![ (Catalog, Transient, Always), (r2, Refused, Always), (b2, Refused, Always), ], Unavailable),
    ];
    for step in [Catalog, r2] {
        for fault in [Transient, Hang, LostAnswer] {
            rows.push((
                "a fault that strikes once is retried",
                vec![(step, fault, Once)],
                Served(Source::Replica(Provider::R2)),
            ));
        }
    }
    // Except a hang of the first provider: the hedged read asks the second
    // before the hung attempt times out, and the second answers first.
    rows.retain(|(_, faults, _)| !matches!(faults[..], [(Replica(Provider::R2), Hang, Once)]));
    rows.push((
        "r2 hangs once: hedged to b2",
        vec![(r2, Hang, Once)],
        Served(Source::Replica(Provider::B2)),
    ));
    rows
}

async fn run_rows(file: &WalFileName, world: &MemoryWorld, rows: Vec<Row>, original: &[u8]) {
    for (case, faults, expected) in rows {
        for fault in &faults {
            inject(world, *fault);
        }
        tokio::time::pause();
        let result = fetcher(world).fetch(file).await;
        tokio::time::resume();
        world.heal();
        assert_eq!(answer(&result), expected, "{case}: {result:?}");
        if let Ok(fetched) = result {
            assert_eq!(fetched.into_bytes().unwrap(), original, "{case}: bytes");
        }
    }
}

#[tokio::test]
async fn an_archived_file_under_every_fault() {
    let world = MemoryWorld::default();
    let (file, bytes) = archived(&world, FILE).await;
    run_rows(&file, &world, archived_rows(), &bytes).await;
}

#[tokio::test]
async fn a_file_not_yet_replicated_comes_from_staging() {
    use Fault::*;
    use Step::*;
    use Times::*;
    let world = MemoryWorld::default();
    let (file, bytes) = staged(&world, FILE).await;
    let rows: Vec<Row> = vec![
        ("in staging only", vec![], Answer::Served(Source::Staging)),
        (
            "staging refuses",
            vec![(Staging, Refused, Always)],
            Answer::Unavailable,
        ),
        (
            "staging hung",
            vec![(Staging, Hang, Always)],
            Answer::Unavailable,
        ),
        (
            "staging copy corrupt",
            vec![(Staging, Corrupt, Always)],
            Answer::NoVerifiedCopy,
        ),
        (
            "staging blips once",
            vec![(Staging, Transient, Once)],
            Answer::Served(Source::Staging),
        ),
    ];
    run_rows(&file, &world, rows, &bytes).await;
}

#[tokio::test]
async fn a_file_nobody_has_is_not_found_and_a_partial_is_never_served_for_a_segment() {
    let world = MemoryWorld::default();
    let partial = name(&format!("{FILE}.partial"));
    let bytes = shared::testing::synthetic_segment(&partial, common::SYSID);
    let wal = common::WalDir::default();
    let spool = tempfile::tempdir().unwrap();
    common::pusher(&world, &spool, 1)
        .push_one(&wal.file(&partial, &bytes))
        .await
        .unwrap();
    let result = fetcher(&world).fetch(&name(FILE)).await;
    assert_eq!(answer(&result), Answer::NotFound);
    let served = fetcher(&world).fetch(&partial).await.unwrap();
    assert_eq!(
        served.into_bytes().unwrap(),
        bytes,
        "the .partial itself is served by its own name"
    );
}

#[tokio::test]
async fn without_the_catalog_replicas_that_disagree_stop_recovery() {
    let world = MemoryWorld::default();
    let (file, _) = archived(&world, FILE).await;
    let key = archive_key(&cluster(), file);
    let other = b"a different, self-consistent file".to_vec();
    let packed = shared::codec::compress(&other, Default::default()).unwrap();
    world.replica(Provider::B2).inner().plant(
        &key,
        packed,
        Metadata::from([
            (
                SHA256_METADATA.to_owned(),
                Sha256Hex::of(&other).to_string(),
            ),
            (meta::RAW_SIZE.to_owned(), other.len().to_string()),
        ]),
    );
    world
        .catalog
        .fail_always(CatalogOperation::Get, Fault::Transient);
    let result = fetcher(&world).fetch(&file).await;
    assert_eq!(answer(&result), Answer::Disagreement, "{result:?}");
    world.heal();
    let with_catalog = fetcher(&world).fetch(&file).await;
    assert_eq!(
        answer(&with_catalog),
        Answer::Served(Source::Replica(Provider::R2))
    );
}

#[tokio::test]
async fn the_fetch_order_decides_which_provider_is_asked_first() {
    let world = MemoryWorld::default();
    let (file, _) = archived(&world, FILE).await;
    let b2_first = fetcher_asking(&world, &[Provider::B2, Provider::R2]);
    let r2_reads = world.replica(Provider::R2).calls(Operation::Get);
    let fetched = b2_first.fetch(&file).await.unwrap();
    assert_eq!(fetched.source, Source::Replica(Provider::B2));
    assert_eq!(world.replica(Provider::R2).calls(Operation::Get), r2_reads);
}

#[tokio::test]
async fn not_found_needs_every_store_and_a_second_catalog_reading_to_say_so() {
    let world = MemoryWorld::default();
    let (file, bytes) = archived(&world, FILE).await;

    // A catalog restored to a time before the file: the replicas still
    // serve it (they vouch for themselves, and agree).
    let record = record_of(&world, file).await.unwrap();
    world.catalog.inner().remove(&cluster(), &file.into());
    let served = fetcher(&world).fetch(&file).await.unwrap();
    assert_eq!(served.source, Source::Replica(Provider::R2));
    assert_eq!(served.into_bytes().unwrap(), bytes);

    // The record was missing at the first reading and the replicas
    // answered not found (the file landing while we looked): the second
    // reading of the catalog finds it.
    world.catalog.inner().put(record);
    world
        .catalog
        .fail_next(CatalogOperation::Get, Fault::NotFound, 1);
    for provider in [Provider::R2, Provider::B2] {
        world
            .replica(provider)
            .fail_next(Operation::Get, Fault::NotFound, 1);
    }
    let served = fetcher(&world).fetch(&file).await.unwrap();
    assert_eq!(served.source, Source::Replica(Provider::R2));

    // Nobody has it: not found, after asking staging, R2, B2 and the
    // catalog twice.
    let missing = name("000000010000000000000009");
    let before = world.catalog.calls(CatalogOperation::Get);
    let fetcher = fetcher(&world);
    assert_eq!(answer(&fetcher.fetch(&missing).await), Answer::NotFound);
    assert_eq!(world.catalog.calls(CatalogOperation::Get), before + 2);
    assert_eq!(
        fetcher.requests(),
        5,
        "two catalog readings and three stores"
    );
}

#[tokio::test]
async fn the_end_of_the_archive_is_found_with_one_provider_down_but_not_with_staging_down() {
    use Fault::*;
    let world = MemoryWorld::default();
    archived(&world, FILE).await;
    let missing = name("000000010000000000000009");
    for (faults, expected) in [
        (
            vec![(Step::Replica(Provider::R2), Transient)],
            Answer::NotFound,
        ),
        (vec![(Step::Replica(Provider::B2), Hang)], Answer::NotFound),
        (vec![(Step::Staging, Transient)], Answer::Unavailable),
        (
            vec![
                (Step::Replica(Provider::R2), Transient),
                (Step::Replica(Provider::B2), Refused),
            ],
            Answer::Unavailable,
        ),
        (vec![(Step::Catalog, Transient)], Answer::Unavailable),
    ] {
        for (step, fault) in &faults {
            inject(&world, (*step, *fault, Times::Always));
        }
        tokio::time::pause();
        let result = fetcher(&world).fetch(&missing).await;
        tokio::time::resume();
        world.heal();
        assert_eq!(answer(&result), expected, "{faults:?}: {result:?}");
    }
}

/// R2 accepts requests and never answers. Each read would otherwise wait
/// for every attempt's timeout before turning to B2; hedged, the first read
/// waits the initial hedge delay and, once B2's speed is known, the next
/// ones a fraction of it.
#[tokio::test]
async fn a_hung_provider_costs_a_hedge_delay_not_the_timeouts() {
    let world = MemoryWorld::default();
    let mut files = Vec::new();
    for seg in 1..=10 {
        files.push(archived(&world, &format!("0000000100000000000000{seg:02X}")).await);
    }
    world
        .replica(Provider::R2)
        .fail_always(Operation::Get, Fault::Hang);
    let fetcher = fetcher(&world);
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    for (file, bytes) in &files {
        let fetched = fetcher.fetch(file).await.unwrap();
        assert_eq!(fetched.source, Source::Replica(Provider::B2));
        assert_eq!(&fetched.into_bytes().unwrap(), bytes);
    }
    let took = started.elapsed();
    tokio::time::resume();
    assert_eq!(fetcher.hedges(), 10);
    // 1 s for the first, 200 ms (the floor) for each of the others.
    let unhedged = limits().timeout * limits().attempts * 10;
    assert!(
        took <= std::time::Duration::from_millis(2900),
        "10 reads took {took:?} with R2 hung; unhedged they would wait {unhedged:?}"
    );
}

/// A healthy first provider is never doubled: no hedge while it answers.
#[tokio::test]
async fn healthy_reads_are_not_hedged() {
    let world = MemoryWorld::default();
    let (file, _) = archived(&world, FILE).await;
    let fetcher = fetcher(&world);
    for _ in 0..5 {
        let fetched = fetcher.fetch(&file).await.unwrap();
        assert_eq!(fetched.source, Source::Replica(Provider::R2));
    }
    assert_eq!(fetcher.hedges(), 0);
    assert_eq!(
        fetcher.requests(),
        10,
        "a catalog read and one GET per file"
    );
}

/// Every fetch is a process of its own: the one that had to hedge past a
/// hung R2 remembers it in the spool, and the next ones ask B2 first, with
/// no hedge delay, until the memory expires.
#[tokio::test]
async fn a_provider_that_lost_a_hedge_is_asked_last_by_the_next_fetches() {
    let world = MemoryWorld::default();
    let (file, _) = archived(&world, FILE).await;
    world
        .replica(Provider::R2)
        .fail_always(Operation::Get, Fault::Hang);
    let spool = tempfile::tempdir().unwrap();
    let memory = spool.path().join("slow-provider-test");
    tokio::time::pause();
    let first = fetcher(&world).remembering_slow_providers(memory.clone());
    assert_eq!(
        first.fetch(&file).await.unwrap().source,
        Source::Replica(Provider::B2)
    );
    assert_eq!(first.hedges(), 1);
    assert!(std::fs::read_to_string(&memory).unwrap().starts_with("r2 "));

    let next = fetcher(&world).remembering_slow_providers(memory.clone());
    let started = tokio::time::Instant::now();
    assert_eq!(
        next.fetch(&file).await.unwrap().source,
        Source::Replica(Provider::B2)
    );
    assert_eq!(next.hedges(), 0, "B2 asked first");
    assert!(started.elapsed() < std::time::Duration::from_millis(100));

    // Expired: R2 is asked first again (and, still hung, hedged again).
    std::fs::write(&memory, "r2 1000\n").unwrap();
    let later = fetcher(&world).remembering_slow_providers(memory.clone());
    later.fetch(&file).await.unwrap();
    assert_eq!(later.hedges(), 1);
    tokio::time::resume();
}

#[tokio::test]
async fn a_provider_refusing_requests_is_asked_last_by_the_next_fetches() {
    let world = MemoryWorld::default();
    let (file, _) = archived(&world, FILE).await;
    // A refused connection fails at once: never hedged, still worth avoiding.
    world
        .replica(Provider::R2)
        .fail_always(Operation::Get, Fault::Transient);
    let spool = tempfile::tempdir().unwrap();
    let memory = spool.path().join("slow-provider-test");
    let first = fetcher(&world).remembering_slow_providers(memory.clone());
    assert_eq!(
        first.fetch(&file).await.unwrap().source,
        Source::Replica(Provider::B2)
    );
    assert!(std::fs::read_to_string(&memory).unwrap().starts_with("r2 "));
    let r2_reads = world.replica(Provider::R2).calls(Operation::Get);
    let next = fetcher(&world).remembering_slow_providers(memory.clone());
    assert_eq!(
        next.fetch(&file).await.unwrap().source,
        Source::Replica(Provider::B2)
    );
    assert_eq!(
        world.replica(Provider::R2).calls(Operation::Get),
        r2_reads,
        "B2 asked first: R2 not asked at all"
    );
}

// Files too large to hold: streamed to a temporary file beside the
// destination, verified, then renamed into place.

/// A `mib` MiB segment staged and replicated.
async fn archived_of(world: &MemoryWorld, file: &str, mib: u64) -> (WalFileName, Vec<u8>) {
    let (name, bytes) = common::staged_of(world, file, mib).await;
    common::replicator(world)
        .process(&common::announced(&name), &limits().one_request())
        .await
        .unwrap();
    (name, bytes)
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_64_mib_segment_streams_to_a_file_beside_its_destination_and_is_renamed_into_place() {
    let world = MemoryWorld::default();
    let (file, raw) = archived_of(&world, FILE, 64).await;
    let dir = tempfile::tempdir().unwrap();
    let fetched = fetcher(&world)
        .streaming_into(dir.path().to_path_buf())
        .fetch(&file)
        .await
        .unwrap();
    assert_eq!(fetched.source, Source::Replica(Provider::R2));
    assert!(
        matches!(fetched.body, FetchedBody::File { len, .. } if len == 64 << 20),
        "streamed to disk, not held: {:?}",
        fetched.body
    );
    let dest = dir.path().join("RECOVERYXLOG");
    fetched.persist(&dest).unwrap();
    assert!(std::fs::read(&dest).unwrap() == raw, "the fetched bytes");
    assert_eq!(entries(dir.path()), ["RECOVERYXLOG"]);

    // Without a directory to stream to (a base backup's restore), in memory.
    let fetched = fetcher(&world).fetch(&file).await.unwrap();
    assert!(matches!(fetched.body, FetchedBody::Memory(_)));
}

#[tokio::test]
async fn a_streamed_copy_that_is_corrupt_or_cut_short_is_dropped_and_the_other_provider_serves() {
    let world = MemoryWorld::default();
    let (file, raw) = archived_of(&world, FILE, 32).await;
    let dir = tempfile::tempdir().unwrap();
    let key = archive_key(&cluster(), file);
    for (case, spoil) in [
        ("corrupt on R2", Fault::Corrupt),
        ("R2's body cut short", Fault::LostAnswer),
    ] {
        world
            .replica(Provider::R2)
            .fail_key(Operation::Get, &key, spoil);
        let fetched = fetcher(&world)
            .streaming_into(dir.path().to_path_buf())
            .fetch(&file)
            .await
            .unwrap();
        assert_eq!(fetched.source, Source::Replica(Provider::B2), "{case}");
        assert_eq!(entries(dir.path()).len(), 1, "{case}: only the served copy");
        assert!(fetched.into_bytes().unwrap() == raw, "{case}");
        assert!(
            entries(dir.path()).is_empty(),
            "{case}: nothing left behind"
        );
        world.heal();
    }
    world.replica(Provider::B2).inner().corrupt(&key);
    world.replica(Provider::R2).inner().corrupt(&key);
    let result = fetcher(&world)
        .streaming_into(dir.path().to_path_buf())
        .fetch(&file)
        .await;
    assert_eq!(answer(&result), Answer::NoVerifiedCopy);
    assert!(entries(dir.path()).is_empty());
}

#[tokio::test]
async fn a_directory_that_cannot_take_the_copy_is_a_local_error_not_a_missing_file() {
    let world = MemoryWorld::default();
    let (file, _) = archived_of(&world, FILE, 32).await;
    let gone = tempfile::tempdir().unwrap().path().join("no-such-dir");
    let result = fetcher(&world).streaming_into(gone).fetch(&file).await;
    assert_eq!(answer(&result), Answer::LocalDisk);
}

#[tokio::test(start_paused = true)]
async fn a_large_copy_that_is_arriving_slowly_is_not_hedged_into_a_second_download() {
    let world = MemoryWorld::default();
    let (file, raw) = archived_of(&world, FILE, 32).await;
    // Every piece of R2's copy takes 400 ms: several seconds in all, far
    // past the first hedge delay (1 s), but R2 is answering all along.
    world
        .replica(Provider::R2)
        .inner()
        .set_piece_delay(std::time::Duration::from_millis(400));
    let dir = tempfile::tempdir().unwrap();
    let fetcher = fetcher(&world).streaming_into(dir.path().to_path_buf());
    let started = tokio::time::Instant::now();
    let fetched = fetcher.fetch(&file).await.unwrap();
    assert!(started.elapsed() > std::time::Duration::from_secs(1));
    assert_eq!(fetched.source, Source::Replica(Provider::R2));
    assert_eq!(fetcher.hedges(), 0, "no second download");
    assert_eq!(world.replica(Provider::B2).calls(Operation::Get), 0);
    assert!(fetched.into_bytes().unwrap() == raw);
}

#[tokio::test(start_paused = true)]
async fn the_end_of_the_archive_with_a_provider_hung_costs_hedge_delays_not_its_timeouts() {
    let world = MemoryWorld::default();
    archived(&world, FILE).await;
    world
        .replica(Provider::R2)
        .fail_always(Operation::Get, Fault::Hang);
    let started = tokio::time::Instant::now();
    let result = fetcher(&world)
        .fetch(&name("000000010000000000000009"))
        .await;
    let took = started.elapsed();
    assert_eq!(answer(&result), Answer::NotFound, "{result:?}");
    // Staging and B2 answered "not found" and the catalog has no record:
    // R2 gets one hedge delay more, not its whole budget.
    // Two hedge delays (1 s before asking B2, 1 s more for R2 once B2
    // said "not found"), not R2's three attempts (3.3 s).
    assert!(
        took < std::time::Duration::from_millis(2500),
        "took {took:?}"
    );

    // R2 asked last (remembered slow): it gets the one delay.
    let b2_first = fetcher_asking(&world, &[Provider::B2, Provider::R2]);
    let started = tokio::time::Instant::now();
    let result = b2_first.fetch(&name("000000010000000000000009")).await;
    let took = started.elapsed();
    assert_eq!(answer(&result), Answer::NotFound, "{result:?}");
    assert!(
        took < std::time::Duration::from_millis(1500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn without_a_record_a_file_only_b2_still_holds_is_served_not_declared_absent() {
    let world = MemoryWorld::default();
    let (file, bytes) = archived(&world, FILE).await;
    world.catalog.inner().remove(&cluster(), &file.into());
    world
        .replica(Provider::R2)
        .inner()
        .remove(&archive_key(&cluster(), file));
    // Staging and R2 answer "not found" first; B2 must still be asked.
    let fetched = fetcher(&world).fetch(&file).await.unwrap();
    assert_eq!(fetched.source, Source::Replica(Provider::B2));
    assert_eq!(fetched.into_bytes().unwrap(), bytes);
}
