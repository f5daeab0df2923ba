//! Peak memory against segment size, for the compress function and for
//! `walvault fetch`: one synthetic segment per size (`--wal-segsize` 16 MiB
//! up to 1 GiB) through the whole replicator against the stand-ins, then
//! fetched back as `walvault fetch` does (streamed to a file beside its
//! destination), beside the baseline of compressing the same segment whole
//! in memory (what the function did for every file before files over 16 MiB
//! were streamed; a fetch held the compressed and the raw bytes). Peak
//! resident memory is read from `VmHWM` after resetting it
//! (`/proc/self/clear_refs`) before each step, so it is that step's alone. The stores are
//! s3s-fs, in its own process (the stand-ins' profile proxies run in this
//! one and hold whole bodies); the catalog is moto's DynamoDB. Asserts
//! nothing.
//!
//! `cargo run --release -p walvault-tests --example compress_memory [MiB …]`

use std::time::Instant;

use shared::archive::fetch::{FetchedBody, Fetcher};
use shared::codec::{compress, CompressionLevel};
use shared::events::ObjectRef;
use shared::keys::staging_key;
use shared::retry::RequestLimits;
use shared::testing::synthetic_segment_of;
use shared::wal::{SegmentSize, WalFileName};
use walvault_tests::archive::{backends_as, replicator, stage};
use walvault_tests::memory::{peak_kib, reset_peak};
use walvault_tests::profile::iam::Role;
use walvault_tests::s3s::S3sFs;
use walvault_tests::standins::{config_from_env, Stack, STAGING_BUCKET};
use walvault_tests::unique_cluster;

const SYSID: u64 = 7_301_234_567_890_123_456;

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a size in MiB"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![16, 64, 256, 1024]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s3s = S3sFs::start();
    runtime.block_on(s3s.create_walvault_buckets());
    let mut env = Stack::shared().env(&unique_cluster("memory"));
    s3s.redirect(&mut env);
    let config = config_from_env(&env);
    let level = config.zstd_level;
    println!(
        "compress function and fetch: peak resident memory per segment size (zstd level {}), s3s-fs stores, one process",
        level.get()
    );
    println!(
        "{:>9} {:>9} {:>11} {:>17} {:>8} {:>13} {:>8} {:>18}",
        "segment",
        "path",
        "RSS before",
        "replicate: peak",
        "seconds",
        "fetch: peak",
        "seconds",
        "whole: peak"
    );
    for (index, mib) in sizes.into_iter().enumerate() {
        // Segment 0 of log `index`: a valid name whatever the segment size.
        let name: WalFileName = format!("00000001{:08X}00000000", index + 1)
            .parse()
            .expect("a segment name");
        let size = SegmentSize::new(mib << 20).expect("a segment size");
        let raw = synthetic_segment_of(&name, SYSID, size);
        let baseline = whole_in_memory_peak(&raw, level);
        runtime.block_on(stage(&config, &name, &raw));
        drop(raw);
        let before = reset_peak();
        let started = Instant::now();
        runtime.block_on(async {
            let budget = RequestLimits::from_config(&config).one_request();
            replicator(&config)
                .await
                .process(
                    &ObjectRef {
                        bucket: STAGING_BUCKET.into(),
                        key: staging_key(&config.cluster, name),
                    },
                    &budget,
                )
                .await
                .expect("replicated")
        });
        let seconds = started.elapsed().as_secs_f64();
        let replicate_peak = peak_kib();
        let dir = tempfile::tempdir().expect("a destination directory");
        reset_peak();

        let started = Instant::now();
        runtime.block_on(async {
            let fetcher = fetcher(&config)
                .await
                .streaming_into(dir.path().to_path_buf());
            let fetched = fetcher.fetch(&name).await.expect("fetched");
            assert!(
                matches!(fetched.body, FetchedBody::File { .. }) || mib <= 16,
                "a large segment streams to disk"
            );
            fetched
                .persist(&dir.path().join("RECOVERYXLOG"))
                .expect("persisted");
        });
        let fetch_seconds = started.elapsed().as_secs_f64();
        let fetch_peak = peak_kib();
        let path = if mib <= 16 { "whole" } else { "streamed" };
        println!(
            "{:>5} MiB {path:>9} {:>7} MiB {:>13} MiB {seconds:>8.1} {:>9} MiB {fetch_seconds:>8.1} {:>14} MiB",
            mib,
            before / 1024,
            replicate_peak / 1024,
            fetch_peak / 1024,
            baseline / 1024
        );
    }
}

/// `walvault fetch`'s fetcher for `config`, as a recovering host signs.
async fn fetcher(config: &shared::config::Config) -> Fetcher {
    let backends = backends_as(Role::Restore, config).await;
    Fetcher::new(
        config.cluster.clone(),
        backends.catalog,
        backends.staging,
        backends.replicas,
        RequestLimits::from_config(config),
    )
}

/// The peak of compressing `raw` whole, as the function did before: the
/// raw bytes, a copy as the GET delivered them, and the output.
fn whole_in_memory_peak(raw: &[u8], level: CompressionLevel) -> u64 {
    reset_peak();
    let fetched = raw.to_vec();
    let packed = compress(&fetched, level).expect("compress");
    let peak = peak_kib();
    drop((fetched, packed));
    peak
}
