//! One invocation of the compress function: the event in, the Lambda
//! response out. SQS batches answer with the failed message ids only
//! (`ReportBatchItemFailures`); other events fail as a whole so that Lambda
//! retries them.

use std::time::Duration;

use serde_json::{json, Value};
use std::time::Instant;

use crate::events::{parse_invocation, EventError, Invocation, ObjectRef};
use crate::replicate::{ReplicateError, Replicator};

#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("{failed} of {total} objects failed: {}", errors.join("; "))]
    Objects {
        failed: usize,
        total: usize,
        errors: Vec<String>,
    },
    #[error(transparent)]
    Redrive(ReplicateError),
}

/// Handles one invocation. `deadline` is when the Lambda will be stopped;
/// the re-drive sweep leaves before it.
pub async fn handle_invocation(
    replicator: &Replicator,
    event: &Value,
    redrive_after: Duration,
    deadline: Instant,
) -> Result<Value, InvocationError> {
    match parse_invocation(event)? {
        Invocation::Sqs(messages) => {
            let mut failures = Vec::new();
            // One message at a time: a 16 MiB segment, its compressed copy
            // and zstd's context must fit a small Lambda.
            for message in messages {
                let ok = match &message.objects {
                    Err(e) => {
                        tracing::error!(message_id = %message.message_id, error = %e, "malformed message");
                        false
                    }
                    Ok(objects) => process_all(replicator, objects).await.is_empty(),
                };
                if !ok {
                    failures.push(json!({ "itemIdentifier": message.message_id }));
                }
            }
            Ok(json!({ "batchItemFailures": failures }))
        }
        Invocation::Direct(objects) => {
            let errors = process_all(replicator, &objects).await;
            if errors.is_empty() {
                Ok(json!({ "processed": objects.len() }))
            } else {
                Err(InvocationError::Objects {
                    failed: errors.len(),
                    total: objects.len(),
                    errors,
                })
            }
        }
        Invocation::Redrive => {
            // Leave time to answer before Lambda's own deadline.
            let stop = deadline
                .checked_sub(Duration::from_secs(10))
                .unwrap_or(deadline);
            let report = replicator
                .redrive(redrive_after, stop)
                .await
                .map_err(InvocationError::Redrive)?;
            tracing::info!(?report, "re-drive finished");
            Ok(serde_json::to_value(report).unwrap_or(Value::Null))
        }
    }
}

/// Processes objects in order; returns the errors.
async fn process_all(replicator: &Replicator, objects: &[ObjectRef]) -> Vec<String> {
    let mut errors = Vec::new();
    for object in objects {
        match replicator.process(object).await {
            // Corrupt inputs and conflicts are recorded; retrying cannot help.
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}
