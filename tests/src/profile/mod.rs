//! Behaviour profiles: a small HTTP proxy in front of each stand-in that
//! answers as the real service would — AWS S3 and DynamoDB with the IAM
//! statements the CDK app synthesizes, Cloudflare R2, Backblaze B2 — with
//! a link (round trip and bandwidth) and the project's fault injector on
//! the wire. moto (or s3s-fs) behind it stores the data; the profile
//! refuses what the real service refuses and reshapes what it answers
//! differently. Each rule and its source is listed in [`aws`] and
//! [`providers`].

pub mod aws;
pub mod faults;
pub mod iam;
pub mod providers;
pub mod request;
pub mod tls;
pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming as HyperBody};
use hyper::http::{HeaderValue, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use faults::{NetFault, NetFaults};
use request::{S3Request, Signer};
use wire::{Answer, Incoming};

/// Which service a proxy plays.
pub enum Profile {
    AwsS3(aws::AwsS3),
    AwsDynamoDb(aws::AwsDynamoDb),
    R2(providers::R2),
    B2(providers::B2),
    /// Only the link and the faults.
    Plain,
}

/// The network between walvault and a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    pub round_trip: Duration,
    /// Bytes a second each way, shared by every connection to the
    /// service; `None`: unlimited.
    pub bandwidth: Option<u64>,
    /// Round trips a new connection costs before its first request: 1 for
    /// TCP, 2 with TLS 1.3 (the real services all speak HTTPS, so a plain
    /// proxy charges the TLS round trip too).
    pub handshake_round_trips: u32,
}

impl Link {
    /// A link to a service `round_trip` away, at `megabits` a second, over
    /// TLS 1.3.
    pub fn https(round_trip: Duration, megabits: u64) -> Link {
        Link {
            round_trip,
            bandwidth: Some(megabits * 1_000_000 / 8),
            handshake_round_trips: 2,
        }
    }

    fn transfer(&self, bytes: usize) -> Duration {
        self.bandwidth
            .map(|bw| Duration::from_secs_f64(bytes as f64 / bw.max(1) as f64))
            .unwrap_or_default()
    }
}

/// The link's capacity in each direction: transfers queue behind each
/// other, so parallel requests share the bandwidth as on a real wire.
#[derive(Default)]
struct Wire {
    up_free_at: Mutex<Option<tokio::time::Instant>>,
    down_free_at: Mutex<Option<tokio::time::Instant>>,
}

impl Wire {
    /// Waits until `duration` of this direction's capacity has been used
    /// for us, after what is already queued.
    async fn send(free_at: &Mutex<Option<tokio::time::Instant>>, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        let done = {
            let mut free_at = free_at.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let start = free_at.filter(|at| *at > now).unwrap_or(now);
            let done = start + duration;
            *free_at = Some(done);
            done
        };
        tokio::time::sleep_until(done).await;
    }
}

/// The stand-in behind a proxy, for the profile's own lookups (moto tells
/// services apart by the credential scope, and checks no signature).
pub struct Upstream {
    addr: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// How far tests have moved the service's clock on (lock windows).
    clock_offset_ms: AtomicU64,
}

