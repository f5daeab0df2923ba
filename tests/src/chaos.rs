//! The chaos run: PostgreSQL writes and archives through `walvault push`,
//! the compress handler consumes the staging queue, while the profile
//! layer's one fault injector strikes staging, the catalog, R2 and B2 in
//! turn with every fault class on the wire; a provider goes down for
//! longer than a re-drive, events arrive twice and out of order, and a
//! compress invocation is killed mid-write. Afterwards every archived
//! segment must be replicated on both providers, and recoveries to a target
//! time from R2 alone and from B2 alone must give exactly the rows
//! committed before it. `tests/tests/chaos.rs` runs a few rounds in
//! `make test`; `make soak` runs it for as long as asked.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::catalog::RecordStatus;
use shared::config::Config;
use shared::keys::staging_prefix;
use shared::provider::Provider;
use shared::replicate::invocation::handle_invocation;
use shared::replicate::Replicator;
use shared::retry::RequestLimits;
use shared::store::list_all;
use shared::wal::{SegmentSize, WalFileName};

use crate::archive::{backends, replicator};
use crate::pipeline::{
    drain_queue, recover_with, start_source, with, Source, CHECKSUM, DEAD_ENDPOINT,
};
use crate::profile::faults::NetFault;
use crate::profile::ProfileProxy;
use crate::standins::{Service, Stack, STAGING_BUCKET};

/// What one run did and found.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub rounds: u32,
    pub segments_archived: usize,
    /// By class, as the proxies counted them.
    pub faults_injected: BTreeMap<String, u64>,
    /// Deliveries the handler reported failed (then redelivered or re-driven).
    pub failed_deliveries: usize,
    pub redrives: u32,
    pub max_replication_lag: Duration,
    /// Archived segments missing, or not replicated on both providers.
    pub lost: usize,
    /// Recoveries whose data differed from what was committed.
    pub corrupt_served: usize,
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rounds:               {}", self.rounds)?;
        writeln!(f, "segments archived:    {}", self.segments_archived)?;
        let faults: Vec<String> = self
            .faults_injected
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        writeln!(
            f,
            "faults injected:      {} ({})",
            self.faults_injected.values().sum::<u64>(),
            faults.join(", ")
        )?;
        writeln!(
            f,
            "failed deliveries:    {} (redelivered or re-driven)",
            self.failed_deliveries
        )?;
        writeln!(f, "re-drives:            {}", self.redrives)?;
        writeln!(
            f,
            "max replication lag:  {:.1} s",
            self.max_replication_lag.as_secs_f64()
        )?;
        write!(
            f,
            "lost: {}, corrupt served: {}",
            self.lost, self.corrupt_served
        )
    }
}

/// The services the faults strike, each behind a proxy of its own.
struct Proxies(Vec<(Service, ProfileProxy)>);

impl Proxies {
    fn start() -> Self {
        let stack = Stack::shared();
        Proxies(
            [
                Service::Staging,
                Service::DynamoDb,
                Service::R2,
                Service::B2,
            ]
            .into_iter()
            .map(|service| (service, stack.private_proxy(service)))
            .collect(),
        )
    }

    fn get(&self, service: Service) -> &ProfileProxy {
        &self
            .0
            .iter()
            .find(|(s, _)| *s == service)
            .expect("every service has a proxy")
            .1
    }

    fn heal(&self) {
        for (_, proxy) in &self.0 {
            proxy.faults().clear();
            proxy.faults().come_back();
        }
    }

    fn injected(&self) -> BTreeMap<String, u64> {
        let mut total = BTreeMap::new();
        for (_, proxy) in &self.0 {
            for (class, n) in proxy.faults().injected() {
                *total.entry(class.to_owned()).or_insert(0) += n;
            }
        }
        total
    }
}

/// The faults of one round, two per write: each strikes the next request
/// the service gets, the second the one after.
fn wire_faults() -> [[NetFault; 2]; 3] {
    [
        [NetFault::INTERNAL_ERROR, NetFault::SLOW_DOWN],
        [NetFault::TOO_MANY_REQUESTS, NetFault::Reset],
        // The hang is longer than the request timeout: cut off, retried.
        [NetFault::Hang, NetFault::Truncate],
    ]
}

struct Run {
    source: Source,
    proxies: Proxies,
    replicator: Replicator,
    /// The same cluster through the shared (fault-free) proxies: how the
    /// harness looks at staging without spending a fault.
    clean: Config,
    next_row: u32,
    report: ChaosReport,
}

