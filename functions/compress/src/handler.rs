use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent};

/// Logs the staging objects each message announces. Replication arrives
/// with the compress issue; until then every message is acknowledged.
pub(crate) async fn handle(event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    for message in &event.payload.records {
        let id = message.message_id.as_deref().unwrap_or("<no id>");
        let body = message.body.as_deref().unwrap_or("");
        tracing::info!(
            message_id = id,
            body_bytes = body.len(),
            "staging notification received"
        );
    }
    Ok(SqsBatchResponse::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acknowledges_the_sample_sqs_event() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/sqs-s3-object-created.json"))
                .expect("fixture parses");
        assert_eq!(event.records.len(), 1);
        let response = handle(LambdaEvent::new(event, Default::default()))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
}
