//! CloudWatch Embedded Metric Format: one JSON line per event on stdout,
//! which Lambda ships to CloudWatch Logs and CloudWatch turns into metrics.
//! The same line is the structured log of that event. The metric names
//! are part of the contract with the infra's alarms ([`crate::contract`]).

use serde_json::{json, Map, Value};

use crate::provider::Provider;

pub const NAMESPACE: &str = "walvault";
/// The one dimension every metric carries: the cluster name.
pub const DIMENSION: &str = "Cluster";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
}

impl Unit {
    fn as_str(&self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// Every metric walvault emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Compress: files that reached every replica.
    FilesArchived,
    RawBytes,
    CompressedBytes,
    /// Compress: from staging to the last replica, per file.
    ReplicationLag,
    /// Compress: failed writes to R2.
    R2Failures,
    /// Compress: failed writes to B2.
    B2Failures,
    /// Different content under an archived name, refused.
    Conflicts,
    /// Staging objects that failed verification.
    CorruptInputs,
    /// Compress: an announced staging object was gone before any
    /// delivery replicated it (deleted by hand, or by a rule): its bytes
    /// may exist nowhere.
    VanishedFiles,
    /// Re-drive: this cluster's staging objects still waiting after it ran.
    StagingBacklog,
    /// Re-drive: the age of the oldest of them (0 when none waits). Only
    /// replication removes a staging object, so this grows for as long as
    /// replication fails: the alarm calls a human long before anything is
    /// at risk.
    OldestStagingAge,
    RetentionDeleted,
    RetentionBytesFreed,
    RetentionErrors,
    /// Retention found no base backup to anchor on.
    RetentionNoBaseBackup,
    /// The scheduled verify: things wrong and not repaired (copies
    /// missing or damaged, orphans, WAL breaks, files recorded corrupt).
    VerifyProblems,
    /// The scheduled verify: replicas it copied from the other provider.
    VerifyRepaired,
    /// The scheduled verify: copies it could not check (no answer, or the
    /// run's time ran out).
    VerifyUnchecked,
}

impl Metric {
    pub const ALL: [Metric; 18] = [
        Metric::FilesArchived,
        Metric::RawBytes,
        Metric::CompressedBytes,
        Metric::ReplicationLag,
        Metric::R2Failures,
        Metric::B2Failures,
        Metric::Conflicts,
        Metric::CorruptInputs,
        Metric::VanishedFiles,
        Metric::StagingBacklog,
        Metric::OldestStagingAge,
        Metric::RetentionDeleted,
        Metric::RetentionBytesFreed,
        Metric::RetentionErrors,
        Metric::RetentionNoBaseBackup,
        Metric::VerifyProblems,
        Metric::VerifyRepaired,
        Metric::VerifyUnchecked,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Metric::FilesArchived => "FilesArchived",
            Metric::RawBytes => "RawBytes",
            Metric::CompressedBytes => "CompressedBytes",
            Metric::ReplicationLag => "ReplicationLag",
            Metric::R2Failures => "R2Failures",
            Metric::B2Failures => "B2Failures",
            Metric::Conflicts => "Conflicts",
            Metric::CorruptInputs => "CorruptInputs",
            Metric::VanishedFiles => "VanishedFiles",
            Metric::StagingBacklog => "StagingBacklog",
            Metric::OldestStagingAge => "OldestStagingAge",
            Metric::RetentionDeleted => "RetentionDeleted",
            Metric::RetentionBytesFreed => "RetentionBytesFreed",
            Metric::RetentionErrors => "RetentionErrors",
            Metric::RetentionNoBaseBackup => "RetentionNoBaseBackup",
            Metric::VerifyProblems => "VerifyProblems",
            Metric::VerifyRepaired => "VerifyRepaired",
            Metric::VerifyUnchecked => "VerifyUnchecked",
        }
    }

    pub fn unit(&self) -> Unit {
        match self {
            Metric::RawBytes | Metric::CompressedBytes | Metric::RetentionBytesFreed => Unit::Bytes,
            Metric::ReplicationLag | Metric::OldestStagingAge => Unit::Milliseconds,
            _ => Unit::Count,
        }
    }

    /// Failed replica writes on `provider`.
    pub fn replica_failures(provider: Provider) -> Metric {
        match provider {
            Provider::R2 => Metric::R2Failures,
            Provider::B2 => Metric::B2Failures,
        }
    }
}

/// One EMF record: metrics under the cluster dimension, plus properties
/// that are logged but not turned into metrics.
#[derive(Debug)]
pub struct MetricRecord {
    cluster: String,
    metrics: Vec<(Metric, f64)>,
    properties: Map<String, Value>,
}

impl MetricRecord {
    pub fn new(cluster: &str) -> Self {
        MetricRecord {
            cluster: cluster.to_owned(),
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    /// Adds `value` to `metric` in this record.
    pub fn add(&mut self, metric: Metric, value: f64) -> &mut Self {
        match self.metrics.iter_mut().find(|(m, _)| *m == metric) {
            Some((_, total)) => *total += value,
            None => self.metrics.push((metric, value)),
        }
        self
    }

    pub fn property(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The EMF JSON line, stamped with `timestamp_ms`.
    pub fn to_line(&self, timestamp_ms: u64) -> String {
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|(metric, _)| json!({"Name": metric.name(), "Unit": metric.unit().as_str()}))
            .collect();
        let mut root = self.properties.clone();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": definitions,
                }]
            }),
        );
        root.insert(DIMENSION.into(), Value::String(self.cluster.clone()));
        for (metric, value) in &self.metrics {
            root.insert(metric.name().to_owned(), json!(value));
        }
        Value::Object(root).to_string()
    }

    /// Writes the line to stdout, where Lambda's log agent picks it up.
    pub fn emit(&self) {
        println!("{}", self.to_line(crate::clock::now_millis()));
    }

    pub fn value(&self, metric: Metric) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_embedded_metric_format() {
        let mut record = MetricRecord::new("orders");
        record
            .add(Metric::FilesArchived, 1.0)
            .add(Metric::RawBytes, 16777216.0)
            .add(Metric::FilesArchived, 1.0)
            .property("file", "000000010000000000000001");
        let v: Value = serde_json::from_str(&record.to_line(1_700_000_000_000)).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "walvault");
        assert_eq!(directive["Dimensions"], json!([["Cluster"]]));
        assert_eq!(
            directive["Metrics"][1],
            json!({"Name": "RawBytes", "Unit": "Bytes"})
        );
        assert_eq!(v["Cluster"], "orders");
        assert_eq!(v["FilesArchived"], 2.0);
        assert_eq!(v["file"], "000000010000000000000001");
    }

    #[test]
    fn every_metric_has_a_distinct_name_and_each_provider_its_failure_metric() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(Metric::name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
        for provider in Provider::ALL {
            assert!(Metric::replica_failures(provider)
                .name()
                .starts_with(provider.setting_infix()));
        }
    }
}
