use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::catalog::now_millis;
use shared::retention::sweep::Sweeper;

/// Time kept back from the Lambda deadline to report and return.
const MARGIN: Duration = Duration::from_secs(15);

/// Runs one sweep. `{"dry_run": true}` in the event's detail forces a dry
/// run whatever the configuration says.
pub(crate) async fn handle(
    sweeper: &Sweeper,
    configured_dry_run: bool,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let schedule: EventBridgeEvent<Value> = serde_json::from_value(event.payload)?;
    let dry_run = configured_dry_run || wants_dry_run(&schedule.detail);
    let deadline = instant_of(event.context.deadline)
        .checked_sub(MARGIN)
        .unwrap_or_else(Instant::now);
    let report = sweeper.sweep(now_millis(), dry_run, deadline).await?;
    tracing::info!(
        planned = report.planned,
        deleted = report.catalog_removed,
        errors = report.errors.len(),
        dry_run,
        "retention sweep done"
    );
    Ok(serde_json::to_value(report)?)
}

fn wants_dry_run(detail: &Value) -> bool {
    detail
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Lambda gives its deadline in Unix milliseconds.
fn instant_of(deadline_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
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

    #[test]
    fn the_deadline_is_read_from_unix_milliseconds() {
        let in_a_minute = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 60_000;
        let left = instant_of(in_a_minute).saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(55) && left <= Duration::from_secs(60),
            "{left:?}"
        );
        assert!(instant_of(0) <= Instant::now() + Duration::from_millis(1));
    }
}
