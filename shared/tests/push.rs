//! `walvault push`'s logic on in-memory backends: every fault class at
//! every request it makes, and the answer PostgreSQL gets (the exit code
//! each answer maps to is in the shipper's `exit.rs`).

mod common;

use common::{archived, cluster, name, pusher, record_of, Times, WalDir};
use shared::archive::push::{PushError, PushOutcome};
use shared::catalog::CatalogOperation;
use shared::error::Retryable;
use shared::fault::Fault;
use shared::identity::IdentityError;
use shared::keys::{identity_key, staging_key};
use shared::store::Operation;
use shared::testing::{synthetic_segment, MemoryWorld};

#[derive(Debug, Clone, Copy)]
enum Step {
    IdentityGet,
    IdentityPut,
    CatalogGet,
    StagingPut,
}

/// The answer, named as the exit code it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok(PushOutcome),
    /// Exit 6: may work later.
    Unavailable,
    /// Exit 7: needs a human.
    Failed,
    /// Exit 5.
    Conflict,
    /// Exit 4.
    WrongCluster,
}

fn answer(result: &Result<(PushOutcome, shared::codec::Sha256Hex), PushError>) -> Answer {
    match result {
        Ok((outcome, _)) => Answer::Ok(*outcome),
        Err(PushError::Conflict { .. }) => Answer::Conflict,
        Err(PushError::WrongCluster { source, .. })
            if !matches!(source, IdentityError::Store(_)) =>
        {
            Answer::WrongCluster
        }
        Err(e) if e.is_permanent() => Answer::Failed,
        Err(_) => Answer::Unavailable,
    }
}

fn inject(world: &MemoryWorld, step: Step, fault: Fault, times: Times) {
    let n = times.count();
    let identity = identity_key(&cluster());
    match step {
        Step::IdentityGet => world
            .staging
            .fail_key_next(Operation::Get, &identity, fault, n),
        Step::IdentityPut => world
            .staging
            .fail_key_next(Operation::Put, &identity, fault, n),
        Step::CatalogGet => world.catalog.fail_next(CatalogOperation::Get, fault, n),
        Step::StagingPut => world
            .staging
            .fail_key_next(Operation::Put, "/staging/", fault, n),
    }
}

type Row = (Step, Fault, Times, Answer);

fn table() -> Vec<Row> {
    use Answer::*;
    use Fault::{Corrupt, Hang, LostAnswer, NotFound, PreconditionFailed, Refused, Transient};
    use Step::*;
    use Times::*;
    let stored = Answer::Ok(PushOutcome::Stored);
    let mut rows: Vec<Row> = vec![
        (IdentityGet, NotFound, Always, WrongCluster),
        (IdentityGet, Refused, Always, Failed),
        (IdentityGet, Transient, Always, Unavailable),
        (IdentityGet, Hang, Always, Unavailable),
        (IdentityGet, Corrupt, Always, WrongCluster),
        (CatalogGet, NotFound, Always, stored),
        (CatalogGet, Refused, Always, Failed),
        (CatalogGet, Corrupt, Always, Failed),
        (CatalogGet, Transient, Always, Unavailable),
        (CatalogGet, Hang, Always, Unavailable),
        (StagingPut, NotFound, Always, Failed),
        (StagingPut, PreconditionFailed, Always, Conflict),
        (StagingPut, Refused, Always, Failed),
        (StagingPut, Transient, Always, Unavailable),
        (StagingPut, Hang, Always, Unavailable),
        (
            StagingPut,
            LostAnswer,
            Once,
            Answer::Ok(PushOutcome::AlreadyStaged),
        ),
    ];
    for step in [IdentityGet, CatalogGet, StagingPut] {
        for fault in [Transient, Hang] {
            rows.push((step, fault, Once, stored));
        }
    }
    rows.push((CatalogGet, LostAnswer, Once, stored));
    rows
}

