//! [`Catalog`] on DynamoDB.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use super::record::{
    CatalogRecord, RecordStatus, TargetState, UnixMillis, PARTITION_KEY, SORT_KEY,
};
use super::{Catalog, CatalogError, CreateOutcome, RecordPage, RecordRef};
use crate::config::{Config, Provider};
use crate::keys::ClusterName;
use crate::wal::WalFileName;

/// Records per query page: well under DynamoDB's 1 MB page limit.
const PAGE_SIZE: i32 = 500;

/// The DynamoDB client for the catalog (or the stand-in named by
/// `WALVAULT_DYNAMODB_ENDPOINT`).
pub fn dynamodb_client(sdk: &SdkConfig, config: &Config) -> Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(endpoint) = &config.catalog.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

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

    fn key(cluster: &ClusterName, file: &WalFileName) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                PARTITION_KEY.to_owned(),
                AttributeValue::S(cluster.as_str().to_owned()),
            ),
            (SORT_KEY.to_owned(), AttributeValue::S(file.to_string())),
        ])
    }
}

fn classify<E>(
    operation: &'static str,
    file: &WalFileName,
    err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> CatalogError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let file = file.to_string();
    let code = err.code().map(str::to_owned);
    let detail = DisplayErrorContext(&err).to_string();
    match (&err, code.as_deref()) {
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
        ) => CatalogError::Retryable {
            operation,
            file,
            detail,
        },
        (_, Some("ConditionalCheckFailedException")) => {
            CatalogError::ConditionFailed { file, detail }
        }
        (_, Some(code)) if is_retryable_code(code) => CatalogError::Retryable {
            operation,
            file,
            detail,
        },
        _ if err
            .raw_response()
            .is_some_and(|r| r.status().as_u16() >= 500) =>
        {
            CatalogError::Retryable {
                operation,
                file,
                detail,
            }
        }
        _ => CatalogError::Permanent {
            operation,
            file,
            detail,
        },
    }
}

fn is_retryable_code(code: &str) -> bool {
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
    file: &WalFileName,
    attributes: Option<&HashMap<String, AttributeValue>>,
) -> Result<CatalogRecord, CatalogError> {
    let attributes = attributes.ok_or_else(|| CatalogError::Malformed {
        file: file.to_string(),
        attribute: "*".into(),
        reason: "update returned no attributes".into(),
    })?;
    CatalogRecord::from_item(attributes)
}

