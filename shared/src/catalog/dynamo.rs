//! [`Catalog`] on DynamoDB. The client is built in [`crate::backends`];
//! the SDK's own retries are off (see [`crate::retry`]).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use super::record::{attr, CatalogRecord, RecordStatus, TargetState};
use super::{
    Catalog, CatalogError, CatalogOperation, ClusterItem, ClusterItemKind, CreateOutcome,
    RecordPage, RecordRef,
};
use crate::clock::UnixMillis;
use crate::error::cause;
use crate::file::ArchivedFile;
use crate::keys::ClusterName;
use crate::provider::Provider;

/// Records per query page: well under DynamoDB's 1 MB page limit.
const PAGE_SIZE: i32 = 500;

pub struct DynamoCatalog {
    client: Client,
    table: String,
}

impl DynamoCatalog {
    pub fn new(client: Client, table: &str) -> Self {
        DynamoCatalog {
            client,
            table: table.to_owned(),
        }
    }

    /// A cluster item's key: a partition of its own, `<cluster>#<name>`
    /// (`#` is not allowed in a cluster name), so no cluster's listing
    /// returns it.
    fn item_key(cluster: &ClusterName, item: ClusterItemKind) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                attr::CLUSTER.to_owned(),
                AttributeValue::S(format!("{cluster}#{}", item.name())),
            ),
            (
                attr::FILE_NAME.to_owned(),
                AttributeValue::S(item.name().to_owned()),
            ),
        ])
    }

    fn key(cluster: &ClusterName, file: &ArchivedFile) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                attr::CLUSTER.to_owned(),
                AttributeValue::S(cluster.as_str().to_owned()),
            ),
            (
                attr::FILE_NAME.to_owned(),
                AttributeValue::S(file.to_string()),
            ),
        ])
    }
}

fn classify<E>(
    operation: CatalogOperation,
    file: &dyn std::fmt::Display,
    err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> CatalogError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let file = file.to_string();
    let transient = match (&err, err.code()) {
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
        ) => true,
        (_, Some("ConditionalCheckFailedException")) => {
            return CatalogError::ConditionFailed { operation, file }
        }
        (_, Some(code)) if is_transient_code(code) => true,
        _ => err
            .raw_response()
            .is_some_and(|r| r.status().as_u16() >= 500),
    };
    let source = cause(err);
    if transient {
        CatalogError::Transient {
            operation,
            file,
            source,
        }
    } else {
        CatalogError::Refused {
            operation,
            file,
            source,
        }
    }
}

fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "TransactionConflictException"
    )
}

fn updated_record(
    file: &ArchivedFile,
    attributes: Option<&HashMap<String, AttributeValue>>,
) -> Result<CatalogRecord, CatalogError> {
    let attributes = attributes.ok_or_else(|| CatalogError::Malformed {
        file: file.to_string(),
        attribute: "*".into(),
        reason: "update returned no attributes".into(),
    })?;
    CatalogRecord::from_item(attributes)
}

/// `#sha = :sha`: the record still describes the referenced content.
fn same_content(
    request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    record: &RecordRef<'_>,
) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    request
        .expression_attribute_names("#sha", attr::RAW_SHA256)
        .expression_attribute_values(
            ":sha",
            AttributeValue::S(record.raw_sha256.as_str().to_owned()),
        )
}

