//! The retention function: on its schedule, deletes from R2, B2 and the
//! catalog what point-in-time recovery inside the window does not need.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::config::Config;
use shared::retention::sweep::Sweeper;
use shared::secrets::resolve_replica_credentials;
use shared::store::build_sdk_config;

mod handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
    // Once per cold start; this function's own keys may delete.
    let mut config = Config::load(None)?;
    let sdk = build_sdk_config(&config).await;
    resolve_replica_credentials(&sdk, &mut config).await?;
    let sweeper = Arc::new(Sweeper::from_config(&sdk, &config)?);
    let dry_run = config.retention_dry_run;
    run(service_fn(move |event: LambdaEvent<Value>| {
        let sweeper = Arc::clone(&sweeper);
        async move { handler::handle(&sweeper, dry_run, event).await }
    }))
    .await
}
