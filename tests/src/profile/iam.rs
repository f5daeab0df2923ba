//! The IAM statements the CDK app synthesizes for each walvault role, and
//! their evaluation: what AWS would allow a request signed by that role.
//! Source of the rules: the IAM policy evaluation logic (an explicit deny
//! wins; otherwise a matching allow; otherwise denied), with `*` and `?`
//! wildcards in actions and resources and the `StringLike`/`StringEquals`
//! condition operators (AWS IAM User Guide, "Policy evaluation logic" and
//! "IAM JSON policy elements: Condition operators").
//!
//! The template is synthesized with [`PLACEHOLDER_CLUSTER`] as the cluster
//! name; a request's cluster (from its signer) takes its place, so that
//! the tests' many clusters share one template.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// The cluster name the template is synthesized with (`make iam-template`).
pub const PLACEHOLDER_CLUSTER: &str = "iamclusterplaceholder";
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// Who signs a request to staging or the catalog, as production assigns
/// the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The database host: `ShipperPolicy`.
    Shipper,
    /// A recovering host: `RestorePolicy`.
    Restore,
    /// A host that recovers and then archives as the new primary: both
    /// policies attached.
    RestoreAndShip,
    /// The compress function's role.
    Compress,
    /// The retention function's role.
    Retention,
    /// An operator running `walvault verify --repair`: `RepairPolicy`.
    Repair,
    /// The harness itself (provisioning, planting faults): not checked.
    Admin,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Shipper,
        Role::Restore,
        Role::RestoreAndShip,
        Role::Compress,
        Role::Retention,
        Role::Repair,
        Role::Admin,
    ];

    pub fn tag(&self) -> &'static str {
        match self {
            Role::Shipper => "SHIPPER",
            Role::Restore => "RESTORE",
            Role::RestoreAndShip => "RESTORESHIP",
            Role::Compress => "COMPRESS",
            Role::Retention => "RETENTION",
            Role::Repair => "REPAIR",
            Role::Admin => "ADMIN",
        }
    }

    /// The AWS access key id the harness gives this role acting for `cluster`.
    pub fn access_key_id(&self, cluster: &str) -> String {
        format!("WV{}_{cluster}", self.tag())
    }

    /// The role and cluster an access key id stands for.
    pub fn of_access_key(id: &str) -> Option<(Role, String)> {
        let rest = id.strip_prefix("WV")?;
        let (tag, cluster) = rest.split_once('_')?;
        let role = Role::ALL.into_iter().find(|r| r.tag() == tag)?;
        Some((role, cluster.to_owned()))
    }
}

#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    /// (operator, condition key, values)
    conditions: Vec<(String, String, Vec<String>)>,
}

/// Every role's statements, resources resolved to the stand-ins' names.
#[derive(Debug, Clone)]
pub struct Policies {
    by_role: BTreeMap<Role, Vec<Statement>>,
}

/// A request as IAM sees it.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    pub action: &'a str,
    pub resource: String,
    /// Condition keys, e.g. `s3:prefix`.
    pub context: BTreeMap<&'a str, String>,
}

impl Policies {
    /// Reads the synthesized template, resolving the staging bucket and the
    /// catalog table to `bucket` and `table`.
    pub fn from_template(path: &Path, bucket: &str, table: &str) -> Policies {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run `make iam-template` (make test does), which synthesizes the CDK app for the AWS profile",
                path.display()
            )
        });
        let template: Value = serde_json::from_str(&text).expect("the template is JSON");
        let resources = template["Resources"].as_object().expect("Resources");
        let resolver = Resolver {
            resources,
            bucket,
            table,
        };
        let mut by_role: BTreeMap<Role, Vec<Statement>> = BTreeMap::new();
        for (id, resource) in resources {
            let role = match resource["Type"].as_str() {
                Some("AWS::IAM::ManagedPolicy") if id.contains("ShipperPolicy") => Role::Shipper,
                Some("AWS::IAM::ManagedPolicy") if id.contains("RestorePolicy") => Role::Restore,
                Some("AWS::IAM::ManagedPolicy") if id.contains("RepairPolicy") => Role::Repair,
                Some("AWS::IAM::Policy")
                    if attached_to(resource, "FunctionsCompressServiceRole") =>
                {
                    Role::Compress
                }
                Some("AWS::IAM::Policy")
                    if attached_to(resource, "FunctionsRetentionServiceRole") =>
                {
                    Role::Retention
                }
                _ => continue,
            };
            let statements = resource["Properties"]["PolicyDocument"]["Statement"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| resolver.statement(s));
            by_role.entry(role).or_default().extend(statements);
        }
        for role in [
            Role::Shipper,
            Role::Restore,
            Role::Compress,
            Role::Retention,
            Role::Repair,
        ] {
            assert!(
                by_role.contains_key(&role),
                "the template has no policy for {role:?}"
            );
        }
        let both: Vec<Statement> = [Role::Shipper, Role::Restore]
            .iter()
            .flat_map(|r| by_role[r].clone())
            .collect();
        by_role.insert(Role::RestoreAndShip, both);
        Policies { by_role }
    }

    /// Whether `role`, acting for `cluster`, may do `access`.
    pub fn allows(&self, role: Role, cluster: &str, access: &Access<'_>) -> bool {
        if role == Role::Admin {
            return true;
        }
        let statements = self.by_role.get(&role).map(Vec::as_slice).unwrap_or(&[]);
        let matching = |s: &&Statement| {
            s.actions.iter().any(|a| glob(a, access.action))
                && s.resources
                    .iter()
                    .any(|r| glob(&r.replace(PLACEHOLDER_CLUSTER, cluster), &access.resource))
                && s.conditions.iter().all(|(op, key, values)| {
                    condition(op, access.context.get(key.as_str()), values, cluster)
                })
        };
        let applicable: Vec<&Statement> = statements.iter().filter(matching).collect();
        !applicable.iter().any(|s| !s.allow) && applicable.iter().any(|s| s.allow)
    }
}

