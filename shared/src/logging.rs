//! Log output of the Lambda functions: one JSON object per line, which
//! CloudWatch Logs indexes; the filter comes from `RUST_LOG` (default
//! `info`). The EMF metric lines are written by [`crate::metrics`].

pub fn init_lambda() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
}
