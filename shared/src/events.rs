//! The events that invoke the compress function, reduced to the staging
//! objects they announce.
//!
//! - SQS batches whose bodies are S3 notifications (the production path);
//! - a direct S3 notification (`cargo lambda invoke` with a plain S3 event);
//! - an EventBridge "Object Created" event;
//! - an EventBridge "Scheduled Event": the re-drive sweep.
//!
//! S3 notification keys are form-encoded (`+` is a space). EventBridge keys
//! are decoded the same way: walvault keys never contain `+`, `%` or spaces,
//! so decoding is harmless if EventBridge sent them plain and right if it
//! encoded them. `s3:TestEvent` bodies announce nothing.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::clock::UnixMillis;
use crate::keys::decode_event_key;

/// No wall-clock deadline is earlier than this (2001-09-09).
const EARLIEST_WALL_CLOCK_DEADLINE: UnixMillis = 1_000_000_000_000;

/// Time kept back from an invocation's deadline to report and answer.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// The monotonic instant by which an invocation's work must stop so that
/// it can still answer: the runtime's `Lambda-Runtime-Deadline-Ms`, read at
/// `now`, less [`ANSWER_MARGIN`]. Lambda sends Unix milliseconds; the
/// `cargo lambda watch` emulator (1.9) sends the timeout itself (600000),
/// which read as a date lies in 1970 and would stop every sweep and
/// re-drive before it starts. So a value too small to be a date is taken as
/// the time left.
pub fn work_deadline(deadline: UnixMillis, now: UnixMillis) -> Instant {
    let left = if deadline < EARLIEST_WALL_CLOCK_DEADLINE {
        deadline
    } else {
        deadline.saturating_sub(now)
    };
    Instant::now() + Duration::from_millis(left).saturating_sub(ANSWER_MARGIN)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// Decoded: exactly the object's key.
    pub key: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct SqsMessage {
    pub message_id: String,
    /// What the body announces, or why it could not be read.
    pub objects: Result<Vec<ObjectRef>, EventError>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    Sqs(Vec<SqsMessage>),
    Direct(Vec<ObjectRef>),
    Redrive,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("not an event the compress function handles: {0}")]
    Unrecognised(String),
    #[error("malformed S3 notification: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct Records<T> {
    #[serde(rename = "Records")]
    records: Vec<T>,
}

#[derive(Deserialize)]
struct SqsRecord {
    #[serde(rename = "messageId")]
    message_id: String,
    body: String,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventName", default)]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Named,
    object: Keyed,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Keyed {
    key: String,
}

#[derive(Deserialize)]
struct EventBridge {
    #[serde(rename = "detail-type")]
    detail_type: String,
    #[serde(default)]
    detail: Value,
}

pub fn parse_invocation(event: &Value) -> Result<Invocation, EventError> {
    if event.get("detail-type").is_some() {
        let bridge: EventBridge = serde_json::from_value(event.clone())
            .map_err(|e| EventError::Unrecognised(e.to_string()))?;
        return match bridge.detail_type.as_str() {
            "Scheduled Event" => Ok(Invocation::Redrive),
            "Object Created" => {
                let detail: S3Entity = serde_json::from_value(bridge.detail)
                    .map_err(|e| EventError::Malformed(e.to_string()))?;
                Ok(Invocation::Direct(vec![ObjectRef {
                    bucket: detail.bucket.name,
                    key: decode_event_key(&detail.object.key)
                        .map_err(|e| EventError::Malformed(e.to_string()))?,
                }]))
            }
            other => Err(EventError::Unrecognised(format!(
                "EventBridge detail-type {other:?}"
            ))),
        };
    }
    let sources: Vec<&str> = event
        .get("Records")
        .and_then(Value::as_array)
        .map(|records| {
            records
                .iter()
                .filter_map(|r| r.get("eventSource").and_then(Value::as_str))
                .collect()
        })
        .ok_or_else(|| EventError::Unrecognised("no Records and no detail-type".into()))?;
    if !sources.is_empty() && sources.iter().all(|s| *s == "aws:sqs") {
        let batch: Records<SqsRecord> = serde_json::from_value(event.clone())
            .map_err(|e| EventError::Unrecognised(e.to_string()))?;
        return Ok(Invocation::Sqs(
            batch
                .records
                .into_iter()
                .map(|m| SqsMessage {
                    objects: parse_s3_notification(&m.body),
                    message_id: m.message_id,
                })
                .collect(),
        ));
    }
    parse_s3_records(event.clone()).map(Invocation::Direct)
}

/// The objects an S3 notification body announces; none for `s3:TestEvent`.
pub fn parse_s3_notification(body: &str) -> Result<Vec<ObjectRef>, EventError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| EventError::Malformed(format!("body is not JSON: {e}")))?;
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    parse_s3_records(value)
}