#[tokio::test]
async fn every_fault_at_every_request_gets_a_known_answer() {
    for (step, fault, times, expected) in table() {
        let world = MemoryWorld::default();
        let wal = WalDir::default();
        // A first segment, from another host, teaches the cluster's
        // identity; this host has yet to confirm it (its spool is empty).
        let (other_host, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (first, _) = wal.segment(&name("000000010000000000000006"));
        pusher(&world, &other_host, 1)
            .push_one(&first)
            .await
            .unwrap();
        let (path, _) = wal.segment(&name("000000010000000000000007"));
        inject(&world, step, fault, times);
        tokio::time::pause();
        let result = pusher(&world, &spool, 1).push_one(&path).await;
        tokio::time::resume();
        world.heal();
        assert_eq!(
            answer(&result),
            expected,
            "{step:?} {fault:?} {times:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn learning_the_identity_fails_cleanly_when_staging_refuses_the_write() {
    for (fault, expected) in [
        (Fault::Refused, Answer::Failed),
        (Fault::Transient, Answer::Unavailable),
    ] {
        let world = MemoryWorld::default();
        let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
        let (path, _) = wal.segment(&name("000000010000000000000001"));
        inject(&world, Step::IdentityPut, fault, Times::Always);
        tokio::time::pause();
        let result = pusher(&world, &spool, 1).push_one(&path).await;
        tokio::time::resume();
        assert_eq!(answer(&result), expected, "{fault:?}: {result:?}");
    }
}

#[tokio::test]
async fn repushes_are_idempotent_and_different_content_is_refused_before_and_after_replication() {
    let world = MemoryWorld::default();
    let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
    let pusher = pusher(&world, &spool, 1);
    let file = name("000000010000000000000003");
    let (path, bytes) = wal.segment(&file);
    assert_eq!(pusher.push_one(&path).await.unwrap().0, PushOutcome::Stored);
    assert_eq!(
        pusher.push_one(&path).await.unwrap().0,
        PushOutcome::AlreadyStaged
    );
    let mut other = bytes.clone();
    other[100_000] ^= 1;
    let changed = wal.file(&file, &other);
    let staged_before = world
        .staging
        .inner()
        .object(&staging_key(&cluster(), file))
        .unwrap();
    assert_eq!(answer(&pusher.push_one(&changed).await), Answer::Conflict);
    let staged_after = world
        .staging
        .inner()
        .object(&staging_key(&cluster(), file))
        .unwrap();
    assert_eq!(
        staged_after.body, staged_before.body,
        "the stored copy is untouched"
    );

    let (replicated, replicated_bytes) = archived(&world, "000000010000000000000004").await;
    let path = wal.file(&replicated, &replicated_bytes);
    assert_eq!(
        pusher.push_one(&path).await.unwrap().0,
        PushOutcome::AlreadyArchived
    );
    let mut other = replicated_bytes.clone();
    other[100_000] ^= 1;
    let changed = wal.file(&replicated, &other);
    assert_eq!(answer(&pusher.push_one(&changed).await), Answer::Conflict);
    let record = record_of(&world, replicated).await.unwrap();
    assert_eq!(
        record.raw_sha256,
        shared::codec::Sha256Hex::of(&replicated_bytes)
    );
}

#[tokio::test]
async fn a_push_makes_two_requests_once_the_host_knows_the_identity_and_still_refuses_another_cluster(
) {
    let world = MemoryWorld::default();
    let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
    let pusher = pusher(&world, &spool, 1);
    let (first, _) = wal.segment(&name("000000010000000000000001"));
    pusher.push_one(&first).await.unwrap();
    let identity = identity_key(&cluster());
    let identity_reads = world.staging.calls(Operation::Get);

    let (second, _) = wal.segment(&name("000000010000000000000002"));
    let (puts, gets) = (
        world.staging.calls(Operation::Put),
        world.catalog.calls(CatalogOperation::Get),
    );
    assert_eq!(
        pusher.push_one(&second).await.unwrap().0,
        PushOutcome::Stored
    );
    assert_eq!(
        world.staging.calls(Operation::Get),
        identity_reads,
        "identity remembered"
    );
    assert_eq!(world.staging.calls(Operation::Put), puts + 1);
    assert_eq!(world.catalog.calls(CatalogOperation::Get), gets + 1);

    // A segment of another cluster: the remembered identity does not
    // match, staging is asked again, and the segment is refused.
    let foreign_name = name("000000010000000000000003");
    let foreign = wal.file(&foreign_name, &synthetic_segment(&foreign_name, 42));
    assert_eq!(
        answer(&pusher.push_one(&foreign).await),
        Answer::WrongCluster
    );
    assert!(world.staging.calls(Operation::Get) > identity_reads);
    assert!(world.staging.inner().object(&identity).is_some());
}

#[tokio::test]
async fn wrong_files_are_refused_before_any_store_is_asked() {
    let world = MemoryWorld::default();
    let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
    let pusher = pusher(&world, &spool, 1);
    let (first, _) = wal.segment(&name("000000010000000000000001"));
    pusher.push_one(&first).await.unwrap();
    let puts = world.staging.calls(Operation::Put);

    let foreign_name = name("000000010000000000000002");
    let foreign = wal.file(&foreign_name, &synthetic_segment(&foreign_name, 42));
    assert_eq!(
        answer(&pusher.push_one(&foreign).await),
        Answer::WrongCluster
    );

    let truncated_name = name("000000010000000000000003");
    let mut truncated = synthetic_segment(&truncated_name, common::SYSID);
    truncated.truncate(8192);
    let truncated = wal.file(&truncated_name, &truncated);
    assert!(matches!(
        pusher.push_one(&truncated).await,
        Err(PushError::BadContent { .. })
    ));

    let misnamed = wal.dir.path().join("not-a-wal-file");
    std::fs::write(&misnamed, b"x").unwrap();
    assert!(matches!(
        pusher.push_one(&misnamed).await,
        Err(PushError::NotWalFile(_))
    ));
    let missing = wal.dir.path().join("000000010000000000000009");
    assert!(matches!(
        pusher.push_one(&missing).await,
        Err(PushError::Read { .. })
    ));
    assert_eq!(
        world.staging.calls(Operation::Put),
        puts,
        "nothing was written"
    );
}

#[tokio::test]
async fn a_parallel_push_stores_the_ready_followers_and_answers_their_own_calls_from_the_spool() {
    let world = MemoryWorld::default();
    let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
    let status = wal.dir.path().join("archive_status");
    std::fs::create_dir(&status).unwrap();
    let names: Vec<_> = (1..=4)
        .map(|i| name(&format!("00000001000000000000000{i}")))
        .collect();
    let paths: Vec<_> = names.iter().map(|n| wal.segment(n).0).collect();
    for n in &names {
        std::fs::write(status.join(format!("{n}.ready")), b"").unwrap();
    }
    let pusher = pusher(&world, &spool, 4);
    assert_eq!(pusher.push(&paths[0]).await.unwrap(), PushOutcome::Stored);
    for n in &names {
        assert!(
            world
                .staging
                .inner()
                .object(&staging_key(&cluster(), n))
                .is_some(),
            "{n} stored"
        );
    }
    let puts = world.staging.calls(Operation::Put);
    for path in &paths[1..] {
        assert_eq!(pusher.push(path).await.unwrap(), PushOutcome::PushedEarlier);
    }
    assert_eq!(
        world.staging.calls(Operation::Put),
        puts,
        "answered from the spool"
    );
}