impl Upstream {
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.clock_offset_ms.load(Ordering::SeqCst))
    }

    /// When `key` (or one of its versions) was written, if it exists.
    pub async fn last_modified(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Option<SystemTime> {
        let headers = self.head(bucket, key, version).await?;
        let date = headers.get("last-modified")?.to_str().ok()?;
        let parsed = aws_sdk_s3::primitives::DateTime::from_str(
            date,
            aws_sdk_s3::primitives::DateTimeFormat::HttpDate,
        )
        .ok()?;
        SystemTime::try_from(parsed).ok()
    }

    /// The ETag of the object under `key`, if it exists.
    pub async fn etag(&self, bucket: &str, key: &str) -> Option<String> {
        let headers = self.head(bucket, key, None).await?;
        Some(headers.get("etag")?.to_str().ok()?.to_owned())
    }

    /// The headers of a HEAD of `key` (or one of its versions), if it exists.
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Option<hyper::HeaderMap> {
        let mut uri = format!("http://{}/{bucket}/{key}", self.addr);
        if let Some(version) = version {
            uri.push_str(&format!("?versionId={version}"));
        }
        let request = Request::head(uri)
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=profile/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(Full::new(Bytes::new()))
            .ok()?;
        let answer = self.client.request(request).await.ok()?;
        if !answer.status().is_success() {
            return None;
        }
        Some(answer.into_parts().0.headers)
    }

    async fn forward(&self, incoming: &Incoming) -> Result<Answer, String> {
        let path = incoming
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut request = Request::builder()
            .method(incoming.method.clone())
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in &incoming.headers {
            // The original Host stays: a stand-in that checks signatures
            // (s3s-fs) sees what was signed.
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(incoming.body.clone()))
            .map_err(|e| e.to_string())?;
        let answer = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

struct State {
    profile: Profile,
    upstream: Upstream,
    link: Mutex<Link>,
    wire: Wire,
    faults: NetFaults,
    requests: AtomicU64,
}

impl State {
    fn link(&self) -> Link {
        *self.link.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running profile proxy on a loopback port.
pub struct ProfileProxy {
    port: u16,
    state: Arc<State>,
    tls: bool,
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

impl ProfileProxy {
    /// Serves `profile` on a free loopback port in front of the stand-in at
    /// `upstream_port`, on a runtime of its own (tests come and go with
    /// theirs; the proxy lives as long as the stand-in).
    pub fn start(profile: Profile, upstream_port: u16) -> ProfileProxy {
        ProfileProxy::start_with(profile, upstream_port, None)
    }

    /// Like [`ProfileProxy::start`], speaking HTTPS with `certificate`
    /// (clients that insist on TLS, like pgBackRest's S3 driver).
    pub fn start_tls(
        profile: Profile,
        upstream_port: u16,
        certificate: &tls::Certificate,
    ) -> ProfileProxy {
        ProfileProxy::start_with(profile, upstream_port, Some(certificate.acceptor()))
    }

    fn start_with(
        profile: Profile,
        upstream_port: u16,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> ProfileProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a profile proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new(State {
            profile,
            upstream: Upstream {
                addr: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
                client: Client::builder(TokioExecutor::new()).build_http(),
                clock_offset_ms: AtomicU64::new(0),
            },
            link: Mutex::new(Link::default()),
            wire: Wire::default(),
            faults: NetFaults::default(),
            requests: AtomicU64::new(0),
        });
        let serving = Arc::clone(&state);
        let serves_tls = tls.is_some();
        std::thread::Builder::new()
            .name(format!("profile-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(serve(listener, serving, tls));
            })
            .expect("starting a profile proxy");
        ProfileProxy {
            port,
            state,
            tls: serves_tls,
        }
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_link(&self, link: Link) {
        *self.state.link.lock().unwrap_or_else(|p| p.into_inner()) = link;
    }

    /// The fault injector of this service.
    pub fn faults(&self) -> &NetFaults {
        &self.state.faults
    }

    /// Moves the service's clock on (its lock windows count from it).
    pub fn advance_clock(&self, by: Duration) {
        self.state
            .upstream
            .clock_offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn profile(&self) -> &Profile {
        &self.state.profile
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        let tls = tls.clone();
        tokio::spawn(async move {
            let link = state.link();
            tokio::time::sleep(link.round_trip * link.handshake_round_trips).await;
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve_connection(stream, state).await;
                    }
                }
                None => serve_connection(stream, state).await,
            }
        });
    }
}

async fn serve_connection<S>(stream: S, state: Arc<State>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { handle(&state, request).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// One request: link, fault, profile rules, the stand-in, profile rules
/// again, link. An `Err` drops the connection (a reset, to the client).
async fn handle(
    state: &State,
    request: Request<HyperBody>,
) -> Result<Response<Body>, std::io::Error> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let incoming = Incoming {
        s3: S3Request::parse(&parts.method, &parts.uri),
        signer: Signer::of(&parts.headers),
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
    };
    let link = state.link();
    Wire::send(&state.wire.up_free_at, link.transfer(incoming.body.len())).await;
    tokio::time::sleep(link.round_trip).await;
    let fault = state.faults.pick(&incoming.method, incoming.uri.path());
    match &fault {
        Some(NetFault::Reset) => return Err(std::io::Error::other("injected reset")),
        Some(NetFault::Hang) => std::future::pending::<()>().await,
        Some(NetFault::Status { status, code }) => {
            return Ok(respond(
                Answer::s3_error(&incoming.method, *status, code, "injected fault"),
                false,
            ))
        }
        Some(NetFault::Truncate) | None => {}
    }
    let answer = match profile_answer(state, &incoming).await {
        Some(refusal) => refusal,
        None => {
            let mut answer = state
                .upstream
                .forward(&incoming)
                .await
                .map_err(std::io::Error::other)?;
            if let Profile::AwsS3(aws) = &state.profile {
                aws.after(&incoming, &mut answer);
            }
            answer
        }
    };
    Wire::send(&state.wire.down_free_at, link.transfer(answer.body.len())).await;
    Ok(respond(answer, fault == Some(NetFault::Truncate)))
}

async fn profile_answer(state: &State, incoming: &Incoming) -> Option<Answer> {
    match &state.profile {
        Profile::AwsS3(aws) => aws.before(incoming),
        Profile::AwsDynamoDb(dynamo) => dynamo.before(incoming),
        Profile::R2(r2) => r2.before(incoming, &state.upstream).await,
        Profile::B2(b2) => b2.before(incoming, &state.upstream).await,
        Profile::Plain => None,
    }
}

/// The answer on the wire; `truncated`: half the body, then the
/// connection drops.
fn respond(answer: Answer, truncated: bool) -> Response<Body> {
    let mut response = Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        response = response.header(name, value);
    }
    let length = answer.body.len();
    let body: Body = if truncated && length > 1 {
        let half = answer.body.slice(..length / 2);
        let frames = futures_util::stream::iter(vec![
            Ok(Frame::data(half)),
            Err(std::io::Error::other("injected truncation")),
        ]);
        BodyExt::boxed(StreamBody::new(frames))
    } else {
        Full::new(answer.body)
            .map_err(|never| match never {})
            .boxed()
    };
    let mut response = response.body(body).unwrap_or_else(|_| {
        Response::new(BodyExt::boxed(
            Full::new(Bytes::new()).map_err(|never| match never {}),
        ))
    });
    if truncated {
        if let Ok(value) = HeaderValue::from_str(&length.to_string()) {
            response.headers_mut().insert("content-length", value);
        }
    }
    response
}
