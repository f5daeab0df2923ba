//! The compress function: raw WAL files announced by S3 ObjectCreated
//! events (through SQS, directly, or via EventBridge) are verified,
//! compressed, written to every replica and recorded in the catalog; a
//! scheduled event re-drives stuck staging objects.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::backends::Backends;
use shared::config::Config;
use shared::replicate::Replicator;
use shared::retry::RequestLimits;

mod handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::logging::init_lambda();
    // Once per cold start: configuration, credentials and clients.
    let config = Config::load(None)?;
    let replicator = Arc::new(Replicator::new(
        config.cluster.clone(),
        config.staging.bucket.clone(),
        Backends::connect(&config).await?,
        config.zstd_level,
        RequestLimits::from_config(&config),
    )?);
    let redrive_after = config.redrive_after;
    run(service_fn(move |event: LambdaEvent<Value>| {
        let replicator = Arc::clone(&replicator);
        async move { handler::handle(&replicator, redrive_after, event).await }
    }))
    .await
}
