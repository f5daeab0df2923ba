//! The retention function: on its schedule, deletes from every provider
//! and the catalog what point-in-time recovery inside the window does not
//! need, then verifies (and repairs) what is kept in the time left.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use shared::backends::Backends;
use shared::config::Config;
use shared::retention::sweep::Sweeper;
use shared::retry::RequestLimits;
use shared::seal::Identities;
use shared::verify::Verifier;

mod handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::logging::init_lambda();
    // Once per cold start; this function's own keys may delete.
    let config = Config::load(None)?;
    let backends = Backends::connect(&config).await?;
    backends.replicas.require_all()?;
    let sweeper = Arc::new(Sweeper::from_config(&config, &backends));
    let verify = config.verify_after_sweep.then(|| {
        let verifier = Verifier {
            cluster: config.cluster.clone(),
            catalog: Arc::clone(&backends.catalog),
            replicas: backends.replicas.clone(),
            limits: RequestLimits::from_config(&config),
            // Holds public recipients at most: sealed copies are checked
            // by their tag and size, and repaired only by a host.
            identities: Identities::default(),
        };
        Arc::new(handler::AfterSweep {
            verifier,
            concurrency: config.verify_concurrency,
        })
    });
    let dry_run = config.retention_dry_run;
    run(service_fn(move |event: LambdaEvent<Value>| {
        let (sweeper, verify) = (Arc::clone(&sweeper), verify.clone());
        async move { handler::handle(&sweeper, verify.as_deref(), dry_run, event).await }
    }))
    .await
}
