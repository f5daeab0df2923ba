//! What an S3 or DynamoDB request asks for, read from the wire: the
//! operation, bucket and key (path-style addressing, as walvault and the
//! harness use), and who signed it (the SigV4 credential scope).

use std::collections::BTreeMap;

use hyper::http::{HeaderMap, Method, Uri};

/// An S3 operation, as far as the profiles need to tell them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Op {
    GetObject {
        version_id: Option<String>,
    },
    HeadObject {
        version_id: Option<String>,
    },
    PutObject,
    DeleteObject {
        version_id: Option<String>,
    },
    DeleteObjects,
    ListObjects {
        prefix: String,
    },
    ListObjectVersions {
        prefix: String,
    },
    CreateMultipartUpload,
    UploadPart {
        upload_id: String,
        part: u32,
    },
    CompleteMultipartUpload {
        upload_id: String,
    },
    AbortMultipartUpload,
    /// Bucket administration (create, versioning, notifications, …).
    Bucket,
}

impl S3Op {
    /// Whether it writes an object (a new one or a new version).
    pub fn writes_object(&self) -> bool {
        matches!(self, S3Op::PutObject | S3Op::CompleteMultipartUpload { .. })
    }
}

#[derive(Debug, Clone)]
pub struct S3Request {
    pub op: S3Op,
    pub bucket: String,
    /// Empty for bucket-level operations.
    pub key: String,
}

impl S3Request {
    /// Reads a path-style request: `/<bucket>/<key>?<query>`.
    pub fn parse(method: &Method, uri: &Uri) -> S3Request {
        let path = percent_decode(uri.path().trim_start_matches('/'));
        let (bucket, key) = match path.split_once('/') {
            Some((bucket, key)) => (bucket.to_owned(), key.to_owned()),
            None => (path.clone(), String::new()),
        };
        let query = query_pairs(uri);
        let has = |name: &str| query.contains_key(name);
        let get = |name: &str| query.get(name).cloned();
        let op = match (method.as_str(), key.is_empty()) {
            ("GET", true) if has("versions") => S3Op::ListObjectVersions {
                prefix: get("prefix").unwrap_or_default(),
            },
            ("GET", true) if has("list-type") || has("prefix") || query.is_empty() => {
                S3Op::ListObjects {
                    prefix: get("prefix").unwrap_or_default(),
                }
            }
            ("POST", true) if has("delete") => S3Op::DeleteObjects,
            (_, true) => S3Op::Bucket,
            ("GET", false) => S3Op::GetObject {
                version_id: get("versionId"),
            },
            ("HEAD", false) => S3Op::HeadObject {
                version_id: get("versionId"),
            },
            ("PUT", false) => match (get("uploadId"), get("partNumber")) {
                (Some(upload_id), Some(part)) => S3Op::UploadPart {
                    upload_id,
                    part: part.parse().unwrap_or(0),
                },
                _ => S3Op::PutObject,
            },
            ("DELETE", false) if has("uploadId") => S3Op::AbortMultipartUpload,
            ("DELETE", false) => S3Op::DeleteObject {
                version_id: get("versionId"),
            },
            ("POST", false) if has("uploads") => S3Op::CreateMultipartUpload,
            ("POST", false) => S3Op::CompleteMultipartUpload {
                upload_id: get("uploadId").unwrap_or_default(),
            },
            _ => S3Op::Bucket,
        };
        S3Request { op, bucket, key }
    }
}

/// The SigV4 signer: access key id and the region of its credential scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub access_key_id: String,
    pub region: String,
}

impl Signer {
    /// From `Authorization: AWS4-HMAC-SHA256 Credential=<id>/<date>/<region>/<service>/aws4_request, …`.
    pub fn of(headers: &HeaderMap) -> Option<Signer> {
        let auth = headers.get("authorization")?.to_str().ok()?;
        let credential = auth.split("Credential=").nth(1)?.split(',').next()?;
        let mut parts = credential.split('/');
        let access_key_id = parts.next()?.to_owned();
        let _date = parts.next()?;
        let region = parts.next()?.to_owned();
        Some(Signer {
            access_key_id,
            region,
        })
    }
}

/// The `x-amz-meta-*` headers' total size, name and value.
pub fn user_metadata_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-amz-meta-"))
        .map(|(name, value)| name.as_str().len() - "x-amz-meta-".len() + value.len())
        .sum()
}

fn query_pairs(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &str, uri: &str) -> S3Request {
        S3Request::parse(&method.parse().unwrap(), &uri.parse().unwrap())
    }

    #[test]
    fn operations_are_read_from_path_style_requests() {
        let get = op(
            "GET",
            "/b/c/wal/000000010000000000000001.zst?x-id=GetObject",
        );
        assert_eq!(
            (get.bucket.as_str(), get.key.as_str()),
            ("b", "c/wal/000000010000000000000001.zst")
        );
        assert_eq!(get.op, S3Op::GetObject { version_id: None });
        assert_eq!(
            op("GET", "/b?list-type=2&prefix=c%2Fwal%2F").op,
            S3Op::ListObjects {
                prefix: "c/wal/".into()
            }
        );
        assert_eq!(
            op("GET", "/b?versions&prefix=k").op,
            S3Op::ListObjectVersions { prefix: "k".into() }
        );
        assert_eq!(op("POST", "/b?delete").op, S3Op::DeleteObjects);
        assert_eq!(
            op("DELETE", "/b/k?versionId=v1").op,
            S3Op::DeleteObject {
                version_id: Some("v1".into())
            }
        );
        assert_eq!(
            op("PUT", "/b/k?partNumber=2&uploadId=u").op,
            S3Op::UploadPart {
                upload_id: "u".into(),
                part: 2
            }
        );
        assert_eq!(op("POST", "/b/k?uploads").op, S3Op::CreateMultipartUpload);
        assert_eq!(
            op("POST", "/b/k?uploadId=u").op,
            S3Op::CompleteMultipartUpload {
                upload_id: "u".into()
            }
        );
        assert_eq!(op("PUT", "/b").op, S3Op::Bucket);
    }

    #[test]
    fn the_signer_comes_from_the_credential_scope() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=WVSHIPPER_main/20261127/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            Signer::of(&headers),
            Some(Signer {
                access_key_id: "WVSHIPPER_main".into(),
                region: "us-east-1".into()
            })
        );
    }
}
