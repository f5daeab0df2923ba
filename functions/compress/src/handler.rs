use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::catalog::now_millis;
use shared::compress::handle_invocation;
use shared::events::invocation_deadline;
use shared::replicate::Replicator;

pub(crate) async fn handle(
    replicator: &Replicator,
    redrive_after: Duration,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let deadline = invocation_deadline(event.context.deadline, now_millis());
    Ok(handle_invocation(replicator, &event.payload, redrive_after, deadline).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use lambda_runtime::Context;
    use shared::config::Config;
    use shared::store::build_sdk_config;

    /// Stores that cannot be reached: what the handler does without them.
    async fn unreachable_replicator() -> Replicator {
        let dead = "http://127.0.0.1:9";
        let env: BTreeMap<String, String> = [
            ("CLUSTER", "demo"),
            ("STAGING_BUCKET", "walvault-staging"),
            ("STAGING_ENDPOINT", dead),
            ("CATALOG_TABLE", "walvault-catalog"),
            ("DYNAMODB_ENDPOINT", dead),
            ("R2_ENDPOINT", dead),
            ("R2_BUCKET", "walvault-r2"),
            ("R2_ACCESS_KEY_ID", "id"),
            ("R2_SECRET_ACCESS_KEY", "secret"),
            ("B2_ENDPOINT", dead),
            ("B2_BUCKET", "walvault-b2"),
            ("B2_ACCESS_KEY_ID", "id"),
            ("B2_SECRET_ACCESS_KEY", "secret"),
            ("B2_REGION", "eu-central-003"),
            ("REQUEST_TIMEOUT_SECS", "1"),
            ("MAX_ATTEMPTS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (format!("WALVAULT_{k}"), v.to_owned()))
        .collect();
        let config = Config::from_sources(&env, &BTreeMap::new()).unwrap();
        let sdk = build_sdk_config(&config).await;
        Replicator::from_config(&sdk, &config).unwrap()
    }

    fn event(payload: Value) -> LambdaEvent<Value> {
        let mut context = Context::default();
        context.deadline = shared::catalog::now_millis() + 60_000;
        LambdaEvent::new(payload, context)
    }

    #[tokio::test]
    async fn an_unreachable_staging_bucket_fails_the_sample_message_for_retry() {
        let replicator = Arc::new(unreachable_replicator().await);
        let payload: Value =
            serde_json::from_str(include_str!("../../../events/sqs-s3-object-created.json"))
                .unwrap();
        let response = handle(&replicator, Duration::from_secs(900), event(payload))
            .await
            .unwrap();
        assert_eq!(
            response["batchItemFailures"][0]["itemIdentifier"],
            "19dd0b57-b21e-4ac1-bd88-01bbb068cb78"
        );
    }

    #[tokio::test]
    async fn a_test_event_is_acknowledged_without_any_store() {
        let replicator = unreachable_replicator().await;
        let payload: Value =
            serde_json::from_str(include_str!("../../../events/sqs-s3-test-event.json")).unwrap();
        let response = handle(&replicator, Duration::from_secs(900), event(payload))
            .await
            .unwrap();
        assert_eq!(response["batchItemFailures"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn an_unknown_event_is_an_error() {
        let replicator = unreachable_replicator().await;
        let err = handle(
            &replicator,
            Duration::from_secs(900),
            event(serde_json::json!({"hello": 1})),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("not an event"), "{err}");
    }
}