impl Run {
    /// Commits a few hundred rows and archives their segment.
    fn write(&mut self) {
        let (from, to) = (self.next_row, self.next_row + 299);
        self.next_row = to + 1;
        let pg = &self.source.pg;
        pg.sql(&format!(
            "INSERT INTO proof SELECT g, md5(g::text) FROM generate_series({from}, {to}) g"
        ));
        let last = pg.switch_wal();
        // PostgreSQL retries a failed archive_command by itself: a push
        // that ran out of attempts under a fault costs time, never data.
        pg.wait_archived(&last, Duration::from_secs(300));
    }

    /// Hands the queue to the compress handler (failures allowed).
    async fn deliver(&mut self) {
        self.report.failed_deliveries += drain_queue(&self.replicator, &self.clean, true).await;
    }

    /// One scheduled re-drive, of every staging object whatever its age.
    async fn redrive(&mut self) -> shared::replicate::RedriveReport {
        self.report.redrives += 1;
        let budget = RequestLimits::from_config(&self.source.config)
            .until(tokio::time::Instant::now() + Duration::from_secs(120));
        self.replicator
            .redrive(Duration::ZERO, &budget)
            .await
            .expect("re-drive")
    }

    /// Re-drives until staging is empty, healed.
    async fn settle(&mut self) {
        self.proxies.heal();
        for _ in 0..5 {
            let report = self.redrive().await;
            if report.backlog == 0 {
                return;
            }
            eprintln!("chaos: re-drive left a backlog: {report:?}");
        }
        panic!("staging did not empty after five re-drives with every service healthy");
    }

    async fn staged_objects(&self) -> Vec<shared::events::ObjectRef> {
        let staging = backends(&self.clean).await.staging;
        list_all(staging.as_ref(), &staging_prefix(&self.clean.cluster))
            .await
            .expect("listing staging")
            .into_iter()
            .map(|o| shared::events::ObjectRef {
                bucket: STAGING_BUCKET.into(),
                key: o.key,
            })
            .collect()
    }

    /// One round: every wire fault on every service, one write each.
    async fn wire_round(&mut self) {
        for service in [
            Service::Staging,
            Service::DynamoDb,
            Service::R2,
            Service::B2,
        ] {
            for faults in wire_faults() {
                for fault in faults {
                    self.proxies.get(service).faults().next(fault, 1);
                }
                self.write();
                self.deliver().await;
            }
        }
        self.settle().await;
    }

    /// B2 down across writes, deliveries and a re-drive; then back.
    async fn outage_round(&mut self) {
        self.proxies.get(Service::B2).faults().go_down();
        for _ in 0..3 {
            self.write();
            self.deliver().await;
        }
        let during = self.redrive().await;
        assert!(
            during.backlog > 0,
            "B2 down: files wait in staging: {during:?}"
        );
        self.proxies.get(Service::B2).faults().come_back();
        self.settle().await;
    }

    /// The same objects announced twice at once, in reverse order, then
    /// the queue's own events on top.
    async fn duplicate_round(&mut self) {
        self.write();
        self.write();
        let mut objects = self.staged_objects().await;
        objects.reverse();
        let event = direct_event(&objects);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (a, b) = tokio::join!(
            handle_invocation(&self.replicator, &event, Duration::from_secs(900), deadline),
            handle_invocation(&self.replicator, &event, Duration::from_secs(900), deadline),
        );
        for answer in [a, b] {
            if answer.is_err() {
                self.report.failed_deliveries += 1;
            }
        }
        self.deliver().await;
        self.settle().await;
    }

