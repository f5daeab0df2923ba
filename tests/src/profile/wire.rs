//! Requests and answers as the profile layer holds them (whole bodies:
//! the stand-ins' objects are at most a few MiB in tests), and the error
//! answers each service gives.

use bytes::Bytes;
use hyper::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use super::request::{S3Request, Signer};

pub struct Incoming {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub s3: S3Request,
    pub signer: Option<Signer>,
}

impl Incoming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// An S3 error document (no body for HEAD, as S3 answers).
    pub fn s3_error(method: &Method, status: u16, code: &str, message: &str) -> Answer {
        let body = if method == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>walvault-profile</RequestId></Error>"
            ))
        };
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/xml"));
        Answer {
            status: StatusCode::from_u16(status).expect("a status code"),
            headers,
            body,
        }
    }

    /// A DynamoDB (JSON protocol) error.
    pub fn dynamodb_error(code: &str, message: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        Answer {
            status: StatusCode::BAD_REQUEST,
            headers,
            body: Bytes::from(
                serde_json::json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message })
                    .to_string(),
            ),
        }
    }
}
