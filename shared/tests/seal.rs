//! Sealed copies on the in-memory backends: what R2 and B2 hold, what
//! fetch, verify and a retry do with them, rotation, mixed archives, and
//! the encryption state the compress function checks at start.

mod common;

use std::path::Path;

use common::{
    announced, cluster, fetcher_asking, limits, name, pusher, record_of, replicator, staged_of,
    WalDir,
};
use shared::archive::fetch::{FetchError, FetchedBody, Fetcher, Source};
use shared::catalog::CatalogOperation;
use shared::clock::now_millis;
use shared::config::Encryption;
use shared::fault::Fault;
use shared::keys::{archive_key, meta};
use shared::provider::Provider;
use shared::replicate::Outcome;
use shared::seal::state::{check_at_start, read, StateError};
use shared::seal::{
    generate_identity, is_sealed, Fingerprint, Identities, Recipients, Sealing, TagKey,
};
use shared::store::Operation;
use shared::testing::{synthetic_segment, MemoryWorld};
use shared::verify::{Problem, Range, Verifier, VerifyOptions};
use shared::wal::WalFileName;

const MARKER: &[u8] = b"card=4111-1111-1111-1111;email=alice@example.com";

/// A key pair: the recipients to seal to, the identities that open.
struct Key {
    recipient: String,
    fingerprint: Fingerprint,
    file: tempfile::NamedTempFile,
}

impl Key {
    fn new() -> Self {
        let new = generate_identity("test");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &new.file_text).unwrap();
        Key {
            recipient: new.recipient,
            fingerprint: new.fingerprint,
            file,
        }
    }

    fn path(&self) -> &Path {
        self.file.path()
    }
}

fn to(keys: &[&Key]) -> Recipients {
    let list: Vec<&str> = keys.iter().map(|k| k.recipient.as_str()).collect();
    Recipients::parse(&list.join(",")).unwrap()
}

/// Sealing to `keys`, with one tag key for every test: a cluster's.
fn sealing(keys: &[&Key]) -> Sealing {
    Sealing {
        recipients: to(keys),
        tag_key: TagKey::parse(&"5e".repeat(32)).unwrap(),
    }
}

fn opening(keys: &[&Key]) -> Identities {
    let paths: Vec<&Path> = keys.iter().map(|k| k.path()).collect();
    Identities::load(&paths).unwrap()
}

/// A segment whose pages carry `MARKER` again and again, as a table's rows
/// would.
fn segment_with_marker(name: &WalFileName) -> Vec<u8> {
    let mut bytes = synthetic_segment(name, common::SYSID);
    let mut at = 8192;
    while at + MARKER.len() < bytes.len() {
        bytes[at..at + MARKER.len()].copy_from_slice(MARKER);
        at += 4096;
    }
    bytes
}

/// Pushes `file` with the marker and replicates it, sealing to `sealed_to`
/// (plain when `None`).
async fn archive(world: &MemoryWorld, file: &str, sealed_to: Option<Sealing>) -> Vec<u8> {
    let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
    let name = name(file);
    let bytes = segment_with_marker(&name);
    let path = wal.file(&name, &bytes);
    pusher(world, &spool, 1).push_one(&path).await.unwrap();
    let outcome = replicator(world)
        .sealing_to(sealed_to)
        .process(&announced(&name), &limits().one_request())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Replicated);
    bytes
}

fn fetcher(world: &MemoryWorld, identities: Identities, order: &[Provider]) -> Fetcher {
    fetcher_asking(world, order).opening_with(identities)
}

/// `file` fetched with the identities of `keys`, asking the providers in
/// `order`: where it was served from, and its bytes.
async fn served(
    world: &MemoryWorld,
    keys: &[&Key],
    order: &[Provider],
    file: &WalFileName,
) -> (Source, Vec<u8>) {
    let fetched = fetcher(world, opening(keys), order)
        .fetch(file)
        .await
        .unwrap();
    (fetched.source, body(fetched))
}

