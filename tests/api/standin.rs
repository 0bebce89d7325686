//! Stand-ins for the outside world of `upstream`: an OAuth2 token endpoint and a
//! DummyJSON-compatible catalogue, each a small hyper server on 127.0.0.1:0.
//!
//! They check what the real services check (client credentials, Basic or in the body; the
//! bearer token: issued here, not expired, not revoked), count requests and record when each
//! arrived (the signals tests wait on), and inject faults on command: a delay before answering,
//! a status (500, 503, 429 …) with an optional `Retry-After`, for the next N requests or for all.
//! Tokens live `lifetime` (2 s in the tests); the catalogue answers 401 to an expired, revoked or
//! unknown token. The catalogue serves `tests/fixtures/dummyjson-products.json` and pages it
//! exactly as DummyJSON does: `skip` then `limit` (default 30, 0 = all), and the answer's
//! `limit` is the number of products sent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The client the token endpoint knows. The id has a space and the secret has reserved
/// characters, so the form encoding of Basic credentials (RFC 6749 §2.3.1) is exercised.
pub const CLIENT_ID: &str = "catalogue sync";
pub const CLIENT_SECRET: &str = "s3cret:with/odd&chars+é";

/// The fixture, parsed once: a JSON array of 194 DummyJSON products.
pub fn fixture() -> &'static [Value] {
    static PRODUCTS: OnceLock<Vec<Value>> = OnceLock::new();
    PRODUCTS.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dummyjson-products.json"
        );
        let text = std::fs::read(path).unwrap();
        serde_json::from_slice(&text).unwrap()
    })
}

/// Request counters and the faults to inject, one per stand-in.
#[derive(Default)]
pub struct Control {
    requests: AtomicU64,
    arrivals: Mutex<Vec<Instant>>,
    faults: Mutex<Faults>,
}

#[derive(Default)]
struct Faults {
    delay: Duration,
    next: VecDeque<Fault>,
    always: Option<Fault>,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    status: u16,
    retry_after: Option<u64>,
}

impl Control {
    /// Requests received so far, counted on arrival (before any delay).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// When each request arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        lock(&self.arrivals).clone()
    }

    /// Every answer waits `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.faults).delay = delay;
    }

    /// The next `count` requests get `status` (with `Retry-After: seconds` when given).
    pub fn fail_next(&self, count: usize, status: u16, retry_after: Option<u64>) {
        let mut faults = lock(&self.faults);
        for _ in 0..count {
            faults.next.push_back(Fault {
                status,
                retry_after,
            });
        }
    }

    /// Every request gets `status` until [`Control::heal`].
    pub fn fail_always(&self, status: u16, retry_after: Option<u64>) {
        lock(&self.faults).always = Some(Fault {
            status,
            retry_after,
        });
    }

    /// No delay and no faults any more.
    pub fn heal(&self) {
        *lock(&self.faults) = Faults::default();
    }

    fn arrive(&self) -> (Duration, Option<Fault>) {
        lock(&self.arrivals).push(Instant::now());
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut faults = lock(&self.faults);
        let fault = faults.next.pop_front().or(faults.always);
        (faults.delay, fault)
    }
}

/// Where the token endpoint expects the client credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    Basic,
    Body,
}

/// What the token endpoint saw in one valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub credentials: Credentials,
    pub scope: Option<String>,
}

/// The token endpoint's book of tokens, which the catalogue consults.
struct Issuer {
    expect: Credentials,
    lifetime: Duration,
    issued: Mutex<HashMap<String, Instant>>,
    revoked: Mutex<HashSet<String>>,
    /// Revokes every token, those issued later too.
    reject_all: AtomicBool,
    seen: Mutex<Vec<TokenRequest>>,
    control: Control,
}

impl Issuer {
    fn accepts(&self, token: &str) -> bool {
        if self.reject_all.load(Ordering::SeqCst) || lock(&self.revoked).contains(token) {
            return false;
        }
        lock(&self.issued)
            .get(token)
            .is_some_and(|issued| issued.elapsed() < self.lifetime)
    }

    fn answer(&self, parts: &Parts, body: &[u8]) -> Response<Full<Bytes>> {
        if parts.method != Method::POST {
            return json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({}));
        }
        let form: HashMap<String, String> = form_pairs(body).into_iter().collect();
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
        }
        let authorization = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let credentials = match self.expect {
            Credentials::Basic => authorization.and_then(basic_credentials),
            Credentials::Body if authorization.is_none() => form
                .get("client_id")
                .cloned()
                .zip(form.get("client_secret").cloned()),
            Credentials::Body => None,
        };
        if credentials != Some((CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned())) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        lock(&self.seen).push(TokenRequest {
            credentials: self.expect,
            scope: form.get("scope").cloned(),
        });
        let token = format!("token-{}", hex::encode(rand::random::<[u8; 12]>()));
        lock(&self.issued).insert(token.clone(), Instant::now());
        json_response(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.lifetime.as_secs(),
            }),
        )
    }
}

/// The stand-in authorization server.
pub struct TokenEndpoint {
    pub address: SocketAddr,
    issuer: Arc<Issuer>,
    _server: Server,
}

impl TokenEndpoint {
    /// Issues tokens living `lifetime` (whole seconds, as `expires_in`) to a client
    /// authenticating with HTTP Basic.
    pub async fn start(lifetime: Duration) -> TokenEndpoint {
        TokenEndpoint::start_expecting(lifetime, Credentials::Basic).await
    }

