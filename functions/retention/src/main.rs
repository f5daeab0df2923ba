//! The retention function: on its schedule, deletes from every provider
//! and the catalog what point-in-time recovery inside the window does not
//! need.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::backends::Backends;
use shared::config::Config;
use shared::retention::plan::Rules;
use shared::retention::sweep::Sweeper;
use shared::retry::RequestLimits;

mod handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::logging::init_lambda();
    // Once per cold start; this function's own keys may delete.
    let config = Config::load(None)?;
    let backends = Backends::connect(&config).await?;
    backends.replicas.require_all()?;
    let sweeper = Arc::new(Sweeper {
        cluster: config.cluster.clone(),
        catalog: backends.catalog,
        replicas: backends.replicas,
        rules: Rules::from_config(&config),
        max_deletes: config.retention_max_deletes,
        limits: RequestLimits::from_config(&config),
    });
    let dry_run = config.retention_dry_run;
    run(service_fn(move |event: LambdaEvent<Value>| {
        let sweeper = Arc::clone(&sweeper);
        async move { handler::handle(&sweeper, dry_run, event).await }
    }))
    .await
}
