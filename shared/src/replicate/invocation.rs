//! One invocation of the compress function: the event in, the Lambda
//! response out. SQS batches answer with the failed message ids only
//! (`ReportBatchItemFailures`), so SQS redelivers just those (and moves a
//! message that keeps failing to the dead-letter queue); other events fail
//! as a whole so that Lambda retries them.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::{ReplicateError, Replicator};
use crate::clock::now_millis;
use crate::error::{chain, Retryable};
use crate::events::{parse_invocation, EventError, Invocation, ObjectRef};
use crate::status::keep::{refresh, StagingReport};

#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("{} of {total} objects failed: {}", failures.len(), failures.iter().map(|e| chain(e)).collect::<Vec<_>>().join("; "))]
    Objects {
        total: usize,
        failures: Vec<ReplicateError>,
    },
    #[error("re-drive")]
    Redrive(#[source] ReplicateError),
}

/// The time a re-drive leaves for keeping the status summary, at most.
const SUMMARY_RESERVE: Duration = Duration::from_secs(10);

/// Handles one invocation; all work stops by `deadline` (the Lambda
/// deadline less the time needed to answer).
pub async fn handle_invocation(
    replicator: &Replicator,
    event: &Value,
    redrive_after: Duration,
    deadline: Instant,
) -> Result<Value, InvocationError> {
    let budget = replicator.limits.until(deadline);
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
                    Ok(objects) => process_all(replicator, objects, &budget).await.is_empty(),
                };
                if !ok {
                    failures.push(json!({ "itemIdentifier": message.message_id }));
                }
            }
            Ok(json!({ "batchItemFailures": failures }))
        }
        Invocation::Direct(objects) => {
            let failures = process_all(replicator, &objects, &budget).await;
            if failures.is_empty() {
                Ok(json!({ "processed": objects.len() }))
            } else {
                Err(InvocationError::Objects {
                    total: objects.len(),
                    failures,
                })
            }
        }
        Invocation::Redrive => {
            // The re-drive leaves time to keep the status summary (half of
            // what there is, on a function with very little).
            let reserve = SUMMARY_RESERVE.min(budget.left() / 2);
            let until = budget.deadline().checked_sub(reserve);
            let redrive_budget = until.map_or(budget, |until| budget.by(until));
            let report = replicator
                .redrive(redrive_after, &redrive_budget)
                .await
                .map_err(InvocationError::Redrive)?;
            report.metrics(&replicator.cluster).emit();
            let staging = StagingReport {
                at: report.listed_at_ms,
                backlog: report.backlog,
                oldest_age_ms: report.oldest_backlog_age_ms,
            };
            let mut answer = serde_json::to_value(report).unwrap_or(Value::Null);
            // The re-drive's work is done whatever happens to the summary;
            // the next run folds what this one could not.
            let catalog = replicator.backends.catalog.as_ref();
            answer["summary"] =
                match refresh(catalog, &replicator.cluster, staging, now_millis(), &budget).await {
                    Ok(()) => json!("kept"),
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "could not keep the status summary");
                        json!(format!("not kept: {}", chain(&e)))
                    }
                };
            Ok(answer)
        }
    }
}

/// Processes objects in order; returns the failures. Corrupt inputs and
/// conflicts are recorded outcomes, not failures: retrying cannot help. A
/// failure is reported for redelivery whether or not it is permanent: the
/// file is still in staging, and a message that keeps failing reaches the
/// dead-letter queue, whose alarm calls a human.
async fn process_all(
    replicator: &Replicator,
    objects: &[ObjectRef],
    budget: &crate::retry::Budget,
) -> Vec<ReplicateError> {
    let mut failures = Vec::new();
    for object in objects {
        if let Err(e) = replicator.process(object, budget).await {
            if e.is_permanent() {
                tracing::error!(key = %object.key, error = %chain(&e), "failed; retrying cannot help until the cause is fixed");
            }
            failures.push(e);
        }
    }
    failures
}
