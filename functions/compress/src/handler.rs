use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;
use shared::clock::now_millis;
use shared::events::work_deadline;
use shared::replicate::invocation::handle_invocation;
use shared::replicate::Replicator;

pub(crate) async fn handle(
    replicator: &Replicator,
    redrive_after: Duration,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let deadline = work_deadline(event.context.deadline, now_millis());
    Ok(handle_invocation(replicator, &event.payload, redrive_after, deadline).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use lambda_runtime::Context;
    use shared::backends::{Backends, Replica, Replicas};
    use shared::catalog::MemoryCatalog;
    use shared::codec::CompressionLevel;
    use shared::fault::Fault;
    use shared::provider::Provider;
    use shared::retry::RequestLimits;
    use shared::store::{FaultyStore, MemoryStore, ObjectStore, Operation};

    /// A replicator on in-memory stores whose staging bucket fails every
    /// read: what the handler answers without it.
    fn replicator_with_failing_staging() -> Replicator {
        let staging = FaultyStore::new(MemoryStore::new("staging"));
        staging.fail_always(Operation::Get, Fault::Transient);
        let replicas = Provider::ALL
            .map(|provider| Replica {
                provider,
                store: Arc::new(MemoryStore::new(provider.as_str())) as Arc<dyn ObjectStore>,
            })
            .to_vec();
        Replicator::new(
            "demo".parse().unwrap(),
            "walvault-staging".into(),
            Backends {
                staging: Arc::new(staging),
                catalog: Arc::new(MemoryCatalog::default()),
                replicas: Replicas::new(replicas),
            },
            CompressionLevel::default(),
            RequestLimits {
                timeout: Duration::from_secs(1),
                attempts: 2,
            },
        )
        .unwrap()
    }

    fn event(payload: Value) -> LambdaEvent<Value> {
        let mut context = Context::default();
        context.deadline = now_millis() + 60_000;
        LambdaEvent::new(payload, context)
    }

    fn sample(name: &str) -> Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_failing_staging_bucket_fails_the_sample_message_for_redelivery() {
        let replicator = replicator_with_failing_staging();
        let response = handle(
            &replicator,
            Duration::from_secs(900),
            event(sample("sqs-s3-object-created.json")),
        )
        .await
        .unwrap();
        assert_eq!(
            response["batchItemFailures"][0]["itemIdentifier"],
            "19dd0b57-b21e-4ac1-bd88-01bbb068cb78"
        );
    }

    #[tokio::test]
    async fn a_test_event_is_acknowledged_without_any_store() {
        let replicator = replicator_with_failing_staging();
        let response = handle(
            &replicator,
            Duration::from_secs(900),
            event(sample("sqs-s3-test-event.json")),
        )
        .await
        .unwrap();
        assert_eq!(response["batchItemFailures"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn an_unknown_event_is_an_error() {
        let replicator = replicator_with_failing_staging();
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
