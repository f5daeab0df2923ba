//! The compress function: raw WAL files announced by S3 ObjectCreated
//! events (through SQS, directly, or via EventBridge) are verified,
//! compressed, written to every replica and recorded in the catalog; a
//! scheduled event re-drives stuck staging objects.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::backends::Backends;
use shared::clock::now_millis;
use shared::config::Config;
use shared::error::chain;
use shared::replicate::Replicator;
use shared::retry::RequestLimits;
use shared::seal::state::check_at_start;

mod handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::logging::init_lambda();
    // Once per cold start: configuration, credentials and clients.
    let config = Config::load(None)?;
    let limits = RequestLimits::from_config(&config);
    let replicator = Replicator::new(
        config.cluster.clone(),
        config.staging.bucket.clone(),
        Backends::connect(&config).await?,
        config.zstd_level,
        limits,
    )?;
    // Refuses to start with no recipients for a cluster the catalog says
    // is sealed; the cluster's tag key when sealing.
    let sealing = check_at_start(
        replicator.backends.catalog.as_ref(),
        &config.cluster,
        &config.encryption,
        &limits.one_request(),
        now_millis(),
    )
    .await
    // The reason in words, not the error's debug form.
    .map_err(|e| Error::from(chain(&e)))?;
    let replicator = Arc::new(replicator.sealing_to(sealing));
    let redrive_after = config.redrive_after;
    run(service_fn(move |event: LambdaEvent<Value>| {
        let replicator = Arc::clone(&replicator);
        async move { handler::handle(&replicator, redrive_after, event).await }
    }))
    .await
}
