//! AWS S3 (the staging bucket) and DynamoDB (the catalog), as the roles the
//! CDK app synthesizes see them.
//!
//! | rule | source |
//! |---|---|
//! | every request is allowed only by the signer's IAM statements, else 403 `AccessDenied` (S3) / 400 `AccessDeniedException` (DynamoDB) | IAM User Guide, policy evaluation logic; the statements are the synthesized template's |
//! | GET/HEAD of a missing key is 403 unless the signer holds `s3:ListBucket` on the bucket, else 404 | S3 API reference, GetObject and HeadObject, "Permissions": "If you have the s3:ListBucket permission on the bucket, Amazon S3 returns an HTTP status code 404 … If you don't … 403" |
//! | the `s3:prefix` condition of that `s3:ListBucket` is evaluated with the key as prefix (switch [`MissingKeyPrefix`]: or with none) | reported: ceph/ceph PR #68577 ("add the requested object name to the iam environment as s3:prefix to match aws behavior"); no AWS statement either way |
//! | `If-None-Match: *` on an existing key: 412 | S3 API reference, PutObject (moto implements it) |
//! | a concurrent conditional write: 409 `ConditionalRequestConflict` | S3 API reference, PutObject; injected through [`super::faults`] |
//! | DynamoDB actions are `dynamodb:<Operation>` on the table ARN | IAM: actions, resources and condition keys for Amazon DynamoDB |

use std::collections::BTreeMap;
use std::sync::Arc;

use super::iam::{bucket_arn, object_arn, table_arn, Access, Policies, Role};
use super::request::S3Op;
use super::wire::{Answer, Incoming};

/// How AWS fills `s3:prefix` when it decides 403 or 404 for a missing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKeyPrefix {
    /// The requested key (what Ceph reports AWS doing).
    Key,
    /// No `s3:prefix` at all: a `s3:ListBucket` granted only under a
    /// prefix condition does not count.
    Absent,
}

pub struct AwsS3 {
    pub policies: Arc<Policies>,
    pub missing_key_prefix: MissingKeyPrefix,
}

impl AwsS3 {
    pub fn before(&self, request: &Incoming) -> Option<Answer> {
        let Some((role, cluster)) = caller(request) else {
            return Some(Answer::s3_error(
                &request.method,
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            ));
        };
        let denied = || {
            Some(Answer::s3_error(
                &request.method,
                403,
                "AccessDenied",
                "Access Denied",
            ))
        };
        let s3 = &request.s3;
        let object = object_arn(&s3.bucket, &s3.key);
        let access = |action: &'static str, resource: String| Access {
            action,
            resource,
            context: BTreeMap::new(),
        };
        let allowed = match &s3.op {
            S3Op::GetObject { .. } | S3Op::HeadObject { .. } => {
                self.policies
                    .allows(role, &cluster, &access("s3:GetObject", object))
            }
            S3Op::PutObject
            | S3Op::CreateMultipartUpload
            | S3Op::UploadPart { .. }
            | S3Op::CompleteMultipartUpload { .. } => {
                self.policies
                    .allows(role, &cluster, &access("s3:PutObject", object))
            }
            S3Op::DeleteObject { .. } => {
                self.policies
                    .allows(role, &cluster, &access("s3:DeleteObject", object))
            }
            S3Op::ListObjects { prefix } | S3Op::ListObjectVersions { prefix } => {
                self.policies.allows(
                    role,
                    &cluster,
                    &Access {
                        action: "s3:ListBucket",
                        resource: bucket_arn(&s3.bucket),
                        context: BTreeMap::from([("s3:prefix", prefix.clone())]),
                    },
                )
            }
            S3Op::DeleteObjects | S3Op::AbortMultipartUpload | S3Op::Bucket => role == Role::Admin,
        };
        if allowed {
            None
        } else {
            denied()
        }
    }

    /// A missing key answers 403 to a signer without `s3:ListBucket`.
    pub fn after(&self, request: &Incoming, answer: &mut Answer) {
        let reads = matches!(
            request.s3.op,
            S3Op::GetObject { .. } | S3Op::HeadObject { .. }
        );
        if !reads || answer.status.as_u16() != 404 {
            return;
        }
        let Some((role, cluster)) = caller(request) else {
            return;
        };
        let context = match self.missing_key_prefix {
            MissingKeyPrefix::Key => BTreeMap::from([("s3:prefix", request.s3.key.clone())]),
            MissingKeyPrefix::Absent => BTreeMap::new(),
        };
        let may_list = self.policies.allows(
            role,
            &cluster,
            &Access {
                action: "s3:ListBucket",
                resource: bucket_arn(&request.s3.bucket),
                context,
            },
        );
        if !may_list {
            *answer = Answer::s3_error(&request.method, 403, "AccessDenied", "Access Denied");
        }
    }
}

pub struct AwsDynamoDb {
    pub policies: Arc<Policies>,
}

impl AwsDynamoDb {
    pub fn before(&self, request: &Incoming) -> Option<Answer> {
        let Some((role, cluster)) = caller(request) else {
            return Some(Answer::dynamodb_error(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        };
        let operation = request
            .header("x-amz-target")
            .and_then(|t| t.split('.').nth(1))
            .unwrap_or("")
            .to_owned();
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let table = body["TableName"].as_str().unwrap_or("");
        let action = format!("dynamodb:{operation}");
        let access = Access {
            action: &action,
            resource: table_arn(table),
            context: BTreeMap::new(),
        };
        if self.policies.allows(role, &cluster, &access) {
            None
        } else {
            Some(Answer::dynamodb_error(
                "AccessDeniedException",
                &format!(
                    "User is not authorized to perform: {action} on resource: {}",
                    table_arn(table)
                ),
            ))
        }
    }
}

/// The role and cluster of the signer; `None` for an unsigned request or
/// a key no role has.
fn caller(request: &Incoming) -> Option<(Role, String)> {
    Role::of_access_key(&request.signer.as_ref()?.access_key_id)
}
