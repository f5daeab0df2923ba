//! The retention function: on its schedule, deletes from every provider
//! and the catalog what point-in-time recovery inside the window does not
//! need.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::backends::Backends;
use shared::config::Config;
use shared::retention::sweep::Sweeper;

mod handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::logging::init_lambda();
    // Once per cold start; this function's own keys may delete.
    let config = Config::load(None)?;
    let backends = Backends::connect(&config).await?;
    backends.replicas.require_all()?;
    let sweeper = Arc::new(Sweeper::from_config(&config, &backends));
    let dry_run = config.retention_dry_run;
    run(service_fn(move |event: LambdaEvent<Value>| {
        let sweeper = Arc::clone(&sweeper);
        async move { handler::handle(&sweeper, dry_run, event).await }
    }))
    .await
}