    /// A compress invocation dropped mid-work, as a killed Lambda is.
    async fn killed_round(&mut self) {
        self.write();
        self.write();
        let event = direct_event(&self.staged_objects().await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for cut_after_ms in [5, 40, 150] {
            let _ = tokio::time::timeout(
                Duration::from_millis(cut_after_ms),
                handle_invocation(&self.replicator, &event, Duration::from_secs(900), deadline),
            )
            .await;
        }
        self.deliver().await;
        self.settle().await;
    }

    /// Every segment from the first archived to the last is in the catalog,
    /// replicated, with a replica on each provider of the recorded size.
    async fn count_lost(&mut self) {
        let backends = backends(&self.clean).await;
        let records = shared::catalog::list_all(backends.catalog.as_ref(), &self.clean.cluster)
            .await
            .expect("catalog");
        let mut segments: Vec<_> = records
            .iter()
            .filter_map(|r| match r.file.wal() {
                Some(WalFileName::Segment(s)) => Some((s, r)),
                _ => None,
            })
            .collect();
        segments.sort_by_key(|(s, _)| *s);
        self.report.segments_archived = segments.len();
        let size = SegmentSize::new(16 << 20).expect("the default segment size");
        for pair in segments.windows(2) {
            if pair[0].0.next(size).ok() != Some(pair[1].0) {
                self.report.lost += 1;
                eprintln!("chaos: a gap after {}", pair[0].0);
            }
        }
        for (segment, record) in &segments {
            let replicated = record.status == RecordStatus::Replicated;
            let mut on_both = true;
            for provider in Provider::ALL {
                let store = backends.replicas.get(provider).expect("both providers");
                let target = record.target(provider);
                let present = match target {
                    Some(t) => store
                        .head(&t.key)
                        .await
                        .is_ok_and(|info| info.size == t.size),
                    None => false,
                };
                on_both &= present;
            }
            if !(replicated && on_both) {
                self.report.lost += 1;
                eprintln!(
                    "chaos: {segment} is {:?}, on both providers: {on_both}",
                    record.status
                );
            }
            if let Some(at) = record.replicated_at {
                let lag = Duration::from_millis(at.saturating_sub(record.staged_at));
                self.report.max_replication_lag = self.report.max_replication_lag.max(lag);
            }
        }
    }
}

fn direct_event(objects: &[shared::events::ObjectRef]) -> serde_json::Value {
    let records: Vec<_> = objects
        .iter()
        .map(|o| json!({"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": o.bucket}, "object": {"key": o.key}}}))
        .collect();
    json!({ "Records": records })
}

/// Runs rounds until `rounds` are done (or, with `for_at_least`, until that
/// much time has passed, whichever is later), then checks every segment and
/// recovers to the time after the last round from R2 alone and from B2
/// alone (one more write follows it).
pub async fn run(rounds: u32, for_at_least: Duration) -> ChaosReport {
    let started = Instant::now();
    let proxies = Proxies::start();
    let endpoints = [
        (
            "WALVAULT_STAGING_ENDPOINT",
            proxies.get(Service::Staging).endpoint(),
        ),
        (
            "WALVAULT_DYNAMODB_ENDPOINT",
            proxies.get(Service::DynamoDb).endpoint(),
        ),
        ("WALVAULT_R2_ENDPOINT", proxies.get(Service::R2).endpoint()),
        ("WALVAULT_B2_ENDPOINT", proxies.get(Service::B2).endpoint()),
        ("WALVAULT_REQUEST_TIMEOUT_SECS", "2".to_owned()),
        ("WALVAULT_MAX_ATTEMPTS", "4".to_owned()),
    ];
    let source = start_source("chaos", &endpoints);
    let clean = Stack::shared().config(source.config.cluster.as_str());
    let replicator = replicator(&source.config).await;
    let mut run = Run {
        source,
        proxies,
        replicator,
        clean,
        next_row: 1,
        report: ChaosReport::default(),
    };
    let mut target: Option<(String, String)> = None;
    while run.report.rounds < rounds || started.elapsed() < for_at_least {
        run.wire_round().await;
        run.outage_round().await;
        run.duplicate_round().await;
        run.killed_round().await;
        run.report.rounds += 1;
        // A moment after every row so far, before any later one: the last
        // round's, so that the recoveries replay every round's WAL.
        let pg = &run.source.pg;
        let expected = pg.sql(CHECKSUM);
        let at = pg.sql("SELECT now()::text");
        pg.sql("SELECT pg_sleep(1.1)");
        target = Some((at, expected));
    }
    // The last rows, so that the target lies inside the archive.
    run.write();
    run.deliver().await;
    run.settle().await;
    run.report.faults_injected = run.proxies.injected();
    run.count_lost().await;

    let (at, expected) = target.expect("at least one round");
    let settings = vec![
        format!("recovery_target_time = '{at}'"),
        "recovery_target_action = 'promote'".to_owned(),
    ];
    for dead in ["WALVAULT_B2_ENDPOINT", "WALVAULT_R2_ENDPOINT"] {
        let env = with(&run.source.env, &[(dead, DEAD_ENDPOINT)]);
        let (recovered, log) = recover_with(run.source.backup.clone(), env, settings.clone()).await;
        if recovered != expected {
            run.report.corrupt_served += 1;
            eprintln!(
                "chaos: recovery without {dead} gave {recovered}, expected {expected}:\n{log}"
            );
        }
    }
    run.report
}
