//! The retention function: the scheduled sweep of R2, B2 and the catalog.

use lambda_runtime::{run, service_fn, Error};

mod handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();
    run(service_fn(handler::handle)).await
}
