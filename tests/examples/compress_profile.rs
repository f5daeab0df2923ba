//! Profiles the compress function's work on real 16 MiB WAL segments from
//! PostgreSQL 15: zstd ratio and speed per level beside the `zstd` CLI at
//! the same level on the same files (OLTP from pgbench, and a bulk load);
//! the cost of sealing (age, after zstd) beside zstd alone; then the OLTP
//! segments through the whole replicator against the stand-ins and back
//! through the fetcher, plain and sealed, each in a process of its own
//! (time per segment, peak memory, fetch throughput). Asserts nothing.
//!
//! `cargo run -p walvault-tests --example compress_profile`

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use shared::archive::fetch::Fetcher;
use shared::codec::{compress, decompress, unpack_verified, CompressionLevel, Sha256Hex};
use shared::events::ObjectRef;
use shared::keys::staging_key;
use shared::seal::{generate_identity, seal, Claims, Identities, Recipients, Sealing, TagKey};
use shared::wal::WalFileName;
use walvault_tests::archive::{backends, replicator, stage};
use walvault_tests::memory::{peak_kib, reset_peak};
use walvault_tests::postgres::{PgOptions, Postgres};
use walvault_tests::standins::{Stack, STAGING_BUCKET};
use walvault_tests::unique_cluster;

const LEVELS: [i32; 5] = [1, 3, 6, 9, 12];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, files @ ..] = args.as_slice() {
        if mode == "plain" || mode == "sealed" {
            let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
            return round_trip(&files, mode == "sealed");
        }
    }
    let pg = Postgres::start(PgOptions::default());
    let oltp = workload(&pg, |pg| pg.pgbench(5, 4000));
    let bulk = workload(&pg, |pg| {
        pg.sql("CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS a, now() AS t FROM generate_series(1, 600000) g");
    });
    println!("zstd on real WAL (16 MiB segments): walvault (zstd crate, this build) vs zstd CLI, same files, same level");
    println!(
        "{:<6} {:<6} {:>6} {:>12} {:>12} {:>12} {:>10}",
        "wal", "level", "files", "ratio", "ms/segment", "cli ms/seg", "cli ratio"
    );
    for (label, files) in [("oltp", &oltp), ("bulk", &bulk)] {
        for level in LEVELS {
            let (ratio, ms) = ours(files, level);
            let (cli_ratio, cli_ms) = cli(files, level);
            println!("{label:<6} {level:<6} {:>6} {ratio:>12.2} {ms:>12.1} {cli_ms:>12.1} {cli_ratio:>10.2}", files.len());
        }
    }

    println!();
    println!("sealing (age X25519, ChaCha20-Poly1305) after zstd level 3, in process, same files:");
    println!(
        "{:<6} {:>6} {:>14} {:>18} {:>8} {:>16} {:>18}",
        "wal",
        "files",
        "zstd ms/seg",
        "zstd+seal ms/seg",
        "ratio",
        "open+unzstd ms",
        "unzstd alone ms"
    );
    for (label, files) in [("oltp", &oltp), ("bulk", &bulk)] {
        let cost = sealing_cost(files);
        println!(
            "{label:<6} {:>6} {:>14.1} {:>18.1} {:>8.3} {:>16.1} {:>18.1}",
            files.len(),
            cost.plain_ms,
            cost.sealed_ms,
            cost.sealed_ms / cost.plain_ms,
            cost.open_ms,
            cost.unpack_ms
        );
    }

    // Each mode in a fresh process, so that its peak memory is its own;
    // plain first, then sealed, then plain again (the machine is noisy).
    println!();
    println!("the OLTP segments through the whole replicator (R2 and B2 on the stand-ins), then fetched back:");
    println!(
        "{:<8} {:>6} {:>20} {:>14} {:>16} {:>14}",
        "copies", "files", "replicate ms/seg", "peak MiB", "fetch MB/s", "fetch peak MiB"
    );
    for mode in ["plain", "sealed", "plain", "sealed"] {
        let status = Command::new(std::env::current_exe().expect("own path"))
            .arg(mode)
            .args(&oltp)
            .status()
            .expect("child");
        assert!(status.success());
    }
}

struct SealingCost {
    plain_ms: f64,
    sealed_ms: f64,
    open_ms: f64,
    unpack_ms: f64,
}

/// zstd level 3 alone and followed by sealing, then the reverse, per
/// segment.
fn sealing_cost(files: &[PathBuf]) -> SealingCost {
    let level = CompressionLevel::default();
    let key = Key::new();
    let mut total = [Duration::ZERO; 4];
    for file in files {
        let raw = std::fs::read(file).expect("segment");
        let sha256 = Sha256Hex::of(&raw);
        let claims = Claims {
            raw_size: raw.len() as u64,
            raw_sha256: sha256.clone(),
        };
        let started = Instant::now();
        let packed = compress(&raw, level).expect("compress");
        total[0] += started.elapsed();
        let started = Instant::now();
        let sealed = seal(
            &compress(&raw, level).expect("compress"),
            &claims,
            &key.recipients,
        )
        .expect("seal");
        total[1] += started.elapsed();
        let started = Instant::now();
        let opened =
            unpack_verified(&sealed, raw.len() as u64, &sha256, &key.identities).expect("open");
        total[2] += started.elapsed();
        let started = Instant::now();
        let unpacked =
            unpack_verified(&packed, raw.len() as u64, &sha256, &key.identities).expect("unpack");
        total[3] += started.elapsed();
        assert!(opened == raw && unpacked == raw);
    }
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / files.len() as f64;
    SealingCost {
        plain_ms: per(total[0]),
        sealed_ms: per(total[1]),
        open_ms: per(total[2]),
        unpack_ms: per(total[3]),
    }
}