fn attached_to(policy: &Value, role_prefix: &str) -> bool {
    policy["Properties"]["Roles"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| {
            r["Ref"]
                .as_str()
                .is_some_and(|id| id.starts_with(role_prefix))
        })
}

/// A condition: a missing key never matches (AWS treats absent keys as not
/// matching for these operators).
fn condition(op: &str, value: Option<&String>, values: &[String], cluster: &str) -> bool {
    let Some(value) = value else { return false };
    let values = values
        .iter()
        .map(|v| v.replace(PLACEHOLDER_CLUSTER, cluster));
    match op {
        "StringLike" => values.into_iter().any(|p| glob(&p, value)),
        "StringEquals" => values.into_iter().any(|p| p == *value),
        other => panic!("the AWS profile does not evaluate condition operator {other}"),
    }
}

/// IAM wildcard matching: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Resolves the template's intrinsic functions to the stand-ins' names.
struct Resolver<'a> {
    resources: &'a serde_json::Map<String, Value>,
    bucket: &'a str,
    table: &'a str,
}

impl Resolver<'_> {
    fn statement(&self, s: &Value) -> Statement {
        let list = |v: &Value| -> Vec<String> {
            match v {
                Value::Array(items) => items.iter().map(|i| self.string(i)).collect(),
                Value::Null => Vec::new(),
                other => vec![self.string(other)],
            }
        };
        let mut conditions = Vec::new();
        if let Some(ops) = s["Condition"].as_object() {
            for (op, keys) in ops {
                for (key, values) in keys.as_object().into_iter().flatten() {
                    conditions.push((op.clone(), key.clone(), list(values)));
                }
            }
        }
        Statement {
            allow: s["Effect"] == "Allow",
            actions: list(&s["Action"]),
            resources: list(&s["Resource"]),
            conditions,
        }
    }

    fn string(&self, v: &Value) -> String {
        if let Some(s) = v.as_str() {
            return s.to_owned();
        }
        if let Some(join) = v.get("Fn::Join") {
            let separator = join[0].as_str().unwrap_or("");
            let parts: Vec<String> = join[1]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| self.string(p))
                .collect();
            return parts.join(separator);
        }
        if let Some(att) = v.get("Fn::GetAtt") {
            return self.arn(att[0].as_str().unwrap_or(""));
        }
        if let Some(reference) = v.get("Ref").and_then(Value::as_str) {
            return match reference {
                "AWS::Partition" => "aws".into(),
                "AWS::Region" => REGION.into(),
                "AWS::AccountId" => ACCOUNT.into(),
                "AWS::URLSuffix" => "amazonaws.com".into(),
                id => self.name(id),
            };
        }
        "unresolved".into()
    }

    fn kind(&self, id: &str) -> &str {
        self.resources
            .get(id)
            .and_then(|r| r["Type"].as_str())
            .unwrap_or("")
    }

    fn name(&self, id: &str) -> String {
        match self.kind(id) {
            "AWS::S3::Bucket" => self.bucket.to_owned(),
            "AWS::DynamoDB::Table" => self.table.to_owned(),
            _ => format!("unresolved-{id}"),
        }
    }

    fn arn(&self, id: &str) -> String {
        match self.kind(id) {
            "AWS::S3::Bucket" => format!("arn:aws:s3:::{}", self.bucket),
            "AWS::DynamoDB::Table" => table_arn(self.table),
            _ => format!("arn:unresolved:{id}"),
        }
    }
}

pub fn table_arn(table: &str) -> String {
    format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}")
}

pub fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

pub fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(glob(
            "arn:aws:s3:::b/c/staging/*",
            "arn:aws:s3:::b/c/staging/0001"
        ));
        assert!(!glob(
            "arn:aws:s3:::b/c/staging/*",
            "arn:aws:s3:::b/c/wal/0001"
        ));
        assert!(glob("s3:Get?bject", "s3:GetObject"));
        assert!(glob("*", ""));
    }

    #[test]
    fn access_keys_name_the_role_and_cluster() {
        let id = Role::Compress.access_key_id("orders_db-1");
        assert_eq!(
            Role::of_access_key(&id),
            Some((Role::Compress, "orders_db-1".into()))
        );
        assert_eq!(Role::of_access_key("AKIAEXAMPLE"), None);
    }
}
