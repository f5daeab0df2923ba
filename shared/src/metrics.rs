//! CloudWatch Embedded Metric Format: one JSON line per event on stdout,
//! which Lambda ships to CloudWatch Logs and CloudWatch turns into metrics.
//! The same line is the structured log of that event.

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "walvault";

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

/// One EMF record: metrics under a `Cluster` dimension, plus properties
/// that are logged but not turned into metrics.
#[derive(Debug, Clone)]
pub struct MetricRecord {
    cluster: String,
    metrics: Vec<(&'static str, f64, Unit)>,
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

    pub fn metric(mut self, name: &'static str, value: f64, unit: Unit) -> Self {
        self.metrics.push((name, value, unit));
        self
    }

    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The EMF JSON line, stamped with `timestamp_ms`.
    pub fn to_line(&self, timestamp_ms: u64) -> String {
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut root = self.properties.clone();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Cluster"]],
                    "Metrics": definitions,
                }]
            }),
        );
        root.insert("Cluster".into(), Value::String(self.cluster.clone()));
        for (name, value, _) in &self.metrics {
            root.insert((*name).to_owned(), json!(value));
        }
        Value::Object(root).to_string()
    }

    /// Writes the line to stdout, where Lambda's log agent picks it up.
    pub fn emit(&self) {
        println!("{}", self.to_line(crate::catalog::now_millis()));
    }

    pub fn value(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_embedded_metric_format() {
        let line = MetricRecord::new("orders")
            .metric("FilesArchived", 1.0, Unit::Count)
            .metric("RawBytes", 16777216.0, Unit::Bytes)
            .property("file", "000000010000000000000001")
            .to_line(1_700_000_000_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "walvault");
        assert_eq!(directive["Dimensions"], json!([["Cluster"]]));
        assert_eq!(
            directive["Metrics"][1],
            json!({"Name": "RawBytes", "Unit": "Bytes"})
        );
        assert_eq!(v["Cluster"], "orders");
        assert_eq!(v["FilesArchived"], 1.0);
        assert_eq!(v["file"], "000000010000000000000001");
    }
}