/// A key pair in a temporary file.
struct Key {
    recipients: Recipients,
    identities: Identities,
}

impl Key {
    fn new() -> Self {
        let new = generate_identity("bench");
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), &new.file_text).expect("identity file");
        Key {
            recipients: Recipients::parse(&new.recipient).expect("recipient"),
            identities: Identities::load(&[file.path()]).expect("identity"),
        }
    }
}

/// `files` through the whole replicator against the stand-ins, sealed or
/// not, then fetched back as `walvault fetch` does; one line of figures.
fn round_trip(files: &[PathBuf], sealed: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = Stack::shared().config(&unique_cluster("profile"));
    let key = Key::new();
    runtime.block_on(async {
        let replicator = replicator(&config)
            .await
            .sealing_to(sealed.then(|| Sealing {
                recipients: key.recipients.clone(),
                tag_key: TagKey::random().expect("a tag key"),
            }));
        let budget = shared::retry::RequestLimits::from_config(&config).one_request();
        let (mut names, mut replicating, mut raw_bytes) = (Vec::new(), Duration::ZERO, 0u64);
        reset_peak();
        for file in files {
            let raw = std::fs::read(file).expect("segment");
            raw_bytes += raw.len() as u64;
            let name: WalFileName = file
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .parse()
                .expect("WAL name");
            stage(&config, &name, &raw).await;
            drop(raw);
            let object = ObjectRef {
                bucket: STAGING_BUCKET.into(),
                key: staging_key(&config.cluster, name),
            };
            let started = Instant::now();
            let (outcome, _report) = replicator.process_with_report(&object, &budget).await;
            replicating += started.elapsed();
            outcome.expect("replicated");
            names.push(name);
        }
        let replicate_peak = peak_kib();
        let backends = backends(&config).await;
        let fetcher = Fetcher::new(
            config.cluster.clone(),
            backends.catalog,
            backends.staging,
            backends.replicas,
            shared::retry::RequestLimits::from_config(&config),
        )
        .opening_with(key.identities.clone());
        reset_peak();
        let started = Instant::now();
        for name in &names {
            fetcher.fetch(name).await.expect("fetched");
        }
        let fetching = started.elapsed();
        println!(
            "{:<8} {:>6} {:>20.1} {:>14} {:>16.1} {:>14}",
            if sealed { "sealed" } else { "plain" },
            names.len(),
            replicating.as_secs_f64() * 1000.0 / names.len() as f64,
            replicate_peak / 1024,
            raw_bytes as f64 / 1e6 / fetching.as_secs_f64(),
            peak_kib() / 1024
        );
    });
}

/// Runs `load`, switches WAL, and returns the segments it archived.
fn workload(pg: &Postgres, load: impl FnOnce(&Postgres)) -> Vec<PathBuf> {
    let before: Vec<PathBuf> = archived(pg);
    load(pg);
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(300));
    archived(pg)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect()
}

fn archived(pg: &Postgres) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(pg.archive_dir())
        .expect("archive dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            matches!(
                p.file_name().and_then(|n| n.to_str()).map(str::parse),
                Some(Ok(WalFileName::Segment(_)))
            )
        })
        .collect();
    files.sort();
    files
}

fn ours(files: &[PathBuf], level: i32) -> (f64, f64) {
    let level = CompressionLevel::new(level).expect("level");
    let (mut raw_total, mut packed_total, mut elapsed) = (0usize, 0usize, Duration::ZERO);
    for file in files {
        let raw = std::fs::read(file).expect("segment");
        let started = Instant::now();
        let packed = compress(&raw, level).expect("compress");
        elapsed += started.elapsed();
        assert_eq!(
            decompress(&packed, raw.len() as u64).expect("round trip"),
            raw
        );
        raw_total += raw.len();
        packed_total += packed.len();
    }
    (
        raw_total as f64 / packed_total as f64,
        elapsed.as_secs_f64() * 1000.0 / files.len() as f64,
    )
}

fn cli(files: &[PathBuf], level: i32) -> (f64, f64) {
    let (mut raw_total, mut packed_total, mut elapsed) = (0usize, 0usize, Duration::ZERO);
    for file in files {
        let started = Instant::now();
        let out = Command::new("zstd")
            .arg(format!("-{level}"))
            .args(["-q", "-c", "--single-thread"])
            .arg(file)
            .output()
            .expect("zstd CLI");
        elapsed += started.elapsed();
        raw_total += std::fs::metadata(file).expect("size").len() as usize;
        packed_total += out.stdout.len();
    }
    (
        raw_total as f64 / packed_total as f64,
        elapsed.as_secs_f64() * 1000.0 / files.len() as f64,
    )
}
