//! The names the Rust code and the CDK app must agree on — metric names
//! and their dimension, the catalog's key schema and attributes, the
//! object layout, the settings — as one JSON document. `infra/contract.json`
//! is generated from here (`make contract`; a test fails when it is stale)
//! and the CDK app takes every such name from it, so a name changed here
//! either reaches the alarms and policies or fails the infra's tests.

use serde_json::{json, Value};

use crate::catalog::{attr, RecordStatus};
use crate::config::{DEFAULT_REQUEST_TIMEOUT_SECS, ENV_PREFIX, SETTINGS};
use crate::events::ANSWER_MARGIN;
use crate::keys::layout_templates;
use crate::metrics::{Metric, DIMENSION, NAMESPACE};
use crate::provider::Provider;

pub fn contract() -> Value {
    let layout: serde_json::Map<String, Value> = layout_templates()
        .into_iter()
        .map(|(name, template)| (name.to_owned(), Value::String(template)))
        .collect();
    json!({
        "metrics": {
            "namespace": NAMESPACE,
            "dimension": DIMENSION,
            "names": Metric::ALL.iter().map(Metric::name).collect::<Vec<_>>(),
        },
        "catalog": {
            "partition_key": attr::CLUSTER,
            "sort_key": attr::FILE_NAME,
            "attributes": attr::ALL,
            "replica_attributes": Provider::ALL.iter().map(Provider::as_str).collect::<Vec<_>>(),
            "statuses": RecordStatus::ALL.iter().map(RecordStatus::as_str).collect::<Vec<_>>(),
        },
        "layout": layout,
        "providers": Provider::ALL.iter().map(|p| json!({
            "name": p.as_str(),
            "setting_infix": p.setting_infix(),
        })).collect::<Vec<_>>(),
        "settings": SETTINGS.iter().map(|s| format!("{ENV_PREFIX}{s}")).collect::<Vec<_>>(),
        // What the functions' timeouts must leave room for: the answer
        // margin after the work, and request attempts within the work.
        "budgets": {
            "answer_margin_secs": ANSWER_MARGIN.as_secs(),
            "default_request_timeout_secs": DEFAULT_REQUEST_TIMEOUT_SECS,
        },
    })
}

/// The contract as `infra/contract.json` holds it.
pub fn contract_file() -> String {
    let mut text = serde_json::to_string_pretty(&contract()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/contract.json");

    /// `make contract` (WALVAULT_UPDATE_CONTRACT=1) rewrites the file.
    #[test]
    fn the_infra_contract_file_is_current() {
        let expected = contract_file();
        if std::env::var_os("WALVAULT_UPDATE_CONTRACT").is_some() {
            std::fs::write(PATH, &expected).expect("writing infra/contract.json");
        }
        let on_disk = std::fs::read_to_string(PATH).unwrap_or_default();
        assert!(
            on_disk == expected,
            "infra/contract.json is stale: run `make contract` and let the infra tests show what else must change"
        );
    }
}
