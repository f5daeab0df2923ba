//! `make soak`: the chaos run of `tests/tests/chaos.rs` for as long as
//! asked (`SOAK_MINUTES`, 30 by default): rounds of every wire fault on
//! staging, the catalog, R2 and B2, a B2 outage past a re-drive, duplicate
//! and reordered events, and killed compress invocations, while PostgreSQL
//! keeps writing; then every segment checked on both providers and a
//! recovery to a time mid-run from each provider alone. Prints the figures
//! on stderr (stdout carries the compress handler's EMF lines).

use std::time::{Duration, Instant};

fn main() {
    let minutes: u64 = std::env::args()
        .nth(1)
        .map(|m| m.parse().expect("SOAK_MINUTES: a whole number of minutes"))
        .unwrap_or(30);
    let runtime = walvault_tests::example_runtime();
    let started = Instant::now();
    eprintln!("walvault soak: {minutes} minutes of chaos rounds …");
    let report = runtime.block_on(walvault_tests::chaos::run(
        1,
        Duration::from_secs(minutes * 60),
    ));
    eprintln!(
        "walvault soak: {:.1} minutes in all (rounds, final checks, two recoveries)\n{report}",
        started.elapsed().as_secs_f64() / 60.0
    );
    if report.lost > 0 || report.corrupt_served > 0 {
        std::process::exit(1);
    }
}
