use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::clock::now_millis;
use shared::error::chain;
use shared::events::work_deadline;
use shared::retention::sweep::Sweeper;
use shared::status::keep::{rebuild, record_verify, RetentionRun, VerifyRun};
use shared::status::StatusError;
use shared::verify::Verifier;

/// The time kept after the verify to record what it found.
const RECORD_VERIFY_RESERVE: std::time::Duration = std::time::Duration::from_secs(5);

/// The verify that follows a sweep (`WALVAULT_VERIFY_AFTER_SWEEP`).
pub(crate) struct AfterSweep {
    pub verifier: Verifier,
    pub concurrency: usize,
}

/// Runs one sweep, then the verify in the time left (not after a dry run).
/// `{"dry_run": true}` in the event's detail forces a dry run whatever the
/// configuration says. The answer is the sweep's report, with the
/// verify's summary under `verify`.
pub(crate) async fn handle(
    sweeper: &Sweeper,
    verify: Option<&AfterSweep>,
    configured_dry_run: bool,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let schedule: EventBridgeEvent<Value> = serde_json::from_value(event.payload)?;
    let dry_run = configured_dry_run || wants_dry_run(&schedule.detail);
    let now = now_millis();
    let deadline = work_deadline(event.context.deadline, now);
    let report = sweeper.sweep(now, dry_run, deadline).await?;
    tracing::info!(
        planned = report.planned,
        deleted = report.catalog_removed,
        errors = report.errors.len(),
        dry_run,
        "retention sweep done"
    );
    let retention = RetentionRun::of(&report, sweeper.rules.window_ms, now);
    let mut answer = serde_json::to_value(report)?;
    // The sweep's work stands whatever happens to the summary; a failure
    // shows in `walvault status` as a stale retention run. Rebuilt before
    // the verify, which may run until the deadline.
    let budget = sweeper.limits.until(deadline);
    let catalog = sweeper.catalog.as_ref();
    let rebuilt = rebuild(catalog, &sweeper.cluster, retention, now, &budget).await;
    answer["summary"] = kept_or_why("rebuilt", rebuilt);
    if let (Some(verify), false) = (verify, dry_run) {
        let verified = verify
            .verifier
            .scheduled(
                verify.concurrency,
                deadline
                    .checked_sub(RECORD_VERIFY_RESERVE)
                    .unwrap_or(deadline),
            )
            .await;
        answer["verify"] = serde_json::to_value(&verified)?;
        let run = VerifyRun::of(&verified, now_millis());
        let recorded = record_verify(catalog, &sweeper.cluster, run, &budget).await;
        answer["verify"]["summary"] = kept_or_why("recorded", recorded);
    }
    Ok(answer)
}

/// `done`, or why not (logged).
fn kept_or_why(done: &str, result: Result<(), StatusError>) -> Value {
    match result {
        Ok(()) => done.into(),
        Err(e) => {
            tracing::warn!(error = %chain(&e), "could not keep the status summary");
            format!("not {done}: {}", chain(&e)).into()
        }
    }
}

fn wants_dry_run(detail: &Value) -> bool {
    detail
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_schedule_event_asks_for_a_real_sweep_and_detail_can_ask_for_a_dry_run() {
        let event: EventBridgeEvent<Value> =
            serde_json::from_str(include_str!("../../../events/retention-schedule.json"))
                .expect("fixture parses");
        assert_eq!(event.detail_type, "Scheduled Event");
        assert!(!wants_dry_run(&event.detail));
        let dry: EventBridgeEvent<Value> =
            serde_json::from_str(include_str!("../../../events/retention-dry-run.json"))
                .expect("fixture parses");
        assert!(wants_dry_run(&dry.detail));
    }
}