#[async_trait]
impl Catalog for DynamoCatalog {
    async fn get(
        &self,
        cluster: &ClusterName,
        file: &WalFileName,
    ) -> Result<Option<CatalogRecord>, CatalogError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cluster, file)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("get", file, e))?;
        out.item().map(CatalogRecord::from_item).transpose()
    }

    async fn create(&self, record: &CatalogRecord) -> Result<CreateOutcome, CatalogError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record.to_item()))
            .condition_expression("attribute_not_exists(#sk)")
            .expression_attribute_names("#sk", SORT_KEY)
            .send()
            .await;
        match result.map_err(|e| classify("create", &record.file, e)) {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(CatalogError::ConditionFailed { .. }) => {
                match self.get(&record.cluster, &record.file).await? {
                    Some(existing) => Ok(CreateOutcome::Exists(Box::new(existing))),
                    // Created and removed in between: rare enough to hand back
                    // to the caller's retry.
                    None => Err(CatalogError::Retryable {
                        operation: "create",
                        file: record.file.to_string(),
                        detail: "record vanished right after a conflicting create".into(),
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
        let RecordRef {
            cluster,
            file,
            raw_sha256,
        } = record;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cluster, file)))
            .update_expression("SET #target = :target, #updated = :now")
            .condition_expression("#sha = :sha")
            .expression_attribute_names("#target", provider.as_str())
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#sha", "raw_sha256")
            .expression_attribute_values(":target", target.to_attribute())
            .expression_attribute_values(":now", AttributeValue::N(at.to_string()))
            .expression_attribute_values(":sha", AttributeValue::S(raw_sha256.as_str().to_owned()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| classify("record target", file, e))?;
        updated_record(file, out.attributes())
    }

    async fn set_status(
        &self,
        record: RecordRef<'_>,
        from: &[RecordStatus],
        to: RecordStatus,
        detail: Option<&str>,
        at: UnixMillis,
    ) -> Result<CatalogRecord, CatalogError> {
        let RecordRef {
            cluster,
            file,
            raw_sha256,
        } = record;
        let from_placeholders: Vec<String> = (0..from.len()).map(|i| format!(":from{i}")).collect();
        let mut condition = format!(
            "#sha = :sha AND #status IN ({})",
            from_placeholders.join(", ")
        );
        let mut set = vec!["#status = :to", "#updated = :now"];
        if to == RecordStatus::Replicated {
            condition.push_str(" AND attribute_exists(#r2) AND attribute_exists(#b2)");
            set.push("#replicated = :now");
        }
        if detail.is_some() {
            set.push("#detail = :detail");
        }
        let mut update = format!("SET {}", set.join(", "));
        if detail.is_none() {
            update.push_str(" REMOVE #detail");
        }
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cluster, file)))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#sha", "raw_sha256")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#detail", "detail")
            .expression_attribute_values(":sha", AttributeValue::S(raw_sha256.as_str().to_owned()))
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
            request = request
                .expression_attribute_names("#r2", Provider::R2.as_str())
                .expression_attribute_names("#b2", Provider::B2.as_str())
                .expression_attribute_names("#replicated", "replicated_at");
        }
        if let Some(detail) = detail {
            request = request
                .expression_attribute_values(":detail", AttributeValue::S(detail.to_owned()));
        }
        let out = request
            .send()
            .await
            .map_err(|e| classify("set status", file, e))?;
        updated_record(file, out.attributes())
    }

    async fn record_conflict(
        &self,
        cluster: &ClusterName,
        file: &WalFileName,
        detail: &str,
        at: UnixMillis,
    ) -> Result<(), CatalogError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cluster, file)))
            .update_expression("ADD #conflicts :one SET #last = :detail, #updated = :now")
            .condition_expression("attribute_exists(#sk)")
            .expression_attribute_names("#conflicts", "conflicts")
            .expression_attribute_names("#last", "last_conflict")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":detail", AttributeValue::S(detail.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(at.to_string()))
            .send()
            .await
            .map_err(|e| classify("record conflict", file, e))?;
        Ok(())
    }

    async fn delete(&self, record: RecordRef<'_>) -> Result<(), CatalogError> {
        let RecordRef {
            cluster,
            file,
            raw_sha256,
        } = record;
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(cluster, file)))
            .condition_expression("attribute_not_exists(#sk) OR #sha = :sha")
            .expression_attribute_names("#sk", SORT_KEY)
            .expression_attribute_names("#sha", "raw_sha256")
            .expression_attribute_values(":sha", AttributeValue::S(raw_sha256.as_str().to_owned()))
            .send()
            .await;
        result.map(|_| ()).map_err(|e| classify("delete", file, e))
    }

    async fn list_page(
        &self,
        cluster: &ClusterName,
        after: Option<&WalFileName>,
    ) -> Result<RecordPage, CatalogError> {
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :cluster")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":cluster", AttributeValue::S(cluster.as_str().to_owned()))
            .consistent_read(true)
            .limit(PAGE_SIZE);
        if let Some(after) = after {
            request = request.set_exclusive_start_key(Some(Self::key(cluster, after)));
        }
        let first = WalFileName::History { timeline: 1 };
        let out = request
            .send()
            .await
            .map_err(|e| classify("list", after.unwrap_or(&first), e))?;
        let records = out
            .items()
            .iter()
            .map(CatalogRecord::from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match out.last_evaluated_key() {
            Some(key) => Some(
                key.get(SORT_KEY)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| CatalogError::Malformed {
                        file: "<page end>".into(),
                        attribute: SORT_KEY.into(),
                        reason: "query returned an unreadable LastEvaluatedKey".into(),
                    })?,
            ),
            None => None,
        };
        Ok(RecordPage { records, next })
    }
}