    pub async fn start_expecting(lifetime: Duration, expect: Credentials) -> TokenEndpoint {
        let issuer = Arc::new(Issuer {
            expect,
            lifetime,
            issued: Mutex::default(),
            revoked: Mutex::default(),
            reject_all: AtomicBool::new(false),
            seen: Mutex::default(),
            control: Control::default(),
        });
        let (address, server) = serve(
            Arc::clone(&issuer),
            |issuer| &issuer.control,
            Issuer::answer,
        )
        .await;
        TokenEndpoint {
            address,
            issuer,
            _server: server,
        }
    }

    pub fn url(&self) -> reqwest::Url {
        reqwest::Url::parse(&format!("http://{}/oauth/token", self.address)).unwrap()
    }

    pub fn control(&self) -> &Control {
        &self.issuer.control
    }

    /// Token requests with valid credentials, in order.
    pub fn seen(&self) -> Vec<TokenRequest> {
        lock(&self.issuer.seen).clone()
    }

    /// The catalogue answers 401 to `token` from now on.
    pub fn revoke(&self, token: &str) {
        lock(&self.issuer.revoked).insert(token.to_owned());
    }

    /// The catalogue answers 401 to every token, even those issued later.
    pub fn reject_every_token(&self) {
        self.issuer.reject_all.store(true, Ordering::SeqCst);
    }
}

/// The stand-in catalogue.
pub struct Catalogue {
    pub address: SocketAddr,
    state: Arc<CatalogueState>,
    _server: Server,
}

struct CatalogueState {
    issuer: Arc<Issuer>,
    unauthorized: AtomicU64,
    control: Control,
}

impl CatalogueState {
    fn answer(&self, parts: &Parts, _body: &[u8]) -> Response<Full<Bytes>> {
        let bearer = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if !bearer.is_some_and(|token| self.issuer.accepts(token)) {
            self.unauthorized.fetch_add(1, Ordering::SeqCst);
            let mut response = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"message": "Invalid token"}),
            );
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return response;
        }
        let query: HashMap<String, String> = form_pairs(parts.uri.query().unwrap_or("").as_bytes())
            .into_iter()
            .collect();
        let number = |name: &str, default: usize| {
            query
                .get(name)
                .map_or(Ok(default), |text| text.parse::<usize>())
        };
        let (Ok(limit), Ok(skip)) = (number("limit", 30), number("skip", 0)) else {
            return json_response(StatusCode::BAD_REQUEST, &json!({"message": "bad paging"}));
        };
        let all = fixture();
        let rest = all.get(skip..).unwrap_or(&[]);
        let page = if limit == 0 || limit > rest.len() {
            rest
        } else {
            &rest[..limit]
        };
        json_response(
            StatusCode::OK,
            &json!({
                "products": page,
                "total": all.len(),
                "skip": skip,
                "limit": page.len(),
            }),
        )
    }
}

impl Catalogue {
    /// A catalogue accepting the tokens `tokens` issues.
    pub async fn start(tokens: &TokenEndpoint) -> Catalogue {
        let state = Arc::new(CatalogueState {
            issuer: Arc::clone(&tokens.issuer),
            unauthorized: AtomicU64::new(0),
            control: Control::default(),
        });
        let (address, server) = serve(
            Arc::clone(&state),
            |state| &state.control,
            CatalogueState::answer,
        )
        .await;
        Catalogue {
            address,
            state,
            _server: server,
        }
    }

    pub fn url(&self) -> reqwest::Url {
        reqwest::Url::parse(&format!("http://{}/products", self.address)).unwrap()
    }

    pub fn control(&self) -> &Control {
        &self.state.control
    }

    /// Requests answered 401.
    pub fn unauthorized(&self) -> u64 {
        self.state.unauthorized.load(Ordering::SeqCst)
    }
}

/// The accept loop of a stand-in; dropped, it stops accepting.
struct Server {
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves on 127.0.0.1:0: each request is counted and given its fault by `control`, then
/// answered by `answer`.
async fn serve<S: Send + Sync + 'static>(
    state: Arc<S>,
    control: fn(&S) -> &Control,
    answer: fn(&S, &Parts, &[u8]) -> Response<Full<Bytes>>,
) -> (SocketAddr, Server) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        let (delay, fault) = control(&state).arrive();
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(http_body_util::Collected::to_bytes)
                            .unwrap_or_default();
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let response = match fault {
                            Some(fault) => fault_response(fault),
                            None => answer(&state, &parts, &body),
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, Server { accept })
}

fn fault_response(fault: Fault) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(fault.status).unwrap();
    let mut response = json_response(status, &json!({"message": "injected fault"}));
    if let Some(seconds) = fault.retry_after {
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from(seconds),
        );
    }
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

fn oauth_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": code}))
}

/// `user:password` of a Basic header, each form-decoded (RFC 6749 §2.3.1).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id.as_bytes())?, form_decode(secret.as_bytes())?))
}

/// `a=b&c=d`, form-decoded; malformed pairs are dropped.
fn form_pairs(text: &[u8]) -> Vec<(String, String)> {
    text.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let at = pair.iter().position(|&b| b == b'=')?;
            Some((form_decode(&pair[..at])?, form_decode(&pair[at + 1..])?))
        })
        .collect()
}

fn form_decode(text: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut index = 0;
    while index < text.len() {
        match text[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(text.get(index + 1..index + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 2;
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8(out).ok()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
