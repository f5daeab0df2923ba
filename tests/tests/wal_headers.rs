//! WAL names and headers on real segments archived by PostgreSQL 15.

use std::time::Duration;

use shared::wal::{PgVersion, Segment, SegmentSize, WalFileKind, WalFileName, WalHeader};
use walvault_tests::postgres::{PgOptions, Postgres};

/// Every file the harness's archive_command copied, parsed by name.
fn archived(pg: &Postgres) -> Vec<(WalFileName, Vec<u8>)> {
    let mut files: Vec<(WalFileName, Vec<u8>)> = std::fs::read_dir(pg.archive_dir())
        .expect("archive dir")
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let parsed = name.parse().unwrap_or_else(|e| {
                panic!("PostgreSQL archived {name}, which we cannot parse: {e}")
            });
            (
                parsed,
                std::fs::read(&path).expect("reading an archived file"),
            )
        })
        .collect();
    files.sort_by_key(|a| a.0);
    files
}

/// Generates WAL, closes a few segments and waits until they are archived.
fn archive_some_segments(pg: &Postgres, switches: usize) -> String {
    pg.pgbench(1, 200);
    let mut last = String::new();
    for _ in 0..switches {
        pg.sql("CREATE TABLE IF NOT EXISTS filler AS SELECT 1 AS x; INSERT INTO filler SELECT 1");
        last = pg.switch_wal();
    }
    pg.wait_archived(&last, Duration::from_secs(60));
    last
}

fn check_segments(pg: &Postgres, expected_size: u64) -> Vec<Segment> {
    let sysid = pg.system_identifier();
    let size = SegmentSize::new(expected_size).unwrap();
    let mut segments = Vec::new();
    for (name, bytes) in archived(pg) {
        if name.kind() != WalFileKind::Segment {
            continue;
        }
        let header = WalHeader::parse_file(&name, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(header.pg_version, PgVersion(15), "{name}");
        assert_eq!(header.system_identifier, sysid, "{name}");
        assert_eq!(header.segment_size, size, "{name}");
        assert_eq!(header.block_size, 8192, "{name}");
        assert_eq!(header.page_timeline, 1, "{name}");
        let WalFileName::Segment(segment) = name else {
            unreachable!()
        };
        assert_eq!(header.page_address, segment.start_lsn(size), "{name}");
        segments.push(segment);
    }
    // Consecutive archived segments are next() of each other.
    for pair in segments.windows(2) {
        assert_eq!(
            pair[0].next(size).unwrap(),
            pair[1],
            "{} then {}",
            pair[0],
            pair[1]
        );
        assert_eq!(pair[1].previous(size).unwrap(), pair[0]);
    }
    segments
}

#[test]
fn real_16_mib_segments_parse_and_belong_to_their_cluster() {
    let pg = Postgres::start(PgOptions::default());
    archive_some_segments(&pg, 4);
    let segments = check_segments(&pg, 16 << 20);
    assert!(
        segments.len() >= 4,
        "only {} segments archived",
        segments.len()
    );

    let other = Postgres::start(PgOptions::default());
    let (_, bytes) = archived(&pg)
        .into_iter()
        .find(|(n, _)| n.kind() == WalFileKind::Segment)
        .unwrap();
    let foreign = WalHeader::parse(&bytes).unwrap();
    assert_ne!(
        foreign.system_identifier,
        other.system_identifier(),
        "two initdb runs, two identities"
    );
}

#[test]
fn real_64_mib_segments_follow_their_own_naming() {
    let pg = Postgres::start(PgOptions {
        wal_segsize_mb: Some(64),
        ..PgOptions::default()
    });
    archive_some_segments(&pg, 3);
    let segments = check_segments(&pg, 64 << 20);
    assert!(segments.len() >= 3);
    // With 64 MiB segments a log id holds 0x40 segments, not 0x100.
    assert!(segments.iter().all(|s| s.seg < 0x40));
}

#[test]
fn a_backup_history_file_names_its_start_segment() {
    let pg = Postgres::start(PgOptions::default());
    let stop = pg.base_backup(&pg.scratch("backups").join("base"));
    assert!(stop.contains("START WAL LOCATION"), "{stop}");
    let last = pg.switch_wal();
    pg.wait_archived(&last, Duration::from_secs(60));
    // The archiver takes ready files in batches, so the backup history
    // file may be archived after later segments: wait for it too.
    let backup_files = || -> Vec<WalFileName> {
        archived(&pg)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.kind() == WalFileKind::Backup)
            .collect()
    };
    let waited = std::time::Instant::now();
    while backup_files().is_empty() && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let backups = backup_files();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let WalFileName::Backup { segment, .. } = backups[0] else {
        unreachable!()
    };
    assert!(
        stop.contains(&format!("(file {segment})")),
        "label {stop} vs {segment}"
    );
    assert_eq!(
        WalHeader::parse_file(&backups[0], b"START WAL LOCATION"),
        Err(shared::wal::HeaderError::NotASegmentName(
            backups[0].to_string()
        ))
    );
}
