//! `walvault push %p`: PostgreSQL's archive_command.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use shared::archive::push::Pusher;
use shared::archive::spool::Spool;
use shared::backends::Backends;
use shared::config::Config;
use shared::error::chain;
use shared::retry::RequestLimits;

use super::host_name;
use walvault::exit::{push_exit, PUSH_FAILED};

pub(crate) async fn push(config: Config, path: &Path) -> u8 {
    let started = Instant::now();
    let backends = match Backends::connect(&config).await {
        Ok(backends) => backends,
        Err(e) => {
            eprintln!("walvault push: FAILED (exit {PUSH_FAILED}): {}", chain(&e));
            return PUSH_FAILED;
        }
    };
    let pusher = Arc::new(Pusher {
        cluster: config.cluster.clone(),
        staging: backends.staging,
        catalog: backends.catalog,
        pinned_system_identifier: config.system_identifier,
        host: host_name(),
        deadline: config.push_deadline,
        limits: RequestLimits::from_config(&config),
        spool: Spool::new(&config.spool_dir),
        concurrency: config.push_concurrency,
    });
    let result = pusher.push(path).await;
    let code = push_exit(&result);
    match result {
        Ok(outcome) => eprintln!(
            "walvault push: {} {outcome:?} in {} ms",
            path.display(),
            started.elapsed().as_millis()
        ),
        Err(e) => eprintln!("walvault push: FAILED (exit {code}): {}", chain(&e)),
    }
    code
}