fn parse_s3_records(value: Value) -> Result<Vec<ObjectRef>, EventError> {
    let records: Records<S3Record> =
        serde_json::from_value(value).map_err(|e| EventError::Malformed(e.to_string()))?;
    records
        .records
        .into_iter()
        .filter(|r| r.event_name.starts_with("ObjectCreated:"))
        .map(|r| {
            Ok(ObjectRef {
                bucket: r.s3.bucket.name,
                key: decode_event_key(&r.s3.object.key)
                    .map_err(|e| EventError::Malformed(e.to_string()))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seconds_left(deadline: Instant) -> u64 {
        deadline.saturating_duration_since(Instant::now()).as_secs()
    }

    #[test]
    fn lambda_deadlines_are_wall_clock_times_and_emulator_deadlines_are_time_left() {
        let now = crate::clock::now_millis();
        assert!((45..=50).contains(&seconds_left(work_deadline(now + 60_000, now))));
        assert_eq!(seconds_left(work_deadline(now - 1_000, now)), 0);
        assert_eq!(seconds_left(work_deadline(now + 5_000, now)), 0);
        assert!((585..=590).contains(&seconds_left(work_deadline(600_000, now))));
    }

    fn s3_body(key: &str) -> String {
        json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "staging"}, "object": {"key": key, "size": 1}}}]})
        .to_string()
    }

    fn object(key: &str) -> ObjectRef {
        ObjectRef {
            bucket: "staging".into(),
            key: key.into(),
        }
    }

    #[test]
    fn sqs_batches_carry_one_result_per_message() {
        let event = json!({"Records": [
            {"messageId": "a", "eventSource": "aws:sqs", "body": s3_body("db/staging/000000010000000000000001")},
            {"messageId": "b", "eventSource": "aws:sqs", "body": "{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\"}"},
            {"messageId": "c", "eventSource": "aws:sqs", "body": "not json"},
            {"messageId": "d", "eventSource": "aws:sqs", "body": s3_body("db%2Fstaging%2F0000000100000000000000+2")},
        ]});
        let Invocation::Sqs(messages) = parse_invocation(&event).unwrap() else {
            panic!()
        };
        assert_eq!(messages.len(), 4);
        assert_eq!(
            messages[0].objects,
            Ok(vec![object("db/staging/000000010000000000000001")])
        );
        assert_eq!(
            messages[1].objects,
            Ok(vec![]),
            "TestEvent announces nothing"
        );
        assert!(matches!(messages[2].objects, Err(EventError::Malformed(_))));
        assert_eq!(
            messages[3].objects,
            Ok(vec![object("db/staging/0000000100000000000000 2")])
        );
        assert_eq!(messages[3].message_id, "d");
    }

    #[test]
    fn direct_s3_and_eventbridge_events_are_accepted() {
        let direct: Value = serde_json::from_str(&s3_body("db/staging/00000002.history")).unwrap();
        assert_eq!(
            parse_invocation(&direct).unwrap(),
            Invocation::Direct(vec![object("db/staging/00000002.history")])
        );
        let bridge = json!({"version": "0", "detail-type": "Object Created", "source": "aws.s3",
            "detail": {"bucket": {"name": "staging"}, "object": {"key": "db/staging/000000010000000000000003", "size": 3}}});
        assert_eq!(
            parse_invocation(&bridge).unwrap(),
            Invocation::Direct(vec![object("db/staging/000000010000000000000003")])
        );
        let schedule =
            json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        assert_eq!(parse_invocation(&schedule).unwrap(), Invocation::Redrive);
    }

    #[test]
    fn other_events_are_refused_or_skipped() {
        assert!(matches!(
            parse_invocation(&json!({"hello": "world"})),
            Err(EventError::Unrecognised(_))
        ));
        assert!(matches!(
            parse_invocation(&json!({"detail-type": "Object Deleted", "detail": {}})),
            Err(EventError::Unrecognised(_))
        ));
        let removed = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
            "s3": {"bucket": {"name": "staging"}, "object": {"key": "k"}}}]});
        assert_eq!(
            parse_invocation(&removed).unwrap(),
            Invocation::Direct(vec![])
        );
        assert!(matches!(
            parse_s3_notification("{\"Records\": [{\"s3\": {}}]}"),
            Err(EventError::Malformed(_))
        ));
    }

    #[test]
    fn the_sample_events_parse() {
        let sqs: Value =
            serde_json::from_str(include_str!("../../events/sqs-s3-object-created.json")).unwrap();
        assert!(matches!(parse_invocation(&sqs).unwrap(), Invocation::Sqs(m) if m.len() == 1));
        let schedule: Value =
            serde_json::from_str(include_str!("../../events/retention-schedule.json")).unwrap();
        assert_eq!(parse_invocation(&schedule).unwrap(), Invocation::Redrive);
    }
}