#[async_trait]
impl Catalog for DynamoCatalog {
    async fn get(
        &self,
        cluster: &ClusterName,
        file: &ArchivedFile,
    ) -> Result<Option<CatalogRecord>, CatalogError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cluster, file)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(CatalogOperation::Get, file, e))?;
        out.item().map(CatalogRecord::from_item).transpose()
    }

    async fn create(&self, record: &CatalogRecord) -> Result<CreateOutcome, CatalogError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record.to_item()))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", attr::FILE_NAME)
            .send()
            .await;
        match result.map_err(|e| classify(CatalogOperation::Create, &record.file, e)) {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(CatalogError::ConditionFailed { .. }) => {
                match self.get(&record.cluster, &record.file).await? {
                    Some(existing) => Ok(CreateOutcome::Exists(Box::new(existing))),
                    // Created and removed in between: the caller's retry
                    // creates it again.
                    None => Err(CatalogError::Transient {
                        operation: CatalogOperation::Create,
                        file: record.file.to_string(),
                        source: crate::error::message(
                            "record vanished right after a conflicting create",
                        ),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn record_target(
        &self,
        record: RecordRef<'_>,
        provider: Provider,
        target: &TargetState,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(record.cluster, record.file)))
            .update_expression("SET #target = :target, #updated = :now")
            .condition_expression("#sha = :sha")
            .expression_attribute_names("#target", provider.as_str())
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":target", target.to_attribute())
            .expression_attribute_values(":now", AttributeValue::N(at.to_string()))
            .return_values(ReturnValue::AllNew);
        let out = same_content(request, &record)
            .send()
            .await
            .map_err(|e| classify(CatalogOperation::RecordTarget, record.file, e))?;
        updated_record(record.file, out.attributes())
    }

    async fn set_status(
        &self,
        record: RecordRef<'_>,
        from: &[RecordStatus],
        to: RecordStatus,
        detail: Option<&str>,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        let from_placeholders: Vec<String> = (0..from.len()).map(|i| format!(":from{i}")).collect();
        let mut condition = format!(
            "#sha = :sha AND #status IN ({})",
            from_placeholders.join(", ")
        );
        let mut set = vec!["#status = :to", "#updated = :now"];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(record.cluster, record.file)))
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#detail", attr::DETAIL)
            .expression_attribute_values(":to", AttributeValue::S(to.as_str().to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(at.to_string()))
            .return_values(ReturnValue::AllNew);
        for (placeholder, status) in from_placeholders.iter().zip(from) {
            request = request.expression_attribute_values(
                placeholder,
                AttributeValue::S(status.as_str().to_owned()),
            );
        }
        if to == RecordStatus::Replicated {
            for provider in Provider::ALL {
                let name = format!("#{provider}");
                condition.push_str(&format!(" AND attribute_exists({name})"));
                request = request.expression_attribute_names(name, provider.as_str());
            }
            set.push("#replicated = :now");
            request = request.expression_attribute_names("#replicated", attr::REPLICATED_AT);
        }
        let update = match detail {
            Some(detail) => {
                set.push("#detail = :detail");
                request = request
                    .expression_attribute_values(":detail", AttributeValue::S(detail.to_owned()));
                format!("SET {}", set.join(", "))
            }
            None => format!("SET {} REMOVE #detail", set.join(", ")),
        };
        let out = same_content(request, &record)
            .update_expression(update)
            .condition_expression(condition)
            .send()
            .await
            .map_err(|e| classify(CatalogOperation::SetStatus, record.file, e))?;
        updated_record(record.file, out.attributes())
    }

    async fn record_conflict(
        &self,
        cluster: &ClusterName,
        file: &ArchivedFile,
        detail: &str,
        at: UnixMillis,
    ) -> Result<(), CatalogError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cluster, file)))
            .update_expression("ADD #conflicts :one SET #last = :detail, #updated = :now")
            .condition_expression("attribute_exists(#sk)")
            .expression_attribute_names("#conflicts", attr::CONFLICTS)
            .expression_attribute_names("#last", attr::LAST_CONFLICT)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#sk", attr::FILE_NAME)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":detail", AttributeValue::S(detail.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(at.to_string()))
            .send()
            .await
            .map_err(|e| classify(CatalogOperation::RecordConflict, file, e))?;
        Ok(())
    }

    async fn delete(&self, record: RecordRef<'_>) -> Result<(), CatalogError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(record.cluster, record.file)))
            .condition_expression("attribute_not_exists(#sk) OR #sha = :sha")
            .expression_attribute_names("#sk", attr::FILE_NAME)
            .expression_attribute_names("#sha", attr::RAW_SHA256)
            .expression_attribute_values(
                ":sha",
                AttributeValue::S(record.raw_sha256.as_str().to_owned()),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(CatalogOperation::Delete, record.file, e))
    }

    async fn list_page(
        &self,
        cluster: &ClusterName,
        prefix: &str,
        after: Option<&ArchivedFile>,
    ) -> Result<RecordPage, CatalogError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_names("#pk", attr::CLUSTER)
            .expression_attribute_values(":cluster", AttributeValue::S(cluster.as_str().to_owned()))
            .consistent_read(true)
            .limit(PAGE_SIZE);
        request = if prefix.is_empty() {
            request.key_condition_expression("#pk = :cluster")
        } else {
            request
                .key_condition_expression("#pk = :cluster AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", attr::FILE_NAME)
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()))
        };
        if let Some(after) = after {
            request = request.set_exclusive_start_key(Some(Self::key(cluster, after)));
        }
        let label = format!("{prefix}*");
        let out = request
            .send()
            .await
            .map_err(|e| classify(CatalogOperation::List, &label, e))?;
        let records = out
            .items()
            .iter()
            .map(CatalogRecord::from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match out.last_evaluated_key() {
            Some(key) => Some(
                key.get(attr::FILE_NAME)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| CatalogError::Malformed {
                        file: "<page end>".into(),
                        attribute: attr::FILE_NAME.into(),
                        reason: "query returned an unreadable LastEvaluatedKey".into(),
                    })?,
            ),
            None => None,
        };
        Ok(RecordPage { records, next })
    }

    async fn get_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
    ) -> Result<Option<ClusterItem>, CatalogError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(cluster, item)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(CatalogOperation::GetClusterItem, &item.name(), e))?;
        let Some(stored) = out.item() else {
            return Ok(None);
        };
        let malformed = |attribute: &str| CatalogError::Malformed {
            file: item.name().into(),
            attribute: attribute.to_owned(),
            reason: "missing or not of its type".into(),
        };
        let version = stored
            .get(attr::ITEM_VERSION)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| malformed(attr::ITEM_VERSION))?;
        let body = stored
            .get(attr::ITEM_BODY)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| malformed(attr::ITEM_BODY))?;
        Ok(Some(ClusterItem {
            version,
            body: body.clone(),
        }))
    }

    async fn put_cluster_item(
        &self,
        cluster: &ClusterName,
        item: ClusterItemKind,
        expected: Option<u64>,
        body: &str,
    ) -> Result<(), CatalogError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::item_key(cluster, item)))
            .update_expression("SET #body = :body, #version = :new")
            .expression_attribute_names("#body", attr::ITEM_BODY)
            .expression_attribute_names("#version", attr::ITEM_VERSION)
            .expression_attribute_values(":body", AttributeValue::S(body.to_owned()))
            .expression_attribute_values(
                ":new",
                AttributeValue::N(expected.map_or(1, |v| v + 1).to_string()),
            );
        request = match expected {
            None => request.condition_expression("attribute_not_exists(#version)"),
            Some(version) => request
                .condition_expression("#version = :old")
                .expression_attribute_values(":old", AttributeValue::N(version.to_string())),
        };
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(CatalogOperation::PutClusterItem, &item.name(), e))
    }
}