fn body(fetched: shared::archive::fetch::Fetched) -> Vec<u8> {
    match fetched.body {
        FetchedBody::Memory(bytes) => bytes,
        FetchedBody::File { path, .. } => std::fs::read(&path).unwrap(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn providers_hold_only_ciphertext_and_no_plaintext_fact() {
    let world = MemoryWorld::default();
    let key = Key::new();
    let file = "000000010000000000000003";
    let raw = archive(&world, file, Some(sealing(&[&key]))).await;
    let record = record_of(&world, name(file)).await.unwrap();
    let seal = record.seal.clone().expect("the record says it is sealed");
    assert_eq!(
        seal.recipients.fingerprints(),
        std::slice::from_ref(&key.fingerprint)
    );
    assert_ne!(seal.tag, record.raw_sha256);
    for provider in Provider::ALL {
        let object = world
            .replica(provider)
            .inner()
            .object(&archive_key(&cluster(), name(file)))
            .unwrap();
        assert!(is_sealed(&object.body), "{provider}");
        assert!(
            !contains(&object.body, MARKER),
            "{provider}: marker in the body"
        );
        let decoded = zstd::stream::decode_all(&object.body[..]).unwrap_or_default();
        assert!(!contains(&decoded, MARKER), "{provider}: marker after zstd");
        let metadata = format!("{:?}", object.info.metadata);
        assert!(
            !metadata.contains(record.raw_sha256.as_str()),
            "{provider}: {metadata}"
        );
        assert!(
            !metadata.contains(&raw.len().to_string()),
            "{provider}: {metadata}"
        );
        assert_eq!(
            object.info.metadata.get(meta::SEALED).map(String::as_str),
            Some(meta::SEALED_FORMAT)
        );
        assert_eq!(object.info.sha256().as_ref(), Some(&seal.tag));
    }
    let (_, bytes) = served(&world, &[&key], &[Provider::R2, Provider::B2], &name(file)).await;
    assert_eq!(bytes, raw);
}

#[tokio::test]
async fn without_the_identity_fetch_names_the_recipients_and_never_says_not_found() {
    let world = MemoryWorld::default();
    let (key, stranger) = (Key::new(), Key::new());
    let file = "000000010000000000000003";
    archive(&world, file, Some(sealing(&[&key]))).await;
    for identities in [Identities::default(), opening(&[&stranger])] {
        let error = fetcher(&world, identities, &[Provider::R2, Provider::B2])
            .fetch(&name(file))
            .await
            .unwrap_err();
        let FetchError::Locked { sealed_to, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(sealed_to, &vec![key.fingerprint.clone()]);
        let message = shared::error::chain(&error);
        assert!(message.contains(key.fingerprint.as_str()), "{message}");
        assert!(!message.contains(&key.recipient), "{message}");
    }
}

#[tokio::test]
async fn a_tampered_copy_is_corrupt_and_served_from_the_other_provider() {
    let world = MemoryWorld::default();
    let key = Key::new();
    let file = "000000010000000000000003";
    let raw = archive(&world, file, Some(sealing(&[&key]))).await;
    let object_key = archive_key(&cluster(), name(file));
    let r2 = world.replica(Provider::R2).inner();
    let size = r2.object(&object_key).unwrap().body.len();
    r2.corrupt_at(&object_key, size / 2);
    let (source, bytes) = served(&world, &[&key], &[Provider::R2, Provider::B2], &name(file)).await;
    assert_eq!(source, Source::Replica(Provider::B2));
    assert_eq!(bytes, raw);

    // verify --deep finds it, names it corrupt, and repairs it from B2.
    let report = verify(&world, opening(&[&key]), true).await;
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(matches!(
        report.problems[0].problem,
        Problem::Corrupt { .. }
    ));
    assert!(report.problems[0].repair.is_some(), "{report:?}");
    let again = verify(&world, opening(&[&key]), true).await;
    assert!(
        again.problems.is_empty() && again.unchecked.is_empty(),
        "{again:?}"
    );
    let (_, bytes) = served(&world, &[&key], &[Provider::R2], &name(file)).await;
    assert_eq!(bytes, raw);
}

async fn verify(
    world: &MemoryWorld,
    identities: Identities,
    deep: bool,
) -> shared::verify::VerifyReport {
    struct NoProgress;
    impl shared::verify::Progress for NoProgress {
        fn update(&self, _: u64, _: u64, _: u64, _: u64) {}
    }
    let backends = world.backends();
    let options = VerifyOptions {
        range: Range::default(),
        deep,
        repair: true,
        concurrency: 4,
        deadline: None,
    };
    Verifier {
        cluster: cluster(),
        catalog: backends.catalog,
        replicas: backends.replicas,
        limits: limits(),
        identities,
    }
    .verify(options, now_millis() + 3_600_000, &NoProgress)
    .await
    .unwrap()
}

#[tokio::test]
async fn verify_checks_sealed_copies_by_tag_and_reports_them_unchecked_without_a_key() {
    let world = MemoryWorld::default();
    let key = Key::new();
    archive(&world, "000000010000000000000003", Some(sealing(&[&key]))).await;
    let shallow = verify(&world, Identities::default(), false).await;
    assert!(
        shallow.problems.is_empty() && shallow.unchecked.is_empty(),
        "{shallow:?}"
    );
    let deep = verify(&world, opening(&[&key]), true).await;
    assert!(
        deep.problems.is_empty() && deep.unchecked.is_empty(),
        "{deep:?}"
    );
    let locked = verify(&world, Identities::default(), true).await;
    assert!(
        locked.problems.is_empty(),
        "a locked copy is not corrupt: {locked:?}"
    );
    assert_eq!(locked.unchecked.len(), 2, "{locked:?}");
    assert!(
        locked.unchecked[0]
            .reason
            .contains(key.fingerprint.as_str()),
        "{locked:?}"
    );
}

#[tokio::test]
async fn rotation_and_a_mixed_archive_read_back_with_the_identities_that_open_them() {
    let world = MemoryWorld::default();
    let (a, b) = (Key::new(), Key::new());
    let plain = archive(&world, "000000010000000000000003", None).await;
    let under_a = archive(&world, "000000010000000000000004", Some(sealing(&[&a]))).await;
    let under_b = archive(&world, "000000010000000000000005", Some(sealing(&[&b]))).await;
    let both = fetcher(&world, opening(&[&a, &b]), &[Provider::R2, Provider::B2]);
    for (file, raw) in [("03", &plain), ("04", &under_a), ("05", &under_b)] {
        let fetched = both
            .fetch(&name(&format!("0000000100000000000000{file}")))
            .await
            .unwrap();
        assert_eq!(&body(fetched), raw, "{file}");
    }
    let only_b = fetcher(&world, opening(&[&b]), &[Provider::R2, Provider::B2]);
    assert_eq!(
        body(
            only_b
                .fetch(&name("000000010000000000000003"))
                .await
                .unwrap()
        ),
        plain
    );
    let error = only_b
        .fetch(&name("000000010000000000000004"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, FetchError::Locked { sealed_to, .. } if sealed_to == &vec![a.fingerprint.clone()]),
        "{error:?}"
    );
    assert_eq!(
        body(
            only_b
                .fetch(&name("000000010000000000000005"))
                .await
                .unwrap()
        ),
        under_b
    );
}

/// Stages `file` and runs a first delivery sealing to `first` that stores
/// R2's copy (every answer lost) while B2 refuses: the delivery fails with
/// R2's copy written and not recorded.
async fn first_delivery_half_done(world: &MemoryWorld, file: WalFileName, first: Option<Sealing>) {
    let (wal, spool) = (WalDir::default(), tempfile::tempdir().unwrap());
    let path = wal.file(&file, &segment_with_marker(&file));
    pusher(world, &spool, 1).push_one(&path).await.unwrap();
    world
        .replica(Provider::R2)
        .fail_next(Operation::Put, Fault::LostAnswer, u32::MAX);
    world
        .replica(Provider::B2)
        .fail_next(Operation::Put, Fault::Refused, u32::MAX);
    let first = replicator(world)
        .sealing_to(first)
        .process(&announced(&file), &limits().one_request())
        .await;
    assert!(first.is_err(), "{first:?}");
    world.heal();
}

#[tokio::test]
async fn a_retry_after_a_rotation_seals_to_the_keys_of_the_first_delivery() {
    let world = MemoryWorld::default();
    let (a, b) = (Key::new(), Key::new());
    let file = name("000000010000000000000003");
    first_delivery_half_done(&world, file, Some(sealing(&[&a]))).await;
    let second = replicator(&world)
        .sealing_to(Some(sealing(&[&b])))
        .process(&announced(&file), &limits().one_request())
        .await
        .unwrap();
    assert_eq!(second, Outcome::Replicated);
    let record = record_of(&world, file).await.unwrap();
    assert_eq!(
        (record.conflicts, record.has_every_target()),
        (0, true),
        "{record:?}"
    );
    assert_eq!(record.sealed_to(), std::slice::from_ref(&a.fingerprint));
    for provider in Provider::ALL {
        let only = fetcher(&world, opening(&[&a]), &[provider]);
        let fetched = only.fetch(&file).await.unwrap();
        assert_eq!(
            fetched.source,
            Source::Replica(provider),
            "A opens {provider}'s copy"
        );
        let error = fetcher(&world, opening(&[&b]), &[provider])
            .fetch(&file)
            .await;
        assert!(
            matches!(error, Err(FetchError::Locked { .. })),
            "{provider}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_file_half_replicated_plain_stays_plain_when_encryption_is_turned_on() {
    let world = MemoryWorld::default();
    let key = Key::new();
    let file = name("000000010000000000000003");
    first_delivery_half_done(&world, file, None).await;
    replicator(&world)
        .sealing_to(Some(sealing(&[&key])))
        .process(&announced(&file), &limits().one_request())
        .await
        .unwrap();
    let record = record_of(&world, file).await.unwrap();
    assert!(
        record.seal.is_none() && record.has_every_target(),
        "{record:?}"
    );
    for provider in Provider::ALL {
        let object = world
            .replica(provider)
            .inner()
            .object(&archive_key(&cluster(), file))
            .unwrap();
        assert!(
            !is_sealed(&object.body),
            "{provider}: one kind of copy per file"
        );
        assert_eq!(object.info.sha256().as_ref(), Some(&record.raw_sha256));
    }
}

#[tokio::test]
async fn large_files_are_sealed_and_opened_as_they_stream() {
    let world = MemoryWorld::default();
    let key = Key::new();
    let (file, raw) = staged_of(&world, "000000010000000000000003", 64).await;
    let outcome = replicator(&world)
        .sealing_to(Some(sealing(&[&key])))
        .process(&announced(&file), &limits().one_request())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Replicated);
    let object_key = archive_key(&cluster(), file);
    let stored = world
        .replica(Provider::R2)
        .inner()
        .object(&object_key)
        .unwrap();
    assert!(is_sealed(&stored.body));
    let dir = tempfile::tempdir().unwrap();
    let streaming = |identities| {
        fetcher(&world, identities, &[Provider::R2, Provider::B2]).streaming_into(dir.path().into())
    };
    let fetched = streaming(opening(&[&key])).fetch(&file).await.unwrap();
    assert!(matches!(fetched.body, FetchedBody::File { .. }));
    assert_eq!(body(fetched), raw);
    let error = streaming(Identities::default())
        .fetch(&file)
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Locked { .. }), "{error:?}");
    // Damage deep inside R2's copy: B2 serves it.
    world
        .replica(Provider::R2)
        .inner()
        .corrupt_at(&object_key, stored.body.len() / 3);
    let fetched = streaming(opening(&[&key])).fetch(&file).await.unwrap();
    assert_eq!(fetched.source, Source::Replica(Provider::B2));
    assert_eq!(body(fetched), raw);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file left behind"
    );
}

#[tokio::test]
async fn without_the_catalog_a_sealed_copy_is_verified_by_its_own_claims() {
    let world = MemoryWorld::default();
    let key = Key::new();
    let file = "000000010000000000000003";
    let raw = archive(&world, file, Some(sealing(&[&key]))).await;
    world
        .catalog
        .fail_next(CatalogOperation::Get, Fault::Refused, u32::MAX);
    let (_, bytes) = served(&world, &[&key], &[Provider::R2, Provider::B2], &name(file)).await;
    assert_eq!(bytes, raw);
}

#[tokio::test]
async fn the_function_refuses_to_start_unsealed_once_the_cluster_is_sealed() {
    let world = MemoryWorld::default();
    let catalog = world.backends().catalog;
    let budget = limits().one_request();
    let key = Key::new();
    let check = |encryption: Encryption| {
        let catalog = catalog.clone();
        async move { check_at_start(catalog.as_ref(), &cluster(), &encryption, &budget, 1).await }
    };
    assert!(check(Encryption::Unset).await.unwrap().is_none());
    assert_eq!(
        read(catalog.as_ref(), &cluster(), &budget).await.unwrap(),
        None
    );
    let first = check(Encryption::To(to(&[&key]))).await.unwrap().unwrap();
    assert_eq!(first.recipients, to(&[&key]));
    // A rotation keeps the cluster's tag key: tags stay the same per file.
    let other = Key::new();
    let rotated = check(Encryption::To(to(&[&other]))).await.unwrap().unwrap();
    assert_eq!(rotated.tag_key, first.tag_key);
    check(Encryption::To(to(&[&key]))).await.unwrap();
    let (_, state) = read(catalog.as_ref(), &cluster(), &budget)
        .await
        .unwrap()
        .unwrap();
    assert!(state.sealed);
    assert_eq!(state.recipients, vec![key.fingerprint.clone()]);
    let refused = check(Encryption::Unset).await.unwrap_err();
    assert!(
        matches!(refused, StateError::RecipientsMissing { .. }),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("WALVAULT_ENCRYPTION_OFF") && message.contains(key.fingerprint.as_str())
    );
    check(Encryption::Off).await.unwrap();
    let (_, state) = read(catalog.as_ref(), &cluster(), &budget)
        .await
        .unwrap()
        .unwrap();
    assert!(!state.sealed);
    assert!(check(Encryption::Unset).await.unwrap().is_none());
    let again = check(Encryption::To(to(&[&key]))).await.unwrap().unwrap();
    assert_eq!(
        again.tag_key, first.tag_key,
        "kept while encryption was off"
    );
    world
        .catalog
        .fail_next(CatalogOperation::GetClusterItem, Fault::Refused, u32::MAX);
    assert!(matches!(
        check(Encryption::Unset).await,
        Err(StateError::Catalog(_))
    ));
}

#[tokio::test]
async fn a_missing_sealed_copy_is_repaired_without_a_key_by_its_digest() {
    let world = MemoryWorld::default();
    let key = Key::new();
    let file = "000000010000000000000003";
    let raw = archive(&world, file, Some(sealing(&[&key]))).await;
    let object_key = archive_key(&cluster(), name(file));
    world.replica(Provider::R2).inner().remove(&object_key);
    // As the retention function runs it: no identity.
    let report = verify(&world, Identities::default(), false).await;
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert!(
        matches!(
            report.problems[0].repair,
            Some(shared::verify::Repair::Repaired { from: Provider::B2 })
        ),
        "{report:?}"
    );
    let (source, bytes) = served(&world, &[&key], &[Provider::R2], &name(file)).await;
    assert_eq!(source, Source::Replica(Provider::R2));
    assert_eq!(bytes, raw);
}

#[tokio::test]
async fn the_status_summary_counts_what_each_key_opens() {
    let world = MemoryWorld::default();
    let (a, b) = (Key::new(), Key::new());
    archive(&world, "000000010000000000000003", None).await;
    archive(&world, "000000010000000000000004", Some(sealing(&[&a]))).await;
    archive(&world, "000000010000000000000005", Some(sealing(&[&a, &b]))).await;
    let records = shared::catalog::list_all(world.backends().catalog.as_ref(), &cluster())
        .await
        .unwrap();
    let mut summary = shared::status::summary::ArchiveSummary::default();
    for record in &records {
        summary.add(record);
    }
    assert_eq!((summary.files, summary.sealed), (3, 2));
    assert_eq!(summary.sealed_to.get(&a.fingerprint), Some(&2));
    assert_eq!(summary.sealed_to.get(&b.fingerprint), Some(&1));
}

#[tokio::test]
async fn after_a_retry_either_copy_is_repaired_from_the_other_without_a_key() {
    let key = Key::new();
    let file = name("000000010000000000000003");
    for lost in Provider::ALL {
        // R2's copy is the first delivery's, B2's the second's: different
        // ciphertexts of the same file.
        let world = MemoryWorld::default();
        first_delivery_half_done(&world, file, Some(sealing(&[&key]))).await;
        replicator(&world)
            .sealing_to(Some(sealing(&[&key])))
            .process(&announced(&file), &limits().one_request())
            .await
            .unwrap();
        world
            .replica(lost)
            .inner()
            .remove(&archive_key(&cluster(), file));
        let report = verify(&world, Identities::default(), false).await;
        assert!(
            matches!(
                report.problems.as_slice(),
                [p] if matches!(p.repair, Some(shared::verify::Repair::Repaired { .. }))
            ),
            "{lost}: {report:?}"
        );
        let (source, _) = served(&world, &[&key], &[lost], &file).await;
        assert_eq!(source, Source::Replica(lost), "{lost}");
    }
}

#[tokio::test]
async fn a_file_pushed_again_after_its_record_was_lost_finds_its_sealed_copies() {
    let world = MemoryWorld::default();
    let key = Key::new();
    let file = "000000010000000000000003";
    let raw = archive(&world, file, Some(sealing(&[&key]))).await;
    // The catalog restored to a time before the file: its record is gone,
    // its copies are not; the shipper pushes it again.
    world.catalog.inner().remove(&cluster(), &name(file).into());
    archive(&world, file, Some(sealing(&[&key]))).await;
    let record = record_of(&world, name(file)).await.unwrap();
    assert_eq!(record.conflicts, 0, "{record:?}");
    assert!(record.has_every_target(), "{record:?}");
    let (_, bytes) = served(&world, &[&key], &[Provider::R2, Provider::B2], &name(file)).await;
    assert_eq!(bytes, raw);
}
